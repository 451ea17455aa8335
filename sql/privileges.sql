-- Who may do what, for every object of schema settle, from the catalogue:
-- the schema, each table, view, sequence, column grant, function, aggregate
-- and type, with the privileges each role holds (owner left out; "-" when
-- only the owner has any).  Every grant is made in src/sql/98_privileges.sql;
-- a new object, or a changed grant, changes this output, so none is added
-- without a decision on who may use it.  (test/pgtap/roles.sql checks the
-- rules: what PUBLIC may execute, SECURITY DEFINER functions.)
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS settle CASCADE;
CREATE EXTENSION settle CASCADE;
SET client_min_messages = notice;

CREATE FUNCTION pg_temp.grants(acl aclitem[], owner oid) RETURNS text LANGUAGE sql STABLE AS $$
	SELECT coalesce(string_agg(g, ' ' ORDER BY g COLLATE "C"), '-')
	  FROM (SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE replace(pg_get_userbyid(x.grantee), 'settle_', '') END
	               || '=' || string_agg(CASE x.privilege_type WHEN 'SELECT' THEN 'r' WHEN 'INSERT' THEN 'a' WHEN 'UPDATE' THEN 'w'
	                                    WHEN 'DELETE' THEN 'd' WHEN 'TRUNCATE' THEN 'D' WHEN 'REFERENCES' THEN 'x' WHEN 'TRIGGER' THEN 't'
	                                    WHEN 'EXECUTE' THEN 'X' WHEN 'USAGE' THEN 'U' WHEN 'CREATE' THEN 'C' END
	                                    || CASE WHEN x.is_grantable THEN '*' ELSE '' END,
	                                    '' ORDER BY position(left(x.privilege_type, 1) IN 'SIUDRTEC')) AS g
	          FROM aclexplode(acl) x WHERE x.grantee <> owner GROUP BY x.grantee) s
$$;
CREATE VIEW pg_temp.privileges AS
	SELECT 'schema' AS kind, n.nspname::text AS object, pg_temp.grants(coalesce(n.nspacl, acldefault('n', n.nspowner)), n.nspowner) AS grants
	  FROM pg_namespace n WHERE n.nspname = 'settle'
	UNION ALL
	SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' WHEN 'm' THEN 'view'
	                      WHEN 'S' THEN 'sequence' WHEN 'c' THEN 'type' ELSE 'relkind ' || c.relkind::text END,
	       c.oid::regclass::text,
	       pg_temp.grants(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char", c.relowner)), c.relowner)
	  FROM pg_class c WHERE c.relnamespace = 'settle'::regnamespace AND c.relkind NOT IN ('i', 'I', 't')
	UNION ALL
	SELECT 'column', a.attrelid::regclass::text || '.' || a.attname, pg_temp.grants(a.attacl, c.relowner)
	  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	 WHERE c.relnamespace = 'settle'::regnamespace AND a.attacl IS NOT NULL
	UNION ALL
	SELECT CASE p.prokind WHEN 'f' THEN 'function' WHEN 'a' THEN 'aggregate' WHEN 'p' THEN 'procedure' ELSE 'window' END
	       || CASE WHEN p.prosecdef THEN ' (definer)' ELSE '' END,
	       p.oid::regprocedure::text, pg_temp.grants(coalesce(p.proacl, acldefault('f', p.proowner)), p.proowner)
	  FROM pg_proc p WHERE p.pronamespace = 'settle'::regnamespace
	UNION ALL
	-- types of their own (not a table's row type, not an array type)
	SELECT 'type', t.oid::regtype::text, pg_temp.grants(coalesce(t.typacl, acldefault('T', t.typowner)), t.typowner)
	  FROM pg_type t WHERE t.typnamespace = 'settle'::regnamespace AND t.typcategory <> 'A' AND t.typtype <> 'c';

\pset format unaligned
SELECT kind, object, grants FROM pg_temp.privileges ORDER BY object COLLATE "C", kind COLLATE "C";
-- by kind, what each holds
SELECT kind, count(*) AS objects, count(*) FILTER (WHERE grants = '-') AS owner_only,
       count(*) FILTER (WHERE grants ~ '(^| )PUBLIC=') AS public
  FROM pg_temp.privileges GROUP BY kind ORDER BY kind COLLATE "C";
\pset format aligned

-- The output moves with a grant: one more for PUBLIC, rolled back.
BEGIN;
GRANT EXECUTE ON FUNCTION settle.purge(interval) TO PUBLIC;
SELECT kind, object, grants FROM pg_temp.privileges WHERE object = 'settle.purge(interval)';
ROLLBACK;
SELECT kind, object, grants FROM pg_temp.privileges WHERE object = 'settle.purge(interval)';
