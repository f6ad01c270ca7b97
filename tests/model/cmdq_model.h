/*
 * cmdq_model: pc_cmdq (the commands awaiting their replies on one Redis connection)
 * against a reference model, one operation at a time (see model.h).
 *
 * The model is the header's contract written out plainly: an array of the commands in the
 * order they were pushed (id, data, bounded, bytes, answered); a bounded push is refused
 * when the bounded count is at its budget or its bytes would pass theirs. The operations
 * are what store.c does: push a command (a GET, or a SET that counts against the budgets);
 * a reply for the oldest (hiredis's order: claim, then take it out); a reply for a command
 * that is not the oldest (a desync: answered with a failure, taken out); a timeout (claim:
 * answered at once, keeps its place); the connection going (every command shifted out);
 * a claim of an id no longer queued. After every step each answer and the counters (count,
 * bounded, bytes, head) must be the model's.
 *
 * The bytes: the first picks the budgets (count 0, 1, 3 or 8; bytes 0, 10, 100 or 1000, 0
 * being no bound); then each operation is a kind and an argument.
 */
#ifndef PREDCACHE_TEST_CMDQ_MODEL_H
#define PREDCACHE_TEST_CMDQ_MODEL_H

#include "model.h"

#include <string.h>

#include "predcache/cmdq.h"

static const size_t cqm_counts[4] = {0, 1, 3, 8};
static const size_t cqm_bytes[4] = {0, 10, 100, 1000};

struct cqm_cmd {
    uint64_t id;
    void *data;
    int bounded;
    size_t bytes;
    int answered;
};

struct cqm {
    struct cqm_cmd *c; /* oldest first */
    size_t n, cap;
    size_t max_count, max_bytes;
    uint64_t next_id, serial;
};

static size_t cqm_bounded(const struct cqm *m, size_t *bytes)
{
    size_t k = 0;
    *bytes = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (m->c[i].bounded) {
            k++;
            *bytes += m->c[i].bytes;
        }
    }
    return k;
}

static int cqm_full(const struct cqm *m, size_t bytes)
{
    size_t b;
    size_t k = cqm_bounded(m, &b);
    return (m->max_count > 0 && k >= m->max_count) ||
           (m->max_bytes > 0 && b + bytes > m->max_bytes);
}

static void cqm_take(struct cqm *m, size_t i)
{
    memmove(&m->c[i], &m->c[i + 1], (m->n - i - 1) * sizeof m->c[0]);
    m->n--;
}

static void cqm_check(const struct pc_cmdq *q, const struct cqm *m)
{
    size_t b;
    size_t k = cqm_bounded(m, &b);
    MODEL_CHECK(pc_cmdq_count(q) == m->n);
    MODEL_CHECK(pc_cmdq_bounded(q) == k);
    MODEL_CHECK(pc_cmdq_bytes(q) == b);
    MODEL_CHECK(pc_cmdq_head(q) == (m->n > 0 ? m->c[0].id : 0));
}

/* A command's size: mostly small, now and then around or past the byte budget. */
static size_t cqm_size(const struct cqm *m, unsigned b)
{
    size_t max = m->max_bytes ? m->max_bytes : 1000;
    if (b < 200)
        return b % 8;
    return (size_t)(b - 200) * max * 5 / 4 / 55;
}

/*
 * Runs the operations ops[0..n) on a new pc_cmdq and on the model; MODEL_FAIL on the first
 * difference. Returns the number of operations run.
 */
static size_t cmdq_model_run(const uint8_t *ops, size_t n)
{
    struct model_in in = {ops, n, 0};
    unsigned cfg = model_u8(&in);
    struct cqm m = {NULL, 0, 0, cqm_counts[cfg & 3], cqm_bytes[(cfg >> 2) & 3], 1, 0};
    struct pc_cmdq *q = pc_cmdq_new(m.max_count, m.max_bytes);
    MODEL_CHECK(q != NULL);
    size_t steps = 0;
    for (model_step = 0; model_more(&in); model_step++, steps++) {
        unsigned op = model_u8(&in), arg = model_u8(&in);
        switch (op % 10) {
        case 0:
        case 1:
        case 2:
        case 3: { /* push: a GET (not bounded) or a SET (bounded, its value's bytes) */
            int bounded = op & 0x10;
            size_t bytes = cqm_size(&m, arg);
            void *data = (void *)(uintptr_t)(0x1000 + 16 * ++m.serial);
            int full = cqm_full(&m, bytes);
            MODEL_CHECK(pc_cmdq_full(q, bytes) == full);
            uint64_t id = 0;
            enum pc_cmdq_push r = pc_cmdq_push(q, data, bounded, bytes, &id);
            if (bounded && full) {
                MODEL_CHECK(r == PC_CMDQ_FULL);
                break;
            }
            MODEL_CHECK(r == PC_CMDQ_OK && id == m.next_id);
            if (m.n == m.cap) {
                m.cap = m.cap ? 2 * m.cap : 16;
                m.c = realloc(m.c, m.cap * sizeof *m.c);
                MODEL_CHECK(m.c != NULL);
            }
            m.c[m.n++] = (struct cqm_cmd){m.next_id++, data, bounded != 0, bytes, 0};
            break;
        }
        case 4:
        case 5:
        case 6: { /* the reply for the oldest, as hiredis hands it over */
            uint64_t head = pc_cmdq_head(q);
            if (m.n == 0) {
                MODEL_CHECK(head == 0 && pc_cmdq_shift(q, NULL) == NULL);
                break;
            }
            MODEL_CHECK(head == m.c[0].id);
            MODEL_CHECK(pc_cmdq_claim(q, head) == !m.c[0].answered);
            int answered = -1;
            MODEL_CHECK(pc_cmdq_shift(q, &answered) == m.c[0].data && answered == 1);
            cqm_take(&m, 0);
            break;
        }
        case 7: { /* a timeout: any command, answered at once, keeps its place */
            if (m.n == 0)
                break;
            size_t i = arg % m.n;
            MODEL_CHECK(pc_cmdq_claim(q, m.c[i].id) == !m.c[i].answered);
            m.c[i].answered = 1;
            break;
        }
        case 8: { /* a reply for a command not the oldest (or an id long gone) */
            if (m.n == 0 || (op & 0x30) == 0x30) {
                uint64_t gone = m.next_id > 1 ? 1 + arg % m.next_id : 0;
                int queued = 0;
                for (size_t i = 0; i < m.n; i++)
                    queued |= m.c[i].id == gone;
                if (!queued) {
                    MODEL_CHECK(pc_cmdq_claim(q, gone) == 0);
                    MODEL_CHECK(pc_cmdq_remove(q, gone) == NULL);
                }
                break;
            }
            size_t i = arg % m.n;
            MODEL_CHECK(pc_cmdq_claim(q, m.c[i].id) == !m.c[i].answered);
            MODEL_CHECK(pc_cmdq_remove(q, m.c[i].id) == m.c[i].data);
            cqm_take(&m, i);
            break;
        }
        default: /* the connection goes: every command out, oldest first */
            if ((op >> 4) % 4 != 0)
                break; /* rarely: a queue needs time to grow */
            while (m.n > 0) {
                int answered = -1;
                MODEL_CHECK(pc_cmdq_shift(q, &answered) == m.c[0].data);
                MODEL_CHECK(answered == m.c[0].answered);
                cqm_take(&m, 0);
            }
            MODEL_CHECK(pc_cmdq_shift(q, NULL) == NULL);
            break;
        }
        cqm_check(q, &m);
    }
    pc_cmdq_free(q);
    free(m.c);
    return steps;
}

#endif
