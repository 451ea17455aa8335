#!/usr/bin/env bash
# Differential test: settle's engine against the independent model (model.py).
#   bash test/dev.sh bash test/diff/run.sh 1 2 3        # seeds 1, 2 and 3
# (run outside a cluster it re-runs itself through test/dev.sh).
# For each seed: generate a scenario (gen.py), load it into a fresh database,
# settle every period in order, compare lineage and statements with the model;
# then lock the first period, load late revisions, settle the later periods
# again and compare once more.  Properties checked on the engine alone:
# verify_run is true on every run, an unchanged re-run writes nothing, and
# the lineage adds up to each statement total.
# Environment: DIFF_LINES (default 300), DIFF_DECIMALS (default 11),
# DIFF_GEN_ARGS (more gen.py options, e.g. "--no tags --customers 200"),
# DIFF_MODEL_ARGS (model.py options, e.g. "--opt fx_mode=rate8"),
# DIFF_OUT (work directory, default /tmp/settle-diff), DIFF_KEEP=1 keeps the
# databases, DIFF_SHOW (lines of each report shown, default 60).
# Exits non-zero on any disagreement or failed property.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ -z "${PGHOST:-}${PGPORT:-}" ]; then
	exec bash "$here/../dev.sh" bash "$here/run.sh" "$@"
fi
[ $# -gt 0 ] || set -- 1 2 3
lines=${DIFF_LINES:-300}
decimals=${DIFF_DECIMALS:-11}
out=${DIFF_OUT:-/tmp/settle-diff}
show=${DIFF_SHOW:-60}
mkdir -p "$out"
# a session time zone far from UTC: settle dates lines by UTC (settlement.md)
export PGTZ=${DIFF_TZ:-Pacific/Kiritimati}
failed_seeds=()
total_lines=0
total_dis=0
total_unexplained=0

settle_all() {    # settle_all DIR PERIOD... : settle each period in order, record the runs
	local d=$1; shift
	for p in "$@"; do
		if ! q -F '|' -c "SELECT run_id, reseller_id, period, status, blocked FROM settle.settle_period('$p') ORDER BY reseller_id" >> "$d/runs.txt" 2> "$d/settle_$p.err"; then
			echo "ENGINE ERROR seed=$seed settle_period('$p'):"; sed 's/^/    /' "$d/settle_$p.err" | head -10
			return 1
		fi
	done
}

dump() {          # dump DIR : lineage, statements and exceptions of the current runs
	local d=$1
	q -c "\\copy (SELECT r.reseller_id, r.period, r.run_id, sl.line_key, sl.kind, sl.revision, sl.rule_version, sl.clause, sl.tier, sl.basis, sl.rate, sl.fx_rate_id, sl.unrounded, sl.rounded, sl.ref, s.customer_id, s.clause_text FROM settle.run r JOIN settle.settlement_line sl ON sl.reseller_id = r.reseller_id AND sl.run_id = r.run_id LEFT JOIN (SELECT r2.run_id, x.* FROM settle.run r2, LATERAL settle.statement_lines(r2.run_id) x WHERE r2.status <> 'superseded') s ON s.run_id = r.run_id AND s.line_key = sl.line_key AND s.kind = sl.kind WHERE r.status <> 'superseded' ORDER BY r.reseller_id, r.period, sl.line_key, sl.kind) TO '$d/lineage.csv' CSV HEADER"
	q -c "\\copy (SELECT r.reseller_id, r.period, r.status, r.blocked, st.* FROM settle.run r JOIN settle.statement st ON st.reseller_id = r.reseller_id AND st.run_id = r.run_id WHERE r.status <> 'superseded' ORDER BY 1, 2) TO '$d/statement.csv' CSV HEADER"
	q -c "\\copy (SELECT reseller_id, kind, severity, state, period, scope_key, payload FROM settle.exception ORDER BY exception_id) TO '$d/exceptions.csv' CSV HEADER"
}

compare() {       # compare DIR PHASE : the model against the dump; counts into n
	local d=$1 phase=$2
	# shellcheck disable=SC2086
	python3 "$here/model.py" "$dir/scenario.json" --compare "$d" --phase "$phase" --seed "$seed" ${DIFF_MODEL_ARGS:-} > "$d/compare.txt"
	local rc=$?
	local k; k=$(grep -c '^DISAGREE' "$d/compare.txt")
	local u; u=$(sed -n 's/.*disagreements (\([0-9]*\) unexplained).*/\1/p' "$d/compare.txt")
	head -"$show" "$d/compare.txt"
	[ "$(wc -l < "$d/compare.txt")" -le "$show" ] || echo "    ... (all of it in $d/compare.txt)"
	grep -E '^  (finding|summary)|^seed ' "$d/compare.txt"
	unexplained=$((unexplained + ${u:-0}))
	local c; c=$(sed -n 's/.*: \([0-9]*\) model lines compared.*/\1/p' "$d/compare.txt")
	compared=$((compared + ${c:-0}))
	n=$((n + k))
	[ "$rc" = 0 ] || [ "$k" != 0 ] || n=$((n + 1))     # the model itself failed
}

for seed in "$@"; do
	dir="$out/seed$seed"
	rm -rf "$dir"; mkdir -p "$dir/p1"
	db="settle_diff_$seed"
	echo "=== seed $seed: $lines lines, up to $decimals decimals ${DIFF_GEN_ARGS:-}"
	# shellcheck disable=SC2086
	python3 "$here/gen.py" --seed "$seed" --lines "$lines" --decimals "$decimals" ${DIFF_GEN_ARGS:-} --out "$dir" || { failed_seeds+=("$seed"); continue; }
	dropdb --if-exists "$db" 2>/dev/null
	createdb "$db"
	q() { psql -X -q -v ON_ERROR_STOP=1 -d "$db" -At "$@"; }
	problems=0 n=0 compared=0 unexplained=0
	prop() {
		local known=''
		case "$*" in
		*"cannot be held exactly"*) known=' [known: K2 verify_run fails on unrounded amounts with more than 8 decimals]';;
		esac
		echo "PROPERTY seed=$seed: $*$known"; problems=$((problems + 1))
	}
	if ! q -c "CREATE EXTENSION IF NOT EXISTS settle CASCADE" >/dev/null 2>"$dir/load.err" ||
	   ! q -f "$dir/load.sql" >/dev/null 2>>"$dir/load.err"; then
		echo "LOAD FAILED seed=$seed:"; sed 's/^/    /' "$dir/load.err" | head -20
		failed_seeds+=("$seed"); continue
	fi
	read -r -a periods <<< "$(python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['settle_order']))" "$dir/scenario.json")"
	read -r -a periods2 <<< "$(python3 -c "import json,sys; p=json.load(open(sys.argv[1])).get('phase2'); print(' '.join(p['settle_order']) if p else '')" "$dir/scenario.json")"
	: > "$dir/runs.txt"; : > "$dir/locked.txt"
	if ! settle_all "$dir" "${periods[@]}"; then
		q -c "SELECT 1" >/dev/null 2>&1 || sleep 5     # let a crashed server come back
		failed_seeds+=("$seed"); total_dis=$((total_dis + 1)); continue
	fi
	# phase 1: every period settled once
	dump "$dir/p1"
	echo "--- seed $seed phase 1 (first settlement of ${periods[*]})"
	compare "$dir/p1" 1
	if [ ${#periods2[@]} -gt 0 ] && [ -n "${periods2[0]}" ]; then
		# phase 2: lock the first period, late revisions arrive, settle the later periods again
		while IFS='|' read -r run rid; do
			if q -c "SELECT settle.approve_run($run, 'differential test')" >/dev/null 2>>"$dir/lock.err" &&
			   q -c "SELECT settle.lock_run($run, 'differential test')" >/dev/null 2>>"$dir/lock.err"; then
				echo "$rid|${periods[0]}|$run" >> "$dir/locked.txt"
			else
				echo "    note: run $run (reseller $rid, ${periods[0]}) not locked: $(tail -1 "$dir/lock.err")"
			fi
		done < <(q -F '|' -c "SELECT run_id, reseller_id FROM settle.run WHERE period = '${periods[0]}' AND status = 'draft' ORDER BY reseller_id")
		q -f "$dir/phase2.sql" >/dev/null 2>"$dir/phase2.err" || { echo "LOAD FAILED seed=$seed phase 2:"; head -5 "$dir/phase2.err"; }
		# approved adjustments: one person proposes, another approves (finance-guide.md §4)
		: > "$dir/adjustments.txt"
		while IFS='|' read -r an arid arper aamt; do
			[ -n "$an" ] || continue
			q -c "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'diff_alice') THEN CREATE ROLE diff_alice LOGIN PASSWORD 'diff' IN ROLE settle_finance; CREATE ROLE diff_bob LOGIN PASSWORD 'diff' IN ROLE settle_finance; END IF; END\$\$" 2>>"$dir/adj.err"
			eid=$(q -c "SELECT settle.open_exception($arid, 'manual', 'diff-adjustment-$an', '$arper', '{}', '{\"reason\": \"differential test adjustment $an\"}', 'warning')" 2>>"$dir/adj.err")
			if PGUSER=diff_alice PGPASSWORD=diff q -c "SELECT settle.propose_adjustment($eid, $aamt, '$arper', 'differential test')" >/dev/null 2>>"$dir/adj.err" &&
			   PGUSER=diff_bob PGPASSWORD=diff q -c "SELECT settle.approve_adjustment($eid, $aamt, settle.settlement_currency($arid, '$arper'), 'differential test')" >/dev/null 2>>"$dir/adj.err"; then
				echo "$an|$eid" >> "$dir/adjustments.txt"
			else
				echo "    note: adjustment $an ($aamt into $arper of reseller $arid) not approved: $(tail -1 "$dir/adj.err")"
			fi
		done < <(python3 -c "import json,sys; [print('%s|%s|%s|%s' % (a['n'], a['reseller_id'], a['period'], a['amount'])) for a in (json.load(open(sys.argv[1])).get('phase2') or {}).get('adjustments', [])]" "$dir/scenario.json")
		if ! settle_all "$dir" "${periods2[@]}"; then
			failed_seeds+=("$seed"); total_dis=$((total_dis + 1)); continue
		fi
	fi
	# property: an unchanged re-run writes nothing new and returns the same runs
	snap="SELECT (SELECT count(*) FROM settle.run) || '/' || (SELECT count(*) FROM settle.settlement_line) || '/' || (SELECT count(*) FROM settle.statement) || '/' || coalesce((SELECT string_agg(run_id || ':' || status || ':' || encode(input_fingerprint, 'hex') || ':' || encode(output_fingerprint, 'hex'), ',' ORDER BY run_id) FROM settle.run), '')"
	before=$(q -c "$snap")
	cur="SELECT run_id, reseller_id, period FROM settle.run WHERE status <> 'superseded' ORDER BY 1"
	q -F '|' -c "$cur" > "$dir/current.txt"
	: > "$dir/reruns.txt"
	for p in "${periods[@]}"; do
		q -F '|' -c "SELECT run_id, reseller_id, period FROM settle.settle_period('$p') ORDER BY reseller_id" >> "$dir/reruns.txt" 2>>"$dir/rerun.err" ||
			prop "re-run of $p failed: $(tail -1 "$dir/rerun.err")"
	done
	after=$(q -c "$snap")
	[ "$before" = "$after" ] || prop "an unchanged re-run wrote something (runs/lineage rows/statements: ${before%%/*}/$(echo "$before" | cut -d/ -f2)/$(echo "$before" | cut -d/ -f3) -> ${after%%/*}/$(echo "$after" | cut -d/ -f2)/$(echo "$after" | cut -d/ -f3)) (settlement.md determinism: unchanged inputs write nothing)"
	sort "$dir/reruns.txt" | cmp -s - <(sort "$dir/current.txt") ||
		prop "an unchanged re-run returned other runs than the current ones (settlement.md: it returns the same run): $(diff <(sort "$dir/current.txt") <(sort "$dir/reruns.txt") | grep '^[<>]' | head -4 | tr '\n' ' ')"
	# property: verify_run is true on every current run
	if q -F '|' -c "SELECT r.run_id, r.reseller_id, r.period, v.verified, v.lines, v.problem FROM settle.run r, LATERAL settle.verify_run(r.run_id) v WHERE r.status <> 'superseded' ORDER BY r.run_id" > "$dir/verify.txt" 2>"$dir/verify.err"; then
		while IFS='|' read -r run rid per ok _ problem; do
			[ "$ok" = t ] || prop "verify_run($run) of reseller $rid $per is false: $problem (settlement.md verifying)"
		done < "$dir/verify.txt"
	else
		# one run at a time, to name each run that fails
		while IFS='|' read -r run rid per; do
			res=$(q -F '|' -c "SELECT verified, problem FROM settle.verify_run($run)" 2>&1)
			case "$res" in t\|*) ;; *) prop "verify_run($run) of reseller $rid $per: ${res//$'\n'/ } (settlement.md verifying)";; esac
		done < "$dir/current.txt"
	fi
	if [ -s "$dir/phase2.sql" ]; then
		dump "$dir"
		echo "--- seed $seed phase 2 (locked: $(cut -d'|' -f1,2 "$dir/locked.txt" | tr '\n' ' '); late revisions; settled again: ${periods2[*]})"
		compare "$dir" 2
	fi
	total_lines=$((total_lines + compared))
	total_dis=$((total_dis + n + problems))
	total_unexplained=$((total_unexplained + unexplained))
	if [ "$n" != 0 ] || [ "$problems" != 0 ]; then failed_seeds+=("$seed"); fi
	echo "seed $seed: $compared lines compared, $n disagreements ($unexplained not attributed to a known finding), $problems property failures"
	[ -n "${DIFF_KEEP:-}" ] || dropdb --if-exists "$db"
done
echo "=== $# seeds, $total_lines lines compared, $total_dis disagreements and property failures ($total_unexplained disagreements not attributed to a known finding); failing seeds: ${failed_seeds[*]:-none}"
[ ${#failed_seeds[@]} -eq 0 ]
