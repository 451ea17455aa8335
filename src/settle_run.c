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
 *
 * Source layout: this file is the entry point, which reads as the pipeline;
 * each phase has its own file (run_load.c, run_read.c, run_evaluate.c,
 * run_round.c, run_lineage.c) and run.h holds the run state they share.
 */
#include "postgres.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "progress.h"
#include "settle.h"
#include "run.h"

PG_FUNCTION_INFO_V1(settle_settle_reseller);

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
	settle_bulk_priority();
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
	run.carry_in = PG_ARGISNULL(4) ? 0 : run_datum_money(PG_GETARG_DATUM(4), false, "carry-forward");
	run.mcxt = AllocSetContextCreate(CurrentMemoryContext, "settle run", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(run.mcxt);
	run_reuse_begin(&run);
	run.in_fp = fp_start();
	run.out_fp = fp_start();

	settle_progress_begin(run.reseller_id, run.period);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the pipeline, one phase a file (run.h) */
	run_load(&run);
	run_read_lines(&run);
	run_evaluate(&run);
	run_add_floors(&run);
	run_order_lines(&run);
	run_round(&run);
	run_compute_totals(&run, &tot);
	if (run.verify_run)
		run_compare_recorded(&run);
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
		run_write_lineage(&run);
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
