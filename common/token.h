/* token: the signed tokens in campaign tracking and unsubscribe links.
 *
 * A token names one campaign message and what the link does: 'o' (open pixel), 'c' (a click on a
 * link; the token carries the link's URL), 'u' (unsubscribe). It is
 *
 *     base64url(payload) "." base64url(HMAC-SHA256(key, payload))
 *
 * with payload = version byte 1, the kind byte, the message id as 8 bytes big-endian, and for 'c'
 * the URL's bytes. The listener needs no database to check a token or to redirect a click: the URL
 * comes from the signed payload, so a token cannot send anyone elsewhere (no open redirect). The
 * comparison of the MAC takes constant time; anything altered, truncated, re-encoded or signed with
 * another key is refused. */
#ifndef OUTREACH_TOKEN_H
#define OUTREACH_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/util.h"

#define TOKEN_KEY_MIN 32   /* bytes of key material, at least */
#define TOKEN_KEY_MAX 256
#define TOKEN_URL_MAX 2048 /* the longest link a token carries */

enum token_kind { TOKEN_OPEN = 'o', TOKEN_CLICK = 'c', TOKEN_UNSUBSCRIBE = 'u' };

struct token_key {
	unsigned char bytes[TOKEN_KEY_MAX];
	size_t len;
};

/* Reads the key from a file: its bytes, without a trailing newline, at least TOKEN_KEY_MIN of them
 * (`head -c 32 /dev/urandom | base64 > token.key` makes one). -1 with a message in err. */
int token_key_load(const char *path, struct token_key *key, char *err, size_t errlen) MUSTCHECK;

/* The keys of campaigns.token_key_file (path) and, when prev_path is not empty,
 * campaigns.previous_token_key_file (prev_path: the key before the last rotation, which checks but
 * never signs). keys->has_previous says whether it was read. -1 with "campaigns.KEY: the reason" in
 * err and *failed the KEY ("token_key_file" or "previous_token_key_file"); nothing is kept then. */
struct token_keys {
	struct token_key key, previous;
	bool has_previous;
};
int token_keys_load(const char *path, const char *prev_path, struct token_keys *keys, const char **failed, char *err,
                    size_t errlen) MUSTCHECK;
/* Wipes keys from memory. */
void token_keys_clear(struct token_keys *keys);

/* A new token (caller frees). url is required for TOKEN_CLICK (an http or https URL of at most
 * TOKEN_URL_MAX bytes without control characters) and must be NULL otherwise; NULL when it is
 * not acceptable. */
char *token_make(const struct token_key *key, enum token_kind kind, int64_t message_id,
                 const char *url);

/* Checks a token of len bytes (not necessarily NUL-terminated). On success returns 0 and sets
 * *kind, *message_id and, for a click, *url (caller frees; NULL for other kinds). -1 when the
 * token is malformed, forged or altered; nothing is set then. */
int token_check(const struct token_key *key, const char *tok, size_t len, enum token_kind *kind,
                int64_t *message_id, char **url) MUSTCHECK;

/* token_check with keys->key, then, if that refuses the token and keys->has_previous, with the key
 * before the last rotation: the links sent before a rotation, unsubscribe links in inboxes
 * included, keep working. */
int token_keys_check(const struct token_keys *keys, const char *tok, size_t len, enum token_kind *kind,
                     int64_t *message_id, char **url) MUSTCHECK;

/* Whether s (len bytes) is spelled as a token: base64url, one ".", base64url. Says nothing of its
 * signature: token_check does. */
bool token_spelled(const char *s, size_t len);

#endif
