#!/usr/bin/env bash
# Soak: N more seeds of the differential test (default 20), starting after the
# last seed a previous soak ran (kept in $DIFF_OUT/soak.next), or at DIFF_SOAK_START.
#   bash test/diff/soak.sh 50
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n=${1:-20}
out=${DIFF_OUT:-/tmp/settle-diff}
mkdir -p "$out"
start=${DIFF_SOAK_START:-$(cat "$out/soak.next" 2>/dev/null || echo 1000)}
seeds=$(seq "$start" $((start + n - 1)))
echo $((start + n)) > "$out/soak.next"
exec bash "$here/run.sh" $seeds
