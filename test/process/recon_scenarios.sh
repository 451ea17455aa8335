#!/usr/bin/env bash
# Reconciliation against known truth: test/recon/gen.py builds, for a few
# seeds, two billing cycles of provider totals, provider item listings and
# bill lines with late revisions, withdrawn lines, missing pages, duplicates,
# FX rate changes and rounding at currency exponents 0, 2 and 3, and writes
# every cause settle.reconcile must name.  For each seed:
#   - the provider_total rows of settle.reconciliation_delta equal the truth
#     row for row (cause, line or provider record, amount, old and new amount);
#   - no provider scope has an unmatched row, and each scope's rows add up to
#     its delta exactly, with at most one rounding row;
#   - explain_delta of the scope with >= 1,000 rows numbers its steps 0, 1,
#     ..., n + 1 and its running total ends at the delta.
set -uo pipefail
cd "$(dirname "$0")/../.."
DB=settle_recon_scen
work=$(mktemp -d /tmp/settle-recon.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail=0
check() {	# check NAME ACTUAL EXPECTED
	if [ "$2" = "$3" ]; then echo "ok - $1"; else echo "not ok - $1"; echo "#   got:      $2"; echo "#   expected: $3"; fail=1; fi
}
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d $DB -c "$1"; }

for seed in ${RECON_SEEDS:-11 12 13}; do
	python3 test/recon/gen.py --seed "$seed" --out "$work/$seed" >"$work/gen.log" || { cat "$work/gen.log"; exit 1; }
	echo "# seed $seed: $(cat "$work/gen.log")"
	dropdb --if-exists $DB >/dev/null 2>&1
	createdb $DB
	q "SET client_min_messages = warning; CREATE EXTENSION settle CASCADE" >/dev/null
	psql -X -q -v ON_ERROR_STOP=1 -d $DB -f "$work/$seed/setup.sql" >"$work/setup.log" 2>&1 || { tail "$work/setup.log"; exit 1; }
	for period in 2026-09 2026-10; do
		check "seed $seed: reconcile('$period') runs" "$(q "SELECT count(*) > 0 FROM settle.reconcile('$period')" 2>&1)" "t"
	done
	q "CREATE TABLE truth (period text, scope_key text, cause text, key text, amount numeric, old_amount numeric, new_amount numeric)"
	psql -X -q -v ON_ERROR_STOP=1 -d $DB -c "\\copy truth FROM '$work/$seed/truth.csv' WITH (FORMAT csv)"
	q "UPDATE truth SET key = '' WHERE key IS NULL"	# the rounding row names no line: an empty CSV field
	q "CREATE VIEW got AS SELECT period, scope_key, cause, coalesce(line_key, 'record:' || record_id, '') AS key, amount,
	          old_amount, new_amount FROM settle.reconciliation_delta WHERE check_name = 'provider_total'"

	check "seed $seed: truth rows, every cause present" \
		"$(q "SELECT count(*) > 1000 AND count(DISTINCT cause) = 6 AND count(DISTINCT scope_key) > 30 FROM truth")" "t"
	check "seed $seed: every row reconcile names is in the truth" \
		"$(q "SELECT count(*) FROM (SELECT * FROM got EXCEPT ALL SELECT * FROM truth) x")" "0"
	check "seed $seed: every row of the truth is named" \
		"$(q "SELECT count(*) FROM (SELECT * FROM truth EXCEPT ALL SELECT * FROM got) x")" "0"
	q "SELECT * FROM (SELECT 'extra' AS side, * FROM (SELECT * FROM got EXCEPT ALL SELECT * FROM truth) a
	                  UNION ALL SELECT 'lost', * FROM (SELECT * FROM truth EXCEPT ALL SELECT * FROM got) b) x
	    ORDER BY scope_key, key LIMIT 10" | sed 's/^/#   /'
	check "seed $seed: causes and amounts per scope equal the truth (reconciliation_cause)" \
		"$(q "SELECT count(*) FROM ((SELECT scope_key, cause, delta_lines, amount FROM settle.reconciliation_cause
		                             WHERE check_name = 'provider_total'
		                           EXCEPT SELECT scope_key, cause, count(*), sum(amount) FROM truth GROUP BY 1, 2)
		                           UNION ALL
		                           (SELECT scope_key, cause, count(*), sum(amount) FROM truth GROUP BY 1, 2
		                           EXCEPT SELECT scope_key, cause, delta_lines, amount FROM settle.reconciliation_cause
		                             WHERE check_name = 'provider_total')) x")" "0"
	check "seed $seed: no provider scope has an unmatched row" \
		"$(q "SELECT count(*) FROM settle.reconciliation_delta WHERE check_name = 'provider_total' AND cause = 'unmatched'")" "0"
	check "seed $seed: each scope's rows add up to its delta, one rounding row at most" \
		"$(q "SELECT count(*) FROM settle.reconciliation_summary s
		       LEFT JOIN (SELECT scope_key, sum(amount) AS explained, count(*) FILTER (WHERE cause = 'rounding') AS rounding
		                    FROM settle.reconciliation_delta WHERE check_name = 'provider_total' GROUP BY 1) d USING (scope_key)
		      WHERE s.check_name = 'provider_total' AND s.status <> 'matched'
		        AND (d.explained IS DISTINCT FROM s.delta OR d.rounding > 1)")" "0"
	check "seed $seed: the scopes with a delta are the truth's" \
		"$(q "SELECT count(*) FROM (SELECT scope_key FROM settle.reconciliation_summary WHERE check_name = 'provider_total'
		                             AND delta <> 0 EXCEPT SELECT scope_key FROM truth) x")" "0"
	big="provider:2026-10/acct-24/%"
	check "seed $seed: explain_delta numbers >= 1,000 rows 0 .. n+1, running total ends at the delta" \
		"$(q "WITH s AS (SELECT scope_key, delta FROM settle.reconciliation_summary WHERE scope_key LIKE '$big'),
		           e AS (SELECT x.* FROM s, settle.explain_delta('2026-10', s.scope_key) x)
		      SELECT count(*) >= 1002, count(DISTINCT step) = count(*), min(step) = 0, max(step) = count(*) - 1,
		             (SELECT explained FROM e WHERE step = (SELECT max(step) - 1 FROM e)) = (SELECT delta FROM s),
		             (SELECT amount FROM e WHERE step = (SELECT max(step) FROM e)) = 0
		        FROM e")" "t|t|t|t|t|t"
	check "seed $seed: explain_delta's steps are the delta rows, amount for amount" \
		"$(q "SELECT count(*) FROM (SELECT x.step, x.cause, x.line_key, x.amount
		                             FROM settle.reconciliation_summary s, settle.explain_delta('2026-10', s.scope_key) x
		                            WHERE s.scope_key LIKE '$big' AND x.step BETWEEN 1 AND (SELECT s.delta_lines)
		                           EXCEPT SELECT d.seq, d.cause, d.line_key, d.amount FROM settle.reconciliation_delta d
		                            WHERE d.scope_key LIKE '$big') x")" "0"
done
dropdb --if-exists $DB >/dev/null 2>&1
if [ $fail = 0 ]; then echo "PASS"; else echo "FAIL"; exit 1; fi
