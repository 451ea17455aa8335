#!/usr/bin/env bash
# focus_csv: a FinOps FOCUS CSV file read from a path, file:// and https://
# lands in the same bill line model: exact decimals, quoted fields with
# commas and doubled quotes, Tags JSON, Credit and Correction rows, repeated
# rows kept apart, bad rows stored with their errors and exceptions, a
# re-import is a no-op, and paths need the superuser transport setting.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_focus
setup_db $DB
F=$MOCK_DIR/focus.csv
cp test/fixtures/ingest/focus_sample.csv "$F"; chmod 644 "$F"
q $DB "SET settle.reason = 'test'; SELECT settle.add_customer('R1', 'CF', 'FOCUS customer'); SELECT settle.map_account('3000000000000001', 'R1', 'CF')" >/dev/null
q $DB "INSERT INTO settle.connector (name, kind, endpoint) VALUES
  ('focus_path', 'focus_csv', '$F'), ('focus_url', 'focus_csv', 'file://$F'),
  ('focus_https', 'focus_csv', '$MOCK_URL/files/focus_sample.csv')" >/dev/null

check "a path is refused without settle.allow_insecure_transport" \
	"$(q $DB "SELECT status, error_sqlstate FROM settle.ingest_now('focus_path')")" "failed|42501"
out=$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, pages, lines_seen, lines_new, lines_invalid FROM settle.ingest_now('focus_path')")
check "file imported: 9 rows, 3 invalid" "$out" "succeeded|1|9|9|3"
check "exact decimal BilledCost (18 digits)" "$(q $DB "SELECT billed_cost FROM settle.bill_line WHERE resource_id = 'i-f-001' ORDER BY line_key LIMIT 1")" "1234567890.12345678"
check "quoted field with a comma" "$(q $DB "SELECT service_name FROM settle.bill_line WHERE resource_id = 'oss-f-002'")" "Object Storage Service, Standard"
check "Tags JSON with doubled quotes" "$(q $DB "SELECT tags->>'note' FROM settle.bill_line WHERE resource_id = 'i-f-001' AND tags <> '{}'")" "a, b"
check "Credit and Correction rows" \
	"$(q $DB "SELECT string_agg(charge_category || ':' || coalesce(charge_class, '-') || ':' || billed_cost, ',' ORDER BY billed_cost) FROM settle.bill_line WHERE billed_cost < 0")" \
	"Credit:-:-5.00,Adjustment:Correction:-1.25"
check "two identical rows are two lines" "$(q $DB "SELECT count(*) FROM settle.bill_line WHERE resource_id = 'i-f-001' AND charge_period_start = '2026-10-07'")" "2"
check "bad rows stored with their errors" \
	"$(q $DB "SELECT string_agg(coalesce(resource_id, '-') || '=' || array_to_string(validation_errors, ';'), ' ' ORDER BY resource_id) FROM settle.bill_line WHERE validation_errors <> '{}'")" \
	"i-f-007=unknown_charge_category:Refundish i-f-008=invalid:ChargePeriodEnd;invalid_amount:BilledCost;invalid:Tags i-f-009=unmapped_account:3999999999999999"
# the Correction row (charge period 2026-09, billed in 2026-10) belongs to
# the period it corrects
check "billing period and mapping" "$(q $DB "SELECT count(*) FILTER (WHERE billing_period_start = '2026-10-01'), count(*) FILTER (WHERE billing_period_start = '2026-09-01' AND charge_class = 'Correction'), count(*) FILTER (WHERE reseller_id = 1) FROM settle.bill_line")" "8|1|8"
check "raw copy is the file, verbatim" "$(q $DB "SELECT encode(body_sha256, 'hex') FROM settle.raw_page")" "$(sha256sum "$F" | cut -d' ' -f1)"
check "file:// URL: same lines, no-op" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT status, lines_new, lines_unchanged FROM settle.ingest_now('focus_url')")" "succeeded|0|9"
check "https:// URL: same lines, no-op" \
	"$(q $DB "SET settle.ca_file = '$MOCK_CA'; SELECT status, lines_new, lines_unchanged FROM settle.ingest_now('focus_https')")" "succeeded|0|9"
sed -i 's/^3999999999999999,3999999999999999,\(.*\),3.00,3.00,/3999999999999999,3999999999999999,\1,3.50,3.50,/' "$F"
check "changed row: a new revision" \
	"$(q $DB "SET settle.allow_insecure_transport = on; SELECT lines_new, lines_revised, lines_unchanged FROM settle.ingest_now('focus_path')")" "0|1|8"
finish
