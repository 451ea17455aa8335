-- 70: the exception workflow: pending review -> proposed
-- adjustment -> finance approved -> correction applied -> settled, or
-- dismissed with a reason.  Four eyes are enforced by the database: a
-- trigger refuses illegal transitions and self-approval for every writer.

CREATE FUNCTION settle.exception_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	legal boolean;
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION 'exceptions are never deleted' USING ERRCODE = 'insufficient_privilege',
			HINT = 'Dismiss it with a reason: settle.dismiss_exception().';
	END IF;
	IF NEW.exception_id <> OLD.exception_id OR NEW.reseller_id <> OLD.reseller_id OR NEW.kind <> OLD.kind
	   OR NEW.scope_key <> OLD.scope_key OR NEW.opened_at <> OLD.opened_at OR NEW.opened_by <> OLD.opened_by THEN
		RAISE EXCEPTION 'exception % cannot be re-identified', OLD.exception_id USING ERRCODE = 'insufficient_privilege';
	END IF;
	legal := CASE OLD.state
		WHEN 'pending_review' THEN NEW.state IN ('pending_review', 'proposed_adjustment', 'correction_applied', 'dismissed')
		WHEN 'proposed_adjustment' THEN NEW.state IN ('proposed_adjustment', 'finance_approved', 'dismissed')
		WHEN 'finance_approved' THEN NEW.state IN ('finance_approved', 'correction_applied')
		WHEN 'correction_applied' THEN NEW.state IN ('correction_applied', 'settled')
		ELSE NEW.state = OLD.state AND NEW IS NOT DISTINCT FROM OLD
	END;
	IF NOT legal THEN
		RAISE EXCEPTION 'exception % cannot go from % to %', OLD.exception_id, OLD.state, NEW.state
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF NEW.state = 'proposed_adjustment' AND OLD.state <> 'proposed_adjustment'
	   OR NEW.state = 'proposed_adjustment' AND NEW.adjustment_amount IS DISTINCT FROM OLD.adjustment_amount THEN
		IF NEW.proposed_by IS DISTINCT FROM session_user OR NEW.adjustment_amount IS NULL THEN
			RAISE EXCEPTION 'an adjustment is proposed by the session user, with an amount'
				USING ERRCODE = 'insufficient_privilege';
		END IF;
		NEW.approved_by := NULL;
		NEW.approved_at := NULL;
	END IF;
	IF NEW.state = 'finance_approved' AND OLD.state = 'proposed_adjustment' THEN
		IF NEW.approved_by IS DISTINCT FROM session_user THEN
			RAISE EXCEPTION 'an adjustment is approved by the session user' USING ERRCODE = 'insufficient_privilege';
		END IF;
		IF NEW.approved_by = OLD.proposed_by THEN
			RAISE EXCEPTION 'four eyes: % proposed this adjustment and cannot approve it', OLD.proposed_by
				USING ERRCODE = 'insufficient_privilege',
				      HINT = 'Another member of settle_finance must approve it.';
		END IF;
		IF NEW.adjustment_amount IS DISTINCT FROM OLD.adjustment_amount
		   OR NEW.target_period IS DISTINCT FROM OLD.target_period OR NEW.proposed_by IS DISTINCT FROM OLD.proposed_by THEN
			RAISE EXCEPTION 'approving an adjustment cannot change it' USING ERRCODE = 'insufficient_privilege';
		END IF;
	END IF;
	IF OLD.state IN ('finance_approved', 'correction_applied')
	   AND (NEW.adjustment_amount IS DISTINCT FROM OLD.adjustment_amount OR NEW.target_period IS DISTINCT FROM OLD.target_period
	        OR NEW.proposed_by IS DISTINCT FROM OLD.proposed_by OR NEW.approved_by IS DISTINCT FROM OLD.approved_by) THEN
		RAISE EXCEPTION 'an approved adjustment cannot be changed' USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF NEW.state IN ('dismissed', 'correction_applied') AND NEW.state <> OLD.state
	   AND coalesce(btrim(NEW.resolution), '') = '' THEN
		RAISE EXCEPTION 'a resolution is required to % an exception',
			CASE NEW.state WHEN 'dismissed' THEN 'dismiss' ELSE 'resolve' END
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	NEW.updated_at := now();
	RETURN NEW;
END $$;
COMMENT ON FUNCTION settle.exception_guard() IS
	'Enforces the exception workflow for every writer: legal transitions only, proposals and approvals by the session user, no self-approval (four eyes), approved adjustments immutable, a resolution for dismissals, no deletes.';
CREATE TRIGGER exception_guard BEFORE UPDATE OR DELETE ON settle.exception
	FOR EACH ROW EXECUTE FUNCTION settle.exception_guard();
ALTER TABLE settle.exception ENABLE ALWAYS TRIGGER exception_guard;

CREATE FUNCTION settle.exception_of(exception_id bigint) RETURNS settle.exception
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	e settle.exception;
BEGIN
	-- not STRICT: a NULL id is an unknown exception, never an empty row
	SELECT * INTO e FROM settle.exception x WHERE x.exception_id = exception_of.exception_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown exception %', exception_id USING ERRCODE = 'no_data_found';
	END IF;
	RETURN e;
END $$;
COMMENT ON FUNCTION settle.exception_of(bigint) IS 'The exception with this id; an error (P0002) when there is none.';

CREATE FUNCTION settle.require_reason(reason text) RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF coalesce(btrim(reason), '') = '' THEN
		RAISE EXCEPTION 'a reason is required' USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	PERFORM set_config('settle.reason', reason, true);
END $$;
COMMENT ON FUNCTION settle.require_reason(text) IS 'Refuses an empty reason (55000) and records it for the audit trail of this transaction.';

CREATE FUNCTION settle.propose_adjustment(exception_id bigint, amount settle.amount, target_period settle.period, reason text)
	RETURNS settle.exception
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	SET settle.reason TO '' AS $$
DECLARE
	e settle.exception := settle.exception_of(exception_id);
BEGIN
	PERFORM settle.require_reason(reason);
	IF amount IS NULL OR target_period IS NULL THEN
		RAISE EXCEPTION 'an adjustment needs an amount and a target period (YYYY-MM)' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF e.reseller_id = 0 THEN
		RAISE EXCEPTION 'exception % belongs to no reseller: map the account first', exception_id
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF EXISTS (SELECT 1 FROM settle.run r WHERE r.reseller_id = e.reseller_id AND r.period = target_period
	            AND r.status IN ('locked', 'paid')) THEN
		RAISE EXCEPTION 'period % of reseller % is locked', target_period, e.reseller_id
			USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Target the next open period.';
	END IF;
	UPDATE settle.exception x SET state = 'proposed_adjustment', adjustment_amount = amount,
	       target_period = propose_adjustment.target_period, proposed_by = session_user, proposed_at = now(),
	       resolution = reason
	 WHERE x.reseller_id = e.reseller_id AND x.exception_id = e.exception_id RETURNING * INTO e;
	RETURN e;
END $$;
COMMENT ON FUNCTION settle.propose_adjustment(bigint, settle.amount, settle.period, text) IS
	'Proposes an adjustment (amount in the reseller''s settlement currency, positive = owed to the reseller) into a target period''s statement.  Another person must approve it.';

CREATE FUNCTION settle.settlement_currency(reseller_id bigint, period settle.period) RETURNS char(3)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT a.settlement_currency FROM settle.agreement a
	 WHERE a.reseller_id = $1 AND a.effective_from <= to_date($2, 'YYYY-MM')
	   AND to_date($2, 'YYYY-MM') < a.effective_to
	 ORDER BY a.effective_from DESC LIMIT 1
$$;
COMMENT ON FUNCTION settle.settlement_currency(bigint, settle.period) IS
	'The settlement currency of the reseller''s agreement in force at the start of the period (NULL without one): the currency of its statement and of adjustments into it.';

CREATE FUNCTION settle.approve_adjustment(exception_id bigint, amount settle.amount, currency text, reason text)
	RETURNS settle.exception
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	SET settle.reason TO '' AS $$
DECLARE
	e settle.exception := settle.exception_of(exception_id);
	proposed_currency char(3);
BEGIN
	PERFORM settle.require_reason(reason);
	IF amount IS NULL OR currency IS NULL THEN
		RAISE EXCEPTION 'an approval names the amount and currency reviewed' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'Pass the adjustment_amount and adjustment_currency shown in settle.exception_queue.';
	END IF;
	-- Lock the proposal, then compare it with what the approver reviewed: a
	-- re-proposal committed in between is never approved unseen.
	SELECT * INTO e FROM settle.exception x
	 WHERE x.reseller_id = e.reseller_id AND x.exception_id = e.exception_id FOR UPDATE;
	IF e.state <> 'proposed_adjustment' THEN
		RAISE EXCEPTION 'exception % is %, not proposed_adjustment', exception_id, e.state
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	proposed_currency := settle.settlement_currency(e.reseller_id, e.target_period);
	IF e.adjustment_amount <> amount OR proposed_currency IS DISTINCT FROM upper(btrim(currency)) THEN
		RAISE EXCEPTION 'exception % proposes %, not the % % reviewed', exception_id,
			concat_ws(' ', e.adjustment_amount, proposed_currency), amount, currency
			USING ERRCODE = 'object_not_in_prerequisite_state',
			      DETAIL = pg_catalog.format('The proposal by %s into %s was changed or differs from what the approval names.',
			                                 e.proposed_by, e.target_period),
			      HINT = 'Review the proposal in settle.exception_queue again and approve the amount and currency it shows.';
	END IF;
	UPDATE settle.exception x SET state = 'finance_approved', approved_by = session_user, approved_at = now(),
	       resolution = reason
	 WHERE x.reseller_id = e.reseller_id AND x.exception_id = e.exception_id RETURNING * INTO e;
	RETURN e;
END $$;
COMMENT ON FUNCTION settle.approve_adjustment(bigint, settle.amount, text, text) IS
	'Finance approves a proposed adjustment, naming the amount and currency it reviewed: refused (55000) when the proposal differs (changed since it was reviewed), and (42501) for the person who proposed it.  It appears as an adjustment line in the next settlement of its target period.';

CREATE FUNCTION settle.dismiss_exception(exception_id bigint, reason text) RETURNS settle.exception
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	SET settle.reason TO '' AS $$
DECLARE
	e settle.exception := settle.exception_of(exception_id);
BEGIN
	PERFORM settle.require_reason(reason);
	UPDATE settle.exception x SET state = 'dismissed', resolution = reason, resolved_by = session_user, resolved_at = now()
	 WHERE x.reseller_id = e.reseller_id AND x.exception_id = e.exception_id RETURNING * INTO e;
	RETURN e;
END $$;
COMMENT ON FUNCTION settle.dismiss_exception(bigint, text) IS 'Dismisses an exception that needs no correction, with the reason.';

CREATE FUNCTION settle.resolve_exception(exception_id bigint, reason text) RETURNS settle.exception
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	SET settle.reason TO '' AS $$
DECLARE
	e settle.exception := settle.exception_of(exception_id);
BEGIN
	PERFORM settle.require_reason(reason);
	IF e.state <> 'pending_review' THEN
		RAISE EXCEPTION 'exception % is %, not pending_review', exception_id, e.state
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	UPDATE settle.exception x SET state = 'correction_applied', resolution = reason, resolved_by = session_user,
	       resolved_at = now()
	 WHERE x.reseller_id = e.reseller_id AND x.exception_id = e.exception_id RETURNING * INTO e;
	RETURN e;
END $$;
COMMENT ON FUNCTION settle.resolve_exception(bigint, text) IS
	'Marks an exception resolved by a data correction (a mapping, a rule version, an FX rate was added); settle the period again to apply it.';

CREATE VIEW settle.exception_queue AS
	SELECT e.exception_id, e.reseller_id, r.code AS reseller, e.kind, e.severity, e.state, e.period, e.scope_key,
	       e.payload->>'detail' AS detail, e.adjustment_amount,
	       CASE WHEN e.target_period IS NOT NULL THEN settle.settlement_currency(e.reseller_id, e.target_period)
	       END::text AS adjustment_currency, e.target_period, e.proposed_by, e.approved_by,
	       e.applied_run, e.resolution, e.opened_at, e.updated_at,
	       e.state NOT IN ('settled', 'dismissed', 'correction_applied') AND e.severity IN ('error', 'critical') AS blocking
	  FROM settle.exception e LEFT JOIN settle.reseller r USING (reseller_id);
COMMENT ON VIEW settle.exception_queue IS
	'The exception queue for people: every exception with its reseller, state, detail, proposed adjustment, who proposed and approved it, and whether it blocks approval of its period.';
