/*
 * rule.h — commission rules: the compiled form of a settle.rule value and
 * the C API to parse, print, encode, decode, check and evaluate it.
 *
 * This header and the rule_*.c files it describes (except rule_pg.c) are
 * pure C: they do not include postgres.h, never call ereport, and allocate
 * only through a RuleAllocator.  The fuzz harness and the benchmark link them
 * standalone; rule_pg.c wraps them for SQL.
 *
 * Bulk use (settle_period)
 * ------------------------
 *  1. Compile once per rule version: detoast the settle.rule datum and call
 *     rule_decode(VARDATA_ANY(d), VARSIZE_ANY_EXHDR(d), &alloc, &err) with an
 *     allocator whose memory lives as long as the run (e.g. palloc in a
 *     run-level MemoryContext; rule_pg.c provides settle_rule_compile()).
 *     The result is a const Rule *: read-only, no further allocation,
 *     safe to share between evaluations.  Nothing is re-parsed and no
 *     catalogue is consulted during evaluation.
 *  2. Per bill line, fill a RuleLine (attribute strings are pointer + length,
 *     need not be NUL-terminated; map the FOCUS charge category once with
 *     rule_charge_category()) and a RuleContext, then call
 *     rule_eval(rule, &line, &ctx, &result).  rule_eval never allocates and
 *     never fails: problems are reported in result.status.
 *  3. Period-level limits are the caller's job, with help from the context:
 *     - Tiers, all-units: put the period's total of the tier measure
 *       (customer or reseller monthly spend, reseller monthly volume) in
 *       ctx.customer_spend / reseller_spend / reseller_volume; the band that
 *       total falls in applies to the whole line.  Because the total is only
 *       known at the end of the period, aggregate first, evaluate second.
 *     - Tiers, graduated: evaluate the lines of one customer (reseller) in a
 *       deterministic order and pass the measure accumulated *before* this
 *       line in ctx.customer_spend_before (reseller_spend_before); the line
 *       earns each band's rate on the part of [before, before + basis) that
 *       falls in that band.  Summed over the period this is exactly the
 *       graduated commission on the period total, whatever the order.
 *     - Caps per customer / per reseller per period: pass the commission
 *       already counted against the cap in ctx.customer_commission_to_date
 *       (reseller_commission_to_date); the line earns at most the room left
 *       and result.limit says which limit bit.  Add result.commission to
 *       the running figure afterwards when it is positive: only positive
 *       commission consumes a period cap (a credit gives no room back).
 *     - Floors per customer / per reseller per period and the minimum payout
 *       are period totals: after all lines, compare the period's commission
 *       with rule->floor[RULE_SCOPE_CUSTOMER] (has_floor[...]) and
 *       rule->min_payout (has_min_payout); a shortfall is a top-up adjustment, a payout
 *       below the minimum carries forward.
 *     - Refunds (negative basis) reverse commission at the rate the original
 *       charge earned: evaluate the refund with the rule version that was in
 *       force for the original (or take the rate from its lineage).  The
 *       per-period caps are not applied to negative amounts; the line
 *       cap/floor apply to the magnitude.  result.refund_timing says whether
 *       the reversal belongs to the refund's own period (within the rule's
 *       refund window) or to the next adjustment period.
 *  4. Round per statement, not per line: sum result.commission (exact, at
 *     MONEY_SCALE) and call money_round(total, rule->minor_unit,
 *     rule->rounding); result.commission_rounded is the per-line rounding
 *     for display and single-line tests.
 *  5. Lineage: result.clause is the 1-based position of the clause in the
 *     canonical order, stable for a given rule value (and so for a rule
 *     version); rule_print_clause(rule, clause - 1, ...) gives its text for
 *     settle.explain.  result.tier is the 1-based band of the clause's tier
 *     schedule; result.rate the rate applied (fraction x 10^8).
 *
 * Thread/state: a decoded Rule is immutable; rule_eval keeps no state.
 *
 * Errors from rule_parse / rule_decode are returned in a RuleError; the
 * caller turns them into ereport (42601 syntax, 22023 semantics, 22P03 bad
 * binary data).
 */
#ifndef SETTLE_RULE_H
#define SETTLE_RULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "money.h"

/* ---------------------------------------------------------------------
 * Allocation and errors
 * --------------------------------------------------------------------- */

/* Memory for parsed/decoded rules; free may be NULL (context-based memory). */
typedef struct RuleAllocator
{
	void	   *(*alloc) (void *ctx, size_t size);	/* must not return NULL */
	void		(*free) (void *ctx, void *ptr);
	void	   *ctx;
} RuleAllocator;

typedef enum RuleErrorKind
{
	RULE_ERR_NONE = 0,
	RULE_ERR_SYNTAX,			/* 42601: the text does not follow the grammar */
	RULE_ERR_SEMANTIC,			/* 22023: well-formed but meaningless or out of range */
	RULE_ERR_CORRUPT			/* 22P03: binary form invalid (recv, decode) */
} RuleErrorKind;

typedef struct RuleError
{
	RuleErrorKind kind;
	int			line;			/* 1-based position in the source; 0 for binary */
	int			column;			/* 1-based, in characters (bytes) */
	char		message[256];	/* lower case, no period: what is wrong */
} RuleError;

/* ---------------------------------------------------------------------
 * The compiled rule
 * --------------------------------------------------------------------- */

/* what a clause condition looks at, in specificity order of the first three */
typedef enum RuleDim
{
	RULE_DIM_SKU = 0,			/* sku / billing item */
	RULE_DIM_PRODUCT,			/* product code */
	RULE_DIM_CATEGORY,			/* product category */
	RULE_DIM_CHARGE,			/* charge category */
	RULE_DIM_REGION,
	RULE_DIM_SEGMENT,			/* customer segment */
	RULE_DIM_TAG,				/* tag key = value */
	RULE_NDIMS
} RuleDim;

/* FOCUS charge categories; bit (1 << c) in Rule.eligible */
typedef enum RuleCharge
{
	RULE_CHARGE_USAGE = 0,
	RULE_CHARGE_PURCHASE,
	RULE_CHARGE_TAX,
	RULE_CHARGE_CREDIT,
	RULE_CHARGE_ADJUSTMENT,
	RULE_NCHARGES,
	RULE_CHARGE_UNKNOWN = -1
} RuleCharge;

typedef enum RuleBasis
{
	RULE_BASIS_BILLED_COST = 0,	/* billed cost, after discounts */
	RULE_BASIS_LIST_COST,
	RULE_BASIS_AMOUNT_PAID
} RuleBasis;

typedef enum RuleScope
{
	RULE_SCOPE_LINE = 0,
	RULE_SCOPE_CUSTOMER,		/* per customer per period */
	RULE_SCOPE_RESELLER,		/* per reseller per period */
	RULE_NSCOPES
} RuleScope;

typedef enum RuleMeasure
{
	RULE_MEASURE_CUSTOMER_SPEND = 0,	/* customer monthly spend (basis) */
	RULE_MEASURE_RESELLER_SPEND,	/* reseller monthly spend (basis) */
	RULE_MEASURE_RESELLER_VOLUME	/* reseller monthly volume (units) */
} RuleMeasure;

typedef enum RuleTierMode
{
	RULE_TIER_ALL_UNITS = 0,
	RULE_TIER_GRADUATED
} RuleTierMode;

typedef enum RulePay
{
	RULE_PAY_PERCENT = 0,		/* rate x basis */
	RULE_PAY_PER_LINE,			/* fixed amount per bill line */
	RULE_PAY_PER_MONTH,			/* fixed monthly amount */
	RULE_PAY_PER_MONTH_PRORATED,	/* fixed monthly amount x active days / days */
	RULE_PAY_TIERS				/* rate from a tier schedule */
} RulePay;

typedef struct RuleStr
{
	const char *s;				/* NUL-terminated */
	uint32_t	len;
} RuleStr;

typedef struct RuleCond
{
	uint8_t		dim;			/* RuleDim */
	RuleStr		key;			/* tag key (RULE_DIM_TAG), else empty */
	uint32_t	nvalues;		/* >= 1; sorted bytewise, distinct */
	RuleStr    *values;
	int			line,
				column;			/* source position (0 when decoded) */
} RuleCond;

typedef struct RuleClause
{
	uint32_t	ncond;			/* 0 for the "otherwise" clause */
	RuleCond   *conds;			/* sorted by dim, then tag key */
	uint8_t		pay;			/* RulePay */
	int64_t		rate;			/* RULE_PAY_PERCENT: fraction x 10^8 */
	money128	amount;			/* RULE_PAY_PER_*: fixed amount */
	int32_t		tiers;			/* RULE_PAY_TIERS: index into Rule.tiers */
	bool		has_cap;		/* per-line cap of this clause */
	bool		has_floor;		/* per-line floor of this clause */
	money128	cap;
	money128	floor;
	int32_t		specificity;	/* see rule_specificity(); -1 for otherwise */
	int			line,
				column;
} RuleClause;

typedef struct RuleBand
{
	money128	from;			/* inclusive */
	bool		has_to;
	money128	to;				/* exclusive */
	int64_t		rate;			/* fraction x 10^8 */
	int			line,
				column;
} RuleBand;

typedef struct RuleTiers
{
	RuleStr		name;
	uint8_t		measure;		/* RuleMeasure */
	uint8_t		mode;			/* RuleTierMode */
	uint32_t	nbands;			/* >= 1, sorted by from, then to */
	RuleBand   *bands;
	int			line,
				column;
} RuleTiers;

typedef struct Rule
{
	char		currency[4];	/* ISO 4217, NUL-terminated */
	int			minor_unit;		/* its exponent (built-in ISO table) */
	uint8_t		rounding;		/* MoneyRounding */
	uint8_t		basis;			/* RuleBasis */
	uint32_t	eligible;		/* bit (1 << RuleCharge) */
	bool		has_refund_window;
	int32_t		refund_window_days;
	bool		has_min_payout;
	money128	min_payout;
	bool		has_cap[RULE_NSCOPES];
	bool		has_floor[RULE_NSCOPES];
	money128	cap[RULE_NSCOPES];
	money128	floor[RULE_NSCOPES];
	uint32_t	ntiers;			/* sorted by name */
	RuleTiers  *tiers;
	uint32_t	nclauses;		/* sorted: most specific first, otherwise last */
	RuleClause *clauses;
	void	   *memory;			/* private: allocation chunks (rule_free) */
} Rule;

/* limits on what a rule may contain (input and decode refuse more) */
#define RULE_MAX_CLAUSES	4096
#define RULE_MAX_CONDS		16
#define RULE_MAX_VALUES		1024
#define RULE_MAX_TIERS		256
#define RULE_MAX_BANDS		256
#define RULE_MAX_STRLEN		256
#define RULE_MAX_REFUND_DAYS 3660

/* ---------------------------------------------------------------------
 * Text, binary, checks
 * --------------------------------------------------------------------- */

/*
 * Parses rule source (NUL-terminated) into a canonical Rule.  Returns NULL
 * and fills err on a syntax or semantic error.
 */
extern Rule *rule_parse(const char *src, const RuleAllocator *alloc, RuleError *err);

/* Releases a parsed or decoded rule (needed only when alloc->free is set). */
extern void rule_free(Rule *rule, const RuleAllocator *alloc);

/* Prints the canonical text; returns a NUL-terminated string from alloc. */
extern char *rule_print(const Rule *rule, const RuleAllocator *alloc, size_t *len);

/* Prints one clause canonically (no newline), e.g. "when product ecs pay 10%". */
extern char *rule_print_clause(const Rule *rule, uint32_t clause, const RuleAllocator *alloc);

/*
 * The binary form (the varlena payload and the send/recv format, identical):
 * little-endian, versioned, canonical.  rule_encode returns a buffer from
 * alloc.  rule_decode validates everything it reads, including that the
 * bytes are exactly the canonical encoding of what they describe, and
 * returns NULL with err (RULE_ERR_CORRUPT) otherwise.
 */
extern uint8_t *rule_encode(const Rule *rule, const RuleAllocator *alloc, size_t *len);
extern Rule *rule_decode(const uint8_t *data, size_t len, const RuleAllocator *alloc,
						 RuleError *err);

/*
 * Coverage checks run at publish time: tier bands with gaps or
 * overlaps (bands must start at 0, meet exactly and end open), caps below
 * floors, equal-specificity clauses that can match the same line.  Calls
 * report(arg, message) once per problem; returns the number of problems.
 */
extern int	rule_check(const Rule *rule, void (*report) (void *arg, const char *msg),
					   void *arg, const RuleAllocator *alloc);

/*
 * Specificity of a clause: 16 x level + number of qualifier conditions,
 * where level is 3 for sku, 2 for product, 1 for category, 0 otherwise, and
 * qualifiers are charge, region, segment and tag conditions.  The otherwise
 * clause is -1.  Higher wins.
 */
extern int32_t rule_specificity(const RuleClause *clause);

/* FOCUS charge category name (any case) to RuleCharge; RULE_CHARGE_UNKNOWN */
extern RuleCharge rule_charge_category(const char *s, size_t len);

extern const char *rule_charge_name(RuleCharge c);	/* "usage", ... */
extern const char *rule_basis_name(RuleBasis b);	/* "billed_cost", ... */
extern const char *rule_rounding_name(MoneyRounding m);	/* "half_even", ... */
extern const char *rule_dim_name(RuleDim d);	/* "sku", "product", ... */

/* ---------------------------------------------------------------------
 * Evaluation
 * --------------------------------------------------------------------- */

/* one attribute of a bill line: pointer + length, need not be NUL-terminated */
typedef struct RuleText
{
	const char *s;				/* NULL = absent (matches nothing) */
	uint32_t	len;
} RuleText;

typedef struct RuleTag
{
	RuleText	key;
	RuleText	value;
} RuleTag;

typedef struct RuleLine
{
	RuleText	product;		/* product code, e.g. "ecs" */
	RuleText	category;		/* product category from the catalogue */
	RuleText	sku;			/* sku / billing item */
	RuleText	region;
	RuleText	segment;		/* customer segment */
	int			charge;			/* RuleCharge (rule_charge_category) */
	uint32_t	ntags;
	const RuleTag *tags;
	money128	billed_cost;	/* MONEY_SCALE units, <= 8 decimals */
	money128	list_cost;
	money128	amount_paid;
	int32_t		active_days;	/* proration: days active in the month */
	int32_t		days_in_month;	/* 28..31; 0 = not prorated (full month) */
	int32_t		refund_age_days;	/* refunds: days since the original
									 * charge; -1 unknown */
} RuleLine;

typedef struct RuleContext
{
	money128	customer_spend; /* period totals: all-units tier selection */
	money128	reseller_spend;
	money128	reseller_volume;
	money128	customer_spend_before;	/* graduated: measure before this line */
	money128	reseller_spend_before;
	money128	customer_commission_to_date;	/* counted against per-period caps */
	money128	reseller_commission_to_date;
} RuleContext;

typedef enum RuleEvalStatus
{
	RULE_EVAL_OK = 0,			/* a clause matched; commission computed */
	RULE_EVAL_NOT_ELIGIBLE,		/* charge category not eligible: 0 */
	RULE_EVAL_NO_MATCH,			/* no clause and no otherwise: 0 */
	RULE_EVAL_NO_TIER,			/* the tier measure falls in no band: 0 */
	RULE_EVAL_BAD_PRORATION,	/* active/days in month out of range: 0 */
	RULE_EVAL_INEXACT			/* basis x rate not exact at 10^-16: 0 */
} RuleEvalStatus;

/* which limit changed the commission */
typedef enum RuleLimit
{
	RULE_LIMIT_NONE = 0,
	RULE_LIMIT_LINE_CAP,
	RULE_LIMIT_LINE_FLOOR,
	RULE_LIMIT_CUSTOMER_CAP,
	RULE_LIMIT_RESELLER_CAP
} RuleLimit;

typedef enum RuleRefundTiming
{
	RULE_REFUND_NONE = 0,		/* not a refund (basis >= 0) */
	RULE_REFUND_IN_PERIOD,		/* reverse in the refund's own period */
	RULE_REFUND_NEXT_ADJUSTMENT,	/* outside the window: next adjustment
									 * period */
	RULE_REFUND_UNKNOWN_AGE		/* refund_age_days not given */
} RuleRefundTiming;

typedef struct RuleResult
{
	RuleEvalStatus status;
	int32_t		clause;			/* 1-based index into rule->clauses; 0 = none */
	int32_t		tier;			/* 1-based band of the tier schedule; 0 = none */
	uint8_t		basis_kind;		/* RuleBasis */
	uint8_t		pay;			/* RulePay of the clause */
	uint8_t		limit;			/* RuleLimit */
	uint8_t		refund_timing;	/* RuleRefundTiming */
	money128	basis;			/* commissionable amount of the line */
	int64_t		rate;			/* rate applied (tier reached for tiers) */
	money128	fixed_amount;	/* fixed amount before proration */
	money128	commission_before_limits;	/* exact */
	money128	commission;		/* exact, after caps and floors */
	money128	commission_rounded; /* commission rounded per the rule */
} RuleResult;

/*
 * Evaluates one bill line.  Pure function of its arguments; no allocation.
 * Matching: the first clause (most specific first) whose every condition
 * holds; a condition holds when the line's attribute equals one of its
 * values (charge categories by RuleCharge; tags when the line has the key
 * with one of the values).  See docs/rules.md for the arithmetic.
 */
extern void rule_eval(const Rule *rule, const RuleLine *line, const RuleContext *ctx,
					  RuleResult *result);

/* the band of a tier schedule a measure value falls in (0-based), or -1 */
extern int	rule_tier_band(const RuleTiers *tiers, money128 measure);

#endif							/* SETTLE_RULE_H */
