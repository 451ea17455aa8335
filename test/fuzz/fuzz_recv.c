/*
 * fuzz_recv.c — libFuzzer harness for the binary input (recv) core
 * (rule_decode): arbitrary bytes as the binary form.  Every input must be
 * refused or be exactly the canonical encoding of a rule that satisfies
 * fz_invariants.
 */
#include "fuzz_common.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	RuleError	err;
	Rule	   *rule = rule_decode(data, size, &fz_alloc_malloc, &err);

	if (rule == NULL)
		FZ_CHECK(err.kind == RULE_ERR_CORRUPT && err.message[0] != '\0', "decode error");
	else
	{
		size_t		len;
		uint8_t    *bin = rule_encode(rule, &fz_alloc_malloc, &len);

		FZ_CHECK(len == size && memcmp(bin, data, size) == 0, "accepted bytes are canonical");
		free(bin);
		fz_invariants(rule);
		rule_free(rule, &fz_alloc_malloc);
	}
	return 0;
}
