/* util: allocation that cannot fail, bounded strings, time and small file helpers. */
#ifndef OUTREACH_UTIL_H
#define OUTREACH_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define MUSTCHECK __attribute__((warn_unused_result))
#define PRINTFLIKE(a, b) __attribute__((format(printf, a, b)))
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
/* A macro's value as a string literal: UTIL_STR(256) is "256". */
#define UTIL_STR_(x) #x
#define UTIL_STR(x)  UTIL_STR_(x)

/* Allocation that aborts the process with a message on exhaustion; never returns NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PRINTFLIKE(1, 2); /* caller frees */

/* Copies at most size-1 bytes and terminates; returns strlen(src) like strlcpy. */
size_t util_strlcpy(char *dst, const char *src, size_t size);

/* Wall-clock time as float epoch seconds (Sidekiq's time format). */
double util_now(void);
/* The time campaigns run by: util_now() plus OUTREACH_NOW_OFFSET seconds when that is set (a testing
 * aid that moves campaign schedules forward without waiting days; read once per process). */
double util_clock(void);
/* Monotonic milliseconds, for measuring durations and timeouts. */
int64_t util_mono_ms(void);
void util_sleep_ms(int64_t ms);

/* Reads a whole file. Returns a NUL-terminated buffer (caller frees) and its length in *len,
 * or NULL with errno set. */
char *util_read_file(const char *path, size_t *len) MUSTCHECK;

/* Removes trailing spaces, tabs, CR and LF in place. */
void util_rtrim(char *s);

/* Length of the valid UTF-8 sequence at s (at most n bytes; n >= 1), 0 when invalid (overlong forms,
 * surrogates and code points above U+10FFFF are invalid). *cp receives the code point. */
size_t util_utf8_seq(const unsigned char *s, size_t n, unsigned *cp);

/* The length in bytes of the control character s starts with: 1 for a C0 control (U+0001..U+001F)
 * or DEL, 2 for a C1 control (U+0080..U+009F: C2 80..C2 9F in UTF-8), 0 for anything else (the NUL
 * that ends s too). */
size_t util_control_len(const char *s);

/* s as it may be printed for a human on a terminal: every control character util_control_len
 * counts but line feed and tab written as a visible escape, \xHH for U+0001..U+001F and DEL,
 * \u00HH for U+0080..U+009F, so that data (a name another application wrote) cannot retitle,
 * clear or drive the terminal; a byte that begins no valid UTF-8 sequence is written \xHH too.
 * Everything else is copied as it is. Returns a string the caller frees. */
char *util_visible(const char *s);
/* The same into dst (cap bytes, cap >= 1, always terminated): what does not fit is left out, never
 * an escape or a character cut in two. With one_line, a line feed or carriage return becomes a space (a log record
 * stays one line) instead of being kept or escaped. Returns the length written. */
size_t util_visible_buf(char *dst, size_t cap, const char *s, bool one_line);
/* util_visible on one line: a line feed or carriage return becomes a space, as util_visible_buf's
 * one_line. The caller frees it. */
char *util_visible_line(const char *s);

/* The terminal columns text takes, such as util_visible returns: one for most characters, two for
 * a wide one (a CJK ideograph, a fullwidth form, the emoji the C library knows as wide), none for a
 * combining accent, by the C library's C.UTF-8 table (wcwidth); one for each character where the
 * system has no such locale, and for a byte that is not UTF-8. */
size_t util_text_width(const char *s);

/* Parses a whole decimal integer in [min, max]; false on junk, overflow or out of range. */
bool util_parse_long(const char *s, long min, long max, long *out) MUSTCHECK;

/* Whether y-m-d is a day of the proleptic Gregorian calendar, years 1..9999. */
bool util_date_exists(int y, int m, int d);
/* A date written "YYYY-MM-DD" (exactly: four, two and two digits) that exists; false for anything
 * else ("2026-02-30", "2026-+1-01", " 2026-1-01"). y, m and d may be NULL. */
bool util_parse_date(const char *s, int *y, int *m, int *d) MUSTCHECK;
/* A month written "YYYY-MM" (exactly), years 1..9999; y and m may be NULL. */
bool util_parse_month(const char *s, int *y, int *m) MUSTCHECK;
/* The month delta months after month ("YYYY-MM"; delta < 0 before it) into out as "YYYY-MM":
 * "2026-01" and -1 give "2025-12". false, out untouched, when month is not one, the result falls
 * outside years 1..9999, or len is under 8. */
bool util_month_offset(const char *month, int delta, char *out, size_t len) MUSTCHECK;
/* The month of t in UTC as "YYYY-MM" into out (room for 8), t being a clock's time (in years 1000
 * to 9999; "" after them). */
void util_utc_month(time_t t, char out[8]);

/* Fills buf with n random bytes from the kernel; aborts if the kernel cannot supply them. */
void util_random(void *buf, size_t n);

/* Writes 2*n lower-case hex digits and a NUL into out (size 2*n+1). */
void util_hex(const unsigned char *in, size_t n, char *out);

#endif
