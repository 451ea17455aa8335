#!/usr/bin/env bash
# Month-end under load: the mix of issue 20, with pgbench custom scripts.
#
#   bash bench/monthend.sh                  # 300,000 bill lines, 20 resellers, 40 s a phase (about 6 minutes)
#   bash bench/monthend.sh 1000000 60       # 1,000,000 lines, 60 s a phase
#   SETTLE_BENCH_CLIENTS="4 8 16" bash bench/monthend.sh   # the client counts (default 4 8 16)
#   SETTLE_BENCH_HUGE_PAGES=0 bash bench/monthend.sh       # shared buffers in 4 kB pages (default: huge
#                                                          # pages reserved for the run, bench/lib/huge_pages.sh)
#
# One period (2026-10) of bill lines over 20 resellers (bench/settle_data.sql),
# settled once, and 500 manual exceptions per reseller for finance to work on.
# Then, in one throwaway cluster and one run:
#   (0) idle: the two finance operations alone (1 client): their latency is
#       the baseline of the finance goal;
#   (1) the mix at 4, 8 and 16 clients: analysts settling one reseller,
#       lines arriving (a new bill line of a random reseller, as ingestion
#       inserts it), BI clients reading period_status and finance_summary,
#       explain and run_diff, finance proposing (login bench_fin1) and
#       approving (bench_fin2) adjustments; beside it one more client, now
#       and then (every 10 s), settles every reseller or reconciles;
#       per operation: transactions/s, p50/p95/max latency, and every error
#       by SQLSTATE (each operation runs in a subtransaction that records its
#       error, so a refused operation never ends the client);
#   (2) settling the 20 resellers (each with a new line, so each run is
#       written) in one session, then in two and four sessions of one
#       transaction each, disjoint resellers: the speed-up;
#   (3) checks: verify_audit, verify_run of every current run, and no
#       duplicate lineage row.
# Goals (issue 20, 2 cores): no 40P01/40001 at 16 clients; finance writes p95
# at 16 clients within 3x their idle p95; 20 resellers in 2 sessions >= 1.6x
# faster than in one.  Timings depend on what else runs on the machine: the
# load average is printed with the figures.
# Holds the machine-wide install lock (like test/dev.sh) for the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--inside" ]; then
	# --- inside the throwaway cluster (PGHOST/PGPORT set by pg_virtualenv) ---
	n=$2
	secs=$3
	clients=$4
	resellers=20
	period=2026-10
	work=$(mktemp -d /tmp/settle-monthend.XXXXXX)
	export PGDATABASE=postgres
	psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
	now() { date +%s.%N; }
	elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

	echo "== generating $n bill lines, $resellers resellers (load average: $(cut -d' ' -f1-3 /proc/loadavg); shared_buffers $(psqlq -Atc 'SHOW shared_buffers'), huge_pages $(psqlq -Atc 'SHOW huge_pages'))"
	t0=$(now)
	psqlq -v n="$n" -v resellers=$resellers -v cpr=$((5000 / resellers)) -f bench/settle_data.sql >/dev/null
	psqlq >/dev/null <<-'SQL'
		CREATE SCHEMA bench;
		-- every error of every operation, by phase
		CREATE TABLE bench.errors (phase text, op text, sqlstate text, message text, at timestamptz DEFAULT clock_timestamp());
		-- lock waits, sampled every 50 ms during a phase: what a waiting operation waits for
		CREATE TABLE bench.waits (phase text, waiting_for text, op text);
		-- runs one operation in a subtransaction; an error is recorded, never raised
		CREATE FUNCTION bench.run(op text, q text) RETURNS text LANGUAGE plpgsql AS $$
		BEGIN
			EXECUTE q;
			RETURN 'ok';
		EXCEPTION WHEN OTHERS THEN
			INSERT INTO bench.errors (phase, op, sqlstate, message)
			VALUES (current_setting('bench.phase', true), op, SQLSTATE, SQLERRM);
			RETURN SQLSTATE;
		END $$;
		-- a new bill line for each reseller, as ingestion inserts it: every input changes
		CREATE FUNCTION bench.touch() RETURNS void LANGUAGE sql AS $$
			INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
				billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
				product_code, billing_currency, list_cost, billed_cost)
			SELECT r.reseller_id, 'touch/' || gen_random_uuid(), 1, min(c.customer_id), sha256(convert_to(gen_random_uuid()::text, 'UTF8')),
			       'PayAsYouGoBill', 'bench', '2026-10-01', '2026-10-05', '2026-10-06', 'Usage', 'ecs', 'USD', 10.00, 10.00
			  FROM settle.reseller r JOIN settle.customer c USING (reseller_id) GROUP BY r.reseller_id
		$$;
		DO $r$ BEGIN
			CREATE ROLE bench_fin1; CREATE ROLE bench_fin2;
		EXCEPTION WHEN duplicate_object THEN NULL; END $r$;
		GRANT settle_finance TO bench_fin1, bench_fin2;
		GRANT USAGE ON SCHEMA bench TO bench_fin1, bench_fin2;
		GRANT INSERT ON bench.errors TO bench_fin1, bench_fin2;
	SQL
	echo "   generated in $(elapsed "$t0" "$(now)") s"
	t0=$(now)
	psqlq -Atc "SELECT count(*) FROM settle.settle_period('$period')" >/dev/null
	echo "   settled once in $(elapsed "$t0" "$(now)") s"
	psqlq -Atc "SELECT count(settle.open_exception(r.reseller_id, 'manual', 'bench:' || i, '$period',
	              jsonb_build_object(), jsonb_build_object('detail', 'bench'), 'info'))
	              FROM settle.reseller r, generate_series(1, 500) i" >/dev/null
	maxexc=$(psqlq -Atc "SELECT max(exception_id) FROM settle.exception")
	psqlq -c 'VACUUM ANALYZE' -c 'CHECKPOINT' >/dev/null

	# the scripts; the order of -f below is the script number in pgbench's log
	cat >"$work/settle_one.sql" <<-SQL
		\set r random(1, $resellers)
		SELECT bench.run('settle_one', format('SELECT count(*) FROM settle.settle_period(%L, %L)', '$period', 'bench-' || :r));
	SQL
	cat >"$work/ingest.sql" <<-SQL
		\set r random(1, $resellers)
		\set c random(0, $((5000 / resellers - 1)))
		SELECT bench.run('ingest', format(\$q\$INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id,
		    content_hash, source_item, billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		    charge_category, product_code, billing_currency, list_cost, billed_cost)
		  VALUES (%s, %L, 1, %s, sha256(convert_to(%L, 'UTF8')), 'PayAsYouGoBill', 'bench', '2026-10-01',
		    '2026-10-07', '2026-10-08', 'Usage', 'oss', 'USD', 25.50, 25.50)\$q\$,
		  :r, 'ingest/' || gen_random_uuid(), (:r - 1) * $((5000 / resellers)) + :c + 1, gen_random_uuid()));
	SQL
	cat >"$work/read_bi.sql" <<-'SQL'
		SELECT bench.run('read_bi', 'SELECT count(*) FROM settle.period_status, (SELECT count(*) FROM settle.finance_summary) f');
	SQL
	cat >"$work/explain.sql" <<-SQL
		\set r random(1, $resellers)
		SELECT bench.run('explain', format('SELECT count(*) FROM settle.explain(%s, %L)', x.run_id, x.line_key))
		  FROM (SELECT r.run_id, (SELECT l.line_key FROM settle.settlement_line l
		                          WHERE l.reseller_id = r.reseller_id AND l.run_id = r.run_id LIMIT 1) AS line_key
		          FROM settle.run r WHERE r.reseller_id = :r AND r.status <> 'superseded') x;
	SQL
	cat >"$work/run_diff.sql" <<-SQL
		\set r random(1, $resellers)
		SELECT bench.run('run_diff', format('SELECT count(*) FROM settle.run_diff(%s, %s)', r.supersedes, r.run_id))
		  FROM settle.run r WHERE r.reseller_id = :r AND r.status <> 'superseded' AND r.supersedes IS NOT NULL;
	SQL
	cat >"$work/propose.sql" <<-SQL
		\set id random(1, $maxexc)
		SET SESSION AUTHORIZATION bench_fin1;
		SELECT bench.run('propose', format('SELECT settle.propose_adjustment(%s, %s, ''2026-11'', ''bench'')',
		                                   e.exception_id, (:id % 100 + 1) / 100.0))
		  FROM (SELECT exception_id FROM settle.exception WHERE kind = 'manual'
		          AND state IN ('pending_review', 'proposed_adjustment') AND exception_id >= :id
		         ORDER BY exception_id LIMIT 1) e;
		RESET SESSION AUTHORIZATION;
	SQL
	cat >"$work/approve.sql" <<-SQL
		\set id random(1, $maxexc)
		SET SESSION AUTHORIZATION bench_fin2;
		SELECT bench.run('approve', format('SELECT settle.approve_adjustment(%s, %s, ''USD'', ''bench'')',
		                                   e.exception_id, e.adjustment_amount))
		  FROM (SELECT exception_id, adjustment_amount FROM settle.exception WHERE kind = 'manual'
		          AND state = 'proposed_adjustment' AND exception_id >= :id
		         ORDER BY exception_id LIMIT 1) e;
		RESET SESSION AUTHORIZATION;
	SQL
	cat >"$work/settle_all.sql" <<-SQL
		SELECT bench.run('settle_all', 'SELECT count(*) FROM settle.settle_period(''$period'')');
	SQL
	cat >"$work/reconcile.sql" <<-SQL
		SELECT bench.run('reconcile', 'SELECT count(*) FROM settle.reconcile(''$period'')');
	SQL

	# Per operation from pgbench's transaction logs (client, tx, time_us,
	# script, epoch, us): count, tx/s, p50, p95, max in ms.
	summarise() {	# $1 = phase, $2 = seconds, $3 = names (script order), $4.. = log files
		python3 - "$@" <<-'PY'
			import sys
			phase, secs, names, files = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(','), sys.argv[4:]
			lat = {n: [] for n in names}
			for f in files:
			    for line in open(f):
			        p = line.split()
			        if len(p) >= 6:
			            lat[names[int(p[3])]].append(int(p[2]) / 1000.0)
			def pct(v, q):
			    v = sorted(v)
			    return v[min(len(v) - 1, int(q * len(v)))] if v else 0.0
			for n in names:
			    v = lat[n]
			    print("%-6s %-11s %7d tx %8.2f tx/s  p50 %9.1f ms  p95 %9.1f ms  max %9.1f ms" %
			          (phase, n, len(v), len(v) / secs, pct(v, 0.5), pct(v, 0.95), max(v) if v else 0.0))
		PY
	}
	pgb() {	# $1 = phase; the rest for pgbench
		local phase=$1; shift
		PGOPTIONS="-c bench.phase=$phase" pgbench -n --log --log-prefix="$work/$phase" "$@" 2>"$work/err.$phase" >"$work/out.$phase" ||
			{ echo "pgbench failed ($phase):"; tail -20 "$work/err.$phase"; exit 1; }
		grep -E 'aborted|error' "$work/err.$phase" | head -5 || true
	}
	# Every 50 ms: each ungranted lock and the operation waiting for it.  The
	# audit trail's locks are advisory locks with objsubid 21333 (objid
	# 4294967295: the anchor); settle_period's reseller lock has objsubid 2.
	sample_waits() {	# $1 = phase, $2 = seconds
		psqlq -c "DO \$\$
		DECLARE stop timestamptz := clock_timestamp() + interval '$2 seconds';
		BEGIN
			WHILE clock_timestamp() < stop LOOP
				INSERT INTO bench.waits
				SELECT '$1', CASE WHEN l.locktype = 'advisory' AND l.objsubid = 21333 AND l.objid = 4294967295 THEN 'audit anchor'
				                  WHEN l.locktype = 'advisory' AND l.objsubid = 21333 THEN 'audit chain'
				                  WHEN l.locktype = 'advisory' AND l.objsubid = 2 THEN 'reseller period lock'
				                  WHEN l.locktype = 'advisory' THEN 'advisory ' || l.objsubid
				                  ELSE l.locktype || coalesce(' ' || l.relation::regclass::text, '') END,
				       coalesce(substring(a.query from 'bench.run\(''([a-z_]+)'''), left(a.query, 30))
				  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE NOT l.granted;
				COMMIT;
				PERFORM pg_sleep(0.05);
			END LOOP;
		END \$\$" >/dev/null
	}
	results="$work/results.txt"
	: >"$results"

	echo "== (0) idle: finance alone, 1 client, $((secs / 2)) s"
	pgb idle -c 1 -j 1 -T $((secs / 2)) -f "$work/propose.sql" -f "$work/approve.sql"
	summarise idle $((secs / 2)) propose,approve "$work"/idle.* | grep -v '^$' | tee -a "$results"

	names=settle_one,ingest,read_bi,explain,run_diff,propose,approve
	for c in $clients; do
		echo "== (1) the mix at $c clients, $secs s (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
		pgb "c$c" -c "$c" -j 2 -T "$secs" \
			-f "$work/settle_one.sql@4" -f "$work/ingest.sql@8" -f "$work/read_bi.sql@10" -f "$work/explain.sql@6" \
			-f "$work/run_diff.sql@3" -f "$work/propose.sql@10" -f "$work/approve.sql@10" &
		main=$!
		pgb "n$c" -c 1 -j 1 -T "$secs" -R 0.1 -f "$work/settle_all.sql@1" -f "$work/reconcile.sql@1" &
		side=$!
		sample_waits "c$c" "$secs" &
		sampler=$!
		wait $main; wait $side; wait $sampler
		summarise "c$c" "$secs" "$names" "$work"/c$c.* | tee -a "$results"
		summarise "c$c" "$secs" settle_all,reconcile "$work"/n$c.* | tee -a "$results"
	done

	echo "== errors by phase, operation and SQLSTATE"
	psqlq -P footer=off -c "SELECT phase, op, sqlstate, count(*) AS errors, min(message) AS example
	                          FROM bench.errors GROUP BY 1, 2, 3 ORDER BY 1, 2, 3" | tee "$work/errors.txt"

	echo "== lock waits sampled every 50 ms (samples; one sample ~ 50 ms of one session waiting)"
	psqlq -P footer=off -c "SELECT phase, waiting_for, op, count(*) AS samples FROM bench.waits GROUP BY 1, 2, 3 ORDER BY 1, 4 DESC"

	echo "== (2) settling the $resellers resellers, each with a new line: 1, 2 and 4 sessions, one transaction each"
	settle_sessions() {	# $1 = sessions: reseller i goes to session i % sessions
		local s pids=() t
		psqlq -Atc 'SELECT bench.touch()' >/dev/null
		psqlq -c 'CHECKPOINT' >/dev/null
		t=$(now)
		for s in $(seq 0 $(($1 - 1))); do
			psqlq -Atc "BEGIN" -c "SELECT count(*) FROM settle.reseller r, settle.settle_period('$period', r.code)
			                        WHERE r.reseller_id % $1 = $s" -c "COMMIT" >/dev/null &
			pids+=($!)
		done
		for s in "${pids[@]}"; do wait "$s"; done
		elapsed "$t" "$(now)"
	}
	# Baseline: what two sessions gain on this machine right now, for work
	# that shares nothing (the same CPU-bound query, 4 times, in 1 or 2 sessions).
	cpu_sessions() {	# $1 = sessions
		local s pids=() t
		t=$(now)
		for s in $(seq 1 "$1"); do
			psqlq -Atc "SELECT count(*) FROM generate_series(1, $((12000000 / $1))) g WHERE g % 7 = 3" >/dev/null &
			pids+=($!)
		done
		for s in "${pids[@]}"; do wait "$s"; done
		elapsed "$t" "$(now)"
	}
	for round in 1 2; do
		t1=$(settle_sessions 1); t2=$(settle_sessions 2); t4=$(settle_sessions 4)
		c1=$(cpu_sessions 1); c2=$(cpu_sessions 2)
		awk -v r=$round -v a="$t1" -v b="$t2" -v c="$t4" -v x="$c1" -v y="$c2" 'BEGIN {
			printf "settle round %d: 1 session %.2f s, 2 sessions %.2f s (%.2fx), 4 sessions %.2f s (%.2fx); baseline (CPU only) 1 session %.2f s, 2 sessions %.2f s (%.2fx)\n",
				r, a, b, a / b, c, a / c, x, y, x / y }' |
			tee -a "$results"
	done

	echo "== (3) checks"
	psqlq -P footer=off -c "SELECT verified, entries, first_broken_id, problem FROM settle.verify_audit()"
	psqlq -P footer=off -c "SELECT count(*) AS current_runs, count(*) FILTER (WHERE v.verified) AS verified,
	                               string_agg(r.run_id || ': ' || v.problem, '; ') FILTER (WHERE NOT v.verified) AS problems
	                          FROM settle.run r, settle.verify_run(r.run_id) v WHERE r.status <> 'superseded'"
	psqlq -P footer=off -c "SELECT count(*) AS duplicate_lineage_rows FROM (SELECT 1 FROM settle.settlement_line
	                          GROUP BY reseller_id, run_id, line_key, kind HAVING count(*) > 1) d"
	psqlq -P footer=off -c "SELECT (SELECT count(*) FROM settle.run) AS runs, (SELECT count(*) FROM settle.settlement_line) AS lineage_rows,
	                               (SELECT count(*) FROM settle.audit_log) AS audit_entries,
	                               (SELECT count(*) FROM settle.exception WHERE state = 'finance_approved') AS approved_adjustments"

	echo "== goals"
	last=$(echo "$clients" | awk '{ print $NF }')
	python3 - "$results" "$work/errors.txt" "$last" <<-'PY'
		import re, sys
		rows = {}
		for line in open(sys.argv[1]):
		    m = re.match(r'(\S+)\s+(\S+)\s+(\d+) tx\s+(\S+) tx/s\s+p50\s+(\S+) ms\s+p95\s+(\S+) ms', line)
		    if m:
		        rows[(m.group(1), m.group(2))] = float(m.group(6))
		errors = open(sys.argv[2]).read()
		last = "c" + sys.argv[3]
		lock = sum(int(m.group(2)) for m in re.finditer(r'^\s*(\S+)\s*\|\s*\S+\s*\|\s*(?:40P01|40001)\s*\|\s*(\d+)', errors, re.M)
		           if m.group(1) == last)
		print("40P01/40001 at %s clients: %d (goal 0)" % (sys.argv[3], lock))
		for op in ("propose", "approve"):
		    idle, busy = rows.get(("idle", op)), rows.get((last, op))
		    if idle and busy:
		        print("finance %s p95: idle %.1f ms, %s clients %.1f ms: %.2fx idle (goal <= 3x)" % (op, idle, sys.argv[3], busy, busy / idle))
		for line in open(sys.argv[1]):
		    if line.startswith("settle round"):
		        print(line.strip(), "(goal: 2 sessions >= 1.6x)")
	PY
	rm -rf "$work"
	exit 0
fi

n=${1:-300000}
secs=${2:-40}
clients=${SETTLE_BENCH_CLIENTS:-4 8 16}
usage="usage: bash bench/monthend.sh [bill lines [seconds per phase]]"
case "$n$secs" in *[!0-9]*|"") echo "$usage" >&2; exit 2 ;; esac
[ "$secs" -ge 10 ] || { echo "$usage (at least 10 s)" >&2; exit 2; }
n=$(( (n + 39) / 40 * 40 ))	# an even number of lines per reseller
[ "$(id -u)" = 0 ] || { echo "run as root (installs the extension)" >&2; exit 2; }
bash test/install-deps.sh
make -s -j2 >/dev/null
exec 9>/tmp/settle-install.lock
flock 9
make -s install >/dev/null
. bench/lib/huge_pages.sh
sb=${SETTLE_BENCH_SHARED_BUFFERS:-512MB}
huge_pages_reserve "$sb"
# (not exec: the EXIT trap gives the huge pages back)
pg_virtualenv -t -v 15 $(bash test/server-options.sh) \
	-o shared_buffers=$sb -o max_wal_size=4GB -o checkpoint_timeout=30min \
	-o max_connections=100 -o work_mem=64MB $hp \
	bash "$0" --inside "$n" "$secs" "$clients"
