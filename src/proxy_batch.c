/*
 * proxy_batch: per-instance caching of TF Serving row-format batches.
 *
 *   {"instances": [i0 .. iN]} --more than max_batch_instances?--yes--> forwarded uncached
 *        | no                                                        (BYPASS, proxy.c)
 *        | key each instance (a slice per loop turn), fold duplicates
 *        v
 *   MGET unique keys --all cached--> merge cached predictions (HIT) --------------+--> answer
 *        |  some/none --> sub-request with only the missing instances,            |
 *        |                in their original relative order                         |
 *        v                                                                         |
 *   model server --> "predictions" of the same length? --no--> pass its answer through,
 *        |                                                  store nothing
 *        yes --> merge into the original positions (MISS / PARTIAL) --> answer
 *                --> store each new prediction under its own key (a slice per Redis
 *                    round trip)
 *
 * Positions are tracked three ways and never mixed: request index i (0..n), unique
 * index u (in order of first appearance), and response index j (0..sent). uniq_of[i]
 * maps i to u, first_of[u] maps u back to the first i, resp_of[u] maps a missing u to
 * its j in the sub-request and so in the model's answer.
 *
 * What a batch may cost. A client chooses n; every per-instance structure is a
 * multiplier of what it sent (a 2 MB body of 1M zeros used to cost 370 MB and seconds of
 * one loop). So:
 *   - n is bounded: a batch of more than [cache] max_batch_instances instances is not
 *     cached per instance but forwarded as it is, uncached (X-Cache: BYPASS, nothing
 *     stored). The count stops at the instance past the bound, before anything is keyed
 *     (pc_batch_exceeds), so a hostile batch costs what the bound costs.
 *   - below the bound, an instance costs a few dozen bytes besides its own bytes: spans
 *     (16), uniq_of (4), and per unique instance its key as a 32-byte SHA-256 digest (the
 *     text key, prefix "v2:{" hex "}", is formatted only where a key is sent or logged),
 *     first_of, resp_of and pick (4 each) and a hit record (48); a hit's prediction is
 *     copied once into one buffer (only the first instance's whole value is kept: its
 *     layout is the answer's). Transient: the canonical text of the body, the MGET command.
 *   - no batch holds the loop: keys are derived SLICE_US at a time, each slice on its own
 *     loop turn (a zero timeout timer, so the connections ready meanwhile are served
 *     first), and the new predictions are stored SLICE_US (at most SLICE_SETS) at a time,
 *     each slice sent when Redis has answered the PING that ended the previous one (the
 *     drain waits for it, and Redis never holds more than a slice of one batch). Reading
 *     the body, merging and the MGET are O(bytes) passes, done at once.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "predcache/batch.h"
#include "predcache/config.h"
#include "predcache/envelope.h"
#include "predcache/flight.h"
#include "predcache/jsonedit.h"
#include "predcache/l1.h"
#include "predcache/l1refresh.h"
#include "predcache/log.h"
#include "predcache/purges.h"
#include "predcache/store.h"
#include "answer.h"
#include "coalesce.h"
#include "forward.h"
#include "preq.h"
#include "proxy_batch.h"
#include "refresh.h"

#define NO_POS UINT32_MAX
#define DIGEST PC_KEY_DIGEST_LEN
/* A batch's work is done in slices of about this many microseconds; between two, the loop
 * serves everything else. */
#define SLICE_US 1000
#define CLOCK_EVERY 32 /* instances done between two looks at the clock */
/* Most SETs a store slice sends: what Redis holds of one batch at once is bounded by count,
 * not only by time (a faster slice sent more, and ten batches' slices together reached
 * [redis] max_pending, which sheds stores). */
#define SLICE_SETS 256

/* One unique instance found in the cache. Its prediction and separator are in the batch's
 * hitdata (the first instance's whole value in first). */
struct cached {
    int64_t stored_at_ms;
    size_t pred_off, pred_len;
    size_t sep_off, sep_len; /* its layout's separator: the style of a merge without one */
    int status;
    int ttl_s; /* the TTL a client chose for it (0: the route's) */
    unsigned char found;
    unsigned char stale; /* past its TTL, within grace: answers only a batch cached whole */
};

static void pc_proxy_batch_free(struct pc_batch_state *b);
static void pc_proxy_batch_send(struct pc_preq *p, enum pc_cache_result result);
static void pc_proxy_batch_retry(struct pc_preq *p);
static int pc_proxy_batch_hit_keys(const struct pc_preq *p, char (**keys)[PC_KEY_MAX], size_t *n);
static size_t pc_proxy_batch_items(const struct pc_preq *p, char key[PC_KEY_MAX]);
static int pc_proxy_batch_purged_since(const struct pc_preq *p, uint64_t since_us);
struct pc_batch_keys;
static const char *pc_proxy_batch_store_refresh(struct pc_worker *w,
                                                const struct pc_upstream_resp *r,
                                                struct pc_batch_keys **keys, int env_ttl_s,
                                                int redis_ttl_s, uint64_t begun_us);

/* The miss goes on to the model server: the batch keeps the label its lookup gave (MISS or
 * PARTIAL) unless Redis failed on the way. */
static void item_send(struct pc_preq *p, enum pc_cache_result result)
{
    pc_proxy_batch_send(p, result == RES_BYPASS ? RES_BYPASS : p->result);
}

/* How coalesce resumes a request of the item flow: its herd key holds no value. */
static const struct pc_flow item_flow = {item_send, pc_proxy_batch_retry, NULL};

/* The keys of some instances (a refresh's), as digests under one prefix, and where their
 * answers are in the model's answer. */
struct pc_batch_keys {
    size_t n;
    const struct pc_items_shape *shape;
    char prefix[PC_KEY_MAX];
    unsigned char dig[][DIGEST];
};

struct pc_batch_state {
    const struct pc_items_shape *shape; /* where the items and their answers are */
    struct pc_batch_req req;            /* spans of the client's instances */
    size_t n;                           /* instances in the request */
    size_t n_uniq;
    uint32_t *uniq_of;            /* [n] */
    uint32_t *first_of;           /* [n_uniq], one allocation with resp_of and pick */
    uint32_t *resp_of;            /* [n_uniq]: position in the sub-request, or NO_POS */
    uint32_t *pick;               /* [n_uniq]: the unique ids sent, in sub-request order */
    unsigned char (*dig)[DIGEST]; /* [n_uniq] ([n] while keying): key digests */
    struct cached *hit;           /* [n_uniq] */
    struct pc_buf hitdata;        /* the hits' predictions and separators */
    struct pc_buf first;          /* the first instance's value, when a hit: its layout */
    struct pc_batch_layout first_layout;
    char first_ctype[PC_CFG_STR];
    size_t hits;       /* request positions answered from the cache */
    struct pc_buf sub; /* the sub-request body, when it differs from the client's */
    size_t n_pick;
    int retried;   /* looked up again after another process's answer */
    int plain;     /* the lookup script was refused (no EVAL for this user): plain MGETs */
    int said;      /* the lock's answer the lookup brought (enum pc_lock), or -1 */
    int counted;   /* instance metrics counted (once per request) */
    int ttl_s;     /* entries older than this are stale */
    int grace_s;   /* and older than ttl_s + this, misses */
    int max_age_s; /* and older than this, when the client said max-age */
    /* Work done a slice per loop turn: keying, then the in-process tier. */
    struct pc_cachekey_batch *keying; /* the body's reading, until every instance is keyed */
    size_t keyed;                     /* instances keyed so far */
    size_t l1_next;                   /* unique instances found in the l1 tier so far */
    struct event *turn;               /* the next slice */
    void (*step)(struct pc_preq *p);  /* what it runs */
    int remember;                     /* put the keys in the key memo once keyed */
    struct pc_keymemo_probe probe;
    struct pc_buf memo_ctx;
};

static void drop_hits(struct pc_batch_state *b)
{
    if (b->hit != NULL)
        memset(b->hit, 0, b->n_uniq * sizeof *b->hit);
    b->hitdata.len = 0;
    b->first.len = 0;
}

static void pc_proxy_batch_free(struct pc_batch_state *b)
{
    if (b == NULL)
        return;
    if (b->turn != NULL)
        event_free(b->turn);
    pc_cachekey_batch_free(b->keying);
    pc_batch_req_release(&b->req);
    free(b->uniq_of);
    free(b->first_of);
    free(b->dig);
    free(b->hit);
    pc_buf_release(&b->hitdata);
    pc_buf_release(&b->first);
    pc_buf_release(&b->sub);
    pc_buf_release(&b->memo_ctx);
    free(b);
}

static void pc_proxy_batch_keys_free(struct pc_batch_keys *k)
{
    free(k);
}

/* Keys for n instances under prefix (digests to be filled); NULL on no memory. */
static struct pc_batch_keys *keys_new(const struct pc_items_shape *shape, const char *prefix,
                                      size_t n)
{
    struct pc_batch_keys *k = malloc(sizeof *k + n * sizeof k->dig[0]);
    if (k == NULL)
        return NULL;
    k->n = n;
    k->shape = shape;
    pc_strlcpy(k->prefix, prefix != NULL ? prefix : "", sizeof k->prefix);
    return k;
}

static int pc_proxy_batch_hit_keys(const struct pc_preq *p, char (**keys)[PC_KEY_MAX], size_t *n)
{
    const struct pc_batch_state *b = p->batch;
    *keys = NULL;
    *n = 0;
    if (b == NULL || b->n_uniq == 0 || (*keys = malloc(b->n_uniq * sizeof **keys)) == NULL)
        return -1;
    for (size_t u = 0; u < b->n_uniq; u++)
        pc_cachekey_format(p->keyp.prefix, b->dig[u], (*keys)[u]);
    *n = b->n_uniq;
    return 0;
}

/* The item count, and the first item's key (its digest is dig[0] while keying and once
 * folded: the first item is the first unique one). */
static size_t pc_proxy_batch_items(const struct pc_preq *p, char key[PC_KEY_MAX])
{
    const struct pc_batch_state *b = p->batch;
    key[0] = '\0';
    if (b == NULL)
        return 0;
    if ((b->n_uniq > 0 || b->keyed > 0) && pc_cachekey_format(p->keyp.prefix, b->dig[0], key) == 0)
        key[0] = '\0';
    return b->n;
}

/* 1 when an instance the batch is missing (its pick, set before it joins a flight) was
 * purged since since_us (purges.h). */
static int pc_proxy_batch_purged_since(const struct pc_preq *p, uint64_t since_us)
{
    const struct pc_batch_state *b = p->batch;
    if (b == NULL || !pc_purges_any_since(p->w->purges, since_us))
        return 0;
    char key[PC_KEY_MAX];
    for (size_t k = 0; k < b->n_pick; k++)
        if (pc_cachekey_format(p->keyp.prefix, b->dig[b->pick[k]], key) > 0 &&
            pc_purges_since(p->w->purges, key, since_us))
            return 1;
    return 0;
}

/* ---- keys -------------------------------------------------------------------------- */

/* The arrays of the n_uniq unique instances; first (first_of's values) is copied. 0 or -1. */
static int uniq_arrays(struct pc_batch_state *b, const uint32_t *first)
{
    size_t nu = b->n_uniq;
    uint32_t *a = malloc(3 * nu * sizeof *a);
    b->hit = calloc(nu, sizeof *b->hit);
    if (a == NULL || b->hit == NULL) {
        free(a);
        return -1;
    }
    memcpy(a, first, nu * sizeof *a);
    b->first_of = a;
    b->resp_of = a + nu;
    b->pick = a + 2 * nu;
    unsigned char(*d)[DIGEST] = realloc(b->dig, nu * sizeof *d); /* a shrink: may keep it */
    if (d != NULL)
        b->dig = d;
    return 0;
}

/*
 * Folds the duplicates among dig[0..n): unique ids follow first appearance, and dig is
 * compacted to the unique digests (u <= i, so dig[u] is never one still to be read). A
 * hash table on the digests, probed linearly: O(n). Its hash is seeded per batch, so a
 * client cannot choose instances whose digests crowd one slot. 0 or -1.
 */
static int fold(struct pc_batch_state *b)
{
    size_t bits = 4;
    while (((size_t)1 << bits) < 2 * b->n)
        bits++;
    size_t mask = ((size_t)1 << bits) - 1;
    uint32_t *slot = calloc(mask + 1, sizeof *slot); /* u + 1; 0: empty */
    uint32_t *first = malloc(b->n * sizeof *first);
    if (slot == NULL || first == NULL) {
        free(slot);
        free(first);
        return -1;
    }
    uint64_t seed = pc_now_us() ^ (uint64_t)(uintptr_t)b;
    size_t nu = 0;
    for (size_t i = 0; i < b->n; i++) {
        uint64_t h;
        memcpy(&h, b->dig[i], sizeof h);
        size_t s = (size_t)(((h ^ seed) * 0x9E3779B97F4A7C15ull) >> (64 - bits)) & mask;
        for (;; s = (s + 1) & mask) {
            uint32_t v = slot[s];
            if (v == 0) {
                if (nu != i)
                    memcpy(b->dig[nu], b->dig[i], DIGEST);
                first[nu] = (uint32_t)i;
                b->uniq_of[i] = (uint32_t)nu;
                slot[s] = (uint32_t)++nu;
                break;
            }
            if (memcmp(b->dig[v - 1], b->dig[i], DIGEST) == 0) {
                b->uniq_of[i] = v - 1;
                break;
            }
        }
    }
    free(slot);
    b->n_uniq = nu;
    int rc = uniq_arrays(b, first);
    free(first);
    return rc;
}

/* Keys the next instances, for about SLICE_US: 1 all keyed, 0 more to do, -1 failed. */
static int key_slice(struct pc_batch_state *b)
{
    uint64_t start = pc_now_us();
    while (b->keyed < b->n) {
        size_t to = b->n - b->keyed > CLOCK_EVERY ? b->keyed + CLOCK_EVERY : b->n;
        if (pc_cachekey_batch_digest(b->keying, b->keyed, to, b->dig) != 0)
            return -1;
        b->keyed = to;
        if (pc_now_us() - start >= SLICE_US)
            break;
    }
    return b->keyed == b->n;
}

/* Every instance keyed: the spans are kept, duplicates folded, the keys remembered. */
static int keyed(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    struct pc_span sig;
    b->req.inst.elems = pc_cachekey_batch_take_spans(b->keying, &sig);
    b->req.inst.n = b->req.inst.cap = b->n;
    b->req.signature = sig;
    pc_cachekey_batch_free(b->keying);
    b->keying = NULL;
    if (fold(b) != 0)
        return -1;
    if (b->remember) { /* the memo copies: the digests and uniq_of as they are */
        size_t len;
        const char *body = pc_preq_body(p, &len);
        struct pc_keymemo_val mv = {b->n, b->n_uniq, b->uniq_of, (const char *)b->dig,
                                    b->n_uniq * DIGEST};
        pc_keymemo_put(p->w->memo, &b->probe, b->memo_ctx.data, b->memo_ctx.len, body, len, &mv);
        pc_buf_release(&b->memo_ctx);
        b->remember = 0;
    }
    return 0;
}

static void on_turn(evutil_socket_t fd, short what, void *arg);

/* Runs step(p) on a later loop turn: a zero timeout timer runs after the connections ready
 * now (an event made active would run before them). 0 ok. */
static int next_turn(struct pc_preq *p, void (*step)(struct pc_preq *p))
{
    static const struct timeval now = {0, 0};
    struct pc_batch_state *b = p->batch;
    if (b->turn == NULL && (b->turn = evtimer_new(p->w->base, on_turn, p)) == NULL)
        return -1;
    b->step = step;
    return event_add(b->turn, &now);
}

static void on_turn(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_preq *p = arg;
    p->batch->step(p);
}

/* One more slice of keys; once all are keyed, the lookup. */
static void key_more(struct pc_preq *p)
{
    int rc = key_slice(p->batch);
    if (rc == 0 && next_turn(p, key_more) == 0)
        return;
    if (rc == 1 && keyed(p) == 0) {
        pc_proxy_batch_lookup(p);
        return;
    }
    pc_proxy_answer_error(p, 503, "out of memory");
    pc_preq_free(p);
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
        if (pc_batch_parse_request_at(body, len, b->shape->request, &b->req) != 0 ||
            b->req.inst.n != b->n) {
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
    char hits[2 * PC_U64_TEXT], key[PC_KEY_MAX];
    size_t k = pc_u64_text(b->hits, hits);
    hits[k++] = '/';
    pc_u64_text(b->n, hits + k);
    struct pc_header *h = calloc(n_base + 4, sizeof *h);
    if (h == NULL) {
        pc_proxy_answer_error(p, 503, "out of memory");
        return;
    }
    size_t n = n_base;
    if (n_base > 0)
        memcpy(h, base, n_base * sizeof *h);
    h[n++] = (struct pc_header){(char *)"X-Cache", (char *)pc_proxy_result_name(p->result)};
    h[n++] = (struct pc_header){(char *)"X-Cache-Hits", hits};
    if (b->n_uniq == 1 && pc_cachekey_format(p->keyp.prefix, b->dig[0], key) > 0)
        h[n++] = (struct pc_header){(char *)"X-Cache-Key", key}; /* its key is the one to purge */
    if (p->reason != PC_REASON_NONE)
        h[n++] = (struct pc_header){(char *)"X-Cache-Reason", (char *)pc_reason_token(p->reason)};
    pc_proxy_answer(p, status, h, n, body, len);
    free(h);
}

/* The separator to use when a layout has none: any the cached instances carry. */
static const char *fallback_sep(const struct pc_batch_state *b, char *buf, size_t buflen)
{
    for (size_t u = 0; u < b->n_uniq; u++) {
        const struct cached *c = &b->hit[u];
        if (c->found && c->sep_len > 0 && c->sep_len < buflen) {
            memcpy(buf, b->hitdata.data + c->sep_off, c->sep_len);
            buf[c->sep_len] = '\0';
            return buf;
        }
    }
    return ",";
}

/* Where the prediction of request position i comes from: a hit, or the model's answer. */
struct merge_src {
    const struct pc_batch_state *b;
    const char *body;                   /* the model's answer, when one is merged */
    const struct pc_batch_array *preds; /* its predictions */
    struct pc_buf scratch;              /* a prediction renumbered (shape->renumber) */
};

static void pred_at(void *arg, size_t i, const char **pred, size_t *len)
{
    struct merge_src *m = arg;
    const struct pc_batch_state *b = m->b;
    uint32_t u = b->uniq_of[i];
    const struct cached *c = &b->hit[u];
    if (c->found) {
        *pred = b->hitdata.data + c->pred_off;
        *len = c->pred_len;
    } else {
        const struct pc_span *s = &m->preds->elems[b->resp_of[u]];
        *pred = m->body + s->off;
        *len = s->len;
    }
    if (!b->shape->renumber)
        return;
    /* Its "index" is its position in this answer, not in the answer it was cut from. A
     * prediction that is not an object with one is kept as it came. */
    char num[PC_U64_TEXT];
    size_t nl = pc_u64_text(i, num), off, vlen;
    m->scratch.len = 0;
    if (pc_jsonedit_find_member(*pred, *len, "index", &off, &vlen) == 0 &&
        pc_jsonedit_set_member(*pred, *len, "index", num, nl, &m->scratch) == 0) {
        *pred = m->scratch.data;
        *len = m->scratch.len;
    }
}

/* Merges the predictions of m into out with layout. 0 ok, -1 no memory. */
static int merge(struct merge_src *m, const struct pc_batch_layout *layout, struct pc_buf *out)
{
    char sepbuf[64];
    pc_buf_init(&m->scratch);
    int rc = pc_batch_merge_fn(layout, pred_at, m, m->b->n,
                               fallback_sep(m->b, sepbuf, sizeof sepbuf), out);
    pc_buf_release(&m->scratch);
    return rc;
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
        const struct cached *c = &b->hit[u];
        if (c->stale) {
            b->pick[k++] = (uint32_t)u;
            if (c->ttl_s > 0 && (ttl_s == 0 || c->ttl_s < ttl_s))
                ttl_s = c->ttl_s;
        }
    }
    if (k == 0)
        return 0;
    size_t len;
    const char *body = pc_preq_body(p, &len);
    char herd[PC_KEY_MAX];
    struct pc_batch_keys *keys = keys_new(b->shape, p->keyp.prefix, k);
    struct pc_buf sub;
    pc_buf_init(&sub);
    if (keys != NULL && pc_cachekey_herd_digests(p->keyp.prefix, b->dig, b->pick, k, herd) == 0 &&
        subrequest_of(b, body, len, k, &sub) == SUB_OK) {
        for (size_t j = 0; j < k; j++)
            memcpy(keys->dig[j], b->dig[b->pick[j]], DIGEST);
        struct pc_refresh_items items = {keys, pc_proxy_batch_store_refresh,
                                         pc_proxy_batch_keys_free};
        pc_refresh_start(p, herd, ttl_s, sub.data, sub.len, &items);
        keys = NULL; /* the refresh's now */
    }
    pc_buf_release(&sub);
    pc_proxy_batch_keys_free(keys);
    return 1; /* no refresh (no memory, or one of these already running): still stale */
}

/* Every instance was cached: rebuild the answer from the first one's layout. An instance
 * past its TTL (within grace) makes the answer STALE, and is refreshed behind it. */
static void answer_all_cached(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    int stale = refresh_stale(p);
    struct pc_buf out;
    pc_buf_init(&out);
    int64_t oldest = INT64_MAX;
    for (size_t u = 0; u < b->n_uniq; u++) {
        if (b->hit[u].stored_at_ms < oldest)
            oldest = b->hit[u].stored_at_ms;
    }
    struct merge_src m = {b, NULL, NULL, {0}};
    if (merge(&m, &b->first_layout, &out) != 0) {
        pc_proxy_answer_error(p, 503, "out of memory");
    } else {
        char age[PC_U64_TEXT];
        int64_t age_s = (pc_wall_ms() - oldest) / 1000;
        pc_u64_text(age_s > 0 ? (uint64_t)age_s : 0, age);
        struct pc_header h[3];
        size_t n = 0;
        if (b->first_ctype[0] != '\0')
            h[n++] = (struct pc_header){(char *)"Content-Type", b->first_ctype};
        h[n++] = (struct pc_header){(char *)"Age", age};
        if (stale)
            h[n++] = (struct pc_header){(char *)"Warning", (char *)"110 - \"Response is Stale\""};
        /* Found after waiting for another process's model call: that call answered it. */
        p->result = stale ? RES_STALE : b->retried ? RES_COALESCED : RES_HIT;
        PC_METRIC_ADD(p->w->metrics.from_cache_bytes, out.len);
        answer_merged(p, b->hit[0].status, h, n, out.data, out.len);
    }
    pc_buf_release(&out);
}

/* ---- storing ----------------------------------------------------------------------- */

/*
 * The new predictions of one model answer, stored each under its instance's key as a "PI1"
 * instance value in an envelope (ttl env_ttl_s written into it, 0: none), kept
 * redis_ttl_s in Redis: a slice at a time (see the top of the file).
 */
struct store_job {
    struct pc_worker *w;
    struct pc_preq *p;          /* its request, freed once the last SET is sent (its lock is
                                   released after them); NULL for a refresh */
    struct pc_batch_keys *keys; /* a refresh's keys (owned); NULL: p->batch's picks */
    const char *prefix;         /* the keys' */
    const char *data;           /* the answer: the model's, then body's once it must last */
    size_t len;
    struct pc_buf body;
    struct pc_batch_array preds;   /* owned */
    struct pc_batch_layout layout; /* points into data */
    char *ctype;
    int status, env_ttl_s, redis_ttl_s;
    void *fs;          /* the flight to end once the stores are answered, or NULL; owned
                          here until handed to the SET (store_one) or the PING (store_end),
                          whose callback ends and frees it exactly once */
    size_t next;       /* the next prediction to store */
    uint64_t begun_us; /* when the request (or refresh) began: instances purged since stay out */
    struct pc_buf inst, val;
};

/* A job for r's predictions preds (taken over; r borrowed until the first slice returns). */
static struct store_job *store_job_new(struct pc_worker *w, const struct pc_upstream_resp *r,
                                       struct pc_batch_array *preds,
                                       const struct pc_batch_layout *layout, int env_ttl_s,
                                       int redis_ttl_s)
{
    struct store_job *j = calloc(1, sizeof *j);
    const char *ctype = pc_proxy_find_header(r->headers, r->n_headers, "Content-Type");
    if (j == NULL || (j->ctype = strdup(ctype != NULL ? ctype : "")) == NULL) {
        free(j);
        return NULL;
    }
    j->w = w;
    j->data = r->body.data;
    j->len = r->body.len;
    pc_buf_init(&j->body);
    pc_buf_init(&j->inst);
    pc_buf_init(&j->val);
    j->preds = *preds;
    memset(preds, 0, sizeof *preds);
    j->layout = *layout;
    j->status = r->status;
    j->env_ttl_s = env_ttl_s;
    j->redis_ttl_s = redis_ttl_s;
    return j;
}

static void store_job_free(struct store_job *j)
{
    pc_proxy_batch_keys_free(j->keys);
    pc_buf_release(&j->body);
    pc_buf_release(&j->inst);
    pc_buf_release(&j->val);
    pc_batch_array_release(&j->preds);
    free(j->ctype);
    free(j);
}

/* Stores prediction idx. A job of one prediction whose flight ends after it hands the
 * flight to the SET itself: its answer ends it, and no PING follows (store_end). */
static void store_one(struct store_job *j, size_t idx)
{
    struct pc_worker *w = j->w;
    const struct pc_span *s = &j->preds.elems[idx];
    const unsigned char *d =
        j->keys != NULL ? j->keys->dig[idx] : j->p->batch->dig[j->p->batch->pick[idx]];
    j->inst.len = 0;
    j->val.len = 0;
    if (pc_batch_encode_instance(&j->layout, j->data + s->off, s->len, &j->inst) != 0) {
        PC_METRIC_INC(w->metrics.store_skipped);
        return;
    }
    struct pc_envelope env = {
        .status = j->status,
        .stored_at_ms = pc_wall_ms(),
        .ttl_s = j->env_ttl_s,
        .content_type = j->ctype,
        .body = j->inst.data,
        .body_len = j->inst.len,
    };
    char key[PC_KEY_MAX];
    if (j->inst.len > w->cfg->max_value_bytes || pc_cachekey_format(j->prefix, d, key) == 0 ||
        (env.key_tag = pc_envelope_key_tag(key, strlen(key)), pc_envelope_encode(&env, &j->val)) !=
            0) {
        PC_METRIC_INC(w->metrics.store_skipped);
        return;
    }
    if (pc_answer_purged(w, key, j->begun_us))
        return;
    pc_l1_put(w->l1, key, j->val.data, j->val.len);
    if (j->fs == NULL || j->preds.n != 1) {
        pc_store_set(w->store, key, j->val.data, j->val.len, j->redis_ttl_s);
    } else if (pc_store_set_cb(w->store, key, j->val.data, j->val.len, j->redis_ttl_s,
                               pc_proxy_flight_stored, j->fs) == 0) {
        j->fs = NULL; /* the SET's answer ends the flight */
    }
}

/* The stores before this PING are answered (one connection, in order; in a cluster, a
 * PING to every node): the flight ends. */
static void on_stores_done(const struct pc_reply *reply, void *arg)
{
    pc_proxy_flight_stored(reply != NULL, arg);
}

/* The last SET is sent (ok) or the rest were given up: the flight ends after them, the
 * request is freed (its lock released after them), and so is the job. */
static void store_end(struct store_job *j, int ok)
{
    if (!ok && j->next < j->preds.n) /* Redis could not take them */
        PC_METRIC_ADD(j->w->metrics.store_failed, j->preds.n - j->next);
    if (j->fs != NULL) {
        const char *argv[] = {"PING"};
        size_t lens[] = {4};
        if (!ok || pc_store_command(j->w->store, 0, on_stores_done, j->fs, 1, argv, lens) != 0)
            pc_proxy_flight_stored(0, j->fs);
    }
    if (j->p != NULL)
        pc_preq_free(j->p);
    store_job_free(j);
}

/* The job outlives the model's answer: it keeps its own copy. 0 ok. */
static int store_keep_answer(struct store_job *j)
{
    if (j->data == j->body.data)
        return 0;
    if (pc_buf_append(&j->body, j->data, j->len) != 0)
        return -1;
    struct pc_batch_layout *l = &j->layout;
    l->prefix = j->body.data + (l->prefix - j->data);
    l->suffix = j->body.data + (l->suffix - j->data);
    if (l->sep != NULL)
        l->sep = j->body.data + (l->sep - j->data);
    j->data = j->body.data;
    return 0;
}

static void store_slice(struct store_job *j);

static void on_store_turn(int ok, void *arg)
{
    struct store_job *j = arg;
    if (ok && !j->w->closing)
        store_slice(j);
    else
        store_end(j, 0);
}

/* Sends the next slice of SETs, then a PING whose answer sends the one after; ends the job
 * once every SET is sent (or none can be). */
static void store_slice(struct store_job *j)
{
    /* Held (store.h): no client waits for these writes, the flight's PING or the lock's
     * release, so clients' lookups go to Redis before them. */
    struct pc_store *st = j->w->store;
    pc_store_hold(st, 1);
    uint64_t start = pc_now_us();
    size_t first = j->next;
    while (j->next < j->preds.n) {
        store_one(j, j->next++);
        if (j->next - first >= SLICE_SETS ||
            (j->next % CLOCK_EVERY == 0 && pc_now_us() - start >= SLICE_US))
            break;
    }
    if (j->next == j->preds.n)
        store_end(j, 1);
    else if (store_keep_answer(j) != 0 || pc_store_ping(st, on_store_turn, j) != 0)
        store_end(j, 0);
    pc_store_hold(st, 0);
}

/* Stores each prediction the model server just made (preds, taken over), under its
 * instance's key, and frees p once they are sent; fs (from pc_proxy_flight_keep, or NULL)
 * ends the flight once they are answered. why: why nothing may be stored, or NULL. */
static void store_new_then_free(struct pc_preq *p, const struct pc_upstream_resp *r,
                                struct pc_batch_array *preds, const struct pc_batch_layout *layout,
                                void *fs, enum pc_reason why)
{
    struct pc_worker *w = p->w;
    struct pc_batch_state *b = p->batch;
    if (why == PC_REASON_NONE && p->no_store)
        why = PC_REASON_REQUEST_NO_STORE;
    struct store_job *j =
        store_job_new(w, r, preds, layout, p->client_ttl ? p->ttl_s : 0, pc_proxy_store_ttl(p));
    if (j == NULL || why != PC_REASON_NONE) {
        PC_METRIC_ADD(w->metrics.store_skipped, b->n_pick);
        if (j != NULL)
            pc_batch_array_release(&j->preds); /* nothing to store: the flight still ends */
    }
    if (j == NULL) {
        if (fs != NULL)
            pc_proxy_flight_stored(0, fs);
        pc_preq_free(p);
        return;
    }
    j->p = p;
    j->prefix = p->keyp.prefix;
    j->begun_us = p->begun_us;
    j->fs = fs;
    store_slice(j);
}

static const char *pc_proxy_batch_store_refresh(struct pc_worker *w,
                                                const struct pc_upstream_resp *r,
                                                struct pc_batch_keys **keys, int env_ttl_s,
                                                int redis_ttl_s, uint64_t begun_us)
{
    struct pc_batch_array preds;
    memset(&preds, 0, sizeof preds);
    if (pc_batch_parse_response_at(r->body.data, r->body.len, (*keys)->shape->answer, &preds) !=
            0 ||
        preds.n != (*keys)->n) {
        pc_batch_array_release(&preds);
        return "the answer's predictions do not match the instances sent";
    }
    struct pc_batch_layout layout;
    pc_batch_layout_of(r->body.data, r->body.len, &preds, &layout);
    struct store_job *j = store_job_new(w, r, &preds, &layout, env_ttl_s, redis_ttl_s);
    if (j == NULL) {
        pc_batch_array_release(&preds);
        return "out of memory";
    }
    j->keys = *keys;
    *keys = NULL;
    j->prefix = j->keys->prefix;
    j->begun_us = begun_us;
    store_slice(j);
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
    if (pc_batch_parse_response_at(r->body.data, r->body.len, b->shape->answer, preds) != 0 ||
        preds->n != b->n_pick) {
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
    struct pc_buf out;
    pc_buf_init(&out);
    struct merge_src m = {b, r->body.data, preds, {0}};
    if (merge(&m, layout, &out) != 0)
        pc_proxy_answer_error(p, 503, "out of memory");
    else
        answer_merged(p, r->status, r->headers, r->n_headers, out.data, out.len);
    pc_buf_release(&out);
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
    enum pc_reason personal = PC_REASON_NONE;
    enum pc_reason why = r->error == PC_UP_OK ? pc_proxy_judge(p, r, &personal) : PC_REASON_NONE;
    int storable = answer_model(p, r, &preds, &layout);
    size_t n_waiters = 0;
    struct pc_preq **waiters = NULL;
    if (p->flight != NULL && (!storable || personal != PC_REASON_NONE)) {
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
        if (personal == PC_REASON_NONE)
            answer_shared(waiters[i], r);
        else
            pc_proxy_batch_send(waiters[i], RES_MISS);
    }
    free(waiters);
    if (!storable) {
        pc_preq_free(p);
        return;
    }
    /* After the answers: no client waits for Redis. */
    void *fs = why == PC_REASON_NONE ? pc_proxy_flight_keep(p, r) : NULL;
    store_new_then_free(p, r, &preds, &layout, fs, why);
    pc_batch_array_release(&preds);
}

static void pc_proxy_batch_send(struct pc_preq *p, enum pc_cache_result result)
{
    PC_PREQ_CHECK(p);
    struct pc_batch_state *b = p->batch;
    size_t len;
    const char *body = pc_preq_body(p, &len);
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
    int said = b->said; /* what the lookup's lock said, for this turn only */
    b->said = -1;
    size_t k = 0;
    for (size_t u = 0; u < b->n_uniq; u++) { /* u follows first appearance */
        b->resp_of[u] = NO_POS;
        if (!b->hit[u].found) {
            b->resp_of[u] = (uint32_t)k;
            b->pick[k++] = (uint32_t)u;
        }
    }
    b->n_pick = k;
    if (!b->counted) {
        PC_METRIC_ADD(p->w->metrics.instances_hit, b->hits);
        PC_METRIC_ADD(p->w->metrics.instances_miss, k);
        b->counted = 1;
    }
    /* A no-cache request wants a model call of its own: it neither joins nor leads. */
    if (p->no_cache || pc_cachekey_herd_digests(p->keyp.prefix, b->dig, b->pick, k, p->herd) != 0) {
        p->herd[0] = '\0';
        pc_proxy_batch_send(p, result); /* cannot coalesce: go alone */
        return;
    }
    struct pc_flight *f;
    switch (pc_proxy_join(p, &f)) {
    case PC_JOIN_WAIT:
        pc_coalesce_unlock(p); /* a lock the lookup took: this process's leader calls */
        return;                /* answered by on_batch_backend of the leader */
    case PC_JOIN_DONE:
        pc_coalesce_unlock(p);
        answer_kept(p, f);
        return;
    case PC_JOIN_LEAD:
        break;
    }
    /* Nothing was cached and the lookup took the lock of this very herd. Held by another
     * process, it is asked again (pc_proxy_lock_batch): its holder's announcement may have
     * come before this flight began, and nobody heard it. */
    if (said == PC_LOCK_TAKEN && result == RES_MISS) {
        p->result = result;
        pc_coalesce_said(p, &item_flow, (enum pc_lock)said);
        return;
    }
    if (!b->retried && pc_proxy_lock_batch(p, &item_flow, result))
        return;
    pc_proxy_batch_send(p, result);
}

/* ---- lookup ------------------------------------------------------------------------ */

/*
 * Takes one stored value for unique instance u when it is a readable instance value that
 * is fresh, or stale within grace: its prediction and separator are copied into hitdata
 * (and for u 0, whose layout and type an answer from the cache carries, the whole value),
 * then the value into the l1 tier, when l1 is not NULL.
 */
static int take_cached(struct pc_batch_state *b, size_t u, const char *data, size_t len,
                       struct pc_l1 *l1, const char *prefix)
{
    struct pc_envelope env;
    struct pc_batch_layout layout;
    const char *pred;
    size_t pred_len;
    char scratch[PC_CFG_STR], key[PC_KEY_MAX];
    size_t key_len = pc_cachekey_format(prefix, b->dig[u], key);
    if (pc_envelope_decode(data, len, &env, u == 0 ? b->first_ctype : scratch, PC_CFG_STR) != 0 ||
        pc_batch_decode_instance(env.body, env.body_len, &layout, &pred, &pred_len) != 0) {
        pc_log(PC_LOG_WARN, "proxy: unreadable instance entry %s; treating as a miss", key);
        if (u == 0)
            b->first_ctype[0] = '\0';
        return 0;
    }
    /* Only the answer to this key (see judge_value in proxy.c); untagged: a miss. */
    if (env.key_tag != pc_envelope_key_tag(key, key_len)) {
        if (u == 0)
            b->first_ctype[0] = '\0';
        if (env.key_tag == 0)
            return 0;
        pc_log(PC_LOG_WARN, "proxy: the value read for instance %s was stored under another key",
               key);
        return -1;
    }
    int64_t age_ms = pc_wall_ms() - env.stored_at_ms;
    int fresh_s = env.ttl_s > 0 ? env.ttl_s : b->ttl_s;
    if (age_ms > ((int64_t)fresh_s + b->grace_s) * 1000 ||
        (b->max_age_s >= 0 && age_ms > (int64_t)b->max_age_s * 1000))
        return 0; /* past its grace: a batch re-asks the model for it */
    size_t at = b->hitdata.len;
    if (pc_buf_append(&b->hitdata, pred, pred_len) != 0 ||
        (layout.sep_len > 0 && pc_buf_append(&b->hitdata, layout.sep, layout.sep_len) != 0)) {
        b->hitdata.len = at;
        return 0; /* no memory: a miss */
    }
    if (u == 0) {
        b->first.len = 0;
        if (pc_buf_append(&b->first, env.body, env.body_len) != 0) {
            b->hitdata.len = at;
            return 0;
        }
        pc_batch_decode_instance(b->first.data, b->first.len, &b->first_layout, &pred, &pred_len);
    }
    b->hit[u] = (struct cached){
        .stored_at_ms = env.stored_at_ms,
        .pred_off = at,
        .pred_len = pred_len,
        .sep_off = at + pred_len,
        .sep_len = layout.sep_len,
        .status = env.status,
        .ttl_s = env.ttl_s,
        .found = 1,
        .stale = age_ms > (int64_t)fresh_s * 1000,
    };
    if (l1 != NULL && key_len > 0)
        pc_l1_put(l1, key, data, len);
    return 0;
}

static void redis_lookup(struct pc_preq *p);

/*
 * The in-process tier, a slice per loop turn: when every instance is a fresh hit there, p
 * is answered without Redis (and freed); at the first that is not, nothing is taken and
 * Redis is asked for all of them.
 */
static void l1_more(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    struct pc_l1 *l1 = p->w->l1;
    uint64_t start = pc_now_us();
    struct pc_buf v;
    pc_buf_init(&v);
    char key[PC_KEY_MAX];
    int miss = 0;
    while (b->l1_next < b->n_uniq) {
        size_t u = b->l1_next;
        v.len = 0;
        if (pc_cachekey_format(p->keyp.prefix, b->dig[u], key) == 0 ||
            !pc_l1_get_refresh(l1, p->w->store, key, &v, &p->w->metrics.l1_refreshes)) {
            miss = 1;
            break;
        }
        take_cached(b, u, v.data, v.len, NULL, p->keyp.prefix);
        if (!b->hit[u].found || b->hit[u].stale) { /* stale ones are Redis's to judge */
            miss = 1;
            break;
        }
        if (++b->l1_next % CLOCK_EVERY == 0 && pc_now_us() - start >= SLICE_US)
            break;
    }
    pc_buf_release(&v);
    if (!miss && b->l1_next < b->n_uniq && next_turn(p, l1_more) == 0)
        return;
    if (miss || b->l1_next < b->n_uniq) {
        drop_hits(b);
        redis_lookup(p);
        return;
    }
    b->hits = b->n;
    PC_METRIC_INC(p->w->metrics.l1_hits);
    if (!b->counted)
        PC_METRIC_ADD(p->w->metrics.instances_hit, b->n);
    answer_all_cached(p);
    pc_preq_free(p);
}

/* The MGET answer: valid only during this callback, so hits are copied out. */
static void on_batch_lookup(const struct pc_reply *reply, void *arg)
{
    struct pc_preq *p = arg;
    struct pc_batch_state *b = p->batch;
    if (reply == NULL || pc_reply_type(reply) != PC_REPLY_ARRAY ||
        pc_reply_count(reply) != b->n_uniq) {
        PC_METRIC_INC(p->w->metrics.redis_get_failed);
        p->reason = PC_REASON_REDIS_ERROR;
        forward_missing(p, RES_BYPASS);
        return;
    }
    PC_METRIC_INC(p->w->metrics.redis_get_ok);
    int foreign = 0; /* values tagged with another key: each a miss, the connection dropped */
    for (size_t u = 0; u < b->n_uniq; u++) {
        const struct pc_reply *e = pc_reply_elem(reply, u);
        size_t len;
        const char *data = pc_reply_str(e, &len);
        if (pc_reply_type(e) == PC_REPLY_STRING && data != NULL)
            foreign |= take_cached(b, u, data, len, p->w->l1, p->keyp.prefix) != 0;
    }
    if (foreign)
        pc_store_out_of_step(p->w->store, "cache entries of other keys answered an MGET");
    for (size_t i = 0; i < b->n; i++)
        b->hits += b->hit[b->uniq_of[i]].found;
    if (b->hits < b->n) {
        /* The model is asked anyway: it answers the stale instances too, so they are
         * misses like the missing ones. */
        for (size_t u = 0; u < b->n_uniq; u++) {
            if (b->hit[u].stale)
                b->hit[u] = (struct cached){0};
        }
        b->hits = 0;
        for (size_t i = 0; i < b->n; i++)
            b->hits += b->hit[b->uniq_of[i]].found;
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

/* The state of a batch of n instances with room for n_dig digests; NULL on no memory. */
static struct pc_batch_state *batch_new(const struct pc_preq *p, size_t n, size_t n_dig)
{
    struct pc_batch_state *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    pc_buf_init(&b->sub);
    pc_buf_init(&b->hitdata);
    pc_buf_init(&b->first);
    pc_buf_init(&b->memo_ctx);
    b->shape = p->ad.items;
    b->n = n;
    b->ttl_s = p->route->v.ttl_s; /* freshness of entries without their own TTL */
    b->grace_s = p->w->cfg->grace_s;
    b->max_age_s = p->max_age_s;
    b->said = -1;
    b->uniq_of = malloc(n * sizeof *b->uniq_of);
    b->dig = malloc(n_dig * sizeof *b->dig);
    if (b->uniq_of == NULL || b->dig == NULL) {
        pc_proxy_batch_free(b);
        return NULL;
    }
    return b;
}

int pc_proxy_batch_key(struct pc_preq *p, const struct pc_keymemo_probe *probe, const char *ctx,
                       size_t ctx_len)
{
    if (p->ad.items == NULL)
        return 1;
    size_t len;
    const char *body = pc_preq_body(p, &len);
    size_t max = (size_t)p->w->cfg->max_batch_instances;
    /* Over the bound: counted up to the instance past it, nothing keyed (see the top). */
    if (pc_batch_exceeds_at(body, len, p->ad.items->request, max))
        return 2;
    struct pc_cachekey_batch *kb;
    int rc = pc_cachekey_batch_read(&p->keyp, p->head, p->head_len, body, len, max, &kb);
    if (rc != 0)
        return rc; /* 1 not a batch, 2 over the bound (a spelling the count skips), -1 */
    size_t n = pc_cachekey_batch_count(kb);
    struct pc_batch_state *b = batch_new(p, n, n);
    if (b == NULL) {
        pc_cachekey_batch_free(kb);
        return -1;
    }
    b->keying = kb;
    if (p->w->memo != NULL && probe != NULL && pc_buf_append(&b->memo_ctx, ctx, ctx_len) == 0) {
        b->probe = *probe;
        b->remember = 1;
    }
    p->batch = b;
    p->free_items = pc_proxy_batch_free;
    p->hit_keys = pc_proxy_batch_hit_keys;
    p->items = pc_proxy_batch_items;
    p->items_purged = pc_proxy_batch_purged_since;
    rc = key_slice(b); /* a small batch is keyed now; a larger one by pc_proxy_batch_lookup */
    if (rc < 0 || (rc == 1 && keyed(p) != 0)) {
        p->batch = NULL;
        pc_proxy_batch_free(b);
        return -1;
    }
    return 0;
}

int pc_proxy_batch_from_memo(struct pc_preq *p, const struct pc_keymemo_val *v)
{
    if (v->keys_len != v->n_uniq * DIGEST || v->n_uniq == 0 || v->n_uniq > v->n)
        return -1;
    struct pc_batch_state *b = batch_new(p, v->n, v->n_uniq);
    uint32_t *first = b != NULL ? malloc(v->n_uniq * sizeof *first) : NULL;
    if (first == NULL) {
        pc_proxy_batch_free(b);
        return -1;
    }
    memcpy(b->dig, v->keys, v->keys_len);
    memcpy(b->uniq_of, v->uniq_of, v->n * sizeof *b->uniq_of);
    for (size_t u = 0; u < v->n_uniq; u++)
        first[u] = NO_POS;
    for (size_t i = 0; i < v->n; i++) {
        uint32_t u = b->uniq_of[i];
        if (first[u] == NO_POS)
            first[u] = (uint32_t)i;
    }
    b->n_uniq = v->n_uniq;
    int rc = uniq_arrays(b, first);
    free(first);
    if (rc != 0) {
        pc_proxy_batch_free(b);
        return -1;
    }
    p->batch = b;
    p->free_items = pc_proxy_batch_free;
    p->hit_keys = pc_proxy_batch_hit_keys;
    p->items = pc_proxy_batch_items;
    p->items_purged = pc_proxy_batch_purged_since;
    return 0;
}

void pc_proxy_batch_lookup(struct pc_preq *p)
{
    PC_PREQ_CHECK(p);
    struct pc_batch_state *b = p->batch;
    if (b->keying != NULL) { /* keyed a slice per loop turn, then looked up (key_more) */
        if (next_turn(p, key_more) != 0) {
            pc_proxy_answer_error(p, 503, "out of memory");
            pc_preq_free(p);
        }
        return;
    }
    if (p->no_cache) {
        forward_missing(p, RES_MISS);
        return;
    }
    if (p->skip_lookup) { /* no generation from Redis: keyed, but not looked up */
        p->reason = pc_store_ready(p->w->store) ? PC_REASON_GENERATION_UNKNOWN
                                                : PC_REASON_REDIS_UNAVAILABLE;
        forward_missing(p, RES_BYPASS);
        return;
    }
    if (p->w->l1 != NULL) {
        b->l1_next = 0;
        l1_more(p);
        return;
    }
    redis_lookup(p);
}

/*
 * A miss's one round trip before the model call: the MGET and, when none of the instances
 * is cached, the lock of the whole batch's herd key (coalesce.h's lock script, folded in),
 * or its waiters' mark when another process holds it. KEYS: the instances', then the herd's
 * lock and mark; ARGV: the owner, lock_timeout_ms. Answers {values, 0 | 2 taken | 3 held}.
 */
static const char lookup_lock_script[] =
    "local n = #KEYS - 2 "
    "local v = redis.call('MGET', unpack(KEYS, 1, n)) "
    "for i = 1, n do if v[i] then return {v, 0} end end "
    "if redis.call('SET', KEYS[n + 1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {v, 2} end "
    "redis.call('SET', KEYS[n + 2], '1', 'PX', ARGV[2]) "
    "return {v, 3}";

/* The lookup script's answer: the MGET's part to on_batch_lookup, the lock's kept. */
static void on_batch_lookup_lock(const struct pc_reply *reply, void *arg)
{
    struct pc_preq *p = arg;
    struct pc_batch_state *b = p->batch;
    if (pc_lock_refused(reply)) { /* logged: the plain MGET still finds */
        b->plain = 1;
        redis_lookup(p);
        return;
    }
    const struct pc_reply *vals = NULL, *said = NULL;
    if (reply != NULL && pc_reply_type(reply) == PC_REPLY_ARRAY && pc_reply_count(reply) == 2) {
        vals = pc_reply_elem(reply, 0);
        said = pc_reply_elem(reply, 1);
    }
    long long what =
        said != NULL && pc_reply_type(said) == PC_REPLY_INTEGER ? pc_reply_integer(said) : 0;
    if (what == 2) {
        p->lock.held = 1; /* released with p (its hook) if it does not lead after all */
        b->said = PC_LOCK_TAKEN;
    } else if (what == 3) {
        b->said = PC_LOCK_HELD;
    }
    on_batch_lookup(vals, p);
}

/* Most instances the lookup script takes: Lua's unpack has a bound of its own. */
#define LOOKUP_LOCK_MAX 1000

/* One MGET for every unique instance (on_batch_lookup), with the lock in the same script
 * when another process may be fetching the same batch (on_batch_lookup_lock). */
static void redis_lookup(struct pc_preq *p)
{
    struct pc_batch_state *b = p->batch;
    const struct pc_config *cfg = p->w->cfg;
    /* One slot in a cluster only for one key: there the lock is asked on its own. */
    int lock = !cfg->redis_cluster && !b->retried && !b->plain && b->n_uniq <= LOOKUP_LOCK_MAX &&
               pc_lock_wanted(p->w, 0);
    char herd[PC_KEY_MAX], lk[PC_KEY_MAX + 8], wk[PC_KEY_MAX + 8], owner[32], ttl[16];
    if (lock) {
        for (size_t u = 0; u < b->n_uniq; u++)
            b->pick[u] = (uint32_t)u;
        lock = pc_cachekey_herd_digests(p->keyp.prefix, b->dig, b->pick, b->n_uniq, herd) == 0;
    }
    if (lock) {
        memcpy(p->herd, herd, sizeof p->herd); /* the key a lock it takes is released by */
        pc_coalesce_prepare(p, herd, lk, wk, owner);
        snprintf(ttl, sizeof ttl, "%d", cfg->lock_timeout_ms);
    }
    size_t extra = lock ? 7 : 1; /* EVAL script numkeys ... lock mark owner ttl, or MGET */
    /* The keys' text, formatted for this command only: every key has the same length. */
    char first[PC_KEY_MAX], numkeys[24];
    size_t kl = pc_cachekey_format(p->keyp.prefix, b->dig[0], first);
    char *text = kl > 0 ? malloc(b->n_uniq * kl) : NULL;
    const char **argv = calloc(b->n_uniq + extra, sizeof *argv);
    size_t *lens = calloc(b->n_uniq + extra, sizeof *lens);
    int rc = -1;
    if (text != NULL && argv != NULL && lens != NULL) {
        size_t a = 0;
        if (lock) {
            snprintf(numkeys, sizeof numkeys, "%zu", b->n_uniq + 2);
            argv[a++] = "EVAL";
            argv[a++] = lookup_lock_script;
            argv[a++] = numkeys;
        } else {
            argv[a++] = "MGET";
        }
        for (size_t u = 0; u < b->n_uniq; u++) {
            pc_cachekey_format(p->keyp.prefix, b->dig[u], first);
            memcpy(text + u * kl, first, kl);
            argv[a] = text + u * kl;
            lens[a++] = kl;
        }
        if (lock) {
            argv[a++] = lk;
            argv[a++] = wk;
            argv[a++] = owner;
            argv[a++] = ttl;
        }
        for (size_t i = 0; i < a; i++)
            if (lens[i] == 0)
                lens[i] = strlen(argv[i]);
        rc = pc_store_lookup(p->w->store, 0, lock ? on_batch_lookup_lock : on_batch_lookup, p,
                             (int)a, argv, lens);
    }
    free(text);
    free(argv);
    free(lens);
    if (rc != 0) {
        PC_METRIC_INC(p->w->metrics.redis_get_failed);
        p->reason = PC_REASON_REDIS_UNAVAILABLE;
        forward_missing(p, RES_BYPASS);
    }
}

static void pc_proxy_batch_retry(struct pc_preq *p)
{
    PC_PREQ_CHECK(p);
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
