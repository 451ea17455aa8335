-- A hand-computed scenario: September and October 2026 for three resellers
-- and twenty customers, settled with settle.settle_period.  Every statement
-- total and every exception is asserted to the cent; the invariants (lines
-- add up to statements, refunds reverse what the original earned,
-- determinism, verify_run) are asserted on every run.
--
-- north (USD, half_even, refunds within 30 days, minimum payout 50)
--   tiers "spend" all-units on customer monthly spend: 0-1000 5%, 1000+ 8%
--   ecs on tiers, storage 4%, otherwise 2%, cap 40 per customer per period
-- tokyo (JPY, half_up, minimum payout 20000): ecs 10%, otherwise 4%
-- gulf  (KWD, half_even): ecs on graduated tiers 0-100 KWD 5%, 100+ 10%; otherwise 3%
BEGIN;
SELECT plan(58);
-- Statistics as of now: ANALYZE writes pg_class in place, so another test
-- file's rolled-back settlement may have left the lineage's row count high,
-- and test 7 asserts that settle_period analyses the lineage it grows.
ANALYZE settle.settlement_line;

SET LOCAL settle.reason = 'scenario month';
SELECT settle.add_reseller('north', 'North Cloud'), settle.add_reseller('tokyo', 'Tokyo Cloud'),
       settle.add_reseller('gulf', 'Gulf Cloud');
SELECT settle.add_customer('north', c, 'Customer ' || c)
  FROM unnest(ARRAY['n1', 'n2', 'n3', 'n4', 'n5', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8']) c;
SELECT settle.add_customer('tokyo', c, 'Customer ' || c) FROM unnest(ARRAY['t1', 't2', 't3', 't4']) c;
SELECT settle.add_customer('gulf', c, 'Customer ' || c) FROM unnest(ARRAY['g1', 'g2', 'g3']) c;
SELECT settle.set_agreement('north', '2026-01-01', 'USD', refund_window_days => 30, minimum_payout => 50),
       settle.set_agreement('tokyo', '2026-01-01', 'JPY', rounding_mode => 'half_up', minimum_payout => 20000),
       settle.set_agreement('gulf', '2026-01-01', 'KWD', minimum_payout => 0);
SELECT settle.add_fx_rate('USD', 'JPY', '2026-10-31', 151.37, 'ECB'),
       settle.add_fx_rate('JPY', 'USD', '2026-10-31', 0.0066, 'ECB'),
       settle.add_fx_rate('USD', 'KWD', '2026-10-31', 0.3071, 'CBK');
SELECT settle.publish_rule('north', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('north')),
	'2026-01-01', $$currency USD
minimum payout 50
refunds reverse at original rate within 30 days
cap 40 per customer per period
tiers spend on customer monthly spend all_units
  from 0 to 1000 pay 5%
  from 1000 pay 8%
when product ecs pay tiers spend
when category storage pay 4%
otherwise pay 2%$$, 'north 2026 schedule');
SELECT settle.publish_rule('tokyo', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('tokyo')),
	'2026-01-01', $$currency JPY
rounding half_up
minimum payout 20000
when product ecs pay 10%
otherwise pay 4%$$, 'tokyo 2026 schedule');
SELECT settle.publish_rule('gulf', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('gulf')),
	'2026-01-01', $$currency KWD
tiers ladder on customer monthly spend graduated
  from 0 to 100 pay 5%
  from 100 pay 10%
when product ecs pay tiers ladder
otherwise pay 3%$$, 'gulf 2026 schedule');

-- A bill line as ingestion writes it (one account per customer).
CREATE FUNCTION pg_temp.line(reseller text, customer text, key text, day date, product text,
	billed numeric, currency text DEFAULT 'USD', revision integer DEFAULT 1,
	item text DEFAULT 'PayAsYouGoBill', original text DEFAULT NULL) RETURNS void
LANGUAGE sql AS $$
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		charge_category, product_code, billing_currency, list_cost, billed_cost, original_line_key)
	SELECT r.reseller_id, key, revision, c.customer_id, sha256(convert_to(key || revision || billed, 'UTF8')),
	       item, 'acct-' || customer, date_trunc('month', day)::date, day, day + 1,
	       CASE WHEN billed < 0 THEN 'Credit' ELSE 'Usage' END, product, currency, billed, billed, original
	  FROM settle.reseller r JOIN settle.customer c ON c.reseller_id = r.reseller_id
	 WHERE r.code = reseller AND c.code = customer
$$;

-- September: north only.  n5 500 (5%) = 25.00, n2 200 (5%) = 10.00.
SELECT pg_temp.line('north', 'n5', 'n5/ecs/sep', '2026-09-01', 'ecs', 500);
SELECT pg_temp.line('north', 'n2', 'n2/ecs/sep', '2026-09-10', 'ecs', 200);
SELECT is((SELECT count(*) FROM settle.settle_period('2026-09', 'north')), 1::bigint, 'September settles one run for north');
SELECT results_eq($$SELECT commission, total, carry_forward_out, net_payout FROM settle.statement s
                    JOIN settle.run r USING (reseller_id, run_id) WHERE r.period = '2026-09'$$,
	$$VALUES (35.00::numeric, 35.00::numeric, 35.00::numeric, 0.00::numeric)$$,
	'September: 35.00 earned, below the 50 minimum: all carried forward');
SELECT lives_ok($$SELECT settle.approve_run((SELECT run_id FROM settle.run WHERE period = '2026-09'), 'reviewed')$$, 'September approved');
SELECT lives_ok($$SELECT settle.lock_run((SELECT run_id FROM settle.run WHERE period = '2026-09'), 'closed')$$, 'September locked');

-- After the lock: n2's September line is revised (200 -> 300), and n5's
-- September charge is refunded 44 days later (outside the 30-day window).
SELECT pg_temp.line('north', 'n2', 'n2/ecs/sep', '2026-09-10', 'ecs', 300, revision => 2);
SELECT pg_temp.line('north', 'n5', 'n5/ecs/sep/refund', '2026-10-15', 'ecs', -100, item => 'Refund', original => 'n5/ecs/sep');

-- October, north (USD):
--   n1 ecs 600 + 500: spend 1100 reaches tier 2 (8%, all units) = 48 + 40 = 88, cap 40 per customer: 40 + 0
--   n2 ecs 300 + oss 200: spend 500, tier 1: 15.00 + 8.00 (storage 4%)
--   n3 ecs 10000 JPY at 0.0066 = 66.00 USD, tier 1: 3.30
--   n4 rds 400 (2%) = 8.00; refund -100 on day 18 (inside 30 days) reverses at 2%: -2.00
--   f1..f8 rds 100 each (2%) = 8 x 2.00
--   correction of n2's September revision: (300 - 200) x 5% = 5.00
--   commission 90.30, refunds -2.00, corrections 5.00 = 93.30; carry-forward in 35.00: payout 128.30
SELECT pg_temp.line('north', 'n1', 'n1/ecs/a', '2026-10-03', 'ecs', 600);
SELECT pg_temp.line('north', 'n1', 'n1/ecs/b', '2026-10-17', 'ecs', 500);
SELECT pg_temp.line('north', 'n2', 'n2/ecs/oct', '2026-10-05', 'ecs', 300);
SELECT pg_temp.line('north', 'n2', 'n2/oss/oct', '2026-10-06', 'oss', 200);
SELECT pg_temp.line('north', 'n3', 'n3/ecs/oct', '2026-10-07', 'ecs', 10000, currency => 'JPY');
SELECT pg_temp.line('north', 'n4', 'n4/rds/oct', '2026-10-02', 'rds', 400);
SELECT pg_temp.line('north', 'n4', 'n4/rds/oct/refund', '2026-10-20', 'rds', -100, item => 'Refund', original => 'n4/rds/oct');
SELECT pg_temp.line('north', f, f || '/rds/oct', '2026-10-09', 'rds', 100)
  FROM unnest(ARRAY['f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8']) f;
-- October, tokyo (JPY, half_up) from USD at 151.37:
--   t1 ecs 100 = 15137 JPY x 10% = 1513.7;  t2 oss 33.33 = 5045.1621 x 4% = 201.806484
--   t3, t4 rds 10 = 1513.7 x 4% = 60.548 each;  total 1836.602484 -> 1837 (half_up)
--   floors 1513 + 201 + 60 + 60 = 1834; the 3 largest remainders get 1: t2, t1, t3
--   below the 20000 minimum: all 1837 carried forward
SELECT pg_temp.line('tokyo', 't1', 't1/ecs/oct', '2026-10-04', 'ecs', 100);
SELECT pg_temp.line('tokyo', 't2', 't2/oss/oct', '2026-10-04', 'oss', 33.33);
SELECT pg_temp.line('tokyo', 't3', 't3/rds/oct', '2026-10-04', 'rds', 10);
SELECT pg_temp.line('tokyo', 't4', 't4/rds/oct', '2026-10-04', 'rds', 10);
-- October, gulf (KWD, 3 decimals) from USD at 0.3071:
--   g1 ecs 1000 = 307.1 KWD graduated: 100 x 5% + 207.1 x 10% = 25.71
--   g2 ecs 50 = 15.355 x 5% = 0.76775;  g3 oss 20 = 6.142 x 3% = 0.18426
--   g3 oss 10 EUR: no EUR/KWD rate -> missing_fx_rate, run blocked
--   total 26.66201 -> 26.662; floors 25.710 + 0.767 + 0.184 = 26.661; g2 gets the unit
SELECT pg_temp.line('gulf', 'g1', 'g1/ecs/oct', '2026-10-11', 'ecs', 1000);
SELECT pg_temp.line('gulf', 'g2', 'g2/ecs/oct', '2026-10-11', 'ecs', 50);
SELECT pg_temp.line('gulf', 'g3', 'g3/oss/oct', '2026-10-11', 'oss', 20);
SELECT pg_temp.line('gulf', 'g3', 'g3/oss/oct/eur', '2026-10-12', 'oss', 10, currency => 'EUR');
-- An account nobody has mapped, as ingestion records it.
INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, billing_account_id,
	billing_period_start, charge_period_start, charge_period_end, charge_category, product_code,
	billing_currency, list_cost, billed_cost)
VALUES (0, 'acct-unknown/ecs/oct', 1, sha256('u'), 'PayAsYouGoBill', 'acct-unknown', '2026-10-01',
	'2026-10-08', '2026-10-09', 'Usage', 'ecs', 'USD', 70, 70);
SELECT settle.open_exception(0, 'unmapped_customer', 'account:acct-unknown', '2026-10');

SELECT is((SELECT count(*) FROM settle.settle_period('2026-10')), 3::bigint, 'October settles three runs');
-- the lineage's BRIN index (it has no B-tree) covers what settle_period wrote
SELECT is(brin_summarize_new_values('settle.settlement_line_run_idx'), 0,
	'settle_period summarised every block range of the lineage it wrote');
SELECT is((SELECT reltuples::bigint FROM pg_class WHERE oid = 'settle.settlement_line'::regclass),
	(SELECT count(*) FROM settle.settlement_line), 'and analysed the lineage it grew: the planner knows its size');

CREATE TEMP VIEW oct AS
	SELECT r.code, s.*, run.blocked, run.status
	  FROM settle.statement s JOIN settle.run run USING (reseller_id, run_id) JOIN settle.reseller r USING (reseller_id)
	 WHERE run.period = '2026-10' AND run.status <> 'superseded';

SELECT results_eq($$SELECT currency::text, lines, gross_charges, commissionable, commission, refunds, corrections,
                           adjustments, total, carry_forward_in, carry_forward_out, net_payout FROM oct WHERE code = 'north'$$,
	$$VALUES ('USD', 16::bigint, 2866.00::numeric, 2866.00::numeric, 90.30::numeric, -2.00::numeric, 5.00::numeric,
	          0.00::numeric, 93.30::numeric, 35.00::numeric, 0.00::numeric, 128.30::numeric)$$,
	'north October statement, to the cent');
SELECT results_eq($$SELECT currency::text, lines, gross_charges, commission, total, carry_forward_out, net_payout FROM oct WHERE code = 'tokyo'$$,
	$$VALUES ('JPY', 4::bigint, 23210::numeric, 1837::numeric, 1837::numeric, 1837::numeric, 0::numeric)$$,
	'tokyo October statement in yen, carried forward below the minimum');
SELECT results_eq($$SELECT currency::text, lines, gross_charges, commission, total, net_payout, blocked FROM oct WHERE code = 'gulf'$$,
	$$VALUES ('KWD', 4::bigint, 328.597::numeric, 26.662::numeric, 26.662::numeric, 26.662::numeric, true)$$,
	'gulf October statement in dinars, blocked by the missing FX rate');

-- Line by line.
CREATE TEMP VIEW oct_lines AS
	SELECT rs.code, l.* FROM settle.settlement_line l JOIN oct o USING (reseller_id, run_id)
	  JOIN settle.reseller rs USING (reseller_id);
SELECT results_eq($$SELECT line_key COLLATE "default", kind::text, tier, rate, unrounded, rounded FROM oct_lines WHERE code = 'north'
                    ORDER BY line_key COLLATE "C", kind$$,
	$$VALUES ('f1/rds/oct', 'c', NULL::smallint, 0.02, 2.00, 2.00), ('f2/rds/oct', 'c', NULL, 0.02, 2.00, 2.00),
	         ('f3/rds/oct', 'c', NULL, 0.02, 2.00, 2.00), ('f4/rds/oct', 'c', NULL, 0.02, 2.00, 2.00),
	         ('f5/rds/oct', 'c', NULL, 0.02, 2.00, 2.00), ('f6/rds/oct', 'c', NULL, 0.02, 2.00, 2.00),
	         ('f7/rds/oct', 'c', NULL, 0.02, 2.00, 2.00), ('f8/rds/oct', 'c', NULL, 0.02, 2.00, 2.00),
	         ('n1/ecs/a', 'c', 2::smallint, 0.08, 40.00, 40.00), ('n1/ecs/b', 'c', 2::smallint, 0.08, 0.00, 0.00),
	         ('n2/ecs/oct', 'c', 1::smallint, 0.05, 15.00, 15.00), ('n2/ecs/sep', 'x', 1::smallint, 0.05, 5.00, 5.00),
	         ('n2/oss/oct', 'c', NULL, 0.04, 8.00, 8.00), ('n3/ecs/oct', 'c', 1::smallint, 0.05, 3.30, 3.30),
	         ('n4/rds/oct', 'c', NULL, 0.02, 8.00, 8.00), ('n4/rds/oct/refund', 'r', NULL, 0.02, -2.00, -2.00)$$,
	'north: tiers crossing, the per-customer cap, storage, the JPY customer, the refund, the correction');
SELECT results_eq($$SELECT line_key COLLATE "default", unrounded, rounded FROM oct_lines WHERE code = 'tokyo' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('t1/ecs/oct', 1513.7, 1514::numeric), ('t2/oss/oct', 201.806484, 202), ('t3/rds/oct', 60.548, 61), ('t4/rds/oct', 60.548, 60)$$,
	'tokyo: residual yen go to the largest remainders, ties to the earlier line');
SELECT results_eq($$SELECT line_key COLLATE "default", tier, basis, unrounded, rounded FROM oct_lines WHERE code = 'gulf' ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('g1/ecs/oct', 2::smallint, 307.1, 25.71, 25.710), ('g2/ecs/oct', 1::smallint, 15.355, 0.76775, 0.768),
	         ('g3/oss/oct', NULL, 6.142, 0.18426, 0.184), ('g3/oss/oct/eur', NULL, 0.000, 0.000, 0.000)$$,
	'gulf: graduated tiers and mils');
SELECT is((SELECT basis FROM oct_lines WHERE line_key = 'n3/ecs/oct'), 66.00, 'the JPY line is converted at the month-end rate');
SELECT is((SELECT f.rate FROM oct_lines l JOIN settle.fx_rate f USING (fx_rate_id) WHERE l.line_key = 'n3/ecs/oct'), 0.0066,
	'and records the FX rate it used');
SELECT is((SELECT ref FROM oct_lines WHERE line_key = 'n2/ecs/sep'),
	'run:' || (SELECT run_id FROM settle.run WHERE period = '2026-09') || '/n2/ecs/sep',
	'the correction references the locked run it corrects');
SELECT is((SELECT count(*) FROM oct_lines WHERE line_key = 'n5/ecs/sep/refund'), 0::bigint,
	'the refund outside the window is not in its own period');

-- Exceptions: exactly the unmapped account, the missing FX rate and a swing alarm.
SELECT results_eq($$SELECT e.reseller_id, e.kind, e.scope_key, e.period, e.state FROM settle.exception e
                    ORDER BY e.exception_id$$,
	$$VALUES (0::bigint, 'unmapped_customer', 'account:acct-unknown', '2026-10', 'pending_review'),
	         (settle.reseller_id('gulf'), 'missing_fx_rate', 'fx:EUR/KWD:2026-10-31', '2026-10', 'pending_review'),
	         (settle.reseller_id('north'), 'sanity_check', 'swing:2026-10', '2026-10', 'pending_review')$$,
	'the exceptions of October, and nothing else: north''s total swung from 35.00 to 93.30, a warning');
SELECT is((SELECT blocked FROM oct WHERE code = 'north'), false, 'other resellers are not blocked');
SELECT throws_ok($$SELECT settle.approve_run((SELECT run_id FROM oct WHERE code = 'gulf'), 'looks fine')$$,
	'55000', NULL, 'a blocked run cannot be approved');

-- Invariants on every run.
SELECT is(count(*), 0::bigint, 'no run has two settlement lines with the same line key and kind')
  FROM (SELECT 1 FROM settle.settlement_line GROUP BY run_id, line_key, kind HAVING count(*) > 1) d;
SELECT is(count(*), 0::bigint, 'every statement equals the sum of its lines')
  FROM settle.statement s
 WHERE s.total <> (SELECT coalesce(sum(l.rounded), 0) FROM settle.settlement_line l
                    WHERE l.reseller_id = s.reseller_id AND l.run_id = s.run_id);
SELECT is(count(*), 0::bigint, 'every statement''s line count is its lines')
  FROM settle.statement s
 WHERE s.lines <> (SELECT count(*) FROM settle.settlement_line l WHERE l.reseller_id = s.reseller_id AND l.run_id = s.run_id);
SELECT is((SELECT sum(total) FROM oct WHERE currency = 'USD'), (SELECT sum(l.rounded) FROM oct_lines l WHERE code = 'north'),
	'the run total is the sum of its statements');
SELECT is((SELECT l.rate FROM oct_lines l WHERE line_key = 'n4/rds/oct/refund'),
	(SELECT l.rate FROM oct_lines l WHERE line_key = 'n4/rds/oct'), 'the refund reverses at the rate the original earned');
SELECT is((SELECT l.unrounded / o.unrounded FROM oct_lines l, oct_lines o WHERE l.line_key = 'n4/rds/oct/refund' AND o.line_key = 'n4/rds/oct'),
	(SELECT b.billed_cost / o.billed_cost FROM settle.bill_line b, settle.bill_line o
	  WHERE b.line_key = 'n4/rds/oct/refund' AND o.line_key = 'n4/rds/oct'),
	'and reverses exactly the refunded share of what it earned');
SELECT ok(v.verified, 'verify_run re-derives ' || r.period || ' of ' || r.reseller_id)
  FROM settle.run r, settle.verify_run(r.run_id) v WHERE r.status <> 'superseded' ORDER BY r.run_id;

-- Idempotent: unchanged inputs change nothing.
SELECT results_eq($$SELECT run_id FROM settle.settle_period('2026-10') ORDER BY run_id$$,
	$$SELECT run_id FROM oct ORDER BY run_id$$, 're-settling October returns the same runs');
SELECT is((SELECT count(*) FROM settle.run WHERE period = '2026-10'), 3::bigint, 'and writes no new run');

-- Explain names every number of the derivation.
SELECT results_eq($$SELECT value FROM settle.explain((SELECT run_id FROM oct WHERE code = 'north'), 'n1/ecs/a')
                    WHERE item IN ('clause', 'tier', 'basis', 'rate', 'commission')$$,
	$$VALUES ('1: when product ecs pay tiers spend'), ('band 2'), ('600.00 USD'), ('8%'), ('600.00 x 0.08 = 40.00 USD (exact)')$$,
	'explain shows clause, tier, basis, rate and the capped commission');

-- Resolving the FX exception: a rate arrives, gulf re-settles, a new run supersedes the blocked one.
SELECT settle.add_fx_rate('EUR', 'KWD', '2026-10-31', 0.3321, 'CBK');
SELECT is((SELECT count(*) FROM settle.settle_period('2026-10', 'gulf') WHERE NOT blocked), 0::bigint,
	'still blocked while the exception is open');
SELECT results_eq($$SELECT total FROM oct WHERE code = 'gulf'$$, $$VALUES (26.762::numeric)$$,
	'with the rate, g3''s 10 EUR = 3.321 KWD x 3% = 0.09963 joins the total (26.76164 -> 26.762)');
SELECT is((SELECT count(*) FROM settle.run WHERE reseller_id = settle.reseller_id('gulf') AND status = 'superseded'), 1::bigint,
	'the earlier gulf run is superseded, not changed');
SELECT results_eq($$SELECT line_key, change, delta, why FROM settle.run_diff(
	(SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('gulf') AND status = 'superseded'),
	(SELECT run_id FROM oct WHERE code = 'gulf'))$$,
	$$VALUES ('g3/oss/oct/eur', 'changed', 0.100::numeric, 'FX rate')$$,
	'run_diff says what changed and why');

-- Approve and lock north; a re-run of a locked period changes nothing.
SELECT lives_ok($$SELECT settle.approve_run((SELECT run_id FROM oct WHERE code = 'north'), 'checked')$$, 'north October approved');
SELECT lives_ok($$SELECT settle.lock_run((SELECT run_id FROM oct WHERE code = 'north'), 'closed')$$, 'north October locked');
SELECT is((SELECT status FROM settle.settle_period('2026-10', 'north')), 'locked', 'settling a locked period returns it unchanged');
SELECT throws_ok($$UPDATE settle.settlement_line SET rounded = 0$$, '42501', NULL, 'lineage is append-only');

-- November: the deferred refund of n5's September charge reverses at September's 5%: -5.00.
SELECT is((SELECT count(*) FROM settle.settle_period('2026-11', 'north')), 1::bigint, 'November settles');
SELECT results_eq($$SELECT l.line_key COLLATE "default", l.kind::text, l.rate, l.rounded FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
                    WHERE r.period = '2026-11' AND r.reseller_id = settle.reseller_id('north')$$,
	$$VALUES ('n5/ecs/sep/refund', 'r', 0.05, -5.00::numeric)$$,
	'the refund outside the window lands in the next period at the original rate');
SELECT results_eq($$SELECT total, carry_forward_in, carry_forward_out, net_payout FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id)
                    WHERE r.period = '2026-11' AND r.reseller_id = settle.reseller_id('north')$$,
	$$VALUES (-5.00::numeric, 0.00::numeric, -5.00::numeric, 0.00::numeric)$$,
	'a negative balance carries forward; nothing is paid');

-- Determinism: the same inputs give the same fingerprints and the same statement bytes.
SELECT is((SELECT count(DISTINCT v.derived_fingerprint = r.output_fingerprint) FROM settle.run r, settle.verify_run(r.run_id) v),
	1::bigint, 'every run re-derives to its own fingerprint');

-- Determinism: settling the same inputs twice (the first attempt rolled back)
-- gives the same fingerprints and the same statement CSV, byte for byte.
SELECT pg_temp.line('tokyo', t, t || '/ecs/nov', '2026-11-03', 'ecs', 12.34) FROM unnest(ARRAY['t1', 't2', 't3']) t;
CREATE FUNCTION pg_temp.statement_csv(run bigint) RETURNS text LANGUAGE sql AS $$
	SELECT string_agg(concat_ws(',', line_key, kind, customer_id, product_code, revision, rule_version, clause,
	                            tier, basis, rate, unrounded, rounded, ref), E'\n' ORDER BY line_key COLLATE "C", kind)
	       || E'\n' || (SELECT concat_ws(',', currency, lines, gross_charges, commissionable, commission, refunds,
	                                      corrections, adjustments, total, carry_forward_in, carry_forward_out, net_payout)
	                       FROM settle.statement WHERE run_id = run)
	  FROM settle.statement_lines(run)
$$;
SAVEPOINT determinism;
SELECT run_id AS first_run, encode(output_fingerprint, 'hex') AS first_fp, input_fingerprint AS first_in
  FROM settle.settle_period('2026-11', 'tokyo') \gset
SELECT md5(pg_temp.statement_csv(:first_run)) AS first_csv \gset
ROLLBACK TO SAVEPOINT determinism;
SELECT isnt((SELECT run_id FROM settle.settle_period('2026-11', 'tokyo')), :first_run::bigint, 'a second, independent run');
SELECT is((SELECT encode(output_fingerprint, 'hex') FROM settle.run WHERE period = '2026-11' AND reseller_id = settle.reseller_id('tokyo')),
	:'first_fp', 'has the same output fingerprint');
SELECT is((SELECT md5(pg_temp.statement_csv(run_id)) FROM settle.run WHERE period = '2026-11' AND reseller_id = settle.reseller_id('tokyo')),
	:'first_csv', 'and the same statement CSV bytes');

-- Tampering with a line is found.
ALTER TABLE settle.settlement_line DISABLE TRIGGER ALL;
UPDATE settle.settlement_line SET rounded = rounded + 0.01 WHERE line_key = 'f1/rds/oct';
ALTER TABLE settle.settlement_line ENABLE TRIGGER ALL;
SELECT is((SELECT verified FROM settle.verify_run((SELECT run_id FROM oct WHERE code = 'north'))), false,
	'verify_run fails after a line was tampered with');
SELECT is((SELECT problem FROM settle.verify_run((SELECT run_id FROM oct WHERE code = 'north'))),
	'recorded line f1/rds/oct (c) has a different rounded amount; the lines add up to 93.31 but the statement says 93.30',
	'and names the line');
-- no unique index stops a duplicated line (the engine never writes one): verify_run finds it
INSERT INTO settle.settlement_line
SELECT l.* FROM settle.settlement_line l JOIN oct o USING (reseller_id, run_id) WHERE o.code = 'tokyo' AND l.line_key = 't2/oss/oct';
SELECT is((SELECT problem FROM settle.verify_run((SELECT run_id FROM oct WHERE code = 'tokyo'))),
	'recorded line t2/oss/oct (c) is not the line derived at this position; 5 lines recorded, 4 derived; the lines add up to 2039 but the statement says 1837',
	'verify_run fails after a line was duplicated, and names it');

-- A line's date is its UTC date: the session's TimeZone never moves a line
-- into another month (midnight UTC on November 1 is October 31 in Los Angeles).
SELECT s.lines AS nov_lines FROM settle.run r JOIN settle.statement s USING (run_id)
 WHERE r.period = '2026-11' AND r.reseller_id = settle.reseller_id('tokyo') AND r.status = 'draft' \gset
SAVEPOINT tz;
SET LOCAL TimeZone = 'UTC';
SELECT pg_temp.line('tokyo', 't1', 't1/ecs/nov-first', '2026-11-01', 'ecs', 1000, currency => 'JPY');
SET LOCAL TimeZone = 'America/Los_Angeles';
SELECT run_id AS tz_run FROM settle.settle_period('2026-11', 'tokyo') \gset
SELECT is((SELECT lines FROM settle.statement WHERE run_id = :tz_run),
	:nov_lines::bigint + 1, 'a line at midnight UTC on November 1 settles in November in a Los Angeles session');
ROLLBACK TO SAVEPOINT tz;

-- Bad input: clear errors, nothing written.
SELECT throws_ok($$SELECT settle.settle_period('2026-13')$$, '22007', 'invalid period "2026-13"', 'month 13');
SELECT throws_ok($$SELECT settle.settle_period('202610')$$, '22007', NULL, 'no dash');
SELECT throws_ok($$SELECT settle.settle_period('2026-10', 'nobody')$$, '23503', 'unknown reseller "nobody"', 'unknown reseller');
SELECT throws_ok($$SELECT settle.approve_run(999999, 'x')$$, 'P0002', 'unknown run 999999', 'unknown run');
SELECT throws_ok($$SELECT settle.lock_run((SELECT run_id FROM oct WHERE code = 'tokyo'), 'x')$$, '55000', NULL,
	'a draft cannot be locked');
SELECT is((SELECT count(*) FROM settle.run), 7::bigint, 'and no run was written by the refusals');

SELECT * FROM finish();
ROLLBACK;
