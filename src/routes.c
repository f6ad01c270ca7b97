/*
 * routes: the route table, longest match, its --check analysis, and model paths.
 *
 * The table is read straight from the configuration: ids 0..n_routes-1 are the [cache]
 * routes entries, then one id per [route NAME] section. Matching walks every route
 * (a few dozen globs at most: cheaper than any index for that size).
 *
 * Priority of a route: (literal characters of its pattern, exact method over "*",
 * section over [cache] entry). The analysis works on glob languages: a pattern with
 * only '*' wildcards is a regular language, and inclusion and intersection of two such
 * languages are decided by the dynamic programs below.
 */
#include "predcache/routes.h"

#include "predcache/adapter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

/* ---- globs --------------------------------------------------------------------------- */

int pc_glob_match(const char *pat, const char *s)
{
    const char *star = NULL, *retry = NULL;
    while (*s) {
        if (*pat == '*') {
            star = pat++;
            retry = s;
        } else if (*pat == *s) {
            pat++;
            s++;
        } else if (star) {
            pat = star + 1;
            s = ++retry;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

size_t pc_glob_literals(const char *pat)
{
    size_t n = 0;
    for (; *pat; pat++)
        n += *pat != '*';
    return n;
}

/*
 * Both programs fill t[i][j] = "the suffixes a+i and b+j ..." from the ends backwards.
 * Subset: b, read as a pattern, matches a read as a string in which each of a's '*' is
 * a symbol only b's '*' can consume (a '*' of a stands for any run, so only a '*' of b
 * covers every such run). Intersection: both can produce one common string.
 */
enum glob_rel { GLOB_SUBSET, GLOB_INTERSECT };

static int glob_relate(const char *a, const char *b, enum glob_rel rel)
{
    size_t la = strlen(a), lb = strlen(b), w = lb + 1;
    unsigned char *t = calloc((la + 1) * w, 1);
    if (t == NULL)
        return 0;
#define T(i, j) t[(i)*w + (j)]
    for (size_t i = la + 1; i-- > 0;) {
        for (size_t j = lb + 1; j-- > 0;) {
            int v;
            int ae = i == la, be = j == lb;
            if (ae && be) {
                v = 1;
            } else if (rel == GLOB_SUBSET) {
                if (be)
                    v = 0;
                else if (b[j] == '*')
                    v = T(i, j + 1) || (!ae && T(i + 1, j));
                else
                    v = !ae && a[i] != '*' && a[i] == b[j] && T(i + 1, j + 1);
            } else {
                if (!ae && a[i] == '*')
                    v = T(i + 1, j) || (!be && T(i, j + 1));
                else if (!be && b[j] == '*')
                    v = T(i, j + 1) || (!ae && T(i + 1, j));
                else
                    v = !ae && !be && a[i] == b[j] && T(i + 1, j + 1);
            }
            T(i, j) = (unsigned char)v;
        }
    }
    int r = T(0, 0);
#undef T
    free(t);
    return r;
}

int pc_glob_subset(const char *a, const char *b)
{
    return glob_relate(a, b, GLOB_SUBSET);
}

int pc_glob_intersect(const char *a, const char *b)
{
    return glob_relate(a, b, GLOB_INTERSECT);
}

/* ---- the table ----------------------------------------------------------------------- */

size_t pc_routes_count(const struct pc_config *cfg)
{
    return cfg->n_routes + cfg->n_route_secs;
}

int pc_routes_get(const struct pc_config *cfg, size_t id, struct pc_route_view *v)
{
    memset(v, 0, sizeof *v);
    v->id = id;
    if (id < cfg->n_routes) {
        const struct pc_route_rule *r = &cfg->routes[id];
        snprintf(v->name, sizeof v->name, "%s %s", r->method, r->pattern);
        v->rule = r;
        v->cache = 1;
        v->ttl_s = cfg->ttl_s;
        v->input_fields = cfg->input_fields;
        v->n_input_fields = cfg->n_input_fields;
        v->path_field = cfg->path_field;
        v->per_instance = cfg->per_instance;
        v->credentials = cfg->credentials;
        v->ignore_fields = cfg->ignore_fields;
        v->n_ignore_fields = cfg->n_ignore_fields;
        v->vary = cfg->vary;
        v->n_vary = cfg->n_vary;
        v->response_cache_control = cfg->response_cache_control;
        v->absent_greedy = cfg->absent_temperature == PC_TEMP_GREEDY;
        return 0;
    }
    id -= cfg->n_routes;
    if (id >= cfg->n_route_secs)
        return -1;
    const struct pc_route_cfg *s = &cfg->route_secs[id]; /* defaults filled by validate */
    snprintf(v->name, sizeof v->name, "%s", s->name);
    v->rule = &s->match;
    v->section = 1;
    v->cache = s->cache;
    v->ttl_s = s->ttl_s;
    v->backend = (size_t)s->backend_index;
    v->input_fields = s->input_fields;
    v->n_input_fields = s->n_input_fields;
    v->path_field = s->path_field;
    v->per_instance = s->per_instance;
    v->credentials = s->credentials;
    v->ignore_fields = s->ignore_fields;
    v->n_ignore_fields = s->n_ignore_fields;
    v->vary = s->vary;
    v->n_vary = s->n_vary;
    v->response_cache_control = s->response_cache_control;
    v->rcc_set = (s->set & PC_ROUTE_SET_RCC) != 0;
    v->api = s->api;
    v->absent_greedy = s->absent_temperature == PC_TEMP_GREEDY;
    v->line = s->line;
    return 0;
}

int pc_routes_api(const struct pc_route_view *v, int *keyed_as_sent)
{
    struct pc_adapter_view ad;
    pc_adapter_view((enum pc_adapter)v->api, v->rule->pattern, &ad);
    *keyed_as_sent = v->cache && !ad.status_versions;
    return (int)ad.api;
}

long pc_routes_list_as_sent(const struct pc_config *cfg, int json, struct pc_buf *out)
{
    long n = 0;
    int rc = 0;
    for (size_t id = 0; id < pc_routes_count(cfg) && rc == 0; id++) {
        struct pc_route_view v;
        int as_sent = 0;
        if (pc_routes_get(cfg, id, &v) != 0)
            continue;
        const char *api = pc_adapter_names[pc_routes_api(&v, &as_sent)];
        if (!as_sent)
            continue;
        if (json) {
            rc |= pc_buf_append_str(out, n > 0 ? ",{\"route\":\"" : "{\"route\":\"");
            rc |= pc_buf_json_chars(out, v.name);
            rc |= pc_buf_printf(out, "\",\"api\":\"%s\"}", api);
        } else {
            rc |= pc_buf_printf(out, "%s%s (%s)", n > 0 ? ", " : "", v.name, api);
        }
        n++;
    }
    return rc != 0 ? -1 : n;
}

int pc_routes_cacheable(const struct pc_config *cfg, const char *method, const char *path)
{
    long id = pc_routes_match(cfg, method, path);
    struct pc_route_view v;
    return id >= 0 && pc_routes_get(cfg, (size_t)id, &v) == 0 && v.cache;
}

static const struct pc_route_rule *rule_of(const struct pc_config *cfg, size_t id, int *section)
{
    *section = id >= cfg->n_routes;
    return *section ? &cfg->route_secs[id - cfg->n_routes].match : &cfg->routes[id];
}

/* Orders two routes by priority: > 0 when x wins over y, 0 for a tie. */
static long prio_cmp(const struct pc_route_rule *x, int xsec, const struct pc_route_rule *y,
                     int ysec)
{
    long d = (long)pc_glob_literals(x->pattern) - (long)pc_glob_literals(y->pattern);
    if (d != 0)
        return d;
    int xm = strcmp(x->method, "*") != 0, ym = strcmp(y->method, "*") != 0;
    if (xm != ym)
        return xm - ym;
    return xsec - ysec;
}

static int method_covers(const char *outer, const char *inner)
{
    return strcmp(outer, "*") == 0 || strcmp(outer, inner) == 0;
}

long pc_routes_match(const struct pc_config *cfg, const char *method, const char *path)
{
    long best = -1;
    const struct pc_route_rule *br = NULL;
    int bsec = 0;
    size_t n = pc_routes_count(cfg);
    for (size_t id = 0; id < n; id++) {
        int sec;
        const struct pc_route_rule *r = rule_of(cfg, id, &sec);
        if (!method_covers(r->method, method) || !pc_glob_match(r->pattern, path))
            continue;
        if (best < 0 || prio_cmp(r, sec, br, bsec) > 0) {
            best = (long)id;
            br = r;
            bsec = sec;
        }
    }
    return best;
}

/* Some request matches both (the methods can be equal and the paths overlap). */
static int routes_meet(const struct pc_route_rule *x, const struct pc_route_rule *y)
{
    return (method_covers(x->method, y->method) || method_covers(y->method, x->method)) &&
           pc_glob_intersect(x->pattern, y->pattern);
}

int pc_routes_check(const struct pc_config *cfg, int *line, char *err, size_t errlen)
{
    size_t n = pc_routes_count(cfg);
    *line = 0;
    for (size_t a = 0; a < n; a++) {
        struct pc_route_view va;
        pc_routes_get(cfg, a, &va);
        for (size_t b = 0; b < n; b++) {
            if (a == b)
                continue;
            struct pc_route_view vb;
            pc_routes_get(cfg, b, &vb);
            long c = prio_cmp(vb.rule, vb.section, va.rule, va.section);
            if (c > 0 && method_covers(vb.rule->method, va.rule->method) &&
                pc_glob_subset(va.rule->pattern, vb.rule->pattern)) {
                if (!va.section && vb.section)
                    continue; /* a section overriding a default route: intended */
                *line = va.line;
                snprintf(err, errlen,
                         "route '%s' (%s %s) is unreachable: every request it matches goes to "
                         "route '%s' (%s %s), which wins (more literal characters, an exact "
                         "method, or a section over [cache] routes)",
                         va.name, va.rule->method, va.rule->pattern, vb.name, vb.rule->method,
                         vb.rule->pattern);
                return -1;
            }
            if (c == 0 && b > a && strcmp(va.rule->method, vb.rule->method) == 0 &&
                strcmp(va.rule->pattern, vb.rule->pattern) == 0) {
                *line = vb.line ? vb.line : va.line;
                snprintf(err, errlen,
                         "routes '%s' and '%s' match the same requests (%s %s): '%s' is "
                         "unreachable",
                         va.name, vb.name, vb.rule->method, vb.rule->pattern, vb.name);
                return -1;
            }
            if (c == 0 && b > a && routes_meet(va.rule, vb.rule)) {
                *line = vb.line ? vb.line : va.line;
                snprintf(err, errlen,
                         "routes '%s' (%s %s) and '%s' (%s %s) overlap with the same priority: "
                         "some request matches both; make one pattern more specific",
                         va.name, va.rule->method, va.rule->pattern, vb.name, vb.rule->method,
                         vb.rule->pattern);
                return -1;
            }
        }
    }
    return 0;
}

/* ---- model paths --------------------------------------------------------------------- */

/* Copies [s, s + n) into out (size cap) when it is a non-empty segment without '/'. */
static int segment(const char *s, size_t n, char *out, size_t cap)
{
    if (n == 0 || n >= cap || memchr(s, '/', n) != NULL)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "/v1/models/NAME[/versions/V|/labels/L]:VERB" */
static int parse_v1(const char *rest, struct pc_model_ref *m)
{
    const char *colon = strrchr(rest, ':');
    if (colon == NULL || segment(colon + 1, strlen(colon + 1), m->verb, sizeof m->verb) != 0)
        return -1;
    const char *slash = memchr(rest, '/', (size_t)(colon - rest));
    const char *name_end = slash ? slash : colon;
    if (segment(rest, (size_t)(name_end - rest), m->name, sizeof m->name) != 0 ||
        memchr(rest, ':', (size_t)(name_end - rest)) != NULL)
        return -1;
    if (slash == NULL)
        return 0;
    if (starts(slash, "/versions/"))
        return segment(slash + 10, (size_t)(colon - slash - 10), m->version, sizeof m->version);
    if (starts(slash, "/labels/"))
        return segment(slash + 8, (size_t)(colon - slash - 8), m->label, sizeof m->label);
    return -1;
}

/* "/v2/models/NAME[/versions/V]/infer" */
static int parse_v2(const char *rest, struct pc_model_ref *m)
{
    size_t n = strlen(rest);
    static const char infer[] = "/infer";
    if (n <= sizeof infer - 1 || strcmp(rest + n - (sizeof infer - 1), infer) != 0)
        return -1;
    n -= sizeof infer - 1;
    memcpy(m->verb, "infer", 6);
    const char *slash = memchr(rest, '/', n);
    if (segment(rest, slash ? (size_t)(slash - rest) : n, m->name, sizeof m->name) != 0)
        return -1;
    if (slash == NULL)
        return 0;
    if (!starts(slash, "/versions/"))
        return -1;
    return segment(slash + 10, n - (size_t)(slash - rest) - 10, m->version, sizeof m->version);
}

int pc_model_of_path(const char *path, struct pc_model_ref *m)
{
    memset(m, 0, sizeof *m);
    int rc = -1;
    if (starts(path, "/v1/models/")) {
        m->api = PC_API_TFS_V1;
        rc = parse_v1(path + 11, m);
    } else if (starts(path, "/v2/models/")) {
        m->api = PC_API_KSERVE_V2;
        rc = parse_v2(path + 11, m);
    }
    if (rc != 0)
        memset(m, 0, sizeof *m);
    return rc;
}

int pc_model_versioned_path(const struct pc_model_ref *m, const char *version, struct pc_buf *out)
{
    int rc = pc_buf_append_str(out, m->api == PC_API_TFS_V1 ? "/v1/models/" : "/v2/models/");
    rc |= pc_buf_append_str(out, m->name);
    rc |= pc_buf_append_str(out, "/versions/");
    rc |= pc_buf_append_str(out, version);
    if (m->api == PC_API_TFS_V1) {
        rc |= pc_buf_append_char(out, ':');
        return rc | pc_buf_append_str(out, m->verb);
    }
    return rc | pc_buf_append_str(out, "/infer");
}

int pc_model_status_path(const struct pc_model_ref *m, struct pc_buf *out)
{
    if (m->api == PC_API_TFS_V1 && m->label[0] != '\0')
        return pc_buf_printf(out, "/v1/models/%s/labels/%s", m->name, m->label);
    if (m->api == PC_API_TFS_V1)
        return pc_buf_printf(out, "/v1/models/%s", m->name);
    return pc_buf_printf(out, "/v2/models/%s", m->name);
}

/* ---- model status answers
 * ------------------------------------------------------------------------ */

static int all_digits(const char *s)
{
    return *s && strspn(s, "0123456789") == strlen(s);
}

int pc_model_version_cmp(const char *a, const char *b)
{
    if (all_digits(a) && all_digits(b)) {
        while (*a == '0' && a[1])
            a++;
        while (*b == '0' && b[1])
            b++;
        size_t la = strlen(a), lb = strlen(b);
        if (la != lb)
            return la > lb ? 1 : -1;
    }
    return strcmp(a, b);
}

/* A version given as a JSON string or integer, as text. */
static int version_text(json_object *v, char *out, size_t outlen)
{
    const char *s = NULL;
    char num[32];
    if (json_object_is_type(v, json_type_string)) {
        s = json_object_get_string(v);
    } else if (json_object_is_type(v, json_type_int)) {
        snprintf(num, sizeof num, "%lld", (long long)json_object_get_int64(v));
        s = num;
    }
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n >= outlen || strpbrk(s, "/:?#") != NULL || strspn(s, " \t") != 0)
        return -1;
    memcpy(out, s, n + 1);
    return 0;
}

int pc_model_parse_status(enum pc_model_api api, const char *body, size_t len, char *out,
                          size_t outlen)
{
    json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        return -1;
    json_object *root = json_tokener_parse_ex(tok, body, (int)len);
    int complete = json_tokener_get_error(tok) == json_tokener_success;
    json_tokener_free(tok);
    char best[64] = "", v[64];
    json_object *list;
    if (complete && json_object_is_type(root, json_type_object) && api == PC_API_TFS_V1 &&
        json_object_object_get_ex(root, "model_version_status", &list) &&
        json_object_is_type(list, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(list); i++) {
            json_object *st = json_object_array_get_idx(list, i), *ver, *state;
            if (json_object_object_get_ex(st, "version", &ver) &&
                json_object_object_get_ex(st, "state", &state) &&
                json_object_is_type(state, json_type_string) &&
                strcmp(json_object_get_string(state), "AVAILABLE") == 0 &&
                version_text(ver, v, sizeof v) == 0 &&
                (!best[0] || pc_model_version_cmp(v, best) > 0))
                memcpy(best, v, sizeof best);
        }
    } else if (complete && json_object_is_type(root, json_type_object) && api == PC_API_KSERVE_V2) {
        int listed = json_object_object_get_ex(root, "versions", &list);
        if (!listed ||
            (json_object_is_type(list, json_type_array) && json_object_array_length(list) == 0)) {
            json_object_put(root); /* MLServer, KServe Python: a model without versions */
            out[0] = '\0';
            return 1;
        }
        for (size_t i = 0;
             json_object_is_type(list, json_type_array) && i < json_object_array_length(list);
             i++) {
            if (version_text(json_object_array_get_idx(list, i), v, sizeof v) == 0 &&
                (!best[0] || pc_model_version_cmp(v, best) > 0))
                memcpy(best, v, sizeof best);
        }
    }
    json_object_put(root);
    if (!best[0] || strlen(best) >= outlen)
        return -1;
    memcpy(out, best, strlen(best) + 1);
    return 0;
}
