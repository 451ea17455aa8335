#!/usr/bin/env bash
# End-to-end reconciliation benchmark: settle.reconcile of one billing cycle
# (2026-10) of N current bill lines (default 1,000,000: 5 products per
# account, one line per account, product and day, 1% of them revised once),
# provider totals imported from a CSV (exact sums, except every 100th scope
# 0.50 higher), measured
#   1. against a bare sum() ... GROUP BY over the same cycle's bill lines
#      (the baseline, in the same run);
#   2. with no other history, then again after 3 more months of N lines each
#      (2026-07 .. 2026-09) were added: the time must not grow with history.
# Each query runs once to warm up, then ROUNDS times; medians are compared.
# Goals: reconcile with history <= 1.2x without; reconcile <= 3x the bare
# sum().  Not a test: prints times and ratios.
#
#   bash bench/recon_reconcile.sh              # 1,000,000 lines a month
#   bash bench/recon_reconcile.sh 200000       # a quick run
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${N:-1000000}}
ROUNDS=${ROUNDS:-3}
if [ -z "${SETTLE_BENCH_INSIDE:-}" ]; then
	export SETTLE_BENCH_INSIDE=1
	exec bash test/dev.sh bash bench/recon_reconcile.sh "$N"
fi
DB=settle_bench_reconcile
dropdb --if-exists "$DB" >/dev/null 2>&1 || true
createdb "$DB"
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
ms() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -o /dev/null -c 'SET client_min_messages = warning' -c '\timing on' -c "$1" |
	sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1; }
median() { python3 -c 'import sys, statistics; print("%.1f" % statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
q "SET client_min_messages = warning; CREATE EXTENSION settle CASCADE" >/dev/null
A=$(( (N + 149) / 150 ))

lines() {	# lines MONTH: N lines of the billing cycle MONTH (YYYY-MM), 1% with a second revision
	local m=$1
	q "INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, source_record_id,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
		product_code, billing_currency, list_cost, billed_cost, ingested_at)
	   SELECT 0, k, 1, sha256(convert_to(k, 'UTF8')), 'PayAsYouGoBill', '$m/r' || i, 'acct-' || (i / 150), '$m-01',
	          '$m-01'::date + (i % 28), '$m-01'::date + (i % 28) + 1, 'Usage',
	          (ARRAY['ecs', 'oss', 'rds', 'slb', 'cdn'])[1 + (i / 28) % 5], 'USD', amt, amt, '$m-01'::date + 32
	     FROM generate_series(0, $N - 1) i,
	          LATERAL (SELECT 'acct-' || (i / 150) || '/$m/' || i AS k,
	                          round(((i::bigint * 7919) % 100003)::numeric / 100, 2) AS amt) x"
	q "INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, source_record_id,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
		product_code, billing_currency, list_cost, billed_cost, ingested_at)
	   SELECT reseller_id, line_key, 2, sha256(content_hash), source_item, source_record_id, billing_account_id,
	          billing_period_start, charge_period_start, charge_period_end, charge_category, product_code,
	          billing_currency, list_cost + 1, billed_cost + 1, ingested_at + interval '1 day'
	     FROM settle.bill_line WHERE billing_period_start = '$m-01' AND hashtext(line_key) % 100 = 0"
}

echo "generating $N bill lines of 2026-10 ($A accounts x 5 products) ..."
lines 2026-10
q "VACUUM ANALYZE settle.bill_line"
# the provider's totals: the current revisions' sums, every 100th scope 0.50 higher
q "CREATE TABLE bench_csv AS SELECT 'billing_cycle,billing_account_id,product_code,currency,amount' || E'\\n' ||
          string_agg(concat_ws(',', '2026-10', billing_account_id, product_code, 'USD',
                     sum_cost + CASE WHEN hashtext(billing_account_id || product_code) % 100 = 0 THEN 0.50 ELSE 0 END), E'\\n') AS csv,
          count(*) AS scopes
     FROM (SELECT billing_account_id, product_code, sum(billed_cost) AS sum_cost
             FROM settle.bill_line_current WHERE billing_period_start = '2026-10-01' GROUP BY 1, 2) s"
scopes=$(q "SELECT scopes FROM bench_csv")
q "SELECT settle.import_provider_totals('ledger', (SELECT csv FROM bench_csv))" >/dev/null

BASE="SELECT billing_account_id, product_code, billing_currency, sum(billed_cost), count(*) FROM settle.bill_line
       WHERE billing_period_start >= '2026-10-01' AND billing_period_start < '2026-11-01' GROUP BY 1, 2, 3"
RECON="SELECT * FROM settle.reconcile('2026-10')"

measure() {	# measure LABEL: median times of the baseline and of reconcile
	local b=() r=() i
	ms "$BASE" >/dev/null; ms "$RECON" >/dev/null
	for i in $(seq 1 "$ROUNDS"); do b+=("$(ms "$BASE")"); r+=("$(ms "$RECON")"); done
	echo "$(median "${b[@]}") $(median "${r[@]}")"
}
read -r base0 rec0 < <(measure)
q "SELECT check_name || ' ' || status || ' ' || scopes FROM settle.reconcile('2026-10')" | sed 's/^/  results: /'
echo "adding 3 months of history (2026-07 .. 2026-09, $N lines each) ..."
for m in 2026-07 2026-08 2026-09; do lines $m; done
q "VACUUM ANALYZE settle.bill_line"
read -r base3 rec3 < <(measure)
echo "plan of the period's line read:"
q "EXPLAIN (COSTS OFF) SELECT * FROM settle.bill_line b WHERE b.reseller_id = ANY (ARRAY[0]::bigint[])
     AND b.billing_period_start >= '2026-10-01' AND b.billing_period_start < '2026-11-01'" | sed 's/^/    /'
python3 - "$N" "$scopes" "$ROUNDS" "$base0" "$rec0" "$base3" "$rec3" <<'PY'
import sys
n, scopes, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
b0, r0, b3, r3 = map(float, sys.argv[4:8])
print("lines a month: {:,}   scopes: {:,}   rounds: {}   (median milliseconds)".format(n, scopes, rounds))
print("  bare sum() GROUP BY, the period's lines, no history   {:10.1f} ms".format(b0))
print("  settle.reconcile, no history                          {:10.1f} ms   {:.2f}x the bare sum (goal <= 3)".format(r0, r0 / b0))
print("  bare sum() GROUP BY, with 3 months of history         {:10.1f} ms".format(b3))
print("  settle.reconcile, with 3 months of history            {:10.1f} ms   {:.2f}x the bare sum (goal <= 3)".format(r3, r3 / b3))
print("  reconcile with history / without                                     {:.2f}x (goal <= 1.2)".format(r3 / r0))
PY
dropdb "$DB"
