/* Unit tests of peers: whether a worker shares its done channel. Fixed cases (NULL, the
 * quiet period's bounds, another's greeting, a subscription that dropped), then random
 * histories against a model that keeps every greeting ever heard and applies the rule as
 * the header states it. */
#include "../model/model_unit.h"

#include <stdio.h>
#include <string.h>

#include "predcache/peers.h"

#define Q ((uint64_t)PC_PEERS_QUIET_MS * 1000)
#define G ((uint64_t)PC_PEERS_GREET_MS * 1000)

/* The id in p's greeting. */
static const char *own_id(const struct pc_peers *p)
{
    return pc_peers_greeting(p) + strlen(PC_PEERS_ANNOUNCE);
}

static void hear_own(struct pc_peers *p, uint64_t at)
{
    pc_peers_heard(p, own_id(p), strlen(own_id(p)), at);
}

static void hear_other(struct pc_peers *p, const char *id, uint64_t at)
{
    pc_peers_heard(p, id, strlen(id), at);
}

/* NULL is never alone and ignores what it hears. */
static void test_null(void **state)
{
    (void)state;
    assert_int_equal(pc_peers_alone(NULL, 1, 100 * Q), 0);
    pc_peers_heard(NULL, "x", 1, 5);
    assert_int_equal(pc_peers_others(NULL), 0);
    pc_peers_free(NULL);
}

/* The greeting is the announce prefix and 16 hex digits; two workers draw two ids. */
static void test_greeting(void **state)
{
    (void)state;
    struct pc_peers *a = pc_peers_new(), *b = pc_peers_new();
    assert_non_null(a);
    assert_non_null(b);
    const char *g = pc_peers_greeting(a);
    assert_int_equal(strncmp(g, PC_PEERS_ANNOUNCE, strlen(PC_PEERS_ANNOUNCE)), 0);
    assert_int_equal(strlen(own_id(a)), 16);
    assert_int_equal(strspn(own_id(a), "0123456789abcdef"), 16);
    assert_true(strlen(g) < PC_PEERS_GREETING_MAX);
    assert_string_not_equal(own_id(a), own_id(b));
    pc_peers_free(a);
    pc_peers_free(b);
}

/* Alone once it has listened for the quiet period and its own greeting came back through
 * that subscription, recently; not before, not without the echo, not with a stale echo. */
static void test_quiet_period(void **state)
{
    (void)state;
    struct pc_peers *p = pc_peers_new();
    assert_non_null(p);
    uint64_t l = 1000;                                     /* listening since */
    assert_int_equal(pc_peers_alone(p, 0, l + 10 * Q), 0); /* not listening */
    assert_int_equal(pc_peers_alone(p, l, l + 10 * Q), 0); /* never heard its own */
    hear_own(p, l - 1);                                    /* before this subscription */
    assert_int_equal(pc_peers_alone(p, l, l + Q), 0);
    hear_own(p, l + G);
    assert_int_equal(pc_peers_alone(p, l, l + Q - 1), 0); /* not long enough */
    assert_int_equal(pc_peers_alone(p, l, l + Q), 1);
    assert_int_equal(pc_peers_alone(p, l, l + G + Q), 1);     /* the echo just within */
    assert_int_equal(pc_peers_alone(p, l, l + G + Q + 1), 0); /* its greetings stopped */
    hear_own(p, l + G + Q + 2);
    assert_int_equal(pc_peers_alone(p, l, l + G + Q + 2), 1);
    assert_int_equal(pc_peers_others(p), 0);
    pc_peers_free(p);
}

/* Another's greeting ends being alone at once, for the quiet period after it; a prefix or
 * an extension of its own id is another's. */
static void test_another(void **state)
{
    (void)state;
    struct pc_peers *p = pc_peers_new();
    assert_non_null(p);
    uint64_t l = 1000;
    hear_own(p, l + 10);
    assert_int_equal(pc_peers_alone(p, l, l + Q), 1);
    hear_other(p, "0123456789abcdef", l + Q + 5);
    hear_own(p, l + Q + 6);
    assert_int_equal(pc_peers_alone(p, l, l + Q + 6), 0);
    assert_int_equal(pc_peers_alone(p, l, l + 2 * Q + 5), 0); /* quiet exactly Q: not yet */
    assert_int_equal(pc_peers_alone(p, l, l + 2 * Q + 6), 1);
    assert_int_equal(pc_peers_others(p), 1);

    char id[32];
    snprintf(id, sizeof id, "%.15s", own_id(p)); /* a prefix of its own */
    hear_other(p, id, l + 3 * Q);
    assert_int_equal(pc_peers_alone(p, l, l + 3 * Q), 0);
    snprintf(id, sizeof id, "%s0", own_id(p)); /* longer */
    pc_peers_heard(p, id, strlen(id), l + 5 * Q);
    assert_int_equal(pc_peers_others(p), 3);
    hear_own(p, l + 5 * Q);
    assert_int_equal(pc_peers_alone(p, l, l + 5 * Q), 0);
    pc_peers_free(p);
}

/* A subscription that begins anew (the subscriber was away) starts the quiet period again:
 * what was said while it was away was not heard. */
static void test_subscription_anew(void **state)
{
    (void)state;
    struct pc_peers *p = pc_peers_new();
    assert_non_null(p);
    uint64_t l = 1000;
    hear_own(p, l + Q);
    assert_int_equal(pc_peers_alone(p, l, l + Q), 1);
    uint64_t l2 = l + Q + 100; /* subscribed again */
    assert_int_equal(pc_peers_alone(p, l2, l2 + 1), 0);
    assert_int_equal(pc_peers_alone(p, l2, l2 + Q), 0); /* its echo is from before */
    hear_own(p, l2 + 50);
    assert_int_equal(pc_peers_alone(p, l2, l2 + Q), 1);
    pc_peers_free(p);
}

/* ---- random histories against the model ------------------------------------------ */

#define MAX_EVENTS 256

struct event_log {
    uint64_t at[MAX_EVENTS];
    int own[MAX_EVENTS];
    size_t n;
};

/* The rule as the header says it: listening for the last Q; its own greeting heard since
 * listening began and within the last Q; nobody else's within the last Q. From the whole
 * history. */
static int model_alone(const struct event_log *h, uint64_t listening, uint64_t now)
{
    if (listening == 0 || now < listening + Q)
        return 0;
    int own_recent = 0, other_recent = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (h->at[i] > now)
            continue;
        if (h->own[i] && h->at[i] >= listening && now - h->at[i] <= Q)
            own_recent = 1;
        if (!h->own[i] && now - h->at[i] <= Q)
            other_recent = 1;
    }
    return own_recent && !other_recent;
}

static void test_against_model(void **state)
{
    (void)state;
    size_t checks = 0, alone_seen = 0;
    for (uint64_t seed = 1; seed <= 400; seed++) {
        uint64_t rng = seed;
        struct pc_peers *p = pc_peers_new();
        assert_non_null(p);
        struct event_log h = {.n = 0};
        uint64_t now = 1 + model_next(&rng) % 1000000, listening = 0;
        while (h.n < MAX_EVENTS) {
            model_step = h.n;
            uint64_t r = model_next(&rng);
            now += r % (Q / 2); /* steps short and long against the quiet period */
            switch ((r >> 32) % 8) {
            case 0: /* the subscription drops, or begins */
                listening = listening != 0 ? 0 : now;
                break;
            case 1: /* another's greeting */
                hear_other(p, "feedfacefeedface", now);
                h.at[h.n] = now;
                h.own[h.n++] = 0;
                break;
            default: /* its own comes back (a subscriber that is away hears nothing) */
                if (listening == 0)
                    break;
                hear_own(p, now);
                h.at[h.n] = now;
                h.own[h.n++] = 1;
                break;
            }
            /* Asked at now and at times up to 2Q later, as a lookup would be. */
            for (int k = 0; k < 4; k++) {
                uint64_t t = now + (k == 0 ? 0 : model_next(&rng) % (2 * Q));
                int want = model_alone(&h, listening, t);
                if (pc_peers_alone(p, listening, t) != want)
                    fail_msg("seed %llu event %zu: alone at +%llu us said %d, model %d",
                             (unsigned long long)seed, h.n, (unsigned long long)(t - now), !want,
                             want);
                checks++;
                alone_seen += (size_t)want;
            }
        }
        pc_peers_free(p);
    }
    /* The histories reach both answers often. */
    assert_true(alone_seen > checks / 20);
    assert_true(alone_seen < checks - checks / 20);
    print_message("peers: %zu checks against the model, %zu of them alone\n", checks, alone_seen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null),
        cmocka_unit_test(test_greeting),
        cmocka_unit_test(test_quiet_period),
        cmocka_unit_test(test_another),
        cmocka_unit_test(test_subscription_anew),
        cmocka_unit_test(test_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
