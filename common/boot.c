/* boot: what every binary does first: parse the shared options, load the configuration, set up logging. */
#include "common/boot.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"

struct cfg *
boot_config(const char *path, bool check_only)
{
	char err[1024];
	struct cfg *c = cfg_load(path, err, sizeof(err));

	if (c == NULL) {
		fprintf(stderr, "%s\n", err);
		exit(1);
	}
	log_set_level((enum log_level)cfg_log_level(c));
	if (check_only) {
		printf("%s: configuration is valid\n", c->path ? c->path : "(defaults and environment)");
		cfg_free(c);
		exit(0);
	}
	return c;
}

void
boot_version(const char *prog)
{
	printf("%s %s\n", prog, OUTREACH_VERSION);
	exit(0);
}
