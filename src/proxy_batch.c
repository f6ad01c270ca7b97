/*
 * proxy_batch: per-instance caching of TF Serving row-format batches.
 *
 *   {"instances": [i0 .. iN]} --key each instance, fold duplicates--> MGET unique keys
 *        |                                                              |
 *        |  all cached --> merge cached predictions (HIT) -------------+--> answer
 *        |  some/none  --> sub-request with only the missing instances, |
 *        |                 in their original relative order            |
 *        v                                                              |
 *   model server --> "predictions" of the same length? --no--> pass its answer through,
 *        |                                                  store nothing
 *        yes --> merge into the original positions (MISS / PARTIAL) --> answer
 *                --> store each new prediction under its own key (async)
 *
 * Positions are tracked three ways and never mixed: request index i (0..n), unique
 * index u (in order of first appearance), and response index j (0..sent). uniq_of[i]
 * maps i to u, first_of[u] maps u back to the first i, resp_of[u] maps a missing u to
 * its j in the sub-request and so in the model's answer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "predcache/batch.h"
#include "predcache/config.h"
#include "predcache/envelope.h"
#include "predcache/flight.h"
#include "predcache/l1.h"
#include "predcache/log.h"
#include "predcache/store.h"
#include "proxy_int.h"

#define NO_POS ((size_t)-1)

/* One unique instance found in the cache: its stored value, copied out of the reply. */
struct cached {
    struct pc_buf value; /* the envelope body: a "PI1" instance value */
    int status;
    char ctype[PC_CFG_STR];
    int64_t stored_at_ms;
    struct pc_batch_layout layout; /* points into value */
    const char *pred;
    size_t pred_len;
    int stale; /* past its TTL, within grace: answers only a batch cached whole */
    int ttl_s; /* the TTL a client chose for it (0: the route's) */
};

struct pc_batch_state {
    struct pc_batch_req req; /* spans of the client's instances */
    size_t n;                /* instances in the request */
    size_t n_uniq;
    size_t *uniq_of;          /* [n] */
    size_t *first_of;         /* [n_uniq] */
    size_t *resp_of;          /* [n_uniq]: position in the sub-request, or NO_POS */
    char (*keys)[PC_KEY_MAX]; /* [n_uniq] */
    struct cached **hit;      /* [n_uniq]: NULL when not cached */
    size_t hits;              /* request positions answered from the cache */
    struct pc_buf sub;        /* the sub-request body, when it differs from the client's */
    size_t *pick;             /* [n_uniq]: the unique ids sent, in sub-request order */
    size_t n_pick;
    int retried;   /* looked up again after another process's answer */
    int counted;   /* instance metrics counted (once per request) */
    int ttl_s;     /* entries older than this are stale */
    int grace_s;   /* and older than ttl_s + this, misses */
    int max_age_s; /* and older than this, when the client said max-age */
};

static void drop_hits(struct pc_batch_state *b)
{
    for (size_t u = 0; u < b->n_uniq; u++) {
        if (b->hit[u] != NULL) {
            pc_buf_release(&b->hit[u]->value);
            free(b->hit[u]);
            b->hit[u] = NULL;
        }
    }
}

void pc_proxy_batch_free(struct pc_batch_state *b)
{
    if (b == NULL)
        return;
    if (b->hit != NULL)
        drop_hits(b);
    pc_batch_req_release(&b->req);
    free(b->uniq_of);
    free(b->first_of);
    free(b->resp_of);
    free(b->pick);
    free(b->keys);
    free(b->hit);
    pc_buf_release(&b->sub);
    free(b);
}

int pc_proxy_batch_hit_keys(const struct pc_preq *p, char (**keys)[PC_KEY_MAX], size_t *n)
{
    const struct pc_batch_state *b = p->batch;
    *keys = NULL;
    *n = 0;
    if (b == NULL || b->n_uniq == 0 || (*keys = malloc(b->n_uniq * sizeof **keys)) == NULL)
        return -1;
    memcpy(*keys, b->keys, b->n_uniq * sizeof **keys);
    *n = b->n_uniq;
    return 0;
}

/* ---- keys -------------------------------------------------------------------------- */

struct key_ref {
    const char *key;
    size_t i;
};

static int key_ref_cmp(const void *a, const void *b)
{
    const struct key_ref *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c != 0 ? c : (x->i < y->i ? -1 : x->i > y->i);
}

/* Folds the duplicates among all[0..n): unique ids follow first appearance. 0 or -1. */
static int fold_keys(struct pc_batch_state *b, char (*all)[PC_KEY_MAX])
{
    struct key_ref *refs = calloc(b->n, sizeof *refs);
    size_t *first_i = calloc(b->n, sizeof *first_i);
    if (refs == NULL || first_i == NULL) {
        free(refs);
        free(first_i);
        return -1;
    }
    for (size_t i = 0; i < b->n; i++)
        refs[i] = (struct key_ref){all[i], i};
    qsort(refs, b->n, sizeof *refs, key_ref_cmp);
    for (size_t k = 0; k < b->n; k++) /* sorted by (key, i): a run's head is its first i */
        first_i[refs[k].i] =
            k > 0 && strcmp(refs[k].key, refs[k - 1].key) == 0 ? first_i[refs[k - 1].i] : refs[k].i;
    for (size_t i = 0; i < b->n; i++) {
        if (first_i[i] == i) {
            b->first_of[b->n_uniq] = i;
            memcpy(b->keys[b->n_uniq], all[i], PC_KEY_MAX);
            b->uniq_of[i] = b->n_uniq++;
        } else {
            b->uniq_of[i] = b->uniq_of[first_i[i]];
        }
    }
    free(refs);
    free(first_i);
    return 0;
}

/* ---- sub-requests ---------------------------------------------------------------- */

enum { SUB_OK = 0, SUB_NO_MEMORY = -1, SUB_MISMATCH = -2 };

/*
 * The body with only the instances b->pick[0..k) (each unique one once, in the order
 * picked) into out. A batch keyed from the memo has no spans yet, since only a
 * sub-request needs them: they are found here. The body is the one the memo's keys were
 * derived from, so it has the same instances; SUB_MISMATCH if not.
 */
static int subrequest_of(struct pc_batch_state *b, const char *body, size_t len, size_t k,
                         struct pc_buf *out)
{
    if (b->req.inst.n != b->n) {
        pc_batch_req_release(&b->req);
        if (pc_batch_parse_request(body, len, &b->req) != 0 || b->req.inst.n != b->n) {
            pc_batch_req_release(&b->req);
            return SUB_MISMATCH;
        }
    }
    size_t *idx = malloc(k * sizeof *idx);
    if (idx == NULL)
        return SUB_NO_MEMORY;
    for (size_t j = 0; j < k; j++)
        idx[j] = b->first_of[b->pick[j]];
    int rc = pc_batch_build_subrequest(body, len, &b->req, idx, k, out);
    free(idx);
    return rc == 0 ? SUB_OK : SUB_NO_MEMORY;
}

/* ---- answers ----------------------------------------------------------------------- */

static void answer_merged(struct pc_preq *p, int status, const struct pc_header *base,
                          size_t n_base, const char *body, size_t len)
{
    struct pc_batch_state *b = p->batch;
    char hits[2 * PC_U64_TEXT];
    size_t k = pc_u64_text(b->hits, hits);
    hits[k++] = '/';
    pc_u64_text(b->n, hits + k);
    struct pc_header *h = calloc(n_base + 3, sizeof *h);
    if (h == NULL) {
        pc_proxy_answer_error(p, 503, "out of memory");
        return;
    }
    size_t n = n_base;
    if (n_base > 0)
        memcpy(h, base, n_base * sizeof *h);
    h[n++] = (struct pc_header){(char *)"X-Cache", (char *)pc_proxy_result_name(p->result)};
    h[n++] = (struct pc_header){(char *)"X-Cache-Hits", hits};
    if (b->n_uniq == 1) /* one distinct instance: its key is the one to purge */
        h[n++] = (struct pc_header){(char *)"X-Cache-Key", b->keys[0]};
    pc_proxy_answer(p, status, h, n, body, len);
    free(h);
}

/* The separator to use when a layout has none: any the cached instances carry. */
static const char *fallback_sep(const struct pc_batch_state *b, char *buf, size_t buflen)
{
    for (size_t u = 0; u < b->n_uniq; u++) {
        const struct cached *c = b->hit[u];
        if (c != NULL && c->layout.sep_len > 0 && c->layout.sep_len < buflen) {
            memcpy(buf, c->layout.sep, c->layout.sep_len);
            buf[c->layout.sep_len] = '\0';
            return buf;
        }
    }
    return ",";
}

/*
 * Refreshes the batch's stale instances in the background (stale-while-revalidate): one
 * model call with only them, each unique one once, in request order, stored under their
 * keys. p->req must still be valid. 1 when some instance is stale.
 */
static int refresh_stale(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    size_t k = 0;
    int ttl_s = 0; /* the refreshed entries keep a client's TTL: the shortest among them */
    for (size_t u = 0; u < b->n_uniq; u++) {
        const struct cached *c = b->hit[u];
        if (c->stale) {
            b->pick[k++] = u;
            if (c->ttl_s > 0 && (ttl_s == 0 || c->ttl_s < ttl_s))
                ttl_s = c->ttl_s;
        }
    }
    if (k == 0)
        return 0;
    size_t len;
    const char *body = pc_http_req_body(p->req, &len);
    char herd[PC_KEY_MAX];
    char(*keys)[PC_KEY_MAX] = malloc(k * sizeof *keys);
    struct pc_buf sub;
    pc_buf_init(&sub);
    if (keys != NULL && pc_cachekey_herd(p->keyp.prefix, b->keys, b->pick, k, herd) == 0 &&
        subrequest_of(b, body, len, k, &sub) == SUB_OK) {
        for (size_t j = 0; j < k; j++)
            memcpy(keys[j], b->keys[b->pick[j]], PC_KEY_MAX);
        pc_proxy_batch_refresh(p, herd, ttl_s, sub.data, sub.len, keys, k);
        keys = NULL; /* the refresh's now */
    }
    pc_buf_release(&sub);
    free(keys);
    return 1; /* no refresh (no memory, or one of these already running): still stale */
}

/* Every instance was cached: rebuild the answer from the first one's layout. An instance
 * past its TTL (within grace) makes the answer STALE, and is refreshed behind it. */
static void answer_all_cached(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    int stale = refresh_stale(p);
    const char **preds = calloc(b->n, sizeof *preds);
    size_t *lens = calloc(b->n, sizeof *lens);
    struct pc_buf out;
    pc_buf_init(&out);
    int64_t oldest = INT64_MAX;
    for (size_t i = 0; preds != NULL && lens != NULL && i < b->n; i++) {
        const struct cached *c = b->hit[b->uniq_of[i]];
        preds[i] = c->pred;
        lens[i] = c->pred_len;
        if (c->stored_at_ms < oldest)
            oldest = c->stored_at_ms;
    }
    const struct cached *first = b->hit[b->uniq_of[0]];
    char sepbuf[64];
    if (preds == NULL || lens == NULL ||
        pc_batch_merge(&first->layout, preds, lens, b->n, fallback_sep(b, sepbuf, sizeof sepbuf),
                       &out) != 0) {
        pc_proxy_answer_error(p, 503, "out of memory");
    } else {
        char age[PC_U64_TEXT];
        int64_t age_s = (pc_wall_ms() - oldest) / 1000;
        pc_u64_text(age_s > 0 ? (uint64_t)age_s : 0, age);
        struct pc_header h[3];
        size_t n = 0;
        if (first->ctype[0] != '\0')
            h[n++] = (struct pc_header){(char *)"Content-Type", (char *)first->ctype};
        h[n++] = (struct pc_header){(char *)"Age", age};
        if (stale)
            h[n++] = (struct pc_header){(char *)"Warning", (char *)"110 - \"Response is Stale\""};
        /* Found after waiting for another process's model call: that call answered it. */
        p->result = stale ? RES_STALE : b->retried ? RES_COALESCED : RES_HIT;
        PC_METRIC_ADD(p->w->metrics.bytes_from_cache, out.len);
        answer_merged(p, first->status, h, n, out.data, out.len);
    }
    pc_buf_release(&out);
    free(preds);
    free(lens);
}

/* ---- storing ----------------------------------------------------------------------- */

/* Stores preds->elems[j] under keys[j] for j < preds->n, each a "PI1" instance value
 * in an envelope (ttl env_ttl_s written into it, 0: none) kept redis_ttl_s in Redis. */
static void store_instances(struct pc_worker *w, const struct pc_upstream_resp *r,
                            const struct pc_batch_array *preds,
                            const struct pc_batch_layout *layout, const char *const *keys,
                            int env_ttl_s, int redis_ttl_s)
{
    const char *ctype = pc_proxy_find_header(r->headers, r->n_headers, "Content-Type");
    struct pc_buf inst, val;
    pc_buf_init(&inst);
    pc_buf_init(&val);
    for (size_t j = 0; j < preds->n; j++) {
        const struct pc_span *s = &preds->elems[j];
        inst.len = 0;
        val.len = 0;
        if (pc_batch_encode_instance(layout, r->body.data + s->off, s->len, &inst) != 0) {
            PC_METRIC_INC(w->metrics.store_skipped);
            continue;
        }
        struct pc_envelope env = {
            .status = r->status,
            .stored_at_ms = pc_wall_ms(),
            .ttl_s = env_ttl_s,
            .content_type = ctype ? ctype : "",
            .body = inst.data,
            .body_len = inst.len,
        };
        if (inst.len > w->cfg->max_value_bytes || pc_envelope_encode(&env, &val) != 0) {
            PC_METRIC_INC(w->metrics.store_skipped);
            continue;
        }
        pc_l1_put(w->l1, keys[j], val.data, val.len);
        pc_store_set(w->store, keys[j], val.data, val.len, redis_ttl_s);
    }
    pc_buf_release(&inst);
    pc_buf_release(&val);
}

/* The stores before this PING are answered (one connection, in order): the flight ends. */
static void on_stores_done(const struct pc_reply *reply, void *arg)
{
    pc_proxy_flight_stored(reply != NULL, arg);
}

/* Stores each prediction the model server just made, under its instance's key; fs (from
 * pc_proxy_flight_keep, or NULL) ends the flight once they are answered. */
static void store_new(struct pc_preq *p, const struct pc_upstream_resp *r,
                      const struct pc_batch_array *preds, const struct pc_batch_layout *layout,
                      void *fs, const char *why)
{
    struct pc_worker *w = p->w;
    struct pc_batch_state *b = p->batch;
    if (why == NULL && p->no_store)
        why = "request no-store";
    const char **keys = why == NULL ? calloc(b->n_pick, sizeof *keys) : NULL;
    if (keys == NULL) {
        PC_METRIC_ADD(w->metrics.store_skipped, b->n_pick);
    } else {
        for (size_t j = 0; j < b->n_pick; j++)
            keys[j] = b->keys[b->pick[j]];
        store_instances(w, r, preds, layout, keys, p->client_ttl ? p->ttl_s : 0,
                        pc_proxy_store_ttl(p));
        free(keys);
    }
    if (fs != NULL) {
        const char *argv[] = {"PING"};
        size_t lens[] = {4};
        if (pc_store_command(w->store, 0, on_stores_done, fs, 1, argv, lens) != 0)
            pc_proxy_flight_stored(0, fs);
    }
}

const char *pc_proxy_batch_store_refresh(struct pc_worker *w, const struct pc_upstream_resp *r,
                                         const char (*keys)[PC_KEY_MAX], size_t n, int env_ttl_s,
                                         int redis_ttl_s)
{
    struct pc_batch_array preds;
    memset(&preds, 0, sizeof preds);
    if (pc_batch_parse_response(r->body.data, r->body.len, &preds) != 0 || preds.n != n) {
        pc_batch_array_release(&preds);
        return "the answer's predictions do not match the instances sent";
    }
    const char **k = calloc(n, sizeof *k);
    if (k == NULL) {
        pc_batch_array_release(&preds);
        return "out of memory";
    }
    for (size_t j = 0; j < n; j++)
        k[j] = keys[j];
    struct pc_batch_layout layout;
    pc_batch_layout_of(r->body.data, r->body.len, &preds, &layout);
    store_instances(w, r, &preds, &layout, k, env_ttl_s, redis_ttl_s);
    free(k);
    pc_batch_array_release(&preds);
    return NULL;
}

/* ---- the model server's answer ----------------------------------------------------- */

/* Passes the model server's answer through unchanged; nothing is merged or stored. */
static void pass_through(struct pc_preq *p, const struct pc_upstream_resp *r)
{
    answer_merged(p, r->status, r->headers, r->n_headers, r->body.data, r->body.len);
}

/*
 * Answers p with the model server's answer r to the sub-request p sent or shares (the same
 * instances in the same order). 1 when preds and layout hold r's predictions, to be stored
 * (then the caller releases preds); 0 when nothing may be stored.
 */
static int answer_model(struct pc_preq *p, const struct pc_upstream_resp *r,
                        struct pc_batch_array *preds, struct pc_batch_layout *layout)
{
    struct pc_batch_state *b = p->batch;
    memset(preds, 0, sizeof *preds);
    if (pc_proxy_answer_backend_error(p, r))
        return 0;
    if (r->status < 200 || r->status > 299) {
        pass_through(p, r);
        return 0;
    }
    if (pc_batch_parse_response(r->body.data, r->body.len, preds) != 0 || preds->n != b->n_pick) {
        pc_log(PC_LOG_WARN,
               "proxy: model server answered %zu predictions for %zu instances on %s; "
               "passed through, nothing stored",
               preds->elems ? preds->n : 0, b->n_pick, pc_http_req_path(p->req));
        pc_batch_array_release(preds);
        pass_through(p, r);
        return 0;
    }
    pc_batch_layout_of(r->body.data, r->body.len, preds, layout);
    if (b->n_pick == b->n) {
        /* Nothing cached and no duplicates: the model's own answer is the answer. */
        pass_through(p, r);
        return 1;
    }
    const char **bodies = calloc(b->n, sizeof *bodies);
    size_t *lens = calloc(b->n, sizeof *lens);
    struct pc_buf out;
    pc_buf_init(&out);
    for (size_t i = 0; bodies != NULL && lens != NULL && i < b->n; i++) {
        size_t u = b->uniq_of[i];
        if (b->hit[u] != NULL) {
            bodies[i] = b->hit[u]->pred;
            lens[i] = b->hit[u]->pred_len;
        } else {
            const struct pc_span *s = &preds->elems[b->resp_of[u]];
            bodies[i] = r->body.data + s->off;
            lens[i] = s->len;
        }
    }
    char sepbuf[64];
    if (bodies == NULL || lens == NULL ||
        pc_batch_merge(layout, bodies, lens, b->n, fallback_sep(b, sepbuf, sizeof sepbuf), &out) !=
            0)
        pc_proxy_answer_error(p, 503, "out of memory");
    else
        answer_merged(p, r->status, r->headers, r->n_headers, out.data, out.len);
    pc_buf_release(&out);
    free(bodies);
    free(lens);
    return 1;
}

/* A request that waited for another one's model call, answered with it (COALESCED), and
 * freed. */
static void answer_shared(struct pc_preq *q, const struct pc_upstream_resp *r)
{
    struct pc_batch_array preds;
    struct pc_batch_layout layout;
    q->backend_ms = r->total_ms;
    q->result = RES_COALESCED;
    if (answer_model(q, r, &preds, &layout))
        pc_batch_array_release(&preds);
    pc_preq_free(q);
}

static void on_batch_backend(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_preq *p = arg;
    struct pc_batch_array preds;
    struct pc_batch_layout layout;
    /* Judged before any answer: it may bound the TTL or teach the route a Vary. */
    const char *why = r->error == PC_UP_OK ? pc_proxy_store_refusal(p, r) : NULL;
    const char *personal = r->error == PC_UP_OK ? pc_proxy_share_refusal(p, r) : NULL;
    int storable = answer_model(p, r, &preds, &layout);
    size_t n_waiters = 0;
    struct pc_preq **waiters = NULL;
    if (p->flight != NULL && (!storable || personal != NULL)) {
        waiters = pc_proxy_flight_release(p, &n_waiters); /* the flight ends with the answer */
    } else if (p->flight != NULL) {
        struct pc_flight *f = p->flight;
        for (size_t i = 0; i < f->n_waiters; i++)
            answer_shared(f->waiters[i], r);
        f->n_waiters = 0;
    }
    /* An answer that is the leader's alone (private, a cookie, a client error) is not
     * handed on: each waiter calls on its own. Anything else (a failed transfer, a server
     * error, predictions that do not match) is the same for every waiter. */
    for (size_t i = 0; i < n_waiters; i++) {
        if (personal == NULL)
            answer_shared(waiters[i], r);
        else
            pc_proxy_batch_send(waiters[i], RES_MISS);
    }
    free(waiters);
    if (storable) {
        /* After the answers: no client waits for Redis. */
        void *fs = why == NULL ? pc_proxy_flight_keep(p, r) : NULL;
        store_new(p, r, &preds, &layout, fs, why);
        pc_batch_array_release(&preds);
    }
    pc_preq_free(p);
}

void pc_proxy_batch_send(struct pc_preq *p, enum pc_cache_result result)
{
    struct pc_batch_state *b = p->batch;
    size_t len;
    const char *body = pc_http_req_body(p->req, &len);
    if (b->n_pick < b->n) {
        int rc = subrequest_of(b, body, len, b->n_pick, &b->sub);
        if (rc == SUB_MISMATCH) {
            pc_log(PC_LOG_ERROR, "proxy: %s: the key memo's batch does not match the body",
                   pc_http_req_path(p->req));
            pc_proxy_answer_error(p, 500, "internal error: batch keys do not match the body");
        } else if (rc != SUB_OK) {
            pc_proxy_answer_error(p, 503, "out of memory");
        }
        if (rc != SUB_OK) {
            pc_preq_free(p);
            return;
        }
        body = b->sub.data;
        len = b->sub.len;
    }
    pc_proxy_forward_body(p, result, body, len, on_batch_backend);
}

/* Answers p from a flight already answered (its stores on the way): the kept answer, an
 * envelope (pc_proxy_flight_keep). */
static void answer_kept(struct pc_preq *p, const struct pc_flight *f)
{
    struct pc_envelope env;
    char scratch[PC_ENV_SCRATCH];
    if (pc_envelope_decode(f->body, f->body_len, &env, scratch, sizeof scratch) != 0) {
        pc_proxy_batch_send(p, RES_MISS); /* cannot happen: it holds what keep encoded */
        return;
    }
    struct pc_header h[PC_ENV_MAX_HEADERS + 1];
    size_t n = 0;
    if (env.content_type[0] != '\0')
        h[n++] = (struct pc_header){(char *)"Content-Type", (char *)env.content_type};
    for (size_t i = 0; i < env.n_headers; i++)
        h[n++] = (struct pc_header){(char *)env.headers[i].name, (char *)env.headers[i].value};
    struct pc_upstream_resp r;
    memset(&r, 0, sizeof r);
    r.status = env.status;
    r.headers = h;
    r.n_headers = n;
    r.body.data = (char *)env.body;
    r.body.len = env.body_len;
    r.total_ms = -1;
    answer_shared(p, &r);
}

/*
 * The instances not found in the cache, each unique one once, in request order: a request
 * missing the same ones as a model call running now waits for that call's answer (in this
 * process; across processes through the lock on the herd key); else it makes the call.
 */
static void forward_missing(struct pc_preq *p, enum pc_cache_result result)
{
    struct pc_batch_state *b = p->batch;
    size_t k = 0;
    for (size_t u = 0; u < b->n_uniq; u++) { /* u follows first appearance */
        b->resp_of[u] = NO_POS;
        if (b->hit[u] == NULL) {
            b->resp_of[u] = k;
            b->pick[k++] = u;
        }
    }
    b->n_pick = k;
    if (!b->counted) {
        PC_METRIC_ADD(p->w->metrics.instances_hit, b->hits);
        PC_METRIC_ADD(p->w->metrics.instances_miss, k);
        b->counted = 1;
    }
    /* A no-cache request wants a model call of its own: it neither joins nor leads. */
    if (p->no_cache || pc_cachekey_herd(p->keyp.prefix, b->keys, b->pick, k, p->herd) != 0) {
        p->herd[0] = '\0';
        pc_proxy_batch_send(p, result); /* cannot coalesce: go alone */
        return;
    }
    struct pc_flight *f;
    switch (pc_proxy_join(p, &f)) {
    case PC_JOIN_WAIT:
        return; /* answered by on_batch_backend of the leader */
    case PC_JOIN_DONE:
        answer_kept(p, f);
        return;
    case PC_JOIN_LEAD:
        break;
    }
    if (!b->retried && pc_proxy_lock_batch(p, result))
        return;
    pc_proxy_batch_send(p, result);
}

/* ---- lookup ------------------------------------------------------------------------ */

/* Copies one stored value into b->hit[u] when it is a readable, fresh instance value
 * (and then into the l1 tier, when l1 is not NULL). */
static void take_cached(struct pc_batch_state *b, size_t u, const char *data, size_t len,
                        struct pc_l1 *l1)
{
    struct pc_envelope env;
    struct cached *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    pc_buf_init(&c->value);
    if (pc_envelope_decode(data, len, &env, c->ctype, sizeof c->ctype) != 0 ||
        pc_buf_append(&c->value, env.body, env.body_len) != 0 ||
        pc_batch_decode_instance(c->value.data, c->value.len, &c->layout, &c->pred, &c->pred_len) !=
            0) {
        pc_log(PC_LOG_WARN, "proxy: unreadable instance entry %s; treating as a miss", b->keys[u]);
        pc_buf_release(&c->value);
        free(c);
        return;
    }
    int64_t age_ms = pc_wall_ms() - env.stored_at_ms;
    int fresh_s = env.ttl_s > 0 ? env.ttl_s : b->ttl_s;
    if (age_ms > ((int64_t)fresh_s + b->grace_s) * 1000 ||
        (b->max_age_s >= 0 && age_ms > (int64_t)b->max_age_s * 1000)) {
        pc_buf_release(&c->value); /* past its grace: a batch re-asks the model for it */
        free(c);
        return;
    }
    c->stale = age_ms > (int64_t)fresh_s * 1000;
    c->ttl_s = env.ttl_s;
    c->status = env.status;
    c->stored_at_ms = env.stored_at_ms;
    b->hit[u] = c;
    pc_l1_put(l1, b->keys[u], data, len);
}

/* The in-process tier: 1 when every instance is a fresh hit there (then p is answered
 * without Redis); else 0 with nothing taken, and Redis is asked for all of them. */
static int l1_batch(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    struct pc_l1 *l1 = p->w->l1;
    if (l1 == NULL)
        return 0;
    struct pc_buf v;
    pc_buf_init(&v);
    size_t u;
    for (u = 0; u < b->n_uniq; u++) {
        v.len = 0;
        if (!pc_l1_get(l1, b->keys[u], &v))
            break;
        take_cached(b, u, v.data, v.len, NULL);
        if (b->hit[u] == NULL || b->hit[u]->stale) /* stale ones are Redis's to judge */
            break;
    }
    pc_buf_release(&v);
    if (u < b->n_uniq) {
        drop_hits(b);
        return 0;
    }
    b->hits = b->n;
    PC_METRIC_INC(p->w->metrics.l1_hits);
    if (!b->counted)
        PC_METRIC_ADD(p->w->metrics.instances_hit, b->n);
    answer_all_cached(p);
    pc_preq_free(p);
    return 1;
}

/* The MGET answer: valid only during this callback, so hits are copied out. */
static void on_batch_lookup(const struct pc_reply *reply, void *arg)
{
    struct pc_preq *p = arg;
    struct pc_batch_state *b = p->batch;
    if (reply == NULL || pc_reply_type(reply) != PC_REPLY_ARRAY ||
        pc_reply_count(reply) != b->n_uniq) {
        PC_METRIC_INC(p->w->metrics.redis_get_failed);
        forward_missing(p, RES_BYPASS);
        return;
    }
    PC_METRIC_INC(p->w->metrics.redis_get_ok);
    for (size_t u = 0; u < b->n_uniq; u++) {
        const struct pc_reply *e = pc_reply_elem(reply, u);
        size_t len;
        const char *data = pc_reply_str(e, &len);
        if (pc_reply_type(e) == PC_REPLY_STRING && data != NULL)
            take_cached(b, u, data, len, p->w->l1);
    }
    for (size_t i = 0; i < b->n; i++)
        b->hits += b->hit[b->uniq_of[i]] != NULL;
    if (b->hits < b->n) {
        /* The model is asked anyway: it answers the stale instances too, so they are
         * misses like the missing ones. */
        for (size_t u = 0; u < b->n_uniq; u++) {
            if (b->hit[u] != NULL && b->hit[u]->stale) {
                pc_buf_release(&b->hit[u]->value);
                free(b->hit[u]);
                b->hit[u] = NULL;
            }
        }
        b->hits = 0;
        for (size_t i = 0; i < b->n; i++)
            b->hits += b->hit[b->uniq_of[i]] != NULL;
    }
    if (b->hits == b->n) {
        if (!b->counted)
            PC_METRIC_ADD(p->w->metrics.instances_hit, b->n);
        answer_all_cached(p);
        pc_preq_free(p);
        return;
    }
    forward_missing(p, b->hits > 0 ? RES_PARTIAL : RES_MISS);
}

/* Only :predict answers carry "predictions"; /predict is the plain-path alias. */
static int is_predict_route(const char *path)
{
    size_t n = strlen(path);
    return (n >= 8 && strcmp(path + n - 8, ":predict") == 0) ||
           (n >= 8 && strcmp(path + n - 8, "/predict") == 0);
}

/* The state of a batch of n instances, its arrays allocated; NULL on no memory. */
static struct pc_batch_state *batch_new(const struct pc_preq *p, size_t n)
{
    struct pc_batch_state *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    pc_buf_init(&b->sub);
    b->n = n;
    b->ttl_s = p->route->v.ttl_s; /* freshness of entries without their own TTL */
    b->grace_s = p->w->cfg->grace_s;
    b->max_age_s = p->max_age_s;
    b->uniq_of = calloc(n, sizeof *b->uniq_of);
    b->first_of = calloc(n, sizeof *b->first_of);
    b->resp_of = calloc(n, sizeof *b->resp_of);
    b->pick = calloc(n, sizeof *b->pick);
    b->keys = calloc(n, sizeof *b->keys);
    b->hit = calloc(n, sizeof *b->hit);
    if (b->uniq_of == NULL || b->first_of == NULL || b->resp_of == NULL || b->pick == NULL ||
        b->keys == NULL || b->hit == NULL) {
        pc_proxy_batch_free(b);
        return NULL;
    }
    return b;
}

int pc_proxy_batch_key(struct pc_preq *p)
{
    if (!is_predict_route(pc_http_req_path(p->req)))
        return 1;
    size_t len, n = 0;
    const char *body = pc_http_req_body(p->req, &len);
    struct pc_batch_req req;
    memset(&req, 0, sizeof req);
    char(*all)[PC_KEY_MAX] = NULL;
    /* One pass for spans and keys; anything unusual is keyed whole. */
    int rc = pc_cachekey_instances(&p->keyp, p->head, p->head_len, body, len, &req.inst.elems, &n,
                                   &req.signature, &all);
    if (rc != 0)
        return rc;
    req.inst.n = req.inst.cap = n;
    struct pc_batch_state *b = batch_new(p, req.inst.n);
    if (b == NULL) {
        pc_batch_req_release(&req);
        free(all);
        return -1;
    }
    b->req = req;
    rc = fold_keys(b, all);
    free(all);
    if (rc != 0) {
        pc_proxy_batch_free(b);
        return -1;
    }
    p->batch = b;
    return 0;
}

int pc_proxy_batch_from_memo(struct pc_preq *p, const struct pc_keymemo_val *v)
{
    struct pc_batch_state *b = batch_new(p, v->n);
    if (b == NULL)
        return -1;
    const char *k = v->keys;
    for (size_t u = 0; u < v->n_uniq; u++) {
        size_t kl = strlen(k);
        memcpy(b->keys[u], k, kl + 1);
        k += kl + 1;
        b->first_of[u] = NO_POS;
    }
    for (size_t i = 0; i < v->n; i++) {
        size_t u = v->uniq_of[i];
        b->uniq_of[i] = u;
        if (b->first_of[u] == NO_POS)
            b->first_of[u] = i;
    }
    b->n_uniq = v->n_uniq;
    p->batch = b;
    return 0;
}

int pc_proxy_batch_memo_val(const struct pc_preq *p, struct pc_buf *keys, uint32_t **uniq_of,
                            struct pc_keymemo_val *out)
{
    const struct pc_batch_state *b = p->batch;
    *uniq_of = malloc(b->n * sizeof **uniq_of);
    if (*uniq_of == NULL)
        return -1;
    int rc = 0;
    for (size_t u = 0; u < b->n_uniq && rc == 0; u++)
        rc = pc_buf_append(keys, b->keys[u], strlen(b->keys[u]) + 1);
    for (size_t i = 0; i < b->n; i++)
        (*uniq_of)[i] = (uint32_t)b->uniq_of[i];
    *out = (struct pc_keymemo_val){b->n, b->n_uniq, *uniq_of, keys->data, keys->len};
    return rc;
}

void pc_proxy_batch_lookup(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    if (p->no_cache) {
        forward_missing(p, RES_MISS);
        return;
    }
    if (p->skip_lookup) { /* no generation from Redis: keyed, but not looked up */
        forward_missing(p, RES_BYPASS);
        return;
    }
    if (l1_batch(p))
        return;
    const char **argv = calloc(b->n_uniq + 1, sizeof *argv);
    size_t *lens = calloc(b->n_uniq + 1, sizeof *lens);
    int rc = -1;
    if (argv != NULL && lens != NULL) {
        argv[0] = "MGET";
        lens[0] = 4;
        for (size_t u = 0; u < b->n_uniq; u++) {
            argv[u + 1] = b->keys[u];
            lens[u + 1] = strlen(b->keys[u]);
        }
        rc = pc_store_command(p->w->store, 0, on_batch_lookup, p, (int)(b->n_uniq + 1), argv, lens);
    }
    free(argv);
    free(lens);
    if (rc != 0) {
        PC_METRIC_INC(p->w->metrics.redis_get_failed);
        forward_missing(p, RES_BYPASS);
    }
}

void pc_proxy_batch_retry(struct pc_preq *p)
{
    size_t n = 0;
    struct pc_preq **waiters = pc_proxy_flight_release(p, &n);
    for (size_t i = 0; i <= n; i++) {
        struct pc_preq *q = i < n ? waiters[i] : p;
        struct pc_batch_state *b = q->batch;
        drop_hits(b);
        b->hits = 0;
        b->retried = 1;
        q->herd[0] = '\0';
        pc_proxy_batch_lookup(q);
    }
    free(waiters);
}
