/* figures: the current month's business figures for /metrics, read from the metric tables. */
#include "daemon/figures.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"

#define TICK_MS 1000
#define REFRESH_S 60.0

/* A gauge family: its name, help text and the names of its labels (the query's columns 2 to 4). */
struct family {
	const char *name;
	const char *help;
	const char *labels[3];
};

static const struct family families[] = {
    {"outreach_month_referrals", "Referrals received this month (UTC), by service line, as of the last metrics run.",
     {"service_line"}},
    {"outreach_month_revenue_dollars", "Encounter revenue this month, in dollars, by service line of the referral.",
     {"service_line"}},
    {"outreach_month_referring_sources", "Referral sources that referred this month, by service line.",
     {"service_line"}},
    {"outreach_month_new_sources", "Referral sources whose first referral ever came this month, by service line.",
     {"service_line"}},
    {"outreach_month_quiet_sources", "Referral sources that referred last month and not this month.", {NULL}},
    {"outreach_month_activities_completed", "Outreach activities completed this month.", {NULL}},
    {"outreach_open_cases", "Service cases open as of the last metrics run, by category and priority.",
     {"category", "priority"}},
    {"outreach_goal_target", "Target of each goal running today.", {"goal_id", "service_line", "metric"}},
    {"outreach_goal_value", "What each goal running today has reached so far.", {"goal_id", "service_line", "metric"}},
    {"outreach_goal_percent", "Each goal's value as a percentage of its target (goals with a target above 0).",
     {"goal_id", "service_line", "metric"}},
    {"outreach_metrics_last_run_timestamp_seconds", "When the figures above were computed (the last metrics run).",
     {NULL}},
};

/* Rows of (family, label 1, label 2, label 3, value), in the order of families. */
static const char figures_sql[] =
    "WITH m AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date AS start,"
    "                  (now() AT TIME ZONE 'UTC')::date AS today),"
    " lines AS (SELECT l.* FROM metric_service_lines l, m WHERE l.period_kind = 'month' AND l.period_start = m.start),"
    " goals AS (SELECT g.* FROM metric_goal_progress g, m WHERE g.period_start <= m.today AND g.period_end >= m.today)"
    " SELECT 0 AS f, service_line AS a, NULL AS b, NULL AS c, referrals::text AS v FROM lines"
    " UNION ALL SELECT 1, service_line, NULL, NULL, (revenue_cents / 100.0)::numeric(16, 2)::text FROM lines"
    " UNION ALL SELECT 2, service_line, NULL, NULL, referring_sources::text FROM lines"
    " UNION ALL SELECT 3, service_line, NULL, NULL, new_sources::text FROM lines"
    " UNION ALL SELECT 4, NULL, NULL, NULL, count(*)::text FROM metric_quiet_sources q, m"
    "            WHERE q.period_kind = 'month' AND q.period_start = m.start"
    " UNION ALL SELECT 5, NULL, NULL, NULL, coalesce(sum(completed), 0)::text FROM metric_activity a, m"
    "            WHERE a.period_kind = 'month' AND a.period_start = m.start"
    " UNION ALL SELECT 6, category, priority, NULL, still_open::text FROM metric_cases c, m"
    "            WHERE c.period_kind = 'month' AND c.period_start = m.start"
    " UNION ALL SELECT 7, goal_id::text, service_line, metric, target::text FROM goals"
    " UNION ALL SELECT 8, goal_id::text, service_line, metric, value::text FROM goals"
    " UNION ALL SELECT 9, goal_id::text, service_line, metric, percent::text FROM goals WHERE percent IS NOT NULL"
    " UNION ALL SELECT 10, NULL, NULL, NULL, extract(epoch FROM max(as_of))::text FROM metric_runs"
    "            HAVING max(as_of) IS NOT NULL"
    " ORDER BY 1, 2, 3, 4";

struct figures {
	struct apg *pg;
	struct event *ev_tick;
	char *text; /* the rendered families, NULL before the first read */
	double read_at;
	bool pending;
};

void
figures_label(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", out);
		else if (*s == '"')
			fputs("\\\"", out);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

/* The value column as a sample value: a number PostgreSQL printed, or nothing. */
static bool
value_ok(const char *v)
{
	char *end;
	if (*v == '\0')
		return false;
	(void)strtod(v, &end);
	return *end == '\0';
}

static void
render(FILE *out, const PGresult *res)
{
	int nrows = PQntuples(res);
	int r = 0;

	for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
		const struct family *fam = &families[i];
		fprintf(out, "# HELP %s %s\n# TYPE %s gauge\n", fam->name, fam->help, fam->name);
		for (; r < nrows && atoi(PQgetvalue(res, r, 0)) == (int)i; r++) {
			const char *v = PQgetvalue(res, r, 4);
			if (!value_ok(v))
				continue;
			fputs(fam->name, out);
			for (int l = 0; l < 3 && fam->labels[l]; l++) {
				fprintf(out, "%s%s=\"", l == 0 ? "{" : ",", fam->labels[l]);
				figures_label(out, PQgetvalue(res, r, 1 + l));
				fputc('"', out);
			}
			fprintf(out, "%s %s\n", fam->labels[0] ? "}" : "", v);
		}
	}
}

static void
on_figures(PGresult *res, const char *errmsg, void *priv)
{
	struct figures *f = priv;

	f->pending = false;
	if (res == NULL) {
		log_warnx("figures: reading the metric tables: %s", errmsg);
		return;
	}
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	if (out == NULL) {
		log_warn("figures: open_memstream");
		return;
	}
	render(out, res);
	fclose(out);
	free(f->text);
	f->text = text;
	f->read_at = util_now();
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
	struct figures *f = arg;

	(void)fd, (void)what;
	if (f->pending || !apg_schema_ok(f->pg) || (f->text && util_now() - f->read_at < REFRESH_S))
		return;
	f->pending = apg_query(f->pg, figures_sql, 0, NULL, on_figures, f) == 0;
}

struct figures *
figures_new(struct event_base *base, struct apg *pg)
{
	struct figures *f = xcalloc(1, sizeof(*f));
	struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};

	f->pg = pg;
	f->ev_tick = event_new(base, -1, EV_PERSIST, on_tick, f);
	event_add(f->ev_tick, &tv);
	return f;
}

void
figures_free(struct figures *f)
{
	if (f == NULL)
		return;
	event_free(f->ev_tick);
	free(f->text);
	free(f);
}

void
figures_metrics(const struct figures *f, FILE *out)
{
	if (f->text)
		fputs(f->text, out);
}
