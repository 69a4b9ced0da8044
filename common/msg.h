/* msg: builds RFC 5322 / MIME email messages as bytes, refusing anything that could inject headers. */
#ifndef OUTREACH_MSG_H
#define OUTREACH_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "common/util.h"

#define MSG_MAX_NAME 256 /* the longest display name a message takes, in bytes */

/*
 * A message is filled in with setters and rendered once or several times with msg_render. The
 * rendered bytes are 7-bit clean with CRLF line ends, no line over 998 octets, ready for SMTP DATA:
 *
 *   Date, From, To, [Reply-To], Subject, Message-ID, MIME-Version, extra headers, then the body:
 *     text only or HTML only          one text/plain or text/html part
 *     text and HTML [and calendar]    multipart/alternative of those parts, in that order
 *     inline images                   the HTML part becomes multipart/related (HTML, images)
 *
 * Text parts (plain, HTML, calendar) are UTF-8 and quoted-printable (lines of at most 76 characters
 * with soft breaks); images are base64 in 76-character lines. Header values with non-ASCII characters
 * become RFC 2047 encoded-words (=?UTF-8?B?...?=, at most 75 characters each) and long headers are
 * folded at whitespace (78 columns; 76 on lines holding encoded-words).
 *
 * Safety: every setter refuses, with a message in msg_error and without changing the message, a
 * value holding CR, LF or another control character, invalid UTF-8, or (for addresses) anything
 * but a plain addr-spec "local@domain" in ASCII: no display name, spaces, angle brackets, quotes,
 * commas or comments. Internationalised domains must be given in their xn-- form.
 *
 * Every string argument is copied; none is kept.
 */

struct msg;

/* A new empty message with a fresh Message-ID (see msg_id). Never fails. */
struct msg *msg_new(void);
void msg_free(struct msg *m);

/* The sender: display name (UTF-8; NULL or "" for none) and address. 0, or -1 (see msg_error). */
int msg_set_from(struct msg *m, const char *name, const char *addr) MUSTCHECK;

/* Adds a To recipient (name as for msg_set_from). 0, or -1. */
int msg_add_to(struct msg *m, const char *name, const char *addr) MUSTCHECK;

/* The Reply-To mailbox (replaces an earlier one). 0, or -1. */
int msg_set_reply_to(struct msg *m, const char *name, const char *addr) MUSTCHECK;

/* The Subject (UTF-8; leading and trailing blanks are dropped). 0, or -1. */
int msg_set_subject(struct msg *m, const char *subject) MUSTCHECK;

/* Adds a header such as List-Unsubscribe, List-Unsubscribe-Post, Auto-Submitted or X-Outreach-Jid.
 * The name is printable ASCII without ':' and must not be one the message writes itself (Date,
 * From, Sender, To, Cc, Bcc, Reply-To, Subject, Message-ID, MIME-Version, Content-*, Return-Path,
 * Received). A value with non-ASCII characters is written as encoded-words, so give structured
 * values (URLs, addresses) in ASCII; a single word longer than 900 octets is refused because it
 * cannot be folded. 0, or -1. */
int msg_add_header(struct msg *m, const char *name, const char *value) MUSTCHECK;

/* The text/plain and text/html bodies (UTF-8; LF, CRLF or CR line ends). Replace earlier ones; NULL
 * removes the part. 0, or -1 on invalid UTF-8. */
int msg_set_text(struct msg *m, const char *text) MUSTCHECK;
int msg_set_html(struct msg *m, const char *html) MUSTCHECK;

/* Adds (or replaces) a text/calendar alternative: method is "REQUEST", "CANCEL" or "PUBLISH" and
 * must match the METHOD line of ics, the iCalendar text (UTF-8). Rendered as
 * "text/calendar; charset=UTF-8; method=REQUEST" after the text and HTML parts. 0, or -1. */
int msg_add_calendar(struct msg *m, const char *method, const char *ics) MUSTCHECK;

/* Adds an image shown inside the HTML part, which refers to it as "cid:CONTENT_ID". content_id is
 * the bare id without angle brackets ("logo@outreach"; letters, digits, ".-_@+" and the like),
 * unique in the message; mime_type is "image/png", "image/jpeg", "image/gif" or another image/
 * subtype. The len bytes are copied. 0, or -1. */
int msg_add_inline_image(struct msg *m, const char *content_id, const char *mime_type, const void *bytes,
                         size_t len) MUSTCHECK;

/* The Message-ID without angle brackets: "RANDOM-HEX@DOMAIN". The random part is drawn in msg_new;
 * the domain is the one set with msg_set_id_domain, else that of the From address, else
 * "localhost", so read it after msg_set_from. Borrowed until the next setter call or msg_free. */
const char *msg_id(const struct msg *m);

/* Fixes the Message-ID, e.g. to resend a message under the id stored the first time (without
 * angle brackets: dot-atom "@" dot-atom, at most 250 octets). 0, or -1. */
int msg_set_id(struct msg *m, const char *id) MUSTCHECK;

/* The domain of generated Message-IDs instead of the From address's. 0, or -1. */
int msg_set_id_domain(struct msg *m, const char *domain) MUSTCHECK;

/* The Date header's time; by default the time of each msg_render. Written in UTC (+0000). */
void msg_set_date(struct msg *m, time_t when);

/* The To addresses in the order added (the SMTP recipients), their count in *n. Borrowed until the
 * next msg_add_to or msg_free. */
const char *const *msg_to_addrs(const struct msg *m, size_t *n);

/* Renders the message: *out is a NUL-terminated buffer (caller frees) of *len bytes. -1 (see
 * msg_error) when From, To or a body is missing, or images were added without an HTML part. */
int msg_render(struct msg *m, char **out, size_t *len) MUSTCHECK;

/* The last error ("msg: subject: contains a line break"), "" when none. */
const char *msg_error(const struct msg *m);

/*
 * The encoders, for tests and for other modules that need them. Each returns a NUL-terminated
 * buffer (caller frees) and its length in *outlen (when outlen is not NULL).
 */

/* Quoted-printable (RFC 2045) of len bytes of text: lines end with CRLF whatever the input used;
 * output lines are at most 76 characters, with "=" soft breaks; "=", non-ASCII and control bytes,
 * and blanks at a line's end are encoded, as are a leading "." and a leading "From ". */
char *msg_qp_encode(const char *text, size_t len, size_t *outlen);

/* Base64 in CRLF-terminated lines of at most 76 characters. */
char *msg_base64_encode(const void *bytes, size_t len, size_t *outlen);

/* A whole header line for an unstructured value ("Subject: ...\r\n"), folded, with encoded-words
 * when the value is not plain ASCII. NULL (and a message in err) when the value is refused. */
char *msg_header_line(const char *name, const char *value, char *err, size_t errlen);

/* True when addr is a plain addr-spec this module accepts. */
bool msg_addr_valid(const char *addr);

/* NULL when name may be a display name (msg_set_from, msg_add_to), else what is wrong with it
 * ("contains a line break (CR or LF)", "contains a control character", ...). */
const char *msg_display_name_problem(const char *name);

#endif
