-- Backup and restore: what pg_dump keeps and how a restore session loads it.
-- (The whole dump and restore of a settled month: test/process/backup_restore.sh.)
BEGIN;
SELECT plan(27);

-- Every table and sequence of schema settle is marked for pg_dump, or listed
-- here with the reason it is left out.  An upgrade script that adds a table
-- or sequence must mark it (pg_extension_config_dump) or add it here.
CREATE TEMP TABLE not_dumped (relname name PRIMARY KEY, why text NOT NULL);
-- (none: everything in schema settle is user data)

SELECT is(
	ARRAY(SELECT c.relname::text FROM pg_class c, pg_extension e
	       WHERE e.extname = 'settle' AND c.relnamespace = 'settle'::regnamespace
	         AND c.relkind IN ('r', 'p', 'S') AND c.oid <> ALL (e.extconfig)
	         AND c.relname NOT IN (SELECT relname FROM not_dumped)
	       ORDER BY 1),
	ARRAY[]::text[],
	'every table and sequence of schema settle is marked with pg_extension_config_dump or listed as not dumped');
SELECT is(
	ARRAY(SELECT DISTINCT pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)
	        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	       WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
	         AND pg_get_serial_sequence(a.attrelid::regclass::text, a.attname) IS NOT NULL
	         AND pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)::regclass <> ALL
	             ((SELECT extconfig FROM pg_extension WHERE extname = 'settle')::regclass[])),
	ARRAY[]::text[],
	'identity sequences are marked themselves (marking their table does not dump their position)');
SELECT cmp_ok((SELECT count(*) FROM pg_sequences WHERE schemaname = 'settle'), '>=', 12::bigint,
	'the check covers the sequences (at least 12)');
SELECT is((SELECT array_agg(DISTINCT c) FROM pg_extension e, unnest(e.extcondition) c WHERE e.extname = 'settle'),
	ARRAY['']::text[], 'no filter: every row is dumped');
SELECT is((SELECT count(*) FROM settle.audit_log
	        WHERE txid % 4294967296 = (SELECT xmin::text::bigint FROM pg_extension WHERE extname = 'settle')),
	0::bigint, 'CREATE EXTENSION writes no audit entry (its rows are inserted before the audit triggers exist)');

-- Tables the install script fills merge restored rows; every trigger is ENABLE ALWAYS.
SELECT is(ARRAY(SELECT tgrelid::regclass::text FROM pg_trigger WHERE tgname = 'restore_merge' ORDER BY 1),
	ARRAY['settle.audit_anchor', 'settle.audit_head', 'settle.currency', 'settle.payout_format', 'settle.product', 'settle.product_category',
	      'settle.recon_check', 'settle.recon_default'],
	'the tables the install script fills have a restore_merge trigger');
SELECT is(ARRAY(SELECT tgrelid::regclass || '.' || tgname FROM pg_trigger
	             WHERE NOT tgisinternal AND tgenabled <> 'A'
	               AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'settle'::regnamespace)),
	ARRAY[]::text[], 'every settle trigger is ENABLE ALWAYS');

-- settle.restoring: a superuser's session only.
SELECT is((SELECT context FROM pg_settings WHERE name = 'settle.restoring'), 'superuser', 'settle.restoring is superuser-only');
SELECT is(current_setting('settle.restoring'), 'off', 'off by default');
SET LOCAL ROLE settle_admin;
SELECT throws_ok('SET settle.restoring = on', '42501', 'permission denied to set parameter "settle.restoring"',
	'a non-superuser cannot turn it on');
RESET ROLE;
SELECT throws_ok('ALTER ROLE settle_admin SET settle.restoring = on', '55P02', 'settle.restoring can only be set for one session',
	'not for a role');
SELECT throws_ok(format('ALTER DATABASE %I SET settle.restoring = on', current_database()), '55P02',
	'settle.restoring can only be set for one session', 'not for a database');
SELECT throws_ok($$CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql SET settle.restoring = on AS 'SELECT 1'$$,
	'55P02', 'settle.restoring can only be set for one session', 'not for a function');

-- A restore session: what pg_restore does, row by row.
SET LOCAL settle.restoring = on;
SELECT ok(settle._restoring(), 'a superuser session with settle.restoring on is restoring');
SET LOCAL SESSION AUTHORIZATION settle_admin;
SELECT ok(NOT settle._restoring(), 'the same setting in a non-superuser session is not honoured');
RESET SESSION AUTHORIZATION;
SELECT is((SELECT count(*) FROM settle.audit_log), 0::bigint, 'no entries yet');
INSERT INTO settle.reseller (reseller_id, code, name) VALUES (41, 'bk-a', 'Backup A');
INSERT INTO settle.agreement (reseller_id, agreement_id, effective_from, settlement_currency) VALUES (41, 7, '2026-01-01', 'USD');
SELECT is((SELECT count(*) FROM settle.audit_log), 0::bigint,
	'restored rows write no audit entry, and an agreement needs no reason');
INSERT INTO settle.currency VALUES ('USD', 2, 'US Dollar (as dumped)'), ('XTS', 2, 'Testing');
SELECT is((SELECT string_agg(currency_code || ' ' || name, ', ' ORDER BY currency_code) FROM settle.currency
	        WHERE currency_code IN ('USD', 'XTS')),
	'USD US Dollar (as dumped), XTS Testing', 'a restored row replaces the installed one with its key; a new one is inserted');
SELECT is((SELECT count(*) FROM settle.currency), 22::bigint, 'the installed currencies are not duplicated');
INSERT INTO settle.fx_rate (fx_rate_id, base_currency, quote_currency, rate_date, rate, source)
	VALUES (9, 'USD', 'EUR', '2026-10-31', 0.9, 'ECB');
SELECT is((SELECT count(*) FROM settle.audit_log), 0::bigint, 'an FX rate is restored without a reason or an entry');
SELECT throws_ok($$UPDATE settle.fx_rate SET rate = 1$$, '42501', 'settle.fx_rate is append-only',
	'append-only tables stay append-only in a restore session');

-- Leaving the restore: audited again.
SET LOCAL settle.restoring = off;
SELECT throws_ok($$INSERT INTO settle.agreement (reseller_id, effective_from, effective_to, settlement_currency)
	                VALUES (41, '2020-01-01', '2021-01-01', 'USD')$$,
	'55000', 'a reason is required to change agreement', 'outside the restore, a reason is required again');
INSERT INTO settle.reseller (code, name) VALUES ('bk-b', 'Backup B');
SELECT is((SELECT count(*) FROM settle.audit_log), 1::bigint, 'and changes are audited again');
SET LOCAL settle.restoring = on;
SELECT throws_ok($$SET LOCAL session_replication_role = replica; DELETE FROM settle.audit_log$$, '42501',
	'settle.audit_log is append-only', 'the audit log stays append-only in a restore session, also as a replica');
RESET session_replication_role;

-- The shared chain's head and the anchor are merged like any filled table
-- (last: they move the chains); other chains' heads are plain rows.
INSERT INTO settle.audit_head VALUES (0, 42, decode(repeat('ab', 32), 'hex')), (41, 3, decode(repeat('cd', 32), 'hex'));
INSERT INTO settle.audit_anchor VALUES (0, 0, decode(repeat('ef', 32), 'hex')), (77, 1234, decode(repeat('12', 32), 'hex'));
SELECT is((SELECT string_agg(chain_id || ' ' || last_seq || ' ' || left(encode(last_hash, 'hex'), 4), ', ' ORDER BY chain_id)
             FROM settle.audit_head), '0 42 abab, 41 3 cdcd',
	'the restored shared head replaces the installed one, another chain''s head is added');
SELECT is((SELECT string_agg(anchor_id || ' ' || left(encode(delta, 'hex'), 4), ', ' ORDER BY anchor_id) FROM settle.audit_anchor),
	'0 efef, 77 1212', 'the restored anchor row of the installation replaces the installed one, the others are added');
SELECT is((SELECT count(*) FROM settle.audit_anchor), 2::bigint, 'no duplicate');

SELECT * FROM finish();
ROLLBACK;
