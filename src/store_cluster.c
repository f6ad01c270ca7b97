/*
 * store_cluster: the Redis Cluster router of a store ([redis] cluster = on). The router has
 * no connection of its own; it holds the slot map (slots.h) and one node store (store.c) per
 * master, and sends each command to the master serving the slot of its key.
 *
 *   command --key--> slot (CRC16, hash tags) --map--> master's connection --> Redis
 *      MGET of keys in several slots: one MGET per slot, the replies merged in key order
 *      PING (the barrier after a batch's SETs): one per master, ok when all answered
 *   reply MOVED slot host:port --> the map says so, a CLUSTER SLOTS is due, the command
 *      goes on to host:port (its encoded bytes were kept on the node)
 *   reply ASK slot host:port   --> ASKING + the command on host:port, the map unchanged
 *   reply CLUSTERDOWN, TRYAGAIN --> to the caller as an error (its request bypasses)
 *
 * The map comes from CLUSTER SLOTS, asked of any ready master, else of a seed ([redis]
 * host:port, then nodes, in turn: the probe). It is asked again every 5 s, and every 250 ms
 * while it is incomplete, a master's connection is down, or a MOVED said it is stale; a new
 * map keeps the connections of the masters it still names and drops the others (their
 * commands fail, their requests bypass).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "predcache/buf.h"
#include "predcache/cmdq.h"
#include "predcache/log.h"
#include "predcache/metrics.h"
#include "predcache/slots.h"
#include "store_int.h"

#define CL_TICK_MS 250               /* how often the router looks whether a map is due */
#define CL_REFRESH_EVERY_US 5000000  /* a map is asked for at least this often */
#define CL_REFRESH_MIN_US 100000     /* between two maps asked for by MOVED replies */
#define CL_PROBE_PATIENCE_US 1000000 /* a seed that does not connect: the next one */
#define CL_SLOTS_TIMEOUT_MS 2000     /* a map of many nodes is a large answer */
#define CL_REDIRECTS_MAX 5           /* per command: past it, the error goes to the caller */

struct pc_cluster {
    struct pc_store *self; /* the router */
    struct pc_slotmap *map;
    struct pc_store *conn[PC_SLOT_NODES_MAX]; /* conn[i] is map->nodes[i]'s; NULL: none yet */
    size_t owned[PC_SLOT_NODES_MAX];          /* slots each node serves */
    size_t uncovered;
    char (*seed_hosts)[PC_CFG_STR];
    int *seed_ports;
    int n_seeds;
    size_t seed_next;
    struct pc_store *probe; /* a seed's connection while no master of the map is ready */
    uint64_t probe_since_us;
    struct slots_ask *asking; /* the CLUSTER SLOTS in flight; NULL when none */
    int wanted;               /* a map is due now (MOVED, CLUSTERDOWN) */
    uint64_t asked_us;        /* the last CLUSTER SLOTS sent */
    struct event *tick;
    struct event *kick;
    struct pc_store *last; /* the node whose reply a caller is being handed */
    size_t rr;             /* round robin of keyless commands */
    int closing;
    time_t warned_s;
};

/* One CLUSTER SLOTS in flight: whom it asked (a node that names itself with an empty host
 * means the address we reached it on). Freed by its callback. */
struct slots_ask {
    struct pc_cluster *cl;
    char host[PC_CFG_STR];
    int port;
};

static int same_addr(const struct pc_store *st, const char *host, int port)
{
    return st != NULL && st->port == port && strcmp(st->host, host) == 0;
}

static int node_ready(const struct pc_store *st)
{
    return st != NULL && st->state == ST_CONNECTED;
}

/* Recounts the slots of each node (after a new map or a MOVED). */
static void recount(struct pc_cluster *cl)
{
    memset(cl->owned, 0, sizeof cl->owned);
    cl->uncovered = 0;
    for (size_t s = 0; s < PC_SLOTS; s++) {
        if (cl->map->owner[s] == 0)
            cl->uncovered++;
        else
            cl->owned[cl->map->owner[s] - 1]++;
    }
}

static int masters_all_up(const struct pc_cluster *cl)
{
    if (cl->map == NULL || cl->uncovered > 0)
        return 0;
    for (size_t i = 0; i < cl->map->n_nodes; i++)
        if (cl->owned[i] > 0 && !node_ready(cl->conn[i]))
            return 0;
    return 1;
}

/* The router's gauges, from its nodes. */
static void gauges(struct pc_cluster *cl)
{
    struct pc_metrics *m = cl->self->m;
    int64_t masters = 0, up = 0, pending = 0;
    for (size_t i = 0; cl->map != NULL && i < cl->map->n_nodes; i++) {
        if (cl->conn[i] != NULL)
            pending += (int64_t)pc_cmdq_count(cl->conn[i]->q);
        if (cl->owned[i] > 0) {
            masters++;
            up += node_ready(cl->conn[i]);
        }
    }
    if (cl->probe != NULL)
        pending += (int64_t)pc_cmdq_count(cl->probe->q);
    PC_METRIC_SET(m->cluster, 1);
    PC_METRIC_SET(m->cluster_slots, cl->map != NULL ? (int64_t)(PC_SLOTS - cl->uncovered) : 0);
    PC_METRIC_SET(m->cluster_masters, masters);
    PC_METRIC_SET(m->cluster_masters_up, up);
    PC_METRIC_SET(m->store_pending, pending);
    PC_METRIC_SET(m->redis_up, masters_all_up(cl));
}

/* The connection of map node i, made when there is none yet. NULL on no memory. */
static struct pc_store *node_at(struct pc_cluster *cl, size_t i)
{
    if (cl->conn[i] == NULL)
        cl->conn[i] = pc_store_node_new(cl->self->base, cl->self->cfg, cl->self->m,
                                        cl->map->nodes[i].host, cl->map->nodes[i].port, cl->self);
    return cl->conn[i];
}

/* The ready connection of the master serving key's slot; NULL when there is none. */
static struct pc_store *node_for_key(struct pc_cluster *cl, const char *key, size_t len)
{
    if (cl->map == NULL || cl->closing)
        return NULL;
    unsigned owner = cl->map->owner[pc_slot_of(key, len)];
    if (owner == 0)
        return NULL;
    struct pc_store *st = node_at(cl, owner - 1);
    return node_ready(st) ? st : NULL;
}

/* Any ready master, in turn (keyless commands: PUBLISH reaches every node of a cluster). */
static struct pc_store *any_node(struct pc_cluster *cl)
{
    size_t n = cl->map != NULL && !cl->closing ? cl->map->n_nodes : 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = cl->rr++ % n;
        if (cl->owned[i] > 0 && node_ready(cl->conn[i]))
            return cl->conn[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------ the slot map */

/* A CLUSTER SLOTS reply read into m: [[first, last, [host, port, ...], replicas...], ...].
 * Entries that do not read are skipped (a map that then does not cover every slot is asked
 * for again); 0 when at least one read. */
static int read_slots(const redisReply *r, const struct slots_ask *a, struct pc_slotmap *m)
{
    size_t good = 0;
    pc_slotmap_init(m);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t e = 0; e < r->elements; e++) {
        const redisReply *x = r->element[e];
        if (x->type != REDIS_REPLY_ARRAY || x->elements < 3 ||
            x->element[0]->type != REDIS_REPLY_INTEGER ||
            x->element[1]->type != REDIS_REPLY_INTEGER ||
            x->element[2]->type != REDIS_REPLY_ARRAY || x->element[2]->elements < 2)
            continue;
        const redisReply *node = x->element[2];
        if (node->element[0]->type != REDIS_REPLY_STRING ||
            node->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        long long first = x->element[0]->integer, last = x->element[1]->integer;
        long long port = node->element[1]->integer;
        char host[PC_SLOT_HOST_MAX];
        if (first < 0 || last < first || last >= PC_SLOTS || port <= 0 || port > 65535 ||
            node->element[0]->len >= sizeof host)
            continue;
        memcpy(host, node->element[0]->str, node->element[0]->len);
        host[node->element[0]->len] = '\0';
        if (host[0] == '\0' || strcmp(host, "?") == 0) /* "the address you reached me on" */
            pc_strlcpy(host, a->host, sizeof host);
        if (pc_slotmap_assign(m, (unsigned)first, (unsigned)last, host, (int)port) == 0)
            good++;
    }
    return good > 0 ? 0 : -1;
}

/* The masters of a map, for the log: "h:p (n slots), ...". */
static void describe(const struct pc_cluster *cl, char *out, size_t len)
{
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cl->map->n_nodes && n < len; i++) {
        if (cl->owned[i] == 0)
            continue;
        int k = snprintf(out + n, len - n, "%s%s:%d (%zu slots)", n > 0 ? ", " : "",
                         cl->map->nodes[i].host, cl->map->nodes[i].port, cl->owned[i]);
        if (k < 0)
            break;
        n += (size_t)k;
    }
}

/* Puts map m (taken) in place: the connections of the masters it still names are kept, the
 * others dropped once it is in place (their waiting commands fail; callers may send anew). */
static void apply(struct pc_cluster *cl, struct pc_slotmap *m)
{
    struct pc_store *next[PC_SLOT_NODES_MAX] = {0};
    struct pc_store *drop[PC_SLOT_NODES_MAX + 1];
    size_t n_drop = 0;
    int changed = cl->map == NULL || cl->map->n_nodes != m->n_nodes;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const struct pc_slot_node *nd = &m->nodes[i];
        for (size_t j = 0; cl->map != NULL && j < cl->map->n_nodes && next[i] == NULL; j++) {
            if (same_addr(cl->conn[j], nd->host, nd->port)) {
                next[i] = cl->conn[j];
                cl->conn[j] = NULL;
            }
        }
        if (next[i] == NULL && same_addr(cl->probe, nd->host, nd->port)) {
            next[i] = cl->probe;
            cl->probe = NULL;
        }
        if (next[i] == NULL) {
            changed = 1;
            next[i] = pc_store_node_new(cl->self->base, cl->self->cfg, cl->self->m, nd->host,
                                        nd->port, cl->self);
        }
    }
    for (size_t j = 0; cl->map != NULL && j < cl->map->n_nodes; j++)
        if (cl->conn[j] != NULL)
            drop[n_drop++] = cl->conn[j];
    if (cl->probe != NULL)
        drop[n_drop++] = cl->probe;
    cl->probe = NULL;
    if (!changed && memcmp(cl->map->owner, m->owner, sizeof m->owner) != 0)
        changed = 1;
    free(cl->map);
    cl->map = m;
    memcpy(cl->conn, next, sizeof next);
    recount(cl);
    if (changed) {
        char what[1024];
        describe(cl, what, sizeof what);
        pc_log(PC_LOG_INFO, "store: cluster slot map: %zu slots uncovered; masters %s",
               cl->uncovered, what);
    }
    for (size_t k = 0; k < n_drop; k++) {
        if (cl->last == drop[k])
            cl->last = NULL;
        pc_store_free(drop[k]); /* its commands fail now: their callers see the new map */
    }
    gauges(cl);
}

/* The CLUSTER SLOTS answer; arg is the ask (taken). */
static void on_slots(const struct pc_reply *reply, void *arg)
{
    struct slots_ask *a = arg;
    struct pc_cluster *cl = a->cl;
    if (cl->asking == a)
        cl->asking = NULL;
    if (cl->closing) {
        free(a);
        return;
    }
    struct pc_slotmap *m = malloc(sizeof *m);
    if (m != NULL && read_slots((const redisReply *)reply, a, m) == 0) {
        PC_METRIC_INC(cl->self->m->redis_cluster_refreshes);
        apply(cl, m);
    } else {
        free(m);
        cl->wanted = 1;
        if (time(NULL) != cl->warned_s) {
            cl->warned_s = time(NULL);
            size_t len = 0;
            const char *e = reply != NULL ? pc_reply_str(reply, &len) : NULL;
            pc_log(PC_LOG_WARN, "store: no slot map from Redis %s:%d: %.*s", a->host, a->port,
                   e != NULL ? (int)len : 60,
                   e != NULL       ? e
                   : reply != NULL ? "an answer to CLUSTER SLOTS that names no master"
                                   : "CLUSTER SLOTS failed (timed out, or the connection went)");
        }
    }
    free(a);
}

/* Asks for the map on any ready master, else on the probe, else starts a probe to the next
 * seed (or the same one while it is still connecting). */
static void refresh(struct pc_cluster *cl)
{
    if (cl->asking != NULL || cl->closing)
        return;
    uint64_t now = pc_now_us();
    struct pc_store *via = any_node(cl);
    if (via == NULL && node_ready(cl->probe))
        via = cl->probe;
    if (via == NULL) {
        if (cl->probe == NULL || now - cl->probe_since_us > CL_PROBE_PATIENCE_US) {
            if (cl->last == cl->probe)
                cl->last = NULL;
            pc_store_free(cl->probe);
            size_t i = cl->seed_next++ % (size_t)cl->n_seeds;
            cl->probe = pc_store_node_new(cl->self->base, cl->self->cfg, cl->self->m,
                                          cl->seed_hosts[i], cl->seed_ports[i], cl->self);
            cl->probe_since_us = now;
        }
        return;
    }
    struct slots_ask *a = calloc(1, sizeof *a);
    if (a == NULL)
        return;
    a->cl = cl;
    pc_strlcpy(a->host, via->host, sizeof a->host);
    a->port = via->port;
    const char *argv[] = {"CLUSTER", "SLOTS"};
    size_t lens[] = {7, 5};
    cl->asked_us = now;
    cl->wanted = 0;
    cl->asking = a;
    if (pc_store_command(via, CL_SLOTS_TIMEOUT_MS, on_slots, a, 2, argv, lens) != 0) {
        cl->asking = NULL;
        cl->wanted = 1;
        free(a);
    }
}

/* The router's timer and its kick (arg: the cluster, which owns both). A reshard sends a
 * MOVED per slot moved: a map asked for by them waits CL_REFRESH_MIN_US after the last. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_cluster *cl = arg;
    uint64_t since = pc_now_us() - cl->asked_us;
    if (cl->map != NULL && cl->wanted && since < CL_REFRESH_MIN_US && masters_all_up(cl))
        return; /* the next tick */
    if (cl->wanted || !masters_all_up(cl) || since >= CL_REFRESH_EVERY_US)
        refresh(cl);
}

/* A map is due now (from inside a node's callback: refresh runs on the next loop turn). */
static void kick(struct pc_cluster *cl)
{
    cl->wanted = 1;
    if (cl->kick != NULL)
        event_active(cl->kick, EV_TIMEOUT, 0);
}

/* ------------------------------------------------------------------ store.c's hooks */

void pc_cluster_node_changed(struct pc_store *router, struct pc_store *node)
{
    struct pc_cluster *cl = router->cl;
    if (cl == NULL || cl->closing)
        return;
    if (node->state == ST_CONNECTED && (cl->map == NULL || node == cl->probe) && cl->asking == NULL)
        kick(cl);
    gauges(cl);
}

int pc_cluster_redirected(struct pc_store *router, struct pc_store *node, struct cmd *c,
                          const char *err, size_t len)
{
    (void)node;
    struct pc_cluster *cl = router->cl;
    int ask, port;
    unsigned slot;
    char host[PC_SLOT_HOST_MAX];
    if (cl == NULL || cl->closing || cl->map == NULL)
        return 0;
    if (pc_slot_parse_redirect(err, len, &ask, &slot, host, sizeof host, &port) != 0) {
        if (len >= 11 && memcmp(err, "CLUSTERDOWN", 11) == 0)
            cl->wanted = 1;
        return 0;
    }
    if (ask) {
        PC_METRIC_INC(router->m->redis_ask);
    } else {
        PC_METRIC_INC(router->m->redis_moved);
        if (pc_slotmap_assign(cl->map, slot, slot, host, port) == 0)
            recount(cl);
        kick(cl); /* one slot moved: more probably did */
    }
    if (c->redirects >= CL_REDIRECTS_MAX)
        return 0;
    int i = pc_slotmap_node(cl->map, host, port);
    struct pc_store *to = i >= 0 ? node_at(cl, (size_t)i) : NULL;
    return to != NULL && pc_store_resend(to, c, ask) == 0;
}

void pc_cluster_answering(struct pc_store *router, struct pc_store *node)
{
    if (router->cl != NULL)
        router->cl->last = node;
}

/* ------------------------------------------------------------------ the API */

struct pc_store *pc_cluster_new(struct event_base *base, const struct pc_config *cfg,
                                struct pc_metrics *metrics)
{
    struct pc_store *st = calloc(1, sizeof *st);
    struct pc_cluster *cl = calloc(1, sizeof *cl);
    if (st == NULL || cl == NULL)
        goto fail;
    st->base = base;
    st->cfg = cfg;
    st->m = metrics;
    st->cl = cl;
    cl->self = st;
    if (pc_store_seeds(cfg, &cl->seed_hosts, &cl->seed_ports, &cl->n_seeds) != 0)
        goto fail;
    cl->tick = event_new(base, -1, EV_PERSIST, on_tick, cl);
    cl->kick = event_new(base, -1, 0, on_tick, cl);
    if (cl->tick == NULL || cl->kick == NULL)
        goto fail;
    struct timeval tv = {0, CL_TICK_MS * 1000};
    event_add(cl->tick, &tv);
    gauges(cl);
    refresh(cl); /* the first probe */
    return st;
fail:
    if (cl != NULL) {
        if (cl->tick)
            event_free(cl->tick);
        if (cl->kick)
            event_free(cl->kick);
        free(cl->seed_hosts);
        free(cl->seed_ports);
    }
    free(cl);
    free(st);
    return NULL;
}

void pc_cluster_free(struct pc_store *router)
{
    struct pc_cluster *cl = router->cl;
    struct pc_store *conns[PC_SLOT_NODES_MAX + 1];
    size_t n = 0;
    cl->closing = 1; /* callers answered below that send again are refused */
    event_free(cl->tick);
    event_free(cl->kick);
    for (size_t i = 0; cl->map != NULL && i < cl->map->n_nodes; i++)
        if (cl->conn[i] != NULL)
            conns[n++] = cl->conn[i];
    if (cl->probe != NULL)
        conns[n++] = cl->probe;
    memset(cl->conn, 0, sizeof cl->conn);
    cl->probe = NULL;
    for (size_t k = 0; k < n; k++) {
        conns[k]->router = NULL; /* it may outlive the router (freed after a callback) */
        pc_store_free(conns[k]);
    }
    free(cl->map);
    free(cl->seed_hosts);
    free(cl->seed_ports);
    free(cl);
    free(router);
}

size_t pc_store_cluster_nodes(const struct pc_store *st, pc_store_node_fn fn, void *arg)
{
    const struct pc_cluster *cl = st->cl;
    size_t n = 0;
    for (size_t i = 0; cl != NULL && cl->map != NULL && i < cl->map->n_nodes; i++) {
        if (cl->owned[i] == 0)
            continue;
        const struct pc_store *c = cl->conn[i];
        fn(cl->map->nodes[i].host, cl->map->nodes[i].port, cl->owned[i], node_ready(c),
           c != NULL ? pc_cmdq_count(c->q) : 0, arg);
        n++;
    }
    return n;
}

int pc_cluster_ready(const struct pc_store *router)
{
    return !router->cl->closing && masters_all_up(router->cl);
}

size_t pc_cluster_pending(const struct pc_store *router)
{
    const struct pc_cluster *cl = router->cl;
    size_t n = cl->probe != NULL ? pc_cmdq_count(cl->probe->q) : 0;
    for (size_t i = 0; cl->map != NULL && i < cl->map->n_nodes; i++)
        if (cl->conn[i] != NULL)
            n += pc_cmdq_count(cl->conn[i]->q);
    return n;
}

int pc_cluster_get(struct pc_store *router, const char *key, pc_store_get_cb cb, void *arg)
{
    struct pc_store *node = node_for_key(router->cl, key, strlen(key));
    if (node == NULL) {
        PC_METRIC_INC(router->m->redis_get_failed);
        return -1;
    }
    return pc_store_get(node, key, cb, arg);
}

int pc_cluster_set(struct pc_store *router, const char *key, const char *value, size_t len,
                   int ttl_s, pc_store_set_done_cb cb, void *arg)
{
    struct pc_store *node = node_for_key(router->cl, key, strlen(key));
    if (node == NULL) {
        PC_METRIC_INC(router->m->store_failed);
        return -1;
    }
    return pc_store_set_cb(node, key, value, len, ttl_s, cb, arg);
}

/* A PING to every master: ok when every master was there and answered. Each connection
 * answers in order, so it also says that every command sent before it was answered (the
 * barrier after a batch's SETs, which go to many masters). The caller's callback is a PING's
 * (cb) or a command's (cmd_cb, handed a PONG status or NULL). */
struct ping_all {
    pc_store_ping_cb cb;
    pc_store_cmd_cb cmd_cb;
    void *arg;
    size_t waiting;
    int ok;
};

/* One master's PONG (or failure); arg is the ping_all, freed by the last answer. */
static void on_ping_one(int ok, void *arg)
{
    struct ping_all *pa = arg;
    pa->ok = pa->ok && ok;
    if (--pa->waiting > 0)
        return;
    if (pa->cmd_cb != NULL) {
        redisReply pong = {.type = REDIS_REPLY_STATUS, .len = 4, .str = (char *)"PONG"};
        pa->cmd_cb(pa->ok ? (const struct pc_reply *)&pong : NULL, pa->arg);
    } else {
        pa->cb(pa->ok, pa->arg);
    }
    free(pa);
}

static int ping_all(struct pc_cluster *cl, pc_store_ping_cb cb, pc_store_cmd_cb cmd_cb, void *arg)
{
    struct ping_all *pa = calloc(1, sizeof *pa);
    if (pa == NULL || cl->map == NULL || cl->closing) {
        free(pa);
        return -1;
    }
    pa->cb = cb;
    pa->cmd_cb = cmd_cb;
    pa->arg = arg;
    pa->ok = masters_all_up(cl);
    pa->waiting = 1; /* this function's own hold while the pings go out */
    for (size_t i = 0; i < cl->map->n_nodes; i++) {
        if (cl->owned[i] > 0 && node_ready(cl->conn[i]) &&
            pc_store_ping(cl->conn[i], on_ping_one, pa) == 0)
            pa->waiting++;
    }
    if (pa->waiting == 1) { /* none went out: the caller goes on at once */
        free(pa);
        return -1;
    }
    pa->waiting--; /* the replies come later: never from inside this call */
    return 0;
}

int pc_cluster_ping(struct pc_store *router, pc_store_ping_cb cb, void *arg)
{
    return ping_all(router->cl, cb, NULL, arg);
}

/* ---- MGET over several slots: one MGET per slot, merged in the caller's key order */

struct mget {
    pc_store_cmd_cb cb;
    void *arg;
    size_t n; /* keys */
    size_t waiting;
    int failed;
    redisReply top;    /* the merged array handed to cb */
    redisReply *elems; /* its elements, strings copied from the parts */
    redisReply **ptrs;
    size_t *order; /* key indexes sorted by slot */
    unsigned *slots;
};

struct mget_part {
    struct mget *mg;
    const size_t *idx; /* into mg->order */
    size_t n;
};

static void mget_free(struct mget *mg)
{
    for (size_t k = 0; k < mg->n; k++)
        free(mg->elems[k].str);
    free(mg->elems);
    free(mg->ptrs);
    free(mg->order);
    free(mg->slots);
    free(mg);
}

/* One slot's MGET reply (valid during the call: its strings are copied); arg is the part
 * (taken); its mget is answered and freed by the last part. */
static void on_mget_part(const struct pc_reply *reply, void *arg)
{
    struct mget_part *part = arg;
    struct mget *mg = part->mg;
    const redisReply *r = (const redisReply *)reply;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != part->n) {
        mg->failed = 1;
    } else {
        for (size_t k = 0; k < part->n && !mg->failed; k++) {
            const redisReply *e = r->element[k];
            redisReply *out = &mg->elems[part->idx[k]];
            if (e->type == REDIS_REPLY_NIL) {
                out->type = REDIS_REPLY_NIL;
            } else if (e->type == REDIS_REPLY_STRING && (out->str = malloc(e->len + 1)) != NULL) {
                memcpy(out->str, e->str, e->len);
                out->str[e->len] = '\0';
                out->len = e->len;
                out->type = REDIS_REPLY_STRING;
            } else {
                mg->failed = 1;
            }
        }
    }
    free(part);
    if (--mg->waiting > 0)
        return;
    mg->cb(mg->failed ? NULL : (const struct pc_reply *)&mg->top, mg->arg);
    mget_free(mg);
}

/* qsort_r's comparison of two key indexes by their slots (slots: the array). */
static int by_slot(const void *a, const void *b, void *slots)
{
    const unsigned *s = slots;
    unsigned x = s[*(const size_t *)a], y = s[*(const size_t *)b];
    return x < y ? -1 : x > y;
}

/* 0: sent (cb later); 1: every key is in one slot (the caller sends it whole); -1: a master
 * is not ready, or no memory (nothing sent, cb not called). */
static int mget_split(struct pc_cluster *cl, int timeout_ms, pc_store_cmd_cb cb, void *arg,
                      int argc, const char **argv, const size_t *lens)
{
    size_t n = (size_t)argc - 1;
    struct mget *mg = calloc(1, sizeof *mg);
    if (mg == NULL)
        return -1;
    mg->cb = cb;
    mg->arg = arg;
    mg->n = n;
    mg->elems = calloc(n, sizeof *mg->elems);
    mg->ptrs = calloc(n, sizeof *mg->ptrs);
    mg->order = calloc(n, sizeof *mg->order);
    mg->slots = calloc(n, sizeof *mg->slots);
    const char **sub = calloc(n + 1, sizeof *sub);
    size_t *sublens = calloc(n + 1, sizeof *sublens);
    if (mg->elems == NULL || mg->ptrs == NULL || mg->order == NULL || mg->slots == NULL ||
        sub == NULL || sublens == NULL)
        goto fail;
    for (size_t k = 0; k < n; k++) {
        mg->slots[k] = pc_slot_of(argv[k + 1], lens[k + 1]);
        mg->order[k] = k;
        mg->ptrs[k] = &mg->elems[k];
        mg->elems[k].type = REDIS_REPLY_NIL;
    }
    qsort_r(mg->order, n, sizeof *mg->order, by_slot, mg->slots);
    if (mg->slots[mg->order[0]] == mg->slots[mg->order[n - 1]]) {
        free(sub);
        free(sublens);
        mget_free(mg);
        return 1;
    }
    for (size_t k = 0; k < n; k++) /* every master there, before anything is sent */
        if (node_for_key(cl, argv[mg->order[k] + 1], lens[mg->order[k] + 1]) == NULL)
            goto fail;
    mg->top.type = REDIS_REPLY_ARRAY;
    mg->top.elements = n;
    mg->top.element = mg->ptrs;
    mg->waiting = 1; /* this function's own hold */
    sub[0] = "MGET";
    sublens[0] = 4;
    for (size_t from = 0; from < n;) {
        size_t to = from + 1;
        while (to < n && mg->slots[mg->order[to]] == mg->slots[mg->order[from]])
            to++;
        struct mget_part *part = calloc(1, sizeof *part);
        for (size_t k = from; k < to; k++) {
            sub[1 + k - from] = argv[mg->order[k] + 1];
            sublens[1 + k - from] = lens[mg->order[k] + 1];
        }
        struct pc_store *node = node_for_key(cl, sub[1], sublens[1]);
        if (part != NULL) {
            part->mg = mg;
            part->idx = mg->order + from;
            part->n = to - from;
        }
        if (part != NULL && node != NULL &&
            pc_store_command(node, timeout_ms, on_mget_part, part, (int)(to - from + 1), sub,
                             sublens) == 0) {
            mg->waiting++;
        } else {
            free(part);
            mg->failed = 1;
        }
        from = to;
    }
    free(sub);
    free(sublens);
    if (--mg->waiting == 0) { /* nothing went out */
        mget_free(mg);
        return -1;
    }
    return 0;
fail:
    free(sub);
    free(sublens);
    mget_free(mg);
    return -1;
}

int pc_cluster_command(struct pc_store *router, int timeout_ms, pc_store_cmd_cb cb, void *arg,
                       int argc, const char **argv, const size_t *lens)
{
    struct pc_cluster *cl = router->cl;
    int first;
    int nk = pc_slot_command_keys(argc, argv, lens, &first);
    if (argc == 1 && lens[0] == 4 && strncasecmp(argv[0], "PING", 4) == 0)
        return ping_all(cl, NULL, cb, arg);
    if (nk > 1 && lens[0] == 4 && strncasecmp(argv[0], "MGET", 4) == 0) {
        int rc = mget_split(cl, timeout_ms, cb, arg, argc, argv, lens);
        if (rc != 1)
            return rc;
    }
    /* Several keys go where the first goes: a script's keys share a hash tag (Redis refuses
     * keys of several slots with CROSSSLOT, which the caller sees as an error reply). */
    struct pc_store *node = nk == 0 ? any_node(cl) : node_for_key(cl, argv[first], lens[first]);
    if (node == NULL)
        return -1;
    return pc_store_command(node, timeout_ms, cb, arg, argc, argv, lens);
}

void pc_cluster_out_of_step(struct pc_store *router, const char *what)
{
    struct pc_cluster *cl = router->cl;
    if (cl->last != NULL)
        pc_store_out_of_step(cl->last, what);
}
