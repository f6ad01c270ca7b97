/* cmdq: the FIFO of commands awaiting their replies (see the header). A ring of slots that
 * doubles when full; ids increase from head to tail, so a command is found by bisection. */
#include "predcache/cmdq.h"

#include <stdlib.h>
#include <string.h>

struct slot {
    uint64_t id;
    void *data;
    size_t bytes;
    int bounded;
    int answered;
};

struct pc_cmdq {
    struct slot *ring;
    size_t cap; /* a power of two, or 0 */
    size_t head, n;
    uint64_t next_id;
    size_t max_bounded, max_bytes;
    size_t bounded, bytes;
};

struct pc_cmdq *pc_cmdq_new(size_t max_bounded, size_t max_bytes)
{
    struct pc_cmdq *q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->max_bounded = max_bounded;
    q->max_bytes = max_bytes;
    q->next_id = 1;
    return q;
}

void pc_cmdq_free(struct pc_cmdq *q)
{
    if (q == NULL)
        return;
    free(q->ring);
    free(q);
}

static struct slot *at(const struct pc_cmdq *q, size_t i)
{
    return &q->ring[(q->head + i) & (q->cap - 1)];
}

int pc_cmdq_full_after(const struct pc_cmdq *q, size_t more_bounded, size_t more_bytes,
                       size_t bytes)
{
    size_t used = q->bytes + more_bytes; /* each part within max_bytes: no overflow */
    return (q->max_bounded > 0 && q->bounded + more_bounded >= q->max_bounded) ||
           (q->max_bytes > 0 && (used > q->max_bytes || bytes > q->max_bytes - used));
}

int pc_cmdq_full(const struct pc_cmdq *q, size_t bytes)
{
    return pc_cmdq_full_after(q, 0, 0, bytes);
}

static int grow(struct pc_cmdq *q)
{
    size_t cap = q->cap ? q->cap * 2 : 16;
    struct slot *ring = malloc(cap * sizeof *ring);
    if (ring == NULL)
        return -1;
    for (size_t i = 0; i < q->n; i++) /* unrolled from head: the ring starts at 0 again */
        ring[i] = *at(q, i);
    free(q->ring);
    q->ring = ring;
    q->cap = cap;
    q->head = 0;
    return 0;
}

enum pc_cmdq_push pc_cmdq_push(struct pc_cmdq *q, void *data, int bounded, size_t bytes,
                               uint64_t *id)
{
    if (bounded && pc_cmdq_full(q, bytes))
        return PC_CMDQ_FULL;
    if (q->n == q->cap && grow(q) != 0)
        return PC_CMDQ_NOMEM;
    *at(q, q->n) = (struct slot){q->next_id, data, bounded ? bytes : 0, bounded != 0, 0};
    q->n++;
    *id = q->next_id++;
    if (bounded) {
        q->bounded++;
        q->bytes += bytes;
    }
    return PC_CMDQ_OK;
}

/* The position of id, or n when it is not queued. */
static size_t find(const struct pc_cmdq *q, uint64_t id)
{
    size_t lo = 0, hi = q->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t m = at(q, mid)->id;
        if (m == id)
            return mid;
        if (m < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return q->n;
}

uint64_t pc_cmdq_head(const struct pc_cmdq *q)
{
    return q->n > 0 ? at(q, 0)->id : 0;
}

int pc_cmdq_claim(struct pc_cmdq *q, uint64_t id)
{
    size_t i = find(q, id);
    if (i == q->n || at(q, i)->answered)
        return 0;
    at(q, i)->answered = 1;
    return 1;
}

static void uncount(struct pc_cmdq *q, const struct slot *s)
{
    if (s->bounded) {
        q->bounded--;
        q->bytes -= s->bytes;
    }
}

void *pc_cmdq_shift(struct pc_cmdq *q, int *answered)
{
    if (q->n == 0)
        return NULL;
    struct slot s = *at(q, 0);
    q->head = (q->head + 1) & (q->cap - 1);
    q->n--;
    uncount(q, &s);
    if (answered != NULL)
        *answered = s.answered;
    return s.data;
}

void *pc_cmdq_remove(struct pc_cmdq *q, uint64_t id)
{
    size_t i = find(q, id);
    if (i == q->n)
        return NULL;
    struct slot s = *at(q, i);
    /* Closes the gap from the nearer end, so the others keep their order; replies come
     * for the head, so removing it costs O(1) (not O(n): n queued SETs of a large batch
     * were O(n^2)). */
    if (i < q->n / 2) {
        for (; i > 0; i--)
            *at(q, i) = *at(q, i - 1);
        q->head = (q->head + 1) & (q->cap - 1);
    } else {
        for (; i + 1 < q->n; i++)
            *at(q, i) = *at(q, i + 1);
    }
    q->n--;
    uncount(q, &s);
    return s.data;
}

size_t pc_cmdq_count(const struct pc_cmdq *q)
{
    return q->n;
}

size_t pc_cmdq_bounded(const struct pc_cmdq *q)
{
    return q->bounded;
}

size_t pc_cmdq_bytes(const struct pc_cmdq *q)
{
    return q->bytes;
}
