/*
 * ingest.c — one pull of one connector, page by page, exactly once.
 *
 * ingest_run_connector is shared by settle.ingest_now and the background
 * worker.  Each page is fetched (with retries), then stored in one
 * transaction together with its raw copy, its normalized lines, their
 * exceptions, the run's counters and the connector's checkpoint; the worker
 * commits each page, settle.ingest_now runs each page in a subtransaction of
 * the caller's transaction.  A failing page rolls back alone and ends the
 * run as failed, with the HTTP status, SQLSTATE, message and the provider's
 * Code, Message and RequestId on the run.
 *
 * Also here: the ingestion settings and the secret store (a file only the
 * server's OS user can read, or the server environment).
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/hsearch.h"
#include "utils/array.h"
#include "utils/fmgrprotos.h"
#include "storage/fd.h"
#include "storage/ipc.h"

#include "settle.h"
#include "ingest.h"
#include "ingest_json.h"
#include "ingest_lines.h"

PG_FUNCTION_INFO_V1(settle_ingest_now_name);
PG_FUNCTION_INFO_V1(settle_ingest_now_id);
PG_FUNCTION_INFO_V1(settle_connector_endpoint_check);

bool		settle_allow_insecure_transport = false;
bool		settle_allow_private_endpoints = false;
char	   *settle_ca_file = NULL;
int			settle_http_connect_timeout_ms = 10000;
int			settle_http_timeout_ms = 60000;
int			settle_http_max_response_bytes = 32 * 1024 * 1024;
int			settle_ingest_max_attempts = 5;
int			settle_ingest_retry_base_ms = 1000;
int			settle_ingest_requests_per_second = 10;
char	   *settle_secret_file = NULL;
char	   *settle_database = NULL;
int			settle_worker_naptime_ms = 10000;
int			settle_worker_retry_after_ms = 300000;

/* What a failed request left behind, for the run row. */
typedef struct Failure
{
	long		http_status;
	char	   *code;
	char	   *message;
	char	   *request_id;
} Failure;

typedef struct Connector
{
	int64		id;
	char	   *name;
	char	   *kind;
	char	   *endpoint;
	char	   *secret_name;
	char	   *config;			/* jsonb as text */
	char	   *cycle;			/* billing cycle of this run */
	char	   *granularity;
	char	   *billing_date;
	int			max_results;
	bool		overview;
	List	   *members;		/* member accounts (char *) pulled with BillOwnerId */
} Connector;

typedef struct Credentials
{
	char	   *access_key_id;
	char	   *access_key_secret;
} Credentials;

static Failure failure;
static TimestampTz last_request_at = 0;

extern int	settle_worker_retry_after_ms;

/* ---------------------------------------------------------------------
 * Settings
 * --------------------------------------------------------------------- */

void
settle_ingest_init(void)
{
	DefineCustomStringVariable("settle.database",
							   "Database the settle ingest worker serves.",
							   "The worker starts only when settle is in shared_preload_libraries.",
							   &settle_database, "postgres",
							   /* PGC_POSTMASTER may only be defined while preloading */
							   process_shared_preload_libraries_in_progress ? PGC_POSTMASTER : PGC_SIGHUP, 0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("settle.worker_naptime_ms",
							"How long the ingest worker sleeps between looks for due connectors.",
							NULL, &settle_worker_naptime_ms, 10000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.worker_retry_after_ms",
							"How long the ingest worker waits before pulling a connector again after a failed run.",
							NULL, &settle_worker_retry_after_ms, 300000, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("settle.allow_insecure_transport",
							 "Allows connectors to use http:// and file:// URLs (tests only).",
							 "TLS verification is never turned off; this only widens the allowed protocols.",
							 &settle_allow_insecure_transport, false, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("settle.allow_private_endpoints",
							 "Allows connectors to reach loopback, private, link-local and other internal addresses (tests only).",
							 "Checked on the resolved address of every connection, and on literal addresses when a connector is written.",
							 &settle_allow_private_endpoints, false, PGC_SUSET, 0,
							 NULL, NULL, NULL);
	DefineCustomStringVariable("settle.ca_file",
							   "PEM file of CA certificates trusted for connector endpoints, in addition to the system store.",
							   NULL, &settle_ca_file, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.http_connect_timeout_ms",
							"Connect timeout of connector requests.",
							NULL, &settle_http_connect_timeout_ms, 10000, 100, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.http_timeout_ms",
							"Total timeout of one connector request.",
							NULL, &settle_http_timeout_ms, 60000, 100, 3600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.http_max_response_bytes",
							"Largest response body a connector accepts.",
							NULL, &settle_http_max_response_bytes, 32 * 1024 * 1024, 1024, INT_MAX,
							PGC_SUSET, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.ingest_max_attempts",
							"Attempts per request before a transient failure (5xx, 429, Throttling*, timeout) fails the run.",
							NULL, &settle_ingest_max_attempts, 5, 1, 100,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.ingest_retry_base_ms",
							"First retry delay; each further retry doubles it (with jitter).",
							NULL, &settle_ingest_retry_base_ms, 1000, 0, 600000,
							PGC_SUSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("settle.ingest_requests_per_second",
							"Upper bound on provider requests per second per backend (Alibaba allows 10); 0 = no bound.",
							NULL, &settle_ingest_requests_per_second, 10, 0, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("settle.secret_file",
							   "File holding connector secrets, one \"name=access_key_id:access_key_secret\" per line.",
							   "Must be readable only by the server's OS user.  Secrets may also come from the server environment as SETTLE_SECRET_<NAME>.",
							   &settle_secret_file, "", PGC_SIGHUP, GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	if (process_shared_preload_libraries_in_progress)
		settle_worker_register();
}

/* ---------------------------------------------------------------------
 * Secrets
 * --------------------------------------------------------------------- */

static void
secret_parse(const char *name, char *value, Credentials *cred)
{
	char	   *colon = strchr(value, ':');

	if (colon == NULL || colon == value || colon[1] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("secret \"%s\" is malformed", name),
				 errdetail("A secret is written as access_key_id:access_key_secret.")));
	cred->access_key_id = pnstrdup(value, colon - value);
	cred->access_key_secret = pstrdup(ingest_trim(colon + 1));
}

/*
 * Looks a secret up by name: first the secret file, then the environment.
 * Error messages name the secret, never its value.
 */
static void
secret_lookup(const char *name, Credentials *cred)
{
	char	   *envname;
	char	   *env;
	char	   *p;

	if (name == NULL || name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("connector names no secret"),
				 errhint("Set settle.connector.secret_name to a secret defined in settle.secret_file or as SETTLE_SECRET_<NAME>.")));

	if (settle_secret_file && settle_secret_file[0])
	{
		struct stat sb;
		FILE	   *f;
		char		line[2048];

		if (stat(settle_secret_file, &sb) == 0)
		{
			if (sb.st_mode & (S_IRWXG | S_IRWXO))
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("secret file \"%s\" is readable by other users", settle_secret_file),
						 errhint("chmod 600 the file; it must be readable only by the server's OS user.")));
			if (sb.st_uid != geteuid())
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("secret file \"%s\" is not owned by the server's OS user", settle_secret_file)));
			f = AllocateFile(settle_secret_file, "r");
			if (f == NULL)
				ereport(ERROR,
						(errcode_for_file_access(),
						 errmsg("could not open secret file \"%s\": %m", settle_secret_file)));
			while (fgets(line, sizeof(line), f))
			{
				char	   *l = ingest_trim(line);
				char	   *eq = strchr(l, '=');

				if (l[0] == '#' || eq == NULL)
					continue;
				*eq = '\0';
				if (strcmp(ingest_trim(l), name) == 0)
				{
					secret_parse(name, ingest_trim(eq + 1), cred);
					explicit_bzero(line, sizeof(line));
					FreeFile(f);
					return;
				}
			}
			explicit_bzero(line, sizeof(line));
			FreeFile(f);
		}
	}

	envname = psprintf("SETTLE_SECRET_%s", name);
	for (p = envname; *p; p++)
		*p = (*p >= 'a' && *p <= 'z') ? *p - 32 : (isalnum((unsigned char) *p) ? *p : '_');
	env = getenv(envname);
	if (env && env[0])
	{
		char	   *copy = pstrdup(env);

		secret_parse(name, copy, cred);
		explicit_bzero(copy, strlen(copy));
		return;
	}
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("secret \"%s\" is not defined", name),
			 errhint("Add it to the file named by settle.secret_file or set %s in the server's environment.", envname)));
}

/* ---------------------------------------------------------------------
 * Page transactions: committed pages in the worker, subtransactions in SQL
 * --------------------------------------------------------------------- */

typedef struct PageTx
{
	bool		worker;
	MemoryContext oldcxt;
	ResourceOwner oldowner;
} PageTx;

static void
page_begin(PageTx *tx)
{
	if (tx->worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	else
	{
		tx->oldcxt = CurrentMemoryContext;
		tx->oldowner = CurrentResourceOwner;
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(tx->oldcxt);
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
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

static void
page_commit(PageTx *tx)
{
	SPI_finish();
	if (tx->worker)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	else
	{
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(tx->oldcxt);
		CurrentResourceOwner = tx->oldowner;
	}
}

/* ---------------------------------------------------------------------
 * Small SPI helpers
 * --------------------------------------------------------------------- */

/*
 * Runs one of ingestion's fixed statements (string literals: the pointer
 * identifies the statement), planned once per backend and kept.
 */
static void
spi_exec(const char *sql, int nargs, Oid *types, Datum *vals, const char *nulls, int expect)
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

static Datum
text_or_null(const char *s, char *nullflag)
{
	if (s == NULL)
	{
		*nullflag = 'n';
		return (Datum) 0;
	}
	*nullflag = ' ';
	return CStringGetTextDatum(s);
}

static void
run_update_counts(IngestState *st)
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
	spi_exec("UPDATE settle.ingest_run SET requests = $2, retries = $3, pages = $4,"
			 " lines_seen = $5, lines_new = $6, lines_revised = $7, lines_unchanged = $8,"
			 " lines_invalid = $9, exceptions_opened = $10, lines_withdrawn = $11 WHERE ingest_run_id = $1",
			 11, t, v, NULL, SPI_OK_UPDATE);
}

/* ---------------------------------------------------------------------
 * Requests to the BSS API
 * --------------------------------------------------------------------- */

/* Sleeps ms milliseconds of wall time (a latch set early does not shorten it). */
static void
sleep_ms(long ms)
{
	TimestampTz end = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = (long) ((end - GetCurrentTimestamp()) / 1000);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 100), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

static void
rate_limit(void)
{
	if (settle_ingest_requests_per_second > 0 && last_request_at != 0)
	{
		long		min_gap = 1000 / settle_ingest_requests_per_second;
		long		elapsed = (long) ((GetCurrentTimestamp() - last_request_at) / 1000);

		if (elapsed < min_gap)
			sleep_ms(min_gap - elapsed);
	}
	last_request_at = GetCurrentTimestamp();
}

static bool
is_throttling(const char *code)
{
	return code && strncmp(code, "Throttling", 10) == 0;
}

/* host[:port] of an URL, and the URL without query. */
static char *
url_authority(const char *url)
{
	const char *p = strstr(url, "://");
	const char *end;

	p = p ? p + 3 : url;
	end = p + strcspn(p, "/?#");
	return pnstrdup(p, end - p);
}

static void
build_query(StringInfo qs, Acs3Pair *q, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		appendStringInfo(qs, "%s%s=", i ? "&" : "", acs3_pct_encode(q[i].name));
		appendStringInfoString(qs, acs3_pct_encode(q[i].value));
	}
}

/*
 * A copy of a reply with every byte that is not part of valid UTF-8 replaced
 * by U+FFFD, so that one bad byte inside a string value spoils only that
 * value (its line is flagged) and not the page.  *nbad counts replacements.
 */
static char *
repair_utf8(const char *s, size_t len, size_t *outlen, int *nbad)
{
	StringInfoData b;
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	*nbad = 0;
	initStringInfo(&b);
	enlargeStringInfo(&b, (int) len + 16);
	while (p < end)
	{
		int			l;

		if (*p != 0 && *p < 0x80)
		{
			appendStringInfoChar(&b, (char) *p++);
			continue;
		}
		l = pg_utf_mblen(p);
		if (*p != 0 && p + l <= end && pg_utf8_islegal(p, l))
		{
			appendBinaryStringInfo(&b, (const char *) p, l);
			p += l;
			continue;
		}
		appendStringInfoString(&b, "\xEF\xBF\xBD");
		(*nbad)++;
		p++;
	}
	*outlen = b.len;
	return b.data;
}

/*
 * Sends one BSS call with retries and returns its successful reply, parsed.
 * Transient failures (transport, 5xx, 429, Throttling*) are retried with
 * exponential backoff and jitter; anything else raises at once with the
 * provider's error kept in `failure`.  requested_at is set to the time of
 * the successful attempt.
 */
static HttpResult *
bss_call(IngestState *st, HttpClient *client, Connector *c, Credentials *cred,
		 const char *action, Acs3Pair *query, int nquery, BssReply *reply,
		 TimestampTz *requested_at)
{
	char	   *host = url_authority(c->endpoint);
	StringInfoData url;
	int			attempt;
	HttpResult *r = palloc0(sizeof(HttpResult));

	initStringInfo(&url);
	appendStringInfoString(&url, c->endpoint);
	if (url.data[url.len - 1] != '/')
		appendStringInfoChar(&url, '/');
	appendStringInfoChar(&url, '?');
	build_query(&url, query, nquery);

	for (attempt = 1;; attempt++)
	{
		Acs3Pair	h[5];
		char		nonce[33];
		char	   *date;
		char	   *auth;
		const char *hdrs[8];
		char		body_hash[65];
		char	   *errdetail_txt;
		bool		retry = false;
		int			i;
		pg_time_t	now;
		struct pg_tm *tm;
		char		datebuf[32];

		rate_limit();
		now = (pg_time_t) time(NULL);
		tm = pg_gmtime(&now);
		pg_strftime(datebuf, sizeof(datebuf), "%Y-%m-%dT%H:%M:%SZ", tm);
		date = datebuf;
		for (i = 0; i < 32; i++)
			nonce[i] = "0123456789abcdef"[pg_prng_uint32(&pg_global_prng_state) & 15];
		nonce[32] = '\0';
		h[0].name = "x-acs-action";
		h[0].value = (char *) action;
		h[1].name = "x-acs-version";
		h[1].value = "2017-12-14";
		h[2].name = "x-acs-date";
		h[2].value = date;
		h[3].name = "x-acs-signature-nonce";
		h[3].value = nonce;
		auth = acs3_sign("POST", host, query, nquery, h, 4, "", 0,
						 cred->access_key_id, cred->access_key_secret);
		acs3_sha256_hex("", 0, body_hash);
		hdrs[0] = psprintf("x-acs-action: %s", action);
		hdrs[1] = "x-acs-version: 2017-12-14";
		hdrs[2] = psprintf("x-acs-date: %s", date);
		hdrs[3] = psprintf("x-acs-signature-nonce: %s", nonce);
		hdrs[4] = psprintf("x-acs-content-sha256: %s", body_hash);
		hdrs[5] = psprintf("Authorization: %s", auth);
		hdrs[6] = "Accept: application/json";
		hdrs[7] = "Content-Type:";

		*requested_at = GetCurrentTimestamp();
		http_get(client, url.data, hdrs, 8, true, r);
		st->requests++;
		pfree((char *) hdrs[5]);
		pfree(auth);

		memset(&failure, 0, sizeof(failure));
		failure.http_status = r->status;

		if (r->curl_code != 0)
		{
			if (http_retryable(r) && attempt < settle_ingest_max_attempts)
				retry = true;
			else
				http_raise(c->endpoint, r);
		}
		else
		{
			int			nbad = 0;

			if (pg_verify_mbstr(PG_UTF8, r->body, (int) r->body_len, true))
				errdetail_txt = bss_parse_reply(r->body, r->body_len, reply);
			else
			{
				size_t		len;
				char	   *fixed = repair_utf8(r->body, r->body_len, &len, &nbad);

				errdetail_txt = bss_parse_reply(fixed, len, reply);
			}
			reply->repaired = (nbad > 0);
			if (r->status >= 200 && r->status < 300 &&
				(reply->code == NULL || strcmp(reply->code, "Success") == 0 ||
				 strcmp(reply->code, "200") == 0))
			{
				/* not a bill page (a proxy's page, a cut-off reply): retried, then fails */
				bool		not_json = (r->content_type == NULL || strstr(r->content_type, "json") == NULL);

				if ((not_json || errdetail_txt) && attempt < settle_ingest_max_attempts)
				{
					retry = true;
					goto backoff;
				}
				if (not_json)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_EXCEPTION),
							 errmsg("%s reply from \"%s\" is not JSON", action, c->endpoint),
							 errdetail("Content-Type was \"%s\".", r->content_type ? r->content_type : ""),
							 attempt > 1 ? errhint("Gave up after %d attempts.", attempt) : 0));
				if (errdetail_txt)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("malformed JSON in %s reply from \"%s\"", action, c->endpoint),
							 errdetail("%s%s", errdetail_txt,
									   nbad ? psprintf(" (after replacing %d bytes that are not UTF-8)", nbad) : ""),
							 attempt > 1 ? errhint("Gave up after %d attempts.", attempt) : 0));
				if (!reply->has_data)
					ereport(ERROR,
							(errcode(ERRCODE_DATA_EXCEPTION),
							 errmsg("%s reply from \"%s\" has no Data", action, c->endpoint)));
				return r;
			}
			/* an error reply */
			failure.code = reply->code ? MemoryContextStrdup(st->runcxt, reply->code) : NULL;
			failure.message = reply->message ? MemoryContextStrdup(st->runcxt, reply->message) : NULL;
			failure.request_id = reply->request_id ? MemoryContextStrdup(st->runcxt, reply->request_id) : NULL;
			if ((r->status >= 500 || r->status == 429 || is_throttling(reply->code)) &&
				attempt < settle_ingest_max_attempts)
				retry = true;
			else
			{
				int			sqlstate;
				const char *code = reply->code ? reply->code : "";

				if (strncmp(code, "Signature", 9) == 0 || strncmp(code, "InvalidAccessKeyId", 18) == 0 ||
					strncmp(code, "NotAuthorized", 13) == 0 || strncmp(code, "Forbidden", 9) == 0 ||
					strcmp(code, "NoPermission") == 0 || strncmp(code, "IncompleteSignature", 19) == 0 ||
					strncmp(code, "InvalidTimeStamp", 16) == 0 || r->status == 401 || r->status == 403)
					sqlstate = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
				else if (strncmp(code, "InvalidParameter", 16) == 0 ||
						 strncmp(code, "MissingParameter", 16) == 0 ||
						 strncmp(code, "InvalidAction", 13) == 0)
					sqlstate = ERRCODE_INVALID_PARAMETER_VALUE;
				else if (r->status >= 500 || r->status == 429 || is_throttling(code))
					sqlstate = ERRCODE_CANNOT_CONNECT_NOW;
				else
					sqlstate = ERRCODE_CONNECTION_EXCEPTION;
				ereport(ERROR,
						(errcode(sqlstate),
						 errmsg("%s failed at \"%s\": HTTP %ld %s", action, c->endpoint,
								r->status, code),
						 errdetail("Provider message: %s  RequestId: %s.",
								   failure.message ? failure.message : "(none)",
								   failure.request_id ? failure.request_id : "(none)"),
						 attempt > 1 ? errhint("Gave up after %d attempts.", attempt) : 0));
			}
		}
backoff:
		if (retry)
		{
			double		delay = (double) settle_ingest_retry_base_ms * (1 << Min(attempt - 1, 10));

			delay = Min(delay, 30000.0);
			delay = delay / 2 + pg_prng_double(&pg_global_prng_state) * delay / 2;
			st->retries++;
			sleep_ms((long) delay);
			continue;
		}
	}
}

/* request parameters as stored with the raw page: never credentials */
static char *
request_json(Connector *c, const char *scope, const char *action, Acs3Pair *q, int n)
{
	StringInfoData b;
	int			i;

	initStringInfo(&b);
	appendStringInfoString(&b, "{\"action\": ");
	escape_json(&b, action);
	appendStringInfoString(&b, ", \"scope\": ");
	escape_json(&b, scope);
	appendStringInfoString(&b, ", \"endpoint\": ");
	escape_json(&b, c->endpoint);
	appendStringInfoString(&b, ", \"version\": \"2017-12-14\", \"params\": {");
	for (i = 0; i < n; i++)
	{
		if (i)
			appendStringInfoString(&b, ", ");
		escape_json(&b, q[i].name);
		appendStringInfoString(&b, ": ");
		escape_json(&b, q[i].value);
	}
	appendStringInfoString(&b, "}}");
	return b.data;
}

static int64
ingest_insert_raw_page(IngestState *st, const char *request, long status,
					   const char *body, size_t len, TimestampTz requested_at)
{
	Oid			t[6] = {INT8OID, INT8OID, TEXTOID, INT4OID, BYTEAOID, TIMESTAMPTZOID};
	Datum		v[6];
	bytea	   *b = palloc(VARHDRSZ + len);
	bytea	   *h = palloc(VARHDRSZ + 32);
	bool		isnull;
	Oid			t2[7];
	Datum		v2[7];

	SET_VARSIZE(b, VARHDRSZ + len);
	memcpy(VARDATA(b), body, len);
	SET_VARSIZE(h, VARHDRSZ + 32);
	acs3_sha256(body, len, (uint8 *) VARDATA(h));
	memcpy(t2, t, sizeof(t));
	t2[6] = BYTEAOID;
	v2[0] = Int64GetDatum(st->connector_id);
	v2[1] = Int64GetDatum(st->run_id);
	v2[2] = CStringGetTextDatum(request);
	v2[3] = Int32GetDatum((int32) status);
	v2[4] = PointerGetDatum(b);
	v2[5] = TimestampTzGetDatum(requested_at);
	v2[6] = PointerGetDatum(h);
	(void) v;
	spi_exec("INSERT INTO settle.raw_page (connector_id, ingest_run_id, request, http_status,"
			 " body, body_sha256, requested_at) VALUES ($1, $2, $3::jsonb, $4, $5, $7, $6)"
			 " RETURNING raw_page_id", 7, t2, v2, NULL, SPI_OK_INSERT_RETURNING);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* ---------------------------------------------------------------------
 * Checkpoints
 * --------------------------------------------------------------------- */

/*
 * The token to resume from, or NULL to start at the first page; with it the
 * pages done and the first page of the pass in progress (0 when unknown).
 */
static char *
checkpoint_start(IngestState *st, const char *scope, int *pages_done, int64 *pass_first_page)
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

static void
checkpoint_save(IngestState *st, const char *scope, const char *next_token, int pages_done,
				int64 pass_first_page)
{
	Oid			t[7] = {INT8OID, TEXTOID, TEXTOID, INT4OID, INT8OID, TEXTOID, INT8OID};
	Datum		v[7];
	char		n[7] = "       ";
	bool		complete = (next_token == NULL || next_token[0] == '\0');

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = CStringGetTextDatum(scope);
	v[2] = complete ? (Datum) 0 : CStringGetTextDatum(next_token);
	if (complete)
		n[2] = 'n';
	v[3] = Int32GetDatum(pages_done);
	v[4] = Int64GetDatum(st->run_id);
	v[5] = text_or_null(st->account_id, &n[5]);
	v[6] = Int64GetDatum(pass_first_page);
	if (pass_first_page == 0 || complete)
		n[6] = 'n';
	spi_exec(complete ?
			 "INSERT INTO settle.ingest_checkpoint AS k (connector_id, scope, next_token, pages_done, complete,"
			 " last_run_id, account_id, pass_first_page)"
			 " VALUES ($1, $2, $3, $4, true, $5, $6, $7) ON CONFLICT (connector_id, scope) DO UPDATE"
			 " SET next_token = NULL, pages_done = $4, complete = true, last_run_id = $5,"
			 " pass_first_page = $7, updated_at = pg_catalog.clock_timestamp()" :
			 "INSERT INTO settle.ingest_checkpoint AS k (connector_id, scope, next_token, pages_done, complete,"
			 " last_run_id, account_id, pass_first_page)"
			 " VALUES ($1, $2, $3, $4, false, $5, $6, $7) ON CONFLICT (connector_id, scope) DO UPDATE"
			 " SET next_token = $3, pages_done = $4, complete = false, last_run_id = $5,"
			 " pass_first_page = $7, updated_at = pg_catalog.clock_timestamp()",
			 7, t, v, n, SPI_OK_INSERT);
}

/* ---------------------------------------------------------------------
 * alibaba_bss: normalizing one DescribeInstanceBill item
 * --------------------------------------------------------------------- */

/* A field's trimmed text, NULL when absent or blank (items are trimmed once). */
static inline char *
fld(BssItem *it, BssField f)
{
	return it->f[f];
}

static void
trim_item(BssItem *it)
{
	int			f;

	for (f = 0; f < BF__COUNT; f++)
	{
		char	   *s = it->f[f];

		if (s == NULL)
			continue;
		s = ingest_trim(s);
		it->f[f] = s[0] ? s : NULL;
	}
}

/* "key:k value:v; key:k2 value:v2" as a JSON object. */
static char *
tags_to_json(const char *tag)
{
	StringInfoData b;
	char	   *copy;
	char	   *part;
	char	   *save = NULL;
	bool		first = true;

	if (tag == NULL)
		return NULL;
	initStringInfo(&b);
	appendStringInfoChar(&b, '{');
	copy = pstrdup(tag);
	for (part = strtok_r(copy, ";", &save); part; part = strtok_r(NULL, ";", &save))
	{
		char	   *k = strstr(part, "key:");
		char	   *v = strstr(part, " value:");

		if (k == NULL || v == NULL || v < k)
			continue;
		*v = '\0';
		if (!first)
			appendStringInfoString(&b, ", ");
		escape_json(&b, ingest_trim(k + 4));
		appendStringInfoString(&b, ": ");
		escape_json(&b, ingest_trim(v + 7));
		first = false;
	}
	if (first)
	{
		appendStringInfoString(&b, "\"_raw\": ");
		escape_json(&b, tag);
	}
	appendStringInfoChar(&b, '}');
	return b.data;
}

static void
bss_normalize(Connector *c, BssItem *it, NormLine *l, bool repaired)
{
	StringInfoData content;
	StringInfoData key;
	int			f;
	char	   *item;
	char	   *acct;
	char	   *owner;
	char	   *date;
	char	   *billing_item;

	memset(l, 0, sizeof(NormLine));
	l->check_identity = true;
	trim_item(it);

	/* content hash over every field as the provider sent it (trimmed) */
	initStringInfo(&content);
	for (f = 0; f < BF__COUNT; f++)
	{
		char	   *v = fld(it, f);

		appendStringInfoString(&content, v ? v : "\x01");
		appendStringInfoChar(&content, '\x1f');
	}
	acs3_sha256(content.data, content.len, l->hash);

	/* bytes that were not UTF-8 (now U+FFFD) spoil the fields they were in */
	if (repaired)
		for (f = 0; f < BF__COUNT; f++)
			if (it->f[f] && it->isstr[f] && strstr(it->f[f], "\xEF\xBF\xBD"))
				ingest_line_error(l, "invalid_utf8:%s", bss_field_name(f));

	item = fld(it, BF_Item);
	acct = fld(it, BF_BillAccountID);
	owner = fld(it, BF_OwnerID);
	date = fld(it, BF_BillingDate);
	billing_item = fld(it, BF_BillingItemCode);
	if (billing_item == NULL)
		billing_item = fld(it, BF_BillingItem);

	initStringInfo(&key);
	appendStringInfo(&key, "bss:%s/%s/%s/%s/%s/%s/%s/%s/",
					 acct ? acct : "", owner ? owner : "", c->cycle,
					 date ? date : "-", fld(it, BF_ProductCode) ? fld(it, BF_ProductCode) : "",
					 fld(it, BF_InstanceID) ? fld(it, BF_InstanceID) : "",
					 billing_item ? billing_item : "",
					 fld(it, BF_SubscriptionType) ? fld(it, BF_SubscriptionType) : "");
	if (item && strcmp(item, "Refund") == 0)
		l->original_line_key = psprintf("%sSubscriptionOrder", key.data);
	appendStringInfoString(&key, item ? item : "");
	l->line_key = key.data;

	l->source_item = item;
	l->source_record_id = fld(it, BF_InstanceID);
	l->billing_account_id = acct;
	l->sub_account_id = owner;
	l->map_account = owner ? owner : acct;
	l->product_code = fld(it, BF_ProductCode);
	l->service_name = fld(it, BF_ProductName);
	l->sku_id = billing_item ? billing_item : fld(it, BF_CommodityCode);
	l->region_id = fld(it, BF_Region);
	l->resource_id = fld(it, BF_InstanceID);
	l->currency = fld(it, BF_Currency);
	l->tags_json = tags_to_json(fld(it, BF_Tag));

	if (acct == NULL)
		ingest_line_error(l, "missing:BillAccountID");
	if (l->product_code == NULL)
		ingest_line_error(l, "missing:ProductCode");
	if (l->currency == NULL)
		ingest_line_error(l, "missing:Currency");

	if (item == NULL)
		ingest_line_error(l, "missing:Item");
	else if (strcmp(item, "PayAsYouGoBill") == 0)
		l->charge_category = "Usage";
	else if (strcmp(item, "SubscriptionOrder") == 0 || strcmp(item, "Refund") == 0)
		l->charge_category = "Purchase";
	else if (strcmp(item, "Adjustment") == 0)
		l->charge_category = "Adjustment";
	else
		ingest_line_error(l, "unknown_item:%s", item);

	if (date && ingest_valid_date(date) && strncmp(date, c->cycle, 7) == 0)
	{
		l->line_date = date;
		l->charge_period_start = psprintf("%s 00:00:00+00", date);
		l->charge_period_end = psprintf("%s 00:00:00+00", ingest_next_day(date));
	}
	else
	{
		if (date)
			ingest_line_error(l, "invalid:BillingDate");
		l->line_date = psprintf("%s-01", c->cycle);
		l->charge_period_start = psprintf("%s-01 00:00:00+00", c->cycle);
		l->charge_period_end = psprintf("%s 00:00:00+00", ingest_next_month(c->cycle));
	}

	l->amt_null[AMT_LIST] = !ingest_parse_amount(l, "PretaxGrossAmount", it->f[BF_PretaxGrossAmount],
												 it->isstr[BF_PretaxGrossAmount], true, &l->amt[AMT_LIST]);
	l->amt_null[AMT_DISCOUNT] = !ingest_parse_amount(l, "InvoiceDiscount", it->f[BF_InvoiceDiscount],
													 it->isstr[BF_InvoiceDiscount], false, &l->amt[AMT_DISCOUNT]);
	l->amt_null[AMT_COUPON] = !ingest_parse_amount(l, "DeductedByCoupons", it->f[BF_DeductedByCoupons],
												   it->isstr[BF_DeductedByCoupons], false, &l->amt[AMT_COUPON]);
	l->amt_null[AMT_BILLED] = !ingest_parse_amount(l, "PretaxAmount", it->f[BF_PretaxAmount],
												   it->isstr[BF_PretaxAmount], true, &l->amt[AMT_BILLED]);
	l->amt_null[AMT_PAID] = !ingest_parse_amount(l, "PaymentAmount", it->f[BF_PaymentAmount],
												 it->isstr[BF_PaymentAmount], false, &l->amt[AMT_PAID]);
	/* the string-typed fields must still be decimals when present */
	{
		Datum		d;

		(void) ingest_parse_amount(l, "ListPrice", it->f[BF_ListPrice], true, false, &d);
		(void) ingest_parse_amount(l, "Usage", it->f[BF_Usage], true, false, &d);
		(void) ingest_parse_amount(l, "DeductedByResourcePackage", it->f[BF_DeductedByResourcePackage],
								   true, false, &d);
	}
}

static void
store_overview(IngestState *st, Connector *c, int64 raw_page_id, BssReply *reply)
{
	int			i;

	for (i = 0; i < reply->nitems; i++)
	{
		BssItem    *it = &reply->items[i];
		NormLine	dummy;
		Oid			t[17];
		Datum		v[17];
		char		n[18];
		int			k;
		static const BssField amts[6] = {BF_PretaxGrossAmount, BF_InvoiceDiscount, BF_DeductedByCoupons,
		BF_PretaxAmount, BF_PaymentAmount, BF_OutstandingAmount};
		static const BssField txts[6] = {BF_BillAccountID, BF_ProductCode, BF_ProductType,
		BF_SubscriptionType, BF_Item, BF_Currency};

		trim_item(it);
		memset(&dummy, 0, sizeof(dummy));
		memset(n, ' ', sizeof(n));
		t[0] = INT8OID;
		v[0] = Int64GetDatum(st->connector_id);
		t[1] = TEXTOID;
		v[1] = CStringGetTextDatum(c->cycle);
		t[2] = INT8OID;
		v[2] = Int64GetDatum(raw_page_id);
		t[3] = INT4OID;
		v[3] = Int32GetDatum(i + 1);
		for (k = 0; k < 6; k++)
		{
			t[4 + k] = TEXTOID;
			v[4 + k] = text_or_null(fld(it, txts[k]), &n[4 + k]);
		}
		for (k = 0; k < 6; k++)
		{
			t[10 + k] = NUMERICOID;
			if (!ingest_parse_amount(&dummy, "", it->f[amts[k]], it->isstr[amts[k]], false, &v[10 + k]))
				n[10 + k] = 'n';
		}
		t[16] = TEXTOID;
		v[16] = text_or_null(st->account_id, &n[16]);
		spi_exec("INSERT INTO settle.provider_total (connector_id, billing_cycle, raw_page_id, item_no,"
				 " billing_account_id, product_code, product_type, subscription_type, item, currency,"
				 " pretax_gross_amount, invoice_discount, deducted_by_coupons, pretax_amount,"
				 " payment_amount, outstanding_amount, bill_owner_id)"
				 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
				 17, t, v, n, SPI_OK_INSERT);
	}
}

/* ---------------------------------------------------------------------
 * One scope of a pull (one call for one cycle), page by page
 * --------------------------------------------------------------------- */

typedef struct RunCtx
{
	IngestState *st;
	Connector  *c;
	Credentials cred;
	HttpClient *client;
	bool		worker;
	MemoryContext pagecxt;
	/* settle.ingest_now: the checkpoint to write when the run ends */
	char	   *pending_scope;
	char	   *pending_token;
	int			pending_pages;
	int64		pending_first;
} RunCtx;

/* The scope of a call for the run's cycle and account (checkpoint key). */
static char *
scope_name(RunCtx *rc, const char *action)
{
	Connector  *c = rc->c;
	char	   *scope;

	if (strcmp(action, "QueryBillOverview") == 0)
		scope = psprintf("QueryBillOverview:%s", c->cycle);
	else
		scope = psprintf("DescribeInstanceBill:%s:%s%s%s", c->cycle, c->granularity,
						 c->billing_date ? ":" : "", c->billing_date ? c->billing_date : "");
	if (rc->st->account_id)
		scope = psprintf("%s:owner=%s", scope, rc->st->account_id);
	return scope;
}

/* Normalizes the items of one DescribeInstanceBill reply. */
static NormLine *
bss_lines(Connector *c, BssReply *reply)
{
	NormLine   *lines = palloc(sizeof(NormLine) * (reply->nitems + 1));
	int			i;

	for (i = 0; i < reply->nitems; i++)
		bss_normalize(c, &reply->items[i], &lines[i], reply->repaired);
	return lines;
}

/*
 * A resumed pass re-reads the pages it stored (from pass_first_page, in
 * order, from settle.raw_page) so that its items claim their lines again:
 * repeated items keep their numbers and the end of the pass knows every
 * line it saw.  Local work only: nothing is fetched or written.  Returns
 * false when the first page is gone (purged): the pass is then not whole.
 */
static bool
pass_replay(RunCtx *rc, const char *scope, int64 first_page)
{
	bool		whole = false;
	Oid			t[3] = {INT8OID, INT8OID, TEXTOID};
	Datum		v[3];
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext tmp = AllocSetContextCreate(CurrentMemoryContext, "settle ingest replay",
											  ALLOCSET_DEFAULT_SIZES);

	v[0] = Int64GetDatum(rc->st->connector_id);
	v[1] = Int64GetDatum(first_page);
	v[2] = CStringGetTextDatum(scope);
	plan = SPI_prepare("SELECT body, raw_page_id FROM settle.raw_page WHERE connector_id = $1 AND raw_page_id >= $2"
					   " AND request->>'scope' = $3 ORDER BY raw_page_id", 3, t);
	if (plan == NULL)
		elog(ERROR, "could not prepare the replay query");
	portal = SPI_cursor_open(NULL, plan, v, NULL, true);
	for (;;)
	{
		MemoryContext old;
		bytea	   *body;
		bool		isnull;
		char	   *text;
		size_t		len;
		BssReply	reply;
		int			nbad = 0;

		SPI_cursor_fetch(portal, true, 1);
		if (SPI_processed == 0)
			break;
		if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) == first_page)
			whole = true;
		old = MemoryContextSwitchTo(tmp);
		body = DatumGetByteaPP(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		len = VARSIZE_ANY_EXHDR(body);
		text = VARDATA_ANY(body);
		if (!pg_verify_mbstr(PG_UTF8, text, (int) len, true))
			text = repair_utf8(text, len, &len, &nbad);
		else
			text = pnstrdup(text, len);
		if (bss_parse_reply(text, len, &reply) == NULL)
		{
			reply.repaired = (nbad > 0);
			ingest_replay_lines(rc->st, bss_lines(rc->c, &reply), reply.nitems);
		}
		MemoryContextSwitchTo(old);
		MemoryContextReset(tmp);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(tmp);
	return whole;
}

/*
 * The end of a whole pass: every stored line of the scope (its latest
 * revision written by a page of the scope) that no item of the pass took is
 * withdrawn (settle.withdraw_lines).
 */
static void
pass_withdraw(RunCtx *rc, const char *scope, int64 raw_page_id)
{
	IngestState *st = rc->st;
	Oid			t[3] = {INT8OID, DATEOID, TEXTOID};
	Datum		v[3];
	Datum	   *gone;
	int			ngone = 0;
	uint64		i;

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = DirectFunctionCall1(date_in, CStringGetDatum(psprintf("%s-01", rc->c->cycle)));
	v[2] = CStringGetTextDatum(scope);
	if (SPI_execute_with_args("SELECT b.line_key FROM (SELECT DISTINCT ON (l.line_key) l.line_key, l.raw_page_id,"
							  " l.withdrawal_reason FROM settle.bill_line l"
							  " WHERE l.connector_id = $1 AND l.billing_period_start = $2"
							  " ORDER BY l.line_key, l.revision DESC) b"
							  " JOIN settle.raw_page p ON p.raw_page_id = b.raw_page_id"
							  " WHERE b.withdrawal_reason IS NULL AND p.request->>'scope' = $3",
							  3, t, v, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the scope's lines");
	gone = palloc(sizeof(Datum) * (SPI_processed + 1));
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (!ingest_pass_claimed(st->pass, key))
			gone[ngone++] = CStringGetTextDatum(key);
	}
	if (ngone > 0)
	{
		Oid			t2[5] = {INT8OID, TEXTARRAYOID, TEXTOID, INT8OID, INT8OID};
		Datum		v2[5];
		bool		isnull;

		v2[0] = Int64GetDatum(st->connector_id);
		v2[1] = PointerGetDatum(construct_array(gone, ngone, TEXTOID, -1, false, TYPALIGN_INT));
		v2[2] = CStringGetTextDatum(psprintf("not returned by a complete pull of %s", scope));
		v2[3] = Int64GetDatum(st->run_id);
		v2[4] = Int64GetDatum(raw_page_id);
		if (SPI_execute_with_args("SELECT settle.withdraw_lines($1, $2, $3, $4, $5)", 5, t2, v2, NULL,
								  false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not withdraw lines");
		st->lines_withdrawn += DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
														   1, &isnull));
	}
}

/*
 * Pulls one scope to its end.  Returns normally when every page is stored;
 * raises (inside a page transaction, already rolled back by the caller's
 * handler) when a page fails.
 */
static void
pull_scope(RunCtx *rc, const char *action)
{
	IngestState *st = rc->st;
	Connector  *c = rc->c;
	char	   *scope;
	char	   *token = NULL;
	int			pages_done = 0;
	bool		first = true;
	bool		describe = strcmp(action, "DescribeInstanceBill") == 0;
	IngestPass *pass = NULL;

	scope = MemoryContextStrdup(st->runcxt, scope_name(rc, action));
	st->pass = NULL;

	for (;;)
	{
		PageTx		tx = {rc->worker};
		MemoryContext old;
		Acs3Pair	q[9];
		int			nq = 0;
		BssReply	reply;
		HttpResult *r;
		TimestampTz requested_at;
		int64		raw_page_id;
		char	   *next;

		page_begin(&tx);
		old = MemoryContextSwitchTo(rc->pagecxt);

		if (first)
		{
			int64		pass_first = 0;

			token = checkpoint_start(st, scope, &pages_done, &pass_first);
			if (describe)
			{
				pass = ingest_pass_create(st->runcxt);
				st->pass = pass;
				if (token == NULL)
					pass->whole = true;
				else if (pass_first > 0)
				{
					pass->whole = pass_replay(rc, scope, pass_first);
					pass->first_page = pass_first;
				}
			}
			first = false;
		}
		if (rc->worker)
			pgstat_report_activity(STATE_RUNNING,
								   psprintf("settle ingest: %s %s %s%s%s page %d",
											c->name, action, c->cycle,
											st->account_id ? " owner " : "",
											st->account_id ? st->account_id : "", pages_done + 1));

		q[nq].name = "BillingCycle";
		q[nq++].value = c->cycle;
		if (st->account_id)
		{
			q[nq].name = "BillOwnerId";
			q[nq++].value = st->account_id;
		}
		if (describe)
		{
			q[nq].name = "Granularity";
			q[nq++].value = c->granularity;
			if (c->billing_date)
			{
				q[nq].name = "BillingDate";
				q[nq++].value = c->billing_date;
			}
			q[nq].name = "MaxResults";
			q[nq++].value = psprintf("%d", c->max_results);
			if (token)
			{
				q[nq].name = "NextToken";
				q[nq++].value = token;
			}
		}

		r = bss_call(st, rc->client, c, &rc->cred, action, q, nq, &reply, &requested_at);

		raw_page_id = ingest_insert_raw_page(st, request_json(c, scope, action, q, nq), r->status,
											 r->body, r->body_len, requested_at);
		st->pages++;
		next = NULL;
		if (!describe)
			store_overview(st, c, raw_page_id, &reply);
		else
		{
			if (pass->first_page == 0)
				pass->first_page = raw_page_id;
			ingest_store_lines(st, raw_page_id, psprintf("%s-01", c->cycle), c->cycle,
							   bss_lines(c, &reply), reply.nitems);
			next = reply.next_token ? ingest_trim(reply.next_token) : NULL;
			if (next && next[0] == '\0')
				next = NULL;
			if (next && token && strcmp(next, token) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATA_EXCEPTION),
						 errmsg("DescribeInstanceBill at \"%s\" returned the NextToken it was given", c->endpoint),
						 errdetail("Following it would loop; the page was not stored.")));
			/* the last page of a whole pass: what it did not see is gone */
			if (next == NULL && pass->whole)
				pass_withdraw(rc, scope, raw_page_id);
		}
		pages_done++;
		token = next ? MemoryContextStrdup(st->runcxt, next) : NULL;

		/*
		 * The worker commits every page with its checkpoint and counts.
		 * settle.ingest_now is one transaction, of which nobody sees a page
		 * before the end: it writes the checkpoint of its last stored page
		 * once, when the scope ends or the run fails (rewriting the one row
		 * per page would grow a chain of row versions that every later page
		 * has to walk).
		 */
		if (rc->worker)
		{
			checkpoint_save(st, scope, next, pages_done, pass ? pass->first_page : 0);
			run_update_counts(st);
		}
		else if (token == NULL)
		{
			checkpoint_save(st, scope, NULL, pages_done, 0);
			rc->pending_scope = NULL;
		}
		else
		{
			rc->pending_scope = scope;
			rc->pending_token = token;
			rc->pending_pages = pages_done;
			rc->pending_first = pass ? pass->first_page : 0;
		}

		MemoryContextSwitchTo(old);
		page_commit(&tx);
		counts_stored(st);
		MemoryContextReset(rc->pagecxt);

		if (token == NULL)
			break;
	}
	st->pass = NULL;
	if (pass)
		MemoryContextDelete(pass->cxt);
}

/* ---------------------------------------------------------------------
 * The run
 * --------------------------------------------------------------------- */

static void
load_connector(int64 id, Connector *c, MemoryContext cxt)
{
	Oid			t[1] = {INT8OID};
	Datum		v[1];
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;

	v[0] = Int64GetDatum(id);
	if (SPI_execute_with_args("SELECT name, kind, endpoint, secret_name, config::text,"
							  " config->>'billing_cycle', coalesce(config->>'granularity', 'MONTHLY'),"
							  " config->>'billing_date', coalesce((config->>'max_results')::int, 300),"
							  " coalesce((config->>'overview')::boolean, true)"
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
	c->kind = SPI_getvalue(tup, td, 2);
	c->endpoint = SPI_getvalue(tup, td, 3);
	c->secret_name = SPI_getvalue(tup, td, 4);
	c->config = SPI_getvalue(tup, td, 5);
	c->cycle = SPI_getvalue(tup, td, 6);
	c->granularity = SPI_getvalue(tup, td, 7);
	c->billing_date = SPI_getvalue(tup, td, 8);
	c->max_results = atoi(SPI_getvalue(tup, td, 9));
	c->overview = strcmp(SPI_getvalue(tup, td, 10), "t") == 0;
	MemoryContextSwitchTo(old);

	/* member accounts, pulled each with BillOwnerId (checked on insert) */
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
 * focus_csv: FinOps FOCUS CSV files (path, file:// or https://)
 * --------------------------------------------------------------------- */

typedef struct CsvRow
{
	int			nfields;
	char	  **f;
} CsvRow;

/*
 * Splits RFC 4180 CSV text in place into rows of fields ("" escapes quotes,
 * quoted fields may hold commas and line breaks; CRLF or LF).  Returns the
 * number of rows; a quote left open raises 22P04.
 */
static int
csv_split(char *buf, size_t len, CsvRow **rows_out)
{
	int			maxrows = 1024;
	int			nrows = 0;
	CsvRow	   *rows = palloc(sizeof(CsvRow) * maxrows);
	char	   *p = buf;
	char	   *end = buf + len;

	/* a UTF-8 byte order mark is not part of the first column name */
	if (len >= 3 && (unsigned char) p[0] == 0xEF && (unsigned char) p[1] == 0xBB && (unsigned char) p[2] == 0xBF)
		p += 3;
	while (p < end)
	{
		int			maxf = 32;
		CsvRow	   *r;

		if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n'))
		{
			p += (*p == '\r') ? 2 : 1;	/* blank line */
			continue;
		}
		if (nrows >= maxrows)
		{
			maxrows *= 2;
			rows = repalloc(rows, sizeof(CsvRow) * maxrows);
		}
		r = &rows[nrows++];
		r->nfields = 0;
		r->f = palloc(sizeof(char *) * maxf);
		for (;;)
		{
			char	   *out = p;
			char	   *start = p;

			if (r->nfields >= maxf)
			{
				maxf *= 2;
				r->f = repalloc(r->f, sizeof(char *) * maxf);
			}
			if (p < end && *p == '"')
			{
				p++;
				for (;;)
				{
					if (p >= end)
						ereport(ERROR,
								(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
								 errmsg("unterminated quoted field in CSV row %d", nrows)));
					if (*p == '"')
					{
						if (p + 1 < end && p[1] == '"')
						{
							*out++ = '"';
							p += 2;
							continue;
						}
						p++;
						break;
					}
					*out++ = *p++;
				}
				while (p < end && *p != ',' && *p != '\n' && *p != '\r')
					p++;		/* junk after the closing quote is ignored */
			}
			else
			{
				while (p < end && *p != ',' && *p != '\n' && *p != '\r')
					p++;
				out = p;
			}
			r->f[r->nfields++] = start;
			if (p >= end)
			{
				*out = '\0';	/* buffer has a spare byte at the end */
				break;
			}
			if (*p == ',')
			{
				*out = '\0';
				p++;
				continue;
			}
			/* end of line */
			if (*p == '\r' && p + 1 < end && p[1] == '\n')
			{
				*out = '\0';
				p += 2;
			}
			else
			{
				*out = '\0';
				p++;
			}
			break;
		}
	}
	*rows_out = rows;
	return nrows;
}

static bool
valid_timestamp_text(const char *s)
{
	/* YYYY-MM-DD, optionally followed by [T ]HH:MM[:SS[.fff]][Z|+hh:mm] */
	const char *p;

	if (s == NULL || strlen(s) < 10)
		return false;
	{
		char		d[11];

		memcpy(d, s, 10);
		d[10] = '\0';
		if (!ingest_valid_date(d))
			return false;
	}
	p = s + 10;
	if (*p == '\0')
		return true;
	if (*p != 'T' && *p != ' ')
		return false;
	p++;
	if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1]) && p[2] == ':' &&
		  isdigit((unsigned char) p[3]) && isdigit((unsigned char) p[4])))
		return false;
	if ((p[0] - '0') * 10 + (p[1] - '0') > 23 || (p[3] - '0') * 10 + (p[4] - '0') > 59)
		return false;
	p += 5;
	if (*p == ':')
	{
		p++;
		if (!(isdigit((unsigned char) p[0]) && isdigit((unsigned char) p[1])) ||
			(p[0] - '0') * 10 + (p[1] - '0') > 60)
			return false;
		p += 2;
		if (*p == '.')
		{
			p++;
			while (isdigit((unsigned char) *p))
				p++;
		}
	}
	if (*p == 'Z')
		p++;
	else if (*p == '+' || *p == '-')
	{
		p++;
		while (isdigit((unsigned char) *p) || *p == ':')
			p++;
	}
	return *p == '\0';
}

static bool
valid_json_text(const char *s)
{
	JsonLexContext *lex = makeJsonLexContextCstringLen((char *) s, strlen(s), PG_UTF8, false);
	JsonSemAction sem;

	char	   *t = ingest_trim(pstrdup(s));

	memset(&sem, 0, sizeof(sem));
	return t[0] == '{' && pg_parse_json(lex, &sem) == JSON_SUCCESS;
}

enum
{
	FC_BilledCost, FC_ListCost, FC_ContractedCost, FC_ChargeCategory, FC_ChargeClass,
	FC_ChargePeriodStart, FC_ChargePeriodEnd, FC_BillingPeriodStart, FC_BillingAccountId,
	FC_SubAccountId, FC_ServiceName, FC_ServiceCategory, FC_RegionId, FC_ResourceId, FC_SkuId,
	FC_BillingCurrency, FC_Tags, FC_x_ProductCode, FC__COUNT
};

static const char *const focus_names[FC__COUNT] = {
	"BilledCost", "ListCost", "ContractedCost", "ChargeCategory", "ChargeClass",
	"ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingAccountId",
	"SubAccountId", "ServiceName", "ServiceCategory", "RegionId", "ResourceId", "SkuId",
	"BillingCurrency", "Tags", "x_ProductCode"
};

static void
ingest_pull_focus_csv(IngestState *st, Connector *c, HttpClient *client, bool worker,
					  MemoryContext pagecxt)
{
	PageTx		tx = {worker};
	MemoryContext old;
	char	   *url = c->endpoint;
	HttpResult	r;
	TimestampTz requested_at;
	CsvRow	   *rows;
	int			nrows;
	int			col[FC__COUNT];
	int			i;
	int64		raw_page_id;
	NormLine   *lines;
	HTAB	   *seen;
	HASHCTL		ctl;
	StringInfoData req;
	char	   *scope;

	page_begin(&tx);
	old = MemoryContextSwitchTo(pagecxt);

	if (url[0] == '/')
		url = psprintf("file://%s", url);
	if (worker)
		pgstat_report_activity(STATE_RUNNING, psprintf("settle ingest: %s focus_csv", c->name));
	requested_at = GetCurrentTimestamp();
	http_get(client, url, NULL, 0, false, &r);
	st->requests++;
	memset(&failure, 0, sizeof(failure));
	failure.http_status = r.status;
	if (r.curl_code != 0)
		http_raise(url, &r);
	if (r.status != 0 && (r.status < 200 || r.status >= 300))
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("FOCUS file \"%s\" could not be fetched: HTTP %ld", url, r.status)));

	initStringInfo(&req);
	appendStringInfoString(&req, "{\"action\": \"focus_csv\", \"url\": ");
	escape_json(&req, url);
	appendStringInfoString(&req, "}");
	raw_page_id = ingest_insert_raw_page(st, req.data, r.status ? r.status : 200,
										 r.body, r.body_len, requested_at);
	st->pages++;

	/* split a copy: the raw page keeps the verbatim bytes */
	{
		char	   *copy = palloc(r.body_len + 1);

		memcpy(copy, r.body, r.body_len);
		copy[r.body_len] = '\0';
		if (pg_verifymbstr(copy, r.body_len, true) == false)
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("FOCUS file \"%s\" is not valid UTF-8", url)));
		nrows = csv_split(copy, r.body_len, &rows);
	}
	if (nrows < 1)
		ereport(ERROR,
				(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
				 errmsg("FOCUS file \"%s\" is empty", url)));
	for (i = 0; i < FC__COUNT; i++)
	{
		int			k;

		col[i] = -1;
		for (k = 0; k < rows[0].nfields; k++)
			if (strcmp(ingest_trim(rows[0].f[k]), focus_names[i]) == 0)
				col[i] = k;
	}
	for (i = 0; i <= FC_BillingAccountId; i++)
		if (col[i] < 0 && i != FC_ContractedCost && i != FC_ChargeClass && i != FC_ChargePeriodEnd)
			ereport(ERROR,
					(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
					 errmsg("FOCUS file \"%s\" has no column \"%s\"", url, focus_names[i]),
					 errdetail("The first row must name the FOCUS columns (BilledCost, ListCost, ChargeCategory, ChargePeriodStart, BillingPeriodStart, BillingAccountId, ...).")));

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = 512;
	ctl.entrysize = 512 + sizeof(int);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("settle focus keys", 1024, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	lines = palloc0(sizeof(NormLine) * nrows);
	for (i = 1; i < nrows; i++)
	{
		CsvRow	   *row = &rows[i];
		NormLine   *l = &lines[i - 1];
		char	   *v[FC__COUNT];
		StringInfoData content;
		StringInfoData key;
		int			k;
		char	   *bps;
		bool		found;
		char		hkey[512];
		int		   *occ;

		for (k = 0; k < FC__COUNT; k++)
		{
			v[k] = (col[k] >= 0 && col[k] < row->nfields) ? ingest_trim(row->f[col[k]]) : NULL;
			if (v[k] && v[k][0] == '\0')
				v[k] = NULL;
		}
		initStringInfo(&content);
		for (k = 0; k < row->nfields; k++)
		{
			appendStringInfoString(&content, row->f[k]);
			appendStringInfoChar(&content, '\x1f');
		}
		acs3_sha256(content.data, content.len, l->hash);

		if (row->nfields != rows[0].nfields)
			ingest_line_error(l, "column_count:%d", row->nfields);
		l->billing_account_id = v[FC_BillingAccountId];
		l->sub_account_id = v[FC_SubAccountId];
		l->map_account = v[FC_SubAccountId] ? v[FC_SubAccountId] : v[FC_BillingAccountId];
		l->service_name = v[FC_ServiceName];
		l->product_code = v[FC_x_ProductCode] ? v[FC_x_ProductCode] : v[FC_ServiceName];
		l->region_id = v[FC_RegionId];
		l->resource_id = v[FC_ResourceId];
		l->source_record_id = v[FC_ResourceId];
		l->sku_id = v[FC_SkuId];
		l->currency = v[FC_BillingCurrency];
		l->source_item = v[FC_ChargeCategory];
		if (l->billing_account_id == NULL)
			ingest_line_error(l, "missing:BillingAccountId");
		if (l->currency == NULL)
			ingest_line_error(l, "missing:BillingCurrency");
		if (l->product_code == NULL)
			ingest_line_error(l, "missing:ServiceName");
		if (v[FC_ChargeCategory] == NULL)
			ingest_line_error(l, "missing:ChargeCategory");
		else if (strcmp(v[FC_ChargeCategory], "Usage") == 0 || strcmp(v[FC_ChargeCategory], "Purchase") == 0 ||
				 strcmp(v[FC_ChargeCategory], "Tax") == 0 || strcmp(v[FC_ChargeCategory], "Credit") == 0 ||
				 strcmp(v[FC_ChargeCategory], "Adjustment") == 0)
			l->charge_category = v[FC_ChargeCategory];
		else
			ingest_line_error(l, "unknown_charge_category:%s", v[FC_ChargeCategory]);
		if (v[FC_ChargeClass] && strcmp(v[FC_ChargeClass], "Correction") == 0)
			l->charge_class = "Correction";
		else if (v[FC_ChargeClass])
			ingest_line_error(l, "unknown_charge_class:%s", v[FC_ChargeClass]);

		bps = v[FC_BillingPeriodStart];
		if (bps == NULL || !valid_timestamp_text(bps))
		{
			ingest_line_error(l, bps ? "invalid:BillingPeriodStart" : "missing:BillingPeriodStart");
			bps = NULL;
		}
		if (v[FC_ChargePeriodStart] && valid_timestamp_text(v[FC_ChargePeriodStart]))
		{
			l->charge_period_start = v[FC_ChargePeriodStart];
			l->line_date = pnstrdup(v[FC_ChargePeriodStart], 10);
		}
		else
		{
			ingest_line_error(l, v[FC_ChargePeriodStart] ? "invalid:ChargePeriodStart" : "missing:ChargePeriodStart");
			l->charge_period_start = bps ? bps : "1970-01-01";
			l->line_date = pnstrdup(l->charge_period_start, 10);
		}
		if (v[FC_ChargePeriodEnd] && valid_timestamp_text(v[FC_ChargePeriodEnd]))
			l->charge_period_end = v[FC_ChargePeriodEnd];
		else
		{
			if (v[FC_ChargePeriodEnd])
				ingest_line_error(l, "invalid:ChargePeriodEnd");
			l->charge_period_end = l->charge_period_start;
		}
		l->amt_null[AMT_LIST] = !ingest_parse_amount(l, "ListCost", v[FC_ListCost], false, true, &l->amt[AMT_LIST]);
		l->amt_null[AMT_BILLED] = !ingest_parse_amount(l, "BilledCost", v[FC_BilledCost], false, true, &l->amt[AMT_BILLED]);
		l->amt_null[AMT_DISCOUNT] = true;
		l->amt_null[AMT_COUPON] = true;
		l->amt_null[AMT_PAID] = true;
		if (v[FC_Tags])
		{
			if (valid_json_text(v[FC_Tags]))
				l->tags_json = v[FC_Tags];
			else
				ingest_line_error(l, "invalid:Tags");
		}

		initStringInfo(&key);
		appendStringInfo(&key, "focus:%s/%s/%s/%s/%s/%s/%s",
						 v[FC_BillingAccountId] ? v[FC_BillingAccountId] : "",
						 v[FC_SubAccountId] ? v[FC_SubAccountId] : "",
						 v[FC_ChargePeriodStart] ? v[FC_ChargePeriodStart] : "",
						 v[FC_ResourceId] ? v[FC_ResourceId] : "",
						 v[FC_SkuId] ? v[FC_SkuId] : "",
						 v[FC_ChargeCategory] ? v[FC_ChargeCategory] : "",
						 v[FC_ChargeClass] ? v[FC_ChargeClass] : "");
		/* rows sharing a key in one file are told apart by their order */
		memset(hkey, 0, sizeof(hkey));
		strlcpy(hkey, key.data, sizeof(hkey));
		occ = (int *) ((char *) hash_search(seen, hkey, HASH_ENTER, &found) + 512);
		if (!found)
			*occ = 0;
		(*occ)++;
		appendStringInfo(&key, "#%d", *occ);
		l->line_key = key.data;
	}

	/* lines are grouped by billing period: ingest_store_lines takes one */
	{
		int			start = 0;

		while (start < nrows - 1)
		{
			NormLine   *l0 = &lines[start];
			char	   *bp;
			int			end = start + 1;
			char		period[8];

			bp = (col[FC_BillingPeriodStart] >= 0 && col[FC_BillingPeriodStart] < rows[start + 1].nfields &&
				  valid_timestamp_text(ingest_trim(rows[start + 1].f[col[FC_BillingPeriodStart]])))
				? pnstrdup(ingest_trim(rows[start + 1].f[col[FC_BillingPeriodStart]]), 10)
				: pnstrdup(l0->line_date, 10);
			while (end < nrows - 1)
			{
				char	   *bp2 = (col[FC_BillingPeriodStart] >= 0 && col[FC_BillingPeriodStart] < rows[end + 1].nfields)
				? ingest_trim(rows[end + 1].f[col[FC_BillingPeriodStart]]) : "";

				if (strncmp(bp2, bp, 10) != 0)
					break;
				end++;
			}
			memcpy(period, bp, 7);
			period[7] = '\0';
			ingest_store_lines(st, raw_page_id, bp, period, &lines[start], end - start);
			start = end;
		}
	}

	scope = psprintf("focus_csv:%s", c->endpoint);
	checkpoint_save(st, scope, NULL, 1, 0);
	run_update_counts(st);

	MemoryContextSwitchTo(old);
	page_commit(&tx);
	counts_stored(st);
	MemoryContextReset(pagecxt);
}

/* ---------------------------------------------------------------------
 * One pull per connector at a time
 * --------------------------------------------------------------------- */

#define PULL_LOCK_CLASS 0x5E771E00

/*
 * Takes the connector's pull lock without waiting: a transaction-level
 * advisory lock for settle.ingest_now (held until the caller's transaction
 * ends, as its pages are), a session-level one for the worker (released
 * after the pull).
 */
static bool
pull_lock_try(int64 connector_id, bool session)
{
	Datum		k1 = Int32GetDatum(PULL_LOCK_CLASS);
	Datum		k2 = Int32GetDatum((int32) connector_id);

	return DatumGetBool(session ?
						DirectFunctionCall2(pg_try_advisory_lock_int4, k1, k2) :
						DirectFunctionCall2(pg_try_advisory_xact_lock_int4, k1, k2));
}

static void
pull_lock_release(int64 connector_id)
{
	(void) DirectFunctionCall2(pg_advisory_unlock_int4, Int32GetDatum(PULL_LOCK_CLASS),
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
			const char *account)
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
	fprintf(f, INT64_FORMAT " %d " INT64_FORMAT " " INT64_FORMAT " %s %s\n",
			connector_id, MyProcPid, (int64) MyStartTimestamp, (int64) started_at,
			cycle, account ? account : "-");
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
		ListCell   *lc;
		bool		seen = false;
		Oid			t[8] = {INT4OID, TIMESTAMPTZOID, INT8OID, TIMESTAMPTZOID, INT8OID, TEXTOID, TEXTOID, TEXTOID};
		Datum		v[8];
		char		n[8] = "        ";
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
		if (fscanf(f, "%lld %d %lld %lld %15s %63s", &connector_id, &pid, &backend_start, &started_at,
				   cycle, account) != 6)
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
		if (SPI_execute_with_args("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a"
								  "  WHERE a.pid = $1 AND a.backend_start = $2)",
								  2, t, v, n, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read pg_stat_activity");
		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
			continue;			/* still running */
		/* unless its run row committed after all, record the dead pull */
		if (SPI_execute_with_args("INSERT INTO settle.ingest_run (connector_id, billing_cycle, account_id,"
								  " triggered_by, status, started_at, finished_at, backend_pid, error_sqlstate,"
								  " error_message)"
								  " SELECT $5, $6, $7, 'sql', 'failed', $4, pg_catalog.clock_timestamp(), $1, '57P01', $8"
								  " WHERE EXISTS (SELECT 1 FROM settle.connector c WHERE c.connector_id = $5)"
								  " AND NOT EXISTS (SELECT 1 FROM settle.ingest_run r WHERE r.ingest_run_id = $3"
								  "  AND r.backend_pid = $1 AND r.started_at = $4)"
								  " AND $2 IS NOT NULL",
								  8, t, v, n, false, 0) != SPI_OK_INSERT)
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
 * account is NULL, else a member account pulled with BillOwnerId) and
 * returns the ingest run id.  In the worker (from_worker) the run row and
 * every page commit on their own; from SQL everything happens inside the
 * caller's transaction, and a trace file records the run until the
 * transaction ends (see trace_write).  Provider, network and data failures
 * end the run as failed and do not raise; cancel and shutdown requests do.
 */
static int64
run_account(Connector *c, const char *account, bool from_worker, MemoryContext parentcxt)
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
	memset(&rc, 0, sizeof(rc));
	rc.st = st;
	rc.c = c;
	rc.worker = from_worker;
	rc.pagecxt = AllocSetContextCreate(runcxt, "settle ingest page", ALLOCSET_DEFAULT_SIZES);

	/* the run row */
	if (from_worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	{
		Oid			t[5] = {INT8OID, TEXTOID, TEXTOID, INT4OID, TEXTOID};
		Datum		v[5];
		char		n[5] = "     ";
		bool		isnull;

		v[0] = Int64GetDatum(connector_id);
		v[1] = CStringGetTextDatum(c->cycle);
		v[2] = CStringGetTextDatum(from_worker ? "worker" : "sql");
		v[3] = Int32GetDatum(MyProcPid);
		v[4] = text_or_null(st->account_id, &n[4]);
		spi_exec("INSERT INTO settle.ingest_run (connector_id, billing_cycle, triggered_by, backend_pid, account_id)"
				 " VALUES ($1, $2, $3, $4, $5) RETURNING ingest_run_id, started_at", 5, t, v, n,
				 SPI_OK_INSERT_RETURNING);
		run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		started_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	}
	SPI_finish();
	/* a pull inside the caller's transaction leaves a trace a crash cannot roll back */
	if (!from_worker)
		trace_write(run_id, connector_id, started_at, c->cycle, st->account_id);
	if (from_worker)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
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
			if (strcmp(c->kind, "alibaba_bss") == 0)
			{
				secret_lookup(c->secret_name, &rc.cred);
				if (c->overview)
					pull_scope(&rc, "QueryBillOverview");
				pull_scope(&rc, "DescribeInstanceBill");
			}
			else
				ingest_pull_focus_csv(st, c, rc.client, from_worker, rc.pagecxt);
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
	if (from_worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (rc.pending_scope)
		checkpoint_save(st, rc.pending_scope, rc.pending_token, rc.pending_pages, rc.pending_first);
	run_update_counts(st);
	{
		Oid			t[8] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
		Datum		v[8];
		char		n[9] = "        ";

		v[0] = Int64GetDatum(run_id);
		v[1] = CStringGetTextDatum(failed ? "failed" : "succeeded");
		if (failed && failure.http_status)
			v[2] = Int32GetDatum((int32) failure.http_status);
		else
			n[2] = 'n';
		v[3] = failed ? CStringGetTextDatum(unpack_sql_state(edata->sqlerrcode)) : (n[3] = 'n', (Datum) 0);
		v[4] = failed ? CStringGetTextDatum(edata->detail ? psprintf("%s: %s", edata->message, edata->detail)
											: edata->message) : (n[4] = 'n', (Datum) 0);
		v[5] = text_or_null(failed ? failure.code : NULL, &n[5]);
		v[6] = text_or_null(failed ? failure.message : NULL, &n[6]);
		v[7] = text_or_null(failed ? failure.request_id : NULL, &n[7]);
		spi_exec("UPDATE settle.ingest_run SET status = $2, finished_at = pg_catalog.clock_timestamp(),"
				 " http_status = $3, error_sqlstate = $4, error_message = $5, provider_code = $6,"
				 " provider_message = $7, provider_request_id = $8 WHERE ingest_run_id = $1",
				 8, t, v, n, SPI_OK_UPDATE);
	}
	SPI_finish();
	if (from_worker)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
	}
	if (failed)
		ereport(from_worker ? LOG : NOTICE,
				(errmsg("settle ingest of connector \"%s\"%s%s failed: %s", c->name,
						account ? " account " : "", account ? account : "", edata->message),
				 errdetail("See settle.ingest_run %s.", psprintf(INT64_FORMAT, run_id))));
	memset(&failure, 0, sizeof(failure));
	MemoryContextSwitchTo(callercxt);
	MemoryContextDelete(runcxt);
	return run_id;
}

/*
 * Pulls a connector: its own account, then each member account, one run
 * each; returns the number of runs and (when run_ids is not NULL) their
 * ids.  One pull per connector at a time: settle.ingest_now raises 55P03
 * when the worker or another session pulls the connector; the worker skips
 * it (returns 0).
 */
int
ingest_run_connector(int64 connector_id, const char *billing_cycle, bool from_worker,
					 int64 **run_ids)
{
	MemoryContext callercxt = CurrentMemoryContext;
	MemoryContext cxt;
	Connector  *c;
	List	   *accounts;
	ListCell   *lc;
	int64	   *ids;
	int			n = 0;

	cxt = AllocSetContextCreate(from_worker ? TopMemoryContext : CurrentMemoryContext,
								"settle ingest pull", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(cxt);
	c = palloc0(sizeof(Connector));
	if (from_worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		PushActiveSnapshot(GetTransactionSnapshot());
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* without a worker (not preloaded) nobody else closes runs cut short */
	if (!from_worker)
		ingest_fail_orphaned_runs();
	load_connector(connector_id, c, cxt);
	if (!pull_lock_try(connector_id, from_worker))
	{
		if (!from_worker)
			pull_lock_refuse(connector_id, c->name);
		SPI_finish();
		PopActiveSnapshot();
		CommitTransactionCommand();
		elog(LOG, "settle ingest worker: connector \"%s\" is being pulled by another process; skipped",
			 c->name);
		MemoryContextSwitchTo(callercxt);
		MemoryContextDelete(cxt);
		if (run_ids)
			*run_ids = NULL;
		return 0;
	}
	if (billing_cycle)
		c->cycle = MemoryContextStrdup(cxt, billing_cycle);
	else if (c->cycle == NULL)
		c->cycle = MemoryContextStrdup(cxt, default_cycle());
	if (!valid_cycle(c->cycle))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid billing cycle \"%s\"", c->cycle),
				 errhint("A billing cycle is written YYYY-MM.")));
	if (strcmp(c->granularity, "DAILY") == 0 && c->billing_date == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("connector \"%s\" has granularity DAILY but no billing_date", c->name)));
	SPI_finish();
	if (from_worker)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
	}

	MemoryContextSwitchTo(cxt);
	accounts = list_make1(NULL);
	if (strcmp(c->kind, "alibaba_bss") == 0)
		accounts = list_concat(accounts, c->members);
	ids = MemoryContextAlloc(callercxt, sizeof(int64) * list_length(accounts));
	foreach(lc, accounts)
	{
		ids[n++] = run_account(c, (const char *) lfirst(lc), from_worker, cxt);
		MemoryContextSwitchTo(cxt);
	}

	if (from_worker)
	{
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		pull_lock_release(connector_id);
		CommitTransactionCommand();
	}
	MemoryContextSwitchTo(callercxt);
	MemoryContextDelete(cxt);
	if (run_ids)
		*run_ids = ids;
	return n;
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
	n = ingest_run_connector(id, cycle, false, &ids);
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
	n = ingest_run_connector(PG_GETARG_INT64(0), cycle, false, &ids);
	return return_runs(fcinfo, ids, n);
}
