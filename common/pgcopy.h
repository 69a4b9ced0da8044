/* pgcopy: a COPY FROM STDIN binary-format stream sent in chunks without blocking the reader (flat memory). */
#ifndef OUTREACH_PGCOPY_H
#define OUTREACH_PGCOPY_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define PGCOPY_CHUNK (64 * 1024) /* bytes handed to PQputCopyData at a time */

/*
 * The binary format spares the server the parsing of text: each value goes in its type's wire form
 * (text as its bytes, a date as days since 2000-01-01), so the columns named in the COPY must have
 * exactly the types the caller writes (text, date, timestamptz). A row is pgcopy_row with its number
 * of fields, then that many values.
 */
struct pgcopy {
	PGconn *conn; /* borrowed; NULL only for a buffer that is never sent (pgcopy_init) */
	char *buf;
	size_t len, cap;
	int pending; /* chunks sent while the socket was still full */
	int failed; /* nonzero once sending failed; later calls do nothing */
	char errstr[512];
	char sqlstate[6]; /* of the server's error at pgcopy_end, "" when none */
};

/* Runs sql (a statement ending in COPY ... FROM STDIN WITH (FORMAT binary), no parameters) and prepares
 * cp, the binary header written. 0, or -1 with the message in cp->errstr (and cp->sqlstate). */
int pgcopy_begin(struct pgcopy *cp, PGconn *conn, const char *sql) MUSTCHECK;
/* Prepares cp with the binary header in its buffer, for conn (NULL: only to look at the bytes). */
void pgcopy_init(struct pgcopy *cp, PGconn *conn);
/* Starts a row of nfields values. A failure to send is kept for pgcopy_end. */
void pgcopy_row(struct pgcopy *cp, int nfields);
/* One text value: NULL or "" as NULL, otherwise its bytes as they are (the server checks the encoding). */
void pgcopy_text(struct pgcopy *cp, const char *v);
void pgcopy_null(struct pgcopy *cp);
/* A jsonb value from its JSON text (NULL or "" as NULL); the server parses and checks it. */
void pgcopy_jsonb(struct pgcopy *cp, const char *json);
/* A one-dimensional text[] of n values (a NULL pointer is a NULL element, "" an empty string), or a
 * boolean[] of n values; n == 0 is an empty array. The column must have exactly that array type. */
void pgcopy_text_array(struct pgcopy *cp, const char *const *v, int n);
void pgcopy_bool_array(struct pgcopy *cp, const bool *v, int n);
/* A date (days since 2000-01-01, see pgcopy_days) or a timestamptz at midnight UTC of that day. */
void pgcopy_date(struct pgcopy *cp, int32_t days);
void pgcopy_timestamptz_day(struct pgcopy *cp, int32_t days);
/* Days from 2000-01-01 to the proleptic Gregorian date y-m-d; false when there is no such date. */
bool pgcopy_days(int y, int m, int d, int32_t *days);
/* Sends what is left and ends the COPY; 0, or -1 with the message in cp->errstr and the SQLSTATE in
 * cp->sqlstate (e.g. "23505" for a duplicate key). Frees the buffer either way. */
int pgcopy_end(struct pgcopy *cp) MUSTCHECK;
/* Abandons a COPY in progress (the server rolls it back); frees the buffer. */
void pgcopy_abort(struct pgcopy *cp, const char *why);

#endif
