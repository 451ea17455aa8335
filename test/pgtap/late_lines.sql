-- Lines that arrive for a locked period.  September is settled, approved and
-- locked; then lines of September arrive:
--   sep/ecs/cor   a FOCUS correction row (ChargeClass Correction, Usage) of the ecs
--                 charge sep/ecs (same account, resource, SKU, product,
--                 category and charge period start), billed -30.00: a
--                 correction in October at the 8% sep/ecs earned, -2.40
--   sep/late      an ordinary line nobody settled: not guessed, a late_line
--                 exception (error: it blocks October until a person deals
--                 with it)
--   sep/cor-orph  a correction row that corrects no settled charge: the same
--   sep/ecs/old   the original itself is not "new" (settled in September)
-- October's own line oct/ecs earns 8% of 50.00 = 4.00.  Revisions of the
-- correction row later are late revisions like any other, at the same
-- terms.  Rule: ecs 8%, otherwise 5%.
BEGIN;
SELECT plan(16);
SET LOCAL settle.reason = 'late lines test';
SELECT settle.add_reseller('lt', 'Late lines'), settle.add_customer('lt', 'c1', 'Customer 1');
SELECT settle.set_agreement('lt', '2026-01-01', 'USD');
SELECT settle.publish_rule('lt', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('lt')),
	'2026-01-01', E'currency USD\nwhen product ecs pay 8%\notherwise pay 5%', 'late lines');

CREATE FUNCTION pg_temp.line(key text, day date, product text, billed numeric, class text DEFAULT NULL,
	resource text DEFAULT 'i-1', revision integer DEFAULT 1) RETURNS void LANGUAGE sql AS $$
	INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item,
		billing_account_id, billing_period_start, charge_period_start, charge_period_end, charge_category,
		charge_class, product_code, sku_id, resource_id, billing_currency, list_cost, billed_cost)
	SELECT settle.reseller_id('lt'), key, revision, c.customer_id,
	       sha256(convert_to(concat_ws('/', key, revision, billed), 'UTF8')), 'focus', 'acct-1',
	       date_trunc('month', day)::date, day, day + 1,
	       CASE WHEN billed < 0 AND class IS NULL THEN 'Credit' ELSE 'Usage' END,
	       class, product, product || '.sku', resource, 'USD', billed, billed
	  FROM settle.customer c WHERE c.code = 'c1'
$$;
CREATE FUNCTION pg_temp.run(p text) RETURNS bigint LANGUAGE sql AS $$
	SELECT run_id FROM settle.run WHERE reseller_id = settle.reseller_id('lt') AND period = p AND status <> 'superseded'
$$;
CREATE FUNCTION pg_temp.statement(p text) RETURNS settle.statement LANGUAGE sql AS $$
	SELECT * FROM settle.statement WHERE run_id = pg_temp.run(p)
$$;
CREATE FUNCTION pg_temp.lines(p text) RETURNS TABLE (line_key text, kind text, revision integer, basis numeric,
	rate numeric, unrounded numeric, ref text) LANGUAGE sql AS $$
	SELECT line_key COLLATE "default", kind::text, revision, basis, rate, unrounded, ref
	  FROM settle.settlement_line WHERE run_id = pg_temp.run(p) ORDER BY line_key COLLATE "C", kind
$$;

SELECT pg_temp.line('sep/ecs', '2026-09-10', 'ecs', 100.00);
SELECT pg_temp.line('sep/oss', '2026-09-12', 'oss', 200.00, resource => 'b-1');
SELECT count(*) FROM settle.settle_period('2026-09', 'lt');
SELECT count(*) FROM settle.approve_run(pg_temp.run('2026-09'), 'checked'), settle.lock_run(pg_temp.run('2026-09'), 'closed');
-- stored after the run was made (ingested_at is the clock time; a run's
-- created_at its transaction's start)
SELECT pg_temp.line('sep/ecs/cor', '2026-09-10', 'ecs', -30.00, 'Correction');
SELECT pg_temp.line('sep/late', '2026-09-20', 'oss', 40.00, resource => 'b-2');
SELECT pg_temp.line('sep/cor-orph', '2026-09-15', 'ecs', -7.00, 'Correction', resource => 'i-9');
SELECT pg_temp.line('oct/ecs', '2026-10-05', 'ecs', 50.00);

SELECT results_eq($$SELECT line_key, new_revision, rate, settled, ref FROM settle.late_revisions(settle.reseller_id('lt'), '2026-10')
                    ORDER BY line_key COLLATE "C"$$,
	$$VALUES ('sep/cor-orph', 1, NULL::numeric, NULL::numeric, 'run:' || pg_temp.run('2026-09') || '/sep/cor-orph'),
	         ('sep/ecs/cor', 1, 0.08, 0, 'run:' || pg_temp.run('2026-09') || '/sep/ecs'),
	         ('sep/late', 1, NULL, NULL, 'run:' || pg_temp.run('2026-09') || '/sep/late')$$,
	'late_revisions: the correction row at its original''s 8% (nothing settled yet), the other two without terms');

SELECT count(*) FROM settle.settle_period('2026-10', 'lt');
SELECT results_eq($$SELECT s.commission, s.corrections, s.total, r.blocked FROM pg_temp.statement('2026-10') s
                    JOIN settle.run r USING (reseller_id, run_id)$$,
	$$VALUES (4.00, -2.40, 1.60, true)$$,
	'October: 4.00 on its own line, -2.40 correcting September''s ecs charge, blocked by the two lines nobody settled');
SELECT results_eq($$SELECT * FROM pg_temp.lines('2026-10')$$,
	$$VALUES ('oct/ecs', 'c', 1, 50.00, 0.08, 4.0000, NULL::text),
	         ('sep/ecs/cor', 'x', 1, -30.00, 0.08, -2.4000, 'run:' || pg_temp.run('2026-09') || '/sep/ecs')$$,
	'the correction line: basis -30.00 at 8%, referring to the charge it corrects');
SELECT results_eq($$SELECT scope_key, severity, state, period FROM settle.exception
                    WHERE reseller_id = settle.reseller_id('lt') AND kind = 'late_line' ORDER BY scope_key$$,
	$$VALUES ('late:sep/cor-orph/r1', 'error', 'pending_review', '2026-10'), ('late:sep/late/r1', 'error', 'pending_review', '2026-10')$$,
	'one late_line exception per line nobody settled, on October');
SELECT is((SELECT payload->>'detail' FROM settle.exception WHERE scope_key = 'late:sep/late/r1'),
	format('Bill line sep/late arrived after its period was locked (run %s) and corrects no settled charge: settle it with an adjustment (propose_adjustment on this exception), or dismiss this exception.',
	       pg_temp.run('2026-09')),
	'the exception says what happened and what to do');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('2026-10'))), true, 'October verifies');
SELECT results_eq($$SELECT status, total FROM settle.run JOIN settle.statement USING (reseller_id, run_id)
                    WHERE run_id = pg_temp.run('2026-09')$$,
	$$VALUES ('locked', 18.00)$$, 'September stays as locked: 100 x 8% + 200 x 5%');

-- settling October again with nothing new changes nothing
SELECT is((SELECT run_id FROM settle.settle_period('2026-10', 'lt')), pg_temp.run('2026-10'), 'unchanged: the same run');

-- finance deals with the two: an adjustment for sep/late (5% of 40.00), the orphan dismissed
SELECT settle.dismiss_exception((SELECT exception_id FROM settle.exception WHERE scope_key = 'late:sep/cor-orph/r1'),
	'the provider withdrew it');
SELECT is((SELECT count(*) FROM settle.exception WHERE kind = 'late_line' AND scope_key = 'late:sep/cor-orph/r1'
            AND state = 'dismissed'), 1::bigint, 'the orphan correction is dismissed');

-- a second revision of the correction row before October is locked: the
-- draft is superseded, the correction is now -40.00 x 8%
SELECT pg_temp.line('sep/ecs/cor', '2026-09-10', 'ecs', -40.00, 'Correction', revision => 2);
SELECT count(*) FROM settle.settle_period('2026-10', 'lt');
SELECT results_eq($$SELECT corrections FROM pg_temp.statement('2026-10')$$,
	$$VALUES (-3.20)$$, 'revision 2 of the correction row, in the open October: -3.20');
SELECT results_eq($$SELECT * FROM pg_temp.lines('2026-10') WHERE kind = 'x'$$,
	$$VALUES ('sep/ecs/cor', 'x', 2, -40.00, 0.08, -3.2000, 'run:' || pg_temp.run('2026-09') || '/sep/ecs')$$,
	'its line carries revision 2');

-- sep/late is settled by hand: 5% of 40.00 proposed as an adjustment into
-- October by one finance user, approved by another; the next settlement
-- applies it and no longer raises the line.  Then October is locked, and
-- revision 3 of the correction row lands in November as a late revision of
-- the correction, at the terms October settled it at.
CREATE ROLE lt_alice IN ROLE settle_finance;
CREATE ROLE lt_bob IN ROLE settle_finance;
SELECT exception_id AS late_exc FROM settle.exception WHERE scope_key = 'late:sep/late/r1' \gset
SET SESSION AUTHORIZATION lt_alice;
SELECT state FROM settle.propose_adjustment(:late_exc, 2.00, '2026-10', 'sep/late at 5%');
SET SESSION AUTHORIZATION lt_bob;
SELECT state FROM settle.approve_adjustment(:late_exc, 2.00, 'USD', 'checked');
RESET SESSION AUTHORIZATION;
SELECT count(*) FROM settle.settle_period('2026-10', 'lt');
SELECT results_eq($$SELECT s.adjustments, s.corrections, s.total, r.blocked FROM pg_temp.statement('2026-10') s
                    JOIN settle.run r USING (reseller_id, run_id)$$,
	$$VALUES (2.00, -3.20, 2.80, false)$$, 'the adjustment is applied in October, which is no longer blocked');
SELECT count(*) FROM settle.settle_period('2026-10', 'lt');
SELECT count(*) FROM settle.approve_run(pg_temp.run('2026-10'), 'checked'), settle.lock_run(pg_temp.run('2026-10'), 'closed');
SELECT pg_temp.line('sep/ecs/cor', '2026-09-10', 'ecs', -50.00, 'Correction', revision => 3);
SELECT results_eq($$SELECT lines_out, blocked FROM settle.settle_period('2026-11', 'lt')$$,
	$$VALUES (1::bigint, false)$$, 'November: one line, not blocked (the late lines were dealt with)');
SELECT results_eq($$SELECT * FROM pg_temp.lines('2026-11')$$,
	$$VALUES ('sep/ecs/cor', 'x', 3, -50.00, 0.08, -0.8000, 'run:' || pg_temp.run('2026-10') || '/sep/ecs/cor')$$,
	'revision 3: -50.00 x 8% less the -3.20 settled in October = -0.80, at the terms October settled it at');
SELECT is((SELECT verified FROM settle.verify_run(pg_temp.run('2026-11'))), true, 'November verifies');
SELECT results_eq($$SELECT line_key, new_revision FROM settle.late_revisions(settle.reseller_id('lt'), '2026-11')$$,
	$$VALUES ('sep/ecs/cor', 3)$$, 'for November only the correction row is late: sep/late and the orphan are not raised again');

SELECT * FROM finish();
ROLLBACK;
