/*
 * money.c — exact decimal money arithmetic (see money.h).
 *
 * Pure C: no postgres.h, no floating point.
 */
#include <string.h>

#include "money.h"

static const money128 pow10_tab[] = {
	1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL, 10000000LL,
	100000000LL, 1000000000LL, 10000000000LL, 100000000000LL,
	1000000000000LL, 10000000000000LL, 100000000000000LL,
	1000000000000000LL, 10000000000000000LL
};

/*
 * Parses a plain decimal into MONEY_SCALE units; see money.h.
 */
MoneyParseStatus
money_parse(const char *s, size_t len, int max_scale, money128 *out)
{
	size_t		i = 0;
	bool		neg = false;
	int			intdigits = 0;
	int			fracdigits = 0;
	money128	v = 0;

	if (len > 0 && (s[0] == '-' || s[0] == '+'))
	{
		neg = (s[0] == '-');
		i++;
	}
	if (i >= len || s[i] < '0' || s[i] > '9')
		return MONEY_SYNTAX;
	while (i < len && s[i] >= '0' && s[i] <= '9')
	{
		/* leading zeros do not count against the digit limit */
		if (intdigits > 0 || s[i] != '0')
			intdigits++;
		if (intdigits > MONEY_MAX_DIGITS)
			return MONEY_OUT_OF_RANGE;
		v = v * 10 + (s[i] - '0');
		i++;
	}
	if (i < len && s[i] == '.')
	{
		i++;
		if (i >= len || s[i] < '0' || s[i] > '9')
			return MONEY_SYNTAX;
		while (i < len && s[i] >= '0' && s[i] <= '9')
		{
			if (fracdigits >= MONEY_SCALE)
			{
				/* beyond what we hold: only zeros are acceptable */
				if (s[i] != '0')
					return MONEY_TOO_PRECISE;
			}
			else
			{
				v = v * 10 + (s[i] - '0');
				fracdigits++;
			}
			i++;
		}
	}
	if (i != len)
		return MONEY_SYNTAX;
	v *= pow10_tab[MONEY_SCALE - fracdigits];
	/* trailing zeros beyond max_scale are harmless; real digits are not */
	if (v % pow10_tab[MONEY_SCALE - max_scale] != 0)
		return MONEY_TOO_PRECISE;
	*out = neg ? -v : v;
	return MONEY_OK;
}

MoneyParseStatus
rate_parse_percent(const char *s, size_t len, int64_t *out)
{
	money128	v;
	MoneyParseStatus st;

	if (len > 0 && (s[0] == '-' || s[0] == '+'))
		return MONEY_SYNTAX;
	st = money_parse(s, len, RATE_SCALE - 2, &v);
	if (st != MONEY_OK)
		return st;
	/* v is percent x 10^16; the fraction x 10^8 is v / 10^10 */
	if (v > (money128) 100 * MONEY_ONE)
		return MONEY_OUT_OF_RANGE;
	*out = (int64_t) (v / pow10_tab[MONEY_SCALE - RATE_SCALE + 2]);
	return MONEY_OK;
}

/*
 * Prints |v| / 10^scale with the given minimum number of decimals.
 */
static int
format_scaled(money128 v, int scale, int min_scale, char *buf)
{
	char		digits[64];
	int			nd = 0;
	int			n = 0;
	bool		neg = v < 0;
	unsigned __int128 u = neg ? (unsigned __int128) (-(v + 1)) + 1 : (unsigned __int128) v;
	int			intlen;
	int			fraclen;
	int			k;

	do
	{
		digits[nd++] = (char) ('0' + (int) (u % 10));
		u /= 10;
	} while (u != 0);
	/* pad so there is at least one integer digit */
	while (nd <= scale)
		digits[nd++] = '0';
	/* digits[] is reversed: digits[0] is the least significant */
	fraclen = scale;
	k = 0;
	while (fraclen > min_scale && digits[k] == '0')
	{
		k++;
		fraclen--;
	}
	intlen = nd - scale;
	if (neg)
		buf[n++] = '-';
	for (int i = nd - 1; i >= nd - intlen; i--)
		buf[n++] = digits[i];
	if (fraclen > 0)
	{
		buf[n++] = '.';
		for (int i = scale - 1; i >= scale - fraclen; i--)
			buf[n++] = digits[i];
	}
	/* requested more decimals than held: pad */
	for (int i = fraclen; i < min_scale && fraclen < min_scale; i++)
	{
		if (i == 0)
			buf[n++] = '.';
		buf[n++] = '0';
	}
	buf[n] = '\0';
	return n;
}

int
money_format(money128 v, int min_scale, char *buf)
{
	if (min_scale > MONEY_SCALE)
		min_scale = MONEY_SCALE;
	return format_scaled(v, MONEY_SCALE, min_scale, buf);
}

int
rate_format_percent(int64_t rate, char *buf)
{
	return format_scaled((money128) rate, RATE_SCALE - 2, 0, buf);
}

int
rate_format_fraction(int64_t rate, char *buf)
{
	return format_scaled((money128) rate, RATE_SCALE, 0, buf);
}

/*
 * Rounds to minor_unit decimals.  Ties (exactly half a minor unit) go to the
 * even neighbour in half-even mode and away from zero in half-up mode; down
 * truncates towards zero.
 */
money128
money_round(money128 v, int minor_unit, MoneyRounding mode)
{
	money128	unit;
	money128	q;
	uint64_t	r;
	money128	twice;
	bool		neg = v < 0;
	money128	a;

	if (minor_unit < 0)
		minor_unit = 0;
	if (minor_unit >= MONEY_SCALE)
		return v;
	unit = pow10_tab[MONEY_SCALE - minor_unit];
	a = neg ? -v : v;
	money_udivmod(a, (uint64_t) unit, &q, &r);
	twice = (money128) r * 2;
	switch (mode)
	{
		case MONEY_ROUND_DOWN:
			break;
		case MONEY_ROUND_HALF_UP:
			if (twice >= unit)
				q++;
			break;
		case MONEY_ROUND_HALF_EVEN:
		default:
			if (twice > unit || (twice == unit && (q & 1) != 0))
				q++;
			break;
	}
	a = q * unit;
	return neg ? -a : a;
}

money128
money_mul_div(money128 amount, int64_t num, int64_t den)
{
	money128	p = amount * (money128) num;
	bool		neg = p < 0;
	money128	a = neg ? -p : p;
	money128	q = a / den;
	money128	r = a % den;

	if (r * 2 > den || (r * 2 == den && (q & 1) != 0))
		q++;
	return neg ? -q : q;
}

/* ISO 4217 currencies whose exponent is not 2 */
static const struct
{
	const char	code[4];
	int			minor_unit;
}			iso_exponents[] = {
	{"BHD", 3}, {"BIF", 0}, {"CLF", 4}, {"CLP", 0}, {"DJF", 0}, {"GNF", 0},
	{"IQD", 3}, {"ISK", 0}, {"JOD", 3}, {"JPY", 0}, {"KMF", 0}, {"KRW", 0},
	{"KWD", 3}, {"LYD", 3}, {"OMR", 3}, {"PYG", 0}, {"RWF", 0}, {"TND", 3},
	{"UGX", 0}, {"UYI", 0}, {"UYW", 4}, {"VND", 0}, {"VUV", 0}, {"XAF", 0},
	{"XOF", 0}, {"XPF", 0}
};

int
money_currency_minor_unit(const char *code)
{
	for (size_t i = 0; i < sizeof(iso_exponents) / sizeof(iso_exponents[0]); i++)
		if (memcmp(iso_exponents[i].code, code, 3) == 0)
			return iso_exponents[i].minor_unit;
	return 2;
}
