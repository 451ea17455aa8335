-- 20: privileges, row-level security, audit and append-only triggers for the
-- objects defined so far.  Later files grant their own objects the same way.

-- Functions are not executable by PUBLIC unless granted below.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA settle FROM PUBLIC;
-- The domain checks are pure and run for whoever passes a period or amount.
GRANT EXECUTE ON FUNCTION settle.check_period(text), settle.check_amount(numeric, integer) TO PUBLIC;

-- Read access.
GRANT SELECT ON ALL TABLES IN SCHEMA settle
	TO settle_admin, settle_operator, settle_analyst, settle_finance, settle_auditor;
REVOKE SELECT ON settle.audit_log, settle.audit_link, settle.audit_head, settle.audit_anchor
	FROM settle_operator, settle_analyst, settle_finance;
GRANT SELECT ON settle.reseller, settle.customer, settle.customer_account, settle.agreement,
	settle.bill_line, settle.bill_line_current, settle.currency, settle.product,
	settle.product_category TO settle_reseller;

-- Direct writes: the admin role only, and never on append-only tables.
GRANT INSERT, UPDATE, DELETE ON settle.currency, settle.product_category, settle.product,
	settle.reseller, settle.customer, settle.customer_account, settle.agreement,
	settle.connector, settle.reseller_access TO settle_admin;
GRANT INSERT ON settle.fx_rate TO settle_admin;

-- Functions.
GRANT EXECUTE ON FUNCTION settle.reseller_id(text), settle.check_currency(text)
	TO settle_admin, settle_operator, settle_analyst, settle_finance, settle_auditor;
GRANT EXECUTE ON FUNCTION settle.current_reseller_ids(), settle.resellers_of_login(name) TO PUBLIC;
GRANT EXECUTE ON FUNCTION settle.add_reseller(text, text),
	settle.add_customer(text, text, text, text, jsonb),
	settle.grant_reseller_access(name, text) TO settle_admin;
GRANT EXECUTE ON FUNCTION settle.map_account(text, text, text, date, date),
	settle.add_product(text, text, text) TO settle_admin, settle_operator;
GRANT EXECUTE ON FUNCTION
	settle.set_agreement(text, date, text, date, text, text, integer, settle.amount, settle.amount, settle.amount),
	settle.end_agreement(text, bigint, date) TO settle_admin, settle_finance;
GRANT EXECUTE ON FUNCTION settle.add_fx_rate(text, text, date, settle.amount, text)
	TO settle_admin, settle_operator, settle_finance;
GRANT EXECUTE ON FUNCTION settle.verify_audit(), settle.audit_anchor_value() TO settle_admin, settle_auditor;
GRANT EXECUTE ON FUNCTION settle.open_exception(bigint, text, text, settle.period, jsonb, jsonb, text)
	TO settle_admin, settle_operator, settle_analyst, settle_finance;
-- Trigger functions run in the context of whoever changes the table.
GRANT EXECUTE ON FUNCTION settle.audit_trigger(),
	settle.append_only_trigger() TO PUBLIC;

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
GRANT SELECT ON settle.reseller_access TO settle_reseller;
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
-- marked; rows the script inserted are merged on restore: see 99_backup.sql).
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
