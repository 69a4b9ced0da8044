/* db: a thin blocking libpq layer: connect with timeout and backoff, parameterized queries, transactions. */
#include "common/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct db {
	PGconn *conn;
	char *url;
	char *password;
	char *appname;
	int connect_timeout;
	int statement_timeout;
	int err;
	bool lost;
	char sqlstate[6];
	char errstr[512];
	char *prepared[DB_MAX_PREPARED]; /* the statements prepared on this connection, by name */
	int nprepared;
};

/* Forgets the statements prepared on the connection (it was reset). */
static void
forget_prepared(struct db *db)
{
	for (int i = 0; i < db->nprepared; i++)
		free(db->prepared[i]);
	db->nprepared = 0;
}

static void
set_error(struct db *db, const char *what, const PGresult *res)
{
	const char *msg = res ? PQresultErrorMessage(res) : NULL;
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (msg == NULL || *msg == '\0')
		msg = PQerrorMessage(db->conn);
	db->err = 1;
	snprintf(db->errstr, sizeof(db->errstr), "%s%s%s", what ? what : "", what ? ": " : "", msg);
	util_rtrim(db->errstr);
	util_strlcpy(db->sqlstate, state ? state : "", sizeof(db->sqlstate));
	/* Class 08 is connection trouble; 57P0x is the server shutting down. */
	db->lost = PQstatus(db->conn) != CONNECTION_OK || strncmp(db->sqlstate, "08", 2) == 0 ||
	           strncmp(db->sqlstate, "57P0", 4) == 0;
}

static PGconn *
open_conn(const struct db *db)
{
	char timeout[16], options[96];
	const char *k[8], *v[8];
	int n = 0;

	snprintf(timeout, sizeof(timeout), "%d", db->connect_timeout);
	snprintf(options, sizeof(options), "-c statement_timeout=%d -c TimeZone=UTC", db->statement_timeout);
	k[n] = "dbname", v[n++] = db->url;
	k[n] = "connect_timeout", v[n++] = timeout;
	k[n] = "options", v[n++] = options;
	k[n] = "application_name", v[n++] = db->appname;
	k[n] = "client_encoding", v[n++] = "UTF8";
	if (db->password)
		k[n] = "password", v[n++] = db->password;
	k[n] = NULL, v[n] = NULL;
	return PQconnectdbParams(k, v, 1);
}

/* Names the server we reached or tried, never the password. */
static void
describe(PGconn *conn, char *buf, size_t len)
{
	const char *host = PQhost(conn), *port = PQport(conn), *name = PQdb(conn);

	snprintf(buf, len, "postgresql %s%s%s/%s", host && *host ? host : "(default)", port && *port ? ":" : "",
	         port ? port : "", name ? name : "?");
}

/* Server notices ("relation already exists, skipping") are debug chatter, not warnings. */
static void
on_notice(void *arg, const char *message)
{
	char line[512];

	(void)arg;
	util_strlcpy(line, message, sizeof(line));
	util_rtrim(line);
	log_debug("postgresql: %s", line);
}

struct db *
db_connect(const struct cfg *c, const char *appname, char *err, size_t errlen)
{
	struct db *db = xcalloc(1, sizeof(*db));

	db->url = xstrdup(c->database.url);
	db->password = c->database.password ? xstrdup(c->database.password) : NULL;
	db->appname = xstrdup(appname);
	db->connect_timeout = c->database.connect_timeout;
	db->statement_timeout = c->database.statement_timeout;
	db->conn = open_conn(db);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		char where[300] = "postgresql";
		if (db->conn)
			describe(db->conn, where, sizeof(where));
		snprintf(err, errlen, "%s: %s", where, db->conn ? PQerrorMessage(db->conn) : "out of memory");
		util_rtrim(err);
		db_free(db);
		return NULL;
	}
	PQsetNoticeProcessor(db->conn, on_notice, NULL);
	return db;
}

struct db *
db_connect_retry(const struct cfg *c, const char *appname, int max_wait_ms, volatile int *stop, char *err,
                 size_t errlen)
{
	int64_t start = util_mono_ms();
	int64_t delay = 500;

	for (;;) {
		struct db *db = db_connect(c, appname, err, errlen);
		if (db)
			return db;
		int64_t waited = util_mono_ms() - start;
		if (max_wait_ms == 0 || (max_wait_ms > 0 && waited + delay > max_wait_ms) || (stop && *stop))
			return NULL;
		log_warnx("%s; retrying in %lld ms", err, (long long)delay);
		util_sleep_ms(delay);
		if (stop && *stop)
			return NULL;
		delay = delay * 2 > 30000 ? 30000 : delay * 2;
	}
}

void
db_free(struct db *db)
{
	if (db == NULL)
		return;
	if (db->conn)
		PQfinish(db->conn);
	forget_prepared(db);
	if (db->password) {
		explicit_bzero(db->password, strlen(db->password));
		free(db->password);
	}
	free(db->url);
	free(db->appname);
	free(db);
}

/* res as db_query returns it: kept when it succeeded, else cleared with the error recorded. */
static PGresult *
check_result(struct db *db, PGresult *res)
{
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		db->err = 0;
		db->lost = false;
		db->sqlstate[0] = '\0';
		db->errstr[0] = '\0';
		return res;
	}
	set_error(db, NULL, res);
	PQclear(res);
	return NULL;
}

PGresult *
db_query(struct db *db, const char *sql, int nparams, const char *const *params)
{
	return check_result(db, PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0));
}

PGresult *
db_query_prepared(struct db *db, const char *name, const char *sql, int nparams, const char *const *params)
{
	int i = 0;

	while (i < db->nprepared && strcmp(db->prepared[i], name) != 0)
		i++;
	if (i == db->nprepared) {
		if (db->nprepared == DB_MAX_PREPARED)
			return db_query(db, sql, nparams, params);
		PGresult *res = check_result(db, PQprepare(db->conn, name, sql, nparams, NULL));
		if (res == NULL)
			return NULL;
		PQclear(res);
		db->prepared[db->nprepared++] = xstrdup(name);
	}
	return check_result(db, PQexecPrepared(db->conn, name, nparams, params, NULL, NULL, 0));
}

int
db_exec(struct db *db, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = db_query(db, sql, nparams, params);

	if (res == NULL)
		return -1;
	PQclear(res);
	return 0;
}

int
db_begin(struct db *db)
{
	return db_exec(db, "BEGIN", 0, NULL);
}

int
db_commit(struct db *db)
{
	return db_exec(db, "COMMIT", 0, NULL);
}

void
db_rollback(struct db *db)
{
	PGresult *res = PQexec(db->conn, "ROLLBACK");
	PQclear(res);
}

int
db_exec_script(struct db *db, const char *sql)
{
	PGresult *res = PQexec(db->conn, sql);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
		PQclear(res);
		return 0;
	}
	set_error(db, NULL, res);
	PQclear(res);
	return -1;
}

const char *
db_error(const struct db *db)
{
	return db->errstr;
}

const char *
db_sqlstate(const struct db *db)
{
	return db->sqlstate;
}

bool
db_lost(const struct db *db)
{
	return db->lost;
}

int
db_reset(struct db *db)
{
	PQreset(db->conn);
	forget_prepared(db);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		set_error(db, "reconnect", NULL);
		return -1;
	}
	db->lost = false;
	return 0;
}

PGconn *
db_conn(struct db *db)
{
	return db->conn;
}
