/* test_token: campaign tracking tokens: known answers computed independently, round trips, and
 * every way of tampering with a token. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/token.h"

static struct token_key
key_of(char c)
{
	struct token_key k;

	memset(k.bytes, c, 32);
	k.len = 32;
	return k;
}

static int
check(const struct token_key *k, const char *tok, enum token_kind *kind, int64_t *id, char **url)
{
	return token_check(k, tok, strlen(tok), kind, id, url);
}

/* Expected tokens from Python's hmac/base64 modules over the documented payload. */
static void
test_known_answers(void **state)
{
	(void)state;
	struct token_key k = key_of('k');
	char *t = token_make(&k, TOKEN_OPEN, 42, NULL);
	assert_string_equal(t, "AW8AAAAAAAAAKg.Y58G3wmLFAAw1-WZ2EPtQJ47NZtuI5N-uIhfY1mMzHg");
	free(t);
	t = token_make(&k, TOKEN_CLICK, 7, "https://example.org/a?b=c");
	assert_string_equal(t, "AWMAAAAAAAAAB2h0dHBzOi8vZXhhbXBsZS5vcmcvYT9iPWM."
	                       "U-qz8ArJVPof2Mdfi3BKzNVxeng7R4ONcp5aQnV9w48");
	free(t);
}

static void
test_round_trip(void **state)
{
	(void)state;
	struct token_key k = key_of('x');
	enum token_kind kind;
	int64_t id;
	char *url;
	const char *urls[] = {"http://a.example/", "https://example.org/x?y=1&z=%20#frag",
	                      "https://example.org/" /* 1, 2 and 0 bytes past a multiple of 3 */};
	int64_t ids[] = {0, 1, 255, 4294967296LL, INT64_MAX};

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		for (size_t u = 0; u < sizeof(urls) / sizeof(urls[0]); u++) {
			char *t = token_make(&k, TOKEN_CLICK, ids[i], urls[u]);
			assert_non_null(t);
			assert_int_equal(check(&k, t, &kind, &id, &url), 0);
			assert_int_equal(kind, TOKEN_CLICK);
			assert_int_equal(id, ids[i]);
			assert_string_equal(url, urls[u]);
			free(url);
			free(t);
		}
		char *t = token_make(&k, TOKEN_UNSUBSCRIBE, ids[i], NULL);
		assert_int_equal(check(&k, t, &kind, &id, &url), 0);
		assert_int_equal(kind, TOKEN_UNSUBSCRIBE);
		assert_int_equal(id, ids[i]);
		assert_null(url);
		free(t);
	}
}

static void
test_refuses_bad_arguments(void **state)
{
	(void)state;
	struct token_key k = key_of('x');
	char longurl[TOKEN_URL_MAX + 2];

	assert_null(token_make(&k, TOKEN_CLICK, 1, NULL));
	assert_null(token_make(&k, TOKEN_OPEN, 1, "https://example.org/"));
	assert_null(token_make(&k, TOKEN_CLICK, 1, "javascript:alert(1)"));
	assert_null(token_make(&k, TOKEN_CLICK, 1, "https://example.org/\r\nSet-Cookie: a=b"));
	assert_null(token_make(&k, (enum token_kind)'z', 1, NULL));
	memset(longurl, 'a', sizeof(longurl) - 1);
	memcpy(longurl, "https://", 8);
	longurl[sizeof(longurl) - 1] = '\0';
	assert_null(token_make(&k, TOKEN_CLICK, 1, longurl));
}

/* A link's scheme is written in any case (RFC 3986 3.1), as campaigns.public_url's is; before, a
 * link written "HTTPS://..." got no token and went out untracked. The URL comes back as written. */
static void
test_scheme_in_any_case(void **state)
{
	(void)state;
	struct token_key k = key_of('x');
	enum token_kind kind;
	int64_t id;
	char *url;
	const char *urls[] = {"HTTPS://example.org/x", "Http://a.example/", "hTtPs://example.org/"};

	for (size_t u = 0; u < sizeof(urls) / sizeof(urls[0]); u++) {
		char *t = token_make(&k, TOKEN_CLICK, 5, urls[u]);
		if (t == NULL)
			fail_msg("%s refused", urls[u]);
		assert_int_equal(check(&k, t, &kind, &id, &url), 0);
		assert_int_equal(kind, TOKEN_CLICK);
		assert_string_equal(url, urls[u]);
		free(url);
		free(t);
	}
	assert_null(token_make(&k, TOKEN_CLICK, 5, "HTTPX://example.org/"));
	assert_null(token_make(&k, TOKEN_CLICK, 5, "HTTPS:/example.org/"));
	assert_null(token_make(&k, TOKEN_CLICK, 5, "HTTP:"));
	assert_null(token_make(&k, TOKEN_CLICK, 5, "FTP://example.org/"));
}

/* Flipping any one character, cutting any number of characters off, or adding one, is refused. */
static void
test_tampering(void **state)
{
	(void)state;
	struct token_key k = key_of('x');
	char *t = token_make(&k, TOKEN_CLICK, 99, "https://example.org/page");
	size_t n = strlen(t);
	enum token_kind kind;
	int64_t id;
	char *url;
	char *copy = malloc(n + 2);

	for (size_t i = 0; i < n; i++) {
		const char repl[] = "AQg-_.=";
		for (size_t r = 0; r < sizeof(repl) - 1; r++) {
			memcpy(copy, t, n + 1);
			if (copy[i] == repl[r])
				continue;
			copy[i] = repl[r];
			assert_int_equal(check(&k, copy, &kind, &id, &url), -1);
		}
		assert_int_equal(token_check(&k, t, i, &kind, &id, &url), -1);
	}
	memcpy(copy, t, n + 1);
	copy[n] = 'A';
	copy[n + 1] = '\0';
	assert_int_equal(check(&k, copy, &kind, &id, &url), -1);
	free(copy);
	free(t);
}

/* A token made with another key, or an open token re-signed as a click by someone without the
 * key, is refused. */
static void
test_other_key_and_resigned(void **state)
{
	(void)state;
	struct token_key k = key_of('x'), other = key_of('y');
	enum token_kind kind;
	int64_t id;
	char *url;
	char *t = token_make(&other, TOKEN_OPEN, 5, NULL);

	assert_int_equal(check(&k, t, &kind, &id, &url), -1);
	free(t);
	/* The payload of an open token with the MAC of an unsubscribe token for the same id. */
	char *o = token_make(&k, TOKEN_OPEN, 5, NULL), *u = token_make(&k, TOKEN_UNSUBSCRIBE, 5, NULL);
	char mixed[256];
	snprintf(mixed, sizeof(mixed), "%.*s%s", (int)(strchr(o, '.') - o), o, strchr(u, '.'));
	assert_int_equal(check(&k, mixed, &kind, &id, &url), -1);
	free(o);
	free(u);
	assert_int_equal(check(&k, "", &kind, &id, &url), -1);
	assert_int_equal(check(&k, ".", &kind, &id, &url), -1);
}

/* After a rotation the previous key still checks; a key before that, or no previous key, does not. */
static void
test_previous_key(void **state)
{
	(void)state;
	struct token_key now = key_of('n'), before = key_of('b'), older = key_of('o');
	enum token_kind kind;
	int64_t id;
	char *url = NULL;
	char *t_now = token_make(&now, TOKEN_UNSUBSCRIBE, 5, NULL);
	char *t_before = token_make(&before, TOKEN_CLICK, 6, "https://example.org/x");
	char *t_older = token_make(&older, TOKEN_OPEN, 7, NULL);

	struct token_keys both = {.key = now, .previous = before, .has_previous = true};
	struct token_keys only_now = {.key = now};
	assert_int_equal(token_keys_check(&both, t_now, strlen(t_now), &kind, &id, &url), 0);
	assert_int_equal(kind, TOKEN_UNSUBSCRIBE);
	assert_int_equal(id, 5);
	assert_null(url);
	assert_int_equal(token_keys_check(&both, t_before, strlen(t_before), &kind, &id, &url), 0);
	assert_int_equal(kind, TOKEN_CLICK);
	assert_int_equal(id, 6);
	assert_string_equal(url, "https://example.org/x");
	free(url);
	url = NULL;
	assert_int_equal(token_keys_check(&only_now, t_before, strlen(t_before), &kind, &id, &url), -1);
	assert_int_equal(token_keys_check(&both, t_older, strlen(t_older), &kind, &id, &url), -1);
	assert_true(token_spelled(t_now, strlen(t_now)));
	assert_false(token_spelled("abc def", 7));
	assert_false(token_spelled("a.b.c", 5));
	assert_false(token_spelled(".ab", 3));
	assert_null(url);
	free(t_now);
	free(t_before);
	free(t_older);
}

static void
test_key_file(void **state)
{
	(void)state;
	const char *dir = getenv("TMPDIR") != NULL && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[512], err[600];
	struct token_key k;

	snprintf(path, sizeof(path), "%s/outreach-token-%s", dir, "XXXXXX"); /* mkstemp's template */
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, "short\n", 6), 6);
	assert_int_equal(token_key_load(path, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "needs 32"));
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(write(fd, "0123456789abcdef0123456789abcdef\n", 33), 33);
	close(fd);
	assert_int_equal(token_key_load(path, &k, err, sizeof(err)), 0);
	assert_int_equal(k.len, 32);

	/* Both keys of a rotation; the one that cannot be read is named, and nothing is kept. */
	struct token_keys keys;
	const char *failed = NULL;
	assert_int_equal(token_keys_load(path, "", &keys, &failed, err, sizeof(err)), 0);
	assert_false(keys.has_previous);
	assert_int_equal(token_keys_load(path, path, &keys, &failed, err, sizeof(err)), 0);
	assert_true(keys.has_previous);
	assert_memory_equal(keys.previous.bytes, keys.key.bytes, 32);
	assert_int_equal(token_keys_load(path, "/nonexistent/previous.key", &keys, &failed, err, sizeof(err)), -1);
	assert_string_equal(failed, "previous_token_key_file");
	assert_non_null(strstr(err, "campaigns.previous_token_key_file: /nonexistent/previous.key: "));
	assert_int_equal(keys.key.len, 0);
	assert_int_equal(token_keys_load("/nonexistent/token.key", path, &keys, &failed, err, sizeof(err)), -1);
	assert_string_equal(failed, "token_key_file");
	unlink(path);
	assert_int_equal(token_key_load(path, &k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_answers),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_refuses_bad_arguments),
		cmocka_unit_test(test_scheme_in_any_case),
		cmocka_unit_test(test_tampering),
		cmocka_unit_test(test_other_key_and_resigned),
		cmocka_unit_test(test_previous_key),
		cmocka_unit_test(test_key_file),
	};

	return cmocka_run_group_tests_name("token", tests, NULL, NULL);
}
