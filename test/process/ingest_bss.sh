#!/usr/bin/env bash
# Ingestion from the mock Alibaba BSS endpoint over HTTPS: the quirky fixture
# month (exact decimals, whitespace, Chinese names, every Item kind, zero
# rows, validation exceptions, unmapped accounts, unlinked refunds), paging,
# checkpoints, re-pull no-ops, revisions on changed amounts, provider totals,
# and the raw page record.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_bss
setup_db $DB
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5

q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('small', 'alibaba_bss', '$MOCK_URL/m/small/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5}'),
  ('small_rev', 'alibaba_bss', '$MOCK_URL/m/small/revise/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 5}')" >/dev/null

out=$(q $DB "SELECT status, pages, requests, lines_seen, lines_new, lines_unchanged, lines_invalid FROM settle.ingest_now('small')")
check "fixture pull succeeds: overview + 3 pages of 5, 14 lines, 7 invalid" "$out" "succeeded|4|4|14|14|0|7"
q $DB "SELECT error_message FROM settle.ingest_run WHERE status <> 'succeeded'"

check "14 bill lines, all revision 1" "$(q $DB "SELECT count(*), max(revision) FROM settle.bill_line")" "14|1"
check "exact decimals beyond double precision (19 digits, within settle's limits)" \
  "$(q $DB "SELECT list_cost, discount, billed_cost FROM settle.bill_line WHERE resource_id = 'i-small-013'")" \
  "98765432109.87654321|98765432109.75654321|0.12"
check "string amounts with trailing tab parse" \
  "$(q $DB "SELECT billed_cost, list_cost, validation_errors FROM settle.bill_line WHERE resource_id = 'cdn-small-006'")" \
  "12.34|12.34|{}"
check "trailing newline trimmed, Chinese names kept" \
  "$(q $DB "SELECT region_id || '/' || service_name FROM settle.bill_line WHERE resource_id = 'i-small-001'")" \
  "China (Hangzhou)/云服务器ECS"
check "tags parsed" "$(q $DB "SELECT (tags->>'env') || (tags->>'team') FROM settle.bill_line WHERE resource_id = 'i-small-001'")" "prodcore"
check "item kinds map to charge categories" \
  "$(q $DB "SELECT string_agg(DISTINCT source_item || '=' || charge_category, ',' ORDER BY source_item || '=' || charge_category) FROM settle.bill_line WHERE charge_category IS NOT NULL")" \
  "Adjustment=Adjustment,PayAsYouGoBill=Usage,Refund=Purchase,SubscriptionOrder=Purchase"
check "zero-charge row kept" "$(q $DB "SELECT billed_cost, validation_errors FROM settle.bill_line WHERE resource_id = 'lb-small-005'")" "0|{}"
check "refund linked to its order" \
  "$(q $DB "SELECT validation_errors, original_line_key IS NOT NULL FROM settle.bill_line WHERE resource_id = 'rm-small-002' AND source_item = 'Refund'")" "{}|t"
check "lines mapped to resellers/customers" \
  "$(q $DB "SELECT string_agg(DISTINCT billing_account_id || ':' || reseller_id, ',') FROM settle.bill_line")" \
  "2000000000000001:1,2000000000000002:2,2999999999999999:0"
check "validation errors per line" \
  "$(q $DB "SELECT string_agg(resource_id || '=' || array_to_string(validation_errors, ';'), ' ' ORDER BY resource_id) FROM settle.bill_line WHERE validation_errors <> '{}'")" \
  "i-small-007=unmapped_account:2999999999999999 i-small-008=unknown_currency:XYZ i-small-010=identity:gross-discount-coupons<>billed i-small-012=invalid_amount:PretaxAmount i-small-014=missing:ProductCode rm-small-011=unlinked_refund x-small-009=unknown_product:mystery"
check "exceptions opened by kind" \
  "$(q $DB "SELECT string_agg(kind || ':' || n, ',' ORDER BY kind) FROM (SELECT kind, count(*) n FROM settle.exception GROUP BY kind) s")" \
  "unlinked_refund:1,unmapped_customer:1,validation:5"
check "sums per account/product equal the mock's (valid amounts)" \
  "$(q $DB "SELECT string_agg(billing_account_id || ',' || coalesce(product_code, '') || ',' || n || ',' || p || ',' || g, ' ' ORDER BY billing_account_id, coalesce(product_code, '')) FROM (SELECT billing_account_id, product_code, count(*) n, coalesce(sum(billed_cost), 0) p, sum(list_cost) g FROM settle.bill_line GROUP BY 1, 2) s")" \
  "$(curl -s --cacert "$MOCK_CA" "$MOCK_URL/__expected/small" | tr '\n' ' ' | sed 's/ $//')"
check "raw pages: verbatim body, sha256, no credentials in request" \
  "$(q $DB "SELECT count(*), bool_and(body_sha256 = sha256(body)), bool_and(http_status = 200), bool_and(request::text NOT LIKE '%$AK_ID%'), count(*) FILTER (WHERE request->'params'->>'NextToken' IS NOT NULL) FROM settle.raw_page")" \
  "4|t|t|t|2"
check "every line links to its raw page" "$(q $DB "SELECT count(*) FROM settle.bill_line b JOIN settle.raw_page r USING (raw_page_id) WHERE position(convert_to(b.resource_id, 'UTF8') IN r.body) > 0")" "14"
check "provider totals (Data.Items.Item[]) stored" \
  "$(q $DB "SELECT count(*), sum(pretax_gross_amount) FILTER (WHERE billing_account_id = '2000000000000002') FROM settle.provider_total")" "11|-22.66"
check "checkpoint complete" "$(q $DB "SELECT string_agg(scope || ':' || complete || ':' || pages_done, ',' ORDER BY scope) FROM settle.ingest_checkpoint")" \
  "DescribeInstanceBill:2026-10:MONTHLY:true:3,QueryBillOverview:2026-10:true:1"

# re-pull: unchanged content is a no-op
out=$(q $DB "SELECT status, lines_seen, lines_new, lines_revised, lines_unchanged FROM settle.ingest_now('small')")
check "re-pull is a no-op" "$out" "succeeded|14|0|0|14"
check "still 14 lines, exceptions not duplicated" "$(q $DB "SELECT (SELECT count(*) FROM settle.bill_line), (SELECT count(*) FROM settle.exception)")" "14|7"

# revised amounts on re-pull: items 0, 10 change -> revision 2, old kept
q $DB "SELECT settle.ingest_now('small_rev')" >/dev/null
out=$(q $DB "SELECT lines_new, lines_revised, lines_unchanged FROM settle.ingest_now('small_rev')")
check "second pull of revised month: 2 revisions" "$out" "0|2|12"
check "old revision kept, current view shows the new one" \
  "$(q $DB "SELECT count(*) FILTER (WHERE revision = 2), (SELECT billed_cost FROM settle.bill_line_current WHERE resource_id = 'i-small-001') FROM settle.bill_line WHERE resource_id = 'i-small-001'")" \
  "1|90.46"
check "revision 1 still there with the old amount" \
  "$(q $DB "SELECT billed_cost FROM settle.bill_line WHERE resource_id = 'i-small-001' AND revision = 1")" "90.45"

# DAILY granularity sends BillingDate and dates the lines
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('daily', 'alibaba_bss', '$MOCK_URL/m/small/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"granularity\": \"DAILY\", \"billing_date\": \"2026-10-07\", \"overview\": false}')" >/dev/null
check "daily pull" "$(q $DB "SELECT status, pages FROM settle.ingest_now('daily')")" "succeeded|1"
check "daily request carries BillingDate" "$(q $DB "SELECT request->'params'->>'BillingDate' FROM settle.raw_page ORDER BY raw_page_id DESC LIMIT 1")" "2026-10-07"

# bill lines are written in bulk: an insert trigger is refused, not bypassed
q $DB "CREATE FUNCTION public.bl_spy() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
  CREATE TRIGGER bl_spy BEFORE INSERT ON settle.bill_line FOR EACH ROW EXECUTE FUNCTION public.bl_spy()" >/dev/null
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('trig', 'alibaba_bss', '$MOCK_URL/m/small/ok/', 'bss_test', '{\"billing_cycle\": \"2026-09\", \"overview\": false}')" >/dev/null
check "a pull with an insert trigger on bill_line fails with 0A000, nothing stored" \
  "$(q $DB "SELECT status, error_sqlstate, lines_new FROM settle.ingest_now('trig')")|$(q $DB "SELECT count(*) FROM settle.bill_line WHERE billing_period_start = '2026-09-01'")" \
  "failed|0A000|0|0"
q $DB "DROP TRIGGER bl_spy ON settle.bill_line; DELETE FROM settle.connector WHERE name = 'trig'" >/dev/null 2>&1 || true

check "ingest_health shows last success" "$(q $DB "SELECT count(*) FILTER (WHERE last_success IS NOT NULL AND last_status = 'succeeded' AND error_rate_24h = 0) FROM settle.ingest_health")" "3"
finish
