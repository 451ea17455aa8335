-- Observability and retention: period states, data quality, sanity checks,
-- what changed since the last run, and a purge that keeps everything a
-- locked period, an open exception or the audit trail needs.
BEGIN;
SELECT plan(16);

SET LOCAL settle.reason = 'observability test';
SELECT settle.add_reseller('ob', 'Observed');
SELECT settle.add_customer('ob', 'c1', 'Customer 1');
SELECT settle.set_agreement('ob', '2026-01-01', 'USD');
SELECT settle.publish_rule('ob', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('ob')),
	'2026-01-01', 'currency USD
otherwise pay 10%', 'schedule');
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('ob-files', 'focus_csv', 'file:///dev/null');
CREATE FUNCTION pg_temp.page(age interval) RETURNS bigint LANGUAGE sql AS $$
	INSERT INTO settle.raw_page (connector_id, request, http_status, body, body_sha256, requested_at, received_at)
	SELECT connector_id, '{}', 200, '\x7b7d', sha256('\x7b7d'), now() - age, now() - age
	  FROM settle.connector WHERE name = 'ob-files' RETURNING raw_page_id
$$;
CREATE FUNCTION pg_temp.line(key text, month date, billed numeric, page bigint, sku text DEFAULT 'ecs.g7') RETURNS void
LANGUAGE sql AS $$
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, raw_page_id, connector_id,
		source_item, billing_account_id, billing_period_start, charge_period_start, charge_period_end,
		charge_category, product_code, sku_id, billing_currency, list_cost, billed_cost)
	SELECT settle.reseller_id('ob'), key, 1, c.customer_id, sha256(convert_to(key, 'UTF8')), page, p.connector_id,
	       'PayAsYouGoBill', 'acct-ob', month, month, month + 1, 'Usage', 'ecs', sku, 'USD', billed, billed
	  FROM settle.customer c, settle.raw_page p WHERE c.code = 'c1' AND p.raw_page_id = page
$$;

SELECT pg_temp.page('500 days') AS old_used \gset
SELECT pg_temp.page('500 days') AS old_unused \gset
SELECT pg_temp.page('500 days') AS old_flagged \gset
SELECT pg_temp.page('1 day') AS new_unused \gset
SELECT pg_temp.line('ob/1/sep', '2026-09-01', 100, :old_used);
SELECT pg_temp.line('ob/2/oct', '2026-10-01', 400, :new_unused, NULL);
SELECT settle.open_exception(settle.reseller_id('ob'), 'validation', 'page:' || :old_flagged, '2026-10',
	jsonb_build_object('raw_page_id', :old_flagged), '{}', 'warning');

SELECT settle.settle_period('2026-09', 'ob');
SELECT is((SELECT state FROM settle.period_status WHERE reseller = 'ob' AND period = '2026-09'), 'ready', 'a clean draft is ready');
SELECT settle.approve_run((SELECT run_id FROM settle.run WHERE period = '2026-09' AND reseller_id = settle.reseller_id('ob')), 'ok');
SELECT is((SELECT state FROM settle.period_status WHERE reseller = 'ob' AND period = '2026-09'), 'in_review', 'approved: in review');
SELECT settle.lock_run((SELECT run_id FROM settle.run WHERE period = '2026-09' AND reseller_id = settle.reseller_id('ob')), 'closed');
SELECT is((SELECT state FROM settle.period_status WHERE reseller = 'ob' AND period = '2026-09'), 'locked', 'locked');

SELECT settle.settle_period('2026-10', 'ob');
SELECT is((SELECT state FROM settle.period_status WHERE reseller = 'ob' AND period = '2026-10'), 'in_review',
	'October has an open warning: in review');
SELECT is((SELECT open_exceptions FROM settle.period_status WHERE reseller = 'ob' AND period = '2026-10'), 2::bigint,
	'two open exceptions: the page flag and the swing alarm');
SELECT results_eq($$SELECT check_name, ok FROM settle.sanity_checks WHERE period = '2026-10'
                     AND reseller_id = settle.reseller_id('ob') ORDER BY check_name$$,
	$$VALUES ('blocked_run'::text, true), ('negative_commission', true), ('reconciliation', true), ('swing', false)$$,
	'sanity: the total went from 10.00 to 40.00, beyond the 50% swing threshold');
SELECT is((SELECT detail FROM settle.sanity_checks WHERE period = '2026-10' AND reseller_id = settle.reseller_id('ob') AND check_name = 'swing'),
	'total 40.00 USD against 10.00 the period before (threshold 50%)', 'with the numbers');
SELECT is((SELECT severity FROM settle.exception WHERE kind = 'sanity_check' AND reseller_id = settle.reseller_id('ob')), 'warning',
	'the alarm is a non-blocking warning exception');
SELECT results_eq($$SELECT lines, validated, failed, missing_sku_rate FROM settle.data_quality
                    WHERE reseller_id = settle.reseller_id('ob') AND period = '2026-10'$$,
	$$VALUES (1::bigint, 1::bigint, 0::bigint, 1.0000::numeric)$$, 'data quality: one line, its sku missing');
SELECT results_eq($$SELECT commission, total, net_payout, reconciliation_deltas FROM settle.finance_summary WHERE reseller = 'ob' AND period = '2026-10'$$,
	$$VALUES (40.00::numeric, 40.00::numeric, 40.00::numeric, 0::bigint)$$, 'finance summary of October');

-- Retention: only the old page nothing refers to goes.
SELECT results_eq($$SELECT raw_pages FROM settle.purge('400 days')$$, $$VALUES (1::bigint)$$, 'purge deletes one raw page');
SELECT is((SELECT count(*) FROM settle.raw_page WHERE raw_page_id = :old_unused), 0::bigint, 'the old page nothing refers to is gone');
SELECT is((SELECT count(*) FROM settle.raw_page WHERE raw_page_id IN (:old_used, :old_flagged, :new_unused)), 3::bigint,
	'pages of a locked period''s lines, of an open exception, and recent pages are kept');
SELECT throws_ok($$SELECT settle.purge('1 hour')$$, '22023', NULL, 'a retention below a day is refused');
SELECT throws_ok(format('DELETE FROM settle.raw_page WHERE raw_page_id = %s', :new_unused), '42501', NULL,
	'outside purge, raw pages stay append-only');
SELECT ok((SELECT verified FROM settle.verify_audit()), 'the audit trail is untouched and verifies');

SELECT * FROM finish();
ROLLBACK;
