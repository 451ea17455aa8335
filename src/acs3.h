/*
 * acs3.h — the Alibaba Cloud ACS3-HMAC-SHA256 request signer and the
 * SHA-256 helpers ingestion uses for content hashes (acs3.c).
 */
#ifndef SETTLE_ACS3_H
#define SETTLE_ACS3_H

#include "utils/jsonb.h"

typedef struct Acs3Pair
{
	char	   *name;
	char	   *value;
} Acs3Pair;

extern void acs3_sha256_hex(const char *data, size_t len, char *hex);
extern void acs3_sha256(const char *data, size_t len, uint8 *out);
extern char *acs3_pct_encode(const char *s);
/* a jsonb object of scalars as name/value pairs (also for sigv4.c) */
extern Acs3Pair *acs3_jsonb_pairs(Jsonb *jb, const char *what, int *n);
extern char *acs3_sign(const char *method, const char *host,
					   Acs3Pair *query, int nquery,
					   Acs3Pair *headers, int nheaders,
					   const char *body, size_t bodylen,
					   const char *access_key_id, const char *access_key_secret);

#endif							/* SETTLE_ACS3_H */
