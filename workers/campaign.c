/* campaign: CampaignSendJob, an enrollment's due step: a tracked message, a call, a stop, or a timeout check. */
#include "workers/campaign.h"

#include <ctype.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/campvars.h"
#include "common/log.h"
#include "common/mailtmpl.h"
#include "common/msg.h"
#include "common/segment.h"
#include "common/tmpl.h"
#include "workers/handler.h"

/* The running keys, read at start and again on SIGHUP (campaign_reload_keys): the job threads copy
 * them under the lock, so a reload never changes a key while a token is being made or checked. */
static pthread_mutex_t keys_lock = PTHREAD_MUTEX_INITIALIZER;
static struct token_keys keys;
static bool have_key;
/* The footer of every HTML part (CAN-SPAM): postal address, unsubscribe link, open pixel. */
static struct tmpl *footer;

int
campaign_init(const struct cfg *c, char *err, size_t errlen)
{
	if (footer == NULL)
		footer = tmpl_parse("<div style=\"margin-top:24px;font-size:12px;color:#666666\">"
		                    "<p style=\"white-space:pre-line\">{{postal}}</p>"
		                    "<p>You receive this email because you work with us as a referring provider. "
		                    "<a href=\"{{unsub}}\">Unsubscribe</a></p></div>"
		                    "<img src=\"{{pixel}}\" width=\"1\" height=\"1\" alt=\"\">",
		                    "footer", err, errlen);
	if (footer == NULL)
		return -1;
	return campaign_reload_keys(c, err, errlen);
}

int
campaign_reload_keys(const struct cfg *c, char *err, size_t errlen)
{
	struct token_keys fresh = {0};
	/* campaigns.token_key_file needs a restart to change: a reload keeps the running path
	 * (cfg_keep_restart_keys) and the file behind it is read again. */
	const char *key_path = c->campaigns.token_key_file;
	bool have = key_path[0] != '\0';
	const char *failed;

	if (have && token_keys_load(key_path, c->campaigns.previous_token_key_file, &fresh, &failed, err, errlen) == -1)
		return -1;
	pthread_mutex_lock(&keys_lock);
	token_keys_clear(&keys);
	keys = fresh;
	have_key = have;
	pthread_mutex_unlock(&keys_lock);
	token_keys_clear(&fresh);
	return 0;
}

bool
campaign_keys_copy(struct token_keys *out)
{
	pthread_mutex_lock(&keys_lock);
	bool have = have_key;
	if (have)
		*out = keys;
	pthread_mutex_unlock(&keys_lock);
	return have;
}

void
campaign_now(char *buf, size_t len)
{
	snprintf(buf, len, "%.6f", util_clock());
}

/* --- link tracking ------------------------------------------------------------------------------ */

/* The URL of a click link, or NULL when no token can carry url (caller frees). */
static char *
click_link(const struct token_key *k, const char *public_url, long long message_id, const char *url)
{
	if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0)
		return NULL;
	char *tok = token_make(k, TOKEN_CLICK, message_id, url);
	if (tok == NULL)
		return NULL;
	char *link = xasprintf("%s/c/%s", public_url, tok);
	free(tok);
	return link;
}

/* The numeric character reference at s (n bytes: "&#NNN;" or "&#xHHH;", the ";" optional and leading
 * zeros allowed, as HTML reads them) written as UTF-8 at out; its length in s, or 0 when s starts
 * with none (or it names NUL, a surrogate or no code point: it stays as written). A reference is
 * never shorter than the UTF-8 it becomes. */
static size_t
numeric_ref(const char *s, size_t n, char *out, size_t *outlen)
{
	bool hex = n > 2 && (s[2] == 'x' || s[2] == 'X');
	size_t i = hex ? 3 : 2, digits = 0;
	unsigned long cp = 0;

	if (n < 3 || s[0] != '&' || s[1] != '#')
		return 0;
	for (; i < n && (hex ? isxdigit((unsigned char)s[i]) : isdigit((unsigned char)s[i])); i++) {
		if (cp == 0 && s[i] == '0') /* a leading zero */
			continue;
		if (++digits > 8) /* above U+10FFFF whatever follows */
			return 0;
		cp = cp * (hex ? 16 : 10) + (unsigned long)(isdigit((unsigned char)s[i]) ? s[i] - '0'
		                                                                          : (s[i] | 0x20) - 'a' + 10);
	}
	if (i == (hex ? 3u : 2u) || cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	if (i < n && s[i] == ';')
		i++;
	unsigned char *o = (unsigned char *)out;
	if (cp < 0x80) {
		o[0] = (unsigned char)cp, *outlen = 1;
	} else if (cp < 0x800) {
		o[0] = (unsigned char)(0xC0 | cp >> 6), o[1] = (unsigned char)(0x80 | (cp & 0x3F)), *outlen = 2;
	} else if (cp < 0x10000) {
		o[0] = (unsigned char)(0xE0 | cp >> 12), o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp & 0x3F)), *outlen = 3;
	} else {
		o[0] = (unsigned char)(0xF0 | cp >> 18), o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
		o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (unsigned char)(0x80 | (cp & 0x3F)), *outlen = 4;
	}
	return i;
}

/* Decodes an attribute value before the link is signed: the entities Mustache's HTML escaping
 * writes (&amp; &lt; &gt; &quot;), &apos;, and the numeric character references a hand-written
 * template may hold (&#38; &#x26; ...; one that names no character stays as written, where a
 * browser would put U+FFFD). */
static char *
html_unescape(const char *s, size_t n)
{
	static const struct {
		const char *ent, *ch;
	} ents[] = {{"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}};
	char *out = xmalloc(n + 1), *o = out;

	for (size_t i = 0; i < n;) {
		size_t j = 0, l, w;
		if ((l = numeric_ref(s + i, n - i, o, &w)) > 0) {
			o += w;
			i += l;
			continue;
		}
		for (; j < NELEM(ents); j++) {
			l = strlen(ents[j].ent);
			if (i + l <= n && strncasecmp(s + i, ents[j].ent, l) == 0) {
				*o++ = ents[j].ch[0];
				i += l;
				break;
			}
		}
		if (j == NELEM(ents))
			*o++ = s[i++];
	}
	*o = '\0';
	return out;
}

/* Finds the next link target at or after p in text that starts at base: [*start, *end). */
typedef bool link_finder(const char *base, const char *p, const char **start, const char **end);

/* The value of the next href="..." or href='...' attribute. */
static bool
find_href(const char *base, const char *p, const char **start, const char **end)
{
	for (const char *h; (h = strcasestr(p, "href")) != NULL; p = h + 4) {
		const char *q = h + 4 + strspn(h + 4, " \t\r\n");
		if (*q != '=' || (h > base && (isalnum((unsigned char)h[-1]) || h[-1] == '-')))
			continue;
		q += 1 + strspn(q + 1, " \t\r\n");
		if ((*q != '"' && *q != '\'') || strchr(q + 1, *q) == NULL)
			continue;
		*start = q + 1;
		*end = strchr(q + 1, *q);
		return true;
	}
	return false;
}

/* The next bare http(s) URL, without the punctuation that ends a sentence. */
static bool
find_url(const char *base, const char *p, const char **start, const char **end)
{
	const char *a = strcasestr(p, "http://"), *b = strcasestr(p, "https://");
	const char *u = a && (!b || a < b) ? a : b;

	(void)base;
	if (u == NULL)
		return false;
	size_t n = strcspn(u, " \t\r\n<>\"'");
	while (n > 0 && strchr(".,;:!?)]", u[n - 1]))
		n--;
	*start = u;
	*end = u + n;
	return true;
}

/* s with every link find finds replaced by its click link (HTML entities decoded first when html). */
static char *
track(const struct token_key *k, const char *public_url, long long message_id, const char *s, link_finder *find,
      bool html)
{
	char *out = NULL;
	size_t outlen = 0;
	FILE *f = open_memstream(&out, &outlen);
	const char *p = s, *start, *end;

	while (find(s, p, &start, &end)) {
		char *url = html ? html_unescape(start, (size_t)(end - start)) : xstrndup(start, (size_t)(end - start));
		char *link = click_link(k, public_url, message_id, url);
		fwrite(p, 1, (size_t)(start - p), f);
		if (link)
			fputs(link, f);
		else
			fwrite(start, 1, (size_t)(end - start), f);
		free(link);
		free(url);
		p = end;
	}
	fputs(p, f);
	fclose(f);
	return out;
}

char *
campaign_track_html(const struct token_key *k, const char *public_url, long long message_id, const char *html)
{
	return track(k, public_url, message_id, html, find_href, true);
}

char *
campaign_track_text(const struct token_key *k, const char *public_url, long long message_id, const char *text)
{
	return track(k, public_url, message_id, text, find_url, false);
}

/* --- the step ------------------------------------------------------------------------------------ */

/* campaign_take's columns. */
enum {
	L_ORD, L_STATE, L_STEP, L_DUE, L_CSTATUS, L_CID, L_CNAME, L_SNAME, L_SEMAIL, L_REPLY, L_POSTAL, L_SEGMENT,
	L_SOURCE, L_EMAIL, L_FIRST, L_LAST, L_CRED, L_ORG, L_SPEC, L_CITY, L_ST, L_CONAME, L_COEMAIL, L_COID, L_KIND,
	L_SUPPRESSED, L_RULE, L_ACTION, L_VARIANT, L_MROW, L_SUBJECT, L_HTML, L_TEXT, L_MESSAGE, L_HEADER, L_FRESH
};

/* The template variables (common/campvars) from row i of campaign_take. */
static json_t *
load_vars(const PGresult *r, int i)
{
	const char *first = PQgetvalue(r, i, L_FIRST), *last = PQgetvalue(r, i, L_LAST);
	const char *coname = PQgetvalue(r, i, L_CONAME);
	bool org = strcmp(PQgetvalue(r, i, L_KIND), "organization") == 0;
	char *name = org ? xstrdup(PQgetvalue(r, i, L_ORG)) : xasprintf("%s%s%s", first, *first ? " " : "", last);
	char *cofirst = xstrndup(coname, strcspn(coname, " "));
	const char *v[CAMPVARS_N] = {
		PQgetvalue(r, i, L_SOURCE), name, first, last, PQgetvalue(r, i, L_CRED), PQgetvalue(r, i, L_ORG),
		PQgetvalue(r, i, L_SPEC), PQgetvalue(r, i, L_CITY), PQgetvalue(r, i, L_ST), PQgetvalue(r, i, L_EMAIL),
		coname, cofirst, PQgetvalue(r, i, L_COEMAIL), PQgetvalue(r, i, L_CNAME), PQgetvalue(r, i, L_SNAME),
		PQgetvalue(r, i, L_SEMAIL), PQgetvalue(r, i, L_POSTAL),
	};
	json_t *ctx = campvars_from(v);

	free(name);
	free(cofirst);
	return ctx;
}

/* --- what a worker thread keeps between the jobs of a batch ---------------------------------------- */

#define VARIANT_CACHE 16

/* A variant's parsed templates, kept per campaign_messages row together with the text they were
 * parsed from: a row whose text changed is parsed again, so an edited variant is never served
 * stale. */
struct variant {
	long long row; /* 0: an empty slot */
	char *src[3];  /* subject, text and HTML templates as loaded */
	struct mailtmpl t;
	char err[256]; /* why a template does not parse, or "" */
};

/* One enrollment of the batch taken by campaign_send_batch_start. */
struct taken {
	long long enrollment;
	char *jid;
	bool used; /* its job ran */
};

struct thread_state {
	PGresult *batch; /* campaign_take's rows for the batch, one per entry of taken */
	struct taken *taken;
	size_t ntaken;
	char **sent; /* the messages the relay took, recorded together by campaign_send_batch_done */
	size_t nsent, capsent;
	struct variant cache[VARIANT_CACHE];
	unsigned next_slot;
};

static pthread_key_t state_key;
static pthread_once_t state_once = PTHREAD_ONCE_INIT;

static void
variant_clear(struct variant *v)
{
	for (size_t k = 0; k < NELEM(v->src); k++)
		free(v->src[k]);
	mailtmpl_free(&v->t);
	memset(v, 0, sizeof(*v));
}

static void
batch_clear(struct thread_state *st)
{
	PQclear(st->batch);
	st->batch = NULL;
	for (size_t k = 0; k < st->ntaken; k++)
		free(st->taken[k].jid);
	free(st->taken);
	st->taken = NULL;
	st->ntaken = 0;
}

static void
state_free(void *p)
{
	struct thread_state *st = p;

	batch_clear(st);
	for (size_t k = 0; k < st->nsent; k++)
		free(st->sent[k]);
	free(st->sent);
	for (size_t k = 0; k < VARIANT_CACHE; k++)
		variant_clear(&st->cache[k]);
	free(st);
}

static void
state_key_make(void)
{
	if (pthread_key_create(&state_key, state_free) != 0)
		fatalx("cannot create the campaign worker's thread state");
}

/* This thread's state, made on first use and freed when the thread ends. */
static struct thread_state *
state_get(void)
{
	pthread_once(&state_once, state_key_make);
	struct thread_state *st = pthread_getspecific(state_key);
	if (st == NULL) {
		st = xcalloc(1, sizeof(*st));
		if (pthread_setspecific(state_key, st) != 0)
			fatalx("cannot keep the campaign worker's thread state");
	}
	return st;
}

/* The parsed templates of the variant in row i of campaign_take (borrowed: valid until the next
 * call), from the cache when the row's text is the one cached; err is set when one does not parse
 * or the HTML one puts a value in unescaped. */
static const struct variant *
variant_get(const PGresult *r, int i)
{
	struct thread_state *st = state_get();
	long long row = atoll(PQgetvalue(r, i, L_MROW));
	const char *src[3] = {PQgetvalue(r, i, L_SUBJECT), PQgetvalue(r, i, L_TEXT), PQgetvalue(r, i, L_HTML)};
	const char *names[3] = {"subject", "text_template", "html_template"};
	struct variant *v = NULL;

	for (size_t k = 0; k < VARIANT_CACHE && v == NULL; k++) {
		struct variant *c = &st->cache[k];
		if (c->row == row && strcmp(c->src[0], src[0]) == 0 && strcmp(c->src[1], src[1]) == 0 &&
		    strcmp(c->src[2], src[2]) == 0)
			v = c;
	}
	if (v)
		return v;
	/* The slot of the same row when its text changed, else the next one round the ring. */
	for (size_t k = 0; k < VARIANT_CACHE && v == NULL; k++)
		if (st->cache[k].row == row)
			v = &st->cache[k];
	if (v == NULL)
		v = &st->cache[st->next_slot++ % VARIANT_CACHE];
	variant_clear(v);
	v->row = row;
	for (size_t k = 0; k < NELEM(src); k++)
		v->src[k] = xstrdup(src[k]);
	/* A variant outreachctl refuses (an HTML tag that puts row data in unescaped) may still reach
	 * the table another way (SQL by hand, another application): it is unusable here too. */
	if (mailtmpl_parse(&v->t, src, names, v->err, sizeof(v->err)) == -1 && !v->err[0])
		snprintf(v->err, sizeof(v->err), "a template does not parse");
	return v;
}

/* Loads the enrollments of jobs and claims the message of each that takes a message step now, in
 * one call (campaign_take); the rows, one per job in order, or NULL on a database error. */
static PGresult *
take(struct job_ctx *ctx, const struct job *const *jobs, size_t n)
{
	json_t *eids = json_array(), *locals = json_array(), *jids = json_array();
	char now[32];

	for (size_t k = 0; k < n; k++) {
		unsigned char rnd[16];
		char hex[33];
		util_random(rnd, sizeof(rnd));
		util_hex(rnd, sizeof(rnd), hex);
		json_array_append_new(eids, json_integer(json_integer_value(json_array_get(jobs[k]->args, 0))));
		json_array_append_new(locals, json_string(hex));
		json_array_append_new(jids, json_string(jobs[k]->jid));
	}
	char *a = segment_pg_array(eids), *b = segment_pg_array(locals), *c = segment_pg_array(jids);
	campaign_now(now, sizeof(now));
	PGresult *r = db_query_prepared(ctx->db, "campaign_take",
	                                "SELECT * FROM campaign_take($1::bigint[], $2::text[], $3::text[], "
	                                "to_timestamp($4::float8))",
	                                DB_ARGS(a, b, c, now));
	if (r && (size_t)PQntuples(r) != n) {
		log_warnx("campaign_take returned %d rows for %zu enrollments", PQntuples(r), n);
		PQclear(r);
		r = NULL;
	}
	free(a);
	free(b);
	free(c);
	json_decref(eids);
	json_decref(locals);
	json_decref(jids);
	return r;
}

/* Gives back the claims of n messages never handed to the relay (campaign_unclaim). */
static void
unclaim(struct job_ctx *ctx, const char *const *messages, const char *const *jids, const bool *fresh, size_t n)
{
	json_t *m = json_array(), *j = json_array(), *f = json_array();

	for (size_t k = 0; k < n; k++) {
		json_array_append_new(m, json_integer(atoll(messages[k])));
		json_array_append_new(j, json_string(jids[k]));
		json_array_append_new(f, json_string(fresh[k] ? "t" : "f"));
	}
	char *a = segment_pg_array(m), *b = segment_pg_array(j), *c = segment_pg_array(f);
	if (db_exec(ctx->db, "SELECT campaign_unclaim($1::bigint[], $2::text[], $3::boolean[])", DB_ARGS(a, b, c)) == -1)
		log_warnx("giving back %zu campaign message claim(s): %s (they are taken over after ten minutes)", n,
		          db_error(ctx->db));
	free(a);
	free(b);
	free(c);
	json_decref(m);
	json_decref(j);
	json_decref(f);
}

/* Records the messages in list as sent (campaign_sent_batch). */
static void
record_sent(struct job_ctx *ctx, char *const *list, size_t n)
{
	json_t *ids = json_array();
	char now[32];

	for (size_t k = 0; k < n; k++)
		json_array_append_new(ids, json_integer(atoll(list[k])));
	char *a = segment_pg_array(ids);
	campaign_now(now, sizeof(now));
	PGresult *done = NULL;
	/* Twice: a deadlock with an unsubscribe stopping the same enrollments, or a connection lost and
	 * made again, is not worth a resend. */
	for (int attempt = 0; attempt < 2 && done == NULL; attempt++) {
		if (attempt > 0 && PQstatus(db_conn(ctx->db)) != CONNECTION_OK && db_reset(ctx->db) == -1)
			break;
		done = db_query_prepared(ctx->db, "campaign_sent_batch",
		                         "SELECT campaign_sent_batch($1::bigint[], to_timestamp($2::float8))", DB_ARGS(a, now));
	}
	if (done == NULL)
		log_warnx("campaign messages %s went out but recording them failed: %s (each is resent only if its "
		          "enrollment is picked up again after ten minutes)",
		          a, db_error(ctx->db));
	PQclear(done);
	free(a);
	json_decref(ids);
}

void
campaign_send_batch_start(struct job_ctx *ctx, const struct job *const *jobs, size_t n)
{
	struct thread_state *st = state_get();

	batch_clear(st);
	if (n == 0)
		return;
	st->batch = take(ctx, jobs, n);
	if (st->batch == NULL) {
		/* Each job loads and claims its own enrollment then, and fails on its own. */
		log_warnx("loading a batch of %zu campaign enrollments: %s", n, db_error(ctx->db));
		return;
	}
	int claimed = 0;
	for (int k = 0; k < PQntuples(st->batch); k++)
		claimed += !PQgetisnull(st->batch, k, L_MESSAGE);
	log_debug("campaign batch: %zu enrollment(s) loaded, %d message(s) claimed in one call", n, claimed);
	st->taken = xcalloc(n, sizeof(*st->taken));
	st->ntaken = n;
	for (size_t k = 0; k < n; k++) {
		st->taken[k].enrollment = (long long)json_integer_value(json_array_get(jobs[k]->args, 0));
		st->taken[k].jid = xstrdup(jobs[k]->jid);
	}
}

void
campaign_send_batch_done(struct job_ctx *ctx)
{
	pthread_once(&state_once, state_key_make);
	struct thread_state *st = pthread_getspecific(state_key);

	if (st == NULL || (st->nsent == 0 && st->ntaken == 0))
		return;
	if (st->nsent > 0) {
		record_sent(ctx, st->sent, st->nsent);
		for (size_t k = 0; k < st->nsent; k++)
			free(st->sent[k]);
		st->nsent = 0;
	}
	/* Claims of jobs that never ran (the worker stopped taking jobs mid-batch) are given back, so
	 * that those jobs send at once when they run again. */
	const char **msgs = xcalloc(st->ntaken + 1, sizeof(*msgs)), **jids = xcalloc(st->ntaken + 1, sizeof(*jids));
	bool *fresh = xcalloc(st->ntaken + 1, sizeof(*fresh));
	size_t n = 0;
	for (size_t k = 0; k < st->ntaken; k++) {
		if (st->taken[k].used || PQgetisnull(st->batch, (int)k, L_MESSAGE))
			continue;
		msgs[n] = PQgetvalue(st->batch, (int)k, L_MESSAGE);
		jids[n] = st->taken[k].jid;
		fresh[n++] = PQgetvalue(st->batch, (int)k, L_FRESH)[0] == 't';
	}
	if (n > 0)
		unclaim(ctx, msgs, jids, fresh, n);
	free(msgs);
	free(jids);
	free(fresh);
	batch_clear(st);
}

/* What a message needs once the relay has answered. */
struct sent {
	char message[24], recipient[256];
};

enum job_result
campaign_db_retry(struct job_ctx *ctx, const char *what)
{
	enum job_result rc = job_fail(ctx, JOB_RETRY, "DatabaseError", "%s: %s", what, db_error(ctx->db));
	db_rollback(ctx->db);
	return rc;
}

static enum job_result
sent_finish(struct job_ctx *ctx, const struct mailer_result *res, void *priv)
{
	struct sent *s = priv;
	char now[32], why[600];

	campaign_now(now, sizeof(now));
	if (res->status == MAILER_SENT) {
		log_debug("sent campaign message %s to %s", s->message, s->recipient);
		if (ctx->outbox) {
			/* The runtime's batch: recorded with the batch's other messages by
			 * campaign_send_batch_done, before any of their jobs ends. */
			struct thread_state *st = state_get();
			if (st->nsent == st->capsent) {
				st->capsent = st->capsent ? st->capsent * 2 : 32;
				st->sent = xrealloc(st->sent, st->capsent * sizeof(*st->sent));
			}
			st->sent[st->nsent++] = xstrdup(s->message);
		} else {
			char *one[] = {s->message};
			record_sent(ctx, one, 1);
		}
		return JOB_DONE;
	}
	snprintf(why, sizeof(why), "SMTP %s at %s: %d %s", mailer_status_name(res->status), mailer_stage_name(res->stage),
	         res->code, res->text);
	if (res->status == MAILER_PERMANENT && (res->stage == MAILER_STAGE_RCPT || res->stage == MAILER_STAGE_DATA)) {
		/* A hard bounce: the address is never mailed again, the sequence ends. */
		if (db_exec(ctx->db, "SELECT campaign_bounced($1, to_timestamp($2::float8), $3)",
		            DB_ARGS(s->message, now, why)) == -1)
			return job_fail(ctx, JOB_RETRY, "DatabaseError", "recording the bounce of %s: %s", s->recipient,
			                db_error(ctx->db));
		log_notice("campaign message %s to %s bounced (%s): the address is suppressed", s->message, s->recipient,
		           why);
		return JOB_DONE;
	}
	if (db_exec(ctx->db, "UPDATE email_messages SET attempt_at = NULL, error = $2 WHERE id = $1",
	            DB_ARGS(s->message, why)) == -1)
		log_warnx("recording the failed attempt of campaign message %s: %s", s->message, db_error(ctx->db));
	if (res->status == MAILER_PERMANENT)
		return job_fail(ctx, JOB_DEAD, "SMTPPermanentFailure", "%s", why);
	return job_fail(ctx, JOB_RETRY, "SMTPTemporaryFailure", "%s", why);
}

static const char lua_rate[] =
    "local g, d = tonumber(ARGV[1]), tonumber(ARGV[2]) "
    "if g > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= g then return 1 end "
    "if d > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= d then return 2 end "
    "if g > 0 then redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], 2) end "
    "if d > 0 then redis.call('INCR', KEYS[2]); redis.call('EXPIRE', KEYS[2], 120) end "
    "return 0";

/* 0 when a message to domain may go now; 1 with *delay seconds to wait; -1 on a Redis failure. */
static int
rate_check(struct job_ctx *ctx, const char *domain, double *delay)
{
	int g = ctx->cfg->campaigns.max_per_second, d = ctx->cfg->campaigns.max_per_domain_per_minute;
	double now = util_now();
	char gkey[64], dkey[320], gs[16], ds[16];

	if (g == 0 && d == 0)
		return 0;
	snprintf(gkey, sizeof(gkey), "outreach:campaign_rate:%lld", (long long)now);
	snprintf(dkey, sizeof(dkey), "outreach:campaign_rate:%.250s:%lld", domain, (long long)now / 60);
	for (char *c = dkey; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	snprintf(gs, sizeof(gs), "%d", g);
	snprintf(ds, sizeof(ds), "%d", d);
	redisReply *r = redisCommand(ctx->redis, "EVAL %s 2 %s %s %s %s", lua_rate, gkey, dkey, gs, ds);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
		freeReplyObject(r);
		return -1;
	}
	long long v = r->integer;
	freeReplyObject(r);
	if (v == 0)
		return 0;
	/* The next window, spread over its first part so that the waiting messages do not all return at once. */
	unsigned char jitter;
	util_random(&jitter, 1);
	if (v == 1)
		*delay = 1.0 - (now - (double)(long long)now) + jitter / 255.0;
	else
		*delay = 60.0 - (now - (double)((long long)now / 60 * 60)) + jitter / 8.5;
	return 1;
}

/* Moves the enrollment's due time delay seconds on; the scan queues it again then. (A job pushed
 * back to Redis instead would be joined by the scan's own after ten minutes, and the two would run
 * into the limit together.) */
static enum job_result
reschedule(struct job_ctx *ctx, const char *enrollment, double delay)
{
	char at[32];

	snprintf(at, sizeof(at), "%.6f", util_clock() + delay);
	if (db_exec(ctx->db,
	            "UPDATE campaign_enrollments SET next_action_at = to_timestamp($2::float8), enqueued_at = NULL "
	            "WHERE id = $1 AND state = 'active'",
	            DB_ARGS(enrollment, at)) == -1)
		return campaign_db_retry(ctx, "rescheduling the enrollment");
	log_info("enrollment %s: the campaign rate limit is reached; rescheduled in %.1f s", enrollment, delay);
	return JOB_DONE;
}

/* Stops the enrollment with reason (unless it stopped or moved on meanwhile). */
static enum job_result
stop_enrollment(struct job_ctx *ctx, const char *id, const char *reason)
{
	if (db_exec(ctx->db,
	            "UPDATE campaign_enrollments SET state = 'stopped', stop_reason = $2, next_action_at = NULL, "
	            "next_step_id = NULL, enqueued_at = NULL WHERE id = $1 AND state = 'active'",
	            DB_ARGS(id, reason)) == -1)
		return campaign_db_retry(ctx, "stopping the enrollment");
	log_info("enrollment %s stopped: %s", id, reason);
	return JOB_DONE;
}

/* Renders the message of row i of r (campaign_take's) from the variant's templates v as message
 * `message` under Message-ID m's, with tracked links, the open pixel, List-Unsubscribe and the
 * footer, into *data; -1 with msg_error. */
static int
render(struct job_ctx *ctx, const struct token_key *k, const PGresult *r, int i, const struct mailtmpl *t,
       struct msg *m, const char *message, char **data, size_t *len)
{
	const char *email = PQgetvalue(r, i, L_EMAIL), *pub = ctx->cfg->campaigns.public_url;
	long long mid = atoll(message);

	/* The variables of common/campvars, as the preview shows them; the HTML part escapes them by
	 * Mustache's rules. */
	json_t *context = load_vars(r, i);
	char *subject, *text, *html;
	mailtmpl_render(t, context, &subject, &text, &html);
	const char *name = json_string_value(json_object_get(json_object_get(context, "source"), "name"));

	char *utok = token_make(k, TOKEN_UNSUBSCRIBE, mid, NULL), *otok = token_make(k, TOKEN_OPEN, mid, NULL);
	char *unsub = xasprintf("%s/u/%s", pub, utok), *pixel = xasprintf("%s/o/%s", pub, otok);
	const char *mailto = ctx->cfg->campaigns.unsubscribe_mailto && ctx->cfg->campaigns.unsubscribe_mailto[0]
	                         ? ctx->cfg->campaigns.unsubscribe_mailto
	                         : ctx->cfg->smtp.from;
	char *list_unsub = xasprintf("<%s>, <mailto:%s?subject=unsubscribe-%s>", unsub, mailto, utok);
	char *ttext = campaign_track_text(k, pub, mid, text), *thtml = campaign_track_html(k, pub, mid, html);

	/* The footer (CAN-SPAM): the sender's postal address and the unsubscribe link, in both parts. */
	json_t *fctx = json_pack("{s:s, s:s, s:s}", "postal", PQgetvalue(r, i, L_POSTAL), "unsub", unsub, "pixel", pixel);
	char *footer_html = tmpl_render(footer, fctx, TMPL_HTML);
	json_decref(fctx);
	char *full_text = xasprintf("%s\n\n--\n%s\nTo stop receiving these emails: %s\n", ttext,
	                            PQgetvalue(r, i, L_POSTAL), unsub);
	const char *body = NULL;
	for (const char *b = thtml; (b = strcasestr(b, "</body")) != NULL; b++)
		body = b;
	char *full_html = body ? xasprintf("%.*s%s%s", (int)(body - thtml), thtml, footer_html, body)
	                       : xasprintf("%s%s", thtml, footer_html);

	const char *reply = PQgetvalue(r, i, L_REPLY);
	int rc = msg_set_from(m, PQgetvalue(r, i, L_SNAME), PQgetvalue(r, i, L_SEMAIL)) == -1 ||
	                 msg_add_to(m, name, email) == -1 || (reply[0] && msg_set_reply_to(m, NULL, reply) == -1) ||
	                 msg_set_subject(m, subject) == -1 || msg_add_header(m, "List-Unsubscribe", list_unsub) == -1 ||
	                 msg_add_header(m, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click") == -1 ||
	                 msg_add_header(m, "X-Outreach-Jid", ctx->job->jid) == -1 || msg_set_text(m, full_text) == -1 ||
	                 msg_set_html(m, full_html) == -1 || msg_render(m, data, len) == -1
	             ? -1
	             : 0;
	free(subject);
	free(text);
	free(html);
	free(utok);
	free(otok);
	free(unsub);
	free(pixel);
	free(list_unsub);
	free(ttext);
	free(thtml);
	free(footer_html);
	free(full_text);
	free(full_html);
	json_decref(context);
	return rc;
}

/* The message step of enrollment id (row i of r, campaign_take's, which claimed the message when it
 * may go now): renders it and hands it over for sending. *handed says whether the claimed message
 * was handed over (or recorded as failed): a claim not handed over is given back. */
static enum job_result
send_step_with(struct job_ctx *ctx, const struct token_key *k, const PGresult *r, int i, const char *id,
               bool *handed)
{
	const char *email = PQgetvalue(r, i, L_EMAIL), *variant = PQgetvalue(r, i, L_VARIANT);
	const struct variant *v = NULL;
	char step[16], why[600];
	double delay;

	*handed = false;
	if (!PQgetisnull(r, i, L_SUPPRESSED)) {
		snprintf(why, sizeof(why), "suppressed address (%s)", PQgetvalue(r, i, L_SUPPRESSED));
		return stop_enrollment(ctx, id, why);
	}
	if (!msg_addr_valid(email)) {
		snprintf(why, sizeof(why), "no usable email address (\"%.200s\")", email);
		return stop_enrollment(ctx, id, why);
	}
	if (PQgetisnull(r, i, L_MROW))
		snprintf(why, sizeof(why), "campaign %s has no variant \"%s\" for segment %s", PQgetvalue(r, i, L_CID),
		         variant, PQgetvalue(r, i, L_SEGMENT));
	else if ((v = variant_get(r, i))->err[0])
		snprintf(why, sizeof(why), "campaign %s variant \"%s\" (campaign_messages %s): %s",
		         PQgetvalue(r, i, L_CID), variant, PQgetvalue(r, i, L_MROW), v->err);
	if (PQgetisnull(r, i, L_MROW) || v->err[0]) {
		enum job_result rc = stop_enrollment(ctx, id, why);
		return rc == JOB_DONE ? job_fail(ctx, JOB_DEAD, "CampaignError", "%s", why) : rc;
	}
	snprintf(step, sizeof(step), "%d", atoi(PQgetvalue(r, i, L_STEP)) + 1);
	if (PQgetisnull(r, i, L_MESSAGE)) {
		log_info("enrollment %s step %s: its message is sent or being sent, or the enrollment moved on: nothing to do",
		         id, step);
		return JOB_DONE;
	}
	switch (rate_check(ctx, strchr(email, '@') + 1, &delay)) {
	case -1:
		return job_fail(ctx, JOB_RETRY, "RedisError", "checking the campaign rate limits: %s",
		                ctx->redis->errstr[0] ? ctx->redis->errstr : "unexpected reply");
	case 1:
		return reschedule(ctx, id, delay);
	}

	/* The row that makes the message happen once, claimed by campaign_take for this attempt. */
	const char *message = PQgetvalue(r, i, L_MESSAGE);
	struct msg *m = msg_new();
	if (msg_set_id(m, PQgetvalue(r, i, L_HEADER)) == -1)
		log_warnx("Message-ID: %s", msg_error(m));

	char *data = NULL;
	size_t len = 0;
	enum job_result rc;
	*handed = true;
	if (render(ctx, k, r, i, &v->t, m, message, &data, &len) == -1) {
		snprintf(why, sizeof(why), "cannot build campaign message %s to %s: %s", message, email, msg_error(m));
		if (db_exec(ctx->db,
		            "WITH m AS (UPDATE email_messages SET status = 'failed', error = $2, attempt_at = NULL "
		            "           WHERE id = $1 RETURNING enrollment_id) "
		            "UPDATE campaign_enrollments e SET state = 'stopped', stop_reason = $2, next_action_at = NULL, "
		            "       next_step_id = NULL, enqueued_at = NULL FROM m WHERE e.id = m.enrollment_id",
		            DB_ARGS(message, why)) == -1)
			log_warnx("recording the failure of campaign message %s: %s", message, db_error(ctx->db));
		free(data);
		rc = job_fail(ctx, JOB_DEAD, "InvalidEmail", "%s", why);
	} else {
		struct sent *s = xcalloc(1, sizeof(*s));
		util_strlcpy(s->message, message, sizeof(s->message));
		util_strlcpy(s->recipient, email, sizeof(s->recipient));
		struct job_mail mail = {.data = data, .len = len, .rcpt = xstrdup(email), .finish = sent_finish, .priv = s,
		                        .free_priv = free};
		rc = job_send_mail(ctx, &mail);
	}
	msg_free(m);
	return rc;
}

/* send_step_with on a copy of the running keys, which a reload cannot change under it. */
static enum job_result
send_step(struct job_ctx *ctx, const PGresult *r, int i, const char *id, bool *handed)
{
	struct token_keys tk;

	*handed = false;
	if (!campaign_keys_copy(&tk))
		return job_fail(ctx, JOB_RETRY, "ConfigurationError",
		                "campaigns.token_key_file is not set: campaign messages cannot be tracked, none is sent");
	enum job_result rc = send_step_with(ctx, &tk.key, r, i, id, handed);
	token_keys_clear(&tk);
	return rc;
}

/* A call for the source's coordinator, or the end of the sequence: the enrollment locked, checked
 * still at step cur, and moved on. */
static enum job_result
other_step(struct job_ctx *ctx, const PGresult *r, int i, const char *id, int cur)
{
	const char *action = PQgetvalue(r, i, L_ACTION);
	char step[16], was[16], now[32];

	snprintf(step, sizeof(step), "%d", cur + 1);
	snprintf(was, sizeof(was), "%d", cur);
	campaign_now(now, sizeof(now));
	if (db_begin(ctx->db) == -1)
		return campaign_db_retry(ctx, "starting a transaction");
	PGresult *l = db_query(ctx->db,
	                       "SELECT 1 FROM campaign_enrollments WHERE id = $1 AND state = 'active' AND step = $2 FOR UPDATE",
	                       DB_ARGS(id, was));
	if (l == NULL)
		return campaign_db_retry(ctx, "locking the enrollment");
	bool still = PQntuples(l) == 1;
	PQclear(l);
	if (!still) {
		db_rollback(ctx->db);
		log_info("enrollment %s moved on meanwhile: nothing to do", id);
		return JOB_DONE;
	}
	if (strcmp(action, "stop") == 0) {
		if (db_exec(ctx->db,
		            "UPDATE campaign_enrollments SET step = $2, step_at = to_timestamp($3::float8), state = 'finished', "
		            "stop_reason = 'stop rule', next_action_at = NULL, next_step_id = NULL, enqueued_at = NULL "
		            "WHERE id = $1",
		            DB_ARGS(id, step, now)) == -1 ||
		    db_commit(ctx->db) == -1)
			return campaign_db_retry(ctx, "finishing the enrollment");
		log_info("enrollment %s finished by its rules at step %s", id, step);
		return JOB_DONE;
	}
	if (db_exec(ctx->db,
	            "INSERT INTO activities (source_id, coordinator_id, kind, subject, scheduled_at) "
	            "VALUES ($1, $2, 'call', 'Campaign \"' || $3 || '\": call ' || $4, to_timestamp($5::float8))",
	            DB_ARGS(PQgetvalue(r, i, L_SOURCE), PQgetisnull(r, i, L_COID) ? NULL : PQgetvalue(r, i, L_COID),
	                    PQgetvalue(r, i, L_CNAME),
	                    PQgetvalue(r, i, L_LAST)[0] ? PQgetvalue(r, i, L_LAST) : PQgetvalue(r, i, L_ORG), now)) == -1 ||
	    db_exec(ctx->db, "SELECT campaign_step_done($1, $2, to_timestamp($3::float8))", DB_ARGS(id, step, now)) == -1 ||
	    db_commit(ctx->db) == -1)
		return campaign_db_retry(ctx, "creating the call");
	log_info("enrollment %s step %s: a call for the source's coordinator", id, step);
	return JOB_DONE;
}

enum job_result
campaign_send_run(struct job_ctx *ctx)
{
	struct thread_state *st = state_get();
	char id[24], now[32];
	long long eid = (long long)json_integer_value(json_array_get(ctx->job->args, 0));
	PGresult *own = NULL, *r = NULL;
	int i = 0;

	snprintf(id, sizeof(id), "%lld", eid);
	/* The row campaign_send_batch_start took for this job, else one taken for it alone. */
	for (size_t k = 0; k < st->ntaken && r == NULL; k++) {
		struct taken *t = &st->taken[k];
		if (!t->used && t->enrollment == eid && strcmp(t->jid, ctx->job->jid) == 0) {
			t->used = true;
			r = st->batch;
			i = (int)k;
		}
	}
	if (r == NULL) {
		const struct job *one[] = {ctx->job};
		if ((r = own = take(ctx, one, 1)) == NULL)
			return campaign_db_retry(ctx, "loading the enrollment");
	}
	enum job_result rc = JOB_DONE;
	bool handed = true;
	if (PQgetisnull(r, i, L_STATE)) {
		log_info("enrollment %s is gone (its campaign was deleted?): nothing to do", id);
		PQclear(own);
		return JOB_DONE;
	}
	const char *state = PQgetvalue(r, i, L_STATE), *cstatus = PQgetvalue(r, i, L_CSTATUS);
	int cur = atoi(PQgetvalue(r, i, L_STEP));
	campaign_now(now, sizeof(now));
	if (strcmp(state, "active") != 0 || strcmp(cstatus, "active") != 0 || PQgetvalue(r, i, L_DUE)[0] != 't') {
		/* Not ours to act on now; a paused campaign's enrollments are picked up again once it is active. */
		log_info("enrollment %s: %s, campaign %s%s: nothing to do", id, state, cstatus,
		         PQgetvalue(r, i, L_DUE)[0] == 't' ? "" : ", nothing due");
		if (db_exec(ctx->db, "UPDATE campaign_enrollments SET enqueued_at = NULL WHERE id = $1", DB_ARGS(id)) == -1)
			rc = campaign_db_retry(ctx, "releasing the enrollment");
	} else if (PQgetisnull(r, i, L_RULE)) {
		/* A timeout check where no rule holds yet: the next check, or the end. */
		if (db_exec(ctx->db, "SELECT campaign_schedule($1, to_timestamp($2::float8), to_timestamp($2::float8))",
		            DB_ARGS(id, now)) == -1)
			rc = campaign_db_retry(ctx, "scheduling the next check");
		else
			log_info("enrollment %s step %d: no timeout rule holds", id, cur);
	} else if (strcmp(PQgetvalue(r, i, L_ACTION), "send") == 0) {
		rc = send_step(ctx, r, i, id, &handed);
	} else {
		rc = other_step(ctx, r, i, id, cur);
	}
	if (!handed && !PQgetisnull(r, i, L_MESSAGE)) {
		/* Claimed, but not sent now (rate limit, unusable address, broken variant, no key): the
		 * claim goes back, so that the next attempt takes the message at once. */
		const char *msg = PQgetvalue(r, i, L_MESSAGE), *jid = ctx->job->jid;
		bool fresh = PQgetvalue(r, i, L_FRESH)[0] == 't';
		unclaim(ctx, &msg, &jid, &fresh, 1);
	}
	PQclear(own);
	return rc;
}
