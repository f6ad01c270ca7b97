/*
 * log: levelled log lines to stderr and one access line per request, as text or as JSON
 * objects (one a line); request ids (taken from a client, or made).
 * Owns the log level, the format and the access-log stream, all changeable while worker
 * threads log (pc_log_apply); knows nothing of requests beyond the fields handed to
 * pc_log_access().
 */
#ifndef PREDCACHE_LOG_H
#define PREDCACHE_LOG_H

#include <stddef.h>

enum pc_log_level { PC_LOG_DEBUG = 0, PC_LOG_INFO, PC_LOG_WARN, PC_LOG_ERROR };

extern int pc_log_level_current; /* read by the macro (relaxed atomic); set by pc_log_apply */

/* The level is checked before the arguments are evaluated. */
#define pc_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) >= __atomic_load_n(&pc_log_level_current, __ATOMIC_RELAXED))                   \
            pc_log_write((level), __VA_ARGS__);                                                    \
    } while (0)

void pc_log_write(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "debug" | "info" | "warn" | "error" -> level, or -1. */
int pc_log_parse_level(const char *name);

/*
 * Sets the level, the format (json: 1 JSON objects, 0 text) and the access log (path: "-"
 * stdout, "off" none, else a file opened for append, created when missing), at start-up or
 * while other threads log (a reload): each line goes whole to the old target or to the new
 * one, none is written once "off" is applied. The stream is one FILE of the module's, never
 * closed while running: a new target's descriptor takes its place under the stream's lock.
 * Calls are serialised (with pc_log_reopen_access). 0 done; -1 with errno (the path cannot
 * be opened, or the level is not one): then nothing changed.
 */
int pc_log_apply(int level, int json, const char *access_path);
/* Opens path again for the access log (after a rotation moved the file away: SIGUSR1), in
 * place: lines being written by other threads go to the old file or the new one, whole.
 * 0 done, or nothing to do (off, or stdout); -1 with errno (the old file is kept). */
int pc_log_reopen_access(const char *path);
/* Whether pc_log_apply could open path, without creating or changing anything (for
 * --check). 0 yes; -1 no, with errno set. */
int pc_log_check_access(const char *path);
/* The level alone, or the access log alone, as pc_log_apply sets them. */
void pc_log_set_level(int level);
int pc_log_open_access(const char *path);
/* Closes the access log at exit: only once no other thread logs. */
void pc_log_close_access(void);

/* Request ids: a client's X-Request-Id is kept when it is 1 to PC_LOG_ID_MAX printable
 * ASCII characters without a space (pc_log_request_id_ok); else one is made: PC_LOG_ID_NEW
 * lowercase hex digits from a per-thread generator seeded from getrandom (no lock). */
#define PC_LOG_ID_MAX 128
#define PC_LOG_ID_NEW 32
int pc_log_request_id_ok(const char *s);
void pc_log_request_id_new(char out[PC_LOG_ID_NEW + 1]);

struct pc_access {
    const char *id; /* the request id, or NULL */
    const char *client;
    const char *method;
    const char *path;
    const char *query; /* as sent, without '?'; NULL or "" when none */
    const char *route; /* the route's name, or NULL */
    /* the model server called: a [backend NAME]'s name, else the [backend] url; NULL none */
    const char *upstream;
    int status;
    const char *cache;  /* HIT, MISS, BYPASS, PASS, ERROR, ... */
    const char *reason; /* X-Cache-Reason's token, or NULL */
    const char *key;    /* full key or NULL; the line shows a short form */
    size_t items;       /* an item request's item count (key: the first item's); else 0 */
    double backend_ms;  /* < 0 when the backend was not called */
    double total_ms;
    size_t bytes;
};
void pc_log_access(const struct pc_access *a);
/* The calling thread's access lines are flushed when fn(arg) says so (it must lead to
 * pc_log_flush_access from the same thread soon: a worker calls it once the pass of its
 * loop that wrote them is over), instead of each at once. fn NULL: at once again. */
void pc_log_defer_access(void (*fn)(void *arg), void *arg);
/* Writes the calling thread's (and every other's) buffered access lines. */
void pc_log_flush_access(void);

#endif
