/*
 * l1: the in-process tier (see the header).
 *
 * Each shard: a chained hash table (power-of-two buckets, doubled when the load passes 1)
 * and a doubly linked LRU list, under one mutex. A key goes to shard hash % 16; keys are
 * SHA-256 hex strings, so FNV-1a over them spreads well. Values are copied in and out
 * under the lock: an 8 KB copy costs less than a Redis round trip by two orders.
 */
#include "predcache/l1.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/list.h"

#define N_SHARDS 16
#define ENTRY_OVERHEAD 64 /* bookkeeping charged per entry, besides key and value */

struct l1_entry {
    struct l1_entry *next_in_bucket;
    struct pc_list lru; /* in the shard's lru: the first is the most recent */
    uint64_t hash;
    int64_t born_ms;
    int refill_asked; /* a caller was told to read it again (pc_l1_get_due) */
    size_t key_len, len;
    char *key; /* key_len + 1 bytes, then the value, in one allocation */
};

struct shard {
    pthread_mutex_t mu;
    struct l1_entry **buckets;
    size_t n_buckets, n_entries, bytes, max_bytes;
    struct pc_list lru; /* of struct l1_entry */
    uint64_t hits, misses, puts, evictions, refills;
    uint64_t epoch; /* removals so far (pc_l1_del): a refill given an older one is dropped */
};

struct pc_l1 {
    int max_age_ms;
    struct pc_clock clock;
    struct shard shards[N_SHARDS];
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static size_t charge(const struct l1_entry *e)
{
    return e->key_len + e->len + ENTRY_OVERHEAD;
}

struct pc_l1 *pc_l1_new(size_t max_bytes, int max_age_ms, const struct pc_clock *clock)
{
    if (max_bytes == 0)
        return NULL;
    struct pc_l1 *l1 = calloc(1, sizeof *l1);
    if (l1 == NULL)
        return NULL;
    l1->max_age_ms = max_age_ms;
    if (clock != NULL)
        l1->clock = *clock;
    for (size_t i = 0; i < N_SHARDS; i++) /* all first: pc_l1_free walks every shard */
        pc_list_init(&l1->shards[i].lru);
    for (size_t i = 0; i < N_SHARDS; i++) {
        struct shard *s = &l1->shards[i];
        pthread_mutex_init(&s->mu, NULL);
        s->max_bytes = max_bytes / N_SHARDS;
        s->n_buckets = 64;
        s->buckets = calloc(s->n_buckets, sizeof *s->buckets);
        if (s->buckets == NULL) {
            pc_l1_free(l1);
            return NULL;
        }
    }
    return l1;
}

void pc_l1_free(struct pc_l1 *l1)
{
    if (l1 == NULL)
        return;
    for (size_t i = 0; i < N_SHARDS; i++) {
        struct shard *s = &l1->shards[i];
        for (struct pc_list *it = s->lru.next, *next; it != &s->lru; it = next) {
            next = it->next;
            free(pc_list_entry(it, struct l1_entry, lru));
        }
        free(s->buckets);
        pthread_mutex_destroy(&s->mu);
    }
    free(l1);
}

static struct shard *shard_of(struct pc_l1 *l1, uint64_t h)
{
    return &l1->shards[h % N_SHARDS];
}

/* The bucket slot holding e's pointer, or the empty slot where key would go. */
static struct l1_entry **slot(struct shard *s, uint64_t h, const char *key, size_t kl)
{
    struct l1_entry **p = &s->buckets[(h / N_SHARDS) & (s->n_buckets - 1)];
    while (*p != NULL &&
           ((*p)->hash != h || (*p)->key_len != kl || memcmp((*p)->key, key, kl) != 0))
        p = &(*p)->next_in_bucket;
    return p;
}

/* Unlinks and frees the entry at *p (a bucket slot). */
static void remove_at(struct shard *s, struct l1_entry **p)
{
    struct l1_entry *e = *p;
    *p = e->next_in_bucket;
    pc_list_remove(&e->lru);
    s->n_entries--;
    s->bytes -= charge(e);
    free(e);
}

static void grow(struct shard *s)
{
    size_t n = s->n_buckets * 2;
    struct l1_entry **b = calloc(n, sizeof *b);
    if (b == NULL)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < s->n_buckets; i++) {
        for (struct l1_entry *e = s->buckets[i], *next; e != NULL; e = next) {
            next = e->next_in_bucket;
            struct l1_entry **head = &b[(e->hash / N_SHARDS) & (n - 1)];
            e->next_in_bucket = *head;
            *head = e;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->n_buckets = n;
}

int pc_l1_get(struct pc_l1 *l1, const char *key, struct pc_buf *out)
{
    return pc_l1_get_due(l1, key, out, NULL, NULL);
}

int pc_l1_get_due(struct pc_l1 *l1, const char *key, struct pc_buf *out, int *due, uint64_t *epoch)
{
    if (due != NULL)
        *due = 0;
    if (l1 == NULL)
        return 0;
    size_t kl = strlen(key);
    uint64_t h = fnv1a(key, kl);
    struct shard *s = shard_of(l1, h);
    int found = 0;
    pthread_mutex_lock(&s->mu);
    struct l1_entry **p = slot(s, h, key, kl);
    struct l1_entry *e = *p;
    int64_t age = e != NULL ? pc_clock_ms(&l1->clock) - e->born_ms : 0;
    if (e != NULL && age > l1->max_age_ms) {
        /* Past its time in this tier: Redis says what is current. remove_at leaves *p on
         * the next entry of the chain, another key's: e is the answer, never *p. */
        remove_at(s, p);
        e = NULL;
    }
    if (e != NULL && pc_buf_append(out, e->key + kl + 1, e->len) == 0) {
        pc_list_remove(&e->lru);
        pc_list_push_front(&s->lru, &e->lru);
        found = 1;
        if (due != NULL && !e->refill_asked && age > (int64_t)l1->max_age_ms * 3 / 4) {
            e->refill_asked = 1;
            *due = 1;
            *epoch = s->epoch;
        }
    }
    if (found)
        s->hits++;
    else
        s->misses++;
    pthread_mutex_unlock(&s->mu);
    return found;
}

/* Stores a copy; with epoch, only when no removal of the shard came after it (checked
 * under the shard's lock, where pc_l1_del counts them). */
static void put(struct pc_l1 *l1, const char *key, const char *value, size_t len,
                const uint64_t *epoch)
{
    size_t kl = strlen(key);
    uint64_t h = fnv1a(key, kl);
    struct shard *s = shard_of(l1, h);
    struct l1_entry *e = NULL;
    /* One value must not flush a quarter of its shard. Refused or not, an older value of
     * the key goes: the tier must not go on answering what was just replaced. */
    if (kl + len + ENTRY_OVERHEAD > s->max_bytes / 4 ||
        (e = malloc(sizeof *e + kl + 1 + len)) == NULL) {
        pc_l1_del(l1, key);
        return;
    }
    memset(e, 0, sizeof *e);
    e->key = (char *)(e + 1);
    memcpy(e->key, key, kl + 1);
    if (len > 0)
        memcpy(e->key + kl + 1, value, len);
    e->key_len = kl;
    e->len = len;
    e->hash = h;
    e->born_ms = pc_clock_ms(&l1->clock);
    pthread_mutex_lock(&s->mu);
    if (epoch != NULL && *epoch != s->epoch) {
        pthread_mutex_unlock(&s->mu);
        free(e);
        return;
    }
    struct l1_entry **p = slot(s, h, key, kl);
    if (*p != NULL)
        remove_at(s, p);
    while (!pc_list_empty(&s->lru) && s->bytes + charge(e) > s->max_bytes) {
        struct l1_entry *old = pc_list_entry(s->lru.prev, struct l1_entry, lru);
        remove_at(s, slot(s, old->hash, old->key, old->key_len));
        s->evictions++;
    }
    if (s->n_entries >= s->n_buckets)
        grow(s);
    p = &s->buckets[(h / N_SHARDS) & (s->n_buckets - 1)];
    e->next_in_bucket = *p;
    *p = e;
    pc_list_push_front(&s->lru, &e->lru);
    s->n_entries++;
    s->bytes += charge(e);
    s->puts++;
    s->refills += epoch != NULL;
    pthread_mutex_unlock(&s->mu);
}

void pc_l1_put(struct pc_l1 *l1, const char *key, const char *value, size_t len)
{
    if (l1 != NULL)
        put(l1, key, value, len, NULL);
}

void pc_l1_refill(struct pc_l1 *l1, const char *key, const char *value, size_t len, uint64_t epoch)
{
    if (l1 == NULL)
        return;
    if (value == NULL) /* gone from Redis: gone here (a removal is always safe) */
        pc_l1_del(l1, key);
    else
        put(l1, key, value, len, &epoch);
}

void pc_l1_del(struct pc_l1 *l1, const char *key)
{
    if (l1 == NULL)
        return;
    size_t kl = strlen(key);
    uint64_t h = fnv1a(key, kl);
    struct shard *s = shard_of(l1, h);
    pthread_mutex_lock(&s->mu);
    struct l1_entry **p = slot(s, h, key, kl);
    if (*p != NULL)
        remove_at(s, p);
    s->epoch++; /* whether it was here or not: a refill read before this must not land */
    pthread_mutex_unlock(&s->mu);
}

void pc_l1_stats(struct pc_l1 *l1, struct pc_l1_stats *out)
{
    memset(out, 0, sizeof *out);
    if (l1 == NULL)
        return;
    for (size_t i = 0; i < N_SHARDS; i++) {
        struct shard *s = &l1->shards[i];
        pthread_mutex_lock(&s->mu);
        out->hits += s->hits;
        out->misses += s->misses;
        out->puts += s->puts;
        out->evictions += s->evictions;
        out->refills += s->refills;
        out->bytes += s->bytes;
        out->entries += s->n_entries;
        pthread_mutex_unlock(&s->mu);
    }
}
