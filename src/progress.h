/*
 * progress.h — progress of running settlements, shown by the view
 * settle.settle_progress (in the spirit of pg_stat_progress_*).
 */
#ifndef SETTLE_PROGRESS_H
#define SETTLE_PROGRESS_H

typedef enum SettlePhase
{
	SETTLE_PHASE_READING = 1,	/* reading bill lines */
	SETTLE_PHASE_EVALUATING,	/* evaluating rules, tiers, caps, refunds */
	SETTLE_PHASE_WRITING		/* writing lineage */
} SettlePhase;

extern void settle_progress_init(void);
extern void settle_progress_begin(int64 reseller_id, const char *period);
extern void settle_progress_update(SettlePhase phase, int64 lines_done);
extern void settle_progress_end(void);

#endif							/* SETTLE_PROGRESS_H */
