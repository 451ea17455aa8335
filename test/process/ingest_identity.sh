#!/usr/bin/env bash
# Line identity, withdrawals and bad values, against the mock BSS endpoint:
# - two refunds of one instance in a month are two lines, and re-pulls of an
#   unchanged month are no-ops however often they run (refund3, dupes-20);
#   a genuinely changed item is still a revision of its own line;
# - a complete re-pull that no longer sees a stored line withdraws it (a
#   zero-amount revision with the reason); a failed re-pull withdraws nothing;
# - amounts settle cannot hold (1e400, >= 10^14, more than 8 decimals) are
#   flagged invalid, and reconcile and settle_period still run for the period;
# - a non-UTF-8 byte inside a string value flags its line and the pull goes on.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_identity
setup_db $DB
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
conn() {	# conn NAME PATH [extra json]
	q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
	  ('$1', 'alibaba_bss', '$MOCK_URL$2', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": ${3:-5}, \"overview\": false}')" >/dev/null
}
counts() { q $DB "SELECT status, lines_new, lines_revised, lines_unchanged FROM settle.ingest_now('$1')"; }
cur() {	# lines and billed sum of the connector's current revisions
	q $DB "SELECT count(*), sum(billed_cost) FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = '$1'"
}

# ---- 1. one charge and two refunds of one instance: three lines
conn refund3 /m/refund3/ok/
check "refund3 pull 1: three new lines" "$(counts refund3)" "succeeded|3|0|0"
for i in 2 3 4; do
	check "refund3 pull $i: a no-op" "$(counts refund3)" "succeeded|0|0|3"
done
check "refund3: three current lines, billed 85.00" "$(cur refund3)" "3|85.00"
check "refund3: three distinct keys, all revision 1" \
	"$(q $DB "SELECT count(DISTINCT line_key), max(revision) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'refund3'")" "3|1"
check "refund3: both refunds link to the order" \
	"$(q $DB "SELECT count(*) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'refund3' AND source_item = 'Refund' AND validation_errors = '{}' AND original_line_key IS NOT NULL")" "2"

# ---- a generated month of repeated refunds, partial refunds, adjustments and
# items differing in one field (20 groups of 11 items sharing natural keys)
conn dupes /m/dupes-20/ok/ 7
check "dupes pull 1: 220 new lines" "$(counts dupes)" "succeeded|220|0|0"
check "dupes pull 2: a no-op" "$(counts dupes)" "succeeded|0|0|220"
check "dupes pull 3: a no-op" "$(counts dupes)" "succeeded|0|0|220"
check "dupes: counts and sums per account equal the source" \
	"$(q $DB "SELECT string_agg(billing_account_id || ',' || product_code || ',' || n || ',' || p, ' ' ORDER BY billing_account_id) FROM (SELECT billing_account_id, product_code, count(*) n, sum(billed_cost) p FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'dupes' GROUP BY 1, 2) s")" \
	"$(curl -s --cacert "$MOCK_CA" "$MOCK_URL/__expected/dupes-20" | cut -d, -f1-4 | tr '\n' ' ' | sed 's/ $//')"
# every 10th item changes by 0.01 from the second pull on: 22 revisions, no new lines
conn dupes_rev /m/dupes-21/revise/ 7
check "dupes revised pull 1" "$(counts dupes_rev)" "succeeded|231|0|0"
check "dupes revised pull 2: 24 revisions of their own lines" "$(counts dupes_rev)" "succeeded|0|24|207"
check "dupes revised pull 3: a no-op" "$(counts dupes_rev)" "succeeded|0|0|231"
check "dupes revised: 231 current lines, 24 at revision 2" \
	"$(q $DB "SELECT count(*), count(*) FILTER (WHERE revision = 2) FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'dupes_rev'")" "231|24"

# a pull that fails after its first page and resumes: the resumed pass
# re-reads its stored page, so repeated items keep their numbers
conn mid /m/dupes-3/midfailx1/ 7
check "mid pull 1: page 2 fails (one attempt), page 1 kept" \
	"$(q $DB "SET settle.ingest_max_attempts = 1; SELECT status, error_sqlstate, lines_new FROM settle.ingest_now('mid')")" "failed|57P03|7"
check "mid pull 2: resumes at page 2, the rest is new, nothing withdrawn" \
	"$(q $DB "SELECT status, lines_new, lines_revised, lines_unchanged, lines_withdrawn FROM settle.ingest_now('mid')")" "succeeded|26|0|0|0"
check "mid pull 3: a no-op" \
	"$(q $DB "SELECT status, lines_new, lines_revised, lines_unchanged, lines_withdrawn FROM settle.ingest_now('mid')")" "succeeded|0|0|33|0"
check "mid: 33 lines, 33 keys, all revision 1" \
	"$(q $DB "SELECT count(*), count(DISTINCT line_key), max(revision) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'mid'")" "33|33|1"

# ---- 7. withdrawals
conn drop /m/small/drop/
check "drop pull 1: 14 new" "$(counts drop)" "succeeded|14|0|0"
check "drop pull 2: item 3 is gone: withdrawn" \
	"$(q $DB "SELECT status, lines_new, lines_revised, lines_unchanged, lines_withdrawn FROM settle.ingest_now('drop')")" "succeeded|0|0|13|1"
check "the withdrawal is a zero-amount revision with the reason" \
	"$(q $DB "SELECT resource_id, revision, list_cost, billed_cost, discount, coupon_deduction, coalesce(amount_paid, 0), withdrawal_reason IS NOT NULL, validation_errors FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'drop' AND revision > 1")" \
	"oss-small-004|2|0|0|0|0|0|t|{}"
check "drop pull 3: a no-op (nothing new to withdraw)" \
	"$(q $DB "SELECT status, lines_new, lines_revised, lines_unchanged, lines_withdrawn FROM settle.ingest_now('drop')")" "succeeded|0|0|13|0"
check "drop: current billed total no longer counts the withdrawn line" \
	"$(q $DB "SELECT sum(billed_cost) FILTER (WHERE b.resource_id = 'oss-small-004'), count(*) FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'drop'")" "0|14"
DB=settle_ingest_identity2	# the small month's keys again: a database of its own
setup_db $DB
conn droptrunc /m/small/droptrunc/
check "droptrunc pull 1: 14 new" "$(counts droptrunc)" "succeeded|14|0|0"
check "droptrunc pull 2 fails (page 2 truncated) and withdraws nothing" \
	"$(q $DB "SELECT status, error_sqlstate, lines_withdrawn FROM settle.ingest_now('droptrunc')")|$(q $DB "SELECT count(*) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'droptrunc' AND revision > 1")" \
	"failed|22P02|0|0"
check "withdraw_lines is the shared helper (a SQL function)" \
	"$(q $DB "SELECT count(*) FROM pg_proc WHERE proname = 'withdraw_lines' AND pronamespace = 'settle'::regnamespace")" "1"

# ---- 3. amounts settle cannot hold
conn absurd /m/absurd/ok/
check "absurd: the pull succeeds with 5 lines" "$(counts absurd)" "succeeded|5|0|0"
check "absurd: out-of-range and over-precise amounts flagged and not stored (NULL)" \
	"$(q $DB "SELECT string_agg(resource_id || '=' || array_to_string(validation_errors, ';') || '=' || coalesce(billed_cost::text, 'null'), ' ' ORDER BY resource_id) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'absurd'")" \
	"i-big=invalid_amount:PretaxGrossAmount;invalid_amount:PretaxAmount;invalid_amount:PaymentAmount=null i-fine=invalid_amount:PretaxGrossAmount;invalid_amount:PretaxAmount;invalid_amount:PaymentAmount=null i-huge=invalid_amount:PretaxGrossAmount;invalid_amount:PretaxAmount;invalid_amount:PaymentAmount=null i-ok==10.00 i-zeros==1.12345678000000"
check "absurd: the raw page keeps the value as sent" \
	"$(q $DB "SELECT count(*) FROM settle.raw_page r JOIN settle.connector c USING (connector_id) WHERE c.name = 'absurd' AND position('\"PretaxAmount\":1E+400' IN convert_from(body, 'UTF8')) > 0")" "1"
q $DB "SET settle.reason = 'test'; SELECT settle.publish_rule('R1', a.agreement_id, '2026-01-01', E'currency CNY\notherwise pay 5%\n', 'identity test') FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('R1')" >/dev/null
check "reconcile runs for the period" "$(q $DB "SELECT count(*) > 0 FROM settle.reconcile('2026-10')" 2>&1)" "t"
check "settle_period runs for the period" "$(q $DB "SET settle.reason = 'test'; SELECT count(*) > 0 FROM settle.settle_period('2026-10')" 2>&1)" "t"

# ---- 4. a non-UTF-8 byte inside a string value
DB=settle_ingest_identity3
setup_db $DB
conn badutf8 /m/badutf8/ok/
check "badutf8: the pull goes on: 14 lines" \
	"$(q $DB "SELECT status, pages, lines_new FROM settle.ingest_now('badutf8')")" "succeeded|3|14"
check "badutf8: the affected line is flagged, naming the field" \
	"$(q $DB "SELECT resource_id, validation_errors FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'badutf8' AND 'invalid_utf8:ProductName' = ANY (validation_errors)")" \
	"i-small-007|{invalid_utf8:ProductName,unmapped_account:2999999999999999}"
check "badutf8: a validation exception names the field and the page" \
	"$(q $DB "SELECT count(*) FROM settle.exception e JOIN settle.raw_page r ON r.raw_page_id = (e.refs->>'raw_page_id')::bigint JOIN settle.connector c ON c.connector_id = r.connector_id WHERE c.name = 'badutf8' AND e.kind = 'validation' AND e.payload::text LIKE '%invalid_utf8:ProductName%' AND r.request->'params'->>'NextToken' IS NOT NULL")" "1"
check "badutf8: re-pull is a no-op" "$(counts badutf8)" "succeeded|0|0|14"
finish
