/* handler: the table of job handlers, and the failure helper they share. */
#include "workers/handler.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct handler handlers[] = {
    {"PingJob", false, ping_run},
    {"OverdueDigestJob", true, digest_run},
    {"ManagerDigestJob", true, manager_digest_run},
    {"ActivityInviteJob", true, invite_run},
    {"CaseAlertJob", true, case_alert_run},
    {"NpiSyncJob", true, npi_sync_run},
};

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
	handler_shutdown();
	memcpy(templates, fresh, n * sizeof(fresh[0]));
	return 0;
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
