-- History: settle_period walks a reseller's bill lines in key order and
-- skips those dated outside the period (and the previous one) by the dates
-- the primary key carries, without reading them.  Two resellers hold the same
-- seven lines over five months, their October lines interleaved in key order
-- with the others; one agreement places lines by service month, the other by
-- invoice period.  Flat 10%.
--
--   key          billing period  charge period start  billed  service  invoice
--   a/jul        2026-07         2026-07-10           100     Jul      Jul
--   b/aug        2026-08         2026-08-10           200     Aug      Aug
--   c/sep        2026-09         2026-09-10           300     Sep      Sep
--   d/oct        2026-10         2026-10-10           400     Oct      Oct
--   e/oct-late   2026-11         2026-10-31 22:00 UTC 500     Oct      Nov
--   f/sep-late   2026-10         2026-09-30 10:00 UTC 600     Sep      Oct
--   g/nov        2026-11         2026-11-05           700     Nov      Nov
--
-- October: by service month d + e = 900, 90.00; by invoice period d + f =
-- 1000, 100.00.  November by service month: g = 700, 70.00.
BEGIN;
SELECT plan(6);
SET LOCAL settle.reason = 'history test';
SELECT settle.add_reseller('hist-s', 'Service month'), settle.add_reseller('hist-i', 'Invoice period');
SELECT settle.add_customer(r, 'h1', 'History customer') FROM unnest(ARRAY['hist-s', 'hist-i']) r;
SELECT settle.set_agreement('hist-s', '2026-01-01', 'USD'),
       settle.set_agreement('hist-i', '2026-01-01', 'USD', date_basis => 'invoice_period');
SELECT count(settle.publish_rule(r.code, a.agreement_id, '2026-01-01', $$currency USD
otherwise pay 10%$$, 'flat 10%'))
  FROM settle.reseller r JOIN settle.agreement a USING (reseller_id) WHERE r.code LIKE 'hist-%';

INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost)
SELECT r.reseller_id, x.key, 1, c.customer_id, sha256(convert_to(r.code || x.key, 'UTF8')), 'PayAsYouGoBill',
       'acct-' || r.code, x.billed, x.charged, x.charged + interval '1 hour', 'Usage', 'ecs', 'USD', x.amount, x.amount
  FROM settle.reseller r JOIN settle.customer c ON c.reseller_id = r.reseller_id AND c.code = 'h1',
       (VALUES ('a/jul', date '2026-07-01', timestamptz '2026-07-10 00:00+00', 100.00),
               ('b/aug', date '2026-08-01', timestamptz '2026-08-10 00:00+00', 200.00),
               ('c/sep', date '2026-09-01', timestamptz '2026-09-10 00:00+00', 300.00),
               ('d/oct', date '2026-10-01', timestamptz '2026-10-10 00:00+00', 400.00),
               ('e/oct-late', date '2026-11-01', timestamptz '2026-10-31 22:00+00', 500.00),
               ('f/sep-late', date '2026-10-01', timestamptz '2026-09-30 10:00+00', 600.00),
               ('g/nov', date '2026-11-01', timestamptz '2026-11-05 00:00+00', 700.00)) AS x(key, billed, charged, amount)
 WHERE r.code LIKE 'hist-%';

CREATE TEMP TABLE oct_runs AS SELECT reseller_id, run_id FROM settle.settle_period('2026-10');
CREATE TEMP VIEW oct AS
	SELECT r.code, s.run_id, s.lines, s.gross_charges, s.commission
	  FROM oct_runs x JOIN settle.statement s USING (reseller_id, run_id) JOIN settle.reseller r USING (reseller_id);

SELECT results_eq($$SELECT lines, gross_charges, commission FROM oct WHERE code = 'hist-s'$$,
	$$VALUES (2::bigint, 900.00::numeric, 90.00::numeric)$$,
	'by service month, October is d and e (charged October 31 UTC, billed in November)');
SELECT results_eq($$SELECT line_key COLLATE "default" FROM settle.settlement_line l JOIN oct USING (run_id) WHERE code = 'hist-s' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('d/oct'), ('e/oct-late')$$, 'and only those lines are settled');
SELECT results_eq($$SELECT lines, gross_charges, commission FROM oct WHERE code = 'hist-i'$$,
	$$VALUES (2::bigint, 1000.00::numeric, 100.00::numeric)$$,
	'by invoice period, October is d and f (charged in September, billed in October)');
SELECT results_eq($$SELECT line_key COLLATE "default" FROM settle.settlement_line l JOIN oct USING (run_id) WHERE code = 'hist-i' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('d/oct'), ('f/sep-late')$$, 'and only those lines are settled');
SELECT run_id AS nov_run FROM settle.settle_period('2026-11', 'hist-s') \gset
SELECT results_eq($$SELECT lines, gross_charges, commission FROM settle.statement WHERE run_id = $$ || :nov_run,
	$$VALUES (1::bigint, 700.00::numeric, 70.00::numeric)$$, 'November by service month is g alone');
SELECT ok(bool_and(v.verified), 'every run verifies')
  FROM settle.run r, settle.verify_run(r.run_id) v
 WHERE r.reseller_id IN (settle.reseller_id('hist-s'), settle.reseller_id('hist-i'));

SELECT * FROM finish();
ROLLBACK;
