/*
 * ingest_lines.c — from normalized lines to stored bill line revisions.
 *
 * For one page: maps each line's account to a customer and reseller on the
 * line's date (settle.customer_account), checks it against the currency and
 * product catalogues and the agreement table, decides per natural key
 * whether it is new, unchanged (a no-op) or a new revision, writes all new
 * revisions in one multi-insert, and opens an exception for every failure.
 * A failing line never stops its neighbours: it is stored with its errors.
 * Runs inside the page's transaction, so all of this commits with the page.
 */
#include "postgres.h"

#include "access/genam.h"
#include "common/cryptohash.h"
#include "common/hashfn.h"
#include "access/heapam.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "catalog/pg_trigger.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "fmgr.h"

#include "acs3.h"
#include "settle.h"
#include "ingest_lines.h"
#include "money.h"

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
 * records the failure on the line when it is missing (and required), not a
 * decimal, or not an amount settle holds exactly: at most 14 integer digits
 * (below 10^14) and at most 16 significant decimals (trailing zeros aside),
 * what settle's money arithmetic holds (docs/rules.md; cost exports carry
 * 11 and more).  The raw page keeps the value as sent.
 * Never goes through double.
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
	{
		static Datum limit = (Datum) 0;
		Datum		v;

		v = DirectFunctionCall3(numeric_in, CStringGetDatum(s),
								ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
		if (limit == (Datum) 0)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			limit = DirectFunctionCall3(numeric_in, CStringGetDatum("100000000000000"),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			MemoryContextSwitchTo(old);
		}
		if (DatumGetBool(DirectFunctionCall2(numeric_ge,
											 DirectFunctionCall1(numeric_abs, v), limit)) ||
			DatumGetInt32(DirectFunctionCall1(numeric_min_scale, v)) > MONEY_SCALE)
		{
			ingest_line_error(l, "invalid_amount:%s", field);
			return false;
		}
		*out = v;
	}
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


/* ---------------------------------------------------------------------
 * The bill line writers' locks
 *
 * What they protect: a line key's revisions are numbered densely (the next
 * revision is the latest stored + 1, read under the lock), an item's slot of
 * its natural key ("<key>", "<key>#2", ...) is decided against every stored
 * slot of that key, and a withdrawal adds the revision after the latest.
 * Two writers of one line key must therefore not interleave between reading
 * the latest revisions and committing; writers of different keys may.
 *
 * Keys are grouped (line_group below): a BSS key by its payer, owner, cycle
 * and billing date ("bss:<BillAccountID>/<OwnerID>/<cycle>/<date>/"), a
 * FOCUS key by its billing and sub account, a digest key by itself (every
 * slot of one natural key is in its natural key's group), anything else in
 * one group.  Lock order, for every writer of settle.bill_line:
 *   1. the writers' lock (advisory int8 5861746185): shared by a writer that
 *      locks its groups, exclusive by one that does not know them in
 *      advance or takes them in more than one step;
 *   2. shared holders only: the lock of each group it writes (advisory
 *      (0x5E771E02, group hash)), all at once, in ascending hash order
 *      (the last page of a pass: its lines' groups and those of the lines
 *      the pass may withdraw, which settle.withdraw_lines then re-takes);
 *   3. exceptions, opened in (reseller, kind, scope) order by such a writer;
 *   4. audit chains at pre-commit (audit.c, ascending).
 * A transaction takes its group locks in one step (one page of a pull
 * worker, one settle.withdraw_lines outside ingestion) and holds them to its
 * end; a transaction that writes in several steps (settle.ingest_now, a
 * FOCUS file stored by billing period and withdrawing per period) takes
 * the writers' lock exclusively before its first write, after which no
 * other writer holds any group.  So no cycle of waits can form.
 * ingest_lock_lines enforces the one step: a later step of the same
 * transaction may only re-take groups it already holds (a pull worker's
 * last page, then settle.withdraw_lines of its candidates); new groups, or
 * the exclusive lock after group locks, are refused (55000) instead of
 * risking a deadlock.
 * --------------------------------------------------------------------- */

#define WRITERS_LOCK INT64CONST(5861746185)
#define LINE_GROUP_LOCK_CLASS 0x5E771E02
#define MAX_GROUP_LOCKS 64

/* The group of a stored line key (its lock's second key). */
static uint32
line_group(const char *key)
{
	int			want = 0;
	int			slashes = 0;
	const char *p;

	if (strncmp(key, "bss:", 4) == 0)
		want = 4;
	else if (strncmp(key, "focus:", 6) == 0)
		want = 2;
	else if (strncmp(key, "sha256:", 7) == 0 && strlen(key) >= 7 + 64)
		return hash_bytes((const unsigned char *) key, 7 + 64);
	if (want > 0)
		for (p = key; *p; p++)
			if (*p == '/' && ++slashes == want)
				return hash_bytes((const unsigned char *) key, p + 1 - key);
	return 0;				/* unstructured keys: one group */
}

static int
cmp_uint32(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a;
	uint32		y = *(const uint32 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/* what this backend's current transaction holds (lock_lxid: which one) */
static LocalTransactionId lock_lxid = InvalidLocalTransactionId;
static bool lock_exclusive;
static bool lock_shared;
static int	lock_ngroups;
static uint32 lock_groups[MAX_GROUP_LOCKS];

static void
refuse_second_step(void)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("this transaction already writes bill lines of other line groups"),
			 errdetail("A transaction takes the bill line writers' locks in one step, so that no two writers can wait for each other."),
			 errhint("Write these lines in one call, or in a transaction of their own.")));
}

/*
 * Takes the writers' locks for writing these keys, to the end of the
 * transaction: the writers' lock exclusively when exclusive (or when the
 * keys span more than MAX_GROUP_LOCKS groups), else shared and then each
 * group's lock in ascending order.  See the lock order above.
 */
void
ingest_lock_lines(char **keys, int nkeys, bool exclusive)
{
	uint32	   *g = NULL;
	int			n = 0;
	int			i;

	if (MyProc->lxid != lock_lxid)
	{
		lock_lxid = MyProc->lxid;
		lock_exclusive = lock_shared = false;
		lock_ngroups = 0;
	}
	if (lock_exclusive)
	{
		/* no other writer holds anything (taken again: see below) */
		(void) DirectFunctionCall1(pg_advisory_xact_lock_int8, Int64GetDatum(WRITERS_LOCK));
		return;
	}
	if (!exclusive && nkeys > 0)
	{
		g = palloc(sizeof(uint32) * nkeys);
		for (i = 0; i < nkeys; i++)
			g[i] = line_group(keys[i]);
		qsort(g, nkeys, sizeof(uint32), cmp_uint32);
		for (i = 0; i < nkeys; i++)
			if (n == 0 || g[n - 1] != g[i])
				g[n++] = g[i];
		if (n > MAX_GROUP_LOCKS)
			exclusive = true;
	}
	if (exclusive && lock_shared)
		refuse_second_step();	/* (two such upgrades would wait for each other) */
	if (lock_ngroups > 0)
	{
		/* a later step: only groups this transaction holds already */
		int			j = 0;

		for (i = 0; i < n; i++)
		{
			while (j < lock_ngroups && lock_groups[j] < g[i])
				j++;
			if (j == lock_ngroups || lock_groups[j] != g[i])
				refuse_second_step();
		}
		/*
		 * taken again below (no wait when held: a rolled-back
		 * subtransaction may have released them)
		 */
	}
	else if (exclusive)
	{
		(void) DirectFunctionCall1(pg_advisory_xact_lock_int8, Int64GetDatum(WRITERS_LOCK));
		lock_exclusive = true;
		return;
	}
	(void) DirectFunctionCall1(pg_advisory_xact_lock_shared_int8, Int64GetDatum(WRITERS_LOCK));
	lock_shared = true;
	for (i = 0; i < n; i++)
		(void) DirectFunctionCall2(pg_advisory_xact_lock_int4, Int32GetDatum(LINE_GROUP_LOCK_CLASS),
								   Int32GetDatum((int32) g[i]));
	if (lock_ngroups == 0 && n > 0)
	{
		memcpy(lock_groups, g, sizeof(uint32) * n);
		lock_ngroups = n;
	}
}

PG_FUNCTION_INFO_V1(settle_lock_bill_lines);

/*
 * settle._lock_bill_lines(line_keys text[]): the locks a writer of these
 * keys takes in one step (settle.withdraw_lines; a pull worker's page takes
 * the same from C).  STRICT.
 */
Datum
settle_lock_bill_lines(PG_FUNCTION_ARGS)
{
	ArrayType  *a = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;
	int			k = 0;
	char	  **keys;

	deconstruct_array(a, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	keys = palloc(sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			keys[k++] = TextDatumGetCString(elems[i]);
	ingest_lock_lines(keys, k, false);
	PG_RETURN_VOID();
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
	if (SPI_execute("SELECT source_field || E'\\t' || source_value || E'\\t' || product_code"
					" FROM settle.product_mapping", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.product_mapping");
	old = MemoryContextSwitchTo(st->runcxt);
	for (i = 0; i < SPI_processed; i++)
		st->product_map = lappend(st->product_map,
								  pstrdup(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
	MemoryContextSwitchTo(old);
	st->catalogue_loaded = true;
}

static char *product_category(IngestState *st, const char *code);

/* The product finance mapped a SkuId or ServiceName to, or NULL. */
static char *
mapped_product(IngestState *st, const char *field, const char *value)
{
	ListCell   *lc;
	size_t		flen = strlen(field);
	size_t		vlen = strlen(value);

	foreach(lc, st->product_map)
	{
		char	   *m = lfirst(lc);

		if (strncmp(m, field, flen) == 0 && m[flen] == '\t' &&
			strncmp(m + flen + 1, value, vlen) == 0 && m[flen + 1 + vlen] == '\t')
			return m + flen + 1 + vlen + 1;
	}
	return NULL;
}

/*
 * Lines whose product is known by name only (a FOCUS file without
 * x_ProductCode): the product finance mapped the SkuId to, else the
 * ServiceName.  The product joins the line's content hash, so a line pulled
 * again after its name was mapped is a new revision carrying the product.
 * An unmapped name keeps the name as the product code and fails the line
 * with unmapped_product (one exception per name: see the exception pass).
 */
static void
resolve_products(IngestState *st, NormLine *lines, int nlines)
{
	int			i;

	for (i = 0; i < nlines; i++)
	{
		NormLine   *l = &lines[i];
		char	   *code = NULL;
		char	   *mix;
		uint8		h[32];

		if (!l->product_by_name || (l->sku_id == NULL && l->service_name == NULL))
			continue;
		if (l->sku_id)
			code = mapped_product(st, "SkuId", l->sku_id);
		if (code == NULL && l->service_name)
			code = mapped_product(st, "ServiceName", l->service_name);
		/* a name that is itself a catalogue product code is that product */
		if (code == NULL && product_category(st, l->product_code) != NULL)
			continue;
		if (code == NULL)
		{
			ingest_line_error(l, "unmapped_product:%s", l->service_name ? l->service_name : l->sku_id);
			continue;
		}
		l->product_code = code;
		mix = palloc(32 + strlen(code));
		memcpy(mix, l->hash, 32);
		memcpy(mix + 32, code, strlen(code));
		acs3_sha256(mix, 32 + strlen(code), h);
		memcpy(l->hash, h, 32);
	}
}

/* Whether one of the line's failures starts with prefix. */
static bool
has_error(NormLine *l, const char *prefix)
{
	ListCell   *lc;

	foreach(lc, l->errors)
		if (strncmp((char *) lfirst(lc), prefix, strlen(prefix)) == 0)
			return true;
	return false;
}

/*
 * True the first time a run meets scope (an unmapped account of a month, an
 * unmapped product name): its exception is opened once per run.  Long
 * scopes are remembered by their hash.
 */
static bool
first_in_run(IngestState *st, const char *scope)
{
	char		key[NAMEDATALEN * 2];
	bool		found;

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
	if (strlen(scope) < sizeof(key))
		strlcpy(key, scope, sizeof(key));
	else
	{
		strlcpy(key, "sha256:", sizeof(key));
		acs3_sha256_hex(scope, strlen(scope), key + 7);
	}
	hash_search(st->unmapped_seen, key, HASH_ENTER, &found);
	return !found;
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

/*
 * An exception a page opens.  A page that holds only its groups' locks
 * opens its exceptions in (reseller, kind, scope) order (lock order, step 3):
 * two such pages that meet on an exception (an unmapped account of a month,
 * a product name) then wait for each other in one direction only.
 */
typedef struct PageException
{
	int64		reseller_id;
	const char *kind;
	char	   *scope_key;
	const char *period;
	const char *refs;
	const char *payload;
} PageException;

static int
cmp_page_exception(const void *a, const void *b)
{
	const PageException *x = a;
	const PageException *y = b;
	int			c;

	if (x->reseller_id != y->reseller_id)
		return x->reseller_id < y->reseller_id ? -1 : 1;
	if ((c = strcmp(x->kind, y->kind)) != 0)
		return c;
	return strcmp(x->scope_key, y->scope_key);
}

/* A page's exceptions, grown as they come (most pages have none). */
typedef struct PageExceptions
{
	PageException *e;
	int			n;
	int			cap;
} PageExceptions;

static void
page_exception(PageExceptions *pe, int64 reseller_id, const char *kind,
			   char *scope_key, const char *period, const char *refs, const char *payload)
{
	PageException *e;

	if (pe->n == pe->cap)
	{
		pe->cap = Max(16, pe->cap * 2);
		pe->e = pe->e ? repalloc_huge(pe->e, sizeof(PageException) * (Size) pe->cap) :
			palloc(sizeof(PageException) * pe->cap);
	}
	e = &pe->e[pe->n++];

	e->reseller_id = reseller_id;
	e->kind = kind;
	e->scope_key = scope_key;
	e->period = period;
	e->refs = refs;
	e->payload = payload;
}

/* Column builder for the unnest() insert. */
/*
 * The bill_line columns, by name: ingest writes every one of them.  Resolved
 * to attribute numbers once per page (a page is small next to a catalogue
 * lookup of thirty names).
 */
enum
{
	C_RESELLER, C_LINE_KEY, C_REVISION, C_CUSTOMER, C_CONTENT_HASH, C_RAW_PAGE, C_CONNECTOR,
	C_SOURCE_ITEM, C_SOURCE_RECORD, C_BILLING_ACCOUNT, C_SUB_ACCOUNT, C_PERIOD_START,
	C_CHARGE_START, C_CHARGE_END, C_CATEGORY, C_CLASS, C_PRODUCT, C_SERVICE_NAME,
	C_SERVICE_CATEGORY, C_SKU, C_REGION, C_RESOURCE, C_CURRENCY, C_LIST_COST, C_DISCOUNT,
	C_COUPON, C_BILLED, C_PAID, C_ORIGINAL, C_TAGS, C_ERRORS, C_INGESTED_AT, C_WITHDRAWAL, C__COUNT
};

static const char *const col_names[C__COUNT] = {
	"reseller_id", "line_key", "revision", "customer_id", "content_hash", "raw_page_id",
	"connector_id", "source_item", "source_record_id", "billing_account_id", "sub_account_id",
	"billing_period_start", "charge_period_start", "charge_period_end", "charge_category",
	"charge_class", "product_code", "service_name", "service_category", "sku_id", "region_id",
	"resource_id", "billing_currency", "list_cost", "discount", "coupon_deduction", "billed_cost",
	"amount_paid", "original_line_key", "tags", "validation_errors", "ingested_at",
	"withdrawal_reason"
};

/* The last input text of a type and its value: lines of a page share dates. */
typedef struct InCache
{
	char	   *text;
	Datum		value;
} InCache;

static Datum
cached_in(InCache *c, const char *text, PGFunction in, int32 typmod)
{
	if (c->text == NULL || strcmp(c->text, text) != 0)
	{
		c->value = DirectFunctionCall3(in, CStringGetDatum(text), ObjectIdGetDatum(InvalidOid),
									   Int32GetDatum(typmod));
		c->text = pstrdup(text);
	}
	return c->value;
}

static inline void
put_text(Datum *v, bool *n, int col, const char *s)
{
	if (s == NULL)
		n[col] = true;
	else
		v[col] = CStringGetTextDatum(s);
}

/*
 * The latest stored revision of each key (bill_line_key_idx: one index
 * probe per key), entered into the page's key table.  Reads with a fresh
 * snapshot taken after the writer lock, like a statement would.
 */
static void
read_latest_revisions(HTAB *keys, char **want, int nwant)
{
	Relation	heap = table_open(settle_undistributed_relid("bill_line"), AccessShareLock);
	Relation	idx = index_open(settle_relid("bill_line_key_idx"), AccessShareLock);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	int			att_key = settle_attnum(heap, "line_key");
	int			att_rev = settle_attnum(heap, "revision");
	int			att_hash = settle_attnum(heap, "content_hash");
	/* equality is strategy 1 of a hash index, 3 of a B-tree */
	StrategyNumber strategy = idx->rd_rel->relam == HASH_AM_OID ?
		HTEqualStrategyNumber : BTEqualStrategyNumber;
	IndexScanDesc scan;
	Snapshot	snap;
	int			i;

	PushCopiedSnapshot(GetTransactionSnapshot());
	UpdateActiveSnapshotCommandId();
	snap = GetActiveSnapshot();
	scan = index_beginscan(heap, idx, snap, 1, 0);
	for (i = 0; i < nwant; i++)
	{
		ScanKeyData sk;
		KeyEntry   *e;
		bool		found;

		e = hash_search(keys, want[i], HASH_ENTER, &found);
		if (found)
			continue;
		e->revision = 0;
		ScanKeyInit(&sk, 1, strategy, F_TEXTEQ, CStringGetTextDatum(want[i]));
		index_rescan(scan, &sk, 1, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			int32		rev;

			/* a hash index returns every key of the same hash: recheck */
			if (scan->xs_recheck &&
				strcmp(TextDatumGetCString(slot_getattr(slot, att_key, &isnull)), want[i]) != 0)
				continue;
			rev = DatumGetInt32(slot_getattr(slot, att_rev, &isnull));

			if (rev > e->revision)
			{
				bytea	   *h = DatumGetByteaPP(slot_getattr(slot, att_hash, &isnull));

				e->revision = rev;
				memcpy(e->hash, VARDATA_ANY(h), 32);
			}
		}
	}
	index_endscan(scan);
	PopActiveSnapshot();
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, AccessShareLock);
	table_close(heap, AccessShareLock);
}

/*
 * Writes the page's new revisions straight into settle.bill_line: one
 * multi-insert, the table's constraints checked on every row, every index
 * maintained (the executor's own routines, as COPY does).  The foreign keys
 * (raw_page_id, connector_id) hold by construction: the raw page was
 * inserted, with its own checked reference to the connector, in this very
 * transaction.  bill_line has no insert triggers (append-only triggers fire
 * on UPDATE, DELETE and TRUNCATE); one added by hand is refused rather than
 * bypassed.
 */
static void
write_lines(IngestState *st, int64 raw_page_id, const char *billing_period_start,
			NormLine *lines, int nlines, const bool *insert, const int32 *revision,
			MapEntry **map, int ninsert)
{
	Relation	rel = table_open(settle_undistributed_relid("bill_line"), RowExclusiveLock);
	TupleDesc	desc = RelationGetDescr(rel);
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	CommandId	cid = GetCurrentCommandId(true);
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * ninsert);
	int			att[C__COUNT];
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	InCache		c_start = {0}, c_end = {0}, c_currency = {0}, c_tags = {0};
	Datum		period_start = DirectFunctionCall1(date_in, CStringGetDatum(billing_period_start));
	Datum		now = TimestampTzGetDatum(GetCurrentTimestamp());
	Datum		no_tags = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
	Datum		no_errors = PointerGetDatum(construct_empty_array(TEXTOID));
	int			k;
	int			i;
	int			j;

	for (k = 0; rel->trigdesc && k < rel->trigdesc->numtriggers; k++)
	{
		Trigger    *t = &rel->trigdesc->triggers[k];

		/* foreign-key checks are the insert triggers skipped by construction */
		if (!TRIGGER_FOR_INSERT(t->tgtype) || t->tgenabled == TRIGGER_DISABLED ||
			RI_FKey_trigger_type(t->tgfoid) != RI_TRIGGER_NONE)
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("settle.bill_line has an INSERT trigger"),
				 errdetail("Bill lines are written in bulk by ingestion; triggers on insert are not supported."),
				 errhint("Drop trigger \"%s\"; read new lines by settle.bill_line.ingested_at instead.",
						 t->tgname)));
	}
	for (k = 0; k < C__COUNT; k++)
		att[k] = settle_attnum(rel, col_names[k]) - 1;
	for (k = 0; k < desc->natts; k++)
		if (!TupleDescAttr(desc, k)->attisdropped)
		{
			int			c;

			for (c = 0; c < C__COUNT && att[c] != k; c++)
				;
			if (c == C__COUNT)
				elog(ERROR, "settle.bill_line column \"%s\" is not written by ingestion",
					 NameStr(TupleDescAttr(desc, k)->attname));
		}
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);

	for (i = 0, j = 0; i < nlines; i++)
	{
		NormLine   *l = &lines[i];
		bool		mapped = map[i] && map[i]->mapped;
		bytea	   *h;
		int			a;

		if (!insert[i])
			continue;
		memset(nulls, true, sizeof(bool) * desc->natts);
		for (k = 0; k < C__COUNT; k++)
			nulls[att[k]] = false;
#define V(c) values[att[c]]
#define N(c) nulls[att[c]]
		V(C_RESELLER) = Int64GetDatum(mapped ? map[i]->reseller_id : 0);
		V(C_LINE_KEY) = CStringGetTextDatum(l->line_key);
		V(C_REVISION) = Int32GetDatum(revision[i]);
		V(C_CUSTOMER) = Int64GetDatum(mapped ? map[i]->customer_id : 0);
		N(C_CUSTOMER) = !mapped;
		h = palloc(VARHDRSZ + 32);
		SET_VARSIZE(h, VARHDRSZ + 32);
		memcpy(VARDATA(h), l->hash, 32);
		V(C_CONTENT_HASH) = PointerGetDatum(h);
		V(C_RAW_PAGE) = Int64GetDatum(raw_page_id);
		V(C_CONNECTOR) = Int64GetDatum(st->connector_id);
		put_text(values, nulls, att[C_SOURCE_ITEM], l->source_item ? l->source_item : "");
		put_text(values, nulls, att[C_SOURCE_RECORD], l->source_record_id);
		put_text(values, nulls, att[C_BILLING_ACCOUNT], l->billing_account_id);
		put_text(values, nulls, att[C_SUB_ACCOUNT], l->sub_account_id);
		V(C_PERIOD_START) = period_start;
		V(C_CHARGE_START) = cached_in(&c_start, l->charge_period_start, timestamptz_in, -1);
		V(C_CHARGE_END) = cached_in(&c_end, l->charge_period_end, timestamptz_in, -1);
		put_text(values, nulls, att[C_CATEGORY], l->charge_category);
		put_text(values, nulls, att[C_CLASS], l->charge_class);
		put_text(values, nulls, att[C_PRODUCT], l->product_code);
		put_text(values, nulls, att[C_SERVICE_NAME], l->service_name);
		put_text(values, nulls, att[C_SERVICE_CATEGORY],
				 l->product_code ? product_category(st, l->product_code) : NULL);
		put_text(values, nulls, att[C_SKU], l->sku_id);
		put_text(values, nulls, att[C_REGION], l->region_id);
		put_text(values, nulls, att[C_RESOURCE], l->resource_id);
		if (l->currency)
			V(C_CURRENCY) = cached_in(&c_currency, l->currency, bpcharin,
									  TupleDescAttr(desc, att[C_CURRENCY])->atttypmod);
		else
			N(C_CURRENCY) = true;
		for (a = 0; a < AMT__COUNT; a++)
		{
			int			c = C_LIST_COST + a;

			if (!l->amt_null[a])
				V(c) = l->amt[a];
			else if (c == C_DISCOUNT || c == C_COUPON)
				V(c) = DirectFunctionCall1(int4_numeric, Int32GetDatum(0));
			else
				N(c) = true;
		}
		put_text(values, nulls, att[C_ORIGINAL], l->original_line_key);
		V(C_TAGS) = l->tags_json ? cached_in(&c_tags, l->tags_json, jsonb_in, -1) : no_tags;
		if (l->errors != NIL)
		{
			Datum	   *e = palloc(sizeof(Datum) * list_length(l->errors));
			ListCell   *lc;

			foreach(lc, l->errors)
				e[foreach_current_index(lc)] = CStringGetTextDatum((char *) lfirst(lc));
			V(C_ERRORS) = PointerGetDatum(construct_array(e, list_length(l->errors), TEXTOID,
														  -1, false, TYPALIGN_INT));
		}
		else
			V(C_ERRORS) = no_errors;
		V(C_INGESTED_AT) = now;
		N(C_WITHDRAWAL) = true;
#undef V
#undef N
		slots[j] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);
		ExecStoreHeapTuple(heap_form_tuple(desc, values, nulls), slots[j], false);
		ExecConstraints(rri, slots[j], estate);
		j++;
	}
	table_multi_insert(rel, slots, ninsert, cid, 0, NULL);
	for (j = 0; j < ninsert; j++)
	{
		List	   *recheck = ExecInsertIndexTuples(rri, slots[j], estate, false, false, NULL, NIL);

		Assert(recheck == NIL);
		(void) recheck;
		ExecDropSingleTupleTableSlot(slots[j]);
	}
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, RowExclusiveLock);
	CommandCounterIncrement();
}

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

/* ---------------------------------------------------------------------
 * Line identity within a pass: slots of a natural key
 * --------------------------------------------------------------------- */

typedef struct SlotInfo
{
	int32		revision;		/* latest stored revision, 0: not stored yet */
	bool		claimed;		/* an item of this pass is this slot */
	uint8		hash[32];		/* content hash of that revision */
} SlotInfo;

typedef struct SlotGroup
{
	uint8		digest[32];		/* hash key: SHA-256 of the natural key */
	char	   *natural;		/* the natural key (shortened when long) */
	int			nslots;
	int			maxslots;
	SlotInfo   *slots;
	bool		complete;		/* every stored slot is known */
	bool		probing;
} SlotGroup;

IngestPass *
ingest_pass_create(MemoryContext parent)
{
	MemoryContext cxt = AllocSetContextCreate(parent, "settle ingest pass", ALLOCSET_DEFAULT_SIZES);
	IngestPass *pass = MemoryContextAllocZero(cxt, sizeof(IngestPass));
	HASHCTL		ctl;

	pass->cxt = cxt;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 32;
	ctl.entrysize = sizeof(SlotGroup);
	ctl.hcxt = cxt;
	pass->groups = hash_create("settle ingest slots", 1024, &ctl,
							   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	return pass;
}

/* The stored key of a group's slot (0-based): the natural key, then "#2", ... */
static char *
slot_key(SlotGroup *g, int idx)
{
	return idx == 0 ? g->natural : psprintf("%s#%d", g->natural, idx + 1);
}

static SlotInfo *
slot_append(IngestPass *pass, SlotGroup *g)
{
	if (g->nslots >= g->maxslots)
	{
		g->maxslots = g->maxslots ? g->maxslots * 2 : 2;
		g->slots = g->slots ? repalloc(g->slots, sizeof(SlotInfo) * g->maxslots)
			: MemoryContextAlloc(pass->cxt, sizeof(SlotInfo) * g->maxslots);
	}
	memset(&g->slots[g->nslots], 0, sizeof(SlotInfo));
	return &g->slots[g->nslots++];
}

/*
 * Natural keys as the lines carry them become their digest when too long to
 * be stored keys with a slot suffix (as any over-long key does).
 */
static void
shorten_key(char **key)
{
	if (*key && strlen(*key) >= KEYLEN - 16)
	{
		char		hex[65];

		acs3_sha256_hex(*key, strlen(*key), hex);
		*key = psprintf("sha256:%s", hex);
	}
}

/*
 * How many leading items of this page repeat the whole previous page, item
 * for item (a provider that served a page twice): those are the same items
 * again, not new ones.  Pages of one item never count as repeated (two
 * identical items in a row are two items).  Records this page for the next.
 */
static int
pass_repeated_prefix(IngestPass *pass, NormLine *lines, int nlines)
{
	int			skip = 0;
	pg_cryptohash_ctx *ctx;
	uint8		sig[32];
	int			i;

	if (pass->prev_n >= 2 && pass->prev_n <= nlines)
	{
		ctx = pg_cryptohash_create(PG_SHA256);
		if (ctx == NULL || pg_cryptohash_init(ctx) < 0)
			elog(ERROR, "could not initialize SHA-256");
		for (i = 0; i < pass->prev_n; i++)
			if (pg_cryptohash_update(ctx, lines[i].hash, 32) < 0)
				elog(ERROR, "could not compute SHA-256");
		if (pg_cryptohash_final(ctx, sig, sizeof(sig)) < 0)
			elog(ERROR, "could not compute SHA-256");
		pg_cryptohash_free(ctx);
		if (memcmp(sig, pass->prev_sig, 32) == 0)
			skip = pass->prev_n;
	}
	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx == NULL || pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialize SHA-256");
	for (i = 0; i < nlines; i++)
		if (pg_cryptohash_update(ctx, lines[i].hash, 32) < 0)
			elog(ERROR, "could not compute SHA-256");
	if (pg_cryptohash_final(ctx, pass->prev_sig, sizeof(pass->prev_sig)) < 0)
		elog(ERROR, "could not compute SHA-256");
	pg_cryptohash_free(ctx);
	pass->prev_n = nlines;
	return skip;
}

/*
 * Gives every line of a page its stored key (a slot of its natural key) and
 * decides new / revised / unchanged.  Unchanged first: an item takes an
 * unclaimed slot whose latest stored content it equals; then, once every
 * stored slot of its natural key is known (read slot by slot, one index
 * probe each), a changed item takes the first unclaimed slot (a revision)
 * and a new item a new slot.  In replay (a resumed pass re-reading its
 * stored pages) nothing is counted or written: the slots are only claimed.
 */
static void
assign_slots(IngestState *st, NormLine *lines, int nlines, int32 *revision, bool *insert,
			 int *ninsert, bool replay)
{
	IngestPass *pass = st->pass;
	SlotGroup **grp = palloc(sizeof(SlotGroup *) * nlines);
	bool	   *done = palloc0(sizeof(bool) * nlines);
	char	  **want = palloc(sizeof(char *) * nlines);
	int			left = nlines;
	int			i;

	for (i = 0; i < nlines; i++)
	{
		uint8		digest[32];
		bool		found;
		SlotGroup  *g;

		shorten_key(&lines[i].line_key);
		acs3_sha256(lines[i].line_key, strlen(lines[i].line_key), digest);
		g = hash_search(pass->groups, digest, HASH_ENTER, &found);
		if (!found)
		{
			g->natural = MemoryContextStrdup(pass->cxt, lines[i].line_key);
			g->nslots = g->maxslots = 0;
			g->slots = NULL;
			g->complete = g->probing = false;
		}
		grp[i] = g;
	}

	while (left > 0)
	{
		HASHCTL		ctl;
		HTAB	   *keys;
		int			nwant = 0;

		/* unchanged: an unclaimed slot holding the same content */
		for (i = 0; i < nlines; i++)
		{
			SlotGroup  *g = grp[i];
			int			k;

			if (done[i])
				continue;
			for (k = 0; k < g->nslots; k++)
				if (!g->slots[k].claimed && g->slots[k].revision > 0 &&
					memcmp(g->slots[k].hash, lines[i].hash, 32) == 0)
					break;
			if (k == g->nslots)
				continue;
			g->slots[k].claimed = true;
			lines[i].line_key = slot_key(g, k);
			revision[i] = g->slots[k].revision;
			done[i] = true;
			left--;
			if (!replay)
				st->lines_unchanged++;
		}
		/* changed or new, where every stored slot is known */
		for (i = 0; i < nlines; i++)
		{
			SlotGroup  *g = grp[i];
			SlotInfo   *slot = NULL;
			int			k;

			if (done[i] || !g->complete)
				continue;
			for (k = 0; k < g->nslots; k++)
				if (!g->slots[k].claimed)
				{
					slot = &g->slots[k];
					break;
				}
			if (slot == NULL)
				slot = slot_append(pass, g);
			slot->claimed = true;
			lines[i].line_key = slot_key(g, k);
			if (!replay)
			{
				if (slot->revision > 0)
					st->lines_revised++;
				else
					st->lines_new++;
				insert[i] = true;
				(*ninsert)++;
			}
			slot->revision++;
			memcpy(slot->hash, lines[i].hash, 32);
			revision[i] = slot->revision;
			done[i] = true;
			left--;
		}
		if (left == 0)
			break;

		/* read the next stored slot of every natural key still open */
		for (i = 0; i < nlines; i++)
			if (!done[i] && !grp[i]->complete && !grp[i]->probing)
			{
				grp[i]->probing = true;
				want[nwant++] = slot_key(grp[i], grp[i]->nslots);
			}
		Assert(nwant > 0);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = KEYLEN;
		ctl.entrysize = sizeof(KeyEntry);
		ctl.hcxt = CurrentMemoryContext;
		keys = hash_create("settle ingest slot probe", nwant * 2, &ctl,
						   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		read_latest_revisions(keys, want, nwant);
		for (i = 0; i < nlines; i++)
		{
			SlotGroup  *g = grp[i];
			KeyEntry   *e;

			if (done[i] || !g->probing)
				continue;
			g->probing = false;
			e = hash_search(keys, slot_key(g, g->nslots), HASH_FIND, NULL);
			if (e && e->revision > 0)
			{
				SlotInfo   *slot = slot_append(pass, g);

				slot->revision = e->revision;
				memcpy(slot->hash, e->hash, 32);
			}
			else
				g->complete = true;
		}
		hash_destroy(keys);
	}
}

/* A resumed pass re-reads a stored page: its items claim their slots again. */
void
ingest_replay_lines(IngestState *st, NormLine *lines, int nlines)
{
	int32	   *revision;
	bool	   *insert;
	int			ninsert = 0;
	int			skip;

	if (nlines == 0)
		return;
	skip = pass_repeated_prefix(st->pass, lines, nlines);
	revision = palloc0(sizeof(int32) * nlines);
	insert = palloc0(sizeof(bool) * nlines);
	assign_slots(st, lines + skip, nlines - skip, revision, insert, &ninsert, true);
}

/*
 * Whether an item of the pass took this stored line (a key as stored:
 * "<natural key>" or "<natural key>#n").
 */
bool
ingest_pass_claimed(IngestPass *pass, const char *line_key)
{
	const char *hash = strrchr(line_key, '#');
	uint8		digest[32];
	SlotGroup  *g;
	int			idx = 0;

	if (hash && hash[1] >= '1' && hash[1] <= '9' && strspn(hash + 1, "0123456789") == strlen(hash + 1))
	{
		acs3_sha256(line_key, hash - line_key, digest);
		g = hash_search(pass->groups, digest, HASH_FIND, NULL);
		if (g)
		{
			idx = atoi(hash + 1) - 1;
			return idx >= 0 && idx < g->nslots && g->slots[idx].claimed;
		}
	}
	acs3_sha256(line_key, strlen(line_key), digest);
	g = hash_search(pass->groups, digest, HASH_FIND, NULL);
	return g != NULL && g->nslots > 0 && g->slots[0].claimed;
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
	char	  **want;
	int			nwant = 0;
	int			i;
	int32	   *revision;
	bool	   *insert;
	MapEntry  **map;
	int			ninsert = 0;
	Datum		tolerance;
	PageExceptions pe = {NULL, 0, 0};

	if (nlines == 0)
		return;
	load_catalogue(st);
	resolve_products(st, lines, nlines);
	st->lines_seen += nlines;

	/*
	 * The writers' locks (see the lock order above), before anything stored
	 * is read: a BSS page of a pull worker (one page, one transaction) locks
	 * the groups of its natural keys, every other writer all bill lines.
	 */
	if (st->group_locks && st->pass)
	{
		char	  **natural = palloc(sizeof(char *) * (nlines + st->nlock_also));

		for (i = 0; i < nlines; i++)
		{
			shorten_key(&lines[i].line_key);
			natural[i] = lines[i].line_key;
		}
		for (i = 0; i < st->nlock_also; i++)
			natural[nlines + i] = st->lock_also[i];
		ingest_lock_lines(natural, nlines + st->nlock_also, false);
	}
	else
		ingest_lock_lines(NULL, 0, true);

	revision = palloc0(sizeof(int32) * nlines);
	insert = palloc0(sizeof(bool) * nlines);
	map = palloc0(sizeof(MapEntry *) * nlines);
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = KEYLEN;
	ctl.entrysize = sizeof(KeyEntry);
	ctl.hcxt = CurrentMemoryContext;
	keys = hash_create("settle ingest keys", nlines * 2, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	want = palloc(sizeof(char *) * nlines * 2);

	if (st->pass)
	{
		/* BSS: identity by slots of the natural key across the pass */
		int			skip = pass_repeated_prefix(st->pass, lines, nlines);

		st->lines_unchanged += skip;
		lines += skip;
		nlines -= skip;
		if (nlines == 0)
			return;
		assign_slots(st, lines, nlines, revision, insert, &ninsert, false);
		for (i = 0; i < nlines; i++)
		{
			KeyEntry   *e = hash_search(keys, lines[i].line_key, HASH_ENTER, NULL);

			e->revision = revision[i];
			shorten_key(&lines[i].original_line_key);
			if (lines[i].original_line_key)
				want[nwant++] = lines[i].original_line_key;
		}
		/* the refunds' orders: stored before, or on this page */
		read_latest_revisions(keys, want, nwant);
	}
	else
	{
		/* Latest stored revision of every key on the page (and refund originals). */
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
		for (i = 0; i < nlines; i++)
		{
			want[nwant++] = lines[i].line_key;
			if (lines[i].original_line_key)
				want[nwant++] = lines[i].original_line_key;
		}
		read_latest_revisions(keys, want, nwant);

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
		if (l->product_code && product_category(st, l->product_code) == NULL &&
			!(l->product_by_name && has_error(l, "unmapped_product:")))
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
			KeyEntry   *orig = hash_search(keys, l->original_line_key, HASH_FIND, NULL);

			/* stored before, or on this page */
			if (orig == NULL || orig->revision == 0)
				ingest_line_error(l, "unlinked_refund");
		}
	}

	write_lines(st, raw_page_id, billing_period_start, lines, nlines, insert, revision, map, ninsert);

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

				if (first_in_run(st, scope))
				{
					StringInfoData refs;

					initStringInfo(&refs);
					appendStringInfoString(&refs, "{\"account_id\": ");
					escape_json(&refs, l->map_account);
					appendStringInfo(&refs, ", \"ingest_run_id\": " INT64_FORMAT ", \"first_line_key\": ",
									 st->run_id);
					escape_json(&refs, l->line_key);
					appendStringInfoChar(&refs, '}');
					page_exception(&pe, 0, "unmapped_customer", scope, period, refs.data,
								   "{\"reason\": \"no settle.customer_account maps this account on the line date\"}");
				}
			}
			else if (strncmp(e, "unmapped_product:", 17) == 0)
			{
				/* one exception per name, whatever the reseller or month */
				const char *field = l->service_name ? "ServiceName" : "SkuId";
				char	   *scope = psprintf("product:%s:%s", field, e + 17);

				if (first_in_run(st, scope))
				{
					StringInfoData refs;

					initStringInfo(&refs);
					appendStringInfo(&refs, "{\"source_field\": \"%s\", \"source_value\": ", field);
					escape_json(&refs, e + 17);
					appendStringInfo(&refs, ", \"ingest_run_id\": " INT64_FORMAT ", \"first_line_key\": ",
									 st->run_id);
					escape_json(&refs, l->line_key);
					appendStringInfoChar(&refs, '}');
					page_exception(&pe, 0, "unmapped_product", scope, period, refs.data,
								   "{\"reason\": \"no settle.product_mapping maps this SkuId or ServiceName to a product\"}");
				}
			}
			else if (strcmp(e, "unlinked_refund") == 0)
				unlinked = true;
			else
				validation = true;
		}
		if (validation)
			page_exception(&pe, reseller, "validation", psprintf("bill_line:%s", l->line_key),
						   period, json_refs(st, l, revision[i], raw_page_id), json_errors(l));
		if (unlinked)
			page_exception(&pe, reseller, "unlinked_refund", psprintf("bill_line:%s", l->line_key),
						   period, json_refs(st, l, revision[i], raw_page_id),
						   json_errors(l));
	}
	if (st->group_locks && pe.n > 1)
		qsort(pe.e, pe.n, sizeof(PageException), cmp_page_exception);
	for (i = 0; i < pe.n; i++)
		open_exception(st, pe.e[i].reseller_id, pe.e[i].kind, pe.e[i].scope_key, pe.e[i].period,
					   pe.e[i].refs, pe.e[i].payload);
}
