/* log: levelled lines to stderr, access lines to their own stream. */
#include "predcache/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

int pc_log_level_current = PC_LOG_INFO;
static FILE *access_fp; /* NULL: access log off. Set once at start-up. */

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

void pc_log_write(int level, const char *fmt, ...)
{
    char ts[40];
    format_time(ts, sizeof ts);
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (level < PC_LOG_DEBUG || level > PC_LOG_ERROR)
        level = PC_LOG_ERROR;
    fprintf(stderr, "%s %s %s\n", ts, level_names[level], line);
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
    fprintf(access_fp,
            "%s access client=%s method=%s path=%s status=%d cache=%s key=%s backend_ms=%s "
            "total_ms=%.2f bytes=%zu\n",
            ts, a->client ? a->client : "-", a->method ? a->method : "-", a->path ? a->path : "-",
            a->status, a->cache ? a->cache : "-", key, backend, a->total_ms, a->bytes);
}
