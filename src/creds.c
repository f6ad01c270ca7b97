/* creds: credential headers and credential scopes (see the header). */
#include "predcache/creds.h"

#include <string.h>

#include <openssl/evp.h>

#include "predcache/buf.h"
#include "predcache/http.h"

/* The names every configuration treats as credentials, lowercase, in scope order. */
static const char *const builtin[] = {"authorization", "proxy-authorization", "cookie"};
#define N_BUILTIN (sizeof builtin / sizeof builtin[0])

int pc_creds_is_credential(const char *name, const char (*extra)[64], size_t n_extra)
{
    if (name == NULL)
        return 0;
    for (size_t i = 0; i < N_BUILTIN; i++) {
        if (pc_strcaseeq(name, builtin[i]))
            return 1;
    }
    for (size_t i = 0; i < n_extra; i++) {
        if (extra[i][0] != '\0' && pc_strcaseeq(name, extra[i]))
            return 1;
    }
    return 0;
}

int pc_creds_present(const struct pc_header *h, size_t n, const char (*extra)[64], size_t n_extra)
{
    for (size_t i = 0; i < n; i++) {
        if (pc_creds_is_credential(h[i].name, extra, n_extra))
            return 1;
    }
    return 0;
}

/* The i-th name of the scope order (builtin, then extra), NULL past the end. */
static const char *name_at(size_t i, const char (*extra)[64], size_t n_extra)
{
    if (i < N_BUILTIN)
        return builtin[i];
    return i - N_BUILTIN < n_extra ? extra[i - N_BUILTIN] : NULL;
}

/* 1 when the i-th name of the scope order came before (any case): it counts once. */
static int seen_before(size_t i, const char (*extra)[64], size_t n_extra)
{
    const char *name = name_at(i, extra, n_extra);
    for (size_t k = 0; k < i; k++) {
        if (pc_strcaseeq(name, name_at(k, extra, n_extra)))
            return 1;
    }
    return 0;
}

/* Feeds one value: lowercase-name "\n" decimal-length ":" value "\n". 0 ok, -1 failure. */
static int feed(EVP_MD_CTX *ctx, const char *name, const char *value)
{
    char lname[64], len[PC_U64_TEXT + 1];
    size_t nl = strlen(name), vl = strlen(value);
    if (nl >= sizeof lname)
        return -1;
    for (size_t i = 0; i < nl; i++)
        lname[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] - 'A' + 'a' : name[i]);
    lname[nl] = '\n';
    size_t ll = pc_u64_text(vl, len);
    len[ll++] = ':';
    return EVP_DigestUpdate(ctx, lname, nl + 1) == 1 && EVP_DigestUpdate(ctx, len, ll) == 1 &&
                   EVP_DigestUpdate(ctx, value, vl) == 1 && EVP_DigestUpdate(ctx, "\n", 1) == 1
               ? 0
               : -1;
}

int pc_creds_scope(const struct pc_header *h, size_t n, const char (*extra)[64], size_t n_extra,
                   char out[PC_CREDS_SCOPE_LEN + 1])
{
    out[0] = '\0';
    if (!pc_creds_present(h, n, extra, n_extra))
        return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    const char *name;
    int rc = -1;
    if (ctx == NULL || EVP_DigestInit_ex(ctx, pc_sha256_md(), NULL) != 1)
        goto out;
    for (size_t i = 0; (name = name_at(i, extra, n_extra)) != NULL; i++) {
        if (name[0] == '\0' || seen_before(i, extra, n_extra))
            continue;
        for (size_t k = 0; k < n; k++) {
            if (pc_strcaseeq(h[k].name, name) &&
                feed(ctx, name, h[k].value != NULL ? h[k].value : "") != 0)
                goto out;
        }
    }
    if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen * 2 != PC_CREDS_SCOPE_LEN)
        goto out;
    static const char digits[] = "0123456789abcdef";
    for (unsigned int i = 0; i < mdlen; i++) {
        out[2 * i] = digits[md[i] >> 4];
        out[2 * i + 1] = digits[md[i] & 15];
    }
    out[PC_CREDS_SCOPE_LEN] = '\0';
    rc = 0;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}
