/*
 * audit.c — the hash-chained, append-only audit trail.
 *
 * settle.audit_trigger() records one entry in settle.audit_log per changed
 * row (or per TRUNCATE).  Entries belong to chains: one per reseller (every
 * change of a row whose reseller_id is that reseller) and one for shared data
 * (chain 0: rows without a reseller, reseller_id 0, TRUNCATE).  Within its
 * chain an entry has a position 1, 2, 3, ... and a link (settle.audit_link):
 * entry_hash = SHA-256(prev_hash || chain || position || audit_id ||
 * SHA-256(canonical encoding of the entry)), so any edit, deletion,
 * reordering or out-of-band insertion breaks the chain from that entry on.
 * settle.audit_head holds each chain's end.  The anchor is the sum modulo
 * 2^256 of SHA-256(chain || position || hash) over every head
 * (settle.audit_anchor_value()); settle.audit_anchor holds one row per
 * committed transaction with the change it made to that sum, and the rows
 * must add up to it, so moving a head back or dropping a whole chain
 * (entries, links and head) is detected too.  settle.verify_audit() checks
 * all of it.
 *
 * Concurrency.  The entry itself is written by the trigger at once (its
 * transaction sees it), but it is linked into its chain only just before
 * commit (a pre-commit callback): the transaction then locks the chains it
 * wrote in ascending chain order, appends the links, moves the heads, and
 * inserts its anchor row.  So
 *  - a transaction waits for no audit lock while it works: writers of
 *    different resellers never wait for each other, writers of one reseller
 *    only for each other's commit;
 *  - chain locks are always taken in one order, after which the transaction
 *    only inserts and commits: no audit lock can be part of a deadlock;
 *  - the anchor is insert-only (sums commute): no shared wait.
 * Positions follow commit order within a chain; audit_id (a sequence) orders
 * entries roughly in time across chains and may have gaps.
 *
 * Chain locks are heavyweight advisory-class locks of their own (field 4 =
 * AUDIT_LOCK_CLASS, never used by pg_advisory_lock), held to the end of the
 * transaction; heads are read with the latest snapshot after the lock is
 * granted, so REPEATABLE READ writers never fail to serialise on them.
 *
 * Entries and links are inserted directly into the heap and its plain-column
 * indexes, not through the executor: an audited change then costs little more
 * than the change itself.  No role but the owner may insert into
 * settle.audit_log, so entries come from this trigger; links, heads and
 * anchor rows are written with the owner's privileges.
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
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/cryptohash.h"
#include "common/sha2.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "port/pg_bswap.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/syscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "settle.h"

PG_FUNCTION_INFO_V1(settle_audit_trigger);
PG_FUNCTION_INFO_V1(settle_append_only_trigger);
PG_FUNCTION_INFO_V1(settle_verify_audit);
PG_FUNCTION_INFO_V1(settle_audit_anchor_value);
PG_FUNCTION_INFO_V1(settle_purge);
PG_FUNCTION_INFO_V1(settle_restoring_sql);
PG_FUNCTION_INFO_V1(settle_audit_link_unlinked);

/* true only while settle_purge() deletes what retention allows */
static bool purge_in_progress = false;

/* settle.restoring: see settle_restoring_session() */
static bool settle_restoring = false;

#define HASH_LEN PG_SHA256_DIGEST_LENGTH

/*
 * Field 4 of the lock tags of chains: pg_advisory_lock uses
 * 1 and 2, so no user lock can clash with these.  pg_locks shows them as
 * advisory locks with objsubid 21333.
 */
#define AUDIT_LOCK_CLASS 0x5355

/* An entry this transaction wrote and has not linked into its chain yet. */
typedef struct PendingEntry
{
	int64		audit_id;
	int64		chain_id;
	SubTransactionId subid;		/* the subtransaction that wrote it */
	uint8		content[HASH_LEN];	/* SHA-256 of its canonical encoding */
} PendingEntry;

/* This transaction's pending entries, in TopTransactionContext. */
static PendingEntry *pending = NULL;
static int	npending = 0;
static int	maxpending = 0;
static Oid	log_relid = InvalidOid; /* settle.audit_log, per transaction */

/* Plans kept across calls (SPI_keepplan). */
static SPIPlanPtr read_head_plan = NULL;
static SPIPlanPtr move_head_plan = NULL;

static void link_pending(void *arg);
static void as_audit_owner(void (*fn) (void *), void *arg);

/* One audit entry, as hashed and stored. */
typedef struct AuditEntry
{
	int64		audit_id;
	int64		chain_id;
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
forget_pending(void)
{
	pending = NULL;				/* freed with TopTransactionContext */
	npending = maxpending = 0;
	log_relid = InvalidOid;
}

static void
chain_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			/* link this transaction's entries into their chains */
			if (npending > 0)
			{
				CommandCounterIncrement();
				PushActiveSnapshot(GetTransactionSnapshot());
				as_audit_owner(link_pending, NULL);
				PopActiveSnapshot();
				forget_pending();
			}
			break;
		case XACT_EVENT_PRE_PREPARE:
			/*
			 * A prepared transaction would hold its chains until COMMIT
			 * PREPARED and stop their writers meanwhile.
			 */
			if (npending > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that changed audited tables"),
						 errdetail("Its audit entries are linked into their chains at commit.")));
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			forget_pending();
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
	 * Entries of an aborted subtransaction are gone: forget them.  Every
	 * subtransaction still open when mySubid aborts was started inside it,
	 * so its id is larger.
	 */
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		int			i,
					n = 0;

		for (i = 0; i < npending; i++)
			if (pending[i].subid < mySubid)
				pending[n++] = pending[i];
		npending = n;
	}
}

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

static pg_cryptohash_ctx *
hash_start(void)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (pg_cryptohash_init(ctx) < 0)
		elog(ERROR, "could not initialise SHA-256 context: %s", pg_cryptohash_error(ctx));
	return ctx;
}

static void
hash_finish(pg_cryptohash_ctx *ctx, uint8 *out)
{
	if (pg_cryptohash_final(ctx, out, HASH_LEN) < 0)
		elog(ERROR, "could not finalise SHA-256 context: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

/*
 * The content hash of an entry: SHA-256 of the canonical encoding of every
 * column of settle.audit_log, in table order.
 */
static void
audit_content_hash(const AuditEntry *e, uint8 *out)
{
	pg_cryptohash_ctx *ctx = hash_start();

	hash_int64(ctx, e->audit_id);
	hash_int64(ctx, e->chain_id);
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
	hash_finish(ctx, out);
}

/* entry_hash = SHA-256(prev_hash || chain || position || audit_id || content hash) */
static void
audit_link_hash(const uint8 *prev, int64 chain_id, int64 seq, int64 audit_id,
				const uint8 *content, uint8 *out)
{
	pg_cryptohash_ctx *ctx = hash_start();

	hash_bytes(ctx, prev, HASH_LEN);
	hash_int64(ctx, chain_id);
	hash_int64(ctx, seq);
	hash_int64(ctx, audit_id);
	hash_bytes(ctx, content, HASH_LEN);
	hash_finish(ctx, out);
}

/* A head's share of the anchor: SHA-256(chain || position || hash). */
static void
head_contribution(int64 chain_id, int64 seq, const uint8 *hash, uint8 *out)
{
	pg_cryptohash_ctx *ctx = hash_start();

	hash_int64(ctx, chain_id);
	hash_int64(ctx, seq);
	hash_bytes(ctx, hash, HASH_LEN);
	hash_finish(ctx, out);
}

/* acc += v (sign 1) or acc -= v (sign -1), as 256-bit big-endian integers mod 2^256 */
static void
anchor_add(uint8 *acc, const uint8 *v, int sign)
{
	int			i;
	int			carry = 0;

	for (i = HASH_LEN - 1; i >= 0; i--)
	{
		int			x = sign > 0 ? (int) acc[i] + (int) v[i] + carry
			: (int) acc[i] - (int) v[i] + carry;

		carry = x < 0 ? -1 : x > 255 ? 1 : 0;
		acc[i] = (uint8) (x & 0xFF);
	}
}

static bytea *
hash_to_bytea(const uint8 *h)
{
	bytea	   *b = palloc(VARHDRSZ + HASH_LEN);

	SET_VARSIZE(b, VARHDRSZ + HASH_LEN);
	memcpy(VARDATA(b), h, HASH_LEN);
	return b;
}

/* A 32-byte hash from a bytea column of an SPI row; false when NULL or malformed. */
static bool
spi_hash(HeapTuple tup, TupleDesc desc, int col, uint8 *out)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	bytea	   *b;

	if (isnull)
		return false;
	b = DatumGetByteaPP(d);
	if (VARSIZE_ANY_EXHDR(b) != HASH_LEN)
		return false;
	memcpy(out, VARDATA_ANY(b), HASH_LEN);
	return true;
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

/* ---------- the chains ---------- */

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
	if (read_head_plan == NULL)
	{
		Oid			types[1] = {INT8OID};

		read_head_plan = keep_plan("SELECT last_seq, last_hash FROM settle.audit_head WHERE chain_id = $1",
								   1, types);
	}
	if (move_head_plan == NULL)
	{
		Oid			types[3] = {INT8OID, INT8OID, BYTEAOID};

		move_head_plan = keep_plan("INSERT INTO settle.audit_head AS h (chain_id, last_seq, last_hash) "
								   "VALUES ($1, $2, $3) ON CONFLICT (chain_id) DO UPDATE "
								   "SET last_seq = excluded.last_seq, last_hash = excluded.last_hash",
								   3, types);
	}
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
 * Inserts one row into an audit table and its indexes without the executor.
 * The indexes must be plain column indexes (no expressions, no predicates).
 */
static void
insert_direct(Oid relid, Datum *values, bool *nulls)
{
	Relation	rel;
	HeapTuple	tup;
	List	   *indexes;
	ListCell   *lc;

	rel = table_open(relid, RowExclusiveLock);
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
					 errmsg("index \"%s\" on settle.%s is not supported",
							RelationGetRelationName(idx), RelationGetRelationName(rel)),
					 errdetail("Indexes on the audit trail must be plain column indexes.")));
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

/* The lock of a chain, held to the end of the transaction. */
static void
lock_chain(int64 chain_id)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) (((uint64) chain_id) >> 32),
						 (uint32) chain_id, AUDIT_LOCK_CLASS);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/*
 * The chain a changed row belongs to: its reseller_id (a bigint column of
 * that name) when it has one above 0, else the shared chain 0.
 */
static int64
row_chain(Relation rel, HeapTuple tuple)
{
	TupleDesc	desc = RelationGetDescr(rel);
	AttrNumber	att = get_attnum(RelationGetRelid(rel), "reseller_id");
	bool		isnull;
	Datum		d;
	int64		v;

	if (att == InvalidAttrNumber || tuple == NULL || TupleDescAttr(desc, att - 1)->atttypid != INT8OID)
		return 0;
	d = heap_getattr(tuple, att, desc, &isnull);
	if (isnull)
		return 0;
	v = DatumGetInt64(d);
	return v > 0 ? v : 0;
}

/* Remembers entry e (already in settle.audit_log) for linking at commit. */
static PendingEntry *
queue_entry(const AuditEntry *e)
{
	PendingEntry *p;

	if (npending == maxpending)
	{
		int			n = maxpending == 0 ? 16 : maxpending * 2;

		pending = pending == NULL
			? MemoryContextAlloc(TopTransactionContext, n * sizeof(PendingEntry))
			: repalloc(pending, n * sizeof(PendingEntry));
		maxpending = n;
	}
	p = &pending[npending];
	p->audit_id = e->audit_id;
	p->chain_id = e->chain_id;
	p->subid = GetCurrentSubTransactionId();
	audit_content_hash(e, p->content);
	return p;
}

/* Writes entry e into settle.audit_log and remembers it for linking at commit. */
static void
append_entry(AuditEntry *e)
{
	Datum		values[14];
	bool		nulls[14];

	if (!OidIsValid(log_relid))
		log_relid = settle_relid("audit_log");
	e->audit_id = nextval_internal(settle_relid("audit_id_seq"), false);
	(void) queue_entry(e);

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int64GetDatum(e->audit_id);
	values[1] = Int64GetDatum(e->chain_id);
	values[2] = CStringGetTextDatum(e->table_name);
	values[3] = CStringGetTextDatum(e->operation);
	values[4] = PointerGetDatum(e->row_key);
	values[5] = PointerGetDatum(e->old_row);
	values[6] = PointerGetDatum(e->new_row);
	values[7] = e->reason ? CStringGetTextDatum(e->reason) : (Datum) 0;
	values[8] = DirectFunctionCall1(namein, CStringGetDatum(e->session_user_name));
	values[9] = DirectFunctionCall1(namein, CStringGetDatum(e->current_user_name));
	values[10] = CStringGetTextDatum(e->application_name);
	values[11] = Int64GetDatum(e->txid);
	values[12] = TimestampTzGetDatum(e->xact_time);
	values[13] = TimestampTzGetDatum(e->statement_time);
	nulls[4] = e->row_key == NULL;
	nulls[5] = e->old_row == NULL;
	nulls[6] = e->new_row == NULL;
	nulls[7] = e->reason == NULL;

	insert_direct(log_relid, values, nulls);
	npending++;					/* only once the row is written */
}

static int
cmp_pending(const void *a, const void *b)
{
	const PendingEntry *x = a;
	const PendingEntry *y = b;

	if (x->chain_id != y->chain_id)
		return x->chain_id < y->chain_id ? -1 : 1;
	if (x->audit_id != y->audit_id)
		return x->audit_id < y->audit_id ? -1 : 1;
	return 0;
}

/*
 * Pre-commit: links this transaction's entries into their chains.  Chains
 * are locked in ascending order, their heads read with the latest snapshot
 * (every earlier writer of the chain has committed by the time the lock is
 * granted), the links appended, the heads moved; then the change of this
 * transaction's heads is inserted into the anchor.
 */
static void
link_pending(void *arg)
{
	Oid			link_relid = settle_relid("audit_link");
	uint8		delta[HASH_LEN];
	uint8		c[HASH_LEN];
	int			i = 0;
	bool		isnull;

	memset(delta, 0, HASH_LEN);
	qsort(pending, npending, sizeof(PendingEntry), cmp_pending);
	while (i < npending)
	{
		int64		chain_id = pending[i].chain_id;
		int64		seq = 0;
		uint8		hash[HASH_LEN];
		Datum		key = Int64GetDatum(chain_id);
		Datum		head[3];

		lock_chain(chain_id);
		if (SPI_execute_snapshot(read_head_plan, &key, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read the head of audit chain %lld", (long long) chain_id);
		memset(hash, 0, HASH_LEN);
		if (SPI_processed == 1)
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;

			seq = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			if (!spi_hash(tup, desc, 2, hash))
				elog(ERROR, "the head of audit chain %lld has a malformed hash", (long long) chain_id);
			head_contribution(chain_id, seq, hash, c);
			anchor_add(delta, c, -1);
		}
		for (; i < npending && pending[i].chain_id == chain_id; i++)
		{
			uint8		next[HASH_LEN];
			Datum		values[5];
			bool		nulls[5] = {false, false, false, false, false};

			seq++;
			audit_link_hash(hash, chain_id, seq, pending[i].audit_id, pending[i].content, next);
			values[0] = Int64GetDatum(chain_id);
			values[1] = Int64GetDatum(seq);
			values[2] = Int64GetDatum(pending[i].audit_id);
			values[3] = PointerGetDatum(hash_to_bytea(hash));
			values[4] = PointerGetDatum(hash_to_bytea(next));
			insert_direct(link_relid, values, nulls);
			memcpy(hash, next, HASH_LEN);
		}
		head[0] = Int64GetDatum(chain_id);
		head[1] = Int64GetDatum(seq);
		head[2] = PointerGetDatum(hash_to_bytea(hash));
		if (SPI_execute_snapshot(move_head_plan, head, NULL, GetLatestSnapshot(), InvalidSnapshot,
								 false, false, 0) != SPI_OK_INSERT || SPI_processed != 1)
			elog(ERROR, "could not move the head of audit chain %lld", (long long) chain_id);
		head_contribution(chain_id, seq, hash, c);
		anchor_add(delta, c, 1);
	}

	/*
	 * The anchor: this transaction's change of the heads' sum, inserted as a
	 * row of its own.  An insert waits for nobody, and the rows add up to the
	 * sum of the heads however commits interleave.
	 */
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = Int64GetDatum(nextval_internal(settle_relid("audit_anchor_id_seq"), false));
		values[1] = Int64GetDatum((int64) U64FromFullTransactionId(GetTopFullTransactionId()));
		values[2] = PointerGetDatum(hash_to_bytea(delta));
		insert_direct(settle_relid("audit_anchor"), values, nulls);
	}
}

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
		e.operation = "TRUNCATE";	/* of every reseller's rows: shared chain */
	else if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle.audit_trigger() must be FOR EACH ROW for INSERT, UPDATE and DELETE")));
	else if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		e.operation = "INSERT";
		e.chain_id = row_chain(rel, trigdata->tg_trigtuple);
		e.new_row = row_to_jsonb(trigdata->tg_trigtuple, tupdesc);
		e.row_key = row_key_jsonb(rel, e.new_row);
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		e.operation = "UPDATE";
		e.chain_id = row_chain(rel, trigdata->tg_newtuple);
		e.old_row = row_to_jsonb(trigdata->tg_trigtuple, tupdesc);
		e.new_row = row_to_jsonb(trigdata->tg_newtuple, tupdesc);
		e.row_key = row_key_jsonb(rel, e.new_row);
	}
	else
	{
		e.operation = "DELETE";
		e.chain_id = row_chain(rel, trigdata->tg_trigtuple);
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

/* An entry from the 14 columns of settle.audit_log at col, col + 1, ... of an SPI row. */
static void
entry_from_row(HeapTuple tup, TupleDesc desc, int col, AuditEntry *e)
{
	bool		isnull;

	e->audit_id = DatumGetInt64(SPI_getbinval(tup, desc, col, &isnull));
	e->chain_id = DatumGetInt64(SPI_getbinval(tup, desc, col + 1, &isnull));
	e->table_name = datum_text_or_null(tup, desc, col + 2);
	e->operation = datum_text_or_null(tup, desc, col + 3);
	e->row_key = datum_jsonb_or_null(tup, desc, col + 4);
	e->old_row = datum_jsonb_or_null(tup, desc, col + 5);
	e->new_row = datum_jsonb_or_null(tup, desc, col + 6);
	e->reason = datum_text_or_null(tup, desc, col + 7);
	e->session_user_name = datum_text_or_null(tup, desc, col + 8);
	e->current_user_name = datum_text_or_null(tup, desc, col + 9);
	e->application_name = datum_text_or_null(tup, desc, col + 10);
	e->txid = DatumGetInt64(SPI_getbinval(tup, desc, col + 11, &isnull));
	e->xact_time = DatumGetTimestampTz(SPI_getbinval(tup, desc, col + 12, &isnull));
	e->statement_time = DatumGetTimestampTz(SPI_getbinval(tup, desc, col + 13, &isnull));
}

static const char *
chain_name(int64 chain_id)
{
	return chain_id == 0 ? "the shared chain" : psprintf("the chain of reseller %lld", (long long) chain_id);
}

/* A chain's head as verify_audit reads it. */
typedef struct HeadRow
{
	int64		chain_id;
	int64		seq;
	bool		ok;				/* its hash is well formed */
	uint8		hash[HASH_LEN];
} HeadRow;

/* Where verification stopped, if it did. */
typedef struct Broken
{
	bool		broken;
	bool		has_id;
	int64		audit_id;
	char		problem[300];
} Broken;

static void
set_broken(Broken *b, int64 audit_id, bool has_id, const char *fmt,...) pg_attribute_printf(4, 5);

static void
set_broken(Broken *b, int64 audit_id, bool has_id, const char *fmt,...)
{
	va_list		ap;

	b->broken = true;
	b->has_id = has_id;
	b->audit_id = audit_id;
	va_start(ap, fmt);
	vsnprintf(b->problem, sizeof(b->problem), fmt, ap);
	va_end(ap);
}

/* A head with no links must be a chain's start (position 0). */
static void
check_unlinked_head(const HeadRow *h, Broken *b)
{
	if (!h->ok)
		set_broken(b, 0, false, "the head of %s is malformed", chain_name(h->chain_id));
	else if (h->seq != 0)
		set_broken(b, 0, false, "%s has no entries, but its head is at position %lld: the chain was removed",
				   chain_name(h->chain_id), (long long) h->seq);
}

/* The end of a chain's links (last position, hash) against its head. */
static void
check_chain_end(int64 chain_id, int64 last, const uint8 *hash, const HeadRow *h, Broken *b)
{
	if (h == NULL)
		set_broken(b, 0, false, "%s has no head (settle.audit_head)", chain_name(chain_id));
	else if (!h->ok)
		set_broken(b, 0, false, "the head of %s is malformed", chain_name(chain_id));
	else if (h->seq > last)
		set_broken(b, 0, false, "position %lld and any after it of %s are missing: its head is at %lld",
				   (long long) (last + 1), chain_name(chain_id), (long long) h->seq);
	else if (h->seq < last)
		set_broken(b, 0, false, "position %lld of %s was appended out of band: its head is at %lld",
				   (long long) (h->seq + 1), chain_name(chain_id), (long long) h->seq);
	else if (memcmp(h->hash, hash, HASH_LEN) != 0)
		set_broken(b, 0, false, "position %lld of %s does not match its head", (long long) last,
				   chain_name(chain_id));
}

static int
cmp_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return x < y ? -1 : x > y ? 1 : 0;
}

/*
 * settle.verify_audit() → (verified, entries, first_broken_id, problem)
 *
 * Walks every chain in position order in batches (memory stays bounded) and
 * checks that positions run 1, 2, 3, ..., that each link names the hash of
 * the one before, that each entry's content and place match its link's hash,
 * and that each chain ends at its head.  Then that every entry is in a chain
 * (this transaction's own entries are linked at commit) and that the anchor
 * is the sum of the heads.  Stops at the first problem.
 */
Datum
settle_verify_audit(PG_FUNCTION_ARGS)
{
	TupleDesc	resdesc;
	Datum		result[4];
	bool		resnull[4] = {false, false, true, true};
	Portal		portal;
	SPIPlanPtr	plan;
	HeadRow    *heads;
	int			nheads;
	int			hi = 0;
	int64		entries = 0;
	bool		have_chain = false;
	int64		cur = 0;
	int64		expected = 1;
	uint8		prev[HASH_LEN];
	uint8		sum[HASH_LEN];
	Broken		b;
	int64	   *own;
	int			i;
	MemoryContext batchcxt;
	MemoryContext oldcxt;

	if (get_call_result_type(fcinfo, NULL, &resdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	resdesc = BlessTupleDesc(resdesc);
	memset(&b, 0, sizeof(b));
	memset(sum, 0, HASH_LEN);
	memset(prev, 0, HASH_LEN);

	/* this transaction's own entries, not linked until it commits */
	own = palloc(sizeof(int64) * Max(npending, 1));
	for (i = 0; i < npending; i++)
		own[i] = pending[i].audit_id;
	qsort(own, npending, sizeof(int64), cmp_int64);

	batchcxt = AllocSetContextCreate(CurrentMemoryContext, "verify_audit batch",
									 ALLOCSET_DEFAULT_SIZES);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* the heads, in chain order, and their sum */
	if (SPI_execute("SELECT chain_id, last_seq, last_hash FROM settle.audit_head ORDER BY chain_id",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.audit_head");
	nheads = (int) SPI_processed;
	heads = palloc0(sizeof(HeadRow) * Max(nheads, 1));
	for (i = 0; i < nheads; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		uint8		c[HASH_LEN];

		heads[i].chain_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		heads[i].seq = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		heads[i].ok = spi_hash(tup, desc, 3, heads[i].hash);
		head_contribution(heads[i].chain_id, heads[i].seq, heads[i].hash, c);
		anchor_add(sum, c, 1);
	}

	plan = SPI_prepare("SELECT l.chain_id, l.chain_seq, l.audit_id, l.prev_hash, l.entry_hash, "
					   "a.audit_id, a.chain_id, a.table_name, a.operation, a.row_key, a.old_row, a.new_row, "
					   "a.reason, a.session_user_name, a.current_user_name, a.application_name, a.txid, "
					   "a.xact_time, a.statement_time "
					   "FROM settle.audit_link l LEFT JOIN settle.audit_log a ON a.audit_id = l.audit_id "
					   "ORDER BY l.chain_id, l.chain_seq", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);

	while (!b.broken)
	{
		uint64		r;

		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		oldcxt = MemoryContextSwitchTo(batchcxt);
		for (r = 0; r < SPI_processed && !b.broken; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			bool		isnull;
			int64		chain_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
			int64		seq = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
			int64		link_id = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
			uint8		link_prev[HASH_LEN];
			uint8		link_hash[HASH_LEN];
			uint8		content[HASH_LEN];
			uint8		h[HASH_LEN];
			AuditEntry	e;

			if (!have_chain || chain_id != cur)
			{
				if (have_chain)
				{
					check_chain_end(cur, expected - 1, prev,
									hi < nheads && heads[hi].chain_id == cur ? &heads[hi] : NULL, &b);
					if (hi < nheads && heads[hi].chain_id == cur)
						hi++;
				}
				while (!b.broken && hi < nheads && heads[hi].chain_id < chain_id)
					check_unlinked_head(&heads[hi++], &b);
				if (b.broken)
					break;
				have_chain = true;
				cur = chain_id;
				expected = 1;
				memset(prev, 0, HASH_LEN);
			}
			if (seq != expected)
			{
				set_broken(&b, link_id, true, seq > expected ? "position %lld of %s is missing"
						   : "position %lld of %s is out of order",
						   (long long) (seq > expected ? expected : seq), chain_name(chain_id));
				break;
			}
			if (!spi_hash(tup, desc, 4, link_prev) ||
				memcmp(link_prev, prev, HASH_LEN) != 0)
			{
				set_broken(&b, link_id, true, "entry %lld (position %lld of %s) does not link to the entry before it",
						   (long long) link_id, (long long) seq, chain_name(chain_id));
				break;
			}
			(void) SPI_getbinval(tup, desc, 6, &isnull);
			if (isnull)
			{
				set_broken(&b, link_id, true, "entry %lld (position %lld of %s) is missing",
						   (long long) link_id, (long long) seq, chain_name(chain_id));
				break;
			}
			entry_from_row(tup, desc, 6, &e);
			audit_content_hash(&e, content);
			audit_link_hash(prev, chain_id, seq, link_id, content, h);
			if (!spi_hash(tup, desc, 5, link_hash) ||
				memcmp(link_hash, h, HASH_LEN) != 0)
			{
				set_broken(&b, link_id, true, "entry %lld (position %lld of %s) was altered: its content does not match its hash",
						   (long long) link_id, (long long) seq, chain_name(chain_id));
				break;
			}
			memcpy(prev, h, HASH_LEN);
			expected++;
			entries++;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
	}
	SPI_cursor_close(portal);

	if (!b.broken && have_chain)
	{
		check_chain_end(cur, expected - 1, prev,
						hi < nheads && heads[hi].chain_id == cur ? &heads[hi] : NULL, &b);
		if (hi < nheads && heads[hi].chain_id == cur)
			hi++;
	}
	while (!b.broken && hi < nheads)
		check_unlinked_head(&heads[hi++], &b);

	/* every entry is in a chain, but this transaction's own (linked at commit) */
	if (!b.broken)
	{
		uint64		r;

		if (SPI_execute("SELECT a.audit_id FROM settle.audit_log a WHERE NOT EXISTS "
						"(SELECT 1 FROM settle.audit_link l WHERE l.audit_id = a.audit_id) ORDER BY a.audit_id",
						true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read settle.audit_log");
		for (r = 0; r < SPI_processed; r++)
		{
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &isnull));

			if (bsearch(&id, own, npending, sizeof(int64), cmp_int64) == NULL)
			{
				set_broken(&b, id, true, "entry %lld is in no chain: it was inserted out of band", (long long) id);
				break;
			}
		}
	}

	/* the anchor: its rows add up to the sum of the heads */
	if (!b.broken)
	{
		uint8		anchor[HASH_LEN];
		bool		malformed = false;

		memset(anchor, 0, HASH_LEN);
		portal = SPI_cursor_open_with_args(NULL, "SELECT delta FROM settle.audit_anchor", 0, NULL, NULL, NULL,
										   true, 0);
		for (;;)
		{
			uint64		r;

			SPI_cursor_fetch(portal, true, 10000);
			if (SPI_processed == 0)
				break;
			for (r = 0; r < SPI_processed; r++)
			{
				uint8		d[HASH_LEN];

				if (!spi_hash(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, d))
					malformed = true;
				else
					anchor_add(anchor, d, 1);
			}
		}
		SPI_cursor_close(portal);
		if (malformed)
			set_broken(&b, 0, false, "the anchor (settle.audit_anchor) has a malformed row");
		else if (memcmp(anchor, sum, HASH_LEN) != 0)
			set_broken(&b, 0, false, "the anchor (settle.audit_anchor) does not match the chain heads: a head was moved, added or removed");
	}

	SPI_finish();
	result[0] = BoolGetDatum(!b.broken);
	result[1] = Int64GetDatum(entries);
	if (b.broken)
	{
		resnull[2] = !b.has_id;
		result[2] = Int64GetDatum(b.audit_id);
		resnull[3] = false;
		result[3] = CStringGetTextDatum(b.problem);
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(resdesc, result, resnull)));
}

/*
 * settle.audit_anchor_value() → bytea: the sum modulo 2^256 of the heads'
 * hashes, one value that commits to every chain: the one to copy outside.
 */
Datum
settle_audit_anchor_value(PG_FUNCTION_ARGS)
{
	uint8		sum[HASH_LEN];
	uint64		r;
	bytea	   *out;

	memset(sum, 0, HASH_LEN);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT chain_id, last_seq, last_hash FROM settle.audit_head", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.audit_head");
	for (r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		uint8		h[HASH_LEN];
		uint8		c[HASH_LEN];

		memset(h, 0, HASH_LEN);
		(void) spi_hash(tup, desc, 3, h);
		head_contribution(DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)),
						  DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull)), h, c);
		anchor_add(sum, c, 1);
	}
	SPI_finish();
	out = hash_to_bytea(sum);
	PG_RETURN_BYTEA_P(out);
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

/*
 * settle._audit_link_unlinked() → bigint
 *
 * Entries of settle.audit_log that have no place in a chain (the whole
 * trail of settle 0.1.0, whose single chain the update to 0.2.0 replaces)
 * are linked into their chains, in audit_id order, when this transaction
 * commits, exactly as if it had written them; returns how many.  Their
 * content is hashed as it is now: run settle.verify_audit() of the version
 * that wrote them first (the update script does).
 */
Datum
settle_audit_link_unlinked(PG_FUNCTION_ARGS)
{
	Portal		portal;
	SPIPlanPtr	plan;
	int64		n = 0;
	int			nown = npending;
	int64	   *own = palloc(sizeof(int64) * Max(npending, 1));
	int			i;
	MemoryContext batchcxt = AllocSetContextCreate(CurrentMemoryContext, "audit link batch",
												   ALLOCSET_DEFAULT_SIZES);

	/* entries this transaction wrote are queued already */
	for (i = 0; i < nown; i++)
		own[i] = pending[i].audit_id;
	qsort(own, nown, sizeof(int64), cmp_int64);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	plan = SPI_prepare("SELECT a.audit_id, a.chain_id, a.table_name, a.operation, a.row_key, a.old_row, a.new_row, "
					   "a.reason, a.session_user_name, a.current_user_name, a.application_name, a.txid, "
					   "a.xact_time, a.statement_time FROM settle.audit_log a WHERE NOT EXISTS "
					   "(SELECT 1 FROM settle.audit_link l WHERE l.audit_id = a.audit_id) ORDER BY a.audit_id",
					   0, NULL);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed: %s", SPI_result_code_string(SPI_result));
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		uint64		r;
		MemoryContext oldcxt;

		SPI_cursor_fetch(portal, true, 1000);
		if (SPI_processed == 0)
			break;
		oldcxt = MemoryContextSwitchTo(batchcxt);
		for (r = 0; r < SPI_processed; r++)
		{
			AuditEntry	e;

			entry_from_row(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &e);
			if (bsearch(&e.audit_id, own, nown, sizeof(int64), cmp_int64) != NULL)
				continue;
			(void) queue_entry(&e);
			npending++;
			n++;
		}
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(batchcxt);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	SPI_finish();
	PG_RETURN_INT64(n);
}
