/* digest: OverdueDigestJob and ManagerDigestJob, the daily emails of referral sources due for contact. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "workers/alert.h"
#include "workers/handler.h"

/* The columns every source row carries, from SOURCE_COLUMNS onwards; $tz is the reader's zone. */
#define SOURCE_COLUMNS                                                                                             \
	"s.id, "                                                                                                   \
	"CASE WHEN s.kind = 'organization' THEN s.organization_name "                                              \
	"     ELSE concat_ws(' ', s.first_name, s.last_name) END, "                                                \
	"coalesce(s.credential, ''), coalesce(s.specialty, ''), "                                                  \
	"CASE WHEN s.kind = 'physician' THEN coalesce(s.organization_name, '') ELSE '' END, "                      \
	"coalesce(s.phone, ''), "                                                                                  \
	"coalesce(to_char(s.last_contact_at AT TIME ZONE tz.name, 'FMDD Mon YYYY'), 'never'), "                    \
	"coalesce(la.kind, ''), "                                                                                  \
	"s.next_due_at <= now(), "                                                                                 \
	"floor(extract(epoch FROM now() - s.next_due_at) / 86400)::int, "                                          \
	"to_char(s.next_due_at AT TIME ZONE tz.name, 'Dy FMDD Mon') "
#define LAST_ACTIVITY                                                                                              \
	"LEFT JOIN LATERAL (SELECT a.kind FROM activities a WHERE a.source_id = s.id AND a.completed_at IS NOT NULL " \
	"                   AND a.canceled_at IS NULL ORDER BY a.completed_at DESC LIMIT 1) la ON true "

static const char digest_sql[] = "SELECT " SOURCE_COLUMNS "FROM referral_sources s "
                                 "CROSS JOIN (SELECT $3::text AS name) tz " LAST_ACTIVITY
                                 "WHERE s.coordinator_id = $1 AND s.next_due_at <= now() + make_interval(days => $2::int) "
                                 "ORDER BY s.next_due_at, s.id";

static const char manager_sql[] = "SELECT " SOURCE_COLUMNS ", c.id, c.name, c.email FROM referral_sources s "
                                  "JOIN coordinators c ON c.id = s.coordinator_id "
                                  "CROSS JOIN (SELECT $3::text AS name) tz " LAST_ACTIVITY
                                  "WHERE c.manager_id = $1 AND s.next_due_at <= now() - make_interval(days => $2::int) "
                                  "ORDER BY c.name, c.id, s.next_due_at, s.id";

/* One source as the templates see it, from the row's first eleven columns. */
static json_t *
source_json(const struct job_ctx *ctx, PGresult *res, int row)
{
	const char *id = PQgetvalue(res, row, 0);
	char *url = alert_record_url(ctx, id);
	json_t *o = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:s, s:s}", "id",
	                      (json_int_t)strtoll(id, NULL, 10), "name", PQgetvalue(res, row, 1), "credential",
	                      PQgetvalue(res, row, 2), "specialty", PQgetvalue(res, row, 3), "practice",
	                      PQgetvalue(res, row, 4), "phone", PQgetvalue(res, row, 5), "last_contact",
	                      PQgetvalue(res, row, 6), "last_contact_kind", PQgetvalue(res, row, 7), "days_overdue",
	                      (json_int_t)strtoll(PQgetvalue(res, row, 9), NULL, 10), "due", PQgetvalue(res, row, 10),
	                      "record_url", url);
	free(url);
	return o;
}

enum job_result
digest_run(struct job_ctx *ctx)
{
	json_int_t cid = json_integer_value(json_array_get(ctx->job->args, 0));
	const char *date = json_string_value(json_array_get(ctx->job->args, 1));
	char id[24], key[64], message_id[256], soon[16], datel[64], first[128], summary[128];
	struct alert_person p;
	enum job_result rc;
	bool go;

	snprintf(id, sizeof(id), "%lld", (long long)cid);
	snprintf(key, sizeof(key), "%s:%s", id, date);
	if ((rc = alert_load_person(ctx, id, date, &p)) != JOB_DONE)
		return rc;
	if (alert_inactive(&p, "digest", key))
		return JOB_DONE;
	if ((rc = alert_claim(ctx, "digest", key, &p, message_id, &go)) != JOB_DONE || !go)
		return rc;

	snprintf(soon, sizeof(soon), "%d", ctx->cfg->alerts.due_soon_days);
	PGresult *res = db_query(ctx->db, digest_sql, DB_ARGS(id, soon, p.tz));
	if (res == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "listing due sources: %s", db_error(ctx->db));
	json_t *overdue = json_array(), *due_soon = json_array();
	for (int i = 0; i < PQntuples(res); i++)
		json_array_append_new(PQgetvalue(res, i, 8)[0] == 't' ? overdue : due_soon, source_json(ctx, res, i));
	PQclear(res);

	size_t no = json_array_size(overdue), ns = json_array_size(due_soon);
	if (no + ns == 0) {
		alert_set_status(ctx, "digest", key, "skipped", "nothing was due");
		log_info("digest %s: nothing is due, nothing sent", key);
		json_decref(overdue);
		json_decref(due_soon);
		return JOB_DONE;
	}
	alert_long_date(date, datel, sizeof(datel));
	snprintf(summary, sizeof(summary), "%zu overdue, %zu due within %d day%s", no, ns,
	         ctx->cfg->alerts.due_soon_days, ctx->cfg->alerts.due_soon_days == 1 ? "" : "s");
	json_t *context = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:I, s:I, s:i, s:b, s:b, s:o, s:o}",
	                            "coordinator", "name", p.name, "first_name", alert_first_name(p.name, first, sizeof(first)),
	                            "email", p.email, "date", date, "date_long", datel, "summary", summary,
	                            "overdue_count", (json_int_t)no, "due_soon_count", (json_int_t)ns, "due_soon_days",
	                            ctx->cfg->alerts.due_soon_days, "has_overdue", no > 0, "has_due_soon", ns > 0,
	                            "overdue", overdue, "due_soon", due_soon);
	rc = alert_deliver(ctx, "digest", key, &p, message_id, context, NULL, NULL, NULL, 0, NULL);
	json_decref(context);
	return rc;
}

enum job_result
manager_digest_run(struct job_ctx *ctx)
{
	json_int_t mid = json_integer_value(json_array_get(ctx->job->args, 0));
	const char *date = json_string_value(json_array_get(ctx->job->args, 1));
	char id[24], key[64], message_id[256], days[16], datel[64], first[128], summary[160];
	struct alert_person p;
	enum job_result rc;
	bool go;

	snprintf(id, sizeof(id), "%lld", (long long)mid);
	snprintf(key, sizeof(key), "%s:%s", id, date);
	if ((rc = alert_load_person(ctx, id, date, &p)) != JOB_DONE)
		return rc;
	if (alert_inactive(&p, "manager_digest", key))
		return JOB_DONE;
	if ((rc = alert_claim(ctx, "manager_digest", key, &p, message_id, &go)) != JOB_DONE || !go)
		return rc;

	snprintf(days, sizeof(days), "%d", ctx->cfg->alerts.escalate_after_days);
	PGresult *res = db_query(ctx->db, manager_sql, DB_ARGS(id, days, p.tz));
	if (res == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "listing escalated sources: %s", db_error(ctx->db));
	json_t *coords = json_array(), *current = NULL;
	const char *current_id = "";
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		if (strcmp(current_id, PQgetvalue(res, i, 11)) != 0) {
			current_id = PQgetvalue(res, i, 11);
			current = json_pack("{s:s, s:s, s:[], s:i}", "name", PQgetvalue(res, i, 12), "email",
			                    PQgetvalue(res, i, 13), "sources", "count", 0);
			json_array_append_new(coords, current);
		}
		json_array_append_new(json_object_get(current, "sources"), source_json(ctx, res, i));
		json_object_set_new(current, "count",
		                    json_integer((json_int_t)json_array_size(json_object_get(current, "sources"))));
	}
	PQclear(res);
	if (n == 0) {
		alert_set_status(ctx, "manager_digest", key, "skipped", "nothing was overdue long enough");
		log_info("manager digest %s: nothing to escalate, nothing sent", key);
		json_decref(coords);
		return JOB_DONE;
	}
	alert_long_date(date, datel, sizeof(datel));
	snprintf(summary, sizeof(summary), "%d source%s overdue by more than %d days", n, n == 1 ? "" : "s",
	         ctx->cfg->alerts.escalate_after_days);
	json_t *context = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:i, s:i, s:o}", "manager", "name", p.name,
	                            "first_name", alert_first_name(p.name, first, sizeof(first)), "email", p.email, "date",
	                            date, "date_long", datel, "summary", summary, "escalate_after_days",
	                            ctx->cfg->alerts.escalate_after_days, "count", n, "coordinators", coords);
	rc = alert_deliver(ctx, "manager_digest", key, &p, message_id, context, NULL, NULL, NULL, 0, NULL);
	json_decref(context);
	return rc;
}
