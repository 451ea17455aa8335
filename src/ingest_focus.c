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

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
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

static bool
valid_timestamp_text(const char *s)
{
	/* YYYY-MM-DD, optionally followed by [T ]HH:MM[:SS[.fff]][Z|+hh:mm] */
	const char *p;

	if (s == NULL || strlen(s) < 10)
		return false;
	{
		char		d[11];

		memcpy(d, s, 10);
		d[10] = '\0';
		if (!ingest_valid_date(d))
			return false;
	}
	p = s + 10;
	if (*p == '\0')
		return true;
	if (*p != 'T' && *p != ' ')
		return false;
	p++;
	if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1]) && p[2] == ':' &&
		  isdigit((unsigned char) p[3]) && isdigit((unsigned char) p[4])))
		return false;
	if ((p[0] - '0') * 10 + (p[1] - '0') > 23 || (p[3] - '0') * 10 + (p[4] - '0') > 59)
		return false;
	p += 5;
	if (*p == ':')
	{
		p++;
		if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1])) ||
			(p[0] - '0') * 10 + (p[1] - '0') > 60)
			return false;
		p += 2;
		if (*p == '.')
		{
			p++;
			while (isdigit((unsigned char) *p))
				p++;
		}
	}
	if (*p == 'Z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		p++;
		while (isdigit((unsigned char) *p) || *p == ':')
			p++;
	}
	return *p == '\0';
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
	CsvRow	   *rows;
	int			nrows;
	int			col[FC__COUNT];
	int			i;
	int64		raw_page_id;
	NormLine   *lines;
	HTAB	   *seen;
	HASHCTL		ctl;
	StringInfoData req;
	char	   *scope;

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

	/* split a copy: the raw page keeps the verbatim bytes */
	{
		char	   *copy = palloc(r.body_len + 1);

		memcpy(copy, r.body, r.body_len);
		copy[r.body_len] = '\0';
		if (pg_verifymbstr(copy, r.body_len, true) == false)
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("FOCUS file \"%s\" is not valid UTF-8", url)));
		nrows = csv_split(copy, r.body_len, &rows);
	}
	if (nrows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("FOCUS file \"%s\" is empty", url)));
	for (i = 0; i < FC__COUNT; i++)
	{
		int			k;

		col[i] = -1;
		for (k = 0; k < rows[0].nfields; k++)
			if (strcmp(ingest_trim(rows[0].f[k]), focus_names[i]) == 0)
				col[i] = k;
	}
	for (i = 0; i <= FC_BillingAccountId; i++)
		if (col[i] < 0 && i != FC_ContractedCost && i != FC_ChargeClass && i != FC_ChargePeriodEnd)
			ereport(ERROR,
					(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
					 errmsg("FOCUS file \"%s\" has no column \"%s\"", url, focus_names[i]),
					 errdetail("The first row must name the FOCUS columns (BilledCost, ListCost, ChargeCategory, ChargePeriodStart, BillingPeriodStart, BillingAccountId, ...).")));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 512;
	ctl.entrysize = 512 + sizeof(int);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("settle focus keys", 1024, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	lines = palloc0(sizeof(NormLine) * nrows);
	for (i = 1; i < nrows; i++)
	{
		CsvRow	   *row = &rows[i];
		NormLine   *l = &lines[i - 1];
		char	   *v[FC__COUNT];
		StringInfoData content;
		StringInfoData key;
		int			k;
		char	   *bps;
		bool		found;
		char		hkey[512];
		int		   *occ;

		for (k = 0; k < FC__COUNT; k++)
		{
			v[k] = (col[k] >= 0 && col[k] < row->nfields) ? ingest_trim(row->f[col[k]]) : NULL;
			if (v[k] && v[k][0] == '\0')
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
		l->product_code = v[FC_x_ProductCode] ? v[FC_x_ProductCode] : v[FC_ServiceName];
		l->region_id = v[FC_RegionId];
		l->resource_id = v[FC_ResourceId];
		l->source_record_id = v[FC_ResourceId];
		l->sku_id = v[FC_SkuId];
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

		bps = v[FC_BillingPeriodStart];
		if (bps == NULL || !valid_timestamp_text(bps))
		{
			ingest_line_error(l, bps ? "invalid:BillingPeriodStart" : "missing:BillingPeriodStart");
			bps = NULL;
		}
		if (v[FC_ChargePeriodStart] && valid_timestamp_text(v[FC_ChargePeriodStart]))
		{
			l->charge_period_start = v[FC_ChargePeriodStart];
			l->line_date = pnstrdup(v[FC_ChargePeriodStart], 10);
		}
		else
		{
			ingest_line_error(l, v[FC_ChargePeriodStart] ? "invalid:ChargePeriodStart" : "missing:ChargePeriodStart");
			l->charge_period_start = bps ? bps : "1970-01-01";
			l->line_date = pnstrdup(l->charge_period_start, 10);
		}
		if (v[FC_ChargePeriodEnd] && valid_timestamp_text(v[FC_ChargePeriodEnd]))
			l->charge_period_end = v[FC_ChargePeriodEnd];
		else
		{
			if (v[FC_ChargePeriodEnd])
				ingest_line_error(l, "invalid:ChargePeriodEnd");
			l->charge_period_end = l->charge_period_start;
		}
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
	}

	/* lines are grouped by billing period: ingest_store_lines takes one */
	{
		int			start = 0;

		while (start < nrows - 1)
		{
			NormLine   *l0 = &lines[start];
			char	   *bp;
			int			end = start + 1;
			char		period[8];

			bp = (col[FC_BillingPeriodStart] >= 0 && col[FC_BillingPeriodStart] < rows[start + 1].nfields &&
				  valid_timestamp_text(ingest_trim(rows[start + 1].f[col[FC_BillingPeriodStart]])))
				? pnstrdup(ingest_trim(rows[start + 1].f[col[FC_BillingPeriodStart]]), 10)
				: pnstrdup(l0->line_date, 10);
			while (end < nrows - 1)
			{
				char	   *bp2 = (col[FC_BillingPeriodStart] >= 0 && col[FC_BillingPeriodStart] < rows[end + 1].nfields)
				? ingest_trim(rows[end + 1].f[col[FC_BillingPeriodStart]]) : "";

				if (strncmp(bp2, bp, 10) != 0)
					break;
				end++;
			}
			memcpy(period, bp, 7);
			period[7] = '\0';
			ingest_store_lines(st, raw_page_id, bp, period, &lines[start], end - start);
			start = end;
		}
	}

	scope = psprintf("focus_csv:%s", c->endpoint);
	ingest_checkpoint_save(st, scope, NULL, 1, 0);
	ingest_run_update_counts(st);

	ingest_page_end(rc, &tx);
}
