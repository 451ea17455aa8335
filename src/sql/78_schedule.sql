-- 78: the provider's billing calendar, for scheduled jobs: when a period's
-- bills are final, which period is the last closed one, and the monthly
-- settlement of that period.  See docs/scheduling.md.
--
-- Alibaba Cloud's bills for a month are final after 12:00 UTC+8 on the 3rd
-- of the next month (earlier pulls may still change).  A job that settled
-- "now minus a month" would, run early (on the 1st to the 3rd), settle a
-- month whose bills still change, or, run a month early by a wrong schedule,
-- create draft runs of a month that has barely started.  The job settles
-- settle.closed_period() instead: always a month whose bills are final.

CREATE FUNCTION settle.period_closes_at(period settle.period) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	-- 12:00 at UTC+8 on the 3rd of the next month is 04:00 UTC that day
	SELECT ((to_date($1, 'YYYY-MM') + interval '1 month' + interval '2 days 4 hours')::timestamp) AT TIME ZONE 'UTC'
$$;
COMMENT ON FUNCTION settle.period_closes_at(settle.period) IS
	'When the provider''s bills of a period (YYYY-MM) become final: 12:00 UTC+8 (04:00 UTC) on the 3rd of the next month.';

CREATE FUNCTION settle.closed_period(at timestamptz DEFAULT pg_catalog.now()) RETURNS settle.period
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	m date;
BEGIN
	IF at IS NULL THEN
		RAISE EXCEPTION 'a point in time is required' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	-- the month before the one "at" falls in (in UTC), or the one before that
	-- while that month's bills are not final yet
	m := (date_trunc('month', at AT TIME ZONE 'UTC') - interval '1 month')::date;
	IF settle.period_closes_at(to_char(m, 'YYYY-MM')) > at THEN
		m := (m - interval '1 month')::date;
	END IF;
	RETURN to_char(m, 'YYYY-MM');
END $$;
COMMENT ON FUNCTION settle.closed_period(timestamptz) IS
	'The latest period whose bills are final at the given time (default now): on 2026-11-03 before 04:00 UTC that is 2026-09, from 04:00 UTC on 2026-10.';

CREATE FUNCTION settle.settle_closed_period(at timestamptz DEFAULT pg_catalog.now()) RETURNS SETOF settle.run
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	p settle.period := settle.closed_period(at);
BEGIN
	RAISE NOTICE 'settling %, the latest period whose bills are final (since %)', p,
		to_char(settle.period_closes_at(p) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI "UTC"');
	RETURN QUERY SELECT * FROM settle.settle_period(p);
END $$;
COMMENT ON FUNCTION settle.settle_closed_period(timestamptz) IS
	'The monthly job: settle_period of settle.closed_period(), the latest period whose bills are final.  Run early it settles (idempotently) the period before, never an open one.  Same privileges as settle_period.';
