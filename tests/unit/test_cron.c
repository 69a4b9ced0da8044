/* Unit tests of cron expressions and their next run times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <time.h>

#include "common/cron.h"

static time_t
at(int y, int mo, int d, int h, int mi)
{
	struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi};
	return timegm(&tm);
}

static time_t
next_of(const char *expr, time_t from)
{
	struct cron c;
	char err[128];

	if (cron_parse(expr, &c, err, sizeof(err)) == -1)
		fail_msg("%s: %s", expr, err);
	return cron_next(&c, from);
}

static void
next_times(void **state)
{
	(void)state;
	/* 2026-11-26 is a Thursday. */
	time_t now = at(2026, 11, 26, 10, 17);
	assert_int_equal(next_of("* * * * *", now), at(2026, 11, 26, 10, 18));
	assert_int_equal(next_of("5 * * * *", now), at(2026, 11, 26, 11, 5));
	assert_int_equal(next_of("*/15 * * * *", now), at(2026, 11, 26, 10, 30));
	assert_int_equal(next_of("0 2 * * *", now), at(2026, 11, 27, 2, 0));
	assert_int_equal(next_of("@daily", now), at(2026, 11, 27, 0, 0));
	assert_int_equal(next_of("@hourly", now), at(2026, 11, 26, 11, 0));
	assert_int_equal(next_of("0 8 * * mon-fri", at(2026, 11, 27, 9, 0)), at(2026, 11, 30, 8, 0));
	assert_int_equal(next_of("0 0 1 * *", now), at(2026, 12, 1, 0, 0));
	assert_int_equal(next_of("0 0 1 jan *", now), at(2027, 1, 1, 0, 0));
	assert_int_equal(next_of("30 9 29 feb *", now), at(2028, 2, 29, 9, 30));
	assert_int_equal(next_of("0 12 * * 7", now), at(2026, 11, 29, 12, 0)); /* 7 is Sunday */
	assert_int_equal(next_of("0 12 * * sun", now), at(2026, 11, 29, 12, 0));
	assert_int_equal(next_of("10-12/2 * * * *", now), at(2026, 11, 26, 11, 10));
	assert_int_equal(next_of("0,45 * * * *", now), at(2026, 11, 26, 10, 45));
	/* Both day fields restricted: either matches (the 1st, or a Monday). */
	assert_int_equal(next_of("0 0 1 * mon", now), at(2026, 11, 30, 0, 0));
	/* Strictly after: a matching minute is not its own next. */
	assert_int_equal(next_of("17 10 * * *", now), at(2026, 11, 27, 10, 17));
	/* A date that never comes. */
	assert_int_equal(next_of("0 0 31 feb *", now), 0);
}

static void
bad_expressions(void **state)
{
	static const struct {
		const char *expr, *want;
	} cases[] = {
	    {"* * * *", "needs five fields"},
	    {"* * * * * *", "needs five fields"},
	    {"60 * * * *", "minute: 60 is out of range 0..59"},
	    {"* 24 * * *", "hour: 24 is out of range 0..23"},
	    {"* * 0 * *", "day-of-month: 0 is out of range 1..31"},
	    {"* * * 13 *", "month: 13 is out of range 1..12"},
	    {"* * * * 8", "day-of-week: 8 is out of range 0..7"},
	    {"*/0 * * * *", "minute: cannot read"},
	    {"a * * * *", "minute: cannot read"},
	    {"5-1 * * * *", "out of range"},
	    {"@often", "needs five fields"},
	};
	struct cron c;
	char err[128];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (cron_parse(cases[i].expr, &c, err, sizeof(err)) != -1)
			fail_msg("'%s' was accepted", cases[i].expr);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("'%s': error '%s' lacks '%s'", cases[i].expr, err, cases[i].want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(next_times),
	    cmocka_unit_test(bad_expressions),
	};
	return cmocka_run_group_tests_name("cron", tests, NULL, NULL);
}
