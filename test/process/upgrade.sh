#!/usr/bin/env bash
# ALTER EXTENSION settle UPDATE from 0.1.0, as a site would do it: settle
# 0.1.0 built from this repository's history (the commit tagged v0.1.0) runs
# its own demo month (ingestion from the mock provider, settlement, a late
# revision, reconciliation, an adjustment, approval and lock, payout batches,
# a bank confirmation); then the server is restarted on this work tree's
# build and the extension is updated.  Checks:
#   - the catalogue of the updated database equals a fresh install's (every
#     object of the extension described by pg_dump --binary-upgrade, which
#     lists members one by one, OIDs left out);
#   - so do its privileges: every ACL of schema settle and the initial
#     privileges recorded for the extension's objects (pg_init_privs);
#   - no row is lost: every row of every 0.1.0 table is in its 0.2.0 table
#     with the same values in the columns both versions have;
#   - every run made by 0.1.0 verifies, every payout batch's files verify,
#     and the audit trail verifies across the update, holding every 0.1.0
#     entry, and goes on verifying after a change made by 0.2.0.
# Runs on a private installation and cluster (test/lib/private_pg.sh): it
# needs no install lock.  About a minute.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
. test/lib/private_pg.sh

fails=0
ok() { echo "ok - $*"; }
bad() { echo "not ok - $*"; fails=$((fails + 1)); }
check() { local want=$1 got=$2 what=$3; [ "$got" = "$want" ] && ok "$what" || bad "$what: expected [$want], got [$got]"; }

# The 0.1.0 release: the commit tagged v0.1.0.  A clone need not carry tags,
# so the commit is named here too, and a tag that names another commit fails.
V010=6b473e14d1e38f52a5bc3e2b5c34b87972cea536
tagged=$(git -C "$ROOT" rev-parse -q --verify 'v0.1.0^{commit}')
[ -z "$tagged" ] || [ "$tagged" = "$V010" ] || {
	echo "not ok - the tag v0.1.0 names $tagged, not the 0.1.0 release $V010" >&2; exit 1; }
git -C "$ROOT" cat-file -e "$V010^{commit}" 2>/dev/null || {
	echo "not ok - the 0.1.0 release $V010 is not in this clone's history (a shallow clone?)" >&2; exit 1; }

W=$(mktemp -d /tmp/settle-upgrade.XXXXXX)
chmod 755 "$W"
chown postgres "$W"
DATA=$W/data
export PGHOST=$W PGPORT=$(free_port) PGUSER=postgres PGDATABASE=postgres
BIN=
cleanup() {
	[ -n "$BIN" ] && private_stop "$BIN" "$DATA" 2>/dev/null
	[ -n "${UPGRADE_KEEP:-}" ] && echo "# kept $W" || rm -rf "$W"
}
trap cleanup EXIT
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }

echo "# building settle 0.1.0 (v0.1.0) and this tree"
mkdir "$W/src010"
git -C "$ROOT" archive "$V010" | tar -x -C "$W/src010" || exit 1
B010=$(private_install "$W/src010" "$W/i010") || exit 1
B020=$(private_install "$ROOT" "$W/i020") || exit 1
private_initdb "$DATA" "$PGPORT" "$W" || exit 1

echo "# settle 0.1.0: its demo month"
BIN=$B010
private_start "$BIN" "$DATA" "$W/server010.log" || { cat "$W/server010.log"; exit 1; }
(cd "$W/src010" && SETTLE_DEMO_OUT=$W/demo bash test/demo_run.sh) >"$W/demo.log" 2>&1 || {
	tail -30 "$W/demo.log"; bad "the 0.1.0 demo runs"; exit 1; }
check 0.1.0 "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'settle'")" "0.1.0 is installed"
# What 0.1.0 holds, as JSON rows (no dependency on its types), and what it verifies.
q <<'SQL' || exit 1
CREATE SCHEMA before;
CREATE TABLE before.row_image (tbl text, img jsonb);
DO $$
DECLARE t text;
BEGIN
	FOR t IN SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'r' LOOP
		EXECUTE format('INSERT INTO before.row_image SELECT %L, to_jsonb(x) FROM settle.%I x', t, t);
	END LOOP;
END $$;
CREATE TABLE before.run_check AS SELECT r.run_id, v.verified FROM settle.run r, settle.verify_run(r.run_id) v;
CREATE TABLE before.audit AS SELECT * FROM settle.verify_audit();
SQL
runs=$(q -c "SELECT count(*) FROM before.run_check")
entries=$(q -c "SELECT entries FROM before.audit")
check "t" "$(q -c "SELECT bool_and(verified) AND count(*) > 5 FROM before.run_check")" "0.1.0 made $runs runs, and verifies them"
check "t" "$(q -c "SELECT verified AND entries > 50 FROM before.audit")" "0.1.0's audit chain verifies ($entries entries)"
check "t" "$(q -c "SELECT count(*) >= 80 FROM before.row_image WHERE tbl = 'bill_line'")" "the demo month's bill lines are there"
private_stop "$BIN" "$DATA"

echo "# this tree's build: ALTER EXTENSION settle UPDATE"
BIN=$B020
private_start "$BIN" "$DATA" "$W/server020.log" || { cat "$W/server020.log"; exit 1; }
# Until the update, the new library's ingest launcher leaves the old tables alone.
for _ in $(seq 1 40); do grep -q "nothing is pulled until ALTER EXTENSION settle UPDATE" "$W/server020.log" && break; sleep 0.25; done
grep -q 'database "postgres" has settle 0.1.0, this library is' "$W/server020.log" \
	&& ok "before the update, the ingest launcher pulls nothing and says why" \
	|| bad "before the update, the ingest launcher pulls nothing and says why"
check "" "$(grep -E 'ERROR|FATAL' "$W/server020.log")" "and no error is logged"
# Refusals, each in a transaction rolled back: nothing of 0.1.0 changes.
refused() {	# SQL before the update, the SQLSTATE wanted, what
	local out
	out=$(psql -X -q -v VERBOSITY=verbose -c "BEGIN" -c "$1" -c "ALTER EXTENSION settle UPDATE" -c "ROLLBACK" 2>&1)
	grep -q "ERROR:  $2:" <<<"$out" && ok "$3" || bad "$3: $out"
}
refused "CREATE VIEW public.my_summary AS SELECT * FROM settle.finance_summary" 2BP01 \
	"a view of someone else's on a settle view: the update is refused (2BP01), not dropping it"
refused "ALTER TABLE settle.audit_log DISABLE TRIGGER USER; UPDATE settle.audit_log SET reason = 'rewritten' WHERE audit_id = 7" XX001 \
	"an altered 0.1.0 audit entry: the update is refused (XX001) rather than re-linking over it"
refused "ALTER TABLE settle.audit_log DISABLE TRIGGER USER; DELETE FROM settle.audit_log WHERE audit_id = (SELECT max(audit_id) FROM settle.audit_log)" XX001 \
	"a removed last 0.1.0 audit entry: the update is refused (XX001)"
check 0.1.0 "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'settle'")" "still 0.1.0 after the refusals"
if q -c "ALTER EXTENSION settle UPDATE" >"$W/update.log" 2>&1; then ok "ALTER EXTENSION settle UPDATE"; else
	cat "$W/update.log"; bad "ALTER EXTENSION settle UPDATE"; exit 1; fi
version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" settle.control)
check "$version" "$(q -c "SELECT extversion FROM pg_extension WHERE extname = 'settle'")" "the extension is $version"

# The catalogue: the updated database against a fresh install in the same cluster.
q -c "CREATE DATABASE fresh" && q -d fresh -c "SET client_min_messages = warning" -c "CREATE EXTENSION settle CASCADE" || exit 1
catalogue() {
	pg_dump --schema-only --binary-upgrade --no-owner -d "$1" --exclude-schema=before 2>"$W/dump_$1.err" \
	| grep -v -e '^--' -e 'binary_upgrade_set_next_' -e 'binary_upgrade_set_record_init_privs' -e '^SELECT pg_catalog.set_config' \
	       -e '^$' -e 'binary_upgrade_set_missing_value' -e 'relfrozenxid' -e '^WHERE oid = ' -e '^UPDATE pg_catalog.pg_class$' \
	       -e '^\\\(un\)\?restrict ' -e 'binary_upgrade_create_empty_extension' -e '^SELECT pg_catalog.setval(' \
	| sed -e "s/datname = '[a-z]*'/datname = DB/" > "$W/catalogue_$1.sql"
}
catalogue postgres; catalogue fresh
if diff "$W/catalogue_fresh.sql" "$W/catalogue_postgres.sql" >"$W/catalogue.diff"; then
	ok "the updated catalogue equals a fresh install's ($(grep -c 'ALTER EXTENSION settle ADD' "$W/catalogue_fresh.sql") objects)"
else
	head -40 "$W/catalogue.diff"; bad "the updated catalogue equals a fresh install's"
fi
# Privileges: every ACL of schema settle (the schema, relations, columns,
# routines, types; NULL as the default it stands for) and the extension's
# initial privileges (pg_init_privs, which pg_dump and pg_upgrade go by), by
# object name.  (pg_dump above prints them too; this says so by itself.)
acls() {
	q -d "$1" <<'SQL'
WITH o AS (
	SELECT 'pg_namespace'::regclass AS cls, n.oid, 0 AS sub, 'schema ' || n.nspname AS name, coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
	  FROM pg_namespace n WHERE n.nspname = 'settle'
	UNION ALL
	SELECT 'pg_class'::regclass, c.oid, 0, 'relation ' || c.oid::regclass,
	       coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner))
	  FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind NOT IN ('i', 'I', 't')
	UNION ALL
	SELECT 'pg_class'::regclass, a.attrelid, a.attnum, 'column ' || a.attrelid::regclass || '.' || a.attname, a.attacl
	  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	 WHERE c.relnamespace = 'settle'::regnamespace AND a.attacl IS NOT NULL
	UNION ALL
	SELECT 'pg_proc'::regclass, p.oid, 0, 'routine ' || p.oid::regprocedure, coalesce(p.proacl, acldefault('f', p.proowner))
	  FROM pg_proc p WHERE p.pronamespace = 'settle'::regnamespace
	UNION ALL
	SELECT 'pg_type'::regclass, t.oid, 0, 'type ' || t.oid::regtype, coalesce(t.typacl, acldefault('T', t.typowner))
	  FROM pg_type t WHERE t.typnamespace = 'settle'::regnamespace
), e AS (
	SELECT o.name, 'acl' AS what, x.* FROM o, aclexplode(o.acl) x
	UNION ALL
	SELECT o.name, 'init_privs', x.* FROM o JOIN pg_init_privs i ON i.classoid = o.cls AND i.objoid = o.oid AND i.objsubid = o.sub,
	       aclexplode(i.initprivs) x
)
SELECT line FROM (
	SELECT name || ' ' || what || ' ' || CASE WHEN grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(grantee)::text END || '='
	       || privilege_type || CASE WHEN is_grantable THEN '*' ELSE '' END || '/' || pg_get_userbyid(grantor) AS line
	  FROM e) l
 ORDER BY line COLLATE "C";
SQL
}
acls fresh >"$W/acl_fresh.txt" && acls postgres >"$W/acl_postgres.txt" || bad "the ACLs could not be read"
if diff "$W/acl_fresh.txt" "$W/acl_postgres.txt" >"$W/acl.diff"; then
	ok "the updated privileges equal a fresh install's ($(grep -c ' acl ' "$W/acl_fresh.txt") grants, $(grep -c ' init_privs ' "$W/acl_fresh.txt") initial)"
else
	head -40 "$W/acl.diff"; bad "the updated privileges equal a fresh install's"
fi
check "" "$(q -d fresh -c "SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc p
                            WHERE p.pronamespace = 'settle'::regnamespace AND p.prosecdef AND has_function_privilege('public', p.oid, 'EXECUTE')")" \
	"no SECURITY DEFINER function is executable by PUBLIC (fresh install)"

# (pg_dump lists the tables marked for dumping by OID: compared by name)
extconfig="SELECT string_agg(c::regclass::text || coalesce(' ' || f, ''), ', ' ORDER BY c::regclass::text)
             FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(c, f) WHERE e.extname = 'settle'"
check "$(q -d fresh -c "$extconfig")" "$(q -c "$extconfig")" "the same tables and sequences are marked for pg_dump"

# No row lost: each 0.1.0 row, without the columns 0.2.0 dropped, is contained in a row of its table.
q <<'SQL' >"$W/lost.txt" || exit 1
CREATE FUNCTION pg_temp.lost(t text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE n bigint; keep text[];
BEGIN
	SELECT array_agg(a.attname::text) INTO keep FROM pg_attribute a
	 WHERE a.attrelid = format('settle.%I', t)::regclass AND a.attnum > 0 AND NOT a.attisdropped;
	EXECUTE format($q$SELECT count(*) FROM before.row_image b
	                   WHERE b.tbl = %L AND NOT EXISTS (SELECT 1 FROM settle.%I x
	                         WHERE to_jsonb(x) @> (b.img - ARRAY(SELECT k FROM jsonb_object_keys(b.img) k WHERE k <> ALL (%L::text[]))))$q$,
	               t, t, keep) INTO n;
	RETURN n;
END $$;
SELECT tbl, count(*), pg_temp.lost(tbl) FROM before.row_image WHERE tbl <> 'audit_head' GROUP BY tbl ORDER BY tbl;
SQL
check "" "$(awk -F'|' '$3 != 0' "$W/lost.txt")" "no row lost: every 0.1.0 row of $(wc -l < "$W/lost.txt") tables is in 0.2.0 ($(awk -F'|' '{n += $2} END {print n}' "$W/lost.txt") rows)"
check "$entries" "$(q -c "SELECT count(*) FROM settle.audit_log")" "every 0.1.0 audit entry is kept"

# What 0.1.0 made still verifies.
check "$runs|$runs" "$(q -c "SELECT count(*), count(*) FILTER (WHERE v.verified) FROM before.run_check b, settle.verify_run(b.run_id) v")" \
	"every run made by 0.1.0 verifies"
q -c "SELECT b.run_id, v.problem FROM before.run_check b, settle.verify_run(b.run_id) v WHERE v.verified IS NOT TRUE" | head -5
check "$(q -c "SELECT count(*) * 2 FROM settle.payout_batch")|t" \
	"$(q -c "SELECT count(*), bool_and(v.verified) FROM settle.payout_batch b, settle.verify_payout_batch(b.batch_id) v")" \
	"every payout batch's CSV and pain.001 files regenerate as recorded"
check "t|$entries" "$(q -c "SELECT verified, entries FROM settle.verify_audit()")" "the audit trail verifies across the update"
check "t" "$(q -c "SELECT count(*) = $entries AND bool_and(chain_id = 0) FROM settle.audit_link")" "0.1.0's entries are the shared chain, in their order"

# 0.2.0 goes on from there.
q -c "SET settle.reason = 'after the update'" -c "SELECT settle.add_reseller('upgraded', 'Added after the update')" >/dev/null || bad "an audited change after the update"
check "t|$((entries + 1))" "$(q -c "SELECT verified, entries FROM settle.verify_audit()")" "and after a change made by $version"
check "t" "$(q -c "SELECT count(*) > 0 FROM settle.reconcile('2026-10')")" "reconcile runs on the updated month"
runs_now=$(q -c "SELECT count(*) FROM settle.run")
q -c "SELECT count(*) FROM settle.settle_period('2026-10')" >/dev/null 2>&1 || bad "settle_period on the updated month"
check "$runs_now" "$(q -c "SELECT count(*) FROM settle.run")" "settling the locked month again makes no new run"

[ "$fails" = 0 ] || { echo "# $fails failed (server log: $W/server020.log; UPGRADE_KEEP=1 keeps it)"; exit 1; }
