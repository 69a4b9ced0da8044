/* cfg: the configuration: one table of keys, an INI file, environment overrides, secrets from files. */
#include "common/cfg.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/inifile.h"
#include "common/job.h"
#include "common/jobclass.h"
#include "common/log.h"
#include "common/msg.h"
#include "common/token.h"

#define OFF(f) offsetof(struct cfg, f)

static const char *const tls_choices[] = {"none", "starttls", "tls", NULL};
static const char *const level_choices[] = {"error", "warning", "notice", "info", "debug", NULL};

static const struct cfg_key keys[] = {
    {"database", "url", CFG_STR, OFF(database.url), "postgresql:///outreach", 0, 0, NULL, 0,
     "libpq connection string or URI; several hosts with target_session_attrs=read-write follow a failover"},
    {"database", "password_file", CFG_SECRET_FILE, OFF(database.password), NULL, 0, 0, NULL, CFG_OPTIONAL,
     "file holding the database password (or OUTREACH_DATABASE_PASSWORD)"},
    {"database", "connect_timeout", CFG_INT, OFF(database.connect_timeout), "5", 1, 300, NULL, 0,
     "seconds to wait for a connection"},
    {"database", "statement_timeout", CFG_INT, OFF(database.statement_timeout), "30000", 0, 3600000, NULL, 0,
     "milliseconds a statement may run (0: no limit)"},
    {"redis", "url", CFG_STR, OFF(redis.url), "redis://127.0.0.1:6379/0", 0, 0, NULL, 0,
     "redis://[user:password@]host:port/db or unix:///path/to/socket?db=N"},
    {"redis", "password_file", CFG_SECRET_FILE, OFF(redis.password), NULL, 0, 0, NULL, CFG_OPTIONAL,
     "file holding the Redis password (or OUTREACH_REDIS_PASSWORD)"},
    {"redis", "timeout", CFG_INT, OFF(redis.timeout), "5000", 10, 60000, NULL, 0,
     "milliseconds for a Redis connect or command"},
    {"smtp", "host", CFG_STR, OFF(smtp.host), "localhost", 0, 0, NULL, CFG_RELOADABLE, "mail relay host"},
    {"smtp", "port", CFG_INT, OFF(smtp.port), "25", 1, 65535, NULL, CFG_RELOADABLE, "mail relay port"},
    {"smtp", "tls", CFG_ENUM, OFF(smtp.tls), "none", 0, 0, tls_choices, CFG_RELOADABLE,
     "none, or starttls (required, the relay's certificate verified); tls (implicit TLS) is refused: libesmtp 1.1 "
     "cannot do it"},
    {"smtp", "username", CFG_STR, OFF(smtp.username), "", 0, 0, NULL, CFG_OPTIONAL | CFG_RELOADABLE,
     "SMTP AUTH user; empty: no AUTH"},
    {"smtp", "password_file", CFG_SECRET_FILE, OFF(smtp.password), NULL, 0, 0, NULL,
     CFG_OPTIONAL | CFG_RELOADABLE, "file holding the SMTP password (or OUTREACH_SMTP_PASSWORD)"},
    {"smtp", "from", CFG_STR, OFF(smtp.from), "outreach@localhost", 0, 0, NULL, CFG_RELOADABLE,
     "envelope sender and From address of every message"},
    {"smtp", "timeout", CFG_INT, OFF(smtp.timeout), "30", 1, 600, NULL, CFG_RELOADABLE,
     "seconds to wait for each SMTP reply"},
    {"http", "listen", CFG_STR, OFF(http.listen), "127.0.0.1:9464", 0, 0, NULL, 0,
     "host:port of the private listener (/healthz, /readyz, /metrics)"},
    {"http", "public_listen", CFG_STR, OFF(http.public_listen), "", 0, 0, NULL, CFG_OPTIONAL,
     "host:port of the public listener for campaign tracking and unsubscribe links; empty: none"},
    {"http", "public_repeat_window", CFG_INT, OFF(http.public_repeat_window), "60", 0, 3600, NULL, 0,
     "seconds during which an open of a message, or a click of the same link of it, seen again is answered but "
     "not recorded again (0: every one is recorded)"},
    {"npi", "base_url", CFG_STR, OFF(npi.base_url), "https://npiregistry.cms.hhs.gov/api/", 0, 0, NULL,
     CFG_RELOADABLE, "NPI Registry API endpoint"},
    {"npi", "request_interval_ms", CFG_INT, OFF(npi.request_interval_ms), "1000", 0, 60000, NULL, CFG_RELOADABLE,
     "milliseconds to pause between two requests to the NPI Registry, so the public service is not hammered"},
    {"npi", "timeout", CFG_INT, OFF(npi.timeout), "30", 1, 600, NULL, CFG_RELOADABLE,
     "seconds one NPI Registry request may take, connection included"},
    {"npi", "attempts", CFG_INT, OFF(npi.attempts), "4", 1, 20, NULL, CFG_RELOADABLE,
     "tries of one request that timed out, lost its connection or got HTTP 5xx or 429 before the job is retried"},
    {"npi", "retry_backoff_ms", CFG_INT, OFF(npi.retry_backoff_ms), "2000", 0, 600000, NULL, CFG_RELOADABLE,
     "pause before the second try of a failed request, doubling with each further try"},
    {"npi", "user_agent", CFG_STR, OFF(npi.user_agent), "outreach/" OUTREACH_VERSION " (physician referral management)",
     0, 0, NULL, CFG_RELOADABLE, "User-Agent header of NPI Registry requests; name your organization and a contact"},
    {"log", "level", CFG_ENUM, OFF(log.level), "info", 0, 0, level_choices, CFG_RELOADABLE,
     "error, warning, notice, info or debug"},
    {"worker", "shutdown_timeout", CFG_INT, OFF(worker.shutdown_timeout), "25", 1, 3600, NULL, CFG_RELOADABLE,
     "seconds a stopping worker lets its running jobs finish before handing them back"},
    {"worker", "max_job_size", CFG_INT, OFF(worker.max_job_size), "1048576", 1024, 67108864, NULL, CFG_RELOADABLE,
     "bytes; a larger payload goes to the dead set"},
    {"worker", "max_recoveries", CFG_INT, OFF(worker.max_recoveries), "3", 0, 100, NULL, CFG_RELOADABLE,
     "times a job is handed back from a dead worker before it goes to the dead set"},
    {"worker", "dead_after", CFG_INT, OFF(worker.dead_after), "30", 15, 600, NULL, CFG_RELOADABLE,
     "seconds without a heartbeat after which a worker counts as dead and its jobs are handed back"},
    {"worker", "idle_poll_ms", CFG_INT, OFF(worker.idle_poll_ms), "100", 10, 5000, NULL, CFG_RELOADABLE,
     "when several queues are all empty, how often an idle worker looks again"},
    {"scheduler", "poll_interval_ms", CFG_INT, OFF(scheduler.poll_interval_ms), "500", 50, 1000, NULL, CFG_RELOADABLE,
     "how often due jobs move from schedule and retry onto their queues"},
    {"scheduler", "sweep_interval", CFG_INT, OFF(scheduler.sweep_interval), "10", 1, 60, NULL, CFG_RELOADABLE,
     "seconds between looks for dead workers whose jobs must be handed back"},
    {"scheduler", "scan_interval", CFG_INT, OFF(scheduler.scan_interval), "60", 1, 3600, NULL, CFG_RELOADABLE,
     "seconds between follow-up scans"},
    {"alerts", "due_soon_days", CFG_INT, OFF(alerts.due_soon_days), "3", 0, 60, NULL, CFG_RELOADABLE,
     "a source due within this many days is listed as due soon"},
    {"alerts", "digest_hour", CFG_INT, OFF(alerts.digest_hour), "8", 0, 23, NULL, CFG_RELOADABLE,
     "local hour (in each coordinator's time zone) from which the daily digest is sent"},
    {"alerts", "default_contact_interval_days", CFG_INT, OFF(alerts.default_contact_interval_days), "30", 1, 3650,
     NULL, CFG_RELOADABLE, "days between contacts for sources without their own interval"},
    {"alerts", "escalate_after_days", CFG_INT, OFF(alerts.escalate_after_days), "14", 1, 365, NULL, CFG_RELOADABLE,
     "a source overdue by more than this many days is also listed in the manager's digest"},
    {"alerts", "record_url", CFG_STR, OFF(alerts.record_url), "https://crm.example.org/sources/{id}", 0, 0, NULL,
     CFG_RELOADABLE, "link to a source's record in the CRM; {id} is replaced by the source's id"},
    {"alerts", "from_name", CFG_STR, OFF(alerts.from_name), "Physician Outreach", 0, 0, NULL, CFG_RELOADABLE,
     "display name in the From header of alert emails"},
    {"alerts", "template_dir", CFG_STR, OFF(alerts.template_dir), SYSCONFDIR "/outreach/templates", 0, 0, NULL, 0,
     "folder of the email templates; a relative path is taken from the configuration file's folder"},
    {"cases", "sla_hours_low", CFG_INT, OFF(cases.sla_hours_low), "72", 1, 8760, NULL, CFG_RELOADABLE,
     "hours a low-priority case may stay open before its assignee is alerted"},
    {"cases", "sla_hours_normal", CFG_INT, OFF(cases.sla_hours_normal), "48", 1, 8760, NULL, CFG_RELOADABLE,
     "hours a normal-priority case may stay open before its assignee is alerted"},
    {"cases", "sla_hours_high", CFG_INT, OFF(cases.sla_hours_high), "24", 1, 8760, NULL, CFG_RELOADABLE,
     "hours a high-priority case may stay open before its assignee is alerted"},
    {"cases", "sla_hours_urgent", CFG_INT, OFF(cases.sla_hours_urgent), "4", 1, 8760, NULL, CFG_RELOADABLE,
     "hours an urgent case may stay open before its assignee is alerted"},
    {"cases", "escalate_after_hours", CFG_INT, OFF(cases.escalate_after_hours), "24", 1, 8760, NULL,
     CFG_RELOADABLE, "hours after the assignee's alert that the assignee's manager is alerted"},
    {"campaigns", "public_url", CFG_STR, OFF(campaigns.public_url), "http://127.0.0.1:9465", 0, 0, NULL,
     CFG_RELOADABLE, "base URL under which the public listener is reached from recipients' mail readers"},
    {"campaigns", "token_key_file", CFG_STR, OFF(campaigns.token_key_file), "", 0, 0, NULL, CFG_OPTIONAL,
     "file holding the key (32 bytes or more) that signs tracking and unsubscribe tokens; empty: no campaigns"},
    {"campaigns", "previous_token_key_file", CFG_STR, OFF(campaigns.previous_token_key_file), "", 0, 0, NULL,
     CFG_OPTIONAL | CFG_RELOADABLE,
     "file holding the key used before the last rotation: links it signed are still honoured; empty: none"},
    {"campaigns", "unsubscribe_mailto", CFG_STR, OFF(campaigns.unsubscribe_mailto), "", 0, 0, NULL,
     CFG_OPTIONAL | CFG_RELOADABLE, "address of the mailto: List-Unsubscribe; empty: smtp.from"},
    {"campaigns", "max_per_second", CFG_INT, OFF(campaigns.max_per_second), "0", 0, 1000000, NULL,
     CFG_RELOADABLE, "campaign messages per second across all workers; 0: no limit"},
    {"campaigns", "max_per_domain_per_minute", CFG_INT, OFF(campaigns.max_per_domain_per_minute), "0", 0,
     1000000, NULL, CFG_RELOADABLE, "campaign messages per recipient domain per minute across all workers; 0: no limit"},
    {"campaigns", "scan_interval", CFG_INT, OFF(campaigns.scan_interval), "5", 1, 3600, NULL, CFG_RELOADABLE,
     "seconds between outreachd's scans for campaign steps that are due"},
};

const struct cfg_key *
cfg_keys(size_t *n)
{
	*n = NELEM(keys);
	return keys;
}

int
cfg_log_level(const struct cfg *c)
{
	return log_level_parse(level_choices[c->log.level]);
}

const char *
cfg_default_path(void)
{
	const char *env = getenv("OUTREACH_CONFIG");

	return (env && *env) ? env : SYSCONFDIR "/outreach/outreach.conf";
}

/* Parsing state shared by the INI callbacks. */
struct load {
	struct cfg *c;
	const char *file;
	struct inifile in; /* the file being read: its line, its last [section]'s line */
	int seen_line[NELEM(keys)];
	char *err;
	size_t errlen;
	bool failed;
};

static void PRINTFLIKE(3, 4)
fail(struct load *l, const char *where, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (l->failed)
		return;
	l->failed = true;
	n = snprintf(l->err, l->errlen, "config: %s: ", where);
	if (n < 0 || (size_t)n >= l->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

static char **
slot_str(struct cfg *c, const struct cfg_key *k)
{
	return (char **)(void *)((char *)c + k->offset);
}

static int *
slot_int(struct cfg *c, const struct cfg_key *k)
{
	return (int *)(void *)((char *)c + k->offset);
}

static const struct cfg_key *
find_key(const char *section, const char *name)
{
	for (size_t i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static bool
known_section(const char *section)
{
	for (size_t i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].section, section) == 0)
			return true;
	return false;
}

/* Stores value into key k; where names the origin for messages. */
static bool
set_value(struct load *l, const struct cfg_key *k, const char *value, const char *where)
{
	struct cfg *c = l->c;
	long v;

	switch (k->type) {
	case CFG_STR:
		if (*value == '\0' && !(k->flags & CFG_OPTIONAL)) {
			fail(l, where, "%s.%s: must not be empty", k->section, k->name);
			return false;
		}
		free(*slot_str(c, k));
		*slot_str(c, k) = xstrdup(value);
		break;
	case CFG_INT:
		if (!util_parse_long(value, k->min, k->max, &v)) {
			long dummy;
			if (util_parse_long(value, -2147483647L, 2147483647L, &dummy))
				fail(l, where, "%s.%s: %s is out of range %ld..%ld", k->section, k->name, value,
				     k->min, k->max);
			else
				fail(l, where, "%s.%s: '%s' is not a whole number", k->section, k->name, value);
			return false;
		}
		*slot_int(c, k) = (int)v;
		break;
	case CFG_BOOL:
		if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 || strcmp(value, "on") == 0 ||
		    strcmp(value, "1") == 0)
			*slot_int(c, k) = 1;
		else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0 || strcmp(value, "off") == 0 ||
		         strcmp(value, "0") == 0)
			*slot_int(c, k) = 0;
		else {
			fail(l, where, "%s.%s: '%s' is not yes or no", k->section, k->name, value);
			return false;
		}
		break;
	case CFG_ENUM: {
		for (int i = 0; k->choices[i]; i++)
			if (strcmp(k->choices[i], value) == 0) {
				*slot_int(c, k) = i;
				goto stored;
			}
		char list[256] = "";
		for (int i = 0; k->choices[i]; i++) {
			if (i)
				strncat(list, ", ", sizeof(list) - strlen(list) - 1);
			strncat(list, k->choices[i], sizeof(list) - strlen(list) - 1);
		}
		fail(l, where, "%s.%s: '%s' is not one of %s", k->section, k->name, value, list);
		return false;
	}
	case CFG_SECRET_FILE: {
		free(*slot_str(c, k));
		*slot_str(c, k) = NULL;
		if (*value == '\0')
			break;
		size_t len;
		char *secret = util_read_file(value, &len);
		if (secret == NULL) {
			fail(l, where, "%s.%s: cannot read the secret file %s: %s", k->section, k->name, value,
			     strerror(errno));
			return false;
		}
		util_rtrim(secret);
		if (*secret == '\0') {
			free(secret);
			fail(l, where, "%s.%s: the secret file %s is empty", k->section, k->name, value);
			return false;
		}
		*slot_str(c, k) = secret;
		break;
	}
	}
stored:
	free(c->origin[k - keys]);
	c->origin[k - keys] = xstrdup(where);
	return true;
}

/* "[schedule] name = CRON CLASS [ARGS]": CRON is five fields or an @macro, ARGS a JSON array. */
static int
add_periodic(struct load *l, const char *name, const char *value, const char *where)
{
	struct cfg *c = l->c;
	char expr[256], msg[256];
	const char *p = value;
	int fields = value[0] == '@' ? 1 : 5;

	if (!job_queue_name_ok(name)) {
		fail(l, where, "schedule.%s: names are 1..64 letters, digits, _ - or .", name);
		return 0;
	}
	for (size_t i = 0; i < c->nperiodic; i++)
		if (strcmp(c->periodic[i].name, name) == 0) {
			fail(l, where, "schedule.%s: set twice", name);
			return 0;
		}
	for (int f = 0; f < fields; f++) {
		while (*p == ' ' || *p == '\t')
			p++;
		while (*p && *p != ' ' && *p != '\t')
			p++;
	}
	size_t elen = (size_t)(p - value);
	if (elen >= sizeof(expr)) {
		fail(l, where, "schedule.%s: expression too long", name);
		return 0;
	}
	memcpy(expr, value, elen);
	expr[elen] = '\0';
	struct cron cron;
	if (cron_parse(expr, &cron, msg, sizeof(msg)) == -1) {
		fail(l, where, "schedule.%s: %s (expected: CRON CLASS [JSON-ARGS], e.g. 5 * * * * MetricsJob)", name, msg);
		return 0;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	const char *cls = p;
	while (*p && *p != ' ' && *p != '\t')
		p++;
	char class[128];
	if (p == cls || (size_t)(p - cls) >= sizeof(class)) {
		fail(l, where, "schedule.%s: no job class after the cron expression", name);
		return 0;
	}
	memcpy(class, cls, (size_t)(p - cls));
	class[p - cls] = '\0';
	const struct jobclass *jc = jobclass_find(class);
	if (jc == NULL) {
		char names[512];
		jobclass_names(names, sizeof(names));
		fail(l, where, "schedule.%s: unknown job class %s (known: %s)", name, class, names);
		return 0;
	}
	while (*p == ' ' || *p == '\t')
		p++;
	json_error_t jerr;
	json_t *args = json_loads(*p ? p : "[]", 0, &jerr);
	if (args == NULL || !json_is_array(args)) {
		fail(l, where, "schedule.%s: arguments must be a JSON array%s%s", name, args ? "" : ": ",
		     args ? "" : jerr.text);
		json_decref(args);
		return 0;
	}
	if (jc->validate(args, msg, sizeof(msg)) == -1) {
		fail(l, where, "schedule.%s: %s", name, msg);
		json_decref(args);
		return 0;
	}
	c->periodic = xrealloc(c->periodic, (c->nperiodic + 1) * sizeof(*c->periodic));
	struct cfg_periodic *e = &c->periodic[c->nperiodic++];
	e->name = xstrdup(name);
	e->expr = xstrdup(expr);
	e->cron = cron;
	e->class = xstrdup(class);
	e->args = json_dumps(args, JSON_COMPACT);
	e->queue = xstrdup(jc->queue);
	json_decref(args);
	return 1;
}

/* A line libinih cut in pieces: named, rather than a piece's key or value. */
static int
long_line(struct load *l)
{
	char where[512], msg[64];

	snprintf(where, sizeof(where), "%s:%d", l->file, l->in.long_line);
	inifile_long_line_msg(&l->in, msg, sizeof(msg));
	fail(l, where, "%s", msg);
	return 0;
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct load *l = user;
	char where[512];
	const struct cfg_key *k;

	if (l->in.long_line)
		return long_line(l);
	if (*section == '\0') {
		snprintf(where, sizeof(where), "%s:%d", l->file, l->in.lineno);
		fail(l, where, "%s: key outside any [section]", name);
		return 0;
	}
	if (strcmp(section, "schedule") == 0) {
		snprintf(where, sizeof(where), "%s:%d", l->file, l->in.lineno);
		return add_periodic(l, name, value, where);
	}
	if (!known_section(section)) {
		snprintf(where, sizeof(where), "%s:%d", l->file, l->in.section_line);
		fail(l, where, "[%s]: unknown section", section);
		return 0;
	}
	snprintf(where, sizeof(where), "%s:%d", l->file, l->in.lineno);
	k = find_key(section, name);
	if (k == NULL) {
		if (strcmp(name, "password") == 0 && find_key(section, "password_file")) {
			char up[64];
			snprintf(up, sizeof(up), "%s", section);
			for (char *p = up; *p; p++)
				*p = (char)toupper((unsigned char)*p);
			fail(l, where,
			     "%s.password: secrets are not kept in the config file; use password_file or "
			     "OUTREACH_%s_PASSWORD",
			     section, up);
		} else
			fail(l, where, "%s.%s: unknown key", section, name);
		return 0;
	}
	size_t idx = (size_t)(k - keys);
	if (l->seen_line[idx]) {
		fail(l, where, "%s.%s: set twice (first at line %d)", section, name, l->seen_line[idx]);
		return 0;
	}
	l->seen_line[idx] = l->in.lineno;
	return set_value(l, k, value, where) ? 1 : 0;
}

static int
parse_file(struct load *l, const char *path)
{
	if (inifile_open(&l->in, path) == -1) {
		fail(l, path, "cannot open: %s", strerror(errno));
		return -1;
	}
	l->file = path;

	int rc = inifile_parse(&l->in, handler, l, 4096);
	inifile_close(&l->in);
	if (l->in.long_line)
		long_line(l);
	if (rc != 0 && !l->failed) {
		char where[512];
		snprintf(where, sizeof(where), "%s:%d", path, l->in.lineno);
		fail(l, where, "syntax error (expected [section] or key = value)");
	}
	return l->failed ? -1 : 0;
}

static void
env_name(const struct cfg_key *k, const char *suffix, char *buf, size_t len)
{
	snprintf(buf, len, "OUTREACH_%s_%s%s", k->section, k->name, suffix);
	for (char *p = buf; *p; p++)
		*p = (char)toupper((unsigned char)*p);
}

static int
apply_env(struct load *l)
{
	char name[128], where[160];

	for (size_t i = 0; i < NELEM(keys); i++) {
		const struct cfg_key *k = &keys[i];
		env_name(k, "", name, sizeof(name));
		const char *v = getenv(name);
		snprintf(where, sizeof(where), "environment %s", name);
		if (v && !set_value(l, k, v, where))
			return -1;
		/* A secret may also come straight from the environment: OUTREACH_SMTP_PASSWORD. */
		if (k->type == CFG_SECRET_FILE) {
			char direct[128];
			size_t n = strlen(name) - strlen("_FILE");
			snprintf(direct, sizeof(direct), "%.*s", (int)n, name);
			v = getenv(direct);
			if (v && *v) {
				free(*slot_str(l->c, k));
				*slot_str(l->c, k) = xstrdup(v);
				free(l->c->origin[i]);
				l->c->origin[i] = xasprintf("environment %s", direct);
			}
		}
	}
	return 0;
}

static bool
has_crlf(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

int
cfg_parse_listen(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	long v;

	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (rb == NULL || rb[1] != ':')
			return -1;
		if ((size_t)(rb - s - 1) >= hostlen)
			return -1;
		memcpy(host, s + 1, (size_t)(rb - s - 1));
		host[rb - s - 1] = '\0';
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || colon == s || (size_t)(colon - s) >= hostlen)
			return -1;
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		if (strchr(host, ':'))
			return -1;
	}
	if (!util_parse_long(colon + 1, 0, 65535, &v))
		return -1;
	*port = (int)v;
	return 0;
}

/* An http(s) URL that campaign links are built on ("BASE/u/TOKEN"): it goes into headers and HTML
 * attributes as it is, so only characters that need no quoting there, and no query or fragment.
 * The scheme is written in any case (RFC 3986 3.1) and kept in lower case; trailing slashes are
 * dropped. */
static bool
public_url_ok(char *url)
{
	size_t n = strlen(url);
	const char *rest = strncasecmp(url, "https://", 8) == 0  ? url + 8
	                   : strncasecmp(url, "http://", 7) == 0 ? url + 7
	                                                         : NULL;

	if (rest == NULL)
		return false;
	for (char *p = url; *p != ':'; p++)
		*p = (char)tolower((unsigned char)*p);
	while (url + n > rest && url[n - 1] == '/')
		url[--n] = '\0';
	if (*rest == '\0' || *rest == '/')
		return false;
	for (const char *p = rest; *p; p++)
		if (!isalnum((unsigned char)*p) && strchr("-._~:/@!$()*+,;=%[]", *p) == NULL)
			return false;
	return true;
}

static const char *
origin_of(const struct cfg *c, const char *section, const char *name)
{
	const struct cfg_key *k = find_key(section, name);
	const char *o = c->origin[k - keys];

	return o ? o : "default";
}

static int
validate(struct load *l)
{
	struct cfg *c = l->c;
	char msg[256], *pqerr = NULL;

	if (c->alerts.template_dir[0] != '/') {
		const char *o = origin_of(c, "alerts", "template_dir");
		char base[4096] = ".";
		/* Taken from the file's folder when the file set it, else from the current folder. */
		if (c->path && strncmp(o, "environment", 11) != 0) {
			const char *slash = strrchr(c->path, '/');
			if (slash)
				snprintf(base, sizeof(base), "%.*s", (int)(slash - c->path), c->path);
		}
		char *abs = xasprintf("%s/%s", base, c->alerts.template_dir);
		free(c->alerts.template_dir);
		c->alerts.template_dir = abs;
	}
	if (strstr(c->alerts.record_url, "{id}") == NULL || has_crlf(c->alerts.record_url)) {
		fail(l, origin_of(c, "alerts", "record_url"), "alerts.record_url: '%s' needs {id} where the source's id goes",
		     c->alerts.record_url);
		return -1;
	}
	const char *why = msg_display_name_problem(c->alerts.from_name);
	if (why != NULL) {
		fail(l, origin_of(c, "alerts", "from_name"), "alerts.from_name: %s (it is the From header's display name)",
		     why);
		return -1;
	}

	PQconninfoOption *opts = PQconninfoParse(c->database.url, &pqerr);
	if (opts == NULL) {
		if (pqerr)
			util_rtrim(pqerr);
		fail(l, origin_of(c, "database", "url"), "database.url: not a libpq connection string or URI: %s",
		     pqerr ? pqerr : "out of memory");
		PQfreemem(pqerr);
		return -1;
	}
	PQconninfoFree(opts);

	if (rds_parse_url(c->redis.url, &c->redis_addr, msg, sizeof(msg)) == -1) {
		fail(l, origin_of(c, "redis", "url"), "redis.url: %s", msg);
		return -1;
	}
	/* The addresses every message carries, held to the rules the messages apply (common/msg). */
	if (!msg_addr_valid(c->smtp.from)) {
		fail(l, origin_of(c, "smtp", "from"), "smtp.from: '%s' is not a plain address like outreach@example.org",
		     c->smtp.from);
		return -1;
	}
	if (*c->campaigns.unsubscribe_mailto && !msg_addr_valid(c->campaigns.unsubscribe_mailto)) {
		fail(l, origin_of(c, "campaigns", "unsubscribe_mailto"),
		     "campaigns.unsubscribe_mailto: '%s' is not a plain address like unsubscribe@example.org",
		     c->campaigns.unsubscribe_mailto);
		return -1;
	}
	if (!public_url_ok(c->campaigns.public_url)) {
		fail(l, origin_of(c, "campaigns", "public_url"),
		     "campaigns.public_url: '%s' is not an http(s) base URL like https://links.example.org (letters, "
		     "digits and -._~:/@!$()*+,;=%%[] only: no query, fragment, quotes or spaces)",
		     c->campaigns.public_url);
		return -1;
	}
	if (c->smtp.tls == SMTP_TLS_IMPLICIT) {
		fail(l, origin_of(c, "smtp", "tls"),
		     "smtp.tls: implicit TLS (port 465) is not available with this libesmtp; use starttls on port 587 "
		     "or 25");
		return -1;
	}
	if (has_crlf(c->smtp.host) || has_crlf(c->smtp.username)) {
		const char *key = has_crlf(c->smtp.host) ? "host" : "username";
		fail(l, origin_of(c, "smtp", key), "smtp.%s: must not contain line breaks", key);
		return -1;
	}
	char host[256];
	int port;
	if (cfg_parse_listen(c->http.listen, host, sizeof(host), &port) == -1) {
		fail(l, origin_of(c, "http", "listen"), "http.listen: '%s' is not host:port (e.g. 127.0.0.1:9464)",
		     c->http.listen);
		return -1;
	}
	if (*c->http.public_listen && cfg_parse_listen(c->http.public_listen, host, sizeof(host), &port) == -1) {
		fail(l, origin_of(c, "http", "public_listen"),
		     "http.public_listen: '%s' is not host:port (e.g. 127.0.0.1:9465)", c->http.public_listen);
		return -1;
	}
	if (*c->http.public_listen && !*c->campaigns.token_key_file) {
		fail(l, origin_of(c, "http", "public_listen"),
		     "http.public_listen is set but campaigns.token_key_file is not: the public listener checks the "
		     "links' tokens with that key");
		return -1;
	}
	if (*c->campaigns.token_key_file) {
		struct token_keys tk;
		const char *failed;
		if (token_keys_load(c->campaigns.token_key_file, c->campaigns.previous_token_key_file, &tk, &failed, msg,
		                    sizeof(msg)) == -1) {
			fail(l, origin_of(c, "campaigns", failed), "%s", msg);
			return -1;
		}
		token_keys_clear(&tk);
	} else if (*c->campaigns.previous_token_key_file) {
		fail(l, origin_of(c, "campaigns", "previous_token_key_file"),
		     "campaigns.previous_token_key_file is set but campaigns.token_key_file is not: the previous key only "
		     "checks links beside the current one");
		return -1;
	}
	if (strncasecmp(c->npi.base_url, "http://", 7) != 0 && strncasecmp(c->npi.base_url, "https://", 8) != 0) {
		fail(l, origin_of(c, "npi", "base_url"), "npi.base_url: '%s' is not an http(s) URL", c->npi.base_url);
		return -1;
	}
	return 0;
}

struct cfg *
cfg_load(const char *path, char *err, size_t errlen)
{
	struct cfg *c = xcalloc(1, sizeof(*c));
	struct load l = {.c = c, .err = err, .errlen = errlen};

	c->origin = xcalloc(NELEM(keys), sizeof(char *));
	for (size_t i = 0; i < NELEM(keys); i++) {
		if (keys[i].def && !set_value(&l, &keys[i], keys[i].def, "default"))
			goto fail;
		free(c->origin[i]);
		c->origin[i] = NULL;
	}
	if (path == NULL) {
		const char *def = cfg_default_path();
		if (access(def, F_OK) == 0)
			path = def;
	}
	if (path) {
		c->path = xstrdup(path);
		if (parse_file(&l, path) == -1)
			goto fail;
	}
	if (apply_env(&l) == -1 || validate(&l) == -1)
		goto fail;
	return c;
fail:
	cfg_free(c);
	return NULL;
}

void
cfg_free(struct cfg *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < NELEM(keys); i++) {
		if (keys[i].type == CFG_STR || keys[i].type == CFG_SECRET_FILE) {
			char *s = *slot_str(c, &keys[i]);
			if (s && keys[i].type == CFG_SECRET_FILE)
				explicit_bzero(s, strlen(s));
			free(s);
		}
		if (c->origin)
			free(c->origin[i]);
	}
	free(c->origin);
	for (size_t i = 0; i < c->nperiodic; i++) {
		free(c->periodic[i].name);
		free(c->periodic[i].expr);
		free(c->periodic[i].class);
		free(c->periodic[i].args);
		free(c->periodic[i].queue);
	}
	free(c->periodic);
	free(c->path);
	explicit_bzero(&c->redis_addr, sizeof(c->redis_addr));
	free(c);
}

static bool
key_equal(const struct cfg *a, const struct cfg *b, const struct cfg_key *k)
{
	if (k->type == CFG_STR || k->type == CFG_SECRET_FILE) {
		const char *x = *slot_str((struct cfg *)a, k), *y = *slot_str((struct cfg *)b, k);
		if (x == NULL || y == NULL)
			return x == y;
		return strcmp(x, y) == 0;
	}
	return *slot_int((struct cfg *)a, k) == *slot_int((struct cfg *)b, k);
}

void
cfg_keep_restart_keys(const struct cfg *running, struct cfg *fresh, char *names, size_t len)
{
	names[0] = '\0';
	for (size_t i = 0; i < NELEM(keys); i++) {
		const struct cfg_key *k = &keys[i];
		if ((k->flags & CFG_RELOADABLE) || key_equal(running, fresh, k))
			continue;
		size_t n = strlen(names);
		snprintf(names + n, len - n, "%s%s.%s", n ? ", " : "", k->section, k->name);
		if (k->type == CFG_STR || k->type == CFG_SECRET_FILE) {
			char **to = slot_str(fresh, k);
			const char *from = *slot_str((struct cfg *)running, k);
			if (*to && k->type == CFG_SECRET_FILE)
				explicit_bzero(*to, strlen(*to));
			free(*to);
			*to = from ? xstrdup(from) : NULL;
		} else {
			*slot_int(fresh, k) = *slot_int((struct cfg *)running, k);
		}
		free(fresh->origin[i]);
		fresh->origin[i] = running->origin[i] ? xstrdup(running->origin[i]) : NULL;
	}
	/* Derived from redis.url and redis.password_file, which need a restart. */
	fresh->redis_addr = running->redis_addr;
}

struct cfg *
cfg_reload(const struct cfg *running, const char *path, cfg_check_fn check, void *arg, char *err, size_t errlen)
{
	char restart[1024];
	struct cfg *fresh = cfg_load(path, err, errlen);

	if (fresh == NULL)
		return NULL;
	cfg_keep_restart_keys(running, fresh, restart, sizeof(restart));
	if (check != NULL && check(fresh, arg, err, errlen) == -1) {
		cfg_free(fresh);
		return NULL;
	}
	if (*restart)
		log_warnx("reload: %s changed; the new value takes effect after a restart", restart);
	return fresh;
}

void
cfg_print(const struct cfg *c, FILE *out)
{
	const char *section = "";

	for (size_t i = 0; i < NELEM(keys); i++) {
		const struct cfg_key *k = &keys[i];
		if (strcmp(section, k->section) != 0) {
			fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
			section = k->section;
		}
		switch (k->type) {
		case CFG_STR:
			fprintf(out, "%s = %s\n", k->name, *slot_str((struct cfg *)c, k));
			break;
		case CFG_SECRET_FILE:
			fprintf(out, "; %s: %s\n", k->name, *slot_str((struct cfg *)c, k) ? "(secret set)" : "(not set)");
			break;
		case CFG_INT:
			fprintf(out, "%s = %d\n", k->name, *slot_int((struct cfg *)c, k));
			break;
		case CFG_BOOL:
			fprintf(out, "%s = %s\n", k->name, *slot_int((struct cfg *)c, k) ? "yes" : "no");
			break;
		case CFG_ENUM:
			fprintf(out, "%s = %s\n", k->name, k->choices[*slot_int((struct cfg *)c, k)]);
			break;
		}
	}
	if (c->nperiodic)
		fprintf(out, "\n[schedule]\n");
	for (size_t i = 0; i < c->nperiodic; i++)
		fprintf(out, "%s = %s %s %s\n", c->periodic[i].name, c->periodic[i].expr, c->periodic[i].class,
		        c->periodic[i].args);
}
