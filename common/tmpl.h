/* tmpl: Mustache templates (no partials, lambdas or delimiter changes) rendered from a JSON context. */
#ifndef OUTREACH_TMPL_H
#define OUTREACH_TMPL_H

#include <stddef.h>

#include <jansson.h>

#include "common/util.h"

/*
 * The language, after https://mustache.github.io/mustache.5.html:
 *
 *   {{name}}             the value, escaped as the render mode says
 *   {{{name}}} {{&name}} the value, never escaped
 *   {{a.b.c}}            a dotted name: a is looked up through the context stack, b and c only
 *                        inside what a names
 *   {{.}}                the current context itself (inside a list section: the item)
 *   {{#name}}..{{/name}} a section: skipped when the value is missing, null, false, "" or an empty
 *                        list; repeated once per item of a non-empty list, with the item as the
 *                        context; otherwise rendered once with the value as the context (an
 *                        object, true, and any other scalar, including 0)
 *   {{^name}}..{{/name}} an inverted section: rendered only when a section would be skipped
 *   {{! comment }}       nothing
 *
 * A name not found in the current context is looked up in the enclosing ones, out to the root.
 * Values render as: a string as it is, an integer in decimal, a real with up to 15 significant
 * digits and no trailing zeros, true and false as "true" and "false"; null, missing values,
 * objects and lists render as nothing.
 *
 * A section, inverted section, close or comment tag that is alone on its line (only spaces and tabs
 * around it) takes the whole line with it, line end included, so sections can sit on lines of their
 * own without leaving blank lines behind. Whitespace inside the braces around a name is ignored.
 * {{>partial}} and {{=<% %>=}} are syntax errors.
 */

struct tmpl;

#define TMPL_MAX_DEPTH 64 /* sections nested deeper than this are a syntax error */

enum tmpl_escape {
	TMPL_HTML, /* {{name}} escapes & < > " ' as &amp; &lt; &gt; &quot; &#39; */
	TMPL_TEXT, /* nothing is escaped: for text/plain parts */
};

/* Compiles text (borrowed; the template keeps its own copy). name (copied; NULL: "template") is the
 * file name used in error messages. On a syntax error returns NULL and writes
 * "NAME:LINE: what is wrong" into err (when err is not NULL and errlen > 0), LINE being the
 * 1-based line of the offending tag. Returns a template the caller frees with tmpl_free. */
struct tmpl *tmpl_parse(const char *text, const char *name, char *err, size_t errlen) MUSTCHECK;

/* Reads the file at path and compiles it with path as its name. On a read error (or a NUL byte in
 * the file) returns NULL with "PATH: what is wrong" in err; on a syntax error as tmpl_parse. */
struct tmpl *tmpl_load(const char *path, char *err, size_t errlen) MUSTCHECK;

/* Renders t with ctx (borrowed; NULL renders as an empty context) as the root context, escaping
 * variables as mode says. Never fails: what the data lacks renders as nothing. Returns a
 * NUL-terminated string the caller frees. */
char *tmpl_render(const struct tmpl *t, const json_t *ctx, enum tmpl_escape mode);

/* The line of t's first {{{name}}} or {{&name}} (a value never escaped), or 0 when it has none. */
unsigned long tmpl_raw_line(const struct tmpl *t);

/* For an HTML template whose values are data written by others: 0 when t escapes every value it
 * puts in; -1 when it has a {{{name}}} or {{&name}}, with "NAME:LINE: {{{...}}} or {{&...}} would
 * put a value into the HTML unescaped; write {{...}}" in err (when err is not NULL and errlen > 0),
 * NAME being tmpl_name(t) and LINE the first such tag's. */
int tmpl_check_escaped(const struct tmpl *t, char *err, size_t errlen) MUSTCHECK;

/* The name given to tmpl_parse or tmpl_load (borrowed, valid until tmpl_free). */
const char *tmpl_name(const struct tmpl *t);

/* Frees t; NULL does nothing. */
void tmpl_free(struct tmpl *t);

#endif
