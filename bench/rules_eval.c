/*
 * rules_eval.c — benchmark of the rule evaluator (pure-C core, one core).
 *
 * Compiles bench/rules_eval.rule once, generates N bill lines in memory with
 * the same deterministic formulas as the SQL baseline in rules_eval.sh, and
 * evaluates every line.  Prints the evaluation rate and the exact sum of
 * commissions (which the SQL CASE baseline must reproduce to the digit).
 * Not a test; run bench/rules_eval.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rule.h"

static void *
b_alloc(void *ctx, size_t n)
{
	(void) ctx;
	return malloc(n);
}

static void
b_free(void *ctx, void *p)
{
	(void) ctx;
	free(p);
}

static const RuleAllocator A = {b_alloc, b_free, NULL};

#define T(x) {x, sizeof(x) - 1}
static const RuleText products[8] = {T("ecs"), T("rds"), T("polardb"), T("oss"), T("nas"), T("slb"), T("cdn"), T("sls")};
static const RuleText categories[8] = {T("compute"), T("database"), T("database"), T("storage"),
T("storage"), T("networking"), T("networking"), T("other")};
static const RuleText skus[3] = {T("ecs.g7.large"), T("ecs.g7.xlarge"), T("ecs.c6.large")};
static const RuleText regions[3] = {T("cn-hangzhou"), T("cn-shanghai"), T("ap-southeast-1")};
static const RuleText segments[2] = {T("enterprise"), T("standard")};
static const RuleTag prod_tag = {T("env"), T("prod")};
static const RuleTag dev_tag = {T("env"), T("dev")};

typedef struct BenchLine
{
	RuleLine	line;
	money128	customer_spend;
} BenchLine;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;	/* timing only, never money */
}

int
main(int argc, char **argv)
{
	long		n = argc > 1 ? atol(argv[1]) : 5000000;
	const char *path = argc > 2 ? argv[2] : "bench/rules_eval.rule";
	char		src[65536];
	FILE	   *f = fopen(path, "r");
	size_t		len;
	RuleError	err;
	Rule	   *rule;
	BenchLine  *lines;
	money128	sum = 0;
	long		ok = 0;
	double		t0,
				t1;
	char		buf[MONEY_FORMAT_BUFLEN];

	if (f == NULL)
	{
		perror(path);
		return 1;
	}
	len = fread(src, 1, sizeof(src) - 1, f);
	src[len] = '\0';
	fclose(f);
	rule = rule_parse(src, &A, &err);
	if (rule == NULL)
	{
		fprintf(stderr, "%s:%d:%d: %s\n", path, err.line, err.column, err.message);
		return 1;
	}

	/* the same formulas as the SQL baseline; i runs from 1 to n */
	lines = calloc(n, sizeof(BenchLine));
	for (long i = 1; i <= n; i++)
	{
		BenchLine  *b = &lines[i - 1];
		long		p = i % 8;
		long		cust = i % 5000;

		b->line.product = products[p];
		b->line.category = categories[p];
		b->line.sku = p == 0 ? skus[i % 3] : (RuleText) {NULL, 0};
		b->line.region = regions[(i / 8) % 3];
		b->line.segment = segments[cust % 10 == 0 ? 0 : 1];
		b->line.charge = RULE_CHARGE_USAGE;
		b->line.ntags = 1;
		b->line.tags = (i % 3 == 0) ? &prod_tag : &dev_tag;
		b->line.billed_cost = (money128) ((i * 7919L) % 1000000L) * (MONEY_ONE / 100);
		b->line.refund_age_days = -1;
		b->customer_spend = (money128) ((cust * 7919L) % 8000000L) * (MONEY_ONE / 100);
	}

	t0 = now();
	for (long i = 0; i < n; i++)
	{
		RuleContext ctx;
		RuleResult	res;

		memset(&ctx, 0, sizeof(ctx));
		ctx.customer_spend = lines[i].customer_spend;
		rule_eval(rule, &lines[i].line, &ctx, &res);
		sum += res.commission;
		ok += res.status == RULE_EVAL_OK;
	}
	t1 = now();

	money_format(sum, 2, buf);
	printf("c_lines %ld\nc_ok %ld\nc_seconds %.3f\nc_evals_per_second %.0f\nc_sum %s\n",
		   n, ok, t1 - t0, n / (t1 - t0), buf);
	free(lines);
	rule_free(rule, &A);
	return 0;
}
