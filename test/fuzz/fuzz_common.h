/*
 * fuzz_common.h — shared pieces of the libFuzzer harnesses for the rule
 * core: a malloc allocator (so LeakSanitizer sees every block) and the
 * invariants every accepted rule must satisfy.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rule.h"

static void *
fz_alloc(void *ctx, size_t n)
{
	void	   *p = malloc(n);

	(void) ctx;
	if (p == NULL)
		abort();
	return p;
}

static void
fz_free(void *ctx, void *p)
{
	(void) ctx;
	free(p);
}

static const RuleAllocator fz_alloc_malloc = {fz_alloc, fz_free, NULL};

static void __attribute__((unused))
fz_ignore(void *arg, const char *msg)
{
	(void) arg;
	(void) msg;
}

#define FZ_CHECK(cond, what) do { if (!(cond)) { fprintf(stderr, "invariant failed: %s\n", what); abort(); } } while (0)

/*
 * For an accepted rule: print -> parse is a fixed point, encode -> decode
 * round-trips, checks and evaluation run without faults.
 */
static void __attribute__((unused))
fz_invariants(const Rule *rule)
{
	RuleError	err;
	size_t		tlen,
				blen,
				blen2;
	char	   *text = rule_print(rule, &fz_alloc_malloc, &tlen);
	uint8_t    *bin = rule_encode(rule, &fz_alloc_malloc, &blen);
	Rule	   *again = rule_parse(text, &fz_alloc_malloc, &err);
	Rule	   *dec;
	uint8_t    *bin2;
	char	   *text2;
	RuleLine	line;
	RuleContext ctx;
	RuleResult	res;
	RuleTag		tag;

	if (again == NULL)
		fprintf(stderr, "canonical text does not re-parse: %d:%d %s\n---\n%s\n---\n",
				err.line, err.column, err.message, text);
	FZ_CHECK(again != NULL, "canonical text re-parses");
	bin2 = rule_encode(again, &fz_alloc_malloc, &blen2);
	FZ_CHECK(blen == blen2 && memcmp(bin, bin2, blen) == 0, "parse(print(r)) == r");
	dec = rule_decode(bin, blen, &fz_alloc_malloc, &err);
	if (dec == NULL)
		fprintf(stderr, "decode failed: %s\n", err.message);
	FZ_CHECK(dec != NULL, "decode(encode(r)) succeeds");
	text2 = rule_print(dec, &fz_alloc_malloc, NULL);
	FZ_CHECK(strcmp(text, text2) == 0, "print(decode(encode(r))) == print(r)");
	rule_check(rule, fz_ignore, NULL, &fz_alloc_malloc);

	memset(&line, 0, sizeof(line));
	memset(&ctx, 0, sizeof(ctx));
	tag.key.s = "env";
	tag.key.len = 3;
	tag.value.s = "prod";
	tag.value.len = 4;
	line.product.s = "ecs";
	line.product.len = 3;
	line.category.s = "compute";
	line.category.len = 7;
	line.ntags = 1;
	line.tags = &tag;
	line.billed_cost = (money128) 12345 * MONEY_ONE;
	line.list_cost = -line.billed_cost;
	line.days_in_month = 31;
	line.active_days = 17;
	line.refund_age_days = 30;
	ctx.customer_spend = (money128) 20000 * MONEY_ONE;
	ctx.customer_spend_before = (money128) 9000 * MONEY_ONE;
	for (int c = 0; c < RULE_NCHARGES; c++)
	{
		line.charge = c;
		rule_eval(rule, &line, &ctx, &res);
	}

	free(text);
	free(text2);
	free(bin);
	free(bin2);
	rule_free(again, &fz_alloc_malloc);
	rule_free(dec, &fz_alloc_malloc);
}

#endif
