/*
 * ingest_settings.c — the ingestion settings (settle.http_*, settle.ingest_*,
 * settle.worker_*, settle.secret_file, ...) and the secret store: a file only
 * the server's OS user can read, or the server environment.  Secrets are
 * looked up by name when a pull starts and never written anywhere.
 */
#include "postgres.h"

#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/guc.h"

#include "settle.h"
#include "ingest.h"

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
void
ingest_secret_lookup(const char *name, Credentials *cred)
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
