/* csv: a streaming RFC 4180 reader over a FILE*: one record at a time, a header map, size limits. */
#include "common/csv.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* CSV_WORDS: the portable 8-byte path even where SSE2 is there (the unit tests build it so). */
#if defined(__SSE2__) && !defined(CSV_WORDS)
#define CSV_SSE2 1
#include <emmintrin.h>
#endif

#define CSV_INBUF (64 * 1024)

enum csv_state {
	ST_FIELD,    /* at the start of a field */
	ST_UNQUOTED, /* inside an unquoted field */
	ST_QUOTED,   /* inside a quoted field */
	ST_QUOTE,    /* just after a quote inside a quoted field: "" or the field's end */
	ST_SKIP,     /* past the fields kept (csv_keep_fields): reading to the record's end */
	ST_SKIPQ,    /* the same, inside quotes */
};

struct csv {
	FILE *fp;
	char *name;

	unsigned char *in; /* input buffer: in[ipos..ilen) not yet parsed */
	size_t ipos, ilen;
	bool eof;     /* fp has nothing more */
	bool started; /* the byte order mark check is done */
	bool skip_lf; /* the last line ended with CR: a LF right after it is the same line end */
	bool failed;

	/* The current record: fields packed in buf, each followed by a NUL. */
	char *buf;
	size_t len, cap;
	size_t room; /* min(cap, max_record): where put() must call grow() */
	size_t field_start;
	size_t *offs, *lens;
	const char **ptrs;
	size_t nf, fcap;
	size_t max_record, max_fields;
	size_t keep; /* fields kept per record; 0: all */

	unsigned long line; /* the physical line the parser is on */
	unsigned long rec_line, rec_no;

	char **hdr;
	size_t *hdr_lens;
	size_t nhdr;

	char errstr[320];
};

/* The bytes that end an unquoted run. */
static const unsigned char special[256] = { [','] = 1, ['"'] = 1, ['\r'] = 1, ['\n'] = 1 };

static void fail(struct csv *r, unsigned long line, const char *fmt, ...) PRINTFLIKE(3, 4);

static void
fail(struct csv *r, unsigned long line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(r->errstr, sizeof(r->errstr), "%s:%lu: %s", r->name, line, msg);
	r->failed = true;
	r->nf = 0;
}

struct csv *
csv_open(FILE *fp, const char *name)
{
	struct csv *r = xcalloc(1, sizeof(*r));

	r->fp = fp;
	r->name = xstrdup(name ? name : "input");
	r->in = xmalloc(CSV_INBUF);
	r->cap = 4096;
	r->buf = xmalloc(r->cap);
	r->fcap = 64;
	r->offs = xmalloc(r->fcap * sizeof(*r->offs));
	r->lens = xmalloc(r->fcap * sizeof(*r->lens));
	r->ptrs = xmalloc(r->fcap * sizeof(*r->ptrs));
	r->max_record = CSV_DEFAULT_MAX_RECORD;
	r->max_fields = CSV_DEFAULT_MAX_FIELDS;
	r->room = r->cap;
	r->line = 1;
	return r;
}

void
csv_free(struct csv *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->nhdr; i++)
		free(r->hdr[i]);
	free(r->hdr);
	free(r->hdr_lens);
	free(r->offs);
	free(r->lens);
	free(r->ptrs);
	free(r->buf);
	free(r->in);
	free(r->name);
	free(r);
}

void
csv_keep_fields(struct csv *r, size_t n)
{
	r->keep = n;
}

void
csv_set_limits(struct csv *r, size_t max_record, size_t max_fields)
{
	if (max_record)
		r->max_record = max_record;
	r->room = r->cap < r->max_record ? r->cap : r->max_record;
	if (max_fields)
		r->max_fields = max_fields > INT_MAX ? INT_MAX : max_fields;
}

static int
refill(struct csv *r)
{
	r->ipos = r->ilen = 0;
	if (r->eof)
		return 0;
	r->ilen = fread(r->in, 1, CSV_INBUF, r->fp);
	if (r->ilen == 0) {
		if (ferror(r->fp)) {
			fail(r, r->line, "read error: %s", strerror(errno ? errno : EIO));
			return -1;
		}
		r->eof = true;
	}
	if (!r->started) {
		r->started = true;
		if (r->ilen >= 3 && memcmp(r->in, "\xEF\xBB\xBF", 3) == 0)
			r->ipos = 3;
	}
	return 0;
}

/* Makes room for need more bytes in the record, within the limit. */
static int
grow(struct csv *r, size_t need)
{
	if (need > r->max_record || r->len > r->max_record - need) {
		fail(r, r->rec_line,
		     "the record starting on this line is longer than %zu bytes (the limit; "
		     "an unclosed quote?)",
		     r->max_record);
		return -1;
	}
	size_t ncap = r->cap;
	while (ncap - r->len < need)
		ncap = ncap > SIZE_MAX / 2 ? SIZE_MAX : ncap * 2;
	if (ncap > r->max_record + 1)
		ncap = r->max_record + 1;
	r->buf = xrealloc(r->buf, ncap);
	r->cap = ncap;
	r->room = r->cap < r->max_record ? r->cap : r->max_record;
	return 0;
}

static inline int
put(struct csv *r, const void *p, size_t n)
{
	if (r->room - r->len < n + 1 && grow(r, n + 1) == -1)
		return -1;
	memcpy(r->buf + r->len, p, n);
	r->len += n;
	return 0;
}

static inline int
end_field(struct csv *r)
{
	if (r->nf >= r->max_fields) {
		fail(r, r->rec_line, "record has more than %zu fields (the limit)", r->max_fields);
		return -1;
	}
	if (r->nf == r->fcap) {
		size_t n = r->fcap * 2 > r->max_fields ? r->max_fields : r->fcap * 2;
		r->offs = xrealloc(r->offs, n * sizeof(*r->offs));
		r->lens = xrealloc(r->lens, n * sizeof(*r->lens));
		r->ptrs = xrealloc(r->ptrs, n * sizeof(*r->ptrs));
		r->fcap = n;
	}
	r->offs[r->nf] = r->field_start;
	r->lens[r->nf] = r->len - r->field_start;
	/* put() always leaves room for this terminator. */
	if (r->room == r->len && grow(r, 1) == -1)
		return -1;
	r->buf[r->len++] = '\0';
	r->nf++;
	r->field_start = r->len;
	return 0;
}

static int
finish(struct csv *r, const char *const **fields)
{
	r->rec_no++;
	if (fields) {
		for (size_t i = 0; i < r->nf; i++)
			r->ptrs[i] = r->buf + r->offs[i];
		*fields = r->ptrs;
	}
	return (int)r->nf;
}

static void
newline(struct csv *r, unsigned char c)
{
	r->line++;
	if (c == '\r')
		r->skip_lf = true;
}

/*
 * A chunk of input looked at at once, for the runs that decide nothing byte by byte: a bit per byte
 * that is a double quote, and a bit per byte that ends a line (CR or LF). With SSE2 (every x86-64) a
 * chunk is 16 bytes, one bit each; elsewhere 8 bytes in a 64-bit word, the high bit of each byte.
 * Either way a mask's population count is how many such bytes the chunk holds, and chunk_first
 * gives the offset of the first of them.
 */
#ifdef CSV_SSE2
#define CHUNK 16
typedef unsigned chunk_mask;

static inline void
chunk_scan(const unsigned char *p, chunk_mask *quotes, chunk_mask *ends)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);

	*quotes = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')));
	*ends = (unsigned)_mm_movemask_epi8(
	    _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('\n')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\r'))));
}

static inline int
chunk_count(chunk_mask m)
{
	return __builtin_popcount(m);
}

/* The offset in the chunk of the byte of the lowest bit set (m is not 0). */
static inline int
chunk_first(chunk_mask m)
{
	return __builtin_ctz(m);
}
#else
#define CHUNK 8
typedef uint64_t chunk_mask;

#define BYTES_1 UINT64_C(0x0101010101010101)
#define BYTES_7F UINT64_C(0x7f7f7f7f7f7f7f7f)

/* The high bit of each byte of w that is zero, and only of those. */
static inline uint64_t
zero_bytes(uint64_t w)
{
	return ~(((w & BYTES_7F) + BYTES_7F) | w | BYTES_7F);
}

static inline void
chunk_scan(const unsigned char *p, chunk_mask *quotes, chunk_mask *ends)
{
	uint64_t w;

	memcpy(&w, p, 8);
	*quotes = zero_bytes(w ^ (BYTES_1 * '"'));
	*ends = zero_bytes(w ^ (BYTES_1 * '\n')) | zero_bytes(w ^ (BYTES_1 * '\r'));
}

static inline int
chunk_count(chunk_mask m)
{
	return __builtin_popcountll(m);
}

/* The first byte in memory is the word's lowest on little-endian machines, its highest otherwise. */
static inline int
chunk_first(chunk_mask m)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return __builtin_ctzll(m) / 8;
#else
	return __builtin_clzll(m) / 8;
#endif
}
#endif

/* The next double quote in [p, end) (or end), counting the line ends passed. */
static inline const unsigned char *
to_quote(struct csv *r, const unsigned char *p, const unsigned char *end)
{
	while (p < end && *p != '"') {
		if (*p == '\n')
			r->line++;
		p++;
	}
	return p;
}

/* The end of the quoted field that starts at p (the byte after its opening quote), if it is the
 * usual one: no quote, CR or LF inside, its closing quote followed by a comma, all before end.
 * Returns the closing quote, or NULL. */
static inline const unsigned char *
simple_end(const unsigned char *p, const unsigned char *end)
{
	const unsigned char *q = p;
	chunk_mask quotes, ends;

	while (end - q >= CHUNK) {
		chunk_scan(q, &quotes, &ends);
		if (quotes | ends) {
			q += chunk_first(quotes | ends);
			goto found;
		}
		q += CHUNK;
	}
	while (q < end && *q != '"' && *q != '\n' && *q != '\r')
		q++;
found:
	return end - q >= 2 && q[0] == '"' && q[1] == ',' ? q : NULL;
}

/* Takes the usual quoted fields ("text", then a comma) at *p, one after another, while they fit
 * the record's buffers as they are. Returns true when *p is at a quoted field it leaves (not one of
 * them, or one the buffers must grow for): the caller reads it byte by byte. Returns false when the
 * record's kept fields are all read, the input read so far is used up, or an unquoted field is next. */
static bool
simple_fields(struct csv *r, const unsigned char **pp, const unsigned char *end)
{
	const unsigned char *p = *pp, *q;
	/* In locals: the stores into buf could otherwise be taken to change r. */
	char *buf = r->buf;
	size_t *offs = r->offs, *lens = r->lens;
	size_t nf = r->nf, len = r->len, room = r->room;
	size_t most = r->fcap < r->max_fields ? r->fcap : r->max_fields;
	size_t keep = r->keep ? r->keep : SIZE_MAX;
	bool more = true;

	while (p < end && *p == '"') {
		if (end - p >= 3 && p[1] == '"' && p[2] == ',')
			q = p + 1; /* "", the most common of all */
		else if ((q = simple_end(p + 1, end)) == NULL)
			break;
		size_t n = (size_t)(q - p - 1);
		if (nf >= most || room - len < n + 1)
			break; /* end_field and put grow the buffers or fail */
		offs[nf] = len;
		lens[nf] = n;
		/* A short field is copied as one whole chunk when there is room: the bytes past its end
		 * are past the record's length (the terminator and the next field go over them). */
		if (n <= CHUNK && room - len > CHUNK && end - (p + 1) >= CHUNK)
			memcpy(buf + len, p + 1, CHUNK);
		else
			memcpy(buf + len, p + 1, n);
		len += n;
		buf[len++] = '\0';
		p = q + 2;
		if (++nf >= keep) {
			more = false;
			break;
		}
	}
	r->nf = nf;
	r->len = r->field_start = len;
	*pp = p;
	return more && p < end && *p == '"';
}

int
csv_read(struct csv *r, const char *const **fields)
{
	enum csv_state st = ST_FIELD;
	unsigned long qline = 0;
	const unsigned char *p, *q, *end;
	unsigned char c;

	if (r->failed)
		return -1;
	r->len = r->nf = r->field_start = 0;
	p = r->in + r->ipos;
	end = r->in + r->ilen;
	for (;;) {
		if (p == end) {
			r->ipos = r->ilen;
			if (refill(r) == -1)
				return -1;
			p = r->in + r->ipos;
			end = r->in + r->ilen;
			if (p == end && r->eof)
				break;
			continue; /* (a buffer may hold only the byte order mark) */
		}
		switch (st) {
		case ST_FIELD:
			if (r->nf == 0) {
				if (r->skip_lf) { /* the LF of a CRLF split from its CR */
					r->skip_lf = false;
					if (*p == '\n') {
						p++;
						continue;
					}
				}
				if (*p == '\n' || *p == '\r') { /* an empty line */
					newline(r, *p++);
					continue;
				}
				r->rec_line = r->line;
			}
			if (*p == '"') {
				/* The usual quoted fields first, as many as come (files such as NPPES quote every
				 * field); what they leave is read below, byte by byte. */
				if (!simple_fields(r, &p, end)) {
					st = r->keep && r->nf >= r->keep ? ST_SKIP : ST_FIELD;
					continue;
				}
				st = ST_QUOTED;
				qline = r->line;
				p++;
				continue;
			}
			st = ST_UNQUOTED;
			/* FALLTHROUGH */
		case ST_UNQUOTED:
			q = p;
			while (q < end && !special[*q])
				q++;
			if (q > p && put(r, p, (size_t)(q - p)) == -1)
				return -1;
			p = q;
			if (p == end)
				continue;
			break;
		case ST_QUOTED:
			q = to_quote(r, p, end);
			if (q > p && put(r, p, (size_t)(q - p)) == -1)
				return -1;
			p = q;
			if (p < end) {
				p++;
				st = ST_QUOTE;
			}
			continue;
		case ST_SKIP:
		case ST_SKIPQ: {
			/* One pass to the record's end: a quote opens or closes quotes (a doubled one does
			 * both), a line end inside quotes is only counted. */
			bool quoted = st == ST_SKIPQ;
			for (q = p; q < end;) {
				/* Chunks without a line end: only the quotes' parity counts (and they are all on
				 * this line). The parity of the masks' sum is that of their exclusive or. */
				chunk_mask quotes, ends, odd = 0, any = 0;
				while (end - q >= CHUNK) {
					chunk_scan(q, &quotes, &ends);
					if (ends)
						break;
					odd ^= quotes;
					any |= quotes;
					q += CHUNK;
				}
				bool flip = chunk_count(odd) & 1;
				if (end - q >= CHUNK) /* a chunk with a line end: its quotes before the first one */
					for (const unsigned char *le = q + chunk_first(ends); q < le; q++)
						if (*q == '"') {
							flip = !flip;
							any = 1;
						}
				quoted ^= flip;
				if (quoted && any)
					qline = r->line;
				if (q == end)
					break;
				if (*q == '"') {
					if (!quoted)
						qline = r->line;
					quoted = !quoted;
				} else if (*q == '\n' || *q == '\r') {
					if (!quoted)
						break;
					if (*q == '\n')
						r->line++;
				}
				q++;
			}
			st = quoted ? ST_SKIPQ : ST_SKIP;
			p = q;
			if (p == end)
				continue;
			c = *p++;
			goto line_end;
		}
		case ST_QUOTE:
			if (*p == '"') {
				if (put(r, "\"", 1) == -1)
					return -1;
				p++;
				st = ST_QUOTED;
				continue;
			}
			if (*p != ',' && *p != '\r' && *p != '\n') {
				st = ST_UNQUOTED; /* text after the closing quote: kept */
				continue;
			}
			break;
		}

		/* At a comma, a quote inside an unquoted field, or a line end. */
		c = *p++;
		if (c == '"') {
			if (put(r, "\"", 1) == -1)
				return -1;
			continue;
		}
		if (end_field(r) == -1)
			return -1;
		if (c == ',') {
			st = r->keep && r->nf >= r->keep ? ST_SKIP : ST_FIELD;
			continue;
		}
	line_end:
		newline(r, c);
		r->ipos = (size_t)(p - r->in);
		if (c == '\r' && p < end) { /* the usual CRLF: take the LF now */
			r->skip_lf = false;
			if (*p == '\n')
				r->ipos++;
		}
		return finish(r, fields);
	}

	/* The end of the input. */
	if (st == ST_SKIP)
		return finish(r, fields);
	if (st == ST_QUOTED || st == ST_SKIPQ) {
		fail(r, qline, "the quoted field opened on this line is not closed at the end of the input");
		return -1;
	}
	if (st == ST_FIELD && r->nf == 0)
		return 0;
	if (end_field(r) == -1)
		return -1;
	return finish(r, fields);
}

const char *
csv_field(const struct csv *r, int i)
{
	if (i < 0 || (size_t)i >= r->nf)
		return NULL;
	return r->buf + r->offs[i];
}

size_t
csv_field_len(const struct csv *r, int i)
{
	if (i < 0 || (size_t)i >= r->nf)
		return 0;
	return r->lens[i];
}

int
csv_nfields(const struct csv *r)
{
	return (int)r->nf;
}

int
csv_read_header(struct csv *r)
{
	int n = csv_read(r, NULL);

	if (n == -1)
		return -1;
	if (n == 0) {
		fail(r, r->line, "the input is empty: a header line was expected");
		return -1;
	}
	for (size_t i = 0; i < r->nhdr; i++)
		free(r->hdr[i]);
	free(r->hdr);
	free(r->hdr_lens);
	r->nhdr = (size_t)n;
	r->hdr = xmalloc(r->nhdr * sizeof(*r->hdr));
	r->hdr_lens = xmalloc(r->nhdr * sizeof(*r->hdr_lens));
	for (size_t i = 0; i < r->nhdr; i++) {
		r->hdr[i] = xmalloc(r->lens[i] + 1);
		memcpy(r->hdr[i], r->buf + r->offs[i], r->lens[i] + 1);
		r->hdr_lens[i] = r->lens[i];
	}
	return 0;
}

static bool
blank(char c)
{
	return c == ' ' || c == '\t';
}

static char
lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Equal ignoring ASCII case, outer blanks, and the length of inner runs of blanks. */
static bool
loose_equal(const char *a, const char *b)
{
	while (blank(*a))
		a++;
	while (blank(*b))
		b++;
	for (;;) {
		if (blank(*a) || blank(*b)) {
			const char *a2 = a, *b2 = b;
			while (blank(*a2))
				a2++;
			while (blank(*b2))
				b2++;
			if (*a2 == '\0' && *b2 == '\0')
				return true; /* trailing blanks */
			if (!blank(*a) || !blank(*b))
				return false; /* a blank against a non-blank */
			a = a2;
			b = b2;
			continue;
		}
		if (lower(*a) != lower(*b))
			return false;
		if (*a == '\0')
			return true;
		a++;
		b++;
	}
}

int
csv_header_index(const struct csv *r, const char *name)
{
	size_t n = strlen(name);

	for (size_t i = 0; i < r->nhdr; i++)
		if (r->hdr_lens[i] == n && memcmp(r->hdr[i], name, n) == 0)
			return (int)i;
	for (size_t i = 0; i < r->nhdr; i++)
		if (loose_equal(r->hdr[i], name))
			return (int)i;
	return -1;
}

int
csv_header_count(const struct csv *r)
{
	return (int)r->nhdr;
}

unsigned long
csv_line(const struct csv *r)
{
	return r->rec_no ? r->rec_line : 0;
}

unsigned long
csv_record(const struct csv *r)
{
	return r->rec_no;
}

const char *
csv_error(const struct csv *r)
{
	return r->errstr;
}
