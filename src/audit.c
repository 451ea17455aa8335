/*
 * audit.c — the hash-chained, append-only audit trail.
 *
 * settle.audit_trigger() appends one entry to settle.audit_log per changed
 * row (or per TRUNCATE).  Each entry's hash is SHA-256 over the previous
 * entry's hash followed by a canonical, length-prefixed encoding of the entry,
 * so any edit, deletion, reordering or out-of-band insertion breaks the chain
 * from that entry on; settle.verify_audit() finds the first such entry.
 *
 * Concurrency: writers serialise on the row lock of settle.audit_head, taken
 * once per transaction, so entry ids follow commit order and the chain never
 * forks.  The head row itself is moved to the transaction's last entry just
 * before commit (a pre-commit callback), once per transaction rather than
 * once per row.
 *
 * Entries are inserted directly into the heap and its plain-column indexes,
 * not through the executor: an audited change then costs little more than the
 * change itself.  No role but the owner may insert into settle.audit_log, so
 * entries come from this trigger; the head is moved with the owner's
 * privileges.
 *
 * Restores: pg_restore loads rows that were audited when they were first
 * written, together with the audit log that records them.  A superuser's
 * restore session sets settle.restoring (PGOPTIONS='-c settle.restoring=on'),
 * and the audit trigger then writes no entry and asks for no reason; the
 * append-only trigger is not affected (a restore only inserts).
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/index.h"
#include "catalog/pg_class.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "port/pg_bswap.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "settle.h"

PG_FUNCTION_INFO_V1(settle_audit_trigger);
PG_FUNCTION_INFO_V1(settle_append_only_trigger);
PG_FUNCTION_INFO_V1(settle_verify_audit);
PG_FUNCTION_INFO_V1(settle_purge);
PG_FUNCTION_INFO_V1(settle_restoring_sql);

/* true only while settle_purge() deletes what retention allows */
static bool purge_in_progress = false;

/* settle.restoring: see settle_restoring_session() */
static bool settle_restoring = false;

#define HASH_LEN PG_SHA256_DIGEST_LENGTH

/*
 * The end of the chain as this transaction knows it.  Valid only while
 * "locked": from the first audited change of a transaction (which takes the
 * head row lock) until the transaction or a subtransaction ends badly.
 */
typedef struct ChainState
{
	bool		locked;
	int64		last_id;
	uint8		last_hash[HASH_LEN];
	int64		max_written;	/* highest id this transaction wrote, 0 if none */
	Oid			relid;			/* settle.audit_log, looked up once per transaction */
} ChainState;

static ChainState chain;

/* Plans kept across calls (SPI_keepplan). */
static SPIPlanPtr lock_head_plan = NULL;
static SPIPlanPtr read_tail_plan = NULL;
static SPIPlanPtr anchor_plan = NULL;
static SPIPlanPtr move_head_plan = NULL;

static void move_head(void *arg);
static void as_audit_owner(void (*fn) (void *), void *arg);

/* One audit entry, as hashed and stored. */
typedef struct AuditEntry
{
	int64		audit_id;
	const char *table_name;
	const char *operation;
	Jsonb	   *row_key;
	Jsonb	   *old_row;
	Jsonb	   *new_row;
	const char *reason;
	const char *session_user_name;
	const char *current_user_name;
	const char *application_name;
	int64		txid;
	TimestampTz xact_time;
	TimestampTz statement_time;
} AuditEntry;

static void
chain_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			/* anchor the chain at the last entry this transaction wrote */
			if (chain.max_written > 0)
			{
				CommandCounterIncrement();
				PushActiveSnapshot(GetTransactionSnapshot());
				as_audit_owner(move_head, NULL);
				PopActiveSnapshot();
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			memset(&chain, 0, sizeof(chain));
			break;
		default:
			break;
	}
}

static void
chain_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	/*
	 * Entries and the head lock of an aborted subtransaction are gone; read
	 * the tail again on next use.  max_written stays: it only bounds which
	 * entries this transaction may anchor.
	 */
	if (event == SUBXACT_EVENT_ABORT_SUB)
		chain.locked = false;
}

/*
 * settle.restoring may be turned on for one session only: by the client at
 * connection (PGOPTIONS) or by SET.  Not in postgresql.conf, ALTER SYSTEM,
 * ALTER DATABASE/ROLE ... SET or a function's SET clause, where it would
 * apply to sessions that are not restoring anything.
 */
static bool
check_restoring(bool *newval, void **extra, GucSource source)
{
	if (*newval && source != PGC_S_CLIENT && source != PGC_S_SESSION)
	{
		GUC_check_errcode(ERRCODE_CANT_CHANGE_RUNTIME_PARAM);
		GUC_check_errmsg("settle.restoring can only be set for one session");
		GUC_check_errdetail("It is meant for the session that runs pg_restore, not for a database, role or server.");
		GUC_check_errhint("Set it for the restore only: PGOPTIONS='-c settle.restoring=on' pg_restore ...");
		return false;
	}
	return true;
}

void
settle_audit_init(void)
{
	DefineCustomBoolVariable("settle.restoring",
							 "Set by a superuser's pg_restore session only: loaded rows are not audited again.",
							 "Rows restored from a dump were audited when they were first written and arrive with their audit log; "
							 "the audit trigger writes no entry for them and asks for no reason, and rows the install script "
							 "created are replaced by their dumped versions.  Append-only tables stay append-only.",
							 &settle_restoring,
							 false,
							 PGC_SUSET,
							 GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE,
							 check_restoring, NULL, NULL);
	RegisterXactCallback(chain_xact_callback, NULL);
	RegisterSubXactCallback(chain_subxact_callback, NULL);
}

/*
 * Whether this session is restoring a dump: settle.restoring is on and the
 * session user is a superuser.  PGC_SUSET already keeps other roles from
 * setting it; the session-user test also covers a value that reached a
 * session some other way (the SET clause of a function a superuser owns, a
 * placeholder set before the library was loaded), so only a superuser's own
 * session is ever exempt from auditing.
 */
bool
settle_restoring_session(void)
{
	return settle_restoring && superuser_arg(GetSessionUserId());
}

/*
 * settle._restoring() → boolean: settle_restoring_session(), for the WHEN clause of the
 * restore_merge triggers of tables the install script fills.
 */
Datum
settle_restoring_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(settle_restoring_session());
}

/* ---------- canonical encoding and hashing ---------- */

static void
hash_bytes(pg_cryptohash_ctx *ctx, const void *data, size_t len)
{
	if (pg_cryptohash_update(ctx, data, len) < 0)
		elog(ERROR, "could not update SHA-256 context: %s", pg_cryptohash_error(ctx));
}

static void
hash_int64(pg_cryptohash_ctx *ctx, int64 v)
{
	uint64		be = pg_hton64((uint64) v);

	hash_bytes(ctx, &be, sizeof(be));
}

/* A string as 4-byte big-endian length and bytes; NULL as length 0xFFFFFFFF. */
static void
hash_text(pg_cryptohash_ctx *ctx, const char *s)
{
	uint32		len = s ? (uint32) strlen(s) : 0xFFFFFFFF;
	uint32		be = pg_hton32(len);

	hash_bytes(ctx, &be, sizeof(be));
	if (s)
		hash_bytes(ctx, s, len);
}

static void
hash_jsonb(pg_cryptohash_ctx *ctx, Jsonb *j)
{
	hash_text(ctx, j ? JsonbToCString(NULL, &j->root, VARSIZE(j)) : NULL);
}

/*
 * entry_hash = SHA-256(prev_hash || encoding(entry)).  The encoding covers
 * every column except the two hashes, in table order.
 */
static void
audit_entry_hash(const uint8 *prev_hash, const AuditEntry *e, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialise SHA-256 context: %s", pg_cryptohash_error(ctx));
	hash_bytes(ctx, prev_hash, HASH_LEN);
	hash_int64(ctx, e->audit_id);
	hash_text(ctx, e->table_name);
	hash_text(ctx, e->operation);
	hash_jsonb(ctx, e->row_key);
	hash_jsonb(ctx, e->old_row);
	hash_jsonb(ctx, e->new_row);
	hash_text(ctx, e->reason);
	hash_text(ctx, e->session_user_name);
	hash_text(ctx, e->current_user_name);
	hash_text(ctx, e->application_name);
	hash_int64(ctx, e->txid);
	hash_int64(ctx, e->xact_time);
	hash_int64(ctx, e->statement_time);
	if (pg_cryptohash_final(ctx, out, HASH_LEN) < 0)
		elog(ERROR, "could not finalise SHA-256 context: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

static bytea *
hash_to_bytea(const uint8 *h)
{
	bytea	   *b = palloc(VARHDRSZ + HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + HASH_LEN);
	memcpy(VARDATA(b), h, HASH_LEN);
	return b;
}

/* ---------- rows as jsonb ---------- */

/* to_jsonb() of a row of the given composite type, without going through SPI. */
static Jsonb *
row_to_jsonb(HeapTuple tuple, TupleDesc tupdesc)
{
	FmgrInfo	flinfo;
	Datum		row = heap_copy_tuple_as_datum(tuple, tupdesc);

	fmgr_info(F_TO_JSONB, &flinfo);
	/* to_jsonb resolves its polymorphic argument from the call expression */
	flinfo.fn_expr = (Node *) makeFuncExpr(F_TO_JSONB, JSONBOID,
										   list_make1(makeNullConst(tupdesc->tdtypeid, -1, InvalidOid)),
										   InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
	return DatumGetJsonbP(FunctionCall1(&flinfo, row));
}

/* The primary-key columns of rel, taken from the row's jsonb, as an object. */
static Jsonb *
row_key_jsonb(Relation rel, Jsonb *row)
{
	Bitmapset  *pk = RelationGetIndexAttrBitmap(rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	JsonbParseState *state = NULL;
	JsonbValue *res;
	int			i;

	if (pk == NULL)
		return NULL;
	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	for (i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		JsonbValue	key;
		JsonbValue *val;

		if (!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, pk))
			continue;
		key.type = jbvString;
		key.val.string.val = NameStr(att->attname);
		key.val.string.len = strlen(NameStr(att->attname));
		val = getKeyJsonValueFromContainer(&row->root, key.val.string.val,
										   key.val.string.len, NULL);
		pushJsonbValue(&state, WJB_KEY, &key);
		if (val == NULL)
		{
			JsonbValue	null;

			null.type = jbvNull;
			val = &null;
			pushJsonbValue(&state, WJB_VALUE, val);
		}
		else
			pushJsonbValue(&state, WJB_VALUE, val);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* ---------- the chain ---------- */

static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

static void
prepare_plans(void)
{
	if (lock_head_plan == NULL)
		lock_head_plan = keep_plan("SELECT last_id FROM settle.audit_head FOR UPDATE", 0, NULL);
	if (read_tail_plan == NULL)
		read_tail_plan = keep_plan("SELECT audit_id, entry_hash FROM settle.audit_log "
								   "ORDER BY audit_id DESC LIMIT 1", 0, NULL);
	if (anchor_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		anchor_plan = keep_plan("SELECT audit_id, entry_hash FROM settle.audit_log "
								"WHERE audit_id <= $1 ORDER BY audit_id DESC LIMIT 1", 1, types);
	}
	if (move_head_plan == NULL)
	{
		Oid			types[2] = {INT8OID, BYTEAOID};

		move_head_plan = keep_plan("UPDATE settle.audit_head SET last_id = $1, last_hash = $2", 2, types);
	}
}

/*
 * Take the head lock (once per transaction) and learn the tail of the chain,
 * including entries this transaction already wrote.  Must run inside SPI, as
 * the audit log's owner.
 */
static void
chain_acquire(void)
{
	if (chain.locked)
		return;
	if (SPI_execute_plan(lock_head_plan, NULL, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "settle.audit_head must hold exactly one row");
	if (SPI_execute_plan(read_tail_plan, NULL, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tail of settle.audit_log");
	if (SPI_processed == 0)
	{
		chain.last_id = 0;
		memset(chain.last_hash, 0, HASH_LEN);
	}
	else
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bytea	   *h;

		chain.last_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		h = DatumGetByteaPP(SPI_getbinval(tup, desc, 2, &isnull));
		if (VARSIZE_ANY_EXHDR(h) != HASH_LEN)
			elog(ERROR, "audit entry %lld has a malformed hash", (long long) chain.last_id);
		memcpy(chain.last_hash, VARDATA_ANY(h), HASH_LEN);
	}
	chain.locked = true;
}

/* Runs fn(arg) inside SPI with the audit log owner's privileges. */
static void
as_audit_owner(void (*fn) (void *), void *arg)
{
	Oid			save_userid;
	int			save_sec;
	Oid			owner;
	HeapTuple	classtup;
	Oid			relid = settle_relid("audit_log");

	classtup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(classtup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(classtup))->relowner;
	ReleaseSysCache(classtup);

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		prepare_plans();
		fn(arg);
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
}

/*
 * Inserts one row into settle.audit_log and its indexes without the executor.
 * The indexes must be plain column indexes (no expressions, no predicates).
 */
static void
insert_audit_row(Datum *values, bool *nulls)
{
	Relation	rel;
	HeapTuple	tup;
	List	   *indexes;
	ListCell   *lc;

	if (!OidIsValid(chain.relid))
		chain.relid = settle_relid("audit_log");
	rel = table_open(chain.relid, RowExclusiveLock);
	tup = heap_form_tuple(RelationGetDescr(rel), values, nulls);
	indexes = RelationGetIndexList(rel);

	simple_heap_insert(rel, tup);
	foreach(lc, indexes)
	{
		Relation	idx = index_open(lfirst_oid(lc), RowExclusiveLock);
		IndexInfo  *ii = BuildIndexInfo(idx);
		Datum		keys[INDEX_MAX_KEYS];
		bool		keynulls[INDEX_MAX_KEYS];
		int			k;

		if (ii->ii_Expressions != NIL || ii->ii_Predicate != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("index \"%s\" on settle.audit_log is not supported",
							RelationGetRelationName(idx)),
					 errdetail("Indexes on the audit log must be plain column indexes.")));
		for (k = 0; k < ii->ii_NumIndexAttrs; k++)
		{
			AttrNumber	att = ii->ii_IndexAttrNumbers[k];

			keys[k] = values[att - 1];
			keynulls[k] = nulls[att - 1];
		}
		index_insert(idx, keys, keynulls, &tup->t_self, rel,
					 idx->rd_index->indisunique ? UNIQUE_CHECK_YES : UNIQUE_CHECK_NO,
					 false, ii);
		index_close(idx, RowExclusiveLock);
	}
	list_free(indexes);
	table_close(rel, RowExclusiveLock);
}

static void
lock_chain(void *arg)
{
	chain_acquire();
}

/* Appends entry e at the end of the chain. */
static void
append_entry(AuditEntry *e)
{
	uint8		hash[HASH_LEN];
	Datum		values[15];
	bool		nulls[15];

	if (!chain.locked)
		as_audit_owner(lock_chain, NULL);
	e->audit_id = chain.last_id + 1;
	audit_entry_hash(chain.last_hash, e, hash);

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int64GetDatum(e->audit_id);
	values[1] = PointerGetDatum(hash_to_bytea(chain.last_hash));
	values[2] = PointerGetDatum(hash_to_bytea(hash));
	values[3] = CStringGetTextDatum(e->table_name);
	values[4] = CStringGetTextDatum(e->operation);
	values[5] = PointerGetDatum(e->row_key);
	values[6] = PointerGetDatum(e->old_row);
	values[7] = PointerGetDatum(e->new_row);
	values[8] = e->reason ? CStringGetTextDatum(e->reason) : (Datum) 0;
	values[9] = DirectFunctionCall1(namein, CStringGetDatum(e->session_user_name));
	values[10] = DirectFunctionCall1(namein, CStringGetDatum(e->current_user_name));
	values[11] = CStringGetTextDatum(e->application_name);
	values[12] = Int64GetDatum(e->txid);
	values[13] = TimestampTzGetDatum(e->xact_time);
	values[14] = TimestampTzGetDatum(e->statement_time);
	nulls[5] = e->row_key == NULL;
	nulls[6] = e->old_row == NULL;
	nulls[7] = e->new_row == NULL;
	nulls[8] = e->reason == NULL;

	insert_audit_row(values, nulls);

	chain.last_id = e->audit_id;
	memcpy(chain.last_hash, hash, HASH_LEN);
	chain.max_written = e->audit_id;
}

/*
 * settle.audit_trigger(['reason_required'])
 *
 * AFTER INSERT/UPDATE/DELETE FOR EACH ROW or AFTER TRUNCATE FOR EACH
 * STATEMENT.  Records the change; with 'reason_required', refuses it when
 * settle.reason is not set.  Does nothing in a restore session.
 */
Datum
settle_audit_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	Relation	rel;
	TupleDesc	tupdesc;
	AuditEntry	e;
	bool		reason_required = false;
	const char *reason = settle_reason;
	const char *app;
	int			i;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle.audit_trigger() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle.audit_trigger() must be fired AFTER the change")));

	/* a restore loads rows that were audited when first written */
	if (settle_restoring_session())
		return PointerGetDatum(NULL);

	rel = trigdata->tg_relation;
	tupdesc = RelationGetDescr(rel);
	for (i = 0; i < trigdata->tg_trigger->tgnargs; i++)
	{
		if (strcmp(trigdata->tg_trigger->tgargs[i], "reason_required") == 0)
			reason_required = true;
		else
			ereport(ERROR,
					(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
					 errmsg("unknown settle.audit_trigger() argument \"%s\"",
							trigdata->tg_trigger->tgargs[i])));
	}

	if (reason != NULL && reason[0] == '\0')
		reason = NULL;
	if (reason_required && reason == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a reason is required to change %s", RelationGetRelationName(rel)),
				 errdetail("Changes to %s are audited with the reason they were made.",
						   RelationGetRelationName(rel)),
				 errhint("Run SET LOCAL settle.reason = '...' in the same transaction.")));

	memset(&e, 0, sizeof(e));
	e.table_name = RelationGetRelationName(rel);
	if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		e.operation = "TRUNCATE";
	else if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle.audit_trigger() must be FOR EACH ROW for INSERT, UPDATE and DELETE")));
	else if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		e.operation = "INSERT";
		e.new_row = row_to_jsonb(trigdata->tg_trigtuple, tupdesc);
		e.row_key = row_key_jsonb(rel, e.new_row);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		e.operation = "UPDATE";
		e.old_row = row_to_jsonb(trigdata->tg_trigtuple, tupdesc);
		e.new_row = row_to_jsonb(trigdata->tg_newtuple, tupdesc);
		e.row_key = row_key_jsonb(rel, e.new_row);
	}
	else
	{
		e.operation = "DELETE";
		e.old_row = row_to_jsonb(trigdata->tg_trigtuple, tupdesc);
		e.row_key = row_key_jsonb(rel, e.old_row);
	}

	e.reason = reason;
	e.session_user_name = GetUserNameFromId(GetSessionUserId(), false);
	e.current_user_name = GetUserNameFromId(GetUserId(), false);
	app = GetConfigOption("application_name", false, false);
	e.application_name = app ? app : "";
	e.txid = (int64) U64FromFullTransactionId(GetTopFullTransactionId());
	e.xact_time = GetCurrentTransactionStartTimestamp();
	e.statement_time = GetCurrentStatementStartTimestamp();

	append_entry(&e);

	return PointerGetDatum(NULL);
}

/*
 * Moves settle.audit_head to the last entry this transaction wrote through the
 * trigger (entries of aborted subtransactions are gone; entries inserted any
 * other way are never anchored, which verify_audit reports).
 */
static void
move_head(void *arg)
{
	Datum		values[2];
	Datum		bound = Int64GetDatum(chain.max_written);

	chain_acquire();
	if (SPI_execute_plan(anchor_plan, &bound, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read the audit chain");
	if (SPI_processed == 0)
		return;
	values[0] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &(bool){false});
	values[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &(bool){false});
	if (SPI_execute_plan(move_head_plan, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not move settle.audit_head");
}

/*
 * settle.append_only_trigger(): BEFORE UPDATE OR DELETE row trigger or
 * BEFORE TRUNCATE statement trigger that refuses the change.  Installed
 * ENABLE ALWAYS, so session_replication_role = replica does not bypass it.
 */
Datum
settle_append_only_trigger(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *op;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle.append_only_trigger() must be called as a trigger")));

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		op = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		op = "DELETE";
	else if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		op = "TRUNCATE";
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle.append_only_trigger() must fire on UPDATE, DELETE or TRUNCATE")));

	/* retention deletes old raw pages nothing refers to (settle.purge) */
	if (purge_in_progress && TRIGGER_FIRED_BY_DELETE(trigdata->tg_event) &&
		strcmp(RelationGetRelationName(trigdata->tg_relation), "raw_page") == 0)
		return PointerGetDatum(trigdata->tg_trigtuple);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("settle.%s is append-only", RelationGetRelationName(trigdata->tg_relation)),
			 errdetail("%s is refused for every user: history is never rewritten.", op),
			 errhint("Record a change as a new row (a new revision or version).")));
	PG_RETURN_NULL();			/* not reached */
}

/* ---------- verification ---------- */

static char *
datum_text_or_null(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	if (isnull)
		return NULL;
	if (TupleDescAttr(desc, col - 1)->atttypid == NAMEOID)
		return pstrdup(NameStr(*DatumGetName(d)));
	return TextDatumGetCString(d);
}

static Jsonb *
datum_jsonb_or_null(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : DatumGetJsonbP(d);
}

static bool
hash_equals(HeapTuple tup, TupleDesc desc, int col, const uint8 *h)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	bytea	   *b;

	if (isnull)
		return false;
	b = DatumGetByteaPP(d);
	return VARSIZE_ANY_EXHDR(b) == HASH_LEN && memcmp(VARDATA_ANY(b), h, HASH_LEN) == 0;
}

/*
 * settle.verify_audit() → (verified, entries, first_broken_id, problem)
 *
 * Reads the chain in id order in batches (memory stays bounded) and checks
 * that ids run 1, 2, 3, ..., that each entry links to the previous hash, that
 * each stored hash matches a recomputation, and that the head anchors the
 * last entry.  Stops at the first entry that fails.
 */
Datum
settle_verify_audit(PG_FUNCTION_ARGS)
{
	TupleDesc	resdesc;
	Datum		result[4];
	bool		resnull[4] = {false, false, true, true};
	Portal		portal;
	SPIPlanPtr	plan;
	uint8		prev[HASH_LEN];
	int64		expected = 1;
	int64		broken = 0;
	char		problem[200];
	MemoryContext batchcxt;
	MemoryContext oldcxt;

	if (get_call_result_type(fcinfo, NULL, &resdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	resdesc = BlessTupleDesc(resdesc);

	memset(prev, 0, HASH_LEN);
	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "verify_audit batch",
									 ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare("SELECT audit_id, prev_hash, entry_hash, table_name, operation, row_key, "
					   "old_row, new_row, reason, session_user_name, current_user_name, "
					   "application_name, txid, xact_time, statement_time "
					   "FROM settle.audit_log ORDER BY audit_id", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	while (broken == 0)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		oldcxt = MemoryContextSwitchTo(batchcxt);
		for (i = 0; i < SPI_processed && broken == 0; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			AuditEntry	e;
			bool		isnull;
			uint8		h[HASH_LEN];

			e.audit_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			e.table_name = datum_text_or_null(tup, desc, 4);
			e.operation = datum_text_or_null(tup, desc, 5);
			e.row_key = datum_jsonb_or_null(tup, desc, 6);
			e.old_row = datum_jsonb_or_null(tup, desc, 7);
			e.new_row = datum_jsonb_or_null(tup, desc, 8);
			e.reason = datum_text_or_null(tup, desc, 9);
			e.session_user_name = datum_text_or_null(tup, desc, 10);
			e.current_user_name = datum_text_or_null(tup, desc, 11);
			e.application_name = datum_text_or_null(tup, desc, 12);
			e.txid = DatumGetInt64(SPI_getbinval(tup, desc, 13, &isnull));
			e.xact_time = DatumGetTimestampTz(SPI_getbinval(tup, desc, 14, &isnull));
			e.statement_time = DatumGetTimestampTz(SPI_getbinval(tup, desc, 15, &isnull));

			if (e.audit_id != expected)
			{
				broken = e.audit_id > expected ? expected : e.audit_id;
				snprintf(problem, sizeof(problem), e.audit_id > expected ?
								   "entry %lld is missing" : "entry %lld is out of order",
								   (long long) broken);
				break;
			}
			if (!hash_equals(tup, desc, 2, prev))
			{
				broken = e.audit_id;
				snprintf(problem, sizeof(problem), "entry %lld does not link to the hash of entry %lld",
								   (long long) e.audit_id, (long long) (e.audit_id - 1));
				break;
			}
			audit_entry_hash(prev, &e, h);
			if (!hash_equals(tup, desc, 3, h))
			{
				broken = e.audit_id;
				snprintf(problem, sizeof(problem), "entry %lld was altered: its content does not match its hash",
								   (long long) e.audit_id);
				break;
			}
			memcpy(prev, h, HASH_LEN);
			expected++;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
	}
	SPI_cursor_close(portal);

	if (broken == 0)
	{
		/* The head must anchor the last entry. */
		int64		head_id;
		bool		isnull;

		if (SPI_execute("SELECT last_id, last_hash FROM settle.audit_head", true, 0) != SPI_OK_SELECT ||
			SPI_processed != 1)
		{
			broken = expected;
			snprintf(problem, sizeof(problem), "the chain head (settle.audit_head) is missing");
		}
		else
		{
			head_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			if (head_id > expected - 1)
			{
				broken = expected;
				snprintf(problem, sizeof(problem), "entry %lld and any after it are missing: the chain head is at %lld",
								   (long long) expected, (long long) head_id);
			}
			else if (head_id < expected - 1 && chain.max_written < expected - 1)
			{
				/*
				 * Entries past the head are fine only when this transaction
				 * wrote them (the head moves at commit); anything after those
				 * came from elsewhere.
				 */
				int64		anchored = Max(head_id, chain.max_written);

				broken = anchored + 1;
				snprintf(problem, sizeof(problem), "entry %lld was inserted out of band: the chain head is at %lld",
						 (long long) broken, (long long) anchored);
			}
			else if (head_id < expected - 1)
				;				/* written by this transaction, anchored at commit */
			else if (!hash_equals(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, prev))
			{
				broken = head_id;
				snprintf(problem, sizeof(problem), "entry %lld does not match the chain head", (long long) head_id);
			}
		}
	}

	SPI_finish();
	result[0] = BoolGetDatum(broken == 0);
	result[1] = Int64GetDatum(expected - 1);
	if (broken != 0)
	{
		resnull[2] = resnull[3] = false;
		result[2] = Int64GetDatum(broken);
		result[3] = CStringGetTextDatum(problem);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(resdesc, result, resnull)));
}

/* ---------- retention ---------- */

/*
 * settle._purge(cutoff timestamptz) → (raw_pages bigint, ingest_runs bigint)
 *
 * Deletes raw pages received before cutoff that nothing refers to — no bill
 * line revision (whatever its period's state), no provider total, no open
 * exception — and finished ingest runs before cutoff that no raw page or
 * checkpoint refers to.  Only here may raw pages be deleted: the append-only
 * trigger lets these deletes through while this function runs.
 */
Datum
settle_purge(PG_FUNCTION_ARGS)
{
	Datum		cutoff = PG_GETARG_DATUM(0);
	TupleDesc	resdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Oid			type = TIMESTAMPTZOID;
	uint64		pages = 0,
				runs = 0;

	if (get_call_result_type(fcinfo, NULL, &resdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	purge_in_progress = true;
	PG_TRY();
	{
		if (SPI_execute_with_args("DELETE FROM settle.raw_page p WHERE p.received_at < $1 "
								  "AND NOT EXISTS (SELECT 1 FROM settle.bill_line b WHERE b.raw_page_id = p.raw_page_id) "
								  "AND NOT EXISTS (SELECT 1 FROM settle.provider_total t WHERE t.raw_page_id = p.raw_page_id) "
								  "AND NOT EXISTS (SELECT 1 FROM settle.exception e "
								  "  WHERE e.state NOT IN ('settled', 'dismissed') "
								  "    AND (e.refs->>'raw_page_id')::bigint = p.raw_page_id)",
								  1, &type, &cutoff, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not purge raw pages");
		pages = SPI_processed;
		if (SPI_execute_with_args("DELETE FROM settle.ingest_run r WHERE r.started_at < $1 "
								  "AND r.status <> 'running' "
								  "AND NOT EXISTS (SELECT 1 FROM settle.raw_page p WHERE p.ingest_run_id = r.ingest_run_id) "
								  "AND NOT EXISTS (SELECT 1 FROM settle.ingest_checkpoint c WHERE c.last_run_id = r.ingest_run_id)",
								  1, &type, &cutoff, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "could not purge ingest runs");
		runs = SPI_processed;
	}
	PG_FINALLY();
	{
		purge_in_progress = false;
	}
	PG_END_TRY();
	SPI_finish();
	values[0] = Int64GetDatum((int64) pages);
	values[1] = Int64GetDatum((int64) runs);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(resdesc, values, nulls)));
}
