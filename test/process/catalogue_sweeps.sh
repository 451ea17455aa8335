#!/usr/bin/env bash
# Trust sweeps driven by the catalogue, on the demo month (three resellers,
# runs, exceptions, payouts): every function and view of schema settle is
# covered as it is added, without editing this test.
#   1. NULLs: every function, called by each role (a login per settle role, a
#      plain login and the superuser) with NULL in every argument position,
#      never ends a backend ("terminated by signal" in the server log fails);
#      the plain login is refused every call.
#   2. Tenancy: every table and view a settle_reseller login may read, and
#      every function it may execute, read by two reseller logins, never
#      returns a row of another reseller.
#   3. Money: every numeric argument of every function refuses NaN,
#      ±Infinity and amounts settle cannot hold exactly, with 22003 or 22023.
#   4. Periods: every argument of type settle.period, and no other argument
#      named like a period; the domain accepts exactly YYYY-MM with a real month.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
DB=settle_sweep
here=test/process
work=$(mktemp -d /tmp/settle-sweep.XXXXXX)
chmod 755 "$work"
LOG=$(pg_lsclusters -h | awk '{print $7; exit}')
log_from=$(stat -c %s "$LOG")

dropdb --if-exists $DB >/dev/null 2>&1
createdb $DB
if ! PGDATABASE=$DB SETTLE_DEMO_OUT=$work/demo bash test/demo_run.sh >"$work/demo.log" 2>&1; then
	tail -30 "$work/demo.log"; echo "FAIL - the demo month could not be built"; exit 1
fi
# the demo's mock and secret file are gone: put the server settings back
psql -X -q -d postgres -c "ALTER SYSTEM RESET settle.secret_file" -c "ALTER SYSTEM RESET settle.ca_file" \
	-c "ALTER SYSTEM RESET settle.worker_naptime_ms" -c "SELECT pg_reload_conf()" >/dev/null

psql -X -q -v ON_ERROR_STOP=1 -d $DB <<'SQL'
SET client_min_messages = warning;
DO $$
DECLARE r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['sweep_admin', 'sweep_operator', 'sweep_analyst', 'sweep_finance', 'sweep_auditor',
	                         'sweep_portal_a', 'sweep_portal_b', 'sweep_plain'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I LOGIN', r);
		END IF;
	END LOOP;
END $$;
GRANT settle_admin TO sweep_admin;
GRANT settle_operator TO sweep_operator;
GRANT settle_analyst TO sweep_analyst;
GRANT settle_finance TO sweep_finance;
GRANT settle_auditor TO sweep_auditor;
GRANT settle_reseller TO sweep_portal_a, sweep_portal_b;
SET settle.reason = 'sweep logins';
SELECT settle.grant_reseller_access('sweep_portal_a', 'acme'), settle.grant_reseller_access('sweep_portal_b', 'borealis');
SQL

as_user() {	# as_user LOGIN psql-arguments...: psql as that login (SET SESSION AUTHORIZATION)
	local who=$1; shift
	if [ "$who" = postgres ]; then
		psql -X -q -At -d $DB "$@"
	else
		psql -X -q -At -d $DB -c "SET SESSION AUTHORIZATION $who" "$@"
	fi
}

crashes() {	# server log lines since the test started that say a backend died
	tail -c +"$((log_from + 1))" "$LOG" | grep -E 'terminated by signal|was terminated by|server process .* exited with exit code [^0]' || true
}

# --- 1. NULL in every argument position --------------------------------------
psql -X -q -At -v mode=null -d $DB -f $here/sweep_calls.sql >"$work/null_calls.sql"
ncalls=$(wc -l <"$work/null_calls.sql")
check "the NULL sweep has calls for every function (>= 250)" "$([ "$ncalls" -ge 250 ] && echo yes || echo "$ncalls")" yes
# each call alone in a transaction that is rolled back
awk '{print "BEGIN; SET LOCAL statement_timeout = '"'"'20s'"'"'; SET LOCAL client_min_messages = panic;"; print; print "ROLLBACK;"}' \
	"$work/null_calls.sql" >"$work/null_run.sql"
for who in postgres sweep_admin sweep_operator sweep_analyst sweep_finance sweep_auditor sweep_portal_a sweep_plain; do
	as_user "$who" -v VERBOSITY=terse -f "$work/null_run.sql" >"$work/null_$who.out" 2>&1
	rc=$?
	lost=$(grep -c 'server closed the connection\|connection to server was lost' "$work/null_$who.out")
	check "NULL sweep as $who: $ncalls calls, the session survives (psql $rc)" "$lost" 0
done
check "no backend ended by a signal during the NULL sweep" "$(crashes | head -3)" ""
# The same calls as a login without a settle role, with their errors shown:
# every one fails, refused for the schema (42501: it is closed to PUBLIC,
# src/sql/98_privileges.sql) whatever PUBLIC may execute, but for calls whose
# own literals do not parse (a sample value of the wrong form: 22P02, 22007,
# 42P01 for a regclass), which fail before any function is looked up.
# test/pgtap/roles.sql and sql/privileges.sql check the grants themselves.
awk '{print "BEGIN; SET LOCAL statement_timeout = '"'"'20s'"'"';"; print; print "ROLLBACK;"}' \
	"$work/null_calls.sql" >"$work/plain_run.sql"
as_user sweep_plain -v VERBOSITY=sqlstate -f "$work/plain_run.sql" >"$work/plain.out" 2>&1
plain_refused=$(grep -c 'ERROR:  42501$' "$work/plain.out")
check "as sweep_plain, every one of the $ncalls calls fails ($plain_refused refused: 42501)" \
	"$(grep -c 'ERROR:  ' "$work/plain.out")" "$ncalls"
check "... and every other failure is a literal that does not parse" \
	"$(grep -o 'ERROR:  .*' "$work/plain.out" | grep -v -x -E 'ERROR:  (42501|22P02|22007|42P01)' | sort | uniq -c)" ""
check "NULL reaches a C function as an error, not a crash: verify_run(NULL)" \
	"$(psql -X -At -d $DB -c 'SELECT settle.verify_run(NULL)' 2>&1 | sed -n 's/^ERROR: *//p')" "unknown run <NULL>"
check "exception_of(NULL) is an unknown exception (P0002), not an empty row" \
	"$(psql -X -At -d $DB -v VERBOSITY=sqlstate -c 'SELECT settle.exception_of(NULL)' 2>&1)" "ERROR:  P0002"

# --- 2. A reseller login reads its own reseller only ---------------------------
# Tables and views: every row must carry the login's own reseller_id; a
# relation a reseller may read without a reseller_id column must be one of the
# shared catalogues listed here.
shared="settle.currency settle.product settle.product_category settle.reseller_access"
for who in sweep_portal_a sweep_portal_b; do
	own=$(q $DB "SELECT string_agg(reseller_id::text, ',') FROM settle.reseller_access WHERE role_name = '$who'")
	rels=$(q $DB "SELECT c.oid::regclass FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace
	               AND c.relkind IN ('r', 'v', 'm', 'p') AND has_table_privilege('settle_reseller', c.oid, 'SELECT')
	             ORDER BY 1")
	for rel in $rels; do
		if [ -n "$(q $DB "SELECT 1 FROM pg_attribute WHERE attrelid = '$rel'::regclass AND attname = 'reseller_id' AND NOT attisdropped")" ]; then
			got=$(as_user "$who" -c "SELECT count(*) FILTER (WHERE reseller_id <> ALL ('{$own}'::bigint[])) || '/' || count(*) FROM $rel" 2>&1)
			check "$who reads only its own rows of $rel" "${got%%/*}" 0
		else
			case " $shared " in
			*" $rel "*) ;;
			*) check "$rel is readable by resellers but has no reseller_id to check" "$rel" "(a shared catalogue)" ;;
			esac
		fi
	done
	# reseller_access: only the login's own mapping
	check "$who sees only its own access mapping" \
		"$(as_user "$who" -c "SELECT count(*) FROM settle.reseller_access WHERE role_name <> current_user")" 0
done
check "the demo month gives both logins rows to read" \
	"$(as_user sweep_portal_a -c 'SELECT count(*) > 0 FROM settle.bill_line_current')$(as_user sweep_portal_b -c 'SELECT count(*) > 0 FROM settle.bill_line_current')" tt
# bill_line_current with RLS: the same counts as bill_line (the view once ran as its owner)
check "bill_line_current as reseller a: acme's lines only" \
	"$(as_user sweep_portal_a -c "SELECT string_agg(DISTINCT r.code, ',') FROM settle.bill_line_current b JOIN settle.reseller r USING (reseller_id)")" acme
check "every view runs as its reader (security_invoker)" \
	"$(q $DB "SELECT string_agg(c.relname, ',') FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'v'
	            AND NOT coalesce('security_invoker=true' = ANY (c.reloptions), false)")" ""
check "every table a reseller may read has row-level security (or is a shared catalogue)" \
	"$(q $DB "SELECT string_agg(c.oid::regclass::text, ',') FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace
	            AND c.relkind IN ('r', 'p') AND has_table_privilege('settle_reseller', c.oid, 'SELECT') AND NOT c.relrowsecurity
	            AND c.oid::regclass::text <> ALL (string_to_array('$shared', ' '))")" ""
# Functions: every function a reseller may execute that reads tables (not
# immutable), called with the other reseller's identifiers (runs, exceptions,
# reseller id and code, payout batches), returns nothing of it: an error, no
# rows, NULL or false.
psql -X -At -d $DB >"$work/tenancy_calls.txt" <<'SQL'
WITH other AS (
	SELECT 'int8'::regtype AS t, x::text AS v FROM (
		SELECT run_id AS x FROM settle.run WHERE reseller_id = settle.reseller_id('borealis')
		UNION SELECT exception_id FROM settle.exception WHERE reseller_id = settle.reseller_id('borealis')
		UNION SELECT settle.reseller_id('borealis')
		UNION SELECT batch_id FROM settle.payout WHERE reseller_id = settle.reseller_id('borealis')) s
	UNION ALL SELECT 'text'::regtype, 'borealis'
)
SELECT pg_temp_call FROM (
	SELECT format('SELECT count(*) FILTER (WHERE r IS NOT NULL AND r::text NOT IN (''false'', ''()'', ''(,,,,)'')) FROM (SELECT settle.%s(%s) AS r) s',
	              quote_ident(p.proname),
	              string_agg(CASE WHEN a.i = k.i THEN quote_literal(o.v) || '::' || format_type(a.t, NULL)
	                              ELSE 'NULL::' || format_type(a.t, NULL) END, ', ' ORDER BY a.i)) AS pg_temp_call
	  FROM pg_proc p
	  CROSS JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY AS k(t, i)
	  JOIN other o ON o.t = k.t
	  CROSS JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i)
	 WHERE p.pronamespace = 'settle'::regnamespace AND p.provolatile <> 'i' AND p.prokind = 'f'
	   AND p.prorettype <> 'trigger'::regtype
	   AND has_function_privilege('settle_reseller', p.oid, 'EXECUTE')
	 GROUP BY p.oid, p.proname, k.i, o.v) c
ORDER BY 1;
SQL
nfn=0; leaks=""
while IFS= read -r call; do
	[ -n "$call" ] || continue
	nfn=$((nfn + 1))
	got=$(as_user sweep_portal_a -c "$call" 2>/dev/null)
	[ -z "$got" ] || [ "$got" = 0 ] || leaks="$leaks | $call -> $got"
done <"$work/tenancy_calls.txt"
echo "     ($nfn calls of reseller-executable functions with the other reseller's identifiers)"
check "no function gives reseller a anything of reseller b" "$leaks" ""
check "statement_csv of another reseller's run is refused (42501)" \
	"$(as_user sweep_portal_a -v VERBOSITY=sqlstate -c "SELECT settle.statement_csv((SELECT max(run_id) FROM settle.run WHERE reseller_id = settle.reseller_id('borealis')))" 2>&1)" \
	"ERROR:  42501"

# Staff: every role reads every relation it is granted, through views too (a
# view runs as its reader, so its reader needs the tables under it), and the
# operator, analyst and finance read everything but the audit trail (and, but
# for finance, the payee's bank details).
for who in sweep_admin sweep_operator sweep_analyst sweep_finance sweep_auditor sweep_portal_a; do
	role=$(q $DB "SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
	               WHERE u.rolname = '$who' AND b.rolname LIKE 'settle\_%'")
	failed=""
	for rel in $(q $DB "SELECT c.oid::regclass FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace
	                     AND c.relkind IN ('r', 'v', 'm', 'p') AND has_table_privilege('$role', c.oid, 'SELECT') ORDER BY 1"); do
		as_user "$who" -c "SELECT count(*) FROM $rel" >/dev/null 2>&1 || failed="$failed $rel"
	done
	check "$who can read every relation granted to $role" "$failed" ""
done
for role in settle_operator settle_analyst settle_finance; do
	check "$role reads everything but the audit trail and bank details" \
		"$(q $DB "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace
		            AND c.relkind IN ('r', 'v', 'm', 'p') AND NOT has_table_privilege('$role', c.oid, 'SELECT')")" \
		"audit_anchor,audit_head,audit_link,audit_log$([ $role = settle_finance ] || echo ,payee,payee_current)"
done

# --- 3. Money arguments refuse what settle cannot hold -------------------------
psql -X -q -At -v mode=money -d $DB -f $here/sweep_calls.sql >"$work/money_calls.txt"
nmoney=$(wc -l <"$work/money_calls.txt")
check "the money sweep has calls (>= 60)" "$([ "$nmoney" -ge 60 ] && echo yes || echo "$nmoney")" yes
bad=""
while IFS='|' read -r val call; do
	state=$(psql -X -At -d $DB -v VERBOSITY=sqlstate -c "BEGIN" -c "$call" -c "ROLLBACK" 2>&1 | sed -n 's/^ERROR: *//p' | head -1)
	case "$state" in 22003|22023) ;; *) bad="$bad | $val in $call -> ${state:-accepted}" ;; esac
done <"$work/money_calls.txt"
echo "     ($nmoney calls with NaN, ±Infinity, 10^14, 10^20, 10^-30)"
check "every numeric argument refuses NaN, ±Infinity and amounts settle cannot hold (22003/22023)" "$bad" ""
# the reviewer's case: a NaN adjustment approved by a second finance login
exc=$(q $DB "SELECT min(exception_id) FROM settle.exception WHERE reseller_id <> 0")
check "propose_adjustment(e, 'NaN', ...) is refused with 22003" \
	"$(as_user sweep_finance -v VERBOSITY=sqlstate -c "SELECT settle.propose_adjustment($exc, 'NaN', '2026-12', 'r')" 2>&1)" "ERROR:  22003"
check "... and writes nothing" "$(q $DB "SELECT count(*) FROM settle.exception WHERE adjustment_amount = 'NaN' OR target_period = '2026-12'")" 0

# --- 4. Periods ------------------------------------------------------------------
check "every argument named like a period is a settle.period" \
	"$(q $DB "SELECT string_agg(DISTINCT p.proname || '.' || n, ',') FROM pg_proc p,
	            unnest(p.proargnames, p.proargtypes::oid[]::regtype[]) WITH ORDINALITY AS u(n, t, i)
	          WHERE p.pronamespace = 'settle'::regnamespace AND n ~ '(^|_)(period|billing_cycle)$'
	            AND p.proname <> 'check_period' AND i <= p.pronargs AND t <> 'settle.period'::regtype")" ""
check "every period column is checked by settle.check_period or is a settle.period" \
	"$(q $DB "SELECT string_agg(a.attrelid::regclass || '.' || a.attname, ',') FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	          WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
	            AND a.attname ~ '(^|_)(period|billing_cycle)$' AND a.atttypid <> 'settle.period'::regtype
	            AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = a.attrelid AND a.attnum = ANY (k.conkey)
	                             AND pg_get_constraintdef(k.oid) LIKE '%check_period%')")" ""
periods=$(q $DB "SELECT string_agg(p || '=' || CASE WHEN settle.check_period(p) THEN 'ok' END, ' ') FROM unnest(ARRAY['2026-10', '0001-01', '9999-12']) p")
check "real months are periods" "$periods" "2026-10=ok 0001-01=ok 9999-12=ok"
for p in 0000-01 2026-1 2026-13 2026-00 " 2026-10" "2026-10 " 2026/10 20261 2026-10-01 "" ２０２６-10; do
	check "'$p' is not a period (22007)" \
		"$(psql -X -At -d $DB -v VERBOSITY=sqlstate -c "SELECT settle.next_open_period(1, '$p')" 2>&1)" "ERROR:  22007"
done

check "no backend ended by a signal during the sweeps" "$(crashes | head -3)" ""
rm -rf "$work"
finish
