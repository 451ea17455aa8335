#!/usr/bin/env bash
# A payer with member accounts: the mock serves each member's bills only for
# its BillOwnerId and the payer's own without it.  A connector configured with
# member_accounts pulls the payer and every member, each with its own run,
# checkpoint and ingest_health row; unknown config keys are refused (22023).
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
mock_start
DB=settle_ingest_members
setup_db $DB
psql -X -q -d postgres -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
M='"1300000000000001", "1300000000000002", "1300000000000003"'
q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES
  ('payer', 'alibaba_bss', '$MOCK_URL/m/members-2x31/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 7}'),
  ('all', 'alibaba_bss', '$MOCK_URL/m/members-4x30/ok/', 'bss_test', '{\"billing_cycle\": \"2026-10\", \"max_results\": 7, \"member_accounts\": [$M]}')" >/dev/null

check "without member_accounts: the payer's own 31 lines" \
	"$(q $DB "SELECT count(*), sum(lines_new) FROM settle.ingest_now('payer')")" "1|31"
check "with member_accounts: one run per account, 30 lines each" \
	"$(q $DB "SELECT string_agg(coalesce(account_id, 'payer') || ':' || status || ':' || lines_new, ' ' ORDER BY account_id NULLS FIRST) FROM settle.ingest_now('all')")" \
	"payer:succeeded:30 1300000000000001:succeeded:30 1300000000000002:succeeded:30 1300000000000003:succeeded:30"
check "120 lines, 30 per owner" \
	"$(q $DB "SELECT string_agg(sub_account_id || ':' || n, ' ' ORDER BY sub_account_id) FROM (SELECT sub_account_id, count(*) n FROM settle.bill_line_current b JOIN settle.connector c USING (connector_id) WHERE c.name = 'all' GROUP BY 1) s")" \
	"1300000000000000:30 1300000000000001:30 1300000000000002:30 1300000000000003:30"
check "members' requests carry BillOwnerId" \
	"$(q $DB "SELECT count(DISTINCT request->'params'->>'BillOwnerId'), count(*) FILTER (WHERE request->'params'->>'BillOwnerId' IS NULL AND request->>'action' = 'DescribeInstanceBill') FROM settle.raw_page r JOIN settle.connector c USING (connector_id) WHERE c.name = 'all'")" "3|5"
check "a checkpoint per account" \
	"$(q $DB "SELECT string_agg(coalesce(k.account_id, 'payer') || ':' || k.complete || ':' || k.pages_done, ' ' ORDER BY k.account_id NULLS FIRST) FROM settle.ingest_checkpoint k JOIN settle.connector c USING (connector_id) WHERE c.name = 'all' AND k.scope LIKE 'DescribeInstanceBill%'")" \
	"payer:true:5 1300000000000001:true:5 1300000000000002:true:5 1300000000000003:true:5"
check "an ingest_health row per account" \
	"$(q $DB "SELECT string_agg(coalesce(account_id, 'payer') || ':' || last_status || ':' || runs_24h, ' ' ORDER BY account_id NULLS FIRST) FROM settle.ingest_health WHERE name = 'all'")" \
	"payer:succeeded:1 1300000000000001:succeeded:1 1300000000000002:succeeded:1 1300000000000003:succeeded:1"
check "re-pull: four no-op runs" \
	"$(q $DB "SELECT count(*), sum(lines_new), sum(lines_unchanged) FROM settle.ingest_now('all')")" "4|0|120"
check "provider totals per account" \
	"$(q $DB "SELECT count(DISTINCT bill_owner_id), count(*) FILTER (WHERE bill_owner_id IS NULL) > 0 FROM settle.provider_total_current t JOIN settle.connector c USING (connector_id) WHERE c.name = 'all'")" "3|t"

# unknown config keys are refused on insert and update, naming the key
err=$(q $DB "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config) VALUES ('typo', 'alibaba_bss', 'https://example.com/', 'bss_test', '{\"member_acounts\": [\"1\"]}')" 2>&1)
check "insert with an unknown config key: 22023 naming it" "$(echo "$err" | grep -c 'unknown config key "member_acounts"')" "1"
err=$(psql -X -q -d $DB -v VERBOSITY=verbose -c "UPDATE settle.connector SET config = config || '{\"maxresults\": 5}' WHERE name = 'payer'" 2>&1)
check "update with an unknown config key: 22023 naming it" "$(echo "$err" | grep -c '22023.*unknown config key "maxresults"')" "1"
err=$(q $DB "UPDATE settle.connector SET config = config || '{\"member_accounts\": \"1300000000000001\"}' WHERE name = 'payer'" 2>&1)
check "member_accounts must be an array of account ids" "$(echo "$err" | grep -c 'member_accounts')" "1"
finish
