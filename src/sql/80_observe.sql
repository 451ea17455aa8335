-- 80: observability and retention: period status, data
-- quality, sanity checks with alerts, what changed since the last run, the
-- finance summary, and the purge of old raw pages and run logs.

CREATE VIEW settle.period_status AS
	SELECT r.reseller_id, rs.code AS reseller, r.period, r.run_id, r.status AS run_status,
	       CASE WHEN r.status = 'paid' THEN 'paid'
	            WHEN r.status = 'locked' THEN 'locked'
	            WHEN x.blocking > 0 THEN 'blocked'
	            WHEN r.status = 'approved' OR x.open > 0 THEN 'in_review'
	            ELSE 'ready' END AS state,
	       r.lines_in, r.lines_out, s.currency, s.total, s.carry_forward_out, s.net_payout,
	       x.open AS open_exceptions, x.blocking AS blocking_exceptions,
	       r.created_at, r.approved_by, r.approved_at, r.locked_by, r.locked_at, r.paid_at
	  FROM settle.run r
	  JOIN settle.reseller rs USING (reseller_id)
	  JOIN settle.statement s USING (reseller_id, run_id)
	  CROSS JOIN LATERAL (
		SELECT count(*) FILTER (WHERE e.state IN ('pending_review', 'proposed_adjustment', 'finance_approved')) AS open,
		       count(*) FILTER (WHERE e.state IN ('pending_review', 'proposed_adjustment', 'finance_approved')
		                          AND e.severity IN ('error', 'critical')) AS blocking
		  FROM settle.exception e
		 WHERE e.reseller_id = r.reseller_id AND (e.period = r.period OR e.period IS NULL)) x
	 WHERE r.status <> 'superseded';
COMMENT ON VIEW settle.period_status IS
	'Each reseller''s period: ready (draft, nothing open), in_review (approved, or open non-blocking exceptions), blocked (open exceptions of severity error/critical), locked or paid, with line and exception counts and the statement total.  Stable: BI tools read it.';

CREATE VIEW settle.data_quality AS
	SELECT to_char(b.billing_period_start, 'YYYY-MM') AS period, b.connector_id, b.reseller_id,
	       count(*) AS lines,
	       count(*) FILTER (WHERE b.validation_errors = '{}') AS validated,
	       count(*) FILTER (WHERE b.validation_errors <> '{}') AS failed,
	       round(count(*) FILTER (WHERE b.validation_errors <> '{}') / count(*)::numeric, 4) AS failed_rate,
	       round(count(*) FILTER (WHERE b.sku_id IS NULL) / count(*)::numeric, 4) AS missing_sku_rate,
	       round(count(*) FILTER (WHERE b.region_id IS NULL) / count(*)::numeric, 4) AS missing_region_rate,
	       round(count(*) FILTER (WHERE b.resource_id IS NULL) / count(*)::numeric, 4) AS missing_resource_rate,
	       count(*) FILTER (WHERE b.reseller_id = 0) AS unmapped,
	       count(*) FILTER (WHERE b.revision > 1) AS revised
	  FROM settle.bill_line_current b
	 GROUP BY 1, 2, 3;
COMMENT ON VIEW settle.data_quality IS
	'Per billing period, connector and reseller (0 = unmapped): current bill lines, how many validated and failed, and the rates of missing sku, region and resource ids.';

CREATE VIEW settle.sanity_checks AS
	WITH cur AS (
		SELECT r.reseller_id, r.period, r.run_id, r.blocked, s.commission, s.total, s.currency,
		       (SELECT s2.total FROM settle.run r2 JOIN settle.statement s2 USING (reseller_id, run_id)
		         WHERE r2.reseller_id = r.reseller_id AND r2.status <> 'superseded'
		           AND r2.period = to_char(to_date(r.period, 'YYYY-MM') - interval '1 month', 'YYYY-MM')) AS previous_total
		  FROM settle.run r JOIN settle.statement s USING (reseller_id, run_id)
		 WHERE r.status <> 'superseded')
	SELECT reseller_id, period, run_id, 'negative_commission' AS check_name, commission >= 0 AS ok,
	       format('commission %s %s', commission, currency) AS detail
	  FROM cur
	UNION ALL
	SELECT reseller_id, period, run_id, 'swing', previous_total IS NULL OR previous_total = 0
	       OR abs(total - previous_total) * 100 <= abs(previous_total) * current_setting('settle.swing_threshold_percent')::numeric,
	       format('total %s %s against %s the period before (threshold %s%%)', total, currency,
	              coalesce(previous_total::text, 'nothing'), current_setting('settle.swing_threshold_percent'))
	  FROM cur
	UNION ALL
	SELECT reseller_id, period, run_id, 'blocked_run', NOT blocked,
	       format('%s open exception(s) block the period', settle.blocking_exceptions(reseller_id, period))
	  FROM cur
	UNION ALL
	SELECT c.reseller_id, c.period, c.run_id, 'reconciliation', x.beyond = 0,
	       format('%s reconciliation scope(s) beyond tolerance (settle.reconcile)', x.beyond)
	  FROM cur c
	  CROSS JOIN LATERAL (SELECT count(*) AS beyond FROM settle.recon_result r
	                       WHERE r.period = c.period AND r.reseller_id = c.reseller_id
	                         AND r.status IN ('mismatched', 'missing')) x;
COMMENT ON VIEW settle.sanity_checks IS
	'Sanity checks on every current run: negative commission totals, a total that swings more than settle.swing_threshold_percent against the previous period, runs blocked by exceptions, reconciliation deltas beyond tolerance.  ok = false is an alarm.';

CREATE FUNCTION settle.check_sanity(period settle.period, resellers bigint[] DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	c record;
	n integer := 0;
BEGIN
	-- Reseller by reseller, in reseller_id order (the lock order of
	-- docs/settlement.md); only the resellers asked for: settle_period passes
	-- the ones it settled, so it never writes another settlement's rows.
	FOR c IN SELECT * FROM settle.sanity_checks s WHERE s.period = check_sanity.period AND NOT s.ok
	           AND (check_sanity.resellers IS NULL OR s.reseller_id = ANY (check_sanity.resellers))
	         ORDER BY s.reseller_id, s.check_name
	LOOP
		n := n + 1;
		PERFORM pg_notify('settle_alerts', jsonb_build_object('alert', 'sanity_check', 'check', c.check_name,
			'reseller_id', c.reseller_id, 'period', c.period, 'run_id', c.run_id, 'detail', c.detail)::text);
		IF c.check_name <> 'blocked_run' THEN
			PERFORM settle.open_exception(c.reseller_id, 'sanity_check', c.check_name || ':' || c.period, c.period,
				jsonb_build_object('run_id', c.run_id), jsonb_build_object('detail', c.detail), 'warning');
		END IF;
	END LOOP;
	RETURN n;
END $$;
COMMENT ON FUNCTION settle.check_sanity(settle.period, bigint[]) IS
	'Runs the sanity checks of a period, for every reseller or the ones listed: each failure sends NOTIFY settle_alerts with a JSON payload and opens (or refreshes) a warning exception.  settle_period calls it for the resellers it settled.  Returns the number of failed checks.';

CREATE VIEW settle.changes_since_last_run AS
	SELECT r.reseller_id, rs.code AS reseller, r.period, r.run_id, r.created_at AS run_at,
	       (SELECT count(*) FROM settle.bill_line b WHERE b.reseller_id = r.reseller_id
	          AND b.ingested_at > r.created_at) AS new_line_revisions,
	       (SELECT coalesce(sum(b.billed_cost), 0) FROM settle.bill_line b WHERE b.reseller_id = r.reseller_id
	          AND b.ingested_at > r.created_at) AS new_billed_cost,
	       (SELECT count(*) FROM settle.rule_version v WHERE v.reseller_id = r.reseller_id
	          AND v.published_at > r.created_at) AS new_rule_versions,
	       (SELECT count(*) FROM settle.fx_rate f WHERE f.recorded_at > r.created_at) AS new_fx_rates,
	       (SELECT count(*) FROM settle.exception e WHERE e.reseller_id = r.reseller_id
	          AND e.updated_at > r.created_at) AS changed_exceptions
	  FROM settle.run r JOIN settle.reseller rs USING (reseller_id)
	 WHERE r.status <> 'superseded'
	   AND r.created_at = (SELECT max(r2.created_at) FROM settle.run r2
	                        WHERE r2.reseller_id = r.reseller_id AND r2.status <> 'superseded');
COMMENT ON VIEW settle.changes_since_last_run IS
	'For each reseller''s latest run: bill line revisions, billed cost, rule versions, FX rates and exception changes recorded since: what a new settle_period would pick up.';

CREATE VIEW settle.finance_summary AS
	SELECT r.period, r.reseller_id, rs.code AS reseller, s.currency, r.status,
	       s.gross_charges, s.commission, s.refunds, s.corrections, s.adjustments, s.total,
	       s.carry_forward_in, s.carry_forward_out, s.net_payout,
	       (SELECT coalesce(jsonb_object_agg(k.kind, k.n), '{}') FROM
	          (SELECT e.kind, count(*) AS n FROM settle.exception e
	            WHERE e.reseller_id = r.reseller_id AND e.period = r.period
	              AND e.state IN ('pending_review', 'proposed_adjustment', 'finance_approved')
	            GROUP BY e.kind) k)::text AS open_exceptions,
	       (SELECT count(*) FROM settle.recon_result x WHERE x.period = r.period AND x.reseller_id = r.reseller_id
	           AND x.status IN ('mismatched', 'missing')) AS reconciliation_deltas,
	       (SELECT coalesce(sum(abs(x.delta)), 0) FROM settle.recon_result x WHERE x.period = r.period
	           AND x.reseller_id = r.reseller_id AND x.status IN ('mismatched', 'missing')) AS reconciliation_delta_amount
	  FROM settle.run r JOIN settle.statement s USING (reseller_id, run_id) JOIN settle.reseller rs USING (reseller_id)
	 WHERE r.status <> 'superseded';
COMMENT ON VIEW settle.finance_summary IS
	'Month totals per reseller and currency: gross charges, commission, refunds, corrections, adjustments, carry-forwards and net payout, with open exceptions by kind and the reconciliation scopes beyond tolerance (count and absolute delta, from the last settle.reconcile).';

CREATE FUNCTION settle._purge(cutoff timestamptz, OUT raw_pages bigint, OUT ingest_runs bigint)
	AS 'MODULE_PATHNAME', 'settle_purge' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION settle._purge(timestamptz) IS 'Internal: the deletes of settle.purge.';

CREATE FUNCTION settle.purge(older_than interval DEFAULT NULL, OUT raw_pages bigint, OUT ingest_runs bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	keep interval := coalesce(older_than, current_setting('settle.retention')::interval);
BEGIN
	IF keep < interval '1 day' THEN
		RAISE EXCEPTION 'retention of % is too short', keep USING ERRCODE = 'invalid_parameter_value',
			HINT = 'Keep at least a day of raw pages.';
	END IF;
	SELECT p.raw_pages, p.ingest_runs INTO raw_pages, ingest_runs FROM settle._purge(now() - keep) p;
END $$;
COMMENT ON FUNCTION settle.purge(interval) IS
	'Retention: deletes raw pages older than the retention (settle.retention, default 400 days) that no bill line revision, provider total or open exception refers to (re-pulls that changed nothing, empty and failed pages), and finished ingest runs nothing refers to.  Never touches lines, lineage, statements or the audit trail.';

-- Conservation of payouts: every locked statement above the
-- minimum payout is paid exactly once, for exactly its net payout.
CREATE VIEW settle.payout_reconciliation AS
	SELECT r.reseller_id, r.period, r.run_id, s.currency, s.net_payout,
	       coalesce(p.paid, 0) AS in_batches, p.payouts,
	       CASE WHEN s.net_payout = 0 AND p.payouts = 0 THEN 'not_due'
	            WHEN p.payouts = 0 THEN 'missing'
	            WHEN p.payouts = 1 AND p.paid = s.net_payout AND p.currency = s.currency THEN 'matched'
	            ELSE 'mismatched' END AS status
	  FROM settle.run r
	  JOIN settle.statement s USING (reseller_id, run_id)
	  LEFT JOIN LATERAL (SELECT sum(x.amount) AS paid, count(*) AS payouts, min(x.currency) AS currency
	                       FROM settle.payout x
	                      WHERE x.reseller_id = r.reseller_id AND x.run_id = r.run_id AND x.status <> 'rejected') p ON true
	 WHERE r.status IN ('locked', 'paid');
COMMENT ON VIEW settle.payout_reconciliation IS
	'Payout batches against locked statements: each locked (or paid) run with a net payout is in exactly one batch for exactly that amount and currency (matched); missing when not batched yet (or its payout was rejected); mismatched otherwise; not_due when nothing is owed (carried forward).';
