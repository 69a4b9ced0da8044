/* campscan: the campaign step scan: claims the enrollments whose next step is due and queues them. */
#include "daemon/campscan.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"
#include "common/util.h"

#define CLAIM_LIMIT 5000 /* rows per claim; a full claim is followed by another at once */
#define PUSH_CHUNK 500   /* jobs per LPUSH */

const char campscan_sql[] =
    "WITH due AS ("
    "  SELECT e.id FROM campaign_enrollments e"
    "   WHERE e.state = 'active' AND e.next_action_at <= to_timestamp($1::float8)"
    "     AND (e.enqueued_at IS NULL OR e.enqueued_at < to_timestamp($1::float8) - interval '10 minutes')"
    "     AND EXISTS (SELECT 1 FROM campaigns c WHERE c.id = e.campaign_id AND c.status = 'active')"
    "   ORDER BY e.next_action_at LIMIT $2::int"
    "   FOR UPDATE OF e SKIP LOCKED"
    ")"
    " UPDATE campaign_enrollments e SET enqueued_at = to_timestamp($1::float8)"
    "   FROM due WHERE e.id = due.id RETURNING e.id";

struct campscan {
	struct apg *pg;
	struct ar *ar;
	const struct cfg *const *cfgp;
	struct event *ev_tick;
	int interval; /* seconds, as the timer was set */
	bool enabled, running;
	unsigned long runs, failures, enqueued;
};

/* A chunk of pushed jobs: their enrollments, released again when the push failed. */
struct chunk {
	struct campscan *s;
	char *ids; /* "{1,2,3}" */
	int n;
};

static void
on_released(PGresult *res, const char *errmsg, void *priv)
{
	(void)priv;
	if (res == NULL)
		log_warnx("releasing campaign enrollments after a failed push: %s (they are claimed again in ten minutes)",
		          errmsg);
}

static void
on_pushed(redisReply *r, void *priv)
{
	struct chunk *c = priv;

	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		log_warnx("pushing %d CampaignSendJob failed: %s; they are claimed again", c->n,
		          r ? r->str : "no reply");
		const char *params[] = {c->ids};
		(void)apg_query(c->s->pg, "UPDATE campaign_enrollments SET enqueued_at = NULL WHERE id = ANY($1::bigint[])",
		                1, params, on_released, NULL);
	} else {
		c->s->enqueued += (unsigned long)c->n;
	}
	free(c->ids);
	free(c);
}

/* Pushes one CampaignSendJob per row in [from, to) with one LPUSH. */
static void
push_chunk(struct campscan *s, PGresult *res, int from, int to)
{
	int n = to - from;
	const char **argv = xcalloc((size_t)n + 2, sizeof(*argv));
	char **jsons = xcalloc((size_t)n, sizeof(*jsons));
	char *ids = NULL;
	size_t idslen = 0;
	FILE *f = open_memstream(&ids, &idslen);

	argv[0] = "LPUSH";
	argv[1] = "queue:campaigns";
	fputc('{', f);
	for (int i = 0; i < n; i++) {
		const char *id = PQgetvalue(res, from + i, 0);
		struct job *j = job_new("CampaignSendJob", "campaigns", json_pack("[I]", (json_int_t)strtoll(id, NULL, 10)));
		job_set_time(j, "enqueued_at", util_now());
		jsons[i] = job_dump(j);
		job_free(j);
		argv[i + 2] = jsons[i];
		fprintf(f, "%s%s", i ? "," : "", id);
	}
	fputc('}', f);
	fclose(f);
	struct chunk *c = xcalloc(1, sizeof(*c));
	c->s = s;
	c->ids = ids;
	c->n = n;
	if (ar_argv(s->ar, on_pushed, c, n + 2, argv, NULL) == -1)
		on_pushed(NULL, c);
	for (int i = 0; i < n; i++)
		free(jsons[i]);
	free(jsons);
	free(argv);
}

static void scan_now(struct campscan *s);

/* Rows per claim: with campaigns.max_per_second, no more than the workers may send until the next
 * scan, so that the rest wait in PostgreSQL rather than run into the limit. */
static int
claim_limit(const struct campscan *s)
{
	long per_scan = (long)(*s->cfgp)->campaigns.max_per_second * (*s->cfgp)->campaigns.scan_interval;

	return per_scan > 0 && per_scan < CLAIM_LIMIT ? (int)per_scan : CLAIM_LIMIT;
}

static void
on_claimed(PGresult *res, const char *errmsg, void *priv)
{
	struct campscan *s = priv;

	s->running = false;
	s->runs++;
	if (res == NULL) {
		s->failures++;
		log_warnx("campaign step scan failed: %s", errmsg);
		return;
	}
	int n = PQntuples(res);
	if (n > 0)
		(void)ar_command(s->ar, NULL, NULL, "SADD queues campaigns");
	for (int i = 0; i < n; i += PUSH_CHUNK)
		push_chunk(s, res, i, i + PUSH_CHUNK < n ? i + PUSH_CHUNK : n);
	if (n > 0)
		log_info("campaign step scan: %d enrollment%s due, queued", n, n == 1 ? "" : "s");
	if (n == CLAIM_LIMIT && claim_limit(s) == CLAIM_LIMIT)
		scan_now(s); /* more are due */
}

static void
scan_now(struct campscan *s)
{
	char now[32], limit[16];

	if (!s->enabled || s->running || !apg_schema_ok(s->pg) || !ar_ready(s->ar))
		return;
	snprintf(now, sizeof(now), "%.6f", util_clock());
	snprintf(limit, sizeof(limit), "%d", claim_limit(s));
	const char *params[] = {now, limit};
	if (apg_query(s->pg, campscan_sql, 2, params, on_claimed, s) == 0)
		s->running = true;
}

/* A persistent timer; a reload that changes campaigns.scan_interval takes effect at the next tick. */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct campscan *s = arg;
	int secs = (*s->cfgp)->campaigns.scan_interval;

	(void)fd, (void)what;
	if (secs != s->interval) {
		struct timeval tv = {secs, 0};
		s->interval = secs;
		event_add(s->ev_tick, &tv);
	}
	scan_now(s);
}

struct campscan *
campscan_new(struct event_base *base, struct apg *pg, struct ar *ar, const struct cfg *const *cfgp)
{
	struct campscan *s = xcalloc(1, sizeof(*s));
	struct timeval tv = {(*cfgp)->campaigns.scan_interval, 0};

	*s = (struct campscan){.pg = pg, .ar = ar, .cfgp = cfgp, .interval = (int)tv.tv_sec};
	s->ev_tick = event_new(base, -1, EV_PERSIST, on_tick, s);
	event_add(s->ev_tick, &tv);
	return s;
}

void
campscan_free(struct campscan *s)
{
	if (s) {
		event_free(s->ev_tick);
		free(s);
	}
}

void
campscan_enable(struct campscan *s, bool on)
{
	if ((s->enabled = on))
		scan_now(s);
}

void
campscan_metrics(const struct campscan *s, FILE *out)
{
	fprintf(out, "# HELP outreach_campaign_scans_total Campaign step scans run.\n"
	             "# TYPE outreach_campaign_scans_total counter\noutreach_campaign_scans_total %lu\n",
	        s->runs);
	fprintf(out, "# HELP outreach_campaign_scan_failures_total Campaign step scans that failed.\n"
	             "# TYPE outreach_campaign_scan_failures_total counter\noutreach_campaign_scan_failures_total %lu\n",
	        s->failures);
	fprintf(out, "# HELP outreach_campaign_steps_enqueued_total CampaignSendJob queued by this daemon.\n"
	             "# TYPE outreach_campaign_steps_enqueued_total counter\noutreach_campaign_steps_enqueued_total %lu\n",
	        s->enqueued);
}
