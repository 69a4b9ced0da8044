/* ping: PingJob, the liveness probe and the job that benchmarks and fault tests use. */
#include <jansson.h>

#include "workers/handler.h"

enum job_result
ping_run(struct job_ctx *ctx)
{
	json_t *key = json_array_get(ctx->job->args, 0);
	json_t *ms = json_array_get(ctx->job->args, 1);
	json_int_t wait = ms ? json_integer_value(ms) : 0;

	/* Wait in slices so that a stop request is noticed; the runtime decides what stopping means. */
	for (json_int_t left = wait; left > 0; left -= 50)
		util_sleep_ms(left < 50 ? left : 50);
	if (key && json_is_string(key)) {
		redisReply *r = redisCommand(ctx->redis, "SADD %s %s", json_string_value(key), ctx->job->jid);
		if (r == NULL)
			return job_fail(ctx, JOB_RETRY, "RedisError", "SADD %s: %s", json_string_value(key),
			                ctx->redis->errstr);
		bool bad = r->type == REDIS_REPLY_ERROR;
		freeReplyObject(r);
		/* A key of the wrong type can be fixed by its owner: worth a retry, like a lost connection. */
		if (bad)
			return job_fail(ctx, JOB_RETRY, "RedisError", "SADD %s refused (is it a set?)",
			                json_string_value(key));
	}
	return JOB_DONE;
}
