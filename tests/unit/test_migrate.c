/* Unit tests of the migration runner, against the test PostgreSQL (OUTREACH_DATABASE_URL). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/db.h"
#include "common/migrate.h"

static char dbname[64];
static char conninfo[1024];

/* Runs one statement on the database the harness gave (OUTREACH_DATABASE_URL at start, kept as
 * OUTREACH_TEST_ADMIN_URL because open_db points OUTREACH_DATABASE_URL at the scratch database). */
static void
admin_exec(const char *sql)
{
	PGconn *c = PQconnectdb(getenv("OUTREACH_TEST_ADMIN_URL"));
	PGresult *r;

	if (PQstatus(c) != CONNECTION_OK)
		fail_msg("cannot connect to OUTREACH_DATABASE_URL: %s", PQerrorMessage(c));
	r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		fail_msg("%s: %s", sql, PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
}

/* A fresh, empty database for each test, reached with the harness' host and user. */
static int
fresh_db(void **state)
{
	const char *url = getenv("OUTREACH_TEST_ADMIN_URL");
	char *err = NULL, sql[128];
	PQconninfoOption *opts;

	(void)state;
	if (url == NULL)
		fail_msg("OUTREACH_DATABASE_URL is not set: run the unit tests through `make test`");
	snprintf(dbname, sizeof(dbname), "outreach_mig_%d_%u", (int)getpid(), (unsigned)rand());
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
	admin_exec(sql);

	opts = PQconninfoParse(url, &err);
	assert_non_null(opts);
	conninfo[0] = '\0';
	for (PQconninfoOption *o = opts; o->keyword; o++) {
		if (o->val == NULL || strcmp(o->keyword, "dbname") == 0)
			continue;
		size_t n = strlen(conninfo);
		snprintf(conninfo + n, sizeof(conninfo) - n, "%s='%s' ", o->keyword, o->val);
	}
	size_t n = strlen(conninfo);
	snprintf(conninfo + n, sizeof(conninfo) - n, "dbname=%s", dbname);
	PQconninfoFree(opts);
	return 0;
}

static int
drop_db(void **state)
{
	char sql[128];

	(void)state;
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
	admin_exec(sql);
	return 0;
}

static struct db *
open_db(void)
{
	char err[512];
	struct cfg *c;
	struct db *db;

	setenv("OUTREACH_CONFIG", "/dev/null", 1);
	setenv("OUTREACH_DATABASE_URL", conninfo, 1);
	c = cfg_load(NULL, err, sizeof(err));
	if (c == NULL)
		fail_msg("%s", err);
	db = db_connect(c, "test_migrate", err, sizeof(err));
	if (db == NULL)
		fail_msg("%s", err);
	cfg_free(c);
	return db;
}

static int
scalar(struct db *db, const char *sql)
{
	PGresult *r = db_query(db, sql, 0, NULL);
	int v;

	if (r == NULL)
		fail_msg("%s: %s", sql, db_error(db));
	v = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

static void
embedded_scripts_are_ordered(void **state)
{
	char err[256];

	(void)state;
	assert_true(mig_nscripts > 0);
	assert_int_equal(mig_validate(mig_scripts, mig_nscripts, err, sizeof(err)), 0);
	assert_int_equal(mig_latest(), mig_scripts[mig_nscripts - 1].version);
	assert_string_equal(mig_scripts[0].name, "001_core.sql");

	const struct mig_script bad[] = {{2, "002_b.sql", ""}, {1, "001_a.sql", ""}};
	assert_int_equal(mig_validate(bad, 2, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "001_a.sql"));
	const struct mig_script dup[] = {{1, "001_a.sql", ""}, {1, "001_b.sql", ""}};
	assert_int_equal(mig_validate(dup, 2, err, sizeof(err)), -1);
}

static void
apply_twice_changes_nothing(void **state)
{
	struct db *db = open_db();
	char err[512];
	int applied, version;

	(void)state;
	assert_int_equal(mig_current(db, &version, err, sizeof(err)), 0);
	assert_int_equal(version, 0);
	assert_int_equal(mig_check(db, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "run `outreachctl migrate`"));

	assert_int_equal(mig_apply(db, mig_scripts, mig_nscripts, &applied, err, sizeof(err)), 0);
	assert_int_equal(applied, (int)mig_nscripts);
	assert_int_equal(mig_current(db, &version, err, sizeof(err)), 0);
	assert_int_equal(version, mig_latest());
	assert_int_equal(mig_check(db, err, sizeof(err)), 0);

	assert_int_equal(mig_apply(db, mig_scripts, mig_nscripts, &applied, err, sizeof(err)), 0);
	assert_int_equal(applied, 0);
	assert_int_equal(scalar(db, "SELECT count(*) FROM schema_migrations"), (int)mig_nscripts);
	assert_int_equal(scalar(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'referral_sources'"), 1);
	db_free(db);
}

static void
failed_migration_rolls_back(void **state)
{
	const struct mig_script scripts[] = {
	    {1, "001_a.sql", "CREATE TABLE a (x int);"},
	    {2, "002_b.sql", "CREATE TABLE b (x int);\nSELECT no_such_column FROM a;"},
	    {3, "003_c.sql", "CREATE TABLE c (x int);"},
	};
	struct db *db = open_db();
	char err[512];
	int applied, version;

	(void)state;
	assert_int_equal(mig_apply(db, scripts, 3, &applied, err, sizeof(err)), -1);
	assert_int_equal(applied, 1);
	assert_non_null(strstr(err, "migration 002_b.sql:"));
	assert_non_null(strstr(err, "no_such_column"));
	assert_int_equal(mig_current(db, &version, err, sizeof(err)), 0);
	assert_int_equal(version, 1);
	assert_int_equal(scalar(db, "SELECT count(*) FROM pg_tables WHERE tablename IN ('b', 'c')"), 0);
	/* The lock was released: a corrected run goes through. */
	const struct mig_script fixed[] = {scripts[0], {2, "002_b.sql", "CREATE TABLE b (x int);"}, scripts[2]};
	assert_int_equal(mig_apply(db, fixed, 3, &applied, err, sizeof(err)), 0);
	assert_int_equal(applied, 2);
	db_free(db);
}

static void
concurrent_runners_apply_once(void **state)
{
	/* Eight processes race; the advisory lock lets each migration run exactly once. */
	pid_t pids[8];

	(void)state;
	for (int i = 0; i < 8; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			struct db *db = open_db();
			char err[512];
			int applied;
			int rc = mig_apply(db, mig_scripts, mig_nscripts, &applied, err, sizeof(err));
			if (rc != 0)
				fprintf(stderr, "runner %d: %s\n", i, err);
			db_free(db);
			_exit(rc == 0 ? 0 : 1);
		}
	}
	for (int i = 0; i < 8; i++) {
		int status;
		assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	struct db *db = open_db();
	assert_int_equal(scalar(db, "SELECT count(*) FROM schema_migrations"), (int)mig_nscripts);
	db_free(db);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(embedded_scripts_are_ordered),
	    cmocka_unit_test_setup_teardown(apply_twice_changes_nothing, fresh_db, drop_db),
	    cmocka_unit_test_setup_teardown(failed_migration_rolls_back, fresh_db, drop_db),
	    cmocka_unit_test_setup_teardown(concurrent_runners_apply_once, fresh_db, drop_db),
	};
	const char *url = getenv("OUTREACH_DATABASE_URL");

	if (url)
		setenv("OUTREACH_TEST_ADMIN_URL", url, 1);
	srand((unsigned)getpid());
	return cmocka_run_group_tests_name("migrate", tests, NULL, NULL);
}
