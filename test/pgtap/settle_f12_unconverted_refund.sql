-- Finding F12 of the differential test (test/diff/README.md), seed 1008
-- (300 lines, 11 decimals), decided: a charge in a currency without an FX
-- rate for its period is valued at a basis of 0 (it earns nothing, the run is
-- blocked, its lineage row keeps the clause and rate its rule gives), and a
-- refund of it settled in a period that has the rate is reversed at that
-- rate -- what it is once the rate is added and the original's period is
-- settled again (docs/settlement.md, "Nothing guessed").
--
-- `pay 3%`, settlement in USD.  A Usage charge of CNY 1000.00 in September
-- 2026 without a CNY rate dated 2026-09-30: it earns 0, rate 3% on its
-- lineage row, September blocked.  Its refund of CNY -200.00 in October, with
-- October's rate 0.1284: basis -25.68, reversed at 3% = -0.7704 (-0.77).
-- Once September's rate (0.1300) is added and September settled again, the
-- charge earns 1000 x 0.13 x 3% = 3.90 and October's reversal is unchanged.
BEGIN;
SELECT plan(6);

SET LOCAL settle.reason = 'F12';

SELECT settle.add_reseller('f12', 'Reseller f12');
SELECT settle.set_agreement('f12', '2026-01-01', 'USD');
SELECT settle.publish_rule('f12', (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('f12')),
	'2026-01-01', E'currency USD\notherwise pay 3%'::settle.rule, 'F12');
SELECT settle.add_customer('f12', 'c', 'Customer c', 'standard', '{}');
SELECT settle.add_fx_rate('CNY', 'USD', '2026-10-31', 0.1284, 'F12');
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, sku_id, region_id, billing_currency, list_cost, billed_cost, original_line_key, tags)
SELECT c.reseller_id, x.k, 1, c.customer_id, sha256(convert_to('f12/' || x.k, 'UTF8')), 'PayAsYouGoBill', 'acct-f12',
       x.bp::date, x.d::timestamptz, x.d::timestamptz + interval '1 day', 'Usage', 'ecs', 'x', 'cn-west', 'CNY', x.b, x.b, x.o, '{}'
  FROM settle.customer c,
       (VALUES ('c/1-charge', '2026-09-01', '2026-09-10 00:00:00+00', 1000.00, NULL),
               ('c/2-refund', '2026-10-01', '2026-10-05 00:00:00+00', -200.00, 'c/1-charge')) x(k, bp, d, b, o)
 WHERE c.reseller_id = settle.reseller_id('f12');

SELECT count(*) FROM settle.settle_period('2026-09', 'f12');
SELECT count(*) FROM settle.settle_period('2026-10', 'f12');

CREATE TEMP VIEW f12 AS
	SELECT r.period, r.blocked, l.line_key, l.kind::text AS kind, l.clause::integer AS clause, l.basis, l.rate, l.unrounded, l.rounded
	  FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
	 WHERE r.reseller_id = settle.reseller_id('f12') AND r.status <> 'superseded';
SELECT results_eq($$SELECT period, blocked, line_key COLLATE "default", kind, clause, basis, rate, unrounded, rounded FROM f12 ORDER BY period, line_key COLLATE "C"$$,
	$$VALUES ('2026-09', true, 'c/1-charge', 'c', 1, 0::numeric, 0.03::numeric, 0::numeric, 0::numeric),
	         ('2026-10', false, 'c/2-refund', 'r', 1, -25.68, 0.03, -0.7704, -0.77)$$,
	'no September rate: the charge earns 0 at 3% (run blocked); its October refund is reversed at 3%: -25.68 x 3% = -0.7704');
SELECT is((SELECT st.total FROM settle.statement st JOIN settle.run r USING (reseller_id, run_id)
            WHERE r.reseller_id = settle.reseller_id('f12') AND r.period = '2026-10' AND r.status <> 'superseded'),
	-0.77, 'October statement total -0.77');
SELECT is((SELECT array_agg(v.verified ORDER BY r.period) FROM settle.run r, LATERAL settle.verify_run(r.run_id) v
            WHERE r.reseller_id = settle.reseller_id('f12') AND r.status <> 'superseded'),
	ARRAY[true, true], 'verify_run true on both runs');

-- the rate arrives: September settles again; October's reversal is what it was
SELECT settle.add_fx_rate('CNY', 'USD', '2026-09-30', 0.1300, 'F12');
SELECT count(*) FROM settle.settle_period('2026-09', 'f12');
SELECT count(*) FROM settle.settle_period('2026-10', 'f12');
SELECT results_eq($$SELECT period, line_key COLLATE "default", kind, clause, basis, rate, unrounded, rounded FROM f12 ORDER BY period, line_key COLLATE "C"$$,
	$$VALUES ('2026-09', 'c/1-charge', 'c', 1, 130.00::numeric, 0.03::numeric, 3.9::numeric, 3.90::numeric),
	         ('2026-10', 'c/2-refund', 'r', 1, -25.68, 0.03, -0.7704, -0.77)$$,
	'with the September rate 0.13: the charge earns 130.00 x 3% = 3.90; the October reversal stays -0.7704');
SELECT is((SELECT array_agg(st.total ORDER BY r.period) FROM settle.statement st JOIN settle.run r USING (reseller_id, run_id)
            WHERE r.reseller_id = settle.reseller_id('f12') AND r.status <> 'superseded'),
	ARRAY[3.90, -0.77], 'statements: September 3.90, October -0.77');
SELECT is((SELECT array_agg(v.verified ORDER BY r.period) FROM settle.run r, LATERAL settle.verify_run(r.run_id) v
            WHERE r.reseller_id = settle.reseller_id('f12') AND r.status <> 'superseded'),
	ARRAY[true, true], 'verify_run true on both runs after the rate arrived');

SELECT * FROM finish();
ROLLBACK;
