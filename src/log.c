/*
 * log: levelled lines to stderr, access lines to their own stream, as text or JSON. Worker
 * threads log at once: each line is formatted whole into one buffer and written with one
 * fwrite (which holds the stream's lock), so lines never interleave within a line.
 *
 * A reload changes all of it while workers log (pc_log_apply). The level and the format
 * are relaxed atomics: a line is formatted with one or the other. The access stream is
 * one FILE, created the first time a target is opened and then never closed while
 * running: a new target is opened first, then its descriptor is dup'ed onto the stream's
 * under the stream's lock (as SIGUSR1's reopening does), so every line goes whole to the
 * old target or the new one. "off" is a flag writers read before they format.
 */
#include "predcache/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "predcache/buf.h"

int pc_log_level_current = PC_LOG_INFO; /* relaxed atomic */
static int log_json;                    /* relaxed atomic: lines are JSON objects */
static int access_on;   /* atomic: access lines are written (acquire: access_fp is set) */
static FILE *access_fp; /* created once (release store); closed only at exit */
/* A thread that defers its access lines' flush (a worker: once per pass of its loop) says
 * how: defer_fn(defer_arg) is called for its first line since the last flush. */
static __thread void (*defer_fn)(void *);
static __thread void *defer_arg;
static __thread int deferred;
static int access_stdout; /* the stream writes to stdout's copy: nothing to reopen */
static pthread_mutex_t apply_lock = PTHREAD_MUTEX_INITIALIZER; /* apply, reopen: one at once */

#define LOG_LINE_MAX 2048

static const char *const level_names[] = {"debug", "info", "warn", "error"};

static void format_time(char *out, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03ldZ", (long)(tv.tv_usec / 1000));
}

/* Ends the len bytes formatted into line (truncated to fit) with a newline; one fwrite. */
static void write_line(FILE *fp, char *line, size_t size, size_t len)
{
    if (len > size - 2)
        len = size - 2;
    line[len++] = '\n';
    fwrite(line, 1, len, fp);
}

/* {"time":"...","level":"...","msg":"..."}: msg escaped, cut at a whole character when
 * the line would not fit. */
static void write_json_line(const char *ts, int level, const char *msg, size_t len)
{
    char line[3 * LOG_LINE_MAX];
    int n = snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"", ts,
                     level_names[level]);
    size_t used, w = (size_t)n;
    w += pc_json_escape(msg, len, &used, line + w, sizeof line - w - 3);
    memcpy(line + w, "\"}\n", 3);
    fwrite(line, 1, w + 3, stderr);
}

void pc_log_write(int level, const char *fmt, ...)
{
    char ts[40];
    format_time(ts, sizeof ts);
    if (level < PC_LOG_DEBUG || level > PC_LOG_ERROR)
        level = PC_LOG_ERROR;
    int json = __atomic_load_n(&log_json, __ATOMIC_RELAXED);
    char line[LOG_LINE_MAX];
    int n = json ? 0 : snprintf(line, sizeof line, "%s %s ", ts, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m > 0 ? (size_t)m : 0);
    if (json)
        write_json_line(ts, level, line, len < sizeof line ? len : sizeof line - 1);
    else
        write_line(stderr, line, sizeof line, len);
}

int pc_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0)
            return i;
    }
    return -1;
}

/* A descriptor for the access log's target: a copy of stdout for "-" (*is_stdout), else
 * the file, for append. -1 with errno. */
static int open_target(const char *path, int *is_stdout)
{
    *is_stdout = strcmp(path, "-") == 0;
    if (*is_stdout)
        return fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0);
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOCTTY | O_CLOEXEC, 0644);
}

/* The stream writes to fd from now on; fd is closed. Under the stream's lock, so that no
 * line is half in one target and half in the other. 0, or -1 with errno. */
static int retarget(FILE *fp, int fd)
{
    flockfile(fp);
    fflush(fp);
    int rc = dup3(fd, fileno(fp), O_CLOEXEC) < 0 ? -1 : 0;
    funlockfile(fp);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int pc_log_apply(int level, int json, const char *access_path)
{
    if (level < PC_LOG_DEBUG || level > PC_LOG_ERROR) {
        errno = EINVAL;
        return -1;
    }
    pthread_mutex_lock(&apply_lock);
    int off = strcmp(access_path, "off") == 0, is_stdout = 0, rc = 0;
    int fd = off ? -1 : open_target(access_path, &is_stdout);
    FILE *fp = access_fp;
    if (!off && fd < 0) {
        rc = -1;
    } else if (off) {
        __atomic_store_n(&access_on, 0, __ATOMIC_RELEASE);
        /* The old file is let go: a line that saw the flag before it changed ends here. */
        int null = fp != NULL ? open("/dev/null", O_WRONLY | O_CLOEXEC) : -1;
        if (null >= 0)
            retarget(fp, null);
    } else if (fp == NULL) {
        fp = fdopen(fd, "w"); /* the descriptor appends (or is stdout's) */
        if (fp == NULL) {
            int saved = errno;
            close(fd);
            errno = saved;
            rc = -1;
        } else {
            /* Fully buffered: a worker's lines are written together once a pass of its loop
             * is over (pc_log_defer_access); a line of any other thread at once. */
            setvbuf(fp, NULL, _IOFBF, 1 << 16);
            __atomic_store_n(&access_fp, fp, __ATOMIC_RELEASE);
        }
    } else {
        rc = retarget(fp, fd);
    }
    if (rc == 0) {
        __atomic_store_n(&pc_log_level_current, level, __ATOMIC_RELAXED);
        __atomic_store_n(&log_json, json ? 1 : 0, __ATOMIC_RELAXED);
        access_stdout = is_stdout;
        if (!off)
            __atomic_store_n(&access_on, 1, __ATOMIC_RELEASE);
    }
    int saved = errno;
    pthread_mutex_unlock(&apply_lock);
    errno = saved;
    return rc;
}

void pc_log_set_level(int level)
{
    if (level >= PC_LOG_DEBUG && level <= PC_LOG_ERROR)
        __atomic_store_n(&pc_log_level_current, level, __ATOMIC_RELAXED);
}

int pc_log_open_access(const char *path)
{
    return pc_log_apply(__atomic_load_n(&pc_log_level_current, __ATOMIC_RELAXED),
                        __atomic_load_n(&log_json, __ATOMIC_RELAXED), path);
}

int pc_log_check_access(const char *path)
{
    if (strcmp(path, "off") == 0 || strcmp(path, "-") == 0)
        return 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    if (errno != ENOENT)
        return -1;
    /* Missing: the start would create it, so its directory must take a new file. */
    char *copy = strdup(path);
    if (copy == NULL)
        return -1;
    int rc = access(dirname(copy), W_OK | X_OK);
    int saved = errno;
    free(copy);
    errno = saved;
    return rc;
}

int pc_log_reopen_access(const char *path)
{
    pthread_mutex_lock(&apply_lock);
    int rc = 0;
    if (access_fp != NULL && __atomic_load_n(&access_on, __ATOMIC_RELAXED) && !access_stdout) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOCTTY | O_CLOEXEC, 0644);
        rc = fd < 0 ? -1 : retarget(access_fp, fd);
    }
    int saved = errno;
    pthread_mutex_unlock(&apply_lock);
    errno = saved;
    return rc;
}

void pc_log_close_access(void)
{
    pthread_mutex_lock(&apply_lock);
    __atomic_store_n(&access_on, 0, __ATOMIC_RELEASE);
    if (access_fp != NULL)
        fclose(access_fp);
    access_fp = NULL;
    access_stdout = 0;
    pthread_mutex_unlock(&apply_lock);
}

/* ---- request ids ------------------------------------------------------------------- */

int pc_log_request_id_ok(const char *s)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        if (n == PC_LOG_ID_MAX || (unsigned char)s[n] <= 0x20 || (unsigned char)s[n] >= 0x7f)
            return 0;
    }
    return n > 0;
}

/* splitmix64 over a per-thread state seeded from getrandom: ids need to be unlikely to
 * meet, not secret. */
static uint64_t id_next(void)
{
    static __thread uint64_t state;
    static __thread int seeded;
    if (!seeded) {
        if (getrandom(&state, sizeof state, GRND_NONBLOCK) != (ssize_t)sizeof state) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            state = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^
                    (uint64_t)(uintptr_t)&state ^ ((uint64_t)getpid() << 48);
        }
        seeded = 1;
    }
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void pc_log_request_id_new(char out[PC_LOG_ID_NEW + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t v = id_next();
        for (int i = 0; i < 16; i++, v >>= 4)
            out[half * 16 + i] = hex[v & 15];
    }
    out[PC_LOG_ID_NEW] = '\0';
}

/* The short key is the last 12 hex digits: enough to grep, short enough to read. */
/* An access line being composed: on the stack, moved to the heap if it outgrows it. */
struct line {
    char *p;
    size_t len, cap;
    char stack[LOG_LINE_MAX];
};

static void line_put(struct line *l, const char *s, size_t n)
{
    if (l->len + n + 1 > l->cap) { /* + 1: room for the newline */
        size_t cap = 2 * (l->len + n + 1);
        char *p = l->p == l->stack ? malloc(cap) : realloc(l->p, cap);
        if (p == NULL) { /* out of memory: the line, truncated */
            n = l->cap - 1 - l->len;
        } else {
            if (l->p == l->stack)
                memcpy(p, l->stack, l->len);
            l->p = p;
            l->cap = cap;
        }
    }
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void line_str(struct line *l, const char *s)
{
    line_put(l, s, strlen(s));
}

static void line_uint(struct line *l, uint64_t v)
{
    char d[PC_U64_TEXT];
    line_put(l, d, pc_u64_text(v, d));
}

/* x with two decimals, as %.2f writes it for the milliseconds a request takes. */
static void line_ms(struct line *l, double x)
{
    if (!(x >= 0 && x < 1e15)) {
        char b[64];
        int n = snprintf(b, sizeof b, "%.2f", x);
        line_put(l, b, n > 0 ? (size_t)n : 0);
        return;
    }
    uint64_t c = (uint64_t)(x * 100 + 0.5);
    line_uint(l, c / 100);
    char frac[3] = {'.', (char)('0' + c % 100 / 10), (char)('0' + c % 10)};
    line_put(l, frac, 3);
}

/* "2026-11-21T10:15:00.123Z": the seconds formatted once a second per thread. */
static void line_time(struct line *l)
{
    static __thread time_t cached_sec = -1;
    static __thread char cached[32];
    static __thread size_t cached_len;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    if (tv.tv_sec != cached_sec) {
        struct tm tm;
        gmtime_r(&tv.tv_sec, &tm);
        cached_len = strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_sec = tv.tv_sec;
    }
    line_put(l, cached, cached_len);
    int ms = (int)(tv.tv_usec / 1000);
    char frac[5] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z'};
    line_put(l, frac, 5);
}

/* A text value: "-" when absent; in double quotes, with \" \\ and \xHH, when it holds a
 * space, a quote, a backslash or a control character (so that fields split on spaces). */
static void text_value(struct line *l, const char *s)
{
    if (s == NULL || s[0] == '\0') {
        line_put(l, "-", 1);
        return;
    }
    size_t n = 0, plain = 1;
    for (; s[n] != '\0'; n++) {
        unsigned char ch = (unsigned char)s[n];
        if (ch <= 0x20 || ch == 0x7f || ch == '"' || ch == '\\')
            plain = 0;
    }
    if (plain) {
        line_put(l, s, n);
        return;
    }
    static const char hex[] = "0123456789abcdef";
    line_put(l, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            line_put(l, e, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            char e[4] = {'\\', 'x', hex[ch >> 4], hex[ch & 15]};
            line_put(l, e, 4);
        } else {
            line_put(l, s + i, 1);
        }
    }
    line_put(l, "\"", 1);
}

/* ,"name":"value" with value escaped; null when s is NULL. */
static void json_member(struct line *l, const char *name, const char *s)
{
    line_str(l, ",\"");
    line_str(l, name);
    if (s == NULL) {
        line_str(l, "\":null");
        return;
    }
    line_str(l, "\":\"");
    size_t n = strlen(s);
    while (n > 0) {
        char out[256];
        size_t used, w = pc_json_escape(s, n, &used, out, sizeof out);
        line_put(l, out, w);
        s += used;
        n -= used;
    }
    line_put(l, "\"", 1);
}

static void line_int(struct line *l, int v)
{
    if (v < 0)
        line_put(l, "-", 1);
    line_uint(l, v < 0 ? (uint64_t) - (int64_t)v : (uint64_t)v);
}

/* Milliseconds as a JSON number (null when not a finite one). */
static void json_ms(struct line *l, double x)
{
    if (x != x || x > 1e15 || x < -1e15)
        line_str(l, "null");
    else
        line_ms(l, x);
}

static void access_text(struct line *l, const struct pc_access *a, const char *key)
{
    line_str(l, " access client=");
    text_value(l, a->client);
    line_str(l, " method=");
    text_value(l, a->method);
    line_str(l, " path=");
    text_value(l, a->path);
    line_str(l, " status=");
    line_int(l, a->status);
    line_str(l, " cache=");
    text_value(l, a->cache);
    line_str(l, " key=");
    text_value(l, key);
    line_str(l, " backend_ms=");
    if (a->backend_ms < 0)
        line_put(l, "-", 1);
    else
        line_ms(l, a->backend_ms);
    line_str(l, " total_ms=");
    line_ms(l, a->total_ms);
    line_str(l, " bytes=");
    line_uint(l, a->bytes);
    /* Fields added later come here, before the reason, which ends a line that has one. */
    line_str(l, " id=");
    text_value(l, a->id);
    line_str(l, " query=");
    text_value(l, a->query);
    line_str(l, " route=");
    text_value(l, a->route);
    line_str(l, " upstream=");
    text_value(l, a->upstream);
    if (a->items > 0) {
        line_str(l, " items=");
        line_uint(l, a->items);
    }
    if (a->reason != NULL) {
        line_str(l, " reason=");
        text_value(l, a->reason);
    }
}

static void access_json(struct line *l, const struct pc_access *a, const char *key)
{
    json_member(l, "id", a->id);
    json_member(l, "client", a->client);
    json_member(l, "method", a->method);
    json_member(l, "path", a->path);
    if (a->query != NULL && a->query[0] != '\0')
        json_member(l, "query", a->query);
    json_member(l, "route", a->route);
    json_member(l, "upstream", a->upstream);
    line_str(l, ",\"status\":");
    line_int(l, a->status);
    json_member(l, "cache", a->cache);
    if (a->reason != NULL)
        json_member(l, "reason", a->reason);
    json_member(l, "key", key);
    if (a->items > 0) {
        line_str(l, ",\"items\":");
        line_uint(l, a->items);
    }
    line_str(l, ",\"backend_ms\":");
    if (a->backend_ms < 0)
        line_str(l, "null");
    else
        json_ms(l, a->backend_ms);
    line_str(l, ",\"total_ms\":");
    json_ms(l, a->total_ms);
    line_str(l, ",\"bytes\":");
    line_uint(l, a->bytes);
    line_put(l, "}", 1);
}

void pc_log_access(const struct pc_access *a)
{
    if (!__atomic_load_n(&access_on, __ATOMIC_ACQUIRE))
        return;
    FILE *fp = __atomic_load_n(&access_fp, __ATOMIC_ACQUIRE);
    if (fp == NULL)
        return;
    const char *key = NULL;
    if (a->key != NULL && a->key[0] != '\0') {
        size_t n = strlen(a->key);
        key = n > 12 ? a->key + n - 12 : a->key;
    }
    int json = __atomic_load_n(&log_json, __ATOMIC_RELAXED);
    struct line l;
    l.p = l.stack;
    l.len = 0;
    l.cap = sizeof l.stack;
    if (json)
        line_str(&l, "{\"time\":\"");
    line_time(&l);
    if (json) {
        line_put(&l, "\"", 1);
        access_json(&l, a, key);
    } else {
        access_text(&l, a, key);
    }
    l.p[l.len++] = '\n';
    fwrite(l.p, 1, l.len, fp);
    if (l.p != l.stack)
        free(l.p);
    if (defer_fn == NULL) {
        fflush(fp);
    } else if (!deferred) {
        deferred = 1;
        defer_fn(defer_arg);
    }
}

void pc_log_defer_access(void (*fn)(void *arg), void *arg)
{
    defer_fn = fn;
    defer_arg = arg;
    deferred = 0;
}

void pc_log_flush_access(void)
{
    deferred = 0;
    FILE *fp = __atomic_load_n(&access_fp, __ATOMIC_ACQUIRE);
    if (fp != NULL)
        fflush(fp);
}
