-- settle.import_payout_confirmations at volume: a batch of 3,000 payouts
-- (test/process/payout_volume.sql) confirmed by a CSV file of 2,975 records
-- in shuffled order, by end-to-end id, by reseller or both, with amount and
-- currency mismatches, rejections, unknown ids and payouts left out; every
-- outcome exact; the work done grows with the records (payout rows read per
-- record, not per record and payout); refusals at record 1,100 .. 2,900
-- name the same record as before, in record order, and write nothing; a
-- repeat of the import as JSON is idempotent.
BEGIN;
SELECT plan(22);
\set vol_period '2026-10'
\set vol_payouts 3000
\ir ../process/payout_volume.sql
SELECT is(:vol_batch::bigint, (SELECT max(batch_id) FROM settle.payout_batch), 'the volume batch is created');
SELECT results_eq(format('SELECT payouts, status FROM settle.payout_batch WHERE batch_id = %s', :vol_batch),
	$$VALUES (3000, 'created')$$, 'the batch holds 3,000 pending payouts');
SET LOCAL settle.reason = 'payout import test';

-- What the bank reports, per payout (line_no = reseller number):
--   every 97th       left out of the file (stays pending)
--   50k + 7          amount 0.01 higher              -> amount_mismatch
--   100k + 11        currency USD                    -> amount_mismatch
--   40k + 9          RJCT or returned                -> rejected
--   10k + 3          named by reseller only          -> confirmed
--   otherwise        by end-to-end id (10k + 5: and reseller) -> confirmed
-- plus five unknown end-to-end ids.  Record order: a permutation of line_no.
CREATE TEMP TABLE conf AS
SELECT p.line_no, p.end_to_end_id, p.reseller_code, p.amount,
       CASE WHEN p.line_no % 97 = 0 THEN 'absent'
            WHEN p.line_no % 50 = 7 THEN 'amount'
            WHEN p.line_no % 100 = 11 THEN 'currency'
            WHEN p.line_no % 40 = 9 THEN 'rejected'
            WHEN p.line_no % 10 = 3 THEN 'by_reseller'
            ELSE 'confirmed' END AS kind,
       CASE WHEN p.line_no % 10 = 0 THEN format('BANK,%s', p.line_no) ELSE format('BANK-%s', p.line_no) END AS bank_reference
  FROM settle.payout p WHERE p.batch_id = :vol_batch;
CREATE TEMP TABLE conf_line AS
SELECT row_number() OVER (ORDER BY x.o) AS pos, x.*
  FROM (SELECT (c.line_no * 7919) % 3001 AS o, c.line_no, c.kind,
               CASE WHEN c.kind <> 'by_reseller' THEN c.end_to_end_id END AS e2e,
               concat_ws(',',
                 CASE WHEN c.kind <> 'by_reseller' THEN c.end_to_end_id ELSE '' END,
                 CASE WHEN c.kind = 'by_reseller' OR c.line_no % 10 = 5 THEN c.reseller_code ELSE '' END,
                 settle.csv_field(c.bank_reference),
                 CASE WHEN c.kind = 'rejected' THEN (ARRAY['RJCT', 'returned'])[1 + c.line_no % 2]
                      ELSE (ARRAY['ACSC', 'confirmed', 'booked', 'accepted'])[1 + c.line_no % 4] END,
                 CASE WHEN c.kind = 'amount' THEN (c.amount + 0.01)::text ELSE c.amount::text END,
                 CASE WHEN c.kind = 'currency' THEN 'USD' WHEN c.line_no % 7 = 0 THEN '' ELSE 'EUR' END) AS line
          FROM conf c WHERE c.kind <> 'absent'
        UNION ALL
        SELECT k * 600 + 0.5, NULL, 'unknown', format('B999999-R%s-1', k),
               format('B999999-R%s-1,,BANK-U%s,ACSC,10.00,EUR', k, k)
          FROM generate_series(1, 5) k) x;
-- The CSV text, with record pos1 replaced by line1 and pos2 by line2 when given.
CREATE FUNCTION pg_temp.conf_csv(pos1 bigint DEFAULT NULL, line1 text DEFAULT NULL, pos2 bigint DEFAULT NULL, line2 text DEFAULT NULL)
	RETURNS text LANGUAGE sql AS $$
	SELECT E'end_to_end_id,reseller,bank_reference,status,amount,currency\r\n'
	       || string_agg(CASE l.pos WHEN pos1 THEN line1 WHEN pos2 THEN line2 ELSE l.line END, E'\r\n' ORDER BY l.pos) || E'\r\n'
	  FROM pg_temp.conf_line l
$$;
CREATE FUNCTION pg_temp.written() RETURNS text LANGUAGE sql AS $$
	SELECT format('%s pending, %s payout_mismatch exceptions, %s paid runs',
	              (SELECT count(*) FROM settle.payout p WHERE p.batch_id = (SELECT max(batch_id) FROM settle.payout_batch) AND p.status = 'pending'),
	              (SELECT count(*) FROM settle.exception WHERE kind = 'payout_mismatch'),
	              (SELECT count(*) FROM settle.run WHERE status = 'paid'))
$$;
-- Rows of settle.payout this transaction has read so far (sequential and index fetches).
CREATE FUNCTION pg_temp.payout_rows_read() RETURNS bigint LANGUAGE sql AS $$
	SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables WHERE relid = 'settle.payout'::regclass
$$;
SELECT results_eq($$SELECT count(*), count(*) FILTER (WHERE kind = 'unknown'), count(DISTINCT line_no) FROM conf_line$$,
	$$VALUES (2975::bigint, 5::bigint, 2970::bigint)$$, 'the file: 2,975 records, five of them unknown ids');

-- 1. Refusals deep in the file, reported as before, nothing written.
SELECT throws_ok(format('SELECT * FROM settle.import_payout_confirmations(%s, pg_temp.conf_csv(2500, %L))', :vol_batch, 'B1-R1-1,,BANK-1,ACSC,1.00'),
	'22P02', 'confirmation CSV record 2500 has 5 fields, the header 6', 'a short record 2,500 is named');
SELECT throws_ok(format('SELECT * FROM settle.import_payout_confirmations(%s, pg_temp.conf_csv(2900, (SELECT line FROM conf_line WHERE pos = 1200)))', :vol_batch),
	'22023', (SELECT format('payout %s is confirmed twice in one import', e2e) FROM conf_line WHERE pos = 1200),
	'record 2,900 repeating record 1,200 is refused, naming the payout');
SELECT min(pos) AS res_pos FROM conf_line WHERE kind = 'by_reseller' AND pos >= 1300 \gset
SELECT is((SELECT kind FROM conf_line WHERE pos = :res_pos), 'by_reseller', 'a record near 1,300 names its payout by reseller only');
SELECT throws_ok(format('SELECT * FROM settle.import_payout_confirmations(%s, pg_temp.conf_csv(2950, (SELECT line FROM conf_line WHERE pos = %s)))', :vol_batch, :res_pos),
	'22023', (SELECT format('payout reseller:%s is confirmed twice in one import', reseller_code) FROM conf_line JOIN conf USING (line_no) WHERE pos = :res_pos),
	'a repeat by reseller is refused too');
-- two problems: the one in the earlier record is reported
SELECT throws_ok(format($q$SELECT * FROM settle.import_payout_confirmations(%s,
	pg_temp.conf_csv(1200, (SELECT line FROM conf_line WHERE pos = 100), 2000, 'B1-R1-1,,BANK-1,ACSC,1.0x,EUR'))$q$, :vol_batch),
	'22023', (SELECT format('payout %s is confirmed twice in one import', e2e) FROM conf_line WHERE pos = 100),
	'a repeat at record 1,200 is reported before a malformed amount at record 2,000');
SELECT throws_ok(format($q$SELECT * FROM settle.import_payout_confirmations(%s,
	pg_temp.conf_csv(1200, (SELECT line FROM conf_line WHERE pos = 100), 1100, 'B1-R1-1,,BANK-1,ACSC,1.0x,EUR'))$q$, :vol_batch),
	'22P02', 'confirmation 1100 has a malformed amount "1.0x"',
	'a malformed amount at record 1,100 is reported before a repeat at record 1,200');
SELECT throws_ok(format('SELECT * FROM settle.import_payout_confirmations(%s, pg_temp.conf_csv(2975, %L))', :vol_batch, 'B1-R1-1,,BANK-1,maybe,1.00,EUR'),
	'22023', 'confirmation 2975 has an unknown status "maybe"', 'an unknown status in the last record is refused');
SELECT is(pg_temp.written(), '3000 pending, 0 payout_mismatch exceptions, 0 paid runs', 'the refused imports wrote nothing');

-- 2. The import.
CREATE TEMP TABLE read0 AS SELECT pg_temp.payout_rows_read() AS n;
CREATE TEMP TABLE imp AS SELECT * FROM settle.import_payout_confirmations(:vol_batch, pg_temp.conf_csv());
CREATE TEMP TABLE read1 AS SELECT pg_temp.payout_rows_read() AS n;
SELECT results_eq($$SELECT outcome, count(*) FROM imp GROUP BY outcome ORDER BY outcome$$,
	$$VALUES ('amount_mismatch', 90::bigint), ('confirmed', 2806::bigint), ('rejected', 74::bigint), ('unknown', 5::bigint)$$,
	'outcomes: 2,806 confirmed, 90 amount mismatches, 74 rejected, 5 unknown');
SELECT is((SELECT count(*) FROM conf_line l LEFT JOIN imp i ON i.end_to_end_id = coalesce(l.e2e, (SELECT end_to_end_id FROM conf c WHERE c.line_no = l.line_no))
            WHERE i.outcome IS DISTINCT FROM CASE l.kind WHEN 'amount' THEN 'amount_mismatch' WHEN 'currency' THEN 'amount_mismatch'
                                                          WHEN 'by_reseller' THEN 'confirmed' ELSE l.kind END),
	0::bigint, 'every record has the outcome of its kind');
SELECT results_eq(format('SELECT status, count(*) FROM settle.payout WHERE batch_id = %s GROUP BY status ORDER BY status', :vol_batch),
	$$VALUES ('confirmed', 2806::bigint), ('mismatch', 90::bigint), ('pending', 30::bigint), ('rejected', 74::bigint)$$,
	'payouts: 2,806 confirmed, 90 in mismatch, 74 rejected, the 30 left out pending');
SELECT is((SELECT count(*) FROM settle.payout p JOIN conf c USING (line_no)
            WHERE p.batch_id = :vol_batch AND p.status IN ('confirmed', 'rejected')
              AND (p.bank_reference IS DISTINCT FROM c.bank_reference OR p.confirmed_amount IS DISTINCT FROM p.amount
                   OR p.confirmed_at IS NULL OR p.confirmed_by IS DISTINCT FROM session_user)),
	0::bigint, 'each confirmed or rejected payout holds its bank reference (quoted ones too), amount and who confirmed it');
SELECT results_eq(format($q$SELECT r.status, count(*) FROM settle.run r JOIN settle.payout p USING (reseller_id, run_id)
                             WHERE p.batch_id = %s GROUP BY r.status ORDER BY r.status$q$, :vol_batch),
	$$VALUES ('locked', 194::bigint), ('paid', 2806::bigint)$$, 'the runs of the 2,806 confirmed payouts are paid, the others locked');
SELECT results_eq($$SELECT payload->>'problem', count(*) FROM settle.exception WHERE kind = 'payout_mismatch' GROUP BY 1 ORDER BY 1$$,
	$$VALUES ('confirmation for a payout that is not in the batch', 5::bigint), ('confirmed amount differs from the payout', 90::bigint),
	         ('the bank rejected the payout', 74::bigint)$$,
	'169 payout_mismatch exceptions: 90 amounts or currencies, 74 rejections, 5 unknown ids');
SELECT is((SELECT status FROM settle.payout_batch WHERE batch_id = :vol_batch), 'partially_confirmed', 'the batch is partially confirmed');
SELECT is((SELECT count(*) FROM settle.audit_log WHERE table_name = 'run' AND new_row->>'status' = 'paid' AND reason = 'payout import test'),
	2806::bigint, 'each move to paid is audited with the caller''s reason');
-- Work, not time: the import reads a bounded number of payout rows per
-- record (a lookup that scans the batch for each record reads ~3000 each).
SELECT cmp_ok((SELECT read1.n - read0.n FROM read0, read1), '<=', 10 * 2975::bigint,
	'the import reads at most 10 payout rows per record (about 5; a lookup scanning the batch per record read 232,769)');

-- 3. The same confirmations again, as JSON: nothing changes.
CREATE TEMP TABLE imp2 AS SELECT * FROM settle.import_payout_confirmations(:vol_batch,
	(SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object('end_to_end_id', nullif(r[1], ''), 'reseller', nullif(r[2], ''),
	                  'bank_reference', r[3], 'status', r[4], 'amount', r[5], 'currency', nullif(r[6], ''))) ORDER BY n)
	   FROM settle.csv_parse(pg_temp.conf_csv()) WITH ORDINALITY AS x(r, n) WHERE n > 1));
SELECT results_eq($$SELECT outcome, count(*) FROM imp2 GROUP BY outcome ORDER BY outcome$$,
	$$VALUES ('already_confirmed', 2806::bigint), ('already_rejected', 74::bigint), ('amount_mismatch', 90::bigint), ('unknown', 5::bigint)$$,
	'repeated as JSON: already confirmed or rejected; mismatches and unknown ids again');
SELECT is(pg_temp.written(), '30 pending, 169 payout_mismatch exceptions, 2806 paid runs', 'the repeat opened no exception and paid nothing twice');

SELECT * FROM finish();
ROLLBACK;
