/*
 * cmdq: the commands sent on one Redis connection and not yet replied to, in the order
 * their replies come (Redis answers in order). Each has an id, whether it counts against
 * the budgets, its bytes, whether its caller was answered, and the owner's pointer.
 *
 * Owns the queue and its counters. Never touches the commands it carries (the owner's data
 * pointers), the connection, the clock or any timer: the owner says when a reply came, a
 * command timed out, or the connection went.
 *
 *   push --> [oldest ... newest] --> the next reply answers the oldest (shift, or by id)
 *   - a command that times out is answered at once (claim) and keeps its place: its reply
 *     still comes, and is discarded then
 *   - the connection goes: every command is shifted out, the unanswered ones fail
 *   - budgets: bounded commands (the stores) at most max_bounded, their bytes at most
 *     max_bytes (0: no bound); past them a push is refused, not queued
 */
#ifndef PREDCACHE_CMDQ_H
#define PREDCACHE_CMDQ_H

#include <stddef.h>
#include <stdint.h>

struct pc_cmdq;

enum pc_cmdq_push {
    PC_CMDQ_OK,
    PC_CMDQ_FULL,  /* over a budget: not queued */
    PC_CMDQ_NOMEM, /* not queued */
};

/* Budgets of the bounded commands: count and bytes, 0 for no bound. NULL on no memory. */
struct pc_cmdq *pc_cmdq_new(size_t max_bounded, size_t max_bytes);
/* Frees the queue, not the commands in it. Accepts NULL. */
void pc_cmdq_free(struct pc_cmdq *q);

/* 1 when a bounded command of bytes would be refused now. */
int pc_cmdq_full(const struct pc_cmdq *q, size_t bytes);
/* The same with more_bounded bounded commands of more_bytes queued first elsewhere (held
 * back by the owner, to be pushed later). */
int pc_cmdq_full_after(const struct pc_cmdq *q, size_t more_bounded, size_t more_bytes,
                       size_t bytes);
/* Appends a command carrying data (borrowed: handed back by shift and remove). bounded: it
 * counts against the budgets with its bytes. *id: its id, increasing from 1. */
enum pc_cmdq_push pc_cmdq_push(struct pc_cmdq *q, void *data, int bounded, size_t bytes,
                               uint64_t *id);

/* The oldest command's id, the one the next reply is for; 0 when the queue is empty. */
uint64_t pc_cmdq_head(const struct pc_cmdq *q);
/* The right to answer id's caller: 1 the first time (answer now: a reply, a timeout, a
 * failure), 0 after that or when id is not queued. The command keeps its place. */
int pc_cmdq_claim(struct pc_cmdq *q, uint64_t id);
/* Takes out the oldest command: its data (NULL when empty), and in *answered whether its
 * caller was answered (a reply then is discarded). */
void *pc_cmdq_shift(struct pc_cmdq *q, int *answered);
/* Takes out id wherever it is (its reply came out of order: the connection is to be
 * dropped): its data, NULL when id is not queued. */
void *pc_cmdq_remove(struct pc_cmdq *q, uint64_t id);

/* Commands queued; bounded ones, and their bytes. */
size_t pc_cmdq_count(const struct pc_cmdq *q);
size_t pc_cmdq_bounded(const struct pc_cmdq *q);
size_t pc_cmdq_bytes(const struct pc_cmdq *q);

#endif
