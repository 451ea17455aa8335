-- Reconciliation of a clean month (September 2026: every check matches, no
-- delta, no exception) and of a month with seeded discrepancies (October
-- 2026), each found, classified and tied to its exact line keys:
--
--   acct-c1 ecs  one missing line: the provider counted 40.00 on 2026-10-12, we have no line that day
--   acct-c2 ecs  one duplicate: source record R-100 ingested as c2/ecs/1 and c2/ecs/1-dup (50.00)
--   acct-c3 oss  a 0.01 rounding difference: list 100.00 - discount 10.00 = 90.00, billed 90.01
--   acct-c4 rds  an FX difference: 700 CNY at the recorded 0.14 = 98.00 USD; the provider says 98.30
--   acct-c5 ecs  a late revision: 80.00 -> 95.00 ingested after the provider total was taken
--   acct-c6 ecs  clean; its refund reversal is tampered to 8% (the original earned 5%) and
--                one of its settlement lines is deleted from the lineage
-- The scenario is test/fixtures/recon_october.sql (docs/reconciliation.md runs on it
-- and shows these numbers); it settles both months and tampers with October's lineage.
BEGIN;
SELECT plan(40);

\i test/fixtures/recon_october.sql

-- ---------------------------------------------------------------- September: clean
SELECT is((SELECT count(*) FROM settle.run WHERE period = '2026-09'), 1::bigint, 'September settled');
SELECT results_eq($$SELECT check_name, status, scopes FROM settle.reconcile('2026-09')$$,
	$$VALUES ('provider_total', 'matched', 2::bigint), ('refund_rate', 'matched', 1), ('settled_lines', 'matched', 2),
	         ('statement', 'matched', 1)$$,
	'a clean month: every check matches');
SELECT results_eq($$SELECT count(*), coalesce(sum(abs(delta)), 0), count(*) FILTER (WHERE exception_id IS NOT NULL)
                    FROM settle.reconciliation_summary WHERE period = '2026-09'$$,
	$$VALUES (6::bigint, 0::numeric, 0::bigint)$$, 'zero deltas and no exception');
SELECT is((SELECT count(*) FROM settle.reconciliation_delta WHERE period = '2026-09'), 0::bigint, 'and nothing to explain');
SELECT results_eq($$SELECT source, lines, lines_total, other_total FROM settle.reconciliation_summary
                    WHERE period = '2026-09' AND check_name = 'provider_total' ORDER BY scope_key$$,
	$$VALUES ('import:ledger', 1::bigint, 90.00, 90.00), ('import:ledger', 3::bigint, 133.33, 133.33)$$,
	'provider totals imported from the ledger match the current lines to the cent');

-- ---------------------------------------------------------------- October: seeded discrepancies
SELECT is((SELECT count(*) FROM settle.run WHERE period = '2026-10'), 1::bigint, 'October settled');

SELECT results_eq($$SELECT check_name, status, scopes, exceptions FROM settle.reconcile('2026-10')$$,
	$$VALUES ('currency', 'mismatched', 1::bigint, 1::bigint), ('duplicate', 'mismatched', 1, 1), ('gap', 'missing', 1, 1),
	         ('line_identity', 'within_tolerance', 1, 0), ('provider_total', 'matched', 1, 0),
	         ('provider_total', 'mismatched', 4, 4), ('provider_total', 'within_tolerance', 1, 0),
	         ('refund_rate', 'mismatched', 1, 1), ('settled_lines', 'matched', 5, 0), ('settled_lines', 'mismatched', 1, 1),
	         ('statement', 'mismatched', 1, 1)$$,
	'October: every seeded discrepancy is found, and nothing else');

SELECT results_eq($$SELECT billing_account_id, product_code, status, lines, lines_total, other_total, delta, causes
                    FROM settle.reconciliation_summary WHERE period = '2026-10' AND check_name = 'provider_total'
                    ORDER BY billing_account_id$$,
	$$VALUES ('acct-c1', 'ecs', 'mismatched', 30::bigint, 300.00, 340.00, -40.00, 'unmatched'),
	         ('acct-c2', 'ecs', 'mismatched', 3::bigint, 120.00, 70.00, 50.00, 'duplicate'),
	         ('acct-c3', 'oss', 'within_tolerance', 2::bigint, 110.01, 110.00, 0.01, 'rounding'),
	         ('acct-c4', 'rds', 'mismatched', 3::bigint, 248.00, 248.30, -0.30, 'fx'),
	         ('acct-c5', 'ecs', 'mismatched', 1::bigint, 95.00, 80.00, 15.00, 'late_revision'),
	         ('acct-c6', 'ecs', 'matched', 3::bigint, 120.00, 120.00, 0.00, '')$$,
	'provider totals: status, both sides, delta and cause of every scope');

SELECT results_eq($$SELECT billing_account_id, cause, line_key, day, amount FROM settle.reconciliation_delta
                    WHERE period = '2026-10' AND check_name = 'provider_total' ORDER BY billing_account_id, seq$$,
	$$VALUES ('acct-c1', 'unmatched', NULL::text, '2026-10-12'::date, -40.00),
	         ('acct-c2', 'duplicate', 'c2/ecs/1-dup', '2026-10-05', 50.00),
	         ('acct-c3', 'rounding', NULL, NULL, 0.01),
	         ('acct-c4', 'fx', 'c4/rds/cny', '2026-10-11', -0.30),
	         ('acct-c5', 'late_revision', 'c5/ecs/1', '2026-10-13', 15.00)$$,
	'each provider delta is explained to the cent by the exact line (or the day with no line)');
SELECT results_eq($$SELECT line_key, revision, old_amount, new_amount, amount FROM settle.reconciliation_delta
                    WHERE period = '2026-10' AND check_name = 'provider_total' AND cause = 'late_revision'$$,
	$$VALUES ('c5/ecs/1', 2, 80.00, 95.00, 15.00)$$,
	'the late revision carries the amount the provider counted and ours');
SELECT matches((SELECT detail FROM settle.reconciliation_delta WHERE period = '2026-10' AND line_key = 'c4/rds/cny'
                 AND check_name = 'provider_total'),
	'^700.00 CNY converted at the recorded CNY/USD rate 0.14 of 2026-10-31 = 98.00 USD; the provider''s total differs by -0.30 USD$',
	'the FX explanation names the rate used');
SELECT matches((SELECT detail FROM settle.reconciliation_delta WHERE period = '2026-10' AND line_key = 'c5/ecs/1'),
	'^revision 2 \(95.00\) ingested at .* after the provider total was taken at .* on revision 1 \(80.00\)$',
	'the late revision names both revisions');
SELECT matches((SELECT detail FROM settle.reconciliation_delta WHERE period = '2026-10' AND billing_account_id = 'acct-c1'
                 AND check_name = 'provider_total'),
	'no line of acct-c1/ecs on 2026-10-12 \(lines before: c1/ecs/11; after: c1/ecs/13\)$',
	'the missing line is placed between its neighbours');

SELECT results_eq($$SELECT check_name, cause, line_key, day, amount FROM settle.reconciliation_delta
                    WHERE period = '2026-10' AND check_name IN ('duplicate', 'gap', 'currency', 'line_identity')
                    ORDER BY check_name, seq$$,
	$$VALUES ('currency', 'fx', 'c4/rds/cny', '2026-10-11'::date, 700.00),
	         ('duplicate', 'duplicate', 'c2/ecs/1-dup', '2026-10-05', 50.00),
	         ('gap', 'unmatched', NULL, '2026-10-12', NULL),
	         ('line_identity', 'rounding', 'c3/oss/1', NULL, 0.01)$$,
	'duplicates, gaps, currency consistency and line identities name their lines');
SELECT results_eq($$SELECT scope_key FROM settle.reconciliation_summary WHERE period = '2026-10'
                    AND check_name IN ('duplicate', 'gap', 'currency', 'line_identity') ORDER BY check_name$$,
	$$VALUES ('currency:2026-10/acct-c4'), ('duplicate:2026-10/R-100/PayAsYouGoBill'), ('gap:2026-10/acct-c1'), ('identity:2026-10/acct-c3/USD')$$,
	'their scopes');

SELECT results_eq($$SELECT d.cause, d.line_key, d.amount, s.lines_total, s.other_total, s.delta
                    FROM settle.reconciliation_delta d JOIN settle.reconciliation_summary s USING (period, check_name, scope_key)
                    WHERE d.period = '2026-10' AND d.check_name = 'refund_rate'$$,
	$$VALUES ('refund', 'c6/ecs/1/refund', -1.20, -3.20, -2.00, -1.20)$$,
	'the refund reversed at 8% is found: -40.00 x 8% = -3.20 where its original''s 5% gives -2.00');
SELECT matches((SELECT detail FROM settle.reconciliation_delta WHERE period = '2026-10' AND check_name = 'refund_rate'),
	'^reversed at 0.08, the original c6/ecs/1 earned 0.05: -40.00 x 0.05 = -2.00, not -3.20$', 'and says which rate each earned');
SELECT results_eq($$SELECT cause, line_key, revision FROM settle.reconciliation_delta
                    WHERE period = '2026-10' AND check_name = 'settled_lines'$$,
	$$VALUES ('unmatched', 'c6/ecs/2', 1)$$,
	'the line missing from the lineage is found by its customer''s fingerprint and named');
SELECT results_eq($$SELECT status, lines, lines_total, other_total, delta FROM settle.reconciliation_summary
                    WHERE period = '2026-10' AND check_name = 'statement'$$,
	$$SELECT 'mismatched', s.lines - 1, s.total - 3.00, s.total, -3.00 FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id)
	   WHERE r.period = '2026-10'$$,
	'conservation: the statement no longer equals its lines (3.00 of c6/ecs/2 missing)');

-- Exceptions: one per scope beyond tolerance, refreshed, not duplicated, on a re-run.
SELECT results_eq($$SELECT e.scope_key, e.severity, e.state FROM settle.exception e
                    WHERE e.kind = 'reconciliation_delta' ORDER BY e.scope_key$$,
	$$VALUES ('currency:2026-10/acct-c4', 'error', 'pending_review'), ('duplicate:2026-10/R-100/PayAsYouGoBill', 'error', 'pending_review'),
	         ('gap:2026-10/acct-c1', 'warning', 'pending_review'),
	         ('provider:2026-10/acct-c1/ecs/USD@connector:bss', 'error', 'pending_review'),
	         ('provider:2026-10/acct-c2/ecs/USD@connector:bss', 'error', 'pending_review'),
	         ('provider:2026-10/acct-c4/rds/USD@connector:bss', 'error', 'pending_review'),
	         ('provider:2026-10/acct-c5/ecs/USD@connector:bss', 'error', 'pending_review'),
	         ('refunds:2026-10/run:' || (SELECT run_id FROM settle.run WHERE period = '2026-10'), 'error', 'pending_review'),
	         ('settled:2026-10/run:' || (SELECT run_id FROM settle.run WHERE period = '2026-10') || '/customer:'
	            || (SELECT customer_id FROM settle.customer WHERE code = 'c6'), 'error', 'pending_review'),
	         ('statement:2026-10/run:' || (SELECT run_id FROM settle.run WHERE period = '2026-10'), 'error', 'pending_review')$$,
	'one exception per scope beyond tolerance; the rounding difference within tolerance opens none');
SELECT is((SELECT e.refs FROM settle.exception e WHERE e.scope_key = 'provider:2026-10/acct-c2/ecs/USD@connector:bss'),
	'{"check": "provider_total", "line_keys": ["c2/ecs/1-dup"]}'::jsonb, 'the exception names the line keys');
SELECT is((SELECT (e.payload ->> 'delta')::numeric FROM settle.exception e
            WHERE e.scope_key = 'provider:2026-10/acct-c5/ecs/USD@connector:bss'), 15.00, 'and carries the delta');
CREATE TEMP TABLE ex_before AS SELECT exception_id, scope_key FROM settle.exception WHERE kind = 'reconciliation_delta';
SELECT lives_ok($$SELECT * FROM settle.reconcile('2026-10')$$, 're-running the reconciliation');
SELECT set_eq($$SELECT exception_id, scope_key FROM settle.exception WHERE kind = 'reconciliation_delta'$$,
	$$SELECT exception_id, scope_key FROM ex_before$$, 'refreshes the same exceptions, opens no new ones');
SELECT is((SELECT count(*) FROM settle.recon_result WHERE period = '2026-10'), 18::bigint, 'and replaces the results');
SELECT is((SELECT count(*) FROM settle.recon_result WHERE period = '2026-09'), 6::bigint, 'other periods untouched');

-- Explaining one scope's delta.
SELECT results_eq($$SELECT step, cause, line_key, amount FROM settle.explain_delta('2026-10', 'provider:2026-10/acct-c2/ecs/USD@connector:bss')$$,
	$$VALUES (0, NULL::text, NULL::text, 50.00), (1, 'duplicate', 'c2/ecs/1-dup', 50.00), (2, NULL, NULL, 0.00)$$,
	'explain_delta: the comparison, the line behind it, nothing unexplained');
SELECT matches((SELECT detail FROM settle.explain_delta('2026-10', 'provider:2026-10/acct-c2/ecs/USD@connector:bss') WHERE step = 0),
	'^provider_total provider:2026-10/acct-c2/ecs/USD@connector:bss: mismatched, ours 120.00 vs theirs 70.00, delta 50.00 \(tolerance 0.01\)',
	'in words');
SELECT throws_ok($$SELECT * FROM settle.explain_delta('2026-10', 'nowhere')$$, 'P0002', NULL, 'an unknown scope');
SELECT throws_ok($$SELECT * FROM settle.reconcile('2026-13')$$, '22007', 'invalid period "2026-13"', 'an invalid period');

-- The fingerprint narrows a differing scope without a join: the settled
-- side of c6 lacks exactly one pair, and its hash names the line.
SELECT is((SELECT b.line_key FROM settle.bill_line_current b,
	         (SELECT (settle.fingerprint_diff(
	                    (SELECT settle.line_fingerprint(x.line_key, x.revision) FROM settle.bill_line_current x
	                      WHERE x.billing_account_id = 'acct-c6' AND x.billing_period_start = '2026-10-01' AND x.original_line_key IS NULL),
	                    (SELECT settle.line_fingerprint(l.line_key, l.revision) FROM settle.settlement_line l
	                      JOIN settle.run r USING (reseller_id, run_id)
	                      WHERE r.period = '2026-10' AND l.kind = 'c' AND l.line_key LIKE 'c6/%'))).*) d
	    WHERE d.single AND settle.line_hash(b.line_key, b.revision) = d.hash_delta),
	'c6/ecs/2', 'fingerprint_diff + line_hash find the one unsettled line');

-- ---------------------------------------------------------------- November: tolerances
-- An unmapped account (reseller 0) uses settle.recon_default; a reseller's
-- scopes use its agreement (absolute and relative).
INSERT INTO settle.bill_line (reseller_id, line_key, revision, content_hash, source_item, billing_account_id,
	billing_period_start, charge_period_start, charge_period_end, charge_category, product_code,
	billing_currency, list_cost, billed_cost)
VALUES (0, 'acct-x/ecs/nov', 1, sha256('x'), 'PayAsYouGoBill', 'acct-x', '2026-11-01', '2026-11-04', '2026-11-05',
	'Usage', 'ecs', 'USD', 100.00, 100.00);
SELECT pg_temp.line('c6', 'c6/ecs/nov', '2026-11-04', 'ecs', 1000.00);
SELECT settle.import_provider_totals('ledger', $csv$billing_cycle,billing_account_id,product_code,currency,amount
2026-11,acct-x,ecs,USD,100.03
2026-11,acct-c6,ecs,USD,1000.40
$csv$);
SELECT count(*) FROM settle.reconcile('2026-11');
SELECT results_eq($$SELECT s.reseller_id, s.status, s.delta, s.tolerance FROM settle.reconciliation_summary s
                    WHERE s.period = '2026-11' AND s.check_name = 'provider_total' ORDER BY s.reseller_id$$,
	$$VALUES (0::bigint, 'mismatched', -0.03, 0.01), (settle.reseller_id('acme'), 'mismatched', -0.40, 0.01)$$,
	'default tolerances: 0.01 absolute for the unmapped account and for the agreement');
UPDATE settle.recon_default SET tolerance_abs = 0.05;
UPDATE settle.agreement SET tolerance_rel = 0.0005 WHERE reseller_id = settle.reseller_id('acme');
SELECT count(*) FROM settle.reconcile('2026-11');
SELECT results_eq($$SELECT s.reseller_id, s.status, s.delta, s.tolerance FROM settle.reconciliation_summary s
                    WHERE s.period = '2026-11' AND s.check_name = 'provider_total' ORDER BY s.reseller_id$$,
	$$VALUES (0::bigint, 'within_tolerance', -0.03, 0.05), (settle.reseller_id('acme'), 'within_tolerance', -0.40, 0.5002)$$,
	'settle.recon_default for the unmapped scope; 0.05% of 1000.40 for the reseller''s');

-- Privileges: analysts reconcile and read; auditors read; resellers see nothing of it.
SET LOCAL ROLE settle_analyst;
SELECT lives_ok($$SELECT * FROM settle.reconcile('2026-11')$$, 'an analyst reconciles');
SELECT is((SELECT count(*) FROM settle.reconciliation_delta WHERE period = '2026-10'), 11::bigint, 'and reads the deltas');
RESET ROLE;
SET LOCAL ROLE settle_auditor;
SELECT throws_ok($$SELECT * FROM settle.reconcile('2026-11')$$, '42501', NULL, 'an auditor cannot write results');
SELECT is((SELECT count(*) FROM settle.explain_delta('2026-10', 'provider:2026-10/acct-c2/ecs/USD@connector:bss')), 3::bigint,
	'but explains a delta');
RESET ROLE;
SET LOCAL ROLE settle_reseller;
SELECT throws_ok($$SELECT * FROM settle.reconciliation_summary$$, '42501', NULL, 'a reseller login cannot read reconciliations');
RESET ROLE;

-- The deltas beyond tolerance show in the sanity checks and the finance summary.
SELECT is((SELECT bool_and(ok) FROM settle.sanity_checks WHERE check_name = 'reconciliation' AND period = '2026-10'), false,
	'a reconciliation delta beyond tolerance fails the sanity check');
SELECT ok((SELECT sum(reconciliation_deltas) FROM settle.finance_summary WHERE period = '2026-10') > 0,
	'and is counted in the finance summary');

SELECT * FROM finish();
ROLLBACK;
