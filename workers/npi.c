/* npi: NpiSyncJob: pages the NPI Registry for a saved search into npi_providers and referral_sources. */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/npi.h"
#include "workers/handler.h"

#define MAX_BODY (32 * 1024 * 1024) /* a page of 200 records is about 1 MB */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void
curl_setup(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct body {
	char *data;
	size_t len;
	bool too_big;
};

static size_t
on_data(char *ptr, size_t size, size_t nmemb, void *user)
{
	struct body *b = user;
	size_t n = size * nmemb;

	if (b->len + n > MAX_BODY) {
		b->too_big = true;
		return 0;
	}
	b->data = xrealloc(b->data, b->len + n + 1);
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

/* One sync run in progress. */
struct sync {
	struct job_ctx *ctx;
	CURL *curl;
	long long run_id;
	char run_id_s[24];
	char coordinator_s[24]; /* "" for none */
	json_t *criteria;
	struct npi_part *todo; /* todo[0] is the part being fetched */
	size_t ntodo, captodo;
	int64_t last_request_ms;
};

/* Sleeps ms in slices; false when the worker is asked to stop meanwhile. */
static bool
pause_ms(struct sync *s, int64_t ms)
{
	while (ms > 0) {
		if (atomic_load_explicit(s->ctx->stopping, memory_order_relaxed))
			return false;
		int64_t slice = ms < 100 ? ms : 100;
		util_sleep_ms(slice);
		ms -= slice;
	}
	return !atomic_load_explicit(s->ctx->stopping, memory_order_relaxed);
}

enum fetch { FETCH_OK, FETCH_REFUSED, FETCH_FAILED, FETCH_STOPPED };

/* Fetches and parses one page, retrying what may pass up to npi.attempts times with a doubling
 * backoff. FETCH_OK: *records (caller decrefs) and *count; otherwise msg says why. */
static enum fetch
fetch_page(struct sync *s, const char *url, json_t **records, int *count, char *msg, size_t msglen)
{
	const struct cfg *c = s->ctx->cfg;
	int64_t backoff = c->npi.retry_backoff_ms;

	for (int attempt = 1; attempt <= c->npi.attempts; attempt++) {
		if (attempt > 1) {
			if (!pause_ms(s, backoff))
				return FETCH_STOPPED;
			backoff *= 2;
		}
		/* The pause between requests, counted from the end of the previous one. */
		int64_t wait = s->last_request_ms + c->npi.request_interval_ms - util_mono_ms();
		if (s->last_request_ms && wait > 0 && !pause_ms(s, wait))
			return FETCH_STOPPED;

		struct body b = {0};
		long status = 0;
		curl_easy_setopt(s->curl, CURLOPT_URL, url);
		curl_easy_setopt(s->curl, CURLOPT_WRITEDATA, &b);
		CURLcode rc = curl_easy_perform(s->curl);
		s->last_request_ms = util_mono_ms();
		curl_easy_getinfo(s->curl, CURLINFO_RESPONSE_CODE, &status);
		if (rc != CURLE_OK) {
			snprintf(msg, msglen, "%s: %s", url, b.too_big ? "answer larger than 32 MB" : curl_easy_strerror(rc));
		} else if (status != 200) {
			/* 429 and 5xx pass with time; other codes too once the endpoint is fixed. */
			snprintf(msg, msglen, "%s: HTTP %ld", url, status);
		} else {
			int skipped = 0;
			char err[512];
			enum npi_answer a = npi_parse_answer(b.data ? b.data : "", b.len, records, count, &skipped, err,
			                                     sizeof(err));
			free(b.data);
			if (a == NPI_ANSWER_OK) {
				if (skipped)
					log_warnx("%s: %d result%s without a valid NPI skipped", url, skipped,
					          skipped == 1 ? "" : "s");
				return FETCH_OK;
			}
			if (a == NPI_ANSWER_REFUSED) {
				snprintf(msg, msglen, "%s", err);
				return FETCH_REFUSED;
			}
			snprintf(msg, msglen, "%s: %s", url, err);
			log_warnx("NPI Registry: try %d of %d: %s", attempt, c->npi.attempts, msg);
			continue;
		}
		free(b.data);
		log_warnx("NPI Registry: try %d of %d: %s", attempt, c->npi.attempts, msg);
	}
	return FETCH_FAILED;
}

static void
todo_replace_first(struct sync *s, const struct npi_part *with, size_t n)
{
	/* Drops todo[0] and puts the n parts in front. */
	size_t need = s->ntodo - 1 + n;
	if (need > s->captodo) {
		s->captodo = need + 16;
		s->todo = xrealloc(s->todo, s->captodo * sizeof(*s->todo));
	}
	memmove(s->todo + n, s->todo + 1, (s->ntodo - 1) * sizeof(*s->todo));
	if (n > 0) /* with may be NULL when a part has nothing left to split into */
		memcpy(s->todo, with, n * sizeof(*with));
	s->ntodo = need;
}

static char *
progress_text(const struct sync *s)
{
	json_t *p = json_pack("{s:o}", "todo", npi_parts_to_json(s->todo, s->ntodo));
	char *t = json_dumps(p, JSON_COMPACT);
	json_decref(p);
	return t;
}

/* Stores the run's progress (and nothing else) outside any page. */
static int
save_progress(struct sync *s, int parts_done, int errors)
{
	char *prog = progress_text(s);
	char pd[16], er[16];
	snprintf(pd, sizeof(pd), "%d", parts_done);
	snprintf(er, sizeof(er), "%d", errors);
	int rc = db_exec(s->ctx->db,
	                 "UPDATE npi_sync_runs SET progress = $2::jsonb, parts_done = parts_done + $3::int, "
	                 "errors = errors + $4::int WHERE id = $1",
	                 DB_ARGS(s->run_id_s, prog, pd, er));
	free(prog);
	return rc;
}

static enum job_result
db_failed(struct job_ctx *ctx, const char *what)
{
	return job_fail(ctx, db_lost(ctx->db) ? JOB_RETRY : JOB_DEAD, "DatabaseError", "%s: %s", what,
	                db_error(ctx->db));
}

/* Takes one page in: the records, the counters and the progress after it, in one transaction. */
static enum job_result
take_page(struct sync *s, json_t *records, int parts_done, int errors)
{
	struct job_ctx *ctx = s->ctx;
	char *page = json_dumps(records, JSON_COMPACT);
	char *prog = progress_text(s);
	char pd[16], er[16];
	snprintf(pd, sizeof(pd), "%d", parts_done);
	snprintf(er, sizeof(er), "%d", errors);

	if (db_begin(ctx->db) == -1) {
		free(page);
		free(prog);
		return db_failed(ctx, "BEGIN");
	}
	PGresult *res = db_query(ctx->db,
	                         "WITH t AS (SELECT * FROM npi_take_page($1::bigint, $2::bigint, $3::jsonb)) "
	                         "UPDATE npi_sync_runs r SET pages_fetched = r.pages_fetched + 1, "
	                         "records_seen = r.records_seen + t.seen, created = r.created + t.created, "
	                         "updated = r.updated + t.updated, unchanged = r.unchanged + t.unchanged, "
	                         "reopened = r.reopened + t.reopened, "
	                         "progress = $4::jsonb, parts_done = r.parts_done + $5::int, errors = r.errors + $6::int "
	                         "FROM t WHERE r.id = $1 RETURNING t.seen, t.created, t.updated, t.unchanged, t.reopened",
	                         DB_ARGS(s->run_id_s, s->coordinator_s[0] ? s->coordinator_s : NULL, page, prog, pd, er));
	free(page);
	free(prog);
	if (res == NULL) {
		enum job_result r = db_failed(ctx, "taking in a page of NPI records");
		db_rollback(ctx->db);
		return r;
	}
	log_debug("page: %s seen, %s created, %s updated, %s unchanged, %s reopened", PQgetvalue(res, 0, 0),
	          PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4));
	PQclear(res);
	if (db_commit(ctx->db) == -1)
		return db_failed(ctx, "COMMIT");
	return JOB_DONE;
}

/* Loads or starts the search's running run. */
static enum job_result
open_run(struct sync *s, long long search_id)
{
	struct job_ctx *ctx = s->ctx;
	char sid[24];
	snprintf(sid, sizeof(sid), "%lld", search_id);

	PGresult *res = db_query(ctx->db, "SELECT id, progress->'todo' FROM npi_sync_runs WHERE search_id = $1 AND "
	                                  "status = 'running'",
	                         DB_ARGS(sid));
	if (res == NULL)
		return db_failed(ctx, "reading the sync run");
	if (PQntuples(res) == 1) {
		s->run_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		json_t *todo = json_loads(PQgetvalue(res, 0, 1), JSON_DECODE_ANY, NULL);
		int rc = npi_parts_from_json(todo, &s->todo, &s->ntodo);
		json_decref(todo);
		PQclear(res);
		if (rc == 0) {
			s->captodo = s->ntodo;
			snprintf(s->run_id_s, sizeof(s->run_id_s), "%lld", s->run_id);
			log_info("resuming sync run %lld of saved search %lld: %zu query part%s left", s->run_id, search_id,
			         s->ntodo, s->ntodo == 1 ? "" : "s");
			return JOB_DONE;
		}
		/* A run whose progress is unreadable starts again under the same id. */
	} else {
		PQclear(res);
		res = db_query(ctx->db,
		               "INSERT INTO npi_sync_runs (search_id, jid) VALUES ($1, $2) ON CONFLICT DO NOTHING "
		               "RETURNING id",
		               DB_ARGS(sid, ctx->job->jid));
		if (res == NULL)
			return db_failed(ctx, "starting a sync run");
		if (PQntuples(res) != 1) {
			PQclear(res);
			return job_fail(ctx, JOB_RETRY, "SyncBusy", "another sync of saved search %lld started meanwhile",
			                search_id);
		}
		s->run_id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		log_info("sync run %lld of saved search %lld started", s->run_id, search_id);
	}
	snprintf(s->run_id_s, sizeof(s->run_id_s), "%lld", s->run_id);
	s->todo = xcalloc(16, sizeof(*s->todo));
	s->captodo = 16;
	s->ntodo = 1;
	npi_part_root(s->criteria, &s->todo[0]);
	if (save_progress(s, 0, 0) == -1)
		return db_failed(ctx, "saving the sync progress");
	return JOB_DONE;
}

/* Ends the run with status and, when failed, the reason. */
static void
close_run(struct sync *s, const char *status, const char *error)
{
	if (db_exec(s->ctx->db,
	            "UPDATE npi_sync_runs SET status = $2, finished_at = now(), last_error = $3, "
	            "progress = '{\"todo\": []}' WHERE id = $1",
	            DB_ARGS(s->run_id_s, status, error)) == -1)
		log_warnx("closing sync run %s: %s", s->run_id_s, db_error(s->ctx->db));
}

static enum job_result
run_parts(struct sync *s)
{
	struct job_ctx *ctx = s->ctx;
	static _Thread_local struct npi_part children[NPI_MAX_SPLIT];
	char msg[1024];

	while (s->ntodo > 0) {
		struct npi_part *p = &s->todo[0];
		if (!npi_part_queryable(p)) {
			int n = npi_part_split(p, children);
			todo_replace_first(s, children, (size_t)n);
			if (save_progress(s, 0, 0) == -1)
				return db_failed(ctx, "saving the sync progress");
			continue;
		}
		char *url = npi_url(ctx->cfg->npi.base_url, s->criteria, p);
		json_t *records = NULL;
		int count = 0;
		enum fetch f = fetch_page(s, url, &records, &count, msg, sizeof(msg));
		if (f == FETCH_STOPPED) {
			free(url);
			return job_fail(ctx, JOB_RETRY, "Interrupted", "the worker stopped; the sync resumes where it was");
		}
		if (f == FETCH_REFUSED) {
			log_warnx("NPI Registry refused %s: %s", url, msg);
			free(url);
			close_run(s, "failed", msg);
			return job_fail(ctx, JOB_DEAD, "NpiRegistryError", "%s", msg);
		}
		if (f == FETCH_FAILED) {
			free(url);
			if (db_exec(ctx->db, "UPDATE npi_sync_runs SET errors = errors + 1, last_error = $2 WHERE id = $1",
			            DB_ARGS(s->run_id_s, msg)) == -1)
				log_warnx("recording the failure of run %s: %s", s->run_id_s, db_error(ctx->db));
			return job_fail(ctx, JOB_RETRY, "NpiRegistryUnavailable", "%s", msg);
		}

		/* What comes next for this part: the next page, nothing (a short page), or narrower parts
		 * when the last reachable page is full. */
		int parts_done = 0, errors = 0;
		if (count < NPI_PAGE_LIMIT) {
			todo_replace_first(s, NULL, 0);
			parts_done = 1;
		} else if (p->skip >= NPI_MAX_SKIP) {
			int n = npi_part_split(p, children);
			if (n == 0) {
				log_warnx("%s: more than %d providers and nothing left to narrow by; only the first %d "
				          "were taken",
				          url, NPI_MAX_SKIP + NPI_PAGE_LIMIT, NPI_MAX_SKIP + NPI_PAGE_LIMIT);
				errors = 1;
			} else
				log_info("query part postal=%s%s%s%s%s reached the %d cap: split in %d",
				         p->postal[0] ? p->postal : "any", p->etype[0] ? " type=" : "", p->etype,
				         p->name[0] && p->name[0] != '-' ? " name=" : "", p->name[0] != '-' ? p->name : "",
				         NPI_MAX_SKIP + NPI_PAGE_LIMIT, n);
			todo_replace_first(s, children, (size_t)n);
			parts_done = 1;
		} else
			p->skip += NPI_PAGE_LIMIT;
		free(url);
		enum job_result r = take_page(s, records, parts_done, errors);
		json_decref(records);
		if (r != JOB_DONE)
			return r;
	}
	return JOB_DONE;
}

/* Resolves taxonomy_code into the description the API searches by (from the loaded NUCC set; the
 * code itself when it is not there). */
static void
resolve_taxonomy(struct sync *s)
{
	const char *code = json_string_value(json_object_get(s->criteria, "taxonomy_code"));

	if (code == NULL || json_object_get(s->criteria, "taxonomy_description"))
		return;
	PGresult *res = db_query(s->ctx->db,
	                         "SELECT coalesce(nullif(specialization, ''), classification) FROM taxonomies "
	                         "WHERE code = $1",
	                         DB_ARGS(code));
	const char *desc = res && PQntuples(res) == 1 ? PQgetvalue(res, 0, 0) : code;
	json_object_set_new(s->criteria, "taxonomy_description", json_string(desc));
	PQclear(res);
}

enum job_result
npi_sync_run(struct job_ctx *ctx)
{
	long long search_id = (long long)json_integer_value(json_array_get(ctx->job->args, 0));
	struct sync s = {.ctx = ctx};
	char sid[24];
	enum job_result result;

	snprintf(sid, sizeof(sid), "%lld", search_id);
	PGresult *res = db_query(ctx->db,
	                         "SELECT criteria::text, coalesce(coordinator_id::text, ''), active, "
	                         "pg_try_advisory_lock(hashtext('npi_sync'), id::int) FROM npi_searches WHERE id = $1",
	                         DB_ARGS(sid));
	if (res == NULL)
		return db_failed(ctx, "reading the saved search");
	if (PQntuples(res) == 0) {
		PQclear(res);
		return job_fail(ctx, JOB_DEAD, "ArgumentError", "NpiSyncJob: saved search %lld does not exist", search_id);
	}
	bool active = PQgetvalue(res, 0, 2)[0] == 't';
	bool locked = PQgetvalue(res, 0, 3)[0] == 't';
	s.criteria = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	util_strlcpy(s.coordinator_s, PQgetvalue(res, 0, 1), sizeof(s.coordinator_s));
	PQclear(res);
	if (!locked) {
		json_decref(s.criteria);
		return job_fail(ctx, JOB_RETRY, "SyncBusy", "saved search %lld is being synced by another job", search_id);
	}
	if (!active) {
		log_notice("saved search %lld is not active; nothing to do", search_id);
		result = JOB_DONE;
		goto out;
	}
	/* The registry judges the criteria (its Errors answer sends the job to dead); only their shape is
	 * checked here. */
	if (!json_is_object(s.criteria)) {
		result = job_fail(ctx, JOB_DEAD, "ArgumentError", "saved search %lld: criteria is not a JSON object",
		                  search_id);
		goto out;
	}
	resolve_taxonomy(&s);

	pthread_once(&curl_once, curl_setup);
	s.curl = curl_easy_init();
	if (s.curl == NULL) {
		result = job_fail(ctx, JOB_RETRY, "CurlError", "curl_easy_init failed");
		goto out;
	}
	curl_easy_setopt(s.curl, CURLOPT_WRITEFUNCTION, on_data);
	curl_easy_setopt(s.curl, CURLOPT_TIMEOUT, (long)ctx->cfg->npi.timeout);
	curl_easy_setopt(s.curl, CURLOPT_CONNECTTIMEOUT, (long)(ctx->cfg->npi.timeout < 10 ? ctx->cfg->npi.timeout : 10));
	curl_easy_setopt(s.curl, CURLOPT_USERAGENT, ctx->cfg->npi.user_agent);
	curl_easy_setopt(s.curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(s.curl, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(s.curl, CURLOPT_FOLLOWLOCATION, 1L);
	curl_easy_setopt(s.curl, CURLOPT_MAXREDIRS, 3L);

	result = open_run(&s, search_id);
	if (result != JOB_DONE)
		goto out;
	result = run_parts(&s);
	if (result == JOB_DONE) {
		close_run(&s, "done", NULL);
		res = db_query(ctx->db,
		               "SELECT pages_fetched, records_seen, created, updated, unchanged, errors, reopened "
		               "FROM npi_sync_runs WHERE id = $1",
		               DB_ARGS(s.run_id_s));
		if (res && PQntuples(res) == 1)
			log_info("sync run %lld of saved search %lld done: %s pages, %s providers, %s created, %s updated, "
			         "%s unchanged, %s errors, %s prospects reopened",
			         s.run_id, search_id, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
			         PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 4), PQgetvalue(res, 0, 5), PQgetvalue(res, 0, 6));
		PQclear(res);
	}
out:
	if (s.curl)
		curl_easy_cleanup(s.curl);
	free(s.todo);
	json_decref(s.criteria);
	if (db_exec(ctx->db, "SELECT pg_advisory_unlock(hashtext('npi_sync'), $1::int)", DB_ARGS(sid)) == -1)
		log_warnx("releasing the lock of saved search %s: %s", sid, db_error(ctx->db));
	return result;
}
