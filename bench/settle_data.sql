-- settle_period benchmark data (bench/settle.sh): one period (2026-10) of
-- :n generated bill lines for :resellers resellers (50 by default) sharing
-- 5,000 customers (:cpr = 5000 / :resellers each),
-- 8 products, one rule version per reseller with all-units tiers on customer
-- monthly spend and a per-customer cap (varying by reseller), and 2% refunds
-- (every 50th line) linked to the charge before them, reversed in period.
--
-- Line g (1..n): reseller (g-1) / (n/resellers), customer ((g-1)/2) % cpr of it,
-- product ((g-1)/200) % 8; refunds and their originals share customer and
-- product.  Amounts vary by customer so spends span all three tiers and some
-- customers reach their cap.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS settle CASCADE;
SET bench.cpr = :cpr;

SELECT count(settle.add_reseller(format('bench-%s', r), format('Bench reseller %s', r)))
  FROM generate_series(1, :resellers) r;
SELECT count(settle.add_customer(format('bench-%s', r), format('c%s', c), format('Customer %s-%s', r, c)))
  FROM generate_series(1, :resellers) r, generate_series(0, :cpr - 1) c;
-- the generator computes customer ids: reseller r, customer c -> (r-1)*cpr + c + 1
DO $$
BEGIN
	IF EXISTS (SELECT 1 FROM settle.customer c JOIN settle.reseller r USING (reseller_id)
	            WHERE c.customer_id <> (r.reseller_id - 1) * current_setting('bench.cpr')::int + substr(c.code, 2)::int + 1
	               OR r.code <> 'bench-' || r.reseller_id) THEN
		RAISE EXCEPTION 'unexpected reseller or customer ids';
	END IF;
END $$;

BEGIN;
SET LOCAL settle.reason = 'benchmark agreements';
SELECT count(settle.set_agreement(format('bench-%s', r), '2026-01-01', 'USD')) FROM generate_series(1, :resellers) r;
COMMIT;

SELECT count(settle.publish_rule(r.code, a.agreement_id, '2026-01-01', format($$currency USD
refunds reverse at original rate within 90 days
cap %s per customer per period
tiers spend on customer monthly spend all_units
  from 0 to 10000 pay 5%%
  from 10000 to 50000 pay 7%%
  from 50000 pay 9%%
when product ecs, ack pay tiers spend
when product rds, polardb pay 6%%
when category storage pay 4%%
otherwise pay 3%%$$, 2000 + (r.reseller_id % 5) * 500)::settle.rule, 'benchmark'))
  FROM settle.reseller r JOIN settle.agreement a USING (reseller_id);

-- the bill lines, in one statement
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
	product_code, billing_currency, list_cost, billed_cost, original_line_key)
SELECT s.r + 1, s.key || CASE WHEN s.refund THEN '/refund' ELSE '' END, 1, s.r * :cpr + s.c + 1,
       sha256(int8send(s.g)), CASE WHEN s.refund THEN 'Refund' ELSE 'PayAsYouGoBill' END,
       s.acct, DATE '2026-10-01',
       TIMESTAMPTZ '2026-10-01 00:00:00+00' + make_interval(days => (s.o % 28)::int + CASE WHEN s.refund THEN 2 ELSE 0 END),
       TIMESTAMPTZ '2026-10-02 00:00:00+00' + make_interval(days => (s.o % 28)::int + CASE WHEN s.refund THEN 2 ELSE 0 END),
       CASE WHEN s.refund THEN 'Credit' ELSE 'Usage' END, s.product, 'USD',
       CASE WHEN s.refund THEN -round(s.amount / 2, 2) ELSE s.amount END,
       CASE WHEN s.refund THEN -round(s.amount / 2, 2) ELSE s.amount END,
       CASE WHEN s.refund THEN s.key END
  FROM (SELECT g, o, r, c, refund, acct, product,
               format('%s/%s/i-%s/2026-10', acct, product, o) AS key,
               round(((o * 7919) % 10000 + 1) * (1 + c % 10) / 500.0, 2) AS amount
          FROM (SELECT g, g % 50 = 0 AS refund, CASE WHEN g % 50 = 0 THEN g - 1 ELSE g END AS o,
                       (g - 1) / (:n / :resellers) AS r, ((g - 1) / 2) % :cpr AS c,
                       format('5%s%s', lpad(((g - 1) / (:n / :resellers))::text, 3, '0'), lpad((((g - 1) / 2) % :cpr)::text, 4, '0')) AS acct,
                       (ARRAY['ecs', 'ack', 'oss', 'nas', 'rds', 'polardb', 'slb', 'cdn'])[((g - 1) / 200) % 8 + 1] AS product
                  FROM generate_series(1, :n::bigint) g) x) s;
VACUUM ANALYZE settle.bill_line;
