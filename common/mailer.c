/* mailer: sends rendered messages through the configured SMTP relay (libesmtp) and classifies the outcome. */
#include "common/mailer.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* auth-client.h and openssl/ssl.h before libesmtp.h, which then declares smtp_auth_set_context and
 * smtp_starttls_set_ctx. */
#include <auth-client.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <libesmtp.h>

#include "common/log.h"
#include "common/msg.h"

#define MAILER_ERR_NONE   0
#define MAILER_ERR_CONFIG 1 /* set by mailer_new; lasts */
#define MAILER_ERR_SEND   2 /* the last send failed; cleared by a successful one */

#define CHUNK (64 * 1024) /* bytes handed to libesmtp per callback */

struct mailer {
	char *host;
	int port;
	int tls; /* enum smtp_tls */
	char *user;
	char *password;
	char *from;
	long timeout_ms;
	char hostport[300];
	auth_context_t auth;
	SSL_CTX *ssl_ctx; /* STARTTLS: ours, lent to each session (see mailer_new) */

	int err;
	char errstr[320];
};

/* What one session learnt beyond libesmtp's per-message statuses: the replies seen by the protocol
 * monitor (AUTH has no status of its own in libesmtp) and TLS events. */
struct xfer {
	int last_code; /* the last final reply */
	char last_text[256];
	bool in_auth; /* an AUTH exchange is under way */
	bool auth_ok;
	int auth_code; /* the reply that refused AUTH, 0 when none did */
	char auth_text[256];
	char tls_problem[200];
	char line[512]; /* the reply line being read */
	size_t linelen;
};

/* The data callback's state for one message. */
struct source {
	const char *data;
	size_t len;
	size_t pos;
};

static pthread_once_t auth_once = PTHREAD_ONCE_INIT;

static void
auth_init(void)
{
	auth_client_init(); /* loads SASL plugins on demand; never undone: other mailers may use them */
}

static void fmt_into(char *buf, size_t len, const char *fmt, ...) PRINTFLIKE(3, 4);

/* snprintf that truncates quietly: texts here are for people and may be cut. */
static void
fmt_into(char *buf, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

static void set_err(struct mailer *mr, int err, const char *fmt, ...) PRINTFLIKE(3, 4);

static void
set_err(struct mailer *mr, int err, const char *fmt, ...)
{
	va_list ap;

	mr->err = err;
	va_start(ap, fmt);
	vsnprintf(mr->errstr, sizeof(mr->errstr), fmt, ap);
	va_end(ap);
}

const char *
mailer_error(const struct mailer *mr)
{
	return mr->errstr;
}

const char *
mailer_status_name(enum mailer_status s)
{
	switch (s) {
	case MAILER_SENT:
		return "sent";
	case MAILER_TEMPORARY:
		return "temporary";
	case MAILER_PERMANENT:
		return "permanent";
	}
	return "?";
}

const char *
mailer_stage_name(enum mailer_stage s)
{
	static const char *const names[] = { "config", "input", "connect", "tls", "auth",
		                             "mail",   "rcpt",  "data",    "done" };

	return (size_t)s < NELEM(names) ? names[s] : "?";
}

void
mailer_result_clear(struct mailer_result *res)
{
	free(res->rejected);
	*res = (struct mailer_result)MAILER_RESULT_INIT;
}

static void set_result(struct mailer_result *res, enum mailer_status st, enum mailer_stage stage, int code,
                       const char *fmt, ...) PRINTFLIKE(5, 6);

static void
set_result(struct mailer_result *res, enum mailer_status st, enum mailer_stage stage, int code,
           const char *fmt, ...)
{
	va_list ap;

	res->status = st;
	res->stage = stage;
	res->code = code;
	va_start(ap, fmt);
	vsnprintf(res->text, sizeof(res->text), fmt, ap);
	va_end(ap);
}

/* --- configuration ------------------------------------------------------------------------------ */

static int
auth_interact(auth_client_request_t req, char **result, int fields, void *arg)
{
	struct mailer *mr = arg;

	for (int i = 0; i < fields; i++) {
		if (req[i].flags & AUTH_PASS)
			result[i] = mr->password;
		else if (req[i].flags & AUTH_USER)
			result[i] = mr->user;
		else
			return 0; /* a realm or anything else: not configured */
	}
	return 1;
}

static bool
is_loopback(const char *host)
{
	return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0;
}

struct mailer *
mailer_new(const struct cfg *c)
{
	struct mailer *mr = xcalloc(1, sizeof(*mr));
	const char *host = c->smtp.host ? c->smtp.host : "";

	mr->host = xstrdup(host);
	mr->port = c->smtp.port;
	mr->tls = c->smtp.tls;
	mr->from = xstrdup(c->smtp.from ? c->smtp.from : "");
	mr->timeout_ms = (long)(c->smtp.timeout > 0 ? c->smtp.timeout : 30) * 1000L;
	if (c->smtp.username != NULL && *c->smtp.username != '\0')
		mr->user = xstrdup(c->smtp.username);
	if (c->smtp.password != NULL && *c->smtp.password != '\0')
		mr->password = xstrdup(c->smtp.password);
	snprintf(mr->hostport, sizeof(mr->hostport), "%s:%d", mr->host, mr->port);

	if (*host == '\0' || strpbrk(host, " \t\r\n") != NULL) {
		set_err(mr, MAILER_ERR_CONFIG, "smtp.host: '%s' is not a host name",
		        *host ? "(invalid)" : "");
	} else if (strchr(host, ':') != NULL) {
		set_err(mr, MAILER_ERR_CONFIG,
		        "smtp.host: %s: IPv6 address literals are not supported by libesmtp; use a host name",
		        host);
	} else if (mr->tls == SMTP_TLS_IMPLICIT) {
		set_err(mr, MAILER_ERR_CONFIG,
		        "smtp.tls = tls: implicit TLS is not available in this libesmtp (1.1 only upgrades "
		        "a plain connection); use smtp.tls = starttls (usually port 587) or a local TLS "
		        "relay");
	} else if (mr->user != NULL && mr->password == NULL) {
		set_err(mr, MAILER_ERR_CONFIG,
		        "smtp.username is set but there is no password: set smtp.password_file or "
		        "OUTREACH_SMTP_PASSWORD");
	} else if (!msg_addr_valid(mr->from)) {
		set_err(mr, MAILER_ERR_CONFIG,
		        "smtp.from: '%s' is not a plain address like outreach@example.org",
		        strpbrk(mr->from, "\r\n") ? "(invalid)" : mr->from);
	}
	if (mr->err != MAILER_ERR_NONE)
		return mr;

	if (mr->tls == SMTP_TLS_STARTTLS) {
		/*
		 * Two defects of libesmtp 1.1 shape this context:
		 *  - It caches the SSL_CTX it would create in a static and frees it when the first session
		 *    is destroyed, so a second STARTTLS session in the process uses freed memory. A
		 *    context of our own is reference-counted by smtp_starttls_set_ctx and released by
		 *    smtp_destroy_session, which is sound.
		 *  - After the handshake its protocol loop reads before it flushes the EHLO it has
		 *    queued. A TLS 1.3 server sends session tickets right after the handshake; when they
		 *    arrive first, libesmtp waits for a reply to a command it never sent until the
		 *    timeout. TLS 1.2 without tickets sends nothing unasked, so the session is capped
		 *    there.
		 * The context trusts the system's CA store (OpenSSL's defaults, which SSL_CERT_FILE and
		 * SSL_CERT_DIR override); libesmtp then checks the verification result and that the
		 * certificate names smtp.host.
		 */
		mr->ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (mr->ssl_ctx == NULL || !SSL_CTX_set_min_proto_version(mr->ssl_ctx, TLS1_2_VERSION) ||
		    !SSL_CTX_set_max_proto_version(mr->ssl_ctx, TLS1_2_VERSION) ||
		    !SSL_CTX_set_default_verify_paths(mr->ssl_ctx)) {
			set_err(mr, MAILER_ERR_CONFIG,
			        "smtp.tls = starttls: cannot set up an OpenSSL context");
			return mr;
		}
		SSL_CTX_set_options(mr->ssl_ctx, SSL_OP_NO_TICKET);
	}
	if (mr->user != NULL) {
		pthread_once(&auth_once, auth_init);
		mr->auth = auth_create_context();
		if (mr->auth == NULL) {
			set_err(mr, MAILER_ERR_CONFIG, "smtp: cannot create the AUTH context");
			return mr;
		}
		auth_set_mechanism_flags(mr->auth, AUTH_PLUGIN_PLAIN, 0);
		auth_set_interact_cb(mr->auth, auth_interact, mr);
		if (mr->tls == SMTP_TLS_NONE && !is_loopback(mr->host))
			log_warnx("smtp %s: AUTH without TLS sends the password unencrypted; consider "
			          "smtp.tls = starttls",
			          mr->hostport);
	}
	return mr;
}

void
mailer_free(struct mailer *mr)
{
	if (mr == NULL)
		return;
	if (mr->auth != NULL)
		auth_destroy_context(mr->auth);
	SSL_CTX_free(mr->ssl_ctx);
	if (mr->password != NULL) {
		explicit_bzero(mr->password, strlen(mr->password));
		free(mr->password);
	}
	free(mr->user);
	free(mr->host);
	free(mr->from);
	free(mr);
}

/* --- libesmtp callbacks ------------------------------------------------------------------------- */

static const char *
data_cb(void **ctx, int *len, void *arg)
{
	struct source *src = arg;

	(void)ctx; /* unused, so libesmtp has nothing to free */
	if (len == NULL) {
		src->pos = 0; /* rewind */
		return NULL;
	}
	if (src->pos >= src->len) {
		*len = 0;
		return NULL;
	}
	size_t n = src->len - src->pos < CHUNK ? src->len - src->pos : CHUNK;
	const char *p = src->data + src->pos;
	src->pos += n;
	*len = (int)n;
	return p;
}

/* Copies a reply's text without line breaks or control characters. */
static void
clean_text(char *dst, size_t dstlen, const char *src, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 1 < dstlen; i++) {
		unsigned char c = (unsigned char)src[i];
		if (c == '\r' || c == '\n' || c == '\t')
			c = ' ';
		else if (c < 0x20 || c == 0x7f)
			c = '?';
		if (c == ' ' && (o == 0 || dst[o - 1] == ' '))
			continue;
		dst[o++] = (char)c;
	}
	while (o > 0 && dst[o - 1] == ' ')
		o--;
	dst[o] = '\0';
}

/* One reply line from the relay: "NNN-text" (more follows) or "NNN text" (final). */
static void
reply_line(struct xfer *x, const char *line, size_t n)
{
	if (n < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]))
		return;
	if (n > 3 && line[3] == '-')
		return;
	int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	x->last_code = code;
	clean_text(x->last_text, sizeof(x->last_text), line + (n > 3 ? 4 : 3), n > 3 ? n - 4 : 0);
	if (x->in_auth && code != 334) {
		x->in_auth = false;
		if (code / 100 == 2) {
			x->auth_ok = true;
			x->auth_code = 0;
		} else {
			x->auth_code = code;
			memcpy(x->auth_text, x->last_text, sizeof(x->auth_text));
		}
	}
}

/* The protocol monitor: sees what is written (commands; never copied, since AUTH carries the
 * password) and the relay's replies, which are assembled into lines. The message data is not
 * shown to monitors. */
static void
monitor_cb(const char *buf, int buflen, int writing, void *arg)
{
	struct xfer *x = arg;

	if (writing == SMTP_CB_WRITING) {
		if (buflen >= 5 && strncasecmp(buf, "AUTH ", 5) == 0)
			x->in_auth = true;
		return;
	}
	if (writing != SMTP_CB_READING)
		return;
	for (int i = 0; i < buflen; i++) {
		char c = buf[i];
		if (c == '\n') {
			size_t n = x->linelen;
			if (n > 0 && x->line[n - 1] == '\r')
				n--;
			reply_line(x, x->line, n);
			x->linelen = 0;
		} else if (x->linelen + 1 < sizeof(x->line)) {
			x->line[x->linelen++] = c;
		} /* else: keep the start of an overlong line */
	}
}

static void
event_cb(smtp_session_t session, int event_no, void *arg, ...)
{
	struct xfer *x = arg;
	va_list ap;
	int *ok;

	(void)session;
	va_start(ap, arg);
	switch (event_no) {
	case SMTP_EV_EXTNA_STARTTLS:
		fmt_into(x->tls_problem, sizeof(x->tls_problem),
		         "the relay does not offer STARTTLS (smtp.tls = starttls)");
		break;
	case SMTP_EV_INVALID_PEER_CERTIFICATE: {
		long vfy = va_arg(ap, long);
		ok = va_arg(ap, int *);
		*ok = 0;
		fmt_into(x->tls_problem, sizeof(x->tls_problem),
		         "the relay's certificate does not verify: %s", X509_verify_cert_error_string(vfy));
		break;
	}
	case SMTP_EV_NO_PEER_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 0;
		fmt_into(x->tls_problem, sizeof(x->tls_problem), "the relay presented no certificate");
		break;
	case SMTP_EV_WRONG_PEER_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 0;
		fmt_into(x->tls_problem, sizeof(x->tls_problem),
		         "the relay's certificate is not for the host name in smtp.host");
		break;
	case SMTP_EV_WEAK_CIPHER:
		(void)va_arg(ap, int);
		ok = va_arg(ap, int *);
		*ok = 0;
		fmt_into(x->tls_problem, sizeof(x->tls_problem), "the relay offered only a weak cipher");
		break;
	case SMTP_EV_NO_CLIENT_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 0;
		fmt_into(x->tls_problem, sizeof(x->tls_problem),
		         "the client certificate's key cannot be used");
		break;
	case SMTP_EV_UNUSABLE_CLIENT_CERTIFICATE:
	case SMTP_EV_UNUSABLE_CA_LIST:
		fmt_into(x->tls_problem, sizeof(x->tls_problem), "unusable client certificate or CA files");
		break;
	default:
		break;
	}
	va_end(ap);
}

/* --- sending ------------------------------------------------------------------------------------ */

/* NULL when data can be handed to libesmtp, else what is wrong with it. */
static const char *
data_problem(const char *data, size_t len)
{
	if (data == NULL || len == 0)
		return "the message is empty";
	if (len > INT_MAX)
		return "the message is too large";
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\0')
			return "the message contains a NUL byte";
		if (data[i] == '\r' && (i + 1 == len || data[i + 1] != '\n'))
			return "the message contains a bare CR";
		if (data[i] == '\n' && (i == 0 || data[i - 1] != '\r'))
			return "the message contains a bare LF";
	}
	return NULL;
}

/* A reply's text as the result carries it: "5.1.1 text" with the enhanced code when there is one. */
static void
status_text(char *dst, size_t dstlen, const smtp_status_t *st)
{
	char text[256];

	clean_text(text, sizeof(text), st->text ? st->text : "", st->text ? strlen(st->text) : 0);
	if (st->enh_class != 0)
		fmt_into(dst, dstlen, "%d.%d.%d %s", st->enh_class, st->enh_subject, st->enh_detail, text);
	else
		fmt_into(dst, dstlen, "%s", text);
}

struct rcpt_walk {
	struct mailer_result *res;
	size_t accepted;
	size_t temp; /* 4xx or no reply */
	size_t perm; /* 5xx */
	const struct mailer_rcpt *first_temp;
	const struct mailer_rcpt *first_perm;
};

static void
rcpt_cb(smtp_recipient_t r, const char *mailbox, void *arg)
{
	struct rcpt_walk *w = arg;
	const smtp_status_t *st = smtp_recipient_status(r);
	int code = st != NULL ? st->code : 0;

	if (code / 100 == 2) {
		w->accepted++;
		return;
	}
	struct mailer_rcpt *rj = &w->res->rejected[w->res->nrejected++];
	fmt_into(rj->addr, sizeof(rj->addr), "%s", mailbox);
	rj->code = code;
	if (code == 0)
		fmt_into(rj->text, sizeof(rj->text), "no reply (the connection ended)");
	else
		status_text(rj->text, sizeof(rj->text), st);
	if (code / 100 == 5)
		w->perm++;
	else
		w->temp++;
}

/* Why nothing came back: the last reply when there was one, else libesmtp's error. */
static void
connection_text(struct mailer *mr, const struct xfer *x, int smtp_err, char *buf, size_t len)
{
	char e[160];

	if (x->last_code / 100 == 4 || x->last_code / 100 == 5)
		fmt_into(buf, len, "smtp %s: %d %s", mr->hostport, x->last_code, x->last_text);
	else if (smtp_err != 0)
		fmt_into(buf, len, "smtp %s: %s", mr->hostport, smtp_strerror(smtp_err, e, sizeof(e)));
	else
		fmt_into(buf, len, "smtp %s: the connection ended before the message was sent", mr->hostport);
}

static void
classify(struct mailer *mr, const struct xfer *x, bool session_ok, int smtp_err, smtp_message_t sm,
         size_t nrcpt, struct mailer_result *res)
{
	const smtp_status_t *mail = smtp_reverse_path_status(sm);
	const smtp_status_t *data = smtp_message_transfer_status(sm);
	struct rcpt_walk w = { .res = res };
	char text[256], why[300];

	res->rejected = xcalloc(nrcpt, sizeof(*res->rejected));
	res->nrejected = 0;
	smtp_enumerate_recipients(sm, rcpt_cb, &w);
	for (size_t i = 0; i < res->nrejected; i++) {
		if (res->rejected[i].code / 100 == 5 && w.first_perm == NULL)
			w.first_perm = &res->rejected[i];
		if (res->rejected[i].code / 100 != 5 && w.first_temp == NULL)
			w.first_temp = &res->rejected[i];
	}

	/* Delivered, to everyone or to some. */
	if (data->code / 100 == 2 && w.accepted > 0) {
		res->ndelivered = w.accepted;
		if (w.first_temp != NULL)
			set_result(res, MAILER_TEMPORARY, MAILER_STAGE_RCPT, w.first_temp->code,
			           "%zu of %zu recipients deferred, e.g. %s: %s", w.temp + w.perm, nrcpt,
			           w.first_temp->addr, w.first_temp->text);
		else if (w.first_perm != NULL)
			set_result(res, MAILER_PERMANENT, MAILER_STAGE_RCPT, w.first_perm->code,
			           "%zu of %zu recipients refused, e.g. %s: %s", w.perm, nrcpt,
			           w.first_perm->addr, w.first_perm->text);
		else {
			status_text(text, sizeof(text), data);
			set_result(res, MAILER_SENT, MAILER_STAGE_DONE, data->code, "%s", text);
		}
		return;
	}

	if (!session_ok && mail->code == 0) {
		connection_text(mr, x, smtp_err, why, sizeof(why));
		set_result(res, MAILER_TEMPORARY, MAILER_STAGE_CONNECT,
		           x->last_code / 100 >= 4 ? x->last_code : 0, "%s", why);
		return;
	}
	if (x->auth_code != 0) {
		set_result(res, x->auth_code / 100 == 5 ? MAILER_PERMANENT : MAILER_TEMPORARY,
		           MAILER_STAGE_AUTH, x->auth_code, "smtp %s: AUTH as %s refused: %d %s",
		           mr->hostport, mr->user, x->auth_code, x->auth_text);
		return;
	}
	if (x->tls_problem[0] != '\0') {
		set_result(res, MAILER_TEMPORARY, MAILER_STAGE_TLS, 0, "smtp %s: %s", mr->hostport,
		           x->tls_problem);
		return;
	}
	if (mail->code == 0) {
		connection_text(mr, x, smtp_err, why, sizeof(why));
		set_result(res, MAILER_TEMPORARY, MAILER_STAGE_CONNECT,
		           x->last_code / 100 >= 4 ? x->last_code : 0, "%s", why);
		return;
	}
	if (mail->code / 100 != 2) {
		status_text(text, sizeof(text), mail);
		set_result(res, mail->code / 100 == 5 ? MAILER_PERMANENT : MAILER_TEMPORARY,
		           MAILER_STAGE_MAIL, mail->code, "MAIL FROM refused: %d %s", mail->code, text);
		return;
	}
	if (w.accepted == 0) {
		if (w.first_temp != NULL)
			set_result(res, MAILER_TEMPORARY, MAILER_STAGE_RCPT, w.first_temp->code,
			           "no recipient accepted, e.g. %s: %d %s", w.first_temp->addr,
			           w.first_temp->code, w.first_temp->text);
		else
			set_result(res, MAILER_PERMANENT, MAILER_STAGE_RCPT, w.first_perm->code,
			           "every recipient refused, e.g. %s: %d %s", w.first_perm->addr,
			           w.first_perm->code, w.first_perm->text);
		return;
	}
	if (data->code / 100 == 5) {
		status_text(text, sizeof(text), data);
		set_result(res, MAILER_PERMANENT, MAILER_STAGE_DATA, data->code, "message refused: %d %s",
		           data->code, text);
	} else if (data->code / 100 == 4) {
		status_text(text, sizeof(text), data);
		set_result(res, MAILER_TEMPORARY, MAILER_STAGE_DATA, data->code, "message deferred: %d %s",
		           data->code, text);
	} else {
		/* No final reply: the connection ended during DATA. The relay may or may not have the
		 * message; SMTP cannot tell, so the message is sent again later. */
		connection_text(mr, x, smtp_err, why, sizeof(why));
		set_result(res, MAILER_TEMPORARY, MAILER_STAGE_DATA, 0, "%s (during DATA)", why);
	}
}

static bool
rcpts_problem(const char *const *rcpts, size_t nrcpt, char *buf, size_t len)
{
	if (rcpts == NULL || nrcpt == 0) {
		fmt_into(buf, len, "no recipient");
		return true;
	}
	for (size_t i = 0; i < nrcpt; i++) {
		if (!msg_addr_valid(rcpts[i])) {
			fmt_into(buf, len, "recipient %zu is not a plain address like name@example.org",
			         i + 1);
			return true;
		}
	}
	return false;
}

int
mailer_send_batch(struct mailer *mr, const char *from_addr, struct mailer_msg *msgs, size_t n)
{
	smtp_session_t session = NULL;
	smtp_message_t *sms = xcalloc(n, sizeof(*sms)); /* NULL: not handed to libesmtp */
	struct source *srcs = xcalloc(n, sizeof(*srcs));
	struct xfer x;
	size_t queued = 0, sent = 0;
	char why[160];
	int smtp_err;
	bool ok;

	memset(&x, 0, sizeof(x));
	for (size_t i = 0; i < n; i++)
		mailer_result_clear(&msgs[i].res);
	if (from_addr == NULL)
		from_addr = mr->from;

	session = mr->err == MAILER_ERR_CONFIG ? NULL : smtp_create_session();
	if (session != NULL && !smtp_set_server(session, mr->hostport)) {
		smtp_destroy_session(session);
		session = NULL;
	}
	if (session != NULL) {
		for (int t = Timeout_GREETING; t <= Timeout_DATA2; t++)
			smtp_set_timeout(session, t | Timeout_OVERRIDE_RFC2822_MINIMUM, mr->timeout_ms);
		smtp_starttls_enable(session,
		                     mr->tls == SMTP_TLS_STARTTLS ? Starttls_REQUIRED : Starttls_DISABLED);
		if (mr->ssl_ctx != NULL)
			smtp_starttls_set_ctx(session, mr->ssl_ctx);
		if (mr->auth != NULL)
			smtp_auth_set_context(session, mr->auth);
		smtp_set_eventcb(session, event_cb, &x);
		smtp_set_monitorcb(session, monitor_cb, &x, 0);
	}

	for (size_t i = 0; i < n; i++) {
		struct mailer_result *res = &msgs[i].res;
		const char *dp;

		/* Refusals before any connection. */
		if (mr->err == MAILER_ERR_CONFIG) {
			set_result(res, MAILER_TEMPORARY, MAILER_STAGE_CONFIG, 0, "%s", mr->errstr);
			continue;
		}
		if (!msg_addr_valid(from_addr)) {
			set_result(res, MAILER_PERMANENT, MAILER_STAGE_INPUT, 0,
			           "the envelope sender is not a plain address like name@example.org");
			continue;
		}
		if (rcpts_problem(msgs[i].rcpts, msgs[i].nrcpt, why, sizeof(why))) {
			set_result(res, MAILER_PERMANENT, MAILER_STAGE_INPUT, 0, "%s", why);
			continue;
		}
		if ((dp = data_problem(msgs[i].data, msgs[i].len)) != NULL) {
			set_result(res, MAILER_PERMANENT, MAILER_STAGE_INPUT, 0, "%s", dp);
			continue;
		}
		/* Until the session says otherwise. */
		set_result(res, MAILER_TEMPORARY, MAILER_STAGE_CONNECT, 0,
		           "smtp %s: libesmtp could not set up the message", mr->hostport);
		if (session == NULL)
			continue;
		smtp_message_t sm = smtp_add_message(session);
		srcs[i] = (struct source){ msgs[i].data, msgs[i].len, 0 };
		bool good = sm != NULL && smtp_set_reverse_path(sm, from_addr) &&
		            smtp_set_messagecb(sm, data_cb, &srcs[i]) &&
		            smtp_size_set_estimate(sm, msgs[i].len);
		for (size_t k = 0; good && k < msgs[i].nrcpt; k++)
			good = smtp_add_recipient(sm, msgs[i].rcpts[k]) != NULL;
		if (!good) {
			/* A message libesmtp half-knows cannot be taken out of the session: send nothing. */
			queued = 0;
			break;
		}
		sms[i] = sm;
		queued++;
	}

	if (session != NULL && queued > 0) {
		ok = smtp_start_session(session) != 0;
		smtp_err = smtp_errno();
		for (size_t i = 0; i < n; i++) {
			if (sms[i] == NULL)
				continue;
			classify(mr, &x, ok, smtp_err, sms[i], msgs[i].nrcpt, &msgs[i].res);
			if (msgs[i].res.status == MAILER_SENT)
				sent++;
		}
		log_debug("smtp %s: %zu of %zu messages sent in one session", mr->hostport, sent, n);
	}
	if (session != NULL)
		smtp_destroy_session(session);
	free(sms);
	free(srcs);

	if (sent == n) {
		set_err(mr, MAILER_ERR_NONE, "%s", "");
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const struct mailer_result *res = &msgs[i].res;
		if (res->status == MAILER_SENT)
			continue;
		if (mr->err != MAILER_ERR_CONFIG)
			set_err(mr, MAILER_ERR_SEND, "%s (%s, %s)", res->text,
			        mailer_status_name(res->status), mailer_stage_name(res->stage));
		break;
	}
	return -1;
}

int
mailer_send(struct mailer *mr, const char *from_addr, const char *const *rcpts, size_t nrcpt,
            const char *data, size_t len, struct mailer_result *res)
{
	struct mailer_msg one = { rcpts, nrcpt, data, len, MAILER_RESULT_INIT };
	int rc;

	mailer_result_clear(res);
	rc = mailer_send_batch(mr, from_addr, &one, 1);
	*res = one.res;
	return rc;
}

/*
 * libesmtp writes a message in 2 KiB pieces on a socket without TCP_NODELAY, so the end of every
 * message meets the peer's delayed ACK: about 40 ms lost per message, which caps a sender at ~24
 * messages a second. libesmtp exposes no socket, so this connect() stands in front of the C
 * library's in any program that links the mailer and sets TCP_NODELAY on every TCP socket it
 * connects (libpq, hiredis and libcurl set it on theirs anyway), then connects as usual.
 */
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static pthread_once_t real_connect_once = PTHREAD_ONCE_INIT;

static void
find_real_connect(void)
{
	real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
}

int
connect(int fd, const struct sockaddr *sa, socklen_t len)
{
	pthread_once(&real_connect_once, find_real_connect);
	if (real_connect == NULL) {
		errno = ENOSYS;
		return -1;
	}
	if (sa && (sa->sa_family == AF_INET || sa->sa_family == AF_INET6)) {
		int type = 0, one = 1;
		socklen_t tlen = sizeof(type);
		if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM)
			(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return real_connect(fd, sa, len);
}
