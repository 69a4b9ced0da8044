/* scan: the follow-up scan: which coordinators have sources due, and their one digest a day. */
#ifndef OUTREACH_SCAN_H
#define OUTREACH_SCAN_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/cfg.h"
#include "daemon/apg.h"
#include "daemon/aredis.h"

struct scan;

/* The SQL of one scan: $1 due_soon_days, $2 digest_hour, $3 escalate_after_days. Rows:
 * (coordinator_id, overdue, due_soon, NULL, NULL, NULL) per coordinator with sources due, then
 * (coordinator_id, NULL, NULL, local_date, jid, kind) per digest to enqueue, kind "coordinator"
 * (OverdueDigestJob) or "manager" (ManagerDigestJob, for a manager whose reports have sources
 * overdue by more than escalate_after_days). */
extern const char scan_sql[];

struct scan *scan_new(struct event_base *base, struct apg *pg, struct ar *ar, const struct cfg *const *cfgp);
void scan_free(struct scan *s);
void scan_enable(struct scan *s, bool on);
/* Runs a scan now (if enabled and connected and none is running). */
void scan_now(struct scan *s);

/* Prometheus lines for the scan: runs, duration, digests enqueued, overdue by coordinator. */
void scan_metrics(const struct scan *s, FILE *out);

#endif
