/*
 * budget: the process-wide output budget (see the header). Relaxed atomics: each figure is
 * exact, the decisions read two of them at slightly different instants, which at worst lets
 * one chunk per worker through past the bound.
 */
#include "predcache/budget.h"

static size_t limit;         /* set before the workers start, read-only afterwards */
static size_t in_limit;      /* the input side's bound, likewise */
static int64_t input_b;      /* request bytes held */
static const void *in_token; /* the request allowed to read on over the input bound */
static int64_t client_b;     /* bytes in client output buffers */
static int64_t backend_b;    /* bytes of model server answers being received */
static const void *token;    /* the transfer allowed to go on over the bound, or NULL */
static __thread int credit;  /* a transfer's answer is being handed over on this thread */

#define LOAD(v) __atomic_load_n(&(v), __ATOMIC_RELAXED)

void pc_budget_set_limit(size_t max_bytes)
{
    __atomic_store_n(&limit, max_bytes, __ATOMIC_RELAXED);
}

size_t pc_budget_limit(void)
{
    return LOAD(limit);
}

void pc_budget_client_add(int64_t delta)
{
    __atomic_add_fetch(&client_b, delta, __ATOMIC_RELAXED);
}

void pc_budget_backend_add(int64_t delta)
{
    __atomic_add_fetch(&backend_b, delta, __ATOMIC_RELAXED);
}

static uint64_t nonneg(int64_t v)
{
    return v > 0 ? (uint64_t)v : 0;
}

void pc_budget_input_set_limit(size_t max_bytes)
{
    __atomic_store_n(&in_limit, max_bytes, __ATOMIC_RELAXED);
}

void pc_budget_input_add(int64_t delta)
{
    __atomic_add_fetch(&input_b, delta, __ATOMIC_RELAXED);
}

uint64_t pc_budget_input(void)
{
    return nonneg(LOAD(input_b));
}

int pc_budget_input_over(void)
{
    size_t max = LOAD(in_limit);
    return max > 0 && pc_budget_input() >= max;
}

int pc_budget_input_may_resume(void)
{
    size_t max = LOAD(in_limit);
    return max == 0 || pc_budget_input() < max / 4 * 3;
}

int pc_budget_input_token_take(const void *who)
{
    const void *cur = LOAD(in_token);
    if (cur == who)
        return 1;
    if (cur != NULL)
        return 0;
    return __atomic_compare_exchange_n(&in_token, &cur, who, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void pc_budget_input_token_release(const void *who)
{
    const void *cur = who;
    __atomic_compare_exchange_n(&in_token, &cur, NULL, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

uint64_t pc_budget_client(void)
{
    return nonneg(LOAD(client_b));
}

uint64_t pc_budget_backend(void)
{
    return nonneg(LOAD(backend_b));
}

int pc_budget_over(void)
{
    size_t max = LOAD(limit);
    return max > 0 && pc_budget_client() + pc_budget_backend() >= max;
}

/* The token for who: 1 when who holds it or just took it (it was free). */
static int token_take(const void *who)
{
    const void *cur = LOAD(token);
    if (cur == who)
        return 1;
    if (cur != NULL)
        return 0;
    return __atomic_compare_exchange_n(&token, &cur, who, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

/* Over the bound, the token holder goes on while the clients' own bytes are below half of
 * it: finishing its answer is what moves bytes on towards the clients (and out). */
static int may_progress(const void *who, size_t max)
{
    return pc_budget_client() < max / 2 && token_take(who);
}

int pc_budget_fits(size_t len)
{
    size_t max = LOAD(limit);
    if (max == 0 || len <= PC_BUDGET_SMALL)
        return 1;
    uint64_t held = pc_budget_client() + pc_budget_backend();
    return held + len <= max || held < max / 2;
}

int pc_budget_admit(const void *who, size_t need)
{
    size_t max = LOAD(limit);
    if (max == 0 || need <= PC_BUDGET_SMALL)
        return 1;
    uint64_t held = pc_budget_client() + pc_budget_backend();
    if (held + need <= max)
        return 1;
    /* One that would not fit a half-empty budget goes in alone, once half of it is free. */
    return held < max / 2 && token_take(who);
}

int pc_budget_may_take(const void *who, size_t held, size_t n)
{
    size_t max = LOAD(limit);
    if (max == 0 || held + n <= PC_BUDGET_SMALL)
        return 1;
    if (pc_budget_client() + pc_budget_backend() + n <= max)
        return 1;
    return may_progress(who, max);
}

int pc_budget_may_resume(const void *who)
{
    size_t max = LOAD(limit);
    if (max == 0 || pc_budget_client() + pc_budget_backend() < max - max / 4)
        return 1;
    return may_progress(who, max);
}

void pc_budget_release(const void *who)
{
    const void *cur = who;
    if (LOAD(token) == who) /* every transfer ends here: no locked write unless it holds it */
        __atomic_compare_exchange_n(&token, &cur, NULL, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

void pc_budget_credit_begin(void)
{
    credit = 1;
}

void pc_budget_credit_end(void)
{
    credit = 0;
}

int pc_budget_credit_take(void)
{
    int had = credit;
    credit = 0;
    return had;
}
