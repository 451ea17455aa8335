/*
 * ingest_bucket.c — the focus_bucket connector: FinOps FOCUS CSV files
 * (plain or gzip-compressed) in an S3-compatible bucket (Amazon S3, Alibaba
 * OSS, Google Cloud Storage's XML API, OCI Object Storage's S3 API, MinIO),
 * every request signed with AWS Signature Version 4 (sigv4.c).
 *
 * The endpoint is the bucket's URL, path style (https://host/bucket) or
 * virtual-hosted (https://bucket.host); config keys: prefix, region
 * (default us-east-1), max_keys (listing page size, default 1000),
 * null_tokens (as focus_csv).  The secret is an access key id and secret,
 * from the secret file as for alibaba_bss.
 *
 * A pull is one run that lists the prefix (ListObjectsV2, every page) and
 * notes each object whose ETag has not been imported yet (no complete
 * checkpoint "object:<key>@<etag>"), then one run per such object, its key
 * as the run's account_id: the object is fetched, decompressed when it is
 * gzip (by its magic bytes, whatever its name), and stored as one page —
 * its raw copy, its lines (focus_load) and its checkpoint in one
 * transaction, so an object is imported exactly once per ETag: a failed or
 * interrupted object leaves nothing and is pulled again next time, an
 * object whose ETag is unchanged is not fetched again, a changed one is
 * re-imported whole (changed rows revised, rows it no longer holds
 * withdrawn).  One object failing (a 403, a timeout, a file that is not
 * FOCUS) fails its own run only.
 */
#include "postgres.h"

#include <zlib.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "acs3.h"
#include "ingest.h"
#include "sigv4.h"

typedef struct BucketOptions
{
	char	   *prefix;
	char	   *region;
	int			max_keys;
	List	   *null_tokens;
	char	   *scheme_host;	/* https://host[:port] */
	char	   *host;			/* host[:port], as the Host header */
	char	   *base_path;		/* "" or "/bucket" (path style), unencoded */
	List	   *etags;			/* parallel to Connector.members */
} BucketOptions;

void
bucket_configure(Connector *c, MemoryContext cxt)
{
	Oid			t[1] = {INT8OID};
	Datum		v[1];
	HeapTuple	tup;
	TupleDesc	td;
	MemoryContext old;
	BucketOptions *o;
	const char *p;
	const char *slash;

	v[0] = Int64GetDatum(c->id);
	if (SPI_execute_with_args("SELECT coalesce(config->>'prefix', ''), coalesce(config->>'region', 'us-east-1'),"
							  " coalesce((config->>'max_keys')::int, 1000)"
							  " FROM settle.connector WHERE connector_id = $1",
							  1, t, v, NULL, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read settle.connector");
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(cxt);
	o = palloc0(sizeof(BucketOptions));
	o->prefix = SPI_getvalue(tup, td, 1);
	o->region = SPI_getvalue(tup, td, 2);
	o->max_keys = atoi(SPI_getvalue(tup, td, 3));
	if (strncmp(c->endpoint, "https://", 8) != 0 && strncmp(c->endpoint, "http://", 7) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("focus_bucket connector \"%s\" needs an https:// bucket URL", c->name)));
	p = strstr(c->endpoint, "://") + 3;
	slash = strchr(p, '/');
	o->host = slash ? pnstrdup(p, slash - p) : pstrdup(p);
	o->scheme_host = pnstrdup(c->endpoint, p - c->endpoint + strlen(o->host));
	o->base_path = slash ? pstrdup(slash) : "";
	/* "/bucket/" and "/bucket" are the same bucket */
	if (o->base_path[0] && o->base_path[strlen(o->base_path) - 1] == '/')
		o->base_path[strlen(o->base_path) - 1] = '\0';
	MemoryContextSwitchTo(old);
	o->null_tokens = focus_null_tokens(c->id, cxt);
	c->opts = o;
}

/* One signed GET of path (unencoded) with query pairs. */
static void
bucket_get(RunCtx *rc, const char *path, Acs3Pair *query, int nquery, HttpResult *r)
{
	BucketOptions *o = rc->c->opts;
	StringInfoData url;
	Acs3Pair	h[3];
	const char *hdrs[4];
	char	   *auth;
	char		amz_date[17];
	pg_time_t	now = (pg_time_t) time(NULL);
	struct pg_tm *tm = pg_gmtime(&now);
	static const char empty_sha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
	int			i;

	pg_strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", tm);
	h[0].name = "host";
	h[0].value = o->host;
	h[1].name = "x-amz-content-sha256";
	h[1].value = (char *) empty_sha256;
	h[2].name = "x-amz-date";
	h[2].value = amz_date;
	auth = sigv4_sign("GET", path, query, nquery, h, 3, empty_sha256,
					  rc->cred.access_key_id, rc->cred.access_key_secret, o->region, "s3");

	/* the URL carries the path and query encoded exactly as they were signed */
	initStringInfo(&url);
	appendStringInfoString(&url, o->scheme_host);
	for (i = 0; path[i]; i++)
	{
		if (path[i] == '/')
			appendStringInfoChar(&url, '/');
		else
		{
			char		one[2] = {path[i], '\0'};

			appendStringInfoString(&url, acs3_pct_encode(one));
		}
	}
	for (i = 0; i < nquery; i++)
		appendStringInfo(&url, "%c%s=%s", i ? '&' : '?', acs3_pct_encode(query[i].name),
						 acs3_pct_encode(query[i].value));
	hdrs[0] = psprintf("x-amz-content-sha256: %s", empty_sha256);
	hdrs[1] = psprintf("x-amz-date: %s", amz_date);
	hdrs[2] = psprintf("Authorization: %s", auth);
	hdrs[3] = "Accept-Encoding: identity";
	http_get(rc->client, url.data, hdrs, 4, false, r);
	explicit_bzero(auth, strlen(auth));
	rc->st->requests++;
	memset(&ingest_failure, 0, sizeof(ingest_failure));
	ingest_failure.http_status = r->status;
	if (r->curl_code != 0)
		http_raise(url.data, r);
	if (r->status < 200 || r->status >= 300)
	{
		char	   *code = NULL;
		char	   *b = r->body ? strstr(r->body, "<Code>") : NULL;

		if (b && strstr(b, "</Code>"))
			code = pnstrdup(b + 6, strstr(b, "</Code>") - b - 6);
		ingest_failure.code = code ? MemoryContextStrdup(rc->st->runcxt, code) : NULL;
		ereport(ERROR,
				(errcode(r->status == 403 ? ERRCODE_INSUFFICIENT_PRIVILEGE : ERRCODE_CONNECTION_EXCEPTION),
				 errmsg("bucket request \"%s\" failed: HTTP %ld%s%s", url.data, r->status,
						code ? " " : "", code ? code : "")));
	}
}

/* The XML text between <tag> and </tag> from *pos on (entities decoded), or NULL. */
static char *
xml_next(const char *from, const char *end, const char *tag, const char **after)
{
	char	   *open = psprintf("<%s>", tag);
	char	   *close = psprintf("</%s>", tag);
	const char *a = strstr(from, open);
	const char *b;
	StringInfoData out;
	const char *p;

	if (a == NULL || a >= end)
		return NULL;
	a += strlen(open);
	b = strstr(a, close);
	if (b == NULL || b > end)
		return NULL;
	if (after)
		*after = b + strlen(close);
	initStringInfo(&out);
	for (p = a; p < b; p++)
	{
		if (*p != '&')
			appendStringInfoChar(&out, *p);
		else if (strncmp(p, "&amp;", 5) == 0)
			appendStringInfoChar(&out, '&'), p += 4;
		else if (strncmp(p, "&lt;", 4) == 0)
			appendStringInfoChar(&out, '<'), p += 3;
		else if (strncmp(p, "&gt;", 4) == 0)
			appendStringInfoChar(&out, '>'), p += 3;
		else if (strncmp(p, "&quot;", 6) == 0)
			appendStringInfoChar(&out, '"'), p += 5;
		else if (strncmp(p, "&apos;", 6) == 0)
			appendStringInfoChar(&out, '\''), p += 5;
		else
			appendStringInfoChar(&out, '&');
	}
	return out.data;
}

/* Whether a complete checkpoint says this ETag of the key was imported. */
static bool
object_imported(IngestState *st, const char *scope)
{
	Oid			t[2] = {INT8OID, TEXTOID};
	Datum		v[2];

	v[0] = Int64GetDatum(st->connector_id);
	v[1] = CStringGetTextDatum(scope);
	if (SPI_execute_with_args("SELECT 1 FROM settle.ingest_checkpoint WHERE connector_id = $1 AND scope = $2"
							  " AND complete", 2, t, v, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read settle.ingest_checkpoint");
	return SPI_processed == 1;
}

/*
 * The listing run: every page of ListObjectsV2 under the prefix; the
 * objects not imported at their current ETag become the pull's next runs.
 */
static void
bucket_list(RunCtx *rc)
{
	Connector  *c = rc->c;
	BucketOptions *o = c->opts;
	MemoryContext ccxt = GetMemoryChunkContext(c);
	char	   *token = NULL;
	int			pages = 0;

	do
	{
		PageTx		tx;
		HttpResult	r;
		Acs3Pair	q[4];
		int			nq = 0;
		const char *p;
		const char *end;
		char	   *truncated;

		ingest_page_begin(rc, &tx);
		if (rc->worker)
			pgstat_report_activity(STATE_RUNNING, psprintf("settle ingest: %s listing", c->name));
		if (token)
		{
			q[nq].name = "continuation-token";
			q[nq++].value = token;
		}
		q[nq].name = "list-type";
		q[nq++].value = "2";
		q[nq].name = "max-keys";
		q[nq++].value = psprintf("%d", o->max_keys);
		q[nq].name = "prefix";
		q[nq++].value = o->prefix;
		bucket_get(rc, o->base_path[0] ? o->base_path : "/", q, nq, &r);
		pages++;
		if (r.body == NULL || strstr(r.body, "<ListBucketResult") == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("bucket listing of connector \"%s\" is not a ListObjectsV2 result", c->name)));
		end = r.body + r.body_len;
		p = r.body;
		for (;;)
		{
			const char *cs = strstr(p, "<Contents>");
			const char *ce;
			char	   *key;
			char	   *etag;

			if (cs == NULL || (ce = strstr(cs, "</Contents>")) == NULL)
				break;
			key = xml_next(cs, ce, "Key", NULL);
			etag = xml_next(cs, ce, "ETag", NULL);
			p = ce + 11;
			if (key == NULL || etag == NULL || key[0] == '\0' || key[strlen(key) - 1] == '/')
				continue;		/* a "folder" marker holds no file */
			if (!object_imported(rc->st, psprintf("object:%s@%s", key, etag)))
			{
				MemoryContext old = MemoryContextSwitchTo(ccxt);

				c->members = lappend(c->members, pstrdup(key));
				o->etags = lappend(o->etags, pstrdup(etag));
				MemoryContextSwitchTo(old);
			}
		}
		truncated = xml_next(r.body, end, "IsTruncated", NULL);
		token = (truncated && strcmp(truncated, "true") == 0)
			? xml_next(r.body, end, "NextContinuationToken", NULL) : NULL;
		if (token)
			token = MemoryContextStrdup(rc->st->runcxt, token);
		rc->st->pages++;
		ingest_run_update_counts(rc->st);
		ingest_page_end(rc, &tx);
	} while (token != NULL && token[0] != '\0');
}

/* gzip (by its magic bytes) inflated, up to settle.http_max_response_bytes * 64. */
static char *
gunzip(const char *in, size_t len, size_t *outlen, const char *what)
{
	z_stream	zs;
	size_t		cap = Max(len * 4, 65536);
	size_t		limit = Min((Size) MaxAllocSize - 1, (Size) settle_http_max_response_bytes * 64);
	char	   *out = palloc(cap + 1);
	int			rc;

	memset(&zs, 0, sizeof(zs));
	if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK)
		elog(ERROR, "could not initialise zlib");
	zs.next_in = (Bytef *) in;
	zs.avail_in = len;
	for (;;)
	{
		zs.next_out = (Bytef *) out + zs.total_out;
		zs.avail_out = cap - zs.total_out;
		rc = inflate(&zs, Z_NO_FLUSH);
		if (rc == Z_STREAM_END)
			break;
		if (rc != Z_OK && rc != Z_BUF_ERROR)
		{
			inflateEnd(&zs);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("object \"%s\" is not valid gzip: %s", what, zs.msg ? zs.msg : "corrupt data")));
		}
		if (zs.avail_out == 0)
		{
			if (cap >= limit)
			{
				inflateEnd(&zs);
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("object \"%s\" inflates to more than %zu bytes", what, limit)));
			}
			cap = Min(cap * 2, limit);
			out = repalloc(out, cap + 1);
		}
		else if (zs.avail_in == 0)
		{
			inflateEnd(&zs);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
					 errmsg("object \"%s\" is a truncated gzip stream", what)));
		}
	}
	*outlen = zs.total_out;
	out[*outlen] = '\0';
	inflateEnd(&zs);
	return out;
}

/* One object's run: fetched, stored whole with its checkpoint, or not at all. */
static void
bucket_object(RunCtx *rc)
{
	Connector  *c = rc->c;
	BucketOptions *o = c->opts;
	const char *key = rc->st->account_id;
	const char *etag = NULL;
	ListCell   *lk;
	ListCell   *le;
	PageTx		tx;
	HttpResult	r;
	TimestampTz requested_at;
	StringInfoData req;
	char	   *source;
	char	   *body;
	size_t		len;
	int64		raw_page_id;

	forboth(lk, c->members, le, o->etags)
		if (strcmp((char *) lfirst(lk), key) == 0)
			etag = lfirst(le);
	if (etag == NULL)
		elog(ERROR, "object \"%s\" was not listed by this pull", key);

	ingest_page_begin(rc, &tx);
	if (rc->worker)
		pgstat_report_activity(STATE_RUNNING, psprintf("settle ingest: %s object", c->name));
	source = psprintf("%s%s/%s", o->scheme_host, o->base_path, key);
	requested_at = GetCurrentTimestamp();
	bucket_get(rc, psprintf("%s/%s", o->base_path, key), NULL, 0, &r);

	initStringInfo(&req);
	appendStringInfoString(&req, "{\"action\": \"object\", \"url\": ");
	escape_json(&req, source);
	appendStringInfoString(&req, ", \"etag\": ");
	escape_json(&req, etag);
	appendStringInfoString(&req, "}");
	raw_page_id = ingest_insert_raw_page(rc->st, req.data, r.status, r.body, r.body_len, requested_at);
	rc->st->pages++;

	body = r.body;
	len = r.body_len;
	if (len >= 2 && (unsigned char) body[0] == 0x1f && (unsigned char) body[1] == 0x8b)
		body = gunzip(r.body, r.body_len, &len, key);
	focus_load(rc->st, o->null_tokens, source, body, len, raw_page_id);

	ingest_checkpoint_save(rc->st, psprintf("object:%s@%s", key, etag), NULL, 1, 0);
	ingest_run_update_counts(rc->st);
	ingest_page_end(rc, &tx);
}

void
bucket_pull(RunCtx *rc)
{
	if (rc->st->account_id == NULL)
		bucket_list(rc);
	else
		bucket_object(rc);
}
