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

step "A late revision: the provider revises amounts after its totals were taken, and the month is pulled again"
psql -c "UPDATE settle.connector SET endpoint = '$MOCK_URL/m/demo/revise/', config = config || '{\"overview\": false}' WHERE name = 'alibaba-intl'" >/dev/null
val "SELECT status FROM settle.ingest_now('alibaba-intl')" >/dev/null     # the same amounts: no-ops
psql -c "SELECT status, lines_seen, lines_new, lines_revised, lines_unchanged FROM settle.ingest_now('alibaba-intl')"
psql -c "SELECT r.code AS reseller, p.run_id, p.status, p.supersedes FROM settle.settle_period('2026-10') p JOIN settle.reseller r USING (reseller_id) ORDER BY 1"
psql -c "SELECT line_key, change, delta, why FROM settle.run_diff(1, (SELECT run_id FROM settle.run WHERE reseller_id = 1 AND status = 'draft')) LIMIT 3"

step "Reconciling October against the provider's totals: SELECT settle.reconcile('2026-10')"
psql -c "SELECT * FROM settle.reconcile('2026-10')"
psql -c "SELECT scope_key, status, cause, line_key, amount FROM settle.reconciliation_delta
          WHERE period = '2026-10' ORDER BY scope_key, seq LIMIT 6"

step "Explaining one line: settle.explain"
psql -c "SELECT item, value FROM settle.explain((SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('acme') AND status = 'draft'),
                (SELECT min(line_key) FROM settle.settlement_line WHERE kind = 'r'))"

step "Open exceptions"
psql -c "SELECT exception_id, reseller, kind, severity, scope_key, blocking FROM settle.exception_queue
          WHERE state = 'pending_review' ORDER BY exception_id"

step "Working the queue as two people: alice proposes a goodwill credit for acme, bob approves it"
psql -c "CREATE ROLE demo_alice IN ROLE settle_finance" -c "CREATE ROLE demo_bob IN ROLE settle_finance" 2>/dev/null || true
exc=$(val "SELECT settle.open_exception(settle.reseller_id('acme'), 'manual', 'goodwill:hz-tea:2026-10', '2026-10',
             '{}', '{\"detail\": \"credit promised to Hangzhou Tea Co for an outage\"}')")
psql -c "SET SESSION AUTHORIZATION demo_alice" \
     -c "SELECT exception_id, state, adjustment_amount, proposed_by FROM settle.propose_adjustment($exc, 25.00, '2026-10', 'goodwill credit, ticket 4711')"
echo "   alice approving her own proposal:"
{ psql -c "SET SESSION AUTHORIZATION demo_alice" -c "SELECT settle.approve_adjustment($exc, 25.00, 'USD', 'fine')" 2>&1 || true; } | sed -n 's/^ERROR: */   refused: /p'
psql -c "SET SESSION AUTHORIZATION demo_bob" \
     -c "SELECT exception_id, state, approved_by FROM settle.approve_adjustment($exc, 25.00, 'USD', 'checked ticket 4711')"
psql -c "SET SESSION AUTHORIZATION demo_bob" \
     -c "SELECT settle.dismiss_exception(exception_id, 'operator test tenant, not billable to a reseller') FROM settle.exception WHERE kind = 'unmapped_customer'" >/dev/null
psql -c "SELECT r.code AS reseller, p.run_id, p.status, p.blocked FROM settle.settle_period('2026-10', 'acme') p JOIN settle.reseller r USING (reseller_id)"
psql -c "SELECT line_key, kind, rounded, ref FROM settle.settlement_line WHERE kind = 'a'"

step "Approving and locking October (bob; alice may not approve the run carrying her adjustment)"
{ psql -c "SET SESSION AUTHORIZATION demo_alice" -c "SELECT settle.approve_run(run_id, 'ok') FROM settle.run WHERE status = 'draft' AND reseller_id = settle.reseller_id('acme')" 2>&1 || true; } | sed -n 's/^ERROR: */   refused: /p'
psql -c "SET SESSION AUTHORIZATION demo_bob" \
     -c "SELECT settle.approve_run(run_id, 'reviewed'), settle.lock_run(run_id, 'October closed') FROM settle.run WHERE status = 'draft'" >/dev/null
psql -c "SELECT reseller, period, state, total, net_payout, carry_forward_out FROM settle.period_status ORDER BY 1"

step "Statements: CSV per reseller and one printable document"
for code in acme borealis cedar; do
	val "SELECT encode(convert_to(settle.statement_csv(run_id), 'UTF8'), 'base64') FROM settle.run
	      WHERE period = '2026-10' AND status = 'locked' AND reseller_id = settle.reseller_id('$code')" | base64 -d > "$out/statement_${code}_2026-10.csv"
done
val "SELECT encode(convert_to(settle.statements_html('2026-10'), 'UTF8'), 'base64')" | base64 -d > "$out/statements_2026-10.html"
if command -v chromium >/dev/null; then
	chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
		--print-to-pdf="$out/statements_2026-10.pdf" "file://$out/statements_2026-10.html" >/dev/null 2>&1 || true
fi
echo "   $(ls "$out" | grep -c statement) statement files"

step "Payouts: a batch per currency from the locked statements, as CSV and ISO 20022 pain.001"
psql >/dev/null <<'SQL'
BEGIN;
SET LOCAL settle.reason = 'demo bank details';
SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd.', 'DE89370400440532013000', 'COBADEFFXXX', 'DE');
SELECT settle.set_payee('acme', 'Acme Cloud Partners Pte Ltd', 'GB82WEST12345698765432', 'NWBKGB2L', 'SG', 'USD');
SELECT settle.set_payee('borealis', 'Borealis IT KK', 'FR1420041010050500013M02606', 'BNPAFRPP', 'JP', 'JPY');
SELECT settle.set_payee('cedar', 'Cedar Digital WLL', 'NL91ABNA0417164300', 'ABNANL2A', 'KW', 'KWD');
COMMIT;
SQL
xsd=test/fixtures/iso20022/pain.001.001.03.xsd	# the official schema (test/fixtures/iso20022/README.md)
for ccy in USD JPY; do
	batch=$(val "SELECT batch_id FROM settle.create_payout_batch('2026-10', '$ccy')")
	val "SELECT encode(convert_to(settle.payout_file($batch, 'csv'), 'UTF8'), 'base64')" | base64 -d > "$out/payout_${batch}_${ccy}.csv"
	val "SELECT encode(convert_to(settle.payout_file($batch, 'pain.001'), 'UTF8'), 'base64')" | base64 -d > "$out/payout_${batch}_${ccy}.xml"
	xmllint --noout --schema "$xsd" "$out/payout_${batch}_${ccy}.xml" 2>&1 | sed 's/^/   /'
done
psql -c "SELECT batch_id, currency, status, (SELECT count(*) FROM settle.payout p WHERE p.batch_id = b.batch_id) AS payouts
           FROM settle.payout_batch b ORDER BY 1"
echo "   cedar's 217.831 KWD is below its 500 KWD minimum: carried forward, nothing to pay"

step "The bank confirms the USD batch: acme's run is paid"
psql -c "SELECT end_to_end_id, outcome FROM settle.import_payout_confirmations(
           (SELECT batch_id FROM settle.payout_batch WHERE currency = 'USD'),
           (SELECT jsonb_agg(jsonb_build_object('end_to_end_id', p.end_to_end_id, 'bank_reference', 'BANK-' || p.end_to_end_id,
                                                'status', 'ACSC', 'amount', p.amount::text))
              FROM settle.payout p JOIN settle.payout_batch b USING (batch_id) WHERE b.currency = 'USD'))"
psql -c "SELECT reseller, period, state, net_payout FROM settle.period_status ORDER BY 1"

step "Audit trail"
psql -c "SELECT table_name, count(*) AS entries FROM settle.audit_log GROUP BY 1 ORDER BY 1"
psql -c "SELECT verified, entries, first_broken_id FROM settle.verify_audit()"

step "Done: output in $out"
ls -l "$out"
