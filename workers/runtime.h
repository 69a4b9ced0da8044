/* runtime: the worker process: reliable fetch, run, ack, retry, dead, heartbeat, shutdown. */
#ifndef OUTREACH_RUNTIME_H
#define OUTREACH_RUNTIME_H

#include <stdbool.h>

#include "common/cfg.h"

#define RUNTIME_MAX_QUEUES 16

struct runtime_opts {
	const char *queues[RUNTIME_MAX_QUEUES]; /* borrowed */
	int weights[RUNTIME_MAX_QUEUES];
	int nqueues;
	bool weighted; /* random order by weight on each fetch, instead of strict order */
	int concurrency;
	const char *tag;
	/* Called on SIGHUP with the configuration just read (arg NULL), before it replaces the running
	 * one; -1 with err refuses the reload. NULL: none. */
	cfg_check_fn reload;
};

/* Serves the queues until SIGTERM/SIGINT (or a TERM from the Web UI), then drains and returns the
 * process exit status. *cfg is the configuration to start with; a SIGHUP puts a reloaded one in
 * its place (the runtime frees those it replaces), and on return *cfg is the running one, the
 * caller's to free. When a job still runs at the shutdown timeout or at a second stop signal, its
 * job was handed back and its thread still uses the runtime's state, cfg, the handlers' state and
 * cairo/fontconfig: runtime_run then ends the process itself (_exit, status 0) rather than return
 * and let any of that be freed. */
int runtime_run(struct cfg **cfg, const char *cfg_path, const struct runtime_opts *opts);

#endif
