/* tmpl: Mustache templates (no partials, lambdas or delimiter changes) rendered from a JSON context. */
#include "common/tmpl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A template compiles to a flat list of nodes. Text and names are spans of the template's own copy
 * of its source. A section and its close point at each other, so rendering is a loop over the list
 * with an explicit stack of at most TMPL_MAX_DEPTH contexts: no recursion, and each node costs
 * constant work per pass plus a lookup bounded by the depth.
 */

enum node_kind {
	N_TEXT,     /* literal text */
	N_VAR,      /* {{name}} */
	N_RAW,      /* {{{name}}}, {{&name}} */
	N_SECTION,  /* {{#name}} */
	N_INVERTED, /* {{^name}} */
	N_CLOSE,    /* {{/name}} */
	N_COMMENT,  /* {{!...}}: only while parsing, never stored */
};

struct node {
	enum node_kind kind;
	size_t off, len;    /* the text, or the name ("." for the current context) */
	size_t jump;        /* a section's close, or a close's section */
	unsigned long line; /* where the tag is, for errors */
};

struct tmpl {
	char *name;
	char *src;
	struct node *nodes;
	size_t n, cap;
};

struct parser {
	struct tmpl *t;
	const char *s;
	size_t counted;     /* newlines in s[0..counted) are counted in line */
	unsigned long line; /* the line s[counted] is on */
	size_t open[TMPL_MAX_DEPTH];
	size_t depth;
	char *err;
	size_t errlen;
};

static int fail(struct parser *p, unsigned long line, const char *fmt, ...) PRINTFLIKE(3, 4);

/* Writes "NAME:LINE: message" into the caller's buffer; returns -1 for the caller to pass on. */
static int
fail(struct parser *p, unsigned long line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (p->err == NULL || p->errlen == 0)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errlen, "%s:%lu: %s", p->t->name, line, msg);
	return -1;
}

/* The 1-based line of s[pos]; pos never goes backwards between calls. */
static unsigned long
line_at(struct parser *p, size_t pos)
{
	for (; p->counted < pos; p->counted++)
		if (p->s[p->counted] == '\n')
			p->line++;
	return p->line;
}

static size_t
add_node(struct tmpl *t, enum node_kind kind, size_t off, size_t len, unsigned long line)
{
	if (t->n == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 32;
		t->nodes = xrealloc(t->nodes, t->cap * sizeof(*t->nodes));
	}
	t->nodes[t->n] = (struct node){ .kind = kind, .off = off, .len = len, .line = line };
	return t->n++;
}

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* A name is "." or dot-separated parts, each without blanks or braces; a sigil is not a name. */
static bool
valid_name(const char *s, size_t n)
{
	if (n == 1 && s[0] == '.')
		return true;
	if (n == 0 || strchr("#^/!&>=.", s[0]) != NULL || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (is_blank(s[i]) || s[i] == '{' || s[i] == '}')
			return false;
		if (s[i] == '.' && s[i + 1] == '.')
			return false;
	}
	return true;
}

struct tag {
	enum node_kind kind;
	size_t name_off, name_len;
	size_t end; /* just past the closing braces */
};

/* Reads the tag whose "{{" is at s[at]. */
static int
read_tag(struct parser *p, size_t at, unsigned long line, struct tag *tag)
{
	const char *s = p->s, *q = s + at + 2, *close;
	char sigil = *q;

	if (sigil == '{') {
		q++;
		close = strstr(q, "}}");
		if (close == NULL || memmem(q, (size_t)(close - q), "{{", 2) != NULL)
			return fail(p, line, "unclosed tag: '{{{' without a matching '}}}'");
		if (close[2] != '}')
			return fail(p, line, "'{{{' is closed by '}}' instead of '}}}'");
		tag->kind = N_RAW;
		tag->end = (size_t)(close - s) + 3;
	} else {
		switch (sigil) {
		case '#':
			tag->kind = N_SECTION;
			break;
		case '^':
			tag->kind = N_INVERTED;
			break;
		case '/':
			tag->kind = N_CLOSE;
			break;
		case '&':
			tag->kind = N_RAW;
			break;
		case '!':
			tag->kind = N_COMMENT;
			break;
		case '>':
			return fail(p, line, "partials ({{>name}}) are not supported");
		case '=':
			return fail(p, line, "changing delimiters ({{=...=}}) is not supported");
		default:
			tag->kind = N_VAR;
			break;
		}
		if (tag->kind != N_VAR)
			q++;
		close = strstr(q, "}}");
		if (close == NULL)
			return fail(p, line, "unclosed %s: '{{' without a matching '}}'",
			            tag->kind == N_COMMENT ? "comment" : "tag");
		if (tag->kind != N_COMMENT && memmem(q, (size_t)(close - q), "{{", 2) != NULL)
			return fail(p, line, "unclosed tag: '{{' without a matching '}}'");
		tag->end = (size_t)(close - s) + 2;
	}
	if (tag->kind == N_COMMENT)
		return 0;

	while (q < close && is_blank(*q))
		q++;
	while (close > q && is_blank(close[-1]))
		close--;
	tag->name_off = (size_t)(q - s);
	tag->name_len = (size_t)(close - q);
	if (tag->name_len == 0)
		return fail(p, line, "empty tag name");
	if (!valid_name(q, tag->name_len))
		return fail(p, line, "bad tag name '%.*s'", (int)tag->name_len, q);
	return 0;
}

/* If the tag s[at..end) is alone on its line, widens it to the whole line: *text_end becomes the
 * line's start and *next the start of the following line. */
static void
standalone(const char *s, size_t at, size_t end, size_t *text_end, size_t *next)
{
	size_t ls = at, e = end;

	while (ls > 0 && (s[ls - 1] == ' ' || s[ls - 1] == '\t'))
		ls--;
	if (ls > 0 && s[ls - 1] != '\n')
		return;
	while (s[e] == ' ' || s[e] == '\t')
		e++;
	if (s[e] == '\n')
		e++;
	else if (s[e] == '\r' && s[e + 1] == '\n')
		e += 2;
	else if (s[e] != '\0')
		return;
	*text_end = ls;
	*next = e;
}

static int
add_tag(struct parser *p, const struct tag *tag, unsigned long line)
{
	struct tmpl *t = p->t;
	size_t i, close;

	switch (tag->kind) {
	case N_COMMENT:
		return 0;
	case N_VAR:
	case N_RAW:
		add_node(t, tag->kind, tag->name_off, tag->name_len, line);
		return 0;
	case N_SECTION:
	case N_INVERTED:
		if (p->depth == TMPL_MAX_DEPTH)
			return fail(p, line, "sections nested more than %d deep", TMPL_MAX_DEPTH);
		p->open[p->depth++] = add_node(t, tag->kind, tag->name_off, tag->name_len, line);
		return 0;
	case N_CLOSE:
		if (p->depth == 0)
			return fail(p, line, "{{/%.*s}} closes a section that was never opened",
			            (int)tag->name_len, p->s + tag->name_off);
		i = p->open[p->depth - 1];
		if (t->nodes[i].len != tag->name_len ||
		    memcmp(p->s + t->nodes[i].off, p->s + tag->name_off, tag->name_len) != 0)
			return fail(p, line, "{{/%.*s}} does not match {{%c%.*s}} opened on line %lu",
			            (int)tag->name_len, p->s + tag->name_off,
			            t->nodes[i].kind == N_SECTION ? '#' : '^', (int)t->nodes[i].len,
			            p->s + t->nodes[i].off, t->nodes[i].line);
		close = add_node(t, N_CLOSE, tag->name_off, tag->name_len, line); /* may move t->nodes */
		t->nodes[i].jump = close;
		t->nodes[close].jump = i;
		p->depth--;
		return 0;
	case N_TEXT:
		break;
	}
	return 0;
}

static int
parse(struct parser *p)
{
	const char *s = p->s;
	size_t pos = 0;

	for (;;) {
		const char *o = strstr(s + pos, "{{");
		if (o == NULL) {
			size_t len = strlen(s + pos);
			if (len > 0)
				add_node(p->t, N_TEXT, pos, len, 0);
			break;
		}

		size_t at = (size_t)(o - s);
		unsigned long line = line_at(p, at);
		struct tag tag = { .kind = N_TEXT };
		if (read_tag(p, at, line, &tag) == -1)
			return -1;

		size_t text_end = at, next = tag.end;
		if (tag.kind != N_VAR && tag.kind != N_RAW)
			standalone(s, at, tag.end, &text_end, &next);
		if (text_end > pos)
			add_node(p->t, N_TEXT, pos, text_end - pos, 0);
		if (add_tag(p, &tag, line) == -1)
			return -1;
		pos = next;
	}
	if (p->depth > 0) {
		const struct node *nd = &p->t->nodes[p->open[p->depth - 1]];
		return fail(p, nd->line, "unclosed section {{%c%.*s}}: no {{/%.*s}} before the end",
		            nd->kind == N_SECTION ? '#' : '^', (int)nd->len, s + nd->off, (int)nd->len,
		            s + nd->off);
	}
	return 0;
}

struct tmpl *
tmpl_parse(const char *text, const char *name, char *err, size_t errlen)
{
	struct tmpl *t = xcalloc(1, sizeof(*t));
	struct parser p = { .t = t, .line = 1, .err = err, .errlen = errlen };

	t->name = xstrdup(name ? name : "template");
	t->src = xstrdup(text);
	p.s = t->src;
	if (parse(&p) == -1) {
		tmpl_free(t);
		return NULL;
	}
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	return t;
}

struct tmpl *
tmpl_load(const char *path, char *err, size_t errlen)
{
	size_t len;
	char *text = util_read_file(path, &len);
	struct tmpl *t;

	if (text == NULL) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: cannot read the template: %s", path, strerror(errno));
		return NULL;
	}
	if (strlen(text) != len) {
		if (err != NULL && errlen > 0)
			snprintf(err, errlen, "%s: contains a NUL byte; a template must be text", path);
		free(text);
		return NULL;
	}
	t = tmpl_parse(text, path, err, errlen);
	free(text);
	return t;
}

const char *
tmpl_name(const struct tmpl *t)
{
	return t->name;
}

void
tmpl_free(struct tmpl *t)
{
	if (t == NULL)
		return;
	free(t->nodes);
	free(t->src);
	free(t->name);
	free(t);
}

/* --- rendering ---------------------------------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->cap - b->len < n + 1) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap - b->len < n + 1)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
buf_add_html(struct buf *b, const char *s, size_t n)
{
	size_t run = 0;

	for (size_t i = 0; i < n; i++) {
		const char *rep;
		switch (s[i]) {
		case '&':
			rep = "&amp;";
			break;
		case '<':
			rep = "&lt;";
			break;
		case '>':
			rep = "&gt;";
			break;
		case '"':
			rep = "&quot;";
			break;
		case '\'':
			rep = "&#39;";
			break;
		default:
			continue;
		}
		buf_add(b, s + run, i - run);
		buf_add(b, rep, strlen(rep));
		run = i + 1;
	}
	buf_add(b, s + run, n - run);
}

static void
put_value(struct buf *b, const json_t *v, bool escape)
{
	char num[64];
	const char *s;
	size_t n;

	switch (json_typeof(v)) {
	case JSON_STRING:
		s = json_string_value(v);
		n = json_string_length(v);
		break;
	case JSON_INTEGER:
		n = (size_t)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		s = num;
		break;
	case JSON_REAL:
		n = (size_t)snprintf(num, sizeof(num), "%.15g", json_real_value(v));
		s = num;
		break;
	case JSON_TRUE:
		s = "true";
		n = 4;
		break;
	case JSON_FALSE:
		s = "false";
		n = 5;
		break;
	default: /* null, objects and lists */
		return;
	}
	if (escape)
		buf_add_html(b, s, n);
	else
		buf_add(b, s, n);
}

/* Finds name among the contexts stack[0..top], innermost first; NULL when it is missing. */
static const json_t *
lookup(const json_t *const *stack, size_t top, const char *name, size_t len)
{
	const json_t *v = NULL;
	size_t seg = 0;

	if (len == 1 && name[0] == '.')
		return stack[top];
	while (seg < len && name[seg] != '.')
		seg++;
	for (size_t i = top + 1; i-- > 0;)
		if (json_is_object(stack[i]) && (v = json_object_getn(stack[i], name, seg)) != NULL)
			break;
	while (v != NULL && seg < len) {
		name += seg + 1;
		len -= seg + 1;
		for (seg = 0; seg < len && name[seg] != '.'; seg++)
			;
		v = json_is_object(v) ? json_object_getn(v, name, seg) : NULL;
	}
	return v;
}

static bool
falsy(const json_t *v)
{
	/* An empty string is false too, so that {{#phone}}Phone: {{phone}}{{/phone}} drops the line; so is
	 * the number 0, so that {{#count}}...{{/count}} shows only when there is something to count (a first
	 * invite's sequence 0 is no update). */
	return v == NULL || json_is_null(v) || json_is_false(v) || (json_is_array(v) && json_array_size(v) == 0) ||
	       (json_is_string(v) && json_string_length(v) == 0) || (json_is_integer(v) && json_integer_value(v) == 0) ||
	       (json_is_real(v) && json_real_value(v) == 0.0);
}

unsigned long
tmpl_raw_line(const struct tmpl *t)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->nodes[i].kind == N_RAW)
			return t->nodes[i].line;
	return 0;
}

int
tmpl_check_escaped(const struct tmpl *t, char *err, size_t errlen)
{
	unsigned long line = tmpl_raw_line(t);

	if (line == 0)
		return 0;
	if (err != NULL && errlen > 0)
		snprintf(err, errlen,
		         "%s:%lu: {{{...}}} or {{&...}} would put a value into the HTML unescaped; "
		         "write {{...}}",
		         t->name, line);
	return -1;
}

char *
tmpl_render(const struct tmpl *t, const json_t *ctx, enum tmpl_escape mode)
{
	const json_t *stack[TMPL_MAX_DEPTH + 1];
	struct {
		const json_t *list; /* the list a section repeats over, or NULL */
		size_t idx;
	} frames[TMPL_MAX_DEPTH + 1];
	struct buf b = { 0 };
	size_t top = 0, i = 0;

	buf_add(&b, "", 0);
	stack[0] = ctx;
	while (i < t->n) {
		const struct node *nd = &t->nodes[i];
		const char *name = t->src + nd->off;
		const json_t *v;

		switch (nd->kind) {
		case N_TEXT:
			buf_add(&b, name, nd->len);
			break;
		case N_VAR:
		case N_RAW:
			v = lookup(stack, top, name, nd->len);
			if (v != NULL)
				put_value(&b, v, nd->kind == N_VAR && mode == TMPL_HTML);
			break;
		case N_SECTION:
			v = lookup(stack, top, name, nd->len);
			if (falsy(v)) {
				i = nd->jump;
				break;
			}
			top++;
			if (json_is_array(v)) {
				frames[top].list = v;
				frames[top].idx = 0;
				stack[top] = json_array_get(v, 0);
			} else {
				frames[top].list = NULL;
				stack[top] = v;
			}
			break;
		case N_INVERTED:
			if (!falsy(lookup(stack, top, name, nd->len)))
				i = nd->jump;
			break;
		case N_CLOSE:
			if (t->nodes[nd->jump].kind != N_SECTION)
				break;
			if (frames[top].list != NULL &&
			    ++frames[top].idx < json_array_size(frames[top].list)) {
				stack[top] = json_array_get(frames[top].list, frames[top].idx);
				i = nd->jump;
			} else {
				top--;
			}
			break;
		case N_COMMENT:
			break;
		}
		i++;
	}
	return b.p;
}
