/* outreachd: the scheduler daemon: one libevent loop that decides when work is due and queues it. */
#include <event2/event.h>
#include <getopt.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/boot.h"
#include "common/log.h"
#include "common/sdnotify.h"
#include "common/token.h"
#include "common/util.h"
#include "daemon/apg.h"
#include "daemon/aredis.h"
#include "daemon/figures.h"
#include "daemon/leader.h"
#include "daemon/maint.h"
#include "daemon/periodic.h"
#include "daemon/public.h"
#include "daemon/qstats.h"
#include "daemon/campscan.h"
#include "daemon/scan.h"
#include "daemon/web.h"

static const char usage_text[] =
    "usage: outreachd [-c FILE] [--check-config]\n"
    "\n"
    "The outreach scheduler: finds due follow-ups and periodic work, moves scheduled and retried jobs\n"
    "onto their queues and hands back the jobs of dead workers. Runs in the foreground (systemd\n"
    "Type=notify); several may run, one leads.\n"
    "\n"
    "  -c, --config FILE   configuration file (default: $OUTREACH_CONFIG or " SYSCONFDIR
    "/outreach/outreach.conf)\n"
    "      --check-config  validate the configuration and exit\n"
    "  -h, --help          show this help\n"
    "  -V, --version       show the version\n"
    "\n"
    "Signals: SIGTERM stops cleanly (a second one at once), SIGHUP reloads the configuration.\n";

struct daemon {
	struct event_base *base;
	struct cfg *cfg;
	const char *cfg_path;
	char identity[320];
	struct apg *pg;
	struct ar *ar;
	struct leader *leader;
	struct maint *maint;
	struct scan *scan;
	struct campscan *campscan;
	struct periodic *periodic;
	struct qstats *qstats;
	struct figures *figures;
	struct web *web;
	struct public *public; /* NULL without http.public_listen */
	struct event *ev_watchdog;
	bool announced;
	int terms;
	double started_at;
	unsigned long reloads;
};

static void
status(struct daemon *d)
{
	sdn_notifyf("STATUS=%s; PostgreSQL %s, Redis %s", leader_is(d->leader) ? "leader: scheduling" : "standby",
	            apg_schema_ok(d->pg) ? "up" : "down", ar_ready(d->ar) ? "up" : "down");
}

static void
announce_ready(struct daemon *d)
{
	status(d);
	if (d->announced || !apg_schema_ok(d->pg) || !ar_ready(d->ar))
		return;
	d->announced = true;
	log_notice("outreachd %s ready (%s)", OUTREACH_VERSION, d->identity);
	sdn_notify("READY=1");
}

static void
on_settings(PGresult *res, const char *errmsg, void *priv)
{
	(void)priv;
	if (res == NULL)
		log_warnx("keeping settings.default_contact_interval_days in step: %s", errmsg);
}

/* The database derives due times from the default interval: keep it equal to the configuration. */
static void
sync_settings(struct daemon *d)
{
	char days[16];

	if (!leader_is(d->leader) || !apg_schema_ok(d->pg))
		return;
	snprintf(days, sizeof(days), "%d", d->cfg->alerts.default_contact_interval_days);
	const char *params[] = {days};
	(void)apg_query(d->pg,
	                "UPDATE settings SET value = $1 WHERE name = 'default_contact_interval_days' AND value <> $1", 1,
	                params, on_settings, NULL);
}

static void
on_leading(bool leading, void *arg)
{
	struct daemon *d = arg;

	maint_enable(d->maint, leading);
	scan_enable(d->scan, leading);
	campscan_enable(d->campscan, leading);
	periodic_enable(d->periodic, leading);
	if (leading)
		sync_settings(d);
	status(d);
}

static void
on_pg_up(void *arg)
{
	struct daemon *d = arg;

	sync_settings(d);
	announce_ready(d);
}

static void
on_policy(redisReply *r, void *priv)
{
	(void)priv;
	/* CONFIG GET answers [name, value]; a managed Redis may refuse CONFIG altogether. */
	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 && strcmp(r->element[1]->str, "noeviction") != 0)
		log_warnx("redis: maxmemory-policy is %s, not noeviction: under memory pressure Redis may evict "
		          "queued jobs; set maxmemory-policy noeviction",
		          r->element[1]->str);
}

static void
on_redis_up(void *arg)
{
	struct daemon *d = arg;

	(void)ar_command(d->ar, on_policy, NULL, "CONFIG GET maxmemory-policy");
	announce_ready(d);
}

static bool
ready(char *why, size_t len, void *arg)
{
	struct daemon *d = arg;

	if (!apg_ready(d->pg))
		snprintf(why, len, "not connected to PostgreSQL");
	else if (!apg_schema_ok(d->pg))
		snprintf(why, len, "the database schema is behind this build: run `outreachctl migrate`");
	else if (!ar_ready(d->ar))
		snprintf(why, len, "not connected to Redis");
	else
		return true;
	return false;
}

static void
metrics(FILE *out, void *arg)
{
	struct daemon *d = arg;
	const struct maint_stats *ms = maint_stats(d->maint);

	fprintf(out, "# HELP outreach_build_info The running outreachd.\n# TYPE outreach_build_info gauge\n"
	             "outreach_build_info{version=\"%s\"} 1\n",
	        OUTREACH_VERSION);
	fprintf(out, "# HELP outreach_leader Whether this outreachd is the leader.\n# TYPE outreach_leader gauge\n"
	             "outreach_leader %d\n",
	        leader_is(d->leader) ? 1 : 0);
	fprintf(out, "# HELP outreach_leader_changes_total Times this outreachd gained or lost leadership.\n"
	             "# TYPE outreach_leader_changes_total counter\noutreach_leader_changes_total %lu\n",
	        leader_changes(d->leader));
	fprintf(out, "# HELP outreach_up Whether a backend is connected (and the schema current).\n"
	             "# TYPE outreach_up gauge\noutreach_up{backend=\"postgresql\"} %d\noutreach_up{backend=\"redis\"} %d\n",
	        apg_schema_ok(d->pg) ? 1 : 0, ar_ready(d->ar) ? 1 : 0);
	fprintf(out, "# HELP outreach_reconnects_total Reconnection attempts, by backend.\n"
	             "# TYPE outreach_reconnects_total counter\noutreach_reconnects_total{backend=\"postgresql\"} %lu\n"
	             "outreach_reconnects_total{backend=\"redis\"} %lu\n",
	        apg_reconnects(d->pg), ar_reconnects(d->ar));
	fprintf(out, "# HELP outreach_jobs_moved_total Jobs moved by queue maintenance, by kind.\n"
	             "# TYPE outreach_jobs_moved_total counter\n"
	             "outreach_jobs_moved_total{kind=\"due\"} %lu\noutreach_jobs_moved_total{kind=\"recovered\"} %lu\n"
	             "outreach_jobs_moved_total{kind=\"dead\"} %lu\n",
	        ms->polled, ms->recovered, ms->killed);
	fprintf(out, "# HELP outreach_jobs_refused Jobs Redis refused to move in the last pass (they stay where they are), by kind.\n"
	             "# TYPE outreach_jobs_refused gauge\n"
	             "outreach_jobs_refused{kind=\"due\"} %zu\noutreach_jobs_refused{kind=\"recovered\"} %zu\n",
	        ms->due_refused, ms->sweep_refused);
	fprintf(out, "# HELP outreach_maint_passes_total Passes of queue maintenance, and pages of due entries read.\n"
	             "# TYPE outreach_maint_passes_total counter\n"
	             "outreach_maint_passes_total{kind=\"poll\"} %lu\noutreach_maint_passes_total{kind=\"poll_page\"} %lu\n"
	             "outreach_maint_passes_total{kind=\"sweep\"} %lu\n",
	        ms->polls, ms->pages, ms->sweeps);
	fprintf(out, "# HELP outreach_config_reloads_total Successful configuration reloads.\n"
	             "# TYPE outreach_config_reloads_total counter\noutreach_config_reloads_total %lu\n",
	        d->reloads);
	fprintf(out, "# HELP outreach_start_time_seconds When this outreachd started.\n"
	             "# TYPE outreach_start_time_seconds gauge\noutreach_start_time_seconds %.3f\n",
	        d->started_at);
	scan_metrics(d->scan, out);
	campscan_metrics(d->campscan, out);
	periodic_metrics(d->periodic, out);
	qstats_metrics(d->qstats, out);
	public_metrics(d->public, out);
	figures_metrics(d->figures, out);
}

static void
on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	/* Sent from the loop itself: if the loop stalls, systemd notices. */
	sdn_notify("WATCHDOG=1");
}

static void
on_term(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct timeval grace = {0, 300 * 1000};

	(void)what;
	if (++d->terms == 1) {
		log_notice("received %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
		sdn_notify("STOPPING=1\nSTATUS=stopping");
		/* Hand leadership over at once; give the release a moment to reach Redis. */
		leader_resign(d->leader);
		maint_enable(d->maint, false);
		scan_enable(d->scan, false);
		campscan_enable(d->campscan, false);
		periodic_enable(d->periodic, false);
		event_base_loopexit(d->base, &grace);
	} else {
		log_notice("second stop signal: exiting now");
		event_base_loopbreak(d->base);
	}
}

/* A rotated key file takes effect at a reload: the check of cfg_reload reads the keys of fresh
 * (campaigns.token_key_file, the path read at start, which a reload keeps, and
 * campaigns.previous_token_key_file) into arg, a struct token_keys; a file that cannot be read refuses
 * the whole reload, as in the workers. */
static int
reload_token_keys(const struct cfg *fresh, void *arg, char *err, size_t errlen)
{
	const char *failed;

	return token_keys_load(fresh->campaigns.token_key_file, fresh->campaigns.previous_token_key_file, arg,
	                       &failed, err, errlen);
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	char err[1024];

	(void)sig, (void)what;
	sdn_notifyf("RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading", (long long)util_mono_ms() * 1000);
	struct token_keys keys = {0};
	struct cfg *fresh =
	    cfg_reload(d->cfg, d->cfg_path, d->public ? reload_token_keys : NULL, &keys, err, sizeof(err));
	if (fresh == NULL) {
		log_errorx("reload failed, keeping the running configuration: %s", err);
	} else {
		apg_set_cfg(d->pg, fresh);
		ar_set_cfg(d->ar, fresh);
		cfg_free(d->cfg);
		d->cfg = fresh;
		d->reloads++;
		log_set_level((enum log_level)cfg_log_level(d->cfg));
		log_notice("configuration reloaded from %s", d->cfg->path ? d->cfg->path : "the environment");
		sync_settings(d);
		public_set_key(d->public, &keys);
	}
	token_keys_clear(&keys);
	sdn_notify("READY=1");
	status(d);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	struct daemon d = {0};
	bool check = false;
	char err[1024], host[256], nonce_hex[13];
	unsigned char nonce[6];
	int ch;

	log_init("outreachd");
	while ((ch = getopt_long(argc, argv, "c:hV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			d.cfg_path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			boot_version("outreachd");
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outreachd: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	d.cfg = boot_config(d.cfg_path, check);
	signal(SIGPIPE, SIG_IGN);
	d.started_at = util_now();
	if (gethostname(host, sizeof(host)) == -1)
		util_strlcpy(host, "localhost", sizeof(host));
	util_random(nonce, sizeof(nonce));
	util_hex(nonce, sizeof(nonce), nonce_hex);
	snprintf(d.identity, sizeof(d.identity), "%s:%d:%s", host, (int)getpid(), nonce_hex);

	d.base = event_base_new();
	if (d.base == NULL)
		fatalx("cannot create the event loop");
	struct event *ev_term = evsignal_new(d.base, SIGTERM, on_term, &d);
	struct event *ev_int = evsignal_new(d.base, SIGINT, on_term, &d);
	struct event *ev_hup = evsignal_new(d.base, SIGHUP, on_hup, &d);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	evsignal_add(ev_hup, NULL);

	const struct cfg *const *cfgp = (const struct cfg *const *)&d.cfg;
	d.web = web_new(d.base, d.cfg->http.listen, metrics, ready, &d, err, sizeof(err));
	if (d.web == NULL)
		fatalx("%s", err);
	sdn_notify("STATUS=connecting to PostgreSQL and Redis");
	d.pg = apg_new(d.base, d.cfg, on_pg_up, &d);
	d.ar = ar_new(d.base, d.cfg, on_redis_up, &d);
	d.maint = maint_new(d.base, d.ar, cfgp);
	d.scan = scan_new(d.base, d.pg, d.ar, cfgp);
	d.campscan = campscan_new(d.base, d.pg, d.ar, cfgp);
	d.periodic = periodic_new(d.base, d.ar, cfgp);
	d.qstats = qstats_new(d.base, d.ar);
	d.figures = figures_new(d.base, d.pg);
	d.leader = leader_new(d.base, d.ar, d.identity, on_leading, &d);
	if (*d.cfg->http.public_listen) {
		struct token_keys keys;
		const char *failed;
		if (token_keys_load(d.cfg->campaigns.token_key_file, d.cfg->campaigns.previous_token_key_file, &keys, &failed, err,
		                    sizeof(err)) == -1)
			fatalx("%s", err);
		d.public = public_new(d.base, d.cfg->http.public_listen, d.cfg->http.public_repeat_window, d.ar, &keys, err,
		                      sizeof(err));
		token_keys_clear(&keys);
		if (d.public == NULL)
			fatalx("%s", err);
		log_info("public listener for tracking and unsubscribe links on %s", d.cfg->http.public_listen);
	}
	uint64_t wd = sdn_watchdog_usec();
	if (wd) {
		struct timeval half = {(time_t)(wd / 2 / 1000000), (suseconds_t)(wd / 2 % 1000000)};
		d.ev_watchdog = event_new(d.base, -1, EV_PERSIST, on_watchdog, &d);
		event_add(d.ev_watchdog, &half);
	}
	log_info("outreachd %s starting: http on %s", OUTREACH_VERSION, d.cfg->http.listen);

	event_base_dispatch(d.base);

	/* The Redis connection goes first: its pending callbacks still see the modules. */
	ar_free(d.ar);
	public_free(d.public); /* after the Redis connection: its last replies answer waiting unsubscribes */
	apg_free(d.pg);
	figures_free(d.figures);
	leader_free(d.leader);
	qstats_free(d.qstats);
	periodic_free(d.periodic);
	scan_free(d.scan);
	campscan_free(d.campscan);
	maint_free(d.maint);
	web_free(d.web);
	if (d.ev_watchdog)
		event_free(d.ev_watchdog);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(d.base);
	cfg_free(d.cfg);
	log_notice("outreachd stopped");
	return 0;
}
