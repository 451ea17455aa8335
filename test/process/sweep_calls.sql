-- Catalogue-driven calls of every function of schema settle that SQL can call
-- (not trigger functions, not aggregate support functions taking `internal`),
-- for catalogue_sweeps.sh.  Reads only the catalogue, so a function added
-- later is swept without editing anything.
--   psql -At -v mode=null -f sweep_calls.sql    one call with every argument NULL,
--                                               then one per position with NULL
--                                               there and plausible values elsewhere
--   psql -At -v mode=money -f sweep_calls.sql   "<value>|<call>": every numeric
--                                               argument given NaN, ±Infinity,
--                                               10^14, 10^20 and 10^-30

-- A plausible value for an argument, by name first, then by (base) type.
CREATE FUNCTION pg_temp.sweep_sample(t oid, name text) RETURNS text LANGUAGE sql STABLE AS $$
	SELECT CASE
	         WHEN name ~ 'period|cycle' THEN '2026-10'
	         WHEN name = 'reseller' THEN 'acme'
	         WHEN name ~ 'reason' THEN 'sweep'
	         WHEN name ~ 'currency' THEN 'USD'
	         WHEN name ~ 'connector' AND base.typname = 'text' THEN 'alibaba-intl'
	         WHEN base.typname IN ('int2', 'int4', 'int8', 'numeric', 'oid') THEN '1'
	         WHEN base.typname IN ('date', 'timestamptz', 'timestamp') THEN '2026-10-01'
	         WHEN base.typname = 'interval' THEN '1 day'
	         WHEN base.typname = 'bool' THEN 'true'
	         WHEN base.typname IN ('json', 'jsonb') THEN '{}'
	         WHEN base.typname = 'bytea' THEN '\x00'
	         WHEN base.typname = 'rule' THEN 'otherwise pay 1%'
	         WHEN base.typname = 'char' THEN 'c'
	         WHEN base.typname LIKE '\_%' THEN '{}'
	         WHEN base.typtype = 'c' THEN NULL
	         ELSE 'x'
	       END
	  FROM pg_catalog.pg_type ty
	  JOIN pg_catalog.pg_type base ON base.oid = CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
	 WHERE ty.oid = t
$$;

-- The call of function f with argument pos set to val (val NULL: a typed
-- NULL) and plausible values elsewhere; pos 0: every argument NULL.
CREATE FUNCTION pg_temp.sweep_call(f oid, pos int, val text) RETURNS text LANGUAGE sql STABLE AS $$
	SELECT pg_catalog.format('%s settle.%s(%s);', CASE WHEN p.prokind = 'p' THEN 'CALL' ELSE 'SELECT' END,
	         pg_catalog.quote_ident(p.proname),
	         coalesce(string_agg(
	           CASE WHEN pos = 0 OR (a.i = pos AND val IS NULL) THEN 'NULL'
	                WHEN a.i = pos THEN pg_catalog.quote_literal(val)
	                ELSE coalesce(pg_catalog.quote_literal(pg_temp.sweep_sample(a.t, n.names[a.i])), 'NULL') END
	           || '::' || pg_catalog.format_type(a.t, NULL), ', ' ORDER BY a.i), ''))
	  FROM pg_catalog.pg_proc p
	  CROSS JOIN LATERAL (SELECT CASE WHEN p.proargmodes IS NULL THEN p.proargnames
	                                  ELSE ARRAY(SELECT x FROM unnest(p.proargnames, p.proargmodes) AS u(x, m)
	                                              WHERE m IN ('i', 'b', 'v')) END AS names) n
	  LEFT JOIN LATERAL unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(t, i) ON true
	 WHERE p.oid = f
	 GROUP BY p.prokind, p.proname
$$;

CREATE TEMP VIEW sweep_fn AS
	SELECT p.oid, p.pronargs, p.proargtypes::oid[] AS types, p.proname
	  FROM pg_catalog.pg_proc p
	 WHERE p.pronamespace = 'settle'::regnamespace
	   AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
	   AND NOT ('internal'::regtype = ANY (p.proargtypes::oid[]));

\if :{?mode}
\else
\set mode null
\endif
SELECT :'mode' = 'null' AS null_mode \gset
\if :null_mode
SELECT pg_temp.sweep_call(f.oid, pos, NULL)
  FROM sweep_fn f, generate_series(0, f.pronargs) pos
 WHERE pos = 0 OR f.pronargs > 1
 ORDER BY f.proname, f.oid, pos;
\else
SELECT v || '|' || pg_temp.sweep_call(f.oid, a.i::int, v)
  FROM sweep_fn f, unnest(f.types) WITH ORDINALITY AS a(t, i)
  JOIN pg_catalog.pg_type ty ON ty.oid = a.t,
       unnest(ARRAY['NaN', 'Infinity', '-Infinity', '100000000000000', '1e20', '1e-30']) v
 WHERE coalesce(nullif(ty.typbasetype, 0), ty.oid) = 'numeric'::regtype
 ORDER BY f.proname, f.oid, a.i, v;
\endif
