/* nppes: the NPPES bulk-file importer (full, weekly and deactivation files), for outreachctl and the worker. */
#ifndef OUTREACH_NPPES_H
#define OUTREACH_NPPES_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/db.h"
#include "common/util.h"

enum nppes_kind {
	NPPES_ANY,          /* whatever the header says */
	NPPES_FULL,         /* the monthly full file (npidata_pfile_*.csv) */
	NPPES_WEEKLY,       /* a weekly incremental file: the same layout, only the changed NPIs */
	NPPES_DEACTIVATION, /* the deactivation report: NPI and NPPES Deactivation Date */
};

#define NPPES_MAX_TAXONOMIES 32

struct nppes_opts {
	const char *path;        /* the file; "-" for standard input (borrowed) */
	const char *state;       /* keep only this practice-location state; NULL: all (borrowed) */
	const char *taxonomies[NPPES_MAX_TAXONOMIES]; /* keep only providers with one of these codes (borrowed) */
	size_t ntaxonomies;
	bool prospects;          /* also make referral sources (prospects) of the active providers taken */
	const char *coordinator; /* the prospects' coordinator: id or email; NULL: none (borrowed) */
	enum nppes_kind kind;
	char idbuf[24];          /* holds a coordinator id given as a number (nppes_job_args) */
};

struct nppes_stats {
	long rows, kept, filtered, bad, deactivated; /* rows of the file */
	long providers;       /* npi_providers rows written */
	long sources;         /* referral_sources rows written */
	long sources_closed;  /* prospects made inactive because their NPI was deactivated */
	long active_deactivated; /* active referral sources whose NPI is now deactivated (left as they are) */
	long sources_reopened; /* prospects closed on a deactivation whose NPI is active again, reopened */
	bool direct;          /* loaded straight into an empty npi_providers */
	bool duplicates;      /* the file held an NPI more than once (the latest Last Update Date won) */
	long long ms, copy_ms; /* the whole import; reading the file and COPY */
};

/* Imports o->path into npi_providers (and referral_sources when o->prospects) in one transaction on
 * db: streams the file with flat memory, maps columns by header name, COPY into a staging table (or
 * straight into npi_providers when it is empty) and merges. On failure rolls back and returns -1 with
 * "what failed" in err; db_lost(db) tells whether the connection was lost (worth retrying). */
int nppes_import(struct db *db, const struct nppes_opts *o, struct nppes_stats *st, char *err,
                 size_t errlen) MUSTCHECK;

/* Reads the arguments of an NppesImportJob (one object: file, state, taxonomies, prospects,
 * coordinator, kind) into o (borrowing args' strings); 0, or -1 with what is wrong in err. */
int nppes_job_args(const json_t *args, struct nppes_opts *o, char *err, size_t errlen) MUSTCHECK;

/* "full", "weekly", "deactivation" (or NULL / "" for any); 0, or -1 when s is none of these. */
int nppes_kind_parse(const char *s, enum nppes_kind *kind) MUSTCHECK;
const char *nppes_kind_name(enum nppes_kind kind);

/* True when s looks like a NUCC taxonomy code (nine digits or capitals, then X). */
bool nppes_is_taxonomy_code(const char *s);

#endif
