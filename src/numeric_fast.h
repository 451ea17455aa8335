/*
 * numeric_fast.h — numeric <-> money128 (money.h) on numeric's binary form.
 */
#ifndef SETTLE_NUMERIC_FAST_H
#define SETTLE_NUMERIC_FAST_H

#include "postgres.h"

#include "money.h"

extern bool numeric_to_money128(Datum num, money128 *out);
extern Datum money128_to_numeric(money128 v, int dscale);
extern int	money128_scale(money128 v);

#endif							/* SETTLE_NUMERIC_FAST_H */
