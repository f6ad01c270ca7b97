/*
 * fuzz_envelope: pc_envelope_decode on arbitrary stored values, and encode -> decode of
 * fields taken from the input.
 *
 * Invariants:
 *   - decode reads only data[0..len) and its scratch (ASan: both are exact-size heap
 *     blocks); it leaves env untouched on failure
 *   - a decoded value encodes (as PC3) and decodes back to the same fields; a decoded PC3
 *     value encodes back to exactly the same bytes (the decoder accepts only what the
 *     encoder writes); its text fits a scratch of exactly its size and no smaller
 *   - fields that encode decode back to themselves, the body by reference into the value;
 *     encode refuses exactly what the format cannot carry, and a refused encode leaves the
 *     output buffer as it was
 */
#include "fuzz.h"

#include <string.h>

#include "predcache/envelope.h"

/* Scratch bytes the decoded text takes: every line with its NUL. */
static size_t text_size(const struct pc_envelope *e)
{
    size_t n = strlen(e->content_type) + 1;
    for (size_t i = 0; i < e->n_headers; i++)
        n += strlen(e->headers[i].name) + 1 + strlen(e->headers[i].value) + 1;
    return n;
}

static void check_same(const struct pc_envelope *a, const struct pc_envelope *b)
{
    FUZZ_CHECK(a->status == b->status && a->stored_at_ms == b->stored_at_ms &&
               a->ttl_s == b->ttl_s && a->key_tag == b->key_tag);
    FUZZ_CHECK(strcmp(a->content_type, b->content_type) == 0);
    FUZZ_CHECK(a->n_headers == b->n_headers);
    for (size_t i = 0; i < a->n_headers; i++)
        FUZZ_CHECK(strcmp(a->headers[i].name, b->headers[i].name) == 0 &&
                   strcmp(a->headers[i].value, b->headers[i].value) == 0);
    FUZZ_CHECK(a->body_len == b->body_len &&
               (a->body_len == 0 || memcmp(a->body, b->body, a->body_len) == 0));
}

static void decode_reencode(const char *data, size_t len)
{
    char *scratch = malloc(PC_ENV_SCRATCH);
    FUZZ_CHECK(scratch != NULL);
    struct pc_envelope env = {.status = -7, .stored_at_ms = -7, .n_headers = 99};
    if (pc_envelope_decode(data, len, &env, scratch, PC_ENV_SCRATCH) != 0) {
        FUZZ_CHECK(env.status == -7 && env.stored_at_ms == -7 && env.n_headers == 99 &&
                   env.content_type == NULL);
        free(scratch);
        return;
    }
    FUZZ_CHECK(env.status >= 100 && env.status <= 599);
    FUZZ_CHECK(env.stored_at_ms >= 0 && env.ttl_s >= 0);
    FUZZ_CHECK(env.content_type == scratch);
    FUZZ_CHECK(env.n_headers <= PC_ENV_MAX_HEADERS);
    for (size_t i = 0; i < PC_ENV_MAX_HEADERS; i++) {
        const struct pc_env_header *h = &env.headers[i];
        if (i >= env.n_headers) {
            FUZZ_CHECK(h->name == NULL && h->value == NULL);
            continue;
        }
        FUZZ_CHECK(h->name > scratch && h->name < scratch + PC_ENV_SCRATCH);
        FUZZ_CHECK(h->value > h->name && h->value < scratch + PC_ENV_SCRATCH);
    }
    FUZZ_CHECK(env.body >= data && env.body_len <= len && env.body + env.body_len == data + len);
    size_t text = text_size(&env);
    FUZZ_CHECK(text <= PC_ENV_SCRATCH);
    int pc4 = memcmp(data, "PC4\n", 4) == 0;
    int pc3 = pc4 || memcmp(data, "PC3\n", 4) == 0; /* PC4 is PC3 and a tag */
    FUZZ_CHECK(pc3 || env.n_headers == 0);
    FUZZ_CHECK(pc4 == (env.key_tag != 0));

    struct pc_buf out;
    pc_buf_init(&out);
    FUZZ_CHECK(pc_envelope_encode(&env, &out) == 0);
    FUZZ_CHECK(memcmp(out.data, pc4 ? "PC4\n" : "PC3\n", 4) == 0);
    FUZZ_CHECK(!pc3 || (out.len == len && memcmp(out.data, data, len) == 0));
    char *copy = fuzz_dup((const uint8_t *)out.data, out.len);
    char *scratch2 = malloc(PC_ENV_SCRATCH);
    FUZZ_CHECK(scratch2 != NULL);
    struct pc_envelope again;
    FUZZ_CHECK(pc_envelope_decode(copy, out.len, &again, scratch2, PC_ENV_SCRATCH) == 0);
    check_same(&env, &again);
    FUZZ_CHECK(again.body == copy + out.len - again.body_len);
    free(scratch2);
    free(copy);
    pc_buf_release(&out);

    /* The scratch: its exact size fits, one byte less does not (nor does NULL). */
    char *tight = malloc(text);
    FUZZ_CHECK(tight != NULL);
    struct pc_envelope e2;
    FUZZ_CHECK(pc_envelope_decode(data, len, &e2, tight, text) == 0);
    check_same(&env, &e2);
    FUZZ_CHECK(pc_envelope_decode(data, len, &e2, tight, text - 1) == -1);
    FUZZ_CHECK(pc_envelope_decode(data, len, &e2, NULL, 0) == -1);
    free(tight);
    free(scratch);
}

/* The encoder's rules, written out again: an RFC 9110 token of 1..64 bytes. */
static int name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > PC_ENV_MAX_NAME)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && memchr("!#$%&'*+-.^_`|~", c, 15) == NULL)
            return 0;
    }
    return 1;
}

/* The next NUL-terminated field of data[*pos..size), at most max bytes, copied into a fresh
 * heap string the caller frees. */
static char *take_field(const uint8_t *data, size_t size, size_t *pos, size_t max)
{
    size_t n = 0;
    while (*pos + n < size && n < max && data[*pos + n] != 0)
        n++;
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data + *pos, n);
    s[n] = '\0';
    *pos += n;
    if (*pos < size && data[*pos] == 0)
        (*pos)++;
    return s;
}

/*
 * Fields from the input: 2 bytes status (and whether the type is NULL, and how many
 * headers: bits 3..6 of the second, 0..15), 8 bytes stored_at_ms (either sign, or mostly
 * small when bit 6 of the first is set), a type up to the first NUL (at most 300 bytes), then
 * that many name and value fields up to a NUL each (at most 80 and 3000 bytes), the rest
 * the body.
 */
static void encode_decode(const uint8_t *data, size_t size)
{
    if (size < 10)
        return;
    int status = (int)((data[0] | (data[1] << 8)) % 700); /* some out of 100..599 */
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u = u << 8 | data[2 + i];
    int64_t at;
    memcpy(&at, &u, sizeof at);
    if (data[2] & 0x40) /* mostly small, realistic times */
        at = (int64_t)(u % 4000000000000ull);
    int no_type = data[1] & 0x80; /* content_type NULL: encoded as an empty line */
    size_t nh = (data[1] >> 3) & 0x0f;
    int ttl = data[0] & 0x01 ? (int)(int32_t)(uint32_t)(u >> 20) : 0;

    size_t pos = 10;
    char *ctype = take_field(data, size, &pos, 300);
    char *names[16], *values[16];
    struct pc_envelope in = {.key_tag = data[0] & 0x02 ? (u | 1) : 0,
                             .status = status,
                             .stored_at_ms = at,
                             .ttl_s = ttl,
                             .content_type = no_type ? NULL : ctype,
                             .n_headers = nh};
    int ok = status >= 100 && status <= 599 && at >= 0 && ttl >= 0 && nh <= PC_ENV_MAX_HEADERS;
    const char *type = no_type ? "" : ctype;
    ok = ok && strpbrk(type, "\r\n") == NULL;
    size_t text = strlen(type) + 1;
    for (size_t i = 0; i < nh; i++) {
        names[i] = take_field(data, size, &pos, 80);
        values[i] = take_field(data, size, &pos, 3000);
        if (i < PC_ENV_MAX_HEADERS)
            in.headers[i] = (struct pc_env_header){names[i], values[i]};
        ok = ok && name_ok(names[i]) && strpbrk(values[i], "\r\n") == NULL;
        text += strlen(names[i]) + 1 + strlen(values[i]) + 1;
    }
    ok = ok && text <= PC_ENV_SCRATCH;
    char *body = fuzz_dup(data + pos, size - pos);
    in.body = body;
    in.body_len = size - pos;

    struct pc_buf out;
    pc_buf_init(&out);
    FUZZ_CHECK(pc_buf_append(&out, "pre", 3) == 0);
    int rc = pc_envelope_encode(&in, &out);
    FUZZ_CHECK((rc == 0) == ok);
    FUZZ_CHECK(memcmp(out.data, "pre", 3) == 0 && out.data[out.len] == '\0');
    if (rc != 0) {
        FUZZ_CHECK(out.len == 3);
    } else {
        const char *v = out.data + 3;
        size_t vlen = out.len - 3;
        char *copy = fuzz_dup((const uint8_t *)v, vlen);
        char *buf = malloc(PC_ENV_SCRATCH);
        FUZZ_CHECK(buf != NULL);
        struct pc_envelope back;
        FUZZ_CHECK(pc_envelope_decode(copy, vlen, &back, buf, PC_ENV_SCRATCH) == 0);
        struct pc_envelope want = in;
        want.content_type = type;
        check_same(&back, &want);
        FUZZ_CHECK(back.body == copy + vlen - in.body_len);
        free(buf);
        free(copy);
    }
    pc_buf_release(&out);
    for (size_t i = 0; i < nh; i++) {
        free(names[i]);
        free(values[i]);
    }
    free(body);
    free(ctype);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = fuzz_dup(data, size);
    decode_reencode(copy, size);
    free(copy);
    encode_decode(data, size);
    return 0;
}
