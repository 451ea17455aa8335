-- settle 0.1.0 -> 0.2.0, part 1 of 3 (the Makefile assembles
-- settle--0.1.0--0.2.0.sql from this file, the 0.2.0 install script and
-- updates/0.1.0--0.2.0-post.sql).
--
-- 0.2.0 changes most of the schema, so the update rebuilds it rather than
-- altering it object by object: the 0.1.0 tables leave the extension for a
-- holding schema with their rows, every other object of 0.1.0 is dropped,
-- the 0.2.0 install script creates the schema exactly as a fresh install
-- does, and part 3 copies the rows back and drops the holding schema.  The
-- result is a fresh 0.2.0 install holding the 0.1.0 data (the upgrade test,
-- test/process/upgrade.sh, compares the catalogues).  It all happens in the
-- one transaction of ALTER EXTENSION settle UPDATE: an error anywhere leaves
-- 0.1.0 as it was.  docs/operator-guide.md, "Upgrading", says what to expect.

\echo Use "ALTER EXTENSION settle UPDATE" to load this file. \quit

-- The 0.1.0 audit chain is re-linked by 0.2.0's rules (part 3), so it must
-- verify by 0.1.0's rules first: every entry's hash, its link to the one
-- before, ids without gaps, and the head.  Recomputed here in SQL (0.1.0's
-- canonical encoding: each field as 8-byte big-endian integers, strings as
-- a 4-byte length and their bytes or 0xFFFFFFFF for NULL, jsonb as text,
-- timestamps as microseconds since 2000-01-01 UTC).
CREATE SCHEMA settle_upgrade_0_1_0;
ALTER EXTENSION settle DROP SCHEMA settle_upgrade_0_1_0;	-- it holds the rows until part 3

CREATE FUNCTION settle_upgrade_0_1_0.enc(s text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
	SELECT CASE WHEN s IS NULL THEN '\xffffffff'::bytea
	            ELSE pg_catalog.int4send(pg_catalog.octet_length(pg_catalog.convert_to(s, pg_catalog.current_setting('server_encoding'))))
	                 || pg_catalog.convert_to(s, pg_catalog.current_setting('server_encoding')) END
$$;
CREATE FUNCTION settle_upgrade_0_1_0.usec(t timestamptz) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
	SELECT pg_catalog.int8send(((EXTRACT(epoch FROM t) - 946684800) * 1000000)::bigint)
$$;

DO $verify$
DECLARE
	bad record;
	head record;
	last record;
BEGIN
	SELECT * INTO bad FROM (
		SELECT e.audit_id, e.audit_id <> row_number() OVER w AS gap,
		       e.prev_hash <> coalesce(lag(e.entry_hash) OVER w, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS unlinked,
		       e.entry_hash <> pg_catalog.sha256(e.prev_hash || pg_catalog.int8send(e.audit_id)
		           || settle_upgrade_0_1_0.enc(e.table_name) || settle_upgrade_0_1_0.enc(e.operation)
		           || settle_upgrade_0_1_0.enc(e.row_key::text) || settle_upgrade_0_1_0.enc(e.old_row::text)
		           || settle_upgrade_0_1_0.enc(e.new_row::text) || settle_upgrade_0_1_0.enc(e.reason)
		           || settle_upgrade_0_1_0.enc(e.session_user_name::text) || settle_upgrade_0_1_0.enc(e.current_user_name::text)
		           || settle_upgrade_0_1_0.enc(e.application_name) || pg_catalog.int8send(e.txid)
		           || settle_upgrade_0_1_0.usec(e.xact_time) || settle_upgrade_0_1_0.usec(e.statement_time)) AS altered
		  FROM settle.audit_log e WINDOW w AS (ORDER BY e.audit_id)) x
	 WHERE x.gap OR x.unlinked OR x.altered
	 ORDER BY x.audit_id LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'the audit chain of settle 0.1.0 does not verify at entry %: %', bad.audit_id,
			CASE WHEN bad.gap THEN 'an entry before it is missing' WHEN bad.unlinked THEN 'it does not link to the entry before it'
			     ELSE 'its content or hash was changed' END
			USING ERRCODE = 'data_corrupted',
			      HINT = 'The update re-links the chain and would hide this: find out what changed (SELECT * FROM settle.verify_audit() on 0.1.0) before updating.';
	END IF;
	SELECT last_id, last_hash INTO head FROM settle.audit_head;
	SELECT audit_id, entry_hash INTO last FROM settle.audit_log ORDER BY audit_id DESC LIMIT 1;
	IF head.last_id IS DISTINCT FROM coalesce(last.audit_id, 0)
	   OR (last.audit_id IS NOT NULL AND head.last_hash <> last.entry_hash) THEN
		RAISE EXCEPTION 'the audit chain of settle 0.1.0 does not verify: its head (entry %) is not its last entry (%)',
			head.last_id, coalesce(last.audit_id, 0)
			USING ERRCODE = 'data_corrupted',
			      HINT = 'Entries at the end of the chain were removed, or the head was moved.';
	END IF;
END
$verify$;

-- Objects of others that depend on settle's would be dropped with it: refuse.
-- An object's schema, for parts of another object its owner's: a trigger,
-- rule, policy or constraint its table's, an operator family member its
-- family's.
CREATE FUNCTION settle_upgrade_0_1_0.home(classid oid, objid oid) RETURNS oid
LANGUAGE sql STABLE AS $$
	SELECT CASE classid
	       WHEN 'pg_catalog.pg_class'::regclass THEN (SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = objid)
	       WHEN 'pg_catalog.pg_proc'::regclass THEN (SELECT pronamespace FROM pg_catalog.pg_proc WHERE oid = objid)
	       WHEN 'pg_catalog.pg_type'::regclass THEN (SELECT typnamespace FROM pg_catalog.pg_type WHERE oid = objid)
	       WHEN 'pg_catalog.pg_constraint'::regclass THEN (
	            SELECT coalesce((SELECT relnamespace FROM pg_catalog.pg_class WHERE oid = k.conrelid),
	                            (SELECT typnamespace FROM pg_catalog.pg_type WHERE oid = k.contypid), k.connamespace)
	              FROM pg_catalog.pg_constraint k WHERE k.oid = objid)
	       WHEN 'pg_catalog.pg_trigger'::regclass THEN (
	            SELECT c.relnamespace FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE t.oid = objid)
	       WHEN 'pg_catalog.pg_rewrite'::regclass THEN (
	            SELECT c.relnamespace FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE r.oid = objid)
	       WHEN 'pg_catalog.pg_policy'::regclass THEN (
	            SELECT c.relnamespace FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE p.oid = objid)
	       WHEN 'pg_catalog.pg_attrdef'::regclass THEN (
	            SELECT c.relnamespace FROM pg_catalog.pg_attrdef a JOIN pg_catalog.pg_class c ON c.oid = a.adrelid WHERE a.oid = objid)
	       WHEN 'pg_catalog.pg_amproc'::regclass THEN (
	            SELECT f.opfnamespace FROM pg_catalog.pg_amproc a JOIN pg_catalog.pg_opfamily f ON f.oid = a.amprocfamily WHERE a.oid = objid)
	       WHEN 'pg_catalog.pg_amop'::regclass THEN (
	            SELECT f.opfnamespace FROM pg_catalog.pg_amop a JOIN pg_catalog.pg_opfamily f ON f.oid = a.amopfamily WHERE a.oid = objid)
	       ELSE (SELECT n.oid FROM pg_catalog.pg_namespace n
	              WHERE n.nspname = (pg_catalog.pg_identify_object(classid, objid, 0)).schema) END
$$;

DO $deps$
DECLARE
	ext oid := (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'settle');
	found text;
BEGIN
	SELECT string_agg(DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
	  INTO found
	  FROM pg_catalog.pg_depend d
	  JOIN pg_catalog.pg_depend m ON m.classid = d.refclassid AND m.objid = d.refobjid
	                             AND m.refclassid = 'pg_catalog.pg_extension'::regclass AND m.refobjid = ext AND m.deptype = 'e'
	 WHERE d.deptype = 'n' AND settle_upgrade_0_1_0.home(d.classid, d.objid) IS DISTINCT FROM 'settle'::regnamespace
	   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
	                    WHERE e.classid = d.classid AND e.objid = d.objid AND e.deptype = 'e');
	IF found IS NOT NULL THEN
		RAISE EXCEPTION 'objects outside settle depend on it: %', found
			USING ERRCODE = 'dependent_objects_still_exist',
			      DETAIL = 'The update re-creates every object of settle, so objects built on them would be dropped.',
			      HINT = 'Save their definitions, drop them, update, and create them again.';
	END IF;
	SELECT string_agg(pg_catalog.format('%s %s', c.relkind, c.oid::regclass), ', ') INTO found
	  FROM pg_catalog.pg_class c
	 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
	   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
	                    WHERE e.classid = 'pg_catalog.pg_class'::regclass AND e.objid = c.oid AND e.deptype IN ('e', 'i', 'a'));
	IF found IS NOT NULL THEN
		RAISE EXCEPTION 'schema settle holds relations that are not part of the extension: %', found
			USING ERRCODE = 'dependent_objects_still_exist',
			      HINT = 'Move them to another schema (ALTER TABLE ... SET SCHEMA) before updating.';
	END IF;
END
$deps$;

-- The 0.1.0 tables leave the extension with their rows (and their identity
-- sequences); what hangs on them (triggers, constraints, indexes, policies,
-- defaults) is dropped, and columns of settle's own types and domains become
-- text so that dropping those types keeps the values.
DO $hold$
DECLARE
	r record;
	x record;
BEGIN
	FOR r IN SELECT c.oid::regclass AS rel, c.relname
	           FROM pg_catalog.pg_class c
	           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
	                                      AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
	          WHERE d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'settle') AND c.relkind IN ('r', 'p')
	LOOP
		EXECUTE pg_catalog.format('ALTER EXTENSION settle DROP TABLE %s', r.rel);
		EXECUTE pg_catalog.format('ALTER TABLE %s SET SCHEMA settle_upgrade_0_1_0', r.rel);
	END LOOP;
	-- their identity sequences went along
	FOR r IN SELECT c.oid::regclass AS rel
	           FROM pg_catalog.pg_class c
	           JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
	                                      AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
	          WHERE c.relnamespace = 'settle_upgrade_0_1_0'::regnamespace AND c.relkind = 'S'
	LOOP
		EXECUTE pg_catalog.format('ALTER EXTENSION settle DROP SEQUENCE %s', r.rel);
	END LOOP;
	-- views and functions of 0.1.0 may rest on what is dropped below
	FOR r IN SELECT o.type, o.identity
	           FROM pg_catalog.pg_depend d
	          CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, 0) o
	          WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
	            AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'settle')
	            AND d.classid = 'pg_catalog.pg_class'::regclass AND o.type IN ('view', 'materialized view')
	LOOP
		EXECUTE pg_catalog.format('DROP %s IF EXISTS %s CASCADE', r.type, r.identity);
	END LOOP;
	FOR r IN SELECT c.oid::regclass AS rel, c.oid FROM pg_catalog.pg_class c
	          WHERE c.relnamespace = 'settle_upgrade_0_1_0'::regnamespace AND c.relkind IN ('r', 'p')
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', r.rel);
		FOR x IN SELECT t.tgname FROM pg_catalog.pg_trigger t WHERE t.tgrelid = r.oid AND NOT t.tgisinternal LOOP
			EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', x.tgname, r.rel);
		END LOOP;
		FOR x IN SELECT p.polname FROM pg_catalog.pg_policy p WHERE p.polrelid = r.oid LOOP
			EXECUTE pg_catalog.format('DROP POLICY %I ON %s', x.polname, r.rel);
		END LOOP;
		FOR x IN SELECT k.conname FROM pg_catalog.pg_constraint k WHERE k.conrelid = r.oid AND k.contype = 'f' LOOP
			EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', r.rel, x.conname);
		END LOOP;
	END LOOP;
	FOR r IN SELECT c.oid::regclass AS rel, c.oid FROM pg_catalog.pg_class c
	          WHERE c.relnamespace = 'settle_upgrade_0_1_0'::regnamespace AND c.relkind IN ('r', 'p')
	LOOP
		FOR x IN SELECT k.conname FROM pg_catalog.pg_constraint k WHERE k.conrelid = r.oid LOOP
			EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', r.rel, x.conname);
		END LOOP;
		FOR x IN SELECT i.indexrelid::regclass AS idx FROM pg_catalog.pg_index i WHERE i.indrelid = r.oid LOOP
			EXECUTE pg_catalog.format('DROP INDEX %s', x.idx);
		END LOOP;
		FOR x IN SELECT a.attname, a.attidentity, t.typnamespace = 'settle'::regnamespace AS own_type
		           FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
		          WHERE a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
		LOOP
			IF x.attidentity = '' THEN
				EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', r.rel, x.attname);
			END IF;
			IF x.own_type THEN
				EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN %I TYPE text USING %I::text', r.rel, x.attname, x.attname);
			END IF;
		END LOOP;
	END LOOP;
END
$hold$;

-- Every other object of 0.1.0 goes (views, functions, types, domains,
-- aggregates, casts, operators).  Each drop may take others with it.
DO $drop$
DECLARE
	r record;
BEGIN
	LOOP
		SELECT o.type, o.identity INTO r
		  FROM pg_catalog.pg_depend d
		 CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, 0) o
		 WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
		   AND d.refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'settle')
		 ORDER BY d.classid, d.objid LIMIT 1;
		EXIT WHEN NOT FOUND;
		EXECUTE pg_catalog.format('DROP %s %s CASCADE', r.type, r.identity);
	END LOOP;
END
$drop$;

-- What follows is the 0.2.0 install script.
