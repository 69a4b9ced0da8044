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
#include "common/nppes.h"
#include "common/pgcopy.h"
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
	struct db *db = NULL;
	PGresult *res = NULL;
	char *text = NULL;
	char err[512];
	int rc = 1;

	if (argc < 2 || argv[1][0] == '-') {
		log_errorx("%s", search_usage);
		goto out;
	}
	const char *name = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (val == NULL) {
			log_errorx("npi search add: %s needs a value", opt);
			goto out;
		}
		i++;
		if (strcmp(opt, "--criteria") == 0) {
			json_error_t jerr;
			json_t *j = json_loads(val, 0, &jerr);
			if (j == NULL || !json_is_object(j)) {
				log_errorx("npi search add: --criteria must be a JSON object%s%s", j ? "" : ": ",
				           j ? "" : jerr.text);
				json_decref(j);
				goto out;
			}
			json_object_update(criteria, j);
			json_decref(j);
		} else if (strcmp(opt, "--taxonomy") == 0) {
			json_object_set_new(criteria, nppes_is_taxonomy_code(val) ? "taxonomy_code" : "taxonomy_description",
			                    json_string(val));
		} else if (strcmp(opt, "--coordinator") == 0) {
			coordinator = val;
		} else {
			size_t k;
			for (k = 0; k < NELEM(opts); k++)
				if (strcmp(opts[k].opt, opt) == 0)
					break;
			if (k == NELEM(opts)) {
				log_errorx("npi search add: unknown option %s\n%s", opt, search_usage);
				goto out;
			}
			json_object_set_new(criteria, opts[k].key, json_string(val));
		}
	}
	if (npi_criteria_check(criteria, err, sizeof(err)) == -1) {
		log_errorx("npi search add: %s", err);
		goto out;
	}
	if ((db = ctl_db_open(c, true)) == NULL)
		goto out;
	text = json_dumps(criteria, JSON_COMPACT | JSON_SORT_KEYS);
	const char *coord_id = NULL;
	char idbuf[24];
	if (coordinator) {
		res = ctl_query(db, "npi search add",
		                "SELECT id FROM coordinators WHERE id::text = $1 OR lower(email) = lower($1)",
		                DB_ARGS(coordinator));
		if (res == NULL)
			goto out;
		if (PQntuples(res) != 1) {
			log_errorx("npi search add: no coordinator with id or email %s", coordinator);
			goto out;
		}
		util_strlcpy(idbuf, PQgetvalue(res, 0, 0), sizeof(idbuf));
		coord_id = idbuf;
		PQclear(res);
	}
	res = db_query(db, "INSERT INTO npi_searches (name, criteria, coordinator_id) VALUES ($1, $2::jsonb, $3) "
	                   "RETURNING id",
	               DB_ARGS(name, text, coord_id));
	if (res == NULL) {
		log_errorx("npi search add: %s", strcmp(db_sqlstate(db), "23505") == 0
		                                         ? "a saved search of that name exists already"
		                                         : db_error(db));
		goto out;
	}
	printf("%s\n", PQgetvalue(res, 0, 0));
	rc = 0;
out:
	PQclear(res);
	free(text);
	json_decref(criteria);
	db_free(db);
	return rc;
}

static int
search_list(const struct cfg *c, int argc, char **argv)
{
	bool as_json = argc > 1 && strcmp(argv[1], "--json") == 0;
	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	PGresult *res = ctl_query(
	    db, "npi search list",
	    "SELECT s.id, s.name, s.criteria::text, coalesce(co.email, ''), s.active, "
	    "coalesce(r.status, ''), coalesce(to_char(r.started_at, 'YYYY-MM-DD HH24:MI'), ''), "
	    "coalesce(r.records_seen, 0), coalesce(r.created, 0), coalesce(r.updated, 0), coalesce(r.errors, 0), "
	    "coalesce(r.reopened, 0) "
	    "FROM npi_searches s LEFT JOIN coordinators co ON co.id = s.coordinator_id "
	    "LEFT JOIN LATERAL (SELECT * FROM npi_sync_runs x WHERE x.search_id = s.id ORDER BY x.started_at DESC, "
	    "x.id DESC LIMIT 1) r ON true ORDER BY s.id",
	    0, NULL);
	if (res == NULL) {
		db_free(db);
		return 1;
	}
	if (as_json) {
		json_t *a = json_array();
		for (int i = 0; i < PQntuples(res); i++)
			json_array_append_new(
			    a, json_pack("{s:I, s:s, s:o, s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:I, s:I}", "id",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), "name", PQgetvalue(res, i, 1),
			                 "criteria", json_loads(PQgetvalue(res, i, 2), 0, NULL), "coordinator",
			                 PQgetvalue(res, i, 3), "active", PQgetvalue(res, i, 4)[0] == 't', "last_run_status",
			                 PQgetvalue(res, i, 5), "last_run_started", PQgetvalue(res, i, 6), "records_seen",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 7), NULL, 10), "created",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 8), NULL, 10), "updated",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 9), NULL, 10), "errors",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 10), NULL, 10), "reopened",
			                 (json_int_t)strtoll(PQgetvalue(res, i, 11), NULL, 10)));
		char *t = json_dumps(a, JSON_INDENT(2));
		printf("%s\n", t);
		free(t);
		json_decref(a);
	} else {
		static const int width[] = {-5, -24, -8, -24, 0};
		ctl_row("", NELEM(width), width,
		        (const char *const[]){"ID", "NAME", "ACTIVE", "COORDINATOR", "CRITERIA / LAST RUN"});
		for (int i = 0; i < PQntuples(res); i++) {
			ctl_row("", NELEM(width), width,
			        (const char *const[]){PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
			                              PQgetvalue(res, i, 4)[0] == 't' ? "yes" : "no", PQgetvalue(res, i, 3),
			                              PQgetvalue(res, i, 2)});
			if (PQgetvalue(res, i, 5)[0]) {
				printf("%-5s last run %s (%s): %s providers, %s created, %s updated, %s errors", "",
				       PQgetvalue(res, i, 6), PQgetvalue(res, i, 5), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8),
				       PQgetvalue(res, i, 9), PQgetvalue(res, i, 10));
				if (strcmp(PQgetvalue(res, i, 11), "0") != 0)
					printf(", %s prospects reopened", PQgetvalue(res, i, 11));
				printf("\n");
			}
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
	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	PGresult *res = ctl_query(db, "npi search remove",
	                          "DELETE FROM npi_searches WHERE id::text = $1 OR name = $1 RETURNING id", DB_ARGS(argv[1]));
	int n = res ? PQntuples(res) : -1;
	PQclear(res);
	db_free(db);
	if (n == -1)
		return 1;
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
	redisContext *r = NULL;
	PGresult *res = NULL;
	int rc = 1;

	if (argc > 2)
		fatalx("%s", search_usage);
	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	if (argc == 2)
		res = ctl_query(db, "npi sync", "SELECT id FROM npi_searches WHERE id::text = $1 OR name = $1",
		                DB_ARGS(argv[1]));
	else
		res = ctl_query(db, "npi sync", "SELECT id FROM npi_searches WHERE active ORDER BY id", 0, NULL);
	if (res == NULL)
		goto out;
	if (PQntuples(res) == 0) {
		if (argc == 2) {
			log_errorx("npi sync: no saved search %s", argv[1]);
			goto out;
		}
		printf("no active saved search\n");
	}
	if ((r = ctl_redis_open(c)) == NULL)
		goto out;
	for (int i = 0; i < PQntuples(res); i++) {
		json_t *args = json_pack("[I]", (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10));
		struct job *job = job_new("NpiSyncJob", jobclass_find("NpiSyncJob")->queue, args);
		if (queue_push(r, job, err, sizeof(err)) == -1) {
			log_errorx("npi sync: %s", err);
			job_free(job);
			goto out;
		}
		printf("%s %s\n", PQgetvalue(res, i, 0), job->jid);
		job_free(job);
	}
	rc = 0;
out:
	PQclear(res);
	redisFree(r);
	db_free(db);
	return rc;
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
	struct db *db = NULL;
	struct pgcopy cp;
	bool copying = false;
	int rc = 1;
	if (csv_read_header(r) == -1) {
		log_errorx("import-taxonomy: %s", csv_error(r));
		goto out;
	}
	for (size_t i = 0; i < NELEM(cols); i++) {
		idx[i] = csv_header_index(r, cols[i]);
		if (idx[i] == -1 && i < 4) {
			log_errorx("import-taxonomy: %s: no column \"%s\"; is this the NUCC taxonomy CSV?", argv[1],
			           cols[i]);
			goto out;
		}
	}
	if ((db = ctl_db_open(c, true)) == NULL)
		goto out;
	if (db_begin(db) == -1) {
		log_errorx("import-taxonomy: %s", db_error(db));
		goto out;
	}
	if (pgcopy_begin(&cp, db_conn(db),
	           "CREATE TEMP TABLE taxonomy_stage (LIKE taxonomies INCLUDING DEFAULTS) ON COMMIT DROP; "
	           "ALTER TABLE taxonomy_stage DROP CONSTRAINT IF EXISTS taxonomy_stage_code_check; "
	           "COPY taxonomy_stage (code, grouping, classification, specialization, definition, notes, "
	                 "display_name, section) FROM STDIN WITH (FORMAT binary)") == -1) {
		log_errorx("import-taxonomy: %s", cp.errstr);
		goto out;
	}
	copying = true;
	long rows = 0, bad = 0;
	int n;
	while ((n = csv_read(r, NULL)) > 0) {
		const char *code = csv_field(r, idx[0]);
		if (code == NULL || !nppes_is_taxonomy_code(code)) {
			bad++;
			log_warnx("%s:%lu: not a taxonomy code: %s", argv[1], csv_line(r), code ? code : "(none)");
			continue;
		}
		pgcopy_row(&cp, (int)NELEM(cols));
		for (size_t i = 0; i < NELEM(cols); i++)
			pgcopy_text(&cp, csv_field(r, idx[i]));
		rows++;
	}
	if (n == -1) {
		log_errorx("import-taxonomy: %s", csv_error(r));
		goto out;
	}
	copying = false;
	if (pgcopy_end(&cp) == -1) {
		log_errorx("import-taxonomy: %s", cp.errstr);
		goto out;
	}
	PGresult *res = ctl_query(
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
	if (res == NULL)
		goto out;
	const char *changed = PQcmdTuples(res);
	printf("taxonomy: %ld codes read, %s added or changed, %ld skipped\n", rows, changed, bad);
	PQclear(res);
	if (db_commit(db) == -1) {
		log_errorx("import-taxonomy: %s", db_error(db));
		goto out;
	}
	rc = 0;
out:
	if (copying)
		pgcopy_abort(&cp, "import-taxonomy stopped");
	csv_free(r);
	if (fp != stdin)
		fclose(fp);
	db_free(db);
	return rc;
}

/* --- NPPES --------------------------------------------------------------------------------------- */

static long
peak_rss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static const char nppes_usage[] =
    "usage: outreachctl import-nppes FILE [--kind full|weekly|deactivation] [--state XX] [--taxonomy CODE]...\n"
    "                                [--prospects [--coordinator ID|EMAIL]]";

int
ctl_import_nppes(const struct cfg *c, int argc, char **argv)
{
	struct nppes_opts o = {0};
	struct nppes_stats st;
	char err[1024];

	for (int i = 1; i < argc; i++) {
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(argv[i], "--state") == 0 && val) {
			o.state = val;
			i++;
		} else if (strcmp(argv[i], "--taxonomy") == 0 && val) {
			if (o.ntaxonomies == NPPES_MAX_TAXONOMIES)
				fatalx("import-nppes: at most %d --taxonomy codes", NPPES_MAX_TAXONOMIES);
			o.taxonomies[o.ntaxonomies++] = val;
			i++;
		} else if (strcmp(argv[i], "--kind") == 0 && val) {
			if (nppes_kind_parse(val, &o.kind) == -1 || o.kind == NPPES_ANY)
				fatalx("import-nppes: --kind must be full, weekly or deactivation, not %s", val);
			i++;
		} else if (strcmp(argv[i], "--prospects") == 0 || strcmp(argv[i], "--sources") == 0) {
			o.prospects = true;
		} else if (strcmp(argv[i], "--coordinator") == 0 && val) {
			o.coordinator = val;
			i++;
		} else if ((argv[i][0] != '-' || strcmp(argv[i], "-") == 0) && o.path == NULL) {
			o.path = argv[i];
		} else {
			fatalx("%s", nppes_usage);
		}
	}
	if (o.path == NULL)
		fatalx("%s", nppes_usage);
	if (o.coordinator && !o.prospects)
		fatalx("import-nppes: --coordinator only goes with --prospects");

	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	if (nppes_import(db, &o, &st, err, sizeof(err)) == -1) {
		log_errorx("import-nppes: %s", err);
		db_free(db);
		return 1;
	}
	double secs = (double)st.ms / 1000.0;
	printf("nppes: %ld rows read, %ld taken, %ld filtered out, %ld malformed, %ld deactivated; %ld providers "
	       "written",
	       st.rows, st.kept, st.filtered, st.bad, st.deactivated, st.providers);
	if (o.prospects)
		printf(", %ld referral sources written", st.sources);
	if (st.sources_closed)
		printf(", %ld prospects closed (NPI deactivated)", st.sources_closed);
	if (st.sources_reopened)
		printf(", %ld prospects reopened (NPI reactivated)", st.sources_reopened);
	if (st.active_deactivated)
		printf(", %ld active referral sources have a deactivated NPI", st.active_deactivated);
	printf("; %.2f s (read and COPY %.2f s%s%s), %.0f rows/s, peak RSS %ld kB\n", secs,
	       (double)st.copy_ms / 1000.0, st.direct ? ", straight into the empty table" : "",
	       st.duplicates ? ", duplicate NPIs" : "", secs > 0 ? (double)st.rows / secs : 0.0, peak_rss_kb());
	db_free(db);
	return 0;
}
