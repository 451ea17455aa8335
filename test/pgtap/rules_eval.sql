-- Commission rules: hand-computed scenarios.  Every
-- expected number below is worked out in the comment beside it.
BEGIN;
SELECT plan(86);

CREATE TEMP TABLE r (name text PRIMARY KEY, rule settle.rule NOT NULL);
INSERT INTO r VALUES
('main', $$
# Acme reseller agreement 2026: every line is a clause of the contract
currency USD
tiers spend on customer monthly spend all_units
  from 0 to 10000 pay 5%
  from 10000 to 50000 pay 7%
  from 50000 pay 9%
tiers spend_g on customer monthly spend graduated
  from 0 to 10000 pay 5%
  from 10000 to 50000 pay 7%
  from 50000 pay 9%
when sku "ecs.g7.large" pay 12%      -- premium instance family
when product ecs pay 10%
when product ecs and region cn-hangzhou pay 11%
when category compute pay 8%
when product rds pay tiers spend
when product polardb pay tiers spend_g
when category storage pay 4% with cap 100 per line
when product waf pay 1% with floor 2 per line
when segment enterprise pay 6.5%
when tag env = prod pay 6%
when charge purchase pay 2%
otherwise pay 3%
$$),
('capped', $$currency USD
cap 1000 per customer per period
cap 250 per reseller per period
otherwise pay 10%$$),
('fixed', $$currency USD
when product support pay 200 per month prorated by active days
when product sls pay 1.5 per line
otherwise pay 31 per month$$),
('jpy', 'currency JPY rounding half_even otherwise pay 3%'),
('kwd_even', 'currency KWD otherwise pay 2.5%'),
('kwd_up', 'currency KWD rounding half_up otherwise pay 2.5%'),
('usd_up', 'currency USD rounding half_up otherwise pay 10%'),
('usd_even', 'currency USD otherwise pay 10%'),
('usd_down', 'currency USD rounding down otherwise pay 10%'),
('list', 'currency USD basis list_cost eligible usage, tax otherwise pay 10%'),
('paid', 'currency USD basis amount_paid otherwise pay 10%'),
('refund', 'currency USD refunds reverse at original rate within 90 days otherwise pay 5%');

CREATE TEMP VIEW main AS SELECT rule FROM r WHERE name = 'main';

-- Precedence: sku beats product beats category beats default
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'ecs', category => 'compute',
	sku => 'ecs.g7.large', billed_cost => 1000)), 120::numeric, 'sku clause wins: 1000 x 12% = 120');
SELECT is((SELECT clause_text FROM settle.evaluate_rule((TABLE main), product => 'ecs', category => 'compute',
	sku => 'ecs.g7.large', billed_cost => 1000)), 'when sku ecs.g7.large pay 12%', 'the sku clause is reported');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'ecs', category => 'compute',
	sku => 'ecs.c6.large', billed_cost => 1000)), 100::numeric, 'product beats category: 1000 x 10% = 100');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'ack', category => 'compute',
	billed_cost => 1000)), 80::numeric, 'category beats default: 1000 x 8% = 80');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'sls', category => 'other',
	billed_cost => 1000)), 30::numeric, 'otherwise: 1000 x 3% = 30');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'ecs', category => 'compute',
	region => 'cn-hangzhou', billed_cost => 1000)), 110::numeric, 'product + region beats product: 1000 x 11% = 110');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'ack', category => 'compute',
	segment => 'enterprise', billed_cost => 1000)), 80::numeric, 'category (level 1) beats a segment-only clause');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'sls', category => 'other',
	segment => 'enterprise', billed_cost => 1000)), 65::numeric, 'segment clause: 1000 x 6.5% = 65');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'sls', category => 'other',
	tags => '{"env": "prod", "team": "x"}', billed_cost => 1000)), 60::numeric, 'tag env=prod: 1000 x 6% = 60');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'sls', category => 'other',
	tags => '{"env": "dev"}', billed_cost => 1000)), 30::numeric, 'tag env=dev does not match: 3%');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'sls', category => 'other',
	charge_category => 'Purchase', billed_cost => 1000)), 20::numeric, 'charge purchase clause: 1000 x 2% = 20');

-- Tiers, all units: the band the customer's monthly spend falls in applies to the whole line
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'rds', category => 'database',
	billed_cost => 1000, customer_spend => 9999.99)), 50::numeric, 'all-units below 10000: 5% of 1000 = 50');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'rds', category => 'database',
	billed_cost => 1000, customer_spend => 10000)), 70::numeric, 'all-units exactly at 10000: band 2 (7%) = 70');
SELECT is((SELECT tier FROM settle.evaluate_rule((TABLE main), product => 'rds', category => 'database',
	billed_cost => 1000, customer_spend => 10000)), 2, 'exactly at the threshold reaches tier 2');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'rds', category => 'database',
	billed_cost => 1000, customer_spend => 50000)), 90::numeric, 'all-units exactly at 50000: tier 3 (9%) = 90');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'rds', category => 'database',
	billed_cost => 60000, customer_spend => 60000)), 5400::numeric, 'all-units on 60000: 60000 x 9% = 5400');

-- Tiers, graduated, on the same data: each band at its own rate
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => 60000, customer_spend_before => 0)), 4200::numeric,
	'graduated on 60000: 10000 x 5% + 40000 x 7% + 10000 x 9% = 500 + 2800 + 900 = 4200');
SELECT is((SELECT sum(e.commission) FROM (VALUES (0, 30000), (30000, 30000)) AS l(before, amount),
	settle.evaluate_rule((TABLE main), product => 'polardb', billed_cost => l.amount, customer_spend_before => l.before) e),
	4200::numeric, 'graduated over two lines of 30000: 1900 + 2300 = 4200, the same as on the total');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => 2000, customer_spend_before => 9000)), 120::numeric, 'graduated across 10000: 1000 x 5% + 1000 x 7% = 120');
SELECT is((SELECT tier FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => 2000, customer_spend_before => 9000)), 2, 'graduated line crossing into band 2 reports tier 2');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => 1000, customer_spend_before => 10000)), 70::numeric, 'graduated starting exactly at 10000: all at 7% = 70');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => 1000, customer_spend_before => 9000)), 50::numeric, 'graduated ending exactly at 10000: all at 5% = 50');
SELECT is((SELECT tier FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => 1000, customer_spend_before => 9000)), 1, 'ending exactly at the threshold stays in tier 1');

SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => -2000, customer_spend_before => 11000)), -120::numeric,
	'graduated refund of 2000 from 11000 back to 9000: -(1000 x 7% + 1000 x 5%) = -120');
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'polardb', category => 'database',
	billed_cost => -500, customer_spend_before => 200)), -25::numeric,
	'graduated refund below zero spend stays in the first band: -500 x 5% = -25');
SELECT is((SELECT (tier, commission)::text FROM settle.evaluate_rule(
	'currency USD tiers v on reseller monthly volume all_units from 0 to 1000 pay 1% from 1000 pay 2% otherwise pay tiers v',
	billed_cost => 500, reseller_volume => 999.5)), '(1,5)', 'reseller volume 999.5: tier 1, 500 x 1% = 5');
SELECT is((SELECT (tier, commission)::text FROM settle.evaluate_rule(
	'currency USD tiers r on reseller monthly spend all_units from 0 to 100000 pay 2% from 100000 pay 3% otherwise pay tiers r',
	billed_cost => 500, reseller_spend => 100000)), '(2,15)', 'reseller spend exactly 100000: tier 2, 500 x 3% = 15');

-- Caps and floors per line
SELECT is((SELECT commission FROM settle.evaluate_rule((TABLE main), product => 'oss', category => 'storage',
	billed_cost => 2000)), 80::numeric, 'storage cap not hit: 2000 x 4% = 80');
SELECT is((SELECT (commission, limit_applied)::text FROM settle.evaluate_rule((TABLE main), product => 'oss',
	category => 'storage', billed_cost => 3000)), '(100,line_cap)', 'storage cap hit: 3000 x 4% = 120, capped at 100');
SELECT is((SELECT (commission_before_limits, commission, limit_applied)::text FROM settle.evaluate_rule((TABLE main),
	product => 'oss', category => 'storage', billed_cost => 2500)), '(100,100,)', 'exactly at the cap: 100, no limit applied');
SELECT is((SELECT (commission, limit_applied)::text FROM settle.evaluate_rule((TABLE main), product => 'waf',
	category => 'security', billed_cost => 100)), '(2,line_floor)', 'floor: 100 x 1% = 1, raised to the floor 2');
SELECT is((SELECT (commission, limit_applied)::text FROM settle.evaluate_rule((TABLE main), product => 'waf',
	category => 'security', billed_cost => 500)), '(5,)', 'floor not hit: 500 x 1% = 5');

-- Caps per customer and per reseller per period
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'capped'),
	billed_cost => 2000)), 200::numeric, 'period caps not hit: 2000 x 10% = 200');
SELECT is((SELECT (commission, limit_applied)::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'capped'),
	billed_cost => 5000, customer_commission_to_date => 800)), '(200,customer_cap)',
	'customer cap 1000 with 800 used: 500 limited to 200');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'capped'),
	billed_cost => 5000, customer_commission_to_date => 1000)), 0::numeric, 'customer cap used up: 0');
SELECT is((SELECT (commission, limit_applied)::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'capped'),
	billed_cost => 5000, reseller_commission_to_date => 100)), '(150,reseller_cap)',
	'reseller cap 250 with 100 used: 500 limited to 150');

-- Fixed amounts and proration
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'support',
	billed_cost => 500, active_days => 17, days_in_month => 31)), 109.6774193548387097::numeric,
	'200 per month for 17 of 31 days: 3400/31 = 109.67741935483870967..., held to 16 places');
SELECT is((SELECT commission_rounded FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'support',
	billed_cost => 500, active_days => 17, days_in_month => 31)), 109.68::numeric, '17/31 of 200 rounds to 109.68');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'support',
	billed_cost => 500, active_days => 31, days_in_month => 31)), 200::numeric, 'a full month earns the full 200');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'support',
	billed_cost => 500, active_days => 14, days_in_month => 28)), 100::numeric, '14 of 28 days: 100');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'sls',
	billed_cost => 0.01)), 1.5::numeric, '1.5 per line whatever the amount');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'sls',
	billed_cost => -3)), -1.5::numeric, 'a refund line reverses the fixed amount');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'fixed'), product => 'x',
	billed_cost => 10)), 31::numeric, 'per month without proration: 31');

-- Rounding: JPY (0 decimals), KWD (3 decimals), half-even ties vs half-up
SELECT is((SELECT (commission, commission_rounded)::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'jpy'),
	billed_cost => 1234)), '(37.02,37)', 'JPY: 1234 x 3% = 37.02 rounds to 37');
SELECT is((SELECT commission_rounded FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'jpy'),
	billed_cost => 50)), 2::numeric, 'JPY tie 1.5 rounds half-even to 2');
SELECT is((SELECT commission_rounded FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'jpy'),
	billed_cost => 150)), 4::numeric, 'JPY tie 4.5 rounds half-even to 4');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'kwd_even'),
	billed_cost => 12.345)), '0.309', 'KWD: 12.345 x 2.5% = 0.308625 rounds to 0.309 (three decimals)');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'kwd_even'),
	billed_cost => 0.5)), '0.012', 'KWD tie 0.0125 rounds half-even to 0.012');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'kwd_up'),
	billed_cost => 0.5)), '0.013', 'KWD tie 0.0125 rounds half-up to 0.013');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'usd_even'),
	billed_cost => 23.45)), '2.34', 'USD tie 2.345 rounds half-even to 2.34');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'usd_even'),
	billed_cost => 23.55)), '2.36', 'USD tie 2.355 rounds half-even to 2.36');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'usd_up'),
	billed_cost => 23.45)), '2.35', 'USD tie 2.345 rounds half-up to 2.35');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'usd_down'),
	billed_cost => 23.49)), '2.34', 'USD 2.349 rounds down to 2.34');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'usd_even'),
	billed_cost => -23.45)), '-2.34', 'USD refund tie -2.345 rounds half-even to -2.34');
SELECT is((SELECT commission_rounded::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'usd_up'),
	billed_cost => -23.45)), '-2.35', 'USD refund tie -2.345 rounds half-up (away from zero) to -2.35');
SELECT is(ARRAY[settle.round_money(1.005, 2), settle.round_money(1.015, 2), settle.round_money(1.005, 2, 'half_up'),
	settle.round_money(1.009, 2, 'down'), settle.round_money(2.5, 0), settle.round_money(3.5, 0),
	settle.round_money(0.0005, 3), settle.round_money(0.0015, 3)],
	ARRAY[1.00, 1.02, 1.01, 1.00, 2, 4, 0.000, 0.002]::numeric[], 'round_money ties in every mode and minor unit');

SELECT is(ARRAY[settle.round_money(2.355, 2, 'down'), settle.round_money(-2.345, 2, 'down'),
	settle.round_money(1.5, 0, 'half_up'), settle.round_money(1.5, 0, 'down'), settle.round_money(4.5, 0, 'half_up'),
	settle.round_money(0.0125, 3, 'down'), settle.round_money(0.308625, 3, 'half_up'), settle.round_money(0.308625, 3, 'down')],
	ARRAY[2.35, -2.34, 2, 1, 5, 0.012, 0.309, 0.308]::numeric[], 'the rounding table of docs/rules.md');

-- Basis and eligibility
SELECT is((SELECT (status, commission)::text FROM settle.evaluate_rule((TABLE main), product => 'ecs',
	charge_category => 'Tax', billed_cost => 1000)), '(not_eligible,0)', 'tax is not eligible by default');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'list'),
	charge_category => 'Tax', billed_cost => 80, list_cost => 200)), 20::numeric, 'list cost basis, tax eligible: 200 x 10%');
SELECT is((SELECT (status, commission)::text FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'list'),
	charge_category => 'Purchase', list_cost => 200)), '(not_eligible,0)', 'purchase not eligible when not listed');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'paid'),
	billed_cost => 80, list_cost => 200, amount_paid => 75.5)), 7.55::numeric, 'amount paid basis: 75.5 x 10% = 7.55');
SELECT throws_ok($$SELECT * FROM settle.evaluate_rule('currency USD otherwise pay 1%', billed_cost => 1.12345678901234567)$$,
	'22023', NULL, 'an amount with more than 16 decimals is refused, not rounded');
SELECT is((SELECT (status, commission)::text FROM settle.evaluate_rule('currency USD otherwise pay 1%',
	billed_cost => 1.123456789)), '(ok,0.01123456789)', 'an amount of 9 decimals: 1.123456789 x 1% exactly');

-- Refunds: reversed at the rate of the version in force for the original charge
SET LOCAL settle.reason = 'rules test fixtures';
DO $$BEGIN
	PERFORM settle.add_reseller('RT', 'Rules test reseller');
	PERFORM settle.set_agreement('RT', '2026-01-01', 'USD');
END$$;
SELECT lives_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2026-01-01',
	'currency USD refunds reverse at original rate within 90 days otherwise pay 5%', 'H1 schedule', '2026-07-01')$$,
	'version 1 (5%) published for H1');
SELECT lives_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2026-07-01',
	'currency USD refunds reverse at original rate within 90 days otherwise pay 7%', 'H2 schedule')$$,
	'version 2 (7%) published from July');
SELECT is((SELECT (v.version, e.commission)::text
	FROM settle.rule_in_force(settle.reseller_id('RT'), (SELECT max(agreement_id) FROM settle.agreement), '2026-05-15') v,
	settle.evaluate_rule(v.rule, billed_cost => -200, refund_age_days => 80) e), '(1,-10)',
	'an August refund of a May charge: version 1, -200 x 5% = -10 (not -14 at today''s 7%)');
SELECT is((SELECT e.commission
	FROM settle.rule_in_force(settle.reseller_id('RT'), (SELECT max(agreement_id) FROM settle.agreement), '2026-08-15') v,
	settle.evaluate_rule(v.rule, billed_cost => 200) e), 14::numeric, 'an August charge earns version 2: 200 x 7% = 14');
SELECT is((SELECT refund_timing FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'refund'),
	billed_cost => -200, refund_age_days => 90)), 'in_period', 'a refund 90 days after the charge reverses in its own period');
SELECT is((SELECT refund_timing FROM settle.evaluate_rule((SELECT rule FROM r WHERE name = 'refund'),
	billed_cost => -200, refund_age_days => 91)), 'next_adjustment', 'a refund 91 days after goes to the next adjustment period');

-- Publishing: coverage checks
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency USD when product ecs and region a pay 1% when product ecs and segment b pay 2%', 'x')$$,
	'22023', NULL, 'equal-specificity overlap (product+region vs product+segment) refused at publish');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency USD when product ecs pay 1% when product ecs, ack pay 2%', 'x')$$,
	'22023', NULL, 'two product clauses sharing ecs refused at publish');
SELECT is(settle.rule_problems('currency USD when product ecs pay 1% when product ack pay 2% when category compute pay 3%'),
	'{}'::text[], 'disjoint clauses of equal specificity are fine');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency USD tiers t on customer monthly spend all_units from 0 to 100 pay 1% from 200 pay 2% otherwise pay tiers t', 'x')$$,
	'22023', 'rule refused: tier schedule t has a gap between 100 and 200', 'tier gap refused');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency USD tiers t on customer monthly spend all_units from 0 to 300 pay 1% from 200 pay 2% otherwise pay tiers t', 'x')$$,
	'22023', NULL, 'tier overlap refused');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency USD cap 5 per line floor 10 per line otherwise pay 1%', 'x')$$,
	'22023', 'rule refused: cap 5 per line is below floor 10 per line', 'cap below floor refused');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency USD when category quantum pay 1% otherwise pay 1%', 'x')$$,
	'23503', 'rule refused: unknown product category "quantum"', 'unknown product category refused');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2027-01-01',
	'currency XTS otherwise pay 1%', 'x')$$,
	'23503', 'rule refused: unknown currency "XTS"', 'unknown currency refused');
SELECT throws_ok($$SELECT settle.publish_rule('RT', (SELECT max(agreement_id) FROM settle.agreement), '2026-03-01',
	'currency USD otherwise pay 1%', 'x', '2026-04-01')$$,
	'23P01', NULL, 'a range overlapping version 1 is refused');
SELECT throws_ok($$SELECT * FROM settle.rule_in_force(settle.reseller_id('RT'), (SELECT max(agreement_id) FROM settle.agreement), '2025-12-31')$$,
	'P0002', NULL, 'no version in force before the first one');
SELECT throws_ok($$UPDATE settle.rule_version SET reason = 'edited'$$, '42501', NULL, 'published versions cannot be edited');
SELECT is((SELECT count(*)::int FROM settle.rule_version v WHERE v.reseller_id = settle.reseller_id('RT')
	AND v.content_hash = sha256(convert_to(v.rule::text, 'UTF8')) AND v.published_by = session_user
	AND v.reason IN ('H1 schedule', 'H2 schedule')), 2, 'both versions record hash, publisher and reason');

-- Privileges: finance and admin publish; analysts and resellers cannot
SELECT ok(has_function_privilege('settle_finance', 'settle.publish_rule(text,bigint,date,settle.rule,text,date)', 'EXECUTE')
	AND has_function_privilege('settle_admin', 'settle.publish_rule(text,bigint,date,settle.rule,text,date)', 'EXECUTE'),
	'settle_finance and settle_admin may publish rule versions');
SELECT ok(NOT has_function_privilege('settle_analyst', 'settle.publish_rule(text,bigint,date,settle.rule,text,date)', 'EXECUTE')
	AND NOT has_function_privilege('settle_reseller', 'settle.publish_rule(text,bigint,date,settle.rule,text,date)', 'EXECUTE'),
	'analysts and resellers may not publish');
SELECT ok(NOT has_table_privilege('settle_finance', 'settle.rule_version', 'INSERT')
	AND NOT has_table_privilege('settle_admin', 'settle.rule_version', 'UPDATE'),
	'no direct writes to settle.rule_version');
SELECT is((SELECT count(*)::int FROM settle.audit_log WHERE table_name = 'rule_version' AND operation = 'INSERT'
	AND reason IN ('H1 schedule', 'H2 schedule')), 2, 'each publication is in the audit trail with its reason');

-- Round trip: canonical output re-parses to an equal value, for every rule above
SELECT is((SELECT count(*)::int FROM r WHERE (rule::text)::settle.rule OPERATOR(settle.=) rule
	AND ((rule::text)::settle.rule)::text = rule::text), (SELECT count(*)::int FROM r),
	'print -> parse is a fixed point for every rule in the suite');

SELECT * FROM finish();
ROLLBACK;
