/* queue: Sidekiq's Redis layout: push, schedule, retry, dead, stats keys, and the atomic moves. */
#include "common/queue.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

const char queue_lua_move[] =
    "local remove\n"
    "if ARGV[1] == 'zset' then\n"
    "  if not redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end\n"
    "  remove = {'ZREM', KEYS[1], ARGV[2]}\n"
    "else\n"
    "  if not redis.call('LPOS', KEYS[1], ARGV[2]) then return 0 end\n"
    "  remove = {'LREM', KEYS[1], '1', ARGV[2]}\n"
    "end\n"
    "local add\n"
    "if ARGV[4] == 'back' then add = {{'SADD', KEYS[3], ARGV[5]}, {'LPUSH', KEYS[2], ARGV[3]}}\n"
    "elseif ARGV[4] == 'front' then add = {{'SADD', KEYS[3], ARGV[5]}, {'RPUSH', KEYS[2], ARGV[3]}}\n"
    "else add = {{'ZADD', KEYS[2], ARGV[5], ARGV[3]}} end\n"
    "local steps = {}\n"
    "if KEYS[1] == KEYS[2] then steps[1] = remove end\n"
    "for _, c in ipairs(add) do steps[#steps + 1] = c end\n"
    "if KEYS[1] ~= KEYS[2] then steps[#steps + 1] = remove end\n"
    "if ARGV[4] == 'zset' and KEYS[2] == 'dead' then\n"
    "  steps[#steps + 1] = {'ZREMRANGEBYSCORE', KEYS[2], '-inf', tostring(tonumber(ARGV[6]) - 15552000)}\n"
    "  steps[#steps + 1] = {'ZREMRANGEBYRANK', KEYS[2], '0', '-10001'}\n"
    "end\n"
    "if redis.acl_check_cmd then\n"
    "  for _, c in ipairs(steps) do\n"
    "    if not redis.acl_check_cmd(unpack(c)) then\n"
    "      return redis.error_reply('NOPERM this user has no permissions to run ' .. c[1] .. ' on ' .. c[2])\n"
    "    end\n"
    "  end\n"
    "end\n"
    "for _, c in ipairs(steps) do redis.call(unpack(c)) end\n"
    "return 1\n";

static pthread_once_t sha_once = PTHREAD_ONCE_INIT;
static char move_sha[41];

static void
compute_sha(void)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	EVP_Digest(queue_lua_move, strlen(queue_lua_move), md, &len, EVP_sha1(), NULL);
	util_hex(md, len, move_sha);
}

const char *
queue_lua_move_sha(void)
{
	pthread_once(&sha_once, compute_sha);
	return move_sha;
}

void
queue_stat_day(double t, char out[11])
{
	time_t secs = (time_t)t;
	struct tm tm;

	gmtime_r(&secs, &tm);
	strftime(out, 11, "%Y-%m-%d", &tm);
}

/* Checks a reply; on error writes "what: message" into err and returns -1. Frees the reply. */
static int
check_reply(redisContext *r, redisReply *rep, const char *what, char *err, size_t errlen)
{
	if (rep == NULL) {
		snprintf(err, errlen, "%s: %s", what, r->errstr[0] ? r->errstr : "connection lost");
		return -1;
	}
	if (rep->type == REDIS_REPLY_ERROR) {
		snprintf(err, errlen, "%s: %s", what, rep->str);
		freeReplyObject(rep);
		return -1;
	}
	freeReplyObject(rep);
	return 0;
}

int
queue_push(redisContext *r, struct job *job, char *err, size_t errlen)
{
	char key[80];
	char *json;
	int rc = 0;

	job_set_time(job, "enqueued_at", util_now());
	json = job_dump(job);
	snprintf(key, sizeof(key), "queue:%s", job->queue);
	redisAppendCommand(r, "MULTI");
	redisAppendCommand(r, "SADD queues %s", job->queue);
	redisAppendCommand(r, "LPUSH %s %s", key, json);
	redisAppendCommand(r, "EXEC");
	for (int i = 0; i < 4; i++) {
		redisReply *rep = NULL;
		if (redisGetReply(r, (void **)&rep) != REDIS_OK)
			rep = NULL;
		if (check_reply(r, rep, "push", err, errlen) == -1) {
			rc = -1;
			if (rep == NULL)
				break;
		}
	}
	free(json);
	return rc;
}

int
queue_schedule(redisContext *r, struct job *job, double at, char *err, size_t errlen)
{
	char score[32];
	char *json;
	redisReply *rep;

	job_set_time(job, "at", at);
	json = job_dump(job);
	snprintf(score, sizeof(score), "%.6f", at);
	rep = redisCommand(r, "ZADD schedule %s %s", score, json);
	free(json);
	return check_reply(r, rep, "schedule", err, errlen);
}

int
queue_move(redisContext *r, const char *src, bool src_is_zset, const char *old, size_t old_len, const char *new_json,
           enum queue_dest dest, const char *dest_key, const char *queue_or_score, bool *moved, char *err,
           size_t errlen)
{
	static const char *const kinds[] = {"back", "front", "zset"};
	char now[32];
	redisReply *rep;

	snprintf(now, sizeof(now), "%.6f", util_now());
	const char *argv[] = {"EVALSHA", queue_lua_move_sha(), "3", src, dest_key, "queues",
	                      src_is_zset ? "zset" : "list", old, new_json, kinds[dest], queue_or_score, now};
	size_t lens[NELEM(argv)];

	for (size_t i = 0; i < NELEM(argv); i++)
		lens[i] = strlen(argv[i]);
	lens[7] = old_len;
	rep = redisCommandArgv(r, (int)NELEM(argv), argv, lens);
	if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
		freeReplyObject(rep);
		argv[0] = "EVAL";
		argv[1] = queue_lua_move;
		lens[0] = 4;
		lens[1] = strlen(queue_lua_move);
		rep = redisCommandArgv(r, (int)NELEM(argv), argv, lens);
	}
	if (rep && rep->type == REDIS_REPLY_INTEGER) {
		*moved = rep->integer == 1;
		freeReplyObject(rep);
		return 0;
	}
	return check_reply(r, rep, "move", err, errlen) == -1 ? -1 : (snprintf(err, errlen, "move: odd reply"), -1);
}

char *
queue_dead_json(const char *old, const char *error_class, const char *error_message, double now)
{
	json_t *obj = json_loads(old, 0, NULL);
	char *out;

	if (obj == NULL || !json_is_object(obj)) {
		/* Keep what came, however broken, inside a job the dead set and its UI can show. */
		json_decref(obj);
		char jid[JOB_JID_LEN + 1];
		job_new_jid(jid);
		obj = json_pack("{s:s, s:[], s:s, s:s, s:s}", "class", "InvalidJob", "args", "jid", jid, "queue",
		                "unknown", "payload", old);
		if (obj == NULL) /* old is not UTF-8: keep it hex-free but readable */
			obj = json_pack("{s:s, s:[], s:s, s:s, s:s}", "class", "InvalidJob", "args", "jid", jid,
			                "queue", "unknown", "payload", "(payload is not valid UTF-8)");
	}
	json_object_set_new(obj, "error_class", json_string(error_class));
	json_object_set_new(obj, "error_message", json_string(error_message));
	if (json_object_get(obj, "failed_at") == NULL)
		json_object_set_new(obj, "failed_at", json_real(now));
	else
		json_object_set_new(obj, "retried_at", json_real(now));
	out = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(obj);
	return out;
}

char *
queue_recovered_json(const char *old, int max_recoveries, double now, bool *to_dead)
{
	json_t *obj = json_loads(old, 0, NULL);
	char msg[160];
	char *out;

	*to_dead = false;
	if (obj == NULL || !json_is_object(obj)) {
		/* Not a job at all: the worker would kill it anyway; keep it with the reason. */
		json_decref(obj);
		*to_dead = true;
		return queue_dead_json(old, "InvalidJob", "not a JSON object (found in a dead worker's list)", now);
	}
	json_int_t n = json_integer_value(json_object_get(obj, QUEUE_RECOVERED_FIELD)) + 1;
	json_object_set_new(obj, QUEUE_RECOVERED_FIELD, json_integer(n));
	if (n > max_recoveries) {
		*to_dead = true;
		snprintf(msg, sizeof(msg),
		         "the worker running this job died %lld times (limit %d): the job may be killing its workers",
		         (long long)n, max_recoveries);
		json_object_set_new(obj, "error_class", json_string("WorkerLost"));
		json_object_set_new(obj, "error_message", json_string(msg));
		json_object_set_new(obj, "failed_at", json_real(now));
	}
	out = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(obj);
	return out;
}

char *
queue_due_json(const char *old, double now, char queue_out[65])
{
	json_t *obj = json_loads(old, 0, NULL);
	json_t *q;
	char *out;

	if (obj == NULL || !json_is_object(obj)) {
		json_decref(obj);
		return NULL;
	}
	q = json_object_get(obj, "queue");
	if (q == NULL || !json_is_string(q) || !job_queue_name_ok(json_string_value(q))) {
		json_decref(obj);
		return NULL;
	}
	util_strlcpy(queue_out, json_string_value(q), 65);
	json_object_del(obj, "at");
	json_object_set_new(obj, "enqueued_at", json_real(now));
	out = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
	json_decref(obj);
	return out;
}

char *
queue_inflight_key(const char *queue, const char *identity)
{
	return xasprintf("%s%s:%s", QUEUE_INFLIGHT_PREFIX, queue, identity);
}

int
queue_inflight_parse(const char *key, char *queue, char *identity)
{
	size_t plen = strlen(QUEUE_INFLIGHT_PREFIX);
	const char *rest, *colon;

	if (strncmp(key, QUEUE_INFLIGHT_PREFIX, plen) != 0)
		return -1;
	rest = key + plen;
	colon = strchr(rest, ':');
	if (colon == NULL || colon == rest || (size_t)(colon - rest) > 64 || strlen(colon + 1) == 0 ||
	    strlen(colon + 1) > 255)
		return -1;
	memcpy(queue, rest, (size_t)(colon - rest));
	queue[colon - rest] = '\0';
	strcpy(identity, colon + 1);
	return 0;
}

/* --- refused moves ---------------------------------------------------------------------------- */

struct queue_refusals {
	uint64_t *prev, *cur; /* hashes of the entries refused in the last pass and in this one, sorted */
	size_t nprev, ncur, capcur;
};

struct queue_refusals *
queue_refusals_new(void)
{
	return xcalloc(1, sizeof(struct queue_refusals));
}

void
queue_refusals_free(struct queue_refusals *q)
{
	if (q == NULL)
		return;
	free(q->prev);
	free(q->cur);
	free(q);
}

/* FNV-1a of src, a NUL and the entry. */
static uint64_t
refusal_hash(const char *src, const char *member, size_t len)
{
	uint64_t h = 14695981039346656037ULL;

	for (const char *p = src;; p++) {
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
		if (*p == '\0')
			break;
	}
	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char)member[i]) * 1099511628211ULL;
	return h;
}

/* Where h is or would go in the sorted a[0..n). */
static size_t
hash_slot(const uint64_t *a, size_t n, uint64_t h)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid] < h)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* "job <class> <jid>" of a job's JSON, or "an entry that is not a job"; only name characters are kept. Like the moves
 * (queue_due_json, queue_recovered_json), it reads the entry up to its first NUL, if any. */
static void
describe_entry(const char *member, size_t len, char *out, size_t outlen)
{
	json_t *obj = json_loadb(member, strnlen(member, len), 0, NULL);
	const char *fields[2] = {NULL, NULL};
	char clean[2][65];

	if (obj && json_is_object(obj)) {
		fields[0] = json_string_value(json_object_get(obj, "class"));
		fields[1] = json_string_value(json_object_get(obj, "jid"));
	}
	if (fields[0] == NULL || fields[1] == NULL) {
		snprintf(out, outlen, "an entry that is not a job");
		json_decref(obj);
		return;
	}
	for (int f = 0; f < 2; f++) {
		size_t n = 0;
		for (const char *c = fields[f]; *c && n < sizeof(clean[f]) - 1; c++)
			clean[f][n++] = strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:.-", *c) ? *c : '?';
		clean[f][n] = '\0';
	}
	snprintf(out, outlen, "job %s %s", clean[0], clean[1]);
	json_decref(obj);
}

/* Notes the refusal h in this pass of q: false when it was noted already in this pass or in the previous one (it was
 * logged then), true when it is to be logged. */
static bool
refusal_new(struct queue_refusals *q, uint64_t h)
{
	size_t at;

	if (q == NULL)
		return true;
	at = hash_slot(q->cur, q->ncur, h);
	if (at < q->ncur && q->cur[at] == h)
		return false; /* already noted in this pass */
	if (q->ncur == q->capcur) {
		q->capcur = q->capcur ? 2 * q->capcur : 16;
		q->cur = xrealloc(q->cur, q->capcur * sizeof(*q->cur));
	}
	memmove(q->cur + at + 1, q->cur + at, (q->ncur - at) * sizeof(*q->cur));
	q->cur[at] = h;
	q->ncur++;
	at = hash_slot(q->prev, q->nprev, h);
	return !(at < q->nprev && q->prev[at] == h); /* else logged when first refused */
}

void
queue_refusals_note(struct queue_refusals *q, const char *src, const char *member, size_t len, const char *dest,
                    const char *reason)
{
	char what[160];

	if (!refusal_new(q, refusal_hash(src, member, len)))
		return;
	describe_entry(member, len, what, sizeof(what));
	log_warnx("%s: %s stays there: Redis refused to move it to %s: %s (logged once; it moves when that is mended)",
	          src, what, dest, reason);
}

void
queue_refusals_note_list(struct queue_refusals *q, const char *list, const char *reason)
{
	if (refusal_new(q, refusal_hash(list, "", 0)))
		log_warnx("%s: its jobs stay there: Redis refused to read %s (logged once; the other lists are swept; this "
		          "one is when that is mended)",
		          list, reason);
}

size_t
queue_refusals_pass(struct queue_refusals *q)
{
	size_t n;

	if (q == NULL)
		return 0;
	free(q->prev);
	q->prev = q->cur;
	n = q->nprev = q->ncur;
	q->cur = NULL;
	q->ncur = q->capcur = 0;
	return n;
}

bool
queue_refused(const redisContext *r)
{
	return r->err == 0;
}

void
queue_inflight_forget_empty(redisContext *r, const char *list)
{
	redisReply *len = redisCommand(r, "LLEN %s", list);

	if (len && len->type == REDIS_REPLY_INTEGER && len->integer == 0)
		freeReplyObject(redisCommand(r, "SREM %s %s", QUEUE_INFLIGHT_SET, list));
	if (len)
		freeReplyObject(len);
}

bool
queue_identity_gone(const char *identity, const char *hostname)
{
	const char *c2 = strrchr(identity, ':');
	char path[64], stat[256];

	if (c2 == NULL || hostname == NULL || *hostname == '\0')
		return false;
	const char *c1 = c2 - 1;
	while (c1 > identity && *c1 != ':')
		c1--;
	size_t hl = strlen(hostname);
	if (c1 <= identity || (size_t)(c1 - identity) != hl || strncmp(identity, hostname, hl) != 0)
		return false;
	long pid = strtol(c1 + 1, NULL, 10);
	if (pid <= 0)
		return false;
	if (kill((pid_t)pid, 0) == -1)
		return errno == ESRCH;
	/* A killed process not yet reaped is a zombie: as dead as it gets. */
	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	bool zombie = fgets(stat, sizeof(stat), f) && strstr(stat, ") Z ") != NULL;
	fclose(f);
	return zombie;
}

/* Decides whether the process behind a heartbeat key is dead. */
static int
process_dead(redisContext *r, const char *identity, double dead_after, bool *dead, char *err, size_t errlen)
{
	redisReply *rep = redisCommand(r, "HGET %s beat", identity);
	char host[256];

	if (rep == NULL || rep->type == REDIS_REPLY_ERROR)
		return check_reply(r, rep, "its heartbeat", err, errlen);
	if (rep->type != REDIS_REPLY_STRING) {
		*dead = true; /* the heartbeat expired */
		freeReplyObject(rep);
		return 0;
	}
	double beat = strtod(rep->str, NULL);
	freeReplyObject(rep);
	*dead = util_now() - beat > dead_after;
	if (!*dead && gethostname(host, sizeof(host)) == 0)
		*dead = queue_identity_gone(identity, host);
	return 0;
}

int
queue_sweep(redisContext *r, int max_recoveries, double dead_after, struct queue_refusals *refused,
            int *recovered, int *killed, char *err, size_t errlen)
{
	redisReply *lists = redisCommand(r, "SMEMBERS %s", QUEUE_INFLIGHT_SET);
	int rc = 0;

	*recovered = *killed = 0;
	if (lists == NULL || lists->type != REDIS_REPLY_ARRAY)
		return check_reply(r, lists, "sweep", err, errlen) == -1 ? -1 : (snprintf(err, errlen, "odd reply"), -1);
	for (size_t i = 0; i < lists->elements && rc == 0; i++) {
		const char *list = lists->element[i]->str;
		char queue[65], identity[256], key[80], score[32];
		bool dead = false;

		if (queue_inflight_parse(list, queue, identity) == -1) {
			freeReplyObject(redisCommand(r, "SREM %s %s", QUEUE_INFLIGHT_SET, list));
			continue;
		}
		if ((rc = process_dead(r, identity, dead_after, &dead, err, errlen)) == -1 || !dead) {
			if (rc == -1 && queue_refused(r)) {
				/* The heartbeat key holds another type, or an ACL denies it: skip this list only. */
				queue_refusals_note_list(refused, list, err);
				rc = 0;
			}
			continue;
		}
		redisReply *jobs = redisCommand(r, "LRANGE %s 0 -1", list);
		if (jobs == NULL || jobs->type != REDIS_REPLY_ARRAY) {
			rc = check_reply(r, jobs, "the list", err, errlen) == -1 ? -1 : 0;
			if (rc == -1 && queue_refused(r)) {
				queue_refusals_note_list(refused, list, err);
				rc = 0;
			}
			continue;
		}
		snprintf(key, sizeof(key), "queue:%s", queue);
		/* Newest first, each pushed to the front: the oldest ends up next in line, as before. */
		for (size_t j = 0; j < jobs->elements && rc == 0; j++) {
			const char *old = jobs->element[j]->str;
			bool to_dead, ok;
			char *fresh = queue_recovered_json(old, max_recoveries, util_now(), &to_dead);
			if (to_dead) {
				snprintf(score, sizeof(score), "%.6f", util_now());
				rc = queue_move(r, list, false, old, jobs->element[j]->len, fresh, QUEUE_DEST_ZSET, "dead", score, &ok, err,
				                errlen);
				if (rc == 0 && ok) {
					(*killed)++;
					log_warnx("job from dead worker %s sent to dead: it was recovered more than %d times",
					          identity, max_recoveries);
				}
			} else {
				rc = queue_move(r, list, false, old, jobs->element[j]->len, fresh, QUEUE_DEST_FRONT, key, queue, &ok, err, errlen);
				if (rc == 0 && ok)
					(*recovered)++;
			}
			free(fresh);
			if (rc == -1 && queue_refused(r)) {
				/* It stays in the list, which stays known: the next sweep tries it again. */
				queue_refusals_note(refused, list, old, jobs->element[j]->len, to_dead ? "dead" : key, err);
				rc = 0;
			}
		}
		freeReplyObject(jobs);
		if (rc == 0)
			queue_inflight_forget_empty(r, list);
	}
	freeReplyObject(lists);
	if (rc == 0)
		queue_refusals_pass(refused);
	return rc;
}
