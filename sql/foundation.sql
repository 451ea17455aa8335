-- The foundation: the core model, its refusals, and the audit trail as a user sees them.
CREATE EXTENSION settle CASCADE;
SET client_min_messages = warning;

SELECT settle.add_reseller('acme', 'Acme Cloud Partners') AS acme,
       settle.add_reseller('borealis', 'Borealis IT') AS borealis;
SELECT settle.add_customer('acme', 'c-001', 'Hangzhou Tea Co', 'enterprise', '{"team": "retail"}');
SELECT settle.map_account('1234567890123456', 'acme', 'c-001', '2026-01-01');

BEGIN;
SET LOCAL settle.reason = 'signed agreement ACME-2026';
SELECT settle.set_agreement('acme', '2026-01-01', 'USD', minimum_payout => 50) AS agreement;
COMMIT;

SELECT reseller_id, agreement_id, effective_from, effective_to, settlement_currency,
       rounding_mode, date_basis, refund_window_days, minimum_payout
  FROM settle.agreement;

-- Refusals: each names the problem, has a specific SQLSTATE, and writes nothing.
CREATE FUNCTION pg_temp.try(reason text, q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
	PERFORM set_config('settle.reason', coalesce(reason, ''), true);
	EXECUTE q;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
SELECT count(*) AS audit_entries_before FROM settle.audit_log;
SELECT pg_temp.try('test', $$SELECT settle.set_agreement('borealis', '2026-01-01', 'XYZ')$$) AS unknown_currency;
SELECT pg_temp.try('test', $$SELECT settle.set_agreement('borealis', '2026-01-01', 'USD', minimum_payout => -1)$$) AS negative_threshold;
SELECT pg_temp.try('test', $$SELECT settle.set_agreement('acme', '2026-06-01', 'USD', effective_to => '2027-01-01')$$) AS overlap;
SELECT pg_temp.try(NULL, $$SELECT settle.set_agreement('borealis', '2026-01-01', 'USD')$$) AS no_reason;
SELECT pg_temp.try(NULL, $$SELECT settle.end_agreement('acme', 1, '2026-12-31')$$) AS change_without_reason;
SELECT pg_temp.try('test', $$SELECT settle.set_agreement('nobody', '2026-01-01', 'USD')$$) AS unknown_reseller;
SELECT pg_temp.try('test', $$SELECT settle.set_agreement('borealis', '2026-01-01', 'USD', rounding_mode => 'nearest')$$) AS bad_rounding_mode;
SELECT pg_temp.try(NULL, $$SELECT settle.map_account('1234567890123456', 'acme', 'c-001', '2026-06-01')$$) AS account_mapped_twice;
SELECT pg_temp.try(NULL, $$SELECT settle.add_fx_rate('JPY', 'USD', '2026-10-31', 0.0066, 'ECB')$$) AS fx_without_reason;
SELECT pg_temp.try('test', $$SELECT settle.add_fx_rate('JPY', 'USD', '2026-10-31', 0, 'ECB')$$) AS fx_rate_zero;
SELECT pg_temp.try('test', $$SELECT settle.add_fx_rate('JPY', 'ABC', '2026-10-31', 1, 'ECB')$$) AS fx_unknown_currency;
SELECT pg_temp.try(NULL, $$SELECT settle.add_product('newsvc', 'quantum', 'Quantum')$$) AS unknown_category;
SELECT count(*) AS agreements, max(effective_to) AS acme_effective_to FROM settle.agreement;
SELECT count(*) AS fx_rates FROM settle.fx_rate;
SELECT count(*) AS audit_entries_after FROM settle.audit_log;
RESET settle.reason;

-- FX rates are versioned, never updated.
BEGIN;
SET LOCAL settle.reason = 'ECB reference rates 2026-10-31';
SELECT settle.add_fx_rate('JPY', 'USD', '2026-10-31', 0.0066, 'ECB');
SET LOCAL settle.reason = 'ECB corrected its publication';
SELECT settle.add_fx_rate('JPY', 'USD', '2026-10-31', 0.00661, 'ECB');
COMMIT;
SELECT base_currency, quote_currency, rate_date, rate, version FROM settle.fx_rate ORDER BY version;
SELECT base_currency, quote_currency, rate, version FROM settle.fx_rate_current;
UPDATE settle.fx_rate SET rate = 1;
DELETE FROM settle.fx_rate;

-- The audit trail: who, what, why; and it verifies.
SELECT audit_id, table_name, operation, row_key, reason, current_user_name
  FROM settle.audit_log ORDER BY audit_id;
SELECT verified, entries, first_broken_id, problem FROM settle.verify_audit();

-- A bill line (normally written by ingestion) for the append-only checks below.
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
	billing_account_id, billing_period_start, charge_period_start, charge_period_end,
	charge_category, product_code, billing_currency, list_cost, billed_cost)
VALUES (1, 'acct:1234567890123456/i-1/2026-10', 1, 1, sha256('x'), 'PayAsYouGoBill',
	'1234567890123456', '2026-10-01', '2026-10-01', '2026-11-01', 'Usage', 'ecs', 'USD', 12.50, 11.25);
UPDATE settle.bill_line SET billed_cost = 0;

-- Append-only, for the owner too, and under session_replication_role = replica.
UPDATE settle.audit_log SET reason = 'rewritten' WHERE audit_id = 1;
DELETE FROM settle.audit_log;
TRUNCATE settle.audit_log;
SET session_replication_role = replica;
DELETE FROM settle.audit_log WHERE audit_id = 1;
DELETE FROM settle.bill_line;
TRUNCATE settle.bill_line;
RESET session_replication_role;
SELECT count(*) AS audit_entries FROM settle.audit_log;
