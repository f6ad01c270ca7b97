/* Unit tests of log: the access line in both formats, JSON log lines, request ids, and
 * pc_log_apply switching targets while other threads write. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "predcache/log.h"

#define TS_LEN 24 /* "2026-11-21T10:15:00.123Z" */

static char dir[64];

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* The lines of a file, each without its newline (NULL-terminated array, freed by caller). */
static char **read_lines(const char *path, size_t *n)
{
    char **lines = NULL;
    size_t cap = 0;
    *n = 0;
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        char *line = NULL;
        size_t lcap = 0;
        ssize_t got;
        while ((got = getline(&line, &lcap, f)) >= 0) {
            assert_true(got > 0 && line[got - 1] == '\n'); /* every line ends whole */
            line[got - 1] = '\0';
            if (*n + 1 >= cap) {
                cap = cap ? 2 * cap : 1024;
                lines = realloc(lines, cap * sizeof *lines);
                assert_non_null(lines);
            }
            lines[(*n)++] = strdup(line);
        }
        free(line);
        fclose(f);
    }
    if (lines == NULL)
        lines = calloc(1, sizeof *lines);
    lines[*n] = NULL;
    return lines;
}

static void free_lines(char **lines)
{
    for (size_t i = 0; lines[i] != NULL; i++)
        free(lines[i]);
    free(lines);
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- formats ----------------------------------------------------------------------- */

static const char *only_line(const char *path, char ***keep)
{
    size_t n;
    *keep = read_lines(path, &n);
    assert_int_equal(n, 1);
    assert_true(strlen((*keep)[0]) > TS_LEN);
    return (*keep)[0];
}

static void test_text_access_line(void **state)
{
    (void)state;
    char path[128];
    path_of(path, sizeof path, "text.log");
    assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, path), 0);
    struct pc_access a = {
        .id = "abc",
        .client = "10.0.0.1",
        .method = "POST",
        .path = "/v1/models/m:predict",
        .query = "x=1",
        .route = "POST /v1/models/*:predict",
        .upstream = "http://m:8501",
        .status = 200,
        .cache = "PARTIAL",
        .reason = "too-large",
        .key = "v2:{0123459abcdef0123}",
        .items = 3,
        .backend_ms = 1.5,
        .total_ms = 2.25,
        .bytes = 65,
    };
    pc_log_access(&a);
    char **lines;
    const char *l = only_line(path, &lines);
    assert_string_equal(l + TS_LEN,
                        " access client=10.0.0.1 method=POST path=/v1/models/m:predict status=200 "
                        "cache=PARTIAL key=9abcdef0123} backend_ms=1.50 total_ms=2.25 bytes=65 "
                        "id=abc query=x=1 route=\"POST /v1/models/*:predict\" "
                        "upstream=http://m:8501 items=3 reason=too-large");
    free_lines(lines);
}

static void test_json_access_line_escapes(void **state)
{
    (void)state;
    char path[128];
    path_of(path, sizeof path, "json.log");
    assert_int_equal(pc_log_apply(PC_LOG_INFO, 1, path), 0);
    struct pc_access a = {
        .id = "i\"d",
        .client = "10.0.0.1",
        .method = "POST",
        .path = "/a\"b\\c\x01\xff",
        .query = "y=\xc3\xa9",
        .route = "r",
        .upstream = "u",
        .status = 503,
        .cache = "ERROR",
        .key = "v2:{0123459abcdef0123}",
        .items = 2,
        .backend_ms = 0.5,
        .total_ms = 1,
        .bytes = 7,
    };
    pc_log_access(&a);
    struct pc_access b = {.client = "c",
                          .method = "-",
                          .path = "-",
                          .status = 400,
                          .cache = "ERROR",
                          .backend_ms = -1,
                          .query = ""};
    pc_log_access(&b);
    size_t n;
    char **lines = read_lines(path, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(lines[0], "{\"time\":\"", 9);
    assert_string_equal(lines[0] + 9 + TS_LEN,
                        "\",\"id\":\"i\\\"d\",\"client\":\"10.0.0.1\",\"method\":\"POST\","
                        "\"path\":\"/a\\\"b\\\\c\\u0001\\u00ff\",\"query\":\"y=\xc3\xa9\","
                        "\"route\":\"r\",\"upstream\":\"u\",\"status\":503,\"cache\":\"ERROR\","
                        "\"key\":\"9abcdef0123}\",\"items\":2,\"backend_ms\":0.50,"
                        "\"total_ms\":1.00,\"bytes\":7}");
    assert_string_equal(lines[1] + 9 + TS_LEN,
                        "\",\"id\":null,\"client\":\"c\",\"method\":\"-\",\"path\":\"-\","
                        "\"route\":null,\"upstream\":null,\"status\":400,\"cache\":\"ERROR\","
                        "\"key\":null,\"backend_ms\":null,\"total_ms\":0.00,\"bytes\":0}");
    free_lines(lines);
}

static void test_json_log_lines(void **state)
{
    (void)state;
    char path[128];
    path_of(path, sizeof path, "stderr.log");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fflush(stderr);
    int saved = dup(2);
    dup2(fileno(f), 2);
    assert_int_equal(pc_log_apply(PC_LOG_WARN, 1, "off"), 0);
    pc_log(PC_LOG_INFO, "not at warn");
    pc_log(PC_LOG_WARN, "a \"q\"\n%s", "x");
    assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, "off"), 0);
    pc_log(PC_LOG_INFO, "plain %d", 1);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(f);
    size_t n;
    char **lines = read_lines(path, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(lines[0], "{\"time\":\"", 9);
    assert_string_equal(lines[0] + 9 + TS_LEN,
                        "\",\"level\":\"warn\",\"msg\":\"a \\\"q\\\"\\u000ax\"}");
    assert_string_equal(lines[1] + TS_LEN, " info plain 1");
    free_lines(lines);
}

static void test_apply_refuses_what_it_cannot_open(void **state)
{
    (void)state;
    char good[128], bad[160];
    path_of(good, sizeof good, "kept.log");
    path_of(bad, sizeof bad, "no/such/dir/x.log");
    assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, good), 0);
    errno = 0;
    assert_int_equal(pc_log_apply(PC_LOG_ERROR, 1, bad), -1);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(pc_log_apply(PC_LOG_ERROR + 1, 0, good), -1);
    assert_int_equal(errno, EINVAL);
    /* Nothing changed: the level, the format, the target. */
    assert_int_equal(__atomic_load_n(&pc_log_level_current, __ATOMIC_RELAXED), PC_LOG_INFO);
    struct pc_access a = {.client = "c", .method = "GET", .path = "/", .status = 200};
    pc_log_access(&a);
    char **lines;
    const char *l = only_line(good, &lines);
    assert_non_null(strstr(l, " access client=c method=GET"));
    free_lines(lines);
}

static void test_reopen_after_rotation(void **state)
{
    (void)state;
    char path[128], moved[140];
    path_of(path, sizeof path, "rot.log");
    snprintf(moved, sizeof moved, "%s.1", path);
    assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, path), 0);
    struct pc_access a = {.client = "one", .method = "GET", .path = "/", .status = 200};
    pc_log_access(&a);
    assert_int_equal(rename(path, moved), 0);
    assert_int_equal(pc_log_reopen_access(path), 0);
    a.client = "two";
    pc_log_access(&a);
    char **l1, **l2;
    assert_non_null(strstr(only_line(moved, &l1), "client=one"));
    assert_non_null(strstr(only_line(path, &l2), "client=two"));
    free_lines(l1);
    free_lines(l2);
}

static void test_request_ids(void **state)
{
    (void)state;
    assert_true(pc_log_request_id_ok("a"));
    assert_true(pc_log_request_id_ok("req-1:2/3\"!~"));
    assert_false(pc_log_request_id_ok(""));
    assert_false(pc_log_request_id_ok("a b"));
    assert_false(pc_log_request_id_ok("a\tb"));
    assert_false(pc_log_request_id_ok("caf\xc3\xa9"));
    assert_false(pc_log_request_id_ok("a\x7f"));
    char id[PC_LOG_ID_MAX + 2];
    memset(id, 'x', PC_LOG_ID_MAX);
    id[PC_LOG_ID_MAX] = '\0';
    assert_true(pc_log_request_id_ok(id));
    id[PC_LOG_ID_MAX] = 'x';
    id[PC_LOG_ID_MAX + 1] = '\0';
    assert_false(pc_log_request_id_ok(id));
    char a[PC_LOG_ID_NEW + 1], b[PC_LOG_ID_NEW + 1];
    pc_log_request_id_new(a);
    pc_log_request_id_new(b);
    assert_int_equal(strlen(a), PC_LOG_ID_NEW);
    assert_int_equal(strspn(a, "0123456789abcdef"), PC_LOG_ID_NEW);
    assert_string_not_equal(a, b);
    assert_true(pc_log_request_id_ok(a));
}

/* ---- switching while other threads write -------------------------------------------- */

#define WRITERS 2
#define MAX_LINES (1u << 17)
#define LONG_PATH 6000 /* longer than the stream's buffer: several writes for one line */
#define SWITCHES 300   /* targets in turn: a, b, off, c, a, ... */
#define TARGETS 4
#define OFF 2

/* Odd while pc_log_apply runs; 2k once switch k's target (k % TARGETS) is in place. */
static int phase;
static int stop;

struct writer {
    pthread_t t;
    int id;
    uint32_t n;
    uint16_t att[MAX_LINES];  /* 1 + the phase the whole line was written in; 0 unknown */
    uint8_t found[MAX_LINES]; /* 1 + the file it was found in; 0 none */
};
static struct writer writers[WRITERS];
static char long_path[LONG_PATH + 1];

static void *write_lines(void *arg)
{
    struct writer *w = arg;
    uint32_t seq = 0;
    for (; seq < MAX_LINES && !__atomic_load_n(&stop, __ATOMIC_SEQ_CST); seq++) {
        int p1 = __atomic_load_n(&phase, __ATOMIC_SEQ_CST);
        char id[32];
        snprintf(id, sizeof id, "w%d-%u", w->id, seq);
        struct pc_access a = {.id = id,
                              .client = "c",
                              .method = "POST",
                              .path = seq % 8 == 0 ? long_path : "/p",
                              .status = 200,
                              .cache = "MISS",
                              .backend_ms = -1,
                              .total_ms = 1,
                              .bytes = seq};
        pc_log_access(&a);
        int p2 = __atomic_load_n(&phase, __ATOMIC_SEQ_CST);
        w->att[seq] = p1 == p2 && p1 % 2 == 0 ? (uint16_t)(p1 + 1) : 0;
        if (seq % 64 == 0)
            sleep_ms(1); /* files of a few MB */
    }
    w->n = seq;
    return NULL;
}

/* Every line whole, found once. */
static void check_file(const char *path, int file)
{
    size_t n;
    char **lines = read_lines(path, &n);
    for (size_t i = 0; i < n; i++) {
        const char *l = lines[i];
        const char *idf = strstr(l, " id=w");
        assert_non_null(idf);
        int wid;
        unsigned seq;
        assert_int_equal(sscanf(idf, " id=w%d-%u", &wid, &seq), 2);
        assert_true(wid >= 0 && wid < WRITERS && seq < MAX_LINES);
        char want[LONG_PATH + 256];
        snprintf(want, sizeof want,
                 " access client=c method=POST path=%s status=200 cache=MISS key=- backend_ms=- "
                 "total_ms=1.00 bytes=%u id=w%d-%u query=- route=- upstream=-",
                 seq % 8 == 0 ? long_path : "/p", seq, wid, seq);
        assert_true(strlen(l) > TS_LEN);
        assert_string_equal(l + TS_LEN, want);
        assert_int_equal(writers[wid].found[seq], 0); /* once */
        writers[wid].found[seq] = (uint8_t)(file + 1);
    }
    free_lines(lines);
}

/*
 * Targets switched SWITCHES times while two threads write (long lines among them): every
 * line is whole and found once; every line written while a file was the target is in it;
 * none written while off is anywhere. A failed apply in between changes nothing.
 */
static void test_apply_while_writing(void **state)
{
    (void)state;
    char files[TARGETS][128], bad[160];
    path_of(files[0], sizeof files[0], "a.log");
    path_of(files[1], sizeof files[1], "b.log");
    snprintf(files[OFF], sizeof files[OFF], "off");
    path_of(files[3], sizeof files[3], "c.log");
    path_of(bad, sizeof bad, "no/such/dir/x.log");
    memset(long_path, 'x', LONG_PATH);
    long_path[0] = '/';
    long_path[LONG_PATH] = '\0';
    __atomic_store_n(&phase, 0, __ATOMIC_SEQ_CST);
    assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, files[0]), 0);
    for (int i = 0; i < WRITERS; i++) {
        writers[i].id = i;
        assert_int_equal(pthread_create(&writers[i].t, NULL, write_lines, &writers[i]), 0);
    }
    for (int k = 1; k <= SWITCHES; k++) {
        sleep_ms(2);
        if (k % 10 == 0)
            assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, bad), -1); /* the same target */
        __atomic_store_n(&phase, 2 * k - 1, __ATOMIC_SEQ_CST);
        assert_int_equal(pc_log_apply(PC_LOG_INFO, 0, files[k % TARGETS]), 0);
        __atomic_store_n(&phase, 2 * k, __ATOMIC_SEQ_CST);
    }
    sleep_ms(3);
    __atomic_store_n(&stop, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(writers[i].t, NULL);
    for (int f = 0; f < TARGETS; f++) {
        if (f != OFF)
            check_file(files[f], f);
    }
    size_t per_target[TARGETS] = {0};
    for (int i = 0; i < WRITERS; i++) {
        struct writer *w = &writers[i];
        assert_true(w->n < MAX_LINES); /* stopped by the test, not by the array */
        for (uint32_t s = 0; s < w->n; s++) {
            if (w->att[s] == 0)
                continue;
            int target = (w->att[s] - 1) / 2 % TARGETS;
            per_target[target]++;
            if (target == OFF && w->found[s] != 0)
                fail_msg("writer %d line %u written while off is in %s", i, s,
                         files[w->found[s] - 1]);
            if (target != OFF && w->found[s] != target + 1)
                fail_msg("writer %d line %u written to %s was found in %s", i, s, files[target],
                         w->found[s] ? files[w->found[s] - 1] : "none");
        }
    }
    for (int t = 0; t < TARGETS; t++)
        assert_true(per_target[t] > 0); /* each target saw lines */
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/predcache-test-log-XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    pc_log_close_access();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_access_line),
        cmocka_unit_test(test_json_access_line_escapes),
        cmocka_unit_test(test_json_log_lines),
        cmocka_unit_test(test_apply_refuses_what_it_cannot_open),
        cmocka_unit_test(test_reopen_after_rotation),
        cmocka_unit_test(test_request_ids),
        cmocka_unit_test(test_apply_while_writing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
