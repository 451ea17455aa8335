/*
 * settle_run.c — the bulk settlement of one reseller's period.
 *
 * settle._settle_reseller() is the engine behind settle.settle_period(): it
 * reads the period's bill line revisions once, in line-key order, evaluates
 * every line with the compiled rule version in force on its date (rule.h),
 * applies per-period tiers, caps and floors, reverses refunds at the rate
 * their original earned, adds corrections for late revisions of locked
 * periods, rounds the statement total in the currency's minor unit and mode,
 * allocates the residual units to lines by largest remainder, and — unless
 * the inputs are unchanged since the last run — writes the lineage rows.
 *
 * Determinism: every input is read in a fixed order (line keys in "C"
 * collation) and every input that can change the result is fed, in that
 * order, into the input fingerprint; every output into the output
 * fingerprint.  The same inputs give byte-identical lineage.
 *
 * Memory: one reseller's period is held at a time, about 150 bytes a line.
 *
 * Verification: in verify mode the same code reads exactly the bill line
 * revisions, rule versions and FX rates a recorded run used, and returns the
 * output fingerprint it would have written; settle.verify_run compares.
 */
#include "postgres.h"

#include "access/brin.h"
#include "access/brin_internal.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/itup.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/stratnum.h"
#include "catalog/pg_am.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/pg_bswap.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgroids.h"
#include "utils/array.h"
#include "utils/snapmgr.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "common/hashfn.h"

#include "numeric_fast.h"
#include "progress.h"
#include "rule_pg.h"
#include "settle.h"

PG_FUNCTION_INFO_V1(settle_settle_reseller);
PG_FUNCTION_INFO_V1(settle_summarize_lineage);

/* kinds of settlement lines */
#define KIND_CHARGE		'c'			/* a bill line's commission */
#define KIND_REFUND		'r'			/* a refund's reversal */
#define KIND_CORRECTION 'x'			/* late revision of a locked period */
#define KIND_FLOOR		'f'			/* period floor top-up */
#define KIND_ADJUSTMENT 'a'			/* approved manual adjustment */

/* a refund's list cost that cannot be held, as take_row keeps it */
#define LIST_UNHELD (-((money128) 1 << 120))

#define FX_SCALE 8					/* converted amounts are carried to 10^-8 */

/* one interned attribute string */
typedef struct Str
{
	const char *s;
	uint32		len;
} Str;

typedef struct Customer
{
	int64		customer_id;
	Str			segment;
	int			ntags;
	RuleTag    *tags;
	money128	spend;			/* period total of the tier measure */
	money128	spend_before;	/* running, for graduated tiers */
	money128	commission;		/* running, for per-customer caps */
} Customer;

typedef struct Version
{
	int64		agreement_id;	/* set for Run.older only */
	int32		version;
	DateADT		from,
				to;				/* [from, to) */
	const Rule *rule;
	uint8		content_hash[PG_SHA256_DIGEST_LENGTH];
} Version;

typedef struct Fx
{
	char		currency[4];	/* billing currency */
	int64		fx_rate_id;
	money128	rate;			/* 1 billing unit in settlement units, 10^-16 */
} Fx;

typedef struct Line
{
	uint32		key;			/* arena offset of line_key */
	uint32		ref;			/* arena offset of the reference (0: none) */
	uint32		orig;			/* refunds: arena offset of the original key */
	int32		revision;
	int32		cust;			/* index into customers, -1 unknown */
	uint32		tagset;			/* index into tagsets; 0: its customer's tags */
	int32		version_no;		/* rule_version.version used (lineage) */
	int16		clause;
	int16		tier;
	int16		version;		/* index into versions, -1 none */
	int8		charge;			/* RuleCharge */
	char		kind;
	bool		prev;			/* a refund dated in the previous period */
	bool		included;		/* part of this run's statement */
	bool		eligible;		/* counts towards the commissionable amount */
	uint8		pay;			/* RulePay of the clause, for refunds */
	const char *product;		/* interned; NULL when absent */
	const char *category;
	const char *sku;
	const char *region;
	DateADT		date;			/* the date that places it in a period */
	int32		active_days;	/* within its month */
	int64		fx_rate_id;
	int64		rate;			/* fraction x 10^8; -1: none */
	money128	billed;			/* settlement currency */
	money128	basis;			/* settlement currency, rule's basis */
	money128	unrounded;
	money128	rounded;
} Line;

/* the tags a rule sees for a line: its own, then its customer's other keys */
typedef struct TagSet
{
	int			ntags;
	RuleTag    *tags;
} TagSet;

typedef struct Problem
{
	const char *kind;
	char	   *scope_key;
	char	   *detail;
} Problem;

typedef struct Run
{
	MemoryContext mcxt;
	int64		reseller_id;
	int64		run_id;
	int64		verify_run;		/* 0: settle mode */
	char		period[8];
	DateADT		start,
				end,			/* [start, end) */
				prev_start,
				last_day;
	int64		agreement_id;
	char		currency[4];
	int			minor_unit;
	MoneyRounding rounding;
	bool		invoice_basis;
	int32		refund_window;
	money128	min_payout;
	money128	carry_in;

	Version    *versions;
	int			nversions;
	Version    *older;			/* refunded originals' versions not in versions */
	int			nolder;
	Fx		   *fx;
	int			nfx;
	Customer   *customers;
	int			ncustomers;
	HTAB	   *strings;
	HTAB	   *products;		/* product code -> category */
	const char *last_product;	/* the last line's interned values */
	const char *last_sku;
	const char *last_region;
	const char *last_category_of;
	const char *last_category;

	char	   *arena;
	uint32		arena_len,
				arena_cap;
	Line	   *lines;
	uint32		nlines,
				cap_lines;
	Problem    *problems;
	int			nproblems,
				cap_problems,
				row_problems;	/* nproblems before the last line read */
	HTAB	   *problems_seen;	/* kind and scope of each problem */
	money128	reseller_spend,
				reseller_volume,
				reseller_spend_before,
				reseller_commission;
	bool		uses_tags;		/* a rule version has a tag condition */
	TagSet	   *tagsets;		/* [0] unused: a line without tags of its own */
	uint32		ntagsets,
				cap_tagsets;
	char	   *last_tags;		/* the last line's tags (jsonb bytes) ... */
	Size		last_tags_len;
	int32		last_tags_cust; /* ... and customer, and their tag set */
	uint32		last_tagset;
	uint32	   *order;			/* included lines by (line_key, kind) */
	uint32		norder;

	struct Fingerprint *in_fp;
	struct Fingerprint *out_fp;
} Run;

/* A heap position and the rank of its index entry in key order. */
typedef struct TidRank
{
	uint64		tid;			/* block << 16 | offset: orders like the heap */
	uint32		rank;
} TidRank;

#define READ_CHUNK 65536

/*
 * The big buffers of a run (its lines, its arena, the read batch) are kept
 * from one reseller to the next for the rest of the transaction.
 * settle_period settles resellers one after another, and allocating tens of
 * megabytes afresh for each costs page faults worth a tenth of an evaluation.
 * They live in a child of TopTransactionContext, so they go with the
 * transaction (a callback forgets them); their peak is the largest
 * reseller's, as before.  The engine is not re-entrant: nothing it calls
 * settles.
 */
static struct
{
	MemoryContext cxt;
	Line	   *lines;
	uint32		cap_lines;
	char	   *arena;
	uint32		arena_cap;
	TidRank    *tids;			/* READ_CHUNK index entries */
	uint32	   *tuple_at;		/* READ_CHUNK offsets into batch, by rank */
	char	   *batch;			/* copies of a chunk's heap tuples */
	Size		batch_cap;
} reuse;

static void
reuse_forget(void *arg)
{
	memset(&reuse, 0, sizeof(reuse));
}

static void
reuse_begin(Run *run)
{
	if (reuse.cxt == NULL)
	{
		static MemoryContextCallback forget = {reuse_forget, NULL, NULL};

		reuse.cxt = AllocSetContextCreate(TopTransactionContext, "settle reused buffers",
										  ALLOCSET_DEFAULT_SIZES);
		MemoryContextRegisterResetCallback(reuse.cxt, &forget);
		reuse.cap_lines = 1024;
		reuse.lines = MemoryContextAllocHuge(reuse.cxt, sizeof(Line) * reuse.cap_lines);
		reuse.arena_cap = 1 << 16;
		reuse.arena = MemoryContextAllocHuge(reuse.cxt, reuse.arena_cap);
		reuse.tids = MemoryContextAlloc(reuse.cxt, sizeof(TidRank) * READ_CHUNK);
		reuse.tuple_at = MemoryContextAlloc(reuse.cxt, sizeof(uint32) * READ_CHUNK);
		reuse.batch_cap = 1 << 20;
		reuse.batch = MemoryContextAllocHuge(reuse.cxt, reuse.batch_cap);
	}
	run->lines = reuse.lines;
	run->cap_lines = reuse.cap_lines;
	run->arena = reuse.arena;
	run->arena_cap = reuse.arena_cap;
}

typedef struct StrEntry
{
	char		key[NAMEDATALEN * 2];
	const char *interned;
} StrEntry;

typedef struct ProductEntry
{
	char		key[NAMEDATALEN * 2];
	const char *category;
} ProductEntry;

/* ---------- small helpers ---------- */

/*
 * A SHA-256 fingerprint fed through a buffer: lines add a dozen small fields
 * each, and one digest update per 8 kB costs far less than one per field.
 * The bytes hashed are exactly the bytes fed.
 */
typedef struct Fingerprint
{
	pg_cryptohash_ctx *ctx;
	uint32		len;
	uint8		buf[8192];
} Fingerprint;

static void
fp_flush(Fingerprint *fp)
{
	if (fp->len > 0 && pg_cryptohash_update(fp->ctx, fp->buf, fp->len) < 0)
		elog(ERROR, "could not update SHA-256 context");
	fp->len = 0;
}

static void
fp_bytes(Fingerprint *fp, const void *p, size_t len)
{
	if (fp->len + len > sizeof(fp->buf))
	{
		fp_flush(fp);
		if (len > sizeof(fp->buf))
		{
			if (pg_cryptohash_update(fp->ctx, p, len) < 0)
				elog(ERROR, "could not update SHA-256 context");
			return;
		}
	}
	memcpy(fp->buf + fp->len, p, len);
	fp->len += len;
}

static void
fp_str(Fingerprint *fp, const char *s)
{
	uint32		len = s ? (uint32) strlen(s) : 0xFFFFFFFF;
	uint32		be = pg_hton32(len);

	fp_bytes(fp, &be, 4);
	if (s)
		fp_bytes(fp, s, len);
}

static void
fp_int(Fingerprint *fp, int64 v)
{
	uint64		be = pg_hton64((uint64) v);

	fp_bytes(fp, &be, 8);
}

static void
fp_money(Fingerprint *fp, money128 v)
{
	fp_int(fp, (int64) (v >> 64));
	fp_int(fp, (int64) (uint64) v);
}

static Fingerprint *
fp_start(void)
{
	Fingerprint *fp = palloc(sizeof(Fingerprint));

	fp->ctx = pg_cryptohash_create(PG_SHA256);
	fp->len = 0;
	if (pg_cryptohash_init(fp->ctx) < 0)
		elog(ERROR, "could not initialise SHA-256 context");
	/* the semantics that produced a run are part of what it was made from */
	fp_str(fp, "settle engine");
	fp_int(fp, SETTLE_ENGINE_VERSION);
	return fp;
}

static bytea *
fp_finish(Fingerprint *fp)
{
	bytea	   *b = palloc(VARHDRSZ + PG_SHA256_DIGEST_LENGTH);

	fp_flush(fp);
	if (pg_cryptohash_final(fp->ctx, (uint8 *) VARDATA(b), PG_SHA256_DIGEST_LENGTH) < 0)
		elog(ERROR, "could not finalise SHA-256 context");
	SET_VARSIZE(b, VARHDRSZ + PG_SHA256_DIGEST_LENGTH);
	pg_cryptohash_free(fp->ctx);
	pfree(fp);
	return b;
}

static uint32
arena_put(Run *run, const char *s, size_t len)
{
	uint32		off;

	if (run->arena_len + len + 1 > run->arena_cap)
	{
		reuse.arena_cap = run->arena_cap = Max(run->arena_cap * 2, run->arena_len + len + 1 + 65536);
		reuse.arena = run->arena = repalloc_huge(run->arena, run->arena_cap);
	}
	off = run->arena_len;
	memcpy(run->arena + off, s, len);
	run->arena[off + len] = '\0';
	run->arena_len += len + 1;
	return off;
}

#define ARENA(run, off) ((run)->arena + (off))

/* Interns a text datum (trimmed of nothing: ingestion normalises). */
static const char *
intern(Run *run, const char *s, size_t len)
{
	StrEntry   *e;
	bool		found;
	char		key[NAMEDATALEN * 2];

	if (len >= sizeof(key))
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("bill line attribute \"%.40s...\" is longer than %d bytes", s, (int) sizeof(key) - 1)));
	memcpy(key, s, len);
	key[len] = '\0';
	e = hash_search(run->strings, key, HASH_ENTER, &found);
	if (!found)
		e->interned = MemoryContextStrdup(run->mcxt, key);
	return e->interned;
}

/* As intern(), for a text datum; neighbouring lines mostly repeat the last value. */
static const char *
intern_datum(Run *run, Datum d, bool isnull, const char **last)
{
	text	   *t;
	size_t		len;

	if (isnull)
		return NULL;
	t = DatumGetTextPP(d);
	len = VARSIZE_ANY_EXHDR(t);
	if (*last == NULL || strncmp(*last, VARDATA_ANY(t), len) != 0 || (*last)[len] != '\0')
		*last = intern(run, VARDATA_ANY(t), len);
	return *last;
}

/* A column as an interned string, NULL when null. */
static const char *
intern_col(Run *run, HeapTuple t, TupleDesc d, int col)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);
	const char *last = NULL;

	return intern_datum(run, v, isnull, &last);
}

static money128 datum_money(Datum d, bool isnull, const char *what);
static bool amount_ok(Datum d, money128 *out);

/*
 * A recorded lineage amount, as settle_period wrote it: an unrounded
 * commission (basis x rate, a prorated amount) may have up to 16 decimal
 * places, where an input amount has at most 8.  False when it is null or
 * cannot be held (it was not written by the engine).
 */
static bool
lineage_money(HeapTuple t, TupleDesc d, int col, money128 *out)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);

	*out = 0;
	return !isnull && numeric_to_money128(v, out);
}

/* A numeric column as money (0 when null). */
static money128
money_col(HeapTuple t, TupleDesc d, int col, const char *what)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);

	return datum_money(v, isnull, what);
}

/*
 * The problem table's key: a problem's kind and scope, compared as strings.
 * Entries point at the strings the problem itself holds.
 */
typedef struct ProblemKey
{
	const char *kind;
	const char *scope_key;
} ProblemKey;

static uint32
problem_hash(const void *key, Size keysize)
{
	const ProblemKey *k = key;

	return hash_combine(string_hash(k->kind, NAMEDATALEN),
						hash_bytes((const unsigned char *) k->scope_key, strlen(k->scope_key)));
}

static int
problem_match(const void *a, const void *b, Size keysize)
{
	const ProblemKey *x = a,
			   *y = b;

	return strcmp(x->kind, y->kind) != 0 || strcmp(x->scope_key, y->scope_key) != 0;
}

/*
 * Records a problem once per kind and scope (a hash table finds repeats, so
 * a period with many failing lines stays linear).
 */
static void
add_problem(Run *run, const char *kind, const char *scope_key, const char *detail)
{
	ProblemKey	key = {kind, scope_key};
	ProblemKey *entry;
	Problem    *p;
	bool		found;
	MemoryContext old;

	if (run->problems_seen == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(ProblemKey);
		ctl.entrysize = sizeof(ProblemKey);
		ctl.hash = problem_hash;
		ctl.match = problem_match;
		ctl.hcxt = run->mcxt;
		run->problems_seen = hash_create("settle problems", 64, &ctl,
										 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	entry = hash_search(run->problems_seen, &key, HASH_ENTER, &found);
	if (found)
		return;
	old = MemoryContextSwitchTo(run->mcxt);
	if (run->nproblems == run->cap_problems)
	{
		run->cap_problems = Max(16, run->cap_problems * 2);
		run->problems = run->problems ?
			repalloc(run->problems, run->cap_problems * sizeof(Problem)) :
			palloc(run->cap_problems * sizeof(Problem));
	}
	p = &run->problems[run->nproblems++];
	p->kind = kind;
	p->scope_key = pstrdup(scope_key);
	p->detail = pstrdup(detail);
	entry->kind = p->kind;
	entry->scope_key = p->scope_key;
	MemoryContextSwitchTo(old);
}

/* Drops the problems recorded since the first n. */
static void
forget_problems(Run *run, int n)
{
	for (; run->nproblems > n; run->nproblems--)
	{
		Problem    *p = &run->problems[run->nproblems - 1];
		ProblemKey	key = {p->kind, p->scope_key};

		hash_search(run->problems_seen, &key, HASH_REMOVE, NULL);
	}
}

static money128
datum_money(Datum d, bool isnull, const char *what)
{
	money128	v = 0;

	if (isnull)
		return 0;
	if (!numeric_to_money128(d, &v) || v % ((money128) 100000000) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s %s cannot be held exactly", what,
						DatumGetCString(DirectFunctionCall1(numeric_out, d))),
				 errdetail("Amounts are settled exactly with at most %d decimal places and below 10^14.",
						   MONEY_INPUT_SCALE)));
	return v;
}

/*
 * A bill amount (billed, list or paid cost): up to 16 decimal places and
 * below 10^14 in magnitude.  False when it cannot be held exactly.
 */
static bool
amount_ok(Datum d, money128 *out)
{
	return numeric_to_money128(d, out) && *out < MONEY_MAX_RAW && *out > -MONEY_MAX_RAW;
}

/* A bill amount as money; an error when it cannot be held exactly. */
static money128
datum_amount(Datum d, const char *what)
{
	money128	v = 0;

	if (!amount_ok(d, &v))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s %s cannot be held exactly", what,
						DatumGetCString(DirectFunctionCall1(numeric_out, d))),
				 errdetail("Bill amounts are settled exactly with at most %d decimal places and below 10^14.",
						   MONEY_SCALE)));
	return v;
}

/*
 * x * rate (both 10^-16 units; the rate has at most 8 decimal places),
 * rounded half-even to 10^-FX_SCALE.  x may have 16 decimal places: it is
 * split at 10^-8 so that every partial product stays exact in int128.
 */
static money128
fx_convert(money128 amount, money128 rate)
{
	money128	unit = (money128) 100000000;	/* 10^8 */
	bool		neg = amount < 0;
	money128	a = neg ? -amount : amount;
	money128	hi = a / unit;	/* 10^-8 units */
	money128	lo = a % unit;	/* 10^-16 units, below 10^-8 */
	money128	r = rate / unit;	/* exact: 10^-8 units */
	money128	low = lo * r;	/* 10^-24 units */
	money128	p = hi * r + low / unit;	/* 10^-16 units, truncated */
	money128	rest = low % unit;	/* the 10^-24 digits dropped from p */
	money128	q = p / unit;	/* 10^-8 units */
	money128	frac = p % unit;	/* 10^-16 units below q */
	money128	half = unit / 2;

	/* round to 10^-8, half-even, with the dropped digits as tie-breaker */
	if (frac > half || (frac == half && (rest > 0 || (q & 1) != 0)))
		q++;
	q *= unit;
	return neg ? -q : q;
}

/* ---------- loading the context ---------- */

static void
load_agreement(Run *run)
{
	Datum		args[2];
	Oid			types[2] = {INT8OID, DATEOID};
	bool		isnull;
	HeapTuple	t;
	TupleDesc	d;
	char	   *s;

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = DateADTGetDatum(run->start);
	if (SPI_execute_with_args("SELECT a.agreement_id, a.settlement_currency, c.minor_unit, a.rounding_mode, "
							  "a.date_basis, a.refund_window_days, a.minimum_payout "
							  "FROM settle.agreement a JOIN settle.currency c ON c.currency_code = a.settlement_currency "
							  "WHERE a.reseller_id = $1 AND a.effective_from <= $2 AND $2 < a.effective_to",
							  2, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the agreement");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("reseller %lld has no agreement in force on %s",
						(long long) run->reseller_id,
						DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(run->start))))));
	t = SPI_tuptable->vals[0];
	d = SPI_tuptable->tupdesc;
	run->agreement_id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
	strlcpy(run->currency, SPI_getvalue(t, d, 2), sizeof(run->currency));
	run->minor_unit = DatumGetInt16(SPI_getbinval(t, d, 3, &isnull));
	s = SPI_getvalue(t, d, 4);
	run->rounding = strcmp(s, "half_up") == 0 ? MONEY_ROUND_HALF_UP :
		strcmp(s, "down") == 0 ? MONEY_ROUND_DOWN : MONEY_ROUND_HALF_EVEN;
	run->invoice_basis = strcmp(SPI_getvalue(t, d, 5), "invoice_period") == 0;
	run->refund_window = DatumGetInt32(SPI_getbinval(t, d, 6, &isnull));
	run->min_payout = money_col(t, d, 7, "minimum payout");

	fp_str(run->in_fp, "agreement");
	fp_int(run->in_fp, run->agreement_id);
	fp_str(run->in_fp, run->currency);
	fp_int(run->in_fp, run->minor_unit);
	fp_int(run->in_fp, run->rounding);
	fp_int(run->in_fp, run->invoice_basis);
	fp_int(run->in_fp, run->refund_window);
	fp_money(run->in_fp, run->min_payout);
	fp_money(run->in_fp, run->carry_in);
}

static void
load_versions(Run *run)
{
	Datum		args[5];
	Oid			types[5] = {INT8OID, INT8OID, DATEOID, DATEOID, INT8OID};
	uint64		i;

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = Int64GetDatum(run->agreement_id);
	args[2] = DateADTGetDatum(run->prev_start);
	args[3] = DateADTGetDatum(run->end);
	/*
	 * Verify mode: the versions the recorded run could use, i.e. those
	 * published by the time it was made.  Not only those its lines record: a
	 * refund needs a version in force on its own date (its lineage records
	 * its original's, whose basis setting values it), and the floors are the
	 * last version's.  Versions are immutable and never overlap, so a version
	 * published later can only cover dates that had none.
	 */
	args[4] = Int64GetDatum(run->verify_run);
	if (SPI_execute_with_args("SELECT version, effective_from, effective_to, rule, content_hash "
							  "FROM settle.rule_version v WHERE v.reseller_id = $1 AND v.agreement_id = $2 "
							  "AND v.effective_from < $4 AND v.effective_to > $3 AND ($5 = 0 OR v.published_at <= "
							  "(SELECT r.created_at FROM settle.run r WHERE r.reseller_id = $1 AND r.run_id = $5)) "
							  "ORDER BY v.effective_from",
							  5, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read rule versions");
	run->nversions = (int) SPI_processed;
	run->versions = MemoryContextAllocZero(run->mcxt, sizeof(Version) * Max(1, run->nversions));
	fp_str(run->in_fp, "versions");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Version    *v = &run->versions[i];
		bytea	   *h;
		int			c;

		v->version = DatumGetInt32(SPI_getbinval(t, d, 1, &isnull));
		v->from = DatumGetDateADT(SPI_getbinval(t, d, 2, &isnull));
		v->to = DatumGetDateADT(SPI_getbinval(t, d, 3, &isnull));
		v->rule = settle_rule_compile(SPI_getbinval(t, d, 4, &isnull), run->mcxt);
		h = DatumGetByteaPP(SPI_getbinval(t, d, 5, &isnull));
		memcpy(v->content_hash, VARDATA_ANY(h), PG_SHA256_DIGEST_LENGTH);
		for (c = 0; c < (int) v->rule->nclauses; c++)
		{
			int			k;

			for (k = 0; k < (int) v->rule->clauses[c].ncond; k++)
				if (v->rule->clauses[c].conds[k].dim == RULE_DIM_TAG)
					run->uses_tags = true;
		}
		fp_int(run->in_fp, v->version);
		fp_int(run->in_fp, v->from);
		fp_int(run->in_fp, v->to);
		fp_bytes(run->in_fp, v->content_hash, PG_SHA256_DIGEST_LENGTH);
	}
}

static void
load_fx(Run *run)
{
	Datum		args[4];
	Oid			types[4] = {TEXTOID, DATEOID, INT8OID, INT8OID};
	uint64		i;

	args[0] = CStringGetTextDatum(run->currency);
	args[1] = DateADTGetDatum(run->last_day);
	/* verify mode: the rates the recorded run used, and no others */
	args[2] = Int64GetDatum(run->verify_run);
	args[3] = Int64GetDatum(run->reseller_id);
	if (SPI_execute_with_args("SELECT DISTINCT ON (base_currency) base_currency, fx_rate_id, rate "
							  "FROM settle.fx_rate WHERE quote_currency = $1 AND rate_date = $2 "
							  "AND ($3 = 0 OR fx_rate_id IN (SELECT s.fx_rate_id FROM settle.settlement_line s "
							  "WHERE s.reseller_id = $4 AND s.run_id = $3 AND s.kind IN ('c', 'r'))) "
							  "ORDER BY base_currency, source COLLATE \"C\", version DESC",
							  4, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read FX rates");
	run->nfx = (int) SPI_processed;
	run->fx = MemoryContextAllocZero(run->mcxt, sizeof(Fx) * Max(1, run->nfx));
	fp_str(run->in_fp, "fx");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Fx		   *f = &run->fx[i];

		strlcpy(f->currency, SPI_getvalue(t, d, 1), sizeof(f->currency));
		f->fx_rate_id = DatumGetInt64(SPI_getbinval(t, d, 2, &isnull));
		f->rate = money_col(t, d, 3, "FX rate");
		fp_str(run->in_fp, f->currency);
		fp_int(run->in_fp, f->fx_rate_id);
		fp_money(run->in_fp, f->rate);
	}
}

static void
load_catalogue(Run *run)
{
	HASHCTL		ctl;
	uint64		i;
	Datum		arg = Int64GetDatum(run->reseller_id);
	Oid			type = INT8OID;

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = sizeof(StrEntry);
	ctl.hcxt = run->mcxt;
	run->strings = hash_create("settle run strings", 256, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ctl.entrysize = sizeof(ProductEntry);
	run->products = hash_create("settle run products", 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	if (SPI_execute("SELECT product_code, category FROM settle.product ORDER BY product_code COLLATE \"C\"",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the product catalogue");
	fp_str(run->in_fp, "products");
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *code = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *cat = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		ProductEntry *e;

		if (strlen(code) >= NAMEDATALEN * 2)
			continue;
		e = hash_search(run->products, code, HASH_ENTER, NULL);
		e->category = intern(run, cat, strlen(cat));
		fp_str(run->in_fp, code);
		fp_str(run->in_fp, cat);
	}

	if (SPI_execute_with_args("SELECT customer_id, segment, tags FROM settle.customer "
							  "WHERE reseller_id = $1 ORDER BY customer_id",
							  1, &type, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read customers");
	run->ncustomers = (int) SPI_processed;
	run->customers = MemoryContextAllocZero(run->mcxt, sizeof(Customer) * Max(1, run->ncustomers));
	fp_str(run->in_fp, "customers");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Customer   *c = &run->customers[i];
		Jsonb	   *tags;
		char	   *tagtext;

		c->customer_id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
		c->segment.s = intern_col(run, t, d, 2);
		c->segment.len = c->segment.s ? strlen(c->segment.s) : 0;
		tags = DatumGetJsonbP(SPI_getbinval(t, d, 3, &isnull));
		tagtext = JsonbToCString(NULL, &tags->root, VARSIZE(tags));
		fp_int(run->in_fp, c->customer_id);
		fp_str(run->in_fp, c->segment.s);
		fp_str(run->in_fp, tagtext);
		/* as settle.evaluate_rule reads tags (numbers and booleans as text) */
		if (JB_ROOT_COUNT(tags) > 0 && JB_ROOT_IS_OBJECT(tags))
		{
			MemoryContext old = MemoryContextSwitchTo(run->mcxt);

			c->ntags = settle_jsonb_tags(tags, &c->tags);
			MemoryContextSwitchTo(old);
		}
	}
}

static int
find_customer(Run *run, int64 customer_id)
{
	int			lo = 0,
				hi = run->ncustomers - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;

		if (run->customers[mid].customer_id == customer_id)
			return mid;
		if (run->customers[mid].customer_id < customer_id)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

static int
find_version(Run *run, DateADT date)
{
	int			i;

	for (i = 0; i < run->nversions; i++)
		if (run->versions[i].from <= date && date < run->versions[i].to)
			return i;
	return -1;
}

static const Fx *
find_fx(Run *run, const char *currency)
{
	int			i;

	for (i = 0; i < run->nfx; i++)
		if (strcmp(run->fx[i].currency, currency) == 0)
			return &run->fx[i];
	return NULL;
}

static char *
date_text(DateADT d)
{
	return DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(d)));
}

/* ---------- reading the lines ---------- */

static Line *
new_line(Run *run)
{
	if (run->nlines == run->cap_lines)
	{
		reuse.cap_lines = run->cap_lines = Max(1024, run->cap_lines * 2);
		reuse.lines = run->lines = repalloc_huge(run->lines, sizeof(Line) * (Size) run->cap_lines);
	}
	memset(&run->lines[run->nlines], 0, sizeof(Line));
	return &run->lines[run->nlines++];
}

/* The calendar date of a timestamptz in UTC (the session's TimeZone never moves a line). */
static inline DateADT
utc_date(TimestampTz t)
{
	return (DateADT) (t >= 0 ? t / USECS_PER_DAY : -((-t - 1) / USECS_PER_DAY) - 1);
}

/*
 * The tags a rule sees for a line: the bill line's own tags, then its
 * customer's tags under the keys the line does not have (as
 * customer.tags || bill_line.tags), each read as settle.evaluate_rule reads
 * its tags argument.  Returns an index into run->tagsets, 0 when the line
 * has no tags of its own (the customer's apply as they are).  Neighbouring
 * lines mostly repeat the last line's tags.
 */
static uint32
line_tagset(Run *run, int32 cust, Datum d)
{
	Jsonb	   *jb = DatumGetJsonbP(d);
	Size		len = VARSIZE(jb);
	const Customer *c = cust >= 0 ? &run->customers[cust] : NULL;
	MemoryContext old;
	RuleTag    *own;
	TagSet	   *ts;
	int			n,
				i,
				j;

	if (!JB_ROOT_IS_OBJECT(jb) || JB_ROOT_COUNT(jb) == 0)
		return 0;
	if (run->last_tags != NULL && cust == run->last_tags_cust && len == run->last_tags_len &&
		memcmp(run->last_tags, jb, len) == 0)
		return run->last_tagset;
	old = MemoryContextSwitchTo(run->mcxt);
	if (run->ntagsets == run->cap_tagsets)
	{
		run->cap_tagsets = Max(16, run->cap_tagsets * 2);
		run->tagsets = run->tagsets ?
			repalloc_huge(run->tagsets, sizeof(TagSet) * (Size) run->cap_tagsets) :
			palloc(sizeof(TagSet) * (Size) run->cap_tagsets);
		if (run->ntagsets == 0)
			run->ntagsets = 1;	/* [0]: no tags of its own */
	}
	ts = &run->tagsets[run->ntagsets];
	n = settle_jsonb_tags(jb, &own);
	ts->tags = palloc(sizeof(RuleTag) * (n + (c ? c->ntags : 0)));
	memcpy(ts->tags, own, sizeof(RuleTag) * n);
	ts->ntags = n;
	pfree(own);
	for (i = 0; c != NULL && i < c->ntags; i++)
	{
		for (j = 0; j < n; j++)
			if (ts->tags[j].key.len == c->tags[i].key.len &&
				memcmp(ts->tags[j].key.s, c->tags[i].key.s, ts->tags[j].key.len) == 0)
				break;
		if (j == n)
			ts->tags[ts->ntags++] = c->tags[i];
	}
	if (run->last_tags != NULL)
		pfree(run->last_tags);
	run->last_tags = palloc(len);
	memcpy(run->last_tags, jb, len);
	run->last_tags_len = len;
	run->last_tags_cust = cust;
	run->last_tagset = run->ntagsets++;
	MemoryContextSwitchTo(old);
	return run->last_tagset;
}

/* Columns of one bill line as the engine reads it (take_row's layout). */
enum
{
	R_KEY, R_REVISION, R_CUSTOMER, R_HASH, R_CATEGORY, R_PRODUCT, R_SKU, R_REGION, R_CURRENCY,
	R_LIST, R_BILLED, R_PAID, R_ORIGINAL, R_DATE, R_START, R_END, R_ITEM, R_PREV, R_INVALID,
	R_TAGS, R__COUNT
};

/*
 * Takes one bill line revision into the run (rows arrive by line_key, then
 * revision: a later revision of the same key replaces the earlier one).
 */
static void
take_row(Run *run, const Datum *rowvals, const bool *rownulls)
{
	bool		invalid;
	bool		list_bad;
	bool		isnull;
	text	   *key;
	int			keylen;
	Line	   *l;
	bytea	   *hash;
	text	   *charge;
	char		ccy[4];
	const Fx   *fx = NULL;
	money128	billed,
				list,
				paid;
	Datum		orig;
	bool		orignull;
	DateADT		pstart,
				pend;
	const Rule *rule;
	Version    *ver;

	key = DatumGetTextPP(rowvals[0]);
	keylen = VARSIZE_ANY_EXHDR(key);

	/*
	 * A later revision of the same key replaces the earlier one, with its
	 * arena bytes and the problems it raised.
	 */
	if (run->nlines > 0)
	{
		const char *prev = ARENA(run, run->lines[run->nlines - 1].key);

		if (strncmp(prev, VARDATA_ANY(key), keylen) == 0 && prev[keylen] == '\0')
		{
			run->nlines--;
			run->arena_len = run->lines[run->nlines].key;
			forget_problems(run, run->row_problems);
		}
	}
	run->row_problems = run->nproblems;
	l = new_line(run);
	l->key = arena_put(run, VARDATA_ANY(key), keylen);
	l->revision = DatumGetInt32((isnull = rownulls[1], rowvals[1]));
	{
		Datum		c = (isnull = rownulls[2], rowvals[2]);

		l->cust = isnull ? -1 : find_customer(run, DatumGetInt64(c));
	}
	if (run->uses_tags && !rownulls[R_TAGS])
		l->tagset = line_tagset(run, l->cust, rowvals[R_TAGS]);
	/*
	 * A line that failed validation (its exception is already open)
	 * or whose amounts cannot be held exactly earns nothing: never
	 * guessed, never fixed.
	 */
	invalid = DatumGetBool(rowvals[18]) || rownulls[4] || rownulls[8] || rownulls[10] ||
		!amount_ok(rowvals[10], &billed) ||
		!(rownulls[11] || amount_ok(rowvals[11], &paid));
	/* a list cost that cannot be held blocks only a rule on list_cost */
	list_bad = !invalid && !rownulls[9] && !amount_ok(rowvals[9], &list);
	if (!invalid)
	{
		charge = DatumGetTextPP(rowvals[4]);
		l->charge = rule_charge_category(VARDATA_ANY(charge), VARSIZE_ANY_EXHDR(charge));
		text_to_cstring_buffer(DatumGetTextPP(rowvals[8]), ccy, sizeof(ccy));
		if (rownulls[9] || list_bad)
			list = billed;
		if (rownulls[11])
			paid = billed;
	}
	else
	{
		l->charge = RULE_CHARGE_UNKNOWN;
		strlcpy(ccy, run->currency, sizeof(ccy));
		list = billed = paid = 0;
		add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
					psprintf("Bill line %s failed validation or has amounts that cannot be held exactly: it earns nothing.",
							 ARENA(run, l->key)));
	}
	l->product = intern_datum(run, rowvals[5], rownulls[5], &run->last_product);
	l->sku = intern_datum(run, rowvals[6], rownulls[6], &run->last_sku);
	l->region = intern_datum(run, rowvals[7], rownulls[7], &run->last_region);
	if (l->product && l->product == run->last_category_of)
		l->category = run->last_category;
	else if (l->product)
	{
		ProductEntry *pe = hash_search(run->products, l->product, HASH_FIND, NULL);

		l->category = pe ? pe->category : NULL;
		run->last_category_of = l->product;
		run->last_category = l->category;
	}
	orig = rowvals[12];
	orignull = rownulls[12];
	l->date = DatumGetDateADT((isnull = rownulls[13], rowvals[13]));
	pstart = DatumGetDateADT((isnull = rownulls[14], rowvals[14]));
	pend = DatumGetDateADT((isnull = rownulls[15], rowvals[15]));
	l->prev = DatumGetBool((isnull = rownulls[17], rowvals[17]));
	{
		text	   *item = DatumGetTextPP((isnull = rownulls[16], rowvals[16]));

		l->kind = (!orignull ||
				   (VARSIZE_ANY_EXHDR(item) == 6 && memcmp(VARDATA_ANY(item), "Refund", 6) == 0))
			? KIND_REFUND : KIND_CHARGE;
	}
	if (!orignull)
	{
		text	   *o = DatumGetTextPP(orig);

		l->orig = arena_put(run, VARDATA_ANY(o), VARSIZE_ANY_EXHDR(o));
	}
	/* active days within its month, for proration of monthly amounts */
	if (l->prev)
		l->active_days = Max(0, Min(pend, run->start) - Max(pstart, run->prev_start));
	else
		l->active_days = Max(0, Min(pend, run->end) - Max(pstart, run->start));

	hash = DatumGetByteaPP((isnull = rownulls[3], rowvals[3]));
	fp_str(run->in_fp, ARENA(run, l->key));
	fp_int(run->in_fp, l->revision);
	fp_bytes(run->in_fp, VARDATA_ANY(hash), VARSIZE_ANY_EXHDR(hash));

	l->version = (int16) find_version(run, l->date);
	if (l->version < 0)
	{
		add_problem(run, "missing_rule", psprintf("rule:%lld:%s", (long long) run->agreement_id,
												  run->period),
					psprintf("No rule version of agreement %lld is in force on %s.",
							 (long long) run->agreement_id, date_text(l->date)));
		return;
	}

	/* currency: convert into the settlement currency at the month-end rate */
	l->fx_rate_id = 0;
	if (strcmp(ccy, run->currency) != 0)
	{
		fx = find_fx(run, ccy);
		if (fx == NULL)
		{
			char	   *scope = psprintf("fx:%s/%s:%s", ccy, run->currency, date_text(run->last_day));

			/* never guessed: the line earns nothing until a rate exists */
			add_problem(run, "missing_fx_rate", scope,
						psprintf("No FX rate %s to %s dated %s: lines in %s cannot be converted.",
								 ccy, run->currency, date_text(run->last_day), ccy));
			billed = list = paid = 0;
		}
		else
		{
			l->fx_rate_id = fx->fx_rate_id;
			billed = fx_convert(billed, fx->rate);
			list = fx_convert(list, fx->rate);
			paid = fx_convert(paid, fx->rate);
		}
	}
	l->billed = billed;

	ver = &run->versions[l->version];
	rule = ver->rule;
	if (list_bad && rule->basis == RULE_BASIS_LIST_COST)
	{
		/* the basis itself cannot be held: the line earns nothing */
		add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
					psprintf("Bill line %s has a list cost that cannot be held exactly (more than 16 decimal places or not below 10^14): it earns nothing.",
							 ARENA(run, l->key)));
		l->billed = billed = list = paid = 0;
	}
	l->basis = rule->basis == RULE_BASIS_LIST_COST ? list :
		rule->basis == RULE_BASIS_AMOUNT_PAID ? paid : billed;
	if (l->kind == KIND_REFUND)
	{
		/*
		 * A refund is valued with its original's version (evaluate_refunds),
		 * whose basis setting may differ: keep list cost and amount paid in
		 * the amounts evaluate_refunds sets, which nothing reads before.
		 */
		l->unrounded = list_bad ? LIST_UNHELD : list;
		l->rounded = paid;
	}
	l->eligible = l->charge >= 0 && (rule->eligible & (1u << l->charge)) != 0;
	if (l->cust < 0)
		add_problem(run, "unmapped_customer", psprintf("line:%s", ARENA(run, l->key)),
					psprintf("Bill line %s has no known customer of this reseller.",
							 ARENA(run, l->key)));
}

/*
 * verify_run: exactly the revisions a run recorded, by SQL (a join with the
 * run's lineage), in the same order and layout as read_lines_direct.
 */
static void
read_lines_recorded(Run *run)
{
	Datum		args[2];
	Oid			types[2] = {INT8OID, INT8OID};
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext batch = AllocSetContextCreate(CurrentMemoryContext, "settle line batch",
												ALLOCSET_DEFAULT_SIZES);
	const char *date = run->invoice_basis ? "b.billing_period_start" :
		"(b.charge_period_start AT TIME ZONE 'UTC')::date";

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = Int64GetDatum(run->verify_run);
	plan = SPI_prepare(psprintf("SELECT b.line_key, b.revision, b.customer_id, b.content_hash, b.charge_category, "
								"b.product_code, b.sku_id, b.region_id, b.billing_currency, b.list_cost, b.billed_cost, "
								"b.amount_paid, b.original_line_key, %s AS line_date, "
								"(b.charge_period_start AT TIME ZONE 'UTC')::date, "
								"(b.charge_period_end AT TIME ZONE 'UTC')::date, b.source_item, %s < '%s'::date AS prev, "
								"cardinality(b.validation_errors) > 0 AS invalid, b.tags "
								"FROM settle.settlement_line s JOIN settle.bill_line b "
								"ON b.reseller_id = s.reseller_id AND b.line_key = s.line_key AND b.revision = s.revision "
								"WHERE s.reseller_id = $1 AND s.run_id = $2 AND s.kind IN ('c', 'r') "
								"ORDER BY b.line_key COLLATE \"C\", b.revision",
								date, date, date_text(run->start)), 2, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the line query: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	for (;;)
	{
		uint64		i;
		MemoryContext old;

		CHECK_FOR_INTERRUPTS();
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		old = MemoryContextSwitchTo(batch);
		for (i = 0; i < SPI_processed; i++)
		{
			Datum		rowvals[R__COUNT];
			bool		rownulls[R__COUNT];

			heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, rowvals, rownulls);
			take_row(run, rowvals, rownulls);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(batch);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(batch);
}

/*
 * Whether an array (validation_errors) has elements, without copying a short
 * one out of its tuple: an empty array is a bare ArrayType header.
 */
static bool
array_nonempty(Datum d)
{
	struct varlena *p = (struct varlena *) DatumGetPointer(d);

	if (VARATT_IS_EXTERNAL(p) || VARATT_IS_COMPRESSED(p))
		return ARR_NDIM(DatumGetArrayTypeP(d)) > 0;
	return VARSIZE_ANY_EXHDR(p) > sizeof(ArrayType) - VARHDRSZ;
}

/* heap order of a chunk of index entries */
#define ST_SORT sort_tid_ranks
#define ST_ELEMENT_TYPE TidRank
#define ST_COMPARE(a, b) ((a)->tid < (b)->tid ? -1 : (a)->tid > (b)->tid ? 1 : 0)
#define ST_SCOPE static
#define ST_DEFINE
#include "lib/sort_template.h"

/*
 * Whether the primary key entry the scan is on is dated in the period or the
 * previous one (the window read_lines_direct takes lines from), from the
 * dates the key carries: lines of other periods are never read from the heap.
 */
static bool
index_entry_in_window(Run *run, IndexScanDesc scan)
{
	bool		isnull;
	Datum		d = index_getattr(scan->xs_itup, run->invoice_basis ? 4 : 5, scan->xs_itupdesc, &isnull);
	DateADT		date;

	if (isnull)
		return true;			/* (NOT NULL columns; the heap tuple decides) */
	date = run->invoice_basis ? DatumGetDateADT(d) : utc_date(DatumGetTimestampTz(d));
	return date >= run->prev_start && date < run->end;
}

/*
 * Whether the reseller has bill lines billed before the previous period or
 * after this one (two probes of bill_line_period_idx): only then is reading
 * the dates in the primary key worth its cost (about 60 ns an entry).
 */
static bool
has_other_periods(Run *run)
{
	Datum		args[3];
	Oid			types[3] = {INT8OID, DATEOID, DATEOID};
	bool		isnull;

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = DateADTGetDatum(run->prev_start);
	args[2] = DateADTGetDatum(run->end);
	if (SPI_execute_with_args("SELECT EXISTS (SELECT FROM settle.bill_line WHERE reseller_id = $1 AND billing_period_start < $2) "
							  "OR EXISTS (SELECT FROM settle.bill_line WHERE reseller_id = $1 AND billing_period_start >= $3)",
							  3, types, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not look for bill lines of other periods");
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * The lines of the period: the current revision of every bill line of the
 * reseller dated in it, and refunds dated in the previous period (which may
 * have been deferred beyond the refund window).  Read straight from the
 * primary key (reseller_id, line_key, revision), which gives them in the
 * order the engine needs, under the statement's snapshot; when the reseller
 * has lines of other periods, the dates the key carries (INCLUDE) leave them
 * unread.  Like a bitmap heap scan, each chunk of index entries is fetched
 * from the heap in physical order (every page pinned once, not once per
 * line), then taken in key order.
 */
static void
read_lines_direct(Run *run)
{
	static const char *const names[] = {
		"line_key", "revision", "customer_id", "content_hash", "charge_category", "product_code",
		"sku_id", "region_id", "billing_currency", "list_cost", "billed_cost", "amount_paid",
		"original_line_key", "billing_period_start", "charge_period_start", "charge_period_end",
		"source_item", NULL, "validation_errors", "tags"
	};
	Relation	heap = table_open(settle_relid("bill_line"), AccessShareLock);
	Relation	pk = index_open(RelationGetPrimaryKeyIndex(heap), AccessShareLock);
	TupleDesc	desc = RelationGetDescr(heap);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	Snapshot	snap = GetActiveSnapshot();
	TidRank    *tr = reuse.tids;
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *isnull = palloc(sizeof(bool) * desc->natts);
	IndexScanDesc scan;
	IndexFetchTableData *fetch;
	ScanKeyData sk;
	AttrNumber	att[R__COUNT];
	bool		exhausted = false;
	uint64		skipped = 0;
	bool		by_date;
	int			k;

	for (k = 0; k < R__COUNT; k++)
		att[k] = names[k] ? settle_attnum(heap, names[k]) : InvalidAttrNumber;
	if (pk->rd_index->indnkeyatts != 3 || pk->rd_index->indnatts != 5 ||
		pk->rd_index->indkey.values[0] != settle_attnum(heap, "reseller_id") ||
		pk->rd_index->indkey.values[1] != att[R_KEY] || pk->rd_index->indkey.values[2] != att[R_REVISION] ||
		pk->rd_index->indkey.values[3] != att[R_DATE] || pk->rd_index->indkey.values[4] != att[R_START])
		elog(ERROR, "settle.bill_line's primary key is not (reseller_id, line_key, revision) "
			 "INCLUDE (billing_period_start, charge_period_start)");
	ScanKeyInit(&sk, 1, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(run->reseller_id));
	scan = index_beginscan(heap, pk, snap, 1, 0);
	/* the dates, to skip other periods (set before the rescan) */
	scan->xs_want_itup = by_date = has_other_periods(run);
	index_rescan(scan, &sk, 1, NULL, 0);
	fetch = table_index_fetch_begin(heap);
	for (;;)
	{
		ItemPointer tid;
		uint32		n = 0,
					i;
		Size		used;

		/* (an exhausted B-tree scan must not be asked again: it would restart) */
		while (!exhausted && n < READ_CHUNK)
		{
			if ((tid = index_getnext_tid(scan, ForwardScanDirection)) == NULL)
			{
				exhausted = true;
				break;
			}
			if (by_date && !index_entry_in_window(run, scan))
			{
				if ((++skipped & 0xFFFF) == 0)
					CHECK_FOR_INTERRUPTS();
				continue;
			}
			tr[n].tid = ((uint64) ItemPointerGetBlockNumber(tid) << 16) | ItemPointerGetOffsetNumber(tid);
			tr[n].rank = n;
			n++;
		}
		if (n == 0)
			break;
		CHECK_FOR_INTERRUPTS();
		sort_tid_ranks(tr, n);
		/* fetched in heap order, copied by rank (UINT32_MAX: not visible) */
		used = 0;
		for (i = 0; i < n; i++)
		{
			ItemPointerData ip;
			bool		call_again = false;
			bool		all_dead;
			HeapTuple	t;

			ItemPointerSet(&ip, (BlockNumber) (tr[i].tid >> 16), (OffsetNumber) (tr[i].tid & 0xFFFF));
			if (!table_index_fetch_tuple(fetch, &ip, snap, slot, &call_again, &all_dead))
			{
				reuse.tuple_at[tr[i].rank] = UINT32_MAX;
				continue;
			}
			t = ExecFetchSlotHeapTuple(slot, false, NULL);
			if (used + MAXALIGN(t->t_len) > reuse.batch_cap)
			{
				if (used + MAXALIGN(t->t_len) > UINT32_MAX)
					elog(ERROR, "settle line batch too large");
				reuse.batch_cap = Max(reuse.batch_cap * 2, used + MAXALIGN(t->t_len));
				reuse.batch = repalloc_huge(reuse.batch, reuse.batch_cap);
			}
			memcpy(reuse.batch + used, t->t_data, t->t_len);
			reuse.tuple_at[tr[i].rank] = (uint32) used;
			used += MAXALIGN(t->t_len);
		}
		ExecClearTuple(slot);
		for (i = 0; i < n; i++)
		{
			Datum		v[R__COUNT];
			bool		nl[R__COUNT];
			DateADT		date;
			HeapTupleData t;

			if (reuse.tuple_at[i] == UINT32_MAX)
				continue;		/* not visible to this snapshot */
			t.t_data = (HeapTupleHeader) (reuse.batch + reuse.tuple_at[i]);
			t.t_len = 0;		/* (heap_deform_tuple reads only the header) */
			heap_deform_tuple(&t, desc, values, isnull);
			for (k = 0; k < R__COUNT; k++)
				if (att[k] != InvalidAttrNumber)
				{
					v[k] = values[att[k] - 1];
					nl[k] = isnull[att[k] - 1];
				}
			v[R_START] = DateADTGetDatum(utc_date(DatumGetTimestampTz(v[R_START])));
			v[R_END] = DateADTGetDatum(utc_date(DatumGetTimestampTz(v[R_END])));
			date = run->invoice_basis ? DatumGetDateADT(v[R_DATE]) : DatumGetDateADT(v[R_START]);
			v[R_DATE] = DateADTGetDatum(date);
			nl[R_DATE] = false;
			/* this period's lines, and the previous period's refunds */
			if (date >= run->end || date < run->prev_start ||
				(date < run->start && nl[R_ORIGINAL] &&
				 !(!nl[R_ITEM] && VARSIZE_ANY_EXHDR(DatumGetTextPP(v[R_ITEM])) == 6 &&
				   memcmp(VARDATA_ANY(DatumGetTextPP(v[R_ITEM])), "Refund", 6) == 0)))
				continue;
			v[R_PREV] = BoolGetDatum(date < run->start);
			nl[R_PREV] = false;
			v[R_INVALID] = BoolGetDatum(array_nonempty(v[R_INVALID]));
			take_row(run, v, nl);
		}
		settle_progress_update(SETTLE_PHASE_READING, run->nlines);
	}
	table_index_fetch_end(fetch);
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(pk, AccessShareLock);
	table_close(heap, AccessShareLock);
	pfree(values);
	pfree(isnull);
}

static void
read_lines(Run *run)
{
	fp_str(run->in_fp, "lines");
	if (run->verify_run)
		read_lines_recorded(run);
	else
		read_lines_direct(run);
}

/* ---------- evaluation ---------- */

static int
line_cmp_key(Run *run, const char *key)
{
	/* binary search for a charge line of this period with this key */
	int			lo = 0,
				hi = (int) run->nlines - 1;

	while (lo <= hi)
	{
		int			mid = (lo + hi) / 2;
		int			c = strcmp(ARENA(run, run->lines[mid].key), key);

		if (c == 0)
			return mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

static void
fill_rule_line(Run *run, Line *l, RuleLine *rl)
{
	memset(rl, 0, sizeof(*rl));
#define TXT(f, src) do { rl->f.s = (src); rl->f.len = (src) ? strlen(src) : 0; } while (0)
	TXT(product, l->product);
	TXT(category, l->category);
	TXT(sku, l->sku);
	TXT(region, l->region);
#undef TXT
	if (l->cust >= 0)
	{
		Customer   *c = &run->customers[l->cust];

		rl->segment.s = c->segment.s;
		rl->segment.len = c->segment.len;
		rl->ntags = c->ntags;
		rl->tags = c->tags;
	}
	if (l->tagset > 0)
	{
		rl->ntags = run->tagsets[l->tagset].ntags;
		rl->tags = run->tagsets[l->tagset].tags;
	}
	rl->charge = l->charge;
	rl->billed_cost = rl->list_cost = rl->amount_paid = l->basis;
	rl->active_days = l->active_days;
	rl->days_in_month = run->end - run->start;
	rl->refund_age_days = -1;
}

static void
evaluate_charges(Run *run)
{
	uint32		i;

	/* all-units tiers need the period totals first */
	for (i = 0; i < run->nlines; i++)
	{
		Line	   *l = &run->lines[i];

		if (l->kind != KIND_CHARGE || l->prev || l->version < 0 || !l->eligible)
			continue;
		if (l->cust >= 0)
			run->customers[l->cust].spend += l->basis;
		run->reseller_spend += l->basis;
		run->reseller_volume += MONEY_ONE;
	}

	for (i = 0; i < run->nlines; i++)
	{
		Line	   *l = &run->lines[i];
		Customer   *c = l->cust >= 0 ? &run->customers[l->cust] : NULL;
		RuleLine	rl;
		RuleContext ctx;
		RuleResult	res;

		if (l->kind != KIND_CHARGE || l->prev)
			continue;
		l->included = true;
		l->rate = -1;
		if (l->version < 0)
			continue;			/* a problem was recorded: no commission */
		l->version_no = run->versions[l->version].version;
		fill_rule_line(run, l, &rl);
		memset(&ctx, 0, sizeof(ctx));
		ctx.customer_spend = c ? c->spend : 0;
		ctx.reseller_spend = run->reseller_spend;
		ctx.reseller_volume = run->reseller_volume;
		ctx.customer_spend_before = c ? c->spend_before : 0;
		ctx.reseller_spend_before = run->reseller_spend_before;
		ctx.customer_commission_to_date = c ? c->commission : 0;
		ctx.reseller_commission_to_date = run->reseller_commission;
		rule_eval(run->versions[l->version].rule, &rl, &ctx, &res);

		l->clause = (int16) res.clause;
		l->tier = (int16) res.tier;
		l->pay = res.pay;
		if (res.status == RULE_EVAL_OK && (res.pay == RULE_PAY_PERCENT || res.pay == RULE_PAY_TIERS))
			l->rate = res.rate;
		if (res.status == RULE_EVAL_INEXACT)
		{
			/* valued by no clause, like a line that failed validation */
			l->clause = 0;
			l->tier = 0;
			add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
						psprintf("Bill line %s: its commission basis times the rate has more than 16 decimal places and cannot be held exactly (precision): it earns nothing.",
								 ARENA(run, l->key)));
		}
		l->unrounded = res.commission;
		if (l->eligible)
		{
			if (c)
				c->spend_before += l->basis;
			run->reseller_spend_before += l->basis;
		}
		if (c)
			c->commission += res.commission;
		run->reseller_commission += res.commission;
		if ((i & 0xFFFF) == 0)
		{
			CHECK_FOR_INTERRUPTS();
			settle_progress_update(SETTLE_PHASE_EVALUATING, i);
		}
	}
}

typedef struct Original
{
	char	   *key;
	int64		rate;			/* -1: fixed amount */
	int32		version_no;
	int16		clause,
				tier;
	money128	unrounded;
	DateADT		date;
	int64		run_id;
	int64		agreement_id;	/* of its run */
} Original;

static int
original_cmp(const void *a, const void *b)
{
	return strcmp(((const Original *) a)->key, ((const Original *) b)->key);
}

/*
 * Originals of refunds that are not charges of this period, from the lineage
 * of earlier runs (what they actually earned).
 */
static Original *
load_earlier_originals(Run *run, int *n)
{
	ArrayBuildState *keys = NULL;
	uint32		i;
	Datum		args[4];
	Oid			types[4] = {INT8OID, TEXTARRAYOID, TEXTOID, INT8OID};
	Original   *o;
	const char *date = run->invoice_basis ? "b.billing_period_start" :
		"(b.charge_period_start AT TIME ZONE 'UTC')::date";

	/*
	 * The run of each earlier period that holds the original: the current
	 * one when settling; when verifying, the one that was current when the
	 * verified run was made (the latest made before it: a re-settlement
	 * always makes a new run), not one that superseded it since.
	 */
	const char *which = run->verify_run ?
		"r.run_id = (SELECT max(r2.run_id) FROM settle.run r2 WHERE r2.reseller_id = $1 "
		"  AND r2.period = r.period AND r2.run_id < $4) " :
		"r.status <> 'superseded' ";

	for (i = 0; i < run->nlines; i++)
	{
		Line	   *l = &run->lines[i];
		int			j;

		if (l->kind != KIND_REFUND || l->orig == 0)
			continue;
		j = line_cmp_key(run, ARENA(run, l->orig));
		if (j >= 0 && run->lines[j].kind == KIND_CHARGE && !run->lines[j].prev)
			continue;
		keys = accumArrayResult(keys, CStringGetTextDatum(ARENA(run, l->orig)), false, TEXTOID,
								CurrentMemoryContext);
	}
	*n = 0;
	if (keys == NULL)
		return NULL;
	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = makeArrayResult(keys, CurrentMemoryContext);
	args[2] = CStringGetTextDatum(run->period);
	args[3] = Int64GetDatum(run->verify_run);
	if (SPI_execute_with_args(psprintf(
									   "SELECT o.key, s.rate, s.rule_version, s.clause, s.tier, s.unrounded, %s, s.run_id, r.agreement_id "
									   "FROM (SELECT DISTINCT unnest($2) AS key) o "
									   "JOIN LATERAL (SELECT * FROM settle.bill_line b WHERE b.line_key = o.key "
									   "  AND b.reseller_id = $1 ORDER BY b.revision DESC LIMIT 1) b ON true "
									   "JOIN settle.run r ON r.reseller_id = $1 AND %s"
									   "  AND r.period = to_char(%s, 'YYYY-MM') AND r.period < $3 "
									   "JOIN settle.settlement_line s ON s.reseller_id = $1 AND s.run_id = r.run_id "
									   "  AND s.line_key = o.key AND s.kind = 'c' "
									   "ORDER BY o.key COLLATE \"C\"", date, which, date),
							  4, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the lineage of refunded charges");
	o = palloc0(sizeof(Original) * Max(1, SPI_processed));
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		Datum		r;

		o[i].key = SPI_getvalue(t, d, 1);
		r = SPI_getbinval(t, d, 2, &isnull);
		if (isnull)
			o[i].rate = -1;
		else
		{
			money128	m = datum_money(r, false, "rate");

			o[i].rate = (int64) (m / (MONEY_ONE / RATE_ONE));
		}
		o[i].version_no = DatumGetInt32(SPI_getbinval(t, d, 3, &isnull));
		o[i].clause = DatumGetInt16(SPI_getbinval(t, d, 4, &isnull));
		o[i].tier = DatumGetInt16(SPI_getbinval(t, d, 5, &isnull));
		numeric_to_money128(SPI_getbinval(t, d, 6, &isnull), &o[i].unrounded);
		o[i].date = DatumGetDateADT(SPI_getbinval(t, d, 7, &isnull));
		o[i].run_id = DatumGetInt64(SPI_getbinval(t, d, 8, &isnull));
		o[i].agreement_id = DatumGetInt64(SPI_getbinval(t, d, 9, &isnull));
	}
	*n = (int) SPI_processed;
	return o;
}

/*
 * The compiled rule of a version of an agreement by number: one loaded for
 * the run's dates, or (the version of an older refunded charge, possibly of
 * an earlier agreement) read and kept.  NULL if there is none.
 */
static const Rule *
version_rule(Run *run, int64 agreement_id, int32 version_no)
{
	Datum		args[3];
	Oid			types[3] = {INT8OID, INT8OID, INT4OID};
	MemoryContext old;
	bool		isnull;
	Datum		r;
	int			i;

	for (i = 0; agreement_id == run->agreement_id && i < run->nversions; i++)
		if (run->versions[i].version == version_no)
			return run->versions[i].rule;
	for (i = 0; i < run->nolder; i++)
		if (run->older[i].agreement_id == agreement_id && run->older[i].version == version_no)
			return run->older[i].rule;
	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = Int64GetDatum(agreement_id);
	args[2] = Int32GetDatum(version_no);
	if (SPI_execute_with_args("SELECT v.rule FROM settle.rule_version v WHERE v.reseller_id = $1 "
							  "AND v.agreement_id = $2 AND v.version = $3",
							  3, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read rule version %d", version_no);
	if (SPI_processed == 0)
		return NULL;
	r = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(run->mcxt);
	run->older = run->older ? repalloc(run->older, sizeof(Version) * (run->nolder + 1)) :
		palloc0(sizeof(Version));
	MemoryContextSwitchTo(old);
	memset(&run->older[run->nolder], 0, sizeof(Version));
	run->older[run->nolder].agreement_id = agreement_id;
	run->older[run->nolder].version = version_no;
	run->older[run->nolder].rule = settle_rule_compile(r, run->mcxt);
	return run->older[run->nolder++].rule;
}

static void
evaluate_refunds(Run *run)
{
	int			nearlier;
	Original   *earlier = load_earlier_originals(run, &nearlier);
	uint32		i;

	for (i = 0; i < run->nlines; i++)
	{
		Line	   *l = &run->lines[i];
		const char *okey = l->orig ? ARENA(run, l->orig) : NULL;
		int			j = okey ? line_cmp_key(run, okey) : -1;
		int64		rate;
		money128	orig_commission;
		money128	list,
					paid;
		DateADT		orig_date;
		int64		orig_agreement = run->agreement_id;
		bool		within;
		const Rule *orule;

		if (l->kind != KIND_REFUND)
			continue;
		/* list cost and amount paid, kept by take_row */
		list = l->unrounded;
		paid = l->rounded;
		l->unrounded = l->rounded = 0;
		l->rate = -1;
		if (j >= 0 && run->lines[j].kind == KIND_CHARGE && !run->lines[j].prev)
		{
			Line	   *o = &run->lines[j];

			rate = o->rate;
			orig_commission = o->unrounded;
			orig_date = o->date;
			l->version_no = o->version_no;
			l->clause = o->clause;
			l->tier = o->tier;
			l->ref = arena_put(run, okey, strlen(okey));
		}
		else
		{
			Original	key,
					   *e = NULL;

			if (okey && nearlier > 0)
			{
				key.key = (char *) okey;
				e = bsearch(&key, earlier, nearlier, sizeof(Original), original_cmp);
			}
			if (e == NULL)
			{
				/* never guessed: no reversal, and the run cannot be approved */
				if (!l->prev)
				{
					l->included = true;
					add_problem(run, "unlinked_refund", psprintf("line:%s", ARENA(run, l->key)),
								okey ? psprintf("Refund %s refers to %s, which no settled run of an earlier period and no charge of this period holds.",
												ARENA(run, l->key), okey)
								: psprintf("Refund %s does not say which charge it refunds.", ARENA(run, l->key)));
				}
				continue;
			}
			rate = e->rate;
			orig_commission = e->unrounded;
			orig_date = e->date;
			orig_agreement = e->agreement_id;
			l->version_no = e->version_no;
			l->clause = e->clause;
			l->tier = e->tier;
			{
				char	   *ref = psprintf("run:%lld/%s", (long long) e->run_id, okey);

				l->ref = arena_put(run, ref, strlen(ref));
			}
		}
		within = (l->date - orig_date) <= run->refund_window;
		/* inside the window: its own period; outside: the next adjustment period */
		if (l->prev == within)
			continue;
		/*
		 * Reversed at the original's terms: its version's basis setting
		 * (billed cost, list cost or amount paid), not that of the version
		 * in force on the refund's date.
		 */
		if (l->version >= 0 && l->version_no > 0 &&
			(orule = version_rule(run, orig_agreement, l->version_no)) != NULL)
		{
			if (orule->basis == RULE_BASIS_LIST_COST && list == LIST_UNHELD)
			{
				add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
							psprintf("Bill line %s has a list cost that cannot be held exactly (more than 16 decimal places or not below 10^14): it earns nothing.",
									 ARENA(run, l->key)));
				l->basis = 0;
			}
			else
				l->basis = orule->basis == RULE_BASIS_LIST_COST ? list :
					orule->basis == RULE_BASIS_AMOUNT_PAID ? paid : l->billed;
		}
		l->included = true;
		l->rate = rate;
		if (rate >= 0 && !money_mul_rate_exact(l->basis, rate, &l->unrounded))
			add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
						psprintf("Refund %s: its basis times the rate has more than 16 decimal places and cannot be held exactly (precision): it reverses nothing.",
								 ARENA(run, l->key)));
		else if (rate < 0)
			l->unrounded = -orig_commission;	/* a fixed amount is reversed whole */
	}
}

/*
 * What the new revision of a charge that earned a fixed amount (per line, per
 * month, prorated) earns: the amount its original earned, with the sign of
 * the new basis (nothing for a zero basis), as a line of that basis would.
 * The original is the charge line of the run its reference names
 * (run:<run_id>/<line_key>).
 */
static money128
correction_fixed(Run *run, const char *key, const char *ref, money128 basis)
{
	Datum		args[3];
	Oid			types[3] = {INT8OID, INT8OID, TEXTOID};
	long long	orig_run;
	bool		isnull;
	Datum		d;
	money128	earned;

	if (basis == 0 || ref == NULL || sscanf(ref, "run:%lld/", &orig_run) != 1)
		return 0;
	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = Int64GetDatum((int64) orig_run);
	args[2] = CStringGetTextDatum(key);
	if (SPI_execute_with_args("SELECT s.unrounded FROM settle.settlement_line s WHERE s.reseller_id = $1 "
							  "AND s.run_id = $2 AND s.line_key = $3 AND s.kind = 'c'",
							  3, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the original of correction %s", key);
	if (SPI_processed == 0)
		return 0;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull || !numeric_to_money128(d, &earned))
		return 0;
	if (earned < 0)
		earned = -earned;
	return basis < 0 ? -earned : earned;
}

/*
 * Corrections: bill lines of locked periods revised after the lock.  Each
 * becomes a correction line in the first open period after the locked one,
 * at the rate the original earned, for the difference between what the new
 * revision earns and what was settled for the line so far.
 */
static void
add_corrections(Run *run)
{
	Datum		args[3];
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	uint64		i,
				n;
	SPITupleTable *tt;

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = CStringGetTextDatum(run->period);
	args[2] = Int64GetDatum(run->verify_run);
	/* verify mode takes the recorded corrections as they are */
	if (SPI_execute_with_args(run->verify_run ?
							  "SELECT s.line_key, s.revision, s.rate, s.rule_version, s.clause, s.tier, "
							  "s.basis, NULL::numeric, NULL::numeric, s.fx_rate_id, NULL::numeric, NULL::settle.rule, "
							  "s.ref, s.unrounded FROM settle.settlement_line s "
							  "WHERE s.reseller_id = $1 AND s.run_id = $3 AND s.kind = 'x' AND $2 = $2 "
							  "ORDER BY s.line_key COLLATE \"C\"" :
							  "SELECT c.line_key, c.new_revision, c.rate, c.rule_version, c.clause, c.tier, "
							  "c.billed_cost, c.list_cost, c.amount_paid, c.fx_rate_id, c.fx_rate, c.rule, "
							  "c.ref, c.settled "
							  "FROM settle.late_revisions($1, $2) c WHERE $3 = $3 ORDER BY c.line_key COLLATE \"C\"",
							  3, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read late revisions");
	/* kept: a fixed amount's correction reads its original */
	tt = SPI_tuptable;
	n = SPI_processed;
	fp_str(run->in_fp, "corrections");
	for (i = 0; i < n; i++)
	{
		HeapTuple	t = tt->vals[i];
		TupleDesc	d = tt->tupdesc;
		bool		isnull;
		Line	   *l;
		char	   *key = SPI_getvalue(t, d, 1);
		char	   *ref = SPI_getvalue(t, d, 13);
		Datum		r;
		money128	settled;
		int			a;

		/*
		 * A revision whose amounts cannot be held exactly (more than 16
		 * decimals, or not below 10^14) is not valued, as in take_row: no
		 * correction, and a validation problem blocks the run until it is
		 * dealt with.
		 */
		for (a = 0; !run->verify_run && a < 3; a++)
		{
			money128	m;
			Datum		v = SPI_getbinval(t, d, 7 + a, &isnull);

			if (!isnull && !amount_ok(v, &m))
				break;
		}
		if (!run->verify_run && a < 3)
		{
			int32		revision = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));

			add_problem(run, "validation", psprintf("line:%s", key),
						psprintf("Revision %d of bill line %s, of a locked period, has amounts that cannot be held exactly: it is not corrected.",
								 revision, key));
			fp_str(run->in_fp, key);
			fp_int(run->in_fp, revision);
			fp_str(run->in_fp, "not valued");
			continue;
		}
		l = new_line(run);
		l->kind = KIND_CORRECTION;
		l->included = true;
		l->cust = -1;
		l->key = arena_put(run, key, strlen(key));
		l->revision = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		r = SPI_getbinval(t, d, 3, &isnull);
		l->rate = isnull ? -1 : (int64) (datum_money(r, false, "rate") / (MONEY_ONE / RATE_ONE));
		l->version_no = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		l->clause = DatumGetInt16(SPI_getbinval(t, d, 5, &isnull));
		l->tier = DatumGetInt16(SPI_getbinval(t, d, 6, &isnull));
		r = SPI_getbinval(t, d, 10, &isnull);
		l->fx_rate_id = isnull ? 0 : DatumGetInt64(r);
		l->ref = ref ? arena_put(run, ref, strlen(ref)) : 0;
		if (!numeric_to_money128(SPI_getbinval(t, d, 14, &isnull), &settled))
			elog(ERROR, "settled amount out of range");
		r = SPI_getbinval(t, d, 12, &isnull);
		if (isnull)
		{
			/* recorded: the basis as written */
			if (!lineage_money(t, d, 7, &l->basis))
				elog(ERROR, "recorded basis of correction %s out of range", key);
			l->unrounded = settled;
		}
		else
		{
			const Rule *rule = settle_rule_compile(r, CurrentMemoryContext);
			money128	amount[3];
			money128	now = 0;
			Datum		fx = SPI_getbinval(t, d, 11, &isnull);
			bool		fxnull = isnull;

			for (a = 0; a < 3; a++)
			{
				Datum		v = SPI_getbinval(t, d, 7 + a, &isnull);

				amount[a] = isnull ? amount[0] : datum_amount(v, "amount");
				if (!fxnull)
					amount[a] = fx_convert(amount[a], datum_money(fx, false, "FX rate"));
			}
			l->basis = rule->basis == RULE_BASIS_LIST_COST ? amount[1] :
				rule->basis == RULE_BASIS_AMOUNT_PAID ? amount[2] : amount[0];
			if (l->rate >= 0 && !money_mul_rate_exact(l->basis, l->rate, &now))
			{
				add_problem(run, "validation", psprintf("line:%s", key),
							psprintf("Revision %d of bill line %s, of a locked period: its basis times the rate has more than 16 decimal places and cannot be held exactly (precision): it is not corrected.",
									 l->revision, key));
				now = settled;
			}
			if (l->rate < 0)
				now = correction_fixed(run, key, ref, l->basis);
			l->unrounded = now - settled;
		}
		fp_str(run->in_fp, key);
		fp_int(run->in_fp, l->revision);
		fp_money(run->in_fp, l->unrounded);
	}
}

/*
 * Approved manual adjustments (exceptions in state finance_approved or later)
 * whose target is this reseller's period: one line each, for the amount
 * finance approved.  Verify mode takes the recorded adjustment lines.
 */
static void
add_adjustments(Run *run)
{
	Datum		args[3];
	Oid			types[3] = {INT8OID, TEXTOID, INT8OID};
	uint64		i;

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = CStringGetTextDatum(run->period);
	args[2] = Int64GetDatum(run->verify_run);
	if (SPI_execute_with_args(run->verify_run ?
							  "SELECT s.line_key, s.unrounded, s.ref FROM settle.settlement_line s "
							  "WHERE s.reseller_id = $1 AND s.run_id = $3 AND s.kind = 'a' AND $2 = $2 "
							  "ORDER BY s.line_key COLLATE \"C\"" :
							  "SELECT 'adjustment:' || e.exception_id, e.adjustment_amount, "
							  "'exception:' || e.exception_id FROM settle.exception e "
							  "WHERE e.reseller_id = $1 AND e.target_period = $2 AND $3 = $3 "
							  "AND e.state IN ('finance_approved', 'correction_applied', 'settled') "
							  "ORDER BY e.exception_id",
							  3, types, args, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read approved adjustments");
	fp_str(run->in_fp, "adjustments");
	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	t = SPI_tuptable->vals[i];
		TupleDesc	d = SPI_tuptable->tupdesc;
		Line	   *l = new_line(run);
		char	   *key = SPI_getvalue(t, d, 1);
		char	   *ref = SPI_getvalue(t, d, 3);
		bool		isnull;

		l->kind = KIND_ADJUSTMENT;
		l->included = true;
		l->cust = -1;
		l->rate = -1;
		l->key = arena_put(run, key, strlen(key));
		l->ref = arena_put(run, ref, strlen(ref));
		if (!numeric_to_money128(SPI_getbinval(t, d, 2, &isnull), &l->unrounded) || isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("adjustment %s cannot be held exactly", key)));
		fp_str(run->in_fp, key);
		fp_money(run->in_fp, l->unrounded);
	}
}

/*
 * Floors per customer and per reseller: the period's charges' commission
 * (before refund reversals, corrections and adjustments) is topped up to the
 * floor of the last rule version in force in the period.  Only customers
 * (a reseller) with a commissionable amount in the period get a top-up.
 */
static void
add_floors(Run *run)
{
	const Rule *rule = NULL;
	const Version *ver = NULL;
	int			i;

	/* versions are in effective_from order; the first may end before the period */
	for (i = run->nversions - 1; i >= 0 && ver == NULL; i--)
		if (run->versions[i].to > run->start)
			ver = &run->versions[i];
	if (ver == NULL)
		return;
	rule = ver->rule;
	if (rule->has_floor[RULE_SCOPE_CUSTOMER])
	{
		for (i = 0; i < run->ncustomers; i++)
		{
			Customer   *c = &run->customers[i];
			char	   *key;
			Line	   *l;

			if (c->spend == 0 || c->commission >= rule->floor[RULE_SCOPE_CUSTOMER])
				continue;
			key = psprintf("floor:customer:%lld", (long long) c->customer_id);
			l = new_line(run);
			l->kind = KIND_FLOOR;
			l->included = true;
			l->key = arena_put(run, key, strlen(key));
			l->version_no = ver->version;
			l->rate = -1;
			l->cust = i;
			l->unrounded = rule->floor[RULE_SCOPE_CUSTOMER] - c->commission;
			run->reseller_commission += l->unrounded;
		}
	}
	if (rule->has_floor[RULE_SCOPE_RESELLER] && run->reseller_spend != 0 &&
		run->reseller_commission < rule->floor[RULE_SCOPE_RESELLER])
	{
		Line	   *l = new_line(run);
		const char *key = "floor:reseller";

		l->kind = KIND_FLOOR;
		l->included = true;
		l->key = arena_put(run, key, strlen(key));
		l->version_no = ver->version;
		l->rate = -1;
		l->cust = -1;
		l->unrounded = rule->floor[RULE_SCOPE_RESELLER] - run->reseller_commission;
	}
}

/* ---------- rounding ---------- */

/*
 * The k-th largest (1-based) of v[0..n-1], reordering v: quickselect with a
 * three-way partition, so long runs of equal remainders stay linear.
 */
static money128
kth_largest(money128 *v, uint32 n, uint32 k)
{
	uint32		lo = 0,
				hi = n,
				want = k - 1;

	Assert(k >= 1 && k <= n);
	while (hi - lo > 1)
	{
		money128	a = v[lo],
					b = v[lo + (hi - lo) / 2],
					c = v[hi - 1];
		money128	pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
		uint32		gt_end = lo,	/* [lo, gt_end): > pivot */
					i = lo,
					lt_start = hi;	/* [lt_start, hi): < pivot */

		while (i < lt_start)
		{
			money128	x = v[i];

			if (x > pivot)
			{
				v[i++] = v[gt_end];
				v[gt_end++] = x;
			}
			else if (x < pivot)
			{
				v[i] = v[--lt_start];
				v[lt_start] = x;
			}
			else
				i++;
		}
		if (want < gt_end)
			hi = gt_end;
		else if (want >= lt_start)
			lo = lt_start;
		else
			return pivot;
	}
	return v[lo];
}

/*
 * Rounds the statement total once, in the currency's minor unit and the
 * agreement's mode, and gives each line its floor plus one unit for the k
 * lines with the largest remainders (ties: earlier line first), so that the
 * lines add up to the total exactly.  The k-th largest remainder is found by
 * selection, then one pass in line order hands out the units: no sort.
 * Returns the rounded total.
 */
static money128
allocate_rounding(Run *run)
{
	money128	unit = MONEY_ONE;
	money128	total = 0,
				sum_floor = 0,
				total_rounded;
	money128   *rems;
	uint32		n = 0,
				i;
	int64		k;
	int			m;

	for (m = 0; m < run->minor_unit; m++)
		unit /= 10;
	rems = palloc_extended(sizeof(money128) * (Size) Max(1, run->nlines), MCXT_ALLOC_HUGE);
	for (i = 0; i < run->nlines; i++)
	{
		Line	   *l = &run->lines[i];
		money128	fl;

		if (!l->included)
			continue;
		fl = l->unrounded / unit * unit;
		if (fl > l->unrounded)
			fl -= unit;			/* towards minus infinity */
		l->rounded = fl;
		sum_floor += fl;
		total += l->unrounded;
		rems[n++] = l->unrounded - fl;
	}
	total_rounded = money_round(total, run->minor_unit, run->rounding);
	k = (int64) ((total_rounded - sum_floor) / unit);
	Assert(k >= 0 && k <= (int64) n);
	if (k > 0)
	{
		money128	threshold = kth_largest(rems, n, (uint32) k);
		int64		at_threshold = k;

		for (i = 0; i < run->nlines; i++)
		{
			Line	   *l = &run->lines[i];

			if (l->included && l->unrounded - l->rounded > threshold)
				at_threshold--;
		}
		for (i = 0; i < run->nlines; i++)
		{
			Line	   *l = &run->lines[i];
			money128	rem = l->unrounded - l->rounded;

			if (!l->included || rem < threshold)
				continue;
			if (rem == threshold)
			{
				if (at_threshold == 0)
					continue;
				at_threshold--;
			}
			l->rounded += unit;
		}
	}
	pfree(rems);
	return total_rounded;
}

/* ---------- output ---------- */

typedef struct Totals
{
	money128	gross,
				commissionable,
				commission,
				refunds,
				corrections,
				adjustments,
				total,
				carry_out,
				net;
	int64		lines_out;
} Totals;

static void
fp_line(Fingerprint *ctx, Run *run, Line *l)
{
	fp_str(ctx, ARENA(run, l->key));
	fp_int(ctx, l->kind);
	fp_int(ctx, l->revision);
	fp_int(ctx, l->version_no);
	fp_int(ctx, l->clause);
	fp_int(ctx, l->tier);
	fp_money(ctx, l->basis);
	fp_int(ctx, l->rate);
	fp_int(ctx, l->fx_rate_id);
	fp_money(ctx, l->unrounded);
	fp_money(ctx, l->rounded);
	fp_str(ctx, l->ref ? ARENA(run, l->ref) : NULL);
}

static Run *sort_run;			/* qsort has no context argument */

static int
order_cmp(const void *a, const void *b)
{
	const Line *x = &sort_run->lines[*(const uint32 *) a];
	const Line *y = &sort_run->lines[*(const uint32 *) b];
	int			c = strcmp(ARENA(sort_run, x->key), ARENA(sort_run, y->key));

	if (c != 0)
		return c;
	return (unsigned char) x->kind - (unsigned char) y->kind;
}

/*
 * The output order: included lines by line key ("C" collation), then kind.
 * Lines read from bill_line are already in key order; only the lines added
 * after them (corrections, floors, adjustments) are sorted, then merged in.
 * (line_key, kind) identifies a settlement line, and no unique index
 * enforces it (see settle.settlement_line): the order must be strict.
 */
static void
order_lines(Run *run)
{
	uint32		i,
				sorted,
				a,
				b,
				o;
	uint32	   *merged;

	run->order = palloc_extended(sizeof(uint32) * (Size) Max(1, run->nlines), MCXT_ALLOC_HUGE);
	run->norder = 0;
	for (i = 0; i < run->nlines; i++)
		if (run->lines[i].included)
			run->order[run->norder++] = i;
	sort_run = run;
	for (sorted = 1; sorted < run->norder &&
		 order_cmp(&run->order[sorted - 1], &run->order[sorted]) < 0; sorted++)
		;
	if (sorted < run->norder)
	{
		qsort(run->order + sorted, run->norder - sorted, sizeof(uint32), order_cmp);
		merged = palloc_extended(sizeof(uint32) * (Size) run->norder, MCXT_ALLOC_HUGE);
		for (a = 0, b = sorted, o = 0; o < run->norder; o++)
			merged[o] = (b >= run->norder ||
						 (a < sorted && order_cmp(&run->order[a], &run->order[b]) <= 0))
				? run->order[a++] : run->order[b++];
		pfree(run->order);
		run->order = merged;
		for (o = 1; o < run->norder; o++)
			if (order_cmp(&run->order[o - 1], &run->order[o]) >= 0)
			{
				Line	   *l = &run->lines[run->order[o]];

				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("settlement line \"%s\" of kind '%c' occurs twice in the run of reseller %lld for %s",
								ARENA(run, l->key), l->kind, (long long) run->reseller_id, run->period)));
			}
	}
	sort_run = NULL;
}

static void
compute_totals(Run *run, Totals *tot)
{
	uint32		i;

	memset(tot, 0, sizeof(*tot));
	fp_str(run->out_fp, "lines");
	for (i = 0; i < run->norder; i++)
	{
		Line	   *l = &run->lines[run->order[i]];

		tot->lines_out++;
		fp_line(run->out_fp, run, l);
		switch (l->kind)
		{
			case KIND_CHARGE:
				tot->gross += l->billed;
				if (l->eligible)
					tot->commissionable += l->basis;
				tot->commission += l->rounded;
				break;
			case KIND_REFUND:
				tot->refunds += l->rounded;
				break;
			case KIND_CORRECTION:
				tot->corrections += l->rounded;
				break;
			default:
				tot->adjustments += l->rounded;
				break;
		}
	}
	tot->gross = money_round(tot->gross, run->minor_unit, run->rounding);
	tot->commissionable = money_round(tot->commissionable, run->minor_unit, run->rounding);
	tot->total = tot->commission + tot->refunds + tot->corrections + tot->adjustments;
	/* below the minimum payout (or negative) the balance carries forward */
	if (tot->total + run->carry_in < run->min_payout || tot->total + run->carry_in < 0)
	{
		tot->carry_out = tot->total + run->carry_in;
		tot->net = 0;
	}
	else
	{
		tot->carry_out = 0;
		tot->net = tot->total + run->carry_in;
	}
	fp_str(run->out_fp, "statement");
	fp_money(run->out_fp, tot->gross);
	fp_money(run->out_fp, tot->commissionable);
	fp_money(run->out_fp, tot->total);
	fp_money(run->out_fp, run->carry_in);
	fp_money(run->out_fp, tot->carry_out);
	fp_money(run->out_fp, tot->net);
}

/*
 * Takes the lock summarising a BRIN index of the lineage needs (SHARE UPDATE
 * EXCLUSIVE on the table and the index, held to the end of the transaction)
 * unless another session or VACUUM holds it: settlement never waits for it.
 */
static bool
lock_for_summarizing(Oid heap, Oid index)
{
	return ConditionalLockRelationOid(heap, ShareUpdateExclusiveLock) &&
		ConditionalLockRelationOid(index, ShareUpdateExclusiveLock);
}

/* Lineage columns, in table order (see src/sql/50_settle.sql). */
#define LINEAGE_NATTS 14

/*
 * Writes the included lines into settle.settlement_line with multi-row heap
 * inserts and direct inserts into its plain-column indexes: the executor's
 * per-row work would dominate a write of millions of narrow rows.
 */
static void
write_lineage(Run *run)
{
	Oid			relid = settle_relid("settlement_line");
	Relation	rel = table_open(relid, RowExclusiveLock);
	TupleDesc	desc = RelationGetDescr(rel);
	List	   *indexoids = RelationGetIndexList(rel);
	int			nidx = list_length(indexoids);
	Relation   *idx = palloc(sizeof(Relation) * Max(1, nidx));
	IndexInfo **ii = palloc(sizeof(IndexInfo *) * Max(1, nidx));
	bool	   *per_page = palloc(sizeof(bool) * Max(1, nidx));
	bool	   *summarize_now = palloc(sizeof(bool) * Max(1, nidx));
	BlockNumber *last_page = palloc(sizeof(BlockNumber) * Max(1, nidx));
	BulkInsertState bistate = GetBulkInsertState();
	CommandId	cid = GetCurrentCommandId(true);
	MemoryContext batch = AllocSetContextCreate(CurrentMemoryContext, "settle lineage batch",
												ALLOCSET_DEFAULT_SIZES);
	TupleTableSlot **slots = palloc(sizeof(TupleTableSlot *) * 1000);
	/* each row's values, kept for its index entries (not deformed again) */
	Datum	  (*rowvals)[LINEAGE_NATTS] = palloc(sizeof(*rowvals) * 1000);
	bool	  (*rownulls)[LINEAGE_NATTS] = palloc(sizeof(*rownulls) * 1000);
	int			nslots = 0;
	int			k;
	uint32		i;
	ListCell   *lc;
	int			dscale_rate = RATE_SCALE;

	if (desc->natts != LINEAGE_NATTS)
		elog(ERROR, "settle.settlement_line has %d columns, expected %d", desc->natts, LINEAGE_NATTS);
	k = 0;
	foreach(lc, indexoids)
	{
		idx[k] = index_open(lfirst_oid(lc), RowExclusiveLock);
		ii[k] = BuildIndexInfo(idx[k]);
		if (ii[k]->ii_Expressions != NIL || ii[k]->ii_Predicate != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("index \"%s\" on settle.settlement_line is not supported",
							RelationGetRelationName(idx[k])),
					 errdetail("Indexes on settlement lines must be plain column indexes.")));

		/*
		 * A minmax BRIN index on run_id alone: every row written here has
		 * the same run id, and adding a value a range's summary already
		 * holds changes nothing, so one insertion per heap page does what
		 * one per row would.  After it, the summary of the page's range
		 * holds the run id whether it existed already, is being built (the
		 * insertion updates the placeholder) or is built later (summarising
		 * reads the heap).  Other indexes get every row.
		 */
		per_page[k] = idx[k]->rd_rel->relam == BRIN_AM_OID && ii[k]->ii_NumIndexAttrs == 1 &&
			ii[k]->ii_IndexAttrNumbers[0] == settle_attnum(rel, "run_id") &&
			index_getprocid(idx[k], 1, BRIN_PROCNUM_OPCINFO) == F_BRIN_MINMAX_OPCINFO;
		last_page[k] = InvalidBlockNumber;

		/*
		 * And a block range this write starts is summarised at once, while
		 * it holds a page or so: the insertions then keep it summarised, and
		 * no pass over its rows is needed afterwards.  Only when the lock is
		 * free; settle._summarize_lineage catches the rest.
		 */
		summarize_now[k] = per_page[k] && lock_for_summarizing(relid, RelationGetRelid(idx[k]));
		k++;
	}
	for (k = 0; k < 1000; k++)
		slots[k] = MakeSingleTupleTableSlot(desc, &TTSOpsHeapTuple);

	for (i = 0; i <= run->norder; i++)
	{
		if (i < run->norder)
		{
			Line	   *l = &run->lines[run->order[i]];
			Datum	   *values = rowvals[nslots];
			bool	   *nulls = rownulls[nslots];
			MemoryContext old = MemoryContextSwitchTo(batch);
			HeapTuple	tup;

			memset(nulls, 0, sizeof(bool) * LINEAGE_NATTS);
			values[0] = Int64GetDatum(run->reseller_id);
			values[1] = Int64GetDatum(run->run_id);
			values[2] = PointerGetDatum(cstring_to_text(ARENA(run, l->key)));
			values[3] = CharGetDatum(l->kind);
			values[4] = Int32GetDatum(l->revision);
			nulls[4] = l->kind == KIND_FLOOR;
			values[5] = Int32GetDatum(l->version_no);
			nulls[5] = l->version_no == 0;
			values[6] = Int16GetDatum(l->clause);
			nulls[6] = l->clause == 0;
			values[7] = Int16GetDatum(l->tier);
			nulls[7] = l->tier == 0;
			values[8] = money128_to_numeric_min(l->basis, run->minor_unit);
			values[9] = l->rate >= 0 ?
				money128_to_numeric((money128) l->rate * (MONEY_ONE / RATE_ONE), dscale_rate) : (Datum) 0;
			nulls[9] = l->rate < 0;
			values[10] = Int64GetDatum(l->fx_rate_id);
			nulls[10] = l->fx_rate_id == 0;
			values[11] = money128_to_numeric_min(l->unrounded, run->minor_unit);
			values[12] = money128_to_numeric(l->rounded, run->minor_unit);
			values[13] = l->ref ? PointerGetDatum(cstring_to_text(ARENA(run, l->ref))) : (Datum) 0;
			nulls[13] = l->ref == 0;
			tup = heap_form_tuple(desc, values, nulls);
			ExecStoreHeapTuple(tup, slots[nslots], false);
			nslots++;
			MemoryContextSwitchTo(old);
		}
		if (nslots == 1000 || (i == run->norder && nslots > 0))
		{
			int			s;

			table_multi_insert(rel, slots, nslots, cid, 0, bistate);
			for (s = 0; s < nslots; s++)
			{
				Datum	   *vals = rowvals[s];
				bool	   *isnull = rownulls[s];

				for (k = 0; k < nidx; k++)
				{
					Datum		keys[INDEX_MAX_KEYS];
					bool		keynulls[INDEX_MAX_KEYS];
					int			a;

					if (per_page[k])
					{
						if (ItemPointerGetBlockNumber(&slots[s]->tts_tid) == last_page[k])
							continue;
						last_page[k] = ItemPointerGetBlockNumber(&slots[s]->tts_tid);
					}

					for (a = 0; a < ii[k]->ii_NumIndexAttrs; a++)
					{
						keys[a] = vals[ii[k]->ii_IndexAttrNumbers[a] - 1];
						keynulls[a] = isnull[ii[k]->ii_IndexAttrNumbers[a] - 1];
					}
					index_insert(idx[k], keys, keynulls, &slots[s]->tts_tid, rel,
								 idx[k]->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
								 false, ii[k]);
					if (summarize_now[k] && last_page[k] % BrinGetPagesPerRange(idx[k]) == 0)
						DirectFunctionCall2(brin_summarize_range, ObjectIdGetDatum(RelationGetRelid(idx[k])),
											Int64GetDatum((int64) last_page[k]));
				}
				ExecClearTuple(slots[s]);
			}
			nslots = 0;
			MemoryContextReset(batch);
			CHECK_FOR_INTERRUPTS();
			settle_progress_update(SETTLE_PHASE_WRITING, i);
		}
	}
	for (k = 0; k < 1000; k++)
		ExecDropSingleTupleTableSlot(slots[k]);
	FreeBulkInsertState(bistate);
	for (k = 0; k < nidx; k++)
		index_close(idx[k], RowExclusiveLock);
	table_close(rel, RowExclusiveLock);
	MemoryContextDelete(batch);
	CommandCounterIncrement();
}

/*
 * Verify mode: compares every derived line with the recorded one, in output
 * order, and records the first difference as a problem.
 */
static void
compare_recorded(Run *run)
{
	Datum		args[2];
	Oid			types[2] = {INT8OID, INT8OID};
	Portal		portal;
	SPIPlanPtr	plan;
	uint32		i = 0;
	bool		differs = false;

	args[0] = Int64GetDatum(run->reseller_id);
	args[1] = Int64GetDatum(run->verify_run);
	plan = SPI_prepare("SELECT line_key, kind, revision, rule_version, clause, tier, basis, rate, fx_rate_id, "
					   "unrounded, rounded, ref FROM settle.settlement_line "
					   "WHERE reseller_id = $1 AND run_id = $2 ORDER BY line_key COLLATE \"C\", kind",
					   2, types);
	if (plan == NULL)
		elog(ERROR, "could not prepare the recorded-line query");
	portal = SPI_cursor_open(NULL, plan, args, NULL, true);
	while (!differs)
	{
		uint64		j;

		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (j = 0; j < SPI_processed && !differs; j++, i++)
		{
			HeapTuple	t = SPI_tuptable->vals[j];
			TupleDesc	d = SPI_tuptable->tupdesc;
			bool		isnull;
			char	   *key = SPI_getvalue(t, d, 1);
			char	   *ref = SPI_getvalue(t, d, 12);
			Line	   *l;
			money128	rate,
						m;
			bool		ratenull;
			Datum		rd;
			const char *what = NULL;

			if (i >= run->norder)
			{
				add_problem(run, "verify_mismatch", key,
							psprintf("recorded line %s is not derived from the run's inputs", key));
				differs = true;
				break;
			}
			l = &run->lines[run->order[i]];
			rd = SPI_getbinval(t, d, 8, &ratenull);
			if (ratenull || !numeric_to_money128(rd, &rate))
				rate = 0;
			if (strcmp(key, ARENA(run, l->key)) != 0 ||
				DatumGetChar(SPI_getbinval(t, d, 2, &isnull)) != l->kind)
				what = "is not the line derived at this position";
			else if (!lineage_money(t, d, 11, &m) || m != l->rounded)
				what = "has a different rounded amount";
			else if (!lineage_money(t, d, 10, &m) || m != l->unrounded)
				what = "has a different exact amount";
			else if (!lineage_money(t, d, 7, &m) || m != l->basis)
				what = "has a different basis";
			else if ((l->rate < 0) != ratenull ||
					 (!ratenull && rate != (money128) l->rate * (MONEY_ONE / RATE_ONE)))
				what = "has a different rate";
			else if ((ref == NULL) != (l->ref == 0) || (ref && strcmp(ref, ARENA(run, l->ref)) != 0))
				what = "has a different reference";
			if (what)
			{
				add_problem(run, "verify_mismatch", key,
							psprintf("recorded line %s (%c) %s", key,
									 DatumGetChar(SPI_getbinval(t, d, 2, &isnull)), what));
				differs = true;
			}
		}
	}
	SPI_cursor_close(portal);
	if (!differs && i < run->norder)
		add_problem(run, "verify_mismatch", ARENA(run, run->lines[run->order[i]].key),
					psprintf("derived line %s is missing from the recorded run",
							 ARENA(run, run->lines[run->order[i]].key)));
}

static Datum
problems_jsonb(Run *run)
{
	StringInfoData buf;
	int			i;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '[');
	for (i = 0; i < run->nproblems; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, ", ");
		appendStringInfoString(&buf, "{\"kind\": ");
		escape_json(&buf, run->problems[i].kind);
		appendStringInfoString(&buf, ", \"scope_key\": ");
		escape_json(&buf, run->problems[i].scope_key);
		appendStringInfoString(&buf, ", \"detail\": ");
		escape_json(&buf, run->problems[i].detail);
		appendStringInfoChar(&buf, '}');
	}
	appendStringInfoChar(&buf, ']');
	return DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data));
}

/*
 * settle._settle_reseller(reseller_id, period, run_id, previous_input_fingerprint,
 *                         carry_forward_in, verify_run)
 *
 * Settles one reseller's period as run run_id; when the input fingerprint
 * equals previous_input_fingerprint nothing is written and unchanged is
 * true.  With verify_run, re-derives that recorded run instead and writes
 * nothing.  Returns fingerprints, counts, statement totals and the problems
 * found (for the exception queue).  Internal: called by settle_period and
 * verify_run.
 */
Datum
settle_settle_reseller(PG_FUNCTION_ARGS)
{
	Run			run;
	Totals		tot;
	TupleDesc	resdesc;
	Datum		values[16];
	bool		nulls[16];
	bytea	   *in_fp,
			   *out_fp;
	bool		unchanged = false;
	char	   *period;
	int			year,
				month;
	MemoryContext old;

	/* not STRICT (the fingerprint, run, carry-forward and verify_run may be NULL) */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a reseller and a period are required")));
	period = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (get_call_result_type(fcinfo, NULL, &resdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	memset(&run, 0, sizeof(run));
	run.reseller_id = PG_GETARG_INT64(0);
	if (strlen(period) != 7 || sscanf(period, "%4d-%2d", &year, &month) != 2 || month < 1 || month > 12)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("invalid period \"%s\"", period),
				 errhint("A period is a month written YYYY-MM, e.g. 2026-10.")));
	strlcpy(run.period, period, sizeof(run.period));
	run.start = date2j(year, month, 1) - POSTGRES_EPOCH_JDATE;
	run.end = (month == 12 ? date2j(year + 1, 1, 1) : date2j(year, month + 1, 1)) - POSTGRES_EPOCH_JDATE;
	run.prev_start = (month == 1 ? date2j(year - 1, 12, 1) : date2j(year, month - 1, 1)) - POSTGRES_EPOCH_JDATE;
	run.last_day = run.end - 1;
	run.run_id = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
	run.verify_run = PG_ARGISNULL(5) ? 0 : PG_GETARG_INT64(5);
	run.carry_in = PG_ARGISNULL(4) ? 0 : datum_money(PG_GETARG_DATUM(4), false, "carry-forward");
	run.mcxt = AllocSetContextCreate(CurrentMemoryContext, "settle run", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(run.mcxt);
	reuse_begin(&run);
	run.in_fp = fp_start();
	run.out_fp = fp_start();

	settle_progress_begin(run.reseller_id, run.period);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	load_agreement(&run);
	load_versions(&run);
	load_fx(&run);
	load_catalogue(&run);
	read_lines(&run);
	settle_progress_update(SETTLE_PHASE_EVALUATING, 0);
	evaluate_charges(&run);
	evaluate_refunds(&run);
	add_corrections(&run);
	add_adjustments(&run);
	add_floors(&run);
	allocate_rounding(&run);
	order_lines(&run);
	compute_totals(&run, &tot);
	if (run.verify_run)
		compare_recorded(&run);
	MemoryContextSwitchTo(old);
	in_fp = fp_finish(run.in_fp);
	out_fp = fp_finish(run.out_fp);

	if (!PG_ARGISNULL(3) && !run.verify_run)
	{
		bytea	   *prev = PG_GETARG_BYTEA_PP(3);

		unchanged = VARSIZE_ANY_EXHDR(prev) == PG_SHA256_DIGEST_LENGTH &&
			memcmp(VARDATA_ANY(prev), VARDATA(in_fp), PG_SHA256_DIGEST_LENGTH) == 0;
	}
	if (!unchanged && !run.verify_run)
	{
		if (run.run_id <= 0)
			elog(ERROR, "a run id is required to write a settlement");
		write_lineage(&run);
	}
	/*
	 * SPI_finish returns to the context that was current at SPI_connect:
	 * run.mcxt, which is deleted below.  Everything returned is built in the
	 * caller's context.
	 */
	SPI_finish();
	MemoryContextSwitchTo(old);
	settle_progress_end();

	memset(nulls, 0, sizeof(nulls));
	values[0] = BoolGetDatum(unchanged);
	values[1] = PointerGetDatum(in_fp);
	values[2] = PointerGetDatum(out_fp);
	values[3] = Int64GetDatum((int64) run.nlines);
	values[4] = Int64GetDatum(tot.lines_out);
	values[5] = money128_to_numeric(tot.gross, run.minor_unit);
	values[6] = money128_to_numeric(tot.commissionable, run.minor_unit);
	values[7] = money128_to_numeric(tot.commission, run.minor_unit);
	values[8] = money128_to_numeric(tot.refunds, run.minor_unit);
	values[9] = money128_to_numeric(tot.corrections, run.minor_unit);
	values[10] = money128_to_numeric(tot.adjustments, run.minor_unit);
	values[11] = money128_to_numeric(tot.total, run.minor_unit);
	values[12] = money128_to_numeric(run.carry_in, run.minor_unit);
	values[13] = money128_to_numeric(tot.carry_out, run.minor_unit);
	values[14] = money128_to_numeric(tot.net, run.minor_unit);
	values[15] = problems_jsonb(&run);
	MemoryContextDelete(run.mcxt);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(resdesc), values, nulls)));
}

/*
 * settle._summarize_lineage(): summarises the block ranges of
 * settle.settlement_line's BRIN indexes that are not yet summarised (those
 * write_lineage could not summarise as it started them), so that the runs
 * just written are found by their pages rather than by reading every
 * unsummarised page.  Returns false when another session held the lock one
 * of them needs: those ranges are left to it, autovacuum (autosummarize) or
 * VACUUM.
 */
Datum
settle_summarize_lineage(PG_FUNCTION_ARGS)
{
	Relation	rel = table_open(settle_relid("settlement_line"), AccessShareLock);
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	bool		all = true;

	foreach(lc, indexes)
	{
		Oid			index = lfirst_oid(lc);
		Relation	idx = index_open(index, AccessShareLock);
		bool		brin = idx->rd_rel->relam == BRIN_AM_OID;

		index_close(idx, AccessShareLock);
		if (!brin)
			continue;
		if (lock_for_summarizing(RelationGetRelid(rel), index))
			DirectFunctionCall1(brin_summarize_new_values, ObjectIdGetDatum(index));
		else
			all = false;
	}
	table_close(rel, AccessShareLock);
	PG_RETURN_BOOL(all);
}
