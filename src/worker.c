/*
 * worker.c — the settle ingest background worker.
 *
 * Registered from _PG_init when settle is in shared_preload_libraries; serves
 * the database named by settle.database.  The canonical loop: wait on the
 * latch (exiting on postmaster death), reload settings on SIGHUP, exit on
 * SIGTERM (die), and pull every connector that is due with the same code as
 * settle.ingest_now, one committed page at a time.  At start-up it marks runs
 * left unfinished by a crash as failed; their checkpoints let the next pull
 * resume.  The postmaster restarts it after a crash (bgw_restart_time).
 */
#include "postgres.h"

#include "access/xact.h"
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
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "ingest.h"

extern int	settle_worker_retry_after_ms;

PGDLLEXPORT void settle_worker_main(Datum main_arg);

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
	snprintf(worker.bgw_name, BGW_MAXLEN, "settle ingest worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "settle ingest worker");
	RegisterBackgroundWorker(&worker);
}

/* Ids of connectors due for a pull; empty when the extension is absent. */
static List *
due_connectors(void)
{
	List	   *ids = NIL;
	uint64		i;
	int			rc;
	char	   *sql;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'settle'", true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
	{
		static bool orphans_done = false;

		if (!orphans_done)
		{
			ingest_fail_orphaned_runs();
			orphans_done = true;
		}
		sql = psprintf("SELECT c.connector_id FROM settle.connector c"
					   " LEFT JOIN LATERAL (SELECT r.status, r.started_at FROM settle.ingest_run r"
					   "  WHERE r.connector_id = c.connector_id ORDER BY r.started_at DESC, r.ingest_run_id DESC LIMIT 1) l ON true"
					   " WHERE c.enabled AND (l.status IS NULL"
					   "  OR (l.status = 'succeeded' AND l.started_at + c.poll_interval <= pg_catalog.now())"
					   "  OR (l.status = 'failed' AND l.started_at + %d * interval '1 millisecond' <= pg_catalog.now()))"
					   " ORDER BY c.connector_id", settle_worker_retry_after_ms);
		if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read settle.connector");
		for (i = 0; i < SPI_processed; i++)
		{
			bool		isnull;

			ids = lappend(ids, (void *) (intptr_t)
						  DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull)));
		}
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return ids;
}

void
settle_worker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnection(settle_database, NULL, 0);
	pgstat_report_appname("settle ingest worker");
	elog(LOG, "settle ingest worker started for database \"%s\"", settle_database);

	for (;;)
	{
		List	   *ids;
		ListCell   *lc;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			elog(LOG, "settle ingest worker reloaded its settings (naptime %d ms)",
				 settle_worker_naptime_ms);
		}

		pgstat_report_activity(STATE_RUNNING, "settle ingest: looking for due connectors");
		ids = due_connectors();
		foreach(lc, ids)
		{
			int64		id = (int64) (intptr_t) lfirst(lc);

			CHECK_FOR_INTERRUPTS();
			(void) ingest_run_connector(id, NULL, true, NULL);
		}
		list_free(ids);
		pgstat_report_stat(true);
		pgstat_report_activity(STATE_IDLE, NULL);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 settle_worker_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
