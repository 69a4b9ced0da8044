/* Unit tests of the queue's memory of refused moves. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "common/queue.h"

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
	/* A list the sweep could not read: an entry of its own, beside the jobs refused in it. */
	queue_refusals_note_list(q, "outreach:inflight:a:h:1:n", "WRONGTYPE");
	queue_refusals_note(q, "outreach:inflight:a:h:1:n", "x", 1, "queue:a", "WRONGTYPE");
	queue_refusals_note_list(q, "outreach:inflight:a:h:1:n", "WRONGTYPE");
	assert_int_equal(queue_refusals_pass(q), 2);
	assert_int_equal(queue_refusals_pass(q), 0);
	assert_int_equal(queue_refusals_pass(NULL), 0);
	queue_refusals_free(q);
	queue_refusals_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(refusals_remember_one_pass),
	};

	return cmocka_run_group_tests_name("queue", tests, NULL, NULL);
}
