-- (This file is named settle_f11_* so that it runs after precision_limit.sql, whose expected
-- floor top-up keys name customer ids 1 and 2: sequences are not rolled back.)
-- Finding F11 of the differential test (test/diff/README.md), seed 1531
-- (DIFF_LINES=800, 11 decimals), shrunk by hand: a per-line floor on a line
-- of negative basis whose commission before limits is 0 comes out positive.
-- It failed on engine version 2; fixed in engine version 3 (per-line limits
-- take the sign of the basis, in evaluate_rule and settle_period alike).
--
-- docs/rules.md section 6: caps and floors "apply to the magnitude of the
-- commission evaluate_rule computes, so a negative basis given to it is
-- limited like a charge"; section 4: a fixed amount takes the sign of the
-- basis ("pay 1.5 per line ... on a refund line of -3: -1.5").  With
-- `eligible usage, credit` and `floor 2 per line`, a Credit line of -10.00
-- at `pay 1%` earns -0.10 before limits and is floored to -2.00 (the engine
-- agrees).  At `pay 0%`, `pay 0 per line` or `pay 0 per month` it earns 0
-- before limits (magnitude 0 < 2) and must be floored to -2.00 as well; the
-- engine gives +2.00: a credit earns positive commission.  Seen in seed 1531:
-- reseller 1, 2027-02, clause "when sku ecs.c6.large, rds.mysql.s2 and
-- product ecs, rds pay 0 per line" with a floor of 0.499 per line, two
-- Credit lines at +0.499 instead of -0.499.
BEGIN;
SELECT plan(2);

SET LOCAL settle.reason = 'F11';

SELECT results_eq($$SELECT p.pay, e.commission_before_limits, e.limit_applied, e.commission
                      FROM unnest(ARRAY['pay 1%', 'pay 0%', 'pay 0 per line', 'pay 0 per month']) WITH ORDINALITY p(pay, n),
                      LATERAL settle.evaluate_rule(format(E'currency USD\neligible usage, credit\nfloor 2 per line\notherwise %s', p.pay)::settle.rule,
                              product => 'ecs', charge_category => 'Credit', billed_cost => -10.00) e
                     ORDER BY n$$,
	$$VALUES ('pay 1%', -0.1, 'line_floor', -2::numeric), ('pay 0%', 0, 'line_floor', -2),
	         ('pay 0 per line', 0, 'line_floor', -2), ('pay 0 per month', 0, 'line_floor', -2)$$,
	'evaluate_rule: a Credit of -10.00 under floor 2 per line is floored to -2.00 whatever it earned before limits');

SELECT settle.add_reseller('f11', 'Reseller f11');
SELECT settle.set_agreement('f11', '2026-01-01', 'USD');
SELECT settle.publish_rule('f11', (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('f11')),
	'2026-01-01', E'currency USD\neligible usage, credit\nwhen product rds pay 0 per line with floor 0.499 per line\notherwise pay 1%'::settle.rule, 'F11');
SELECT settle.add_customer('f11', 'c', 'Customer c', 'standard', '{}');
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, sku_id, region_id, billing_currency, list_cost, billed_cost, original_line_key, tags)
SELECT settle.reseller_id('f11'), k, 1, c.customer_id, sha256(convert_to(k, 'UTF8')), 'PayAsYouGoBill', 'acct-c',
       '2026-01-01', '2026-01-10', '2026-01-11', cc, 'rds', 'rds.mysql.s2', 'cn-west', 'USD', b, b, NULL, '{}'
  FROM settle.customer c, (VALUES ('c/1-usage', 'Usage', 100.00), ('c/2-credit', 'Credit', -10.00)) x(k, cc, b)
 WHERE c.reseller_id = settle.reseller_id('f11');
SELECT count(*) FROM settle.settle_period('2026-01', 'f11');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.unrounded FROM settle.settlement_line l
                      JOIN settle.run r USING (reseller_id, run_id)
                     WHERE r.reseller_id = settle.reseller_id('f11') AND r.status <> 'superseded' ORDER BY 1$$,
	$$VALUES ('c/1-usage', 0.499), ('c/2-credit', -0.499)$$,
	'settle_period: pay 0 per line with floor 0.499 per line: the usage line earns 0.499, the credit -0.499');

SELECT * FROM finish();
ROLLBACK;
