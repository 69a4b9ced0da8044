/* campevent: CampaignEventJob: records opens, clicks, unsubscribes, bounces, complaints and replies, and fires the rules. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/token.h"
#include "workers/campaign.h"
#include "workers/handler.h"

/* The message an event names: by id, by Message-ID, or the latest one sent to an address. */
static const char msg_cols[] = "SELECT m.id, m.enrollment_id, m.step, lower(m.recipient), c.name, m.source_id "
                               "FROM email_messages m JOIN campaigns c ON c.id = m.campaign_id ";

/* Suppresses addr and stops every active enrollment of a source with that address. */
static int
suppress(struct job_ctx *ctx, const char *addr, const char *reason, const char *detail, const char *message)
{
	return db_exec(ctx->db, "SELECT campaign_suppress($1, $2, $3, $4)", DB_ARGS(addr, reason, detail, message));
}

enum job_result
campaign_event_run(struct job_ctx *ctx)
{
	json_t *o = json_array_get(ctx->job->args, 0);
	const char *ev = json_string_value(json_object_get(o, "event"));
	const char *header = json_string_value(json_object_get(o, "message_id_header"));
	const char *addr = json_string_value(json_object_get(o, "email"));
	const char *url = json_string_value(json_object_get(o, "url"));
	const char *detail = json_string_value(json_object_get(o, "detail"));
	json_t *atv = json_object_get(o, "at");
	const char *kind = strcmp(ev, "replied") == 0 ? "reply" : ev;
	char id[24] = "", at[32], now[32], lower[256] = "";
	PGresult *m;

	if (url && url[0] == '\0')
		url = NULL;
	if (json_is_integer(json_object_get(o, "message_id")))
		snprintf(id, sizeof(id), "%lld", (long long)json_integer_value(json_object_get(o, "message_id")));
	const char *tok = json_string_value(json_object_get(o, "token"));
	if (tok != NULL) { /* an unsubscribe's token (the class allows no other): the message it was signed for */
		struct token_keys k;
		enum token_kind tk;
		int64_t tmid;
		char *turl = NULL;
		if (!campaign_keys_copy(&k))
			return job_fail(ctx, JOB_RETRY, "ConfigError",
			                "a token is checked with campaigns.token_key_file's key, and there is none");
		int checked = token_keys_check(&k, tok, strlen(tok), &tk, &tmid, &turl);
		token_keys_clear(&k);
		if (checked == -1)
			return job_fail(ctx, JOB_DEAD, "TokenError",
			                "the token was not signed with campaigns.token_key_file's key or the previous one "
			                "(forged, altered or cut, or signed with a key no longer used); nothing recorded");
		free(turl);
		if (tk != TOKEN_UNSUBSCRIBE)
			return job_fail(ctx, JOB_DEAD, "TokenError", "the token is a%s %s link's, not an unsubscribe link's",
			                tk == TOKEN_OPEN ? "n" : "", tk == TOKEN_OPEN ? "open" : "click");
		snprintf(id, sizeof(id), "%lld", (long long)tmid);
	}
	snprintf(at, sizeof(at), "%.6f", json_is_number(atv) ? json_number_value(atv) : util_now());
	campaign_now(now, sizeof(now));

	char sql[512];
	if (id[0]) {
		snprintf(sql, sizeof(sql), "%sWHERE m.id = $1", msg_cols);
		m = db_query(ctx->db, sql, DB_ARGS(id));
	} else if (header) {
		snprintf(sql, sizeof(sql), "%sWHERE m.message_id = $1", msg_cols);
		m = db_query(ctx->db, sql, DB_ARGS(header));
	} else {
		snprintf(sql, sizeof(sql), "%sWHERE lower(m.recipient) = lower($1) ORDER BY m.created_at DESC, m.id DESC LIMIT 1",
		         msg_cols);
		m = db_query(ctx->db, sql, DB_ARGS(addr));
	}
	if (m == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "finding the message: %s", db_error(ctx->db));
	bool found = PQntuples(m) == 1;
	bool suppressing = strcmp(kind, "unsubscribe") == 0 || strcmp(kind, "bounce") == 0 || strcmp(kind, "complaint") == 0;
	if (!found && !(addr && suppressing)) {
		PQclear(m);
		log_notice("%s event for %s%s: no such campaign message; nothing recorded", ev,
		           id[0] ? "message " : header ? "Message-ID " : "address ", id[0] ? id : header ? header : addr);
		return JOB_DONE;
	}
	if (found)
		util_strlcpy(lower, PQgetvalue(m, 0, 3), sizeof(lower));
	else
		for (size_t i = 0; addr[i] && i + 1 < sizeof(lower); i++)
			lower[i] = (char)(addr[i] >= 'A' && addr[i] <= 'Z' ? addr[i] + 32 : addr[i]), lower[i + 1] = '\0';
	char msgid[24] = "";
	if (found)
		util_strlcpy(msgid, PQgetvalue(m, 0, 0), sizeof(msgid));
	const char *message = found ? msgid : NULL;

	/* The enrollment is locked first, the order every campaign writer takes. */
	if (db_begin(ctx->db) == -1 ||
	    (message && db_exec(ctx->db,
	                        "SELECT 1 FROM campaign_enrollments e JOIN email_messages m ON m.enrollment_id = e.id "
	                        "WHERE m.id = $1 FOR UPDATE OF e",
	                        DB_ARGS(message)) == -1)) {
		PQclear(m);
		return campaign_db_retry(ctx, "starting a transaction");
	}
	PGresult *ins = db_query(ctx->db,
	                         "INSERT INTO email_events (message_id, recipient, kind, at, url, detail, jid) "
	                         "VALUES ($1, $2, $3, to_timestamp($4::float8), $5, left($6, 1000), $7) "
	                         "ON CONFLICT (jid) DO NOTHING RETURNING id",
	                         DB_ARGS(message, lower, kind, at, url, detail, ctx->job->jid));
	if (ins == NULL) {
		PQclear(m);
		return campaign_db_retry(ctx, "recording the event");
	}
	bool fresh = PQntuples(ins) == 1;
	PQclear(ins);
	if (!fresh) {
		PQclear(m);
		db_rollback(ctx->db);
		log_info("%s event of job %s is recorded already", ev, ctx->job->jid);
		return JOB_DONE;
	}

	int rc = 0;
	if (strcmp(kind, "open") == 0 || strcmp(kind, "click") == 0) {
		bool click = kind[0] == 'c';
		PGresult *f = db_query(
		    ctx->db,
		    "WITH u AS (UPDATE email_messages SET opened_at = coalesce(opened_at, to_timestamp($2::float8)), "
		    "           clicked_at = CASE WHEN $3 THEN coalesce(clicked_at, to_timestamp($2::float8)) "
		    "                        ELSE clicked_at END WHERE id = $1 RETURNING enrollment_id, step) "
		    "SELECT campaign_on_event(u.enrollment_id, u.step, $4::text[], to_timestamp($5::float8)) FROM u",
		    DB_ARGS(message, at, click ? "true" : "false", click ? "{opened,clicked}" : "{opened}", now));
		if (f == NULL)
			rc = -1;
		else if (PQntuples(f) == 1 && !PQgetisnull(f, 0, 0))
			log_info("%s of message %s: rule %s is scheduled", ev, message, PQgetvalue(f, 0, 0));
		PQclear(f);
	} else if (strcmp(kind, "reply") == 0) {
		/* A reply ends the sequence; the owner calls back. */
		rc = db_exec(ctx->db,
		             "WITH u AS (UPDATE email_messages SET replied_at = coalesce(replied_at, to_timestamp($2::float8)) "
		             "           WHERE id = $1 RETURNING enrollment_id), "
		             "e AS (UPDATE campaign_enrollments e SET state = 'stopped', stop_reason = 'replied', "
		             "             next_action_at = NULL, next_step_id = NULL, enqueued_at = NULL "
		             "        FROM u WHERE e.id = u.enrollment_id AND e.state = 'active' RETURNING e.source_id) "
		             "INSERT INTO activities (source_id, coordinator_id, kind, subject, scheduled_at) "
		             "SELECT s.id, s.coordinator_id, 'call', "
		             "       'Campaign \"' || $3 || '\": ' || coalesce(s.last_name, s.organization_name) || "
		             "       ' replied; call back', to_timestamp($4::float8) "
		             "  FROM e JOIN referral_sources s ON s.id = e.source_id",
		             DB_ARGS(message, at, PQgetvalue(m, 0, 4), now));
	} else {
		if (strcmp(kind, "bounce") == 0 && message)
			rc = db_exec(ctx->db, "UPDATE email_messages SET status = 'bounced', error = left($2, 1000) WHERE id = $1",
			             DB_ARGS(message, detail ? detail : "bounce reported"));
		if (rc == 0)
			rc = suppress(ctx, lower, kind, detail, message);
	}
	PQclear(m);
	if (rc == -1 || db_commit(ctx->db) == -1)
		return campaign_db_retry(ctx, "applying the event");
	log_info("recorded %s for %s%s", kind, message ? "message " : "address ", message ? message : lower);
	return JOB_DONE;
}
