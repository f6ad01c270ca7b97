/* jobtab: the jobs a worker holds (see the header). At most [jobs] concurrency of them
 * (1024), so one array in the order they came, searched in full. */
#include "predcache/jobtab.h"

#include <stdlib.h>
#include <string.h>

struct slot {
    char *entry; /* one allocation: entry id, NUL, cache key, NUL */
    const char *key;
    enum pc_job_step step;
    void *job;
};

struct pc_jobtab {
    struct slot *slots; /* oldest first */
    size_t n, max;
};

struct pc_jobtab *pc_jobtab_new(size_t max)
{
    struct pc_jobtab *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->max = max;
    if (max > 0 && (t->slots = calloc(max, sizeof *t->slots)) == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

void pc_jobtab_free(struct pc_jobtab *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->n; i++)
        free(t->slots[i].entry);
    free(t->slots);
    free(t);
}

static struct slot *slot_of(const struct pc_jobtab *t, const char *entry)
{
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->slots[i].entry, entry) == 0)
            return &t->slots[i];
    }
    return NULL;
}

int pc_jobtab_add(struct pc_jobtab *t, const char *entry, const char *key, void *job)
{
    if (t->n == t->max || slot_of(t, entry) != NULL)
        return -1;
    size_t el = strlen(entry), kl = strlen(key);
    char *s = malloc(el + kl + 2);
    if (s == NULL)
        return -1;
    memcpy(s, entry, el + 1);
    memcpy(s + el + 1, key, kl + 1);
    t->slots[t->n++] = (struct slot){s, s + el + 1, PC_JOB_STARTING, job};
    return 0;
}

void *pc_jobtab_find(const struct pc_jobtab *t, const char *entry)
{
    const struct slot *s = slot_of(t, entry);
    return s != NULL ? s->job : NULL;
}

void *pc_jobtab_remove(struct pc_jobtab *t, const char *entry)
{
    struct slot *s = slot_of(t, entry);
    if (s == NULL)
        return NULL;
    void *job = s->job;
    free(s->entry);
    size_t i = (size_t)(s - t->slots);
    memmove(s, s + 1, (t->n - i - 1) * sizeof *s); /* keeps the order */
    t->n--;
    return job;
}

size_t pc_jobtab_count(const struct pc_jobtab *t)
{
    return t->n;
}

void *pc_jobtab_at(const struct pc_jobtab *t, size_t i, const char **entry, enum pc_job_step *step)
{
    if (i >= t->n)
        return NULL;
    if (entry != NULL)
        *entry = t->slots[i].entry;
    if (step != NULL)
        *step = t->slots[i].step;
    return t->slots[i].job;
}

enum pc_job_step pc_jobtab_step(const struct pc_jobtab *t, const char *entry)
{
    const struct slot *s = slot_of(t, entry);
    return s != NULL ? s->step : 0;
}

int pc_jobtab_set_step(struct pc_jobtab *t, const char *entry, enum pc_job_step step)
{
    struct slot *s = slot_of(t, entry);
    if (s == NULL)
        return -1;
    s->step = step;
    return 0;
}

static struct slot *first(const struct pc_jobtab *t, unsigned steps, const char *key)
{
    for (size_t i = 0; i < t->n; i++) {
        struct slot *s = &t->slots[i];
        if ((s->step & steps) != 0 && (key == NULL || strcmp(s->key, key) == 0))
            return s;
    }
    return NULL;
}

void *pc_jobtab_first(const struct pc_jobtab *t, unsigned steps, const char *key)
{
    const struct slot *s = first(t, steps, key);
    return s != NULL ? s->job : NULL;
}

int pc_jobtab_run(struct pc_jobtab *t, const char *entry)
{
    struct slot *s = slot_of(t, entry);
    if (s == NULL)
        return -1;
    for (size_t i = 0; s->key[0] != '\0' && i < t->n; i++) {
        const struct slot *o = &t->slots[i];
        if (o != s && o->step == PC_JOB_RUNNING && strcmp(o->key, s->key) == 0) {
            s->step = PC_JOB_PARKED; /* its twin's answer will be in the cache */
            return 0;
        }
    }
    s->step = PC_JOB_RUNNING;
    return 1;
}

void *pc_jobtab_unpark(struct pc_jobtab *t, const char *key)
{
    struct slot *s = first(t, PC_JOB_PARKED, key);
    if (s == NULL)
        return NULL;
    s->step = PC_JOB_RUNNING;
    return s->job;
}
