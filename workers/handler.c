/* handler: the table of job handlers, and the failure helper they share. */
#include "workers/handler.h"

#include "workers/campaign.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct handler handlers[] = {
    {"PingJob", false, ping_run},
    {"OverdueDigestJob", true, digest_run},
    {"ManagerDigestJob", true, manager_digest_run},
    {"ActivityInviteJob", true, invite_run},
    {"CaseAlertJob", true, case_alert_run},
    {"NpiSyncJob", true, npi_sync_run},
    {"MetricsJob", true, metrics_run},
    {"MonthlyReportJob", true, monthly_report_run},
    {"CampaignSendJob", true, campaign_send_run},
    {"CampaignEventJob", true, campaign_event_run},
    {"NppesImportJob", true, nppes_import_run},
};

/* The classes with batch hooks (handler_batch_start). */
static const struct {
	const char *class;
	void (*start)(struct job_ctx *ctx, const struct job *const *jobs, size_t n);
	void (*done)(struct job_ctx *ctx);
} batch_hooks[] = {
    {"CampaignSendJob", campaign_send_batch_start, campaign_send_batch_done},
};

void
handler_batch_start(struct job_ctx *ctx, const struct job *const *jobs, size_t n)
{
	const struct job **mine = xcalloc(n + 1, sizeof(*mine));

	for (size_t h = 0; h < NELEM(batch_hooks); h++) {
		size_t m = 0;
		for (size_t k = 0; k < n; k++)
			if (strcmp(jobs[k]->class, batch_hooks[h].class) == 0)
				mine[m++] = jobs[k];
		if (m > 0)
			batch_hooks[h].start(ctx, mine, m);
	}
	free(mine);
}

void
handler_batch_done(struct job_ctx *ctx)
{
	for (size_t h = 0; h < NELEM(batch_hooks); h++)
		batch_hooks[h].done(ctx);
}

static struct mailtmpl templates[8];

int
handler_init(const struct cfg *c, char *err, size_t errlen)
{
	struct mailtmpl fresh[NELEM(templates)];
	size_t n = 0;

	for (; mailtmpl_kinds[n]; n++) {
		if (n == NELEM(templates) || mailtmpl_load(c->alerts.template_dir, mailtmpl_kinds[n], &fresh[n], err,
		                                           errlen) == -1) {
			while (n-- > 0)
				mailtmpl_free(&fresh[n]);
			return -1;
		}
	}
	if (campaign_init(c, err, errlen) == -1) {
		while (n-- > 0)
			mailtmpl_free(&fresh[n]);
		return -1;
	}
	handler_shutdown();
	memcpy(templates, fresh, n * sizeof(fresh[0]));
	return 0;
}

int
handler_reload(const struct cfg *c, void *unused, char *err, size_t errlen)
{
	(void)unused;
	return campaign_reload_keys(c, err, errlen);
}

void
handler_shutdown(void)
{
	for (size_t i = 0; i < NELEM(templates); i++)
		mailtmpl_free(&templates[i]);
}

const struct mailtmpl *
handler_templates(const char *kind)
{
	for (size_t i = 0; mailtmpl_kinds[i]; i++)
		if (strcmp(mailtmpl_kinds[i], kind) == 0)
			return &templates[i];
	return NULL;
}

const struct handler *
handler_find(const char *class)
{
	for (size_t i = 0; i < NELEM(handlers); i++)
		if (strcmp(handlers[i].class, class) == 0)
			return &handlers[i];
	return NULL;
}

/* The runtime provides the outbox; without one (ctx->outbox NULL) the mail goes out at once. */
enum job_result outbox_add(void *outbox, struct job_mail *m);

enum job_result
job_send_mail(struct job_ctx *ctx, struct job_mail *m)
{
	if (ctx->outbox)
		return outbox_add(ctx->outbox, m);

	struct mailer_result res = MAILER_RESULT_INIT;
	const char *rcpts[] = {m->rcpt};
	(void)!mailer_send(ctx->mailer, NULL, rcpts, 1, m->data, m->len, &res);
	enum job_result rc = m->finish(ctx, &res, m->priv);
	mailer_result_clear(&res);
	if (m->free_priv)
		m->free_priv(m->priv);
	free(m->data);
	free(m->rcpt);
	return rc;
}

enum job_result
job_fail(struct job_ctx *ctx, enum job_result result, const char *error_class, const char *fmt, ...)
{
	va_list ap;

	util_strlcpy(ctx->error_class, error_class, sizeof(ctx->error_class));
	va_start(ap, fmt);
	vsnprintf(ctx->error_message, sizeof(ctx->error_message), fmt, ap);
	va_end(ap);
	return result;
}
