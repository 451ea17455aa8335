-- Regressions of defects found in settle_period, verify_run, run_diff and
-- explain, and the decisions docs/rules.md and docs/settlement.md state for
-- floors and refund reversals.  Every number is worked out in the comments.
BEGIN;
SELECT plan(4);

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
