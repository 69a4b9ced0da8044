/* scan: the follow-up scan: which coordinators have sources due, and their one digest a day. */
#include "daemon/scan.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "common/cases.h"
#include "common/job.h"
#include "common/log.h"
#include "common/queue.h"
#include "common/util.h"

const char scan_sql[] =
    "WITH due AS ("
    "  SELECT coordinator_id,"
    "         count(*) FILTER (WHERE next_due_at <= now()) AS overdue,"
    "         count(*) FILTER (WHERE next_due_at > now()) AS due_soon"
    "    FROM referral_sources"
    "   WHERE next_due_at <= now() + make_interval(days => $1::int) AND coordinator_id IS NOT NULL"
    "   GROUP BY coordinator_id"
    "), escalated AS ("
    "  SELECT DISTINCT c.manager_id AS id"
    "    FROM referral_sources s JOIN coordinators c ON c.id = s.coordinator_id"
    "   WHERE s.next_due_at <= now() - make_interval(days => $3::int) AND c.manager_id IS NOT NULL"
    "), ready AS ("
    "  SELECT c.id, 'coordinator' AS kind, (now() AT TIME ZONE c.time_zone)::date AS local_date"
    "    FROM coordinators c JOIN due ON due.coordinator_id = c.id"
    "   WHERE c.active AND extract(hour FROM now() AT TIME ZONE c.time_zone) >= $2::int"
    "  UNION ALL"
    "  SELECT m.id, 'manager', (now() AT TIME ZONE m.time_zone)::date"
    "    FROM coordinators m JOIN escalated e ON e.id = m.id"
    "   WHERE m.active AND extract(hour FROM now() AT TIME ZONE m.time_zone) >= $2::int"
    "), claimed AS ("
    "  INSERT INTO digest_runs (coordinator_id, local_date, kind, jid)"
    "  SELECT id, local_date, kind,"
    "         left(encode(sha256(convert_to(kind || ':' || id || ':' || local_date, 'UTF8')), 'hex'), 24)"
    "    FROM ready"
    "  ON CONFLICT DO NOTHING"
    "  RETURNING coordinator_id, local_date, kind, jid"
    ")"
    " SELECT coordinator_id, overdue, due_soon, NULL::date, NULL::text, NULL::text FROM due"
    " UNION ALL SELECT coordinator_id, NULL, NULL, local_date, jid, kind FROM claimed"
    " UNION ALL SELECT coordinator_id, NULL, NULL, local_date, jid, kind FROM digest_runs"
    "   WHERE enqueued_at IS NULL AND claimed_at < now() - interval '1 minute'";

/* Pushes a job once per jid: a marker key (kept two days) guards against a second push by another
 * daemon or a retried claim. KEYS: marker, queue:Q, queues. ARGV: job, Q. */
static const char lua_push_once[] = "if redis.call('SET', KEYS[1], '1', 'NX', 'EX', 172800) then "
                                    "redis.call('SADD', KEYS[3], ARGV[2]); redis.call('LPUSH', KEYS[2], ARGV[1]); "
                                    "return 1 else return 0 end";

struct due {
	long long coordinator_id, overdue, due_soon;
};

struct scan {
	struct apg *pg;
	struct ar *ar;
	const struct cfg *const *cfgp;
	struct event *ev_tick;
	bool enabled;
	bool running;
	int64_t started_ms;
	unsigned long runs, failures, enqueued, duplicates, others;
	double last_seconds, total_seconds;
	struct due *due;
	size_t ndue;
};

struct mark {
	struct scan *s;
	char coordinator_id[24];
	char local_date[16];
	char kind[16];
};

static void
on_marked(PGresult *res, const char *errmsg, void *priv)
{
	(void)priv;
	if (res == NULL)
		log_warnx("marking a digest enqueued: %s (it will be pushed again with the same jid)", errmsg);
}

static void
on_pushed(redisReply *r, void *priv)
{
	struct mark *m = priv;
	struct scan *s = m->s;

	if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
		log_warnx("pushing the %s digest of %s for %s failed: %s; the next scan retries", m->kind,
		          m->coordinator_id, m->local_date, r && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
		free(m);
		return;
	}
	if (r->integer == 1) {
		s->enqueued++;
		log_info("enqueued the %s digest of %s for %s", m->kind, m->coordinator_id, m->local_date);
	} else {
		s->duplicates++;
	}
	const char *params[] = {m->coordinator_id, m->local_date, m->kind};
	(void)apg_query(s->pg,
	                "UPDATE digest_runs SET enqueued_at = now() "
	                "WHERE coordinator_id = $1 AND local_date = $2 AND kind = $3",
	                3, params, on_marked, NULL);
	free(m);
}

/* Pushes class(args) on the alerts queue once per jid (takes args); cb/priv see the reply. */
static int
push_once(struct scan *s, const char *class, json_t *args, const char *jid, ar_cb *cb, void *priv)
{
	double now = util_now();
	json_t *obj = json_pack("{s:s, s:o, s:s, s:s, s:b, s:f, s:f}", "class", class, "args", args, "jid", jid, "queue",
	                        "alerts", "retry", 1, "created_at", now, "enqueued_at", now);
	char *json = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
	char marker[96];

	json_decref(obj);
	snprintf(marker, sizeof(marker), QUEUE_PUSHED_PREFIX "%s", jid);
	const char *argv[] = {"EVAL", lua_push_once, "3", marker, "queue:alerts", "queues", json, "alerts"};
	int rc = ar_argv(s->ar, cb, priv, (int)NELEM(argv), argv, NULL);
	free(json);
	return rc;
}

static void
push_digest(struct scan *s, const char *coordinator_id, const char *local_date, const char *jid, const char *kind)
{
	const char *class = strcmp(kind, "manager") == 0 ? "ManagerDigestJob" : "OverdueDigestJob";
	struct mark *m = xcalloc(1, sizeof(*m));

	m->s = s;
	util_strlcpy(m->coordinator_id, coordinator_id, sizeof(m->coordinator_id));
	util_strlcpy(m->local_date, local_date, sizeof(m->local_date));
	util_strlcpy(m->kind, kind, sizeof(m->kind));
	if (push_once(s, class, json_pack("[I,s]", (json_int_t)strtoll(coordinator_id, NULL, 10), local_date), jid,
	              on_pushed, m) == -1) {
		log_warnx("Redis is not connected: the digest of coordinator %s waits for the next scan", coordinator_id);
		free(m);
	}
}

/* Activities whose coordinator lacks the current invite, and cases past a level of their SLA. The
 * jid names the activity and SEQUENCE (the case and level), so each is queued once; the worker
 * records what it sent, which ends the row's appearance here. */
static const char invite_sql[] =
    "SELECT id, invite_sequence, left(encode(sha256(convert_to('invite:' || id || ':' || invite_sequence, "
    "'UTF8')), 'hex'), 24) FROM activities"
    " WHERE scheduled_at IS NOT NULL AND coordinator_id IS NOT NULL AND completed_at IS NULL"
    "   AND (invite_sent_sequence IS NULL OR invite_sent_sequence < invite_sequence)"
    "   AND NOT (canceled_at IS NOT NULL AND invite_sent_sequence IS NULL)"
    "   AND scheduled_at > now() - interval '1 day'"
    " ORDER BY scheduled_at LIMIT 1000";

/* An alert of a case whose assignee is inactive goes to their manager (see workers/casealert.c):
 * without an active one it waits, and is pushed once someone can receive it. */
static const char case_sql[] =
    "SELECT id, lvl, left(encode(sha256(convert_to('case:' || id || ':' || lvl, 'UTF8')), 'hex'), 24) FROM ("
    "  SELECT k.id, k.alerted_level, CASE"
    "    WHEN now() >= " CASES_DUE_AT("2") " THEN 2"
    "    WHEN now() >= " CASES_DUE_AT("1") " THEN 1 ELSE 0 END AS top"
    "  FROM cases k" CASES_SLA_LATERAL CASES_RECIPIENTS
    "  WHERE k.status <> 'resolved' AND k.alerted_level < 2 AND " CASES_HAS_RECIPIENT
    ") c CROSS JOIN LATERAL generate_series(c.alerted_level + 1, c.top) AS lvl"
    " ORDER BY id, lvl LIMIT 1000";

static void
on_pushed_plain(redisReply *r, void *priv)
{
	struct scan *s = priv;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		s->others++;
}

static void
on_rows(PGresult *res, const char *errmsg, void *priv, const char *class)
{
	struct scan *s = priv;

	if (res == NULL) {
		log_warnx("scanning for %s: %s", class, errmsg);
		return;
	}
	for (int i = 0; i < PQntuples(res) && s->enabled; i++)
		(void)push_once(s, class,
		                json_pack("[I,I]", (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10),
		                          (json_int_t)strtoll(PQgetvalue(res, i, 1), NULL, 10)),
		                PQgetvalue(res, i, 2), on_pushed_plain, s);
}

static void
on_invites(PGresult *res, const char *errmsg, void *priv)
{
	on_rows(res, errmsg, priv, "ActivityInviteJob");
}

static void
on_cases(PGresult *res, const char *errmsg, void *priv)
{
	on_rows(res, errmsg, priv, "CaseAlertJob");
}

static void
on_scan(PGresult *res, const char *errmsg, void *priv)
{
	struct scan *s = priv;
	double secs = (double)(util_mono_ms() - s->started_ms) / 1000.0;

	s->running = false;
	s->runs++;
	s->last_seconds = secs;
	s->total_seconds += secs;
	if (res == NULL) {
		s->failures++;
		log_warnx("follow-up scan failed: %s", errmsg);
		return;
	}
	int n = PQntuples(res), ndue = 0;
	for (int i = 0; i < n; i++)
		ndue += !PQgetisnull(res, i, 1);
	free(s->due);
	s->due = xcalloc((size_t)(ndue ? ndue : 1), sizeof(*s->due));
	s->ndue = 0;
	for (int i = 0; i < n; i++) {
		if (!PQgetisnull(res, i, 1)) {
			struct due *d = &s->due[s->ndue++];
			d->coordinator_id = strtoll(PQgetvalue(res, i, 0), NULL, 10);
			d->overdue = strtoll(PQgetvalue(res, i, 1), NULL, 10);
			d->due_soon = strtoll(PQgetvalue(res, i, 2), NULL, 10);
		} else if (s->enabled) {
			push_digest(s, PQgetvalue(res, i, 0), PQgetvalue(res, i, 3), PQgetvalue(res, i, 4),
			            PQgetvalue(res, i, 5));
		}
	}
	log_debug("follow-up scan: %zu coordinators with sources due, %.3f s", s->ndue, secs);
}

void
scan_now(struct scan *s)
{
	char soon[16], hour[16], escalate[16];

	if (!s->enabled || s->running || !apg_schema_ok(s->pg) || !ar_ready(s->ar))
		return;
	snprintf(soon, sizeof(soon), "%d", (*s->cfgp)->alerts.due_soon_days);
	snprintf(hour, sizeof(hour), "%d", (*s->cfgp)->alerts.digest_hour);
	snprintf(escalate, sizeof(escalate), "%d", (*s->cfgp)->alerts.escalate_after_days);
	const char *params[] = {soon, hour, escalate};
	s->started_ms = util_mono_ms();
	if (apg_query(s->pg, scan_sql, 3, params, on_scan, s) == 0)
		s->running = true;
	(void)apg_query(s->pg, invite_sql, 0, NULL, on_invites, s);
	char h[5][16];
	cases_sla_params(*s->cfgp, h);
	const char *cparams[] = {h[0], h[1], h[2], h[3], h[4]};
	(void)apg_query(s->pg, case_sql, 5, cparams, on_cases, s);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct scan *s = arg;
	int secs = (*s->cfgp)->scheduler.scan_interval;
	struct timeval tv = {secs, 0};

	(void)fd, (void)what;
	scan_now(s);
	evtimer_add(s->ev_tick, &tv);
}

struct scan *
scan_new(struct event_base *base, struct apg *pg, struct ar *ar, const struct cfg *const *cfgp)
{
	struct scan *s = xcalloc(1, sizeof(*s));
	struct timeval tv = {(*cfgp)->scheduler.scan_interval, 0};

	s->pg = pg;
	s->ar = ar;
	s->cfgp = cfgp;
	s->ev_tick = evtimer_new(base, on_tick, s);
	evtimer_add(s->ev_tick, &tv);
	return s;
}

void
scan_free(struct scan *s)
{
	if (s == NULL)
		return;
	event_free(s->ev_tick);
	free(s->due);
	free(s);
}

void
scan_enable(struct scan *s, bool on)
{
	s->enabled = on;
	if (on)
		scan_now(s);
}

void
scan_metrics(const struct scan *s, FILE *out)
{
	fprintf(out, "# HELP outreach_scans_total Follow-up scans run.\n# TYPE outreach_scans_total counter\n"
	             "outreach_scans_total %lu\n",
	        s->runs);
	fprintf(out, "# HELP outreach_scan_failures_total Follow-up scans that failed.\n"
	             "# TYPE outreach_scan_failures_total counter\noutreach_scan_failures_total %lu\n",
	        s->failures);
	fprintf(out, "# HELP outreach_scan_duration_seconds Duration of follow-up scans.\n"
	             "# TYPE outreach_scan_duration_seconds summary\n"
	             "outreach_scan_duration_seconds_sum %.6f\noutreach_scan_duration_seconds_count %lu\n",
	        s->total_seconds, s->runs);
	fprintf(out, "# HELP outreach_scan_last_duration_seconds Duration of the last follow-up scan.\n"
	             "# TYPE outreach_scan_last_duration_seconds gauge\noutreach_scan_last_duration_seconds %.6f\n",
	        s->last_seconds);
	fprintf(out, "# HELP outreach_digests_enqueued_total Daily digests enqueued by this daemon.\n"
	             "# TYPE outreach_digests_enqueued_total counter\noutreach_digests_enqueued_total %lu\n",
	        s->enqueued);
	fprintf(out, "# HELP outreach_invites_and_case_alerts_enqueued_total Calendar invites and case alerts enqueued "
	             "by this daemon.\n# TYPE outreach_invites_and_case_alerts_enqueued_total counter\n"
	             "outreach_invites_and_case_alerts_enqueued_total %lu\n",
	        s->others);
	fprintf(out, "# HELP outreach_overdue_sources Referral sources past their contact interval, by coordinator.\n"
	             "# TYPE outreach_overdue_sources gauge\n");
	for (size_t i = 0; i < s->ndue; i++)
		fprintf(out, "outreach_overdue_sources{coordinator_id=\"%lld\"} %lld\n", s->due[i].coordinator_id,
		        s->due[i].overdue);
	fprintf(out, "# HELP outreach_due_soon_sources Referral sources due within alerts.due_soon_days, by coordinator.\n"
	             "# TYPE outreach_due_soon_sources gauge\n");
	for (size_t i = 0; i < s->ndue; i++)
		fprintf(out, "outreach_due_soon_sources{coordinator_id=\"%lld\"} %lld\n", s->due[i].coordinator_id,
		        s->due[i].due_soon);
}
