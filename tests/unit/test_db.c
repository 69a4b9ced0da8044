/* Unit tests of the libpq layer's prepared statements and binary COPY, against the test PostgreSQL
 * (OUTREACH_DATABASE_URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/pgcopy.h"

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

/* Odd values through the real server: they come back as they were sent, across many chunks (row i has
 * identity i). */
static void
test_pgcopy_round_trip(void **state)
{
	static const char *const texts[] = {NULL, "", "Zo\xc3\xab \xe6\x9d\xb1\xe4\xba\xac", "a\tb\\c\nd\re",
	                                    "\\N", "O'NEIL \"JR\""};
	static const int dates[][3] = {{1900, 3, 1}, {1999, 12, 31}, {2024, 2, 29}, {9999, 12, 31}};
	const int nrows = 20000;
	struct db *db = open_db();
	struct pgcopy cp;
	char *big = malloc(3 * PGCOPY_CHUNK);
	int32_t days;

	(void)state;
	assert_non_null(big);
	memset(big, 'x', 3 * PGCOPY_CHUNK - 1);
	big[3 * PGCOPY_CHUNK - 1] = '\0';
	assert_int_equal(db_exec(db, "CREATE TEMP TABLE pgcopy_t (i int GENERATED ALWAYS AS IDENTITY (MINVALUE 0 START 0), t text, d date, "
	                         "ts timestamptz, j jsonb)", 0,
	                         NULL),
	                 0);
	assert_int_equal(pgcopy_begin(&cp, db_conn(db), "COPY pgcopy_t (t, d, ts, j) FROM STDIN WITH (FORMAT binary)"),
	                 0);
	for (int i = 0; i < nrows; i++) {
		const int *ymd = dates[i % 4];
		assert_true(pgcopy_days(ymd[0], ymd[1], ymd[2], &days));
		pgcopy_row(&cp, 4);
		pgcopy_text(&cp, i == 7 ? big : texts[i % 6]);
		pgcopy_date(&cp, days);
		if (i % 3 == 0)
			pgcopy_null(&cp);
		else
			pgcopy_timestamptz_day(&cp, days);
		pgcopy_jsonb(&cp, i % 2 ? "{\"code\": \"207R00000X\", \"name\": \"Zo\xc3\xab\"}" : NULL);
	}
	assert_int_equal(pgcopy_end(&cp), 0);

	PGresult *res = db_query(db,
	                         "SELECT count(*), count(*) FILTER (WHERE t IS NULL), count(DISTINCT t), "
	                         "min(d)::text, max(d)::text, count(ts), max(ts AT TIME ZONE 'UTC')::text, count(j) "
	                         "FROM pgcopy_t",
	                         0, NULL);
	assert_non_null(res);
	assert_string_equal(PQgetvalue(res, 0, 0), "20000");
	assert_string_equal(PQgetvalue(res, 0, 1), "6667"); /* NULL and "" */
	assert_string_equal(PQgetvalue(res, 0, 2), "5");    /* four other texts and the big one */
	assert_string_equal(PQgetvalue(res, 0, 3), "1900-03-01");
	assert_string_equal(PQgetvalue(res, 0, 4), "9999-12-31");
	assert_string_equal(PQgetvalue(res, 0, 5), "13333");
	assert_string_equal(PQgetvalue(res, 0, 6), "9999-12-31 00:00:00");
	assert_string_equal(PQgetvalue(res, 0, 7), "10000");
	PQclear(res);
	for (int i = 2; i < 6; i++) { /* 0 and 1 (NULL, "") are among the NULLs counted */
		char arg[16];
		snprintf(arg, sizeof(arg), "%d", i);
		res = db_query(db, "SELECT t, d::text, j->>'name' FROM pgcopy_t WHERE i = $1::int", DB_ARGS(arg));
		assert_non_null(res);
		assert_string_equal(PQgetvalue(res, 0, 0), texts[i]);
		PQclear(res);
	}
	res = db_query(db, "SELECT length(t), d::text, (ts AT TIME ZONE 'UTC')::text, j->>'name' FROM pgcopy_t WHERE i = 7",
	               0, NULL);
	assert_non_null(res);
	assert_int_equal(atoi(PQgetvalue(res, 0, 0)), 3 * PGCOPY_CHUNK - 1);
	assert_string_equal(PQgetvalue(res, 0, 1), "9999-12-31");
	assert_string_equal(PQgetvalue(res, 0, 2), "9999-12-31 00:00:00");
	assert_string_equal(PQgetvalue(res, 0, 3), "Zo\xc3\xab");
	PQclear(res);
	free(big);
	db_free(db);
}

/* Arrays in binary form come back as the server reads them; an array of another element type is refused. */
static void
test_pgcopy_arrays(void **state)
{
	static const char *const codes[] = {"207R00000X", NULL, "", "Zo\xc3\xab, \"{x}\""};
	static const bool flags[] = {false, true, false};
	static const char *const want[][2] = {
	    {"{207R00000X}", "{f}"},
	    {"{207R00000X,NULL}", "{f,t}"},
	    {"{207R00000X,NULL,\"\"}", "{f,t,f}"},
	    {"{207R00000X,NULL,\"\",\"Zo\xc3\xab, \\\"{x}\\\"\"}", NULL},
	    {"{}", "{}"},
	};
	struct db *db = open_db();
	struct pgcopy cp;

	(void)state;
	assert_int_equal(db_exec(db, "CREATE TEMP TABLE pgcopy_a (i int GENERATED ALWAYS AS IDENTITY, a text[], b boolean[])",
	                         0, NULL),
	                 0);
	assert_int_equal(pgcopy_begin(&cp, db_conn(db), "COPY pgcopy_a (a, b) FROM STDIN WITH (FORMAT binary)"), 0);
	for (int n = 1; n <= 4; n++) {
		pgcopy_row(&cp, 2);
		pgcopy_text_array(&cp, codes, n);
		if (n <= 3)
			pgcopy_bool_array(&cp, flags, n);
		else
			pgcopy_null(&cp);
	}
	pgcopy_row(&cp, 2);
	pgcopy_text_array(&cp, NULL, 0);
	pgcopy_bool_array(&cp, NULL, 0);
	assert_int_equal(pgcopy_end(&cp), 0);
	PGresult *res = db_query(db, "SELECT a::text, b::text, cardinality(a) FROM pgcopy_a ORDER BY i", 0, NULL);
	assert_non_null(res);
	assert_int_equal(PQntuples(res), 5);
	for (int r = 0; r < 5; r++) {
		assert_string_equal(PQgetvalue(res, r, 0), want[r][0]);
		if (want[r][1])
			assert_string_equal(PQgetvalue(res, r, 1), want[r][1]);
		else
			assert_true(PQgetisnull(res, r, 1));
	}
	PQclear(res);

	assert_int_equal(db_exec(db, "CREATE TEMP TABLE pgcopy_i (a int[])", 0, NULL), 0);
	assert_int_equal(pgcopy_begin(&cp, db_conn(db), "COPY pgcopy_i FROM STDIN WITH (FORMAT binary)"), 0);
	pgcopy_row(&cp, 1);
	pgcopy_text_array(&cp, codes, 1);
	assert_int_equal(pgcopy_end(&cp), -1);
	assert_non_null(strstr(cp.errstr, "array element type 25 (text)"));
	db_free(db);
}

/* A value the column's type refuses ends the COPY with the server's message and SQLSTATE. */
static void
test_pgcopy_refused(void **state)
{
	struct db *db = open_db();
	struct pgcopy cp;

	(void)state;
	assert_int_equal(db_exec(db, "CREATE TEMP TABLE pgcopy_r (j jsonb)", 0, NULL), 0);
	assert_int_equal(pgcopy_begin(&cp, db_conn(db), "COPY pgcopy_r FROM STDIN WITH (FORMAT binary)"), 0);
	pgcopy_row(&cp, 1);
	pgcopy_jsonb(&cp, "{not json");
	assert_int_equal(pgcopy_end(&cp), -1);
	assert_string_equal(cp.sqlstate, "22P02");
	assert_non_null(strstr(cp.errstr, "json"));
	db_free(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(prepared_once_per_connection_with_fresh_values),
	    cmocka_unit_test(a_statement_that_fails_to_prepare_reports_and_is_tried_again),
	    cmocka_unit_test(test_pgcopy_round_trip),
	    cmocka_unit_test(test_pgcopy_arrays),
	    cmocka_unit_test(test_pgcopy_refused),
	};

	return cmocka_run_group_tests_name("db", tests, NULL, NULL);
}
