/* cron: five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in UTC. */
#ifndef OUTREACH_CRON_H
#define OUTREACH_CRON_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/util.h"

struct cron {
	uint64_t minute; /* bit n set: minute n matches (0..59) */
	uint32_t hour;   /* 0..23 */
	uint32_t dom;    /* 1..31 */
	uint16_t month;  /* 1..12 */
	uint8_t dow;     /* 0..6, Sunday 0 (7 is accepted as Sunday) */
	bool dom_any, dow_any;
};

/* Parses "*\/15 8-18 * * mon-fri" style expressions: numbers, names (jan..dec, sun..sat), ranges,
 * lists and steps, and @hourly, @daily, @weekly, @monthly, @yearly. -1 with what is wrong in err. */
int cron_parse(const char *expr, struct cron *c, char *err, size_t errlen) MUSTCHECK;

/* The first matching minute strictly after t (UTC), or 0 when none within five years. As in cron,
 * when both day-of-month and day-of-week are restricted, either one matching is enough. */
time_t cron_next(const struct cron *c, time_t t);

#endif
