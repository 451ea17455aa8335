/*
 * rule_common.c — the rule core's shared pieces: allocation arena, byte
 * buffer, names of enumerations, specificity and canonical ordering.
 *
 * Pure C (see rule.h).
 */
#include <stdlib.h>
#include <string.h>

#include "rule_int.h"

#define RULE_CHUNK_SIZE 8192

void
rule_arena_init(RuleArena *arena, const RuleAllocator *alloc)
{
	arena->alloc = alloc;
	arena->chunks = NULL;
	arena->ptr = NULL;
	arena->left = 0;
}

/*
 * Returns zeroed, 16-byte aligned memory that lives until the arena is
 * released (or, with a context allocator, until the context goes).
 */
void *
rule_arena_alloc(RuleArena *arena, size_t size)
{
	void	   *p;
	size_t		hdr = (sizeof(RuleChunk) + 15) & ~(size_t) 15;

	size = (size + 15) & ~(size_t) 15;
	if (size == 0)
		size = 16;
	if (size > arena->left)
	{
		size_t		csize = size > RULE_CHUNK_SIZE / 2 ? size + hdr : RULE_CHUNK_SIZE;
		RuleChunk  *c = arena->alloc->alloc(arena->alloc->ctx, csize);

		c->size = csize;
		if (size > RULE_CHUNK_SIZE / 2 && arena->chunks != NULL)
		{
			/* a big block: keep the current chunk for small ones */
			c->next = arena->chunks->next;
			arena->chunks->next = c;
			p = (char *) c + hdr;
			memset(p, 0, size);
			return p;
		}
		c->next = arena->chunks;
		arena->chunks = c;
		arena->ptr = (char *) c + hdr;
		arena->left = csize - hdr;
	}
	p = arena->ptr;
	arena->ptr += size;
	arena->left -= size;
	memset(p, 0, size);
	return p;
}

void
rule_arena_release(RuleArena *arena)
{
	RuleChunk  *c = arena->chunks;

	while (c != NULL)
	{
		RuleChunk  *next = c->next;

		if (arena->alloc->free)
			arena->alloc->free(arena->alloc->ctx, c);
		c = next;
	}
	arena->chunks = NULL;
	arena->ptr = NULL;
	arena->left = 0;
}

RuleStr
rule_arena_str(RuleArena *arena, const char *s, size_t len)
{
	RuleStr		r;
	char	   *p = rule_arena_alloc(arena, len + 1);

	if (len > 0)
		memcpy(p, s, len);
	p[len] = '\0';
	r.s = p;
	r.len = (uint32_t) len;
	return r;
}

void
rule_free(Rule *rule, const RuleAllocator *alloc)
{
	RuleArena	arena;

	if (rule == NULL)
		return;
	rule_arena_init(&arena, alloc);
	arena.chunks = rule->memory;
	rule_arena_release(&arena);
}

void
rule_buf_init(RuleBuf *b, const RuleAllocator *alloc, size_t initial)
{
	b->alloc = alloc;
	b->cap = initial < 64 ? 64 : initial;
	b->data = alloc->alloc(alloc->ctx, b->cap);
	b->len = 0;
}

void
rule_buf_append(RuleBuf *b, const void *p, size_t n)
{
	if (b->len + n + 1 > b->cap)
	{
		size_t		ncap = b->cap * 2;
		char	   *nd;

		while (ncap < b->len + n + 1)
			ncap *= 2;
		nd = b->alloc->alloc(b->alloc->ctx, ncap);
		memcpy(nd, b->data, b->len);
		if (b->alloc->free)
			b->alloc->free(b->alloc->ctx, b->data);
		b->data = nd;
		b->cap = ncap;
	}
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
rule_buf_puts(RuleBuf *b, const char *s)
{
	rule_buf_append(b, s, strlen(s));
}

/* ---- names ---- */

static const char *const charge_names[RULE_NCHARGES] = {
	"usage", "purchase", "tax", "credit", "adjustment"
};

RuleCharge
rule_charge_category(const char *s, size_t len)
{
	for (int c = 0; c < RULE_NCHARGES; c++)
	{
		const char *n = charge_names[c];

		if (strlen(n) == len)
		{
			size_t		i;

			for (i = 0; i < len; i++)
			{
				char		ch = s[i];

				if (ch >= 'A' && ch <= 'Z')
					ch = (char) (ch - 'A' + 'a');
				if (ch != n[i])
					break;
			}
			if (i == len)
				return (RuleCharge) c;
		}
	}
	return RULE_CHARGE_UNKNOWN;
}

const char *
rule_charge_name(RuleCharge c)
{
	return (c >= 0 && c < RULE_NCHARGES) ? charge_names[c] : "unknown";
}

const char *
rule_basis_name(RuleBasis b)
{
	switch (b)
	{
		case RULE_BASIS_BILLED_COST:
			return "billed_cost";
		case RULE_BASIS_LIST_COST:
			return "list_cost";
		case RULE_BASIS_AMOUNT_PAID:
			return "amount_paid";
	}
	return "unknown";
}

const char *
rule_rounding_name(MoneyRounding m)
{
	switch (m)
	{
		case MONEY_ROUND_HALF_EVEN:
			return "half_even";
		case MONEY_ROUND_HALF_UP:
			return "half_up";
		case MONEY_ROUND_DOWN:
			return "down";
	}
	return "unknown";
}

static const char *const dim_names[RULE_NDIMS] = {
	"sku", "product", "category", "charge", "region", "segment", "tag"
};

const char *
rule_dim_name(RuleDim d)
{
	return (d < RULE_NDIMS) ? dim_names[d] : "unknown";
}

/* ---- ordering ---- */

int32_t
rule_specificity(const RuleClause *clause)
{
	int			level = 0;
	int			qual = 0;

	if (clause->ncond == 0)
		return -1;
	for (uint32_t i = 0; i < clause->ncond; i++)
	{
		switch (clause->conds[i].dim)
		{
			case RULE_DIM_SKU:
				if (level < 3)
					level = 3;
				break;
			case RULE_DIM_PRODUCT:
				if (level < 2)
					level = 2;
				break;
			case RULE_DIM_CATEGORY:
				if (level < 1)
					level = 1;
				break;
			default:
				qual++;
				break;
		}
	}
	return level * 16 + qual;
}

int
rule_str_cmp(const RuleStr *a, const RuleStr *b)
{
	uint32_t	n = a->len < b->len ? a->len : b->len;
	int			c = n ? memcmp(a->s, b->s, n) : 0;

	if (c != 0)
		return c < 0 ? -1 : 1;
	return a->len < b->len ? -1 : (a->len > b->len ? 1 : 0);
}

#define CMP(a, b) do { if ((a) != (b)) return (a) < (b) ? -1 : 1; } while (0)

static int
cmp_str_qsort(const void *a, const void *b)
{
	return rule_str_cmp(a, b);
}

static int
cmp_cond(const RuleCond *a, const RuleCond *b)
{
	int			c;

	CMP(a->dim, b->dim);
	if ((c = rule_str_cmp(&a->key, &b->key)) != 0)
		return c;
	for (uint32_t i = 0; i < a->nvalues && i < b->nvalues; i++)
		if ((c = rule_str_cmp(&a->values[i], &b->values[i])) != 0)
			return c;
	CMP(a->nvalues, b->nvalues);
	return 0;
}

static int
cmp_cond_qsort(const void *a, const void *b)
{
	return cmp_cond(a, b);
}

static int
cmp_band_qsort(const void *pa, const void *pb)
{
	const RuleBand *a = pa;
	const RuleBand *b = pb;

	CMP(a->from, b->from);
	CMP(a->has_to, b->has_to);
	CMP(a->to, b->to);
	CMP(a->rate, b->rate);
	return 0;
}

/* clauses: most specific first, then by content; identical ones adjacent */
static int
cmp_clause_qsort(const void *pa, const void *pb)
{
	const RuleClause *a = pa;
	const RuleClause *b = pb;
	int			c;

	CMP(b->specificity, a->specificity);
	for (uint32_t i = 0; i < a->ncond && i < b->ncond; i++)
		if ((c = cmp_cond(&a->conds[i], &b->conds[i])) != 0)
			return c;
	CMP(a->ncond, b->ncond);
	CMP(a->pay, b->pay);
	CMP(a->rate, b->rate);
	CMP(a->amount, b->amount);
	CMP(a->tiers, b->tiers);
	CMP(a->has_cap, b->has_cap);
	CMP(a->cap, b->cap);
	CMP(a->has_floor, b->has_floor);
	CMP(a->floor, b->floor);
	return 0;
}

typedef struct TierSort
{
	RuleTiers	t;
	int32_t		old;
} TierSort;

static int
cmp_tiers_qsort(const void *pa, const void *pb)
{
	const TierSort *a = pa;
	const TierSort *b = pb;

	return rule_str_cmp(&a->t.name, &b->t.name);
}

void
rule_canonicalize(Rule *rule, RuleArena *arena)
{
	/* tier schedules by name, with clause references renumbered */
	if (rule->ntiers > 0)
	{
		TierSort   *ts = rule_arena_alloc(arena, sizeof(TierSort) * rule->ntiers);
		int32_t    *map = rule_arena_alloc(arena, sizeof(int32_t) * rule->ntiers);

		for (uint32_t i = 0; i < rule->ntiers; i++)
		{
			ts[i].t = rule->tiers[i];
			ts[i].old = (int32_t) i;
			if (ts[i].t.nbands > 1)
				qsort(ts[i].t.bands, ts[i].t.nbands, sizeof(RuleBand), cmp_band_qsort);
		}
		qsort(ts, rule->ntiers, sizeof(TierSort), cmp_tiers_qsort);
		for (uint32_t i = 0; i < rule->ntiers; i++)
		{
			rule->tiers[i] = ts[i].t;
			map[ts[i].old] = (int32_t) i;
		}
		for (uint32_t i = 0; i < rule->nclauses; i++)
			if (rule->clauses[i].pay == RULE_PAY_TIERS &&
				rule->clauses[i].tiers >= 0 &&
				(uint32_t) rule->clauses[i].tiers < rule->ntiers)
				rule->clauses[i].tiers = map[rule->clauses[i].tiers];
	}

	for (uint32_t i = 0; i < rule->nclauses; i++)
	{
		RuleClause *cl = &rule->clauses[i];

		for (uint32_t j = 0; j < cl->ncond; j++)
		{
			RuleCond   *cd = &cl->conds[j];
			uint32_t	n = 0;

			if (cd->nvalues > 1)
				qsort(cd->values, cd->nvalues, sizeof(RuleStr), cmp_str_qsort);
			/* distinct */
			for (uint32_t k = 0; k < cd->nvalues; k++)
				if (n == 0 || rule_str_cmp(&cd->values[n - 1], &cd->values[k]) != 0)
					cd->values[n++] = cd->values[k];
			cd->nvalues = n;
		}
		if (cl->ncond > 1)
			qsort(cl->conds, cl->ncond, sizeof(RuleCond), cmp_cond_qsort);
		cl->specificity = rule_specificity(cl);
	}
	if (rule->nclauses > 1)
		qsort(rule->clauses, rule->nclauses, sizeof(RuleClause), cmp_clause_qsort);
}
