-- 60: reconciliation: the exact aggregates, provider totals
-- imported from files, settle.reconcile, its results, the BI views and the
-- explanation of one scope's delta.  The aggregates are C (src/recon_agg.c),
-- and so is the one pass over a period's lines settle.reconcile reads
-- (settle.recon_scan, src/recon_scan.c); the checks are set-based SQL over
-- its groups and the few lines they name.

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

-- The period's lines read once, in C (src/recon_scan.c): the groups by
-- account, product and currency settle.reconcile's checks read (recon_grp),
-- with the tuple ids of their current lines, so that a check fetches the
-- lines of the few groups it names by TID scan instead of reading the period
-- again.  Internal: called by settle.reconcile (owner only).
CREATE FUNCTION settle.recon_scan(resellers bigint[], p_start date, p_end date)
	RETURNS TABLE (billing_account_id text, product_code text, currency text, reseller_id bigint,
		mt settle.money_total, fp bytea, n bigint, days bigint, days_out bigint, off_identity bigint,
		tids tid[], dup_tids tid[])
AS 'MODULE_PATHNAME', 'settle_recon_scan' LANGUAGE C STRICT VOLATILE;
COMMENT ON FUNCTION settle.recon_scan(bigint[], date, date) IS
	'Reads the current revisions of the bill lines of the given resellers billed in [p_start, p_end) once, without copying them, and returns one row per billing account, lower-case product and currency: the highest reseller id, settle.money_total and settle.line_fingerprint of the billed costs, the line count, the days with lines as bits from p_start (days_out: lines dated outside the first 62 days), the lines off list - discount - coupons, the lines'' tuple ids, and those of lines whose source record another line key also holds (candidates).  Internal to settle.reconcile.';

-- The lines with the given tuple ids, as pg_temp.recon_line shows them (a
-- TID scan; inlined into the caller's query).  Internal to settle.reconcile
-- and its checks (owner only).
CREATE FUNCTION settle.recon_lines(tids tid[])
	RETURNS TABLE (reseller_id bigint, line_key text, revision integer, customer_id bigint, billing_account_id text,
		product_code text, currency text, billed_cost numeric, list_cost numeric, discount numeric,
		coupon_deduction numeric, source_record_id text, source_item text, day date, ingested_at timestamptz,
		original_line_key text, withdrawal_reason text, minor_unit integer)
LANGUAGE sql STABLE AS $$
	SELECT b.reseller_id, b.line_key, b.revision, b.customer_id, b.billing_account_id,
	       lower(b.product_code), b.billing_currency::text,
	       b.billed_cost, b.list_cost, b.discount, b.coupon_deduction, b.source_record_id, b.source_item,
	       (b.charge_period_start AT TIME ZONE 'UTC')::date, b.ingested_at, b.original_line_key,
	       b.withdrawal_reason, coalesce(c.minor_unit, 2)
	  FROM settle.bill_line b
	  LEFT JOIN settle.currency c ON c.currency_code = b.billing_currency
	 WHERE b.ctid = ANY ($1)
$$;
COMMENT ON FUNCTION settle.recon_lines(tid[]) IS
	'The bill lines with the given tuple ids (from settle.recon_scan''s groups) in the columns of settle.reconcile''s pg_temp.recon_line.  Internal to settle.reconcile and its checks.';

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
	imported_by        text        NOT NULL DEFAULT session_user,
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
	  JOIN (SELECT j.source, j.billing_cycle, max(j.import_id) AS import_id	-- one pass, not one look-up per row
	          FROM settle.provider_total_import j GROUP BY j.source, j.billing_cycle) m
	    ON m.source = i.source AND m.billing_cycle = i.billing_cycle AND m.import_id = i.import_id;
COMMENT ON VIEW settle.provider_side IS
	'The provider''s totals in force per source, billing cycle, billing account, product and currency: the latest QueryBillOverview snapshot of each connector (pretax amounts of all its rows for the scope) and the latest import of each file source.  taken_at is when the totals were taken.';

-- ------------------------------------------------- provider item listings

-- The provider's own list of the items behind its totals (the monthly bill
-- detail file of the billing console, or any export with one row per
-- item).  With a listing, a provider delta is attributed item by item:
-- items without a stored line (missing), stored lines the provider no
-- longer lists (withdrawn), amounts that differ (late revisions, FX).
CREATE TABLE settle.provider_item_import (
	import_id          bigint      NOT NULL,
	source             text        NOT NULL CHECK (source ~ '^(import|connector):[A-Za-z0-9][A-Za-z0-9_.:-]*$'),
	line_no            integer     NOT NULL,
	billing_cycle      text        NOT NULL CHECK (settle.check_period(billing_cycle)),
	billing_account_id text        NOT NULL,
	product_code       text        NOT NULL,
	currency           char(3)     NOT NULL REFERENCES settle.currency,
	record_id          text        NOT NULL,
	item               text        NOT NULL,
	amount             numeric     NOT NULL,
	imported_at        timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
	imported_by        text        NOT NULL DEFAULT session_user,
	PRIMARY KEY (import_id, line_no),
	UNIQUE (import_id, billing_cycle, record_id, item)
);
CREATE SEQUENCE settle.provider_item_import_seq;
CREATE INDEX provider_item_import_cycle_idx ON settle.provider_item_import (source, billing_cycle, import_id);
COMMENT ON TABLE settle.provider_item_import IS
	'Provider item listings imported by settle.import_provider_items: one row per provider item (record id and item kind, as bill lines carry them in source_record_id and source_item) with its payable amount, per billing cycle, account, product and currency.  source names the provider total source the listing explains (import:<name> or connector:<name>); the latest import of a source and cycle is in force.  Append-only.';
COMMENT ON COLUMN settle.provider_item_import.record_id IS 'The provider''s record id of the item (a bill line''s source_record_id).';
COMMENT ON COLUMN settle.provider_item_import.item IS 'The item kind (a bill line''s source_item: PayAsYouGoBill, SubscriptionOrder, Refund, ...).';
COMMENT ON COLUMN settle.provider_item_import.amount IS 'The provider''s payable amount of the item, exact (as many decimals as the provider gives).';
COMMENT ON SEQUENCE settle.provider_item_import_seq IS 'Numbers provider item imports.';

CREATE FUNCTION settle.import_provider_items(source text, csv text) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	bad record;
	id bigint;
	n bigint;
BEGIN
	IF source IS NULL OR source !~ '^(import|connector):[A-Za-z0-9][A-Za-z0-9_.:-]*$' THEN
		RAISE EXCEPTION 'invalid provider item source "%"', source USING ERRCODE = 'invalid_parameter_value',
			DETAIL = 'The source is the provider total source the listing explains: import:<name> or connector:<name>.';
	END IF;
	-- set-based: a listing has one row per provider item (tens of thousands)
	CREATE TEMP TABLE recon_item_csv ON COMMIT DROP AS
		SELECT t.no::integer AS no, t.line, string_to_array(t.line, ',') AS f
		  FROM regexp_split_to_table(coalesce(csv, ''), E'\r?\n') WITH ORDINALITY AS t(line, no);
	IF (SELECT lower(regexp_replace(c.line, '[\s"]', '', 'g')) FROM recon_item_csv c WHERE c.no = 1)
	   IS DISTINCT FROM 'billing_cycle,billing_account_id,product_code,currency,record_id,item,amount' THEN
		RAISE EXCEPTION 'provider item file has an unexpected header' USING ERRCODE = 'bad_copy_file_format',
			DETAIL = format('The first line is "%s".', (SELECT c.line FROM recon_item_csv c WHERE c.no = 1)),
			HINT = 'The header must be: billing_cycle,billing_account_id,product_code,currency,record_id,item,amount';
	END IF;
	DELETE FROM recon_item_csv c WHERE c.no = 1 OR btrim(c.line) = '';
	SELECT c.no, c.line, cardinality(c.f) AS nf INTO bad FROM recon_item_csv c WHERE cardinality(c.f) <> 7 ORDER BY c.no LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'line % of the provider item file has % fields, not 7', bad.no, bad.nf
			USING ERRCODE = 'bad_copy_file_format', DETAIL = format('The line is "%s".', bad.line);
	END IF;
	UPDATE recon_item_csv c SET f = (SELECT array_agg(btrim(x, E' \t"') ORDER BY o) FROM unnest(c.f) WITH ORDINALITY u(x, o));
	SELECT c.no, c.f INTO bad FROM recon_item_csv c
	 WHERE c.f[1] !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' ORDER BY c.no LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'line %: invalid billing cycle "%"', bad.no, bad.f[1] USING ERRCODE = 'invalid_datetime_format',
			HINT = 'A billing cycle is written YYYY-MM.';
	END IF;
	SELECT c.no INTO bad FROM recon_item_csv c
	 WHERE c.f[2] = '' OR c.f[3] = '' OR c.f[5] = '' OR c.f[6] = '' ORDER BY c.no LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'line %: billing account, product code, record id and item are required', bad.no
			USING ERRCODE = 'not_null_violation';
	END IF;
	SELECT c.no, c.f INTO bad FROM recon_item_csv c
	 WHERE NOT EXISTS (SELECT 1 FROM settle.currency cu WHERE cu.currency_code = c.f[4]) ORDER BY c.no LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'line %: unknown currency "%"', bad.no, bad.f[4] USING ERRCODE = 'foreign_key_violation',
			DETAIL = 'Currencies are ISO 4217 codes listed in settle.currency.';
	END IF;
	SELECT c.no, c.f INTO bad FROM recon_item_csv c
	 WHERE c.f[7] !~ '^-?[0-9]{1,14}(\.[0-9]{1,16})?$' ORDER BY c.no LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'line %: malformed amount "%"', bad.no, bad.f[7] USING ERRCODE = 'invalid_text_representation',
			DETAIL = 'An amount is a plain decimal number with at most 14 integer digits and 16 decimal places, e.g. -1234.5678.';
	END IF;
	SELECT min(c.no) AS first, max(c.no) AS second, c.f[1] AS cy, c.f[5] AS rec, c.f[6] AS it INTO bad
	  FROM recon_item_csv c GROUP BY c.f[1], c.f[5], c.f[6] HAVING count(*) > 1 ORDER BY 2 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'line %: duplicated item % % of billing cycle %', bad.second, bad.rec, bad.it, bad.cy
			USING ERRCODE = 'unique_violation', DETAIL = format('Line %s already listed it.', bad.first);
	END IF;
	SELECT count(*) INTO n FROM recon_item_csv;
	IF n = 0 THEN
		RAISE EXCEPTION 'provider item file has no rows' USING ERRCODE = 'no_data_found';
	END IF;
	id := nextval('settle.provider_item_import_seq');
	INSERT INTO settle.provider_item_import (import_id, source, line_no, billing_cycle, billing_account_id,
		product_code, currency, record_id, item, amount)
	SELECT id, import_provider_items.source, c.no, c.f[1], c.f[2], lower(c.f[3]), c.f[4], c.f[5], c.f[6], c.f[7]::numeric
	  FROM recon_item_csv c;
	DROP TABLE recon_item_csv;
	RETURN id;
END $$;
COMMENT ON FUNCTION settle.import_provider_items(text, text) IS
	'Imports a provider item listing from CSV text (header billing_cycle,billing_account_id,product_code,currency,record_id,item,amount) for the provider total source it explains (import:<name> or connector:<name>) and returns the import id.  All or nothing: an unknown currency (23503), an item listed twice (23505), a malformed amount (22P02), a bad cycle (22007) or a malformed line (22P04) refuses the whole file.';

-- ------------------------------------------------------------------- settings

CREATE TABLE settle.recon_default (
	only_row      boolean PRIMARY KEY DEFAULT true CHECK (only_row),
	tolerance_abs numeric NOT NULL DEFAULT 0.01 CHECK (tolerance_abs >= 0),
	tolerance_rel numeric NOT NULL DEFAULT 0 CHECK (tolerance_rel >= 0 AND tolerance_rel < 1)
);
INSERT INTO settle.recon_default DEFAULT VALUES;
COMMENT ON TABLE settle.recon_default IS
	'Reconciliation tolerances for scopes without an agreement in force (unmapped accounts, reseller 0).  One row; changes are audited and need settle.reason.';

-- ------------------------------------------------------------ the checks

-- One row per check settle.reconcile runs, in position order.  A check is a
-- function (period settle.period, p_start date, p_end date, reseller_id
-- bigint) RETURNS void that writes its own rows of settle.recon_result and
-- settle.recon_delta_line for the period (and the reseller, when one is
-- given) from the period's inputs settle.reconcile prepared (see
-- docs/reconciliation.md, "Adding a check").
CREATE TABLE settle.recon_check (
	check_name       text    PRIMARY KEY CHECK (check_name ~ '^[a-z][a-z0-9_]*$'),
	position         integer NOT NULL UNIQUE,
	scope            text    NOT NULL,
	function         text    NOT NULL,
	tolerance_source text    NOT NULL,
	description      text    NOT NULL,
	enabled          boolean NOT NULL DEFAULT true
);
COMMENT ON TABLE settle.recon_check IS
	'The registered reconciliation checks: name, what one result compares (scope), the function that runs it, where its tolerance comes from, and whether settle.reconcile runs it.  Changes are audited and need settle.reason.';
COMMENT ON COLUMN settle.recon_check.function IS
	'The check''s function, as a signature: name(settle.period, date, date, bigint) returning void.';
COMMENT ON COLUMN settle.recon_check.tolerance_source IS 'Where the check''s tolerance comes from (the agreement in force, none: exact, ...).';

CREATE FUNCTION settle._recon_check_valid() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	fn regprocedure := to_regprocedure(NEW.function);
BEGIN
	IF fn IS NULL THEN
		RAISE EXCEPTION 'reconciliation check "%": no function %', NEW.check_name, NEW.function
			USING ERRCODE = 'undefined_function';
	END IF;
	IF (SELECT (SELECT array_agg(t::regtype::text ORDER BY o) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(t, o))
	           IS DISTINCT FROM ARRAY['settle.period', 'date', 'date', 'bigint'] OR p.prorettype <> 'void'::regtype
	      FROM pg_proc p WHERE p.oid = fn) THEN
		RAISE EXCEPTION 'reconciliation check "%": % does not take (settle.period, date, date, bigint) and return void',
			NEW.check_name, fn USING ERRCODE = 'invalid_function_definition';
	END IF;
	NEW.function := fn::text;
	RETURN NEW;
END $$;
COMMENT ON FUNCTION settle._recon_check_valid() IS
	'Trigger of settle.recon_check: the function must exist and take (settle.period, date, date, bigint) returning void (42883, 42P13).';
CREATE TRIGGER check_valid BEFORE INSERT OR UPDATE ON settle.recon_check
	FOR EACH ROW EXECUTE FUNCTION settle._recon_check_valid();

-- -------------------------------------------------------------------- results

CREATE TABLE settle.recon_result (
	period             text        NOT NULL CHECK (settle.check_period(period)),
	check_name         text        NOT NULL REFERENCES settle.recon_check ON UPDATE CASCADE,
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
	'Results of the last settle.reconcile of each period, one row per check and scope (re-running replaces the period''s rows, or the reseller''s).  Read it through settle.reconciliation_summary.';

CREATE TABLE settle.recon_delta_line (
	period      text    NOT NULL CHECK (settle.check_period(period)),
	check_name  text    NOT NULL,
	scope_key   text    NOT NULL,
	seq         integer NOT NULL,
	cause       text    NOT NULL CHECK (cause IN ('late_revision', 'missing', 'withdrawn', 'duplicate', 'fx',
	                        'rounding', 'refund', 'unmatched')),
	line_key    text,
	revision    integer,
	record_id   text,
	day         date,
	amount      numeric,
	old_amount  numeric,
	new_amount  numeric,
	detail      text    NOT NULL,
	PRIMARY KEY (period, check_name, scope_key, seq),
	FOREIGN KEY (period, check_name, scope_key) REFERENCES settle.recon_result ON DELETE CASCADE ON UPDATE CASCADE
);
COMMENT ON TABLE settle.recon_delta_line IS
	'The causes of each non-matching result, one row per line (or provider item) that explains part of the delta, and one rounding row per scope; the amounts of a provider scope add up to its delta exactly.  Read it through settle.reconciliation_delta.';

-- One row per period and scope reconciled ("*" = every reseller): when the
-- last reconciliation finished.  A call that waited for another one of the
-- same scope returns that one's results instead of doing the work again.
CREATE TABLE settle.recon_run (
	period      text        NOT NULL CHECK (settle.check_period(period)),
	scope       text        NOT NULL,
	started_at  timestamptz NOT NULL,
	finished_at timestamptz NOT NULL,
	run_by      text        NOT NULL DEFAULT session_user,
	results     bigint      NOT NULL,
	PRIMARY KEY (period, scope)
);
COMMENT ON TABLE settle.recon_run IS
	'The last settle.reconcile of each period and scope (* = every reseller, else a reseller code): when it started and finished, who ran it, how many results it wrote.';

-- ----------------------------------------------------------------- helpers

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

-- A check function reads the inputs settle.reconcile prepared in the
-- session's temporary schema; called on its own it says so.
CREATE FUNCTION settle.recon_require_inputs() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF to_regclass('pg_temp.recon_line') IS NULL THEN
		RAISE EXCEPTION 'a reconciliation check runs inside settle.reconcile only'
			USING ERRCODE = 'object_not_in_prerequisite_state',
			HINT = 'Call settle.reconcile(period), which prepares the period''s lines and runs every registered check.';
	END IF;
END $$;
COMMENT ON FUNCTION settle.recon_require_inputs() IS
	'Raises 55000 unless the period''s inputs of settle.reconcile (pg_temp.recon_line, recon_dup, recon_grp, recon_prov, recon_item, recon_assign) exist in this transaction.';

-- ------------------------------------------------------- check: provider_total

CREATE FUNCTION settle.recon_check_provider_total(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM settle.recon_require_inputs();
	-- The lines' accounts, products and currencies with their owner, exact
	-- total and fingerprint come from recon_grp (one pass, prepared by
	-- settle.reconcile).  A line counts in the provider scope of its own
	-- currency (recon_assign), so a scope's side is its group's, unless
	-- lines of another currency are converted into it.
	-- the scopes lines of another currency are converted into: the only total
	-- of a source for an account and product, with lines in other currencies
	CREATE TEMP TABLE recon_pt_conv ON COMMIT DROP AS
		SELECT p.source, p.billing_account_id, p.product_code, p.currency
		  FROM (SELECT q.source, q.billing_account_id, q.product_code, min(q.currency) AS currency
		          FROM recon_prov q GROUP BY q.source, q.billing_account_id, q.product_code HAVING count(*) = 1) p
		 WHERE EXISTS (SELECT 1 FROM recon_grp g WHERE g.billing_account_id = p.billing_account_id
		                  AND g.product_code = p.product_code AND g.currency <> p.currency);
	CREATE TEMP TABLE recon_pt_side ON COMMIT DROP AS
		SELECT p.source, p.billing_account_id, p.product_code, p.currency AS scope_currency, g.mt, g.fp,
		       0::bigint AS unconvertible
		  FROM recon_prov p
		  JOIN recon_grp g ON g.billing_account_id = p.billing_account_id AND g.product_code = p.product_code
		                     AND g.currency = p.currency
		 WHERE NOT EXISTS (SELECT 1 FROM recon_pt_conv c WHERE c.source = p.source AND c.billing_account_id = p.billing_account_id
		                      AND c.product_code = p.product_code AND c.currency = p.currency);
	IF EXISTS (SELECT 1 FROM recon_pt_conv) THEN	-- their assignments, converted
		ANALYZE recon_pt_conv;
		INSERT INTO recon_pt_side
		SELECT a.source, a.billing_account_id, a.product_code, a.scope_currency,
		       settle.money_total(a.amount, a.scope_currency) AS mt,
		       settle.line_fingerprint(a.line_key, a.amount) AS fp,
		       count(*) FILTER (WHERE a.converted AND a.amount IS NULL) AS unconvertible
		  FROM recon_pt_conv c
		  JOIN recon_assign a ON a.source = c.source AND a.billing_account_id = c.billing_account_id
		                     AND a.product_code = c.product_code AND a.scope_currency = c.currency
		 GROUP BY a.source, a.billing_account_id, a.product_code, a.scope_currency;
	END IF;

	-- per source, billing account, product and currency
	INSERT INTO settle.recon_result AS r (period, check_name, scope_key, reseller_id, billing_account_id,
		product_code, currency, source, lines, lines_total, other_total, delta, tolerance, status, missing_side,
		fingerprint, detail)
	WITH side AS (
		SELECT * FROM recon_pt_side
	), grp AS (	-- (not the tuple ids)
		SELECT g.billing_account_id, g.product_code, g.currency, g.reseller_id, g.mt, g.fp FROM recon_grp g
	), orphan_group AS MATERIALIZED (	-- accounts, products and currencies a source has no total for
		-- (found on the distinct groups first: the period's lines are joined
		-- to the few orphan groups only, not anti-joined line by line)
		SELECT s.source, g.billing_account_id, g.product_code, g.currency
		  FROM (SELECT DISTINCT q.source FROM recon_prov q) s
		 CROSS JOIN (SELECT x.billing_account_id, x.product_code, x.currency FROM grp x
		              WHERE x.billing_account_id IS NOT NULL AND x.product_code IS NOT NULL AND x.currency IS NOT NULL) g
		 WHERE NOT EXISTS (	-- a line goes to the total of its currency ...
			SELECT 1 FROM recon_prov p WHERE p.source = s.source AND p.billing_account_id = g.billing_account_id
			   AND p.product_code = g.product_code AND p.currency = g.currency)
		   AND NOT EXISTS (	-- ... else to the only one of its account and product
			SELECT 1 FROM (SELECT q.source, q.billing_account_id, q.product_code FROM recon_prov q
			                GROUP BY q.source, q.billing_account_id, q.product_code HAVING count(*) = 1) k
			 WHERE k.source = s.source AND k.billing_account_id = g.billing_account_id AND k.product_code = g.product_code)
	), orphan AS (	-- their lines' totals
		SELECT o.source, g.billing_account_id, g.product_code, g.currency AS scope_currency, g.mt, g.fp
		  FROM orphan_group o JOIN grp g ON g.billing_account_id = o.billing_account_id
		   AND g.product_code = o.product_code AND g.currency = o.currency
	), scopes AS (
		SELECT p.source, p.billing_account_id, p.product_code, p.currency, p.amount AS provider_amount,
		       (s.mt).lines AS lines, (s.mt).total AS lines_total, s.fp, s.unconvertible
		  FROM recon_prov p
		  LEFT JOIN side s ON s.source = p.source AND s.billing_account_id = p.billing_account_id
		                  AND s.product_code = p.product_code AND s.scope_currency = p.currency
		UNION ALL
		SELECT o.source, o.billing_account_id, o.product_code, o.scope_currency, NULL, (o.mt).lines, (o.mt).total, o.fp, 0
		  FROM orphan o
	), account_owner AS (
		SELECT x.billing_account_id, max(x.reseller_id) AS reseller_id FROM grp x GROUP BY x.billing_account_id
	), owner AS (
		SELECT sp.*, coalesce(recon_check_provider_total.reseller_id, ao.reseller_id,
		         (SELECT min(m.reseller_id) FROM settle.customer_account m WHERE m.account_id = sp.billing_account_id
		             AND m.valid_from <= p_start AND p_start < m.valid_to), 0) AS owner_id
		  FROM scopes sp LEFT JOIN account_owner ao ON ao.billing_account_id = sp.billing_account_id
	), tol AS (	-- the tolerances of each owner, looked up once per owner (not once per scope)
		SELECT w.owner_id, t.tolerance_abs, t.tolerance_rel
		  FROM (SELECT DISTINCT x.owner_id FROM owner x) w, settle.recon_tolerance(w.owner_id, p_start) t
	)
	SELECT recon_check_provider_total.period, 'provider_total',
	       format('provider:%s/%s/%s/%s@%s', recon_check_provider_total.period, o.billing_account_id, o.product_code, o.currency, o.source),
	       o.owner_id, o.billing_account_id, o.product_code, o.currency, o.source,
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
	  FROM owner o JOIN tol t ON t.owner_id = o.owner_id;

	-- The scopes to explain, with what the explanation needs.
	CREATE TEMP TABLE recon_pt_scope ON COMMIT DROP AS
		SELECT r.scope_key, r.source, r.billing_account_id, r.product_code, r.currency, r.delta, r.missing_side,
		       p.taken_at, coalesce(cu.minor_unit, 2) AS minor_unit,
		       trim_scale(power(10::numeric, -coalesce(cu.minor_unit, 2))) AS unit,
		       EXISTS (SELECT 1 FROM recon_item i WHERE i.source = r.source) AS listed
		  FROM settle.recon_result r
		  LEFT JOIN recon_prov p ON p.source = r.source AND p.billing_account_id = r.billing_account_id
		                        AND p.product_code = r.product_code AND p.currency = r.currency
		  LEFT JOIN settle.currency cu ON cu.currency_code = r.currency
		 WHERE r.period = recon_check_provider_total.period AND r.check_name = 'provider_total' AND r.status <> 'matched'
		   AND (recon_check_provider_total.reseller_id IS NULL OR r.reseller_id = recon_check_provider_total.reseller_id);
	ANALYZE recon_pt_scope;	-- few scopes: hash them, not the period's assignments
	-- the lines those scopes' explanations read, fetched by tuple id: the
	-- lines of their accounts and products (which hold every line their
	-- assignments below name)
	CREATE TEMP TABLE recon_pt_line ON COMMIT DROP AS
		SELECT l.* FROM settle.recon_lines(ARRAY(
			SELECT t FROM recon_grp g, unnest(g.tids) t
			 WHERE (g.billing_account_id, g.product_code) IN (SELECT s.billing_account_id, s.product_code FROM recon_pt_scope s))) l;
	ANALYZE recon_pt_line;
	-- The recon_assign rows of those scopes that have a provider total (from
	-- their accounts' and products' lines, recon_pt_line):
	-- the lines of the scope's currency, and when the scope is its source's
	-- only total for the account and product, the others converted.
	CREATE TEMP TABLE recon_pt_assign ON COMMIT DROP AS
		SELECT s.scope_key, s.source, s.billing_account_id, s.product_code, s.currency AS scope_currency,
		       l.line_key, l.revision, l.currency,
		       CASE WHEN l.currency = s.currency THEN l.billed_cost ELSE round(l.billed_cost * fx.rate, 8) END AS amount,
		       fx.rate AS fx_rate, l.currency <> s.currency AS converted
		  FROM (SELECT x.*, (SELECT count(*) FROM recon_prov q WHERE q.source = x.source
		                       AND q.billing_account_id = x.billing_account_id AND q.product_code = x.product_code) = 1 AS single
		          FROM recon_pt_scope x WHERE x.missing_side IS DISTINCT FROM 'provider') s
		  JOIN recon_pt_line l ON l.billing_account_id = s.billing_account_id AND l.product_code = s.product_code
		   AND (l.currency = s.currency OR (s.single AND l.currency <> s.currency))
		  LEFT JOIN LATERAL (
			SELECT f.rate FROM settle.fx_rate_current f
			 WHERE l.currency <> s.currency AND f.base_currency = l.currency AND f.quote_currency = s.currency
			   AND f.rate_date = p_end - 1
			 ORDER BY f.source COLLATE "C" LIMIT 1) fx ON true;
	ANALYZE recon_pt_assign;

	-- The lines of those scopes, each with its provider item when the source
	-- lists items, and whether an earlier key of the period holds its record.
	CREATE TEMP TABLE recon_pt_cause (
		scope_key text, ord integer, cause text, line_key text, revision integer, record_id text, day date,
		amount numeric, old_amount numeric, new_amount numeric, detail text) ON COMMIT DROP;

	-- lines the source has no total for: each is unmatched
	INSERT INTO recon_pt_cause
	SELECT s.scope_key, 1, 'unmatched', l.line_key, l.revision, l.source_record_id, l.day, l.billed_cost, NULL, l.billed_cost,
	       format('no provider total of %s for this line', s.source)
	  FROM recon_pt_scope s JOIN recon_pt_line l
	    ON l.billing_account_id = s.billing_account_id AND l.product_code = s.product_code AND l.currency = s.currency
	 WHERE s.missing_side = 'provider';

	-- Attribution line by line.  With an item listing: item against line by
	-- record; without: the line's history against the time the total was taken.
	INSERT INTO recon_pt_cause
	WITH ln AS (
		SELECT s.scope_key, s.listed, s.taken_at, s.minor_unit AS scope_minor_unit, s.currency AS scope_currency, s.source,
		       a.amount, a.converted, a.fx_rate, l.*, d.first_key
		  FROM recon_pt_scope s
		  JOIN recon_pt_assign a ON a.scope_key = s.scope_key
		  JOIN recon_pt_line l ON l.line_key = a.line_key
		  LEFT JOIN recon_dup d ON d.source_record_id = l.source_record_id AND d.source_item = l.source_item
		 WHERE s.missing_side IS DISTINCT FROM 'provider'
	), it AS (
		SELECT s.scope_key, s.minor_unit, s.currency, i.record_id, i.item, i.amount, i.imported_at
		  FROM recon_pt_scope s JOIN recon_item i ON i.source = s.source AND i.billing_account_id = s.billing_account_id
		   AND i.product_code = s.product_code AND i.currency = s.currency
		 WHERE s.listed
	), prim AS (	-- the lines that stand for their record (a duplicate does not)
		SELECT * FROM ln WHERE ln.first_key IS NULL OR ln.first_key = ln.line_key
	), prev AS MATERIALIZED (	-- without a listing: the revision in force when the total was taken
		SELECT p.line_key, v.revision AS prev_revision, v.billed_cost AS prev_amount
		  FROM prim p
		  LEFT JOIN LATERAL (
			SELECT b.revision, b.billed_cost FROM settle.bill_line b
			 WHERE b.line_key = p.line_key AND b.revision < p.revision AND b.ingested_at <= p.taken_at
			 ORDER BY b.revision DESC LIMIT 1) v ON true
		 WHERE NOT p.listed AND NOT p.converted AND p.ingested_at > p.taken_at
	)
	-- duplicates: a record's second and later keys, each its whole amount
	SELECT d.scope_key, 2, 'duplicate', d.line_key, d.revision, d.source_record_id, d.day, d.amount, NULL::numeric, d.amount,
	       format('same source record %s (%s) as line %s', d.source_record_id, d.source_item, d.first_key)
	  FROM ln d WHERE d.first_key IS NOT NULL AND d.first_key <> d.line_key AND d.amount <> 0
	UNION ALL
	-- listed: item and line of one record
	SELECT coalesce(p.scope_key, i.scope_key), 3,
	       CASE WHEN p.line_key IS NULL THEN 'missing'
	            WHEN i.record_id IS NULL AND p.source_record_id IS NULL THEN 'unmatched'
	            WHEN i.record_id IS NULL THEN 'withdrawn'
	            WHEN p.converted THEN 'fx'
	            WHEN p.withdrawal_reason IS NOT NULL THEN 'withdrawn'
	            ELSE 'late_revision' END,
	       p.line_key, p.revision, coalesce(i.record_id, p.source_record_id), p.day,
	       coalesce(p.amount, 0) - coalesce(i.amount, 0), i.amount, p.amount,
	       CASE WHEN p.line_key IS NULL THEN
	                 format('the provider lists record %s (%s) at %s %s; no stored line has it', i.record_id, i.item, i.amount, i.currency)
	            WHEN i.record_id IS NULL AND p.source_record_id IS NULL THEN
	                 'a line without a source record id: nothing on the provider''s side to compare it with'
	            WHEN i.record_id IS NULL AND p.withdrawal_reason IS NOT NULL THEN
	                 format('withdrawn (%s); the provider no longer lists it', p.withdrawal_reason)
	            WHEN i.record_id IS NULL THEN
	                 format('the provider no longer lists record %s (%s); the line still counts %s (revision %s, not withdrawn)',
	                        p.source_record_id, p.source_item, p.amount, p.revision)
	            WHEN p.converted THEN
	                 format('%s %s converted at the recorded %s/%s rate %s of %s = %s; the provider counts %s',
	                        p.billed_cost, p.currency, p.currency, p.scope_currency, p.fx_rate, p_end - 1,
	                        settle.recon_amount(p.amount, p.scope_minor_unit), i.amount)
	            WHEN p.withdrawal_reason IS NOT NULL THEN
	                 format('withdrawn at %s (%s); the provider still lists %s', p.ingested_at, p.withdrawal_reason, i.amount)
	            ELSE format('the provider lists %s, our revision %s (ingested %s) holds %s', i.amount, p.revision,
	                        p.ingested_at, p.amount) END
	  FROM (SELECT * FROM prim WHERE prim.listed) p
	  FULL JOIN it i ON i.scope_key = p.scope_key AND i.record_id = p.source_record_id AND i.item = p.source_item
	 WHERE coalesce(p.amount, 0) IS DISTINCT FROM coalesce(i.amount, 0) OR (p.amount IS NULL AND p.line_key IS NOT NULL)
	UNION ALL
	-- not listed, converted: the conversion (the rest of the delta is put on it below)
	SELECT p.scope_key, 4, 'fx', p.line_key, p.revision, p.source_record_id, p.day, 0, NULL, p.amount,
	       CASE WHEN p.fx_rate IS NULL THEN format('%s %s: no %s/%s rate dated %s', p.billed_cost, p.currency, p.currency,
	                                               p.scope_currency, p_end - 1)
	            ELSE format('%s %s converted at the recorded %s/%s rate %s of %s = %s %s', p.billed_cost, p.currency,
	                        p.currency, p.scope_currency, p.fx_rate, p_end - 1,
	                        settle.recon_amount(p.amount, p.scope_minor_unit), p.scope_currency) END
	  FROM prim p WHERE NOT p.listed AND p.converted
	UNION ALL
	-- not listed: revised (or withdrawn) after the total was taken
	SELECT p.scope_key, 3, CASE WHEN p.withdrawal_reason IS NOT NULL THEN 'withdrawn' ELSE 'late_revision' END,
	       p.line_key, p.revision, p.source_record_id, p.day, p.amount - coalesce(v.prev_amount, 0), v.prev_amount, p.amount,
	       CASE WHEN p.withdrawal_reason IS NOT NULL THEN
	                 format('withdrawn at %s (%s), after the provider total was taken at %s on revision %s (%s)',
	                        p.ingested_at, p.withdrawal_reason, p.taken_at, v.prev_revision, v.prev_amount)
	            WHEN v.prev_revision IS NULL THEN
	                 format('line ingested at %s, after the provider total was taken at %s', p.ingested_at, p.taken_at)
	            ELSE format('revision %s (%s) ingested at %s, after the provider total was taken at %s on revision %s (%s)',
	                        p.revision, p.amount, p.ingested_at, p.taken_at, v.prev_revision, v.prev_amount) END
	  FROM prim p JOIN prev v ON v.line_key = p.line_key
	 WHERE p.amount IS DISTINCT FROM coalesce(v.prev_amount, 0);

	-- For the remainder rows: the days with lines of the scopes to explain,
	-- and their lines billed off list - discount - coupons (one pass each)
	CREATE TEMP TABLE recon_pt_day ON COMMIT DROP AS
		SELECT l.billing_account_id, l.product_code, l.day, string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") AS keys
		  FROM recon_pt_line l
		 WHERE (l.billing_account_id, l.product_code) IN (SELECT s.billing_account_id, s.product_code FROM recon_pt_scope s)
		 GROUP BY l.billing_account_id, l.product_code, l.day;
	CREATE TEMP TABLE recon_pt_idn ON COMMIT DROP AS
		SELECT s.scope_key, string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") AS keys
		  FROM recon_pt_scope s JOIN recon_pt_line l
		    ON l.billing_account_id = s.billing_account_id AND l.product_code = s.product_code AND l.currency = s.currency
		 WHERE l.list_cost IS NOT NULL AND l.billed_cost <> l.list_cost - l.discount - l.coupon_deduction
		   AND abs(l.billed_cost - (l.list_cost - l.discount - l.coupon_deduction)) <= s.unit
		 GROUP BY s.scope_key;
	CREATE INDEX ON recon_pt_day (billing_account_id, product_code, day);
	ANALYZE recon_pt_day;

	-- What the lines do not explain, one row per scope: an unnamed FX
	-- difference when lines were converted without a listing; rounding when
	-- within one minor unit (the provider rounds its total to the currency's
	-- minor unit); unmatched otherwise.
	INSERT INTO recon_pt_cause
	SELECT s.scope_key, 9,
	       CASE WHEN fx.line_key IS NOT NULL OR fx.n > 0 THEN 'fx'
	            WHEN abs(s.delta - coalesce(c.explained, 0)) <= s.unit THEN 'rounding'
	            ELSE 'unmatched' END,
	       CASE WHEN fx.n = 1 THEN fx.line_key END, NULL, NULL,
	       CASE WHEN fx.n = 0 AND abs(s.delta - coalesce(c.explained, 0)) > s.unit THEN g.first_day END,
	       s.delta - coalesce(c.explained, 0), NULL, NULL,
	       CASE WHEN fx.n > 0 THEN
	                 format('the provider''s total differs by %s %s more on the converted line(s) %s: it used another rate',
	                        s.delta - coalesce(c.explained, 0), s.currency, fx.keys)
	            WHEN abs(s.delta - coalesce(c.explained, 0)) <= s.unit THEN
	                 format('%s %s: the provider''s total is rounded to the currency''s minor unit (%s)%s',
	                        s.delta - coalesce(c.explained, 0), s.currency, s.unit,
	                        coalesce('; lines billed off list - discount - coupons: ' || idn.keys, ''))
	            WHEN s.delta - coalesce(c.explained, 0) < 0 AND g.first_day IS NOT NULL THEN
	                 format('the provider counted %s %s more; no line of %s/%s on %s (lines before: %s; after: %s)',
	                        coalesce(c.explained, 0) - s.delta, s.currency, s.billing_account_id, s.product_code,
	                        g.days, g.before, g.after)
	            WHEN s.delta - coalesce(c.explained, 0) < 0 THEN
	                 format('the provider counted %s %s more than the bill lines hold', coalesce(c.explained, 0) - s.delta, s.currency)
	            ELSE format('%s %s not explained by any line', s.delta - coalesce(c.explained, 0), s.currency) END
	  FROM recon_pt_scope s
	  LEFT JOIN (SELECT x.scope_key, sum(x.amount) AS explained FROM recon_pt_cause x GROUP BY x.scope_key) c
	    ON c.scope_key = s.scope_key
	  CROSS JOIN LATERAL (
		SELECT count(*) AS n, min(x.line_key) AS line_key,
		       string_agg(x.line_key, ', ' ORDER BY x.line_key COLLATE "C") AS keys
		  FROM recon_pt_cause x WHERE x.scope_key = s.scope_key AND x.ord = 4) fx
	  LEFT JOIN recon_pt_idn idn ON idn.scope_key = s.scope_key AND abs(s.delta - coalesce(c.explained, 0)) <= s.unit
	  LEFT JOIN LATERAL (	-- days without a line of the account and product, between days with lines
		SELECT min(d.day) AS first_day, string_agg(d.day::text, ', ' ORDER BY d.day) AS days,
		       (SELECT y.keys FROM recon_pt_day y WHERE y.billing_account_id = s.billing_account_id
		           AND y.product_code = s.product_code AND y.day = min(d.day) - 1) AS before,
		       (SELECT y.keys FROM recon_pt_day y WHERE y.billing_account_id = s.billing_account_id
		           AND y.product_code = s.product_code AND y.day = max(d.day) + 1) AS after
		  FROM (SELECT g::date AS day
		          FROM (SELECT min(y.day) AS a, max(y.day) AS b FROM recon_pt_day y
		                 WHERE y.billing_account_id = s.billing_account_id AND y.product_code = s.product_code) r,
		               generate_series(r.a, r.b, interval '1 day') g
		         WHERE NOT EXISTS (SELECT 1 FROM recon_pt_day y WHERE y.billing_account_id = s.billing_account_id
		                             AND y.product_code = s.product_code AND y.day = g::date)) d
		HAVING count(*) > 0) g ON s.delta - coalesce(c.explained, 0) < -s.unit AND fx.n = 0
	 WHERE s.missing_side IS DISTINCT FROM 'provider'
	   AND (s.delta <> coalesce(c.explained, 0) OR fx.n > 0);

	-- the unnamed FX difference goes on the conversion when there is one line
	DELETE FROM recon_pt_cause x USING recon_pt_cause y
	 WHERE x.ord = 4 AND y.ord = 9 AND y.cause = 'fx' AND x.scope_key = y.scope_key AND y.line_key = x.line_key;
	UPDATE recon_pt_cause y SET ord = 4, revision = l.revision, record_id = l.source_record_id, day = l.day,
	       new_amount = a.amount,
	       detail = format('%s %s converted at the recorded %s/%s rate %s of %s = %s %s; the provider''s total differs by %s %s',
	                       l.billed_cost, l.currency, l.currency, s.currency, a.fx_rate, p_end - 1,
	                       settle.recon_amount(a.amount, s.minor_unit), s.currency, y.amount, s.currency)
	  FROM recon_pt_scope s, recon_pt_assign a, recon_pt_line l
	 WHERE y.ord = 9 AND y.cause = 'fx' AND y.line_key IS NOT NULL AND s.scope_key = y.scope_key
	   AND a.source = s.source AND a.line_key = y.line_key AND l.line_key = y.line_key;

	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, record_id, day,
		amount, old_amount, new_amount, detail)
	SELECT recon_check_provider_total.period, 'provider_total', x.scope_key,
	       row_number() OVER (PARTITION BY x.scope_key ORDER BY x.ord, x.line_key COLLATE "C", x.record_id COLLATE "C"),
	       x.cause, x.line_key, x.revision, x.record_id, x.day, x.amount, x.old_amount, x.new_amount, x.detail
	  FROM recon_pt_cause x;
	DROP TABLE recon_pt_conv, recon_pt_side, recon_pt_scope, recon_pt_assign, recon_pt_line, recon_pt_cause, recon_pt_day, recon_pt_idn;
END $$;
COMMENT ON FUNCTION settle.recon_check_provider_total(settle.period, date, date, bigint) IS
	'Reconciliation check provider_total: the current bill lines of the billing cycle against the provider''s total, per source, billing account, product and currency; every delta split into causes that add up to it exactly (docs/reconciliation.md).';

-- -------------------------------------------------------- check: line_identity

CREATE FUNCTION settle.recon_check_line_identity(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM settle.recon_require_inputs();
	IF NOT EXISTS (SELECT 1 FROM recon_grp g WHERE g.off_identity > 0) THEN
		RETURN;	-- no line off the identity (counted in recon_grp's pass)
	END IF;
	-- the lines off the identity, found in one pass (few: both statements below read them only)
	CREATE TEMP TABLE recon_idn_line ON COMMIT DROP AS
		SELECT l.*, trim_scale(power(10::numeric, -l.minor_unit)) AS unit,
		       l.billed_cost - l.list_cost + l.discount + l.coupon_deduction AS d
		  FROM settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.tids) t WHERE g.off_identity > 0)) l
		 WHERE l.list_cost IS NOT NULL AND l.billed_cost IS NOT NULL
		   AND l.billed_cost <> l.list_cost - l.discount - l.coupon_deduction;
	-- list - discount - coupons = billed, within the currency's rounding
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id, currency,
		lines, lines_total, other_total, delta, tolerance, status, detail)
	SELECT recon_check_line_identity.period, 'line_identity',
	       format('identity:%s/%s/%s', recon_check_line_identity.period, x.billing_account_id, x.currency),
	       max(x.reseller_id), x.billing_account_id, x.currency, count(*),
	       sum(x.billed_cost), sum(x.list_cost - x.discount - x.coupon_deduction), sum(x.billed_cost - x.list_cost + x.discount + x.coupon_deduction),
	       max(x.unit),
	       CASE WHEN bool_and(abs(x.billed_cost - x.list_cost + x.discount + x.coupon_deduction) <= x.unit)
	            THEN 'within_tolerance' ELSE 'mismatched' END,
	       'bill lines whose list cost - discount - coupons differs from the billed cost'
	  FROM recon_idn_line x
	 WHERE x.list_cost IS NOT NULL AND x.billed_cost IS NOT NULL
	   AND x.billed_cost <> x.list_cost - x.discount - x.coupon_deduction
	 GROUP BY x.billing_account_id, x.currency;
	-- each line off by more than a minor unit; those within one minor unit
	-- together in one rounding row per scope
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount,
		old_amount, new_amount, detail)
	SELECT recon_check_line_identity.period, 'line_identity', y.scope_key,
	       row_number() OVER (PARTITION BY y.scope_key ORDER BY y.ord, y.line_key COLLATE "C"),
	       y.cause, y.line_key, y.revision, y.day, y.d, y.expected, y.billed, y.detail
	  FROM (
		SELECT 1 AS ord, format('identity:%s/%s/%s', recon_check_line_identity.period, x.billing_account_id, x.currency) AS scope_key,
		       'unmatched' AS cause, x.line_key, x.revision, x.day, x.d,
		       x.list_cost - x.discount - x.coupon_deduction AS expected, x.billed_cost AS billed,
		       format('list %s - discount %s - coupons %s = %s, billed %s', x.list_cost, x.discount, x.coupon_deduction,
		              x.list_cost - x.discount - x.coupon_deduction, x.billed_cost) AS detail
		  FROM recon_idn_line x
		 WHERE x.list_cost IS NOT NULL AND x.billed_cost IS NOT NULL AND x.d <> 0 AND abs(x.d) > x.unit
		UNION ALL
		SELECT 2, format('identity:%s/%s/%s', recon_check_line_identity.period, x.billing_account_id, x.currency),
		       'rounding', CASE WHEN count(*) = 1 THEN min(x.line_key) END, NULL, NULL, sum(x.d), NULL, NULL,
		       format('%s line(s) billed within one minor unit of list - discount - coupons: %s%s', count(*),
		              array_to_string((array_agg(x.line_key ORDER BY x.line_key COLLATE "C"))[1:20], ', '),
		              CASE WHEN count(*) > 20 THEN ', ...' ELSE '' END)
		  FROM recon_idn_line x
		 WHERE x.list_cost IS NOT NULL AND x.billed_cost IS NOT NULL AND x.d <> 0 AND abs(x.d) <= x.unit
		 GROUP BY x.billing_account_id, x.currency) y;
	DROP TABLE recon_idn_line;
END $$;
COMMENT ON FUNCTION settle.recon_check_line_identity(settle.period, date, date, bigint) IS
	'Reconciliation check line_identity: per billing account and currency, the lines whose list cost - discount - coupons differs from the billed cost (each line beyond one minor unit; those within it in one rounding row).';

-- ------------------------------------------------------------ check: duplicate

CREATE FUNCTION settle.recon_check_duplicate(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM settle.recon_require_inputs();
	-- one source record under several line keys (the first key is kept)
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id, currency,
		lines, lines_total, other_total, delta, tolerance, status, detail)
	SELECT recon_check_duplicate.period, 'duplicate',
	       format('duplicate:%s/%s/%s', recon_check_duplicate.period, l.source_record_id, l.source_item),
	       max(l.reseller_id), min(l.billing_account_id), min(l.currency), count(*), sum(l.billed_cost),
	       sum(l.billed_cost) FILTER (WHERE l.line_key = d.first_key),
	       sum(l.billed_cost) FILTER (WHERE l.line_key <> d.first_key), 0, 'mismatched',
	       format('source record %s ingested under %s line keys', l.source_record_id, count(*))
	  FROM recon_dup d
	  JOIN settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.dup_tids) t)) l
	    ON l.source_record_id = d.source_record_id AND l.source_item = d.source_item
	 GROUP BY l.source_record_id, l.source_item;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, record_id, day,
		amount, new_amount, detail)
	SELECT recon_check_duplicate.period, 'duplicate',
	       format('duplicate:%s/%s/%s', recon_check_duplicate.period, l.source_record_id, l.source_item),
	       row_number() OVER (PARTITION BY l.source_record_id, l.source_item ORDER BY l.line_key COLLATE "C"),
	       'duplicate', l.line_key, l.revision, l.source_record_id, l.day, l.billed_cost, l.billed_cost,
	       format('same source record %s as line %s', l.source_record_id, d.first_key)
	  FROM recon_dup d
	  JOIN settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.dup_tids) t)) l
	    ON l.source_record_id = d.source_record_id AND l.source_item = d.source_item
	 WHERE l.line_key <> d.first_key;
END $$;
COMMENT ON FUNCTION settle.recon_check_duplicate(settle.period, date, date, bigint) IS
	'Reconciliation check duplicate: one source record (of one item kind) ingested under several line keys; the first key in byte order is kept, the others are named.';

-- ------------------------------------------------------------------ check: gap

CREATE FUNCTION settle.recon_check_gap(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM settle.recon_require_inputs();
	-- a run of days without lines for an account, with lines on the day
	-- before and after, in an account with lines on at least half the days
	-- of the month.  The accounts' owners, lines and days with lines come
	-- from recon_grp (bits from p_start); the days of an account are listed
	-- only when its bits are not one run (a gap), or, for an account with a
	-- line dated outside the bits, from its lines.
	CREATE TEMP TABLE recon_gap_acct ON COMMIT DROP AS
		SELECT g.billing_account_id, max(g.reseller_id) AS reseller_id, sum(g.n)::bigint AS lines,
		       coalesce(bit_or(g.days), 0) AS days, sum(g.days_out) AS days_out
		  FROM recon_grp g WHERE g.billing_account_id IS NOT NULL GROUP BY g.billing_account_id;
	CREATE TEMP TABLE recon_gap_acct_day ON COMMIT DROP AS
		SELECT a.billing_account_id, p_start + b.i AS day
		  FROM recon_gap_acct a, generate_series(0, 61) b(i)
		 WHERE a.days_out = 0 AND (a.days + (a.days & -a.days)) & a.days <> 0 AND a.days & (1::bigint << b.i) <> 0;
	IF EXISTS (SELECT 1 FROM recon_gap_acct a WHERE a.days_out > 0) THEN
		INSERT INTO recon_gap_acct_day
		SELECT DISTINCT l.billing_account_id, l.day
		  FROM settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.tids) t
		         WHERE g.billing_account_id IN (SELECT a.billing_account_id FROM recon_gap_acct a WHERE a.days_out > 0))) l;
	END IF;
	CREATE INDEX ON recon_gap_acct_day (billing_account_id, day);
	ANALYZE recon_gap_acct_day;
	CREATE TEMP TABLE recon_gap_day ON COMMIT DROP AS
	SELECT a.billing_account_id, a.reseller_id, a.lines, d.day::date AS day
	  FROM (SELECT x.billing_account_id, min(x.day) AS first_day, max(x.day) AS last_day, count(*) AS days
	          FROM recon_gap_acct_day x GROUP BY x.billing_account_id) x
	  JOIN recon_gap_acct a ON a.billing_account_id = x.billing_account_id,
	       generate_series(x.first_day, x.last_day, interval '1 day') AS d(day)
	 WHERE x.days * 2 >= (p_end - p_start) AND x.days < x.last_day - x.first_day + 1
	   AND NOT EXISTS (SELECT 1 FROM recon_gap_acct_day y WHERE y.billing_account_id = a.billing_account_id AND y.day = d.day::date);
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id,
		lines, status, missing_side, detail)
	SELECT recon_check_gap.period, 'gap', format('gap:%s/%s', recon_check_gap.period, g.billing_account_id),
	       g.reseller_id, g.billing_account_id, g.lines, 'missing', 'lines',
	       format('no lines on %s day(s) between days with lines', count(*))
	  FROM recon_gap_day g
	 GROUP BY g.billing_account_id, g.reseller_id, g.lines;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, day, detail)
	WITH nb AS (	-- each day without lines, with the days with lines before and after it
		SELECT g.billing_account_id, g.day,
		       (SELECT max(y.day) FROM recon_gap_acct_day y WHERE y.billing_account_id = g.billing_account_id AND y.day < g.day) AS before_day,
		       (SELECT min(y.day) FROM recon_gap_acct_day y WHERE y.billing_account_id = g.billing_account_id AND y.day > g.day) AS after_day
		  FROM recon_gap_day g
	), keys AS (	-- the lines of those neighbouring days, in one pass
		SELECT l.billing_account_id, l.day, string_agg(l.line_key, ', ' ORDER BY l.line_key COLLATE "C") AS keys
		  FROM settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.tids) t
		         WHERE g.billing_account_id IN (SELECT nb.billing_account_id FROM nb))) l
		 WHERE (l.billing_account_id, l.day) IN (SELECT nb.billing_account_id, nb.before_day FROM nb
		                                          UNION SELECT nb.billing_account_id, nb.after_day FROM nb)
		 GROUP BY l.billing_account_id, l.day
	)
	SELECT recon_check_gap.period, 'gap', format('gap:%s/%s', recon_check_gap.period, nb.billing_account_id),
	       row_number() OVER (PARTITION BY nb.billing_account_id ORDER BY nb.day), 'unmatched', NULL, nb.day,
	       format('no line of account %s on %s; lines before: %s; after: %s', nb.billing_account_id, nb.day, b.keys, a.keys)
	  FROM nb
	  LEFT JOIN keys b ON b.billing_account_id = nb.billing_account_id AND b.day = nb.before_day
	  LEFT JOIN keys a ON a.billing_account_id = nb.billing_account_id AND a.day = nb.after_day;
	DROP TABLE recon_gap_day, recon_gap_acct_day, recon_gap_acct;
END $$;
COMMENT ON FUNCTION settle.recon_check_gap(settle.period, date, date, bigint) IS
	'Reconciliation check gap: days without a line of an account between days with lines, for accounts with lines on at least half the days of the month; each day named with its neighbours'' lines.';

-- ------------------------------------------------------------- check: currency

CREATE FUNCTION settle.recon_check_currency(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	PERFORM settle.recon_require_inputs();
	-- one billing currency per account and cycle
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, billing_account_id, currency,
		lines, status, detail)
	WITH a AS (	-- the accounts' currencies, from recon_grp: as settle.money_total of
		-- the account's lines would give them (amounts without a currency,
		-- the lowest and highest codes)
		SELECT g.billing_account_id, max(g.reseller_id) AS reseller_id, sum((g.mt).lines)::bigint AS lines,
		       min(g.currency COLLATE "C") FILTER (WHERE (g.mt).lines > 0) AS low,
		       max(g.currency COLLATE "C") FILTER (WHERE (g.mt).lines > 0) AS high,
		       bool_or(g.currency IS NULL AND (g.mt).lines > 0) AS no_currency
		  FROM recon_grp g WHERE g.billing_account_id IS NOT NULL GROUP BY g.billing_account_id
	), c AS MATERIALIZED (	-- the accounts with mixed currencies
		SELECT a.billing_account_id, a.reseller_id, a.lines,
		       CASE WHEN a.low IS NULL THEN NULL WHEN a.low = a.high THEN ARRAY[a.low::text] ELSE ARRAY[a.low::text, a.high::text] END AS currencies
		  FROM a WHERE a.lines > 0 AND (a.no_currency OR a.low <> a.high)
	), m AS (	-- their main currency: the most lines, the first in order among equals (as mode())
		SELECT DISTINCT ON (x.billing_account_id) x.billing_account_id, x.currency AS main_currency
		  FROM (SELECT g.billing_account_id, g.currency, sum(g.n) AS n FROM recon_grp g
		         WHERE g.currency IS NOT NULL AND g.billing_account_id IN (SELECT c.billing_account_id FROM c)
		         GROUP BY g.billing_account_id, g.currency) x
		 ORDER BY x.billing_account_id, x.n DESC, x.currency
	)
	SELECT recon_check_currency.period, 'currency', format('currency:%s/%s', recon_check_currency.period, c.billing_account_id),
	       c.reseller_id, c.billing_account_id, m.main_currency, c.lines, 'mismatched',
	       format('lines in %s currencies: %s', array_length(c.currencies, 1), array_to_string(c.currencies, ' .. '))
	  FROM c LEFT JOIN m ON m.billing_account_id = c.billing_account_id;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
	SELECT recon_check_currency.period, 'currency', r.scope_key,
	       row_number() OVER (PARTITION BY r.scope_key ORDER BY l.line_key COLLATE "C"), 'fx', l.line_key, l.revision, l.day,
	       l.billed_cost, format('billed in %s; the account''s cycle is billed in %s', coalesce(l.currency, 'no currency'), r.currency)
	  FROM settle.recon_result r
	  JOIN settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.tids) t
	         WHERE g.billing_account_id IN (SELECT x.billing_account_id FROM settle.recon_result x
	                                         WHERE x.period = recon_check_currency.period AND x.check_name = 'currency'))) l
	    ON l.billing_account_id = r.billing_account_id
	 WHERE r.period = recon_check_currency.period AND r.check_name = 'currency' AND l.currency IS DISTINCT FROM r.currency
	   AND (recon_check_currency.reseller_id IS NULL OR r.reseller_id = recon_check_currency.reseller_id);
END $$;
COMMENT ON FUNCTION settle.recon_check_currency(settle.period, date, date, bigint) IS
	'Reconciliation check currency: one billing currency per account and cycle; the lines in another are named (cause fx).';

-- ------------------------------------------------------------ check: statement

CREATE FUNCTION settle.recon_check_statement(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	-- 6. conservation: the lines of each current run add up to its statement
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, currency, lines, lines_total,
		other_total, delta, tolerance, status, missing_side, detail)
	SELECT recon_check_statement.period, 'statement', format('statement:%s/run:%s', recon_check_statement.period, ru.run_id), ru.reseller_id,
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
	 WHERE ru.period = recon_check_statement.period AND ru.status <> 'superseded'
	   AND (recon_check_statement.reseller_id IS NULL OR ru.reseller_id = recon_check_statement.reseller_id);
END $$;
COMMENT ON FUNCTION settle.recon_check_statement(settle.period, date, date, bigint) IS
	'Reconciliation check statement: the lines of each current run add up to its statement (total, line count, refunds, corrections) and to the run''s lines_out.';

-- ------------------------------------------------------------ check: refund_rate

CREATE FUNCTION settle.recon_check_refund_rate(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
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
		 WHERE ru.period = recon_check_refund_rate.period AND ru.status <> 'superseded'
		   AND (recon_check_refund_rate.reseller_id IS NULL OR ru.reseller_id = recon_check_refund_rate.reseller_id)
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
	SELECT recon_check_refund_rate.period, 'refund_rate', format('refunds:%s/run:%s', recon_check_refund_rate.period, f.run_id), f.reseller_id,
	       max(f.currency), count(*), sum(f.unrounded), sum(f.expected), sum(f.unrounded - f.expected), 0,
	       CASE WHEN bool_and(f.unrounded = f.expected AND f.rate IS NOT DISTINCT FROM f.orig_rate) THEN 'matched'
	            ELSE 'mismatched' END,
	       format('%s refund reversals checked against the rate their original earned', count(*))
	  FROM (SELECT r.*, coalesce(r.basis * r.orig_rate, r.unrounded) AS expected FROM recon_refund r) f
	 GROUP BY f.run_id, f.reseller_id;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, amount, detail)
	SELECT recon_check_refund_rate.period, 'refund_rate', format('refunds:%s/run:%s', recon_check_refund_rate.period, f.run_id),
	       row_number() OVER (PARTITION BY f.run_id ORDER BY f.line_key COLLATE "C"), 'refund', f.line_key, f.revision,
	       settle.recon_amount(f.unrounded - coalesce(f.basis * f.orig_rate, 0), f.minor_unit),
	       CASE WHEN f.orig_rate IS NULL THEN format('the original %s has no settled rate', f.ref)
	            ELSE format('reversed at %s, the original %s earned %s: %s x %s = %s, not %s', trim_scale(f.rate), f.ref,
	                        trim_scale(f.orig_rate), settle.recon_amount(f.basis, f.minor_unit), trim_scale(f.orig_rate),
	                        settle.recon_amount(f.basis * f.orig_rate, f.minor_unit),
	                        settle.recon_amount(f.unrounded, f.minor_unit)) END
	  FROM recon_refund f
	 WHERE f.orig_rate IS NULL OR f.rate IS DISTINCT FROM f.orig_rate OR f.unrounded <> f.basis * f.orig_rate;
	DROP TABLE recon_refund;
END $$;
COMMENT ON FUNCTION settle.recon_check_refund_rate(settle.period, date, date, bigint) IS
	'Reconciliation check refund_rate: every refund reversal of a current run at exactly the rate its original charge earned.';

-- ------------------------------------------------------------ check: settled_lines

CREATE FUNCTION settle.recon_check_settled_lines(period settle.period, p_start date, p_end date, reseller_id bigint)
	RETURNS void
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	-- 8. every charge of a run's period is settled at its current revision:
	-- the current charge lines of each run's reseller dated in the period,
	-- read from the lines billed the month before to the month after it
	CREATE TEMP TABLE recon_settled_cur ON COMMIT DROP AS
	SELECT r.run_id, c.reseller_id, c.customer_id, c.line_key, c.revision, c.charge_period_start, c.billed_cost
	  FROM (SELECT ru.reseller_id, ru.run_id, a.date_basis
	          FROM settle.run ru JOIN settle.agreement a ON a.reseller_id = ru.reseller_id AND a.agreement_id = ru.agreement_id
	         WHERE ru.period = recon_check_settled_lines.period AND ru.status <> 'superseded'
	           AND (recon_check_settled_lines.reseller_id IS NULL OR ru.reseller_id = recon_check_settled_lines.reseller_id)) r
	 CROSS JOIN LATERAL (
		SELECT DISTINCT ON (b.line_key) b.*
		  FROM settle.bill_line b
		 WHERE b.reseller_id = r.reseller_id AND b.billing_period_start >= (p_start - interval '1 month')::date
		   AND b.billing_period_start < (p_end + interval '1 month')::date
		 ORDER BY b.line_key, b.revision DESC) c
	 WHERE (CASE WHEN r.date_basis = 'invoice_period' THEN c.billing_period_start ELSE (c.charge_period_start AT TIME ZONE 'UTC')::date END) >= p_start
	   AND (CASE WHEN r.date_basis = 'invoice_period' THEN c.billing_period_start ELSE (c.charge_period_start AT TIME ZONE 'UTC')::date END) < p_end
	   AND c.original_line_key IS NULL AND c.source_item IS DISTINCT FROM 'Refund';
	-- fingerprints per customer first, lines only where they differ
	INSERT INTO settle.recon_result (period, check_name, scope_key, reseller_id, lines, lines_total, other_total,
		delta, tolerance, status, fingerprint, detail)
	WITH runs AS (
		SELECT ru.reseller_id, ru.run_id, a.date_basis
		  FROM settle.run ru JOIN settle.agreement a ON a.reseller_id = ru.reseller_id AND a.agreement_id = ru.agreement_id
		 WHERE ru.period = recon_check_settled_lines.period AND ru.status <> 'superseded'
		   AND (recon_check_settled_lines.reseller_id IS NULL OR ru.reseller_id = recon_check_settled_lines.reseller_id)
	), billed AS (
		SELECT b.run_id, b.reseller_id, b.customer_id, settle.line_fingerprint(b.line_key, b.revision) AS fp, count(*) AS n
		  FROM recon_settled_cur b
		 GROUP BY b.run_id, b.reseller_id, b.customer_id
	), settled AS (
		SELECT r.run_id, r.reseller_id, b.customer_id, settle.line_fingerprint(l.line_key, l.revision) AS fp, count(*) AS n
		  FROM runs r JOIN settle.settlement_line l ON l.reseller_id = r.reseller_id AND l.run_id = r.run_id AND l.kind = 'c'
		  LEFT JOIN settle.bill_line b ON b.reseller_id = l.reseller_id AND b.line_key = l.line_key AND b.revision = l.revision
		 GROUP BY r.run_id, r.reseller_id, b.customer_id
	)
	SELECT recon_check_settled_lines.period, 'settled_lines', format('settled:%s/run:%s/customer:%s', recon_check_settled_lines.period,
	           coalesce(x.run_id, y.run_id), coalesce(x.customer_id, y.customer_id)),
	       coalesce(x.reseller_id, y.reseller_id), coalesce(x.n, 0), coalesce(x.n, 0), coalesce(y.n, 0),
	       coalesce(x.n, 0) - coalesce(y.n, 0), 0,
	       CASE WHEN x.fp = y.fp THEN 'matched' WHEN y.fp IS NULL THEN 'missing' ELSE 'mismatched' END,
	       x.fp, 'bill lines of the period (current revisions) vs the run''s settlement lines'
	  FROM billed x FULL JOIN settled y ON x.run_id = y.run_id AND x.customer_id IS NOT DISTINCT FROM y.customer_id;
	INSERT INTO settle.recon_delta_line (period, check_name, scope_key, seq, cause, line_key, revision, day, amount, detail)
	SELECT recon_check_settled_lines.period, 'settled_lines', x.scope_key,
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
			 WHERE r.period = recon_check_settled_lines.period AND r.check_name = 'settled_lines' AND r.status <> 'matched'
			   AND (recon_check_settled_lines.reseller_id IS NULL OR r.reseller_id = recon_check_settled_lines.reseller_id)
		), cur AS (
			SELECT bad.scope_key, bad.run_id, x.line_key, x.revision, x.charge_period_start, x.billed_cost
			  FROM bad JOIN recon_settled_cur x ON x.run_id = bad.run_id AND x.customer_id IS NOT DISTINCT FROM bad.customer_id
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
	DROP TABLE recon_settled_cur;
END $$;
COMMENT ON FUNCTION settle.recon_check_settled_lines(settle.period, date, date, bigint) IS
	'Reconciliation check settled_lines: the (line key, revision) set of the period''s current charge lines against each current run''s commission lines, by fingerprint per customer; lines named only where the fingerprints differ.  Reads the bill lines billed from the month before the period to the month after it, not all history.';

-- ------------------------------------------------------------ the registry

INSERT INTO settle.recon_check (check_name, position, scope, function, tolerance_source, description) VALUES
	('provider_total', 10, 'billing cycle, billing account, product, currency and provider source',
	 'settle.recon_check_provider_total(settle.period, date, date, bigint)',
	 'agreement in force (tolerance_abs, tolerance_rel), else settle.recon_default',
	 'Current bill lines against the provider''s total; the delta split into late revisions, missing items, withdrawn lines, duplicates, FX and one rounding residue.'),
	('line_identity', 20, 'billing cycle, billing account and currency',
	 'settle.recon_check_line_identity(settle.period, date, date, bigint)',
	 'one minor unit of the currency (settle.currency.minor_unit)',
	 'List cost - discount - coupons = billed cost on every line.'),
	('duplicate', 30, 'billing cycle, source record and item kind',
	 'settle.recon_check_duplicate(settle.period, date, date, bigint)', 'none: exact',
	 'One source record ingested under several line keys.'),
	('gap', 40, 'billing cycle and billing account',
	 'settle.recon_check_gap(settle.period, date, date, bigint)', 'none: any day without lines',
	 'Days without lines between days with lines.'),
	('currency', 50, 'billing cycle and billing account',
	 'settle.recon_check_currency(settle.period, date, date, bigint)', 'none: exact',
	 'One billing currency per account and cycle.'),
	('statement', 60, 'period and run',
	 'settle.recon_check_statement(settle.period, date, date, bigint)', 'none: exact',
	 'A run''s settlement lines add up to its statement.'),
	('refund_rate', 70, 'period and run',
	 'settle.recon_check_refund_rate(settle.period, date, date, bigint)', 'none: exact',
	 'Refunds reversed at the rate their original earned.'),
	('settled_lines', 80, 'period, run and customer',
	 'settle.recon_check_settled_lines(settle.period, date, date, bigint)', 'none: exact',
	 'Every current charge line of the period settled at its current revision.');

-- ----------------------------------------------------------------- reconcile

CREATE FUNCTION settle.reconcile(period settle.period, reseller text DEFAULT NULL)
	RETURNS TABLE (check_name text, status text, scopes bigint, exceptions bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- the period's lines are hashed, not sorted (joins, distinct records); the
-- temporary inputs need only rough statistics; jit off: the scope statements'
-- estimated costs pass the JIT thresholds at a few hundred thousand lines,
-- and compiling (with inlining and optimization) took 1.4 s of a 1.7 s
-- statement at 200,000 lines, more than the work itself
SET work_mem = '256MB' SET default_statistics_target = 10 SET jit TO off AS $$
DECLARE
	t0 timestamptz := clock_timestamp();
	p_start date;
	p_end date;
	rid bigint;
	v_scope text;
	seen timestamptz;
	waited boolean := false;
	resellers bigint[];
	chk record;
	sc record;
	xid bigint;
	n bigint;
BEGIN
	IF period IS NULL THEN
		RAISE EXCEPTION 'a period is required' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'A period is a month written YYYY-MM, e.g. 2026-10.';
	END IF;
	PERFORM settle._bulk_priority();	-- settle.bulk_nice (docs/operator-guide.md)
	IF reseller IS NOT NULL THEN
		rid := settle.reseller_id(reseller);
	END IF;
	v_scope := coalesce(reseller, '*');
	p_start := to_date(period, 'YYYY-MM');
	p_end := (p_start + interval '1 month')::date;

	-- One reconciliation of a scope at a time; different periods, and
	-- different resellers of one period, run side by side.  A whole period
	-- takes its period's lock, a reseller shares it and takes its own.  A
	-- call that had to wait, and finds that the one it waited for finished
	-- the same scope (or the whole period), returns those results instead
	-- of doing the work again.
	SELECT max(u.finished_at) INTO seen FROM settle.recon_run u
	 WHERE u.period = reconcile.period AND u.scope IN (v_scope, '*');
	IF rid IS NULL THEN
		IF NOT pg_try_advisory_xact_lock(hashtext('settle.reconcile'), hashtext(period)) THEN
			waited := true;
			PERFORM pg_advisory_xact_lock(hashtext('settle.reconcile'), hashtext(period));
		END IF;
	ELSE
		IF NOT pg_try_advisory_xact_lock_shared(hashtext('settle.reconcile'), hashtext(period)) THEN
			waited := true;
			PERFORM pg_advisory_xact_lock_shared(hashtext('settle.reconcile'), hashtext(period));
		END IF;
		IF NOT pg_try_advisory_xact_lock(hashtext('settle.reconcile:reseller'), hashtext(period || '/' || rid)) THEN
			waited := true;
			PERFORM pg_advisory_xact_lock(hashtext('settle.reconcile:reseller'), hashtext(period || '/' || rid));
		END IF;
	END IF;
	IF waited AND current_setting('transaction_isolation') <> 'read committed' THEN
		-- this snapshot predates the other call's results: neither use nor overwrite them
		RAISE EXCEPTION 'settle.reconcile(%, %) ran in another session while this one waited', period, v_scope
			USING ERRCODE = 'serialization_failure',
			HINT = 'Retry the transaction: it will see (and return) the other session''s results.';
	END IF;
	IF waited AND EXISTS (SELECT 1 FROM settle.recon_run u WHERE u.period = reconcile.period AND u.scope IN (v_scope, '*')
	                       AND u.finished_at > coalesce(seen, '-infinity')) THEN
		RAISE NOTICE 'settle.reconcile(%, %): another session reconciled it while this call waited; returning its results',
			period, v_scope;
		RETURN QUERY
			SELECT r.check_name, r.status, count(*), count(r.exception_id)
			  FROM settle.recon_result r WHERE r.period = reconcile.period AND (rid IS NULL OR r.reseller_id = rid)
			 GROUP BY r.check_name, r.status ORDER BY r.check_name, r.status;
		RETURN;
	END IF;

	DELETE FROM settle.recon_result r WHERE r.period = reconcile.period AND (rid IS NULL OR r.reseller_id = rid);
	IF to_regclass('pg_temp.recon_grp') IS NOT NULL THEN	-- a second call in this transaction
		DROP VIEW pg_temp.recon_assign, pg_temp.recon_line;
		DROP TABLE pg_temp.recon_dup, pg_temp.recon_grp, pg_temp.recon_prov, pg_temp.recon_item;
	END IF;

	-- The period's inputs, read once.  The current revision of every bill
	-- line billed in the cycle, read through the index on (reseller,
	-- billing period) so that other periods' lines are never read (a line
	-- key holds its billing cycle: all revisions of a line are in the same
	-- period), once, by settle.recon_scan (C), which copies no line:
	-- recon_grp, the lines grouped by account, product and currency: their
	-- owner, exact total and fingerprint (the provider scopes' sums, owners
	-- and orphan groups), the number of lines, the days with lines as bits
	-- from p_start (days outside the first 62 counted apart), the lines off
	-- list - discount - coupons, and the tuple ids of the group's lines
	-- (tids) and of those whose source record another key also holds
	-- (dup_tids).  The checks read these few rows, and fetch the lines of
	-- the groups they name by tuple id (settle.recon_lines).
	resellers := CASE WHEN rid IS NULL THEN ARRAY(SELECT x.reseller_id FROM settle.reseller x) || 0::bigint
	                  ELSE ARRAY[rid] END;
	CREATE TEMP TABLE recon_grp ON COMMIT DROP AS
		SELECT * FROM settle.recon_scan(resellers, p_start, p_end);
	-- recon_line: every current line of the period, as a view (for checks
	-- that read all lines; dropped with recon_grp at commit): the lines the
	-- scan saw, fetched by tuple id
	CREATE TEMP VIEW recon_line AS
		SELECT l.* FROM settle.recon_lines(ARRAY(SELECT t FROM pg_temp.recon_grp g, unnest(g.tids) t)) l;
	-- recon_dup: source records (of one item kind) under several keys,
	-- grouped exactly over the lines of the candidate records only
	CREATE TEMP TABLE recon_dup ON COMMIT DROP AS
		SELECT l.source_record_id, l.source_item, min(l.line_key COLLATE "C") AS first_key, count(*) AS n
		  FROM settle.recon_lines(ARRAY(SELECT t FROM recon_grp g, unnest(g.dup_tids) t)) l
		 WHERE l.source_item IS NOT NULL
		 GROUP BY l.source_record_id, l.source_item HAVING count(*) > 1;
	-- recon_prov: the provider's totals of the cycle (the reseller's accounts)
	CREATE TEMP TABLE recon_prov ON COMMIT DROP AS
		SELECT s.* FROM settle.provider_side s
		 WHERE s.billing_cycle = reconcile.period
		   AND (rid IS NULL OR s.billing_account_id IN (SELECT g.billing_account_id FROM recon_grp g)
		        OR s.billing_account_id IN (SELECT m.account_id FROM settle.customer_account m WHERE m.reseller_id = rid));
	-- recon_item: the latest item listing of each source of the cycle
	CREATE TEMP TABLE recon_item ON COMMIT DROP AS
		SELECT i.source, i.billing_account_id, i.product_code, i.currency::text AS currency, i.record_id, i.item,
		       i.amount, i.imported_at
		  FROM settle.provider_item_import i
		 WHERE i.billing_cycle = reconcile.period
		   AND i.import_id = (SELECT max(j.import_id) FROM settle.provider_item_import j
		                       WHERE j.source = i.source AND j.billing_cycle = i.billing_cycle)
		   AND (i.source, i.billing_account_id) IN (SELECT p.source, p.billing_account_id FROM recon_prov p);
	ANALYZE recon_prov;
	ANALYZE recon_item;
	-- recon_assign: lines go to the provider scope of their own currency; a
	-- line in another currency than the provider's only one for its account
	-- and product is converted at the recorded month-end FX rate (cause fx).
	-- A view over recon_prov and recon_line (dropped with them at commit),
	-- not a copy of the period's lines: its readers aggregate it once or
	-- join it to the few scopes that differ.
	EXECUTE format($v$
	CREATE TEMP VIEW recon_assign AS
		SELECT p.source, p.billing_account_id, p.product_code, p.currency AS scope_currency,
		       l.line_key, l.revision, l.currency, l.billed_cost AS amount, NULL::numeric AS fx_rate, false AS converted
		  FROM pg_temp.recon_prov p JOIN pg_temp.recon_line l
		    ON l.billing_account_id = p.billing_account_id AND l.product_code = p.product_code AND l.currency = p.currency
		UNION ALL
		SELECT p.source, p.billing_account_id, p.product_code, p.currency, l.line_key, l.revision, l.currency,
		       round(l.billed_cost * fx.rate, 8), fx.rate, true
		  FROM (SELECT q.source, q.billing_account_id, q.product_code, min(q.currency) AS currency
		          FROM pg_temp.recon_prov q GROUP BY q.source, q.billing_account_id, q.product_code HAVING count(*) = 1) p
		  JOIN pg_temp.recon_line l
		    ON l.billing_account_id = p.billing_account_id AND l.product_code = p.product_code AND l.currency <> p.currency
		  LEFT JOIN LATERAL (
			SELECT f.rate FROM settle.fx_rate_current f
			 WHERE f.base_currency = l.currency AND f.quote_currency = p.currency AND f.rate_date = %L::date
			 ORDER BY f.source COLLATE "C" LIMIT 1) fx ON true$v$, p_end - 1);

	-- the registered checks, in order
	FOR chk IN SELECT c.check_name, c.function FROM settle.recon_check c WHERE c.enabled ORDER BY c.position LOOP
		EXECUTE format('SELECT %s($1, $2, $3, $4)', to_regprocedure(chk.function)::oid::regproc)
			USING period, p_start, p_end, rid;
	END LOOP;

	-- the causes of each result
	UPDATE settle.recon_result r SET causes = c.causes
	  FROM (SELECT d.check_name, d.scope_key, array_agg(DISTINCT d.cause ORDER BY d.cause) AS causes
	          FROM settle.recon_delta_line d WHERE d.period = reconcile.period
	         GROUP BY d.check_name, d.scope_key) c
	 WHERE r.period = reconcile.period AND r.check_name = c.check_name AND r.scope_key = c.scope_key
	   AND (rid IS NULL OR r.reseller_id = rid);

	-- beyond tolerance: one open exception per scope, refreshed on re-runs
	-- (settle.open_exception records "detected: reconciliation_delta" as the
	-- reason unless the caller set one)
	FOR sc IN
		SELECT r.* FROM settle.recon_result r
		 WHERE r.period = reconcile.period AND r.status IN ('mismatched', 'missing') AND (rid IS NULL OR r.reseller_id = rid)
		 ORDER BY r.reseller_id, r.check_name, r.scope_key
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

	SELECT count(*) INTO n FROM settle.recon_result r WHERE r.period = reconcile.period AND (rid IS NULL OR r.reseller_id = rid);
	INSERT INTO settle.recon_run AS u (period, scope, started_at, finished_at, results)
	VALUES (reconcile.period, v_scope, t0, clock_timestamp(), n)
	ON CONFLICT ON CONSTRAINT recon_run_pkey DO UPDATE SET started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
		run_by = EXCLUDED.run_by, results = EXCLUDED.results;

	RETURN QUERY
		SELECT r.check_name, r.status, count(*), count(r.exception_id)
		  FROM settle.recon_result r WHERE r.period = reconcile.period AND (rid IS NULL OR r.reseller_id = rid)
		 GROUP BY r.check_name, r.status ORDER BY r.check_name, r.status;
END $$;
COMMENT ON FUNCTION settle.reconcile(settle.period, text) IS
	'Reconciles a period (YYYY-MM), or one reseller''s part of it: runs every enabled check of settle.recon_check over the period''s current bill lines (read by billing period, never all history), replaces the results, names the lines behind every delta by cause, opens (or refreshes) one reconciliation_delta exception per scope beyond tolerance, and returns counts per check and status.  Different periods and different resellers reconcile concurrently; a call that waits for another of the same scope returns that one''s results.';

-- ---------------------------------------------------------------------- views

CREATE VIEW settle.reconciliation_summary AS
	SELECT r.period, r.check_name, r.scope_key, r.reseller_id, rs.code::text AS reseller,
	       r.billing_account_id, r.product_code, r.currency, r.source, r.status, r.missing_side,
	       r.lines, r.lines_total, r.other_total, r.delta, r.tolerance, array_to_string(r.causes, ',') AS causes,
	       (SELECT count(*) FROM settle.recon_delta_line d
	         WHERE d.period = r.period AND d.check_name = r.check_name AND d.scope_key = r.scope_key) AS delta_lines,
	       encode(r.fingerprint, 'hex') AS fingerprint, r.detail, r.exception_id, e.state::text AS exception_state,
	       r.reconciled_at
	  FROM settle.recon_result r
	  LEFT JOIN settle.reseller rs ON rs.reseller_id = r.reseller_id
	  LEFT JOIN settle.exception e ON e.reseller_id = r.reseller_id AND e.exception_id = r.exception_id;
COMMENT ON VIEW settle.reconciliation_summary IS
	'Stable view for BI tools: the last reconciliation of every period, one row per check and scope, with its status (matched / within_tolerance / mismatched / missing), both sides, the delta, the tolerance, the causes found and the exception it opened.';
COMMENT ON COLUMN settle.reconciliation_summary.period IS 'The period reconciled (YYYY-MM): the billing cycle for provider and line checks, the settlement period for run checks.';
COMMENT ON COLUMN settle.reconciliation_summary.check_name IS 'The check (settle.recon_check): provider_total, line_identity, duplicate, gap, currency, statement, refund_rate, settled_lines, or one added later.';
COMMENT ON COLUMN settle.reconciliation_summary.scope_key IS 'What was compared, e.g. provider:2026-10/<account>/<product>/<currency>@<source>; the exception''s scope_key.';
COMMENT ON COLUMN settle.reconciliation_summary.reseller_id IS 'The reseller the scope belongs to (0: unmapped accounts).';
COMMENT ON COLUMN settle.reconciliation_summary.reseller IS 'The reseller''s code (null for reseller 0).';
COMMENT ON COLUMN settle.reconciliation_summary.billing_account_id IS 'The billing account of the scope (provider, identity, gap and currency checks).';
COMMENT ON COLUMN settle.reconciliation_summary.product_code IS 'The product code of the scope, lower case (provider_total).';
COMMENT ON COLUMN settle.reconciliation_summary.currency IS 'The scope''s currency (ISO 4217): amounts of the row are in it.';
COMMENT ON COLUMN settle.reconciliation_summary.source IS 'The provider total source (connector:<name> or import:<name>) of a provider_total scope.';
COMMENT ON COLUMN settle.reconciliation_summary.status IS 'matched (delta 0), within_tolerance, mismatched (beyond tolerance) or missing (one side absent: see missing_side).';
COMMENT ON COLUMN settle.reconciliation_summary.missing_side IS 'For missing: which side has nothing (lines, provider, statement, lineage).';
COMMENT ON COLUMN settle.reconciliation_summary.lines IS 'Bill lines (or settlement lines) on our side of the scope.';
COMMENT ON COLUMN settle.reconciliation_summary.lines_total IS 'Our side''s exact total, in the scope currency (lines in another currency converted at the recorded FX rate).';
COMMENT ON COLUMN settle.reconciliation_summary.other_total IS 'The other side: the provider''s total, the statement total, the expected refund reversal, the settled line count.';
COMMENT ON COLUMN settle.reconciliation_summary.delta IS 'lines_total - other_total.';
COMMENT ON COLUMN settle.reconciliation_summary.tolerance IS 'The absolute tolerance that applied: max(tolerance_abs, tolerance_rel x |other_total|) of the agreement in force (settle.recon_default for unmapped scopes).';
COMMENT ON COLUMN settle.reconciliation_summary.causes IS 'The distinct causes of the scope''s delta rows, comma-separated in name order (late_revision, missing, withdrawn, duplicate, fx, rounding, refund, unmatched).';
COMMENT ON COLUMN settle.reconciliation_summary.delta_lines IS 'Rows in settle.reconciliation_delta for this scope.';
COMMENT ON COLUMN settle.reconciliation_summary.fingerprint IS 'settle.line_fingerprint of our side''s (line key, amount) pairs, in hex: unchanged between runs when the lines did not change.';
COMMENT ON COLUMN settle.reconciliation_summary.detail IS 'What was compared or found, in words.';
COMMENT ON COLUMN settle.reconciliation_summary.exception_id IS 'The reconciliation_delta exception opened or refreshed for this scope (mismatched and missing only).';
COMMENT ON COLUMN settle.reconciliation_summary.exception_state IS 'The state of that exception now (pending, proposed, approved, resolved, ...).';
COMMENT ON COLUMN settle.reconciliation_summary.reconciled_at IS 'When the reconciliation that wrote the row started.';

CREATE VIEW settle.reconciliation_delta AS
	SELECT d.period, d.check_name, d.scope_key, r.reseller_id, r.billing_account_id, r.product_code, r.currency,
	       r.status, d.seq, d.cause, d.line_key, d.revision, d.record_id, d.day, d.amount, d.old_amount, d.new_amount,
	       d.detail
	  FROM settle.recon_delta_line d
	  JOIN settle.recon_result r ON r.period = d.period AND r.check_name = d.check_name AND r.scope_key = d.scope_key;
COMMENT ON VIEW settle.reconciliation_delta IS
	'Stable view for BI tools: for every result that is not an exact match, the lines (or provider items) that explain it, one row each, classified by cause, with the part of the delta each explains; a provider scope''s amounts add up to its delta exactly.';
COMMENT ON COLUMN settle.reconciliation_delta.period IS 'The period reconciled (YYYY-MM).';
COMMENT ON COLUMN settle.reconciliation_delta.check_name IS 'The check whose result this row explains.';
COMMENT ON COLUMN settle.reconciliation_delta.scope_key IS 'The scope explained (settle.reconciliation_summary.scope_key).';
COMMENT ON COLUMN settle.reconciliation_delta.reseller_id IS 'The reseller the scope belongs to (0: unmapped accounts).';
COMMENT ON COLUMN settle.reconciliation_delta.billing_account_id IS 'The billing account of the scope.';
COMMENT ON COLUMN settle.reconciliation_delta.product_code IS 'The product code of the scope, lower case.';
COMMENT ON COLUMN settle.reconciliation_delta.currency IS 'The scope''s currency: amount, old_amount and new_amount are in it.';
COMMENT ON COLUMN settle.reconciliation_delta.status IS 'The scope''s status (settle.reconciliation_summary.status).';
COMMENT ON COLUMN settle.reconciliation_delta.seq IS 'The row''s number within its scope, 1, 2, ... in the order settle.explain_delta shows them.';
COMMENT ON COLUMN settle.reconciliation_delta.cause IS 'late_revision: the provider counted another revision of the line (old_amount) than ours (new_amount); missing: a provider item without a stored line; withdrawn: a stored line the provider no longer lists, or withdrawn after the provider counted it; duplicate: the same source record under another key; fx: converted at another rate than the provider''s; rounding: the provider''s total rounded to the currency''s minor unit (one row per scope); refund: reversed at another rate than its original earned; unmatched: what no rule explains.';
COMMENT ON COLUMN settle.reconciliation_delta.line_key IS 'The bill line behind the row; null for a provider item without a line, a scope''s rounding or an unexplained remainder.';
COMMENT ON COLUMN settle.reconciliation_delta.revision IS 'The line''s current revision.';
COMMENT ON COLUMN settle.reconciliation_delta.record_id IS 'The provider''s record id of the line or item (bill_line.source_record_id).';
COMMENT ON COLUMN settle.reconciliation_delta.day IS 'The charge day of the line, or the first day without a line for an unexplained shortfall.';
COMMENT ON COLUMN settle.reconciliation_delta.amount IS 'The part of the scope''s delta this row explains, in the scope currency (new_amount - old_amount for a line the provider counts too).';
COMMENT ON COLUMN settle.reconciliation_delta.old_amount IS 'What the provider counted for the line or item (the revision in force when its total was taken, or its listed amount); null when it counted nothing.';
COMMENT ON COLUMN settle.reconciliation_delta.new_amount IS 'What our side counts for the line (its current revision, converted for fx); null for a provider item without a line.';
COMMENT ON COLUMN settle.reconciliation_delta.detail IS 'The row in words: revisions, times, rates, the provider''s amount.';

CREATE VIEW settle.reconciliation_cause AS
	SELECT r.period, r.check_name, r.scope_key, r.reseller_id, rs.code::text AS reseller, r.billing_account_id,
	       r.product_code, r.currency, r.source, r.status, d.cause, count(*) AS delta_lines, sum(d.amount) AS amount,
	       r.delta AS scope_delta
	  FROM settle.recon_delta_line d
	  JOIN settle.recon_result r ON r.period = d.period AND r.check_name = d.check_name AND r.scope_key = d.scope_key
	  LEFT JOIN settle.reseller rs ON rs.reseller_id = r.reseller_id
	 GROUP BY r.period, r.check_name, r.scope_key, r.reseller_id, rs.code, r.billing_account_id, r.product_code,
	          r.currency, r.source, r.status, d.cause, r.delta;
COMMENT ON VIEW settle.reconciliation_cause IS
	'Stable view for BI tools: each scope''s delta by cause, one row per scope and cause, with the number of rows and the amount they explain; for a provider scope the amounts of its causes add up to scope_delta.';
COMMENT ON COLUMN settle.reconciliation_cause.period IS 'The period reconciled (YYYY-MM).';
COMMENT ON COLUMN settle.reconciliation_cause.check_name IS 'The check of the scope.';
COMMENT ON COLUMN settle.reconciliation_cause.scope_key IS 'The scope (settle.reconciliation_summary.scope_key).';
COMMENT ON COLUMN settle.reconciliation_cause.reseller_id IS 'The reseller the scope belongs to (0: unmapped accounts).';
COMMENT ON COLUMN settle.reconciliation_cause.reseller IS 'The reseller''s code (null for reseller 0).';
COMMENT ON COLUMN settle.reconciliation_cause.billing_account_id IS 'The billing account of the scope.';
COMMENT ON COLUMN settle.reconciliation_cause.product_code IS 'The product code of the scope, lower case.';
COMMENT ON COLUMN settle.reconciliation_cause.currency IS 'The scope''s currency: amount and scope_delta are in it.';
COMMENT ON COLUMN settle.reconciliation_cause.source IS 'The provider total source of a provider_total scope.';
COMMENT ON COLUMN settle.reconciliation_cause.status IS 'The scope''s status.';
COMMENT ON COLUMN settle.reconciliation_cause.cause IS 'The cause (settle.reconciliation_delta.cause).';
COMMENT ON COLUMN settle.reconciliation_cause.delta_lines IS 'Rows of settle.reconciliation_delta with this cause in the scope.';
COMMENT ON COLUMN settle.reconciliation_cause.amount IS 'The part of the scope''s delta they explain.';
COMMENT ON COLUMN settle.reconciliation_cause.scope_delta IS 'The scope''s whole delta (lines_total - other_total).';

CREATE FUNCTION settle.explain_delta(period settle.period, scope_key text)
	RETURNS TABLE (step integer, cause text, line_key text, amount numeric, explained numeric, detail text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r settle.recon_result;
	total numeric;
	rows integer;
BEGIN
	IF period IS NULL OR scope_key IS NULL THEN
		RAISE EXCEPTION 'a period and a scope key are required' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT * INTO r FROM settle.recon_result x WHERE x.period = explain_delta.period AND x.scope_key = explain_delta.scope_key;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'no reconciliation result for scope "%" in period %', scope_key, period
			USING ERRCODE = 'no_data_found', HINT = 'Run settle.reconcile(period) first.';
	END IF;
	step := 0; cause := NULL; line_key := NULL; amount := r.delta; explained := 0;
	detail := format('%s %s: %s, ours %s vs theirs %s, delta %s (tolerance %s)%s', r.check_name, r.scope_key,
	                 r.status, coalesce(r.lines_total::text, '-'), coalesce(r.other_total::text, '-'),
	                 coalesce(r.delta::text, '-'), coalesce(r.tolerance::text, '-'),
	                 coalesce('; ' || r.detail, ''));
	RETURN NEXT;
	-- steps 1 .. n: each row and what the rows so far explain
	RETURN QUERY
		SELECT (row_number() OVER w)::integer, d.cause, d.line_key, d.amount, sum(coalesce(d.amount, 0)) OVER w, d.detail
		  FROM settle.recon_delta_line d
		 WHERE d.period = r.period AND d.check_name = r.check_name AND d.scope_key = r.scope_key
		WINDOW w AS (ORDER BY d.seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
		 ORDER BY d.seq;
	SELECT count(*), coalesce(sum(d.amount), 0) INTO rows, total FROM settle.recon_delta_line d
	 WHERE d.period = r.period AND d.check_name = r.check_name AND d.scope_key = r.scope_key;
	IF r.delta IS NOT NULL AND r.status <> 'matched' THEN
		-- step n + 1: what is left
		step := rows + 1; cause := NULL; line_key := NULL; amount := r.delta - total; explained := total;
		detail := CASE WHEN r.delta - total = 0 THEN format('the %s row(s) above explain the whole delta of %s', rows, r.delta)
		               ELSE format('%s of the delta %s is not attributed to a row', r.delta - total, r.delta) END;
		RETURN NEXT;
	END IF;
END $$;
COMMENT ON FUNCTION settle.explain_delta(settle.period, text) IS
	'One scope''s reconciliation step by step: the comparison (step 0), each row that explains the delta with its cause, amount and the running total explained (steps 1 to n, at any size), and what remains (step n + 1).';

-- ------------------------------------------------------------ append-only

DO $ao$
BEGIN
	CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON settle.provider_total_import
		FOR EACH ROW EXECUTE FUNCTION settle.append_only_trigger();
	CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON settle.provider_total_import
		FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger();
	ALTER TABLE settle.provider_total_import ENABLE ALWAYS TRIGGER append_only;
	ALTER TABLE settle.provider_total_import ENABLE ALWAYS TRIGGER append_only_truncate;
	CREATE TRIGGER append_only BEFORE UPDATE OR DELETE ON settle.provider_item_import
		FOR EACH ROW EXECUTE FUNCTION settle.append_only_trigger();
	CREATE TRIGGER append_only_truncate BEFORE TRUNCATE ON settle.provider_item_import
		FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger();
	ALTER TABLE settle.provider_item_import ENABLE ALWAYS TRIGGER append_only;
	ALTER TABLE settle.provider_item_import ENABLE ALWAYS TRIGGER append_only_truncate;
	-- tolerances and the checks are configuration: audited, with a reason, like agreements
	CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON settle.recon_default
		FOR EACH ROW EXECUTE FUNCTION settle.audit_trigger('reason_required');
	ALTER TABLE settle.recon_default ENABLE ALWAYS TRIGGER audit;
	CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON settle.recon_check
		FOR EACH ROW EXECUTE FUNCTION settle.audit_trigger('reason_required');
	ALTER TABLE settle.recon_check ENABLE ALWAYS TRIGGER audit;
	ALTER TABLE settle.recon_check ENABLE ALWAYS TRIGGER check_valid;
END
$ao$;

SELECT pg_catalog.pg_extension_config_dump('settle.provider_total_import', '');
SELECT pg_catalog.pg_extension_config_dump('settle.provider_item_import', '');
SELECT pg_catalog.pg_extension_config_dump('settle.recon_result', '');
SELECT pg_catalog.pg_extension_config_dump('settle.recon_delta_line', '');
SELECT pg_catalog.pg_extension_config_dump('settle.recon_run', '');
