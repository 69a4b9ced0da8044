/* periodic: the [schedule] section's cron jobs, enqueued by the leader, missed runs made up once. */
#ifndef OUTREACH_PERIODIC_H
#define OUTREACH_PERIODIC_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/cfg.h"
#include "daemon/aredis.h"

#define PERIODIC_HASH "outreach:periodic"

struct periodic;

struct periodic *periodic_new(struct event_base *base, struct ar *ar, const struct cfg *const *cfgp);
void periodic_free(struct periodic *p);
void periodic_enable(struct periodic *p, bool on);
/* Prometheus lines: runs enqueued by entry. */
void periodic_metrics(const struct periodic *p, FILE *out);

#endif
