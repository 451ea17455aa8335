-- settle.recon_scan, the one pass over a period's lines that settle.reconcile
-- reads instead of a copy of the lines: its groups equal the aggregates of
-- the period's current lines computed in SQL (settle.money_total,
-- settle.line_fingerprint, counts, days, lines off the identity), line for
-- line, on lines made to be awkward: revisions (one moving its line to
-- another product, one to another reseller), upper- and lower-case product
-- codes, null amounts, list costs, currencies, accounts and products, days
-- outside the first 62, a yen group, history in other periods and a record
-- held by two keys.  Its tuple ids are exactly the current lines.
BEGIN;
SELECT plan(12);

CREATE TEMP TABLE scan_line (reseller_id bigint, line_key text, revision integer, account text, product text,
	currency char(3), billed numeric, list numeric, discount numeric, charge timestamptz, record text, period date);
INSERT INTO scan_line VALUES
	-- a plain group: three lines, one revised twice (10.00 -> 12.50 -> 11.25)
	(7, 'k/a1/ecs/1', 1, 'a1', 'ECS', 'USD', 10.00, 10.00, 0, '2026-10-01 00:00+00', 'r1', '2026-10-01'),
	(7, 'k/a1/ecs/1', 2, 'a1', 'ecs', 'USD', 12.50, 12.50, 0, '2026-10-01 00:00+00', 'r1', '2026-10-01'),
	(7, 'k/a1/ecs/1', 3, 'a1', 'Ecs', 'USD', 11.25, 11.25, 0, '2026-10-01 00:00+00', 'r1', '2026-10-01'),
	(7, 'k/a1/ecs/2', 1, 'a1', 'ecs', 'USD', 0.333, 0.333, 0, '2026-10-02 23:59:59+00', 'r2', '2026-10-01'),
	(7, 'k/a1/ecs/3', 1, 'a1', 'ecs', 'USD', -4.10, -4.00, 0.05, '2026-09-30 23:00-02', 'r3', '2026-10-01'),
	-- a revision moving its line to another product: the oss group loses its only line
	(7, 'k/a1/oss/1', 1, 'a1', 'oss', 'USD', 5.00, 5.00, 0, '2026-10-05 12:00+00', 'r4', '2026-10-01'),
	(7, 'k/a1/oss/1', 2, 'a1', 'rds', 'USD', 6.00, 6.00, 0, '2026-10-05 12:00+00', 'r4', '2026-10-01'),
	-- off the identity (list - discount = 7.99, billed 8.00), and days outside the first 62
	(7, 'k/a2/ecs/1', 1, 'a2', 'ecs', 'USD', 8.00, 8.00, 0.01, '2026-12-15 00:00+00', 'r5', '2026-10-01'),
	(7, 'k/a2/ecs/2', 1, 'a2', 'ecs', 'USD', 1.00, 1.00, 0, '2026-09-30 00:00+00', 'r6', '2026-10-01'),
	(7, 'k/a2/ecs/3', 1, 'a2', 'ecs', 'USD', 2.00, 2.00, 0, 'infinity', 'r7', '2026-10-01'),
	-- a null amount, a null list cost, a null currency, a null account and product
	(9, 'k/a3/ecs/1', 1, 'a3', 'ecs', 'JPY', NULL, 100, 0, '2026-10-10 00:00+00', 'r8', '2026-10-01'),
	(9, 'k/a3/ecs/2', 1, 'a3', 'ecs', 'JPY', 1500, NULL, 0, '2026-10-11 00:00+00', 'r9', '2026-10-01'),
	(9, 'k/a3/ecs/3', 1, 'a3', 'ecs', NULL, 3.00, 3.00, 0, '2026-10-12 00:00+00', 'r10', '2026-10-01'),
	(9, 'k/a3/ecs/4', 1, 'a3', 'ecs', NULL, NULL, 3.00, 0, '2026-10-12 00:00+00', 'r11', '2026-10-01'),
	(9, 'k/x/1', 1, NULL, NULL, 'USD', 1.25, 1.25, 0, '2026-10-13 00:00+00', NULL, '2026-10-01'),
	(9, 'k/x/2', 1, NULL, 'ecs', 'USD', 1.75, 1.75, 0, '2026-10-14 00:00+00', NULL, '2026-10-01'),
	-- one source record under two keys
	(9, 'k/a4/ecs/1', 1, 'a4', 'ecs', 'USD', 50.00, 50.00, 0, '2026-10-20 00:00+00', 'R-100', '2026-10-01'),
	(9, 'k/a4/ecs/1-dup', 1, 'a4', 'ecs', 'USD', 50.00, 50.00, 0, '2026-10-20 00:00+00', 'R-100', '2026-10-01'),
	-- a revision moving its line from reseller 0 to reseller 9
	(0, 'k/a5/ecs/1', 1, 'a5', 'ecs', 'USD', 3.00, 3.00, 0, '2026-10-21 00:00+00', 'r12', '2026-10-01'),
	(9, 'k/a5/ecs/1', 2, 'a5', 'ecs', 'USD', 3.50, 3.50, 0, '2026-10-21 00:00+00', 'r12', '2026-10-01'),
	-- history: other periods' lines, one with the same account and product
	(7, 'k/a1/ecs/old', 1, 'a1', 'ecs', 'USD', 99.00, 99.00, 0, '2026-09-03 00:00+00', 'r1', '2026-09-01'),
	(7, 'k/a1/ecs/new', 1, 'a1', 'ecs', 'USD', 77.00, 77.00, 0, '2026-11-03 00:00+00', 'r1', '2026-11-01');

INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, source_record_id,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
	product_code, billing_currency, list_cost, discount, billed_cost)
SELECT s.reseller_id, s.line_key, s.revision, sha256(convert_to(s.line_key || s.revision, 'UTF8')), 'PayAsYouGoBill',
       s.record, s.account, s.period, s.charge, s.charge, 'Usage', s.product, s.currency, s.list, s.discount, s.billed
  FROM scan_line s;

-- the period's current lines and their groups, in SQL (as settle.reconcile computed them before recon_scan)
CREATE FUNCTION pg_temp.expected(resellers bigint[]) RETURNS TABLE (billing_account_id text, product_code text,
	currency text, reseller_id bigint, mt settle.money_total, fp bytea, n bigint, days bigint, days_out bigint,
	off_identity bigint)
LANGUAGE sql AS $$
	WITH l AS (
		SELECT DISTINCT ON (b.line_key) b.reseller_id, b.line_key, b.billing_account_id, lower(b.product_code) AS product_code,
		       b.billing_currency::text AS currency, b.billed_cost, b.list_cost, b.discount, b.coupon_deduction,
		       (b.charge_period_start AT TIME ZONE 'UTC')::date AS day
		  FROM settle.bill_line b
		 WHERE b.reseller_id = ANY (resellers) AND b.billing_period_start >= '2026-10-01' AND b.billing_period_start < '2026-11-01'
		 ORDER BY b.line_key, b.revision DESC)
	SELECT l.billing_account_id, l.product_code, l.currency, max(l.reseller_id),
	       settle.money_total(l.billed_cost, l.currency), settle.line_fingerprint(l.line_key, l.billed_cost), count(*),
	       bit_or(1::bigint << (l.day - '2026-10-01'::date)) FILTER (WHERE l.day >= '2026-10-01' AND l.day < '2026-10-01'::date + 62),
	       count(*) FILTER (WHERE l.day IS NULL OR l.day < '2026-10-01' OR l.day >= '2026-10-01'::date + 62),
	       count(*) FILTER (WHERE l.list_cost IS NOT NULL AND l.billed_cost IS NOT NULL
	                          AND l.billed_cost <> l.list_cost - l.discount - l.coupon_deduction)
	  FROM l GROUP BY l.billing_account_id, l.product_code, l.currency
$$;
CREATE TEMP TABLE got AS SELECT * FROM settle.recon_scan(ARRAY[0, 7, 9]::bigint[], '2026-10-01', '2026-11-01');

SELECT is((SELECT count(*) FROM got), 9::bigint, 'nine groups: the revised-away oss group and history are not among them');
SELECT set_eq($$SELECT billing_account_id, product_code, currency, reseller_id, mt::text, fp, n, days, days_out, off_identity FROM got$$,
	$$SELECT billing_account_id, product_code, currency, reseller_id, mt::text, fp, n, days, days_out, off_identity
	    FROM pg_temp.expected(ARRAY[0, 7, 9]::bigint[])$$,
	'every group equals the SQL aggregates of the current lines (owner, money_total, fingerprint, count, days, identity)');
SELECT results_eq($$SELECT reseller_id, (mt).total, (mt).lines, n, days, days_out, off_identity FROM got
                    WHERE billing_account_id = 'a1' AND product_code = 'ecs'$$,
	$$VALUES (7::bigint, 7.483::numeric, 3::bigint, 3::bigint, 3::bigint, 0::bigint, 1::bigint)$$,
	'a1/ecs: the latest revision 11.25 + 0.333 - 4.10 = 7.483 over 3 lines on days 1 and 2 (23:00-02 is day 1 in UTC); -4.00 - 0.05 is not -4.10');
SELECT results_eq($$SELECT (mt).total, n, days, days_out, off_identity FROM got WHERE billing_account_id = 'a2'$$,
	$$VALUES (11.00::numeric, 3::bigint, NULL::bigint, 3::bigint, 1::bigint)$$,
	'a2: lines before the month, past 62 days and at infinity are counted apart; 8.00 billed against 7.99 is off');
SELECT results_eq($$SELECT currency, (mt).lines, (mt).total::text, (mt).mixed, n, off_identity FROM got
                    WHERE billing_account_id = 'a3' ORDER BY currency NULLS LAST$$,
	$$VALUES ('JPY', 1::bigint, '1500', false, 2::bigint, 0::bigint), (NULL, 1, NULL, true, 2, 0)$$,
	'a3: a null amount is counted, not added; amounts without a currency are mixed; a null list cost is never off');
SELECT results_eq($$SELECT product_code, (mt).total, n FROM got WHERE billing_account_id IS NULL ORDER BY product_code NULLS LAST$$,
	$$VALUES ('ecs', 1.75::numeric, 1::bigint), (NULL, 1.25, 1)$$,
	'lines without an account or product form their own groups');
SELECT results_eq($$SELECT reseller_id, (mt).total FROM got WHERE billing_account_id = 'a5'$$,
	$$VALUES (9::bigint, 3.50::numeric)$$, 'a5: the revision moved to reseller 9 replaces the line of reseller 0');
SELECT set_eq($$SELECT t FROM got, unnest(got.tids) t$$,
	$$SELECT b.ctid AS t FROM settle.bill_line b WHERE b.billing_period_start = '2026-10-01'
	    AND NOT EXISTS (SELECT 1 FROM settle.bill_line n WHERE n.line_key = b.line_key AND n.revision > b.revision)$$,
	'the tuple ids are exactly the current lines of the period');
SELECT set_eq($$SELECT l.line_key FROM settle.recon_lines(ARRAY(SELECT t FROM got, unnest(got.dup_tids) t)) l$$,
	$$VALUES ('k/a4/ecs/1'), ('k/a4/ecs/1-dup')$$,
	'the duplicate candidates are the two lines of record R-100 (r1''s history and r4''s revisions are not)');

-- one reseller: its lines only, its revisions only
SELECT set_eq($$SELECT billing_account_id, product_code, currency, reseller_id, mt::text, fp, n, days, days_out, off_identity
	              FROM settle.recon_scan(ARRAY[0]::bigint[], '2026-10-01', '2026-11-01')$$,
	$$SELECT billing_account_id, product_code, currency, reseller_id, mt::text, fp, n, days, days_out, off_identity
	    FROM pg_temp.expected(ARRAY[0]::bigint[])$$,
	'reseller 0 alone: its revision 1 of a5 is its current line');
SELECT is((SELECT count(*) FROM settle.recon_scan(ARRAY[]::bigint[], '2026-10-01', '2026-11-01')), 0::bigint,
	'no reseller: no group');
SELECT throws_ok($$SELECT * FROM settle.recon_scan(ARRAY[0]::bigint[], 'infinity', '2026-11-01')$$, '22023',
	'the period''s first day must be a finite date', 'an infinite first day is refused (22023)');

SELECT * FROM finish();
ROLLBACK;
