/*
 * envelope: the stored value of one cached answer.
 *
 *     "PC1\n" status "\n" stored_at_ms "\n" content_type "\n" body
 *     "PC2\n" status "\n" stored_at_ms "\n" ttl_s "\n" content_type "\n" body
 *
 * PC2 carries the entry's own TTL (a route's ttl_s or a client's X-Predcache-TTL), so
 * that fresh versus stale is decided by what the entry was stored with; PC1 entries,
 * written before, take the route's TTL.
 * The decoder reads bytes that come back from the store, so it trusts nothing: it accepts
 * exactly what the encoder writes (3-digit status 100..599, a non-negative decimal time
 * without leading zeros or sign, a content type line without CR or NUL) and never reads
 * past len.
 */
#include "predcache/envelope.h"

#include <inttypes.h>
#include <string.h>

#define PC_ENV_MAGIC "PC1\n"
#define PC_ENV_MAGIC2 "PC2\n"
#define PC_ENV_MAGIC_LEN 4
#define PC_ENV_MAX_TTL_DIGITS 10
#define PC_ENV_MAX_TIME_DIGITS 19

static int status_ok(int status)
{
    return status >= 100 && status <= 599;
}

/* Restores out to its length before a failed encode, so no half envelope is left. */
static int encode_fail(struct pc_buf *out, size_t start)
{
    out->len = start;
    if (out->data != NULL)
        out->data[start] = '\0';
    return -1;
}

int pc_envelope_encode(const struct pc_envelope *env, struct pc_buf *out)
{
    const char *ctype = env->content_type ? env->content_type : "";
    if (!status_ok(env->status) || env->stored_at_ms < 0 || env->ttl_s < 0 ||
        strpbrk(ctype, "\r\n") != NULL || (env->body == NULL && env->body_len > 0))
        return -1;
    size_t start = out->len;
    int rc = env->ttl_s > 0 ? pc_buf_printf(out, PC_ENV_MAGIC2 "%d\n%" PRId64 "\n%d\n%s\n",
                                            env->status, env->stored_at_ms, env->ttl_s, ctype)
                            : pc_buf_printf(out, PC_ENV_MAGIC "%d\n%" PRId64 "\n%s\n", env->status,
                                            env->stored_at_ms, ctype);
    if (rc != 0)
        return encode_fail(out, start);
    if (env->body_len > 0 && pc_buf_append(out, env->body, env->body_len) != 0)
        return encode_fail(out, start);
    return 0;
}

/*
 * Reads the line starting at *pos (up to, not including, "\n") as an unsigned decimal of
 * 1..max_digits digits without leading zeros. Advances *pos past the "\n". 0 ok, -1 bad.
 */
static int read_decimal_line(const char *data, size_t len, size_t *pos, int max_digits,
                             int64_t *value)
{
    size_t i = *pos;
    int64_t v = 0;
    int digits = 0;
    while (i < len && data[i] >= '0' && data[i] <= '9') {
        int d = data[i] - '0';
        if (digits == max_digits || v > (INT64_MAX - d) / 10)
            return -1;
        if (digits == 1 && v == 0)
            return -1; /* leading zero */
        v = v * 10 + d;
        digits++;
        i++;
    }
    if (digits == 0 || i >= len || data[i] != '\n')
        return -1;
    *pos = i + 1;
    *value = v;
    return 0;
}

/*
 * Copies the content type line at *pos into buf (NUL-terminated) and advances *pos past
 * its "\n". Rejects CR and NUL (the copy must read back as the same string) and a line
 * that does not fit buf with its NUL.
 */
static int read_ctype_line(const char *data, size_t len, size_t *pos, char *buf, size_t buflen)
{
    const char *start = data + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    if (nl == NULL)
        return -1;
    size_t n = (size_t)(nl - start);
    if (buf == NULL || n >= buflen || memchr(start, '\r', n) != NULL ||
        memchr(start, '\0', n) != NULL)
        return -1;
    memcpy(buf, start, n);
    buf[n] = '\0';
    *pos += n + 1;
    return 0;
}

int pc_envelope_decode(const char *data, size_t len, struct pc_envelope *env, char *ctype_buf,
                       size_t ctype_len)
{
    if (data == NULL || len < PC_ENV_MAGIC_LEN)
        return -1;
    int v2 = memcmp(data, PC_ENV_MAGIC2, PC_ENV_MAGIC_LEN) == 0;
    if (!v2 && memcmp(data, PC_ENV_MAGIC, PC_ENV_MAGIC_LEN) != 0)
        return -1;
    size_t pos = PC_ENV_MAGIC_LEN;
    int64_t status, stored_at, ttl = 0;
    /* 3 digits, no leading zero: exactly 100..999, then narrowed to 100..599. */
    if (read_decimal_line(data, len, &pos, 3, &status) != 0 || status < 100 ||
        !status_ok((int)status))
        return -1;
    if (read_decimal_line(data, len, &pos, PC_ENV_MAX_TIME_DIGITS, &stored_at) != 0)
        return -1;
    if (v2 && (read_decimal_line(data, len, &pos, PC_ENV_MAX_TTL_DIGITS, &ttl) != 0 || ttl < 1 ||
               ttl > INT32_MAX))
        return -1;
    if (read_ctype_line(data, len, &pos, ctype_buf, ctype_len) != 0)
        return -1;
    env->status = (int)status;
    env->stored_at_ms = stored_at;
    env->ttl_s = (int)ttl;
    env->content_type = ctype_buf;
    env->body = data + pos;
    env->body_len = len - pos;
    return 0;
}
