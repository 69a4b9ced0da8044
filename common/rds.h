/* rds: Redis addresses (redis:// and unix:// URLs) and blocking connections with timeouts. */
#ifndef OUTREACH_RDS_H
#define OUTREACH_RDS_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/util.h"

struct rds_addr {
	bool is_unix;
	char host[256]; /* TCP host, without IPv6 brackets */
	int port;
	char path[256]; /* unix socket path */
	int db;
	char user[128];     /* ACL user, empty for the default user */
	char password[256]; /* empty for none */
};

/* Parses redis://[user:password@]host[:port][/db] or unix:///path/to/socket[?db=N]. On error
 * returns -1 and writes a message that says what is wrong into err. */
int rds_parse_url(const char *url, struct rds_addr *addr, char *err, size_t errlen) MUSTCHECK;

/* Connects (with timeout_ms for connect and for each command), authenticates and selects the db.
 * password, when not NULL/empty, overrides the URL's. Returns a context (caller frees with
 * redisFree) or NULL with a message in err. */
redisContext *rds_connect(const struct rds_addr *addr, const char *password, int timeout_ms, char *err,
                          size_t errlen) MUSTCHECK;

/* Runs AUTH and SELECT as the URL says on a fresh context; -1 with err on failure. */
int rds_handshake(redisContext *c, const struct rds_addr *addr, const char *password, char *err,
                  size_t errlen) MUSTCHECK;

/* Describes the address for logs, without the password: "redis 127.0.0.1:6379/0". */
void rds_describe(const struct rds_addr *addr, char *buf, size_t len);

#endif
