/* metrics: MetricsJob, recomputing the outcome metric tables in PostgreSQL (set-based, in the database). */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "workers/handler.h"

/* A full computation over years of referrals takes far longer than an ordinary statement may; the
 * refresh gets its own limit, still finite. */
#define METRICS_STATEMENT_TIMEOUT "30min"

enum job_result
metrics_run(struct job_ctx *ctx)
{
	const char *kind = json_string_value(json_array_get(ctx->job->args, 0));
	const char *start = json_string_value(json_array_get(ctx->job->args, 1));
	int64_t t0 = util_mono_ms();

	if (db_begin(ctx->db) == -1)
		return job_fail(ctx, JOB_RETRY, "DatabaseError", "metrics: BEGIN: %s", db_error(ctx->db));
	if (db_exec(ctx->db, "SET LOCAL statement_timeout = '" METRICS_STATEMENT_TIMEOUT "'", 0, NULL) == -1)
		goto fail;
	PGresult *res = db_query(ctx->db,
	                         "SELECT run_id, periods, rows_changed, phases FROM outreach_metrics_refresh($1, $2::date)",
	                         DB_ARGS(kind, start));
	if (res == NULL)
		goto fail;
	/* Campaign results: small next to the referrals, recomputed whole. */
	PGresult *camp = db_query(ctx->db, "SELECT campaign_metrics_refresh()", 0, NULL);
	if (camp == NULL) {
		PQclear(res);
		goto fail;
	}
	log_info("metrics: campaign results, %s row%s changed", PQgetvalue(camp, 0, 0),
	         strcmp(PQgetvalue(camp, 0, 0), "1") == 0 ? "" : "s");
	PQclear(camp);
	if (db_commit(ctx->db) == -1) {
		PQclear(res);
		goto fail;
	}
	log_info("metrics: run %s recomputed %s period%s (%s), %s row%s changed in %lld ms (%s)",
	         PQgetvalue(res, 0, 0),
	         PQgetvalue(res, 0, 1), strcmp(PQgetvalue(res, 0, 1), "1") == 0 ? "" : "s",
	         kind ? kind : "touched since the last run", PQgetvalue(res, 0, 2),
	         strcmp(PQgetvalue(res, 0, 2), "1") == 0 ? "" : "s", (long long)(util_mono_ms() - t0),
	         PQgetvalue(res, 0, 3));
	PQclear(res);
	return JOB_DONE;

fail:;
	/* Bad arguments are for good; anything else (a lost connection, a timeout, a lock) may pass. */
	bool bad = strcmp(db_sqlstate(ctx->db), "22023") == 0;
	char msg[512];
	util_strlcpy(msg, db_error(ctx->db), sizeof(msg));
	db_rollback(ctx->db);
	if (bad)
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "%s", msg);
	return job_fail(ctx, JOB_RETRY, "DatabaseError", "metrics: %s", msg);
}
