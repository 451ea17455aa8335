#!/usr/bin/env bash
# settle_period benchmark: one script, one run, ratios.
#
#   bash bench/settle.sh            # 5,000,000 bill lines (about 10 minutes)
#   bash bench/settle.sh 500000     # a quick run
#   bash bench/settle.sh 5000000 1  # the same lines, all of one reseller (memory bound)
#   SETTLE_BENCH_PERF=1 bash bench/settle.sh   # plus a perf profile of the engine
#   SETTLE_BENCH_SHARED_BUFFERS=4GB bash bench/settle.sh   # another shared_buffers (default 1GB)
#   SETTLE_BENCH_PARALLEL=0 bash bench/settle.sh   # without (6) and the copy it needs
#   SETTLE_BENCH_HUGE_PAGES=0 bash bench/settle.sh # shared buffers in 4 kB pages (default: 2 MB huge
#                                                  # pages, reserved for the run: bench/lib/huge_pages.sh)
#   SETTLE_BENCH_OPTS="-o name=value" bash bench/settle.sh   # more server settings
#
# Generates one period of bill lines (50 resellers, 5,000 customers, 8
# products, tiers and a per-customer cap per reseller, 2% refunds linked to
# their charge: bench/settle_data.sql) in a throwaway cluster with a generous
# configuration, then measures in the same run:
#   (1) settle.settle_period() over all of it, lineage written;
#   (2) baseline (a): a bare logged CREATE TABLE AS SELECT writing the same
#       number of rows with the columns and types of settle.settlement_line
#       (and, for reference, the same plus building its index, BRIN on run_id);
#   (3) baseline (b): the same rules in plain SQL writing the same lineage into
#       a plain table with the same columns and index (bench/settle_plain*.sql),
#       checked line by line against settle's lineage;
#   (4) evaluation alone, the issue's measure: the phase of (1) that
#       evaluates rules, tiers, caps, refunds and the rounding allocation
#       (sampled from settle.settle_progress(), reading and writing
#       excluded); and a stricter one: settle_period again with unchanged
#       inputs — the engine reads every line, evaluates, allocates the
#       rounding and fingerprints everything, then finds the inputs
#       unchanged and writes nothing;
#   (6) parallel settlement: CALL settle.settle_period_parallel() of the same
#       period with 2 workers, in a copy of the database made before (1)
#       (CREATE DATABASE ... TEMPLATE, so both start from the same rows and
#       neither has runs; its relations are loaded into shared buffers first,
#       as (1) found its own after generating them), each reseller in a
#       transaction of its own; its
#       runs are checked against (1)'s: same fingerprints, lines and totals;
#   (5) the settle_period backend's peak memory (private RssAnon sampled from
#       /proc every 50 ms; VmHWM also counts the shared buffers it touched),
#       the time per engine phase (sampled from settle.settle_progress()) and
#       bytes per lineage row.
# Holds the machine-wide install lock (like test/dev.sh) for the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--inside" ]; then
	# --- inside the throwaway cluster (PGHOST/PGPORT set by pg_virtualenv) ---
	n=$2
	resellers=$3
	period=2026-10
	work=$(mktemp -d /tmp/settle-bench.XXXXXX)
	# a database of its own: the ingest launcher and pg_cron connect to
	# postgres, and (6) copies this one, which needs it unused
	psql -X -q -d postgres -c "CREATE DATABASE settle_bench" >/dev/null
	export PGDATABASE=settle_bench
	psqlq() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
	now() { date +%s.%N; }
	secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
	settle_ready_checkpoint() { psqlq -c 'CHECKPOINT' >/dev/null; }

	echo "== generating $n bill lines, $resellers resellers"
	t0=$(now)
	psqlq -v n="$n" -v resellers="$resellers" -v cpr=$((5000 / resellers)) -f bench/settle_data.sql >/dev/null
	psqlq -f bench/settle_plain_rules.sql >/dev/null
	echo "   generated in $(secs "$t0" "$(now)") s; bill_line $(psqlq -Atc "SELECT pg_size_pretty(pg_total_relation_size('settle.bill_line'))")"
	# (6) settles the same period in parallel in a copy made now, before any run
	par_on=${SETTLE_BENCH_PARALLEL:-1}
	t_par=0; par_same="not run (SETTLE_BENCH_PARALLEL=0)"
	if [ "$par_on" = 1 ]; then
		t0=$(now)
		psqlq -d template1 -c "CREATE DATABASE settle_bench_par TEMPLATE settle_bench STRATEGY FILE_COPY" >/dev/null
		echo "   copied for (6) in $(secs "$t0" "$(now)") s"
	fi
	settle_ready_checkpoint

	# (1) settle_period, with the memory sampler and the phase sampler beside it
	echo "== (1) settle.settle_period('$period')"
	psqlq -At >"$work/settle.out" 2>&1 <<-SQL &
		\o $work/settle.pid
		SELECT pg_backend_pid();
		\o
		SELECT pg_sleep(0.5);
		SELECT 'runs ' || count(*) FROM settle.settle_period('$period');
	SQL
	settle_psql=$!
	while [ ! -s "$work/settle.pid" ]; do sleep 0.01; done
	pid=$(cat "$work/settle.pid")
	# phases: which phase the engine is in, every 20 ms, until it is gone
	psqlq -At >"$work/phases.out" 2>&1 <<-SQL &
		CREATE TEMP TABLE phase_sample (at timestamptz, phase text);
		DO \$\$
		DECLARE seen boolean := false; idle int := 0; ph text;
		BEGIN
			LOOP
				SELECT p.phase INTO ph FROM settle.settle_progress() p WHERE p.pid = $pid;
				IF ph IS NOT NULL THEN seen := true; idle := 0; ELSE idle := idle + 1; END IF;
				INSERT INTO phase_sample VALUES (clock_timestamp(), coalesce(ph, 'between resellers'));
				EXIT WHEN (seen AND idle > 100) OR (NOT seen AND idle > 3000);
				PERFORM pg_sleep(0.02);
			END LOOP;
		END \$\$;
		SELECT phase, round(extract(epoch FROM sum(d)), 2)
		  FROM (SELECT phase, at, lead(at) OVER (ORDER BY at) - at AS d FROM phase_sample) x
		 WHERE d IS NOT NULL
		   AND at >= (SELECT min(at) FROM phase_sample WHERE phase <> 'between resellers')
		   AND at < (SELECT max(at) FROM phase_sample WHERE phase <> 'between resellers')
		 GROUP BY phase ORDER BY phase;
	SQL
	phases_psql=$!
	sleep 0.5			# the settle session sleeps 0.5 s before it starts
	t0=$(now)
	peak_anon=0; hwm=0
	while kill -0 "$settle_psql" 2>/dev/null && [ -r "/proc/$pid/status" ]; do
		read -r a h < <(awk '/^RssAnon:/ { a = $2 } /^VmHWM:/ { h = $2 } END { print a + 0, h + 0 }' "/proc/$pid/status" 2>/dev/null || echo "0 0")
		[ "$a" -gt "$peak_anon" ] && peak_anon=$a
		[ "$h" -gt "$hwm" ] && hwm=$h
		sleep 0.05
	done
	wait "$settle_psql"
	t_settle=$(secs "$t0" "$(now)")
	wait "$phases_psql" || true
	cat "$work/settle.out" | grep '^runs' | sed 's/^/   /'
	rows=$(psqlq -Atc "SELECT count(*) FROM settle.settlement_line")
	lines_in=$(psqlq -Atc "SELECT sum(lines_in) FROM settle.run")
	echo "   $t_settle s, $lines_in lines in, $rows lineage rows"
	settle_ready_checkpoint

	if [ "$par_on" = 1 ]; then
		# (6) the same period in parallel, in the copy (no runs yet), 2 workers
		echo "== (6) CALL settle.settle_period_parallel('$period', 2) in a copy made before (1)"
		# (1) found the generated rows in shared buffers; the copy's are only in
		# the OS cache: load them as well (pg_prewarm), so that neither reads disk
		psqlq -d settle_bench_par -c "CREATE EXTENSION IF NOT EXISTS pg_prewarm" \
			-c "SELECT sum(pg_prewarm(c.oid)) FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'i') AND c.relpersistence = 'p'" >/dev/null
		t0=$(now)
		psqlq -d settle_bench_par -c "SET settle.max_settle_workers = 2" -c "CALL settle.settle_period_parallel('$period', 2)" 2>"$work/par.out"
		t_par=$(secs "$t0" "$(now)")
		echo "   $t_par s, $(grep -c 'NOTICE:  reseller .*: run' "$work/par.out") resellers settled, $(grep -c '^ERROR' "$work/par.out") errors"
		# same runs as (1)? fingerprints, lines and statement totals, reseller by reseller
		for db in settle_bench settle_bench_par; do
			psqlq -d $db -Atc "SELECT r.reseller_id, encode(r.input_fingerprint, 'hex'), encode(r.output_fingerprint, 'hex'),
			                          r.lines_in, r.lines_out, s.total, s.net_payout
			                     FROM settle.run r JOIN settle.statement s USING (reseller_id, run_id)
			                    WHERE r.period = '$period' AND r.status <> 'superseded' ORDER BY r.reseller_id" > "$work/runs.$db"
		done
		par_same=$(cmp -s "$work/runs.settle_bench" "$work/runs.settle_bench_par" && echo "same runs as (1): $(wc -l < "$work/runs.settle_bench") resellers, fingerprints, lines, totals" || echo "DIFFERENT runs from (1)")
		echo "   $par_same"
		psqlq -d template1 -c "DROP DATABASE settle_bench_par" >/dev/null
		settle_ready_checkpoint
	fi

	# (4) evaluation without the lineage write: unchanged inputs
	echo "== (4) settle_period again, inputs unchanged (evaluation, no write)"
	t0=$(now)
	psqlq -Atc "SELECT count(*) FROM settle.settle_period('$period')" >/dev/null
	t_eval=$(secs "$t0" "$(now)")
	[ "$(psqlq -Atc "SELECT count(*) FROM settle.run")" = "$resellers" ] || { echo "the unchanged re-run wrote new runs" >&2; exit 1; }
	echo "   $t_eval s"
	settle_ready_checkpoint

	# (2) baseline (a): bare logged CTAS of the same rows and columns
	echo "== (2) baseline (a): CREATE TABLE AS SELECT"
	t0=$(now)
	psqlq <<-'SQL'
		CREATE TABLE ctas_lineage AS
		SELECT b.reseller_id, b.reseller_id + 1000 AS run_id, b.line_key,
		       (CASE WHEN b.original_line_key IS NULL THEN 'c' ELSE 'r' END)::"char" AS kind, b.revision,
		       1 AS rule_version, 1::smallint AS clause, 2::smallint AS tier, b.billed_cost AS basis,
		       0.07000000 AS rate, NULL::bigint AS fx_rate_id, b.billed_cost * 0.07 AS unrounded,
		       round(b.billed_cost * 0.07, 2) AS rounded, b.original_line_key AS ref
		  FROM settle.bill_line b;
	SQL
	t_ctas=$(secs "$t0" "$(now)")
	ctas_rows=$(psqlq -Atc "SELECT count(*) FROM ctas_lineage")
	echo "   $t_ctas s, $ctas_rows rows"
	settle_ready_checkpoint
	t0=$(now)
	psqlq -c 'CREATE INDEX ON ctas_lineage USING brin (run_id)' >/dev/null
	t_idx=$(secs "$t0" "$(now)")
	echo "   + the same index: $t_idx s"
	settle_ready_checkpoint

	# (3) baseline (b): plain SQL
	echo "== (3) baseline (b): plain SQL settlement"
	t0=$(now)
	psqlq -v period="$period" -f bench/settle_plain.sql
	t_plain=$(secs "$t0" "$(now)")
	echo "   $t_plain s, $(psqlq -Atc "SELECT count(*) FROM plain_lineage") rows"
	echo "   same lineage as settle? (rows differing in rate, clause, tier, basis, unrounded, rounded or ref; statements differing)"
	psqlq -At <<-'SQL' | sed 's/^/   /'
		SELECT 'lineage rows differing: ' || count(*)
		  FROM (SELECT l.* FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
		         WHERE r.status <> 'superseded') s
		  FULL JOIN plain_lineage p USING (reseller_id, line_key, kind)
		 WHERE s.line_key IS NULL OR p.line_key IS NULL
		    OR (s.rate, s.clause, s.tier, s.basis, s.unrounded, s.rounded, s.rule_version, s.revision) IS DISTINCT FROM
		       (p.rate, p.clause, p.tier, p.basis, p.unrounded, p.rounded, p.rule_version, p.revision)
		    OR s.ref IS DISTINCT FROM p.ref;
		SELECT 'statements differing: ' || count(*)
		  FROM (SELECT s.* FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id)
		         WHERE r.status <> 'superseded') s
		  FULL JOIN plain_statement p USING (reseller_id)
		 WHERE (s.lines, s.gross_charges, s.commission, s.refunds, s.total) IS DISTINCT FROM
		       (p.lines, p.gross_charges, p.commission, p.refunds, p.total);
		SELECT 'commission total: ' || sum(total) FROM settle.statement;
	SQL

	# (5) sizes
	settle_bytes=$(psqlq -Atc "SELECT round(pg_relation_size('settle.settlement_line')::numeric / count(*), 1) FROM settle.settlement_line")
	settle_total_bytes=$(psqlq -Atc "SELECT round(pg_total_relation_size('settle.settlement_line')::numeric / count(*), 1) FROM settle.settlement_line")
	ctas_bytes=$(psqlq -Atc "SELECT round(pg_relation_size('ctas_lineage')::numeric / count(*), 1) FROM ctas_lineage")
	plain_bytes=$(psqlq -Atc "SELECT round(pg_relation_size('plain_lineage')::numeric / count(*), 1) FROM plain_lineage")

	# optional: where the engine's time goes (after the measurements, so they are not disturbed)
	if [ -n "${SETTLE_BENCH_PERF:-}" ] && command -v perf >/dev/null; then
		echo "== profile: settle._settle_reseller for every reseller under perf (new run ids, lineage written)"
		psqlq -At >"$work/perf-sql.out" 2>&1 <<-SQL &
			\o $work/perf.pid
			SELECT pg_backend_pid();
			\o
			SELECT pg_sleep(1);
			SELECT count(*) FROM settle.reseller r,
			       settle._settle_reseller(r.reseller_id, '$period', 100000 + r.reseller_id, NULL, 0, NULL) x;
		SQL
		perf_psql=$!
		while [ ! -s "$work/perf.pid" ]; do sleep 0.01; done
		perf record -q -o "$work/perf.data" -p "$(cat "$work/perf.pid")" 2>/dev/null &
		perf_pid=$!
		wait "$perf_psql"
		kill -INT "$perf_pid"; wait "$perf_pid" || true
		echo "   -- self time by function, >= 0.5% (frame pointers are absent, so no reliable call graph):"
		perf report -i "$work/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.5 -g none 2>/dev/null \
			| grep -v '^#' | grep -v '^$' | head -50 | awk '{ printf "   %8s  %-18s %s\n", $1, $2, $4 }'
	fi

	echo
	echo "== phases of (1), sampled from settle.settle_progress() every 20 ms (s)"
	sed 's/^/   /; s/|/: /' "$work/phases.out"
	phase_eval=$(awk -F'|' '$1 == "evaluating rules" { print $2 }' "$work/phases.out")
	phase_read=$(awk -F'|' '$1 == "reading bill lines" { print $2 }' "$work/phases.out")
	phase_write=$(awk -F'|' '$1 == "writing lineage" { print $2 }' "$work/phases.out")
	echo
	echo "== settle_period benchmark: $n bill lines, $resellers resellers, $rows lineage rows, $(nproc) cores"
	echo "   shared_buffers $(psqlq -Atc 'SHOW shared_buffers'), huge_pages $(psqlq -Atc 'SHOW huge_pages'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	awk -v n="$lines_in" -v rows="$rows" -v s="$t_settle" -v par="$t_par" -v ps="$par_same" -v c="$t_ctas" -v ix="$t_idx" -v p="$t_plain" -v e="$t_eval" \
	    -v pe="${phase_eval:-0}" -v pr="${phase_read:-0}" -v pw="${phase_write:-0}" -v anon="$peak_anon" -v hwm="$hwm" -v sb="$settle_bytes" -v stb="$settle_total_bytes" -v cb="$ctas_bytes" -v pb="$plain_bytes" '
	function ok(b) { return b ? "ok" : "MISSED" }
	BEGIN {
		printf "   %-58s %10s\n", "measure", "seconds"
		printf "   %-58s %10.2f\n", "(1) settle.settle_period, lineage written", s
		printf "   %-58s %10.2f\n", "(6) settle_period_parallel, 2 workers, lineage written", par
		printf "   %-58s %10.2f\n", "(2) baseline (a): bare logged CTAS, same rows and columns", c
		printf "   %-58s %10.2f\n", "    (a) + building the same index (BRIN on run_id) afterwards", c + ix
		printf "   %-58s %10.2f\n", "(3) baseline (b): plain SQL, same rules and lineage", p
		printf "   %-58s %10.2f\n", "(4) re-run, inputs unchanged (read, evaluate, fingerprint)", e
		printf "   %-58s %10.2f\n", "    lineage write and bookkeeping: (1) - (4)", s - e
		printf "   %-58s %10.2f\n", "    (1) phase: reading bill lines", pr
		printf "   %-58s %10.2f\n", "    (1) phase: evaluating rules, refunds, rounding", pe
		printf "   %-58s %10.2f\n", "    (1) phase: writing lineage", pw
		printf "\n   %-58s %10s %10s %s\n", "ratio", "measured", "goal", ""
		printf "   %-58s %10.2f %10s %s\n", "settle / CTAS", s / c, "<= 1.25", ok(s / c <= 1.25)
		printf "   %-58s %10.2f %10s %s\n", "settle / (CTAS + index)", s / (c + ix), "", ""
		if (par > 0) printf "   %-58s %10.2f %10s %s\n", "serial / parallel, 2 workers: (1) / (6)", s / par, ">= 1.6", ok(s / par >= 1.6)
		printf "   %-58s\n", "    (6) " ps
		printf "   %-58s %10.2f %10s %s\n", "plain SQL / settle", p / s, ">= 2", ok(p / s >= 2)
		printf "   %-58s %10.0f %10s %s\n", "evaluation alone lines/s (phase of (1): rules .. rounding)", (pe > 0 ? n / pe : 0), ">= 1000000", ok(pe > 0 && n / pe >= 1000000)
		printf "   %-58s %10.0f %10s %s\n", "  stricter: re-run (4), + reading every line, fingerprints", n / e, "", ""
		printf "   %-58s %10.2f %10s %s\n", "lineage write phase / CTAS", pw / c, "", ""
		printf "   %-58s %10.0f %10s %s\n", "settle lines/s end to end (lines in / (1))", n / s, "", ""
		printf "   %-58s %10.1f %10s %s\n", "peak backend private memory, MB (RssAnon)", anon / 1024, "< 512", ok(anon / 1024 < 512)
		printf "   %-58s %10.1f %10s %s\n", "peak backend RSS incl. shared buffers, MB (VmHWM)", hwm / 1024, "", ""
		printf "   %-58s %10s\n", "bytes per lineage row: settle heap / with indexes", sb " / " stb
		printf "   %-58s %10s\n", "bytes per row: CTAS heap / plain SQL heap", cb " / " pb
	}'
	rm -rf "$work"
	exit 0
fi

n=${1:-5000000}
resellers=${2:-50}
usage="usage: bash bench/settle.sh [bill lines [resellers, a divisor of 5000]]"
case "$n$resellers" in *[!0-9]*|"") echo "$usage" >&2; exit 2 ;; esac
[ "$resellers" -ge 1 ] && [ $((5000 % resellers)) = 0 ] || { echo "$usage" >&2; exit 2; }
n=$(( (n + 2 * resellers - 1) / (2 * resellers) * (2 * resellers) ))	# an even number of lines per reseller
[ "$(id -u)" = 0 ] || { echo "run as root (installs the extension)" >&2; exit 2; }
bash test/install-deps.sh
make -s -j2 >/dev/null
exec 9>/tmp/settle-install.lock
flock 9
make -s install >/dev/null
. bench/lib/huge_pages.sh
sb=${SETTLE_BENCH_SHARED_BUFFERS:-1GB}
huge_pages_reserve "$sb"
# (not exec: the EXIT trap gives the huge pages back)
pg_virtualenv -t -v 15 $(bash test/server-options.sh) \
	-o shared_buffers=$sb -o max_wal_size=4GB -o checkpoint_timeout=30min -o work_mem=256MB \
	-o maintenance_work_mem=512MB -o wal_buffers=64MB $hp ${SETTLE_BENCH_OPTS:-} \
	bash "$0" --inside "$n" "$resellers"
