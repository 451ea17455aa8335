-- 30: commission rules — the settle.rule type, its functions,
-- and published rule versions per agreement.

CREATE TYPE settle.rule;

CREATE FUNCTION settle.rule_in(cstring) RETURNS settle.rule
	AS 'MODULE_PATHNAME', 'settle_rule_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.rule_out(settle.rule) RETURNS cstring
	AS 'MODULE_PATHNAME', 'settle_rule_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.rule_recv(internal) RETURNS settle.rule
	AS 'MODULE_PATHNAME', 'settle_rule_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.rule_send(settle.rule) RETURNS bytea
	AS 'MODULE_PATHNAME', 'settle_rule_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE settle.rule (
	INPUT = settle.rule_in,
	OUTPUT = settle.rule_out,
	RECEIVE = settle.rule_recv,
	SEND = settle.rule_send,
	INTERNALLENGTH = VARIABLE,
	STORAGE = extended
);
COMMENT ON TYPE settle.rule IS
	'A commission rule set written in the settle rule language (docs/rules.md), validated on input and stored in a compact canonical binary form; prints back canonically.';
COMMENT ON FUNCTION settle.rule_in(cstring) IS
	'Parses rule text; refuses syntax errors (42601) and semantic errors (22023) with the line and column in the detail.';
COMMENT ON FUNCTION settle.rule_out(settle.rule) IS 'Prints a rule in canonical form; the output re-parses to an equal rule.';
COMMENT ON FUNCTION settle.rule_recv(internal) IS
	'Binary input: validates every field and that the bytes are canonical (22P03 otherwise).';
COMMENT ON FUNCTION settle.rule_send(settle.rule) IS 'Binary output: the canonical binary form.';

CREATE FUNCTION settle.rule_eq(settle.rule, settle.rule) RETURNS boolean
	AS 'MODULE_PATHNAME', 'settle_rule_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.rule_ne(settle.rule, settle.rule) RETURNS boolean
	AS 'MODULE_PATHNAME', 'settle_rule_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.rule_hash(settle.rule) RETURNS integer
	AS 'MODULE_PATHNAME', 'settle_rule_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.rule_hash_extended(settle.rule, bigint) RETURNS bigint
	AS 'MODULE_PATHNAME', 'settle_rule_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_eq(settle.rule, settle.rule) IS 'Two rules are equal when their canonical forms are.';
COMMENT ON FUNCTION settle.rule_ne(settle.rule, settle.rule) IS 'Negation of settle.rule_eq.';
COMMENT ON FUNCTION settle.rule_hash(settle.rule) IS 'Hash support for the settle.rule hash operator class.';
COMMENT ON FUNCTION settle.rule_hash_extended(settle.rule, bigint) IS 'Extended (seeded) hash support for settle.rule.';

CREATE OPERATOR settle.= (
	LEFTARG = settle.rule, RIGHTARG = settle.rule, PROCEDURE = settle.rule_eq,
	COMMUTATOR = OPERATOR(settle.=), NEGATOR = OPERATOR(settle.<>),
	RESTRICT = eqsel, JOIN = eqjoinsel, HASHES
);
CREATE OPERATOR settle.<> (
	LEFTARG = settle.rule, RIGHTARG = settle.rule, PROCEDURE = settle.rule_ne,
	COMMUTATOR = OPERATOR(settle.<>), NEGATOR = OPERATOR(settle.=),
	RESTRICT = neqsel, JOIN = neqjoinsel
);
COMMENT ON OPERATOR settle.= (settle.rule, settle.rule) IS 'Rules are equal when their canonical forms are.';
COMMENT ON OPERATOR settle.<> (settle.rule, settle.rule) IS 'Rules differ.';

CREATE OPERATOR CLASS settle.rule_hash_ops DEFAULT FOR TYPE settle.rule USING hash AS
	OPERATOR 1 settle.=,
	FUNCTION 1 settle.rule_hash(settle.rule),
	FUNCTION 2 settle.rule_hash_extended(settle.rule, bigint);
COMMENT ON OPERATOR CLASS settle.rule_hash_ops USING hash IS 'Hashing of settle.rule (GROUP BY, DISTINCT, hash joins).';
COMMENT ON OPERATOR FAMILY settle.rule_hash_ops USING hash IS 'Hashing of settle.rule.';

CREATE FUNCTION settle.rule_content_hash(rule settle.rule) RETURNS bytea
	LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
	RETURN pg_catalog.sha256(pg_catalog.convert_to(settle.rule_out(rule)::text, 'UTF8'));
COMMENT ON FUNCTION settle.rule_content_hash(settle.rule) IS
	'SHA-256 of the canonical text of a rule: the content hash recorded when a rule version is published.';

CREATE FUNCTION settle.rule_problems(rule settle.rule) RETURNS text[]
	AS 'MODULE_PATHNAME', 'settle_rule_problems' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_problems(settle.rule) IS
	'Coverage problems that keep a rule from being published: tier bands with gaps or overlaps, caps below floors, equally specific clauses that can match the same bill line.  Empty when there are none.';

CREATE FUNCTION settle.rule_currency(rule settle.rule) RETURNS text
	AS 'MODULE_PATHNAME', 'settle_rule_currency' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_currency(settle.rule) IS 'The currency a rule''s amounts are in.';
CREATE FUNCTION settle.rule_rounding(rule settle.rule) RETURNS text
	AS 'MODULE_PATHNAME', 'settle_rule_rounding' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_rounding(settle.rule) IS 'The rounding mode of a rule: half_even, half_up or down.';
CREATE FUNCTION settle.rule_refund_window_days(rule settle.rule) RETURNS integer
	AS 'MODULE_PATHNAME', 'settle_rule_refund_window_days' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_refund_window_days(settle.rule) IS 'The refund window a rule states, in days; null when it states none.';
CREATE FUNCTION settle.rule_minimum_payout(rule settle.rule) RETURNS numeric
	AS 'MODULE_PATHNAME', 'settle_rule_minimum_payout' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_minimum_payout(settle.rule) IS 'The minimum payout a rule states; null when it states none.';
CREATE FUNCTION settle.rule_categories(rule settle.rule) RETURNS text[]
	AS 'MODULE_PATHNAME', 'settle_rule_categories' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_categories(settle.rule) IS 'The product categories a rule''s clauses match on.';
CREATE FUNCTION settle.rule_clause(rule settle.rule, clause integer) RETURNS text
	AS 'MODULE_PATHNAME', 'settle_rule_clause' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_clause(settle.rule, integer) IS
	'The canonical text of clause n (1 = most specific); null when there is no such clause.';

CREATE FUNCTION settle.round_money(amount settle.exact_amount, minor_unit integer, mode text DEFAULT 'half_even')
	RETURNS numeric
	AS 'MODULE_PATHNAME', 'settle_round_money' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.round_money(settle.exact_amount, integer, text) IS
	'Rounds an amount to minor_unit decimals (ISO 4217 exponent, 0-4) in mode half_even (ties to even), half_up (ties away from zero) or down (towards zero); exact, at most 16 input decimals.';

CREATE FUNCTION settle.evaluate_rule(rule settle.rule,
	product text DEFAULT NULL, category text DEFAULT NULL, sku text DEFAULT NULL,
	charge_category text DEFAULT 'Usage', region text DEFAULT NULL, segment text DEFAULT NULL,
	tags jsonb DEFAULT '{}',
	billed_cost numeric DEFAULT 0, list_cost numeric DEFAULT 0, amount_paid numeric DEFAULT 0,
	active_days integer DEFAULT NULL, days_in_month integer DEFAULT NULL,
	customer_spend numeric DEFAULT 0, reseller_spend numeric DEFAULT 0, reseller_volume numeric DEFAULT 0,
	customer_spend_before numeric DEFAULT 0, reseller_spend_before numeric DEFAULT 0,
	customer_commission_to_date numeric DEFAULT 0, reseller_commission_to_date numeric DEFAULT 0,
	refund_age_days integer DEFAULT NULL,
	OUT status text, OUT clause integer, OUT clause_text text, OUT tier integer,
	OUT basis text, OUT basis_amount numeric, OUT rate_percent numeric, OUT fixed_amount numeric,
	OUT pay text, OUT commission_before_limits numeric, OUT limit_applied text,
	OUT commission numeric, OUT commission_rounded numeric, OUT refund_timing text)
	AS 'MODULE_PATHNAME', 'settle_evaluate_rule' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION settle.evaluate_rule(settle.rule, text, text, text, text, text, text, jsonb,
	numeric, numeric, numeric, integer, integer, numeric, numeric, numeric, numeric, numeric,
	numeric, numeric, integer) IS
	'Evaluates a rule for one bill line and its period context (docs/rules.md): the clause that matched (1 = most specific) and its text, the tier band reached, the basis, the rate in percent or the fixed amount, the exact commission before and after caps and floors, the limit that applied, the commission rounded to the currency''s minor unit, and for refunds whether the reversal falls in the refund''s period.  status is ok, not_eligible, no_match, no_tier, bad_proration or inexact (basis x rate has more than 16 decimal places: commission 0).';

-- Published rule versions: immutable, audited, one agreement at a time.
CREATE TABLE settle.rule_version (
	reseller_id    bigint      NOT NULL,
	agreement_id   bigint      NOT NULL,
	version        integer     NOT NULL CHECK (version > 0),
	effective_from date        NOT NULL,
	effective_to   date        NOT NULL DEFAULT 'infinity',
	rule           settle.rule NOT NULL,
	content_hash   bytea       NOT NULL CHECK (octet_length(content_hash) = 32),
	published_by   text        NOT NULL DEFAULT session_user,
	published_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
	reason         text        NOT NULL CHECK (reason <> ''),
	PRIMARY KEY (reseller_id, agreement_id, version),
	FOREIGN KEY (reseller_id, agreement_id) REFERENCES settle.agreement,
	CHECK (effective_from < effective_to),
	EXCLUDE USING gist (reseller_id WITH =, agreement_id WITH =,
		pg_catalog.daterange(effective_from, effective_to) WITH &&)
);
COMMENT ON TABLE settle.rule_version IS
	'Published commission rule versions of an agreement, in force over [effective_from, effective_to).  Immutable: a correction is a new version; versions of one agreement never overlap.';
COMMENT ON COLUMN settle.rule_version.version IS 'Version number within the agreement: 1, 2, 3, ... in publication order.';
COMMENT ON COLUMN settle.rule_version.rule IS 'The rule set, as published (canonical).';
COMMENT ON COLUMN settle.rule_version.content_hash IS 'SHA-256 of the canonical rule text (settle.rule_content_hash).';
COMMENT ON COLUMN settle.rule_version.published_by IS 'The session user who published the version.';
COMMENT ON COLUMN settle.rule_version.reason IS 'Why the version was published; also recorded in the audit trail.';

CREATE FUNCTION settle.publish_rule(reseller text, agreement_id bigint, effective_from date,
	rule settle.rule, reason text, effective_to date DEFAULT 'infinity')
	RETURNS settle.rule_version
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	SET settle.reason TO '' AS $$
DECLARE
	rid      bigint := settle.reseller_id(reseller);
	ag       settle.agreement;
	problems text[];
	unknown  text[];
	other    settle.rule_version;
	result   settle.rule_version;
BEGIN
	IF reason IS NULL OR btrim(reason) = '' THEN
		RAISE EXCEPTION 'a reason is required to publish a rule version' USING ERRCODE = 'invalid_parameter_value',
			DETAIL = 'Every published rule version records why it was published.';
	END IF;
	IF rule IS NULL OR effective_from IS NULL OR effective_to IS NULL OR agreement_id IS NULL THEN
		RAISE EXCEPTION 'rule, agreement_id, effective_from and effective_to must not be null'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO ag FROM settle.agreement a
	 WHERE a.reseller_id = rid AND a.agreement_id = publish_rule.agreement_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown agreement % of reseller "%"', agreement_id, reseller
			USING ERRCODE = 'foreign_key_violation';
	END IF;
	IF effective_from >= effective_to THEN
		RAISE EXCEPTION 'effective_from % is not before effective_to %', effective_from, effective_to
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF effective_from < ag.effective_from OR effective_to > ag.effective_to THEN
		RAISE EXCEPTION 'rule version [%, %) lies outside agreement % [%, %)', effective_from, effective_to,
			agreement_id, ag.effective_from, ag.effective_to
			USING ERRCODE = 'invalid_parameter_value',
			      DETAIL = 'A rule version can only be in force while its agreement is.';
	END IF;

	-- coverage checks in C: tiers, caps vs floors, ambiguous clauses
	problems := settle.rule_problems(rule);
	IF cardinality(problems) > 0 THEN
		RAISE EXCEPTION 'rule refused: %', problems[1] USING ERRCODE = 'invalid_parameter_value',
			DETAIL = pg_catalog.format('%s problem(s): %s.', cardinality(problems), array_to_string(problems, '; ')),
			HINT = 'Fix the rule and publish it again; nothing was published.';
	END IF;

	-- catalogue checks
	IF NOT EXISTS (SELECT 1 FROM settle.currency c WHERE c.currency_code = settle.rule_currency(rule)) THEN
		RAISE EXCEPTION 'rule refused: unknown currency "%"', settle.rule_currency(rule)
			USING ERRCODE = 'foreign_key_violation',
			      DETAIL = 'Currencies are ISO 4217 codes listed in settle.currency.';
	END IF;
	IF (SELECT c.minor_unit FROM settle.currency c WHERE c.currency_code = settle.rule_currency(rule))
	   IS DISTINCT FROM settle.rule_minor_unit(rule) THEN
		RAISE EXCEPTION 'rule refused: currency % has minor unit % in settle.currency but % in the rule engine',
			settle.rule_currency(rule),
			(SELECT c.minor_unit FROM settle.currency c WHERE c.currency_code = settle.rule_currency(rule)),
			settle.rule_minor_unit(rule)
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT array_agg(c ORDER BY c) INTO unknown
	  FROM unnest(settle.rule_categories(rule)) AS c
	 WHERE NOT EXISTS (SELECT 1 FROM settle.product_category pc WHERE pc.category = c);
	IF unknown IS NOT NULL THEN
		RAISE EXCEPTION 'rule refused: unknown product category "%"', unknown[1]
			USING ERRCODE = 'foreign_key_violation',
			      DETAIL = pg_catalog.format('Unknown categories: %s.  Categories are listed in settle.product_category.',
			                                 array_to_string(unknown, ', '));
	END IF;

	-- consistency with the agreement
	IF settle.rule_currency(rule) <> ag.settlement_currency THEN
		RAISE EXCEPTION 'rule refused: rule currency % differs from the agreement''s settlement currency %',
			settle.rule_currency(rule), ag.settlement_currency USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF settle.rule_rounding(rule) <> ag.rounding_mode THEN
		RAISE EXCEPTION 'rule refused: rule rounding % differs from the agreement''s rounding mode %',
			settle.rule_rounding(rule), ag.rounding_mode USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF settle.rule_refund_window_days(rule) <> ag.refund_window_days THEN
		RAISE EXCEPTION 'rule refused: rule refund window of % days differs from the agreement''s % days',
			settle.rule_refund_window_days(rule), ag.refund_window_days USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF settle.rule_minimum_payout(rule) <> ag.minimum_payout THEN
		RAISE EXCEPTION 'rule refused: rule minimum payout % differs from the agreement''s %',
			settle.rule_minimum_payout(rule), ag.minimum_payout USING ERRCODE = 'invalid_parameter_value';
	END IF;

	-- one version in force at a time; serialise publishers of one agreement
	PERFORM 1 FROM settle.agreement a
	  WHERE a.reseller_id = rid AND a.agreement_id = publish_rule.agreement_id FOR UPDATE;
	SELECT * INTO other FROM settle.rule_version v
	 WHERE v.reseller_id = rid AND v.agreement_id = publish_rule.agreement_id
	   AND daterange(v.effective_from, v.effective_to) && daterange(publish_rule.effective_from, publish_rule.effective_to)
	 ORDER BY v.version LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'rule version [%, %) overlaps version % [%, %) of agreement %',
			effective_from, effective_to, other.version, other.effective_from, other.effective_to, agreement_id
			USING ERRCODE = 'exclusion_violation',
			      HINT = 'Published versions are immutable: publish the new version from the day after the old one ends, or for a range no version covers.';
	END IF;

	PERFORM pg_catalog.set_config('settle.reason', reason, true);
	INSERT INTO settle.rule_version (reseller_id, agreement_id, version, effective_from, effective_to,
		rule, content_hash, reason)
	VALUES (rid, publish_rule.agreement_id,
		(SELECT coalesce(max(v.version), 0) + 1 FROM settle.rule_version v
		  WHERE v.reseller_id = rid AND v.agreement_id = publish_rule.agreement_id),
		effective_from, effective_to, rule, settle.rule_content_hash(rule), reason)
	RETURNING * INTO result;
	RETURN result;
END $$;
COMMENT ON FUNCTION settle.publish_rule(text, bigint, date, settle.rule, text, date) IS
	'Publishes an immutable rule version for an agreement over [effective_from, effective_to).  Refuses (22023) tier gaps or overlaps, caps below floors, ambiguous equally specific clauses, a currency, rounding, refund window or minimum payout that contradicts the agreement; (23503) unknown currencies and product categories; (23P01) ranges overlapping another version.  Records the publisher, the reason (audited) and the content hash.';

CREATE FUNCTION settle.rule_in_force(reseller_id bigint, agreement_id bigint, on_date date)
	RETURNS settle.rule_version
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	result settle.rule_version;
BEGIN
	SELECT * INTO result FROM settle.rule_version v
	 WHERE v.reseller_id = rule_in_force.reseller_id AND v.agreement_id = rule_in_force.agreement_id
	   AND v.effective_from <= on_date AND on_date < v.effective_to;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no rule version of agreement % of reseller % is in force on %',
			agreement_id, reseller_id, on_date
			USING ERRCODE = 'no_data_found',
			      HINT = 'Publish a rule version covering this date with settle.publish_rule().';
	END IF;
	RETURN result;
END $$;
COMMENT ON FUNCTION settle.rule_in_force(bigint, bigint, date) IS
	'The rule version of an agreement in force on a date; an error (P0002 no_data_found) when none is.';

CREATE FUNCTION settle.rule_minor_unit(rule settle.rule) RETURNS integer
	AS 'MODULE_PATHNAME', 'settle_rule_minor_unit' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.rule_minor_unit(settle.rule) IS
	'The ISO 4217 minor unit the rule engine rounds the rule''s currency to (JPY 0, USD 2, KWD 3).';

ALTER TABLE settle.rule_version ENABLE ROW LEVEL SECURITY;
CREATE POLICY staff_all ON settle.rule_version TO settle_admin, settle_operator,
	settle_analyst, settle_finance, settle_auditor USING (true);
COMMENT ON POLICY staff_all ON settle.rule_version IS 'Staff roles see every published rule version.';

-- Audited (a reason is required) and append-only, also under replication.
SELECT settle._audited('settle.rule_version', true);
SELECT settle._append_only('settle.rule_version');

COMMENT ON TRIGGER audit ON settle.rule_version IS 'Audit trail entry for every published version; settle.reason is required.';
COMMENT ON TRIGGER audit_truncate ON settle.rule_version IS 'Audit trail entry for a TRUNCATE attempt.';
COMMENT ON TRIGGER append_only ON settle.rule_version IS 'Published rule versions are never updated or deleted.';
COMMENT ON TRIGGER append_only_truncate ON settle.rule_version IS 'Published rule versions are never truncated.';

SELECT pg_catalog.pg_extension_config_dump('settle.rule_version', '');
