/*
 * run_load.c — the load phase of a settlement run: what every line is
 * settled against, read before the lines — the agreement in force, the rule
 * versions of the period (compiled), the month-end FX rates, the product
 * catalogue and the reseller's customers — each fed into the input
 * fingerprint in a fixed order.  See run.h.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "run.h"

/* A column as an interned string, NULL when null. */
static const char *
intern_col(Run *run, HeapTuple t, TupleDesc d, int col)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);
	const char *last = NULL;

	return intern_datum(run, v, isnull, &last);
}

/* A numeric column as money (0 when null). */
static money128
money_col(HeapTuple t, TupleDesc d, int col, const char *what)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);

	return run_datum_money(v, isnull, what);
}

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
		e->category = run_intern(run, cat, strlen(cat));
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

/* Loads what the lines are settled against, in the order fingerprinted. */
void
run_load(Run *run)
{
	load_agreement(run);
	load_versions(run);
	load_fx(run);
	load_catalogue(run);
}
