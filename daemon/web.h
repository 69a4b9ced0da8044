/* web: outreachd's private HTTP listener: /healthz, /readyz and /metrics (Prometheus text format). */
#ifndef OUTREACH_WEB_H
#define OUTREACH_WEB_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/util.h"

struct web;
struct evhttp;

/* Writes the /metrics body. */
typedef void web_metrics_cb(FILE *out, void *priv);
/* Says whether the daemon can work; when not, writes why into why. */
typedef bool web_ready_cb(char *why, size_t len, void *priv);

/* Listens on "host:port"; NULL with err when the address cannot be bound. */
struct web *web_new(struct event_base *base, const char *listen, web_metrics_cb *metrics, web_ready_cb *ready,
                    void *priv, char *err, size_t errlen) MUSTCHECK;
void web_free(struct web *w);

/* An evhttp server listening on "host:port" with the limits every listener of outreachd shares (10 s
 * timeout, 8 KB of headers, 4 KB of body); key names the configuration key in errors. NULL with err
 * when the address is malformed or cannot be bound. Caller frees with evhttp_free. */
struct evhttp *web_listen(struct event_base *base, const char *key, const char *listen, char *err,
                          size_t errlen) MUSTCHECK;

#endif
