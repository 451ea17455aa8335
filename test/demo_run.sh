#!/usr/bin/env bash
# Runs inside pg_virtualenv: load the sample month and show what settle holds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${SETTLE_DEMO_OUT:-$PWD/out/demo}
mkdir -p "$out"
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
step() { printf '\n== %s\n' "$*"; }

step "Creating the extension (settle $(sed -n "s/^default_version = '\(.*\)'/\1/p" settle.control))"
psql -c 'CREATE EXTENSION settle CASCADE' 2>&1 | grep -v NOTICE || true

step "Loading the operator's setup: resellers, customers, accounts, agreements, FX rates"
psql -f test/fixtures/sample_model.sql >/dev/null
psql -c "SELECT r.code AS reseller, a.settlement_currency AS currency, a.rounding_mode, a.minimum_payout,
                count(DISTINCT c.customer_id) AS customers, count(ca.account_id) AS accounts
           FROM settle.reseller r JOIN settle.agreement a USING (reseller_id)
           JOIN settle.customer c USING (reseller_id) JOIN settle.customer_account ca USING (reseller_id, customer_id)
          GROUP BY 1, 2, 3, 4 ORDER BY 1"

step "Loading the sample month of bill lines (October 2026)"
psql -f test/fixtures/sample_lines.sql >/dev/null
psql -c "SELECT coalesce(r.code, '(unmapped)') AS reseller, b.billing_currency AS currency,
                count(*) AS lines, sum(b.list_cost) AS list_cost, sum(b.billed_cost) AS billed_cost,
                count(*) FILTER (WHERE b.source_item = 'Refund') AS refunds
           FROM settle.bill_line_current b LEFT JOIN settle.reseller r USING (reseller_id)
          GROUP BY 1, 2 ORDER BY 1"
psql -c "\copy (SELECT * FROM settle.bill_line_current ORDER BY line_key) TO '$out/bill_lines.csv' CSV HEADER"

step "Publishing each reseller's commission rules (immutable, audited versions)"
psql -f test/fixtures/sample_rules.sql >/dev/null
psql -c "SELECT r.code AS reseller, v.version, v.effective_from, encode(v.content_hash, 'hex') AS content_hash
           FROM settle.rule_version v JOIN settle.reseller r USING (reseller_id) ORDER BY 1"

step "Settling October 2026: SELECT settle.settle_period('2026-10')"
psql -c "SELECT r.code AS reseller, p.run_id, p.status, p.blocked, p.lines_in, p.lines_out
           FROM settle.settle_period('2026-10') p JOIN settle.reseller r USING (reseller_id) ORDER BY 1"

step "Statements"
psql -c "SELECT r.code AS reseller, s.currency, s.lines, s.gross_charges, s.commission, s.refunds,
                s.total, s.carry_forward_out, s.net_payout
           FROM settle.statement s JOIN settle.reseller r USING (reseller_id) ORDER BY 1"
for code in acme borealis cedar; do
	psql -c "\copy (SELECT * FROM settle.statement_lines((SELECT run_id FROM settle.run WHERE period = '2026-10' AND status <> 'superseded' AND reseller_id = settle.reseller_id('$code')))) TO '$out/statement_${code}_2026-10.csv' CSV HEADER"
done

step "Why did a line earn what it earned? settle.explain"
psql -c "SELECT item, value FROM settle.explain((SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('acme') AND period = '2026-10'),
                (SELECT min(line_key) FROM settle.settlement_line WHERE kind = 'r'))"

step "Re-deriving every run from its recorded inputs: settle.verify_run"
psql -c "SELECT r.code AS reseller, v.verified, v.lines FROM settle.run x JOIN settle.reseller r USING (reseller_id),
                settle.verify_run(x.run_id) v WHERE x.status <> 'superseded' ORDER BY 1"

step "Open exceptions"
psql -c "SELECT exception_id, kind, scope_key, period, state FROM settle.exception ORDER BY exception_id"

step "Audit trail"
psql -c "SELECT table_name, operation, count(*) AS entries FROM settle.audit_log GROUP BY 1, 2 ORDER BY 1, 2"
psql -c "SELECT verified, entries, first_broken_id FROM settle.verify_audit()"

step "Done: output in $out"
ls -l "$out"
