#!/usr/bin/env bash
# Process-level test: the differential test (test/diff/README.md) on a few
# seeds.  Each seed is a random scenario (gen.py) loaded through the public
# API and settled by the engine, compared line by line and statement by
# statement with the independent model (model.py, written from docs/ only),
# then checked for properties of the engine alone (verify_run true on every
# run, an unchanged re-run writes nothing, the lineage adds up to each
# statement).  Any disagreement or failed property fails the test.
#
# The seeds were picked by `python3 test/diff/pick_seeds.py --lines 400
# --seeds 1-120` so that between them they reach every feature the model
# lists (model.py ALL_FEATURES: every payout, tier mode and measure, cap and
# floor, refunds in and out of the window, FX, corrections after a lock,
# approved adjustments, each minor unit and rounding mode, both date bases,
# a rule version changing mid-period, blocked runs, the 16-decimal limit on
# charges, graduated bands, reversals and corrections); this test checks
# that they still do, so a change of the generator cannot quietly narrow it.
# Three more seeds keep findings of the soak fixed (test/diff/README.md):
# 1016 at 500 lines (F10, a period cap and an eligible credit), 1531 at 800
# (F11, a per-line floor on a credit earning 0) and 1031 at 300 (F9, an
# all-units customer total below 0); each disagreed with engine version 2.
# More seeds: `bash test/diff/soak.sh N`.
set -uo pipefail
cd "$(dirname "$0")/../.."
seeds=(12 68 20 110 1016 1531 1031)
out=$(mktemp -d /tmp/settle-diff-make.XXXXXX)
trap 'rm -rf "$out"' EXIT
rc=0
diff_run() {	# diff_run LINES SEED...
	local lines=$1; shift
	DIFF_OUT=$out DIFF_LINES=$lines DIFF_DECIMALS=11 DIFF_GEN_ARGS='' DIFF_MODEL_ARGS='' DIFF_SHOW=40 \
		bash test/diff/run.sh "$@" || rc=1
}
diff_run 400 12 68 20 110
diff_run 500 1016
diff_run 800 1531
diff_run 300 1031
for s in "${seeds[@]}"; do
	[ -f "$out/seed$s/scenario.json" ] &&
		python3 test/diff/model.py "$out/seed$s/scenario.json" --coverage "$out/seed$s"
done > "$out/coverage.txt"
if ! python3 - "$out/coverage.txt" <<'PY'
import sys
sys.path.insert(0, 'test/diff')
import model
got = set(open(sys.argv[1]).read().split('\n'))
missing = [f for f in model.ALL_FEATURES if f not in got]
print('features reached: %d of %d' % (len(model.ALL_FEATURES) - len(missing), len(model.ALL_FEATURES)))
if missing:
    print('not reached by the seeds: ' + ', '.join(missing))
    sys.exit(1)
PY
then
	rc=1
fi
exit $rc
