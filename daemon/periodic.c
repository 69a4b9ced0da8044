/* periodic: the [schedule] section's cron jobs, enqueued by the leader, missed runs made up once. */
#include "daemon/periodic.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"
#include "common/util.h"

#define TICK_MS 5000

/* Enqueues a run only if it is later than the last run recorded for the entry, and records it, in
 * one step: two leaders in a failover cannot both enqueue it. KEYS: the hash, queue:Q, queues.
 * ARGV: entry name, fire time, job, Q. Returns 1 when enqueued. */
static const char lua_fire[] =
    "local last = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')\n"
    "if last >= tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])\n"
    "redis.call('SADD', KEYS[3], ARGV[4]); redis.call('LPUSH', KEYS[2], ARGV[3])\n"
    "return 1\n";

/* Records now as the starting point of an entry never seen before. KEYS: the hash. ARGV: name, now. */
static const char lua_init[] = "redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]); "
                               "return redis.call('HGET', KEYS[1], ARGV[1])";

struct periodic {
	struct ar *ar;
	const struct cfg *const *cfgp;
	struct event *ev_tick;
	bool enabled;
	unsigned long fired;
	unsigned long *fired_by; /* per entry index; resized with the config */
	size_t nfired_by;
};

struct fire_ctx {
	struct periodic *p;
	char name[128];
	char class[128];
	size_t index;
	time_t when;
};

static void fire(struct fire_ctx *fc, time_t last);

static void
on_fired(redisReply *r, void *priv)
{
	struct fire_ctx *fc = priv;
	struct periodic *p = fc->p;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		p->fired++;
		if (fc->index < p->nfired_by)
			p->fired_by[fc->index]++;
		char stamp[32];
		struct tm tm;
		gmtime_r(&fc->when, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%MZ", &tm);
		log_info("periodic %s: enqueued %s for %s", fc->name, fc->class, stamp);
	} else if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		log_warnx("periodic %s: enqueueing failed: %s; retried at the next tick", fc->name,
		          r ? r->str : "no reply");
	}
	free(fc);
}

static void
on_last(redisReply *r, void *priv)
{
	struct fire_ctx *fc = priv;

	if (r == NULL || (r->type != REDIS_REPLY_STRING && r->type != REDIS_REPLY_NIL)) {
		free(fc);
		return;
	}
	fire(fc, r->type == REDIS_REPLY_STRING ? (time_t)strtoll(r->str, NULL, 10) : 0);
}

/* With the last recorded run known, enqueues the latest due run, if any: one, however many were
 * missed. */
static void
fire(struct fire_ctx *fc, time_t last)
{
	struct periodic *p = fc->p;
	const struct cfg *c = *p->cfgp;
	time_t now = time(NULL);

	if (fc->index >= c->nperiodic || strcmp(c->periodic[fc->index].name, fc->name) != 0) {
		free(fc); /* the configuration changed meanwhile */
		return;
	}
	const struct cfg_periodic *e = &c->periodic[fc->index];
	time_t t = cron_next(&e->cron, last);
	if (t == 0 || t > now) {
		free(fc);
		return;
	}
	for (int i = 0; i < 1000000; i++) {
		time_t n = cron_next(&e->cron, t);
		if (n == 0 || n > now)
			break;
		t = n;
	}
	fc->when = t;

	/* The jid is derived from the entry and the run, so the same run is the same job everywhere. */
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	char seed[256], hex[2 * EVP_MAX_MD_SIZE + 1], when[32];
	snprintf(seed, sizeof(seed), "periodic:%s:%lld", e->name, (long long)t);
	EVP_Digest(seed, strlen(seed), md, &mdlen, EVP_sha256(), NULL);
	util_hex(md, mdlen, hex);
	hex[JOB_JID_LEN] = '\0';

	json_t *args = json_loads(e->args, 0, NULL);
	double nowf = util_now();
	json_t *obj = json_pack("{s:s, s:o, s:s, s:s, s:b, s:f, s:f, s:s}", "class", e->class, "args", args, "jid", hex,
	                        "queue", e->queue, "retry", 1, "created_at", nowf, "enqueued_at", nowf, "periodic",
	                        e->name);
	char *json = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
	char qkey[80];
	json_decref(obj);
	snprintf(qkey, sizeof(qkey), "queue:%s", e->queue);
	snprintf(when, sizeof(when), "%lld", (long long)t);
	const char *argv[] = {"EVAL", lua_fire, "3", PERIODIC_HASH, qkey, "queues", e->name, when, json, e->queue};
	if (ar_argv(p->ar, on_fired, fc, (int)NELEM(argv), argv, NULL) == -1)
		free(fc);
	free(json);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct periodic *p = arg;
	const struct cfg *c = *p->cfgp;
	char now[32];

	(void)fd, (void)what;
	if (!p->enabled || !ar_ready(p->ar))
		return;
	if (p->nfired_by != c->nperiodic) {
		p->fired_by = xrealloc(p->fired_by, (c->nperiodic ? c->nperiodic : 1) * sizeof(*p->fired_by));
		memset(p->fired_by, 0, (c->nperiodic ? c->nperiodic : 1) * sizeof(*p->fired_by));
		p->nfired_by = c->nperiodic;
	}
	snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
	for (size_t i = 0; i < c->nperiodic; i++) {
		struct fire_ctx *fc = xcalloc(1, sizeof(*fc));
		fc->p = p;
		fc->index = i;
		util_strlcpy(fc->name, c->periodic[i].name, sizeof(fc->name));
		util_strlcpy(fc->class, c->periodic[i].class, sizeof(fc->class));
		const char *argv[] = {"EVAL", lua_init, "1", PERIODIC_HASH, c->periodic[i].name, now};
		if (ar_argv(p->ar, on_last, fc, (int)NELEM(argv), argv, NULL) == -1)
			free(fc);
	}
}

struct periodic *
periodic_new(struct event_base *base, struct ar *ar, const struct cfg *const *cfgp)
{
	struct periodic *p = xcalloc(1, sizeof(*p));
	struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};

	p->ar = ar;
	p->cfgp = cfgp;
	p->ev_tick = event_new(base, -1, EV_PERSIST, on_tick, p);
	event_add(p->ev_tick, &tv);
	return p;
}

void
periodic_free(struct periodic *p)
{
	if (p == NULL)
		return;
	event_free(p->ev_tick);
	free(p->fired_by);
	free(p);
}

void
periodic_enable(struct periodic *p, bool on)
{
	p->enabled = on;
	if (on)
		event_active(p->ev_tick, EV_TIMEOUT, 0);
}

void
periodic_metrics(const struct periodic *p, FILE *out)
{
	const struct cfg *c = *p->cfgp;

	fprintf(out, "# HELP outreach_periodic_runs_total Periodic jobs enqueued by this daemon, by entry.\n"
	             "# TYPE outreach_periodic_runs_total counter\n");
	for (size_t i = 0; i < c->nperiodic && i < p->nfired_by; i++)
		fprintf(out, "outreach_periodic_runs_total{name=\"%s\",class=\"%s\"} %lu\n", c->periodic[i].name,
		        c->periodic[i].class, p->fired_by[i]);
}
