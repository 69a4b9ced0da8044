/* qstats: outreachd's view of the queues for /metrics: sizes, latencies, retry, scheduled, dead. */
#include "daemon/qstats.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/util.h"

#define REFRESH_MS 5000
#define MAX_QUEUES 256

struct qrow {
	char name[65];
	long long size;
	double latency;
};

struct qstats {
	struct ar *ar;
	struct event *ev_tick;
	struct qrow rows[MAX_QUEUES];
	size_t nrows;
	long long retry, scheduled, dead, processes;
	bool pending;
};

struct qctx {
	struct qstats *q;
	size_t row;
	bool is_len;
};

static void
on_queue(redisReply *r, void *priv)
{
	struct qctx *c = priv;
	struct qrow *row = &c->q->rows[c->row];

	if (r && c->is_len && r->type == REDIS_REPLY_INTEGER)
		row->size = r->integer;
	else if (r && !c->is_len) {
		row->latency = 0;
		if (r->type == REDIS_REPLY_STRING) {
			/* Sidekiq's latency: how long the oldest waiting job has waited. */
			json_t *j = json_loads(r->str, 0, NULL);
			json_t *at = j ? json_object_get(j, "enqueued_at") : NULL;
			if (at && json_is_number(at)) {
				double lat = util_now() - json_number_value(at);
				row->latency = lat > 0 ? lat : 0;
			}
			json_decref(j);
		}
	}
	free(c);
}

static void
on_count(redisReply *r, void *priv)
{
	long long *slot = priv;

	if (r && r->type == REDIS_REPLY_INTEGER)
		*slot = r->integer;
}

static void
on_queues(redisReply *r, void *priv)
{
	struct qstats *q = priv;

	q->pending = false;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	size_t n = r->elements < MAX_QUEUES ? r->elements : MAX_QUEUES;
	q->nrows = 0;
	for (size_t i = 0; i < n; i++) {
		if (!job_queue_name_ok(r->element[i]->str))
			continue;
		struct qrow *row = &q->rows[q->nrows];
		util_strlcpy(row->name, r->element[i]->str, sizeof(row->name));
		for (int k = 0; k < 2; k++) {
			struct qctx *c = xcalloc(1, sizeof(*c));
			c->q = q;
			c->row = q->nrows;
			c->is_len = k == 0;
			char key[80];
			snprintf(key, sizeof(key), "queue:%s", row->name);
			int rc = k == 0 ? ar_command(q->ar, on_queue, c, "LLEN %s", key)
			                : ar_command(q->ar, on_queue, c, "LINDEX %s -1", key);
			if (rc == -1)
				free(c);
		}
		q->nrows++;
	}
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct qstats *q = arg;

	(void)fd, (void)what;
	if (!ar_ready(q->ar) || q->pending)
		return;
	q->pending = ar_command(q->ar, on_queues, q, "SMEMBERS queues") == 0;
	(void)ar_command(q->ar, on_count, &q->retry, "ZCARD retry");
	(void)ar_command(q->ar, on_count, &q->scheduled, "ZCARD schedule");
	(void)ar_command(q->ar, on_count, &q->dead, "ZCARD dead");
	(void)ar_command(q->ar, on_count, &q->processes, "SCARD processes");
}

struct qstats *
qstats_new(struct event_base *base, struct ar *ar)
{
	struct qstats *q = xcalloc(1, sizeof(*q));
	struct timeval tv = {REFRESH_MS / 1000, 0};

	q->ar = ar;
	q->ev_tick = event_new(base, -1, EV_PERSIST, on_tick, q);
	event_add(q->ev_tick, &tv);
	return q;
}

void
qstats_free(struct qstats *q)
{
	if (q == NULL)
		return;
	event_free(q->ev_tick);
	free(q);
}

void
qstats_metrics(const struct qstats *q, FILE *out)
{
	fprintf(out, "# HELP outreach_queue_size Jobs waiting, by queue.\n# TYPE outreach_queue_size gauge\n");
	for (size_t i = 0; i < q->nrows; i++)
		fprintf(out, "outreach_queue_size{queue=\"%s\"} %lld\n", q->rows[i].name, q->rows[i].size);
	fprintf(out, "# HELP outreach_queue_latency_seconds How long the oldest waiting job has waited, by queue.\n"
	             "# TYPE outreach_queue_latency_seconds gauge\n");
	for (size_t i = 0; i < q->nrows; i++)
		fprintf(out, "outreach_queue_latency_seconds{queue=\"%s\"} %.3f\n", q->rows[i].name, q->rows[i].latency);
	fprintf(out, "# HELP outreach_retry_jobs Jobs waiting for a retry.\n# TYPE outreach_retry_jobs gauge\n"
	             "outreach_retry_jobs %lld\n",
	        q->retry);
	fprintf(out, "# HELP outreach_scheduled_jobs Jobs scheduled for later.\n# TYPE outreach_scheduled_jobs gauge\n"
	             "outreach_scheduled_jobs %lld\n",
	        q->scheduled);
	fprintf(out, "# HELP outreach_dead_jobs Jobs in the dead set.\n# TYPE outreach_dead_jobs gauge\n"
	             "outreach_dead_jobs %lld\n",
	        q->dead);
	fprintf(out, "# HELP outreach_worker_processes Worker processes with a live heartbeat.\n"
	             "# TYPE outreach_worker_processes gauge\noutreach_worker_processes %lld\n",
	        q->processes);
}
