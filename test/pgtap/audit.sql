-- The audit trail: every change is recorded with who, what, why and when,
-- chained to the entry before it.  (Tampering: sql/foundation_audit.sql.)
BEGIN;
SELECT plan(16);

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
SELECT is((SELECT last_id FROM settle.audit_head), 0::bigint, 'the head moves only at commit');
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

SELECT is((SELECT verified FROM settle.verify_audit()), true, 'the chain still verifies');

-- A rolled-back subtransaction leaves no gap in the chain.
SAVEPOINT s;
SELECT settle.add_reseller('aud-c', 'Audit C');
ROLLBACK TO SAVEPOINT s;
SELECT settle.add_reseller('aud-d', 'Audit D');
SELECT is((SELECT max(audit_id) FROM settle.audit_log), 7::bigint, 'a rolled-back entry does not leave a gap');

SELECT * FROM finish();
ROLLBACK;
