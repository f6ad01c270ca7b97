/*
 * routes: the route table. Which route a request takes (longest match over the
 * [cache] routes entries and the [route NAME] sections), what that route says (cache on
 * or off, backend, TTL, input fields), the table's analysis for --check (ambiguous and
 * unreachable routes), and the model name and version named by a predict path.
 * Pure: reads struct pc_config only; no I/O, no allocation that outlives a call.
 */
#ifndef PREDCACHE_ROUTES_H
#define PREDCACHE_ROUTES_H

#include <stddef.h>

#include "predcache/buf.h"
#include "predcache/config.h"

#define PC_ROUTE_NAME_MAX (PC_CFG_STR + 24)

/* One route as the proxy sees it, with the [cache] defaults already applied. */
struct pc_route_view {
    size_t id;                        /* 0.. in table order: [cache] routes, then sections */
    char name[PC_ROUTE_NAME_MAX];     /* the section's name, or "METHOD PATTERN" */
    const struct pc_route_rule *rule; /* borrowed from cfg */
    int section;                      /* 1 for a [route NAME] section */
    int cache;
    int ttl_s;
    size_t backend; /* 0 = [backend], i = cfg->backends[i - 1] */
    const char (*input_fields)[64];
    size_t n_input_fields;
    const char *path_field;
    int per_instance;
    int credentials; /* enum pc_credentials */
    const char (*ignore_fields)[64];
    size_t n_ignore_fields; /* one entry "auto": the API family's default */
    const char (*vary)[64];
    size_t n_vary;
    int response_cache_control; /* enum pc_response_cc */
    int rcc_set;                /* a [route NAME] section set response_cache_control */
    int api;                    /* enum pc_adapter: auto (by path) or the family named */
    int absent_greedy;          /* absent_temperature = greedy */
    int line;                   /* of the section header; 0 for [cache] routes entries */
};

/* 1 when method + path takes a cached route (cache on) of cfg. */
int pc_routes_cacheable(const struct pc_config *cfg, const char *method, const char *path);

/* Number of routes in the table. */
size_t pc_routes_count(const struct pc_config *cfg);
/* Route id of the table. 0 ok, -1 when id is out of range. */
int pc_routes_get(const struct pc_config *cfg, size_t id, struct pc_route_view *out);

/*
 * The route that method + path takes: the matching route with the most literal (non-'*')
 * characters; on a tie one with an exact method beats "*", and a [route NAME] section
 * beats a [cache] routes entry. -1 when no route matches (then the request is forwarded
 * to the [backend] uncached).
 */
long pc_routes_match(const struct pc_config *cfg, const char *method, const char *path);

/*
 * The table's checks: a route that no request can reach (every path it matches goes to
 * a route that wins over it), and two routes that tie (same priority, some path matches
 * both). A [cache] routes entry that a section overrides is not reported: that is how a
 * section replaces a default route. 0 ok; -1 with *line (0: not from a section) and why.
 */
int pc_routes_check(const struct pc_config *cfg, int *line, char *err, size_t errlen);

/*
 * The API family of route v (adapter.h): the one it names, or under "auto" the one its
 * pattern takes (a pattern stands for its paths here: a pattern under /predictions/ is
 * TorchServe's). *keyed_as_sent: 1 when the route is cached and its family has no version endpoint
 * predcache reads, so its requests are keyed by the path as sent (a new default version
 * of the model is served from the cache until ttl_s or an invalidation).
 */
int pc_routes_api(const struct pc_route_view *v, int *keyed_as_sent);
/* Appends the routes keyed by the path as sent: as JSON objects {"route":NAME,"api":API}
 * joined by ',' (json), else "NAME (API)" joined by ", ". Their count; -1 no memory. */
long pc_routes_list_as_sent(const struct pc_config *cfg, int json, struct pc_buf *out);

/* Glob patterns: '*' matches any run of characters, '/' included. */
int pc_glob_match(const char *pat, const char *s);
size_t pc_glob_literals(const char *pat);
/* 1 when every string a matches, b matches too. */
int pc_glob_subset(const char *a, const char *b);
/* 1 when some string matches both a and b. */
int pc_glob_intersect(const char *a, const char *b);

/* The model a predict path names (TF Serving REST v1, KServe/Triton v2). */
enum pc_model_api { PC_API_NONE = 0, PC_API_TFS_V1, PC_API_KSERVE_V2 };
struct pc_model_ref {
    enum pc_model_api api;
    char name[128];
    char version[64]; /* "" when the path names none */
    char label[64];   /* TF Serving /labels/L; "" when none */
    char verb[32];    /* "predict", "classify", "regress" (v1); "infer" (v2) */
};

/* > 0 when version a is newer than b: numbers by value, anything else as text. */
int pc_model_version_cmp(const char *a, const char *b);
/* Parses path. 0 with m filled when it is a model path; -1 otherwise. */
int pc_model_of_path(const char *path, struct pc_model_ref *m);
/* The same model's path naming version explicitly, written to out. 0 ok, -1 no memory. */
int pc_model_versioned_path(const struct pc_model_ref *m, const char *version, struct pc_buf *out);
/* The model server's status path for m ("/v1/models/NAME[/labels/L]", "/v2/models/NAME"). */
int pc_model_status_path(const struct pc_model_ref *m, struct pc_buf *out);

/*
 * The version a status body names: TF Serving's model_version_status (the highest
 * AVAILABLE version), or KServe v2's versions list (the highest). 0 with out filled;
 * 1 (out "") for a KServe v2 model without versions (no "versions", or an empty list:
 * MLServer, KServe Python); -1 when the body names none.
 */
int pc_model_parse_status(enum pc_model_api api, const char *body, size_t len, char *out,
                          size_t outlen);

#endif
