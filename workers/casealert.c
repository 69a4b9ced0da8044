/* casealert: CaseAlertJob, a service case open past its SLA: to its assignee, then to their manager. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "workers/alert.h"
#include "workers/handler.h"

static const char case_sql[] =
    "SELECT k.category, k.priority, k.summary, k.status, "
    "       to_char(k.opened_at AT TIME ZONE a.time_zone, 'FMDay, FMDD FMMonth YYYY, HH24:MI'), "
    "       floor(extract(epoch FROM now() - k.opened_at) / 3600)::int, "
    "       a.id, a.name, a.email, m.id, "
    "       s.id, CASE WHEN s.kind = 'organization' THEN s.organization_name "
    "                  ELSE concat_ws(' ', s.first_name, s.last_name) END, coalesce(s.phone, '') "
    "  FROM cases k JOIN coordinators a ON a.id = k.assignee_id "
    "  LEFT JOIN coordinators m ON m.id = a.manager_id AND m.active "
    "  JOIN referral_sources s ON s.id = k.source_id WHERE k.id = $1";

enum job_result
case_alert_run(struct job_ctx *ctx)
{
	json_int_t cid = json_integer_value(json_array_get(ctx->job->args, 0));
	int level = (int)json_integer_value(json_array_get(ctx->job->args, 1));
	char id[24], key[48], lvl[8], message_id[256], first[128];
	struct alert_person to;
	enum job_result rc = JOB_DONE;
	bool go;

	snprintf(id, sizeof(id), "%lld", (long long)cid);
	snprintf(lvl, sizeof(lvl), "%d", level);
	snprintf(key, sizeof(key), "%s:%d", id, level);
	PGresult *r = db_query(ctx->db, case_sql, DB_ARGS(id));
	if (r == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "loading case %s: %s", id, db_error(ctx->db));
	if (PQntuples(r) == 0) {
		PQclear(r);
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "there is no case %s with an assignee", id);
	}
	if (strcmp(PQgetvalue(r, 0, 3), "resolved") == 0) {
		log_info("case %s was resolved meanwhile: no alert", id);
		goto out;
	}
	/* Level 1 goes to the assignee, level 2 to the assignee's manager (or, without one, to the
	 * assignee again, marked as escalated). */
	const char *who = level == 2 && !PQgetisnull(r, 0, 9) ? PQgetvalue(r, 0, 9) : PQgetvalue(r, 0, 6);
	if ((rc = alert_load_person(ctx, who, &to)) != JOB_DONE)
		goto out;
	if ((rc = alert_claim(ctx, "case", key, &to, message_id, &go)) != JOB_DONE || !go)
		goto out;

	const char *prio = PQgetvalue(r, 0, 1);
	int sla = strcmp(prio, "low") == 0      ? ctx->cfg->cases.sla_hours_low
	          : strcmp(prio, "high") == 0   ? ctx->cfg->cases.sla_hours_high
	          : strcmp(prio, "urgent") == 0 ? ctx->cfg->cases.sla_hours_urgent
	                                        : ctx->cfg->cases.sla_hours_normal;
	char *url = alert_record_url(ctx, PQgetvalue(r, 0, 10));
	json_t *context = json_pack(
	    "{s:{s:s, s:s}, s:b, s:i, s:{s:I, s:s, s:s, s:s, s:s, s:i, s:i}, s:{s:s, s:s}, s:{s:s, s:s, s:s}}",
	    "recipient", "name", to.name, "first_name", alert_first_name(to.name, first, sizeof(first)), "escalated",
	    level == 2, "escalate_after_hours", ctx->cfg->cases.escalate_after_hours, "case", "id", (json_int_t)cid,
	    "category", PQgetvalue(r, 0, 0), "priority", prio, "summary", PQgetvalue(r, 0, 2), "opened",
	    PQgetvalue(r, 0, 4), "open_hours", atoi(PQgetvalue(r, 0, 5)), "sla_hours", sla, "assignee", "name",
	    PQgetvalue(r, 0, 7), "email", PQgetvalue(r, 0, 8), "source", "name", PQgetvalue(r, 0, 11), "phone",
	    PQgetvalue(r, 0, 12), "record_url", url);
	free(url);
	rc = alert_deliver(ctx, "case", key, &to, message_id, context, NULL, NULL,
	                   "UPDATE cases SET alerted_level = greatest(alerted_level, $2::smallint) WHERE id = $1",
	                   DB_ARGS(id, lvl));
	json_decref(context);
out:
	PQclear(r);
	return rc;
}
