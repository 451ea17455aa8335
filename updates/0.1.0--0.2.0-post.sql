
-- settle 0.1.0 -> 0.2.0, part 3 of 3: the rows of 0.1.0 come back.
--
-- As in a restore (97_backup.sql): settle.restoring keeps the audit trigger
-- from writing entries for rows that were audited when first written, and
-- lets a copied row replace the one the install script seeded (currencies,
-- products, tolerances); foreign keys are not checked again (the rows come
-- from a database that held them), but every other trigger and constraint
-- is.
SELECT pg_catalog.set_config('settle.restoring', 'on', true),
       pg_catalog.set_config('session_replication_role', 'replica', true);

-- Columns new in 0.2.0 without a default that fits rows of 0.1.0.
CREATE TABLE settle_upgrade_0_1_0.fill (tbl name, col name, expr text, PRIMARY KEY (tbl, col));
INSERT INTO settle_upgrade_0_1_0.fill VALUES
	-- runs of 0.1.0 were made by settlement engine version 1
	('run', 'engine_version', '1'),
	-- the 0.1.0 audit trail was one chain: it becomes the shared chain
	('audit_log', 'chain_id', '0');

DO $copy$
DECLARE
	r record;
	cols text;
	exprs text;
BEGIN
	FOR r IN SELECT c.relname FROM pg_catalog.pg_class c
	          WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'p')
	            AND c.relname NOT IN ('audit_head', 'audit_link', 'audit_anchor')
	            AND EXISTS (SELECT 1 FROM pg_catalog.pg_class o
	                         WHERE o.relnamespace = 'settle_upgrade_0_1_0'::regnamespace AND o.relname = c.relname)
	          ORDER BY 1
	LOOP
		-- a value whose type changed (settle's own types and domains arrive
		-- as text) is cast to its new type
		SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum),
		       string_agg(CASE WHEN f.expr IS NOT NULL THEN f.expr || '::' || pg_catalog.format_type(a.atttypid, a.atttypmod)
		                       WHEN b.atttypid = a.atttypid THEN pg_catalog.format('o.%I', a.attname)
		                       ELSE pg_catalog.format('o.%I::%s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)) END,
		                  ', ' ORDER BY a.attnum)
		  INTO cols, exprs
		  FROM pg_catalog.pg_attribute a
		  LEFT JOIN settle_upgrade_0_1_0.fill f ON f.tbl = r.relname AND f.col = a.attname
		  LEFT JOIN pg_catalog.pg_attribute b ON b.attrelid = pg_catalog.format('settle_upgrade_0_1_0.%I', r.relname)::regclass
		                                     AND b.attname = a.attname AND NOT b.attisdropped
		 WHERE a.attrelid = pg_catalog.format('settle.%I', r.relname)::regclass AND a.attnum > 0 AND NOT a.attisdropped
		   AND a.attgenerated = '' AND (f.expr IS NOT NULL OR b.attname IS NOT NULL);
		EXECUTE pg_catalog.format('INSERT INTO settle.%I (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM settle_upgrade_0_1_0.%I o',
		                          r.relname, cols, exprs, r.relname);
	END LOOP;
END
$copy$;

-- Sequences go on where 0.1.0's left off.
DO $seq$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT pg_catalog.pg_get_serial_sequence(pg_catalog.format('settle.%I', c.relname), a.attname) AS seq,
	                pg_catalog.pg_get_serial_sequence(pg_catalog.format('settle_upgrade_0_1_0.%I', c.relname), a.attname) AS old
	           FROM pg_catalog.pg_class c
	           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attidentity <> ''
	          WHERE c.relnamespace = 'settle'::regnamespace
	            AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute b JOIN pg_catalog.pg_class o ON o.oid = b.attrelid
	                         WHERE o.relnamespace = 'settle_upgrade_0_1_0'::regnamespace AND o.relname = c.relname
	                           AND b.attname = a.attname AND b.attidentity <> '')
	LOOP
		EXECUTE pg_catalog.format('SELECT pg_catalog.setval(%L, last_value, is_called) FROM %s', r.seq, r.old);
	END LOOP;
END
$seq$;
SELECT pg_catalog.setval('settle.audit_id_seq', max(audit_id)) FROM settle.audit_log HAVING count(*) > 0;

-- Payout files: 0.1.0 kept the hashes of a batch's CSV and pain.001 files
-- in columns of the batch; 0.2.0 keeps one row per file, with the builder
-- that made it, so that the file sent to the bank is regenerated as it was.
INSERT INTO settle.payout_batch_file (batch_id, format, builder, size_bytes, sha256)
SELECT b.batch_id, h.format, h.builder,
       pg_catalog.octet_length(pg_catalog.convert_to(settle._payout_build(h.builder, b.batch_id), 'UTF8')), h.sha
  FROM settle_upgrade_0_1_0.payout_batch b
 CROSS JOIN LATERAL (VALUES ('csv', 'settle._payout_csv(bigint)'::regprocedure, b.csv_sha256),
                            ('pain.001', 'settle._payout_pain001_v1(bigint)'::regprocedure, b.pain001_sha256)) h(format, builder, sha)
 WHERE h.sha IS NOT NULL;

-- The entries of the 0.1.0 chain take their places in the shared chain, in
-- their order, when this transaction commits.
SELECT settle._audit_link_unlinked();

DROP SCHEMA settle_upgrade_0_1_0 CASCADE;
SELECT pg_catalog.set_config('settle.restoring', 'off', true),
       pg_catalog.set_config('session_replication_role', 'origin', true);
