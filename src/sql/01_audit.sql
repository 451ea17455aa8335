-- 01: the audit trail.  Written by the C trigger settle.audit_trigger
-- on every audited table; hash-chained per reseller (and one shared chain),
-- anchored; append-only.  Layout and locking: docs/security.md.

CREATE TABLE settle.audit_log (
	-- No CHECK constraints: the C trigger is the only writer, verify_audit
	-- checks every entry, and each CHECK would cost every audited change.
	audit_id          bigint      PRIMARY KEY,
	chain_id          bigint      NOT NULL,
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
	'Append-only record of every change to configuration and workflow tables: who, what (before/after), why, when.  Each entry is linked into the hash chain of its reseller (or the shared chain) by settle.audit_link when its transaction commits.  Verify with settle.verify_audit().';
COMMENT ON COLUMN settle.audit_log.audit_id IS 'Entry id, from settle.audit_id_seq: increasing in time, with gaps where a transaction rolled back.  The order within a chain is settle.audit_link.chain_seq.';
COMMENT ON COLUMN settle.audit_log.chain_id IS 'The chain the entry belongs to: the reseller_id of the changed row, or 0 (the shared chain) for rows of no reseller and TRUNCATE.';
COMMENT ON COLUMN settle.audit_log.row_key IS 'Primary key of the changed row, as a JSON object.';
COMMENT ON COLUMN settle.audit_log.old_row IS 'The row before the change (UPDATE, DELETE).';
COMMENT ON COLUMN settle.audit_log.new_row IS 'The row after the change (INSERT, UPDATE).';
COMMENT ON COLUMN settle.audit_log.reason IS 'Value of the settle.reason setting when the change was made.';
COMMENT ON COLUMN settle.audit_log.txid IS 'Top-level transaction id (txid_current()).';

-- Not a default of audit_id: the trigger inserts without the executor.
CREATE SEQUENCE settle.audit_id_seq AS bigint;
COMMENT ON SEQUENCE settle.audit_id_seq IS 'Ids of settle.audit_log entries.';

CREATE TABLE settle.audit_link (
	chain_id   bigint NOT NULL,
	chain_seq  bigint NOT NULL,
	audit_id   bigint NOT NULL UNIQUE,
	prev_hash  bytea  NOT NULL,
	entry_hash bytea  NOT NULL,
	PRIMARY KEY (chain_id, chain_seq)
);
COMMENT ON TABLE settle.audit_link IS
	'The hash chains of the audit trail: one per reseller and one shared (chain 0).  Each entry of settle.audit_log has its place here, written at its transaction''s commit; append-only.';
COMMENT ON COLUMN settle.audit_link.chain_seq IS 'Position in the chain: 1, 2, 3, ... without gaps, in commit order.';
COMMENT ON COLUMN settle.audit_link.prev_hash IS 'entry_hash of the previous position (32 zero bytes for the first).';
COMMENT ON COLUMN settle.audit_link.entry_hash IS 'SHA-256 of prev_hash, chain_id, chain_seq, audit_id and the SHA-256 of the entry''s canonical encoding.';

CREATE TABLE settle.audit_head (
	chain_id   bigint  PRIMARY KEY CHECK (chain_id >= 0),
	last_seq   bigint  NOT NULL CHECK (last_seq >= 0),
	last_hash  bytea   NOT NULL CHECK (octet_length(last_hash) = 32)
);
COMMENT ON TABLE settle.audit_head IS
	'The end of each audit chain, moved when a transaction that wrote to it commits; it anchors the chain so that a deleted tail is detected.';
INSERT INTO settle.audit_head VALUES (0, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Not a default of anchor_id: rows are inserted without the executor.
CREATE SEQUENCE settle.audit_anchor_id_seq AS bigint;
CREATE TABLE settle.audit_anchor (
	anchor_id bigint PRIMARY KEY,
	txid      bigint NOT NULL,
	delta     bytea  NOT NULL CHECK (octet_length(delta) = 32)
);
COMMENT ON TABLE settle.audit_anchor IS
	'Commits to every chain head: one row per committed audited transaction, the change it made to the sum modulo 2^256 of SHA-256(chain_id, last_seq, last_hash) over settle.audit_head.  The rows add up to that sum (settle.audit_anchor_value()); a moved, removed or added head breaks the equality.  Transactions only insert here, so none waits for another.';
COMMENT ON COLUMN settle.audit_anchor.anchor_id IS 'From settle.audit_anchor_id_seq (0: the installation''s shared chain head).';
COMMENT ON COLUMN settle.audit_anchor.txid IS 'The transaction (txid_current()) that added the row; 0 for the installation''s.';
-- the installed shared chain's head, empty
INSERT INTO settle.audit_anchor
	SELECT 0, 0, pg_catalog.sha256(pg_catalog.int8send(0) || pg_catalog.int8send(0) || last_hash)
	  FROM settle.audit_head;

CREATE FUNCTION settle._audit_link_unlinked() RETURNS bigint
	AS 'MODULE_PATHNAME', 'settle_audit_link_unlinked' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION settle._audit_link_unlinked() IS
	'Internal (the update from 0.1.0): links every entry of settle.audit_log that has no place in a chain into its chain, in audit_id order, at this transaction''s commit; returns how many.';

CREATE FUNCTION settle.audit_anchor_value() RETURNS bytea
	AS 'MODULE_PATHNAME', 'settle_audit_anchor_value' LANGUAGE C STABLE STRICT;
COMMENT ON FUNCTION settle.audit_anchor_value() IS
	'One value that commits to every audit chain: the sum modulo 2^256 of SHA-256(chain_id, last_seq, last_hash) over the chain heads.  Keep an outside copy (e.g. in each month''s closing report) and compare.';

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
	'Walks every audit chain from its first entry and recomputes every hash, checks each chain ends at its head, that every entry is in a chain and that the anchor is the sum of the heads.  Returns whether it verifies, how many entries were checked, and the id of the first entry that does not verify (edited, deleted, reordered or inserted out of band; NULL when a head or the anchor does not match) with the reason.';

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
CREATE TRIGGER audit_link_append_only BEFORE UPDATE OR DELETE ON settle.audit_link
	FOR EACH ROW EXECUTE FUNCTION settle.append_only_trigger();
CREATE TRIGGER audit_link_no_truncate BEFORE TRUNCATE ON settle.audit_link
	FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger();
ALTER TABLE settle.audit_link ENABLE ALWAYS TRIGGER audit_link_append_only;
ALTER TABLE settle.audit_link ENABLE ALWAYS TRIGGER audit_link_no_truncate;

SELECT pg_catalog.pg_extension_config_dump('settle.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('settle.audit_link', '');
