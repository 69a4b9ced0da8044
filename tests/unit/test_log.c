/* test_log: a log record is one line, shows control characters as escapes, stays valid UTF-8 when
 * cut, and keeps its context (a job's class and jid) however long the message is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "capture.h"

static void
write_warning(void *msg)
{
	log_write(LOG_LVL_WARNING, 0, "%s", (const char *)msg);
}

/* What one log record wrote on stderr. */
static char *
record(const char *msg)
{
	static char out[16384];

	capture_stderr(write_warning, (void *)msg, out, sizeof(out));
	return out;
}

static bool
valid_utf8(const char *s)
{
	unsigned cp;

	for (size_t n = strlen(s), k; n > 0; s += k, n -= k)
		if ((k = util_utf8_seq((const unsigned char *)s, n, &cp)) == 0)
			return false;
	return true;
}

static void
test_one_line_escaped(void **state)
{
	(void)state;
	log_set_context("class=%s jid=%s", "Evil\x1b]0;x\x07", "abc");
	const char *out = record("name Ann\x1b[2J\r\nforged: record \xc2\x9b" "1m tab\there");
	assert_non_null(strstr(out, "warning: name Ann\\x1b[2J  forged: record \\u009b1m tab\there "
	                            "(class=Evil\\x1b]0;x\\x07 jid=abc)\n"));
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
	log_clear_context();
}

static void
test_long_message_keeps_context_and_utf8(void **state)
{
	char *msg = xmalloc(8192);

	(void)state;
	log_set_context("class=PingJob jid=0123456789abcdef01234567");
	/* Escapes four times as long as the message, up to its limit: the context is still there. */
	memset(msg, '\x1b', 1300);
	msg[1300] = '\0';
	const char *out = record(msg);
	assert_non_null(strstr(out, " (class=PingJob jid=0123456789abcdef01234567)\n"));
	assert_null(strchr(out, '\x1b'));
	/* Cut inside a character, after an odd byte or none: the line stays valid UTF-8. */
	for (size_t lead = 0; lead < 2; lead++) {
		memset(msg, 'a', lead);
		for (size_t i = lead; i + 2 < 8192; i += 2)
			memcpy(msg + i, "\xc3\xa9", 2);
		msg[8190 + lead > 8191 ? 8191 : 8190 + lead] = '\0';
		out = record(msg);
		assert_true(valid_utf8(out));
		assert_non_null(strstr(out, " (class=PingJob jid=0123456789abcdef01234567)\n"));
	}
	free(msg);
	log_clear_context();
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_one_line_escaped),
	    cmocka_unit_test(test_long_message_keeps_context_and_utf8),
	};
	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
