/* jobs: outreachctl's job commands: enqueue, stats, retry-dead, discard-dead, ping. */
#include "tools/jobs.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/job.h"
#include "common/jobclass.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/queue.h"
#include "common/rds.h"

struct db *
ctl_db_open(const struct cfg *c, bool check_schema)
{
	char err[1024];
	struct db *db = db_connect_retry(c, "outreachctl", 10000, NULL, err, sizeof(err));

	if (db == NULL) {
		log_errorx("cannot connect to the database: %s", err);
		return NULL;
	}
	if (check_schema && mig_check(db, err, sizeof(err)) == -1) {
		log_errorx("%s", err);
		db_free(db);
		return NULL;
	}
	return db;
}

PGresult *
ctl_query(struct db *db, const char *what, const char *sql, int n, const char *const *params)
{
	PGresult *res = db_query(db, sql, n, params);

	if (res == NULL)
		log_errorx("%s: %s", what, db_error(db));
	return res;
}

void
ctl_printf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		fatalx("out of memory");
	va_end(ap);
	/* The whole text: the formats' own holds no control character but line feeds, which are kept. */
	char *shown = util_visible(s);
	fputs(shown, stdout);
	free(shown);
	free(s);
}

char *
ctl_cell_text(const char *s)
{
	char *shown = util_visible_line(s);

	for (char *p = shown; *p; p++)
		if (*p == '\t')
			*p = ' ';
	return shown;
}

void
ctl_cell_pad(FILE *out, const char *shown, int width)
{
	size_t w = (size_t)abs(width), len = util_text_width(shown);
	int pad = w > len ? (int)(w - len) : 0;

	fprintf(out, "%*s%s%*s", width > 0 ? pad : 0, "", shown, width < 0 ? pad : 0, "");
}

void
ctl_row(const char *indent, size_t n, const int *width, const char *const *cell)
{
	fputs(indent, stdout);
	for (size_t i = 0; i < n; i++) {
		char *shown = ctl_cell_text(cell[i] ? cell[i] : "");

		if (i > 0)
			putchar(' ');
		ctl_cell_pad(stdout, shown, width[i]);
		free(shown);
	}
	putchar('\n');
}

redisContext *
ctl_redis_open(const struct cfg *c)
{
	char err[512];
	redisContext *r = rds_connect(&c->redis_addr, c->redis.password, c->redis.timeout, err, sizeof(err));

	if (r == NULL)
		log_errorx("cannot connect to Redis: %s", err);
	return r;
}

/* The reply of a command, or NULL (the reply freed) after logging "WHAT: the error". */
static redisReply *
checked(redisContext *r, redisReply *rep, const char *what)
{
	if (rep == NULL) {
		log_errorx("%s: %s", what, r->errstr);
		return NULL;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		log_errorx("%s: %s", what, rep->str);
		freeReplyObject(rep);
		return NULL;
	}
	return rep;
}

int
ctl_parse_time(const char *s, double *out)
{
	static const char *const formats[] = {"%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
	                                      "%Y-%m-%dT%H:%MZ",    "%Y-%m-%dT%H:%M",    "%Y-%m-%d %H:%M",
	                                      "%Y-%m-%d"};
	char *end;
	double v = strtod(s, &end);

	if (end != s && *end == '\0' && v > 0) {
		*out = v;
		return 0;
	}
	for (size_t i = 0; i < NELEM(formats); i++) {
		struct tm tm = {0};
		const char *rest = strptime(s, formats[i], &tm);
		if (rest && *rest == '\0') {
			*out = (double)timegm(&tm);
			return 0;
		}
	}
	return -1;
}

int
ctl_enqueue(const struct cfg *c, int argc, char **argv)
{
	const char *queue = NULL, *args_text = "[]";
	double at = 0;
	char err[512];

	if (argc < 2)
		fatalx("usage: outreachctl enqueue CLASS [--queue Q] [--args JSON] [--at TIME | --in SECONDS]");
	const char *class = argv[1];
	for (int i = 2; i < argc; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (val == NULL)
			fatalx("enqueue: %s needs a value", opt);
		i++;
		if (strcmp(opt, "--queue") == 0)
			queue = val;
		else if (strcmp(opt, "--args") == 0)
			args_text = val;
		else if (strcmp(opt, "--at") == 0) {
			if (ctl_parse_time(val, &at) == -1)
				fatalx("enqueue: --at %s is neither epoch seconds nor a UTC time like 2026-12-01T08:00:00Z",
				       val);
		} else if (strcmp(opt, "--in") == 0) {
			char *end;
			double secs = strtod(val, &end);
			if (end == val || *end != '\0' || secs < 0)
				fatalx("enqueue: --in %s is not a number of seconds", val);
			at = util_now() + secs;
		} else
			fatalx("enqueue: unknown option %s", opt);
	}

	const struct jobclass *jc = jobclass_find(class);
	if (jc == NULL) {
		char names[512];
		jobclass_names(names, sizeof(names));
		fatalx("enqueue: unknown job class %s (known: %s)", class, names);
	}
	if (queue && !job_queue_name_ok(queue))
		fatalx("enqueue: '%s' is not a queue name", queue);
	json_error_t jerr;
	json_t *args = json_loads(args_text, JSON_DECODE_ANY, &jerr);
	if (args == NULL)
		fatalx("enqueue: --args is not JSON: %s", jerr.text);
	struct job *job = NULL;
	redisContext *r = NULL;
	int rc = 1;
	if (!json_is_array(args)) {
		log_errorx("enqueue: --args must be a JSON array, e.g. '[\"key\", 100]'");
		goto out;
	}
	if (jc->validate(args, err, sizeof(err)) == -1) {
		log_errorx("enqueue: %s", err);
		goto out;
	}
	job = job_new(class, queue ? queue : jc->queue, args);
	args = NULL; /* the job's now */
	if ((r = ctl_redis_open(c)) == NULL)
		goto out;
	if ((at > util_now() ? queue_schedule(r, job, at, err, sizeof(err)) : queue_push(r, job, err, sizeof(err))) ==
	    -1) {
		log_errorx("enqueue: %s", err);
		goto out;
	}
	printf("%s\n", job->jid);
	rc = 0;
out:
	json_decref(args);
	job_free(job);
	redisFree(r);
	return rc;
}

/* The reply of stats' command CMD KEY [ARG], or NULL after logging "stats: CMD KEY [ARG]: the error".
 * KEY is keylen bytes, as Redis gave a name (a NUL byte may be one of them). */
static redisReply *
stats_reply(redisContext *r, const char *cmd, const char *key, size_t keylen, const char *arg)
{
	char what[160];

	snprintf(what, sizeof(what), "stats: %s %s%s%s", cmd, key, arg ? " " : "", arg ? arg : "");
	if (arg == NULL)
		return checked(r, redisCommand(r, "%s %b", cmd, key, keylen), what);
	return checked(r, redisCommand(r, "%s %b %s", cmd, key, keylen, arg), what);
}

/* The integer reply of stats' command CMD KEY (keylen bytes) into *v; -1 after logging. */
static int
int_reply(redisContext *r, const char *cmd, const char *key, size_t keylen, long long *v)
{
	redisReply *rep = stats_reply(r, cmd, key, keylen, NULL);

	if (rep == NULL)
		return -1;
	*v = 0;
	if (rep->type == REDIS_REPLY_INTEGER)
		*v = rep->integer;
	else if (rep->type == REDIS_REPLY_STRING)
		*v = strtoll(rep->str, NULL, 10);
	freeReplyObject(rep);
	return 0;
}

/* A queue's name (len bytes) as stats lists it: as it is when it is UTF-8 text without a NUL byte
 * (every queue of the job contract), else as the text table shows it, each byte that is not UTF-8,
 * a NUL included, written \xHH: a JSON string holds no such byte, and the table would cut the name
 * at a NUL. The queue is listed all the same. */
static json_t *
queue_name(const char *q, size_t len)
{
	json_t *name = memchr(q, '\0', len) ? NULL : json_stringn(q, len);
	if (name != NULL)
		return name;
	char *shown = NULL;
	size_t shown_len = 0;
	FILE *f = open_memstream(&shown, &shown_len);
	if (f == NULL)
		fatal("open_memstream");
	for (const char *p = q, *end = q + len; p <= end; p += strlen(p) + 1) {
		char *piece = util_visible(p);
		fprintf(f, "%s%s", p > q ? "\\x00" : "", piece);
		free(piece);
	}
	fclose(f);
	name = json_string(shown);
	free(shown);
	return name;
}

int
ctl_stats(const struct cfg *c, int argc, char **argv)
{
	bool as_json = argc > 1 && strcmp(argv[1], "--json") == 0;
	redisContext *r = ctl_redis_open(c);
	double now = util_now();
	char day[11], pkey[64], fkey[64];
	json_t *out = json_object(), *queues = json_array();
	redisReply *qs = NULL, *ps = NULL;
	int rc = 1;

	json_object_set_new(out, "queues", queues);
	if (r == NULL)
		goto out;
	queue_stat_day(now, day);
	if ((qs = stats_reply(r, "SMEMBERS", "queues", strlen("queues"), NULL)) == NULL)
		goto out;
	for (size_t i = 0; i < qs->elements; i++) {
		const char *q = qs->element[i]->str;
		static const char prefix[] = "queue:";
		size_t qlen = qs->element[i]->len, keylen = sizeof(prefix) - 1 + qlen;
		char *key = xmalloc(keylen + 1); /* terminated too, for the error message */
		long long size;
		memcpy(key, prefix, sizeof(prefix) - 1);
		memcpy(key + sizeof(prefix) - 1, q, qlen + 1);
		int failed = int_reply(r, "LLEN", key, keylen, &size);
		redisReply *last = failed ? NULL : stats_reply(r, "LINDEX", key, keylen, "-1");
		free(key);
		if (last == NULL)
			goto out;
		double latency = 0;
		if (last->type == REDIS_REPLY_STRING) {
			json_t *j = json_loads(last->str, 0, NULL);
			json_t *ea = j ? json_object_get(j, "enqueued_at") : NULL;
			if (ea && json_is_number(ea))
				latency = now - json_number_value(ea);
			json_decref(j);
		}
		freeReplyObject(last);
		json_array_append_new(queues, json_pack("{s:o, s:I, s:f}", "name", queue_name(q, qlen), "size",
		                                        (json_int_t)size, "latency", latency < 0 ? 0 : latency));
	}

	long long busy = 0, nproc = 0;
	if ((ps = stats_reply(r, "SMEMBERS", "processes", strlen("processes"), NULL)) == NULL)
		goto out;
	for (size_t i = 0; i < ps->elements; i++) {
		redisReply *b = stats_reply(r, "HGET", ps->element[i]->str, ps->element[i]->len, "busy");
		if (b == NULL)
			goto out;
		if (b->type == REDIS_REPLY_STRING) {
			nproc++;
			busy += strtoll(b->str, NULL, 10);
		}
		freeReplyObject(b);
	}

	snprintf(pkey, sizeof(pkey), "stat:processed:%s", day);
	snprintf(fkey, sizeof(fkey), "stat:failed:%s", day);
	const char *const counters[][3] = {
	    {"processed", "GET", "stat:processed"}, {"failed", "GET", "stat:failed"},
	    {"processed_today", "GET", pkey},       {"failed_today", "GET", fkey},
	    {"retry", "ZCARD", "retry"},            {"scheduled", "ZCARD", "schedule"},
	    {"dead", "ZCARD", "dead"},
	};
	for (size_t i = 0; i < NELEM(counters); i++) {
		long long v;
		if (int_reply(r, counters[i][1], counters[i][2], strlen(counters[i][2]), &v) == -1)
			goto out;
		json_object_set_new(out, counters[i][0], json_integer(v));
	}
	json_object_set_new(out, "processes", json_integer(nproc));
	json_object_set_new(out, "busy", json_integer(busy));

	if (as_json) {
		char *s = json_dumps(out, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
		printf("%s\n", s);
		free(s);
	} else {
		size_t i;
		json_t *q;
		static const int width[] = {-24, 10, 12};
		ctl_row("", NELEM(width), width, (const char *const[]){"queue", "size", "latency (s)"});
		json_array_foreach(queues, i, q)
		{
			char size[24], latency[32];
			snprintf(size, sizeof(size), "%lld", (long long)json_integer_value(json_object_get(q, "size")));
			snprintf(latency, sizeof(latency), "%.3f", json_real_value(json_object_get(q, "latency")));
			ctl_row("", NELEM(width), width,
			        (const char *const[]){json_string_value(json_object_get(q, "name")), size, latency});
		}
		static const char *const fields[] = {"processed", "failed", "processed_today", "failed_today", "retry",
		                                     "scheduled", "dead",   "processes",       "busy"};
		printf("\n");
		for (i = 0; i < NELEM(fields); i++)
			printf("%-16s %lld\n", fields[i], (long long)json_integer_value(json_object_get(out, fields[i])));
	}
	rc = 0;
out:
	if (qs)
		freeReplyObject(qs);
	if (ps)
		freeReplyObject(ps);
	json_decref(out);
	redisFree(r);
	return rc;
}

/* Requeues (retry) or discards the dead jobs whose jid is jid (or all when jid is NULL); returns
 * how many, -1 after logging which job failed and how, and (for --all, or when some were) how many
 * were done before the failure. Each job moves in one step: it is in dead or on its queue, never
 * in neither or both, whatever Redis refuses or wherever the connection breaks. */
static int
each_dead(redisContext *r, const char *jid, bool retry)
{
	const char *name = retry ? "retry-dead" : "discard-dead";
	char err[512], what[96];
	snprintf(what, sizeof(what), "%s: ZRANGE dead", name);
	redisReply *all = checked(r, redisCommand(r, "ZRANGE dead 0 -1"), what);
	int n = 0;
	bool failed = false;

	if (all == NULL)
		return -1;

	for (size_t i = 0; i < all->elements; i++) {
		const char *old = all->element[i]->str;
		size_t old_len = all->element[i]->len;
		json_t *obj = json_loads(old, 0, NULL);
		const char *id = obj ? json_string_value(json_object_get(obj, "jid")) : NULL;
		const char *class = obj ? json_string_value(json_object_get(obj, "class")) : NULL;
		bool ok;

		if (jid && (id == NULL || strcmp(id, jid) != 0)) {
			json_decref(obj);
			continue;
		}
		/* The jid as the messages show it: any client may have written the job. */
		char *shown = util_visible(id ? id : "?");
		if (!retry) {
			snprintf(what, sizeof(what), "discard-dead: job %s: ZREM dead", shown);
			redisReply *rep = checked(r, redisCommand(r, "ZREM dead %b", old, old_len), what);
			if (rep == NULL) {
				failed = true;
			} else {
				n += rep->integer == 1;
				freeReplyObject(rep);
			}
		} else if (class == NULL || strcmp(class, "InvalidJob") == 0) {
			fprintf(stderr, "dead job %s is not a runnable job (%s); discard it instead\n", shown,
			        class ? "its payload was invalid" : "no class");
		} else {
			json_t *count = json_object_get(obj, "retry_count");
			if (count && json_is_integer(count) && json_integer_value(count) > 0)
				json_object_set_new(obj, "retry_count", json_integer(json_integer_value(count) - 1));
			json_object_del(obj, QUEUE_RECOVERED_FIELD);
			char *text = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17)), queue[65], key[80];
			char *fresh = queue_due_json(text, util_now(), queue);
			if (fresh == NULL) {
				fprintf(stderr, "dead job %s has no valid queue; discard it instead\n", shown);
			} else {
				snprintf(key, sizeof(key), "queue:%s", queue);
				if (queue_move(r, "dead", true, old, old_len, fresh, QUEUE_DEST_BACK, key, queue, &ok, err,
				               sizeof(err)) == -1) {
					log_errorx("retry-dead: job %s: %s", shown, err);
					failed = true;
				} else {
					n += ok;
				}
			}
			free(text);
			free(fresh);
		}
		free(shown);
		json_decref(obj);
		if (failed)
			break;
	}
	freeReplyObject(all);
	if (failed) {
		if (jid == NULL || n > 0)
			log_errorx("%s: %d job%s %s before the failure", name, n, n == 1 ? " was" : "s were",
			           retry ? "requeued" : "discarded");
		return -1;
	}
	return n;
}

static int
dead_command(const struct cfg *c, int argc, char **argv, bool retry)
{
	const char *name = retry ? "retry-dead" : "discard-dead";

	if (argc != 2)
		fatalx("usage: outreachctl %s JID|--all", name);
	const char *jid = strcmp(argv[1], "--all") == 0 ? NULL : argv[1];
	redisContext *r = ctl_redis_open(c);
	if (r == NULL)
		return 1;
	int n = each_dead(r, jid, retry);
	redisFree(r);
	if (n == -1)
		return 1;
	printf("%s %d job%s\n", retry ? "requeued" : "discarded", n, n == 1 ? "" : "s");
	if (jid && n == 0) {
		fprintf(stderr, "%s: no dead job with jid %s\n", name, jid);
		return 1;
	}
	return 0;
}

int
ctl_retry_dead(const struct cfg *c, int argc, char **argv)
{
	return dead_command(c, argc, argv, true);
}

int
ctl_discard_dead(const struct cfg *c, int argc, char **argv)
{
	return dead_command(c, argc, argv, false);
}

int
ctl_ping(const struct cfg *c, int argc, char **argv)
{
	double timeout = 10;
	const char *queue = "default";
	char err[512], key[96];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
			timeout = strtod(argv[++i], NULL);
		else if (strcmp(argv[i], "--queue") == 0 && i + 1 < argc)
			queue = argv[++i];
		else
			fatalx("usage: outreachctl ping [--timeout SECONDS] [--queue Q]");
	}
	if (!job_queue_name_ok(queue))
		fatalx("ping: '%s' is not a queue name", queue);
	redisContext *r = ctl_redis_open(c);
	if (r == NULL)
		return 1;
	char jid[JOB_JID_LEN + 1];
	job_new_jid(jid);
	snprintf(key, sizeof(key), "outreach:ping:%s", jid);
	struct job *job = job_new("PingJob", queue, json_pack("[s]", key));
	int64_t start = util_mono_ms();
	int rc = 1;
	if (queue_push(r, job, err, sizeof(err)) == -1) {
		log_errorx("ping: %s", err);
		goto out;
	}
	for (;;) {
		redisReply *rep = checked(r, redisCommand(r, "SISMEMBER %s %s", key, job->jid), "ping");
		if (rep == NULL)
			goto out;
		long long found = rep->integer;
		freeReplyObject(rep);
		int64_t took = util_mono_ms() - start;
		if (found) {
			printf("pong: a worker on queue %s ran PingJob %s in %lld ms\n", queue, job->jid, (long long)took);
			freeReplyObject(redisCommand(r, "DEL %s", key));
			break;
		}
		if (took > (int64_t)(timeout * 1000)) {
			fprintf(stderr, "ping: no worker ran PingJob %s on queue %s within %.0f s\n", job->jid, queue,
			        timeout);
			goto out;
		}
		util_sleep_ms(20);
	}
	rc = 0;
out:
	job_free(job);
	redisFree(r);
	return rc;
}
