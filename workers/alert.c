/* alert: what every alert email shares: its once-only record, the recipient, rendering and delivery. */
#include "workers/alert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/mailer.h"
#include "common/mailtmpl.h"
#include "common/msg.h"

char *
alert_record_url(const struct job_ctx *ctx, const char *id)
{
	const char *tpl = ctx->cfg->alerts.record_url, *brace = strstr(tpl, "{id}");

	return xasprintf("%.*s%s%s", (int)(brace - tpl), tpl, id, brace + 4);
}

/* "Thursday, 26 November 2026" for "2026-11-26". */
void
alert_long_date(const char *date, char *out, size_t len)
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

const char *
alert_first_name(const char *name, char *buf, size_t len)
{
	size_t n = strcspn(name, " ");

	/* A word longer than buf is cut between two characters, never inside one. */
	if (n >= len)
		for (n = len - 1; n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80; n--)
			;
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

void
alert_set_status(struct job_ctx *ctx, const char *kind, const char *key, const char *status, const char *error)
{
	if (db_exec(ctx->db,
	            "UPDATE alert_emails SET status = $3, error = $4, "
	            "sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END WHERE kind = $1 AND key = $2",
	            DB_ARGS(kind, key, status, error)) == -1)
		log_warnx("recording %s %s as %s: %s", kind, key, status, db_error(ctx->db));
}

/* What an email needs once the relay has answered. */
struct sent_ctx {
	char kind[32], key[96], to[256];
	char *after_sql;
	char *params[4];
	int nparams;
};

static void
free_sent(void *p)
{
	struct sent_ctx *s = p;

	for (int i = 0; i < s->nparams; i++)
		free(s->params[i]);
	free(s->after_sql);
	free(s);
}

/* Records the relay's answer and decides the job's fate. */
static enum job_result
finish(struct job_ctx *ctx, const struct mailer_result *res, void *priv)
{
	struct sent_ctx *s = priv;
	char why[600];

	if (res->status == MAILER_SENT) {
		alert_set_status(ctx, s->kind, s->key, "sent", NULL);
		log_info("sent the %s email %s to %s", s->kind, s->key, s->to);
		if (s->after_sql && db_exec(ctx->db, s->after_sql, s->nparams, (const char *const *)s->params) == -1)
			log_warnx("%s %s: recording what was sent: %s", s->kind, s->key, db_error(ctx->db));
		return JOB_DONE;
	}
	snprintf(why, sizeof(why), "SMTP %s at %s: %d %s", mailer_status_name(res->status), mailer_stage_name(res->stage),
	         res->code, res->text);
	/* A refused login is the relay's configuration, not the message: keep trying while it is fixed. */
	if (res->status == MAILER_PERMANENT && res->stage != MAILER_STAGE_AUTH) {
		alert_set_status(ctx, s->kind, s->key, "failed", why);
		return job_fail(ctx, JOB_DEAD, "SMTPPermanentFailure", "%s", why);
	}
	alert_set_status(ctx, s->kind, s->key, "sending", why);
	return job_fail(ctx, JOB_RETRY, "SMTPTemporaryFailure", "%s", why);
}

enum job_result
alert_deliver(struct job_ctx *ctx, const char *kind, const char *key, const struct alert_person *to,
              const char *message_id, const json_t *context, const char *method, const char *ics,
              const char *after_sql, int nparams, const char *const *params)
{
	const char *to_name = to->name, *to_addr = to->email;
	const struct mailtmpl *t = handler_templates(kind);
	char *subject, *text, *html, *data = NULL;
	size_t len = 0;
	enum job_result rc;

	/* A recipient whose name or address did not fit: refused before anything is rendered. */
	if (to->too_long) {
		char why[512], what[96];
		snprintf(why, sizeof(why), "cannot build the %s email to coordinator %s: %s", kind, to->id,
		         alert_person_too_long(to, what, sizeof(what)));
		alert_set_status(ctx, kind, key, "failed", why);
		return job_fail(ctx, JOB_DEAD, "InvalidEmail", "%s", why);
	}
	struct msg *m = msg_new();
	mailtmpl_render(t, context, &subject, &text, &html);
	if (msg_set_id(m, message_id) == -1 || msg_set_from(m, ctx->cfg->alerts.from_name, ctx->cfg->smtp.from) == -1 ||
	    msg_add_to(m, to_name, to_addr) == -1 || msg_set_subject(m, subject) == -1 ||
	    msg_add_header(m, "Auto-Submitted", "auto-generated") == -1 ||
	    msg_add_header(m, "X-Outreach-Jid", ctx->job->jid) == -1 || msg_set_text(m, text) == -1 ||
	    msg_set_html(m, html) == -1 || (method && msg_add_calendar(m, method, ics) == -1) ||
	    msg_render(m, &data, &len) == -1) {
		/* Bad data (a recipient address, say): no retry will fix it. */
		char why[512];
		snprintf(why, sizeof(why), "cannot build the %s email to %s: %s", kind, to_addr, msg_error(m));
		alert_set_status(ctx, kind, key, "failed", why);
		rc = job_fail(ctx, JOB_DEAD, "InvalidEmail", "%s", why);
		free(data);
		goto out;
	}
	struct sent_ctx *s = xcalloc(1, sizeof(*s));
	util_strlcpy(s->kind, kind, sizeof(s->kind));
	util_strlcpy(s->key, key, sizeof(s->key));
	util_strlcpy(s->to, to_addr, sizeof(s->to));
	s->after_sql = after_sql ? xstrdup(after_sql) : NULL;
	for (int i = 0; i < nparams && i < (int)NELEM(s->params); i++)
		s->params[s->nparams++] = xstrdup(params[i]);
	struct job_mail mail = {.data = data, .len = len, .rcpt = xstrdup(to_addr), .finish = finish, .priv = s,
	                        .free_priv = free_sent};
	rc = job_send_mail(ctx, &mail);
out:
	free(subject);
	free(text);
	free(html);
	msg_free(m);
	return rc;
}

void
alert_person_set(struct alert_person *p, const char *id, const char *name, const char *email, const char *tz,
                 bool active)
{
	memset(p, 0, sizeof(*p));
	util_strlcpy(p->id, id, sizeof(p->id));
	/* A value cut to fit would fail the message's checks with a wrong reason (a character cut in
	 * two): noted, and the email refused as too long when it is built (alert_deliver). */
	bool email_fits = util_strlcpy(p->email, email, sizeof(p->email)) < sizeof(p->email);
	if (util_strlcpy(p->name, name, sizeof(p->name)) >= sizeof(p->name))
		p->too_long = "name";
	else if (!email_fits)
		p->too_long = "email";
	util_strlcpy(p->tz, tz, sizeof(p->tz));
	p->active = active;
}

const char *
alert_person_too_long(const struct alert_person *p, char *buf, size_t len)
{
	if (p->too_long == NULL)
		return NULL;
	snprintf(buf, len, "their %s is longer than %zu bytes", p->too_long,
	         strcmp(p->too_long, "name") == 0 ? sizeof(p->name) - 1 : sizeof(p->email) - 1);
	return buf;
}

enum job_result
alert_load_person(struct job_ctx *ctx, const char *id, const char *day, struct alert_person *p)
{
	/* The day's test in the coordinator's time zone comes with the row: one round trip per email. */
	PGresult *res = db_query(ctx->db,
	                         "SELECT name, email, time_zone, active, $2::date > (now() AT TIME ZONE time_zone)::date, "
	                         "       (now() AT TIME ZONE time_zone)::date::text FROM coordinators WHERE id = $1",
	                         DB_ARGS(id, day));
	if (res == NULL)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "loading coordinator %s: %s", id, db_error(ctx->db));
	if (PQntuples(res) == 0) {
		PQclear(res);
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "there is no coordinator %s", id);
	}
	if (PQgetvalue(res, 0, 4)[0] == 't') {
		enum job_result rc = job_fail(ctx, JOB_DEAD, "ArgumentError",
		                              "local_date %s is in the future: it is %s in %s, coordinator %s's time zone",
		                              day, PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 2), id);
		PQclear(res);
		return rc;
	}
	alert_person_set(p, id, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
	                 PQgetvalue(res, 0, 3)[0] == 't');
	PQclear(res);
	return JOB_DONE;
}

bool
alert_inactive(const struct alert_person *p, const char *kind, const char *key)
{
	if (p->active)
		return false;
	log_info("%s %s: coordinator %s is inactive, nothing sent", kind, key, p->id);
	return true;
}

enum job_result
alert_claim(struct job_ctx *ctx, const char *kind, const char *key, const struct alert_person *p, char *message_id,
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

