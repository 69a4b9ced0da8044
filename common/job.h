/* job: Sidekiq-compatible job payloads: parse, validate, build and serialize the JSON. */
#ifndef OUTREACH_JOB_H
#define OUTREACH_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

#define JOB_JID_LEN 24
#define JOB_DEFAULT_RETRIES 25

/* A job. obj holds the whole JSON object, unknown fields included; the other members are borrowed
 * views into it, valid while obj is unchanged. */
struct job {
	json_t *obj;
	const char *class;
	const char *jid;
	const char *queue;
	json_t *args;
	int max_retries; /* from "retry": true -> JOB_DEFAULT_RETRIES, false -> 0, N -> N */
	bool retry;      /* false when "retry": false */
	int retry_count; /* -1 before the first failure */
};

/* Parses and checks a payload as it came off a queue: valid JSON object under max_size bytes, with
 * a string "class", an array "args" and, when present, a string "jid" and a valid "retry".
 * Returns a job (caller frees) or NULL with what is wrong in err ("not JSON: ... at line 1 column 5",
 * "no \"class\" field", ...). */
struct job *job_parse(const char *payload, size_t len, size_t max_size, char *err, size_t errlen) MUSTCHECK;

/* A new job for class on queue with args (takes ownership), a fresh jid, retry true, created_at
 * now. */
struct job *job_new(const char *class, const char *queue, json_t *args);

/* Wraps an existing JSON object (takes ownership), e.g. one decoded by the caller; NULL with err
 * when it is not a valid job. */
struct job *job_from_json(json_t *obj, char *err, size_t errlen) MUSTCHECK;

void job_free(struct job *job);

/* Writes a fresh 24-hex-digit jid (random) into out (size JOB_JID_LEN + 1). */
void job_new_jid(char out[JOB_JID_LEN + 1]);

/* Sets a float field (Sidekiq's epoch seconds) or a string field, replacing any old value. */
void job_set_time(struct job *job, const char *field, double when);
void job_set_string(struct job *job, const char *field, const char *value);
void job_set_int(struct job *job, const char *field, long long value);

/* The compact JSON text (caller frees). */
char *job_dump(const struct job *job);

/* Sidekiq's retry delay: count**4 + 15 + rand(10) * (count + 1) seconds. */
double job_backoff(int retry_count);

/* True when name is a valid queue name: 1..64 of [A-Za-z0-9_.-]. */
bool job_queue_name_ok(const char *name);

#endif
