/*
 * progress.c — one shared-memory slot per backend saying which reseller's
 * period it is settling, the phase and the lines done; read by
 * settle.settle_progress().
 *
 * The slots exist only when settle is in shared_preload_libraries (shared
 * memory is sized at start-up); otherwise progress reporting is a no-op and
 * the view is empty.  Writers use the same changecount protocol as
 * PgBackendStatus: readers retry until they see an even, unchanged count.
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "progress.h"
#include "settle.h"

PG_FUNCTION_INFO_V1(settle_progress);

typedef struct ProgressSlot
{
	pg_atomic_uint32 changecount;
	int			pid;			/* 0: slot unused */
	int64		reseller_id;
	char		period[8];
	int			phase;
	int64		lines_done;
	TimestampTz started;
} ProgressSlot;

static ProgressSlot *slots = NULL;
static int	nslots = 0;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static Size
progress_size(void)
{
	return mul_size(MaxBackends, sizeof(ProgressSlot));
}

static void
progress_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(progress_size());
}

static void
progress_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	slots = ShmemInitStruct("settle progress", progress_size(), &found);
	if (!found)
		memset(slots, 0, progress_size());
	nslots = MaxBackends;
	LWLockRelease(AddinShmemInitLock);
}

void
settle_progress_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = progress_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = progress_shmem_startup;
}

static ProgressSlot *
my_slot(void)
{
	if (slots == NULL || MyBackendId == InvalidBackendId || MyBackendId > nslots)
		return NULL;
	return &slots[MyBackendId - 1];
}

#define BEGIN_WRITE(s)	pg_atomic_fetch_add_u32(&(s)->changecount, 1); pg_write_barrier()
#define END_WRITE(s)	pg_write_barrier(); pg_atomic_fetch_add_u32(&(s)->changecount, 1)

/*
 * An error (or a cancel, or the backend's exit) that ends the settlement
 * before settle_progress_end must not leave the slot showing a settlement
 * that no longer runs: the slot is cleared whenever a transaction or
 * subtransaction aborts.
 */
static void
progress_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		settle_progress_end();
}

static void
progress_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						  SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		settle_progress_end();
}

void
settle_progress_begin(int64 reseller_id, const char *period)
{
	static bool callbacks_registered = false;
	ProgressSlot *s = my_slot();

	if (s == NULL)
		return;
	if (!callbacks_registered)
	{
		RegisterXactCallback(progress_xact_callback, NULL);
		RegisterSubXactCallback(progress_subxact_callback, NULL);
		callbacks_registered = true;
	}
	BEGIN_WRITE(s);
	s->pid = MyProcPid;
	s->reseller_id = reseller_id;
	strlcpy(s->period, period, sizeof(s->period));
	s->phase = SETTLE_PHASE_READING;
	s->lines_done = 0;
	s->started = GetCurrentTimestamp();
	END_WRITE(s);
}

void
settle_progress_update(SettlePhase phase, int64 lines_done)
{
	ProgressSlot *s = my_slot();

	if (s == NULL || s->pid != MyProcPid)
		return;
	BEGIN_WRITE(s);
	s->phase = phase;
	s->lines_done = lines_done;
	END_WRITE(s);
}

void
settle_progress_end(void)
{
	ProgressSlot *s = my_slot();

	if (s == NULL || s->pid != MyProcPid)
		return;
	BEGIN_WRITE(s);
	s->pid = 0;
	END_WRITE(s);
}

/*
 * settle.settle_progress() → (pid, reseller_id, period, phase, lines_done, started)
 * One row per backend settling a period now.
 */
Datum
settle_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const phases[] = {"", "reading bill lines", "evaluating rules", "writing lineage"};
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	for (i = 0; i < nslots; i++)
	{
		ProgressSlot copy;
		Datum		values[6];
		bool		nulls[6] = {0};

		for (;;)
		{
			uint32		before = pg_atomic_read_u32(&slots[i].changecount);

			pg_read_barrier();
			memcpy(&copy, &slots[i], sizeof(copy));
			pg_read_barrier();
			if (before % 2 == 0 && before == pg_atomic_read_u32(&slots[i].changecount))
				break;
			CHECK_FOR_INTERRUPTS();
		}
		if (copy.pid == 0)
			continue;
		values[0] = Int32GetDatum(copy.pid);
		values[1] = Int64GetDatum(copy.reseller_id);
		values[2] = CStringGetTextDatum(copy.period);
		values[3] = CStringGetTextDatum(phases[copy.phase >= 1 && copy.phase <= 3 ? copy.phase : 0]);
		values[4] = Int64GetDatum(copy.lines_done);
		values[5] = TimestampTzGetDatum(copy.started);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
