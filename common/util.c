/* util: allocation that cannot fail, bounded strings, time and small file helpers. */
#include "common/util.h"

#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <wchar.h>

static void
oom(size_t n)
{
	fprintf(stderr, "out of memory allocating %zu bytes\n", n);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		oom(n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		oom(n * size);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (q == NULL)
		oom(n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		oom(strlen(fmt));
	va_end(ap);
	return s;
}

size_t
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size > 0) {
		size_t n = len < size - 1 ? len : size - 1;
		memcpy(dst, src, n);
		dst[n] = '\0';
	}
	return len;
}

double
util_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double
util_clock(void)
{
	static double offset;
	static int known;

	if (!__atomic_load_n(&known, __ATOMIC_ACQUIRE)) {
		const char *v = getenv("OUTREACH_NOW_OFFSET");
		double o = v ? strtod(v, NULL) : 0.0;
		__atomic_store(&offset, &o, __ATOMIC_RELAXED);
		__atomic_store_n(&known, 1, __ATOMIC_RELEASE);
	}
	return util_now() + offset;
}

int64_t
util_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
util_sleep_ms(int64_t ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

char *
util_read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (f == NULL)
		return NULL;
	for (;;) {
		if (cap - n < 4096) {
			cap = cap ? cap * 2 : 8192;
			buf = xrealloc(buf, cap);
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f)) {
		int saved = errno ? errno : EIO;
		free(buf);
		fclose(f);
		errno = saved;
		return NULL;
	}
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

void
util_rtrim(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
		s[--n] = '\0';
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 when invalid (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). *cp receives the code point. */
size_t
util_utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
	unsigned c = s[0], v;
	size_t len;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2;
		v = c & 0x1f;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		v = c & 0x0f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		v = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = (v << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10ffff)) ||
	    (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

size_t
util_control_len(const char *s)
{
	unsigned char c = (unsigned char)s[0];

	if ((c > 0 && c < 0x20) || c == 0x7f)
		return 1;
	if (c == 0xc2 && (unsigned char)s[1] >= 0x80 && (unsigned char)s[1] <= 0x9f)
		return 2;
	return 0;
}

size_t
util_visible_buf(char *dst, size_t cap, const char *s, bool one_line)
{
	size_t o = 0, rest = strlen(s);

	while (rest > 0) {
		unsigned cp;
		size_t n = util_utf8_seq((const unsigned char *)s, rest, &cp), len = n;
		char esc[8];
		const char *put = s;
		if (one_line && (*s == '\n' || *s == '\r')) {
			put = " ";
		} else if (n == 0 || ((cp < 0x20 || cp == 0x7f) && cp != '\n' && cp != '\t')) {
			/* A control character, or a byte that starts no valid UTF-8 sequence (a lone 0x9b would be
			 * CSI to a terminal not in UTF-8; a character cut in two at a buffer's end) */
			snprintf(esc, sizeof(esc), "\\x%02x", (unsigned)(unsigned char)s[0]);
			put = esc;
			len = 4;
			n = 1;
		} else if (cp >= 0x80 && cp <= 0x9f) {
			snprintf(esc, sizeof(esc), "\\u%04x", cp);
			put = esc;
			len = 6;
		}
		if (o + len >= cap) /* whole or not at all: never half an escape or a character */
			break;
		memcpy(dst + o, put, len);
		o += len;
		s += n;
		rest -= n;
	}
	dst[o] = '\0';
	return o;
}

/* util_visible_buf into a buffer of its own, room for all of s. */
static char *
visible_dup(const char *s, bool one_line)
{
	/* At most six bytes for every two of s (\u0080 for C2 80), four for every one (\x1b for 1b or
	 * a byte of no valid sequence). */
	size_t cap = 4 * strlen(s) + 1;
	char *out = xmalloc(cap);

	util_visible_buf(out, cap, s, one_line);
	return out;
}

char *
util_visible(const char *s)
{
	return visible_dup(s, false);
}

char *
util_visible_line(const char *s)
{
	return visible_dup(s, true);
}

/* The C library's UTF-8 locale, for wcwidth's table of the columns each character takes (glibc's,
 * kept up to date with Unicode's East Asian Width and combining marks); (locale_t)0 without one. */
static locale_t utf8_locale;
static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;

static void
utf8_locale_open(void)
{
	utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

size_t
util_text_width(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = 0, len = strlen(s);

	pthread_once(&utf8_once, utf8_locale_open);
	locale_t was = utf8_locale ? uselocale(utf8_locale) : (locale_t)0;
	while (len > 0) {
		unsigned cp;
		size_t k = util_utf8_seq(p, len, &cp);
		int w = k > 0 && utf8_locale ? wcwidth((wchar_t)cp) : 1;
		n += w < 0 ? 1 : (size_t)w; /* a byte that is not UTF-8, or a character wcwidth does not know */
		k = k > 0 ? k : 1;
		p += k, len -= k;
	}
	if (was)
		uselocale(was);
	return n;
}

bool
util_parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	if (s == NULL || *s == '\0')
		return false;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return false;
	*out = v;
	return true;
}

bool
util_date_exists(int y, int m, int d)
{
	static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return y >= 1 && y <= 9999 && m >= 1 && m <= 12 && d >= 1 && d <= mdays[m - 1] + (m == 2 && leap);
}

/* n decimal digits at s, into *out; false when any is not a digit. */
static bool
digits(const char *s, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	*out = v;
	return true;
}

bool
util_parse_month(const char *s, int *y, int *m)
{
	int yy, mm;

	if (s == NULL || strlen(s) != 7 || s[4] != '-' || !digits(s, 4, &yy) || !digits(s + 5, 2, &mm) ||
	    !util_date_exists(yy, mm, 1))
		return false;
	if (y)
		*y = yy;
	if (m)
		*m = mm;
	return true;
}

bool
util_month_offset(const char *month, int delta, char *out, size_t len)
{
	int y, m;

	if (len < 8 || !util_parse_month(month, &y, &m))
		return false;
	/* Months since January of year 0, in a type in which no delta overflows. */
	long long n = (long long)y * 12 + (m - 1) + delta;
	if (n < 12 || n >= 10000 * 12)
		return false;
	snprintf(out, len, "%04d-%02d", (int)(n / 12), (int)(n % 12) + 1);
	return true;
}

void
util_utc_month(time_t t, char out[8])
{
	struct tm tm = {0};

	/* Only a time past year 9999 fails here or is too long for out: "" then. */
	if (gmtime_r(&t, &tm) == NULL || strftime(out, 8, "%Y-%m", &tm) == 0)
		out[0] = '\0';
}

bool
util_parse_date(const char *s, int *y, int *m, int *d)
{
	int yy, mm, dd;

	if (s == NULL || strlen(s) != 10 || s[4] != '-' || s[7] != '-' || !digits(s, 4, &yy) ||
	    !digits(s + 5, 2, &mm) || !digits(s + 8, 2, &dd) || !util_date_exists(yy, mm, dd))
		return false;
	if (y)
		*y = yy;
	if (m)
		*m = mm;
	if (d)
		*d = dd;
	return true;
}

void
util_random(void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t got = getrandom(p, n, 0);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "getrandom: %s\n", strerror(errno));
			abort();
		}
		p += got;
		n -= (size_t)got;
	}
}

void
util_hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}
