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
 *
 * Internal addresses: unless the superuser setting
 * settle.allow_private_endpoints is on, every socket libcurl would open is
 * checked in the open-socket callback, after name resolution and before any
 * connect, and refused when its address is loopback, private, shared,
 * link-local, unique-local, multicast, reserved or unspecified (also in
 * IPv4-mapped, -compatible, NAT64 and 6to4 IPv6 form).  Redirects are not
 * followed, and any later connection would pass the same callback.  A refusal
 * raises one message (42501) that does not depend on the port, so it tells
 * nothing about what listens there.  URLs never carry credentials: they are
 * refused, and user information is removed from any URL an error shows.
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <curl/curl.h>

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"

#include "http.h"

struct HttpClient
{
	CURL	   *curl;
	char	   *buf;			/* malloc'd response buffer */
	size_t		len;
	size_t		cap;
	size_t		limit;
	bool		too_large;
	bool		aborted;
	bool		refused;		/* an internal address was refused */
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

/* ---------------------------------------------------------------------
 * Internal addresses and URL credentials
 * --------------------------------------------------------------------- */

/* Whether an IPv4 address (host byte order) is not a public unicast address. */
static bool
ipv4_internal(uint32 a)
{
	static const struct
	{
		uint32		net;
		int			bits;
	}			nets[] = {
		{0x00000000, 8},		/* 0.0.0.0/8: this network, unspecified */
		{0x0A000000, 8},		/* 10.0.0.0/8: private */
		{0x64400000, 10},		/* 100.64.0.0/10: shared address space (CGNAT) */
		{0x7F000000, 8},		/* 127.0.0.0/8: loopback */
		{0xA9FE0000, 16},		/* 169.254.0.0/16: link-local, cloud metadata */
		{0xAC100000, 12},		/* 172.16.0.0/12: private */
		{0xC0000000, 24},		/* 192.0.0.0/24: protocol assignments */
		{0xC0A80000, 16},		/* 192.168.0.0/16: private */
		{0xC6120000, 15},		/* 198.18.0.0/15: benchmarking */
		{0xE0000000, 4},		/* 224.0.0.0/4: multicast */
		{0xF0000000, 4},		/* 240.0.0.0/4: reserved, broadcast */
	};
	int			i;

	for (i = 0; i < lengthof(nets); i++)
		if ((a & (0xFFFFFFFFu << (32 - nets[i].bits))) == nets[i].net)
			return true;
	return false;
}

static uint32
ipv4_at(const uint8 *b)
{
	return ((uint32) b[0] << 24) | ((uint32) b[1] << 16) | ((uint32) b[2] << 8) | b[3];
}

/* Whether an IPv6 address (network byte order) is not a public unicast address. */
static bool
ipv6_internal(const uint8 *b)
{
	static const uint8 zero[16];

	/* ::/96 (unspecified, loopback, IPv4-compatible), ::ffff:0:0/96 (IPv4-mapped) */
	if (memcmp(b, zero, 10) == 0 &&
		((b[10] == 0 && b[11] == 0) || (b[10] == 0xff && b[11] == 0xff)))
		return ipv4_internal(ipv4_at(b + 12));
	/* ::ffff:0:0:0/96: IPv4-translated */
	if (memcmp(b, zero, 8) == 0 && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0)
		return ipv4_internal(ipv4_at(b + 12));
	/* 64:ff9b::/96: NAT64; 64:ff9b:1::/48: local-use NAT64 */
	if (b[0] == 0 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b)
	{
		if (memcmp(b + 4, zero, 8) == 0)
			return ipv4_internal(ipv4_at(b + 12));
		if (b[4] == 0 && b[5] == 1)
			return true;
	}
	/* 2002::/16: 6to4, the IPv4 address follows the prefix */
	if (b[0] == 0x20 && b[1] == 0x02)
		return ipv4_internal(ipv4_at(b + 2));
	/* 100::/64: discard-only */
	if (b[0] == 0x01 && b[1] == 0 && memcmp(b + 2, zero, 6) == 0)
		return true;
	/* fc00::/7: unique-local */
	if ((b[0] & 0xfe) == 0xfc)
		return true;
	/* fe80::/10 link-local, fec0::/10 site-local */
	if (b[0] == 0xfe && (b[1] & 0x80))
		return true;
	/* ff00::/8: multicast */
	if (b[0] == 0xff)
		return true;
	return false;
}

/* Whether a socket address is internal; anything but IPv4 and IPv6 is. */
static bool
sockaddr_internal(const struct sockaddr *sa, size_t len)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, sa, Min(len, sizeof(ss)));
	if (ss.ss_family == AF_INET && len >= sizeof(struct sockaddr_in))
		return ipv4_internal(ntohl(((struct sockaddr_in *) &ss)->sin_addr.s_addr));
	if (ss.ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6))
		return ipv6_internal(((struct sockaddr_in6 *) &ss)->sin6_addr.s6_addr);
	return true;
}

/*
 * The user information of a URL as text: after "scheme:" and the slashes
 * (any number, as libcurl is lenient; two for file:), up to the first of
 * / ? # or backslash, is there an '@'?  Used together with libcurl's own
 * parse, so that a URL libcurl reads differently is still caught.
 */
static bool
text_has_userinfo(const char *url)
{
	const char *p = url;
	size_t		n;

	if (!isalpha((unsigned char) *p))
		return false;
	while (isalnum((unsigned char) *p) || *p == '+' || *p == '-' || *p == '.')
		p++;
	if (*p != ':')
		return false;
	if (p - url == 4 && pg_strncasecmp(url, "file", 4) == 0)
	{
		if (strncmp(p, "://", 3) != 0)
			return false;
		p += 3;
	}
	else
	{
		p++;
		while (*p == '/' || *p == '\\')
			p++;
	}
	n = strcspn(p, "/?#\\");
	return memchr(p, '@', n) != NULL;
}

/*
 * The host of a URL as libcurl reads it (IPv4 in dotted form, IPv6 in
 * brackets), palloc'd, or NULL when libcurl cannot parse the URL; and
 * whether libcurl finds a user, password or login options in it.
 */
static char *
url_host(const char *url, bool *userinfo)
{
	CURLU	   *u = curl_url();
	char	   *part = NULL;
	char	   *host = NULL;

	*userinfo = false;
	if (u == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK)
	{
		if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK)
			*userinfo = true;
		curl_free(part);
		part = NULL;
		if (curl_url_get(u, CURLUPART_PASSWORD, &part, 0) == CURLUE_OK)
			*userinfo = true;
		curl_free(part);
		part = NULL;
		if (curl_url_get(u, CURLUPART_OPTIONS, &part, 0) == CURLUE_OK)
			*userinfo = true;
		curl_free(part);
		part = NULL;
		if (curl_url_get(u, CURLUPART_HOST, &part, CURLU_URLDECODE) == CURLUE_OK && part)
			host = pstrdup(part);
		curl_free(part);
	}
	curl_url_cleanup(u);
	if (text_has_userinfo(url))
		*userinfo = true;
	return host;
}

/* The one error for an internal address, whatever is (or is not) listening there. */
static void
refuse_internal(const char *host)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("connector endpoint host \"%s\" is not a public address", host ? host : ""),
			 errdetail("Loopback, private, shared, link-local, unique-local, multicast, reserved and unspecified addresses are refused, written literally or resolved from a name."),
			 errhint("Use the provider's public endpoint; only a superuser can allow internal endpoints, with settle.allow_private_endpoints (meant for tests).")));
}

/*
 * Refuses a connector endpoint that carries credentials (22023, always, the
 * URL not shown: it would show them) and, when literal_address is set and
 * settle.allow_private_endpoints is off, one whose host is an internal IP
 * address written literally (42501).  Host names are checked when they are
 * resolved, by the open-socket callback.
 */
void
http_check_endpoint(const char *url, bool literal_address)
{
	bool		userinfo;
	char	   *host = url_host(url, &userinfo);
	char	   *bare;
	char	   *pct;
	struct in_addr a4;
	struct in6_addr a6;

	if (userinfo)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("connector endpoint must not contain credentials"),
				 errdetail("The URL has user information (user:password@ or user@) before its host; it is neither stored nor shown."),
				 errhint("Remove it from the URL; keep credentials in the secret store and name them in settle.connector.secret_name."),
				 errhidestmt(true)));
	if (!literal_address || settle_allow_private_endpoints || host == NULL)
		return;
	bare = pstrdup(host);
	if (bare[0] == '[')
	{
		bare++;
		bare[strcspn(bare, "]")] = '\0';
	}
	if ((pct = strchr(bare, '%')) != NULL)
		*pct = '\0';
	if (inet_pton(AF_INET, bare, &a4) == 1)
	{
		if (ipv4_internal(ntohl(a4.s_addr)))
			refuse_internal(host);
	}
	else if (inet_pton(AF_INET6, bare, &a6) == 1)
	{
		if (ipv6_internal(a6.s6_addr))
			refuse_internal(host);
	}
}

/*
 * A copy of text with the user information of every URL in it removed
 * ("https://user:pw@host/" becomes "https://host/"), for error messages.
 */
char *
http_scrub_userinfo(const char *text)
{
	StringInfoData b;
	const char *p = text;
	const char *sep;

	if (text == NULL)
		return NULL;
	initStringInfo(&b);
	while ((sep = strstr(p, "://")) != NULL)
	{
		const char *auth = sep + 3;
		size_t		n = strcspn(auth, "/?#\\ \t\r\n\"'<>");
		const char *at = NULL;
		const char *q;

		for (q = auth; q < auth + n; q++)
			if (*q == '@')
				at = q;
		appendBinaryStringInfo(&b, p, auth - p);
		p = at ? at + 1 : auth;
	}
	appendStringInfoString(&b, p);
	return b.data;
}

/* Refuses URLs whose scheme the current settings do not allow, and credentials. */
void
http_check_url(const char *url)
{
	http_check_endpoint(url, false);
	url = http_scrub_userinfo(url);
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

/*
 * libcurl's open-socket callback: every connection (to the endpoint, after a
 * redirect, to a proxy) opens its socket here, with the resolved address.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	HttpClient *c = clientp;

	if (!settle_allow_private_endpoints &&
		sockaddr_internal(&addr->addr, addr->addrlen))
	{
		c->refused = true;
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype, addr->protocol);
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
	client->refused = false;
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
	curl_easy_setopt(h, CURLOPT_USERAGENT, "settle/" SETTLE_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, list);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, client);
	curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, progress_cb);
	curl_easy_setopt(h, CURLOPT_XFERINFODATA, client);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, client);
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
	result->refused = client->refused && rc == CURLE_COULDNT_CONNECT;
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
	if (r->aborted || r->too_large || r->refused)
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
 * failure: 57014 cancelled, 42501 internal address refused, 54000 too
 * large, 08001 no connection, 08006 connection or TLS failure mid-way, 58P01
 * file not found.  The URL is shown without user information.
 */
void
http_raise(const char *url, HttpResult *r)
{
	CURLcode	rc = (CURLcode) r->curl_code;

	url = http_scrub_userinfo(url);
	if (r->aborted)
	{
		CHECK_FOR_INTERRUPTS();
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("transfer from \"%s\" was cancelled", url)));
	}
	if (r->refused)
	{
		bool		userinfo;

		refuse_internal(url_host(url, &userinfo));
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
