/*
 * ingest.h — declarations shared by the ingestion modules: the ACS3 signer
 * (acs3.c), the libcurl client (http.c), the bill page reader
 * (ingest_json.c), the pull itself (ingest.c) and the background worker
 * (worker.c).
 */
#ifndef SETTLE_INGEST_H
#define SETTLE_INGEST_H

#include "lib/stringinfo.h"

/* acs3.c */
typedef struct Acs3Pair
{
	char	   *name;
	char	   *value;
} Acs3Pair;

extern void acs3_sha256_hex(const char *data, size_t len, char *hex);
extern void acs3_sha256(const char *data, size_t len, uint8 *out);
extern char *acs3_pct_encode(const char *s);
extern char *acs3_sign(const char *method, const char *host,
					   Acs3Pair *query, int nquery,
					   Acs3Pair *headers, int nheaders,
					   const char *body, size_t bodylen,
					   const char *access_key_id, const char *access_key_secret);

/* http.c */
typedef struct HttpClient HttpClient;

typedef struct HttpResult
{
	int			curl_code;		/* CURLcode; 0 when the transfer completed */
	long		status;			/* HTTP status, 0 when none */
	char	   *body;			/* palloc'd copy, NUL-terminated */
	size_t		body_len;
	char	   *content_type;	/* palloc'd, or NULL */
	char	   *request_id;		/* x-acs-request-id header, or NULL */
	bool		too_large;		/* aborted: over settle.http_max_response_bytes */
	bool		aborted;		/* aborted by a cancel or shutdown request */
	bool		refused;		/* an internal address was refused, none connected */
	char		errbuf[256];	/* curl's message */
} HttpResult;

extern HttpClient *http_client_create(void);
extern void http_check_url(const char *url);
extern void http_check_endpoint(const char *url, bool literal_address);
extern char *http_scrub_userinfo(const char *text);
extern void http_get(HttpClient *client, const char *url, const char **headers,
					 int nheaders, bool post, HttpResult *result);
extern void http_raise(const char *url, HttpResult *result) pg_attribute_noreturn();
extern bool http_retryable(HttpResult *result);

/* GUCs (ingest.c) */
extern bool settle_allow_insecure_transport;
extern bool settle_allow_private_endpoints;
extern char *settle_ca_file;
extern int	settle_http_connect_timeout_ms;
extern int	settle_http_timeout_ms;
extern int	settle_http_max_response_bytes;
extern int	settle_ingest_max_attempts;
extern int	settle_ingest_retry_base_ms;
extern int	settle_ingest_requests_per_second;
extern char *settle_secret_file;
extern char *settle_database;
extern int	settle_worker_naptime_ms;
extern int	settle_worker_retry_after_ms;

/* ingest.c */
extern int	ingest_run_connector(int64 connector_id, const char *billing_cycle,
								 bool from_worker, int64 **run_ids);
extern void ingest_fail_orphaned_runs(void);

/* worker.c */
extern void settle_worker_register(void);

#endif							/* SETTLE_INGEST_H */
