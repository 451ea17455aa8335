/*
 * ingest_bss.c — the alibaba_bss connector: Alibaba Cloud BSS OpenAPI
 * (version 2017-12-14), ACS3-signed.
 *
 * One account's pull is two scopes: QueryBillOverview (the provider's
 * totals for the month, kept in settle.provider_total for reconciliation)
 * and DescribeInstanceBill (the bill lines), each paged with NextToken and
 * checkpointed page by page.  A member account is pulled with BillOwnerId.
 * Every call is retried on transient failures (transport, 5xx, 429,
 * Throttling*) with exponential backoff and jitter; a reply with bytes that
 * are not UTF-8 is repaired so that only the values holding them are
 * flagged.  A whole pass over a month's lines (from its first page) ends by
 * withdrawing the stored lines it no longer returned.
 *
 * Granularity DAILY pulls one day (BillingDate): the configured billing_date
 * or, without it, every day of the billing cycle up to today in UTC+8 (the
 * fan-out, settle.connector_days), each day of each account a run and a
 * stream of its own: its own scope (the day is in it), checkpoint, pass and
 * withdrawals.  A line of a day is only ever returned by that day's query
 * and the day is in its natural key, so the days' streams never write each
 * other's lines.  The month's provider totals (QueryBillOverview) are pulled
 * once per account, by the run of the fan-out's last day.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "acs3.h"
#include "ingest.h"
#include "ingest_json.h"
#include "ingest_lines.h"

#define BSS_API_VERSION "2017-12-14"

/* The connector's config keys. */
typedef struct BssOptions
{
	char	   *granularity;	/* MONTHLY or DAILY */
	char	   *billing_date;	/* DAILY: the day pulled */
	int			max_results;	/* items per page */
	bool		overview;		/* pull QueryBillOverview too */
} BssOptions;

/* ---------------------------------------------------------------------
 * Requests
 * --------------------------------------------------------------------- */

static bool
is_throttling(const char *code)
{
	return code && strncmp(code, "Throttling", 10) == 0;
}

/* host[:port] of an URL, and the URL without query. */
static char *
url_authority(const char *url)
{
	const char *p = strstr(url, "://");
	const char *end;

	p = p ? p + 3 : url;
	end = p + strcspn(p, "/?#");
	return pnstrdup(p, end - p);
}

static void
build_query(StringInfo qs, Acs3Pair *q, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		appendStringInfo(qs, "%s%s=", i ? "&" : "", acs3_pct_encode(q[i].name));
		appendStringInfoString(qs, acs3_pct_encode(q[i].value));
	}
}

/*
 * A copy of a reply with every byte that is not part of valid UTF-8 replaced
 * by U+FFFD, so that one bad byte inside a string value spoils only that
 * value (its line is flagged) and not the page.  *nbad counts replacements.
 */
static char *
repair_utf8(const char *s, size_t len, size_t *outlen, int *nbad)
{
	StringInfoData b;
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	*nbad = 0;
	initStringInfo(&b);
	enlargeStringInfo(&b, (int) len + 16);
	while (p < end)
	{
		int			l;

		if (*p != 0 && *p < 0x80)
		{
			appendStringInfoChar(&b, (char) *p++);
			continue;
		}
		l = pg_utf_mblen(p);
		if (*p != 0 && p + l <= end && pg_utf8_islegal(p, l))
		{
			appendBinaryStringInfo(&b, (const char *) p, l);
			p += l;
			continue;
		}
		appendStringInfoString(&b, "\xEF\xBF\xBD");
		(*nbad)++;
		p++;
	}
	*outlen = b.len;
	return b.data;
}

/*
 * Sends one BSS call with retries and returns its successful reply, parsed.
 * Transient failures (transport, 5xx, 429, Throttling*) are retried with
 * exponential backoff and jitter; anything else raises at once with the
 * provider's error kept in `ingest_failure`.  requested_at is set to the time of
 * the successful attempt.
 */
static HttpResult *
bss_call(IngestState *st, HttpClient *client, Connector *c, Credentials *cred,
		 const char *action, Acs3Pair *query, int nquery, BssReply *reply,
		 TimestampTz *requested_at)
{
	char	   *host = url_authority(c->endpoint);
	StringInfoData url;
	int			attempt;
	HttpResult *r = palloc0(sizeof(HttpResult));

	initStringInfo(&url);
	appendStringInfoString(&url, c->endpoint);
	if (url.data[url.len - 1] != '/')
		appendStringInfoChar(&url, '/');
	appendStringInfoChar(&url, '?');
	build_query(&url, query, nquery);

	for (attempt = 1;; attempt++)
	{
		Acs3Pair	h[5];
		char		nonce[33];
		char	   *auth;
		const char *hdrs[8];
		char		body_hash[65];
		char	   *errdetail_txt;
		bool		retry = false;
		int			i;
		pg_time_t	now;
		struct pg_tm *tm;
		char		datebuf[32];

		ingest_rate_wait(cred->access_key_id);
		now = (pg_time_t) time(NULL);
		tm = pg_gmtime(&now);
		pg_strftime(datebuf, sizeof(datebuf), "%Y-%m-%dT%H:%M:%SZ", tm);
		for (i = 0; i < 32; i++)
			nonce[i] = "0123456789abcdef"[pg_prng_uint32(&pg_global_prng_state) & 15];
		nonce[32] = '\0';
		/* the signed headers, sent as they were signed */
		h[0].name = "x-acs-action";
		h[0].value = (char *) action;
		h[1].name = "x-acs-version";
		h[1].value = BSS_API_VERSION;
		h[2].name = "x-acs-date";
		h[2].value = datebuf;
		h[3].name = "x-acs-signature-nonce";
		h[3].value = nonce;
		auth = acs3_sign("POST", host, query, nquery, h, 4, "", 0,
						 cred->access_key_id, cred->access_key_secret);
		acs3_sha256_hex("", 0, body_hash);
		for (i = 0; i < 4; i++)
			hdrs[i] = psprintf("%s: %s", h[i].name, h[i].value);
		hdrs[4] = psprintf("x-acs-content-sha256: %s", body_hash);
		hdrs[5] = psprintf("Authorization: %s", auth);
		hdrs[6] = "Accept: application/json";
		hdrs[7] = "Content-Type:";

		*requested_at = GetCurrentTimestamp();
		http_get(client, url.data, hdrs, 8, true, r);
		st->requests++;
		pfree((char *) hdrs[5]);
		pfree(auth);

		memset(&ingest_failure, 0, sizeof(ingest_failure));
		ingest_failure.http_status = r->status;

		if (r->curl_code != 0)
		{
			if (http_retryable(r) && attempt < settle_ingest_max_attempts)
				retry = true;
			else
				http_raise(c->endpoint, r);
		}
		else
		{
			int			nbad = 0;

			if (pg_verify_mbstr(PG_UTF8, r->body, (int) r->body_len, true))
				errdetail_txt = bss_parse_reply(r->body, r->body_len, reply);
			else
			{
				size_t		len;
				char	   *fixed = repair_utf8(r->body, r->body_len, &len, &nbad);

				errdetail_txt = bss_parse_reply(fixed, len, reply);
			}
			reply->repaired = (nbad > 0);
			if (r->status >= 200 && r->status < 300 &&
				(reply->code == NULL || strcmp(reply->code, "Success") == 0 ||
				 strcmp(reply->code, "200") == 0))
			{
				/* not a bill page (a proxy's page, a cut-off reply): retried, then fails */
				bool		not_json = (r->content_type == NULL || strstr(r->content_type, "json") == NULL);

				if ((not_json || errdetail_txt) && attempt < settle_ingest_max_attempts)
				{
					retry = true;
					goto backoff;
				}
				if (not_json)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_EXCEPTION),
							 errmsg("%s reply from \"%s\" is not JSON", action, c->endpoint),
							 errdetail("Content-Type was \"%s\".", r->content_type ? r->content_type : ""),
							 attempt > 1 ? errhint("Gave up after %d attempts.", attempt) : 0));
				if (errdetail_txt)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("malformed JSON in %s reply from \"%s\"", action, c->endpoint),
							 errdetail("%s%s", errdetail_txt,
									   nbad ? psprintf(" (after replacing %d bytes that are not UTF-8)", nbad) : ""),
							 attempt > 1 ? errhint("Gave up after %d attempts.", attempt) : 0));
				if (!reply->has_data)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_EXCEPTION),
							 errmsg("%s reply from \"%s\" has no Data", action, c->endpoint)));
				return r;
			}
			/* an error reply */
			ingest_failure.code = reply->code ? MemoryContextStrdup(st->runcxt, reply->code) : NULL;
			ingest_failure.message = reply->message ? MemoryContextStrdup(st->runcxt, reply->message) : NULL;
			ingest_failure.request_id = reply->request_id ? MemoryContextStrdup(st->runcxt, reply->request_id) : NULL;
			if ((r->status >= 500 || r->status == 429 || is_throttling(reply->code)) &&
				attempt < settle_ingest_max_attempts)
				retry = true;
			else
			{
				int			sqlstate;
				const char *code = reply->code ? reply->code : "";

				if (strncmp(code, "Signature", 9) == 0 || strncmp(code, "InvalidAccessKeyId", 18) == 0 ||
					strncmp(code, "NotAuthorized", 13) == 0 || strncmp(code, "Forbidden", 9) == 0 ||
					strcmp(code, "NoPermission") == 0 || strncmp(code, "IncompleteSignature", 19) == 0 ||
					strncmp(code, "InvalidTimeStamp", 16) == 0 || r->status == 401 || r->status == 403)
					sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
				else if (strncmp(code, "InvalidParameter", 16) == 0 ||
						 strncmp(code, "MissingParameter", 16) == 0 ||
						 strncmp(code, "InvalidAction", 13) == 0)
					sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
				else if (r->status >= 500 || r->status == 429 || is_throttling(code))
					sqlstate = ERRCODE_CANNOT_CONNECT_NOW;
				else
					sqlstate = ERRCODE_CONNECTION_EXCEPTION;
				ereport(ERROR,
						(errcode(sqlstate),
						 errmsg("%s failed at \"%s\": HTTP %ld %s", action, c->endpoint,
								r->status, code),
						 errdetail("Provider message: %s  RequestId: %s.",
								   ingest_failure.message ? ingest_failure.message : "(none)",
								   ingest_failure.request_id ? ingest_failure.request_id : "(none)"),
						 attempt > 1 ? errhint("Gave up after %d attempts.", attempt) : 0));
			}
		}
backoff:
		if (retry)
		{
			double		delay = (double) settle_ingest_retry_base_ms * (1 << Min(attempt - 1, 10));

			delay = Min(delay, 30000.0);
			delay = delay / 2 + pg_prng_double(&pg_global_prng_state) * delay / 2;
			st->retries++;
			ingest_sleep_ms((long) delay);
			continue;
		}
	}
}

/* request parameters as stored with the raw page: never credentials */
static char *
request_json(Connector *c, const char *scope, const char *action, Acs3Pair *q, int n)
{
	StringInfoData b;
	int			i;

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"action\": ");
	escape_json(&b, action);
	appendStringInfoString(&b, ", \"scope\": ");
	escape_json(&b, scope);
	appendStringInfoString(&b, ", \"endpoint\": ");
	escape_json(&b, c->endpoint);
	appendStringInfoString(&b, ", \"version\": \"" BSS_API_VERSION "\", \"params\": {");
	for (i = 0; i < n; i++)
	{
		if (i)
			appendStringInfoString(&b, ", ");
		escape_json(&b, q[i].name);
		appendStringInfoString(&b, ": ");
		escape_json(&b, q[i].value);
	}
	appendStringInfoString(&b, "}}");
	return b.data;
}

/* ---------------------------------------------------------------------
 * alibaba_bss: normalizing one DescribeInstanceBill item
 * --------------------------------------------------------------------- */

/* A field's trimmed text, NULL when absent or blank (items are trimmed once). */
static inline char *
fld(BssItem *it, BssField f)
{
	return it->f[f];
}

static void
trim_item(BssItem *it)
{
	int			f;

	for (f = 0; f < BF__COUNT; f++)
	{
		char	   *s = it->f[f];

		if (s == NULL)
			continue;
		s = ingest_trim(s);
		it->f[f] = s[0] ? s : NULL;
	}
}

/* "key:k value:v; key:k2 value:v2" as a JSON object. */
static char *
tags_to_json(const char *tag)
{
	StringInfoData b;
	char	   *copy;
	char	   *part;
	char	   *save = NULL;
	bool		first = true;

	if (tag == NULL)
		return NULL;
	initStringInfo(&b);
	appendStringInfoChar(&b, '{');
	copy = pstrdup(tag);
	for (part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save))
	{
		char	   *k = strstr(part, "key:");
		char	   *v = strstr(part, " value:");

		if (k == NULL || v == NULL || v < k)
			continue;
		*v = '\0';
		if (!first)
			appendStringInfoString(&b, ", ");
		escape_json(&b, ingest_trim(k + 4));
		appendStringInfoString(&b, ": ");
		escape_json(&b, ingest_trim(v + 7));
		first = false;
	}
	if (first)
	{
		appendStringInfoString(&b, "\"_raw\": ");
		escape_json(&b, tag);
	}
	appendStringInfoChar(&b, '}');
	return b.data;
}

/*
 * day: the day asked for (DAILY), NULL for a month.  A DAILY item is keyed
 * and dated by the day asked for: one without BillingDate takes it, one with
 * another day's is flagged (invalid:BillingDate), so no day's item can take
 * the key of another day's line.
 */
static void
bss_normalize(Connector *c, BssItem *it, NormLine *l, bool repaired, const char *day)
{
	StringInfoData content;
	StringInfoData key;
	int			f;
	char	   *item;
	char	   *acct;
	char	   *owner;
	char	   *date;
	char	   *billing_item;

	memset(l, 0, sizeof(NormLine));
	l->check_identity = true;
	trim_item(it);

	/* content hash over every field as the provider sent it (trimmed) */
	initStringInfo(&content);
	for (f = 0; f < BF__COUNT; f++)
	{
		char	   *v = fld(it, f);

		appendStringInfoString(&content, v ? v : "\x01");
		appendStringInfoChar(&content, '\x1f');
	}
	acs3_sha256(content.data, content.len, l->hash);

	/* bytes that were not UTF-8 (now U+FFFD) spoil the fields they were in */
	if (repaired)
		for (f = 0; f < BF__COUNT; f++)
			if (it->f[f] && it->isstr[f] && strstr(it->f[f], "\xEF\xBF\xBD"))
				ingest_line_error(l, "invalid_utf8:%s", bss_field_name(f));

	item = fld(it, BF_Item);
	acct = fld(it, BF_BillAccountID);
	owner = fld(it, BF_OwnerID);
	date = fld(it, BF_BillingDate);
	if (day && (date == NULL || strcmp(date, day) != 0))
	{
		if (date)
			ingest_line_error(l, "invalid:BillingDate");
		date = (char *) day;
	}
	billing_item = fld(it, BF_BillingItemCode);
	if (billing_item == NULL)
		billing_item = fld(it, BF_BillingItem);

	initStringInfo(&key);
	appendStringInfo(&key, "bss:%s/%s/%s/%s/%s/%s/%s/%s/",
					 acct ? acct : "", owner ? owner : "", c->cycle,
					 date ? date : "-", fld(it, BF_ProductCode) ? fld(it, BF_ProductCode) : "",
					 fld(it, BF_InstanceID) ? fld(it, BF_InstanceID) : "",
					 billing_item ? billing_item : "",
					 fld(it, BF_SubscriptionType) ? fld(it, BF_SubscriptionType) : "");
	if (item && strcmp(item, "Refund") == 0)
		l->original_line_key = psprintf("%sSubscriptionOrder", key.data);
	appendStringInfoString(&key, item ? item : "");
	l->line_key = key.data;

	l->source_item = item;
	l->source_record_id = fld(it, BF_InstanceID);
	l->billing_account_id = acct;
	l->sub_account_id = owner;
	l->map_account = owner ? owner : acct;
	l->product_code = fld(it, BF_ProductCode);
	l->service_name = fld(it, BF_ProductName);
	l->sku_id = billing_item ? billing_item : fld(it, BF_CommodityCode);
	l->region_id = fld(it, BF_Region);
	l->resource_id = fld(it, BF_InstanceID);
	l->currency = fld(it, BF_Currency);
	l->tags_json = tags_to_json(fld(it, BF_Tag));

	if (acct == NULL)
		ingest_line_error(l, "missing:BillAccountID");
	if (l->product_code == NULL)
		ingest_line_error(l, "missing:ProductCode");
	if (l->currency == NULL)
		ingest_line_error(l, "missing:Currency");

	if (item == NULL)
		ingest_line_error(l, "missing:Item");
	else if (strcmp(item, "PayAsYouGoBill") == 0)
		l->charge_category = "Usage";
	else if (strcmp(item, "SubscriptionOrder") == 0 || strcmp(item, "Refund") == 0)
		l->charge_category = "Purchase";
	else if (strcmp(item, "Adjustment") == 0)
		l->charge_category = "Adjustment";
	else
		ingest_line_error(l, "unknown_item:%s", item);

	if (date && ingest_valid_date(date) && strncmp(date, c->cycle, 7) == 0)
	{
		l->line_date = date;
		l->charge_period_start = psprintf("%s 00:00:00+00", date);
		l->charge_period_end = psprintf("%s 00:00:00+00", ingest_next_day(date));
	}
	else
	{
		if (date)
			ingest_line_error(l, "invalid:BillingDate");
		l->line_date = psprintf("%s-01", c->cycle);
		l->charge_period_start = psprintf("%s-01 00:00:00+00", c->cycle);
		l->charge_period_end = psprintf("%s 00:00:00+00", ingest_next_month(c->cycle));
	}

	l->amt_null[AMT_LIST] = !ingest_parse_amount(l, "PretaxGrossAmount", it->f[BF_PretaxGrossAmount],
												 it->isstr[BF_PretaxGrossAmount], true, &l->amt[AMT_LIST]);
	l->amt_null[AMT_DISCOUNT] = !ingest_parse_amount(l, "InvoiceDiscount", it->f[BF_InvoiceDiscount],
													 it->isstr[BF_InvoiceDiscount], false, &l->amt[AMT_DISCOUNT]);
	l->amt_null[AMT_COUPON] = !ingest_parse_amount(l, "DeductedByCoupons", it->f[BF_DeductedByCoupons],
												   it->isstr[BF_DeductedByCoupons], false, &l->amt[AMT_COUPON]);
	l->amt_null[AMT_BILLED] = !ingest_parse_amount(l, "PretaxAmount", it->f[BF_PretaxAmount],
												   it->isstr[BF_PretaxAmount], true, &l->amt[AMT_BILLED]);
	l->amt_null[AMT_PAID] = !ingest_parse_amount(l, "PaymentAmount", it->f[BF_PaymentAmount],
												 it->isstr[BF_PaymentAmount], false, &l->amt[AMT_PAID]);
	/* the string-typed fields must still be decimals when present */
	{
		Datum		d;

		(void) ingest_parse_amount(l, "ListPrice", it->f[BF_ListPrice], true, false, &d);
		(void) ingest_parse_amount(l, "Usage", it->f[BF_Usage], true, false, &d);
		(void) ingest_parse_amount(l, "DeductedByResourcePackage", it->f[BF_DeductedByResourcePackage],
								   true, false, &d);
	}
}

static void
store_overview(IngestState *st, Connector *c, int64 raw_page_id, BssReply *reply)
{
	int			i;

	for (i = 0; i < reply->nitems; i++)
	{
		BssItem    *it = &reply->items[i];
		NormLine	dummy;
		Oid			t[17];
		Datum		v[17];
		char		n[18];
		int			k;
		static const BssField amts[6] = {BF_PretaxGrossAmount, BF_InvoiceDiscount, BF_DeductedByCoupons,
		BF_PretaxAmount, BF_PaymentAmount, BF_OutstandingAmount};
		static const BssField txts[6] = {BF_BillAccountID, BF_ProductCode, BF_ProductType,
		BF_SubscriptionType, BF_Item, BF_Currency};

		trim_item(it);
		memset(&dummy, 0, sizeof(dummy));
		memset(n, ' ', sizeof(n));
		t[0] = INT8OID;
		v[0] = Int64GetDatum(st->connector_id);
		t[1] = TEXTOID;
		v[1] = CStringGetTextDatum(c->cycle);
		t[2] = INT8OID;
		v[2] = Int64GetDatum(raw_page_id);
		t[3] = INT4OID;
		v[3] = Int32GetDatum(i + 1);
		for (k = 0; k < 6; k++)
		{
			t[4 + k] = TEXTOID;
			v[4 + k] = ingest_text_or_null(fld(it, txts[k]), &n[4 + k]);
		}
		for (k = 0; k < 6; k++)
		{
			t[10 + k] = NUMERICOID;
			if (!ingest_parse_amount(&dummy, "", it->f[amts[k]], it->isstr[amts[k]], false, &v[10 + k]))
				n[10 + k] = 'n';
		}
		t[16] = TEXTOID;
		v[16] = ingest_text_or_null(st->account_id, &n[16]);
		ingest_spi_exec("INSERT INTO settle.provider_total (connector_id, billing_cycle, raw_page_id, item_no,"
				 " billing_account_id, product_code, product_type, subscription_type, item, currency,"
				 " pretax_gross_amount, invoice_discount, deducted_by_coupons, pretax_amount,"
				 " payment_amount, outstanding_amount, bill_owner_id)"
				 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
				 17, t, v, n, SPI_OK_INSERT);
	}
}

/* ---------------------------------------------------------------------
 * One scope of a pull (one call for one cycle), page by page
 * --------------------------------------------------------------------- */

/* The day a DAILY run asks for: its fan-out day, else the configured one. */
static const char *
run_day(RunCtx *rc)
{
	BssOptions *o = rc->c->opts;

	if (strcmp(o->granularity, "DAILY") != 0)
		return NULL;
	return rc->st->billing_date ? rc->st->billing_date : o->billing_date;
}

/* The scope of a call for the run's cycle, day and account (checkpoint key). */
static char *
scope_name(RunCtx *rc, const char *action)
{
	Connector  *c = rc->c;
	BssOptions *o = c->opts;
	const char *day = run_day(rc);
	char	   *scope;

	if (strcmp(action, "QueryBillOverview") == 0)
		scope = psprintf("QueryBillOverview:%s", c->cycle);
	else
		scope = psprintf("DescribeInstanceBill:%s:%s%s%s", c->cycle, o->granularity,
						 day ? ":" : "", day ? day : "");
	if (rc->st->account_id)
		scope = psprintf("%s:owner=%s", scope, rc->st->account_id);
	return scope;
}

/* Normalizes the items of one DescribeInstanceBill reply. */
static NormLine *
bss_lines(RunCtx *rc, BssReply *reply)
{
	NormLine   *lines = palloc(sizeof(NormLine) * (reply->nitems + 1));
	const char *day = run_day(rc);
	int			i;

	for (i = 0; i < reply->nitems; i++)
		bss_normalize(rc->c, &reply->items[i], &lines[i], reply->repaired, day);
	return lines;
}

/*
 * A resumed pass re-reads the pages it stored (from pass_first_page, in
 * order, from settle.raw_page) so that its items claim their lines again:
 * repeated items keep their numbers and the end of the pass knows every
 * line it saw.  Local work only: nothing is fetched or written.  Returns
 * false when the first page is gone (purged): the pass is then not whole.
 */
static bool
pass_replay(RunCtx *rc, const char *scope, int64 first_page)
{
	bool		whole = false;
	Oid			t[3] = {INT8OID, INT8OID, TEXTOID};
	Datum		v[3];
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "settle ingest replay",
											  ALLOCSET_DEFAULT_SIZES);

	v[0] = Int64GetDatum(rc->st->connector_id);
	v[1] = Int64GetDatum(first_page);
	v[2] = CStringGetTextDatum(scope);
	plan = SPI_prepare("SELECT body, raw_page_id FROM settle.raw_page WHERE connector_id = $1 AND raw_page_id >= $2"
					   " AND request->>'scope' = $3 ORDER BY raw_page_id", 3, t);
	if (plan == NULL)
		elog(ERROR, "could not prepare the replay query");
	portal = SPI_cursor_open(NULL, plan, v, NULL, true);
	for (;;)
	{
		MemoryContext old;
		bytea	   *body;
		bool		isnull;
		char	   *text;
		size_t		len;
		BssReply	reply;
		int			nbad = 0;

		SPI_cursor_fetch(portal, true, 1);
		if (SPI_processed == 0)
			break;
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) == first_page)
			whole = true;
		old = MemoryContextSwitchTo(tmp);
		body = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		len = VARSIZE_ANY_EXHDR(body);
		text = VARDATA_ANY(body);
		if (!pg_verify_mbstr(PG_UTF8, text, (int) len, true))
			text = repair_utf8(text, len, &len, &nbad);
		else
			text = pnstrdup(text, len);
		if (bss_parse_reply(text, len, &reply) == NULL)
		{
			reply.repaired = (nbad > 0);
			ingest_replay_lines(rc->st, bss_lines(rc, &reply), reply.nitems);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(tmp);
	return whole;
}

/*
 * The stored lines a whole pass may withdraw: every line of the scope (its
 * latest revision written by a page of the scope) not withdrawn yet; for a
 * day of a DAILY fan-out only lines of that day (the day in the natural key)
 * as well.  Read before the pass's last page is stored, so that the page
 * locks their groups together with its own in one step (src/ingest_lines.c):
 * only this stream writes the scope's lines (its pull lock), and
 * settle.withdraw_lines reads the latest revisions again under the locks.
 */
static char **
pass_candidates(RunCtx *rc, const char *scope, int *ncand)
{
	IngestState *st = rc->st;
	Oid			t[4] = {INT8OID, DATEOID, TEXTOID, TEXTOID};
	Datum		v[4];
	char	  **cand;
	uint64		i;

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = DirectFunctionCall1(date_in, CStringGetDatum(psprintf("%s-01", rc->c->cycle)));
	v[2] = CStringGetTextDatum(scope);
	v[3] = st->billing_date ? CStringGetTextDatum(st->billing_date) : (Datum) 0;
	if (SPI_execute_with_args(st->billing_date ?
							  "SELECT b.line_key FROM (SELECT DISTINCT ON (l.line_key) l.line_key, l.raw_page_id,"
							  " l.withdrawal_reason FROM settle.bill_line l"
							  " WHERE l.connector_id = $1 AND l.billing_period_start = $2"
							  " AND pg_catalog.split_part(l.line_key, '/', 4) = $4"
							  " ORDER BY l.line_key, l.revision DESC) b"
							  " JOIN settle.raw_page p ON p.raw_page_id = b.raw_page_id"
							  " WHERE b.withdrawal_reason IS NULL AND p.request->>'scope' = $3" :
							  "SELECT b.line_key FROM (SELECT DISTINCT ON (l.line_key) l.line_key, l.raw_page_id,"
							  " l.withdrawal_reason FROM settle.bill_line l"
							  " WHERE l.connector_id = $1 AND l.billing_period_start = $2"
							  " ORDER BY l.line_key, l.revision DESC) b"
							  " JOIN settle.raw_page p ON p.raw_page_id = b.raw_page_id"
							  " WHERE b.withdrawal_reason IS NULL AND p.request->>'scope' = $3",
							  st->billing_date ? 4 : 3, t, v, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the scope's lines");
	cand = palloc(sizeof(char *) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
		cand[i] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	*ncand = (int) SPI_processed;
	SPI_freetuptable(SPI_tuptable);
	return cand;
}

/*
 * The end of a whole pass: every candidate (above) that no item of the pass
 * took is withdrawn (settle.withdraw_lines).
 */
static void
pass_withdraw(RunCtx *rc, const char *scope, int64 raw_page_id, char **cand, int ncand)
{
	IngestState *st = rc->st;
	Datum	   *gone;
	int			ngone = 0;
	int			i;

	gone = palloc(sizeof(Datum) * (ncand + 1));
	for (i = 0; i < ncand; i++)
		if (!ingest_pass_claimed(st->pass, cand[i]))
			gone[ngone++] = CStringGetTextDatum(cand[i]);
	if (ngone > 0)
	{
		Oid			t2[5] = {INT8OID, TEXTARRAYOID, TEXTOID, INT8OID, INT8OID};
		Datum		v2[5];
		bool		isnull;

		v2[0] = Int64GetDatum(st->connector_id);
		v2[1] = PointerGetDatum(construct_array(gone, ngone, TEXTOID, -1, false, TYPALIGN_INT));
		v2[2] = CStringGetTextDatum(psprintf("not returned by a complete pull of %s", scope));
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
 * Pulls one scope to its end.  Returns normally when every page is stored;
 * raises (inside a page transaction, already rolled back by the caller's
 * handler) when a page fails.
 */
static void
pull_scope(RunCtx *rc, const char *action)
{
	IngestState *st = rc->st;
	Connector  *c = rc->c;
	BssOptions *o = c->opts;
	const char *day = run_day(rc);
	char	   *scope;
	char	   *token = NULL;
	int			pages_done = 0;
	bool		first = true;
	bool		describe = strcmp(action, "DescribeInstanceBill") == 0;
	IngestPass *pass = NULL;

	scope = MemoryContextStrdup(st->runcxt, scope_name(rc, action));
	st->pass = NULL;

	for (;;)
	{
		PageTx		tx;
		Acs3Pair	q[9];
		int			nq = 0;
		BssReply	reply;
		HttpResult *r;
		TimestampTz requested_at;
		int64		raw_page_id;
		char	   *next;
		bool		ends_pass = false;
		char	  **cand = NULL;
		int			ncand = 0;

		ingest_page_begin(rc, &tx);

		if (first)
		{
			int64		pass_first = 0;

			token = ingest_checkpoint_start(st, scope, &pages_done, &pass_first);
			if (describe)
			{
				pass = ingest_pass_create(st->runcxt);
				st->pass = pass;
				if (token == NULL)
					pass->whole = true;
				else if (pass_first > 0)
				{
					pass->whole = pass_replay(rc, scope, pass_first);
					pass->first_page = pass_first;
				}
			}
			first = false;
		}
		if (rc->worker)
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("settle ingest: %s %s %s%s%s%s%s page %d",
											c->name, action, c->cycle,
											describe && day ? " day " : "", describe && day ? day : "",
											st->account_id ? " owner " : "",
											st->account_id ? st->account_id : "", pages_done + 1));

		q[nq].name = "BillingCycle";
		q[nq++].value = c->cycle;
		if (st->account_id)
		{
			q[nq].name = "BillOwnerId";
			q[nq++].value = st->account_id;
		}
		if (describe)
		{
			q[nq].name = "Granularity";
			q[nq++].value = o->granularity;
			if (day)
			{
				q[nq].name = "BillingDate";
				q[nq++].value = (char *) day;
			}
			q[nq].name = "MaxResults";
			q[nq++].value = psprintf("%d", o->max_results);
			if (token)
			{
				q[nq].name = "NextToken";
				q[nq++].value = token;
			}
		}

		r = bss_call(st, rc->client, c, &rc->cred, action, q, nq, &reply, &requested_at);

		raw_page_id = ingest_insert_raw_page(st, request_json(c, scope, action, q, nq), r->status,
											 r->body, r->body_len, requested_at);
		st->pages++;
		next = NULL;
		if (!describe)
			store_overview(st, c, raw_page_id, &reply);
		else
		{
			if (pass->first_page == 0)
				pass->first_page = raw_page_id;
			next = reply.next_token ? ingest_trim(reply.next_token) : NULL;
			if (next && next[0] == '\0')
				next = NULL;

			/* the last page of a whole pass: what it did not see is gone */
			ends_pass = (next == NULL && pass->whole);
			if (ends_pass)
				cand = pass_candidates(rc, scope, &ncand);

			/*
			 * The bill line writers' locks (src/ingest_lines.c): a pull
			 * worker's page, its own transaction, locks the groups of its
			 * lines and of the lines its pass may withdraw, in one step;
			 * settle.ingest_now (pages of one transaction) locks every bill
			 * line, before the first write.
			 */
			st->group_locks = rc->worker;
			st->lock_also = cand;
			st->nlock_also = ncand;
			if (!st->group_locks)
				ingest_lock_lines(NULL, 0, true);
			ingest_store_lines(st, raw_page_id, psprintf("%s-01", c->cycle), c->cycle,
							   bss_lines(rc, &reply), reply.nitems);
			st->group_locks = false;
			st->lock_also = NULL;
			st->nlock_also = 0;
			if (next && token && strcmp(next, token) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("DescribeInstanceBill at \"%s\" returned the NextToken it was given", c->endpoint),
						 errdetail("Following it would loop; the page was not stored.")));
			if (ends_pass)
				pass_withdraw(rc, scope, raw_page_id, cand, ncand);
		}
		pages_done++;
		token = next ? MemoryContextStrdup(st->runcxt, next) : NULL;

		/*
		 * The worker commits every page with its checkpoint and counts.
		 * settle.ingest_now is one transaction, of which nobody sees a page
		 * before the end: it writes the checkpoint of its last stored page
		 * once, when the scope ends or the run fails (rewriting the one row
		 * per page would grow a chain of row versions that every later page
		 * has to walk).
		 */
		if (rc->worker)
		{
			ingest_checkpoint_save(st, scope, next, pages_done, pass ? pass->first_page : 0);
			ingest_run_update_counts(st);
		}
		else if (token == NULL)
		{
			ingest_checkpoint_save(st, scope, NULL, pages_done, 0);
			rc->pending_scope = NULL;
		}
		else
		{
			rc->pending_scope = scope;
			rc->pending_token = token;
			rc->pending_pages = pages_done;
			rc->pending_first = pass ? pass->first_page : 0;
		}

		ingest_page_end(rc, &tx);

		if (token == NULL)
			break;
	}
	st->pass = NULL;
	if (pass)
		MemoryContextDelete(pass->cxt);
}

/* ---------------------------------------------------------------------
 * The connector kind
 * --------------------------------------------------------------------- */

/*
 * Reads the connector's config keys (the config trigger has refused keys
 * this kind does not read).
 */
void
bss_configure(Connector *c, MemoryContext cxt)
{
	Oid			t[1] = {INT8OID};
	Datum		v[1];
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;
	BssOptions *o;

	v[0] = Int64GetDatum(c->id);
	if (SPI_execute_with_args("SELECT coalesce(config->>'granularity', 'MONTHLY'), config->>'billing_date',"
							  " coalesce((config->>'max_results')::int, 300),"
							  " coalesce((config->>'overview')::boolean, true)"
							  " FROM settle.connector WHERE connector_id = $1",
							  1, t, v, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read settle.connector");
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(cxt);
	o = palloc0(sizeof(BssOptions));
	o->granularity = SPI_getvalue(tup, td, 1);
	o->billing_date = SPI_getvalue(tup, td, 2);
	o->max_results = atoi(SPI_getvalue(tup, td, 3));
	o->overview = strcmp(SPI_getvalue(tup, td, 4), "t") == 0;
	MemoryContextSwitchTo(old);
	if (strcmp(o->granularity, "MONTHLY") != 0 && strcmp(o->granularity, "DAILY") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("connector \"%s\" has granularity \"%s\"", c->name, o->granularity),
				 errhint("The granularity is MONTHLY or DAILY.")));
	if (o->billing_date && strcmp(o->granularity, "DAILY") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("connector \"%s\" has a billing_date but granularity %s", c->name, o->granularity),
				 errhint("billing_date needs granularity DAILY.")));
	if (o->billing_date && (strlen(o->billing_date) != 10 || !ingest_valid_date(o->billing_date) ||
							strncmp(o->billing_date, c->cycle, 7) != 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("billing_date \"%s\" of connector \"%s\" is outside the billing cycle %s",
						o->billing_date, c->name, c->cycle),
				 errhint("Pull the billing cycle of that day, or leave billing_date out to pull every day of the billing cycle.")));
	c->opts = o;

	/* DAILY without billing_date: every day of the cycle up to today (UTC+8) */
	c->days = NIL;
	if (strcmp(o->granularity, "DAILY") == 0 && o->billing_date == NULL)
	{
		Oid			t2[2] = {INT8OID, TEXTOID};
		Datum		v2[2];
		uint64		i;

		v2[0] = Int64GetDatum(c->id);
		v2[1] = CStringGetTextDatum(c->cycle);
		if (SPI_execute_with_args("SELECT d::text FROM settle.connector k,"
								  " settle.connector_days(k.kind, k.config, $2::settle.period) d WHERE k.connector_id = $1",
								  2, t2, v2, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the days of connector \"%s\"", c->name);
		old = MemoryContextSwitchTo(cxt);
		for (i = 0; i < SPI_processed; i++)
			c->days = lappend(c->days, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		MemoryContextSwitchTo(old);
		if (c->days == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("billing cycle %s of connector \"%s\" has no day yet", c->cycle, c->name),
					 errdetail("A DAILY connector without billing_date pulls the days of its billing cycle up to today in UTC+8.")));
	}
}

/*
 * Pulls one account (of a DAILY fan-out: one day of it): the month's
 * provider totals (of a fan-out: with its last day only), then its bill
 * lines.
 */
void
bss_pull(RunCtx *rc)
{
	BssOptions *o = rc->c->opts;
	List	   *days = rc->c->days;

	if (o->overview && (rc->st->billing_date == NULL ||
						strcmp(rc->st->billing_date, (const char *) llast(days)) == 0))
		pull_scope(rc, "QueryBillOverview");
	pull_scope(rc, "DescribeInstanceBill");
}
