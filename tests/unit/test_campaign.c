/* test_campaign: the link tracking of campaign messages: which links become click tokens, with
 * which URL inside, and what stays as it was; the running keys and their reload. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/token.h"
#include "workers/campaign.h"

#define PUB "https://t.example.org"

static struct token_key key;

/* The URL carried by the n-th (0-based) click link of s, which must be there (caller frees). */
static char *
nth_click(const char *s, int n)
{
	const char *p = s;

	for (int i = 0; i <= n; i++) {
		p = strstr(p, PUB "/c/");
		assert_non_null(p);
		p += strlen(PUB "/c/");
	}
	/* payload "." MAC: the MAC is 32 bytes, 43 base64url characters; a sentence's full stop may follow */
	size_t len = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
	assert_int_equal(p[len], '.');
	len += 1 + 43;
	enum token_kind kind;
	int64_t id;
	char *url = NULL;
	assert_int_equal(token_check(&key, p, len, &kind, &id, &url), 0);
	assert_int_equal(kind, TOKEN_CLICK);
	assert_int_equal(id, 77);
	return url;
}

static int
count(const char *s, const char *needle)
{
	int n = 0;

	for (const char *p = s; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

static void
test_html_links(void **state)
{
	(void)state;
	const char *html = "<p><a href=\"https://a.example/x?y=1&amp;z=2\">one</a> "
	                   "<A HREF = 'http://b.example/'>two</A> <a href=\"mailto:me@example.org\">mail</a> "
	                   "<a data-href=\"https://c.example/\">not a link</a> <a href=\"#top\">top</a> "
	                   "<img src=\"https://d.example/logo.png\"> https://e.example/ in text</p>";
	char *out = campaign_track_html(&key, PUB, 77, html);

	assert_int_equal(count(out, PUB "/c/"), 2);
	char *u = nth_click(out, 0);
	assert_string_equal(u, "https://a.example/x?y=1&z=2"); /* entities decoded */
	free(u);
	u = nth_click(out, 1);
	assert_string_equal(u, "http://b.example/");
	free(u);
	assert_non_null(strstr(out, "mailto:me@example.org"));
	assert_non_null(strstr(out, "data-href=\"https://c.example/\""));
	assert_non_null(strstr(out, "href=\"#top\""));
	assert_non_null(strstr(out, "src=\"https://d.example/logo.png\""));
	assert_non_null(strstr(out, "https://e.example/ in text"));
	assert_null(strstr(out, "a.example"));
	free(out);

	/* Numeric character references, as a hand-written template may hold them, are decoded as HTML
	 * reads them (the ";" optional, leading zeros allowed); one that names no character stays as
	 * written. */
	out = campaign_track_html(&key, PUB, 77,
	                          "<a href=\"https://f.example/?a=1&#38;b=2&#x26;c=&#X27;3&#39;&apos;"
	                          "&#38d=&#00000065;\">f</a><a href=\"https://g.example/caf&#233;/&#x1F600;/"
	                          "&#0;/&#xD800;/&#x110000;/&#\">g</a>");
	assert_int_equal(count(out, PUB "/c/"), 2);
	u = nth_click(out, 0);
	assert_string_equal(u, "https://f.example/?a=1&b=2&c='3''&d=A");
	free(u);
	u = nth_click(out, 1);
	assert_string_equal(u, "https://g.example/caf\xc3\xa9/\xf0\x9f\x98\x80/&#0;/&#xD800;/&#x110000;/&#");
	free(u);
	free(out);
}

static void
test_text_links(void **state)
{
	(void)state;
	const char *text = "See https://a.example/p?q=1&r=2. Or (http://b.example/x), or <https://c.example/>!\n"
	                   "ftp://d.example/ stays.";
	char *out = campaign_track_text(&key, PUB, 77, text);

	assert_int_equal(count(out, PUB "/c/"), 3);
	const char *want[] = {"https://a.example/p?q=1&r=2", "http://b.example/x", "https://c.example/"};
	for (int i = 0; i < 3; i++) {
		char *u = nth_click(out, i);
		assert_string_equal(u, want[i]);
		free(u);
	}
	assert_non_null(strstr(out, ". Or ("));
	assert_non_null(strstr(out, "), or <"));
	assert_non_null(strstr(out, ">!\nftp://d.example/ stays."));
	free(out);
}

static void
test_untokenizable_link_stays(void **state)
{
	(void)state;
	char *long_url = malloc(TOKEN_URL_MAX + 64);
	strcpy(long_url, "https://a.example/");
	memset(long_url + strlen(long_url), 'x', TOKEN_URL_MAX);
	long_url[TOKEN_URL_MAX + 20] = '\0';
	char *html = NULL;
	if (asprintf(&html, "<a href=\"%s\">long</a>", long_url) < 0)
		fail();
	char *out = campaign_track_html(&key, PUB, 77, html);
	assert_string_equal(out, html);
	free(out);
	free(html);
	free(long_url);
}

static void
write_key(const char *path, const char *bytes)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(bytes, f);
	assert_int_equal(fclose(f), 0);
}

static void
assert_keys(const char *signing, const char *previous)
{
	struct token_keys k;

	assert_true(campaign_keys_copy(&k));
	assert_int_equal(k.key.len, strlen(signing));
	assert_memory_equal(k.key.bytes, signing, strlen(signing));
	assert_true(k.has_previous);
	assert_int_equal(k.previous.len, strlen(previous));
	assert_memory_equal(k.previous.bytes, previous, strlen(previous));
	token_keys_clear(&k);
}

/* The keys a worker signs and checks with: read at start, read again by campaign_reload_keys from
 * the key file's start path (a new path takes a restart); a file that cannot be read then keeps the
 * running keys. */
static void
test_reload_keys(void **state)
{
	(void)state;
	char dir[] = "/tmp/outreach-keys-XXXXXX", path[3][64], err[600];
	const char *a = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", *b = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
	           *c = "cccccccccccccccccccccccccccccccccccccccc";

	assert_non_null(mkdtemp(dir));
	for (int i = 0; i < 3; i++)
		snprintf(path[i], sizeof(path[i]), "%s/%d", dir, i);
	write_key(path[0], a);
	write_key(path[1], b);
	write_key(path[2], c);
	setenv("OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE", path[0], 1);
	setenv("OUTREACH_CAMPAIGNS_PREVIOUS_TOKEN_KEY_FILE", path[1], 1);
	struct cfg *start = cfg_load("/dev/null", err, sizeof(err));
	assert_non_null(start);
	assert_int_equal(campaign_init(start, err, sizeof(err)), 0);
	assert_keys(a, b);

	/* Rotation: the previous file gets the running key, the key file a new one. */
	write_key(path[1], a);
	write_key(path[0], c);
	assert_int_equal(campaign_reload_keys(start, err, sizeof(err)), 0);
	assert_keys(c, a);

	/* A configuration naming another key file: the path needs a restart, so a reload keeps the
	 * start path (as the worker's SIGHUP does) and that file is read again. */
	setenv("OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE", path[2], 1);
	struct cfg *moved = cfg_load("/dev/null", err, sizeof(err));
	assert_non_null(moved);
	char kept[256];
	cfg_keep_restart_keys(start, moved, kept, sizeof(kept));
	assert_string_equal(kept, "campaigns.token_key_file");
	write_key(path[0], b);
	assert_int_equal(campaign_reload_keys(moved, err, sizeof(err)), 0);
	assert_keys(b, a);

	/* A key file gone short, or gone: refused with the file named, the running keys kept. */
	write_key(path[0], "short");
	assert_int_equal(campaign_reload_keys(moved, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "campaigns.token_key_file"));
	assert_keys(b, a);
	assert_int_equal(unlink(path[0]), 0);
	assert_int_equal(campaign_reload_keys(start, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path[0]));
	assert_keys(b, a);

	cfg_free(moved);
	cfg_free(start);
	unlink(path[1]);
	unlink(path[2]);
	rmdir(dir);
	unsetenv("OUTREACH_CAMPAIGNS_TOKEN_KEY_FILE");
	unsetenv("OUTREACH_CAMPAIGNS_PREVIOUS_TOKEN_KEY_FILE");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_html_links),
		cmocka_unit_test(test_text_links),
		cmocka_unit_test(test_untokenizable_link_stays),
		cmocka_unit_test(test_reload_keys),
	};

	memset(key.bytes, 'k', 32);
	key.len = 32;
	return cmocka_run_group_tests_name("campaign", tests, NULL, NULL);
}
