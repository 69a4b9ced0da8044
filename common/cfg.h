/* cfg: the configuration: one table of keys, an INI file, environment overrides, secrets from files. */
#ifndef OUTREACH_CFG_H
#define OUTREACH_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "common/cron.h"
#include "common/rds.h"
#include "common/util.h"

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL, CFG_ENUM, CFG_SECRET_FILE };

#define CFG_RELOADABLE 0x1 /* a SIGHUP applies a new value without a restart */
#define CFG_OPTIONAL 0x2   /* the empty string means "not set" */

enum smtp_tls { SMTP_TLS_NONE, SMTP_TLS_STARTTLS, SMTP_TLS_IMPLICIT };

/* One [schedule] entry: "name = CRON CLASS [ARGS]". */
struct cfg_periodic {
	char *name;
	char *expr;  /* the cron expression as written */
	struct cron cron;
	char *class;
	char *args;  /* JSON array text, validated for the class */
	char *queue; /* the class's default queue */
};

struct cfg {
	char *path; /* the file read, NULL when none */
	struct {
		char *url;
		char *password; /* secret: password_file or OUTREACH_DATABASE_PASSWORD */
		int connect_timeout;
		int statement_timeout;
	} database;
	struct {
		char *url;
		char *password;
		int timeout;
	} redis;
	struct {
		char *host;
		int port;
		int tls; /* enum smtp_tls */
		char *username;
		char *password;
		char *from;
		int timeout;
	} smtp;
	struct {
		char *listen;
		char *public_listen; /* empty: no public listener */
		int public_repeat_window; /* seconds; 0: every open and click is recorded */
	} http;
	struct {
		char *base_url;
		int request_interval_ms;
		int timeout;
		int attempts;
		int retry_backoff_ms;
		char *user_agent;
	} npi;
	struct {
		int level; /* enum log_level */
	} log;
	struct {
		int shutdown_timeout;
		int max_job_size;
		int max_recoveries;
		int dead_after;
		int idle_poll_ms;
	} worker;
	struct {
		int poll_interval_ms;
		int sweep_interval;
		int scan_interval;
	} scheduler;
	struct {
		int due_soon_days;
		int digest_hour;
		int default_contact_interval_days;
		int escalate_after_days;
		char *record_url;
		char *from_name;
		char *template_dir; /* absolute: a relative value is taken from the config file's folder */
	} alerts;
	struct {
		int sla_hours_low, sla_hours_normal, sla_hours_high, sla_hours_urgent;
		int escalate_after_hours;
	} cases;
	struct {
		char *public_url;     /* base of tracking and unsubscribe links, no trailing slash */
		char *token_key_file; /* empty: campaigns cannot be sent or tracked */
		char *previous_token_key_file; /* the key before the last rotation: still checked; empty: none */
		char *unsubscribe_mailto;
		int max_per_second;            /* 0: no limit */
		int max_per_domain_per_minute; /* 0: no limit */
		int scan_interval;             /* seconds between scans for due campaign steps */
	} campaigns;

	struct cfg_periodic *periodic; /* the [schedule] section */
	size_t nperiodic;

	/* Derived while validating. */
	struct rds_addr redis_addr;
	char **origin; /* per key: where its value came from, e.g. "outreach.conf:12" */
};

struct cfg_key {
	const char *section;
	const char *name;
	enum cfg_type type;
	size_t offset;
	const char *def; /* default as text; NULL for none */
	long min, max;   /* CFG_INT bounds */
	const char *const *choices; /* CFG_ENUM values, NULL-terminated; stored as the index */
	int flags;
	const char *help;
};

/* The table of every key, in the order the example file documents them. */
const struct cfg_key *cfg_keys(size_t *n);

/* Builds the configuration: defaults, then the file at path (when path is NULL the default file
 * is read if it exists), then OUTREACH_<SECTION>_<KEY> variables, then validation. Returns a new
 * cfg (caller frees with cfg_free) or NULL with "config: FILE:LINE: section.key: what" in err. */
struct cfg *cfg_load(const char *path, char *err, size_t errlen) MUSTCHECK;
void cfg_free(struct cfg *c);

/* log.level as an enum log_level. */
int cfg_log_level(const struct cfg *c);

/* The file read when no -c is given: $OUTREACH_CONFIG, else SYSCONFDIR/outreach/outreach.conf. */
const char *cfg_default_path(void);

/* Splits "host:port" or "[v6]:port"; -1 when malformed. */
int cfg_parse_listen(const char *s, char *host, size_t hostlen, int *port) MUSTCHECK;

/* Gives the keys whose new value needs a restart their running values again in fresh (and the
 * values derived from them), so that a reload moves the reloadable keys only; writes the names of
 * the keys it kept, comma-separated, into names (empty when none). */
void cfg_keep_restart_keys(const struct cfg *running, struct cfg *fresh, char *names, size_t len);

/* Vets a reloaded configuration before it takes the running one's place: -1 with err refuses it. */
typedef int (*cfg_check_fn)(const struct cfg *fresh, void *arg, char *err, size_t errlen);

/* A reload of running from path (NULL: the environment alone): loads it, keeps the keys that need a
 * restart (cfg_keep_restart_keys), then lets check (when not NULL) vet it, and warns naming the keys
 * kept. NULL with err when the file cannot be loaded or check refuses; running is never changed. */
struct cfg *cfg_reload(const struct cfg *running, const char *path, cfg_check_fn check, void *arg, char *err,
                       size_t errlen) MUSTCHECK;

/* Prints the effective configuration in INI form, secrets masked. */
void cfg_print(const struct cfg *c, FILE *out);

#endif
