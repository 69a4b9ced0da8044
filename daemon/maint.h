/* maint: queue maintenance in outreachd: due jobs from schedule and retry, jobs of dead workers. */
#ifndef OUTREACH_MAINT_H
#define OUTREACH_MAINT_H

#include <event2/event.h>
#include <stdbool.h>

#include "common/cfg.h"
#include "daemon/aredis.h"

struct maint;

struct maint_stats {
	unsigned long polled;    /* jobs moved from schedule/retry to their queues */
	unsigned long recovered; /* jobs handed back from dead workers */
	unsigned long killed;    /* jobs sent to dead (invalid, or recovered too often) */
	unsigned long polls;  /* passes of the poller */
	unsigned long pages;  /* pages of due entries it read (a pass reads past the entries Redis refused) */
	unsigned long sweeps; /* passes of the sweeper */
	size_t due_refused;   /* due jobs Redis refused to move in the last complete pass (they stay) */
	size_t sweep_refused; /* jobs of dead workers Redis refused to hand back in the last complete sweep */
};

/* Starts (disabled until maint_enable) the poller (every scheduler.poll_interval_ms) and the sweeper (every
 * scheduler.sweep_interval s) on ar. *cfgp is read at each run, so a reload takes effect. */
struct maint *maint_new(struct event_base *base, struct ar *ar, const struct cfg *const *cfgp);
void maint_free(struct maint *m);

/* Pauses or resumes both (e.g. when this daemon is not the leader). */
void maint_enable(struct maint *m, bool on);
const struct maint_stats *maint_stats(const struct maint *m);

#endif
