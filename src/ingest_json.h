/*
 * ingest_json.h — the BSS reply reader: one pass of PostgreSQL's JSON lexer
 * over a reply, keeping the envelope (Code, Message, RequestId, NextToken)
 * and, for every list item, the raw token text of the fields settle uses.
 * Numbers keep their exact JSON text, so amounts never pass through double.
 */
#ifndef SETTLE_INGEST_JSON_H
#define SETTLE_INGEST_JSON_H

typedef enum BssField
{
	BF_AdjustAmount,
	BF_AfterDiscountAmount,
	BF_BillAccountID,
	BF_BillAccountName,
	BF_BillingDate,
	BF_BillingItem,
	BF_BillingItemCode,
	BF_BillingType,
	BF_BizType,
	BF_CashAmount,
	BF_CommodityCode,
	BF_Currency,
	BF_DeductedByCashCoupons,
	BF_DeductedByCoupons,
	BF_DeductedByPrepaidCard,
	BF_DeductedByResourcePackage,
	BF_InstanceID,
	BF_InvoiceDiscount,
	BF_Item,
	BF_ListPrice,
	BF_OutstandingAmount,
	BF_OwnerID,
	BF_PaymentAmount,
	BF_PipCode,
	BF_PretaxAmount,
	BF_PretaxGrossAmount,
	BF_ProductCode,
	BF_ProductName,
	BF_ProductType,
	BF_Region,
	BF_ServicePeriod,
	BF_SubscriptionType,
	BF_Tag,
	BF_Usage,
	BF_UsageUnit,
	BF_Zone,
	BF__COUNT
} BssField;

typedef struct BssItem
{
	char	   *f[BF__COUNT];	/* raw token text, NULL when absent or null */
	bool		isstr[BF__COUNT];	/* the token was a JSON string */
} BssItem;

typedef struct BssReply
{
	char	   *code;
	char	   *message;
	char	   *request_id;
	char	   *next_token;
	char	   *total_count;
	bool		has_data;
	bool		repaired;		/* invalid UTF-8 was replaced by U+FFFD */
	int			nitems;
	int			maxitems;
	BssItem    *items;
} BssReply;

/* Parses body; returns NULL on success, else a palloc'd description. */
extern char *bss_parse_reply(char *body, size_t len, BssReply *reply);
extern const char *bss_field_name(BssField f);

#endif							/* SETTLE_INGEST_JSON_H */
