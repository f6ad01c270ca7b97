/*
 * envelope: the stored value of one cached answer.
 *
 *     "PC1\n" status "\n" stored_at_ms "\n" content_type "\n" body
 *     "PC2\n" status "\n" stored_at_ms "\n" ttl_s "\n" content_type "\n" body
 *     "PC3\n" status "\n" stored_at_ms "\n" ttl_s "\n" n_headers "\n" content_type "\n"
 *             (name ":" value "\n") * n_headers  body
 *
 * PC2 carried the entry's own TTL (a route's ttl_s or a client's X-Predcache-TTL), so
 * that fresh versus stale is decided by what the entry was stored with; PC1 entries,
 * written before, take the route's TTL. PC3, the only one written now, also carries the
 * end-to-end headers that describe the body, so a hit replays the answer faithfully (a
 * binary KServe answer is unreadable without its Inference-Header-Content-Length); its
 * ttl_s may be 0, "not recorded". PC4 adds the tag of the key a cache entry was stored
 * under, so that a reader takes it only for that key.
 * The decoder reads bytes that come back from the store, so it trusts nothing: it accepts
 * exactly what the encoder writes (3-digit status 100..599, non-negative decimals without
 * leading zeros or sign, text lines without CR or NUL, header names that are tokens, text
 * that fits PC_ENV_SCRATCH, whatever the version) and never reads past len.
 */
#include "predcache/envelope.h"

#include <string.h>

#define PC_ENV_MAGIC1 "PC1\n"
#define PC_ENV_MAGIC2 "PC2\n"
#define PC_ENV_MAGIC3 "PC3\n"
#define PC_ENV_MAGIC4 "PC4\n"
#define PC_ENV_MAGIC_LEN 4
#define PC_ENV_MAX_TTL_DIGITS 10
#define PC_ENV_MAX_TIME_DIGITS 19

static int status_ok(int status)
{
    return status >= 100 && status <= 599;
}

/* RFC 9110 tchar: "!#$%&'*+-.^_`|~", digits and letters. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* Length of the token at s[0..n) that ends at the first non-tchar (0 when none). */
static size_t token_len(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    return i;
}

/* Restores out to its length before a failed encode, so no half envelope is left. */
static int encode_fail(struct pc_buf *out, size_t start)
{
    out->len = start;
    if (out->data != NULL)
        out->data[start] = '\0';
    return -1;
}

/* 0 when env's text lines are what PC3 can carry; *text is then their scratch size (NULs
 * included), which is also their encoded size. The sum stops growing past PC_ENV_SCRATCH. */
static int check_text(const struct pc_envelope *env, const char *ctype, size_t *text)
{
    if (strpbrk(ctype, "\r\n") != NULL || env->n_headers > PC_ENV_MAX_HEADERS)
        return -1;
    size_t need = strlen(ctype) + 1;
    for (size_t i = 0; i < env->n_headers && need <= PC_ENV_SCRATCH; i++) {
        const struct pc_env_header *h = &env->headers[i];
        if (h->name == NULL || h->value == NULL)
            return -1;
        size_t nl = strlen(h->name);
        if (nl == 0 || nl > PC_ENV_MAX_NAME || token_len(h->name, nl) != nl ||
            strpbrk(h->value, "\r\n") != NULL)
            return -1;
        need += nl + 1 + strlen(h->value) + 1;
    }
    if (need > PC_ENV_SCRATCH)
        return -1;
    *text = need;
    return 0;
}

int pc_envelope_encode(const struct pc_envelope *env, struct pc_buf *out)
{
    const char *ctype = env->content_type ? env->content_type : "";
    size_t text = 0;
    if (!status_ok(env->status) || env->stored_at_ms < 0 || env->ttl_s < 0 ||
        (env->body == NULL && env->body_len > 0) || check_text(env, ctype, &text) != 0)
        return -1;
    size_t start = out->len;
    /* one allocation: the numbers take at most 40 bytes with their newlines, the tag 17 */
    if (pc_buf_reserve(out, PC_ENV_MAGIC_LEN + 17 + 48 + text + env->body_len) != 0)
        return encode_fail(out, start);
    /* the numbers are checked above: none is negative */
    int rc = 0;
    if (env->key_tag != 0) {
        rc |= pc_buf_append(out, PC_ENV_MAGIC4, PC_ENV_MAGIC_LEN);
        rc |= pc_buf_append_hex64(out, env->key_tag);
        rc |= pc_buf_append_char(out, '\n');
    } else {
        rc |= pc_buf_append(out, PC_ENV_MAGIC3, PC_ENV_MAGIC_LEN);
    }
    const uint64_t nums[] = {(uint64_t)env->status, (uint64_t)env->stored_at_ms,
                             (uint64_t)env->ttl_s, (uint64_t)env->n_headers};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        rc |= pc_buf_append_u64(out, nums[i]);
        rc |= pc_buf_append_char(out, '\n');
    }
    rc |= pc_buf_append_str(out, ctype);
    rc |= pc_buf_append_char(out, '\n');
    if (rc != 0)
        return encode_fail(out, start);
    for (size_t i = 0; i < env->n_headers; i++) {
        const struct pc_env_header *h = &env->headers[i];
        if (pc_buf_append_str(out, h->name) != 0 || pc_buf_append_char(out, ':') != 0 ||
            pc_buf_append_str(out, h->value) != 0 || pc_buf_append_char(out, '\n') != 0)
            return encode_fail(out, start);
    }
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

/* Where decode copies the text lines: buf[0..cap), used up to len. */
struct scratch {
    char *buf;
    size_t cap, len;
};

/* Copies s[0..n) into the scratch, NUL-terminated; NULL when it does not fit. */
static const char *scratch_put(struct scratch *sc, const char *s, size_t n)
{
    if (n >= sc->cap - sc->len)
        return NULL;
    char *p = sc->buf + sc->len;
    memcpy(p, s, n);
    p[n] = '\0';
    sc->len += n + 1;
    return p;
}

/*
 * The text line at *pos, up to its "\n": *line and *n set, *pos advanced past the "\n".
 * Refuses a missing "\n" and CR or NUL in the line (a copy must read back as the same
 * string, and the encoder never writes them).
 */
static int read_text_line(const char *data, size_t len, size_t *pos, const char **line, size_t *n)
{
    const char *start = data + *pos;
    const char *nl = memchr(start, '\n', len - *pos);
    if (nl == NULL)
        return -1;
    size_t k = (size_t)(nl - start);
    if (memchr(start, '\r', k) != NULL || memchr(start, '\0', k) != NULL)
        return -1;
    *line = start;
    *n = k;
    *pos += k + 1;
    return 0;
}

/* One "name:value" line into h, both copied into the scratch. */
static int read_header_line(const char *data, size_t len, size_t *pos, struct scratch *sc,
                            struct pc_env_header *h)
{
    const char *line;
    size_t n;
    if (read_text_line(data, len, pos, &line, &n) != 0)
        return -1;
    size_t nl = token_len(line, n);
    if (nl == 0 || nl > PC_ENV_MAX_NAME || nl == n || line[nl] != ':')
        return -1;
    h->name = scratch_put(sc, line, nl);
    h->value = h->name ? scratch_put(sc, line + nl + 1, n - nl - 1) : NULL;
    return h->value != NULL ? 0 : -1;
}

uint64_t pc_envelope_key_tag(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ULL;
    }
    return h != 0 ? h : 1;
}

/* The tag line at *pos: exactly 16 lowercase hex digits, not all zero, then "\n". */
static int read_tag_line(const char *data, size_t len, size_t *pos, uint64_t *tag)
{
    if (len - *pos < 17 || data[*pos + 16] != '\n')
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < 16; i++) {
        char ch = data[*pos + i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    if (v == 0)
        return -1;
    *pos += 17;
    *tag = v;
    return 0;
}

int pc_envelope_decode(const char *data, size_t len, struct pc_envelope *env, char *ctype_buf,
                       size_t ctype_len)
{
    if (data == NULL || len < PC_ENV_MAGIC_LEN || ctype_buf == NULL || ctype_len == 0)
        return -1;
    int version;
    if (memcmp(data, PC_ENV_MAGIC4, PC_ENV_MAGIC_LEN) == 0)
        version = 4;
    else if (memcmp(data, PC_ENV_MAGIC3, PC_ENV_MAGIC_LEN) == 0)
        version = 3;
    else if (memcmp(data, PC_ENV_MAGIC2, PC_ENV_MAGIC_LEN) == 0)
        version = 2;
    else if (memcmp(data, PC_ENV_MAGIC1, PC_ENV_MAGIC_LEN) == 0)
        version = 1;
    else
        return -1;
    size_t pos = PC_ENV_MAGIC_LEN;
    int64_t status, stored_at, ttl = 0, n_headers = 0;
    uint64_t tag = 0;
    if (version == 4 && read_tag_line(data, len, &pos, &tag) != 0)
        return -1;
    /* 3 digits, no leading zero: exactly 100..999, then narrowed to 100..599. */
    if (read_decimal_line(data, len, &pos, 3, &status) != 0 || status < 100 ||
        !status_ok((int)status))
        return -1;
    if (read_decimal_line(data, len, &pos, PC_ENV_MAX_TIME_DIGITS, &stored_at) != 0)
        return -1;
    if (version >= 2 && (read_decimal_line(data, len, &pos, PC_ENV_MAX_TTL_DIGITS, &ttl) != 0 ||
                         ttl > INT32_MAX || (version == 2 && ttl < 1)))
        return -1;
    if (version >= 3 &&
        (read_decimal_line(data, len, &pos, 1, &n_headers) != 0 || n_headers > PC_ENV_MAX_HEADERS))
        return -1;
    /* Whatever buffer the caller has, no more text than the encoder would write. */
    struct scratch sc = {ctype_buf, ctype_len < PC_ENV_SCRATCH ? ctype_len : PC_ENV_SCRATCH, 0};
    const char *line, *ctype;
    size_t n;
    if (read_text_line(data, len, &pos, &line, &n) != 0 ||
        (ctype = scratch_put(&sc, line, n)) == NULL)
        return -1;
    struct pc_env_header headers[PC_ENV_MAX_HEADERS] = {{NULL, NULL}};
    for (int64_t i = 0; i < n_headers; i++)
        if (read_header_line(data, len, &pos, &sc, &headers[i]) != 0)
            return -1;
    env->key_tag = tag;
    env->status = (int)status;
    env->stored_at_ms = stored_at;
    env->ttl_s = (int)ttl;
    env->content_type = ctype;
    memcpy(env->headers, headers, sizeof headers);
    env->n_headers = (size_t)n_headers;
    env->body = data + pos;
    env->body_len = len - pos;
    return 0;
}
