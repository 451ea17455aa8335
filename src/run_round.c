/*
 * run_round.c — the round phase of a settlement run: floors per customer and
 * per reseller topped up at period level, then (once the lines are in output
 * order) the statement total rounded once and its minor units allocated to
 * lines by largest remainder, ties in line key order.  See run.h.
 */
#include "postgres.h"

#include "run.h"

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
 * lines with the largest remainders (ties: line key order, then kind — the
 * output order, run->order, floor top-ups, corrections and adjustments
 * included by their keys), so that the lines add up to the total exactly.
 * The k-th largest remainder is found by selection, then one pass in output
 * order hands out the units: no sort.  Returns the rounded total.
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
		fl = money_floor_to(l->unrounded, (uint64) unit);	/* towards minus infinity */
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
		for (i = 0; i < run->norder; i++)
		{
			Line	   *l = &run->lines[run->order[i]];
			money128	rem = l->unrounded - l->rounded;

			if (rem < threshold)
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

/* The period's floor top-ups, as lines. */
void
run_add_floors(Run *run)
{
	add_floors(run);
}

/* The rounded total allocated to the lines, which are in output order. */
void
run_round(Run *run)
{
	allocate_rounding(run);
}
