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
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
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
	settle_priority_init();

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
 * The shard of reseller_id of relid when Citus hash-distributes relid by
 * reseller_id (in *shardid); false without Citus in this database or when
 * relid is not so distributed.
 */
static bool
citus_shard_of(Oid relid, int64 reseller_id, int64 *shardid)
{
	Datum		args[2];
	Oid			types[2] = {OIDOID, INT8OID};
	bool		isnull;
	bool		found;

	/* the non-Citus path: one catalogue probe, nothing else */
	if (!OidIsValid(get_extension_oid("citus", true)))
		return false;
	args[0] = ObjectIdGetDatum(relid);
	args[1] = Int64GetDatum(reseller_id);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT pg_catalog.get_shard_id_for_distribution_column($1::regclass, $2) "
							  "FROM pg_catalog.pg_dist_partition p "
							  "WHERE p.logicalrelid = $1 AND p.partmethod = 'h' "
							  "AND pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) = 'reseller_id'",
							  2, types, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up the shard of relation %u", relid);
	found = SPI_processed > 0;
	if (found)
	{
		*shardid = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (isnull)
			elog(ERROR, "relation %u has no shard for reseller " INT64_FORMAT, relid, reseller_id);
	}
	SPI_finish();
	return found;
}

/*
 * The relation holding one reseller's rows of one of settle's tables that
 * settle.distribute() distributes by reseller_id, for code that reads or
 * writes it directly.  Without Citus in this database, or when Citus does
 * not distribute the table (hash, by reseller_id), that is the table
 * itself (settle_relid).  Distributed, the table on a node is an empty
 * shell and the rows are in shards named <table>_<shard id>: the reseller's
 * shard, which must be on this node (settle.distribute() delegates the
 * per-reseller functions to the node that holds it; elsewhere it is an
 * error, 55000).  index, when given, names one of the table's indexes, and
 * *index_relid is set to the same index of the relation returned (a shard's
 * copy is named <index>_<shard id>).
 */
Oid
settle_reseller_relid(const char *name, int64 reseller_id, const char *index, Oid *index_relid)
{
	Oid			nsp = get_namespace_oid("settle", false);
	Oid			relid = settle_relid(name);
	Oid			shard_relid;
	int64		shardid;
	char	   *shard_name;

	if (index)
		*index_relid = settle_relid(index);
	if (!citus_shard_of(relid, reseller_id, &shardid))
		return relid;
	shard_name = psprintf("%s_" INT64_FORMAT, name, shardid);
	shard_relid = get_relname_relid(shard_name, nsp);
	if (!OidIsValid(shard_relid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the rows of reseller " INT64_FORMAT " in settle.%s are not on this node", reseller_id, name),
				 errdetail("They are in shard " INT64_FORMAT ", on another node of the Citus cluster.", shardid),
				 errhint("Call settle's per-reseller functions through the coordinator, which delegates them to the node that holds the reseller's shards (docs/scale-out.md).")));
	if (index)
	{
		Oid			shard_index = get_relname_relid(psprintf("%s_" INT64_FORMAT, index, shardid), nsp);

		if (!OidIsValid(shard_index))
			elog(ERROR, "index settle.%s_" INT64_FORMAT " of shard %s does not exist", index, shardid, shard_name);
		*index_relid = shard_index;
	}
	return shard_relid;
}

/*
 * settle_relid for code that writes or reads one of those tables across
 * resellers directly (ingestion's line writes): distributed by Citus, the
 * table here is an empty shell, and writing into it would hide the rows from
 * every reader; an error (0A000) until that code resolves each reseller's
 * shard.
 */
Oid
settle_undistributed_relid(const char *name)
{
	Oid			relid = settle_relid(name);
	int64		shardid;

	if (citus_shard_of(relid, 0, &shardid))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("settle.%s is distributed by Citus: this operation does not run on a distributed settle yet", name),
				 errhint("docs/scale-out.md lists what runs on Citus so far.")));
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
