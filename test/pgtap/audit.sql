-- The audit trail: every change is recorded with who, what, why and when, in
-- the chain of its reseller (or the shared chain).  Entries are linked into
-- their chains when their transaction commits, so this file (one transaction,
-- rolled back) checks what a transaction sees of its own entries; the links,
-- heads and anchor after commit, and tampering, are in sql/foundation_audit.sql,
-- concurrent writers in test/specs/audit_chain.spec.
BEGIN;
SELECT plan(19);

SELECT is((SELECT count(*) FROM settle.audit_log), 0::bigint, 'a new installation has an empty audit log');
SELECT is((SELECT string_agg(chain_id || ' ' || last_seq, ',') FROM settle.audit_head), '0 0',
	'a new installation has one chain, the shared one, empty');
SELECT is((SELECT string_agg(txid || ' ' || encode(delta, 'hex'), ',') FROM settle.audit_anchor),
	'0 ' || encode(sha256(int8send(0) || int8send(0) || decode(repeat('00', 32), 'hex')), 'hex'),
	'the anchor is one row: the hash of that one empty head');
SELECT settle.add_reseller('aud-a', 'Audit A');
SELECT settle.add_reseller('aud-b', 'Audit B');
SET LOCAL settle.reason = 'contract 17';
SET LOCAL application_name = 'pgtap-audit';
SELECT settle.set_agreement('aud-a', '2026-01-01', 'USD');
SELECT settle.end_agreement('aud-a', (SELECT agreement_id FROM settle.agreement), '2027-01-01');
SELECT settle.add_fx_rate('CNY', 'USD', '2026-10-31', 0.1385, 'PBOC');
SELECT settle.add_customer('aud-b', 'x', 'X Ltd');

SELECT is((SELECT count(*) FROM settle.audit_log), 6::bigint, 'six changes, six entries, visible to their transaction at once');
SELECT results_eq($$SELECT table_name, operation, CASE chain_id WHEN 0 THEN 'shared' ELSE (SELECT code FROM settle.reseller r WHERE r.reseller_id = chain_id) END
	                  FROM settle.audit_log ORDER BY audit_id$$,
	$$VALUES ('reseller'::text, 'INSERT'::text, 'aud-a'::text), ('reseller', 'INSERT', 'aud-b'), ('agreement', 'INSERT', 'aud-a'),
	         ('agreement', 'UPDATE', 'aud-a'), ('fx_rate', 'INSERT', 'shared'), ('customer', 'INSERT', 'aud-b')$$,
	'entries in order, each in the chain of its row''s reseller; an FX rate in the shared chain');
SELECT is((SELECT count(*) FROM settle.audit_link) + (SELECT count(*) FROM settle.audit_anchor) - 1, 0::bigint,
	'entries are linked into their chains, and the anchor moved, only at commit');
SELECT is((SELECT string_agg(chain_id || ' ' || last_seq, ',') FROM settle.audit_head), '0 0', 'the heads move only at commit');
SELECT is((SELECT verified FROM settle.verify_audit()), true, 'entries of this transaction, not linked yet, verify');
SELECT is((SELECT old_row->>'effective_to' || ' -> ' || (new_row->>'effective_to') FROM settle.audit_log
	        WHERE table_name = 'agreement' AND operation = 'UPDATE'),
	'infinity -> 2027-01-01', 'an update records the row before and after');
SELECT is((SELECT reason FROM settle.audit_log WHERE table_name = 'agreement' AND operation = 'UPDATE'), 'contract 17', 'the reason is recorded');
SELECT is((SELECT application_name FROM settle.audit_log WHERE table_name = 'agreement' AND operation = 'UPDATE'), 'pgtap-audit', 'the application is recorded');
SELECT is((SELECT session_user_name::text FROM settle.audit_log WHERE table_name = 'agreement' AND operation = 'UPDATE'), session_user::text, 'the session user is recorded');
SELECT is((SELECT txid FROM settle.audit_log WHERE table_name = 'agreement' AND operation = 'UPDATE'), txid_current(), 'the transaction is recorded');
SELECT is((SELECT row_key FROM settle.audit_log WHERE table_name = 'reseller' ORDER BY audit_id DESC LIMIT 1),
	jsonb_build_object('reseller_id', settle.reseller_id('aud-b')), 'the primary key is recorded');

-- A rolled-back subtransaction's entry is gone; the next one takes the next id.
SAVEPOINT s;
SELECT settle.add_reseller('aud-c', 'Audit C');
ROLLBACK TO SAVEPOINT s;
SELECT settle.add_reseller('aud-d', 'Audit D');
SELECT is((SELECT count(*) FROM settle.audit_log WHERE new_row->>'code' IN ('aud-c', 'aud-d')), 1::bigint,
	'a rolled-back entry is gone');
SELECT is((SELECT verified FROM settle.verify_audit()), true, 'and is not counted as one of this transaction''s entries');

-- The chain of a row is its reseller_id; reseller_id 0 (no reseller known) is shared.
SELECT settle.open_exception(0, 'manual', 'aud:unmapped');
SELECT settle.open_exception(settle.reseller_id('aud-a'), 'manual', 'aud:a');
SELECT results_eq($$SELECT chain_id = 0, row_key->>'reseller_id' FROM settle.audit_log WHERE table_name = 'exception' ORDER BY audit_id$$,
	$$VALUES (true, '0'), (false, settle.reseller_id('aud-a')::text)$$,
	'an exception of no reseller is in the shared chain, one of a reseller in its chain');

-- Nobody but the owner writes the audit tables.
SELECT throws_ok($$SET LOCAL ROLE settle_admin; INSERT INTO settle.audit_link VALUES (0, 1, 1, '\x00', '\x00')$$, '42501', NULL,
	'an admin cannot forge a link');
RESET ROLE;
SELECT throws_ok($$SET LOCAL ROLE settle_admin; INSERT INTO settle.audit_anchor VALUES (1, 1, '\x00')$$, '42501', NULL,
	'an admin cannot add to the anchor');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
