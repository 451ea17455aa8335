-- Ingestion invariants that need no network: the signer's contract, failed
-- runs are recorded not raised, and a FOCUS file written by the server and
-- read back through file:// lands with exact counts, sums, revisions and
-- exceptions.
BEGIN;
SELECT plan(28);

SELECT has_function('settle', 'acs3_authorization',
	ARRAY['text', 'text', 'jsonb', 'jsonb', 'bytea', 'text', 'text'], 'acs3_authorization has its documented signature');
SELECT function_returns('settle', 'acs3_authorization',
	ARRAY['text', 'text', 'jsonb', 'jsonb', 'bytea', 'text', 'text'], 'text', '... and returns text');
SELECT is(
	split_part(settle.acs3_authorization('POST', 'ecs.cn-shanghai.aliyuncs.com',
		'{"ImageId": "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd", "RegionId": "cn-shanghai"}',
		'{"x-acs-action": "RunInstances", "x-acs-version": "2014-05-26", "x-acs-date": "2023-10-26T10:22:32Z",
		  "x-acs-signature-nonce": "3156853299f313e23d1673dc12e1703d"}', '', 'YourAccessKeyId', 'YourAccessKeySecret'),
		'Signature=', 2),
	'06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0',
	'reproduces the Alibaba documentation example');
SELECT isnt(settle.acs3_authorization('POST', 'h', '{"a": "1"}', '{}', '', 'id', 's'),
	settle.acs3_authorization('POST', 'h', '{"a": "2"}', '{}', '', 'id', 's'), 'query parameters are signed');
SELECT is(settle.acs3_authorization('POST', 'h', '{}', '{"accept": "x", "user-agent": "y"}', '', 'id', 's'),
	settle.acs3_authorization('POST', 'h', '{}', '{}', '', 'id', 's'), 'accept and user-agent are not signed');
SELECT isnt(settle.acs3_authorization('POST', 'h', '{}', '{}', 'body', 'id', 's'),
	settle.acs3_authorization('POST', 'h', '{}', '{}', '', 'id', 's'), 'the body hash is signed');

SELECT throws_ok($$SELECT settle.ingest_now('nope')$$, '42704', NULL, 'unknown connector: 42704');
INSERT INTO settle.connector (name, kind, endpoint, secret_name)
VALUES ('tap_http', 'alibaba_bss', 'http://127.0.0.1:9/', 'tap');
SET LOCAL client_min_messages = warning;
SET LOCAL settle.allow_insecure_transport = off;
SELECT is((SELECT (r).status || ' ' || (r).error_sqlstate FROM (SELECT settle.ingest_now('tap_http') r) s),
	'failed 42501', 'http endpoint refused: failed run, not an error');
SELECT is((SELECT count(*) FROM settle.ingest_run r JOIN settle.connector c USING (connector_id)
	WHERE c.name = 'tap_http' AND r.status = 'failed' AND r.finished_at IS NOT NULL), 1::bigint, '... and recorded');

-- a FOCUS file, written by the server
SET LOCAL settle.reason = 'pgtap';
SELECT settle.add_reseller('TAP', 'Tap reseller');
SELECT settle.set_agreement('TAP', '2020-01-01', 'USD');
SELECT settle.add_customer('TAP', 'TC', 'Tap customer');
SELECT settle.map_account('4000000000000001', 'TAP', 'TC');
SELECT set_config('tap.file', current_setting('data_directory') || '/settle_tap_focus.csv', true);
CREATE TEMP TABLE focus_rows ("BillingAccountId" text, "BillingPeriodStart" text, "ChargePeriodStart" text,
	"ChargeCategory" text, "BilledCost" text, "ListCost" text, "BillingCurrency" text, "ServiceName" text,
	"ResourceId" text, "SkuId" text, "x_ProductCode" text);
INSERT INTO focus_rows
SELECT '4000000000000001', '2026-10-01T00:00:00Z', '2026-10-' || lpad((1 + i % 28)::text, 2, '0') || 'T00:00:00Z',
       'Usage', (i * 0.001)::text || '00001', (i * 0.001)::text, 'USD', 'ECS', 'i-' || i, 'sku', 'ecs'
  FROM generate_series(1, 1000) i;
INSERT INTO focus_rows VALUES ('4999999999999999', '2026-10-01T00:00:00Z', '2026-10-02T00:00:00Z', 'Usage',
	'1', '1', 'USD', 'ECS', 'i-x', 'sku', 'ecs');
INSERT INTO focus_rows VALUES ('4000000000000001', '2026-10-01T00:00:00Z', '2026-10-02T00:00:00Z', 'Usage',
	'1', '1', 'ZZZ', 'ECS', 'i-y', 'sku', 'ecs');
DO $$ BEGIN
	EXECUTE format('COPY focus_rows TO %L WITH (FORMAT csv, HEADER)', current_setting('tap.file'));
END $$;
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('tap_focus', 'focus_csv', 'file://' || current_setting('tap.file'));
SET LOCAL settle.allow_insecure_transport = on;
SELECT is((SELECT (r).status || ' ' || (r).lines_new || ' ' || (r).lines_invalid FROM (SELECT settle.ingest_now('tap_focus') r) s),
	'succeeded 1002 2', 'FOCUS file ingested: 1002 lines, 2 invalid');
SELECT is((SELECT sum(billed_cost) FROM settle.bill_line b JOIN settle.connector c USING (connector_id)
	WHERE c.name = 'tap_focus' AND b.billing_account_id = '4000000000000001' AND b.billing_currency = 'USD'),
	(SELECT sum("BilledCost"::numeric) FROM focus_rows WHERE "BillingAccountId" = '4000000000000001' AND "BillingCurrency" = 'USD'),
	'exact sum of BilledCost (no rounding through double)');
SELECT is((SELECT count(*) FROM settle.bill_line WHERE reseller_id = settle.reseller_id('TAP')), 1001::bigint,
	'mapped lines carry the reseller');
SELECT is((SELECT count(*) FROM settle.exception WHERE kind = 'unmapped_customer' AND scope_key LIKE 'account:4999999999999999:%'),
	1::bigint, 'unmapped account opens one exception');
SELECT is((SELECT validation_errors FROM settle.bill_line WHERE resource_id = 'i-y'), '{unknown_currency:ZZZ}'::text[],
	'unknown currency kept on the line');
SELECT is((SELECT count(*) FROM settle.exception WHERE kind = 'validation' AND payload::text LIKE '%unknown_currency:ZZZ%'),
	1::bigint, '... and opens a validation exception');
SELECT is((SELECT (r).lines_unchanged FROM (SELECT settle.ingest_now('tap_focus') r) s), 1002::bigint,
	're-import of the same file is a no-op');
SELECT is((SELECT count(*) FROM settle.bill_line b JOIN settle.connector c USING (connector_id) WHERE c.name = 'tap_focus'),
	1002::bigint, '... no duplicates');
SELECT is((SELECT count(*) FROM settle.raw_page r JOIN settle.connector c USING (connector_id) WHERE c.name = 'tap_focus'),
	2::bigint, 'each import keeps its raw copy');
SELECT is((SELECT last_status FROM settle.ingest_health WHERE name = 'tap_focus'), 'succeeded', 'health view shows the import');
SELECT throws_ok($$UPDATE settle.bill_line SET billed_cost = 0 WHERE resource_id = 'i-1'$$, NULL, NULL,
	'bill lines are append-only');

-- Two natural keys with the same 32-bit hash (bill_line_key_idx is a hash
-- index): the second is a new line, not a revision of the first.
SELECT is(hashtext('focus:4000000000000001//2026-10-02T00:00:00Z/c-3277/sku/Usage/#1' COLLATE "C"),
	hashtext('focus:4000000000000001//2026-10-02T00:00:00Z/c-349873/sku/Usage/#1' COLLATE "C"),
	'the two keys collide in the hash index');
CREATE TEMP TABLE focus_one (LIKE focus_rows);
INSERT INTO focus_one VALUES ('4000000000000001', '2026-10-01T00:00:00Z', '2026-10-02T00:00:00Z', 'Usage',
	'5', '5', 'USD', 'ECS', 'c-3277', 'sku', 'ecs');
DO $$ BEGIN
	EXECUTE format('COPY focus_one TO %L WITH (FORMAT csv, HEADER)', current_setting('tap.file') || '.a');
	UPDATE focus_one SET "ResourceId" = 'c-349873', "BilledCost" = '7', "ListCost" = '7';
	EXECUTE format('COPY focus_one TO %L WITH (FORMAT csv, HEADER)', current_setting('tap.file') || '.b');
END $$;
INSERT INTO settle.connector (name, kind, endpoint)
VALUES ('tap_a', 'focus_csv', 'file://' || current_setting('tap.file') || '.a'),
       ('tap_b', 'focus_csv', 'file://' || current_setting('tap.file') || '.b');
SELECT is((SELECT (r).lines_new FROM (SELECT settle.ingest_now('tap_a') r) s), 1::bigint, 'the first key is new');
SELECT is((SELECT (r).lines_new || ' ' || (r).lines_revised FROM (SELECT settle.ingest_now('tap_b') r) s), '1 0',
	'and so is the second: the probe rechecks the key');

-- withdrawals: the shared helper adds one zero-amount revision with the reason
SELECT is(settle.withdraw_lines((SELECT connector_id FROM settle.connector WHERE name = 'tap_a'),
	ARRAY['focus:4000000000000001//2026-10-02T00:00:00Z/c-3277/sku/Usage/#1'], 'tap: gone from the file'),
	1::bigint, 'withdraw_lines withdraws the line');
SELECT is((SELECT revision || ' ' || billed_cost || ' ' || list_cost || ' ' || withdrawal_reason
	FROM settle.bill_line_current WHERE line_key = 'focus:4000000000000001//2026-10-02T00:00:00Z/c-3277/sku/Usage/#1'),
	'2 0 0 tap: gone from the file', '... as revision 2 with zero amounts and the reason');
SELECT is(settle.withdraw_lines((SELECT connector_id FROM settle.connector WHERE name = 'tap_a'),
	ARRAY['focus:4000000000000001//2026-10-02T00:00:00Z/c-3277/sku/Usage/#1'], 'again'),
	0::bigint, 'a withdrawn line is not withdrawn twice');
SELECT is(settle.withdraw_lines((SELECT connector_id FROM settle.connector WHERE name = 'tap_b'),
	ARRAY['focus:4000000000000001//2026-10-02T00:00:00Z/c-3277/sku/Usage/#1'], 'not mine'),
	0::bigint, 'a connector withdraws only its own lines');

-- connector config: unknown keys are refused, naming the key
SELECT throws_ok($$INSERT INTO settle.connector (name, kind, endpoint, config)
	VALUES ('tap_typo', 'focus_csv', 'file:///x.csv', '{"billing_cylce": "2026-10"}')$$,
	'22023', 'unknown config key "billing_cylce" for a focus_csv connector', 'unknown config keys: 22023 naming the key');

SELECT * FROM finish();
ROLLBACK;
