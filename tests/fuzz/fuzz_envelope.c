/*
 * fuzz_envelope: pc_envelope_decode on arbitrary stored values, and encode -> decode of
 * fields taken from the input.
 *
 * Invariants:
 *   - decode reads only data[0..len) and its type buffer (ASan: both are exact-size heap
 *     blocks); it leaves env untouched on failure
 *   - a decoded value encodes back to exactly the same bytes (the decoder accepts only
 *     what the encoder writes); the type fits a buffer of its length + 1 and no smaller
 *   - fields that encode decode back to themselves, the body by reference into the value;
 *     a refused encode leaves the output buffer as it was
 */
#include "fuzz.h"

#include <string.h>

#include "predcache/envelope.h"

static void decode_reencode(const char *data, size_t len)
{
    size_t cap = len + 1;
    char *ctype = malloc(cap);
    FUZZ_CHECK(ctype != NULL);
    struct pc_envelope env = {.status = -7, .stored_at_ms = -7, .content_type = NULL};
    if (pc_envelope_decode(data, len, &env, ctype, cap) != 0) {
        FUZZ_CHECK(env.status == -7 && env.stored_at_ms == -7 && env.content_type == NULL);
        free(ctype);
        return;
    }
    FUZZ_CHECK(env.status >= 100 && env.status <= 599);
    FUZZ_CHECK(env.stored_at_ms >= 0);
    FUZZ_CHECK(env.content_type == ctype);
    FUZZ_CHECK(env.body >= data && env.body_len <= len && env.body + env.body_len == data + len);

    struct pc_buf out;
    pc_buf_init(&out);
    FUZZ_CHECK(pc_envelope_encode(&env, &out) == 0);
    FUZZ_CHECK(out.len == len && memcmp(out.data, data, len) == 0);
    pc_buf_release(&out);

    /* The type buffer: its exact size fits, one byte less does not (nor does NULL). */
    size_t tl = strlen(ctype);
    char *tight = malloc(tl + 1);
    FUZZ_CHECK(tight != NULL);
    struct pc_envelope e2;
    FUZZ_CHECK(pc_envelope_decode(data, len, &e2, tight, tl + 1) == 0);
    FUZZ_CHECK(strcmp(tight, ctype) == 0);
    FUZZ_CHECK(pc_envelope_decode(data, len, &e2, tight, tl) == -1);
    FUZZ_CHECK(pc_envelope_decode(data, len, &e2, NULL, 0) == -1);
    free(tight);
    free(ctype);
}

/*
 * Fields from the input: 2 bytes status (and whether the type is NULL), 8 bytes stored_at_ms
 * (either sign, or mostly small when bit 6 of the first is set), a type up to
 * the first NUL (at most 300 bytes), the rest the body.
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
    int ttl = data[0] & 0x01 ? (int)(int32_t)(uint32_t)(u >> 20) : 0; /* PC2 when > 0 */
    data += 10;
    size -= 10;
    size_t tl = 0;
    while (tl < size && tl < 300 && data[tl] != 0)
        tl++;
    char ctype[301];
    memcpy(ctype, data, tl);
    ctype[tl] = '\0';
    size_t skip = tl < size ? tl + 1 : tl;
    char *body = fuzz_dup(data + skip, size - skip);
    size_t body_len = size - skip;

    struct pc_envelope in = {.status = status,
                             .stored_at_ms = at,
                             .ttl_s = ttl,
                             .content_type = no_type ? NULL : ctype,
                             .body = body,
                             .body_len = body_len};
    int ok = status >= 100 && status <= 599 && at >= 0 && strpbrk(ctype, "\r\n") == NULL;
    if (in.content_type == NULL)
        ok = status >= 100 && status <= 599 && at >= 0;
    ok = ok && ttl >= 0;

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
        char buf[302];
        struct pc_envelope back;
        FUZZ_CHECK(pc_envelope_decode(copy, vlen, &back, buf, sizeof buf) == 0);
        FUZZ_CHECK(back.status == status && back.stored_at_ms == at && back.ttl_s == ttl);
        FUZZ_CHECK(strcmp(back.content_type, in.content_type ? ctype : "") == 0);
        FUZZ_CHECK(back.body_len == body_len && back.body == copy + vlen - body_len);
        FUZZ_CHECK(body_len == 0 || memcmp(back.body, body, body_len) == 0);
        free(copy);
    }
    pc_buf_release(&out);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = fuzz_dup(data, size);
    decode_reencode(copy, size);
    free(copy);
    encode_decode(data, size);
    return 0;
}
