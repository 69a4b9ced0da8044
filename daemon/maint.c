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

/* One sorted set's poll: pages of POLL_BATCH due entries, each page once the last one's moves are done. */
struct due_poll {
	struct maint *m;
	const char *zset; /* static string */
	int pending;      /* its ZRANGEBYSCORE or moves awaiting replies */
	int skip;         /* entries Redis refused to move in this pass: the next page starts after them */
	bool full;        /* the last page was full: more may be due */
};

struct maint {
	struct ar *ar;
	const struct cfg *const *cfgp;
	struct event *ev_poll;
	struct event *ev_sweep;
	bool enabled;
	struct due_poll due[2]; /* schedule, retry */
	struct queue_refusals *due_refused;
	int sweeping; /* sweep commands and lists of the current sweep awaiting replies */
	struct queue_refusals *sweep_refused;
	struct maint_stats st;
	char hostname[256];
};

/* A move sent for an entry: what its reply needs. */
struct move_ctx {
	void (*done)(struct move_ctx *mc, redisReply *r); /* runs with the reply, then mc is freed */
	void *owner;                                      /* a due_poll or a sweep_ctx */
	const char *src;                                  /* borrowed from the owner */
	char *old;
	size_t old_len;
	char dest[80];
	bool to_dead;
};

static void
on_moved(redisReply *r, void *priv)
{
	struct move_ctx *mc = priv;

	mc->done(mc, r);
	free(mc->old);
	free(mc);
}

/* Sends the move of old (src) to dest ("back"/"front" onto queue:arg, or "zset" dead with score arg);
 * false when not connected. */
static bool
send_move(struct maint *m, void (*done)(struct move_ctx *, redisReply *), void *owner, const char *src, bool src_is_zset,
          const char *old, size_t old_len, const char *fresh, const char *kind, const char *dest, const char *arg)
{
	struct move_ctx *mc = xcalloc(1, sizeof(*mc));

	mc->done = done;
	mc->owner = owner;
	mc->src = src;
	mc->old = xstrndup(old, old_len);
	mc->old_len = old_len;
	mc->to_dead = strcmp(kind, "zset") == 0;
	util_strlcpy(mc->dest, dest, sizeof(mc->dest));
	if (ar_move(m->ar, on_moved, mc, src, src_is_zset, old, old_len, fresh, kind, dest, arg) == -1) {
		free(mc->old);
		free(mc);
		return false;
	}
	return true;
}

/* A refused move: noted (and logged once). A lost script (NOSCRIPT) is reloaded, not a refusal. */
static void
note_refused(struct queue_refusals *q, struct move_ctx *mc, redisReply *r)
{
	if (strncmp(r->str, "NOSCRIPT", 8) != 0)
		queue_refusals_note(q, mc->src, mc->old, mc->old_len, mc->dest, r->str);
}

/* --- the poller ------------------------------------------------------------------------------ */

static void poll_page(struct due_poll *dp);

/* The page's last reply is in: the next page, when there may be more (never the same entries again). */
static void
page_done(struct due_poll *dp)
{
	if (dp->pending == 0 && dp->full && dp->m->enabled && ar_ready(dp->m->ar))
		poll_page(dp);
}

static void
on_moved_due(struct move_ctx *mc, redisReply *r)
{
	struct due_poll *dp = mc->owner;
	struct maint *m = dp->m;

	dp->pending--;
	if (r == NULL) {
		dp->full = false; /* the connection is gone: the next tick starts over */
	} else if (r->type == REDIS_REPLY_INTEGER && r->integer == 1 && mc->to_dead) {
		m->st.killed++;
		log_warnx("%s: an entry that is not a job with a valid queue went to dead", dp->zset);
	} else if (r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		m->st.polled++;
	} else if (r->type == REDIS_REPLY_ERROR) {
		dp->skip++;
		note_refused(m->due_refused, mc, r);
	}
	page_done(dp);
}

static void
on_due(redisReply *r, void *priv)
{
	struct due_poll *dp = priv;
	struct maint *m = dp->m;
	double now = util_now();

	dp->pending--;
	dp->full = false;
	if (r && r->type == REDIS_REPLY_ARRAY) {
		dp->full = r->elements == POLL_BATCH;
		for (size_t i = 0; i < r->elements; i++) {
			const char *old = r->element[i]->str;
			size_t old_len = r->element[i]->len;
			char queue[65], key[80], score[32];
			char *fresh = queue_due_json(old, now, queue);
			bool sent;
			if (fresh) {
				snprintf(key, sizeof(key), "queue:%s", queue);
				sent = send_move(m, on_moved_due, dp, dp->zset, true, old, old_len, fresh, "back", key, queue);
			} else {
				fresh = queue_dead_json(old, "InvalidJob", "not a job with a valid \"queue\"", now);
				snprintf(score, sizeof(score), "%.6f", now);
				sent = send_move(m, on_moved_due, dp, dp->zset, true, old, old_len, fresh, "zset", "dead", score);
			}
			free(fresh);
			if (!sent) {
				dp->full = false;
				break;
			}
			dp->pending++;
		}
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		log_warnx("%s poll: %s", dp->zset, r->str);
	}
	page_done(dp);
}

static void
poll_page(struct due_poll *dp)
{
	char max[32], skip[16], limit[16];

	snprintf(max, sizeof(max), "%.6f", util_now());
	snprintf(skip, sizeof(skip), "%d", dp->skip);
	snprintf(limit, sizeof(limit), "%d", POLL_BATCH);
	const char *argv[] = {"ZRANGEBYSCORE", dp->zset, "-inf", max, "LIMIT", skip, limit};
	if (ar_argv(dp->m->ar, on_due, dp, (int)NELEM(argv), argv, NULL) == -1)
		return;
	dp->pending++;
	dp->m->st.pages++;
}

static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct maint *m = arg;
	int ms = (*m->cfgp)->scheduler.poll_interval_ms;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	(void)fd, (void)what;
	/* A pass still paging (a slow Redis, many due jobs) goes on; a new one starts at the next tick. */
	if (m->enabled && ar_ready(m->ar) && m->due[0].pending == 0 && m->due[1].pending == 0) {
		m->st.polls++;
		m->st.due_refused = queue_refusals_pass(m->due_refused);
		for (size_t i = 0; i < NELEM(m->due); i++) {
			m->due[i].skip = 0;
			poll_page(&m->due[i]);
		}
	}
	evtimer_add(m->ev_poll, &tv);
}

/* --- the sweeper ----------------------------------------------------------------------------- */

/* One dead worker's list; freed when its last reply is in. */
struct sweep_ctx {
	struct maint *m;
	int refs; /* replies still to come that use it */
	int recovered;
	char list[400];
	char queue[65];
	char identity[256];
};

static void
sweep_release(struct sweep_ctx *sc)
{
	if (--sc->refs > 0)
		return;
	if (sc->recovered > 0)
		log_notice("handed back %d job(s) of dead worker %s to queue %s", sc->recovered, sc->identity, sc->queue);
	sc->m->sweeping--;
	free(sc);
}

static void
on_moved_orphan(struct move_ctx *mc, redisReply *r)
{
	struct sweep_ctx *sc = mc->owner;
	struct maint *m = sc->m;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1 && mc->to_dead) {
		m->st.killed++;
		log_warnx("a job of dead worker %s went to dead: handed back more than %d times", sc->identity,
		          (*m->cfgp)->worker.max_recoveries);
	} else if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
		m->st.recovered++;
		sc->recovered++;
	} else if (r && r->type == REDIS_REPLY_ERROR) {
		/* It stays in the list, which stays known (LLEN is not 0): the next sweep tries again. */
		note_refused(m->sweep_refused, mc, r);
	}
	sweep_release(sc);
}

static void
on_forget(redisReply *r, void *priv)
{
	struct sweep_ctx *sc = priv;

	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
		(void)ar_command(sc->m->ar, NULL, NULL, "SREM %s %s", QUEUE_INFLIGHT_SET, sc->list);
	sweep_release(sc);
}

static void
on_orphans(redisReply *r, void *priv)
{
	struct sweep_ctx *sc = priv;
	struct maint *m = sc->m;
	char key[80], score[32];
	int max = (*m->cfgp)->worker.max_recoveries;

	if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
		sweep_release(sc);
		return;
	}
	snprintf(key, sizeof(key), "queue:%s", sc->queue);
	for (size_t i = 0; i < r->elements; i++) {
		bool to_dead, sent;
		char *fresh = queue_recovered_json(r->element[i]->str, max, util_now(), &to_dead);
		if (to_dead) {
			snprintf(score, sizeof(score), "%.6f", util_now());
			sent = send_move(m, on_moved_orphan, sc, sc->list, false, r->element[i]->str, r->element[i]->len, fresh,
			                 "zset", "dead", score);
		} else {
			sent = send_move(m, on_moved_orphan, sc, sc->list, false, r->element[i]->str, r->element[i]->len, fresh,
			                 "front", key, sc->queue);
		}
		free(fresh);
		if (!sent)
			break;
		sc->refs++;
	}
	/* Replies come in order: by the time LLEN answers, the moves above are done. */
	if (ar_command(m->ar, on_forget, sc, "LLEN %s", sc->list) == -1)
		sweep_release(sc);
}

static void
on_beat(redisReply *r, void *priv)
{
	struct sweep_ctx *sc = priv;
	struct maint *m = sc->m;
	bool dead;

	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		sweep_release(sc);
		return;
	}
	if (r->type != REDIS_REPLY_STRING)
		dead = true; /* the heartbeat expired */
	else
		dead = util_now() - strtod(r->str, NULL) > (*m->cfgp)->worker.dead_after ||
		       queue_identity_gone(sc->identity, m->hostname);
	if (!dead || ar_command(m->ar, on_orphans, sc, "LRANGE %s 0 -1", sc->list) == -1)
		sweep_release(sc);
}

static void
on_lists(redisReply *r, void *priv)
{
	struct maint *m = priv;

	m->sweeping--;
	if (r == NULL || r->type != REDIS_REPLY_ARRAY)
		return;
	for (size_t i = 0; i < r->elements; i++) {
		struct sweep_ctx *sc = xcalloc(1, sizeof(*sc));
		sc->m = m;
		sc->refs = 1;
		if (r->element[i]->len >= sizeof(sc->list) ||
		    queue_inflight_parse(r->element[i]->str, sc->queue, sc->identity) == -1) {
			(void)ar_command(m->ar, NULL, NULL, "SREM %s %b", QUEUE_INFLIGHT_SET, r->element[i]->str,
			                 r->element[i]->len);
			free(sc);
			continue;
		}
		util_strlcpy(sc->list, r->element[i]->str, sizeof(sc->list));
		m->sweeping++;
		if (ar_command(m->ar, on_beat, sc, "HGET %s beat", sc->identity) == -1)
			sweep_release(sc);
	}
}

static void
on_sweep(evutil_socket_t fd, short what, void *arg)
{
	struct maint *m = arg;
	int secs = (*m->cfgp)->scheduler.sweep_interval;
	struct timeval tv = {.tv_sec = secs, .tv_usec = 0};

	(void)fd, (void)what;
	/* One sweep at a time: a pass ends when its last reply is in. */
	if (m->enabled && ar_ready(m->ar) && m->sweeping == 0) {
		m->st.sweeps++;
		m->st.sweep_refused = queue_refusals_pass(m->sweep_refused);
		if (ar_command(m->ar, on_lists, m, "SMEMBERS %s", QUEUE_INFLIGHT_SET) == 0)
			m->sweeping++;
	}
	evtimer_add(m->ev_sweep, &tv);
}

struct maint *
maint_new(struct event_base *base, struct ar *ar, const struct cfg *const *cfgp)
{
	struct maint *m = xcalloc(1, sizeof(*m));
	struct timeval soon = {1, 0};
	int ms = (*cfgp)->scheduler.poll_interval_ms;
	struct timeval tick = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};

	m->ar = ar;
	m->cfgp = cfgp;
	if (gethostname(m->hostname, sizeof(m->hostname)) == -1)
		m->hostname[0] = '\0';
	for (size_t i = 0; i < NELEM(m->due); i++) {
		m->due[i].m = m;
		m->due[i].zset = i == 0 ? "schedule" : "retry";
	}
	m->due_refused = queue_refusals_new();
	m->sweep_refused = queue_refusals_new();
	m->ev_poll = evtimer_new(base, on_poll, m);
	m->ev_sweep = evtimer_new(base, on_sweep, m);
	evtimer_add(m->ev_poll, &tick);
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
	queue_refusals_free(m->due_refused);
	queue_refusals_free(m->sweep_refused);
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
