/* nppes: the NPPES bulk-file importer (full, weekly and deactivation files), for outreachctl and the worker. */
#include "common/nppes.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/csv.h"
#include "common/log.h"
#include "common/pgcopy.h"

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* The session settings of an import: no statement limit (a full file takes minutes), room to sort and
 * to build indexes in memory, and no wait for the WAL flush at commit. */
static const char *const import_settings[] = {
    "SET LOCAL statement_timeout = 0",
    "SET LOCAL work_mem = '256MB'",
    "SET LOCAL maintenance_work_mem = '512MB'",
    "SET LOCAL synchronous_commit = off",
};

enum {
	C_NPI, C_ENTITY, C_ORG, C_LAST, C_FIRST, C_MIDDLE, C_CRED, C_SEX, C_GENDER, C_ADDR1, C_ADDR2, C_CITY,
	C_STATE, C_POSTAL, C_PHONE, C_FAX, C_ENUM, C_UPDATE, C_DEACT, C_REACT, C_NCOLS
};
static const char *const nppes_cols[C_NCOLS] = {
    "NPI",
    "Entity Type Code",
    "Provider Organization Name (Legal Business Name)",
    "Provider Last Name (Legal Name)",
    "Provider First Name",
    "Provider Middle Name",
    "Provider Credential Text",
    "Provider Sex Code",
    "Provider Gender Code",
    "Provider First Line Business Practice Location Address",
    "Provider Second Line Business Practice Location Address",
    "Provider Business Practice Location Address City Name",
    "Provider Business Practice Location Address State Name",
    "Provider Business Practice Location Address Postal Code",
    "Provider Business Practice Location Address Telephone Number",
    "Provider Business Practice Location Address Fax Number",
    "Provider Enumeration Date",
    "Last Update Date",
    "NPI Deactivation Date",
    "NPI Reactivation Date",
};
#define NTAX 15

/* The columns of the staging table, in the order the reader writes them. The Last Update Date is the
 * day's first and last instant in UTC (the session's time zone, see db.c) [last_update, update_end):
 * comparing npi_providers.last_updated with them costs less than casting each to a date. status is
 * the reader's A or D. tax_codes are the taxonomy codes separated by spaces, tax_switches their primary
 * switches, Y or N each. */
#define STAGE_TABLE                                                                                              \
	"CREATE TEMP TABLE nppes_stage (npi text, etype text, org text, last_name text, first_name text, "       \
	"middle_name text, credential text, sex text, tax_code text, tax_codes text, tax_switches text, "       \
	"addr1 text, addr2 text, "                                                                               \
	"city text, state text, postal text, phone text, fax text, enum_date date, last_update timestamptz, "     \
	"deact_date date, react_date date, status text, update_end timestamptz) ON COMMIT DROP"
/* The same values straight into npi_providers (when it is empty), status and origin last. */
#define DIRECT_COPY                                                                                             \
	"COPY npi_providers (npi, enumeration_type, organization_name, last_name, first_name, middle_name, "      \
	"credential, sex, primary_taxonomy_code, taxonomy_codes, taxonomy_primary, address_line1, address_line2, " \
	"city, state, "                                                                                          \
	"postal_code, phone, fax, enumeration_date, last_updated, deactivation_date, status, origin) FROM STDIN " \
	"WITH (FREEZE, FORMAT binary)"

/* A stage row's provider status: deactivated unless reactivated since (decided by the reader). */
#define STAGE_DEACTIVATED "status = 'D'"

bool
nppes_is_taxonomy_code(const char *s)
{
	if (strlen(s) != 10 || s[9] != 'X')
		return false;
	for (int i = 0; i < 9; i++)
		if (!isdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i]))
			return false;
	return true;
}

int
nppes_kind_parse(const char *s, enum nppes_kind *kind)
{
	static const char *const names[] = {"", "full", "weekly", "deactivation"};

	if (s == NULL) {
		*kind = NPPES_ANY;
		return 0;
	}
	for (size_t i = 0; i < NELEM(names); i++)
		if (strcmp(s, names[i]) == 0) {
			*kind = (enum nppes_kind)i;
			return 0;
		}
	return -1;
}

const char *
nppes_kind_name(enum nppes_kind kind)
{
	switch (kind) {
	case NPPES_FULL: return "full";
	case NPPES_WEEKLY: return "weekly";
	case NPPES_DEACTIVATION: return "deactivation";
	default: return "any";
	}
}

/* A value as stored: NULL for "" and for CMS's masks ($$$$, ****, ____, <UNAVAIL>). */
static const char *
clean(const char *v)
{
	if (v == NULL || *v == '\0')
		return NULL;
	if (*v == '<' && strcmp(v, "<UNAVAIL>") == 0)
		return NULL;
	const char *s = v;
	while (*s == '$' || *s == '*' || *s == '_')
		s++;
	return *s == '\0' ? NULL : v;
}

/* A value in MM/DD/YYYY as days since 2000-01-01 into *days: 1; 0 when empty or not in that form (no
 * date); -1 when in that form but no such day (02/30/2020), which the caller reports. */
static int
us_date(const char *v, int32_t *days)
{
	if (v == NULL || strlen(v) != 10 || v[2] != '/' || v[5] != '/')
		return 0;
	for (int i = 0; i < 10; i++)
		if (i != 2 && i != 5 && !isdigit((unsigned char)v[i]))
			return 0;
	int m = (v[0] - '0') * 10 + (v[1] - '0'), d = (v[3] - '0') * 10 + (v[4] - '0');
	int y = (v[6] - '0') * 1000 + (v[7] - '0') * 100 + (v[8] - '0') * 10 + (v[9] - '0');
	return pgcopy_days(y, m, d, days) ? 1 : -1;
}

/* --- the file ---------------------------------------------------------------------------------- */

struct reader {
	FILE *fp;
	struct csv *csv;
	bool seekable; /* a regular file: it can be read again */
	int idx[C_NCOLS], tax[NTAX], sw[NTAX], sex;
	bool deactivation_file;
};

static void
reader_close(struct reader *rd)
{
	csv_free(rd->csv);
	if (rd->fp && rd->fp != stdin)
		fclose(rd->fp);
	rd->csv = NULL;
	rd->fp = NULL;
}

/* Opens the file and maps its columns by header name; checks the layout against kind. */
static int
reader_open(struct reader *rd, const char *path, enum nppes_kind kind, char *err, size_t errlen)
{
	struct stat sb;

	memset(rd, 0, sizeof(*rd));
	rd->fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (rd->fp == NULL)
		return ERR("cannot open %s: %s", path, strerror(errno));
	setvbuf(rd->fp, NULL, _IOFBF, 1 << 20);
	rd->seekable = rd->fp != stdin && fstat(fileno(rd->fp), &sb) == 0 && S_ISREG(sb.st_mode);
	rd->csv = csv_open(rd->fp, path);
	if (csv_read_header(rd->csv) == -1) {
		snprintf(err, errlen, "%s", csv_error(rd->csv));
		reader_close(rd);
		return -1;
	}
	for (int i = 0; i < C_NCOLS; i++)
		rd->idx[i] = csv_header_index(rd->csv, nppes_cols[i]);
	if (rd->idx[C_DEACT] == -1)
		rd->idx[C_DEACT] = csv_header_index(rd->csv, "NPPES Deactivation Date");
	for (int k = 0; k < NTAX; k++) {
		char name[64];
		snprintf(name, sizeof(name), "Healthcare Provider Taxonomy Code_%d", k + 1);
		rd->tax[k] = csv_header_index(rd->csv, name);
		snprintf(name, sizeof(name), "Healthcare Provider Primary Taxonomy Switch_%d", k + 1);
		rd->sw[k] = csv_header_index(rd->csv, name);
	}
	rd->sex = rd->idx[C_SEX] != -1 ? rd->idx[C_SEX] : rd->idx[C_GENDER];
	/* The columns wanted sit in the first third of the 330: the rest of each record is only read past. */
	int last = 0;
	for (int i = 0; i < C_NCOLS; i++)
		last = rd->idx[i] > last ? rd->idx[i] : last;
	for (int k = 0; k < NTAX; k++) {
		last = rd->tax[k] > last ? rd->tax[k] : last;
		last = rd->sw[k] > last ? rd->sw[k] : last;
	}
	csv_keep_fields(rd->csv, (size_t)last + 1);
	rd->deactivation_file = rd->idx[C_ENTITY] == -1 && rd->idx[C_DEACT] != -1;

	const char *what = NULL;
	if (rd->idx[C_NPI] == -1)
		what = "no \"NPI\" column; is this an NPPES file?";
	else if (kind == NPPES_DEACTIVATION && !rd->deactivation_file)
		what = "not a deactivation file: it needs the columns \"NPI\" and \"NPPES Deactivation Date\" (and no "
		       "\"Entity Type Code\")";
	else if ((kind == NPPES_FULL || kind == NPPES_WEEKLY) && rd->idx[C_ENTITY] == -1)
		what = "no \"Entity Type Code\" column: not a full or weekly NPPES file (npidata_pfile_*.csv)";
	if (what) {
		snprintf(err, errlen, "%s: %s", path, what);
		reader_close(rd);
		return -1;
	}
	return 0;
}

/* --- one import -------------------------------------------------------------------------------- */

struct imp {
	struct db *db;
	const struct nppes_opts *o;
	struct nppes_stats *st;
	struct reader rd;
	char *err;
	size_t errlen;
};

/* Streams the rows into an open COPY: the staging layout, or npi_providers' when direct. */
static int
stream(struct imp *im, struct pgcopy *cp, bool direct)
{
	const struct nppes_opts *o = im->o;
	struct nppes_stats *st = im->st;
	struct reader *rd = &im->rd;
	struct csv *r = rd->csv;
	const char *codes[NTAX];
	bool prim[NTAX];
	char *err = im->err;
	size_t errlen = im->errlen;
	int n;

	while ((n = csv_read(r, NULL)) > 0) {
		st->rows++;
		const char *npi = csv_field(r, rd->idx[C_NPI]);
		if (npi == NULL || strlen(npi) != 10 || strspn(npi, "0123456789") != 10) {
			st->bad++;
			continue;
		}
		/* The four dates, by column: enumeration, last update, deactivation, reactivation. */
		static const int date_col[4] = {C_ENUM, C_UPDATE, C_DEACT, C_REACT};
		int32_t day[4];
		bool has[4];
		int bad_date = -1; /* reported only if the row is taken */
		for (int k = 0; k < 4; k++) {
			int dr = us_date(csv_field(r, rd->idx[date_col[k]]), &day[k]);
			if (dr == -1 && bad_date == -1)
				bad_date = date_col[k];
			has[k] = dr == 1;
		}
		const char *etype = clean(csv_field(r, rd->idx[C_ENTITY]));
		const char *state = clean(csv_field(r, rd->idx[C_STATE]));
		bool deactivated = has[2] && (!has[3] || day[3] < day[2]);

		/* Taxonomies: the primary by its switch, every code and its switch in two arrays. */
		const char *primary = NULL;
		bool match = o->ntaxonomies == 0;
		int nt = 0;
		for (int k = 0; k < NTAX; k++) {
			const char *code = clean(csv_field(r, rd->tax[k]));
			if (code == NULL || !nppes_is_taxonomy_code(code))
				continue;
			const char *swv = csv_field(r, rd->sw[k]);
			bool is_primary = swv && swv[0] == 'Y';
			if (is_primary && primary == NULL)
				primary = code;
			for (size_t t = 0; t < o->ntaxonomies && !match; t++)
				match = strcmp(o->taxonomies[t], code) == 0;
			codes[nt] = code;
			prim[nt++] = is_primary;
		}
		if (primary == NULL && nt > 0)
			primary = clean(csv_field(r, rd->tax[0]));
		/* Filters apply to active providers; a deactivated NPI (no state, no taxonomy) is always
		 * taken so that providers already known learn of it. */
		if (!rd->deactivation_file && etype) {
			if ((o->state && (state == NULL || strcmp(state, o->state) != 0)) || !match) {
				st->filtered++;
				continue;
			}
		}
		if (bad_date != -1) {
			pgcopy_abort(cp, "the input file holds a date that does not exist");
			return ERR("%s:%lu: \"%s\" is no date: \"%s\"", o->path, csv_line(r), nppes_cols[bad_date],
			           csv_field(r, rd->idx[bad_date]));
		}
		if (deactivated)
			st->deactivated++;
		pgcopy_row(cp, direct ? 23 : 24);
		pgcopy_text(cp, npi);
		pgcopy_text(cp, etype ? (etype[0] == '2' ? "NPI-2" : "NPI-1") : NULL);
		static const int text_col[] = {C_ORG, C_LAST, C_FIRST, C_MIDDLE, C_CRED};
		for (size_t k = 0; k < NELEM(text_col); k++)
			pgcopy_text(cp, clean(csv_field(r, rd->idx[text_col[k]])));
		pgcopy_text(cp, clean(csv_field(r, rd->sex)));
		pgcopy_text(cp, primary);
		if (nt > 0 && direct) {
			pgcopy_text_array(cp, codes, nt);
			pgcopy_bool_array(cp, prim, nt);
		} else if (nt > 0) {
			/* The stage keeps them as plain text ("207R00000X 208000000X", "YN"): only the rows the
			 * merge writes are made arrays, and most rows of a refresh are unchanged. */
			char tcodes[NTAX * 11], tsw[NTAX + 1];
			for (int k = 0; k < nt; k++) {
				memcpy(tcodes + 11 * k, codes[k], 10);
				tcodes[11 * k + 10] = k + 1 < nt ? ' ' : '\0';
				tsw[k] = prim[k] ? 'Y' : 'N';
			}
			tsw[nt] = '\0';
			pgcopy_text(cp, tcodes);
			pgcopy_text(cp, tsw);
		} else {
			pgcopy_null(cp);
			pgcopy_null(cp);
		}
		pgcopy_text(cp, clean(csv_field(r, rd->idx[C_ADDR1])));
		pgcopy_text(cp, clean(csv_field(r, rd->idx[C_ADDR2])));
		pgcopy_text(cp, clean(csv_field(r, rd->idx[C_CITY])));
		pgcopy_text(cp, state);
		pgcopy_text(cp, clean(csv_field(r, rd->idx[C_POSTAL])));
		pgcopy_text(cp, clean(csv_field(r, rd->idx[C_PHONE])));
		pgcopy_text(cp, clean(csv_field(r, rd->idx[C_FAX])));
		if (has[0])
			pgcopy_date(cp, day[0]);
		else
			pgcopy_null(cp);
		if (has[1])
			pgcopy_timestamptz_day(cp, day[1]);
		else
			pgcopy_null(cp);
		if (direct) {
			if (deactivated)
				pgcopy_date(cp, day[2]);
			else
				pgcopy_null(cp);
			pgcopy_text(cp, deactivated ? "D" : "A");
			pgcopy_text(cp, "nppes");
		} else {
			for (int k = 2; k < 4; k++) {
				if (has[k])
					pgcopy_date(cp, day[k]);
				else
					pgcopy_null(cp);
			}
			pgcopy_text(cp, deactivated ? "D" : "A");
			if (has[1])
				pgcopy_timestamptz_day(cp, day[1] + 1);
			else
				pgcopy_null(cp);
		}
		st->kept++;
		if (cp->failed)
			break;
	}
	if (n == -1) {
		pgcopy_abort(cp, "the input file is malformed");
		return ERR("%s", csv_error(r));
	}
	if (pgcopy_end(cp) == -1)
		return ERR("%s", cp->errstr);
	return 0;
}

static int
exec(struct imp *im, const char *what, const char *sql, int n, const char *const *params)
{
	if (db_exec(im->db, sql, n, params) == -1) {
		snprintf(im->err, im->errlen, "%s: %s", what, db_error(im->db));
		return -1;
	}
	return 0;
}

/* Runs a statement and returns its row count (PQcmdTuples), or -1. */
static long
count(struct imp *im, const char *what, const char *sql, int n, const char *const *params)
{
	PGresult *res = db_query(im->db, sql, n, params);
	if (res == NULL) {
		snprintf(im->err, im->errlen, "%s: %s", what, db_error(im->db));
		return -1;
	}
	long k = PQresultStatus(res) == PGRES_TUPLES_OK && PQnfields(res) == 1 && PQntuples(res) == 1
	             ? strtol(PQgetvalue(res, 0, 0), NULL, 10)
	             : strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);
	return k;
}

/* The primary key and the secondary indexes of npi_providers, to drop before a load into the empty table
 * and build again after: building an index once is several times faster than growing it row by row.
 * The key comes first, so that an NPI found twice stops the load before the other indexes are built. */
struct indexes {
	int n;
	char *drop[16], *def[16];
};

static void
indexes_free(struct indexes *ix)
{
	for (int i = 0; i < ix->n; i++) {
		free(ix->drop[i]);
		free(ix->def[i]);
	}
	ix->n = 0;
}

static int
indexes_drop(struct imp *im, struct indexes *ix)
{
	PGresult *res = db_query(
	    im->db,
	    "SELECT 'ALTER TABLE npi_providers DROP CONSTRAINT ' || quote_ident(conname), "
	    "'ALTER TABLE npi_providers ADD CONSTRAINT ' || quote_ident(conname) || ' ' || pg_get_constraintdef(oid), "
	    "'' FROM pg_constraint WHERE conrelid = 'npi_providers'::regclass AND contype = 'p' "
	    "UNION ALL SELECT 'DROP INDEX ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
	    "pg_get_indexdef(i.indexrelid), c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
	    "JOIN pg_namespace n ON n.oid = c.relnamespace "
	    "WHERE i.indrelid = 'npi_providers'::regclass AND NOT i.indisunique ORDER BY 3",
	    0, NULL);
	if (res == NULL) {
		snprintf(im->err, im->errlen, "listing the indexes of npi_providers: %s", db_error(im->db));
		return -1;
	}
	for (int i = 0; i < PQntuples(res) && ix->n < (int)NELEM(ix->drop); i++) {
		ix->drop[ix->n] = xstrdup(PQgetvalue(res, i, 0));
		ix->def[ix->n] = xstrdup(PQgetvalue(res, i, 1));
		ix->n++;
	}
	PQclear(res);
	for (int i = 0; i < ix->n; i++)
		if (exec(im, "dropping an index of npi_providers", ix->drop[i], 0, NULL) == -1)
			return -1;
	return 0;
}

static int
indexes_build(struct imp *im, struct indexes *ix)
{
	for (int i = 0; i < ix->n; i++)
		if (exec(im, "building an index of npi_providers", ix->def[i], 0, NULL) == -1)
			return -1;
	return 0;
}

/* Loads straight into the empty npi_providers. Returns 1 when the file holds an NPI twice (the load
 * is undone and the caller goes through the staging table), 0 when done, -1 on error. */
static int
load_direct(struct imp *im)
{
	struct indexes ix = {0};
	struct pgcopy cp;
	int rc = -1;

	/* Emptied in this subtransaction (it is empty and locked), the table takes its rows frozen and
	 * all-visible: no vacuum has to visit millions of new rows afterwards. */
	if (exec(im, "import-nppes", "SAVEPOINT nppes_direct", 0, NULL) == -1 || indexes_drop(im, &ix) == -1 ||
	    exec(im, "import-nppes", "TRUNCATE npi_providers", 0, NULL) == -1)
		goto out;
	if (pgcopy_begin(&cp, db_conn(im->db), DIRECT_COPY) == -1) {
		snprintf(im->err, im->errlen, "%s", cp.errstr);
		goto out;
	}
	if (stream(im, &cp, true) == -1)
		goto out;
	im->st->copy_ms = util_mono_ms();
	if (indexes_build(im, &ix) == -1) {
		if (strcmp(db_sqlstate(im->db), "23505") == 0) /* the key: an NPI twice */
			rc = exec(im, "import-nppes", "ROLLBACK TO SAVEPOINT nppes_direct", 0, NULL) == -1 ? -1 : 1;
		goto out;
	}
	if (exec(im, "import-nppes", "RELEASE SAVEPOINT nppes_direct", 0, NULL) == -1)
		goto out;
	im->st->providers = im->st->kept;
	rc = 0;
out:
	indexes_free(&ix);
	return rc;
}

/* Loads into the staging table and merges: only new or changed providers are written. */
static int
load_staged(struct imp *im)
{
	struct nppes_stats *st = im->st;
	struct pgcopy cp;
	char *sql;
	long n;

	if (pgcopy_begin(&cp, db_conn(im->db), STAGE_TABLE "; COPY nppes_stage FROM STDIN WITH (FORMAT binary)") == -1) {
		snprintf(im->err, im->errlen, "%s", cp.errstr);
		return -1;
	}
	if (stream(im, &cp, false) == -1)
		return -1;
	st->copy_ms = util_mono_ms();
	/* With its statistics the planner can weigh the stage against npi_providers: a hash join for a
	 * full file, index probes for a weekly one. The key's are all it needs (a sixth of the time). */
	if (exec(im, "import-nppes", "ANALYZE nppes_stage (npi)", 0, NULL) == -1)
		return -1;

	if (im->rd.deactivation_file) {
		n = count(im, "merging the deactivations into npi_providers",
		          "UPDATE npi_providers p SET deactivation_date = s.deact_date, status = 'D', fetched_at = now() "
		          "FROM (SELECT DISTINCT ON (npi) npi, deact_date FROM nppes_stage WHERE deact_date IS NOT NULL "
		          "ORDER BY npi, deact_date DESC) s WHERE p.npi = s.npi AND (p.deactivation_date, p.status) IS "
		          "DISTINCT FROM (s.deact_date, 'D')",
		          0, NULL);
		if (n == -1)
			return -1;
		st->providers = n;
		return 0;
	}
	/* Rows whose NPI is known with the same Last Update Date and status are left out by an anti-join
	 * (one hash join over a full file) before the upsert sees them. Most files hold each NPI once: merge
	 * without sorting, and only if PostgreSQL finds an NPI twice (cardinality_violation) again keeping
	 * each NPI's latest row. */
	for (int pass = 0; pass < 2; pass++) {
		bool distinct = pass == 1;
		sql = xasprintf(
		    "INSERT INTO npi_providers AS p (npi, enumeration_type, first_name, middle_name, last_name, "
		    "organization_name, credential, sex, primary_taxonomy_code, taxonomy_codes, taxonomy_primary, "
		    "address_line1, address_line2, "
		    "city, state, postal_code, phone, fax, enumeration_date, last_updated, status, deactivation_date, "
		    "origin, fetched_at) "
		    "SELECT %s npi, etype, first_name, middle_name, last_name, org, credential, sex, "
		    "tax_code, string_to_array(tax_codes, ' '), string_to_array(tax_switches, NULL)::boolean[], addr1, addr2, city, state, postal, phone, fax, enum_date, "
		    "last_update, status, CASE WHEN " STAGE_DEACTIVATED " THEN deact_date END, 'nppes', now() "
		    "FROM nppes_stage s WHERE NOT EXISTS (SELECT 1 FROM npi_providers o WHERE o.npi = s.npi AND "
		    "o.status = s.status AND o.last_updated >= s.last_update AND o.last_updated < s.update_end) %s "
		    "ON CONFLICT (npi) DO UPDATE SET enumeration_type = coalesce(EXCLUDED.enumeration_type, "
		    "p.enumeration_type), first_name = EXCLUDED.first_name, middle_name = EXCLUDED.middle_name, "
		    "last_name = EXCLUDED.last_name, organization_name = EXCLUDED.organization_name, "
		    "credential = EXCLUDED.credential, sex = EXCLUDED.sex, "
		    "primary_taxonomy_code = EXCLUDED.primary_taxonomy_code, taxonomy_codes = EXCLUDED.taxonomy_codes, "
		    "taxonomy_primary = EXCLUDED.taxonomy_primary, taxonomy_descs = NULL, taxonomy_states = NULL, "
		    "taxonomy_licenses = NULL, "
		    "address_line1 = EXCLUDED.address_line1, address_line2 = EXCLUDED.address_line2, city = EXCLUDED.city, "
		    "state = EXCLUDED.state, postal_code = EXCLUDED.postal_code, phone = EXCLUDED.phone, fax = EXCLUDED.fax, "
		    "enumeration_date = EXCLUDED.enumeration_date, last_updated = EXCLUDED.last_updated, "
		    "status = EXCLUDED.status, deactivation_date = EXCLUDED.deactivation_date, origin = 'nppes', "
		    "fetched_at = now() "
		    "WHERE (p.last_updated::date, p.status) IS DISTINCT FROM (EXCLUDED.last_updated::date, EXCLUDED.status)",
		    distinct ? "DISTINCT ON (npi)" : "", distinct ? "ORDER BY npi, last_update DESC NULLS LAST" : "");
		if (exec(im, "import-nppes", "SAVEPOINT nppes_merge", 0, NULL) == -1) {
			free(sql);
			return -1;
		}
		n = count(im, "merging into npi_providers", sql, 0, NULL);
		free(sql);
		if (n >= 0 || distinct || strcmp(db_sqlstate(im->db), "21000") != 0)
			break;
		if (exec(im, "import-nppes", "ROLLBACK TO SAVEPOINT nppes_merge", 0, NULL) == -1)
			return -1;
		st->duplicates = true;
	}
	if (n == -1)
		return -1;
	st->providers = n;
	return exec(im, "import-nppes", "RELEASE SAVEPOINT nppes_merge", 0, NULL);
}

/* New prospects for the active providers taken; known sources get the registry's fields. */
static int
merge_sources(struct imp *im, const char *coord_id)
{
	const char *from =
	    im->st->direct
	        ? "SELECT npi, enumeration_type AS etype, organization_name AS org, last_name, first_name, credential, "
	          "primary_taxonomy_code AS tax_code, phone, address_line1 AS addr1, city, state, postal_code AS postal "
	          "FROM npi_providers WHERE status = 'A' AND enumeration_type IS NOT NULL"
	    : im->st->duplicates
	        ? "SELECT DISTINCT ON (npi) * FROM nppes_stage WHERE etype IS NOT NULL AND NOT (" STAGE_DEACTIVATED
	          ") ORDER BY npi, last_update DESC NULLS LAST"
	        : "SELECT * FROM nppes_stage WHERE etype IS NOT NULL AND NOT (" STAGE_DEACTIVATED ")";
	char *sql = xasprintf(
	    "WITH s AS (%s) "
	    "INSERT INTO referral_sources AS r (kind, npi, first_name, last_name, organization_name, credential, "
	    "specialty_code, specialty, status, coordinator_id, phone, address_line1, city, state, postal_code) "
	    "SELECT CASE WHEN s.etype = 'NPI-2' THEN 'organization' ELSE 'physician' END, s.npi, s.first_name, "
	    "CASE WHEN s.etype = 'NPI-2' THEN s.last_name ELSE coalesce(s.last_name, '') END, s.org, s.credential, "
	    "CASE WHEN s.tax_code ~ '^[0-9A-Z]{9}X$' THEN s.tax_code END, t.classification, 'prospect', $1, "
	    "s.phone, s.addr1, s.city, s.state, s.postal FROM s LEFT JOIN taxonomies t ON t.code = s.tax_code "
	    "WHERE s.etype = 'NPI-1' OR s.org IS NOT NULL "
	    "ON CONFLICT (npi) DO UPDATE SET first_name = EXCLUDED.first_name, "
	    "last_name = coalesce(EXCLUDED.last_name, r.last_name), "
	    "organization_name = coalesce(EXCLUDED.organization_name, r.organization_name), "
	    "credential = EXCLUDED.credential, specialty_code = coalesce(EXCLUDED.specialty_code, r.specialty_code), "
	    "specialty = coalesce(EXCLUDED.specialty, r.specialty), phone = coalesce(EXCLUDED.phone, r.phone), "
	    "address_line1 = coalesce(EXCLUDED.address_line1, r.address_line1), city = coalesce(EXCLUDED.city, r.city), "
	    "state = coalesce(EXCLUDED.state, r.state), postal_code = coalesce(EXCLUDED.postal_code, r.postal_code) "
	    "WHERE (r.first_name, r.last_name, r.organization_name, r.credential, r.specialty_code, r.phone, "
	    "r.address_line1, r.city, r.state, r.postal_code) IS DISTINCT FROM (EXCLUDED.first_name, "
	    "coalesce(EXCLUDED.last_name, r.last_name), coalesce(EXCLUDED.organization_name, r.organization_name), "
	    "EXCLUDED.credential, coalesce(EXCLUDED.specialty_code, r.specialty_code), coalesce(EXCLUDED.phone, r.phone), "
	    "coalesce(EXCLUDED.address_line1, r.address_line1), coalesce(EXCLUDED.city, r.city), "
	    "coalesce(EXCLUDED.state, r.state), coalesce(EXCLUDED.postal_code, r.postal_code))",
	    from);
	long n = count(im, "merging into referral_sources", sql, DB_ARGS(coord_id));
	free(sql);
	if (n == -1)
		return -1;
	im->st->sources = n;
	return 0;
}

/* A deactivated NPI can no longer be courted: its referral sources that are still prospects become
 * inactive; sources a coordinator works with (active) keep their status and are counted. */
static int
close_deactivated(struct imp *im)
{
	const char *from = im->st->direct ? "SELECT npi FROM npi_providers WHERE status = 'D'"
	                                  : "SELECT npi FROM nppes_stage WHERE " STAGE_DEACTIVATED;
	char *sql = xasprintf("UPDATE referral_sources r SET status = 'inactive', closed_on_deactivation_at = now() "
	                      "FROM (%s) d WHERE r.npi = d.npi AND r.status = 'prospect'",
	                      from);
	long n = count(im, "closing the prospects of deactivated NPIs", sql, 0, NULL);
	free(sql);
	if (n == -1)
		return -1;
	im->st->sources_closed = n;
	sql = xasprintf("SELECT count(*) FROM referral_sources r WHERE r.status = 'active' AND r.npi IN (%s)", from);
	n = count(im, "counting the active sources of deactivated NPIs", sql, 0, NULL);
	free(sql);
	if (n == -1)
		return -1;
	im->st->active_deactivated = n;
	return 0;
}

/* A reactivated NPI can be courted again: the sources closed only because it was deactivated (and
 * not changed by a coordinator since) become prospects again, by the rule the registry sync also
 * applies (referral_sources_reopen, migration 017), here for every NPI active now. */
static int
reopen_reactivated(struct imp *im)
{
	long n = count(im, "reopening the prospects of reactivated NPIs", "SELECT referral_sources_reopen(NULL)", 0,
	               NULL);
	if (n == -1)
		return -1;
	im->st->sources_reopened = n;
	return 0;
}

/* Whether npi_providers is empty; with lock, takes the table for the load (DROP INDEX needs it). */
static int
target_empty(struct imp *im, bool lock)
{
	if (lock && exec(im, "import-nppes", "LOCK TABLE npi_providers IN ACCESS EXCLUSIVE MODE", 0, NULL) == -1)
		return -1;
	long n = count(im, "import-nppes", "SELECT (NOT EXISTS (SELECT 1 FROM npi_providers))::int", 0, NULL);
	return n == -1 ? -1 : n == 1;
}

int
nppes_import(struct db *db, const struct nppes_opts *o, struct nppes_stats *st, char *err, size_t errlen)
{
	struct imp im = {.db = db, .o = o, .st = st, .err = err, .errlen = errlen};
	const char *coord_id = NULL;
	char coordbuf[24];
	int64_t t0 = util_mono_ms();
	int rc;

	memset(st, 0, sizeof(*st));
	if (reader_open(&im.rd, o->path, o->kind, err, errlen) == -1)
		return -1;
	if (db_begin(db) == -1) {
		snprintf(err, errlen, "BEGIN: %s", db_error(db));
		reader_close(&im.rd);
		return -1;
	}
	for (size_t i = 0; i < NELEM(import_settings); i++)
		if (exec(&im, "import-nppes", import_settings[i], 0, NULL) == -1)
			goto fail;
	if (o->coordinator) {
		PGresult *res = db_query(db, "SELECT id FROM coordinators WHERE id::text = $1 OR lower(email) = lower($1)",
		                         DB_ARGS(o->coordinator));
		if (res == NULL) {
			snprintf(err, errlen, "import-nppes: %s", db_error(db));
			goto fail;
		}
		if (PQntuples(res) != 1) {
			PQclear(res);
			snprintf(err, errlen, "no coordinator with id or email %s", o->coordinator);
			goto fail;
		}
		util_strlcpy(coordbuf, PQgetvalue(res, 0, 0), sizeof(coordbuf));
		coord_id = coordbuf;
		PQclear(res);
	}

	/* An empty npi_providers (the first import of a full file) is loaded straight, without staging. */
	if (!im.rd.deactivation_file && im.rd.seekable) {
		if ((rc = target_empty(&im, false)) == 1)
			rc = target_empty(&im, true);
		if (rc == -1)
			goto fail;
		st->direct = rc == 1;
	}
	if (st->direct) {
		if ((rc = load_direct(&im)) == -1)
			goto fail;
		if (rc == 1) {
			log_info("import-nppes: %s holds an NPI more than once: loading it through the staging table",
			         o->path);
			reader_close(&im.rd);
			if (reader_open(&im.rd, o->path, o->kind, err, errlen) == -1)
				goto fail;
			memset(st, 0, sizeof(*st));
			st->duplicates = true;
		}
	}
	if (!st->direct && load_staged(&im) == -1)
		goto fail;
	if (o->prospects && !im.rd.deactivation_file && merge_sources(&im, coord_id) == -1)
		goto fail;
	if (st->deactivated > 0 && close_deactivated(&im) == -1) /* no deactivated row, nothing to close */
		goto fail;
	if (!im.rd.deactivation_file && reopen_reactivated(&im) == -1)
		goto fail;
	if (db_commit(db) == -1) {
		snprintf(err, errlen, "COMMIT: %s", db_error(db));
		goto fail;
	}
	reader_close(&im.rd);
	st->copy_ms = st->copy_ms ? st->copy_ms - t0 : 0;
	st->ms = util_mono_ms() - t0;
	return 0;

fail:
	db_rollback(db);
	reader_close(&im.rd);
	return -1;
}

/* --- NppesImportJob's arguments ------------------------------------------------------------------- */

int
nppes_job_args(const json_t *args, struct nppes_opts *o, char *err, size_t errlen)
{
	const json_t *obj = json_array_get(args, 0), *v;
	const char *key;

	memset(o, 0, sizeof(*o));
	if (json_array_size(args) != 1 || !json_is_object(obj))
		return ERR("NppesImportJob takes 1 argument, an object {\"file\": PATH, \"state\", \"taxonomies\", "
		           "\"prospects\", \"coordinator\", \"kind\"}");
	json_object_foreach((json_t *)obj, key, v) {
		if (strcmp(key, "file") == 0) {
			if (!json_is_string(v) || json_string_value(v)[0] != '/')
				return ERR("NppesImportJob: file must be an absolute path on the worker's host");
			o->path = json_string_value(v);
		} else if (strcmp(key, "state") == 0) {
			const char *s = json_string_value(v);
			if (s == NULL || strlen(s) != 2 || !isupper((unsigned char)s[0]) || !isupper((unsigned char)s[1]))
				return ERR("NppesImportJob: state must be a two-letter code like \"MN\"");
			o->state = s;
		} else if (strcmp(key, "taxonomies") == 0) {
			size_t i;
			json_t *t;
			if (!json_is_array(v) || json_array_size(v) > NPPES_MAX_TAXONOMIES)
				return ERR("NppesImportJob: taxonomies must be a list of at most %d NUCC codes",
				           NPPES_MAX_TAXONOMIES);
			json_array_foreach(v, i, t) {
				if (!json_is_string(t) || !nppes_is_taxonomy_code(json_string_value(t)))
					return ERR("NppesImportJob: taxonomies[%zu] is not a NUCC code like \"207R00000X\"", i);
				o->taxonomies[o->ntaxonomies++] = json_string_value(t);
			}
		} else if (strcmp(key, "prospects") == 0) {
			if (!json_is_boolean(v))
				return ERR("NppesImportJob: prospects must be true or false");
			o->prospects = json_is_true(v);
		} else if (strcmp(key, "coordinator") == 0) {
			if (json_is_integer(v) && json_integer_value(v) > 0) {
				snprintf(o->idbuf, sizeof(o->idbuf), "%lld", (long long)json_integer_value(v));
				o->coordinator = o->idbuf;
			} else if (json_is_string(v) && json_string_length(v) > 0) {
				o->coordinator = json_string_value(v);
			} else {
				return ERR("NppesImportJob: coordinator must be a coordinator's id or email");
			}
		} else if (strcmp(key, "kind") == 0) {
			if (!json_is_string(v) || json_string_length(v) == 0 ||
			    nppes_kind_parse(json_string_value(v), &o->kind) == -1)
				return ERR("NppesImportJob: kind must be \"full\", \"weekly\" or \"deactivation\"");
		} else {
			return ERR("NppesImportJob: unknown argument \"%s\" (file, state, taxonomies, prospects, "
			           "coordinator, kind)",
			           key);
		}
	}
	if (o->path == NULL)
		return ERR("NppesImportJob: file is missing (the path of the NPPES file on the worker's host)");
	if (o->coordinator && !o->prospects)
		return ERR("NppesImportJob: coordinator only goes with \"prospects\": true");
	return 0;
}
