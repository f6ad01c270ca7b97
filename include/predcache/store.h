/*
 * store: Redis access for one worker over its own connection (a bufferevent on the
 * worker's event_base; hiredis only formats commands and reads replies).
 * Owns the connection and its state machine (CLOSED -> CONNECTING -> CONNECTED), the
 * connect and per-command timers, the queue of commands awaiting replies (cmdq.h: SET
 * budgets, answered once), and reconnection with backoff. On a command timeout
 * the connection is dropped and re-established, so a stalled Redis cannot pile up
 * commands. Any bytes from Redis are survived: a reply that is unreadable, too large,
 * of a type its command cannot get, or for no command is a desync (counted in
 * redis_desyncs): the commands waiting fail (PC_STORE_ERROR, NULL replies) and the
 * connection is re-established. The only module that includes hiredis.
 */
#ifndef PREDCACHE_STORE_H
#define PREDCACHE_STORE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct pc_config;
struct pc_metrics;
struct pc_store;

enum pc_store_result {
    PC_STORE_HIT = 0, /* value found */
    PC_STORE_MISS,    /* no such key */
    PC_STORE_ERROR,   /* down, refused, timed out, or an error reply */
};

/*
 * Called exactly once per accepted GET, never from inside pc_store_get itself.
 * data/len are valid only until the callback returns.
 */
typedef void (*pc_store_get_cb)(enum pc_store_result res, const char *data, size_t len, void *arg);
/* Called exactly once per accepted PING. ok: 1 when Redis answered PONG. */
typedef void (*pc_store_ping_cb)(int ok, void *arg);

/* Borrows base, cfg and metrics for the store's lifetime. Starts connecting at once. */
struct pc_store *pc_store_new(struct event_base *base, const struct pc_config *cfg,
                              struct pc_metrics *metrics);
/*
 * A store that only listens: it SUBSCRIBEs to channel on every (re)connect and calls
 * cb(message, len, arg) for each message (valid during the call). It takes no commands.
 */
typedef void (*pc_store_message_cb)(const char *msg, size_t len, void *arg);
struct pc_store *pc_store_new_subscriber(struct event_base *base, const struct pc_config *cfg,
                                         struct pc_metrics *metrics, const char *channel,
                                         pc_store_message_cb cb, void *arg);

/*
 * With [redis] sentinels: a subscriber to the sentinels themselves (asked in turn), on their
 * "+switch-master" channel; cb gets each message ("<name> <old ip> <old port> <new ip>
 * <new port>"). It takes no commands.
 */
struct pc_store *pc_store_new_sentinel_watch(struct event_base *base, const struct pc_config *cfg,
                                             struct pc_metrics *metrics, pc_store_message_cb cb,
                                             void *arg);
/*
 * A sentinel announced that the master (of [redis] sentinel_master) is now host:port: a
 * store of a Sentinel setup that is elsewhere goes there at once (and checks ROLE again).
 */
void pc_store_master_moved(struct pc_store *st, const char *host, int port);

/* A reply the caller found was not the answer to its command (a cache entry tagged with
 * another key): counted and handled as a desync, the connection dropped. */
void pc_store_out_of_step(struct pc_store *st, const char *what);

/* Fails every pending command's callback with PC_STORE_ERROR, then frees. Accepts NULL. */
void pc_store_free(struct pc_store *st);

/* 1 when connected and ready for commands. */
int pc_store_ready(const struct pc_store *st);
/* A subscriber: when (pc_now_us) its current subscription was confirmed; 0 while it is not
 * subscribed (connecting, or dropped), and for NULL or another store. */
uint64_t pc_store_listening_us(const struct pc_store *st);

/*
 * GET key. 0: cb will be called later. -1: not connected; cb will not be called
 * (the caller bypasses the cache at once). Every GET counts once in redis_get_ok or
 * redis_get_failed, a -1 too.
 */
int pc_store_get(struct pc_store *st, const char *key, pc_store_get_cb cb, void *arg);

/*
 * SET key value EX ttl_s, fire-and-forget: the outcome only moves the store_ok/
 * store_failed counters. Copies value. 0 queued; -1 not connected (counted as failed).
 */
int pc_store_set(struct pc_store *st, const char *key, const char *value, size_t len, int ttl_s);
/* The same, and cb(ok, arg) once the SET is answered or has failed (0 only). */
typedef void (*pc_store_set_done_cb)(int ok, void *arg);
int pc_store_set_cb(struct pc_store *st, const char *key, const char *value, size_t len, int ttl_s,
                    pc_store_set_done_cb cb, void *arg);

/* PING. 0: cb will be called later; -1 not connected (cb not called). */
int pc_store_ping(struct pc_store *st, pc_store_ping_cb cb, void *arg);

/*
 * Held writes. While held (pc_store_hold(st, 1) ... pc_store_hold(st, 0), nested), the
 * SETs, PINGs and commands sent are kept back, in order, and go out together when the
 * loop has nothing else to do (an event at the lowest priority of st's base), at most
 * PC_STORE_HOLD_MS after the first, or at once before any command sent unheld that is not
 * a lookup. Lookups (pc_store_get, pc_store_lookup) pass them: what a client waits for is
 * not queued behind writes nobody waits for. Only for writes whose order against other
 * clients' lookups does not matter (an answer's entry, its flight's PING, its lock's
 * release); anything else sent meanwhile keeps its order behind them. The calls' contracts
 * are unchanged: a held command that cannot go out (the connection went, a budget)
 * answers its callback with a failure. A cluster's router holds nothing.
 */
#define PC_STORE_HOLD_MS 1
void pc_store_hold(struct pc_store *st, int on);

/* Commands held back now (0 for a cluster's router). */
size_t pc_store_held(const struct pc_store *st);

/*
 * The order of sends and replies on st's base (a loop of loop.h; its top priority,
 * PC_LOOP_FIRST, is 0 on any base). Redis's replies run at the top: a lookup's answer
 * goes on to its model call before the loop's other waiting callbacks. Commands not held
 * are gathered into one send; on a loop with fewer than PC_STORE_AT_ONCE_BELOW callbacks
 * waiting, that send runs at the top too, right after the callback that wrote (a miss's
 * lookup does not wait for the requests read with it); on a busier loop it runs after the
 * callbacks waiting now, their commands in the same send (hits at high concurrency share
 * one send and one reply read).
 */
#define PC_STORE_AT_ONCE_BELOW 16

/* Bytes of commands gathered and not yet sent (0 for a cluster's router). */
size_t pc_store_gathered(const struct pc_store *st);

/*
 * Any command, for modules that need more than GET/SET (MGET, streams, ...). The reply
 * is NULL when the command failed (down, timed out, dropped); an error reply is passed
 * as PC_REPLY_ERROR. The reply is valid only until the callback returns. timeout_ms 0
 * means [redis] timeout_ms; a blocking command (XREADGROUP BLOCK) needs a longer one
 * and a store of its own, since it holds the connection. 0: cb will be called later;
 * -1: not connected (cb not called). argv/lens are copied.
 */
struct pc_reply;
enum pc_reply_type {
    PC_REPLY_NIL = 0,
    PC_REPLY_STRING,
    PC_REPLY_INTEGER,
    PC_REPLY_ARRAY,
    PC_REPLY_STATUS,
    PC_REPLY_ERROR,
};
typedef void (*pc_store_cmd_cb)(const struct pc_reply *reply, void *arg);
int pc_store_command(struct pc_store *st, int timeout_ms, pc_store_cmd_cb cb, void *arg, int argc,
                     const char **argv, const size_t *lens);
/* The same, for a lookup a client waits for (a read, or a read that takes a lock): it
 * passes held writes (pc_store_hold). */
int pc_store_lookup(struct pc_store *st, int timeout_ms, pc_store_cmd_cb cb, void *arg, int argc,
                    const char **argv, const size_t *lens);
enum pc_reply_type pc_reply_type(const struct pc_reply *r);
/* String, status or error text (not NUL-safe: use len); NULL for other types. */
const char *pc_reply_str(const struct pc_reply *r, size_t *len);
long long pc_reply_integer(const struct pc_reply *r);
/* Elements of an array reply (0 for other types); NULL past the end. */
size_t pc_reply_count(const struct pc_reply *r);
const struct pc_reply *pc_reply_elem(const struct pc_reply *r, size_t i);

/*
 * With [redis] cluster = on: fn(host, port, slots, up, pending, arg) for each master of st's
 * slot map (slots it serves, 1 when its connection is ready, commands awaiting a reply).
 * Returns how many; 0 for a store that is not a cluster's. From st's own thread only.
 */
typedef void (*pc_store_node_fn)(const char *host, int port, size_t slots, int up, size_t pending,
                                 void *arg);
size_t pc_store_cluster_nodes(const struct pc_store *st, pc_store_node_fn fn, void *arg);

/* Commands sent and not yet answered (for the drain on shutdown). */
size_t pc_store_pending(const struct pc_store *st);

#endif
