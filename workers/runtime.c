/* runtime: the worker process: reliable fetch, run, ack, retry, dead, heartbeat, shutdown. */
#include "workers/runtime.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/db.h"
#include "common/jobclass.h"
#include "common/log.h"
#include "common/queue.h"
#include "common/rds.h"
#include "common/sdnotify.h"
#include "workers/handler.h"

#define HEARTBEAT_MS 5000
#define MAX_BATCH 32

/* Fetches up to ARGV[2] jobs, queue by queue in the given order, moving each into its private list.
 * KEYS: queue:Q1..queue:Qn, then the n private lists. Returns {index, job, index, job, ...}. */
static const char lua_fetch[] =
    "local n, max, out = tonumber(ARGV[1]), tonumber(ARGV[2]), {}\n"
    "for i = 1, n do\n"
    "  while #out < max * 2 do\n"
    "    local job = redis.call('LMOVE', KEYS[i], KEYS[n + i], 'RIGHT', 'LEFT')\n"
    "    if not job then break end\n"
    "    out[#out + 1] = i; out[#out + 1] = job\n"
    "  end\n"
    "  if #out >= max * 2 then break end\n"
    "end\n"
    "return out\n";

struct worker;

struct wthread {
	struct worker *w;
	pthread_t th;
	int idx;
	char tid[24];
	redisContext *r;
	struct db *db;
	struct mailer *mailer;
	int mailer_gen; /* the configuration generation the mailer was made from */
	/* The configuration generation this thread read at the top of its loop, where it holds no
	 * configuration (its mailer keeps copies): it may hold one of that generation or a later one,
	 * never an earlier. INT_MAX once it has returned. */
	atomic_int cfg_seen;
	char fetch_sha[41]; /* this thread's: a NOSCRIPT reply loads the script again into it */
	bool done;      /* the thread has returned */
	pthread_mutex_t mu;
	/* The job running now, for the heartbeat's workers hash and for hand-back on a hard stop. */
	char *cur_json;
	int cur_queue;
	double cur_run_at;
};

struct worker {
	struct cfg *_Atomic cfg; /* the running configuration: a reload swaps it (see cfg_now) */
	const char *cfg_path;
	const struct runtime_opts *o;
	char identity[320];
	char hostname[256];
	double started_at;
	char *qkeys[RUNTIME_MAX_QUEUES];     /* queue:Q */
	char *private[RUNTIME_MAX_QUEUES];   /* outreach:inflight:Q:identity */
	struct wthread *threads;
	atomic_int quiet;    /* stop fetching (TSTP or stopping) */
	atomic_int stopping; /* asked to stop: handlers may look */
	atomic_long processed, failed;
	atomic_int cfg_gen; /* raised by each reload */
	atomic_int busy;
	redisContext *hb;    /* the main thread's connection: heartbeat, sweep, hand-back */
	struct queue_refusals *sweep_refused; /* the sweep's moves Redis refused, logged once */
	unsigned long sweeps;                 /* sweeps done, for the debug log */
	/* Configurations a reload replaced, each with the generation it served: a thread may still read
	 * one until every thread has seen a later generation (free_retired). */
	struct retired {
		struct cfg *cfg;
		int gen;
	} *retired;
	size_t nretired;
};

/* The running configuration, read-only. Threads read it while the main thread may put a reloaded one
 * in its place; the one it replaces stays alive until no thread can hold it (w->retired). Only the
 * main thread, its one writer, holds it writable (cfg_owned). */
static const struct cfg *
cfg_now(struct worker *w)
{
	return atomic_load_explicit(&w->cfg, memory_order_acquire);
}

/* The running configuration as its owner, the main thread, holds it: to retire or hand back. */
static struct cfg *
cfg_owned(struct worker *w)
{
	return atomic_load_explicit(&w->cfg, memory_order_relaxed);
}

static void
thread_set_current(struct wthread *t, const char *json, int queue)
{
	pthread_mutex_lock(&t->mu);
	free(t->cur_json);
	t->cur_json = json ? xstrdup(json) : NULL;
	t->cur_queue = queue;
	t->cur_run_at = util_now();
	pthread_mutex_unlock(&t->mu);
}

/* Connects a Redis context, retrying with backoff until it works or the worker stops. */
static redisContext *
connect_redis(struct worker *w)
{
	int64_t delay = 250;
	char err[512];

	for (;;) {
		const struct cfg *c = cfg_now(w);
		redisContext *r = rds_connect(&c->redis_addr, c->redis.password, c->redis.timeout, err, sizeof(err));
		if (r)
			return r;
		if (atomic_load_explicit(&w->stopping, memory_order_relaxed))
			return NULL;
		log_warnx("%s; retrying in %lld ms", err, (long long)delay);
		util_sleep_ms(delay);
		delay = delay * 2 > 10000 ? 10000 : delay * 2;
	}
}

/* Ensures *r is a live connection; after an I/O error the context is useless and is replaced. */
static bool
redis_ok(struct worker *w, redisContext **r)
{
	if (*r && (*r)->err == 0)
		return true;
	if (*r)
		redisFree(*r);
	*r = connect_redis(w);
	return *r != NULL;
}

static void
load_script(redisContext *r, const char *src, char sha[41])
{
	redisReply *rep = redisCommand(r, "SCRIPT LOAD %s", src);

	if (rep && rep->type == REDIS_REPLY_STRING)
		util_strlcpy(sha, rep->str, 41);
	if (rep)
		freeReplyObject(rep);
}

/* Moves a job out of a private list: to the front of its queue, to retry or to dead, over *rp, which
 * is replaced when its connection broke (NULL when no new one could be made). Returns false when the
 * job stays in the private list: if this process dies the sweep hands it back. */
static bool
move_from_private(struct worker *w, redisContext **rp, int q, const char *old, size_t old_len, const char *fresh,
                  enum queue_dest dest, const char *zset, double score)
{
	char err[512], sc[32];
	bool moved;

	snprintf(sc, sizeof(sc), "%.6f", score);
	for (int attempt = 0; attempt < 5; attempt++) {
		/* After a broken connection the move is tried again on a new one: it moves nothing when
		 * the job already left the list. */
		if (!redis_ok(w, rp))
			return false;
		int rc = dest == QUEUE_DEST_ZSET
		             ? queue_move(*rp, w->private[q], false, old, old_len, fresh, dest, zset, sc, &moved, err,
		                          sizeof(err))
		             : queue_move(*rp, w->private[q], false, old, old_len, fresh, dest, w->qkeys[q],
		                          w->o->queues[q], &moved, err, sizeof(err));
		if (rc == 0)
			return true;
		log_warnx("moving a job out of %s: %s", w->private[q], err);
		if ((*rp)->err == 0)
			util_sleep_ms(200);
	}
	return false;
}

/* Moves old out of the private list into dead, as content (old itself, or an updated copy) with the
 * reason added. */
static void
to_dead(struct worker *w, struct wthread *t, int q, const char *old, size_t old_len, const char *content,
        const char *cls, const char *msg)
{
	double now = util_now();
	char *fresh = queue_dead_json(content, cls, msg, now);

	log_warnx("job sent to dead: %s: %s", cls, msg);
	move_from_private(w, &t->r, q, old, old_len, fresh, QUEUE_DEST_ZSET, "dead", now);
	free(fresh);
	atomic_fetch_add(&w->failed, 1);
}

static void
to_retry(struct worker *w, struct wthread *t, int q, const char *old, size_t old_len, struct job *job,
         const char *cls, const char *msg)
{
	double now = util_now();
	int count = job->retry_count + 1;

	job_set_string(job, "error_class", cls);
	job_set_string(job, "error_message", msg);
	if (job->retry_count < 0)
		job_set_time(job, "failed_at", now);
	else
		job_set_time(job, "retried_at", now);
	job_set_int(job, "retry_count", count);
	json_t *rq = json_object_get(job->obj, "retry_queue");
	if (rq && json_is_string(rq) && job_queue_name_ok(json_string_value(rq)))
		job_set_string(job, "queue", json_string_value(rq));

	if (!job->retry || count >= job->max_retries) {
		json_t *deadflag = json_object_get(job->obj, "dead");
		char reason[700];
		snprintf(reason, sizeof(reason), "%s%s", msg,
		         job->retry ? " (retries exhausted)" : " (retry is off)");
		if (deadflag && json_is_false(deadflag)) {
			/* The job asked not to be kept: say so loudly, since it is gone. */
			log_warnx("job discarded after failing (\"dead\": false): %s: %s", cls, reason);
			redisReply *rep = redisCommand(t->r, "LREM %s 1 %b", w->private[q], old, old_len);
			if (rep)
				freeReplyObject(rep);
			atomic_fetch_add(&w->failed, 1);
			return;
		}
		char *json = job_dump(job);
		to_dead(w, t, q, old, old_len, json, cls, reason);
		free(json);
		return;
	}
	double at = now + job_backoff(count);
	char *json = job_dump(job);
	log_info("job failed, retry %d of %d in %.0f s: %s: %s", count, job->max_retries, at - now, cls, msg);
	move_from_private(w, &t->r, q, old, old_len, json, QUEUE_DEST_ZSET, "retry", at);
	free(json);
	atomic_fetch_add(&w->failed, 1);
}

static bool
ensure_db(struct worker *w, struct wthread *t, char *err, size_t errlen)
{
	if (t->db && PQstatus(db_conn(t->db)) == CONNECTION_OK)
		return true;
	if (t->db && db_reset(t->db) == 0)
		return true;
	db_free(t->db);
	t->db = db_connect(cfg_now(w), "outreach-worker", err, errlen);
	return t->db != NULL;
}

/* Ends a job that ran: removed when done, to retry or to dead with what the handler said. */
static void
finalize(struct worker *w, struct wthread *t, int q, const char *json, size_t len, struct job *job,
         enum job_result res, const struct job_ctx *ctx)
{
	if (!redis_ok(w, &t->r))
		return; /* stopping: the job stays in the private list and is handed back */
	switch (res) {
	case JOB_DONE: {
		redisReply *rep = redisCommand(t->r, "LREM %s 1 %b", w->private[q], json, len);
		if (rep)
			freeReplyObject(rep);
		break;
	}
	case JOB_RETRY:
		to_retry(w, t, q, json, len, job, ctx->error_class[0] ? ctx->error_class : "JobError",
		         ctx->error_message[0] ? ctx->error_message : "the job failed");
		break;
	case JOB_DEAD:
		to_dead(w, t, q, json, len, json, ctx->error_class[0] ? ctx->error_class : "JobError",
		        ctx->error_message[0] ? ctx->error_message : "the job failed for good");
		break;
	case JOB_PENDING:
		break; /* not reached: outbox_flush ends these */
	}
}

/* A job whose email waits in the thread's outbox. */
struct pending {
	char *json; /* the job's text in the private list */
	size_t len;
	int q;
	struct job *job;
	struct job_mail mail;
};

struct outbox {
	struct wthread *t;
	struct pending *items;
	size_t n, cap;
	/* The job being run, for outbox_add. */
	const char *json;
	size_t len;
	int q;
	struct job *job;
	bool took_job;
};

enum job_result outbox_add(void *outbox, struct job_mail *m);

enum job_result
outbox_add(void *outbox, struct job_mail *m)
{
	struct outbox *ob = outbox;

	if (ob->n == ob->cap) {
		ob->cap = ob->cap ? ob->cap * 2 : 16;
		ob->items = xrealloc(ob->items, ob->cap * sizeof(*ob->items));
	}
	struct pending *p = &ob->items[ob->n++];
	p->json = xstrndup(ob->json, ob->len);
	p->len = ob->len;
	p->q = ob->q;
	p->job = ob->job;
	p->mail = *m;
	ob->took_job = true; /* the pending entry owns the job now */
	return JOB_PENDING;
}

/* Sends the emails of the jobs run since the last flush over one SMTP connection, lets each job
 * record its email's outcome, runs the batch hooks (handler_batch_done), then ends each of those
 * jobs by that outcome. */
static void
outbox_flush(struct worker *w, struct outbox *ob)
{
	struct wthread *t = ob->t;
	const struct cfg *cfg = cfg_now(w); /* one configuration for the whole flush */
	struct job_ctx hctx = {.cfg = cfg, .db = t->db, .redis = t->r, .mailer = t->mailer, .outbox = ob,
	                       .stopping = &w->stopping};

	if (ob->n == 0) {
		handler_batch_done(&hctx);
		return;
	}
	struct mailer_msg *msgs = xcalloc(ob->n, sizeof(*msgs));
	const char **rcpts = xcalloc(ob->n, sizeof(*rcpts));
	struct job_ctx *ctxs = xcalloc(ob->n, sizeof(*ctxs));
	enum job_result *res = xcalloc(ob->n, sizeof(*res));
	for (size_t i = 0; i < ob->n; i++) {
		rcpts[i] = ob->items[i].mail.rcpt;
		msgs[i] = (struct mailer_msg){.rcpts = &rcpts[i], .nrcpt = 1, .data = ob->items[i].mail.data,
		                              .len = ob->items[i].mail.len, .res = MAILER_RESULT_INIT};
	}
	(void)!mailer_send_batch(t->mailer, NULL, msgs, ob->n);
	for (size_t i = 0; i < ob->n; i++) {
		struct pending *p = &ob->items[i];
		ctxs[i] = (struct job_ctx){.cfg = cfg, .job = p->job, .db = t->db, .redis = t->r,
		                           .mailer = t->mailer, .outbox = ob, .stopping = &w->stopping};
		log_set_context("class=%s jid=%s", p->job->class, p->job->jid);
		res[i] = p->mail.finish(&ctxs[i], &msgs[i].res, p->mail.priv);
		log_clear_context();
	}
	handler_batch_done(&hctx);
	for (size_t i = 0; i < ob->n; i++) {
		struct pending *p = &ob->items[i];
		log_set_context("class=%s jid=%s", p->job->class, p->job->jid);
		finalize(w, t, p->q, p->json, p->len, p->job, res[i], &ctxs[i]);
		log_clear_context();
		mailer_result_clear(&msgs[i].res);
		if (p->mail.free_priv)
			p->mail.free_priv(p->mail.priv);
		free(p->mail.data);
		free(p->mail.rcpt);
		free(p->json);
		job_free(p->job);
	}
	free(msgs);
	free(rcpts);
	free(ctxs);
	free(res);
	ob->n = 0;
}

/* Runs the batch hooks (handler_batch_start) over the jobs of a fetched batch that process would
 * run: parsed (parsed[k] not NULL), of a known class, with valid args. The jobs stay the caller's. */
static void
batch_start(struct worker *w, struct wthread *t, struct job *const *parsed, size_t njobs)
{
	const struct job **jobs = xcalloc(njobs + 1, sizeof(*jobs));
	size_t n = 0;
	bool db = false;
	char err[512];

	for (size_t k = 0; k < njobs; k++) {
		const struct job *job = parsed[k];
		const struct jobclass *jc = job ? jobclass_find(job->class) : NULL;
		const struct handler *h = job ? handler_find(job->class) : NULL;
		if (jc == NULL || h == NULL || jc->validate(job->args, err, sizeof(err)) == -1)
			continue;
		db = db || h->needs_db;
		jobs[n++] = job;
	}
	if (n > 0 && (!db || ensure_db(w, t, err, sizeof(err)))) {
		struct job_ctx ctx = {.cfg = cfg_now(w), .db = t->db, .redis = t->r, .mailer = t->mailer,
		                      .stopping = &w->stopping};
		handler_batch_start(&ctx, jobs, n);
	}
	free(jobs);
}

/* The job in json, parsed, or NULL with the reason in err. */
static struct job *
parse(struct worker *w, const char *json, size_t len, char *err, size_t errlen)
{
	return job_parse(json, len, (size_t)cfg_now(w)->worker.max_job_size, err, errlen);
}

/* Runs one job taken from queue q, parsed by the caller (job, owned from here on; NULL when it could
 * not be); the job text stays in the private list until it ends (here, or in outbox_flush when it
 * left an email in the outbox). */
static void
process(struct worker *w, struct wthread *t, struct outbox *ob, int q, const char *json, size_t len,
        struct job *job)
{
	char err[512];

	if (job == NULL) /* parsed again for the reason: rare */
		(void)parse(w, json, len, err, sizeof(err));

	atomic_fetch_add(&w->processed, 1);
	if (job == NULL) {
		to_dead(w, t, q, json, len, json, "InvalidJob", err);
		return;
	}
	log_set_context("class=%s jid=%s", job->class, job->jid);
	const struct jobclass *jc = jobclass_find(job->class);
	const struct handler *h = handler_find(job->class);
	if (jc == NULL || h == NULL) {
		char names[512], msg[700];
		jobclass_names(names, sizeof(names));
		snprintf(msg, sizeof(msg), "no handler for class \"%s\" (known: %s)", job->class, names);
		to_dead(w, t, q, json, len, json, "UnknownJobClass", msg);
		goto out;
	}
	if (jc->validate(job->args, err, sizeof(err)) == -1) {
		to_dead(w, t, q, json, len, json, "ArgumentError", err);
		goto out;
	}
	if (h->needs_db && !ensure_db(w, t, err, sizeof(err))) {
		to_retry(w, t, q, json, len, job, "DatabaseUnavailable", err);
		goto out;
	}

	/* A reload may have changed the SMTP settings: the next email uses them. */
	/* The generation first: a configuration read after it is of that generation or a later one. */
	int gen = atomic_load(&w->cfg_gen);
	const struct cfg *cfg = cfg_now(w);
	if (t->mailer == NULL || t->mailer_gen != gen) {
		outbox_flush(w, ob);
		mailer_free(t->mailer);
		t->mailer = mailer_new(cfg);
		t->mailer_gen = gen;
	}
	struct job_ctx ctx = {.cfg = cfg,
	                      .job = job,
	                      .db = t->db,
	                      .redis = t->r,
	                      .mailer = t->mailer,
	                      .outbox = ob,
	                      .stopping = &w->stopping};
	ob->json = json;
	ob->len = len;
	ob->q = q;
	ob->job = job;
	ob->took_job = false;
	thread_set_current(t, json, q);
	atomic_fetch_add(&w->busy, 1);
	enum job_result res = h->run(&ctx);
	atomic_fetch_sub(&w->busy, 1);
	thread_set_current(t, NULL, 0);
	if (res == JOB_PENDING && ob->took_job) {
		log_clear_context();
		return; /* the outbox owns the job now */
	}
	if (res == JOB_PENDING) /* a handler's mistake: retry rather than lose the job */
		res = job_fail(&ctx, JOB_RETRY, "JobError", "the handler left no email in the outbox");
	finalize(w, t, q, json, len, job, res, &ctx);
out:
	log_clear_context();
	job_free(job);
}

/* The fetch order for this round: the configured order, or a weighted shuffle. */
static void
fetch_order(struct worker *w, int order[RUNTIME_MAX_QUEUES], unsigned int *seed)
{
	int n = w->o->nqueues;

	for (int i = 0; i < n; i++)
		order[i] = i;
	if (!w->o->weighted)
		return;
	/* Weighted random order without replacement (Sidekiq's weighted mode). */
	int weights[RUNTIME_MAX_QUEUES], total = 0;
	for (int i = 0; i < n; i++)
		total += weights[i] = w->o->weights[i];
	for (int k = 0; k < n; k++) {
		int pick = (int)(rand_r(seed) % (unsigned)total), j = k;
		for (int i = k; i < n; i++) {
			pick -= weights[order[i]];
			if (pick < 0) {
				j = i;
				break;
			}
		}
		int tmp = order[k];
		order[k] = order[j];
		order[j] = tmp;
		total -= weights[order[k]];
		if (total <= 0)
			total = 1;
	}
}

static void *
thread_main(void *arg)
{
	struct wthread *t = arg;
	struct worker *w = t->w;
	unsigned int seed = (unsigned)getpid() ^ (unsigned)t->idx * 2654435761u;
	int batch = 1;
	struct outbox ob = {.t = t};

	t->r = connect_redis(w);
	while (t->r && !atomic_load(&w->quiet)) {
		/* Here the thread holds no configuration: the ones before this generation may go. */
		atomic_store(&t->cfg_seen, atomic_load(&w->cfg_gen));
		int order[RUNTIME_MAX_QUEUES], n = w->o->nqueues;
		const char *argv[4 + 2 * RUNTIME_MAX_QUEUES];
		char nstr[16], maxstr[16], nkeys[16];
		int argc = 0;

		fetch_order(w, order, &seed);
		snprintf(nkeys, sizeof(nkeys), "%d", 2 * n);
		snprintf(nstr, sizeof(nstr), "%d", n);
		snprintf(maxstr, sizeof(maxstr), "%d", batch);
		argv[argc++] = "EVALSHA";
		argv[argc++] = t->fetch_sha;
		argv[argc++] = nkeys;
		for (int i = 0; i < n; i++)
			argv[argc++] = w->qkeys[order[i]];
		for (int i = 0; i < n; i++)
			argv[argc++] = w->private[order[i]];
		argv[argc++] = nstr;
		argv[argc++] = maxstr;
		redisReply *rep = redisCommandArgv(t->r, argc, argv, NULL);
		if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
			if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0)
				load_script(t->r, lua_fetch, t->fetch_sha);
			else
				log_warnx("fetch: %s", rep ? rep->str : t->r->errstr);
			if (rep)
				freeReplyObject(rep);
			if (!redis_ok(w, &t->r))
				break;
			util_sleep_ms(200);
			continue;
		}
		if (rep->elements == 0) {
			freeReplyObject(rep);
			batch = 1;
			/* Nothing anywhere: block on the first queue (at once awake for it); with several
			 * queues, look again after idle_poll_ms. */
			int q = order[0];
			double timeout = n == 1 ? 1.0 : cfg_now(w)->worker.idle_poll_ms / 1000.0;
			char to[16];
			snprintf(to, sizeof(to), "%.3f", timeout);
			rep = redisCommand(t->r, "BLMOVE %s %s RIGHT LEFT %s", w->qkeys[q], w->private[q], to);
			if (rep && rep->type == REDIS_REPLY_STRING) {
				char err[512];
				process(w, t, &ob, q, rep->str, rep->len, parse(w, rep->str, rep->len, err, sizeof(err)));
				outbox_flush(w, &ob);
			}
			else if (rep == NULL && !redis_ok(w, &t->r))
				break;
			if (rep)
				freeReplyObject(rep);
			continue;
		}
		int64_t start = util_mono_ms();
		size_t njobs = rep->elements / 2, k;
		/* Each job parsed once: the batch hooks see them, then process runs them. */
		struct job **parsed = xcalloc(njobs + 1, sizeof(*parsed));
		for (k = 0; k < njobs; k++) {
			char err[512];
			parsed[k] = parse(w, rep->element[2 * k + 1]->str, rep->element[2 * k + 1]->len, err, sizeof(err));
		}
		batch_start(w, t, parsed, njobs);
		for (k = 0; k < njobs; k++) {
			if (atomic_load(&w->quiet))
				break;
			int q = order[rep->element[2 * k]->integer - 1];
			process(w, t, &ob, q, rep->element[2 * k + 1]->str, rep->element[2 * k + 1]->len, parsed[k]);
			parsed[k] = NULL;
		}
		for (size_t j = k; j < njobs; j++) /* not started: they go back below */
			job_free(parsed[j]);
		free(parsed);
		/* The batch's emails go out together, over one connection. */
		outbox_flush(w, &ob);
		/* Prefetched jobs not started go back to the front, the oldest last so it is next. */
		for (size_t j = njobs; j-- > k;) {
			int q = order[rep->element[2 * j]->integer - 1];
			redisReply *job = rep->element[2 * j + 1];
			move_from_private(w, &t->r, q, job->str, job->len, job->str, QUEUE_DEST_FRONT, NULL, 0);
		}
		freeReplyObject(rep);
		/* Quick jobs (under 100 ms each, an email included): take more per round trip, and their
		 * emails share a connection; slow ones: one at a time, so that other workers can help. */
		int64_t each = (util_mono_ms() - start) / (int64_t)(njobs ? njobs : 1);
		if (njobs == (size_t)batch && each < 100)
			batch = batch * 2 > MAX_BATCH ? MAX_BATCH : batch * 2;
		else if (each > 1000)
			batch = 1;
	}
	outbox_flush(w, &ob);
	free(ob.items);
	atomic_store(&t->cfg_seen, INT_MAX);
	pthread_mutex_lock(&t->mu);
	t->done = true;
	pthread_mutex_unlock(&t->mu);
	return NULL;
}

/* Frees the replaced configurations no thread can hold any more: those of a generation before the
 * earliest any thread has seen at the top of its loop. A thread busy with a long job holds back the
 * ones from its job's start on, until it is done. */
static void
free_retired(struct worker *w)
{
	int seen = INT_MAX;
	size_t kept = 0, freed = 0;

	if (w->nretired == 0)
		return;
	for (int i = 0; i < w->o->concurrency; i++) {
		int s = atomic_load(&w->threads[i].cfg_seen);
		if (s < seen)
			seen = s;
	}
	for (size_t i = 0; i < w->nretired; i++) {
		if (w->retired[i].gen < seen) {
			cfg_free(w->retired[i].cfg);
			freed++;
		} else {
			w->retired[kept++] = w->retired[i];
		}
	}
	w->nretired = kept;
	log_debug("replaced configurations: %zu freed, %zu still held by job threads", freed, kept);
}

static long
rss_kb(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL)
		return 0;
	if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = 0;
	fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static char *
info_json(struct worker *w)
{
	json_t *queues = json_array();

	for (int i = 0; i < w->o->nqueues; i++)
		json_array_append_new(queues, json_string(w->o->queues[i]));
	json_t *info = json_pack("{s:s, s:f, s:i, s:s, s:i, s:o, s:[s], s:s, s:s}", "hostname", w->hostname,
	                         "started_at", w->started_at, "pid", (int)getpid(), "tag", w->o->tag,
	                         "concurrency", w->o->concurrency, "queues", queues, "labels", "outreach",
	                         "identity", w->identity, "version", OUTREACH_VERSION);
	char *s = json_dumps(info, JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(info);
	return s;
}

/* One heartbeat: stats, the running jobs, the process hash; returns a Web UI signal or NULL. */
static char *
heartbeat(struct worker *w, bool quiet)
{
	char day[11], workers_key[340], work_key[340], sigkey[340], beat[32], busy[16], rss[32], rtt[32];
	long procd = atomic_exchange(&w->processed, 0), fails = atomic_exchange(&w->failed, 0);
	double now = util_now();
	char *signal = NULL;

	if (!redis_ok(w, &w->hb)) {
		atomic_fetch_add(&w->processed, procd);
		atomic_fetch_add(&w->failed, fails);
		return NULL;
	}
	queue_stat_day(now, day);
	snprintf(workers_key, sizeof(workers_key), "%s:workers", w->identity);
	snprintf(work_key, sizeof(work_key), "%s:work", w->identity);
	snprintf(sigkey, sizeof(sigkey), "%s-signals", w->identity);

	int64_t t0 = util_mono_ms();
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	redisReply *ping = redisCommand(w->hb, "PING");
	clock_gettime(CLOCK_MONOTONIC, &b);
	(void)t0;
	if (ping == NULL) {
		atomic_fetch_add(&w->processed, procd);
		atomic_fetch_add(&w->failed, fails);
		return NULL;
	}
	freeReplyObject(ping);
	long rtt_us = (b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000;

	int nreq = 0;
	redisAppendCommand(w->hb, "MULTI"), nreq++;
	redisAppendCommand(w->hb, "INCRBY stat:processed %ld", procd), nreq++;
	redisAppendCommand(w->hb, "INCRBY stat:processed:%s %ld", day, procd), nreq++;
	redisAppendCommand(w->hb, "EXPIRE stat:processed:%s 157680000", day), nreq++;
	redisAppendCommand(w->hb, "INCRBY stat:failed %ld", fails), nreq++;
	redisAppendCommand(w->hb, "INCRBY stat:failed:%s %ld", day, fails), nreq++;
	redisAppendCommand(w->hb, "EXPIRE stat:failed:%s 157680000", day), nreq++;
	redisAppendCommand(w->hb, "UNLINK %s %s", workers_key, work_key), nreq++;
	for (int i = 0; i < w->o->concurrency; i++) {
		struct wthread *t = &w->threads[i];
		pthread_mutex_lock(&t->mu);
		if (t->cur_json) {
			json_t *entry = json_pack("{s:s, s:s, s:i}", "queue", w->o->queues[t->cur_queue], "payload",
			                          t->cur_json, "run_at", (int)t->cur_run_at);
			char *s = entry ? json_dumps(entry, JSON_COMPACT) : NULL;
			if (s) {
				redisAppendCommand(w->hb, "HSET %s %s %s", workers_key, t->tid, s), nreq++;
				redisAppendCommand(w->hb, "HSET %s %s %s", work_key, t->tid, s), nreq++;
			}
			free(s);
			json_decref(entry);
		}
		pthread_mutex_unlock(&t->mu);
	}
	redisAppendCommand(w->hb, "EXPIRE %s 60", workers_key), nreq++;
	redisAppendCommand(w->hb, "EXPIRE %s 60", work_key), nreq++;
	char *info = info_json(w);
	snprintf(beat, sizeof(beat), "%.6f", now);
	snprintf(busy, sizeof(busy), "%d", atomic_load(&w->busy));
	snprintf(rss, sizeof(rss), "%ld", rss_kb());
	snprintf(rtt, sizeof(rtt), "%ld", rtt_us);
	redisAppendCommand(w->hb, "SADD processes %s", w->identity), nreq++;
	redisAppendCommand(w->hb, "HSET %s info %s busy %s beat %s rtt_us %s quiet %s rss %s", w->identity, info, busy,
	                   beat, rtt, quiet ? "true" : "false", rss),
	    nreq++;
	redisAppendCommand(w->hb, "EXPIRE %s 60", w->identity), nreq++;
	redisAppendCommand(w->hb, "RPOP %s", sigkey), nreq++;
	redisAppendCommand(w->hb, "EXEC"), nreq++;
	free(info);

	bool ok = true;
	for (int i = 0; i < nreq; i++) {
		redisReply *rep = NULL;
		if (redisGetReply(w->hb, (void **)&rep) != REDIS_OK) {
			ok = false;
			break;
		}
		if (i == nreq - 1 && rep->type == REDIS_REPLY_ARRAY && rep->elements > 0) {
			redisReply *last = rep->element[rep->elements - 1];
			if (last->type == REDIS_REPLY_STRING)
				signal = xstrdup(last->str);
		} else if (i == nreq - 1 && rep->type != REDIS_REPLY_ARRAY) {
			ok = false;
		}
		freeReplyObject(rep);
	}
	if (!ok) {
		log_warnx("heartbeat failed: %s", w->hb->errstr[0] ? w->hb->errstr : "transaction refused");
		atomic_fetch_add(&w->processed, procd);
		atomic_fetch_add(&w->failed, fails);
	}
	return signal;
}

/* Hands every job still in this process' private lists back to the front of its queue. */
static void
hand_back_all(struct worker *w)
{
	if (!redis_ok(w, &w->hb))
		return;
	for (int q = 0; q < w->o->nqueues; q++) {
		for (;;) {
			if (!redis_ok(w, &w->hb))
				return;
			/* Newest first to the front, so the oldest is next in line. */
			redisReply *rep = redisCommand(w->hb, "LINDEX %s 0", w->private[q]);
			if (rep == NULL || rep->type != REDIS_REPLY_STRING) {
				if (rep)
					freeReplyObject(rep);
				break;
			}
			log_notice("handing back an unfinished job to the front of queue %s", w->o->queues[q]);
			bool ok = move_from_private(w, &w->hb, q, rep->str, rep->len, rep->str, QUEUE_DEST_FRONT, NULL, 0);
			freeReplyObject(rep);
			if (!ok) {
				/* Redis refuses the move: what is left waits for the sweep of outreachd. */
				log_warnx("the jobs left in %s wait for the sweep of dead workers' lists", w->private[q]);
				break;
			}
		}
	}
}

static void
deregister(struct worker *w)
{
	if (!redis_ok(w, &w->hb))
		return;
	redisReply *rep;
	/* A list still holding a job Redis refused to hand back stays known, for the sweep. */
	for (int q = 0; q < w->o->nqueues; q++)
		queue_inflight_forget_empty(w->hb, w->private[q]);
	rep = redisCommand(w->hb, "SREM processes %s", w->identity);
	if (rep)
		freeReplyObject(rep);
	rep = redisCommand(w->hb, "UNLINK %s %s:workers %s:work", w->identity, w->identity, w->identity);
	if (rep)
		freeReplyObject(rep);
}

static void
sweep(struct worker *w)
{
	char err[512];
	int recovered, killed;

	if (!redis_ok(w, &w->hb))
		return;
	const struct cfg *c = cfg_now(w);
	if (queue_sweep(w->hb, c->worker.max_recoveries, c->worker.dead_after, w->sweep_refused,
	                &recovered, &killed, err, sizeof(err)) == -1)
		log_warnx("looking for jobs of dead workers: %s", err);
	else {
		if (recovered || killed)
			log_notice("handed back %d job(s) of dead workers, %d sent to dead", recovered, killed);
		log_debug("sweep %lu of dead workers' lists done", ++w->sweeps);
	}
}

static bool
all_done(struct worker *w)
{
	for (int i = 0; i < w->o->concurrency; i++) {
		pthread_mutex_lock(&w->threads[i].mu);
		bool d = w->threads[i].done;
		pthread_mutex_unlock(&w->threads[i].mu);
		if (!d)
			return false;
	}
	return true;
}

int
runtime_run(struct cfg **cfgp, const char *cfg_path, const struct runtime_opts *o)
{
	struct worker w = {.cfg_path = cfg_path, .o = o};
	atomic_init(&w.cfg, *cfgp);
	unsigned char nonce[6];
	char hex[13];
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTSTP);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits the mask; main waits for them */

	if (gethostname(w.hostname, sizeof(w.hostname)) == -1)
		util_strlcpy(w.hostname, "localhost", sizeof(w.hostname));
	util_random(nonce, sizeof(nonce));
	util_hex(nonce, sizeof(nonce), hex);
	snprintf(w.identity, sizeof(w.identity), "%s:%d:%s", w.hostname, (int)getpid(), hex);
	w.started_at = util_now();
	for (int i = 0; i < o->nqueues; i++) {
		w.qkeys[i] = xasprintf("queue:%s", o->queues[i]);
		w.private[i] = queue_inflight_key(o->queues[i], w.identity);
	}

	w.hb = connect_redis(&w);
	if (w.hb == NULL)
		return 0;
	char fetch_sha[41] = ""; /* seeds each thread's copy (empty if the load failed: NOSCRIPT loads it) */
	load_script(w.hb, lua_fetch, fetch_sha);
	load_script(w.hb, queue_lua_move, (char[41]){0});
	w.sweep_refused = queue_refusals_new();
	/* Jobs of workers that died before us go back first; then we announce ourselves, and only
	 * then register our private lists, so a sweeper never mistakes us for dead. */
	w.threads = xcalloc((size_t)o->concurrency, sizeof(*w.threads));
	for (int i = 0; i < o->concurrency; i++) {
		struct wthread *t = &w.threads[i];
		t->w = &w;
		t->idx = i;
		pthread_mutex_init(&t->mu, NULL);
		snprintf(t->tid, sizeof(t->tid), "%x%02x", (unsigned)getpid(), i);
		atomic_init(&t->cfg_seen, 0);
		memcpy(t->fetch_sha, fetch_sha, sizeof(t->fetch_sha));
	}
	sweep(&w);
	free(heartbeat(&w, false));
	for (int q = 0; q < o->nqueues; q++) {
		redisReply *rep = redisCommand(w.hb, "SADD %s %s", QUEUE_INFLIGHT_SET, w.private[q]);
		if (rep)
			freeReplyObject(rep);
	}

	for (int i = 0; i < o->concurrency; i++) {
		struct wthread *t = &w.threads[i];
		if (pthread_create(&t->th, NULL, thread_main, t) != 0)
			fatal("cannot start worker thread %d", i);
	}
	log_notice("outreach-worker %s ready: identity %s, queues %s%s, concurrency %d", OUTREACH_VERSION, w.identity,
	           o->queues[0], o->nqueues > 1 ? " and more" : "", o->concurrency);
	sdn_notify("READY=1\nSTATUS=serving");

	int64_t next_beat = util_mono_ms() + HEARTBEAT_MS, deadline = 0;
	int terms = 0, grace = 0; /* worker.shutdown_timeout when the stop began: a reload then keeps it */
	bool hard = false;
	for (;;) {
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000000};
		siginfo_t si;
		int sig = sigtimedwait(&set, &si, &ts);
		const char *cause = NULL;

		if (sig == SIGTERM || sig == SIGINT)
			cause = sig == SIGTERM ? "SIGTERM" : "SIGINT";
		else if (sig == SIGTSTP) {
			log_notice("SIGTSTP: quiet, no new jobs are taken");
			atomic_store(&w.quiet, 1);
		} else if (sig == SIGHUP) {
			char err[1024];
			struct cfg *running = cfg_owned(&w);
			struct cfg *fresh = cfg_reload(running, cfg_path, w.o->reload, NULL, err, sizeof(err));
			if (fresh == NULL)
				log_errorx("reload failed, keeping the running configuration: %s", err);
			else {
				/* Threads read cfg without locks: the old one stays alive until no thread can
				 * hold it (free_retired, at the next heartbeats). The new pointer is published
				 * before its generation, so a thread that sees the generation reads it. */
				w.retired = xrealloc(w.retired, (w.nretired + 1) * sizeof(*w.retired));
				w.retired[w.nretired++] = (struct retired){running, atomic_load(&w.cfg_gen)};
				atomic_store_explicit(&w.cfg, fresh, memory_order_release);
				atomic_fetch_add(&w.cfg_gen, 1);
				log_set_level((enum log_level)cfg_log_level(fresh));
				log_notice("configuration reloaded");
			}
		}
		if (util_mono_ms() >= next_beat && !deadline) {
			char *s = heartbeat(&w, atomic_load(&w.quiet));
			next_beat = util_mono_ms() + HEARTBEAT_MS;
			if (s && strcmp(s, "TSTP") == 0) {
				log_notice("quiet requested through Redis: no new jobs are taken");
				atomic_store(&w.quiet, 1);
			} else if (s && strcmp(s, "TERM") == 0)
				cause = "a stop request through Redis";
			free(s);
			if (!deadline)
				sweep(&w);
			free_retired(&w);
		}
		if (cause) {
			if (++terms == 1) {
				grace = cfg_now(&w)->worker.shutdown_timeout;
				log_notice("%s: stopping; running jobs have %d s to finish", cause, grace);
				sdn_notify("STOPPING=1\nSTATUS=draining");
				atomic_store(&w.quiet, 1);
				atomic_store(&w.stopping, 1);
				deadline = util_mono_ms() + (int64_t)grace * 1000;
			} else {
				log_notice("second stop signal: handing back running jobs and exiting now");
				hard = true;
			}
		}
		if (deadline && (hard || all_done(&w) || util_mono_ms() >= deadline)) {
			if (!hard && !all_done(&w))
				log_warnx("jobs still running after %d s: handing them back", grace);
			break;
		}
	}

	bool clean = all_done(&w);
	hand_back_all(&w);
	free(heartbeat(&w, true)); /* flushes the last counts */
	deregister(&w);
	if (clean) {
		for (int i = 0; i < o->concurrency; i++) {
			pthread_join(w.threads[i].th, NULL);
			if (w.threads[i].r)
				redisFree(w.threads[i].r);
			db_free(w.threads[i].db);
			mailer_free(w.threads[i].mailer);
			free(w.threads[i].cur_json);
			pthread_mutex_destroy(&w.threads[i].mu);
		}
		free(w.threads);
		for (size_t i = 0; i < w.nretired; i++)
			cfg_free(w.retired[i].cfg);
		free(w.retired);
		*cfgp = cfg_owned(&w); /* the caller frees the running one */
		for (int i = 0; i < o->nqueues; i++) {
			free(w.qkeys[i]);
			free(w.private[i]);
		}
	}
	redisFree(w.hb);
	queue_refusals_free(w.sweep_refused);
	log_notice("outreach-worker stopped");
	if (!clean) {
		/* A job's thread still runs, using this frame's worker, the configuration, the handlers'
		 * templates, fontconfig and cairo: end here, before any of them goes, with no exit handler. */
		fflush(stdout);
		_exit(0);
	}
	return 0;
}
