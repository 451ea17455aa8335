/*
 * rule_int.h — internals shared by the pure-C rule files: the allocation
 * arena and canonicalisation.  Not for use outside src/rule_*.c.
 */
#ifndef SETTLE_RULE_INT_H
#define SETTLE_RULE_INT_H

#include "rule.h"

typedef struct RuleChunk
{
	struct RuleChunk *next;
	size_t		size;
} RuleChunk;

typedef struct RuleArena
{
	const RuleAllocator *alloc;
	RuleChunk  *chunks;
	char	   *ptr;
	size_t		left;
} RuleArena;

extern void rule_arena_init(RuleArena *arena, const RuleAllocator *alloc);
extern void *rule_arena_alloc(RuleArena *arena, size_t size);	/* zeroed */
extern void rule_arena_release(RuleArena *arena);
extern RuleStr rule_arena_str(RuleArena *arena, const char *s, size_t len);

/*
 * Puts a rule in canonical order: values sorted and distinct, conditions by
 * dimension and key, bands by bounds, tier schedules by name (clause
 * references renumbered), clauses by specificity then content.  Computes
 * clause specificity.
 */
extern void rule_canonicalize(Rule *rule, RuleArena *arena);

extern int	rule_str_cmp(const RuleStr *a, const RuleStr *b);

/* a growable byte buffer on the arena's allocator */
typedef struct RuleBuf
{
	const RuleAllocator *alloc;
	char	   *data;
	size_t		len;
	size_t		cap;
} RuleBuf;

extern void rule_buf_init(RuleBuf *b, const RuleAllocator *alloc, size_t initial);
extern void rule_buf_append(RuleBuf *b, const void *p, size_t n);
extern void rule_buf_puts(RuleBuf *b, const char *s);

#endif							/* SETTLE_RULE_INT_H */
