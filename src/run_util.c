/*
 * run_util.c — helpers every phase of a settlement run uses: the buffers kept
 * from one reseller to the next, interned strings, the problems a run
 * records, and amounts read from SQL.  See run.h.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/memutils.h"

#include "run.h"

/* the buffers kept from one reseller to the next (RunReuse, run.h) */
RunReuse	run_reuse;

static void
reuse_forget(void *arg)
{
	memset(&run_reuse, 0, sizeof(run_reuse));
}

void
run_reuse_begin(Run *run)
{
	if (run_reuse.cxt == NULL)
	{
		static MemoryContextCallback forget = {reuse_forget, NULL, NULL};

		run_reuse.cxt = AllocSetContextCreate(TopTransactionContext, "settle reused buffers",
											  ALLOCSET_DEFAULT_SIZES);
		MemoryContextRegisterResetCallback(run_reuse.cxt, &forget);
		run_reuse.cap_lines = 1024;
		run_reuse.lines = MemoryContextAllocHuge(run_reuse.cxt, sizeof(Line) * run_reuse.cap_lines);
		run_reuse.arena_cap = 1 << 16;
		run_reuse.arena = MemoryContextAllocHuge(run_reuse.cxt, run_reuse.arena_cap);
		run_reuse.tids = MemoryContextAlloc(run_reuse.cxt, sizeof(uint64) * READ_CHUNK);
		run_reuse.tids_tmp = MemoryContextAlloc(run_reuse.cxt, sizeof(uint64) * READ_CHUNK);
		run_reuse.tuple_at = MemoryContextAlloc(run_reuse.cxt, sizeof(uint32) * READ_CHUNK);
		run_reuse.batch_cap = 1 << 20;
		run_reuse.batch = MemoryContextAllocHuge(run_reuse.cxt, run_reuse.batch_cap);
	}
	run->lines = run_reuse.lines;
	run->cap_lines = run_reuse.cap_lines;
	run->arena = run_reuse.arena;
	run->arena_cap = run_reuse.arena_cap;
}

/* Interns a text datum (trimmed of nothing: ingestion normalises). */
const char *
run_intern(Run *run, const char *s, size_t len)
{
	StrEntry   *e;
	bool		found;
	char		key[NAMEDATALEN * 2];

	if (len >= sizeof(key))
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("bill line attribute \"%.40s...\" is longer than %d bytes", s, (int) sizeof(key) - 1)));
	memcpy(key, s, len);
	key[len] = '\0';
	e = hash_search(run->strings, key, HASH_ENTER, &found);
	if (!found)
		e->interned = MemoryContextStrdup(run->mcxt, key);
	return e->interned;
}

/*
 * A recorded lineage amount, as settle_period wrote it: an unrounded
 * commission (basis x rate, a prorated amount) may have up to 16 decimal
 * places, where an input amount has at most 8.  False when it is null or
 * cannot be held (it was not written by the engine).
 */
bool
run_lineage_money(HeapTuple t, TupleDesc d, int col, money128 *out)
{
	bool		isnull;
	Datum		v = SPI_getbinval(t, d, col, &isnull);

	*out = 0;
	return !isnull && numeric_to_money128(v, out);
}

/*
 * The problem table's key: a problem's kind and scope, compared as strings.
 * Entries point at the strings the problem itself holds.
 */
typedef struct ProblemKey
{
	const char *kind;
	const char *scope_key;
} ProblemKey;

static uint32
problem_hash(const void *key, Size keysize)
{
	const ProblemKey *k = key;

	return hash_combine(string_hash(k->kind, NAMEDATALEN),
						hash_bytes((const unsigned char *) k->scope_key, strlen(k->scope_key)));
}

static int
problem_match(const void *a, const void *b, Size keysize)
{
	const ProblemKey *x = a,
			   *y = b;

	return strcmp(x->kind, y->kind) != 0 || strcmp(x->scope_key, y->scope_key) != 0;
}

/*
 * Records a problem once per kind and scope (a hash table finds repeats, so
 * a period with many failing lines stays linear).
 */
void
run_add_problem(Run *run, const char *kind, const char *scope_key, const char *detail)
{
	ProblemKey	key = {kind, scope_key};
	ProblemKey *entry;
	Problem    *p;
	bool		found;
	MemoryContext old;

	if (run->problems_seen == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(ProblemKey);
		ctl.entrysize = sizeof(ProblemKey);
		ctl.hash = problem_hash;
		ctl.match = problem_match;
		ctl.hcxt = run->mcxt;
		run->problems_seen = hash_create("settle problems", 64, &ctl,
										 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	entry = hash_search(run->problems_seen, &key, HASH_ENTER, &found);
	if (found)
		return;
	old = MemoryContextSwitchTo(run->mcxt);
	if (run->nproblems == run->cap_problems)
	{
		run->cap_problems = Max(16, run->cap_problems * 2);
		run->problems = run->problems ?
			repalloc(run->problems, run->cap_problems * sizeof(Problem)) :
			palloc(run->cap_problems * sizeof(Problem));
	}
	p = &run->problems[run->nproblems++];
	p->kind = kind;
	p->scope_key = pstrdup(scope_key);
	p->detail = pstrdup(detail);
	entry->kind = p->kind;
	entry->scope_key = p->scope_key;
	MemoryContextSwitchTo(old);
}

/* Drops the problems recorded since the first n. */
void
run_forget_problems(Run *run, int n)
{
	for (; run->nproblems > n; run->nproblems--)
	{
		Problem    *p = &run->problems[run->nproblems - 1];
		ProblemKey	key = {p->kind, p->scope_key};

		hash_search(run->problems_seen, &key, HASH_REMOVE, NULL);
	}
}

money128
run_datum_money(Datum d, bool isnull, const char *what)
{
	money128	v = 0;

	if (isnull)
		return 0;
	if (!numeric_to_money128(d, &v) || v % ((money128) 100000000) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("%s %s cannot be held exactly", what,
						DatumGetCString(DirectFunctionCall1(numeric_out, d))),
				 errdetail("Amounts are settled exactly with at most %d decimal places and below 10^14.",
						   MONEY_INPUT_SCALE)));
	return v;
}

char *
run_date_text(DateADT d)
{
	return DatumGetCString(DirectFunctionCall1(date_out, DateADTGetDatum(d)));
}
