/* mailtmpl: the templates of one kind of email (subject, text and HTML part) from the template folder. */
#include "common/mailtmpl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

const char *const mailtmpl_kinds[] = {"digest", "manager_digest", "invite", "case", "monthly_report", NULL};

/* The values come from the database (names from the NPI Registry, notes, case summaries, what
 * another application wrote into a campaign's row): in the HTML part each is escaped. After the
 * three templates are in out: 0, or -1 with err and nothing kept. */
static int
check_escaped(struct mailtmpl *out, char *err, size_t errlen)
{
	if (tmpl_check_escaped(out->html, err, errlen) == 0)
		return 0;
	mailtmpl_free(out);
	return -1;
}

int
mailtmpl_load(const char *dir, const char *kind, struct mailtmpl *out, char *err, size_t errlen)
{
	static const char *const parts[] = {"subject", "txt", "html"};
	struct tmpl **slots[] = {&out->subject, &out->text, &out->html};

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < NELEM(parts); i++) {
		char *path = xasprintf("%s/%s.%s.mustache", dir, kind, parts[i]);
		*slots[i] = tmpl_load(path, err, errlen);
		free(path);
		if (*slots[i] == NULL) {
			mailtmpl_free(out);
			return -1;
		}
	}
	return check_escaped(out, err, errlen);
}

int
mailtmpl_parse(struct mailtmpl *out, const char *const src[3], const char *const names[3], char *err, size_t errlen)
{
	struct tmpl **slots[] = {&out->subject, &out->text, &out->html};

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < NELEM(slots); i++) {
		*slots[i] = tmpl_parse(src[i], names[i], err, errlen);
		if (*slots[i] == NULL) {
			mailtmpl_free(out);
			return -1;
		}
	}
	return check_escaped(out, err, errlen);
}

void
mailtmpl_free(struct mailtmpl *t)
{
	if (t == NULL)
		return;
	tmpl_free(t->subject);
	tmpl_free(t->text);
	tmpl_free(t->html);
	memset(t, 0, sizeof(*t));
}

void
mailtmpl_render(const struct mailtmpl *t, const json_t *ctx, char **subject, char **text, char **html)
{
	char *s = tmpl_render(t->subject, ctx, TMPL_TEXT);
	char *w = s;
	bool space = false;

	/* A subject is one line of text: every run of white space and control characters (a value from
	 * the database may hold any: a line break, a vertical tab, an escape, U+0080..U+009F) becomes a
	 * single space, so that what the templates put in never breaks the header nor gets it refused. */
	for (const char *r = s; *r; r++) {
		size_t ctl = util_control_len(r);
		if (*r == ' ' || ctl > 0) {
			r += ctl > 1 ? ctl - 1 : 0;
			space = w != s;
			continue;
		}
		if (space)
			*w++ = ' ';
		space = false;
		*w++ = *r;
	}
	*w = '\0';
	*subject = s;
	*text = tmpl_render(t->text, ctx, TMPL_TEXT);
	*html = tmpl_render(t->html, ctx, TMPL_HTML);
}
