/*
 * keymemo_model: pc_keymemo against a reference model, one request at a time (see model.h).
 *
 * The model is the header's promise written out plainly: a table indexed by (context,
 * body) -- identity by every byte of both, never by a hash -- holding the value last
 * stored for it and a last-used tick. Around it, exactly what keymemo.c decides:
 *   - the doorkeeper: a direct-mapped array of hashes (1024 slots, doubled while under
 *     max_bytes / 512), slot (hash >> 17) & mask; a put is stored only when its slot holds
 *     its hash already, else the slot takes the hash and first_seen counts it;
 *   - an entry is charged a fixed amount (measured once on a scratch memo: the bookkeeping
 *     struct and the 64-byte overhead) plus 4 bytes an instance, the context, the body as
 *     held (its 32-byte SHA-256 when over PC_KEYMEMO_DIGEST_MIN) and the keys; one over a
 *     quarter of the bound is not stored; a put drops the older entry of its request, then
 *     the least recently used ones until it fits.
 * The hash itself is the memo's: with the default (seeded) hash the model takes the probe's
 * and only checks that a request always gets the same one; with the test hashes (one value
 * for everything; 32 values over 8 chains and 2 doorkeeper slots) it knows them.
 *
 * The requests: 8 contexts (empty, NULs inside, 200 bytes, two that with the bodies "abc",
 * "bc", "c" join to the same bytes, and three of those lengths with other bytes) times
 * 1056 bodies (lengths 0 to 20000 around
 * the digest threshold, 32-byte bodies that are the SHA-256 of the large ones, same-length
 * bodies one byte apart, and 1024 small ones that make the table grow). Every request is
 * a get (checked: found, and then n, n_uniq, uniq_of and the keys byte for byte), maybe
 * followed by a put of a value no other put had (sometimes an invalid one, sometimes too
 * large). After every step all the counters of pc_keymemo_stats must be the model's.
 */
#ifndef PREDCACHE_TEST_KEYMEMO_MODEL_H
#define PREDCACHE_TEST_KEYMEMO_MODEL_H

#include "model.h"

#include <string.h>

#include <openssl/evp.h>

#include "predcache/keymemo.h"

#define KMM_CTXS 8
#define KMM_FIXED_BODIES 32
#define KMM_BODIES (KMM_FIXED_BODIES + 1024)
#define KMM_PAIRS (KMM_CTXS * KMM_BODIES)
#define KMM_BIG_FIRST 16 /* bodies 16..19 are over PC_KEYMEMO_DIGEST_MIN; 20..23 their SHA-256 */

struct kmm_bytes {
    char *p;
    size_t len;
};

/* The requests' bytes: built once per process (the large bodies and their digests). */
static struct kmm_bytes kmm_ctx[KMM_CTXS], kmm_body[KMM_BODIES];

static void kmm_set(struct kmm_bytes *b, const char *p, size_t len)
{
    b->p = malloc(len ? len : 1);
    MODEL_CHECK(b->p != NULL);
    if (len > 0)
        memcpy(b->p, p, len);
    b->len = len;
}

static void kmm_gen(struct kmm_bytes *b, size_t len, uint64_t seed)
{
    b->p = malloc(len ? len : 1);
    MODEL_CHECK(b->p != NULL);
    model_fill((uint8_t *)b->p, len, seed);
    b->len = len;
}

static void kmm_universe(void)
{
    static int built;
    if (built)
        return;
    built = 1;
    kmm_set(&kmm_ctx[0], "", 0);
    kmm_set(&kmm_ctx[1], "a", 1);
    kmm_set(&kmm_ctx[2], "ab", 2);
    kmm_set(&kmm_ctx[3], "route\0/v1\0ns", 12);
    kmm_gen(&kmm_ctx[4], 200, 4);
    /* Same lengths as three above, other bytes: the lengths alone must not decide. */
    kmm_set(&kmm_ctx[5], "ba", 2);
    kmm_set(&kmm_ctx[6], "route\0/v1\0nt", 12);
    kmm_gen(&kmm_ctx[7], 200, 4);
    kmm_ctx[7].p[199] ^= 1;
    /* With contexts "", "a", "ab": three requests whose bytes joined are all "abc". */
    kmm_set(&kmm_body[0], "abc", 3);
    kmm_set(&kmm_body[1], "bc", 2);
    kmm_set(&kmm_body[2], "c", 1);
    static const size_t lens[13] = {
        0, 1, 7, 8, 31, 32, 33, 64, 300, 1000, 4096, PC_KEYMEMO_DIGEST_MIN, PC_KEYMEMO_DIGEST_MIN};
    for (unsigned i = 0; i < 13; i++)
        kmm_gen(&kmm_body[3 + i], lens[i], 100 + i);
    /* Over the threshold: held as SHA-256. Two of one length, one byte apart. */
    static const size_t big[4] = {PC_KEYMEMO_DIGEST_MIN + 1, PC_KEYMEMO_DIGEST_MIN + 1,
                                  PC_KEYMEMO_DIGEST_MIN + 16, 20000};
    for (unsigned i = 0; i < 4; i++)
        kmm_gen(&kmm_body[KMM_BIG_FIRST + i], big[i], 200);
    kmm_body[KMM_BIG_FIRST + 1].p[PC_KEYMEMO_DIGEST_MIN] ^= 1;
    /* A 32-byte body equal to a large body's digest: another request all the same. */
    for (unsigned i = 0; i < 4; i++) {
        unsigned char d[PC_KEYMEMO_DIGEST_LEN];
        const struct kmm_bytes *b = &kmm_body[KMM_BIG_FIRST + i];
        MODEL_CHECK(EVP_Digest(b->p, b->len, d, NULL, EVP_sha256(), NULL) == 1);
        kmm_set(&kmm_body[KMM_BIG_FIRST + 4 + i], (const char *)d, sizeof d);
    }
    /* Same length, one byte apart. */
    for (unsigned i = 0; i < 8; i++) {
        kmm_gen(&kmm_body[24 + i], 24, 300);
        kmm_body[24 + i].p[i * 3] ^= 0x40;
    }
    char s[64];
    for (unsigned i = 0; i < 1024; i++) {
        int len = snprintf(s, sizeof s, "{\"x\":%u,\"pad\":\"%.*s\"}", i, (int)(i % 23),
                           "abcdefghijklmnopqrstuvwxyz");
        kmm_set(&kmm_body[KMM_FIXED_BODIES + i], s, (size_t)len);
    }
}

/* Every request in one chain and one doorkeeper slot: only the bytes tell them apart. */
static uint64_t kmm_same_hash(uint64_t seed, const char *ctx, size_t ctx_len, const char *body,
                              size_t len)
{
    (void)seed, (void)ctx, (void)ctx_len, (void)body, (void)len;
    return 42;
}

/* 32 hashes, in 8 bucket chains and 2 doorkeeper slots: puts keep displacing each other. */
static uint64_t kmm_few_hash(uint64_t seed, const char *ctx, size_t ctx_len, const char *body,
                             size_t len)
{
    (void)seed;
    uint64_t h = model_fnv1a(ctx, ctx_len) * 31 + model_fnv1a(body, len);
    return (h & 7) | ((h >> 3) & 1) << 17 | ((h >> 4) & 1) << 27;
}

static const pc_keymemo_hash_fn kmm_hashes[4] = {NULL, kmm_same_hash, kmm_few_hash, NULL};
static const size_t kmm_bounds[4] = {2048, 16 * 1024, 128 * 1024, 1024 * 1024};

/* What an entry costs besides its bytes, measured once: sizeof its struct plus 64. */
static size_t kmm_fixed_charge(void)
{
    static size_t fixed;
    if (fixed == 0) {
        struct pc_keymemo *m = pc_keymemo_new(1 << 20, kmm_same_hash);
        MODEL_CHECK(m != NULL);
        struct pc_keymemo_val v = {0, 1, NULL, "k", 2}, out;
        struct pc_keymemo_probe probe;
        for (int i = 0; i < 2; i++) { /* the doorkeeper admits the second */
            pc_keymemo_get(m, "", 0, "", 0, &probe, &out);
            pc_keymemo_put(m, &probe, "", 0, "", 0, &v);
        }
        struct pc_keymemo_stats st;
        pc_keymemo_stats(m, &st);
        MODEL_CHECK(st.entries == 1 && st.bytes > 64 + 2);
        fixed = st.bytes - 2;
        pc_keymemo_free(m);
    }
    return fixed;
}

struct kmm_val {
    size_t n, n_uniq, keys_len;
    uint32_t *uniq_of; /* NULL when n == 0 */
    char *keys;
};

struct kmm_entry {
    int present;
    int hash_known;
    uint64_t hash;
    uint64_t last_used;
    size_t charge;
    unsigned live_at;
    struct kmm_val v;
};

struct kmm {
    struct kmm_entry e[KMM_PAIRS];
    unsigned live[KMM_PAIRS]; /* the present pairs, for the LRU scan */
    uint64_t *door;
    size_t door_mask;
    size_t max_bytes, bytes, entries, fixed;
    pc_keymemo_hash_fn hash;
    uint64_t tick, serial;
    uint64_t hits, misses, puts, evictions, first_seen;
};

static void kmm_val_free(struct kmm_val *v)
{
    free(v->uniq_of);
    free(v->keys);
    memset(v, 0, sizeof *v);
}

static void kmm_remove(struct kmm *m, unsigned pair)
{
    m->bytes -= m->e[pair].charge;
    m->entries--;
    kmm_val_free(&m->e[pair].v);
    m->e[pair].present = 0;
    unsigned last = m->live[m->entries];
    m->live[m->e[pair].live_at] = last;
    m->e[last].live_at = m->e[pair].live_at;
}

static size_t kmm_held_len(unsigned body)
{
    size_t len = kmm_body[body].len;
    return len > PC_KEYMEMO_DIGEST_MIN ? PC_KEYMEMO_DIGEST_LEN : len;
}

/* The hash the memo must use for a request: known for the test hashes, else the first one
 * seen for it (a request must always get the same). */
static void kmm_check_hash(struct kmm *m, unsigned pair, uint64_t got)
{
    unsigned c = pair / KMM_BODIES, b = pair % KMM_BODIES;
    struct kmm_entry *e = &m->e[pair];
    if (m->hash != NULL) {
        const struct kmm_bytes *held = &kmm_body[b];
        if (held->len > PC_KEYMEMO_DIGEST_MIN)
            held = &kmm_body[b + 4]; /* its digest */
        e->hash = m->hash(0, kmm_ctx[c].p, kmm_ctx[c].len, held->p, held->len);
        e->hash_known = 1;
    } else if (!e->hash_known) {
        e->hash = got;
        e->hash_known = 1;
    }
    MODEL_CHECK(got == e->hash);
}

static int kmm_get(struct kmm *m, unsigned pair)
{
    struct kmm_entry *e = &m->e[pair];
    if (!e->present) {
        m->misses++;
        return 0;
    }
    m->hits++;
    e->last_used = ++m->tick;
    return 1;
}

static int kmm_valid(const struct pc_keymemo_val *v)
{
    return v->n_uniq > 0 && v->keys_len > 0 && (v->n == 0 || v->uniq_of != NULL);
}

static void kmm_put(struct kmm *m, unsigned pair, const struct pc_keymemo_val *v)
{
    if (!kmm_valid(v))
        return; /* refused before the doorkeeper hears of it */
    struct kmm_entry *e = &m->e[pair];
    uint64_t *door = &m->door[(e->hash >> 17) & m->door_mask];
    if (*door != e->hash) {
        *door = e->hash;
        m->first_seen++;
        return;
    }
    unsigned c = pair / KMM_BODIES, b = pair % KMM_BODIES;
    size_t charge =
        m->fixed + v->n * sizeof(uint32_t) + kmm_ctx[c].len + kmm_held_len(b) + v->keys_len;
    if (charge > m->max_bytes / 4)
        return;
    if (e->present)
        kmm_remove(m, pair);
    while (m->bytes + charge > m->max_bytes && m->entries > 0) {
        unsigned lru = m->live[0];
        for (size_t j = 1; j < m->entries; j++) {
            if (m->e[m->live[j]].last_used < m->e[lru].last_used)
                lru = m->live[j];
        }
        kmm_remove(m, lru);
        m->evictions++;
    }
    e->present = 1;
    e->live_at = (unsigned)m->entries;
    m->live[m->entries] = pair;
    e->charge = charge;
    e->last_used = ++m->tick;
    e->v.n = v->n;
    e->v.n_uniq = v->n_uniq;
    e->v.keys_len = v->keys_len;
    e->v.keys = malloc(v->keys_len);
    MODEL_CHECK(e->v.keys != NULL);
    memcpy(e->v.keys, v->keys, v->keys_len);
    if (v->n > 0) {
        e->v.uniq_of = malloc(v->n * sizeof(uint32_t));
        MODEL_CHECK(e->v.uniq_of != NULL);
        memcpy(e->v.uniq_of, v->uniq_of, v->n * sizeof(uint32_t));
    }
    m->bytes += charge;
    m->entries++;
    m->puts++;
}

/* A value no other put had: one key, or a batch's keys; padded now and then to be refused
 * as too large; one in sixteen invalid (no keys, or a batch without its indexes). */
static void kmm_make_val(struct kmm *m, struct model_in *in, struct pc_keymemo_val *v,
                         struct kmm_val *buf)
{
    unsigned kind = model_u8(in), pad = model_u8(in);
    uint64_t serial = ++m->serial;
    size_t padding = pad >= 240 ? (size_t)(pad - 240) * 64 : 0;
    buf->n = kind < 160 ? 0 : 1 + kind % 8;
    buf->n_uniq = buf->n == 0 ? 1 : 1 + (size_t)model_u8(in) % buf->n;
    free(buf->uniq_of);
    buf->uniq_of = NULL;
    if (buf->n > 0) {
        buf->uniq_of = malloc(buf->n * sizeof(uint32_t));
        MODEL_CHECK(buf->uniq_of != NULL);
        uint64_t s = serial;
        for (size_t i = 0; i < buf->n; i++)
            buf->uniq_of[i] = (uint32_t)(model_next(&s) % buf->n_uniq);
    }
    free(buf->keys);
    buf->keys = malloc(buf->n_uniq * 32 + padding + 1);
    MODEL_CHECK(buf->keys != NULL);
    size_t at = 0;
    for (size_t j = 0; j < buf->n_uniq; j++) {
        at += (size_t)sprintf(buf->keys + at, "key-%llu-%zu", (unsigned long long)serial, j);
        if (j == 0 && padding > 0) {
            memset(buf->keys + at, 'p', padding);
            at += padding;
        }
        buf->keys[at++] = '\0';
    }
    buf->keys_len = at;
    *v = (struct pc_keymemo_val){buf->n, buf->n_uniq, buf->uniq_of, buf->keys, buf->keys_len};
    if (kind < 16) { /* invalid: each way the put must refuse */
        if (kind % 3 == 0)
            v->n_uniq = 0;
        else if (kind % 3 == 1)
            v->keys_len = 0;
        else
            *v = (struct pc_keymemo_val){2, 1, NULL, buf->keys, buf->keys_len};
    }
}

static void kmm_check_stats(const struct pc_keymemo *km, const struct kmm *m)
{
    struct pc_keymemo_stats st;
    pc_keymemo_stats(km, &st);
    MODEL_CHECK(st.entries == m->entries);
    MODEL_CHECK(st.bytes == m->bytes);
    MODEL_CHECK(st.hits == m->hits);
    MODEL_CHECK(st.misses == m->misses);
    MODEL_CHECK(st.puts == m->puts);
    MODEL_CHECK(st.evictions == m->evictions);
    MODEL_CHECK(st.first_seen == m->first_seen);
    MODEL_CHECK(st.bytes <= m->max_bytes);
}

/* A request: one of the fixed few (its context too) or one of the 1024 small bodies. */
static unsigned kmm_pair(struct model_in *in)
{
    unsigned c = model_u8(in), b = model_u8(in), body;
    if (b < 128)
        body = b % KMM_FIXED_BODIES;
    else
        body = KMM_FIXED_BODIES + ((((b & 0x7F) << 8) | model_u8(in)) % 1024);
    return (c % KMM_CTXS) * KMM_BODIES + body;
}

/*
 * Runs the requests ops[0..n) on a new pc_keymemo and on the model; MODEL_FAIL on the first
 * difference. Returns the number of requests run.
 */
static size_t keymemo_model_run(const uint8_t *ops, size_t n)
{
    kmm_universe();
    struct model_in in = {ops, n, 0};
    unsigned cfg = model_u8(&in);
    struct kmm *m = calloc(1, sizeof *m);
    MODEL_CHECK(m != NULL);
    m->max_bytes = kmm_bounds[cfg & 3];
    m->hash = kmm_hashes[(cfg >> 2) & 3];
    m->fixed = kmm_fixed_charge();
    size_t slots = 1024;
    while (slots < m->max_bytes / 512 && slots < ((size_t)1 << 24))
        slots *= 2;
    m->door = calloc(slots, sizeof *m->door);
    MODEL_CHECK(m->door != NULL);
    m->door_mask = slots - 1;
    struct pc_keymemo *km = pc_keymemo_new(m->max_bytes, m->hash);
    MODEL_CHECK(km != NULL);
    struct kmm_val buf = {0};
    size_t steps = 0;
    for (model_step = 0; model_more(&in); model_step++, steps++) {
        unsigned op = model_u8(&in);
        unsigned pair = kmm_pair(&in), c = pair / KMM_BODIES, b = pair % KMM_BODIES;
        const struct kmm_bytes *ctx = &kmm_ctx[c], *body = &kmm_body[b];
        struct pc_keymemo_probe probe;
        struct pc_keymemo_val out;
        memset(&out, 0xA5, sizeof out); /* only a hit writes it */
        int got = pc_keymemo_get(km, ctx->p, ctx->len, body->p, body->len, &probe, &out);
        MODEL_CHECK(probe.digested == (body->len > PC_KEYMEMO_DIGEST_MIN));
        kmm_check_hash(m, pair, probe.hash);
        int found = kmm_get(m, pair);
        MODEL_CHECK(got == found);
        if (found) {
            const struct kmm_val *want = &m->e[pair].v;
            MODEL_CHECK(out.n == want->n && out.n_uniq == want->n_uniq);
            MODEL_CHECK(out.keys_len == want->keys_len);
            MODEL_CHECK(memcmp(out.keys, want->keys, want->keys_len) == 0);
            if (want->n == 0)
                MODEL_CHECK(out.uniq_of == NULL);
            else
                MODEL_CHECK(memcmp(out.uniq_of, want->uniq_of, want->n * sizeof(uint32_t)) == 0);
        }
        /* As the proxy does: a put after a miss. Now and then one after a hit too: a new
         * value for the same request must replace the old one (when admitted). The value's
         * bytes are read either way, so the default hash's random seed (which decides
         * doorkeeper slot collisions, hence some hits) never shifts the later operations. */
        if (op % 8 >= 2) {
            struct pc_keymemo_val v;
            kmm_make_val(m, &in, &v, &buf);
            if (!found || op >= 128) {
                pc_keymemo_put(km, &probe, ctx->p, ctx->len, body->p, body->len, &v);
                kmm_put(m, pair, &v);
            }
        }
        kmm_check_stats(km, m);
    }
    pc_keymemo_free(km);
    for (unsigned i = 0; i < KMM_PAIRS; i++)
        kmm_val_free(&m->e[i].v);
    kmm_val_free(&buf);
    free(m->door);
    free(m);
    return steps;
}

#endif
