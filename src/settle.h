/*
 * settle.h — declarations shared by the settle extension's modules.
 *
 * Each module (one file per concern) exposes an init function that _PG_init
 * calls; nothing else is global.
 */
#ifndef SETTLE_H
#define SETTLE_H

#include "utils/relcache.h"

/* audit.c: the hash-chained audit trail and append-only guards */
extern void settle_audit_init(void);
/* audit.c: whether this session is a superuser's restore (settle.restoring) */
extern bool settle_restoring_session(void);

/* ingest_settings.c: ingestion settings; registers the ingest worker when preloaded */
extern void settle_ingest_init(void);

/* csv.c: the settle.csv_max_bytes setting (settle.csv_parse) */
extern void settle_csv_init(void);

/* settle_parallel.c: settle.max_settle_workers (settle.settle_period_parallel) */
extern void settle_parallel_init(void);

/* priority.c: settle.bulk_nice */
extern void settle_priority_init(void);
extern void settle_bulk_priority(void);
extern int	settle_max_settle_workers;

/* settle.c: the settle.reason setting, required for sensitive changes */
extern char *settle_reason;

/* settle.c: sanity-check and retention settings */
extern int	settle_swing_threshold;
extern char *settle_retention;

/*
 * The version of the settlement semantics (rules, tiers, limits, refunds,
 * rounding) settle_settle_reseller implements.  Every run records it and its
 * fingerprints include it; verify_run re-derives only runs of this version.
 * Raise it whenever a change would settle any recorded input differently.
 *   1  settle 0.1.0
 *   2  settle 0.2.0: bill-line tags in clause conditions; amounts with more
 *      than eight decimal places
 *   3  residual rounding units tied between lines go in line key order for
 *      every line (version 2 gave them to bill lines first, then to
 *      corrections, adjustments and floor top-ups in the order they were made);
 *      period caps are consumed by positive commission only (a credit gave
 *      room back); per-line caps and floors take the sign of the basis (a
 *      credit earning 0 before limits was floored to +floor); a tier measure
 *      below 0 is in the first band in both tier modes (an all-units total
 *      below 0 was in no band: the line earned nothing)
 */
#define SETTLE_ENGINE_VERSION 3

/* settle.c: one of settle's own relations and its columns, by name (errors when absent) */
extern Oid	settle_relid(const char *name);
extern int	settle_attnum(Relation rel, const char *name);
/*
 * settle.c: the relation holding one reseller's rows of a table that
 * settle.distribute() may distribute by reseller_id (bill_line,
 * settlement_line): the table itself, or under Citus its shard of that
 * reseller on this node (an error when the shard is on another node);
 * with index (an index name), *index_relid is set to that relation's index.
 */
extern Oid	settle_reseller_relid(const char *name, int64 reseller_id, const char *index, Oid *index_relid);
/* settle.c: settle_relid for one of those tables, an error (0A000) when Citus distributes it */
extern Oid	settle_undistributed_relid(const char *name);

#endif							/* SETTLE_H */
