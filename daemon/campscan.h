/* campscan: the campaign step scan: claims the enrollments whose next step is due and queues them. */
#ifndef OUTREACH_CAMPSCAN_H
#define OUTREACH_CAMPSCAN_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/cfg.h"
#include "daemon/apg.h"
#include "daemon/aredis.h"

/* The claim: $1 the campaign clock (epoch seconds), $2 the most rows to claim. Marks as enqueued,
 * and returns, the active enrollments of active campaigns whose next action is due and that are not
 * queued already (or were queued more than ten minutes ago and not taken since). */
extern const char campscan_sql[];

struct campscan;

/* Scans every campaigns.scan_interval seconds while enabled (the leader only). */
struct campscan *campscan_new(struct event_base *base, struct apg *pg, struct ar *ar, const struct cfg *const *cfgp);
void campscan_free(struct campscan *s);
void campscan_enable(struct campscan *s, bool on);

/* Prometheus lines: scans run, failures, jobs enqueued. */
void campscan_metrics(const struct campscan *s, FILE *out);

#endif
