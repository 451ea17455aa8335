-- Tampering with the audit trail as a superuser: verify_audit names the first
-- broken entry for an edit, a deletion, a swap, a forged append, a deleted
-- tail, a head moved back and a whole chain removed; the untouched
-- (committed) chains verify.  A fresh installation gives chains with known
-- ids: reseller aud-a's chain holds entries 1, 3, 4 and 8, aud-b's 2 and 6,
-- the shared chain 5 (an FX rate); entry 7 was rolled back.
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
-- a rolled-back subtransaction's entry is never linked
BEGIN;
SAVEPOINT s;
SELECT settle.add_reseller('aud-c', 'Audit C') > 0 AS added;
ROLLBACK TO SAVEPOINT s;
SELECT settle.add_customer('aud-a', 'y', 'Y Ltd') > 0 AS added;
COMMIT;

SELECT a.audit_id, a.chain_id, l.chain_seq, a.table_name, a.operation, a.reason,
       l.prev_hash = coalesce(lag(l.entry_hash) OVER (PARTITION BY l.chain_id ORDER BY l.chain_seq),
                              decode(repeat('00', 32), 'hex')) AS linked
  FROM settle.audit_log a JOIN settle.audit_link l USING (audit_id) ORDER BY a.audit_id;
SELECT h.chain_id, h.last_seq, h.last_hash = l.entry_hash AS head_is_last_link
  FROM settle.audit_head h LEFT JOIN settle.audit_link l ON l.chain_id = h.chain_id AND l.chain_seq = h.last_seq
 ORDER BY h.chain_id;
-- the anchor is the sum modulo 2^256 of the heads' hashes
CREATE FUNCTION pg_temp.anchor_of_heads() RETURNS bytea LANGUAGE plpgsql AS $$
DECLARE
	acc numeric := 0;
	h record;
	out bytea := '';
BEGIN
	FOR h IN SELECT sha256(int8send(chain_id) || int8send(last_seq) || last_hash) AS c FROM settle.audit_head LOOP
		FOR i IN 0..31 LOOP
			acc := acc + get_byte(h.c, i) * 256::numeric ^ (31 - i);
		END LOOP;
	END LOOP;
	acc := mod(acc, 2::numeric ^ 256);
	FOR i IN 0..31 LOOP
		out := out || set_byte('\x00'::bytea, 0, (div(acc, 256::numeric ^ (31 - i)) % 256)::int);
	END LOOP;
	RETURN out;
END $$;
SELECT settle.audit_anchor_value() = pg_temp.anchor_of_heads() AS anchor_is_sum_of_heads,
       count(*) AS anchor_rows FROM settle.audit_anchor;
SELECT * FROM settle.verify_audit();

-- Tampers (triggers disabled, as only a superuser can), reports what
-- verify_audit says, and rolls the tamper back.
CREATE FUNCTION pg_temp.tampered(q text, OUT first_broken_id bigint, OUT problem text)
LANGUAGE plpgsql AS $$
BEGIN
	ALTER TABLE settle.audit_log DISABLE TRIGGER ALL;
	ALTER TABLE settle.audit_link DISABLE TRIGGER ALL;
	ALTER TABLE settle.audit_anchor DISABLE TRIGGER ALL;
	EXECUTE q;
	ALTER TABLE settle.audit_log ENABLE TRIGGER ALL;
	ALTER TABLE settle.audit_link ENABLE TRIGGER ALL;
	ALTER TABLE settle.audit_anchor ENABLE TRIGGER ALL;
	SELECT v.first_broken_id, v.problem INTO first_broken_id, problem FROM settle.verify_audit() v;
	RAISE EXCEPTION USING ERRCODE = 'P0099';
EXCEPTION WHEN SQLSTATE 'P0099' THEN
	RETURN;
END $$;

-- edit one entry's payload
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_log SET new_row = jsonb_set(new_row, '{rate}', '0.2') WHERE audit_id = 5$$);
-- edit one entry's reason
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_log SET reason = 'no reason' WHERE audit_id = 3$$);
-- move an entry to another chain
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_log SET chain_id = 2 WHERE audit_id = 3$$);
-- delete one entry
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 3$$);
-- delete one entry and its link
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 3; DELETE FROM settle.audit_link WHERE audit_id = 3$$);
-- swap two entries
SELECT * FROM pg_temp.tampered($$
	UPDATE settle.audit_log SET audit_id = 100 WHERE audit_id = 3;
	UPDATE settle.audit_log SET audit_id = 3 WHERE audit_id = 4;
	UPDATE settle.audit_log SET audit_id = 4 WHERE audit_id = 100$$);
-- swap two entries' places and recompute the links: their hashes still give it away
SELECT * FROM pg_temp.tampered($$
	UPDATE settle.audit_link SET chain_seq = 100 WHERE chain_id = 1 AND chain_seq = 2;
	UPDATE settle.audit_link SET chain_seq = 2 WHERE chain_id = 1 AND chain_seq = 3;
	UPDATE settle.audit_link SET chain_seq = 3 WHERE chain_id = 1 AND chain_seq = 100;
	UPDATE settle.audit_link a SET prev_hash = b.entry_hash FROM settle.audit_link b
	 WHERE a.chain_id = 1 AND b.chain_id = 1 AND a.chain_seq IN (2, 3, 4) AND b.chain_seq = a.chain_seq - 1$$);
-- delete the last entry of a chain and its link
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE audit_id = 8; DELETE FROM settle.audit_link WHERE audit_id = 8$$);
-- ... and move the chain's head back: the anchor gives it away
SELECT * FROM pg_temp.tampered($$
	DELETE FROM settle.audit_log WHERE audit_id = 8; DELETE FROM settle.audit_link WHERE audit_id = 8;
	UPDATE settle.audit_head h SET last_seq = 3, last_hash = l.entry_hash FROM settle.audit_link l
	 WHERE h.chain_id = 1 AND l.chain_id = 1 AND l.chain_seq = 3$$);
-- remove a whole chain: its entries, links and head
SELECT * FROM pg_temp.tampered($$
	DELETE FROM settle.audit_log WHERE chain_id = 2; DELETE FROM settle.audit_link WHERE chain_id = 2;
	DELETE FROM settle.audit_head WHERE chain_id = 2$$);
-- remove a chain's entries and links, keep its head
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_log WHERE chain_id = 2; DELETE FROM settle.audit_link WHERE chain_id = 2$$);
-- append an entry out of band
SELECT * FROM pg_temp.tampered($$
	INSERT INTO settle.audit_log SELECT 9, chain_id, table_name, operation, row_key, old_row,
	       new_row, reason, session_user_name, current_user_name, application_name, txid, xact_time, statement_time
	  FROM settle.audit_log WHERE audit_id = 6$$);
-- ... and link it after the chain's head
SELECT * FROM pg_temp.tampered($$
	INSERT INTO settle.audit_log SELECT 9, chain_id, table_name, operation, row_key, old_row,
	       new_row, reason, session_user_name, current_user_name, application_name, txid, xact_time, statement_time
	  FROM settle.audit_log WHERE audit_id = 6;
	INSERT INTO settle.audit_link SELECT 2, 3, 9, entry_hash, entry_hash FROM settle.audit_link WHERE audit_id = 6$$);
-- break a link
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_link SET prev_hash = sha256('forged') WHERE audit_id = 4$$);
-- the anchor itself
SELECT * FROM pg_temp.tampered($$UPDATE settle.audit_anchor SET delta = sha256('forged') WHERE txid = 0$$);
SELECT * FROM pg_temp.tampered($$DELETE FROM settle.audit_anchor WHERE txid <> 0$$);

-- Every tamper was rolled back: the chains verify again.
SELECT * FROM settle.verify_audit();

-- A transaction with audited changes cannot be prepared: it would hold the
-- anchor, and so every audited commit, until COMMIT PREPARED.
BEGIN;
SELECT settle.add_customer('aud-a', 'z', 'Z Ltd') > 0 AS added;
PREPARE TRANSACTION 'audited';
SELECT count(*) AS entries FROM settle.audit_log;
