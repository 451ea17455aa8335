/*
 * run_lineage.c — the lineage phase of a settlement run: the included lines
 * in output order, the statement totals and output fingerprint, and the
 * settlement lines written (settle mode) or compared with the recorded ones
 * (verify mode); and settle._summarize_lineage(), which summarises the
 * lineage's BRIN ranges the writes could not.  See run.h.
 */
#include "postgres.h"

#include "access/brin.h"
#include "access/brin_internal.h"
#include "access/genam.h"
#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/index.h"
#include "catalog/pg_am.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "progress.h"
#include "run.h"

PG_FUNCTION_INFO_V1(settle_summarize_lineage);

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
 * The rounding allocation hands out tied units in this order (run_round).
 * (line_key, kind) identifies a settlement line, and no unique index
 * enforces it (see settle.settlement_line): the order must be strict.
 */
void
run_order_lines(Run *run)
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

void
run_compute_totals(Run *run, Totals *tot)
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
void
run_write_lineage(Run *run)
{
	Oid			relid = settle_reseller_relid("settlement_line", run->reseller_id, NULL, NULL);
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
void
run_compare_recorded(Run *run)
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
				run_add_problem(run, "verify_mismatch", key,
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
			else if (!run_lineage_money(t, d, 11, &m) || m != l->rounded)
				what = "has a different rounded amount";
			else if (!run_lineage_money(t, d, 10, &m) || m != l->unrounded)
				what = "has a different exact amount";
			else if (!run_lineage_money(t, d, 7, &m) || m != l->basis)
				what = "has a different basis";
			else if ((l->rate < 0) != ratenull ||
					 (!ratenull && rate != (money128) l->rate * (MONEY_ONE / RATE_ONE)))
				what = "has a different rate";
			else if ((ref == NULL) != (l->ref == 0) || (ref && strcmp(ref, ARENA(run, l->ref)) != 0))
				what = "has a different reference";
			if (what)
			{
				run_add_problem(run, "verify_mismatch", key,
							psprintf("recorded line %s (%c) %s", key,
									 DatumGetChar(SPI_getbinval(t, d, 2, &isnull)), what));
				differs = true;
			}
		}
	}
	SPI_cursor_close(portal);
	if (!differs && i < run->norder)
		run_add_problem(run, "verify_mismatch", ARENA(run, run->lines[run->order[i]].key),
					psprintf("derived line %s is missing from the recorded run",
							 ARENA(run, run->lines[run->order[i]].key)));
}

/*
 * settle._summarize_lineage(): summarises the block ranges of
 * settle.settlement_line's BRIN indexes that are not yet summarised (those
 * run_write_lineage could not summarise as it started them), so that the runs
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
