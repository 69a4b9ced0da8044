/* rds: Redis addresses (redis:// and unix:// URLs) and blocking connections with timeouts. */
#include "common/rds.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -1)

/* Percent-decodes src[0..n) into dst (size cap); -1 when malformed or too long. */
static int
pct_decode(const char *src, size_t n, char *dst, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)src[i];
		if (c == '%') {
			if (i + 2 >= n || !isxdigit((unsigned char)src[i + 1]) ||
			    !isxdigit((unsigned char)src[i + 2]))
				return -1;
			char hex[3] = {src[i + 1], src[i + 2], 0};
			c = (int)strtol(hex, NULL, 16);
			i += 2;
		}
		if (o + 1 >= cap)
			return -1;
		dst[o++] = (char)c;
	}
	dst[o] = '\0';
	return 0;
}

static int
parse_db(const char *s, int *db)
{
	long v;

	if (*s == '\0') {
		*db = 0;
		return 0;
	}
	if (!util_parse_long(s, 0, 100000, &v))
		return -1;
	*db = (int)v;
	return 0;
}

int
rds_parse_url(const char *url, struct rds_addr *a, char *err, size_t errlen)
{
	memset(a, 0, sizeof(*a));
	a->port = 6379;

	if (strncmp(url, "unix://", 7) == 0) {
		const char *p = url + 7;
		const char *q = strchr(p, '?');
		size_t plen = q ? (size_t)(q - p) : strlen(p);

		a->is_unix = true;
		if (plen == 0 || p[0] != '/')
			return ERR("%s: a unix socket URL needs an absolute path, e.g. unix:///run/redis/redis.sock",
			           url);
		if (plen >= sizeof(a->path))
			return ERR("%s: socket path is longer than %zu bytes", url, sizeof(a->path) - 1);
		memcpy(a->path, p, plen);
		a->path[plen] = '\0';
		if (q) {
			if (strncmp(q, "?db=", 4) != 0 || parse_db(q + 4, &a->db) == -1)
				return ERR("%s: the only query parameter is db=N (a number)", url);
		}
		return 0;
	}
	if (strncmp(url, "rediss://", 9) == 0)
		return ERR("%s: TLS (rediss://) is not supported by this hiredis; use a local TLS tunnel", url);
	if (strncmp(url, "redis://", 8) != 0)
		return ERR("%s: expected redis://[user:password@]host[:port][/db] or unix:///path", url);

	const char *p = url + 8;
	const char *slash = strchr(p, '/');
	const char *end = slash ? slash : p + strlen(p);
	const char *at = NULL;

	for (const char *s = p; s < end; s++)
		if (*s == '@')
			at = s;
	if (at) {
		const char *colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			if (pct_decode(p, (size_t)(colon - p), a->user, sizeof(a->user)) == -1 ||
			    pct_decode(colon + 1, (size_t)(at - colon - 1), a->password, sizeof(a->password)) == -1)
				return ERR("redis URL: malformed or too long user or password");
		} else if (pct_decode(p, (size_t)(at - p), a->password, sizeof(a->password)) == -1) {
			return ERR("redis URL: malformed or too long password");
		}
		p = at + 1;
	}

	const char *host = p, *hend, *portp = NULL;
	if (*p == '[') {
		const char *rb = memchr(p, ']', (size_t)(end - p));
		if (rb == NULL)
			return ERR("redis URL: unterminated [ in IPv6 host");
		host = p + 1;
		hend = rb;
		if (rb + 1 < end) {
			if (rb[1] != ':')
				return ERR("redis URL: junk after IPv6 host");
			portp = rb + 2;
		}
	} else {
		const char *colon = memchr(p, ':', (size_t)(end - p));
		hend = colon ? colon : end;
		if (colon)
			portp = colon + 1;
	}
	if (hend == host)
		return ERR("redis URL: no host (expected redis://host:port/db)");
	if ((size_t)(hend - host) >= sizeof(a->host))
		return ERR("redis URL: host name too long");
	memcpy(a->host, host, (size_t)(hend - host));
	a->host[hend - host] = '\0';
	if (portp) {
		char buf[16];
		long v;
		size_t n = (size_t)(end - portp);
		if (n == 0 || n >= sizeof(buf))
			return ERR("redis URL: bad port");
		memcpy(buf, portp, n);
		buf[n] = '\0';
		if (!util_parse_long(buf, 1, 65535, &v))
			return ERR("redis URL: port %s is not a number in 1..65535", buf);
		a->port = (int)v;
	}
	if (slash && parse_db(slash + 1, &a->db) == -1)
		return ERR("redis URL: database %s is not a number", slash + 1);
	return 0;
}

int
rds_handshake(redisContext *c, const struct rds_addr *a, const char *password, char *err, size_t errlen)
{
	const char *pw = (password && *password) ? password : a->password;
	redisReply *r;

	if (*pw) {
		if (*a->user)
			r = redisCommand(c, "AUTH %s %s", a->user, pw);
		else
			r = redisCommand(c, "AUTH %s", pw);
		if (r == NULL)
			return ERR("AUTH: %s", c->errstr);
		if (r->type == REDIS_REPLY_ERROR) {
			int rc = ERR("AUTH refused: %s", r->str);
			freeReplyObject(r);
			return rc;
		}
		freeReplyObject(r);
	}
	if (a->db != 0) {
		r = redisCommand(c, "SELECT %d", a->db);
		if (r == NULL)
			return ERR("SELECT %d: %s", a->db, c->errstr);
		if (r->type == REDIS_REPLY_ERROR) {
			int rc = ERR("SELECT %d: %s", a->db, r->str);
			freeReplyObject(r);
			return rc;
		}
		freeReplyObject(r);
	}
	return 0;
}

redisContext *
rds_connect(const struct rds_addr *a, const char *password, int timeout_ms, char *err, size_t errlen)
{
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	char where[300];
	redisContext *c;

	rds_describe(a, where, sizeof(where));
	c = a->is_unix ? redisConnectUnixWithTimeout(a->path, tv) : redisConnectWithTimeout(a->host, a->port, tv);
	if (c == NULL) {
		snprintf(err, errlen, "%s: cannot allocate a connection", where);
		return NULL;
	}
	if (c->err) {
		snprintf(err, errlen, "%s: %s", where, c->errstr);
		redisFree(c);
		return NULL;
	}
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(err, errlen, "%s: cannot set timeout: %s", where, c->errstr);
		redisFree(c);
		return NULL;
	}
	char herr[200];
	if (rds_handshake(c, a, password, herr, sizeof(herr)) == -1) {
		snprintf(err, errlen, "%s: %s", where, herr);
		redisFree(c);
		return NULL;
	}
	return c;
}

void
rds_describe(const struct rds_addr *a, char *buf, size_t len)
{
	if (a->is_unix)
		snprintf(buf, len, "redis unix:%s/%d", a->path, a->db);
	else if (strchr(a->host, ':'))
		snprintf(buf, len, "redis [%s]:%d/%d", a->host, a->port, a->db);
	else
		snprintf(buf, len, "redis %s:%d/%d", a->host, a->port, a->db);
}
