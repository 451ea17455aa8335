-- Reconciliation: the exact aggregates as a user sees them, their parallel
-- plans (same results as serial), malformed partial states, and the
-- provider totals import with its refusals.
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS settle CASCADE;
\set SHOW_CONTEXT never

-- money_total: exact, counted, currency-checked
SELECT (settle.money_total(a, c)).*
  FROM (VALUES (0.1, 'USD'), (0.2, 'USD'), (0.3000000000000001, 'USD'), (NULL, 'USD')) v(a, c);
SELECT (settle.money_total(a, c)).*
  FROM (VALUES (1000, 'JPY'), (-1, 'JPY')) v(a, c);
SELECT (settle.money_total(a, c)).*
  FROM (VALUES (1.005, 'KWD'), (2, 'KWD')) v(a, c);
SELECT (settle.money_total(a, c)).* FROM (VALUES (1, 'USD'), (2, 'CNY'), (3, 'EUR')) v(a, c);
SELECT (settle.money_total(a, c)).* FROM (VALUES (1, 'USD'), (2, NULL)) v(a, c);
SELECT (settle.money_total(a, c)).* FROM (VALUES (1::numeric, 'USD')) v(a, c) WHERE false;
SELECT (settle.money_total(a, 'USD')).total FROM (VALUES (99999999999999.99999999), (99999999999999.99999999)) v(a);
-- refusals
SELECT settle.money_total(a, 'usd') FROM (VALUES (1)) v(a);
SELECT settle.money_total(a, 'USD') FROM (VALUES (0.00000000000000001)) v(a);
SELECT settle.money_total(a, 'USD') FROM (VALUES ('NaN'::numeric)) v(a);
SELECT settle.money_total(a, 'USD') FROM (VALUES (1e20)) v(a);

-- line_fingerprint: order-independent, by value
SELECT settle.line_fingerprint(k, a) = (SELECT settle.line_fingerprint(k, a ORDER BY k DESC)
                                          FROM (VALUES ('b', 2.50), ('a', 1), ('c', -3)) v(k, a)) AS order_independent
  FROM (VALUES ('a', 1.00), ('b', 2.5), ('c', -3.000)) v(k, a);
SELECT length(settle.line_fingerprint(k, a)) AS bytes,
       substr(settle.line_fingerprint(k, a), 1, 8) = '\x0000000000000003'::bytea AS counts_lines
  FROM (VALUES ('a', 1), ('b', 2), ('c', 3)) v(k, a);
SELECT settle.line_fingerprint(k, a) AS empty FROM (VALUES ('a', 1)) v(k, a) WHERE false;
SELECT settle.line_fingerprint(k, a) <> (SELECT settle.line_fingerprint(k, a) FROM (VALUES ('a', 1), ('b', 2.01)) v(k, a))
       AS amount_matters
  FROM (VALUES ('a', 1), ('b', 2)) v(k, a);
-- one line more on one side: found by its hash, without a join
WITH a AS (SELECT settle.line_fingerprint(k, x) AS fp FROM (VALUES ('k1', 1), ('k2', 2), ('k3', 3)) v(k, x)),
     b AS (SELECT settle.line_fingerprint(k, x) AS fp FROM (VALUES ('k1', 1), ('k3', 3)) v(k, x)),
     d AS (SELECT (settle.fingerprint_diff(a.fp, b.fp)).* FROM a, b)
SELECT d.lines_delta, d.single, d.hash_delta = settle.line_hash('k2', 2) AS is_k2 FROM d;
WITH a AS (SELECT settle.line_fingerprint(k, x) AS fp FROM (VALUES ('k1', 1)) v(k, x)),
     b AS (SELECT settle.line_fingerprint(k, x) AS fp FROM (VALUES ('k1', 1), ('k9', 9)) v(k, x)),
     d AS (SELECT (settle.fingerprint_diff(a.fp, b.fp)).* FROM a, b)
SELECT d.lines_delta, d.single, d.hash_delta = settle.line_hash('k9', 9) AS is_k9 FROM d;
SELECT settle.fingerprint_diff('\x00'::bytea, '\x00'::bytea);

-- malformed partial states are refused, never used (the checks the
-- deserial functions run on what parallel workers send)
SELECT settle.money_total_check_state(('\x0101' || '555344' || '555344' || '0000000000000002' || '0000000000000000' || '0000000000000096')::bytea) AS valid_state;
SELECT settle.line_fingerprint_check_state(('\x01' || '0000000000000001' || '00000000000000ff' || '00000000000000ff')::bytea) AS valid_state;
SELECT settle.money_total_check_state('\x01'::bytea);
SELECT settle.money_total_check_state(('\x02' || repeat('00', 31))::bytea);
SELECT settle.money_total_check_state(('\x0104' || repeat('00', 30))::bytea);
SELECT settle.money_total_check_state(('\x0101' || '555344' || '555344' || '0000000000000000' || repeat('00', 16))::bytea);
SELECT settle.money_total_check_state(('\x0101' || '757364' || '757364' || '0000000000000001' || repeat('00', 16))::bytea);
SELECT settle.money_total_check_state(('\x0101' || '555344' || '434e59' || '0000000000000002' || repeat('00', 16))::bytea);
SELECT settle.money_total_check_state(('\x0101' || '555344' || '555344' || 'ffffffffffffffff' || repeat('00', 16))::bytea);
SELECT settle.money_total_check_state(('\x0101' || '555344' || '555344' || '0000000000000001' || '7fffffffffffffff' || repeat('ff', 8))::bytea);
SELECT settle.line_fingerprint_check_state(('\x01' || repeat('00', 23))::bytea);
SELECT settle.line_fingerprint_check_state(('\x01' || repeat('00', 8) || '0000000000000001' || repeat('00', 8))::bytea);
SELECT settle.line_fingerprint_check_state(('\x01' || '0000000000000001' || '0000000000000001' || '0000000000000002')::bytea);
SELECT settle.line_fingerprint_check_state(('\x01' || 'ffffffffffffffff' || repeat('00', 16))::bytea);

-- Parallel: forced parallel plans run Partial Aggregate in workers and give
-- the same totals and fingerprints as the serial plan.
CREATE TABLE recon_par (account text, line_key text, amount numeric, currency text);
INSERT INTO recon_par
SELECT 'acct-' || (i % 7), 'line/' || i, round((i % 1000) * 1.37 - 300, 2) + (i % 3) * 0.005,
       CASE WHEN i % 7 = 6 AND i % 500 = 0 THEN 'CNY' ELSE 'USD' END
  FROM generate_series(1, 60000) i;
ANALYZE recon_par;
ALTER TABLE recon_par SET (parallel_workers = 2);
CREATE FUNCTION pg_temp.plan_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	l text;
	r text := '';
BEGIN
	FOR l IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
		r := r || l || E'\n';
	END LOOP;
	RETURN r;
END $$;
CREATE FUNCTION pg_temp.workers_launched(q text) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
	j json;
BEGIN
	EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON, COSTS OFF, TIMING OFF) ' || q INTO j;
	RETURN (j -> 0 -> 'Plan' -> 'Plans' -> 0 ->> 'Workers Launched')::int;
END $$;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET max_parallel_workers_per_gather = 2;
SET parallel_leader_participation = off;
SELECT pg_temp.plan_of($$SELECT settle.money_total(amount, currency), settle.line_fingerprint(line_key, amount) FROM recon_par$$);
SELECT pg_temp.plan_of($$SELECT account, settle.money_total(amount, currency), settle.line_fingerprint(line_key, amount)
                         FROM recon_par GROUP BY account$$) LIKE '%Partial%Aggregate%' AS grouped_partial;
SELECT pg_temp.workers_launched($$SELECT settle.money_total(amount, currency), settle.line_fingerprint(line_key, amount) FROM recon_par$$) > 0
       AS workers_ran;
CREATE TEMP TABLE par_result AS
SELECT account, settle.money_total(amount, currency) AS mt, settle.line_fingerprint(line_key, amount) AS fp, sum(amount) AS plain_sum
  FROM recon_par GROUP BY account;
CREATE TEMP TABLE par_all AS
SELECT settle.money_total(amount, 'USD') AS mt, settle.line_fingerprint(line_key, amount) AS fp FROM recon_par;
SET max_parallel_workers_per_gather = 0;
SELECT pg_temp.plan_of($$SELECT settle.money_total(amount, currency) FROM recon_par$$) LIKE '%Partial%' AS serial_is_partial;
CREATE TEMP TABLE ser_result AS
SELECT account, settle.money_total(amount, currency) AS mt, settle.line_fingerprint(line_key, amount) AS fp, sum(amount) AS plain_sum
  FROM recon_par GROUP BY account;
CREATE TEMP TABLE ser_all AS
SELECT settle.money_total(amount, 'USD') AS mt, settle.line_fingerprint(line_key, amount) AS fp FROM recon_par;
SELECT count(*) AS groups, count(*) FILTER (WHERE p.mt = s.mt AND p.fp = s.fp) AS same,
       count(*) FILTER (WHERE (p.mt).total = p.plain_sum) AS equal_to_sum,
       count(*) FILTER (WHERE (p.mt).mixed) AS mixed
  FROM par_result p JOIN ser_result s USING (account);
SELECT p.mt = s.mt AND p.fp = s.fp AS whole_table_same, (p.mt).lines, (p.mt).total,
       (p.mt).total = (SELECT sum(amount) FROM recon_par) AS exact
  FROM par_all p, ser_all s;
SELECT account, (mt).currency, (mt).lines, (mt).total, (mt).mixed, (mt).currencies FROM par_result ORDER BY account;
RESET ALL;
SET client_min_messages = warning;
DROP TABLE recon_par;

-- Provider totals from a CSV export: all or nothing.
SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1001,ECS,USD,1234.50
2026-10,1001,oss,USD,-12.3
2026-10,1002,ecs,JPY,15000
$csv$) > 0 AS imported;
SELECT source, billing_cycle, billing_account_id, product_code, currency, amount, provider_rows
  FROM settle.provider_side ORDER BY billing_account_id, product_code;
SELECT count(*) AS rows_before FROM settle.provider_total_import;
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1001,ecs,USD,1.00
2026-10,1003,ecs,XYZ,5.00
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1001,ecs,USD,1.00
2026-10,1002,ecs,USD,2.00
2026-10,1001,ECS,USD,3.00
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1001,ecs,USD,1.00
2026-10,1002,ecs,USD,12,50
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1001,ecs,USD,1.00
2026-10,1002,ecs,USD,1.2.3
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1002,ecs,USD,1e5
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-13,1002,ecs,USD,1
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$cycle,account,product,currency,amount
2026-10,1002,ecs,USD,1
$csv$)$q$) AS refused;
SELECT pg_temp.try($q$SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
$csv$)$q$) AS refused;
SELECT count(*) AS rows_after_refusals FROM settle.provider_total_import;
-- a later import of the same source and cycle is the one in force
SELECT settle.import_provider_totals('finance-export', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-10,1001,ecs,USD,1234.55
$csv$) > 0 AS reimported;
SELECT billing_account_id, product_code, currency, amount FROM settle.provider_side ORDER BY 1, 2;

-- tolerance: max(absolute, relative x |reference|)
SELECT settle.recon_status(0, 1000, 0.01, 0.001) AS zero, settle.recon_status(0.01, 1000, 0.01, 0) AS abs_edge,
       settle.recon_status(-0.011, 1000, 0.01, 0) AS abs_over, settle.recon_status(1.00, 1000, 0.01, 0.001) AS rel_edge,
       settle.recon_status(1.01, 1000, 0.01, 0.001) AS rel_over;

-- every reconciliation object is documented
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'settle' AND c.relkind IN ('r', 'v', 'S')
   AND (c.relname LIKE 'recon%' OR c.relname LIKE 'provider_total_import%' OR c.relname = 'provider_side')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'settle' AND (p.proname LIKE 'money_total%' OR p.proname LIKE 'line_fingerprint%'
       OR p.proname IN ('line_hash', 'fingerprint_diff', 'import_provider_totals', 'recon_tolerance', 'recon_status', 'recon_amount',
                        'reconcile', 'explain_delta'))
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT count(*) AS parallel_safe_aggregates FROM pg_proc p JOIN pg_aggregate a ON a.aggfnoid = p.oid
 WHERE p.oid IN ('settle.money_total(numeric, text)'::regprocedure, 'settle.line_fingerprint(text, numeric)'::regprocedure)
   AND p.proparallel = 's' AND a.aggcombinefn <> 0 AND a.aggserialfn <> 0 AND a.aggdeserialfn <> 0;
