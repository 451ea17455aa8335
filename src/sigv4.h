/*
 * sigv4.h — the AWS Signature Version 4 signer (sigv4.c) used by the
 * object-storage connector.
 */
#ifndef SETTLE_SIGV4_H
#define SETTLE_SIGV4_H

#include "acs3.h"

extern char *sigv4_sign(const char *method, const char *path,
						Acs3Pair *query, int nquery,
						Acs3Pair *headers, int nheaders,
						const char *payload_hash,
						const char *access_key_id, const char *secret,
						const char *region, const char *service);

#endif							/* SETTLE_SIGV4_H */
