-- Volume: one reseller with more bill lines than settle_period reads in one
-- chunk (65,536 index entries), every key revised, so chunks split a key's
-- revisions.  The statement is checked against the bill lines themselves; a
-- line that failed validation earns nothing and blocks the run.
BEGIN;
SELECT plan(10);
SET LOCAL settle.reason = 'volume test';
SELECT settle.add_reseller('vol', 'Volume Cloud');
SELECT settle.add_customer('vol', 'v1', 'Volume customer');
SELECT settle.set_agreement('vol', '2026-01-01', 'USD');
SELECT count(*) FROM settle.publish_rule('vol', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('vol')),
	'2026-01-01', $$currency USD
otherwise pay 5%$$, 'flat 5%');

-- 70,000 keys; revision 1 of every key, revision 2 of every key, and a third
-- revision of the first key (which shifts the chunk boundary into a key).
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost)
SELECT settle.reseller_id('vol'), format('v1/ecs/i-%s', lpad(i::text, 6, '0')), rev,
       (SELECT customer_id FROM settle.customer WHERE code = 'v1'), sha256(convert_to(i || '/' || rev, 'UTF8')),
       'PayAsYouGoBill', 'acct-v1', date '2026-10-01',
       timestamptz '2026-10-01 00:00:00+00' + make_interval(days => i % 31),
       timestamptz '2026-10-02 00:00:00+00' + make_interval(days => i % 31),
       'Usage', 'ecs', 'USD', i % 97 + rev, i % 97 + rev
  FROM generate_series(1, 70000) i, generate_series(1, 2) rev
UNION ALL
SELECT settle.reseller_id('vol'), 'v1/ecs/i-000001', 3, (SELECT customer_id FROM settle.customer WHERE code = 'v1'),
       sha256('third'), 'PayAsYouGoBill', 'acct-v1', date '2026-10-01', timestamptz '2026-10-02 00:00:00+00',
       timestamptz '2026-10-03 00:00:00+00',
       'Usage', 'ecs', 'USD', 1000, 1000;
-- and one line that failed validation at ingestion: it earns nothing
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost, validation_errors)
VALUES (settle.reseller_id('vol'), 'v1/ecs/i-035000x', 1, (SELECT customer_id FROM settle.customer WHERE code = 'v1'),
	sha256('invalid'), 'PayAsYouGoBill', 'acct-v1', date '2026-10-01', timestamptz '2026-10-05 00:00:00+00',
	timestamptz '2026-10-06 00:00:00+00', 'Usage', 'ecs', 'USD', 500, 400, '{"billed cost exceeds list cost"}');

CREATE TEMP TABLE latest AS
SELECT DISTINCT ON (line_key) line_key, revision, billed_cost
  FROM settle.bill_line WHERE reseller_id = settle.reseller_id('vol') AND validation_errors = '{}'
 ORDER BY line_key, revision DESC;

SELECT run_id AS vol_run FROM settle.settle_period('2026-10', 'vol') \gset

SELECT is((SELECT lines FROM settle.statement WHERE run_id = :vol_run), 70001::bigint,
	'one line per key, 70,001 keys across two read chunks');
SELECT is((SELECT ARRAY[basis, unrounded, rounded] FROM settle.settlement_line
            WHERE run_id = :vol_run AND line_key = 'v1/ecs/i-035000x'), ARRAY[0, 0, 0]::numeric[],
	'the line that failed validation earns nothing');
SELECT is((SELECT count(*) FROM settle.exception WHERE reseller_id = settle.reseller_id('vol')
            AND kind = 'validation' AND scope_key = 'line:v1/ecs/i-035000x' AND state = 'pending_review'), 1::bigint,
	'and opens an exception');
SELECT ok((SELECT blocked FROM settle.run WHERE run_id = :vol_run), 'which blocks the run');
SELECT is((SELECT count(*) FROM settle.settlement_line s JOIN latest l
             ON l.line_key = s.line_key AND l.revision = s.revision
            WHERE s.run_id = :vol_run AND s.kind = 'c'), 70000::bigint,
	'every line settled at its latest revision');
SELECT is((SELECT revision FROM settle.settlement_line WHERE run_id = :vol_run AND line_key = 'v1/ecs/i-000001'), 3,
	'the key with three revisions settled at the third');
SELECT is((SELECT gross_charges FROM settle.statement WHERE run_id = :vol_run),
	(SELECT sum(billed_cost) FROM latest), 'gross charges are the latest revisions'' billed cost');
SELECT is((SELECT commission FROM settle.statement WHERE run_id = :vol_run),
	(SELECT sum(billed_cost) * 0.05 FROM latest), 'commission is 5% of them, to the cent');
SELECT is((SELECT sum(rounded) FROM settle.settlement_line WHERE run_id = :vol_run),
	(SELECT commission FROM settle.statement WHERE run_id = :vol_run), 'and the lines add up to it');

-- A second run after a change.  The lineage has only a BRIN index on
-- run_id, which settle_period feeds one row per heap page: the second run's
-- first rows land in the block range the first run's summary covers, and a
-- lookup through the index (sequential scans off) still finds every row.
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost)
VALUES (settle.reseller_id('vol'), 'v1/ecs/i-000002', 3, (SELECT customer_id FROM settle.customer WHERE code = 'v1'),
	sha256('changed'), 'PayAsYouGoBill', 'acct-v1', date '2026-10-01', timestamptz '2026-10-03 00:00:00+00',
	timestamptz '2026-10-04 00:00:00+00', 'Usage', 'ecs', 'USD', 2000, 2000);
SELECT run_id AS vol_run2 FROM settle.settle_period('2026-10', 'vol') \gset
SET LOCAL enable_seqscan = off;
SELECT results_eq(format($$SELECT run_id, count(*) FROM settle.settlement_line WHERE run_id IN (%s, %s) GROUP BY run_id ORDER BY run_id$$,
                         :vol_run, :vol_run2),
	format('VALUES (%s::bigint, 70001::bigint), (%s, 70001)', :vol_run, :vol_run2),
	'through the BRIN index: every line of both runs');
RESET enable_seqscan;

SELECT * FROM finish();
ROLLBACK;
