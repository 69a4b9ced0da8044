/* report: outreachctl's metric commands: recompute the metric tables, print a month's key figures. */
#include "tools/report.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/db.h"
#include "common/log.h"
#include "common/migrate.h"
#include "tools/jobs.h"

int
report_parse_month(const char *s, char *out)
{
	int y, m, d;

	/* A month, or a day of it (its month is meant), from 1900 on: as MonthlyReportJob takes them. */
	if ((!util_parse_month(s, &y, &m) && !util_parse_date(s, &y, &m, &d)) || y < 1900)
		return -1;
	if (y > 9999 || m < 1 || m > 12) /* never: the parsers' ranges, said again for the compiler */
		return -1;
	snprintf(out, 11, "%04d-%02d-01", y, m);
	return 0;
}

int
ctl_metrics(const struct cfg *c, int argc, char **argv)
{
	const char *period = NULL, *as_of = NULL;
	bool enqueue = false;
	char kind[16] = "", start[16] = "";

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--period") == 0 && i + 1 < argc)
			period = argv[++i];
		else if (strcmp(argv[i], "--as-of") == 0 && i + 1 < argc)
			as_of = argv[++i];
		else if (strcmp(argv[i], "--enqueue") == 0)
			enqueue = true;
		else
			fatalx("metrics: unexpected argument %s (usage: metrics [--period full|KIND:DATE] "
			       "[--as-of TIME] [--enqueue])", argv[i]);
	}
	if (as_of && enqueue)
		fatalx("metrics: --as-of runs here, not with --enqueue (a MetricsJob is as of when it runs)");
	if (period && strcmp(period, "full") == 0)
		util_strlcpy(kind, "full", sizeof(kind));
	else if (period) {
		const char *colon = strchr(period, ':');
		size_t klen = colon ? (size_t)(colon - period) : 0;
		if (colon == NULL || klen >= sizeof(kind) || !util_parse_date(colon + 1, NULL, NULL, NULL))
			fatalx("metrics: --period %s: expected full or KIND:DATE, e.g. month:2026-11-01", period);
		memcpy(kind, period, klen);
		kind[klen] = '\0';
		util_strlcpy(start, colon + 1, sizeof(start));
		if (strcmp(kind, "day") != 0 && strcmp(kind, "week") != 0 && strcmp(kind, "month") != 0 &&
		    strcmp(kind, "quarter") != 0)
			fatalx("metrics: --period %s: the kind must be day, week, month or quarter", period);
	}

	if (enqueue) {
		char args[64];
		if (kind[0] == '\0')
			snprintf(args, sizeof(args), "[]");
		else if (start[0] == '\0')
			snprintf(args, sizeof(args), "[\"%s\"]", kind);
		else
			snprintf(args, sizeof(args), "[\"%s\", \"%s\"]", kind, start);
		char cmd[] = "enqueue", class[] = "MetricsJob", opt[] = "--args";
		char *eargv[] = {cmd, class, opt, args, NULL};
		return ctl_enqueue(c, 4, eargv);
	}

	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	int64_t t0 = util_mono_ms();
	/* An as-of without a zone is UTC, like every period; the rest runs in the session's zone. */
	PGresult *res = NULL;
	if (db_begin(db) == -1 || db_exec(db, "SET LOCAL statement_timeout = '30min'", 0, NULL) == -1 ||
	    db_exec(db, "SET LOCAL TimeZone = 'UTC'", 0, NULL) == -1 ||
	    (res = db_query(db,
	                    "SELECT run_id, periods, rows_changed, phases "
	                    "FROM outreach_metrics_refresh($1, $2::date, $3::timestamptz)",
	                    DB_ARGS(kind[0] ? kind : NULL, start[0] ? start : NULL, as_of))) == NULL ||
	    db_exec(db, "SET LOCAL TimeZone TO DEFAULT", 0, NULL) == -1 ||
	    db_exec(db, "SELECT campaign_metrics_refresh()", 0, NULL) == -1 || db_commit(db) == -1) {
		log_errorx("metrics: %s", db_error(db));
		PQclear(res);
		db_free(db);
		return 1;
	}
	printf("metrics run %s: %s period%s, %s row%s changed in %.2f s\n", PQgetvalue(res, 0, 0),
	       PQgetvalue(res, 0, 1), strcmp(PQgetvalue(res, 0, 1), "1") == 0 ? "" : "s", PQgetvalue(res, 0, 2),
	       strcmp(PQgetvalue(res, 0, 2), "1") == 0 ? "" : "s", (double)(util_mono_ms() - t0) / 1000.0);
	printf("  %s\n", PQgetvalue(res, 0, 3));
	PQclear(res);
	db_free(db);
	return 0;
}

/* --- the report ------------------------------------------------------------------------------ */

/* $1: the month's first day. */
#define MONTH_END "($1::date + interval '1 month' - interval '1 day')::date"
#define SOURCE_NAME                                                                                                \
	"CASE WHEN s.kind = 'organization' THEN s.organization_name ELSE concat_ws(' ', s.first_name, s.last_name) END"

struct section {
	const char *name;  /* JSON key and CSV section name */
	const char *title; /* text heading */
	bool single;       /* one row: printed as "label: value" lines, a JSON object */
	const char *sql;
};

static const struct section sections[] = {
    {"summary", "Summary", true,
     "SELECT (SELECT coalesce(sum(referrals), 0) FROM metric_service_lines WHERE period_kind = 'month' "
     "          AND period_start = $1) AS referrals, "
     "       (SELECT coalesce(sum(revenue_cents), 0) / 100.0 FROM metric_service_lines WHERE period_kind = 'month' "
     "          AND period_start = $1)::numeric(14, 2) AS revenue, "
     "       (SELECT count(DISTINCT source_id) FROM metric_referrals WHERE period_kind = 'month' "
     "          AND period_start = $1 AND referrals > 0) AS referring_sources, "
     "       (SELECT count(*) FROM metric_new_sources WHERE period_kind = 'month' AND period_start = $1) AS new_sources, "
     "       (SELECT count(*) FROM metric_quiet_sources WHERE period_kind = 'month' AND period_start = $1) AS gone_quiet, "
     "       (SELECT coalesce(sum(completed), 0) FROM metric_activity WHERE period_kind = 'month' "
     "          AND period_start = $1) AS activities_completed, "
     "       (SELECT coalesce(sum(opened), 0) FROM metric_cases WHERE period_kind = 'month' AND period_start = $1) "
     "          AS cases_opened, "
     "       (SELECT coalesce(sum(resolved), 0) FROM metric_cases WHERE period_kind = 'month' AND period_start = $1) "
     "          AS cases_resolved, "
     "       (SELECT coalesce(sum(still_open), 0) FROM metric_cases WHERE period_kind = 'month' AND period_start = $1) "
     "          AS cases_open_at_end, "
     "       (SELECT to_char(max(as_of) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM metric_runs) AS as_of"},
    {"service_lines", "Referrals and revenue by service line, against this month's goals", false,
     "WITH l AS (SELECT service_line, referrals, revenue_cents, new_sources FROM metric_service_lines "
     "           WHERE period_kind = 'month' AND period_start = $1), "
     "g AS (SELECT service_line, metric, target, percent FROM metric_goal_progress "
     "      WHERE period_start = $1 AND period_end = " MONTH_END "), "
     "names AS (SELECT service_line FROM l UNION SELECT service_line FROM g) "
     "SELECT n.service_line, coalesce(l.referrals, 0) AS referrals, gr.target AS referrals_goal, "
     "       gr.percent AS referrals_pct, (coalesce(l.revenue_cents, 0) / 100.0)::numeric(14, 2) AS revenue, "
     "       (gv.target / 100.0)::numeric(14, 2) AS revenue_goal, gv.percent AS revenue_pct, "
     "       coalesce(l.new_sources, 0) AS new_sources, gn.target AS new_sources_goal "
     "  FROM names n LEFT JOIN l USING (service_line) "
     "  LEFT JOIN g gr ON gr.service_line = n.service_line AND gr.metric = 'referrals' "
     "  LEFT JOIN g gv ON gv.service_line = n.service_line AND gv.metric = 'revenue_cents' "
     "  LEFT JOIN g gn ON gn.service_line = n.service_line AND gn.metric = 'new_sources' "
     " ORDER BY referrals DESC, n.service_line"},
    {"goals", "Goals running this month (progress over each goal's whole period)", false,
     "SELECT service_line, metric, period_start, period_end, "
     "       CASE WHEN metric = 'revenue_cents' THEN (value / 100)::numeric(14, 2) ELSE value END AS value, "
     "       CASE WHEN metric = 'revenue_cents' THEN (target / 100)::numeric(14, 2) ELSE target END AS target, "
     "       percent "
     "  FROM metric_goal_progress WHERE period_start <= " MONTH_END " AND period_end >= $1 "
     " ORDER BY service_line, metric, period_start, period_end"},
    {"top_referrers", "Top referrers", false,
     "SELECT s.id AS source_id, " SOURCE_NAME " AS name, coalesce(c.name, '') AS coordinator, "
     "       sum(m.referrals) AS referrals, (sum(m.revenue_cents) / 100.0)::numeric(14, 2) AS revenue "
     "  FROM metric_referrals m JOIN referral_sources s ON s.id = m.source_id "
     "  LEFT JOIN coordinators c ON c.id = s.coordinator_id "
     " WHERE m.period_kind = 'month' AND m.period_start = $1 "
     " GROUP BY s.id, c.name HAVING sum(m.referrals) > 0 "
     " ORDER BY referrals DESC, revenue DESC, s.id LIMIT 10"},
    {"gone_quiet", "Sources gone quiet (referred last month, not this month)", false,
     "SELECT s.id AS source_id, " SOURCE_NAME " AS name, coalesce(c.name, '') AS coordinator, "
     "       q.referrals_before AS referrals_last_month "
     "  FROM metric_quiet_sources q JOIN referral_sources s ON s.id = q.source_id "
     "  LEFT JOIN coordinators c ON c.id = s.coordinator_id "
     " WHERE q.period_kind = 'month' AND q.period_start = $1 "
     " ORDER BY q.referrals_before DESC, s.id"},
    {"cases", "Service cases and resolution times (hours)", false,
     "SELECT category, priority, opened, resolved, still_open AS open_at_end, "
     "       avg_resolution_hours AS avg_hours, median_resolution_hours AS median_hours "
     "  FROM metric_cases WHERE period_kind = 'month' AND period_start = $1 "
     " ORDER BY category, array_position(ARRAY['urgent', 'high', 'normal', 'low'], priority)"},
};

enum format { FMT_TEXT, FMT_CSV, FMT_JSON };

static bool
is_number(Oid t)
{
	return t == 20 || t == 21 || t == 23 || t == 700 || t == 701 || t == 1700;
}

static void
csv_field_out(FILE *out, const char *v)
{
	if (strpbrk(v, ",\"\r\n") == NULL) {
		fputs(v, out);
		return;
	}
	fputc('"', out);
	for (; *v; v++) {
		if (*v == '"')
			fputc('"', out);
		fputc(*v, out);
	}
	fputc('"', out);
}

static void
print_cell(FILE *out, const char *v, size_t width, bool right)
{
	fputc(' ', out);
	ctl_cell_pad(out, v, right ? (int)width : -(int)width);
}

/* The cells of a text table, as shown: names other applications write may hold control characters,
 * which a terminal would obey, or line breaks (ctl_cell_text). */
static char **
text_cells(PGresult *res)
{
	int nf = PQnfields(res), nr = PQntuples(res);
	char **cell = xcalloc((size_t)nf * (size_t)nr + 1, sizeof(*cell));

	for (int i = 0; i < nr; i++)
		for (int j = 0; j < nf; j++)
			cell[i * nf + j] = ctl_cell_text(PQgetisnull(res, i, j) ? "-" : PQgetvalue(res, i, j));
	return cell;
}

static void
print_text(FILE *out, const struct section *sec, PGresult *res)
{
	int nf = PQnfields(res), nr = PQntuples(res);
	char **cell = text_cells(res);

	fprintf(out, "%s\n", sec->title);
	if (sec->single) {
		for (int j = 0; j < nf && nr > 0; j++)
			fprintf(out, "  %-22s %s\n", PQfname(res, j), cell[j]);
		fputc('\n', out);
	} else if (nr == 0) {
		fprintf(out, "  (none)\n\n");
	} else {
		size_t *w = xcalloc((size_t)nf, sizeof(*w));
		for (int j = 0; j < nf; j++) {
			w[j] = util_text_width(PQfname(res, j));
			for (int i = 0; i < nr; i++) {
				size_t len = util_text_width(cell[i * nf + j]);
				if (len > w[j])
					w[j] = len;
			}
		}
		for (int i = -1; i < nr; i++) {
			fputs(" ", out);
			for (int j = 0; j < nf; j++) {
				const char *v = i < 0 ? PQfname(res, j) : cell[i * nf + j];
				print_cell(out, v, j == nf - 1 && !is_number(PQftype(res, j)) ? 0 : w[j],
				           is_number(PQftype(res, j)));
			}
			fputc('\n', out);
		}
		fputc('\n', out);
		free(w);
	}
	for (int k = 0; k < nf * nr; k++)
		free(cell[k]);
	free(cell);
}

static void
print_csv(FILE *out, const struct section *sec, PGresult *res, bool first)
{
	int nf = PQnfields(res);

	if (!first)
		fputc('\n', out);
	fputs("section", out);
	for (int j = 0; j < nf; j++) {
		fputc(',', out);
		csv_field_out(out, PQfname(res, j));
	}
	fputs("\r\n", out);
	for (int i = 0; i < PQntuples(res); i++) {
		fputs(sec->name, out);
		for (int j = 0; j < nf; j++) {
			fputc(',', out);
			if (!PQgetisnull(res, i, j))
				csv_field_out(out, PQgetvalue(res, i, j));
		}
		fputs("\r\n", out);
	}
}

static json_t *
row_json(PGresult *res, int i)
{
	json_t *o = json_object();

	for (int j = 0; j < PQnfields(res); j++) {
		const char *v = PQgetvalue(res, i, j);
		json_t *x;
		Oid t = PQftype(res, j);
		if (PQgetisnull(res, i, j))
			x = json_null();
		else if (t == 20 || t == 21 || t == 23)
			x = json_integer((json_int_t)strtoll(v, NULL, 10));
		else if (is_number(t))
			x = json_real(strtod(v, NULL));
		else
			x = json_string(v);
		json_object_set_new(o, PQfname(res, j), x);
	}
	return o;
}

int
ctl_report(const struct cfg *c, int argc, char **argv)
{
	char month[11];
	enum format fmt = FMT_TEXT;
	const char *month_arg = NULL;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--month") == 0 && i + 1 < argc)
			month_arg = argv[++i];
		else if (strcmp(argv[i], "--format") == 0 && i + 1 < argc) {
			const char *f = argv[++i];
			if (strcmp(f, "text") == 0)
				fmt = FMT_TEXT;
			else if (strcmp(f, "csv") == 0)
				fmt = FMT_CSV;
			else if (strcmp(f, "json") == 0)
				fmt = FMT_JSON;
			else
				fatalx("report: --format %s: expected text, csv or json", f);
		} else
			fatalx("report: unexpected argument %s (usage: report [--month YYYY-MM] [--format text|csv|json])",
			       argv[i]);
	}
	if (month_arg) {
		if (report_parse_month(month_arg, month) == -1)
			fatalx("report: --month %s: expected a month like 2026-11", month_arg);
	} else {
		char now[8];
		util_utc_month(time(NULL), now);
		snprintf(month, sizeof(month), "%s-01", now);
	}

	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	PGresult *runs = ctl_query(db, "report", "SELECT count(*) FROM metric_runs", 0, NULL);
	if (runs == NULL) {
		db_free(db);
		return 1;
	}
	bool never = strcmp(PQgetvalue(runs, 0, 0), "0") == 0;
	PQclear(runs);
	if (never)
		log_warnx("report: the metric tables were never computed; run `outreachctl metrics` (or a worker "
		          "serving the metrics queue) first");

	json_t *doc = json_pack("{s:s#}", "month", month, (int)7);
	int rc = 1;
	if (fmt == FMT_TEXT)
		printf("Outreach report for %.7s\n\n", month);
	for (size_t k = 0; k < NELEM(sections); k++) {
		PGresult *res = db_query(db, sections[k].sql, DB_ARGS(month));
		if (res == NULL) {
			log_errorx("report: %s: %s", sections[k].name, db_error(db));
			goto out;
		}
		if (fmt == FMT_TEXT)
			print_text(stdout, &sections[k], res);
		else if (fmt == FMT_CSV)
			print_csv(stdout, &sections[k], res, k == 0);
		else if (sections[k].single)
			json_object_set_new(doc, sections[k].name, PQntuples(res) ? row_json(res, 0) : json_object());
		else {
			json_t *a = json_array();
			for (int i = 0; i < PQntuples(res); i++)
				json_array_append_new(a, row_json(res, i));
			json_object_set_new(doc, sections[k].name, a);
		}
		PQclear(res);
	}
	if (fmt == FMT_JSON) {
		json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		fputc('\n', stdout);
	}
	rc = fflush(stdout) == 0 ? 0 : 1;
out:
	json_decref(doc);
	db_free(db);
	return rc;
}
