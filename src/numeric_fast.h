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

/* a numeric with the display scale v needs, but at least min_scale */
#define money128_to_numeric_min(v, min_scale) money128_to_numeric((v), -(min_scale) - 1)

#endif							/* SETTLE_NUMERIC_FAST_H */
