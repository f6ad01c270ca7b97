/*
 * grpc_call: one gRPC call on the gRPC port, as grpc_proxy (intake, pass-through, answers)
 * and grpc_cache (the cached methods' key, lookup, coalescing and store) share it. Private
 * to those two.
 *
 * Ownership: the call is owned by what it waits on (a Redis GET, a version or generation
 * lookup, the model server's call, a flight). A client that goes away (gone) while it
 * waits is answered CANCELLED at once (g->req becomes NULL); the wait's own callback then
 * frees the call. Every answer goes through pc_grpc_call_* below, which account for it.
 */
#ifndef PREDCACHE_GRPC_CALL_H
#define PREDCACHE_GRPC_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "predcache/buf.h"
#include "predcache/cachekey.h"
#include "predcache/creds.h"
#include "predcache/generations.h"
#include "predcache/grpckey.h"
#include "predcache/h2up.h"
#include "predcache/log.h"
#include "lock.h"

struct pc_worker;
struct pc_h2_req;

/* The most metadata entries passed on to the model server or back. */
#define PC_GRPC_MAX_HEADERS 96

struct gcall {
    struct pc_worker *w;
    struct pc_h2_req *req; /* NULL once answered (or the client left) */
    struct pc_h2_call *up; /* the model server's call, while it runs */
    uint64_t start_us;     /* when the call came */
    uint64_t sent_us;
    int gone; /* the client left while the call waited on something it cannot cancel */
    /* x-request-id: the client's when sane, else made here; passed on and answered */
    char id[PC_LOG_ID_MAX + 1];
    /* The message (the request's body without its prefix). */
    const uint8_t *msg;
    size_t msg_len;
    /* A cached method's call (grpc_cache): */
    enum pc_grpc_kind kind;
    struct pc_buf material;
    struct pc_grpc_read rd;
    char scope[PC_CREDS_SCOPE_LEN + 1];
    char version[64];
    char ns_gen[PC_CFG_STR + PC_GEN_MAX + 2];
    char key[PC_KEY_MAX];
    int skip_lookup;         /* generations unknown: look nothing up, store all the same */
    int leader;              /* its model server call is the flight's */
    struct pc_lockwait lock; /* the cross-process lock a leader asks before its call */
    const char *result;      /* HIT, MISS, COALESCED, BYPASS, PASS, ERROR */
    const char *reason;      /* why it was not cached, or NULL */
};

/* Answers with a status and no message (Trailers-Only). */
void pc_grpc_call_status(struct gcall *g, int code, const char *msg, double backend_ms);
/* Answers with one message (framed here) and grpc-status 0: a replayed answer. */
void pc_grpc_call_message(struct gcall *g, const uint8_t *msg, size_t len, double backend_ms);
/* Sends the call to the model server; its answer is passed back (and, when the call
 * leads a flight, stored: grpc_cache). */
void pc_grpc_call_forward(struct gcall *g);
void pc_grpc_call_free(struct gcall *g);
/* The metadata g's model server call carries: the client's, less what ends at this hop and
 * its deadline (the caller adds what is left of it), with te and g's request id. Borrows
 * from g->req (valid). Returns how many, at most max - 1. */
size_t pc_grpc_call_headers(const struct gcall *g, struct pc_header *h, size_t max);
/* 0 while the gRPC model server's health checks say it is down ([backend] grpc_health_path):
 * calls that need it are answered UNAVAILABLE at once; stale entries are still served. */
int pc_grpc_backend_up(const struct pc_worker *w);

/* grpc_cache: the cached path of a call whose method is cached (g->kind) and whose body is
 * one message. Takes g over. */
void pc_grpc_cache_start(struct gcall *g);
/* The model server answered a flight's leader (r: as h2up says it; g->req may be NULL):
 * stores a cacheable answer and answers the flight's waiters. Returns nothing; g stays. */
void pc_grpc_cache_answered(struct gcall *g, const struct pc_h2_resp *r, int grpc_status);

#endif
