/* maint: queue maintenance in outreachd: due jobs from schedule and retry, jobs of dead workers. */
#include "daemon/maint.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/queue.h"
#include "common/util.h"

#define POLL_BATCH 100

struct maint {
	struct ar *ar;
	const struct cfg *const *cfgp;
	struct event *ev_poll;
	struct event *ev_sweep;
	bool enabled;
	int polling; /* zsets with a poll in flight */
	bool again;  /* a full batch came back: poll again at once */
	struct maint_stats st;
	char hostname[256];
};

/* --- the poller ------------------------------------------------------------------------------ */

struct poll_ctx {
	struct maint *m;
	const char *zset; /* static string */
};

static void
on_moved_due(redisReply *r, void *priv)
{
	struct maint *m = priv;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		m->st.polled++;
	else if (r && r->type == REDIS_REPLY_ERROR)
		log_warnx("moving a due job: %s", r->str);
}

static void
on_moved_dead(redisReply *r, void *priv)
{
	struct maint *m = priv;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		m->st.killed++;
}

static void arm_poll(struct maint *m, bool now);

static void
on_due(redisReply *r, void *priv)
{
	struct poll_ctx *pc = priv;
	struct maint *m = pc->m;
	double now = util_now();

	m->polling--;
	if (r && r->type == REDIS_REPLY_ARRAY) {
		for (size_t i = 0; i < r->elements; i++) {
			const char *old = r->element[i]->str;
			size_t old_len = r->element[i]->len;
			char queue[65], key[80], score[32];
			char *fresh = queue_due_json(old, now, queue);
			if (fresh) {
				snprintf(key, sizeof(key), "queue:%s", queue);
				(void)ar_move(m->ar, on_moved_due, m, pc->zset, true, old, old_len, fresh, "back", key, queue);
			} else {
				log_warnx("%s: an entry that is not a job with a valid queue goes to dead", pc->zset);
				fresh = queue_dead_json(old, "InvalidJob", "not a job with a valid \"queue\"", now);
				snprintf(score, sizeof(score), "%.6f", now);
				(void)ar_move(m->ar, on_moved_dead, m, pc->zset, true, old, old_len, fresh, "zset", "dead",
				              score);
			}
			free(fresh);
		}
		if (r->elements == POLL_BATCH)
			m->again = true;
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		log_warnx("%s poll: %s", pc->zset, r->str);
	}
	free(pc);
	if (m->polling == 0 && m->again) {
		m->again = false;
		arm_poll(m, true);
	}
}

static void
poll_zset(struct maint *m, const char *zset, double now)
{
	struct poll_ctx *pc = xmalloc(sizeof(*pc));
	char max[32], limit[16];

	pc->m = m;
	pc->zset = zset;
	snprintf(max, sizeof(max), "%.6f", now);
	snprintf(limit, sizeof(limit), "%d", POLL_BATCH);
	const char *argv[] = {"ZRANGEBYSCORE", zset, "-inf", max, "LIMIT", "0", limit};
	if (ar_argv(m->ar, on_due, pc, (int)NELEM(argv), argv, NULL) == -1) {
		free(pc);
		return;
	}
	m->polling++;
}

static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct maint *m = arg;
	double now = util_now();

	(void)fd, (void)what;
	if (m->enabled && ar_ready(m->ar) && m->polling == 0) {
		m->st.polls++;
		poll_zset(m, "schedule", now);
		poll_zset(m, "retry", now);
	}
	arm_poll(m, false);
}

static void
arm_poll(struct maint *m, bool now)
{
	int ms = now ? 0 : (*m->cfgp)->scheduler.poll_interval_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	evtimer_del(m->ev_poll);
	evtimer_add(m->ev_poll, &tv);
}

/* --- the sweeper ----------------------------------------------------------------------------- */

struct sweep_ctx {
	struct maint *m;
	char list[400];
	char queue[65];
	char identity[256];
};

static void
on_recovered(redisReply *r, void *priv)
{
	struct maint *m = priv;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		m->st.recovered++;
}

static void
on_forget(redisReply *r, void *priv)
{
	struct sweep_ctx *sc = priv;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
		(void)ar_command(sc->m->ar, NULL, NULL, "SREM %s %s", QUEUE_INFLIGHT_SET, sc->list);
	free(sc);
}

static void
on_orphans(redisReply *r, void *priv)
{
	struct sweep_ctx *sc = priv;
	struct maint *m = sc->m;
	char key[80], score[32];
	int max = (*m->cfgp)->worker.max_recoveries;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		free(sc);
		return;
	}
	snprintf(key, sizeof(key), "queue:%s", sc->queue);
	for (size_t i = 0; i < r->elements; i++) {
		bool to_dead;
		char *fresh = queue_recovered_json(r->element[i]->str, max, util_now(), &to_dead);
		if (to_dead) {
			log_warnx("a job of dead worker %s goes to dead: handed back more than %d times", sc->identity, max);
			snprintf(score, sizeof(score), "%.6f", util_now());
			(void)ar_move(m->ar, on_moved_dead, m, sc->list, false, r->element[i]->str, r->element[i]->len, fresh,
			              "zset", "dead", score);
		} else {
			(void)ar_move(m->ar, on_recovered, m, sc->list, false, r->element[i]->str, r->element[i]->len, fresh,
			              "front", key, sc->queue);
		}
		free(fresh);
	}
	if (r->elements > 0)
		log_notice("handing back %zu job(s) of dead worker %s to queue %s", r->elements, sc->identity,
		           sc->queue);
	/* Replies come in order: by the time LLEN answers, the moves above are done. */
	if (ar_command(m->ar, on_forget, sc, "LLEN %s", sc->list) == -1)
		free(sc);
}

static void
on_beat(redisReply *r, void *priv)
{
	struct sweep_ctx *sc = priv;
	struct maint *m = sc->m;
	bool dead;

	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		free(sc);
		return;
	}
	if (r->type != REDIS_REPLY_STRING)
		dead = true; /* the heartbeat expired */
	else
		dead = util_now() - strtod(r->str, NULL) > (*m->cfgp)->worker.dead_after ||
		       queue_identity_gone(sc->identity, m->hostname);
	if (!dead || ar_command(m->ar, on_orphans, sc, "LRANGE %s 0 -1", sc->list) == -1)
		free(sc);
}

static void
on_lists(redisReply *r, void *priv)
{
	struct maint *m = priv;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i < r->elements; i++) {
		struct sweep_ctx *sc = xcalloc(1, sizeof(*sc));
		sc->m = m;
		if (r->element[i]->len >= sizeof(sc->list) ||
		    queue_inflight_parse(r->element[i]->str, sc->queue, sc->identity) == -1) {
			(void)ar_command(m->ar, NULL, NULL, "SREM %s %b", QUEUE_INFLIGHT_SET, r->element[i]->str,
			                 r->element[i]->len);
			free(sc);
			continue;
		}
		util_strlcpy(sc->list, r->element[i]->str, sizeof(sc->list));
		if (ar_command(m->ar, on_beat, sc, "HGET %s beat", sc->identity) == -1)
			free(sc);
	}
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct maint *m = arg;
	int secs = (*m->cfgp)->scheduler.sweep_interval;
	struct timeval tv = {.tv_sec = secs, .tv_usec = 0};

	(void)fd, (void)what;
	if (m->enabled && ar_ready(m->ar)) {
		m->st.sweeps++;
		(void)ar_command(m->ar, on_lists, m, "SMEMBERS %s", QUEUE_INFLIGHT_SET);
	}
	evtimer_add(m->ev_sweep, &tv);
}

struct maint *
maint_new(struct event_base *base, struct ar *ar, const struct cfg *const *cfgp)
{
	struct maint *m = xcalloc(1, sizeof(*m));
	struct timeval soon = {1, 0};

	m->ar = ar;
	m->cfgp = cfgp;
	if (gethostname(m->hostname, sizeof(m->hostname)) == -1)
		m->hostname[0] = '\0';
	m->ev_poll = evtimer_new(base, on_poll, m);
	m->ev_sweep = evtimer_new(base, on_sweep, m);
	arm_poll(m, false);
	evtimer_add(m->ev_sweep, &soon);
	return m;
}

void
maint_free(struct maint *m)
{
	if (m == NULL)
		return;
	event_free(m->ev_poll);
	event_free(m->ev_sweep);
	free(m);
}

void
maint_enable(struct maint *m, bool on)
{
	m->enabled = on;
}

const struct maint_stats *
maint_stats(const struct maint *m)
{
	return &m->st;
}
