-- 75: payouts and statement documents: payee bank details,
-- payout batches from locked statements, payout files (CSV and ISO 20022
-- pain.001.001.03), payout confirmations, and the reseller statement as CSV
-- and printable HTML.  See docs/payouts.md and docs/statements.md.

-- ---------------------------------------------------------------------------
-- Small text helpers (pure functions).

CREATE FUNCTION settle.xml_escape(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT replace(replace(replace(replace(replace($1, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
	               '"', '&quot;'), '''', '&#39;')
$$;
COMMENT ON FUNCTION settle.xml_escape(text) IS
	'Escapes a value for XML or HTML text and attribute content: & < > " and '' become entities.';

CREATE FUNCTION settle.csv_field(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE WHEN $1 IS NULL THEN ''
	            WHEN $1 ~ '[",\r\n]' OR $1 ~ '^\s' OR $1 ~ '\s$' THEN '"' || replace($1, '"', '""') || '"'
	            ELSE $1 END
$$;
COMMENT ON FUNCTION settle.csv_field(text) IS
	'One RFC 4180 CSV field: quoted (with doubled quotes) when it holds a comma, quote, line break or edge blank; NULL is empty.';

CREATE FUNCTION settle.format_amount(amount settle.exact_amount, currency text) RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT round($1, c.minor_unit)::text FROM settle.currency c WHERE c.currency_code = $2
$$;
COMMENT ON FUNCTION settle.format_amount(settle.exact_amount, text) IS
	'An amount written with exactly the currency''s ISO 4217 minor-unit digits (JPY 1234, USD 12.30, KWD 1.250).';

CREATE FUNCTION settle.iban_valid(iban text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s text;
	d text := '';
	ch text;
	r int := 0;
	i int;
BEGIN
	IF iban !~ '^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$' THEN
		RETURN false;
	END IF;
	s := substr(iban, 5) || substr(iban, 1, 4);
	FOR i IN 1 .. length(s) LOOP
		ch := substr(s, i, 1);
		d := d || CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END;
	END LOOP;
	FOR i IN 1 .. length(d) LOOP
		r := (r * 10 + ascii(substr(d, i, 1)) - 48) % 97;
	END LOOP;
	RETURN r = 1;
END $$;
COMMENT ON FUNCTION settle.iban_valid(text) IS
	'True when the text is a well-formed IBAN (upper case, no blanks) whose ISO 13616 mod-97 check digits are right.';

CREATE FUNCTION settle.iban_mask(iban text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
	SELECT left($1, 2) || repeat('*', greatest(length($1) - 6, 0)) || right($1, 4)
$$;
COMMENT ON FUNCTION settle.iban_mask(text) IS
	'An IBAN with everything but the country code and the last four characters replaced by *: what logs, errors and the audit trail may show.';

-- ---------------------------------------------------------------------------
-- Settings: the operator's own name and account (the debtor of every payout).

CREATE TABLE settle.payout_setting (
	singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	operator_name  text    NOT NULL CHECK (length(operator_name) BETWEEN 1 AND 70),
	debtor_iban    text    NOT NULL CHECK (settle.iban_valid(debtor_iban)),
	debtor_bic     text    NOT NULL CHECK (debtor_bic ~ '^[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?$'),
	debtor_country char(2) NOT NULL CHECK (debtor_country ~ '^[A-Z]{2}$'),
	msg_id_prefix  text    NOT NULL DEFAULT 'SETTLE' CHECK (msg_id_prefix ~ '^[A-Za-z0-9]{1,10}$'),
	updated_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
	updated_by     text    NOT NULL DEFAULT session_user
);
COMMENT ON TABLE settle.payout_setting IS
	'The operator''s payout settings (one row): its name (printed on statements, InitgPty and Dbtr of pain.001), the account payouts are paid from (IBAN, BIC, country) and the message id prefix.  Set with settle.set_payout_setting; audited.';
COMMENT ON COLUMN settle.payout_setting.msg_id_prefix IS 'Prefix of pain.001 MsgId: <prefix>-<period>-<currency>-<batch id>.';

CREATE FUNCTION settle.set_payout_setting(operator_name text, debtor_iban text, debtor_bic text,
	debtor_country text, msg_id_prefix text DEFAULT 'SETTLE') RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	SET log_min_error_statement = panic AS $$
DECLARE
	iban text := upper(regexp_replace(coalesce(debtor_iban, ''), '\s', '', 'g'));
BEGIN
	IF NOT settle.iban_valid(iban) THEN
		RAISE EXCEPTION 'the operator''s IBAN is not valid' USING ERRCODE = 'invalid_parameter_value',
			DETAIL = pg_catalog.format('%s fails the ISO 13616 format or mod-97 check.', settle.iban_mask(iban));
	END IF;
	INSERT INTO settle.payout_setting AS s (singleton, operator_name, debtor_iban, debtor_bic, debtor_country, msg_id_prefix)
	VALUES (true, set_payout_setting.operator_name, iban, upper(set_payout_setting.debtor_bic),
	        upper(set_payout_setting.debtor_country), set_payout_setting.msg_id_prefix)
	ON CONFLICT (singleton) DO UPDATE
	   SET operator_name = excluded.operator_name, debtor_iban = excluded.debtor_iban,
	       debtor_bic = excluded.debtor_bic, debtor_country = excluded.debtor_country,
	       msg_id_prefix = excluded.msg_id_prefix, updated_at = now(), updated_by = session_user;
END $$;
COMMENT ON FUNCTION settle.set_payout_setting(text, text, text, text, text) IS
	'Finance sets the operator''s name and paying account (IBAN, BIC, country) used by new payout batches and statements.  Requires settle.reason (audited); a bad IBAN or BIC is refused (22023, 23514).';

-- ---------------------------------------------------------------------------
-- Payee bank details.  Versioned and append-only: a batch refers to the
-- version it paid, so its files regenerate byte for byte.  Readable by
-- settle_finance and settle_admin only, and NOT in the generic audit trail:
-- each change is recorded in settle.payee_change (audited) with the IBAN
-- masked, so the audit log's before/after never holds an IBAN in clear.

CREATE TABLE settle.payee (
	reseller_id    bigint  NOT NULL REFERENCES settle.reseller,
	version        integer NOT NULL CHECK (version > 0),
	account_holder text    NOT NULL CHECK (length(account_holder) BETWEEN 1 AND 70),
	iban           text    NOT NULL CHECK (settle.iban_valid(iban)),
	bic            text    NOT NULL CHECK (bic ~ '^[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?$'),
	country        char(2) NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
	currency       char(3) NOT NULL REFERENCES settle.currency,
	recorded_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
	recorded_by    text    NOT NULL DEFAULT session_user,
	PRIMARY KEY (reseller_id, version)
);
COMMENT ON TABLE settle.payee IS
	'Payee bank details of a reseller: account holder, IBAN, BIC, country and account currency.  Versioned and append-only (the highest version is in force; payouts refer to the version they paid).  Readable only by settle_finance and settle_admin; changes are audited through settle.payee_change with the IBAN masked.';
COMMENT ON COLUMN settle.payee.account_holder IS 'Name of the account holder (pain.001 Cdtr/Nm, at most 70 characters).';
COMMENT ON COLUMN settle.payee.iban IS 'IBAN, upper case without blanks, mod-97 checked.';
COMMENT ON COLUMN settle.payee.bic IS 'BIC of the payee''s bank (pain.001 CdtrAgt).';
COMMENT ON COLUMN settle.payee.currency IS 'Currency of the account: must equal the settlement currency of the statements paid to it.';

CREATE TABLE settle.payee_change (
	change_id      bigint  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	reseller_id    bigint  NOT NULL,
	version        integer NOT NULL,
	account_holder text    NOT NULL,
	iban_masked    text    NOT NULL,
	bic            text    NOT NULL,
	country        char(2) NOT NULL,
	currency       char(3) NOT NULL,
	changed_at     timestamptz NOT NULL DEFAULT pg_catalog.now(),
	changed_by     text    NOT NULL DEFAULT session_user,
	FOREIGN KEY (reseller_id, version) REFERENCES settle.payee
);
COMMENT ON TABLE settle.payee_change IS
	'One row per change of payee bank details, with the IBAN masked (country code and last four characters): this is what the audit trail records about bank details.  Append-only.';

CREATE FUNCTION settle.set_payee(reseller text, account_holder text, iban text, bic text,
	country text, currency text) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
	-- an error must not copy the calling statement (with the IBAN) into the server log
	SET log_min_error_statement = panic AS $$
DECLARE
	rid bigint := settle.reseller_id(reseller);
	v_iban text := upper(regexp_replace(coalesce(iban, ''), '\s', '', 'g'));
	v_bic text := upper(btrim(coalesce(bic, '')));
	v int;
BEGIN
	-- Never put the IBAN itself into a message: errors end up in the server log.
	IF NOT settle.iban_valid(v_iban) THEN
		RAISE EXCEPTION 'the IBAN given for reseller "%" is not valid', reseller USING ERRCODE = 'invalid_parameter_value',
			DETAIL = pg_catalog.format('%s fails the ISO 13616 format or mod-97 check.', settle.iban_mask(v_iban));
	END IF;
	IF v_bic !~ '^[A-Z]{6}[A-Z2-9][A-NP-Z0-9]([A-Z0-9]{3})?$' THEN
		RAISE EXCEPTION 'the BIC given for reseller "%" is not valid', reseller USING ERRCODE = 'invalid_parameter_value',
			DETAIL = 'A BIC has 8 or 11 characters: bank (4 letters), country (2 letters), location (2), branch (3, optional).';
	END IF;
	IF coalesce(length(btrim(account_holder)), 0) NOT BETWEEN 1 AND 70 THEN
		RAISE EXCEPTION 'the account holder name must have 1 to 70 characters' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF upper(coalesce(country, '')) !~ '^[A-Z]{2}$' THEN
		RAISE EXCEPTION 'invalid country code "%"', country USING ERRCODE = 'invalid_parameter_value',
			HINT = 'An ISO 3166 alpha-2 code, e.g. SG.';
	END IF;
	PERFORM settle.check_currency(currency);
	PERFORM pg_advisory_xact_lock(hashtext('settle.payee'), rid::int);
	SELECT coalesce(max(p.version), 0) + 1 INTO v FROM settle.payee p WHERE p.reseller_id = rid;
	INSERT INTO settle.payee (reseller_id, version, account_holder, iban, bic, country, currency)
	VALUES (rid, v, btrim(account_holder), v_iban, v_bic, upper(country), currency);
	INSERT INTO settle.payee_change (reseller_id, version, account_holder, iban_masked, bic, country, currency)
	VALUES (rid, v, btrim(account_holder), settle.iban_mask(v_iban), v_bic, upper(country), currency);
	RETURN v;
END $$;
COMMENT ON FUNCTION settle.set_payee(text, text, text, text, text, text) IS
	'Finance records a reseller''s bank details (a new version; earlier batches keep the version they paid).  Requires settle.reason; a bad IBAN (mod-97), BIC, name or country is refused (22023) without echoing the IBAN.';

CREATE VIEW settle.payee_current AS
	SELECT DISTINCT ON (p.reseller_id) p.*
	  FROM settle.payee p
	 ORDER BY p.reseller_id, p.version DESC;
COMMENT ON VIEW settle.payee_current IS 'The payee bank details in force per reseller (finance and admin only).';

-- ---------------------------------------------------------------------------
-- Payout batches and payouts.

CREATE TABLE settle.payout_batch (
	batch_id        bigint      GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY CHECK (batch_id > 0),
	period          text        NOT NULL CHECK (settle.check_period(period)),
	currency        char(3)     NOT NULL REFERENCES settle.currency,
	status          text        NOT NULL DEFAULT 'created'
	                            CHECK (status IN ('created', 'partially_confirmed', 'confirmed')),
	msg_id          text        NOT NULL UNIQUE CHECK (length(msg_id) <= 35),
	created_at      timestamptz NOT NULL,
	created_by      text        NOT NULL DEFAULT session_user,
	execution_date  date        NOT NULL,
	operator_name   text        NOT NULL,
	debtor_iban     text        NOT NULL,
	debtor_bic      text        NOT NULL,
	debtor_country  char(2)     NOT NULL,
	payouts         integer     NOT NULL CHECK (payouts > 0),
	control_sum     numeric     NOT NULL CHECK (control_sum > 0),
	confirmed_at    timestamptz
);
COMMENT ON TABLE settle.payout_batch IS
	'A payout batch: the locked statements of one period and currency with a net payout, paid in one pain.001 message.  Everything its files are made of is fixed at creation (the creation time to the second, the debtor account, the payee versions), so settle.payout_file regenerates identical bytes; the size and SHA-256 of each file, one per registered format, are in settle.payout_batch_file.  created -> partially_confirmed -> confirmed as bank confirmations arrive.';
COMMENT ON COLUMN settle.payout_batch.msg_id IS 'pain.001 GrpHdr/MsgId: <prefix>-<period>-<currency>-<batch id>.';
COMMENT ON COLUMN settle.payout_batch.created_at IS 'Creation time, to the second: pain.001 GrpHdr/CreDtTm (UTC).';
COMMENT ON COLUMN settle.payout_batch.execution_date IS 'pain.001 PmtInf/ReqdExctnDt.';
COMMENT ON COLUMN settle.payout_batch.debtor_iban IS 'The operator''s paying account at creation (from settle.payout_setting).';
COMMENT ON COLUMN settle.payout_batch.control_sum IS 'Sum of the payout amounts (pain.001 CtrlSum).';
COMMENT ON COLUMN settle.payout_batch.batch_id IS 'The batch''s number (the last part of msg_id).';
COMMENT ON COLUMN settle.payout_batch.period IS 'The settlement period (YYYY-MM) whose locked statements the batch pays.';
COMMENT ON COLUMN settle.payout_batch.currency IS 'The currency of every payout in the batch (ISO 4217).';
COMMENT ON COLUMN settle.payout_batch.status IS 'created, partially_confirmed or confirmed, as bank confirmations arrive.';
COMMENT ON COLUMN settle.payout_batch.created_by IS 'The login that created the batch.';
COMMENT ON COLUMN settle.payout_batch.operator_name IS 'The paying operator''s name at creation: pain.001 Dbtr/Nm.';
COMMENT ON COLUMN settle.payout_batch.debtor_bic IS 'The paying bank''s BIC at creation: pain.001 DbtrAgt.';
COMMENT ON COLUMN settle.payout_batch.debtor_country IS 'The paying operator''s country at creation (ISO 3166 alpha-2).';
COMMENT ON COLUMN settle.payout_batch.payouts IS 'Number of payouts in the batch (pain.001 NbOfTxs).';
COMMENT ON COLUMN settle.payout_batch.confirmed_at IS 'When the last payout of the batch was confirmed by the bank; NULL until then.';

CREATE TABLE settle.payout (
	batch_id         bigint  NOT NULL REFERENCES settle.payout_batch,
	line_no          integer NOT NULL CHECK (line_no > 0),
	reseller_id      bigint  NOT NULL,
	reseller_code    text    NOT NULL,
	run_id           bigint  NOT NULL,
	period           text    NOT NULL CHECK (settle.check_period(period)),
	amount           numeric NOT NULL CHECK (amount > 0),
	currency         char(3) NOT NULL,
	end_to_end_id    text    NOT NULL UNIQUE CHECK (length(end_to_end_id) <= 35),
	payee_version    integer NOT NULL,
	status           text    NOT NULL DEFAULT 'pending'
	                         CHECK (status IN ('pending', 'mismatch', 'confirmed', 'rejected')),
	bank_reference   text,
	confirmed_amount numeric,
	confirmed_at     timestamptz,
	confirmed_by     text,
	exception_id     bigint,
	PRIMARY KEY (batch_id, line_no),
	UNIQUE (reseller_id, run_id),
	FOREIGN KEY (reseller_id, run_id) REFERENCES settle.run,
	FOREIGN KEY (reseller_id, payee_version) REFERENCES settle.payee
);
COMMENT ON TABLE settle.payout IS
	'One credit transfer of a payout batch: a locked statement''s net payout to the reseller''s payee (the version in force at batch creation).  A run is paid by at most one payout.  pending -> confirmed (run moves to paid) or rejected; mismatch while a confirmation disagrees (an exception is open).  Holds no bank details.';
COMMENT ON COLUMN settle.payout.line_no IS 'Position in the batch files (resellers by code, then run).';
COMMENT ON COLUMN settle.payout.end_to_end_id IS 'pain.001 EndToEndId: B<batch>-R<reseller>-<run>; the key confirmations refer to.';
COMMENT ON COLUMN settle.payout.payee_version IS 'settle.payee version paid to.';
COMMENT ON COLUMN settle.payout.exception_id IS 'The payout_mismatch exception opened by the last disagreeing confirmation.';

-- ---------------------------------------------------------------------------
-- Payout file formats: a registry.  A format is one row here and one builder
-- function (batch_id bigint) RETURNS text that builds the file only from
-- what the batch fixed at creation.  create_payout_batch records the size and
-- SHA-256 of every registered format's file in settle.payout_batch_file;
-- payout_file and verify_payout_batch look the builder up here.  Rows can be
-- added only by the extension's owner (a builder runs inside the SECURITY
-- DEFINER payout_file).  Dumped like every table (a site's formats survive a
-- restore; the shipped rows merge with the installed ones, 97_backup.sql).

CREATE TABLE settle.payout_format (
	format       text    PRIMARY KEY CHECK (format ~ '^[a-z0-9][a-z0-9._-]{0,31}$'),
	aliases      text[]  NOT NULL DEFAULT '{}',
	builder      regprocedure NOT NULL,
	content_type text    NOT NULL CHECK (content_type ~ '^[a-z]+/[a-z0-9.+-]+$'),
	extension    text    NOT NULL CHECK (extension ~ '^[a-z0-9]{1,10}$'),
	description  text    NOT NULL
);
COMMENT ON TABLE settle.payout_format IS
	'The payout file formats: name, other names accepted by payout_file, the builder function (batch_id bigint) RETURNS text, MIME type and file extension.  Adding a format is one builder function and one row (extension owner only); every batch created afterwards records its file.';
COMMENT ON COLUMN settle.payout_format.builder IS 'settle-owned or site function (batch_id bigint) RETURNS text: the file of a batch, deterministic, from what the batch fixed at creation.';
COMMENT ON COLUMN settle.payout_format.aliases IS 'Other names settle.payout_file accepts for the format (lower case).';

CREATE FUNCTION settle.payout_format_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	clash text;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_proc p
	                WHERE p.oid = NEW.builder AND p.pronargs = 1 AND p.proargtypes[0] = 'bigint'::regtype
	                  AND p.prorettype = 'text'::regtype AND NOT p.proretset AND p.prokind = 'f') THEN
		RAISE EXCEPTION 'the builder of payout format "%" must be a function (batch_id bigint) RETURNS text', NEW.format
			USING ERRCODE = 'invalid_parameter_value', DETAIL = pg_catalog.format('%s is not.', NEW.builder);
	END IF;
	IF EXISTS (SELECT 1 FROM unnest(NEW.aliases) a WHERE a IS NULL OR a <> lower(a) OR a = NEW.format) THEN
		RAISE EXCEPTION 'aliases of payout format "%" must be lower case, not null and differ from its name', NEW.format
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	SELECT f.format INTO clash
	  FROM settle.payout_format f
	 WHERE f.format <> NEW.format AND (f.format = ANY (NEW.aliases) OR NEW.format = ANY (f.aliases) OR f.aliases && NEW.aliases)
	 LIMIT 1;
	IF FOUND THEN
		RAISE EXCEPTION 'payout format "%" shares a name with payout format "%"', NEW.format, clash
			USING ERRCODE = 'unique_violation';
	END IF;
	RETURN NEW;
END $$;
COMMENT ON FUNCTION settle.payout_format_check() IS
	'Keeps the payout format registry usable: the builder takes (bigint) and returns text; names and aliases are unique across formats.';
CREATE TRIGGER payout_format_check BEFORE INSERT OR UPDATE ON settle.payout_format
	FOR EACH ROW EXECUTE FUNCTION settle.payout_format_check();
ALTER TABLE settle.payout_format ENABLE ALWAYS TRIGGER payout_format_check;

CREATE TABLE settle.payout_batch_file (
	batch_id     bigint  NOT NULL REFERENCES settle.payout_batch,
	format       text    NOT NULL REFERENCES settle.payout_format ON UPDATE RESTRICT,
	builder      regprocedure NOT NULL,
	size_bytes   bigint  NOT NULL CHECK (size_bytes > 0),
	sha256       bytea   NOT NULL CHECK (octet_length(sha256) = 32),
	PRIMARY KEY (batch_id, format)
);
COMMENT ON TABLE settle.payout_batch_file IS
	'One row per file of a payout batch and format, written at creation: its size in bytes and SHA-256 as UTF-8.  The bytes themselves are regenerated on demand by settle.payout_file (they hold bank details; this table holds none).  Append-only.';
COMMENT ON COLUMN settle.payout_batch_file.builder IS 'The function that built the file (the format''s builder at the time): settle.payout_file and settle.verify_payout_batch regenerate the file with it, so a file already sent is reproduced as sent when a format''s builder changes later.';
COMMENT ON COLUMN settle.payout_batch_file.sha256 IS 'SHA-256 of convert_to(settle.payout_file(batch_id, format), ''UTF8'').';

-- Names a format given to payout_file: its name or an alias, any case.
CREATE FUNCTION settle._payout_format(name text) RETURNS settle.payout_format
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	f settle.payout_format;
BEGIN
	SELECT * INTO f FROM settle.payout_format x
	 WHERE x.format = lower(name) OR lower(name) = ANY (x.aliases);
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payout file format "%"', name USING ERRCODE = 'invalid_parameter_value',
			HINT = pg_catalog.format('The formats are %s (settle.payout_format).',
				(SELECT string_agg(pg_catalog.format('''%s''', x.format), ', ' ORDER BY x.format) FROM settle.payout_format x));
	END IF;
	RETURN f;
END $$;
COMMENT ON FUNCTION settle._payout_format(text) IS 'Internal: the registered payout format a name or alias (any case) names; 22023 listing the formats otherwise.';

-- The file of a batch by a builder (payout_file and verify_payout_batch pass
-- the builder recorded for the batch's file, settle.payout_batch_file).
CREATE FUNCTION settle._payout_build(builder regprocedure, batch_id bigint) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	body text;
BEGIN
	-- the cast picks the (bigint) function even when the builder's name is overloaded
	EXECUTE pg_catalog.format('SELECT %s($1::bigint)', builder::regproc) INTO body USING batch_id;
	IF body IS NULL OR body = '' THEN
		RAISE EXCEPTION 'payout file builder % returned no file for batch %', builder, batch_id
			USING ERRCODE = 'data_exception';
	END IF;
	RETURN body;
END $$;
COMMENT ON FUNCTION settle._payout_build(regprocedure, bigint) IS 'Internal: calls a payout file builder for a batch; an empty or NULL file is an error (22000).';

-- What may change on batches and payouts after creation.
CREATE FUNCTION settle.payout_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		RAISE EXCEPTION '% rows are never deleted', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
	END IF;
	IF TG_TABLE_NAME = 'payout_batch' THEN
		IF (NEW.batch_id, NEW.period, NEW.currency, NEW.msg_id, NEW.created_at, NEW.created_by, NEW.execution_date,
		    NEW.operator_name, NEW.debtor_iban, NEW.debtor_bic, NEW.debtor_country, NEW.payouts, NEW.control_sum)
		   IS DISTINCT FROM
		   (OLD.batch_id, OLD.period, OLD.currency, OLD.msg_id, OLD.created_at, OLD.created_by, OLD.execution_date,
		    OLD.operator_name, OLD.debtor_iban, OLD.debtor_bic, OLD.debtor_country, OLD.payouts, OLD.control_sum) THEN
			RAISE EXCEPTION 'payout batch % cannot be changed', OLD.batch_id USING ERRCODE = 'insufficient_privilege',
				DETAIL = 'Only its status moves forward.';
		END IF;
		IF OLD.status = 'confirmed' AND NEW.status <> 'confirmed' THEN
			RAISE EXCEPTION 'payout batch % is confirmed', OLD.batch_id USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
	ELSE
		IF (NEW.batch_id, NEW.line_no, NEW.reseller_id, NEW.reseller_code, NEW.run_id, NEW.period, NEW.amount,
		    NEW.currency, NEW.end_to_end_id, NEW.payee_version)
		   IS DISTINCT FROM
		   (OLD.batch_id, OLD.line_no, OLD.reseller_id, OLD.reseller_code, OLD.run_id, OLD.period, OLD.amount,
		    OLD.currency, OLD.end_to_end_id, OLD.payee_version) THEN
			RAISE EXCEPTION 'payout % of batch % cannot be changed', OLD.end_to_end_id, OLD.batch_id
				USING ERRCODE = 'insufficient_privilege';
		END IF;
		IF OLD.status IN ('confirmed', 'rejected') AND NEW.status IS DISTINCT FROM OLD.status THEN
			RAISE EXCEPTION 'payout % is % already', OLD.end_to_end_id, OLD.status
				USING ERRCODE = 'object_not_in_prerequisite_state';
		END IF;
	END IF;
	RETURN NEW;
END $$;
COMMENT ON FUNCTION settle.payout_guard() IS
	'Keeps payout batches and payouts as created: only status and confirmation fields change; nothing is deleted.';

-- pain.001 message of a batch, built with SQL/XML: xmlelement/xmlforest
-- escape every value, so no text reaches the file unescaped.  The credit
-- transfers are aggregated with string_agg of their serialised elements and
-- parsed back once (XMLPARSE CONTENT), not with xmlagg: in PostgreSQL 15
-- xmlagg copies the whole accumulated value at each row (xmlconcat of two),
-- which is quadratic in the number of payouts.  The final XMLSERIALIZE
-- (DOCUMENT) parses the message again, so an ill-formed value (say a control
-- character in a name) is an error at batch creation, never a bad file.
CREATE FUNCTION settle._payout_pain001(batch_id bigint) RETURNS text
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b settle.payout_batch;
	txs text;
	doc xml;
BEGIN
	SELECT * INTO b FROM settle.payout_batch pb WHERE pb.batch_id = _payout_pain001.batch_id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payout batch %', batch_id USING ERRCODE = 'no_data_found';
	END IF;
	SELECT string_agg(xmlelement(name "CdtTrfTxInf",
	           xmlelement(name "PmtId", xmlforest(o.end_to_end_id AS "EndToEndId")),
	           xmlelement(name "Amt", xmlelement(name "InstdAmt", xmlattributes(o.currency AS "Ccy"),
	                                             settle.format_amount(o.amount, o.currency))),
	           xmlelement(name "CdtrAgt", xmlelement(name "FinInstnId", xmlforest(e.bic AS "BIC"))),
	           xmlelement(name "Cdtr", xmlforest(e.account_holder AS "Nm"),
	                                   xmlelement(name "PstlAdr", xmlforest(e.country AS "Ctry"))),
	           xmlelement(name "CdtrAcct", xmlelement(name "Id", xmlforest(e.iban AS "IBAN"))),
	           xmlelement(name "RmtInf", xmlforest(left(format('Commission %s run %s reseller %s', o.period, o.run_id,
	                                                           o.reseller_code), 140) AS "Ustrd")))::text,
	                  '' ORDER BY o.line_no)
	  INTO txs
	  FROM settle.payout o
	  JOIN settle.payee e ON e.reseller_id = o.reseller_id AND e.version = o.payee_version
	 WHERE o.batch_id = b.batch_id;
	doc := xmlelement(name "Document",
	         xmlattributes('urn:iso:std:iso:20022:tech:xsd:pain.001.001.03' AS xmlns,
	                       'http://www.w3.org/2001/XMLSchema-instance' AS "xmlns:xsi"),
	         xmlelement(name "CstmrCdtTrfInitn",
	           xmlelement(name "GrpHdr",
	             xmlforest(b.msg_id AS "MsgId",
	                       to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') AS "CreDtTm",
	                       b.payouts AS "NbOfTxs",
	                       settle.format_amount(b.control_sum, b.currency) AS "CtrlSum"),
	             xmlelement(name "InitgPty", xmlforest(b.operator_name AS "Nm"))),
	           xmlelement(name "PmtInf",
	             xmlforest(b.msg_id AS "PmtInfId", 'TRF' AS "PmtMtd", 'false' AS "BtchBookg", b.payouts AS "NbOfTxs",
	                       settle.format_amount(b.control_sum, b.currency) AS "CtrlSum",
	                       to_char(b.execution_date, 'YYYY-MM-DD') AS "ReqdExctnDt"),
	             xmlelement(name "Dbtr", xmlforest(b.operator_name AS "Nm"),
	                                     xmlelement(name "PstlAdr", xmlforest(b.debtor_country AS "Ctry"))),
	             xmlelement(name "DbtrAcct", xmlelement(name "Id", xmlforest(b.debtor_iban AS "IBAN")),
	                                         xmlforest(b.currency AS "Ccy")),
	             xmlelement(name "DbtrAgt", xmlelement(name "FinInstnId", xmlforest(b.debtor_bic AS "BIC"))),
	             XMLPARSE(CONTENT coalesce(txs, '')))));
	RETURN '<?xml version="1.0" encoding="UTF-8"?>' || E'\n' || XMLSERIALIZE(DOCUMENT doc AS text) || E'\n';
END $$;
COMMENT ON FUNCTION settle._payout_pain001(bigint) IS
	'Internal: the ISO 20022 pain.001.001.03 credit transfer message of a payout batch (builder of format ''pain.001''), built with SQL/XML only from what the batch fixed at creation; linear in the number of payouts.';

-- The pain.001 layout of settle 0.1.0 (the same elements, indented by two
-- spaces per level): the builder recorded for batches 0.1.0 created, so the
-- files sent from them regenerate byte for byte.  Not a registered format.
CREATE FUNCTION settle._payout_pain001_v1(batch_id bigint) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
	SELECT '<?xml version="1.0" encoding="UTF-8"?>' || E'\n'
	    || '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.03" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' || E'\n'
	    || '  <CstmrCdtTrfInitn>' || E'\n'
	    || '    <GrpHdr>' || E'\n'
	    || '      <MsgId>' || settle.xml_escape(b.msg_id) || '</MsgId>' || E'\n'
	    || '      <CreDtTm>' || to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') || '</CreDtTm>' || E'\n'
	    || '      <NbOfTxs>' || b.payouts || '</NbOfTxs>' || E'\n'
	    || '      <CtrlSum>' || settle.format_amount(b.control_sum, b.currency) || '</CtrlSum>' || E'\n'
	    || '      <InitgPty>' || E'\n'
	    || '        <Nm>' || settle.xml_escape(b.operator_name) || '</Nm>' || E'\n'
	    || '      </InitgPty>' || E'\n'
	    || '    </GrpHdr>' || E'\n'
	    || '    <PmtInf>' || E'\n'
	    || '      <PmtInfId>' || settle.xml_escape(b.msg_id) || '</PmtInfId>' || E'\n'
	    || '      <PmtMtd>TRF</PmtMtd>' || E'\n'
	    || '      <BtchBookg>false</BtchBookg>' || E'\n'
	    || '      <NbOfTxs>' || b.payouts || '</NbOfTxs>' || E'\n'
	    || '      <CtrlSum>' || settle.format_amount(b.control_sum, b.currency) || '</CtrlSum>' || E'\n'
	    || '      <ReqdExctnDt>' || to_char(b.execution_date, 'YYYY-MM-DD') || '</ReqdExctnDt>' || E'\n'
	    || '      <Dbtr>' || E'\n'
	    || '        <Nm>' || settle.xml_escape(b.operator_name) || '</Nm>' || E'\n'
	    || '        <PstlAdr>' || E'\n'
	    || '          <Ctry>' || b.debtor_country || '</Ctry>' || E'\n'
	    || '        </PstlAdr>' || E'\n'
	    || '      </Dbtr>' || E'\n'
	    || '      <DbtrAcct>' || E'\n'
	    || '        <Id>' || E'\n'
	    || '          <IBAN>' || b.debtor_iban || '</IBAN>' || E'\n'
	    || '        </Id>' || E'\n'
	    || '        <Ccy>' || b.currency || '</Ccy>' || E'\n'
	    || '      </DbtrAcct>' || E'\n'
	    || '      <DbtrAgt>' || E'\n'
	    || '        <FinInstnId>' || E'\n'
	    || '          <BIC>' || b.debtor_bic || '</BIC>' || E'\n'
	    || '        </FinInstnId>' || E'\n'
	    || '      </DbtrAgt>' || E'\n'
	    || coalesce((SELECT string_agg(
	          '      <CdtTrfTxInf>' || E'\n'
	       || '        <PmtId>' || E'\n'
	       || '          <EndToEndId>' || settle.xml_escape(o.end_to_end_id) || '</EndToEndId>' || E'\n'
	       || '        </PmtId>' || E'\n'
	       || '        <Amt>' || E'\n'
	       || '          <InstdAmt Ccy="' || o.currency || '">' || settle.format_amount(o.amount, o.currency) || '</InstdAmt>' || E'\n'
	       || '        </Amt>' || E'\n'
	       || '        <CdtrAgt>' || E'\n'
	       || '          <FinInstnId>' || E'\n'
	       || '            <BIC>' || e.bic || '</BIC>' || E'\n'
	       || '          </FinInstnId>' || E'\n'
	       || '        </CdtrAgt>' || E'\n'
	       || '        <Cdtr>' || E'\n'
	       || '          <Nm>' || settle.xml_escape(e.account_holder) || '</Nm>' || E'\n'
	       || '          <PstlAdr>' || E'\n'
	       || '            <Ctry>' || e.country || '</Ctry>' || E'\n'
	       || '          </PstlAdr>' || E'\n'
	       || '        </Cdtr>' || E'\n'
	       || '        <CdtrAcct>' || E'\n'
	       || '          <Id>' || E'\n'
	       || '            <IBAN>' || e.iban || '</IBAN>' || E'\n'
	       || '          </Id>' || E'\n'
	       || '        </CdtrAcct>' || E'\n'
	       || '        <RmtInf>' || E'\n'
	       || '          <Ustrd>' || settle.xml_escape(left(format('Commission %s run %s reseller %s', o.period, o.run_id,
	                                                          o.reseller_code), 140)) || '</Ustrd>' || E'\n'
	       || '        </RmtInf>' || E'\n'
	       || '      </CdtTrfTxInf>' || E'\n', '' ORDER BY o.line_no)
	          FROM settle.payout o
	          JOIN settle.payee e ON e.reseller_id = o.reseller_id AND e.version = o.payee_version
	         WHERE o.batch_id = b.batch_id), '')
	    || '    </PmtInf>' || E'\n' || '  </CstmrCdtTrfInitn>' || E'\n' || '</Document>' || E'\n'
	  FROM settle.payout_batch b WHERE b.batch_id = $1
$$;
COMMENT ON FUNCTION settle._payout_pain001_v1(bigint) IS
	'Internal: the pain.001.001.03 message of a batch in the layout of settle 0.1.0 (indented), the builder recorded for the batches 0.1.0 created.';

CREATE FUNCTION settle._payout_csv(batch_id bigint) RETURNS text
LANGUAGE sql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
	SELECT 'batch_id,msg_id,line_no,end_to_end_id,reseller_id,reseller_code,period,run_id,amount,currency,'
	       || 'creditor_name,creditor_iban,creditor_bic,creditor_country,execution_date,remittance' || E'\n'
	       || coalesce(string_agg(concat_ws(',', b.batch_id, settle.csv_field(b.msg_id), o.line_no,
	                  settle.csv_field(o.end_to_end_id), o.reseller_id, settle.csv_field(o.reseller_code), o.period,
	                  o.run_id, settle.format_amount(o.amount, o.currency), o.currency,
	                  settle.csv_field(e.account_holder), e.iban, e.bic, e.country,
	                  to_char(b.execution_date, 'YYYY-MM-DD'),
	                  settle.csv_field(left(format('Commission %s run %s reseller %s', o.period, o.run_id,
	                                               o.reseller_code), 140))) || E'\n', '' ORDER BY o.line_no), '')
	  FROM settle.payout_batch b
	  JOIN settle.payout o ON o.batch_id = b.batch_id
	  JOIN settle.payee e ON e.reseller_id = o.reseller_id AND e.version = o.payee_version
	 WHERE b.batch_id = $1
$$;
COMMENT ON FUNCTION settle._payout_csv(bigint) IS 'Internal: the CSV payout file of a batch (columns in docs/payouts.md).';

INSERT INTO settle.payout_format (format, aliases, builder, content_type, extension, description) VALUES
	('csv', '{}', 'settle._payout_csv(bigint)', 'text/csv', 'csv',
	 'One record per payout (RFC 4180, LF line ends, header line); columns in docs/payouts.md.'),
	('pain.001', '{pain001,xml}', 'settle._payout_pain001(bigint)', 'application/xml', 'xml',
	 'ISO 20022 pain.001.001.03 CustomerCreditTransferInitiation: one payment information block, one credit transfer per payout.');

CREATE FUNCTION settle.payout_file(batch_id bigint, format text DEFAULT 'pain.001') RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	f settle.payout_format;
BEGIN
	IF NOT EXISTS (SELECT 1 FROM settle.payout_batch b WHERE b.batch_id = payout_file.batch_id) THEN
		RAISE EXCEPTION 'unknown payout batch %', batch_id USING ERRCODE = 'no_data_found';
	END IF;
	f := settle._payout_format(coalesce(format, ''));
	-- a file already made is regenerated by the builder that made it
	RETURN settle._payout_build(coalesce((SELECT bf.builder FROM settle.payout_batch_file bf
	                                       WHERE bf.batch_id = payout_file.batch_id AND bf.format = f.format),
	                                     f.builder), batch_id);
END $$;
COMMENT ON FUNCTION settle.payout_file(bigint, text) IS
	'The payout file of a batch as text, in a format of settle.payout_format (''pain.001'', the ISO 20022 pain.001.001.03 XML, or ''csv'').  Regenerating gives identical bytes; sha256(convert_to(text, ''UTF8'')) equals the hash recorded in settle.payout_batch_file.  Finance and admin only (holds bank details).';

CREATE FUNCTION settle.verify_payout_batch(batch_id bigint)
	RETURNS TABLE (format text, verified boolean, recorded_sha256 bytea, sha256 bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM settle.payout_batch x WHERE x.batch_id = verify_payout_batch.batch_id) THEN
		RAISE EXCEPTION 'unknown payout batch %', batch_id USING ERRCODE = 'no_data_found';
	END IF;
	RETURN QUERY
	SELECT bf.format, h.sha = bf.sha256, bf.sha256, h.sha
	  FROM settle.payout_batch_file bf
	 CROSS JOIN LATERAL (SELECT pg_catalog.sha256(convert_to(settle._payout_build(bf.builder, bf.batch_id), 'UTF8')) AS sha) h
	 WHERE bf.batch_id = verify_payout_batch.batch_id
	 ORDER BY bf.format;
END $$;
COMMENT ON FUNCTION settle.verify_payout_batch(bigint) IS
	'Regenerates every recorded file of a batch (one row per format) and says whether its SHA-256 equals the one recorded at creation.';

CREATE FUNCTION settle.create_payout_batch(period settle.period, currency text, execution_date date DEFAULT NULL)
	RETURNS settle.payout_batch
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	cfg settle.payout_setting;
	b settle.payout_batch;
	n int;
	total numeric;
	problem text;
	cands jsonb;
	ts timestamptz := date_trunc('second', clock_timestamp());
BEGIN
	IF period IS NULL THEN
		RAISE EXCEPTION 'a period is required' USING ERRCODE = 'null_value_not_allowed',
			HINT = 'A period is a month written YYYY-MM, e.g. 2026-10.';
	END IF;
	PERFORM settle.check_currency(currency);
	SELECT * INTO cfg FROM settle.payout_setting;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'the operator''s payout account is not set' USING ERRCODE = 'object_not_in_prerequisite_state',
			HINT = 'Call settle.set_payout_setting(operator_name, iban, bic, country) first.';
	END IF;
	IF coalesce(current_setting('settle.reason', true), '') = '' THEN
		PERFORM set_config('settle.reason', format('payout batch %s %s', period, currency), true);
	END IF;
	-- One batch creation at a time: a statement lands in at most one batch.
	PERFORM pg_advisory_xact_lock(hashtext('settle.payout_batch'));

	-- The candidates, computed once (no temporary table: a caller could plant one).
	SELECT coalesce(jsonb_agg(jsonb_build_object('reseller_id', s.reseller_id, 'reseller_code', rs.code,
	           'run_id', s.run_id, 'amount', s.net_payout, 'statement_currency', s.currency,
	           'payee_version', p.version, 'payee_currency', p.currency)), '[]')
	  INTO cands
	  FROM settle.statement s
	  JOIN settle.run r ON r.reseller_id = s.reseller_id AND r.run_id = s.run_id
	  JOIN settle.reseller rs ON rs.reseller_id = s.reseller_id
	  LEFT JOIN settle.payee_current p ON p.reseller_id = s.reseller_id
	 WHERE r.period = create_payout_batch.period AND r.status = 'locked'
	   AND s.currency = create_payout_batch.currency AND s.net_payout > 0
	   AND NOT EXISTS (SELECT 1 FROM settle.payout o WHERE o.reseller_id = s.reseller_id AND o.run_id = s.run_id);
	SELECT count(*), sum(c.amount) INTO n, total FROM jsonb_to_recordset(cands) AS c(reseller_id bigint, reseller_code text, run_id bigint, amount numeric, statement_currency text, payee_version integer, payee_currency text);
	IF n = 0 THEN
		RAISE EXCEPTION 'nothing to pay for % in %', period, currency USING ERRCODE = 'no_data_found',
			DETAIL = 'No locked statement of the period in this currency has a net payout that is not in a batch already.',
			HINT = 'Lock the period''s runs first; net payouts below the minimum payout carry forward.';
	END IF;
	SELECT string_agg(c.reseller_code, ', ' ORDER BY c.reseller_code COLLATE "C") INTO problem
	  FROM jsonb_to_recordset(cands) AS c(reseller_id bigint, reseller_code text, run_id bigint, amount numeric, statement_currency text, payee_version integer, payee_currency text) WHERE c.payee_version IS NULL;
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'no payee bank details for reseller(s) %', problem USING ERRCODE = 'object_not_in_prerequisite_state',
			HINT = 'Record them with settle.set_payee; nothing was written.';
	END IF;
	SELECT string_agg(format('%s (payee account %s)', c.reseller_code, c.payee_currency), ', '
	                  ORDER BY c.reseller_code COLLATE "C") INTO problem
	  FROM jsonb_to_recordset(cands) AS c(reseller_id bigint, reseller_code text, run_id bigint, amount numeric, statement_currency text, payee_version integer, payee_currency text) WHERE c.payee_currency <> c.statement_currency;
	IF problem IS NOT NULL THEN
		RAISE EXCEPTION 'payee account currency differs from the statement currency % for %', currency, problem
			USING ERRCODE = 'invalid_parameter_value',
			      HINT = 'Record the payee''s account in the settlement currency with settle.set_payee; nothing was written.';
	END IF;

	b.batch_id := nextval(pg_get_serial_sequence('settle.payout_batch', 'batch_id'));
	INSERT INTO settle.payout_batch (batch_id, period, currency, msg_id, created_at, execution_date,
		operator_name, debtor_iban, debtor_bic, debtor_country, payouts, control_sum)
	VALUES (b.batch_id, period, currency, format('%s-%s-%s-%s', cfg.msg_id_prefix, period, currency, b.batch_id),
	        ts, coalesce(execution_date, (ts AT TIME ZONE 'UTC')::date), cfg.operator_name, cfg.debtor_iban,
	        cfg.debtor_bic, cfg.debtor_country, n, total);
	INSERT INTO settle.payout (batch_id, line_no, reseller_id, reseller_code, run_id, period, amount, currency,
		end_to_end_id, payee_version)
	SELECT b.batch_id, row_number() OVER (ORDER BY c.reseller_code COLLATE "C", c.run_id), c.reseller_id,
	       c.reseller_code, c.run_id, period, c.amount, currency,
	       format('B%s-R%s-%s', b.batch_id, c.reseller_id, c.run_id), c.payee_version
	  FROM jsonb_to_recordset(cands) AS c(reseller_id bigint, reseller_code text, run_id bigint, amount numeric, statement_currency text, payee_version integer, payee_currency text);
	-- every registered format's file, built once: its size and hash
	INSERT INTO settle.payout_batch_file (batch_id, format, builder, size_bytes, sha256)
	SELECT b.batch_id, f.format, f.builder, octet_length(t.body), sha256(t.body)
	  FROM settle.payout_format f
	 CROSS JOIN LATERAL (SELECT convert_to(settle._payout_build(f.builder, b.batch_id), 'UTF8') AS body) t;
	SELECT * INTO b FROM settle.payout_batch x WHERE x.batch_id = b.batch_id;
	RETURN b;
END $$;
COMMENT ON FUNCTION settle.create_payout_batch(settle.period, text, date) IS
	'Finance creates a payout batch of a period and currency from every locked statement with a net payout (above the minimum payout) that is in no batch yet, with the payee bank details in force, and records the size and SHA-256 of its file in every registered format (settle.payout_batch_file).  Refused, with nothing written: nothing to pay (P0002), a reseller without payee (55000), a payee account in another currency (22023), no operator account (55000).';

-- ---------------------------------------------------------------------------
-- Payout confirmations.

-- Parses RFC 4180 CSV text into rows of fields, in one pass (src/csv.c).
CREATE FUNCTION settle.csv_parse(input text) RETURNS SETOF text[]
	AS 'MODULE_PATHNAME', 'settle_csv_parse' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle.csv_parse(text) IS 'Parses RFC 4180 CSV (quoted fields, doubled quotes, CRLF, LF or CR line ends) into one text array per record; blank lines are skipped.  Refused: an unterminated quoted field, text after a closing quote, a quote inside an unquoted field (22P04, naming the record), text over settle.csv_max_bytes (54000, before it is read).';

CREATE FUNCTION settle._csv_check_size(input text) RETURNS void
	AS 'MODULE_PATHNAME', 'settle_csv_check_size' LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION settle._csv_check_size(text) IS 'Internal: refuses (54000) text over settle.csv_max_bytes without reading it.';

CREATE FUNCTION settle.import_payout_confirmations(batch_id bigint, confirmations jsonb)
	RETURNS TABLE (end_to_end_id text, reseller_id bigint, outcome text, exception_id bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	b settle.payout_batch;
	c record;
	p settle.payout;
	st text;
	amt numeric;
	ex bigint;
	dup_no bigint;
	dup_key text;
	lines integer[];
BEGIN
	SELECT * INTO b FROM settle.payout_batch x WHERE x.batch_id = import_payout_confirmations.batch_id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown payout batch %', batch_id USING ERRCODE = 'no_data_found';
	END IF;
	-- Validate everything before writing anything.
	IF confirmations IS NULL OR jsonb_typeof(confirmations) <> 'array' THEN
		RAISE EXCEPTION 'payout confirmations must be a JSON array of objects' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	-- The first confirmation naming the same payout as an earlier one (by
	-- end_to_end_id, else by reseller), in one GROUP BY: the keys that occur
	-- more than once with their first occurrence, then the earliest later
	-- occurrence.  Reported in record order by the loop below, so a malformed
	-- confirmation before it is still reported first.
	WITH k AS MATERIALIZED (
		SELECT e.ordinality AS no, coalesce(nullif(e.value->>'end_to_end_id', ''), 'reseller:' || (e.value->>'reseller')) AS key
		  FROM jsonb_array_elements(confirmations) WITH ORDINALITY e)
	SELECT k.no, k.key INTO dup_no, dup_key
	  FROM k JOIN (SELECT k.key, min(k.no) AS first FROM k WHERE k.key IS NOT NULL GROUP BY k.key HAVING count(*) > 1) d
	       ON d.key = k.key AND k.no > d.first
	 ORDER BY k.no
	 LIMIT 1;
	FOR c IN SELECT e.value AS v, e.ordinality AS no FROM jsonb_array_elements(confirmations) WITH ORDINALITY e
	LOOP
		IF jsonb_typeof(c.v) <> 'object' THEN
			RAISE EXCEPTION 'confirmation % is not a JSON object', c.no USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF coalesce(c.v->>'end_to_end_id', '') = '' AND coalesce(c.v->>'reseller', '') = '' THEN
			RAISE EXCEPTION 'confirmation % names neither end_to_end_id nor reseller', c.no
				USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF coalesce(c.v->>'amount', '') !~ '^\s*[0-9]+(\.[0-9]+)?\s*$' THEN
			RAISE EXCEPTION 'confirmation % has a malformed amount "%"', c.no, c.v->>'amount'
				USING ERRCODE = 'invalid_text_representation',
				      HINT = 'An amount is a non-negative decimal number with a point, e.g. 1234.50.';
		END IF;
		IF lower(coalesce(c.v->>'status', '')) NOT IN ('confirmed', 'accepted', 'acsc', 'booked', 'rejected', 'rjct', 'returned') THEN
			RAISE EXCEPTION 'confirmation % has an unknown status "%"', c.no, c.v->>'status'
				USING ERRCODE = 'invalid_parameter_value',
				      HINT = 'Statuses: confirmed (accepted, ACSC, booked) or rejected (RJCT, returned).';
		END IF;
		IF coalesce(btrim(c.v->>'bank_reference'), '') = '' THEN
			RAISE EXCEPTION 'confirmation % has no bank_reference', c.no USING ERRCODE = 'invalid_parameter_value';
		END IF;
		IF c.v ? 'currency' THEN
			PERFORM settle.check_currency(c.v->>'currency');
		END IF;
		IF c.no = dup_no THEN
			RAISE EXCEPTION 'payout % is confirmed twice in one import', dup_key USING ERRCODE = 'invalid_parameter_value';
		END IF;
	END LOOP;

	IF coalesce(current_setting('settle.reason', true), '') = '' THEN
		PERFORM set_config('settle.reason', format('payout confirmations for batch %s', b.batch_id), true);
	END IF;
	-- Which payout of the batch each confirmation names, for all of them in
	-- one query (hash joins: settle.payout has no index on reseller_code):
	-- lines[n] is the line_no of confirmation n's payout, 0 for none.  The
	-- loop then reads each payout by primary key, as it is at that point of
	-- the import (an earlier confirmation may have changed it).
	WITH e AS MATERIALIZED (
		SELECT x.ordinality AS no, coalesce(x.value->>'end_to_end_id', '') AS e2e, coalesce(x.value->>'reseller', '') AS res
		  FROM jsonb_array_elements(confirmations) WITH ORDINALITY x),
	m AS (
		SELECT e.no, o.line_no
		  FROM e JOIN settle.payout o ON o.end_to_end_id = e.e2e
		 WHERE e.e2e <> '' AND o.batch_id = b.batch_id AND (e.res = '' OR o.reseller_code = e.res)
		UNION ALL
		SELECT e.no, o.line_no
		  FROM e JOIN settle.payout o ON o.reseller_code = e.res
		 WHERE e.e2e = '' AND o.batch_id = b.batch_id)
	SELECT array_agg(coalesce(f.line_no, 0) ORDER BY e.no) INTO lines
	  FROM e LEFT JOIN (SELECT m.no, min(m.line_no) AS line_no FROM m GROUP BY m.no) f ON f.no = e.no;
	FOR c IN SELECT e.value AS v, e.ordinality AS no FROM jsonb_array_elements(confirmations) WITH ORDINALITY e
	LOOP
		amt := btrim(c.v->>'amount')::numeric;
		st := CASE WHEN lower(c.v->>'status') IN ('rejected', 'rjct', 'returned') THEN 'rejected' ELSE 'confirmed' END;
		p := NULL;
		IF lines[c.no] > 0 THEN
			SELECT * INTO p FROM settle.payout o WHERE o.batch_id = b.batch_id AND o.line_no = lines[c.no] FOR UPDATE;
		END IF;
		ex := NULL;
		IF p.batch_id IS NULL THEN
			-- not a payout of this batch
			ex := settle.open_exception(coalesce((SELECT r.reseller_id FROM settle.reseller r WHERE r.code = c.v->>'reseller'), 0),
				'payout_mismatch', format('batch:%s/unknown:%s', b.batch_id,
				coalesce(nullif(c.v->>'end_to_end_id', ''), c.v->>'reseller')), b.period,
				jsonb_build_object('batch_id', b.batch_id),
				jsonb_build_object('problem', 'confirmation for a payout that is not in the batch', 'confirmation', c.v));
			end_to_end_id := c.v->>'end_to_end_id'; reseller_id := NULL; outcome := 'unknown'; exception_id := ex;
			RETURN NEXT;
			CONTINUE;
		END IF;
		IF p.status IN ('confirmed', 'rejected') THEN
			IF p.status = st AND p.bank_reference = btrim(c.v->>'bank_reference') AND p.confirmed_amount = amt THEN
				end_to_end_id := p.end_to_end_id; reseller_id := p.reseller_id; outcome := 'already_' || p.status;
				exception_id := NULL;
				RETURN NEXT;
				CONTINUE;
			END IF;
			ex := settle.open_exception(p.reseller_id, 'payout_mismatch', format('batch:%s/%s', b.batch_id, p.end_to_end_id),
				p.period, jsonb_build_object('batch_id', b.batch_id, 'run_id', p.run_id, 'end_to_end_id', p.end_to_end_id),
				jsonb_build_object('problem', format('a second confirmation disagrees with the recorded %s one', p.status),
				                   'recorded_status', p.status, 'recorded_bank_reference', p.bank_reference,
				                   'recorded_amount', p.confirmed_amount, 'confirmation', c.v));
			end_to_end_id := p.end_to_end_id; reseller_id := p.reseller_id; outcome := 'conflict'; exception_id := ex;
			RETURN NEXT;
			CONTINUE;
		END IF;
		IF amt <> p.amount OR (c.v ? 'currency' AND c.v->>'currency' <> p.currency) THEN
			ex := settle.open_exception(p.reseller_id, 'payout_mismatch', format('batch:%s/%s', b.batch_id, p.end_to_end_id),
				p.period, jsonb_build_object('batch_id', b.batch_id, 'run_id', p.run_id, 'end_to_end_id', p.end_to_end_id),
				jsonb_build_object('problem', 'confirmed amount differs from the payout', 'expected', p.amount,
				                   'currency', p.currency, 'confirmed', amt, 'confirmation', c.v));
			UPDATE settle.payout o SET status = 'mismatch', exception_id = ex
			 WHERE o.batch_id = p.batch_id AND o.line_no = p.line_no;
			end_to_end_id := p.end_to_end_id; reseller_id := p.reseller_id; outcome := 'amount_mismatch'; exception_id := ex;
			RETURN NEXT;
			CONTINUE;
		END IF;
		IF st = 'rejected' THEN
			ex := settle.open_exception(p.reseller_id, 'payout_mismatch', format('batch:%s/%s', b.batch_id, p.end_to_end_id),
				p.period, jsonb_build_object('batch_id', b.batch_id, 'run_id', p.run_id, 'end_to_end_id', p.end_to_end_id),
				jsonb_build_object('problem', 'the bank rejected the payout', 'confirmation', c.v));
		END IF;
		UPDATE settle.payout o
		   SET status = st, bank_reference = btrim(c.v->>'bank_reference'), confirmed_amount = amt,
		       confirmed_at = now(), confirmed_by = session_user, exception_id = coalesce(ex, o.exception_id)
		 WHERE o.batch_id = p.batch_id AND o.line_no = p.line_no;
		IF st = 'confirmed' THEN
			UPDATE settle.run r SET status = 'paid', paid_at = now()
			 WHERE r.reseller_id = p.reseller_id AND r.run_id = p.run_id AND r.status = 'locked';
		END IF;
		end_to_end_id := p.end_to_end_id; reseller_id := p.reseller_id; outcome := st; exception_id := ex;
		RETURN NEXT;
	END LOOP;

	UPDATE settle.payout_batch x
	   SET status = CASE WHEN NOT EXISTS (SELECT 1 FROM settle.payout o WHERE o.batch_id = x.batch_id AND o.status <> 'confirmed')
	                     THEN 'confirmed'
	                     WHEN EXISTS (SELECT 1 FROM settle.payout o WHERE o.batch_id = x.batch_id AND o.status = 'confirmed')
	                     THEN 'partially_confirmed' ELSE x.status END,
	       confirmed_at = CASE WHEN NOT EXISTS (SELECT 1 FROM settle.payout o WHERE o.batch_id = x.batch_id AND o.status <> 'confirmed')
	                           THEN coalesce(x.confirmed_at, now()) END
	 WHERE x.batch_id = b.batch_id
	   AND x.status <> 'confirmed';
END $$;
COMMENT ON FUNCTION settle.import_payout_confirmations(bigint, jsonb) IS
	'Finance imports the bank''s confirmations of a batch (a JSON array of {end_to_end_id or reseller, bank_reference, status, amount[, currency]}) and reconciles them: a matching confirmation confirms the payout and moves its run to paid; an unknown id, a different amount or currency, a rejection or a conflicting repeat opens a payout_mismatch exception and leaves the payout unconfirmed.  Atomic: malformed input (22P02 amount, 22023 otherwise) or an unknown batch (P0002) writes nothing.  Returns one row per confirmation with its outcome.';

CREATE FUNCTION settle.import_payout_confirmations(batch_id bigint, confirmations text)
	RETURNS TABLE (end_to_end_id text, reseller_id bigint, outcome text, exception_id bigint)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	hdr text[];
	hdr_ok boolean;
	bad_no bigint;
	bad_fields integer;
	rows jsonb;
BEGIN
	-- the size limit first: nothing is read, looked up or written for oversized text
	PERFORM settle._csv_check_size(confirmations);
	IF btrim(coalesce(confirmations, '')) ~ '^[\[{]' THEN
		RETURN QUERY SELECT * FROM settle.import_payout_confirmations(batch_id, confirmations::jsonb);
		RETURN;
	END IF;
	-- One parse, kept once (MATERIALIZED): the header, the first data record
	-- whose field count differs from the header's (numbered from 1 after the
	-- header), and, only when both are right, every data record as a JSON
	-- object of its non-empty fields, in one jsonb_agg.
	WITH rec AS MATERIALIZED (
		SELECT x.f, x.n FROM settle.csv_parse(coalesce(confirmations, '')) WITH ORDINALITY AS x(f, n)),
	h AS MATERIALIZED (
		SELECT y.hdr, y.hdr @> ARRAY['bank_reference', 'status', 'amount'] AND y.hdr && ARRAY['end_to_end_id', 'reseller'] AS ok
		  FROM (SELECT (SELECT array_agg(lower(btrim(u.v)) ORDER BY u.o) FROM unnest(rec.f) WITH ORDINALITY AS u(v, o)) AS hdr
		          FROM rec WHERE rec.n = 1) y),
	bad AS MATERIALIZED (
		SELECT rec.n - 1 AS no, cardinality(rec.f) AS fields
		  FROM rec, h
		 WHERE rec.n > 1 AND cardinality(rec.f) <> cardinality(h.hdr)
		 ORDER BY rec.n
		 LIMIT 1)
	SELECT (SELECT h.hdr FROM h), (SELECT h.ok FROM h), (SELECT bad.no FROM bad), (SELECT bad.fields FROM bad),
	       CASE WHEN (SELECT h.ok FROM h) AND NOT EXISTS (SELECT 1 FROM bad) THEN
	            (SELECT coalesce(jsonb_agg(o.obj ORDER BY rec.n), '[]')
	               FROM rec CROSS JOIN h
	               CROSS JOIN LATERAL (SELECT coalesce(jsonb_object_agg(h.hdr[i], btrim(rec.f[i]) ORDER BY i)
	                                                   FILTER (WHERE rec.f[i] <> ''), '{}') AS obj
	                                     FROM generate_series(1, cardinality(h.hdr)) i) o
	              WHERE rec.n > 1) END
	  INTO hdr, hdr_ok, bad_no, bad_fields, rows;
	IF hdr IS NULL THEN
		RAISE EXCEPTION 'the confirmation CSV is empty' USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF NOT hdr_ok THEN
		RAISE EXCEPTION 'the confirmation CSV header must name end_to_end_id or reseller, bank_reference, status and amount'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;
	IF bad_no IS NOT NULL THEN
		RAISE EXCEPTION 'confirmation CSV record % has % fields, the header %', bad_no, bad_fields, cardinality(hdr)
			USING ERRCODE = 'invalid_text_representation';
	END IF;
	RETURN QUERY SELECT * FROM settle.import_payout_confirmations(batch_id, rows);
END $$;
COMMENT ON FUNCTION settle.import_payout_confirmations(bigint, text) IS
	'The same as the jsonb form for CSV text with a header naming end_to_end_id and/or reseller, bank_reference, status, amount and optionally currency (text starting with [ is read as JSON).';

-- ---------------------------------------------------------------------------
-- Statement documents.

-- Whether the session's login may read the statements of a reseller: staff
-- (analyst, finance, auditor, admin, operator) read all; a settle_reseller
-- login only the resellers settle.reseller_access maps its login role to.
-- Decided by session_user: the login, which SET ROLE does not change.
-- The run, if the session may read it; 42501 otherwise (for a reseller login
-- an unknown run and another reseller's run look the same).
CREATE FUNCTION settle._readable_run(run_id bigint) RETURNS settle.run
LANGUAGE plpgsql STABLE STRICT SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r settle.run;
BEGIN
	SELECT * INTO r FROM settle.run x WHERE x.run_id = _readable_run.run_id;
	IF FOUND AND settle.may_read_statement(r.reseller_id) THEN
		RETURN r;
	END IF;
	IF NOT FOUND AND settle.may_read_statement(0) THEN
		RAISE EXCEPTION 'unknown run %', run_id USING ERRCODE = 'no_data_found';
	END IF;
	RAISE EXCEPTION 'permission denied for the statement of run %', run_id USING ERRCODE = 'insufficient_privilege',
		DETAIL = 'A reseller login reads only its own reseller''s statements.';
END $$;
COMMENT ON FUNCTION settle._readable_run(bigint) IS 'Internal: the run when the session may read its statement; 42501 when not, P0002 for staff when it does not exist.';

CREATE FUNCTION settle.adjustment_reason(kind "char", ref text) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT CASE kind
	  WHEN 'x' THEN 'Correction of a locked period (ChargeClass Correction)' || coalesce(': ' || ref, '')
	  WHEN 'f' THEN 'Floor top-up: the agreement''s floor exceeds the commission earned'
	  -- the workflow keeps the proposal's reason in exception.resolution (read
	  -- through to_jsonb so this also works where that column does not exist)
	  WHEN 'a' THEN 'Approved adjustment' || coalesce(': ' || (
	        SELECT coalesce(pg_catalog.to_jsonb(e)->>'resolution', e.payload->>'reason', e.payload->>'detail')
	          FROM settle.exception e
	         WHERE e.exception_id = (substring(ref FROM 'exception[^0-9]*([0-9]+)'))::bigint
	         LIMIT 1), ': ' || ref, '')
	  WHEN 'r' THEN 'Refund reversal at the original rate' || coalesce(': ' || ref, '')
	  ELSE ref END
$$;
COMMENT ON FUNCTION settle.adjustment_reason("char", text) IS
	'Why a settlement line that is not a plain commission exists: correction, floor top-up, refund reversal, or the reason of the approved adjustment''s exception (ref exception:<id>: its resolution, else payload reason).';

CREATE FUNCTION settle.statement_csv(run_id bigint) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r settle.run := settle._readable_run(run_id);
	s settle.statement;
	rcode text;
	body text;
	head text;
	ccy text;
BEGIN
	SELECT * INTO s FROM settle.statement x WHERE x.reseller_id = r.reseller_id AND x.run_id = r.run_id;
	SELECT x.code INTO rcode FROM settle.reseller x WHERE x.reseller_id = r.reseller_id;
	ccy := s.currency;
	head := 'record,run_id,reseller,period,currency,line_key,kind,customer,product_code,revision,rule_version,'
	     || 'clause,clause_text,tier,basis,rate,amount,reference,reason' || E'\n';
	-- every field through csv_field: NULL becomes an empty field (concat_ws would drop it)
	SELECT coalesce(string_agg(concat_ws(',',
	           CASE WHEN l.kind IN ('c', 'r') THEN 'line' ELSE 'adjustment' END, r.run_id,
	           settle.csv_field(rcode), r.period, ccy, settle.csv_field(l.line_key), settle.csv_field(l.kind::text),
	           settle.csv_field(c.code), settle.csv_field(b.product_code), settle.csv_field(l.revision::text),
	           settle.csv_field(l.rule_version::text), settle.csv_field(l.clause::text),
	           settle.csv_field(settle.rule_clause(v.rule, l.clause)), settle.csv_field(l.tier::text),
	           settle.csv_field(l.basis::text), settle.csv_field(l.rate::text),
	           settle.format_amount(l.rounded, ccy), settle.csv_field(l.ref),
	           settle.csv_field(CASE WHEN l.kind <> 'c' THEN settle.adjustment_reason(l.kind, l.ref) END)) || E'\n',
	           '' ORDER BY (l.kind NOT IN ('c', 'r')), l.line_key COLLATE "C", l.kind), '')
	  INTO body
	  FROM settle.settlement_line l
	  LEFT JOIN settle.bill_line b ON b.reseller_id = l.reseller_id AND b.line_key = l.line_key AND b.revision = l.revision
	  LEFT JOIN settle.customer c ON c.reseller_id = b.reseller_id AND c.customer_id = b.customer_id
	  LEFT JOIN settle.rule_version v ON v.reseller_id = r.reseller_id AND v.agreement_id = r.agreement_id
	                                 AND v.version = l.rule_version
	 WHERE l.reseller_id = r.reseller_id AND l.run_id = r.run_id;
	RETURN head || body || (
		SELECT string_agg(concat_ws(',', t.rec, r.run_id, settle.csv_field(rcode), r.period, ccy,
		                  '', '', '', '', '', '', '', '', '', '', '', t.amount, '', '') || E'\n', '' ORDER BY t.n)
		  FROM (VALUES (1, 'gross_charges', settle.format_amount(s.gross_charges, ccy)),
		               (2, 'commissionable', settle.format_amount(s.commissionable, ccy)),
		               (3, 'commission', settle.format_amount(s.commission, ccy)),
		               (4, 'refunds', settle.format_amount(s.refunds, ccy)),
		               (5, 'corrections', settle.format_amount(s.corrections, ccy)),
		               (6, 'adjustments', settle.format_amount(s.adjustments, ccy)),
		               (7, 'total', settle.format_amount(s.total, ccy)),
		               (8, 'carry_forward_in', settle.format_amount(s.carry_forward_in, ccy)),
		               (9, 'carry_forward_out', settle.format_amount(s.carry_forward_out, ccy)),
		               (10, 'net_payout', settle.format_amount(s.net_payout, ccy))) AS t(n, rec, amount));
END $$;
COMMENT ON FUNCTION settle.statement_csv(bigint) IS
	'A run''s reseller statement as CSV (columns in docs/statements.md): one ''line'' record per commission or refund line with its rule clause, one ''adjustment'' record per correction, floor top-up or approved adjustment with its reason, then the totals (gross_charges ... net_payout, carry-forward in and out).  Deterministic.  A reseller login may read only its own runs (42501 otherwise).';

CREATE FUNCTION settle._statement_page(r settle.run, itemise_limit integer) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	s settle.statement;
	rs settle.reseller;
	op text;
	ccy text;
	n_items bigint;
	h text;
	items text;
	adj text;
BEGIN
	SELECT * INTO s FROM settle.statement x WHERE x.reseller_id = r.reseller_id AND x.run_id = r.run_id;
	SELECT * INTO rs FROM settle.reseller x WHERE x.reseller_id = r.reseller_id;
	SELECT x.operator_name INTO op FROM settle.payout_setting x;
	ccy := s.currency;
	SELECT count(*) INTO n_items FROM settle.settlement_line l
	 WHERE l.reseller_id = r.reseller_id AND l.run_id = r.run_id AND l.kind IN ('c', 'r');

	IF n_items <= itemise_limit THEN
		SELECT coalesce(string_agg(format('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td class="num">%s</td><td class="num">%s</td><td class="num">%s</td></tr>',
		           settle.xml_escape(l.line_key), settle.xml_escape(coalesce(c.code, '')),
		           settle.xml_escape(coalesce(b.product_code, '')),
		           settle.xml_escape(CASE l.kind WHEN 'r' THEN 'refund' ELSE 'charge' END),
		           settle.xml_escape(coalesce(l.clause || ': ' || settle.rule_clause(v.rule, l.clause), 'none')),
		           settle.xml_escape(settle.format_amount(l.basis, ccy)),
		           settle.xml_escape(coalesce(trim_scale(l.rate * 100)::text || '%', 'fixed')),
		           settle.xml_escape(settle.format_amount(l.rounded, ccy))), E'\n' ORDER BY l.line_key COLLATE "C", l.kind), '')
		  INTO items
		  FROM settle.settlement_line l
		  LEFT JOIN settle.bill_line b ON b.reseller_id = l.reseller_id AND b.line_key = l.line_key AND b.revision = l.revision
		  LEFT JOIN settle.customer c ON c.reseller_id = b.reseller_id AND c.customer_id = b.customer_id
		  LEFT JOIN settle.rule_version v ON v.reseller_id = r.reseller_id AND v.agreement_id = r.agreement_id
		                                 AND v.version = l.rule_version
		 WHERE l.reseller_id = r.reseller_id AND l.run_id = r.run_id AND l.kind IN ('c', 'r');
		items := '<table class="items"><caption>Itemised lines</caption>' || E'\n'
		      || '<thead><tr><th>Line</th><th>Customer</th><th>Product</th><th>Type</th><th>Rule clause</th><th>Basis</th><th>Rate</th><th>Commission</th></tr></thead>' || E'\n'
		      || '<tbody>' || E'\n' || items || E'\n' || '</tbody></table>';
	ELSE
		SELECT coalesce(string_agg(format('<tr><td>%s</td><td>%s</td><td class="num">%s</td><td class="num">%s</td><td class="num">%s</td></tr>',
		           settle.xml_escape(g.customer), settle.xml_escape(g.product), g.n,
		           settle.xml_escape(settle.format_amount(g.basis, ccy)),
		           settle.xml_escape(settle.format_amount(g.amount, ccy))), E'\n' ORDER BY g.customer COLLATE "C", g.product COLLATE "C"), '')
		  INTO items
		  FROM (SELECT coalesce(c.code, '(none)') AS customer, coalesce(b.product_code, '(none)') AS product,
		               count(*) AS n, sum(l.basis) AS basis, sum(l.rounded) AS amount
		          FROM settle.settlement_line l
		          LEFT JOIN settle.bill_line b ON b.reseller_id = l.reseller_id AND b.line_key = l.line_key AND b.revision = l.revision
		          LEFT JOIN settle.customer c ON c.reseller_id = b.reseller_id AND c.customer_id = b.customer_id
		         WHERE l.reseller_id = r.reseller_id AND l.run_id = r.run_id AND l.kind IN ('c', 'r')
		         GROUP BY 1, 2) g;
		items := format('<table class="items"><caption>Commission per customer and product (%s lines)</caption>', n_items) || E'\n'
		      || '<thead><tr><th>Customer</th><th>Product</th><th>Lines</th><th>Basis</th><th>Commission</th></tr></thead>' || E'\n'
		      || '<tbody>' || E'\n' || items || E'\n' || '</tbody></table>';
	END IF;

	SELECT string_agg(format('<tr><td>%s</td><td>%s</td><td>%s</td><td class="num">%s</td></tr>',
	           settle.xml_escape(l.line_key),
	           settle.xml_escape(CASE l.kind WHEN 'x' THEN 'correction' WHEN 'f' THEN 'floor top-up' ELSE 'adjustment' END),
	           settle.xml_escape(settle.adjustment_reason(l.kind, l.ref)),
	           settle.xml_escape(settle.format_amount(l.rounded, ccy))), E'\n' ORDER BY l.line_key COLLATE "C", l.kind)
	  INTO adj
	  FROM settle.settlement_line l
	 WHERE l.reseller_id = r.reseller_id AND l.run_id = r.run_id AND l.kind IN ('a', 'x', 'f');
	adj := '<table class="adjustments"><caption>Adjustments</caption>' || E'\n'
	    || '<thead><tr><th>Line</th><th>Type</th><th>Reason</th><th>Amount</th></tr></thead>' || E'\n'
	    || '<tbody>' || E'\n'
	    || coalesce(adj, '<tr><td colspan="4">No adjustments in this period.</td></tr>') || E'\n' || '</tbody></table>';

	h := format('<section class="page" id="statement-%s">', r.run_id) || E'\n'
	  || '<header>' || E'\n'
	  || format('<p class="operator">%s</p>', settle.xml_escape(coalesce(op, 'settle'))) || E'\n'
	  || format('<h1>Commission statement %s</h1>', settle.xml_escape(r.period)) || E'\n'
	  || '<dl class="meta">' || E'\n'
	  || format('<dt>Reseller</dt><dd id="reseller">%s (%s)</dd>', settle.xml_escape(rs.name), settle.xml_escape(rs.code)) || E'\n'
	  || format('<dt>Period</dt><dd id="period">%s</dd>', settle.xml_escape(r.period)) || E'\n'
	  || format('<dt>Currency</dt><dd id="currency">%s</dd>', settle.xml_escape(ccy)) || E'\n'
	  || format('<dt>Run</dt><dd id="run">%s</dd>', r.run_id) || E'\n'
	  || format('<dt>Status</dt><dd id="status">%s</dd>', settle.xml_escape(r.status)) || E'\n'
	  || '</dl>' || E'\n'
	  || '</header>' || E'\n'
	  || '<table class="totals"><caption>Totals</caption>' || E'\n'
	  || '<tbody>' || E'\n'
	  || (SELECT string_agg(format('<tr id="%s"><th>%s</th><td class="num">%s %s</td></tr>', t.id, settle.xml_escape(t.label),
	                               settle.xml_escape(settle.format_amount(t.v, ccy)), settle.xml_escape(ccy)), E'\n' ORDER BY t.n)
	        FROM (VALUES (1, 'gross-charges', 'Gross charges', s.gross_charges),
	                     (2, 'commissionable', 'Commissionable amount', s.commissionable),
	                     (3, 'commission', 'Commission', s.commission),
	                     (4, 'refunds', 'Refund reversals', s.refunds),
	                     (5, 'corrections', 'Corrections', s.corrections),
	                     (6, 'adjustments', 'Adjustments', s.adjustments),
	                     (7, 'total', 'Total for the period', s.total),
	                     (8, 'carry-forward-in', 'Carried forward from earlier periods', s.carry_forward_in),
	                     (9, 'carry-forward-out', 'Carried forward to the next period', s.carry_forward_out),
	                     (10, 'net-payout', 'Net payout', s.net_payout)) AS t(n, id, label, v)) || E'\n'
	  || '</tbody></table>' || E'\n'
	  || items || E'\n'
	  || adj || E'\n'
	  || '<footer>' || E'\n'
	  || format('<p>Carry-forward: %s %s brought in, %s %s carried to the next period (minimum payout).</p>',
	            settle.xml_escape(settle.format_amount(s.carry_forward_in, ccy)), settle.xml_escape(ccy),
	            settle.xml_escape(settle.format_amount(s.carry_forward_out, ccy)), settle.xml_escape(ccy)) || E'\n'
	  || format('<p>Run fingerprint (SHA-256 of every line and total): <code id="fingerprint">%s</code></p>',
	            encode(r.output_fingerprint, 'hex')) || E'\n'
	  || '</footer>' || E'\n'
	  || '</section>';
	RETURN h;
END $$;
COMMENT ON FUNCTION settle._statement_page(settle.run, integer) IS 'Internal: one printable HTML page (a <section>) of a run''s statement.';

CREATE FUNCTION settle._statement_document(title text, pages text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
	SELECT '<!DOCTYPE html>' || E'\n'
	    || '<html lang="en">' || E'\n'
	    || '<head>' || E'\n'
	    || '<meta charset="utf-8">' || E'\n'
	    || '<title>' || settle.xml_escape(title) || '</title>' || E'\n'
	    || '<style>' || E'\n'
	    || '@page { size: A4; margin: 15mm; }' || E'\n'
	    || 'body { font-family: sans-serif; font-size: 10pt; color: #000; }' || E'\n'
	    || '.page { page-break-after: always; break-after: page; }' || E'\n'
	    || '.page:last-child { page-break-after: auto; break-after: auto; }' || E'\n'
	    || '.operator { font-weight: bold; font-size: 12pt; }' || E'\n'
	    || 'table { border-collapse: collapse; width: 100%; margin: 4mm 0; }' || E'\n'
	    || 'caption { text-align: left; font-weight: bold; }' || E'\n'
	    || 'th, td { border-bottom: 1px solid #999; padding: 1mm 2mm; text-align: left; }' || E'\n'
	    || 'td.num { text-align: right; font-variant-numeric: tabular-nums; }' || E'\n'
	    || 'tr#net-payout, tr#total { font-weight: bold; }' || E'\n'
	    || 'dl.meta dt { float: left; clear: left; width: 25mm; font-weight: bold; }' || E'\n'
	    || 'code { font-size: 8pt; word-break: break-all; }' || E'\n'
	    || '</style>' || E'\n'
	    || '</head>' || E'\n'
	    || '<body>' || E'\n'
	    || pages || E'\n'
	    || '</body>' || E'\n'
	    || '</html>' || E'\n'
$$;
COMMENT ON FUNCTION settle._statement_document(text, text) IS 'Internal: the printable HTML document around statement pages (A4, one page per statement).';

CREATE FUNCTION settle.statement_html(run_id bigint, itemise_limit integer DEFAULT 50) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	r settle.run := settle._readable_run(run_id);
BEGIN
	RETURN settle._statement_document(
		format('Commission statement %s %s run %s', (SELECT x.code FROM settle.reseller x WHERE x.reseller_id = r.reseller_id),
		       r.period, r.run_id),
		settle._statement_page(r, itemise_limit));
END $$;
COMMENT ON FUNCTION settle.statement_html(bigint, integer) IS
	'A run''s reseller statement as a printable HTML document (one A4 page): operator, reseller, period, currency, status, totals, itemised lines (aggregated per customer and product above itemise_limit lines), adjustments with reasons, carry-forward and the run''s output fingerprint.  Every value is HTML-escaped; deterministic bytes.  A reseller login may read only its own runs (42501 otherwise).';

CREATE FUNCTION settle.statements_html(period settle.period, itemise_limit integer DEFAULT 50) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
	pages text;
BEGIN
	SELECT string_agg(settle._statement_page(r, itemise_limit), E'\n' ORDER BY rs.code COLLATE "C")
	  INTO pages
	  FROM settle.run r JOIN settle.reseller rs ON rs.reseller_id = r.reseller_id
	 WHERE r.period = statements_html.period AND r.status <> 'superseded'
	   AND settle.may_read_statement(r.reseller_id);
	IF pages IS NULL THEN
		RAISE EXCEPTION 'no statements of % to show', period USING ERRCODE = 'no_data_found';
	END IF;
	RETURN settle._statement_document(format('Commission statements %s', period), pages);
END $$;
COMMENT ON FUNCTION settle.statements_html(settle.period, integer) IS
	'Every current statement of a period the session may read, as one printable HTML document with one page per reseller (ordered by reseller code).';

-- The batch as it read before formats were rows (0.1.0 had a hash column per
-- format): for finance and BI queries written against those columns.  New
-- formats are read from settle.payout_batch_file, not added here.
CREATE VIEW settle.payout_batch_hashes AS
	SELECT b.*,
	       (SELECT f.sha256 FROM settle.payout_batch_file f WHERE f.batch_id = b.batch_id AND f.format = 'csv') AS csv_sha256,
	       (SELECT f.sha256 FROM settle.payout_batch_file f WHERE f.batch_id = b.batch_id AND f.format = 'pain.001') AS pain001_sha256
	  FROM settle.payout_batch b;
COMMENT ON VIEW settle.payout_batch_hashes IS
	'Payout batches with the CSV and pain.001 hashes as columns, as settle.payout_batch had them in 0.1.0 (read-only, for existing queries); every format''s hash is in settle.payout_batch_file.';
COMMENT ON COLUMN settle.payout_batch_hashes.csv_sha256 IS 'SHA-256 of the batch''s CSV file (settle.payout_batch_file.sha256).';
COMMENT ON COLUMN settle.payout_batch_hashes.pain001_sha256 IS 'SHA-256 of the batch''s pain.001 file (settle.payout_batch_file.sha256).';

-- ---------------------------------------------------------------------------
-- Audit, append-only.  (Bank details, settle.payee and payee_current, are
-- readable by finance and admin only: 98_privileges.sql.)

DO $payout$
DECLARE
	t text;
BEGIN
	-- Generic audit (before/after) for everything except settle.payee, whose
	-- changes are audited through settle.payee_change with the IBAN masked.
	FOREACH t IN ARRAY ARRAY['payout_batch', 'payout']
	LOOP
		EXECUTE pg_catalog.format('CREATE TRIGGER payout_guard BEFORE UPDATE OR DELETE ON settle.%I '
			'FOR EACH ROW EXECUTE FUNCTION settle.payout_guard()', t);
		EXECUTE pg_catalog.format('ALTER TABLE settle.%I ENABLE ALWAYS TRIGGER payout_guard', t);
		EXECUTE pg_catalog.format('CREATE TRIGGER no_truncate BEFORE TRUNCATE ON settle.%I '
			'FOR EACH STATEMENT EXECUTE FUNCTION settle.append_only_trigger()', t);
		EXECUTE pg_catalog.format('ALTER TABLE settle.%I ENABLE ALWAYS TRIGGER no_truncate', t);
	END LOOP;
END
$payout$;
-- Generic audit (before/after) for everything except settle.payee, whose
-- changes are audited through settle.payee_change with the IBAN masked.
SELECT settle._audited(t::regclass, t IN ('settle.payout_setting', 'settle.payee_change'))
  FROM unnest(ARRAY['settle.payout_setting', 'settle.payee_change', 'settle.payout_batch', 'settle.payout']) t;
SELECT settle._append_only('settle.payee'), settle._append_only('settle.payee_change'),
       settle._append_only('settle.payout_batch_file');
SELECT settle._audited('settle.payout_batch_file'), settle._audited('settle.payout_format');

SELECT pg_catalog.pg_extension_config_dump('settle.payout_setting', '');
SELECT pg_catalog.pg_extension_config_dump('settle.payee', '');
SELECT pg_catalog.pg_extension_config_dump('settle.payee_change', '');
SELECT pg_catalog.pg_extension_config_dump('settle.payout_batch', '');
SELECT pg_catalog.pg_extension_config_dump('settle.payout_batch_file', '');
SELECT pg_catalog.pg_extension_config_dump('settle.payout_format', '');
SELECT pg_catalog.pg_extension_config_dump('settle.payout', '');
