/* boot: what every binary does first: parse the shared options, load the configuration, set up logging. */
#ifndef OUTREACH_BOOT_H
#define OUTREACH_BOOT_H

#include <stdbool.h>

#include "common/cfg.h"

/* Loads the configuration from path (NULL: the default file, if present), applies log.level, and
 * exits with status 1 and the error on stderr when it is invalid. With check_only, prints
 * "FILE: configuration is valid" and exits 0 instead of returning. Returns the cfg (caller frees). */
struct cfg *boot_config(const char *path, bool check_only);

/* Prints "PROG VERSION" and exits 0. */
void boot_version(const char *prog) __attribute__((noreturn));

#endif
