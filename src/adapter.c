/*
 * adapter: the model server families (see adapter.h for the table).
 */
#include "predcache/adapter.h"

#include <stdlib.h>
#include <string.h>

#include "predcache/jsonedit.h"

const char *const pc_adapter_names[] = {"auto",   "tfserving", "kserve_v2", "torchserve", "openai",
                                        "ollama", "tei",       "json",      "raw",        NULL};

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

static int one_of(const char *s, const char *const *set)
{
    for (; *set != NULL; set++) {
        if (strcmp(s, *set) == 0)
            return 1;
    }
    return 0;
}

static const char *const ollama_paths[] = {"/api/embed", "/api/embeddings", "/api/generate",
                                           "/api/chat", NULL};
static const char *const tei_paths[] = {"/embed", "/embed_all", "/embed_sparse", "/rerank", NULL};

static const struct pc_items_shape tfs_items = {"instances", "predictions", 0, 0};
static const struct pc_items_shape openai_items = {"input", "data", 1, 1};
static const struct pc_items_shape ollama_items = {"input", "embeddings", 1, 0};
static const struct pc_items_shape tei_items = {"inputs", "", 1, 0};
static const char *const tei_item_paths[] = {"/embed", "/embed_all", "/embed_sparse", NULL};

enum pc_adapter pc_adapter_by_path(const char *path)
{
    if (starts(path, "/v1/models/") && strchr(path + 11, ':') != NULL)
        return PC_ADAPTER_TFSERVING;
    if (starts(path, "/v2/models/") && ends(path, "/infer"))
        return PC_ADAPTER_KSERVE_V2;
    if (starts(path, "/predictions/"))
        return PC_ADAPTER_TORCHSERVE;
    if (ends(path, "/chat/completions") || ends(path, "/v1/completions") ||
        ends(path, "/v1/embeddings"))
        return PC_ADAPTER_OPENAI;
    if (one_of(path, ollama_paths))
        return PC_ADAPTER_OLLAMA;
    if (one_of(path, tei_paths))
        return PC_ADAPTER_TEI;
    return PC_ADAPTER_JSON;
}

void pc_adapter_view(enum pc_adapter api, const char *path, struct pc_adapter_view *v)
{
    static const char *const json_noise[] = {"request_id"};
    static const char *const kserve_noise[] = {"id"};
    memset(v, 0, sizeof *v);
    if (api <= PC_ADAPTER_AUTO || api >= PC_ADAPTER_COUNT)
        api = pc_adapter_by_path(path);
    v->api = api;
    v->family = PC_FAMILY_JSON;
    v->json_when = PC_JSON_UNLESS_TYPED;
    v->noise = json_noise;
    v->n_noise = 1;
    switch (api) {
    case PC_ADAPTER_TFSERVING:
        v->family = ends(path, ":classify") || ends(path, ":regress") ? PC_FAMILY_TFS_EXAMPLES
                                                                      : PC_FAMILY_TFS_PREDICT;
        v->items = v->family == PC_FAMILY_TFS_PREDICT ? &tfs_items : NULL;
        v->status_versions = 1;
        v->json_when = PC_JSON_ALWAYS;
        break;
    case PC_ADAPTER_KSERVE_V2:
        v->family = PC_FAMILY_KSERVE;
        v->noise = kserve_noise;
        v->status_versions = 1;
        v->json_when = PC_JSON_ALWAYS;
        break;
    case PC_ADAPTER_TORCHSERVE: /* its handler is handed the whole body: no noise known */
        v->noise = NULL;
        v->n_noise = 0;
        v->boilerplate_cc = 1;
        v->json_when = PC_JSON_IF_TYPED;
        break;
    case PC_ADAPTER_OPENAI:
        v->completion = ends(path, "/completions");
        v->items = ends(path, "/embeddings") ? &openai_items : NULL;
        break;
    case PC_ADAPTER_OLLAMA:
        v->completion = strcmp(path, "/api/generate") == 0 || strcmp(path, "/api/chat") == 0;
        v->stream_default = v->completion;
        v->items = strcmp(path, "/api/embed") == 0 ? &ollama_items : NULL;
        break;
    case PC_ADAPTER_TEI:
        v->items = one_of(path, tei_item_paths) ? &tei_items : NULL;
        break;
    case PC_ADAPTER_JSON: /* a plain predictor that takes TF Serving's batches */
        v->items = ends(path, "/predict") ? &tfs_items : NULL;
        break;
    case PC_ADAPTER_RAW:
        v->family = PC_FAMILY_RAW;
        v->noise = NULL;
        v->n_noise = 0;
        break;
    default:
        break;
    }
}

enum pc_key_family pc_adapter_family(const struct pc_adapter_view *v, const char *content_type)
{
    int typed_json = content_type != NULL && strcasestr(content_type, "json") != NULL;
    switch (v->json_when) {
    case PC_JSON_UNLESS_TYPED:
        return content_type == NULL || typed_json ? v->family : PC_FAMILY_RAW;
    case PC_JSON_IF_TYPED:
        return typed_json ? v->family : PC_FAMILY_RAW;
    default:
        return v->family;
    }
}

/*
 * The number a JSON value text denotes, as a Python or JSON reader reads it: 0 with *out
 * set when text is a JSON number; 1 when it is null; -1 for anything else.
 */
static int number_of(const char *text, size_t len, double *out)
{
    char buf[64];
    if (len == 4 && memcmp(text, "null", 4) == 0)
        return 1;
    if (len == 0 || len >= sizeof buf || !(text[0] == '-' || (text[0] >= '0' && text[0] <= '9')))
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (strspn(buf, "-+.0123456789eE") != len)
        return -1;
    char *end;
    *out = strtod(buf, &end);
    return *end == '\0' ? 0 : -1;
}

/* The value of member name in the object text body: 0 a number (*out), 1 absent or null,
 * -1 anything else (a string, an object, no memory). */
static int member_number(const char *body, size_t len, const char *name, double *out)
{
    size_t off = 0, vlen = 0;
    int rc = pc_jsonedit_find_member(body, len, name, &off, &vlen);
    if (rc != 0)
        return rc;
    return number_of(body + off, vlen, out);
}

enum pc_reason pc_adapter_judge_request(const struct pc_adapter_view *v, const char *body,
                                        size_t len, int absent_greedy)
{
    if (!v->completion)
        return PC_REASON_NONE;
    const char *obj = body;
    size_t olen = len, off = 0, vlen = 0;
    if (v->api == PC_ADAPTER_OLLAMA) { /* {"options": {"temperature": 0, ...}} */
        int rc = pc_jsonedit_find_member(body, len, "options", &off, &vlen);
        if (rc < 0)
            return PC_REASON_NON_DETERMINISTIC;
        obj = rc == 0 ? body + off : "{}";
        olen = rc == 0 ? vlen : 2;
    }
    double t = 1, n = 1;
    int rt = member_number(obj, olen, "temperature", &t);
    if (rt < 0 || (rt == 0 && t != 0) || (rt == 1 && !absent_greedy))
        return PC_REASON_NON_DETERMINISTIC;
    int rn = v->api == PC_ADAPTER_OLLAMA ? 1 : member_number(body, len, "n", &n);
    if (rn < 0 || (rn == 0 && n != 1))
        return PC_REASON_NON_DETERMINISTIC;
    return PC_REASON_NONE;
}
