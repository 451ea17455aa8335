-- A payout batch of :vol_payouts payouts in period :vol_period (EUR), for
-- volume tests of settle.import_payout_confirmations (test/pgtap/payout_import.sql)
-- and its benchmark (bench/confirmations.sh).  Sets :vol_batch to the batch id.
--
--   \set vol_period '2026-10'
--   \set vol_payouts 3000
--   \ir payout_volume.sql
--
-- Setup only, as a superuser, by direct inserts: building thousands of
-- resellers through settle_period and create_payout_batch would take far
-- longer than what is measured.  What is inserted is what those functions
-- leave behind, as far as the import reads it:
--   * resellers vol-000001 .. vol-<n> (created once, shared by every batch),
--     each with an EUR agreement from 2026-01-01 and payee version 1;
--   * per reseller, a locked run of :vol_period with its statement (net payout
--     1.00 .. 1000.99, no settlement lines: the import never reads them);
--   * the batch (status created, one payout per run in reseller code order,
--     end-to-end ids B<batch>-R<reseller>-<run> as create_payout_batch writes
--     them).  The file hashes are left NULL (payout_file is not measured).
-- Calling it again with another period adds another batch over the same
-- resellers (one locked run per reseller and period).  With vol_no_batch set
-- (\set vol_no_batch) it stops before the batch: the locked statements are
-- left for settle.create_payout_batch (bench/payout.sh).
-- No BEGIN/COMMIT: pgTAP includes it inside its transaction; the benchmark
-- runs it with psql --single-transaction.
SET client_min_messages = warning;
\o /dev/null
SET LOCAL settle.reason = 'payout volume setup';

INSERT INTO settle.reseller (code, name)
SELECT format('vol-%s', lpad(g::text, 6, '0')), format('Volume reseller %s', g)
  FROM generate_series(1, :vol_payouts) g
ON CONFLICT (code) DO NOTHING;

INSERT INTO settle.agreement (reseller_id, effective_from, settlement_currency)
SELECT r.reseller_id, DATE '2026-01-01', 'EUR'
  FROM settle.reseller r
 WHERE r.code LIKE 'vol-%' AND NOT EXISTS (SELECT 1 FROM settle.agreement a WHERE a.reseller_id = r.reseller_id);

INSERT INTO settle.payee (reseller_id, version, account_holder, iban, bic, country, currency)
SELECT r.reseller_id, 1, r.name, 'GB82WEST12345698765432', 'NWBKGB2L', 'GB', 'EUR'
  FROM settle.reseller r
 WHERE r.code LIKE 'vol-%' AND NOT EXISTS (SELECT 1 FROM settle.payee p WHERE p.reseller_id = r.reseller_id);

INSERT INTO settle.run (reseller_id, period, agreement_id, status, blocked, input_fingerprint, output_fingerprint,
	lines_in, lines_out, snapshot, approved_at, approved_by, locked_at, locked_by)
SELECT r.reseller_id, :'vol_period', a.agreement_id, 'locked', false,
       sha256(convert_to('in ' || r.code || ' ' || :'vol_period', 'UTF8')),
       sha256(convert_to('out ' || r.code || ' ' || :'vol_period', 'UTF8')),
       0, 0, pg_current_snapshot(), now(), 'volume', now(), 'volume'
  FROM settle.reseller r
  JOIN settle.agreement a ON a.reseller_id = r.reseller_id
 WHERE r.code LIKE 'vol-%' AND substr(r.code, 5)::int <= :vol_payouts;

-- net payout of reseller g: 1.00 .. 1000.99 (varies with g and the period)
INSERT INTO settle.statement (reseller_id, run_id, period, currency, lines, gross_charges, commissionable, commission,
	refunds, corrections, adjustments, total, carry_forward_in, carry_forward_out, net_payout)
SELECT x.reseller_id, x.run_id, x.period, 'EUR', 0, x.amount * 10, x.amount * 10, x.amount, 0, 0, 0, x.amount, 0, 0, x.amount
  FROM (SELECT u.reseller_id, u.run_id, u.period,
               round(((substr(r.code, 5)::int * 7919 + substr(u.period, 6)::int * 104729) % 100000 + 100) / 100.0, 2) AS amount
          FROM settle.run u JOIN settle.reseller r ON r.reseller_id = u.reseller_id
         WHERE u.period = :'vol_period' AND r.code LIKE 'vol-%' AND u.status = 'locked') x;

\if :{?vol_no_batch}
ANALYZE settle.reseller, settle.run, settle.statement, settle.payee;
\else
SELECT nextval(pg_get_serial_sequence('settle.payout_batch', 'batch_id')) AS vol_batch \gset
INSERT INTO settle.payout_batch (batch_id, period, currency, msg_id, created_at, execution_date, operator_name,
	debtor_iban, debtor_bic, debtor_country, payouts, control_sum)
SELECT :vol_batch, :'vol_period', 'EUR', format('VOL-%s-EUR-%s', :'vol_period', :vol_batch),
       date_trunc('second', now()), DATE '2026-11-05', 'Operator Cloud Pte. Ltd.', 'DE89370400440532013000',
       'COBADEFFXXX', 'DE', count(*), sum(s.net_payout)
  FROM settle.statement s JOIN settle.reseller r ON r.reseller_id = s.reseller_id
 WHERE s.period = :'vol_period' AND r.code LIKE 'vol-%';
INSERT INTO settle.payout (batch_id, line_no, reseller_id, reseller_code, run_id, period, amount, currency,
	end_to_end_id, payee_version)
SELECT :vol_batch, row_number() OVER (ORDER BY r.code COLLATE "C", s.run_id), s.reseller_id, r.code, s.run_id,
       s.period, s.net_payout, s.currency, format('B%s-R%s-%s', :vol_batch, s.reseller_id, s.run_id), 1
  FROM settle.statement s JOIN settle.reseller r ON r.reseller_id = s.reseller_id
 WHERE s.period = :'vol_period' AND r.code LIKE 'vol-%';
ANALYZE settle.reseller, settle.run, settle.statement, settle.payout_batch, settle.payout;
\endif
\o
RESET client_min_messages;
