#!/usr/bin/env python3
"""Pick a few seeds that between them reach every feature the model lists.

    python3 test/diff/pick_seeds.py --lines 500 --seeds 1-200 [--decimals 11] [--gen-args "..."]

Generates each seed's scenario (gen.py), settles it with the model alone (the
first period's unblocked runs locked, as run.sh locks them), collects the
features it reaches (model.py --coverage) and prints a greedy cover: the
seeds test/process/diff_model.sh should run, and any feature no seed reached.
"""
import argparse
import os
import shlex
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
import model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--lines', type=int, default=300)
    ap.add_argument('--decimals', type=int, default=11)
    ap.add_argument('--seeds', default='1-100', help='first-last')
    ap.add_argument('--gen-args', default='', dest='gen_args')
    a = ap.parse_args()
    lo, hi = (int(x) for x in a.seeds.split('-'))
    reach = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(lo, hi + 1):
            d = os.path.join(tmp, str(seed))
            subprocess.run([sys.executable, os.path.join(here, 'gen.py'), '--seed', str(seed), '--lines', str(a.lines),
                            '--decimals', str(a.decimals), '--out', d] + shlex.split(a.gen_args),
                           check=True, stdout=subprocess.DEVNULL)
            out = subprocess.run([sys.executable, os.path.join(here, 'model.py'), os.path.join(d, 'scenario.json'),
                                  '--coverage', '-'], check=True, capture_output=True, text=True).stdout
            reach[seed] = set(out.split('\n')) - {''}
    need = set(model.ALL_FEATURES)
    chosen = []
    while need:
        seed = max(reach, key=lambda s: (len(reach[s] & need), -s))
        if not reach[seed] & need:
            break
        chosen.append(seed)
        need -= reach[seed]
    print('seeds: %s' % ' '.join(map(str, chosen)))
    for s in chosen:
        print('  seed %d: %d features' % (s, len(reach[s])))
    if need:
        print('not reached by any seed: %s' % ', '.join(sorted(need)))
        sys.exit(1)


if __name__ == '__main__':
    main()
