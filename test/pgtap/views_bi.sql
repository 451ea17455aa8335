-- BI readiness of the views of settle, from the catalogue (a view added
-- later is checked without editing this file): every column of every view
-- has a comment; every column of a view declared for BI tools (its comment
-- starts "Stable view for BI tools") has a type BI tools read (a domain's
-- base type, as clients see it): text, varchar, char(n), numeric, smallint,
-- integer, bigint, boolean, date, timestamptz; no name, no "char", no
-- arrays, json, bytea or interval.  Such views are readable by the
-- documented read-only BI login (IN ROLE settle_auditor).
BEGIN;
SELECT plan(6);

SELECT is_empty($$
	SELECT c.relname || '.' || a.attname
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	   AND coalesce(btrim(col_description(c.oid, a.attnum)), '') = ''
	 ORDER BY 1$$,
	'every column of every view of settle has a comment');

SELECT is_empty($$
	SELECT c.relname || '.' || a.attname || ': ' || format_type(coalesce(nullif(t.typbasetype, 0), t.oid), NULL)
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  JOIN pg_type t ON t.oid = a.atttypid
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	   AND obj_description(c.oid, 'pg_class') LIKE 'Stable view for BI tools%'
	   AND coalesce(nullif(t.typbasetype, 0), t.oid) NOT IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype,
	         'numeric'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'bool'::regtype, 'date'::regtype,
	         'timestamptz'::regtype)
	 ORDER BY 1$$,
	'every column of every view declared for BI tools ("Stable view for BI tools: ...") has a type BI tools read');

SELECT is_empty($$
	SELECT c.relname FROM pg_class c
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	   AND coalesce(btrim(obj_description(c.oid, 'pg_class')), '') = ''$$,
	'every view of settle says what it is for');

-- the documented BI login (IN ROLE settle_auditor) reads every view of settle
-- (and, views running with the reader's privileges, the tables behind them)
CREATE ROLE bi_reader_probe LOGIN IN ROLE settle_auditor;
CREATE FUNCTION pg_temp.unreadable_views() RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE v regclass;
BEGIN
	FOR v IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	            AND obj_description(c.oid, 'pg_class') LIKE 'Stable view for BI tools%' ORDER BY c.relname LOOP
		BEGIN
			EXECUTE format('SELECT 1 FROM %s LIMIT 0', v);
		EXCEPTION WHEN insufficient_privilege THEN
			RETURN NEXT v::text || ': ' || SQLERRM;
		END;
	END LOOP;
END $f$;
SET LOCAL ROLE bi_reader_probe;
SELECT is_empty($$SELECT * FROM pg_temp.unreadable_views()$$, 'a login in role settle_auditor reads every view declared for BI tools');
RESET ROLE;

-- the sweep can fail: a view with an uncommented column is found
CREATE VIEW settle.bi_probe AS SELECT 1::integer AS probe;
SELECT is((SELECT count(*) FROM pg_attribute a WHERE a.attrelid = 'settle.bi_probe'::regclass AND a.attnum > 0
            AND col_description(a.attrelid, a.attnum) IS NULL), 1::bigint, 'an uncommented view column is seen');

SELECT ok((SELECT count(*) >= 3 FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'v'
            AND obj_description(c.oid, 'pg_class') LIKE 'Stable view for BI tools%'), 'the reconciliation views are declared for BI tools');

SELECT * FROM finish();
ROLLBACK;
