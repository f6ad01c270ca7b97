/*
 * cachekey: derives the v1 cache key of a predict request.
 *
 *     body --canon: one pass, read as json-c 0.16 strict (depth 64) reads it--> object?
 *        |-- holds input fields --> canonical JSON of those fields    (PC_KEY_FIELDS)
 *        |-- holds only a string path field --> "path:" + path         (PC_KEY_PATH)
 *        `-- anything else, or not JSON --> raw body bytes             (PC_KEY_RAW)
 *     key = prefix "v1:" hex(SHA-256(namespace "\n" route "\n" input))
 *
 * The input is never built whole: canon hands the canonical text to SHA-256 in chunks as it
 * writes it. A body holding one input field (the usual case) is hashed during the one pass
 * that also decides how it is read; anything else (several input fields, one given twice)
 * is hashed again from the recorded spans once the pass has read the whole body.
 *
 * Safety rule: two bodies may share a key only when the model would see the same input.
 * The v1 reading cannot always tell values apart (integers beyond 64 bits saturate, lone
 * UTF-16 surrogates become U+FFFD, a "\u0000" in a name truncates it), so when a body holds
 * such a value its JSON reading is refused and it is keyed by its raw bytes instead; so is
 * a body json-c reads but strict JSON refuses (canon's PC_CANON_LENIENT): a cache miss is
 * cheap, a wrong answer is not.
 */
#include "predcache/cachekey.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "predcache/canon.h"

#define PC_KEY_VERSION "v1:"
#define PC_SHA256_LEN 32

static void set_err(char *err, size_t errlen, const char *msg, const char *detail, size_t off)
{
    if (err == NULL || errlen == 0)
        return;
    if (detail != NULL)
        snprintf(err, errlen, "%s: %s at offset %zu", msg, detail, off);
    else
        snprintf(err, errlen, "%s", msg);
}

/* ---- SHA-256 of the material, streamed ----------------------------------------------- */

struct hasher {
    EVP_MD_CTX *ctx;
    int failed;
};

static int hash_update(void *arg, const void *p, size_t n)
{
    struct hasher *h = arg;
    if (!h->failed && n > 0 && EVP_DigestUpdate(h->ctx, p, n) != 1)
        h->failed = 1;
    return h->failed ? -1 : 0;
}

/* Starts the material: namespace "\n" route "\n". */
static void hash_begin(struct hasher *h, const char *ns, const char *route)
{
    h->failed = h->ctx == NULL || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1;
    hash_update(h, ns, strlen(ns));
    hash_update(h, "\n", 1);
    hash_update(h, route, strlen(route));
    hash_update(h, "\n", 1);
}

/* Ends it: prefix "v1:" hex(digest) into out. 0 ok, -1 when any step failed. */
static int hash_end(struct hasher *h, const char *prefix, char out[PC_KEY_MAX])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (h->failed || EVP_DigestFinal_ex(h->ctx, md, &mdlen) != 1 || mdlen != PC_SHA256_LEN)
        return -1;
    static const char digits[] = "0123456789abcdef";
    char hex[2 * PC_SHA256_LEN + 1];
    for (unsigned int i = 0; i < PC_SHA256_LEN; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 0x0f];
    }
    hex[2 * PC_SHA256_LEN] = '\0';
    snprintf(out, PC_KEY_MAX, "%s%s%s", prefix, PC_KEY_VERSION, hex);
    return 0;
}

/* Hashes a name as a canonical JSON string. -1 when it holds U+FFFD (not exact) or OOM. */
static int hash_name(struct hasher *h, const char *name)
{
    struct pc_buf b;
    pc_buf_init(&b);
    int rc = pc_canon_put_string(&b, name, strlen(name)) == PC_CANON_OK ? 0 : -1;
    if (rc == 0)
        hash_update(h, b.data, b.len);
    pc_buf_release(&b);
    return rc;
}

/* ---- reading a body ------------------------------------------------------------------ */

/*
 * A key holding "\u0000" is cut short at the NUL (json-c keeps names as C strings), so
 * {"a\u0000b":..} would read as {"a":..}. Such bodies are keyed raw; the scan is coarse
 * (also hits string values) but only ever costs cache sharing, never correctness.
 */
static int has_nul_escape(const char *body, size_t len)
{
    const char *p = body, *end = body + len;
    while ((p = memchr(p, '\\', (size_t)(end - p))) != NULL) {
        if (end - p >= 6 && memcmp(p, "\\u0000", 6) == 0)
            return 1;
        p++;
    }
    return 0;
}

struct span {
    size_t off, len;
    int seen;
};

/*
 * What the pass over a body found among its root members. The first member naming an
 * input field has its value streamed into h as `{"name":value`; a second one (another
 * field, or the same given twice) means the input must be hashed again from the spans.
 */
struct pick {
    const struct pc_key_params *p;
    struct hasher *h;
    struct span *field; /* per input field (the first of a name listed twice): last value */
    int matches;        /* members naming an input field */
    enum pc_canon_rc streamed;
    int cur_field; /* the member being read: input field index, or -1 */
    int cur_path;  /* ... it is the path field */
    struct span path;
    enum pc_canon_type path_type;
};

static int pick_member(void *arg, const char *name, size_t name_len)
{
    struct pick *k = arg;
    k->cur_field = -1;
    for (size_t i = 0; i < k->p->n_input_fields && k->cur_field < 0; i++) {
        const char *f = k->p->input_fields[i];
        if (f != NULL && strlen(f) == name_len && memcmp(f, name, name_len) == 0)
            k->cur_field = (int)i;
    }
    const char *pf = k->p->path_field;
    k->cur_path =
        pf != NULL && pf[0] != '\0' && strlen(pf) == name_len && memcmp(pf, name, name_len) == 0;
    if (k->cur_field < 0 || ++k->matches > 1)
        return 0;
    hash_update(k->h, "{", 1);
    if (hash_name(k->h, k->p->input_fields[k->cur_field]) != 0) {
        k->streamed = PC_CANON_INEXACT;
        return 0;
    }
    hash_update(k->h, ":", 1);
    return 1;
}

static void pick_member_end(void *arg, size_t off, size_t len, enum pc_canon_type type,
                            enum pc_canon_rc exact)
{
    struct pick *k = arg;
    if (k->cur_field >= 0) {
        k->field[k->cur_field] = (struct span){off, len, 1};
        if (k->matches == 1 && k->streamed == PC_CANON_OK)
            k->streamed = exact;
    }
    if (k->cur_path) {
        k->path = (struct span){off, len, 1};
        k->path_type = type;
    }
}

static int name_order(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Hashes the FIELDS input afresh: {"name":value,...} over the input fields present, in
 * name order (a name listed twice counts once), each value re-read from its span. 0 ok;
 * -1 when a value or name is not exact (then the body is keyed raw).
 */
static int hash_fields(const struct pick *k, const char *body)
{
    const struct pc_key_params *p = k->p;
    const char **names = calloc(p->n_input_fields ? p->n_input_fields : 1, sizeof *names);
    if (names == NULL)
        return -1;
    size_t n = 0;
    for (size_t i = 0; i < p->n_input_fields; i++)
        if (k->field[i].seen)
            names[n++] = p->input_fields[i];
    qsort(names, n, sizeof *names, name_order);
    int rc = 0;
    hash_update(k->h, "{", 1);
    for (size_t a = 0; a < n && rc == 0; a++) {
        if (a > 0 && strcmp(names[a], names[a - 1]) == 0)
            continue;
        size_t i = 0;
        while (p->input_fields[i] == NULL || strcmp(p->input_fields[i], names[a]) != 0 ||
               !k->field[i].seen)
            i++;
        if (a > 0)
            hash_update(k->h, ",", 1);
        rc = hash_name(k->h, names[a]);
        hash_update(k->h, ":", 1);
        struct pc_canon_out out = {NULL, hash_update, k->h};
        if (rc == 0 &&
            pc_canon_json(body + k->field[i].off, k->field[i].len, &out, NULL) != PC_CANON_OK)
            rc = -1;
    }
    hash_update(k->h, "}", 1);
    free(names);
    return rc;
}

/* Hashes the PATH input: "path:" + the decoded string. -1 when it holds U+FFFD. */
static int hash_path(const struct pick *k, const char *body)
{
    struct pc_buf s;
    pc_buf_init(&s);
    int rc = pc_canon_decode_string(body + k->path.off, k->path.len, &s) == PC_CANON_OK ? 0 : -1;
    if (rc == 0) {
        hash_update(k->h, "path:", 5);
        hash_update(k->h, s.data, s.len);
    }
    pc_buf_release(&s);
    return rc;
}

/*
 * Reads the body and hashes the material of its key into h (begun with namespace and
 * route). On 0, *kind says which input was hashed. -1 only when body_is_json and the body
 * is not JSON (reason in err).
 */
static int hash_input(const struct pc_key_params *p, const char *ns, const char *route,
                      const char *body, size_t len, int body_is_json, struct hasher *h,
                      enum pc_key_kind *kind, char *err, size_t errlen)
{
    static const char what[] = "request body is not valid JSON";
    *kind = PC_KEY_RAW;
    struct pick k = {.p = p, .h = h, .streamed = PC_CANON_OK, .cur_field = -1};
    enum pc_canon_rc rc = PC_CANON_INVALID;
    struct pc_canon_info info = {PC_CANON_NULL, NULL, 0};
    int nul = 0;
    if (len == 0) {
        info.error = "empty body";
    } else if (len >= INT_MAX) { /* the v1 reading took an int length */
        info.error = "body too large to parse";
    } else {
        k.field = calloc(p->n_input_fields ? p->n_input_fields : 1, sizeof *k.field);
        nul = has_nul_escape(body, len);
        struct pc_canon_hook hook = {pick_member, pick_member_end, &k, NULL, NULL};
        struct pc_canon_out out = {NULL, hash_update, h};
        rc = pc_canon_scan(body, len, nul || k.field == NULL ? NULL : &hook, &out, &info);
    }
    if (rc == PC_CANON_INVALID && body_is_json) {
        free(k.field);
        set_err(err, errlen, what, info.error, info.error_off);
        return -1;
    }
    /* A body that merely may be JSON is keyed raw when it is not: no reason to report. */
    if (rc == PC_CANON_OK && info.root == PC_CANON_OBJECT && !nul && k.field != NULL) {
        if (k.matches == 1 && k.streamed == PC_CANON_OK) {
            hash_update(h, "}", 1);
            *kind = PC_KEY_FIELDS;
        } else if (k.matches > 1) {
            hash_begin(h, ns, route);
            if (hash_fields(&k, body) == 0)
                *kind = PC_KEY_FIELDS;
        } else if (k.matches == 0 && k.path.seen && k.path_type == PC_CANON_STRING) {
            hash_begin(h, ns, route);
            if (hash_path(&k, body) == 0)
                *kind = PC_KEY_PATH;
        }
    }
    free(k.field);
    if (*kind == PC_KEY_RAW) {
        hash_begin(h, ns, route);
        hash_update(h, body, len);
    }
    return 0;
}

/* ---- entry points -------------------------------------------------------------------- */

/*
 * Checks what the material format cannot carry: a "\n" in the namespace or route would
 * let two different (namespace, route) pairs produce the same material.
 */
static int check_params(const char *ns, const char *prefix, const char *route, char *err,
                        size_t errlen)
{
    if (route == NULL || strchr(route, '\n') != NULL || strchr(ns, '\n') != NULL) {
        set_err(err, errlen, "namespace and route must be set and hold no newline", NULL, 0);
        return -1;
    }
    if (strlen(prefix) + strlen(PC_KEY_VERSION) + 2 * PC_SHA256_LEN + 1 > PC_KEY_MAX) {
        set_err(err, errlen, "cache key prefix too long", NULL, 0);
        return -1;
    }
    return 0;
}

int pc_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                       size_t len, int body_is_json, char out[PC_KEY_MAX], enum pc_key_kind *kind,
                       char *err, size_t errlen)
{
    const char *ns = p->namespace_ ? p->namespace_ : "";
    const char *prefix = p->prefix ? p->prefix : "";
    if (check_params(ns, prefix, route, err, errlen) != 0)
        return -1;
    if (body == NULL)
        len = 0;
    struct hasher h = {EVP_MD_CTX_new(), 0};
    hash_begin(&h, ns, route);
    enum pc_key_kind k;
    if (hash_input(p, ns, route, body, len, body_is_json, &h, &k, err, errlen) != 0) {
        EVP_MD_CTX_free(h.ctx);
        return -1;
    }
    int rc = hash_end(&h, prefix, out);
    EVP_MD_CTX_free(h.ctx);
    if (rc != 0) {
        set_err(err, errlen, "SHA-256 failed", NULL, 0);
        return -1;
    }
    if (kind != NULL)
        *kind = k;
    return 0;
}

int pc_cachekey_canonical(const char *json, size_t len, struct pc_buf *out)
{
    if (len == 0 || len >= INT_MAX)
        return -1;
    struct pc_canon_out o = {out, NULL, NULL};
    return pc_canon_json(json, len, &o, NULL) == PC_CANON_OK ? 0 : -1;
}

int pc_cachekey_herd(const char *prefix, const char (*keys)[PC_KEY_MAX], const size_t *pick,
                     size_t n, char out[PC_KEY_MAX])
{
    const char *pf = prefix != NULL ? prefix : "";
    if (strlen(pf) > 255)
        return -1;
    struct hasher h = {EVP_MD_CTX_new(), 0};
    h.failed = h.ctx == NULL || EVP_DigestInit_ex(h.ctx, EVP_sha256(), NULL) != 1;
    hash_update(&h, "herd\n", 5);
    for (size_t i = 0; i < n; i++) {
        hash_update(&h, keys[pick[i]], strlen(keys[pick[i]]));
        hash_update(&h, "\n", 1);
    }
    int rc = hash_end(&h, pf, out);
    EVP_MD_CTX_free(h.ctx);
    return rc;
}

int pc_cachekey_instance(const struct pc_key_params *p, const char *route, const char *signature,
                         size_t sig_len, const char *inst, size_t inst_len, char out[PC_KEY_MAX],
                         char *err, size_t errlen)
{
    static const char alone[] = "instance cannot be keyed on its own";
    const char *ns = p->namespace_ ? p->namespace_ : "";
    const char *prefix = p->prefix ? p->prefix : "";
    if (check_params(ns, prefix, route, err, errlen) != 0)
        return -1;
    if (memchr(signature, '\n', sig_len) != NULL || has_nul_escape(inst, inst_len) ||
        inst_len == 0 || inst_len >= INT_MAX) {
        set_err(err, errlen, alone, NULL, 0);
        return -1;
    }
    /* material = namespace "\n" route "\n" "instance\n" signature "\n" canonical(instance) */
    struct hasher h = {EVP_MD_CTX_new(), 0};
    hash_begin(&h, ns, route);
    hash_update(&h, "instance\n", 9);
    hash_update(&h, signature, sig_len);
    hash_update(&h, "\n", 1);
    struct pc_canon_out o = {NULL, hash_update, &h};
    enum pc_canon_rc rc = pc_canon_json(inst, inst_len, &o, NULL);
    int hrc = rc == PC_CANON_OK ? hash_end(&h, prefix, out) : 0;
    int failed = h.failed;
    EVP_MD_CTX_free(h.ctx);
    if (failed || hrc != 0) {
        set_err(err, errlen, "SHA-256 failed", NULL, 0);
        return -1;
    }
    if (rc != PC_CANON_OK) {
        set_err(err, errlen, alone, NULL, 0);
        return -1;
    }
    return 0;
}

/* ---- every instance of a batch in one pass ----------------------------------------- */

struct each {
    struct pc_buf text; /* the elements' canonical texts, one after the other */
    struct pc_span *spans, *texts;
    size_t n, cap;
    struct pc_span sig;
    int instances, other; /* "instances" members seen; something that rules the pass out */
    int oom;
};

struct each_ctx {
    struct each *e;
    const char *body;
    int in_instances, in_sig;
};

static int each_member_at(void *arg, const char *name, size_t name_len, size_t raw_off,
                          size_t raw_len)
{
    (void)name;
    (void)name_len;
    struct each_ctx *x = arg;
    const char *raw = x->body + raw_off;
    x->in_sig = raw_len == 16 && memcmp(raw, "\"signature_name\"", 16) == 0;
    x->in_instances = raw_len == 11 && memcmp(raw, "\"instances\"", 11) == 0;
    if (x->in_instances && x->e->instances++ > 0)
        x->e->other = 1; /* given twice: not a batch */
    return x->in_instances && !x->e->other ? PC_CANON_EACH : 0;
}

static void each_member_end(void *arg, size_t off, size_t len, enum pc_canon_type type,
                            enum pc_canon_rc exact)
{
    (void)exact;
    struct each_ctx *x = arg;
    if (x->in_sig)
        x->e->sig = (struct pc_span){off, len};
    if (x->in_instances && type != PC_CANON_ARRAY)
        x->e->other = 1;
    x->in_sig = x->in_instances = 0;
}

static void each_element(void *arg, size_t off, size_t len, size_t text_off, size_t text_len,
                         enum pc_canon_rc exact)
{
    struct each_ctx *x = arg;
    struct each *e = x->e;
    if (exact != PC_CANON_OK || has_nul_escape(x->body + off, len)) {
        e->other = 1; /* an instance that cannot be keyed alone */
        return;
    }
    if (e->n == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 16;
        struct pc_span *s = realloc(e->spans, cap * sizeof *s);
        struct pc_span *t = s == NULL ? NULL : realloc(e->texts, cap * sizeof *t);
        if (s != NULL)
            e->spans = s;
        if (t == NULL) {
            e->oom = 1;
            return;
        }
        e->texts = t;
        e->cap = cap;
    }
    e->spans[e->n] = (struct pc_span){off, len};
    e->texts[e->n++] = (struct pc_span){text_off, text_len};
}

int pc_cachekey_instances(const struct pc_key_params *p, const char *route, const char *body,
                          size_t len, struct pc_span **spans, size_t *n, struct pc_span *sig,
                          char (**keys)[PC_KEY_MAX])
{
    const char *ns = p->namespace_ ? p->namespace_ : "";
    const char *prefix = p->prefix ? p->prefix : "";
    if (body == NULL || len == 0 || len >= INT_MAX || check_params(ns, prefix, route, NULL, 0))
        return 1;
    struct each e;
    memset(&e, 0, sizeof e);
    pc_buf_init(&e.text);
    struct each_ctx x = {&e, body, 0, 0};
    struct pc_canon_hook hook = {NULL, each_member_end, &x, each_member_at, each_element};
    struct pc_canon_out out = {&e.text, NULL, NULL};
    struct pc_canon_info info;
    enum pc_canon_rc rc = pc_canon_scan(body, len, &hook, &out, &info);
    int result = 1;
    char(*k)[PC_KEY_MAX] = NULL;
    if (e.oom) {
        result = -1;
    } else if (rc != PC_CANON_INVALID && (info.root != PC_CANON_OBJECT || e.instances == 0)) {
        result = 2; /* every root member was shown: batch.c finds no "instances" either */
    } else if (rc == PC_CANON_OK && info.root == PC_CANON_OBJECT && e.instances == 1 && !e.other &&
               e.n > 0 && memchr(body + e.sig.off, '\n', e.sig.len) == NULL) {
        k = malloc(e.n * sizeof *k);
        struct hasher h = {EVP_MD_CTX_new(), 0};
        result = k == NULL || h.ctx == NULL ? -1 : 0;
        for (size_t i = 0; result == 0 && i < e.n; i++) {
            /* material = namespace "\n" route "\n" "instance\n" signature "\n" canonical */
            hash_begin(&h, ns, route);
            hash_update(&h, "instance\n", 9);
            hash_update(&h, body + e.sig.off, e.sig.len);
            hash_update(&h, "\n", 1);
            hash_update(&h, e.text.data + e.texts[i].off, e.texts[i].len);
            if (hash_end(&h, prefix, k[i]) != 0)
                result = -1;
        }
        EVP_MD_CTX_free(h.ctx);
    }
    pc_buf_release(&e.text);
    free(e.texts);
    if (result != 0) {
        free(k);
        free(e.spans);
        return result;
    }
    *spans = e.spans;
    *n = e.n;
    *sig = e.sig;
    *keys = k;
    return 0;
}

const char *pc_cachekey_kind_name(enum pc_key_kind kind)
{
    switch (kind) {
    case PC_KEY_FIELDS:
        return "fields";
    case PC_KEY_PATH:
        return "path";
    case PC_KEY_RAW:
        return "raw";
    }
    return "unknown";
}
