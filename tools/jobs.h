/* jobs: outreachctl's job commands: enqueue, stats, retry-dead, discard-dead, ping. */
#ifndef OUTREACH_TOOLS_JOBS_H
#define OUTREACH_TOOLS_JOBS_H

#include <stdbool.h>
#include <stdio.h>

#include "common/cfg.h"
#include "common/db.h"
#include "common/rds.h"

/* Each takes the command's own argv (argv[0] is the command name) and returns the exit status. */
int ctl_enqueue(const struct cfg *c, int argc, char **argv);
int ctl_stats(const struct cfg *c, int argc, char **argv);
int ctl_retry_dead(const struct cfg *c, int argc, char **argv);
int ctl_discard_dead(const struct cfg *c, int argc, char **argv);
int ctl_ping(const struct cfg *c, int argc, char **argv);

/* Parses epoch seconds ("1767254400.5") or UTC ISO 8601 ("2026-12-01T08:00:00Z",
 * "2026-12-01 08:00"); -1 when neither. */
int ctl_parse_time(const char *s, double *out);

/* What the commands share. A command that fails logs why, releases what it holds and returns its
 * exit status (1) to main; these helpers log the failure themselves and leave the releasing to it. */

/* Connects to the database (retrying for 10 s) and, when check_schema, refuses a schema older
 * or newer than this build. NULL after logging why. Caller frees with db_free. */
struct db *ctl_db_open(const struct cfg *c, bool check_schema) MUSTCHECK;

/* Connects to Redis; NULL after logging why. Caller frees with redisFree. */
redisContext *ctl_redis_open(const struct cfg *c) MUSTCHECK;

/* db_query that logs "WHAT: the error" and returns NULL when the statement fails; caller PQclears. */
PGresult *ctl_query(struct db *db, const char *what, const char *sql, int n, const char *const *params) MUSTCHECK;

/* printf for text a human reads on a terminal: what it prints (names and texts from the database or
 * Redis, which other applications write) has its control characters shown as util_visible shows
 * them, line feeds and tabs kept. Not for CSV or JSON, which have their own escaping. */
void ctl_printf(const char *fmt, ...) PRINTFLIKE(1, 2);

/* s as a cell of a text table shows it: as ctl_printf shows text, on one line (a line feed, carriage
 * return or tab becomes a space). The caller frees it. */
char *ctl_cell_text(const char *s);

/* Prints shown (a ctl_cell_text) padded with spaces to width terminal columns (util_text_width), as
 * printf's %*s pads bytes: a negative width pads on the right, a positive one on the left, 0 not at
 * all. A name with accents or escapes keeps the columns after it in line, where printf counted bytes. */
void ctl_cell_pad(FILE *out, const char *shown, int width);

/* Prints one row of a text table to stdout: indent, then the n cells (NULL shows as nothing), each
 * a ctl_cell_text padded by ctl_cell_pad to width[i], parted by one space, then a line feed. */
void ctl_row(const char *indent, size_t n, const int *width, const char *const *cell);

#endif
