-- 02: input domains.  Every period and money parameter of the API has one of
-- these types, so one check (in C, src/domains.c) decides what a period or an
-- amount is for every function; a bad value fails with its own SQLSTATE
-- before the function runs, and nothing is written.

CREATE FUNCTION settle.check_period(period text) RETURNS boolean
	AS 'MODULE_PATHNAME', 'settle_check_period' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.check_period(text) IS
	'True for a period written YYYY-MM with a real month (year 0001-9999, month 01-12); otherwise an error 22007 naming the value.';

CREATE FUNCTION settle.check_amount(amount numeric, max_scale integer) RETURNS boolean
	AS 'MODULE_PATHNAME', 'settle_check_amount' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.check_amount(numeric, integer) IS
	'True for a finite amount below 10^14 in magnitude with at most max_scale significant decimal places; otherwise an error: 22003 for NaN, ±Infinity or out of range, 22023 for too many decimal places.';

CREATE DOMAIN settle.period AS text CHECK (settle.check_period(VALUE));
COMMENT ON DOMAIN settle.period IS 'A calendar month, YYYY-MM (22007 otherwise).';

CREATE DOMAIN settle.amount AS numeric CHECK (settle.check_amount(VALUE, 8));
COMMENT ON DOMAIN settle.amount IS
	'A money amount given to settle (adjustments, limits, FX rates, bill amounts): finite, below 10^14 in magnitude, at most 8 decimal places (22003 or 22023 otherwise).';

CREATE DOMAIN settle.exact_amount AS numeric CHECK (settle.check_amount(VALUE, 16));
COMMENT ON DOMAIN settle.exact_amount IS
	'A money amount settle computed (an unrounded commission, a delta): finite, below 10^14 in magnitude, at most 16 decimal places (22003 or 22023 otherwise).';

-- A cloud account id as the providers write them: AWS account ids (digits),
-- Azure subscription and billing-account resource ids
-- (/subscriptions/<guid>, /providers/Microsoft.Billing/billingAccounts/...),
-- GCP billing accounts (012345-6789AB-CDEF01) and project ids, OCI tenancy
-- OCIDs (ocid1.tenancy.oc1..<hash>) and Alibaba Cloud UIDs (digits).  The
-- check keeps out what no provider writes and what would break the places
-- the id is quoted in (blanks, commas, quotes, control characters).
CREATE DOMAIN settle.account_id AS text
	CHECK (pg_catalog.length(VALUE) <= 256 AND VALUE ~ '^[0-9A-Za-z/][0-9A-Za-z_.:/@+=-]*$');
COMMENT ON DOMAIN settle.account_id IS
	'A cloud account id of any provider (AWS, Azure, GCP, OCI, Alibaba Cloud): up to 256 characters of letters, digits and _ . : / @ + = -, starting with a letter, digit or "/" (23514 otherwise).';
