/*
 * keybench: key derivation throughput, for scripts/bench. Links predcache's own objects
 * and calls only the public API of include/predcache/cachekey.h, so it measures whatever
 * cachekey.c does today (canonical JSON, SHA-256) without knowing how.
 *
 *     usage: keybench [--seconds S] SIZE...       (S per size and per call; default 1)
 *
 * For each SIZE (bytes) it builds a TF Serving body {"instances":[[floats...]]} of about
 * that size and times, for S seconds each:
 *   - pc_cachekey_body over the whole body (what a per-body key costs), and
 *   - pc_cachekey_instances over it (what the per-instance keys of a batch cost),
 * then prints one JSON object a line: {"size":..,"derive_mb_s":..,"instance_mb_s":..,...}
 * (MB = 10^6 bytes of input).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "predcache/cachekey.h"

static const struct pc_key_params params = {
    .prefix = "predcache:",
    .path_field = "file_path",
    .family = PC_FAMILY_TFS_PREDICT,
};
static const struct pc_key_head head_fields = {
    .backend = "http://127.0.0.1:8501",
    .method = "POST",
    .path = "/v1/models/bench:predict",
    .media = "json",
    .ns = "default",
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * {"instances":[[0.xxxxxx,...]]} of about size bytes; the floats are those of
 * scripts/bench's request bodies (k * 7919 mod 10007 / 10007). *inst and *inst_len: the
 * instance's span inside the body. Caller frees.
 */
static char *make_body(size_t size, size_t *len, const char **inst, size_t *inst_len)
{
    char *b = malloc(size + 64);
    if (b == NULL)
        return NULL;
    size_t n = (size_t)sprintf(b, "{\"instances\":[[");
    size_t start = n - 1;
    for (unsigned long k = 1; n == start + 1 || n + 9 + 3 <= size; k++) {
        if (n > start + 1)
            b[n++] = ',';
        n += (size_t)sprintf(b + n, "%.6f", (double)((k * 7919) % 10007) / 10007.0);
    }
    n += (size_t)sprintf(b + n, "]]}");
    *len = n;
    *inst = b + start;
    *inst_len = n - 2 - start;
    return b;
}

struct timing {
    double mb_s;
    double us_per_call;
    unsigned long calls;
};

/* Calls one API for about seconds; -1 when a call fails. */
static int run(int per_instance, const char *body, size_t len, const char *inst, size_t inst_len,
               double seconds, struct timing *t, char key[PC_KEY_MAX])
{
    char err[256] = "";
    enum pc_key_kind kind;
    unsigned long calls = 0;
    struct pc_buf head;
    pc_buf_init(&head);
    if (pc_cachekey_head(&head_fields, &head) != 0)
        return -1;
    double start = now_s(), elapsed;
    do {
        for (int i = 0; i < 8; i++) {
            int rc;
            if (per_instance) {
                struct pc_span *spans = NULL, sig;
                size_t n = 0;
                char(*keys)[PC_KEY_MAX] = NULL;
                rc = pc_cachekey_instances(&params, head.data, head.len, body, len, &spans, &n,
                                           &sig, &keys);
                if (rc == 0)
                    memcpy(key, keys[0], PC_KEY_MAX);
                free(spans);
                free(keys);
            } else {
                rc = pc_cachekey_body(&params, head.data, head.len, body, len, 1, key, &kind, err,
                                      sizeof err);
            }
            if (rc != 0) {
                fprintf(stderr, "keybench: key derivation failed: %s\n", err);
                pc_buf_release(&head);
                return -1;
            }
            calls++;
        }
        elapsed = now_s() - start;
    } while (elapsed < seconds);
    pc_buf_release(&head);
    (void)inst;
    size_t bytes = per_instance ? inst_len : len;
    t->calls = calls;
    t->mb_s = (double)bytes * (double)calls / elapsed / 1e6;
    t->us_per_call = elapsed * 1e6 / (double)calls;
    return 0;
}

int main(int argc, char **argv)
{
    double seconds = 1.0;
    int i = 1;
    if (i + 1 < argc && strcmp(argv[i], "--seconds") == 0) {
        seconds = atof(argv[i + 1]);
        i += 2;
    }
    if (i >= argc || seconds <= 0) {
        fprintf(stderr, "usage: keybench [--seconds S] SIZE...\n");
        return 2;
    }
    for (; i < argc; i++) {
        long size = atol(argv[i]);
        if (size < 32 || size > 256L * 1024 * 1024) {
            fprintf(stderr, "keybench: bad size %s (32 .. 256m)\n", argv[i]);
            return 2;
        }
        size_t len, inst_len;
        const char *inst;
        char *body = make_body((size_t)size, &len, &inst, &inst_len);
        if (body == NULL)
            return 1;
        char key_body[PC_KEY_MAX], key_inst[PC_KEY_MAX];
        struct timing whole, one;
        if (run(0, body, len, inst, inst_len, seconds, &whole, key_body) != 0 ||
            run(1, body, len, inst, inst_len, seconds, &one, key_inst) != 0) {
            free(body);
            return 1;
        }
        printf("{\"size\":%zu,\"derive_mb_s\":%.1f,\"derive_us\":%.2f,\"derive_calls\":%lu,"
               "\"instance_mb_s\":%.1f,\"instance_us\":%.2f,\"instance_calls\":%lu}\n",
               len, whole.mb_s, whole.us_per_call, whole.calls, one.mb_s, one.us_per_call,
               one.calls);
        fflush(stdout);
        free(body);
    }
    return 0;
}
