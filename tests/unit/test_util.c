/* Unit tests of util: months written "YYYY-MM", their arithmetic, the UTC month; the control
 * characters of data printed for a human: which they are, and how they are shown. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/util.h"

static void
parse_month(void **state)
{
	int y, m;

	(void)state;
	assert_true(util_parse_month("2026-11", &y, &m));
	assert_int_equal(y, 2026);
	assert_int_equal(m, 11);
	assert_true(util_parse_month("0001-01", NULL, NULL));
	assert_true(util_parse_month("9999-12", NULL, NULL));
	const char *bad[] = {"2026-13", "2026-00", "0000-01", "2026-1", "2026-011", "2026/11", "+026-11",
	                     "2026-+1", " 2026-11", "2026-11-01", "", NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (util_parse_month(bad[i], NULL, NULL))
			fail_msg("'%s' taken for a month", bad[i] ? bad[i] : "(null)");
}

static void
month_offset(void **state)
{
	const struct {
		const char *month;
		int delta;
		const char *want;
	} cases[] = {
	        {"2026-11", -1, "2026-10"}, {"2026-01", -1, "2025-12"}, {"2025-12", 1, "2026-01"},
	        {"2026-03", 0, "2026-03"},  {"2026-03", -15, "2024-12"}, {"2026-03", 24, "2028-03"},
	        {"2000-02", -1200, "1900-02"}, {"0001-02", -1, "0001-01"}, {"9999-11", 1, "9999-12"},
	};
	char out[8];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!util_month_offset(cases[i].month, cases[i].delta, out, sizeof(out)))
			fail_msg("%s %+d refused", cases[i].month, cases[i].delta);
		assert_string_equal(out, cases[i].want);
	}

	/* Not a month, a result outside years 1..9999 (however far: no overflow), too little room. */
	strcpy(out, "x");
	assert_false(util_month_offset("2026-13", 0, out, sizeof(out)));
	assert_false(util_month_offset("2026-1", 1, out, sizeof(out)));
	assert_false(util_month_offset(NULL, 1, out, sizeof(out)));
	assert_false(util_month_offset("0001-01", -1, out, sizeof(out)));
	assert_false(util_month_offset("9999-12", 1, out, sizeof(out)));
	assert_false(util_month_offset("2026-11", INT_MIN, out, sizeof(out)));
	assert_false(util_month_offset("2026-11", INT_MAX, out, sizeof(out)));
	assert_string_equal(out, "x");
	assert_false(util_month_offset("2026-11", 1, out, 7));
}

/* The arithmetic workers/monthly.c did with timegm (the first of the month, tm_mon moved, the
 * result normalised), which util_month_offset replaces: the same month for every month and delta
 * tried. */
static void
month_offset_as_timegm(void **state)
{
	char month[8], got[8], want[8];

	(void)state;
	for (int y = 1899; y <= 2101; y++) {
		for (int m = 1; m <= 12; m++) {
			snprintf(month, sizeof(month), "%04d-%02d", y, m);
			for (int delta = -40; delta <= 40; delta++) {
				struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1 + delta, .tm_mday = 1};
				timegm(&tm);
				strftime(want, sizeof(want), "%Y-%m", &tm);
				if (!util_month_offset(month, delta, got, sizeof(got)))
					fail_msg("%s %+d refused", month, delta);
				if (strcmp(got, want) != 0)
					fail_msg("%s %+d: %s, timegm says %s", month, delta, got, want);
			}
		}
	}
}

static time_t
at(int y, int mo, int d, int h, int mi, int s)
{
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi, .tm_sec = s};
	return timegm(&tm);
}

static void
utc_month(void **state)
{
	char out[8];

	(void)state;
	util_utc_month(0, out);
	assert_string_equal(out, "1970-01");
	util_utc_month(-1, out);
	assert_string_equal(out, "1969-12");
	util_utc_month(at(2026, 11, 30, 23, 59, 59), out);
	assert_string_equal(out, "2026-11");
	util_utc_month(at(2026, 11, 30, 23, 59, 59) + 1, out);
	assert_string_equal(out, "2026-12");
	util_utc_month(at(2024, 2, 29, 12, 0, 0), out);
	assert_string_equal(out, "2024-02");
}

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
	/* A byte that begins no valid UTF-8 sequence is shown too: a lone 0x9b is CSI to a terminal
	 * not in UTF-8, and a character cut in two (at the end of a buffer) is no character. */
	expect_visible("\xc2", "\\xc2");
	expect_visible("\x9b\xff", "\\x9b\\xff");
	expect_visible("caf\xc3", "caf\\xc3");
	expect_visible("\xed\xa0\x80", "\\xed\\xa0\\x80"); /* a surrogate */
	expect_visible("\xf0\x9f\x98\x80 ok", "\xf0\x9f\x98\x80 ok");
	/* The longest growth: four bytes per C0 control. */
	char in[257], want[1025];
	memset(in, '\x1b', 256);
	in[256] = '\0';
	for (size_t i = 0; i < 256; i++)
		memcpy(want + 4 * i, "\\x1b", 4);
	want[1024] = '\0';
	expect_visible(in, want);
}

/* Into a buffer: what does not fit is left out whole (never half an escape); a log record's line
 * breaks become spaces. */
static void
test_visible_buf(void **state)
{
	char out[16];

	(void)state;
	assert_int_equal(util_visible_buf(out, sizeof(out), "a\x1b[2J\tb\r\nc", true), 13);
	assert_string_equal(out, "a\\x1b[2J\tb  c");
	assert_int_equal(util_visible_buf(out, sizeof(out), "a\r\nb", false), 7);
	assert_string_equal(out, "a\\x0d\nb");
	assert_int_equal(util_visible_buf(out, 8, "abcd\x1b", false), 4);
	assert_string_equal(out, "abcd");
	assert_int_equal(util_visible_buf(out, 9, "abcd\x1b", false), 8);
	assert_string_equal(out, "abcd\\x1b");
	assert_int_equal(util_visible_buf(out, 6, "\xc2\x9b", false), 0);
	assert_string_equal(out, "");
	assert_int_equal(util_visible_buf(out, 1, "abc", false), 0);
	assert_string_equal(out, "");
	/* A character is copied whole or left out. */
	assert_int_equal(util_visible_buf(out, 6, "abc\xc3\xa9", false), 5);
	assert_string_equal(out, "abc\xc3\xa9");
	assert_int_equal(util_visible_buf(out, 5, "abc\xc3\xa9", false), 3);
	assert_string_equal(out, "abc");
}

/* Terminal columns (wcwidth), not bytes; an escape counts as the characters it is shown as. */
static void
test_text_width(void **state)
{
	(void)state;
	assert_int_equal(util_text_width(""), 0);
	assert_int_equal(util_text_width("Lopez"), 5);
	assert_int_equal(util_text_width("M\xc3\xbcller \xc3\x87" "a"), 9);       /* Müller Ça */
	assert_int_equal(util_text_width("\xe6\x9d\xb1\xf0\x9f\x98\x80"), 4); /* 東😀: two wide characters */
	assert_int_equal(util_text_width("\xe5\xb1\xb1\xe7\x94\xb0 Ta"), 7); /* 山田 Ta */
	assert_int_equal(util_text_width("Mu\xcc\x88ller"), 6);                /* Müller, u + combining diaeresis */
	assert_int_equal(util_text_width("\xef\xbc\xa1"), 2);                  /* Ａ, fullwidth */
	assert_int_equal(util_text_width("a\xff" "b"), 3);                       /* a byte that is not UTF-8 */
	char *shown = util_visible("a\x1b");
	assert_int_equal(util_text_width(shown), 5); /* a\x1b */
	free(shown);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(parse_month),
	    cmocka_unit_test(month_offset),
	    cmocka_unit_test(month_offset_as_timegm),
	    cmocka_unit_test(utc_month),
	    cmocka_unit_test(test_control_len),
	    cmocka_unit_test(test_visible),
	    cmocka_unit_test(test_visible_buf),
	    cmocka_unit_test(test_text_width),
	};
	return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
