/*
 * recon_scan.c — settle.recon_scan(resellers, p_start, p_end): the period's
 * bill lines read once, without copying them.
 *
 * settle.reconcile used to copy the period's current lines into a temporary
 * table and take every aggregate its checks need from that copy; the copy
 * alone took twice as long as a bare sum() over the same lines.  This
 * function reads the lines once (the executor's scan of bill_line_period_idx
 * or the heap, whatever the planner picks for the period, through SPI with a
 * receiver that takes each row as it comes: no copy) and returns one row per
 * billing account, product and currency (lower-case product, currency as
 * text) of the current revisions:
 *
 *   reseller_id   the highest reseller id of its lines
 *   mt, fp        settle.money_total(billed_cost, currency) and
 *                 settle.line_fingerprint(line_key, billed_cost): the same
 *                 exact sums and hashes (recon_agg.c)
 *   n             the number of lines
 *   days          the days with lines as bits from p_start (bit 0 = p_start;
 *                 null when none), days_out the lines dated outside the first
 *                 62 days
 *   off_identity  the lines whose billed cost differs from list cost -
 *                 discount - coupons (exactly, by value)
 *   tids          the lines' tuple ids: a check fetches the lines of the
 *                 groups it names by TID scan, not by reading the period again
 *   dup_tids      those of its lines whose source record is also held by
 *                 another line key (candidates: hashes may collide; null when
 *                 none)
 *
 * Current revisions: every line is added as it comes; the key of a line
 * whose revision is above 1 is a candidate (a key's earlier revisions always
 * have a later one above 1).  After the pass the candidates' rows are read
 * by key (the hash index on line_key), the ones below their key's latest
 * revision subtracted from their group: counts, the 128-bit total, the
 * fingerprint's wrapping sum and xor, day counts and reseller counts are
 * all exactly reversible.  The reads run under the calling statement's
 * snapshot, so the pass and the revisions agree.
 *
 * Money is exact: amounts become 128-bit integers of 10^-16 (numeric_fast.c),
 * as in settle.money_total; no float anywhere.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/params.h"
#include "storage/itemptr.h"
#include "tcop/dest.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"
#include "catalog/pg_collation.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/typcache.h"

#include "money.h"
#include "numeric_fast.h"
#include "recon_agg.h"

PG_FUNCTION_INFO_V1(settle_recon_scan);

#define NDAYS 62

/* the columns of both reads, in this order */
enum
{
	C_TID, C_KEY, C_REV, C_RESELLER, C_ACCT, C_PROD, C_CUR, C_BILLED, C_LIST, C_DISCOUNT,
	C_COUPON, C_DAY, C_RECORD, C_NCOLS
};

/*
 * Plain columns: the product is lower-cased (as lower() does) once per
 * distinct code, the currency's blank padding dropped (as ::text does) and
 * the UTC day taken from the timestamp in C, not once per line by the
 * executor.
 */
#define LINE_COLUMNS \
	"b.ctid AS tid, b.line_key, b.revision, b.reseller_id, b.billing_account_id, b.product_code, " \
	"b.billing_currency AS currency, b.billed_cost, b.list_cost, b.discount, b.coupon_deduction, " \
	"b.charge_period_start, b.source_record_id"
#define LINE_FILTER \
	"b.reseller_id = ANY ($1) AND b.billing_period_start >= $2 AND b.billing_period_start < $3"

#define SCAN_SQL "SELECT " LINE_COLUMNS " FROM settle.bill_line b WHERE " LINE_FILTER

typedef struct RsCount
{
	int64		rid;
	int64		n;
} RsCount;

typedef struct TidVec
{
	ItemPointerData *v;
	int			n;
	int			cap;
} TidVec;

typedef struct RGroup
{
	char	   *acct;
	char	   *prod;
	int			alen;
	int			plen;
	char		cur[3];
	int			clen;
	uint32		hash;
	int64		n;
	int64		mtlines;		/* lines with an amount (settle.money_total's count) */
	money128	total;
	uint64		fsum;
	uint64		fxor;
	int64		days_out;
	int64		off;
	bool		superseded;		/* a revision of one of its lines was taken away */
	int32		daycnt[NDAYS];
	RsCount    *rs;
	int			nrs;
	int			caprs;
	TidVec		tids;
	TidVec		dups;
} RGroup;

/* groups by (account, product, currency): the key is an index into the groups (-1: the probe) */
typedef struct GroupEntry
{
	int32		gidx;
	uint32		hash;
	char		status;
} GroupEntry;

typedef struct RScan RScan;

static inline RGroup *group_at(RScan *st, int32 i);
static inline bool group_equal(RScan *st, int32 a, int32 b);

#define SH_PREFIX grouphash
#define SH_ELEMENT_TYPE GroupEntry
#define SH_KEY_TYPE int32
#define SH_KEY gidx
#define SH_HASH_KEY(tb, k) (group_at((RScan *) (tb)->private_data, (k))->hash)
#define SH_EQUAL(tb, a, b) group_equal((RScan *) (tb)->private_data, (a), (b))
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* a set of 64-bit values that are already hashes (line keys) or packed tids */
typedef struct U64Entry
{
	uint64		h;
	char		status;
} U64Entry;

#define SH_PREFIX u64set
#define SH_ELEMENT_TYPE U64Entry
#define SH_KEY_TYPE uint64
#define SH_KEY h
#define SH_HASH_KEY(tb, k) ((uint32) (((k) * UINT64CONST(0x9e3779b97f4a7c15)) >> 32))	/* tids are not hashes */
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* source records: the first line seen with each (hash), its later lines chained */
typedef struct RecEntry
{
	uint64		rec;
	uint64		key;			/* hash of the first line key seen with it */
	ItemPointerData tid;		/* that line */
	char		status;
	bool		repeated;		/* seen under another key (hash) */
	int32		gidx;
	int32		next;			/* its later lines in RScan.more, -1: none */
} RecEntry;

#define SH_PREFIX rechash
#define SH_ELEMENT_TYPE RecEntry
#define SH_KEY_TYPE uint64
#define SH_KEY rec
#define SH_HASH_KEY(tb, k) ((uint32) ((k) ^ ((k) >> 32)))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* product codes as read -> lower-cased (an index into RScan.prods; -1: the probe) */
typedef struct Prod
{
	char	   *raw;
	int			rlen;
	uint32		hash;
	text	   *low;
} Prod;

typedef struct ProdEntry
{
	int32		pidx;
	uint32		hash;
	char		status;
} ProdEntry;

static inline Prod *prod_at(RScan *st, int32 i);

#define SH_PREFIX prodhash
#define SH_ELEMENT_TYPE ProdEntry
#define SH_KEY_TYPE int32
#define SH_KEY pidx
#define SH_HASH_KEY(tb, k) (prod_at((RScan *) (tb)->private_data, (k))->hash)
#define SH_EQUAL(tb, a, b) (prod_at((RScan *) (tb)->private_data, (a))->rlen == prod_at((RScan *) (tb)->private_data, (b))->rlen && \
	memcmp(prod_at((RScan *) (tb)->private_data, (a))->raw, prod_at((RScan *) (tb)->private_data, (b))->raw, \
		   prod_at((RScan *) (tb)->private_data, (a))->rlen) == 0)
#define SH_STORE_HASH
#define SH_GET_HASH(tb, a) ((a)->hash)
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

typedef struct MoreLine
{
	ItemPointerData tid;
	int32		gidx;
	int32		next;
} MoreLine;

struct RScan
{
	MemoryContext cxt;			/* everything below */
	MemoryContext rowcxt;		/* reset after each row */
	DateADT		p_start;
	RGroup	   *groups;
	int32		ngroups;
	int32		capgroups;
	RGroup		probe;
	int32		last;			/* the group of the previous line, -1 */
	grouphash_hash *gh;
	rechash_hash *recs;
	MoreLine   *more;
	int32		nmore;
	int32		capmore;
	Datum	   *cands;			/* texts of the keys seen twice (by hash) */
	int			ncands;
	int			capcands;
	u64set_hash *superseded;	/* packed tids of the superseded revisions */
	Prod	   *prods;
	int32		nprods;
	int32		capprods;
	Prod		pprobe;
	int32		lastprod;
	prodhash_hash *ph;
};

static inline Prod *
prod_at(RScan *st, int32 i)
{
	return i < 0 ? &st->pprobe : &st->prods[i];
}

/* the product code lower-cased as SQL's lower() does (the database's collation) */
static text *
lower_product(RScan *st, text *raw)
{
	Prod	   *p = &st->pprobe;
	ProdEntry  *e;
	bool		found;

	p->raw = VARDATA_ANY(raw);
	p->rlen = VARSIZE_ANY_EXHDR(raw);
	if (st->lastprod >= 0 && st->prods[st->lastprod].rlen == p->rlen &&
		memcmp(st->prods[st->lastprod].raw, p->raw, p->rlen) == 0)
		return st->prods[st->lastprod].low;
	p->hash = (uint32) recon_bytes_hash(p->raw, p->rlen);
	e = prodhash_insert(st->ph, -1, &found);
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);
		Prod	   *n;

		if (st->nprods == st->capprods)
		{
			st->capprods *= 2;
			st->prods = repalloc(st->prods, sizeof(Prod) * st->capprods);
		}
		n = &st->prods[st->nprods];
		n->raw = palloc(p->rlen + 1);
		memcpy(n->raw, p->raw, p->rlen);
		n->rlen = p->rlen;
		n->hash = p->hash;
		n->low = DatumGetTextPP(DirectFunctionCall1Coll(lower, DEFAULT_COLLATION_OID,
														PointerGetDatum(cstring_to_text_with_len(p->raw, p->rlen))));
		e->pidx = st->nprods++;
		MemoryContextSwitchTo(old);
	}
	st->lastprod = e->pidx;
	return st->prods[e->pidx].low;
}

static inline RGroup *
group_at(RScan *st, int32 i)
{
	return i < 0 ? &st->probe : &st->groups[i];
}

/* account, product and currency (a length of -1: null) */
static inline bool
same_key(RGroup *x, RGroup *y)
{
	return x->alen == y->alen && x->plen == y->plen && x->clen == y->clen &&
		memcmp(x->cur, y->cur, Max(x->clen, 0)) == 0 &&
		memcmp(x->acct, y->acct, Max(x->alen, 0)) == 0 &&
		memcmp(x->prod, y->prod, Max(x->plen, 0)) == 0;
}

static inline bool
group_equal(RScan *st, int32 a, int32 b)
{
	RGroup	   *x = group_at(st, a);
	RGroup	   *y = group_at(st, b);

	return x->hash == y->hash && same_key(x, y);
}

static inline uint64
tid_pack(ItemPointer t)
{
	return ((uint64) ItemPointerGetBlockNumberNoCheck(t) << 16) | ItemPointerGetOffsetNumberNoCheck(t);
}

static void
tidvec_push(MemoryContext cxt, TidVec *v, ItemPointer t)
{
	if (v->n == v->cap)
	{
		int			cap = v->cap == 0 ? 32 : v->cap * 2;

		v->v = v->v == NULL ? MemoryContextAlloc(cxt, sizeof(ItemPointerData) * cap)
			: repalloc(v->v, sizeof(ItemPointerData) * cap);
		v->cap = cap;
	}
	v->v[v->n++] = *t;
}

static void
amount_error(Datum amount)
{
	ereport(ERROR,
			(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
			 errmsg("amount %s cannot be added exactly",
					DatumGetCString(DirectFunctionCall1(numeric_out, amount))),
			 errdetail("Money amounts must be finite, below 10^14 and have at most 16 decimal places.")));
}

static inline bool
money_in_range(Datum d, money128 *v)
{
	return numeric_to_money128(d, v) && *v < MONEY_MAX_RAW && *v > -MONEY_MAX_RAW;
}

/* billed <> list - discount - coupons, by value (numeric when a value is out of money's range) */
static bool
off_identity(Datum *v)
{
	money128	b,
				l,
				d,
				c;

	if (money_in_range(v[C_BILLED], &b) && money_in_range(v[C_LIST], &l) &&
		money_in_range(v[C_DISCOUNT], &d) && money_in_range(v[C_COUPON], &c))
		return b != l - d - c;
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp, v[C_BILLED],
											 DirectFunctionCall2(numeric_sub,
																 DirectFunctionCall2(numeric_sub, v[C_LIST], v[C_DISCOUNT]),
																 v[C_COUPON]))) != 0;
}

/* the group of a line, created on first sight */
static int32
find_group(RScan *st, text *acct, text *prod, text *cur, bool create)
{
	RGroup	   *p = &st->probe;
	GroupEntry *e;
	bool		found;
	RGroup	   *g;

	p->acct = acct ? VARDATA_ANY(acct) : "";
	p->alen = acct ? VARSIZE_ANY_EXHDR(acct) : -1;
	p->prod = prod ? VARDATA_ANY(prod) : "";
	p->plen = prod ? VARSIZE_ANY_EXHDR(prod) : -1;
	p->clen = -1;
	if (cur)
	{
		/* char(3): trailing blanks dropped, as ::text does */
		p->clen = Min(VARSIZE_ANY_EXHDR(cur), 3);
		while (p->clen > 0 && VARDATA_ANY(cur)[p->clen - 1] == ' ')
			p->clen--;
		memcpy(p->cur, VARDATA_ANY(cur), p->clen);
		if (VARSIZE_ANY_EXHDR(cur) > 3)		/* (not from a char(3) column) */
			p->clen = VARSIZE_ANY_EXHDR(cur) + 100;
	}
	if (st->last >= 0 && same_key(&st->groups[st->last], p))
		return st->last;
	p->hash = (uint32) (recon_bytes_hash(p->acct, Max(p->alen, 0)) ^ (uint64) (p->alen + 1) ^
						(recon_bytes_hash(p->prod, Max(p->plen, 0)) * UINT64CONST(0x9e3779b97f4a7c15)) ^
						((uint64) (p->plen + 1) << 20) ^
						(recon_bytes_hash(p->cur, Max(Min(p->clen, 3), 0)) >> 7) ^ ((uint64) (p->clen + 1) << 40));
	if (!create)
	{
		e = grouphash_lookup(st->gh, -1);
		if (e == NULL)
			elog(ERROR, "recon_scan: a superseded revision's group was not seen in the scan");
		return st->last = e->gidx;
	}
	e = grouphash_insert(st->gh, -1, &found);
	if (!found)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		if (st->ngroups == st->capgroups)
		{
			st->capgroups *= 2;
			st->groups = repalloc_huge(st->groups, sizeof(RGroup) * st->capgroups);
		}
		g = &st->groups[st->ngroups];
		memset(g, 0, sizeof(RGroup));
		g->acct = palloc(Max(p->alen, 0) + 1);
		memcpy(g->acct, p->acct, Max(p->alen, 0));
		g->alen = p->alen;
		g->prod = palloc(Max(p->plen, 0) + 1);
		memcpy(g->prod, p->prod, Max(p->plen, 0));
		g->plen = p->plen;
		memcpy(g->cur, p->cur, Max(Min(p->clen, 3), 0));
		g->clen = p->clen;
		g->hash = p->hash;
		e->gidx = st->ngroups++;
		MemoryContextSwitchTo(old);
	}
	return st->last = e->gidx;
}

/* adds (sign 1) or takes away (sign -1) one line of a group */
static void
group_line(RScan *st, RGroup *g, int sign, uint64 keyhash, Datum *v, bool *isnull)
{
	money128	amount;
	uint64		h;
	int64		day = 0;
	TimestampTz ts;
	int			i;
	int64		rid = DatumGetInt64(v[C_RESELLER]);

	if (isnull[C_BILLED])
		h = recon_pair_hash_null(keyhash);	/* counted, not added (as the aggregates do) */
	else
	{
		if (!money_in_range(v[C_BILLED], &amount))
			amount_error(v[C_BILLED]);
		if (g->clen >= 0 && !recon_valid_currency(g->cur, g->clen))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid currency code \"%.*s\"", Min(g->clen, 3), g->cur),
					 errdetail("A currency is an ISO 4217 code of three upper-case letters.")));
		h = recon_pair_hash_keyhash(keyhash, amount);
		if (__builtin_add_overflow(g->total, sign > 0 ? amount : -amount, &g->total))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("money total out of range"),
					 errdetail("The sum of the amounts exceeds the exact 128-bit range.")));
		g->mtlines += sign;
	}
	if (sign > 0)
	{
		g->n++;
		g->fsum += h;
	}
	else
	{
		g->n--;
		g->fsum -= h;
	}
	g->fxor ^= h;
	ts = DatumGetTimestampTz(v[C_DAY]);
	if (!TIMESTAMP_NOT_FINITE(ts))
	{
		/* (ts AT TIME ZONE 'UTC')::date: whole days since 2000-01-01, floored */
		day = ts / USECS_PER_DAY;
		if (ts % USECS_PER_DAY < 0)
			day--;
		day -= st->p_start;
	}
	if (TIMESTAMP_NOT_FINITE(ts) || day < 0 || day >= NDAYS)
		g->days_out += sign;
	else
		g->daycnt[day] += sign;
	if (!isnull[C_LIST] && !isnull[C_BILLED] && off_identity(v))
		g->off += sign;
	for (i = 0; i < g->nrs; i++)
		if (g->rs[i].rid == rid)
			break;
	if (i == g->nrs)
	{
		if (g->nrs == g->caprs)
		{
			g->caprs = g->caprs == 0 ? 2 : g->caprs * 2;
			g->rs = g->rs == NULL ? MemoryContextAlloc(st->cxt, sizeof(RsCount) * g->caprs)
				: repalloc(g->rs, sizeof(RsCount) * g->caprs);
		}
		g->rs[g->nrs].rid = rid;
		g->rs[g->nrs].n = 0;
		g->nrs++;
	}
	g->rs[i].n += sign;
}

static void
scan_row(RScan *st, Datum *v, bool *isnull)
{
	ItemPointer tid = (ItemPointer) DatumGetPointer(v[C_TID]);
	text	   *key = DatumGetTextPP(v[C_KEY]);
	int32		gi = find_group(st, isnull[C_ACCT] ? NULL : DatumGetTextPP(v[C_ACCT]),
								isnull[C_PROD] ? NULL : lower_product(st, DatumGetTextPP(v[C_PROD])),
								isnull[C_CUR] ? NULL : DatumGetTextPP(v[C_CUR]), true);
	RGroup	   *g = &st->groups[gi];
	uint64		hk = recon_bytes_hash(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
	bool		found;

	group_line(st, g, 1, hk, v, isnull);
	tidvec_push(st->cxt, &g->tids, tid);

	/*
	 * A revision after the first: its key may have earlier ones in the
	 * period, read again by its text after the pass.  (A key's earlier
	 * revisions always have a later one with revision > 1.)
	 */
	if (DatumGetInt32(v[C_REV]) > 1)
	{
		if (st->ncands == st->capcands)
		{
			st->capcands *= 2;
			st->cands = repalloc(st->cands, sizeof(Datum) * st->capcands);
		}
		{
			/* a plain 4-byte header copy, for construct_array */
			text	   *t = (text *) MemoryContextAlloc(st->cxt, VARSIZE_ANY_EXHDR(key) + VARHDRSZ);

			SET_VARSIZE(t, VARSIZE_ANY_EXHDR(key) + VARHDRSZ);
			memcpy(VARDATA(t), VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
			st->cands[st->ncands++] = PointerGetDatum(t);
		}
	}

	if (!isnull[C_RECORD])
	{
		text	   *r = DatumGetTextPP(v[C_RECORD]);
		RecEntry   *e = rechash_insert(st->recs, recon_bytes_hash(VARDATA_ANY(r), VARSIZE_ANY_EXHDR(r)), &found);

		if (!found)
		{
			e->key = hk;
			e->tid = *tid;
			e->gidx = gi;
			e->next = -1;
			e->repeated = false;
		}
		else
		{
			if (e->key != hk)
				e->repeated = true;
			if (st->nmore == st->capmore)
			{
				st->capmore *= 2;
				st->more = repalloc_huge(st->more, sizeof(MoreLine) * st->capmore);
			}
			st->more[st->nmore].tid = *tid;
			st->more[st->nmore].gidx = gi;
			st->more[st->nmore].next = e->next;
			e->next = st->nmore++;
		}
	}
}

static void
superseded_row(RScan *st, Datum *v, bool *isnull)
{
	int32		gi = find_group(st, isnull[C_ACCT] ? NULL : DatumGetTextPP(v[C_ACCT]),
								isnull[C_PROD] ? NULL : lower_product(st, DatumGetTextPP(v[C_PROD])),
								isnull[C_CUR] ? NULL : DatumGetTextPP(v[C_CUR]), false);
	bool		found;

	text	   *key = DatumGetTextPP(v[C_KEY]);

	group_line(st, &st->groups[gi], -1, recon_bytes_hash(VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key)), v, isnull);
	st->groups[gi].superseded = true;
	u64set_insert(st->superseded, tid_pack((ItemPointer) DatumGetPointer(v[C_TID])), &found);
}

/* ---- the receiver: each row as the executor produces it, not copied ---- */

typedef struct ScanReceiver
{
	DestReceiver pub;
	RScan  *st;
	bool		superseded;
} ScanReceiver;

static bool
rcv_slot(TupleTableSlot *slot, DestReceiver *self)
{
	ScanReceiver *r = (ScanReceiver *) self;
	RScan  *st = r->st;
	MemoryContext old;

	slot_getallattrs(slot);
	old = MemoryContextSwitchTo(st->rowcxt);
	/* (account, product, currency, list and billed cost may be null) */
	if (slot->tts_isnull[C_TID] || slot->tts_isnull[C_KEY] || slot->tts_isnull[C_REV] ||
		slot->tts_isnull[C_DISCOUNT] || slot->tts_isnull[C_COUPON] ||
		slot->tts_isnull[C_DAY] || slot->tts_isnull[C_RESELLER])
		elog(ERROR, "recon_scan: a bill line column declared NOT NULL is null");
	if (r->superseded)
		superseded_row(st, slot->tts_values, slot->tts_isnull);
	else
		scan_row(st, slot->tts_values, slot->tts_isnull);
	MemoryContextSwitchTo(old);
	MemoryContextReset(st->rowcxt);
	return true;
}

static void
rcv_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	if (typeinfo->natts != C_NCOLS)
		elog(ERROR, "recon_scan: %d columns where %d were expected", typeinfo->natts, C_NCOLS);
}

static void
rcv_noop(DestReceiver *self)
{
}

static void
run_query(RScan *st, const char *sql, int nparams, Oid *types, Datum *values, bool superseded)
{
	ScanReceiver r;
	SPIExecuteOptions opt;
	ParamListInfo pl = makeParamList(nparams);
	int			i,
				rc;

	for (i = 0; i < nparams; i++)
	{
		pl->params[i].value = values[i];
		pl->params[i].isnull = false;
		pl->params[i].pflags = PARAM_FLAG_CONST;
		pl->params[i].ptype = types[i];
	}
	memset(&r, 0, sizeof(r));
	r.pub.receiveSlot = rcv_slot;
	r.pub.rStartup = rcv_startup;
	r.pub.rShutdown = rcv_noop;
	r.pub.rDestroy = rcv_noop;
	r.pub.mydest = DestNone;
	r.st = st;
	r.superseded = superseded;
	memset(&opt, 0, sizeof(opt));
	opt.params = pl;
	opt.read_only = true;		/* both reads under the calling statement's snapshot */
	opt.dest = (DestReceiver *) &r;
	rc = SPI_execute_extended(sql, &opt);
	if (rc < 0)
		elog(ERROR, "recon_scan: SPI_execute_extended failed: %s", SPI_result_code_string(rc));
}

static Datum
tid_array(TidVec *v, u64set_hash *skip)
{
	Datum	   *d = palloc(sizeof(Datum) * Max(v->n, 1));
	int			i,
				n = 0;

	for (i = 0; i < v->n; i++)
		if (skip == NULL || u64set_lookup(skip, tid_pack(&v->v[i])) == NULL)
			d[n++] = PointerGetDatum(&v->v[i]);
	return PointerGetDatum(construct_array(d, n, TIDOID, sizeof(ItemPointerData), false, TYPALIGN_SHORT));
}

/*
 * The planner's estimate of the rows a query returns: the hash tables of
 * keys and records are made that large at once, not grown (each growth
 * allocates, zeroes and faults in a new table and moves every entry).
 */
static double
estimate_rows(const char *sql, int nparams, Oid *types, Datum *values)
{
	List	   *raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	List	   *qs = pg_analyze_and_rewrite_fixedparams(linitial_node(RawStmt, raw), sql, types, nparams, NULL);
	ParamListInfo pl = makeParamList(nparams);
	PlannedStmt *ps;
	int			i;

	for (i = 0; i < nparams; i++)
	{
		pl->params[i].value = values[i];
		pl->params[i].isnull = false;
		pl->params[i].pflags = PARAM_FLAG_CONST;
		pl->params[i].ptype = types[i];
	}
	ps = pg_plan_query(linitial_node(Query, qs), sql, 0, pl);
	return ps->planTree->plan_rows;
}

Datum
settle_recon_scan(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	RScan  *st;
	Datum		args[4];
	Oid			types[4] = {INT8ARRAYOID, DATEOID, DATEOID, TEXTARRAYOID};
	TupleDesc	mtdesc;
	int32		i;
	rechash_iterator it;
	RecEntry   *re;
	bool		any_superseded = false;
	double		expect;

	InitMaterializedSRF(fcinfo, 0);
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_GETARG_DATUM(1);
	args[2] = PG_GETARG_DATUM(2);
	if (DATE_NOT_FINITE(PG_GETARG_DATEADT(1)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the period's first day must be a finite date")));

	st = palloc0(sizeof(RScan));
	st->cxt = AllocSetContextCreate(CurrentMemoryContext, "recon_scan", ALLOCSET_DEFAULT_SIZES);
	st->rowcxt = AllocSetContextCreate(st->cxt, "recon_scan row", ALLOCSET_SMALL_SIZES);
	st->p_start = PG_GETARG_DATEADT(1);
	st->capgroups = 1024;
	st->groups = MemoryContextAllocHuge(st->cxt, sizeof(RGroup) * st->capgroups);
	st->last = -1;
	st->gh = grouphash_create(st->cxt, 1024, st);
	expect = estimate_rows(SCAN_SQL, 3, types, args);
	expect = Min(Max(expect * 1.1, 8192), 64 * 1024 * 1024);
	st->recs = rechash_create(st->cxt, (uint32) expect, NULL);
	st->capmore = 256;
	st->more = MemoryContextAllocHuge(st->cxt, sizeof(MoreLine) * st->capmore);
	st->capcands = 256;
	st->cands = MemoryContextAlloc(st->cxt, sizeof(Datum) * st->capcands);
	st->superseded = u64set_create(st->cxt, 64, NULL);
	st->capprods = 64;
	st->prods = MemoryContextAlloc(st->cxt, sizeof(Prod) * st->capprods);
	st->lastprod = -1;
	st->ph = prodhash_create(st->cxt, 64, st);

	SPI_connect();
	run_query(st, SCAN_SQL, 3, types, args, false);
	if (st->ncands > 0)
	{
		MemoryContext old = MemoryContextSwitchTo(st->cxt);

		args[3] = PointerGetDatum(construct_array(st->cands, st->ncands, TEXTOID, -1, false, TYPALIGN_INT));
		MemoryContextSwitchTo(old);
		run_query(st,
				  "SELECT s.tid, s.line_key, s.revision, s.reseller_id, s.billing_account_id, s.product_code, s.currency, "
				  "s.billed_cost, s.list_cost, s.discount, s.coupon_deduction, s.charge_period_start, s.source_record_id "
				  "FROM (SELECT " LINE_COLUMNS ", max(b.revision) OVER (PARTITION BY b.line_key) AS latest "
				  "FROM settle.bill_line b WHERE " LINE_FILTER " AND b.line_key = ANY ($4)) s "
				  "WHERE s.revision < s.latest",
				  4, types, args, true);
		any_superseded = st->superseded->members > 0;
	}
	SPI_finish();

	/* the candidates of the duplicate check: records under two keys, their current lines */
	rechash_start_iterate(st->recs, &it);
	while ((re = rechash_iterate(st->recs, &it)) != NULL)
	{
		int32		m;

		if (!re->repeated)
			continue;
		if (!any_superseded || u64set_lookup(st->superseded, tid_pack(&re->tid)) == NULL)
			tidvec_push(st->cxt, &st->groups[re->gidx].dups, &re->tid);
		for (m = re->next; m >= 0; m = st->more[m].next)
			if (!any_superseded || u64set_lookup(st->superseded, tid_pack(&st->more[m].tid)) == NULL)
				tidvec_push(st->cxt, &st->groups[st->more[m].gidx].dups, &st->more[m].tid);
	}

	mtdesc = lookup_rowtype_tupdesc_copy(TupleDescAttr(rsinfo->setDesc, 4)->atttypid,
										 TupleDescAttr(rsinfo->setDesc, 4)->atttypmod);
	mtdesc = BlessTupleDesc(mtdesc);
	for (i = 0; i < st->ngroups; i++)
	{
		RGroup	   *g = &st->groups[i];
		Datum		values[12];
		bool		nulls[12] = {false};
		int64		rid = 0;
		bool		have_rid = false;
		uint64		days = 0;
		int			d;
		int			j;

		if (g->n == 0)
			continue;			/* all its lines were superseded by revisions in other groups */
		for (j = 0; j < g->nrs; j++)
			if (g->rs[j].n > 0 && (!have_rid || g->rs[j].rid > rid))
			{
				rid = g->rs[j].rid;
				have_rid = true;
			}
		for (d = 0; d < NDAYS; d++)
			if (g->daycnt[d] > 0)
				days |= UINT64CONST(1) << d;
		if (g->alen >= 0)
			values[0] = PointerGetDatum(cstring_to_text_with_len(g->acct, g->alen));
		else
			nulls[0] = true;
		if (g->plen >= 0)
			values[1] = PointerGetDatum(cstring_to_text_with_len(g->prod, g->plen));
		else
			nulls[1] = true;
		if (g->clen >= 0)
			values[2] = PointerGetDatum(cstring_to_text_with_len(g->cur, Min(g->clen, 3)));
		else
			nulls[2] = true;
		values[3] = Int64GetDatum(rid);
		values[4] = recon_money_total_datum(mtdesc, g->total, g->mtlines, g->clen >= 0 ? g->cur : NULL);
		values[5] = PointerGetDatum(recon_fingerprint_bytea(g->n, g->fsum, g->fxor));
		values[6] = Int64GetDatum(g->n);
		values[7] = Int64GetDatum((int64) days);
		nulls[7] = (days == 0);
		values[8] = Int64GetDatum(g->days_out);
		values[9] = Int64GetDatum(g->off);
		values[10] = tid_array(&g->tids, g->superseded ? st->superseded : NULL);
		if (g->dups.n > 0)
			values[11] = tid_array(&g->dups, NULL);
		else
			nulls[11] = true;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MemoryContextDelete(st->cxt);
	return (Datum) 0;
}
