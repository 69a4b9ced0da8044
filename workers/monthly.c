/* monthly: MonthlyReportJob, each coordinator's (and manager's) monthly email of figures with PNG charts. */
#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/msg.h"
#include "common/queue.h"
#include "workers/alert.h"
#include "workers/handler.h"

#define MONTHS 12
#define MAX_GOALS 10

/* The coordinator and their reports: whose sources the figures cover. $1: the recipient. */
#define TEAM "(SELECT $1::bigint UNION SELECT id FROM coordinators WHERE manager_id = $1)"

static const char series_sql[] =
    "SELECT to_char(m, 'Mon'), to_char(m, 'YYYY-MM'), coalesce(sum(c.referrals), 0), coalesce(sum(c.revenue_cents), 0) "
    "  FROM generate_series($2::date - interval '11 months', $2::date, interval '1 month') m "
    "  LEFT JOIN metric_coordinators c ON c.period_kind = 'month' AND c.period_start = m::date "
    "   AND c.coordinator_id IN " TEAM " GROUP BY m ORDER BY m";

static const char summary_sql[] =
    "SELECT coalesce(sum(referrals), 0), coalesce(sum(revenue_cents), 0), coalesce(sum(new_sources), 0), "
    "       (SELECT count(DISTINCT source_id) FROM metric_referrals r JOIN referral_sources s ON s.id = r.source_id "
    "         WHERE r.period_kind = 'month' AND r.period_start = $2 AND r.referrals > 0 AND s.coordinator_id IN " TEAM "), "
    "       (SELECT coalesce(sum(completed), 0) FROM metric_activity WHERE period_kind = 'month' AND period_start = $2 "
    "           AND coordinator_id IN " TEAM "), "
    "       (SELECT count(*) FROM coordinators WHERE manager_id = $1) "
    "  FROM metric_coordinators WHERE period_kind = 'month' AND period_start = $2 AND coordinator_id IN " TEAM;

static const char quiet_sql[] =
    "SELECT CASE WHEN s.kind = 'organization' THEN s.organization_name ELSE concat_ws(' ', s.first_name, s.last_name) END, "
    "       q.referrals_before "
    "  FROM metric_quiet_sources q JOIN referral_sources s ON s.id = q.source_id "
    " WHERE q.period_kind = 'month' AND q.period_start = $2 AND s.coordinator_id IN " TEAM
    " ORDER BY q.referrals_before DESC, s.id";

static const char goals_sql[] =
    "SELECT service_line, CASE metric WHEN 'revenue_cents' THEN 'revenue ($)' WHEN 'new_sources' THEN 'new sources' "
    "       ELSE metric END, to_char(period_start, 'FMDD Mon YYYY') || ' to ' || to_char(period_end, 'FMDD Mon YYYY'), "
    "       CASE WHEN metric = 'revenue_cents' THEN to_char(value / 100, 'FM999,999,999,990') ELSE value::text END, "
    "       CASE WHEN metric = 'revenue_cents' THEN to_char(target / 100, 'FM999,999,999,990') ELSE target::text END, "
    "       coalesce(percent, 0) "
    "  FROM metric_goal_progress WHERE period_start <= ($1::date + interval '1 month' - interval '1 day')::date "
    "   AND period_end >= $1::date ORDER BY service_line, metric, period_start LIMIT " "10";

/* --- charts ----------------------------------------------------------------------------------- */

struct png {
	unsigned char *data;
	size_t len, cap;
};

static cairo_status_t
png_write(void *closure, const unsigned char *data, unsigned int len)
{
	struct png *p = closure;

	if (p->len + len > p->cap) {
		p->cap = (p->len + len) * 2;
		p->data = xrealloc(p->data, p->cap);
	}
	memcpy(p->data + p->len, data, len);
	p->len += len;
	return CAIRO_STATUS_SUCCESS;
}

/* Ends drawing on s and returns its PNG (caller frees out->data); -1 when cairo failed. */
static int
png_finish(cairo_t *cr, cairo_surface_t *s, struct png *out)
{
	memset(out, 0, sizeof(*out));
	cairo_destroy(cr);
	cairo_surface_flush(s);
	int rc = cairo_surface_write_to_png_stream(s, png_write, out) == CAIRO_STATUS_SUCCESS ? 0 : -1;
	cairo_surface_destroy(s);
	if (rc == -1) {
		free(out->data);
		memset(out, 0, sizeof(*out));
	}
	return rc;
}

static void
text_at(cairo_t *cr, const char *s, double x, double y, double size, bool centered)
{
	cairo_text_extents_t e;

	cairo_set_font_size(cr, size);
	cairo_text_extents(cr, s, &e);
	cairo_move_to(cr, centered ? x - e.width / 2 - e.x_bearing : x, y);
	cairo_show_text(cr, s);
}

/* A bar chart of n values with their labels; value_fmt formats a value above its bar. */
static int
chart_bars(const char *title, const char *const *labels, const double *values, int n, bool money, double r, double g,
           double b, struct png *out)
{
	const int W = 600, H = 240, top = 40, bottom = 30, left = 20;
	cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
	cairo_t *cr = cairo_create(s);
	double max = 0;

	for (int i = 0; i < n; i++)
		if (values[i] > max)
			max = values[i];
	cairo_set_source_rgb(cr, 1, 1, 1);
	cairo_paint(cr);
	cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
	cairo_set_source_rgb(cr, 0.15, 0.15, 0.2);
	text_at(cr, title, left, 22, 15, false);
	cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
	double slot = (double)(W - 2 * left) / n, plot = H - top - bottom - 14;
	for (int i = 0; i < n; i++) {
		double h = max > 0 ? values[i] / max * plot : 0, x = left + i * slot;
		char v[32];
		cairo_set_source_rgb(cr, i == n - 1 ? r * 0.7 : r, i == n - 1 ? g * 0.7 : g, i == n - 1 ? b * 0.7 : b);
		cairo_rectangle(cr, x + slot * 0.15, H - bottom - h, slot * 0.7, h);
		cairo_fill(cr);
		cairo_set_source_rgb(cr, 0.2, 0.2, 0.25);
		if (money && values[i] >= 1000)
			snprintf(v, sizeof(v), "$%.0fk", values[i] / 1000);
		else
			snprintf(v, sizeof(v), money ? "$%.0f" : "%.0f", values[i]);
		text_at(cr, v, x + slot / 2, H - bottom - h - 4, 10, true);
		text_at(cr, labels[i], x + slot / 2, H - bottom + 16, 11, true);
	}
	cairo_set_source_rgb(cr, 0.6, 0.6, 0.65);
	cairo_rectangle(cr, left, H - bottom, W - 2 * left, 1);
	cairo_fill(cr);
	return png_finish(cr, s, out);
}

/* One progress bar per goal: its label, a track, the part done (green at 100 % and over). */
static int
chart_goals(PGresult *goals, struct png *out)
{
	int n = PQntuples(goals);
	const int W = 600, row = 34, H = 40 + n * row, left = 20, track_x = 250, track_w = 270;
	cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, W, H);
	cairo_t *cr = cairo_create(s);

	cairo_set_source_rgb(cr, 1, 1, 1);
	cairo_paint(cr);
	cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
	cairo_set_source_rgb(cr, 0.15, 0.15, 0.2);
	text_at(cr, "Goal progress", left, 22, 15, false);
	cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
	for (int i = 0; i < n; i++) {
		double pct = strtod(PQgetvalue(goals, i, 5), NULL), y = 40 + i * row;
		char label[160], v[32];
		snprintf(label, sizeof(label), "%s: %s", PQgetvalue(goals, i, 0), PQgetvalue(goals, i, 1));
		cairo_set_source_rgb(cr, 0.2, 0.2, 0.25);
		text_at(cr, label, left, y + 15, 11, false);
		cairo_set_source_rgb(cr, 0.9, 0.9, 0.92);
		cairo_rectangle(cr, track_x, y + 4, track_w, 14);
		cairo_fill(cr);
		if (pct >= 100)
			cairo_set_source_rgb(cr, 0.18, 0.6, 0.3);
		else
			cairo_set_source_rgb(cr, 0.9, 0.6, 0.1);
		cairo_rectangle(cr, track_x, y + 4, track_w * (pct > 100 ? 1 : pct < 0 ? 0 : pct / 100), 14);
		cairo_fill(cr);
		cairo_set_source_rgb(cr, 0.2, 0.2, 0.25);
		snprintf(v, sizeof(v), "%.0f%%", pct);
		text_at(cr, v, track_x + track_w + 8, y + 15, 11, false);
	}
	return png_finish(cr, s, out);
}

/* --- delivery ----------------------------------------------------------------------------------- */

struct sent {
	char key[64], to[256];
};

/* A count from the queries above (a sum or count, never NULL), as a number for the templates: a
 * section on it ({{#new_sources}}) is skipped for 0, as Mustache does for the number and not for
 * the text "0". */
static json_int_t
count_of(const PGresult *res, int row, int col)
{
	return (json_int_t)strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static enum job_result
finish(struct job_ctx *ctx, const struct mailer_result *res, void *priv)
{
	struct sent *s = priv;
	char why[600];

	if (res->status == MAILER_SENT) {
		alert_set_status(ctx, "monthly_report", s->key, "sent", NULL);
		log_info("sent the monthly_report email %s to %s", s->key, s->to);
		return JOB_DONE;
	}
	snprintf(why, sizeof(why), "SMTP %s at %s: %d %s", mailer_status_name(res->status), mailer_stage_name(res->stage),
	         res->code, res->text);
	if (res->status == MAILER_PERMANENT && res->stage != MAILER_STAGE_AUTH) {
		alert_set_status(ctx, "monthly_report", s->key, "failed", why);
		return job_fail(ctx, JOB_DEAD, "SMTPPermanentFailure", "%s", why);
	}
	alert_set_status(ctx, "monthly_report", s->key, "sending", why);
	return job_fail(ctx, JOB_RETRY, "SMTPTemporaryFailure", "%s", why);
}

/* "2026-11" into "2026-11-01" and "November 2026". */
static void
month_names(const char *month, char first[11], char *longname, size_t len)
{
	struct tm tm = {0};

	snprintf(first, 11, "%.7s-01", month);
	if (strptime(first, "%Y-%m-%d", &tm) == NULL || strftime(longname, len, "%B %Y", &tm) == 0)
		util_strlcpy(longname, month, len);
}

/* [] or [month]: one MonthlyReportJob per coordinator who owns sources or manages someone. */
static enum job_result
fan_out(struct job_ctx *ctx, const char *month)
{
	char err[256];

	/* The figures as of now: the periods touched since the last metrics run are recomputed first. */
	if (db_begin(ctx->db) == -1 || db_exec(ctx->db, "SET LOCAL statement_timeout = '30min'", 0, NULL) == -1 ||
	    db_exec(ctx->db, "SELECT outreach_metrics_refresh()", 0, NULL) == -1 || db_commit(ctx->db) == -1) {
		char why[512];
		util_strlcpy(why, db_error(ctx->db), sizeof(why));
		db_rollback(ctx->db);
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "refreshing the metrics: %s", why);
	}
	PGresult *res = db_query(ctx->db,
	                         "SELECT c.id FROM coordinators c WHERE c.active AND (EXISTS (SELECT 1 FROM referral_sources s "
	                         "WHERE s.coordinator_id = c.id) OR EXISTS (SELECT 1 FROM coordinators r WHERE r.manager_id = c.id)) "
	                         "ORDER BY c.id",
	                         0, NULL);
	if (res == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "listing coordinators: %s", db_error(ctx->db));
	for (int i = 0; i < PQntuples(res); i++) {
		struct job *j = job_new("MonthlyReportJob", "alerts",
		                        json_pack("[I, s]", (json_int_t)strtoll(PQgetvalue(res, i, 0), NULL, 10), month));
		int rc = queue_push(ctx->redis, j, err, sizeof(err));
		job_free(j);
		if (rc == -1) {
			PQclear(res);
			/* The emails are keyed: pushing them all again on the retry sends none twice. */
			return job_fail(ctx, JOB_RETRY, "RedisError", "pushing the monthly reports: %s", err);
		}
	}
	log_info("monthly report %s: %d email job%s queued", month, PQntuples(res), PQntuples(res) == 1 ? "" : "s");
	PQclear(res);
	return JOB_DONE;
}

enum job_result
monthly_report_run(struct job_ctx *ctx)
{
	size_t nargs = json_array_size(ctx->job->args);
	char month[8], current[8], first[11], longname[32], key[64], message_id[256], fname[128];
	struct alert_person p;
	enum job_result rc;
	bool go;

	/* One reading of the clock: without a month given, the one before the current month. */
	util_utc_month(time(NULL), current);
	if (nargs == 2)
		util_strlcpy(month, json_string_value(json_array_get(ctx->job->args, 1)), sizeof(month));
	else if (nargs == 1)
		util_strlcpy(month, json_string_value(json_array_get(ctx->job->args, 0)), sizeof(month));
	else if (!util_month_offset(current, -1, month, sizeof(month)))
		return job_fail(ctx, JOB_RETRY, "JobError", "no month before '%s' (the clock in UTC)", current);
	/* A month not yet over would be reported in part and its key claimed, so the real report would
	 * never go out; asked for after the fact, the figures are the whole month's. */
	if (strcmp(month, current) >= 0)
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "month %s has not ended (it is %s in UTC)", month, current);
	if (nargs < 2)
		return fan_out(ctx, month);

	char id[24];
	snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_array_get(ctx->job->args, 0)));
	if ((rc = alert_load_person(ctx, id, NULL, &p)) != JOB_DONE)
		return rc;
	snprintf(key, sizeof(key), "%s:%s", id, month);
	if (alert_inactive(&p, "monthly_report", key))
		return JOB_DONE;
	if ((rc = alert_claim(ctx, "monthly_report", key, &p, message_id, &go)) != JOB_DONE || !go)
		return rc;
	month_names(month, first, longname, sizeof(longname));

	PGresult *series = db_query(ctx->db, series_sql, DB_ARGS(id, first));
	PGresult *sum = series ? db_query(ctx->db, summary_sql, DB_ARGS(id, first)) : NULL;
	PGresult *quiet = sum ? db_query(ctx->db, quiet_sql, DB_ARGS(id, first)) : NULL;
	PGresult *goals = quiet ? db_query(ctx->db, goals_sql, DB_ARGS(first)) : NULL;
	if (goals == NULL) {
		rc = job_fail(ctx, JOB_RETRY, "DatabaseError", "monthly report %s: %s", key, db_error(ctx->db));
		PQclear(series);
		PQclear(sum);
		PQclear(quiet);
		return rc;
	}

	/* The numbers, for the text part and the HTML tables. */
	const char *labels[MONTHS];
	double refs[MONTHS], revenue[MONTHS];
	int n = PQntuples(series) < MONTHS ? PQntuples(series) : MONTHS;
	json_t *months = json_array(), *quiets = json_array(), *goal_list = json_array();
	for (int i = 0; i < n; i++) {
		labels[i] = PQgetvalue(series, i, 0);
		refs[i] = strtod(PQgetvalue(series, i, 2), NULL);
		revenue[i] = strtod(PQgetvalue(series, i, 3), NULL) / 100.0;
		char money[32];
		snprintf(money, sizeof(money), "%.2f", revenue[i]);
		json_array_append_new(months, json_pack("{s:s, s:I, s:s}", "month", PQgetvalue(series, i, 1), "referrals",
		                                        count_of(series, i, 2), "revenue", money));
	}
	for (int i = 0; i < PQntuples(quiet); i++)
		json_array_append_new(quiets, json_pack("{s:s, s:I}", "name", PQgetvalue(quiet, i, 0), "referrals_before",
		                                        count_of(quiet, i, 1)));
	for (int i = 0; i < PQntuples(goals); i++) {
		char pct[16];
		snprintf(pct, sizeof(pct), "%.0f", strtod(PQgetvalue(goals, i, 5), NULL));
		json_array_append_new(goal_list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "service_line",
		                                           PQgetvalue(goals, i, 0), "metric", PQgetvalue(goals, i, 1),
		                                           "period", PQgetvalue(goals, i, 2), "value", PQgetvalue(goals, i, 3),
		                                           "target", PQgetvalue(goals, i, 4), "percent", pct));
	}
	char revenue_month[32];
	snprintf(revenue_month, sizeof(revenue_month), "%.2f", strtod(PQgetvalue(sum, 0, 1), NULL) / 100.0);
	bool manager = strcmp(PQgetvalue(sum, 0, 5), "0") != 0;
	json_t *context = json_pack(
	    "{s:{s:s, s:s, s:s}, s:s, s:s, s:b, s:I, s:s, s:I, s:I, s:I, s:I, s:o, s:o, s:b, s:o, s:b, s:s, s:s, s:s}",
	    "person", "name", p.name, "first_name", alert_first_name(p.name, fname, sizeof(fname)), "email", p.email,
	    "month", month, "month_long", longname, "manager", manager, "referrals", count_of(sum, 0, 0), "revenue",
	    revenue_month, "new_sources", count_of(sum, 0, 2), "referring_sources", count_of(sum, 0, 3),
	    "activities_completed", count_of(sum, 0, 4), "gone_quiet_count", (json_int_t)PQntuples(quiet), "months",
	    months, "gone_quiet", quiets, "has_gone_quiet", PQntuples(quiet) > 0, "goals", goal_list, "has_goals",
	    PQntuples(goals) > 0, "referrals_chart", "referrals.png@outreach", "revenue_chart", "revenue.png@outreach",
	    "goals_chart", "goals.png@outreach");

	/* The charts. */
	struct png charts[3] = {{0}};
	char title[96];
	snprintf(title, sizeof(title), "Referrals, last 12 months to %s", longname);
	int bad = chart_bars(title, labels, refs, n, false, 0.2, 0.45, 0.75, &charts[0]);
	snprintf(title, sizeof(title), "Revenue from referrals, last 12 months to %s", longname);
	bad |= chart_bars(title, labels, revenue, n, true, 0.25, 0.6, 0.45, &charts[1]);
	if (PQntuples(goals) > 0)
		bad |= chart_goals(goals, &charts[2]);
	PQclear(series);
	PQclear(sum);
	PQclear(quiet);
	PQclear(goals);

	char *subject, *text, *html, *data = NULL;
	size_t len = 0;
	struct msg *m = msg_new();
	mailtmpl_render(handler_templates("monthly_report"), context, &subject, &text, &html);
	json_decref(context);
	char too_long[96];
	const char *person_bad = alert_person_too_long(&p, too_long, sizeof(too_long));
	if (bad || person_bad || msg_set_id(m, message_id) == -1 ||
	    msg_set_from(m, ctx->cfg->alerts.from_name, ctx->cfg->smtp.from) == -1 || msg_add_to(m, p.name, p.email) == -1 ||
	    msg_set_subject(m, subject) == -1 || msg_add_header(m, "Auto-Submitted", "auto-generated") == -1 ||
	    msg_add_header(m, "X-Outreach-Jid", ctx->job->jid) == -1 || msg_set_text(m, text) == -1 ||
	    msg_set_html(m, html) == -1 ||
	    msg_add_inline_image(m, "referrals.png@outreach", "image/png", charts[0].data, charts[0].len) == -1 ||
	    msg_add_inline_image(m, "revenue.png@outreach", "image/png", charts[1].data, charts[1].len) == -1 ||
	    (charts[2].data && msg_add_inline_image(m, "goals.png@outreach", "image/png", charts[2].data, charts[2].len) == -1) ||
	    msg_render(m, &data, &len) == -1) {
		char why[512];
		snprintf(why, sizeof(why), "cannot build the monthly report to %s: %s", p.email,
		         bad ? "drawing a chart failed" : person_bad ? person_bad : msg_error(m));
		alert_set_status(ctx, "monthly_report", key, "failed", why);
		rc = job_fail(ctx, JOB_DEAD, "InvalidEmail", "%s", why);
		free(data);
	} else {
		struct sent *s = xcalloc(1, sizeof(*s));
		util_strlcpy(s->key, key, sizeof(s->key));
		util_strlcpy(s->to, p.email, sizeof(s->to));
		struct job_mail mail = {.data = data, .len = len, .rcpt = xstrdup(p.email), .finish = finish, .priv = s,
		                        .free_priv = free};
		rc = job_send_mail(ctx, &mail);
	}
	for (size_t i = 0; i < NELEM(charts); i++)
		free(charts[i].data);
	free(subject);
	free(text);
	free(html);
	msg_free(m);
	return rc;
}

void
monthly_shutdown(void)
{
	/* The charts' text brought in cairo's font caches and fontconfig's configuration, kept for the
	 * life of the process; released at its end so that none of it counts as leaked. */
	cairo_debug_reset_static_data();
	FcFini();
}
