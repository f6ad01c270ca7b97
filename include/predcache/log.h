/*
 * log: levelled log lines to stderr and one access line per request.
 * Owns the log level and the access-log stream; knows nothing of requests beyond
 * the fields handed to pc_log_access().
 */
#ifndef PREDCACHE_LOG_H
#define PREDCACHE_LOG_H

#include <stddef.h>

enum pc_log_level { PC_LOG_DEBUG = 0, PC_LOG_INFO, PC_LOG_WARN, PC_LOG_ERROR };

extern int pc_log_level_current; /* read by the macro; set once at start-up */

/* The level is checked before the arguments are evaluated. */
#define pc_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= pc_log_level_current)                                                       \
            pc_log_write((level), __VA_ARGS__);                                                    \
    } while (0)

void pc_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "debug" | "info" | "warn" | "error" -> level, or -1. */
int pc_log_parse_level(const char *name);
void pc_log_set_level(int level);
/* path: "-" for stdout, "off" for none, else a file opened for append (created when
 * missing). 0 ok, -1 error with errno set. */
int pc_log_open_access(const char *path);
/* Opens path again for the access log (after a rotation moved the file away: SIGUSR1), in
 * place: lines being written by other threads go to the old file or the new one, whole.
 * 0 done, or nothing to do (off, or stdout); -1 with errno (the old file is kept). */
int pc_log_reopen_access(const char *path);
/* Whether pc_log_open_access(path) would succeed, without creating or changing anything
 * (for --check). 0 yes; -1 no, with errno set. */
int pc_log_check_access(const char *path);
void pc_log_close_access(void);

struct pc_access {
    const char *client;
    const char *method;
    const char *path;
    int status;
    const char *cache;  /* HIT, MISS, BYPASS, PASS, ERROR, ... */
    const char *reason; /* X-Cache-Reason's token, or NULL */
    const char *key;    /* full key or NULL; the line shows a short form */
    double backend_ms;  /* < 0 when the backend was not called */
    double total_ms;
    size_t bytes;
};
void pc_log_access(const struct pc_access *a);

#endif
