/*
 * log: levelled lines to stderr, access lines to their own stream. Worker threads log at
 * once: each line is formatted whole into one buffer and written with one fwrite (which
 * holds the stream's lock), so lines never interleave within a line.
 */
#include "predcache/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

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

void pc_log_close_access(void)
{
    if (access_fp != NULL && access_fp != stdout)
        fclose(access_fp);
    access_fp = NULL;
}

/* The short key is the last 12 hex digits: enough to grep, short enough to read. */
void pc_log_access(const struct pc_access *a)
{
    if (access_fp == NULL)
        return;
    char ts[40];
    format_time(ts, sizeof ts);
    const char *key = "-";
    if (a->key != NULL && a->key[0] != '\0') {
        size_t n = strlen(a->key);
        key = n > 12 ? a->key + n - 12 : a->key;
    }
    char backend[32];
    if (a->backend_ms < 0)
        snprintf(backend, sizeof backend, "-");
    else
        snprintf(backend, sizeof backend, "%.2f", a->backend_ms);
    /* A path may be as long as the request head: a line that does not fit the stack
     * buffer is formatted again into one of its size. */
    char stack[LOG_LINE_MAX], *line = stack;
    size_t size = sizeof stack;
    for (int pass = 0; pass < 2; pass++) {
        int n = snprintf(line, size,
                         "%s access client=%s method=%s path=%s status=%d cache=%s key=%s "
                         "backend_ms=%s total_ms=%.2f bytes=%zu",
                         ts, a->client ? a->client : "-", a->method ? a->method : "-",
                         a->path ? a->path : "-", a->status, a->cache ? a->cache : "-", key,
                         backend, a->total_ms, a->bytes);
        if (n < 0)
            break;
        if ((size_t)n + 2 <= size || pass == 1) {
            write_line(access_fp, line, size, (size_t)n);
            break;
        }
        size = (size_t)n + 2;
        if ((line = malloc(size)) == NULL) { /* out of memory: the line, truncated */
            write_line(access_fp, stack, sizeof stack, (size_t)n);
            break;
        }
    }
    if (line != stack)
        free(line);
}
