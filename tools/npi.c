/* npi: outreachctl's NPI commands: saved searches, sync, the NUCC taxonomy and NPPES bulk imports. */
#include "tools/npi.h"

#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/csv.h"
#include "common/db.h"
#include "common/job.h"
#include "common/jobclass.h"
#include "common/log.h"
#include "tools/jobs.h"
#include "common/migrate.h"
#include "common/npi.h"
#include "common/queue.h"
#include "common/rds.h"

/* --- saved searches -------------------------------------------------------------------------- */

static const char search_usage[] =
    "usage: outreachctl npi search add NAME [--criteria JSON] [--taxonomy DESC|CODE] [--state XX]\n"
    "                                 [--city CITY] [--postal-code PREFIX] [--type NPI-1|NPI-2]\n"
    "                                 [--first-name N] [--last-name N] [--organization N]\n"
    "                                 [--coordinator ID|EMAIL]\n"
    "       outreachctl npi search list [--json]\n"
    "       outreachctl npi search remove ID|NAME\n"
    "       outreachctl npi sync [ID]   (every active search when no ID)";

static bool
looks_like_code(const char *s)
{
	if (strlen(s) != 10 || s[9] != 'X')
		return false;
	for (int i = 0; i < 9; i++)
		if (!isdigit((unsigned char)s[i]) && !isupper((unsigned char)s[i]))
			return false;
	return true;
}

static int
search_add(const struct cfg *c, int argc, char **argv)
{
	static const struct {
		const char *opt, *key;
	} opts[] = {
	    {"--state", "state"},           {"--city", "city"},           {"--postal-code", "postal_code"},
	    {"--type", "enumeration_type"}, {"--first-name", "first_name"}, {"--last-name", "last_name"},
	    {"--organization", "organization_name"},
	};
	const char *coordinator = NULL;
	json_t *criteria = json_object();
	char err[512];

	if (argc < 2 || argv[1][0] == '-')
		fatalx("%s", search_usage);
	const char *name = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (val == NULL)
			fatalx("npi search add: %s needs a value", opt);
		i++;
		if (strcmp(opt, "--criteria") == 0) {
			json_error_t jerr;
			json_t *j = json_loads(val, 0, &jerr);
			if (j == NULL || !json_is_object(j))
				fatalx("npi search add: --criteria must be a JSON object%s%s", j ? "" : ": ", j ? "" : jerr.text);
			json_object_update(criteria, j);
			json_decref(j);
		} else if (strcmp(opt, "--taxonomy") == 0) {
			json_object_set_new(criteria, looks_like_code(val) ? "taxonomy_code" : "taxonomy_description",
			                    json_string(val));
		} else if (strcmp(opt, "--coordinator") == 0) {
			coordinator = val;
		} else {
			size_t k;
			for (k = 0; k < NELEM(opts); k++)
				if (strcmp(opts[k].opt, opt) == 0)
					break;
			if (k == NELEM(opts))
				fatalx("npi search add: unknown option %s\n%s", opt, search_usage);
			json_object_set_new(criteria, opts[k].key, json_string(val));
		}
	}
	if (npi_criteria_check(criteria, err, sizeof(err)) == -1)
		fatalx("npi search add: %s", err);
	struct db *db = ctl_db_connect(c, true);
	char *text = json_dumps(criteria, JSON_COMPACT | JSON_SORT_KEYS);
	PGresult *res;
	const char *coord_id = NULL;
	char idbuf[24];
	if (coordinator) {
		res = ctl_must_query(db, "npi search add",
		                 "SELECT id FROM coordinators WHERE id::text = $1 OR lower(email) = lower($1)",
		                 DB_ARGS(coordinator));
		if (PQntuples(res) != 1)
			fatalx("npi search add: no coordinator with id or email %s", coordinator);
		util_strlcpy(idbuf, PQgetvalue(res, 0, 0), sizeof(idbuf));
		coord_id = idbuf;
		PQclear(res);
	}
	res = db_query(db, "INSERT INTO npi_searches (name, criteria, coordinator_id) VALUES ($1, $2::jsonb, $3) "
	                   "RETURNING id",
	               DB_ARGS(name, text, coord_id));
	if (res == NULL)
		fatalx("npi search add: %s", strcmp(db_sqlstate(db), "23505") == 0
		                                     ? "a saved search of that name exists already"
		                                     : db_error(db));
	printf("%s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	free(text);
	json_decref(criteria);
	db_free(db);
	return 0;
}

static int
search_list(const struct cfg *c, int argc, char **argv)
{
	bool as_json = argc > 1 && strcmp(argv[1], "--json") == 0;
	struct db *db = ctl_db_connect(c, true);
	PGresult *res = ctl_must_query(
	    db, "npi search list",
	    "SELECT s.id, s.name, s.criteria::text, coalesce(co.email, ''), s.active, "
	    "coalesce(r.status, ''), coalesce(to_char(r.started_at, 'YYYY-MM-DD HH24:MI'), ''), "
	    "coalesce(r.records_seen, 0), coalesce(r.created, 0), coalesce(r.updated, 0), coalesce(r.errors, 0) "
	    "FROM npi_searches s LEFT JOIN coordinators co ON co.id = s.coordinator_id "
	    "LEFT JOIN LATERAL (SELECT * FROM npi_sync_runs x WHERE x.search_id = s.id ORDER BY x.started_at DESC, "
	    "x.id DESC LIMIT 1) r ON true ORDER BY s.id",
	    0, NULL);
	if (as_json) {
		json_t *a = json_array();
		for (int i = 0; i < PQntuples(res); i++)
			json_array_append_new(
			    a, json_pack("{s:I, s:s, s:o, s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:I}", "id",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "name", PQgetvalue(res, i, 1),
			                 "criteria", json_loads(PQgetvalue(res, i, 2), 0, NULL), "coordinator",
			                 PQgetvalue(res, i, 3), "active", PQgetvalue(res, i, 4)[0] == 't', "last_run_status",
			                 PQgetvalue(res, i, 5), "last_run_started", PQgetvalue(res, i, 6), "records_seen",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 7), NULL, 10), "created",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 8), NULL, 10), "updated",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 9), NULL, 10), "errors",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 10), NULL, 10)));
		char *t = json_dumps(a, JSON_INDENT(2));
		printf("%s\n", t);
		free(t);
		json_decref(a);
	} else {
		printf("%-5s %-24s %-8s %-24s %s\n", "ID", "NAME", "ACTIVE", "COORDINATOR", "CRITERIA / LAST RUN");
		for (int i = 0; i < PQntuples(res); i++) {
			printf("%-5s %-24s %-8s %-24s %s\n", PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
			       PQgetvalue(res, i, 4)[0] == 't' ? "yes" : "no", PQgetvalue(res, i, 3), PQgetvalue(res, i, 2));
			if (PQgetvalue(res, i, 5)[0])
				printf("%-5s last run %s (%s): %s providers, %s created, %s updated, %s errors\n", "",
				       PQgetvalue(res, i, 6), PQgetvalue(res, i, 5), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8),
				       PQgetvalue(res, i, 9), PQgetvalue(res, i, 10));
		}
	}
	PQclear(res);
	db_free(db);
	return 0;
}

static int
search_remove(const struct cfg *c, int argc, char **argv)
{
	if (argc != 2)
		fatalx("%s", search_usage);
	struct db *db = ctl_db_connect(c, true);
	PGresult *res = ctl_must_query(db, "npi search remove",
	                           "DELETE FROM npi_searches WHERE id::text = $1 OR name = $1 RETURNING id", DB_ARGS(argv[1]));
	int n = PQntuples(res);
	PQclear(res);
	db_free(db);
	if (n == 0) {
		fprintf(stderr, "outreachctl: npi search remove: no saved search %s\n", argv[1]);
		return 1;
	}
	printf("removed saved search %s (its providers and referral sources stay)\n", argv[1]);
	return 0;
}

static int
npi_sync(const struct cfg *c, int argc, char **argv)
{
	char err[512];
	struct db *db = ctl_db_connect(c, true);
	PGresult *res;

	if (argc > 2)
		fatalx("%s", search_usage);
	if (argc == 2)
		res = ctl_must_query(db, "npi sync", "SELECT id FROM npi_searches WHERE id::text = $1 OR name = $1",
		                 DB_ARGS(argv[1]));
	else
		res = ctl_must_query(db, "npi sync", "SELECT id FROM npi_searches WHERE active ORDER BY id", 0, NULL);
	if (PQntuples(res) == 0) {
		if (argc == 2)
			fatalx("npi sync: no saved search %s", argv[1]);
		printf("no active saved search\n");
	}
	redisContext *r = rds_connect(&c->redis_addr, c->redis.password, c->redis.timeout, err, sizeof(err));
	if (r == NULL)
		fatalx("cannot connect to Redis: %s", err);
	for (int i = 0; i < PQntuples(res); i++) {
		json_t *args = json_pack("[I]", (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10));
		struct job *job = job_new("NpiSyncJob", jobclass_find("NpiSyncJob")->queue, args);
		if (queue_push(r, job, err, sizeof(err)) == -1)
			fatalx("npi sync: %s", err);
		printf("%s %s\n", PQgetvalue(res, i, 0), job->jid);
		job_free(job);
	}
	PQclear(res);
	redisFree(r);
	db_free(db);
	return 0;
}

int
ctl_npi(const struct cfg *c, int argc, char **argv)
{
	if (argc >= 3 && strcmp(argv[1], "search") == 0) {
		if (strcmp(argv[2], "add") == 0)
			return search_add(c, argc - 2, argv + 2);
		if (strcmp(argv[2], "list") == 0)
			return search_list(c, argc - 2, argv + 2);
		if (strcmp(argv[2], "remove") == 0)
			return search_remove(c, argc - 2, argv + 2);
	}
	if (argc >= 2 && strcmp(argv[1], "sync") == 0)
		return npi_sync(c, argc - 1, argv + 1);
	fatalx("%s", search_usage);
}

/* --- COPY helpers ------------------------------------------------------------------------------ */

/* A COPY text-format stream with its own buffer, sent in large chunks: memory stays flat. */
struct copy {
	PGconn *conn;
	char *buf;
	size_t len, cap;
};

static void
copy_flush(struct copy *cp)
{
	if (cp->len && PQputCopyData(cp->conn, cp->buf, (int)cp->len) != 1)
		fatalx("COPY: %s", PQerrorMessage(cp->conn));
	cp->len = 0;
}

static void
copy_reserve(struct copy *cp, size_t n)
{
	if (cp->len + n > cp->cap) {
		copy_flush(cp);
		if (n > cp->cap) {
			cp->cap = n;
			cp->buf = xrealloc(cp->buf, cp->cap);
		}
	}
}

/* Appends one field (NULL or "" as \N) and its separator (tab, or newline when last). */
static void
copy_field(struct copy *cp, const char *v, bool last)
{
	size_t n = v ? strlen(v) : 0;

	copy_reserve(cp, 2 * n + 3);
	char *o = cp->buf + cp->len;
	if (n == 0) {
		*o++ = '\\';
		*o++ = 'N';
	} else {
		for (const char *s = v; *s; s++) {
			switch (*s) {
			case '\\': *o++ = '\\'; *o++ = '\\'; break;
			case '\t': *o++ = '\\'; *o++ = 't'; break;
			case '\n': *o++ = '\\'; *o++ = 'n'; break;
			case '\r': *o++ = '\\'; *o++ = 'r'; break;
			default: *o++ = *s;
			}
		}
	}
	*o++ = last ? '\n' : '\t';
	cp->len = (size_t)(o - cp->buf);
}

static void
copy_begin(struct db *db, struct copy *cp, const char *sql)
{
	PGresult *res = PQexec(db_conn(db), sql);
	if (PQresultStatus(res) != PGRES_COPY_IN)
		fatalx("%s: %s", sql, PQerrorMessage(db_conn(db)));
	PQclear(res);
	cp->conn = db_conn(db);
	cp->cap = 256 * 1024;
	cp->buf = xmalloc(cp->cap);
	cp->len = 0;
}

static void
copy_end(struct copy *cp)
{
	copy_flush(cp);
	if (PQputCopyEnd(cp->conn, NULL) != 1)
		fatalx("COPY: %s", PQerrorMessage(cp->conn));
	PGresult *res;
	while ((res = PQgetResult(cp->conn)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			fatalx("COPY: %s", PQresultErrorMessage(res));
		PQclear(res);
	}
	free(cp->buf);
	cp->buf = NULL;
}

static FILE *
open_input(const char *path)
{
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (fp == NULL)
		fatal("cannot open %s", path);
	setvbuf(fp, NULL, _IOFBF, 1 << 20);
	return fp;
}

/* --- NUCC taxonomy ----------------------------------------------------------------------------- */

int
ctl_import_taxonomy(const struct cfg *c, int argc, char **argv)
{
	static const char *const cols[] = {"Code",       "Grouping", "Classification", "Specialization",
	                                   "Definition", "Notes",    "Display Name",   "Section"};
	int idx[NELEM(cols)];

	if (argc != 2)
		fatalx("usage: outreachctl import-taxonomy FILE (the NUCC taxonomy CSV)");
	FILE *fp = open_input(argv[1]);
	struct csv *r = csv_open(fp, argv[1]);
	if (csv_read_header(r) == -1)
		fatalx("import-taxonomy: %s", csv_error(r));
	for (size_t i = 0; i < NELEM(cols); i++) {
		idx[i] = csv_header_index(r, cols[i]);
		if (idx[i] == -1 && i < 4)
			fatalx("import-taxonomy: %s: no column \"%s\"; is this the NUCC taxonomy CSV?", argv[1], cols[i]);
	}
	struct db *db = ctl_db_connect(c, true);
	if (db_begin(db) == -1)
		fatalx("import-taxonomy: %s", db_error(db));
	struct copy cp;
	copy_begin(db, &cp,
	           "CREATE TEMP TABLE taxonomy_stage (LIKE taxonomies INCLUDING DEFAULTS) ON COMMIT DROP; "
	           "ALTER TABLE taxonomy_stage DROP CONSTRAINT IF EXISTS taxonomy_stage_code_check; "
	           "COPY taxonomy_stage (code, grouping, classification, specialization, definition, notes, "
	           "display_name, section) FROM STDIN");
	long rows = 0, bad = 0;
	int n;
	while ((n = csv_read(r, NULL)) > 0) {
		const char *code = csv_field(r, idx[0]);
		if (code == NULL || !looks_like_code(code)) {
			bad++;
			log_warnx("%s:%lu: not a taxonomy code: %s", argv[1], csv_line(r), code ? code : "(none)");
			continue;
		}
		for (size_t i = 0; i < NELEM(cols); i++)
			copy_field(&cp, csv_field(r, idx[i]), i + 1 == NELEM(cols));
		rows++;
	}
	if (n == -1)
		fatalx("import-taxonomy: %s", csv_error(r));
	copy_end(&cp);
	PGresult *res = ctl_must_query(
	    db, "import-taxonomy",
	    "INSERT INTO taxonomies AS t (code, grouping, classification, specialization, definition, notes, "
	    "display_name, section) SELECT DISTINCT ON (code) code, grouping, classification, specialization, "
	    "definition, notes, display_name, section FROM taxonomy_stage ORDER BY code "
	    "ON CONFLICT (code) DO UPDATE SET grouping = EXCLUDED.grouping, classification = EXCLUDED.classification, "
	    "specialization = EXCLUDED.specialization, definition = EXCLUDED.definition, notes = EXCLUDED.notes, "
	    "display_name = EXCLUDED.display_name, section = EXCLUDED.section, updated_at = now() "
	    "WHERE (t.grouping, t.classification, t.specialization, t.definition, t.notes, t.display_name, t.section) "
	    "IS DISTINCT FROM (EXCLUDED.grouping, EXCLUDED.classification, EXCLUDED.specialization, "
	    "EXCLUDED.definition, EXCLUDED.notes, EXCLUDED.display_name, EXCLUDED.section)",
	    0, NULL);
	const char *changed = PQcmdTuples(res);
	printf("taxonomy: %ld codes read, %s added or changed, %ld skipped\n", rows, changed, bad);
	PQclear(res);
	if (db_commit(db) == -1)
		fatalx("import-taxonomy: %s", db_error(db));
	csv_free(r);
	if (fp != stdin)
		fclose(fp);
	db_free(db);
	return 0;
}

/* --- NPPES --------------------------------------------------------------------------------------- */

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

/* A value as stored: NULL for "" and for CMS's masks ($$$$, ****, ____, <UNAVAIL>). */
static const char *
clean(const char *v)
{
	if (v == NULL || *v == '\0')
		return NULL;
	if (strcmp(v, "<UNAVAIL>") == 0)
		return NULL;
	const char *s = v;
	while (*s == '$' || *s == '*' || *s == '_')
		s++;
	return *s == '\0' ? NULL : v;
}

/* MM/DD/YYYY as YYYY-MM-DD into out (size 11); NULL when empty or malformed. */
static const char *
us_date(const char *v, char out[11])
{
	if (v == NULL || strlen(v) != 10 || v[2] != '/' || v[5] != '/')
		return NULL;
	memcpy(out, v + 6, 4);
	out[4] = '-';
	memcpy(out + 5, v, 2);
	out[7] = '-';
	memcpy(out + 8, v + 3, 2);
	out[10] = '\0';
	for (int i = 0; i < 10; i++)
		if (i != 4 && i != 7 && !isdigit((unsigned char)out[i]))
			return NULL;
	return out;
}

static long
peak_rss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

int
ctl_import_nppes(const struct cfg *c, int argc, char **argv)
{
	const char *path = NULL, *state = NULL, *coordinator = NULL;
	char **taxes = NULL;
	int ntaxes = 0;
	bool sources = false;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--state") == 0 && i + 1 < argc)
			state = argv[++i];
		else if (strcmp(argv[i], "--taxonomy") == 0 && i + 1 < argc) {
			taxes = xrealloc(taxes, (size_t)(ntaxes + 1) * sizeof(*taxes));
			taxes[ntaxes++] = argv[++i];
		} else if (strcmp(argv[i], "--sources") == 0)
			sources = true;
		else if (strcmp(argv[i], "--coordinator") == 0 && i + 1 < argc)
			coordinator = argv[++i];
		else if (argv[i][0] != '-' && path == NULL)
			path = argv[i];
		else if (strcmp(argv[i], "-") == 0 && path == NULL)
			path = argv[i];
		else
			fatalx("usage: outreachctl import-nppes FILE [--state XX] [--taxonomy CODE]... [--sources "
			       "[--coordinator ID]]");
	}
	if (path == NULL)
		fatalx("usage: outreachctl import-nppes FILE [--state XX] [--taxonomy CODE]... [--sources [--coordinator ID]]");

	int64_t t0 = util_mono_ms();
	FILE *fp = open_input(path);
	struct csv *r = csv_open(fp, path);
	if (csv_read_header(r) == -1)
		fatalx("import-nppes: %s", csv_error(r));
	int idx[C_NCOLS], tax[NTAX], sw[NTAX];
	for (int i = 0; i < C_NCOLS; i++)
		idx[i] = csv_header_index(r, nppes_cols[i]);
	if (idx[C_DEACT] == -1)
		idx[C_DEACT] = csv_header_index(r, "NPPES Deactivation Date");
	if (idx[C_NPI] == -1)
		fatalx("import-nppes: %s: no \"NPI\" column; is this an NPPES file?", path);
	for (int k = 0; k < NTAX; k++) {
		char name[64];
		snprintf(name, sizeof(name), "Healthcare Provider Taxonomy Code_%d", k + 1);
		tax[k] = csv_header_index(r, name);
		snprintf(name, sizeof(name), "Healthcare Provider Primary Taxonomy Switch_%d", k + 1);
		sw[k] = csv_header_index(r, name);
	}
	int sex = idx[C_SEX] != -1 ? idx[C_SEX] : idx[C_GENDER];
	bool deactivation_file = idx[C_ENTITY] == -1 && idx[C_DEACT] != -1;

	struct db *db = ctl_db_connect(c, true);
	const char *coord_id = NULL;
	char coordbuf[24];
	if (coordinator) {
		PGresult *res = ctl_must_query(db, "import-nppes",
		                           "SELECT id FROM coordinators WHERE id::text = $1 OR lower(email) = lower($1)",
		                           DB_ARGS(coordinator));
		if (PQntuples(res) != 1)
			fatalx("import-nppes: no coordinator with id or email %s", coordinator);
		util_strlcpy(coordbuf, PQgetvalue(res, 0, 0), sizeof(coordbuf));
		coord_id = coordbuf;
		PQclear(res);
	}
	if (db_begin(db) == -1 || db_exec(db, "SET LOCAL statement_timeout = 0", 0, NULL) == -1)
		fatalx("import-nppes: %s", db_error(db));
	struct copy cp;
	copy_begin(db, &cp,
	           "CREATE TEMP TABLE nppes_stage (npi text, etype text, org text, last_name text, first_name text, "
	           "middle_name text, credential text, sex text, tax_code text, taxonomies text, addr1 text, "
	           "addr2 text, city text, state text, postal text, phone text, fax text, enum_date date, "
	           "last_update date, deact_date date, react_date date) ON COMMIT DROP; "
	           "COPY nppes_stage FROM STDIN");

	long rows = 0, kept = 0, filtered = 0, bad = 0, deactivated = 0;
	char tjson[NTAX * 48 + 4];
	int n;
	while ((n = csv_read(r, NULL)) > 0) {
		rows++;
		const char *npi = csv_field(r, idx[C_NPI]);
		if (npi == NULL || strlen(npi) != 10 || strspn(npi, "0123456789") != 10) {
			bad++;
			continue;
		}
		char d1[11], d2[11], d3[11], d4[11];
		const char *deact = us_date(csv_field(r, idx[C_DEACT]), d3);
		const char *react = us_date(csv_field(r, idx[C_REACT]), d4);
		const char *etype = clean(csv_field(r, idx[C_ENTITY]));
		const char *st = clean(csv_field(r, idx[C_STATE]));
		if (deact && (react == NULL || strcmp(react, deact) < 0))
			deactivated++;

		/* Taxonomies: the primary by its switch, every code in a small JSON list. */
		const char *primary = NULL;
		bool match = ntaxes == 0;
		size_t tl = 0;
		tjson[tl++] = '[';
		for (int k = 0; k < NTAX; k++) {
			const char *code = clean(csv_field(r, tax[k]));
			if (code == NULL || !looks_like_code(code))
				continue;
			const char *swv = csv_field(r, sw[k]);
			bool is_primary = swv && swv[0] == 'Y';
			if (is_primary && primary == NULL)
				primary = code;
			for (int t = 0; t < ntaxes && !match; t++)
				match = strcmp(taxes[t], code) == 0;
			tl += (size_t)snprintf(tjson + tl, sizeof(tjson) - tl, "%s{\"code\":\"%s\",\"primary\":%s}",
			                       tl > 1 ? "," : "", code, is_primary ? "true" : "false");
		}
		tjson[tl++] = ']';
		tjson[tl] = '\0';
		if (primary == NULL && tl > 2)
			primary = clean(csv_field(r, tax[0]));
		/* Filters apply to active providers; a deactivated NPI (no state, no taxonomy) is always
		 * taken so that providers already known learn of it. */
		if (!deactivation_file && etype) {
			if ((state && (st == NULL || strcmp(st, state) != 0)) || !match) {
				filtered++;
				continue;
			}
		}
		copy_field(&cp, npi, false);
		copy_field(&cp, etype ? (etype[0] == '2' ? "NPI-2" : "NPI-1") : NULL, false);
		copy_field(&cp, clean(csv_field(r, idx[C_ORG])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_LAST])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_FIRST])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_MIDDLE])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_CRED])), false);
		copy_field(&cp, clean(csv_field(r, sex)), false);
		copy_field(&cp, primary, false);
		copy_field(&cp, tl > 2 ? tjson : NULL, false);
		copy_field(&cp, clean(csv_field(r, idx[C_ADDR1])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_ADDR2])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_CITY])), false);
		copy_field(&cp, st, false);
		copy_field(&cp, clean(csv_field(r, idx[C_POSTAL])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_PHONE])), false);
		copy_field(&cp, clean(csv_field(r, idx[C_FAX])), false);
		copy_field(&cp, us_date(csv_field(r, idx[C_ENUM]), d1), false);
		copy_field(&cp, us_date(csv_field(r, idx[C_UPDATE]), d2), false);
		copy_field(&cp, deact, false);
		copy_field(&cp, react, true);
		kept++;
	}
	if (n == -1)
		fatalx("import-nppes: %s", csv_error(r));
	copy_end(&cp);
	int64_t t_copy = util_mono_ms();

	PGresult *res;
	const char *status_expr = "CASE WHEN deact_date IS NOT NULL AND (react_date IS NULL OR react_date < deact_date) "
	                          "THEN 'D' ELSE 'A' END";
	char *sql;
	if (deactivation_file)
		sql = xasprintf("UPDATE npi_providers p SET deactivation_date = s.deact_date, status = 'D', fetched_at = "
		                "now() FROM (SELECT DISTINCT ON (npi) npi, deact_date FROM nppes_stage WHERE deact_date IS "
		                "NOT NULL ORDER BY npi) s WHERE p.npi = s.npi AND p.deactivation_date IS DISTINCT FROM "
		                "s.deact_date");
	else
		sql = xasprintf(
		    "INSERT INTO npi_providers AS p (npi, enumeration_type, first_name, middle_name, last_name, "
		    "organization_name, credential, sex, primary_taxonomy_code, taxonomies, address_line1, address_line2, "
		    "city, state, postal_code, phone, fax, enumeration_date, last_updated, status, deactivation_date, "
		    "origin, fetched_at) "
		    "SELECT DISTINCT ON (npi) npi, etype, first_name, middle_name, last_name, org, credential, sex, "
		    "tax_code, taxonomies::jsonb, addr1, addr2, city, state, postal, phone, fax, enum_date, "
		    "last_update::timestamptz, %s, CASE WHEN %s = 'D' THEN deact_date END, 'nppes', now() "
		    "FROM nppes_stage ORDER BY npi, last_update DESC NULLS LAST "
		    "ON CONFLICT (npi) DO UPDATE SET enumeration_type = coalesce(EXCLUDED.enumeration_type, "
		    "p.enumeration_type), first_name = EXCLUDED.first_name, middle_name = EXCLUDED.middle_name, "
		    "last_name = EXCLUDED.last_name, organization_name = EXCLUDED.organization_name, "
		    "credential = EXCLUDED.credential, sex = EXCLUDED.sex, "
		    "primary_taxonomy_code = EXCLUDED.primary_taxonomy_code, taxonomies = EXCLUDED.taxonomies, "
		    "address_line1 = EXCLUDED.address_line1, address_line2 = EXCLUDED.address_line2, city = EXCLUDED.city, "
		    "state = EXCLUDED.state, postal_code = EXCLUDED.postal_code, phone = EXCLUDED.phone, fax = EXCLUDED.fax, "
		    "enumeration_date = EXCLUDED.enumeration_date, last_updated = EXCLUDED.last_updated, "
		    "status = EXCLUDED.status, deactivation_date = EXCLUDED.deactivation_date, origin = 'nppes', "
		    "fetched_at = now() "
		    "WHERE (p.last_updated::date, p.status) IS DISTINCT FROM (EXCLUDED.last_updated::date, EXCLUDED.status)",
		    status_expr, status_expr);
	res = ctl_must_query(db, "import-nppes: merging into npi_providers", sql, 0, NULL);
	free(sql);
	long merged = strtol(PQcmdTuples(res), NULL, 10);
	PQclear(res);

	long src_new = 0;
	if (sources && !deactivation_file) {
		/* New prospects only for active providers; known sources get the registry's fields. */
		res = ctl_must_query(
		    db, "import-nppes: merging into referral_sources",
		    "WITH s AS (SELECT DISTINCT ON (npi) * FROM nppes_stage WHERE etype IS NOT NULL AND (deact_date IS NULL "
		    "OR react_date >= deact_date) ORDER BY npi, last_update DESC NULLS LAST) "
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
		    DB_ARGS(coord_id));
		src_new = strtol(PQcmdTuples(res), NULL, 10);
		PQclear(res);
	}
	if (db_commit(db) == -1)
		fatalx("import-nppes: %s", db_error(db));
	int64_t t_end = util_mono_ms();
	double secs = (double)(t_end - t0) / 1000.0;
	printf("nppes: %ld rows read, %ld taken, %ld filtered out, %ld malformed, %ld deactivated; %ld providers "
	       "written%s",
	       rows, kept, filtered, bad, deactivated, merged, sources ? ", " : "");
	if (sources)
		printf("%ld referral sources written", src_new);
	printf("; %.2f s (read and COPY %.2f s), %.0f rows/s, peak RSS %ld kB\n", secs, (double)(t_copy - t0) / 1000.0,
	       secs > 0 ? (double)rows / secs : 0.0, peak_rss_kb());
	csv_free(r);
	if (fp != stdin)
		fclose(fp);
	free(taxes);
	db_free(db);
	return 0;
}
