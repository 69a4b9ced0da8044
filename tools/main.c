/* outreachctl: the operator's tool: migrate the schema, load demo data, manage jobs. */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/boot.h"
#include "common/db.h"
#include "common/log.h"
#include "common/migrate.h"
#include "tools/campaign.h"
#include "tools/jobs.h"
#include "tools/npi.h"
#include "tools/report.h"
#include "tools/seed.h"

static const char usage_text[] =
    "usage: outreachctl [-c FILE] [--check-config] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  migrate                  apply the schema migrations the database lacks\n"
    "  migrate --status         print the applied and the needed schema version\n"
    "  seed-demo [--data DIR]   load the demo data set (coordinators, sources, history)\n"
    "  enqueue CLASS [--queue Q] [--args JSON] [--at TIME | --in SECONDS]\n"
    "                           push a job (TIME: epoch seconds or UTC 2026-12-01T08:00:00Z);\n"
    "                           prints its jid\n"
    "  stats [--json]           queues, sizes, latency, processed, failed, retry, scheduled,\n"
    "                           dead, busy processes\n"
    "  retry-dead JID|--all     put dead jobs back on their queues\n"
    "  discard-dead JID|--all   delete dead jobs\n"
    "  ping [--timeout S] [--queue Q]\n"
    "                           push a PingJob and wait until a worker has run it\n"
    "  npi search add NAME [--taxonomy DESC|CODE] [--state XX] [--city C] [--postal-code P]\n"
    "                 [--type NPI-1|NPI-2] [--coordinator ID|EMAIL] [--criteria JSON]\n"
    "  npi search list [--json] | npi search remove ID|NAME\n"
    "                           saved NPI Registry searches\n"
    "  npi sync [ID]            enqueue an NpiSyncJob for a saved search (every active one)\n"
    "  import-taxonomy FILE     load the NUCC taxonomy CSV into taxonomies\n"
    "  import-nppes FILE [--kind full|weekly|deactivation] [--state XX] [--taxonomy CODE]...\n"
    "               [--prospects [--coordinator ID]]\n"
    "                           load an NPPES full, weekly or deactivation file\n"
    "  metrics [--period full|KIND:DATE] [--as-of TIME] [--enqueue]\n"
    "                           recompute the metric tables: the periods touched since the\n"
    "                           last run, everything, or one period (KIND: day, week, month,\n"
    "                           quarter; e.g. month:2026-11-01); --as-of: as at a past moment\n"
    "                           (UTC unless a zone is given; not before the last run's);\n"
    "                           --enqueue: by a worker\n"
    "  report [--month YYYY-MM] [--format text|csv|json]\n"
    "                           the month's key figures from the metric tables\n"
    "  campaign create FILE [--dry-run]\n"
    "                           create (or replace) a draft campaign from a definition file;\n"
    "                           --dry-run: check it and print each segment's size\n"
    "  campaign list | show ID|NAME | activate ID|NAME | pause ID|NAME | finish ID|NAME\n"
    "  campaign preview ID|NAME SOURCE_ID [--variant V]\n"
    "                           render the message a source would get\n"
    "\n"
    "Options:\n"
    "  -c, --config FILE        configuration file (default: $OUTREACH_CONFIG or " SYSCONFDIR
    "/outreach/outreach.conf)\n"
    "      --check-config       validate the configuration and exit\n"
    "  -h, --help               show this help\n"
    "  -V, --version            show the version\n";

/* The configuration, for the whole run. Also held here, where LeakSanitizer sees live memory, for
 * the commands that stop at a usage error (fatalx, exit) before they hold anything of their own
 * (volatile: the store is kept although nothing here reads it). */
static struct cfg *volatile ctl_cfg;

/* At exit: output that could not all be written is an error, although SIGPIPE is ignored. When the
 * reader went away (`outreachctl stats | head -1`) the command ends as SIGPIPE would have ended it:
 * quietly, killed by SIGPIPE; any other write error (a full disk) is said, with status 1. */
static void
check_output(void)
{
	int flushed = fflush(stdout), err = errno;
	struct pollfd pfd = {.fd = STDOUT_FILENO, .events = 0};

	if (flushed == 0 && !ferror(stdout))
		return;
	/* A pipe (or socket) without a reader reports POLLERR, even after the error's errno is gone. */
	if ((flushed == EOF && err == EPIPE) || (poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLERR))) {
		signal(SIGPIPE, SIG_DFL);
		raise(SIGPIPE);
	}
	if (flushed == EOF)
		log_errorx("writing the output: %s", strerror(err));
	else
		log_errorx("writing the output failed; what was printed is incomplete");
	_exit(1);
}

static void
usage(FILE *out, int status)
{
	fputs(usage_text, out);
	exit(status);
}

static int
cmd_migrate(const struct cfg *c, int argc, char **argv)
{
	char err[1024];
	bool status = argc > 1 && strcmp(argv[1], "--status") == 0;
	struct db *db = ctl_db_open(c, false);
	int applied, current, rc = 1;

	if (db == NULL)
		return 1;
	if (status) {
		if (mig_current(db, &current, err, sizeof(err)) == -1) {
			log_errorx("%s", err);
			goto out;
		}
		printf("schema version %d, this build needs %d%s\n", current, mig_latest(),
		       current < mig_latest() ? ": run `outreachctl migrate`" : "");
		rc = current < mig_latest() ? 1 : 0;
		goto out;
	}
	if (mig_apply(db, mig_scripts, mig_nscripts, &applied, err, sizeof(err)) == -1) {
		log_errorx("migrate: %s", err);
		/* Each migration commits on its own: those before the failing one stay applied. */
		if (applied > 0 && mig_current(db, &current, err, sizeof(err)) == 0)
			log_errorx("migrate: %d migration%s applied before the failure; the schema is at version %d",
			           applied, applied == 1 ? " was" : "s were", current);
		goto out;
	}
	if (mig_current(db, &current, err, sizeof(err)) == -1) {
		log_errorx("%s", err);
		goto out;
	}
	printf("applied %d migration%s; schema version %d%s\n", applied, applied == 1 ? "" : "s", current,
	       applied == 0 && current == mig_latest() ? ", up to date" : "");
	rc = 0;
out:
	db_free(db);
	return rc;
}

static int
cmd_seed_demo(const struct cfg *c, int argc, char **argv)
{
	const char *datadir = DATADIR "/outreach/fixtures";
	char err[1024];

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
			datadir = argv[++i];
		else
			fatalx("seed-demo: unexpected argument %s (usage: seed-demo [--data DIR])", argv[i]);
	}
	struct db *db = ctl_db_open(c, true);
	if (db == NULL)
		return 1;
	int rc = seed_demo(db, datadir, err, sizeof(err));
	db_free(db);
	if (rc == -1) {
		log_errorx("seed-demo: %s", err);
		return 1;
	}
	if (rc == 1)
		printf("demo data is already loaded; nothing changed\n");
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'C'},
	    {"help", no_argument, NULL, 'h'},         {"version", no_argument, NULL, 'V'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	bool check = false;
	int ch;

	log_init("outreachctl");
	/* A connection the server closes is an error of the command that used it, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	atexit(check_output);
	/* "+": stop at the command, whose own options follow it. */
	while ((ch = getopt_long(argc, argv, "+c:hV", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'C':
			check = true;
			break;
		case 'h':
			usage(stdout, 0);
			break;
		case 'V':
			boot_version("outreachctl");
		default:
			usage(stderr, 2);
		}
	}
	argc -= optind;
	argv += optind;
	if (argc == 0 && !check)
		usage(stderr, 2);

	struct cfg *c = ctl_cfg = boot_config(path, check);
	int rc;
	if (strcmp(argv[0], "migrate") == 0)
		rc = cmd_migrate(c, argc, argv);
	else if (strcmp(argv[0], "seed-demo") == 0)
		rc = cmd_seed_demo(c, argc, argv);
	else if (strcmp(argv[0], "enqueue") == 0)
		rc = ctl_enqueue(c, argc, argv);
	else if (strcmp(argv[0], "stats") == 0)
		rc = ctl_stats(c, argc, argv);
	else if (strcmp(argv[0], "retry-dead") == 0)
		rc = ctl_retry_dead(c, argc, argv);
	else if (strcmp(argv[0], "discard-dead") == 0)
		rc = ctl_discard_dead(c, argc, argv);
	else if (strcmp(argv[0], "ping") == 0)
		rc = ctl_ping(c, argc, argv);
	else if (strcmp(argv[0], "npi") == 0)
		rc = ctl_npi(c, argc, argv);
	else if (strcmp(argv[0], "import-taxonomy") == 0)
		rc = ctl_import_taxonomy(c, argc, argv);
	else if (strcmp(argv[0], "import-nppes") == 0)
		rc = ctl_import_nppes(c, argc, argv);
	else if (strcmp(argv[0], "metrics") == 0)
		rc = ctl_metrics(c, argc, argv);
	else if (strcmp(argv[0], "report") == 0)
		rc = ctl_report(c, argc, argv);
	else if (strcmp(argv[0], "campaign") == 0)
		rc = ctl_campaign(c, argc, argv);
	else {
		fprintf(stderr, "outreachctl: unknown command '%s'\n\n", argv[0]);
		usage(stderr, 2);
	}
	cfg_free(c);
	return rc;
}
