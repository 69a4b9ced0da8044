/* mailer: sends rendered messages through the configured SMTP relay (libesmtp) and classifies the outcome. */
#ifndef OUTREACH_MAILER_H
#define OUTREACH_MAILER_H

#include <stddef.h>

#include "common/cfg.h"
#include "common/util.h"

/*
 * What libesmtp does, and therefore what a mailer does:
 *   - One SMTP connection per mailer_send or mailer_send_batch call: libesmtp connects when a
 *     session starts, sends every message added to that session over the one connection (MAIL,
 *     RCPT..., DATA, then RSET or the next MAIL) and QUITs. Nothing stays open between calls, so a
 *     mailer holds no socket and may sit idle for any time; batch messages to save connections.
 *   - smtp.tls = none: plain SMTP (STARTTLS is not used even when offered). starttls: STARTTLS is
 *     required and speaks TLS 1.2 (mailer.c says why not 1.3); a relay that does not offer it, or
 *     whose certificate does not verify against the system's CA store (OpenSSL's defaults;
 *     SSL_CERT_FILE or SSL_CERT_DIR override them) or does not name smtp.host, is a TEMPORARY
 *     failure and nothing is sent. libesmtp sends no SNI. tls (implicit TLS, port 465) is not
 *     available in libesmtp 1.1: mailer_new reports it.
 *   - AUTH when smtp.username is set (PLAIN, LOGIN or CRAM-MD5, whichever the relay offers first).
 *   - smtp.timeout applies to the greeting, each command's reply, the start of DATA, each write of
 *     the message and the final reply. libesmtp has no timeout for the name lookup nor for the TCP
 *     connect: those are bounded by the resolver's and the kernel's own limits (about two minutes
 *     for an unreachable address).
 *   - libesmtp writes with write(2): the process must ignore SIGPIPE (the daemons do).
 *   - The password never appears in a log line, an error text or a result.
 * A mailer is used by one thread at a time; several mailers may work in parallel threads.
 */

enum mailer_status {
	MAILER_SENT,      /* every recipient was accepted and the relay took the message */
	MAILER_TEMPORARY, /* try again later: connection, TLS or timeout failure, a 4xx reply */
	MAILER_PERMANENT, /* do not retry: a 5xx reply (see mailer_result for which recipients) */
};

/* Where the outcome was decided. */
enum mailer_stage {
	MAILER_STAGE_CONFIG,  /* the mailer cannot work with this configuration (see mailer_error) */
	MAILER_STAGE_INPUT,   /* the caller's sender, recipients or data were refused before sending */
	MAILER_STAGE_CONNECT, /* name lookup, TCP connect, greeting, EHLO, or the connection was lost */
	MAILER_STAGE_TLS,     /* STARTTLS missing or the relay's certificate refused */
	MAILER_STAGE_AUTH,    /* the relay refused the credentials */
	MAILER_STAGE_MAIL,    /* MAIL FROM was refused */
	MAILER_STAGE_RCPT,    /* recipients were refused */
	MAILER_STAGE_DATA,    /* DATA or the message itself was refused, or lost during transfer */
	MAILER_STAGE_DONE,    /* the relay accepted the message */
};

/* A recipient the relay refused at RCPT TO. */
struct mailer_rcpt {
	char addr[256];
	int code;       /* 4xx: may succeed later; 5xx: never; 0: no reply came (connection lost) */
	char text[256]; /* the reply's text with its enhanced status code, e.g. "5.1.1 no such user" */
};

/*
 * The outcome of sending one message. Semantics with several recipients:
 *   - SENT: every recipient accepted, ndelivered == the recipient count.
 *   - PERMANENT with ndelivered > 0: the relay took the message for the accepted recipients and
 *     refused those in rejected with 5xx codes. The others did receive it: do not retry; record
 *     the rejected addresses (bounce, suppression).
 *   - TEMPORARY with ndelivered > 0: some recipients got a 4xx reply (listed in rejected, maybe with
 *     5xx ones). Retry only the rejected recipients whose code is 4xx or 0, never the others.
 *   - ndelivered == 0: nobody got the message; TEMPORARY means retry it all, PERMANENT means drop it.
 */
struct mailer_result {
	enum mailer_status status;
	enum mailer_stage stage;
	int code;                     /* the reply that decided, 0 when none (local or connection failure) */
	char text[256];               /* that reply's text, or what failed ("connect to HOST:PORT: ...") */
	size_t ndelivered;            /* recipients the relay accepted the message for */
	struct mailer_rcpt *rejected; /* owned by the result: see mailer_result_clear */
	size_t nrejected;
};

/* clang-format off */
#define MAILER_RESULT_INIT { MAILER_TEMPORARY, MAILER_STAGE_CONFIG, 0, "", 0, NULL, 0 }
/* clang-format on */

/* Frees the rejected list and resets the result to MAILER_RESULT_INIT. */
void mailer_result_clear(struct mailer_result *res);

/* "sent", "temporary", "permanent"; "config", "input", "connect", "tls", "auth", "mail", "rcpt",
 * "data", "done". */
const char *mailer_status_name(enum mailer_status s);
const char *mailer_stage_name(enum mailer_stage s);

struct mailer;

/* Copies what it needs of c->smtp (c is not kept). Never returns NULL: when the configuration
 * cannot work (implicit TLS, a user name without a password, an IPv6 literal host, an invalid
 * smtp.from), mailer_error says why and every send fails with stage MAILER_STAGE_CONFIG. No
 * connection is made here. */
struct mailer *mailer_new(const struct cfg *c);
void mailer_free(struct mailer *mr);

/* Sends one message: data is the whole message (headers and body, CRLF line ends, no bare CR or
 * LF; msg_render's output), rcpts the nrcpt envelope recipients (plain addresses), from_addr the
 * envelope sender (NULL: smtp.from). res must be MAILER_RESULT_INIT or a result used before (its
 * old contents are freed). Returns 0 when the message was SENT, else -1: res says why and what to
 * do; mailer_error has a one-line summary for logs. */
int mailer_send(struct mailer *mr, const char *from_addr, const char *const *rcpts, size_t nrcpt,
                const char *data, size_t len, struct mailer_result *res) MUSTCHECK;

/* One message of a batch: the inputs as for mailer_send (borrowed), and its result. */
struct mailer_msg {
	const char *const *rcpts;
	size_t nrcpt;
	const char *data;
	size_t len;
	struct mailer_result res; /* MAILER_RESULT_INIT or used before */
};

/* Sends n messages over one connection, in order. Each message gets its own result; a connection
 * lost midway leaves the messages not yet sent TEMPORARY. Returns 0 when all were SENT, else -1. */
int mailer_send_batch(struct mailer *mr, const char *from_addr, struct mailer_msg *msgs, size_t n) MUSTCHECK;

/* The configuration problem found by mailer_new, else a summary of the last failed send, else "". */
const char *mailer_error(const struct mailer *mr);

#endif
