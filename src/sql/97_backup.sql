-- 97: backup and restore.  Runs after every file that creates a table or
-- sequence: it covers every one the files before it created.  (Only
-- 98_privileges.sql comes after it; it creates no table and fills none, and
-- grants the two functions below: the WHEN clause of restore_merge runs as
-- whoever inserts, so settle_admin, who inserts into filled tables directly,
-- may execute settle._restoring().)
--
-- pg_dump leaves out the data of an extension's tables unless they are marked
-- with pg_extension_config_dump, and the position of its sequences unless
-- they are marked themselves (marking a table does not cover its identity
-- sequence).  Everything in schema settle is user data, so everything is
-- marked: a restore then brings back every row and every sequence position.
-- Files may mark their own tables; the sweep below marks every table and
-- sequence (again, with the same empty filter), so a new one is never left
-- out, and test/pgtap/backup.sql checks the catalogue agrees.
--
-- Rows the install script itself inserts (currencies, product categories and
-- products, the payout file formats, the audit chain head, the default
-- reconciliation tolerances) are dumped too, as they may have been changed
-- since: CREATE EXTENSION creates
-- them again on restore, and the restore_merge trigger below lets the dumped
-- version replace the installed one instead of clashing with it.
--
-- A restore session sets settle.restoring (superuser only, see
-- docs/operator-guide.md, "Backups and restore"): the audit trigger then
-- writes no entry and asks for no reason, since the rows arrive with the
-- audit log that already records them.  The install script itself writes no
-- audit entry: it fills its tables before the audit triggers are attached.
-- The other triggers (append-only, run_guard, exception_guard, payout_guard,
-- no_truncate) fire on UPDATE, DELETE or TRUNCATE only; a restore only
-- inserts, and the only updates it makes are restore_merge's, on tables
-- those triggers are not on.  The update from 0.1.0 runs this whole install
-- script (updates/0.1.0--0.2.0-pre.sql); an update that only alters objects
-- must mark a table or sequence it adds itself (and give it a restore_merge
-- trigger if it fills it).

CREATE FUNCTION settle._restoring() RETURNS boolean
	AS 'MODULE_PATHNAME', 'settle_restoring_sql' LANGUAGE C VOLATILE;
COMMENT ON FUNCTION settle._restoring() IS
	'True in a restore session: settle.restoring is on and the session user is a superuser.';

CREATE FUNCTION settle._restore_merge() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	cols text;
	pk text;
	merged bigint;
BEGIN
	SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum)
	  INTO cols
	  FROM pg_catalog.pg_attribute a
	 WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '';
	SELECT pg_catalog.string_agg(pg_catalog.format('t.%1$I = ($1).%1$I', a.attname), ' AND ')
	  INTO pk
	  FROM pg_catalog.pg_index i
	  JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
	 WHERE i.indrelid = TG_RELID AND i.indisprimary;
	EXECUTE pg_catalog.format('UPDATE %s t SET (%s) = (SELECT %s FROM (SELECT ($1).*) s) WHERE %s',
	                          TG_RELID::regclass, cols, cols, pk) USING NEW;
	GET DIAGNOSTICS merged = ROW_COUNT;
	IF merged > 0 THEN
		RETURN NULL;		-- the installed row now holds the dumped values
	END IF;
	RETURN NEW;
END $$;
COMMENT ON FUNCTION settle._restore_merge() IS
	'BEFORE INSERT trigger of tables the install script fills, fired only in a restore session: a restored row whose primary key the fresh install already created replaces that row instead of failing as a duplicate.';

DO $backup$
DECLARE
	-- Tables and sequences whose contents a dump leaves out, each with the
	-- reason.  None today: everything in schema settle is user data.
	-- test/pgtap/backup.sql holds the same list.
	not_dumped text[] := ARRAY[]::text[];
	r record;
	has_rows boolean;
BEGIN
	FOR r IN
		SELECT c.oid::regclass AS rel, c.relname, c.relkind
		  FROM pg_catalog.pg_class c
		 WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'S')
		 ORDER BY c.relname
	LOOP
		CONTINUE WHEN r.relname = ANY (not_dumped);
		PERFORM pg_catalog.pg_extension_config_dump(r.rel, '');
		CONTINUE WHEN r.relkind <> 'r';
		EXECUTE pg_catalog.format('SELECT EXISTS (SELECT FROM %s)', r.rel) INTO has_rows;
		IF has_rows THEN
			IF NOT EXISTS (SELECT FROM pg_catalog.pg_index i WHERE i.indrelid = r.rel AND i.indisprimary) THEN
				RAISE EXCEPTION 'settle.% is filled at install and has no primary key', r.relname
					USING DETAIL = 'A restore merges such rows by primary key.';
			END IF;
			EXECUTE pg_catalog.format('CREATE TRIGGER restore_merge BEFORE INSERT ON %s FOR EACH ROW '
				'WHEN (settle._restoring()) EXECUTE FUNCTION settle._restore_merge()', r.rel);
			EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ALWAYS TRIGGER restore_merge', r.rel);
		END IF;
	END LOOP;
END
$backup$;
