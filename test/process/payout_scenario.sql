-- Payout scenario (used by test/pgtap/payout.sql and test/process/payout_*.sh):
-- five resellers settled for 2026-10 at 10% of billed cost, approved and locked.
--   alpha   EUR  1000.00 + 234.50                 -> commission 123.45, payout 123.45
--   bravo   EUR  2000.00, refund -100.00          -> 200.00 - 10.00 = 190.00 (name needs escaping)
--   charlie EUR  500.00, minimum payout 1000      -> 50.00 carried forward, payout 0
--   delta   USD  777.00                           -> 77.70
--   echo    EUR  300.00                           -> 30.00 (name with quotes and an accent)
-- No BEGIN/COMMIT: pgTAP includes it inside its transaction, process tests run it
-- with psql --single-transaction.
SET client_min_messages = warning;
\o /dev/null
SET LOCAL settle.reason = 'payout scenario';
SELECT settle.add_reseller('alpha', 'Alpha Cloud GmbH'), settle.add_reseller('bravo', 'Bravo & <Sons> "IT"'),
       settle.add_reseller('charlie', 'Charlie Small'), settle.add_reseller('delta', 'Delta Inc'),
       settle.add_reseller('echo', 'Écho Ltd ''quoted''');
SELECT settle.add_customer(r, r || '-c1', 'Customer of ' || r) FROM unnest(ARRAY['alpha', 'bravo', 'charlie', 'delta', 'echo']) r;
SELECT settle.set_agreement(r, '2026-01-01', CASE r WHEN 'delta' THEN 'USD' ELSE 'EUR' END,
                            minimum_payout => CASE r WHEN 'charlie' THEN 1000 ELSE 0 END)
  FROM unnest(ARRAY['alpha', 'bravo', 'charlie', 'delta', 'echo']) r;
SELECT settle.publish_rule(r, a.agreement_id, '2026-01-01',
	format(E'currency %s\nminimum payout %s\notherwise pay 10%%', a.settlement_currency, a.minimum_payout)::settle.rule,
	'payout scenario schedule')
  FROM unnest(ARRAY['alpha', 'bravo', 'charlie', 'delta', 'echo']) r
  JOIN settle.agreement a ON a.reseller_id = settle.reseller_id(r);
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost, original_line_key)
SELECT r.reseller_id, x.key, 1, c.customer_id, sha256(convert_to(x.key, 'UTF8')),
       CASE WHEN x.billed < 0 THEN 'Refund' ELSE 'PayAsYouGoBill' END, 'acct-' || x.code, '2026-10-01',
       x.day, x.day + 1, CASE WHEN x.billed < 0 THEN 'Credit' ELSE 'Usage' END, x.product,
       CASE x.code WHEN 'delta' THEN 'USD' ELSE 'EUR' END, x.billed, x.billed, x.original
  FROM (VALUES ('alpha', 'alpha/ecs/oct', date '2026-10-03', 'ecs', 1000.00, NULL),
               ('alpha', 'alpha/oss/oct', date '2026-10-04', 'oss', 234.50, NULL),
               ('bravo', 'bravo/ecs/oct', date '2026-10-05', 'ecs', 2000.00, NULL),
               ('bravo', 'bravo/ecs/oct/refund', date '2026-10-20', 'ecs', -100.00, 'bravo/ecs/oct'),
               ('charlie', 'charlie/ecs/oct', date '2026-10-06', 'ecs', 500.00, NULL),
               ('delta', 'delta/ecs/oct', date '2026-10-07', 'ecs', 777.00, NULL),
               ('echo', 'echo/ecs/oct', date '2026-10-08', 'ecs', 300.00, NULL))
       AS x(code, key, day, product, billed, original)
  JOIN settle.reseller r ON r.code = x.code
  JOIN settle.customer c ON c.reseller_id = r.reseller_id;
SELECT count(*) FROM settle.settle_period('2026-10');
SELECT settle.approve_run(run_id, 'payout scenario') FROM settle.run WHERE period = '2026-10' AND status = 'draft';
SELECT settle.lock_run(run_id, 'payout scenario') FROM settle.run WHERE period = '2026-10' AND status = 'approved';
\o
