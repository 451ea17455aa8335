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
	int			field_pos;		/* position of that field within its item */
	int8		hint[64];		/* field at each position in the last item (-1: unknown) */
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
		s->field_pos = 0;
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
	{
		/* items of a page list their fields in the same order: try that first */
		int			pos = s->field_pos++;

		if (pos < lengthof(s->hint) && s->hint[pos] >= 0 &&
			strcmp(fname, field_names[s->hint[pos]]) == 0)
			s->cur_field = s->hint[pos];
		else
		{
			s->cur_field = field_lookup(fname);
			if (pos < lengthof(s->hint))
				s->hint[pos] = (int8) s->cur_field;
		}
	}
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
 * A small recursive-descent JSON reader that drives the same semantic
 * actions as pg_parse_json, but copies every string and number once, into
 * one arena allocated per reply, and keeps numbers as their exact text.
 * A copy (unescaped string, number or literal, plus its NUL) is never longer
 * than its source text plus the one byte that must follow it (separator,
 * bracket or end of input), so an arena of the input's length plus two
 * bytes cannot overflow.  Grammar as RFC 8259; the input must be valid UTF-8 (checked by
 * the caller).
 */
typedef struct FastJson
{
	char	   *p;
	char	   *end;
	char	   *out;			/* next free byte of the string arena */
	ScanState  *s;
	const char *err;
	int			depth;
} FastJson;

static bool fj_value(FastJson *f);

static inline void
fj_ws(FastJson *f)
{
	while (f->p < f->end && (*f->p == ' ' || *f->p == '\t' || *f->p == '\n' || *f->p == '\r'))
		f->p++;
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool
fj_u4(FastJson *f, const char *q, unsigned *cp)
{
	int			k;

	*cp = 0;
	if (f->end - q < 4)
		return false;
	for (k = 0; k < 4; k++)
	{
		int			h = hexval(q[k]);

		if (h < 0)
			return false;
		*cp = (*cp << 4) | h;
	}
	return true;
}

static bool
fj_string(FastJson *f, char **out)
{
	char	   *start = ++f->p;
	char	   *q = start;
	char	   *buf;
	char	   *w;

	/* fast path: no escapes */
	while (q < f->end && *q != '"' && *q != '\\')
	{
		if ((unsigned char) *q < 0x20)
		{
			f->err = "control character in a string";
			return false;
		}
		q++;
	}
	if (q >= f->end)
	{
		f->err = "unterminated string";
		return false;
	}
	buf = f->out;
	memcpy(buf, start, q - start);
	if (*q == '"')
	{
		buf[q - start] = '\0';
		f->out += q - start + 1;
		*out = buf;
		f->p = q + 1;
		return true;
	}
	/* slow path: unescape (the result is never longer than the input) */
	w = buf + (q - start);
	while (q < f->end && *q != '"')
	{
		if ((unsigned char) *q < 0x20)
		{
			f->err = "control character in a string";
			return false;
		}
		if (*q != '\\')
		{
			*w++ = *q++;
			continue;
		}
		q++;
		if (q >= f->end)
			break;
		switch (*q)
		{
			case '"':
			case '\\':
			case '/':
				*w++ = *q++;
				break;
			case 'b':
				*w++ = '\b', q++;
				break;
			case 'f':
				*w++ = '\f', q++;
				break;
			case 'n':
				*w++ = '\n', q++;
				break;
			case 'r':
				*w++ = '\r', q++;
				break;
			case 't':
				*w++ = '\t', q++;
				break;
			case 'u':
				{
					unsigned	cp;

					if (!fj_u4(f, q + 1, &cp))
					{
						f->err = "bad \\u escape";
						return false;
					}
					q += 5;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						unsigned	lo;

						if (f->end - q < 6 || q[0] != '\\' || q[1] != 'u' || !fj_u4(f, q + 2, &lo) ||
							lo < 0xDC00 || lo > 0xDFFF)
						{
							f->err = "unpaired surrogate in \\u escape";
							return false;
						}
						q += 6;
						cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
					{
						f->err = "unpaired surrogate in \\u escape";
						return false;
					}
					if (cp == 0)
					{
						f->err = "\\u0000 cannot be converted to text";
						return false;
					}
					w = (char *) unicode_to_utf8((pg_wchar) cp, (unsigned char *) w);
					w += pg_utf_mblen((unsigned char *) w);
					break;
				}
			default:
				f->err = "bad escape";
				return false;
		}
	}
	if (q >= f->end)
	{
		f->err = "unterminated string";
		return false;
	}
	*w = '\0';
	f->out = w + 1;
	*out = buf;
	f->p = q + 1;
	return true;
}

static char *
fj_copy(FastJson *f, const char *src, size_t n)
{
	char	   *dst = f->out;

	memcpy(dst, src, n);
	dst[n] = '\0';
	f->out += n + 1;
	return dst;
}

static bool
fj_number(FastJson *f)
{
	char	   *start = f->p;
	char	   *q = f->p;

	if (*q == '-')
		q++;
	if (q < f->end && *q == '0')
		q++;
	else if (q < f->end && *q >= '1' && *q <= '9')
		while (q < f->end && *q >= '0' && *q <= '9')
			q++;
	else
	{
		f->err = "bad number";
		return false;
	}
	if (q < f->end && *q == '.')
	{
		q++;
		if (q >= f->end || !(*q >= '0' && *q <= '9'))
		{
			f->err = "bad number";
			return false;
		}
		while (q < f->end && *q >= '0' && *q <= '9')
			q++;
	}
	if (q < f->end && (*q == 'e' || *q == 'E'))
	{
		q++;
		if (q < f->end && (*q == '+' || *q == '-'))
			q++;
		if (q >= f->end || !(*q >= '0' && *q <= '9'))
		{
			f->err = "bad number";
			return false;
		}
		while (q < f->end && *q >= '0' && *q <= '9')
			q++;
	}
	f->p = q;
	scan_scalar(f->s, fj_copy(f, start, q - start), JSON_TOKEN_NUMBER);
	return true;
}

static bool
fj_literal(FastJson *f, const char *word, JsonTokenType type)
{
	size_t		n = strlen(word);

	if ((size_t) (f->end - f->p) < n || memcmp(f->p, word, n) != 0)
	{
		f->err = "unexpected token";
		return false;
	}
	f->p += n;
	scan_scalar(f->s, fj_copy(f, word, n), type);
	return true;
}

static bool
fj_value(FastJson *f)
{
	fj_ws(f);
	if (f->p >= f->end)
	{
		f->err = "unexpected end of input";
		return false;
	}
	switch (*f->p)
	{
		case '{':
			if (++f->depth > 64)
			{
				f->err = "nested too deeply";
				return false;
			}
			f->p++;
			scan_object_start(f->s);
			fj_ws(f);
			if (f->p < f->end && *f->p == '}')
				f->p++;
			else
			{
				for (;;)
				{
					char	   *key;

					fj_ws(f);
					if (f->p >= f->end || *f->p != '"')
					{
						f->err = "expected a field name";
						return false;
					}
					if (!fj_string(f, &key))
						return false;
					fj_ws(f);
					if (f->p >= f->end || *f->p != ':')
					{
						f->err = "expected \":\"";
						return false;
					}
					f->p++;
					scan_field_start(f->s, key, false);
					if (!fj_value(f))
						return false;
					fj_ws(f);
					if (f->p < f->end && *f->p == ',')
					{
						f->p++;
						continue;
					}
					if (f->p < f->end && *f->p == '}')
					{
						f->p++;
						break;
					}
					f->err = "expected \",\" or \"}\"";
					return false;
				}
			}
			scan_object_end(f->s);
			f->depth--;
			return true;
		case '[':
			if (++f->depth > 64)
			{
				f->err = "nested too deeply";
				return false;
			}
			f->p++;
			scan_array_start(f->s);
			fj_ws(f);
			if (f->p < f->end && *f->p == ']')
				f->p++;
			else
			{
				for (;;)
				{
					if (!fj_value(f))
						return false;
					fj_ws(f);
					if (f->p < f->end && *f->p == ',')
					{
						f->p++;
						continue;
					}
					if (f->p < f->end && *f->p == ']')
					{
						f->p++;
						break;
					}
					f->err = "expected \",\" or \"]\"";
					return false;
				}
			}
			scan_array_end(f->s);
			f->depth--;
			return true;
		case '"':
			{
				char	   *str;

				if (!fj_string(f, &str))
					return false;
				scan_scalar(f->s, str, JSON_TOKEN_STRING);
				return true;
			}
		case 't':
			return fj_literal(f, "true", JSON_TOKEN_TRUE);
		case 'f':
			return fj_literal(f, "false", JSON_TOKEN_FALSE);
		case 'n':
			return fj_literal(f, "null", JSON_TOKEN_NULL);
		default:
			if (*f->p == '-' || (*f->p >= '0' && *f->p <= '9'))
				return fj_number(f);
			f->err = "unexpected character";
			return false;
	}
}

/*
 * Reads one reply (valid UTF-8).  On malformed JSON returns a description
 * with the byte offset (and the reply holds whatever was read before).
 */
char *
bss_parse_reply(char *body, size_t len, BssReply *reply)
{
	ScanState	st;
	FastJson	f;

	memset(reply, 0, sizeof(BssReply));
	memset(&st, 0, sizeof(st));
	st.reply = reply;
	st.cur_field = -1;
	memset(st.hint, -1, sizeof(st.hint));
	f.p = body;
	f.end = body + len;
	f.out = palloc(len + 2);
	f.s = &st;
	f.err = NULL;
	f.depth = 0;
	if (!fj_value(&f))
		return psprintf("%s at byte %ld", f.err, (long) (f.p - body));
	fj_ws(&f);
	if (f.p != f.end)
		return psprintf("trailing characters at byte %ld", (long) (f.p - body));
	return NULL;
}
