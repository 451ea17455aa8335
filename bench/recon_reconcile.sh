#!/usr/bin/env bash
# End-to-end reconciliation timing: settle.reconcile over N current bill
# lines of one billing cycle (default 1,000,000), 5 products per account,
# one line per account, product and day, provider totals imported from a CSV
# (exact sums, except every 100th scope 0.50 higher).  Prints the reconcile
# time next to a bare sum() GROUP BY over settle.bill_line_current, the
# result counts, and the import time.  Not a test; not the benchmark ratio
# (that is bench/recon.sh).
#
#   bash bench/recon_reconcile.sh            # 1,000,000 lines
#   bash bench/recon_reconcile.sh 150000     # a quick run
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${N:-1000000}}
if [ -z "${SETTLE_BENCH_INSIDE:-}" ]; then
	export SETTLE_BENCH_INSIDE=1
	exec bash test/dev.sh bash bench/recon_reconcile.sh "$N"
fi
DB=settle_bench_reconcile
dropdb --if-exists "$DB" >/dev/null 2>&1 || true
createdb "$DB"
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d "$DB" -c "$1"; }
ms() { psql -X -q -v ON_ERROR_STOP=1 -d "$DB" -o /dev/null -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -1; }
q "SET client_min_messages = warning; CREATE EXTENSION settle CASCADE" >/dev/null
A=$(( (N + 149) / 150 ))
echo "generating $N bill lines ($A accounts x 5 products x 30 days) ..."
q "INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, source_record_id,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
	product_code, billing_currency, list_cost, billed_cost)
   SELECT 0, k, 1, sha256(convert_to(k, 'UTF8')), 'PayAsYouGoBill', 'r' || i, 'acct-' || (i / 150), '2026-10-01',
          '2026-10-01'::date + (i % 30), '2026-10-01'::date + (i % 30) + 1, 'Usage',
          (ARRAY['ecs', 'oss', 'rds', 'slb', 'cdn'])[1 + (i / 30) % 5], 'USD', amt, amt
     FROM generate_series(0, $N - 1) i,
          LATERAL (SELECT 'acct-' || (i / 150) || '/' || i AS k, round(((i::bigint * 7919) % 100003)::numeric / 100, 2) AS amt) x"
q "VACUUM ANALYZE settle.bill_line"
q "CREATE TABLE bench_csv AS SELECT 'billing_cycle,billing_account_id,product_code,currency,amount' || E'\\n' ||
          string_agg(concat_ws(',', '2026-10', billing_account_id, product_code, 'USD',
                     sum_cost + CASE WHEN hashtext(billing_account_id || product_code) % 100 = 0 THEN 0.50 ELSE 0 END), E'\\n') AS csv,
          count(*) AS scopes
     FROM (SELECT billing_account_id, product_code, sum(billed_cost) AS sum_cost FROM settle.bill_line GROUP BY 1, 2) s"
scopes=$(q "SELECT scopes FROM bench_csv")
t_import=$(ms "SELECT settle.import_provider_totals('ledger', (SELECT csv FROM bench_csv))")
t_sum=$(ms "SELECT billing_account_id, product_code, billing_currency, sum(billed_cost) FROM settle.bill_line_current
             WHERE billing_period_start = '2026-10-01' GROUP BY 1, 2, 3")
t_rec=$(ms "SELECT * FROM settle.reconcile('2026-10')")
t_rec2=$(ms "SELECT * FROM settle.reconcile('2026-10')")
echo "lines: $N   scopes: $scopes"
echo "  import_provider_totals ($scopes rows)       ${t_import} ms"
echo "  bare sum() GROUP BY over bill_line_current  ${t_sum} ms"
echo "  settle.reconcile (first run)                ${t_rec} ms"
echo "  settle.reconcile (re-run, refreshes)        ${t_rec2} ms"
q "SELECT check_name, status, scopes, exceptions FROM settle.reconcile('2026-10')" | sed 's/^/  /'
dropdb "$DB"
