/* outreach-worker: serves the job queues named on its command line. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/boot.h"
#include "common/db.h"
#include "common/log.h"
#include "common/migrate.h"
#include "common/job.h"
#include "common/sdnotify.h"
#include "workers/handler.h"
#include "workers/runtime.h"

static const char usage_text[] =
    "usage: outreach-worker [-c FILE] [--check-config] --queues Q1[,Q2...] [--weighted] [--concurrency N]\n"
    "                       [--tag TAG]\n"
    "\n"
    "Runs the jobs of the named Redis queues: strict order (Q1 empty before Q2 is served), or with\n"
    "--weighted a random order by weight on each fetch (Q1=3,Q2=1).\n"
    "\n"
    "  -q, --queues LIST      queues to serve, separated by commas or colons, each with an\n"
    "                         optional =WEIGHT\n"
    "  -w, --weighted         weighted random order instead of strict order\n"
    "  -n, --concurrency N    jobs run at once (default 1)\n"
    "  -t, --tag TAG          label shown with this process in stats\n"
    "  -c, --config FILE      configuration file (default: $OUTREACH_CONFIG or " SYSCONFDIR
    "/outreach/outreach.conf)\n"
    "      --check-config     validate the configuration and exit\n"
    "  -h, --help             show this help\n"
    "  -V, --version          show the version\n"
    "\n"
    "Signals: SIGTERM stops taking jobs, lets the running ones finish within worker.shutdown_timeout,\n"
    "hands back the rest and exits (a second SIGTERM hands back at once); SIGTSTP stops taking jobs;\n"
    "SIGHUP reloads the configuration.\n";

/* Parses "a,b:c=3" (commas or colons; an optional =weight) into opts; -1 with a message on stderr. */
static int
parse_queues(char *list, struct runtime_opts *o)
{
	o->nqueues = 0;
	for (char *save = NULL, *tok = strtok_r(list, ",:", &save); tok; tok = strtok_r(NULL, ",:", &save)) {
		char *eq = strchr(tok, '=');
		long weight = 1;
		if (eq) {
			*eq = '\0';
			if (!util_parse_long(eq + 1, 1, 1000, &weight)) {
				fprintf(stderr, "outreach-worker: queue %s: weight %s is not a number in 1..1000\n", tok, eq + 1);
				return -1;
			}
		}
		if (!job_queue_name_ok(tok)) {
			fprintf(stderr, "outreach-worker: '%s' is not a queue name (1..64 of letters, digits, _ - .)\n", tok);
			return -1;
		}
		for (int i = 0; i < o->nqueues; i++)
			if (strcmp(o->queues[i], tok) == 0) {
				fprintf(stderr, "outreach-worker: queue %s is named twice\n", tok);
				return -1;
			}
		if (o->nqueues == RUNTIME_MAX_QUEUES) {
			fprintf(stderr, "outreach-worker: at most %d queues per process\n", RUNTIME_MAX_QUEUES);
			return -1;
		}
		o->queues[o->nqueues] = tok;
		o->weights[o->nqueues++] = (int)weight;
	}
	if (o->nqueues == 0) {
		fprintf(stderr, "outreach-worker: --queues needs at least one queue, e.g. --queues alerts,default\n");
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},      {"check-config", no_argument, NULL, 'C'},
	    {"queues", required_argument, NULL, 'q'},      {"concurrency", required_argument, NULL, 'n'},
	    {"tag", required_argument, NULL, 't'},         {"weighted", no_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},           {NULL, 0, NULL, 0},
	};
	const char *path = NULL, *tag = "";
	char *queues = NULL;
	struct runtime_opts opts = {0};
	long concurrency = 1;
	bool check = false;
	int ch;

	log_init("outreach-worker");
	while ((ch = getopt_long(argc, argv, "c:q:n:t:whV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'q':
			queues = optarg;
			break;
		case 'n':
			if (!util_parse_long(optarg, 1, 256, &concurrency)) {
				fprintf(stderr, "outreach-worker: --concurrency %s is not a number in 1..256\n", optarg);
				return 2;
			}
			break;
		case 't':
			tag = optarg;
			break;
		case 'w':
			opts.weighted = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			boot_version("outreach-worker");
		default:
			fputs(usage_text, stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "outreach-worker: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	struct cfg *c = boot_config(path, false);
	char err[1024];
	/* The templates are part of the configuration: a broken one stops the start, with its line. */
	if (handler_init(c, err, sizeof(err)) == -1)
		fatalx("%s", err);
	if (check) {
		printf("%s: configuration and templates are valid\n", c->path ? c->path : "(defaults and environment)");
		handler_shutdown();
		cfg_free(c);
		return 0;
	}
	if (queues == NULL) {
		fprintf(stderr, "outreach-worker: --queues is required, e.g. --queues alerts,default\n");
		cfg_free(c);
		return 2;
	}
	if (parse_queues(queues, &opts) == -1) {
		cfg_free(c);
		return 2;
	}
	opts.concurrency = (int)concurrency;
	opts.tag = tag;
	opts.reload = handler_reload;
	signal(SIGPIPE, SIG_IGN);

	/* Refuse to run against a schema this build does not know. */
	struct db *db = db_connect_retry(c, "outreach-worker", 60000, NULL, err, sizeof(err));
	if (db == NULL)
		fatalx("cannot connect to the database: %s", err);
	if (mig_check(db, err, sizeof(err)) == -1)
		fatalx("%s", err);
	db_free(db);

	int rc = runtime_run(&c, path, &opts); /* returns only once every job thread was joined */
	handler_shutdown();
	monthly_shutdown();
	cfg_free(c);
	return rc;
}
