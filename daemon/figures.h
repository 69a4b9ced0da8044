/* figures: the current month's business figures for /metrics, read from the metric tables. */
#ifndef OUTREACH_FIGURES_H
#define OUTREACH_FIGURES_H

#include <event2/event.h>
#include <stdio.h>

#include "daemon/apg.h"

struct figures;

/* Reads the figures once PostgreSQL is ready and then every minute, never per scrape. pg is borrowed
 * and must outlive the figures; free the figures after the connection (its pending callback still
 * runs). */
struct figures *figures_new(struct event_base *base, struct apg *pg);
void figures_free(struct figures *f);

/* Writes the figures last read, in the Prometheus text format, with HELP and TYPE lines. */
void figures_metrics(const struct figures *f, FILE *out);

/* Writes s as a label value of the Prometheus text format: backslash, double quote and line feed
 * escaped. */
void figures_label(FILE *out, const char *s);

#endif
