/* test_msg: message building: RFC 2047 headers, quoted-printable, MIME structure, injection refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/msg.h"

/* --- helpers: small decoders, independent of the module's encoders ---------------------------- */

static int
b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decodes base64 (line breaks skipped) into out; returns the byte count. */
static size_t
b64_decode(const char *s, size_t n, unsigned char *out)
{
	unsigned acc = 0;
	int bits = 0;
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int v = b64val((unsigned char)s[i]);
		if (s[i] == '=' || s[i] == '\r' || s[i] == '\n')
			continue;
		assert_true(v >= 0);
		acc = acc << 6 | (unsigned)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	return o;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decodes quoted-printable; returns a malloc'd NUL-terminated string with CRLF line ends. */
static char *
qp_decode(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	size_t o = 0;

	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '=') {
			out[o++] = s[i];
			continue;
		}
		if (i + 2 < n && s[i + 1] == '\r' && s[i + 2] == '\n') {
			i += 2; /* soft line break */
			continue;
		}
		assert_true(i + 2 < n);
		int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
		assert_true(hi >= 0 && lo >= 0);
		out[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	out[o] = '\0';
	return out;
}

/* The value of header name in a rendered message, unfolded (CRLF before whitespace removed);
 * NULL when absent. Caller frees. */
static char *
header_value(const char *msg, const char *name)
{
	const char *end = strstr(msg, "\r\n\r\n");
	size_t nl = strlen(name);

	assert_non_null(end);
	for (const char *line = msg; line < end;) {
		const char *eol = strstr(line, "\r\n");
		if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
			char *v = malloc((size_t)(end - line) + 1);
			size_t o = 0;
			const char *p = line + nl + 1;
			assert_non_null(v);
			for (;;) {
				const char *e = strstr(p, "\r\n");
				memcpy(v + o, p, (size_t)(e - p));
				o += (size_t)(e - p);
				p = e + 2;
				if (*p != ' ' && *p != '\t')
					break;
			}
			v[o] = '\0';
			char *s = v;
			while (*s == ' ')
				s++;
			memmove(v, s, strlen(s) + 1);
			return v;
		}
		line = eol + 2;
	}
	return NULL;
}

/* Decodes RFC 2047 B encoded-words in an unfolded value (blanks between adjacent words dropped);
 * checks each word's length and that each decodes to whole UTF-8 characters. Caller frees. */
static char *
ew_decode(const char *v, int *nwords)
{
	char *out = malloc(strlen(v) + 1);
	size_t o = 0, after_ew = 0;
	bool prev_ew = false;

	assert_non_null(out);
	*nwords = 0;
	for (const char *p = v; *p != '\0';) {
		if (strncmp(p, "=?UTF-8?B?", 10) == 0) {
			const char *e = strstr(p + 10, "?=");
			assert_non_null(e);
			size_t wlen = (size_t)(e + 2 - p);
			assert_true(wlen <= 75);
			if (prev_ew)
				o = after_ew; /* drop the blanks between two encoded-words */
			size_t start = o;
			o += b64_decode(p + 10, (size_t)(e - p - 10), (unsigned char *)out + o);
			/* whole characters: the word does not start with a continuation byte, nor end inside
			 * a multibyte sequence */
			assert_true(((unsigned char)out[start] & 0xc0) != 0x80);
			size_t k = o - 1;
			while (k > start && ((unsigned char)out[k] & 0xc0) == 0x80)
				k--;
			unsigned char lead = (unsigned char)out[k];
			size_t need = lead < 0x80 ? 1 : lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
			assert_int_equal(o - k, need);
			(*nwords)++;
			prev_ew = true;
			after_ew = o;
			p = e + 2;
			continue;
		}
		if (*p != ' ')
			prev_ew = false;
		out[o++] = *p++;
	}
	out[o] = '\0';
	return out;
}

static char *
render(struct msg *m, size_t *lenp)
{
	char *out = NULL;
	size_t len = 0;

	if (msg_render(m, &out, &len) < 0)
		fail_msg("msg_render: %s", msg_error(m));
	assert_int_equal(strlen(out), len);
	if (lenp != NULL)
		*lenp = len;
	return out;
}

/* Every line ends with CRLF, is 7-bit and at most max octets (without the CRLF). */
static void
check_lines(const char *s, size_t len, size_t max)
{
	size_t col = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		assert_true(c < 128);
		if (c == '\n') {
			assert_true(i > 0 && s[i - 1] == '\r');
			continue;
		}
		if (c == '\r') {
			assert_true(i + 1 < len && s[i + 1] == '\n');
			if (col > max)
				fail_msg("line of %zu octets (max %zu) at offset %zu", col, max, i - col);
			col = 0;
			continue;
		}
		col++;
	}
	assert_int_equal(col, 0); /* the last line is terminated too */
}

/* Each line of the header block holding name is at most max characters. */
static void
check_header_lines(const char *msg, const char *name, size_t max)
{
	const char *end = strstr(msg, "\r\n\r\n");
	size_t nl = strlen(name);
	bool in = false;

	for (const char *line = msg; line < end;) {
		const char *eol = strstr(line, "\r\n");
		if (line[0] != ' ' && line[0] != '\t')
			in = strncasecmp(line, name, nl) == 0 && line[nl] == ':';
		if (in && (size_t)(eol - line) > max)
			fail_msg("%s line of %zu characters: %.*s", name, (size_t)(eol - line),
			         (int)(eol - line), line);
		line = eol + 2;
	}
}

static struct msg *
basic(void)
{
	struct msg *m = msg_new();

	assert_int_equal(msg_set_from(m, "Outreach", "outreach@clinic.example.org"), 0);
	assert_int_equal(msg_add_to(m, NULL, "dr.lee@practice.example.com"), 0);
	assert_int_equal(msg_set_subject(m, "Hello"), 0);
	assert_int_equal(msg_set_text(m, "Hello\n"), 0);
	assert_int_equal(msg_set_html(m, "<p>Hello</p>\n"), 0);
	return m;
}

/* --- tests ------------------------------------------------------------------------------------- */

static void
test_rfc2047_display_name(void **state)
{
	struct msg *m = msg_new();
	int nw;

	(void)state;
	assert_int_equal(msg_set_from(m, "Dr. José Núñez", "jose.nunez@clinic.example.org"), 0);
	assert_int_equal(msg_add_to(m, "Ana María Ñúñez-Gómez", "ana@practice.example.com"), 0);
	assert_int_equal(msg_set_text(m, "x"), 0);
	char *out = render(m, NULL);

	char *from = header_value(out, "From");
	assert_non_null(from);
	assert_non_null(strstr(from, "=?UTF-8?B?"));
	assert_non_null(strstr(from, " <jose.nunez@clinic.example.org>"));
	assert_null(strstr(from, "José")); /* no raw 8-bit byte */
	char *dec = ew_decode(from, &nw);
	assert_true(nw >= 1);
	assert_string_equal(dec, "Dr. José Núñez <jose.nunez@clinic.example.org>");
	check_header_lines(out, "From", 76);
	free(dec);

	char *to = header_value(out, "To");
	dec = ew_decode(to, &nw);
	assert_string_equal(dec, "Ana María Ñúñez-Gómez <ana@practice.example.com>");
	free(dec);
	free(to);
	free(from);
	free(out);
	msg_free(m);
}

static void
test_rfc2047_long_subject(void **state)
{
	/* 2- 3- and 4-byte characters so that word splits must respect character boundaries. */
	const char *subject =
	        "Référence de votre patient — suivi après la consultation spécialisée 🩺 du "
	        "mardi: résultats d’imagerie, ordonnances, prochaines étapes et coordonnées du "
	        "cabinet (Núñez, José) — merci de confirmer la réception ✅ avant vendredi";
	struct msg *m = basic();
	int nw;

	(void)state;
	assert_int_equal(msg_set_subject(m, subject), 0);
	char *out = render(m, NULL);
	char *v = header_value(out, "Subject");
	char *dec = ew_decode(v, &nw);
	assert_string_equal(dec, subject);
	assert_true(nw >= 4);
	check_header_lines(out, "Subject", 76);
	free(dec);
	free(v);
	free(out);

	/* The same through the public header-line helper, starting right after "Subject:". */
	char err[128];
	char *line = msg_header_line("Subject", subject, err, sizeof(err));
	assert_non_null(line);
	assert_true(strncmp(line, "Subject: =?UTF-8?B?", 19) == 0);
	for (char *p = line; *p != '\0';) {
		char *e = strstr(p, "\r\n");
		assert_non_null(e);
		assert_true(e - p <= 76);
		p = e + 2;
		if (*p != '\0')
			assert_true(*p == ' ');
	}
	free(line);

	/* A plain ASCII subject stays readable and folds at spaces at 78. */
	const char *ascii = "Quarterly referral review for the orthopedic service line: volumes, turnaround "
	                    "times and the physicians we should visit next quarter";
	assert_int_equal(msg_set_subject(m, ascii), 0);
	out = render(m, NULL);
	v = header_value(out, "Subject");
	assert_string_equal(v, ascii);
	check_header_lines(out, "Subject", 78);
	free(v);
	free(out);

	/* Text that looks like an encoded-word is encoded so that readers show it as typed. */
	assert_int_equal(msg_set_subject(m, "about =?UTF-8?B?Zm9v?= tokens"), 0);
	out = render(m, NULL);
	v = header_value(out, "Subject");
	dec = ew_decode(v, &nw);
	assert_string_equal(dec, "about =?UTF-8?B?Zm9v?= tokens");
	free(dec);
	free(v);
	free(out);
	msg_free(m);
}

static void
test_ascii_display_names(void **state)
{
	struct msg *m = basic();

	(void)state;
	assert_int_equal(msg_set_from(m, "Smith, John", "john.smith@x.example"), 0);
	assert_int_equal(msg_add_to(m, "Ann Lee", "ann@x.example"), 0);
	assert_int_equal(msg_add_to(m, "Dr. \"Doc\" O\\Hara", "doc@x.example"), 0);
	assert_int_equal(msg_set_reply_to(m, "Referrals (desk)", "desk@x.example"), 0);
	char *out = render(m, NULL);
	char *from = header_value(out, "From");
	assert_string_equal(from, "\"Smith, John\" <john.smith@x.example>");
	char *to = header_value(out, "To");
	assert_string_equal(to, "dr.lee@practice.example.com, Ann Lee <ann@x.example>, "
	                        "\"Dr. \\\"Doc\\\" O\\\\Hara\" <doc@x.example>");
	char *rt = header_value(out, "Reply-To");
	assert_string_equal(rt, "\"Referrals (desk)\" <desk@x.example>");
	check_header_lines(out, "To", 78);
	free(rt);
	free(to);
	free(from);
	free(out);
	msg_free(m);
}

/* Encodes in, decodes, compares with in's lines joined by CRLF; checks the encoded lines. */
static void
qp_roundtrip(const char *in)
{
	size_t n, len = strlen(in);
	char *enc = msg_qp_encode(in, len, &n);

	check_lines(enc, n, 76);
	for (size_t i = 0; i + 1 < n; i++) /* no blank at the end of an encoded line */
		if (enc[i + 1] == '\r' && (enc[i] == ' ' || enc[i] == '\t'))
			fail_msg("blank before a line end at %zu", i);
	char *dec = qp_decode(enc, n);

	/* The expected text: every line end as CRLF, the last line terminated. */
	char *want = malloc(2 * len + 3);
	size_t o = 0;
	assert_non_null(want);
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\r' || in[i] == '\n') {
			if (in[i] == '\r' && i + 1 < len && in[i + 1] == '\n')
				i++;
			want[o++] = '\r';
			want[o++] = '\n';
		} else {
			want[o++] = in[i];
		}
	}
	if (len > 0 && in[len - 1] != '\n' && in[len - 1] != '\r') {
		want[o++] = '\r';
		want[o++] = '\n';
	}
	want[o] = '\0';
	assert_string_equal(dec, want);
	free(want);
	free(dec);
	free(enc);
}

static void
test_quoted_printable(void **state)
{
	char longline[1200];
	char *p = longline;

	(void)state;
	qp_roundtrip("");
	qp_roundtrip("plain line");
	qp_roundtrip("a = b\r\nc==d\n");
	qp_roundtrip("trailing space \ntrailing tab\t\n  \n\t");
	qp_roundtrip("Hola José, ¿cómo está? — 🩺\n");
	qp_roundtrip(".a leading dot\n.\nFrom the start\nFrom\n");
	qp_roundtrip("mixed\rline\r\nends\n\n\nend");
	qp_roundtrip("ctl \x01\x1b\x7f bytes");
	/* A long line mixing literal and encoded bytes: soft breaks never split an escape. */
	for (int i = 0; i < 100; i++) {
		memcpy(p, "ab=é ", 6);
		p += 6;
	}
	*p = '\0';
	qp_roundtrip(longline);
	memset(longline, '=', 500);
	longline[500] = '\0';
	qp_roundtrip(longline);

	size_t n;
	char *enc = msg_qp_encode("x=1 \n", 5, &n);
	assert_string_equal(enc, "x=3D1=20\r\n");
	free(enc);
	enc = msg_qp_encode(".\nFrom me\n", 10, &n);
	assert_string_equal(enc, "=2E\r\n=46rom me\r\n");
	free(enc);
}

static void
test_base64_lines(void **state)
{
	unsigned char bytes[300], back[300];
	size_t n;
	char *enc;

	(void)state;
	enc = msg_base64_encode("", 0, &n);
	assert_string_equal(enc, "");
	free(enc);
	enc = msg_base64_encode("f", 1, &n);
	assert_string_equal(enc, "Zg==\r\n");
	free(enc);
	enc = msg_base64_encode("fo", 2, &n);
	assert_string_equal(enc, "Zm8=\r\n");
	free(enc);
	enc = msg_base64_encode("foo", 3, &n);
	assert_string_equal(enc, "Zm9v\r\n");
	free(enc);
	for (size_t i = 0; i < sizeof(bytes); i++)
		bytes[i] = (unsigned char)(i * 37 + 11);
	enc = msg_base64_encode(bytes, sizeof(bytes), &n);
	check_lines(enc, n, 76);
	assert_int_equal(strncmp(enc + 76, "\r\n", 2), 0); /* full lines are 76 characters */
	assert_int_equal(b64_decode(enc, n, back), sizeof(bytes));
	assert_memory_equal(bytes, back, sizeof(bytes));
	free(enc);
}

/* Each setter refuses a value with a line break; nothing of it reaches the rendered message. */
static void
test_header_injection_refused(void **state)
{
	struct msg *m = basic();

	(void)state;
	assert_int_equal(msg_set_from(m, "Eve\r\nBcc: victim@x.example", "eve@x.example"), -1);
	assert_non_null(strstr(msg_error(m), "line break"));
	assert_int_equal(msg_add_to(m, "Eve\nX: y", "eve@x.example"), -1);
	assert_int_equal(msg_set_reply_to(m, "Eve\r", "eve@x.example"), -1);
	assert_int_equal(msg_set_subject(m, "Hi\r\nBcc: victim@x.example"), -1);
	assert_non_null(strstr(msg_error(m), "subject"));
	assert_non_null(strstr(msg_error(m), "line break"));
	assert_int_equal(msg_set_subject(m, "Hi\nthere"), -1);
	assert_int_equal(msg_add_to(m, NULL, "victim@x.example\r\nBcc: other@x.example"), -1);
	assert_non_null(strstr(msg_error(m), "line break"));
	assert_int_equal(msg_set_from(m, NULL, "a@x.example\n"), -1);
	assert_int_equal(msg_add_header(m, "X-Outreach-Jid", "abc\r\nBcc: victim@x.example"), -1);
	assert_non_null(strstr(msg_error(m), "line break"));
	assert_int_equal(msg_add_header(m, "X-Evil\r\nBcc", "v"), -1);
	assert_int_equal(msg_add_header(m, "List-Unsubscribe", "<https://x.example/u>\n"), -1);
	/* Other control characters too. */
	assert_int_equal(msg_set_subject(m, "bell\x07"), -1);
	assert_int_equal(msg_set_from(m, "tab\tname", "a@x.example"), -1);

	char *out = render(m, NULL);
	assert_null(strstr(out, "victim"));
	assert_null(strstr(out, "Bcc"));
	assert_null(strstr(out, "Eve"));
	char *subject = header_value(out, "Subject");
	assert_string_equal(subject, "Hello"); /* the refused setters changed nothing */
	free(subject);
	free(out);
	msg_free(m);
}

static void
test_bad_addresses_refused(void **state)
{
	static const char *const bad[] = {
		"",
		"noat",
		"@x.example",
		"a@",
		"a b@x.example",
		"<a@x.example>",
		"Ann <a@x.example>",
		"\"a\"@x.example",
		"a,b@x.example",
		"a@x.example,b@x.example",
		"a@x..example",
		"a..b@x.example",
		".a@x.example",
		"a.@x.example",
		"a@-x.example",
		"a@x-.example",
		"a@x.example.",
		"a@x_y.example",
		"a@[192.0.2.1]",
		"José@x.example",
		"a@exämple.org",
		"a(comment)@x.example",
		"a@b@x.example",
		"a;b@x.example",
		"a\\b@x.example",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x.example", /* 65 */
	};
	static const char *const good[] = {
		"a@x.example",        "first.last+tag@sub.example.co.uk", "o'brien@x.example",
		"outreach@localhost", "a_b-c=d@xn--exmple-cua.org",       "1234@192-0-2-1.example",
	};
	struct msg *m = msg_new();

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (msg_add_to(m, NULL, bad[i]) != -1)
			fail_msg("accepted '%s'", bad[i]);
		assert_int_equal(msg_set_from(m, "N", bad[i]), -1);
		assert_int_equal(msg_set_reply_to(m, NULL, bad[i]), -1);
		assert_false(msg_addr_valid(bad[i]));
		assert_true(strncmp(msg_error(m), "msg: ", 5) == 0);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (msg_add_to(m, NULL, good[i]) != 0)
			fail_msg("refused '%s': %s", good[i], msg_error(m));
		assert_true(msg_addr_valid(good[i]));
	}
	size_t n;
	const char *const *addrs = msg_to_addrs(m, &n);
	assert_int_equal(n, sizeof(good) / sizeof(good[0]));
	assert_string_equal(addrs[1], "first.last+tag@sub.example.co.uk");
	msg_free(m);
}

static void
test_invalid_utf8_refused(void **state)
{
	struct msg *m = basic();

	(void)state;
	assert_int_equal(msg_set_subject(m, "bad \xc3\x28 byte"), -1);
	assert_non_null(strstr(msg_error(m), "UTF-8"));
	assert_int_equal(msg_set_subject(m, "overlong \xc0\xaf"), -1);
	assert_int_equal(msg_set_subject(m, "surrogate \xed\xa0\x80"), -1);
	assert_int_equal(msg_set_subject(m, "truncated \xe2\x82"), -1);
	assert_int_equal(msg_set_subject(m, "too big \xf4\x90\x80\x80"), -1);
	assert_int_equal(msg_set_from(m, "Jos\xe9", "a@x.example"), -1); /* Latin-1, not UTF-8 */
	assert_int_equal(msg_add_header(m, "X-Note", "caf\xe9"), -1);
	assert_int_equal(msg_set_text(m, "caf\xe9"), -1);
	assert_int_equal(msg_set_html(m, "<p>caf\xe9</p>"), -1);
	assert_int_equal(msg_set_subject(m, "fine: café ☕ 🩺"), 0);
	msg_free(m);
}

static void
test_rendered_structure(void **state)
{
	struct msg *m = basic();
	size_t len;

	(void)state;
	assert_int_equal(msg_add_header(m, "List-Unsubscribe", "<https://outreach.example.org/u/t0k3n>"), 0);
	assert_int_equal(msg_add_header(m, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click"), 0);
	assert_int_equal(msg_add_header(m, "Auto-Submitted", "auto-generated"), 0);
	assert_int_equal(msg_add_header(m, "X-Outreach-Jid", "0123456789abcdef01234567"), 0);
	assert_int_equal(msg_set_text(m, "Dear Dr. Lee,\nthanks for the referral.\n"), 0);
	assert_int_equal(msg_set_html(m, "<p>Dear Dr. Lee,</p><p>thanks for the referral.</p>"), 0);
	char *out = render(m, &len);
	check_lines(out, len, 998);

	static const char *const want[] = { "Date",
		                            "From",
		                            "To",
		                            "Subject",
		                            "Message-ID",
		                            "MIME-Version",
		                            "List-Unsubscribe",
		                            "List-Unsubscribe-Post",
		                            "Auto-Submitted",
		                            "X-Outreach-Jid",
		                            "Content-Type" };
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *v = header_value(out, want[i]);
		if (v == NULL)
			fail_msg("no %s header", want[i]);
		free(v);
	}
	char *v = header_value(out, "List-Unsubscribe-Post");
	assert_string_equal(v, "List-Unsubscribe=One-Click");
	free(v);
	v = header_value(out, "MIME-Version");
	assert_string_equal(v, "1.0");
	free(v);

	char *ct = header_value(out, "Content-Type");
	assert_true(strncmp(ct, "multipart/alternative;", 22) == 0);
	char *b = strstr(ct, "boundary=\"");
	assert_non_null(b);
	b += 10;
	*strchr(b, '"') = '\0';
	assert_true(strlen(b) >= 20 && strlen(b) <= 70);

	/* The body: delimiter, part, delimiter, part, close delimiter; nothing else uses the boundary. */
	char delim[100], close[100];
	snprintf(delim, sizeof(delim), "\r\n--%s\r\n", b);
	snprintf(close, sizeof(close), "\r\n--%s--\r\n", b);
	const char *body = strstr(out, "\r\n\r\n") + 2; /* keep the CRLF that opens the first delimiter */
	const char *p1 = strstr(body, delim);
	assert_non_null(p1);
	const char *p2 = strstr(p1 + 1, delim);
	assert_non_null(p2);
	assert_null(strstr(p2 + 1, delim));
	const char *end = strstr(p2, close);
	assert_non_null(end);
	assert_string_equal(end + strlen(close), "");
	int count = 0;
	for (const char *p = out; (p = strstr(p, b)) != NULL; p++)
		count++;
	assert_int_equal(count, 4); /* the header, two delimiters, the close */

	static const char plain_hdrs[] = "Content-Type: text/plain; charset=UTF-8\r\n"
	                                 "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
	static const char html_hdrs[] = "Content-Type: text/html; charset=UTF-8\r\n"
	                                "Content-Transfer-Encoding: quoted-printable\r\n\r\n";
	const char *part1 = p1 + strlen(delim), *part2 = p2 + strlen(delim);
	assert_true(strncmp(part1, plain_hdrs, strlen(plain_hdrs)) == 0);
	assert_true(strncmp(part2, html_hdrs, strlen(html_hdrs)) == 0);
	part1 += strlen(plain_hdrs);
	part2 += strlen(html_hdrs);
	char *text = qp_decode(part1, (size_t)(p2 - part1));
	assert_string_equal(text, "Dear Dr. Lee,\r\nthanks for the referral.");
	free(text);
	char *html = qp_decode(part2, (size_t)(end - part2));
	assert_string_equal(html, "<p>Dear Dr. Lee,</p><p>thanks for the referral.</p>");
	free(html);

	/* Header order: the message's own headers first, then the extra ones, Content-Type last. */
	assert_true(strstr(out, "Date: ") == out);
	assert_true(strstr(out, "\r\nMIME-Version:") < strstr(out, "\r\nList-Unsubscribe:"));
	assert_true(strstr(out, "\r\nX-Outreach-Jid:") < strstr(out, "\r\nContent-Type:"));
	free(ct);
	free(out);

	/* Text only: a single part, no multipart. */
	assert_int_equal(msg_set_html(m, NULL), 0);
	out = render(m, NULL);
	ct = header_value(out, "Content-Type");
	assert_string_equal(ct, "text/plain; charset=UTF-8");
	free(ct);
	free(out);
	msg_free(m);
}

static bool
is_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static void
test_message_id(void **state)
{
	struct msg *a = basic(), *b = basic();

	(void)state;
	const char *id = msg_id(a);
	const char *at = strchr(id, '@');
	assert_non_null(at);
	assert_int_equal(at - id, 32);
	assert_true(is_hex(id, 32));
	assert_string_equal(at + 1, "clinic.example.org"); /* the From address's domain */
	assert_string_not_equal(msg_id(a), msg_id(b));

	char *out = render(a, NULL);
	char *v = header_value(out, "Message-ID");
	char want[300];
	snprintf(want, sizeof(want), "<%s>", msg_id(a));
	assert_string_equal(v, want);
	free(v);
	free(out);

	/* Renders keep the id; the domain can be set; a stored id can be fixed for a resend. */
	char left[33];
	memcpy(left, id, 32);
	left[32] = '\0';
	assert_int_equal(msg_set_id_domain(a, "mail.example.net"), 0);
	assert_true(strncmp(msg_id(a), left, 32) == 0);
	assert_string_equal(msg_id(a) + 32, "@mail.example.net");
	assert_int_equal(msg_set_id_domain(a, "bad domain"), -1);
	assert_int_equal(msg_set_id(b, "0123abcd.42@outreach.example.org"), 0);
	assert_string_equal(msg_id(b), "0123abcd.42@outreach.example.org");
	out = render(b, NULL);
	v = header_value(out, "Message-ID");
	assert_string_equal(v, "<0123abcd.42@outreach.example.org>");
	free(v);
	free(out);
	assert_int_equal(msg_set_id(b, "<x@y.example>"), -1);
	assert_int_equal(msg_set_id(b, "x@y.example>\r\nBcc: v@x.example"), -1);
	assert_int_equal(msg_set_id(b, "no-at-sign"), -1);
	assert_int_equal(msg_set_id(b, "sp ace@y.example"), -1);
	assert_string_equal(msg_id(b), "0123abcd.42@outreach.example.org");

	/* Before a From address the domain is localhost. */
	struct msg *c = msg_new();
	assert_string_equal(strchr(msg_id(c), '@'), "@localhost");
	msg_free(c);
	msg_free(a);
	msg_free(b);
}

static void
test_long_single_line_html(void **state)
{
	struct msg *m = basic();
	char *html = malloc(5001);
	size_t len;

	(void)state;
	assert_non_null(html);
	static const char pat[] = "<p>Referral=one</p> "; /* '=' and blanks to encode */
	for (size_t i = 0; i < 5000; i++)
		html[i] = pat[i % (sizeof(pat) - 1)];
	html[5000] = '\0';
	assert_int_equal(msg_set_html(m, html), 0);
	char *out = render(m, &len);
	check_lines(out, len, 998);

	/* The HTML part decodes back to the single long line. */
	char *ct = header_value(out, "Content-Type");
	char *b = strstr(ct, "boundary=\"") + 10;
	*strchr(b, '"') = '\0';
	char marker[120];
	snprintf(marker, sizeof(marker),
	         "Content-Type: text/html; charset=UTF-8\r\n"
	         "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
	const char *start = strstr(out, marker) + strlen(marker);
	char close[100];
	snprintf(close, sizeof(close), "\r\n--%s--", b);
	const char *end = strstr(start, close);
	assert_non_null(end);
	char *dec = qp_decode(start, (size_t)(end - start));
	assert_string_equal(dec, html);
	free(dec);
	free(ct);
	free(out);
	free(html);
	msg_free(m);
}

static void
test_calendar_and_inline_images(void **state)
{
	const char *ics = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//outreach//EN\r\nMETHOD:REQUEST\r\n"
	                  "BEGIN:VEVENT\r\nUID:visit-42@outreach.example.org\r\nSUMMARY:Visite du cabinet — "
	                  "Dr. Núñez\r\nDTSTART:20250310T150000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
	unsigned char png[200], back[200];
	struct msg *m = basic();
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(png); i++)
		png[i] = (unsigned char)(255 - i);
	assert_int_equal(msg_add_calendar(m, "REFRESH", ics), -1);
	assert_int_equal(msg_add_calendar(m, "CANCEL", ics), -1); /* METHOD:REQUEST in the text */
	assert_int_equal(msg_add_calendar(m, "REQUEST", ics), 0);
	assert_int_equal(msg_add_inline_image(m, "<logo>", "image/png", png, sizeof(png)), -1);
	assert_int_equal(msg_add_inline_image(m, "logo@outreach", "text/html", png, sizeof(png)), -1);
	assert_int_equal(msg_add_inline_image(m, "logo@outreach", "image/png", png, 0), -1);
	assert_int_equal(msg_add_inline_image(m, "logo@outreach", "image/png", png, sizeof(png)), 0);
	assert_int_equal(msg_add_inline_image(m, "logo@outreach", "image/png", png, sizeof(png)), -1);
	assert_int_equal(msg_set_html(m, "<p><img src=\"cid:logo@outreach\"></p>"), 0);
	char *out = render(m, &len);
	check_lines(out, len, 998);

	assert_non_null(strstr(out, "\r\nContent-Type: text/calendar; charset=UTF-8; method=REQUEST\r\n"));
	assert_non_null(
	        strstr(out, "\r\nContent-Type: multipart/related; type=\"text/html\";\r\n boundary="));
	const char *img = strstr(out, "\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n"
	                              "Content-ID: <logo@outreach>\r\nContent-Disposition: inline\r\n\r\n");
	assert_non_null(img);
	img = strstr(img, "\r\n\r\n") + 4;
	const char *img_end = strstr(img, "\r\n--");
	assert_int_equal(b64_decode(img, (size_t)(img_end - img), back), sizeof(png));
	assert_memory_equal(png, back, sizeof(png));
	/* The calendar comes after the HTML alternative and decodes to the iCalendar text. */
	const char *cal = strstr(out, "method=REQUEST\r\n");
	assert_true(cal > strstr(out, "Content-Type: text/html"));
	cal = strstr(cal, "\r\n\r\n") + 4;
	const char *cal_end = strstr(cal, "\r\n--");
	char *dec = qp_decode(cal, (size_t)(cal_end - cal) + 2);
	assert_string_equal(dec, ics);
	free(dec);
	free(out);

	/* CANCEL replaces the REQUEST. */
	assert_int_equal(msg_add_calendar(m, "CANCEL", "BEGIN:VCALENDAR\nMETHOD:CANCEL\nEND:VCALENDAR\n"), 0);
	out = render(m, NULL);
	assert_non_null(strstr(out, "method=CANCEL\r\n"));
	assert_null(strstr(out, "method=REQUEST"));
	free(out);

	/* Images need an HTML part. */
	assert_int_equal(msg_set_html(m, NULL), 0);
	char *o2 = NULL;
	size_t l2;
	assert_int_equal(msg_render(m, &o2, &l2), -1);
	assert_non_null(strstr(msg_error(m), "HTML"));
	msg_free(m);
}

static void
test_render_requires(void **state)
{
	struct msg *m = msg_new();
	char *out = NULL;
	size_t len;

	(void)state;
	assert_int_equal(msg_render(m, &out, &len), -1);
	assert_non_null(strstr(msg_error(m), "From"));
	assert_int_equal(msg_set_from(m, NULL, "a@x.example"), 0);
	assert_int_equal(msg_render(m, &out, &len), -1);
	assert_non_null(strstr(msg_error(m), "To"));
	assert_int_equal(msg_add_to(m, NULL, "b@x.example"), 0);
	assert_int_equal(msg_render(m, &out, &len), -1);
	assert_non_null(strstr(msg_error(m), "body"));
	assert_int_equal(msg_set_html(m, "<b>hi</b>"), 0);
	assert_int_equal(msg_render(m, &out, &len), 0);
	assert_non_null(strstr(out, "Content-Type: text/html; charset=UTF-8\r\n"));
	assert_null(strstr(out, "Subject:")); /* optional */
	free(out);
	msg_free(m);
}

static void
test_extra_header_rules(void **state)
{
	struct msg *m = basic();
	char longword[1000];

	(void)state;
	assert_int_equal(msg_add_header(m, "Subject", "again"), -1);
	assert_int_equal(msg_add_header(m, "bcc", "v@x.example"), -1);
	assert_int_equal(msg_add_header(m, "Content-Type", "text/plain"), -1);
	assert_int_equal(msg_add_header(m, "Message-Id", "<x@y>"), -1);
	assert_int_equal(msg_add_header(m, "Bad Name", "v"), -1);
	assert_int_equal(msg_add_header(m, "Bad:Name", "v"), -1);
	assert_int_equal(msg_add_header(m, "", "v"), -1);
	assert_int_equal(msg_add_header(m, "X-Outreach-Jid", "j1"), 0);
	assert_int_equal(msg_add_header(m, "x-outreach-jid", "j2"), -1); /* already set */
	memset(longword, 'a', 950);
	longword[950] = '\0';
	assert_int_equal(msg_add_header(m, "X-Long", longword), -1);
	assert_int_equal(msg_add_header(m, "X-Note", "Nota: señal recibida"), 0);
	char *out = render(m, NULL);
	char *v = header_value(out, "X-Note");
	int nw;
	char *dec = ew_decode(v, &nw);
	assert_string_equal(dec, "Nota: señal recibida");
	free(dec);
	free(v);
	free(out);
	msg_free(m);
}

static void
test_date_header(void **state)
{
	struct msg *m = basic();

	(void)state;
	msg_set_date(m, (time_t)1700000000);
	char *out = render(m, NULL);
	char *v = header_value(out, "Date");
	assert_string_equal(v, "Tue, 14 Nov 2023 22:13:20 +0000");
	free(v);
	free(out);
	msg_free(m);
}

static void
test_free_null(void **state)
{
	(void)state;
	msg_free(NULL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc2047_display_name),
		cmocka_unit_test(test_rfc2047_long_subject),
		cmocka_unit_test(test_ascii_display_names),
		cmocka_unit_test(test_quoted_printable),
		cmocka_unit_test(test_base64_lines),
		cmocka_unit_test(test_header_injection_refused),
		cmocka_unit_test(test_bad_addresses_refused),
		cmocka_unit_test(test_invalid_utf8_refused),
		cmocka_unit_test(test_rendered_structure),
		cmocka_unit_test(test_message_id),
		cmocka_unit_test(test_long_single_line_html),
		cmocka_unit_test(test_calendar_and_inline_images),
		cmocka_unit_test(test_render_requires),
		cmocka_unit_test(test_extra_header_rules),
		cmocka_unit_test(test_date_header),
		cmocka_unit_test(test_free_null),
	};

	return cmocka_run_group_tests_name("msg", tests, NULL, NULL);
}
