/* queue: Sidekiq's Redis layout: push, schedule, retry, dead, stats keys, and the atomic moves. */
#ifndef OUTREACH_QUEUE_H
#define OUTREACH_QUEUE_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/job.h"
#include "common/util.h"

#define QUEUE_DEAD_MAX_JOBS 10000
#define QUEUE_DEAD_TIMEOUT (180.0 * 24 * 3600)
#define QUEUE_INFLIGHT_SET "outreach:inflight"
#define QUEUE_INFLIGHT_PREFIX "outreach:inflight:"
#define QUEUE_RECOVERED_FIELD "outreach_recovered"
/* outreachd's scan marks each alert it pushes under this prefix and the job's jid for two days, so
 * that the same alert is pushed once however many scans see it due. */
#define QUEUE_PUSHED_PREFIX "outreach:pushed:"

/* Where a moved job lands. */
enum queue_dest {
	QUEUE_DEST_BACK,  /* LPUSH queue:Q: behind every waiting job, as a push does */
	QUEUE_DEST_FRONT, /* RPUSH queue:Q: the next job taken, for jobs handed back */
	QUEUE_DEST_ZSET,  /* ZADD retry/schedule/dead with a score */
};

/* The Lua source of the atomic move: only if old is in the source list or sorted set, add new at
 * the destination, then remove old (LREM, ZREM); dead is trimmed to 10,000 jobs and 180 days. The
 * rights of every command are checked first (ACL) and the destination, where a key of the wrong
 * type refuses a write, is written before the source is touched: a refused move leaves old where
 * it was, never in neither place nor in both.
 * KEYS: source, destination, "queues". ARGV: source kind ("list"|"zset"), old, new, dest kind
 * ("back"|"front"|"zset"), queue name or score, now. Returns 1 when moved, 0 when old was gone. */
extern const char queue_lua_move[];
/* SHA1 of queue_lua_move, for EVALSHA (hex, computed at first use). */
const char *queue_lua_move_sha(void);

/* Pushes job onto queue:<job->queue> (SADD queues + LPUSH), setting enqueued_at. 0 or -1 with err. */
int queue_push(redisContext *r, struct job *job, char *err, size_t errlen) MUSTCHECK;
/* Adds job to the schedule set to be pushed at epoch time at. */
int queue_schedule(redisContext *r, struct job *job, double at, char *err, size_t errlen) MUSTCHECK;

/* Atomically moves the text old (old_len bytes, binary-safe) out of src (a list or sorted set) and new_json into the
 * destination. dest_key is "queue:Q" for BACK/FRONT (queue names Q) or "retry"/"schedule"/"dead"
 * for ZSET (score). *moved tells whether old was still there. 0, or -1 with err (Redis failure). */
int queue_move(redisContext *r, const char *src, bool src_is_zset, const char *old, size_t old_len, const char *new_json,
               enum queue_dest dest, const char *dest_key, const char *queue_or_score, bool *moved, char *err,
               size_t errlen) MUSTCHECK;

/* The JSON text that a job in old should carry into the dead set: error_class and error_message
 * set, failed_at kept or set to now. old may be anything, even invalid JSON: then it is wrapped as
 * {"class":"InvalidJob","args":[],"payload":old,...} so that it is kept, never lost. Caller frees. */
char *queue_dead_json(const char *old, const char *error_class, const char *error_message, double now);

/* For a job found in the private list of a dead process: the JSON to hand back (recovery count
 * incremented) or, past max_recoveries, the JSON for the dead set (*to_dead set). Caller frees. */
char *queue_recovered_json(const char *old, int max_recoveries, double now, bool *to_dead);

/* For a job coming due from schedule or retry: the JSON to push (enqueued_at now, "at" removed)
 * and its queue name in queue_out (size 65). NULL when old is not a valid job (send it to dead). */
char *queue_due_json(const char *old, double now, char queue_out[65]);

/* The private list of identity for queue q: outreach:inflight:<q>:<identity>. Caller frees. */
char *queue_inflight_key(const char *queue, const char *identity);
/* Splits a private list key into queue (size 65) and identity (size 256); -1 when malformed. */
int queue_inflight_parse(const char *key, char *queue, char *identity) MUSTCHECK;

/* What a poller or a sweep remembers of the moves Redis refused (a destination key of the wrong
 * type, an ACL that denies a write): the job stays where it is and is tried again at each pass, but
 * it is logged once, when first refused, not at every pass. A pass is one round over the entries. */
struct queue_refusals;
struct queue_refusals *queue_refusals_new(void);
void queue_refusals_free(struct queue_refusals *q);
/* Notes that Redis refused to move member (len bytes) out of src to dest with reason, and logs it
 * (with the job's class and jid) unless it was refused in the previous pass or already in this one.
 * q may be NULL: then every refusal is logged. */
void queue_refusals_note(struct queue_refusals *q, const char *src, const char *member, size_t len, const char *dest,
                         const char *reason);
/* Notes that Redis refused to read the private list list or its process's heartbeat (a key of
 * another type, an ACL denial) with reason, and logs it unless it was refused in the previous pass
 * or already in this one: the sweep skips that list and goes on with the others. */
void queue_refusals_note_list(struct queue_refusals *q, const char *list, const char *reason);
/* Ends a pass: an entry not refused again in the next one is forgotten (logged anew if refused
 * later). Returns how many entries were refused in the pass that ended. */
size_t queue_refusals_pass(struct queue_refusals *q);

/* True when a failed queue_move (or any failed command on r) was refused by Redis (an error reply)
 * rather than lost with the connection: the caller may go on with other entries. */
bool queue_refused(const redisContext *r);

/* Hands the jobs in the private lists of dead processes back to the front of their queues (or to
 * dead past max_recoveries). A process is dead when its heartbeat key is gone, its beat is older
 * than dead_after seconds, or it ran on this host and its pid is gone. Counts into *recovered and
 * *killed. A job Redis refuses to move stays in its list (which stays known to the sweep), is noted
 * in refused (one pass per call; NULL logs each) and the others still move. 0, or -1 with err when
 * the connection failed. */
int queue_sweep(redisContext *r, int max_recoveries, double dead_after, struct queue_refusals *refused,
                int *recovered, int *killed, char *err, size_t errlen) MUSTCHECK;

/* Forgets the in-flight list (QUEUE_INFLIGHT_SET) when it holds no job: a list still holding one
 * stays known to the sweep. */
void queue_inflight_forget_empty(redisContext *r, const char *list);

/* True when identity (host:pid:nonce) names a process of hostname that is gone (or a zombie). */
bool queue_identity_gone(const char *identity, const char *hostname);

/* "YYYY-MM-DD" of epoch t in UTC (size 11), for the daily stat keys. */
void queue_stat_day(double t, char out[11]);

#endif
