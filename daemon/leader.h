/* leader: one outreachd leads at a time, through a Redis lock with expiry that the leader renews. */
#ifndef OUTREACH_LEADER_H
#define OUTREACH_LEADER_H

#include <stdbool.h>

#include "daemon/aredis.h"

#define LEADER_KEY "outreach:leader"
#define LEADER_TTL_MS 10000
#define LEADER_RENEW_MS 3000
#define LEADER_TRY_MS 1000

struct leader;

/* Called when this daemon becomes leader (true) or stops being leader (false). */
typedef void leader_cb(bool leading, void *priv);

/* Starts campaigning at once under the name identity (copied). */
struct leader *leader_new(struct event_base *base, struct ar *ar, const char *identity, leader_cb *cb, void *priv);
/* Stops campaigning and gives the lock up (if held) so that another daemon takes over at once. */
void leader_resign(struct leader *l);
/* Frees; call after the Redis connection is gone, so no reply can arrive for it. */
void leader_free(struct leader *l);
bool leader_is(const struct leader *l);
unsigned long leader_changes(const struct leader *l);

#endif
