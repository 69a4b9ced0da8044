/* digest: OverdueDigestJob and ManagerDigestJob, the daily emails of referral sources due for contact. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/mailer.h"
#include "common/mailtmpl.h"
#include "common/msg.h"
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
	char *url = NULL;
	const char *tpl = ctx->cfg->alerts.record_url, *brace = strstr(tpl, "{id}");

	url = xasprintf("%.*s%s%s", (int)(brace - tpl), tpl, id, brace + 4);
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

/* "Thursday, 26 November 2026" for "2026-11-26". */
static void
long_date(const char *date, char *out, size_t len)
{
	struct tm tm = {0};

	if (strptime(date, "%Y-%m-%d", &tm) == NULL) {
		util_strlcpy(out, date, len);
		return;
	}
	tm.tm_hour = 12;
	timegm(&tm); /* fills in the weekday */
	strftime(out, len, "%A, %-d %B %Y", &tm);
}

static const char *
first_name(const char *name, char *buf, size_t len)
{
	size_t n = strcspn(name, " ");

	snprintf(buf, len, "%.*s", (int)n, name);
	return buf;
}

/* Writes the row that makes the email happen once; *state is "new" (send it), "sending" (a
 * previous attempt may have stopped mid-send: send again, same Message-ID) or the final status
 * ("sent", "failed", "skipped": nothing to do). message_id (size 256) gets the id to use. */
static int
claim(struct job_ctx *ctx, const char *kind, const char *key, const char *coordinator_id, const char *recipient,
      const char *fresh_id, char *message_id, char *state, size_t statelen)
{
	PGresult *res = db_query(ctx->db,
	                         "INSERT INTO alert_emails (kind, key, coordinator_id, recipient, message_id, jid) "
	                         "VALUES ($1, $2, $3, $4, $5, $6) "
	                         "ON CONFLICT (kind, key) DO UPDATE SET attempts = alert_emails.attempts + 1, jid = $6 "
	                         "RETURNING message_id, status, (xmax = 0) AS inserted",
	                         DB_ARGS(kind, key, coordinator_id, recipient, fresh_id, ctx->job->jid));
	if (res == NULL)
		return -1;
	util_strlcpy(message_id, PQgetvalue(res, 0, 0), 256);
	bool inserted = PQgetvalue(res, 0, 2)[0] == 't';
	util_strlcpy(state, inserted ? "new" : PQgetvalue(res, 0, 1), statelen);
	PQclear(res);
	return 0;
}

static void
set_status(struct job_ctx *ctx, const char *kind, const char *key, const char *status, const char *error)
{
	if (db_exec(ctx->db,
	            "UPDATE alert_emails SET status = $3, error = $4, "
	            "sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END WHERE kind = $1 AND key = $2",
	            DB_ARGS(kind, key, status, error)) == -1)
		log_warnx("recording %s %s as %s: %s", kind, key, status, db_error(ctx->db));
}

/* Renders and sends one email and records the outcome. */
static enum job_result
deliver(struct job_ctx *ctx, const char *kind, const char *key, const char *to_name, const char *to_addr,
        const char *message_id, const json_t *context)
{
	const struct mailtmpl *t = handler_templates(kind);
	char *subject, *text, *html, *data = NULL;
	size_t len = 0;
	struct msg *m = msg_new();
	enum job_result rc;

	mailtmpl_render(t, context, &subject, &text, &html);
	if (msg_set_id(m, message_id) == -1 || msg_set_from(m, ctx->cfg->alerts.from_name, ctx->cfg->smtp.from) == -1 ||
	    msg_add_to(m, to_name, to_addr) == -1 || msg_set_subject(m, subject) == -1 ||
	    msg_add_header(m, "Auto-Submitted", "auto-generated") == -1 ||
	    msg_add_header(m, "X-Outreach-Jid", ctx->job->jid) == -1 || msg_set_text(m, text) == -1 ||
	    msg_set_html(m, html) == -1 || msg_render(m, &data, &len) == -1) {
		/* Bad data (a recipient address, say): no retry will fix it. */
		char why[512];
		snprintf(why, sizeof(why), "cannot build the %s email to %s: %s", kind, to_addr, msg_error(m));
		set_status(ctx, kind, key, "failed", why);
		rc = job_fail(ctx, JOB_DEAD, "InvalidEmail", "%s", why);
		goto out;
	}
	struct mailer_result res = MAILER_RESULT_INIT;
	const char *rcpts[] = {to_addr};
	if (mailer_send(ctx->mailer, NULL, rcpts, 1, data, len, &res) == 0) {
		set_status(ctx, kind, key, "sent", NULL);
		log_info("sent the %s email %s to %s", kind, key, to_addr);
		rc = JOB_DONE;
	} else {
		char why[600];
		snprintf(why, sizeof(why), "SMTP %s at %s: %d %s", mailer_status_name(res.status),
		         mailer_stage_name(res.stage), res.code, res.text);
		if (res.status == MAILER_PERMANENT) {
			set_status(ctx, kind, key, "failed", why);
			rc = job_fail(ctx, JOB_DEAD, "SMTPPermanentFailure", "%s", why);
		} else {
			set_status(ctx, kind, key, "sending", why);
			rc = job_fail(ctx, JOB_RETRY, "SMTPTemporaryFailure", "%s", why);
		}
	}
	mailer_result_clear(&res);
out:
	free(subject);
	free(text);
	free(html);
	free(data);
	msg_free(m);
	return rc;
}

struct person {
	char id[24], name[256], email[256], tz[64];
};

static enum job_result
load_person(struct job_ctx *ctx, const char *id, struct person *p)
{
	PGresult *res = db_query(ctx->db, "SELECT name, email, time_zone, active FROM coordinators WHERE id = $1",
	                         DB_ARGS(id));
	if (res == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "loading coordinator %s: %s", id, db_error(ctx->db));
	if (PQntuples(res) == 0) {
		PQclear(res);
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "there is no coordinator %s", id);
	}
	util_strlcpy(p->id, id, sizeof(p->id));
	util_strlcpy(p->name, PQgetvalue(res, 0, 0), sizeof(p->name));
	util_strlcpy(p->email, PQgetvalue(res, 0, 1), sizeof(p->email));
	util_strlcpy(p->tz, PQgetvalue(res, 0, 2), sizeof(p->tz));
	PQclear(res);
	return JOB_DONE;
}

/* Claims the email; JOB_DONE with *go false when it was already handled. */
static enum job_result
claim_or_skip(struct job_ctx *ctx, const char *kind, const char *key, const struct person *p, char *message_id,
              bool *go)
{
	char state[16], fresh[256];
	struct msg *m = msg_new();

	/* A fresh Message-ID on smtp.from's domain, kept only if this is the first attempt. */
	if (msg_set_id_domain(m, strchr(ctx->cfg->smtp.from, '@') + 1) == -1)
		log_warnx("Message-ID domain: %s", msg_error(m));
	util_strlcpy(fresh, msg_id(m), sizeof(fresh));
	msg_free(m);

	*go = false;
	if (claim(ctx, kind, key, p->id, p->email, fresh, message_id, state, sizeof(state)) == -1)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "claiming %s %s: %s", kind, key, db_error(ctx->db));
	if (strcmp(state, "new") != 0 && strcmp(state, "sending") != 0) {
		log_info("the %s email %s is already %s: nothing to do", kind, key, state);
		return JOB_DONE;
	}
	if (strcmp(state, "sending") == 0)
		log_notice("the %s email %s may have been cut off mid-send: sending it again as <%s>", kind, key,
		           message_id);
	*go = true;
	return JOB_DONE;
}

enum job_result
digest_run(struct job_ctx *ctx)
{
	json_int_t cid = json_integer_value(json_array_get(ctx->job->args, 0));
	const char *date = json_string_value(json_array_get(ctx->job->args, 1));
	char id[24], key[64], message_id[256], soon[16], datel[64], first[128], summary[128];
	struct person p;
	enum job_result rc;
	bool go;

	snprintf(id, sizeof(id), "%lld", (long long)cid);
	snprintf(key, sizeof(key), "%s:%s", id, date);
	if ((rc = load_person(ctx, id, &p)) != JOB_DONE)
		return rc;
	if ((rc = claim_or_skip(ctx, "digest", key, &p, message_id, &go)) != JOB_DONE || !go)
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
		set_status(ctx, "digest", key, "skipped", "nothing was due");
		log_info("digest %s: nothing is due, nothing sent", key);
		json_decref(overdue);
		json_decref(due_soon);
		return JOB_DONE;
	}
	long_date(date, datel, sizeof(datel));
	snprintf(summary, sizeof(summary), "%zu overdue, %zu due within %d day%s", no, ns,
	         ctx->cfg->alerts.due_soon_days, ctx->cfg->alerts.due_soon_days == 1 ? "" : "s");
	json_t *context = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:I, s:I, s:i, s:b, s:b, s:o, s:o}",
	                            "coordinator", "name", p.name, "first_name", first_name(p.name, first, sizeof(first)),
	                            "email", p.email, "date", date, "date_long", datel, "summary", summary,
	                            "overdue_count", (json_int_t)no, "due_soon_count", (json_int_t)ns, "due_soon_days",
	                            ctx->cfg->alerts.due_soon_days, "has_overdue", no > 0, "has_due_soon", ns > 0,
	                            "overdue", overdue, "due_soon", due_soon);
	rc = deliver(ctx, "digest", key, p.name, p.email, message_id, context);
	json_decref(context);
	return rc;
}

enum job_result
manager_digest_run(struct job_ctx *ctx)
{
	json_int_t mid = json_integer_value(json_array_get(ctx->job->args, 0));
	const char *date = json_string_value(json_array_get(ctx->job->args, 1));
	char id[24], key[64], message_id[256], days[16], datel[64], first[128], summary[160];
	struct person p;
	enum job_result rc;
	bool go;

	snprintf(id, sizeof(id), "%lld", (long long)mid);
	snprintf(key, sizeof(key), "%s:%s", id, date);
	if ((rc = load_person(ctx, id, &p)) != JOB_DONE)
		return rc;
	if ((rc = claim_or_skip(ctx, "manager_digest", key, &p, message_id, &go)) != JOB_DONE || !go)
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
		set_status(ctx, "manager_digest", key, "skipped", "nothing was overdue long enough");
		log_info("manager digest %s: nothing to escalate, nothing sent", key);
		json_decref(coords);
		return JOB_DONE;
	}
	long_date(date, datel, sizeof(datel));
	snprintf(summary, sizeof(summary), "%d source%s overdue by more than %d days", n, n == 1 ? "" : "s",
	         ctx->cfg->alerts.escalate_after_days);
	json_t *context = json_pack("{s:{s:s, s:s, s:s}, s:s, s:s, s:s, s:i, s:i, s:o}", "manager", "name", p.name,
	                            "first_name", first_name(p.name, first, sizeof(first)), "email", p.email, "date",
	                            date, "date_long", datel, "summary", summary, "escalate_after_days",
	                            ctx->cfg->alerts.escalate_after_days, "count", n, "coordinators", coords);
	rc = deliver(ctx, "manager_digest", key, p.name, p.email, message_id, context);
	json_decref(context);
	return rc;
}
