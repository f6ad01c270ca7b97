/*
 * grpc_cache: the cached path of the gRPC port (TF Serving Predict, Classify, Regress;
 * KServe v2 ModelInfer), built like the data port's:
 *
 *   key material (grpckey) -> credentials ([cache] credentials) -> the model's version
 *   (given, or resolved as the data port resolves it, over gRPC: versions) -> its invalidation
 *   generations -> the key (cachekey: head + material) -> the in-process tier, then Redis
 *   -> a fresh entry: HIT (a KServe v2 answer carries the requester's id)
 *   -> else one model server call per key in this worker (flight: the others wait and
 *      are answered COALESCED), its OK answer of one message stored as an entry (PC4:
 *      status 200, application/grpc, the message; KServe's id left out) for [cache] ttl_s
 *      (+ grace_s in Redis), in the in-process tier too.
 *
 * Redis unavailable: BYPASS (the model server answers, nothing is stored). What the cache
 * cannot key is passed through (PASS, with its reason in the access line).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/envelope.h"
#include "predcache/flight.h"
#include "predcache/grpc_proxy.h"
#include "predcache/grpcwire.h"
#include "predcache/h2srv.h"
#include "predcache/log.h"
#include "predcache/purges.h"
#include "predcache/l1.h"
#include "predcache/l1refresh.h"
#include "predcache/metrics.h"
#include "predcache/routes.h"
#include "predcache/store.h"
#include "predcache/versions.h"
#include "predcache/wstate.h"
#include "answer.h"
#include "coalesce.h"
#include "grpc_call.h"

static void pass(struct gcall *g, const char *reason)
{
    g->result = "PASS";
    g->reason = reason;
    pc_grpc_call_forward(g);
}

/* What a stored value is worth to g (the data port's rule): FRESH or STALE with its message
 * in *msg (pointing into data) and the TTL it was stored with in *ttl_s, or NONE. */
static enum pc_entry_use entry_of(const struct gcall *g, const char *data, size_t len,
                                  const char **msg, size_t *msg_len, int *ttl_s)
{
    struct pc_envelope env;
    char scratch[PC_ENV_SCRATCH];
    enum pc_entry_use use = pc_answer_entry_use(g->w, g->key, g->w->cfg->ttl_s, -1, data, len, &env,
                                                scratch, sizeof scratch);
    if (use == PC_ENTRY_NONE || env.status != 200 ||
        strcmp(env.content_type, "application/grpc") != 0)
        return PC_ENTRY_NONE;
    *msg = env.body;
    *msg_len = env.body_len;
    if (ttl_s != NULL)
        *ttl_s = env.ttl_s;
    return use;
}

static int fresh_entry(const struct gcall *g, const char *data, size_t len, const char **msg,
                       size_t *msg_len)
{
    return entry_of(g, data, len, msg, msg_len, NULL) == PC_ENTRY_FRESH;
}

/* Answers g with a stored message (its own KServe v2 id written in) as result. */
static void replay(struct gcall *g, const char *msg, size_t len, const char *result)
{
    g->result = result;
    if (g->kind != PC_GRPC_V2_INFER) {
        pc_grpc_call_message(g, (const uint8_t *)msg, len, -1);
        return;
    }
    struct pc_buf out;
    pc_buf_init(&out);
    if (pc_grpc_answer_with_id((const uint8_t *)msg, len, g->rd.id, &out) != 0)
        pc_grpc_call_status(g, PC_GRPC_RESOURCE_EXHAUSTED, "out of memory", -1);
    else
        pc_grpc_call_message(g, (const uint8_t *)out.data, out.len, -1);
    pc_buf_release(&out);
}

/* ---- storing ------------------------------------------------------------------------ */

/* An answer's one message as stored, appended to msg: an OK answer of one uncompressed
 * message, KServe's id left out. 1 done; 0 when the answer is not to be stored. */
static int storable(enum pc_grpc_kind kind, const struct pc_h2_resp *r, int grpc_status,
                    struct pc_buf *msg)
{
    if (r->error != PC_H2_OK || r->status != 200 || grpc_status != PC_GRPC_OK)
        return 0;
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcmp(r->headers[i].name, "grpc-encoding") == 0 &&
            strcmp(r->headers[i].value, "identity") != 0)
            return 0;
    const uint8_t *m;
    size_t len;
    if (!pc_h2_grpc_message(r, &m, &len))
        return 0;
    if (kind == PC_GRPC_V2_INFER)
        return pc_grpc_answer_without_id(m, len, msg) == 0;
    return pc_buf_append(msg, m, len) == 0;
}

/* SETs msg under key as a PC4 entry fresh for ttl_s (kept grace_s more in Redis), and puts
 * it in the in-process tier; not when key was purged since begun_us (pc_answer_purged). */
static void store_message(struct pc_worker *w, const char *key, int ttl_s, const struct pc_buf *msg,
                          uint64_t begun_us)
{
    if (pc_answer_purged(w, key, begun_us))
        return;
    struct pc_envelope env = {
        .key_tag = pc_envelope_key_tag(key, strlen(key)),
        .status = 200,
        .stored_at_ms = pc_wall_ms(),
        .ttl_s = ttl_s,
        .content_type = "application/grpc",
        .body = msg->data != NULL ? msg->data : "",
        .body_len = msg->len,
    };
    struct pc_buf value;
    pc_buf_init(&value);
    if (pc_envelope_encode(&env, &value) == 0 &&
        pc_store_set(w->store, key, value.data, value.len, pc_answer_redis_ttl(w, ttl_s)) == 0)
        pc_l1_put(w->l1, key, value.data, value.len);
    pc_buf_release(&value);
}

/* ---- stale-while-revalidate ---------------------------------------------------------- */

/* A background call refreshing a stale entry: one per key (w->refreshing), stored with the
 * TTL the stale entry had. */
struct grefresh {
    struct pc_worker *w;
    enum pc_grpc_kind kind;
    int ttl_s;
    uint64_t begun_us; /* when it was started: a purge since keeps its answer out */
    char key[PC_KEY_MAX];
};

static void on_refresh(const struct pc_h2_resp *r, void *arg)
{
    struct grefresh *rf = arg;
    struct pc_worker *w = rf->w;
    struct pc_buf msg;
    pc_buf_init(&msg);
    int code = pc_h2_grpc_status(r);
    if (storable(rf->kind, r, code, &msg)) {
        store_message(w, rf->key, rf->ttl_s, &msg, rf->begun_us);
        PC_METRIC_INC(w->metrics.refresh_ok);
    } else {
        PC_METRIC_INC(w->metrics.refresh_failed);
        pc_log(PC_LOG_INFO, "grpc: refresh of %s not stored: %s", rf->key,
               r->error != PC_H2_OK ? r->error_text : pc_grpc_status_name(code));
    }
    pc_buf_release(&msg);
    struct pc_flight *f = pc_flights_find(w->refreshing, rf->key);
    if (f != NULL)
        pc_flights_finish(w->refreshing, f);
    free(rf);
}

/* Starts g's refresh (its metadata and message, copied) unless one of its key is running
 * or the gRPC model server is down. g->req must be valid. */
static void refresh_start(struct gcall *g, int stale_ttl_s)
{
    struct pc_worker *w = g->w;
    struct grefresh *rf = NULL;
    if (pc_flights_find(w->refreshing, g->key) != NULL || !pc_grpc_backend_up(w) ||
        (rf = calloc(1, sizeof *rf)) == NULL)
        return;
    rf->w = w;
    rf->begun_us = pc_now_us();
    rf->kind = g->kind;
    rf->ttl_s = stale_ttl_s > 0 ? stale_ttl_s : w->cfg->ttl_s;
    pc_strlcpy(rf->key, g->key, sizeof rf->key);
    struct pc_header h[PC_GRPC_MAX_HEADERS];
    size_t n = pc_grpc_call_headers(g, h, PC_GRPC_MAX_HEADERS);
    size_t len;
    const uint8_t *body = pc_h2_req_body(g->req, &len);
    if (pc_flights_start(w->refreshing, rf->key, rf) == NULL) {
        free(rf);
        return;
    }
    PC_METRIC_INC(w->metrics.backend_requests);
    if (pc_h2_client_call(w->grpc_up, pc_h2_req_path(g->req), h, n, body, len,
                          w->cfg->backend_timeout_ms, on_refresh, rf) == NULL) {
        pc_flights_finish(w->refreshing, pc_flights_find(w->refreshing, rf->key));
        free(rf);
    }
}

/* ---- misses: coalescing in the worker, then across processes ------------------------- */

/* The waiters of g's flight, answered with msg (ok) as COALESCED, or each sent on its own
 * call; the flight ends. */
static void answer_waiters(struct gcall *g, const struct pc_buf *msg, int ok)
{
    struct pc_worker *w = g->w;
    g->leader = 0;
    struct pc_flight *f = pc_flights_find(w->grpc_flights, g->key);
    if (f == NULL || f->leader != g)
        return; /* g went alone (a purge since the flight began): the flight is its leader's */
    for (size_t i = 0; i < f->n_waiters; i++) {
        struct gcall *o = f->waiters[i];
        if (o->gone) {
            pc_grpc_call_free(o);
        } else if (ok) {
            replay(o, msg->data != NULL ? msg->data : "", msg->len, "COALESCED");
            pc_grpc_call_free(o);
        } else {
            o->result = "MISS";
            pc_grpc_call_forward(o);
        }
    }
    f->n_waiters = 0;
    pc_flights_finish(w->grpc_flights, f);
}

/* The leader g and its waiters answered from a fresh value now in Redis; g is freed. */
static int answer_from_redis(struct gcall *g, const char *data, size_t len, const char *result)
{
    const char *m;
    size_t n;
    if (!fresh_entry(g, data, len, &m, &n))
        return 0;
    struct pc_buf msg;
    pc_buf_init(&msg);
    int ok = pc_buf_append(&msg, m, n) == 0;
    if (ok)
        pc_l1_put(g->w->l1, g->key, data, len);
    replay(g, m, n, result);
    answer_waiters(g, &msg, ok);
    pc_buf_release(&msg);
    pc_grpc_call_free(g);
    return 1;
}

/* After waiting for another process: its answer should be in Redis now; else our own
 * call (a MISS). */
static void on_relook(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct gcall *g = arg;
    if (res == PC_STORE_HIT && answer_from_redis(g, data, len, "COALESCED"))
        return;
    if (res == PC_STORE_ERROR) {
        g->result = "BYPASS";
        g->reason = "redis-error";
    }
    pc_grpc_call_forward(g);
}

/* The wait for another process ended (lock.h's relook): look again. */
static void relook(void *owner)
{
    struct gcall *g = owner;
    if (pc_store_get(g->w->store, g->key, on_relook, g) != 0) {
        g->result = "BYPASS";
        g->reason = "redis-unavailable";
        pc_grpc_call_forward(g);
    }
}

void pc_grpc_cache_on_answered(struct pc_worker *w, const char *key)
{
    struct pc_flight *f = w->grpc_flights != NULL ? pc_flights_find(w->grpc_flights, key) : NULL;
    struct gcall *g = f != NULL ? f->leader : NULL;
    if (g != NULL && g->lock.w != NULL)
        pc_lockwait_wake(&g->lock);
}

/* How long g may wait for another process: the lock's bound, its deadline's, predcache's. */
static long wait_ms(const struct gcall *g)
{
    long ms = pc_lock_wait_ms(g->w, g->start_us);
    const char *gt = g->req != NULL ? pc_h2_req_header(g->req, "grpc-timeout") : NULL;
    int64_t us = gt != NULL ? pc_grpc_timeout_parse(gt) : -1;
    if (us > 0) {
        long left = (long)((us - (int64_t)(pc_now_us() - g->start_us)) / 1000);
        if (left < ms)
            ms = left;
    }
    return ms;
}

/* What the lock script said; arg is the leader, held by the script until now. */
static void on_lock(enum pc_lock what, const char *data, size_t len, void *arg)
{
    struct gcall *g = arg;
    if (what == PC_LOCK_FOUND && answer_from_redis(g, data, len, "HIT"))
        return; /* it landed since our GET */
    if (pc_lockwait_answer(&g->lock, what, g->gone || g->w->closing ? 0 : wait_ms(g)))
        return;              /* waiting for the holder's announcement */
    pc_grpc_call_forward(g); /* the lock is ours, or Redis could not say: call the model */
}

/* A miss (or a bypass): joins the call for the same key running in this worker, or leads
 * it; a leader of a MISS asks the other processes' lock first ([cache] lock_timeout_ms). */
static void miss(struct gcall *g, const char *result, const char *reason)
{
    struct pc_worker *w = g->w;
    g->result = result;
    g->reason = reason;
    struct pc_flight *f = pc_flights_find(w->grpc_flights, g->key);
    /* A purge of the entry since that call came: its answer may be what the purge removed,
     * so g goes alone (that answer is kept out of the cache: store_message). */
    int purged = f != NULL && pc_purges_since(w->purges, g->key, f->begun_us);
    if (f != NULL && !purged && !f->done && pc_flight_join(f, g) == 0)
        return; /* answered with the leader's answer (answer_waiters) */
    if (f == NULL && (f = pc_flights_start(w->grpc_flights, g->key, g)) != NULL) {
        f->begun_us = g->start_us;
        g->leader = 1;
    }
    if (g->leader && strcmp(result, "MISS") == 0 && pc_lock_wanted(w, 1)) {
        g->lock = (struct pc_lockwait){.w = w, .relook = relook, .owner = g};
        if (pc_lockwait_ask(&g->lock, g->key, on_lock, g) == 0)
            return;
        g->result = "BYPASS";
        g->reason = "redis-unavailable";
    }
    pc_grpc_call_forward(g);
}

static void on_lookup(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct gcall *g = arg;
    if (g->gone || g->w->closing) { /* the client left, or the worker is being torn down */
        pc_grpc_call_status(g, PC_GRPC_UNAVAILABLE, "predcache is shutting down", -1);
        pc_grpc_call_free(g);
        return;
    }
    const char *msg;
    size_t n;
    int ttl_s = 0;
    switch (res == PC_STORE_HIT ? entry_of(g, data, len, &msg, &n, &ttl_s) : PC_ENTRY_NONE) {
    case PC_ENTRY_FRESH:
        pc_l1_put(g->w->l1, g->key, data, len);
        replay(g, msg, n, "HIT");
        pc_grpc_call_free(g);
        return;
    case PC_ENTRY_STALE: /* answered at once, and refreshed behind it */
        refresh_start(g, ttl_s);
        replay(g, msg, n, "STALE");
        pc_grpc_call_free(g);
        return;
    case PC_ENTRY_NONE:
        break;
    }
    if (res == PC_STORE_ERROR)
        miss(g, "BYPASS", "redis-error");
    else
        miss(g, "MISS", NULL);
}

static void key_and_lookup(struct gcall *g)
{
    struct pc_worker *w = g->w;
    const struct pc_config *cfg = w->cfg;
    char path[3 * PC_GRPC_NAME_MAX];
    snprintf(path, sizeof path, "%s %s@%s", pc_h2_req_path(g->req), g->rd.model, g->version);
    const char *backend = cfg->backend_cache_id[0] ? cfg->backend_cache_id : cfg->backend_grpc_url;
    struct pc_key_head h = {
        .backend = backend,
        .method = "GRPC",
        .path = path,
        .query = "",
        .media = "grpc",
        .scope = g->scope,
        .ns = g->ns_gen[0] ? g->ns_gen : cfg->namespace_,
        .vary = "",
        .vary_len = 0,
    };
    struct pc_buf head;
    pc_buf_init(&head);
    struct pc_key_params kp = {.prefix = cfg->key_prefix, .family = PC_FAMILY_RAW};
    enum pc_key_kind kind;
    char err[128];
    int rc = pc_cachekey_head(&h, &head);
    if (rc == 0)
        rc = pc_cachekey_body(&kp, head.data, head.len, g->material.data, g->material.len, 0,
                              g->key, &kind, err, sizeof err);
    pc_buf_release(&head);
    if (rc != 0) { /* a model name or version with a newline in it */
        g->key[0] = '\0';
        pass(g, "not-keyable");
        return;
    }
    if (g->skip_lookup) {
        miss(g, "BYPASS", "generation-unknown");
        return;
    }
    struct pc_buf v;
    pc_buf_init(&v);
    const char *msg;
    size_t n;
    if (pc_l1_get_refresh(w->l1, w->store, g->key, &v, &w->metrics.l1_refreshes) &&
        fresh_entry(g, v.data, v.len, &msg, &n)) {
        PC_METRIC_INC(w->metrics.l1_hits);
        replay(g, msg, n, "HIT");
        pc_buf_release(&v);
        pc_grpc_call_free(g);
        return;
    }
    pc_buf_release(&v);
    if (pc_store_get(w->store, g->key, on_lookup, g) != 0)
        miss(g, "BYPASS", "redis-unavailable");
}

static void on_generation(void *arg);

/* The invalidation generations of the namespace, the model and its version, as the data
 * port reads them: a POST /cache/invalidate reaches gRPC entries too. */
static void with_generation(struct gcall *g, int may_wait)
{
    struct pc_worker *w = g->w;
    char gen[PC_GEN_MAX];
    switch (pc_generations_get(w->generations, w->cfg->namespace_, g->rd.model, g->version, gen,
                               sizeof gen, may_wait ? on_generation : NULL, g)) {
    case PC_GEN_PENDING:
        return;
    case PC_GEN_UNKNOWN:
        g->skip_lookup = 1;
        break;
    case PC_GEN_KNOWN:
        break;
    }
    if (gen[0] != '\0')
        snprintf(g->ns_gen, sizeof g->ns_gen, "%s\x1f%s", w->cfg->namespace_, gen);
    key_and_lookup(g);
}

static void on_generation(void *arg)
{
    struct gcall *g = arg;
    if (g->gone || g->w->closing) { /* the client left, or the worker is being torn down */
        pc_grpc_call_status(g, PC_GRPC_UNAVAILABLE, "predcache is shutting down", -1);
        pc_grpc_call_free(g);
        return;
    }
    with_generation(g, 0);
}

static void with_version(struct gcall *g, const char *version)
{
    if (version == NULL) {
        pass(g, "version-unknown");
        return;
    }
    pc_strlcpy(g->version, version, sizeof g->version);
    with_generation(g, 1);
}

static void on_version(const char *version, void *arg)
{
    struct gcall *g = arg;
    if (g->gone || g->w->closing) { /* the client left, or the worker is being torn down */
        pc_grpc_call_status(g, PC_GRPC_UNAVAILABLE, "predcache is shutting down", -1);
        pc_grpc_call_free(g);
        return;
    }
    with_version(g, version);
}

void pc_grpc_cache_start(struct gcall *g)
{
    struct pc_worker *w = g->w;
    const struct pc_config *cfg = w->cfg;
    char err[256];
    if (pc_grpc_key_material(g->kind, g->msg, g->msg_len, &g->material, &g->rd, err, sizeof err) !=
        0) {
        g->result = "ERROR";
        pc_grpc_call_status(g, PC_GRPC_INVALID_ARGUMENT, err, -1);
        pc_grpc_call_free(g);
        return;
    }
    if (g->rd.id_cut) {
        pass(g, "id-too-long");
        return;
    }
    size_t nh;
    const struct pc_header *h = pc_h2_req_headers(g->req, &nh);
    if (cfg->credentials == PC_CREDS_BYPASS &&
        pc_creds_present(h, nh, cfg->credential_headers, cfg->n_credential_headers)) {
        pass(g, "credentials");
        return;
    }
    if (cfg->credentials == PC_CREDS_ISOLATE &&
        pc_creds_scope(h, nh, cfg->credential_headers, cfg->n_credential_headers, g->scope) != 0) {
        pc_grpc_call_status(g, PC_GRPC_RESOURCE_EXHAUSTED, "out of memory", -1);
        pc_grpc_call_free(g);
        return;
    }
    /* The version: given (TF Serving's number, KServe's text), or resolved as the data
     * port resolves it (TF Serving's label too), from the gRPC model server's own status
     * (GetModelStatus, ModelMetadata). */
    if (g->rd.has_version && (g->kind == PC_GRPC_V2_INFER || g->rd.version_text[0] == '\0')) {
        char v[64];
        if (g->kind == PC_GRPC_V2_INFER)
            pc_strlcpy(v, g->rd.version_text, sizeof v);
        else
            snprintf(v, sizeof v, "%lld", (long long)g->rd.version);
        with_version(g, v);
        return;
    }
    if (cfg->version_refresh_s <= 0) { /* keyed by the message as sent, label and all */
        with_version(g, "");
        return;
    }
    struct pc_model_ref m = {.api = g->kind == PC_GRPC_V2_INFER ? PC_API_KSERVE_V2 : PC_API_TFS_V1};
    if (strlen(g->rd.model) >= sizeof m.name || strlen(g->rd.version_text) >= sizeof m.label ||
        g->rd.model[0] == '\0' || strchr(g->rd.model, '/') != NULL) {
        pass(g, "model-name");
        return;
    }
    pc_strlcpy(m.name, g->rd.model, sizeof m.name);
    pc_strlcpy(m.label, g->rd.version_text, sizeof m.label);
    static const char *const verbs[] = {"", "predict", "classify", "regress", "infer"};
    pc_strlcpy(m.verb, verbs[g->kind], sizeof m.verb);
    char v[64];
    switch (pc_versions_get(w->versions, PC_VERSIONS_GRPC, &m, v, sizeof v, on_version, g)) {
    case PC_VERSION_KNOWN:
        with_version(g, v);
        break;
    case PC_VERSION_PENDING:
        break;
    case PC_VERSION_UNKNOWN:
        with_version(g, NULL);
        break;
    }
}

void pc_grpc_cache_answered(struct gcall *g, const struct pc_h2_resp *r, int grpc_status)
{
    struct pc_worker *w = g->w;
    struct pc_buf msg;
    pc_buf_init(&msg);
    int ok = storable(g->kind, r, grpc_status, &msg);
    /* Held, as the data port's (store.h): no client waits for the entry or the release,
     * so clients' lookups go to Redis before them. */
    pc_store_hold(w->store, 1);
    /* Stored after a miss, and when the generations were unknown (a fresh answer is an
     * answer whatever they are); not when Redis failed the lookup. */
    if (ok && (strcmp(g->result, "MISS") == 0 || g->skip_lookup))
        store_message(w, g->key, w->cfg->ttl_s, &msg, g->start_us);
    pc_lockwait_unlock(&g->lock, g->key); /* after the SET, same connection: waiters find it */
    pc_store_hold(w->store, 0);
    answer_waiters(g, &msg, ok);
    pc_buf_release(&msg);
}
