/*
 * ingest_lines.c — from normalized lines to stored bill line revisions.
 *
 * For one page: maps each line's account to a customer and reseller on the
 * line's date (settle.customer_account), checks it against the currency and
 * product catalogues and the agreement table, decides per natural key
 * whether it is new, unchanged (a no-op) or a new revision, inserts all new
 * revisions with one statement, and opens an exception for every failure.
 * A failing line never stops its neighbours: it is stored with its errors.
 * Runs inside the page's transaction, so all of this commits with the page.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "ingest.h"
#include "ingest_lines.h"

typedef struct MapEntry
{
	char		key[NAMEDATALEN * 2];
	int64		reseller_id;
	int64		customer_id;
	bool		mapped;
	bool		has_agreement;
} MapEntry;

#define KEYLEN 512

typedef struct KeyEntry
{
	char		key[KEYLEN];
	int32		revision;
	uint8		hash[32];
} KeyEntry;

char *
ingest_trim(char *s)
{
	char	   *end;

	if (s == NULL)
		return NULL;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
					   end[-1] == '\n' || end[-1] == '\r'))
		end--;
	*end = '\0';
	return s;
}

void
ingest_line_error(NormLine *l, const char *fmt,...)
{
	StringInfoData buf;
	char	   *p;

	initStringInfo(&buf);
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(&buf, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(&buf, needed);
	}
	/* errors are stored comma-separated: keep values from breaking that */
	for (p = buf.data; *p; p++)
		if (*p == ',' || *p == '{' || *p == '}' || *p == '"')
			*p = '_';
	l->errors = lappend(l->errors, buf.data);
}

/* A decimal literal: -?digits[.digits][e[+-]digits], bounded in size. */
static bool
valid_decimal(const char *s)
{
	const char *p = s;
	int			digits = 0;

	if (strlen(s) > 64)
		return false;
	if (*p == '-' || *p == '+')
		p++;
	while (*p >= '0' && *p <= '9')
		p++, digits++;
	if (*p == '.')
	{
		p++;
		while (*p >= '0' && *p <= '9')
			p++, digits++;
	}
	if (digits == 0)
		return false;
	if (*p == 'e' || *p == 'E')
	{
		int			exp_digits = 0;

		p++;
		if (*p == '-' || *p == '+')
			p++;
		while (*p >= '0' && *p <= '9')
			p++, exp_digits++;
		if (exp_digits == 0 || exp_digits > 3)
			return false;
	}
	return *p == '\0';
}

/*
 * Parses an amount from its source text (a JSON number's exact token or a
 * string, possibly padded with whitespace) into numeric.  Returns false and
 * records the failure on the line when it is missing (and required) or not
 * a decimal.  Never goes through double.
 */
bool
ingest_parse_amount(NormLine *l, const char *field, char *text, bool isstr,
					bool required, Datum *out)
{
	char	   *s;

	if (text == NULL || (s = ingest_trim(text))[0] == '\0')
	{
		if (required)
			ingest_line_error(l, "missing:%s", field);
		return false;
	}
	if (!valid_decimal(s))
	{
		ingest_line_error(l, "invalid_amount:%s", field);
		return false;
	}
	*out = DirectFunctionCall3(numeric_in, CStringGetDatum(s),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	return true;
}

bool
ingest_valid_date(const char *s)
{
	int			y,
				m,
				d;
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return false;
	if (sscanf(s, "%4d-%2d-%2d", &y, &m, &d) != 3)
		return false;
	if (y < 1900 || y > 9999 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
		return false;
	if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
		return false;
	return true;
}

char *
ingest_next_day(const char *ymd)
{
	int			y,
				m,
				d;

	sscanf(ymd, "%4d-%2d-%2d", &y, &m, &d);
	j2date(date2j(y, m, d) + 1, &y, &m, &d);
	return psprintf("%04d-%02d-%02d", y, m, d);
}

char *
ingest_next_month(const char *ym)
{
	int			y,
				m;

	sscanf(ym, "%4d-%2d", &y, &m);
	if (++m > 12)
		m = 1, y++;
	return psprintf("%04d-%02d-01", y, m);
}

static void
load_catalogue(IngestState *st)
{
	MemoryContext old;
	uint64		i;

	if (st->catalogue_loaded)
		return;
	if (SPI_execute("SELECT currency_code::text FROM settle.currency", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.currency");
	old = MemoryContextSwitchTo(st->runcxt);
	for (i = 0; i < SPI_processed; i++)
		st->currencies = lappend(st->currencies,
								 pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
	MemoryContextSwitchTo(old);
	if (SPI_execute("SELECT product_code || E'\\t' || category FROM settle.product", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.product");
	old = MemoryContextSwitchTo(st->runcxt);
	for (i = 0; i < SPI_processed; i++)
		st->products = lappend(st->products,
							   pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
	MemoryContextSwitchTo(old);
	st->catalogue_loaded = true;
}

static bool
known_currency(IngestState *st, const char *c)
{
	ListCell   *lc;

	foreach(lc, st->currencies)
		if (strcmp((char *) lfirst(lc), c) == 0)
			return true;
	return false;
}

/* The product's category, or NULL when the product is not in the catalogue. */
static char *
product_category(IngestState *st, const char *code)
{
	ListCell   *lc;
	size_t		len = strlen(code);

	foreach(lc, st->products)
	{
		char	   *p = lfirst(lc);

		if (pg_strncasecmp(p, code, len) == 0 && p[len] == '\t')
			return p + len + 1;
	}
	return NULL;
}

static MapEntry *
lookup_mapping(IngestState *st, const char *account, const char *date)
{
	char		key[NAMEDATALEN * 2];
	MapEntry   *e;
	bool		found;

	if (st->mapping == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(key);
		ctl.entrysize = sizeof(MapEntry);
		ctl.hcxt = st->runcxt;
		st->mapping = hash_create("settle ingest mapping", 256, &ctl,
								  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	}
	memset(key, 0, sizeof(key));
	snprintf(key, sizeof(key), "%s|%s", account, date);
	e = hash_search(st->mapping, key, HASH_ENTER, &found);
	if (!found)
	{
		Oid			types[2] = {TEXTOID, DATEOID};
		Datum		vals[2];

		vals[0] = CStringGetTextDatum(account);
		vals[1] = DirectFunctionCall1(date_in, CStringGetDatum(date));
		e->mapped = false;
		e->has_agreement = false;
		if (SPI_execute_with_args(
								  "SELECT ca.reseller_id, ca.customer_id, EXISTS ("
								  " SELECT 1 FROM settle.agreement a WHERE a.reseller_id = ca.reseller_id"
								  "  AND $2 >= a.effective_from AND $2 < a.effective_to)"
								  " FROM settle.customer_account ca WHERE ca.account_id = $1"
								  "  AND $2 >= ca.valid_from AND $2 < ca.valid_to",
								  2, types, vals, NULL, false, 2) != SPI_OK_SELECT)
			elog(ERROR, "could not read settle.customer_account");
		if (SPI_processed == 1)
		{
			bool		isnull;
			HeapTuple	t = SPI_tuptable->vals[0];

			e->mapped = true;
			e->reseller_id = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 1, &isnull));
			e->customer_id = DatumGetInt64(SPI_getbinval(t, SPI_tuptable->tupdesc, 2, &isnull));
			e->has_agreement = DatumGetBool(SPI_getbinval(t, SPI_tuptable->tupdesc, 3, &isnull));
		}
	}
	return e;
}

static void
open_exception(IngestState *st, int64 reseller_id, const char *kind,
			   const char *scope_key, const char *period, const char *refs,
			   const char *payload)
{
	Oid			types[6] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		vals[6];
	char		nulls[6] = "      ";

	vals[0] = Int64GetDatum(reseller_id);
	vals[1] = CStringGetTextDatum(kind);
	vals[2] = CStringGetTextDatum(scope_key);
	if (period)
		vals[3] = CStringGetTextDatum(period);
	else
		nulls[3] = 'n';
	vals[4] = CStringGetTextDatum(refs);
	vals[5] = CStringGetTextDatum(payload);
	if (SPI_execute_with_args("SELECT settle.open_exception($1, $2, $3, $4, $5::jsonb, $6::jsonb, 'error')",
							  6, types, vals, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not open exception");
	st->exceptions_opened++;
}

/* Column builder for the unnest() insert. */
typedef struct Col
{
	Oid			type;
	Datum	   *v;
	bool	   *n;
} Col;

static void
col_init(Col *c, Oid type, int n)
{
	c->type = type;
	c->v = palloc0(sizeof(Datum) * (n + 1));
	c->n = palloc0(sizeof(bool) * (n + 1));
}

static void
col_text(Col *c, int i, const char *s)
{
	if (s == NULL)
		c->n[i] = true;
	else
		c->v[i] = CStringGetTextDatum(s);
}

static Datum
col_array(Col *c, int n)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(c->type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(c->v, c->n, 1, dims, lbs, c->type,
											  typlen, typbyval, typalign));
}

#define NCOLS 27

static const char *const insert_sql =
"INSERT INTO settle.bill_line (reseller_id, line_key, revision, customer_id, content_hash,"
" raw_page_id, connector_id, source_item, source_record_id, billing_account_id, sub_account_id,"
" billing_period_start, charge_period_start, charge_period_end, charge_category, charge_class,"
" product_code, service_name, service_category, sku_id, region_id, resource_id, billing_currency,"
" list_cost, discount, coupon_deduction, billed_cost, amount_paid, original_line_key, tags,"
" validation_errors)"
" SELECT a1, a2, a3, a4, a5, $28, $29, a6, a7, a8, a9, $30::date, a10::timestamptz,"
"  a11::timestamptz, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21,"
"  coalesce(a22, 0), coalesce(a23, 0), a24, a25, a26, coalesce(a27::jsonb, '{}'),"
"  coalesce(pg_catalog.string_to_array(a28, ','), '{}')"
" FROM unnest($1::int8[], $2::text[], $3::int4[], $4::int8[], $5::bytea[], $6::text[],"
"  $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],"
"  $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],"
"  $21::numeric[], $22::numeric[], $23::numeric[], $24::numeric[], $25::numeric[], $26::text[],"
"  $27::text[], $31::text[])"
" AS u(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19,"
"  a20, a21, a22, a23, a24, a25, a26, a27, a28)";

static char *
json_refs(IngestState *st, NormLine *l, int32 revision, int64 raw_page_id)
{
	StringInfoData b;

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"line_key\": ");
	escape_json(&b, l->line_key);
	appendStringInfo(&b, ", \"revision\": %d, \"raw_page_id\": " INT64_FORMAT
					 ", \"ingest_run_id\": " INT64_FORMAT ", \"connector\": ",
					 revision, raw_page_id, st->run_id);
	escape_json(&b, st->connector_name);
	appendStringInfoChar(&b, '}');
	return b.data;
}

static char *
json_errors(NormLine *l)
{
	StringInfoData b;
	ListCell   *lc;
	bool		first = true;

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"errors\": [");
	foreach(lc, l->errors)
	{
		if (!first)
			appendStringInfoString(&b, ", ");
		escape_json(&b, (char *) lfirst(lc));
		first = false;
	}
	appendStringInfoString(&b, "]}");
	return b.data;
}

/*
 * Stores one page of lines.  Caller holds an open transaction and SPI
 * connection; everything written here commits or aborts with the page.
 */
void
ingest_store_lines(IngestState *st, int64 raw_page_id,
				   const char *billing_period_start, const char *period,
				   NormLine *lines, int nlines)
{
	HASHCTL		ctl;
	HTAB	   *keys;
	Datum	   *keyd;
	int			nkeys = 0;
	int			i;
	int32	   *revision;
	bool	   *insert;
	MapEntry  **map;
	int			ninsert = 0;
	Col			cols[NCOLS + 1];
	Oid			argtypes[31];
	Datum		args[31];
	char		nulls[32];
	static const Oid coltypes[NCOLS + 1] = {
		InvalidOid, INT8OID, TEXTOID, INT4OID, INT8OID, BYTEAOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, NUMERICOID, NUMERICOID,
		NUMERICOID, NUMERICOID, NUMERICOID, TEXTOID, TEXTOID
	};
	Datum		tolerance;

	if (nlines == 0)
		return;
	load_catalogue(st);
	st->lines_seen += nlines;

	/* One writer of bill lines at a time: revision numbers stay dense. */
	if (SPI_execute("SELECT pg_catalog.pg_advisory_xact_lock(5861746185)", false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock bill lines");

	/* Latest stored revision of every key on the page (and refund originals). */
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = KEYLEN;
	ctl.entrysize = sizeof(KeyEntry);
	ctl.hcxt = CurrentMemoryContext;
	for (i = 0; i < nlines; i++)
	{
		/* keep keys short enough to be hash keys: long ones become their hash */
		if (strlen(lines[i].line_key) >= KEYLEN - 1)
		{
			char		hex[65];

			acs3_sha256_hex(lines[i].line_key, strlen(lines[i].line_key), hex);
			lines[i].line_key = psprintf("sha256:%s", hex);
		}
		if (lines[i].original_line_key && strlen(lines[i].original_line_key) >= KEYLEN - 1)
		{
			char		hex[65];

			acs3_sha256_hex(lines[i].original_line_key, strlen(lines[i].original_line_key), hex);
			lines[i].original_line_key = psprintf("sha256:%s", hex);
		}
	}
	keys = hash_create("settle ingest keys", nlines * 2, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	keyd = palloc(sizeof(Datum) * nlines * 2);
	for (i = 0; i < nlines; i++)
	{
		keyd[nkeys++] = CStringGetTextDatum(lines[i].line_key);
		if (lines[i].original_line_key)
			keyd[nkeys++] = CStringGetTextDatum(lines[i].original_line_key);
	}
	{
		Oid			t[1] = {TEXTARRAYOID};
		Datum		v[1];
		uint64		r;

		v[0] = PointerGetDatum(construct_array(keyd, nkeys, TEXTOID, -1, false, TYPALIGN_INT));
		/* one index probe per key (bill_line_key_idx), whatever the statistics */
		if (SPI_execute_with_args("SELECT k.key, b.revision, b.content_hash"
								  " FROM (SELECT DISTINCT u AS key FROM pg_catalog.unnest($1) u) k"
								  " CROSS JOIN LATERAL (SELECT l.revision, l.content_hash"
								  "  FROM settle.bill_line l WHERE l.line_key = k.key"
								  "  ORDER BY l.line_key DESC, l.revision DESC LIMIT 1) b",
								  1, t, v, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read settle.bill_line");
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			bool		isnull;
			char	   *k = TextDatumGetCString(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull));
			bytea	   *h = DatumGetByteaPP(SPI_getbinval(tup, SPI_tuptable->tupdesc, 3, &isnull));
			KeyEntry   *e;
			bool		found;

			e = hash_search(keys, k, HASH_ENTER, &found);
			e->revision = DatumGetInt32(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull));
			memcpy(e->hash, VARDATA_ANY(h), 32);
		}
	}

	revision = palloc0(sizeof(int32) * nlines);
	insert = palloc0(sizeof(bool) * nlines);
	map = palloc0(sizeof(MapEntry *) * nlines);
	for (i = 0; i < nlines; i++)
	{
		NormLine   *l = &lines[i];
		KeyEntry   *e;
		bool		found;

		e = hash_search(keys, l->line_key, HASH_ENTER, &found);
		if (found && e->revision > 0 && memcmp(e->hash, l->hash, 32) == 0)
		{
			st->lines_unchanged++;
			continue;
		}
		if (found && e->revision > 0)
		{
			revision[i] = e->revision + 1;
			st->lines_revised++;
		}
		else
		{
			revision[i] = 1;
			st->lines_new++;
		}
		e->revision = revision[i];
		memcpy(e->hash, l->hash, 32);
		insert[i] = true;
		ninsert++;
	}
	if (ninsert == 0)
		return;

	/* Validation against the catalogues and the customer mapping. */
	tolerance = DirectFunctionCall3(numeric_in, CStringGetDatum("0.01"),
									ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	for (i = 0; i < nlines; i++)
	{
		NormLine   *l = &lines[i];

		if (!insert[i])
			continue;
		if (l->currency && !known_currency(st, l->currency))
		{
			ingest_line_error(l, "unknown_currency:%s", l->currency);
			if (strlen(l->currency) != 3)
				l->currency = NULL;
		}
		if (l->product_code && product_category(st, l->product_code) == NULL)
			ingest_line_error(l, "unknown_product:%s", l->product_code);
		/* provider identity: gross - discount - coupons = payable, within 0.01 */
		if (l->check_identity && !l->amt_null[AMT_LIST] && !l->amt_null[AMT_BILLED])
		{
			Datum		d = l->amt[AMT_LIST];

			if (!l->amt_null[AMT_DISCOUNT])
				d = DirectFunctionCall2(numeric_sub, d, l->amt[AMT_DISCOUNT]);
			if (!l->amt_null[AMT_COUPON])
				d = DirectFunctionCall2(numeric_sub, d, l->amt[AMT_COUPON]);
			d = DirectFunctionCall1(numeric_abs,
									DirectFunctionCall2(numeric_sub, d, l->amt[AMT_BILLED]));
			if (DatumGetBool(DirectFunctionCall2(numeric_gt, d, tolerance)))
				ingest_line_error(l, "identity:gross-discount-coupons<>billed");
		}
		if (l->map_account && l->line_date)
		{
			map[i] = lookup_mapping(st, l->map_account, l->line_date);
			if (!map[i]->mapped)
				ingest_line_error(l, "unmapped_account:%s", l->map_account);
			else if (!map[i]->has_agreement)
				ingest_line_error(l, "no_agreement:%s", l->line_date);
		}
		if (l->original_line_key)
		{
			if (hash_search(keys, l->original_line_key, HASH_FIND, NULL) == NULL)
				ingest_line_error(l, "unlinked_refund");
		}
	}

	for (i = 1; i <= NCOLS; i++)
		col_init(&cols[i], coltypes[i], ninsert);
	{
		int			j = 0;

		for (i = 0; i < nlines; i++)
		{
			NormLine   *l = &lines[i];
			bytea	   *h;
			int			a;

			if (!insert[i])
				continue;
			cols[1].v[j] = Int64GetDatum(map[i] && map[i]->mapped ? map[i]->reseller_id : 0);
			col_text(&cols[2], j, l->line_key);
			cols[3].v[j] = Int32GetDatum(revision[i]);
			if (map[i] && map[i]->mapped)
				cols[4].v[j] = Int64GetDatum(map[i]->customer_id);
			else
				cols[4].n[j] = true;
			h = palloc(VARHDRSZ + 32);
			SET_VARSIZE(h, VARHDRSZ + 32);
			memcpy(VARDATA(h), l->hash, 32);
			cols[5].v[j] = PointerGetDatum(h);
			col_text(&cols[6], j, l->source_item ? l->source_item : "");
			col_text(&cols[7], j, l->source_record_id);
			col_text(&cols[8], j, l->billing_account_id);
			col_text(&cols[9], j, l->sub_account_id);
			col_text(&cols[10], j, l->charge_period_start);
			col_text(&cols[11], j, l->charge_period_end);
			col_text(&cols[12], j, l->charge_category);
			col_text(&cols[13], j, l->charge_class);
			col_text(&cols[14], j, l->product_code);
			col_text(&cols[15], j, l->service_name);
			col_text(&cols[16], j, l->product_code ? product_category(st, l->product_code) : NULL);
			col_text(&cols[17], j, l->sku_id);
			col_text(&cols[18], j, l->region_id);
			col_text(&cols[19], j, l->resource_id);
			col_text(&cols[20], j, l->currency);
			for (a = 0; a < AMT__COUNT; a++)
			{
				if (l->amt_null[a])
					cols[21 + a].n[j] = true;
				else
					cols[21 + a].v[j] = l->amt[a];
			}
			col_text(&cols[26], j, l->original_line_key);
			col_text(&cols[27], j, l->tags_json);
			j++;
		}
	}

	/* errors column ($31) is built after validation, as text */
	{
		Col			errs;
		int			j = 0;

		col_init(&errs, TEXTOID, ninsert);
		for (i = 0; i < nlines; i++)
		{
			NormLine   *l = &lines[i];

			if (!insert[i])
				continue;
			if (l->errors != NIL)
			{
				StringInfoData b;
				ListCell   *lc;

				initStringInfo(&b);
				foreach(lc, l->errors)
					appendStringInfo(&b, "%s%s", b.len ? "," : "", (char *) lfirst(lc));
				errs.v[j] = CStringGetTextDatum(b.data);
			}
			else
				errs.n[j] = true;
			j++;
		}
		for (i = 1; i <= NCOLS; i++)
		{
			argtypes[i - 1] = get_array_type(coltypes[i]);
			args[i - 1] = col_array(&cols[i], ninsert);
		}
		argtypes[27] = INT8OID;
		args[27] = Int64GetDatum(raw_page_id);
		argtypes[28] = INT8OID;
		args[28] = Int64GetDatum(st->connector_id);
		argtypes[29] = TEXTOID;
		args[29] = CStringGetTextDatum(billing_period_start);
		argtypes[30] = TEXTARRAYOID;
		args[30] = col_array(&errs, ninsert);
		memset(nulls, ' ', sizeof(nulls));

		/*
		 * Insert with session_replication_role = replica for this statement
		 * only: that skips the per-row foreign-key checks of raw_page_id and
		 * connector_id, which hold by construction (the raw page was
		 * inserted, with its own checked reference to the connector, in
		 * this very transaction).  Triggers marked ENABLE ALWAYS (audit,
		 * append-only) still fire.
		 */
		{
			int			nest = NewGUCNestLevel();

			(void) set_config_option("session_replication_role", "replica",
									 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
									 true, 0, false);
			if (SPI_execute_with_args(insert_sql, 31, argtypes, args, nulls, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not insert bill lines");
			AtEOXact_GUC(true, nest);
		}
	}

	/* Exceptions for failures, after the lines exist. */
	for (i = 0; i < nlines; i++)
	{
		NormLine   *l = &lines[i];
		ListCell   *lc;
		bool		validation = false;
		bool		unlinked = false;
		int64		reseller = (map[i] && map[i]->mapped) ? map[i]->reseller_id : 0;

		if (!insert[i] || l->errors == NIL)
			continue;
		st->lines_invalid++;
		foreach(lc, l->errors)
		{
			char	   *e = lfirst(lc);

			if (strncmp(e, "unmapped_account:", 17) == 0)
			{
				char	   *scope = psprintf("account:%s:%s", l->map_account, period);
				bool		found;
				char		key[NAMEDATALEN * 2];

				if (st->unmapped_seen == NULL)
				{
					HASHCTL		c2;

					c2.keysize = sizeof(key);
					c2.entrysize = sizeof(key);
					c2.hcxt = st->runcxt;
					st->unmapped_seen = hash_create("settle unmapped", 64, &c2,
													HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
				}
				memset(key, 0, sizeof(key));
				strlcpy(key, scope, sizeof(key));
				hash_search(st->unmapped_seen, key, HASH_ENTER, &found);
				if (!found)
				{
					StringInfoData refs;

					initStringInfo(&refs);
					appendStringInfoString(&refs, "{\"account_id\": ");
					escape_json(&refs, l->map_account);
					appendStringInfo(&refs, ", \"ingest_run_id\": " INT64_FORMAT ", \"first_line_key\": ",
									 st->run_id);
					escape_json(&refs, l->line_key);
					appendStringInfoChar(&refs, '}');
					open_exception(st, 0, "unmapped_customer", scope, period, refs.data,
								   "{\"reason\": \"no settle.customer_account maps this account on the line date\"}");
				}
			}
			else if (strcmp(e, "unlinked_refund") == 0)
				unlinked = true;
			else
				validation = true;
		}
		if (validation)
			open_exception(st, reseller, "validation", psprintf("bill_line:%s", l->line_key),
						   period, json_refs(st, l, revision[i], raw_page_id), json_errors(l));
		if (unlinked)
			open_exception(st, reseller, "unlinked_refund", psprintf("bill_line:%s", l->line_key),
						   period, json_refs(st, l, revision[i], raw_page_id),
						   json_errors(l));
	}
}
