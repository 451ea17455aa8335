-- Prints docs/reference.md from the catalogue: every public function, view
-- and table of the settle extension with its COMMENT.  Run by
-- test/gen_reference.sh; test/process/reference_current.sh checks the file
-- in the repository is current.
\pset format unaligned
\pset tuples_only on
\pset footer off
SELECT '# Reference' || E'\n\n'
    || 'Generated from the catalogue by `bash test/gen_reference.sh` (the comments on every object).  '
    || 'Functions whose names start with `_` are internal.' || E'\n';
SELECT E'## Functions\n\n| function | returns | volatility | description |\n|---|---|---|---|';
SELECT format('| `settle.%s(%s)` | %s | %s | %s |', p.proname,
              pg_get_function_identity_arguments(p.oid),
              replace(pg_get_function_result(p.oid), '|', '\|'),
              CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END
              || CASE WHEN p.prosecdef THEN ', security definer' ELSE '' END,
              replace(replace(coalesce(obj_description(p.oid, 'pg_proc'), ''), E'\n', ' '), '|', '\|'))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'settle' AND p.proname !~ '^_' AND p.prokind IN ('f', 'a')
   AND p.prorettype <> 'trigger'::regtype
   AND p.proname NOT IN ('rule_in', 'rule_out', 'rule_recv', 'rule_send', 'rule_eq', 'rule_ne', 'rule_hash', 'rule_hash_extended')
 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);
SELECT E'\n## Procedures\n\n| procedure | description |\n|---|---|';
SELECT format('| `CALL settle.%s(%s)` | %s |', p.proname, regexp_replace(pg_get_function_identity_arguments(p.oid), '(^|, )IN ', '\1', 'g'),
              replace(replace(coalesce(obj_description(p.oid, 'pg_proc'), ''), E'\n', ' '), '|', '\|'))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'settle' AND p.proname !~ '^_' AND p.prokind = 'p'
 ORDER BY p.proname, pg_get_function_identity_arguments(p.oid);
SELECT E'\n## Views\n\n| view | description |\n|---|---|';
SELECT format('| `settle.%s` | %s |', c.relname, replace(coalesce(obj_description(c.oid, 'pg_class'), ''), '|', '\|'))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'settle' AND c.relkind = 'v' ORDER BY c.relname;
SELECT E'\n## Tables\n\n| table | description |\n|---|---|';
SELECT format('| `settle.%s` | %s |', c.relname, replace(coalesce(obj_description(c.oid, 'pg_class'), ''), '|', '\|'))
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'settle' AND c.relkind IN ('r', 'p') ORDER BY c.relname;
SELECT E'\n## Settings\n\n| setting | context | default | description |\n|---|---|---|---|';
SELECT format('| `%s` | %s | %s | %s |', name, context, coalesce(nullif(boot_val, ''), '(empty)'),
              replace(short_desc, '|', '\|'))
  FROM pg_settings WHERE name LIKE 'settle.%' ORDER BY name;
