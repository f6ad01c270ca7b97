/*
 * l1_model: pc_l1 against a reference model, one operation at a time (see model.h).
 *
 * The model is the specification written out plainly: an array indexed by key, each with
 * its value, born_ms and last_used tick; a shard is fnv1a(key) % 16 with max_bytes / 16 of
 * budget, an entry costs key_len + len + 64 bytes, a value over a quarter of its shard's
 * budget is not kept, a put evicts its shard's least recently used entries until it fits,
 * and a get finds nothing (and drops the entry) once now - born_ms > max_age_ms. No hash
 * chains, no list: what it says is found, by key, or not at all. Reading ahead: a get_due
 * of an entry older than 3/4 of max_age_ms that nobody was told of yet says due, with its
 * shard's count of removals; a refill with a value stores it only when that count has not
 * moved (a del of any key of the shard, or a put too large to keep, moves it), and a
 * refill of nothing removes the key.
 *
 * The bytes: the first picks the bound and max_age_ms; each operation is a kind, then a
 * key (one of a few, one of a few that share a shard and a bucket chain up to 1024 buckets,
 * or one of 4096 that make the shards grow) and what the kind needs. After every step
 * get's answer (found, and then the exact bytes) and every counter of pc_l1_stats must be
 * the model's.
 */
#ifndef PREDCACHE_TEST_L1_MODEL_H
#define PREDCACHE_TEST_L1_MODEL_H

#include "model.h"

#include <string.h>

#include "predcache/buf.h"
#include "predcache/l1.h"

#define L1M_SHARDS 16
#define L1M_OVERHEAD 64
#define L1M_SMALL 8
#define L1M_COLLIDE 8
#define L1M_LARGE 4096
#define L1M_KEYS (L1M_SMALL + L1M_COLLIDE + L1M_LARGE)
#define L1M_KEY_MAX 16

/* Four bounds: 512 B shards (every put evicts, many values refused) up to 128 KB shards
 * (hundreds of entries a shard: its 64 buckets double to 256 and more). */
static const size_t l1m_bounds[4] = {8 * 1024, 32 * 1024, 256 * 1024, 2 * 1024 * 1024};
static const int l1m_ages[4] = {0, 3, 50, 1000};

struct l1m_entry {
    int present;
    char *val;
    size_t len;
    int64_t born_ms;
    uint64_t last_used;
    int asked; /* a get_due said due */
};

/* The keys, their shards, and the key ids grouped by shard: the same for every run. */
struct l1m_keys {
    char name[L1M_KEYS][L1M_KEY_MAX];
    unsigned shard_of[L1M_KEYS];
    unsigned in_shard[L1M_KEYS], shard_start[L1M_SHARDS + 1];
};

struct l1m {
    const struct l1m_keys *keys;
    struct l1m_entry e[L1M_KEYS];
    size_t shard_bytes[L1M_SHARDS], shard_max;
    uint64_t epoch[L1M_SHARDS]; /* removals by del, per shard */
    uint64_t given[L1M_KEYS];   /* the epoch the last due get of a key gave */
    uint64_t refills;
    size_t entries;
    int max_age_ms;
    int64_t now_ms;
    uint64_t tick, serial;
    uint64_t hits, misses, puts, evictions;
};

/* Keys c<n> that agree on the low 14 bits of their hash: one shard, and one bucket chain
 * while the shard has up to 1024 buckets. Found once per process by brute force. */
static const char *l1m_colliding(unsigned i)
{
    static char keys[L1M_COLLIDE][L1M_KEY_MAX];
    static int found;
    if (!found) {
        model_colliding(keys[0], L1M_KEY_MAX, L1M_COLLIDE, "c", 0x3FFF);
        found = 1;
    }
    return keys[i];
}

static int64_t l1m_now(void *arg)
{
    return *(const int64_t *)arg;
}

static const struct l1m_keys *l1m_keys(void)
{
    static struct l1m_keys keys;
    static int built;
    if (built)
        return &keys;
    built = 1;
    for (unsigned i = 0; i < L1M_KEYS; i++) {
        char *k = keys.name[i];
        if (i < L1M_SMALL)
            snprintf(k, L1M_KEY_MAX, "s%u", i);
        else if (i < L1M_SMALL + L1M_COLLIDE)
            snprintf(k, L1M_KEY_MAX, "%s", l1m_colliding(i - L1M_SMALL));
        else
            snprintf(k, L1M_KEY_MAX, "k%u", i - L1M_SMALL - L1M_COLLIDE);
        keys.shard_of[i] = (unsigned)(model_fnv1a(k, strlen(k)) % L1M_SHARDS);
    }
    unsigned at = 0;
    for (unsigned s = 0; s < L1M_SHARDS; s++) {
        keys.shard_start[s] = at;
        for (unsigned i = 0; i < L1M_KEYS; i++)
            if (keys.shard_of[i] == s)
                keys.in_shard[at++] = i;
    }
    keys.shard_start[L1M_SHARDS] = at;
    return &keys;
}

static void l1m_init(struct l1m *m, size_t max_bytes, int max_age_ms)
{
    memset(m, 0, sizeof *m);
    m->keys = l1m_keys();
    m->shard_max = max_bytes / L1M_SHARDS;
    m->max_age_ms = max_age_ms;
    m->now_ms = 1000000;
}

static size_t l1m_charge(const struct l1m *m, unsigned k)
{
    return strlen(m->keys->name[k]) + m->e[k].len + L1M_OVERHEAD;
}

static void l1m_remove(struct l1m *m, unsigned k)
{
    m->shard_bytes[m->keys->shard_of[k]] -= l1m_charge(m, k);
    m->entries--;
    free(m->e[k].val);
    memset(&m->e[k], 0, sizeof m->e[k]);
}

/* The model's get: 1 and *val, *len when found and young enough; *due as get_due says
 * (NULL: a plain get, which tells nobody). */
static int l1m_get(struct l1m *m, unsigned k, const char **val, size_t *len, int *due)
{
    if (due != NULL)
        *due = 0;
    struct l1m_entry *e = &m->e[k];
    if (e->present && m->now_ms - e->born_ms > m->max_age_ms)
        l1m_remove(m, k); /* too old for this tier: gone, and not counted an eviction */
    if (!e->present) {
        m->misses++;
        return 0;
    }
    e->last_used = ++m->tick;
    m->hits++;
    *val = e->val;
    *len = e->len;
    if (due != NULL && !e->asked && m->now_ms - e->born_ms > (int64_t)m->max_age_ms * 3 / 4) {
        e->asked = 1;
        *due = 1;
        m->given[k] = m->epoch[m->keys->shard_of[k]];
    }
    return 1;
}

static void l1m_del(struct l1m *m, unsigned k)
{
    if (m->e[k].present)
        l1m_remove(m, k);
    m->epoch[m->keys->shard_of[k]]++;
}

static void l1m_put(struct l1m *m, unsigned k, const char *val, size_t len)
{
    unsigned s = m->keys->shard_of[k];
    size_t charge = strlen(m->keys->name[k]) + len + L1M_OVERHEAD;
    /* A newer value replaces the older one, even when it is itself too large to keep:
     * the tier then has none for the key. */
    if (charge > m->shard_max / 4) {
        l1m_del(m, k);
        return;
    }
    if (m->e[k].present)
        l1m_remove(m, k);
    while (m->shard_bytes[s] + charge > m->shard_max) {
        unsigned lru = L1M_KEYS;
        for (unsigned j = m->keys->shard_start[s]; j < m->keys->shard_start[s + 1]; j++) {
            unsigned i = m->keys->in_shard[j];
            if (m->e[i].present && (lru == L1M_KEYS || m->e[i].last_used < m->e[lru].last_used))
                lru = i;
        }
        if (lru == L1M_KEYS)
            break;
        l1m_remove(m, lru);
        m->evictions++;
    }
    struct l1m_entry *e = &m->e[k];
    e->val = malloc(len ? len : 1);
    MODEL_CHECK(e->val != NULL);
    if (len > 0)
        memcpy(e->val, val, len);
    e->len = len;
    e->present = 1;
    e->born_ms = m->now_ms;
    e->asked = 0;
    e->last_used = ++m->tick;
    m->shard_bytes[s] += charge;
    m->entries++;
    m->puts++;
}

/* A key: one of a few, one of the colliding few, or one of the 4096. */
static unsigned l1m_key(struct model_in *in)
{
    unsigned b = model_u8(in);
    if (b < 64)
        return b % L1M_SMALL;
    if (b < 128)
        return L1M_SMALL + b % L1M_COLLIDE;
    unsigned wide = ((b & 0x7F) << 8) | model_u8(in);
    return L1M_SMALL + L1M_COLLIDE + wide % L1M_LARGE;
}

/* Mostly small values; one in eight sized against the shard's quarter, a fifth of those
 * over it (refused). */
static size_t l1m_len(struct model_in *in, size_t shard_max)
{
    unsigned b = model_u8(in);
    if (b < 224)
        return b % 64;
    return (size_t)(b - 224) * (shard_max / 4 * 5 / 4) / 31;
}

static void l1m_check_stats(struct pc_l1 *l1, const struct l1m *m)
{
    struct pc_l1_stats st;
    pc_l1_stats(l1, &st);
    size_t bytes = 0;
    for (unsigned s = 0; s < L1M_SHARDS; s++)
        bytes += m->shard_bytes[s];
    MODEL_CHECK(st.entries == m->entries);
    MODEL_CHECK(st.bytes == bytes);
    MODEL_CHECK(st.hits == m->hits);
    MODEL_CHECK(st.misses == m->misses);
    MODEL_CHECK(st.puts == m->puts);
    MODEL_CHECK(st.evictions == m->evictions);
    MODEL_CHECK(st.refills == m->refills);
}

/*
 * Runs the operations ops[0..n) on a new pc_l1 and on the model; MODEL_FAIL on the first
 * difference. Returns the number of operations run.
 */
static size_t l1_model_run(const uint8_t *ops, size_t n)
{
    struct model_in in = {ops, n, 0};
    unsigned cfg = model_u8(&in);
    struct l1m *m = malloc(sizeof *m);
    MODEL_CHECK(m != NULL);
    l1m_init(m, l1m_bounds[cfg & 3], l1m_ages[(cfg >> 2) & 3]);
    struct pc_clock clock = {l1m_now, &m->now_ms};
    struct pc_l1 *l1 = pc_l1_new(l1m_bounds[cfg & 3], m->max_age_ms, &clock);
    MODEL_CHECK(l1 != NULL);
    struct pc_buf out;
    pc_buf_init(&out);
    char *val = NULL;
    size_t steps = 0;
    for (model_step = 0; model_more(&in); model_step++, steps++) {
        unsigned op = model_u8(&in) % 10;
        if (op <= 2) { /* put: a value no earlier put had, so a stale one shows */
            unsigned k = l1m_key(&in);
            size_t len = l1m_len(&in, m->shard_max);
            char *v = realloc(val, len ? len : 1);
            MODEL_CHECK(v != NULL);
            val = v;
            model_fill((uint8_t *)val, len, ++m->serial);
            pc_l1_put(l1, m->keys->name[k], val, len);
            l1m_put(m, k, val, len);
        } else if (op <= 5) { /* get: appends to what out holds, nothing on a miss */
            unsigned k = l1m_key(&in);
            out.len = 0;
            MODEL_CHECK(pc_buf_append(&out, "#", 1) == 0);
            int due = 0, want_due = 0;
            uint64_t epoch = 0;
            int got = op == 5 ? pc_l1_get(l1, m->keys->name[k], &out)
                              : pc_l1_get_due(l1, m->keys->name[k], &out, &due, &epoch);
            const char *want = NULL;
            size_t want_len = 0;
            int found = l1m_get(m, k, &want, &want_len, op == 5 ? NULL : &want_due);
            MODEL_CHECK(got == found);
            MODEL_CHECK(due == want_due && (!due || epoch == m->given[k]));
            if (found)
                MODEL_CHECK(out.len == 1 + want_len && memcmp(out.data + 1, want, want_len) == 0);
            else
                MODEL_CHECK(out.len == 1);
            MODEL_CHECK(out.data[0] == '#');
        } else if (op == 6) {
            unsigned k = l1m_key(&in);
            pc_l1_del(l1, m->keys->name[k]);
            l1m_del(m, k);
        } else if (op == 7) { /* refill: the epoch given, or an older one; a value or none */
            unsigned k = l1m_key(&in);
            unsigned b = model_u8(&in);
            uint64_t epoch = m->given[k] - (b & 1 ? 0 : (b >> 1) % 3);
            if (b & 0x80) {
                pc_l1_refill(l1, m->keys->name[k], NULL, 0, epoch);
                l1m_del(m, k);
            } else {
                size_t len = l1m_len(&in, m->shard_max);
                char *v = realloc(val, len ? len : 1);
                MODEL_CHECK(v != NULL);
                val = v;
                model_fill((uint8_t *)val, len, ++m->serial);
                pc_l1_refill(l1, m->keys->name[k], val, len, epoch);
                unsigned s = m->keys->shard_of[k];
                size_t charge = strlen(m->keys->name[k]) + len + L1M_OVERHEAD;
                if (charge > m->shard_max / 4) {
                    l1m_del(m, k); /* too large: dropped, and the older one with it */
                } else if (epoch == m->epoch[s]) {
                    l1m_put(m, k, val, len);
                    m->refills++;
                }
            }
        } else { /* time: small steps, or exactly to and just past max_age_ms */
            unsigned b = model_u8(&in);
            int64_t d = b % 8;
            if (b >= 224)
                d = (int64_t)m->max_age_ms + (b & 3) - 1;
            if (d > 0)
                m->now_ms += d;
        }
        l1m_check_stats(l1, m);
    }
    pc_l1_free(l1);
    for (unsigned k = 0; k < L1M_KEYS; k++)
        free(m->e[k].val);
    free(m);
    free(val);
    pc_buf_release(&out);
    return steps;
}

#endif
