-- 60: reconciliation: the exact aggregates, provider totals
-- imported from files, settle.reconcile, its results, the BI views and the
-- explanation of one scope's delta.  The aggregates are C (src/recon_agg.c);
-- the checks are set-based SQL over them.

-- ---------------------------------------------------------------- aggregates

CREATE TYPE settle.money_total AS (
	currency   text,
	lines      bigint,
	total      numeric,
	mixed      boolean,
	currencies text[]
);
COMMENT ON TYPE settle.money_total IS
	'Result of settle.money_total(): the currency, the number of amounts, their exact total, whether they mix currencies (then currency and total are null) and the lowest and highest currency codes seen.';

CREATE FUNCTION settle.money_total_trans(internal, numeric, text) RETURNS internal
AS 'MODULE_PATHNAME', 'settle_money_total_trans' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION settle.money_total_combine(internal, internal) RETURNS internal
AS 'MODULE_PATHNAME', 'settle_money_total_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION settle.money_total_serial(internal) RETURNS bytea
AS 'MODULE_PATHNAME', 'settle_money_total_serial' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.money_total_deserial(bytea, internal) RETURNS internal
AS 'MODULE_PATHNAME', 'settle_money_total_deserial' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION settle.money_total_final(internal) RETURNS settle.money_total
AS 'MODULE_PATHNAME', 'settle_money_total_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION settle.money_total_trans(internal, numeric, text) IS 'Transition function of settle.money_total.';
COMMENT ON FUNCTION settle.money_total_combine(internal, internal) IS 'Combine function of settle.money_total (parallel aggregation).';
COMMENT ON FUNCTION settle.money_total_serial(internal) IS 'Serializes a settle.money_total state (32 bytes) for parallel workers.';
COMMENT ON FUNCTION settle.money_total_deserial(bytea, internal) IS 'Rebuilds a settle.money_total state; refuses malformed bytes (22P03).';
COMMENT ON FUNCTION settle.money_total_final(internal) IS 'Final function of settle.money_total.';
CREATE FUNCTION settle.money_total_check_state(state bytea) RETURNS boolean
AS 'MODULE_PATHNAME', 'settle_money_total_check_state' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.money_total_check_state(bytea) IS
	'Runs the checks of settle.money_total_deserial on serialized state bytes: true, or the error a parallel worker''s malformed state would raise.';

CREATE AGGREGATE settle.money_total(amount numeric, currency text) (
	SFUNC = settle.money_total_trans,
	STYPE = internal,
	SSPACE = 48,
	FINALFUNC = settle.money_total_final,
	COMBINEFUNC = settle.money_total_combine,
	SERIALFUNC = settle.money_total_serial,
	DESERIALFUNC = settle.money_total_deserial,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE settle.money_total(numeric, text) IS
	'Exact money total with line count and currency check: sums the non-null amounts as 128-bit integers (no rounding, no floating point) and returns (currency, lines, total, mixed, currencies).  Amounts in more than one currency, or without one, give mixed = true and no total.  Parallel safe.';

CREATE FUNCTION settle.line_fingerprint_trans(internal, text, numeric) RETURNS internal
AS 'MODULE_PATHNAME', 'settle_line_fingerprint_trans' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION settle.line_fingerprint_combine(internal, internal) RETURNS internal
AS 'MODULE_PATHNAME', 'settle_line_fingerprint_combine' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION settle.line_fingerprint_serial(internal) RETURNS bytea
AS 'MODULE_PATHNAME', 'settle_line_fingerprint_serial' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION settle.line_fingerprint_deserial(bytea, internal) RETURNS internal
AS 'MODULE_PATHNAME', 'settle_line_fingerprint_deserial' LANGUAGE C IMMUTABLE PARALLEL SAFE;
CREATE FUNCTION settle.line_fingerprint_final(internal) RETURNS bytea
AS 'MODULE_PATHNAME', 'settle_line_fingerprint_final' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION settle.line_fingerprint_trans(internal, text, numeric) IS 'Transition function of settle.line_fingerprint.';
COMMENT ON FUNCTION settle.line_fingerprint_combine(internal, internal) IS 'Combine function of settle.line_fingerprint (parallel aggregation).';
COMMENT ON FUNCTION settle.line_fingerprint_serial(internal) IS 'Serializes a settle.line_fingerprint state (25 bytes) for parallel workers.';
COMMENT ON FUNCTION settle.line_fingerprint_deserial(bytea, internal) IS 'Rebuilds a settle.line_fingerprint state; refuses malformed bytes (22P03).';
COMMENT ON FUNCTION settle.line_fingerprint_final(internal) IS 'Final function of settle.line_fingerprint.';
CREATE FUNCTION settle.line_fingerprint_check_state(state bytea) RETURNS boolean
AS 'MODULE_PATHNAME', 'settle_line_fingerprint_check_state' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.line_fingerprint_check_state(bytea) IS
	'Runs the checks of settle.line_fingerprint_deserial on serialized state bytes: true, or the error a parallel worker''s malformed state would raise.';

CREATE AGGREGATE settle.line_fingerprint(line_key text, amount numeric) (
	SFUNC = settle.line_fingerprint_trans,
	STYPE = internal,
	SSPACE = 24,
	FINALFUNC = settle.line_fingerprint_final,
	COMBINEFUNC = settle.line_fingerprint_combine,
	SERIALFUNC = settle.line_fingerprint_serial,
	DESERIALFUNC = settle.line_fingerprint_deserial,
	PARALLEL = SAFE
);
COMMENT ON AGGREGATE settle.line_fingerprint(text, numeric) IS
	'Order-independent fingerprint of a set of (line key, amount) pairs: 24 bytes = line count, wrapping sum and xor of settle.line_hash per pair (big-endian).  Equal sets give equal fingerprints whatever the row order or plan; amounts compare by value (1.5 = 1.50).  Parallel safe.';

CREATE FUNCTION settle.line_hash(line_key text, amount settle.exact_amount) RETURNS bigint
AS 'MODULE_PATHNAME', 'settle_line_hash' LANGUAGE C IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION settle.line_hash(text, settle.exact_amount) IS
	'The 64-bit hash settle.line_fingerprint adds for one (line key, amount) pair; finds the pair behind a one-line fingerprint difference.';

CREATE FUNCTION settle.fingerprint_diff(a bytea, b bytea,
	OUT lines_delta bigint, OUT hash_delta bigint, OUT single boolean)
AS 'MODULE_PATHNAME', 'settle_fingerprint_diff' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.fingerprint_diff(bytea, bytea) IS
	'Compares two line fingerprints: lines_delta = lines of a minus lines of b; when the sets differ by exactly one pair, single is true and hash_delta is that pair''s settle.line_hash (on whichever side it is).';

-- ------------------------------------------------- provider totals from files

CREATE TABLE settle.provider_total_import (
	import_id          bigint      NOT NULL,
	source             text        NOT NULL CHECK (source ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$'),
	line_no            integer     NOT NULL,
	billing_cycle      text        NOT NULL CHECK (settle.check_period(billing_cycle)),
	billing_account_id text        NOT NULL,
	product_code       text        NOT NULL,
	currency           char(3)     NOT NULL REFERENCES settle.currency,
	amount             numeric     NOT NULL,
	imported_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	imported_by        name        NOT NULL DEFAULT session_user,
	PRIMARY KEY (import_id, line_no),
	UNIQUE (import_id, billing_cycle, billing_account_id, product_code, currency)
);
CREATE SEQUENCE settle.provider_total_import_seq;
CREATE INDEX provider_total_import_cycle_idx ON settle.provider_total_import (source, billing_cycle, import_id);
COMMENT ON TABLE settle.provider_total_import IS
	'Provider totals imported from a CSV file or an accounting export (settle.import_provider_totals): one row per billing cycle, billing account, product and currency.  Each import is whole; the latest import of a source and cycle is in force.  Append-only.';
COMMENT ON COLUMN settle.provider_total_import.amount IS 'The provider''s payable total (pretax, after discounts and coupons) of the scope.';
COMMENT ON SEQUENCE settle.provider_total_import_seq IS 'Numbers provider total imports.';

CREATE FUNCTION settle.import_provider_totals(source text, csv text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	lines text[];
	hdr text;
	f text[];
	i int;
	n int := 0;
	id bigint;
	amt numeric;
	dup record;
	rows_cycle text[] := '{}';
	rows_acct text[] := '{}';
	rows_prod text[] := '{}';
	rows_ccy text[] := '{}';
	rows_amt numeric[] := '{}';
	rows_no int[] := '{}';
BEGIN
	IF source IS NULL OR source !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$' THEN
		RAISE EXCEPTION 'invalid provider total source "%"', source USING ERRCODE = 'invalid_parameter_value',
			DETAIL = 'A source name is letters, digits, ".", "_", ":" and "-".';
	END IF;
	lines := regexp_split_to_array(coalesce(csv, ''), E'\r?\n');
	hdr := lower(regexp_replace(lines[1], '[\s"]', '', 'g'));
	IF hdr IS DISTINCT FROM 'billing_cycle,billing_account_id,product_code,currency,amount' THEN
		RAISE EXCEPTION 'provider totals file has an unexpected header' USING ERRCODE = 'bad_copy_file_format',
			DETAIL = format('The first line is "%s".', coalesce(lines[1], '')),
			HINT = 'The header must be: billing_cycle,billing_account_id,product_code,currency,amount';
	END IF;
	FOR i IN 2 .. coalesce(array_length(lines, 1), 1) LOOP
		CONTINUE WHEN btrim(lines[i]) = '';
		f := string_to_array(lines[i], ',');
		IF array_length(f, 1) <> 5 THEN
			RAISE EXCEPTION 'line % of the provider totals file has % fields, not 5', i, array_length(f, 1)
				USING ERRCODE = 'bad_copy_file_format', DETAIL = format('The line is "%s".', lines[i]);
		END IF;
		SELECT array_agg(btrim(x, E' \t"') ORDER BY o) INTO f FROM unnest(f) WITH ORDINALITY AS u(x, o);
		BEGIN
			PERFORM settle.check_period(f[1]);
		EXCEPTION WHEN invalid_datetime_format THEN
			RAISE EXCEPTION 'line %: invalid billing cycle "%"', i, f[1] USING ERRCODE = 'invalid_datetime_format',
				HINT = 'A billing cycle is written YYYY-MM.';
		END;
		IF f[2] = '' OR f[3] = '' THEN
			RAISE EXCEPTION 'line %: billing account and product code are required', i
				USING ERRCODE = 'not_null_violation';
		END IF;
		IF NOT EXISTS (SELECT 1 FROM settle.currency c WHERE c.currency_code = f[4]) THEN
			RAISE EXCEPTION 'line %: unknown currency "%"', i, f[4] USING ERRCODE = 'foreign_key_violation',
				DETAIL = 'Currencies are ISO 4217 codes listed in settle.currency.';
		END IF;
		IF f[5] !~ '^-?[0-9]{1,14}(\.[0-9]{1,8})?$' THEN
			RAISE EXCEPTION 'line %: malformed amount "%"', i, f[5] USING ERRCODE = 'invalid_text_representation',
				DETAIL = 'An amount is a plain decimal number with at most 14 integer digits and 8 decimal places, e.g. -1234.56.';
		END IF;
		amt := f[5]::numeric;
		rows_cycle := array_append(rows_cycle, f[1]); rows_acct := array_append(rows_acct, f[2]);
		rows_prod := array_append(rows_prod, lower(f[3])); rows_ccy := array_append(rows_ccy, f[4]);
		rows_amt := array_append(rows_amt, amt); rows_no := array_append(rows_no, i);
		n := n + 1;
	END LOOP;
	IF n = 0 THEN
		RAISE EXCEPTION 'provider totals file has no rows' USING ERRCODE = 'no_data_found';
	END IF;
	-- the first line that repeats a scope
	SELECT d.cy, d.ac, d.pr, d.cc, d.nos[1] AS first, d.nos[2] AS second INTO dup
	  FROM (SELECT u.cy, u.ac, u.pr, u.cc, array_agg(u.no ORDER BY u.no) AS nos
	          FROM unnest(rows_no, rows_cycle, rows_acct, rows_prod, rows_ccy) AS u(no, cy, ac, pr, cc)
	         GROUP BY u.cy, u.ac, u.pr, u.cc HAVING count(*) > 1) d
	 ORDER BY d.nos[2] LIMIT 1;
	IF dup.second IS NOT NULL THEN
		RAISE EXCEPTION 'line %: duplicated scope %', dup.second, concat_ws('/', dup.cy, dup.ac, dup.pr, dup.cc)
			USING ERRCODE = 'unique_violation',
			DETAIL = format('Line %s already gave the total of billing cycle %s, account %s, product %s, currency %s.',
			                dup.first, dup.cy, dup.ac, dup.pr, dup.cc);
	END IF;
	id := nextval('settle.provider_total_import_seq');
	INSERT INTO settle.provider_total_import (import_id, source, line_no, billing_cycle, billing_account_id,
		product_code, currency, amount)
	SELECT id, import_provider_totals.source, u.no, u.cy, u.ac, u.pr, u.cc, u.am
	  FROM unnest(rows_no, rows_cycle, rows_acct, rows_prod, rows_ccy, rows_amt) AS u(no, cy, ac, pr, cc, am);
	RETURN id;
END $$;
COMMENT ON FUNCTION settle.import_provider_totals(text, text) IS
	'Imports provider totals from CSV text (header billing_cycle,billing_account_id,product_code,currency,amount) under a source name and returns the import id.  All or nothing: an unknown currency (23503), a duplicated scope (23505), a malformed amount (22P02), a bad cycle (22007) or a malformed line (22P04) refuses the whole file.';

CREATE VIEW settle.provider_side AS
	SELECT 'connector:' || c.name AS source, t.billing_cycle, t.billing_account_id,
	       lower(t.product_code) AS product_code, t.currency::text AS currency,
	       sum(t.pretax_amount) AS amount, count(*) AS provider_rows, max(p.received_at) AS taken_at
	  FROM settle.provider_total_current t
	  JOIN settle.connector c ON c.connector_id = t.connector_id
	  JOIN settle.raw_page p ON p.raw_page_id = t.raw_page_id
	 WHERE t.billing_account_id IS NOT NULL AND t.product_code IS NOT NULL AND t.currency IS NOT NULL
	 GROUP BY c.name, t.billing_cycle, t.billing_account_id, lower(t.product_code), t.currency
	UNION ALL
	SELECT 'import:' || i.source, i.billing_cycle, i.billing_account_id, i.product_code, i.currency::text,
	       i.amount, 1, i.imported_at
	  FROM settle.provider_total_import i
	 WHERE i.import_id = (SELECT max(j.import_id) FROM settle.provider_total_import j
	                       WHERE j.source = i.source AND j.billing_cycle = i.billing_cycle);
COMMENT ON VIEW settle.provider_side IS
	'The provider''s totals in force per source, billing cycle, billing account, product and currency: the latest QueryBillOverview snapshot of each connector (pretax amounts of all its rows for the scope) and the latest import of each file source.  taken_at is when the totals were taken.';

-- ------------------------------------------------------------------- settings

CREATE TABLE settle.recon_default (
	only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	tolerance_abs numeric NOT NULL DEFAULT 0.01 CHECK (tolerance_abs >= 0),
	tolerance_rel numeric NOT NULL DEFAULT 0 CHECK (tolerance_rel >= 0 AND tolerance_rel < 1)
);
INSERT INTO settle.recon_default DEFAULT VALUES;
COMMENT ON TABLE settle.recon_default IS
	'Reconciliation tolerances for scopes without an agreement in force (unmapped accounts, reseller 0).  One row; changes are audited and need settle.reason.';

-- -------------------------------------------------------------------- results

CREATE TABLE settle.recon_result (
	period             text        NOT NULL CHECK (settle.check_period(period)),
	check_name         text        NOT NULL CHECK (check_name IN ('provider_total', 'line_identity',
	                       'duplicate', 'gap', 'currency', 'statement', 'refund_rate', 'settled_lines')),
	scope_key          text        NOT NULL,
	reseller_id        bigint      NOT NULL,
	billing_account_id text,
	product_code       text,
	currency           text,
	source             text,
	lines              bigint      NOT NULL DEFAULT 0,
	lines_total        numeric,
	other_total        numeric,
	delta              numeric,
	tolerance          numeric,
	status             text        NOT NULL CHECK (status IN ('matched', 'within_tolerance', 'mismatched', 'missing')),
	missing_side       text        CHECK (missing_side IN ('lines', 'provider', 'statement', 'lineage')),
	causes             text[]      NOT NULL DEFAULT '{}',
	fingerprint        bytea,
	detail             text,
	exception_id       bigint,
	reconciled_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
	PRIMARY KEY (period, check_name, scope_key)
);
CREATE INDEX recon_result_reseller_idx ON settle.recon_result (reseller_id, period);
COMMENT ON TABLE settle.recon_result IS
	'Results of the last settle.reconcile of each period, one row per check and scope (re-running replaces the period''s rows).  Read it through settle.reconciliation_summary.';

CREATE TABLE settle.recon_delta_line (
	period      text    NOT NULL CHECK (settle.check_period(period)),
	check_name  text    NOT NULL,
	scope_key   text    NOT NULL,
	seq         integer NOT NULL,
	cause       text    NOT NULL CHECK (cause IN ('rounding', 'fx', 'late_revision', 'unmatched', 'duplicate', 'refund')),
	line_key    text,
	revision    integer,
	day         date,
	amount      numeric,
	detail      text    NOT NULL,
	PRIMARY KEY (period, check_name, scope_key, seq),
	FOREIGN KEY (period, check_name, scope_key) REFERENCES settle.recon_result ON DELETE CASCADE
);
COMMENT ON TABLE settle.recon_delta_line IS
	'The line keys behind each non-matching result, classified by cause, with the part of the delta each explains.  Read it through settle.reconciliation_delta.';

-- ----------------------------------------------------------------- reconcile

CREATE FUNCTION settle.recon_amount(amount settle.exact_amount, minor_unit integer) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT round($1, greatest(scale(trim_scale($1)), $2))
$$;
COMMENT ON FUNCTION settle.recon_amount(settle.exact_amount, integer) IS
	'An exact amount shown with the currency''s minor unit, or more decimals when it has them (no rounding away of digits).';

-- tolerance of a reseller's scope in a period: its agreement, else the default
CREATE FUNCTION settle.recon_tolerance(reseller_id bigint, period_start date,
	OUT tolerance_abs numeric, OUT tolerance_rel numeric)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT coalesce(a.tolerance_abs, d.tolerance_abs), coalesce(a.tolerance_rel, d.tolerance_rel)
	  FROM settle.recon_default d
	  LEFT JOIN settle.agreement a ON a.reseller_id = $1 AND a.effective_from <= $2 AND $2 < a.effective_to
$$;
COMMENT ON FUNCTION settle.recon_tolerance(bigint, date) IS
	'Reconciliation tolerances (absolute, relative) of a reseller''s scopes in the period starting on period_start: the agreement in force, else settle.recon_default.';

CREATE FUNCTION settle.recon_status(delta settle.exact_amount, reference settle.exact_amount, tolerance_abs settle.exact_amount, tolerance_rel settle.exact_amount)
	RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT CASE WHEN $1 = 0 THEN 'matched'
	            WHEN abs($1) <= greatest($3, $4 * abs(coalesce($2, 0))) THEN 'within_tolerance'
	            ELSE 'mismatched' END
$$;
COMMENT ON FUNCTION settle.recon_status(settle.exact_amount, settle.exact_amount, settle.exact_amount, settle.exact_amount) IS
	'matched when the delta is zero; within_tolerance when |delta| <= max(tolerance_abs, tolerance_rel x |reference|); mismatched otherwise.';

CREATE FUNCTION settle.reconcile(period settle.period)
	RETURNS TABLE (check_name text, status text, scopes bigint, exceptions bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	p_start date;
	p_end date;
	p_last date;
	sc record;
	remainder numeric;
	unit numeric;
	n int;
	xid bigint;
BEGIN
	IF period IS NULL THEN
		RAISE EXCEPTION 'a period is required' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'A period is a month written YYYY-MM, e.g. 2026-10.';
	END IF;
	p_start := to_date(period, 'YYYY-MM');
	p_end := (p_start + interval '1 month')::date;
	p_last := p_end - 1;
	-- one reconciliation of a period at a time
	PERFORM pg_advisory_xact_lock(hashtext('settle.reconcile'), hashtext(period));
	DELETE FROM settle.recon_result r WHERE r.period = reconcile.period;

	IF to_regclass('pg_temp.recon_line') IS NOT NULL THEN
		DROP TABLE pg_temp.recon_line, pg_temp.recon_prov, pg_temp.recon_assign, pg_temp.recon_refund;
	END IF;
	-- the current revision of every bill line of the billing cycle
	CREATE TEMP TABLE recon_line ON COMMIT DROP AS
		SELECT b.reseller_id, b.line_key, b.revision, b.customer_id, b.billing_account_id,
		       lower(b.product_code) AS product_code, b.billing_currency::text AS currency,
		       b.billed_cost, b.list_cost, b.discount, b.coupon_deduction, b.source_record_id,
		       (b.charge_period_start AT TIME ZONE 'UTC')::date AS day, b.ingested_at, b.source_item, b.original_line_key,
		       coalesce(c.minor_unit, 2) AS minor_unit
		  FROM settle.bill_line_current b
		  LEFT JOIN settle.currency c ON c.currency_code = b.billing_currency
		 WHERE b.billing_period_start >= p_start AND b.billing_period_start < p_end;
	CREATE TEMP TABLE recon_prov ON COMMIT DROP AS
		SELECT s.* FROM settle.provider_side s WHERE s.billing_cycle = reconcile.period;
	CREATE INDEX ON recon_line (billing_account_id, product_code, currency);
	CREATE INDEX ON recon_line (line_key);
	CREATE INDEX ON recon_line (source_record_id) WHERE source_record_id IS NOT NULL;
	ANALYZE recon_line;
	ANALYZE recon_prov;

	-- Lines go to the provider scope of their own currency; a line in another
	-- currency than the provider's only one for its account and product is
	-- converted at the recorded month-end FX rate (cause fx).
	CREATE TEMP TABLE recon_assign ON COMMIT DROP AS
		SELECT p.source, p.billing_account_id, p.product_code, p.currency AS scope_currency,
		       l.line_key, l.revision, l.currency, l.billed_cost AS amount, NULL::numeric AS fx_rate, false AS converted
		  FROM recon_prov p JOIN recon_line l
		    ON l.billing_account_id = p.billing_account_id AND l.product_code = p.product_code AND l.currency = p.currency;
	-- lines in another currency than the provider's only one for their account and product
	INSERT INTO recon_assign
	WITH single AS (
		SELECT q.source, q.billing_account_id, q.product_code, min(q.currency) AS currency
		  FROM recon_prov q GROUP BY q.source, q.billing_account_id, q.product_code HAVING count(*) = 1
	)
	SELECT p.source, p.billing_account_id, p.product_code, p.currency, l.line_key, l.revision, l.currency,
	       round(l.billed_cost * fx.rate, 8), fx.rate, true
	  FROM single p JOIN recon_line l
	    ON l.billing_account_id = p.billing_account_id AND l.product_code = p.product_code AND l.currency <> p.currency
	  LEFT JOIN LATERAL (
		SELECT f.rate FROM settle.fx_rate_current f
		 WHERE f.base_currency = l.currency AND f.quote_currency = p.currency AND f.rate_date = p_last
		 ORDER BY f.source COLLATE "C" LIMIT 1) fx ON true;
	CREATE INDEX ON recon_assign (source, billing_account_id, product_code, scope_currency);
	CREATE INDEX ON recon_assign (line_key);
	ANALYZE recon_assign;

	-- 1. provider totals: per source, billing account, product and currency
	INSERT INTO settle.recon_result AS r (period, check_name, scope_key, reseller_id, billing_account_id,
		product_code, currency, source, lines, lines_total, other_total, delta, tolerance, status, missing_side,
		fingerprint, detail)
	WITH side AS (
		SELECT a.source, a.billing_account_id, a.product_code, a.scope_currency,
		       settle.money_total(a.amount, a.scope_currency) AS mt,
		       settle.line_fingerprint(a.line_key, a.amount) AS fp,
		       count(*) FILTER (WHERE a.converted AND a.amount IS NULL) AS unconvertible
		  FROM recon_assign a
		 GROUP BY a.source, a.billing_account_id, a.product_code, a.scope_currency
	), orphan AS (	-- lines of a source's cycle the source has no total for
		SELECT s.source, l.billing_account_id, l.product_code, l.currency AS scope_currency,
		       settle.money_total(l.billed_cost, l.currency) AS mt,
		       settle.line_fingerprint(l.line_key, l.billed_cost) AS fp
		  FROM (SELECT DISTINCT q.source FROM recon_prov q) s CROSS JOIN recon_line l
		 WHERE l.billing_account_id IS NOT NULL AND l.product_code IS NOT NULL AND l.currency IS NOT NULL
		   AND NOT EXISTS (SELECT 1 FROM recon_assign a WHERE a.source = s.source AND a.line_key = l.line_key)
		 GROUP BY s.source, l.billing_account_id, l.product_code, l.currency
	), scopes AS (
		SELECT p.source, p.billing_account_id, p.product_code, p.currency, p.amount AS provider_amount,
		       (s.mt).lines AS lines, (s.mt).total AS lines_total, s.fp, s.unconvertible
		  FROM recon_prov p
		  LEFT JOIN side s ON s.source = p.source AND s.billing_account_id = p.billing_account_id
		                  AND s.product_code = p.product_code AND s.scope_currency = p.currency
		UNION ALL
		SELECT o.source, o.billing_account_id, o.product_code, o.scope_currency, NULL, (o.mt).lines, (o.mt).total, o.fp, 0
		  FROM orphan o
	), owner AS (
		SELECT sp.*, coalesce(
		         (SELECT max(l.reseller_id) FROM recon_line l WHERE l.billing_account_id = sp.billing_account_id),
		         (SELECT min(m.reseller_id) FROM settle.customer_account m WHERE m.account_id = sp.billing_account_id
		             AND m.valid_from <= p_start AND p_start < m.valid_to), 0) AS reseller_id
		  FROM scopes sp
	)
	SELECT reconcile.period, 'provider_total',
	       format('provider:%s/%s/%s/%s@%s', reconcile.period, o.billing_account_id, o.product_code, o.currency, o.source),
	       o.reseller_id, o.billing_account_id, o.product_code, o.currency, o.source,
	       coalesce(o.lines, 0), o.lines_total, o.provider_amount,
	       coalesce(o.lines_total, 0) - coalesce(o.provider_amount, 0),
	       greatest(t.tolerance_abs, t.tolerance_rel * abs(coalesce(o.provider_amount, o.lines_total, 0))),
	       CASE WHEN o.provider_amount IS NULL OR coalesce(o.lines, 0) = 0 THEN 'missing'
	            WHEN o.lines_total IS NULL OR o.unconvertible > 0 THEN 'mismatched'
	            ELSE settle.recon_status(o.lines_total - o.provider_amount, o.provider_amount, t.tolerance_abs, t.tolerance_rel) END,
	       CASE WHEN o.provider_amount IS NULL THEN 'provider' WHEN coalesce(o.lines, 0) = 0 THEN 'lines' END,
	       o.fp,
	       CASE WHEN o.provider_amount IS NULL THEN 'the provider has no total for these lines'
	            WHEN coalesce(o.lines, 0) = 0 THEN 'no bill lines for the provider''s total'
	            WHEN o.unconvertible > 0 THEN 'lines in another currency without an FX rate' END
	  FROM owner o, settle.recon_tolerance(o.reseller_id, p_start) t;

	-- 2. line identities: list - discount - coupons = billed, within the currency's rounding
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id, currency,
		lines, lines_total, other_total, delta, tolerance, status, detail)
	SELECT reconcile.period, 'line_identity', format('identity:%s/%s/%s', reconcile.period, x.billing_account_id, x.currency),
	       max(x.reseller_id), x.billing_account_id, x.currency, count(*),
	       sum(x.billed_cost), sum(x.list_cost - x.discount - x.coupon_deduction), sum(x.billed_cost - x.list_cost + x.discount + x.coupon_deduction),
	       max(x.unit),
	       CASE WHEN bool_and(abs(x.billed_cost - x.list_cost + x.discount + x.coupon_deduction) <= x.unit)
	            THEN 'within_tolerance' ELSE 'mismatched' END,
	       'bill lines whose list cost - discount - coupons differs from the billed cost'
	  FROM (SELECT l.*, trim_scale(power(10::numeric, -l.minor_unit)) AS unit FROM recon_line l) x
	 WHERE x.list_cost IS NOT NULL AND x.billed_cost IS NOT NULL
	   AND x.billed_cost <> x.list_cost - x.discount - x.coupon_deduction
	 GROUP BY x.billing_account_id, x.currency;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
	SELECT reconcile.period, 'line_identity', format('identity:%s/%s/%s', reconcile.period, l.billing_account_id, l.currency),
	       row_number() OVER (PARTITION BY l.billing_account_id, l.currency ORDER BY l.line_key COLLATE "C"),
	       CASE WHEN abs(d) <= trim_scale(power(10::numeric, -l.minor_unit)) THEN 'rounding' ELSE 'unmatched' END,
	       l.line_key, l.revision, l.day, d,
	       format('list %s - discount %s - coupons %s = %s, billed %s', l.list_cost, l.discount, l.coupon_deduction,
	              l.list_cost - l.discount - l.coupon_deduction, l.billed_cost)
	  FROM recon_line l, LATERAL (SELECT l.billed_cost - l.list_cost + l.discount + l.coupon_deduction AS d) dd
	 WHERE l.list_cost IS NOT NULL AND l.billed_cost IS NOT NULL AND d <> 0;

	-- 3. duplicates: one source record under several line keys (the first key is kept)
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id, currency,
		lines, lines_total, other_total, delta, tolerance, status, detail)
	SELECT reconcile.period, 'duplicate', format('duplicate:%s/%s/%s', reconcile.period, l.source_record_id, l.source_item),
	       max(l.reseller_id), min(l.billing_account_id), min(l.currency), count(*), sum(l.billed_cost),
	       (array_agg(l.billed_cost ORDER BY l.line_key COLLATE "C"))[1],
	       sum(l.billed_cost) - (array_agg(l.billed_cost ORDER BY l.line_key COLLATE "C"))[1], 0, 'mismatched',
	       format('source record %s ingested under %s line keys', l.source_record_id, count(*))
	  FROM recon_line l
	 WHERE l.source_record_id IS NOT NULL
	 GROUP BY l.source_record_id, l.source_item HAVING count(*) > 1;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
	SELECT reconcile.period, 'duplicate', format('duplicate:%s/%s/%s', reconcile.period, d.source_record_id, d.source_item),
	       d.rn - 1, 'duplicate', d.line_key, d.revision, d.day, d.billed_cost,
	       format('same source record %s as line %s', d.source_record_id, d.first_key)
	  FROM (SELECT l.*, row_number() OVER w AS rn, first_value(l.line_key) OVER w AS first_key,
	               count(*) OVER (PARTITION BY l.source_record_id, l.source_item) AS n
	          FROM recon_line l WHERE l.source_record_id IS NOT NULL
	        WINDOW w AS (PARTITION BY l.source_record_id, l.source_item ORDER BY l.line_key COLLATE "C")) d
	 WHERE d.n > 1 AND d.rn > 1;

	-- 4. gaps: a run of days without lines for an account, with lines on the
	-- day before and after, in an account with lines on at least half the days
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id,
		lines, status, missing_side, detail)
	SELECT reconcile.period, 'gap', format('gap:%s/%s', reconcile.period, g.billing_account_id),
	       g.reseller_id, g.billing_account_id, g.lines, 'missing', 'lines',
	       format('no lines on %s day(s) between days with lines', count(*))
	  FROM (SELECT a.billing_account_id, a.reseller_id, a.lines, d.day
	          FROM (SELECT l.billing_account_id, max(l.reseller_id) AS reseller_id, count(*) AS lines,
	                       min(l.day) AS first_day, max(l.day) AS last_day, count(DISTINCT l.day) AS days
	                  FROM recon_line l WHERE l.billing_account_id IS NOT NULL GROUP BY l.billing_account_id) a,
	               generate_series(a.first_day, a.last_day, interval '1 day') AS d(day)
	         WHERE a.days * 2 >= (p_end - p_start)
	           AND NOT EXISTS (SELECT 1 FROM recon_line l WHERE l.billing_account_id = a.billing_account_id AND l.day = d.day::date)) g
	 GROUP BY g.billing_account_id, g.reseller_id, g.lines;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, day, detail)
	SELECT reconcile.period, 'gap', r.scope_key,
	       row_number() OVER (PARTITION BY r.scope_key ORDER BY d.day), 'unmatched', NULL, d.day::date,
	       format('no line of account %s on %s; lines before: %s; after: %s', r.billing_account_id, d.day::date,
	              (SELECT string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") FROM recon_line l
	                WHERE l.billing_account_id = r.billing_account_id
	                  AND l.day = (SELECT max(m.day) FROM recon_line m WHERE m.billing_account_id = r.billing_account_id AND m.day < d.day::date)),
	              (SELECT string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") FROM recon_line l
	                WHERE l.billing_account_id = r.billing_account_id
	                  AND l.day = (SELECT min(m.day) FROM recon_line m WHERE m.billing_account_id = r.billing_account_id AND m.day > d.day::date)))
	  FROM settle.recon_result r,
	       generate_series((SELECT min(l.day) FROM recon_line l WHERE l.billing_account_id = r.billing_account_id),
	                       (SELECT max(l.day) FROM recon_line l WHERE l.billing_account_id = r.billing_account_id),
	                       interval '1 day') AS d(day)
	 WHERE r.period = reconcile.period AND r.check_name = 'gap'
	   AND NOT EXISTS (SELECT 1 FROM recon_line l WHERE l.billing_account_id = r.billing_account_id AND l.day = d.day::date);

	-- 5. currency consistency: one billing currency per account and cycle
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id, currency,
		lines, status, detail)
	SELECT reconcile.period, 'currency', format('currency:%s/%s', reconcile.period, c.billing_account_id),
	       c.reseller_id, c.billing_account_id, c.main_currency, (c.mt).lines, 'mismatched',
	       format('lines in %s currencies: %s', array_length((c.mt).currencies, 1), array_to_string((c.mt).currencies, ' .. '))
	  FROM (SELECT l.billing_account_id, max(l.reseller_id) AS reseller_id,
	               settle.money_total(l.billed_cost, l.currency) AS mt, mode() WITHIN GROUP (ORDER BY l.currency) AS main_currency
	          FROM recon_line l WHERE l.billing_account_id IS NOT NULL GROUP BY l.billing_account_id) c
	 WHERE (c.mt).mixed;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
	SELECT reconcile.period, 'currency', r.scope_key,
	       row_number() OVER (PARTITION BY r.scope_key ORDER BY l.line_key COLLATE "C"), 'fx', l.line_key, l.revision, l.day,
	       l.billed_cost, format('billed in %s; the account''s cycle is billed in %s', coalesce(l.currency, 'no currency'), r.currency)
	  FROM settle.recon_result r JOIN recon_line l ON l.billing_account_id = r.billing_account_id
	 WHERE r.period = reconcile.period AND r.check_name = 'currency' AND l.currency IS DISTINCT FROM r.currency;

	-- 6. conservation: the lines of each current run add up to its statement
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, currency, lines, lines_total,
		other_total, delta, tolerance, status, missing_side, detail)
	SELECT reconcile.period, 'statement', format('statement:%s/run:%s', reconcile.period, ru.run_id), ru.reseller_id,
	       st.currency, coalesce(sl.n, 0), coalesce(sl.total, 0), st.total, coalesce(sl.total, 0) - st.total, 0,
	       CASE WHEN st.run_id IS NULL THEN 'missing'
	            WHEN coalesce(sl.total, 0) = st.total AND coalesce(sl.n, 0) = st.lines AND st.lines = ru.lines_out
	             AND coalesce(sl.refunds, 0) = st.refunds AND coalesce(sl.corrections, 0) = st.corrections
	            THEN 'matched' ELSE 'mismatched' END,
	       CASE WHEN st.run_id IS NULL THEN 'statement' END,
	       format('%s lines add up to %s (refunds %s, corrections %s); the statement says %s lines, %s (refunds %s, corrections %s); the run wrote %s lines',
	              coalesce(sl.n, 0), coalesce(sl.total, 0), coalesce(sl.refunds, 0), coalesce(sl.corrections, 0),
	              st.lines, st.total, st.refunds, st.corrections, ru.lines_out)
	  FROM settle.run ru
	  LEFT JOIN settle.statement st ON st.reseller_id = ru.reseller_id AND st.run_id = ru.run_id
	  LEFT JOIN LATERAL (
		SELECT count(*) AS n, sum(l.rounded) AS total,
		       sum(l.rounded) FILTER (WHERE l.kind = 'r') AS refunds, sum(l.rounded) FILTER (WHERE l.kind = 'x') AS corrections
		  FROM settle.settlement_line l WHERE l.reseller_id = ru.reseller_id AND l.run_id = ru.run_id) sl ON true
	 WHERE ru.period = reconcile.period AND ru.status <> 'superseded';

	-- 7. refunds reverse exactly what their original earned: the original's rate.
	-- The lineage has no index by line key (only BRIN on run_id): the
	-- refunds and the charge lines of the runs they refer to are each read
	-- run by run, then matched in one hash join.
	CREATE TEMP TABLE recon_refund ON COMMIT DROP AS
	WITH refunds AS MATERIALIZED (
		SELECT ru.run_id, ru.reseller_id, st.currency, cu.minor_unit, l.line_key, l.revision, l.rate, l.basis,
		       l.unrounded, l.ref,
		       CASE WHEN l.ref LIKE 'run:%' THEN split_part(substr(l.ref, 5), '/', 1)::bigint ELSE ru.run_id END AS orig_run,
		       CASE WHEN l.ref LIKE 'run:%' THEN substr(l.ref, strpos(l.ref, '/') + 1) ELSE l.ref END AS orig_key
		  FROM settle.run ru
		  JOIN settle.statement st ON st.reseller_id = ru.reseller_id AND st.run_id = ru.run_id
		  JOIN settle.currency cu ON cu.currency_code = st.currency
		  JOIN settle.settlement_line l ON l.reseller_id = ru.reseller_id AND l.run_id = ru.run_id AND l.kind = 'r'
		 WHERE ru.period = reconcile.period AND ru.status <> 'superseded'
	), originals AS MATERIALIZED (
		SELECT s.reseller_id, s.run_id, s.line_key, s.rate
		  FROM settle.settlement_line s
		 WHERE s.kind = 'c' AND s.run_id IN (SELECT DISTINCT f.orig_run FROM refunds f)
	)
	SELECT f.*, o.rate AS orig_rate
	  FROM refunds f
	  LEFT JOIN originals o ON o.reseller_id = f.reseller_id AND o.run_id = f.orig_run AND o.line_key = f.orig_key;
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, currency, lines, lines_total,
		other_total, delta, tolerance, status, detail)
	SELECT reconcile.period, 'refund_rate', format('refunds:%s/run:%s', reconcile.period, f.run_id), f.reseller_id,
	       max(f.currency), count(*), sum(f.unrounded), sum(f.expected), sum(f.unrounded - f.expected), 0,
	       CASE WHEN bool_and(f.unrounded = f.expected AND f.rate IS NOT DISTINCT FROM f.orig_rate) THEN 'matched'
	            ELSE 'mismatched' END,
	       format('%s refund reversals checked against the rate their original earned', count(*))
	  FROM (SELECT r.*, coalesce(r.basis * r.orig_rate, r.unrounded) AS expected FROM recon_refund r) f
	 GROUP BY f.run_id, f.reseller_id;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, amount, detail)
	SELECT reconcile.period, 'refund_rate', format('refunds:%s/run:%s', reconcile.period, f.run_id),
	       row_number() OVER (PARTITION BY f.run_id ORDER BY f.line_key COLLATE "C"), 'refund', f.line_key, f.revision,
	       settle.recon_amount(f.unrounded - coalesce(f.basis * f.orig_rate, 0), f.minor_unit),
	       CASE WHEN f.orig_rate IS NULL THEN format('the original %s has no settled rate', f.ref)
	            ELSE format('reversed at %s, the original %s earned %s: %s x %s = %s, not %s', trim_scale(f.rate), f.ref,
	                        trim_scale(f.orig_rate), settle.recon_amount(f.basis, f.minor_unit), trim_scale(f.orig_rate),
	                        settle.recon_amount(f.basis * f.orig_rate, f.minor_unit),
	                        settle.recon_amount(f.unrounded, f.minor_unit)) END
	  FROM recon_refund f
	 WHERE f.orig_rate IS NULL OR f.rate IS DISTINCT FROM f.orig_rate OR f.unrounded <> f.basis * f.orig_rate;

	-- 8. every charge of a run's period is settled at its current revision:
	-- fingerprints per customer first, lines only where they differ
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, lines, lines_total, other_total,
		delta, tolerance, status, fingerprint, detail)
	WITH runs AS (
		SELECT ru.reseller_id, ru.run_id, a.date_basis
		  FROM settle.run ru JOIN settle.agreement a ON a.reseller_id = ru.reseller_id AND a.agreement_id = ru.agreement_id
		 WHERE ru.period = reconcile.period AND ru.status <> 'superseded'
	), billed AS (
		SELECT r.run_id, b.reseller_id, b.customer_id, settle.line_fingerprint(b.line_key, b.revision) AS fp, count(*) AS n
		  FROM runs r JOIN settle.bill_line_current b ON b.reseller_id = r.reseller_id
		 WHERE (CASE WHEN r.date_basis = 'invoice_period' THEN b.billing_period_start ELSE (b.charge_period_start AT TIME ZONE 'UTC')::date END)
		       >= p_start
		   AND (CASE WHEN r.date_basis = 'invoice_period' THEN b.billing_period_start ELSE (b.charge_period_start AT TIME ZONE 'UTC')::date END)
		       < p_end
		   AND b.original_line_key IS NULL AND b.source_item IS DISTINCT FROM 'Refund'
		 GROUP BY r.run_id, b.reseller_id, b.customer_id
	), settled AS (
		SELECT r.run_id, r.reseller_id, b.customer_id, settle.line_fingerprint(l.line_key, l.revision) AS fp, count(*) AS n
		  FROM runs r JOIN settle.settlement_line l ON l.reseller_id = r.reseller_id AND l.run_id = r.run_id AND l.kind = 'c'
		  LEFT JOIN settle.bill_line b ON b.reseller_id = l.reseller_id AND b.line_key = l.line_key AND b.revision = l.revision
		 GROUP BY r.run_id, r.reseller_id, b.customer_id
	)
	SELECT reconcile.period, 'settled_lines', format('settled:%s/run:%s/customer:%s', reconcile.period,
	           coalesce(x.run_id, y.run_id), coalesce(x.customer_id, y.customer_id)),
	       coalesce(x.reseller_id, y.reseller_id), coalesce(x.n, 0), coalesce(x.n, 0), coalesce(y.n, 0),
	       coalesce(x.n, 0) - coalesce(y.n, 0), 0,
	       CASE WHEN x.fp = y.fp THEN 'matched' WHEN y.fp IS NULL THEN 'missing' ELSE 'mismatched' END,
	       x.fp, 'bill lines of the period (current revisions) vs the run''s settlement lines'
	  FROM billed x FULL JOIN settled y ON x.run_id = y.run_id AND x.customer_id IS NOT DISTINCT FROM y.customer_id;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
	SELECT reconcile.period, 'settled_lines', x.scope_key,
	       row_number() OVER (PARTITION BY x.scope_key ORDER BY coalesce(x.b_key, x.l_key) COLLATE "C"),
	       CASE WHEN x.b_key IS NOT NULL AND x.l_key IS NOT NULL THEN 'late_revision' ELSE 'unmatched' END,
	       coalesce(x.b_key, x.l_key), coalesce(x.b_rev, x.l_rev), (x.charge_period_start AT TIME ZONE 'UTC')::date, x.billed_cost,
	       CASE WHEN x.l_key IS NULL THEN format('bill line revision %s is not settled in run %s', x.b_rev, x.run_id)
	            WHEN x.b_key IS NULL THEN format('settled in run %s but not a current bill line of the period', x.run_id)
	            ELSE format('run %s settled revision %s; the current revision is %s', x.run_id, x.l_rev, x.b_rev) END
	  FROM (
		WITH bad AS (
			SELECT r.scope_key, ru.run_id, ru.reseller_id, a.date_basis,
			       nullif(split_part(r.scope_key, '/customer:', 2), '')::bigint AS customer_id
			  FROM settle.recon_result r
			  JOIN settle.run ru ON ru.run_id = split_part(split_part(r.scope_key, '/run:', 2), '/', 1)::bigint
			  JOIN settle.agreement a ON a.reseller_id = ru.reseller_id AND a.agreement_id = ru.agreement_id
			 WHERE r.period = reconcile.period AND r.check_name = 'settled_lines' AND r.status <> 'matched'
		), cur AS (
			SELECT bad.scope_key, bad.run_id, x.line_key, x.revision, x.charge_period_start, x.billed_cost
			  FROM bad JOIN settle.bill_line_current x ON x.reseller_id = bad.reseller_id
			   AND x.customer_id IS NOT DISTINCT FROM bad.customer_id
			   AND (CASE WHEN bad.date_basis = 'invoice_period' THEN x.billing_period_start ELSE (x.charge_period_start AT TIME ZONE 'UTC')::date END) >= p_start
			   AND (CASE WHEN bad.date_basis = 'invoice_period' THEN x.billing_period_start ELSE (x.charge_period_start AT TIME ZONE 'UTC')::date END) < p_end
			   AND x.original_line_key IS NULL AND x.source_item IS DISTINCT FROM 'Refund'
		), done AS (
			SELECT bad.scope_key, bad.run_id, s.line_key, s.revision
			  FROM bad JOIN settle.settlement_line s ON s.reseller_id = bad.reseller_id AND s.run_id = bad.run_id AND s.kind = 'c'
			  LEFT JOIN settle.bill_line bb ON bb.reseller_id = s.reseller_id AND bb.line_key = s.line_key AND bb.revision = s.revision
			 WHERE bb.customer_id IS NOT DISTINCT FROM bad.customer_id
		)
		SELECT coalesce(b.scope_key, l.scope_key) AS scope_key, coalesce(b.run_id, l.run_id) AS run_id,
		       b.line_key AS b_key, b.revision AS b_rev, b.charge_period_start, b.billed_cost,
		       l.line_key AS l_key, l.revision AS l_rev
		  FROM cur b FULL JOIN done l ON l.scope_key = b.scope_key AND l.line_key = b.line_key
		 WHERE b.line_key IS NULL OR l.line_key IS NULL OR b.revision <> l.revision) x;

	-- Explanations of the provider scopes that do not match exactly.
	FOR sc IN
		SELECT r.*, p.taken_at, coalesce(cu.minor_unit, 2) AS minor_unit
		  FROM settle.recon_result r
		  LEFT JOIN recon_prov p ON p.source = r.source AND p.billing_account_id = r.billing_account_id
		                        AND p.product_code = r.product_code AND p.currency = r.currency
		  LEFT JOIN settle.currency cu ON cu.currency_code = r.currency
		 WHERE r.period = reconcile.period AND r.check_name = 'provider_total' AND r.status <> 'matched'
		 ORDER BY r.scope_key
	LOOP
		n := 0;
		unit := trim_scale(power(10::numeric, -sc.minor_unit));
		IF sc.missing_side = 'provider' THEN
			INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
			SELECT reconcile.period, 'provider_total', sc.scope_key,
			       row_number() OVER (ORDER BY l.line_key COLLATE "C"), 'unmatched', l.line_key, l.revision, l.day, l.billed_cost,
			       format('no provider total of %s for this line', sc.source)
			  FROM recon_line l
			 WHERE l.billing_account_id = sc.billing_account_id AND l.product_code = sc.product_code
			   AND l.currency = sc.currency
			   AND NOT EXISTS (SELECT 1 FROM recon_assign a WHERE a.source = sc.source AND a.line_key = l.line_key);
			CONTINUE;
		END IF;
		-- duplicates, late revisions, line-identity rounding, FX conversions
		INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
		SELECT reconcile.period, 'provider_total', sc.scope_key,
		       row_number() OVER (ORDER BY e.ord, e.line_key COLLATE "C"), e.cause, e.line_key, e.revision, e.day, e.amount, e.detail
		  FROM (
			SELECT 1 AS ord, 'duplicate' AS cause, d.line_key, d.revision, d.day, d.amount,
			       format('same source record %s as line %s', d.source_record_id, d.first_key) AS detail
			  FROM (SELECT l.line_key, l.revision, l.day, a.amount, l.source_record_id,
			               (SELECT min(m.line_key COLLATE "C") FROM recon_line m WHERE m.source_record_id = l.source_record_id
			                  AND m.source_item = l.source_item) AS first_key
			          FROM recon_assign a JOIN recon_line l ON l.line_key = a.line_key
			         WHERE a.source = sc.source AND a.billing_account_id = sc.billing_account_id
			           AND a.product_code = sc.product_code AND a.scope_currency = sc.currency
			           AND l.source_record_id IS NOT NULL) d
			 WHERE d.line_key <> d.first_key
			UNION ALL
			SELECT 2, 'late_revision', l.line_key, l.revision, l.day,
			       a.amount - coalesce(prev.billed_cost, 0),
			       CASE WHEN prev.revision IS NULL THEN format('line ingested at %s, after the provider total was taken at %s',
			                                                    l.ingested_at, sc.taken_at)
			            ELSE format('revision %s (%s) ingested at %s, after the provider total was taken at %s on revision %s (%s)',
			                        l.revision, l.billed_cost, l.ingested_at, sc.taken_at, prev.revision, prev.billed_cost) END
			  FROM recon_assign a JOIN recon_line l ON l.line_key = a.line_key
			  LEFT JOIN LATERAL (
				SELECT b.revision, b.billed_cost FROM settle.bill_line b
				 WHERE b.line_key = l.line_key AND b.ingested_at <= sc.taken_at
				 ORDER BY b.revision DESC LIMIT 1) prev ON true
			 WHERE a.source = sc.source AND a.billing_account_id = sc.billing_account_id
			   AND a.product_code = sc.product_code AND a.scope_currency = sc.currency
			   AND NOT a.converted AND l.ingested_at > sc.taken_at
			UNION ALL
			SELECT 3, 'rounding', l.line_key, l.revision, l.day, l.billed_cost - (l.list_cost - l.discount - l.coupon_deduction),
			       format('list %s - discount %s - coupons %s = %s, billed %s', l.list_cost, l.discount, l.coupon_deduction,
			              l.list_cost - l.discount - l.coupon_deduction, l.billed_cost)
			  FROM recon_assign a JOIN recon_line l ON l.line_key = a.line_key
			 WHERE a.source = sc.source AND a.billing_account_id = sc.billing_account_id
			   AND a.product_code = sc.product_code AND a.scope_currency = sc.currency AND NOT a.converted
			   AND l.list_cost IS NOT NULL AND l.billed_cost <> l.list_cost - l.discount - l.coupon_deduction
			   AND abs(l.billed_cost - (l.list_cost - l.discount - l.coupon_deduction)) <= unit
			UNION ALL
			SELECT 4, 'fx', l.line_key, l.revision, l.day, NULL,
			       CASE WHEN a.fx_rate IS NULL THEN format('%s %s: no %s/%s rate dated %s', l.billed_cost, l.currency, l.currency, sc.currency, p_last)
			            ELSE format('%s %s converted at the recorded %s/%s rate %s of %s = %s %s', l.billed_cost, l.currency,
			                        l.currency, sc.currency, a.fx_rate, p_last,
			                        settle.recon_amount(a.amount, sc.minor_unit), sc.currency) END
			  FROM recon_assign a JOIN recon_line l ON l.line_key = a.line_key
			 WHERE a.source = sc.source AND a.billing_account_id = sc.billing_account_id
			   AND a.product_code = sc.product_code AND a.scope_currency = sc.currency AND a.converted
		  ) e;
		GET DIAGNOSTICS n = ROW_COUNT;
		-- what the named lines do not explain: FX conversions, else missing lines (gaps), else rounding
		SELECT sc.delta - coalesce(sum(d.amount), 0) INTO remainder FROM settle.recon_delta_line d
		 WHERE d.period = reconcile.period AND d.check_name = 'provider_total' AND d.scope_key = sc.scope_key;
		IF remainder <> 0 THEN
			IF EXISTS (SELECT 1 FROM settle.recon_delta_line d WHERE d.period = reconcile.period
			            AND d.check_name = 'provider_total' AND d.scope_key = sc.scope_key AND d.cause = 'fx') THEN
				UPDATE settle.recon_delta_line d SET amount = remainder,
				       detail = d.detail || format('; the provider''s total differs by %s %s', remainder, sc.currency)
				 WHERE d.period = reconcile.period AND d.check_name = 'provider_total' AND d.scope_key = sc.scope_key
				   AND d.cause = 'fx'
				   AND d.seq = (SELECT min(e.seq) FROM settle.recon_delta_line e WHERE e.period = reconcile.period
				                 AND e.check_name = 'provider_total' AND e.scope_key = sc.scope_key AND e.cause = 'fx');
			ELSIF remainder < 0 AND EXISTS (SELECT 1 FROM recon_line l WHERE l.billing_account_id = sc.billing_account_id
			                                  AND l.product_code = sc.product_code) THEN
				-- the provider counted more: days without a line of this account and product
				INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, day, amount, detail)
				SELECT reconcile.period, 'provider_total', sc.scope_key, n + row_number() OVER (ORDER BY g.day),
				       'unmatched', NULL, g.day,
				       CASE WHEN row_number() OVER (ORDER BY g.day) = 1 THEN remainder END,
				       format('the provider counted %s %s more; no line of %s/%s on %s (lines before: %s; after: %s)',
				              -remainder, sc.currency, sc.billing_account_id, sc.product_code, g.day,
				              (SELECT string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") FROM recon_line l
				                WHERE l.billing_account_id = sc.billing_account_id AND l.product_code = sc.product_code
				                  AND l.day = g.day - 1),
				              (SELECT string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") FROM recon_line l
				                WHERE l.billing_account_id = sc.billing_account_id AND l.product_code = sc.product_code
				                  AND l.day = g.day + 1))
				  FROM (SELECT d::date AS day
				          FROM generate_series((SELECT min(l.day) FROM recon_line l WHERE l.billing_account_id = sc.billing_account_id AND l.product_code = sc.product_code),
				                               (SELECT max(l.day) FROM recon_line l WHERE l.billing_account_id = sc.billing_account_id AND l.product_code = sc.product_code),
				                               interval '1 day') d
				         WHERE NOT EXISTS (SELECT 1 FROM recon_line l WHERE l.billing_account_id = sc.billing_account_id
				                             AND l.product_code = sc.product_code AND l.day = d::date)) g;
				GET DIAGNOSTICS xid = ROW_COUNT;
				IF xid = 0 THEN
					INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, amount, detail)
					VALUES (reconcile.period, 'provider_total', sc.scope_key, n + 1, 'unmatched', remainder,
					        format('the provider counted %s %s more than the bill lines hold', -remainder, sc.currency));
				END IF;
			ELSIF abs(remainder) <= unit THEN
				INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, amount, detail)
				VALUES (reconcile.period, 'provider_total', sc.scope_key, n + 1, 'rounding', remainder,
				        format('%s %s not explained by any line: within one minor unit', remainder, sc.currency));
			ELSE
				INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, amount, detail)
				VALUES (reconcile.period, 'provider_total', sc.scope_key, n + 1, 'unmatched', remainder,
				        format('%s %s not explained by any line', remainder, sc.currency));
			END IF;
		END IF;
	END LOOP;

	-- the causes of each result
	UPDATE settle.recon_result r SET causes = c.causes
	  FROM (SELECT d.check_name, d.scope_key, array_agg(DISTINCT d.cause ORDER BY d.cause) AS causes
	          FROM settle.recon_delta_line d WHERE d.period = reconcile.period
	         GROUP BY d.check_name, d.scope_key) c
	 WHERE r.period = reconcile.period AND r.check_name = c.check_name AND r.scope_key = c.scope_key;

	-- beyond tolerance: one open exception per scope, refreshed on re-runs
	-- (settle.open_exception records "detected: reconciliation_delta" as the
	-- reason unless the caller set one)
	FOR sc IN
		SELECT r.* FROM settle.recon_result r
		 WHERE r.period = reconcile.period AND r.status IN ('mismatched', 'missing')
		 ORDER BY r.check_name, r.scope_key
	LOOP
		xid := settle.open_exception(sc.reseller_id, 'reconciliation_delta', sc.scope_key, reconcile.period,
			jsonb_build_object('check', sc.check_name,
				'line_keys', coalesce((SELECT jsonb_agg(DISTINCT d.line_key) FROM settle.recon_delta_line d
				                        WHERE d.period = reconcile.period AND d.check_name = sc.check_name
				                          AND d.scope_key = sc.scope_key AND d.line_key IS NOT NULL), '[]')),
			jsonb_build_object('status', sc.status, 'delta', sc.delta, 'tolerance', sc.tolerance,
				'lines_total', sc.lines_total, 'other_total', sc.other_total, 'causes', to_jsonb(sc.causes),
				'missing_side', sc.missing_side, 'detail', sc.detail),
			CASE WHEN sc.check_name = 'gap' THEN 'warning' ELSE 'error' END);
		UPDATE settle.recon_result r SET exception_id = xid
		 WHERE r.period = reconcile.period AND r.check_name = sc.check_name AND r.scope_key = sc.scope_key;
	END LOOP;

	RETURN QUERY
		SELECT r.check_name, r.status, count(*), count(r.exception_id)
		  FROM settle.recon_result r WHERE r.period = reconcile.period
		 GROUP BY r.check_name, r.status ORDER BY r.check_name, r.status;
END $$;
COMMENT ON FUNCTION settle.reconcile(settle.period) IS
	'Reconciles a period (YYYY-MM): provider totals vs current bill lines per source, billing account, product and currency; line identities; duplicates; gaps; currency consistency; statements vs their settlement lines; refund reversals vs their original''s rate; bill lines vs settled lines (by fingerprint).  Replaces the period''s results, names the lines behind every non-match by cause, opens (or refreshes) one reconciliation_delta exception per scope beyond tolerance, and returns counts per check and status.';

-- ---------------------------------------------------------------------- views

CREATE VIEW settle.reconciliation_summary AS
	SELECT r.period, r.check_name, r.scope_key, r.reseller_id, rs.code AS reseller,
	       r.billing_account_id, r.product_code, r.currency, r.source, r.status, r.missing_side,
	       r.lines, r.lines_total, r.other_total, r.delta, r.tolerance, r.causes,
	       (SELECT count(*) FROM settle.recon_delta_line d
	         WHERE d.period = r.period AND d.check_name = r.check_name AND d.scope_key = r.scope_key) AS delta_lines,
	       r.fingerprint, r.detail, r.exception_id, e.state AS exception_state, r.reconciled_at
	  FROM settle.recon_result r
	  LEFT JOIN settle.reseller rs ON rs.reseller_id = r.reseller_id
	  LEFT JOIN settle.exception e ON e.reseller_id = r.reseller_id AND e.exception_id = r.exception_id;
COMMENT ON VIEW settle.reconciliation_summary IS
	'Stable view for BI tools: the last reconciliation of every period, one row per check and scope, with its status (matched / within_tolerance / mismatched / missing), both sides, the delta, the tolerance, the causes found and the exception it opened.';
COMMENT ON COLUMN settle.reconciliation_summary.check_name IS 'provider_total, line_identity, duplicate, gap, currency, statement, refund_rate or settled_lines.';
COMMENT ON COLUMN settle.reconciliation_summary.scope_key IS 'What was compared, e.g. provider:2026-10/<account>/<product>/<currency>@<source>; the exception''s scope_key.';
COMMENT ON COLUMN settle.reconciliation_summary.status IS 'matched (delta 0), within_tolerance, mismatched (beyond tolerance) or missing (one side absent: see missing_side).';
COMMENT ON COLUMN settle.reconciliation_summary.missing_side IS 'For missing: which side has nothing (lines, provider, statement, lineage).';
COMMENT ON COLUMN settle.reconciliation_summary.lines IS 'Bill lines (or settlement lines) on our side of the scope.';
COMMENT ON COLUMN settle.reconciliation_summary.lines_total IS 'Our side''s exact total, in the scope currency (lines in another currency converted at the recorded FX rate).';
COMMENT ON COLUMN settle.reconciliation_summary.other_total IS 'The other side: the provider''s total, the statement total, the expected refund reversal, the settled line count.';
COMMENT ON COLUMN settle.reconciliation_summary.delta IS 'lines_total - other_total.';
COMMENT ON COLUMN settle.reconciliation_summary.tolerance IS 'The absolute tolerance that applied: max(tolerance_abs, tolerance_rel x |other_total|) of the agreement in force (settle.recon_default for unmapped scopes).';
COMMENT ON COLUMN settle.reconciliation_summary.causes IS 'Distinct causes of the explaining lines: rounding, fx, late_revision, unmatched, duplicate, refund.';
COMMENT ON COLUMN settle.reconciliation_summary.delta_lines IS 'Rows in settle.reconciliation_delta for this scope.';
COMMENT ON COLUMN settle.reconciliation_summary.fingerprint IS 'settle.line_fingerprint of our side''s (line key, amount) pairs: unchanged between runs when the lines did not change.';
COMMENT ON COLUMN settle.reconciliation_summary.exception_id IS 'The reconciliation_delta exception opened or refreshed for this scope (mismatched and missing only).';

CREATE VIEW settle.reconciliation_delta AS
	SELECT d.period, d.check_name, d.scope_key, r.reseller_id, r.billing_account_id, r.product_code, r.currency,
	       r.status, d.seq, d.cause, d.line_key, d.revision, d.day, d.amount, d.detail
	  FROM settle.recon_delta_line d
	  JOIN settle.recon_result r ON r.period = d.period AND r.check_name = d.check_name AND r.scope_key = d.scope_key;
COMMENT ON VIEW settle.reconciliation_delta IS
	'Stable view for BI tools: for every result that is not an exact match, the line keys that explain it, one row each, classified by cause (rounding, fx, late_revision, unmatched, duplicate, refund), with the part of the delta the line explains.';
COMMENT ON COLUMN settle.reconciliation_delta.cause IS 'rounding: within the currency''s rounding; fx: another currency or a different rate; late_revision: revised after the other side was taken; unmatched: no counterpart on the other side; duplicate: the same source record under another key; refund: reversed at another rate than its original earned.';
COMMENT ON COLUMN settle.reconciliation_delta.line_key IS 'The bill line (or refund) behind the delta; null for a day without lines (day says which) or an unexplained remainder.';
COMMENT ON COLUMN settle.reconciliation_delta.amount IS 'The part of the scope''s delta this line explains, in the scope currency (null when it cannot be given).';

CREATE FUNCTION settle.explain_delta(period settle.period, scope_key text)
	RETURNS TABLE (step integer, cause text, line_key text, amount numeric, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r settle.recon_result;
	explained numeric;
BEGIN
	SELECT * INTO r FROM settle.recon_result x WHERE x.period = explain_delta.period AND x.scope_key = explain_delta.scope_key;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no reconciliation result for scope "%" in period %', scope_key, period
			USING ERRCODE = 'no_data_found', HINT = 'Run settle.reconcile(period) first.';
	END IF;
	step := 0; cause := NULL; line_key := NULL; amount := r.delta;
	detail := format('%s %s: %s, ours %s vs theirs %s, delta %s (tolerance %s)%s', r.check_name, r.scope_key,
	                 r.status, coalesce(r.lines_total::text, '-'), coalesce(r.other_total::text, '-'),
	                 coalesce(r.delta::text, '-'), coalesce(r.tolerance::text, '-'),
	                 coalesce('; ' || r.detail, ''));
	RETURN NEXT;
	RETURN QUERY SELECT d.seq, d.cause, d.line_key, d.amount, d.detail FROM settle.recon_delta_line d
	 WHERE d.period = r.period AND d.check_name = r.check_name AND d.scope_key = r.scope_key ORDER BY d.seq;
	SELECT sum(d.amount) INTO explained FROM settle.recon_delta_line d
	 WHERE d.period = r.period AND d.check_name = r.check_name AND d.scope_key = r.scope_key;
	IF r.delta IS NOT NULL AND r.status <> 'matched' THEN
		step := 1000; cause := NULL; line_key := NULL; amount := r.delta - coalesce(explained, 0);
		detail := CASE WHEN r.delta - coalesce(explained, 0) = 0 THEN 'the lines above explain the whole delta'
		               ELSE format('%s of the delta is not attributed to a line', r.delta - coalesce(explained, 0)) END;
		RETURN NEXT;
	END IF;
END $$;
COMMENT ON FUNCTION settle.explain_delta(settle.period, text) IS
	'One scope''s reconciliation in words and numbers: the comparison (step 0), each line that explains the delta with its cause and amount, and what remains unexplained (step 1000).';

-- ------------------------------------------------------------------ privileges

REVOKE EXECUTE ON FUNCTION settle.reconcile(settle.period), settle.import_provider_totals(text, text),
	settle.explain_delta(settle.period, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION settle.reconcile(settle.period) TO settle_admin, settle_analyst, settle_finance;
GRANT EXECUTE ON FUNCTION settle.explain_delta(settle.period, text)
	TO settle_admin, settle_analyst, settle_finance, settle_auditor;
GRANT EXECUTE ON FUNCTION settle.import_provider_totals(text, text) TO settle_admin, settle_operator, settle_finance;
GRANT SELECT ON settle.provider_total_import, settle.provider_side, settle.recon_default, settle.recon_result,
	settle.recon_delta_line, settle.reconciliation_summary, settle.reconciliation_delta
	TO settle_admin, settle_operator, settle_analyst, settle_finance, settle_auditor;

DO $ao$
BEGIN
	CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON settle.provider_total_import
		FOR EACH ROW EXECUTE FUNCTION settle.append_only_trigger();
	CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON settle.provider_total_import
		FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger();
	ALTER TABLE settle.provider_total_import ENABLE ALWAYS TRIGGER append_only;
	ALTER TABLE settle.provider_total_import ENABLE ALWAYS TRIGGER append_only_truncate;
	-- tolerances are configuration: audited, with a reason, like agreements
	CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON settle.recon_default
		FOR EACH ROW EXECUTE FUNCTION settle.audit_trigger('reason_required');
	ALTER TABLE settle.recon_default ENABLE ALWAYS TRIGGER audit;
END
$ao$;

SELECT pg_catalog.pg_extension_config_dump('settle.provider_total_import', '');
SELECT pg_catalog.pg_extension_config_dump('settle.recon_result', '');
SELECT pg_catalog.pg_extension_config_dump('settle.recon_delta_line', '');
