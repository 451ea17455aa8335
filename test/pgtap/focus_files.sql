-- FOCUS files as the clouds write them, through focus_csv and file:// (files
-- written by the server): a UTF-8 byte order mark, FOCUS 1.2's extra columns,
-- a missing required column refused with 42703 naming it, ISO 8601 dates
-- (accepted forms, UTC when no zone is written, anything else refused per
-- line naming the field), null tokens per connector, and products by name
-- through settle.product_mapping (SkuId before ServiceName, one exception
-- per unmapped name).
BEGIN;
SELECT plan(20);
SET LOCAL client_min_messages = warning;
SET LOCAL settle.reason = 'pgtap';
SET LOCAL settle.allow_insecure_transport = on;
SET LOCAL TimeZone = 'Asia/Shanghai';

CREATE FUNCTION pg_temp.file(name text, lines text[]) RETURNS text LANGUAGE plpgsql AS $$
DECLARE path text := current_setting('data_directory') || '/settle_tap_' || name || '.csv';
BEGIN
	EXECUTE format('COPY (SELECT unnest(%L::text[])) TO %L', lines, path);
	RETURN 'file://' || path;
END $$;
CREATE FUNCTION pg_temp.pull(connector text) RETURNS text LANGUAGE sql AS $$
	SELECT (r).status || ' ' || coalesce((r).error_sqlstate, '-') || ' ' || (r).lines_new || ' ' || (r).lines_invalid
	  FROM (SELECT settle.ingest_now(connector) r) s
$$;

SELECT settle.add_reseller('FF', 'Focus files');
SELECT settle.set_agreement('FF', '2020-01-01', 'USD');
SELECT settle.add_customer('FF', 'C', 'Customer');
SELECT settle.map_account('/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6', 'FF', 'C');

-- 1.2 column set, with a byte order mark before the first column name
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('ff12', 'focus_csv', pg_temp.file('v12', ARRAY[
	convert_from('\xefbbbf'::bytea, 'UTF8') || 'BillingAccountId,BillingAccountType,SubAccountId,SubAccountType,InvoiceId,BillingPeriodStart,ChargePeriodStart,ChargePeriodEnd,ChargeCategory,ChargeClass,BilledCost,ListCost,BillingCurrency,PricingCurrency,PricingCurrencyListUnitPrice,ServiceName,SkuId,ResourceId,x_ProductCode',
	'B1,Billing Account,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,Subscription,INV-1,2024-09-01T00:00:00Z,2024-09-02T00:00:00Z,2024-09-03T00:00:00Z,Usage,,1.234567890123,2,USD,EUR,1.1,Virtual Machines,sku-1,r1,ecs',
	'B1,Billing Account,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,Subscription,INV-1,2024-09-01T00:00:00Z,2024-09-04T00:00:00Z,2024-09-05T00:00:00Z,Purchase,,10,10,USD,EUR,9,Virtual Machines,sku-1,r2,ecs']));
SELECT is(pg_temp.pull('ff12'), 'succeeded - 2 0', 'FOCUS 1.2 columns and a BOM: both rows stored, none invalid');
SELECT is((SELECT sum(billed_cost) FROM settle.bill_line), 11.234567890123, 'amounts exact');

-- a missing required column refuses the file with 42703, naming it
INSERT INTO settle.connector (name, kind, endpoint) VALUES
	('ff_noacct', 'focus_csv', pg_temp.file('noacct', ARRAY['BillingPeriodStart,ChargePeriodStart,ChargeCategory,BilledCost,ListCost,BillingCurrency,ServiceName',
		'2024-09-01T00:00:00Z,2024-09-02T00:00:00Z,Usage,1,1,USD,ecs'])),
	('ff_nocur', 'focus_csv', pg_temp.file('nocur', ARRAY['BillingAccountId,BillingPeriodStart,ChargePeriodStart,ChargeCategory,BilledCost,ListCost,ServiceName',
		'B1,2024-09-01T00:00:00Z,2024-09-02T00:00:00Z,Usage,1,1,ecs'])),
	('ff_noprod', 'focus_csv', pg_temp.file('noprod', ARRAY['BillingAccountId,BillingPeriodStart,ChargePeriodStart,ChargeCategory,BilledCost,ListCost,BillingCurrency',
		'B1,2024-09-01T00:00:00Z,2024-09-02T00:00:00Z,Usage,1,1,USD']));
SELECT alike((SELECT (r).status || ' ' || (r).error_sqlstate || ' ' || (r).error_message FROM (SELECT settle.ingest_now('ff_noacct') r) s),
	'failed 42703 FOCUS file "%" has no column "BillingAccountId"%', 'no BillingAccountId column (a FOCUS 1.1 example): 42703 naming it');
SELECT alike((SELECT (r).status || ' ' || (r).error_sqlstate || ' ' || (r).error_message FROM (SELECT settle.ingest_now('ff_nocur') r) s),
	'failed 42703 FOCUS file "%" has no column "BillingCurrency"%', 'no BillingCurrency column: 42703 naming it');
SELECT alike((SELECT (r).status || ' ' || (r).error_sqlstate || ' ' || (r).error_message FROM (SELECT settle.ingest_now('ff_noprod') r) s),
	'failed 42703 FOCUS file "%" has no column "ServiceName"%', 'neither ServiceName nor x_ProductCode: 42703 naming ServiceName');
SELECT is((SELECT count(*) FROM settle.raw_page p JOIN settle.connector c USING (connector_id) WHERE c.name LIKE 'ff_no%'),
	0::bigint, 'a refused file leaves nothing stored');

-- dates: the forms FOCUS files use are read as UTC; anything else fails its line, naming the field
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('ff_dates', 'focus_csv', pg_temp.file('dates', ARRAY[
	'BillingAccountId,SubAccountId,BillingPeriodStart,ChargePeriodStart,ChargeCategory,BilledCost,ListCost,BillingCurrency,ResourceId,x_ProductCode',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-02 10:00:00,Usage,1,1,USD,d1,ecs',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01T00:00:00Z,2024-09-02T10:00:00+08:00,Usage,1,1,USD,d2,ecs',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01T00:00:00Z,2024-09-02T10:00Z,Usage,1,1,USD,d3,ecs',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01T00:00:00Z,2024/09/02,Usage,1,1,USD,d4,ecs',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01T00:00:00Z,2024-09-02T25:00:00Z,Usage,1,1,USD,d5,ecs',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-13-01T00:00:00Z,2024-09-02T10:00:00Z,Usage,1,1,USD,d6,ecs',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01T00:00:00Z,2024-09-02T10:00:00+8,Usage,1,1,USD,d7,ecs']));
SELECT is(pg_temp.pull('ff_dates'), 'succeeded - 7 4', 'seven rows, four with a bad date');
SELECT is((SELECT string_agg(resource_id || '=' || to_char(charge_period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), ' ' ORDER BY resource_id)
	FROM settle.bill_line WHERE resource_id IN ('d1', 'd2', 'd3')),
	'd1=2024-09-02 10:00 d2=2024-09-02 02:00 d3=2024-09-02 10:00',
	'no zone is UTC (not the session TimeZone), an offset is applied');
SELECT is((SELECT string_agg(resource_id || '=' || array_to_string(validation_errors, ';'), ' ' ORDER BY resource_id)
	FROM settle.bill_line WHERE resource_id IN ('d4', 'd5', 'd6', 'd7')),
	'd4=invalid:ChargePeriodStart d5=invalid:ChargePeriodStart d6=invalid:BillingPeriodStart d7=invalid:ChargePeriodStart',
	'other forms fail their line, naming the field');

-- null tokens: configurable per connector, checked when configured
SELECT throws_ok($$INSERT INTO settle.connector (name, kind, endpoint, config) VALUES ('x', 'focus_csv', 'file:///x', '{"null_tokens": "NULL"}')$$,
	'22023', NULL, 'null_tokens must be an array');
SELECT throws_ok($$INSERT INTO settle.connector (name, kind, endpoint, config) VALUES ('x', 'focus_csv', 'file:///x', '{"null_tokens": [""]}')$$,
	'22023', NULL, 'null_tokens may not hold the empty string (always null)');
INSERT INTO settle.connector (name, kind, endpoint, config) VALUES
	('ff_na', 'focus_csv', pg_temp.file('na', ARRAY[
		'BillingAccountId,SubAccountId,BillingPeriodStart,ChargePeriodStart,ChargeCategory,ChargeClass,BilledCost,ListCost,BillingCurrency,ResourceId,x_ProductCode',
		'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-02,Usage,N/A,1,1,USD,n1,ecs',
		'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-02,Usage,NULL,1,1,USD,n2,ecs']),
	 '{"null_tokens": ["N/A"]}');
SELECT is(pg_temp.pull('ff_na'), 'succeeded - 2 1', 'with null_tokens ["N/A"], N/A is null and NULL a value');
SELECT is((SELECT array_to_string(validation_errors, ';') FROM settle.bill_line WHERE resource_id = 'n2'),
	'unknown_charge_class:NULL', '... so the NULL row fails on its ChargeClass');

-- products by name
SELECT throws_ok($$SELECT settle.map_product('ProductName', 'x', 'ecs')$$, '22023', NULL, 'map_product: SkuId or ServiceName only');
SELECT throws_ok($$SELECT settle.map_product('ServiceName', 'x', 'no-such-product')$$, '23503', NULL, 'map_product: an unknown product is refused');
SELECT lives_ok($$SELECT settle.map_product('ServiceName', 'Virtual Machines', 'ecs'), settle.map_product('SkuId', 'DZH318Z0BQ4L', 'oss')$$,
	'finance maps a ServiceName and a SkuId');
INSERT INTO settle.connector (name, kind, endpoint) VALUES ('ff_names', 'focus_csv', pg_temp.file('names', ARRAY[
	'BillingAccountId,SubAccountId,BillingPeriodStart,ChargePeriodStart,ChargeCategory,BilledCost,ListCost,BillingCurrency,ServiceName,SkuId,ResourceId',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-02,Usage,1,1,USD,Virtual Machines,,p1',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-02,Usage,1,1,USD,Virtual Machines,DZH318Z0BQ4L,p2',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-02,Usage,1,1,USD,Azure Cosmos DB,,p3',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-03,Usage,1,1,USD,Azure Cosmos DB,,p4',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-04,Usage,1,1,USD,Azure Cosmos DB,,p5',
	'B1,/subscriptions/73c0021f-a37d-433f-8baa-7450cb54eea6,2024-09-01,2024-09-04,Usage,1,1,USD,rds,,p6']));
SELECT is(pg_temp.pull('ff_names'), 'succeeded - 6 3', 'six rows: the three of the unmapped name fail');
SELECT is((SELECT string_agg(resource_id || '=' || product_code, ' ' ORDER BY resource_id) FROM settle.bill_line WHERE resource_id IN ('p1', 'p2', 'p6')),
	'p1=ecs p2=oss p6=rds', 'ServiceName mapped; the SkuId mapping wins; a name that is a product code is that product');
SELECT is((SELECT count(*) || ' ' || min(scope_key) FROM settle.exception WHERE kind = 'unmapped_product'),
	'1 product:ServiceName:Azure Cosmos DB', 'one unmapped_product exception for the name, not one per line');
SELECT is((SELECT count(*) FROM settle.exception WHERE kind = 'validation' AND scope_key LIKE 'bill_line:%p_#%'),
	0::bigint, 'and no per-line validation exception for it');

SELECT * FROM finish();
ROLLBACK;
