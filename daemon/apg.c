/* apg: outreachd's non-blocking PostgreSQL connection: libpq's asynchronous API on libevent. */
#include "daemon/apg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/migrate.h"
#include "common/util.h"

struct query {
	struct query *next;
	char *sql;
	int nparams;
	char **params;
	apg_cb *cb;
	void *priv;
	int64_t sent_ms;
};

struct apg {
	struct event_base *base;
	const struct cfg *cfg;
	PGconn *conn;
	struct event *ev_sock;
	struct event *ev_retry;
	struct event *ev_watch;
	int sock;
	bool connecting;
	bool ready;
	bool schema_ok;
	bool ever_ok; /* the schema was current once: later, behind means a migration under way */
	int backoff_ms;
	int64_t connect_started_ms;
	struct query *head, *tail; /* head is in flight once sent */
	bool in_flight;
	unsigned long reconnects;
	apg_up_cb *up;
	void *up_priv;
};

static void start_connect(struct apg *pg);
static void pump(struct apg *pg);
static void on_socket(evutil_socket_t fd, short what, void *arg);

static void
free_query(struct query *q)
{
	for (int i = 0; i < q->nparams; i++)
		free(q->params[i]);
	free(q->params);
	free(q->sql);
	free(q);
}

/* Fails every queued query (connection lost) and schedules a reconnect. */
static void
drop(struct apg *pg, const char *why)
{
	struct query *q = pg->head;

	if (pg->ev_sock) {
		event_free(pg->ev_sock);
		pg->ev_sock = NULL;
	}
	if (pg->conn) {
		PQfinish(pg->conn);
		pg->conn = NULL;
	}
	pg->ready = pg->connecting = pg->in_flight = false;
	pg->head = pg->tail = NULL;
	while (q) {
		struct query *next = q->next;
		if (q->cb)
			q->cb(NULL, why, q->priv);
		free_query(q);
		q = next;
	}
	if (pg->ev_retry && !evtimer_pending(pg->ev_retry, NULL)) {
		struct timeval tv = {.tv_sec = pg->backoff_ms / 1000, .tv_usec = (pg->backoff_ms % 1000) * 1000};
		evtimer_add(pg->ev_retry, &tv);
		pg->backoff_ms = pg->backoff_ms * 2 > 30000 ? 30000 : pg->backoff_ms * 2;
		pg->reconnects++;
	}
}

static void
on_schema(PGresult *res, const char *errmsg, void *priv)
{
	struct apg *pg = priv;
	int need = mig_latest();

	if (res == NULL) {
		log_warnx("postgresql: schema check failed: %s", errmsg);
		return;
	}
	int have = PQntuples(res) ? atoi(PQgetvalue(res, 0, 0)) : 0;
	pg->schema_ok = have >= need;
	if (!pg->schema_ok && !pg->ever_ok)
		fatalx("the database schema is at version %d but this build needs %d: run `outreachctl migrate`", have,
		       need);
	pg->ever_ok = true;
	if (!pg->schema_ok) {
		log_errorx("the database schema is at version %d but this build needs %d: run `outreachctl migrate`",
		           have, need);
		return;
	}
	log_info("connected to PostgreSQL (schema version %d)", have);
	pg->backoff_ms = 500;
	if (pg->up)
		pg->up(pg->up_priv);
}

static void
watch_socket(struct apg *pg, short what)
{
	if (pg->ev_sock)
		event_free(pg->ev_sock);
	pg->ev_sock = NULL;
	pg->sock = PQsocket(pg->conn);
	if (pg->sock < 0)
		return;
	pg->ev_sock = event_new(pg->base, pg->sock, what, on_socket, pg);
	event_add(pg->ev_sock, NULL);
}

static void
continue_connect(struct apg *pg)
{
	switch (PQconnectPoll(pg->conn)) {
	case PGRES_POLLING_READING:
		watch_socket(pg, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		watch_socket(pg, EV_WRITE);
		return;
	case PGRES_POLLING_OK:
		pg->connecting = false;
		pg->ready = true;
		if (PQsetnonblocking(pg->conn, 1) == -1) {
			drop(pg, "cannot make the connection non-blocking");
			return;
		}
		watch_socket(pg, EV_READ | EV_PERSIST);
		/* The schema check is the first query on every new connection. */
		pg->schema_ok = false;
		(void)apg_query(pg,
		                "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL, on_schema, pg);
		return;
	default: {
		char msg[512];
		util_strlcpy(msg, PQerrorMessage(pg->conn), sizeof(msg));
		util_rtrim(msg);
		log_warnx("postgresql: cannot connect: %s", msg);
		drop(pg, msg);
	}
	}
}

/* Reads what arrived and delivers finished results, in order. */
static void
read_results(struct apg *pg)
{
	if (PQconsumeInput(pg->conn) == 0) {
		char msg[512];
		util_strlcpy(msg, PQerrorMessage(pg->conn), sizeof(msg));
		util_rtrim(msg);
		log_warnx("postgresql: connection lost: %s", msg);
		drop(pg, msg);
		return;
	}
	while (pg->in_flight && !PQisBusy(pg->conn)) {
		PGresult *res, *last = NULL;
		/* One query may yield several results; keep the last, fail on any error. */
		char err[512] = "";
		while ((res = PQgetResult(pg->conn)) != NULL) {
			ExecStatusType st = PQresultStatus(res);
			if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && err[0] == '\0') {
				util_strlcpy(err, PQresultErrorMessage(res), sizeof(err));
				util_rtrim(err);
			}
			PQclear(last);
			last = res;
			if (PQisBusy(pg->conn))
				break;
		}
		if (res != NULL) { /* more to come for this query */
			PQclear(last);
			return;
		}
		struct query *q = pg->head;
		pg->head = q->next;
		if (pg->head == NULL)
			pg->tail = NULL;
		pg->in_flight = false;
		if (q->cb)
			q->cb(err[0] ? NULL : last, err[0] ? err : NULL, q->priv);
		PQclear(last);
		free_query(q);
		pump(pg);
	}
}

static void
on_socket(evutil_socket_t fd, short what, void *arg)
{
	struct apg *pg = arg;

	(void)fd, (void)what;
	if (pg->connecting) {
		continue_connect(pg);
		return;
	}
	if (pg->conn == NULL)
		return;
	if (what & EV_WRITE) {
		/* Finish sending a large query, then wait for its answer. */
		if (PQflush(pg->conn) == 0)
			watch_socket(pg, EV_READ | EV_PERSIST);
		return;
	}
	read_results(pg);
}

/* Sends the next queued query if none is in flight. */
static void
pump(struct apg *pg)
{
	struct query *q = pg->head;

	if (!pg->ready || pg->in_flight || q == NULL)
		return;
	if (PQsendQueryParams(pg->conn, q->sql, q->nparams, NULL, (const char *const *)q->params, NULL, NULL, 0) == 0) {
		char msg[512];
		util_strlcpy(msg, PQerrorMessage(pg->conn), sizeof(msg));
		util_rtrim(msg);
		drop(pg, msg);
		return;
	}
	pg->in_flight = true;
	q->sent_ms = util_mono_ms();
	int f = PQflush(pg->conn);
	if (f == 1)
		watch_socket(pg, EV_WRITE | EV_PERSIST);
	else if (f == -1)
		drop(pg, "sending a query failed");
}

int
apg_query(struct apg *pg, const char *sql, int nparams, const char *const *params, apg_cb *cb, void *priv)
{
	struct query *q;

	if (!pg->ready)
		return -1;
	q = xcalloc(1, sizeof(*q));
	q->sql = xstrdup(sql);
	q->nparams = nparams;
	q->params = xcalloc((size_t)(nparams ? nparams : 1), sizeof(char *));
	for (int i = 0; i < nparams; i++)
		q->params[i] = params[i] ? xstrdup(params[i]) : NULL;
	q->cb = cb;
	q->priv = priv;
	if (pg->tail)
		pg->tail->next = q;
	else
		pg->head = q;
	pg->tail = q;
	pump(pg);
	return 0;
}

static void
start_connect(struct apg *pg)
{
	char timeout[16], options[96];
	const char *k[8], *v[8];
	int n = 0;

	snprintf(timeout, sizeof(timeout), "%d", pg->cfg->database.connect_timeout);
	snprintf(options, sizeof(options), "-c statement_timeout=%d -c TimeZone=UTC",
	         pg->cfg->database.statement_timeout);
	k[n] = "dbname", v[n++] = pg->cfg->database.url;
	k[n] = "connect_timeout", v[n++] = timeout;
	k[n] = "options", v[n++] = options;
	k[n] = "application_name", v[n++] = "outreachd";
	k[n] = "client_encoding", v[n++] = "UTF8";
	if (pg->cfg->database.password)
		k[n] = "password", v[n++] = pg->cfg->database.password;
	k[n] = NULL, v[n] = NULL;

	pg->conn = PQconnectStartParams(k, v, 1);
	if (pg->conn == NULL || PQstatus(pg->conn) == CONNECTION_BAD) {
		log_warnx("postgresql: cannot start a connection: %s",
		          pg->conn ? PQerrorMessage(pg->conn) : "out of memory");
		drop(pg, "cannot connect");
		return;
	}
	pg->connecting = true;
	pg->connect_started_ms = util_mono_ms();
	continue_connect(pg);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	start_connect(arg);
}

/* Timeouts the asynchronous API does not enforce: connect (connect_timeout) and a reply that takes
 * longer than statement_timeout plus a grace period (the server should have cancelled it). */
static void
on_watch(evutil_socket_t fd, short what, void *arg)
{
	struct apg *pg = arg;
	int64_t now = util_mono_ms();

	(void)fd, (void)what;
	if (pg->connecting && now - pg->connect_started_ms > (int64_t)pg->cfg->database.connect_timeout * 1000) {
		log_warnx("postgresql: connect timed out after %d s", pg->cfg->database.connect_timeout);
		drop(pg, "connect timed out");
		return;
	}
	int64_t limit = pg->cfg->database.statement_timeout ? pg->cfg->database.statement_timeout + 5000 : 0;
	if (pg->in_flight && limit && now - pg->head->sent_ms > limit) {
		log_warnx("postgresql: no answer for %lld ms: dropping the connection", (long long)limit);
		drop(pg, "query timed out");
	}
}

struct apg *
apg_new(struct event_base *base, const struct cfg *cfg, apg_up_cb *up, void *up_priv)
{
	struct apg *pg = xcalloc(1, sizeof(*pg));
	struct timeval second = {1, 0};

	pg->base = base;
	pg->cfg = cfg;
	pg->up = up;
	pg->up_priv = up_priv;
	pg->backoff_ms = 500;
	pg->ev_retry = evtimer_new(base, on_retry, pg);
	pg->ev_watch = event_new(base, -1, EV_PERSIST, on_watch, pg);
	event_add(pg->ev_watch, &second);
	start_connect(pg);
	return pg;
}

void
apg_free(struct apg *pg)
{
	if (pg == NULL)
		return;
	event_free(pg->ev_retry);
	pg->ev_retry = NULL;
	drop(pg, "shutting down");
	event_free(pg->ev_watch);
	free(pg);
}

void
apg_set_cfg(struct apg *pg, const struct cfg *cfg)
{
	pg->cfg = cfg;
}

bool
apg_ready(const struct apg *pg)
{
	return pg->ready;
}

bool
apg_schema_ok(const struct apg *pg)
{
	return pg->ready && pg->schema_ok;
}

unsigned long
apg_reconnects(const struct apg *pg)
{
	return pg->reconnects;
}
