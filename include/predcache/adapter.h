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
};

/* The family a path takes under "auto". */
enum pc_adapter pc_adapter_by_path(const char *path);

/* The view of api (AUTO: by path) for path. */
void pc_adapter_view(enum pc_adapter api, const char *path, struct pc_adapter_view *out);

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
