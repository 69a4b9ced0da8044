/* pgcopy: a COPY FROM STDIN binary-format stream sent in chunks without blocking the reader (flat memory). */
#include "common/pgcopy.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdint.h>
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

/* The binary COPY header: signature, flags (none), header extension length (none). */
static const char copy_header[19] = "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0";

void
pgcopy_init(struct pgcopy *cp, PGconn *conn)
{
	memset(cp, 0, sizeof(*cp));
	cp->conn = conn;
	cp->cap = PGCOPY_CHUNK;
	cp->buf = xmalloc(cp->cap);
	memcpy(cp->buf, copy_header, sizeof(copy_header));
	cp->len = sizeof(copy_header);
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
	pgcopy_init(cp, conn);
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

/* Room for n more bytes in the buffer, sending what it holds when full. */
static char *
reserve(struct pgcopy *cp, size_t n)
{
	if (cp->len + n > cp->cap) {
		if (cp->conn)
			flush(cp);
		if (cp->len + n > cp->cap) {
			cp->cap = cp->len + n > 2 * cp->cap ? cp->len + n : 2 * cp->cap;
			cp->buf = xrealloc(cp->buf, cp->cap);
		}
	}
	return cp->buf + cp->len;
}

static char *
put32(char *o, uint32_t v)
{
	o[0] = (char)(v >> 24);
	o[1] = (char)(v >> 16);
	o[2] = (char)(v >> 8);
	o[3] = (char)v;
	return o + 4;
}

void
pgcopy_row(struct pgcopy *cp, int nfields)
{
	char *o = reserve(cp, 2);
	o[0] = (char)(nfields >> 8);
	o[1] = (char)nfields;
	cp->len += 2;
}

void
pgcopy_null(struct pgcopy *cp)
{
	put32(reserve(cp, 4), UINT32_MAX); /* length -1 */
	cp->len += 4;
}

void
pgcopy_text(struct pgcopy *cp, const char *v)
{
	size_t n = v ? strlen(v) : 0;

	if (n == 0) {
		pgcopy_null(cp);
		return;
	}
	char *o = put32(reserve(cp, 4 + n), (uint32_t)n);
	memcpy(o, v, n);
	cp->len += 4 + n;
}

void
pgcopy_jsonb(struct pgcopy *cp, const char *json)
{
	size_t n = json ? strlen(json) : 0;

	if (n == 0) {
		pgcopy_null(cp);
		return;
	}
	char *o = put32(reserve(cp, 5 + n), (uint32_t)(n + 1));
	*o++ = 1; /* the version of jsonb's wire form: the JSON text follows */
	memcpy(o, json, n);
	cp->len += 5 + n;
}

/* The element types' OIDs, fixed in PostgreSQL's catalog (pg_type.dat): array_recv checks them. */
#define PGCOPY_BOOLOID 16
#define PGCOPY_TEXTOID 25

/* An array's header: its total length, one dimension of n elements from 1 (none when empty), no NULLs
 * flag set, the element type. Returns where the elements go. */
static char *
array_header(struct pgcopy *cp, size_t bytes, int n, bool nulls, uint32_t elemtype)
{
	size_t head = n > 0 ? 20 : 12;
	char *o = put32(reserve(cp, 4 + head + bytes), (uint32_t)(head + bytes));
	o = put32(o, n > 0 ? 1 : 0); /* dimensions */
	o = put32(o, nulls);
	o = put32(o, elemtype);
	if (n > 0) {
		o = put32(o, (uint32_t)n);
		o = put32(o, 1); /* lower bound */
	}
	cp->len += 4 + head + bytes;
	return o;
}

void
pgcopy_text_array(struct pgcopy *cp, const char *const *v, int n)
{
	size_t bytes = 0;
	bool nulls = false;

	for (int i = 0; i < n; i++) {
		bytes += 4 + (v[i] ? strlen(v[i]) : 0);
		nulls |= v[i] == NULL;
	}
	char *o = array_header(cp, bytes, n, nulls, PGCOPY_TEXTOID);
	for (int i = 0; i < n; i++) {
		if (v[i] == NULL) {
			o = put32(o, UINT32_MAX);
			continue;
		}
		size_t len = strlen(v[i]);
		o = put32(o, (uint32_t)len);
		memcpy(o, v[i], len);
		o += len;
	}
}

void
pgcopy_bool_array(struct pgcopy *cp, const bool *v, int n)
{
	char *o = array_header(cp, 5 * (size_t)n, n, false, PGCOPY_BOOLOID);
	for (int i = 0; i < n; i++) {
		o = put32(o, 1);
		*o++ = v[i] ? 1 : 0;
	}
}

void
pgcopy_date(struct pgcopy *cp, int32_t days)
{
	char *o = put32(reserve(cp, 8), 4);
	put32(o, (uint32_t)days);
	cp->len += 8;
}

void
pgcopy_timestamptz_day(struct pgcopy *cp, int32_t days)
{
	uint64_t us = (uint64_t)((int64_t)days * INT64_C(86400000000)); /* microseconds since 2000-01-01 UTC */
	char *o = put32(reserve(cp, 12), 8);
	o = put32(o, (uint32_t)(us >> 32));
	put32(o, (uint32_t)us);
	cp->len += 12;
}

bool
pgcopy_days(int y, int m, int d, int32_t *days)
{
	if (!util_date_exists(y, m, d))
		return false;
	/* Days since 0000-03-01 of a year starting in March (the leap day last), then moved to 2000-01-01. */
	int yy = m <= 2 ? y - 1 : y, mm = m <= 2 ? m + 9 : m - 3;
	long n = 365L * yy + yy / 4 - yy / 100 + yy / 400 + (153 * mm + 2) / 5 + d - 1;
	*days = (int32_t)(n - 730425); /* 2000-01-01 is day 730425 of that count */
	return true;
}

int
pgcopy_end(struct pgcopy *cp)
{
	char *o = reserve(cp, 2); /* the trailer: a field count of -1 */
	o[0] = o[1] = (char)0xff;
	cp->len += 2;
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
