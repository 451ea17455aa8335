-- 19: functions that change the core model.  Non-admin roles have no direct
-- table writes; they call these.  All are SECURITY DEFINER with a pinned
-- search_path and fully qualified names.

CREATE TABLE settle.reseller_access (
	role_name   name   PRIMARY KEY,
	reseller_id bigint NOT NULL REFERENCES settle.reseller
);
COMMENT ON TABLE settle.reseller_access IS
	'Maps a database role (a portal login, member of settle_reseller) to the one reseller whose rows it may read.';

CREATE FUNCTION settle.reseller_id(code text) RETURNS bigint
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	id bigint;
BEGIN
	SELECT r.reseller_id INTO id FROM settle.reseller r WHERE r.code = reseller_id.code;
	IF id IS NULL THEN
		RAISE EXCEPTION 'unknown reseller "%"', code USING ERRCODE = 'foreign_key_violation';
	END IF;
	RETURN id;
END $$;
COMMENT ON FUNCTION settle.reseller_id(text) IS 'The id of the reseller with this code; an error (23503) when there is none.';

CREATE FUNCTION settle.check_currency(code text) RETURNS char(3)
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM settle.currency c WHERE c.currency_code = code) THEN
		RAISE EXCEPTION 'unknown currency "%"', code USING ERRCODE = 'foreign_key_violation',
			DETAIL = 'Currencies are ISO 4217 codes listed in settle.currency.';
	END IF;
	RETURN code;
END $$;
COMMENT ON FUNCTION settle.check_currency(text) IS 'Returns the code when it is a known ISO 4217 currency; an error (23503) otherwise.';

CREATE FUNCTION settle.resellers_of_login(login name) RETURNS bigint[]
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce(array_agg(a.reseller_id), '{}')
	  FROM settle.reseller_access a
	 WHERE a.role_name = login
	    OR (EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = a.role_name)
	        AND pg_has_role(login, a.role_name, 'MEMBER'))
$$;
COMMENT ON FUNCTION settle.resellers_of_login(name) IS
	'Resellers a login is mapped to in settle.reseller_access, directly or through a role it is a member of.  Runs as the caller: a reseller login sees only its own mapping there.';

CREATE FUNCTION settle.current_reseller_ids() RETURNS bigint[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	-- SECURITY INVOKER on purpose: current_user must be the caller
	SELECT settle.resellers_of_login(current_user)
$$;
COMMENT ON FUNCTION settle.current_reseller_ids() IS 'Resellers the current user may see as a settle_reseller (row-level security).';

CREATE FUNCTION settle.add_reseller(code text, name text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	INSERT INTO settle.reseller (code, name) VALUES (code, name) RETURNING reseller_id
$$;
COMMENT ON FUNCTION settle.add_reseller(text, text) IS 'Registers a reseller; returns its id.';

CREATE FUNCTION settle.add_customer(reseller text, code text, name text,
	segment text DEFAULT 'standard', tags jsonb DEFAULT '{}') RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	INSERT INTO settle.customer (reseller_id, code, name, segment, tags)
	VALUES (settle.reseller_id(reseller), code, name, segment, tags)
	RETURNING customer_id
$$;
COMMENT ON FUNCTION settle.add_customer(text, text, text, text, jsonb) IS 'Registers an end customer of a reseller; returns its id.';

CREATE FUNCTION settle.map_account(account_id text, reseller text, customer text,
	valid_from date DEFAULT '-infinity', valid_to date DEFAULT 'infinity') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	rid bigint := settle.reseller_id(reseller);
	cid bigint;
BEGIN
	SELECT c.customer_id INTO cid FROM settle.customer c WHERE c.reseller_id = rid AND c.code = customer;
	IF cid IS NULL THEN
		RAISE EXCEPTION 'unknown customer "%" of reseller "%"', customer, reseller
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	INSERT INTO settle.customer_account VALUES (account_id, rid, cid, valid_from, valid_to);
END $$;
COMMENT ON FUNCTION settle.map_account(text, text, text, date, date) IS
	'Maps a cloud account id (an Alibaba Cloud UID, or the BillingAccountId/SubAccountId of a FOCUS file: AWS, Azure, GCP, OCI; see settle.account_id) to a customer over [valid_from, valid_to).  An account maps to one customer on any date (23P01 otherwise).';

CREATE FUNCTION settle.add_product(product_code text, category text, name text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	INSERT INTO settle.product VALUES (product_code, category, name)
$$;
COMMENT ON FUNCTION settle.add_product(text, text, text) IS 'Adds a product code to the catalogue under a category.';

CREATE FUNCTION settle.set_agreement(reseller text, effective_from date, settlement_currency text,
	effective_to date DEFAULT 'infinity', rounding_mode text DEFAULT 'half_even',
	date_basis text DEFAULT 'service_month', refund_window_days integer DEFAULT 90,
	tolerance_abs settle.amount DEFAULT 0.01, tolerance_rel settle.amount DEFAULT 0,
	minimum_payout settle.amount DEFAULT 0) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	id bigint;
BEGIN
	IF minimum_payout < 0 THEN
		RAISE EXCEPTION 'minimum payout must not be negative' USING ERRCODE = 'check_violation',
			DETAIL = pg_catalog.format('The minimum payout given was %s.', minimum_payout);
	END IF;
	INSERT INTO settle.agreement (reseller_id, effective_from, effective_to, settlement_currency,
		rounding_mode, date_basis, refund_window_days, tolerance_abs, tolerance_rel, minimum_payout)
	VALUES (settle.reseller_id(reseller), effective_from, effective_to,
		settle.check_currency(settlement_currency), rounding_mode, date_basis,
		refund_window_days, tolerance_abs, tolerance_rel, minimum_payout)
	RETURNING agreement_id INTO id;
	RETURN id;
END $$;
COMMENT ON FUNCTION settle.set_agreement(text, date, text, date, text, text, integer, settle.amount, settle.amount, settle.amount) IS
	'Creates an agreement for a reseller.  Requires settle.reason (audited); refuses unknown currencies (23503), negative minimum payouts (23514) and overlaps with another agreement of the reseller (23P01).';

CREATE FUNCTION settle.end_agreement(reseller text, agreement_id bigint, effective_to date) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	UPDATE settle.agreement a SET effective_to = end_agreement.effective_to
	 WHERE a.reseller_id = settle.reseller_id(reseller) AND a.agreement_id = end_agreement.agreement_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown agreement % of reseller "%"', agreement_id, reseller
			USING ERRCODE = 'foreign_key_violation';
	END IF;
END $$;
COMMENT ON FUNCTION settle.end_agreement(text, bigint, date) IS 'Ends an agreement at effective_to (exclusive).  Requires settle.reason.';

CREATE FUNCTION settle.add_fx_rate(base_currency text, quote_currency text, rate_date date,
	rate settle.amount, source text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	id bigint;
BEGIN
	PERFORM settle.check_currency(base_currency), settle.check_currency(quote_currency);
	-- Serialise versions of one (pair, date, source).
	PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('settle.fx_rate'),
		pg_catalog.hashtext(base_currency || quote_currency || rate_date || source));
	INSERT INTO settle.fx_rate (base_currency, quote_currency, rate_date, rate, source, version)
	SELECT add_fx_rate.base_currency, add_fx_rate.quote_currency, add_fx_rate.rate_date,
	       add_fx_rate.rate, add_fx_rate.source, coalesce(max(f.version), 0) + 1
	  FROM settle.fx_rate f
	 WHERE f.base_currency = add_fx_rate.base_currency AND f.quote_currency = add_fx_rate.quote_currency
	   AND f.rate_date = add_fx_rate.rate_date AND f.source = add_fx_rate.source
	RETURNING fx_rate_id INTO id;
	RETURN id;
END $$;
COMMENT ON FUNCTION settle.add_fx_rate(text, text, date, settle.amount, text) IS
	'Records an FX rate (1 base = rate quote on rate_date).  A second rate for the same pair, date and source is a new version.  Requires settle.reason.';

CREATE VIEW settle.fx_rate_current AS
	SELECT DISTINCT ON (base_currency, quote_currency, rate_date, source) *
	  FROM settle.fx_rate
	 ORDER BY base_currency, quote_currency, rate_date, source, version DESC;
COMMENT ON VIEW settle.fx_rate_current IS 'The version in force of every FX rate.';

CREATE FUNCTION settle.grant_reseller_access(role_name name, reseller text) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	INSERT INTO settle.reseller_access VALUES (role_name, settle.reseller_id(reseller))
$$;
COMMENT ON FUNCTION settle.grant_reseller_access(name, text) IS
	'Lets role_name (a member of settle_reseller) read the rows of one reseller.';
