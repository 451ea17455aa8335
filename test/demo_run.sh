#!/usr/bin/env bash
# Runs inside pg_virtualenv (settle and pg_cron preloaded): the whole monthly
# close on a bundled sample month, printing a short summary at each step and
# writing statements and payout files into an output folder.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${SETTLE_DEMO_OUT:-$PWD/out/demo}
rm -rf "$out"
mkdir -p "$out"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
val() { command psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }
step() { printf '\n== %s\n' "$*"; }
. test/mock/lib.sh

step "Creating the extension (settle $(sed -n "s/^default_version = '\(.*\)'/\1/p" settle.control)) and the operator's setup"
psql -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'
psql -f test/fixtures/sample_model.sql >/dev/null
psql -f test/fixtures/sample_rules.sql >/dev/null
psql -c "SELECT r.code AS reseller, a.settlement_currency AS currency, a.minimum_payout,
                count(DISTINCT c.customer_id) AS customers, count(ca.account_id) AS accounts, v.version AS rule_version
           FROM settle.reseller r JOIN settle.agreement a USING (reseller_id)
           JOIN settle.customer c USING (reseller_id) JOIN settle.customer_account ca USING (reseller_id, customer_id)
           JOIN settle.rule_version v USING (reseller_id, agreement_id)
          GROUP BY 1, 2, 3, 6 ORDER BY 1"

step "Starting the mock Alibaba Cloud BSS endpoint (HTTPS, ACS3-signed) with the October 2026 sample month"
mock_start
psql -c "ALTER SYSTEM SET settle.secret_file = '$SECRET_FILE'" -c "ALTER SYSTEM SET settle.ca_file = '$MOCK_CA'" \
     -c "ALTER SYSTEM SET settle.worker_naptime_ms = 500" -c "SELECT pg_reload_conf()" >/dev/null
echo "   $MOCK_URL (CA $MOCK_CA); the connector names the secret 'bss_test', never the key itself"

step "The background worker ingests the month (DescribeInstanceBill pages + QueryBillOverview totals)"
psql -c "INSERT INTO settle.connector (name, kind, endpoint, secret_name, config, poll_interval)
         VALUES ('alibaba-intl', 'alibaba_bss', '$MOCK_URL/m/demo/ok/', 'bss_test',
                 '{\"billing_cycle\": \"2026-10\", \"max_results\": 25}', '1 day')"
for _ in $(seq 1 120); do
	[ "$(val "SELECT count(*) FROM settle.ingest_run WHERE status = 'succeeded'")" -gt 0 ] && break
	sleep 0.5
done
psql -c "SELECT ingest_run_id, triggered_by, status, pages, lines_seen, lines_new, lines_invalid FROM settle.ingest_run"
psql -c "SELECT coalesce(r.code, '(unmapped)') AS reseller, count(*) AS lines, sum(b.billed_cost) AS billed_usd
           FROM settle.bill_line_current b LEFT JOIN settle.reseller r USING (reseller_id) GROUP BY 1 ORDER BY 1"
psql -c "\\copy (SELECT * FROM settle.bill_line_current ORDER BY line_key) TO '$out/bill_lines.csv' CSV HEADER"

step "Settling October: SELECT settle.settle_period('2026-10')"
psql -c "SELECT r.code AS reseller, p.run_id, p.status, p.blocked, p.lines_out
           FROM settle.settle_period('2026-10') p JOIN settle.reseller r USING (reseller_id) ORDER BY 1"
psql -c "SELECT reseller, currency, commission, refunds, total, carry_forward_out, net_payout FROM settle.finance_summary ORDER BY 1"

step "Explaining one line: settle.explain"
psql -c "SELECT item, value FROM settle.explain((SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('acme') AND status = 'draft'),
                (SELECT min(line_key) FROM settle.settlement_line WHERE kind = 'r'))"

step "Open exceptions"
psql -c "SELECT exception_id, reseller, kind, severity, scope_key, blocking FROM settle.exception_queue
          WHERE state = 'pending_review' ORDER BY exception_id"

step "Audit trail"
psql -c "SELECT table_name, count(*) AS entries FROM settle.audit_log GROUP BY 1 ORDER BY 1"
psql -c "SELECT verified, entries, first_broken_id FROM settle.verify_audit()"

step "Done: output in $out"
ls -l "$out"
