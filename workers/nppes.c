/* nppes: NppesImportJob, an NPPES full, weekly or deactivation file on the worker's host imported in one transaction. */
#include <stdio.h>
#include <string.h>

#include "common/log.h"
#include "common/nppes.h"
#include "workers/handler.h"

enum job_result
nppes_import_run(struct job_ctx *ctx)
{
	struct nppes_opts o;
	struct nppes_stats st;
	char err[1024];

	if (nppes_job_args(ctx->job->args, &o, err, sizeof(err)) == -1)
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "%s", err);
	if (nppes_import(ctx->db, &o, &st, err, sizeof(err)) == -1) {
		/* A lost connection may pass; a missing or malformed file, a refused row or statement will not. */
		if (db_lost(ctx->db))
			return job_fail(ctx, JOB_RETRY, "DatabaseError", "import-nppes: %s", err);
		return job_fail(ctx, JOB_DEAD, "NppesImportError", "%s", err);
	}
	log_info("nppes: %s (%s): %ld rows read, %ld taken, %ld filtered out, %ld malformed, %ld deactivated; "
	         "%ld providers written, %ld referral sources written, %ld prospects closed, %ld reopened; %lld ms",
	         o.path, nppes_kind_name(o.kind), st.rows, st.kept, st.filtered, st.bad, st.deactivated, st.providers,
	         st.sources, st.sources_closed, st.sources_reopened, st.ms);
	return JOB_DONE;
}
