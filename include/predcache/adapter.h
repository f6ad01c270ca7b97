/*
 * adapter: what a model server family's API means for caching. Owns the list of families
 * a route can name ([route NAME] api), the one a path takes when the route says "auto",
 * and each family's request semantics: how its body is read for the key (and which of its
 * members are echoed noise), how its model version is found, whether a request is a
 * generation (cached only when deterministic) and streams by default, whether the
 * family's Cache-Control is boilerplate. Pure: no I/O, no allocation.
 *
 *   tfserving   /v1/models/M[/versions/V|/labels/L]:predict|classify|regress; version
 *               from the status endpoint
 *   kserve_v2   /v2/models/M[/versions/V]/infer (Triton, KServe, MLServer); "id" is noise
 *               written back; version from the status endpoint (none: path as sent)
 *   torchserve  POST|PUT /predictions/M[/V]; raw or JSON bodies (every member read: its
 *               handler gets the whole body); its answers always say Cache-Control
 *               private (boilerplate: not heard unless the route's section sets it)
 *   openai      /v1/embeddings, /v1/chat/completions, /v1/completions (vLLM, TGI,
 *               llama.cpp, LiteLLM, ...); completions only when deterministic
 *   ollama      /api/embed, /api/embeddings, /api/generate, /api/chat; generations stream
 *               unless "stream": false, and are cached only when deterministic
 *   tei         /embed, /embed_all, /embed_sparse, /rerank (text-embeddings-inference)
 *
 * Item lists (cached item by item): TF Serving "instances" -> "predictions" (also a plain
 * JSON /predict); OpenAI embeddings "input" -> "data" (index renumbered); Ollama /api/embed
 * "input" -> "embeddings"; TEI /embed, /embed_all, /embed_sparse "inputs" -> the body.
 *   json        any JSON predictor: the whole body minus "request_id"
 *   raw         the bytes, whatever their type
 */
#ifndef PREDCACHE_ADAPTER_H
#define PREDCACHE_ADAPTER_H

#include <stddef.h>

#include "predcache/cachekey.h"
#include "predcache/reason.h"

/* [route NAME] api (the order of the names in adapter.c) */
enum pc_adapter {
    PC_ADAPTER_AUTO = 0,
    PC_ADAPTER_TFSERVING,
    PC_ADAPTER_KSERVE_V2,
    PC_ADAPTER_TORCHSERVE,
    PC_ADAPTER_OPENAI,
    PC_ADAPTER_OLLAMA,
    PC_ADAPTER_TEI,
    PC_ADAPTER_JSON,
    PC_ADAPTER_RAW,
    PC_ADAPTER_COUNT
};

/* NULL-terminated names, indexed by enum pc_adapter (the conf's choice list). */
extern const char *const pc_adapter_names[];

/*
 * A request that holds a list of items the model answers one by one, in order: each item
 * is cached under its own key (with everything else the body says), and a request whose
 * items are partly cached sends only the others (proxy_batch.c).
 */
struct pc_items_shape {
    const char *request; /* the member holding the items: "instances", "input", "inputs" */
    const char *answer;  /* the member holding one answer per item: "predictions", "data",
                          * "embeddings"; "" when the answer body is that array (TEI) */
    int text_items;      /* a list only when every item is a string or an array: "input":
                          * [1, 2, 3] is one input of token ids (OpenAI), not three items */
    int renumber;        /* each answer element's "index" member is written as its position
                          * in the merged answer (OpenAI's data[i].index) */
};

/* What one request's family means, from the route's api and the request path. */
struct pc_adapter_view {
    enum pc_adapter api;       /* never AUTO */
    enum pc_key_family family; /* how the body is read for the key */
    const char *const *noise;  /* members left out of the key when ignore_fields is
                                * "auto" (static strings) */
    size_t n_noise;
    int status_versions; /* the version comes from the model server's status endpoint */
    int completion;      /* a generation: cached only when deterministic */
    int stream_default;  /* streams unless the body says "stream": false */
    int boilerplate_cc;  /* the family's Cache-Control says nothing about this answer */
    /* When its server reads the body as JSON: always (TF Serving, KServe v2), unless the
     * request declares another media type (a JSON service: a Flask get_json(), a FastAPI
     * body), or only when it declares a JSON one (TorchServe hands its handler the bytes
     * otherwise). A body read as bytes is keyed by its bytes. */
    enum { PC_JSON_ALWAYS, PC_JSON_UNLESS_TYPED, PC_JSON_IF_TYPED } json_when;
    const struct pc_items_shape *items; /* NULL: the body is one input */
};

/* The family a path takes under "auto". */
enum pc_adapter pc_adapter_by_path(const char *path);

/* The view of api (AUTO: by path) for path. */
void pc_adapter_view(enum pc_adapter api, const char *path, struct pc_adapter_view *out);

/* How a body of that Content-Type (NULL: none) is read for the key: v->family, or
 * PC_FAMILY_RAW when v's server reads it as bytes (json_when). */
enum pc_key_family pc_adapter_family(const struct pc_adapter_view *v, const char *content_type);

/*
 * A generation request (v->completion) is deterministic when its temperature is 0 (a JSON
 * number; null or absent: the server's default, which is sampling unless absent_greedy)
 * and it asks for one choice ("n" absent, null or 1). OpenAI-style bodies carry them at the
 * root, Ollama's in "options". PC_REASON_NONE when deterministic (or not a generation),
 * else PC_REASON_NON_DETERMINISTIC.
 */
enum pc_reason pc_adapter_judge_request(const struct pc_adapter_view *v, const char *body,
                                        size_t len, int absent_greedy);

#endif
