#!/usr/bin/env python3
"""Reads the Valgrind logs of test/valgrind.sh (one file per process, errors
framed by VALGRINDERROR-BEGIN/END) and reports every error.

An error counts against settle when a frame of its stack (or of the stacks of
its address description: where a block was allocated or freed) is in
settle.so, i.e. in a source file of the given source directory or in
"settle.so" itself.  Invalid reads, writes and frees count wherever they are:
PostgreSQL has none of its own that memcheck could see.  Uninitialised-value
errors outside settle are listed as PostgreSQL's (not counted).

usage: parse_logs.py LOGDIR SRCDIR    exit 1 when any error counts
"""
import collections
import os
import re
import sys

logdir, srcdir = sys.argv[1], os.path.realpath(sys.argv[2])
frame = re.compile(r'^==\d+==\s+(?:at|by) 0x[0-9A-F]+: (.*)$')
prefix = re.compile(r'^==\d+== ?')
settle_src = re.escape(srcdir) + r'/[^/:()]+\.[ch]:\d+\)'

errors = []			# (file, kind, text, counted, in_settle)
processes = 0
for name in sorted(os.listdir(logdir)):
    path = os.path.join(logdir, name)
    with open(path, errors='replace') as f:
        lines = f.read().splitlines()
    processes += 1
    block = None
    for line in lines:
        if 'VALGRINDERROR-BEGIN' in line:
            block = []
        elif 'VALGRINDERROR-END' in line:
            if block is not None:
                body = [prefix.sub('', l) for l in block]
                body = [l for l in body if l.strip()]
                kind = body[0].strip() if body else '?'
                in_settle = any(
                    re.search(settle_src, m.group(1)) or 'settle.so)' in m.group(1)
                    for m in (frame.match(l) for l in block) if m)
                invalid = kind.startswith(('Invalid read', 'Invalid write', 'Invalid free',
                                           'Mismatched free', 'Source and destination overlap'))
                errors.append((name, kind, '\n'.join(body), in_settle or invalid, in_settle))
            block = None
        elif block is not None:
            block.append(line)

def shortkind(k):
    return re.sub(r' of size \d+', '', re.sub(r'\d+', 'N', k)) if k else k

by_kind = collections.Counter(shortkind(e[1]) for e in errors)
counted = [e for e in errors if e[3]]
print('# valgrind: %d process logs, %d errors reported (after suppressions), %d with a settle.so frame, %d counted'
      % (processes, len(errors), sum(1 for e in errors if e[4]), len(counted)))
for k, n in sorted(by_kind.items()):
    print('#   %5d  %s' % (n, k))
seen = set()
for e in errors:
    key = e[2].split('\n{')[0]
    key = re.sub(r'0x[0-9A-F]+', '', key)
    if key in seen:
        continue
    seen.add(key)
    label = 'COUNTED' if e[3] else 'postgres (not counted)'
    print('\n---- %s: %s (log %s)' % (label, e[1], e[0]))
    print(e[2] if e[3] else '\n'.join(e[2].split('\n')[:14]))
sys.exit(1 if counted else 0)
