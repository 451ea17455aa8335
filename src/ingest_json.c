/*
 * ingest_json.c — streaming reader for Alibaba BSS replies.
 *
 * Runs PostgreSQL's JSON lexer with semantic actions over the reply text,
 * recognising both list shapes (Describe*: Data.Items[]; Query*:
 * Data.Items.Item[]).  Field values are kept as the lexer's token text:
 * numbers exactly as written, strings unescaped.  Unknown fields and nested
 * values inside an item are skipped.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "ingest_json.h"

static const char *const field_names[BF__COUNT] = {
	"AdjustAmount", "AfterDiscountAmount", "BillAccountID", "BillAccountName",
	"BillingDate", "BillingItem", "BillingItemCode", "BillingType", "BizType",
	"CashAmount", "CommodityCode", "Currency", "DeductedByCashCoupons",
	"DeductedByCoupons", "DeductedByPrepaidCard", "DeductedByResourcePackage",
	"InstanceID", "InvoiceDiscount", "Item", "ListPrice", "OutstandingAmount",
	"OwnerID", "PaymentAmount", "PipCode", "PretaxAmount", "PretaxGrossAmount",
	"ProductCode", "ProductName", "ProductType", "Region", "ServicePeriod",
	"SubscriptionType", "Tag", "Usage", "UsageUnit", "Zone"
};

#define MAX_DEPTH 8

typedef struct ScanState
{
	BssReply   *reply;
	int			depth;			/* nesting of objects and arrays */
	char	   *path[MAX_DEPTH + 1];	/* field name at each object depth */
	bool		isarray[MAX_DEPTH + 1];
	int			items_depth;	/* depth of item objects, 0 when not in list */
	int			list_depth;		/* depth of the list array */
	BssItem    *cur;
	int			cur_field;		/* BssField of the current item field, or -1 */
} ScanState;

const char *
bss_field_name(BssField f)
{
	return field_names[f];
}

static int
field_lookup(const char *name)
{
	int			lo = 0;
	int			hi = BF__COUNT - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			c = strcmp(name, field_names[mid]);

		if (c == 0)
			return mid;
		if (c < 0)
			hi = mid - 1;
		else
			lo = mid + 1;
	}
	return -1;
}

static bool
path_is(ScanState *s, int d, const char *name)
{
	return s->path[d] != NULL && strcmp(s->path[d], name) == 0;
}

static void
scan_object_start(void *state)
{
	ScanState  *s = state;

	s->depth++;
	if (s->depth <= MAX_DEPTH)
	{
		s->path[s->depth] = NULL;
		s->isarray[s->depth] = false;
	}
	if (s->depth == 2 && path_is(s, 1, "Data"))
		s->reply->has_data = true;
	if (s->items_depth && s->depth == s->items_depth)
	{
		BssReply   *r = s->reply;

		if (r->nitems >= r->maxitems)
		{
			r->maxitems = r->maxitems ? r->maxitems * 2 : 64;
			r->items = r->items ? repalloc(r->items, sizeof(BssItem) * r->maxitems)
				: palloc(sizeof(BssItem) * r->maxitems);
		}
		s->cur = &r->items[r->nitems++];
		memset(s->cur, 0, sizeof(BssItem));
		s->cur_field = -1;
	}
}

static void
scan_object_end(void *state)
{
	ScanState  *s = state;

	if (s->items_depth && s->depth == s->items_depth)
		s->cur = NULL;
	s->depth--;
}

static void
scan_array_start(void *state)
{
	ScanState  *s = state;

	s->depth++;
	if (s->depth <= MAX_DEPTH)
	{
		s->path[s->depth] = NULL;
		s->isarray[s->depth] = true;
	}
	if (s->items_depth == 0)
	{
		/* Describe*: Data.Items[] */
		if (s->depth == 3 && path_is(s, 1, "Data") && path_is(s, 2, "Items"))
		{
			s->list_depth = 3;
			s->items_depth = 4;
		}
		/* Query*: Data.Items.Item[] */
		else if (s->depth == 4 && path_is(s, 1, "Data") && path_is(s, 2, "Items") &&
				 !s->isarray[3] && path_is(s, 3, "Item"))
		{
			s->list_depth = 4;
			s->items_depth = 5;
		}
	}
}

static void
scan_array_end(void *state)
{
	ScanState  *s = state;

	if (s->items_depth && s->depth == s->list_depth)
		s->items_depth = s->list_depth = 0;
	s->depth--;
}

static void
scan_field_start(void *state, char *fname, bool isnull)
{
	ScanState  *s = state;

	if (s->depth <= MAX_DEPTH)
		s->path[s->depth] = fname;
	if (s->cur && s->depth == s->items_depth)
		s->cur_field = field_lookup(fname);
}

static void
scan_scalar(void *state, char *token, JsonTokenType type)
{
	ScanState  *s = state;
	BssReply   *r = s->reply;
	char	   *val = (type == JSON_TOKEN_NULL) ? NULL : token;

	if (s->cur && s->depth == s->items_depth)
	{
		if (s->cur_field >= 0)
		{
			s->cur->f[s->cur_field] = val;
			s->cur->isstr[s->cur_field] = (type == JSON_TOKEN_STRING);
		}
		return;
	}
	if (s->depth == 1 && !s->isarray[1])
	{
		if (path_is(s, 1, "Code"))
			r->code = val;
		else if (path_is(s, 1, "Message"))
			r->message = val;
		else if (path_is(s, 1, "RequestId"))
			r->request_id = val;
	}
	else if (s->depth == 2 && !s->isarray[2] && path_is(s, 1, "Data"))
	{
		if (path_is(s, 2, "NextToken"))
			r->next_token = val;
		else if (path_is(s, 2, "TotalCount"))
			r->total_count = val;
	}
}

/*
 * Reads one reply.  On malformed JSON returns the lexer's description (and
 * the reply holds whatever was read before the error).
 */
char *
bss_parse_reply(char *body, size_t len, BssReply *reply)
{
	JsonLexContext *lex;
	JsonSemAction sem;
	ScanState	st;
	JsonParseErrorType rc;

	memset(reply, 0, sizeof(BssReply));
	memset(&st, 0, sizeof(st));
	st.reply = reply;
	st.cur_field = -1;

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &st;
	sem.object_start = scan_object_start;
	sem.object_end = scan_object_end;
	sem.array_start = scan_array_start;
	sem.array_end = scan_array_end;
	sem.object_field_start = scan_field_start;
	sem.scalar = scan_scalar;

	lex = makeJsonLexContextCstringLen(body, (int) len, PG_UTF8, true);
	rc = pg_parse_json(lex, &sem);
	if (rc != JSON_SUCCESS)
		return json_errdetail(rc, lex);
	return NULL;
}
