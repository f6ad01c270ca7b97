/*
 * jobtab_model: pc_jobtab (the jobs a worker holds) against a reference model, one
 * operation at a time (see model.h).
 *
 * The model is the header's contract written out plainly: an array indexed by entry id,
 * each with present, cache key, step, the job handed in and the serial of its add; "oldest"
 * is the smallest serial. A job runs when no other present job with its non-empty key is
 * RUNNING, else parks; unpark takes the oldest parked job of a key.
 *
 * The bytes: the first picks the bound (0 to 16 jobs); then each operation is a kind, an
 * entry id (one of 20) and a key (one of 4, or none). After every step each call's answer
 * must be the model's, and the whole table, read in order with pc_jobtab_at, must be the
 * model's present jobs by serial: job, entry id and step.
 */
#ifndef PREDCACHE_TEST_JOBTAB_MODEL_H
#define PREDCACHE_TEST_JOBTAB_MODEL_H

#include "model.h"

#include <string.h>

#include "predcache/jobtab.h"

#define JTM_ENTRIES 20
#define JTM_KEYS 5 /* key 0 is "": no key */

static const size_t jtm_bounds[8] = {0, 1, 2, 3, 5, 8, 16, 16};
static const char *const jtm_keys[JTM_KEYS] = {"", "pc:v1:aa", "pc:v1:ab", "pc:v1:b",
                                               "pc:v1:aa:long-key-that-shares-a-prefix"};
static const enum pc_job_step jtm_steps[5] = {PC_JOB_STARTING, PC_JOB_PARKED, PC_JOB_RUNNING,
                                              PC_JOB_FINISHING, PC_JOB_RELEASING};

struct jtm_job {
    int present;
    unsigned key;
    enum pc_job_step step;
    void *job;
    uint64_t serial;
};

struct jtm {
    char entries[JTM_ENTRIES][32];
    struct jtm_job j[JTM_ENTRIES];
    size_t count, max;
    uint64_t serial;
};

/* The present entry with the smallest serial among those that match; JTM_ENTRIES if none. */
static unsigned jtm_oldest(const struct jtm *m, unsigned steps, int key)
{
    unsigned best = JTM_ENTRIES;
    for (unsigned e = 0; e < JTM_ENTRIES; e++) {
        const struct jtm_job *x = &m->j[e];
        if (x->present && (x->step & steps) != 0 && (key < 0 || x->key == (unsigned)key) &&
            (best == JTM_ENTRIES || x->serial < m->j[best].serial))
            best = e;
    }
    return best;
}

static void jtm_check_all(const struct pc_jobtab *t, const struct jtm *m)
{
    MODEL_CHECK(pc_jobtab_count(t) == m->count);
    uint64_t last = 0;
    for (size_t i = 0; i < m->count; i++) {
        /* The model's i-th oldest: the smallest serial above the previous one. */
        unsigned e = JTM_ENTRIES;
        for (unsigned k = 0; k < JTM_ENTRIES; k++) {
            const struct jtm_job *x = &m->j[k];
            if (x->present && (i == 0 || x->serial > last) &&
                (e == JTM_ENTRIES || x->serial < m->j[e].serial))
                e = k;
        }
        MODEL_CHECK(e < JTM_ENTRIES);
        last = m->j[e].serial;
        const char *entry = NULL;
        enum pc_job_step step = 0;
        MODEL_CHECK(pc_jobtab_at(t, i, &entry, &step) == m->j[e].job);
        MODEL_CHECK(entry != NULL && strcmp(entry, m->entries[e]) == 0);
        MODEL_CHECK(step == m->j[e].step);
    }
    MODEL_CHECK(pc_jobtab_at(t, m->count, NULL, NULL) == NULL);
}

/*
 * Runs the operations ops[0..n) on a new pc_jobtab and on the model; MODEL_FAIL on the
 * first difference. Returns the number of operations run.
 */
static size_t jobtab_model_run(const uint8_t *ops, size_t n)
{
    struct model_in in = {ops, n, 0};
    struct jtm *m = calloc(1, sizeof *m);
    MODEL_CHECK(m != NULL);
    m->max = jtm_bounds[model_u8(&in) & 7];
    for (unsigned e = 0; e < JTM_ENTRIES; e++) /* stream ids; two share a prefix */
        snprintf(m->entries[e], sizeof m->entries[e], "17000000%02u-%u", e / 2, e % 2 ? e : 0);
    struct pc_jobtab *t = pc_jobtab_new(m->max);
    MODEL_CHECK(t != NULL);
    size_t steps = 0;
    for (model_step = 0; model_more(&in); model_step++, steps++) {
        unsigned op = model_u8(&in), arg = model_u8(&in);
        unsigned e = arg % JTM_ENTRIES, key = (arg / JTM_ENTRIES) % JTM_KEYS;
        struct jtm_job *x = &m->j[e];
        const char *entry = m->entries[e];
        switch (op % 12) {
        case 0:
        case 1:
        case 2: { /* add: a job pointer no earlier add used */
            void *job = (void *)(uintptr_t)(0x1000 + 16 * ++m->serial);
            int want = x->present || m->count == m->max ? -1 : 0;
            MODEL_CHECK(pc_jobtab_add(t, entry, jtm_keys[key], job) == want);
            if (want == 0) {
                *x = (struct jtm_job){1, key, PC_JOB_STARTING, job, m->serial};
                m->count++;
            }
            break;
        }
        case 3: {
            void *want = x->present ? x->job : NULL;
            MODEL_CHECK(pc_jobtab_remove(t, entry) == want);
            if (x->present) {
                memset(x, 0, sizeof *x);
                m->count--;
            }
            break;
        }
        case 4:
            MODEL_CHECK(pc_jobtab_find(t, entry) == (x->present ? x->job : NULL));
            MODEL_CHECK(pc_jobtab_step(t, entry) == (x->present ? x->step : 0));
            break;
        case 5:
        case 6: {
            enum pc_job_step step = jtm_steps[(op >> 4) % 5];
            MODEL_CHECK(pc_jobtab_set_step(t, entry, step) == (x->present ? 0 : -1));
            if (x->present)
                x->step = step;
            break;
        }
        case 7:
        case 8: { /* run: parks behind another RUNNING job of its key */
            int want = -1;
            if (x->present) {
                int twin = 0;
                for (unsigned o = 0; o < JTM_ENTRIES; o++)
                    twin |= o != e && m->j[o].present && m->j[o].step == PC_JOB_RUNNING &&
                            m->j[o].key == x->key && x->key != 0;
                x->step = twin ? PC_JOB_PARKED : PC_JOB_RUNNING;
                want = !twin;
            }
            MODEL_CHECK(pc_jobtab_run(t, entry) == want);
            break;
        }
        case 9: { /* unpark the oldest parked job of a key */
            unsigned o = jtm_oldest(m, PC_JOB_PARKED, (int)key);
            void *want = NULL;
            if (o < JTM_ENTRIES) {
                m->j[o].step = PC_JOB_RUNNING;
                want = m->j[o].job;
            }
            MODEL_CHECK(pc_jobtab_unpark(t, jtm_keys[key]) == want);
            break;
        }
        case 10: { /* first, by a set of steps, with or without a key */
            unsigned steps_mask = (op >> 4) ? (op >> 4) & PC_JOB_ANY : PC_JOB_ANY;
            int with_key = (op >> 3) & 1;
            unsigned o = jtm_oldest(m, steps_mask, with_key ? (int)key : -1);
            MODEL_CHECK(pc_jobtab_first(t, steps_mask, with_key ? jtm_keys[key] : NULL) ==
                        (o < JTM_ENTRIES ? m->j[o].job : NULL));
            break;
        }
        default: /* the way pc_jobs_free goes: from the newest, some of them */
            for (size_t i = pc_jobtab_count(t); i-- > 0;) {
                const char *at_entry;
                enum pc_job_step step;
                void *job = pc_jobtab_at(t, i, &at_entry, &step);
                if ((step & ((op >> 4) | PC_JOB_PARKED)) == 0)
                    continue;
                unsigned k = 0;
                while (k < JTM_ENTRIES && strcmp(m->entries[k], at_entry) != 0)
                    k++;
                MODEL_CHECK(k < JTM_ENTRIES && m->j[k].present && m->j[k].job == job);
                MODEL_CHECK(pc_jobtab_remove(t, at_entry) == job);
                memset(&m->j[k], 0, sizeof m->j[k]);
                m->count--;
            }
            break;
        }
        jtm_check_all(t, m);
    }
    pc_jobtab_free(t);
    free(m);
    return steps;
}

#endif
