-- Regressions of defects found in settle_period, verify_run, run_diff and
-- explain, and the decisions docs/rules.md and docs/settlement.md state for
-- floors and refund reversals.  Every number is worked out in the comments.
BEGIN;
SELECT plan(15);

SET LOCAL settle.reason = 'defect regressions';

-- A bill line as ingestion writes it.  A negative amount is a Credit line;
-- a line with an original is a refund of it.
CREATE FUNCTION pg_temp.line(reseller text, customer text, key text, day date, billed numeric,
	product text DEFAULT 'ecs', sku text DEFAULT 'ecs.g7', region text DEFAULT 'cn-west',
	charge text DEFAULT NULL, tags jsonb DEFAULT '{}', currency text DEFAULT 'USD',
	revision integer DEFAULT 1, original text DEFAULT NULL) RETURNS void
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
	       line.sku, line.region, line.currency, line.billed, line.billed, line.original, line.tags
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
-- 7. A month of 1,210 lines, 1,200 of them with amounts of 11 decimals (as
--    in the FinOps FOCUS sample): settle_period returned its problems in
--    memory it had freed and crashed the server (or returned garbage).
--    Amounts of more than 8 decimals cannot be settled exactly: each such
--    line earns nothing and opens a validation exception.  The ten lines of
--    10.00 .. 100.00 earn 5%: 550.00 x 5% = 27.50.
-- ---------------------------------------------------------------------------
SELECT pg_temp.reseller('big', E'currency USD\notherwise pay 5%');
SELECT settle.add_customer('big', 'c', 'Customer c');
SELECT count(pg_temp.line('big', 'c', format('big/%s', lpad(g::text, 5, '0')), '2026-09-15', g + 0.12345678901))
  FROM generate_series(1, 1200) g;
SELECT count(pg_temp.line('big', 'c', format('big/valid/%s', lpad(g::text, 2, '0')), '2026-09-16', g * 10.00))
  FROM generate_series(1, 10) g;
SELECT results_eq($$SELECT lines_in, lines_out FROM settle.settle_period('2026-09', 'big')$$,
	$$VALUES (1210::bigint, 1210::bigint)$$, 'settle_period settles the 1,210 lines');
SELECT results_eq($$SELECT lines, gross_charges, commissionable, commission, total FROM settle.statement
                    WHERE run_id = pg_temp.run('big', '2026-09')$$,
	$$VALUES (1210::bigint, 550.00::numeric, 550.00::numeric, 27.50::numeric, 27.50::numeric)$$,
	'the statement: 550.00 commissionable, 27.50 commission');
SELECT results_eq($$SELECT count(*), min(scope_key), max(scope_key) FROM settle.exception
                    WHERE reseller_id = settle.reseller_id('big') AND kind = 'validation'$$,
	$$VALUES (1200::bigint, 'line:big/00001', 'line:big/01200')$$,
	'each 11-decimal line is a validation exception, intact');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('big', '2026-09'))), true, 'and the run verifies');

SELECT * FROM finish();
ROLLBACK;
