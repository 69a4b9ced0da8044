/* test_pgcopy: the binary COPY encoding (its bytes, dates); test_db sends it to PostgreSQL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/pgcopy.h"

static void
test_days(void **state)
{
	static const struct {
		int y, m, d;
		int32_t days;
	} ok[] = {
	    {2000, 1, 1, 0},          {1999, 12, 31, -1},   {2024, 2, 29, 8825}, {2000, 2, 29, 59},
	    {1900, 3, 1, -36465},     {2005, 5, 27, 1973},  {9999, 12, 31, 2921939},
	    {1, 1, 1, -730119},
	};
	static const int bad[][3] = {
	    {2023, 2, 29}, {1900, 2, 29}, {2024, 13, 1}, {2024, 0, 10}, {2024, 4, 31}, {2024, 1, 0}, {0, 1, 1},
	};
	int32_t days;

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		assert_true(pgcopy_days(ok[i].y, ok[i].m, ok[i].d, &days));
		assert_int_equal(days, ok[i].days);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(pgcopy_days(bad[i][0], bad[i][1], bad[i][2], &days));
}

/* The bytes of a row as PostgreSQL's binary COPY format defines them. */
static void
test_encoding(void **state)
{
	static const unsigned char want[] = {
	    'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0, /* signature */
	    0, 0, 0, 0, 0, 0, 0, 0,                                   /* flags, header extension */
	    0, 7,                                                     /* seven fields */
	    0xff, 0xff, 0xff, 0xff,                                   /* NULL */
	    0xff, 0xff, 0xff, 0xff,                                   /* "" is NULL too */
	    0, 0, 0, 4, 'Z', 'o', 0xc3, 0xab,                         /* "Zoë": its UTF-8 bytes */
	    0, 0, 0, 3, 'a', '\t', '\\',                              /* a tab and a backslash, unescaped */
	    0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff,                       /* the date 1999-12-31: day -1 */
	    0, 0, 0, 8, 0, 0, 0, 0x14, 0x1d, 0xd7, 0x60, 0,           /* 2000-01-02 00:00 UTC: 86400e6 us */
	    0, 0, 0, 4, 1, '[', '1', ']',                             /* jsonb: version 1, then the text */
	};
	struct pgcopy cp;

	(void)state;
	pgcopy_init(&cp, NULL);
	pgcopy_row(&cp, 7);
	pgcopy_null(&cp);
	pgcopy_text(&cp, "");
	pgcopy_text(&cp, "Zo\xc3\xab");
	pgcopy_text(&cp, "a\t\\");
	pgcopy_date(&cp, -1);
	pgcopy_timestamptz_day(&cp, 1);
	pgcopy_jsonb(&cp, "[1]");
	assert_int_equal(cp.len, sizeof(want));
	assert_memory_equal(cp.buf, want, sizeof(want));
	free(cp.buf);
}

/* Arrays as array_recv reads them: dimensions, NULLs flag, element type, size and lower bound, elements. */
static void
test_arrays(void **state)
{
	static const unsigned char want[] = {
	    0, 3,                                           /* three fields */
	    0, 0, 0, 42,                                    /* text[]: 42 bytes */
	    0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 25,            /* one dimension, has NULLs, of text (oid 25) */
	    0, 0, 0, 3, 0, 0, 0, 1,                         /* three elements from 1 */
	    0, 0, 0, 10, '2', '0', '7', 'R', '0', '0', '0', '0', '0', 'X',
	    0xff, 0xff, 0xff, 0xff,                         /* NULL */
	    0, 0, 0, 0,                                     /* "" */
	    0, 0, 0, 30,                                    /* boolean[]: 30 bytes */
	    0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 16,            /* one dimension, no NULLs, of boolean (oid 16) */
	    0, 0, 0, 2, 0, 0, 0, 1,                         /* two elements from 1 */
	    0, 0, 0, 1, 1, 0, 0, 0, 1, 0,                   /* true, false */
	    0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, /* an empty text[]: no dimension */
	};
	static const char *const texts[] = {"207R00000X", NULL, ""};
	static const bool flags[] = {true, false};
	struct pgcopy cp;

	(void)state;
	pgcopy_init(&cp, NULL);
	size_t head = cp.len;
	pgcopy_row(&cp, 3);
	pgcopy_text_array(&cp, texts, 3);
	pgcopy_bool_array(&cp, flags, 2);
	pgcopy_text_array(&cp, NULL, 0);
	assert_int_equal(cp.len - head, sizeof(want));
	assert_memory_equal(cp.buf + head, want, sizeof(want));
	free(cp.buf);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_days),
	    cmocka_unit_test(test_encoding),
	    cmocka_unit_test(test_arrays),
	};

	return cmocka_run_group_tests_name("pgcopy", tests, NULL, NULL);
}
