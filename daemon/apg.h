/* apg: outreachd's non-blocking PostgreSQL connection: libpq's asynchronous API on libevent. */
#ifndef OUTREACH_APG_H
#define OUTREACH_APG_H

#include <event2/event.h>
#include <libpq-fe.h>
#include <stdbool.h>

#include "common/cfg.h"

struct apg;

/* Called once per query with its result (borrowed, freed after the call), or NULL with errmsg when
 * the query failed or the connection was lost. */
typedef void apg_cb(PGresult *res, const char *errmsg, void *priv);
/* Called each time a connection is established (after the schema check passes). */
typedef void apg_up_cb(void *priv);

/* Connects without blocking (PQconnectStartParams/PQconnectPoll) and reconnects with backoff
 * (0.5 s doubling to 30 s). cfg is borrowed and must outlive the connection. */
struct apg *apg_new(struct event_base *base, const struct cfg *cfg, apg_up_cb *up, void *up_priv);
void apg_free(struct apg *pg);
void apg_set_cfg(struct apg *pg, const struct cfg *cfg);

bool apg_ready(const struct apg *pg);
/* True when the last schema check found the database at this build's version. */
bool apg_schema_ok(const struct apg *pg);

/* Queues a parameterized query (text parameters, copied); queries run one at a time in order.
 * cb runs exactly once. Returns -1 (no callback) when not connected. */
int apg_query(struct apg *pg, const char *sql, int nparams, const char *const *params, apg_cb *cb, void *priv);

unsigned long apg_reconnects(const struct apg *pg);

#endif
