#!/usr/bin/env bash
# settle.bulk_nice: settlement and reconciliation lower their backend's CPU
# priority (its nice value, read from /proc).  With the default nice limit
# (RLIMIT_NICE 0) a backend can never raise it again: the session keeps it
# until it ends, says so once, and a later transaction does not lower it
# twice.  Where the machine lets the test raise the limit (prlimit --nice=20
# needs CAP_SYS_RESOURCE, which some containers drop), a second cluster shows
# it restored at the end of each transaction, committed or rolled back; where
# it cannot, that half says so and is not counted as passed.
set -uo pipefail
cd "$(dirname "$0")/../.."
sql=$(mktemp /tmp/settle-nice.XXXXXX.sql)
trap 'rm -f "$sql"' EXIT
cat >"$sql" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION settle CASCADE;
CREATE FUNCTION pg_temp.nice() RETURNS int LANGUAGE sql AS $$
	SELECT (string_to_array(split_part(pg_read_file('/proc/' || pg_backend_pid() || '/stat'), ') ', 2), ' '))[17]::int $$;
BEGIN;
SET LOCAL settle.reason = 'bulk priority test';
SELECT settle.add_reseller('bp', 'Bulk priority') IS NOT NULL;
SELECT settle.add_customer('bp', 'c1', 'Customer') IS NOT NULL;
SELECT settle.set_agreement('bp', '2026-01-01', 'USD') IS NOT NULL;
SELECT settle.publish_rule('bp', a.agreement_id, '2026-01-01', 'currency USD
otherwise pay 10%', 'flat') IS NOT NULL FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('bp');
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost)
SELECT settle.reseller_id('bp'), 'bp/1', 1, c.customer_id, sha256('bp/1'), 'PayAsYouGoBill', 'acct-bp',
       '2026-10-01', '2026-10-10 00:00+00', '2026-10-10 01:00+00', 'Usage', 'ecs', 'USD', 123.45, 123.45
  FROM settle.customer c WHERE c.code = 'c1';
COMMIT;
SET client_min_messages = notice;
SELECT 'start ' || pg_temp.nice();
SET settle.bulk_nice = 7;
BEGIN;
SELECT 'settled ' || lines_out FROM settle.settle_period('2026-10', 'bp');
SELECT 'commission ' || sum(rounded) FROM settle.settlement_line;
SELECT 'in settle ' || pg_temp.nice();
COMMIT;
SELECT 'after settle ' || pg_temp.nice();
BEGIN;
SELECT 'reconciled ' || count(*) FROM settle.reconcile('2026-10');
SELECT 'in reconcile ' || pg_temp.nice();
ROLLBACK;
SELECT 'after rollback ' || pg_temp.nice();
SET settle.bulk_nice = 0;
BEGIN;
SELECT 'reconciled ' || count(*) FROM settle.reconcile('2026-10');
SELECT 'off ' || pg_temp.nice();
COMMIT;
SQL
port=$((${PGPORT:-5432} + 23))
run() {	# run PRLIMIT_ARGS...: the script in a throwaway cluster, its output
	"$@" pg_virtualenv -t -v 15 -c "-p $port" psql -X -q -At -v ON_ERROR_STOP=1 -f "$sql" 2>&1 |
		grep -vE '^(Creating|Dropping) |^t$|LOG:' | sed 's/^psql:[^ ]* NOTICE:  /NOTICE: /'
}
fail=0
check() {	# check NAME EXPECTED ACTUAL
	if [ "$2" = "$3" ]; then echo "ok: $1"; else
		echo "FAIL: $1"; echo "--- wanted"; echo "$2"; echo "--- got"; echo "$3"; fail=1; fi
}
check "default nice limit: lowered to 7 by settle_period for the rest of the session, said once" \
"start 0
NOTICE: this session now runs at CPU priority nice 7 (settle.bulk_nice) until it ends
DETAIL:  The server's nice limit (RLIMIT_NICE) does not let a session raise its priority again.
HINT:  Set settle.bulk_nice only for roles and jobs that do bulk work, or start the server with LimitNICE=+0 (systemd) to have it restored after each transaction.
settled 1
commission 12.34
in settle 7
after settle 7
reconciled 2
in reconcile 7
after rollback 7
reconciled 2
off 7" "$(run prlimit --nice=0)"
if prlimit --nice=20 true 2>/dev/null; then
	check "nice limit 20: lowered to 7 inside settle_period's and reconcile's transactions, 0 again after commit and rollback" \
"start 0
settled 1
commission 12.34
in settle 7
after settle 0
reconciled 2
in reconcile 7
after rollback 0
reconciled 2
off 0" "$(run prlimit --nice=20)"
else
	echo "not run: the restore path (this machine cannot raise RLIMIT_NICE: no CAP_SYS_RESOURCE)"
fi
exit $fail
