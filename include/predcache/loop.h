/*
 * loop: the event loop a worker runs on, its priorities and the order of its callbacks.
 *
 * Three priorities. The default (PC_LOOP_DEFAULT) is everything: clients, the model
 * server's answers, timers. The top (PC_LOOP_FIRST) is Redis's replies and the commands a
 * quiet loop sends (store.h): a miss's lookup answered goes on to its model call before
 * the next client's request is read. The lowest (PC_LOOP_IDLE) runs when a turn finds
 * nothing else to do: the store's held writes, the answers held while clients' requests
 * were read (http.c, hold_answer), written together once every client's event that was
 * ready has run, and then the access lines of those answers (worker.c). libevent gives an
 * event the middle priority unless told (its number of priorities over two): that must stay
 * PC_LOOP_DEFAULT.
 *
 * After each callback below the top, the loop asks the kernel for new events (a
 * non-blocking epoll_wait) before it runs the next one: a Redis reply that came meanwhile
 * runs first. Without that, the callbacks of one pass all ran before any reply: the
 * lookups of the requests read in that pass were answered together and their model calls
 * went out together, so their answers came back together, and the group of requests
 * formed again every cycle, each waiting for the whole group's work (docs/PERFORMANCE.md,
 * "The miss at c8 is a convoy").
 */
#ifndef PREDCACHE_LOOP_H
#define PREDCACHE_LOOP_H

struct event;
struct event_base;

enum { PC_LOOP_FIRST = 0, PC_LOOP_DEFAULT = 1, PC_LOOP_IDLE = 2, PC_LOOP_PRIORITIES = 3 };

/* A new loop as above, or NULL. */
struct event_base *pc_loop_new(void);

/* prio on base, or base's lowest priority when base has fewer (a loop made elsewhere, with
 * one priority, say): the order among them kept as far as base can. */
int pc_loop_priority(struct event_base *base, int prio);

/*
 * Work put off until the loop is idle (held writes, held answers): once armed, fn(arg) runs
 * when a turn of the loop finds nothing else to do (an event at PC_LOOP_IDLE), or bound_ms
 * after it was armed (a timer at the default priority, for a loop that is never idle),
 * whichever comes first; once, until armed again.
 */
struct pc_loop_later {
    struct event *idle, *bound;
    int bound_ms;
    void (*fn)(void *arg);
    void *arg;
};
/* 0 ok, -1 out of memory (l then needs only pc_loop_later_free). l must not move. */
int pc_loop_later_init(struct pc_loop_later *l, struct event_base *base, int bound_ms,
                       void (*fn)(void *arg), void *arg);
void pc_loop_later_arm(struct pc_loop_later *l);
void pc_loop_later_disarm(struct pc_loop_later *l); /* fn will not run until armed again */
void pc_loop_later_free(struct pc_loop_later *l);   /* disarmed; a zeroed l too */

#endif
