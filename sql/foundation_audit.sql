-- Tampering with the audit trail as a superuser: verify_audit names the first
-- broken entry for an edit, a deletion, a swap, a forged append and a deleted
-- tail; the untouched (committed) chain verifies.  A fresh installation gives
-- a chain with known ids.
DROP EXTENSION IF EXISTS settle CASCADE;
CREATE EXTENSION settle CASCADE;
SET client_min_messages = warning;

SELECT settle.add_reseller('aud-a', 'Audit A') > 0 AS added;
SELECT settle.add_reseller('aud-b', 'Audit B') > 0 AS added;
BEGIN;
SET LOCAL settle.reason = 'contract 17';
SELECT settle.set_agreement('aud-a', '2026-01-01', 'USD') > 0 AS added;
SELECT settle.end_agreement('aud-a', (SELECT agreement_id FROM settle.agreement), '2027-01-01');
SELECT settle.add_fx_rate('CNY', 'USD', '2026-10-31', 0.1385, 'PBOC') > 0 AS added;
COMMIT;
SELECT settle.add_customer('aud-b', 'x', 'X Ltd') > 0 AS added;

SELECT audit_id, table_name, operation, reason FROM settle.audit_log ORDER BY audit_id;
SELECT last_id FROM settle.audit_head;
SELECT * FROM settle.verify_audit();

-- Tampers (triggers disabled, as only a superuser can), reports what
-- verify_audit says, and rolls the tamper back.
CREATE FUNCTION pg_temp.tampered(q text, OUT first_broken_id bigint, OUT problem text)
LANGUAGE plpgsql AS $$
BEGIN
	ALTER TABLE settle.audit_log DISABLE TRIGGER ALL;
	EXECUTE q;
	ALTER TABLE settle.audit_log ENABLE TRIGGER ALL;
	SELECT v.first_broken_id, v.problem INTO first_broken_id, problem FROM settle.verify_audit() v;
	RAISE EXCEPTION USING ERRCODE = 'P0099';
EXCEPTION WHEN SQLSTATE 'P0099' THEN
	RETURN;
END $$;

-- edit one entry's payload
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_log SET new_row = jsonb_set(new_row, '{rate}', '0.2') WHERE audit_id = 5$$);
-- edit one entry's reason
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_log SET reason = 'no reason' WHERE audit_id = 3$$);
-- delete one entry
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 2$$);
-- swap two entries
SELECT * FROM pg_temp.tampered($$
	UPDATE settle.audit_log SET audit_id = 100 WHERE audit_id = 3;
	UPDATE settle.audit_log SET audit_id = 3 WHERE audit_id = 4;
	UPDATE settle.audit_log SET audit_id = 4 WHERE audit_id = 100$$);
-- swap two entries and recompute their links: their hashes still give it away
SELECT * FROM pg_temp.tampered($$
	UPDATE settle.audit_log SET audit_id = 100 WHERE audit_id = 3;
	UPDATE settle.audit_log SET audit_id = 3 WHERE audit_id = 4;
	UPDATE settle.audit_log SET audit_id = 4 WHERE audit_id = 100;
	UPDATE settle.audit_log a SET prev_hash = b.entry_hash FROM settle.audit_log b
	 WHERE a.audit_id IN (3, 4, 5) AND b.audit_id = a.audit_id - 1$$);
-- delete the last entry
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 6$$);
-- append an entry out of band
SELECT * FROM pg_temp.tampered($$
	INSERT INTO settle.audit_log SELECT 7, entry_hash, entry_hash, table_name, operation, row_key, old_row,
	       new_row, reason, session_user_name, current_user_name, application_name, txid, xact_time, statement_time
	  FROM settle.audit_log WHERE audit_id = 6$$);
-- break a link
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_log SET prev_hash = sha256('forged') WHERE audit_id = 4$$);

-- Every tamper was rolled back: the chain verifies again.
SELECT * FROM settle.verify_audit();
