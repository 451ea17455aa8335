/*
 * sigv4.c — AWS Signature Version 4 (AWS4-HMAC-SHA256), as S3 and the
 * S3-compatible object stores (Alibaba OSS, Google Cloud Storage's XML API,
 * OCI's Amazon S3 Compatibility API, MinIO, ...) accept it.
 *
 * sigv4_sign builds the canonical request — method, the path with each
 * segment URI-encoded once (the S3 rule: "/" kept), the query with names and
 * values encoded and sorted, the lower-case headers with their values
 * trimmed and inner runs of spaces folded, the signed-header list and the
 * payload hash — hashes it into the string to sign under the credential
 * scope date/region/service/aws4_request, derives the signing key by the
 * HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request",
 * and returns the Authorization header value.  The request time comes from
 * the caller's x-amz-date header, so a signature is reproducible.
 *
 * settle.sigv4_authorization exposes the same function to SQL: the tests
 * check it against AWS's published examples.
 */
#include "postgres.h"

#include "common/hmac.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/jsonb.h"

#include "sigv4.h"

PG_FUNCTION_INFO_V1(settle_sigv4_authorization);

static void
hmac_sha256(const uint8 *key, size_t keylen, const char *msg, size_t msglen, uint8 *out)
{
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

	if (ctx == NULL ||
		pg_hmac_init(ctx, key, keylen) < 0 ||
		pg_hmac_update(ctx, (const uint8 *) msg, msglen) < 0 ||
		pg_hmac_final(ctx, out, 32) < 0)
		elog(ERROR, "could not compute HMAC-SHA256: %s", pg_hmac_error(ctx));
	pg_hmac_free(ctx);
}

/* S3's UriEncode of a path: every byte but A-Za-z0-9-_.~ and "/" escaped. */
static char *
encode_path(const char *s)
{
	StringInfoData buf;
	const unsigned char *p;

	initStringInfo(&buf);
	for (p = (const unsigned char *) s; *p; p++)
	{
		if (*p == '/')
			appendStringInfoChar(&buf, '/');
		else
		{
			char		one[2] = {(char) *p, '\0'};

			appendStringInfoString(&buf, acs3_pct_encode(one));
		}
	}
	return buf.data;
}

static int
pair_cmp(const void *a, const void *b)
{
	const Acs3Pair *x = a;
	const Acs3Pair *y = b;
	int			c = strcmp(x->name, y->name);

	return c != 0 ? c : strcmp(x->value, y->value);
}

/* A header value as signed: outer blanks trimmed, inner runs of spaces one. */
static char *
header_value(const char *s)
{
	StringInfoData buf;
	bool		space = false;

	initStringInfo(&buf);
	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s; s++)
	{
		if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
			space = true;
		else
		{
			if (space && buf.len > 0)
				appendStringInfoChar(&buf, ' ');
			space = false;
			appendStringInfoChar(&buf, *s);
		}
	}
	return buf.data;
}

static bool
valid_amz_date(const char *s)
{
	int			i;

	if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z')
		return false;
	for (i = 0; i < 15; i++)
		if (i != 8 && !isdigit((unsigned char) s[i]))
			return false;
	return true;
}

/*
 * The Authorization header value for one request.  headers must hold every
 * header to sign, among them host and x-amz-date (YYYYMMDDTHHMMSSZ);
 * payload_hash is the lower-case hex SHA-256 of the body or
 * "UNSIGNED-PAYLOAD".  path and query values are given unencoded.  The
 * result names the access key id, never the secret.
 */
char *
sigv4_sign(const char *method, const char *path,
		   Acs3Pair *query, int nquery,
		   Acs3Pair *headers, int nheaders,
		   const char *payload_hash,
		   const char *access_key_id, const char *secret,
		   const char *region, const char *service)
{
	Acs3Pair   *q = palloc(sizeof(Acs3Pair) * (nquery + 1));
	Acs3Pair   *h = palloc(sizeof(Acs3Pair) * (nheaders + 1));
	const char *amz_date = NULL;
	bool		has_host = false;
	int			i;
	char		date[9];
	char		req_hash[65];
	char		sig_hex[65];
	uint8		key[32];
	uint8		sig[32];
	char	   *k0;
	StringInfoData canon;
	StringInfoData signed_headers;
	StringInfoData to_sign;
	const char *const chain[3] = {region, service, "aws4_request"};

	if (path[0] != '/')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("SigV4 path \"%s\" must start with \"/\"", path)));
	for (i = 0; i < nquery; i++)
	{
		q[i].name = acs3_pct_encode(query[i].name);
		q[i].value = acs3_pct_encode(query[i].value ? query[i].value : "");
	}
	qsort(q, nquery, sizeof(Acs3Pair), pair_cmp);

	for (i = 0; i < nheaders; i++)
	{
		h[i].name = asc_tolower(headers[i].name, strlen(headers[i].name));
		h[i].value = header_value(headers[i].value ? headers[i].value : "");
		if (strcmp(h[i].name, "x-amz-date") == 0)
			amz_date = h[i].value;
		else if (strcmp(h[i].name, "host") == 0)
			has_host = true;
	}
	if (!has_host || amz_date == NULL || !valid_amz_date(amz_date))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("SigV4 headers must include host and an x-amz-date of the form YYYYMMDDTHHMMSSZ")));
	qsort(h, nheaders, sizeof(Acs3Pair), pair_cmp);
	for (i = 1; i < nheaders; i++)
		if (strcmp(h[i].name, h[i - 1].name) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("SigV4 header \"%s\" is given twice", h[i].name)));
	memcpy(date, amz_date, 8);
	date[8] = '\0';

	initStringInfo(&canon);
	appendStringInfo(&canon, "%s\n%s\n", method, encode_path(path));
	for (i = 0; i < nquery; i++)
		appendStringInfo(&canon, "%s%s=%s", i ? "&" : "", q[i].name, q[i].value);
	appendStringInfoChar(&canon, '\n');
	initStringInfo(&signed_headers);
	for (i = 0; i < nheaders; i++)
	{
		appendStringInfo(&canon, "%s:%s\n", h[i].name, h[i].value);
		appendStringInfo(&signed_headers, "%s%s", i ? ";" : "", h[i].name);
	}
	appendStringInfo(&canon, "\n%s\n%s", signed_headers.data, payload_hash);
	acs3_sha256_hex(canon.data, canon.len, req_hash);

	initStringInfo(&to_sign);
	appendStringInfo(&to_sign, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s",
					 amz_date, date, region, service, req_hash);

	/* signing key: HMAC chain from "AWS4" + secret over the scope's parts */
	k0 = psprintf("AWS4%s", secret);
	hmac_sha256((const uint8 *) k0, strlen(k0), date, strlen(date), key);
	memset(k0, 0, strlen(k0));
	for (i = 0; i < 3; i++)
		hmac_sha256(key, 32, chain[i], strlen(chain[i]), key);
	hmac_sha256(key, 32, to_sign.data, to_sign.len, sig);
	for (i = 0; i < 32; i++)
		snprintf(sig_hex + 2 * i, 3, "%02x", sig[i]);

	return psprintf("AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s",
					access_key_id, date, region, service, signed_headers.data, sig_hex);
}

/*
 * settle.sigv4_authorization(method, path, query, headers, payload_sha256,
 *                            access_key_id, secret, region, service)
 */
Datum
settle_sigv4_authorization(PG_FUNCTION_ARGS)
{
	Acs3Pair   *q;
	Acs3Pair   *h;
	int			nq;
	int			nh;
	char	   *payload;

	/* declared STRICT */
	payload = text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (strcmp(payload, "UNSIGNED-PAYLOAD") != 0 &&
		(strlen(payload) != 64 || strspn(payload, "0123456789abcdef") != 64))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("payload_sha256 must be 64 lower-case hex digits or UNSIGNED-PAYLOAD")));
	q = acs3_jsonb_pairs(PG_GETARG_JSONB_P(2), "query", &nq);
	h = acs3_jsonb_pairs(PG_GETARG_JSONB_P(3), "headers", &nh);
	PG_RETURN_TEXT_P(cstring_to_text(sigv4_sign(text_to_cstring(PG_GETARG_TEXT_PP(0)),
												text_to_cstring(PG_GETARG_TEXT_PP(1)),
												q, nq, h, nh, payload,
												text_to_cstring(PG_GETARG_TEXT_PP(5)),
												text_to_cstring(PG_GETARG_TEXT_PP(6)),
												text_to_cstring(PG_GETARG_TEXT_PP(7)),
												text_to_cstring(PG_GETARG_TEXT_PP(8)))));
}
