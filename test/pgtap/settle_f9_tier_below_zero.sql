-- Finding F9 of the differential test (test/diff/README.md): a tier measure
-- below 0.  With `eligible usage, credit`, a customer's credits can outweigh
-- the charges, so the spend a tier schedule measures falls below 0.  Engine
-- version 2 put an all-units total below 0 in no band (evaluate_rule status
-- no_tier: the clause matched, the line earned nothing, no line cap or floor
-- applied) while it took the part of a graduated line below 0 at the first
-- band's rate: the two tier modes treated the same month differently.
-- Decided and fixed in engine version 3: the first band, which starts at 0,
-- extends below 0 in both modes (docs/rules.md section 5, "A measure below
-- 0"), and line caps and floors apply with the sign of the basis (section 6,
-- finding F11).
--
-- Bands 0-10000 at 5%, 10000-50000 at 7%, 50000 and up at 9%, `floor 2 per
-- line`, `cap 100 per line`.  One customer's month, in line key order:
--   a/1-usage    1000.00  5% = 50.00
--   a/2-credit  -3000.00  5% = -150.00, capped to -100.00 (line_cap)
--   a/3-usage      20.00  5% = 1.00, floored to 2.00 (line_floor)
--   a/4-zero        0.00  0 (no floor on a zero basis), tier 1
-- spend -1980.00.  All units: the total -1980 is in band 1 (5%).  Graduated:
-- a/1 occupies [0, 1000), a/2 [-2000, 1000), a/3 [-2000, -1980), a/4 sits at
-- -1980: every part in band 1.  Both months earn 50 - 100 + 2 + 0 = -48.00,
-- a negative total that carries forward.  Engine version 2 gave the
-- all-units month 0 (every line no_tier) and the graduated one -48.00.
BEGIN;
SELECT plan(9);

SET LOCAL settle.reason = 'F9';

CREATE TEMP TABLE f9_rule (mode text PRIMARY KEY, rule settle.rule);
INSERT INTO f9_rule
SELECT m, format(E'currency USD\neligible usage, credit\nfloor 2 per line\ncap 100 per line\n'
                 'tiers s on customer monthly spend %s from 0 to 10000 pay 5%% from 10000 to 50000 pay 7%% from 50000 pay 9%%\n'
                 'otherwise pay tiers s', m)::settle.rule
  FROM unnest(ARRAY['all_units', 'graduated']) m;

-- evaluate_rule: all units, customer spend -1980 (the month above)
SELECT results_eq($$SELECT x.k, e.status, e.tier, e.rate_percent, e.commission_before_limits, e.limit_applied, e.commission
                      FROM (VALUES ('a/1-usage', 'Usage', 1000.00), ('a/2-credit', 'Credit', -3000.00),
                                   ('a/3-usage', 'Usage', 20.00), ('a/4-zero', 'Usage', 0.00)) x(k, cc, b),
                      LATERAL settle.evaluate_rule((SELECT rule FROM f9_rule WHERE mode = 'all_units'),
                              product => 'ecs', charge_category => x.cc, billed_cost => x.b, customer_spend => -1980.00) e
                     ORDER BY x.k$$,
	$$VALUES ('a/1-usage', 'ok', 1, 5::numeric, 50::numeric, NULL::text, 50::numeric),
	         ('a/2-credit', 'ok', 1, 5, -150, 'line_cap', -100),
	         ('a/3-usage', 'ok', 1, 5, 1, 'line_floor', 2),
	         ('a/4-zero', 'ok', 1, 5, 0, NULL, 0)$$,
	'evaluate_rule, all units, customer spend -1980: tier 1 (5%) for every line; line cap and floor apply');

-- evaluate_rule: graduated, each line at the spend before it
SELECT results_eq($$SELECT x.k, e.status, e.tier, e.rate_percent, e.commission_before_limits, e.limit_applied, e.commission
                      FROM (VALUES ('a/1-usage', 'Usage', 1000.00, 0.00), ('a/2-credit', 'Credit', -3000.00, 1000.00),
                                   ('a/3-usage', 'Usage', 20.00, -2000.00), ('a/4-zero', 'Usage', 0.00, -1980.00)) x(k, cc, b, before),
                      LATERAL settle.evaluate_rule((SELECT rule FROM f9_rule WHERE mode = 'graduated'),
                              product => 'ecs', charge_category => x.cc, billed_cost => x.b, customer_spend_before => x.before) e
                     ORDER BY x.k$$,
	$$VALUES ('a/1-usage', 'ok', 1, 5::numeric, 50::numeric, NULL::text, 50::numeric),
	         ('a/2-credit', 'ok', 1, 5, -150, 'line_cap', -100),
	         ('a/3-usage', 'ok', 1, 5, 1, 'line_floor', 2),
	         ('a/4-zero', 'ok', 1, 5, 0, NULL, 0)$$,
	'evaluate_rule, graduated: [0,1000) 50; [-2000,1000) -150 capped to -100; [-2000,-1980) 1 floored to 2; a zero line at -1980 in tier 1');

-- the other measures, and a total below 0 that crosses no threshold on the way back
SELECT results_eq($$SELECT e.status, e.tier, e.commission
                      FROM (VALUES (1, 'currency USD tiers r on reseller monthly spend all_units from 0 to 100000 pay 2% from 100000 pay 3% otherwise pay tiers r'),
                                   (2, 'currency USD tiers r on reseller monthly spend graduated from 0 to 100000 pay 2% from 100000 pay 3% otherwise pay tiers r')) r(n, rule),
                      LATERAL settle.evaluate_rule(r.rule::settle.rule, billed_cost => 500.00,
                              reseller_spend => -0.01, reseller_spend_before => -100000.00) e
                     ORDER BY r.n$$,
	$$VALUES ('ok', 1, 10.00), ('ok', 1, 10.00)$$,
	'reseller spend -0.01 (all units) and -100000 before (graduated): tier 1, 500 x 2% = 10.00');

-- a rule value whose bands leave a gap (publishing refuses it) still has no band for a measure in the gap
SELECT is((SELECT (status, tier, commission)::text FROM settle.evaluate_rule(
	'currency USD tiers t on customer monthly spend all_units from 0 to 100 pay 1% from 200 pay 2% otherwise pay tiers t',
	billed_cost => 10, customer_spend => 150)), '(no_tier,,0)', 'a measure in a gap between bands: no_tier, commission 0');

-- settle_period: the same month under each mode, one reseller each
CREATE FUNCTION pg_temp.reseller(code text, mode text) RETURNS void
LANGUAGE sql AS $$
	SELECT settle.add_reseller(code, 'Reseller ' || code);
	SELECT settle.set_agreement(code, '2026-01-01', 'USD');
	SELECT settle.publish_rule(code, (SELECT a.agreement_id FROM settle.agreement a
	                                    WHERE a.reseller_id = settle.reseller_id(code)), '2026-01-01',
		(SELECT rule FROM f9_rule WHERE f9_rule.mode = reseller.mode), 'F9');
	SELECT settle.add_customer(code, 'a', 'Customer a', 'standard', '{}');
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		charge_category, product_code, sku_id, region_id, billing_currency, list_cost, billed_cost,
		original_line_key, tags)
	SELECT c.reseller_id, x.k, 1, c.customer_id, sha256(convert_to(reseller.code || '/' || x.k, 'UTF8')),
	       'PayAsYouGoBill', 'acct-' || reseller.code, '2026-01-01', '2026-01-10', '2026-01-11', x.cc, 'ecs', 'x',
	       'cn-west', 'USD', x.b, x.b, NULL, '{}'
	  FROM settle.customer c,
	       (VALUES ('a/1-usage', 'Usage', 1000.00), ('a/2-credit', 'Credit', -3000.00),
	               ('a/3-usage', 'Usage', 20.00), ('a/4-zero', 'Usage', 0.00)) x(k, cc, b)
	 WHERE c.reseller_id = settle.reseller_id(reseller.code);
$$;
SELECT pg_temp.reseller('f9_all', 'all_units');
SELECT pg_temp.reseller('f9_grad', 'graduated');
SELECT count(*) FROM unnest(ARRAY['f9_all', 'f9_grad']) r, LATERAL settle.settle_period('2026-01', r);

CREATE TEMP VIEW f9 AS
	SELECT rs.code, r.run_id, l.line_key, l.kind, l.tier, l.rate, l.unrounded, l.rounded
	  FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id) JOIN settle.reseller rs USING (reseller_id)
	 WHERE rs.code LIKE 'f9\_%' AND r.status <> 'superseded';
SELECT results_eq($$SELECT line_key COLLATE "default", kind::text, tier::integer, unrounded, rounded FROM f9 WHERE code = 'f9_all' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('a/1-usage', 'c', 1, 50.00, 50.00), ('a/2-credit', 'c', 1, -100.00, -100.00),
	         ('a/3-usage', 'c', 1, 2.00, 2.00), ('a/4-zero', 'c', 1, 0.00, 0.00)$$,
	'settle_period, all units, spend -1980.00: every line in tier 1; 50, -100 (line cap), 2 (line floor), 0');
SELECT results_eq($$SELECT line_key COLLATE "default", kind::text, tier::integer, unrounded, rounded FROM f9 WHERE code = 'f9_grad' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('a/1-usage', 'c', 1, 50.00, 50.00), ('a/2-credit', 'c', 1, -100.00, -100.00),
	         ('a/3-usage', 'c', 1, 2.00, 2.00), ('a/4-zero', 'c', 1, 0.00, 0.00)$$,
	'settle_period, graduated: the same lines, the same commission');
SELECT results_eq($$SELECT rs.code COLLATE "default", st.lines, st.commissionable, st.commission, st.total,
                           st.carry_forward_out, st.net_payout
                      FROM settle.statement st JOIN settle.run r USING (reseller_id, run_id) JOIN settle.reseller rs USING (reseller_id)
                     WHERE rs.code LIKE 'f9\_%' AND r.status <> 'superseded' ORDER BY rs.code COLLATE "C"$$,
	$$VALUES ('f9_all', 4::bigint, -1980.00, -48.00, -48.00, -48.00, 0.00),
	         ('f9_grad', 4::bigint, -1980.00, -48.00, -48.00, -48.00, 0.00)$$,
	'statements: commission and total -48.00 in both modes, carried forward, nothing paid');
SELECT is((SELECT array_agg(v.verified ORDER BY rs.code) FROM settle.run r JOIN settle.reseller rs USING (reseller_id),
                  LATERAL settle.verify_run(r.run_id) v
            WHERE rs.code LIKE 'f9\_%' AND r.status <> 'superseded'),
	ARRAY[true, true], 'verify_run: both runs re-derive as recorded');
SELECT is((SELECT array_agg(r.engine_version ORDER BY rs.code) FROM settle.run r JOIN settle.reseller rs USING (reseller_id)
            WHERE rs.code LIKE 'f9\_%' AND r.status <> 'superseded'),
	ARRAY[3, 3], 'both runs made by engine version 3');

SELECT * FROM finish();
ROLLBACK;
