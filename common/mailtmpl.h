/* mailtmpl: the templates of one kind of email (subject, text and HTML part) from the template folder. */
#ifndef OUTREACH_MAILTMPL_H
#define OUTREACH_MAILTMPL_H

#include <jansson.h>
#include <stddef.h>

#include "common/tmpl.h"
#include "common/util.h"

/* The kinds of email outreach sends; each has KIND.subject.mustache, KIND.txt.mustache and
 * KIND.html.mustache in alerts.template_dir. */
extern const char *const mailtmpl_kinds[];

struct mailtmpl {
	struct tmpl *subject;
	struct tmpl *text;
	struct tmpl *html;
};

/* Loads the three templates of kind from dir; -1 with "FILE:LINE: what" (or the unreadable file)
 * in err, and nothing loaded. An HTML part with {{{...}}} or {{&...}} is refused (tmpl_check_escaped). */
int mailtmpl_load(const char *dir, const char *kind, struct mailtmpl *out, char *err, size_t errlen) MUSTCHECK;
void mailtmpl_free(struct mailtmpl *t);

/* Parses the three templates from their texts (subject, text part, HTML part); names[i] starts
 * the messages about src[i] ("NAME:LINE: what"). -1 with err, and nothing kept. An HTML part with
 * {{{...}}} or {{&...}} is refused, as by mailtmpl_load. */
int mailtmpl_parse(struct mailtmpl *out, const char *const src[3], const char *const names[3], char *err,
                   size_t errlen) MUSTCHECK;

/* Renders the three parts (caller frees each). The subject is flattened to one line: every run of
 * white space, line breaks and other control characters becomes one space, and it is trimmed. */
void mailtmpl_render(const struct mailtmpl *t, const json_t *ctx, char **subject, char **text, char **html);

#endif
