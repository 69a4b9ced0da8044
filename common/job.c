/* job: Sidekiq-compatible job payloads: parse, validate, build and serialize the JSON. */
#include "common/job.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), (struct job *)NULL)

bool
job_queue_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 64)
		return false;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
		      *p == '-' || *p == '.'))
			return false;
	return true;
}

/* A jid goes into log lines and the X-Outreach-Jid header of emails: printable ASCII only (Sidekiq's
 * are hex, other clients' UUIDs), so that none can break a line or get an email refused. */
static bool
jid_ok(const json_t *jid)
{
	const char *s = json_string_value(jid);
	size_t n = json_string_length(jid);

	if (s == NULL || n == 0 || n > 64)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

/* Fills the borrowed views; NULL with err when a required field is missing or of the wrong type. */
static struct job *
bind(json_t *obj, char *err, size_t errlen)
{
	json_t *class = json_object_get(obj, "class");
	json_t *args = json_object_get(obj, "args");
	json_t *jid = json_object_get(obj, "jid");
	json_t *queue = json_object_get(obj, "queue");
	json_t *retry = json_object_get(obj, "retry");
	json_t *count = json_object_get(obj, "retry_count");
	struct job *job;

	if (class == NULL)
		return ERR("no \"class\" field");
	if (!json_is_string(class) || json_string_length(class) == 0)
		return ERR("\"class\" is not a non-empty string");
	if (args == NULL)
		return ERR("no \"args\" field");
	if (!json_is_array(args))
		return ERR("\"args\" is not an array");
	if (jid != NULL && !jid_ok(jid))
		return ERR("\"jid\" is not a string of 1 to 64 printable ASCII characters without spaces");
	if (queue != NULL && (!json_is_string(queue) || !job_queue_name_ok(json_string_value(queue))))
		return ERR("\"queue\" is not a valid queue name");
	if (retry != NULL && !json_is_boolean(retry) && !(json_is_integer(retry) && json_integer_value(retry) >= 0 &&
	                                                   json_integer_value(retry) <= 1000))
		return ERR("\"retry\" is not true, false or a number of retries 0..1000");
	if (count != NULL && !(json_is_integer(count) && json_integer_value(count) >= 0))
		return ERR("\"retry_count\" is not a non-negative integer");

	job = xcalloc(1, sizeof(*job));
	job->obj = obj;
	job->class = json_string_value(class);
	job->args = args;
	job->jid = jid ? json_string_value(jid) : "";
	job->queue = queue ? json_string_value(queue) : "default";
	job->retry = retry == NULL || !json_is_false(retry);
	if (retry == NULL || json_is_true(retry))
		job->max_retries = JOB_DEFAULT_RETRIES;
	else if (json_is_integer(retry))
		job->max_retries = (int)json_integer_value(retry);
	else
		job->max_retries = 0;
	job->retry_count = count ? (int)json_integer_value(count) : -1;
	return job;
}

struct job *
job_parse(const char *payload, size_t len, size_t max_size, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *obj;
	struct job *job;

	if (len > max_size)
		return ERR("payload of %zu bytes exceeds the limit of %zu bytes", len, max_size);
	obj = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
	if (obj == NULL)
		return ERR("not JSON: %s at line %d column %d", jerr.text, jerr.line, jerr.column);
	if (!json_is_object(obj)) {
		json_decref(obj);
		return ERR("not a JSON object");
	}
	job = bind(obj, err, errlen);
	if (job == NULL)
		json_decref(obj);
	return job;
}

struct job *
job_from_json(json_t *obj, char *err, size_t errlen)
{
	struct job *job;

	if (!json_is_object(obj)) {
		json_decref(obj);
		return ERR("not a JSON object");
	}
	job = bind(obj, err, errlen);
	if (job == NULL)
		json_decref(obj);
	return job;
}

void
job_new_jid(char out[JOB_JID_LEN + 1])
{
	unsigned char raw[JOB_JID_LEN / 2];

	util_random(raw, sizeof(raw));
	util_hex(raw, sizeof(raw), out);
}

struct job *
job_new(const char *class, const char *queue, json_t *args)
{
	char jid[JOB_JID_LEN + 1], err[128];
	double now = util_now();
	json_t *obj;

	job_new_jid(jid);
	obj = json_pack("{s:s, s:o, s:s, s:s, s:b, s:f}", "class", class, "args", args, "jid", jid, "queue", queue,
	                "retry", 1, "created_at", now);
	if (obj == NULL) {
		fprintf(stderr, "job_new: cannot build the job\n");
		abort();
	}
	struct job *job = job_from_json(obj, err, sizeof(err));
	if (job == NULL) {
		fprintf(stderr, "job_new: %s\n", err);
		abort();
	}
	return job;
}

void
job_free(struct job *job)
{
	if (job == NULL)
		return;
	json_decref(job->obj);
	free(job);
}

/* Setting a field can replace the strings the views point at: refresh them. */
static void
rebind(struct job *job)
{
	char err[128];
	json_t *obj = json_incref(job->obj);
	struct job *fresh = bind(obj, err, sizeof(err));

	json_decref(obj);
	if (fresh) {
		*job = *fresh;
		free(fresh);
	}
}

void
job_set_time(struct job *job, const char *field, double when)
{
	json_object_set_new(job->obj, field, json_real(when));
	rebind(job);
}

void
job_set_string(struct job *job, const char *field, const char *value)
{
	json_object_set_new(job->obj, field, json_string(value));
	rebind(job);
}

void
job_set_int(struct job *job, const char *field, long long value)
{
	json_object_set_new(job->obj, field, json_integer(value));
	rebind(job);
}

char *
job_dump(const struct job *job)
{
	/* Float epochs keep their microseconds: jansson prints reals with 17 significant digits. */
	return json_dumps(job->obj, JSON_COMPACT | JSON_REAL_PRECISION(17));
}

double
job_backoff(int retry_count)
{
	unsigned int r;

	util_random(&r, sizeof(r));
	return pow(retry_count, 4) + 15 + (double)(r % 10) * (retry_count + 1);
}
