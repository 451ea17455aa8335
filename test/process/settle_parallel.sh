#!/usr/bin/env bash
# Parallel settlement (CALL settle.settle_period_parallel): the same results
# as settle_period, one transaction per reseller, in background workers.
#  - one generated scenario (test/diff/gen.py: 6 resellers, two periods,
#    tiers, caps, floors, refunds, FX, blocked runs) loaded into three
#    databases and settled period by period by a settle_analyst login:
#    serially (settle_period), in parallel (3 workers), and with workers = 0
#    (one reseller after another in the calling session); every run (run ids
#    included: the queue takes them in reseller order, as a serial call does,
#    and later periods' refunds refer to them), statement,
#    lineage row, exception and both fingerprints are the same in all three;
#    verify_run is true on every run; the runs' creator and the audit trail's
#    session user are the login, not the superuser the workers start as;
#    calling again changes nothing;
#  - a reseller whose run fails (a bill line attribute longer than the
#    engine takes, 22001): the others are settled and committed, the call ends with an
#    ERROR (the failing reseller's SQLSTATE) naming it, with a NOTICE per
#    reseller;
#  - more workers asked for than background worker slots are free: a NOTICE,
#    and every reseller is settled all the same;
#  - inside a transaction block, or from a function: refused, SQLSTATE 25001;
#  - a cancelled call (statement_timeout) stops its workers; the runs they
#    committed verify, and calling again settles the rest.
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh
W=$(mktemp -d /tmp/settle-par.XXXXXX)
chmod 755 "$W"
trap 'rm -rf "$W"' EXIT
S=settle_par_serial P=settle_par_parallel Z=settle_par_zero F=settle_par_fail X=settle_par_slots
PW="pw-$(openssl rand -hex 8)"
psql -X -q -d postgres -c "DROP ROLE IF EXISTS par_analyst" >/dev/null 2>&1
for db in $S $P $Z $F $X; do dropdb --if-exists $db >/dev/null 2>&1; done
psql -X -q -d postgres -c "CREATE ROLE par_analyst LOGIN PASSWORD '$PW'" >/dev/null
as() {	# as DB SQL: psql as the par_analyst login (password, over TCP)
	PGPASSWORD=$PW command psql -X -q -At -h "${PGHOST:-localhost}" -U par_analyst -d "$1" -v VERBOSITY=verbose -c "$2" 2>&1
}
[ "$(as postgres 'SELECT current_user')" = par_analyst ] ||
	as() { PGPASSWORD=$PW command psql -X -q -At -h 127.0.0.1 -U par_analyst -d "$1" -v VERBOSITY=verbose -c "$2" 2>&1; }

python3 test/diff/gen.py --seed 12 --lines 600 --resellers 6 --periods 2 --no corrections --out "$W/g" >/dev/null || exit 1
periods=$(python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['periods']))" "$W/g/scenario.json")
for db in $S $P $Z; do
	createdb $db
	psql -X -q -v ON_ERROR_STOP=1 -d $db -c 'CREATE EXTENSION settle CASCADE' >/dev/null
	psql -X -q -v ON_ERROR_STOP=1 -d $db -f "$W/g/load.sql" >/dev/null 2>"$W/load.err" || { cat "$W/load.err"; exit 1; }
	psql -X -q -d $db -c "GRANT settle_analyst TO par_analyst" >/dev/null 2>&1
	psql -X -q -d postgres -c "ALTER DATABASE $db SET settle.max_settle_workers = 4" >/dev/null
done
check "logged in as par_analyst, not a superuser" \
	"$(as $P 'SELECT current_user, usesuper, pg_has_role(current_user, '"'settle_analyst'"', '"'MEMBER'"') FROM pg_user WHERE usename = current_user')" "par_analyst|f|t"
check "six resellers with an agreement in force" "$(q $P "SELECT count(*) FROM settle.agreement")" "6"

for p in $periods; do
	as $S "SELECT count(*) FROM settle.settle_period('$p')" > "$W/serial_$p.out"
	as $P "CALL settle.settle_period_parallel('$p', 3)" > "$W/parallel_$p.out"
	as $Z "CALL settle.settle_period_parallel('$p', workers => 0)" > "$W/zero_$p.out"
done
check "serial: runs of both periods" "$(cat "$W"/serial_*.out | tr '\n' ' ')" "6 6 "
p1=${periods%% *}
check "parallel: a NOTICE per reseller with its run, no error" \
	"$(grep -c "NOTICE:  00000: reseller r[0-9]: run [0-9]* (draft)" "$W/parallel_$p1.out")|$(cat "$W"/parallel_*.out | grep -c ERROR)" "6|0"
check "workers => 0: settled in this session, said so" \
	"$(grep -c 'settling the 6 resellers one after another in this session' "$W/zero_$p1.out")|$(cat "$W"/zero_*.out | grep -c ERROR)" "1|0"

dump() {	# dump DB: every run (with its id: the queue takes them in reseller order, as a
	# serial call does, and later periods' lineage refers to them), statement, lineage row, exception
	q $1 "SELECT r.reseller_id, r.period, r.run_id, r.status, r.blocked, encode(r.input_fingerprint, 'hex'),
	             encode(r.output_fingerprint, 'hex'), r.lines_in, r.lines_out, r.supersedes IS NULL,
	             r.engine_version, r.created_by
	        FROM settle.run r ORDER BY r.reseller_id, r.period, r.run_id" > "$W/$1.runs"
	q $1 "SELECT r.reseller_id, r.period, s.currency, s.lines, s.gross_charges, s.commissionable, s.commission,
	             s.refunds, s.corrections, s.adjustments, s.total, s.carry_forward_in, s.carry_forward_out, s.net_payout
	        FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id)
	       ORDER BY r.reseller_id, r.period, r.run_id" > "$W/$1.statements"
	q $1 "SELECT r.reseller_id, r.period, l.line_key, l.kind, l.revision, l.rule_version, l.clause, l.tier, l.basis,
	             l.rate, l.fx_rate_id, l.unrounded, l.rounded, l.ref
	        FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
	       ORDER BY r.reseller_id, r.period, r.run_id, l.line_key COLLATE \"C\", l.kind" > "$W/$1.lineage"
	q $1 "SELECT reseller_id, kind, severity, state, period, scope_key, payload - 'run_id'
	        FROM settle.exception ORDER BY reseller_id, period, kind, scope_key" > "$W/$1.exceptions"
}
dump $S; dump $P; dump $Z
for x in runs statements lineage exceptions; do
	check "parallel = serial: $x ($(wc -l < "$W/$S.$x") rows)" "$(diff "$W/$S.$x" "$W/$P.$x" | head -5)" ""
	check "workers => 0 = serial: $x" "$(diff "$W/$S.$x" "$W/$Z.$x" | head -5)" ""
done
check "lineage rows and runs: something to compare" \
	"$([ "$(wc -l < "$W/$S.lineage")" -ge 600 ] && echo many)|$(wc -l < "$W/$S.runs")" "many|12"
check "FX, tiers and refunds are in the lineage" \
	"$(q $P "SELECT count(*) FILTER (WHERE fx_rate_id IS NOT NULL) > 0, count(*) FILTER (WHERE tier IS NOT NULL) > 0,
	            count(*) FILTER (WHERE kind = 'r') > 0 FROM settle.settlement_line")" "t|t|t"
for db in $P $Z; do
	check "$db: verify_run true on every run" \
		"$(q $db "SELECT count(*), count(*) FILTER (WHERE (settle.verify_run(run_id)).verified) FROM settle.run")" "12|12"
done
check "created_by is the caller on every run, in every database" \
	"$(cat "$W/$S.runs" "$W/$P.runs" "$W/$Z.runs" | awk -F'|' '{ print $NF }' | sort | uniq -c | awk '{ print $1, $2 }')" "36 par_analyst"
check "the audit trail: every run insert made by the login (session and current user)" \
	"$(q $P "SELECT count(*), string_agg(DISTINCT session_user_name || '/' || current_user_name, ',')
	          FROM settle.audit_log WHERE table_name LIKE '%run' AND operation = 'INSERT'")" "12|par_analyst/postgres"
check "each run committed in a transaction of its own" \
	"$(q $P "SELECT count(DISTINCT txid) FROM settle.audit_log WHERE table_name LIKE '%run' AND operation = 'INSERT'")" "12"

# again: nothing changes
as $P "CALL settle.settle_period_parallel('$p1', 3)" > "$W/again.out"
check "called again: every run unchanged, no new run" \
	"$(grep -c 'unchanged' "$W/again.out")|$(q $P "SELECT count(*) FROM settle.run")" "6|12"

# ---- a reseller whose run fails
createdb $F
psql -X -q -d $F -v n=300 -v resellers=3 -v cpr=5 -f bench/settle_data.sql >/dev/null 2>"$W/f.err" || { cat "$W/f.err"; exit 1; }
psql -X -q -d $F -c "GRANT settle_analyst TO par_analyst" >/dev/null 2>&1
# a bill line attribute longer than the engine takes (22001)
long_line() {	# long_line RESELLER_ID KEY REVISION REGION
	q $F "INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
		product_code, billing_currency, list_cost, billed_cost, region_id)
	      SELECT reseller_id, '$2', $3, customer_id, sha256('$2/$3'), 'PayAsYouGoBill', billing_account_id,
	             billing_period_start, charge_period_start, charge_period_end, charge_category, product_code,
	             billing_currency, 1, 1, '$4'
	        FROM settle.bill_line WHERE reseller_id = $1 LIMIT 1" >/dev/null
}
LONG=$(printf 'r%.0s' $(seq 1 200))
long_line 2 long 1 "$LONG"
as $F "CALL settle.settle_period_parallel('2026-10', 2)" > "$W/fail.out"
check "the call ends with an ERROR, the failing reseller's SQLSTATE, naming it" \
	"$(grep '^ERROR' "$W/fail.out")" \
	"ERROR:  22001: settle_period_parallel: 1 of 3 resellers failed in 2026-10: bench-2"
check "its DETAIL gives the reseller's error" \
	"$(grep -c '^DETAIL:  bench-2: bill line attribute "rrrr*\.\.\." is longer than 127 bytes (SQLSTATE 22001)' "$W/fail.out")" "1"
check "a NOTICE per reseller: two runs, one failure" \
	"$(grep -c 'NOTICE:  00000: reseller bench-[13]: run [0-9]* (draft)' "$W/fail.out")|$(grep -c 'NOTICE:  00000: reseller bench-2 failed: bill line attribute' "$W/fail.out")" "2|1"
check "the others are settled and committed; the failing one has no run" \
	"$(q $F "SELECT string_agg(r.code || ':' || coalesce(x.lines_in::text, 'none'), ' ' ORDER BY r.reseller_id)
	          FROM settle.reseller r LEFT JOIN settle.run x USING (reseller_id)")" "bench-1:100 bench-2:none bench-3:100"
check "the settled runs verify" "$(q $F "SELECT bool_and((settle.verify_run(run_id)).verified) FROM settle.run")" "t"
# the same failure in the calling session (workers => 0)
# reseller 3 fails too, now in the calling session (workers => 0)
long_line 3 long3 1 "$LONG"
as $F "CALL settle.settle_period_parallel('2026-10', 0)" > "$W/fail0.out"
check "workers => 0: both failures named, each in the DETAIL; reseller 1 unchanged" \
	"$(grep '^ERROR' "$W/fail0.out")|$(grep -c '^\(DETAIL:  \)\?bench-[23]: bill line attribute' "$W/fail0.out")|$(grep -c 'reseller bench-1: run [0-9]* (draft) unchanged' "$W/fail0.out")" \
	"ERROR:  22001: settle_period_parallel: 2 of 3 resellers failed in 2026-10: bench-2, bench-3|2|1"
check "reseller 3's draft stays as it was (its new run rolled back)" \
	"$(q $F "SELECT count(*), max(lines_in) FROM settle.run WHERE reseller_id = 3")" "1|100"

# ---- more workers than free slots
createdb $X
psql -X -q -v ON_ERROR_STOP=1 -d $X >/dev/null 2>&1 <<SQL
CREATE EXTENSION settle CASCADE;
SET settle.reason = 'slots';
SELECT settle.add_reseller('s' || i, 'Slot ' || i), settle.set_agreement('s' || i, '2026-01-01', 'USD')
  FROM generate_series(1, 24) i;
GRANT settle_analyst TO par_analyst;
ALTER DATABASE $X SET settle.max_settle_workers = 64;
SQL
as $X "CALL settle.settle_period_parallel('2026-10', 64)" > "$W/slots.out"
check "more workers than max_worker_processes leaves: a NOTICE, no error" \
	"$(grep -c 'NOTICE:  00000: only [0-9]* of 24 background workers could be started: settling with [0-9]*' "$W/slots.out")|$(grep -c ERROR "$W/slots.out")" "1|0"
check "every reseller settled all the same" "$(q $X "SELECT count(*) FROM settle.run")" "24"

# ---- refused inside a transaction block, or from a function
check "inside a transaction block: 25001" \
	"$(as $X "BEGIN; CALL settle.settle_period_parallel('2026-11'); COMMIT" | grep -o '^ERROR:  25001: .*')" \
	"ERROR:  25001: CALL settle.settle_period_parallel() cannot run inside a transaction block"
q $X "CREATE FUNCTION public.par_call() RETURNS void LANGUAGE plpgsql AS \$\$ BEGIN CALL settle.settle_period_parallel('2026-11'); END \$\$" >/dev/null
check "from a function: 25001" \
	"$(as $X "SELECT public.par_call()" | grep -o '^ERROR:  25001: .*')" \
	"ERROR:  25001: CALL settle.settle_period_parallel() cannot be executed from a function"
check "nothing settled by the refused calls" "$(q $X "SELECT count(*) FROM settle.run WHERE period = '2026-11'")" "0"
check "from a DO block at top level: allowed" \
	"$(as $X "DO \$\$ BEGIN CALL settle.settle_period_parallel('2026-11', 2); END \$\$" | grep -c ERROR)|$(q $X "SELECT count(*) FROM settle.run WHERE period = '2026-11'")" "0|24"
check "a login without a settle role may not call it" \
	"$(psql -X -q -d postgres -c "CREATE ROLE par_nobody LOGIN" >/dev/null 2>&1; psql -X -q -At -d $X -v VERBOSITY=verbose -c "SET SESSION AUTHORIZATION par_nobody" -c "CALL settle.settle_period_parallel('2026-12')" 2>&1 | grep -o '^ERROR:  42501')" "ERROR:  42501"

# ---- a cancelled call stops its workers; what they committed stays whole
C=settle_par_cancel
dropdb --if-exists $C >/dev/null 2>&1
createdb $C
psql -X -q -d $C -v n=400000 -v resellers=4 -v cpr=50 -f bench/settle_data.sql >/dev/null 2>"$W/c.err" || { cat "$W/c.err"; exit 1; }
psql -X -q -d $C -c "GRANT settle_analyst TO par_analyst" >/dev/null 2>&1
PGOPTIONS='-c statement_timeout=400' as $C "CALL settle.settle_period_parallel('2026-10', 2)" > "$W/cancel.out"
check "statement_timeout cancels the call (57014)" "$(grep -o '^ERROR:  57014' "$W/cancel.out")" "ERROR:  57014"
for _ in $(seq 1 100); do
	[ "$(q $C "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'settle settle worker'")" = 0 ] && break
	sleep 0.1
done
check "its workers are gone" "$(q $C "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'settle settle worker'")" "0"
check "fewer than the four resellers settled, each run whole (verify_run)" \
	"$(q $C "SELECT count(*) < 4, coalesce(bool_and((settle.verify_run(run_id)).verified), true) FROM settle.run")" "t|t"
as $C "CALL settle.settle_period_parallel('2026-10', 2)" > "$W/cancel2.out"
check "called again: the rest settled, nothing twice" \
	"$(grep -c ERROR "$W/cancel2.out")|$(q $C "SELECT count(*), count(DISTINCT reseller_id) FROM settle.run")" "0|4|4"
dropdb --if-exists $C >/dev/null 2>&1

for db in $S $P $Z $F $X; do dropdb --if-exists $db >/dev/null 2>&1; done
psql -X -q -d postgres -c "DROP ROLE IF EXISTS par_analyst" -c "DROP ROLE IF EXISTS par_nobody" >/dev/null 2>&1
finish
