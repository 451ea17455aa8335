/*
 * priority.c — month-end bulk work yields the CPU to finance's clicks.
 *
 * On a busy server every runnable backend gets its share of the cores, so a
 * finance login's two-millisecond approval queues behind a dozen settlement
 * and reconciliation backends (no lock is involved: it waits for a CPU).
 * settle.bulk_nice (0..19; 0, the default, leaves priorities alone) is the
 * nice value at which a session settles (settle_period, verify_run, the
 * parallel settlement workers) and reconciles; the kernel then gives the
 * cores to normal-priority backends first.  The priority is lowered for the
 * rest of the transaction and restored when it ends.
 *
 * Linux lets an unprivileged process raise its priority again only as far as
 * its RLIMIT_NICE allows (0 by default: never).  Where the server's limit
 * allows it (systemd: LimitNICE=+0 in the service; prlimit --nice=20 on the
 * postmaster), the priority is restored at the end of the transaction;
 * otherwise the session keeps the lower priority until it ends, and says so
 * once.  So set it for the roles and jobs that do bulk work (ALTER ROLE
 * month_end SET settle.bulk_nice = 10; pg_cron's jobs; the parallel settlement
 * workers inherit the database's and role's settings), never for finance's
 * logins.
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "settle.h"

PG_FUNCTION_INFO_V1(settle_bulk_priority_sql);

static int	bulk_nice = 0;
static bool lowered = false;	/* in this transaction, from saved_nice */
static int	saved_nice = 0;
static bool said_kept = false;

static void
restore_priority(XactEvent event, void *arg)
{
	if (!lowered)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		/* checked when lowering: the limit allows it */
		(void) setpriority(PRIO_PROCESS, 0, saved_nice);
		lowered = false;
	}
}

/* The lowest nice value this process may set itself (RLIMIT_NICE). */
static int
lowest_settable_nice(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NICE, &rl) != 0)
		return 20;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= 40)
		return -20;
	return 20 - (int) rl.rlim_cur;
}

/*
 * Lowers this backend's CPU priority to settle.bulk_nice, when set and lower
 * than now: for the rest of the transaction if it can be restored, else for
 * the rest of the session (see above).
 */
void
settle_bulk_priority(void)
{
	int			now;

	if (bulk_nice == 0 || lowered)
		return;
	errno = 0;
	now = getpriority(PRIO_PROCESS, 0);
	if (errno != 0 || now >= bulk_nice)
		return;
	if (setpriority(PRIO_PROCESS, 0, bulk_nice) != 0)
		return;
	if (lowest_settable_nice() <= now)
	{
		saved_nice = now;
		lowered = true;
	}
	else if (!said_kept)
	{
		said_kept = true;
		ereport(NOTICE,
				(errmsg("this session now runs at CPU priority nice %d (settle.bulk_nice) until it ends", bulk_nice),
				 errdetail("The server's nice limit (RLIMIT_NICE) does not let a session raise its priority again."),
				 errhint("Set settle.bulk_nice only for roles and jobs that do bulk work, or start the server with LimitNICE=+0 (systemd) to have it restored after each transaction.")));
	}
}

/* settle._bulk_priority(): the same, for the SQL-language entry points */
Datum
settle_bulk_priority_sql(PG_FUNCTION_ARGS)
{
	settle_bulk_priority();
	PG_RETURN_VOID();
}

void
settle_priority_init(void)
{
	DefineCustomIntVariable("settle.bulk_nice",
							"CPU priority (nice value) at which settlement and reconciliation run; 0 leaves it alone.",
							"Lowered for the rest of the transaction, or of the session when the server's nice limit does not allow raising it again, so that short interactive transactions get the cores first.",
							&bulk_nice,
							0, 0, 19,
							PGC_USERSET,
							0,
							NULL, NULL, NULL);
	RegisterXactCallback(restore_priority, NULL);
}
