/* Unit tests of the libpq layer's prepared statements, against the test PostgreSQL (OUTREACH_DATABASE_URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"

static struct db *
open_db(void)
{
	char err[512];
	struct cfg *c;
	struct db *db;

	if (getenv("OUTREACH_DATABASE_URL") == NULL)
		fail_msg("OUTREACH_DATABASE_URL is not set: run the unit tests through `make test`");
	setenv("OUTREACH_CONFIG", "/dev/null", 1);
	c = cfg_load(NULL, err, sizeof(err));
	if (c == NULL)
		fail_msg("%s", err);
	db = db_connect(c, "test_db", err, sizeof(err));
	if (db == NULL)
		fail_msg("%s", err);
	cfg_free(c);
	return db;
}

/* The first column of the first row of a prepared statement's result, as an integer. */
static int
prepared_int(struct db *db, const char *name, const char *sql, const char *arg)
{
	PGresult *r = db_query_prepared(db, name, sql, DB_ARGS(arg));
	int v;

	if (r == NULL)
		fail_msg("%s: %s", name, db_error(db));
	v = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

/* How many statements this connection has prepared on the server. */
static int
server_prepared(struct db *db)
{
	PGresult *r = db_query(db, "SELECT count(*) FROM pg_prepared_statements", 0, NULL);
	int v;

	if (r == NULL)
		fail_msg("pg_prepared_statements: %s", db_error(db));
	v = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static void
prepared_once_per_connection_with_fresh_values(void **state)
{
	struct db *db = open_db();

	(void)state;
	assert_int_equal(prepared_int(db, "twice", "SELECT $1::int * 2", "21"), 42);
	assert_int_equal(prepared_int(db, "twice", "SELECT $1::int * 2", "5"), 10);
	assert_int_equal(prepared_int(db, "plus_one", "SELECT $1::int + 1", "5"), 6);
	assert_int_equal(server_prepared(db), 2);
	/* A reset connection has none: they are prepared again on first use. */
	assert_int_equal(db_reset(db), 0);
	assert_int_equal(server_prepared(db), 0);
	assert_int_equal(prepared_int(db, "twice", "SELECT $1::int * 2", "4"), 8);
	assert_int_equal(server_prepared(db), 1);
	db_free(db);
}

static void
a_statement_that_fails_to_prepare_reports_and_is_tried_again(void **state)
{
	struct db *db = open_db();

	(void)state;
	PGresult *r = db_query_prepared(db, "bad", "SELECT $1::int FROM no_such_table", DB_ARGS("1"));
	assert_null(r);
	assert_non_null(strstr(db_error(db), "no_such_table"));
	assert_int_equal(server_prepared(db), 0);
	/* An error at execution keeps the statement prepared and reports the error. */
	r = db_query_prepared(db, "div", "SELECT 10 / $1::int", DB_ARGS("0"));
	assert_null(r);
	assert_non_null(strstr(db_error(db), "division by zero"));
	assert_int_equal(prepared_int(db, "div", "SELECT 10 / $1::int", "5"), 2);
	assert_int_equal(server_prepared(db), 1);
	db_free(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(prepared_once_per_connection_with_fresh_values),
	    cmocka_unit_test(a_statement_that_fails_to_prepare_reports_and_is_tried_again),
	};

	return cmocka_run_group_tests_name("db", tests, NULL, NULL);
}
