/*
 * cachekey: derives the v2 cache key of a predict request.
 *
 *     body --canon: one pass, read as json-c 0.16 strict (depth 64) reads it--> object?
 *        |-- its members as the route's family reads them, names decoded,
 *        |   a name given twice keyed raw, values canonical        (PC_KEY_BODY "tfs"/"json")
 *        |-- plain JSON holding only a string path field          (PC_KEY_PATH "path")
 *        |-- input_fields named (unsafe alias) and present        (PC_KEY_FIELDS "fields")
 *        `-- anything else, or not JSON --> the bytes             (PC_KEY_RAW "raw")
 *     key = prefix "v2:{" hex(SHA-256(head form "\n" input)) "}"
 *
 * One pass over the body records each root member (decoded name, spans) and writes the
 * canonical text of the members the family reads into one buffer; the input is then those
 * texts in name order, hashed with the head.
 *
 * Safety rule: two bodies may share a key only when the model would see the same input.
 * The reading cannot always tell values apart (integers beyond 64 bits saturate, lone
 * UTF-16 surrogates become U+FFFD, a "\u0000" in a name truncates it), so when a body holds
 * such a value where it is read its JSON reading is refused and it is keyed by its raw
 * bytes instead; so is a body json-c reads but strict JSON refuses (canon's
 * PC_CANON_LENIENT): a cache miss is cheap, a wrong answer is not.
 */
#include "predcache/cachekey.h"

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "predcache/canon.h"

#define PC_KEY_VERSION "v2:{"
#define PC_KEY_HEAD "predcache-key-v2\n"
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

/* Starts the material with the head. */
static void hash_begin(struct hasher *h, const char *head, size_t head_len)
{
    h->failed = h->ctx == NULL || EVP_DigestInit_ex(h->ctx, pc_sha256_md(), NULL) != 1;
    hash_update(h, head, head_len);
}

/* Ends it: prefix "v2:{" hex(digest) "}" into out. 0 ok, -1 when any step failed. */
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
    snprintf(out, PC_KEY_MAX, "%s%s%s}", prefix, PC_KEY_VERSION, hex);
    return 0;
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

/* Hashes name[0..len) as a canonical JSON string. -1 when it holds U+FFFD or no memory. */
static int hash_name_n(struct hasher *h, const char *name, size_t len)
{
    struct pc_buf b;
    pc_buf_init(&b);
    int rc = pc_canon_put_string(&b, name, len) == PC_CANON_OK ? 0 : -1;
    if (rc == 0)
        hash_update(h, b.data, b.len);
    pc_buf_release(&b);
    return rc;
}

static int names_eq(const char *a, size_t alen, const char *b)
{
    return b != NULL && strlen(b) == alen && memcmp(a, b, alen) == 0;
}

static int in_list(const char *name, size_t len, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (names_eq(name, len, list[i]))
            return 1;
    }
    return 0;
}

/* Does the route's family read the root member name? */
static int family_reads(const struct pc_key_params *p, const char *name, size_t len)
{
    static const char *const tfs_predict[] = {"signature_name", "instances", "inputs"};
    static const char *const tfs_examples[] = {"signature_name", "context", "examples"};
    switch (p->family) {
    case PC_FAMILY_TFS_PREDICT:
        return in_list(name, len, tfs_predict, 3);
    case PC_FAMILY_TFS_EXAMPLES:
        return in_list(name, len, tfs_examples, 3);
    case PC_FAMILY_JSON:
    case PC_FAMILY_KSERVE:
    case PC_FAMILY_RAW: /* never read as JSON (hash_input) */
        break;
    }
    return !in_list(name, len, p->ignore_fields, p->n_ignore_fields);
}

/* One root member as the pass saw it. */
struct rmember {
    size_t name, name_len;   /* decoded, in reading.names */
    size_t val_off, val_len; /* the value's span in the body */
    size_t text, text_len;   /* its canonical text in reading.text, when written */
    enum pc_canon_type type;
    int family, field; /* read by the family; named by input_fields */
    int whole;         /* read by a whole-body reading (not an ignore field) */
    int exact;         /* written and exact */
    size_t pos;        /* order in the text */
};

/*
 * The pass over a body: every root member recorded, the values the key may read written
 * canonical to text. In instances mode the batch member ("instances", or p->items) is shown
 * element by element.
 */
struct reading {
    const struct pc_key_params *p;
    const char *body;
    struct pc_buf names, text;
    struct rmember *m;
    size_t n, cap;
    int oom;
    int each;                /* instances mode: the batch member read element by element */
    int n_instances, raw_ok; /* members decoding to the batch member; the one spelled so */
    int el_bad;              /* an element that cannot be keyed alone */
    struct pc_span *el_spans, *el_texts;
    size_t n_el, cap_el;
    size_t max_el; /* elements recorded at most; past them el_over is set and none is kept */
    int el_over;
};

static void reading_init(struct reading *r, const struct pc_key_params *p, const char *body,
                         int each)
{
    memset(r, 0, sizeof *r);
    r->p = p;
    r->body = body;
    r->each = each;
    r->max_el = SIZE_MAX;
    pc_buf_init(&r->names);
    pc_buf_init(&r->text);
}

static void reading_release(struct reading *r)
{
    pc_buf_release(&r->names);
    pc_buf_release(&r->text);
    free(r->m);
    free(r->el_spans);
    free(r->el_texts);
}

static int read_member(void *arg, const char *name, size_t name_len, size_t raw_off, size_t raw_len)
{
    struct reading *r = arg;
    if (r->n == r->cap) {
        size_t cap = r->cap ? 2 * r->cap : 16;
        struct rmember *m = realloc(r->m, cap * sizeof *m);
        if (m == NULL) {
            r->oom = 1;
            return 0;
        }
        r->m = m;
        r->cap = cap;
    }
    struct rmember *x = &r->m[r->n];
    memset(x, 0, sizeof *x);
    x->pos = r->n;
    x->name = r->names.len;
    x->name_len = name_len;
    if (pc_buf_append(&r->names, name, name_len) != 0)
        r->oom = 1;
    x->family = family_reads(r->p, name, name_len);
    x->field = in_list(name, name_len, r->p->input_fields, r->p->n_input_fields);
    x->whole = !in_list(name, name_len, r->p->ignore_fields, r->p->n_ignore_fields);
    x->text = r->text.len;
    r->n++;
    const char *items = r->p->items != NULL ? r->p->items : "instances";
    size_t il = strlen(items);
    if (r->each && names_eq(name, name_len, items)) {
        r->n_instances++;
        if (raw_len == il + 2 && memcmp(r->body + raw_off + 1, items, il) == 0)
            r->raw_ok++;
        x->family = x->whole = 0; /* its elements are keyed one by one, not as a member */
        return PC_CANON_EACH;
    }
    return x->family || x->field || x->whole ? 1 : 0;
}

static void read_member_end(void *arg, size_t off, size_t len, enum pc_canon_type type,
                            enum pc_canon_rc exact)
{
    struct reading *r = arg;
    if (r->n == 0 || r->oom)
        return;
    struct rmember *x = &r->m[r->n - 1];
    x->val_off = off;
    x->val_len = len;
    x->type = type;
    x->text_len = r->text.len - x->text;
    x->exact = exact == PC_CANON_OK;
}

static void read_element(void *arg, size_t off, size_t len, size_t text_off, size_t text_len,
                         enum pc_canon_rc exact)
{
    struct reading *r = arg;
    if (r->n_el >= r->max_el) { /* a bound on the work a batch costs: nothing more is kept */
        r->el_over = 1;
        return;
    }
    if (exact != PC_CANON_OK || has_nul_escape(r->body + off, len) ||
        (r->p->items_text && len > 0 && r->body[off] != '"' && r->body[off] != '[')) {
        r->el_bad = 1; /* items_text: a number makes the list one input (token ids) */
        return;
    }
    if (r->n_el == r->cap_el) {
        size_t cap = r->cap_el ? 2 * r->cap_el : 16;
        struct pc_span *s = realloc(r->el_spans, cap * sizeof *s);
        if (s != NULL)
            r->el_spans = s;
        struct pc_span *t = s == NULL ? NULL : realloc(r->el_texts, cap * sizeof *t);
        if (t == NULL) {
            r->oom = 1;
            return;
        }
        r->el_texts = t;
        r->cap_el = cap;
    }
    r->el_spans[r->n_el] = (struct pc_span){off, len};
    r->el_texts[r->n_el++] = (struct pc_span){text_off, text_len};
}

/* Reads the body: the canon result, with info. */
static enum pc_canon_rc reading_run(struct reading *r, const char *body, size_t len,
                                    struct pc_canon_info *info)
{
    struct pc_canon_hook hook = {NULL, read_member_end, r, read_member, read_element};
    struct pc_canon_out out = {&r->text, NULL, NULL};
    enum pc_canon_rc rc = pc_canon_scan(body, len, &hook, &out, info);
    if (rc == PC_CANON_OK && r->oom)
        rc = PC_CANON_INEXACT;
    return rc;
}

/* Name order, then text order: the last of a run of equal names is the one that counts. */
static int member_order(const void *a, const void *b, void *arg)
{
    const struct rmember *x = a, *y = b;
    const char *names = ((const struct reading *)arg)->names.data;
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    int c = n > 0 ? memcmp(names + x->name, names + y->name, n) : 0;
    if (c == 0)
        c = x->name_len < y->name_len ? -1 : x->name_len > y->name_len;
    return c != 0 ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

enum { PICK_FAMILY = 1, PICK_FIELDS, PICK_WHOLE };

/*
 * The members a reading keeps: those `pick` selects (the family's, the input fields, the
 * whole body's), one of each name, marked not exact when the name is given twice (servers
 * differ on which one they read: then the body is keyed raw), in name order, into *out (malloc'ed;
 * *n of them). 0 ok, -1 no memory. Sorting is by bytes of the decoded names, the order the
 * canonical form uses.
 */
static int kept_members(struct reading *r, int pick, struct rmember **out, size_t *n)
{
    struct rmember *k = malloc((r->n ? r->n : 1) * sizeof *k);
    if (k == NULL)
        return -1;
    size_t m = 0;
    for (size_t i = 0; i < r->n; i++) {
        const struct rmember *x = &r->m[i];
        if (pick == PICK_FAMILY ? x->family : pick == PICK_FIELDS ? x->field : x->whole)
            k[m++] = *x;
    }
    qsort_r(k, m, sizeof *k, member_order, r);
    size_t w = 0;
    for (size_t i = 0; i < m; i++) {
        int last =
            i + 1 == m || k[i].name_len != k[i + 1].name_len ||
            memcmp(r->names.data + k[i].name, r->names.data + k[i + 1].name, k[i].name_len) != 0;
        if (last)
            k[w++] = k[i];
        else
            k[i + 1].exact = 0; /* given twice: read two ways, see canon.h */
    }
    *out = k;
    *n = w;
    return 0;
}

/* Hashes the kept members as a canonical object. -1 when one is not exact. */
static int hash_object(struct hasher *h, const struct reading *r, const struct rmember *k, size_t n)
{
    hash_update(h, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (!k[i].exact)
            return -1;
        if (i > 0)
            hash_update(h, ",", 1);
        if (hash_name_n(h, r->names.data + k[i].name, k[i].name_len) != 0)
            return -1;
        hash_update(h, ":", 1);
        hash_update(h, r->text.data + k[i].text, k[i].text_len);
    }
    hash_update(h, "}", 1);
    return 0;
}

/* Hashes the PATH input: "path\n" + the decoded string. -1 when it holds U+FFFD. */
static int hash_path(struct hasher *h, const char *body, const struct rmember *x)
{
    struct pc_buf s;
    pc_buf_init(&s);
    int rc = pc_canon_decode_string(body + x->val_off, x->val_len, &s) == PC_CANON_OK ? 0 : -1;
    if (rc == 0) {
        hash_update(h, "path\n", 5);
        hash_update(h, s.data, s.len);
    }
    pc_buf_release(&s);
    return rc;
}

/* Does a TF Serving reading hold an input (instances or inputs; classify / regress:
 * examples)? */
static int holds_tfs_input(const struct pc_key_params *p, const struct reading *r,
                           const struct rmember *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = r->names.data + k[i].name;
        size_t len = k[i].name_len;
        if (p->family == PC_FAMILY_TFS_PREDICT
                ? names_eq(name, len, "instances") || names_eq(name, len, "inputs")
                : names_eq(name, len, "examples"))
            return 1;
    }
    return 0;
}

/* The object input: fields, path or the family's reading. -1 when it must be keyed raw. */
static int hash_object_input(const struct pc_key_params *p, struct reading *r, struct hasher *h,
                             const char *head, size_t head_len, enum pc_key_kind *kind)
{
    struct rmember *k = NULL;
    size_t n = 0;
    int rc = -1;
    if (p->n_input_fields > 0) {
        if (kept_members(r, PICK_FIELDS, &k, &n) != 0)
            return -1;
        if (n > 0) {
            hash_begin(h, head, head_len);
            hash_update(h, "fields\n", 7);
            rc = hash_object(h, r, k, n);
            *kind = PC_KEY_FIELDS;
            free(k);
            return rc;
        }
        free(k);
    }
    int tfs = p->family == PC_FAMILY_TFS_PREDICT || p->family == PC_FAMILY_TFS_EXAMPLES;
    if (kept_members(r, PICK_FAMILY, &k, &n) != 0)
        return -1;
    if (tfs && !holds_tfs_input(p, r, k, n)) {
        /* No input TF Serving would read: whatever serves this path reads something else
         * (TF Serving itself refuses it), so the whole body is read. */
        free(k);
        tfs = 0;
        if (kept_members(r, PICK_WHOLE, &k, &n) != 0)
            return -1;
    }
    const char *pf = p->path_field;
    hash_begin(h, head, head_len);
    if (!tfs && n == 1 && k[0].exact && pf != NULL && pf[0] != '\0' &&
        k[0].type == PC_CANON_STRING && names_eq(r->names.data + k[0].name, k[0].name_len, pf)) {
        rc = hash_path(h, r->body, &k[0]);
        *kind = PC_KEY_PATH;
    } else {
        hash_update(h, tfs ? "tfs\n" : "json\n", tfs ? 4 : 5);
        rc = hash_object(h, r, k, n);
        *kind = PC_KEY_BODY;
    }
    free(k);
    return rc;
}

/*
 * Reads the body and hashes the material of its key into h. On 0, *kind says which input
 * was hashed. -1 only when body_is_json and the body is not JSON (reason in err).
 */
static int hash_input(const struct pc_key_params *p, const char *head, size_t head_len,
                      const char *body, size_t len, int body_is_json, struct hasher *h,
                      enum pc_key_kind *kind, char *err, size_t errlen)
{
    static const char what[] = "request body is not valid JSON";
    *kind = PC_KEY_RAW;
    struct reading r;
    reading_init(&r, p, body, 0);
    enum pc_canon_rc rc = PC_CANON_INVALID;
    struct pc_canon_info info = {PC_CANON_NULL, NULL, 0};
    int nul = 0;
    if (p->family == PC_FAMILY_RAW) {
        info.error = "read as bytes"; /* never reported: keyed raw below */
        body_is_json = 0;
    } else if (len == 0) {
        info.error = "empty body";
    } else if (len >= INT_MAX) { /* json-c's reading takes an int length */
        info.error = "body too large to parse";
    } else {
        nul = has_nul_escape(body, len);
        rc = reading_run(&r, body, len, &info);
    }
    if (rc == PC_CANON_INVALID && body_is_json) {
        reading_release(&r);
        set_err(err, errlen, what, info.error, info.error_off);
        return -1;
    }
    /* A body that merely may be JSON is keyed raw when it is not: no reason to report. */
    int done = 0;
    if (rc == PC_CANON_OK && !nul && info.root == PC_CANON_OBJECT) {
        done = hash_object_input(p, &r, h, head, head_len, kind) == 0;
    } else if (rc == PC_CANON_OK && !nul &&
               (p->family == PC_FAMILY_JSON || p->family == PC_FAMILY_KSERVE)) {
        /* another JSON value: read whole */
        hash_begin(h, head, head_len);
        hash_update(h, "json\n", 5);
        struct pc_canon_out out = {NULL, hash_update, h};
        done = pc_canon_json(body, len, &out, NULL) == PC_CANON_OK;
        *kind = PC_KEY_BODY;
    }
    reading_release(&r);
    if (!done) {
        *kind = PC_KEY_RAW;
        hash_begin(h, head, head_len);
        hash_update(h, "raw\n", 4);
        hash_update(h, body, len);
    }
    return 0;
}

/* ---- the head -------------------------------------------------------------------------- */

int pc_cachekey_head(const struct pc_key_head *hd, struct pc_buf *out)
{
    const char *lines[][2] = {
        {"backend ", hd->backend}, {"method ", hd->method}, {"path ", hd->path},
        {"query ", hd->query},     {"media ", hd->media},   {"scope ", hd->scope},
    };
    int rc = pc_buf_append_str(out, PC_KEY_HEAD);
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        const char *v = lines[i][1] ? lines[i][1] : "";
        if (strchr(v, '\n') != NULL)
            return -1;
        rc |= pc_buf_append_str(out, lines[i][0]);
        rc |= pc_buf_append_str(out, v);
        rc |= pc_buf_append_char(out, '\n');
    }
    rc |= pc_buf_append_str(out, "vary ");
    if (hd->vary_len > 0)
        rc |= pc_buf_append(out, hd->vary, hd->vary_len);
    const char *ns = hd->ns ? hd->ns : "";
    if (strchr(ns, '\n') != NULL)
        return -1;
    rc |= pc_buf_append_str(out, "\nnamespace ");
    rc |= pc_buf_append_str(out, ns);
    rc |= pc_buf_append_char(out, '\n');
    return rc != 0 ? -1 : 0;
}

int pc_cachekey_media(const char *ct, struct pc_buf *out)
{
    if (ct == NULL)
        return 0;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    const char *slash = memchr(ct, '/', n);
    size_t sub = slash ? n - (size_t)(slash + 1 - ct) : 0;
    const char *s = slash ? slash + 1 : NULL;
    if (s != NULL && ((sub == 4 && strncasecmp(s, "json", 4) == 0) ||
                      (sub > 5 && strncasecmp(s + sub - 5, "+json", 5) == 0)))
        return pc_buf_append_str(out, "json");
    for (size_t i = 0; i < n; i++) {
        char c = ct[i];
        if (c == '\n' || c == '\r')
            c = ' ';
        if (pc_buf_append_char(out, (char)(c >= 'A' && c <= 'Z' ? c + 32 : c)) != 0)
            return -1;
    }
    return 0;
}

int pc_cachekey_vary_add(struct pc_buf *out, const char *name, const char *value)
{
    int rc = 0;
    for (const char *c = name; *c; c++)
        rc |= pc_buf_append_char(out, (char)(*c >= 'A' && *c <= 'Z' ? *c + 32 : *c));
    if (value == NULL)
        rc |= pc_buf_append_str(out, " -;");
    else
        rc |= pc_buf_printf(out, " %zu:%s;", strlen(value), value);
    return rc != 0 ? -1 : 0;
}

/* ---- entry points -------------------------------------------------------------------- */

static int check_prefix(const char *prefix, char *err, size_t errlen)
{
    if (strlen(prefix) + strlen(PC_KEY_VERSION) + 2 * PC_SHA256_LEN + 2 > PC_KEY_MAX) {
        set_err(err, errlen, "cache key prefix too long", NULL, 0);
        return -1;
    }
    return 0;
}

int pc_cachekey_body(const struct pc_key_params *p, const char *head, size_t head_len,
                     const char *body, size_t len, int body_is_json, char out[PC_KEY_MAX],
                     enum pc_key_kind *kind, char *err, size_t errlen)
{
    const char *prefix = p->prefix ? p->prefix : "";
    if (check_prefix(prefix, err, errlen) != 0)
        return -1;
    if (body == NULL)
        len = 0;
    struct hasher h = {EVP_MD_CTX_new(), 0};
    enum pc_key_kind k;
    if (hash_input(p, head, head_len, body, len, body_is_json, &h, &k, err, errlen) != 0) {
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

int pc_cachekey_derive(const struct pc_key_params *p, const char *route, const char *body,
                       size_t len, int body_is_json, char out[PC_KEY_MAX], enum pc_key_kind *kind,
                       char *err, size_t errlen)
{
    struct pc_key_head hd = {.path = route, .ns = p->namespace_};
    struct pc_buf head;
    pc_buf_init(&head);
    if (route == NULL || pc_cachekey_head(&hd, &head) != 0) {
        pc_buf_release(&head);
        set_err(err, errlen, "namespace and route must be set and hold no newline", NULL, 0);
        return -1;
    }
    int rc =
        pc_cachekey_body(p, head.data, head.len, body, len, body_is_json, out, kind, err, errlen);
    pc_buf_release(&head);
    return rc;
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
    if (check_prefix(pf, NULL, 0) != 0)
        return -1;
    struct hasher h = {EVP_MD_CTX_new(), 0};
    hash_begin(&h, "herd\n", 5);
    for (size_t i = 0; i < n; i++) {
        hash_update(&h, keys[pick[i]], strlen(keys[pick[i]]));
        hash_update(&h, "\n", 1);
    }
    int rc = hash_end(&h, pf, out);
    EVP_MD_CTX_free(h.ctx);
    return rc;
}

/* ---- every instance of a batch ---------------------------------------------------- */

size_t pc_cachekey_format(const char *prefix, const unsigned char digest[PC_KEY_DIGEST_LEN],
                          char out[PC_KEY_MAX])
{
    static const char digits[] = "0123456789abcdef";
    const char *pf = prefix != NULL ? prefix : "";
    size_t pl = strlen(pf), vl = strlen(PC_KEY_VERSION);
    if (pl + vl + 2 * PC_KEY_DIGEST_LEN + 2 > PC_KEY_MAX) {
        out[0] = '\0';
        return 0;
    }
    char *o = out;
    memcpy(o, pf, pl);
    o += pl;
    memcpy(o, PC_KEY_VERSION, vl);
    o += vl;
    for (size_t i = 0; i < PC_KEY_DIGEST_LEN; i++) {
        *o++ = digits[digest[i] >> 4];
        *o++ = digits[digest[i] & 0x0f];
    }
    *o++ = '}';
    *o = '\0';
    return (size_t)(o - out);
}

/*
 * A batch read once (see the header): the reading keeps every element's canonical text,
 * and base the SHA-256 state after head "instance\n" canonical(context) "\n", the material
 * every element's key starts with, so keying an element copies that state and hashes only
 * the element (the head alone is several SHA-256 blocks).
 */
struct pc_cachekey_batch {
    struct reading r;
    EVP_MD_CTX *base, *ctx;
    struct pc_span sig;
};

void pc_cachekey_batch_free(struct pc_cachekey_batch *kb)
{
    if (kb == NULL)
        return;
    reading_release(&kb->r);
    EVP_MD_CTX_free(kb->base);
    EVP_MD_CTX_free(kb->ctx);
    free(kb);
}

/* The context of a batch read as one (canonical, the same for every element) and the
 * hash state after it. 0 ok; 1 the context cannot be keyed exactly; -1 no memory. */
static int batch_context(struct pc_cachekey_batch *kb, const char *head, size_t head_len)
{
    struct reading *r = &kb->r;
    struct rmember *ctx = NULL;
    size_t n_ctx = 0;
    struct pc_buf c; /* canonical(context) "\n" */
    pc_buf_init(&c);
    kb->base = EVP_MD_CTX_new();
    kb->ctx = EVP_MD_CTX_new();
    int result =
        kb->base == NULL || kb->ctx == NULL || kept_members(r, PICK_FAMILY, &ctx, &n_ctx) != 0 ? -1
                                                                                               : 0;
    for (size_t i = 0; result == 0 && i < n_ctx; i++) {
        if (!ctx[i].exact)
            result = 1;
        else if (pc_buf_append_char(&c, i == 0 ? '{' : ',') != 0 ||
                 pc_canon_put_string(&c, r->names.data + ctx[i].name, ctx[i].name_len) !=
                     PC_CANON_OK ||
                 pc_buf_append_char(&c, ':') != 0 ||
                 pc_buf_append(&c, r->text.data + ctx[i].text, ctx[i].text_len) != 0)
            result = 1;
    }
    if (result == 0 &&
        (n_ctx == 0 ? pc_buf_append_str(&c, "{}\n") : pc_buf_append_str(&c, "}\n")) != 0)
        result = -1;
    if (result == 0) {
        struct hasher h = {kb->base, 0};
        hash_begin(&h, head, head_len);
        hash_update(&h, "instance\n", 9);
        hash_update(&h, c.data, c.len);
        result = h.failed ? -1 : 0;
    }
    kb->sig = (struct pc_span){0, 0};
    for (size_t i = 0; result == 0 && i < r->n; i++) {
        if (names_eq(r->names.data + r->m[i].name, r->m[i].name_len, "signature_name"))
            kb->sig = (struct pc_span){r->m[i].val_off, r->m[i].val_len};
    }
    pc_buf_release(&c);
    free(ctx);
    return result;
}

int pc_cachekey_batch_read(const struct pc_key_params *p, const char *head, size_t head_len,
                           const char *body, size_t len, size_t max_n,
                           struct pc_cachekey_batch **out)
{
    *out = NULL;
    const char *prefix = p->prefix ? p->prefix : "";
    if (p->family == PC_FAMILY_RAW || body == NULL || len == 0 || len >= INT_MAX ||
        check_prefix(prefix, NULL, 0) != 0 || has_nul_escape(body, len))
        return 1;
    struct pc_cachekey_batch *kb = calloc(1, sizeof *kb);
    if (kb == NULL)
        return -1;
    reading_init(&kb->r, p, body, 1);
    kb->r.max_el = max_n;
    struct pc_canon_info info;
    enum pc_canon_rc rc = reading_run(&kb->r, body, len, &info);
    const struct reading *r = &kb->r;
    int result = 1;
    if (r->oom)
        result = -1;
    else if (r->el_over)
        result = 2;
    else if (rc == PC_CANON_OK && info.root == PC_CANON_OBJECT && r->n_instances == 1 &&
             r->raw_ok == 1 && !r->el_bad && r->n_el > 0)
        result = batch_context(kb, head, head_len);
    if (result != 0) {
        pc_cachekey_batch_free(kb);
        return result;
    }
    *out = kb;
    return 0;
}

size_t pc_cachekey_batch_count(const struct pc_cachekey_batch *kb)
{
    return kb->r.n_el;
}

int pc_cachekey_batch_digest(struct pc_cachekey_batch *kb, size_t from, size_t to,
                             unsigned char (*digests)[PC_KEY_DIGEST_LEN])
{
    const struct reading *r = &kb->r;
    for (size_t i = from; i < to && i < r->n_el; i++) {
        unsigned int mdlen = 0;
        if (EVP_MD_CTX_copy_ex(kb->ctx, kb->base) != 1 ||
            EVP_DigestUpdate(kb->ctx, r->text.data + r->el_texts[i].off, r->el_texts[i].len) != 1 ||
            EVP_DigestFinal_ex(kb->ctx, digests[i], &mdlen) != 1 || mdlen != PC_KEY_DIGEST_LEN)
            return -1;
    }
    return 0;
}

struct pc_span *pc_cachekey_batch_take_spans(struct pc_cachekey_batch *kb, struct pc_span *sig)
{
    struct pc_span *s = kb->r.el_spans;
    kb->r.el_spans = NULL;
    *sig = kb->sig;
    return s;
}

int pc_cachekey_instances(const struct pc_key_params *p, const char *head, size_t head_len,
                          const char *body, size_t len, struct pc_span **spans, size_t *n,
                          struct pc_span *sig, char (**keys)[PC_KEY_MAX])
{
    struct pc_cachekey_batch *kb;
    int rc = pc_cachekey_batch_read(p, head, head_len, body, len, SIZE_MAX, &kb);
    if (rc != 0)
        return rc;
    size_t m = pc_cachekey_batch_count(kb);
    unsigned char(*d)[PC_KEY_DIGEST_LEN] = malloc(m * sizeof *d);
    char(*k)[PC_KEY_MAX] = malloc(m * sizeof *k);
    rc = d == NULL || k == NULL || pc_cachekey_batch_digest(kb, 0, m, d) != 0 ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < m; i++)
        pc_cachekey_format(p->prefix, d[i], k[i]);
    free(d);
    if (rc != 0) {
        free(k);
        pc_cachekey_batch_free(kb);
        return rc;
    }
    *spans = pc_cachekey_batch_take_spans(kb, sig);
    *n = m;
    *keys = k;
    pc_cachekey_batch_free(kb);
    return 0;
}

int pc_cachekey_herd_digests(const char *prefix, const unsigned char (*digests)[PC_KEY_DIGEST_LEN],
                             const uint32_t *pick, size_t n, char out[PC_KEY_MAX])
{
    const char *pf = prefix != NULL ? prefix : "";
    if (check_prefix(pf, NULL, 0) != 0)
        return -1;
    struct hasher h = {EVP_MD_CTX_new(), 0};
    hash_begin(&h, "herd\n", 5);
    char key[PC_KEY_MAX + 1];
    for (size_t i = 0; i < n; i++) { /* the material pc_cachekey_herd hashes, key by key */
        size_t kl = pc_cachekey_format(pf, digests[pick[i]], key);
        key[kl] = '\n';
        hash_update(&h, key, kl + 1);
    }
    int rc = hash_end(&h, pf, out);
    EVP_MD_CTX_free(h.ctx);
    return rc;
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
    case PC_KEY_BODY:
        return "body";
    }
    return "unknown";
}
