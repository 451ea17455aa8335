#!/usr/bin/env bash
# The documentation runs as written: every ```sql block of README.md and
# docs/*.md, page by page, in page order, in one psql session per page, with
# ON_ERROR_STOP (test/docs/blocks.py turns a page into that script; its
# docstring has the block markers: db=postgres for the pg_cron database,
# error=SQLSTATE for a block that must fail so, no-run for a block that
# cannot run in a test cluster, e.g. a pull from the real provider).
# Each page starts from a cluster without a settle database: a page states
# its own setup (finance-guide.md "Before you start", scheduling.md "Setting
# up", install.md, reconciliation.md) or runs after another page's
# (<!-- docs-run: after ... -->).  A page fails on the first statement that
# does not run, a block marked error=... that does not fail with its
# SQLSTATE, or an unknown marker.  After each page its settle database, the
# roles it created and the pg_cron jobs it scheduled into that database are
# removed.
# With arguments, only those pages run (after the made-up pages), for a
# writer checking one page: bash test/dev.sh bash test/process/docs_run.sh docs/rules.md
# First, three made-up pages that must fail (a statement that does not run,
# an error block failing with another SQLSTATE, a misspelt marker) and one
# that must pass, so this test can fail.
set -uo pipefail
cd "$(dirname "$0")/../.."
db=settle					# the name the pages use for the settle database
cron_db=$(psql -X -At -d postgres -c "SHOW cron.database_name" 2>/dev/null || echo postgres)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pg() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }

cleanup() {
	if [ "$(psql -X -At -d "$cron_db" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_cron'")" = 1 ]; then
		psql -X -q -At -d "$cron_db" -c "SELECT count(cron.unschedule(jobid)) FROM cron.job WHERE database = '$db'" >/dev/null
	fi
	pg -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
	comm -13 "$tmp/roles.before" <(pg -c "SELECT rolname FROM pg_roles ORDER BY 1") | while read -r r; do
		pg -c "DROP ROLE \"$r\""
	done
}

blocks=0; skipped=0
# run_page PAGE: 0 when every block ran as written (or the page has none to run)
run_page() {
	local page=$1 list n
	list=$(python3 test/docs/blocks.py --list "$page" 2>"$tmp/list.err") || { echo "     $(cat "$tmp/list.err")"; return 1; }
	n=$(grep -cE ' (run|error) ' <<<"$list" || true)
	skipped=$((skipped + $(grep -c ' skip ' <<<"$list" || true)))
	[ "$n" -gt 0 ] || return 0
	blocks=$((blocks + n))
	pg -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"
	pg -c "SELECT rolname FROM pg_roles ORDER BY 1" > "$tmp/roles.before"
	python3 test/docs/blocks.py --db "$db" --cron-db "$cron_db" "$page" > "$tmp/page.psql"
	local rc=0
	psql -X -q -f "$tmp/page.psql" -d postgres > "$tmp/page.out" 2>&1 || rc=1
	grep -q '^DOCS-FAIL' "$tmp/page.out" && rc=1
	grep -q "^==== end of $page" "$tmp/page.out" || rc=1
	if [ $rc = 0 ]; then echo "ok   $page: $n blocks ran as written"; else
		echo "     $page stopped (the last block started is where):"
		grep -E '^====|^DOCS-FAIL|ERROR|^psql:' "$tmp/page.out" | tail -6 | sed 's/^/     /'
	fi
	cleanup
	return $rc
}

fail=0
# the test itself: made-up pages
mkdir -p "$tmp/self"
printf '# t\n\n```sql db=postgres\nCREATE DATABASE settle;\n```\n\n```sql\nSELECT 1;\nSELECT no_such_column FROM pg_class;\n```\n' > "$tmp/self/bad_statement.md"
printf '# t\n\n```sql error=22012\nSELECT 1;\n```\n' > "$tmp/self/error_not_raised.md"
printf '# t\n\n```sql error=22012\nSELECT 1/0::numeric(5,1) + 1/0;\n```\n\n```sql error=22012\nSELECT pg_catalog.int4(%s);\n```\n' "'x'" > "$tmp/self/wrong_sqlstate.md"
printf '# t\n\n```sql norun\nSELECT 1;\n```\n' > "$tmp/self/bad_marker.md"
printf '# t\n\n```sql db=postgres\nCREATE DATABASE settle;\n```\n\n```sql\nCREATE ROLE docs_self_test;\nSELECT 1 AS one \\gset\n```\n\n```sql error=22012\nSELECT :one / 0;\n```\n\n```sql no-run\nnot sql at all\n```\n\n```sh\nexit 1\n```\n' > "$tmp/self/good.md"
for p in bad_statement error_not_raised wrong_sqlstate bad_marker; do
	if run_page "$tmp/self/$p.md" >/dev/null; then echo "FAIL the made-up page $p.md passed"; fail=1
	else echo "ok   the made-up page $p.md fails"; fi
done
if run_page "$tmp/self/good.md" >/dev/null && ! pg -c "SELECT 1 FROM pg_roles WHERE rolname = 'docs_self_test'" | grep -q 1; then
	echo "ok   the made-up page good.md passes, and the role it created is gone"
else echo "FAIL the made-up page good.md"; fail=1; fi
blocks=0; skipped=0

pages=0
[ $# -gt 0 ] || set -- README.md docs/*.md
for page in "$@"; do
	pages=$((pages + 1))
	run_page "$page" || { echo "FAIL $page"; fail=1; }
done
echo "$pages pages, $blocks blocks run, $skipped marked no-run"
[ "$blocks" -gt 0 ] || { echo "FAIL: no block ran"; fail=1; }
[ "$fail" = 0 ] && echo "docs_run: every block ran as written"
exit $fail
