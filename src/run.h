/*
 * run.h — the state of one reseller's settlement run, shared by the phases
 * of the engine behind settle.settle_period() and settle.verify_run():
 *
 *   settle_run.c     the entry point, settle._settle_reseller(): the pipeline
 *   run_load.c       load: the agreement, rule versions, FX rates, catalogue
 *   run_read.c       read: the period's bill line revisions, in key order
 *   run_evaluate.c   evaluate: charges, refunds, corrections, adjustments
 *   run_round.c      round: period floors; the statement total and its
 *                    allocation to lines, ties in line key order
 *   run_lineage.c    lineage: output order, totals, the settlement lines
 *                    written (or compared, in verify mode)
 *   run_util.c       fingerprints' and buffers' helpers, problems, amounts
 *
 * Not for use outside src/settle_run.c and src/run_*.c.  Functions every
 * line passes through are static inline here, so that splitting the engine
 * into files costs nothing per line.
 */
#ifndef SETTLE_RUN_H
#define SETTLE_RUN_H

#include "access/htup.h"
#include "access/tupdesc.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "port/pg_bswap.h"
#include "fmgr.h"
#include "utils/date.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "numeric_fast.h"
#include "rule_pg.h"
#include "settle.h"

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
	money128	commission;		/* running net, compared with the customer floor */
	money128	cap_used;		/* running positive commission: the customer cap */
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
				reseller_commission,	/* net, compared with the floor */
				reseller_cap_used;	/* positive commission only: the cap */
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

/*
 * A heap position and the rank of its index entry in key order, in one
 * integer that orders like the heap: block << 32 | offset << 16 | rank.
 */
#define READ_CHUNK 65536		/* ranks fit in 16 bits */
#define TID_KEY(block, offset, rank) \
	(((uint64) (block) << 32) | ((uint64) (offset) << 16) | (uint64) (rank))
#define TID_KEY_BLOCK(k)	((BlockNumber) ((k) >> 32))
#define TID_KEY_OFFSET(k)	((OffsetNumber) (((k) >> 16) & 0xFFFF))
#define TID_KEY_RANK(k)		((uint32) ((k) & 0xFFFF))

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
typedef struct RunReuse
{
	MemoryContext cxt;
	Line	   *lines;
	uint32		cap_lines;
	char	   *arena;
	uint32		arena_cap;
	uint64	   *tids;			/* READ_CHUNK index entries (TID_KEY) */
	uint64	   *tids_tmp;		/* and room to sort them */
	uint32	   *tuple_at;		/* READ_CHUNK offsets into batch, by rank */
	char	   *batch;			/* copies of a chunk's heap tuples */
	Size		batch_cap;
} RunReuse;

extern RunReuse run_reuse;

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

/* ---------- fingerprints ---------- */

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

static inline void
fp_flush(Fingerprint *fp)
{
	if (fp->len > 0 && pg_cryptohash_update(fp->ctx, fp->buf, fp->len) < 0)
		elog(ERROR, "could not update SHA-256 context");
	fp->len = 0;
}

static inline void
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

static inline void
fp_str(Fingerprint *fp, const char *s)
{
	uint32		len = s ? (uint32) strlen(s) : 0xFFFFFFFF;
	uint32		be = pg_hton32(len);

	fp_bytes(fp, &be, 4);
	if (s)
		fp_bytes(fp, s, len);
}

static inline void
fp_int(Fingerprint *fp, int64 v)
{
	uint64		be = pg_hton64((uint64) v);

	fp_bytes(fp, &be, 8);
}

static inline void
fp_money(Fingerprint *fp, money128 v)
{
	fp_int(fp, (int64) (v >> 64));
	fp_int(fp, (int64) (uint64) v);
}

static inline Fingerprint *
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

static inline bytea *
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

/* ---------- the arena and the lines ---------- */

static inline uint32
arena_put(Run *run, const char *s, size_t len)
{
	uint32		off;

	if (run->arena_len + len + 1 > run->arena_cap)
	{
		run_reuse.arena_cap = run->arena_cap = Max(run->arena_cap * 2, run->arena_len + len + 1 + 65536);
		run_reuse.arena = run->arena = repalloc_huge(run->arena, run->arena_cap);
	}
	off = run->arena_len;
	memcpy(run->arena + off, s, len);
	run->arena[off + len] = '\0';
	run->arena_len += len + 1;
	return off;
}

#define ARENA(run, off) ((run)->arena + (off))

static inline Line *
new_line(Run *run)
{
	if (run->nlines == run->cap_lines)
	{
		run_reuse.cap_lines = run->cap_lines = Max(1024, run->cap_lines * 2);
		run_reuse.lines = run->lines = repalloc_huge(run->lines, sizeof(Line) * (Size) run->cap_lines);
	}
	memset(&run->lines[run->nlines], 0, sizeof(Line));
	return &run->lines[run->nlines++];
}

/* ---------- amounts ---------- */

/*
 * A bill amount (billed, list or paid cost): up to 16 decimal places and
 * below 10^14 in magnitude.  False when it cannot be held exactly.
 */
static inline bool
amount_ok(Datum d, money128 *out)
{
	return numeric_to_money128(d, out) && *out < MONEY_MAX_RAW && *out > -MONEY_MAX_RAW;
}

/*
 * x * rate (both 10^-16 units; the rate has at most 8 decimal places),
 * rounded half-even to 10^-FX_SCALE.  x may have 16 decimal places: it is
 * split at 10^-8 so that every partial product stays exact in int128.
 */
static inline money128
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

/* ---------- run_util.c ---------- */

extern void run_reuse_begin(Run *run);
extern const char *run_intern(Run *run, const char *s, size_t len);
extern void run_add_problem(Run *run, const char *kind, const char *scope_key, const char *detail);
extern void run_forget_problems(Run *run, int n);
extern money128 run_datum_money(Datum d, bool isnull, const char *what);
extern bool run_lineage_money(HeapTuple t, TupleDesc d, int col, money128 *out);
extern char *run_date_text(DateADT d);

/* As run_intern(), for a text datum; neighbouring lines mostly repeat the last value. */
static inline const char *
intern_datum(Run *run, Datum d, bool isnull, const char **last)
{
	text	   *t;
	size_t		len;

	if (isnull)
		return NULL;
	t = DatumGetTextPP(d);
	len = VARSIZE_ANY_EXHDR(t);
	if (*last == NULL || strncmp(*last, VARDATA_ANY(t), len) != 0 || (*last)[len] != '\0')
		*last = run_intern(run, VARDATA_ANY(t), len);
	return *last;
}

/* ---------- the phases, in pipeline order ---------- */

/* run_load.c: the agreement, rule versions, FX rates, products, customers */
extern void run_load(Run *run);

/* run_read.c: the period's bill line revisions into run->lines */
extern void run_read_lines(Run *run);

/* run_evaluate.c: charges, refund reversals, corrections, adjustments */
extern void run_evaluate(Run *run);

/*
 * run_round.c: period floor top-ups (before run_order_lines); the rounded
 * total allocated to lines (after it: ties go in output order)
 */
extern void run_add_floors(Run *run);
extern void run_round(Run *run);

/* run_lineage.c: output order, statement totals, the lineage written or compared */
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

extern void run_order_lines(Run *run);
extern void run_compute_totals(Run *run, Totals *tot);
extern void run_write_lineage(Run *run);
extern void run_compare_recorded(Run *run);

#endif							/* SETTLE_RUN_H */
