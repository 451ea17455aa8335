#!/usr/bin/env bash
# Backup and restore lose nothing.  The demo month (test/demo_run.sh) is built
# in a cluster of its own, dumped exactly as docs/operator-guide.md says
# ("Backups and restore": pg_dumpall --roles-only, pg_dump -Fc) and restored
# into a second, fresh cluster (createdb, PGOPTIONS='-c settle.restoring=on'
# pg_restore --single-transaction).  Then: every settle table holds the same
# rows (count and content), every sequence the same position, the audit chain
# verifies with the same head and length (the restore wrote no entry), every
# run and payout batch verifies, the triggers are ENABLE ALWAYS as in the
# source, append-only holds even under session_replication_role = replica,
# and new resellers, customers and FX rates get fresh ids and audit entries.
# The same restore into a cluster without settle preloaded (the setting is a
# placeholder until CREATE EXTENSION loads settle) gives the same data, and a
# non-superuser's placeholder is dropped when settle loads.
#
# Runs inside any cluster (it starts its own two); usage: bash test/process/backup_restore.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
. test/mock/lib.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }

# What must survive, one labelled line each; the same SQL on both sides.
facts() {	# facts DB
	psql -At -d "$1" <<'SQL'
SELECT 'rows ' || c.relname || ' ' ||
       (xpath('/row/n/text()', query_to_xml(format(
          'SELECT count(*) || '' '' || coalesce(md5(string_agg(t::text, E''\n'' ORDER BY t::text)), ''-'') AS n FROM settle.%I t',
          c.relname), false, true, '')))[1]::text
  FROM pg_class c
 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'p')
 ORDER BY c.relname;
SELECT 'sequence ' || sequencename || ' ' || coalesce(last_value::text, 'unused')
  FROM pg_sequences WHERE schemaname = 'settle' ORDER BY sequencename;
SELECT 'trigger ' || tgrelid::regclass || ' ' || tgname || ' ' || tgenabled::text
  FROM pg_trigger
 WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'settle'::regnamespace)
 ORDER BY 1;
SELECT 'audit_head ' || encode(settle.audit_anchor_value(), 'hex') || ' ' || (SELECT count(*) FROM settle.audit_anchor) || ' '
       || string_agg(chain_id || ':' || last_seq || ':' || encode(last_hash, 'hex'), ' ' ORDER BY chain_id)
  FROM settle.audit_head;
SELECT 'audit ' || verified || ' ' || entries || ' ' || coalesce(problem, '') FROM settle.verify_audit();
SQL
}

# Checks that run functions (verify_run is volatile): after the facts above.
verifications() {	# verifications DB
	psql -At -d "$1" <<'SQL'
SELECT 'runs ' || count(*) || ' verified ' || count(*) FILTER (WHERE v.verified)
  FROM settle.run r, settle.verify_run(r.run_id) v;
SELECT 'batches ' || count(*) || ' verified ' || count(*) FILTER (WHERE v.verified)
  FROM settle.payout_batch b, settle.verify_payout_batch(b.batch_id) v;
SQL
}

case "${1:-}" in
source)
	# In the source cluster: the demo month in database postgres (the one the
	# ingest worker serves), then the backup as documented.
	work=$2
	SETTLE_DEMO_OUT=$work/demo bash test/demo_run.sh >"$work/demo.log" 2>&1 ||
		{ echo "FAIL: the demo did not run"; tail -30 "$work/demo.log"; exit 1; }
	# Rows the install script created, changed since, and one added beside them.
	psql -d postgres -c "BEGIN" -c "SET LOCAL settle.reason = 'backup test'" \
		-c "UPDATE settle.recon_default SET tolerance_abs = 0.05" \
		-c "UPDATE settle.currency SET name = 'US dollar' WHERE currency_code = 'USD'" \
		-c "INSERT INTO settle.currency VALUES ('XTS', 2, 'Testing code')" \
		-c "SELECT settle.map_product('ServiceName', 'Elastic Compute Service', 'ecs')" -c "COMMIT" || exit 1
	# The tables the demo leaves empty: an imported provider total and its item
	# listing, a reseller login, a FOCUS product mapping.
	psql -d postgres -c "SELECT settle.import_provider_totals('ledger', E'billing_cycle,billing_account_id,product_code,currency,amount\\n2026-10,acct-ledger,ecs,USD,90.00\\n')" \
		-c "SELECT settle.import_provider_items('import:ledger', E'billing_cycle,billing_account_id,product_code,currency,record_id,item,amount\\n2026-10,acct-ledger,ecs,USD,R-1,i-1,90.00\\n')" \
		-c "CREATE ROLE backup_acme LOGIN IN ROLE settle_reseller" \
		-c "SELECT settle.grant_reseller_access('backup_acme', 'acme')" >/dev/null || exit 1
	# Roles without passwords: the fresh cluster keeps its own superuser password.
	pg_dumpall --roles-only --no-role-passwords >"$work/roles.sql" || exit 1
	pg_dump -Fc -d postgres -f "$work/settle.dump" || exit 1
	facts postgres >"$work/source.facts" || exit 1
	verifications postgres >"$work/source.verify" || exit 1
	exit 0
	;;
target | target_without_preload)
	# In a fresh cluster: the restore as documented, then the checks.
	work=$2
	db=settle_restored
	psql -d postgres -f "$work/roles.sql" >"$work/roles.log" 2>&1   # "role postgres already exists" is expected
	createdb $db || exit 1
	PGOPTIONS='-c settle.restoring=on' pg_restore --single-transaction --exit-on-error \
		-d $db "$work/settle.dump" 2>"$work/restore.err"
	check "pg_restore exits 0" "$? $(head -c 300 "$work/restore.err")" "0 "
	facts $db >"$work/target.facts" 2>&1

	src() { grep "^$1 " "$work/source.facts"; }
	dst() { grep "^$1 " "$work/target.facts"; }
	if [ "$1" = target_without_preload ]; then
		# settle.restoring was a placeholder until CREATE EXTENSION loaded settle.
		check "shared_preload_libraries is empty" "$(q $db "SHOW shared_preload_libraries")" ""
		check "without preloading: same rows, sequences and triggers" \
			"$(diff <(grep -E '^(rows|sequence|trigger) ' "$work/source.facts") <(grep -E '^(rows|sequence|trigger) ' "$work/target.facts") | grep '^[<>]')" ""
		check "without preloading: the same audit chain and head" "$(dst audit) $(dst audit_head)" "$(src audit) $(src audit_head)"
		# A placeholder a non-superuser sets before settle is loaded is not honoured.
		q $db "CREATE ROLE backup_login LOGIN PASSWORD 'backup' IN ROLE settle_admin" >/dev/null
		out=$(PGUSER=backup_login PGPASSWORD=backup PGOPTIONS='-c settle.restoring=on' \
			psql -At -d $db -c "SELECT settle.add_reseller('np-login', 'No Preload Login') > 0" -c "SHOW settle.restoring" \
			-c "SELECT operation || ' ' || session_user_name FROM settle.audit_log ORDER BY audit_id DESC LIMIT 1" \
			2>"$work/login.err")
		check "a non-superuser's settle.restoring (set before settle loads) is dropped, the change audited" \
			"$(echo $out) $(grep -o 'permission denied to set parameter "settle.restoring"' "$work/login.err")" \
			't off INSERT backup_login permission denied to set parameter "settle.restoring"'
		finish
		exit
	fi
	verifications $db >"$work/target.verify" 2>&1
	check "no table is empty in the source" "$(src rows | awk '$3 == 0 { print $2 }')" ""
	check "restored: the changed and added currencies" \
		"$(q $db "SELECT string_agg(currency_code || ' ' || name, ', ' ORDER BY currency_code) FROM settle.currency WHERE currency_code IN ('USD', 'XTS')")" \
		"USD US dollar, XTS Testing code"
	check "restored: the changed default tolerance" "$(q $db "SELECT tolerance_abs FROM settle.recon_default")" "0.05"
	check "every settle table: same row count and content" "$(diff <(src rows) <(dst rows) | grep '^[<>]')" ""
	check "every settle sequence: same position" "$(diff <(src sequence) <(dst sequence) | grep '^[<>]')" ""
	check "the audit head is the source's (the restore wrote no entry)" "$(dst audit_head)" "$(src audit_head)"
	check "verify_audit: true, as many entries as the source" "$(dst audit)" "$(src audit)"
	check "verify_audit is true in the source" "$(src audit | cut -d' ' -f2)" "true"
	check "every trigger as in the source (ENABLE ALWAYS)" "$(diff <(src trigger) <(dst trigger) | grep '^[<>]')" ""
	check "every settle trigger is ENABLE ALWAYS" "$(dst trigger | awk '$4 != "A"')" ""
	check "verify_run is true on every run" "$(cat "$work/target.verify" | grep '^runs')" "$(grep '^runs' "$work/source.verify")"
	check "verify_payout_batch is true on every batch" "$(grep '^batches' "$work/target.verify")" \
		"$(grep '^batches' "$work/source.verify")"
	check "the source verified every run and batch" \
		"$(awk '{ print ($2 == $4 && $2 > 0) }' "$work/source.verify" | tr -d '\n')" "11"

	# The database goes on: identities continue and the chain grows from the restored head.
	max_rid=$(q $db "SELECT max(reseller_id) FROM settle.reseller")
	check "add_reseller after the restore gets the next id" \
		"$(q $db "SELECT settle.add_reseller('restored', 'Restored Reseller')" 2>&1)" "$((max_rid + 1))"
	max_cid=$(q $db "SELECT max(customer_id) FROM settle.customer")
	check "add_customer after the restore gets the next id" \
		"$(q $db "SELECT settle.add_customer('restored', 'rc1', 'Restored Customer')" 2>&1)" "$((max_cid + 1))"
	max_fx=$(q $db "SELECT max(fx_rate_id) FROM settle.fx_rate")
	check "add_fx_rate after the restore gets the next id" \
		"$(psql -At -d $db -c "BEGIN" -c "SET LOCAL settle.reason = 'restore test'" \
			-c "SELECT settle.add_fx_rate('USD', 'EUR', '2026-11-02', 0.91, 'restore-test')" -c "COMMIT" 2>&1)" \
		"$((max_fx + 1))"
	entries=$(src audit | cut -d' ' -f3)
	check "the chain verifies with the three new entries" \
		"$(q $db "SELECT verified || ' ' || entries FROM settle.verify_audit()")" "true $((entries + 3))"

	# Append-only and audit hold after the restore, also for a replica-mode session.
	check "UPDATE of a bill line under session_replication_role = replica is refused" \
		"$(psql -d $db -c "SET session_replication_role = replica" \
			-c "UPDATE settle.bill_line SET revision = revision WHERE line_key = (SELECT min(line_key) FROM settle.bill_line)" 2>&1 |
			grep -o 'settle.bill_line is append-only')" "settle.bill_line is append-only"
	check "DELETE on audit_log under session_replication_role = replica is refused" \
		"$(psql -d $db -c "SET session_replication_role = replica" -c "DELETE FROM settle.audit_log WHERE audit_id = 1" 2>&1 |
			grep -o 'settle.audit_log is append-only')" "settle.audit_log is append-only"
	max_aid=$(q $db "SELECT max(audit_id) FROM settle.audit_log")
	check "a replica-mode change to an audited table is still audited" \
		"$(psql -At -d $db -c "SET session_replication_role = replica" \
			-c "UPDATE settle.connector SET enabled = false" \
			-c "SELECT count(*) FROM settle.audit_log WHERE table_name = 'connector' AND operation = 'UPDATE' AND application_name = 'psql' AND audit_id > $max_aid" 2>&1)" \
		"$(q $db "SELECT count(*) FROM settle.connector")"
	check "a non-superuser cannot set settle.restoring" \
		"$(psql -d $db -c "SET ROLE settle_admin" -c "SET settle.restoring = on" 2>&1 | grep -o 'permission denied to set parameter "settle.restoring"')" \
		'permission denied to set parameter "settle.restoring"'
	check "settle.restoring cannot be set server-wide" \
		"$(psql -d $db -c "ALTER SYSTEM SET settle.restoring = on" 2>&1 | grep -o 'parameter "settle.restoring" cannot be changed')" \
		'parameter "settle.restoring" cannot be changed'
	finish
	exit
	;;
esac

work=$(mktemp -d /tmp/settle-backup.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
opts=$(bash test/server-options.sh)
echo "== source cluster: the demo month, then pg_dumpall --roles-only and pg_dump -Fc"
pg_virtualenv -t -v 15 -c "-p $(free_port)" $opts bash "$0" source "$work" 2>&1 | grep -vE '^(Creating|Dropping) '
[ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: building or dumping the source"; exit 1; }
echo "== fresh cluster: roles, createdb, pg_restore"
pg_virtualenv -t -v 15 -c "-p $(free_port)" $opts bash "$0" target "$work" 2>&1 | grep -vE '^(Creating|Dropping) '
rc=${PIPESTATUS[0]}
echo "== fresh cluster without shared_preload_libraries: the same restore"
pg_virtualenv -t -v 15 -c "-p $(free_port)" -o shared_preload_libraries= bash "$0" target_without_preload "$work" 2>&1 |
	grep -vE '^(Creating|Dropping) '
[ "${PIPESTATUS[0]}" = 0 ] && [ "$rc" = 0 ]
