/*
 * domains.c — the checks behind settle's input domains.
 *
 * settle.period and settle.amount (and settle.exact_amount) are the types of
 * every period and money parameter of the SQL API, so one check decides what
 * a period or an amount is, for every function at once.  A value that fails
 * raises its own SQLSTATE (not the generic 23514 of a domain constraint):
 * 22007 for a period that is not YYYY-MM with a real month, 22003 for an
 * amount that is not a finite number settle can hold exactly (NaN, ±Infinity,
 * 10^14 or more in magnitude), 22023 for more decimal places than allowed.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "numeric_fast.h"
#include "settle.h"

PG_FUNCTION_INFO_V1(settle_check_period);
PG_FUNCTION_INFO_V1(settle_check_amount);

/*
 * settle.check_period(text) → true for "YYYY-MM" (year 0001..9999, month
 * 01..12), else an error 22007 naming the value.  STRICT.
 */
Datum
settle_check_period(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(t);
	int			len = VARSIZE_ANY_EXHDR(t);
	bool		ok = len == 7 && s[4] == '-';
	int			i;

	for (i = 0; ok && i < 7; i++)
		if (i != 4 && (s[i] < '0' || s[i] > '9'))
			ok = false;
	if (ok)
	{
		int			year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
		int			month = (s[5] - '0') * 10 + (s[6] - '0');

		ok = year >= 1 && month >= 1 && month <= 12;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("invalid period \"%s\"", text_to_cstring(t)),
				 errdetail("A period is a calendar month written YYYY-MM: a four-digit year from 0001 to 9999 and a two-digit month from 01 to 12."),
				 errhint("For example '2026-10'.")));
	PG_RETURN_BOOL(true);
}

/*
 * settle.check_amount(numeric, max_scale integer) → true for a finite amount
 * below 10^14 in magnitude with at most max_scale significant decimal places
 * (trailing zeros do not count); else 22003 or 22023 naming the value.
 * STRICT.
 */
Datum
settle_check_amount(PG_FUNCTION_ARGS)
{
	Numeric		n = PG_GETARG_NUMERIC(0);
	int32		max_scale = PG_GETARG_INT32(1);
	money128	v;

	if (numeric_is_nan(n) || numeric_is_inf(n))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("amount %s is not a finite number",
						DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)))),
				 errdetail("Money amounts must be finite decimal numbers.")));
	if (max_scale < 0 || max_scale > MONEY_SCALE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("decimal places must be between 0 and %d, not %d", MONEY_SCALE, max_scale)));
	if (!numeric_to_money128(NumericGetDatum(n), &v) || v >= MONEY_MAX_RAW || v <= -MONEY_MAX_RAW)
	{
		/* finite but not held: 10^14 or more, or more than 16 places */
		int			scale = DatumGetInt32(DirectFunctionCall1(numeric_scale, NumericGetDatum(n)));
		Numeric		limit = int64_to_numeric(INT64CONST(100000000000000));	/* 10^14 */
		Numeric		mag = DatumGetNumeric(DirectFunctionCall1(numeric_abs, NumericGetDatum(n)));

		if (DatumGetBool(DirectFunctionCall2(numeric_ge, NumericGetDatum(mag), NumericGetDatum(limit))))
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("amount %s is out of range",
							DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)))),
					 errdetail("Money amounts must be below 10^14 in magnitude.")));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount %s has too many decimal places",
						DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)))),
				 errdetail("At most %d decimal places are allowed here; the amount has %d.", max_scale, scale)));
	}
	if (money128_scale(v) > max_scale)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("amount %s has too many decimal places",
						DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(n)))),
				 errdetail("At most %d decimal places are allowed here; the amount has %d.",
						   max_scale, money128_scale(v))));
	PG_RETURN_BOOL(true);
}
