/*
 * ingest_lines.h — the normalized bill line as the connectors produce it,
 * and the store that maps, validates, deduplicates and inserts a page of
 * them (ingest_lines.c).
 */
#ifndef SETTLE_INGEST_LINES_H
#define SETTLE_INGEST_LINES_H

#include "nodes/pg_list.h"
#include "utils/hsearch.h"

enum
{
	AMT_LIST, AMT_DISCOUNT, AMT_COUPON, AMT_BILLED, AMT_PAID, AMT__COUNT
};

typedef struct NormLine
{
	char	   *line_key;
	char	   *source_item;
	char	   *source_record_id;
	char	   *billing_account_id;
	char	   *sub_account_id;
	char	   *map_account;	/* account mapped to a customer */
	char	   *line_date;		/* YYYY-MM-DD: the date the mapping is taken on */
	char	   *charge_period_start;	/* timestamptz text */
	char	   *charge_period_end;
	char	   *charge_category;
	char	   *charge_class;
	char	   *product_code;
	bool		product_by_name;	/* product_code from settle.product_mapping
									 * (SkuId, else ServiceName) */
	char	   *service_name;
	char	   *sku_id;
	char	   *region_id;
	char	   *resource_id;
	char	   *currency;
	Datum		amt[AMT__COUNT];
	bool		amt_null[AMT__COUNT];
	char	   *original_line_key;	/* refunds: the charge refunded */
	char	   *tags_json;
	bool		check_identity; /* gross - discount - coupons = billed applies */
	uint8		hash[32];		/* SHA-256 of the source content */
	List	   *errors;			/* validation failures (char *) */
} NormLine;

/*
 * One pass over a scope (all pages of a DescribeInstanceBill month, from the
 * first): which stored line each item is.  Items sharing a natural key are
 * told apart by slots: the first is stored under the natural key, the n-th
 * under "<natural key>#n".  An item takes the slot whose stored content it
 * equals, else (a changed or new item) the first slot no item of the pass
 * took, else a new slot.  Lives across the pass's pages.
 */
typedef struct IngestPass
{
	MemoryContext cxt;
	HTAB	   *groups;			/* natural key digest -> SlotGroup */
	int			prev_n;			/* items on the previous page */
	uint8		prev_sig[32];	/* digest of their content hashes */
	bool		whole;			/* every page since the first was seen */
	int64		first_page;		/* raw_page_id of the pass's first page */
} IngestPass;

/* What one run has learnt and counted; lives in the run's memory context. */
typedef struct IngestState
{
	int64		run_id;
	int64		connector_id;
	char	   *connector_name;
	MemoryContext runcxt;
	HTAB	   *mapping;		/* account|date -> reseller, customer */
	HTAB	   *unmapped_seen;	/* account|period exceptions opened */
	List	   *currencies;
	List	   *products;		/* "code\tcategory" */
	List	   *product_map;	/* "field\tvalue\tcode" (settle.product_mapping) */
	bool		catalogue_loaded;
	/* counters */
	int			requests;
	int			retries;
	int			pages;
	int64		lines_seen;
	int64		lines_new;
	int64		lines_revised;
	int64		lines_unchanged;
	int64		lines_invalid;
	int64		lines_withdrawn;
	int			exceptions_opened;
	char	   *account_id;		/* member account pulled (BillOwnerId), NULL: own */
	char	   *billing_date;	/* the day pulled, for a day of a DAILY fan-out; NULL otherwise */
	IngestPass *pass;			/* BSS: the scope's pass, NULL for other sources */
	bool		group_locks;	/* this page's transaction stores only it: lock its
								 * lines' groups, not every bill line */
	char	  **lock_also;		/* with group_locks: more keys the page's
								 * transaction will write (withdrawals) */
	int			nlock_also;
	/* the counters above as of the last stored page (restored when a page fails) */
	struct
	{
		int			pages;
		int64		seen,
					new,
					revised,
					unchanged,
					invalid,
					withdrawn;
		int			exceptions;
	}			stored;
} IngestState;

extern void ingest_store_lines(IngestState *st, int64 raw_page_id,
							   const char *billing_period_start, const char *period,
							   NormLine *lines, int nlines);
extern void ingest_lock_lines(char **keys, int nkeys, bool exclusive);
extern IngestPass *ingest_pass_create(MemoryContext parent);
extern void ingest_replay_lines(IngestState *st, NormLine *lines, int nlines);
extern bool ingest_pass_claimed(IngestPass *pass, const char *line_key);
extern void ingest_line_error(NormLine *l, const char *fmt,...) pg_attribute_printf(2, 3);
extern bool ingest_parse_amount(NormLine *l, const char *field, char *text, bool isstr,
								bool required, Datum *out);
extern char *ingest_trim(char *s);
extern bool ingest_valid_date(const char *s);
extern char *ingest_next_day(const char *ymd);
extern char *ingest_next_month(const char *ym);

#endif							/* SETTLE_INGEST_LINES_H */
