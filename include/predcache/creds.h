/*
 * creds: which request headers are credentials, and the credential scope of a request (a
 * digest that two requests share exactly when they carry the same credential values).
 * Credentials are Authorization, Proxy-Authorization, Cookie and the names of [cache]
 * credential_headers. Pure: borrows what it is given, keeps nothing, no I/O, no globals;
 * never logs or copies a credential value anywhere but into the digest.
 */
#ifndef PREDCACHE_CREDS_H
#define PREDCACHE_CREDS_H

#include <stddef.h>

struct pc_header;

/* Length of a scope in hex, without the NUL. */
#define PC_CREDS_SCOPE_LEN 64

/* 1 when header `name` (any case) is a credential: Authorization, Proxy-Authorization,
 * Cookie, or one of extra[0..n_extra). */
int pc_creds_is_credential(const char *name, const char (*extra)[64], size_t n_extra);

/* 1 when any of h[0..n) is a credential. */
int pc_creds_present(const struct pc_header *h, size_t n, const char (*extra)[64], size_t n_extra);

/*
 * The scope of a request's credentials: "" (out[0] = 0) when it carries none; else 64
 * lowercase hex of SHA-256 over, for each credential name in the order authorization,
 * proxy-authorization, cookie, then extra in list order (a name listed twice counts once),
 * each value the request has under that name in request order, as
 *     lowercase-name "\n" decimal-length ":" value "\n"
 * A header present with an empty value counts (its scope is not ""). 0 ok, -1 on failure
 * (out is then "").
 */
int pc_creds_scope(const struct pc_header *h, size_t n, const char (*extra)[64], size_t n_extra,
                   char out[PC_CREDS_SCOPE_LEN + 1]);

#endif
