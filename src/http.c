/*
 * http.c — the libcurl client used by ingestion.
 *
 * Promises: libcurl is initialised lazily in the backend or worker that uses
 * it (never in the postmaster); only https is allowed unless the superuser
 * setting settle.allow_insecure_transport also allows http and file; TLS
 * peer and host verification are always on (settle.ca_file adds a private
 * CA bundle); connect and total timeouts and a response-size limit apply;
 * a query cancel or shutdown request aborts a transfer from the progress
 * callback; the curl handle is freed by a memory-context reset callback, so
 * an ERROR that unwinds past the caller releases it.  Nothing lives in
 * shared memory.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "miscadmin.h"
#include "utils/memutils.h"

#include "ingest.h"

struct HttpClient
{
	CURL	   *curl;
	char	   *buf;			/* malloc'd response buffer */
	size_t		len;
	size_t		cap;
	size_t		limit;
	bool		too_large;
	bool		aborted;
	MemoryContextCallback cb;
};

static bool curl_initialised = false;

static void
http_client_release(void *arg)
{
	HttpClient *c = arg;

	if (c->curl)
		curl_easy_cleanup(c->curl);
	c->curl = NULL;
	if (c->buf)
		free(c->buf);
	c->buf = NULL;
}

/*
 * A client whose lifetime is CurrentMemoryContext: the curl handle (and its
 * connection cache) is released when that context is reset or deleted.
 */
HttpClient *
http_client_create(void)
{
	HttpClient *c;

	if (!curl_initialised)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_SYSTEM_ERROR),
					 errmsg("could not initialise libcurl")));
		curl_initialised = true;
	}
	c = palloc0(sizeof(HttpClient));
	c->curl = curl_easy_init();
	if (c->curl == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not create a libcurl handle")));
	c->cb.func = http_client_release;
	c->cb.arg = c;
	MemoryContextRegisterResetCallback(CurrentMemoryContext, &c->cb);
	return c;
}

/* Refuses URLs whose scheme the current settings do not allow. */
void
http_check_url(const char *url)
{
	if (pg_strncasecmp(url, "https://", 8) == 0)
		return;
	if (pg_strncasecmp(url, "http://", 7) == 0 || pg_strncasecmp(url, "file://", 7) == 0)
	{
		if (settle_allow_insecure_transport)
			return;
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("connector URL \"%s\" does not use https", url),
				 errdetail("Only https is allowed unless settle.allow_insecure_transport is on."),
				 errhint("Use an https endpoint; settle.allow_insecure_transport is meant for tests and needs a superuser.")));
	}
	ereport(ERROR,
			(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("connector URL \"%s\" has an unsupported scheme", url),
			 errhint("Use an https:// URL.")));
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpClient *c = userdata;
	size_t		n = size * nmemb;

	if (c->len + n > c->limit)
	{
		c->too_large = true;
		return 0;
	}
	if (c->len + n + 1 > c->cap)
	{
		size_t		newcap = c->cap ? c->cap : 65536;
		char	   *nb;

		while (newcap < c->len + n + 1)
			newcap *= 2;
		nb = realloc(c->buf, newcap);
		if (nb == NULL)
			return 0;
		c->buf = nb;
		c->cap = newcap;
	}
	memcpy(c->buf + c->len, ptr, n);
	c->len += n;
	return n;
}

static int
progress_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			curl_off_t ultotal, curl_off_t ulnow)
{
	HttpClient *c = clientp;

	if (QueryCancelPending || ProcDiePending)
	{
		c->aborted = true;
		return 1;
	}
	return 0;
}

/*
 * One request: POST with an empty body (BSS calls) or GET; a read for file://.
 * Never raises for transport or HTTP errors: the outcome is in result, and
 * http_raise turns it into an ERROR.  The body is copied into
 * CurrentMemoryContext.
 */
void
http_get(HttpClient *client, const char *url, const char **headers,
		 int nheaders, bool post, HttpResult *result)
{
	CURL	   *h = client->curl;
	struct curl_slist *list = NULL;
	CURLcode	rc;
	char	   *ct = NULL;
	int			i;
	bool		is_file = pg_strncasecmp(url, "file://", 7) == 0;

	http_check_url(url);
	memset(result, 0, sizeof(HttpResult));
	client->len = 0;
	client->too_large = false;
	client->aborted = false;
	client->limit = (size_t) settle_http_max_response_bytes;

	curl_easy_reset(h);
	for (i = 0; i < nheaders; i++)
	{
		struct curl_slist *n = curl_slist_append(list, headers[i]);

		if (n == NULL)
		{
			curl_slist_free_all(list);
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		}
		list = n;
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR,
					 settle_allow_insecure_transport ? "https,http,file" : "https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	if (settle_ca_file && settle_ca_file[0])
		curl_easy_setopt(h, CURLOPT_CAINFO, settle_ca_file);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) settle_http_connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) settle_http_timeout_ms);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) settle_http_max_response_bytes);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "settle/0.1.0");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, client);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, client);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, result->errbuf);
	if (!is_file && post)
	{
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
	}

	rc = curl_easy_perform(h);
	curl_slist_free_all(list);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);

	result->curl_code = (int) rc;
	result->too_large = client->too_large || rc == CURLE_FILESIZE_EXCEEDED;
	result->aborted = client->aborted;
	if (!is_file)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &result->status);
	if (curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct)
		result->content_type = pstrdup(ct);
	if (result->errbuf[0] == '\0' && rc != CURLE_OK)
		strlcpy(result->errbuf, curl_easy_strerror(rc), sizeof(result->errbuf));
	result->body = palloc(client->len + 1);
	if (client->len)
		memcpy(result->body, client->buf, client->len);
	result->body[client->len] = '\0';
	result->body_len = client->len;

	/* do not keep large buffers around between requests */
	if (client->cap > 4 * 1024 * 1024)
	{
		free(client->buf);
		client->buf = NULL;
		client->cap = 0;
	}
}

/* Whether a failed transfer is worth retrying (transient network trouble, 5xx, 429). */
bool
http_retryable(HttpResult *r)
{
	if (r->aborted || r->too_large)
		return false;
	switch ((CURLcode) r->curl_code)
	{
		case CURLE_OK:
			return r->status >= 500 || r->status == 429;
		case CURLE_OPERATION_TIMEDOUT:
		case CURLE_COULDNT_CONNECT:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
		case CURLE_GOT_NOTHING:
			return true;
		default:
			return false;
	}
}

/*
 * Raises the ERROR for a failed transfer, with a SQLSTATE naming the kind of
 * failure: 57014 cancelled, 54000 too large, 08001 no connection, 08006
 * connection or TLS failure mid-way, 58P01 file not found.
 */
void
http_raise(const char *url, HttpResult *r)
{
	CURLcode	rc = (CURLcode) r->curl_code;

	if (r->aborted)
	{
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("transfer from \"%s\" was cancelled", url)));
	}
	if (r->too_large)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("response from \"%s\" exceeds the size limit of %d bytes", url,
						settle_http_max_response_bytes),
				 errhint("Lower MaxResults or raise settle.http_max_response_bytes.")));
	switch (rc)
	{
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_ISSUER_ERROR:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("TLS verification of \"%s\" failed", url),
					 errdetail("%s", r->errbuf),
					 errhint("The server certificate must chain to a trusted CA; for a private CA set settle.ca_file to its PEM bundle.")));
			break;
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_CONNECT:
			ereport(ERROR,
					(errcode(ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
					 errmsg("could not connect to \"%s\"", url),
					 errdetail("%s", r->errbuf)));
			break;
		case CURLE_OPERATION_TIMEDOUT:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("request to \"%s\" timed out", url),
					 errdetail("%s", r->errbuf),
					 errhint("See settle.http_connect_timeout_ms and settle.http_timeout_ms.")));
			break;
		case CURLE_FILE_COULDNT_READ_FILE:
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FILE),
					 errmsg("could not read \"%s\"", url),
					 errdetail("%s", r->errbuf)));
			break;
		case CURLE_UNSUPPORTED_PROTOCOL:
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("protocol of \"%s\" is not allowed", url),
					 errdetail("%s", r->errbuf)));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("transfer from \"%s\" failed", url),
					 errdetail("%s", r->errbuf)));
	}
	pg_unreachable();
}
