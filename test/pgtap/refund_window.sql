-- The refund window at its edges under both date bases (docs/rules.md
-- section 7, docs/settlement.md "refunds"): a refund's age is the number of
-- days from its original's date to its own date, each line dated as the
-- agreement's date_basis dates it -- the UTC date of the charge period start
-- under service_month, the billing period start under invoice_period.  An age
-- up to the window reverses in the refund's own period; one day more, in the
-- period after it.  Both resellers: `pay 10%`, a window of 90 days, every
-- period January to May 2026 settled in order.
BEGIN;
SELECT plan(15);

SET LOCAL settle.reason = 'refund window';

-- A bill line as ingestion writes it, with its charge (usage) date and its
-- billing period start given apart.
CREATE FUNCTION pg_temp.line(reseller text, key text, used date, billed_in date, billed numeric,
	original text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		charge_category, product_code, sku_id, region_id, billing_currency, list_cost, billed_cost,
		original_line_key, tags)
	SELECT r.reseller_id, key, 1, c.customer_id, sha256(convert_to(concat_ws('/', key, billed), 'UTF8')),
	       CASE WHEN original IS NOT NULL THEN 'Refund' ELSE 'PayAsYouGoBill' END, 'acct-1',
	       billed_in, used, used + 1, 'Usage', 'ecs', 'ecs.g7', 'cn-west', 'USD', billed, billed, original, '{}'
	  FROM settle.reseller r JOIN settle.customer c ON c.reseller_id = r.reseller_id
	 WHERE r.code = reseller
$$;
CREATE FUNCTION pg_temp.reseller(code text, basis text) RETURNS void
LANGUAGE sql AS $$
	SELECT settle.add_reseller(code, 'Reseller ' || code);
	SELECT settle.set_agreement(code, '2026-01-01', 'USD', date_basis => basis, refund_window_days => 90);
	SELECT settle.publish_rule(code, (SELECT a.agreement_id FROM settle.agreement a
	                                    WHERE a.reseller_id = settle.reseller_id(code)), '2026-01-01',
		E'currency USD\nrefunds reverse at original rate within 90 days\notherwise pay 10%'::settle.rule,
		'refund window');
	SELECT settle.add_customer(code, 'c1', 'Customer 1', 'standard', '{}');
$$;
SELECT pg_temp.reseller('rw_svc', 'service_month');
SELECT pg_temp.reseller('rw_inv', 'invoice_period');

-- service_month: the charge dates decide; the billing periods (first of each
-- month here) play no part.  10 January to 10 April is 21 + 28 + 31 + 10 = 90
-- days; to 11 April, 91.
SELECT pg_temp.line('rw_svc', 'svc/c1', '2026-01-10', '2026-01-01', 1000.00);
SELECT pg_temp.line('rw_svc', 'svc/c2', '2026-01-10', '2026-01-01', 2000.00);
SELECT pg_temp.line('rw_svc', 'svc/r1-day90', '2026-04-10', '2026-04-01', -100.00, 'svc/c1');
SELECT pg_temp.line('rw_svc', 'svc/r2-day91', '2026-04-11', '2026-04-01', -200.00, 'svc/c2');

-- invoice_period: billing periods starting on the 10th (billing cycles that do
-- not start on the 1st, as some providers bill).  The billing period starts
-- decide, the charge dates play no part:
--   r3: charges 5 January and 30 April, 115 days apart; billing periods
--       10 January and 10 April, 90 days apart: in April.
--   r4: charges 5 January and 5 April, 90 days apart; billing periods
--       10 January and 11 April, 91 days apart: deferred to May.
SELECT pg_temp.line('rw_inv', 'inv/c3', '2026-01-05', '2026-01-10', 1000.00);
SELECT pg_temp.line('rw_inv', 'inv/c4', '2026-01-05', '2026-01-10', 2000.00);
SELECT pg_temp.line('rw_inv', 'inv/r3-billed-day90', '2026-04-30', '2026-04-10', -300.00, 'inv/c3');
SELECT pg_temp.line('rw_inv', 'inv/r4-billed-day91', '2026-04-05', '2026-04-11', -400.00, 'inv/c4');

SELECT is((SELECT count(*) FROM settle.settle_period(p, code)), 1::bigint, format('settles %s %s', code, p))
  FROM unnest(ARRAY['2026-01', '2026-02', '2026-03', '2026-04', '2026-05']) p,
       unnest(ARRAY['rw_svc', 'rw_inv']) code
 ORDER BY code, p;

CREATE TEMP VIEW rw_lineage AS
	SELECT rs.code, r.period, l.line_key, l.kind::text AS kind, l.unrounded, l.rounded, l.ref
	  FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
	  JOIN settle.reseller rs USING (reseller_id)
	 WHERE rs.code LIKE 'rw\_%' AND r.status <> 'superseded';

SELECT results_eq($$SELECT period, line_key COLLATE "default", kind, unrounded, rounded FROM rw_lineage
                    WHERE code = 'rw_svc' ORDER BY period, line_key COLLATE "C"$$,
	$$VALUES ('2026-01', 'svc/c1', 'c', 100.00, 100.00), ('2026-01', 'svc/c2', 'c', 200.00, 200.00),
	         ('2026-04', 'svc/r1-day90', 'r', -10.00, -10.00), ('2026-05', 'svc/r2-day91', 'r', -20.00, -20.00)$$,
	'service_month: a refund 90 days after its charge reverses in its own period (-100.00 x 10%), at 91 days in the next (-200.00 x 10%)');
SELECT results_eq($$SELECT period, line_key COLLATE "default", kind, unrounded, rounded FROM rw_lineage
                    WHERE code = 'rw_inv' ORDER BY period, line_key COLLATE "C"$$,
	$$VALUES ('2026-01', 'inv/c3', 'c', 100.00, 100.00), ('2026-01', 'inv/c4', 'c', 200.00, 200.00),
	         ('2026-04', 'inv/r3-billed-day90', 'r', -30.00, -30.00), ('2026-05', 'inv/r4-billed-day91', 'r', -40.00, -40.00)$$,
	'invoice_period: billing periods 90 days apart reverse in the refund''s period although the charges are 115 days apart; 91 days apart in the next although the charges are 90 apart');
SELECT ok((SELECT bool_and(ref LIKE '%svc/c2%') FROM rw_lineage WHERE line_key = 'svc/r2-day91')
      AND (SELECT bool_and(ref LIKE '%inv/c4%') FROM rw_lineage WHERE line_key = 'inv/r4-billed-day91'),
	'a deferred reversal refers to its original');

SELECT results_eq($$SELECT r.period, st.total, st.refunds FROM settle.statement st JOIN settle.run r USING (reseller_id, run_id)
                    WHERE r.reseller_id = settle.reseller_id('rw_inv') AND r.status <> 'superseded' AND r.period IN ('2026-04', '2026-05')
                    ORDER BY r.period$$,
	$$VALUES ('2026-04', -30.00, -30.00), ('2026-05', -40.00, -40.00)$$,
	'invoice_period statements: April reverses r3 only, May the deferred r4');

-- evaluate_rule is given the age the caller measured: at 90 days in_period, at 91 next_adjustment.
SELECT results_eq($$SELECT e.refund_timing FROM unnest(ARRAY[90, 91]) age,
                    LATERAL settle.evaluate_rule(E'currency USD\nrefunds reverse at original rate within 90 days\notherwise pay 10%'::settle.rule,
                        product => 'ecs', billed_cost => -100.00, refund_age_days => age) e ORDER BY age$$,
	$$VALUES ('in_period'::text), ('next_adjustment')$$,
	'evaluate_rule: 90 days in_period, 91 days next_adjustment');

SELECT * FROM finish();
ROLLBACK;
