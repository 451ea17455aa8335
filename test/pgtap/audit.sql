-- The audit trail: every change is recorded with who, what, why and when;
-- the hash chain verifies when untouched and names the first entry a
-- superuser tampered with (edit, delete, swap, forged append, tail delete).
BEGIN;
SELECT plan(24);

-- Tampers as a superuser with triggers disabled, returns what verify_audit
-- says, and undoes the tamper (the exception rolls the subtransaction back).
CREATE FUNCTION pg_temp.tampered(q text, OUT first_broken bigint, OUT problem text)
LANGUAGE plpgsql AS $$
BEGIN
	BEGIN
		ALTER TABLE settle.audit_log DISABLE TRIGGER ALL;
		EXECUTE q;
		ALTER TABLE settle.audit_log ENABLE TRIGGER ALL;
		SELECT v.first_broken_id, v.problem INTO first_broken, problem FROM settle.verify_audit() v;
		RAISE EXCEPTION USING ERRCODE = 'P0099';
	EXCEPTION WHEN SQLSTATE 'P0099' THEN
		RETURN;
	END;
END $$;

SELECT is((SELECT count(*) FROM settle.audit_log), 0::bigint, 'a new installation has an empty audit log');
SELECT settle.add_reseller('aud-a', 'Audit A');
SELECT settle.add_reseller('aud-b', 'Audit B');
SET LOCAL settle.reason = 'contract 17';
SET LOCAL application_name = 'pgtap-audit';
SELECT settle.set_agreement('aud-a', '2026-01-01', 'USD');
SELECT settle.end_agreement('aud-a', (SELECT agreement_id FROM settle.agreement), '2027-01-01');
SELECT settle.add_fx_rate('CNY', 'USD', '2026-10-31', 0.1385, 'PBOC');
SELECT settle.add_customer('aud-b', 'x', 'X Ltd');

SELECT is((SELECT verified FROM settle.verify_audit()), true, 'entries not yet anchored by this transaction verify');
-- Move the head now (normally at commit) so the tampering below can alter the table.
SET CONSTRAINTS ALL IMMEDIATE;
SELECT is((SELECT last_id FROM settle.audit_head), 6::bigint, 'the head anchors the last entry');
SELECT is((SELECT count(*) FROM settle.audit_log), 6::bigint, 'six changes, six entries');
SELECT results_eq($$SELECT audit_id, table_name, operation FROM settle.audit_log ORDER BY audit_id$$,
	$$VALUES (1::bigint, 'reseller'::text, 'INSERT'::text), (2, 'reseller', 'INSERT'), (3, 'agreement', 'INSERT'),
	         (4, 'agreement', 'UPDATE'), (5, 'fx_rate', 'INSERT'), (6, 'customer', 'INSERT')$$,
	'entries in order, with table and operation');
SELECT is((SELECT old_row->>'effective_to' || ' -> ' || (new_row->>'effective_to') FROM settle.audit_log WHERE audit_id = 4),
	'infinity -> 2027-01-01', 'an update records the row before and after');
SELECT is((SELECT reason FROM settle.audit_log WHERE audit_id = 4), 'contract 17', 'the reason is recorded');
SELECT is((SELECT application_name FROM settle.audit_log WHERE audit_id = 4), 'pgtap-audit', 'the application is recorded');
SELECT is((SELECT session_user_name::text FROM settle.audit_log WHERE audit_id = 4), session_user::text, 'the session user is recorded');
SELECT is((SELECT txid FROM settle.audit_log WHERE audit_id = 4), txid_current(), 'the transaction is recorded');
SELECT is((SELECT row_key FROM settle.audit_log WHERE audit_id = 2), jsonb_build_object('reseller_id', settle.reseller_id('aud-b')), 'the primary key is recorded');
SELECT is((SELECT prev_hash FROM settle.audit_log WHERE audit_id = 2), (SELECT entry_hash FROM settle.audit_log WHERE audit_id = 1), 'entries are chained');

SELECT is((SELECT verified FROM settle.verify_audit()), true, 'an untouched chain verifies');
SELECT is((SELECT entries FROM settle.verify_audit()), 6::bigint, 'all six entries were checked');

SELECT is((SELECT first_broken FROM pg_temp.tampered($$UPDATE settle.audit_log SET new_row = jsonb_set(new_row, '{rate}', '0.2') WHERE audit_id = 5$$)),
	5::bigint, 'an edited payload is named');
SELECT is((SELECT problem FROM pg_temp.tampered($$UPDATE settle.audit_log SET new_row = jsonb_set(new_row, '{rate}', '0.2') WHERE audit_id = 5$$)),
	'entry 5 was altered: its content does not match its hash', 'and the problem is said');
SELECT is((SELECT first_broken FROM pg_temp.tampered($$UPDATE settle.audit_log SET reason = 'no reason' WHERE audit_id = 3$$)),
	3::bigint, 'an edited reason is named');
SELECT is((SELECT first_broken FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 2$$)),
	2::bigint, 'a deleted entry is named');
SELECT is((SELECT first_broken FROM pg_temp.tampered($$
	UPDATE settle.audit_log SET audit_id = 100 WHERE audit_id = 3;
	UPDATE settle.audit_log SET audit_id = 3 WHERE audit_id = 4;
	UPDATE settle.audit_log SET audit_id = 4 WHERE audit_id = 100$$)),
	3::bigint, 'swapped entries are named at the first of the two');
SELECT is((SELECT first_broken FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 6$$)),
	6::bigint, 'a deleted last entry is named (the head anchors the chain)');
SELECT is((SELECT first_broken FROM pg_temp.tampered($$
	INSERT INTO settle.audit_log SELECT 7, entry_hash, entry_hash, table_name, operation, row_key, old_row,
	       new_row, reason, session_user_name, current_user_name, application_name, txid, xact_time, statement_time
	  FROM settle.audit_log WHERE audit_id = 6$$)),
	7::bigint, 'an entry appended out of band is named');
SELECT is((SELECT first_broken FROM pg_temp.tampered($$
	UPDATE settle.audit_log SET prev_hash = sha256('forged') WHERE audit_id = 4$$)),
	4::bigint, 'a broken link is named');

SELECT is((SELECT verified FROM settle.verify_audit()), true, 'after the tampering was undone the chain verifies again');

-- A rolled-back subtransaction leaves no gap in the chain.
SAVEPOINT s;
SELECT settle.add_reseller('aud-c', 'Audit C');
ROLLBACK TO SAVEPOINT s;
SELECT settle.add_reseller('aud-d', 'Audit D');
SELECT is((SELECT max(audit_id) FROM settle.audit_log), 7::bigint, 'a rolled-back entry does not leave a gap');

SELECT * FROM finish();
ROLLBACK;
