/* campaign: outreachctl's campaign commands: create (or dry-run) from a definition file, list, show,
 * activate, pause, finish, preview. */
#ifndef OUTREACH_TOOLS_CAMPAIGN_H
#define OUTREACH_TOOLS_CAMPAIGN_H

#include "common/cfg.h"

/* `outreachctl campaign SUBCOMMAND ...`: argv[0] is "campaign"; returns the exit status. */
int ctl_campaign(const struct cfg *c, int argc, char **argv);

#endif
