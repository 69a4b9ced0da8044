/* jobs: outreachctl's job commands: enqueue, stats, retry-dead, discard-dead, ping. */
#ifndef OUTREACH_TOOLS_JOBS_H
#define OUTREACH_TOOLS_JOBS_H

#include <stdbool.h>

#include "common/cfg.h"
#include "common/db.h"

/* Each takes the command's own argv (argv[0] is the command name) and returns the exit status. */
int ctl_enqueue(const struct cfg *c, int argc, char **argv);
int ctl_stats(const struct cfg *c, int argc, char **argv);
int ctl_retry_dead(const struct cfg *c, int argc, char **argv);
int ctl_discard_dead(const struct cfg *c, int argc, char **argv);
int ctl_ping(const struct cfg *c, int argc, char **argv);

/* Parses epoch seconds ("1767254400.5") or UTC ISO 8601 ("2026-12-01T08:00:00Z",
 * "2026-12-01 08:00"); -1 when neither. */
int ctl_parse_time(const char *s, double *out);

/* Connects to the database (retrying for 10 s) and, when check_schema, refuses a schema older
 * or newer than this build; exits with a message on failure. */
struct db *ctl_db_connect(const struct cfg *c, bool check_schema);

/* db_query that exits with "WHAT: the error" when the statement fails; caller PQclears. */
PGresult *ctl_must_query(struct db *db, const char *what, const char *sql, int n, const char *const *params);

#endif
