/*
 * rule_print.c — canonical text of a rule (Rule -> text).
 *
 * The output re-parses to an identical Rule: settings first in a fixed
 * order, then tier schedules by name, then clauses most specific first.
 * Amounts print without trailing zeros, rates as percentages, values bare
 * when they are plain words and quoted otherwise.
 *
 * Pure C (see rule.h).
 */
#include <string.h>

#include "rule_int.h"

static bool
is_bare(const RuleStr *v)
{
	if (v->len == 0 || (v->len >= 2 && v->s[0] == '-' && v->s[1] == '-'))
		return false;
	for (uint32_t i = 0; i < v->len; i++)
	{
		unsigned char c = (unsigned char) v->s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
			  c == '/' || c == '-'))
			return false;
		/* "--" inside a word would start a comment */
		if (c == '-' && i + 1 < v->len && v->s[i + 1] == '-')
			return false;
	}
	return true;
}

static void
put_value(RuleBuf *b, const RuleStr *v)
{
	if (is_bare(v))
	{
		rule_buf_append(b, v->s, v->len);
		return;
	}
	rule_buf_append(b, "\"", 1);
	for (uint32_t i = 0; i < v->len; i++)
	{
		if (v->s[i] == '"' || v->s[i] == '\\')
			rule_buf_append(b, "\\", 1);
		rule_buf_append(b, &v->s[i], 1);
	}
	rule_buf_append(b, "\"", 1);
}

/* amounts print with at least the currency's decimals: 50.00, 0.005 */
static void
put_amount(RuleBuf *b, money128 v, int min_scale)
{
	char		buf[MONEY_FORMAT_BUFLEN];
	int			n = money_format(v, min_scale, buf);

	rule_buf_append(b, buf, n);
}

static void
put_rate(RuleBuf *b, int64_t r)
{
	char		buf[MONEY_FORMAT_BUFLEN];
	int			n = rate_format_percent(r, buf);

	rule_buf_append(b, buf, n);
	rule_buf_append(b, "%", 1);
}

static void
put_clause(RuleBuf *b, const Rule *rule, const RuleClause *cl)
{
	if (cl->ncond == 0)
		rule_buf_puts(b, "otherwise");
	else
	{
		rule_buf_puts(b, "when ");
		for (uint32_t i = 0; i < cl->ncond; i++)
		{
			const RuleCond *cd = &cl->conds[i];

			if (i > 0)
				rule_buf_puts(b, " and ");
			rule_buf_puts(b, rule_dim_name(cd->dim));
			rule_buf_puts(b, " ");
			if (cd->dim == RULE_DIM_TAG)
			{
				put_value(b, &cd->key);
				rule_buf_puts(b, " = ");
			}
			for (uint32_t j = 0; j < cd->nvalues; j++)
			{
				if (j > 0)
					rule_buf_puts(b, ", ");
				put_value(b, &cd->values[j]);
			}
		}
	}
	rule_buf_puts(b, " pay ");
	switch (cl->pay)
	{
		case RULE_PAY_PERCENT:
			put_rate(b, cl->rate);
			break;
		case RULE_PAY_PER_LINE:
			put_amount(b, cl->amount, rule->minor_unit);
			rule_buf_puts(b, " per line");
			break;
		case RULE_PAY_PER_MONTH:
			put_amount(b, cl->amount, rule->minor_unit);
			rule_buf_puts(b, " per month");
			break;
		case RULE_PAY_PER_MONTH_PRORATED:
			put_amount(b, cl->amount, rule->minor_unit);
			rule_buf_puts(b, " per month prorated by active days");
			break;
		case RULE_PAY_TIERS:
			rule_buf_puts(b, "tiers ");
			if (cl->tiers >= 0 && (uint32_t) cl->tiers < rule->ntiers)
				rule_buf_append(b, rule->tiers[cl->tiers].name.s, rule->tiers[cl->tiers].name.len);
			break;
	}
	if (cl->has_cap || cl->has_floor)
	{
		rule_buf_puts(b, " with ");
		if (cl->has_cap)
		{
			rule_buf_puts(b, "cap ");
			put_amount(b, cl->cap, rule->minor_unit);
			rule_buf_puts(b, " per line");
		}
		if (cl->has_cap && cl->has_floor)
			rule_buf_puts(b, " and ");
		if (cl->has_floor)
		{
			rule_buf_puts(b, "floor ");
			put_amount(b, cl->floor, rule->minor_unit);
			rule_buf_puts(b, " per line");
		}
	}
}

char *
rule_print_clause(const Rule *rule, uint32_t clause, const RuleAllocator *alloc)
{
	RuleBuf		b;

	rule_buf_init(&b, alloc, 128);
	if (clause < rule->nclauses)
		put_clause(&b, rule, &rule->clauses[clause]);
	return b.data;
}

static const char *const scope_text[RULE_NSCOPES] = {
	" per line\n", " per customer per period\n", " per reseller per period\n"
};

char *
rule_print(const Rule *rule, const RuleAllocator *alloc, size_t *len)
{
	RuleBuf		b;
	bool		first = true;

	rule_buf_init(&b, alloc, 512);
	rule_buf_puts(&b, "currency ");
	rule_buf_puts(&b, rule->currency);
	rule_buf_puts(&b, "\nrounding ");
	rule_buf_puts(&b, rule_rounding_name(rule->rounding));
	rule_buf_puts(&b, "\nbasis ");
	rule_buf_puts(&b, rule_basis_name(rule->basis));
	rule_buf_puts(&b, "\neligible ");
	for (int c = 0; c < RULE_NCHARGES; c++)
		if (rule->eligible & (1u << c))
		{
			if (!first)
				rule_buf_puts(&b, ", ");
			rule_buf_puts(&b, rule_charge_name(c));
			first = false;
		}
	rule_buf_puts(&b, "\n");
	if (rule->has_min_payout)
	{
		rule_buf_puts(&b, "minimum payout ");
		put_amount(&b, rule->min_payout, rule->minor_unit);
		rule_buf_puts(&b, "\n");
	}
	if (rule->has_refund_window)
	{
		char		buf[16];
		int			n = money_format((money128) rule->refund_window_days * MONEY_ONE, 0, buf);

		rule_buf_puts(&b, "refunds reverse at original rate within ");
		rule_buf_append(&b, buf, n);
		rule_buf_puts(&b, " days\n");
	}
	for (int s = 0; s < RULE_NSCOPES; s++)
	{
		if (rule->has_cap[s])
		{
			rule_buf_puts(&b, "cap ");
			put_amount(&b, rule->cap[s], rule->minor_unit);
			rule_buf_puts(&b, scope_text[s]);
		}
		if (rule->has_floor[s])
		{
			rule_buf_puts(&b, "floor ");
			put_amount(&b, rule->floor[s], rule->minor_unit);
			rule_buf_puts(&b, scope_text[s]);
		}
	}
	for (uint32_t i = 0; i < rule->ntiers; i++)
	{
		const RuleTiers *t = &rule->tiers[i];
		int			ms = t->measure == RULE_MEASURE_RESELLER_VOLUME ? 0 : rule->minor_unit;

		rule_buf_puts(&b, "tiers ");
		rule_buf_append(&b, t->name.s, t->name.len);
		rule_buf_puts(&b, t->measure == RULE_MEASURE_CUSTOMER_SPEND ? " on customer monthly spend" :
					  t->measure == RULE_MEASURE_RESELLER_SPEND ? " on reseller monthly spend" :
					  " on reseller monthly volume");
		rule_buf_puts(&b, t->mode == RULE_TIER_GRADUATED ? " graduated\n" : " all_units\n");
		for (uint32_t j = 0; j < t->nbands; j++)
		{
			rule_buf_puts(&b, "  from ");
			put_amount(&b, t->bands[j].from, ms);
			if (t->bands[j].has_to)
			{
				rule_buf_puts(&b, " to ");
				put_amount(&b, t->bands[j].to, ms);
			}
			rule_buf_puts(&b, " pay ");
			put_rate(&b, t->bands[j].rate);
			rule_buf_puts(&b, "\n");
		}
	}
	for (uint32_t i = 0; i < rule->nclauses; i++)
	{
		put_clause(&b, rule, &rule->clauses[i]);
		rule_buf_puts(&b, "\n");
	}
	/* no newline after the last clause */
	if (b.len > 0 && b.data[b.len - 1] == '\n')
		b.data[--b.len] = '\0';
	if (len)
		*len = b.len;
	return b.data;
}
