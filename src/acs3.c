/*
 * acs3.c — Alibaba Cloud V3 request signature (ACS3-HMAC-SHA256).
 *
 * acs3_sign builds the canonical request (method, "/", sorted RFC 3986
 * query, sorted lower-case host/content-type/x-acs-* headers, signed-header
 * list, hex SHA-256 of the body), hashes it into the string to sign and
 * returns the Authorization header value.  settle.acs3_authorization exposes
 * the same function to SQL so that signatures can be verified by hand.
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/hmac.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/formatting.h"
#include "utils/jsonb.h"

#include "acs3.h"

PG_FUNCTION_INFO_V1(settle_acs3_authorization);

static void
hex_encode_lower(const uint8 *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t		i;

	for (i = 0; i < len; i++)
	{
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

/* SHA-256 of data into out (32 bytes). */
void
acs3_sha256(const char *data, size_t len, uint8 *out)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);

	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) data, len) < 0 ||
		pg_cryptohash_final(ctx, out, 32) < 0)
		elog(ERROR, "could not compute SHA-256: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
}

/* Lower-case hex SHA-256 of data into hex (65 bytes). */
void
acs3_sha256_hex(const char *data, size_t len, char *hex)
{
	uint8		digest[32];

	acs3_sha256(data, len, digest);
	hex_encode_lower(digest, 32, hex);
}

/* RFC 3986 percent-encoding: everything but A-Za-z0-9-_.~ is escaped. */
char *
acs3_pct_encode(const char *s)
{
	StringInfoData buf;
	const unsigned char *p;

	initStringInfo(&buf);
	for (p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
			*p == '.' || *p == '~')
			appendStringInfoChar(&buf, (char) *p);
		else
			appendStringInfo(&buf, "%%%02X", *p);
	}
	return buf.data;
}

static int
pair_cmp(const void *a, const void *b)
{
	return strcmp(((const Acs3Pair *) a)->name, ((const Acs3Pair *) b)->name);
}

static char *
trim_copy(const char *s)
{
	const char *end;

	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' ||
					   end[-1] == '\n' || end[-1] == '\r'))
		end--;
	return pnstrdup(s, end - s);
}

/*
 * The Authorization header value for one request.  headers carries the
 * caller's x-acs-* (and optionally content-type) headers; host and
 * x-acs-content-sha256 are always taken from the arguments.  The result
 * contains the AccessKey id but never the secret.
 */
char *
acs3_sign(const char *method, const char *host,
		  Acs3Pair *query, int nquery,
		  Acs3Pair *headers, int nheaders,
		  const char *body, size_t bodylen,
		  const char *access_key_id, const char *access_key_secret)
{
	Acs3Pair   *q = palloc(sizeof(Acs3Pair) * (nquery + 1));
	Acs3Pair   *h = palloc(sizeof(Acs3Pair) * (nheaders + 2));
	int			nh = 0;
	int			i;
	char		body_hash[65];
	char		req_hash[65];
	uint8		sig[32];
	char		sig_hex[65];
	StringInfoData canon;
	StringInfoData signed_headers;
	StringInfoData to_sign;
	pg_hmac_ctx *hmac;

	acs3_sha256_hex(body ? body : "", body ? bodylen : 0, body_hash);

	for (i = 0; i < nquery; i++)
	{
		q[i].name = acs3_pct_encode(query[i].name);
		q[i].value = acs3_pct_encode(query[i].value ? query[i].value : "");
	}
	qsort(q, nquery, sizeof(Acs3Pair), pair_cmp);

	for (i = 0; i < nheaders; i++)
	{
		char	   *name = asc_tolower(headers[i].name, strlen(headers[i].name));

		name = trim_copy(name);
		if (strcmp(name, "host") == 0 || strcmp(name, "x-acs-content-sha256") == 0)
			continue;
		if (strcmp(name, "content-type") != 0 && strncmp(name, "x-acs-", 6) != 0)
			continue;
		h[nh].name = name;
		h[nh].value = trim_copy(headers[i].value ? headers[i].value : "");
		nh++;
	}
	h[nh].name = "host";
	h[nh].value = trim_copy(host);
	nh++;
	h[nh].name = "x-acs-content-sha256";
	h[nh].value = pstrdup(body_hash);
	nh++;
	qsort(h, nh, sizeof(Acs3Pair), pair_cmp);

	initStringInfo(&canon);
	appendStringInfo(&canon, "%s\n/\n", method);
	for (i = 0; i < nquery; i++)
		appendStringInfo(&canon, "%s%s=%s", i ? "&" : "", q[i].name, q[i].value);
	appendStringInfoChar(&canon, '\n');
	initStringInfo(&signed_headers);
	for (i = 0; i < nh; i++)
	{
		appendStringInfo(&canon, "%s:%s\n", h[i].name, h[i].value);
		appendStringInfo(&signed_headers, "%s%s", i ? ";" : "", h[i].name);
	}
	appendStringInfo(&canon, "\n%s\n%s", signed_headers.data, body_hash);

	acs3_sha256_hex(canon.data, canon.len, req_hash);
	initStringInfo(&to_sign);
	appendStringInfo(&to_sign, "ACS3-HMAC-SHA256\n%s", req_hash);

	hmac = pg_hmac_create(PG_SHA256);
	if (hmac == NULL ||
		pg_hmac_init(hmac, (const uint8 *) access_key_secret, strlen(access_key_secret)) < 0 ||
		pg_hmac_update(hmac, (const uint8 *) to_sign.data, to_sign.len) < 0 ||
		pg_hmac_final(hmac, sig, sizeof(sig)) < 0)
		elog(ERROR, "could not compute HMAC-SHA256: %s", pg_hmac_error(hmac));
	pg_hmac_free(hmac);
	hex_encode_lower(sig, 32, sig_hex);

	return psprintf("ACS3-HMAC-SHA256 Credential=%s,SignedHeaders=%s,Signature=%s",
					access_key_id, signed_headers.data, sig_hex);
}

/* Flatten a jsonb object of scalars into name/value pairs (also sigv4.c). */
Acs3Pair *
acs3_jsonb_pairs(Jsonb *jb, const char *what, int *n)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	Acs3Pair   *pairs;
	int			count = 0;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", what)));
	pairs = palloc(sizeof(Acs3Pair) * (JB_ROOT_COUNT(jb) + 1));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
			key = pnstrdup(v.val.string.val, v.val.string.len);
		else if (tok == WJB_VALUE)
		{
			char	   *val;

			switch (v.type)
			{
				case jbvString:
					val = pnstrdup(v.val.string.val, v.val.string.len);
					break;
				case jbvNumeric:
					val = DatumGetCString(DirectFunctionCall1(numeric_out,
															  NumericGetDatum(v.val.numeric)));
					break;
				case jbvBool:
					val = v.val.boolean ? "true" : "false";
					break;
				case jbvNull:
					val = "";
					break;
				default:
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s value for \"%s\" must be a scalar", what, key),
							 errdetail("Nested parameters must be flattened by the caller, e.g. \"TagFilter.1.TagKey\".")));
					val = NULL;
			}
			pairs[count].name = key;
			pairs[count].value = val;
			count++;
		}
	}
	*n = count;
	return pairs;
}

/*
 * settle.acs3_authorization(method, host, query, headers, body,
 *                           access_key_id, access_key_secret) returns text
 */
Datum
settle_acs3_authorization(PG_FUNCTION_ARGS)
{
	char	   *method;
	char	   *host;
	Jsonb	   *query;
	Jsonb	   *headers;
	bytea	   *body;
	Acs3Pair   *q;
	Acs3Pair   *h;
	int			nq;
	int			nh;
	int			i;

	for (i = 0; i < 7; i++)
		if (PG_ARGISNULL(i) && i != 4)
			PG_RETURN_NULL();
	method = text_to_cstring(PG_GETARG_TEXT_PP(0));
	host = text_to_cstring(PG_GETARG_TEXT_PP(1));
	query = PG_GETARG_JSONB_P(2);
	headers = PG_GETARG_JSONB_P(3);
	body = PG_ARGISNULL(4) ? NULL : PG_GETARG_BYTEA_PP(4);

	if (method[0] == '\0' || host[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("method and host must not be empty")));
	q = acs3_jsonb_pairs(query, "query", &nq);
	h = acs3_jsonb_pairs(headers, "headers", &nh);

	PG_RETURN_TEXT_P(cstring_to_text(acs3_sign(method, host, q, nq, h, nh,
											   body ? VARDATA_ANY(body) : NULL,
											   body ? VARSIZE_ANY_EXHDR(body) : 0,
											   text_to_cstring(PG_GETARG_TEXT_PP(5)),
											   text_to_cstring(PG_GETARG_TEXT_PP(6)))));
}
