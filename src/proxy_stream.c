/*
 * proxy_stream: requests that ask for a streamed answer (an LLM server's "stream": true,
 * or Accept: text/event-stream). Their answer is passed on as the model server writes it:
 * no buffering, no Content-Length (chunked to the client), no bound on the whole answer,
 * only on the silence between its bytes ([backend] idle_timeout_ms). Not cached (X-Cache:
 * PASS, X-Cache-Reason: streamed on a cached route).
 *
 *   client --request--> pc_proxy_stream --pc_upstream_stream--> model server
 *   model server --head--> on_head --pc_http_stream_begin--> client
 *                --chunk--> on_data --pc_http_stream_write--> client (over the mark: the
 *                           chunk is kept by curl until the client drains: on_drained)
 *                --end----> on_end --pc_http_stream_end (the last chunk, or cut short)
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
#include "proxy_int.h"

/* A request that asks for a stream: Accept names text/event-stream, or its JSON body has
 * a root member "stream" that is true (OpenAI, TGI, vLLM, llama.cpp, Ollama). Every POST
 * comes here: a body without the word is not scanned as JSON (a name spelled with escapes
 * is then missed, and its answer buffered as any other). */
static int wants_stream(const struct pc_preq *p)
{
    const char *accept = pc_http_req_header(p->req, "Accept");
    if (accept != NULL && strcasestr(accept, "text/event-stream") != NULL)
        return 1;
    size_t len, off = 0, vlen = 0;
    const char *body = pc_preq_body(p, &len);
    if (len == 0 || memmem(body, len, "\"stream\"", 8) == NULL ||
        pc_jsonedit_find_member(body, len, "stream", &off, &vlen) != 0)
        return 0;
    return vlen == 4 && memcmp(body + off, "true", 4) == 0;
}

/* The stream is over for the client: counted, logged, and req given back; p freed. */
static void stream_done(struct pc_preq *p, int whole)
{
    pc_proxy_account(p, p->stream_status, p->streamed);
    pc_http_stream_end(p->req, whole);
    p->req = NULL;
    pc_preq_free(p);
}

/* The http server's callbacks (arg: p, which the stream owns until stream_done). */
static void on_gone(void *arg)
{
    struct pc_preq *p = arg;
    pc_log(PC_LOG_DEBUG, "proxy: %s: the client left a stream after %zu bytes",
           pc_http_req_path(p->req), p->streamed);
    pc_upstream_cancel(p->xfer); /* from the client's connection: not inside curl */
    p->xfer = NULL;
    stream_done(p, 0);
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
        h[k++] = (struct pc_header){(char *)"X-Cache", (char *)"PASS"};
        h[k++] = (struct pc_header){(char *)"X-Cache-Reason", (char *)"streamed"};
    }
    int rc = pc_http_stream_begin(p->req, status, h, k, on_gone, on_drained, p);
    free(h);
    if (rc != 0) { /* the client is gone already: the transfer stops here */
        p->xfer = NULL;
        stream_done(p, 0);
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
    return 0; /* a client gone is told by on_gone; meanwhile the bytes go nowhere */
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
    stream_done(p, r->error == PC_UP_OK);
}

static const struct pc_stream_ops stream_ops = {on_head, on_data, on_end};

int pc_proxy_stream(struct pc_preq *p)
{
    if (strcmp(pc_http_req_method(p->req), "POST") != 0 || !wants_stream(p))
        return 0;
    struct pc_worker *w = p->w;
    p->result = RES_PASS;
    if (p->cacheable)
        p->reason = PC_REASON_STREAMED;
    p->no_store = 1;
    const char *unavailable = pc_worker_backend_refusal(w, p->backend);
    if (unavailable != NULL) {
        PC_METRIC_INC(w->metrics.backend_refused);
        pc_proxy_answer_error(p, 503, unavailable);
        pc_preq_free(p);
        return 1;
    }
    if (pc_proxy_forward_headers(p) != 0) {
        pc_proxy_answer_error(p, 503, "out of memory");
        pc_preq_free(p);
        return 1;
    }
    size_t len;
    const char *body = pc_http_req_body(p->req, &len); /* as the client sent it */
    PC_METRIC_INC(w->metrics.backend_requests);
    p->xfer = pc_upstream_stream(w->ups[p->backend], pc_http_req_method(p->req),
                                 pc_http_req_target(p->req), p->fwd, p->n_fwd, body, len, 0,
                                 &stream_ops, p);
    if (p->xfer == NULL) {
        PC_METRIC_INC(w->metrics.backend_errors);
        pc_proxy_answer_error(p, 502, "cannot start a model server request");
        pc_preq_free(p);
    }
    return 1;
}
