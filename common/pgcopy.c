/* pgcopy: a COPY FROM STDIN text-format stream sent in chunks without blocking the reader (flat memory). */
#include "common/pgcopy.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Chunks queued in libpq and not yet taken by the socket before the sender waits for the server. */
#define PGCOPY_MAX_PENDING 8

static void
set_error(struct pgcopy *cp, const char *what, const char *msg, const char *state)
{
	size_t n;

	cp->failed = 1;
	snprintf(cp->errstr, sizeof(cp->errstr), "%s: %s", what, msg ? msg : "unknown error");
	n = strlen(cp->errstr);
	while (n > 0 && (cp->errstr[n - 1] == '\n' || cp->errstr[n - 1] == ' '))
		cp->errstr[--n] = '\0';
	util_strlcpy(cp->sqlstate, state ? state : "", sizeof(cp->sqlstate));
}

int
pgcopy_begin(struct pgcopy *cp, PGconn *conn, const char *sql)
{
	memset(cp, 0, sizeof(*cp));
	cp->conn = conn;
	PGresult *res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COPY_IN) {
		set_error(cp, "COPY", PQerrorMessage(conn), PQresultErrorField(res, PG_DIAG_SQLSTATE));
		PQclear(res);
		return -1;
	}
	PQclear(res);
	/* Non-blocking sends: the caller goes on filling the next chunk while the socket drains the last,
	 * so the server never waits for the reader (nor the reader for the server, up to a few chunks). */
	if (PQsetnonblocking(conn, 1) == -1) {
		set_error(cp, "COPY", PQerrorMessage(conn), NULL);
		(void)PQputCopyEnd(conn, "cannot send without blocking");
		while ((res = PQgetResult(conn)) != NULL)
			PQclear(res);
		return -1;
	}
	cp->cap = PGCOPY_CHUNK;
	cp->buf = xmalloc(cp->cap);
	return 0;
}

/* Sends what libpq holds; waits for the socket only when wait is set or too much is pending. */
static void
drain(struct pgcopy *cp, bool wait)
{
	int rc;

	while (!cp->failed && (rc = PQflush(cp->conn)) != 0) {
		if (rc == -1) {
			set_error(cp, "COPY", PQerrorMessage(cp->conn), NULL);
			return;
		}
		if (!wait && cp->pending < PGCOPY_MAX_PENDING) {
			cp->pending++;
			return;
		}
		struct pollfd pfd = {.fd = PQsocket(cp->conn), .events = POLLOUT | POLLIN};
		if (poll(&pfd, 1, -1) == -1 && errno != EINTR) {
			set_error(cp, "COPY", strerror(errno), NULL);
			return;
		}
		if ((pfd.revents & POLLIN) && PQconsumeInput(cp->conn) == 0) {
			set_error(cp, "COPY", PQerrorMessage(cp->conn), NULL);
			return;
		}
	}
	cp->pending = 0;
}

static void
flush(struct pgcopy *cp)
{
	if (cp->len && !cp->failed && PQputCopyData(cp->conn, cp->buf, (int)cp->len) != 1)
		set_error(cp, "COPY", PQerrorMessage(cp->conn), NULL);
	cp->len = 0;
	drain(cp, false);
}

void
pgcopy_field(struct pgcopy *cp, const char *v, bool last)
{
	size_t n = v ? strlen(v) : 0;

	if (cp->len + 2 * n + 3 > cp->cap) {
		flush(cp);
		if (2 * n + 3 > cp->cap) {
			cp->cap = 2 * n + 3;
			cp->buf = xrealloc(cp->buf, cp->cap);
		}
	}
	char *o = cp->buf + cp->len;
	if (n == 0) {
		*o++ = '\\';
		*o++ = 'N';
	} else {
		for (const char *s = v; *s; s++) {
			switch (*s) {
			case '\\': *o++ = '\\'; *o++ = '\\'; break;
			case '\t': *o++ = '\\'; *o++ = 't'; break;
			case '\n': *o++ = '\\'; *o++ = 'n'; break;
			case '\r': *o++ = '\\'; *o++ = 'r'; break;
			default: *o++ = *s;
			}
		}
	}
	*o++ = last ? '\n' : '\t';
	cp->len = (size_t)(o - cp->buf);
}

int
pgcopy_end(struct pgcopy *cp)
{
	flush(cp);
	drain(cp, true);
	if (!cp->failed && PQputCopyEnd(cp->conn, NULL) != 1)
		set_error(cp, "COPY", PQerrorMessage(cp->conn), NULL);
	drain(cp, true);
	if (PQsetnonblocking(cp->conn, 0) == -1 && !cp->failed)
		set_error(cp, "COPY", PQerrorMessage(cp->conn), NULL);
	PGresult *res;
	while ((res = PQgetResult(cp->conn)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_COPY_IN)
			set_error(cp, "COPY", PQresultErrorMessage(res), PQresultErrorField(res, PG_DIAG_SQLSTATE));
		bool copy_in = PQresultStatus(res) == PGRES_COPY_IN;
		PQclear(res);
		if (copy_in) /* the end could not be sent: give up on this COPY */
			break;
	}
	free(cp->buf);
	cp->buf = NULL;
	return cp->failed ? -1 : 0;
}

void
pgcopy_abort(struct pgcopy *cp, const char *why)
{
	cp->failed = 0;
	drain(cp, true);
	if (PQputCopyEnd(cp->conn, why) == 1)
		drain(cp, true);
	(void)PQsetnonblocking(cp->conn, 0);
	PGresult *res;
	while ((res = PQgetResult(cp->conn)) != NULL)
		PQclear(res);
	free(cp->buf);
	cp->buf = NULL;
	cp->failed = 1;
}
