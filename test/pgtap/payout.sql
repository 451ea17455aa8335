-- Payouts: payee bank details and who may see them, payout
-- batches from locked statements (and every refusal), file hashes and
-- byte-identical regeneration, confirmations reconciled against the batch,
-- runs moved to paid, and the statement CSV/HTML documents.
-- Scenario: test/process/payout_scenario.sql (five resellers, 2026-10, locked).
BEGIN;
SELECT plan(107);
\ir ../process/payout_scenario.sql

CREATE ROLE tap_pay_admin IN ROLE settle_admin;
CREATE ROLE tap_pay_finance IN ROLE settle_finance;
CREATE ROLE tap_pay_analyst IN ROLE settle_analyst;
CREATE ROLE tap_pay_auditor IN ROLE settle_auditor;
CREATE ROLE tap_pay_operator IN ROLE settle_operator;
CREATE ROLE tap_pay_portal IN ROLE settle_reseller;
SELECT settle.grant_reseller_access('tap_pay_portal', 'alpha');

CREATE FUNCTION pg_temp.as_role(r name, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	EXECUTE q;
	RESET ROLE;
EXCEPTION WHEN OTHERS THEN
	RESET ROLE;
	RAISE;
END $$;
CREATE FUNCTION pg_temp.run_of(code text) RETURNS bigint LANGUAGE sql AS $$
	SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id(code) AND period = '2026-10' AND status <> 'superseded'
$$;
CREATE FUNCTION pg_temp.written() RETURNS text LANGUAGE sql AS $$
	SELECT format('%s batches, %s payouts, %s payout_mismatch exceptions, %s paid runs',
	              (SELECT count(*) FROM settle.payout_batch), (SELECT count(*) FROM settle.payout),
	              (SELECT count(*) FROM settle.exception WHERE kind = 'payout_mismatch'),
	              (SELECT count(*) FROM settle.run WHERE status = 'paid'))
$$;

-- The scenario's statements.
SELECT results_eq($$SELECT r.code, s.currency::text, s.net_payout, s.carry_forward_out, x.status
                      FROM settle.statement s JOIN settle.reseller r USING (reseller_id) JOIN settle.run x USING (reseller_id, run_id)
                     WHERE x.period = '2026-10' ORDER BY 1$$,
	$$VALUES ('alpha', 'EUR', 123.45, 0.00, 'locked'), ('bravo', 'EUR', 190.00, 0.00, 'locked'),
	         ('charlie', 'EUR', 0.00, 50.00, 'locked'), ('delta', 'USD', 77.70, 0.00, 'locked'),
	         ('echo', 'EUR', 30.00, 0.00, 'locked')$$,
	'scenario: five locked statements, charlie below its minimum payout');

-- 1. Settings and payee bank details.
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-10', 'EUR')$$, '55000', NULL,
	'no batch before the operator''s paying account is set');
SET LOCAL settle.reason = 'payout test';
SELECT lives_ok($$SELECT pg_temp.as_role('tap_pay_finance', $q$SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd.', 'DE89 3704 0044 0532 0130 00', 'COBADEFFXXX', 'DE')$q$)$$,
	'finance sets the operator''s paying account');
SELECT throws_ok($$SELECT pg_temp.as_role('tap_pay_analyst', $q$SELECT settle.set_payout_setting('X', 'DE89370400440532013000', 'COBADEFFXXX', 'DE')$q$)$$,
	'42501', NULL, 'an analyst cannot set the paying account');
SELECT is((SELECT debtor_iban FROM settle.payout_setting), 'DE89370400440532013000', 'the IBAN is stored without blanks');
SELECT lives_ok($$SELECT pg_temp.as_role('tap_pay_finance', $q$SELECT settle.set_payee('alpha', 'Alpha Cloud GmbH', 'GB82 WEST 1234 5698 7654 32', 'NWBKGB2L', 'GB', 'EUR')$q$)$$,
	'finance records alpha''s bank details');
SELECT lives_ok($$SELECT pg_temp.as_role('tap_pay_admin', $q$SELECT settle.set_payee('bravo', 'Bravo & <Sons> "IT"', 'FR1420041010050500013M02606', 'bnpafrpp', 'fr', 'EUR')$q$)$$,
	'admin records bravo''s bank details');
SELECT lives_ok($$SELECT settle.set_payee('delta', 'Delta Inc', 'CH9300762011623852957', 'UBSWCHZH80A', 'CH', 'USD')$$,
	'delta''s bank details (USD account)');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, $q$SELECT settle.set_payee('echo', 'E', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'EUR')$q$)$$, r),
	'42501', NULL, r || ' cannot record bank details')
  FROM unnest(ARRAY['tap_pay_analyst', 'tap_pay_auditor', 'tap_pay_operator', 'tap_pay_portal']) r;
SELECT throws_ok($$SELECT settle.set_payee('echo', 'Echo', 'NL91ABNA0417164301', 'ABNANL2A', 'NL', 'EUR')$$,
	'22023', 'the IBAN given for reseller "echo" is not valid', 'a wrong IBAN check digit is refused, without echoing the IBAN');
SELECT throws_ok($$SELECT settle.set_payee('echo', 'Echo', 'NL91ABNA0417164300', 'ABNA', 'NL', 'EUR')$$,
	'22023', NULL, 'a malformed BIC is refused');
SELECT throws_ok($$SELECT settle.set_payee('echo', repeat('x', 71), 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'EUR')$$,
	'22023', NULL, 'an account holder name longer than 70 characters (pain.001 Max70Text) is refused');
SELECT throws_ok($$SELECT settle.set_payee('echo', 'Echo', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'XXX')$$,
	'23503', NULL, 'an unknown currency is refused');

-- Who can read bank details.
SELECT lives_ok($$SELECT pg_temp.as_role(r, 'SELECT * FROM settle.payee') FROM unnest(ARRAY['tap_pay_finance', 'tap_pay_admin']) r$$,
	'finance and admin read settle.payee');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT * FROM settle.%s')$$, r, t), '42501', NULL,
	r || ' cannot read settle.' || t)
  FROM unnest(ARRAY['tap_pay_analyst', 'tap_pay_auditor', 'tap_pay_portal']) r,
       unnest(ARRAY['payee', 'payee_current']) t;
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.payout_file(1, ''csv'')')$$, r), '42501', NULL,
	r || ' cannot read payout files (they hold bank details)')
  FROM unnest(ARRAY['tap_pay_analyst', 'tap_pay_auditor', 'tap_pay_portal']) r;

-- Bank details stay out of the audit trail; the masked change record is in it.
SELECT is((SELECT count(*) FROM settle.audit_log
            WHERE concat(old_row::text, new_row::text, row_key::text) ~ '(12345698765432|20041010050500013M02606|0762011623852957)'),
	0::bigint, 'no audit entry holds a payee IBAN in clear');
SELECT is((SELECT count(*) FROM settle.audit_log WHERE table_name = 'payee'), 0::bigint, 'settle.payee is not in the generic audit');
SELECT results_eq($$SELECT new_row->>'iban_masked', reason FROM settle.audit_log WHERE table_name = 'payee_change' ORDER BY audit_id$$,
	$$VALUES ('GB****************5432', 'payout test'), ('FR*********************2606', 'payout test'),
	         ('CH***************2957', 'payout test')$$,
	'each payee change is audited with the IBAN masked and the reason');
SELECT throws_ok($$UPDATE settle.payee SET iban = 'GB82WEST12345698765432'$$, NULL, NULL, 'payee versions are append-only');

-- 2. Batch refusals: nothing written.
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-10', 'EUR')$$, '55000', 'no payee bank details for reseller(s) echo',
	'a reseller without payee refuses the whole batch');
SELECT lives_ok($$SELECT settle.set_payee('echo', 'Écho Ltd ''q''', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'USD')$$,
	'echo''s account recorded in the wrong currency');
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-10', 'EUR')$$, '22023', NULL,
	'a payee account in another currency refuses the batch');
SELECT is(pg_temp.written(), '0 batches, 0 payouts, 0 payout_mismatch exceptions, 0 paid runs', 'the refusals wrote nothing');
SELECT lives_ok($$SELECT settle.set_payee('echo', 'Écho Ltd ''q''', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'EUR')$$,
	'echo''s EUR account (version 2)');
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-09', 'EUR')$$, 'P0002', NULL, 'nothing to pay in a period without locked statements');
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-10', 'GBP')$$, 'P0002', NULL, 'nothing to pay in a currency without statements');
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-13', 'EUR')$$, '22007', NULL, 'an invalid period is refused');
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-10', 'EURO')$$, '23503', NULL, 'an unknown currency is refused');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT settle.create_payout_batch(''2026-10'', ''EUR'')')$$, r), '42501', NULL,
	r || ' cannot create a payout batch')
  FROM unnest(ARRAY['tap_pay_analyst', 'tap_pay_auditor', 'tap_pay_operator', 'tap_pay_portal']) r;

-- 3. The EUR batch: alpha, bravo, echo; charlie carried forward; delta is USD.
SELECT lives_ok($$SELECT pg_temp.as_role('tap_pay_finance', 'SELECT settle.create_payout_batch(''2026-10'', ''EUR'', ''2026-11-05'')')$$,
	'finance creates the EUR batch');
CREATE TEMP VIEW eur AS SELECT * FROM settle.payout_batch WHERE currency = 'EUR';
SELECT results_eq($$SELECT period, status, payouts, control_sum, execution_date, msg_id = format('SETTLE-2026-10-EUR-%s', batch_id) FROM eur$$,
	$$VALUES ('2026-10', 'created', 3, 343.45, date '2026-11-05', true)$$, 'batch: 3 payouts, control sum 343.45');
SELECT results_eq($$SELECT p.reseller_code, p.line_no, p.amount, p.status, p.payee_version,
                           p.end_to_end_id = format('B%s-R%s-%s', p.batch_id, p.reseller_id, p.run_id)
                      FROM settle.payout p JOIN eur USING (batch_id) ORDER BY p.line_no$$,
	$$VALUES ('alpha', 1, 123.45, 'pending', 1, true), ('bravo', 2, 190.00, 'pending', 1, true),
	         ('echo', 3, 30.00, 'pending', 2, true)$$,
	'payouts in reseller order, each with the payee version in force and its end-to-end id');
SELECT is((SELECT created_at = date_trunc('second', created_at) FROM eur), true, 'the creation time is fixed to the second');
SELECT results_eq($$SELECT f.format, f.sha256 = sha256(convert_to(settle.payout_file(f.batch_id, f.format), 'UTF8')),
                           f.size_bytes = octet_length(convert_to(settle.payout_file(f.batch_id, f.format), 'UTF8'))
                      FROM settle.payout_batch_file f JOIN eur USING (batch_id) ORDER BY 1$$,
	$$VALUES ('csv', true, true), ('pain.001', true, true)$$,
	'one file per registered format is recorded: its SHA-256 and size are those of the file');
SELECT is((SELECT (csv_sha256, pain001_sha256)::text FROM settle.payout_batch_hashes JOIN eur USING (batch_id)),
	(SELECT ((array_agg(sha256) FILTER (WHERE format = 'csv'))[1], (array_agg(sha256) FILTER (WHERE format = 'pain.001'))[1])::text
	   FROM settle.payout_batch_file JOIN eur USING (batch_id)),
	'payout_batch_hashes shows the recorded hashes in the columns of 0.1.0');
SELECT is((SELECT settle.payout_file(batch_id, 'XML') = settle.payout_file(batch_id, 'pain.001') FROM eur), true,
	'a format may be named by an alias, in any case');
SELECT is((SELECT settle.payout_file(batch_id) = settle.payout_file(batch_id, 'pain.001') FROM eur), true, 'pain.001 is the default format');
SELECT throws_ok($$SELECT settle.payout_file((SELECT batch_id FROM eur), 'mt940')$$, '22023', NULL, 'unknown file formats are refused');
SELECT throws_ok($$SELECT settle.payout_file(987654, 'csv')$$, 'P0002', NULL, 'unknown batches are refused');
CREATE TEMP TABLE files AS SELECT settle.payout_file(batch_id, 'csv') AS csv, settle.payout_file(batch_id) AS xml FROM eur;
-- a new payee version and a renamed reseller change nothing in the files of an existing batch
SELECT settle.set_payee('alpha', 'Alpha Renamed', 'DE89370400440532013000', 'COBADEFFXXX', 'DE', 'EUR');
UPDATE settle.reseller SET name = 'Alpha New Name' WHERE code = 'alpha';
SELECT is((SELECT settle.payout_file(batch_id, 'csv') = f.csv AND settle.payout_file(batch_id) = f.xml FROM eur, files f), true,
	'regenerating the files gives identical bytes after payee and reseller changes');
SELECT results_eq($$SELECT format, verified, recorded_sha256 = sha256 FROM settle.verify_payout_batch((SELECT batch_id FROM eur))$$,
	$$VALUES ('csv', true, true), ('pain.001', true, true)$$, 'verify_payout_batch regenerates and confirms both files');
SELECT is((SELECT xml_is_well_formed_document(xml) FROM files), true, 'the pain.001 file is well-formed XML');
SELECT results_eq($$SELECT (xpath('count(//p:CdtTrfTxInf)', xml::xml, ARRAY[ARRAY['p', 'urn:iso:std:iso:20022:tech:xsd:pain.001.001.03']]))[1]::text,
                           (xpath('/p:Document/p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum/text()', xml::xml, ARRAY[ARRAY['p', 'urn:iso:std:iso:20022:tech:xsd:pain.001.001.03']]))[1]::text,
                           (xpath('//p:CdtTrfTxInf[2]/p:Cdtr/p:Nm/text()', xml::xml, ARRAY[ARRAY['p', 'urn:iso:std:iso:20022:tech:xsd:pain.001.001.03']]))[1]::text,
                           (xpath('//p:CdtTrfTxInf[1]/p:Amt/p:InstdAmt/@Ccy', xml::xml, ARRAY[ARRAY['p', 'urn:iso:std:iso:20022:tech:xsd:pain.001.001.03']]))[1]::text,
                           (xpath('//p:CdtTrfTxInf[1]/p:RmtInf/p:Ustrd/text()', xml::xml, ARRAY[ARRAY['p', 'urn:iso:std:iso:20022:tech:xsd:pain.001.001.03']]))[1]::text
                      FROM files$$,
	$$VALUES ('3', '343.45', 'Bravo &amp; &lt;Sons&gt; "IT"', 'EUR', format('Commission 2026-10 run %s reseller alpha', pg_temp.run_of('alpha')))$$,
	'pain.001: three transactions, CtrlSum, escaped creditor name, currency, remittance with period and run');
SELECT is((SELECT split_part(csv, E'\n', 1) FROM files),
	'batch_id,msg_id,line_no,end_to_end_id,reseller_id,reseller_code,period,run_id,amount,currency,creditor_name,creditor_iban,creditor_bic,creditor_country,execution_date,remittance',
	'CSV header');
SELECT is((SELECT count(*) FROM files, settle.csv_parse(csv) r WHERE r[9] IN ('123.45', '190.00', '30.00') AND r[12] IN ('GB82WEST12345698765432', 'FR1420041010050500013M02606', 'NL91ABNA0417164300')),
	3::bigint, 'CSV: one record per payout with amount and IBAN (quoted name parses back)');
SELECT is((SELECT r[11] FROM files, settle.csv_parse(csv) r WHERE r[6] = 'bravo'), 'Bravo & <Sons> "IT"', 'CSV quoting round-trips');
SELECT throws_ok($$SELECT settle.create_payout_batch('2026-10', 'EUR')$$, 'P0002', NULL,
	'a second EUR batch finds nothing: a statement is in at most one batch');
SELECT throws_ok($$UPDATE settle.payout SET amount = 1$$, '42501', NULL, 'payout amounts cannot be changed');
SELECT throws_ok($$DELETE FROM settle.payout_batch$$, '42501', NULL, 'payout batches cannot be deleted');
SELECT throws_ok($$TRUNCATE settle.payout, settle.payout_batch$$, NULL, NULL, 'payouts cannot be truncated, even by the owner');
SELECT throws_ok($$SELECT pg_temp.as_role('tap_pay_analyst', 'UPDATE settle.payout SET status = ''confirmed''')$$, '42501', NULL,
	'no direct writes to payouts');
-- A new format is one builder function and one registry row.
CREATE FUNCTION public.tap_payout_lines(batch_id bigint) RETURNS text LANGUAGE sql STABLE AS $$
	SELECT string_agg(end_to_end_id || ' ' || amount, E'\n' ORDER BY line_no) || E'\n' FROM settle.payout WHERE payout.batch_id = $1
$$;
CREATE FUNCTION public.tap_payout_bad(batch_id integer) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
SELECT throws_ok($$INSERT INTO settle.payout_format VALUES ('bad', '{}', 'public.tap_payout_bad(integer)', 'text/plain', 'txt', 'x')$$,
	'22023', NULL, 'a builder that does not take (bigint) is refused');
SELECT throws_ok($$INSERT INTO settle.payout_format VALUES ('lines', '{xml}', 'public.tap_payout_lines(bigint)', 'text/plain', 'txt', 'x')$$,
	'23505', NULL, 'a format may not take another format''s alias');
SELECT throws_ok($$SELECT pg_temp.as_role('tap_pay_finance', 'INSERT INTO settle.payout_format VALUES (''lines'', ''{}'', ''public.tap_payout_lines(bigint)'', ''text/plain'', ''txt'', ''x'')')$$,
	'42501', NULL, 'finance cannot register a format (its builder would run as the extension owner)');
SELECT lives_ok($$INSERT INTO settle.payout_format VALUES ('lines', '{}', 'public.tap_payout_lines(bigint)', 'text/plain', 'txt', 'end-to-end id and amount per line')$$,
	'the owner registers a third format');
SELECT lives_ok($$SELECT settle.create_payout_batch('2026-10', 'USD')$$, 'the USD batch (delta)');
SELECT results_eq($$SELECT f.format, f.size_bytes FROM settle.payout_batch_file f JOIN settle.payout_batch b USING (batch_id)
                     WHERE b.currency = 'USD' ORDER BY 1$$,
	$$SELECT * FROM (VALUES ('csv', (SELECT octet_length(convert_to(settle.payout_file(batch_id, 'csv'), 'UTF8'))::bigint FROM settle.payout_batch WHERE currency = 'USD')),
	                        ('lines', (SELECT length(end_to_end_id || ' ' || amount)::bigint + 1 FROM settle.payout WHERE currency = 'USD')),
	                        ('pain.001', (SELECT octet_length(convert_to(settle.payout_file(batch_id), 'UTF8'))::bigint FROM settle.payout_batch WHERE currency = 'USD'))) v(f, n)$$,
	'a batch created after the registration records the new format''s file too');
SELECT results_eq($$SELECT format, verified FROM settle.verify_payout_batch((SELECT batch_id FROM settle.payout_batch WHERE currency = 'USD'))$$,
	$$VALUES ('csv', true), ('lines', true), ('pain.001', true)$$, 'verify_payout_batch covers the new format');
CREATE OR REPLACE FUNCTION public.tap_payout_lines(batch_id bigint) RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'changed' $$;
SELECT results_eq($$SELECT format, verified FROM settle.verify_payout_batch((SELECT batch_id FROM settle.payout_batch WHERE currency = 'USD'))$$,
	$$VALUES ('csv', true), ('lines', false), ('pain.001', true)$$, 'a file that no longer regenerates as recorded fails verification');

-- 4. Confirmations.
SELECT throws_ok($$SELECT * FROM settle.import_payout_confirmations(987654, '[]'::jsonb)$$, 'P0002', NULL, 'unknown batch refused');
SELECT throws_ok(format($$SELECT * FROM settle.import_payout_confirmations(%s, '[{"reseller": "alpha", "bank_reference": "R1", "status": "confirmed", "amount": "12x"}]'::jsonb)$$,
	(SELECT batch_id FROM eur)), '22P02', NULL, 'a malformed amount is refused');
SELECT throws_ok(format($$SELECT * FROM settle.import_payout_confirmations(%s, '[{"reseller": "alpha", "bank_reference": "R1", "status": "confirmed", "amount": "123.45"}, {"reseller": "bravo", "bank_reference": "R2", "status": "maybe", "amount": "190.00"}]'::jsonb)$$,
	(SELECT batch_id FROM eur)), '22023', NULL, 'an unknown status is refused, even after a good confirmation');
SELECT throws_ok(format($$SELECT * FROM settle.import_payout_confirmations(%s, '{"reseller": "alpha"}'::jsonb)$$, (SELECT batch_id FROM eur)),
	'22023', NULL, 'confirmations must be an array');
SELECT throws_ok(format($$SELECT * FROM settle.import_payout_confirmations(%s, E'reseller,bank_reference,status,amount\nalpha,R1,confirmed,123.45\nbravo,R2,confirmed')$$,
	(SELECT batch_id FROM eur)), '22P02', NULL, 'a short CSV record is refused');
SELECT is(pg_temp.written(), '2 batches, 4 payouts, 0 payout_mismatch exceptions, 0 paid runs', 'refused imports wrote nothing');
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT * FROM settle.import_payout_confirmations(1, ''[]''::jsonb)')$$, r), '42501', NULL,
	r || ' cannot import confirmations')
  FROM unnest(ARRAY['tap_pay_analyst', 'tap_pay_auditor', 'tap_pay_portal']) r;

CREATE TEMP TABLE imp1 AS SELECT * FROM settle.import_payout_confirmations((SELECT batch_id FROM eur), format(
	'[{"end_to_end_id": "%s", "bank_reference": "BANK-1", "status": "ACSC", "amount": 123.45},
	  {"reseller": "bravo", "bank_reference": "BANK-2", "status": "confirmed", "amount": "190.01"},
	  {"end_to_end_id": "B999-R1-1", "bank_reference": "BANK-3", "status": "confirmed", "amount": "5.00"}]',
	(SELECT end_to_end_id FROM settle.payout WHERE reseller_code = 'alpha'))::jsonb);
SELECT results_eq($$SELECT outcome, exception_id IS NOT NULL FROM imp1 ORDER BY outcome$$,
	$$VALUES ('amount_mismatch', true), ('confirmed', false), ('unknown', true)$$,
	'alpha confirmed; bravo''s amount differs; an unknown end-to-end id');
SELECT results_eq($$SELECT reseller_code, status, bank_reference FROM settle.payout WHERE currency = 'EUR' ORDER BY line_no$$,
	$$VALUES ('alpha', 'confirmed', 'BANK-1'), ('bravo', 'mismatch', NULL), ('echo', 'pending', NULL)$$,
	'only the matching payout is confirmed');
SELECT results_eq($$SELECT r.code, x.status, x.paid_at IS NOT NULL FROM settle.run x JOIN settle.reseller r USING (reseller_id)
                     WHERE x.period = '2026-10' ORDER BY 1$$,
	$$VALUES ('alpha', 'paid', true), ('bravo', 'locked', false), ('charlie', 'locked', false), ('delta', 'locked', false), ('echo', 'locked', false)$$,
	'the confirmed payout''s run is paid, the others stay locked');
SELECT results_eq($$SELECT reseller_id, scope_key ~ 'unknown', payload->>'problem' FROM settle.exception WHERE kind = 'payout_mismatch' ORDER BY exception_id$$,
	$$VALUES (settle.reseller_id('bravo'), false, 'confirmed amount differs from the payout'),
	         (0::bigint, true, 'confirmation for a payout that is not in the batch')$$,
	'payout_mismatch exceptions: bravo''s amount, the unknown id (no reseller)');
SELECT is((SELECT status FROM eur), 'partially_confirmed', 'the batch is partially confirmed');
SELECT is((SELECT count(*) FROM settle.audit_log WHERE table_name = 'run' AND new_row->>'status' = 'paid' AND reason IS NOT NULL),
	1::bigint, 'the move to paid is audited with a reason');

CREATE TEMP TABLE imp2 AS SELECT * FROM settle.import_payout_confirmations((SELECT batch_id FROM eur),
	E'end_to_end_id,reseller,bank_reference,status,amount,currency\n,bravo,"BANK,2",booked,190.00,EUR\n,echo,BANK-5,confirmed,30,EUR\n,alpha,BANK-1,ACSC,123.45,EUR\n');
SELECT results_eq($$SELECT outcome FROM imp2 ORDER BY outcome$$, $$VALUES ('already_confirmed'), ('confirmed'), ('confirmed')$$,
	'CSV: bravo and echo confirmed, alpha''s repeat is idempotent');
SELECT results_eq($$SELECT status, confirmed_at IS NOT NULL FROM eur$$, $$VALUES ('confirmed', true)$$, 'every payout confirmed: the batch is confirmed');
SELECT is((SELECT count(*) FROM settle.run WHERE period = '2026-10' AND status = 'paid'), 3::bigint, 'alpha, bravo and echo are paid');
SELECT is((SELECT bank_reference FROM settle.payout WHERE reseller_code = 'bravo'), 'BANK,2', 'the quoted bank reference is kept');
SELECT results_eq($$SELECT outcome FROM settle.import_payout_confirmations((SELECT batch_id FROM eur),
	'[{"reseller": "echo", "bank_reference": "OTHER", "status": "rejected", "amount": "30.00"}]'::jsonb)$$,
	$$VALUES ('conflict')$$, 'a later confirmation contradicting a confirmed payout is a conflict (exception), not a change');
SELECT is((SELECT status FROM settle.payout WHERE reseller_code = 'echo'), 'confirmed', 'the confirmed payout is unchanged');

-- A rejection on the USD batch opens an exception and leaves the run locked.
SELECT results_eq($$SELECT outcome, exception_id IS NOT NULL FROM settle.import_payout_confirmations(
	(SELECT batch_id FROM settle.payout_batch WHERE currency = 'USD'),
	'[{"reseller": "delta", "bank_reference": "RJ-1", "status": "RJCT", "amount": "77.70"}]'::jsonb)$$,
	$$VALUES ('rejected', true)$$, 'a rejected payout opens an exception');
SELECT is((SELECT status FROM settle.run WHERE run_id = pg_temp.run_of('delta')), 'locked', 'the rejected payout''s run stays locked');

-- 5. Statement CSV: every record has the 19 documented fields (NULLs are empty fields).
SELECT is((SELECT count(*) FROM settle.csv_parse(settle.statement_csv(pg_temp.run_of('bravo'))) f WHERE cardinality(f) <> 19),
	0::bigint, 'statement CSV: every record has 19 fields');
SELECT is((SELECT settle.statement_html(pg_temp.run_of('bravo')) = settle.statement_html(pg_temp.run_of('bravo'))), true,
	'statement HTML is deterministic');

-- 6. Long statements are aggregated per customer and product; adjustments show their reasons.
SELECT is((SELECT settle.statement_html(pg_temp.run_of('alpha'), 1) ~ 'Commission per customer and product \(2 lines\)'
              AND settle.statement_html(pg_temp.run_of('alpha'), 1) ~ '<td>alpha-c1</td><td>ecs</td><td class="num">1</td><td class="num">1000.00</td><td class="num">100.00</td>'),
	true, 'above itemise_limit the itemised table aggregates per customer and product');
SELECT is((SELECT settle.statement_html(pg_temp.run_of('alpha')) ~ '<td>alpha/oss/oct</td><td>alpha-c1</td><td>oss</td><td>charge</td><td>1: otherwise pay 10%</td><td class="num">234.50</td><td class="num">10%</td><td class="num">23.45</td>'),
	true, 'below itemise_limit every line is listed with its clause, basis, rate and commission');
-- an approved adjustment line as the exception workflow writes it (rendering only: inserted by hand)
SELECT settle.open_exception(settle.reseller_id('charlie'), 'manual', 'tap-adjustment', '2026-10', '{}',
	'{"reason": "Goodwill <credit> & thanks"}', 'info');
INSERT INTO settle.settlement_line (reseller_id, run_id, line_key, kind, basis, unrounded, rounded, ref)
SELECT settle.reseller_id('charlie'), pg_temp.run_of('charlie'), 'adj/charlie/1', 'a', 0, 5, 5,
       'exception:' || (SELECT exception_id FROM settle.exception WHERE scope_key = 'tap-adjustment');
SELECT is((SELECT settle.statement_html(pg_temp.run_of('charlie')) ~ '<td>adj/charlie/1</td><td>adjustment</td><td>Approved adjustment: Goodwill &lt;credit&gt; &amp; thanks</td><td class="num">5.00</td>'),
	true, 'adjustments are listed with the reason of their exception, escaped');
SELECT is((SELECT r[19] FROM settle.csv_parse(settle.statement_csv(pg_temp.run_of('charlie'))) r WHERE r[1] = 'adjustment'),
	'Approved adjustment: Goodwill <credit> & thanks', 'the statement CSV carries the adjustment''s reason');
SELECT is((SELECT settle.statement_html(pg_temp.run_of('charlie')) ~ '<tr id="carry-forward-out"><th>[^<]*</th><td class="num">50.00 EUR</td></tr>'),
	true, 'charlie''s carry-forward is shown');
SELECT is((SELECT settle.statement_html(pg_temp.run_of('alpha')) ~ ('<code id="fingerprint">' || encode(output_fingerprint, 'hex') || '</code>')
             FROM settle.run WHERE run_id = pg_temp.run_of('alpha')),
	true, 'the run fingerprint is printed in hex');

-- Conservation: every batched run is paid exactly its net payout; a tampered payout is found.
SELECT is((SELECT count(*) FROM settle.payout_reconciliation WHERE status = 'mismatched'), 0::bigint,
	'no payout differs from its statement');
SELECT is((SELECT count(*) FROM settle.payout_reconciliation WHERE status = 'matched'),
	(SELECT count(DISTINCT run_id) FROM settle.payout WHERE status <> 'rejected'), 'every batched run is matched');
ALTER TABLE settle.payout DISABLE TRIGGER ALL;
UPDATE settle.payout SET amount = amount + 0.01 WHERE line_no = 1 AND batch_id = (SELECT min(batch_id) FROM settle.payout);
ALTER TABLE settle.payout ENABLE TRIGGER ALL;
SELECT is((SELECT count(*) FROM settle.payout_reconciliation WHERE status = 'mismatched'), 1::bigint,
	'a payout tampered by a cent is mismatched');

SELECT * FROM finish();
ROLLBACK;
