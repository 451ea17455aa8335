#!/usr/bin/env bash
# Two sessions create the same payout batch at once: the second waits for the
# first (advisory lock), then finds nothing left to pay (P0002).  One batch,
# each statement paid once.  And two concurrent imports of the same
# confirmation confirm the payout once and move its run to paid once.
set -euo pipefail
cd "$(dirname "$0")/../.."
db=payout_concurrency
dropdb --if-exists "$db" >/dev/null 2>&1
createdb "$db"
tmp=$(mktemp -d)
trap 'dropdb --if-exists "$db" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
psql() { command psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@"; }
psql -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'
psql --single-transaction -f test/process/payout_scenario.sql >/dev/null
psql --single-transaction >/dev/null <<'SQL'
SET LOCAL settle.reason = 'payout_concurrency test';
SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd.', 'DE89370400440532013000', 'COBADEFFXXX', 'DE');
SELECT settle.set_payee('alpha', 'Alpha Cloud GmbH', 'GB82WEST12345698765432', 'NWBKGB2L', 'GB', 'EUR');
SELECT settle.set_payee('bravo', 'Bravo', 'FR1420041010050500013M02606', 'BNPAFRPP', 'FR', 'EUR');
SELECT settle.set_payee('echo', 'Echo', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'EUR');
SQL
fail=0
# session A holds its batch open for 2 s; session B starts meanwhile
psql -At -c "BEGIN" -c "SELECT batch_id FROM settle.create_payout_batch('2026-10', 'EUR')" -c "SELECT pg_sleep(2)" -c "COMMIT" > "$tmp/a.out" 2>&1 &
a=$!
sleep 0.5
psql -At -v VERBOSITY=verbose -c "SELECT batch_id FROM settle.create_payout_batch('2026-10', 'EUR')" > "$tmp/b.out" 2>&1 && b=0 || b=$?
wait $a && ra=0 || ra=$?
cat "$tmp/a.out" "$tmp/b.out"
[ "$ra" = 0 ] && echo "ok: session A created the batch" || { echo "FAIL: session A failed"; fail=1; }
grep -q "ERROR:  P0002" "$tmp/b.out" && echo "ok: session B waited and found nothing to pay (P0002)" || { echo "FAIL: session B: $(cat "$tmp/b.out")"; fail=1; }
n=$(psql -At -c "SELECT count(*) || '/' || (SELECT count(*) FROM settle.payout) || '/' || (SELECT count(DISTINCT (reseller_id, run_id)) FROM settle.payout) FROM settle.payout_batch")
[ "$n" = "1/3/3" ] && echo "ok: one batch, three payouts, each run once" || { echo "FAIL: batches/payouts/runs = $n"; fail=1; }

# two concurrent imports of the same confirmation
e2e=$(psql -At -c "SELECT end_to_end_id FROM settle.payout WHERE reseller_code = 'alpha'")
conf="[{\"end_to_end_id\": \"$e2e\", \"bank_reference\": \"BANK-1\", \"status\": \"ACSC\", \"amount\": \"123.45\"}]"
psql -At -c "BEGIN" -c "SELECT outcome FROM settle.import_payout_confirmations(1, '$conf'::jsonb)" -c "SELECT pg_sleep(1.5)" -c "COMMIT" > "$tmp/c.out" 2>&1 &
c=$!
sleep 0.5
psql -At -c "SELECT outcome FROM settle.import_payout_confirmations(1, '$conf'::jsonb)" > "$tmp/d.out" 2>&1 || true
wait $c || true
outs=$(cat "$tmp/c.out" "$tmp/d.out" | grep -E '^(confirmed|already_confirmed)$' | sort | tr '\n' ' ')
[ "$outs" = "already_confirmed confirmed " ] && echo "ok: one import confirms, the concurrent one sees it confirmed" \
	|| { echo "FAIL: outcomes: $(cat "$tmp/c.out" "$tmp/d.out")"; fail=1; }
paid=$(psql -At -c "SELECT count(*) FROM settle.audit_log WHERE table_name = 'run' AND new_row->>'status' = 'paid'")
[ "$paid" = 1 ] && echo "ok: the run moved to paid once" || { echo "FAIL: $paid moves to paid"; fail=1; }
[ "$fail" = 0 ] && echo "payout_concurrency: all checks passed"
exit $fail
