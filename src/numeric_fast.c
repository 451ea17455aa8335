/*
 * numeric_fast.c — numeric <-> money128 without going through text.
 *
 * settle_period converts millions of amounts between PostgreSQL's numeric
 * and the exact 128-bit fixed-point form of money.h (10^-16 units).  Going
 * through numeric_out/numeric_in costs a microsecond each; these functions
 * read and write numeric's on-disk format directly.  That format (see the
 * comments on NumericShort/NumericLong in src/backend/utils/adt/numeric.c)
 * is fixed by pg_upgrade compatibility: base-10000 digits, a weight, a sign
 * and a display scale, in a short (2-byte) or long (4-byte) header.  The
 * regression test sql/rules.sql checks both directions through
 * settle.evaluate_rule against numeric's own arithmetic, on amounts on both
 * sides of the 64-bit fast path's end and up to 10^14; the differential
 * tests (test/diff) compare every lineage amount with an independent model.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/numeric.h"

#include "numeric_fast.h"

/* numeric.c's on-disk header layout */
#define NF_SIGN_MASK			0xC000
#define NF_POS					0x0000
#define NF_NEG					0x4000
#define NF_SHORT				0x8000
#define NF_SPECIAL				0xC000
#define NF_SHORT_SIGN_MASK		0x2000
#define NF_SHORT_DSCALE_MASK	0x1F80
#define NF_SHORT_DSCALE_SHIFT	7
#define NF_SHORT_WEIGHT_SIGN	0x0040
#define NF_SHORT_WEIGHT_MASK	0x003F
#define NF_DSCALE_MASK			0x3FFF

#define NBASE 10000

static const money128 pow10000[] = {
	(money128) 1,
	(money128) 10000,
	(money128) 100000000,
	(money128) 1000000000000LL,
	(money128) 10000000000000000LL,
	(money128) 10000000000000000LL * 10000,
	(money128) 10000000000000000LL * 100000000,
	(money128) 10000000000000000LL * 1000000000000LL,
	(money128) 10000000000000000LL * 10000000000000000LL,
};

/*
 * Reads a numeric datum into *out (10^-16 units).  Returns false for NaN,
 * infinities, more than 16 decimal places or a magnitude of 10^20 or more;
 * the caller decides what error that is.
 */
bool
numeric_to_money128(Datum num, money128 *out)
{
	struct varlena *v = (struct varlena *) PG_DETOAST_DATUM_PACKED(num);
	const uint8 *p = (const uint8 *) VARDATA_ANY(v);
	int			len = VARSIZE_ANY_EXHDR(v);
	uint16		header;
	bool		neg;
	int			weight;
	int			ndigits;
	const uint8 *digits;
	money128	acc = 0;
	int			i;

	if (len < (int) sizeof(uint16))
		return false;
	memcpy(&header, p, sizeof(uint16));
	if ((header & NF_SIGN_MASK) == NF_SPECIAL)
		return false;
	if ((header & NF_SIGN_MASK) == NF_SHORT)
	{
		neg = (header & NF_SHORT_SIGN_MASK) != 0;
		weight = (header & NF_SHORT_WEIGHT_SIGN) ?
			(int) (header & NF_SHORT_WEIGHT_MASK) - (NF_SHORT_WEIGHT_MASK + 1) :
			(int) (header & NF_SHORT_WEIGHT_MASK);
		digits = p + sizeof(uint16);
		ndigits = (len - (int) sizeof(uint16)) / (int) sizeof(int16);
	}
	else
	{
		int16		w;

		if (len < (int) (sizeof(uint16) + sizeof(int16)))
			return false;
		neg = (header & NF_SIGN_MASK) == NF_NEG;
		memcpy(&w, p + sizeof(uint16), sizeof(int16));
		weight = w;
		digits = p + sizeof(uint16) + sizeof(int16);
		ndigits = (len - (int) (sizeof(uint16) + sizeof(int16))) / (int) sizeof(int16);
	}
	if (ndigits > 0 && weight > 4)
		return false;			/* >= 10^20 */

	for (i = 0; i < ndigits; i++)
	{
		int16		d;
		int			e = weight - i; /* this digit is d x 10000^e */

		memcpy(&d, digits + i * sizeof(int16), sizeof(int16));
		if (d < 0 || d >= NBASE)
			return false;
		if (e < -4)
		{
			if (d != 0)
				return false;	/* more than 16 decimal places */
			continue;
		}
		/* d x 10000^e in 10^-16 units is d x 10000^(e + 4) */
		acc += (money128) d * pow10000[e + 4];
	}
	*out = neg ? -acc : acc;
	return true;
}

/*
 * Builds a numeric from v (10^-16 units) with display scale dscale, which
 * must be at least the number of significant decimal places of v; a negative
 * dscale means "the places v needs, but at least -dscale - 1".
 */
Datum
money128_to_numeric(money128 v, int dscale)
{
	int16		digits[12];
	int			ndigits = 0;
	int			weight;
	bool		neg = v < 0;
	money128	a = neg ? -v : v;
	money128	ip128;
	uint64		fp;
	uint64		ip;
	int16		intd[10];
	int			nint = 0;
	int			first,
				last;
	struct varlena *result;
	uint16		header;
	int			i;

	/*
	 * The integer part and the 16 decimal places: below 2^64 raw units
	 * without any 128-bit division (money_udivmod), and the integer part in
	 * 64 bits unless it is 2^64 or more (sums, never a single amount).
	 */
	money_udivmod(a, (uint64) pow10000[4], &ip128, &fp);
	while ((unsigned __int128) ip128 >> 64 != 0)
	{
		intd[nint++] = (int16) (ip128 % NBASE);
		ip128 /= NBASE;
	}
	ip = (uint64) ip128;
	while (ip > 0)
	{
		intd[nint++] = (int16) (ip % NBASE);
		ip /= NBASE;
	}
	for (i = nint - 1; i >= 0; i--)
		digits[ndigits++] = intd[i];
	digits[ndigits++] = (int16) (fp / 1000000000000ULL);
	digits[ndigits++] = (int16) ((fp / 100000000ULL) % NBASE);
	digits[ndigits++] = (int16) ((fp / NBASE) % NBASE);
	digits[ndigits++] = (int16) (fp % NBASE);
	weight = nint - 1;

	/* strip leading and trailing zero digits, as numeric's make_result does */
	first = 0;
	while (first < ndigits && digits[first] == 0)
	{
		first++;
		weight--;
	}
	last = ndigits;
	while (last > first && digits[last - 1] == 0)
		last--;
	ndigits = last - first;
	if (ndigits == 0)
	{
		weight = 0;
		neg = false;
	}

	if (dscale < 0)
	{
		/* the last kept digit's position and its trailing zeros give the scale */
		int			min_scale = -dscale - 1;
		int			needed = 0;

		if (ndigits > 0 && weight - (ndigits - 1) < 0)
		{
			int16		lastd = digits[first + ndigits - 1];

			needed = -4 * (weight - (ndigits - 1));
			while (lastd % 10 == 0)
			{
				lastd /= 10;
				needed--;
			}
		}
		dscale = Max(min_scale, needed);
	}
	Assert(dscale >= money128_scale(v) && dscale <= 63);

	header = NF_SHORT | (neg ? NF_SHORT_SIGN_MASK : 0) |
		((uint16) dscale << NF_SHORT_DSCALE_SHIFT) |
		(weight < 0 ? NF_SHORT_WEIGHT_SIGN : 0) | ((uint16) weight & NF_SHORT_WEIGHT_MASK);
	result = palloc(VARHDRSZ + sizeof(uint16) + ndigits * sizeof(int16));
	SET_VARSIZE(result, VARHDRSZ + sizeof(uint16) + ndigits * sizeof(int16));
	memcpy(VARDATA(result), &header, sizeof(uint16));
	if (ndigits > 0)
		memcpy(VARDATA(result) + sizeof(uint16), digits + first, ndigits * sizeof(int16));
	return PointerGetDatum(result);
}

/* The number of significant decimal places of v (0..16). */
int
money128_scale(money128 v)
{
	money128	fp = (v < 0 ? -v : v) % pow10000[4];
	int			scale = 16;

	if (fp == 0)
		return 0;
	while (fp % 10 == 0)
	{
		fp /= 10;
		scale--;
	}
	return scale;
}
