/*
 * ingest_focus.c — the focus_csv connector: a FinOps FOCUS CSV file, read
 * from a path, a file:// or an https:// URL.
 *
 * The file is one page: stored with its raw copy, or not at all.  The first
 * row names the columns (any order, extra columns ignored); each row is one
 * line, keyed by its account, charge period, resource, SKU, category and
 * class, rows sharing a key in one file being told apart by their order.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "acs3.h"
#include "ingest.h"
#include "ingest_lines.h"

typedef struct CsvRow
{
	int			nfields;
	char	  **f;
} CsvRow;

/*
 * Splits RFC 4180 CSV text in place into rows of fields ("" escapes quotes,
 * quoted fields may hold commas and line breaks; CRLF or LF).  Returns the
 * number of rows; a quote left open raises 22P04.
 */
static int
csv_split(char *buf, size_t len, CsvRow **rows_out)
{
	int			maxrows = 1024;
	int			nrows = 0;
	CsvRow	   *rows = palloc(sizeof(CsvRow) * maxrows);
	char	   *p = buf;
	char	   *end = buf + len;

	/* a UTF-8 byte order mark is not part of the first column name */
	if (len >= 3 && (unsigned char) p[0] == 0xEF && (unsigned char) p[1] == 0xBB && (unsigned char) p[2] == 0xBF)
		p += 3;
	while (p < end)
	{
		int			maxf = 32;
		CsvRow	   *r;

		if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))
		{
			p += (*p == '\r') ? 2 : 1;	/* blank line */
			continue;
		}
		if (nrows >= maxrows)
		{
			maxrows *= 2;
			rows = repalloc(rows, sizeof(CsvRow) * maxrows);
		}
		r = &rows[nrows++];
		r->nfields = 0;
		r->f = palloc(sizeof(char *) * maxf);
		for (;;)
		{
			char	   *out = p;
			char	   *start = p;

			if (r->nfields >= maxf)
			{
				maxf *= 2;
				r->f = repalloc(r->f, sizeof(char *) * maxf);
			}
			if (p < end && *p == '"')
			{
				p++;
				for (;;)
				{
					if (p >= end)
						ereport(ERROR,
								(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
								 errmsg("unterminated quoted field in CSV row %d", nrows)));
					if (*p == '"')
					{
						if (p + 1 < end && p[1] == '"')
						{
							*out++ = '"';
							p += 2;
							continue;
						}
						p++;
						break;
					}
					*out++ = *p++;
				}
				while (p < end && *p != ',' && *p != '\n' && *p != '\r')
					p++;		/* junk after the closing quote is ignored */
			}
			else
			{
				while (p < end && *p != ',' && *p != '\n' && *p != '\r')
					p++;
				out = p;
			}
			r->f[r->nfields++] = start;
			if (p >= end)
			{
				*out = '\0';	/* buffer has a spare byte at the end */
				break;
			}
			if (*p == ',')
			{
				*out = '\0';
				p++;
				continue;
			}
			/* end of line */
			if (*p == '\r' && p + 1 < end && p[1] == '\n')
			{
				*out = '\0';
				p += 2;
			}
			else
			{
				*out = '\0';
				p++;
			}
			break;
		}
	}
	*rows_out = rows;
	return nrows;
}

/*
 * A FOCUS date/time as settle stores it, or NULL when it is not one.  FOCUS
 * writes ISO 8601 in UTC: YYYY-MM-DDTHH:mm:ssZ; exports also write a space
 * for the T, leave out the seconds or the Z, or give a date alone.  A value
 * without a zone is UTC (as FOCUS specifies), never the server's TimeZone;
 * a date alone is its midnight.  Anything else is refused.
 */
static char *
focus_timestamp(const char *s)
{
	const char *p;
	char		d[11];

	if (s == NULL || strlen(s) < 10)
		return NULL;
	memcpy(d, s, 10);
	d[10] = '\0';
	if (!ingest_valid_date(d))
		return NULL;
	p = s + 10;
	if (*p == '\0')
		return psprintf("%sT00:00:00Z", d);
	if (*p != 'T' && *p != ' ')
		return NULL;
	p++;
	if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1]) && p[2] == ':' &&
		  isdigit((unsigned char) p[3]) && isdigit((unsigned char) p[4])))
		return NULL;
	if ((p[0] - '0') * 10 + (p[1] - '0') > 23 || (p[3] - '0') * 10 + (p[4] - '0') > 59)
		return NULL;
	p += 5;
	if (*p == ':')
	{
		p++;
		if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1])) ||
			(p[0] - '0') * 10 + (p[1] - '0') > 60)
			return NULL;
		p += 2;
		if (*p == '.')
		{
			p++;
			if (!isdigit((unsigned char) *p))
				return NULL;
			while (isdigit((unsigned char) *p))
				p++;
		}
	}
	if (*p == '\0')
		return psprintf("%sZ", s);
	if (*p == 'Z' && p[1] == '\0')
		return pstrdup(s);
	if (*p == '+' || *p == '-')
	{
		/* +HH, +HHMM or +HH:MM */
		p++;
		if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1])))
			return NULL;
		p += 2;
		if (*p == ':')
			p++;
		if (*p != '\0' && !(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1]) && p[2] == '\0'))
			return NULL;
		return pstrdup(s);
	}
	return NULL;
}

static bool
valid_json_text(const char *s)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen((char *) s, strlen(s), PG_UTF8, false);
	JsonSemAction sem;

	char	   *t = ingest_trim(pstrdup(s));

	memset(&sem, 0, sizeof(sem));
	return t[0] == '{' && pg_parse_json(lex, &sem) == JSON_SUCCESS;
}

enum
{
	FC_BilledCost, FC_ListCost, FC_ContractedCost, FC_ChargeCategory, FC_ChargeClass,
	FC_ChargePeriodStart, FC_ChargePeriodEnd, FC_BillingPeriodStart, FC_BillingAccountId,
	FC_SubAccountId, FC_ServiceName, FC_ServiceCategory, FC_RegionId, FC_ResourceId, FC_SkuId,
	FC_BillingCurrency, FC_Tags, FC_x_ProductCode, FC__COUNT
};

static const char *const focus_names[FC__COUNT] = {
	"BilledCost", "ListCost", "ContractedCost", "ChargeCategory", "ChargeClass",
	"ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingAccountId",
	"SubAccountId", "ServiceName", "ServiceCategory", "RegionId", "ResourceId", "SkuId",
	"BillingCurrency", "Tags", "x_ProductCode"
};

/*
 * The columns settle needs, mandatory in FOCUS 1.0, 1.1 and 1.2 alike (a
 * product also needs ServiceName or x_ProductCode).  Every other column of
 * any version (1.2's InvoiceId, BillingAccountType, SubAccountType,
 * PricingCurrency..., providers' x_ columns) is read past.
 */
static const int focus_required[] = {
	FC_BilledCost, FC_ListCost, FC_ChargeCategory, FC_ChargePeriodStart, FC_BillingPeriodStart,
	FC_BillingAccountId, FC_BillingCurrency
};

/*
 * Reads a FOCUS connector's null_tokens config key: the field values that
 * mean null besides the empty field (default ["NULL"], as database exports
 * such as the FinOps Foundation's sample write it).
 */
List *
focus_null_tokens(int64 connector_id, MemoryContext cxt)
{
	Oid			t[1] = {INT8OID};
	Datum		v[1];
	List	   *tokens = NIL;
	uint64		i;
	MemoryContext old;

	v[0] = Int64GetDatum(connector_id);
	if (SPI_execute_with_args("SELECT e FROM settle.connector c,"
							  " pg_catalog.jsonb_array_elements_text(coalesce(c.config->'null_tokens', '[\"NULL\"]')) e"
							  " WHERE c.connector_id = $1",
							  1, t, v, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.connector");
	old = MemoryContextSwitchTo(cxt);
	for (i = 0; i < SPI_processed; i++)
		tokens = lappend(tokens, pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
	MemoryContextSwitchTo(old);
	return tokens;
}

void
focus_csv_configure(Connector *c, MemoryContext cxt)
{
	c->opts = focus_null_tokens(c->id, cxt);
}

static bool
null_token(List *tokens, const char *v)
{
	ListCell   *lc;

	foreach(lc, tokens)
		if (strcmp((char *) lfirst(lc), v) == 0)
			return true;
	return false;
}

/*
 * A complete re-import of a source: every stored line of the billing period
 * whose latest revision came from this source (its raw page's url) and
 * that the file no longer holds is withdrawn (settle.withdraw_lines, as the
 * BSS connector withdraws what a complete pull no longer returns).
 */
static void
withdraw_missing(IngestState *st, const char *source, const char *period_start,
				 HTAB *keys, int64 raw_page_id)
{
	Oid			t[3] = {INT8OID, DATEOID, TEXTOID};
	Datum		v[3];
	Datum	   *gone;
	int			ngone = 0;
	uint64		i;

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = DirectFunctionCall1(date_in, CStringGetDatum(period_start));
	v[2] = CStringGetTextDatum(source);
	if (SPI_execute_with_args("SELECT b.line_key FROM (SELECT DISTINCT ON (l.line_key) l.line_key, l.raw_page_id,"
							  " l.withdrawal_reason FROM settle.bill_line l"
							  " WHERE l.connector_id = $1 AND l.billing_period_start = $2"
							  " ORDER BY l.line_key, l.revision DESC) b"
							  " JOIN settle.raw_page p ON p.raw_page_id = b.raw_page_id"
							  " WHERE b.withdrawal_reason IS NULL AND p.request->>'url' = $3",
							  3, t, v, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the source's lines");
	gone = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (hash_search(keys, key, HASH_FIND, NULL) == NULL)
			gone[ngone++] = CStringGetTextDatum(key);
	}
	if (ngone > 0)
	{
		Oid			t2[5] = {INT8OID, TEXTARRAYOID, TEXTOID, INT8OID, INT8OID};
		Datum		v2[5];
		bool		isnull;

		v2[0] = Int64GetDatum(st->connector_id);
		v2[1] = PointerGetDatum(construct_array(gone, ngone, TEXTOID, -1, false, TYPALIGN_INT));
		v2[2] = CStringGetTextDatum(psprintf("not in a complete re-import of %s", source));
		v2[3] = Int64GetDatum(st->run_id);
		v2[4] = Int64GetDatum(raw_page_id);
		if (SPI_execute_with_args("SELECT settle.withdraw_lines($1, $2, $3, $4, $5)", 5, t2, v2, NULL,
								  false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not withdraw lines");
		st->lines_withdrawn += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
														   1, &isnull));
	}
}

/*
 * Normalizes and stores one FOCUS file (its raw page already written):
 * lines grouped by billing period, each period then withdrawing what the
 * source no longer holds.  Raises for a file that is not FOCUS CSV (not
 * UTF-8: 22021, unbalanced quotes: 22P04, a required column missing:
 * 42703 naming it); a bad row fails only itself, its field named.
 */
void
focus_load(IngestState *st, List *null_tokens, const char *source,
		   const char *body, size_t len, int64 raw_page_id)
{
	CsvRow	   *rows;
	int			nrows;
	int			col[FC__COUNT];
	int			i;
	NormLine   *lines;
	char	  **period_of;
	List	   *periods = NIL;
	ListCell   *lc;
	HTAB	   *seen;
	HASHCTL		ctl;

	/* split a copy: the raw page keeps the verbatim bytes */
	{
		char	   *copy = palloc(len + 1);

		memcpy(copy, body, len);
		copy[len] = '\0';
		if (pg_verifymbstr(copy, len, true) == false)
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("FOCUS file \"%s\" is not valid UTF-8", source)));
		nrows = csv_split(copy, len, &rows);
	}
	if (nrows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("FOCUS file \"%s\" is empty", source)));
	for (i = 0; i < FC__COUNT; i++)
	{
		int			k;

		col[i] = -1;
		for (k = 0; k < rows[0].nfields; k++)
			if (strcmp(ingest_trim(rows[0].f[k]), focus_names[i]) == 0)
				col[i] = k;
	}
	for (i = 0; i < lengthof(focus_required); i++)
		if (col[focus_required[i]] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("FOCUS file \"%s\" has no column \"%s\"", source, focus_names[focus_required[i]]),
					 errdetail("FOCUS 1.0, 1.1 and 1.2 require it; settle reads BilledCost, ListCost, ChargeCategory, ChargePeriodStart, BillingPeriodStart, BillingAccountId, BillingCurrency and ServiceName or x_ProductCode from the first row's column names.")));
	if (col[FC_ServiceName] < 0 && col[FC_x_ProductCode] < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("FOCUS file \"%s\" has no column \"ServiceName\"", source),
				 errdetail("A line's product is its x_ProductCode, else the product settle.product_mapping gives its SkuId or ServiceName.")));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 512;
	ctl.entrysize = 512 + sizeof(int);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("settle focus keys", 1024, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	lines = palloc0(sizeof(NormLine) * nrows);
	period_of = palloc0(sizeof(char *) * nrows);
	for (i = 1; i < nrows; i++)
	{
		CsvRow	   *row = &rows[i];
		NormLine   *l = &lines[i - 1];
		char	   *v[FC__COUNT];
		StringInfoData content;
		StringInfoData key;
		int			k;
		char	   *bps;
		char	   *ts;
		bool		has_cps_error;
		bool		found;
		char		hkey[512];
		int		   *occ;

		for (k = 0; k < FC__COUNT; k++)
		{
			v[k] = (col[k] >= 0 && col[k] < row->nfields) ? ingest_trim(row->f[col[k]]) : NULL;
			if (v[k] && (v[k][0] == '\0' || null_token(null_tokens, v[k])))
				v[k] = NULL;
		}
		initStringInfo(&content);
		for (k = 0; k < row->nfields; k++)
		{
			appendStringInfoString(&content, row->f[k]);
			appendStringInfoChar(&content, '\x1f');
		}
		acs3_sha256(content.data, content.len, l->hash);

		if (row->nfields != rows[0].nfields)
			ingest_line_error(l, "column_count:%d", row->nfields);
		l->billing_account_id = v[FC_BillingAccountId];
		l->sub_account_id = v[FC_SubAccountId];
		l->map_account = v[FC_SubAccountId] ? v[FC_SubAccountId] : v[FC_BillingAccountId];
		l->service_name = v[FC_ServiceName];
		l->sku_id = v[FC_SkuId];
		if (v[FC_x_ProductCode])
			l->product_code = v[FC_x_ProductCode];
		else
		{
			/* known by name: settle.product_mapping decides (ingest_lines.c) */
			l->product_code = v[FC_ServiceName] ? v[FC_ServiceName] : v[FC_SkuId];
			l->product_by_name = true;
		}
		l->region_id = v[FC_RegionId];
		l->resource_id = v[FC_ResourceId];
		l->source_record_id = v[FC_ResourceId];
		l->currency = v[FC_BillingCurrency];
		l->source_item = v[FC_ChargeCategory];
		if (l->billing_account_id == NULL)
			ingest_line_error(l, "missing:BillingAccountId");
		if (l->currency == NULL)
			ingest_line_error(l, "missing:BillingCurrency");
		if (l->product_code == NULL)
			ingest_line_error(l, "missing:ServiceName");
		if (v[FC_ChargeCategory] == NULL)
			ingest_line_error(l, "missing:ChargeCategory");
		else if (strcmp(v[FC_ChargeCategory], "Usage") == 0 || strcmp(v[FC_ChargeCategory], "Purchase") == 0 ||
				 strcmp(v[FC_ChargeCategory], "Tax") == 0 || strcmp(v[FC_ChargeCategory], "Credit") == 0 ||
				 strcmp(v[FC_ChargeCategory], "Adjustment") == 0)
			l->charge_category = v[FC_ChargeCategory];
		else
			ingest_line_error(l, "unknown_charge_category:%s", v[FC_ChargeCategory]);
		if (v[FC_ChargeClass] && strcmp(v[FC_ChargeClass], "Correction") == 0)
			l->charge_class = "Correction";
		else if (v[FC_ChargeClass])
			ingest_line_error(l, "unknown_charge_class:%s", v[FC_ChargeClass]);

		bps = v[FC_BillingPeriodStart] ? focus_timestamp(v[FC_BillingPeriodStart]) : NULL;
		if (bps == NULL)
			ingest_line_error(l, v[FC_BillingPeriodStart] ? "invalid:BillingPeriodStart" : "missing:BillingPeriodStart");
		ts = v[FC_ChargePeriodStart] ? focus_timestamp(v[FC_ChargePeriodStart]) : NULL;
		has_cps_error = (ts == NULL);
		if (ts)
			l->charge_period_start = ts;
		else
		{
			ingest_line_error(l, v[FC_ChargePeriodStart] ? "invalid:ChargePeriodStart" : "missing:ChargePeriodStart");
			l->charge_period_start = bps ? bps : "1970-01-01T00:00:00Z";
		}
		l->line_date = pnstrdup(l->charge_period_start, 10);
		ts = v[FC_ChargePeriodEnd] ? focus_timestamp(v[FC_ChargePeriodEnd]) : NULL;
		if (ts)
			l->charge_period_end = ts;
		else
		{
			if (v[FC_ChargePeriodEnd])
				ingest_line_error(l, "invalid:ChargePeriodEnd");
			l->charge_period_end = l->charge_period_start;
		}

		/*
		 * The billing period the line is stored under: its own, except that
		 * a Correction (FOCUS: a charge correcting an earlier billing period,
		 * whose charge period lies in it) belongs to the period it corrects.
		 */
		if (l->charge_class && !has_cps_error)
			period_of[i - 1] = psprintf("%.7s-01", l->charge_period_start);
		else
			period_of[i - 1] = bps ? pnstrdup(bps, 10) : psprintf("%.7s-01", l->line_date);

		l->amt_null[AMT_LIST] = !ingest_parse_amount(l, "ListCost", v[FC_ListCost], false, true, &l->amt[AMT_LIST]);
		l->amt_null[AMT_BILLED] = !ingest_parse_amount(l, "BilledCost", v[FC_BilledCost], false, true, &l->amt[AMT_BILLED]);
		l->amt_null[AMT_DISCOUNT] = true;
		l->amt_null[AMT_COUPON] = true;
		l->amt_null[AMT_PAID] = true;
		if (v[FC_Tags])
		{
			if (valid_json_text(v[FC_Tags]))
				l->tags_json = v[FC_Tags];
			else
				ingest_line_error(l, "invalid:Tags");
		}

		initStringInfo(&key);
		appendStringInfo(&key, "focus:%s/%s/%s/%s/%s/%s/%s",
						 v[FC_BillingAccountId] ? v[FC_BillingAccountId] : "",
						 v[FC_SubAccountId] ? v[FC_SubAccountId] : "",
						 v[FC_ChargePeriodStart] ? v[FC_ChargePeriodStart] : "",
						 v[FC_ResourceId] ? v[FC_ResourceId] : "",
						 v[FC_SkuId] ? v[FC_SkuId] : "",
						 v[FC_ChargeCategory] ? v[FC_ChargeCategory] : "",
						 v[FC_ChargeClass] ? v[FC_ChargeClass] : "");
		/* rows sharing a key in one file are told apart by their order */
		memset(hkey, 0, sizeof(hkey));
		strlcpy(hkey, key.data, sizeof(hkey));
		occ = (int *) ((char *) hash_search(seen, hkey, HASH_ENTER, &found) + 512);
		if (!found)
			*occ = 0;
		(*occ)++;
		appendStringInfo(&key, "#%d", *occ);
		l->line_key = key.data;

		foreach(lc, periods)
			if (strcmp((char *) lfirst(lc), period_of[i - 1]) == 0)
				break;
		if (lc == NULL)
			periods = lappend(periods, period_of[i - 1]);
	}

	/*
	 * ingest_store_lines takes one billing period at a time, each followed
	 * by its withdrawals: writes in several steps, so every bill line writer
	 * waits (the writers' lock exclusively, before the first).
	 */
	if (periods != NIL)
		ingest_lock_lines(NULL, 0, true);
	foreach(lc, periods)
	{
		char	   *bp = lfirst(lc);
		NormLine   *group = palloc(sizeof(NormLine) * nrows);
		int			n = 0;
		char		period[8];
		HTAB	   *keys;
		int			k;

		for (k = 0; k < nrows - 1; k++)
			if (strcmp(period_of[k], bp) == 0)
				group[n++] = lines[k];
		memcpy(period, bp, 7);
		period[7] = '\0';
		ingest_store_lines(st, raw_page_id, bp, period, group, n);

		/* the keys as stored (long ones became their hash) */
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = 512;
		ctl.entrysize = 512;
		ctl.hcxt = CurrentMemoryContext;
		keys = hash_create("settle focus stored keys", n + 1, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		for (k = 0; k < n; k++)
		{
			char		hk[512];

			memset(hk, 0, sizeof(hk));
			strlcpy(hk, group[k].line_key, sizeof(hk));
			hash_search(keys, hk, HASH_ENTER, NULL);
		}
		withdraw_missing(st, source, bp, keys, raw_page_id);
	}
}

/* Pulls the file: one page, stored whole or not at all. */
void
focus_csv_pull(RunCtx *rc)
{
	IngestState *st = rc->st;
	Connector  *c = rc->c;
	PageTx		tx;
	char	   *url = c->endpoint;
	HttpResult	r;
	TimestampTz requested_at;
	int64		raw_page_id;
	StringInfoData req;

	ingest_page_begin(rc, &tx);

	if (url[0] == '/')
		url = psprintf("file://%s", url);
	if (rc->worker)
		pgstat_report_activity(STATE_RUNNING, psprintf("settle ingest: %s focus_csv", c->name));
	requested_at = GetCurrentTimestamp();
	http_get(rc->client, url, NULL, 0, false, &r);
	st->requests++;
	memset(&ingest_failure, 0, sizeof(ingest_failure));
	ingest_failure.http_status = r.status;
	if (r.curl_code != 0)
		http_raise(url, &r);
	if (r.status != 0 && (r.status < 200 || r.status >= 300))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("FOCUS file \"%s\" could not be fetched: HTTP %ld", url, r.status)));

	initStringInfo(&req);
	appendStringInfoString(&req, "{\"action\": \"focus_csv\", \"url\": ");
	escape_json(&req, url);
	appendStringInfoString(&req, "}");
	raw_page_id = ingest_insert_raw_page(st, req.data, r.status ? r.status : 200,
										 r.body, r.body_len, requested_at);
	st->pages++;

	focus_load(st, (List *) c->opts, url, r.body, r.body_len, raw_page_id);

	ingest_checkpoint_save(st, psprintf("focus_csv:%s", c->endpoint), NULL, 1, 0);
	ingest_run_update_counts(st);

	ingest_page_end(rc, &tx);
}
