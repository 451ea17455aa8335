/*
 * ingest.h — the interface between the ingestion orchestrator (ingest.c:
 * runs, pages, checkpoints, the pull lock), the connectors (one file per
 * kind: ingest_bss.c, ingest_focus.c), the settings and secrets
 * (ingest_settings.c) and the background worker (worker.c).
 *
 * A connector kind is one row of the table in ingest.c: its name (a value
 * of settle.connector.kind's CHECK), whether it needs a secret, an optional
 * function that reads its config keys, and the function that pulls one
 * account.  A pull stores each page with ingest_page_begin/ingest_page_end
 * around it (a committed transaction in the worker, a subtransaction in
 * settle.ingest_now), its raw copy with ingest_insert_raw_page, its lines
 * with ingest_store_lines and its progress with ingest_checkpoint_save.
 */
#ifndef SETTLE_INGEST_H
#define SETTLE_INGEST_H

#include "nodes/pg_list.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "http.h"
#include "ingest_lines.h"

/* What a failed request left behind, for the run row. */
typedef struct IngestFailure
{
	long		http_status;
	char	   *code;
	char	   *message;
	char	   *request_id;
} IngestFailure;

extern IngestFailure ingest_failure;

typedef struct ConnectorKind ConnectorKind;

typedef struct Connector
{
	int64		id;
	char	   *name;
	const ConnectorKind *kind;
	char	   *endpoint;
	char	   *secret_name;
	char	   *cycle;			/* billing cycle of this run */
	List	   *members;		/* member accounts (char *), each pulled as a run of its own;
								 * focus_bucket: the objects its listing run found */
	void	   *opts;			/* the kind's settings, read by its configure function */
	List	   *days;			/* a DAILY connector fanned out over its cycle: the days
								 * (char *, YYYY-MM-DD), each pulled as a run of its own
								 * per account (set by the kind's configure); NIL: none */
} Connector;

typedef struct Credentials
{
	char	   *access_key_id;
	char	   *access_key_secret;
} Credentials;

/* One run: one account of one connector. */
typedef struct RunCtx
{
	IngestState *st;
	Connector  *c;
	Credentials cred;			/* when the kind needs a secret */
	HttpClient *client;
	bool		worker;			/* pages commit on their own */
	MemoryContext pagecxt;		/* reset after every page */
	/* settle.ingest_now: the checkpoint to write when the run ends */
	char	   *pending_scope;
	char	   *pending_token;
	int			pending_pages;
	int64		pending_first;
} RunCtx;

struct ConnectorKind
{
	const char *name;			/* settle.connector.kind */
	bool		needs_secret;	/* looks secret_name up before pulling */
	/* reads and checks the kind's config keys into c->opts (SPI connected) */
	void		(*configure) (Connector *c, MemoryContext cxt);
	/* pulls one account (rc->st->account_id, NULL: the connector's own) */
	void		(*pull) (RunCtx *rc);
};

/* the connectors */
extern void bss_configure(Connector *c, MemoryContext cxt);
extern void bss_pull(RunCtx *rc);
extern void focus_csv_configure(Connector *c, MemoryContext cxt);
extern void focus_csv_pull(RunCtx *rc);
extern void bucket_configure(Connector *c, MemoryContext cxt);
extern void bucket_pull(RunCtx *rc);
extern List *focus_null_tokens(int64 connector_id, MemoryContext cxt);
extern void focus_load(IngestState *st, List *null_tokens, const char *source,
					   const char *body, size_t len, int64 raw_page_id);

/* One page's transaction, and its memory context while it is open. */
typedef struct PageTx
{
	MemoryContext oldcxt;
	ResourceOwner oldowner;
	MemoryContext callercxt;
} PageTx;

/* ingest.c: what connectors use */
extern void ingest_page_begin(RunCtx *rc, PageTx *tx);
extern void ingest_page_end(RunCtx *rc, PageTx *tx);
extern void ingest_spi_exec(const char *sql, int nargs, Oid *types, Datum *vals,
							const char *nulls, int expect);
extern Datum ingest_text_or_null(const char *s, char *nullflag);
extern void ingest_run_update_counts(IngestState *st);
extern int64 ingest_insert_raw_page(IngestState *st, const char *request, long status,
									const char *body, size_t len, TimestampTz requested_at);
extern char *ingest_checkpoint_start(IngestState *st, const char *scope, int *pages_done,
									 int64 *pass_first_page);
extern void ingest_checkpoint_save(IngestState *st, const char *scope, const char *next_token,
								   int pages_done, int64 pass_first_page);
extern void ingest_sleep_ms(long ms);
extern void ingest_sleep_until(TimestampTz end);

/* ingest.c: runs */
extern int	ingest_run_connector(int64 connector_id, const char *billing_cycle, int64 **run_ids);
extern int64 ingest_run_stream(int64 connector_id, const char *account, const char *day);
extern void ingest_fail_orphaned_runs(void);

/* ingest_settings.c: settings and secrets */
extern int	settle_ingest_max_attempts;
extern int	settle_ingest_retry_base_ms;
extern int	settle_ingest_requests_per_second;
extern char *settle_secret_file;
extern char *settle_database;
extern int	settle_worker_naptime_ms;
extern int	settle_worker_retry_after_ms;
extern int	settle_max_pull_workers;
extern void ingest_secret_lookup(const char *name, Credentials *cred);

/* ingest_rate.c: one request rate per AccessKey, shared by every pull */
extern void ingest_rate_init(void);
extern void ingest_rate_wait(const char *access_key_id);

/* worker.c: the launcher and its pull workers */
extern void settle_worker_register(void);

#endif							/* SETTLE_INGEST_H */
