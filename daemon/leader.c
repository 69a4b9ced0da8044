/* leader: one outreachd leads at a time, through a Redis lock with expiry that the leader renews. */
#include "daemon/leader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

/* Extends the lock only if we still hold it. */
static const char lua_renew[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                "return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
/* Deletes the lock only if we hold it. */
static const char lua_release[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
                                  "return redis.call('DEL', KEYS[1]) else return 0 end";

struct leader {
	struct ar *ar;
	char *identity;
	struct event *ev_tick;
	bool leading;
	bool waiting; /* a request is outstanding */
	int64_t renewed_ms;
	unsigned long changes;
	leader_cb *cb;
	void *priv;
};

static void
set_leading(struct leader *l, bool on, const char *why)
{
	if (l->leading == on || !event_pending(l->ev_tick, EV_TIMEOUT, NULL))
		return;
	l->leading = on;
	l->changes++;
	if (on)
		log_notice("this outreachd is now the leader (%s)", l->identity);
	else
		log_warnx("this outreachd is no longer the leader: %s", why);
	l->cb(on, l->priv);
}

static void
on_acquire(redisReply *r, void *priv)
{
	struct leader *l = priv;

	l->waiting = false;
	if (r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "OK") == 0) {
		l->renewed_ms = util_mono_ms();
		set_leading(l, true, "");
	}
}

static void
on_renew(redisReply *r, void *priv)
{
	struct leader *l = priv;

	l->waiting = false;
	if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
		l->renewed_ms = util_mono_ms();
	else
		set_leading(l, false, r == NULL ? "Redis did not answer" : "another daemon holds the lock");
}

static void
tick(evutil_socket_t fd, short what, void *arg)
{
	struct leader *l = arg;
	char ttl[16];
	int64_t now = util_mono_ms();

	(void)fd, (void)what;
	/* Without a renewal for most of the lock's life we must assume it is gone. */
	if (l->leading && now - l->renewed_ms > LEADER_TTL_MS - LEADER_RENEW_MS / 2)
		set_leading(l, false, "the lock could not be renewed in time");
	if (l->waiting || !ar_ready(l->ar))
		return;
	snprintf(ttl, sizeof(ttl), "%d", LEADER_TTL_MS);
	if (l->leading) {
		if (now - l->renewed_ms >= LEADER_RENEW_MS) {
			const char *argv[] = {"EVAL", lua_renew, "1", LEADER_KEY, l->identity, ttl};
			l->waiting = ar_argv(l->ar, on_renew, l, (int)NELEM(argv), argv, NULL) == 0;
		}
	} else {
		const char *argv[] = {"SET", LEADER_KEY, l->identity, "NX", "PX", ttl};
		l->waiting = ar_argv(l->ar, on_acquire, l, (int)NELEM(argv), argv, NULL) == 0;
	}
}

struct leader *
leader_new(struct event_base *base, struct ar *ar, const char *identity, leader_cb *cb, void *priv)
{
	struct leader *l = xcalloc(1, sizeof(*l));
	struct timeval tv = {LEADER_TRY_MS / 1000, (LEADER_TRY_MS % 1000) * 1000};

	l->ar = ar;
	l->identity = xstrdup(identity);
	l->cb = cb;
	l->priv = priv;
	l->ev_tick = event_new(base, -1, EV_PERSIST, tick, l);
	event_add(l->ev_tick, &tv);
	event_active(l->ev_tick, EV_TIMEOUT, 0);
	return l;
}

void
leader_resign(struct leader *l)
{
	event_del(l->ev_tick);
	if (l->leading) {
		const char *argv[] = {"EVAL", lua_release, "1", LEADER_KEY, l->identity};
		(void)ar_argv(l->ar, NULL, NULL, (int)NELEM(argv), argv, NULL);
		l->leading = false;
		log_notice("leadership given up");
	}
}

void
leader_free(struct leader *l)
{
	if (l == NULL)
		return;
	event_free(l->ev_tick);
	free(l->identity);
	free(l);
}

bool
leader_is(const struct leader *l)
{
	return l->leading;
}

unsigned long
leader_changes(const struct leader *l)
{
	return l->changes;
}
