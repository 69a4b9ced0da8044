/* aredis: outreachd's non-blocking Redis connection: libevent adapter, reconnect with backoff, timeouts. */
#ifndef OUTREACH_AREDIS_H
#define OUTREACH_AREDIS_H

#include <event2/event.h>
#include <hiredis/async.h>
#include <stdbool.h>

#include "common/cfg.h"

struct ar;

/* Called with the reply (NULL when the connection was lost or the command timed out) and priv. */
typedef void ar_cb(redisReply *reply, void *priv);
/* Called each time the connection becomes usable (after AUTH/SELECT and script loading). */
typedef void ar_up_cb(void *priv);

/* Starts connecting at once and keeps reconnecting with backoff (0.25 s doubling to 10 s). cfg is
 * borrowed and must outlive the connection (swap it with ar_set_cfg). */
struct ar *ar_new(struct event_base *base, const struct cfg *cfg, ar_up_cb *up, void *up_priv);
void ar_free(struct ar *ar);
void ar_set_cfg(struct ar *ar, const struct cfg *cfg);

/* True once connected and authenticated. */
bool ar_ready(const struct ar *ar);
/* Sends a command; cb runs exactly once, with NULL on failure. Returns -1 (and runs no callback)
 * when not connected. Arguments are binary-safe (lens may be NULL for C strings). */
int ar_argv(struct ar *ar, ar_cb *cb, void *priv, int argc, const char **argv, const size_t *lens);
int ar_command(struct ar *ar, ar_cb *cb, void *priv, const char *fmt, ...);

/* Runs the atomic move (common/queue.h) by its SHA, loading the script when Redis lost it. */
int ar_move(struct ar *ar, ar_cb *cb, void *priv, const char *src, bool src_is_zset, const char *old,
            size_t old_len, const char *new_json, const char *dest_kind, const char *dest_key, const char *arg);

/* Counters for /metrics. */
unsigned long ar_reconnects(const struct ar *ar);

#endif
