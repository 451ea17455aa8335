/*
 * settle.c — module entry point.
 *
 * _PG_init defines the settings shared by every module and calls each
 * module's init function.  It works both when settle is loaded on demand
 * (CREATE EXTENSION, first function call) and from shared_preload_libraries;
 * modules that need shared resources (the ingest worker) check
 * process_shared_preload_libraries_in_progress themselves.
 */
#include "postgres.h"

#include "fmgr.h"
#include "catalog/namespace.h"
#include "parser/parse_relation.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/guc.h"

#include "progress.h"
#include "settle.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(settle_engine_version);

char	   *settle_reason = NULL;
int			settle_swing_threshold = 50;
char	   *settle_retention = NULL;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("settle.reason",
							   "Why the current change is made; recorded in the audit trail.",
							   "Required for changes to agreements, FX rates and exceptions.  Set it with SET LOCAL in the transaction that makes the change.",
							   &settle_reason,
							   NULL,
							   PGC_USERSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("settle.swing_threshold_percent",
							"Sanity check: a statement total that moves more than this percentage against the previous period raises an alert.",
							NULL,
							&settle_swing_threshold,
							50, 1, 100000,
							PGC_SUSET,
							GUC_NOT_IN_SAMPLE,
							NULL, NULL, NULL);
	DefineCustomStringVariable("settle.retention",
							   "How long raw pages and ingest run logs nothing refers to are kept (an interval).",
							   "settle.purge() deletes older ones; pages that bill lines, provider totals or open exceptions refer to are always kept.",
							   &settle_retention,
							   "400 days",
							   PGC_SUSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	settle_audit_init();
	settle_progress_init();
	settle_ingest_init();
	settle_csv_init();
	settle_parallel_init();

	MarkGUCPrefixReserved("settle");
}

/*
 * The OID of one of the extension's own relations in schema settle, for code
 * that opens them directly.  A missing relation is an error.
 */
Oid
settle_relid(const char *name)
{
	Oid			relid = get_relname_relid(name, get_namespace_oid("settle", false));

	if (!OidIsValid(relid))
		elog(ERROR, "relation settle.%s does not exist", name);
	return relid;
}

/*
 * The attribute number of a column of one of the extension's own tables,
 * for code that reads or writes them directly.  A missing column is an
 * error, never attribute 0.
 */
int
settle_attnum(Relation rel, const char *name)
{
	int			att = attnameAttNum(rel, name, false);

	if (att == InvalidAttrNumber)
		elog(ERROR, "column \"%s\" of settle.%s does not exist", name, RelationGetRelationName(rel));
	return att;
}

/* settle.engine_version() → the settlement semantics this library implements */
Datum
settle_engine_version(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(SETTLE_ENGINE_VERSION);
}
