/* npi: outreachctl's NPI commands: saved searches, sync, the NUCC taxonomy and NPPES bulk imports. */
#ifndef OUTREACH_TOOLS_NPI_H
#define OUTREACH_TOOLS_NPI_H

#include "common/cfg.h"

/* Each takes the command's own argv (argv[0] is the command name) and returns the exit status. */

/* npi search add|list|remove, npi sync [ID]. */
int ctl_npi(const struct cfg *c, int argc, char **argv);
/* import-taxonomy FILE: the NUCC CSV into taxonomies (upsert by code). */
int ctl_import_taxonomy(const struct cfg *c, int argc, char **argv);
/* import-nppes FILE [--state XX] [--taxonomy CODE]... [--sources [--coordinator ID]]: streams an NPPES
 * full, weekly or deactivation file through COPY into a staging table and merges it into
 * npi_providers (and referral_sources as prospects) in one transaction. */
int ctl_import_nppes(const struct cfg *c, int argc, char **argv);

#endif
