/*
 * http.h — the libcurl client of ingestion (http.c) and the settings that
 * bound it.  Connectors fetch through it; nothing else in settle talks to
 * the network.
 */
#ifndef SETTLE_HTTP_H
#define SETTLE_HTTP_H

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

/* settings (defined in ingest_settings.c) */
extern bool settle_allow_insecure_transport;
extern bool settle_allow_private_endpoints;
extern char *settle_ca_file;
extern int	settle_http_connect_timeout_ms;
extern int	settle_http_timeout_ms;
extern int	settle_http_max_response_bytes;

#endif							/* SETTLE_HTTP_H */
