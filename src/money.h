/*
 * money.h — exact decimal money arithmetic for settle, in pure C.
 *
 * A money value is a signed 128-bit integer counting units of 10^-16 of the
 * currency (MONEY_SCALE decimal places).  Values that come from outside
 * (bill amounts, caps, fixed amounts, tier bounds) carry at most
 * MONEY_INPUT_SCALE (8) decimal places and are smaller than MONEY_MAX_UNITS
 * in magnitude; money_parse refuses anything else instead of rounding it.
 * A rate is a fraction (not a percentage) in units of 10^-8 held in an
 * int64, so 7.5% is 7500000.  Bill amounts may carry up to MONEY_SCALE (16)
 * decimal places; the product of such an amount and a rate is formed exactly
 * at 10^-24 (|amount| < 10^30 raw units and rate <= 10^8 keep it below 10^38,
 * inside int128), and money_mul_rate_exact says whether it can be held at
 * MONEY_SCALE.
 *
 * No float or double is used anywhere.  This file does not include
 * postgres.h: the rule core, the fuzz harness and the benchmark link it as
 * plain C.
 */
#ifndef SETTLE_MONEY_H
#define SETTLE_MONEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * 8-byte alignment: palloc guarantees MAXALIGN (8), not the 16 bytes the ABI
 * gives __int128, so structs and arrays of money must not need more.
 */
typedef __int128 money128 __attribute__((aligned(8)));

#define MONEY_SCALE			16	/* decimal places held */
#define MONEY_INPUT_SCALE	8	/* decimal places accepted from outside */
#define RATE_SCALE			8	/* decimal places of a rate fraction */
#define MONEY_MAX_DIGITS	14	/* integer digits accepted: |x| < 10^14 */

/* 10^16 and 10^8 as money128 / int64 constants */
#define MONEY_ONE			((money128) 10000000000000000LL)
#define RATE_ONE			((int64_t) 100000000LL)
/* the largest accepted magnitude, 10^14 units, in raw form */
#define MONEY_MAX_RAW		(((money128) 100000000000000LL) * MONEY_ONE)

/* rounding modes; MONEY_ROUND_HALF_EVEN is the default */
typedef enum MoneyRounding
{
	MONEY_ROUND_HALF_EVEN = 0,
	MONEY_ROUND_HALF_UP = 1,	/* ties away from zero */
	MONEY_ROUND_DOWN = 2		/* towards zero (truncation) */
} MoneyRounding;

/* outcome of money_parse / rate_parse */
typedef enum MoneyParseStatus
{
	MONEY_OK = 0,
	MONEY_SYNTAX,				/* not a plain decimal number */
	MONEY_TOO_PRECISE,			/* more decimal places than allowed */
	MONEY_OUT_OF_RANGE			/* magnitude too large */
} MoneyParseStatus;

/*
 * Parses a plain decimal ("-12.345", "0.5", "7") of exactly len bytes.  At
 * most max_scale decimal places and MONEY_MAX_DIGITS integer digits are
 * accepted; no exponent, no spaces, no thousands separators.
 */
extern MoneyParseStatus money_parse(const char *s, size_t len, int max_scale,
									money128 *out);

/*
 * Parses a percentage without its '%' sign ("7.5" -> 7500000): at most
 * RATE_SCALE - 2 decimal places, not negative, at most 100.
 */
extern MoneyParseStatus rate_parse_percent(const char *s, size_t len, int64_t *out);

/*
 * Formats a money value as a plain decimal into buf (at least
 * MONEY_FORMAT_BUFLEN bytes).  Trailing fractional zeros are dropped, but at
 * least min_scale decimal places are printed.  Returns the length.
 */
#define MONEY_FORMAT_BUFLEN 64
extern int	money_format(money128 v, int min_scale, char *buf);

/* Formats a rate as a percentage without the '%' ("7.5"); returns length. */
extern int	rate_format_percent(int64_t rate, char *buf);

/* Formats a rate as a fraction ("0.075"); returns length. */
extern int	rate_format_fraction(int64_t rate, char *buf);

/*
 * Rounds v to minor_unit decimal places (0..MONEY_SCALE) in the given mode.
 * The result is still in MONEY_SCALE units (its extra digits are zero).
 */
extern money128 money_round(money128 v, int minor_unit, MoneyRounding mode);

/*
 * a / d into *q and a % d into *r, for 0 <= a and 0 < d.  GCC calls libgcc's
 * 128-bit division for every money128 '/' and '%', even by a constant, at
 * tens of nanoseconds each; an amount below 2^64 raw units (about 1,844
 * currency units, most bill lines) takes the 64-bit instruction instead.
 * settle_period divides every line's amounts by powers of ten several times.
 */
static inline void
money_udivmod(money128 a, uint64_t d, money128 *q, uint64_t *r)
{
	if ((unsigned __int128) a >> 64 == 0)
	{
		uint64_t	a64 = (uint64_t) a;

		*q = (money128) (a64 / d);
		*r = a64 % d;
	}
	else
	{
		*q = a / (money128) d;
		*r = (uint64_t) (a - *q * (money128) d);
	}
}

/* v rounded towards minus infinity to a multiple of unit (0 < unit < 2^63) */
static inline money128
money_floor_to(money128 v, uint64_t unit)
{
	money128	q;
	uint64_t	r;

	if (v >= 0)
	{
		money_udivmod(v, unit, &q, &r);
		return v - (money128) r;
	}
	money_udivmod(-v, unit, &q, &r);
	return r == 0 ? v : v - (money128) (unit - r);
}

/* amount x rate, exact (amount has at most MONEY_INPUT_SCALE places) */
static inline money128
money_mul_rate(money128 amount, int64_t rate)
{
	return amount * (money128) rate / (money128) RATE_ONE;
}

/*
 * amount x rate for an amount of up to MONEY_SCALE places (|amount| below
 * MONEY_MAX_RAW, 0 <= rate <= RATE_ONE): the product is formed at 10^-24 and
 * stored in *out when its digits below 10^-16 are zero.  False (and *out 0)
 * when the exact product cannot be held at MONEY_SCALE.
 */
static inline bool
money_mul_rate_exact(money128 amount, int64_t rate, money128 *out)
{
	bool		neg = amount < 0;
	money128	a = neg ? -amount : amount;
	money128	q;
	uint64_t	r;

	if ((unsigned __int128) a >> 64 == 0 && rate >= 0 && rate <= RATE_ONE)
	{
		/*
		 * a = q x 10^8 + r, so a x rate / 10^8 = q x rate + r x rate / 10^8,
		 * with r x rate < 10^16: no 128-bit division
		 */
		money_udivmod(a, (uint64_t) RATE_ONE, &q, &r);
		r *= (uint64_t) rate;
		if (r % (uint64_t) RATE_ONE != 0)
		{
			*out = 0;
			return false;
		}
		q = q * rate + (money128) (r / (uint64_t) RATE_ONE);
		*out = neg ? -q : q;
		return true;
	}
	else
	{
		money128	p = amount * (money128) rate;

		if (p % (money128) RATE_ONE != 0)
		{
			*out = 0;
			return false;
		}
		*out = p / (money128) RATE_ONE;
		return true;
	}
}

/*
 * amount x num / den, rounded half-even at MONEY_SCALE.  Used only for
 * proration (num = active days, den = days in the month).  den > 0.
 */
extern money128 money_mul_div(money128 amount, int64_t num, int64_t den);

/* ISO 4217 minor unit of a currency code (3 upper-case letters); 2 if unknown */
extern int	money_currency_minor_unit(const char *code);

#endif							/* SETTLE_MONEY_H */
