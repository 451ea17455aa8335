-- The 16-decimal limit of basis x rate in settle_period (docs/rules.md
-- section 8, docs/settlement.md "nothing guessed" and "corrections"): what a
-- refused charge, refund reversal and correction write, and what a refused
-- charge still counts for.  Rates of 2.123457% (0.02123457) and 8.127355%
-- (0.08127355) have 8 decimals as a fraction, so an 11-decimal amount times
-- either has 19 decimals and cannot be held; a 2-decimal amount times either
-- has 10.
BEGIN;
SELECT plan(14);

SET LOCAL settle.reason = 'precision limit';

CREATE FUNCTION pg_temp.line(reseller text, cust text, key text, used date, billed numeric,
	product text DEFAULT 'ecs', original text DEFAULT NULL, revision integer DEFAULT 1) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		charge_category, product_code, sku_id, region_id, billing_currency, list_cost, billed_cost,
		original_line_key, tags)
	SELECT r.reseller_id, key, revision, c.customer_id,
	       sha256(convert_to(concat_ws('/', key, revision, billed), 'UTF8')),
	       CASE WHEN original IS NOT NULL THEN 'Refund' ELSE 'PayAsYouGoBill' END, 'acct-' || cust,
	       date_trunc('month', used)::date, used, used + 1, 'Usage', product, 'x', 'cn-west', 'USD',
	       billed, billed, original, '{}'
	  FROM settle.reseller r JOIN settle.customer c ON c.reseller_id = r.reseller_id
	 WHERE r.code = reseller AND c.code = cust
$$;
CREATE FUNCTION pg_temp.reseller(code text, rule text) RETURNS void
LANGUAGE sql AS $$
	SELECT settle.add_reseller(code, 'Reseller ' || code);
	SELECT settle.set_agreement(code, '2026-01-01', 'USD', refund_window_days => 90);
	SELECT settle.publish_rule(code, (SELECT a.agreement_id FROM settle.agreement a
	                                    WHERE a.reseller_id = settle.reseller_id(code)), '2026-01-01',
		rule::settle.rule, 'precision limit');
$$;
CREATE FUNCTION pg_temp.lineage(code text) RETURNS TABLE (period text, line_key text, kind text,
	rule_version integer, clause integer, tier integer, basis numeric, rate numeric, unrounded numeric)
LANGUAGE sql AS $$
	-- a customer's floor top-up is shown by the customer's code, not its id
	-- (ids depend on what else the database holds)
	SELECT period, key, kind, rule_version, clause, tier, basis, rate, unrounded
	  FROM (SELECT r.period, CASE WHEN l.line_key LIKE 'floor:customer:%'
	                              THEN 'floor:customer:' || (SELECT c.code FROM settle.customer c
	                                                          WHERE c.reseller_id = l.reseller_id
	                                                            AND c.customer_id = substr(l.line_key, 16)::bigint)
	                              ELSE l.line_key COLLATE "default" END AS key,
	               l.kind::text AS kind, l.rule_version, l.clause::integer AS clause,
	               l.tier::integer AS tier, l.basis, l.rate, l.unrounded
	          FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
	         WHERE r.reseller_id = settle.reseller_id(code) AND r.status <> 'superseded') x
	 ORDER BY period, key COLLATE "C", kind
$$;

-- ---------------------------------------------------------------------------
-- 1. A refused charge stays eligible: it counts in the all-units total, in the
--    spend before a graduated line, in `commissionable`, and its customer is
--    topped up to the floor.  Both tiers: 0-100 at 1%, 100 and up at
--    2.123457%; a floor of 5 per customer per period.
--    a: 60.00000000001 + 50.00 = 110.00000000001 is in band 2 for both lines;
--       a/1 x 0.02123457 has 19 decimals: refused; a/2 = 50 x 0.02123457 =
--       1.0617285 (band 1 at 1% had the refused line not counted).
--    g: graduated; g/1 spans [0, 150.00000000001): its band-2 part
--       50.00000000001 x 0.02123457 has 19 decimals: refused; g/2 spans
--       [150.00000000001, 160.00000000001), all in band 2: 10 x 0.02123457 =
--       0.2123457 (0.10 at 1% had the refused line not counted).
--    f: one refused line; its customer has a commissionable amount: top-up 5.
--    Floors: a 5 - 1.0617285 = 3.9382715, g 5 - 0.2123457 = 4.7876543, f 5.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('pl_tiers', E'currency USD\nfloor 5 per customer per period\n'
	'tiers au on customer monthly spend all_units\n  from 0 to 100 pay 1%\n  from 100 pay 2.123457%\n'
	'tiers gr on customer monthly spend graduated\n  from 0 to 100 pay 1%\n  from 100 pay 2.123457%\n'
	'when product rds pay tiers gr\notherwise pay tiers au');
SELECT settle.add_customer('pl_tiers', c, 'Customer ' || c, 'standard', '{}') FROM unnest(ARRAY['a', 'f', 'g']) c;
SELECT pg_temp.line('pl_tiers', 'a', 'a/1', '2026-01-10', 60.00000000001);
SELECT pg_temp.line('pl_tiers', 'a', 'a/2', '2026-01-10', 50.00);
SELECT pg_temp.line('pl_tiers', 'f', 'f/1', '2026-01-10', 150.00000000001);
SELECT pg_temp.line('pl_tiers', 'g', 'g/1', '2026-01-10', 150.00000000001, 'rds');
SELECT pg_temp.line('pl_tiers', 'g', 'g/2', '2026-01-10', 10.00, 'rds');

SELECT is((SELECT blocked FROM settle.settle_period('2026-01', 'pl_tiers')), true,
	'a run with a refused line is blocked');
SELECT results_eq($$SELECT line_key, kind, rule_version, clause, tier, basis, rate, unrounded
                      FROM pg_temp.lineage('pl_tiers')$$,
	$$VALUES ('a/1', 'c', 1, NULL, NULL, 60.00000000001, NULL, 0.00),
	         ('a/2', 'c', 1, 2, 2, 50.00, 0.02123457, 1.0617285),
	         ('f/1', 'c', 1, NULL, NULL, 150.00000000001, NULL, 0.00),
	         ('floor:customer:a', 'f', 1, NULL, NULL, 0.00, NULL, 3.9382715),
	         ('floor:customer:f', 'f', 1, NULL, NULL, 0.00, NULL, 5.00),
	         ('floor:customer:g', 'f', 1, NULL, NULL, 0.00, NULL, 4.7876543),
	         ('g/1', 'c', 1, NULL, NULL, 150.00000000001, NULL, 0.00),
	         ('g/2', 'c', 1, 1, 2, 10.00, 0.02123457, 0.2123457)$$,
	'refused lines: rule version and basis kept, no clause, tier or rate, 0; they count in the all-units total, the graduated spend before, and for the floors');
SELECT results_eq($$SELECT lines, commission, adjustments, total, commissionable FROM settle.statement st
                      JOIN settle.run r USING (reseller_id, run_id) WHERE r.reseller_id = settle.reseller_id('pl_tiers')$$,
	$$VALUES (8::bigint, 1.27, 13.73, 15.00, 420.00)$$,
	'statement: 1.0617285 + 0.2123457 commission, 13.7259258 of top-ups, total 15.00; commissionable counts the refused lines (420.00000000003)');
SELECT results_eq($$SELECT scope_key COLLATE "default", severity::text, payload->>'detail' LIKE '%(precision)%'
                      FROM settle.exception WHERE reseller_id = settle.reseller_id('pl_tiers') AND kind = 'validation'
                     ORDER BY scope_key COLLATE "C"$$,
	$$VALUES ('line:a/1', 'error', true), ('line:f/1', 'error', true), ('line:g/1', 'error', true)$$,
	'one validation exception of severity error per refused line, naming the precision');

-- ---------------------------------------------------------------------------
-- 2. Refunds and corrections at 8.127355%.  January: c/1 100.00 -> 8.127355,
--    c/2 200.00 -> 16.25471, c/3 300.00 -> 24.382065.  February: r/2 refunds
--    -33.33333333333 of c/2: x 0.08127355 has 19 decimals, it reverses
--    nothing.  January is locked, then c/2 is revised to 150.00 (corrects by
--    150 x 0.08127355 - 16.25471 = 12.1910325 - 16.25471 = -4.0636775) and c/3
--    to 33.33333333333 (19 decimals: corrects by 0).
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('pl_rev', E'currency USD\nrefunds reverse at original rate within 90 days\notherwise pay 8.127355%');
SELECT settle.add_customer('pl_rev', 'c', 'Customer c', 'standard', '{}');
SELECT pg_temp.line('pl_rev', 'c', 'c/1', '2026-01-10', 100.00);
SELECT pg_temp.line('pl_rev', 'c', 'c/2', '2026-01-11', 200.00);
SELECT pg_temp.line('pl_rev', 'c', 'c/3', '2026-01-12', 300.00);
SELECT pg_temp.line('pl_rev', 'c', 'r/2', '2026-02-20', -33.33333333333, original => 'c/2');
SELECT is((SELECT blocked FROM settle.settle_period('2026-01', 'pl_rev')), false, 'January settles, not blocked');
SELECT is((SELECT blocked FROM settle.settle_period('2026-02', 'pl_rev')), true, 'February: the refused reversal blocks the run');
SELECT results_eq($$SELECT line_key, kind, rule_version, clause, tier, basis, rate, unrounded
                      FROM pg_temp.lineage('pl_rev') WHERE period = '2026-02'$$,
	$$VALUES ('r/2', 'r', 1, 1, NULL::integer, -33.33333333333, 0.08127355, 0.00)$$,
	'a refused reversal keeps its original''s version, clause and rate and reverses 0');
SELECT ok((SELECT payload->>'detail' FROM settle.exception
            WHERE reseller_id = settle.reseller_id('pl_rev') AND kind = 'validation' AND scope_key = 'line:r/2')
          LIKE '%(precision): it reverses nothing%', 'its exception names the precision');

SELECT is((SELECT (settle.lock_run((settle.approve_run(run_id, 'precision limit')).run_id, 'precision limit')).status::text
             FROM settle.run WHERE reseller_id = settle.reseller_id('pl_rev') AND period = '2026-01'), 'locked',
	'January approved and locked');
SELECT pg_temp.line('pl_rev', 'c', 'c/2', '2026-01-11', 150.00, revision => 2);
SELECT pg_temp.line('pl_rev', 'c', 'c/3', '2026-01-12', 33.33333333333, revision => 2);
SELECT is((SELECT blocked FROM settle.settle_period('2026-02', 'pl_rev')), true,
	'February settled again with the corrections: blocked');
SELECT results_eq($$SELECT line_key, kind, rule_version, clause, tier, basis, rate, unrounded
                      FROM pg_temp.lineage('pl_rev') WHERE period = '2026-02'$$,
	$$VALUES ('c/2', 'x', 1, 1, NULL::integer, 150.00, 0.08127355, -4.0636775),
	         ('c/3', 'x', 1, 1, NULL, 33.33333333333, 0.08127355, 0.00),
	         ('r/2', 'r', 1, 1, NULL, -33.33333333333, 0.08127355, 0.00)$$,
	'a refused correction is a correction line of 0 with the new basis and the original rate; the other corrects by -4.0636775');
SELECT ok((SELECT payload->>'detail' FROM settle.exception
            WHERE reseller_id = settle.reseller_id('pl_rev') AND kind = 'validation' AND scope_key = 'line:c/3')
          LIKE '%(precision): it is not corrected%', 'the refused correction''s exception names the precision');
SELECT results_eq($$SELECT st.corrections, st.refunds, st.total FROM settle.statement st JOIN settle.run r USING (reseller_id, run_id)
                     WHERE r.reseller_id = settle.reseller_id('pl_rev') AND r.period = '2026-02' AND r.status <> 'superseded'$$,
	$$VALUES (-4.06, 0.00, -4.06)$$, 'February statement: corrections -4.06, refunds 0.00');
SELECT is((SELECT sum(unrounded) FROM pg_temp.lineage('pl_rev') WHERE period = '2026-01'), 48.764130,
	'the locked January is unchanged: 8.127355 + 16.25471 + 24.382065');

SELECT * FROM finish();
ROLLBACK;
