/* aredis: outreachd's non-blocking Redis connection: libevent adapter, reconnect with backoff, timeouts. */
#include "daemon/aredis.h"

#include <hiredis/adapters/libevent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/queue.h"
#include "common/util.h"

struct ar {
	struct event_base *base;
	const struct cfg *cfg;
	redisAsyncContext *ac;
	bool connected; /* TCP/unix connection up */
	bool ready;     /* handshake done */
	int backoff_ms;
	struct event *ev_retry;
	struct event *ev_watch;
	int pending;
	int64_t last_activity_ms;
	int64_t connect_started_ms;
	unsigned long reconnects;
	ar_up_cb *up;
	void *up_priv;
};

/* Every command's callback goes through here, to count what is outstanding. */
struct call {
	struct ar *ar;
	ar_cb *cb;
	void *priv;
};

static void schedule_retry(struct ar *ar);

static void
on_reply(redisAsyncContext *ac, void *r, void *privdata)
{
	struct call *call = privdata;
	struct ar *ar = call->ar;

	(void)ac;
	ar->pending--;
	ar->last_activity_ms = util_mono_ms();
	if (call->cb)
		call->cb(r, call->priv);
	free(call);
}

/* The bookkeeping of one outgoing command, or NULL when not connected. */
static struct call *
new_call(struct ar *ar, ar_cb *cb, void *priv)
{
	if (!ar->connected || ar->ac == NULL)
		return NULL;
	struct call *call = xmalloc(sizeof(*call));
	call->ar = ar;
	call->cb = cb;
	call->priv = priv;
	if (ar->pending == 0)
		ar->last_activity_ms = util_mono_ms();
	return call;
}

/* Counts a sent command, or frees the call of one that could not be sent. */
static int
sent(struct ar *ar, struct call *call, int rc)
{
	if (rc != REDIS_OK) {
		free(call);
		return -1;
	}
	ar->pending++;
	return 0;
}

int
ar_argv(struct ar *ar, ar_cb *cb, void *priv, int argc, const char **argv, const size_t *lens)
{
	struct call *call = new_call(ar, cb, priv);

	if (call == NULL)
		return -1;
	return sent(ar, call, redisAsyncCommandArgv(ar->ac, on_reply, call, argc, argv, lens));
}

int
ar_command(struct ar *ar, ar_cb *cb, void *priv, const char *fmt, ...)
{
	struct call *call = new_call(ar, cb, priv);
	va_list ap;
	int rc;

	if (call == NULL)
		return -1;
	va_start(ap, fmt);
	rc = redisvAsyncCommand(ar->ac, on_reply, call, fmt, ap);
	va_end(ap);
	return sent(ar, call, rc);
}

static void
on_script(redisReply *r, void *priv)
{
	(void)priv;
	if (r && r->type == REDIS_REPLY_ERROR)
		log_warnx("redis: SCRIPT LOAD refused: %s", r->str);
}

struct move_call {
	struct ar *ar;
	ar_cb *cb;
	void *priv;
};

static void
on_move(redisReply *r, void *priv)
{
	struct move_call *m = priv;

	if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOSCRIPT", 8) == 0)
		(void)ar_command(m->ar, on_script, NULL, "SCRIPT LOAD %s", queue_lua_move);
	if (m->cb)
		m->cb(r, m->priv);
	free(m);
}

int
ar_move(struct ar *ar, ar_cb *cb, void *priv, const char *src, bool src_is_zset, const char *old, size_t old_len,
        const char *new_json, const char *dest_kind, const char *dest_key, const char *arg)
{
	char now[32];
	snprintf(now, sizeof(now), "%.6f", util_now());
	const char *argv[] = {"EVALSHA", queue_lua_move_sha(), "3", src, dest_key, "queues",
	                      src_is_zset ? "zset" : "list", old, new_json, dest_kind, arg, now};
	size_t lens[NELEM(argv)];
	struct move_call *m = xmalloc(sizeof(*m));

	for (size_t i = 0; i < NELEM(argv); i++)
		lens[i] = strlen(argv[i]);
	lens[7] = old_len;
	m->ar = ar;
	m->cb = cb;
	m->priv = priv;
	if (ar_argv(ar, on_move, m, (int)NELEM(argv), argv, lens) == -1) {
		free(m);
		return -1;
	}
	return 0;
}

static void
on_handshake(redisReply *r, void *priv)
{
	struct ar *ar = priv;
	char where[300];

	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		log_warnx("redis: handshake refused: %s", r ? r->str : "connection lost");
		if (ar->ac)
			redisAsyncDisconnect(ar->ac);
		return;
	}
	if (ar->ready)
		return;
	ar->ready = true;
	ar->backoff_ms = 250;
	rds_describe(&ar->cfg->redis_addr, where, sizeof(where));
	log_info("connected to %s", where);
	if (ar->up)
		ar->up(ar->up_priv);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
	struct ar *ar = ac->data;
	const struct rds_addr *a = &ar->cfg->redis_addr;
	const char *pw = (ar->cfg->redis.password && *ar->cfg->redis.password) ? ar->cfg->redis.password : a->password;

	if (status != REDIS_OK) {
		char where[300];
		rds_describe(a, where, sizeof(where));
		log_warnx("redis: cannot connect to %s: %s", where, ac->errstr);
		ar->ac = NULL; /* hiredis frees the context after a failed connect */
		ar->connected = false;
		schedule_retry(ar);
		return;
	}
	ar->connected = true;
	/* Replies come back in order: the last one of the handshake marks the connection ready. */
	if (*pw) {
		if (*a->user)
			(void)ar_command(ar, on_script, NULL, "AUTH %s %s", a->user, pw);
		else
			(void)ar_command(ar, on_script, NULL, "AUTH %s", pw);
	}
	if (a->db != 0)
		(void)ar_command(ar, on_script, NULL, "SELECT %d", a->db);
	(void)ar_command(ar, on_script, NULL, "SCRIPT LOAD %s", queue_lua_move);
	(void)ar_command(ar, on_handshake, ar, "PING");
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
	struct ar *ar = ac->data;

	if (status != REDIS_OK)
		log_warnx("redis: connection lost: %s", ac->errstr);
	ar->ac = NULL;
	ar->connected = false;
	ar->ready = false;
	ar->pending = 0;
	schedule_retry(ar);
}

static void
start_connect(struct ar *ar)
{
	const struct rds_addr *a = &ar->cfg->redis_addr;
	redisAsyncContext *ac = a->is_unix ? redisAsyncConnectUnix(a->path) : redisAsyncConnect(a->host, a->port);

	if (ac == NULL || ac->err) {
		log_warnx("redis: cannot start a connection: %s", ac ? ac->errstr : "out of memory");
		if (ac)
			redisAsyncFree(ac);
		schedule_retry(ar);
		return;
	}
	ac->data = ar;
	ar->ac = ac;
	ar->connect_started_ms = util_mono_ms();
	redisLibeventAttach(ac, ar->base);
	redisAsyncSetConnectCallback(ac, on_connect);
	redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	start_connect(arg);
}

static void
schedule_retry(struct ar *ar)
{
	struct timeval tv = {.tv_sec = ar->backoff_ms / 1000, .tv_usec = (ar->backoff_ms % 1000) * 1000};

	if (ar->ev_retry == NULL || evtimer_pending(ar->ev_retry, NULL))
		return;
	ar->reconnects++;
	evtimer_add(ar->ev_retry, &tv);
	ar->backoff_ms = ar->backoff_ms * 2 > 10000 ? 10000 : ar->backoff_ms * 2;
}

/* hiredis 0.14 has no timeouts of its own: a connect or a reply that takes longer than redis.timeout
 * drops the connection, failing the outstanding commands, and a reconnect follows. */
static void
on_watch(evutil_socket_t fd, short what, void *arg)
{
	struct ar *ar = arg;
	int64_t now = util_mono_ms(), limit = ar->cfg->redis.timeout;

	(void)fd, (void)what;
	if (ar->ac == NULL)
		return;
	if (!ar->connected && now - ar->connect_started_ms > limit) {
		log_warnx("redis: connect timed out after %lld ms", (long long)limit);
		/* A context that never connected is freed without callbacks. */
		redisAsyncFree(ar->ac);
		ar->ac = NULL;
		schedule_retry(ar);
		return;
	}
	if (ar->connected && ar->pending > 0 && now - ar->last_activity_ms > limit) {
		log_warnx("redis: no reply for %lld ms: dropping the connection", (long long)limit);
		/* Freed, not disconnected: hiredis 0.14's redisAsyncDisconnect waits for the replies still
		 * due, which a stalled server never sends, and refuses every command meanwhile. Freeing
		 * fails each outstanding command (its callback runs with no reply), then on_disconnect
		 * (the context is connected: ar->connected) clears ar->ac and schedules the reconnect. */
		redisAsyncFree(ar->ac);
	}
}

struct ar *
ar_new(struct event_base *base, const struct cfg *cfg, ar_up_cb *up, void *up_priv)
{
	struct ar *ar = xcalloc(1, sizeof(*ar));
	struct timeval second = {1, 0};

	ar->base = base;
	ar->cfg = cfg;
	ar->up = up;
	ar->up_priv = up_priv;
	ar->backoff_ms = 250;
	ar->ev_retry = evtimer_new(base, on_retry, ar);
	ar->ev_watch = event_new(base, -1, EV_PERSIST, on_watch, ar);
	event_add(ar->ev_watch, &second);
	start_connect(ar);
	return ar;
}

void
ar_set_cfg(struct ar *ar, const struct cfg *cfg)
{
	ar->cfg = cfg;
}

void
ar_free(struct ar *ar)
{
	if (ar == NULL)
		return;
	event_free(ar->ev_retry);
	ar->ev_retry = NULL; /* the disconnect callback must not schedule a retry now */
	if (ar->ac) {
		ar->ac->data = ar;
		redisAsyncFree(ar->ac);
	}
	event_free(ar->ev_watch);
	free(ar);
}

bool
ar_ready(const struct ar *ar)
{
	return ar->ready;
}

unsigned long
ar_reconnects(const struct ar *ar)
{
	return ar->reconnects;
}
