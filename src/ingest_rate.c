/*
 * ingest_rate.c — one request rate per AccessKey, shared by every pull of
 * the server: the pull workers and settle.ingest_now alike.
 *
 * Alibaba limits BSS calls per user (10 requests per second; beyond it the
 * call fails with Throttling.User).  settle.ingest_requests_per_second is
 * that limit.  Each AccessKey in use has an entry in shared memory holding
 * the earliest time its next request may be sent: a caller takes that time
 * under a spinlock, moves it on by 1/rate and sleeps until it comes.  So
 * concurrent pulls with one key interleave at the rate together, never
 * faster, however many there are, and pulls with different keys do not
 * wait for each other.  A key idle for a while starts again at once but
 * never bursts: requests are spaced, not counted.  Entries are keyed by a
 * 64-bit hash of the AccessKey id (never the secret); when all are in use
 * the one idle longest is taken over.
 *
 * Without shared memory (settle loaded on demand, not preloaded) each
 * backend spaces its own requests only.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "ingest.h"

#define RATE_KEYS 128

typedef struct RateEntry
{
	uint64		key;			/* hash of the AccessKey id; 0 = free */
	TimestampTz next;			/* earliest send time of its next request */
} RateEntry;

typedef struct RateShared
{
	slock_t		mutex;
	RateEntry	e[RATE_KEYS];
} RateShared;

static RateShared *rate_shared = NULL;
static TimestampTz local_next = 0;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
rate_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(sizeof(RateShared));
}

static void
rate_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rate_shared = ShmemInitStruct("settle ingest rate", sizeof(RateShared), &found);
	if (!found)
	{
		memset(rate_shared, 0, sizeof(RateShared));
		SpinLockInit(&rate_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init while preloading. */
void
ingest_rate_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = rate_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = rate_shmem_startup;
}

/*
 * Waits until a request with this AccessKey may be sent, and counts it as
 * sent.  A cancel or shutdown request ends the wait (its turn is lost, which
 * only slows the key down).
 */
void
ingest_rate_wait(const char *access_key_id)
{
	int			rate = settle_ingest_requests_per_second;
	TimestampTz now;
	TimestampTz start;
	int64		interval;

	if (rate <= 0)
		return;
	interval = USECS_PER_SEC / rate;
	now = GetCurrentTimestamp();
	if (rate_shared)
	{
		uint64		key = hash_bytes_extended((const unsigned char *) access_key_id,
											  strlen(access_key_id), 0) | 1;
		RateEntry  *e = NULL;
		RateEntry  *oldest = &rate_shared->e[0];
		int			i;

		SpinLockAcquire(&rate_shared->mutex);
		for (i = 0; i < RATE_KEYS; i++)
		{
			if (rate_shared->e[i].key == key)
			{
				e = &rate_shared->e[i];
				break;
			}
			if (rate_shared->e[i].next < oldest->next)
				oldest = &rate_shared->e[i];
		}
		if (e == NULL)
		{
			e = oldest;
			e->key = key;
			e->next = 0;
		}
		start = Max(now, e->next);
		e->next = start + interval;
		SpinLockRelease(&rate_shared->mutex);
	}
	else
	{
		start = Max(now, local_next);
		local_next = start + interval;
	}
	if (start > now)
		ingest_sleep_until(start);
}
