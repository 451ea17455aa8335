-- 90: every view of settle runs with the privileges and row-level security of
-- whoever reads it (security_invoker), never its owner's: a view over a table
-- with row-level security shows a reseller login its own rows only.  Set here,
-- after every view exists, so a view added later is covered without a line of
-- its own; test/pgtap/roles.sql checks that no view lacks it.
DO $views$
DECLARE
	v regclass;
BEGIN
	FOR v IN SELECT c.oid FROM pg_catalog.pg_class c
	          WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'v' ORDER BY c.relname
	LOOP
		EXECUTE pg_catalog.format('ALTER VIEW %s SET (security_invoker = true)', v);
	END LOOP;
END
$views$;
