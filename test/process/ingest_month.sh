#!/usr/bin/env bash
# A generated month of 100,000 lines across six accounts (one unmapped) and
# seven products ingests with exact line counts and sums per account and
# product (compared with the mock's own Decimal sums), no duplicates, every
# line revision 1, provider totals equal to the lines, and a re-pull that
# changes nothing.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_month
N=${N:-100000}
setup_db $DB
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('month', 'alibaba_bss', '$MOCK_URL/m/month-$N/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\"}')" >/dev/null
curl -s --cacert "$MOCK_CA" "$MOCK_URL/__expected/month-$N" > "$MOCK_DIR/expected.csv"

start=$(date +%s%N)
out=$(q $DB "SELECT status, lines_seen, lines_new, pages FROM settle.ingest_now('month')")
ms=$(( ($(date +%s%N) - start) / 1000000 ))
echo "# $N lines in $ms ms"
check "month pull: $N lines" "$out" "succeeded|$N|$N|$(( (N + 299) / 300 + 1 ))"
q $DB "CREATE TEMP TABLE x (a text, p text, n bigint, pretax numeric, gross numeric)" >/dev/null
check "counts and sums per account and product equal the source" \
	"$(psql -X -A -t -q -d $DB -v ON_ERROR_STOP=1 <<SQL
CREATE TEMP TABLE expected (a text, p text, n bigint, pretax numeric, gross numeric);
\copy expected FROM '$MOCK_DIR/expected.csv' WITH (FORMAT csv)
SELECT count(*) FROM (
  (SELECT * FROM expected EXCEPT SELECT billing_account_id, product_code, count(*), sum(billed_cost), sum(list_cost) FROM settle.bill_line GROUP BY 1, 2)
  UNION ALL
  (SELECT billing_account_id, product_code, count(*), sum(billed_cost), sum(list_cost) FROM settle.bill_line GROUP BY 1, 2 EXCEPT SELECT * FROM expected)) d;
SELECT count(*) FROM expected;
SQL
)" "0
42"
check "no duplicate keys, all revision 1" \
	"$(q $DB "SELECT count(DISTINCT line_key), max(revision) FROM settle.bill_line")" "$N|1"
check "unmapped account lands at reseller 0 with one exception" \
	"$(q $DB "SELECT (SELECT count(DISTINCT billing_account_id) FROM settle.bill_line WHERE reseller_id = 0), (SELECT count(*) FROM settle.exception WHERE kind = 'unmapped_customer')")" "1|1"
check "every refund links to its order" "$(q $DB "SELECT count(*) FROM settle.bill_line WHERE source_item = 'Refund' AND 'unlinked_refund' = ANY (validation_errors)")" "0"
check "no other validation failures" "$(q $DB "SELECT count(*) FROM settle.bill_line WHERE validation_errors <> '{}' AND reseller_id <> 0")" "0"
check "provider totals equal the lines per account and product" \
	"$(q $DB "SELECT count(*) FROM (SELECT billing_account_id, product_code, sum(pretax_amount) s FROM settle.provider_total GROUP BY 1, 2 EXCEPT SELECT billing_account_id, product_code, sum(billed_cost) FROM settle.bill_line GROUP BY 1, 2) d")" "0"
check "raw pages are lz4-compressed" \
	"$(q $DB "SELECT bool_and(pg_column_compression(body) = 'lz4') FROM settle.raw_page WHERE octet_length(body) > 100000")" "t"
out=$(q $DB "SELECT status, lines_new, lines_revised, lines_unchanged FROM settle.ingest_now('month')")
check "re-pull of the month is a no-op" "$out" "succeeded|0|0|$N"
finish
