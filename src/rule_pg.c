/*
 * rule_pg.c — SQL interface of the settle.rule type: input/output,
 * send/receive, equality and hashing, coverage checks, single-line
 * evaluation (settle.evaluate_rule) and money rounding.
 *
 * The work is done by the pure-C rule core (rule.h); this file converts
 * between datums and the core's structures and turns RuleError into ereport.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "rule_pg.h"

static void *
pg_rule_alloc(void *ctx, size_t size)
{
	return palloc(size);
}

static void
pg_rule_free(void *ctx, void *ptr)
{
	pfree(ptr);
}

const RuleAllocator settle_rule_palloc = {pg_rule_alloc, pg_rule_free, NULL};

/* a settle.rule datum is a varlena holding the binary form */
#define DatumGetRuleP(d)	((struct varlena *) PG_DETOAST_DATUM(d))
#define PG_GETARG_RULE_P(n) DatumGetRuleP(PG_GETARG_DATUM(n))

static void
report_rule_error(const RuleError *err)
{
	int			code;

	switch (err->kind)
	{
		case RULE_ERR_SYNTAX:
			code = ERRCODE_SYNTAX_ERROR;
			break;
		case RULE_ERR_SEMANTIC:
			code = ERRCODE_INVALID_PARAMETER_VALUE;
			break;
		default:
			code = ERRCODE_INVALID_BINARY_REPRESENTATION;
			break;
	}
	if (err->line > 0)
		ereport(ERROR,
				(errcode(code),
				 errmsg("invalid commission rule: %s", err->message),
				 errdetail("The problem is at line %d, column %d.", err->line, err->column)));
	ereport(ERROR,
			(errcode(code),
			 errmsg("%s", err->message),
			 errdetail("The settle.rule binary data was refused; no line or column applies.")));
}

static Rule *
decode_or_error(struct varlena *v)
{
	RuleError	err;
	Rule	   *rule = rule_decode((const uint8_t *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v),
								   &settle_rule_palloc, &err);

	if (rule == NULL)
		report_rule_error(&err);
	return rule;
}

const Rule *
settle_rule_compile(Datum d, MemoryContext mcxt)
{
	MemoryContext old = MemoryContextSwitchTo(mcxt);
	Rule	   *rule = decode_or_error(DatumGetRuleP(d));

	MemoryContextSwitchTo(old);
	return rule;
}

static struct varlena *
rule_to_varlena(const Rule *rule)
{
	size_t		len;
	uint8_t    *bin = rule_encode(rule, &settle_rule_palloc, &len);
	struct varlena *v = palloc(VARHDRSZ + len);

	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), bin, len);
	pfree(bin);
	return v;
}

PG_FUNCTION_INFO_V1(settle_rule_in);
Datum
settle_rule_in(PG_FUNCTION_ARGS)
{
	char	   *src = PG_GETARG_CSTRING(0);
	RuleError	err;
	Rule	   *rule = rule_parse(src, &settle_rule_palloc, &err);

	if (rule == NULL)
		report_rule_error(&err);
	PG_RETURN_POINTER(rule_to_varlena(rule));
}

PG_FUNCTION_INFO_V1(settle_rule_out);
Datum
settle_rule_out(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));

	PG_RETURN_CSTRING(rule_print(rule, &settle_rule_palloc, NULL));
}

/*
 * Binary input: the canonical binary form, validated field by field and
 * checked to be canonical; strings must be valid in the database encoding.
 */
PG_FUNCTION_INFO_V1(settle_rule_recv);
Datum
settle_rule_recv(PG_FUNCTION_ARGS)
{
	StringInfo	buf = (StringInfo) PG_GETARG_POINTER(0);
	int			len = buf->len - buf->cursor;
	const char *data = pq_getmsgbytes(buf, len);
	RuleError	err;
	Rule	   *rule = rule_decode((const uint8_t *) data, len, &settle_rule_palloc, &err);
	char	   *text;
	size_t		tlen;
	struct varlena *v;

	if (rule == NULL)
		report_rule_error(&err);
	text = rule_print(rule, &settle_rule_palloc, &tlen);
	if (!pg_verify_mbstr(GetDatabaseEncoding(), text, (int) tlen, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_BINARY_REPRESENTATION),
				 errmsg("invalid rule binary data: a string is not valid in encoding \"%s\"",
						GetDatabaseEncodingName())));
	v = palloc(VARHDRSZ + len);
	SET_VARSIZE(v, VARHDRSZ + len);
	memcpy(VARDATA(v), data, len);
	PG_RETURN_POINTER(v);
}

PG_FUNCTION_INFO_V1(settle_rule_send);
Datum
settle_rule_send(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_RULE_P(0);
	StringInfoData buf;

	pq_begintypsend(&buf);
	pq_sendbytes(&buf, VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

/* the binary form is canonical, so equal rules have equal bytes */
static bool
rule_bytes_eq(struct varlena *a, struct varlena *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

PG_FUNCTION_INFO_V1(settle_rule_eq);
Datum
settle_rule_eq(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(rule_bytes_eq(PG_GETARG_RULE_P(0), PG_GETARG_RULE_P(1)));
}

PG_FUNCTION_INFO_V1(settle_rule_ne);
Datum
settle_rule_ne(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(!rule_bytes_eq(PG_GETARG_RULE_P(0), PG_GETARG_RULE_P(1)));
}

PG_FUNCTION_INFO_V1(settle_rule_hash);
Datum
settle_rule_hash(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_RULE_P(0);

	return hash_any((unsigned char *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v));
}

PG_FUNCTION_INFO_V1(settle_rule_hash_extended);
Datum
settle_rule_hash_extended(PG_FUNCTION_ARGS)
{
	struct varlena *v = PG_GETARG_RULE_P(0);

	return hash_any_extended((unsigned char *) VARDATA_ANY(v), VARSIZE_ANY_EXHDR(v),
							 PG_GETARG_INT64(1));
}

/* ---- coverage checks and introspection ---- */

typedef struct ProblemList
{
	ArrayBuildState *astate;
} ProblemList;

static void
collect_problem(void *arg, const char *msg)
{
	ProblemList *pl = arg;

	pl->astate = accumArrayResult(pl->astate, CStringGetTextDatum(msg), false,
								  TEXTOID, CurrentMemoryContext);
}

/* settle.rule_problems(rule) -> text[]: coverage problems, empty when none */
PG_FUNCTION_INFO_V1(settle_rule_problems);
Datum
settle_rule_problems(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));
	ProblemList pl = {NULL};

	if (rule_check(rule, collect_problem, &pl, &settle_rule_palloc) == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));
	PG_RETURN_DATUM(makeArrayResult(pl.astate, CurrentMemoryContext));
}

PG_FUNCTION_INFO_V1(settle_rule_currency);
Datum
settle_rule_currency(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));

	PG_RETURN_TEXT_P(cstring_to_text(rule->currency));
}

PG_FUNCTION_INFO_V1(settle_rule_rounding);
Datum
settle_rule_rounding(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));

	PG_RETURN_TEXT_P(cstring_to_text(rule_rounding_name(rule->rounding)));
}

PG_FUNCTION_INFO_V1(settle_rule_refund_window_days);
Datum
settle_rule_refund_window_days(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));

	if (!rule->has_refund_window)
		PG_RETURN_NULL();
	PG_RETURN_INT32(rule->refund_window_days);
}

PG_FUNCTION_INFO_V1(settle_rule_minimum_payout);
Datum
settle_rule_minimum_payout(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));

	if (!rule->has_min_payout)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(settle_money_to_numeric(rule->min_payout, 0));
}

/* settle.rule_categories(rule) -> text[]: product categories matched on */
PG_FUNCTION_INFO_V1(settle_rule_categories);
Datum
settle_rule_categories(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));
	ArrayBuildState *astate = NULL;

	for (uint32 i = 0; i < rule->nclauses; i++)
		for (uint32 j = 0; j < rule->clauses[i].ncond; j++)
		{
			RuleCond   *cd = &rule->clauses[i].conds[j];

			if (cd->dim != RULE_DIM_CATEGORY)
				continue;
			for (uint32 k = 0; k < cd->nvalues; k++)
				astate = accumArrayResult(astate, CStringGetTextDatum(cd->values[k].s), false,
										  TEXTOID, CurrentMemoryContext);
		}
	if (astate == NULL)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));
	PG_RETURN_DATUM(makeArrayResult(astate, CurrentMemoryContext));
}

/* settle.rule_clause(rule, n) -> text: the n-th clause, canonically */
PG_FUNCTION_INFO_V1(settle_rule_clause);
Datum
settle_rule_clause(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));
	int32		n = PG_GETARG_INT32(1);

	if (n < 1 || (uint32) n > rule->nclauses)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(rule_print_clause(rule, n - 1, &settle_rule_palloc)));
}

/* ---- numeric boundary ---- */

money128
settle_numeric_to_money(Datum num, const char *what)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, num));
	money128	v = 0;

	/* bill amounts and period sums may carry up to 16 decimal places */
	switch (money_parse(s, strlen(s), MONEY_SCALE, &v))
	{
		case MONEY_OK:
			break;
		case MONEY_TOO_PRECISE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s %s has more than %d decimal places", what, s, MONEY_SCALE),
					 errdetail("Amounts are held exactly to %d decimal places; settle never rounds an input silently.",
							   MONEY_SCALE)));
			break;
		case MONEY_OUT_OF_RANGE:
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("%s %s is out of range", what, s),
					 errdetail("Amounts must be smaller than 10^%d in magnitude.", MONEY_MAX_DIGITS)));
			break;
		case MONEY_SYNTAX:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s %s is not a finite number", what, s)));
			break;
	}
	return v;
}

Datum
settle_money_to_numeric(money128 v, int min_scale)
{
	char		buf[MONEY_FORMAT_BUFLEN];

	money_format(v, min_scale, buf);
	return DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
							   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
}

static MoneyRounding
rounding_from_text(text *t)
{
	char	   *s = text_to_cstring(t);

	if (strcmp(s, "half_even") == 0)
		return MONEY_ROUND_HALF_EVEN;
	if (strcmp(s, "half_up") == 0)
		return MONEY_ROUND_HALF_UP;
	if (strcmp(s, "down") == 0)
		return MONEY_ROUND_DOWN;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown rounding mode \"%s\"", s),
			 errhint("Use half_even, half_up or down.")));
	return MONEY_ROUND_HALF_EVEN;
}

/* settle.round_money(amount numeric, minor_unit int, mode text) -> numeric */
PG_FUNCTION_INFO_V1(settle_round_money);
Datum
settle_round_money(PG_FUNCTION_ARGS)
{
	char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out, PG_GETARG_DATUM(0)));
	int32		minor = PG_GETARG_INT32(1);
	MoneyRounding mode = rounding_from_text(PG_GETARG_TEXT_PP(2));
	money128	v = 0;

	if (minor < 0 || minor > 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("minor unit %d is out of range", minor),
				 errdetail("ISO 4217 minor units are 0 to 4.")));
	switch (money_parse(s, strlen(s), MONEY_SCALE, &v))
	{
		case MONEY_OK:
			break;
		case MONEY_TOO_PRECISE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("amount %s has more than %d decimal places", s, MONEY_SCALE)));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
					 errmsg("amount %s is out of range", s)));
	}
	PG_RETURN_DATUM(settle_money_to_numeric(money_round(v, minor, mode), minor));
}

/* ---- single-line evaluation ---- */

/*
 * The last rule evaluated by this call site, compiled, in a context of its
 * own that is reset when the rule changes (so a query over many rules does
 * not accumulate them).
 */
typedef struct EvalCache
{
	MemoryContext mcxt;
	Size		len;
	char	   *bytes;
	const Rule *rule;
} EvalCache;

static const Rule *
cached_rule(FunctionCallInfo fcinfo, struct varlena *v)
{
	EvalCache  *c = fcinfo->flinfo->fn_extra;
	Size		len = VARSIZE_ANY_EXHDR(v);

	if (c != NULL && c->rule != NULL && c->len == len &&
		memcmp(c->bytes, VARDATA_ANY(v), len) == 0)
		return c->rule;
	if (c == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(EvalCache));
		c->mcxt = AllocSetContextCreate(fcinfo->flinfo->fn_mcxt, "settle rule cache",
										ALLOCSET_SMALL_SIZES);
		fcinfo->flinfo->fn_extra = c;
	}
	MemoryContextReset(c->mcxt);
	c->rule = NULL;
	c->bytes = MemoryContextAlloc(c->mcxt, len);
	memcpy(c->bytes, VARDATA_ANY(v), len);
	c->len = len;
	c->rule = settle_rule_compile(PointerGetDatum(v), c->mcxt);
	return c->rule;
}

static RuleText
arg_text(FunctionCallInfo fcinfo, int n)
{
	RuleText	t = {NULL, 0};

	if (!PG_ARGISNULL(n))
	{
		text	   *x = PG_GETARG_TEXT_PP(n);

		t.s = VARDATA_ANY(x);
		t.len = VARSIZE_ANY_EXHDR(x);
	}
	return t;
}

static money128
arg_money(FunctionCallInfo fcinfo, int n, const char *what)
{
	if (PG_ARGISNULL(n))
		return 0;
	return settle_numeric_to_money(PG_GETARG_DATUM(n), what);
}

static RuleText
jsonb_scalar_text(JsonbValue *v)
{
	RuleText	t = {NULL, 0};
	char	   *s;

	switch (v->type)
	{
		case jbvString:
			t.s = pnstrdup(v->val.string.val, v->val.string.len);
			t.len = v->val.string.len;
			return t;
		case jbvNumeric:
			s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
			break;
		case jbvBool:
			s = v->val.boolean ? "true" : "false";
			break;
		default:
			return t;			/* null, array, object: matches nothing */
	}
	t.s = s;
	t.len = strlen(s);
	return t;
}

/*
 * The tags of a JSON object as rule_eval sees them: each key with its value
 * as text (a string as it is, a number as numeric_out prints it, true or
 * false); a null, array or object value matches nothing.  Everything is
 * copied into CurrentMemoryContext.  settle.evaluate_rule and settle_period
 * both use this, so they see the same tags.
 */
int
settle_jsonb_tags(Jsonb *jb, RuleTag **out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	RuleTag    *tags;
	int			cap,
				ntags = 0;

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tags must be a JSON object")));
	cap = JB_ROOT_COUNT(jb) + 1;
	tags = palloc0(sizeof(RuleTag) * cap);
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY && ntags < cap)
		{
			tags[ntags].key.s = pnstrdup(v.val.string.val, v.val.string.len);
			tags[ntags].key.len = v.val.string.len;
		}
		else if (tok == WJB_VALUE && ntags < cap)
		{
			tags[ntags].value = jsonb_scalar_text(&v);
			ntags++;
		}
	}
	*out = tags;
	return ntags;
}

static const char *const status_names[] = {
	"ok", "not_eligible", "no_match", "no_tier", "bad_proration", "inexact"
};
static const char *const limit_names[] = {
	NULL, "line_cap", "line_floor", "customer_cap", "reseller_cap"
};
static const char *const refund_names[] = {
	NULL, "in_period", "next_adjustment", "unknown_age"
};
static const char *const pay_names[] = {
	"percent", "per_line", "per_month", "per_month_prorated", "tiers"
};

/*
 * settle.evaluate_rule(rule, product, category, sku, charge_category, region,
 *   segment, tags, billed_cost, list_cost, amount_paid, active_days,
 *   days_in_month, customer_spend, reseller_spend, reseller_volume,
 *   customer_spend_before, reseller_spend_before,
 *   customer_commission_to_date, reseller_commission_to_date,
 *   refund_age_days) -> record
 */
PG_FUNCTION_INFO_V1(settle_evaluate_rule);
Datum
settle_evaluate_rule(PG_FUNCTION_ARGS)
{
	const Rule *rule;
	RuleLine	line;
	RuleContext ctx;
	RuleResult	res;
	TupleDesc	tupdesc;
	Datum		values[14];
	bool		nulls[14];
	RuleTag    *tags = NULL;
	int			ntags = 0;
	char		buf[MONEY_FORMAT_BUFLEN];

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	rule = cached_rule(fcinfo, PG_GETARG_RULE_P(0));

	memset(&line, 0, sizeof(line));
	memset(&ctx, 0, sizeof(ctx));
	line.product = arg_text(fcinfo, 1);
	line.category = arg_text(fcinfo, 2);
	line.sku = arg_text(fcinfo, 3);
	if (PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("charge_category must not be null")));
	{
		RuleText	ch = arg_text(fcinfo, 4);

		line.charge = rule_charge_category(ch.s, ch.len);
		if (line.charge == RULE_CHARGE_UNKNOWN)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown charge category \"%.*s\"", (int) ch.len, ch.s),
					 errhint("FOCUS charge categories are Usage, Purchase, Tax, Credit and Adjustment.")));
	}
	line.region = arg_text(fcinfo, 5);
	line.segment = arg_text(fcinfo, 6);
	if (!PG_ARGISNULL(7))
		ntags = settle_jsonb_tags(PG_GETARG_JSONB_P(7), &tags);
	line.tags = tags;
	line.ntags = ntags;
	line.billed_cost = arg_money(fcinfo, 8, "billed_cost");
	line.list_cost = arg_money(fcinfo, 9, "list_cost");
	line.amount_paid = arg_money(fcinfo, 10, "amount_paid");
	if (PG_ARGISNULL(11) != PG_ARGISNULL(12))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("active_days and days_in_month must be given together")));
	if (!PG_ARGISNULL(11))
	{
		line.active_days = PG_GETARG_INT32(11);
		line.days_in_month = PG_GETARG_INT32(12);
		if (line.days_in_month < 28 || line.days_in_month > 31 ||
			line.active_days < 0 || line.active_days > line.days_in_month)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("active days %d of %d days in the month are out of range",
							line.active_days, line.days_in_month),
					 errdetail("A month has 28 to 31 days; active days are between 0 and the days in the month.")));
	}
	ctx.customer_spend = arg_money(fcinfo, 13, "customer_spend");
	ctx.reseller_spend = arg_money(fcinfo, 14, "reseller_spend");
	ctx.reseller_volume = arg_money(fcinfo, 15, "reseller_volume");
	ctx.customer_spend_before = arg_money(fcinfo, 16, "customer_spend_before");
	ctx.reseller_spend_before = arg_money(fcinfo, 17, "reseller_spend_before");
	ctx.customer_commission_to_date = arg_money(fcinfo, 18, "customer_commission_to_date");
	ctx.reseller_commission_to_date = arg_money(fcinfo, 19, "reseller_commission_to_date");
	line.refund_age_days = PG_ARGISNULL(20) ? -1 : PG_GETARG_INT32(20);
	if (line.refund_age_days < -1)
		line.refund_age_days = -1;

	rule_eval(rule, &line, &ctx, &res);

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(status_names[res.status]);
	values[1] = Int32GetDatum(res.clause);
	nulls[1] = res.clause == 0;
	if (res.clause > 0)
		values[2] = CStringGetTextDatum(rule_print_clause(rule, res.clause - 1, &settle_rule_palloc));
	else
		nulls[2] = true;
	values[3] = Int32GetDatum(res.tier);
	nulls[3] = res.tier == 0;
	values[4] = CStringGetTextDatum(rule_basis_name(res.basis_kind));
	values[5] = settle_money_to_numeric(res.basis, 0);
	if (res.clause > 0 && (res.pay == RULE_PAY_PERCENT || res.pay == RULE_PAY_TIERS) &&
		res.status == RULE_EVAL_OK)
	{
		rate_format_percent(res.rate, buf);
		values[6] = DirectFunctionCall3(numeric_in, CStringGetDatum(buf),
										ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	}
	else
		nulls[6] = true;
	if (res.clause > 0 && res.pay != RULE_PAY_PERCENT && res.pay != RULE_PAY_TIERS)
		values[7] = settle_money_to_numeric(res.fixed_amount, 0);
	else
		nulls[7] = true;
	values[8] = res.clause > 0 ? CStringGetTextDatum(pay_names[res.pay]) : (Datum) 0;
	nulls[8] = res.clause == 0;
	values[9] = settle_money_to_numeric(res.commission_before_limits, 0);
	values[10] = limit_names[res.limit] ? CStringGetTextDatum(limit_names[res.limit]) : (Datum) 0;
	nulls[10] = limit_names[res.limit] == NULL;
	values[11] = settle_money_to_numeric(res.commission, 0);
	values[12] = settle_money_to_numeric(res.commission_rounded, rule->minor_unit);
	values[13] = refund_names[res.refund_timing] ? CStringGetTextDatum(refund_names[res.refund_timing]) : (Datum) 0;
	nulls[13] = refund_names[res.refund_timing] == NULL;

	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

PG_FUNCTION_INFO_V1(settle_rule_minor_unit);
Datum
settle_rule_minor_unit(PG_FUNCTION_ARGS)
{
	Rule	   *rule = decode_or_error(PG_GETARG_RULE_P(0));

	PG_RETURN_INT32(rule->minor_unit);
}
