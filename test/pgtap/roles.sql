-- The role matrix: for each role, every forbidden action fails
-- with 42501 and every allowed one succeeds; a reseller login reads only its
-- own reseller's rows.
BEGIN;
SELECT plan(76);

-- One login per role, created inside this transaction.
CREATE ROLE tap_admin IN ROLE settle_admin;
CREATE ROLE tap_operator IN ROLE settle_operator;
CREATE ROLE tap_analyst IN ROLE settle_analyst;
CREATE ROLE tap_finance IN ROLE settle_finance;
CREATE ROLE tap_auditor IN ROLE settle_auditor;
CREATE ROLE tap_portal_a IN ROLE settle_reseller;
CREATE ROLE tap_portal_b IN ROLE settle_reseller;
CREATE ROLE tap_nobody;

-- Runs q as role r; errors propagate with their SQLSTATE.
CREATE FUNCTION pg_temp.as_role(r name, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	EXECUTE q;
	RESET ROLE;
EXCEPTION WHEN OTHERS THEN
	RESET ROLE;
	RAISE;
END $$;
CREATE FUNCTION pg_temp.count_as(r name, q text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	EXECUTE 'SELECT count(*) FROM (' || q || ') s' INTO n;
	RESET ROLE;
	RETURN n;
END $$;

SELECT settle.add_reseller('tap-a', 'Reseller A'), settle.add_reseller('tap-b', 'Reseller B');
SELECT settle.add_customer('tap-a', 'a1', 'A one'), settle.add_customer('tap-b', 'b1', 'B one'),
       settle.add_customer('tap-b', 'b2', 'B two');
SELECT settle.grant_reseller_access('tap_portal_a', 'tap-a');
SELECT settle.grant_reseller_access('tap_portal_b', 'tap-b');
SET LOCAL settle.reason = 'role matrix test';

-- 1. Direct writes to a configuration table: admin only.
SELECT lives_ok($$SELECT pg_temp.as_role('tap_admin', 'INSERT INTO settle.product VALUES (''tap1'', ''other'', ''t'')')$$, 'admin inserts into settle.product');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'INSERT INTO settle.product VALUES (''tap2'', ''other'', ''t'')')$$, r), '42501', NULL, r || ' cannot insert into settle.product')
  FROM unnest(ARRAY['tap_operator', 'tap_analyst', 'tap_finance', 'tap_auditor', 'tap_portal_a', 'tap_nobody']) r;

-- 2. Registering resellers: admin only.
SELECT lives_ok($$SELECT pg_temp.as_role('tap_admin', 'SELECT settle.add_reseller(''tap-c'', ''C'')')$$, 'admin adds a reseller');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.add_reseller(''tap-d'', ''D'')')$$, r), '42501', NULL, r || ' cannot add a reseller')
  FROM unnest(ARRAY['tap_operator', 'tap_analyst', 'tap_finance', 'tap_auditor', 'tap_portal_a']) r;

-- 3. Agreements: admin and finance.
SELECT lives_ok($$SELECT pg_temp.as_role('tap_finance', 'SELECT settle.set_agreement(''tap-a'', ''2026-01-01'', ''USD'')')$$, 'finance sets an agreement');
SELECT lives_ok($$SELECT pg_temp.as_role('tap_admin', 'SELECT settle.set_agreement(''tap-b'', ''2026-01-01'', ''EUR'')')$$, 'admin sets an agreement');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.set_agreement(''tap-c'', ''2026-01-01'', ''USD'')')$$, r), '42501', NULL, r || ' cannot set an agreement')
  FROM unnest(ARRAY['tap_operator', 'tap_analyst', 'tap_auditor', 'tap_portal_a']) r;

-- 4. FX rates: admin, operator, finance.
SELECT lives_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.add_fx_rate(''EUR'', ''USD'', ''2026-10-31'', 1.08, ''test'')')$$, r), r || ' records an FX rate')
  FROM unnest(ARRAY['tap_admin', 'tap_operator', 'tap_finance']) r;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.add_fx_rate(''EUR'', ''USD'', ''2026-10-31'', 1.08, ''test'')')$$, r), '42501', NULL, r || ' cannot record an FX rate')
  FROM unnest(ARRAY['tap_analyst', 'tap_auditor', 'tap_portal_a']) r;

-- 5. Account mapping: admin and operator.
SELECT lives_ok($$SELECT pg_temp.as_role('tap_operator', 'SELECT settle.map_account(''111'', ''tap-a'', ''a1'')')$$, 'operator maps an account');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.map_account(''222'', ''tap-b'', ''b1'')')$$, r), '42501', NULL, r || ' cannot map an account')
  FROM unnest(ARRAY['tap_analyst', 'tap_finance', 'tap_auditor', 'tap_portal_a']) r;

-- 6. The audit log and its verification: admin and auditor.
SELECT lives_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT * FROM settle.verify_audit()')$$, r), r || ' verifies the audit trail')
  FROM unnest(ARRAY['tap_admin', 'tap_auditor']) r;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT * FROM settle.verify_audit()')$$, r), '42501', NULL, r || ' cannot run verify_audit')
  FROM unnest(ARRAY['tap_operator', 'tap_analyst', 'tap_finance', 'tap_portal_a']) r;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT count(*) FROM settle.audit_log')$$, r), '42501', NULL, r || ' cannot read the audit log')
  FROM unnest(ARRAY['tap_operator', 'tap_analyst', 'tap_finance', 'tap_portal_a']) r;
SELECT ok(pg_temp.count_as('tap_auditor', 'SELECT * FROM settle.audit_log') > 0, 'auditor reads the audit log');

-- 7. Nobody writes the audit log, bill lines or raw pages directly.
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'INSERT INTO settle.audit_log (audit_id) VALUES (999)')$$, r), '42501', NULL, r || ' cannot forge an audit entry')
  FROM unnest(ARRAY['tap_admin', 'tap_auditor', 'tap_finance']) r;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'UPDATE settle.bill_line SET billed_cost = 0')$$, r), '42501', NULL, r || ' cannot update bill lines')
  FROM unnest(ARRAY['tap_admin', 'tap_operator', 'tap_analyst', 'tap_finance']) r;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'DELETE FROM settle.agreement')$$, r), '42501', NULL, r || ' cannot delete agreements directly')
  FROM unnest(ARRAY['tap_operator', 'tap_analyst', 'tap_finance', 'tap_auditor']) r;

-- 8. Reads: staff see every reseller; a reseller login only its own.
SELECT is(pg_temp.count_as(r, 'SELECT * FROM settle.customer WHERE reseller_id IN (settle.reseller_id(''tap-a''), settle.reseller_id(''tap-b''))'), 3::bigint, r || ' sees all three customers')
  FROM unnest(ARRAY['tap_admin', 'tap_operator', 'tap_analyst', 'tap_finance', 'tap_auditor']) r;
SELECT is(pg_temp.count_as('tap_portal_a', 'SELECT * FROM settle.customer'), 1::bigint, 'reseller A sees its one customer');
SELECT is(pg_temp.count_as('tap_portal_a', $$SELECT * FROM settle.customer c JOIN settle.reseller r USING (reseller_id) WHERE r.code = 'tap-b'$$), 0::bigint, 'reseller A reads zero rows of reseller B');
SELECT is(pg_temp.count_as('tap_portal_a', 'SELECT * FROM settle.reseller'), 1::bigint, 'reseller A sees only itself');
SELECT is(pg_temp.count_as('tap_portal_a', $$SELECT * FROM settle.agreement WHERE settlement_currency = 'EUR'$$), 0::bigint, 'reseller A cannot see B''s agreement');
SELECT throws_ok($$SELECT pg_temp.as_role('tap_nobody', 'SELECT count(*) FROM settle.customer')$$, '42501', NULL, 'a role outside settle reads nothing');
SELECT is(pg_temp.count_as('tap_portal_b', 'SELECT * FROM settle.customer'), 2::bigint, 'reseller B sees its two customers');
SELECT is(pg_temp.count_as('tap_portal_a', 'SELECT * FROM settle.reseller_access'), 1::bigint, 'reseller A sees only its own mapping');
SELECT is(pg_temp.count_as('tap_portal_a', 'SELECT unnest(settle.current_reseller_ids())'), 1::bigint,
	'with two reseller logins mapped, A still resolves to one reseller');

-- 9. Security definer functions pin search_path.
SELECT is(count(*), 0::bigint, 'every SECURITY DEFINER function sets search_path')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'settle' AND p.prosecdef
   AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=pg_catalog, pg_temp');

-- N. Pulls and checkpoint resets: admin and operator only (SECURITY DEFINER).
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.ingest_reset(''no-such-connector'')')$$, r), '42501', NULL, r || ' cannot reset a connector''s checkpoint')
  FROM unnest(ARRAY['tap_analyst', 'tap_finance', 'tap_auditor', 'tap_portal_a', 'tap_nobody']) r;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.ingest_now(''no-such-connector'')')$$, r), '42501', NULL, r || ' cannot run a pull')
  FROM unnest(ARRAY['tap_analyst', 'tap_portal_a', 'tap_nobody']) r;
SELECT lives_ok($$SELECT pg_temp.as_role('tap_operator', 'SELECT settle.ingest_reset(''no-such-connector'')')$$, 'operator resets a checkpoint');
-- and nothing that runs as the extension's owner is open to a role outside settle's
SELECT is(array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text), NULL,
	'no SECURITY DEFINER function of settle is executable by a login without a settle role')
  FROM pg_proc p
 WHERE p.pronamespace = 'settle'::regnamespace AND p.prosecdef AND has_function_privilege('tap_nobody', p.oid, 'EXECUTE');

SELECT * FROM finish();
ROLLBACK;
