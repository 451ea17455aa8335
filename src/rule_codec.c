/*
 * rule_codec.c — the binary form of a rule (Rule <-> bytes).
 *
 * The same bytes are the varlena payload on disk and the send/recv wire
 * format.  Layout (little-endian, no padding):
 *
 *   "SRL" 0x01                       magic and format version
 *   currency[3] rounding:u8 basis:u8 eligible:u8 flags:u8
 *                                    flags: 1 refund window, 2 minimum payout,
 *                                    4<<s cap per scope s, 32<<s floor per scope s
 *   refund_window_days:i32  min_payout:i128  cap[3]:i128  floor[3]:i128
 *   ntiers:u16, per schedule: name:str measure:u8 mode:u8 nbands:u16,
 *                per band: from:i128 has_to:u8 to:i128 rate:i64
 *   nclauses:u16, per clause: ncond:u8,
 *                per condition: dim:u8 key:str nvalues:u16 values:str...
 *              pay:u8 limits:u8 rate:i64 amount:i128 tiers:u16 cap:i128 floor:i128
 *   str = len:u16 bytes (no NUL)
 *
 * rule_decode validates every field (ranges, references, limits, unused
 * fields zero) and then that re-encoding the canonicalised result gives the
 * input bytes exactly, so every accepted value has one representation and
 * equality is byte equality.
 *
 * Pure C (see rule.h).
 */
#include <stdio.h>
#include <string.h>

#include "rule_int.h"

#define RULE_MAGIC "SRL\001"

/* ---- encoding ---- */

static void
put_u8(RuleBuf *b, unsigned v)
{
	uint8_t		x = (uint8_t) v;

	rule_buf_append(b, &x, 1);
}

static void
put_u16(RuleBuf *b, unsigned v)
{
	uint8_t		x[2] = {(uint8_t) v, (uint8_t) (v >> 8)};

	rule_buf_append(b, x, 2);
}

static void
put_u64(RuleBuf *b, uint64_t v)
{
	uint8_t		x[8];

	for (int i = 0; i < 8; i++)
		x[i] = (uint8_t) (v >> (8 * i));
	rule_buf_append(b, x, 8);
}

static void
put_i32(RuleBuf *b, int32_t v)
{
	uint32_t	u = (uint32_t) v;
	uint8_t		x[4] = {(uint8_t) u, (uint8_t) (u >> 8), (uint8_t) (u >> 16), (uint8_t) (u >> 24)};

	rule_buf_append(b, x, 4);
}

static void
put_i128(RuleBuf *b, money128 v)
{
	unsigned __int128 u = (unsigned __int128) v;

	put_u64(b, (uint64_t) u);
	put_u64(b, (uint64_t) (u >> 64));
}

static void
put_str(RuleBuf *b, const RuleStr *s)
{
	put_u16(b, s->len);
	rule_buf_append(b, s->s, s->len);
}

uint8_t *
rule_encode(const Rule *rule, const RuleAllocator *alloc, size_t *len)
{
	RuleBuf		b;
	unsigned	flags = 0;

	rule_buf_init(&b, alloc, 256);
	rule_buf_append(&b, RULE_MAGIC, 4);
	rule_buf_append(&b, rule->currency, 3);
	put_u8(&b, rule->rounding);
	put_u8(&b, rule->basis);
	put_u8(&b, rule->eligible);
	if (rule->has_refund_window)
		flags |= 1;
	if (rule->has_min_payout)
		flags |= 2;
	for (int s = 0; s < RULE_NSCOPES; s++)
	{
		if (rule->has_cap[s])
			flags |= 4u << s;
		if (rule->has_floor[s])
			flags |= 32u << s;
	}
	put_u8(&b, flags);
	put_i32(&b, rule->has_refund_window ? rule->refund_window_days : 0);
	put_i128(&b, rule->has_min_payout ? rule->min_payout : 0);
	for (int s = 0; s < RULE_NSCOPES; s++)
		put_i128(&b, rule->has_cap[s] ? rule->cap[s] : 0);
	for (int s = 0; s < RULE_NSCOPES; s++)
		put_i128(&b, rule->has_floor[s] ? rule->floor[s] : 0);

	put_u16(&b, rule->ntiers);
	for (uint32_t i = 0; i < rule->ntiers; i++)
	{
		const RuleTiers *t = &rule->tiers[i];

		put_str(&b, &t->name);
		put_u8(&b, t->measure);
		put_u8(&b, t->mode);
		put_u16(&b, t->nbands);
		for (uint32_t j = 0; j < t->nbands; j++)
		{
			put_i128(&b, t->bands[j].from);
			put_u8(&b, t->bands[j].has_to);
			put_i128(&b, t->bands[j].has_to ? t->bands[j].to : 0);
			put_u64(&b, (uint64_t) t->bands[j].rate);
		}
	}

	put_u16(&b, rule->nclauses);
	for (uint32_t i = 0; i < rule->nclauses; i++)
	{
		const RuleClause *cl = &rule->clauses[i];

		put_u8(&b, cl->ncond);
		for (uint32_t j = 0; j < cl->ncond; j++)
		{
			const RuleCond *cd = &cl->conds[j];

			put_u8(&b, cd->dim);
			put_str(&b, &cd->key);
			put_u16(&b, cd->nvalues);
			for (uint32_t k = 0; k < cd->nvalues; k++)
				put_str(&b, &cd->values[k]);
		}
		put_u8(&b, cl->pay);
		put_u8(&b, (cl->has_cap ? 1 : 0) | (cl->has_floor ? 2 : 0));
		put_u64(&b, (uint64_t) (cl->pay == RULE_PAY_PERCENT ? cl->rate : 0));
		put_i128(&b, (cl->pay == RULE_PAY_PER_LINE || cl->pay == RULE_PAY_PER_MONTH ||
					  cl->pay == RULE_PAY_PER_MONTH_PRORATED) ? cl->amount : 0);
		put_u16(&b, cl->pay == RULE_PAY_TIERS ? (unsigned) cl->tiers : 0xFFFF);
		put_i128(&b, cl->has_cap ? cl->cap : 0);
		put_i128(&b, cl->has_floor ? cl->floor : 0);
	}
	*len = b.len;
	return (uint8_t *) b.data;
}

/* ---- decoding ---- */

typedef struct Reader
{
	const uint8_t *p;
	const uint8_t *end;
	RuleError  *err;
	bool		bad;
} Reader;

static bool corrupt(Reader *r, const char *fmt,...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>

static bool
corrupt(Reader *r, const char *fmt,...)
{
	va_list		ap;

	if (!r->bad)
	{
		r->bad = true;
		r->err->kind = RULE_ERR_CORRUPT;
		r->err->line = 0;
		r->err->column = 0;
		va_start(ap, fmt);
		vsnprintf(r->err->message, sizeof(r->err->message), fmt, ap);
		va_end(ap);
	}
	return false;
}

static bool
get_bytes(Reader *r, void *out, size_t n)
{
	if (r->bad)
		return false;
	if ((size_t) (r->end - r->p) < n)
		return corrupt(r, "invalid rule binary data: truncated");
	memcpy(out, r->p, n);
	r->p += n;
	return true;
}

static unsigned
get_u8(Reader *r)
{
	uint8_t		x = 0;

	get_bytes(r, &x, 1);
	return x;
}

static unsigned
get_u16(Reader *r)
{
	uint8_t		x[2] = {0, 0};

	get_bytes(r, x, 2);
	return (unsigned) x[0] | ((unsigned) x[1] << 8);
}

static uint64_t
get_u64(Reader *r)
{
	uint8_t		x[8] = {0};
	uint64_t	v = 0;

	get_bytes(r, x, 8);
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | x[i];
	return v;
}

static int32_t
get_i32(Reader *r)
{
	uint8_t		x[4] = {0};

	get_bytes(r, x, 4);
	return (int32_t) ((uint32_t) x[0] | ((uint32_t) x[1] << 8) |
					  ((uint32_t) x[2] << 16) | ((uint32_t) x[3] << 24));
}

static money128
get_i128(Reader *r)
{
	uint64_t	lo = get_u64(r);
	uint64_t	hi = get_u64(r);

	return (money128) (((unsigned __int128) hi << 64) | lo);
}

/* a non-negative input amount: < 10^14, at most 8 decimal places */
static money128
get_amount(Reader *r, const char *what)
{
	money128	v = get_i128(r);

	if (!r->bad && (v < 0 || v >= MONEY_MAX_RAW ||
					v % (MONEY_ONE / (money128) RATE_ONE) != 0))
		corrupt(r, "invalid rule binary data: %s out of range", what);
	return v;
}

static int64_t
get_rate(Reader *r)
{
	int64_t		v = (int64_t) get_u64(r);

	if (!r->bad && (v < 0 || v > RATE_ONE))
		corrupt(r, "invalid rule binary data: rate out of range");
	return v;
}

static RuleStr
get_str(Reader *r, RuleArena *arena, bool allow_empty, const char *what)
{
	unsigned	n = get_u16(r);
	RuleStr		s = {"", 0};

	if (r->bad)
		return s;
	if ((n == 0 && !allow_empty) || n > RULE_MAX_STRLEN)
	{
		corrupt(r, "invalid rule binary data: %s has invalid length %u", what, n);
		return s;
	}
	if ((size_t) (r->end - r->p) < n)
	{
		corrupt(r, "invalid rule binary data: truncated");
		return s;
	}
	for (unsigned i = 0; i < n; i++)
		if (r->p[i] < 0x20 || r->p[i] == 0x7f)
		{
			corrupt(r, "invalid rule binary data: control character in %s", what);
			return s;
		}
	s = rule_arena_str(arena, (const char *) r->p, n);
	r->p += n;
	return s;
}

static bool
is_identifier(const RuleStr *s)
{
	if (s->len == 0 || !((s->s[0] >= 'a' && s->s[0] <= 'z') || (s->s[0] >= 'A' && s->s[0] <= 'Z')))
		return false;
	for (uint32_t i = 0; i < s->len; i++)
	{
		char		c = s->s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
			return false;
	}
	return true;
}

Rule *
rule_decode(const uint8_t *data, size_t len, const RuleAllocator *alloc, RuleError *err)
{
	RuleArena	arena;
	Reader		r = {data, data + len, err, false};
	Rule	   *rule;
	uint8_t		magic[4] = {0};
	unsigned	flags;
	bool		used[RULE_MAX_TIERS];
	bool		otherwise = false;

	memset(err, 0, sizeof(*err));
	memset(used, 0, sizeof(used));
	rule_arena_init(&arena, alloc);
	rule = rule_arena_alloc(&arena, sizeof(Rule));

	if (!get_bytes(&r, magic, 4) || memcmp(magic, RULE_MAGIC, 4) != 0)
	{
		corrupt(&r, "invalid rule binary data: unknown format");
		goto bad;
	}
	get_bytes(&r, rule->currency, 3);
	rule->currency[3] = '\0';
	for (int i = 0; i < 3 && !r.bad; i++)
		if (rule->currency[i] < 'A' || rule->currency[i] > 'Z')
			corrupt(&r, "invalid rule binary data: bad currency code");
	rule->minor_unit = money_currency_minor_unit(rule->currency);
	rule->rounding = (uint8_t) get_u8(&r);
	rule->basis = (uint8_t) get_u8(&r);
	rule->eligible = get_u8(&r);
	flags = get_u8(&r);
	if (r.bad)
		goto bad;
	if (rule->rounding > MONEY_ROUND_DOWN || rule->basis > RULE_BASIS_AMOUNT_PAID ||
		rule->eligible == 0 || rule->eligible >= (1u << RULE_NCHARGES))
	{
		corrupt(&r, "invalid rule binary data: bad setting");
		goto bad;
	}
	rule->has_refund_window = (flags & 1) != 0;
	rule->has_min_payout = (flags & 2) != 0;
	for (int s = 0; s < RULE_NSCOPES; s++)
	{
		rule->has_cap[s] = (flags & (4u << s)) != 0;
		rule->has_floor[s] = (flags & (32u << s)) != 0;
	}
	rule->refund_window_days = get_i32(&r);
	if (!r.bad && (rule->refund_window_days < 0 || rule->refund_window_days > RULE_MAX_REFUND_DAYS))
		corrupt(&r, "invalid rule binary data: refund window out of range");
	rule->min_payout = get_amount(&r, "minimum payout");
	for (int s = 0; s < RULE_NSCOPES; s++)
		rule->cap[s] = get_amount(&r, "cap");
	for (int s = 0; s < RULE_NSCOPES; s++)
		rule->floor[s] = get_amount(&r, "floor");
	if (r.bad)
		goto bad;

	rule->ntiers = get_u16(&r);
	if (rule->ntiers > RULE_MAX_TIERS)
	{
		corrupt(&r, "invalid rule binary data: too many tier schedules");
		goto bad;
	}
	rule->tiers = rule_arena_alloc(&arena, sizeof(RuleTiers) * (rule->ntiers + 1));
	for (uint32_t i = 0; i < rule->ntiers && !r.bad; i++)
	{
		RuleTiers  *t = &rule->tiers[i];

		t->name = get_str(&r, &arena, false, "tier schedule name");
		t->measure = (uint8_t) get_u8(&r);
		t->mode = (uint8_t) get_u8(&r);
		t->nbands = get_u16(&r);
		if (r.bad)
			break;
		if (!is_identifier(&t->name) || t->measure > RULE_MEASURE_RESELLER_VOLUME ||
			t->mode > RULE_TIER_GRADUATED ||
			(t->mode == RULE_TIER_GRADUATED && t->measure == RULE_MEASURE_RESELLER_VOLUME) ||
			t->nbands == 0 || t->nbands > RULE_MAX_BANDS)
		{
			corrupt(&r, "invalid rule binary data: bad tier schedule");
			break;
		}
		t->bands = rule_arena_alloc(&arena, sizeof(RuleBand) * t->nbands);
		for (uint32_t j = 0; j < t->nbands && !r.bad; j++)
		{
			RuleBand   *bd = &t->bands[j];
			unsigned	has_to;

			bd->from = get_amount(&r, "tier band start");
			has_to = get_u8(&r);
			bd->to = get_amount(&r, "tier band end");
			bd->rate = get_rate(&r);
			if (r.bad)
				break;
			if (has_to > 1 || (has_to && bd->to <= bd->from) || (!has_to && bd->to != 0))
				corrupt(&r, "invalid rule binary data: bad tier band");
			bd->has_to = has_to != 0;
		}
	}
	if (r.bad)
		goto bad;

	rule->nclauses = get_u16(&r);
	if (r.bad || rule->nclauses == 0 || rule->nclauses > RULE_MAX_CLAUSES)
	{
		corrupt(&r, "invalid rule binary data: bad clause count");
		goto bad;
	}
	rule->clauses = rule_arena_alloc(&arena, sizeof(RuleClause) * rule->nclauses);
	for (uint32_t i = 0; i < rule->nclauses && !r.bad; i++)
	{
		RuleClause *cl = &rule->clauses[i];
		unsigned	lim;
		unsigned	tiers;

		cl->ncond = get_u8(&r);
		if (r.bad)
			break;
		if (cl->ncond > RULE_MAX_CONDS)
		{
			corrupt(&r, "invalid rule binary data: too many conditions");
			break;
		}
		if (cl->ncond == 0)
		{
			if (otherwise)
			{
				corrupt(&r, "invalid rule binary data: two otherwise clauses");
				break;
			}
			otherwise = true;
		}
		cl->conds = rule_arena_alloc(&arena, sizeof(RuleCond) * (cl->ncond + 1));
		for (uint32_t j = 0; j < cl->ncond && !r.bad; j++)
		{
			RuleCond   *cd = &cl->conds[j];

			cd->dim = (uint8_t) get_u8(&r);
			if (!r.bad && cd->dim >= RULE_NDIMS)
			{
				corrupt(&r, "invalid rule binary data: bad condition");
				break;
			}
			cd->key = get_str(&r, &arena, cd->dim != RULE_DIM_TAG, "tag key");
			if (!r.bad && (cd->dim == RULE_DIM_TAG) != (cd->key.len > 0))
			{
				corrupt(&r, "invalid rule binary data: bad tag key");
				break;
			}
			cd->nvalues = get_u16(&r);
			if (!r.bad && (cd->nvalues == 0 || cd->nvalues > RULE_MAX_VALUES))
			{
				corrupt(&r, "invalid rule binary data: bad value count");
				break;
			}
			if (r.bad)
				break;
			cd->values = rule_arena_alloc(&arena, sizeof(RuleStr) * cd->nvalues);
			for (uint32_t k = 0; k < cd->nvalues && !r.bad; k++)
			{
				cd->values[k] = get_str(&r, &arena, false, "value");
				if (!r.bad && cd->dim == RULE_DIM_CHARGE)
				{
					RuleCharge	c = rule_charge_category(cd->values[k].s, cd->values[k].len);

					if (c == RULE_CHARGE_UNKNOWN ||
						strcmp(rule_charge_name(c), cd->values[k].s) != 0)
						corrupt(&r, "invalid rule binary data: bad charge category");
				}
			}
			/* one condition per dimension (per key for tags) */
			for (uint32_t k = 0; k < j && !r.bad; k++)
				if (cl->conds[k].dim == cd->dim &&
					rule_str_cmp(&cl->conds[k].key, &cd->key) == 0)
					corrupt(&r, "invalid rule binary data: repeated condition");
		}
		cl->pay = (uint8_t) get_u8(&r);
		lim = get_u8(&r);
		cl->rate = get_rate(&r);
		cl->amount = get_amount(&r, "fixed amount");
		tiers = get_u16(&r);
		cl->cap = get_amount(&r, "cap");
		cl->floor = get_amount(&r, "floor");
		if (r.bad)
			break;
		if (cl->pay > RULE_PAY_TIERS || lim > 3 ||
			(cl->pay != RULE_PAY_PERCENT && cl->rate != 0) ||
			((cl->pay == RULE_PAY_PERCENT || cl->pay == RULE_PAY_TIERS) && cl->amount != 0) ||
			(cl->pay == RULE_PAY_TIERS ? tiers >= rule->ntiers : tiers != 0xFFFF) ||
			(!(lim & 1) && cl->cap != 0) || (!(lim & 2) && cl->floor != 0))
		{
			corrupt(&r, "invalid rule binary data: bad clause");
			break;
		}
		cl->has_cap = (lim & 1) != 0;
		cl->has_floor = (lim & 2) != 0;
		cl->tiers = cl->pay == RULE_PAY_TIERS ? (int32_t) tiers : -1;
		if (cl->pay == RULE_PAY_TIERS)
			used[tiers] = true;
	}
	if (r.bad)
		goto bad;
	if (r.p != r.end)
	{
		corrupt(&r, "invalid rule binary data: %zu trailing bytes", (size_t) (r.end - r.p));
		goto bad;
	}
	for (uint32_t i = 0; i < rule->ntiers; i++)
		if (!used[i])
		{
			corrupt(&r, "invalid rule binary data: unused tier schedule");
			goto bad;
		}
	/* absent settings must be zero */
	if ((!rule->has_refund_window && rule->refund_window_days != 0) ||
		(!rule->has_min_payout && rule->min_payout != 0))
	{
		corrupt(&r, "invalid rule binary data: value for an absent setting");
		goto bad;
	}
	for (int s = 0; s < RULE_NSCOPES; s++)
		if ((!rule->has_cap[s] && rule->cap[s] != 0) || (!rule->has_floor[s] && rule->floor[s] != 0))
		{
			corrupt(&r, "invalid rule binary data: value for an absent limit");
			goto bad;
		}
	/* duplicate tier names */
	for (uint32_t i = 1; i < rule->ntiers; i++)
		for (uint32_t j = 0; j < i; j++)
			if (rule_str_cmp(&rule->tiers[i].name, &rule->tiers[j].name) == 0)
			{
				corrupt(&r, "invalid rule binary data: duplicate tier schedule");
				goto bad;
			}

	/* canonical: re-encoding the canonical form must give the same bytes */
	{
		uint8_t    *again;
		size_t		againlen;
		bool		same;

		rule_canonicalize(rule, &arena);
		again = rule_encode(rule, alloc, &againlen);
		same = againlen == len && memcmp(again, data, len) == 0;
		if (alloc->free)
			alloc->free(alloc->ctx, again);
		if (!same)
		{
			corrupt(&r, "invalid rule binary data: not in canonical form");
			goto bad;
		}
	}
	rule->memory = arena.chunks;
	return rule;

bad:
	rule_arena_release(&arena);
	return NULL;
}
