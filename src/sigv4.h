/*
 * sigv4.h — the AWS Signature Version 4 signer (sigv4.c) used by the
 * object-storage connector.
 */
#ifndef SETTLE_SIGV4_H
#define SETTLE_SIGV4_H

#include "ingest.h"
#include "utils/jsonb.h"

/* acs3.c: a jsonb object of scalars as name/value pairs */
extern Acs3Pair *acs3_jsonb_pairs(Jsonb *jb, const char *what, int *n);

extern char *sigv4_sign(const char *method, const char *path,
						Acs3Pair *query, int nquery,
						Acs3Pair *headers, int nheaders,
						const char *payload_hash,
						const char *access_key_id, const char *secret,
						const char *region, const char *service);

#endif							/* SETTLE_SIGV4_H */
