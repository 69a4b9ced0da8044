/* token: signed campaign tracking tokens (see token.h for the format). */
#include "common/token.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TOKEN_VERSION 1
#define MAC_LEN 32
#define HEAD_LEN 10 /* version, kind, 8 bytes of message id */

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Unpadded base64url of n bytes into out (room for 4*ceil(n/3)+1); returns the length written. */
static size_t
b64url_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
		out[o++] = b64url[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64url[v >> 18 & 63];
		out[o++] = b64url[v >> 12 & 63];
		out[o++] = b64url[v >> 6 & 63];
	}
	out[o] = '\0';
	return o;
}

static int
b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Decodes unpadded base64url strictly: only the canonical encoding of some bytes is accepted (the
 * unused low bits of the last character must be zero), so one token has exactly one spelling.
 * Returns the number of bytes, or -1. out needs room for 3*n/4 bytes. */
static long
b64url_decode(const char *in, size_t n, unsigned char *out)
{
	size_t o = 0, i = 0;
	uint32_t v = 0;
	int bits = 0;

	if (n % 4 == 1)
		return -1;
	for (; i < n; i++) {
		int d = b64url_value((unsigned char)in[i]);
		if (d < 0)
			return -1;
		v = v << 6 | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(v >> bits & 0xff);
		}
	}
	if (bits > 0 && (v & ((1u << bits) - 1)) != 0)
		return -1;
	return (long)o;
}

int
token_key_load(const char *path, struct token_key *key, char *err, size_t errlen)
{
	size_t len;
	char *s = util_read_file(path, &len);

	if (s == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	if (len < TOKEN_KEY_MIN || len > TOKEN_KEY_MAX) {
		snprintf(err, errlen, "%s: a token key needs %d to %d bytes, the file has %zu", path,
		         TOKEN_KEY_MIN, TOKEN_KEY_MAX, len);
		OPENSSL_cleanse(s, len);
		free(s);
		return -1;
	}
	memcpy(key->bytes, s, len);
	key->len = len;
	OPENSSL_cleanse(s, len);
	free(s);
	return 0;
}

int
token_keys_load(const char *path, const char *prev_path, struct token_keys *keys, const char **failed, char *err,
                size_t errlen)
{
	char why[512];

	memset(keys, 0, sizeof(*keys));
	*failed = token_key_load(path, &keys->key, why, sizeof(why)) == -1 ? "token_key_file"
	          : prev_path && *prev_path && token_key_load(prev_path, &keys->previous, why, sizeof(why)) == -1
	              ? "previous_token_key_file"
	              : NULL;
	if (*failed != NULL) {
		token_keys_clear(keys);
		snprintf(err, errlen, "campaigns.%s: %s", *failed, why);
		return -1;
	}
	keys->has_previous = prev_path && *prev_path;
	return 0;
}

void
token_keys_clear(struct token_keys *keys)
{
	OPENSSL_cleanse(keys, sizeof(*keys));
}

/* An http or https URL; the scheme in any case (RFC 3986 3.1), as campaigns.public_url's. url[0..n)
 * need not end in a NUL, so its length is checked before the comparison reads it. */
static bool
url_acceptable(const char *url, size_t n)
{
	if (n == 0 || n > TOKEN_URL_MAX)
		return false;
	if (!(n >= 8 && strncasecmp(url, "https://", 8) == 0) && !(n >= 7 && strncasecmp(url, "http://", 7) == 0))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)url[i] < 0x20 || url[i] == 0x7f)
			return false;
	return true;
}

static void
mac(const struct token_key *key, const unsigned char *payload, size_t n, unsigned char out[MAC_LEN])
{
	unsigned int outlen = MAC_LEN;

	if (HMAC(EVP_sha256(), key->bytes, (int)key->len, payload, n, out, &outlen) == NULL ||
	    outlen != MAC_LEN)
		abort(); /* only on a broken libcrypto */
}

char *
token_make(const struct token_key *key, enum token_kind kind, int64_t message_id, const char *url)
{
	size_t ulen = url != NULL ? strlen(url) : 0;

	if ((kind == TOKEN_CLICK) != (url != NULL))
		return NULL;
	if (kind != TOKEN_OPEN && kind != TOKEN_CLICK && kind != TOKEN_UNSUBSCRIBE)
		return NULL;
	if (url != NULL && !url_acceptable(url, ulen))
		return NULL;

	size_t n = HEAD_LEN + ulen;
	unsigned char *payload = xmalloc(n);
	unsigned char m[MAC_LEN];
	uint64_t id = (uint64_t)message_id;

	payload[0] = TOKEN_VERSION;
	payload[1] = (unsigned char)kind;
	for (int i = 0; i < 8; i++)
		payload[2 + i] = (unsigned char)(id >> (56 - 8 * i));
	if (ulen > 0)
		memcpy(payload + HEAD_LEN, url, ulen);
	mac(key, payload, n, m);

	char *tok = xmalloc((n + 2) / 3 * 4 + 1 + (MAC_LEN + 2) / 3 * 4 + 1);
	size_t o = b64url_encode(payload, n, tok);
	tok[o++] = '.';
	b64url_encode(m, MAC_LEN, tok + o);
	free(payload);
	return tok;
}

int
token_check(const struct token_key *key, const char *tok, size_t len, enum token_kind *kind,
            int64_t *message_id, char **url)
{
	const char *dot = memchr(tok, '.', len);

	if (dot == NULL)
		return -1;
	size_t plen = (size_t)(dot - tok), mlen = len - plen - 1;
	/* The MAC is always 43 characters; the payload is bounded by the longest URL. */
	if (mlen != (MAC_LEN * 4 + 2) / 3 || plen > (HEAD_LEN + TOKEN_URL_MAX) * 4 / 3 + 4)
		return -1;

	unsigned char *payload = xmalloc(plen * 3 / 4 + 3);
	unsigned char given[MAC_LEN + 3], want[MAC_LEN];
	long n = b64url_decode(tok, plen, payload);
	int rc = -1;

	if (n < HEAD_LEN || b64url_decode(dot + 1, mlen, given) != MAC_LEN)
		goto out;
	mac(key, payload, (size_t)n, want);
	if (CRYPTO_memcmp(given, want, MAC_LEN) != 0)
		goto out;
	if (payload[0] != TOKEN_VERSION)
		goto out;
	enum token_kind k = (enum token_kind)payload[1];
	size_t ulen = (size_t)n - HEAD_LEN;
	if (k == TOKEN_CLICK) {
		if (!url_acceptable((const char *)payload + HEAD_LEN, ulen) ||
		    memchr(payload + HEAD_LEN, '\0', ulen) != NULL)
			goto out;
	} else if ((k != TOKEN_OPEN && k != TOKEN_UNSUBSCRIBE) || ulen != 0) {
		goto out;
	}
	uint64_t id = 0;
	for (int i = 0; i < 8; i++)
		id = id << 8 | payload[2 + i];
	*kind = k;
	*message_id = (int64_t)id;
	if (url != NULL)
		*url = k == TOKEN_CLICK ? xstrndup((const char *)payload + HEAD_LEN, ulen) : NULL;
	rc = 0;
out:
	free(payload);
	return rc;
}

int
token_keys_check(const struct token_keys *keys, const char *tok, size_t len, enum token_kind *kind,
                 int64_t *message_id, char **url)
{
	if (token_check(&keys->key, tok, len, kind, message_id, url) == 0)
		return 0;
	return keys->has_previous ? token_check(&keys->previous, tok, len, kind, message_id, url) : -1;
}

bool
token_spelled(const char *s, size_t len)
{
	size_t dots = 0;

	for (size_t i = 0; i < len; i++)
		if (s[i] == '.')
			dots++;
		else if (b64url_value((unsigned char)s[i]) < 0)
			return false;
	return dots == 1 && len > 1 && s[0] != '.' && s[len - 1] != '.';
}
