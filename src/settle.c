/*
 * settle.c — module entry point.
 *
 * _PG_init defines the settings shared by every module and calls each
 * module's init function.  It works both when settle is loaded on demand
 * (CREATE EXTENSION, first function call) and from shared_preload_libraries;
 * modules that need shared resources (the ingest worker) check
 * process_shared_preload_libraries_in_progress themselves.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "progress.h"
#include "settle.h"

PG_MODULE_MAGIC;

char	   *settle_reason = NULL;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("settle.reason",
							   "Why the current change is made; recorded in the audit trail.",
							   "Required for changes to agreements, FX rates and exceptions.  Set it with SET LOCAL in the transaction that makes the change.",
							   &settle_reason,
							   NULL,
							   PGC_USERSET,
							   GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	settle_audit_init();
	settle_progress_init();
	settle_ingest_init();

	MarkGUCPrefixReserved("settle");
}
