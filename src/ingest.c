/*
 * ingest.c — the ingestion orchestrator: one pull of one connector, run by
 * run, page by page, exactly once.
 *
 * ingest_run_connector is shared by settle.ingest_now and the background
 * worker.  It takes the connector's pull lock, reads the connector and hands
 * each account (the connector's own, then each member account) to the
 * connector's kind (the table connector_kinds below; the pulls themselves
 * live in ingest_bss.c and ingest_focus.c).  A pull stores each page in one
 * transaction together with its raw copy, its normalized lines, their
 * exceptions, the run's counters and the connector's checkpoint; the worker
 * commits each page, settle.ingest_now runs each page in a subtransaction of
 * the caller's transaction.  A failing page rolls back alone and ends the
 * run as failed, with the HTTP status, SQLSTATE, message and the provider's
 * Code, Message and RequestId on the run.
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "settle.h"
#include "acs3.h"
#include "ingest.h"

PG_FUNCTION_INFO_V1(settle_ingest_now_name);
PG_FUNCTION_INFO_V1(settle_ingest_now_id);
PG_FUNCTION_INFO_V1(settle_connector_endpoint_check);

IngestFailure ingest_failure;

/* ---------------------------------------------------------------------
 * Page transactions: committed pages in the worker, subtransactions in SQL
 * --------------------------------------------------------------------- */

/*
 * A step of a run outside its pages (the run row, its outcome, the pull
 * lock): its own transaction in the worker, the caller's from SQL; SPI is
 * connected between step_begin and step_end.
 */
static void
step_begin(bool worker)
{
	if (worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

static void
step_end(bool worker)
{
	SPI_finish();
	if (worker)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
}

/*
 * A page's counts stand once the page is stored; a failed page takes its
 * counts back with it (requests and retries stand: they happened).
 */
static void
counts_stored(IngestState *st)
{
	st->stored.pages = st->pages;
	st->stored.seen = st->lines_seen;
	st->stored.new = st->lines_new;
	st->stored.revised = st->lines_revised;
	st->stored.unchanged = st->lines_unchanged;
	st->stored.invalid = st->lines_invalid;
	st->stored.withdrawn = st->lines_withdrawn;
	st->stored.exceptions = st->exceptions_opened;
}

static void
counts_restore(IngestState *st)
{
	st->pages = st->stored.pages;
	st->lines_seen = st->stored.seen;
	st->lines_new = st->stored.new;
	st->lines_revised = st->stored.revised;
	st->lines_unchanged = st->stored.unchanged;
	st->lines_invalid = st->stored.invalid;
	st->lines_withdrawn = st->stored.withdrawn;
	st->exceptions_opened = st->stored.exceptions;
}

/*
 * Opens a page: a transaction of its own in the worker, a subtransaction of
 * the caller's from SQL; SPI connected; the page's memory context current.
 * A page that raises is rolled back by run_account's handler.
 */
void
ingest_page_begin(RunCtx *rc, PageTx *tx)
{
	if (rc->worker)
		step_begin(true);
	else
	{
		tx->oldcxt = CurrentMemoryContext;
		tx->oldowner = CurrentResourceOwner;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(tx->oldcxt);
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
	}
	tx->callercxt = MemoryContextSwitchTo(rc->pagecxt);
}

/* Stores the page: commits it, its counts stand, its memory is freed. */
void
ingest_page_end(RunCtx *rc, PageTx *tx)
{
	MemoryContextSwitchTo(tx->callercxt);
	if (rc->worker)
		step_end(true);
	else
	{
		SPI_finish();
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(tx->oldcxt);
		CurrentResourceOwner = tx->oldowner;
	}
	counts_stored(rc->st);
	MemoryContextReset(rc->pagecxt);
}

/* ---------------------------------------------------------------------
 * Small SPI helpers
 * --------------------------------------------------------------------- */

/*
 * Runs one of ingestion's fixed statements (string literals: the pointer
 * identifies the statement), planned once per backend and kept.
 */
void
ingest_spi_exec(const char *sql, int nargs, Oid *types, Datum *vals, const char *nulls, int expect)
{
	static struct
	{
		const char *sql;
		SPIPlanPtr	plan;
	}			plans[16];
	SPIPlanPtr	plan = NULL;
	int			rc;
	int			i;

	for (i = 0; i < lengthof(plans) && plans[i].sql != NULL; i++)
		if (plans[i].sql == sql)
		{
			plan = plans[i].plan;
			break;
		}
	if (plan == NULL)
	{
		plan = SPI_prepare(sql, nargs, types);
		if (plan == NULL)
			elog(ERROR, "settle ingest: could not prepare: %s", sql);
		if (i < lengthof(plans))
		{
			SPI_keepplan(plan);
			plans[i].sql = sql;
			plans[i].plan = plan;
		}
	}
	rc = SPI_execute_plan(plan, vals, nulls, false, 0);

	if (rc != expect)
		elog(ERROR, "settle ingest: unexpected SPI result %d for: %s", rc, sql);
}

Datum
ingest_text_or_null(const char *s, char *nullflag)
{
	if (s == NULL)
	{
		*nullflag = 'n';
		return (Datum) 0;
	}
	*nullflag = ' ';
	return CStringGetTextDatum(s);
}

void
ingest_run_update_counts(IngestState *st)
{
	Oid			t[11] = {INT8OID, INT4OID, INT4OID, INT4OID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID, INT4OID, INT8OID};
	Datum		v[11];

	v[0] = Int64GetDatum(st->run_id);
	v[1] = Int32GetDatum(st->requests);
	v[2] = Int32GetDatum(st->retries);
	v[3] = Int32GetDatum(st->pages);
	v[4] = Int64GetDatum(st->lines_seen);
	v[5] = Int64GetDatum(st->lines_new);
	v[6] = Int64GetDatum(st->lines_revised);
	v[7] = Int64GetDatum(st->lines_unchanged);
	v[8] = Int64GetDatum(st->lines_invalid);
	v[9] = Int32GetDatum(st->exceptions_opened);
	v[10] = Int64GetDatum(st->lines_withdrawn);
	ingest_spi_exec("UPDATE settle.ingest_run SET requests = $2, retries = $3, pages = $4,"
			 " lines_seen = $5, lines_new = $6, lines_revised = $7, lines_unchanged = $8,"
			 " lines_invalid = $9, exceptions_opened = $10, lines_withdrawn = $11 WHERE ingest_run_id = $1",
			 11, t, v, NULL, SPI_OK_UPDATE);
}

/* Sleeps ms milliseconds of wall time (a latch set early does not shorten it). */
void
ingest_sleep_ms(long ms)
{
	ingest_sleep_until(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms));
}

/* Sleeps until a time (interrupts are served every 100 ms at most). */
void
ingest_sleep_until(TimestampTz end)
{
	for (;;)
	{
		int64		left = end - GetCurrentTimestamp();

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) Min((left + 999) / 1000, 100), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Stores a reply as it came (with its SHA-256); returns its raw_page_id. */
int64
ingest_insert_raw_page(IngestState *st, const char *request, long status,
					   const char *body, size_t len, TimestampTz requested_at)
{
	Oid			t[7] = {INT8OID, INT8OID, TEXTOID, INT4OID, BYTEAOID, TIMESTAMPTZOID, BYTEAOID};
	Datum		v[7];
	bytea	   *b = palloc(VARHDRSZ + len);
	bytea	   *h = palloc(VARHDRSZ + 32);
	bool		isnull;

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), body, len);
	SET_VARSIZE(h, VARHDRSZ + 32);
	acs3_sha256(body, len, (uint8 *) VARDATA(h));
	v[0] = Int64GetDatum(st->connector_id);
	v[1] = Int64GetDatum(st->run_id);
	v[2] = CStringGetTextDatum(request);
	v[3] = Int32GetDatum((int32) status);
	v[4] = PointerGetDatum(b);
	v[5] = TimestampTzGetDatum(requested_at);
	v[6] = PointerGetDatum(h);
	ingest_spi_exec("INSERT INTO settle.raw_page (connector_id, ingest_run_id, request, http_status,"
					" body, body_sha256, requested_at) VALUES ($1, $2, $3::jsonb, $4, $5, $7, $6)"
					" RETURNING raw_page_id", 7, t, v, NULL, SPI_OK_INSERT_RETURNING);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* ---------------------------------------------------------------------
 * Checkpoints
 * --------------------------------------------------------------------- */

/*
 * The token to resume from, or NULL to start at the first page; with it the
 * pages done and the first page of the pass in progress (0 when unknown).
 */
char *
ingest_checkpoint_start(IngestState *st, const char *scope, int *pages_done, int64 *pass_first_page)
{
	Oid			t[2] = {INT8OID, TEXTOID};
	Datum		v[2];
	char	   *token = NULL;

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = CStringGetTextDatum(scope);
	*pages_done = 0;
	*pass_first_page = 0;
	if (SPI_execute_with_args("SELECT next_token, complete, pages_done, pass_first_page FROM settle.ingest_checkpoint"
							  " WHERE connector_id = $1 AND scope = $2 FOR UPDATE",
							  2, t, v, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.ingest_checkpoint");
	if (SPI_processed == 1)
	{
		bool		isnull;
		bool		complete = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));

		if (!complete)
		{
			Datum		first;

			token = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
			*pages_done = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
			first = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull);
			if (!isnull)
				*pass_first_page = DatumGetInt64(first);
		}
	}
	return token;
}

void
ingest_checkpoint_save(IngestState *st, const char *scope, const char *next_token, int pages_done,
				int64 pass_first_page)
{
	Oid			t[8] = {INT8OID, TEXTOID, TEXTOID, INT4OID, INT8OID, TEXTOID, INT8OID, TEXTOID};
	Datum		v[8];
	char		n[8] = "        ";
	bool		complete = (next_token == NULL || next_token[0] == '\0');

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = CStringGetTextDatum(scope);
	v[2] = complete ? (Datum) 0 : CStringGetTextDatum(next_token);
	if (complete)
		n[2] = 'n';
	v[3] = Int32GetDatum(pages_done);
	v[4] = Int64GetDatum(st->run_id);
	v[5] = ingest_text_or_null(st->account_id, &n[5]);
	v[6] = Int64GetDatum(pass_first_page);
	if (pass_first_page == 0 || complete)
		n[6] = 'n';
	v[7] = ingest_text_or_null(st->billing_date, &n[7]);
	ingest_spi_exec(complete ?
			 "INSERT INTO settle.ingest_checkpoint AS k (connector_id, scope, next_token, pages_done, complete,"
			 " last_run_id, account_id, pass_first_page, billing_date)"
			 " VALUES ($1, $2, $3, $4, true, $5, $6, $7, $8::date) ON CONFLICT (connector_id, scope) DO UPDATE"
			 " SET next_token = NULL, pages_done = $4, complete = true, last_run_id = $5,"
			 " pass_first_page = $7, updated_at = pg_catalog.clock_timestamp()" :
			 "INSERT INTO settle.ingest_checkpoint AS k (connector_id, scope, next_token, pages_done, complete,"
			 " last_run_id, account_id, pass_first_page, billing_date)"
			 " VALUES ($1, $2, $3, $4, false, $5, $6, $7, $8::date) ON CONFLICT (connector_id, scope) DO UPDATE"
			 " SET next_token = $3, pages_done = $4, complete = false, last_run_id = $5,"
			 " pass_first_page = $7, updated_at = pg_catalog.clock_timestamp()",
			 8, t, v, n, SPI_OK_INSERT);
}

/* ---------------------------------------------------------------------
 * The run
 * --------------------------------------------------------------------- */

/* The kinds of connector: a value of settle.connector.kind's CHECK each. */
static const ConnectorKind connector_kinds[] = {
	/* name, needs a secret, reads its config, pulls one account */
	{"alibaba_bss", true, bss_configure, bss_pull},
	{"focus_csv", false, focus_csv_configure, focus_csv_pull},
	{"focus_bucket", true, bucket_configure, bucket_pull},
};

static const ConnectorKind *
connector_kind(const char *name)
{
	int			i;

	for (i = 0; i < lengthof(connector_kinds); i++)
		if (strcmp(connector_kinds[i].name, name) == 0)
			return &connector_kinds[i];
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("connector kind \"%s\" is not supported by this library", name)));
}

static void
load_connector(int64 id, Connector *c, MemoryContext cxt)
{
	Oid			t[1] = {INT8OID};
	Datum		v[1];
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;

	v[0] = Int64GetDatum(id);
	if (SPI_execute_with_args("SELECT name, kind, endpoint, secret_name, config->>'billing_cycle'"
							  " FROM settle.connector WHERE connector_id = $1",
							  1, t, v, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.connector");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("connector " INT64_FORMAT " does not exist", id)));
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(cxt);
	c->id = id;
	c->name = SPI_getvalue(tup, td, 1);
	c->kind = connector_kind(SPI_getvalue(tup, td, 2));
	c->endpoint = SPI_getvalue(tup, td, 3);
	c->secret_name = SPI_getvalue(tup, td, 4);
	c->cycle = SPI_getvalue(tup, td, 5);
	MemoryContextSwitchTo(old);

	/* member accounts, each pulled as a run of its own (checked on insert) */
	if (SPI_execute_with_args("SELECT m.value FROM settle.connector c,"
							  " pg_catalog.jsonb_array_elements_text(CASE WHEN"
							  " pg_catalog.jsonb_typeof(c.config->'member_accounts') = 'array'"
							  " THEN c.config->'member_accounts' ELSE '[]' END) WITH ORDINALITY m"
							  " WHERE c.connector_id = $1 ORDER BY m.ordinality",
							  1, t, v, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.connector");
	c->members = NIL;
	{
		uint64		i;

		old = MemoryContextSwitchTo(cxt);
		for (i = 0; i < SPI_processed; i++)
			c->members = lappend(c->members, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
		MemoryContextSwitchTo(old);
	}
}

/* The billing cycle to pull by default: the current month in UTC+8. */
static char *
default_cycle(void)
{
	pg_time_t	now = (pg_time_t) time(NULL) + 8 * 3600;
	struct pg_tm *tm = pg_gmtime(&now);
	char		buf[16];

	pg_strftime(buf, sizeof(buf), "%Y-%m", tm);
	return pstrdup(buf);
}

static bool
valid_cycle(const char *s)
{
	return s && strlen(s) == 7 && isdigit((unsigned char) s[0]) && isdigit((unsigned char) s[1]) &&
		isdigit((unsigned char) s[2]) && isdigit((unsigned char) s[3]) && s[4] == '-' &&
		((s[5] == '0' && s[6] >= '1' && s[6] <= '9') || (s[5] == '1' && s[6] >= '0' && s[6] <= '2'));
}

/* ---------------------------------------------------------------------
 * One pull per stream at a time
 *
 * A stream is one account of one connector, and for a DAILY connector
 * fanned out over its billing cycle one day of it.  settle.ingest_now pulls every
 * stream of a connector and takes the connector's pull lock exclusively, at
 * transaction level (held until the caller's transaction ends, as its pages
 * are).  A pull worker pulls one stream: it takes the connector's lock
 * shared and the stream's lock exclusively, at session level (released
 * after the pull).  So pull workers of different streams of a connector run
 * together, two pulls of one stream never, and settle.ingest_now never runs
 * beside a pull worker of its connector.  Nobody waits: a lock not granted
 * at once is a refusal (settle.ingest_now) or a skip (a pull worker).
 * --------------------------------------------------------------------- */

#define PULL_LOCK_CLASS 0x5E771E00
#define STREAM_LOCK_CLASS 0x5E771E01

/* The stream lock's second key: the connector, the account and the day, hashed. */
static Datum
stream_lock_key(int64 connector_id, const char *account, const char *day)
{
	uint32		h = hash_bytes_uint32((uint32) connector_id);

	if (account)
		h = hash_combine(h, hash_bytes((const unsigned char *) account, strlen(account)));
	if (day)
		h = hash_combine(h, hash_bytes((const unsigned char *) day, strlen(day)) ^ 0x5E77);
	return Int32GetDatum((int32) h);
}

static bool
pull_lock_try(int64 connector_id, bool worker, const char *account, const char *day)
{
	Datum		k1 = Int32GetDatum(PULL_LOCK_CLASS);
	Datum		k2 = Int32GetDatum((int32) connector_id);

	if (!worker)
		return DatumGetBool(DirectFunctionCall2(pg_try_advisory_xact_lock_int4, k1, k2));
	if (!DatumGetBool(DirectFunctionCall2(pg_try_advisory_lock_shared_int4, k1, k2)))
		return false;
	if (DatumGetBool(DirectFunctionCall2(pg_try_advisory_lock_int4, Int32GetDatum(STREAM_LOCK_CLASS),
										 stream_lock_key(connector_id, account, day))))
		return true;
	(void) DirectFunctionCall2(pg_advisory_unlock_shared_int4, k1, k2);
	return false;
}

static void
pull_lock_release(int64 connector_id, const char *account, const char *day)
{
	(void) DirectFunctionCall2(pg_advisory_unlock_int4, Int32GetDatum(STREAM_LOCK_CLASS),
							   stream_lock_key(connector_id, account, day));
	(void) DirectFunctionCall2(pg_advisory_unlock_shared_int4, Int32GetDatum(PULL_LOCK_CLASS),
							   Int32GetDatum((int32) connector_id));
}

/* Raises 55P03 naming the connector and the process that pulls it. */
static void
pull_lock_refuse(int64 connector_id, const char *name)
{
	Oid			t[2] = {INT8OID, INT8OID};
	Datum		v[2];
	char	   *holder = NULL;

	v[0] = Int64GetDatum((int64) PULL_LOCK_CLASS);
	v[1] = Int64GetDatum((int64) (uint32) (int32) connector_id);
	if (SPI_execute_with_args("SELECT a.pid::text || ' (' || CASE WHEN a.backend_type = 'client backend'"
							  " THEN 'session of ' || coalesce(a.usename::text, '?') || ', application \"'"
							  " || coalesce(a.application_name, '') || '\"' ELSE a.backend_type END"
							  " || ', since ' || coalesce(a.xact_start, a.backend_start)::text || ')'"
							  " FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid"
							  " WHERE l.locktype = 'advisory' AND l.classid = $1::oid AND l.objid = $2::oid"
							  " AND l.objsubid = 2 AND l.granted AND l.pid <> pg_catalog.pg_backend_pid() LIMIT 1",
							  2, t, v, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
		holder = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	ereport(ERROR,
			(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
			 errmsg("connector \"%s\" is being pulled by another process", name),
			 holder ? errdetail("Process %s holds the connector's pull lock.", holder)
			 : errdetail("Another process holds the connector's pull lock."),
			 errhint("One pull per connector runs at a time: wait for that pull to end (see settle.ingest_run), then pull again.")));
}

/* ---------------------------------------------------------------------
 * Traces of settle.ingest_now runs
 *
 * settle.ingest_now writes its run row in the caller's transaction, which a
 * killed backend (SIGKILL, a crash) takes with it.  So each run also leaves
 * a file, pg_settle/run-<id> in the data directory, written before the pull
 * and removed when the transaction ends normally (commit, or an error the
 * caller sees).  A file whose backend is gone, and whose run row never
 * committed, is a pull that died: the next pull (or the worker at start-up)
 * records it as a failed run with 57P01.
 * --------------------------------------------------------------------- */

#define TRACE_DIR "pg_settle"

static List *trace_end = NIL;	/* unlinked when the transaction ends */
static List *trace_commit = NIL;	/* unlinked when it commits */
static bool trace_registered = false;

static void
trace_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			foreach(lc, trace_end)
				(void) unlink((char *) lfirst(lc));
			foreach(lc, trace_commit)
				(void) unlink((char *) lfirst(lc));
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			/* a dying backend keeps its traces: its pull did not end */
			if (!proc_exit_inprogress && !ProcDiePending)
				foreach(lc, trace_end)
					(void) unlink((char *) lfirst(lc));
			break;
		case XACT_EVENT_PREPARE:
			break;
		default:
			return;
	}
	list_free_deep(trace_end);
	list_free_deep(trace_commit);
	trace_end = trace_commit = NIL;
}

static void
trace_remember(List **list, const char *path)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (!trace_registered)
	{
		RegisterXactCallback(trace_xact_callback, NULL);
		trace_registered = true;
	}
	*list = lappend(*list, pstrdup(path));
	MemoryContextSwitchTo(old);
}

static void
trace_write(int64 run_id, int64 connector_id, TimestampTz started_at, const char *cycle,
			const char *account, const char *day)
{
	char		path[MAXPGPATH];
	FILE	   *f;

	if (mkdir(TRACE_DIR, S_IRWXU) != 0 && errno != EEXIST)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", TRACE_DIR)));
	snprintf(path, sizeof(path), TRACE_DIR "/run-" INT64_FORMAT, run_id);
	f = AllocateFile(path, PG_BINARY_W);
	if (f == NULL)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not create file \"%s\": %m", path)));
	fprintf(f, INT64_FORMAT " %d " INT64_FORMAT " " INT64_FORMAT " %s %s %s\n",
			connector_id, MyProcPid, (int64) MyStartTimestamp, (int64) started_at,
			cycle, account ? account : "-", day ? day : "-");
	if (FreeFile(f) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not write file \"%s\": %m", path)));
	trace_remember(&trace_end, path);
}

/* Records the pulls whose backend died as failed runs (57P01). */
static void
trace_collect_orphans(void)
{
	DIR		   *dir;
	struct dirent *de;

	/* one collector at a time; a busy one will do it */
	if (!DatumGetBool(DirectFunctionCall1(pg_try_advisory_xact_lock_int8,
										  Int64GetDatum(INT64CONST(5861746186)))))
		return;
	dir = AllocateDir(TRACE_DIR);
	if (dir == NULL)
		return;
	while ((de = ReadDir(dir, TRACE_DIR)) != NULL)
	{
		char		path[MAXPGPATH];
		FILE	   *f;
		int64		run_id;
		long long	connector_id,
					backend_start,
					started_at;
		int			pid;
		char		cycle[16];
		char		account[64];
		char		day[16];
		ListCell   *lc;
		bool		seen = false;
		Oid			t[9] = {INT4OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		v[9];
		char		n[9] = "         ";
		int			nread;
		bool		isnull;

		if (strncmp(de->d_name, "run-", 4) != 0)
			continue;
		snprintf(path, sizeof(path), TRACE_DIR "/%s", de->d_name);
		foreach(lc, trace_commit)
			if (strcmp((char *) lfirst(lc), path) == 0)
				seen = true;
		foreach(lc, trace_end)
			if (strcmp((char *) lfirst(lc), path) == 0)
				seen = true;
		if (seen)
			continue;
		run_id = strtoi64(de->d_name + 4, NULL, 10);
		f = AllocateFile(path, PG_BINARY_R);
		if (f == NULL)
			continue;
		strcpy(day, "-");
		nread = fscanf(f, "%lld %d %lld %lld %15s %63s %15s", &connector_id, &pid, &backend_start, &started_at,
					   cycle, account, day);
		if (nread != 6 && nread != 7)
		{
			FreeFile(f);
			continue;
		}
		FreeFile(f);
		v[0] = Int32GetDatum(pid);
		v[1] = TimestampTzGetDatum((TimestampTz) backend_start);
		v[2] = Int64GetDatum(run_id);
		v[3] = TimestampTzGetDatum((TimestampTz) started_at);
		v[4] = Int64GetDatum((int64) connector_id);
		v[5] = CStringGetTextDatum(cycle);
		v[6] = strcmp(account, "-") == 0 ? (n[6] = 'n', (Datum) 0) : CStringGetTextDatum(account);
		v[7] = CStringGetTextDatum("the ingesting process ended before the run finished (killed or crashed); the next run resumes from the checkpoint");
		v[8] = strcmp(day, "-") == 0 ? (n[8] = 'n', (Datum) 0) : CStringGetTextDatum(day);
		if (SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a"
								  "  WHERE a.pid = $1 AND a.backend_start = $2)",
								  2, t, v, n, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read pg_stat_activity");
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			continue;			/* still running */
		/* unless its run row committed after all, record the dead pull */
		if (SPI_execute_with_args("INSERT INTO settle.ingest_run (connector_id, billing_cycle, account_id,"
								  " triggered_by, status, started_at, finished_at, backend_pid, error_sqlstate,"
								  " error_message, billing_date)"
								  " SELECT $5, $6, $7, 'sql', 'failed', $4, pg_catalog.clock_timestamp(), $1, '57P01', $8, $9::date"
								  " WHERE EXISTS (SELECT 1 FROM settle.connector c WHERE c.connector_id = $5)"
								  " AND NOT EXISTS (SELECT 1 FROM settle.ingest_run r WHERE r.ingest_run_id = $3"
								  "  AND r.backend_pid = $1 AND r.started_at = $4)"
								  " AND $2 IS NOT NULL",
								  9, t, v, n, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not record a dead pull");
		if (SPI_processed > 0)
			elog(LOG, "settle ingest: run " INT64_FORMAT " of connector %lld died with its backend (pid %d); recorded as failed",
				 run_id, connector_id, pid);
		trace_remember(&trace_commit, path);
	}
	FreeDir(dir);
}

/*
 * Runs one pull of one account of a connector (the connector's own when
 * account is NULL, else a member account pulled with BillOwnerId), for a
 * DAILY connector fanned out over its cycle of one day of it, and returns
 * the ingest run id.  In the worker (from_worker) the run row and
 * every page commit on their own; from SQL everything happens inside the
 * caller's transaction, and a trace file records the run until the
 * transaction ends (see trace_write).  Provider, network and data failures
 * end the run as failed and do not raise; cancel and shutdown requests do.
 */
static int64
run_account(Connector *c, const char *account, const char *day, bool from_worker,
			MemoryContext parentcxt)
{
	MemoryContext runcxt;
	MemoryContext callercxt = CurrentMemoryContext;
	RunCtx		rc;
	IngestState *st;
	int64		connector_id = c->id;
	int64		run_id;
	TimestampTz started_at;
	ErrorData  *volatile edata = NULL;
	volatile bool failed = false;
	int			base_level = GetCurrentTransactionNestLevel();
	ResourceOwner base_owner = CurrentResourceOwner;

	runcxt = AllocSetContextCreate(parentcxt, "settle ingest run", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(runcxt);
	st = palloc0(sizeof(IngestState));
	st->runcxt = runcxt;
	st->account_id = account ? pstrdup(account) : NULL;
	st->billing_date = day ? pstrdup(day) : NULL;
	memset(&rc, 0, sizeof(rc));
	rc.st = st;
	rc.c = c;
	rc.worker = from_worker;
	rc.pagecxt = AllocSetContextCreate(runcxt, "settle ingest page", ALLOCSET_DEFAULT_SIZES);

	/* the run row */
	step_begin(from_worker);
	{
		Oid			t[6] = {INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID, TEXTOID};
		Datum		v[6];
		char		n[6] = "      ";
		bool		isnull;

		v[0] = Int64GetDatum(connector_id);
		v[1] = CStringGetTextDatum(c->cycle);
		v[2] = CStringGetTextDatum(from_worker ? "worker" : "sql");
		v[3] = Int32GetDatum(MyProcPid);
		v[4] = ingest_text_or_null(st->account_id, &n[4]);
		v[5] = ingest_text_or_null(st->billing_date, &n[5]);
		ingest_spi_exec("INSERT INTO settle.ingest_run (connector_id, billing_cycle, triggered_by, backend_pid, account_id,"
				 " billing_date) VALUES ($1, $2, $3, $4, $5, $6::date) RETURNING ingest_run_id, started_at", 6, t, v, n,
				 SPI_OK_INSERT_RETURNING);
		run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		started_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	/* a pull inside the caller's transaction leaves a trace a crash cannot roll back */
	if (!from_worker)
		trace_write(run_id, connector_id, started_at, c->cycle, st->account_id, st->billing_date);
	step_end(from_worker);
	MemoryContextSwitchTo(runcxt);
	st->run_id = run_id;
	st->connector_id = connector_id;
	st->connector_name = c->name;

	/* the pages */
	PG_TRY();
	{
		PG_TRY();
		{
			rc.client = http_client_create();
			http_check_url(c->endpoint[0] == '/' ? psprintf("file://%s", c->endpoint) : c->endpoint);
			if (c->kind->needs_secret)
				ingest_secret_lookup(c->secret_name, &rc.cred);
			c->kind->pull(&rc);
		}
		PG_CATCH();
		{
			/* roll back the failed page, keep the error */
			MemoryContextSwitchTo(runcxt);
			edata = CopyErrorData();
			FlushErrorState();
			/* no URL with credentials reaches the run row or the log */
			edata->message = http_scrub_userinfo(edata->message);
			edata->detail = http_scrub_userinfo(edata->detail);
			edata->detail_log = http_scrub_userinfo(edata->detail_log);
			edata->hint = http_scrub_userinfo(edata->hint);
			edata->context = http_scrub_userinfo(edata->context);
			if (from_worker)
				AbortCurrentTransaction();
			else
			{
				/* inside the page's subtransaction: roll it (and its SPI) back */
				while (GetCurrentTransactionNestLevel() > base_level)
					RollbackAndReleaseCurrentSubTransaction();
				CurrentResourceOwner = base_owner;
			}
			MemoryContextSwitchTo(runcxt);
			counts_restore(st);
			if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED || ProcDiePending ||
				edata->elevel > ERROR)
				ReThrowError(edata);
			failed = true;
		}
		PG_END_TRY();
	}
	PG_CATCH();
	{
		if (rc.cred.access_key_secret)
			explicit_bzero(rc.cred.access_key_secret, strlen(rc.cred.access_key_secret));
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (rc.cred.access_key_secret)
		explicit_bzero(rc.cred.access_key_secret, strlen(rc.cred.access_key_secret));

	/* the outcome */
	step_begin(from_worker);
	if (rc.pending_scope)
		ingest_checkpoint_save(st, rc.pending_scope, rc.pending_token, rc.pending_pages, rc.pending_first);
	ingest_run_update_counts(st);
	{
		Oid			t[8] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		v[8];
		char		n[9] = "        ";

		v[0] = Int64GetDatum(run_id);
		v[1] = CStringGetTextDatum(failed ? "failed" : "succeeded");
		if (failed && ingest_failure.http_status)
			v[2] = Int32GetDatum((int32) ingest_failure.http_status);
		else
			n[2] = 'n';
		v[3] = failed ? CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode)) : (n[3] = 'n', (Datum) 0);
		v[4] = failed ? CStringGetTextDatum(edata->detail ? psprintf("%s: %s", edata->message, edata->detail)
											: edata->message) : (n[4] = 'n', (Datum) 0);
		v[5] = ingest_text_or_null(failed ? ingest_failure.code : NULL, &n[5]);
		v[6] = ingest_text_or_null(failed ? ingest_failure.message : NULL, &n[6]);
		v[7] = ingest_text_or_null(failed ? ingest_failure.request_id : NULL, &n[7]);
		ingest_spi_exec("UPDATE settle.ingest_run SET status = $2, finished_at = pg_catalog.clock_timestamp(),"
				 " http_status = $3, error_sqlstate = $4, error_message = $5, provider_code = $6,"
				 " provider_message = $7, provider_request_id = $8 WHERE ingest_run_id = $1",
				 8, t, v, n, SPI_OK_UPDATE);
	}
	step_end(from_worker);
	if (failed)
		ereport(from_worker ? LOG : NOTICE,
				(errmsg("settle ingest of connector \"%s\"%s%s%s%s failed: %s", c->name,
						account ? " account " : "", account ? account : "",
						day ? " day " : "", day ? day : "", edata->message),
				 errdetail("See settle.ingest_run %s.", psprintf(INT64_FORMAT, run_id))));
	memset(&ingest_failure, 0, sizeof(ingest_failure));
	MemoryContextSwitchTo(callercxt);
	MemoryContextDelete(runcxt);
	return run_id;
}

/* Whether a list of C strings (a connector's members, its days) holds s. */
static bool
has_string(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp((const char *) lfirst(lc), s) == 0)
			return true;
	return false;
}

/*
 * Pulls a connector: every stream of it (from SQL), or one (a pull worker:
 * account, NULL for the connector's own, and day, NULL unless the connector
 * is a DAILY fan-out).  Returns the number of runs and (when run_ids is not
 * NULL) their ids; 0 when a pull worker finds the stream busy or gone.
 * settle.ingest_now raises 55P03 when a pull worker or another session
 * pulls the connector.
 */
static int
run_pull(int64 connector_id, const char *billing_cycle, bool from_worker, const char *account,
		 const char *day, int64 **run_ids)
{
	MemoryContext callercxt = CurrentMemoryContext;
	MemoryContext cxt;
	Connector  *c;
	List	   *accounts;
	ListCell   *lc;
	int64	   *ids;
	int64		first;
	int			nconfigured;
	int			n = 0;
	const char *skip = NULL;

	cxt = AllocSetContextCreate(from_worker ? TopMemoryContext : CurrentMemoryContext,
								"settle ingest pull", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	c = palloc0(sizeof(Connector));
	step_begin(from_worker);
	/* without a launcher (not preloaded) nobody else closes runs cut short */
	if (!from_worker)
		ingest_fail_orphaned_runs();
	load_connector(connector_id, c, cxt);
	if (from_worker && account && !has_string(c->members, account))
		skip = "is no longer a member account of it";
	else if (!pull_lock_try(connector_id, from_worker, account, day))
	{
		if (!from_worker)
			pull_lock_refuse(connector_id, c->name);
		skip = "is being pulled by another process";
	}
	if (skip == NULL)
	{
		if (billing_cycle)
			c->cycle = MemoryContextStrdup(cxt, billing_cycle);
		else if (c->cycle == NULL)
			c->cycle = MemoryContextStrdup(cxt, default_cycle());
		if (!valid_cycle(c->cycle))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid billing cycle \"%s\"", c->cycle),
					 errhint("A billing cycle is written YYYY-MM.")));
		if (c->kind->configure)
			c->kind->configure(c, cxt);
		/* a day stream exists while its day is one of the connector's fan-out */
		if (from_worker && (day ? !has_string(c->days, day) : c->days != NIL))
		{
			skip = day ? "is no longer a day of its fan-out" : "is now fanned out over days";
			pull_lock_release(connector_id, account, day);
		}
	}
	if (skip)
	{
		step_end(from_worker);
		elog(LOG, "settle ingest worker: connector \"%s\"%s%s%s%s %s; skipped",
			 c->name, account ? " account " : "", account ? account : "",
			 day ? " day " : "", day ? day : "", skip);
		MemoryContextSwitchTo(callercxt);
		MemoryContextDelete(cxt);
		if (run_ids)
			*run_ids = NULL;
		return 0;
	}
	step_end(from_worker);

	MemoryContextSwitchTo(cxt);
	if (c->days != NIL)
	{
		/*
		 * A DAILY fan-out: a run per account and day (a pull worker: its
		 * stream's), accounts in order, days ascending.
		 */
		List	   *days = from_worker ? list_make1((char *) day) : c->days;
		ListCell   *dc;

		accounts = from_worker ? list_make1((char *) account) : lcons(NULL, list_copy(c->members));
		ids = MemoryContextAlloc(callercxt, sizeof(int64) * list_length(accounts) * list_length(days));
		foreach(lc, accounts)
		{
			foreach(dc, days)
			{
				ids[n++] = run_account(c, (const char *) lfirst(lc), (const char *) lfirst(dc),
									   from_worker, cxt);
				MemoryContextSwitchTo(cxt);
			}
		}
	}
	else
	{
		/*
		 * The stream's own run first: the connector's own (account NULL) may
		 * add runs that follow (focus_bucket lists the objects to import).  A
		 * pull worker then pulls only those it added; settle.ingest_now every
		 * member.
		 */
		nconfigured = list_length(c->members);
		first = run_account(c, from_worker ? account : NULL, NULL, from_worker, cxt);
		MemoryContextSwitchTo(cxt);
		accounts = list_concat(list_make1(NULL),
							   from_worker ? (account ? NIL : list_copy_tail(c->members, nconfigured))
							   : c->members);
		ids = MemoryContextAlloc(callercxt, sizeof(int64) * list_length(accounts));
		ids[n++] = first;
		for_each_from(lc, accounts, 1)
		{
			ids[n++] = run_account(c, (const char *) lfirst(lc), NULL, from_worker, cxt);
			MemoryContextSwitchTo(cxt);
		}
	}

	if (from_worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		pull_lock_release(connector_id, account, day);
		CommitTransactionCommand();
	}
	MemoryContextSwitchTo(callercxt);
	MemoryContextDelete(cxt);
	if (run_ids)
		*run_ids = ids;
	return n;
}

/* settle.ingest_now: every stream of a connector, in the caller's transaction. */
int
ingest_run_connector(int64 connector_id, const char *billing_cycle, int64 **run_ids)
{
	return run_pull(connector_id, billing_cycle, false, NULL, NULL, run_ids);
}

/*
 * A pull worker: one stream (account NULL: the connector's own; day: one day
 * of a DAILY fan-out), each page committed; returns the run id, 0 when the
 * stream was skipped.
 */
int64
ingest_run_stream(int64 connector_id, const char *account, const char *day)
{
	int64	   *ids;

	if (run_pull(connector_id, NULL, true, account, day, &ids) == 0)
		return 0;
	return ids[0];
}

/*
 * Marks runs whose backend is gone (a crash, a kill) as failed: run rows
 * still 'running' (the worker's, committed before its pages), and the
 * traces of settle.ingest_now pulls that died with their backend.
 */
void
ingest_fail_orphaned_runs(void)
{
	int			rc;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute("UPDATE settle.ingest_run r SET status = 'failed',"
					 " finished_at = pg_catalog.clock_timestamp(), error_sqlstate = '57P01',"
					 " error_message = 'the ingesting process ended before the run finished (crash or shutdown); the next run resumes from the checkpoint'"
					 " WHERE r.status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a"
					 "  WHERE a.pid = r.backend_pid AND a.pid <> pg_catalog.pg_backend_pid())"
					 " OR (r.status = 'running' AND r.backend_pid = pg_catalog.pg_backend_pid())",
					 false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "could not mark orphaned ingest runs");
	if (SPI_processed > 0)
		elog(LOG, "settle ingest: marked " UINT64_FORMAT " unfinished run(s) as failed", SPI_processed);
	trace_collect_orphans();
	SPI_finish();
}

/* ---------------------------------------------------------------------
 * SQL entry points
 * --------------------------------------------------------------------- */

/*
 * BEFORE INSERT OR UPDATE trigger of settle.connector: refuses an endpoint
 * with credentials (always) or with a literal internal address (unless
 * settle.allow_private_endpoints is on, or a superuser's session restores a
 * dump); see http_check_endpoint.
 */
Datum
settle_connector_endpoint_check(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	int			attno;
	bool		isnull;
	Datum		d;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || TRIGGER_FIRED_BY_DELETE(td->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("settle._connector_endpoint_check must run as a BEFORE INSERT OR UPDATE row trigger")));
	tuple = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;
	attno = SPI_fnumber(td->tg_relation->rd_att, "endpoint");
	if (attno <= 0)
		elog(ERROR, "settle.connector has no column endpoint");
	d = heap_getattr(tuple, attno, td->tg_relation->rd_att, &isnull);
	/*
	 * A restore loads connectors that were accepted when written (perhaps
	 * with the setting on); their addresses are still checked at every pull.
	 */
	if (!isnull)
		http_check_endpoint(TextDatumGetCString(d), !settle_restoring_session());
	return PointerGetDatum(tuple);
}

/* The runs of a pull as the rows of settle.ingest_now. */
static Datum
return_runs(FunctionCallInfo fcinfo, int64 *ids, int n)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			t[1] = {INT8OID};
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	for (i = 0; i < n; i++)
	{
		Datum		v[1];

		v[0] = Int64GetDatum(ids[i]);
		if (SPI_execute_with_args("SELECT * FROM settle.ingest_run WHERE ingest_run_id = $1",
								  1, t, v, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "ingest run " INT64_FORMAT " vanished", ids[i]);
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[0]);
	}
	SPI_finish();
	return (Datum) 0;
}

Datum
settle_ingest_now_name(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *cycle = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	Oid			t[1] = {TEXTOID};
	Datum		v[1];
	int64		id;
	int64	   *ids;
	int			n;
	bool		isnull;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("connector must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	v[0] = CStringGetTextDatum(name);
	if (SPI_execute_with_args("SELECT connector_id FROM settle.connector WHERE name = $1",
							  1, t, v, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.connector");
	if (SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("connector \"%s\" does not exist", name)));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	n = ingest_run_connector(id, cycle, &ids);
	return return_runs(fcinfo, ids, n);
}

Datum
settle_ingest_now_id(PG_FUNCTION_ARGS)
{
	char	   *cycle = PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1));
	int64	   *ids;
	int			n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("connector must not be null")));
	n = ingest_run_connector(PG_GETARG_INT64(0), cycle, &ids);
	return return_runs(fcinfo, ids, n);
}
