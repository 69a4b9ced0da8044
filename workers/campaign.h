/* campaign: what the campaign handlers share: the token key, the campaign clock and rendering. */
#ifndef OUTREACH_CAMPAIGN_H
#define OUTREACH_CAMPAIGN_H

#include <stdbool.h>
#include <stddef.h>

#include "common/cfg.h"
#include "common/token.h"
#include "common/util.h"
#include "workers/handler.h"

/* Prepares the campaign footer and loads the keys (campaign_reload_keys); -1 with the reason in
 * err. Called by handler_init, at start. */
int campaign_init(const struct cfg *c, char *err, size_t errlen) MUSTCHECK;
/* Reads c's campaigns.token_key_file and campaigns.previous_token_key_file and makes them the running
 * keys, or none when c names no key file; -1 with err and the running keys kept when a file cannot be
 * read. Safe while jobs run (on SIGHUP, with a configuration that kept the running key path: a new
 * path takes a restart, see cfg_keep_restart_keys). */
int campaign_reload_keys(const struct cfg *c, char *err, size_t errlen) MUSTCHECK;
/* A copy of the running keys into *out (the key that signs, and the previous one, which only checks):
 * false, *out untouched, when there are none. The caller wipes it (token_keys_clear). */
bool campaign_keys_copy(struct token_keys *out);

/* The campaign clock (util_clock) as SQL's to_timestamp($n::float8) argument, into buf. */
void campaign_now(char *buf, size_t len);

/* Rolls back the open transaction and returns JOB_RETRY with "DatabaseError": "what: the error". */
enum job_result campaign_db_retry(struct job_ctx *ctx, const char *what);

/* The batch hooks of CampaignSendJob (see handler_batch_start): batch_start loads the enrollments of
 * the batch's jobs and claims their messages in one call, for campaign_send_run to find;
 * batch_done records the messages the relay took in one call and gives back the claims of jobs
 * that did not run. Per worker thread. */
void campaign_send_batch_start(struct job_ctx *ctx, const struct job *const *jobs, size_t n);
void campaign_send_batch_done(struct job_ctx *ctx);

/* Replaces every http(s) link target of html (href="..." or href='...', entities decoded) with
 * PUBLIC_URL/c/TOKEN, a click token carrying the original URL; links a token cannot carry stay as
 * they are. Returns a new string (caller frees). */
char *campaign_track_html(const struct token_key *key, const char *public_url, long long message_id,
                          const char *html);
/* The same for the bare http(s) URLs of a text part. */
char *campaign_track_text(const struct token_key *key, const char *public_url, long long message_id,
                          const char *text);

#endif
