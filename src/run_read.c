/*
 * run_read.c — the read phase of a settlement run: the current revision of
 * every bill line of the reseller dated in the period (and the previous
 * period's refunds), in line-key order, taken into run->lines — straight from
 * the primary key when settling, through the recorded lineage when
 * verifying.  Each line is placed (rule version, customer, tags, FX) as it is
 * taken.  See run.h.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/itup.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/fmgroids.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "progress.h"
#include "run.h"

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
			run_forget_problems(run, run->row_problems);
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
		run_add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
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
		run_add_problem(run, "missing_rule", psprintf("rule:%lld:%s", (long long) run->agreement_id,
												  run->period),
					psprintf("No rule version of agreement %lld is in force on %s.",
							 (long long) run->agreement_id, run_date_text(l->date)));
		return;
	}

	/* currency: convert into the settlement currency at the month-end rate */
	l->fx_rate_id = 0;
	if (strcmp(ccy, run->currency) != 0)
	{
		fx = find_fx(run, ccy);
		if (fx == NULL)
		{
			char	   *scope = psprintf("fx:%s/%s:%s", ccy, run->currency, run_date_text(run->last_day));

			/* never guessed: the line earns nothing until a rate exists */
			run_add_problem(run, "missing_fx_rate", scope,
						psprintf("No FX rate %s to %s dated %s: lines in %s cannot be converted.",
								 ccy, run->currency, run_date_text(run->last_day), ccy));
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
		run_add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
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
		run_add_problem(run, "unmapped_customer", psprintf("line:%s", ARENA(run, l->key)),
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
								date, date, run_date_text(run->start)), 2, types);
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

/*
 * Sorts a chunk of index entries (TID_KEY) into heap order: a least
 * significant digit radix sort on the block and offset bytes (the rank
 * below them is unique), skipping the bytes all entries share (a reseller's
 * lines span a few thousand blocks, so most of the block's bytes).  A
 * comparison sort of a 64k chunk cost about 4% of settle_period.
 */
static void
sort_tid_keys(uint64 *keys, uint64 *tmp, uint32 n)
{
	uint32		count[6][256];
	uint64	   *src = keys,
			   *dst = tmp;
	uint32		i;
	int			d;

	if (n < 2)
		return;
	memset(count, 0, sizeof(count));
	for (i = 0; i < n; i++)
		for (d = 0; d < 6; d++)
			count[d][(keys[i] >> (16 + 8 * d)) & 0xFF]++;
	for (d = 0; d < 6; d++)
	{
		int			shift = 16 + 8 * d;
		uint32		at[256];
		uint32		sum = 0;
		int			b;

		if (count[d][(src[0] >> shift) & 0xFF] == n)
			continue;			/* every entry has this byte */
		for (b = 0; b < 256; b++)
		{
			at[b] = sum;
			sum += count[d][b];
		}
		for (i = 0; i < n; i++)
			dst[at[(src[i] >> shift) & 0xFF]++] = src[i];
		{
			uint64	   *t = src;

			src = dst;
			dst = t;
		}
	}
	if (src != keys)
		memcpy(keys, src, sizeof(uint64) * n);
}

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
	Relation	heap = table_open(settle_reseller_relid("bill_line", run->reseller_id, NULL, NULL), AccessShareLock);
	Relation	pk = index_open(RelationGetPrimaryKeyIndex(heap), AccessShareLock);
	TupleDesc	desc = RelationGetDescr(heap);
	TupleTableSlot *slot = table_slot_create(heap, NULL);
	Snapshot	snap = GetActiveSnapshot();
	uint64	   *tr = run_reuse.tids;
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
			tr[n] = TID_KEY(ItemPointerGetBlockNumber(tid), ItemPointerGetOffsetNumber(tid), n);
			n++;
		}
		if (n == 0)
			break;
		CHECK_FOR_INTERRUPTS();
		sort_tid_keys(tr, run_reuse.tids_tmp, n);
		/* fetched in heap order, copied by rank (UINT32_MAX: not visible) */
		used = 0;
		for (i = 0; i < n; i++)
		{
			ItemPointerData ip;
			bool		call_again = false;
			bool		all_dead;
			HeapTuple	t;

			ItemPointerSet(&ip, TID_KEY_BLOCK(tr[i]), TID_KEY_OFFSET(tr[i]));
			if (!table_index_fetch_tuple(fetch, &ip, snap, slot, &call_again, &all_dead))
			{
				run_reuse.tuple_at[TID_KEY_RANK(tr[i])] = UINT32_MAX;
				continue;
			}
			t = ExecFetchSlotHeapTuple(slot, false, NULL);
			if (used + MAXALIGN(t->t_len) > run_reuse.batch_cap)
			{
				if (used + MAXALIGN(t->t_len) > UINT32_MAX)
					elog(ERROR, "settle line batch too large");
				run_reuse.batch_cap = Max(run_reuse.batch_cap * 2, used + MAXALIGN(t->t_len));
				run_reuse.batch = repalloc_huge(run_reuse.batch, run_reuse.batch_cap);
			}
			memcpy(run_reuse.batch + used, t->t_data, t->t_len);
			run_reuse.tuple_at[TID_KEY_RANK(tr[i])] = (uint32) used;
			used += MAXALIGN(t->t_len);
		}
		ExecClearTuple(slot);
		for (i = 0; i < n; i++)
		{
			Datum		v[R__COUNT];
			bool		nl[R__COUNT];
			DateADT		date;
			HeapTupleData t;

			if (run_reuse.tuple_at[i] == UINT32_MAX)
				continue;		/* not visible to this snapshot */
			t.t_data = (HeapTupleHeader) (run_reuse.batch + run_reuse.tuple_at[i]);
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

void
run_read_lines(Run *run)
{
	fp_str(run->in_fp, "lines");
	if (run->verify_run)
		read_lines_recorded(run);
	else
		read_lines_direct(run);
}
