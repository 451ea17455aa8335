/*
 * run_evaluate.c — the evaluate phase of a settlement run: every charge
 * valued by the compiled rule version in force on its date (tiers and caps
 * from the period's running totals), every refund reversed at the rate its
 * original earned, then the lines the period adds: corrections for late
 * revisions of locked periods and approved manual adjustments.  See run.h.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"

#include "progress.h"
#include "run.h"

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
		/* period caps are consumed by positive commission only (rules.md §6) */
		ctx.customer_commission_to_date = c ? c->cap_used : 0;
		ctx.reseller_commission_to_date = run->reseller_cap_used;
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
			run_add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
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
		if (res.commission > 0)
		{
			if (c)
				c->cap_used += res.commission;
			run->reseller_cap_used += res.commission;
		}
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
			money128	m = run_datum_money(r, false, "rate");

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
					run_add_problem(run, "unlinked_refund", psprintf("line:%s", ARENA(run, l->key)),
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
				run_add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
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
			run_add_problem(run, "validation", psprintf("line:%s", ARENA(run, l->key)),
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

/* a late revision or line not corrected enters the input fingerprint, and why */
static void
fp_not_corrected(Run *run, const char *key, int32 revision, const char *why)
{
	fp_str(run->in_fp, key);
	fp_int(run->in_fp, revision);
	fp_str(run->in_fp, why);
}

/*
 * Corrections: bill lines of locked periods revised after the lock.  Each
 * becomes a correction line in the first open period after the locked one,
 * at the rate the original earned, for the difference between what the new
 * revision earns and what was settled for the line so far.  A line of a
 * locked period first stored after its run is corrected the same way when it
 * is a FOCUS correction row of a settled charge (at that charge's terms,
 * nothing settled so far); any other (settled NULL) is not valued: a
 * late_line problem asks a person to settle it by an adjustment.
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
							  "FROM settle.late_revisions($1, $2) c WHERE $3 = $3 "
							  /*
							   * late_revisions has nothing to return without a locked
							   * or paid run of an earlier period (its first step): a
							   * one-time filter, so that it is not even called then
							   * (Citus cannot run the SQL function with parameters)
							   */
							  "AND EXISTS (SELECT FROM settle.run r WHERE r.reseller_id = $1 "
							  "AND r.status IN ('locked', 'paid') AND r.period < $2) "
							  "ORDER BY c.line_key COLLATE \"C\"",
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
		int32		revision = DatumGetInt32(SPI_getbinval(t, d, 2, &isnull));
		bool		settled_null;
		Datum		settled_d = SPI_getbinval(t, d, 14, &settled_null);
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
			run_add_problem(run, "validation", psprintf("line:%s", key),
						psprintf("Revision %d of bill line %s, of a locked period, has amounts that cannot be held exactly: it is not corrected.",
								 revision, key));
			fp_not_corrected(run, key, revision, "not valued");
			continue;
		}
		if (settled_null)
		{
			long long	locked_run = 0;

			if (ref)
				(void) sscanf(ref, "run:%lld/", &locked_run);
			run_add_problem(run, "late_line", psprintf("late:%s/r%d", key, revision),
						psprintf("Bill line %s arrived after its period was locked (run %lld) and corrects no settled charge: settle it with an adjustment (propose_adjustment on this exception), or dismiss this exception.",
								 key, locked_run));
			fp_not_corrected(run, key, revision, "late line");
			continue;
		}
		l = new_line(run);
		l->kind = KIND_CORRECTION;
		l->included = true;
		l->cust = -1;
		l->key = arena_put(run, key, strlen(key));
		l->revision = revision;
		r = SPI_getbinval(t, d, 3, &isnull);
		l->rate = isnull ? -1 : (int64) (run_datum_money(r, false, "rate") / (MONEY_ONE / RATE_ONE));
		l->version_no = DatumGetInt32(SPI_getbinval(t, d, 4, &isnull));
		l->clause = DatumGetInt16(SPI_getbinval(t, d, 5, &isnull));
		l->tier = DatumGetInt16(SPI_getbinval(t, d, 6, &isnull));
		r = SPI_getbinval(t, d, 10, &isnull);
		l->fx_rate_id = isnull ? 0 : DatumGetInt64(r);
		l->ref = ref ? arena_put(run, ref, strlen(ref)) : 0;
		if (!numeric_to_money128(settled_d, &settled))
			elog(ERROR, "settled amount out of range");
		r = SPI_getbinval(t, d, 12, &isnull);
		if (isnull)
		{
			/* recorded: the basis as written */
			if (!run_lineage_money(t, d, 7, &l->basis))
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
					amount[a] = fx_convert(amount[a], run_datum_money(fx, false, "FX rate"));
			}
			l->basis = rule->basis == RULE_BASIS_LIST_COST ? amount[1] :
				rule->basis == RULE_BASIS_AMOUNT_PAID ? amount[2] : amount[0];
			if (l->rate >= 0 && !money_mul_rate_exact(l->basis, l->rate, &now))
			{
				run_add_problem(run, "validation", psprintf("line:%s", key),
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

/* Values the lines read, then adds the period's corrections and adjustments. */
void
run_evaluate(Run *run)
{
	settle_progress_update(SETTLE_PHASE_EVALUATING, 0);
	evaluate_charges(run);
	evaluate_refunds(run);
	add_corrections(run);
	add_adjustments(run);
}
