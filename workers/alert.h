/* alert: what every alert email shares: its once-only record, the recipient, rendering and delivery. */
#ifndef OUTREACH_ALERT_H
#define OUTREACH_ALERT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/msg.h"
#include "workers/handler.h"

struct alert_person {
	char id[24], name[MSG_MAX_NAME + 1], email[256], tz[64];
	bool active;          /* coordinators.active: an inactive one gets no digest or report (see alert_inactive) */
	const char *too_long; /* "name" or "email" when it did not fit (cut): alert_deliver refuses the email */
};

/* Fills p (too_long set when name or email does not fit). */
void alert_person_set(struct alert_person *p, const char *id, const char *name, const char *email, const char *tz,
                      bool active);

/* "their name is longer than 256 bytes" (in buf) when p->too_long, else NULL. */
const char *alert_person_too_long(const struct alert_person *p, char *buf, size_t len);

/* Loads coordinator id; JOB_DONE when found, else the failure to return (JOB_DEAD when there is
 * none, JOB_RETRY on a database error). With day ("YYYY-MM-DD", the day a digest is for; NULL for
 * none) a day not yet begun in the coordinator's time zone goes to dead (ArgumentError) before
 * anything is claimed, since claiming it would keep that day's real email from going out. */
enum job_result alert_load_person(struct job_ctx *ctx, const char *id, const char *day, struct alert_person *p);

/* True (and logged) when p is an inactive coordinator: a digest or report pushed for them directly
 * (outreachd and the monthly fan-out queue none) sends nothing and claims nothing, so the same job
 * pushed again once they are active sends it. */
bool alert_inactive(const struct alert_person *p, const char *kind, const char *key);

/* Writes the row that makes the email happen once (alert_emails, unique by kind and key) before
 * anything is sent. *go is false when the email was already sent, failed for good or skipped;
 * true for a first attempt, and for a retry of one that may have stopped mid-send (it goes out
 * again under the same Message-ID, the one narrow window for a duplicate). message_id (size 256)
 * gets the id to use. Returns JOB_DONE, or the failure to return. */
enum job_result alert_claim(struct job_ctx *ctx, const char *kind, const char *key, const struct alert_person *to,
                            char *message_id, bool *go);

/* Records the email's final state ("sent", "failed", "skipped", or "sending" with the error). */
void alert_set_status(struct job_ctx *ctx, const char *kind, const char *key, const char *status, const char *error);

/* Renders kind's templates with context and sends to `to` under message_id (job_send_mail: with
 * the other emails of the runtime's batch, over one connection). When the relay has answered the
 * outcome is recorded and the job ends: done when sent (after_sql, with its nparams parameters, is
 * run then, if not NULL), retried on a temporary SMTP failure, dead when the relay refused it for
 * good. Returns JOB_PENDING while the email waits, or the result when it went out at once or could
 * not be built (JOB_DEAD). With a calendar method ("REQUEST", "CANCEL") the iCalendar text ics goes
 * along as a text/calendar part. */
enum job_result alert_deliver(struct job_ctx *ctx, const char *kind, const char *key, const struct alert_person *to,
                              const char *message_id, const json_t *context, const char *method, const char *ics,
                              const char *after_sql, int nparams, const char *const *params);

/* alerts.record_url with {id} replaced (caller frees). */
char *alert_record_url(const struct job_ctx *ctx, const char *id);
/* The first word of a name, for greetings. */
const char *alert_first_name(const char *name, char *buf, size_t len);
/* "Thursday, 26 November 2026" for "2026-11-26". */
void alert_long_date(const char *date, char *out, size_t len);

#endif
