/* Unit tests of the configuration: the key table, the example file, errors, environment, secrets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "capture.h"

static char tmpdir[] = "/tmp/outreach-cfg-XXXXXX";

static const char *
write_file(const char *name, const char *text)
{
	static char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return path;
}

/* Loads text as a config file; returns the cfg or NULL with the message in err. */
static struct cfg *
load_text(const char *text, char *err, size_t errlen)
{
	return cfg_load(write_file("t.conf", text), err, errlen);
}

static int
clear_env(void **state)
{
	(void)state;
	for (char **e = environ; *e;) {
		if (strncmp(*e, "OUTREACH_", 9) == 0) {
			char name[128];
			size_t n = strcspn(*e, "=");
			snprintf(name, sizeof(name), "%.*s", (int)n, *e);
			unsetenv(name);
			e = environ;
		} else {
			e++;
		}
	}
	return 0;
}

static void
defaults_are_valid(void **state)
{
	char err[512];
	struct cfg *c = load_text("", err, sizeof(err));

	(void)state;
	assert_non_null(c);
	assert_string_equal(c->database.url, "postgresql:///outreach");
	assert_int_equal(c->smtp.port, 25);
	assert_int_equal(c->smtp.tls, SMTP_TLS_NONE);
	assert_string_equal(c->http.listen, "127.0.0.1:9464");
	assert_null(c->smtp.password);
	assert_string_equal(c->redis_addr.host, "127.0.0.1");
	cfg_free(c);
	cfg_free(NULL);
}

static void
every_key_in_example(void **state)
{
	size_t n;
	const struct cfg_key *keys = cfg_keys(&n);
	size_t len;
	char *text = util_read_file("config/outreach.conf", &len);

	(void)state;
	assert_non_null(text);
	for (size_t i = 0; i < n; i++) {
		/* The key must be documented inside its own section, set or commented out. */
		char header[64];
		snprintf(header, sizeof(header), "\n[%s]\n", keys[i].section);
		char *sec = strstr(text, header);
		if (sec == NULL) {
			fail_msg("config/outreach.conf has no [%s] section", keys[i].section);
			return;
		}
		char *next = strstr(sec + 1, "\n[");
		bool found = false;
		for (char *line = sec + 1; line && (next == NULL || line < next); line = strchr(line + 1, '\n')) {
			const char *p = line + 1;
			if (*p == '#' || *p == ';')
				p++;
			while (*p == ' ')
				p++;
			size_t kl = strlen(keys[i].name);
			if (strncmp(p, keys[i].name, kl) == 0 && (p[kl] == ' ' || p[kl] == '='))
				found = true;
		}
		if (!found)
			fail_msg("config/outreach.conf does not document %s.%s", keys[i].section, keys[i].name);
		assert_non_null(keys[i].help);
	}
	free(text);

	char err[512];
	struct cfg *c = cfg_load("config/outreach.conf", err, sizeof(err));
	if (c == NULL)
		fail_msg("the example config does not load: %s", err);
	cfg_free(c);
}

static void
expect_error(const char *text, const char *want)
{
	char err[512] = "";
	struct cfg *c = load_text(text, err, sizeof(err));

	if (c != NULL) {
		cfg_free(c);
		fail_msg("config accepted, expected an error containing '%s'", want);
	}
	if (strstr(err, want) == NULL)
		fail_msg("error '%s' does not contain '%s'", err, want);
}

static void
errors_name_file_line_key(void **state)
{
	char want[512];

	(void)state;
	snprintf(want, sizeof(want), "config: %s/t.conf:3: smtp.port: 70000 is out of range 1..65535", tmpdir);
	expect_error("[smtp]\nhost = mail\nport = 70000\n", want);
	snprintf(want, sizeof(want), "%s/t.conf:2: smtp.prot: unknown key", tmpdir);
	expect_error("[smtp]\nprot = 25\n", want);
	snprintf(want, sizeof(want), "%s/t.conf:4: [smpt]: unknown section", tmpdir);
	expect_error("[smtp]\nport = 25\n\n[smpt]\nhost = x\n", want);
	expect_error("[smtp]\nport = many\n", "smtp.port: 'many' is not a whole number");
	expect_error("[smtp]\ntls = ssl\n", "smtp.tls: 'ssl' is not one of none, starttls, tls");
	expect_error("[smtp]\nport = 25\nport = 26\n", "smtp.port: set twice (first at line 2)");
	expect_error("[smtp]\npassword = hunter2\n", "use password_file or OUTREACH_SMTP_PASSWORD");
	expect_error("[redis]\nurl = http://x\n", ":2: redis.url:");
	expect_error("[database]\nurl = postgresql://[bad\n", "database.url:");
	expect_error("[http]\nlisten = 9464\n", "http.listen: '9464' is not host:port");
	expect_error("[smtp]\nfrom = Outreach <o@x.org>\n", "smtp.from:");
	expect_error("this is not ini\n", ":1: syntax error");
	expect_error("[log]\nlevel = loud\n", "log.level: 'loud' is not one of error, warning");
}

/* Values that go into every message's headers and links are checked at load with the rules the
 * messages apply, naming file, line and key; before, these loaded and every email was refused. */
static void
header_values_checked_at_load(void **state)
{
	char want[512], err[512];
	struct cfg *c;

	(void)state;
	snprintf(want, sizeof(want), "config: %s/t.conf:3: smtp.from: 'outreach@example..org' is not a plain address",
	         tmpdir);
	expect_error("[smtp]\nhost = mail\nfrom = outreach@example..org\n", want);
	expect_error("[smtp]\nfrom = a@b@example.org\n", ":2: smtp.from: 'a@b@example.org' is not a plain address");
	expect_error("[smtp]\nfrom = o@example.org,x@example.org\n", ":2: smtp.from:");
	expect_error("[smtp]\nfrom = outreach@ex_ample.org\n", ":2: smtp.from:");
	expect_error("[campaigns]\nunsubscribe_mailto = unsubscribe\n",
	             ":2: campaigns.unsubscribe_mailto: 'unsubscribe' is not a plain address");
	expect_error("[campaigns]\nunsubscribe_mailto = u@example.org>, <https://elsewhere.example\n",
	             ":2: campaigns.unsubscribe_mailto:");
	expect_error("[campaigns]\npublic_url = links.example.org\n", ":2: campaigns.public_url: 'links.example.org'");
	expect_error("[campaigns]\npublic_url = https://links.example.org/\"><script>x</script>\n",
	             ":2: campaigns.public_url:");
	expect_error("[campaigns]\npublic_url = https://links.example.org/t?a=1\n", ":2: campaigns.public_url:");
	expect_error("[campaigns]\npublic_url = https:///x\n", ":2: campaigns.public_url:");
	expect_error("[alerts]\nfrom_name = Outreach \x1b[2J\n", ":2: alerts.from_name: contains a control character");
	expect_error("[alerts]\nfrom_name = Outreach \xff\n", ":2: alerts.from_name: is not valid UTF-8");
	expect_error("[alerts]\nrecord_url = https://crm.example.org/sources/\n", ":2: alerts.record_url:");

	/* A line libinih would cut in two: named as such, with its own number, not as the second piece's
	 * "key" (here "…?x", on line 3) nor with a value cut short. */
	char *text = xasprintf("[alerts]\nrecord_url = https://crm.example.org/%0*d{id}?x=1\n[smtp]\nport = 25\n", 4100, 0);
	snprintf(want, sizeof(want), "config: %s/t.conf:2: the line is longer than 4095 bytes", tmpdir);
	expect_error(text, want);
	free(text);

	setenv("OUTREACH_SMTP_USERNAME", "user\r\nAUTH", 1);
	expect_error("[smtp]\nhost = mail\n", "config: environment OUTREACH_SMTP_USERNAME: smtp.username: must not contain "
	                                     "line breaks");
	unsetenv("OUTREACH_SMTP_USERNAME");

	/* Good values load; a base URL's trailing slash is dropped, so links are BASE/u/TOKEN. */
	c = load_text("[smtp]\nfrom = outreach@mail.example.org\n[alerts]\nfrom_name = Réseau \"Santé\", Outreach\n"
	              "[campaigns]\npublic_url = https://links.example.org:8443/t/\nunsubscribe_mailto = u@example.org\n",
	              err, sizeof(err));
	if (c == NULL)
		fail_msg("good header values refused: %s", err);
	assert_string_equal(c->campaigns.public_url, "https://links.example.org:8443/t");
	cfg_free(c);
	/* A scheme is written in any case (RFC 3986 3.1); the links carry it in lower case. */
	c = load_text("[campaigns]\npublic_url = HTTPS://Links.example.org/T\n", err, sizeof(err));
	if (c == NULL)
		fail_msg("an upper-case scheme refused: %s", err);
	assert_string_equal(c->campaigns.public_url, "https://Links.example.org/T");
	cfg_free(c);
	c = load_text("[campaigns]\npublic_url = Http://links.example.org\n", err, sizeof(err));
	if (c == NULL)
		fail_msg("a mixed-case scheme refused: %s", err);
	assert_string_equal(c->campaigns.public_url, "http://links.example.org");
	cfg_free(c);
	expect_error("[campaigns]\npublic_url = HTTPX://links.example.org\n", ":2: campaigns.public_url:");
	c = load_text("[npi]\nbase_url = HTTPS://npiregistry.cms.hhs.gov/api/\n", err, sizeof(err));
	if (c == NULL)
		fail_msg("npi.base_url with an upper-case scheme refused: %s", err);
	cfg_free(c);
	expect_error("[npi]\nbase_url = ftp://npiregistry.cms.hhs.gov/api/\n", ":2: npi.base_url: 'ftp://");
}

/* A config of "[alerts]\n", a record_url line of n bytes and ending; *value is what record_url
 * holds when the line is read whole (the caller frees both). cfg reads with a buffer of 4096
 * bytes: 4095 and a NUL. */
static char *
record_url_line(int n, const char *ending, char **value)
{
	const char *head = "record_url = ", *url = "https://crm.example.org/";
	int pad = n - (int)strlen(head) - (int)strlen(url) - 4;

	*value = xasprintf("%s%0*d{id}", url, pad, 0);
	return xasprintf("[alerts]\n%s%s%s", head, *value, ending);
}

/* A last line of 4095 bytes without a newline is whole: fgets stops one byte short of the end of
 * the file, so the end of file is not seen yet; it was named as too long before. So were a line of
 * 4094 bytes ending in CRLF and one of 4095 ending in a newline, both whole too. A line libinih
 * does cut is still named, at the end of the file too; a CR counts as one of its bytes. */
static void
lines_up_to_the_limit(void **state)
{
	const struct {
		int n;
		const char *ending;
		bool whole;
	} cases[] = {
	        {4095, "", true},
	        {4095, "\n", true},
	        {4094, "\r\n", true},
	        {4094, "", true},
	        {4095, "\n[smtp]\nport = 25\n", true},
	        {4096, "", false},
	        {4096, "\n", false},
	        {4095, "\r\n", false},
	        {5000, "", false},
	};
	char want[512], err[512];

	(void)state;
	snprintf(want, sizeof(want), "config: %s/t.conf:2: the line is longer than 4095 bytes", tmpdir);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *value, *text = record_url_line(cases[i].n, cases[i].ending, &value);
		struct cfg *c = load_text(text, err, sizeof(err));
		if (cases[i].whole) {
			if (c == NULL)
				fail_msg("a line of %d bytes ending in '%s' refused: %s", cases[i].n, cases[i].ending, err);
			assert_string_equal(c->alerts.record_url, value);
		} else {
			if (c != NULL)
				fail_msg("a line of %d bytes ending in '%s' accepted", cases[i].n, cases[i].ending);
			assert_string_equal(err, want);
		}
		cfg_free(c);
		free(value);
		free(text);
	}
}

static void
missing_file(void **state)
{
	char err[512];
	struct cfg *c = cfg_load("/nonexistent/outreach.conf", err, sizeof(err));

	(void)state;
	assert_null(c);
	assert_non_null(strstr(err, "/nonexistent/outreach.conf: cannot open"));
}

static void
secret_files(void **state)
{
	char err[512], text[512];
	const char *pw = write_file("pw", "s3cret\n");
	char pwpath[256];
	struct cfg *c;

	(void)state;
	util_strlcpy(pwpath, pw, sizeof(pwpath));
	snprintf(text, sizeof(text), "[smtp]\npassword_file = %s\n", pwpath);
	c = load_text(text, err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->smtp.password, "s3cret");
	cfg_free(c);

	c = load_text("[smtp]\npassword_file = /nonexistent/smtp-password\n", err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, ":2: smtp.password_file: cannot read the secret file /nonexistent/smtp-password"));

	/* The secret straight from the environment. */
	setenv("OUTREACH_SMTP_PASSWORD", "fromenv", 1);
	c = load_text("", err, sizeof(err));
	assert_non_null(c);
	assert_string_equal(c->smtp.password, "fromenv");
	cfg_free(c);
	unsetenv("OUTREACH_SMTP_PASSWORD");

	/* The printed configuration never shows a secret. */
	c = load_text(text, err, sizeof(err));
	assert_non_null(c);
	char *buf = NULL;
	size_t blen = 0;
	FILE *mem = open_memstream(&buf, &blen);
	cfg_print(c, mem);
	fclose(mem);
	assert_null(strstr(buf, "s3cret"));
	assert_non_null(strstr(buf, "(secret set)"));
	free(buf);
	cfg_free(c);
}

static void
env_overrides(void **state)
{
	char err[512];
	struct cfg *c;

	(void)state;
	setenv("OUTREACH_DATABASE_URL", "postgresql://db1,db2/outreach?target_session_attrs=read-write", 1);
	setenv("OUTREACH_SMTP_PORT", "2525", 1);
	setenv("OUTREACH_REDIS_URL", "unix:///run/redis/redis.sock?db=2", 1);
	c = load_text("[smtp]\nport = 25\n", err, sizeof(err));
	assert_non_null(c);
	assert_int_equal(c->smtp.port, 2525);
	assert_string_equal(c->database.url, "postgresql://db1,db2/outreach?target_session_attrs=read-write");
	assert_true(c->redis_addr.is_unix);
	assert_int_equal(c->redis_addr.db, 2);
	size_t nkeys;
	const struct cfg_key *keys = cfg_keys(&nkeys);
	for (size_t i = 0; i < nkeys; i++)
		if (strcmp(keys[i].section, "smtp") == 0 && strcmp(keys[i].name, "port") == 0)
			assert_string_equal(c->origin[i], "environment OUTREACH_SMTP_PORT");
	cfg_free(c);

	setenv("OUTREACH_SMTP_PORT", "0", 1);
	c = load_text("", err, sizeof(err));
	assert_null(c);
	assert_non_null(strstr(err, "config: environment OUTREACH_SMTP_PORT: smtp.port: 0 is out of range 1..65535"));
	clear_env(NULL);
}

static void
reload_restart_keys(void **state)
{
	char err[512], keys[256];
	struct cfg *a = load_text("[http]\nlisten = 127.0.0.1:1\n[smtp]\nport = 25\n", err, sizeof(err));
	struct cfg *b = load_text("[http]\nlisten = 127.0.0.1:2\n[smtp]\nport = 26\n[redis]\n"
	                          "url = redis://127.0.0.1:6380/2\n[worker]\nshutdown_timeout = 5\n"
	                          "[database]\nstatement_timeout = 5000\n",
	                          err, sizeof(err));

	(void)state;
	assert_non_null(a);
	assert_non_null(b);
	/* A reload keeps the keys that need a restart at their running values, with what derives from
	 * them, names them, and moves the rest (smtp.port and worker.shutdown_timeout are reloadable). */
	cfg_keep_restart_keys(a, b, keys, sizeof(keys));
	assert_string_equal(keys, "database.statement_timeout, redis.url, http.listen");
	assert_string_equal(b->http.listen, "127.0.0.1:1");
	assert_string_equal(b->redis.url, a->redis.url);
	assert_int_equal(b->redis_addr.port, 6379);
	assert_int_equal(b->redis_addr.db, 0);
	assert_int_equal(b->database.statement_timeout, 30000);
	assert_int_equal(b->worker.shutdown_timeout, 5);
	assert_int_equal(b->smtp.port, 26);
	cfg_keep_restart_keys(a, b, keys, sizeof(keys));
	assert_string_equal(keys, "");
	cfg_free(a);
	cfg_free(b);
}

/* A check for cfg_reload: records what it saw in *arg, refuses when the reloaded smtp.port is 27. */
static int
check_port(const struct cfg *fresh, void *arg, char *err, size_t errlen)
{
	*(const struct cfg **)arg = fresh;
	if (fresh->smtp.port == 27) {
		snprintf(err, errlen, "port 27 refused");
		return -1;
	}
	return 0;
}

struct reload_call {
	const struct cfg *running;
	const char *path;
	const struct cfg **seen;
	char *err;
	size_t errlen;
	struct cfg *result;
};

static void
call_reload(void *arg)
{
	struct reload_call *c = arg;

	c->result = cfg_reload(c->running, c->path, check_port, c->seen, c->err, c->errlen);
}

/* cfg_reload of a over path, with what it logged on stderr in logged. */
static struct cfg *
reload_logged(const struct cfg *a, const char *path, const struct cfg **seen, char *err, size_t errlen,
              char *logged, size_t loglen)
{
	struct reload_call c = {a, path, seen, err, errlen, NULL};

	capture_stderr(call_reload, &c, logged, loglen);
	return c.result;
}

static void
reload_checks_then_swaps(void **state)
{
	char err[512];
	const struct cfg *seen = NULL;
	struct cfg *a = load_text("[http]\nlisten = 127.0.0.1:1\n[smtp]\nport = 25\n", err, sizeof(err));

	(void)state;
	assert_non_null(a);
	/* The check sees the reloaded configuration with the restart-only keys already kept. */
	char logged[4096];
	const char *path = write_file("t.conf", "[http]\nlisten = 127.0.0.1:2\n[smtp]\nport = 26\n");
	struct cfg *b = reload_logged(a, path, &seen, err, sizeof(err), logged, sizeof(logged));
	assert_non_null(b);
	assert_ptr_equal(seen, b);
	assert_string_equal(b->http.listen, "127.0.0.1:1");
	assert_int_equal(b->smtp.port, 26);
	/* and it warns, once, naming the key kept */
	assert_non_null(strstr(logged, "reload: http.listen changed; the new value takes effect after a restart\n"));
	assert_null(strstr(strstr(logged, "takes effect") + 1, "takes effect"));
	cfg_free(b);
	/* Refused by the check: NULL with its reason, the running configuration untouched, and no
	 * warning about a configuration that does not take effect at all. */
	path = write_file("t.conf", "[http]\nlisten = 127.0.0.1:2\n[smtp]\nport = 27\n");
	assert_null(reload_logged(a, path, &seen, err, sizeof(err), logged, sizeof(logged)));
	assert_string_equal(err, "port 27 refused");
	assert_string_equal(logged, "");
	/* A file that does not parse: NULL with the file and line named, the check never called. */
	seen = NULL;
	path = write_file("t.conf", "[smtp]\nport = many\n");
	assert_null(cfg_reload(a, path, check_port, &seen, err, sizeof(err)));
	assert_null(seen);
	assert_non_null(strstr(err, "t.conf:2"));
	/* No check at all. */
	path = write_file("t.conf", "[smtp]\nport = 28\n");
	b = cfg_reload(a, path, NULL, NULL, err, sizeof(err));
	assert_non_null(b);
	assert_int_equal(b->smtp.port, 28);
	assert_int_equal(a->smtp.port, 25);
	assert_string_equal(a->http.listen, "127.0.0.1:1");
	cfg_free(b);
	cfg_free(a);
}

static void
listen_parsing(void **state)
{
	char host[64];
	int port;

	(void)state;
	assert_int_equal(cfg_parse_listen("127.0.0.1:9464", host, sizeof(host), &port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_int_equal(port, 9464);
	assert_int_equal(cfg_parse_listen("[::1]:80", host, sizeof(host), &port), 0);
	assert_string_equal(host, "::1");
	assert_int_equal(cfg_parse_listen("::1:80", host, sizeof(host), &port), -1);
	assert_int_equal(cfg_parse_listen("host:99999", host, sizeof(host), &port), -1);
	assert_int_equal(cfg_parse_listen(":80", host, sizeof(host), &port), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup(defaults_are_valid, clear_env),
	    cmocka_unit_test_setup(every_key_in_example, clear_env),
	    cmocka_unit_test_setup(errors_name_file_line_key, clear_env),
	    cmocka_unit_test_setup(header_values_checked_at_load, clear_env),
	    cmocka_unit_test_setup(lines_up_to_the_limit, clear_env),
	    cmocka_unit_test_setup(missing_file, clear_env),
	    cmocka_unit_test_setup(secret_files, clear_env),
	    cmocka_unit_test_setup(env_overrides, clear_env),
	    cmocka_unit_test_setup(reload_restart_keys, clear_env),
	    cmocka_unit_test_setup(reload_checks_then_swaps, clear_env),
	    cmocka_unit_test(listen_parsing),
	};
	int rc;

	if (mkdtemp(tmpdir) == NULL)
		return 1;
	rc = cmocka_run_group_tests_name("cfg", tests, NULL, NULL);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	if (system(cmd) != 0)
		rc = rc ? rc : 1;
	return rc;
}
