-- BI readiness of the views of settle, from the catalogue (a view added
-- later is checked without editing this file): every column of every view
-- has a comment and a type BI tools read (a domain's base type, as clients
-- see it): text, varchar, char(n), numeric, smallint, integer, bigint,
-- boolean, date, timestamptz; no name, no "char", no arrays, json, bytea or
-- interval.  The exceptions are listed here, each with its reason, and a
-- listed column that no longer exists (or has a BI type now) fails too.
-- Every view is readable by the documented read-only BI login (IN ROLE
-- settle_auditor).
BEGIN;
SELECT plan(7);

SELECT is_empty($$
	SELECT c.relname || '.' || a.attname
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	   AND coalesce(btrim(col_description(c.oid, a.attnum)), '') = ''
	 ORDER BY 1$$,
	'every column of every view of settle has a comment');

CREATE TEMP TABLE not_bi_typed (col text PRIMARY KEY, reason text NOT NULL);
INSERT INTO not_bi_typed VALUES
	('bill_line_current.tags: jsonb', 'the provider''s tag object, queried with ->> (rules match on tags)'),
	('bill_line_current.validation_errors: text[]', 'one element per failure, queried with ANY'),
	('bill_line_current.content_hash: bytea', 'the row as ingestion stores it'),
	('payout_batch_hashes.csv_sha256: bytea', 'the 0.1.0 column, kept as 0.1.0 had it'),
	('payout_batch_hashes.pain001_sha256: bytea', 'the 0.1.0 column, kept as 0.1.0 had it');

SELECT set_eq($$
	SELECT c.relname || '.' || a.attname || ': ' || format_type(coalesce(nullif(t.typbasetype, 0), t.oid), NULL)
	  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
	  JOIN pg_type t ON t.oid = a.atttypid
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	   AND coalesce(nullif(t.typbasetype, 0), t.oid) NOT IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype,
	         'numeric'::regtype, 'int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'bool'::regtype, 'date'::regtype,
	         'timestamptz'::regtype)$$,
	$$SELECT col FROM not_bi_typed$$,
	'every column of every view of settle has a type BI tools read, but for the listed exceptions');

SELECT is_empty($$
	SELECT c.relname FROM pg_class c
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	   AND coalesce(btrim(obj_description(c.oid, 'pg_class')), '') = ''$$,
	'every view of settle says what it is for');

-- the documented BI login (IN ROLE settle_auditor) reads every view of settle
-- (and, views running with the reader's privileges, the tables behind them)
-- but payee_current: bank details are for finance and admin only
CREATE ROLE bi_reader_probe LOGIN IN ROLE settle_auditor;
CREATE FUNCTION pg_temp.unreadable_views() RETURNS SETOF text LANGUAGE plpgsql AS $f$
DECLARE v regclass;
BEGIN
	FOR v IN SELECT c.oid FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('v', 'm')
	          ORDER BY c.relname LOOP
		BEGIN
			EXECUTE format('SELECT 1 FROM %s LIMIT 0', v);
		EXCEPTION WHEN insufficient_privilege THEN
			RETURN NEXT v::text || ': ' || SQLERRM;
		END;
	END LOOP;
END $f$;
SET LOCAL ROLE bi_reader_probe;
SELECT set_eq($$SELECT * FROM pg_temp.unreadable_views()$$,
	ARRAY['settle.payee_current: permission denied for view payee_current'],
	'a login in role settle_auditor reads every view of settle but the payees'' bank details (finance and admin only)');
RESET ROLE;

-- the sweeps can fail: a view with an uncommented column, and one of type name, are found
CREATE VIEW settle.bi_probe AS SELECT 1::integer AS probe, current_user AS who;
COMMENT ON COLUMN settle.bi_probe.who IS 'commented';
SELECT is((SELECT count(*) FROM pg_attribute a WHERE a.attrelid = 'settle.bi_probe'::regclass AND a.attnum > 0
            AND col_description(a.attrelid, a.attnum) IS NULL), 1::bigint, 'an uncommented view column is seen');
SELECT is((SELECT string_agg(a.attname || ': ' || format_type(a.atttypid, NULL), ',') FROM pg_attribute a
            WHERE a.attrelid = 'settle.bi_probe'::regclass AND a.attnum > 0
              AND a.atttypid NOT IN ('text'::regtype, 'numeric'::regtype, 'int4'::regtype)), 'who: name',
          'a view column of type name is seen');

SELECT ok((SELECT count(*) >= 3 FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'v'
            AND obj_description(c.oid, 'pg_class') LIKE 'Stable view for BI tools%'), 'the reconciliation views are declared for BI tools');

SELECT * FROM finish();
ROLLBACK;
