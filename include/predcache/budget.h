/*
 * budget: the process-wide bound on answer bytes held for clients ([server]
 * max_output_bytes). Two figures, shared by every worker as relaxed atomics:
 *
 *     client   answer bytes in client connections' output buffers that the sockets have
 *              not taken yet (http.c counts what an answer leaves behind, until written);
 *     backend  model server answer bytes received (or, for an answer of known length,
 *              about to be) and not handed over yet (upstream.c counts them until the
 *              transfer is freed).
 *
 * The bound limits their sum. Owns these numbers and the decisions read from them; never
 * touches a socket, a connection or a transfer: the callers pause and refuse.
 *
 *   - A transfer may always hold its first PC_BUDGET_SMALL bytes: health checks, small
 *     answers and bystanders never wait behind big answers.
 *   - An answer of known length (Content-Length) is admitted whole before its first byte:
 *     counted at once, it never pauses afterwards, so the bytes in the budget always belong
 *     to answers that can finish. It waits while it does not fit; one larger than what is
 *     left of a half-empty budget goes in alone (the progress token) once half is free.
 *   - An answer of unknown length (chunked) takes each chunk while client + backend stays
 *     within the bound, else it pauses. Partial answers could then fill the budget and wait
 *     on each other: the holder of the progress token goes on while the client bytes are
 *     below half the bound. Paused ones resume below the low-water mark (3/4 of it).
 *   - An answer composed from memory (a hit) larger than PC_BUDGET_SMALL that does not fit
 *     is refused (503) rather than buffered; like a transfer's, one that would not fit a
 *     half-empty budget goes in once half is free. An answer that carries a transfer's
 *     credit is never refused: its bytes were counted as they came (pc_budget_credit_*).
 *
 * So client + backend stays below the bound plus one answer (the token holder's, or a hit
 * let into a half-empty budget), one answer per worker counted twice while it is handed
 * from its transfer to an output buffer, and PC_BUDGET_SMALL per transfer in flight (and
 * one more answer per worker when workers decide at the same instant); partial chunked
 * answers may add half the bound.
 */
#ifndef PREDCACHE_BUDGET_H
#define PREDCACHE_BUDGET_H

#include <stddef.h>
#include <stdint.h>

/* Bytes a transfer holds, and an answer may carry, without asking the budget. */
#define PC_BUDGET_SMALL 65536

/*
 * The input side ([server] max_input_bytes), a figure of its own: request bytes held by
 * predcache (head, body, the line being read), from their arrival until the request is
 * freed. http.c counts them; a connection whose request holds more than its head and
 * PC_BUDGET_INPUT_SMALL bytes stops reading while the figure is at or over the bound, and
 * reads on once it falls under 3/4 of it (its request deadline still runs). Requests being
 * read could fill the bound and wait on each other for ever: one of them at a time (the
 * holder of the input token) reads on over the bound until its request is whole, so the
 * figure stays below the bound plus one request.
 */
#define PC_BUDGET_INPUT_SMALL 16384
void pc_budget_input_set_limit(size_t max_bytes);
void pc_budget_input_add(int64_t delta);
uint64_t pc_budget_input(void);
int pc_budget_input_over(void);       /* at or over the bound (never without one) */
int pc_budget_input_may_resume(void); /* under 3/4 of the bound, or no bound */
/* The input token for who (an identity, never dereferenced): 1 when who holds it or just
 * took it. Released when who's request is whole or freed. */
int pc_budget_input_token_take(const void *who);
void pc_budget_input_token_release(const void *who);

/* The bound in bytes (0: none). Set once, before the workers start. */
void pc_budget_set_limit(size_t max_bytes);
size_t pc_budget_limit(void);

/* Adds delta (may be negative) to one figure. Any thread. */
void pc_budget_client_add(int64_t delta);
void pc_budget_backend_add(int64_t delta);
uint64_t pc_budget_client(void);
uint64_t pc_budget_backend(void);

/* 1 when client + backend bytes are at or over the bound (never without one). */
int pc_budget_over(void);
/* May an answer of len bytes, composed from memory, be buffered for a client now? */
int pc_budget_fits(size_t len);

/* May the transfer who (an identity, never dereferenced), whose answer is need bytes long,
 * take all of it now? 1: the caller counts need at once and never asks again; 0: it must
 * pause, and ask again to resume. May give who the progress token. */
int pc_budget_admit(const void *who, size_t need);
/* May the transfer who, of unknown length and holding held bytes, take n more now? 0: it
 * must pause. May give who the progress token. */
int pc_budget_may_take(const void *who, size_t held, size_t n);
/* May the paused transfer who, of unknown length, go on? May give it the progress token. */
int pc_budget_may_resume(const void *who);
/* The transfer who ends: gives the progress token back when it holds it. */
void pc_budget_release(const void *who);

/*
 * A transfer's answer is being handed over (this thread, between begin and end): the
 * first answer composed meanwhile takes the credit (pc_budget_credit_take returns 1 once)
 * and is never refused, since its bytes were already admitted as they arrived.
 */
void pc_budget_credit_begin(void);
void pc_budget_credit_end(void);
int pc_budget_credit_take(void);

#endif
