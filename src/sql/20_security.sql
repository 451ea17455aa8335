-- 20: row-level security, audit and append-only triggers for the objects
-- defined so far (privileges, of every object: 98_privileges.sql).

-- Row-level security: staff see every reseller, a reseller login only its own.
DO $rls$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['reseller', 'customer', 'customer_account', 'agreement', 'bill_line', 'exception']
	LOOP
		EXECUTE pg_catalog.format('ALTER TABLE settle.%I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE pg_catalog.format('CREATE POLICY staff_all ON settle.%I TO settle_admin, settle_operator, '
			'settle_analyst, settle_finance, settle_auditor USING (true)', t);
		EXECUTE pg_catalog.format('CREATE POLICY reseller_own ON settle.%I FOR SELECT TO settle_reseller '
			'USING (reseller_id = ANY (settle.current_reseller_ids()))', t);
	END LOOP;
END
$rls$;

-- A reseller login reads its own mapping (settle.current_reseller_ids runs as the caller).
ALTER TABLE settle.reseller_access ENABLE ROW LEVEL SECURITY;
CREATE POLICY staff_all ON settle.reseller_access TO settle_admin, settle_operator, settle_analyst,
	settle_finance, settle_auditor USING (true);
CREATE POLICY own_mapping ON settle.reseller_access FOR SELECT TO settle_reseller
	USING (role_name = current_user
	       OR (EXISTS (SELECT 1 FROM pg_catalog.pg_roles r WHERE r.rolname = role_name)
	           AND pg_catalog.pg_has_role(current_user, role_name, 'MEMBER')));

-- Audit: every change to configuration and workflow tables (a reason is
-- required for agreements, FX rates and exceptions).
SELECT settle._audited(t::regclass, t IN ('settle.agreement', 'settle.fx_rate', 'settle.exception'))
  FROM unnest(ARRAY['settle.currency', 'settle.product_category', 'settle.product', 'settle.reseller',
                    'settle.customer', 'settle.customer_account', 'settle.agreement', 'settle.fx_rate',
                    'settle.connector', 'settle.exception', 'settle.reseller_access']) t;

-- Append-only: history is never rewritten, not even by the owner or a replica.
SELECT settle._append_only(t::regclass)
  FROM unnest(ARRAY['settle.raw_page', 'settle.bill_line', 'settle.fx_rate']) t;

-- pg_dump keeps user data of extension tables (every table and sequence is
-- marked; rows the script inserted are merged on restore: see 97_backup.sql).
SELECT pg_catalog.pg_extension_config_dump('settle.reseller', '');
SELECT pg_catalog.pg_extension_config_dump('settle.customer', '');
SELECT pg_catalog.pg_extension_config_dump('settle.customer_account', '');
SELECT pg_catalog.pg_extension_config_dump('settle.agreement', '');
SELECT pg_catalog.pg_extension_config_dump('settle.fx_rate', '');
SELECT pg_catalog.pg_extension_config_dump('settle.connector', '');
SELECT pg_catalog.pg_extension_config_dump('settle.raw_page', '');
SELECT pg_catalog.pg_extension_config_dump('settle.bill_line', '');
SELECT pg_catalog.pg_extension_config_dump('settle.exception', '');
SELECT pg_catalog.pg_extension_config_dump('settle.reseller_access', '');
