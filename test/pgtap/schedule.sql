-- The provider's billing calendar against an independent model: for every
-- hour of two years (and the seconds around each close), closed_period(t)
-- is the latest month M whose close, 04:00 UTC on the 3rd of M+1 (12:00
-- UTC+8), is not after t; computed here from the calendar, not from
-- settle.period_closes_at.
BEGIN;
SELECT plan(5);
SET LOCAL TimeZone = 'America/Los_Angeles';	-- the session's time zone must not matter

CREATE TEMP TABLE instants AS
SELECT t FROM generate_series(timestamptz '2025-12-01 00:00+00', timestamptz '2028-01-31 23:00+00', interval '1 hour') t
UNION
SELECT (make_timestamptz(y, m, 3, 4, 0, 0, 'UTC') + d)
  FROM generate_series(2026, 2027) y, generate_series(1, 12) m, unnest(ARRAY[interval '-1 second', interval '0', interval '1 second']) d;

-- the model: month starts from 2025-01; a month closes at 04:00 UTC on the 3rd of the next one
CREATE TEMP TABLE model AS
SELECT i.t, (SELECT to_char(max(m), 'YYYY-MM')
               FROM generate_series(date '2025-01-01', date '2028-12-01', interval '1 month') m
              WHERE make_timestamptz(extract(year FROM m + interval '1 month')::int,
                                     extract(month FROM m + interval '1 month')::int, 3, 4, 0, 0, 'UTC') <= i.t) AS want
  FROM instants i;

SELECT is((SELECT count(*) FROM model WHERE want IS DISTINCT FROM settle.closed_period(t)), 0::bigint,
	format('closed_period agrees with the calendar at all %s instants', (SELECT count(*) FROM model)));
SELECT is((SELECT count(DISTINCT want) FROM model), 27::bigint, 'the instants cover 27 closed periods, 2025-10 to 2027-12');
SELECT is((SELECT count(*) FROM model m WHERE settle.period_closes_at(settle.closed_period(m.t)) > m.t), 0::bigint,
	'the period closed_period names is always closed');
SELECT is((SELECT count(*) FROM model m
            WHERE settle.period_closes_at(to_char(to_date(settle.closed_period(m.t), 'YYYY-MM') + interval '1 month', 'YYYY-MM')) <= m.t),
	0::bigint, 'and the month after it is not closed yet');
SELECT throws_ok($$SELECT settle.closed_period(NULL)$$, '22004', NULL, 'a NULL time is refused');

SELECT * FROM finish();
ROLLBACK;
