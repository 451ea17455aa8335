#!/usr/bin/env bash
# Differential test: settle's engine against the independent model (model.py).
#   bash test/dev.sh bash test/diff/run.sh 1 2 3        # seeds 1, 2 and 3
# Environment: DIFF_LINES (default 300), DIFF_DECIMALS (default 11),
# DIFF_GEN_ARGS (more gen.py options, e.g. "--no tags --customers 200"),
# DIFF_MODEL_ARGS (model.py options, e.g. "--opt fx_mode=rate8"),
# DIFF_OUT (work directory, default /tmp/settle-diff), DIFF_KEEP=1 keeps the databases.
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
mkdir -p "$out"
# a session time zone far from UTC: settle must date lines by UTC (settlement.md)
export PGTZ=${DIFF_TZ:-Pacific/Kiritimati}
failed_seeds=()
total_lines=0
total_dis=0
for seed in "$@"; do
	dir="$out/seed$seed"
	rm -rf "$dir"; mkdir -p "$dir"
	db="settle_diff_$seed"
	echo "=== seed $seed: $lines lines, up to $decimals decimals ${DIFF_GEN_ARGS:-}"
	# shellcheck disable=SC2086
	python3 "$here/gen.py" --seed "$seed" --lines "$lines" --decimals "$decimals" ${DIFF_GEN_ARGS:-} --out "$dir" || { failed_seeds+=("$seed"); continue; }
	dropdb --if-exists "$db"
	createdb "$db"
	q() { psql -X -q -v ON_ERROR_STOP=1 -d "$db" -At "$@"; }
	problems=0
	prop() { echo "PROPERTY seed=$seed: $*"; problems=$((problems + 1)); }
	if ! q -c "CREATE EXTENSION IF NOT EXISTS settle CASCADE" >/dev/null 2>"$dir/load.err" ||
	   ! q -f "$dir/load.sql" >/dev/null 2>>"$dir/load.err"; then
		echo "LOAD FAILED seed=$seed:"; sed 's/^/    /' "$dir/load.err" | head -20
		failed_seeds+=("$seed"); continue
	fi
	periods=$(python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['settle_order']))" "$dir/scenario.json")
	: > "$dir/runs.txt"
	crashed=0
	for p in $periods; do
		if ! q -c "SELECT run_id, reseller_id, period, status, blocked FROM settle.settle_period('$p') ORDER BY reseller_id" >> "$dir/runs.txt" 2> "$dir/settle_$p.err"; then
			echo "ENGINE ERROR seed=$seed settle_period('$p'):"; sed 's/^/    /' "$dir/settle_$p.err" | head -10
			crashed=1; break
		fi
	done
	if [ "$crashed" = 1 ]; then
		q -c "SELECT 1" >/dev/null 2>&1 || sleep 5     # let a crashed server come back
		failed_seeds+=("$seed"); total_dis=$((total_dis + 1)); continue
	fi
	# property: an unchanged re-run writes nothing new
	snap="SELECT (SELECT count(*) FROM settle.run) || '/' || (SELECT count(*) FROM settle.settlement_line) || '/' || (SELECT count(*) FROM settle.statement) || '/' || coalesce((SELECT string_agg(run_id || ':' || encode(input_fingerprint, 'hex') || ':' || encode(output_fingerprint, 'hex'), ',' ORDER BY run_id) FROM settle.run), '')"
	before=$(q -c "$snap")
	: > "$dir/reruns.txt"
	for p in $periods; do
		q -c "SELECT run_id, reseller_id, period, status, blocked FROM settle.settle_period('$p') ORDER BY reseller_id" >> "$dir/reruns.txt" 2>>"$dir/rerun.err" || prop "re-run of $p failed: $(head -1 "$dir/rerun.err")"
	done
	after=$(q -c "$snap")
	[ "$before" = "$after" ] || prop "unchanged re-run wrote something: runs/lines/statements/fingerprints ${before%%/*}/... -> ${after%%/*}/... (settlement.md: unchanged inputs write nothing)"
	sort "$dir/runs.txt" > "$dir/runs.sorted"; sort "$dir/reruns.txt" > "$dir/reruns.sorted"
	cmp -s "$dir/runs.sorted" "$dir/reruns.sorted" || prop "re-run returned other runs (settlement.md: the same run): $(diff "$dir/runs.sorted" "$dir/reruns.sorted" | head -4 | tr '\n' ' ')"
	# property: verify_run true on every run
	q -F '|' -c "SELECT r.run_id, r.reseller_id, r.period, v.verified, v.lines, v.problem FROM settle.run r, LATERAL settle.verify_run(r.run_id) v WHERE r.status <> 'superseded' ORDER BY r.run_id" > "$dir/verify.txt" 2>"$dir/verify.err" || prop "verify_run raised: $(head -1 "$dir/verify.err")"
	while IFS='|' read -r run rid per ok n problem; do
		[ "$ok" = t ] || prop "verify_run($run) reseller $rid period $per is false: $problem (settlement.md verifying)"
	done < "$dir/verify.txt"
	# dump lineage and statements of the current runs
	q -c "\\copy (SELECT r.reseller_id, r.period, r.run_id, sl.line_key, sl.kind, sl.revision, sl.rule_version, sl.clause, sl.tier, sl.basis, sl.rate, sl.fx_rate_id, sl.unrounded, sl.rounded, sl.ref, s.customer_id, s.clause_text FROM settle.run r JOIN settle.settlement_line sl ON sl.reseller_id = r.reseller_id AND sl.run_id = r.run_id LEFT JOIN (SELECT r2.run_id, x.* FROM settle.run r2, LATERAL settle.statement_lines(r2.run_id) x WHERE r2.status <> 'superseded') s ON s.run_id = r.run_id AND s.line_key = sl.line_key AND s.kind = sl.kind WHERE r.status <> 'superseded' ORDER BY r.reseller_id, r.period, sl.line_key, sl.kind) TO '$dir/lineage.csv' CSV HEADER"
	q -c "\\copy (SELECT r.reseller_id, r.period, r.status, r.blocked, st.* FROM settle.run r JOIN settle.statement st ON st.reseller_id = r.reseller_id AND st.run_id = r.run_id WHERE r.status <> 'superseded' ORDER BY 1, 2) TO '$dir/statement.csv' CSV HEADER"
	q -c "\\copy (SELECT reseller_id, kind, severity, state, period, scope_key, payload FROM settle.exception ORDER BY exception_id) TO '$dir/exceptions.csv' CSV HEADER"
	# shellcheck disable=SC2086
	python3 "$here/model.py" "$dir/scenario.json" --compare "$dir" --seed "$seed" ${DIFF_MODEL_ARGS:-} > "$dir/compare.txt"
	rc=$?
	n=$(grep -c '^DISAGREE' "$dir/compare.txt")
	cat "$dir/compare.txt" | head -${DIFF_SHOW:-60}
	[ "$(wc -l < "$dir/compare.txt")" -le "${DIFF_SHOW:-60}" ] || echo "    ... (all of it in $dir/compare.txt)"
	compared=$(sed -n 's/.*: \([0-9]*\) model lines compared.*/\1/p' "$dir/compare.txt")
	total_lines=$((total_lines + ${compared:-0}))
	total_dis=$((total_dis + n + problems))
	if [ "$rc" != 0 ] || [ "$problems" != 0 ]; then failed_seeds+=("$seed"); fi
	echo "seed $seed: ${compared:-0} lines compared, $n disagreements, $problems property failures"
	[ -n "${DIFF_KEEP:-}" ] || dropdb --if-exists "$db"
done
echo "=== ${#@} seeds, $total_lines lines compared, $total_dis disagreements/property failures; failing seeds: ${failed_seeds[*]:-none}"
[ ${#failed_seeds[@]} -eq 0 ]
