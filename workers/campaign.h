/* campaign: what the campaign handlers share: the token key, the campaign clock and rendering. */
#ifndef OUTREACH_CAMPAIGN_H
#define OUTREACH_CAMPAIGN_H

#include <stddef.h>

#include "common/cfg.h"
#include "common/token.h"
#include "common/util.h"
#include "workers/handler.h"

/* Loads campaigns.token_key_file and previous_token_key_file (nothing when the first is empty); -1
 * with the reason in err. Called by handler_init, at start only: a reload does not read the keys
 * again (the workers are restarted after a rotation). */
int campaign_init(const struct cfg *c, char *err, size_t errlen) MUSTCHECK;
/* The loaded key, or NULL when campaigns.token_key_file is empty. */
const struct token_key *campaign_key(void);
/* The keys that check tokens: the loaded key and the one before the last rotation
 * (campaigns.previous_token_key_file), which checks but never signs; NULL as campaign_key. */
const struct token_keys *campaign_keys(void);

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
