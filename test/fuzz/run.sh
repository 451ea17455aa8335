#!/usr/bin/env bash
# Builds the libFuzzer harnesses for the rule core (clang, ASan + UBSan +
# LeakSanitizer) and runs each for N executions (default 1,000,000), or for
# at most SECONDS seconds when FUZZ_SECONDS is set.  Exit 0 = no crash, leak,
# hang or invariant failure.
#   bash test/fuzz/run.sh 10000000          # 10 million per harness
#   FUZZ_SECONDS=25 bash test/fuzz/run.sh   # time-boxed
set -euo pipefail
cd "$(dirname "$0")"
N=${1:-1000000}
SRC=../../src
OUT=${FUZZ_OUT:-/tmp/settle-fuzz}
mkdir -p "$OUT/bin" "$OUT/corpus_parse" "$OUT/corpus_recv" "$OUT/artifacts"
CORE="$SRC/money.c $SRC/rule_common.c $SRC/rule_parse.c $SRC/rule_print.c $SRC/rule_codec.c $SRC/rule_eval.c"
CFLAGS="-g -O1 -I$SRC -Wall -Wextra -Werror -Wno-sign-compare -Wno-unused-parameter"
clang $CFLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	fuzz_parse.c $CORE -o "$OUT/bin/fuzz_parse"
clang $CFLAGS -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	fuzz_recv.c $CORE -o "$OUT/bin/fuzz_recv"
clang $CFLAGS -fsanitize=address,undefined make_seeds.c $CORE -o "$OUT/bin/make_seeds"
cp seeds/*.rule "$OUT/corpus_parse/"
"$OUT/bin/make_seeds" "$OUT/corpus_recv" seeds/*.rule

limit=(-runs="$N")
[ -n "${FUZZ_SECONDS:-}" ] && limit=(-max_total_time="$FUZZ_SECONDS")
status=0
for h in parse recv; do
	echo "== fuzz_$h ${limit[*]}"
	if "$OUT/bin/fuzz_$h" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
		-dict=rule.dict -artifact_prefix="$OUT/artifacts/$h-" -print_final_stats=1 \
		"$OUT/corpus_$h" 2>"$OUT/fuzz_$h.log"; then
		grep -E 'stat::number_of_executed_units|stat::peak_rss_mb|Done' "$OUT/fuzz_$h.log" || true
	else
		status=1
		tail -40 "$OUT/fuzz_$h.log"
	fi
done
exit $status
