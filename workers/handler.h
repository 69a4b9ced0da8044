/* handler: what a job handler sees: its job, its connections, and how it reports failure. */
#ifndef OUTREACH_HANDLER_H
#define OUTREACH_HANDLER_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/cfg.h"
#include "common/db.h"
#include "common/job.h"
#include "common/mailer.h"
#include "common/mailtmpl.h"

enum job_result {
	JOB_DONE,    /* finished: the job is removed */
	JOB_RETRY,   /* failed in a way that may pass (lost connection, timeout, 4xx): retry with backoff */
	JOB_DEAD,    /* failed for good (bad data): straight to the dead set */
	JOB_PENDING, /* an email waits in the outbox (job_send_mail); the job ends when it is sent */
};

struct job_ctx;

/* An email a handler hands over for sending. The runtime sends the emails of the jobs it took
 * together over one SMTP connection, then calls finish with each outcome; finish records it and
 * returns the job's result (never JOB_PENDING). free_priv (may be NULL) releases priv afterwards. */
struct job_mail {
	char *data; /* the rendered message (takes ownership) */
	size_t len;
	char *rcpt; /* the envelope recipient (takes ownership) */
	enum job_result (*finish)(struct job_ctx *ctx, const struct mailer_result *res, void *priv);
	void *priv;
	void (*free_priv)(void *priv);
};

struct job_ctx {
	const struct cfg *cfg;   /* borrowed */
	const struct job *job;   /* borrowed; args already validated by the class */
	struct db *db;           /* borrowed; connected when the handler has needs_db */
	redisContext *redis;     /* borrowed; this thread's connection */
	struct mailer *mailer;   /* borrowed; this thread's SMTP sender */
	void *outbox;            /* the runtime's; see job_send_mail */
	const atomic_int *stopping; /* nonzero once the worker is asked to stop (read with job_stopping) */
	char error_class[64];
	char error_message[512];
};

/* Records why the job failed (class like "SMTPError", message) and returns result, so that a
 * handler can write `return job_fail(ctx, JOB_RETRY, "Timeout", "...")`. */
enum job_result job_fail(struct job_ctx *ctx, enum job_result result, const char *error_class, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));

struct handler {
	const char *class;
	bool needs_db;
	enum job_result (*run)(struct job_ctx *ctx);
};

/* Sends m: into the outbox when the runtime keeps one (returns JOB_PENDING), else at once through
 * ctx->mailer (returns what m->finish returns). Takes ownership of m's contents either way. */
enum job_result job_send_mail(struct job_ctx *ctx, struct job_mail *m);

/* The batch hooks, for the classes that do part of their work for a whole batch of jobs at once.
 * The runtime calls handler_batch_start once per batch it takes, before the first job runs, with
 * every job of the batch (classes known, args validated; borrowed for the call); each class's hook
 * sees its own jobs. It calls handler_batch_done once the batch's emails went out and their finish
 * callbacks ran, before any of those jobs ends (removed, retried or dead), and also when a batch
 * left no email. ctx has no job. */
void handler_batch_start(struct job_ctx *ctx, const struct job *const *jobs, size_t n);
void handler_batch_done(struct job_ctx *ctx);

/* The handler for a job class, or NULL. */
const struct handler *handler_find(const char *class);

/* Loads what handlers share (the email templates of alerts.template_dir); -1 with the first
 * broken template as "FILE:LINE: what" in err. Call once before any job runs; again after a
 * reload (not while jobs run). */
int handler_init(const struct cfg *c, char *err, size_t errlen) MUSTCHECK;
void handler_shutdown(void);
/* What a SIGHUP reads again for the handlers, with the new configuration c, before it takes the
 * place of the running one: the campaign token keys. -1 with err (the reload is refused, the
 * running keys kept). A cfg_check_fn. */
int handler_reload(const struct cfg *c, void *unused, char *err, size_t errlen) MUSTCHECK;
/* The loaded templates of an email kind (see common/mailtmpl.h); never NULL after handler_init. */
const struct mailtmpl *handler_templates(const char *kind);

/* The handlers, one file each. */
enum job_result ping_run(struct job_ctx *ctx);
enum job_result digest_run(struct job_ctx *ctx);
enum job_result manager_digest_run(struct job_ctx *ctx);
enum job_result invite_run(struct job_ctx *ctx);
enum job_result case_alert_run(struct job_ctx *ctx);
enum job_result npi_sync_run(struct job_ctx *ctx);
enum job_result metrics_run(struct job_ctx *ctx);
enum job_result monthly_report_run(struct job_ctx *ctx);
/* Releases what drawing the monthly report's charts keeps (fonts); at the process's end only. */
void monthly_shutdown(void);
enum job_result campaign_send_run(struct job_ctx *ctx);
enum job_result campaign_event_run(struct job_ctx *ctx);
enum job_result nppes_import_run(struct job_ctx *ctx);

#endif
