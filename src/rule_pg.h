/*
 * rule_pg.h — PostgreSQL-side helpers for the rule core (rule.h), for use
 * by other modules (settle_period) that evaluate rules in bulk.
 */
#ifndef SETTLE_RULE_PG_H
#define SETTLE_RULE_PG_H

#include "postgres.h"
#include "fmgr.h"
#include "utils/jsonb.h"

#include "rule.h"

/* a RuleAllocator on palloc/pfree in CurrentMemoryContext at call time */
extern const RuleAllocator settle_rule_palloc;

/*
 * Decodes a settle.rule datum (detoasting it) into a compiled Rule allocated
 * in mcxt.  ereports 22P03 when the stored bytes are invalid.  Call once per
 * rule version and keep the result for the whole run.
 */
extern const Rule *settle_rule_compile(Datum rule, MemoryContext mcxt);

/*
 * The tags of a jsonb object as rule_eval matches them (values as text),
 * copied into CurrentMemoryContext; ereports 22023 for anything but an
 * object.  Returns the number of tags.
 */
extern int	settle_jsonb_tags(Jsonb *jb, RuleTag **out);

/* numeric <-> money128 at the SQL boundary (refuses > 8 decimals, 22023) */
extern money128 settle_numeric_to_money(Datum num, const char *what);
extern Datum settle_money_to_numeric(money128 v, int min_scale);

#endif							/* SETTLE_RULE_PG_H */
