-- Regressions of defects found in settle_period, verify_run, run_diff and
-- explain, and the decisions docs/rules.md and docs/settlement.md state for
-- floors and refund reversals.  Every number is worked out in the comments.
BEGIN;
SELECT plan(62);

SET LOCAL settle.reason = 'defect regressions';

-- A bill line as ingestion writes it.  A negative amount is a Credit line;
-- a line with an original is a refund of it.
CREATE FUNCTION pg_temp.line(reseller text, customer text, key text, day date, billed numeric,
	product text DEFAULT 'ecs', sku text DEFAULT 'ecs.g7', region text DEFAULT 'cn-west',
	charge text DEFAULT NULL, tags jsonb DEFAULT '{}', currency text DEFAULT 'USD',
	revision integer DEFAULT 1, original text DEFAULT NULL, list numeric DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		charge_category, product_code, sku_id, region_id, billing_currency, list_cost, billed_cost,
		original_line_key, tags)
	SELECT r.reseller_id, line.key, line.revision, c.customer_id,
	       sha256(convert_to(concat_ws('/', line.key, line.revision, line.billed, line.customer, line.region,
	                                   line.tags), 'UTF8')),
	       CASE WHEN line.original IS NOT NULL THEN 'Refund' ELSE 'PayAsYouGoBill' END, 'acct-' || line.customer,
	       date_trunc('month', line.day)::date, line.day, line.day + 1,
	       coalesce(line.charge, CASE WHEN line.billed < 0 THEN 'Credit' ELSE 'Usage' END), line.product,
	       line.sku, line.region, line.currency, coalesce(line.list, line.billed), line.billed, line.original, line.tags
	  FROM settle.reseller r JOIN settle.customer c ON c.reseller_id = r.reseller_id
	 WHERE r.code = line.reseller AND c.code = line.customer
$$;
CREATE FUNCTION pg_temp.reseller(code text, rule text, refund_window integer DEFAULT 90) RETURNS void
LANGUAGE sql AS $$
	SELECT settle.add_reseller(code, 'Reseller ' || code);
	SELECT settle.set_agreement(code, '2026-01-01', 'USD', refund_window_days => refund_window);
	SELECT settle.publish_rule(code, (SELECT a.agreement_id FROM settle.agreement a
	                                    WHERE a.reseller_id = settle.reseller_id(code)),
		'2026-01-01', rule::settle.rule, 'defect regressions');
$$;
CREATE FUNCTION pg_temp.run(code text, p text) RETURNS bigint LANGUAGE sql AS $$
	SELECT r.run_id FROM settle.run r
	 WHERE r.reseller_id = settle.reseller_id(code) AND r.period = p AND r.status <> 'superseded'
$$;

-- ---------------------------------------------------------------------------
-- 1. settle_period evaluates a line with the tags evaluate_rule would be
--    given: the bill line's own, then its customer's under other keys
--    (customer.tags || bill_line.tags).  One reseller per condition kind of
--    the rule language, each with the same twelve lines of 100.00; a line
--    matches the "when" clause (3.5%) only through that reseller's condition,
--    otherwise it earns 1.5%.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('k_' || kind, format(E'currency USD\n%s\notherwise pay 1.5%%', clauses))
  FROM (VALUES ('sku', 'when sku "s.special" pay 3.5%'), ('product', 'when product rds pay 3.5%'),
               ('category', 'when category storage pay 3.5%'), ('charge', 'when charge purchase pay 3.5%'),
               ('region', 'when region cn-east pay 3.5%'), ('segment', 'when segment enterprise pay 3.5%'),
               ('tag', E'when tag env = prod pay 3.5%\nwhen tag env = prod and tag tier = 2 pay 2.5%')) k(kind, clauses);
SELECT settle.add_customer(r.code, c.code, 'Customer ' || c.code, c.segment, c.tags)
  FROM settle.reseller r,
       (VALUES ('ent', 'enterprise', '{}'::jsonb), ('dev', 'standard', '{"env": "dev"}'),
               ('prd', 'standard', '{"env": "prod"}')) c(code, segment, tags)
 WHERE r.code LIKE 'k\_%';
SELECT pg_temp.line(r.code, x.customer, r.code || '/' || x.key, '2026-09-10', 100.00, product => x.product,
	sku => x.sku, region => x.region, charge => x.charge, tags => x.tags)
  FROM settle.reseller r,
       (VALUES ('01-plain', 'dev', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{}'::jsonb),
               ('02-sku', 'dev', 'ecs', 's.special', 'cn-west', 'Usage', '{}'),
               ('03-product', 'dev', 'rds', 'rds.x', 'cn-west', 'Usage', '{}'),
               ('04-category', 'dev', 'oss', 'oss.std', 'cn-west', 'Usage', '{}'),
               ('05-charge', 'dev', 'ecs', 'ecs.g7', 'cn-west', 'Purchase', '{}'),
               ('06-region', 'dev', 'ecs', 'ecs.g7', 'cn-east', 'Usage', '{}'),
               ('07-segment', 'ent', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{}'),
               ('08-tag-line', 'dev', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{"env": "prod"}'),
               ('09-tag-customer', 'prd', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{}'),
               ('10-tag-line-wins', 'prd', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{"env": "dev"}'),
               ('11-tag-merged', 'prd', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{"team": "a"}'),
               ('12-tag-number', 'dev', 'ecs', 'ecs.g7', 'cn-west', 'Usage', '{"env": "prod", "tier": 2}'))
       x(key, customer, product, sku, region, charge, tags)
 WHERE r.code LIKE 'k\_%';
SELECT is((SELECT count(*) FROM settle.settle_period('2026-09', r.code)), 1::bigint, 'settles ' || r.code)
  FROM settle.reseller r WHERE r.code LIKE 'k\_%' ORDER BY r.code;

CREATE TEMP VIEW k_lineage AS
	SELECT l.line_key, l.clause::integer AS clause, l.unrounded
	  FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
	  JOIN settle.reseller rs USING (reseller_id)
	 WHERE rs.code LIKE 'k\_%' AND r.status <> 'superseded' AND l.kind = 'c';
SELECT results_eq($$SELECT line_key COLLATE "default", clause, unrounded FROM k_lineage ORDER BY line_key COLLATE "C"$$,
	$$SELECT b.line_key COLLATE "default", e.clause, e.commission
	    FROM settle.bill_line b JOIN settle.customer c USING (customer_id)
	    JOIN settle.rule_version v ON v.reseller_id = b.reseller_id
	    JOIN settle.reseller rs ON rs.reseller_id = b.reseller_id
	    LEFT JOIN settle.product p ON p.product_code = b.product_code
	   CROSS JOIN LATERAL settle.evaluate_rule(v.rule, product => b.product_code, category => p.category,
	         sku => b.sku_id, charge_category => b.charge_category, region => b.region_id, segment => c.segment,
	         tags => c.tags || b.tags, billed_cost => b.billed_cost, list_cost => b.list_cost,
	         amount_paid => coalesce(b.amount_paid, b.billed_cost)) e
	   WHERE rs.code LIKE 'k\_%'
	   ORDER BY b.line_key COLLATE "C"$$,
	'every line of every condition kind settles with the clause and amount evaluate_rule gives it');
SELECT results_eq($$SELECT line_key COLLATE "default", clause, unrounded FROM k_lineage
                    WHERE clause = 1 AND line_key NOT LIKE 'k\_tag/%' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('k_category/04-category', 1, 3.50), ('k_charge/05-charge', 1, 3.50), ('k_product/03-product', 1, 3.50),
	         ('k_region/06-region', 1, 3.50), ('k_segment/07-segment', 1, 3.50), ('k_sku/02-sku', 1, 3.50)$$,
	'each condition kind matches its own line and no other: 100.00 x 3.5% = 3.50');
SELECT results_eq($$SELECT line_key COLLATE "default", clause, unrounded FROM k_lineage
                    WHERE line_key LIKE 'k\_tag/%' AND clause < 3 ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('k_tag/08-tag-line', 2, 3.50), ('k_tag/09-tag-customer', 2, 3.50), ('k_tag/11-tag-merged', 2, 3.50),
	         ('k_tag/12-tag-number', 1, 2.50)$$,
	'tags: the line''s own (08), the customer''s (09), merged (11), a number (12); the line''s env=dev beats the customer''s env=prod (10)');
SELECT is((SELECT sum(unrounded) FROM k_lineage), 7 * 12 * 1.50 + 6 * 2.00 + 3 * 2.00 + 1.00,
	'and nothing else: 84 lines at 1.50, nine at 2.00 more, one at 1.00 more');

-- ---------------------------------------------------------------------------
-- 2. verify_run reads back every amount settle_period writes.  Three
--    resellers at 1.5%, 7.123456% and 0.000001% (a rate of 8 decimals as a
--    fraction), each with the same amount carried to 0..11 decimals and a
--    EUR line converted at 1.08765432: unrounded amounts have up to 16
--    decimals.  Amounts of up to 16 decimals are settled exactly when
--    amount x rate fits 16 decimals: at 1.5% (0.015) every one does; at
--    0.07123456 and 0.00000001 the 9 to 11 decimal amounts give 17 to 19
--    decimals (124.648037123 x 0.07123456 = 8.87924808...6768, ending in 8):
--    those six lines earn nothing and each opens a validation exception.
-- ---------------------------------------------------------------------------
SELECT settle.add_fx_rate('EUR', 'USD', '2026-09-30', 1.08765432, 'ECB');
SELECT pg_temp.reseller(code, format(E'currency USD\notherwise pay %s%%', rate))
  FROM (VALUES ('dec1', '1.5'), ('dec2', '7.123456'), ('dec3', '0.000001')) d(code, rate);
SELECT settle.add_customer(code, 'c', 'Customer c') FROM unnest(ARRAY['dec1', 'dec2', 'dec3']) code;
SELECT pg_temp.line(code, 'c', code || '/' || lpad(k::text, 2, '0'), '2026-09-12', amount)
  FROM unnest(ARRAY['dec1', 'dec2', 'dec3']) code,
       unnest(ARRAY[125, 124.6, 124.64, 124.648, 124.6481, 124.64803, 124.648037, 124.6480371, 124.64803712,
                    124.648037123, 124.6480371234, 124.64803712345]) WITH ORDINALITY a(amount, k);
SELECT pg_temp.line(code, 'c', code || '/eur', '2026-09-13', 99.12345678, currency => 'EUR')
  FROM unnest(ARRAY['dec1', 'dec2', 'dec3']) code;
-- EUR 99.12345678901 x 1.08765432 = 107.8120559899000550232, carried to 8 decimals: 107.81205599
SELECT pg_temp.line('dec1', 'c', 'dec1/eur11', '2026-09-13', 99.12345678901, currency => 'EUR');
SELECT is((SELECT count(*) FROM settle.settle_period('2026-09', code)), 1::bigint, 'settles ' || code)
  FROM unnest(ARRAY['dec1', 'dec2', 'dec3']) code;
-- 124.648037 x 1.5% = 1.869720555 (the amount verify_run could not read);
-- 124.648037123 x 0.015 = 1.869720556845, 124.6480371234 x 0.015 = 1.869720556851,
-- 124.64803712345 x 0.015 = 1.86972055685175;
-- EUR 99.12345678 x 1.08765432 = 107.81205598010..., carried to 8 decimals: 107.81205598
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.basis, l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('dec1', '2026-09') ORDER BY l.line_key COLLATE "C"$$,
	$$VALUES ('dec1/01', 125.00, 1.875), ('dec1/02', 124.60, 1.869), ('dec1/03', 124.64, 1.8696),
	         ('dec1/04', 124.648, 1.86972), ('dec1/05', 124.6481, 1.8697215), ('dec1/06', 124.64803, 1.86972045),
	         ('dec1/07', 124.648037, 1.869720555), ('dec1/08', 124.6480371, 1.8697205565),
	         ('dec1/09', 124.64803712, 1.8697205568), ('dec1/10', 124.648037123, 1.869720556845),
	         ('dec1/11', 124.6480371234, 1.869720556851), ('dec1/12', 124.64803712345, 1.86972055685175),
	         ('dec1/eur', 107.81205598, 1.6171808397), ('dec1/eur11', 107.81205599, 1.61718083985)$$,
	'1.5%: exact amounts of up to 11 decimals, each valued exactly, an 11-decimal EUR amount converted to 8');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('dec2', '2026-09') AND l.line_key IN ('dec2/09', 'dec2/eur')
                    ORDER BY l.line_key COLLATE "C"$$,
	$$VALUES ('dec2/09', 8.8792480791068672), ('dec2/eur', 7.6799443704306688)$$,
	'7.123456%: 124.64803712 x 0.07123456 and 107.81205598 x 0.07123456, 16 decimals each');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('dec3', '2026-09') AND l.line_key IN ('dec3/09', 'dec3/eur')
                    ORDER BY l.line_key COLLATE "C"$$,
	$$VALUES ('dec3/09', 0.0000012464803712), ('dec3/eur', 0.0000010781205598)$$,
	'0.000001%: 124.64803712 x 0.00000001 and 107.81205598 x 0.00000001');
SELECT results_eq($$SELECT rs.code COLLATE "default", s.lines, s.commission FROM settle.statement s
                    JOIN settle.reseller rs USING (reseller_id) WHERE rs.code LIKE 'dec%' ORDER BY rs.code$$,
	$$VALUES ('dec1', 14::bigint, 25.68::numeric), ('dec2', 13::bigint, 87.61::numeric), ('dec3', 13::bigint, 0.00::numeric)$$,
	'statements: 18.449104458 + 5.60916167054775 + 1.61718083985 = 25.67544696839775 -> 25.68, 87.6142558973... -> 87.61, 0.0000122994... -> 0.00');
SELECT results_eq($$SELECT rs.code COLLATE "default", v.verified, v.lines, v.problem FROM settle.reseller rs,
                    settle.verify_run(pg_temp.run(rs.code, '2026-09')) v WHERE rs.code LIKE 'dec%' ORDER BY rs.code$$,
	$$VALUES ('dec1', true, 14::bigint, NULL::text), ('dec2', true, 13::bigint, NULL), ('dec3', true, 13::bigint, NULL)$$,
	'verify_run confirms every run, whatever the decimals of its amounts');
SELECT is((SELECT count(*) FROM settle.exception e WHERE e.kind = 'validation'
            AND e.reseller_id IN (settle.reseller_id('dec1'), settle.reseller_id('dec2'), settle.reseller_id('dec3'))),
	6::bigint, 'the six lines whose amount x rate has more than 16 decimals are validation exceptions');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.clause, l.rate, l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('dec2', '2026-09') AND l.line_key >= 'dec2/10' AND l.line_key < 'dec2/eur'
                    ORDER BY l.line_key COLLATE "C"$$,
	$$VALUES ('dec2/10', NULL::smallint, NULL::numeric, 0::numeric), ('dec2/11', NULL, NULL, 0), ('dec2/12', NULL, NULL, 0)$$,
	'the inexact lines are valued by no clause and earn 0');
SELECT alike((SELECT e.payload::text FROM settle.exception e WHERE e.reseller_id = settle.reseller_id('dec2')
              AND e.kind = 'validation' AND e.scope_key = 'line:dec2/12'), '%precision%',
	'the exception names the precision');
SELECT alike((SELECT value FROM settle.explain(pg_temp.run('dec2', '2026-09'), 'dec2/12') WHERE item = 'commission'),
	'earns nothing (precision: %', 'explain says why: precision');
SELECT results_eq($$SELECT status, commission FROM settle.evaluate_rule((SELECT v.rule FROM settle.rule_version v
                    WHERE v.reseller_id = settle.reseller_id('dec2')), charge_category => 'Usage',
                    billed_cost => 124.64803712345)$$,
	$$VALUES ('inexact', 0::numeric)$$, 'evaluate_rule agrees: inexact, commission 0');

-- ---------------------------------------------------------------------------
-- 3. verify_run of a run made only of deferred refunds, for a reseller whose
--    rule version changed in the refunds' period.  defer: 30-day refund
--    window; version 1 (5%) to 2026-10-16, version 2 (7%) from it.
--    September: 1000.00 + 333.33 + 250.00 at 5% = 79.1665 -> 79.17.
--    Refunds dated October 23 (-600.00, -333.33) and October 10 (-250.00),
--    32 to 51 days after their charges: deferred to November, reversed at
--    September's 5%: -30 - 16.6665 - 12.5 = -59.1665 -> -59.17.  The refunds
--    of the 23rd are read with version 2, in force on their date; verify_run
--    did not load it (only the versions the lineage records: version 1).
-- ---------------------------------------------------------------------------
SELECT settle.add_reseller(code, 'Reseller ' || code), settle.set_agreement(code, '2026-01-01', 'USD', refund_window_days => 30),
       settle.add_customer(code, 'c', 'Customer c')
  FROM unnest(ARRAY['defer', 'defer0']) code;
SELECT settle.publish_rule('defer', a.agreement_id, '2026-01-01', E'currency USD\notherwise pay 5%', 'v1', '2026-10-16'),
       settle.publish_rule('defer', a.agreement_id, '2026-10-16', E'currency USD\notherwise pay 7%', 'v2')
  FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('defer');
SELECT settle.publish_rule('defer0', a.agreement_id, '2026-01-01', E'currency USD\notherwise pay 5%', 'v1')
  FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('defer0');
SELECT pg_temp.line(code, 'c', code || '/' || k, d, amount)
  FROM unnest(ARRAY['defer', 'defer0']) code,
       (VALUES ('d1', DATE '2026-09-02', 1000.00), ('d2', '2026-09-05', 333.33), ('d3', '2026-09-08', 250.00)) x(k, d, amount);
SELECT pg_temp.line(code, 'c', code || '/' || k || '/refund', d, amount, original => code || '/' || k)
  FROM unnest(ARRAY['defer', 'defer0']) code,
       (VALUES ('d1', DATE '2026-10-23', -600.00), ('d2', '2026-10-23', -333.33), ('d3', '2026-10-10', -250.00)) x(k, d, amount);
SELECT count(*) FROM settle.settle_period('2026-09', 'defer') UNION ALL SELECT count(*) FROM settle.settle_period('2026-09', 'defer0');
SELECT count(*) FROM settle.settle_period('2026-10', 'defer') UNION ALL SELECT count(*) FROM settle.settle_period('2026-10', 'defer0');
SELECT count(*) FROM settle.settle_period('2026-11', 'defer') UNION ALL SELECT count(*) FROM settle.settle_period('2026-11', 'defer0');
SELECT results_eq($$SELECT p, s.lines, s.total FROM unnest(ARRAY['2026-09', '2026-10', '2026-11']) p
                    JOIN settle.statement s ON s.run_id = pg_temp.run('defer', p) ORDER BY p$$,
	$$VALUES ('2026-09', 3::bigint, 79.17::numeric), ('2026-10', 0::bigint, 0.00::numeric), ('2026-11', 3::bigint, -59.17::numeric)$$,
	'defer: September 79.17; the refunds skip October and reverse in November at 5%: -59.17');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.rule_version, l.rate, l.unrounded
                    FROM settle.settlement_line l WHERE l.run_id = pg_temp.run('defer', '2026-11') ORDER BY l.line_key COLLATE "C"$$,
	$$VALUES ('defer/d1/refund', 'r', 1, 0.05, -30.00), ('defer/d2/refund', 'r', 1, 0.05, -16.6665),
	         ('defer/d3/refund', 'r', 1, 0.05, -12.50)$$,
	'each deferred refund records the version and rate its original earned');
SELECT results_eq($$SELECT p, v.verified, v.problem FROM unnest(ARRAY['2026-09', '2026-10', '2026-11']) p,
                    settle.verify_run(pg_temp.run('defer', p)) v ORDER BY p$$,
	$$VALUES ('2026-09', true, NULL::text), ('2026-10', true, NULL), ('2026-11', true, NULL)$$,
	'verify_run confirms every run of the reseller whose version changed mid-October');
SELECT is((SELECT v.verified FROM settle.verify_run(pg_temp.run('defer0', '2026-11')) v), true,
	'as it does for the reseller without the change');

-- ---------------------------------------------------------------------------
-- 4. Refund reversals and per-line limits (docs/rules.md section 6): a
--    reversal is the refund's basis x the rate its original earned; the
--    original's line floor or cap is not applied to it.
--    lim, October: ecs 100.00 at 1% = 1 -> floor 2; its refund -100.00:
--    -1.00.  oss 3000.00 at 4% = 120 -> cap 100; its refund -3000.00:
--    -120.00.  A Tax line of 144.53 is not eligible.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('lim', $$currency USD
when product ecs pay 1% with floor 2 per line
when product oss pay 4% with cap 100 per line
otherwise pay 2%$$);
SELECT settle.add_customer('lim', 'c', 'Customer c');
SELECT pg_temp.line('lim', 'c', 'lim/ecs', '2026-10-02', 100.00),
       pg_temp.line('lim', 'c', 'lim/ecs/refund', '2026-10-20', -100.00, original => 'lim/ecs'),
       pg_temp.line('lim', 'c', 'lim/oss', '2026-10-03', 3000.00, product => 'oss'),
       pg_temp.line('lim', 'c', 'lim/oss/refund', '2026-10-21', -3000.00, product => 'oss', original => 'lim/oss'),
       pg_temp.line('lim', 'c', 'lim/tax', '2026-10-04', 144.53, charge => 'Tax');
SELECT count(*) FROM settle.settle_period('2026-10', 'lim');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.rate, l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('lim', '2026-10') ORDER BY l.line_key COLLATE "C", l.kind$$,
	$$VALUES ('lim/ecs', 'c', 0.01, 2.00), ('lim/ecs/refund', 'r', 0.01, -1.00), ('lim/oss', 'c', 0.04, 100.00),
	         ('lim/oss/refund', 'r', 0.04, -120.00), ('lim/tax', 'c', NULL, 0.00)$$,
	'a refund reverses basis x the original''s rate: the line floor and cap of its original are not applied');
SELECT results_eq($$SELECT commission, refunds, total FROM settle.statement WHERE run_id = pg_temp.run('lim', '2026-10')$$,
	$$VALUES (102.00::numeric, -121.00::numeric, -19.00::numeric)$$, 'lim October: 102.00 - 121.00');
SELECT is((SELECT commission FROM settle.evaluate_rule((SELECT rule FROM settle.rule_version
            WHERE reseller_id = settle.reseller_id('lim')), product => 'ecs', billed_cost => -100)), -2.00000000::numeric,
	'whereas evaluate_rule of a negative basis applies the limits to its magnitude');

-- explain of a line that is not eligible says so
SELECT results_eq($$SELECT item, value FROM settle.explain(pg_temp.run('lim', '2026-10'), 'lim/tax')
                    WHERE item IN ('clause', 'rate', 'commission') ORDER BY step$$,
	$$VALUES ('clause', 'not eligible: charge category Tax'), ('rate', 'none'),
	         ('commission', 'earns nothing (not eligible: charge category Tax): 0.00 USD')$$,
	'explain: a Tax line is not eligible and earns nothing');
SELECT results_eq($$SELECT value FROM settle.explain(pg_temp.run('lim', '2026-10'), 'lim/oss/refund')
                    WHERE item IN ('clause', 'commission') ORDER BY step$$,
	$$VALUES ('2: when product oss pay 4% with cap 100.00 per line'), ('-3000.00 x 0.04 = -120.00 USD (exact)')$$,
	'explain: a refund reversal at its original''s rate');

-- ---------------------------------------------------------------------------
-- 5. Floors.  flr: version 1 (5%, floor 10 per customer) to 2026-10-16,
--    version 2 (5%, floor 12 per customer) from it: October's floor is 12,
--    the last version's.  The floor compares the period's charges'
--    commission, before refund reversals: customer a earned 300.00 x 5% = 15
--    and a refund reversed 10 of it (5 left): no top-up; customer b earned
--    5: a top-up of 7; customer c, no lines: none.
-- ---------------------------------------------------------------------------
SELECT settle.add_reseller('flr', 'Reseller flr'), settle.set_agreement('flr', '2026-01-01', 'USD');
SELECT settle.publish_rule('flr', a.agreement_id, '2026-01-01', E'currency USD\nfloor 10 per customer per period\notherwise pay 5%', 'v1', '2026-10-16'),
       settle.publish_rule('flr', a.agreement_id, '2026-10-16', E'currency USD\nfloor 12 per customer per period\notherwise pay 5%', 'v2')
  FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('flr');
SELECT settle.add_customer('flr', c, 'Customer ' || c) FROM unnest(ARRAY['a', 'b', 'c']) c;
SELECT pg_temp.line('flr', 'a', 'flr/a1', '2026-10-05', 300.00),
       pg_temp.line('flr', 'a', 'flr/a1/refund', '2026-10-20', -200.00, original => 'flr/a1'),
       pg_temp.line('flr', 'b', 'flr/b1', '2026-10-20', 100.00);
SELECT count(*) FROM settle.settle_period('2026-10', 'flr');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.rule_version, l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('flr', '2026-10') ORDER BY l.line_key COLLATE "C", l.kind$$,
	$$VALUES ('floor:customer:' || (SELECT customer_id FROM settle.customer WHERE code = 'b'
	                                   AND reseller_id = settle.reseller_id('flr')), 'f', 2, 7.00),
	         ('flr/a1', 'c', 1, 15.00), ('flr/a1/refund', 'r', 1, -10.00), ('flr/b1', 'c', 2, 5.00)$$,
	'per-customer floor: version 2''s 12, before refunds (a keeps 15 - 10 = 5 without a top-up), b topped up by 7');
SELECT results_eq($$SELECT commission, refunds, adjustments, total FROM settle.statement WHERE run_id = pg_temp.run('flr', '2026-10')$$,
	$$VALUES (20.00::numeric, -10.00::numeric, 7.00::numeric, 17.00::numeric)$$, 'flr October: 20.00 - 10.00 + 7.00');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('flr', '2026-10'))), true, 'and it verifies');
SELECT results_eq($$SELECT value FROM settle.explain(pg_temp.run('flr', '2026-10'),
                      'floor:customer:' || (SELECT customer_id FROM settle.customer WHERE code = 'b'
                                              AND reseller_id = settle.reseller_id('flr')))
                    WHERE item IN ('rule version', 'rate', 'commission') ORDER BY step$$,
	$$SELECT format('version 2, in force 2026-10-16 to infinity, published by %s: v2', session_user) COLLATE "default"
	  UNION ALL VALUES ('none'), ('top-up to the floor: 7.00 USD (exact)')$$,
	'explain: a floor top-up, under the version whose floor it is');

-- flr0: floor 25 per reseller.  October earns 5: a top-up of 20.  November
-- has no lines: an empty statement, no top-up.
SELECT pg_temp.reseller('flr0', E'currency USD\nfloor 25 per reseller per period\notherwise pay 5%');
SELECT settle.add_customer('flr0', 'c', 'Customer c');
SELECT pg_temp.line('flr0', 'c', 'flr0/c1', '2026-10-07', 100.00);
SELECT count(*) FROM settle.settle_period('2026-10', 'flr0') UNION ALL SELECT count(*) FROM settle.settle_period('2026-11', 'flr0');
SELECT results_eq($$SELECT p, s.lines, s.commission, s.adjustments, s.total FROM unnest(ARRAY['2026-10', '2026-11']) p
                    JOIN settle.statement s ON s.run_id = pg_temp.run('flr0', p) ORDER BY p$$,
	$$VALUES ('2026-10', 2::bigint, 5.00::numeric, 20.00::numeric, 25.00::numeric),
	         ('2026-11', 0::bigint, 0.00::numeric, 0.00::numeric, 0.00::numeric)$$,
	'per-reseller floor: topped up to 25 in a month with lines; a month without lines is an empty statement');

-- ---------------------------------------------------------------------------
-- 6. run_diff lists the lines whose amounts or attribution changed.  dif,
--    September at 5%: L1 100, L2 200, L3 300 (customer x).  Revised: L1 in
--    another region (same amounts), L2 to 250 (+2.50), L3 to customer y
--    (same amounts).
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('dif', E'currency USD\notherwise pay 5%');
SELECT settle.add_customer('dif', c, 'Customer ' || c) FROM unnest(ARRAY['x', 'y']) c;
SELECT pg_temp.line('dif', 'x', 'dif/L1', '2026-09-03', 100.00), pg_temp.line('dif', 'x', 'dif/L2', '2026-09-03', 200.00),
       pg_temp.line('dif', 'x', 'dif/L3', '2026-09-03', 300.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'dif');
SELECT pg_temp.line('dif', 'x', 'dif/L1', '2026-09-03', 100.00, region => 'cn-north', revision => 2),
       pg_temp.line('dif', 'x', 'dif/L2', '2026-09-03', 250.00, revision => 2),
       pg_temp.line('dif', 'y', 'dif/L3', '2026-09-03', 300.00, revision => 2);
SELECT count(*) FROM settle.settle_period('2026-09', 'dif');
SELECT results_eq($$SELECT d.line_key, d.change, d.revision_a, d.revision_b, d.delta, d.why, c.code
                    FROM settle.run_diff((SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('dif') AND status = 'superseded'),
                                         pg_temp.run('dif', '2026-09')) d JOIN settle.customer c USING (customer_id)$$,
	$$SELECT x.* FROM (VALUES ('dif/L2', 'changed', 1, 2, 2.50::numeric, 'new revision', 'x'),
	         ('dif/L3', 'changed', 1, 2, 0.00::numeric, 'new revision, another customer', 'y')) x(k, ch, ra, rb, d, w, c)$$,
	'run_diff: L2''s amount and L3''s customer changed; L1''s new revision changed neither and is not listed');

-- ---------------------------------------------------------------------------
-- 7. A month of 1,210 lines, 1,200 of them with amounts of 11 decimals (as
--    in the FinOps FOCUS sample): settle_period returned its problems in
--    memory it had freed and crashed the server (or returned garbage).
--    At 12.345678% (0.12345678) an 11-decimal amount times the rate has 19
--    decimals and cannot be held at 16: each such line earns nothing and
--    opens a validation exception naming the precision.  The ten lines of
--    10.00 .. 100.00 earn 550.00 x 0.12345678 = 67.901229 -> 67.90.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('big', E'currency USD\notherwise pay 12.345678%');
SELECT settle.add_customer('big', 'c', 'Customer c');
SELECT count(pg_temp.line('big', 'c', format('big/%s', lpad(g::text, 5, '0')), '2026-09-15', g + 0.12345678901))
  FROM generate_series(1, 1200) g;
SELECT count(pg_temp.line('big', 'c', format('big/valid/%s', lpad(g::text, 2, '0')), '2026-09-16', g * 10.00))
  FROM generate_series(1, 10) g;
SELECT results_eq($$SELECT lines_in, lines_out FROM settle.settle_period('2026-09', 'big')$$,
	$$VALUES (1210::bigint, 1210::bigint)$$, 'settle_period settles the 1,210 lines');
SELECT results_eq($$SELECT lines, gross_charges, commissionable, commission, total FROM settle.statement
                    WHERE run_id = pg_temp.run('big', '2026-09')$$,
	$$VALUES (1210::bigint, 721298.15::numeric, 721298.15::numeric, 67.90::numeric, 67.90::numeric)$$,
	'the statement: 721298.148146812 commissionable, 67.901229 commission');
SELECT results_eq($$SELECT count(*), min(scope_key), max(scope_key) FROM settle.exception
                    WHERE reseller_id = settle.reseller_id('big') AND kind = 'validation'$$,
	$$VALUES (1200::bigint, 'line:big/00001', 'line:big/01200')$$,
	'each 11-decimal line is a validation exception, intact');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('big', '2026-09'))), true, 'and the run verifies');

-- ---------------------------------------------------------------------------
-- 8. A late revision of a locked period with 11-decimal amounts is valued
--    exactly at 5%: 100.12345678901 x 0.05 = 5.0061728394505, less the 5.00
--    settled: a correction of 0.0061728394505.  At 12.345678% the product
--    has 19 decimals: not valued (as a line of the period would not be), no
--    correction, a validation exception.  settle_period once raised an
--    error instead, which failed the settlement of every reseller.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('late', E'currency USD\notherwise pay 5%');
SELECT settle.add_customer('late', 'c', 'Customer c');
SELECT pg_temp.line('late', 'c', 'late/1', '2026-09-04', 100.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'late');
SELECT count(*) FROM settle.approve_run(pg_temp.run('late', '2026-09'), 'checked'),
       settle.lock_run(pg_temp.run('late', '2026-09'), 'closed');
SELECT pg_temp.line('late', 'c', 'late/1', '2026-09-04', 100.12345678901, revision => 2);
SELECT results_eq($$SELECT lines_out, blocked FROM settle.settle_period('2026-10', 'late')$$,
	$$VALUES (1::bigint, false)$$, 'October: a correction for the 11-decimal revision, and the run is not blocked');
SELECT results_eq($$SELECT kind::text, basis, unrounded FROM settle.settlement_line
                    WHERE run_id = pg_temp.run('late', '2026-10')$$,
	$$VALUES ('x', 100.12345678901, 0.0061728394505)$$, 'the correction: 100.12345678901 x 0.05 - 5.00, exact');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('late', '2026-10'))), true, 'the run verifies');
SELECT pg_temp.reseller('latex', E'currency USD\notherwise pay 12.345678%');
SELECT settle.add_customer('latex', 'c', 'Customer c');
SELECT pg_temp.line('latex', 'c', 'latex/1', '2026-09-04', 100.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'latex');
SELECT count(*) FROM settle.approve_run(pg_temp.run('latex', '2026-09'), 'checked'),
       settle.lock_run(pg_temp.run('latex', '2026-09'), 'closed');
SELECT pg_temp.line('latex', 'c', 'latex/1', '2026-09-04', 100.12345678901, revision => 2);
SELECT results_eq($$SELECT blocked FROM settle.settle_period('2026-10', 'latex')$$,
	$$VALUES (true)$$, 'at 12.345678% the 11-decimal revision cannot be valued exactly: the run is blocked');
SELECT results_eq($$SELECT scope_key, period FROM settle.exception
                    WHERE reseller_id = settle.reseller_id('latex') AND kind = 'validation'$$,
	$$VALUES ('line:latex/1', '2026-10')$$, 'by a validation exception on the line');

-- ---------------------------------------------------------------------------
-- 9. verify_run of a run whose period starts with a new rule version.  nv:
--    version 1 (1%) to 2026-10-01, version 2 (2%, floor 5 per customer per
--    period) from 2026-10-01.  September: 100.00 and 300.00 earn 1.00 and
--    3.00.  October: 200.00 earns 4.00 under version 2, the customer is
--    topped up to the floor, 5.00 - 4.00 = 1.00.  nvr: the same, and a
--    refund of -50.00 of the first September line reverses it at version 1:
--    -50.00 x 1% = -0.50.  Re-derivation must use the same versions as the
--    run: version 2's floor, version 1 for the refund (verify_run derived more
--    lines than the run recorded when it loaded only the versions the run's
--    lines record, while settle_period took the floor of version 1).
-- ---------------------------------------------------------------------------
SELECT settle.add_reseller(code, 'Reseller ' || code) FROM (VALUES ('nv'), ('nvr')) r(code);
SELECT settle.set_agreement(code, '2026-01-01', 'USD') FROM (VALUES ('nv'), ('nvr')) r(code);
SELECT settle.publish_rule(code, (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id(code)),
	'2026-01-01', E'currency USD\notherwise pay 1%'::settle.rule, 'version 1', '2026-10-01') FROM (VALUES ('nv'), ('nvr')) r(code);
SELECT settle.publish_rule(code, (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id(code)),
	'2026-10-01', E'currency USD\nfloor 5 per customer per period\notherwise pay 2%'::settle.rule, 'version 2')
  FROM (VALUES ('nv'), ('nvr')) r(code);
SELECT settle.add_customer(code, 'c1', 'Customer c1') FROM (VALUES ('nv'), ('nvr')) r(code);
SELECT pg_temp.line(code, 'c1', code || '/09a', '2026-09-10', 100.00),
       pg_temp.line(code, 'c1', code || '/09b', '2026-09-20', 300.00),
       pg_temp.line(code, 'c1', code || '/10a', '2026-10-10', 200.00)
  FROM (VALUES ('nv'), ('nvr')) r(code);
SELECT pg_temp.line('nvr', 'c1', 'nvr/10r', '2026-10-12', -50.00, original => 'nvr/09a');
SELECT count(*) FROM (VALUES ('nv'), ('nvr')) r(code), settle.settle_period('2026-09', code);
SELECT count(*) FROM (VALUES ('nv'), ('nvr')) r(code), settle.settle_period('2026-10', code);
SELECT results_eq($$SELECT rs.code COLLATE "default", l.line_key COLLATE "default", l.kind::text, l.rule_version, l.unrounded
                    FROM settle.settlement_line l JOIN settle.reseller rs USING (reseller_id)
                    WHERE l.run_id = pg_temp.run(rs.code, '2026-10') AND rs.code IN ('nv', 'nvr')
                    ORDER BY rs.code, l.line_key COLLATE "C"$$,
	$$SELECT * FROM (VALUES ('nv', 'floor:customer:' || (SELECT customer_id FROM settle.customer
	                                                     WHERE code = 'c1' AND reseller_id = settle.reseller_id('nv')), 'f', 2, 1.00),
	         ('nv', 'nv/10a', 'c', 2, 4.00),
	         ('nvr', 'floor:customer:' || (SELECT customer_id FROM settle.customer
	                                       WHERE code = 'c1' AND reseller_id = settle.reseller_id('nvr')), 'f', 2, 1.00),
	         ('nvr', 'nvr/10a', 'c', 2, 4.00), ('nvr', 'nvr/10r', 'r', 1, -0.50)) v$$,
	'October under version 2: 200.00 x 2% = 4.00, top-up 5.00 - 4.00 = 1.00; the refund at version 1: -50.00 x 1% = -0.50');
SELECT results_eq($$SELECT rs.code COLLATE "default", v.verified, v.lines, v.problem FROM settle.reseller rs,
                    settle.verify_run(pg_temp.run(rs.code, '2026-10')) v WHERE rs.code IN ('nv', 'nvr') ORDER BY rs.code$$,
	$$VALUES ('nv', true, 2::bigint, NULL::text), ('nvr', true, 3::bigint, NULL)$$,
	'verify_run re-derives the lines of a period that starts with a new version');

-- ---------------------------------------------------------------------------
-- 10. A refund is reversed at its original's terms (docs/rules.md section 7):
--     the basis setting of the version the original earned under, not that of
--     the version in force on the refund's date.  rb: version 1 (basis
--     list_cost, 10%) to 2026-10-01, version 2 (basis billed_cost, 3%) from
--     2026-10-01.  September: billed 100.00, list 200.00 earns 200.00 x 10% =
--     20.00.  October: its refund, billed -50.00, list -80.00, reverses
--     -80.00 x 10% = -8.00 (the engine took version 2's billed cost:
--     -50.00 x 10% = -5.00).
-- ---------------------------------------------------------------------------
SELECT settle.add_reseller('rb', 'Reseller rb');
SELECT settle.set_agreement('rb', '2026-01-01', 'USD');
SELECT settle.publish_rule('rb', (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('rb')),
	'2026-01-01', E'currency USD\nbasis list_cost\notherwise pay 10%'::settle.rule, 'version 1', '2026-10-01');
SELECT settle.publish_rule('rb', (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('rb')),
	'2026-10-01', E'currency USD\notherwise pay 3%'::settle.rule, 'version 2');
SELECT settle.add_customer('rb', 'c', 'Customer c');
SELECT pg_temp.line('rb', 'c', 'rb/09', '2026-09-10', 100.00, list => 200.00);
SELECT pg_temp.line('rb', 'c', 'rb/10r', '2026-10-05', -50.00, original => 'rb/09', list => -80.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'rb');
SELECT count(*) FROM settle.settle_period('2026-10', 'rb');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.rule_version, l.basis, l.rate, l.unrounded
                    FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
                    WHERE r.reseller_id = settle.reseller_id('rb') AND r.status <> 'superseded'
                    ORDER BY r.period, l.line_key COLLATE "C"$$,
	$$VALUES ('rb/09', 'c', 1, 200.00, 0.10000000, 20.00), ('rb/10r', 'r', 1, -80.00, 0.10000000, -8.00)$$,
	'the refund is valued on list cost, as its original: -80.00 x 10% = -8.00');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('rb', '2026-10'))), true, 'the refund''s run verifies');
-- rbo: the same versions, the original in July (version 1 is not among the
-- versions of August and September): billed 100.00, list 200.00 earns 20.00;
-- its September refund, billed -50.00, list -80.00, reverses -8.00.
SELECT settle.add_reseller('rbo', 'Reseller rbo');
SELECT settle.set_agreement('rbo', '2026-01-01', 'USD');
SELECT settle.publish_rule('rbo', (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('rbo')),
	'2026-01-01', E'currency USD\nbasis list_cost\notherwise pay 10%'::settle.rule, 'version 1', '2026-08-01');
SELECT settle.publish_rule('rbo', (SELECT a.agreement_id FROM settle.agreement a WHERE a.reseller_id = settle.reseller_id('rbo')),
	'2026-08-01', E'currency USD\notherwise pay 3%'::settle.rule, 'version 2');
SELECT settle.add_customer('rbo', 'c', 'Customer c');
SELECT pg_temp.line('rbo', 'c', 'rbo/07', '2026-07-10', 100.00, list => 200.00);
SELECT pg_temp.line('rbo', 'c', 'rbo/09r', '2026-09-05', -50.00, original => 'rbo/07', list => -80.00);
SELECT count(*) FROM settle.settle_period('2026-07', 'rbo');
SELECT count(*) FROM settle.settle_period('2026-09', 'rbo');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.rule_version, l.basis, l.unrounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('rbo', '2026-09')$$,
	$$VALUES ('rbo/09r', 1, -80.00, -8.00)$$,
	'a refund of a charge two periods back is valued with its version too: -80.00 x 10% = -8.00');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('rbo', '2026-09'))), true, 'and its run verifies');

-- ---------------------------------------------------------------------------
-- 11. A correction of a line that earned a fixed amount is the difference
--     between what the new revision earns and what was settled
--     (docs/settlement.md).  fxc: pay 2 per line.  September: fxc/1 and
--     fxc/2 of 100.00 earn 2.00 each; locked.  Revisions: fxc/1 to 120.00
--     still earns 2.00 (correction 2.00 - 2.00 = 0.00; the engine reversed
--     the whole 2.00), fxc/2 to 0.00 earns nothing (correction -2.00).
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('fxc', E'currency USD\notherwise pay 2 per line');
SELECT settle.add_customer('fxc', 'c', 'Customer c');
SELECT pg_temp.line('fxc', 'c', 'fxc/1', '2026-09-04', 100.00);
SELECT pg_temp.line('fxc', 'c', 'fxc/2', '2026-09-05', 100.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'fxc');
SELECT count(*) FROM settle.approve_run(pg_temp.run('fxc', '2026-09'), 'checked'),
       settle.lock_run(pg_temp.run('fxc', '2026-09'), 'closed');
SELECT pg_temp.line('fxc', 'c', 'fxc/1', '2026-09-04', 120.00, revision => 2);
SELECT pg_temp.line('fxc', 'c', 'fxc/2', '2026-09-05', 0.00, revision => 2);
SELECT count(*) FROM settle.settle_period('2026-10', 'fxc');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.basis, l.unrounded, l.rounded
                    FROM settle.settlement_line l WHERE l.run_id = pg_temp.run('fxc', '2026-10')
                    ORDER BY l.line_key COLLATE "C"$$,
	$$VALUES ('fxc/1', 'x', 120.00, 0.00, 0.00), ('fxc/2', 'x', 0.00, -2.00, -2.00)$$,
	'corrections: 120.00 still earns 2.00 (2.00 - 2.00 = 0.00); 0.00 earns nothing (0.00 - 2.00 = -2.00)');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('fxc', '2026-10'))), true, 'the corrections'' run verifies');

-- ---------------------------------------------------------------------------
-- 12. verify_run finds a refund's original in the run that was current when
--     the verified run was made, not in one that superseded it since (found
--     by the differential test, seed 7).  rsup: 10%.  September: rsup/1 of
--     100.00 earns 10.00 (run A).  October: its refund of -20.00 reverses
--     -2.00, referring to run A.  Then a new September line is settled: run
--     B supersedes A.  The October run still verifies, with its reference.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('rsup', E'currency USD\notherwise pay 10%');
SELECT settle.add_customer('rsup', 'c', 'Customer c');
SELECT pg_temp.line('rsup', 'c', 'rsup/1', '2026-09-10', 100.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'rsup');
SELECT pg_temp.run('rsup', '2026-09') AS rsup_sep_a \gset
SELECT pg_temp.line('rsup', 'c', 'rsup/r', '2026-10-05', -20.00, original => 'rsup/1');
SELECT count(*) FROM settle.settle_period('2026-10', 'rsup');
SELECT pg_temp.line('rsup', 'c', 'rsup/2', '2026-09-12', 50.00);
SELECT count(*) FROM settle.settle_period('2026-09', 'rsup');
SELECT isnt(pg_temp.run('rsup', '2026-09'), :rsup_sep_a::bigint, 'September was settled again: a new run superseded run A');
SELECT results_eq($$SELECT l.unrounded, l.ref FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('rsup', '2026-10') AND l.kind = 'r'$$,
	format($$VALUES (-2.00::numeric, 'run:%s/rsup/1')$$, :rsup_sep_a),
	'the October reversal refers to the run that held the original when it was made');
SELECT results_eq(format('SELECT verified, problem FROM settle.verify_run(%s)', pg_temp.run('rsup', '2026-10')),
	$$VALUES (true, NULL::text)$$, 'and the October run verifies after September was superseded');

-- ---------------------------------------------------------------------------
-- 13. Residual rounding units tied between lines go in line key order, for
--     floor top-ups too (docs/settlement.md, rounding; found by the
--     differential test as F8: they went to bill lines first, then to the
--     top-ups in the order they were made, by customer id).  tie: 1%, floor
--     10.005 per customer per period, USD half_even.  Customers 999999999
--     and 1000000000 (top-ups are made in customer id order; in line key
--     order floor:customer:1000000000 comes first) each earn 100.00 x 1% = 1.00
--     and are topped up by 9.005; a third earns 1000.50 x 1% = 10.005, at
--     the floor.  Total 1.00 + 1.00 + 10.005 + 9.005 + 9.005 = 30.015 ->
--     30.02; the lines rounded down add to 30.00, so 2 units go to the
--     largest remainders, three tied at 0.005: in key order the two top-ups
--     (floor:customer:1000000000, floor:customer:999999999) get them, tie/c
--     does not.  (In the order made: tie/c and floor:customer:999999999.)
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('tie', E'currency USD\nfloor 10.005 per customer per period\notherwise pay 1%');
INSERT INTO settle.customer (reseller_id, customer_id, code, name)
VALUES (settle.reseller_id('tie'), 999999999, 'c9', 'Customer c9'),
       (settle.reseller_id('tie'), 1000000000, 'c10', 'Customer c10');
SELECT settle.add_customer('tie', 'c3', 'Customer c3');
SELECT pg_temp.line('tie', 'c9', 'tie/a', '2026-10-05', 100.00),
       pg_temp.line('tie', 'c10', 'tie/b', '2026-10-06', 100.00),
       pg_temp.line('tie', 'c3', 'tie/c', '2026-10-07', 1000.50);
SELECT count(*) FROM settle.settle_period('2026-10', 'tie');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.unrounded, l.rounded FROM settle.settlement_line l
                    WHERE l.run_id = pg_temp.run('tie', '2026-10') ORDER BY l.line_key COLLATE "C", l.kind$$,
	$$VALUES ('floor:customer:1000000000', 'f', 9.005, 9.01), ('floor:customer:999999999', 'f', 9.005, 9.01),
	         ('tie/a', 'c', 1.00, 1.00), ('tie/b', 'c', 1.00, 1.00), ('tie/c', 'c', 10.005, 10.00)$$,
	'rounding ties go in line key order: both floor top-ups before tie/c, floor:customer:1000000000 first');
SELECT results_eq($$SELECT commission, adjustments, total FROM settle.statement WHERE run_id = pg_temp.run('tie', '2026-10')$$,
	$$VALUES (12.00::numeric, 18.02::numeric, 30.02::numeric)$$, 'tie October: 12.00 + 18.02 = 30.02');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('tie', '2026-10'))), true, 'and it verifies');

SELECT * FROM finish();
ROLLBACK;
