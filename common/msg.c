/* msg: builds RFC 5322 / MIME email messages as bytes, refusing anything that could inject headers. */
#include "common/msg.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FOLD_PLAIN   78  /* fold headers before this column (RFC 5322 "SHOULD") */
#define FOLD_ENCODED 76  /* lines holding encoded-words (RFC 2047 section 2) */
#define EW_OVERHEAD  12  /* strlen("=?UTF-8?B?") + strlen("?=") */
#define EW_MAX_BYTES 45  /* 60 base64 characters: words of 72 characters, under RFC 2047's 75 */
#define MAX_WORD     900 /* an unfoldable run in an extra header; keeps lines under 998 */
#define MAX_HDR_NAME 64
#define MAX_ID       250
#define QUOTE_MAX    60 /* ASCII display names up to this length may be a quoted-string */

struct buf {
	char *p;
	size_t len, cap;
};

struct mbox {
	char *name; /* NULL: none */
	char *addr;
};

struct xhdr {
	char *name;
	char *value;
};

struct image {
	char *cid;
	char *type;
	unsigned char *data;
	size_t len;
};

struct msg {
	struct mbox from;
	struct mbox reply_to;
	struct mbox *to;
	char **to_addrs;
	size_t nto;
	char *subject;
	struct xhdr *hdrs;
	size_t nhdrs;
	char *text;
	char *html;
	char *cal_method;
	char *cal_ics;
	struct image *imgs;
	size_t nimgs;

	char rand[33];   /* the random left part of generated Message-IDs */
	char *id_fixed;  /* msg_set_id */
	char *id_domain; /* msg_set_id_domain */
	char *id;        /* the current Message-ID */
	time_t date;
	bool has_date;

	char errstr[256];
};

/* --- buffers ------------------------------------------------------------------------------------ */

static void
buf_add(struct buf *b, const void *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (b->len + n + 1 > cap)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
buf_adds(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_addf(struct buf *b, const char *fmt, ...) PRINTFLIKE(2, 3);

static void
buf_addf(struct buf *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		buf_add(b, tmp, (size_t)n);
		return;
	}
	char *big = xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(big, (size_t)n + 1, fmt, ap);
	va_end(ap);
	buf_add(b, big, (size_t)n);
	free(big);
}

/* Hands the buffer over (never NULL, NUL-terminated). */
static char *
buf_take(struct buf *b, size_t *len)
{
	if (b->p == NULL)
		buf_add(b, "", 0);
	if (len != NULL)
		*len = b->len;
	char *p = b->p;
	b->p = NULL;
	b->len = b->cap = 0;
	return p;
}

/* --- errors ------------------------------------------------------------------------------------- */

static int fail(struct msg *m, const char *fmt, ...) PRINTFLIKE(2, 3);

static int
fail(struct msg *m, const char *fmt, ...)
{
	char text[224];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	snprintf(m->errstr, sizeof(m->errstr), "msg: %s", text);
	return -1;
}

/* A value as it may appear in an error message: at most 60 bytes, control characters as '?'. */
static const char *
shown(const char *s, char *out, size_t outlen)
{
	size_t i = 0;

	for (; *s != '\0' && i + 4 < outlen && i < 60; s++)
		out[i++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? '?' : *s;
	if (*s != '\0' && i + 4 <= outlen) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

/* --- checks ------------------------------------------------------------------------------------- */

static bool
utf8_valid(const char *s, size_t n)
{
	unsigned cp;

	for (size_t i = 0; i < n;) {
		size_t k = util_utf8_seq((const unsigned char *)s + i, n - i, &cp);
		if (k == 0)
			return false;
		i += k;
	}
	return true;
}

/* Checks a header value: valid UTF-8 without line breaks or control characters (a tab is allowed
 * when allow_tab). Returns NULL when fine, else what is wrong. */
static const char *
header_text_problem(const char *s, bool allow_tab)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	unsigned cp;

	if (strpbrk(s, "\r\n") != NULL)
		return "contains a line break (CR or LF)";
	for (size_t i = 0; i < n;) {
		size_t k = util_utf8_seq(p + i, n - i, &cp);
		if (k == 0)
			return "is not valid UTF-8";
		if ((cp < 0x20 && !(cp == '\t' && allow_tab)) || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
			return "contains a control character";
		i += k;
	}
	return NULL;
}

static bool
is_ascii(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

/* RFC 5322 atext. */
static bool
is_atext(int c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL;
}

/* dot-atom-text: atext runs separated by single dots. */
static bool
is_dot_atom(const char *s, size_t n)
{
	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return false;
		} else if (!is_atext((unsigned char)s[i])) {
			return false;
		}
	}
	return true;
}

/* A host name: LDH labels of 1..63 characters separated by dots, at most 253 in all. */
static bool
is_domain(const char *s, size_t n)
{
	size_t label = 0;

	if (n == 0 || n > 253 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
			return false;
		if (label == 0 && c == '-')
			return false;
		if (++label > 63)
			return false;
	}
	return s[n - 1] != '-';
}

bool
msg_addr_valid(const char *addr)
{
	const char *at;
	size_t n;

	if (addr == NULL)
		return false;
	n = strlen(addr);
	at = strrchr(addr, '@');
	if (n > 254 || at == NULL || at == addr || (size_t)(at - addr) > 64)
		return false;
	return is_dot_atom(addr, (size_t)(at - addr)) && is_domain(at + 1, strlen(at + 1));
}

const char *
msg_display_name_problem(const char *name)
{
	const char *why = header_text_problem(name, false);

	if (why == NULL && strlen(name) > MSG_MAX_NAME)
		why = "is longer than " UTIL_STR(MSG_MAX_NAME) " bytes";
	return why;
}

/* Checks a display name and address; what names the header for the message. */
static int
check_mailbox(struct msg *m, const char *what, const char *name, const char *addr)
{
	char tmp[80];
	const char *why;

	if (addr == NULL || *addr == '\0')
		return fail(m, "%s: the address is missing", what);
	if (strpbrk(addr, "\r\n") != NULL)
		return fail(m, "%s: address contains a line break (CR or LF)", what);
	if (!msg_addr_valid(addr)) {
		if (!is_ascii(addr))
			return fail(m,
			            "%s: address '%s' is not plain ASCII (give the domain in its xn-- form)",
			            what, shown(addr, tmp, sizeof(tmp)));
		return fail(m, "%s: '%s' is not a plain address like name@example.org", what,
		            shown(addr, tmp, sizeof(tmp)));
	}
	if (name != NULL && (why = msg_display_name_problem(name)) != NULL)
		return fail(m, "%s: display name %s", what, why);
	return 0;
}

/* --- header folding ----------------------------------------------------------------------------- */

struct fold {
	struct buf *b;
	size_t col;   /* characters on the current line */
	size_t limit; /* fold before a line would pass this */
	bool bare;    /* nothing written yet after "Name:" */
};

static void
fold_begin(struct fold *f, struct buf *b, const char *name, size_t limit)
{
	f->b = b;
	buf_adds(b, name);
	buf_add(b, ":", 1);
	f->col = strlen(name) + 1;
	f->limit = limit;
	f->bare = true;
}

/* Appends sep (whitespace, possibly empty) and word; folds before sep when the line would pass the
 * limit. A fold is a CRLF put in front of whitespace, so unfolding gives the same value back. */
static void
fold_put(struct fold *f, const char *sep, size_t seplen, const char *word, size_t wlen)
{
	if (!f->bare && seplen > 0 && f->col + seplen + wlen > f->limit) {
		buf_add(f->b, "\r\n", 2);
		f->col = 0;
	}
	buf_add(f->b, sep, seplen);
	buf_add(f->b, word, wlen);
	f->col += seplen + wlen;
	f->bare = false;
}

static void
fold_end(struct fold *f)
{
	buf_add(f->b, "\r\n", 2);
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 of n bytes into out (room for 4 * ((n + 2) / 3) characters); returns the length. */
static size_t
b64(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0, i = 0;

	for (; i + 2 < n; i += 3) {
		unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = b64chars[v & 63];
	}
	if (i < n) {
		unsigned v = (unsigned)in[i] << 16 | (i + 1 < n ? (unsigned)in[i + 1] << 8 : 0);
		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	return o;
}

/* Writes s as a run of encoded-words separated by spaces, each holding whole UTF-8 characters and
 * sized to the room left on its line. */
static void
fold_encoded(struct fold *f, const char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t avail = f->col + 1 < f->limit ? f->limit - f->col - 1 : 0;
		if (avail < EW_OVERHEAD + 8 && !f->bare) {
			/* The word goes on a new line: fold_put will break the line before its space. */
			avail = f->limit - 1;
		} else if (avail < EW_OVERHEAD + 8) {
			/* A very long header name: the value starts on its own line. */
			buf_add(f->b, "\r\n", 2);
			f->col = 0;
			avail = f->limit - 1;
		}
		size_t n = (avail - EW_OVERHEAD) / 4 * 3;
		if (n > EW_MAX_BYTES)
			n = EW_MAX_BYTES;
		if (n > len - i)
			n = len - i;
		while (i + n < len && n > 0 && ((unsigned char)s[i + n] & 0xc0) == 0x80)
			n--; /* never split a character */

		char word[EW_OVERHEAD + 4 * ((EW_MAX_BYTES + 2) / 3) + 1];
		size_t w = 0;
		memcpy(word, "=?UTF-8?B?", 10);
		w = 10 + b64((const unsigned char *)s + i, n, word + 10);
		memcpy(word + w, "?=", 2);
		w += 2;
		fold_put(f, " ", 1, word, w);
		i += n;
	}
}

/* Writes an ASCII value at its whitespace, keeping the whitespace as it is (leading and trailing
 * blanks dropped). */
static void
fold_ascii(struct fold *f, const char *s)
{
	const char *p = s;

	while (*p == ' ' || *p == '\t')
		p++;
	bool first = true;
	while (*p != '\0') {
		const char *ws = p;
		while (*p == ' ' || *p == '\t')
			p++;
		const char *word = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		if (p == word)
			break; /* trailing blanks */
		if (first)
			fold_put(f, " ", 1, word, (size_t)(p - word));
		else
			fold_put(f, ws, (size_t)(word - ws), word, (size_t)(p - word));
		first = false;
	}
	if (first)
		fold_put(f, " ", 1, "", 0);
}

/* The longest run of non-blank characters in s. */
static size_t
longest_word(const char *s)
{
	size_t best = 0, cur = 0;

	for (; *s != '\0'; s++) {
		if (*s == ' ' || *s == '\t')
			cur = 0;
		else if (++cur > best)
			best = cur;
	}
	return best;
}

/* True when an unstructured value must be written as encoded-words: non-ASCII, something a reader
 * would take for an encoded-word, or a word too long to fold. */
static bool
needs_encoding(const char *value, size_t limit)
{
	return !is_ascii(value) || strstr(value, "=?") != NULL || longest_word(value) > limit - 2;
}

/* Trims blanks at both ends: the bytes to encode. */
static void
trimmed(const char *s, const char **start, size_t *len)
{
	size_t n = strlen(s);

	while (*s == ' ' || *s == '\t') {
		s++;
		n--;
	}
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	*start = s;
	*len = n;
}

/* An unstructured header; when plain_ascii, an ASCII value is never encoded (extra headers may be
 * structured, e.g. List-Unsubscribe). */
static void
write_unstructured(struct buf *b, const char *name, const char *value, bool plain_ascii)
{
	struct fold f;
	bool encode = plain_ascii ? !is_ascii(value) : needs_encoding(value, FOLD_PLAIN);

	fold_begin(&f, b, name, encode ? FOLD_ENCODED : FOLD_PLAIN);
	if (encode) {
		const char *s;
		size_t n;
		trimmed(value, &s, &n);
		if (n == 0)
			fold_put(&f, " ", 1, "", 0);
		else
			fold_encoded(&f, s, n);
	} else {
		fold_ascii(&f, value);
	}
	fold_end(&f);
}

char *
msg_header_line(const char *name, const char *value, char *err, size_t errlen)
{
	struct buf b = { 0 };
	const char *why;

	if ((why = header_text_problem(value, true)) != NULL) {
		snprintf(err, errlen, "msg: %s: value %s", name, why);
		return NULL;
	}
	write_unstructured(&b, name, value, false);
	return buf_take(&b, NULL);
}

/* True when name can be written as it is: atoms separated by single spaces. */
static bool
plain_phrase(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || name[0] == ' ' || name[n - 1] == ' ' || strstr(name, "=?") != NULL)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (name[i] == ' ') {
			if (name[i + 1] == ' ')
				return false;
		} else if (!is_atext((unsigned char)name[i])) {
			return false;
		}
	}
	return true;
}

/* A mailbox: "name <addr>" with the name as atoms, a quoted-string or encoded-words, or a bare
 * addr-spec when there is no name. sep goes in front of its first token. */
static void
fold_mailbox(struct fold *f, const char *sep, const struct mbox *mb)
{
	const char *name = mb->name;

	if (name == NULL) {
		fold_put(f, sep, strlen(sep), mb->addr, strlen(mb->addr));
		return;
	}
	if (plain_phrase(name)) {
		const char *p = name;
		bool first = true;
		while (*p != '\0') {
			const char *w = p;
			while (*p != '\0' && *p != ' ')
				p++;
			fold_put(f, first ? sep : " ", first ? strlen(sep) : 1, w, (size_t)(p - w));
			first = false;
			if (*p == ' ')
				p++;
		}
	} else if (is_ascii(name) && strlen(name) <= QUOTE_MAX && strstr(name, "=?") == NULL) {
		struct buf q = { 0 };
		buf_add(&q, "\"", 1);
		for (const char *p = name; *p != '\0'; p++) {
			if (*p == '"' || *p == '\\')
				buf_add(&q, "\\", 1);
			buf_add(&q, p, 1);
		}
		buf_add(&q, "\"", 1);
		fold_put(f, sep, strlen(sep), q.p, q.len);
		free(q.p);
	} else {
		fold_encoded(f, name, strlen(name)); /* always preceded by a space */
	}
	char *angle = xasprintf("<%s>", mb->addr);
	fold_put(f, " ", 1, angle, strlen(angle));
	free(angle);
}

static bool
mbox_needs_encoding(const struct mbox *mb)
{
	return mb->name != NULL && !plain_phrase(mb->name) &&
	       !(is_ascii(mb->name) && strlen(mb->name) <= QUOTE_MAX && strstr(mb->name, "=?") == NULL);
}

static void
write_mailboxes(struct buf *b, const char *name, const struct mbox *list, size_t n)
{
	struct fold f;
	bool enc = false;

	for (size_t i = 0; i < n; i++)
		enc = enc || mbox_needs_encoding(&list[i]);
	fold_begin(&f, b, name, enc ? FOLD_ENCODED : FOLD_PLAIN);
	for (size_t i = 0; i < n; i++) {
		if (i > 0)
			fold_put(&f, "", 0, ",", 1);
		fold_mailbox(&f, " ", &list[i]);
	}
	fold_end(&f);
}

/* --- body encoders ------------------------------------------------------------------------------ */

static void
qp_line(struct buf *b, const unsigned char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t k = 0; k < n; k++) {
		unsigned char c = s[k];
		bool last = k == n - 1;
		bool enc = c == '=' || c > 126 || (c < 32 && c != '\t') ||
		           ((c == ' ' || c == '\t') && last) ||
		           (k == 0 && c == 'F' && n >= 5 && memcmp(s, "From ", 5) == 0);
		size_t tl = enc ? 3 : 1;

		/* Room for the token, and for a soft-break "=" unless the token ends the line. */
		if (col + tl > (last ? 76 : 75)) {
			buf_add(b, "=\r\n", 3);
			col = 0;
		}
		if (col == 0 && c == '.' && !enc) {
			enc = true; /* a dot opening a line: encoded so that no transport stuffs or eats it */
			tl = 3;
		}
		if (enc) {
			char t[3] = { '=', hex[c >> 4], hex[c & 15] };
			buf_add(b, t, 3);
		} else {
			buf_add(b, &c, 1);
		}
		col += tl;
	}
}

char *
msg_qp_encode(const char *text, size_t len, size_t *outlen)
{
	struct buf b = { 0 };
	size_t i = 0;

	while (i < len) {
		size_t end = i;
		while (end < len && text[end] != '\r' && text[end] != '\n')
			end++;
		qp_line(&b, (const unsigned char *)text + i, end - i);
		buf_add(&b, "\r\n", 2);
		if (end < len && text[end] == '\r') {
			end++;
			if (end < len && text[end] == '\n')
				end++;
		} else if (end < len && text[end] == '\n') {
			end++;
		}
		i = end;
	}
	return buf_take(&b, outlen);
}

char *
msg_base64_encode(const void *bytes, size_t len, size_t *outlen)
{
	struct buf b = { 0 };
	const unsigned char *p = bytes;
	char line[80];

	for (size_t i = 0; i < len; i += 57) {
		size_t n = len - i < 57 ? len - i : 57;
		size_t w = b64(p + i, n, line);
		line[w++] = '\r';
		line[w++] = '\n';
		buf_add(&b, line, w);
	}
	return buf_take(&b, outlen);
}

/* --- the message -------------------------------------------------------------------------------- */

static void
update_id(struct msg *m)
{
	const char *domain = "localhost";

	free(m->id);
	if (m->id_fixed != NULL) {
		m->id = xstrdup(m->id_fixed);
		return;
	}
	if (m->id_domain != NULL)
		domain = m->id_domain;
	else if (m->from.addr != NULL)
		domain = strrchr(m->from.addr, '@') + 1;
	m->id = xasprintf("%s@%s", m->rand, domain);
}

struct msg *
msg_new(void)
{
	struct msg *m = xcalloc(1, sizeof(*m));
	unsigned char r[16];

	util_random(r, sizeof(r));
	util_hex(r, sizeof(r), m->rand);
	update_id(m);
	return m;
}

static void
mbox_clear(struct mbox *mb)
{
	free(mb->name);
	free(mb->addr);
	mb->name = mb->addr = NULL;
}

static void
mbox_set(struct mbox *mb, const char *name, const char *addr)
{
	mbox_clear(mb);
	mb->name = (name != NULL && *name != '\0') ? xstrdup(name) : NULL;
	mb->addr = xstrdup(addr);
}

void
msg_free(struct msg *m)
{
	if (m == NULL)
		return;
	mbox_clear(&m->from);
	mbox_clear(&m->reply_to);
	for (size_t i = 0; i < m->nto; i++)
		mbox_clear(&m->to[i]);
	free(m->to);
	free(m->to_addrs);
	free(m->subject);
	for (size_t i = 0; i < m->nhdrs; i++) {
		free(m->hdrs[i].name);
		free(m->hdrs[i].value);
	}
	free(m->hdrs);
	free(m->text);
	free(m->html);
	free(m->cal_method);
	free(m->cal_ics);
	for (size_t i = 0; i < m->nimgs; i++) {
		free(m->imgs[i].cid);
		free(m->imgs[i].type);
		free(m->imgs[i].data);
	}
	free(m->imgs);
	free(m->id_fixed);
	free(m->id_domain);
	free(m->id);
	free(m);
}

int
msg_set_from(struct msg *m, const char *name, const char *addr)
{
	if (check_mailbox(m, "from", name, addr) < 0)
		return -1;
	mbox_set(&m->from, name, addr);
	update_id(m);
	return 0;
}

int
msg_add_to(struct msg *m, const char *name, const char *addr)
{
	if (check_mailbox(m, "to", name, addr) < 0)
		return -1;
	m->to = xrealloc(m->to, (m->nto + 1) * sizeof(*m->to));
	m->to_addrs = xrealloc(m->to_addrs, (m->nto + 2) * sizeof(*m->to_addrs));
	memset(&m->to[m->nto], 0, sizeof(m->to[m->nto]));
	mbox_set(&m->to[m->nto], name, addr);
	m->to_addrs[m->nto] = m->to[m->nto].addr;
	m->nto++;
	m->to_addrs[m->nto] = NULL;
	return 0;
}

int
msg_set_reply_to(struct msg *m, const char *name, const char *addr)
{
	if (check_mailbox(m, "reply-to", name, addr) < 0)
		return -1;
	mbox_set(&m->reply_to, name, addr);
	return 0;
}

int
msg_set_subject(struct msg *m, const char *subject)
{
	const char *why;

	if (subject == NULL)
		subject = "";
	if ((why = header_text_problem(subject, true)) != NULL)
		return fail(m, "subject: %s", why);
	free(m->subject);
	m->subject = xstrdup(subject);
	return 0;
}

static const char *const reserved_headers[] = {
	"Date",     "From",    "Sender",     "To",           "Cc",          "Bcc",
	"Reply-To", "Subject", "Message-ID", "MIME-Version", "Return-Path", "Received",
};

int
msg_add_header(struct msg *m, const char *name, const char *value)
{
	char tmp[80];
	const char *why;

	if (name == NULL || *name == '\0')
		return fail(m, "header: the name is missing");
	if (strpbrk(name, "\r\n") != NULL)
		return fail(m, "header: name contains a line break (CR or LF)");
	for (const char *p = name; *p != '\0'; p++)
		if ((unsigned char)*p <= 32 || (unsigned char)*p >= 127 || *p == ':')
			return fail(
			        m,
			        "header: '%s' is not a header name (printable ASCII without ':' or spaces)",
			        shown(name, tmp, sizeof(tmp)));
	if (strlen(name) > MAX_HDR_NAME)
		return fail(m, "header: name '%s' is longer than %d characters",
		            shown(name, tmp, sizeof(tmp)), MAX_HDR_NAME);
	for (size_t i = 0; i < NELEM(reserved_headers); i++)
		if (strcasecmp(name, reserved_headers[i]) == 0)
			return fail(m, "header: %s is written by the message itself; use its own setter",
			            name);
	if (strncasecmp(name, "Content-", 8) == 0)
		return fail(m, "header: %s is written by the message itself", name);
	for (size_t i = 0; i < m->nhdrs; i++)
		if (strcasecmp(name, m->hdrs[i].name) == 0)
			return fail(m, "header: %s is already set", name);
	if (value == NULL)
		value = "";
	if ((why = header_text_problem(value, true)) != NULL)
		return fail(m, "header %s: value %s", name, why);
	if (is_ascii(value) && longest_word(value) > MAX_WORD)
		return fail(m, "header %s: value has a word longer than %d octets, which cannot be folded",
		            name, MAX_WORD);
	m->hdrs = xrealloc(m->hdrs, (m->nhdrs + 1) * sizeof(*m->hdrs));
	m->hdrs[m->nhdrs].name = xstrdup(name);
	m->hdrs[m->nhdrs].value = xstrdup(value);
	m->nhdrs++;
	return 0;
}

static int
set_body(struct msg *m, char **slot, const char *what, const char *s)
{
	if (s != NULL && !utf8_valid(s, strlen(s)))
		return fail(m, "%s: is not valid UTF-8", what);
	free(*slot);
	*slot = s != NULL ? xstrdup(s) : NULL;
	return 0;
}

int
msg_set_text(struct msg *m, const char *text)
{
	return set_body(m, &m->text, "text", text);
}

int
msg_set_html(struct msg *m, const char *html)
{
	return set_body(m, &m->html, "html", html);
}

/* True when ics has a "METHOD:" property line whose value is method. */
static bool
ics_has_method(const char *ics, const char *method)
{
	size_t ml = strlen(method);

	for (const char *line = ics; *line != '\0';) {
		const char *end = line + strcspn(line, "\r\n");
		if (strncasecmp(line, "METHOD:", 7) == 0 && (size_t)(end - line - 7) == ml &&
		    strncasecmp(line + 7, method, ml) == 0)
			return true;
		line = end;
		while (*line == '\r' || *line == '\n')
			line++;
	}
	return false;
}

int
msg_add_calendar(struct msg *m, const char *method, const char *ics)
{
	if (method == NULL || (strcmp(method, "REQUEST") != 0 && strcmp(method, "CANCEL") != 0 &&
	                       strcmp(method, "PUBLISH") != 0))
		return fail(m, "calendar: method must be REQUEST, CANCEL or PUBLISH");
	if (ics == NULL || *ics == '\0')
		return fail(m, "calendar: the iCalendar text is missing");
	if (!utf8_valid(ics, strlen(ics)))
		return fail(m, "calendar: is not valid UTF-8");
	if (!ics_has_method(ics, method))
		return fail(m, "calendar: the iCalendar text has no METHOD:%s line", method);
	free(m->cal_method);
	free(m->cal_ics);
	m->cal_method = xstrdup(method);
	m->cal_ics = xstrdup(ics);
	return 0;
}

int
msg_add_inline_image(struct msg *m, const char *content_id, const char *mime_type, const void *bytes,
                     size_t len)
{
	char tmp[80];

	if (content_id == NULL || *content_id == '\0' || strlen(content_id) > 200)
		return fail(m, "image: the content id is missing or longer than 200 characters");
	for (const char *p = content_id; *p != '\0'; p++)
		if (!is_atext((unsigned char)*p) && *p != '.' && *p != '@')
			return fail(m,
			            "image: content id '%s' may hold only letters, digits, '.', '@' and "
			            "!#$%%&'*+-/=?^_`{|}~ (no angle brackets)",
			            shown(content_id, tmp, sizeof(tmp)));
	for (size_t i = 0; i < m->nimgs; i++)
		if (strcmp(m->imgs[i].cid, content_id) == 0)
			return fail(m, "image: content id %s is already used", content_id);
	if (mime_type == NULL || strncasecmp(mime_type, "image/", 6) != 0 || mime_type[6] == '\0' ||
	    strlen(mime_type) > 100)
		return fail(m, "image: type must be image/SUBTYPE, e.g. image/png");
	for (const char *p = mime_type + 6; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
		      strchr("!#$&^_.+-", *p) != NULL))
			return fail(m, "image: type '%s' is not a MIME type",
			            shown(mime_type, tmp, sizeof(tmp)));
	if (bytes == NULL || len == 0)
		return fail(m, "image: %s has no bytes", content_id);
	m->imgs = xrealloc(m->imgs, (m->nimgs + 1) * sizeof(*m->imgs));
	struct image *im = &m->imgs[m->nimgs++];
	im->cid = xstrdup(content_id);
	im->type = xstrdup(mime_type);
	im->data = xmalloc(len);
	memcpy(im->data, bytes, len);
	im->len = len;
	return 0;
}

const char *
msg_id(const struct msg *m)
{
	return m->id;
}

int
msg_set_id(struct msg *m, const char *id)
{
	const char *at;

	if (id == NULL || strpbrk(id, "\r\n") != NULL)
		return fail(m, "message-id: missing or contains a line break");
	at = strrchr(id, '@');
	if (strlen(id) > MAX_ID || at == NULL || !is_dot_atom(id, (size_t)(at - id)) ||
	    !is_dot_atom(at + 1, strlen(at + 1)))
		return fail(m,
		            "message-id: must be LEFT@RIGHT, dot-atoms without angle brackets, at most %d "
		            "characters",
		            MAX_ID);
	free(m->id_fixed);
	m->id_fixed = xstrdup(id);
	update_id(m);
	return 0;
}

int
msg_set_id_domain(struct msg *m, const char *domain)
{
	char tmp[80];

	if (domain == NULL || !is_domain(domain, strlen(domain)))
		return fail(m, "message-id: '%s' is not a domain name",
		            domain ? shown(domain, tmp, sizeof(tmp)) : "");
	free(m->id_domain);
	m->id_domain = xstrdup(domain);
	update_id(m);
	return 0;
}

void
msg_set_date(struct msg *m, time_t when)
{
	m->date = when;
	m->has_date = true;
}

const char *const *
msg_to_addrs(const struct msg *m, size_t *n)
{
	static const char *const none[] = { NULL };

	*n = m->nto;
	return m->nto > 0 ? (const char *const *)m->to_addrs : none;
}

const char *
msg_error(const struct msg *m)
{
	return m->errstr;
}

/* --- rendering ---------------------------------------------------------------------------------- */

static void
write_date(struct buf *b, time_t t)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		                              "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	gmtime_r(&t, &tm);
	buf_addf(b, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", days[tm.tm_wday], tm.tm_mday,
	         months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static void
new_boundary(char *out, size_t len, const char *kind)
{
	unsigned char r[12];
	char hex[25];

	util_random(r, sizeof(r));
	util_hex(r, sizeof(r), hex);
	/* "=_" can occur neither in quoted-printable nor in base64 text. */
	snprintf(out, len, "=_%s_%s", hex, kind);
}

static void
write_qp_part(struct buf *b, const char *type, const char *text)
{
	size_t n;
	char *qp = msg_qp_encode(text, strlen(text), &n);

	buf_addf(b, "Content-Type: %s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n", type);
	buf_add(b, qp, n);
	if (n == 0)
		buf_add(b, "\r\n", 2);
	free(qp);
}

static void
write_html(struct buf *b, const struct msg *m)
{
	char bound[64];

	if (m->nimgs == 0) {
		write_qp_part(b, "text/html; charset=UTF-8", m->html);
		return;
	}
	new_boundary(bound, sizeof(bound), "rel");
	buf_addf(b, "Content-Type: multipart/related; type=\"text/html\";\r\n boundary=\"%s\"\r\n\r\n",
	         bound);
	buf_addf(b, "--%s\r\n", bound);
	write_qp_part(b, "text/html; charset=UTF-8", m->html);
	for (size_t i = 0; i < m->nimgs; i++) {
		const struct image *im = &m->imgs[i];
		size_t n;
		char *enc = msg_base64_encode(im->data, im->len, &n);
		buf_addf(b, "--%s\r\n", bound);
		buf_addf(b,
		         "Content-Type: %s\r\nContent-Transfer-Encoding: base64\r\nContent-ID: <%s>\r\n"
		         "Content-Disposition: inline\r\n\r\n",
		         im->type, im->cid);
		buf_add(b, enc, n);
		free(enc);
	}
	buf_addf(b, "--%s--\r\n", bound);
}

enum part_kind { PART_TEXT, PART_HTML, PART_CALENDAR };

static void
write_part(struct buf *b, const struct msg *m, enum part_kind k)
{
	char type[80];

	switch (k) {
	case PART_TEXT:
		write_qp_part(b, "text/plain; charset=UTF-8", m->text);
		break;
	case PART_HTML:
		write_html(b, m);
		break;
	case PART_CALENDAR:
		snprintf(type, sizeof(type), "text/calendar; charset=UTF-8; method=%s", m->cal_method);
		write_qp_part(b, type, m->cal_ics);
		break;
	}
}

int
msg_render(struct msg *m, char **out, size_t *len)
{
	struct buf b = { 0 };
	enum part_kind parts[3];
	size_t nparts = 0;

	if (m->from.addr == NULL)
		return fail(m, "render: the From address is not set");
	if (m->nto == 0)
		return fail(m, "render: there is no To recipient");
	if (m->text == NULL && m->html == NULL)
		return fail(m, "render: there is neither a text nor an HTML body");
	if (m->nimgs > 0 && m->html == NULL)
		return fail(m, "render: inline images need an HTML body");

	if (m->text != NULL)
		parts[nparts++] = PART_TEXT;
	if (m->html != NULL)
		parts[nparts++] = PART_HTML;
	if (m->cal_ics != NULL)
		parts[nparts++] = PART_CALENDAR;

	write_date(&b, m->has_date ? m->date : time(NULL));
	write_mailboxes(&b, "From", &m->from, 1);
	write_mailboxes(&b, "To", m->to, m->nto);
	if (m->reply_to.addr != NULL)
		write_mailboxes(&b, "Reply-To", &m->reply_to, 1);
	if (m->subject != NULL)
		write_unstructured(&b, "Subject", m->subject, false);
	buf_addf(&b, "Message-ID: <%s>\r\n", m->id);
	buf_adds(&b, "MIME-Version: 1.0\r\n");
	for (size_t i = 0; i < m->nhdrs; i++)
		write_unstructured(&b, m->hdrs[i].name, m->hdrs[i].value, true);

	if (nparts == 1) {
		write_part(&b, m, parts[0]);
	} else {
		char bound[64];
		new_boundary(bound, sizeof(bound), "alt");
		buf_addf(&b, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n\r\n", bound);
		for (size_t i = 0; i < nparts; i++) {
			buf_addf(&b, "--%s\r\n", bound);
			write_part(&b, m, parts[i]);
		}
		buf_addf(&b, "--%s--\r\n", bound);
	}
	*out = buf_take(&b, len);
	return 0;
}
