/* migrate: the numbered SQL migrations built into every binary, applied in order under a lock. */
#include "common/migrate.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/log.h"

/* pg_advisory_lock key shared by every migration runner: "outr" "mig". */
#define MIG_LOCK_KEY "7310575183176147303"

int
mig_latest(void)
{
	return mig_nscripts ? mig_scripts[mig_nscripts - 1].version : 0;
}

int
mig_validate(const struct mig_script *s, size_t n, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i].version <= 0) {
			snprintf(err, errlen, "migration %s: version must be a positive number", s[i].name);
			return -1;
		}
		if (i > 0 && s[i].version <= s[i - 1].version) {
			snprintf(err, errlen, "migration %s: version %d does not follow %s", s[i].name, s[i].version,
			         s[i - 1].name);
			return -1;
		}
	}
	return 0;
}

static void
checksum(const char *sql, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_Digest(sql, strlen(sql), md, &len, EVP_sha256(), NULL);
	util_hex(md, len, out);
}

static const char create_table[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
                                   " version integer PRIMARY KEY,"
                                   " name text NOT NULL,"
                                   " checksum text NOT NULL,"
                                   " applied_at timestamptz NOT NULL DEFAULT now())";

int
mig_current(struct db *db, int *version, char *err, size_t errlen)
{
	PGresult *res = db_query(db,
	                         "SELECT coalesce(max(version), 0) FROM schema_migrations",
	                         0, NULL);
	if (res == NULL) {
		/* 42P01: the table does not exist yet, i.e. nothing is applied. */
		if (strcmp(db_sqlstate(db), "42P01") == 0) {
			*version = 0;
			return 0;
		}
		snprintf(err, errlen, "reading schema_migrations: %s", db_error(db));
		return -1;
	}
	*version = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return 0;
}

int
mig_check(struct db *db, char *err, size_t errlen)
{
	int have, need = mig_latest();

	if (mig_current(db, &have, err, errlen) == -1)
		return -1;
	if (have < need) {
		snprintf(err, errlen,
		         "the database schema is at version %d but this build needs %d: run `outreachctl migrate`",
		         have, need);
		return -1;
	}
	if (have > need)
		log_notice("the database schema is at version %d, newer than this build's %d", have, need);
	return 0;
}

static int
apply_one(struct db *db, const struct mig_script *m, char *err, size_t errlen)
{
	char ver[16], sum[65];

	snprintf(ver, sizeof(ver), "%d", m->version);
	checksum(m->sql, sum);
	if (db_begin(db) == -1)
		goto fail;
	if (db_exec_script(db, m->sql) == -1)
		goto fail;
	if (db_exec(db, "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
	            DB_ARGS(ver, m->name, sum)) == -1)
		goto fail;
	if (db_commit(db) == -1)
		goto fail;
	return 0;
fail:
	snprintf(err, errlen, "migration %s: %s", m->name, db_error(db));
	db_rollback(db);
	return -1;
}

int
mig_apply(struct db *db, const struct mig_script *s, size_t n, int *applied, char *err, size_t errlen)
{
	PGresult *res = NULL;
	int rc = -1;

	*applied = 0;
	if (mig_validate(s, n, err, errlen) == -1)
		return -1;
	if (db_exec(db, "SELECT pg_advisory_lock(" MIG_LOCK_KEY ")", 0, NULL) == -1) {
		snprintf(err, errlen, "taking the migration lock: %s", db_error(db));
		return -1;
	}
	/* Created only when missing: CREATE TABLE IF NOT EXISTS needs write rights even when the table is
	 * there, and a read-only database that is up to date is no error. */
	res = db_query(db, "SELECT to_regclass('schema_migrations') IS NULL", 0, NULL);
	if (res == NULL) {
		snprintf(err, errlen, "looking for schema_migrations: %s", db_error(db));
		goto out;
	}
	bool missing = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	res = NULL;
	if (missing && db_exec(db, create_table, 0, NULL) == -1) {
		snprintf(err, errlen, "creating schema_migrations: %s", db_error(db));
		goto out;
	}
	res = db_query(db, "SELECT version, name, checksum FROM schema_migrations ORDER BY version", 0, NULL);
	if (res == NULL) {
		snprintf(err, errlen, "reading schema_migrations: %s", db_error(db));
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		bool done = false;
		for (int r = 0; r < PQntuples(res); r++) {
			if (atoi(PQgetvalue(res, r, 0)) != s[i].version)
				continue;
			done = true;
			char sum[65];
			checksum(s[i].sql, sum);
			if (strcmp(sum, PQgetvalue(res, r, 2)) != 0)
				log_warnx("migration %s was changed after it was applied (as %s); the database keeps "
				          "the applied version",
				          s[i].name, PQgetvalue(res, r, 1));
		}
		if (done)
			continue;
		log_info("applying migration %s", s[i].name);
		if (apply_one(db, &s[i], err, errlen) == -1)
			goto out;
		(*applied)++;
	}
	rc = 0;
out:
	PQclear(res);
	if (db_exec(db, "SELECT pg_advisory_unlock(" MIG_LOCK_KEY ")", 0, NULL) == -1)
		log_warnx("releasing the migration lock: %s", db_error(db));
	return rc;
}
