-- The exception workflow end to end, with four eyes enforced by the
-- database: proposals, approvals, adjustments applied in the next settlement
-- with lineage to the exception, settled at lock; illegal transitions and
-- every bypass (same user, SET ROLE, direct writes, the owner) refused; every
-- transition in the audit trail.
BEGIN;
SELECT plan(39);

CREATE ROLE wf_alice IN ROLE settle_finance;
CREATE ROLE wf_bob IN ROLE settle_finance;
CREATE ROLE wf_dave IN ROLE settle_analyst;
GRANT wf_bob TO wf_alice;		-- alice may SET ROLE bob: that must not help her

-- Runs q with session_user = u (as a login of that user would).
CREATE FUNCTION pg_temp.as_user(u name, q text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE format('SET SESSION AUTHORIZATION %I', u);
	EXECUTE q;
	RESET SESSION AUTHORIZATION;
EXCEPTION WHEN OTHERS THEN
	RESET SESSION AUTHORIZATION;
	RAISE;
END $$;

SET LOCAL settle.reason = 'workflow test';
SELECT settle.add_reseller('wf', 'Workflow Reseller');
SELECT settle.add_customer('wf', 'c1', 'Customer 1');
SELECT settle.set_agreement('wf', '2026-01-01', 'USD');
SELECT settle.publish_rule('wf', (SELECT agreement_id FROM settle.agreement WHERE reseller_id = settle.reseller_id('wf')),
	'2026-01-01', 'currency USD
otherwise pay 10%', 'test schedule');
INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash, source_item, billing_account_id,
	billing_period_start, charge_period_start, charge_period_end, charge_category, product_code, billing_currency,
	list_cost, billed_cost)
SELECT settle.reseller_id('wf'), 'c1/ecs/oct', 1, c.customer_id, sha256('wf'), 'PayAsYouGoBill', 'acct-c1',
       '2026-10-01', '2026-10-01', '2026-11-01', 'Usage', 'ecs', 'USD', 250, 250
  FROM settle.customer c WHERE c.code = 'c1';
SELECT settle.settle_period('2026-10', 'wf');
SELECT is((SELECT total FROM settle.statement WHERE reseller_id = settle.reseller_id('wf')),
	25.00, 'October: 10% of 250 = 25.00');

-- A person opens a manual exception: the customer was promised a 12.50 goodwill credit.
SELECT settle.open_exception(settle.reseller_id('wf'), 'manual', 'goodwill:c1:2026-10', '2026-10',
	'{"customer": "c1"}', '{"detail": "goodwill credit promised by the account manager"}') AS exc \gset
SELECT is(settle.blocking_exceptions(settle.reseller_id('wf'), '2026-10'), 1::bigint, 'the open exception blocks the period');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_run(%s, ''ok'')')$$,
	(SELECT run_id FROM settle.run WHERE status = 'draft' AND reseller_id = settle.reseller_id('wf'))),
	'55000', NULL, 'a blocked run cannot be approved');

-- alice proposes the adjustment
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.propose_adjustment(%s, 12.50, ''2026-10'', ''goodwill credit, ticket 4711'')')$$, :exc),
	'alice proposes a 12.50 adjustment into October');
SELECT is((SELECT concat_ws(' ', state, adjustment_amount, proposed_by) FROM settle.exception WHERE exception_id = :exc),
	'proposed_adjustment 12.50 wf_alice', 'the proposal is recorded with who');

-- every way for alice to approve it herself is refused
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.approve_adjustment(%s, 12.50, ''USD'', ''fine'')')$$, :exc),
	'42501', 'four eyes: wf_alice proposed this adjustment and cannot approve it', 'alice cannot approve her own proposal');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SET ROLE wf_bob; SELECT settle.approve_adjustment(%s, 12.50, ''USD'', ''fine'')')$$, :exc),
	'42501', NULL, 'nor by SET ROLE to bob');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'UPDATE settle.exception SET state = ''finance_approved'', approved_by = ''wf_bob'' WHERE exception_id = %s')$$, :exc),
	'42501', NULL, 'nor by writing the table directly');
SELECT throws_ok(format($$UPDATE settle.exception SET state = 'finance_approved', approved_by = 'wf_alice', approved_at = now() WHERE exception_id = %s$$, :exc),
	'42501', NULL, 'the table owner cannot record a self-approval either');
SELECT throws_ok(format($$UPDATE settle.exception SET state = 'finance_approved', approved_by = session_user, adjustment_amount = 99 WHERE exception_id = %s$$, :exc),
	'42501', NULL, 'nor approve a proposal with a changed amount');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_dave', 'SELECT settle.approve_adjustment(%s, 12.50, ''USD'', ''fine'')')$$, :exc),
	'42501', NULL, 'an analyst cannot approve');
SELECT throws_ok(format($$DELETE FROM settle.exception WHERE exception_id = %s$$, :exc),
	'42501', 'exceptions are never deleted', 'exceptions are never deleted');

-- bob approves what he reviewed, not an id: a proposal changed after his
-- review, another amount or another currency is refused and nothing changes
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.propose_adjustment(%s, 1000000, ''2026-10'', ''typo, ticket 4711'')')$$, :exc),
	'alice re-proposes 1,000,000 after bob reviewed 12.50');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_adjustment(%s, 12.50, ''USD'', ''checked: 12.50 USD goodwill'')')$$, :exc),
	'55000', NULL, 'bob''s approval of the 12.50 he reviewed does not approve 1,000,000');
SELECT is((SELECT concat_ws(' ', state, adjustment_amount, approved_by) FROM settle.exception WHERE exception_id = :exc),
	'proposed_adjustment 1000000', 'nothing changed: still proposed, unapproved');
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.propose_adjustment(%s, 12.50, ''2026-10'', ''goodwill credit, ticket 4711'')')$$, :exc),
	'alice proposes 12.50 again');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_adjustment(%s, 12.50, ''EUR'', ''checked'')')$$, :exc),
	'55000', NULL, 'the currency reviewed must be the statement''s (USD)');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_adjustment(%s, 12.5000001, ''USD'', ''checked'')')$$, :exc),
	'55000', NULL, 'an amount that differs in the seventh decimal is refused');
SELECT is((SELECT adjustment_currency FROM settle.exception_queue WHERE exception_id = :exc), 'USD',
	'the queue shows the currency the approver reviews');
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_adjustment(%s, 12.5, ''usd'', ''checked ticket 4711'')')$$, :exc),
	'bob approves the 12.50 USD he reviewed (12.5 = 12.50)');
SELECT is((SELECT concat_ws(' ', state, approved_by) FROM settle.exception WHERE exception_id = :exc),
	'finance_approved wf_bob', 'approved by bob');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.dismiss_exception(%s, ''changed my mind'')')$$, :exc),
	'55000', NULL, 'an approved adjustment cannot be dismissed');
SELECT throws_ok(format($$UPDATE settle.exception SET adjustment_amount = 99 WHERE exception_id = %s$$, :exc),
	'42501', 'an approved adjustment cannot be changed', 'nor changed, even by the owner');

-- the next settlement applies it, with lineage to the exception
SELECT is((SELECT count(*) FROM settle.settle_period('2026-10', 'wf') WHERE NOT blocked), 1::bigint,
	'October settles again, no longer blocked');
SELECT results_eq($$SELECT l.kind::text, l.rounded, l.ref FROM settle.settlement_line l JOIN settle.run r USING (reseller_id, run_id)
                    WHERE r.reseller_id = settle.reseller_id('wf') AND r.status = 'draft' AND l.kind = 'a'$$,
	format($$VALUES ('a'::text, 12.50::numeric, 'exception:%s'::text)$$, :exc),
	'an adjustment line of 12.50 refers to the exception');
SELECT results_eq($$SELECT s.commission, s.adjustments, s.total FROM settle.statement s JOIN settle.run r USING (reseller_id, run_id)
                    WHERE r.reseller_id = settle.reseller_id('wf') AND r.status = 'draft'$$,
	$$VALUES (25.00::numeric, 12.50::numeric, 37.50::numeric)$$, 'the statement carries it: 25.00 + 12.50 = 37.50');
SELECT results_eq(format('SELECT state, applied_run = (SELECT run_id FROM settle.run WHERE status = ''draft'' AND reseller_id = settle.reseller_id(''wf'')) FROM settle.exception WHERE exception_id = %s', :exc),
	$$VALUES ('correction_applied'::text, true)$$, 'the exception is marked applied, with its run');
SELECT ok((SELECT verified FROM settle.verify_run((SELECT run_id FROM settle.run WHERE status = 'draft' AND reseller_id = settle.reseller_id('wf')))),
	'the run with the adjustment verifies');

-- four eyes on the run: the proposer of its adjustment cannot approve it
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.approve_run(%s, ''ok'')')$$,
	(SELECT run_id FROM settle.run WHERE status = 'draft' AND reseller_id = settle.reseller_id('wf'))),
	'42501', NULL, 'alice cannot approve the run that carries her adjustment');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SET ROLE wf_bob; SELECT settle.approve_run(%s, ''ok'')')$$,
	(SELECT run_id FROM settle.run WHERE status = 'draft' AND reseller_id = settle.reseller_id('wf'))),
	'42501', NULL, 'not even as bob');
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_run(%s, ''reviewed'')')$$,
	(SELECT run_id FROM settle.run WHERE status = 'draft' AND reseller_id = settle.reseller_id('wf'))),
	'bob approves the run');
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.lock_run(%s, ''October closed'')')$$,
	(SELECT run_id FROM settle.run WHERE status = 'approved' AND reseller_id = settle.reseller_id('wf'))),
	'and locks it');
SELECT is((SELECT state FROM settle.exception WHERE exception_id = :exc), 'settled', 'the exception is settled when the period locks');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.propose_adjustment(%s, 1, ''2026-10'', ''again'')')$$, :exc),
	'55000', NULL, 'a settled exception is final');

-- dismissal needs a reason; illegal transitions are refused
SELECT settle.open_exception(settle.reseller_id('wf'), 'sanity_check', 'swing:2026-11', '2026-11') AS exc2 \gset
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.dismiss_exception(%s, '''')')$$, :exc2),
	'55000', 'a reason is required', 'dismissing needs a reason');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.approve_adjustment(%s, 5, ''USD'', ''x'')')$$, :exc2),
	'55000', NULL, 'nothing to approve before a proposal');
SELECT throws_ok(format($$SELECT pg_temp.as_user('wf_alice', 'SELECT settle.propose_adjustment(%s, 5, ''2026-10'', ''into a locked period'')')$$, :exc2),
	'55000', NULL, 'an adjustment cannot target a locked period');
SELECT lives_ok(format($$SELECT pg_temp.as_user('wf_bob', 'SELECT settle.dismiss_exception(%s, ''seasonal swing, expected'')')$$, :exc2),
	'bob dismisses the swing alarm with a reason');

-- the audit trail has every transition: who, what, why
SELECT is((SELECT string_agg(concat_ws(' / ', new_row->>'state', session_user_name, reason), E'\n' ORDER BY audit_id)
             FROM settle.audit_log WHERE table_name = 'exception' AND row_key->>'exception_id' = :'exc'),
	concat_ws(E'\n', 'pending_review / postgres / workflow test',
	          'proposed_adjustment / wf_alice / goodwill credit, ticket 4711',
	          'proposed_adjustment / wf_alice / typo, ticket 4711',
	          'proposed_adjustment / wf_alice / goodwill credit, ticket 4711',
	          'finance_approved / wf_bob / checked ticket 4711',
	          'correction_applied / postgres / applied in run ' || (SELECT max(run_id) FROM settle.run WHERE reseller_id = settle.reseller_id('wf')),
	          'settled / wf_bob / October closed'),
	'every transition is audited with who and why');

SELECT * FROM finish();
ROLLBACK;
