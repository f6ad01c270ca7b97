/*
 * proxy_stream: requests that ask for a streamed answer (an LLM server's "stream": true,
 * or Accept: text/event-stream). Their answer is passed on as the model server writes it:
 * no buffering, no Content-Length (chunked to the client), no bound on the whole answer,
 * only on the silence between its bytes ([backend] idle_timeout_ms). Not cached (X-Cache:
 * PASS, X-Cache-Reason: streamed or non-deterministic on a cached route), unless it is a
 * deterministic generation (p->stream_keep): then it was looked up first, and on a miss
 * its bytes are kept as they pass and stored once the stream ended whole (a hit replays
 * them: the same events, the same framing).
 *
 *   client --request--> pc_proxy_stream_send --pc_upstream_stream--> model server
 *   model server --head--> on_head --pc_http_stream_begin--> client
 *                --chunk--> on_data --pc_http_stream_write--> client (over the mark: the
 *                           chunk is kept by curl until the client drains: on_drained)
 *                --end----> on_end --pc_http_stream_end (the last chunk, or cut short),
 *                           then pc_answer_store_result when kept and whole
 *   client gone --> on_gone --pc_upstream_cancel--> the model server's call stops
 *
 * p is freed by whichever of on_end and on_gone comes last to the stream's end: on_end
 * (the transfer is over) or on_gone (the transfer is cancelled there).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "predcache/jsonedit.h"
#include "predcache/log.h"
#include "answer.h"
#include "bgcall.h"
#include "forward.h"
#include "preq.h"
#include "proxy_stream.h"

/* A request that asks for a stream: Accept names text/event-stream, or its JSON body has
 * a root member "stream" that is true (OpenAI, TGI, vLLM, llama.cpp), or not false where
 * the family streams by default (Ollama's generations). Every POST comes here: a body
 * without the word is not scanned as JSON (a name spelled with escapes is then missed,
 * and its answer buffered as any other). */
int pc_proxy_wants_stream(const struct pc_preq *p)
{
    if (strcmp(pc_http_req_method(p->req), "POST") != 0)
        return 0;
    const char *accept = pc_http_req_header(p->req, "Accept");
    if (accept != NULL && strcasestr(accept, "text/event-stream") != NULL)
        return 1;
    /* TF Serving's predict, classify and regress and KServe v2's infer answer in one
     * body, whatever theirs says: not scanned. */
    const char *path = pc_http_req_path(p->req);
    size_t pl = strlen(path);
    if (p->ad.api == PC_ADAPTER_TFSERVING ||
        (p->ad.api == PC_ADAPTER_KSERVE_V2 && pl >= 6 && strcmp(path + pl - 6, "/infer") == 0))
        return 0;
    size_t len, off = 0, vlen = 0;
    const char *body = pc_preq_body(p, &len);
    int by_default = p->ad.stream_default;
    if (len == 0 || memmem(body, len, "\"stream\"", 8) == NULL ||
        pc_jsonedit_find_member(body, len, "stream", &off, &vlen) != 0)
        return by_default && len > 0;
    if (vlen == 4 && memcmp(body + off, "true", 4) == 0)
        return 1;
    return by_default && !(vlen == 5 && memcmp(body + off, "false", 5) == 0);
}

/* The stream is over for the client: counted, logged, and req given back; p freed after
 * a kept answer that ended whole (r: the transfer's end, else NULL) is stored. */
static void stream_done(struct pc_preq *p, int whole, const struct pc_upstream_resp *r)
{
    struct pc_upstream_resp kept;
    enum pc_reason why = PC_REASON_NONE;
    int store = p->stream_keep && r != NULL;
    if (store) { /* judged while the request is there: its reason goes in the log line */
        kept = *r;
        kept.status = p->stream_status;
        kept.headers = p->stream_hdrs;
        kept.n_headers = p->n_stream_hdrs;
        kept.body = p->stream_rec;
        why = !whole ? PC_REASON_STREAM_CUT : p->stream_over ? PC_REASON_TOO_LARGE : PC_REASON_NONE;
        if (why != PC_REASON_NONE && p->reason == PC_REASON_NONE)
            p->reason = why;
        enum pc_reason personal;
        if (why == PC_REASON_NONE)
            why = pc_proxy_judge(p, &kept, &personal);
    }
    pc_proxy_account(p, p->stream_status, p->streamed);
    pc_http_stream_end(p->req, whole);
    p->req = NULL;
    if (store)
        pc_answer_store_result(p, &kept, why, NULL, NULL);
    pc_preq_free(p);
}

/* Keeps the head's headers of a stream whose answer may be stored. 0 ok, -1 no memory. */
static int keep_headers(struct pc_preq *p, const struct pc_header *headers, size_t n)
{
    p->stream_hdrs = calloc(n + 1, sizeof *p->stream_hdrs);
    if (p->stream_hdrs == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct pc_header *h = &p->stream_hdrs[p->n_stream_hdrs];
        h->name = strdup(headers[i].name);
        h->value = strdup(headers[i].value);
        p->n_stream_hdrs++;
        if (h->name == NULL || h->value == NULL)
            return -1;
    }
    return 0;
}

/* Keeps a chunk of a stream whose answer may be stored, up to max_value_bytes. */
static void keep_data(struct pc_preq *p, const char *data, size_t n)
{
    if (!p->stream_keep || p->stream_over)
        return;
    if (p->stream_rec.len + n > p->w->cfg->max_value_bytes ||
        pc_buf_append(&p->stream_rec, data, n) != 0) {
        p->stream_over = 1;
        pc_buf_release(&p->stream_rec);
    }
}

/* The http server's callbacks (arg: p, which the stream owns until stream_done). */
static void on_gone(void *arg)
{
    struct pc_preq *p = arg;
    pc_log(PC_LOG_DEBUG, "proxy: %s: the client left a stream after %zu bytes",
           pc_http_req_path(p->req), p->streamed);
    pc_upstream_cancel(p->xfer); /* from the client's connection: not inside curl */
    p->xfer = NULL;
    stream_done(p, 0, NULL);
}

static void on_drained(void *arg)
{
    struct pc_preq *p = arg;
    pc_upstream_resume(p->xfer);
}

/* The transfer's callbacks (arg: p; headers and data are valid during the call). */
static int on_head(int status, const struct pc_header *headers, size_t n, void *arg)
{
    struct pc_preq *p = arg;
    p->stream_status = status;
    p->backend_ms = (double)(pc_now_us() - pc_http_req_start_us(p->req)) / 1000.0;
    struct pc_header *h = calloc(n + 2, sizeof *h);
    if (h == NULL) { /* the transfer is cancelled (end never runs): answered here */
        p->xfer = NULL;
        pc_proxy_answer_error(p, 503, "out of memory");
        pc_preq_free(p);
        return -1;
    }
    memcpy(h, headers, n * sizeof *h);
    size_t k = n;
    if (p->cacheable) {
        h[k++] = (struct pc_header){(char *)"X-Cache", (char *)pc_proxy_result_name(p->result)};
        if (p->key[0] != '\0')
            h[k++] = (struct pc_header){(char *)"X-Cache-Key", p->key};
        if (p->reason != PC_REASON_NONE)
            h[k++] =
                (struct pc_header){(char *)"X-Cache-Reason", (char *)pc_reason_token(p->reason)};
    }
    if (p->stream_keep && keep_headers(p, headers, n) != 0)
        p->stream_over = 1; /* no memory: passed on, not stored */
    int rc = pc_http_stream_begin(p->req, status, h, k, on_gone, on_drained, p);
    free(h);
    if (rc != 0) { /* the client is gone already: the transfer stops here */
        p->xfer = NULL;
        stream_done(p, 0, NULL);
        return -1;
    }
    return 0;
}

static int on_data(const char *data, size_t n, void *arg)
{
    struct pc_preq *p = arg;
    if (pc_http_stream_full(p->req))
        return 1; /* kept by curl until the client reads (on_drained) */
    if (pc_http_stream_write(p->req, data, n) == 0)
        p->streamed += n;
    keep_data(p, data, n); /* the model server's bytes, whether the client still reads */
    return 0;              /* a client gone is told by on_gone; meanwhile the bytes go nowhere */
}

static void on_end(const struct pc_upstream_resp *r, void *arg)
{
    struct pc_preq *p = arg;
    p->xfer = NULL;
    if (p->stream_status == 0) { /* nothing began: an answer of its own, as any call's */
        if (!pc_proxy_answer_backend_error(p, r))
            pc_proxy_answer_error(p, 502, "the model server's answer ended before it began");
        pc_preq_free(p);
        return;
    }
    if (r->error != PC_UP_OK)
        pc_log(PC_LOG_WARN, "proxy: %s: stream cut after %zu bytes: %s", pc_http_req_path(p->req),
               p->streamed, r->errmsg);
    stream_done(p, r->error == PC_UP_OK, r);
}

static const struct pc_stream_ops stream_ops = {on_head, on_data, on_end};

void pc_proxy_stream_send(struct pc_preq *p, enum pc_cache_result result)
{
    PC_PREQ_CHECK(p);
    struct pc_worker *w = p->w;
    if (!p->stream_keep)
        p->no_store = 1;
    if (pc_forward_prepare_or_free(p, result) != 0)
        return;
    size_t len;
    const char *body = pc_preq_body(p, &len);
    body = pc_proxy_wire_body(p, body, &len); /* as the client sent it */
    PC_METRIC_INC(w->metrics.backend_requests);
    p->xfer = pc_upstream_stream(w->ups[p->backend], pc_http_req_method(p->req),
                                 pc_http_req_target(p->req), p->fwd, p->n_fwd, body, len, 0,
                                 &stream_ops, p);
    if (p->xfer == NULL) {
        PC_METRIC_INC(w->metrics.backend_errors);
        pc_proxy_answer_error(p, 502, "cannot start a model server request");
        pc_preq_free(p);
    }
}
