/* cron: five-field cron expressions (minute hour day-of-month month day-of-week), evaluated in UTC. */
#include "common/cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                          "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const dow_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"};

/* Reads a number or a name at *p; -1 when neither. */
static int
read_value(const char **p, const char *const *names, int nnames, int name_base)
{
	if (isdigit((unsigned char)**p)) {
		int v = 0;
		while (isdigit((unsigned char)**p) && v < 1000)
			v = v * 10 + (*(*p)++ - '0');
		return v;
	}
	for (int i = 0; names && i < nnames; i++)
		if (strncasecmp(*p, names[i], 3) == 0) {
			*p += 3;
			return i + name_base;
		}
	return -1;
}

/* Parses one field into bits [lo..hi]; -1 with err. */
static int
parse_field(const char *field, int lo, int hi, const char *const *names, int nnames, int name_base, uint64_t *bits,
            bool *any, const char *what, char *err, size_t errlen)
{
	const char *p = field;

	*bits = 0;
	*any = strcmp(field, "*") == 0;
	for (;;) {
		int a, b, step = 1;
		if (*p == '*') {
			a = lo, b = hi;
			p++;
		} else {
			a = read_value(&p, names, nnames, name_base);
			if (a < 0)
				goto bad;
			b = a;
			if (*p == '-') {
				p++;
				b = read_value(&p, names, nnames, name_base);
				if (b < 0)
					goto bad;
			}
		}
		if (*p == '/') {
			p++;
			step = read_value(&p, NULL, 0, 0);
			if (step <= 0)
				goto bad;
			if (a == b && field[0] != '*')
				b = hi; /* "5/15": from 5 to the end in steps of 15 */
		}
		if (a < lo || b > hi || a > b) {
			snprintf(err, errlen, "%s: %s is out of range %d..%d", what, field, lo, hi);
			return -1;
		}
		for (int v = a; v <= b; v += step)
			*bits |= 1ULL << v;
		if (*p == '\0')
			return 0;
		if (*p != ',')
			goto bad;
		p++;
	}
bad:
	snprintf(err, errlen, "%s: cannot read '%s'", what, field);
	return -1;
}

int
cron_parse(const char *expr, struct cron *c, char *err, size_t errlen)
{
	static const struct {
		const char *name, *expr;
	} macros[] = {{"@hourly", "0 * * * *"}, {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
	              {"@weekly", "0 0 * * 0"}, {"@monthly", "0 0 1 * *"}, {"@yearly", "0 0 1 1 *"},
	              {"@annually", "0 0 1 1 *"}};
	char buf[256], *fields[6];
	int n = 0;
	uint64_t bits;
	bool any;

	for (size_t i = 0; i < NELEM(macros); i++)
		if (strcmp(expr, macros[i].name) == 0)
			expr = macros[i].expr;
	if (strlen(expr) >= sizeof(buf)) {
		snprintf(err, errlen, "expression too long");
		return -1;
	}
	strcpy(buf, expr);
	for (char *save = NULL, *tok = strtok_r(buf, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		if (n == 5) {
			n++;
			break;
		}
		fields[n++] = tok;
	}
	if (n != 5) {
		snprintf(err, errlen, "'%s' needs five fields: minute hour day-of-month month day-of-week", expr);
		return -1;
	}
	memset(c, 0, sizeof(*c));
	if (parse_field(fields[0], 0, 59, NULL, 0, 0, &bits, &any, "minute", err, errlen) == -1)
		return -1;
	c->minute = bits;
	if (parse_field(fields[1], 0, 23, NULL, 0, 0, &bits, &any, "hour", err, errlen) == -1)
		return -1;
	c->hour = (uint32_t)bits;
	if (parse_field(fields[2], 1, 31, NULL, 0, 0, &bits, &c->dom_any, "day-of-month", err, errlen) == -1)
		return -1;
	c->dom = (uint32_t)bits;
	if (parse_field(fields[3], 1, 12, month_names, 12, 1, &bits, &any, "month", err, errlen) == -1)
		return -1;
	c->month = (uint16_t)bits;
	if (parse_field(fields[4], 0, 7, dow_names, 7, 0, &bits, &c->dow_any, "day-of-week", err, errlen) == -1)
		return -1;
	c->dow = (uint8_t)((bits | (bits >> 7)) & 0x7f); /* 7 is Sunday too */
	return 0;
}

static bool
day_matches(const struct cron *c, const struct tm *tm)
{
	bool dom = (c->dom >> tm->tm_mday) & 1, dow = (c->dow >> tm->tm_wday) & 1;

	if (c->dom_any && c->dow_any)
		return true;
	if (c->dom_any)
		return dow;
	if (c->dow_any)
		return dom;
	return dom || dow;
}

time_t
cron_next(const struct cron *c, time_t t)
{
	struct tm tm;
	time_t limit = t + 5 * 366 * 86400;

	t = t - t % 60 + 60;
	while (t <= limit) {
		gmtime_r(&t, &tm);
		if (!((c->month >> (tm.tm_mon + 1)) & 1)) {
			tm.tm_mon++, tm.tm_mday = 1, tm.tm_hour = 0, tm.tm_min = 0;
			t = timegm(&tm);
			continue;
		}
		if (!day_matches(c, &tm)) {
			tm.tm_mday++, tm.tm_hour = 0, tm.tm_min = 0;
			t = timegm(&tm);
			continue;
		}
		if (!((c->hour >> tm.tm_hour) & 1)) {
			tm.tm_hour++, tm.tm_min = 0;
			t = timegm(&tm);
			continue;
		}
		if (!((c->minute >> tm.tm_min) & 1)) {
			t += 60;
			continue;
		}
		return t;
	}
	return 0;
}
