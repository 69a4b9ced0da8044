/* jobclass: the catalogue of job classes: name, default queue and argument validation. */
#ifndef OUTREACH_JOBCLASS_H
#define OUTREACH_JOBCLASS_H

#include <jansson.h>
#include <stddef.h>

struct jobclass {
	const char *name;
	const char *queue; /* default queue */
	/* 0 when args (a JSON array) suit the class; -1 with what is wrong in err. */
	int (*validate)(const json_t *args, char *err, size_t errlen);
	const char *summary;
};

/* The class named name, or NULL. */
const struct jobclass *jobclass_find(const char *name);
/* Every class, for listings and error messages. */
const struct jobclass *jobclass_all(size_t *n);
/* "PingJob, OverdueDigestJob, ..." into buf. */
void jobclass_names(char *buf, size_t len);

#endif
