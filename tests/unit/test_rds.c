/* Unit tests of Redis URL parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/rds.h"

static void
tcp_urls(void **state)
{
	struct rds_addr a;
	char err[256];

	(void)state;
	assert_int_equal(rds_parse_url("redis://127.0.0.1:6379/0", &a, err, sizeof(err)), 0);
	assert_false(a.is_unix);
	assert_string_equal(a.host, "127.0.0.1");
	assert_int_equal(a.port, 6379);
	assert_int_equal(a.db, 0);
	assert_string_equal(a.password, "");

	assert_int_equal(rds_parse_url("redis://queue.example.org", &a, err, sizeof(err)), 0);
	assert_string_equal(a.host, "queue.example.org");
	assert_int_equal(a.port, 6379);

	assert_int_equal(rds_parse_url("redis://worker:p%40ss%3Aword@redis:6380/3", &a, err, sizeof(err)), 0);
	assert_string_equal(a.user, "worker");
	assert_string_equal(a.password, "p@ss:word");
	assert_string_equal(a.host, "redis");
	assert_int_equal(a.port, 6380);
	assert_int_equal(a.db, 3);

	assert_int_equal(rds_parse_url("redis://:onlypass@h/1", &a, err, sizeof(err)), 0);
	assert_string_equal(a.user, "");
	assert_string_equal(a.password, "onlypass");

	assert_int_equal(rds_parse_url("redis://[::1]:7000/2", &a, err, sizeof(err)), 0);
	assert_string_equal(a.host, "::1");
	assert_int_equal(a.port, 7000);

	char desc[128];
	assert_int_equal(rds_parse_url("redis://u:secret@h:1/2", &a, err, sizeof(err)), 0);
	rds_describe(&a, desc, sizeof(desc));
	assert_string_equal(desc, "redis h:1/2");
}

static void
unix_urls(void **state)
{
	struct rds_addr a;
	char err[256];

	(void)state;
	assert_int_equal(rds_parse_url("unix:///run/redis/redis.sock", &a, err, sizeof(err)), 0);
	assert_true(a.is_unix);
	assert_string_equal(a.path, "/run/redis/redis.sock");
	assert_int_equal(a.db, 0);
	assert_int_equal(rds_parse_url("unix:///tmp/r.sock?db=5", &a, err, sizeof(err)), 0);
	assert_int_equal(a.db, 5);
}

static void
bad_urls(void **state)
{
	static const struct {
		const char *url, *want;
	} cases[] = {
	    {"http://localhost", "expected redis://"},
	    {"rediss://localhost", "TLS (rediss://) is not supported"},
	    {"redis://host:0", "port 0 is not a number in 1..65535"},
	    {"redis://host:99999/0", "not a number in 1..65535"},
	    {"redis://host:6379/x", "database x is not a number"},
	    {"redis://:6379", "no host"},
	    {"redis://[::1/0", "unterminated ["},
	    {"redis://u:%zz@h", "malformed"},
	    {"unix://relative.sock", "absolute path"},
	    {"unix:///tmp/r.sock?foo=1", "db=N"},
	};
	struct rds_addr a;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (rds_parse_url(cases[i].url, &a, err, sizeof(err)) != -1)
			fail_msg("%s was accepted", cases[i].url);
		if (strstr(err, cases[i].want) == NULL)
			fail_msg("%s: error '%s' lacks '%s'", cases[i].url, err, cases[i].want);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(tcp_urls),
	    cmocka_unit_test(unix_urls),
	    cmocka_unit_test(bad_urls),
	};
	return cmocka_run_group_tests_name("rds", tests, NULL, NULL);
}
