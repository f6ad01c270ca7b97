/*
 * fuzz_keypairs: equal keys imply equal readings. Two bodies that share a key are answered
 * from one entry, so the model server must see the same input in both: the key may drop
 * what the server ignores and spelling (order, whitespace, 1.0 and 1e0, escapes), nothing
 * else. The reading is the json-c reference's (tests/ref/cachekey_ref.c, pc_ref_reading):
 * the members the family reads (the input fields when the alias applies), canonical; or
 * the bytes, when there is no exact JSON reading, or when servers read the body two ways
 * (a name given twice with two values: json-c and Python keep the last, rapidjson's
 * FindMember in TF Serving and Triton the first). Build with -DKEYPAIRS_LAST_WINS=1 (make
 * -B build-fuzz/fuzz_keypairs KEYPAIRS_CFLAGS=-DKEYPAIRS_LAST_WINS=1) to take json-c's
 * reading for every server's instead.
 *
 * Input: byte 0 holds flags (bits 0-2: which parameter set of the reference; bit 3:
 * body_is_json), the rest is body A "\n@@\n" body B. Without the separator, B is A's
 * canonical form (pc_cachekey_canonical), when it has one.
 * Invariants, under one head:
 *   - key(A) == key(B) implies reading(A) == reading(B), and equal JSON readings of bodies
 *     that name nothing read twice imply equal keys (the key reads no more than the server)
 *   - an element of A's batch and one of B's (pc_cachekey_instances) share a key only when
 *     the server reads them alike (context and element, pc_ref_instance_readings), and
 *     then always do; an element's key is never a whole body's
 */
#include "fuzz.h"

#include <string.h>

#include "../ref/cachekey_ref.h"
#include "predcache/cachekey.h"

#ifndef KEYPAIRS_LAST_WINS
#define KEYPAIRS_LAST_WINS 0
#endif

#define SEP "\n@@\n"
#define HEAD                                                                                       \
    "predcache-key-v2\nbackend tfs-a\nmethod POST\npath /v1/models/m:predict\nquery \n"            \
    "media json\nscope \nvary \nnamespace default\n"

/* One body: its whole-body key (when keyed) and reading, its batch keys and readings. */
struct side {
    const char *body;
    size_t len;
    int keyed;
    char key[PC_KEY_MAX];
    struct pc_buf reading;
    int batch;                /* pc_cachekey_instances took it */
    char (*keys)[PC_KEY_MAX]; /* its element keys */
    struct pc_span *spans;
    size_t n;
    int read; /* the reference read it one element at a time */
    char **readings;
    size_t n_readings;
    int twice, batch_twice; /* a name read is given twice (whole body; batch context) */
};

static void side_read(struct side *s, const struct pc_key_params *p, int is_json)
{
    enum pc_key_kind kind;
    s->keyed = pc_cachekey_body(p, HEAD, strlen(HEAD), s->body, s->len, is_json, s->key, &kind,
                                NULL, 0) == 0;
    pc_buf_init(&s->reading);
    FUZZ_CHECK(pc_ref_reading(p, s->body, s->len, KEYPAIRS_LAST_WINS, &s->reading) == 0);
    struct pc_span sig;
    int rc = pc_cachekey_instances(p, HEAD, strlen(HEAD), s->body, s->len, &s->spans, &s->n, &sig,
                                   &s->keys);
    FUZZ_CHECK(rc == 0 || rc == 1);
    s->batch = rc == 0;
    rc = pc_ref_instance_readings(p, s->body, s->len, KEYPAIRS_LAST_WINS, &s->readings,
                                  &s->n_readings);
    FUZZ_CHECK(rc == 0 || rc == 1);
    s->read = rc == 0;
    s->twice = pc_ref_names_twice(p, s->body, s->len);
    struct pc_key_params family = *p; /* a batch's context is the family's reading */
    family.n_input_fields = 0;
    s->batch_twice = pc_ref_names_twice(&family, s->body, s->len);
}

static void side_release(struct side *s)
{
    pc_buf_release(&s->reading);
    if (s->batch) {
        free(s->keys);
        free(s->spans);
    }
    if (s->read)
        pc_ref_readings_free(s->readings, s->n_readings);
}

static int same_reading(const struct side *a, const struct side *b)
{
    return a->reading.len == b->reading.len &&
           memcmp(a->reading.data, b->reading.data, a->reading.len) == 0;
}

static void show(const char *what, const struct side *a, const struct side *b)
{
    fprintf(stderr, "%s\n  A: %.*s\n     reads %.*s\n  B: %.*s\n     reads %.*s\n", what,
            (int)(a->len < 400 ? a->len : 400), a->body,
            (int)(a->reading.len < 400 ? a->reading.len : 400), a->reading.data,
            (int)(b->len < 400 ? b->len : 400), b->body,
            (int)(b->reading.len < 400 ? b->reading.len : 400), b->reading.data);
}

/* Element i of a and element j of b. */
static void check_elements(const struct side *a, size_t i, const struct side *b, size_t j)
{
    int same_key = strcmp(a->keys[i], b->keys[j]) == 0;
    if (same_key && !(a->read && b->read))
        show("elements share a key, but the server reads a body two ways", a, b);
    FUZZ_CHECK(!same_key || (a->read && b->read));
    if (!a->read || !b->read)
        return;
    FUZZ_CHECK(a->n_readings == a->n && b->n_readings == b->n);
    int same = strcmp(a->readings[i], b->readings[j]) == 0;
    int must = same_key || (same && !a->batch_twice && !b->batch_twice);
    if (must && same_key != same)
        fprintf(stderr, "element %zu of A: %s\nelement %zu of B: %s\n", i, a->readings[i], j,
                b->readings[j]);
    FUZZ_CHECK(!must || same_key == same);
}

static void check_pair(const struct side *a, const struct side *b)
{
    if (a->keyed && b->keyed) {
        int same_key = strcmp(a->key, b->key) == 0;
        int same = same_reading(a, b);
        if (same_key && !same)
            show("one key, two readings", a, b);
        FUZZ_CHECK(!same_key || same);
        /* equal readings other than bytes: the key must not tell them apart either */
        if (same && memcmp(a->reading.data, "raw\n", 4) != 0 && !a->twice && !b->twice) {
            if (!same_key)
                show("one reading, two keys", a, b);
            FUZZ_CHECK(same_key);
        }
    }
    if (a->batch && b->batch) {
        for (size_t i = 0; i < a->n && i < 64; i++)
            for (size_t j = 0; j < b->n && j < 64; j++)
                check_elements(a, i, b, j);
    }
    for (size_t i = 0; a->batch && b->keyed && i < a->n; i++)
        FUZZ_CHECK(strcmp(a->keys[i], b->key) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct pc_key_params *p = &pc_ref_params[(data[0] & 7) % pc_ref_n_params];
    int is_json = (data[0] >> 3) & 1;
    char *in = fuzz_dup(data + 1, size - 1);
    size_t len = size - 1;
    struct side a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    char *sep = memmem(in, len, SEP, strlen(SEP));
    struct pc_buf canon;
    pc_buf_init(&canon);
    char *second = NULL;
    if (sep != NULL) {
        a.body = in;
        a.len = (size_t)(sep - in);
        size_t off = a.len + strlen(SEP);
        second = fuzz_dup((const uint8_t *)in + off, len - off); /* its own block for ASan */
        b.body = second;
        b.len = len - off;
    } else if (len > 0 && pc_cachekey_canonical(in, len, &canon) == 0) {
        a.body = in;
        a.len = len;
        b.body = canon.data;
        b.len = canon.len;
    } else {
        pc_buf_release(&canon);
        free(in);
        return 0;
    }
    side_read(&a, p, is_json);
    side_read(&b, p, is_json);
    check_pair(&a, &b);
    check_pair(&b, &a);
    side_release(&a);
    side_release(&b);
    pc_buf_release(&canon);
    free(second);
    free(in);
    return 0;
}
