/*
 * worker.c — the settle ingest launcher and its pull workers.
 *
 * The launcher is a background worker registered from _PG_init when settle
 * is in shared_preload_libraries; it serves the database named by
 * settle.database and the postmaster restarts it after a crash
 * (bgw_restart_time).  Its loop (pg_cron's model): wait on the latch
 * (exiting on postmaster death), reload settings on SIGHUP, exit on SIGTERM;
 * mark runs whose process is gone as failed (57P01); find the streams that
 * are due and start a dynamic background worker for each, at most
 * settle.max_pull_workers at a time.  A stream is one account of one
 * connector: the connector's own, or one of its member accounts, and for a
 * DAILY connector fanned out over its billing cycle (settle.connector_days)
 * one day of it; each has its own runs and checkpoints, so streams are
 * independent and are pulled concurrently.  The launcher is told when one of its workers ends
 * (bgw_notify_pid) and then starts the next due stream at once.
 *
 * A pull worker pulls its stream once with the same code as
 * settle.ingest_now (ingest_run_stream), one committed page at a time, and
 * exits.  Every pull worker and settle.ingest_now share one request rate
 * per AccessKey (ingest_rate.c), so concurrent streams of one key together
 * stay within the provider's limit.  One pull per stream: the launcher never
 * starts a stream it has a worker for, and the pull itself takes the
 * stream's lock (see ingest_run_stream), which also keeps settle.ingest_now
 * of the connector out while any of its streams is pulled.
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "ingest.h"

PGDLLEXPORT void settle_worker_main(Datum main_arg);
PGDLLEXPORT void settle_pull_worker_main(Datum main_arg);

/* Largest settle.max_pull_workers (the launcher's table of workers). */
#define MAX_PULL_WORKERS 64
/* Longest member account id (digits; checked by the config trigger) */
#define ACCOUNT_LEN 40

/* A stream: what a pull worker is given (bgw_main_arg, bgw_extra). */
typedef struct Stream
{
	int64		connector_id;
	char		account[ACCOUNT_LEN];	/* "" = the connector's own */
	char		day[11];		/* YYYY-MM-DD of a DAILY fan-out, "" = none */
} Stream;

/*
 * The launcher's pull workers (launcher-local).  An entry outlives its
 * worker by a naptime: a stream is not started again sooner, so a stream
 * that was skipped (busy) or failed at once is not restarted in a loop.
 */
typedef struct PullWorker
{
	bool		in_use;
	bool		running;
	Stream		stream;
	char		key[NAMEDATALEN];	/* its connector's secret (AccessKey) */
	TimestampTz started_at;
	BackgroundWorkerHandle *handle;
} PullWorker;

#define WORKER_ENTRIES (2 * MAX_PULL_WORKERS)

/* A due stream, as the launcher sees it. */
typedef struct DueStream
{
	Stream		stream;
	char		key[NAMEDATALEN];	/* its connector's secret_name ("" none): one AccessKey */
	bool		started;
} DueStream;

static PullWorker workers[WORKER_ENTRIES];

void
settle_worker_register(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "settle");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "settle_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "settle ingest launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "settle ingest launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * Whether the extension in this database is the version of this library.
 * Between installing a new settle package (and restarting) and ALTER
 * EXTENSION settle UPDATE the tables are still the old version's: the
 * launcher pulls nothing and says so once.
 */
static bool
library_matches(const char *installed)
{
	static bool said = false;

	if (strcmp(installed, SETTLE_VERSION) == 0)
	{
		said = false;
		return true;
	}
	if (!said)
		ereport(LOG,
				(errmsg("settle ingest launcher: database \"%s\" has settle %s, this library is %s; nothing is pulled until ALTER EXTENSION settle UPDATE",
						get_database_name(MyDatabaseId), installed, SETTLE_VERSION)));
	said = true;
	return false;
}

/*
 * The streams due for a pull, least recently pulled first; empty when the
 * extension is absent or of another version than this library.  A stream
 * is due when it was never pulled, when its
 * last run succeeded more than the connector's poll_interval ago, or failed
 * more than settle.worker_retry_after_ms ago (a run still running is not
 * due).
 */
static List *
due_streams(MemoryContext cxt)
{
	List	   *streams = NIL;
	uint64		i;
	int			rc;
	char	   *sql;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'settle'", true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1 &&
		library_matches(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)))
	{
		/* runs whose process died (a crash, a kill) are failed, and so due again */
		ingest_fail_orphaned_runs();
		/* a DAILY fan-out connector's streams: each account and each day */
		sql = psprintf("SELECT c.connector_id, coalesce(s.account_id, ''), coalesce(d.day::text, ''),"
					   " coalesce(c.secret_name, '') FROM settle.connector c"
					   " CROSS JOIN LATERAL (SELECT NULL::text AS account_id, 0::bigint AS ord UNION ALL"
					   "  SELECT m.value, m.ordinality FROM pg_catalog.jsonb_array_elements_text(CASE WHEN"
					   "  pg_catalog.jsonb_typeof(c.config->'member_accounts') = 'array'"
					   "  THEN c.config->'member_accounts' ELSE '[]' END) WITH ORDINALITY m) s"
					   " CROSS JOIN LATERAL (SELECT NULL::date AS day"
					   "  WHERE NOT EXISTS (SELECT 1 FROM settle.connector_days(c.kind, c.config)) UNION ALL"
					   "  SELECT x FROM settle.connector_days(c.kind, c.config) x) d"
					   " LEFT JOIN LATERAL (SELECT r.status, r.started_at FROM settle.ingest_run r"
					   "  WHERE r.connector_id = c.connector_id AND r.account_id IS NOT DISTINCT FROM s.account_id"
					   "  AND r.billing_date IS NOT DISTINCT FROM d.day"
					   "  ORDER BY r.started_at DESC, r.ingest_run_id DESC LIMIT 1) l ON true"
					   " WHERE c.enabled AND (l.status IS NULL"
					   "  OR (l.status = 'succeeded' AND l.started_at + c.poll_interval <= pg_catalog.now())"
					   "  OR (l.status = 'failed' AND l.started_at + %d * interval '1 millisecond' <= pg_catalog.now()))"
					   " ORDER BY l.started_at NULLS FIRST, c.connector_id, s.ord, d.day", settle_worker_retry_after_ms);
		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read settle.connector");
		for (i = 0; i < SPI_processed; i++)
		{
			DueStream  *s = MemoryContextAllocZero(cxt, sizeof(DueStream));
			bool		isnull;
			MemoryContext old;

			s->stream.connector_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
			strlcpy(s->stream.account, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2), ACCOUNT_LEN);
			strlcpy(s->stream.day, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3), sizeof(s->stream.day));
			strlcpy(s->key, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 4), NAMEDATALEN);
			old = MemoryContextSwitchTo(cxt);
			streams = lappend(streams, s);
			MemoryContextSwitchTo(old);
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return streams;
}

/*
 * Notes the workers that ended and frees the entries a naptime old; returns
 * how many workers are running.
 */
static int
reap_workers(void)
{
	int			running = 0;
	int			i;
	TimestampTz now = GetCurrentTimestamp();

	for (i = 0; i < WORKER_ENTRIES; i++)
	{
		pid_t		pid;

		if (!workers[i].in_use)
			continue;
		if (workers[i].running)
		{
			switch (GetBackgroundWorkerPid(workers[i].handle, &pid))
			{
				case BGWH_STOPPED:
					pfree(workers[i].handle);
					workers[i].handle = NULL;
					workers[i].running = false;
					break;
				case BGWH_POSTMASTER_DIED:
					proc_exit(1);
					break;
				default:
					running++;
			}
		}
		if (!workers[i].running &&
			TimestampDifferenceExceeds(workers[i].started_at, now, settle_worker_naptime_ms))
			workers[i].in_use = false;
	}
	return running;
}

static bool
stream_recent(Stream *s)
{
	int			i;

	for (i = 0; i < WORKER_ENTRIES; i++)
		if (workers[i].in_use && workers[i].stream.connector_id == s->connector_id &&
			strcmp(workers[i].stream.account, s->account) == 0 &&
			strcmp(workers[i].stream.day, s->day) == 0)
			return true;
	return false;
}

/* The pull workers running for streams of a secret (one AccessKey). */
static int
key_running(const char *key)
{
	int			i;
	int			n = 0;

	for (i = 0; i < WORKER_ENTRIES; i++)
		if (workers[i].in_use && workers[i].running && strcmp(workers[i].key, key) == 0)
			n++;
	return n;
}

/*
 * The next due stream to start: of the secrets (AccessKeys) with the fewest
 * pull workers running, the first stream in the list (least recently
 * pulled).  So the workers share out over the keys, each pulling at its
 * own rate: the streams of one key (a DAILY fan-out has one per day and
 * account) never fill them all while another key's streams wait.  NULL
 * when none is left.
 */
static DueStream *
next_stream(List *streams)
{
	DueStream  *best = NULL;
	int			bestn = INT_MAX;
	ListCell   *lc;

	foreach(lc, streams)
	{
		DueStream  *d = lfirst(lc);
		int			n;

		if (d->started || stream_recent(&d->stream))
			continue;
		n = key_running(d->key);
		if (n < bestn)
		{
			best = d;
			bestn = n;
			if (n == 0)
				break;
		}
	}
	return best;
}

/* Starts a pull worker for a stream; false when no worker can be started. */
static bool
start_worker(DueStream *d)
{
	Stream	   *s = &d->stream;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext old;
	int			i;

	for (i = 0; i < WORKER_ENTRIES && workers[i].in_use; i++)
		;
	if (i == WORKER_ENTRIES)
		return false;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "settle");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "settle_pull_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "settle ingest worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "settle ingest worker");
	StaticAssertStmt(sizeof(Stream) <= BGW_EXTRALEN, "a stream must fit in bgw_extra");
	memcpy(worker.bgw_extra, s, sizeof(Stream));
	worker.bgw_notify_pid = MyProcPid;
	old = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		MemoryContextSwitchTo(old);
		return false;
	}
	MemoryContextSwitchTo(old);
	workers[i].in_use = true;
	workers[i].running = true;
	workers[i].started_at = GetCurrentTimestamp();
	workers[i].stream = *s;
	strlcpy(workers[i].key, d->key, NAMEDATALEN);
	workers[i].handle = handle;
	return true;
}

void
settle_worker_main(Datum main_arg)
{
	bool		no_slot_logged = false;
	MemoryContext loopcxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(settle_database, NULL, 0);
	pgstat_report_appname("settle ingest launcher");
	/*
	 * Its one query (the due streams) runs at every worker's end: compiling
	 * it (its estimated cost passes jit_above_cost with many streams) costs
	 * more than it ever saves.
	 */
	SetConfigOption("jit", "off", PGC_USERSET, PGC_S_SESSION);
	elog(LOG, "settle ingest launcher started for database \"%s\"", settle_database);
	loopcxt = AllocSetContextCreate(TopMemoryContext, "settle ingest launcher", ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		int			running;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			elog(LOG, "settle ingest launcher reloaded its settings (naptime %d ms, %d pull workers)",
				 settle_worker_naptime_ms, settle_max_pull_workers);
		}

		running = reap_workers();
		if (running < settle_max_pull_workers)
		{
			List	   *streams;

			pgstat_report_activity(STATE_RUNNING, "settle ingest: looking for due streams");
			streams = due_streams(loopcxt);
			while (running < settle_max_pull_workers)
			{
				DueStream  *s = next_stream(streams);

				if (s == NULL)
					break;
				s->started = true;
				if (!start_worker(s))
				{
					if (!no_slot_logged)
						ereport(LOG,
								(errmsg("settle ingest launcher could not start a pull worker"),
								 errhint("Raise max_worker_processes: it must leave room for settle.max_pull_workers (%d) besides the other background workers.",
										 settle_max_pull_workers)));
					no_slot_logged = true;
					break;
				}
				no_slot_logged = false;
				running++;
			}
			MemoryContextReset(loopcxt);
			pgstat_report_stat(true);
			pgstat_report_activity(STATE_IDLE, NULL);
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 settle_worker_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* A pull worker: pulls its stream once and exits. */
void
settle_pull_worker_main(Datum main_arg)
{
	Stream		s;

	memcpy(&s, MyBgworkerEntry->bgw_extra, sizeof(Stream));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(settle_database, NULL, 0);
	pgstat_report_appname("settle ingest worker");

	/*
	 * Pages commit without waiting for their WAL to reach disk.  A page
	 * holds its line groups' locks until it commits, so a flush per page
	 * would hold up every writer of those groups on the disk.  A crash can lose the
	 * last pages committed; each went with its checkpoint, so the next pull
	 * resumes before them and fetches them again: no gap, no duplicate.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_USERSET, PGC_S_SESSION);
	(void) ingest_run_stream(s.connector_id, s.account[0] ? s.account : NULL, s.day[0] ? s.day : NULL);
	pgstat_report_stat(true);
	proc_exit(0);
}
