/*
 * recon_agg.c — the parallel-safe aggregates reconciliation is built on.
 *
 * settle.money_total(amount numeric, currency text)
 *		An exact sum of money amounts with their line count and a currency
 *		check: the result says which currency the amounts are in, or that
 *		they mix currencies (then it refuses to give a total).  Amounts are
 *		added as 128-bit integers of 10^-16 units (money.h); nothing passes
 *		through float or double and nothing is rounded.
 *
 * settle.line_fingerprint(line_key text, amount numeric)
 *		An order-independent fingerprint of a set of (line key, amount)
 *		pairs: the count, the wrapping sum and the xor of one 64-bit hash per
 *		pair.  Two sides with equal fingerprints hold the same pairs (up to
 *		hash collisions); when they differ by one pair, the difference of
 *		the sums is that pair's settle.line_hash, which finds it without a
 *		join (settle.fingerprint_diff).
 *
 * Both keep an internal state in the aggregate context and provide combine,
 * serial and deserial functions, so the planner can run them as partial
 * aggregates in parallel workers.  The deserial functions check every byte
 * they are given and refuse malformed input with an error instead of
 * building a state from it.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "port/pg_bswap.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "money.h"
#include "numeric_fast.h"
#include "recon_agg.h"

PG_FUNCTION_INFO_V1(settle_money_total_trans);
PG_FUNCTION_INFO_V1(settle_money_total_combine);
PG_FUNCTION_INFO_V1(settle_money_total_serial);
PG_FUNCTION_INFO_V1(settle_money_total_deserial);
PG_FUNCTION_INFO_V1(settle_money_total_final);
PG_FUNCTION_INFO_V1(settle_line_fingerprint_trans);
PG_FUNCTION_INFO_V1(settle_line_fingerprint_combine);
PG_FUNCTION_INFO_V1(settle_line_fingerprint_serial);
PG_FUNCTION_INFO_V1(settle_line_fingerprint_deserial);
PG_FUNCTION_INFO_V1(settle_line_fingerprint_final);
PG_FUNCTION_INFO_V1(settle_line_hash);
PG_FUNCTION_INFO_V1(settle_fingerprint_diff);
PG_FUNCTION_INFO_V1(settle_money_total_check_state);
PG_FUNCTION_INFO_V1(settle_line_fingerprint_check_state);

/* version byte at the start of every serialized state */
#define MT_SERIAL_VERSION	1
#define FP_SERIAL_VERSION	1
#define MT_SERIAL_LEN		(1 + 1 + 3 + 3 + 8 + 16)
#define FP_SERIAL_LEN		(1 + 8 + 8 + 8)
#define FP_RESULT_LEN		(8 + 8 + 8)

/* money_total state flags */
#define MT_HAS_CURRENCY		0x01	/* low/high hold currency codes */
#define MT_NULL_CURRENCY	0x02	/* an amount came without a currency */
#define MT_KNOWN_FLAGS		(MT_HAS_CURRENCY | MT_NULL_CURRENCY)

/*
 * money_total state: the count and exact sum of the non-null amounts, and
 * the smallest and largest currency code seen (equal when there is one
 * currency).  Keeping the two extremes instead of a first-seen code makes
 * the result independent of row order and of how workers split the rows.
 */
typedef struct MoneyTotalState
{
	money128	total;
	int64		lines;
	uint8		flags;
	char		low[3];
	char		high[3];
} MoneyTotalState;

/* line_fingerprint state; the sum wraps modulo 2^64 by design */
typedef struct FingerprintState
{
	int64		lines;
	uint64		sum;
	uint64		xor;
} FingerprintState;

static MemoryContext
agg_context(FunctionCallInfo fcinfo, const char *fname)
{
	MemoryContext aggcontext;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "%s called in non-aggregate context", fname);
	return aggcontext;
}

/*
 * Deserial functions also run outside an aggregate (the regression test
 * feeds them malformed bytes): their state then lives in the caller's
 * context.
 */
static MemoryContext
deserial_context(FunctionCallInfo fcinfo)
{
	MemoryContext aggcontext;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		aggcontext = CurrentMemoryContext;
	return aggcontext;
}

static inline bool
valid_code(const char *c)
{
	return c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' &&
		c[2] >= 'A' && c[2] <= 'Z';
}

/* merges the currency information of src into dst */
static void
mt_merge_currency(MoneyTotalState *dst, uint8 flags, const char *low, const char *high)
{
	dst->flags |= (flags & MT_NULL_CURRENCY);
	if (!(flags & MT_HAS_CURRENCY))
		return;
	if (!(dst->flags & MT_HAS_CURRENCY))
	{
		memcpy(dst->low, low, 3);
		memcpy(dst->high, high, 3);
		dst->flags |= MT_HAS_CURRENCY;
		return;
	}
	if (memcmp(low, dst->low, 3) < 0)
		memcpy(dst->low, low, 3);
	if (memcmp(high, dst->high, 3) > 0)
		memcpy(dst->high, high, 3);
}

static void
mt_add(MoneyTotalState *st, money128 v, int64 n)
{
	if (__builtin_add_overflow(st->total, v, &st->total) ||
		__builtin_add_overflow(st->lines, n, &st->lines))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("money total out of range"),
				 errdetail("The sum of the amounts exceeds the exact 128-bit range.")));
}

/*
 * Transition: adds one amount.  A null amount is skipped (as sum() does); a
 * null currency marks the total as not in one currency.
 */
Datum
settle_money_total_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = agg_context(fcinfo, "settle_money_total_trans");
	MoneyTotalState *st = PG_ARGISNULL(0) ? NULL : (MoneyTotalState *) PG_GETARG_POINTER(0);
	money128	v;

	if (st == NULL)
		st = MemoryContextAllocZero(aggcontext, sizeof(MoneyTotalState));
	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(st);

	if (!numeric_to_money128(PG_GETARG_DATUM(1), &v) || v >= MONEY_MAX_RAW || v <= -MONEY_MAX_RAW)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("amount %s cannot be added exactly",
						DatumGetCString(DirectFunctionCall1(numeric_out, PG_GETARG_DATUM(1)))),
				 errdetail("Money amounts must be finite, below 10^14 and have at most 16 decimal places.")));
	mt_add(st, v, 1);

	if (PG_ARGISNULL(2))
		st->flags |= MT_NULL_CURRENCY;
	else
	{
		text	   *t = PG_GETARG_TEXT_PP(2);
		const char *c = VARDATA_ANY(t);

		if (VARSIZE_ANY_EXHDR(t) != 3 || !valid_code(c))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid currency code \"%s\"", text_to_cstring(t)),
					 errdetail("A currency is an ISO 4217 code of three upper-case letters.")));
		/* the common case: the same single currency again */
		if ((st->flags & MT_HAS_CURRENCY) && memcmp(st->low, c, 3) == 0 &&
			memcmp(st->high, c, 3) == 0)
			PG_RETURN_POINTER(st);
		mt_merge_currency(st, MT_HAS_CURRENCY, c, c);
	}
	PG_RETURN_POINTER(st);
}

/* Combine: merges two partial states (either may be null). */
Datum
settle_money_total_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = agg_context(fcinfo, "settle_money_total_combine");
	MoneyTotalState *a = PG_ARGISNULL(0) ? NULL : (MoneyTotalState *) PG_GETARG_POINTER(0);
	MoneyTotalState *b = PG_ARGISNULL(1) ? NULL : (MoneyTotalState *) PG_GETARG_POINTER(1);

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		a = MemoryContextAlloc(aggcontext, sizeof(MoneyTotalState));
		memcpy(a, b, sizeof(MoneyTotalState));
		PG_RETURN_POINTER(a);
	}
	mt_add(a, b->total, b->lines);
	mt_merge_currency(a, b->flags, b->low, b->high);
	PG_RETURN_POINTER(a);
}

/* Serial: version, flags, low, high, lines, total (high then low 64 bits). */
Datum
settle_money_total_serial(PG_FUNCTION_ARGS)
{
	MoneyTotalState *st = (MoneyTotalState *) PG_GETARG_POINTER(0);
	StringInfoData buf;
	unsigned __int128 u = (unsigned __int128) st->total;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, MT_SERIAL_VERSION);
	pq_sendbyte(&buf, st->flags);
	pq_sendbytes(&buf, (st->flags & MT_HAS_CURRENCY) ? st->low : "\0\0\0", 3);
	pq_sendbytes(&buf, (st->flags & MT_HAS_CURRENCY) ? st->high : "\0\0\0", 3);
	pq_sendint64(&buf, st->lines);
	pq_sendint64(&buf, (uint64) (u >> 64));
	pq_sendint64(&buf, (uint64) u);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

static void
bad_state(const char *what, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
			 errmsg("invalid serialized %s state", what),
			 errdetail("%s", detail)));
}

/*
 * Deserial: rebuilds a state from settle_money_total_serial's bytes.  Every
 * field is checked: exact length, known version and flags, currency codes of
 * upper-case letters in order, a non-negative count, and a total no larger
 * than the count of largest accepted amounts allows.
 */
Datum
settle_money_total_deserial(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = deserial_context(fcinfo);
	bytea	   *b;
	const unsigned char *p;
	MoneyTotalState *st;
	uint64		hi,
				lo;
	int			i;
	unsigned __int128 mag;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	b = PG_GETARG_BYTEA_PP(0);
	p = (const unsigned char *) VARDATA_ANY(b);
	if (VARSIZE_ANY_EXHDR(b) != MT_SERIAL_LEN)
		bad_state("money_total", psprintf("The state is %d bytes long; %d were expected.",
										  (int) VARSIZE_ANY_EXHDR(b), MT_SERIAL_LEN));
	if (p[0] != MT_SERIAL_VERSION)
		bad_state("money_total", psprintf("Unknown state version %d.", p[0]));
	if (p[1] & ~MT_KNOWN_FLAGS)
		bad_state("money_total", psprintf("Unknown flags 0x%02x.", p[1]));

	st = MemoryContextAllocZero(aggcontext, sizeof(MoneyTotalState));
	st->flags = p[1];
	memcpy(st->low, p + 2, 3);
	memcpy(st->high, p + 5, 3);
	if (st->flags & MT_HAS_CURRENCY)
	{
		if (!valid_code(st->low) || !valid_code(st->high) || memcmp(st->low, st->high, 3) > 0)
			bad_state("money_total", "The currency codes are not upper-case ISO 4217 codes in order.");
	}
	else if (memcmp(st->low, "\0\0\0", 3) != 0 || memcmp(st->high, "\0\0\0", 3) != 0)
		bad_state("money_total", "Currency bytes are set but the state has no currency.");

	st->lines = 0;
	for (i = 0; i < 8; i++)
		st->lines = (int64) (((uint64) st->lines << 8) | p[8 + i]);
	hi = lo = 0;
	for (i = 0; i < 8; i++)
	{
		hi = (hi << 8) | p[16 + i];
		lo = (lo << 8) | p[24 + i];
	}
	st->total = (money128) (((unsigned __int128) hi << 64) | lo);
	if (st->lines < 0)
		bad_state("money_total", "The line count is negative.");
	if (st->lines == 0 && (st->total != 0 || st->flags != 0))
		bad_state("money_total", "A state without lines has a total or a currency.");
	mag = st->total < 0 ? -(unsigned __int128) st->total : (unsigned __int128) st->total;
	if (mag / (unsigned __int128) MONEY_MAX_RAW > (unsigned __int128) st->lines)
		bad_state("money_total", "The total is larger than its line count allows.");
	PG_RETURN_POINTER(st);
}

/*
 * Final: (currency, lines, total, mixed, currencies).  With one currency the
 * total is exact at the larger of the currency's minor unit and the amounts'
 * own decimals; with several (or a missing one) currency and total are null,
 * mixed is true and currencies names the lowest and highest codes seen.
 */
Datum
settle_money_total_final(PG_FUNCTION_ARGS)
{
	MoneyTotalState *st = PG_ARGISNULL(0) ? NULL : (MoneyTotalState *) PG_GETARG_POINTER(0);
	TupleDesc	tupdesc;
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	bool		mixed;
	Datum		codes[2];
	int			ncodes = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "settle_money_total_final must return a composite");
	tupdesc = BlessTupleDesc(tupdesc);

	if (st == NULL || st->lines == 0)
	{
		values[0] = (Datum) 0;
		nulls[0] = true;
		values[1] = Int64GetDatum(0);
		values[2] = (Datum) 0;
		nulls[2] = true;
		values[3] = BoolGetDatum(false);
		values[4] = (Datum) 0;
		nulls[4] = true;
		PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
	}

	mixed = (st->flags & MT_NULL_CURRENCY) || !(st->flags & MT_HAS_CURRENCY) ||
		memcmp(st->low, st->high, 3) != 0;
	if (st->flags & MT_HAS_CURRENCY)
	{
		codes[ncodes++] = PointerGetDatum(cstring_to_text_with_len(st->low, 3));
		if (memcmp(st->low, st->high, 3) != 0)
			codes[ncodes++] = PointerGetDatum(cstring_to_text_with_len(st->high, 3));
	}
	values[1] = Int64GetDatum(st->lines);
	values[3] = BoolGetDatum(mixed);
	if (mixed)
	{
		nulls[0] = nulls[2] = true;
		values[0] = values[2] = (Datum) 0;
	}
	else
	{
		char		code[4];
		int			scale = money128_scale(st->total);

		memcpy(code, st->low, 3);
		code[3] = '\0';
		values[0] = codes[0];
		values[2] = money128_to_numeric(st->total, Max(scale, money_currency_minor_unit(code)));
	}
	if (ncodes > 0)
		values[4] = PointerGetDatum(construct_array(codes, ncodes, TEXTOID, -1, false, TYPALIGN_INT));
	else
	{
		values[4] = (Datum) 0;
		nulls[4] = true;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* ---- line fingerprints ---- */

#define FP_SEED		UINT64CONST(0x5e771e5e771e0006)

/* the finaliser of splitmix64: spreads every input bit over the output */
static inline uint64
mix64(uint64 x)
{
	x ^= x >> 30;
	x *= UINT64CONST(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64CONST(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

/*
 * 64-bit hash of a line key: eight bytes at a time, read little-endian so
 * the value is the same on every server.  Line keys are short (tens of
 * bytes); this is several times faster than hash_bytes_extended on them,
 * which matters at millions of lines.
 */
static inline uint64
key_hash(const unsigned char *p, size_t len)
{
	uint64		h = FP_SEED ^ ((uint64) len * UINT64CONST(0x9e3779b97f4a7c15));
	uint64		w;

	while (len >= 8)
	{
		memcpy(&w, p, 8);
#ifdef WORDS_BIGENDIAN
		w = pg_bswap64(w);
#endif
		w *= UINT64CONST(0xbf58476d1ce4e5b9);
		h = (h ^ (w ^ (w >> 31))) * UINT64CONST(0x94d049bb133111eb);
		p += 8;
		len -= 8;
	}
	if (len > 0)
	{
		size_t		i;

		w = 0;
		for (i = 0; i < len; i++)
			w |= (uint64) p[i] << (8 * i);
		w *= UINT64CONST(0xbf58476d1ce4e5b9);
		h = (h ^ (w ^ (w >> 31))) * UINT64CONST(0x94d049bb133111eb);
	}
	return mix64(h);
}

/*
 * The 64-bit hash of one (line key, amount) pair.  The amount enters by its
 * exact value, so 1.5 and 1.50 hash alike; a null amount hashes apart from
 * every number.
 */
static inline uint64
pair_hash_raw(const unsigned char *key, size_t len, money128 v)
{
	uint64		hk = key_hash(key, len);
	unsigned __int128 u = (unsigned __int128) v;
	uint64		ha = ((uint64) u * UINT64CONST(0x9e3779b97f4a7c15)) ^ (uint64) (u >> 64);

	return mix64(hk ^ (ha + UINT64CONST(0x9e3779b97f4a7c15)));
}

static uint64
pair_hash(text *key, Datum amount, bool amount_null)
{
	if (amount_null)
	{
		uint64		hk = key_hash((const unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key));
		uint64		ha = UINT64CONST(0x6e756c6c);	/* "null" */

		return mix64(hk ^ (ha + UINT64CONST(0x9e3779b97f4a7c15)));
	}
	else
	{
		money128	v;

		if (!numeric_to_money128(amount, &v) || v >= MONEY_MAX_RAW || v <= -MONEY_MAX_RAW)
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("amount %s cannot be fingerprinted exactly",
							DatumGetCString(DirectFunctionCall1(numeric_out, amount))),
					 errdetail("Money amounts must be finite, below 10^14 and have at most 16 decimal places.")));
		return pair_hash_raw((const unsigned char *) VARDATA_ANY(key), VARSIZE_ANY_EXHDR(key), v);
	}
}

/* the pair hash of settle.line_fingerprint, for an amount already converted (recon_scan.c) */
uint64
recon_pair_hash(const char *key, size_t len, money128 amount)
{
	return pair_hash_raw((const unsigned char *) key, len, amount);
}

/* the same, from the key's recon_bytes_hash */
uint64
recon_pair_hash_keyhash(uint64 keyhash, money128 amount)
{
	unsigned __int128 u = (unsigned __int128) amount;
	uint64		ha = ((uint64) u * UINT64CONST(0x9e3779b97f4a7c15)) ^ (uint64) (u >> 64);

	return mix64(keyhash ^ (ha + UINT64CONST(0x9e3779b97f4a7c15)));
}

/* ... and of a null amount */
uint64
recon_pair_hash_null(uint64 keyhash)
{
	return mix64(keyhash ^ (UINT64CONST(0x6e756c6c) + UINT64CONST(0x9e3779b97f4a7c15)));
}

/* a 64-bit hash of any bytes (line keys, records: recon_scan.c) */
uint64
recon_bytes_hash(const char *p, size_t len)
{
	return key_hash((const unsigned char *) p, len);
}

/*
 * settle.line_fingerprint's result for a set of lines given by its count,
 * wrapping sum and xor of the pair hashes (recon_scan.c).
 */
bytea *
recon_fingerprint_bytea(int64 lines, uint64 sum, uint64 xor)
{
	bytea	   *r = palloc(VARHDRSZ + FP_RESULT_LEN);
	unsigned char *p = (unsigned char *) VARDATA(r);
	uint64		f[3];
	int			i,
				j;

	SET_VARSIZE(r, VARHDRSZ + FP_RESULT_LEN);
	f[0] = (uint64) lines;
	f[1] = sum;
	f[2] = xor;
	for (i = 0; i < 3; i++)
		for (j = 0; j < 8; j++)
			p[i * 8 + j] = (unsigned char) (f[i] >> (56 - 8 * j));
	return r;
}

/*
 * settle.money_total's result for lines amounts of one currency code (null:
 * amounts without a currency) adding up to total (recon_scan.c); tupdesc is
 * settle.money_total's.
 */
Datum
recon_money_total_datum(TupleDesc tupdesc, money128 total, int64 lines, const char *code3)
{
	Datum		values[5];
	bool		nulls[5] = {false, false, false, false, false};
	Datum		codes[1];
	char		code[4];

	if (lines == 0 || code3 == NULL)
	{
		/* no amount; or amounts without a currency: mixed, no total */
		nulls[0] = nulls[2] = nulls[4] = true;
		values[0] = values[2] = values[4] = (Datum) 0;
		values[1] = Int64GetDatum(lines);
		values[3] = BoolGetDatum(lines > 0);
		return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
	}
	memcpy(code, code3, 3);
	code[3] = '\0';
	codes[0] = PointerGetDatum(cstring_to_text_with_len(code, 3));
	values[0] = codes[0];
	values[1] = Int64GetDatum(lines);
	values[2] = money128_to_numeric(total, Max(money128_scale(total), money_currency_minor_unit(code)));
	values[3] = BoolGetDatum(false);
	values[4] = PointerGetDatum(construct_array(codes, 1, TEXTOID, -1, false, TYPALIGN_INT));
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

/* the checks of settle.money_total's transition on a currency code */
bool
recon_valid_currency(const char *c, size_t len)
{
	return len == 3 && valid_code(c);
}

/* Transition: adds one pair; rows with a null line key are not counted. */
Datum
settle_line_fingerprint_trans(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = agg_context(fcinfo, "settle_line_fingerprint_trans");
	FingerprintState *st = PG_ARGISNULL(0) ? NULL : (FingerprintState *) PG_GETARG_POINTER(0);
	uint64		h;

	if (st == NULL)
		st = MemoryContextAllocZero(aggcontext, sizeof(FingerprintState));
	if (PG_ARGISNULL(1))
		PG_RETURN_POINTER(st);
	h = pair_hash(PG_GETARG_TEXT_PP(1), PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
				  PG_ARGISNULL(2));
	st->lines++;
	st->sum += h;
	st->xor ^= h;
	PG_RETURN_POINTER(st);
}

Datum
settle_line_fingerprint_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = agg_context(fcinfo, "settle_line_fingerprint_combine");
	FingerprintState *a = PG_ARGISNULL(0) ? NULL : (FingerprintState *) PG_GETARG_POINTER(0);
	FingerprintState *b = PG_ARGISNULL(1) ? NULL : (FingerprintState *) PG_GETARG_POINTER(1);

	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		a = MemoryContextAlloc(aggcontext, sizeof(FingerprintState));
		memcpy(a, b, sizeof(FingerprintState));
		PG_RETURN_POINTER(a);
	}
	a->lines += b->lines;
	a->sum += b->sum;
	a->xor ^= b->xor;
	PG_RETURN_POINTER(a);
}

Datum
settle_line_fingerprint_serial(PG_FUNCTION_ARGS)
{
	FingerprintState *st = (FingerprintState *) PG_GETARG_POINTER(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbyte(&buf, FP_SERIAL_VERSION);
	pq_sendint64(&buf, st->lines);
	pq_sendint64(&buf, st->sum);
	pq_sendint64(&buf, st->xor);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* reads 8 big-endian bytes */
static uint64
get_u64(const unsigned char *p)
{
	uint64		v = 0;
	int			i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

/*
 * Deserial: exact length, known version, a non-negative count, and an empty
 * set's hashes zero.
 */
Datum
settle_line_fingerprint_deserial(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext = deserial_context(fcinfo);
	bytea	   *b;
	const unsigned char *p;
	FingerprintState *st;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	b = PG_GETARG_BYTEA_PP(0);
	p = (const unsigned char *) VARDATA_ANY(b);
	if (VARSIZE_ANY_EXHDR(b) != FP_SERIAL_LEN)
		bad_state("line_fingerprint", psprintf("The state is %d bytes long; %d were expected.",
											   (int) VARSIZE_ANY_EXHDR(b), FP_SERIAL_LEN));
	if (p[0] != FP_SERIAL_VERSION)
		bad_state("line_fingerprint", psprintf("Unknown state version %d.", p[0]));
	st = MemoryContextAlloc(aggcontext, sizeof(FingerprintState));
	st->lines = (int64) get_u64(p + 1);
	st->sum = get_u64(p + 9);
	st->xor = get_u64(p + 17);
	if (st->lines < 0)
		bad_state("line_fingerprint", "The line count is negative.");
	if (st->lines == 0 && (st->sum != 0 || st->xor != 0))
		bad_state("line_fingerprint", "A state without lines has non-zero hashes.");
	if (st->lines == 1 && st->sum != st->xor)
		bad_state("line_fingerprint", "A state of one line has different sum and xor hashes.");
	PG_RETURN_POINTER(st);
}

/*
 * Final: 24 bytes, big-endian: the line count, the sum and the xor of the
 * pair hashes.  An empty set (or no rows) gives 24 zero bytes, so two empty
 * sides compare equal.
 */
Datum
settle_line_fingerprint_final(PG_FUNCTION_ARGS)
{
	FingerprintState *st = PG_ARGISNULL(0) ? NULL : (FingerprintState *) PG_GETARG_POINTER(0);
	bytea	   *r = palloc(VARHDRSZ + FP_RESULT_LEN);
	unsigned char *p = (unsigned char *) VARDATA(r);
	uint64		f[3] = {0, 0, 0};
	int			i,
				j;

	SET_VARSIZE(r, VARHDRSZ + FP_RESULT_LEN);
	if (st != NULL)
	{
		f[0] = (uint64) st->lines;
		f[1] = st->sum;
		f[2] = st->xor;
	}
	for (i = 0; i < 3; i++)
		for (j = 0; j < 8; j++)
			p[i * 8 + j] = (unsigned char) (f[i] >> (56 - 8 * j));
	PG_RETURN_BYTEA_P(r);
}

/* settle.line_hash(line_key, amount): the pair hash line_fingerprint adds. */
Datum
settle_line_hash(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_INT64((int64) pair_hash(PG_GETARG_TEXT_PP(0),
									  PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1),
									  PG_ARGISNULL(1)));
}

static void
read_fingerprint(bytea *b, const char *which, uint64 *f)
{
	const unsigned char *p = (const unsigned char *) VARDATA_ANY(b);

	if (VARSIZE_ANY_EXHDR(b) != FP_RESULT_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid line fingerprint %s", which),
				 errdetail("A line fingerprint is %d bytes long; this one is %d.",
						   FP_RESULT_LEN, (int) VARSIZE_ANY_EXHDR(b))));
	f[0] = get_u64(p);
	f[1] = get_u64(p + 8);
	f[2] = get_u64(p + 16);
}

/*
 * settle.fingerprint_diff(a, b) -> (lines_delta, hash_delta, single):
 * a minus b.  When the sets differ by exactly one pair (present in a and not
 * in b, or the reverse), single is true and hash_delta (negated when
 * lines_delta is -1) is that pair's settle.line_hash.
 */
Datum
settle_fingerprint_diff(PG_FUNCTION_ARGS)
{
	uint64		a[3],
				b[3];
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};
	int64		dl;
	uint64		dh;
	bool		single;

	read_fingerprint(PG_GETARG_BYTEA_PP(0), "a", a);
	read_fingerprint(PG_GETARG_BYTEA_PP(1), "b", b);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "settle_fingerprint_diff must return a composite");
	tupdesc = BlessTupleDesc(tupdesc);

	dl = (int64) (a[0] - b[0]);
	dh = a[1] - b[1];
	/* one pair more on one side: the xor difference is that pair's hash too */
	single = (dl == 1 && dh == (a[2] ^ b[2])) || (dl == -1 && (uint64) (-dh) == (a[2] ^ b[2]));
	values[0] = Int64GetDatum(dl);
	values[1] = Int64GetDatum(dl == -1 ? (int64) (-dh) : (int64) dh);
	values[2] = BoolGetDatum(single);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/*
 * settle.money_total_check_state(bytea) / line_fingerprint_check_state:
 * the deserial functions' checks, callable from SQL (an internal-typed
 * argument cannot be).  True, or the deserial function's error.
 */
Datum
settle_money_total_check_state(PG_FUNCTION_ARGS)
{
	(void) DirectFunctionCall2(settle_money_total_deserial, PG_GETARG_DATUM(0), (Datum) 0);
	PG_RETURN_BOOL(true);
}

Datum
settle_line_fingerprint_check_state(PG_FUNCTION_ARGS)
{
	(void) DirectFunctionCall2(settle_line_fingerprint_deserial, PG_GETARG_DATUM(0), (Datum) 0);
	PG_RETURN_BOOL(true);
}
