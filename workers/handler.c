/* handler: the table of job handlers, and the failure helper they share. */
#include "workers/handler.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct handler handlers[] = {
    {"PingJob", false, ping_run},
};

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
