/* db: a thin blocking libpq layer: connect with timeout and backoff, parameterized queries, transactions. */
#ifndef OUTREACH_DB_H
#define OUTREACH_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "common/cfg.h"
#include "common/util.h"

struct db;

/* One connection attempt with database.connect_timeout and database.statement_timeout; the session
 * runs in UTC. Returns NULL with a message in err (the URL's password is never in it). */
struct db *db_connect(const struct cfg *c, const char *appname, char *err, size_t errlen) MUSTCHECK;

/* Like db_connect, retrying with exponential backoff (0.5 s doubling to 30 s) for at most
 * max_wait_ms (0: one attempt; -1: until *stop becomes true). Logs each failure as a warning. */
struct db *db_connect_retry(const struct cfg *c, const char *appname, int max_wait_ms, volatile int *stop,
                            char *err, size_t errlen) MUSTCHECK;
void db_free(struct db *db);

/* Runs a parameterized statement (values only as $1..$n, text format, NULL for SQL NULL).
 * Returns the result (caller frees with PQclear) or NULL with the error kept in db. */
PGresult *db_query(struct db *db, const char *sql, int nparams, const char *const *params) MUSTCHECK;
/* Like db_query, the statement prepared as name the first time this connection runs it (parsed
 * and planned once per connection, not per call); sql must be the same text on every call with that
 * name. Beyond DB_MAX_PREPARED names a connection runs the others unprepared. */
#define DB_MAX_PREPARED 16
PGresult *db_query_prepared(struct db *db, const char *name, const char *sql, int nparams,
                            const char *const *params) MUSTCHECK;
/* Like db_query for statements whose rows are not wanted; 0 or -1. */
int db_exec(struct db *db, const char *sql, int nparams, const char *const *params) MUSTCHECK;

#define DB_ARGS(...) (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *)), (const char *[]){__VA_ARGS__}

int db_begin(struct db *db) MUSTCHECK;
int db_commit(struct db *db) MUSTCHECK;
void db_rollback(struct db *db);

/* Runs a script of several statements with no parameters (migrations only); 0 or -1. */
int db_exec_script(struct db *db, const char *sql) MUSTCHECK;

/* The last error: message, SQLSTATE ("" when none), and whether the connection itself was lost
 * (the work may succeed later: retry) rather than the statement refused. */
const char *db_error(const struct db *db);
const char *db_sqlstate(const struct db *db);
bool db_lost(const struct db *db);
/* Re-establishes a lost connection once; 0 or -1. */
int db_reset(struct db *db) MUSTCHECK;

/* Borrowed: the underlying connection. */
PGconn *db_conn(struct db *db);

#endif
