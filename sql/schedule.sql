-- The provider's billing calendar for scheduled jobs (docs/scheduling.md):
-- when a period closes, which period is the last closed one, the monthly
-- job's settlement of it, and settle_period's warning when no reseller has
-- an agreement in force (never a silent empty result).
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS settle CASCADE;
CREATE EXTENSION settle CASCADE;
SET client_min_messages = notice;
SET TimeZone = 'UTC';
\set VERBOSITY terse

-- October 2026 is final at 12:00 UTC+8 on 3 November: 04:00 UTC
SELECT settle.period_closes_at('2026-10') AS october, settle.period_closes_at('2026-12') AS december;
SELECT t, settle.closed_period(t)
  FROM unnest(ARRAY['2026-11-01 00:00+00', '2026-11-03 03:59:59+00', '2026-11-03 04:00+00', '2026-11-30 23:59:59+00',
                    '2027-01-03 03:59:59.999+00', '2027-01-03 04:00+00', '2027-01-03 11:59+08', '2027-01-03 12:00+08']::timestamptz[]) t;
SELECT settle.closed_period(NULL);

-- a database without resellers: the job settles the closed period, and says that nothing was settled
SELECT count(*) FROM settle.settle_closed_period('2026-11-04 06:00+00');
SELECT count(*) FROM settle.settle_period('2026-10');
-- a named reseller without an agreement in force is an error
SELECT settle.add_reseller('sched', 'Schedule Test');
SELECT count(*) FROM settle.settle_period('2026-10', 'sched');
-- with an agreement in force: no warning
BEGIN;
SET LOCAL settle.reason = 'schedule test';
SELECT settle.set_agreement('sched', '2026-01-01', 'USD') > 0 AS agreement;
COMMIT;
SELECT status, blocked, lines_out FROM settle.settle_closed_period('2026-11-04 06:00+00');
SELECT count(*) FROM settle.settle_period('2025-12');

-- who may call what
SELECT p.oid::regprocedure, has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('settle_analyst', p.oid, 'EXECUTE') AS analyst,
       has_function_privilege('settle_auditor', p.oid, 'EXECUTE') AS auditor
  FROM pg_proc p WHERE p.pronamespace = 'settle'::regnamespace
   AND p.proname IN ('period_closes_at', 'closed_period', 'settle_closed_period') ORDER BY 1::text;
