/* pgcopy: a COPY FROM STDIN text-format stream sent in chunks without blocking the reader (flat memory). */
#ifndef OUTREACH_PGCOPY_H
#define OUTREACH_PGCOPY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

#define PGCOPY_CHUNK (64 * 1024) /* bytes handed to PQputCopyData at a time */

struct pgcopy {
	PGconn *conn; /* borrowed */
	char *buf;
	size_t len, cap;
	int pending; /* chunks sent while the socket was still full */
	int failed; /* nonzero once sending failed; later calls do nothing */
	char errstr[512];
	char sqlstate[6]; /* of the server's error at pgcopy_end, "" when none */
};

/* Runs sql (a statement ending in COPY ... FROM STDIN, no parameters) and prepares cp. 0, or -1 with
 * the message in cp->errstr (and cp->sqlstate). */
int pgcopy_begin(struct pgcopy *cp, PGconn *conn, const char *sql) MUSTCHECK;
/* Appends one text-format field: NULL or "" as \N, backslash, tab, CR and LF escaped; then a tab, or a
 * newline when last. A failure to send is kept for pgcopy_end. */
void pgcopy_field(struct pgcopy *cp, const char *v, bool last);
/* Sends what is left and ends the COPY; 0, or -1 with the message in cp->errstr and the SQLSTATE in
 * cp->sqlstate (e.g. "23505" for a duplicate key). Frees the buffer either way. */
int pgcopy_end(struct pgcopy *cp) MUSTCHECK;
/* Abandons a COPY in progress (the server rolls it back); frees the buffer. */
void pgcopy_abort(struct pgcopy *cp, const char *why);

#endif
