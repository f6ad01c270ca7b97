/*
 * loop: the event loop a worker runs on, its priorities and the order of its callbacks.
 *
 * Three priorities. The default (PC_LOOP_DEFAULT) is everything: clients, the model
 * server's answers, timers. The top (PC_LOOP_FIRST) is Redis's replies and the commands a
 * quiet loop sends (store.h): a miss's lookup answered goes on to its model call before
 * the next client's request is read. The lowest (PC_LOOP_IDLE) is the store's held writes,
 * sent when a turn finds nothing else to do.
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

struct event_base;

enum { PC_LOOP_FIRST = 0, PC_LOOP_DEFAULT = 1, PC_LOOP_IDLE = 2, PC_LOOP_PRIORITIES = 3 };

/* A new loop as above, or NULL. */
struct event_base *pc_loop_new(void);

#endif
