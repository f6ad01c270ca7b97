/* purges: the entries a worker heard purged lately (see the header). */
#include "predcache/purges.h"

#include <stdlib.h>
#include <string.h>

struct heard {
    uint64_t hash;
    uint64_t at_us;
};

struct pc_purges {
    struct heard *ring;
    size_t cap;
    size_t n;       /* kept: the newest n, ending at next - 1 */
    size_t next;    /* where the next goes */
    uint64_t added; /* heard so far */
    int lost;       /* some were forgotten: lost_us is when the newest of them was */
    uint64_t lost_us;
    struct heard echoes[PC_PURGES_ECHOES]; /* own purges whose announcement is due, oldest first */
    size_t n_echoes;
};

/* FNV-1a, 64 bits. */
static uint64_t key_hash(const char *key)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)key; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

struct pc_purges *pc_purges_new(size_t cap)
{
    struct pc_purges *pl = calloc(1, sizeof *pl);
    if (pl == NULL)
        return NULL;
    pl->cap = cap > 0 ? cap : 1;
    pl->ring = calloc(pl->cap, sizeof *pl->ring);
    if (pl->ring == NULL) {
        free(pl);
        return NULL;
    }
    return pl;
}

void pc_purges_free(struct pc_purges *pl)
{
    if (pl == NULL)
        return;
    free(pl->ring);
    free(pl);
}

static const struct heard *newest(const struct pc_purges *pl)
{
    return pl->n > 0 ? &pl->ring[(pl->next + pl->cap - 1) % pl->cap] : NULL;
}

void pc_purges_add(struct pc_purges *pl, const char *key, uint64_t now_us)
{
    if (pl == NULL)
        return;
    const struct heard *last = newest(pl);
    if (last != NULL && now_us < last->at_us)
        now_us = last->at_us; /* kept in time order: a search stops at the first older one */
    if (pl->n == pl->cap) {   /* the oldest is forgotten; what it said is kept as lost_us */
        pl->lost = 1;
        pl->lost_us = pl->ring[pl->next].at_us;
        pl->n--;
    }
    pl->ring[pl->next] = (struct heard){key_hash(key), now_us};
    pl->next = (pl->next + 1) % pl->cap;
    pl->n++;
    pl->added++;
}

void pc_purges_add_own(struct pc_purges *pl, const char *key, uint64_t now_us)
{
    if (pl == NULL)
        return;
    pc_purges_add(pl, key, now_us);
    if (pl->n_echoes == PC_PURGES_ECHOES) { /* the oldest awaited one is added when it comes */
        memmove(pl->echoes, pl->echoes + 1, (PC_PURGES_ECHOES - 1) * sizeof pl->echoes[0]);
        pl->n_echoes--;
    }
    pl->echoes[pl->n_echoes++] = (struct heard){key_hash(key), now_us};
}

void pc_purges_heard(struct pc_purges *pl, const char *key, uint64_t now_us)
{
    if (pl == NULL)
        return;
    uint64_t h = key_hash(key);
    size_t late = 0; /* awaited too long: no longer awaited */
    while (late < pl->n_echoes && now_us >= pl->echoes[late].at_us &&
           now_us - pl->echoes[late].at_us > PC_PURGES_ECHO_US)
        late++;
    memmove(pl->echoes, pl->echoes + late, (pl->n_echoes - late) * sizeof pl->echoes[0]);
    pl->n_echoes -= late;
    for (size_t i = 0; i < pl->n_echoes; i++) {
        if (pl->echoes[i].hash == h) { /* its own, added when it was made */
            memmove(pl->echoes + i, pl->echoes + i + 1,
                    (pl->n_echoes - i - 1) * sizeof pl->echoes[0]);
            pl->n_echoes--;
            return;
        }
    }
    pc_purges_add(pl, key, now_us);
}

int pc_purges_since(const struct pc_purges *pl, const char *key, uint64_t since_us)
{
    const struct heard *last = pl != NULL ? newest(pl) : NULL;
    if (last == NULL || last->at_us < since_us)
        return 0; /* nothing heard since: the common case, without hashing */
    if (pl->lost && pl->lost_us >= since_us)
        return 1; /* a purge forgotten came at or after since_us: it may be of key */
    uint64_t h = key_hash(key);
    for (size_t i = 0; i < pl->n; i++) { /* newest first, while at or after since_us */
        const struct heard *e = &pl->ring[(pl->next + pl->cap - 1 - i) % pl->cap];
        if (e->at_us < since_us)
            break;
        if (e->hash == h)
            return 1;
    }
    return 0;
}

int pc_purges_any_since(const struct pc_purges *pl, uint64_t since_us)
{
    const struct heard *last = pl != NULL ? newest(pl) : NULL;
    return last != NULL && last->at_us >= since_us;
}

uint64_t pc_purges_count(const struct pc_purges *pl)
{
    return pl != NULL ? pl->added : 0;
}
