#!/usr/bin/env bash
# Benchmark: the settle.rule evaluator in C against the same arithmetic as a
# plain SQL CASE expression, over the same 5 million generated bill lines, in
# one run.  Prints evaluations per second for both, the ratio, and checks
# that both give the same exact sum of commissions.  Not part of the tests.
#   bash bench/rules_eval.sh [lines]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000000}
OUT=${BENCH_OUT:-/tmp/settle-bench}
mkdir -p "$OUT"
SRC=src
cc -O2 -I$SRC -Wall -Wextra -Werror -Wno-sign-compare -Wno-unused-parameter \
	bench/rules_eval.c $SRC/money.c $SRC/rule_common.c $SRC/rule_parse.c $SRC/rule_print.c \
	$SRC/rule_codec.c $SRC/rule_eval.c -o "$OUT/rules_eval"

echo "== C: settle.rule evaluator, one core, $N lines in memory"
taskset -c 0 "$OUT/rules_eval" "$N" bench/rules_eval.rule | tee "$OUT/c.txt"

echo "== SQL: the same rule as a CASE expression, $N rows, one backend, no parallel workers"
cat > "$OUT/baseline.sql" <<SQL
SET max_parallel_workers_per_gather = 0;
SET jit = off;
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) AS sql_lines, sum(commission) AS sql_sum FROM (
  SELECT least(billed * CASE
      WHEN sku = 'ecs.g7.large' THEN 0.12
      WHEN sku = 'ecs.g7.xlarge' THEN 0.125
      WHEN product = 'ecs' AND region = 'cn-hangzhou' THEN 0.11
      WHEN product = 'ecs' THEN 0.10
      WHEN product IN ('rds', 'polardb') THEN
        CASE WHEN spend >= 50000 THEN 0.09 WHEN spend >= 10000 THEN 0.07 ELSE 0.05 END
      WHEN product = 'oss' THEN 0.04
      WHEN category = 'storage' THEN 0.035
      WHEN category = 'networking' THEN 0.02
      WHEN segment = 'enterprise' THEN 0.06
      WHEN tags ->> 'env' = 'prod' THEN 0.055
      ELSE 0.03 END, 500) AS commission
  FROM (
    SELECT (ARRAY['ecs','rds','polardb','oss','nas','slb','cdn','sls'])[i % 8 + 1] AS product,
           (ARRAY['compute','database','database','storage','storage','networking','networking','other'])[i % 8 + 1] AS category,
           CASE WHEN i % 8 = 0 THEN (ARRAY['ecs.g7.large','ecs.g7.xlarge','ecs.c6.large'])[i % 3 + 1] END AS sku,
           (ARRAY['cn-hangzhou','cn-shanghai','ap-southeast-1'])[(i / 8) % 3 + 1] AS region,
           CASE WHEN (i % 5000) % 10 = 0 THEN 'enterprise' ELSE 'standard' END AS segment,
           CASE WHEN i % 3 = 0 THEN '{"env": "prod"}'::jsonb ELSE '{"env": "dev"}'::jsonb END AS tags,
           ((i * 7919) % 1000000) / 100.0 AS billed,
           (((i % 5000) * 7919) % 8000000) / 100.0 AS spend
      FROM generate_series(1::bigint, $N) AS i) lines) e \gset
SELECT extract(epoch FROM clock_timestamp() - :'t0') AS sql_seconds \gset
\echo sql_lines :sql_lines
\echo sql_seconds :sql_seconds
\echo sql_sum :sql_sum
SQL
bash test/dev.sh taskset -c 1 psql -X -q -v ON_ERROR_STOP=1 -f "$OUT/baseline.sql" | tee "$OUT/sql.txt"

c_rate=$(awk '/^c_evals_per_second/ {print $2}' "$OUT/c.txt")
c_sum=$(awk '/^c_sum/ {print $2}' "$OUT/c.txt")
c_secs=$(awk '/^c_seconds/ {print $2}' "$OUT/c.txt")
s_secs=$(awk '/^sql_seconds/ {print $2}' "$OUT/sql.txt")
s_sum=$(awk '/^sql_sum/ {print $2}' "$OUT/sql.txt")
echo "== result"
awk -v n="$N" -v cs="$c_secs" -v ss="$s_secs" -v cr="$c_rate" 'BEGIN {
	printf "C evaluator:   %.0f evaluations/s (%d lines in %.3f s)\n", cr, n, cs;
	printf "SQL CASE:      %.0f evaluations/s (%d rows in %.3f s)\n", n / ss, n, ss;
	printf "ratio C / SQL: %.1fx\n", ss / cs;
	printf "goal >= 2,000,000 evaluations/s: %s\n", (cr >= 2000000 ? "met" : "NOT met") }'
norm() { sed -e 's/\(\.[0-9]*[1-9]\)0*$/\1/' -e 's/\.0*$//' <<<"$1"; }
if [ "$(norm "$c_sum")" = "$(norm "$s_sum")" ]; then
	echo "sums agree exactly: $c_sum"
else
	echo "SUMS DIFFER: C $c_sum, SQL $s_sum"; exit 1
fi
