/* campdef: a campaign definition file (JSON): read, checked in full, held in memory for outreachctl. */
#ifndef OUTREACH_TOOLS_CAMPDEF_H
#define OUTREACH_TOOLS_CAMPDEF_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

#define CAMPDEF_MAX_SEGMENTS 100
#define CAMPDEF_MAX_MESSAGES 1000
#define CAMPDEF_MAX_STEPS    1000
#define CAMPDEF_MAX_TEMPLATE (1024 * 1024) /* bytes of one template */

struct campdef_segment {
	char *name;
	json_t *criteria; /* checked by segment_check */
};

struct campdef_message {
	char *variant;
	char *segment;               /* a segment's name; NULL: shared by every segment */
	char *subject, *html, *text; /* template texts, each parsed by tmpl_parse */
};

struct campdef_step {
	int after_step;
	int position; /* among the rules of the same after_step, from 0, in file order */
	char *condition, *action;
	char *variant; /* NULL unless action is send */
	int wait_days;
	bool business_days;
};

struct campdef {
	char *path;
	char *name, *sender_name, *sender_email, *reply_to /* NULL: none */, *postal_address, *time_zone;
	struct campdef_segment *segments;
	size_t nsegments;
	struct campdef_message *messages;
	size_t nmessages;
	struct campdef_step *steps;
	size_t nsteps;
};

/* Reads and checks the definition file at path (html_file and text_file are read relative to its
 * folder). Returns a definition the caller frees with campdef_free, or NULL with
 * "PATH: $.json.path: what is wrong" (or "PATH:LINE:COLUMN: ..." for bad JSON) in err. */
struct campdef *campdef_load(const char *path, char *err, size_t errlen) MUSTCHECK;
void campdef_free(struct campdef *d);

/* Whether s is an email address every message can carry: a plain addr-spec by common/msg's rules
 * (stricter than the campaign tables' CHECK, which lets through what msg refuses: a..b@x, a@x;y). */
bool campdef_email_ok(const char *s);

#endif
