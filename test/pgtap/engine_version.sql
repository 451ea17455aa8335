-- Every run records the settlement engine version that produced it, and its
-- fingerprints include it: verify_run re-derives runs of this server's
-- engine; a run of another engine version verifies when this engine derives
-- the same lines and totals, and otherwise verify_run says plainly that it
-- cannot re-derive it instead of reporting a difference that is not one.  A re-run of an
-- older engine's run with unchanged bill lines is a new run (its inputs
-- include the engine), not "unchanged".
BEGIN;
SELECT plan(9);
SET LOCAL settle.reason = 'engine version test';
SELECT settle.add_reseller('ev', 'Engine version');
SELECT settle.add_customer('ev', 'c1', 'Customer');
SELECT settle.set_agreement('ev', '2026-01-01', 'USD');
SELECT settle.publish_rule('ev', a.agreement_id, '2026-01-01', $$currency USD
otherwise pay 10%$$, 'flat 10%') FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('ev');
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost)
SELECT settle.reseller_id('ev'), 'ev/1', 1, c.customer_id, sha256('ev/1'), 'PayAsYouGoBill', 'acct-ev',
       '2026-10-01', '2026-10-10 00:00+00', '2026-10-10 01:00+00', 'Usage', 'ecs', 'USD', 123.45, 123.45
  FROM settle.customer c WHERE c.code = 'c1' AND c.reseller_id = settle.reseller_id('ev');

SELECT run_id AS run FROM settle.settle_period('2026-10', 'ev') \gset
SELECT is((SELECT engine_version FROM settle.run WHERE run_id = :run), settle.engine_version(),
	'the run records the engine version that made it');
SELECT is(settle.engine_version(), 3, 'this is engine version 3');
SELECT results_eq(format('SELECT verified, problem FROM settle.verify_run(%s)', :run),
	$$VALUES (true, NULL::text)$$, 'a run of this engine verifies');

-- the same run as if an earlier engine had made it
ALTER TABLE settle.run DISABLE TRIGGER USER;
UPDATE settle.run SET engine_version = 1 WHERE run_id = :run;
SELECT results_eq(format('SELECT verified, lines, problem FROM settle.verify_run(%s)', :run),
	format($$VALUES (true, 1::bigint, 'run %s was made by settlement engine version 1; this server runs version 3, which derives the same lines and totals (the fingerprints name the engine, so they differ)')$$, :run),
	'a run of another engine version whose lines and totals this engine derives too verifies, and the problem says which engines');
-- the old engine had made another amount of it
ALTER TABLE settle.settlement_line DISABLE TRIGGER USER;
ALTER TABLE settle.statement DISABLE TRIGGER USER;
UPDATE settle.settlement_line SET unrounded = unrounded + 0.01, rounded = rounded + 0.01 WHERE run_id = :run;
UPDATE settle.statement SET commission = commission + 0.01, total = total + 0.01, net_payout = net_payout + 0.01 WHERE run_id = :run;
SELECT results_eq(format('SELECT verified, lines, problem FROM settle.verify_run(%s)', :run),
	format($$VALUES (NULL::boolean, 1::bigint, 'run %s was made by settlement engine version 1; this server runs version 3, which derives other lines or totals and cannot re-derive it as made')$$, :run),
	'one it derives otherwise is not called different: verified is NULL and the problem says why');
UPDATE settle.run SET engine_version = settle.engine_version() WHERE run_id = :run;
SELECT is((SELECT verified FROM settle.verify_run(:run)), false, 'the same difference in a run of this engine is a failure');
UPDATE settle.run SET engine_version = 1 WHERE run_id = :run;
ALTER TABLE settle.run ENABLE TRIGGER USER;
ALTER TABLE settle.settlement_line ENABLE TRIGGER USER;
ALTER TABLE settle.statement ENABLE TRIGGER USER;
SELECT isnt((SELECT run_id FROM settle.settle_period('2026-10', 'ev')), :run::bigint,
	'settling again with this engine makes a new run (the engine is one of its inputs)');
SELECT is((SELECT status FROM settle.run WHERE run_id = :run), 'superseded', 'which supersedes the old engine''s draft');
SELECT ok((SELECT verified FROM settle.verify_run((SELECT max(run_id) FROM settle.run WHERE reseller_id = settle.reseller_id('ev')))),
	'and verifies');

SELECT * FROM finish();
ROLLBACK;
