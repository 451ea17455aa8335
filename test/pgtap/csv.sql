-- settle.csv_parse (src/csv.c): RFC 4180 records as text arrays, every
-- refusal with its SQLSTATE and record number, the size limit (also in
-- settle.import_payout_confirmations, before any other work), who may call
-- it, and a 1 MB field in one piece.
BEGIN;
SELECT plan(41);

CREATE ROLE tap_csv_admin IN ROLE settle_admin;
CREATE ROLE tap_csv_finance IN ROLE settle_finance;
CREATE ROLE tap_csv_analyst IN ROLE settle_analyst;
CREATE ROLE tap_csv_auditor IN ROLE settle_auditor;
CREATE ROLE tap_csv_operator IN ROLE settle_operator;
CREATE ROLE tap_csv_portal IN ROLE settle_reseller;
CREATE ROLE tap_csv_nobody;

-- Runs q as role r; errors propagate with their SQLSTATE.
CREATE FUNCTION pg_temp.as_role(r name, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET LOCAL ROLE %I', r);
	EXECUTE q;
	RESET ROLE;
EXCEPTION WHEN OTHERS THEN
	RESET ROLE;
	RAISE;
END $$;
-- The parse of t as one row per record, arrays shown as text (for results_eq).
CREATE FUNCTION pg_temp.parse(t text) RETURNS SETOF text LANGUAGE sql AS $$
	SELECT r::text FROM settle.csv_parse(t) r
$$;
-- The error q raises: sqlstate | message | detail.
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text;
BEGIN
	EXECUTE q;
	RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL;
	RETURN concat_ws(' | ', st, msg, det);
END $$;

-- 1. Records and fields.
SELECT results_eq($$SELECT * FROM settle.csv_parse(E'a,"b,c",""\r\n\n"x""y",,z\n')$$,
	$$VALUES ('{a,"b,c",""}'::text[]), ('{"x\"y","",z}'::text[])$$,
	'quoted fields, a comma inside quotes, an empty quoted field, doubled quotes, empty fields');
SELECT results_eq($$SELECT * FROM settle.csv_parse(E'id,note\n1,"two\nlines, and a comma"\n2,"CR LF\r\ninside"\n')$$,
	$$VALUES (ARRAY['id', 'note']), (ARRAY['1', E'two\nlines, and a comma']), (ARRAY['2', E'CR LF\r\ninside'])$$,
	'line breaks and commas inside quotes are kept, CRLF inside quotes too');
SELECT results_eq($$SELECT * FROM pg_temp.parse(E'a,b\r\nc,d\r\n')$$, $$VALUES ('{a,b}'), ('{c,d}')$$,
	'CRLF line ends');
SELECT results_eq($$SELECT * FROM pg_temp.parse(E'a,b\rc,d\re')$$, $$VALUES ('{a,b}'), ('{c,d}'), ('{e}')$$,
	'a lone CR ends a record; the last record needs no line end');
SELECT results_eq($$SELECT * FROM pg_temp.parse(E'\n\r\n\na\n\n\r\n\r\rb\n\n')$$, $$VALUES ('{a}'), ('{b}')$$,
	'blank lines (LF, CRLF, CR) are skipped');
SELECT results_eq($$SELECT * FROM pg_temp.parse(E'""\n,\n,,\n" "\n')$$,
	$$VALUES ('{""}'), ('{"",""}'), ('{"","",""}'), ('{" "}')$$,
	'a line holding only "" or only commas is a record, not a blank line');
SELECT results_eq($$SELECT * FROM settle.csv_parse(E' a , b \n\t,x\n')$$,
	$$VALUES (ARRAY[' a ', ' b ']), (ARRAY[E'\t', 'x'])$$, 'blanks around unquoted fields are kept');
SELECT results_eq($$SELECT * FROM settle.csv_parse(E'"Zürich, CH",東京,"€ ""1"""\n')$$,
	$$VALUES (ARRAY['Zürich, CH', '東京', '€ "1"'])$$, 'multibyte characters, quoted or not');
SELECT results_eq($$SELECT settle.csv_parse(E'a,b\nc')::text$$, $$VALUES ('{a,b}'), ('{c}')$$,
	'called in the select list too');
SELECT is((SELECT count(*) FROM settle.csv_parse('')), 0::bigint, 'empty text: no records');
SELECT is((SELECT count(*) FROM settle.csv_parse(E'\n\r\n')), 0::bigint, 'only line ends: no records');
SELECT is((SELECT count(*) FROM settle.csv_parse(NULL)), 0::bigint, 'NULL: no records (STRICT)');
SELECT results_eq($$SELECT * FROM pg_temp.parse(E'a,"b"\n"c",d')$$, $$VALUES ('{a,b}'), ('{c,d}')$$,
	'a quoted field may end a record with or without a line end');

-- Every field settle.csv_field writes parses back to the same text.
CREATE TEMP TABLE tap_csv_values AS
SELECT g AS rec, f, (SELECT string_agg(substr(E'ab ,"\r\nZ€x"', 1 + ((g * 7 + f * 13 + k * k) % 12), 1), '' ORDER BY k)
                       FROM generate_series(1, (g * 5 + f) % 9) k) AS v
  FROM generate_series(1, 200) g, generate_series(1, 4) f;
SELECT is((SELECT count(*) FROM (
	SELECT rec, array_agg(coalesce(v, '') ORDER BY f) AS fields FROM tap_csv_values GROUP BY rec) w
	FULL JOIN (SELECT row_number() OVER () AS rec, r AS fields
	             FROM settle.csv_parse((SELECT string_agg(x.line, E'\r\n' ORDER BY x.rec)
	                                      FROM (SELECT rec, string_agg(settle.csv_field(v), ',' ORDER BY f) AS line
	                                              FROM tap_csv_values GROUP BY rec) x)) r) p USING (rec)
	WHERE w.fields IS DISTINCT FROM p.fields), 0::bigint,
	'200 records of fields with commas, quotes, CR, LF and multibyte characters round-trip through csv_field');

-- 2. Refusals: 22P04 (bad_copy_file_format), naming the record.
SELECT throws_ok($$SELECT * FROM settle.csv_parse(E'h1,h2\n\n"abc,def\nmore')$$, '22P04',
	'unterminated quoted field in CSV record 2', 'an unterminated quote is refused with its record');
SELECT is(pg_temp.error_of($$SELECT * FROM settle.csv_parse(E'a\n\n\nb\r\nc,"x\n\ny')$$),
	'22P04 | unterminated quoted field in CSV record 3 | The quoted field that starts on line 5 is not closed before the end of the text.',
	'records skip blank lines, lines count every line end');
SELECT throws_ok($$SELECT * FROM settle.csv_parse(E'a,b\n"x"y,z\n')$$, '22P04',
	'text after the closing quote of a field in CSV record 2', 'text after a closing quote is refused');
SELECT is(pg_temp.error_of($$SELECT * FROM settle.csv_parse(E'a,b\n"x\ny" ,z\n')$$),
	'22P04 | text after the closing quote of a field in CSV record 2 | On line 3 " " follows a closing quote; only a comma or a line end may.',
	'a blank after a closing quote is refused, on the line where it is');
SELECT throws_ok($$SELECT * FROM settle.csv_parse(E'a,b\nc,d"e"\n')$$, '22P04',
	'quote inside an unquoted field of CSV record 2', 'a quote inside an unquoted field is refused');
SELECT throws_ok($$SELECT * FROM settle.csv_parse(E' "x",y')$$, '22P04',
	'quote inside an unquoted field of CSV record 1', 'a quoted field may not follow a blank');

-- 3. The size limit: settle.csv_max_bytes (superuser), 64MB by default.
SELECT is(current_setting('settle.csv_max_bytes'), '64MB', 'the default limit is 64MB');
SELECT throws_ok($$SELECT count(*) FROM settle.csv_parse(repeat('a', 64 * 1024 * 1024 + 1))$$, '54000',
	'CSV text of 67108865 bytes exceeds the limit of 67108864 bytes', 'text over 64MB is refused (54000)');
SET LOCAL settle.csv_max_bytes = 1024;
SELECT is((SELECT length(r[1]) FROM settle.csv_parse(repeat('a', 1024)) r), 1024, 'text at the limit is read');
SELECT throws_ok($$SELECT count(*) FROM settle.csv_parse(repeat('a', 1025))$$, '54000',
	'CSV text of 1025 bytes exceeds the limit of 1024 bytes', 'one byte over the limit is refused');
SELECT throws_ok($$SELECT count(*) FROM settle.csv_parse(repeat('é', 513))$$, '54000',
	'CSV text of 1026 bytes exceeds the limit of 1024 bytes', 'the limit counts bytes, not characters');
-- import_payout_confirmations checks the size first: before the batch is looked up, for CSV and JSON text alike
SELECT throws_ok($$SELECT * FROM settle.import_payout_confirmations(987654, repeat('a', 1025))$$, '54000', NULL,
	'an oversized confirmation CSV is refused before anything else (not P0002 for the unknown batch)');
SELECT throws_ok($$SELECT * FROM settle.import_payout_confirmations(987654, '[' || repeat(' ', 1024) || ']')$$, '54000', NULL,
	'oversized JSON confirmation text is refused too');
SELECT throws_ok($$SELECT * FROM settle.import_payout_confirmations(987654, E'reseller,bank_reference,status,amount\nalpha,R1,confirmed,1.00\n')$$,
	'P0002', NULL, 'under the limit the import goes on (the unknown batch)');
SELECT throws_ok($$SELECT pg_temp.as_role('tap_csv_finance', 'SET LOCAL settle.csv_max_bytes = 1000000000')$$, '42501', NULL,
	'finance cannot raise the limit (superuser setting)');
RESET settle.csv_max_bytes;
SELECT is(current_setting('settle.csv_max_bytes'), '64MB', 'the limit is back to its default');

-- 4. Who may call it: the roles that import payout confirmations.
SELECT throws_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT count(*) FROM settle.csv_parse(''a,b'')')$$, r), '42501', NULL,
	r || ' cannot execute csv_parse')
  FROM unnest(ARRAY['tap_csv_portal', 'tap_csv_analyst', 'tap_csv_auditor', 'tap_csv_operator', 'tap_csv_nobody']) r;
SELECT lives_ok(format($$SELECT pg_temp.as_role(%L, 'SELECT count(*) FROM settle.csv_parse(''a,b'')')$$, r),
	r || ' executes csv_parse')
  FROM unnest(ARRAY['tap_csv_finance', 'tap_csv_admin']) r;
SELECT is(array_agg(r ORDER BY r), NULL, 'no role but finance and admin may execute csv_parse; nobody may call _csv_check_size')
  FROM unnest(ARRAY['settle_admin', 'settle_finance', 'settle_analyst', 'settle_auditor', 'settle_operator', 'settle_reseller', 'public']) r
 WHERE has_function_privilege(r, 'settle.csv_parse(text)', 'EXECUTE') <> (r IN ('settle_admin', 'settle_finance'))
    OR has_function_privilege(r, 'settle._csv_check_size(text)', 'EXECUTE');

-- 5. Large input in one pass: a 1 MB field, then 1 MB of confirmations.
SELECT results_eq($$SELECT count(*) OVER (), cardinality(r), length(r[1]), r[1] = repeat('a', 1048576) FROM settle.csv_parse(repeat('a', 1048576)) r$$,
	$$VALUES (1::bigint, 1, 1048576, true)$$, 'repeat(''a'', 1048576): one record of one 1 MB field');
SELECT results_eq($$SELECT count(*), min(cardinality(r)), max(cardinality(r)), sum(r[4]::numeric)
                      FROM settle.csv_parse(repeat(E'B1-R1-1,"BANK,0001",ACSC,647.38,USD\r\n', 30000)) r$$,
	$$VALUES (30000::bigint, 5, 5, 19421400.00)$$, '30,000 confirmation records (1 MB) parse to 30,000 rows of five fields');
SELECT throws_ok($$SELECT * FROM settle.import_payout_confirmations(987654, repeat('a', 1048576))$$, '22023',
	'the confirmation CSV header must name end_to_end_id or reseller, bank_reference, status and amount',
	'importing a 1 MB one-field text is refused for its header, quickly');

SELECT * FROM finish();
ROLLBACK;
