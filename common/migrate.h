/* migrate: the numbered SQL migrations built into every binary, applied in order under a lock. */
#ifndef OUTREACH_MIGRATE_H
#define OUTREACH_MIGRATE_H

#include <stddef.h>

#include "common/util.h"

struct db;

struct mig_script {
	int version;      /* from the file name's number, e.g. 1 for 001_core.sql */
	const char *name; /* the file name */
	const char *sql;
};

/* Generated from sql/ by scripts/embed-sql, sorted by version. */
extern const struct mig_script mig_scripts[];
extern const size_t mig_nscripts;

/* The version this build needs: the highest embedded migration. */
int mig_latest(void);

/* Checks that versions are positive, unique and ascending; -1 with the culprit in err. */
int mig_validate(const struct mig_script *s, size_t n, char *err, size_t errlen) MUSTCHECK;

/* Applies every migration of s[0..n) that the database lacks, each in its own transaction and
 * recorded in schema_migrations, serialized with other runners by an advisory lock. Sets *applied
 * to how many ran. 0, or -1 with err naming the migration and the server's message. */
int mig_apply(struct db *db, const struct mig_script *s, size_t n, int *applied, char *err,
              size_t errlen) MUSTCHECK;

/* The highest applied version (0 when none or no table); -1 with err on a query failure. */
int mig_current(struct db *db, int *version, char *err, size_t errlen) MUSTCHECK;

/* 0 when the database is at this build's version or newer; -1 with a message telling the
 * operator to run `outreachctl migrate` when it is behind or cannot be read. */
int mig_check(struct db *db, char *err, size_t errlen) MUSTCHECK;

#endif
