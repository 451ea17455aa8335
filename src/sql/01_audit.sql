-- 01: the audit trail.  Written by the C trigger settle.audit_trigger
-- on every audited table; hash-chained; append-only.

CREATE TABLE settle.audit_log (
	-- No CHECK constraints: the C trigger is the only writer, verify_audit
	-- checks every entry, and each CHECK would cost every audited change.
	audit_id          bigint      PRIMARY KEY,
	prev_hash         bytea       NOT NULL,
	entry_hash        bytea       NOT NULL,
	table_name        text        NOT NULL,
	operation         text        NOT NULL,
	row_key           jsonb,
	old_row           jsonb,
	new_row           jsonb,
	reason            text,
	session_user_name name        NOT NULL,
	current_user_name name        NOT NULL,
	application_name  text        NOT NULL,
	txid              bigint      NOT NULL,
	xact_time         timestamptz NOT NULL,
	statement_time    timestamptz NOT NULL
);
COMMENT ON TABLE settle.audit_log IS
	'Append-only, hash-chained record of every change to configuration and workflow tables: who, what (before/after), why, when. Verify with settle.verify_audit().';
COMMENT ON COLUMN settle.audit_log.audit_id IS 'Position in the chain: 1, 2, 3, ... without gaps.';
COMMENT ON COLUMN settle.audit_log.prev_hash IS 'entry_hash of the previous entry (32 zero bytes for the first).';
COMMENT ON COLUMN settle.audit_log.entry_hash IS 'SHA-256 of prev_hash followed by the canonical encoding of this entry.';
COMMENT ON COLUMN settle.audit_log.row_key IS 'Primary key of the changed row, as a JSON object.';
COMMENT ON COLUMN settle.audit_log.old_row IS 'The row before the change (UPDATE, DELETE).';
COMMENT ON COLUMN settle.audit_log.new_row IS 'The row after the change (INSERT, UPDATE).';
COMMENT ON COLUMN settle.audit_log.reason IS 'Value of the settle.reason setting when the change was made.';
COMMENT ON COLUMN settle.audit_log.txid IS 'Top-level transaction id (txid_current()).';

CREATE TABLE settle.audit_head (
	singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	last_id    bigint  NOT NULL CHECK (last_id >= 0),
	last_hash  bytea   NOT NULL CHECK (octet_length(last_hash) = 32)
);
COMMENT ON TABLE settle.audit_head IS
	'The end of the audit chain.  Its row lock serialises audit writers, so concurrent transactions extend one chain; it also anchors the chain so that a deleted tail entry is detected.';
INSERT INTO settle.audit_head VALUES (true, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION settle.audit_trigger() RETURNS trigger
	AS 'MODULE_PATHNAME', 'settle_audit_trigger' LANGUAGE C;
COMMENT ON FUNCTION settle.audit_trigger() IS
	'Row and TRUNCATE trigger: appends one hash-chained entry to settle.audit_log per change.  Argument ''reason_required'' makes a missing settle.reason an error.';

CREATE FUNCTION settle.append_only_trigger() RETURNS trigger
	AS 'MODULE_PATHNAME', 'settle_append_only_trigger' LANGUAGE C;
COMMENT ON FUNCTION settle.append_only_trigger() IS
	'Refuses UPDATE, DELETE and TRUNCATE on an append-only table, for every user including its owner.';

CREATE FUNCTION settle.verify_audit(
	OUT verified boolean, OUT entries bigint, OUT first_broken_id bigint, OUT problem text)
	AS 'MODULE_PATHNAME', 'settle_verify_audit' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.verify_audit() IS
	'Walks the audit chain from the first entry and recomputes every hash.  Returns whether it verifies, how many entries were checked, and the id of the first entry that does not verify (edited, deleted, reordered or inserted out of band) with the reason.';

-- Install-time helpers: every audited or append-only table gets its triggers
-- the same way, ENABLE ALWAYS (session_replication_role = replica does not
-- bypass them).
CREATE FUNCTION settle._audited(tbl regclass, reason_required boolean DEFAULT false) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	arg text := CASE WHEN reason_required THEN '''reason_required''' ELSE '' END;
BEGIN
	EXECUTE format('CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON %s '
		'FOR EACH ROW EXECUTE FUNCTION settle.audit_trigger(%s)', tbl, arg);
	EXECUTE format('CREATE TRIGGER audit_truncate AFTER TRUNCATE ON %s '
		'FOR EACH STATEMENT EXECUTE FUNCTION settle.audit_trigger(%s)', tbl, arg);
	EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER audit', tbl);
	EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER audit_truncate', tbl);
END $$;
COMMENT ON FUNCTION settle._audited(regclass, boolean) IS 'Install-time: attaches the audit trigger (row and TRUNCATE) to a table, ENABLE ALWAYS.';

CREATE FUNCTION settle._append_only(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	EXECUTE format('CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON %s '
		'FOR EACH ROW EXECUTE FUNCTION settle.append_only_trigger()', tbl);
	EXECUTE format('CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON %s '
		'FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger()', tbl);
	EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER append_only', tbl);
	EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER append_only_truncate', tbl);
END $$;
COMMENT ON FUNCTION settle._append_only(regclass) IS 'Install-time: makes a table append-only (UPDATE, DELETE, TRUNCATE refused for everyone), ENABLE ALWAYS.';

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON settle.audit_log
	FOR EACH ROW EXECUTE FUNCTION settle.append_only_trigger();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON settle.audit_log
	FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger();
ALTER TABLE settle.audit_log ENABLE ALWAYS TRIGGER audit_log_append_only;
ALTER TABLE settle.audit_log ENABLE ALWAYS TRIGGER audit_log_no_truncate;

SELECT pg_catalog.pg_extension_config_dump('settle.audit_log', '');
