#!/usr/bin/env bash
# Regenerates docs/reference.md from the catalogue (inside a throwaway cluster).
#   bash test/gen_reference.sh            writes docs/reference.md
#   bash test/gen_reference.sh FILE       writes FILE (used by the currency check)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-docs/reference.md}
gen() {
	local db=settle_reference
	dropdb --if-exists "$db" >/dev/null 2>&1
	createdb "$db"
	psql -X -q -d "$db" -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION settle CASCADE'
	psql -X -q -d "$db" -f test/reference.sql
	dropdb "$db"
}
if [ -n "${PGPORT:-}" ]; then gen > "$target"; else
	export -f gen; bash test/dev.sh bash -c gen > "$target.tmp" && grep -v '^\(Creating\|Dropping\) ' "$target.tmp" > "$target"; rm -f "$target.tmp"
fi
