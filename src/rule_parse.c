/*
 * rule_parse.c — the rule language's lexer and parser (text -> Rule).
 *
 * Refuses, with line and column, everything that does not follow the
 * grammar in docs/rules.md (RULE_ERR_SYNTAX) and everything well-formed but
 * meaningless: rates above 100%, more decimals than money.h holds, settings
 * given twice, references to undefined tier schedules... (RULE_ERR_SEMANTIC).
 * Coverage problems that only matter when a rule is published (tier gaps,
 * caps below floors, ambiguous clauses) are left to rule_check().
 *
 * Pure C (see rule.h).  Errors unwind with longjmp to rule_parse(), which is
 * the only entry point; nothing outside this file is called in between
 * except the allocator.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rule_int.h"

typedef enum TokKind
{
	TOK_EOF = 0,
	TOK_WORD,
	TOK_STRING,
	TOK_COMMA,
	TOK_EQUALS
} TokKind;

typedef struct Token
{
	TokKind		kind;
	const char *s;				/* WORD: in the source; STRING: decoded */
	size_t		len;
	int			line;
	int			column;
} Token;

typedef struct Parser
{
	const char *src;
	const char *p;
	int			line;
	const char *line_start;
	Token		tok;			/* current token */
	char		strbuf[RULE_MAX_STRLEN + 1];	/* decoded string literal */
	RuleArena  *arena;
	RuleError  *err;
	jmp_buf		jb;
	Rule	   *rule;
	/* what has been seen, for duplicate detection */
	bool		seen_currency;
	bool		seen_rounding;
	bool		seen_basis;
	bool		seen_eligible;
	bool		seen_otherwise;
	/* growable arrays */
	uint32_t	cap_clauses;
	uint32_t	cap_tiers;
	/* per clause: tier schedule names referenced, resolved at the end */
	RuleStr    *tier_refs;
	Token	   *tier_ref_toks;
} Parser;

static void fail(Parser *ps, RuleErrorKind kind, int line, int col, const char *fmt,...)
			__attribute__((format(printf, 5, 6), noreturn));

static void
fail(Parser *ps, RuleErrorKind kind, int line, int col, const char *fmt,...)
{
	va_list		ap;

	ps->err->kind = kind;
	ps->err->line = line;
	ps->err->column = col;
	va_start(ap, fmt);
	vsnprintf(ps->err->message, sizeof(ps->err->message), fmt, ap);
	va_end(ap);
	longjmp(ps->jb, 1);
}

static bool
is_word_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		(c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
		c == '/' || c == '%' || c == '+' || c == '-' || c >= 0x80;
}

/* printable description of the current token, for messages */
static const char *
tok_desc(Parser *ps, char *buf, size_t buflen)
{
	Token	   *t = &ps->tok;

	switch (t->kind)
	{
		case TOK_EOF:
			return "end of rule";
		case TOK_COMMA:
			return "\",\"";
		case TOK_EQUALS:
			return "\"=\"";
		case TOK_WORD:
		case TOK_STRING:
			snprintf(buf, buflen, "\"%.*s\"", (int) (t->len > 40 ? 40 : t->len), t->s);
			return buf;
	}
	return "?";
}

static void syntax(Parser *ps, const char *expected) __attribute__((noreturn));

static void
syntax(Parser *ps, const char *expected)
{
	char		buf[64];

	fail(ps, RULE_ERR_SYNTAX, ps->tok.line, ps->tok.column,
		 "syntax error at %s: expected %s", tok_desc(ps, buf, sizeof(buf)), expected);
}

/* reads the next token into ps->tok */
static void
next(Parser *ps)
{
	const char *p = ps->p;

	for (;;)
	{
		if (*p == '\n')
		{
			p++;
			ps->line++;
			ps->line_start = p;
		}
		else if (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		else if (*p == '#' || (p[0] == '-' && p[1] == '-'))
		{
			while (*p != '\0' && *p != '\n')
				p++;
		}
		else
			break;
	}
	ps->tok.line = ps->line;
	ps->tok.column = (int) (p - ps->line_start) + 1;
	ps->tok.s = p;
	if (*p == '\0')
	{
		ps->tok.kind = TOK_EOF;
		ps->tok.len = 0;
	}
	else if (*p == ',')
	{
		ps->tok.kind = TOK_COMMA;
		ps->tok.len = 1;
		p++;
	}
	else if (*p == '=')
	{
		ps->tok.kind = TOK_EQUALS;
		ps->tok.len = 1;
		p++;
	}
	else if (*p == '"')
	{
		size_t		n = 0;

		p++;
		for (;;)
		{
			unsigned char c = (unsigned char) *p;

			if (c == '\0' || c == '\n')
				fail(ps, RULE_ERR_SYNTAX, ps->tok.line, ps->tok.column,
					 "unterminated quoted string");
			if (c == '"')
			{
				p++;
				break;
			}
			if (c == '\\')
			{
				p++;
				c = (unsigned char) *p;
				if (c != '"' && c != '\\')
					fail(ps, RULE_ERR_SYNTAX, ps->line, (int) (p - ps->line_start),
						 "invalid escape in quoted string: only \\\" and \\\\ are allowed");
			}
			else if (c < 0x20 || c == 0x7f)
				fail(ps, RULE_ERR_SYNTAX, ps->line, (int) (p - ps->line_start) + 1,
					 "control character in quoted string");
			if (n >= RULE_MAX_STRLEN)
				fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column,
					 "quoted string longer than %d bytes", RULE_MAX_STRLEN);
			ps->strbuf[n++] = (char) c;
			p++;
		}
		ps->strbuf[n] = '\0';
		ps->tok.kind = TOK_STRING;
		ps->tok.s = ps->strbuf;
		ps->tok.len = n;
	}
	else if (is_word_char((unsigned char) *p))
	{
		while (is_word_char((unsigned char) *p) && !(p[0] == '-' && p[1] == '-'))
			p++;
		ps->tok.kind = TOK_WORD;
		ps->tok.len = (size_t) (p - ps->tok.s);
		if (ps->tok.len > RULE_MAX_STRLEN)
			fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column,
				 "word longer than %d bytes", RULE_MAX_STRLEN);
	}
	else
	{
		unsigned char c = (unsigned char) *p;

		if (c >= 0x20 && c < 0x7f)
			fail(ps, RULE_ERR_SYNTAX, ps->tok.line, ps->tok.column,
				 "unexpected character \"%c\"", c);
		fail(ps, RULE_ERR_SYNTAX, ps->tok.line, ps->tok.column,
			 "unexpected character 0x%02x", c);
	}
	ps->p = p;
}

/* is the current token the keyword kw (case-insensitive)? */
static bool
is_kw(Parser *ps, const char *kw)
{
	size_t		n = strlen(kw);

	if (ps->tok.kind != TOK_WORD || ps->tok.len != n)
		return false;
	for (size_t i = 0; i < n; i++)
	{
		char		c = ps->tok.s[i];

		if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		if (c != kw[i])
			return false;
	}
	return true;
}

static bool
accept_kw(Parser *ps, const char *kw)
{
	if (is_kw(ps, kw))
	{
		next(ps);
		return true;
	}
	return false;
}

static void
expect_kw(Parser *ps, const char *kw)
{
	char		buf[64];

	if (!accept_kw(ps, kw))
	{
		snprintf(buf, sizeof(buf), "\"%s\"", kw);
		syntax(ps, buf);
	}
}

/* AMOUNT: a non-negative decimal with at most 8 places */
static money128
parse_amount(Parser *ps, const char *what)
{
	money128	v = 0;
	Token		t = ps->tok;

	if (t.kind != TOK_WORD)
		syntax(ps, what);
	switch (money_parse(t.s, t.len, MONEY_INPUT_SCALE, &v))
	{
		case MONEY_OK:
			break;
		case MONEY_SYNTAX:
			syntax(ps, what);
		case MONEY_TOO_PRECISE:
			fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
				 "amount %.*s has more than %d decimal places", (int) t.len, t.s,
				 MONEY_INPUT_SCALE);
		case MONEY_OUT_OF_RANGE:
			fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
				 "amount %.*s is out of range (at most %d integer digits)",
				 (int) t.len, t.s, MONEY_MAX_DIGITS);
	}
	if (v < 0)
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
			 "amount %.*s must not be negative", (int) t.len, t.s);
	next(ps);
	return v;
}

/* PERCENT: "7.5%" */
static int64_t
parse_percent(Parser *ps)
{
	int64_t		r = 0;
	Token		t = ps->tok;

	if (t.kind != TOK_WORD || t.len < 2 || t.s[t.len - 1] != '%')
		syntax(ps, "a percentage such as 7.5%");
	if (t.s[0] == '-')
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
			 "rate %.*s must not be negative", (int) t.len, t.s);
	switch (rate_parse_percent(t.s, t.len - 1, &r))
	{
		case MONEY_OK:
			break;
		case MONEY_SYNTAX:
			syntax(ps, "a percentage such as 7.5%");
		case MONEY_TOO_PRECISE:
			fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
				 "rate %.*s has more than %d decimal places", (int) t.len, t.s,
				 RATE_SCALE - 2);
		case MONEY_OUT_OF_RANGE:
			fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
				 "rate %.*s is above 100%%", (int) t.len, t.s);
	}
	next(ps);
	return r;
}

/* VALUE: a word or a quoted string, copied to the arena */
static RuleStr
parse_value(Parser *ps, const char *what)
{
	RuleStr		v;

	if (ps->tok.kind != TOK_WORD && ps->tok.kind != TOK_STRING)
		syntax(ps, what);
	if (ps->tok.len == 0)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "empty %s", what);
	v = rule_arena_str(ps->arena, ps->tok.s, ps->tok.len);
	next(ps);
	return v;
}

static void
check_identifier(Parser *ps, Token *t)
{
	bool		ok = t->kind == TOK_WORD && t->len > 0 &&
		((t->s[0] >= 'a' && t->s[0] <= 'z') || (t->s[0] >= 'A' && t->s[0] <= 'Z'));

	for (size_t i = 0; ok && i < t->len; i++)
	{
		char		c = t->s[i];

		ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9') || c == '_';
	}
	if (!ok)
		syntax(ps, "a tier schedule name (letters, digits, underscores)");
}

static void
parse_currency(Parser *ps)
{
	Token		t;

	if (ps->seen_currency)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "currency given twice");
	ps->seen_currency = true;
	next(ps);
	t = ps->tok;
	if (t.kind != TOK_WORD)
		syntax(ps, "a currency code such as USD");
	if (t.len != 3 || t.s[0] < 'A' || t.s[0] > 'Z' || t.s[1] < 'A' || t.s[1] > 'Z' ||
		t.s[2] < 'A' || t.s[2] > 'Z')
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
			 "currency %.*s is not an ISO 4217 code (three upper-case letters)",
			 (int) (t.len > 20 ? 20 : t.len), t.s);
	memcpy(ps->rule->currency, t.s, 3);
	ps->rule->currency[3] = '\0';
	ps->rule->minor_unit = money_currency_minor_unit(ps->rule->currency);
	next(ps);
}

static void
parse_rounding(Parser *ps)
{
	if (ps->seen_rounding)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "rounding given twice");
	ps->seen_rounding = true;
	next(ps);
	if (accept_kw(ps, "half_even"))
		ps->rule->rounding = MONEY_ROUND_HALF_EVEN;
	else if (accept_kw(ps, "half_up"))
		ps->rule->rounding = MONEY_ROUND_HALF_UP;
	else if (accept_kw(ps, "down"))
		ps->rule->rounding = MONEY_ROUND_DOWN;
	else
		syntax(ps, "half_even, half_up or down");
}

static void
parse_basis(Parser *ps)
{
	if (ps->seen_basis)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "basis given twice");
	ps->seen_basis = true;
	next(ps);
	if (accept_kw(ps, "billed_cost"))
		ps->rule->basis = RULE_BASIS_BILLED_COST;
	else if (accept_kw(ps, "list_cost"))
		ps->rule->basis = RULE_BASIS_LIST_COST;
	else if (accept_kw(ps, "amount_paid"))
		ps->rule->basis = RULE_BASIS_AMOUNT_PAID;
	else
		syntax(ps, "billed_cost, list_cost or amount_paid");
}

static RuleCharge
parse_charge(Parser *ps)
{
	RuleCharge	c;
	Token		t = ps->tok;

	if (t.kind != TOK_WORD && t.kind != TOK_STRING)
		syntax(ps, "a charge category (usage, purchase, tax, credit, adjustment)");
	c = rule_charge_category(t.s, t.len);
	if (c == RULE_CHARGE_UNKNOWN)
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
			 "unknown charge category \"%.*s\"", (int) (t.len > 40 ? 40 : t.len), t.s);
	next(ps);
	return c;
}

static void
parse_eligible(Parser *ps)
{
	if (ps->seen_eligible)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "eligible given twice");
	ps->seen_eligible = true;
	next(ps);
	ps->rule->eligible = 0;
	for (;;)
	{
		ps->rule->eligible |= 1u << parse_charge(ps);
		if (ps->tok.kind != TOK_COMMA)
			break;
		next(ps);
	}
}

static void
parse_minimum(Parser *ps)
{
	Token		t = ps->tok;

	next(ps);
	expect_kw(ps, "payout");
	if (ps->rule->has_min_payout)
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column, "minimum payout given twice");
	ps->rule->has_min_payout = true;
	ps->rule->min_payout = parse_amount(ps, "an amount");
}

static void
parse_refunds(Parser *ps)
{
	Token		t = ps->tok;
	money128	days;
	Token		dt;

	next(ps);
	expect_kw(ps, "reverse");
	expect_kw(ps, "at");
	expect_kw(ps, "original");
	expect_kw(ps, "rate");
	expect_kw(ps, "within");
	dt = ps->tok;
	if (dt.kind != TOK_WORD || money_parse(dt.s, dt.len, 0, &days) != MONEY_OK || days < 0)
		syntax(ps, "a number of days");
	if (days > (money128) RULE_MAX_REFUND_DAYS * MONEY_ONE)
		fail(ps, RULE_ERR_SEMANTIC, dt.line, dt.column,
			 "refund window of %.*s days is longer than %d days",
			 (int) dt.len, dt.s, RULE_MAX_REFUND_DAYS);
	next(ps);
	expect_kw(ps, "days");
	if (ps->rule->has_refund_window)
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column, "refund policy given twice");
	ps->rule->has_refund_window = true;
	ps->rule->refund_window_days = (int32_t) (days / MONEY_ONE);
}

/* "cap"/"floor" AMOUNT "per" scope, at rule level */
static void
parse_limit(Parser *ps, bool is_cap)
{
	Token		t = ps->tok;
	money128	v;
	int			scope;

	next(ps);
	v = parse_amount(ps, "an amount");
	expect_kw(ps, "per");
	if (accept_kw(ps, "line"))
		scope = RULE_SCOPE_LINE;
	else
	{
		if (accept_kw(ps, "customer"))
			scope = RULE_SCOPE_CUSTOMER;
		else if (accept_kw(ps, "reseller"))
			scope = RULE_SCOPE_RESELLER;
		else
			syntax(ps, "line, customer or reseller");
		expect_kw(ps, "per");
		expect_kw(ps, "period");
	}
	if (is_cap ? ps->rule->has_cap[scope] : ps->rule->has_floor[scope])
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column, "%s per %s given twice",
			 is_cap ? "cap" : "floor",
			 scope == RULE_SCOPE_LINE ? "line" : scope == RULE_SCOPE_CUSTOMER ? "customer" : "reseller");
	if (is_cap)
	{
		ps->rule->has_cap[scope] = true;
		ps->rule->cap[scope] = v;
	}
	else
	{
		ps->rule->has_floor[scope] = true;
		ps->rule->floor[scope] = v;
	}
}

static void
parse_tiers(Parser *ps)
{
	RuleTiers  *ts;
	Token		t = ps->tok;
	Token		nt;
	RuleBand	bands[RULE_MAX_BANDS];
	uint32_t	nb = 0;

	next(ps);
	nt = ps->tok;
	check_identifier(ps, &nt);
	if (ps->rule->ntiers >= RULE_MAX_TIERS)
		fail(ps, RULE_ERR_SEMANTIC, t.line, t.column, "more than %d tier schedules",
			 RULE_MAX_TIERS);
	for (uint32_t i = 0; i < ps->rule->ntiers; i++)
		if (ps->rule->tiers[i].name.len == nt.len &&
			memcmp(ps->rule->tiers[i].name.s, nt.s, nt.len) == 0)
			fail(ps, RULE_ERR_SEMANTIC, nt.line, nt.column,
				 "tier schedule %.*s defined twice", (int) nt.len, nt.s);
	if (ps->rule->ntiers == ps->cap_tiers)
	{
		uint32_t	ncap = ps->cap_tiers ? ps->cap_tiers * 2 : 4;
		RuleTiers  *n = rule_arena_alloc(ps->arena, sizeof(RuleTiers) * ncap);

		if (ps->rule->ntiers)
			memcpy(n, ps->rule->tiers, sizeof(RuleTiers) * ps->rule->ntiers);
		ps->rule->tiers = n;
		ps->cap_tiers = ncap;
	}
	ts = &ps->rule->tiers[ps->rule->ntiers++];
	ts->name = rule_arena_str(ps->arena, nt.s, nt.len);
	ts->line = t.line;
	ts->column = t.column;
	next(ps);
	expect_kw(ps, "on");
	if (accept_kw(ps, "customer"))
	{
		expect_kw(ps, "monthly");
		expect_kw(ps, "spend");
		ts->measure = RULE_MEASURE_CUSTOMER_SPEND;
	}
	else if (accept_kw(ps, "reseller"))
	{
		expect_kw(ps, "monthly");
		if (accept_kw(ps, "spend"))
			ts->measure = RULE_MEASURE_RESELLER_SPEND;
		else if (accept_kw(ps, "volume"))
			ts->measure = RULE_MEASURE_RESELLER_VOLUME;
		else
			syntax(ps, "spend or volume");
	}
	else
		syntax(ps, "customer monthly spend, reseller monthly spend or reseller monthly volume");
	{
		Token		mt = ps->tok;

		if (accept_kw(ps, "all_units"))
			ts->mode = RULE_TIER_ALL_UNITS;
		else if (accept_kw(ps, "graduated"))
			ts->mode = RULE_TIER_GRADUATED;
		else
			syntax(ps, "all_units or graduated");
		if (ts->mode == RULE_TIER_GRADUATED && ts->measure == RULE_MEASURE_RESELLER_VOLUME)
			fail(ps, RULE_ERR_SEMANTIC, mt.line, mt.column,
				 "graduated tiers need a spend measure: a volume band has no amount to apply its rate to");
	}
	if (!is_kw(ps, "from"))
		syntax(ps, "\"from\" starting a tier band");
	while (is_kw(ps, "from"))
	{
		RuleBand   *b;
		Token		bt = ps->tok;

		if (nb >= RULE_MAX_BANDS)
			fail(ps, RULE_ERR_SEMANTIC, bt.line, bt.column, "more than %d tier bands",
				 RULE_MAX_BANDS);
		b = &bands[nb++];
		memset(b, 0, sizeof(*b));
		b->line = bt.line;
		b->column = bt.column;
		next(ps);
		b->from = parse_amount(ps, "the amount the band starts at");
		if (is_kw(ps, "to"))
		{
			Token		tt;

			next(ps);
			tt = ps->tok;
			b->has_to = true;
			b->to = parse_amount(ps, "the amount the band ends before");
			if (b->to <= b->from)
				fail(ps, RULE_ERR_SEMANTIC, tt.line, tt.column,
					 "tier band ends at or before where it starts");
		}
		expect_kw(ps, "pay");
		b->rate = parse_percent(ps);
	}
	ts->nbands = nb;
	ts->bands = rule_arena_alloc(ps->arena, sizeof(RuleBand) * nb);
	memcpy(ts->bands, bands, sizeof(RuleBand) * nb);
}

static void
parse_cond(Parser *ps, RuleCond *cd, RuleClause *cl)
{
	Token		t = ps->tok;
	RuleStr		vals[RULE_MAX_VALUES];
	uint32_t	nv = 0;
	int			dim;

	if (is_kw(ps, "sku"))
		dim = RULE_DIM_SKU;
	else if (is_kw(ps, "product"))
		dim = RULE_DIM_PRODUCT;
	else if (is_kw(ps, "category"))
		dim = RULE_DIM_CATEGORY;
	else if (is_kw(ps, "charge"))
		dim = RULE_DIM_CHARGE;
	else if (is_kw(ps, "region"))
		dim = RULE_DIM_REGION;
	else if (is_kw(ps, "segment"))
		dim = RULE_DIM_SEGMENT;
	else if (is_kw(ps, "tag"))
		dim = RULE_DIM_TAG;
	else
		syntax(ps, "sku, product, category, charge, region, segment or tag");
	next(ps);
	cd->dim = (uint8_t) dim;
	cd->line = t.line;
	cd->column = t.column;
	if (dim == RULE_DIM_TAG)
	{
		cd->key = parse_value(ps, "a tag key");
		if (ps->tok.kind != TOK_EQUALS)
			syntax(ps, "\"=\" after the tag key");
		next(ps);
	}
	for (uint32_t i = 0; i < cl->ncond; i++)
	{
		if (cl->conds[i].dim != dim)
			continue;
		if (dim != RULE_DIM_TAG)
			fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
				 "%s given twice in one clause: list the values, separated by commas",
				 rule_dim_name(dim));
		if (rule_str_cmp(&cl->conds[i].key, &cd->key) == 0)
			fail(ps, RULE_ERR_SEMANTIC, t.line, t.column,
				 "tag %s given twice in one clause: list the values, separated by commas",
				 cd->key.s);
	}
	for (;;)
	{
		Token		vt = ps->tok;

		if (nv >= RULE_MAX_VALUES)
			fail(ps, RULE_ERR_SEMANTIC, vt.line, vt.column, "more than %d values",
				 RULE_MAX_VALUES);
		if (dim == RULE_DIM_CHARGE)
		{
			RuleCharge	c = parse_charge(ps);
			const char *n = rule_charge_name(c);

			vals[nv++] = rule_arena_str(ps->arena, n, strlen(n));
		}
		else
			vals[nv++] = parse_value(ps, dim == RULE_DIM_TAG ? "a tag value" : "a value to match");
		if (ps->tok.kind != TOK_COMMA)
			break;
		next(ps);
	}
	cd->nvalues = nv;
	cd->values = rule_arena_alloc(ps->arena, sizeof(RuleStr) * nv);
	memcpy(cd->values, vals, sizeof(RuleStr) * nv);
}

static RuleClause *
new_clause(Parser *ps)
{
	if (ps->rule->nclauses >= RULE_MAX_CLAUSES)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "more than %d clauses",
			 RULE_MAX_CLAUSES);
	if (ps->rule->nclauses == ps->cap_clauses)
	{
		uint32_t	ncap = ps->cap_clauses ? ps->cap_clauses * 2 : 8;
		RuleClause *n = rule_arena_alloc(ps->arena, sizeof(RuleClause) * ncap);
		RuleStr    *r = rule_arena_alloc(ps->arena, sizeof(RuleStr) * ncap);
		Token	   *rt = rule_arena_alloc(ps->arena, sizeof(Token) * ncap);

		if (ps->rule->nclauses)
		{
			memcpy(n, ps->rule->clauses, sizeof(RuleClause) * ps->rule->nclauses);
			memcpy(r, ps->tier_refs, sizeof(RuleStr) * ps->rule->nclauses);
			memcpy(rt, ps->tier_ref_toks, sizeof(Token) * ps->rule->nclauses);
		}
		ps->rule->clauses = n;
		ps->tier_refs = r;
		ps->tier_ref_toks = rt;
		ps->cap_clauses = ncap;
	}
	return &ps->rule->clauses[ps->rule->nclauses++];
}

/* "pay" ... [with limit (and limit)*] */
static void
parse_payout(Parser *ps, RuleClause *cl, uint32_t idx)
{
	expect_kw(ps, "pay");
	cl->tiers = -1;
	if (is_kw(ps, "tiers"))
	{
		next(ps);
		check_identifier(ps, &ps->tok);
		cl->pay = RULE_PAY_TIERS;
		ps->tier_refs[idx] = rule_arena_str(ps->arena, ps->tok.s, ps->tok.len);
		ps->tier_ref_toks[idx] = ps->tok;
		next(ps);
	}
	else if (ps->tok.kind == TOK_WORD && ps->tok.len > 0 && ps->tok.s[ps->tok.len - 1] == '%')
	{
		cl->pay = RULE_PAY_PERCENT;
		cl->rate = parse_percent(ps);
	}
	else
	{
		cl->amount = parse_amount(ps, "a percentage, an amount or \"tiers\"");
		expect_kw(ps, "per");
		if (accept_kw(ps, "line"))
			cl->pay = RULE_PAY_PER_LINE;
		else if (accept_kw(ps, "month"))
		{
			cl->pay = RULE_PAY_PER_MONTH;
			if (accept_kw(ps, "prorated"))
			{
				expect_kw(ps, "by");
				expect_kw(ps, "active");
				expect_kw(ps, "days");
				cl->pay = RULE_PAY_PER_MONTH_PRORATED;
			}
		}
		else
			syntax(ps, "line or month");
	}
	if (accept_kw(ps, "with"))
	{
		for (;;)
		{
			Token		t = ps->tok;
			bool		is_cap;
			money128	v;

			if (accept_kw(ps, "cap"))
				is_cap = true;
			else if (accept_kw(ps, "floor"))
				is_cap = false;
			else
				syntax(ps, "cap or floor");
			v = parse_amount(ps, "an amount");
			expect_kw(ps, "per");
			expect_kw(ps, "line");
			if (is_cap ? cl->has_cap : cl->has_floor)
				fail(ps, RULE_ERR_SEMANTIC, t.line, t.column, "%s per line given twice in one clause",
					 is_cap ? "cap" : "floor");
			if (is_cap)
			{
				cl->has_cap = true;
				cl->cap = v;
			}
			else
			{
				cl->has_floor = true;
				cl->floor = v;
			}
			if (!accept_kw(ps, "and"))
				break;
		}
	}
}

static void
parse_when(Parser *ps)
{
	RuleCond	conds[RULE_MAX_CONDS];
	uint32_t	idx = ps->rule->nclauses;
	RuleClause *cl = new_clause(ps);

	cl->line = ps->tok.line;
	cl->column = ps->tok.column;
	next(ps);
	cl->conds = conds;
	cl->ncond = 0;
	for (;;)
	{
		if (cl->ncond >= RULE_MAX_CONDS)
			fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column,
				 "more than %d conditions in one clause", RULE_MAX_CONDS);
		memset(&conds[cl->ncond], 0, sizeof(RuleCond));
		parse_cond(ps, &conds[cl->ncond], cl);
		cl->ncond++;
		if (!accept_kw(ps, "and"))
			break;
	}
	cl->conds = rule_arena_alloc(ps->arena, sizeof(RuleCond) * cl->ncond);
	memcpy(cl->conds, conds, sizeof(RuleCond) * cl->ncond);
	parse_payout(ps, cl, idx);
}

static void
parse_otherwise(Parser *ps)
{
	uint32_t	idx = ps->rule->nclauses;
	RuleClause *cl;

	if (ps->seen_otherwise)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column, "otherwise given twice");
	ps->seen_otherwise = true;
	cl = new_clause(ps);
	cl->line = ps->tok.line;
	cl->column = ps->tok.column;
	next(ps);
	parse_payout(ps, cl, idx);
}

Rule *
rule_parse(const char *src, const RuleAllocator *alloc, RuleError *err)
{
	/*
	 * The arena lives in allocated memory, not in this frame: it changes
	 * between setjmp and longjmp, which an automatic variable may not.
	 */
	RuleArena  *const arena = alloc->alloc(alloc->ctx, sizeof(RuleArena));
	Parser	   *ps;
	Rule	   *rule;

	memset(err, 0, sizeof(*err));
	rule_arena_init(arena, alloc);
	ps = rule_arena_alloc(arena, sizeof(Parser));
	ps->src = src;
	ps->p = src;
	ps->line = 1;
	ps->line_start = src;
	ps->arena = arena;
	ps->err = err;
	rule = rule_arena_alloc(arena, sizeof(Rule));
	ps->rule = rule;
	rule->rounding = MONEY_ROUND_HALF_EVEN;
	rule->basis = RULE_BASIS_BILLED_COST;
	rule->eligible = (1u << RULE_CHARGE_USAGE) | (1u << RULE_CHARGE_PURCHASE);

	if (setjmp(ps->jb) != 0)
	{
		rule_arena_release(arena);
		if (alloc->free)
			alloc->free(alloc->ctx, arena);
		return NULL;
	}

	next(ps);
	while (ps->tok.kind != TOK_EOF)
	{
		if (is_kw(ps, "currency"))
			parse_currency(ps);
		else if (is_kw(ps, "rounding"))
			parse_rounding(ps);
		else if (is_kw(ps, "basis"))
			parse_basis(ps);
		else if (is_kw(ps, "eligible"))
			parse_eligible(ps);
		else if (is_kw(ps, "minimum"))
			parse_minimum(ps);
		else if (is_kw(ps, "refunds"))
			parse_refunds(ps);
		else if (is_kw(ps, "cap"))
			parse_limit(ps, true);
		else if (is_kw(ps, "floor"))
			parse_limit(ps, false);
		else if (is_kw(ps, "tiers"))
			parse_tiers(ps);
		else if (is_kw(ps, "when"))
			parse_when(ps);
		else if (is_kw(ps, "otherwise"))
			parse_otherwise(ps);
		else
			syntax(ps, "a setting (currency, rounding, basis, eligible, minimum payout, refunds, cap, floor), \"tiers\", \"when\" or \"otherwise\"");
	}

	if (!ps->seen_currency)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column,
			 "the rule names no currency: add a line such as \"currency USD\"");
	if (rule->nclauses == 0)
		fail(ps, RULE_ERR_SEMANTIC, ps->tok.line, ps->tok.column,
			 "the rule has no clause: add \"when ... pay ...\" or \"otherwise pay ...\"");

	/* resolve tier references; every schedule must be used */
	{
		bool		used[RULE_MAX_TIERS];

		memset(used, 0, sizeof(used));
		for (uint32_t i = 0; i < rule->nclauses; i++)
		{
			RuleClause *cl = &rule->clauses[i];

			if (cl->pay != RULE_PAY_TIERS)
				continue;
			for (uint32_t j = 0; j < rule->ntiers; j++)
				if (rule_str_cmp(&rule->tiers[j].name, &ps->tier_refs[i]) == 0)
				{
					cl->tiers = (int32_t) j;
					used[j] = true;
				}
			if (cl->tiers < 0)
				fail(ps, RULE_ERR_SEMANTIC, ps->tier_ref_toks[i].line,
					 ps->tier_ref_toks[i].column, "undefined tier schedule %s",
					 ps->tier_refs[i].s);
		}
		for (uint32_t j = 0; j < rule->ntiers; j++)
			if (!used[j])
				fail(ps, RULE_ERR_SEMANTIC, rule->tiers[j].line, rule->tiers[j].column,
					 "tier schedule %s is never used", rule->tiers[j].name.s);
	}

	rule_canonicalize(rule, arena);
	rule->memory = arena->chunks;
	if (alloc->free)
		alloc->free(alloc->ctx, arena);
	return rule;
}
