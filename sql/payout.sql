-- Payouts and statement documents: the SQL surface (docs/payouts.md,
-- docs/statements.md).  Runs in one transaction that is rolled back; ids are
-- shown relative to the batch so the output does not depend on earlier files.
\set VERBOSITY terse
\set ON_ERROR_ROLLBACK on
BEGIN;
\i test/process/payout_scenario.sql
SET LOCAL settle.reason = 'regression test';

-- helpers
SELECT settle.iban_valid('DE89370400440532013000') AS ok, settle.iban_valid('DE89370400440532013001') AS bad_check,
       settle.iban_valid('de89370400440532013000') AS lower_case, settle.iban_mask('DE89370400440532013000') AS masked;
SELECT settle.xml_escape($$A & B <c> "d" 'e'$$);
SELECT settle.csv_field('plain'), settle.csv_field('a,b'), settle.csv_field('say "hi"'), settle.csv_field(NULL) IS NOT NULL AS empty;
SELECT * FROM settle.csv_parse(E'a,"b,c",""\r\n\n"x""y",,z\n');
SELECT settle.format_amount(1234.5, 'USD') AS usd, settle.format_amount(1234.5, 'JPY') AS jpy, settle.format_amount(1.2345, 'KWD') AS kwd;

-- settings and payees
SELECT settle.create_payout_batch('2026-10', 'EUR');
SELECT settle.set_payout_setting('Operator Cloud Pte. Ltd.', 'DE89 3704 0044 0532 0130 00', 'COBADEFFXXX', 'DE');
SELECT settle.set_payee('alpha', 'Alpha Cloud GmbH', 'GB82WEST12345698765431', 'NWBKGB2L', 'GB', 'EUR');
SELECT settle.set_payee('alpha', 'Alpha Cloud GmbH', 'GB82WEST12345698765432', 'NWBK', 'GB', 'EUR');
SELECT settle.set_payee('alpha', 'Alpha Cloud GmbH', 'GB82WEST12345698765432', 'NWBKGB2L', 'GB', 'EUR');
SELECT settle.set_payee('bravo', 'Bravo & <Sons> "IT"', 'FR1420041010050500013M02606', 'BNPAFRPP', 'FR', 'EUR');
SELECT settle.set_payee('delta', 'Delta Inc', 'CH9300762011623852957', 'UBSWCHZH80A', 'CH', 'USD');
SELECT reseller_id = settle.reseller_id('alpha') AS alpha, version, account_holder, iban_masked, bic, country, currency
  FROM settle.payee_change ORDER BY change_id;

-- batches: refusals, then the EUR batch
SELECT settle.create_payout_batch('2026-10', 'EUR');
SELECT settle.set_payee('echo', 'Écho Ltd', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'USD');
SELECT settle.create_payout_batch('2026-10', 'EUR');
SELECT settle.set_payee('echo', 'Écho Ltd', 'NL91ABNA0417164300', 'ABNANL2A', 'NL', 'EUR');
SELECT settle.create_payout_batch('2026-09', 'EUR');
SELECT settle.create_payout_batch('2026-10', 'SEK');
SELECT period, currency, status, payouts, control_sum, execution_date
  FROM settle.create_payout_batch('2026-10', 'EUR', '2026-11-05');
SELECT settle.create_payout_batch('2026-10', 'EUR');
CREATE TEMP VIEW b AS SELECT batch_id FROM settle.payout_batch WHERE currency = 'EUR';
SELECT line_no, reseller_code, amount, currency, end_to_end_id = format('B%s-R%s-%s', batch_id, reseller_id, run_id) AS e2e_ok, status
  FROM settle.payout JOIN b USING (batch_id) ORDER BY line_no;
-- the CSV file (batch and run ids replaced by #)
SELECT regexp_replace(regexp_replace(settle.payout_file(batch_id, 'csv'), '(^|\n)[0-9]+,([A-Z]+-2026-10-EUR-)[0-9]+,([0-9]),B[0-9]+-R[0-9]+-[0-9]+,[0-9]+,([a-z]+),2026-10,[0-9]+,',
                      '\1#,\2#,\3,B#-R#-#,#,\4,2026-10,#,', 'g'), 'run [0-9]+', 'run #', 'g') AS csv FROM b;
-- the pain.001 file (creation time and ids replaced by #), one element a row (the file has no line breaks)
SELECT t.pain001 FROM b, regexp_split_to_table(regexp_replace(regexp_replace(regexp_replace(settle.payout_file(batch_id),
                      '<CreDtTm>[^<]*<', '<CreDtTm>#<'), 'EUR-[0-9]+<', 'EUR-#<', 'g'), 'B[0-9]+-R[0-9]+-[0-9]+|run [0-9]+', '#', 'g'),
                      '(?<=>)(?=<)') WITH ORDINALITY AS t(pain001, n) ORDER BY t.n;
SELECT format, verified FROM settle.verify_payout_batch((SELECT batch_id FROM b));
-- the registered formats
SELECT format, aliases, builder, content_type, extension FROM settle.payout_format ORDER BY format;
SELECT settle.payout_file((SELECT batch_id FROM b), 'mt101');

-- confirmations
SELECT settle.import_payout_confirmations((SELECT batch_id FROM b), '[{"reseller": "alpha", "bank_reference": "R1", "status": "ACSC", "amount": "1,00"}]'::jsonb);
SELECT settle.import_payout_confirmations((SELECT batch_id FROM b), '[{"reseller": "alpha", "bank_reference": "R1", "status": "pending", "amount": "1.00"}]'::jsonb);
SELECT settle.import_payout_confirmations(-1, '[]'::jsonb);
SELECT c.reseller_id = settle.reseller_id('alpha') AS alpha, c.reseller_id = settle.reseller_id('bravo') AS bravo, c.outcome, c.exception_id IS NOT NULL AS exception
  FROM b, settle.import_payout_confirmations(b.batch_id,
	E'reseller,bank_reference,status,amount\nalpha,BANK-1,confirmed,123.45\nbravo,BANK-2,confirmed,190.50\nzulu,BANK-3,confirmed,1.00\n') c
 ORDER BY 3;
SELECT reseller_code, status, bank_reference, confirmed_amount FROM settle.payout JOIN b USING (batch_id) ORDER BY line_no;
SELECT status FROM settle.payout_batch JOIN b USING (batch_id);
SELECT r.code, x.status FROM settle.run x JOIN settle.reseller r USING (reseller_id) WHERE x.period = '2026-10'
   AND r.code IN ('alpha', 'bravo', 'charlie', 'delta', 'echo') ORDER BY 1;
SELECT kind, severity, state, payload->>'problem' AS problem, payload->>'expected' AS expected, payload->>'confirmed' AS confirmed
  FROM settle.exception WHERE kind = 'payout_mismatch' ORDER BY exception_id;

-- statement CSV (run ids replaced by #)
SELECT regexp_replace(settle.statement_csv(run_id), ',[0-9]+,bravo,', ',#,bravo,', 'g') AS csv
  FROM settle.run WHERE reseller_id = settle.reseller_id('bravo') AND period = '2026-10';
SELECT settle.statement_csv(-1);
-- statement HTML: a few rendered rows
SELECT (regexp_matches(settle.statement_html(run_id), '<(?:dd id="reseller"|tr id="net-payout"|tr id="carry-forward-out")[^\n]*', 'g'))[0 + 1] AS html
  FROM settle.run WHERE reseller_id = settle.reseller_id('bravo') AND period = '2026-10';

-- every object of this file is documented
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'settle' AND c.relkind IN ('r', 'v')
   AND c.relname IN ('payout_setting', 'payee', 'payee_change', 'payee_current', 'payout_batch', 'payout',
                     'payout_format', 'payout_batch_file', 'payout_batch_hashes')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.oid::regprocedure FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'settle' AND p.proname IN ('xml_escape', 'csv_field', 'format_amount', 'iban_valid', 'iban_mask',
       'set_payout_setting', 'set_payee', 'payout_guard', '_payout_pain001', '_payout_csv', 'payout_file',
       'verify_payout_batch', 'create_payout_batch', 'csv_parse', 'import_payout_confirmations', 'may_read_statement',
       '_readable_run', 'adjustment_reason', 'statement_csv', '_statement_page', '_statement_document',
       'statement_html', 'statements_html', '_payout_format', '_payout_build', 'payout_format_check')
   AND obj_description(p.oid, 'pg_proc') IS NULL;
ROLLBACK;
