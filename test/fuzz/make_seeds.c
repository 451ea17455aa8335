/*
 * make_seeds.c — turns the text seeds into binary seeds for fuzz_recv.
 * Usage: make_seeds out_dir seed.rule...
 */
#include "fuzz_common.h"

int
main(int argc, char **argv)
{
	for (int i = 2; i < argc; i++)
	{
		FILE	   *f = fopen(argv[i], "rb");
		char		buf[65536];
		size_t		n;
		RuleError	err;
		Rule	   *rule;

		if (f == NULL)
			continue;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		rule = rule_parse(buf, &fz_alloc_malloc, &err);
		if (rule != NULL)
		{
			size_t		len;
			uint8_t    *bin = rule_encode(rule, &fz_alloc_malloc, &len);
			char		path[4096];
			FILE	   *o;

			snprintf(path, sizeof(path), "%s/seed%d.bin", argv[1], i);
			o = fopen(path, "wb");
			if (o)
			{
				fwrite(bin, 1, len, o);
				fclose(o);
			}
			free(bin);
			rule_free(rule, &fz_alloc_malloc);
		}
	}
	return 0;
}
