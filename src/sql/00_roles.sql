-- settle 0.2.0 — install script, assembled from src/sql/*.sql in name order.
-- 00: roles.  Roles are cluster-wide; they are created when missing and never
-- dropped by DROP EXTENSION (other databases may use them).

\echo Use "CREATE EXTENSION settle" to load this file. \quit

DO $roles$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['settle_admin', 'settle_operator', 'settle_analyst',
	                         'settle_finance', 'settle_auditor', 'settle_reseller']
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
			EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
END
$roles$;

-- Their privileges: 98_privileges.sql.
