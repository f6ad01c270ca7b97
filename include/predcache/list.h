/*
 * list: an intrusive doubly linked list. A struct that is kept in a list holds a struct
 * pc_list member; the list itself is a struct pc_list head, circular: an empty head points
 * at itself, so inserting and removing never test for an end. Owns nothing: the caller
 * allocates and frees the elements. Header only, no I/O.
 *
 *     struct conn { ...; struct pc_list link; };
 *     struct pc_list conns;                          pc_list_init(&conns);
 *     pc_list_push_front(&conns, &c->link);          pc_list_remove(&c->link);
 *     for (struct pc_list *i = conns.next; i != &conns; i = i->next)
 *         use(pc_list_entry(i, struct conn, link));
 */
#ifndef PREDCACHE_LIST_H
#define PREDCACHE_LIST_H

#include <stddef.h>

struct pc_list {
    struct pc_list *prev, *next;
};

/* The element that holds link, a pointer to its member `member` of type `type`. */
#define pc_list_entry(link, type, member) ((type *)((char *)(link)-offsetof(type, member)))

/* An empty list head, or an element that is in no list. */
static inline void pc_list_init(struct pc_list *h)
{
    h->prev = h->next = h;
}

static inline int pc_list_empty(const struct pc_list *h)
{
    return h->next == h;
}

/* Puts n (in no list) right after at. */
static inline void pc_list_insert_after(struct pc_list *at, struct pc_list *n)
{
    n->prev = at;
    n->next = at->next;
    at->next->prev = n;
    at->next = n;
}

static inline void pc_list_push_front(struct pc_list *h, struct pc_list *n)
{
    pc_list_insert_after(h, n);
}

static inline void pc_list_push_back(struct pc_list *h, struct pc_list *n)
{
    pc_list_insert_after(h->prev, n);
}

/* Takes n out of its list; it is then in none (removing it again does nothing). */
static inline void pc_list_remove(struct pc_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* The first and last links of h, or NULL when it is empty. */
static inline struct pc_list *pc_list_first(const struct pc_list *h)
{
    return h->next != h ? h->next : NULL;
}

static inline struct pc_list *pc_list_last(const struct pc_list *h)
{
    return h->prev != h ? h->prev : NULL;
}

/* The link after n in head h's list, or NULL at its end. */
static inline struct pc_list *pc_list_next(const struct pc_list *h, const struct pc_list *n)
{
    return n->next != h ? n->next : NULL;
}

#endif
