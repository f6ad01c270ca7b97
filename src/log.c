/*
 * log: levelled lines to stderr, access lines to their own stream. Worker threads log at
 * once: each line is formatted whole into one buffer and written with one fwrite (which
 * holds the stream's lock), so lines never interleave within a line.
 */
#include "predcache/log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "predcache/buf.h"

int pc_log_level_current = PC_LOG_INFO; /* set once at start-up, before any thread */
static FILE *access_fp; /* NULL: access log off. Set once at start-up, before any thread. */

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

void pc_log_write(int level, const char *fmt, ...)
{
    char ts[40];
    format_time(ts, sizeof ts);
    if (level < PC_LOG_DEBUG || level > PC_LOG_ERROR)
        level = PC_LOG_ERROR;
    char line[LOG_LINE_MAX];
    int n = snprintf(line, sizeof line, "%s %s ", ts, level_names[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    write_line(stderr, line, sizeof line, (size_t)n + (m > 0 ? (size_t)m : 0));
}

int pc_log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0)
            return i;
    }
    return -1;
}

void pc_log_set_level(int level)
{
    pc_log_level_current = level;
}

int pc_log_open_access(const char *path)
{
    pc_log_close_access();
    if (strcmp(path, "off") == 0)
        return 0;
    if (strcmp(path, "-") == 0) {
        access_fp = stdout;
        setvbuf(stdout, NULL, _IOLBF, 0);
        return 0;
    }
    access_fp = fopen(path, "a");
    if (access_fp == NULL)
        return -1;
    setvbuf(access_fp, NULL, _IOLBF, 0);
    return 0;
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
    if (access_fp == NULL || access_fp == stdout)
        return 0;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    /* The stream stays; its descriptor becomes the new file's. Under the stream's lock, so
     * that no line is half in one file and half in the other. */
    flockfile(access_fp);
    fflush(access_fp);
    int rc = dup2(fd, fileno(access_fp)) < 0 ? -1 : 0;
    funlockfile(access_fp);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

void pc_log_close_access(void)
{
    if (access_fp != NULL && access_fp != stdout)
        fclose(access_fp);
    access_fp = NULL;
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

void pc_log_access(const struct pc_access *a)
{
    if (access_fp == NULL)
        return;
    const char *key = "-";
    if (a->key != NULL && a->key[0] != '\0') {
        size_t n = strlen(a->key);
        key = n > 12 ? a->key + n - 12 : a->key;
    }
    struct line l;
    l.p = l.stack;
    l.len = 0;
    l.cap = sizeof l.stack;
    line_time(&l);
    line_str(&l, " access client=");
    line_str(&l, a->client ? a->client : "-");
    line_str(&l, " method=");
    line_str(&l, a->method ? a->method : "-");
    line_str(&l, " path=");
    line_str(&l, a->path ? a->path : "-");
    line_str(&l, " status=");
    if (a->status < 0)
        line_put(&l, "-", 1);
    line_uint(&l, a->status < 0 ? (uint64_t) - (int64_t)a->status : (uint64_t)a->status);
    line_str(&l, " cache=");
    line_str(&l, a->cache ? a->cache : "-");
    line_str(&l, " key=");
    line_str(&l, key);
    line_str(&l, " backend_ms=");
    if (a->backend_ms < 0)
        line_put(&l, "-", 1);
    else
        line_ms(&l, a->backend_ms);
    line_str(&l, " total_ms=");
    line_ms(&l, a->total_ms);
    line_str(&l, " bytes=");
    line_uint(&l, a->bytes);
    if (a->reason != NULL) {
        line_str(&l, " reason=");
        line_str(&l, a->reason);
    }
    l.p[l.len++] = '\n';
    fwrite(l.p, 1, l.len, access_fp);
    if (l.p != l.stack)
        free(l.p);
}
