/* public: outreachd's public HTTP listener: the tracking pixel, click and unsubscribe links of campaign emails. */
#include "daemon/public.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "common/job.h"
#include "common/log.h"
#include "daemon/web.h"

#define URI_MAX 4096         /* longer request targets get 414 (the longest token is about 2,800) */
#define BODY_MAX 4096        /* larger bodies get 413 */
/* Beyond these libevent refuses a request itself (a bare 413 or 400, not counted here). */
#define HEAD_MAX 16384 /* request line and headers */
#define READ_MAX 65536 /* body */
#define BATCH_MAX 512        /* jobs in one LPUSH */
#define PENDING_MAX 10000    /* events gathered or waiting for Redis; more are dropped and counted */
#define DETAIL_MAX 200       /* bytes of User-Agent kept */
#define FAIL_LOG_EVERY_MS 10000
#define REPEAT_BITS 16       /* 65,536 recent opens and clicks remembered (1 MiB) */
#define QUEUE "campaigns"
#define CLASS "CampaignEventJob"

enum route { ROUTE_OPEN, ROUTE_CLICK, ROUTE_UNSUBSCRIBE, ROUTE_OTHER, NROUTES };
static const char *const route_names[NROUTES] = {"open", "click", "unsubscribe", "other"};
static const int codes[] = {200, 302, 400, 404, 405, 413, 414, 503};

/* A transparent 1x1 GIF89a: header, screen descriptor, a two-colour table, a graphic control
 * extension making colour 0 transparent, one image of one pixel, trailer. */
static const unsigned char pixel_gif[43] = {
    'G',  'I',  'F',  '8',  '9',  'a',  0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00,
    0x00, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
};

#define PAGE_HEAD                                                                                          \
	"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"                                    \
	"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"                              \
	"<meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title>"                                  \
	"<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;"         \
	"color:#222}button{font-size:1rem;padding:.5rem 1.25rem}</style></head><body><main>"
#define PAGE_TAIL "</main></body></html>\n"

/* The form posts to the page's own URL (no action attribute): the token is the authority. */
static const char page_confirm[] = PAGE_HEAD "<h1>Unsubscribe from these emails?</h1>"
                                             "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" "
                                             "value=\"One-Click\"><button type=\"submit\">Unsubscribe</button>"
                                             "</form>" PAGE_TAIL;
static const char page_done[] = PAGE_HEAD "<h1>You are unsubscribed</h1>"
                                          "<p>You will receive no more of these emails.</p>" PAGE_TAIL;
static const char page_later[] = PAGE_HEAD "<h1>Please try again in a few minutes</h1>"
                                           "<p>Your request could not be recorded just now: please send it "
                                           "again.</p>" PAGE_TAIL;

/* An open or a click recorded lately: its key (a keyed hash of event, message and URL, never 0) and
 * when. A slot holds the last one that fell there: a repeat whose slot was taken since is recorded. */
struct seen {
	uint64_t key;
	int64_t at_ms;
};

/* An event of a batch that marked its slot: if the push fails, the mark goes, so that its repeat is
 * recorded. */
struct mark {
	size_t slot;
	struct seen was;
};

/* One LPUSH sent to Redis and what its reply settles. */
struct flight {
	struct public *p;
	size_t n;
	unsigned long by_event[3];
	struct mark *marks; /* NULL when none */
	size_t nmarks;
	size_t nwait;
	struct evhttp_request *wait[]; /* unsubscribes answered when the reply comes */
};

struct public {
	struct evhttp *http;
	struct ar *ar;
	struct token_keys keys;
	struct event *ev_flush;
	struct evbuffer *out; /* reused: evhttp_send_reply moves its content out */

	/* The batch being gathered: the job texts back to back in buf, each ending at ends[i]. */
	char *buf;
	size_t len, cap;
	size_t ends[BATCH_MAX];
	size_t n;
	unsigned long by_event[3];
	struct evhttp_request *wait[BATCH_MAX];
	size_t nwait;
	size_t inflight; /* events sent and not yet answered by Redis */
	const char *argv[BATCH_MAX + 2];
	size_t lens[BATCH_MAX + 2];

	unsigned char rnd[4096]; /* random bytes for jids, drawn a page at a time */
	size_t rnd_used;

	int64_t repeat_ms; /* http.public_repeat_window; 0: no table */
	uint64_t repeat_seed;
	struct seen *seen; /* 1 << REPEAT_BITS slots */
	struct mark marks[BATCH_MAX]; /* of the batch being gathered */
	size_t nmarks;
	unsigned long repeats[2]; /* opens and clicks not recorded again */

	unsigned long requests[NROUTES][NELEM(codes)];
	unsigned long enqueued[3];
	unsigned long failures, unlogged;
	bool logged_once;
	int64_t logged_ms;
};

static const char *
reason_of(int code)
{
	switch (code) {
	case 200:
		return "OK";
	case 302:
		return "Found";
	case 400:
		return "Bad Request";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

/* Sends the answer with the headers every answer carries and counts it. */
static void
answer(struct public *p, struct evhttp_request *req, enum route r, int code, const char *type, const void *body,
       size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (type != NULL) {
		evhttp_add_header(h, "Content-Type", type);
		if (strncmp(type, "text/html", 9) == 0)
			evhttp_add_header(h, "Content-Security-Policy",
			                  "default-src 'none'; form-action 'self'; style-src 'unsafe-inline'; "
			                  "frame-ancestors 'none'");
	}
	for (size_t i = 0; i < NELEM(codes); i++)
		if (codes[i] == code)
			p->requests[r][i]++;
	if (len > 0 && evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		/* libevent would send the body to a HEAD too: the length a GET gets, and no body. */
		char n[24];
		snprintf(n, sizeof(n), "%zu", len);
		evhttp_add_header(h, "Content-Length", n);
	} else if (len > 0) {
		evbuffer_add_reference(p->out, body, len, NULL, NULL);
	}
	evhttp_send_reply(req, code, reason_of(code), p->out);
	evbuffer_drain(p->out, evbuffer_get_length(p->out));
}

static void
answer_text(struct public *p, struct evhttp_request *req, enum route r, int code, const char *text)
{
	answer(p, req, r, code, "text/plain; charset=utf-8", text, strlen(text));
}

static void
answer_unsubscribe(struct public *p, struct evhttp_request *req, bool recorded)
{
	if (recorded) {
		answer(p, req, ROUTE_UNSUBSCRIBE, 200, "text/html; charset=utf-8", page_done, sizeof(page_done) - 1);
	} else {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "120");
		answer(p, req, ROUTE_UNSUBSCRIBE, 503, "text/html; charset=utf-8", page_later, sizeof(page_later) - 1);
	}
}

/* Counts n events that did not reach Redis; logs at most every FAIL_LOG_EVERY_MS. */
static void
lost(struct public *p, size_t n, const char *why)
{
	int64_t now = util_mono_ms();

	p->failures += n;
	p->unlogged += n;
	if (!p->logged_once || now - p->logged_ms >= FAIL_LOG_EVERY_MS) {
		log_warnx("public listener: %lu campaign event(s) not enqueued: %s (logged at most every %d s; see "
		          "outreach_public_enqueue_failures_total)",
		          p->unlogged, why, FAIL_LOG_EVERY_MS / 1000);
		p->unlogged = 0;
		p->logged_once = true;
		p->logged_ms = now;
	}
}

/* The pushes of these events failed: their marks go, unless a later event has taken the slot. */
static void
forget(struct public *p, const struct mark *marks, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct seen *s = &p->seen[marks[i].slot];
		if (s->key == marks[i].was.key && s->at_ms == marks[i].was.at_ms)
			s->key = 0;
	}
}

/* Ends a flight: counts it, answers its unsubscribes, and when it failed forgets its marks. */
static void
land(struct flight *f, bool ok, const char *why)
{
	struct public *p = f->p;

	if (ok) {
		for (int i = 0; i < 3; i++)
			p->enqueued[i] += f->by_event[i];
	} else {
		lost(p, f->n, why);
		forget(p, f->marks, f->nmarks);
	}
	for (size_t i = 0; i < f->nwait; i++)
		answer_unsubscribe(p, f->wait[i], ok);
	free(f->marks);
	free(f);
}

static void
on_pushed(redisReply *r, void *priv)
{
	struct flight *f = priv;

	f->p->inflight -= f->n;
	land(f, r != NULL && r->type == REDIS_REPLY_INTEGER,
	     r != NULL && r->type == REDIS_REPLY_ERROR ? r->str : "Redis connection lost or timed out");
}

/* Sends the gathered jobs as one LPUSH (after SADD queues, as every push does). */
static void
flush(struct public *p)
{
	if (p->n == 0)
		return;
	struct flight *f = xmalloc(sizeof(*f) + p->nwait * sizeof(f->wait[0]));
	f->p = p;
	f->n = p->n;
	memcpy(f->by_event, p->by_event, sizeof(f->by_event));
	f->nmarks = p->nmarks;
	f->marks = p->nmarks ? xmalloc(p->nmarks * sizeof(*f->marks)) : NULL;
	if (p->nmarks)
		memcpy(f->marks, p->marks, p->nmarks * sizeof(*f->marks));
	f->nwait = p->nwait;
	memcpy(f->wait, p->wait, p->nwait * sizeof(f->wait[0]));
	p->nmarks = 0;

	p->argv[0] = "LPUSH";
	p->lens[0] = 5;
	p->argv[1] = "queue:" QUEUE;
	p->lens[1] = strlen(p->argv[1]);
	for (size_t i = 0, start = 0; i < p->n; start = p->ends[i], i++) {
		p->argv[i + 2] = p->buf + start;
		p->lens[i + 2] = p->ends[i] - start;
	}
	/* Both go out in the same write; the replies come back in order. */
	if (ar_command(p->ar, NULL, NULL, "SADD queues " QUEUE) == -1 ||
	    ar_argv(p->ar, on_pushed, f, (int)p->n + 2, p->argv, p->lens) == -1) {
		land(f, false, "Redis is not connected");
	} else {
		p->inflight += f->n;
	}
	p->n = 0;
	p->len = 0;
	p->nwait = 0;
	memset(p->by_event, 0, sizeof(p->by_event));
}

static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	flush(arg);
}

static void
reserve(struct public *p, size_t more)
{
	if (p->len + more <= p->cap)
		return;
	while (p->len + more > p->cap)
		p->cap = p->cap ? p->cap * 2 : 65536;
	p->buf = xrealloc(p->buf, p->cap);
}

static void
put(struct public *p, const char *s, size_t n)
{
	memcpy(p->buf + p->len, s, n);
	p->len += n;
}

/* Appends s as the inside of a JSON string: s holds printable ASCII only, so escaping '"' and '\\'
 * is all it needs. */
static void
put_json(struct public *p, const char *s)
{
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			p->buf[p->len++] = '\\';
		p->buf[p->len++] = *s;
	}
}

static void
new_jid(struct public *p, char out[JOB_JID_LEN + 1])
{
	if (p->rnd_used + JOB_JID_LEN / 2 > sizeof(p->rnd)) {
		util_random(p->rnd, sizeof(p->rnd));
		p->rnd_used = 0;
	}
	util_hex(p->rnd + p->rnd_used, JOB_JID_LEN / 2, out);
	p->rnd_used += JOB_JID_LEN / 2;
}

/* Adds one CampaignEventJob to the batch; req, for an unsubscribe, is answered once Redis has it.
 * url is printable ASCII (see ascii_url) or NULL. Returns false when too much is waiting already. */
static bool
enqueue(struct public *p, enum route event, int64_t message_id, const char *url, struct evhttp_request *req)
{
	const char *ua = evhttp_find_header(evhttp_request_get_input_headers(req), "User-Agent");
	char detail[DETAIL_MAX + 1], jid[JOB_JID_LEN + 1], head[256], tail[192];
	size_t dn = 0;

	if (p->n + p->inflight >= PENDING_MAX) {
		lost(p, 1, "too many events waiting for Redis");
		return false;
	}
	for (; ua != NULL && *ua && dn < DETAIL_MAX; ua++)
		if (*ua >= 0x20 && *ua < 0x7f)
			detail[dn++] = *ua;
	detail[dn] = '\0';
	new_jid(p, jid);
	char now[32]; /* the same time thrice: formatted once */
	snprintf(now, sizeof(now), "%.6f", util_now());
	int hn = snprintf(head, sizeof(head), "{\"class\":\"" CLASS "\",\"args\":[{\"event\":\"%s\",\"message_id\":%lld,",
	                  route_names[event], (long long)message_id);
	int tn = snprintf(tail, sizeof(tail),
	                  "\"}],\"jid\":\"%s\",\"queue\":\"" QUEUE "\",\"retry\":true,\"created_at\":%s,"
	                  "\"enqueued_at\":%s}",
	                  jid, now, now);
	char at[64];
	int an = snprintf(at, sizeof(at), "\"at\":%s,\"detail\":\"", now);

	reserve(p, (size_t)hn + (size_t)tn + (size_t)an + 2 * dn + (url ? 2 * strlen(url) + 16 : 0));
	put(p, head, (size_t)hn);
	if (url != NULL) {
		put(p, "\"url\":\"", 7);
		put_json(p, url);
		put(p, "\",", 2);
	}
	put(p, at, (size_t)an);
	put_json(p, detail);
	put(p, tail, (size_t)tn);
	p->ends[p->n++] = p->len;
	p->by_event[event]++;
	if (event == ROUTE_UNSUBSCRIBE)
		p->wait[p->nwait++] = req;
	if (p->n == BATCH_MAX)
		flush(p);
	else if (p->n == 1)
		event_active(p->ev_flush, EV_TIMEOUT, 0); /* after the other requests of this turn */
	return true;
}

/* The signed URL as a Location header and a JSON value take it: bytes outside ASCII (a token may
 * sign them, never control characters) are percent-encoded, as a browser sends them. out has room
 * for 3 * TOKEN_URL_MAX + 1. */
static void
ascii_url(const char *url, char *out)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *url; url++) {
		unsigned char c = (unsigned char)*url;
		if (c < 0x80) {
			*out++ = (char)c;
		} else {
			*out++ = '%';
			*out++ = hex[c >> 4];
			*out++ = hex[c & 15];
		}
	}
	*out = '\0';
}

static uint64_t
mix(uint64_t h, uint64_t w)
{
	h = (h ^ w) * 0x9e3779b97f4a7c15ULL;
	return h ^ (h >> 29);
}

/* The slot of an open or click and its key: a hash keyed by a random seed, so that no one outside
 * can aim two events at one slot. */
static struct seen *
seen_slot(struct public *p, enum route event, int64_t message_id, const char *url, uint64_t *key)
{
	uint64_t h = mix(p->repeat_seed, (uint64_t)event);
	h = mix(h, (uint64_t)message_id);
	if (url != NULL) {
		size_t n = strlen(url);
		for (size_t i = 0; i < n; i += 8) {
			uint64_t w = 0;
			memcpy(&w, url + i, n - i < 8 ? n - i : 8);
			h = mix(h, w);
		}
		h = mix(h, n);
	}
	h ^= h >> 33; /* MurmurHash3's finalizer: every bit of h depends on every bit fed */
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	*key = h | 1;
	return &p->seen[h >> (64 - REPEAT_BITS)];
}

/* Enqueues an open or a click unless the same one was recorded less than repeat_ms ago: a mail
 * client that loads the pixel again, or a script that fetches one link in a loop, adds no event.
 * A repeat that comes while the first is still on its way to Redis is not sent either: it would
 * follow the first on the same connection and fail with it (a timeout or a lost connection fails
 * every push in flight), and when the first fails its mark goes, so the next repeat is recorded. */
static void
record_once(struct public *p, enum route event, int64_t message_id, const char *url, struct evhttp_request *req)
{
	struct seen *s = NULL;
	uint64_t key = 0;
	int64_t now = 0;

	if (p->repeat_ms > 0) {
		now = util_mono_ms();
		s = seen_slot(p, event, message_id, url, &key);
		if (s->key == key && now - s->at_ms < p->repeat_ms) {
			p->repeats[event]++;
			return;
		}
	}
	if (s == NULL) {
		(void)enqueue(p, event, message_id, url, req);
		return;
	}
	/* Marked before enqueue, which may send the batch with it; undone if it was not taken. */
	struct seen old = *s;
	struct mark *m = &p->marks[p->nmarks++];
	*s = (struct seen){key, now};
	*m = (struct mark){(size_t)(s - p->seen), *s};
	if (!enqueue(p, event, message_id, url, req)) {
		*s = old;
		p->nmarks--;
	}
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	struct public *p = arg;
	const char *uri = evhttp_request_get_uri(req);
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > BODY_MAX) {
		answer_text(p, req, ROUTE_OTHER, 413, "request body too large\n");
		return;
	}
	if (uri == NULL) {
		answer_text(p, req, ROUTE_OTHER, 400, "bad request\n");
		return;
	}
	if (strlen(uri) > URI_MAX) {
		answer_text(p, req, ROUTE_OTHER, 414, "URI too long\n");
		return;
	}
	size_t plen = strcspn(uri, "?#");
	enum route r = ROUTE_OTHER;
	if (plen > 3 && uri[0] == '/' && uri[2] == '/') {
		if (uri[1] == 'o')
			r = ROUTE_OPEN;
		else if (uri[1] == 'c')
			r = ROUTE_CLICK;
		else if (uri[1] == 'u')
			r = ROUTE_UNSUBSCRIBE;
	}
	if (r == ROUTE_OTHER) {
		answer_text(p, req, r, 404, "not found\n");
		return;
	}
	/* HEAD (link checkers, RFC 9110) is answered as GET is, without the body, and records nothing. */
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD && !(r == ROUTE_UNSUBSCRIBE && cmd == EVHTTP_REQ_POST)) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
		                  r == ROUTE_UNSUBSCRIBE ? "GET, HEAD, POST" : "GET, HEAD");
		answer_text(p, req, r, 405, "method not allowed\n");
		return;
	}

	enum token_kind kind;
	int64_t message_id;
	char *url = NULL;
	static const enum token_kind want[] = {TOKEN_OPEN, TOKEN_CLICK, TOKEN_UNSUBSCRIBE};
	if (token_keys_check(&p->keys, uri + 3, plen - 3, &kind, &message_id, &url) == -1 || kind != want[r]) {
		free(url);
		answer_text(p, req, r, 404, "not found\n");
		return;
	}
	bool record = cmd != EVHTTP_REQ_HEAD; /* a HEAD gets the answer only */
	switch (r) {
	case ROUTE_OPEN:
		if (record)
			record_once(p, r, message_id, NULL, req);
		answer(p, req, r, 200, "image/gif", pixel_gif, sizeof(pixel_gif));
		break;
	case ROUTE_CLICK: {
		char location[3 * TOKEN_URL_MAX + 1];
		ascii_url(url, location);
		if (record)
			record_once(p, r, message_id, location, req);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Location", location);
		answer(p, req, r, 302, "text/plain; charset=utf-8", NULL, 0);
		break;
	}
	case ROUTE_UNSUBSCRIBE:
		if (!record || cmd == EVHTTP_REQ_GET) /* mail scanners fetch links: only the POST records */
			answer(p, req, r, 200, "text/html; charset=utf-8", page_confirm, sizeof(page_confirm) - 1);
		else if (!enqueue(p, r, message_id, NULL, req))
			answer_unsubscribe(p, req, false);
		break;
	default:
		break;
	}
	free(url);
}

struct public *
public_new(struct event_base *base, const char *listen, int repeat_window, struct ar *ar,
           const struct token_keys *keys, char *err, size_t errlen)
{
	struct public *p = xcalloc(1, sizeof(*p));

	p->http = web_listen(base, "http.public_listen", listen, err, errlen);
	if (p->http == NULL) {
		free(p);
		return NULL;
	}
	evhttp_set_max_headers_size(p->http, HEAD_MAX);
	evhttp_set_max_body_size(p->http, READ_MAX);
	/* Every method reaches on_request, which answers 405 with Allow. */
	evhttp_set_allowed_methods(p->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
	                                        EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
	                                        EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(p->http, on_request, p);
	p->ar = ar;
	p->keys = *keys;
	p->ev_flush = event_new(base, -1, 0, on_flush, p);
	p->out = evbuffer_new();
	p->rnd_used = sizeof(p->rnd);
	if (repeat_window > 0) {
		p->repeat_ms = (int64_t)repeat_window * 1000;
		util_random(&p->repeat_seed, sizeof(p->repeat_seed));
		p->seen = xcalloc((size_t)1 << REPEAT_BITS, sizeof(*p->seen));
	}
	return p;
}

void
public_free(struct public *p)
{
	if (p == NULL)
		return;
	evhttp_free(p->http);
	event_free(p->ev_flush);
	evbuffer_free(p->out);
	token_keys_clear(&p->keys);
	free(p->seen);
	free(p->buf);
	free(p);
}

void
public_set_key(struct public *p, const struct token_keys *keys)
{
	if (p != NULL)
		p->keys = *keys;
}

void
public_metrics(const struct public *p, FILE *out)
{
	if (p == NULL)
		return;
	fprintf(out, "# HELP outreach_public_requests_total Requests to the public listener, by route and status.\n"
	             "# TYPE outreach_public_requests_total counter\n");
	for (int r = 0; r < NROUTES; r++)
		for (size_t i = 0; i < NELEM(codes); i++)
			fprintf(out, "outreach_public_requests_total{route=\"%s\",code=\"%d\"} %lu\n", route_names[r], codes[i],
			        p->requests[r][i]);
	fprintf(out, "# HELP outreach_public_events_enqueued_total Campaign events the public listener enqueued.\n"
	             "# TYPE outreach_public_events_enqueued_total counter\n");
	for (int e = 0; e < 3; e++)
		fprintf(out, "outreach_public_events_enqueued_total{event=\"%s\"} %lu\n", route_names[e], p->enqueued[e]);
	fprintf(out, "# HELP outreach_public_events_repeated_total Opens and clicks not recorded again: the same one was "
	             "recorded within http.public_repeat_window.\n# TYPE outreach_public_events_repeated_total counter\n");
	for (int e = 0; e < 2; e++)
		fprintf(out, "outreach_public_events_repeated_total{event=\"%s\"} %lu\n", route_names[e], p->repeats[e]);
	fprintf(out, "# HELP outreach_public_enqueue_failures_total Campaign events lost: Redis down, failing or too far "
	             "behind.\n# TYPE outreach_public_enqueue_failures_total counter\n"
	             "outreach_public_enqueue_failures_total %lu\n",
	        p->failures);
	fprintf(out, "# HELP outreach_public_pending_events Campaign events gathered or sent and not yet acknowledged.\n"
	             "# TYPE outreach_public_pending_events gauge\noutreach_public_pending_events %zu\n",
	        p->n + p->inflight);
}
