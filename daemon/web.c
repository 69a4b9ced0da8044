/* web: outreachd's private HTTP listener: /healthz, /readyz and /metrics (Prometheus text format). */
#include "daemon/web.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/log.h"

struct web {
	struct evhttp *http;
	web_metrics_cb *metrics;
	web_ready_cb *ready;
	void *priv;
};

static void
reply(struct evhttp_request *req, int code, const char *reason, const char *type, const char *body, size_t len)
{
	struct evbuffer *buf = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", type);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
	evbuffer_add(buf, body, len);
	evhttp_send_reply(req, code, reason, buf);
	evbuffer_free(buf);
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	struct web *w = arg;
	const char *uri = evhttp_request_get_uri(req);
	char path[64];
	size_t n = strcspn(uri, "?");

	if (evhttp_request_get_command(req) != EVHTTP_REQ_GET && evhttp_request_get_command(req) != EVHTTP_REQ_HEAD) {
		reply(req, 405, "Method Not Allowed", "text/plain; charset=utf-8", "GET only\n", 9);
		return;
	}
	snprintf(path, sizeof(path), "%.*s", (int)(n < sizeof(path) - 1 ? n : sizeof(path) - 1), uri);
	if (strcmp(path, "/healthz") == 0) {
		reply(req, 200, "OK", "text/plain; charset=utf-8", "ok\n", 3);
	} else if (strcmp(path, "/readyz") == 0) {
		char why[256] = "";
		if (w->ready(why, sizeof(why), w->priv))
			reply(req, 200, "OK", "text/plain; charset=utf-8", "ready\n", 6);
		else {
			strncat(why, "\n", sizeof(why) - strlen(why) - 1);
			reply(req, 503, "Service Unavailable", "text/plain; charset=utf-8", why, strlen(why));
		}
	} else if (strcmp(path, "/metrics") == 0) {
		char *body = NULL;
		size_t len = 0;
		FILE *f = open_memstream(&body, &len);
		if (f == NULL) {
			reply(req, 500, "Internal Server Error", "text/plain", "out of memory\n", 14);
			return;
		}
		w->metrics(f, w->priv);
		fclose(f);
		reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, len);
		free(body);
	} else {
		reply(req, 404, "Not Found", "text/plain; charset=utf-8", "not found: try /healthz, /readyz, /metrics\n",
		      43);
	}
}

struct evhttp *
web_listen(struct event_base *base, const char *key, const char *listen, char *err, size_t errlen)
{
	struct evhttp *http;
	char host[256];
	int port;

	if (cfg_parse_listen(listen, host, sizeof(host), &port) == -1) {
		snprintf(err, errlen, "%s: '%s' is not host:port", key, listen);
		return NULL;
	}
	http = evhttp_new(base);
	evhttp_set_timeout(http, 10);
	evhttp_set_max_headers_size(http, 8192);
	evhttp_set_max_body_size(http, 4096);
	if (evhttp_bind_socket(http, host, (ev_uint16_t)port) != 0) {
		snprintf(err, errlen, "%s: cannot listen on %s (in use, or not an address of this host)", key, listen);
		evhttp_free(http);
		return NULL;
	}
	return http;
}

struct web *
web_new(struct event_base *base, const char *listen, web_metrics_cb *metrics, web_ready_cb *ready, void *priv,
        char *err, size_t errlen)
{
	struct web *w = xcalloc(1, sizeof(*w));

	w->http = web_listen(base, "http.listen", listen, err, errlen);
	if (w->http == NULL) {
		free(w);
		return NULL;
	}
	w->metrics = metrics;
	w->ready = ready;
	w->priv = priv;
	evhttp_set_gencb(w->http, on_request, w);
	return w;
}

void
web_free(struct web *w)
{
	if (w == NULL)
		return;
	evhttp_free(w->http);
	free(w);
}
