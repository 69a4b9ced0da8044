/* public: outreachd's public HTTP listener: the tracking pixel, click and unsubscribe links of campaign emails. */
#ifndef OUTREACH_PUBLIC_H
#define OUTREACH_PUBLIC_H

#include <event2/event.h>
#include <stdio.h>

#include "common/token.h"
#include "common/util.h"
#include "daemon/aredis.h"

struct public;

/* Listens on "host:port" (http.public_listen) and serves only GET /o/<token> (a transparent GIF),
 * GET /c/<token> (a redirect to the URL signed into the token), GET /u/<token> (a confirmation page
 * that records nothing) and POST /u/<token> (the unsubscribe). Tokens are checked with keys (copied).
 * Each valid hit enqueues one CampaignEventJob on the campaigns queue through ar (borrowed): pushes
 * are gathered and sent as one pipelined LPUSH per turn of the loop, never waited for, except that
 * the unsubscribe page is answered once Redis has the event. An open, or a click of the same link,
 * of a message recorded less than repeat_window seconds ago is answered and not recorded again (0:
 * each is). ar must be freed before the listener (its last callbacks still count here). NULL with err
 * when the address cannot be bound. */
struct public *public_new(struct event_base *base, const char *listen, int repeat_window, struct ar *ar,
                          const struct token_keys *keys, char *err, size_t errlen) MUSTCHECK;
void public_free(struct public *p);

/* Replaces the keys that check tokens (copied: the current one and, if set, the one before the last
 * rotation), e.g. after a reload. */
void public_set_key(struct public *p, const struct token_keys *keys);

/* Writes the listener's counters in the Prometheus text format; nothing when p is NULL. */
void public_metrics(const struct public *p, FILE *out);

#endif
