/* campdef: a campaign definition file (JSON): read, checked in full, held in memory (see campdef.h). */
#include "tools/campdef.h"

#include <errno.h>
#include <libgen.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/msg.h"
#include "common/segment.h"
#include "common/tmpl.h"
#include "tools/campini.h"

static const char *const conditions[] = { "always",     "opened",      "clicked",   "replied",
	                                  "not_opened", "not_clicked", "no_action", NULL };
static const char *const actions[] = { "send", "call", "stop", NULL };

struct ld {
	const char *path;
	json_t *lines; /* INI: the line of each JSON path; NULL for JSON */
	char *dir;
	char *err;
	size_t errlen;
};

static int fail(struct ld *l, const char *fmt, ...) PRINTFLIKE(2, 3);

/* Writes "PATH: message" into the error buffer; returns -1. */
static int
fail(struct ld *l, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* From an INI file: the line of the longest JSON path the message starts with. */
	const char *key;
	json_t *v;
	size_t best = 0;
	int line = 0;
	json_object_foreach(l->lines, key, v)
	{
		size_t n = strlen(key);
		if (n > best && strncmp(msg, key, n) == 0 && strchr(".[:", msg[n]) && msg[n] != '\0') {
			best = n;
			line = (int)json_integer_value(v);
		}
	}
	if (line > 0)
		snprintf(l->err, l->errlen, "%s:%d: %s", l->path, line, msg);
	else
		snprintf(l->err, l->errlen, "%s: %s", l->path, msg);
	return -1;
}

static bool
in_list(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (strcmp(s, *list) == 0)
			return true;
	return false;
}

static bool
matches(const char *s, const char *re)
{
	regex_t rx;
	bool ok;

	if (regcomp(&rx, re, REG_EXTENDED | REG_NOSUB) != 0)
		abort();
	ok = regexec(&rx, s, 0, NULL, 0) == 0;
	regfree(&rx);
	return ok;
}

bool
campdef_email_ok(const char *s)
{
	return msg_addr_valid(s);
}

/* Refuses keys of obj that are not in allowed. */
static int
only_keys(struct ld *l, json_t *obj, const char *jpath, const char *const *allowed)
{
	const char *key;
	json_t *v;

	json_object_foreach(obj, key, v)
	{
		if (!in_list(key, allowed)) {
			char known[256] = "";
			for (const char *const *a = allowed; *a; a++)
				snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
				         a == allowed ? "" : ", ", *a);
			return fail(l, "%s.%s: unknown key (known here: %s)", jpath, key, known);
		}
	}
	return 0;
}

/* A string member: *out is a copy, or NULL when absent (or null) and not required. */
static int
get_string(struct ld *l, json_t *obj, const char *jpath, const char *key, bool required, size_t max,
           char **out)
{
	json_t *v = json_object_get(obj, key);

	*out = NULL;
	if (v == NULL || json_is_null(v)) {
		if (required)
			return fail(l, "%s.%s: is required", jpath, key);
		return 0;
	}
	if (!json_is_string(v))
		return fail(l, "%s.%s: must be a string", jpath, key);
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fail(l, "%s.%s: must not contain a NUL character", jpath, key);
	if (json_string_length(v) == 0)
		return fail(l, "%s.%s: must not be empty", jpath, key);
	if (json_string_length(v) > max)
		return fail(l, "%s.%s: is longer than %zu bytes", jpath, key, max);
	*out = xstrdup(json_string_value(v));
	return 0;
}

static int
get_int(struct ld *l, json_t *obj, const char *jpath, const char *key, bool required, int min, int max,
        int dflt, int *out)
{
	json_t *v = json_object_get(obj, key);

	*out = dflt;
	if (v == NULL) {
		if (required)
			return fail(l, "%s.%s: is required", jpath, key);
		return 0;
	}
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return fail(l, "%s.%s: must be an integer from %d to %d", jpath, key, min, max);
	*out = (int)json_integer_value(v);
	return 0;
}

static int
get_list(struct ld *l, json_t *root, const char *key, size_t max, json_t **out)
{
	json_t *v = json_object_get(root, key);

	if (v == NULL)
		return fail(l, "$.%s: is required", key);
	if (!json_is_array(v))
		return fail(l, "$.%s: must be a list", key);
	if (json_array_size(v) == 0)
		return fail(l, "$.%s: must not be empty", key);
	if (json_array_size(v) > max)
		return fail(l, "$.%s: has %zu entries, at most %zu are allowed", key, json_array_size(v),
		            max);
	*out = v;
	return 0;
}

/* Checks that text parses as a template; name is what errors call it. An HTML template may not
 * put a value in unescaped: every campaign variable is data from the sources' and coordinators'
 * rows, which other applications write. */
static int
check_template(struct ld *l, const char *jpath, const char *text, const char *name, bool html)
{
	char terr[512];
	struct tmpl *t = tmpl_parse(text, name, terr, sizeof(terr));
	int rc = t == NULL || (html && tmpl_check_escaped(t, terr, sizeof(terr)) == -1) ? -1 : 0;

	tmpl_free(t);
	if (rc == -1)
		return name == jpath ? fail(l, "%s", terr) : fail(l, "%s: %s", jpath, terr);
	return 0;
}

/* A template given inline as key, or in a file named by key_file (relative to the definition's
 * folder): exactly one of the two. */
static int
get_template(struct ld *l, json_t *obj, const char *jpath, const char *key, char **out)
{
	char inline_key[16], file_key[16], kpath[96];
	char *inl = NULL, *file = NULL;

	*out = NULL;
	snprintf(inline_key, sizeof(inline_key), "%s", key);
	snprintf(file_key, sizeof(file_key), "%s_file", key);
	if (json_object_get(obj, inline_key) && json_object_get(obj, file_key))
		return fail(l, "%s: give either %s or %s, not both", jpath, inline_key, file_key);
	if (get_string(l, obj, jpath, inline_key, false, CAMPDEF_MAX_TEMPLATE, &inl) == -1 ||
	    get_string(l, obj, jpath, file_key, false, 4096, &file) == -1)
		goto fail;
	if (inl == NULL && file == NULL) {
		fail(l, "%s: %s or %s is required", jpath, inline_key, file_key);
		goto fail;
	}
	if (inl) {
		snprintf(kpath, sizeof(kpath), "%s.%s", jpath, inline_key);
		if (check_template(l, kpath, inl, kpath, strcmp(key, "html") == 0) == -1)
			goto fail;
		*out = inl;
		return 0;
	}
	snprintf(kpath, sizeof(kpath), "%s.%s", jpath, file_key);
	char *full = file[0] == '/' ? xstrdup(file) : xasprintf("%s/%s", l->dir, file);
	size_t len;
	char *text = util_read_file(full, &len);
	if (text == NULL) {
		fail(l, "%s: cannot read %s: %s", kpath, full, strerror(errno));
	} else if (len != strlen(text)) {
		fail(l, "%s: %s holds a NUL byte", kpath, full);
	} else if (len > CAMPDEF_MAX_TEMPLATE) {
		fail(l, "%s: %s is larger than %d bytes", kpath, full, CAMPDEF_MAX_TEMPLATE);
	} else if (check_template(l, kpath, text, full, strcmp(key, "html") == 0) == 0) {
		free(full);
		free(file);
		*out = text;
		return 0;
	}
	free(text);
	free(full);
fail:
	free(inl);
	free(file);
	return -1;
}

static int
load_top(struct ld *l, json_t *root, struct campdef *d)
{
	static const char *const top_keys[] = { "name",      "sender",   "reply_to", "postal_address",
		                                "time_zone", "segments", "messages", "steps",
		                                "comment",   NULL };
	static const char *const sender_keys[] = { "name", "email", NULL };

	if (!json_is_object(root))
		return fail(l, "$: must be a JSON object");
	if (only_keys(l, root, "$", top_keys) == -1 ||
	    get_string(l, root, "$", "name", true, 200, &d->name) == -1)
		return -1;
	json_t *sender = json_object_get(root, "sender");
	if (sender == NULL)
		return fail(l, "$.sender: is required");
	if (!json_is_object(sender))
		return fail(l, "$.sender: must be an object with name and email");
	if (only_keys(l, sender, "$.sender", sender_keys) == -1 ||
	    get_string(l, sender, "$.sender", "name", true, 200, &d->sender_name) == -1 ||
	    get_string(l, sender, "$.sender", "email", true, 254, &d->sender_email) == -1)
		return -1;
	const char *why = msg_display_name_problem(d->sender_name);
	if (why != NULL)
		return fail(l, "$.sender.name: %s (it is the From header's display name)", why);
	if (!campdef_email_ok(d->sender_email))
		return fail(l, "$.sender.email: %s is not an email address", d->sender_email);
	if (get_string(l, root, "$", "reply_to", false, 254, &d->reply_to) == -1)
		return -1;
	if (d->reply_to && !campdef_email_ok(d->reply_to))
		return fail(l, "$.reply_to: %s is not an email address", d->reply_to);
	if (get_string(l, root, "$", "postal_address", true, 1000, &d->postal_address) == -1 ||
	    get_string(l, root, "$", "time_zone", false, 64, &d->time_zone) == -1)
		return -1;
	if (d->time_zone == NULL)
		d->time_zone = xstrdup("UTC");
	if (!matches(d->time_zone, "^([A-Za-z_]+(/[A-Za-z0-9_+-]+)+|UTC)$"))
		return fail(l, "$.time_zone: %s is not an IANA time zone name like America/Chicago",
		            d->time_zone);
	return 0;
}

static int
load_segments(struct ld *l, json_t *root, struct campdef *d)
{
	static const char *const seg_keys[] = { "name", "criteria", "comment", NULL };
	json_t *list, *seg;
	size_t i;
	char jpath[64], serr[512];

	if (get_list(l, root, "segments", CAMPDEF_MAX_SEGMENTS, &list) == -1)
		return -1;
	d->segments = xcalloc(json_array_size(list), sizeof(*d->segments));
	json_array_foreach(list, i, seg)
	{
		struct campdef_segment *s = &d->segments[d->nsegments];
		snprintf(jpath, sizeof(jpath), "$.segments[%zu]", i);
		if (!json_is_object(seg))
			return fail(l, "%s: must be an object with name and criteria", jpath);
		if (only_keys(l, seg, jpath, seg_keys) == -1 ||
		    get_string(l, seg, jpath, "name", true, 200, &s->name) == -1)
			return -1;
		d->nsegments++;
		for (size_t k = 0; k + 1 < d->nsegments; k++)
			if (strcmp(d->segments[k].name, s->name) == 0)
				return fail(l, "%s.name: %s is the name of $.segments[%zu] too", jpath,
				            s->name, k);
		json_t *crit = json_object_get(seg, "criteria");
		if (crit == NULL)
			crit = json_object();
		else
			json_incref(crit);
		s->criteria = crit;
		if (segment_check(crit, serr, sizeof(serr)) == -1)
			return fail(l, "%s.criteria%s%s", jpath, json_is_object(crit) ? "." : ": ", serr);
	}
	return 0;
}

static int
find_segment(const struct campdef *d, const char *name)
{
	for (size_t i = 0; i < d->nsegments; i++)
		if (strcmp(d->segments[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int
load_messages(struct ld *l, json_t *root, struct campdef *d)
{
	static const char *const msg_keys[] = { "variant", "segment",   "subject", "html", "html_file",
		                                "text",    "text_file", "comment", NULL };
	json_t *list, *msg;
	size_t i;
	char jpath[64];

	if (get_list(l, root, "messages", CAMPDEF_MAX_MESSAGES, &list) == -1)
		return -1;
	d->messages = xcalloc(json_array_size(list), sizeof(*d->messages));
	json_array_foreach(list, i, msg)
	{
		struct campdef_message *m = &d->messages[d->nmessages];
		snprintf(jpath, sizeof(jpath), "$.messages[%zu]", i);
		if (!json_is_object(msg))
			return fail(l, "%s: must be an object", jpath);
		d->nmessages++;
		if (only_keys(l, msg, jpath, msg_keys) == -1 ||
		    get_string(l, msg, jpath, "variant", true, 64, &m->variant) == -1 ||
		    get_string(l, msg, jpath, "segment", false, 200, &m->segment) == -1)
			return -1;
		if (!matches(m->variant, "^[A-Za-z0-9_-]{1,64}$"))
			return fail(l, "%s.variant: %s must be 1 to 64 of A-Z a-z 0-9 _ -", jpath,
			            m->variant);
		if (m->segment && find_segment(d, m->segment) < 0)
			return fail(l, "%s.segment: no segment is named %s", jpath, m->segment);
		for (size_t k = 0; k + 1 < d->nmessages; k++) {
			const struct campdef_message *o = &d->messages[k];
			bool same_seg = (o->segment == NULL && m->segment == NULL) ||
			                (o->segment && m->segment && strcmp(o->segment, m->segment) == 0);
			if (same_seg && strcmp(o->variant, m->variant) == 0)
				return fail(l,
				            "%s.variant: %s is defined for %s%s already by $.messages[%zu]",
				            jpath, m->variant, m->segment ? "segment " : "every segment",
				            m->segment ? m->segment : "", k);
		}
		char kpath[96];
		if (get_string(l, msg, jpath, "subject", true, 998, &m->subject) == -1)
			return -1;
		snprintf(kpath, sizeof(kpath), "%s.subject", jpath);
		if (check_template(l, kpath, m->subject, kpath, false) == -1 ||
		    get_template(l, msg, jpath, "html", &m->html) == -1 ||
		    get_template(l, msg, jpath, "text", &m->text) == -1)
			return -1;
	}
	return 0;
}

/* Whether variant can be found for segment (by name) or among the shared ones. */
static bool
variant_for(const struct campdef *d, const char *variant, const char *segment)
{
	for (size_t i = 0; i < d->nmessages; i++)
		if (strcmp(d->messages[i].variant, variant) == 0 &&
		    (d->messages[i].segment == NULL || strcmp(d->messages[i].segment, segment) == 0))
			return true;
	return false;
}

static int
load_steps(struct ld *l, json_t *root, struct campdef *d)
{
	static const char *const step_keys[] = { "after_step", "condition", "wait_days", "business_days",
		                                 "action",     "variant",   "comment",   NULL };
	json_t *list, *st;
	size_t i;
	char jpath[64];

	if (get_list(l, root, "steps", CAMPDEF_MAX_STEPS, &list) == -1)
		return -1;
	d->steps = xcalloc(json_array_size(list), sizeof(*d->steps));
	json_array_foreach(list, i, st)
	{
		struct campdef_step *s = &d->steps[d->nsteps];
		snprintf(jpath, sizeof(jpath), "$.steps[%zu]", i);
		if (!json_is_object(st))
			return fail(l, "%s: must be an object", jpath);
		d->nsteps++;
		if (only_keys(l, st, jpath, step_keys) == -1 ||
		    get_int(l, st, jpath, "after_step", true, 0, 1000, 0, &s->after_step) == -1 ||
		    get_string(l, st, jpath, "condition", true, 32, &s->condition) == -1 ||
		    get_int(l, st, jpath, "wait_days", false, 0, 365, 0, &s->wait_days) == -1 ||
		    get_string(l, st, jpath, "action", true, 32, &s->action) == -1 ||
		    get_string(l, st, jpath, "variant", false, 64, &s->variant) == -1)
			return -1;
		json_t *bd = json_object_get(st, "business_days");
		if (bd && !json_is_boolean(bd))
			return fail(l, "%s.business_days: must be true or false", jpath);
		s->business_days = bd && json_is_true(bd);
		if (!in_list(s->condition, conditions))
			return fail(l,
			            "%s.condition: %s is not one of always, opened, clicked, replied, "
			            "not_opened, "
			            "not_clicked, no_action",
			            jpath, s->condition);
		if (!in_list(s->action, actions))
			return fail(l, "%s.action: %s is not one of send, call, stop", jpath, s->action);
		if (strcmp(s->action, "send") == 0 && s->variant == NULL)
			return fail(l, "%s.variant: is required when the action is send", jpath);
		if (strcmp(s->action, "send") != 0 && s->variant != NULL)
			return fail(l, "%s.variant: only a send action takes a variant", jpath);
		if (s->variant) {
			for (size_t k = 0; k < d->nsegments; k++)
				if (!variant_for(d, s->variant, d->segments[k].name))
					return fail(l,
					            "%s.variant: no message %s for segment %s (and no shared "
					            "one)",
					            jpath, s->variant, d->segments[k].name);
		}
		if (strcmp(s->condition, "replied") == 0 && strcmp(s->action, "send") == 0)
			return fail(l,
			            "%s.action: a reply stops the sequence, so a 'replied' rule takes call "
			            "or stop",
			            jpath);
		if (s->after_step == 0 && strcmp(s->condition, "always") != 0)
			return fail(l,
			            "%s.condition: after_step 0 (enrollment) takes only an 'always' rule: "
			            "nothing "
			            "was sent yet to be %s",
			            jpath, s->condition);
		if (s->after_step == 0 && strcmp(s->action, "send") != 0)
			return fail(l,
			            "%s.action: the 'always' rule after_step 0 must send the first message",
			            jpath);
		s->position = 0;
		for (size_t k = 0; k + 1 < d->nsteps; k++) {
			const struct campdef_step *o = &d->steps[k];
			if (o->after_step != s->after_step)
				continue;
			s->position++;
			if (s->after_step == 0)
				return fail(l,
				            "%s: after_step 0 must have exactly one rule, $.steps[%zu] is "
				            "one already",
				            jpath, k);
			if (strcmp(o->condition, "always") == 0)
				return fail(l,
				            "%s: never fires: the 'always' rule $.steps[%zu] comes first "
				            "after step %d",
				            jpath, k, s->after_step);
		}
	}
	bool has0 = false;
	for (size_t k = 0; k < d->nsteps; k++)
		has0 = has0 || d->steps[k].after_step == 0;
	if (!has0)
		return fail(l, "$.steps: needs one 'always' send rule with after_step 0 (the first message)");
	/* Every step N a rule follows must be reachable: some rule makes step N (after_step N-1), by
	 * sending or calling. */
	for (size_t k = 0; k < d->nsteps; k++) {
		int n = d->steps[k].after_step;
		bool reachable = n == 0;
		for (size_t j = 0; j < d->nsteps && !reachable; j++)
			reachable =
			        d->steps[j].after_step == n - 1 && strcmp(d->steps[j].action, "stop") != 0;
		if (!reachable)
			return fail(l,
			            "$.steps[%zu].after_step: no rule leads to step %d (none with after_step "
			            "%d sends or "
			            "calls)",
			            k, n, n - 1);
	}
	return 0;
}

struct campdef *
campdef_load(const char *path, char *err, size_t errlen)
{
	struct campdef *d = xcalloc(1, sizeof(*d));
	char *copy = xstrdup(path);
	struct ld l = { .path = path, .dir = xstrdup(dirname(copy)), .err = err, .errlen = errlen };
	json_error_t jerr;
	json_t *root = NULL;

	free(copy);
	d->path = xstrdup(path);
	size_t plen = strlen(path);
	if (plen > 4 && strcmp(path + plen - 4, ".ini") == 0) {
		root = campini_load(path, &l.lines, err, errlen);
		if (root == NULL)
			goto fail;
	} else if ((root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr)) == NULL) {
		if (jerr.line > 0)
			snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
		else
			snprintf(err, errlen, "%s: %s", path, jerr.text);
		goto fail;
	}
	if (load_top(&l, root, d) == -1 || load_segments(&l, root, d) == -1 ||
	    load_messages(&l, root, d) == -1 || load_steps(&l, root, d) == -1)
		goto fail;
	json_decref(root);
	json_decref(l.lines);
	free(l.dir);
	return d;
fail:
	json_decref(root);
	json_decref(l.lines);
	free(l.dir);
	campdef_free(d);
	return NULL;
}

void
campdef_free(struct campdef *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->nsegments; i++) {
		free(d->segments[i].name);
		json_decref(d->segments[i].criteria);
	}
	for (size_t i = 0; i < d->nmessages; i++) {
		struct campdef_message *m = &d->messages[i];
		free(m->variant);
		free(m->segment);
		free(m->subject);
		free(m->html);
		free(m->text);
	}
	for (size_t i = 0; i < d->nsteps; i++) {
		free(d->steps[i].condition);
		free(d->steps[i].action);
		free(d->steps[i].variant);
	}
	free(d->segments);
	free(d->messages);
	free(d->steps);
	free(d->path);
	free(d->name);
	free(d->sender_name);
	free(d->sender_email);
	free(d->reply_to);
	free(d->postal_address);
	free(d->time_zone);
	free(d);
}
