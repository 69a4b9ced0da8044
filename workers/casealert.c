/* casealert: CaseAlertJob, a service case open past its SLA: to its assignee, then to their manager. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cases.h"
#include "common/log.h"
#include "common/queue.h"
#include "workers/alert.h"
#include "workers/handler.h"

/* Case $6, its assignee (and whether they are active), their active manager, the source, the case's
 * SLA in hours and whether level $7 is due, with when: the test outreachd's scan makes (cases.h, its
 * parameters $1 to $5); then what the email needs of the assignee and of the manager, one of whom
 * receives it. */
static const char case_sql[] =
    "SELECT k.category, k.priority, k.summary, k.status, "
    "       to_char(k.opened_at AT TIME ZONE a.time_zone, 'FMDay, FMDD FMMonth YYYY, HH24:MI'), "
    "       floor(extract(epoch FROM now() - k.opened_at) / 3600)::int, "
    "       a.id, a.name, a.email, m.id, "
    "       s.id, CASE WHEN s.kind = 'organization' THEN s.organization_name "
    "                  ELSE concat_ws(' ', s.first_name, s.last_name) END, coalesce(s.phone, ''), "
    "       a.active, sla.h, now() >= " CASES_DUE_AT("$7::int") ", "
    "       to_char(" CASES_DUE_AT("$7::int") " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI \"UTC\"'), "
    "       now() >= " CASES_DUE_AT("2") ", " CASES_HAS_RECIPIENT ", "
    "       a.time_zone, m.name, m.email, m.time_zone "
    "  FROM cases k" CASES_SLA_LATERAL CASES_RECIPIENTS
    "  JOIN referral_sources s ON s.id = k.source_id "
    " WHERE k.id = $6";

/* case_sql's columns, in order. */
enum case_col {
	C_CATEGORY, C_PRIORITY, C_SUMMARY, C_STATUS, C_OPENED, C_OPEN_HOURS,
	C_ASSIGNEE_ID, C_ASSIGNEE_NAME, C_ASSIGNEE_EMAIL, C_MANAGER_ID,
	C_SOURCE_ID, C_SOURCE_NAME, C_SOURCE_PHONE,
	C_ASSIGNEE_ACTIVE, C_SLA_HOURS, C_DUE, C_DUE_AT, C_LEVEL2_DUE, C_HAS_RECIPIENT,
	C_ASSIGNEE_TZ, C_MANAGER_NAME, C_MANAGER_EMAIL, C_MANAGER_TZ
};
#define COL(c) PQgetvalue(r, 0, (c))

/* Removes the mark outreachd's scan left when it pushed this job (under its jid; nothing when another
 * application pushed it), so that the scan pushes the alert again as soon as it can be sent rather
 * than two days later. A retry when Redis fails: it decides again then. */
static enum job_result
forget_push(struct job_ctx *ctx, const char *id)
{
	redisReply *del = redisCommand(ctx->redis, "DEL %s%s", QUEUE_PUSHED_PREFIX, ctx->job->jid);
	enum job_result rc = JOB_DONE;

	if (del == NULL || del->type == REDIS_REPLY_ERROR)
		rc = job_fail(ctx, JOB_RETRY, "RedisError", "case %s: removing outreachd's mark of the push: %s", id,
		              del ? del->str : ctx->redis->errstr);
	freeReplyObject(del);
	return rc;
}

enum job_result
case_alert_run(struct job_ctx *ctx)
{
	const struct cfg *cfg = ctx->cfg;
	json_int_t cid = json_integer_value(json_array_get(ctx->job->args, 0));
	int level = (int)json_integer_value(json_array_get(ctx->job->args, 1));
	char id[24], key[48], lvl[8], message_id[256], first[128], hours[5][16];
	struct alert_person to;
	enum job_result rc = JOB_DONE;
	bool go;

	snprintf(id, sizeof(id), "%lld", (long long)cid);
	snprintf(lvl, sizeof(lvl), "%d", level);
	snprintf(key, sizeof(key), "%s:%d", id, level);
	cases_sla_params(cfg, hours);
	PGresult *r = db_query(ctx->db, case_sql, DB_ARGS(hours[0], hours[1], hours[2], hours[3], hours[4], id, lvl));
	if (r == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "loading case %s: %s", id, db_error(ctx->db));
	if (PQntuples(r) == 0) {
		PQclear(r);
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "there is no case %s with an assignee", id);
	}
	if (strcmp(COL(C_STATUS), "resolved") == 0) {
		log_info("case %s was resolved meanwhile: no alert", id);
		goto out;
	}
	/* A level not yet due (pushed early by hand or by another application, or the case's priority
	 * lowered since outreachd pushed it) sends and records nothing: sending it would set the case's
	 * alerted level, and the earlier level would never go out. outreachd's scan pushes it when due. */
	if (COL(C_DUE)[0] != 't') {
		if ((rc = forget_push(ctx, id)) == JOB_DONE)
			log_info("case %s: level %d is not due until %s (%s priority, %s-hour SLA): nothing sent", id, level,
			         COL(C_DUE_AT), COL(C_PRIORITY), COL(C_SLA_HOURS));
		goto out;
	}
	/* Level 1 goes to the assignee, level 2 to the assignee's manager (or, without one, to the
	 * assignee again, marked as escalated). An assignee no longer active cannot act on it: both
	 * levels go to their manager; without an active manager nothing is sent, and outreachd's scan
	 * pushes the alert once there is one. */
	bool inactive = COL(C_ASSIGNEE_ACTIVE)[0] != 't';
	bool has_manager = !PQgetisnull(r, 0, C_MANAGER_ID);
	if (COL(C_HAS_RECIPIENT)[0] != 't') {
		if ((rc = forget_push(ctx, id)) == JOB_DONE)
			log_warnx("case %s: level %d: assignee %s is inactive and has no active manager: nothing sent", id,
			          level, COL(C_ASSIGNEE_ID));
		goto out;
	}
	/* Both levels would go to the manager: when level 2 is due too (the case waited for one, or was
	 * entered late), its email alone says it all. */
	if (inactive && level == 1 && COL(C_LEVEL2_DUE)[0] == 't') {
		log_info("case %s: level 1 skipped: level 2 is due too, and both go to assignee %s's manager %s", id,
		         COL(C_ASSIGNEE_ID), COL(C_MANAGER_ID));
		goto out;
	}
	bool escalated = level == 2 || inactive;
	/* The recipient is active: the assignee, or their active manager. */
	if (escalated && has_manager)
		alert_person_set(&to, COL(C_MANAGER_ID), COL(C_MANAGER_NAME), COL(C_MANAGER_EMAIL), COL(C_MANAGER_TZ),
		                 true);
	else
		alert_person_set(&to, COL(C_ASSIGNEE_ID), COL(C_ASSIGNEE_NAME), COL(C_ASSIGNEE_EMAIL), COL(C_ASSIGNEE_TZ),
		                 true);
	if ((rc = alert_claim(ctx, "case", key, &to, message_id, &go)) != JOB_DONE || !go)
		goto out;

	char *url = alert_record_url(ctx, COL(C_SOURCE_ID));
	int open_hours = atoi(COL(C_OPEN_HOURS)), sla_hours = atoi(COL(C_SLA_HOURS));
	json_t *context = json_pack(
	    "{s:{s:s, s:s}, s:b, s:b, s:i, s:{s:I, s:s, s:s, s:s, s:s, s:i, s:i, s:i}, s:{s:s, s:s, s:b}, "
	    "s:{s:s, s:s, s:s}}",
	    "recipient", "name", to.name, "first_name", alert_first_name(to.name, first, sizeof(first)), "escalated",
	    escalated, "past_escalation", level == 2, "escalate_after_hours", cfg->cases.escalate_after_hours, "case",
	    "id", (json_int_t)cid, "category", COL(C_CATEGORY), "priority", COL(C_PRIORITY), "summary",
	    COL(C_SUMMARY), "opened", COL(C_OPENED), "open_hours", open_hours, "sla_hours", sla_hours,
	    "hours_past", open_hours - sla_hours, "assignee", "name", COL(C_ASSIGNEE_NAME), "email", COL(C_ASSIGNEE_EMAIL),
	    "inactive", inactive, "source", "name", COL(C_SOURCE_NAME), "phone", COL(C_SOURCE_PHONE), "record_url",
	    url);
	free(url);
	rc = alert_deliver(ctx, "case", key, &to, message_id, context, NULL, NULL,
	                   "UPDATE cases SET alerted_level = greatest(alerted_level, $2::smallint) WHERE id = $1",
	                   DB_ARGS(id, lvl));
	json_decref(context);
out:
	PQclear(r);
	return rc;
}
#undef COL
