/* test_npi: the NPI Registry answer parser, query parts and URLs against the real recorded answers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/npi.h"
#include "common/util.h"

#define FIXTURES "tests/fixtures/npi/"

static char *
fixture(const char *name, size_t *len)
{
	char path[256];
	snprintf(path, sizeof(path), FIXTURES "%s", name);
	char *s = util_read_file(path, len);
	assert_non_null(s);
	return s;
}

static const char *
field(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void
test_physician_2022_form(void **state)
{
	(void)state;
	size_t len;
	char *body = fixture("api_npi1_individual_physician_2022.json", &len), err[256];
	json_t *recs;
	int count, skipped;

	assert_int_equal(npi_parse_answer(body, len, &recs, &count, &skipped, err, sizeof(err)), NPI_ANSWER_OK);
	assert_int_equal(count, 1);
	json_t *r = json_array_get(recs, 0);
	assert_string_equal(field(r, "npi"), "1760485387");
	assert_string_equal(field(r, "enumeration_type"), "NPI-1");
	assert_string_equal(field(r, "last_name"), "DEWEY");
	assert_string_equal(field(r, "sex"), "M");
	assert_string_equal(field(r, "primary_taxonomy_code"), "207R00000X");
	assert_string_equal(field(r, "primary_taxonomy_desc"), "Internal Medicine");
	assert_string_equal(field(r, "postal_code"), "55767");
	assert_string_equal(field(r, "phone"), "218-485-4491");
	assert_string_equal(field(r, "last_updated"), "2012-12-04T22:18:42.000Z");
	assert_true(json_is_null(json_object_get(r, "organization_name")));
	json_decref(recs);
	free(body);
}

static void
test_older_form_and_positions(void **state)
{
	(void)state;
	size_t len;
	char *body = fixture("api_npi1_individual_physician_2022.json", &len), err[256];
	json_t *root = json_loads(body, 0, NULL);
	json_t *r = json_array_get(json_object_get(root, "results"), 0);
	/* The older form: integers, epochs in seconds, basic.sex, addresses and taxonomies reordered. */
	json_object_set_new(r, "number", json_integer(1760485387));
	json_object_set_new(r, "last_updated_epoch", json_integer(1354659522));
	json_t *basic = json_object_get(r, "basic");
	json_object_set_new(basic, "sex", json_string("F"));
	json_object_del(basic, "gender");
	json_t *addrs = json_object_get(r, "addresses");
	json_t *first = json_incref(json_array_get(addrs, 0));
	json_array_remove(addrs, 0);
	json_array_append_new(addrs, first);
	json_t *taxes = json_object_get(r, "taxonomies");
	json_t *t0 = json_incref(json_array_get(taxes, 0));
	json_array_remove(taxes, 0);
	json_array_append_new(taxes, t0);

	json_t *n = npi_normalize(r);
	assert_non_null(n);
	assert_string_equal(field(n, "npi"), "1760485387");
	assert_string_equal(field(n, "sex"), "F");
	assert_string_equal(field(n, "primary_taxonomy_code"), "207R00000X");
	assert_string_equal(field(n, "last_updated"), "2012-12-04T22:18:42.000Z");
	json_decref(n);
	json_decref(root);
	free(body);
	(void)err;
}

static void
test_organization_location_by_purpose(void **state)
{
	(void)state;
	size_t len;
	char *body = fixture("api_npi2_organization_2024.json", &len), err[256];
	json_t *recs;
	int count, skipped;

	assert_int_equal(npi_parse_answer(body, len, &recs, &count, &skipped, err, sizeof(err)), NPI_ANSWER_OK);
	json_t *r = json_array_get(recs, 0);
	assert_string_equal(field(r, "enumeration_type"), "NPI-2");
	assert_string_equal(field(r, "organization_name"), "PEACH STATE MEDICAL PRACTICE, PC");
	assert_string_equal(field(r, "city"), "PHILADELPHIA");
	assert_string_equal(field(json_object_get(r, "mailing_address"), "city"), "CHICAGO");
	assert_string_equal(field(r, "primary_taxonomy_code"), "207VE0102X");
	json_decref(recs);
	free(body);
}

static void
test_errors_and_empty(void **state)
{
	(void)state;
	size_t len;
	char err[256];
	json_t *recs;
	int count, skipped;
	char *body = fixture("api_error_enumeration_type_needs_more_criteria.json", &len);

	assert_int_equal(npi_parse_answer(body, len, &recs, &count, &skipped, err, sizeof(err)), NPI_ANSWER_REFUSED);
	assert_string_equal(err, "enumeration_type: enumeration_type requires additional search criteria (09)");
	free(body);
	body = fixture("api_error_no_valid_search_criteria.json", &len);
	assert_int_equal(npi_parse_answer(body, len, &recs, &count, &skipped, err, sizeof(err)), NPI_ANSWER_REFUSED);
	assert_string_equal(err, "generic: No valid search criteria provided (04)");
	free(body);
	body = fixture("api_empty_result.json", &len);
	assert_int_equal(npi_parse_answer(body, len, &recs, &count, &skipped, err, sizeof(err)), NPI_ANSWER_OK);
	assert_int_equal(count, 0);
	json_decref(recs);
	free(body);
	assert_int_equal(npi_parse_answer("<html>", 6, &recs, &count, &skipped, err, sizeof(err)), NPI_ANSWER_GARBLED);
}

static void
test_epochs(void **state)
{
	(void)state;
	json_t *v = json_string("1354659522000");
	assert_int_equal(npi_epoch_ms(v), 1354659522000LL);
	json_decref(v);
	v = json_integer(1354659522);
	assert_int_equal(npi_epoch_ms(v), 1354659522000LL);
	json_decref(v);
	v = json_string("x12");
	assert_int_equal(npi_epoch_ms(v), -1);
	json_decref(v);
	assert_int_equal(npi_epoch_ms(NULL), -1);
}

static void
test_parts_and_urls(void **state)
{
	(void)state;
	static struct npi_part kids[NPI_MAX_SPLIT];
	struct npi_part root;
	json_t *crit = json_pack("{s:s, s:s, s:s}", "taxonomy_description", "Internal Medicine", "state", "MN",
	                         "postal_code", "5");
	char err[256];

	assert_int_equal(npi_criteria_check(crit, err, sizeof(err)), 0);
	npi_part_root(crit, &root);
	assert_false(npi_part_queryable(&root));
	assert_int_equal(npi_part_split(&root, kids), 10);
	assert_string_equal(kids[3].postal, "53");
	kids[3].skip = 400;
	char *url = npi_url("http://h/api/", crit, &kids[3]);
	assert_string_equal(url, "http://h/api/?version=2.1&taxonomy_description=Internal%20Medicine&state=MN"
	                         "&postal_code=53*&limit=200&skip=400");
	free(url);
	struct npi_part five = {.postal = "55767"};
	assert_int_equal(npi_part_split(&five, kids), 2);
	assert_string_equal(kids[1].etype, "NPI-2");
	/* Still at the cap: by two characters of the name (organizations may start with a digit). */
	struct npi_part orgs = kids[1], people = kids[0];
	assert_int_equal(npi_part_split(&orgs, kids), 36 * 42);
	assert_string_equal(kids[0].name, "AA");
	assert_string_equal(kids[36 * 42 - 1].name, "9,");
	url = npi_url("http://h/api/", crit, &kids[42 + 37]);
	assert_string_equal(url, "http://h/api/?version=2.1&taxonomy_description=Internal%20Medicine&state=MN"
	                         "&enumeration_type=NPI-2&organization_name=B%27*&postal_code=55767&limit=200&skip=0");
	free(url);
	assert_int_equal(npi_part_split(&kids[5], kids), 0);
	assert_int_equal(npi_part_split(&people, kids), 26 * 29);
	assert_string_equal(kids[29 + 26].name, "B'");
	url = npi_url("http://h/api/", crit, &kids[29 * 14 + 27]);
	assert_string_equal(url, "http://h/api/?version=2.1&taxonomy_description=Internal%20Medicine&state=MN"
	                         "&enumeration_type=NPI-1&last_name=O%20*&postal_code=55767&limit=200&skip=0");
	free(url);
	/* A search that names someone is not split by name. */
	json_t *named = json_pack("{s:s, s:s}", "last_name", "SMITH", "postal_code", "55767");
	npi_part_root(named, &root);
	util_strlcpy(root.etype, "NPI-1", sizeof(root.etype));
	assert_int_equal(npi_part_split(&root, kids), 0);
	json_decref(named);
	struct npi_part none = {.postal = ""};
	assert_int_equal(npi_part_split(&none, kids), 100);
	assert_string_equal(kids[7].postal, "07");

	json_t *j = npi_parts_to_json(kids, 3);
	struct npi_part *back;
	size_t n;
	assert_int_equal(npi_parts_from_json(j, &back, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(back[2].postal, "02");
	free(back);
	json_decref(j);
	/* Progress saved before name prefixes existed, and with one. */
	j = json_loads("[{\"postal\":\"55767\",\"etype\":\"NPI-1\",\"skip\":200},"
	               "{\"postal\":\"55767\",\"etype\":\"NPI-1\",\"name\":\"SM\",\"skip\":0}]", 0, NULL);
	assert_int_equal(npi_parts_from_json(j, &back, &n), 0);
	assert_int_equal(n, 2);
	assert_string_equal(back[0].name, "");
	assert_string_equal(back[1].name, "SM");
	free(back);
	json_decref(j);
	json_decref(crit);

	crit = json_pack("{s:s}", "state", "MN");
	assert_int_equal(npi_criteria_check(crit, err, sizeof(err)), -1);
	json_decref(crit);
	/* No control character (C0, DEL or C1) nor NUL in a value. */
	const char *bad[] = {"Minne\x1b[2Japolis", "Duluth\n", "Edina\x7f", "St\xc2\x9bPaul"};
	for (size_t i = 0; i < NELEM(bad); i++) {
		crit = json_pack("{s:s, s:s}", "state", "MN", "city", bad[i]);
		assert_int_equal(npi_criteria_check(crit, err, sizeof(err)), -1);
		assert_string_equal(err, "city must not contain control characters");
		json_decref(crit);
	}
	crit = json_loads("{\"state\": \"MN\", \"city\": \"Duluth\\u0000x\"}", JSON_ALLOW_NUL, NULL);
	assert_non_null(crit);
	assert_int_equal(npi_criteria_check(crit, err, sizeof(err)), -1);
	assert_string_equal(err, "city must not contain a NUL character");
	json_decref(crit);
	crit = json_pack("{s:s, s:s}", "state", "MN", "city", "Saint-Étienne\tdu Lac");
	assert_int_equal(npi_criteria_check(crit, err, sizeof(err)), -1);
	json_decref(crit);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_physician_2022_form),
	    cmocka_unit_test(test_older_form_and_positions),
	    cmocka_unit_test(test_organization_location_by_purpose),
	    cmocka_unit_test(test_errors_and_empty),
	    cmocka_unit_test(test_epochs),
	    cmocka_unit_test(test_parts_and_urls),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
