/*
 * recon_agg.h — what recon_scan.c shares with the reconciliation aggregates
 * (recon_agg.c): the same hashes and the same results, so that one pass in C
 * gives what settle.money_total and settle.line_fingerprint would.
 */
#ifndef SETTLE_RECON_AGG_H
#define SETTLE_RECON_AGG_H

#include "postgres.h"

#include "access/tupdesc.h"

#include "money.h"

extern uint64 recon_pair_hash(const char *key, size_t len, money128 amount);
extern uint64 recon_pair_hash_keyhash(uint64 keyhash, money128 amount);
extern uint64 recon_pair_hash_null(uint64 keyhash);
extern uint64 recon_bytes_hash(const char *p, size_t len);
extern bytea *recon_fingerprint_bytea(int64 lines, uint64 sum, uint64 xor);
extern Datum recon_money_total_datum(TupleDesc tupdesc, money128 total, int64 lines, const char *code3);
extern bool recon_valid_currency(const char *c, size_t len);

#endif							/* SETTLE_RECON_AGG_H */
