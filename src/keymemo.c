/*
 * keymemo: the memo of derived keys (see the header).
 *
 * A chained hash table (power-of-two buckets, doubled when the load passes 1) and a doubly
 * linked LRU list. Each entry is one allocation: the bookkeeping, the instances' key
 * indexes, then the context, the body and the keys. The hash is XXH64's construction
 * (four lanes of multiply-rotate over 32-byte blocks, then the tail and an avalanche):
 * several GB/s, so an 8 KB body costs about a microsecond against the ten or more that
 * reading and hashing it for its key cost. A body over PC_KEYMEMO_DIGEST_MIN is replaced
 * by its SHA-256 (flagged, so a 32-byte body never matches a digest) before any of that.
 */
#include "predcache/keymemo.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <openssl/evp.h>

#include "predcache/buf.h"
#include "predcache/list.h"

#define ENTRY_OVERHEAD 64       /* charged per entry besides its own bytes: malloc and bucket */
#define DOOR_BYTES_PER_SLOT 512 /* one doorkeeper slot per this many bytes of the bound */
#define DOOR_MIN_SLOTS 1024

struct entry {
    struct entry *next_in_bucket;
    struct pc_list lru; /* in m->lru: the first is the most recent */
    uint64_t hash;
    int digested;
    size_t ctx_len, body_len, n, n_uniq, keys_len, charge;
    /* then: uint32_t uniq_of[n], ctx, body, keys */
};

struct pc_keymemo {
    pc_keymemo_hash_fn hash;
    uint64_t seed;
    struct entry **buckets;
    size_t n_buckets, n_entries, bytes, max_bytes;
    struct pc_list lru; /* of struct entry */
    uint64_t *door;     /* recent hashes, direct-mapped: a put is admitted when its is there */
    size_t door_mask;
    uint64_t hits, misses, puts, evictions, first_seen;
};

/* ---- the hash ---------------------------------------------------------------------- */

#define P1 0x9E3779B185EBCA87ull
#define P2 0xC2B2AE3D27D4EB4Full
#define P3 0x165667B19E3779F9ull
#define P4 0x85EBCA77C2B2AE63ull
#define P5 0x27D4EB2F165667C5ull

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t read64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t read32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t lane(uint64_t acc, uint64_t in)
{
    return rotl(acc + in * P2, 31) * P1;
}

static inline uint64_t merge(uint64_t h, uint64_t v)
{
    return (h ^ lane(0, v)) * P1 + P4;
}

static uint64_t xxh64(uint64_t seed, const char *p, size_t n)
{
    const char *end = p + n;
    uint64_t h;
    if (n >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = lane(v1, read64(p));
            v2 = lane(v2, read64(p + 8));
            v3 = lane(v3, read64(p + 16));
            v4 = lane(v4, read64(p + 24));
            p += 32;
        } while (end - p >= 32);
        h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
        h = merge(h, v1);
        h = merge(h, v2);
        h = merge(h, v3);
        h = merge(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)n;
    for (; end - p >= 8; p += 8)
        h = rotl(h ^ lane(0, read64(p)), 27) * P1 + P4;
    if (end - p >= 4) {
        h = rotl(h ^ (uint64_t)read32(p) * P1, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++)
        h = rotl(h ^ (uint64_t)(unsigned char)*p * P5, 11) * P1;
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t pc_keymemo_hash(uint64_t seed, const char *ctx, size_t ctx_len, const char *body,
                         size_t len)
{
    return xxh64(xxh64(seed, ctx, ctx_len), body, len);
}

/* ---- the table --------------------------------------------------------------------- */

static uint32_t *uniq_of(struct entry *e)
{
    return (uint32_t *)(void *)(e + 1);
}

static char *ctx_of(struct entry *e)
{
    return (char *)(uniq_of(e) + e->n);
}

static char *body_of(struct entry *e)
{
    return ctx_of(e) + e->ctx_len;
}

static char *keys_of(struct entry *e)
{
    return body_of(e) + e->body_len;
}

static uint64_t random_seed(const void *salt)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec * P1 ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)salt;
    }
    return seed;
}

struct pc_keymemo *pc_keymemo_new(size_t max_bytes, pc_keymemo_hash_fn hash)
{
    if (max_bytes == 0)
        return NULL;
    struct pc_keymemo *m = calloc(1, sizeof *m);
    if (m == NULL)
        return NULL;
    pc_list_init(&m->lru);
    m->hash = hash != NULL ? hash : pc_keymemo_hash;
    m->seed = random_seed(m);
    m->max_bytes = max_bytes;
    m->n_buckets = 64;
    m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
    size_t slots = DOOR_MIN_SLOTS;
    while (slots < max_bytes / DOOR_BYTES_PER_SLOT && slots < ((size_t)1 << 24))
        slots *= 2;
    m->door = calloc(slots, sizeof *m->door);
    m->door_mask = slots - 1;
    if (m->buckets == NULL || m->door == NULL) {
        pc_keymemo_free(m);
        return NULL;
    }
    return m;
}

void pc_keymemo_free(struct pc_keymemo *m)
{
    if (m == NULL)
        return;
    for (struct pc_list *i = m->lru.next, *next; i != &m->lru; i = next) {
        next = i->next;
        free(pc_list_entry(i, struct entry, lru));
    }
    free(m->buckets);
    free(m->door);
    free(m);
}

/* The bucket slot holding the entry for (ctx, body), or the empty slot at its chain's end. */
static struct entry **slot(struct pc_keymemo *m, uint64_t h, int digested, const char *ctx,
                           size_t ctx_len, const char *body, size_t len)
{
    struct entry **p = &m->buckets[h & (m->n_buckets - 1)];
    for (; *p != NULL; p = &(*p)->next_in_bucket) {
        struct entry *e = *p;
        if (e->hash == h && e->digested == digested && e->ctx_len == ctx_len &&
            e->body_len == len && (ctx_len == 0 || memcmp(ctx_of(e), ctx, ctx_len) == 0) &&
            (len == 0 || memcmp(body_of(e), body, len) == 0))
            break;
    }
    return p;
}

/* Takes e out of its bucket and the list, and frees it. */
static void drop(struct pc_keymemo *m, struct entry *e)
{
    struct entry **p = &m->buckets[e->hash & (m->n_buckets - 1)];
    while (*p != e)
        p = &(*p)->next_in_bucket;
    *p = e->next_in_bucket;
    pc_list_remove(&e->lru);
    m->bytes -= e->charge;
    m->n_entries--;
    free(e);
}

/* Doubles the buckets; on no memory the table just stays as it is. */
static void grow(struct pc_keymemo *m)
{
    size_t nb = m->n_buckets * 2;
    struct entry **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        for (struct entry *e = m->buckets[i], *next; e != NULL; e = next) {
            next = e->next_in_bucket;
            struct entry **to = &b[e->hash & (nb - 1)];
            e->next_in_bucket = *to;
            *to = e;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = nb;
}

int pc_keymemo_get(struct pc_keymemo *m, const char *ctx, size_t ctx_len, const char *body,
                   size_t len, struct pc_keymemo_probe *probe, struct pc_keymemo_val *out)
{
    probe->hash = 0;
    probe->digested = 0;
    if (m == NULL)
        return 0;
    if (len > PC_KEYMEMO_DIGEST_MIN) {
        if (EVP_Digest(body, len, probe->digest, NULL, pc_sha256_md(), NULL) != 1) {
            m->misses++;
            probe->digested = -1; /* no digest: nothing to remember either */
            return 0;
        }
        probe->digested = 1;
        body = (const char *)probe->digest;
        len = sizeof probe->digest;
    }
    probe->hash = m->hash(m->seed, ctx, ctx_len, body, len);
    struct entry *e = *slot(m, probe->hash, probe->digested, ctx, ctx_len, body, len);
    if (e == NULL) {
        m->misses++;
        return 0;
    }
    m->hits++;
    pc_list_remove(&e->lru);
    pc_list_push_front(&m->lru, &e->lru);
    out->n = e->n;
    out->n_uniq = e->n_uniq;
    out->uniq_of = e->n > 0 ? uniq_of(e) : NULL;
    out->keys = keys_of(e);
    out->keys_len = e->keys_len;
    return 1;
}

void pc_keymemo_put(struct pc_keymemo *m, const struct pc_keymemo_probe *probe, const char *ctx,
                    size_t ctx_len, const char *body, size_t len, const struct pc_keymemo_val *val)
{
    if (m == NULL || val->n_uniq == 0 || val->keys_len == 0 ||
        (val->n > 0 && val->uniq_of == NULL) || probe->digested < 0)
        return;
    if (probe->digested) {
        body = (const char *)probe->digest;
        len = sizeof probe->digest;
    }
    /* The seed makes 0 as likely as any hash: an empty slot admits nothing but hash 0. */
    uint64_t *door = &m->door[(probe->hash >> 17) & m->door_mask];
    if (*door != probe->hash) {
        *door = probe->hash;
        m->first_seen++;
        return;
    }
    size_t idx_bytes = val->n * sizeof(uint32_t);
    size_t own = sizeof(struct entry) + idx_bytes + ctx_len + len + val->keys_len;
    size_t charge = own + ENTRY_OVERHEAD;
    if (val->n > UINT32_MAX || charge > m->max_bytes / 4 || charge < own)
        return;
    struct entry **p = slot(m, probe->hash, probe->digested, ctx, ctx_len, body, len);
    if (*p != NULL)
        drop(m, *p);
    while (m->bytes + charge > m->max_bytes && !pc_list_empty(&m->lru)) {
        drop(m, pc_list_entry(m->lru.prev, struct entry, lru));
        m->evictions++;
    }
    struct entry *e = malloc(own);
    if (e == NULL)
        return;
    *e = (struct entry){.hash = probe->hash,
                        .digested = probe->digested,
                        .ctx_len = ctx_len,
                        .body_len = len,
                        .n = val->n,
                        .n_uniq = val->n_uniq,
                        .keys_len = val->keys_len,
                        .charge = charge};
    if (idx_bytes > 0)
        memcpy(uniq_of(e), val->uniq_of, idx_bytes);
    if (ctx_len > 0)
        memcpy(ctx_of(e), ctx, ctx_len);
    if (len > 0)
        memcpy(body_of(e), body, len);
    memcpy(keys_of(e), val->keys, val->keys_len);
    if (m->n_entries >= m->n_buckets)
        grow(m);
    struct entry **b = &m->buckets[e->hash & (m->n_buckets - 1)];
    e->next_in_bucket = *b;
    *b = e;
    pc_list_push_front(&m->lru, &e->lru);
    m->bytes += charge;
    m->n_entries++;
    m->puts++;
}

void pc_keymemo_stats(const struct pc_keymemo *m, struct pc_keymemo_stats *out)
{
    memset(out, 0, sizeof *out);
    if (m == NULL)
        return;
    out->hits = m->hits;
    out->misses = m->misses;
    out->puts = m->puts;
    out->evictions = m->evictions;
    out->first_seen = m->first_seen;
    out->bytes = m->bytes;
    out->entries = m->n_entries;
}
