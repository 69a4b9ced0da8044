/* test_segment: campaign segment criteria: every key accepted and refused with its reason, and the
 * query whose text depends only on which keys are present. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/segment.h"

/* Checks the criteria given as JSON; returns segment_check's result with the error in err. */
static int
check(const char *text, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	int rc;

	if (j == NULL)
		fail_msg("bad test JSON %s: %s", text, jerr.text);
	err[0] = '\0';
	rc = segment_check(j, err, errlen);
	json_decref(j);
	return rc;
}

static void
expect_ok(const char *text)
{
	char err[512];

	if (check(text, err, sizeof(err)) != 0)
		fail_msg("%s refused: %s", text, err);
}

static void
expect_error(const char *text, const char *want)
{
	char err[512];

	if (check(text, err, sizeof(err)) == 0)
		fail_msg("%s accepted, wanted the error %s", text, want);
	if (strstr(err, want) == NULL)
		fail_msg("%s: error [%s] does not contain [%s]", text, err, want);
}

static void
test_accepts_every_key(void **state)
{
	(void)state;
	expect_ok("{}");
	expect_ok("{\"specialty_codes\": [\"207X00000X\", \"2251S0007X\"]}");
	expect_ok("{\"specialty_groupings\": [\"Allopathic & Osteopathic Physicians\", \"Orthopaedic "
	          "Surgery\"]}");
	expect_ok("{\"states\": [\"TX\", \"OK\"], \"cities\": [\"Austin\", \"San Antonio\"]}");
	expect_ok("{\"postal_prefixes\": [\"787\", \"7\", \"7870112345\"]}");
	expect_ok("{\"statuses\": [\"prospect\", \"active\", \"inactive\"]}");
	expect_ok("{\"coordinator_ids\": [3, 12]}");
	expect_ok("{\"tags\": [\"ortho\", \"2026:q1\", \"vip-list.a_b\"]}");
	expect_ok("{\"kinds\": [\"physician\", \"organization\"]}");
	expect_ok("{\"specialty_codes\": [\"207X00000X\"], \"specialty_groupings\": [\"x\"], \"states\": "
	          "[\"TX\"], "
	          "\"cities\": [\"Austin\"], \"postal_prefixes\": [\"78\"], \"statuses\": [\"active\"], "
	          "\"coordinator_ids\": [1], \"tags\": [\"a\"], \"kinds\": [\"physician\"]}");
}

static void
test_refuses_with_reason(void **state)
{
	(void)state;
	expect_error("[]", "criteria must be a JSON object");
	expect_error("{\"specialty\": [\"x\"]}", "specialty: unknown criterion");
	expect_error("{\"states\": \"TX\"}", "states: must be a list");
	expect_error("{\"states\": []}", "states: must not be an empty list");
	expect_error("{\"states\": [\"tx\"]}", "states[0]: \"tx\" must be a two-letter state code");
	expect_error("{\"states\": [\"TX\", \"TEX\"]}", "states[1]: \"TEX\"");
	expect_error("{\"states\": [5]}", "states[0]: 5 must be a string");
	expect_error("{\"specialty_codes\": [\"207X00000\"]}",
	             "specialty_codes[0]: \"207X00000\" must be a NUCC");
	expect_error("{\"specialty_codes\": [\"207x00000X\"]}", "must be a NUCC taxonomy code");
	expect_error("{\"specialty_groupings\": [\"\"]}",
	             "specialty_groupings[0]: \"\" must be 1 to 200 characters");
	expect_error("{\"cities\": [null]}", "cities[0]: null must be a string");
	expect_error("{\"postal_prefixes\": [\"78a\"]}",
	             "postal_prefixes[0]: \"78a\" must be 1 to 10 digits");
	expect_error("{\"postal_prefixes\": [\"78%\"]}", "must be 1 to 10 digits");
	expect_error("{\"postal_prefixes\": [\"12345678901\"]}", "must be 1 to 10 digits");
	expect_error("{\"statuses\": [\"lost\"]}",
	             "statuses[0]: \"lost\" must be prospect, active or inactive");
	expect_error("{\"coordinator_ids\": [\"3\"]}",
	             "coordinator_ids[0]: \"3\" must be a positive integer");
	expect_error("{\"coordinator_ids\": [0]}", "must be a positive integer");
	expect_error("{\"coordinator_ids\": [1.5]}", "must be a positive integer");
	expect_error("{\"tags\": [\"Ortho\"]}", "tags[0]: \"Ortho\" must be a tag");
	expect_error("{\"tags\": [\"a b\"]}", "must be a tag");
	expect_error("{\"kinds\": [\"group\"]}", "kinds[0]: \"group\" must be physician or organization");
	expect_error("{\"cities\": [\"a\\u0000b\"]}", "must not contain a NUL character");
}

static void
test_list_size_bound(void **state)
{
	(void)state;
	json_t *crit = json_object(), *list = json_array();
	char err[256];

	for (int i = 0; i < SEGMENT_MAX_VALUES; i++)
		json_array_append_new(list, json_integer(i + 1));
	json_object_set_new(crit, "coordinator_ids", list);
	assert_int_equal(segment_check(crit, err, sizeof(err)), 0);
	json_array_append_new(list, json_integer(SEGMENT_MAX_VALUES + 1));
	assert_int_equal(segment_check(crit, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "coordinator_ids: has 1001 values, at most 1000 are allowed"));
	json_decref(crit);
}

/* The SQL of crit with parameters from first; the parameters land in params. */
static char *
where_of(const char *text, int first, char **params, int *n)
{
	json_t *j = json_loads(text, 0, NULL);
	char err[256];

	assert_non_null(j);
	assert_int_equal(segment_check(j, err, sizeof(err)), 0);
	char *sql = segment_where(j, first, params, n);
	json_decref(j);
	return sql;
}

static void
free_all(char **params, int n)
{
	for (int i = 0; i < n; i++)
		free(params[i]);
}

static void
test_values_never_in_sql(void **state)
{
	(void)state;
	char *p1[SEGMENT_MAX_PARAMS], *p2[SEGMENT_MAX_PARAMS];
	int n1 = 0, n2 = 0;
	char *a = where_of("{\"cities\": [\"Austin\"], \"states\": [\"TX\"], \"tags\": [\"ortho\"]}", 1, p1,
	                   &n1);
	char *b = where_of("{\"tags\": [\"vip\"], \"cities\": [\"O'Fallon\", \"a\\\"b\\\\c\", "
	                   "\"x'); DROP TABLE referral_sources; --\"], \"states\": [\"MO\", \"IL\"]}",
	                   1, p2, &n2);

	/* Same keys, other values: the same text; the values travel as parameters. */
	assert_string_equal(a, b);
	assert_null(strstr(b, "DROP"));
	assert_null(strstr(b, "Fallon"));
	assert_int_equal(n1, 3);
	assert_int_equal(n2, 3);
	/* Parameters follow the keys' fixed order (states before cities before tags), whatever the JSON's. */
	assert_string_equal(p1[0], "{\"TX\"}");
	assert_string_equal(p1[1], "{\"Austin\"}");
	assert_string_equal(p1[2], "{\"ortho\"}");
	assert_string_equal(p2[0], "{\"MO\",\"IL\"}");
	assert_string_equal(p2[1], "{\"O'Fallon\",\"a\\\"b\\\\c\",\"x'); DROP TABLE referral_sources; --\"}");
	assert_string_equal(p2[2], "{\"vip\"}");
	assert_non_null(strstr(a, "s.state = ANY($1::text[])"));
	assert_non_null(strstr(a, "$2::text[]"));
	assert_non_null(strstr(a, "st.tag = ANY($3::text[])"));
	free(a);
	free(b);
	free_all(p1, n1);
	free_all(p2, n2);
}

static void
test_numbering_and_empty(void **state)
{
	(void)state;
	char *p[SEGMENT_MAX_PARAMS + 4];
	int n = 3;
	char *w = where_of("{\"coordinator_ids\": [4, 5], \"specialty_groupings\": [\"G\"]}", 4, p, &n);

	/* Appended after what was there, numbered from first; a grouping uses its one parameter twice. */
	assert_int_equal(n, 5);
	assert_string_equal(p[3], "{\"G\"}");
	assert_string_equal(p[4], "{4,5}");
	assert_non_null(strstr(w, "tx.grouping = ANY($4::text[]) OR tx.classification = ANY($4::text[])"));
	assert_non_null(strstr(w, "s.coordinator_id = ANY($5::bigint[])"));
	assert_null(strstr(w, "$6"));
	free(w);
	free_all(p + 3, 2);

	n = 0;
	w = where_of("{}", 1, p, &n);
	assert_string_equal(w, "true");
	assert_int_equal(n, 0);
	free(w);

	json_t *all = json_loads("{\"kinds\": [\"physician\"]}", 0, NULL);
	char *q = segment_query(all, p, &n);
	assert_int_equal(n, 1);
	assert_non_null(strstr(q, "s.kind = ANY($1::text[])"));
	assert_non_null(strstr(q, segment_eligible_sql));
	free(q);
	free_all(p, n);
	json_decref(all);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_accepts_every_key),   cmocka_unit_test(test_refuses_with_reason),
		cmocka_unit_test(test_list_size_bound),     cmocka_unit_test(test_values_never_in_sql),
		cmocka_unit_test(test_numbering_and_empty),
	};

	return cmocka_run_group_tests_name("segment", tests, NULL, NULL);
}
