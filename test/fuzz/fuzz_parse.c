/*
 * fuzz_parse.c — libFuzzer harness for the rule input function's core
 * (rule_parse): arbitrary bytes as rule text.  Every input must either be
 * refused with a positioned error or give a rule that satisfies
 * fz_invariants (canonical fixed point, codec round trip).
 */
#include "fuzz_common.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *src = malloc(size + 1);
	RuleError	err;
	Rule	   *rule;

	memcpy(src, data, size);
	src[size] = '\0';			/* a cstring stops at the first NUL, as in PG */
	rule = rule_parse(src, &fz_alloc_malloc, &err);
	if (rule == NULL)
	{
		FZ_CHECK(err.kind == RULE_ERR_SYNTAX || err.kind == RULE_ERR_SEMANTIC, "error kind");
		FZ_CHECK(err.line >= 1 && err.column >= 1, "error has a line and column");
		FZ_CHECK(err.message[0] != '\0', "error has a message");
	}
	else
	{
		fz_invariants(rule);
		rule_free(rule, &fz_alloc_malloc);
	}
	free(src);
	return 0;
}
