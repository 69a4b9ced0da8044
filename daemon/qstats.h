/* qstats: outreachd's view of the queues for /metrics: sizes, latencies, retry, scheduled, dead. */
#ifndef OUTREACH_QSTATS_H
#define OUTREACH_QSTATS_H

#include <event2/event.h>
#include <stdio.h>

#include "daemon/aredis.h"

struct qstats;

/* Refreshes every few seconds while Redis is connected. */
struct qstats *qstats_new(struct event_base *base, struct ar *ar);
void qstats_free(struct qstats *q);
void qstats_metrics(const struct qstats *q, FILE *out);

#endif
