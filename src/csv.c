/*
 * csv.c — settle.csv_parse: RFC 4180 CSV text into one text[] per record.
 *
 * One pass over the bytes, so the time is linear in the input.  Every server
 * encoding is ASCII-safe (no byte of a multibyte character is below 0x80),
 * so the four bytes that matter — quote, comma, CR, LF — are found by
 * comparing bytes, and the text type guarantees the input is valid in the
 * server encoding.
 *
 * The grammar:
 *   - records end at CRLF, LF or a lone CR; a line with nothing on it is
 *     skipped (a line holding only "" or only commas is a record);
 *   - fields are separated by commas; a field that starts with a double
 *     quote runs to the matching closing quote and may hold commas, quotes
 *     (written twice) and line breaks;
 *   - refused (22P04, bad_copy_file_format, naming the record): a quoted
 *     field that is never closed, anything but a comma or line end after a
 *     closing quote, and a quote inside a field that does not start with one.
 *
 * Each record's array is built in place in one buffer (array header, then
 * each element as a 4-byte-header varlena, int-aligned) and copied once into
 * the tuplestore, so memory stays a small multiple of the largest record.
 * Input larger than settle.csv_max_bytes is refused (54000) before it is
 * detoasted.
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "settle.h"

PG_FUNCTION_INFO_V1(settle_csv_parse);
PG_FUNCTION_INFO_V1(settle_csv_check_size);

/* settle.csv_max_bytes: the largest CSV text accepted, in bytes */
static int	settle_csv_max_bytes = 64 * 1024 * 1024;

/* where a record's array data starts in the record buffer */
#define CSV_ARRAY_HEADER	ARR_OVERHEAD_NONULLS(1)

void
settle_csv_init(void)
{
	DefineCustomIntVariable("settle.csv_max_bytes",
							"Largest CSV text settle.csv_parse and settle.import_payout_confirmations accept.",
							"Larger text is refused with SQLSTATE 54000 before it is read.",
							&settle_csv_max_bytes,
							64 * 1024 * 1024, 1024, (int) MaxAllocSize,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);
}

/*
 * Refuses text over settle.csv_max_bytes.  Reads only the length word (for
 * a toasted value, its raw size), never the text.
 */
static void
csv_check_size(Datum input)
{
	Size		size = toast_raw_datum_size(input) - VARHDRSZ;

	if (size > (Size) settle_csv_max_bytes)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("CSV text of %zu bytes exceeds the limit of %d bytes", size, settle_csv_max_bytes),
				 errdetail("settle.csv_max_bytes limits the CSV text read in one call; nothing was read."),
				 errhint("Split the file into smaller ones, or have a superuser raise settle.csv_max_bytes.")));
}

/*
 * settle._csv_check_size(input text) RETURNS void: the same refusal, for
 * callers that check before doing any other work.
 */
Datum
settle_csv_check_size(PG_FUNCTION_ARGS)
{
	csv_check_size(PG_GETARG_DATUM(0));
	PG_RETURN_VOID();
}

/* The parser's state: the record being built and where we are. */
typedef struct CsvParser
{
	StringInfoData rec;			/* array header, then the elements so far */
	int			nfields;		/* complete fields in rec */
	int			field_start;	/* offset of the current field's varlena */
	int64		record;			/* 1-based number of the record being read */
	int64		line;			/* 1-based physical line */
	bool		started;		/* the current record has content */
	Tuplestorestate *store;
	TupleDesc	desc;
} CsvParser;

/* Opens a new field: int-align, reserve its varlena header. */
static inline void
csv_field_open(CsvParser *cp)
{
	while (cp->rec.len % sizeof(int32) != 0)
		appendStringInfoCharMacro(&cp->rec, '\0');
	cp->field_start = cp->rec.len;
	enlargeStringInfo(&cp->rec, VARHDRSZ);
	cp->rec.len += VARHDRSZ;
}

/* Bytes in the current (open) field. */
static inline int
csv_field_len(const CsvParser *cp)
{
	return cp->rec.len - cp->field_start - VARHDRSZ;
}

/* Closes the current field: sets its length; the next one opens. */
static inline void
csv_field_close(CsvParser *cp)
{
	SET_VARSIZE(cp->rec.data + cp->field_start, cp->rec.len - cp->field_start);
	if (cp->nfields >= (int) MaxArraySize - 1)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("CSV record %lld has too many fields", (long long) cp->record),
				 errdetail("A record may have at most %d fields.", (int) MaxArraySize - 1)));
	cp->nfields++;
	csv_field_open(cp);
}

/* Closes the last field and stores the record as a text[]. */
static void
csv_record_emit(CsvParser *cp)
{
	ArrayType  *a;
	Datum		value;
	bool		isnull = false;

	SET_VARSIZE(cp->rec.data + cp->field_start, cp->rec.len - cp->field_start);
	cp->nfields++;
	while (cp->rec.len % sizeof(int32) != 0)
		appendStringInfoCharMacro(&cp->rec, '\0');

	a = (ArrayType *) cp->rec.data;
	SET_VARSIZE(a, cp->rec.len);
	a->ndim = 1;
	a->dataoffset = 0;
	a->elemtype = TEXTOID;
	ARR_DIMS(a)[0] = cp->nfields;
	ARR_LBOUND(a)[0] = 1;
	value = PointerGetDatum(a);
	tuplestore_putvalues(cp->store, cp->desc, &value, &isnull);

	cp->rec.len = CSV_ARRAY_HEADER;
	cp->nfields = 0;
	cp->record++;
	cp->started = false;
	csv_field_open(cp);
	CHECK_FOR_INTERRUPTS();
}

/*
 * settle.csv_parse(input text) RETURNS SETOF text[]
 */
Datum
settle_csv_parse(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *input;
	const char *p;
	const char *end;
	CsvParser	cp;

	csv_check_size(PG_GETARG_DATUM(0));
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (rsinfo->setDesc->natts != 1 || TupleDescAttr(rsinfo->setDesc, 0)->atttypid != TEXTARRAYOID)
		elog(ERROR, "settle.csv_parse must return one text[] column");

	input = PG_GETARG_TEXT_PP(0);
	p = VARDATA_ANY(input);
	end = p + VARSIZE_ANY_EXHDR(input);

	initStringInfo(&cp.rec);
	enlargeStringInfo(&cp.rec, CSV_ARRAY_HEADER);
	memset(cp.rec.data, 0, CSV_ARRAY_HEADER);
	cp.rec.len = CSV_ARRAY_HEADER;
	cp.nfields = 0;
	cp.record = 1;
	cp.line = 1;
	cp.started = false;
	cp.store = rsinfo->setResult;
	cp.desc = rsinfo->setDesc;
	csv_field_open(&cp);

	while (p < end)
	{
		char		c = *p;

		if (c == '"')
		{
			int64		quote_line = cp.line;

			if (csv_field_len(&cp) > 0)
				ereport(ERROR,
						(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
						 errmsg("quote inside an unquoted field of CSV record %lld", (long long) cp.record),
						 errdetail("On line %lld a double quote follows other text in the same field.", (long long) cp.line),
						 errhint("Enclose the whole field in double quotes and write each quote inside it twice (\"\").")));
			p++;
			for (;;)
			{
				const char *q = p;

				while (q < end && *q != '"')
				{
					if (*q == '\n' || (*q == '\r' && (q + 1 == end || q[1] != '\n')))
						cp.line++;
					q++;
				}
				appendBinaryStringInfo(&cp.rec, p, q - p);
				if (q == end)
					ereport(ERROR,
							(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
							 errmsg("unterminated quoted field in CSV record %lld", (long long) cp.record),
							 errdetail("The quoted field that starts on line %lld is not closed before the end of the text.", (long long) quote_line),
							 errhint("Close the field with a double quote; a quote inside a quoted field is written twice (\"\").")));
				if (q + 1 < end && q[1] == '"')
				{
					appendStringInfoCharMacro(&cp.rec, '"');
					p = q + 2;
					continue;
				}
				p = q + 1;
				break;
			}
			cp.started = true;
			if (p < end && *p != ',' && *p != '\r' && *p != '\n')
				ereport(ERROR,
						(errcode(ERRCODE_BAD_COPY_FILE_FORMAT),
						 errmsg("text after the closing quote of a field in CSV record %lld", (long long) cp.record),
						 errdetail("On line %lld \"%.*s\" follows a closing quote; only a comma or a line end may.",
								   (long long) cp.line, pg_mblen(p), p),
						 errhint("A quote inside a quoted field is written twice (\"\").")));
		}
		else if (c == ',')
		{
			csv_field_close(&cp);
			cp.started = true;
			p++;
		}
		else if (c == '\n' || c == '\r')
		{
			p++;
			if (c == '\r' && p < end && *p == '\n')
				p++;
			if (cp.started || csv_field_len(&cp) > 0)
				csv_record_emit(&cp);
			cp.line++;
		}
		else
		{
			const char *q = p + 1;

			while (q < end && *q != ',' && *q != '"' && *q != '\n' && *q != '\r')
				q++;
			appendBinaryStringInfo(&cp.rec, p, q - p);
			cp.started = true;
			p = q;
		}
	}
	if (cp.started || csv_field_len(&cp) > 0)
		csv_record_emit(&cp);

	pfree(cp.rec.data);
	return (Datum) 0;
}
