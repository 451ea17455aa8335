/*
 * settle_parallel.c — CALL settle.settle_period_parallel(period, workers):
 * settles every reseller with an agreement in force in a period, each in a
 * transaction of its own, in dynamic background workers.
 *
 * The caller (the leader) lists the resellers exactly as settle_period does
 * (agreement in force on the period's first day, reseller_id order) and
 * takes each open one's run id from the sequence in that order, as a serial
 * call would (settle._parallel_queue; settle_period takes it through
 * settle._reserved_run_id), so that run ids, which later periods' lineage
 * and fingerprints refer to, do not depend on which worker finishes first.
 * It puts them in a dynamic shared memory segment and commits, so that it
 * holds no lock and no snapshot while the workers run.  Then it starts up to
 * least(workers, settle.max_settle_workers, resellers) dynamic background
 * workers.  Each worker connects to the caller's database as the caller's
 * session user (and, after SET ROLE, takes the caller's current role), so
 * that settle_period sees the same privileges, run.created_by and the audit
 * trail's session user are the caller's; it then takes resellers from the
 * queue (an atomic counter over the reseller array) and settles each with
 * settle.settle_period(period, reseller) in a transaction of its own: the
 * same per-reseller path as a serial call, with its lock, exceptions, audit
 * and sanity checks.  An error rolls back that reseller's transaction only;
 * the worker records it and goes on with the next reseller.
 *
 * The leader waits on its latch (each worker's exit sets it: bgw_notify_pid,
 * as in worker.c) and reports each reseller's outcome as a NOTICE as it
 * finishes.  When fewer workers can be started than wanted (no free
 * background worker slot: max_worker_processes), it says so and goes on with
 * those it has; with none, or with workers = 0, it settles the resellers
 * itself, one transaction each, in reseller_id order.  Resellers left in the
 * queue by workers that died are settled by the leader the same way.  An
 * error or cancel in the leader terminates its workers (the reseller each
 * was settling rolls back; what was committed stays).  At the end, if any
 * reseller failed, the call ends with an ERROR naming them.  Before that,
 * the leader runs the lineage's ANALYZE that each reseller's settle_period
 * left to it (settle._parallel_settlement), once, as a serial call does.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "settle.h"

PG_FUNCTION_INFO_V1(settle_settle_period_parallel);
PG_FUNCTION_INFO_V1(settle_parallel_settlement);
PG_FUNCTION_INFO_V1(settle_reserved_run_id);
PGDLLEXPORT void settle_settle_worker_main(Datum main_arg);

int			settle_max_settle_workers = 2;

/*
 * True in a settle worker, and in the leader while it settles resellers
 * itself: settle_period then leaves the ANALYZE of the lineage to the end of
 * the whole call (settle._lineage_upkeep), as a serial call does it once.
 */
static bool in_parallel_settlement = false;

/* The reseller being settled here for the queue, and the run id it took */
static int64 current_reseller = 0;
static int64 current_run_id = 0;

/* Largest settle.max_settle_workers */
#define MAX_SETTLE_WORKERS 64
#define MESSAGE_LEN 1024

enum
{
	ITEM_PENDING = 0,			/* in the queue */
	ITEM_RUNNING,				/* taken by a worker (or the leader) */
	ITEM_DONE,					/* settled (committed) */
	ITEM_FAILED					/* its transaction rolled back */
};

typedef struct SettleItem
{
	int64		reseller_id;
	uint32		code_off;		/* offset of its code in the string area */
	pg_atomic_uint32 state;
	int32		pid;			/* who took it */
	int64		run_id;			/* the reseller's current run after it */
	int64		supersedes;		/* 0 = none */
	int64		written;		/* lineage rows written (a new run) */
	int64		reserved_run_id;	/* taken by the queue; 0 = none */
	bool		is_new;			/* a run made by this call */
	bool		reported;		/* leader-local: NOTICE sent */
	char		status[16];
	char		sqlstate[6];
	char		message[MESSAGE_LEN];
} SettleItem;

typedef struct SettleShared
{
	Oid			database_id;
	Oid			session_user_id;
	Oid			current_role_id;	/* SET ROLE; InvalidOid = none */
	bool		role_is_superuser;
	char		period[16];
	char		appname[NAMEDATALEN];
	uint32		n;
	pg_atomic_uint32 next;		/* the queue: the next item to take */
	Size		items_off;
	Size		codes_off;
} SettleShared;

#define SHARED_ITEMS(sh) ((SettleItem *) ((char *) (sh) + (sh)->items_off))
#define SHARED_CODE(sh, it) ((char *) (sh) + (sh)->codes_off + (it)->code_off)

/* The leader's state, for its error cleanup */
typedef struct LeaderState
{
	dsm_segment *seg;
	int			nworkers;
	BackgroundWorkerHandle *handles[MAX_SETTLE_WORKERS];
} LeaderState;

void
settle_parallel_init(void)
{
	DefineCustomIntVariable("settle.max_settle_workers",
							"Most background workers one settle.settle_period_parallel call starts.",
							"Each is a dynamic background worker: max_worker_processes must leave room for them.  0 settles one reseller after another in the calling session.",
							&settle_max_settle_workers,
							2, 0, MAX_SETTLE_WORKERS,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);
}

static const char *const settle_sql =
"SELECT r.run_id, r.status, r.created_at = pg_catalog.now(), coalesce(r.supersedes, 0),"
" CASE WHEN r.created_at = pg_catalog.now() THEN r.lines_out ELSE 0 END"
" FROM settle.settle_period($1::settle.period, $2) r";

/*
 * Settles one reseller through SPI (the caller has connected SPI and is in a
 * transaction or subtransaction whose end it manages) and records the run.
 */
static void
settle_item_spi(SettleShared *sh, SettleItem *it)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];
	int			rc;
	bool		isnull;
	char	   *s;

	values[0] = CStringGetTextDatum(sh->period);
	values[1] = CStringGetTextDatum(SHARED_CODE(sh, it));
	current_reseller = it->reseller_id;
	current_run_id = it->reserved_run_id;
	rc = SPI_execute_with_args(settle_sql, 2, types, values, NULL, false, 0);
	current_reseller = current_run_id = 0;
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "settle_period failed: SPI code %d", rc);
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("settle_period returned %llu runs for one reseller",
						(unsigned long long) SPI_processed)));
	it->run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	s = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	strlcpy(it->status, s ? s : "", sizeof(it->status));
	it->is_new = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	it->supersedes = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	it->written = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull));
}

/*
 * settle._reserved_run_id(reseller_id): the run id the queue took for the
 * reseller being settled here, once; NULL otherwise (settle_period then
 * takes one from the sequence, as always).
 */
Datum
settle_reserved_run_id(PG_FUNCTION_ARGS)
{
	int64		id = current_run_id;

	if (!in_parallel_settlement || id == 0 || PG_GETARG_INT64(0) != current_reseller)
		PG_RETURN_NULL();
	current_run_id = 0;
	PG_RETURN_INT64(id);
}

/* settle._parallel_settlement(): whether this session settles for settle_period_parallel */
Datum
settle_parallel_settlement(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(in_parallel_settlement);
}

/* Records an error (the current one, already copied) in an item. */
static void
item_failed(SettleItem *it, ErrorData *ed)
{
	strlcpy(it->sqlstate, unpack_sql_state(ed->sqlerrcode), sizeof(it->sqlstate));
	strlcpy(it->message, ed->message ? ed->message : "(no message)", sizeof(it->message));
}

/* ---- the worker ---- */

static void
worker_settle_item(SettleShared *sh, SettleItem *it, MemoryContext cxt)
{
	it->pid = MyProcPid;
	pg_atomic_write_u32(&it->state, ITEM_RUNNING);
	pgstat_report_activity(STATE_RUNNING, psprintf("settle_period('%s', '%s')", sh->period, SHARED_CODE(sh, it)));
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PG_TRY();
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		settle_item_spi(sh, it);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		pg_write_barrier();
		pg_atomic_write_u32(&it->state, ITEM_DONE);
	}
	PG_CATCH();
	{
		ErrorData  *ed;

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(cxt);
		/* to the server log as well: a worker has no client */
		EmitErrorReport();
		ed = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		item_failed(it, ed);
		FreeErrorData(ed);
		pg_write_barrier();
		pg_atomic_write_u32(&it->state, ITEM_FAILED);
		RESUME_INTERRUPTS();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	MemoryContextReset(cxt);
	pgstat_report_stat(true);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
settle_settle_worker_main(Datum main_arg)
{
	dsm_segment *seg;
	SettleShared *sh;
	SettleItem *items;
	MemoryContext cxt;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/*
	 * No resource owner yet: the mapping lasts until the worker exits.  A
	 * leader already gone (it ended before this worker started) leaves
	 * nothing to attach to.
	 */
	seg = dsm_attach(DatumGetUInt32(main_arg));
	if (seg == NULL)
		proc_exit(0);
	sh = dsm_segment_address(seg);
	items = SHARED_ITEMS(sh);

	/* the caller's database, as the caller's session user and role */
	BackgroundWorkerInitializeConnectionByOid(sh->database_id, sh->session_user_id, 0);
	if (OidIsValid(sh->current_role_id))
		SetCurrentRoleId(sh->current_role_id, sh->role_is_superuser);
	if (sh->appname[0])
		SetConfigOption("application_name", sh->appname, PGC_USERSET, PGC_S_SESSION);
	pgstat_report_appname(sh->appname[0] ? sh->appname : "settle settle worker");

	in_parallel_settlement = true;
	cxt = AllocSetContextCreate(TopMemoryContext, "settle settle worker", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	for (;;)
	{
		uint32		i;

		CHECK_FOR_INTERRUPTS();
		i = pg_atomic_fetch_add_u32(&sh->next, 1);
		if (i >= sh->n)
			break;
		worker_settle_item(sh, &items[i], cxt);
	}
	proc_exit(0);
}

/* ---- the leader ---- */

static void
leader_cleanup(int code, Datum arg)
{
	LeaderState *ls = (LeaderState *) DatumGetPointer(arg);
	int			i;

	in_parallel_settlement = false;
	for (i = 0; i < ls->nworkers; i++)
		if (ls->handles[i])
			TerminateBackgroundWorker(ls->handles[i]);
	if (ls->seg)
		dsm_detach(ls->seg);
	ls->seg = NULL;
}

/* One NOTICE per reseller, once, when it is done or failed. */
static void
report_items(SettleShared *sh, bool final)
{
	SettleItem *items = SHARED_ITEMS(sh);
	uint32		i;

	for (i = 0; i < sh->n; i++)
	{
		SettleItem *it = &items[i];
		uint32		st = pg_atomic_read_u32(&it->state);

		if (it->reported)
			continue;
		if (st == ITEM_DONE)
		{
			pg_read_barrier();
			if (!it->is_new)
				ereport(NOTICE,
						(errmsg("reseller %s: run %lld (%s) unchanged", SHARED_CODE(sh, it),
								(long long) it->run_id, it->status)));
			else if (it->supersedes)
				ereport(NOTICE,
						(errmsg("reseller %s: run %lld (%s), superseding run %lld", SHARED_CODE(sh, it),
								(long long) it->run_id, it->status, (long long) it->supersedes)));
			else
				ereport(NOTICE,
						(errmsg("reseller %s: run %lld (%s)", SHARED_CODE(sh, it),
								(long long) it->run_id, it->status)));
			it->reported = true;
		}
		else if (st == ITEM_FAILED)
		{
			pg_read_barrier();
			ereport(NOTICE,
					(errmsg("reseller %s failed: %s (SQLSTATE %s)", SHARED_CODE(sh, it), it->message, it->sqlstate)));
			it->reported = true;
		}
		else if (final && st == ITEM_RUNNING)
		{
			/* its worker ended before it recorded the outcome */
			strlcpy(it->sqlstate, "57P01", sizeof(it->sqlstate));
			snprintf(it->message, sizeof(it->message),
					 "the worker settling it (pid %d) ended before it reported the outcome; see settle.run and the server log",
					 it->pid);
			pg_atomic_write_u32(&it->state, ITEM_FAILED);
			ereport(NOTICE,
					(errmsg("reseller %s failed: %s (SQLSTATE %s)", SHARED_CODE(sh, it), it->message, it->sqlstate)));
			it->reported = true;
		}
	}
}

/*
 * Settles what is left in the queue in this session: one reseller after
 * another, each committed on its own (an error rolls back a subtransaction
 * and is recorded).  SPI is connected non-atomic.
 */
static void
leader_settle_serially(SettleShared *sh, MemoryContext cxt)
{
	SettleItem *items = SHARED_ITEMS(sh);

	volatile uint32 i;

	/* every worker has ended: what is still pending was never started */
	pg_atomic_write_u32(&sh->next, sh->n);
	for (i = 0; i < sh->n; i++)
	{
		SettleItem *it = &items[i];
		ResourceOwner owner = CurrentResourceOwner;

		if (pg_atomic_read_u32(&it->state) != ITEM_PENDING)
			continue;
		it->pid = MyProcPid;
		pg_atomic_write_u32(&it->state, ITEM_RUNNING);
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(cxt);
		PG_TRY();
		{
			settle_item_spi(sh, it);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			pg_atomic_write_u32(&it->state, ITEM_DONE);
		}
		PG_CATCH();
		{
			ErrorData  *ed;

			MemoryContextSwitchTo(cxt);
			ed = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(cxt);
			CurrentResourceOwner = owner;
			item_failed(it, ed);
			FreeErrorData(ed);
			pg_atomic_write_u32(&it->state, ITEM_FAILED);
		}
		PG_END_TRY();
		SPI_commit();
		MemoryContextSwitchTo(cxt);
		report_items(sh, false);
	}
}

Datum
settle_settle_period_parallel(PG_FUNCTION_ARGS)
{
	bool		nonatomic = fcinfo->context && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
	MemoryContext cxt;
	char	   *period;
	int			wanted;
	int			nworkers;
	volatile int launched = 0;
	uint32		n,
				i;
	int64	   *ids;
	int64	   *run_ids;
	char	  **codes;
	Size		codes_len = 0,
				size;
	SettleShared *sh;
	SettleItem *items;
	LeaderState *ls;
	int			failed = 0;
	StringInfoData names,
				detail;
	char		first_state[6] = "";
	volatile int64 written = 0;

	/*
	 * Each reseller commits on its own, in other sessions: inside a
	 * transaction block the caller could neither roll them back nor let the
	 * workers see its own changes, and a lock it held would stall them.
	 */
	PreventInTransactionBlock(nonatomic, "CALL settle.settle_period_parallel()");

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("a period is required"),
				 errhint("A period is a month written YYYY-MM, e.g. 2026-10.")));
	if (!PG_ARGISNULL(1) && PG_GETARG_INT32(1) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workers must be 0 or more, not %d", PG_GETARG_INT32(1))));
	wanted = PG_ARGISNULL(1) ? settle_max_settle_workers : Min(PG_GETARG_INT32(1), settle_max_settle_workers);

	/* lives as long as the CALL's portal, across the commits below */
	cxt = AllocSetContextCreate(PortalContext ? PortalContext : TopMemoryContext,
								"settle_period_parallel", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	period = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strlen(period) >= sizeof(((SettleShared *) NULL)->period))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid period \"%s\"", period)));

	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* the workers call settle_period: the caller must be allowed to */
	if (SPI_execute("SELECT pg_catalog.has_function_privilege('settle.settle_period(settle.period, text)', 'EXECUTE')",
					true, 1) != SPI_OK_SELECT ||
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "t") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function settle_period")));
	/* the resellers settle_period(period) settles, in its order, and their run ids */
	{
		Oid			types[1] = {TEXTOID};
		Datum		values[1] = {CStringGetTextDatum(period)};

		if (SPI_execute_with_args("SELECT q.reseller_id, q.code, coalesce(q.run_id, 0)"
								  " FROM settle._parallel_queue($1::settle.period) q",
								  1, types, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not list the resellers");
	}
	n = SPI_processed;
	ids = palloc(sizeof(int64) * (n + 1));
	run_ids = palloc(sizeof(int64) * (n + 1));
	codes = palloc(sizeof(char *) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull;

		ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		codes[i] = MemoryContextStrdup(cxt, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
		run_ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
		codes_len += strlen(codes[i]) + 1;
	}
	if (n == 0)
	{
		/* as settle_period: not an error, never silent */
		ereport(WARNING,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no reseller has an agreement in force in %s: nothing was settled", period),
				 errhint("Add resellers and agreements first (settle.add_reseller, settle.set_agreement; docs/finance-guide.md, \"Before you start\").")));
		SPI_finish();
		MemoryContextDelete(cxt);
		PG_RETURN_VOID();
	}
	nworkers = Min((uint32) wanted, n);

	/* the queue */
	size = MAXALIGN(sizeof(SettleShared)) + MAXALIGN(sizeof(SettleItem) * n) + codes_len;
	ls = palloc0(sizeof(LeaderState));
	ls->seg = dsm_create(size, 0);
	dsm_pin_mapping(ls->seg);	/* outlives the transactions committed below */
	sh = dsm_segment_address(ls->seg);
	memset(sh, 0, size);
	sh->database_id = MyDatabaseId;
	sh->session_user_id = GetSessionUserId();
	sh->current_role_id = GetCurrentRoleId();
	sh->role_is_superuser = OidIsValid(sh->current_role_id) && superuser_arg(sh->current_role_id);
	strlcpy(sh->period, period, sizeof(sh->period));
	if (application_name)
		strlcpy(sh->appname, application_name, sizeof(sh->appname));
	sh->n = n;
	pg_atomic_init_u32(&sh->next, 0);
	sh->items_off = MAXALIGN(sizeof(SettleShared));
	sh->codes_off = sh->items_off + MAXALIGN(sizeof(SettleItem) * n);
	items = SHARED_ITEMS(sh);
	codes_len = 0;
	for (i = 0; i < n; i++)
	{
		items[i].reseller_id = ids[i];
		items[i].reserved_run_id = run_ids[i];
		items[i].code_off = codes_len;
		pg_atomic_init_u32(&items[i].state, ITEM_PENDING);
		strcpy(SHARED_CODE(sh, &items[i]), codes[i]);
		codes_len += strlen(codes[i]) + 1;
	}

	/* no lock, no snapshot held while the workers settle */
	SPI_commit();
	MemoryContextSwitchTo(cxt);

	PG_ENSURE_ERROR_CLEANUP(leader_cleanup, PointerGetDatum(ls));
	{
		for (i = 0; i < (uint32) nworkers; i++)
		{
			BackgroundWorker worker;
			BackgroundWorkerHandle *handle;

			memset(&worker, 0, sizeof(worker));
			worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
			worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
			worker.bgw_restart_time = BGW_NEVER_RESTART;
			snprintf(worker.bgw_library_name, BGW_MAXLEN, "settle");
			snprintf(worker.bgw_function_name, BGW_MAXLEN, "settle_settle_worker_main");
			snprintf(worker.bgw_name, BGW_MAXLEN, "settle settle worker for PID %d", MyProcPid);
			snprintf(worker.bgw_type, BGW_MAXLEN, "settle settle worker");
			worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(ls->seg));
			worker.bgw_notify_pid = MyProcPid;
			if (!RegisterDynamicBackgroundWorker(&worker, &handle))
				break;
			ls->handles[ls->nworkers++] = handle;
			launched++;
		}
		if (launched < nworkers)
		{
			if (launched == 0)
				ereport(NOTICE,
						(errmsg("no background worker could be started: settling the %u resellers one after another in this session", n),
						 errhint("Raise max_worker_processes: it must leave room for settle.max_settle_workers (%d) besides the other background workers.",
								 settle_max_settle_workers)));
			else
				ereport(NOTICE,
						(errmsg("only %d of %d background workers could be started: settling with %d", launched, nworkers, launched),
						 errhint("Raise max_worker_processes: it must leave room for settle.max_settle_workers (%d) besides the other background workers.",
								 settle_max_settle_workers)));
		}
		else if (nworkers == 0)
			ereport(NOTICE,
					(errmsg("settling the %u resellers one after another in this session (no workers asked for)", n)));

		/* wait for the workers, reporting each reseller as it ends */
		for (;;)
		{
			int			running = 0;

			CHECK_FOR_INTERRUPTS();
			for (i = 0; i < (uint32) ls->nworkers; i++)
			{
				pid_t		pid;

				if (ls->handles[i] == NULL)
					continue;
				switch (GetBackgroundWorkerPid(ls->handles[i], &pid))
				{
					case BGWH_STOPPED:
						pfree(ls->handles[i]);
						ls->handles[i] = NULL;
						break;
					case BGWH_POSTMASTER_DIED:
						ereport(FATAL,
								(errcode(ERRCODE_ADMIN_SHUTDOWN),
								 errmsg("postmaster exited during settle_period_parallel")));
						break;
					default:
						running++;
				}
			}
			report_items(sh, false);
			if (running == 0)
				break;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		report_items(sh, true);

		/* what no worker took (none started, or they died): here */
		for (i = 0; i < n && pg_atomic_read_u32(&items[i].state) != ITEM_PENDING; i++)
			;
		if (i < n)
		{
			if (launched > 0)
				ereport(NOTICE,
						(errmsg("the workers ended with resellers left in the queue: settling them in this session")));
			in_parallel_settlement = true;
			leader_settle_serially(sh, cxt);
			in_parallel_settlement = false;
		}
		report_items(sh, true);
	}
	PG_END_ENSURE_ERROR_CLEANUP(leader_cleanup, PointerGetDatum(ls));

	initStringInfo(&names);
	initStringInfo(&detail);
	for (i = 0; i < n; i++)
	{
		if (pg_atomic_read_u32(&items[i].state) != ITEM_FAILED)
			continue;
		if (failed++ == 0)
			strlcpy(first_state, items[i].sqlstate, sizeof(first_state));
		else
		{
			appendStringInfoString(&names, ", ");
			appendStringInfoChar(&detail, '\n');
		}
		appendStringInfoString(&names, SHARED_CODE(sh, &items[i]));
		appendStringInfo(&detail, "%s: %s (SQLSTATE %s)", SHARED_CODE(sh, &items[i]), items[i].message, items[i].sqlstate);
	}
	/* the lineage upkeep settle_period left to the end, once */
	for (i = 0; i < n; i++)
		if (pg_atomic_read_u32(&items[i].state) == ITEM_DONE)
			written += items[i].written;
	leader_cleanup(0, PointerGetDatum(ls));
	if (written > 0)
	{
		Oid			types[1] = {INT8OID};
		Datum		values[1] = {Int64GetDatum(written)};

		if (SPI_execute_with_args("SELECT settle._lineage_upkeep($1)", 1, types, values, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "settle._lineage_upkeep failed");
	}
	SPI_finish();
	if (failed > 0)
		ereport(ERROR,
				(errcode(MAKE_SQLSTATE(first_state[0], first_state[1], first_state[2], first_state[3], first_state[4])),
				 errmsg("settle_period_parallel: %d of %u resellers failed in %s: %s", failed, n, period, names.data),
				 errdetail("%s", detail.data),
				 errhint("The other resellers' runs are committed.  Settle the ones named again with settle.settle_period(period, reseller) once the cause is fixed.")));
	MemoryContextDelete(cxt);
	PG_RETURN_VOID();
}
