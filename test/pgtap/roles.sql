-- The role matrix: for each role, every forbidden action fails
-- with 42501 and every allowed one succeeds; a reseller login reads only its
-- own reseller's rows.
BEGIN;
SELECT plan(91);

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


-- P. Privileges, from the catalogue (all granted in src/sql/98_privileges.sql;
-- sql/privileges.sql shows every object's grants).
-- What PUBLIC may execute: exactly this list, each for its reason.
CREATE TEMP TABLE public_ok (fn regprocedure PRIMARY KEY, reason text NOT NULL);
INSERT INTO public_ok
SELECT f::regprocedure, r FROM (VALUES
	('settle.check_amount(numeric, integer)', 'domain check: CHECK constraints and domains evaluate it for whoever writes'),
	('settle.check_period(text)', 'domain check: CHECK constraints and domains evaluate it for whoever writes'),
	('settle.current_reseller_ids()', 'row-level security policies call it as the querying role'),
	('settle.resellers_of_login(name)', 'row-level security policies call it as the querying role'),
	('settle.append_only_trigger()', 'trigger function: callable only as a trigger'),
	('settle.audit_trigger()', 'trigger function: callable only as a trigger'),
	('settle.exception_guard()', 'trigger function: callable only as a trigger'),
	('settle.payout_guard()', 'trigger function: callable only as a trigger'),
	('settle.run_guard()', 'trigger function: callable only as a trigger'),
	('settle.rule_in(cstring)', 'the settle.rule type''s input'),
	('settle.rule_out(settle.rule)', 'the settle.rule type''s output'),
	('settle.rule_recv(internal)', 'the settle.rule type''s binary input'),
	('settle.rule_send(settle.rule)', 'the settle.rule type''s binary output'),
	('settle.rule_eq(settle.rule, settle.rule)', 'the settle.rule type''s = operator'),
	('settle.rule_ne(settle.rule, settle.rule)', 'the settle.rule type''s <> operator'),
	('settle.rule_hash(settle.rule)', 'the settle.rule type''s hash opclass'),
	('settle.rule_hash_extended(settle.rule, bigint)', 'the settle.rule type''s hash opclass'),
	('settle.money_total(numeric, text)', 'pure aggregate over the caller''s own values'),
	('settle.money_total_trans(internal, numeric, text)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.money_total_final(internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.money_total_combine(internal, internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.money_total_serial(internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.money_total_deserial(bytea, internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.money_total_check_state(bytea)', 'aggregate support: checks a serialized state, pure'),
	('settle.line_fingerprint(text, numeric)', 'pure aggregate over the caller''s own values'),
	('settle.line_fingerprint_trans(internal, text, numeric)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.line_fingerprint_final(internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.line_fingerprint_combine(internal, internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.line_fingerprint_serial(internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.line_fingerprint_deserial(bytea, internal)', 'aggregate support: takes internal, not callable from SQL'),
	('settle.line_fingerprint_check_state(bytea)', 'aggregate support: checks a serialized state, pure'),
	('settle.line_hash(text, settle.exact_amount)', 'pure: a hash of its arguments'),
	('settle.fingerprint_diff(bytea, bytea)', 'pure: compares its arguments'),
	('settle.recon_amount(settle.exact_amount, integer)', 'pure: formats its argument'),
	('settle.recon_status(settle.exact_amount, settle.exact_amount, settle.exact_amount, settle.exact_amount)', 'pure: compares its arguments'),
	('settle.engine_version()', 'a constant of the library'),
	('settle.recon_tolerance(bigint, date)', 'runs as the caller: its table privileges and row-level security apply')
) v(f, r);
-- A login with no settle role at all.
CREATE ROLE tap_login LOGIN;
CREATE FUNCTION pg_temp.public_extra() RETURNS text[] LANGUAGE sql STABLE AS $$
	SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text COLLATE "C")
	  FROM pg_proc p WHERE p.pronamespace = 'settle'::regnamespace
	   AND has_function_privilege('public', p.oid, 'EXECUTE') AND p.oid NOT IN (SELECT fn FROM pg_temp.public_ok)
$$;
CREATE FUNCTION pg_temp.definer_open(who name) RETURNS text[] LANGUAGE sql STABLE AS $$
	SELECT array_agg(p.oid::regprocedure::text ORDER BY p.oid::regprocedure::text COLLATE "C")
	  FROM pg_proc p WHERE p.pronamespace = 'settle'::regnamespace AND p.prosecdef
	   AND has_function_privilege(who, p.oid, 'EXECUTE')
$$;
CREATE FUNCTION pg_temp.relations_open(who name) RETURNS text[] LANGUAGE sql STABLE AS $$
	SELECT array_agg(c.oid::regclass::text ORDER BY c.oid::regclass::text COLLATE "C")
	  FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
	   AND (CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(who, c.oid, 'SELECT, USAGE, UPDATE')
	             ELSE has_table_privilege(who, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
	                  OR has_any_column_privilege(who, c.oid, 'SELECT, INSERT, UPDATE, REFERENCES') END)
$$;
SELECT is(pg_temp.public_extra(), NULL, 'PUBLIC executes no function of settle but the listed ones');
SELECT is(array_agg(fn::text ORDER BY fn::text COLLATE "C"), NULL, 'and each listed one is executable by PUBLIC (the list is current)')
  FROM public_ok WHERE NOT has_function_privilege('public', fn, 'EXECUTE');
SELECT is(array_agg(fn::text), NULL, 'no listed function runs as its owner')
  FROM public_ok JOIN pg_proc p ON p.oid = fn WHERE p.prosecdef;
SELECT is(pg_temp.definer_open('tap_login'), NULL, 'no SECURITY DEFINER function of settle is executable by a login without a settle role');
SELECT is(pg_temp.definer_open('tap_nobody'), NULL, '... nor by a role without one');
SELECT is(pg_temp.relations_open('public'), NULL, 'PUBLIC has no privilege on any table, view or sequence of settle');
SELECT is(pg_temp.relations_open('tap_login'), NULL, 'nor has a login without a settle role');
SELECT ok(NOT has_schema_privilege('tap_login', 'settle', 'USAGE') AND NOT has_schema_privilege('tap_login', 'settle', 'CREATE'),
	'a login without a settle role cannot use schema settle');
-- Every function and relation holds a decision: a settle role may use it, or
-- PUBLIC (listed above), or only the owner (internal: called by a SECURITY
-- DEFINER function or a trigger) -- never a grant to some other role.
SELECT is(array_agg(DISTINCT pg_get_userbyid(x.grantee)::text), NULL, 'nothing of settle is granted to a role outside settle''s')
  FROM (SELECT p.proacl AS acl, p.proowner AS owner FROM pg_proc p WHERE p.pronamespace = 'settle'::regnamespace
        UNION ALL SELECT c.relacl, c.relowner FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace
        UNION ALL SELECT a.attacl, c.relowner FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                   WHERE c.relnamespace = 'settle'::regnamespace) o, aclexplode(o.acl) x
 WHERE x.grantee NOT IN (0, o.owner) AND pg_get_userbyid(x.grantee) NOT LIKE 'settle\_%';
SELECT is(array_agg(c.oid::regclass::text), NULL, 'every table and view of settle is readable by a settle role')
  FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
   AND NOT EXISTS (SELECT 1 FROM unnest(ARRAY['settle_admin', 'settle_operator', 'settle_analyst', 'settle_finance',
                                              'settle_auditor', 'settle_reseller']) r WHERE has_table_privilege(r, c.oid, 'SELECT'));
-- The checks fail when they should: one grant too many, rolled back.
SAVEPOINT too_open;
GRANT EXECUTE ON FUNCTION settle.purge(interval) TO PUBLIC;
GRANT SELECT ON settle.payee TO PUBLIC;
SELECT is(pg_temp.public_extra(), ARRAY['settle.purge(interval)'], 'a function granted to PUBLIC is found');
SELECT is(pg_temp.definer_open('tap_login'), ARRAY['settle.purge(interval)'], '... and, a SECURITY DEFINER one, as open to a login without a settle role');
SELECT is(pg_temp.relations_open('tap_login'), ARRAY['settle.payee'], 'a table granted to PUBLIC is found');
ROLLBACK TO SAVEPOINT too_open;
SAVEPOINT too_open;
GRANT EXECUTE ON FUNCTION settle.add_reseller(text, text) TO tap_login;
SELECT is(pg_temp.definer_open('tap_login'), ARRAY['settle.add_reseller(text,text)'], 'a SECURITY DEFINER function granted to a login directly is found');
ROLLBACK TO SAVEPOINT too_open;
SELECT is(pg_temp.public_extra(), NULL, 'rolled back: PUBLIC executes only the listed functions again');

SELECT * FROM finish();
ROLLBACK;
