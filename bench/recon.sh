#!/usr/bin/env bash
# Reconciliation benchmark: the reconciliation aggregates over N
# bill lines (default 5 million) versus a bare sum() ... GROUP BY over the
# same rows, in one run, on the same table and with the same plan shape
# (parallel hash aggregation by billing account, product and currency).
#
#   reconcile: settle.money_total(billed_cost, currency) and
#              settle.line_fingerprint(line_key, billed_cost) per scope
#   total:     settle.money_total alone
#   baseline:  sum(billed_cost), count(*) per scope
#
# Each query runs once to warm up, then ROUNDS times in alternation; the
# medians are compared.  Prints the times and the ratios (goal: <= 1.3).
# Also checks that money_total equals sum() in every scope.  Not a test.
#
#   bash bench/recon.sh              # 5,000,000 lines
#   bash bench/recon.sh 200000       # a quick run
#   PARALLEL=0 bash bench/recon.sh   # serial plans for every query
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${N:-5000000}}
ROUNDS=${ROUNDS:-5}
if [ -z "${SETTLE_BENCH_INSIDE:-}" ]; then
	export SETTLE_BENCH_INSIDE=1
	# builds, takes the machine-wide install lock, runs in a throwaway cluster
	exec bash test/dev.sh bash bench/recon.sh "$N"
fi
if [ "${PARALLEL:-1}" = 0 ]; then
	export PGOPTIONS="${PGOPTIONS:-} -c max_parallel_workers_per_gather=0"
	echo "serial plans (max_parallel_workers_per_gather = 0)"
fi
DB=settle_bench_recon
dropdb --if-exists "$DB" >/dev/null 2>&1 || true
createdb "$DB"
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
q "SET client_min_messages = warning; CREATE EXTENSION settle CASCADE" >/dev/null

echo "generating $N bill lines ..."
q "CREATE TABLE bench_line (billing_account_id text, product_code text, currency text, line_key text, billed_cost numeric)"
# 2000 accounts x 5 products; amounts with 2 to 4 decimals, some negative; one
# account in two currencies.  Integer arithmetic only.
q "INSERT INTO bench_line
   SELECT 'acct-' || lpad((i % 2000)::text, 5, '0'),
          (ARRAY['ecs', 'oss', 'rds', 'slb', 'cdn'])[1 + (i / 2000) % 5],
          CASE WHEN i % 2000 = 7 AND i % 3 = 0 THEN 'CNY' ELSE 'USD' END,
          'acct-' || (i % 2000) || '/' || i || '/PayAsYouGoBill',
          ((((i::bigint * 7919) % 1000003) - 200000)::numeric / CASE WHEN i % 4 = 0 THEN 10000 ELSE 100 END)
     FROM generate_series(1, $N) i"
q "VACUUM ANALYZE bench_line"
echo "table: $(q "SELECT pg_size_pretty(pg_table_size('bench_line'))"), $(q "SELECT count(*) FROM bench_line") rows, $(q "SELECT count(*) FROM (SELECT DISTINCT billing_account_id, product_code, currency FROM bench_line) s") scopes"

RECON="SELECT billing_account_id, product_code, currency, settle.money_total(billed_cost, currency), settle.line_fingerprint(line_key, billed_cost) FROM bench_line GROUP BY 1, 2, 3"
TOTAL="SELECT billing_account_id, product_code, currency, settle.money_total(billed_cost, currency) FROM bench_line GROUP BY 1, 2, 3"
BASE="SELECT billing_account_id, product_code, currency, sum(billed_cost), count(*) FROM bench_line GROUP BY 1, 2, 3"

echo "plans:"
for s in "$RECON" "$BASE"; do
	q "EXPLAIN (COSTS OFF) $s" | sed 's/^/    /'
done

timeit() {	# prints milliseconds of one run of $1 (results discarded)
	psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -o /dev/null -c '\timing on' -c "$1" 2>&1 |
		sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1
}
out=$(mktemp)
for s in "$RECON" "$TOTAL" "$BASE"; do timeit "$s" >/dev/null; done	# warm up
for r in $(seq 1 "$ROUNDS"); do
	echo "recon $(timeit "$RECON")" >>"$out"
	echo "total $(timeit "$TOTAL")" >>"$out"
	echo "base $(timeit "$BASE")" >>"$out"
done

bad=$(q "SELECT count(*) FROM (SELECT billing_account_id, product_code, currency,
            settle.money_total(billed_cost, currency) AS mt, sum(billed_cost) AS s, count(*) AS n
       FROM bench_line GROUP BY 1, 2, 3) x WHERE (x.mt).total IS DISTINCT FROM x.s OR (x.mt).lines <> x.n")
python3 - "$out" "$N" "$bad" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
t = {}
for k, v in rows:
    t.setdefault(k, []).append(float(v))
m = {k: statistics.median(v) for k, v in t.items()}
n = int(sys.argv[2])
print(f"lines: {n:,}   rounds: {len(t['base'])}   (median milliseconds)")
print(f"  baseline sum()+count() GROUP BY     {m['base']:9.1f} ms   {n / m['base'] * 1000:12,.0f} lines/s")
print(f"  money_total GROUP BY                {m['total']:9.1f} ms   ratio {m['total'] / m['base']:.2f}x")
print(f"  money_total + line_fingerprint      {m['recon']:9.1f} ms   ratio {m['recon'] / m['base']:.2f}x   (goal <= 1.30x)")
print(f"  scopes where money_total differs from sum(): {sys.argv[3]}")
PY
rm -f "$out"
dropdb "$DB"
