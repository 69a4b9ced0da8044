/* test_util: the control characters of data printed for a human: which they are, and how they are
 * shown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static void
test_control_len(void **state)
{
	(void)state;
	assert_int_equal(util_control_len(""), 0);
	assert_int_equal(util_control_len("a"), 0);
	assert_int_equal(util_control_len("\x01"), 1);
	assert_int_equal(util_control_len("\n"), 1);
	assert_int_equal(util_control_len("\x1b[2J"), 1);
	assert_int_equal(util_control_len("\x7f"), 1);
	assert_int_equal(util_control_len("\xc2\x80"), 2);
	assert_int_equal(util_control_len("\xc2\x9f"), 2);
	assert_int_equal(util_control_len("\xc2\xa0"), 0); /* U+00A0, no-break space */
	assert_int_equal(util_control_len("\xc2"), 0);     /* a truncated sequence */
	assert_int_equal(util_control_len("\xc3\xa9"), 0); /* é */
}

static void
expect_visible(const char *in, const char *want)
{
	char *got = util_visible(in);

	assert_string_equal(got, want);
	free(got);
}

static void
test_visible(void **state)
{
	(void)state;
	expect_visible("", "");
	expect_visible("Dr. José Núñez <jn@example.org> & 100% “quoted”", "Dr. José Núñez <jn@example.org> & 100% “quoted”");
	/* Line breaks and tabs stay what they are: multi-line texts (an email body) print as written. */
	expect_visible("a\tb\nc\n", "a\tb\nc\n");
	/* What would retitle the terminal, clear it or move its cursor is shown, not obeyed. */
	expect_visible("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07");
	expect_visible("Ann\x1b[2J", "Ann\\x1b[2J");
	expect_visible("\r\x01\x08\x0b\x0c\x1f", "\\x0d\\x01\\x08\\x0b\\x0c\\x1f");
	expect_visible("del\x7f", "del\\x7f");
	/* C1 controls (U+0080..U+009F), which some terminals obey as ESC plus a letter: CSI is U+009B. */
	expect_visible("\xc2\x9b" "2J", "\\u009b2J");
	expect_visible("\xc2\x80\xc2\x9f\xc2\xa0", "\\u0080\\u009f\xc2\xa0");
	/* Bytes that are not UTF-8 are passed on: they are no control character. */
	expect_visible("\xc2", "\xc2");
	expect_visible("\x9b\xff", "\x9b\xff");
	/* The longest growth: four bytes per C0 control. */
	char in[257], want[1025];
	memset(in, '\x1b', 256);
	in[256] = '\0';
	for (size_t i = 0; i < 256; i++)
		memcpy(want + 4 * i, "\\x1b", 4);
	want[1024] = '\0';
	expect_visible(in, want);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_control_len),
		cmocka_unit_test(test_visible),
	};

	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
