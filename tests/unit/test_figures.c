/* test_figures: label values of /metrics' business figures, escaped as the Prometheus text format requires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/figures.h"

/* figures_label's output for s; caller frees. */
static char *
label(const char *s)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	assert_non_null(f);
	figures_label(f, s);
	fclose(f);
	return buf;
}

static void
test_plain_values_pass(void **state)
{
	(void)state;
	char *s = label("Physical Therapy");
	assert_string_equal(s, "Physical Therapy");
	free(s);
	s = label("Cardiología – Nord");
	assert_string_equal(s, "Cardiología – Nord");
	free(s);
	s = label("");
	assert_string_equal(s, "");
	free(s);
}

static void
test_backslash_quote_and_newline_are_escaped(void **state)
{
	(void)state;
	char *s = label("Sleep \"Lab\" \\ 2\nEast");
	assert_string_equal(s, "Sleep \\\"Lab\\\" \\\\ 2\\nEast");
	free(s);
	s = label("\\\\\"\n\n");
	assert_string_equal(s, "\\\\\\\\\\\"\\n\\n");
	free(s);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plain_values_pass),
	    cmocka_unit_test(test_backslash_quote_and_newline_are_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
