/*
 * keymemo: remembers which cache keys a request derived to, so that the same request sent
 * again byte for byte is keyed without reading its body again.
 *
 * Deriving a key reads and canonicalizes the whole body and hashes it with SHA-256: about
 * half of what a hit costs at 8 KB. Clients that send an input again usually send the same
 * bytes, so a bounded map from (context, body bytes) to the derived keys answers them with
 * one fast hash of the bytes and one memcmp. The context is every other thing the keys
 * depend on (route, key path, query, namespace with its generations, ...): the caller
 * joins them into one byte string, and an entry is found only when context and body are
 * both equal to what was stored, byte for byte, so the memo can never answer a key that
 * derivation would not. The 64-bit hash only picks the bucket; it is seeded per memo.
 * A body over PC_KEYMEMO_DIGEST_MIN bytes is held as its SHA-256 instead of its bytes
 * (hashing is several times cheaper than reading it for its key, and a large body's
 * entry stays small): two bodies with one SHA-256 would already share a cache key.
 *
 * One memo per worker, used from that worker's thread only: no locks. Bounded in bytes
 * (bodies, contexts, keys and bookkeeping), least recently used out first. A request is
 * remembered only the second time its bytes come in a while (a doorkeeper of recent
 * hashes decides): bodies seen once, such as a stream of misses, are never copied in and
 * never push out the entries that repeat.
 */
#ifndef PREDCACHE_KEYMEMO_H
#define PREDCACHE_KEYMEMO_H

#include <stddef.h>
#include <stdint.h>

struct pc_keymemo;

/* The keys of one request: a whole-body key (n == 0), or the keys of a batch's instances. */
struct pc_keymemo_val {
    size_t n;                /* instances in the batch; 0 for a whole-body key */
    size_t n_uniq;           /* distinct keys: 1 when n == 0 */
    const uint32_t *uniq_of; /* [n]: which distinct key instance i has (NULL when n == 0) */
    const char *keys;        /* opaque to the memo: a whole-body key, NUL and kind; a batch's
                                n_uniq 32-byte key digests (proxy_batch.c) */
    size_t keys_len;         /* bytes of keys, NULs included */
};

struct pc_keymemo_stats {
    uint64_t hits, misses, puts, evictions;
    uint64_t first_seen; /* puts declined: the bytes were not seen recently */
    size_t bytes, entries;
};

#define PC_KEYMEMO_DIGEST_MIN 16384
#define PC_KEYMEMO_DIGEST_LEN 32

/* Where a probe landed: handed from pc_keymemo_get to pc_keymemo_put for the same request. */
struct pc_keymemo_probe {
    uint64_t hash;
    int digested; /* the body is over PC_KEYMEMO_DIGEST_MIN: digest stands for it */
    unsigned char digest[PC_KEYMEMO_DIGEST_LEN];
};

typedef uint64_t (*pc_keymemo_hash_fn)(uint64_t seed, const char *ctx, size_t ctx_len,
                                       const char *body, size_t len);

/*
 * max_bytes bounds everything held; NULL when it is 0 or memory runs out. hash: NULL for
 * the default (tests pass their own to force collisions).
 */
struct pc_keymemo *pc_keymemo_new(size_t max_bytes, pc_keymemo_hash_fn hash);
void pc_keymemo_free(struct pc_keymemo *m); /* NULL ok */

/*
 * 1 and *out (borrowed: valid until the next put or free) when ctx and body were stored;
 * else 0. NULL m: 0. probe is filled either way.
 */
int pc_keymemo_get(struct pc_keymemo *m, const char *ctx, size_t ctx_len, const char *body,
                   size_t len, struct pc_keymemo_probe *probe, struct pc_keymemo_val *out);

/*
 * Stores a copy of ctx, body and val (replacing an entry for the same ctx and body) when
 * the doorkeeper saw the probe's hash recently; else only notes the hash. An entry larger
 * than a quarter of the bound is not kept. NULL m: nothing. val must not point into the
 * memo (a get's *out): the entry it points into may be the one replaced.
 */
void pc_keymemo_put(struct pc_keymemo *m, const struct pc_keymemo_probe *probe, const char *ctx,
                    size_t ctx_len, const char *body, size_t len, const struct pc_keymemo_val *val);

void pc_keymemo_stats(const struct pc_keymemo *m, struct pc_keymemo_stats *out);

/* The default hash: 64 bits, four independent lanes of 8-byte words, seeded. */
uint64_t pc_keymemo_hash(uint64_t seed, const char *ctx, size_t ctx_len, const char *body,
                         size_t len);

#endif
