/* Unit tests of the queue's due-job poll and of refused moves, against the test Redis
 * (OUTREACH_REDIS_URL, in a database of its own). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/queue.h"
#include "common/rds.h"

#define TEST_DB 13

static redisContext *
open_redis(void)
{
	const char *url = getenv("OUTREACH_REDIS_URL");
	struct rds_addr a;
	char err[512];
	redisContext *r;

	if (url == NULL)
		fail_msg("OUTREACH_REDIS_URL is not set: run the unit tests through `make test`");
	if (rds_parse_url(url, &a, err, sizeof(err)) == -1)
		fail_msg("%s", err);
	a.db = TEST_DB;
	r = rds_connect(&a, getenv("OUTREACH_REDIS_PASSWORD"), 5000, err, sizeof(err));
	if (r == NULL)
		fail_msg("%s", err);
	freeReplyObject(redisCommand(r, "FLUSHDB"));
	return r;
}

static void
cmd(redisContext *r, const char *fmt, ...)
{
	va_list ap;
	redisReply *rep;

	va_start(ap, fmt);
	rep = redisvCommand(r, fmt, ap);
	va_end(ap);
	assert_non_null(rep);
	if (rep->type == REDIS_REPLY_ERROR)
		fail_msg("%s", rep->str);
	freeReplyObject(rep);
}

static long long
count(redisContext *r, const char *command, const char *key)
{
	redisReply *rep = redisCommand(r, "%s %s", command, key);
	long long n;

	assert_non_null(rep);
	assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
	n = rep->integer;
	freeReplyObject(rep);
	return n;
}

static void
add_due(redisContext *r, double score, const char *jid, const char *queue)
{
	char job[256];

	snprintf(job, sizeof(job),
	         "{\"class\":\"PingJob\",\"args\":[],\"jid\":\"%s\",\"queue\":\"%s\",\"retry\":true,"
	         "\"created_at\":1700000000.0}",
	         jid, queue);
	cmd(r, "ZADD retry %f %s", score, job);
}

/* Runs queue_poll_due with stderr (the log) in a file; returns the number of refusals it logged. */
static int
poll_logged(redisContext *r, struct queue_refusals *q, int *moved)
{
	char path[] = "/tmp/outreach-test-queue.XXXXXX";
	char err[512], line[1024];
	int fd = mkstemp(path), saved = dup(2), logged = 0;
	FILE *f;

	assert_true(fd >= 0 && saved >= 0);
	fflush(stderr);
	dup2(fd, 2);
	int rc = queue_poll_due(r, "retry", util_now(), 2, q, moved, err, sizeof(err));
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	if (rc == -1)
		fail_msg("%s", err);
	f = fdopen(fd, "r");
	rewind(f);
	while (fgets(line, sizeof(line), f))
		logged += strstr(line, "stays there: Redis refused to move it to queue:broken") != NULL;
	fclose(f);
	unlink(path);
	return logged;
}

/* Two refused jobs ahead of the others, more than one page: the others move, the refused stay, each
 * logged once; once mended they move. */
static void
poll_due_skips_refused_moves(void **state)
{
	redisContext *r = open_redis();
	struct queue_refusals *q = queue_refusals_new();
	double now = util_now();
	int moved;

	(void)state;
	cmd(r, "SET queue:broken %s", "not a list");
	add_due(r, now - 50, "aaaaaaaaaaaaaaaaaaaaaaaa", "broken");
	add_due(r, now - 40, "bbbbbbbbbbbbbbbbbbbbbbbb", "broken");
	add_due(r, now - 30, "cccccccccccccccccccccccc", "default");
	cmd(r, "ZADD retry %f %s", now - 20, "not a job");
	add_due(r, now - 10, "dddddddddddddddddddddddd", "default");
	add_due(r, now + 3600, "eeeeeeeeeeeeeeeeeeeeeeee", "default"); /* not due */

	assert_int_equal(poll_logged(r, q, &moved), 2);
	assert_int_equal(moved, 3); /* c and d onto their queue, the entry that is no job to dead */
	assert_int_equal(count(r, "LLEN", "queue:default"), 2);
	assert_int_equal(count(r, "ZCARD", "dead"), 1);
	assert_int_equal(count(r, "ZCARD", "retry"), 3);

	/* Again: nothing moves, nothing is logged again. */
	assert_int_equal(poll_logged(r, q, &moved), 0);
	assert_int_equal(moved, 0);
	assert_int_equal(count(r, "ZCARD", "retry"), 3);

	cmd(r, "DEL queue:broken");
	assert_int_equal(poll_logged(r, q, &moved), 0);
	assert_int_equal(moved, 2);
	assert_int_equal(count(r, "LLEN", "queue:broken"), 2);
	assert_int_equal(count(r, "ZCARD", "retry"), 1);

	/* Refused anew after it moved: logged anew. */
	cmd(r, "SET queue:broken %s", "not a list");
	add_due(r, now - 5, "aaaaaaaaaaaaaaaaaaaaaaaa", "broken");
	assert_int_equal(poll_logged(r, q, &moved), 1);
	queue_refusals_free(q);
	cmd(r, "FLUSHDB");
	redisFree(r);
}

/* The memory of refusals: an entry refused in two passes in a row is noted once; one missing from
 * a pass is forgotten. */
static void
refusals_remember_one_pass(void **state)
{
	struct queue_refusals *q = queue_refusals_new();

	(void)state;
	queue_refusals_note(q, "retry", "x", 1, "queue:a", "WRONGTYPE");
	queue_refusals_note(q, "retry", "y", 1, "queue:a", "WRONGTYPE");
	queue_refusals_note(q, "retry", "x", 1, "queue:a", "WRONGTYPE");
	assert_int_equal(queue_refusals_pass(q), 2);
	queue_refusals_note(q, "schedule", "x", 1, "queue:a", "WRONGTYPE"); /* another source: another entry */
	assert_int_equal(queue_refusals_pass(q), 1);
	assert_int_equal(queue_refusals_pass(q), 0);
	assert_int_equal(queue_refusals_pass(NULL), 0);
	queue_refusals_free(q);
	queue_refusals_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(poll_due_skips_refused_moves),
	    cmocka_unit_test(refusals_remember_one_pass),
	};

	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
