/*
 * rule_eval.c — evaluation of a compiled rule against one bill line, and the
 * coverage checks run when a rule is published.
 *
 * Pure C (see rule.h): no allocation during evaluation, no floating point.
 */
#include <stdio.h>
#include <string.h>

#include "rule_int.h"

static inline bool
text_eq(const RuleText *t, const RuleStr *v)
{
	return t->s != NULL && t->len == v->len && memcmp(t->s, v->s, v->len) == 0;
}

static inline bool
any_value(const RuleText *t, const RuleCond *cd)
{
	if (t->s == NULL)
		return false;
	for (uint32_t k = 0; k < cd->nvalues; k++)
		if (text_eq(t, &cd->values[k]))
			return true;
	return false;
}

static bool
cond_holds(const RuleCond *cd, const RuleLine *line)
{
	switch (cd->dim)
	{
		case RULE_DIM_SKU:
			return any_value(&line->sku, cd);
		case RULE_DIM_PRODUCT:
			return any_value(&line->product, cd);
		case RULE_DIM_CATEGORY:
			return any_value(&line->category, cd);
		case RULE_DIM_REGION:
			return any_value(&line->region, cd);
		case RULE_DIM_SEGMENT:
			return any_value(&line->segment, cd);
		case RULE_DIM_CHARGE:
			{
				const char *n;

				if (line->charge < 0 || line->charge >= RULE_NCHARGES)
					return false;
				n = rule_charge_name(line->charge);
				for (uint32_t k = 0; k < cd->nvalues; k++)
					if (strcmp(cd->values[k].s, n) == 0)
						return true;
				return false;
			}
		case RULE_DIM_TAG:
			for (uint32_t i = 0; i < line->ntags; i++)
				if (text_eq(&line->tags[i].key, &cd->key) &&
					any_value(&line->tags[i].value, cd))
					return true;
			return false;
	}
	return false;
}

/*
 * The band a tier measure falls in; -1 when none does.  A measure below 0
 * (eligible credits outweigh the charges) is in the first band when that band
 * starts at 0: the first band extends below 0, in both tier modes.
 */
int
rule_tier_band(const RuleTiers *tiers, money128 measure)
{
	if (measure < 0 && tiers->nbands > 0 && tiers->bands[0].from == 0)
		return 0;
	for (uint32_t j = 0; j < tiers->nbands; j++)
	{
		const RuleBand *b = &tiers->bands[j];

		if (measure >= b->from && (!b->has_to || measure < b->to))
			return (int) j;
	}
	return -1;
}

static money128
max128(money128 a, money128 b)
{
	return a > b ? a : b;
}

static money128
min128(money128 a, money128 b)
{
	return a < b ? a : b;
}

/*
 * Graduated tiers: each band's rate on the part of [lo, hi) inside the band.
 * Returns the commission for a positive interval; *band gets the band of the
 * interval's last part.
 */
static money128
graduated(const RuleTiers *t, money128 lo, money128 hi, int *band, bool *gap,
		  bool *exact)
{
	money128	sum = 0;
	money128	covered = 0;
	money128	part;

	*band = -1;
	/*
	 * a credit can take the measure below 0: that part is in the first band
	 * (as an all-units total below 0 is, rule_tier_band)
	 */
	if (lo < 0 && t->bands[0].from == 0)
	{
		money128	z = min128(hi, 0);

		*exact &= money_mul_rate_exact(z - lo, t->bands[0].rate, &part);
		sum += part;
		covered += z - lo;
		*band = 0;
	}
	for (uint32_t j = 0; j < t->nbands; j++)
	{
		const RuleBand *b = &t->bands[j];
		money128	a = max128(lo, b->from);
		money128	z = b->has_to ? min128(hi, b->to) : hi;

		if (z > a)
		{
			*exact &= money_mul_rate_exact(z - a, b->rate, &part);
			sum += part;
			covered += z - a;
			*band = (int) j;
		}
	}
	*gap = covered != hi - lo;
	return sum;
}

void
rule_eval(const Rule *rule, const RuleLine *line, const RuleContext *ctx, RuleResult *res)
{
	const RuleClause *cl = NULL;
	money128	basis;
	money128	c = 0;
	money128	mag;
	bool		neg;
	bool		exact = true;
	uint32_t	i;

	memset(res, 0, sizeof(*res));
	res->basis_kind = rule->basis;
	switch (rule->basis)
	{
		case RULE_BASIS_LIST_COST:
			basis = line->list_cost;
			break;
		case RULE_BASIS_AMOUNT_PAID:
			basis = line->amount_paid;
			break;
		default:
			basis = line->billed_cost;
			break;
	}
	res->basis = basis;

	if (line->charge < 0 || line->charge >= RULE_NCHARGES ||
		!(rule->eligible & (1u << line->charge)))
	{
		res->status = RULE_EVAL_NOT_ELIGIBLE;
		return;
	}

	for (i = 0; i < rule->nclauses; i++)
	{
		const RuleClause *k = &rule->clauses[i];
		uint32_t	j;

		for (j = 0; j < k->ncond; j++)
			if (!cond_holds(&k->conds[j], line))
				break;
		if (j == k->ncond)
		{
			cl = k;
			break;
		}
	}
	if (cl == NULL)
	{
		res->status = RULE_EVAL_NO_MATCH;
		return;
	}
	res->clause = (int32_t) i + 1;
	res->pay = cl->pay;

	switch (cl->pay)
	{
		case RULE_PAY_PERCENT:
			res->rate = cl->rate;
			exact = money_mul_rate_exact(basis, cl->rate, &c);
			break;
		case RULE_PAY_PER_LINE:
		case RULE_PAY_PER_MONTH:
			res->fixed_amount = cl->amount;
			c = basis > 0 ? cl->amount : basis < 0 ? -cl->amount : 0;
			break;
		case RULE_PAY_PER_MONTH_PRORATED:
			res->fixed_amount = cl->amount;
			if (line->days_in_month == 0)
				c = cl->amount;
			else if (line->days_in_month < 28 || line->days_in_month > 31 ||
					 line->active_days < 0 || line->active_days > line->days_in_month)
			{
				res->status = RULE_EVAL_BAD_PRORATION;
				return;
			}
			else
				c = money_mul_div(cl->amount, line->active_days, line->days_in_month);
			c = basis > 0 ? c : basis < 0 ? -c : 0;
			break;
		case RULE_PAY_TIERS:
			{
				const RuleTiers *t = &rule->tiers[cl->tiers];
				int			band;

				if (t->mode == RULE_TIER_ALL_UNITS)
				{
					money128	m = t->measure == RULE_MEASURE_CUSTOMER_SPEND ? ctx->customer_spend :
						t->measure == RULE_MEASURE_RESELLER_SPEND ? ctx->reseller_spend :
						ctx->reseller_volume;

					band = rule_tier_band(t, m);
					if (band < 0)
					{
						res->status = RULE_EVAL_NO_TIER;
						return;
					}
					res->rate = t->bands[band].rate;
					exact = money_mul_rate_exact(basis, res->rate, &c);
				}
				else
				{
					money128	before = t->measure == RULE_MEASURE_CUSTOMER_SPEND ?
						ctx->customer_spend_before : ctx->reseller_spend_before;
					bool		gap;

					if (basis >= 0)
						c = graduated(t, before, before + basis, &band, &gap, &exact);
					else
						c = -graduated(t, before + basis, before, &band, &gap, &exact);
					if (basis == 0)
						band = rule_tier_band(t, before);
					if (gap || band < 0)
					{
						res->status = RULE_EVAL_NO_TIER;
						return;
					}
					res->rate = t->bands[band].rate;
				}
				res->tier = band + 1;
			}
			break;
	}
	if (!exact)
	{
		/* more than 16 decimal places: never rounded, the line earns 0 */
		res->status = RULE_EVAL_INEXACT;
		return;
	}
	res->commission_before_limits = c;

	/*
	 * Per-line limits apply to the magnitude, with the sign of the basis: a
	 * negative basis is limited like a charge, so a credit that earns 0
	 * before limits is floored to -floor, never to +floor.
	 */
	neg = basis < 0;
	mag = c < 0 ? -c : c;
	{
		bool		has_floor = cl->has_floor || rule->has_floor[RULE_SCOPE_LINE];
		money128	floor = cl->has_floor ? cl->floor : rule->floor[RULE_SCOPE_LINE];
		bool		has_cap = cl->has_cap || rule->has_cap[RULE_SCOPE_LINE];
		money128	cap = cl->has_cap ? cl->cap : rule->cap[RULE_SCOPE_LINE];

		if (has_floor && basis != 0 && mag < floor)
		{
			mag = floor;
			res->limit = RULE_LIMIT_LINE_FLOOR;
		}
		if (has_cap && mag > cap)
		{
			mag = cap;
			res->limit = RULE_LIMIT_LINE_CAP;
		}
	}
	c = neg ? -mag : mag;

	/* per-period caps: only positive commission consumes them */
	if (c > 0 && rule->has_cap[RULE_SCOPE_CUSTOMER])
	{
		money128	room = max128(0, rule->cap[RULE_SCOPE_CUSTOMER] - ctx->customer_commission_to_date);

		if (c > room)
		{
			c = room;
			res->limit = RULE_LIMIT_CUSTOMER_CAP;
		}
	}
	if (c > 0 && rule->has_cap[RULE_SCOPE_RESELLER])
	{
		money128	room = max128(0, rule->cap[RULE_SCOPE_RESELLER] - ctx->reseller_commission_to_date);

		if (c > room)
		{
			c = room;
			res->limit = RULE_LIMIT_RESELLER_CAP;
		}
	}
	res->commission = c;
	res->commission_rounded = money_round(c, rule->minor_unit, (MoneyRounding) rule->rounding);

	if (basis < 0)
	{
		if (line->refund_age_days < 0)
			res->refund_timing = RULE_REFUND_UNKNOWN_AGE;
		else if (!rule->has_refund_window || line->refund_age_days <= rule->refund_window_days)
			res->refund_timing = RULE_REFUND_IN_PERIOD;
		else
			res->refund_timing = RULE_REFUND_NEXT_ADJUSTMENT;
	}
	res->status = RULE_EVAL_OK;
}

/* ---- coverage checks ---- */

typedef struct Checker
{
	void		(*report) (void *arg, const char *msg);
	void	   *arg;
	int			n;
	const Rule *rule;
	const RuleAllocator *alloc;
} Checker;

static void
problem(Checker *ck, const char *msg)
{
	ck->n++;
	ck->report(ck->arg, msg);
}

static bool
values_intersect(const RuleCond *a, const RuleCond *b)
{
	/* both sorted */
	uint32_t	i = 0,
				j = 0;

	while (i < a->nvalues && j < b->nvalues)
	{
		int			c = rule_str_cmp(&a->values[i], &b->values[j]);

		if (c == 0)
			return true;
		if (c < 0)
			i++;
		else
			j++;
	}
	return false;
}

/* can one bill line satisfy both clauses? */
static bool
clauses_overlap(const RuleClause *a, const RuleClause *b)
{
	for (uint32_t i = 0; i < a->ncond; i++)
		for (uint32_t j = 0; j < b->ncond; j++)
			if (a->conds[i].dim == b->conds[j].dim &&
				rule_str_cmp(&a->conds[i].key, &b->conds[j].key) == 0 &&
				!values_intersect(&a->conds[i], &b->conds[j]))
				return false;
	return true;
}

static void
clause_text(Checker *ck, uint32_t i, char *buf, size_t len)
{
	char	   *t = rule_print_clause(ck->rule, i, ck->alloc);

	snprintf(buf, len, "%s", t);
	if (ck->alloc->free)
		ck->alloc->free(ck->alloc->ctx, t);
}

int
rule_check(const Rule *rule, void (*report) (void *arg, const char *msg), void *arg,
		   const RuleAllocator *alloc)
{
	Checker		ck = {report, arg, 0, rule, alloc};
	char		msg[1024];
	char		a[400];
	char		b[400];
	char		x[MONEY_FORMAT_BUFLEN];
	char		y[MONEY_FORMAT_BUFLEN];
	static const char *const scope[] = {"per line", "per customer per period", "per reseller per period"};

	for (uint32_t i = 0; i < rule->ntiers; i++)
	{
		const RuleTiers *t = &rule->tiers[i];

		if (t->bands[0].from != 0)
		{
			money_format(t->bands[0].from, 0, x);
			snprintf(msg, sizeof(msg), "tier schedule %s has a gap: its first band starts at %s, not 0",
					 t->name.s, x);
			problem(&ck, msg);
		}
		for (uint32_t j = 0; j + 1 < t->nbands; j++)
		{
			const RuleBand *p = &t->bands[j];
			const RuleBand *q = &t->bands[j + 1];

			money_format(p->to, 0, x);
			money_format(q->from, 0, y);
			if (!p->has_to || p->to > q->from)
			{
				if (!p->has_to)
					money_format(p->from, 0, x);
				snprintf(msg, sizeof(msg), "tier schedule %s has overlapping bands: band %u %s %s and band %u starts at %s",
						 t->name.s, j + 1, p->has_to ? "ends at" : "is open-ended from", x, j + 2, y);
				problem(&ck, msg);
			}
			else if (p->to < q->from)
			{
				snprintf(msg, sizeof(msg), "tier schedule %s has a gap between %s and %s",
						 t->name.s, x, y);
				problem(&ck, msg);
			}
		}
		if (t->bands[t->nbands - 1].has_to)
		{
			money_format(t->bands[t->nbands - 1].to, 0, x);
			snprintf(msg, sizeof(msg), "tier schedule %s has a gap: nothing covers amounts from %s up (make the last band open-ended)",
					 t->name.s, x);
			problem(&ck, msg);
		}
	}

	for (int s = 0; s < RULE_NSCOPES; s++)
		if (rule->has_cap[s] && rule->has_floor[s] && rule->cap[s] < rule->floor[s])
		{
			money_format(rule->cap[s], 0, x);
			money_format(rule->floor[s], 0, y);
			snprintf(msg, sizeof(msg), "cap %s %s is below floor %s %s", x, scope[s], y, scope[s]);
			problem(&ck, msg);
		}
	for (uint32_t i = 0; i < rule->nclauses; i++)
	{
		const RuleClause *cl = &rule->clauses[i];
		bool		hc = cl->has_cap || rule->has_cap[RULE_SCOPE_LINE];
		bool		hf = cl->has_floor || rule->has_floor[RULE_SCOPE_LINE];
		money128	cap = cl->has_cap ? cl->cap : rule->cap[RULE_SCOPE_LINE];
		money128	fl = cl->has_floor ? cl->floor : rule->floor[RULE_SCOPE_LINE];

		if ((cl->has_cap || cl->has_floor) && hc && hf && cap < fl)
		{
			money_format(cap, 0, x);
			money_format(fl, 0, y);
			clause_text(&ck, i, a, sizeof(a));
			snprintf(msg, sizeof(msg), "cap %s per line is below floor %s per line in clause %u (%s)",
					 x, y, i + 1, a);
			problem(&ck, msg);
		}
	}

	/* ambiguity: equal specificity and a line could match both */
	for (uint32_t i = 0; i < rule->nclauses; i++)
		for (uint32_t j = i + 1; j < rule->nclauses; j++)
		{
			if (rule->clauses[j].specificity != rule->clauses[i].specificity)
				break;			/* sorted by specificity */
			if (!clauses_overlap(&rule->clauses[i], &rule->clauses[j]))
				continue;
			clause_text(&ck, i, a, sizeof(a));
			clause_text(&ck, j, b, sizeof(b));
			snprintf(msg, sizeof(msg), "ambiguous match: clauses %u (%s) and %u (%s) are equally specific and can match the same bill line",
					 i + 1, a, j + 1, b);
			problem(&ck, msg);
		}
	return ck.n;
}
