/* campini: a campaign definition written as INI (see campini.h). */
#include "tools/campini.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/inifile.h"

struct ini_load {
	struct inifile in;
	const char *path;
	json_t *root, *lines;
	json_t *cur;       /* the object the current section fills */
	char prefix[128];  /* its JSON path */
	char last_key[64]; /* the last key, to tell a continuation line */
	char *err;
	size_t errlen;
	bool failed;
};

static int ini_fail(struct ini_load *l, const char *fmt, ...) PRINTFLIKE(2, 3);

static int
ini_fail(struct ini_load *l, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(l->err, l->errlen, "%s:%d: %s", l->path, l->in.lineno, msg);
	l->failed = true;
	return 0;
}

static void
note_line(struct ini_load *l, const char *path, int line)
{
	if (json_object_get(l->lines, path) == NULL)
		json_object_set_new(l->lines, path, json_integer(line));
}

static json_t *
list_of(json_t *root, const char *key)
{
	json_t *a = json_object_get(root, key);

	if (a == NULL) {
		a = json_array();
		json_object_set_new(root, key, a);
	}
	return a;
}

/* Starts the object of a new [TYPE NAME...] section. */
static int
new_section(struct ini_load *l, const char *section)
{
	char type[32] = "", rest[256] = "";
	const char *sp = strchr(section, ' ');

	snprintf(type, sizeof(type), "%.*s", sp ? (int)(sp - section) : (int)strlen(section), section);
	if (sp) {
		while (*sp == ' ')
			sp++;
		snprintf(rest, sizeof(rest), "%s", sp);
	}
	l->last_key[0] = '\0';
	if (strcmp(type, "campaign") == 0 && rest[0] == '\0') {
		l->cur = l->root;
		snprintf(l->prefix, sizeof(l->prefix), "$");
		return 1;
	}
	if (strcmp(type, "segment") == 0 && rest[0]) {
		json_t *a = list_of(l->root, "segments");
		l->cur = json_object();
		json_object_set_new(l->cur, "name", json_string(rest));
		json_object_set_new(l->cur, "criteria", json_object());
		snprintf(l->prefix, sizeof(l->prefix), "$.segments[%zu]", json_array_size(a));
		json_array_append_new(a, l->cur);
	} else if (strcmp(type, "message") == 0 && rest[0]) {
		json_t *a = list_of(l->root, "messages");
		char *seg = strchr(rest, ' ');
		l->cur = json_object();
		if (seg) {
			*seg++ = '\0';
			while (*seg == ' ')
				seg++;
			json_object_set_new(l->cur, "segment", json_string(seg));
		}
		json_object_set_new(l->cur, "variant", json_string(rest));
		snprintf(l->prefix, sizeof(l->prefix), "$.messages[%zu]", json_array_size(a));
		json_array_append_new(a, l->cur);
	} else if (strcmp(type, "step") == 0 && rest[0] == '\0') {
		json_t *a = list_of(l->root, "steps");
		l->cur = json_object();
		snprintf(l->prefix, sizeof(l->prefix), "$.steps[%zu]", json_array_size(a));
		json_array_append_new(a, l->cur);
	} else {
		l->in.lineno = l->in.section_line;
		return ini_fail(
		        l,
		        "[%s]: unknown section (known: [campaign], [segment NAME], [message VARIANT], "
		        "[message VARIANT SEGMENT], [step])",
		        section);
	}
	note_line(l, l->prefix, l->in.section_line);
	return 1;
}

/* Appends the comma-separated values of value to list; "..." keeps commas. Integers for ids. */
static int
add_values(struct ini_load *l, json_t *list, const char *value, bool ints)
{
	const char *p = value;

	while (*p) {
		char buf[1024];
		size_t n = 0;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++)
				if (n + 1 < sizeof(buf))
					buf[n++] = *p;
			if (*p != '"')
				return ini_fail(l, "a value opens a \" without closing it");
			p++;
			while (*p == ' ' || *p == '\t')
				p++;
			if (*p && *p != ',')
				return ini_fail(l,
				                "text after a closing \" (values are separated by commas)");
		} else {
			for (; *p && *p != ','; p++)
				if (n + 1 < sizeof(buf))
					buf[n++] = *p;
			while (n > 0 && (buf[n - 1] == ' ' || buf[n - 1] == '\t'))
				n--;
		}
		buf[n] = '\0';
		if (*p == ',')
			p++;
		long v;
		if (ints && util_parse_long(buf, 1, (long)(~0UL >> 1), &v))
			json_array_append_new(list, json_integer(v));
		else
			json_array_append_new(list, json_string(buf));
	}
	return 1;
}

/* A line libinih cut in pieces: named with its own number, as the config file's, rather than a
 * piece taken for a line of its own (a key, or a syntax error lines further on). */
static int
long_line(struct ini_load *l)
{
	char msg[64];

	inifile_long_line_msg(&l->in, msg, sizeof(msg));
	l->in.lineno = l->in.long_line;
	return ini_fail(l, "%s", msg);
}

static int
campini_entry(void *user, const char *section, const char *name, const char *value)
{
	struct ini_load *l = user;
	char path[256];

	if (l->in.long_line)
		return long_line(l);
	if (*section == '\0')
		return ini_fail(l, "%s: key outside any [section]", name);
	if (l->cur == NULL || l->in.new_section) {
		l->in.new_section = false;
		if (!new_section(l, section))
			return 0;
	}
	bool continued = strcmp(name, l->last_key) == 0;
	util_strlcpy(l->last_key, name, sizeof(l->last_key));
	json_t *cur = l->cur;
	if (strncmp(l->prefix, "$.segments", 10) == 0) {
		json_t *crit = json_object_get(cur, "criteria");
		json_t *list = json_object_get(crit, name);
		if (list == NULL) {
			list = json_array();
			json_object_set_new(crit, name, list);
		}
		snprintf(path, sizeof(path), "%s.criteria.%s", l->prefix, name);
		note_line(l, path, l->in.lineno);
		return add_values(l, list, value, strcmp(name, "coordinator_ids") == 0);
	}
	const char *key = name;
	if (cur == l->root && (strcmp(name, "sender_name") == 0 || strcmp(name, "sender_email") == 0)) {
		json_t *sender = json_object_get(cur, "sender");
		if (sender == NULL) {
			sender = json_object();
			json_object_set_new(cur, "sender", sender);
		}
		cur = sender;
		key = name + 7;
		snprintf(path, sizeof(path), "$.sender.%s", key);
	} else {
		snprintf(path, sizeof(path), "%s.%s", l->prefix, name);
	}
	json_t *old = json_object_get(cur, key);
	if (old && continued && json_is_string(old) &&
	    (strcmp(key, "postal_address") == 0 || strcmp(key, "html") == 0 || strcmp(key, "text") == 0)) {
		char *joined = xasprintf("%s\n%s", json_string_value(old), value);
		json_object_set_new(cur, key, json_string(joined));
		free(joined);
		return 1;
	}
	if (old)
		return ini_fail(l, "[%s] %s: set twice (first at line %d)", section, name,
		                (int)json_integer_value(json_object_get(l->lines, path)));
	note_line(l, path, l->in.lineno);
	long v;
	if ((strcmp(key, "after_step") == 0 || strcmp(key, "wait_days") == 0) &&
	    util_parse_long(value, -1000000, 1000000, &v))
		json_object_set_new(cur, key, json_integer(v));
	else if (strcmp(key, "business_days") == 0 &&
	         (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0))
		json_object_set_new(cur, key, json_true());
	else if (strcmp(key, "business_days") == 0 &&
	         (strcmp(value, "false") == 0 || strcmp(value, "no") == 0))
		json_object_set_new(cur, key, json_false());
	else
		json_object_set_new(cur, key, json_string(value));
	return 1;
}

json_t *
campini_load(const char *path, json_t **lines, char *err, size_t errlen)
{
	struct ini_load l = { .path = path, .err = err, .errlen = errlen };

	*lines = NULL;
	if (inifile_open(&l.in, path) == -1) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return NULL;
	}
	l.root = json_object();
	l.lines = json_object();
	int rc = inifile_parse(&l.in, campini_entry, &l, 65536);
	inifile_close(&l.in);
	/* A piece of a cut line that is no key = value stops libinih before any handler sees it. */
	if (l.in.long_line && !l.failed)
		long_line(&l);
	if (rc != 0 || l.failed) {
		/* The line libinih stopped at, as counted here: libinih counts a read that ends a line it
		 * took whole (a line of 65535 bytes and its newline) as a line of its own. */
		if (!l.failed)
			snprintf(err, errlen, "%s:%d: syntax error (expected [section] or key = value)", path,
			         l.in.lineno);
		json_decref(l.root);
		json_decref(l.lines);
		return NULL;
	}
	*lines = l.lines;
	return l.root;
}
