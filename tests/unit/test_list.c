/* The intrusive list against a reference model: an array holding the same order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "predcache/list.h"

#define N 64

struct item {
    int id;
    struct pc_list link;
};

/* The model: ids in list order; in[i]: item i is in the list. */
struct model {
    int order[N];
    size_t n;
    int in[N];
};

static void model_remove(struct model *m, int id)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->order[i] == id) {
            memmove(&m->order[i], &m->order[i + 1], (m->n - i - 1) * sizeof m->order[0]);
            m->n--;
            break;
        }
    }
    m->in[id] = 0;
}

static void check(const struct pc_list *h, const struct model *m)
{
    size_t k = 0;
    for (const struct pc_list *i = h->next; i != h; i = i->next) {
        assert_true(k < m->n);
        assert_ptr_equal(i->next->prev, i);
        assert_int_equal(pc_list_entry(i, const struct item, link)->id, m->order[k++]);
    }
    assert_int_equal(k, m->n);
    k = m->n;
    for (const struct pc_list *i = h->prev; i != h; i = i->prev)
        assert_int_equal(pc_list_entry(i, const struct item, link)->id, m->order[--k]);
    assert_int_equal(pc_list_empty(h), m->n == 0);
    if (m->n == 0) {
        assert_null(pc_list_first(h));
        assert_null(pc_list_last(h));
    } else {
        assert_int_equal(pc_list_entry(pc_list_first(h), struct item, link)->id, m->order[0]);
        assert_int_equal(pc_list_entry(pc_list_last(h), struct item, link)->id, m->order[m->n - 1]);
        assert_null(pc_list_next(h, pc_list_last(h)));
    }
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_against_model(void **state)
{
    (void)state;
    struct item items[N];
    struct pc_list head;
    struct model m;
    memset(&m, 0, sizeof m);
    pc_list_init(&head);
    for (int i = 0; i < N; i++) {
        items[i].id = i;
        pc_list_init(&items[i].link);
    }
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (int step = 0; step < 20000; step++) {
        int id = (int)(next_rand(&seed) % N);
        switch (next_rand(&seed) % 4) {
        case 0: /* to the front (an LRU touch when it is in already) */
            pc_list_remove(&items[id].link);
            model_remove(&m, id);
            pc_list_push_front(&head, &items[id].link);
            memmove(&m.order[1], &m.order[0], m.n * sizeof m.order[0]);
            m.order[0] = id;
            m.n++;
            m.in[id] = 1;
            break;
        case 1:
            pc_list_remove(&items[id].link);
            model_remove(&m, id);
            pc_list_push_back(&head, &items[id].link);
            m.order[m.n++] = id;
            m.in[id] = 1;
            break;
        case 2: /* removing one that is in no list does nothing */
            pc_list_remove(&items[id].link);
            model_remove(&m, id);
            assert_ptr_equal(items[id].link.next, &items[id].link);
            break;
        default: /* the oldest out, as an eviction does */
            if (pc_list_last(&head) != NULL) {
                struct item *old = pc_list_entry(pc_list_last(&head), struct item, link);
                pc_list_remove(&old->link);
                model_remove(&m, old->id);
            }
            break;
        }
        check(&head, &m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
