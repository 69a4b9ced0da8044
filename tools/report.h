/* report: outreachctl's metric commands: recompute the metric tables, print a month's key figures. */
#ifndef OUTREACH_TOOLS_REPORT_H
#define OUTREACH_TOOLS_REPORT_H

#include "common/cfg.h"

/* `metrics [--period full|KIND:DATE] [--enqueue]`: recomputes the metric tables here and now (the
 * periods touched since the last run; everything; or the one period of KIND day, week, month or
 * quarter holding DATE), or with --enqueue pushes a MetricsJob for a worker. argv[0] is the
 * command name; returns the exit status. */
int ctl_metrics(const struct cfg *c, int argc, char **argv);

/* `report [--month YYYY-MM] [--format text|csv|json]`: the month's key figures from the metric
 * tables (the current UTC month by default) on stdout. Returns the exit status. */
int ctl_report(const struct cfg *c, int argc, char **argv);

/* "2026-11" (or "2026-11-xx") into "2026-11-01" in out (size 11); -1 when it is not a month. */
int report_parse_month(const char *s, char *out) MUSTCHECK;

#endif
