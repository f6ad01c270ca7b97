/*
 * config: the option table, the INI parser and the validation pass.
 *
 * Every option is one row of static_options[] (as in redis's config.c): where it lives in
 * struct pc_config, its type, its bounds and its default as text. Three passes read the
 * same table, so that they cannot disagree:
 *
 *   pc_config_defaults   each row's default text  --> opt_apply --> field
 *   pc_config_load       each "key = value" line  --> opt_apply --> field   (parse pass)
 *                        then pc_config_validate                            (validate pass)
 *   pc_config_validate   each field --> opt_format --> opt_apply on a scratch copy
 *                        (so a struct filled in code is checked like a file), then the
 *                        cross-field rules
 *
 * A setter never leaves a field half-written: it checks the whole value first, and a
 * failed load leaves the caller's struct as it was.
 */
#include "predcache/config.h"

#include "predcache/adapter.h"
#include "predcache/buf.h"
#include "predcache/cpuslice.h"
#include "predcache/log.h"
#include "predcache/slots.h"
#include "predcache/routes.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define KIB 1024LL
#define MIB (1024LL * KIB)
#define GIB (1024LL * MIB)

/* Longest line of a conf file, without its line ending. */
#define CFG_LINE_MAX 16384 /* room for a full route list as pc_config_dump writes it */
/* Longest line pc_config_dump emits: a full route list (32 x "METHOD PATTERN, "). */
#define CFG_DUMP_MAX (PC_CFG_MAX_LIST * (sizeof(struct pc_route_rule) + 4) + 64)

enum opt_type {
    OPT_STRING,   /* bounded text; min = shortest length allowed */
    OPT_INT,      /* int within [min, max] */
    OPT_SIZE,     /* size_t bytes within [min, max]; accepts k, m, g suffixes (KiB, MiB, GiB) */
    OPT_HOSTPORT, /* text checked by pc_config_split_hostport */
    OPT_HOST,     /* a host name or address: no scheme, path, port or space */
    OPT_URL,      /* http:// or https:// base URL with a host */
    OPT_LEVEL,    /* debug | info | warn | error */
    OPT_ROUTES,   /* comma-separated "METHOD PATTERN" entries */
    OPT_NAMES,    /* comma-separated names */
    OPT_ROUTE,    /* one "METHOD PATTERN" */
    OPT_BOOL,     /* int 0/1: on|off, yes|no, true|false, 1|0 (any case); written on/off */
    OPT_AUTO_INT, /* int within [min, max], or "auto" (any case), stored as 0 */
    OPT_NUMBER,   /* double within [min, max] (decimal, finite) */
    OPT_CHOICE,   /* int: the index of the value in choice_sets[max] (any case) */
};

#define OPT_SECRET 0x1 /* shown as "********" by pc_config_dump */

struct opt {
    const char *section;
    const char *key;
    enum opt_type type;
    size_t offset;       /* of the field (the array for lists) in struct pc_config */
    size_t size;         /* of the field; of one element for lists */
    size_t count_offset; /* lists only: offset of the entry count */
    long long min;       /* int, size: bounds; string: shortest length (0 or 1) */
    long long max;       /* int, size: bounds; lists: most entries; strings: unused (size) */
    const char *def;     /* the default, as it would be written in the file */
    unsigned flags;
};

#define FIELD(f) offsetof(struct pc_config, f), sizeof(((struct pc_config *)0)->f), 0
#define LIST(f, n)                                                                                 \
    offsetof(struct pc_config, f), sizeof(((struct pc_config *)0)->f[0]),                          \
        offsetof(struct pc_config, n)

/* Timeouts are capped at an hour; 512 MiB is the largest string Redis stores. */
#define HOUR_MS 3600000
#define REDIS_MAX_STRING (512 * MIB)

#define DEFAULT_REPLAY_HEADERS "Content-Type, Inference-Header-Content-Length"
#define DEFAULT_ROUTES                                                                             \
    "POST /predict, POST /v1/models/*:predict, POST /v1/models/*:classify, "                       \
    "POST /v1/models/*:regress, POST /v2/models/*/infer, POST /predictions/*, PUT "                \
    "/predictions/*, "                                                                             \
    "POST /v1/embeddings, POST /v1/chat/completions, POST /v1/completions, POST /api/embed, "      \
    "POST /api/embeddings, POST /api/generate, POST /api/chat, POST /embed, POST /embed_all, "     \
    "POST /embed_sparse, POST /rerank"

/* Sections in the order the file and the dump show them. */
static const char *const sections[] = {"server", "backend", "redis", "cache", "jobs", "log"};
#define N_SECTIONS (sizeof(sections) / sizeof(sections[0]))

/* clang-format off */
/* The names an OPT_CHOICE row takes, NULL-terminated, indexed by the enum it stores. The
 * row's max names its set: an index into choice_sets. */
static const char *const verify_compares[] = {"bytes", "json", NULL}; /* pc_verify_compare */
static const char *const verify_actions[] = {"log", "purge", NULL};   /* pc_verify_action */
static const char *const credentials[] = {"isolate", "shared", "bypass", NULL}; /* pc_credentials */
static const char *const response_ccs[] = {"honour", "ignore", NULL};           /* pc_response_cc */
static const char *const jobs_creds[] = {"refuse", "local", NULL}; /* pc_jobs_credentials */
static const char *const temperatures[] = {"sampling", "greedy", NULL}; /* pc_temperature */
static const char *const log_formats[] = {"text", "json", NULL}; /* pc_log_format */
static const char *const http_clients[] = {"auto", "curl", NULL}; /* pc_http_client */
static const char *const lock_modes[] = {"auto", "always", NULL}; /* pc_lock_mode */
enum { CHOICES_VERIFY_COMPARE, CHOICES_VERIFY_ACTION, CHOICES_CREDENTIALS, CHOICES_RESPONSE_CC,
       CHOICES_JOBS_CREDENTIALS, CHOICES_TEMPERATURE, CHOICES_API, CHOICES_LOG_FORMAT,
       CHOICES_HTTP_CLIENT, CHOICES_LOCK };
static const char *const *const choice_sets[] = {verify_compares, verify_actions, credentials,
                                                 response_ccs, jobs_creds, temperatures,
                                                 pc_adapter_names, log_formats, http_clients,
                                                 lock_modes};

static const struct opt static_options[] = {
    /* section  key                   type          field                               min  max               default                  flags */
    {"server",  "listen",             OPT_HOSTPORT, FIELD(listen),                      1,   0,                "0.0.0.0:8080",          0},
    {"server",  "admin_listen",       OPT_HOSTPORT, FIELD(admin_listen),                1,   0,                "127.0.0.1:9090",        0},
    {"server",  "grpc_listen",        OPT_HOSTPORT, FIELD(grpc_listen),                 0,   0,                "",                      0},
    {"server",  "max_body_bytes",     OPT_SIZE,     FIELD(max_body_bytes),              1,   GIB,              "16m",                   0},
    {"server",  "max_header_bytes",   OPT_SIZE,     FIELD(max_header_bytes),            KIB, MIB,              "16k",                   0},
    {"server",  "request_timeout_ms", OPT_INT,      FIELD(request_timeout_ms),          1,   HOUR_MS,          "60000",                 0},
    {"server",  "idle_timeout_ms",    OPT_INT,      FIELD(idle_timeout_ms),             1,   HOUR_MS,          "30000",                 0},
    {"server",  "drain_timeout_ms",   OPT_INT,      FIELD(drain_timeout_ms),            0,   HOUR_MS,          "10000",                 0},
    {"server",  "ready_requires_redis", OPT_BOOL,   FIELD(ready_requires_redis),        0,   1,                "off",                   0},
    {"server",  "max_connections",    OPT_INT,      FIELD(max_connections),             1,   1000000,          "10000",                 0},
    {"server",  "max_input_bytes",    OPT_SIZE,     FIELD(max_input_bytes),             0,   64 * GIB,         "256m",                  0},
    {"server",  "max_output_bytes",   OPT_SIZE,     FIELD(max_output_bytes),            0,   64 * GIB,         "64m",                   0},
    {"server",  "admin_token",        OPT_STRING,   FIELD(admin_token),                 0,   0,                "",                      OPT_SECRET},
    {"server",  "workers",            OPT_AUTO_INT, FIELD(workers),                     1,   64,               "auto",                  0},
    {"server",  "sched_slice_us",     OPT_INT,      FIELD(sched_slice_us),              0,   PC_CPUSLICE_MAX_US, "20000",               0},

    {"backend", "url",                OPT_URL,      FIELD(backend_url),                 0,   0,                "http://127.0.0.1:8501", 0},
    {"backend", "cache_id",           OPT_STRING,   FIELD(backend_cache_id),            0,   0,                "",                      0},
    {"backend", "grpc_url",           OPT_STRING,   FIELD(backend_grpc_url),            0,   0,                "",                      0},
    {"backend", "grpc_health_path",   OPT_STRING,   FIELD(backend_grpc_health_path),    0,   0,                "",                      0},
    {"backend", "connect_timeout_ms", OPT_INT,      FIELD(backend_connect_timeout_ms),  1,   HOUR_MS,          "1000",                  0},
    {"backend", "timeout_ms",         OPT_INT,      FIELD(backend_timeout_ms),          1,   HOUR_MS,          "30000",                 0},
    {"backend", "idle_timeout_ms",    OPT_INT,      FIELD(backend_idle_timeout_ms),     1,   HOUR_MS,          "30000",                 0},
    {"backend", "max_response_bytes", OPT_SIZE,     FIELD(backend_max_response_bytes),  1,   GIB,              "64m",                   0},
    {"backend", "max_in_flight",      OPT_INT,      FIELD(backend_max_in_flight),       0,   1000000,          "1024",                  0},
    {"backend", "health_path",        OPT_STRING,   FIELD(backend_health_path),         0,   0,                "",                      0},
    {"backend", "health_interval_ms", OPT_INT,      FIELD(backend_health_interval_ms),  10,  HOUR_MS,          "2000",                  0},
    {"backend", "health_fails",       OPT_INT,      FIELD(backend_health_fails),        1,   1000,             "3",                     0},
    {"backend", "health_passes",      OPT_INT,      FIELD(backend_health_passes),       1,   1000,             "2",                     0},
    {"backend", "http_client",        OPT_CHOICE,   FIELD(backend_http_client),         0,   CHOICES_HTTP_CLIENT, "auto",               0},

    {"redis",   "host",               OPT_HOST,     FIELD(redis_host),                  1,   0,                "127.0.0.1",             0},
    {"redis",   "port",               OPT_INT,      FIELD(redis_port),                  1,   65535,            "6379",                  0},
    {"redis",   "username",           OPT_STRING,   FIELD(redis_username),              0,   0,                "",                      0},
    {"redis",   "password",           OPT_STRING,   FIELD(redis_password),              0,   0,                "",                      OPT_SECRET},
    {"redis",   "tls",                OPT_BOOL,     FIELD(redis_tls),                   0,   1,                "off",                   0},
    {"redis",   "tls_ca_file",        OPT_STRING,   FIELD(redis_tls_ca_file),           0,   0,                "",                      0},
    {"redis",   "tls_cert_file",      OPT_STRING,   FIELD(redis_tls_cert_file),         0,   0,                "",                      0},
    {"redis",   "tls_key_file",       OPT_STRING,   FIELD(redis_tls_key_file),          0,   0,                "",                      0},
    {"redis",   "tls_server_name",    OPT_STRING,   FIELD(redis_tls_server_name),       0,   0,                "",                      0},
    {"redis",   "tls_verify",         OPT_BOOL,     FIELD(redis_tls_verify),            0,   1,                "on",                    0},
    {"redis",   "sentinels",          OPT_STRING,   FIELD(redis_sentinels),             0,   0,                "",                      0},
    {"redis",   "sentinel_master",    OPT_STRING,   FIELD(redis_sentinel_master),       0,   0,                "",                      0},
    {"redis",   "sentinel_username",  OPT_STRING,   FIELD(redis_sentinel_username),     0,   0,                "",                      0},
    {"redis",   "sentinel_password",  OPT_STRING,   FIELD(redis_sentinel_password),     0,   0,                "",                      OPT_SECRET},
    {"redis",   "cluster",            OPT_BOOL,     FIELD(redis_cluster),               0,   1,                "off",                   0},
    {"redis",   "nodes",              OPT_STRING,   FIELD(redis_nodes),                 0,   0,                "",                      0},
    {"redis",   "db",                 OPT_INT,      FIELD(redis_db),                    0,   INT_MAX,          "0",                     0},
    {"redis",   "timeout_ms",         OPT_INT,      FIELD(redis_timeout_ms),            1,   60000,            "100",                   0},
    {"redis",   "max_pending",        OPT_INT,      FIELD(redis_max_pending),           0,   10000000,         "10000",                 0},
    {"redis",   "max_pending_bytes",  OPT_SIZE,     FIELD(redis_max_pending_bytes),     0,   64 * GIB,         "256m",                  0},

    {"cache",   "ttl_s",              OPT_INT,      FIELD(ttl_s),                       1,   INT_MAX,          "86400",                 0},
    {"cache",   "max_value_bytes",    OPT_SIZE,     FIELD(max_value_bytes),             1,   REDIS_MAX_STRING, "4m",                    0},
    {"cache",   "namespace",          OPT_STRING,   FIELD(namespace_),                  0,   0,                "default",               0},
    {"cache",   "key_prefix",         OPT_STRING,   FIELD(key_prefix),                  0,   0,                "predcache:",            0},
    {"cache",   "routes",             OPT_ROUTES,   LIST(routes, n_routes),             0,   PC_CFG_MAX_LIST,  DEFAULT_ROUTES,          0},
    {"cache",   "input_fields",       OPT_NAMES,    LIST(input_fields, n_input_fields), 0,   PC_CFG_MAX_LIST,  "",                      0},
    {"cache",   "ignore_fields",      OPT_NAMES,    LIST(ignore_fields, n_ignore_fields), 0, PC_CFG_MAX_LIST,  "auto",                  0},
    {"cache",   "path_field",         OPT_STRING,   FIELD(path_field),                  0,   0,                "file_path",             0},
    {"cache",   "credentials",        OPT_CHOICE,   FIELD(credentials),                 0,   CHOICES_CREDENTIALS, "isolate",            0},
    {"cache",   "credential_headers", OPT_NAMES,    LIST(credential_headers, n_credential_headers), 0, PC_CFG_MAX_LIST, "",         0},
    {"cache",   "vary",               OPT_NAMES,    LIST(vary, n_vary),                 0,   PC_CFG_MAX_LIST,  "",                      0},
    {"cache",   "response_cache_control", OPT_CHOICE, FIELD(response_cache_control),    0,   CHOICES_RESPONSE_CC, "honour",             0},
    {"cache",   "absent_temperature", OPT_CHOICE,   FIELD(absent_temperature),          0,   CHOICES_TEMPERATURE, "sampling",           0},
    {"cache",   "replay_headers",     OPT_NAMES,    LIST(replay_headers, n_replay_headers), 0, 8,              DEFAULT_REPLAY_HEADERS,  0},
    {"cache",   "per_instance",       OPT_BOOL,     FIELD(per_instance),                0,   1,                "on",                    0},
    {"cache",   "allow_client_controls", OPT_BOOL,  FIELD(allow_client_controls),       0,   1,                "on",                    0},
    {"cache",   "client_controls_token", OPT_STRING, FIELD(client_controls_token),      0,   0,                "",                      OPT_SECRET},
    {"cache",   "max_batch_instances", OPT_INT,     FIELD(max_batch_instances),         1,   10000000,         "10000",                 0},
    {"cache",   "grace_s",            OPT_INT,      FIELD(grace_s),                     0,   INT_MAX / 2,      "3600",                  0},
    {"cache",   "lock_timeout_ms",    OPT_INT,      FIELD(lock_timeout_ms),             0,   HOUR_MS,          "5000",                  0},
    {"cache",   "lock",               OPT_CHOICE,   FIELD(lock_mode),                   0,   CHOICES_LOCK,     "auto",                  0},
    {"cache",   "max_ttl_s",          OPT_INT,      FIELD(max_ttl_s),                   1,   INT_MAX / 2,      "604800",                0},
    {"cache",   "version_refresh_s",  OPT_INT,      FIELD(version_refresh_s),           0,   86400,            "30",                    0},
    {"cache",   "generation_refresh_ms", OPT_INT,   FIELD(generation_refresh_ms),       10,  HOUR_MS,          "1000",                  0},
    {"cache",   "l1_max_bytes",       OPT_SIZE,     FIELD(l1_max_bytes),                0,   64 * GIB,         "64m",                   0},
    {"cache",   "key_memo_bytes",     OPT_SIZE,     FIELD(key_memo_bytes),              0,   64 * GIB,         "32m",                   0},
    {"cache",   "l1_ttl_ms",          OPT_INT,      FIELD(l1_ttl_ms),                   1,   HOUR_MS,          "5000",                  0},
    {"cache",   "verify_sample",      OPT_NUMBER,   FIELD(verify_sample),               0,   1,                "0",                     0},
    {"cache",   "verify_compare",     OPT_CHOICE,   FIELD(verify_compare),              0,   CHOICES_VERIFY_COMPARE, "bytes",           0},
    {"cache",   "verify_float_tolerance", OPT_NUMBER, FIELD(verify_float_tolerance),    0,   1000000,          "0",                     0},
    {"cache",   "verify_action",      OPT_CHOICE,   FIELD(verify_action),               0,   CHOICES_VERIFY_ACTION, "log",              0},

    {"jobs",    "enabled",            OPT_BOOL,     FIELD(jobs_enabled),                0,   1,                "on",                    0},
    {"jobs",    "result_ttl_s",       OPT_INT,      FIELD(jobs_result_ttl_s),           1,   INT_MAX,          "3600",                  0},
    {"jobs",    "claim_after_ms",     OPT_INT,      FIELD(jobs_claim_after_ms),         100, HOUR_MS,          "30000",                 0},
    {"jobs",    "max_queue",          OPT_INT,      FIELD(jobs_max_queue),              1,   100000000,        "10000",                 0},
    {"jobs",    "concurrency",        OPT_INT,      FIELD(jobs_concurrency),            0,   1024,             "8",                     0},
    {"jobs",    "async_prefix",       OPT_STRING,   FIELD(jobs_async_prefix),           0,   0,                "/async",                0},
    {"jobs",    "compat",             OPT_BOOL,     FIELD(jobs_compat),                 0,   1,                "off",                   0},
    {"jobs",    "stream",             OPT_STRING,   FIELD(jobs_stream),                 0,   0,                "",                      0},
    {"jobs",    "credentials",        OPT_CHOICE,   FIELD(jobs_credentials),            0,   CHOICES_JOBS_CREDENTIALS, "local",         0},

    {"log",     "level",              OPT_LEVEL,    FIELD(log_level),                   0,   0,                "info",                  0},
    {"log",     "access_log",         OPT_STRING,   FIELD(access_log),                  1,   0,                "-",                     0},
    {"log",     "format",             OPT_CHOICE,   FIELD(log_format),                  0,   CHOICES_LOG_FORMAT, "text",                0},
};
/* clang-format on */
#define N_OPTIONS (sizeof(static_options) / sizeof(static_options[0]))

/*
 * Named sections. Their rows point into struct pc_backend_cfg / pc_route_cfg; a row's
 * index is its bit in the struct's `set` mask. The default column is empty: a key left
 * out takes the value of the [backend] or [cache] section (see inherit_named()).
 */
#define BFIELD(f) offsetof(struct pc_backend_cfg, f), sizeof(((struct pc_backend_cfg *)0)->f), 0
#define RFIELD(f) offsetof(struct pc_route_cfg, f), sizeof(((struct pc_route_cfg *)0)->f), 0
#define RLIST(f, n)                                                                                \
    offsetof(struct pc_route_cfg, f), sizeof(((struct pc_route_cfg *)0)->f[0]),                    \
        offsetof(struct pc_route_cfg, n)

/* clang-format off */
static const struct opt backend_options[] = {
    {"backend", "url",                OPT_URL,      BFIELD(url),                        0,   0,                NULL, 0},
    {"backend", "connect_timeout_ms", OPT_INT,      BFIELD(connect_timeout_ms),         1,   HOUR_MS,          NULL, 0},
    {"backend", "timeout_ms",         OPT_INT,      BFIELD(timeout_ms),                 1,   HOUR_MS,          NULL, 0},
    {"backend", "idle_timeout_ms",    OPT_INT,      BFIELD(idle_timeout_ms),            1,   HOUR_MS,          NULL, 0},
    {"backend", "max_response_bytes", OPT_SIZE,     BFIELD(max_response_bytes),         1,   GIB,              NULL, 0},
    {"backend", "max_in_flight",      OPT_INT,      BFIELD(max_in_flight),              0,   1000000,          NULL, 0},
    {"backend", "health_path",        OPT_STRING,   BFIELD(health_path),                0,   0,                NULL, 0},
    {"backend", "health_interval_ms", OPT_INT,      BFIELD(health_interval_ms),         10,  HOUR_MS,          NULL, 0},
    {"backend", "health_fails",       OPT_INT,      BFIELD(health_fails),               1,   1000,             NULL, 0},
    {"backend", "health_passes",      OPT_INT,      BFIELD(health_passes),              1,   1000,             NULL, 0},
    {"backend", "cache_id",           OPT_STRING,   BFIELD(cache_id),                   0,   0,                NULL, 0},
    {"backend", "http_client",        OPT_CHOICE,   BFIELD(http_client),                0,   CHOICES_HTTP_CLIENT, NULL, 0},
};
enum { B_URL, B_CONNECT, B_TIMEOUT, B_IDLE, B_MAXRESP, B_INFLIGHT, B_HPATH, B_HINTERVAL, B_HFAILS, B_HPASSES,
       B_CACHE_ID, B_HTTP_CLIENT };

static const struct opt route_options[] = {
    {"route",   "match",              OPT_ROUTE,    RFIELD(match),                      0,   0,                NULL, 0},
    {"route",   "backend",            OPT_STRING,   RFIELD(backend),                    0,   0,                NULL, 0},
    {"route",   "cache",              OPT_BOOL,     RFIELD(cache),                      0,   1,                NULL, 0},
    {"route",   "ttl_s",              OPT_INT,      RFIELD(ttl_s),                      1,   INT_MAX,          NULL, 0},
    {"route",   "input_fields",       OPT_NAMES,    RLIST(input_fields, n_input_fields), 0,  PC_CFG_MAX_LIST,  NULL, 0},
    {"route",   "path_field",         OPT_STRING,   RFIELD(path_field),                 0,   0,                NULL, 0},
    {"route",   "per_instance",       OPT_BOOL,     RFIELD(per_instance),               0,   1,                NULL, 0},
    {"route",   "credentials",        OPT_CHOICE,   RFIELD(credentials),                0,   CHOICES_CREDENTIALS, NULL, 0},
    {"route",   "ignore_fields",      OPT_NAMES,    RLIST(ignore_fields, n_ignore_fields), 0, PC_CFG_MAX_LIST, NULL, 0},
    {"route",   "vary",               OPT_NAMES,    RLIST(vary, n_vary),                0,   PC_CFG_MAX_LIST,  NULL, 0},
    {"route",   "response_cache_control", OPT_CHOICE, RFIELD(response_cache_control),   0,   CHOICES_RESPONSE_CC, NULL, 0},
    {"route",   "api",                OPT_CHOICE,   RFIELD(api),                        0,   CHOICES_API,      NULL, 0},
    {"route",   "absent_temperature", OPT_CHOICE,   RFIELD(absent_temperature),         0,   CHOICES_TEMPERATURE, NULL, 0},
};
enum { R_MATCH, R_BACKEND, R_CACHE, R_TTL, R_INPUTS, R_PATHFIELD, R_PERINST, R_CREDS, R_IGNORE,
       R_VARY, R_RCC, R_API, R_TEMP };
_Static_assert(PC_ROUTE_SET_RCC == 1u << R_RCC, "config.h names the bit of response_cache_control");
/* clang-format on */
#define N_BACKEND_OPTIONS (sizeof(backend_options) / sizeof(backend_options[0]))
#define N_ROUTE_OPTIONS (sizeof(route_options) / sizeof(route_options[0]))

static const char *const route_methods[] = {"GET",   "POST", "PUT",     "DELETE",
                                            "PATCH", "HEAD", "OPTIONS", "*"};

static void fmt(char *out, size_t outlen, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *out, size_t outlen, const char *f, ...)
{
    if (out == NULL || outlen == 0)
        return;
    va_list ap;
    va_start(ap, f);
    vsnprintf(out, outlen, f, ap);
    va_end(ap);
}

static const struct opt *opt_find(const char *section, const char *key)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (strcmp(static_options[i].section, section) == 0 &&
            strcmp(static_options[i].key, key) == 0)
            return &static_options[i];
    }
    return NULL;
}

static int section_known(const char *name)
{
    for (size_t i = 0; i < N_SECTIONS; i++) {
        if (strcmp(sections[i], name) == 0)
            return 1;
    }
    return 0;
}

static int has_control_n(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return 1;
    }
    return 0;
}

static int has_control(const char *s)
{
    return has_control_n(s, strlen(s));
}

/* "16m" for exact multiples, else plain bytes: what the file would say. */
static void format_size(long long v, char *out, size_t outlen)
{
    if (v != 0 && v % GIB == 0)
        fmt(out, outlen, "%lldg", v / GIB);
    else if (v != 0 && v % MIB == 0)
        fmt(out, outlen, "%lldm", v / MIB);
    else if (v != 0 && v % KIB == 0)
        fmt(out, outlen, "%lldk", v / KIB);
    else
        fmt(out, outlen, "%lld", v);
}

/* Decimal integer, optional '-', nothing else (no spaces, no '+', no hex). */
static int parse_int(const char *s, long long *out)
{
    const char *d = s[0] == '-' ? s + 1 : s;
    if (!isdigit((unsigned char)d[0]))
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

/* Digits with an optional k, m or g suffix (KiB, MiB, GiB), either case. */
static int parse_size(const char *s, unsigned long long *out)
{
    if (!isdigit((unsigned char)s[0]))
        return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned long long mult = 1;
    switch (tolower((unsigned char)*end)) {
    case '\0':
        break;
    case 'k':
        mult = KIB;
        break;
    case 'm':
        mult = MIB;
        break;
    case 'g':
        mult = GIB;
        break;
    default:
        return -1;
    }
    if (*end != '\0' && end[1] != '\0')
        return -1;
    if (v > ULLONG_MAX / mult)
        return -1;
    *out = v * mult;
    return 0;
}

/*
 * Checks a base URL: http:// or https://, a host (plain, or [v6]) with an optional port,
 * an optional path; no spaces, query or fragment.
 */
/* A host name or address as a socket takes it: a URL, a path, a port or a space in it is a
 * conf that passes --check and then fails at every connect. 0 ok; -1 with why. */
static int check_host(const char *s, char *why, size_t whylen)
{
    const char *scheme = strstr(s, "://");
    if (scheme != NULL) {
        const char *h = scheme + 3, *at = strchr(h, '@');
        if (at != NULL && at < h + strcspn(h, "/"))
            h = at + 1; /* user:password@ */
        size_t hl = strcspn(h, "/:");
        fmt(why, whylen,
            "'%s' is a URL: write the host alone (host = %.*s; port, username, "
            "password, db and tls have options of their own)",
            s, (int)hl, h);
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p) || *p == '/' || *p == '@' || *p == '?') {
            fmt(why, whylen, "'%s' is not a host name or address", s);
            return -1;
        }
    }
    const char *colon = strchr(s, ':');
    if (colon != NULL && strchr(colon + 1, ':') == NULL && s[0] != '[') {
        fmt(why, whylen, "'%s' holds a port: write host = %.*s and port = %s", s, (int)(colon - s),
            s, colon + 1);
        return -1;
    }
    return 0;
}

/* The edit distance of a and b (insertions, deletions, substitutions and swaps of two
 * neighbours, case aside), at most 64 characters each. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 64 || lb > 64)
        return SIZE_MAX;
    unsigned char d[65][65];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (unsigned char)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (unsigned char)j;
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            unsigned v = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1u < v)
                v = d[i - 1][j] + 1u;
            if (d[i][j - 1] + 1u < v)
                v = d[i][j - 1] + 1u;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1u < v)
                v = d[i - 2][j - 2] + 1u;
            d[i][j] = (unsigned char)v;
        }
    }
    return d[la][lb];
}

/* The known name closest to name among names[0..n) (stride bytes apart, the name a
 * const char * at offset), when close enough to be a typo (at most a third of it
 * changed, at least one character; or the name with its unit left out); else NULL. */
static const char *closest_name(const char *name, const void *names, size_t n, size_t stride,
                                size_t offset, const char *section, size_t section_offset)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX, len = strlen(name);
    size_t bound = len / 3 > 1 ? len / 3 : 1;
    for (size_t i = 0; i < n; i++) {
        const char *rec = (const char *)names + i * stride;
        if (section != NULL && strcmp(*(const char *const *)(rec + section_offset), section) != 0)
            continue;
        const char *cand = *(const char *const *)(rec + offset);
        size_t d = edit_distance(name, cand);
        if (strncasecmp(cand, name, len) == 0 && cand[len] == '_')
            d = 1; /* the unit left out: "timeout" for "timeout_ms" */
        if (d <= bound && d < best_d) {
            best_d = d;
            best = cand;
        }
    }
    return best;
}

/* " (did you mean 'x'?)" for an unknown key of section in table (n rows), or "". */
static void did_you_mean(const struct opt *table, size_t n, const char *section, const char *key,
                         char *out, size_t outlen)
{
    const char *c = closest_name(key, table, n, sizeof table[0], offsetof(struct opt, key), section,
                                 offsetof(struct opt, section));
    fmt(out, outlen, c != NULL ? " (did you mean '%s'?)" : "%s", c != NULL ? c : "");
}

static int check_url(const char *s, char *why, size_t whylen)
{
    size_t skip;
    if (s[0] == '\0') {
        fmt(why, whylen, "must not be empty");
        return -1;
    }
    if (strncasecmp(s, "http://", 7) == 0) {
        skip = 7;
    } else if (strncasecmp(s, "https://", 8) == 0) {
        skip = 8;
    } else {
        fmt(why, whylen, "'%s' must start with http:// or https://", s);
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if (isspace((unsigned char)*p) || *p == '?' || *p == '#') {
            fmt(why, whylen, "'%s' must be a base URL (no spaces, query or fragment)", s);
            return -1;
        }
    }
    const char *auth = s + skip;
    size_t alen = strcspn(auth, "/");
    const char *at = memchr(auth, '@', alen);
    while (at != NULL) { /* skip user:password@ (last '@' of the authority) */
        alen -= (size_t)(at + 1 - auth);
        auth = at + 1;
        at = memchr(auth, '@', alen);
    }
    char hostport[PC_CFG_STR];
    if (alen == 0 || alen >= sizeof hostport) {
        fmt(why, whylen, "'%s' has no host", s);
        return -1;
    }
    memcpy(hostport, auth, alen);
    hostport[alen] = '\0';
    char host[PC_CFG_STR];
    int port;
    const char *close = strchr(hostport, ']');
    const char *colon = strrchr(close ? close : hostport, ':');
    if (colon != NULL) {
        if (hostport[0] == ':' || pc_config_split_hostport(hostport, host, sizeof host, &port) ||
            port == 0) {
            fmt(why, whylen, "'%s' has a bad host or port", s);
            return -1;
        }
    } else if (hostport[0] == '[' ? (close == NULL || close[1] != '\0' || close == hostport + 1)
                                  : strpbrk(hostport, "[]") != NULL) {
        fmt(why, whylen, "'%s' has a bad host", s);
        return -1;
    }
    return 0;
}

/*
 * One entry of a comma-separated list starting at P: trimmed in [*start, *start + *len).
 * Returns where the next entry starts, or NULL after the last one.
 */
static const char *list_next(const char *p, const char **start, size_t *len)
{
    const char *comma = strchr(p, ',');
    const char *end = comma ? comma : p + strlen(p);
    while (p < end && isspace((unsigned char)*p))
        p++;
    while (end > p && isspace((unsigned char)end[-1]))
        end--;
    *start = p;
    *len = (size_t)(end - p);
    return comma ? comma + 1 : NULL;
}

static int list_is_blank(const char *s)
{
    for (; *s; s++) {
        if (!isspace((unsigned char)*s))
            return 0;
    }
    return 1;
}

/* One "METHOD PATTERN" entry of the routes list. */
static int parse_route(const char *e, size_t len, struct pc_route_rule *r, char *why, size_t whylen)
{
    size_t mlen = 0;
    while (mlen < len && !isspace((unsigned char)e[mlen]))
        mlen++;
    size_t p = mlen;
    while (p < len && isspace((unsigned char)e[p]))
        p++;
    const char *pat = e + p;
    size_t plen = len - p;
    if (plen == 0 || memchr(pat, ' ', plen) != NULL || memchr(pat, '\t', plen) != NULL) {
        fmt(why, whylen, "route '%.*s' must be 'METHOD PATTERN'", (int)len, e);
        return -1;
    }
    size_t i;
    for (i = 0; i < sizeof route_methods / sizeof route_methods[0]; i++) {
        if (strlen(route_methods[i]) == mlen && strncasecmp(route_methods[i], e, mlen) == 0)
            break;
    }
    if (i == sizeof route_methods / sizeof route_methods[0]) {
        fmt(why, whylen,
            "route '%.*s': method '%.*s' is not one of GET POST PUT DELETE PATCH HEAD "
            "OPTIONS *",
            (int)len, e, (int)mlen, e);
        return -1;
    }
    if (pat[0] != '/') {
        fmt(why, whylen, "route '%.*s': pattern must start with '/'", (int)len, e);
        return -1;
    }
    if (plen >= sizeof r->pattern) {
        fmt(why, whylen, "route '%.*s': pattern too long (at most %zu bytes)", (int)len, e,
            sizeof r->pattern - 1);
        return -1;
    }
    if (has_control_n(pat, plen)) {
        fmt(why, whylen, "route '%.*s': control character in pattern", (int)len, e);
        return -1;
    }
    memset(r, 0, sizeof *r);
    memcpy(r->method, route_methods[i], strlen(route_methods[i]));
    memcpy(r->pattern, pat, plen);
    return 0;
}

/* An empty (or blank) value is an empty list; setting a list replaces it whole. */
static int set_routes(const struct opt *o, void *cfg, const char *v, char *why, size_t whylen)
{
    struct pc_route_rule tmp[PC_CFG_MAX_LIST];
    size_t n = 0;
    memset(tmp, 0, sizeof tmp);
    for (const char *p = list_is_blank(v) ? NULL : v; p != NULL;) {
        const char *e;
        size_t len;
        p = list_next(p, &e, &len);
        if (len == 0) {
            fmt(why, whylen, "empty entry in the list");
            return -1;
        }
        if (n == (size_t)o->max) {
            fmt(why, whylen, "too many routes (at most %lld)", o->max);
            return -1;
        }
        if (parse_route(e, len, &tmp[n], why, whylen) != 0)
            return -1;
        n++;
    }
    memcpy((char *)cfg + o->offset, tmp, sizeof tmp);
    *(size_t *)((char *)cfg + o->count_offset) = n;
    return 0;
}

static int set_names(const struct opt *o, void *cfg, const char *v, char *why, size_t whylen)
{
    char tmp[PC_CFG_MAX_LIST][sizeof((struct pc_config *)0)->input_fields[0]];
    size_t n = 0;
    memset(tmp, 0, sizeof tmp);
    for (const char *p = list_is_blank(v) ? NULL : v; p != NULL;) {
        const char *e;
        size_t len;
        p = list_next(p, &e, &len);
        if (len == 0) {
            fmt(why, whylen, "empty entry in the list");
            return -1;
        }
        if (n == (size_t)o->max) {
            fmt(why, whylen, "too many names (at most %lld)", o->max);
            return -1;
        }
        if (len >= o->size) {
            fmt(why, whylen, "name '%.*s' too long (at most %zu bytes)", (int)len, e, o->size - 1);
            return -1;
        }
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)e[i];
            if (isspace(c) || c < 0x20 || c == 0x7f) {
                fmt(why, whylen, "name '%.*s' must not contain spaces", (int)len, e);
                return -1;
            }
        }
        memcpy(tmp[n], e, len);
        n++;
    }
    memcpy((char *)cfg + o->offset, tmp, sizeof tmp);
    *(size_t *)((char *)cfg + o->count_offset) = n;
    return 0;
}

/* Checks VALUE for option O and stores it; on error the field is left as it was. */
static int opt_apply(const struct opt *o, void *cfg, const char *v, char *why, size_t whylen)
{
    char *field = (char *)cfg + o->offset;
    size_t len = strlen(v);
    long long iv;
    unsigned long long uv;
    char lo[32], hi[32];

    switch (o->type) {
    case OPT_STRING:
    case OPT_HOST:
    case OPT_HOSTPORT:
    case OPT_URL:
        if (len >= o->size) {
            fmt(why, whylen, "too long (%zu bytes, at most %zu)", len, o->size - 1);
            return -1;
        }
        if (len < (size_t)o->min) {
            fmt(why, whylen, "must not be empty");
            return -1;
        }
        if (has_control(v)) {
            fmt(why, whylen, "control character in value");
            return -1;
        }
        if (o->type == OPT_HOST && check_host(v, why, whylen) != 0)
            return -1;
        if (o->type == OPT_HOSTPORT && len > 0 && pc_config_split_hostport(v, NULL, 0, NULL) != 0) {
            fmt(why, whylen, "'%s' is not host:port, [ipv6]:port or :port (port 0..65535)", v);
            return -1;
        }
        if (o->type == OPT_URL) {
            if (check_url(v, why, whylen) != 0)
                return -1;
            /* Drop trailing slashes of the path, so that base + "/v1/..." joins cleanly. */
            const char *path = strchr(strstr(v, "://") + 3, '/');
            while (path != NULL && len > (size_t)(path - v) && v[len - 1] == '/')
                len--;
        }
        memset(field, 0, o->size);
        memcpy(field, v, len);
        return 0;

    case OPT_AUTO_INT:
        if (o->type == OPT_AUTO_INT && strcasecmp(v, "auto") == 0) {
            *(int *)field = 0;
            return 0;
        }
        /* fall through */
    case OPT_INT:
        if (parse_int(v, &iv) != 0) {
            fmt(why, whylen,
                o->type == OPT_AUTO_INT ? "'%s' is not auto or an integer"
                                        : "'%s' is not an integer",
                v);
            return -1;
        }
        if (iv < o->min || iv > o->max) {
            fmt(why, whylen, "%s is out of range (%lld..%lld)", v, o->min, o->max);
            return -1;
        }
        *(int *)field = (int)iv;
        return 0;

    case OPT_SIZE:
        if (parse_size(v, &uv) != 0) {
            fmt(why, whylen, "'%s' is not a size (bytes, or a number with k, m or g)", v);
            return -1;
        }
        if (uv < (unsigned long long)o->min || uv > (unsigned long long)o->max) {
            format_size(o->min, lo, sizeof lo);
            format_size(o->max, hi, sizeof hi);
            fmt(why, whylen, "%s is out of range (%s..%s)", v, lo, hi);
            return -1;
        }
        *(size_t *)field = (size_t)uv;
        return 0;

    case OPT_LEVEL: {
        char lower[16];
        size_t i;
        for (i = 0; i < len && i < sizeof lower - 1; i++)
            lower[i] = (char)tolower((unsigned char)v[i]);
        lower[i] = '\0';
        if (len >= sizeof lower || pc_log_parse_level(lower) < 0) {
            fmt(why, whylen, "'%s' must be one of debug, info, warn, error", v);
            return -1;
        }
        memset(field, 0, o->size);
        memcpy(field, lower, strlen(lower));
        return 0;
    }

    case OPT_ROUTES:
        return set_routes(o, cfg, v, why, whylen);

    case OPT_NAMES:
        return set_names(o, cfg, v, why, whylen);

    case OPT_ROUTE:
        return parse_route(v, len, (struct pc_route_rule *)field, why, whylen);

    case OPT_NUMBER: {
        char *end;
        errno = 0;
        double d = len > 0 && len < 64 ? strtod(v, &end) : 0;
        if (len == 0 || len >= 64 || *end != '\0' || errno != 0 || d != d ||
            strspn(v, "0123456789.eE+-") != len) {
            fmt(why, whylen, "'%s' is not a decimal number", v);
            return -1;
        }
        if (d < (double)o->min || d > (double)o->max) {
            fmt(why, whylen, "%s is out of range (%lld..%lld)", v, o->min, o->max);
            return -1;
        }
        *(double *)field = d;
        return 0;
    }

    case OPT_CHOICE: {
        const char *const *choices = choice_sets[o->max];
        struct pc_buf names;
        pc_buf_init(&names);
        for (int i = 0; choices[i] != NULL; i++) {
            if (strcasecmp(v, choices[i]) == 0) {
                pc_buf_release(&names);
                *(int *)field = i;
                return 0;
            }
            pc_buf_printf(&names, "%s%s", i ? ", " : "", choices[i]);
        }
        fmt(why, whylen, "'%s' must be one of %s", v, names.data ? names.data : "");
        pc_buf_release(&names);
        return -1;
    }

    case OPT_BOOL: {
        static const char *const yes[] = {"on", "yes", "true", "1"};
        static const char *const no[] = {"off", "no", "false", "0"};
        for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
            if (strcasecmp(v, yes[i]) == 0 || strcasecmp(v, no[i]) == 0) {
                *(int *)field = strcasecmp(v, yes[i]) == 0;
                return 0;
            }
        }
        fmt(why, whylen, "'%s' must be on or off (also yes/no, true/false, 1/0)", v);
        return -1;
    }
    }
    fmt(why, whylen, "unknown option type");
    return -1;
}

/* Writes the value of option O as the file would say it (password in clear). */
static void opt_format(const struct opt *o, const void *cfg, char *out, size_t outlen)
{
    const char *field = (const char *)cfg + o->offset;
    size_t used = 0;
    size_t count = 0;
    if (o->type == OPT_ROUTES || o->type == OPT_NAMES) {
        count = *(const size_t *)((const char *)cfg + o->count_offset);
        count = count < PC_CFG_MAX_LIST ? count : PC_CFG_MAX_LIST;
    }
    out[0] = '\0';

    switch (o->type) {
    case OPT_STRING:
    case OPT_HOST:
    case OPT_HOSTPORT:
    case OPT_URL:
    case OPT_LEVEL:
        fmt(out, outlen, "%.*s", (int)strnlen(field, o->size), field);
        break;
    case OPT_INT:
        fmt(out, outlen, "%d", *(const int *)field);
        break;
    case OPT_AUTO_INT:
        if (*(const int *)field == 0)
            fmt(out, outlen, "auto");
        else
            fmt(out, outlen, "%d", *(const int *)field);
        break;
    case OPT_SIZE:
        format_size((long long)*(const size_t *)field, out, outlen);
        break;
    case OPT_BOOL:
        fmt(out, outlen, "%s", *(const int *)field ? "on" : "off");
        break;
    case OPT_NUMBER:
        fmt(out, outlen, "%.17g", *(const double *)field);
        break;
    case OPT_CHOICE: {
        const char *const *choices = choice_sets[o->max];
        int i = *(const int *)field;
        int n = 0;
        while (choices[n] != NULL)
            n++;
        fmt(out, outlen, "%s", i >= 0 && i < n ? choices[i] : "?");
        break;
    }
    case OPT_ROUTE: {
        const struct pc_route_rule *r = (const struct pc_route_rule *)field;
        fmt(out, outlen, "%.*s %.*s", (int)strnlen(r->method, sizeof r->method), r->method,
            (int)strnlen(r->pattern, sizeof r->pattern), r->pattern);
        break;
    }
    case OPT_ROUTES:
        for (size_t i = 0; i < count && used < outlen; i++) {
            const struct pc_route_rule *r = (const struct pc_route_rule *)field + i;
            int n = snprintf(out + used, outlen - used, "%s%.*s %.*s", i ? ", " : "",
                             (int)strnlen(r->method, sizeof r->method), r->method,
                             (int)strnlen(r->pattern, sizeof r->pattern), r->pattern);
            used += n > 0 ? (size_t)n : 0;
        }
        break;
    case OPT_NAMES:
        for (size_t i = 0; i < count && used < outlen; i++) {
            const char *name = field + i * o->size;
            int n = snprintf(out + used, outlen - used, "%s%.*s", i ? ", " : "",
                             (int)strnlen(name, o->size), name);
            used += n > 0 ? (size_t)n : 0;
        }
        break;
    }
}

void pc_config_defaults(struct pc_config *cfg)
{
    char why[256];
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt *o = &static_options[i];
        if (opt_apply(o, cfg, o->def, why, sizeof why) != 0) {
            /* A bad default is a bug in the table above, caught by the first test run. */
            fprintf(stderr, "config: bad default for [%s] %s: %s\n", o->section, o->key, why);
            abort();
        }
    }
}

/* ---- named sections: [backend NAME], [route NAME] ---------------------------------- */

enum named_kind { NAMED_NONE, NAMED_BACKEND, NAMED_ROUTE };

/* named_section() finds a section by the name at the start of its struct. */
_Static_assert(offsetof(struct pc_backend_cfg, name) == 0, "name first in pc_backend_cfg");
_Static_assert(offsetof(struct pc_route_cfg, name) == 0, "name first in pc_route_cfg");

/* "backend gpu" -> NAMED_BACKEND with *name "gpu"; anything else NAMED_NONE. */
static enum named_kind named_split(const char *section, const char **name)
{
    static const struct {
        const char *word;
        enum named_kind kind;
    } kinds[] = {{"backend", NAMED_BACKEND}, {"route", NAMED_ROUTE}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        size_t n = strlen(kinds[i].word);
        if (strncmp(section, kinds[i].word, n) == 0 && isspace((unsigned char)section[n])) {
            const char *p = section + n;
            while (isspace((unsigned char)*p))
                p++;
            *name = p;
            return kinds[i].kind;
        }
    }
    return NAMED_NONE;
}

/*
 * The struct of section [KIND NAME], created (with line) when it is new. NULL with the
 * reason in err for a bad name or a full table.
 */
static void *named_section(struct pc_config *cfg, enum named_kind kind, const char *name, int line,
                           char *err, size_t errlen)
{
    const char *word = kind == NAMED_BACKEND ? "backend" : "route";
    if (!pc_name_ok(name, PC_CFG_NAME - 1)) {
        fmt(err, errlen, "[%s %s]: a name is 1 to %d of A-Z a-z 0-9 . _ -", word, name,
            PC_CFG_NAME - 1);
        return NULL;
    }
    /* The two tables differ only in where they live: one walk serves both. */
    char *base = kind == NAMED_BACKEND ? (char *)cfg->backends : (char *)cfg->route_secs;
    size_t size = kind == NAMED_BACKEND ? sizeof cfg->backends[0] : sizeof cfg->route_secs[0];
    size_t *count = kind == NAMED_BACKEND ? &cfg->n_backends : &cfg->n_route_secs;
    size_t max = kind == NAMED_BACKEND ? PC_CFG_MAX_BACKENDS : PC_CFG_MAX_ROUTES;
    size_t line_off = kind == NAMED_BACKEND ? offsetof(struct pc_backend_cfg, line)
                                            : offsetof(struct pc_route_cfg, line);
    for (size_t i = 0; i < *count; i++) {
        if (strcmp(base + i * size, name) == 0)
            return base + i * size;
    }
    if (*count == max) {
        fmt(err, errlen, "[%s %s]: too many [%s NAME] sections (at most %zu)", word, name, word,
            max);
        return NULL;
    }
    char *sec = base + (*count)++ * size;
    memset(sec, 0, size);
    pc_strlcpy(sec, name, PC_CFG_NAME);
    memcpy(sec + line_off, &line, sizeof line);
    return sec;
}

static int named_set(struct pc_config *cfg, enum named_kind kind, const char *name, const char *key,
                     const char *value, char *err, size_t errlen)
{
    char why[512];
    const char *word = kind == NAMED_BACKEND ? "backend" : "route";
    const struct opt *table = kind == NAMED_BACKEND ? backend_options : route_options;
    size_t n = kind == NAMED_BACKEND ? N_BACKEND_OPTIONS : N_ROUTE_OPTIONS;
    size_t i;
    for (i = 0; i < n && strcmp(table[i].key, key) != 0; i++)
        ;
    if (i == n) {
        char hint[PC_CFG_NAME + 32];
        did_you_mean(table, n, word, key, hint, sizeof hint);
        fmt(err, errlen, "[%s %s] %s: unknown key%s", word, name, key, hint);
        return -1;
    }
    void *sec = named_section(cfg, kind, name, 0, err, errlen);
    if (sec == NULL)
        return -1;
    if (opt_apply(&table[i], sec, value, why, sizeof why) != 0) {
        fmt(err, errlen, "[%s %s] %s: %s", word, name, key, why);
        return -1;
    }
    *(unsigned *)((char *)sec + (kind == NAMED_BACKEND ? offsetof(struct pc_backend_cfg, set)
                                                       : offsetof(struct pc_route_cfg, set))) |=
        1u << i;
    return 0;
}

int pc_config_set(struct pc_config *cfg, const char *section, const char *key, const char *value,
                  char *err, size_t errlen)
{
    char why[512];
    const char *name;
    enum named_kind kind = named_split(section, &name);
    if (kind != NAMED_NONE)
        return named_set(cfg, kind, name, key, value, err, errlen);
    if (!section_known(section)) {
        const char *c = closest_name(section, sections, N_SECTIONS, sizeof sections[0], 0, NULL, 0);
        fmt(err, errlen, "unknown section [%s]%s%s%s", section, c ? " (did you mean [" : "",
            c ? c : "", c ? "]?)" : "");
        return -1;
    }
    const struct opt *o = opt_find(section, key);
    if (o == NULL) {
        char hint[PC_CFG_NAME + 32];
        did_you_mean(static_options, N_OPTIONS, section, key, hint, sizeof hint);
        fmt(err, errlen, "[%s] %s: unknown key%s", section, key, hint);
        return -1;
    }
    if (opt_apply(o, cfg, value, why, sizeof why) != 0) {
        fmt(err, errlen, "[%s] %s: %s", section, key, why);
        return -1;
    }
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/*
 * Parse pass over one open file into CFG. 0 ok; -1 with "PATH:LINE: ..." in err.
 * Lines: "[section]", "key = value", "# comment", "; comment", blank.
 */
/* parse_file: lines[i] is set to the line that set static_options[i] (0: not in the file). */
static int parse_file(struct pc_config *cfg, FILE *f, const char *path, int *lines, char *err,
                      size_t errlen)
{
    char *buf = NULL;
    size_t cap = 0;
    ssize_t got;
    char msg[1024];
    const char *section = NULL;
    char named[PC_CFG_NAME + 16]; /* the current [backend NAME] or [route NAME] */
    int lineno = 0;
    int rc = -1;

    while ((got = getline(&buf, &cap, f)) != -1) {
        lineno++;
        size_t len = (size_t)got;
        if (memchr(buf, '\0', len) != NULL) { /* on any line, the last one included */
            fmt(err, errlen, "%s:%d: NUL byte in line", path, lineno);
            goto out;
        }
        if (len > 0 && buf[len - 1] == '\n')
            buf[--len] = '\0';
        if (len > 0 && buf[len - 1] == '\r')
            buf[--len] = '\0';
        if (len > CFG_LINE_MAX) {
            fmt(err, errlen, "%s:%d: line longer than %d bytes", path, lineno, CFG_LINE_MAX);
            goto out;
        }
        char *line = buf;
        if (lineno == 1 && strncmp(line, "\xEF\xBB\xBF", 3) == 0) /* UTF-8 byte order mark */
            line += 3;
        line = trim(line);

        if (line[0] == '\0' || line[0] == '#' || line[0] == ';')
            continue;

        if (line[0] == '[') {
            size_t n = strlen(line);
            if (line[n - 1] != ']') {
                fmt(err, errlen, "%s:%d: expected '[section]'", path, lineno);
                goto out;
            }
            line[n - 1] = '\0';
            char *name = trim(line + 1);
            section = NULL;
            for (size_t i = 0; i < N_SECTIONS; i++) {
                if (strcmp(sections[i], name) == 0)
                    section = sections[i];
            }
            const char *sname;
            enum named_kind kind = named_split(name, &sname);
            if (kind != NAMED_NONE) {
                if (strlen(name) >= sizeof named) {
                    fmt(err, errlen, "%s:%d: section name too long", path, lineno);
                    goto out;
                }
                void *sec = named_section(cfg, kind, sname, lineno, msg, sizeof msg);
                if (sec == NULL) {
                    fmt(err, errlen, "%s:%d: %s", path, lineno, msg);
                    goto out;
                }
                /* One spelling, whatever the spaces: "[route  a]" is [route a]. */
                snprintf(named, sizeof named, "%s %s", kind == NAMED_BACKEND ? "backend" : "route",
                         sname);
                section = named;
                continue;
            }
            if (section == NULL) {
                const char *c =
                    closest_name(name, sections, N_SECTIONS, sizeof sections[0], 0, NULL, 0);
                fmt(err, errlen, "%s:%d: unknown section [%s]%s%s%s", path, lineno, name,
                    c ? " (did you mean [" : "", c ? c : "", c ? "]?)" : "");
                goto out;
            }
            continue;
        }

        char *eq = strchr(line, '=');
        if (eq == NULL) {
            fmt(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            goto out;
        }
        *eq = '\0';
        char *key = trim(line);
        char *value = trim(eq + 1);
        if (key[0] == '\0') {
            fmt(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            goto out;
        }
        if (section == NULL) {
            fmt(err, errlen, "%s:%d: %s: key outside any [section]", path, lineno, key);
            goto out;
        }
        size_t vlen = strlen(value);
        if (value[0] == '"') {
            if (vlen < 2 || value[vlen - 1] != '"') {
                fmt(err, errlen, "%s:%d: [%s] %s: unterminated quote", path, lineno, section, key);
                goto out;
            }
            value[vlen - 1] = '\0';
            value++;
        }
        /* A key given twice: the last one wins, as for command-line overrides. */
        if (pc_config_set(cfg, section, key, value, msg, sizeof msg) != 0) {
            fmt(err, errlen, "%s:%d: %s", path, lineno, msg);
            goto out;
        }
        const struct opt *o = opt_find(section, key);
        if (o != NULL)
            lines[o - static_options] = lineno;
    }
    if (ferror(f)) {
        fmt(err, errlen, "%s: read error: %s", path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

static int config_validate_at(struct pc_config *cfg, const int *lines, int *line, char *err,
                              size_t errlen);

int pc_config_load(struct pc_config *cfg, const char *path, char *err, size_t errlen)
{
    char msg[1024];
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fmt(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* Work on a copy: a file that fails leaves the caller's configuration untouched. */
    struct pc_config *tmp = malloc(sizeof *tmp);
    if (tmp == NULL) {
        fclose(f);
        fmt(err, errlen, "%s: out of memory", path);
        return -1;
    }
    memcpy(tmp, cfg, sizeof *tmp);
    int lines[N_OPTIONS] = {0};
    int rc = parse_file(tmp, f, path, lines, err, errlen);
    fclose(f);
    int line = 0;
    if (rc == 0 && config_validate_at(tmp, lines, &line, msg, sizeof msg) != 0) {
        if (line > 0)
            fmt(err, errlen, "%s:%d: %s", path, line, msg);
        else
            fmt(err, errlen, "%s: %s", path, msg);
        rc = -1;
    }
    if (rc == 0)
        memcpy(cfg, tmp, sizeof *cfg);
    free(tmp);
    return rc;
}

/* Empty (no alias), or a path prefix: "/x" or "/x/y", no trailing '/', no '*', '?', '#'. */
static int check_async_prefix(const char *p, char *why, size_t whylen)
{
    size_t n = strlen(p);
    if (n == 0)
        return 0;
    if (p[0] != '/' || n < 2 || p[n - 1] == '/') {
        fmt(why, whylen,
            "'%s' must be empty or a path like /async (starts with '/', does not end "
            "with one)",
            p);
        return -1;
    }
    if (strpbrk(p, "*?# \t") != NULL) {
        fmt(why, whylen, "'%s' must not contain '*', '?', '#' or spaces", p);
        return -1;
    }
    if (strcmp(p, "/jobs") == 0 || strcmp(p, "/job") == 0) {
        fmt(why, whylen, "'%s' is taken by the job status paths", p);
        return -1;
    }
    return 0;
}

static int is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/* Keys a named section leaves out take the [backend] or [cache] section's values. */
static void inherit_named(struct pc_config *cfg)
{
    struct pc_backend_cfg def;
    pc_config_backend(cfg, 0, &def);
    for (size_t i = 0; i < cfg->n_backends; i++) {
        struct pc_backend_cfg *b = &cfg->backends[i];
#define INHERIT(bit, f)                                                                            \
    if (!(b->set & (1u << (bit))))                                                                 \
    memcpy(&b->f, &def.f, sizeof b->f)
        INHERIT(B_CONNECT, connect_timeout_ms);
        INHERIT(B_TIMEOUT, timeout_ms);
        INHERIT(B_IDLE, idle_timeout_ms);
        INHERIT(B_MAXRESP, max_response_bytes);
        INHERIT(B_INFLIGHT, max_in_flight);
        INHERIT(B_HPATH, health_path);
        INHERIT(B_HINTERVAL, health_interval_ms);
        INHERIT(B_HFAILS, health_fails);
        INHERIT(B_HPASSES, health_passes);
        INHERIT(B_HTTP_CLIENT, http_client);
#undef INHERIT
    }
    for (size_t i = 0; i < cfg->n_route_secs; i++) {
        struct pc_route_cfg *r = &cfg->route_secs[i];
        if (!(r->set & (1u << R_CACHE)))
            r->cache = 1;
        if (!(r->set & (1u << R_TTL)))
            r->ttl_s = cfg->ttl_s;
        if (!(r->set & (1u << R_INPUTS))) {
            memcpy(r->input_fields, cfg->input_fields, sizeof r->input_fields);
            r->n_input_fields = cfg->n_input_fields;
        }
        if (!(r->set & (1u << R_PATHFIELD)))
            memcpy(r->path_field, cfg->path_field, sizeof r->path_field);
        if (!(r->set & (1u << R_PERINST)))
            r->per_instance = cfg->per_instance;
        if (!(r->set & (1u << R_CREDS)))
            r->credentials = cfg->credentials;
        if (!(r->set & (1u << R_IGNORE))) {
            memcpy(r->ignore_fields, cfg->ignore_fields, sizeof r->ignore_fields);
            r->n_ignore_fields = cfg->n_ignore_fields;
        }
        if (!(r->set & (1u << R_VARY))) {
            memcpy(r->vary, cfg->vary, sizeof r->vary);
            r->n_vary = cfg->n_vary;
        }
        if (!(r->set & (1u << R_RCC)))
            r->response_cache_control = cfg->response_cache_control;
        if (!(r->set & (1u << R_TEMP)))
            r->absent_temperature = cfg->absent_temperature;
        r->backend_index = 0;
        for (size_t j = 0; j < cfg->n_backends; j++) {
            if (strcmp(r->backend, cfg->backends[j].name) == 0)
                r->backend_index = (int)j + 1;
        }
    }
}

const struct pc_backend_cfg *pc_config_backend(const struct pc_config *cfg, size_t i,
                                               struct pc_backend_cfg *out)
{
    if (i >= 1)
        return i <= cfg->n_backends ? &cfg->backends[i - 1] : NULL;
    memset(out, 0, sizeof *out);
    pc_strlcpy(out->url, cfg->backend_url, sizeof out->url);
    out->connect_timeout_ms = cfg->backend_connect_timeout_ms;
    out->timeout_ms = cfg->backend_timeout_ms;
    out->idle_timeout_ms = cfg->backend_idle_timeout_ms;
    out->max_response_bytes = cfg->backend_max_response_bytes;
    out->max_in_flight = cfg->backend_max_in_flight;
    pc_strlcpy(out->health_path, cfg->backend_health_path, sizeof out->health_path);
    out->health_interval_ms = cfg->backend_health_interval_ms;
    out->health_fails = cfg->backend_health_fails;
    out->health_passes = cfg->backend_health_passes;
    pc_strlcpy(out->cache_id, cfg->backend_cache_id, sizeof out->cache_id);
    out->http_client = cfg->backend_http_client;
    return out;
}

/* An RFC 9110 token: the only header names a list of them may hold. */
static int is_token(const char *s)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && strchr(extra, *s) == NULL)
            return 0;
    }
    return 1;
}

/*
 * Header names in [cache] lists are tokens; replay_headers never names what describes a
 * connection or one client (hop-by-hop, Set-Cookie, Date, framing, predcache's own). 0 ok;
 * -1 with the option's key in *key and why.
 */
static int check_header_lists(const struct pc_config *cfg, char *why, size_t whylen,
                              const char **key)
{
    static const char *const never_replayed[] = {
        "Connection",   "Keep-Alive",        "Proxy-Connection", "TE",
        "Trailer",      "Transfer-Encoding", "Upgrade",          "Set-Cookie",
        "Date",         "Content-Length",    "Content-Encoding", "Age",
        "X-Cache",      "X-Cache-Key",       "Warning",          "Vary",
        "Cache-Control"};
    const struct {
        const char *key;
        const char (*names)[64];
        size_t n;
    } lists[] = {
        {"credential_headers", cfg->credential_headers, cfg->n_credential_headers},
        {"vary", cfg->vary, cfg->n_vary},
        {"replay_headers", cfg->replay_headers, cfg->n_replay_headers},
    };
    for (size_t l = 0; l < sizeof lists / sizeof lists[0]; l++) {
        for (size_t i = 0; i < lists[l].n; i++) {
            const char *name = lists[l].names[i];
            *key = lists[l].key;
            if (!is_token(name)) {
                fmt(why, whylen, "'%s' is not a header name", name);
                return -1;
            }
            for (size_t k = 0; l == 2 && k < sizeof never_replayed / sizeof never_replayed[0];
                 k++) {
                if (strcasecmp(name, never_replayed[k]) == 0) {
                    fmt(why, whylen, "%s is never replayed from a cache entry", name);
                    return -1;
                }
            }
        }
    }
    return 0;
}

enum { CHECK_TIMEOUTS = 1, CHECK_HEALTH_PATH };

/* The rules every backend follows, the [backend] section's and the named ones'. 0, or the
 * rule broken (CHECK_*) with why. */
static int check_backend(const struct pc_backend_cfg *b, char *why, size_t whylen)
{
    if (b->connect_timeout_ms > b->timeout_ms) {
        fmt(why, whylen, "connect_timeout_ms (%d) must not be more than timeout_ms (%d)",
            b->connect_timeout_ms, b->timeout_ms);
        return CHECK_TIMEOUTS;
    }
    if (b->health_path[0] != '\0' && b->health_path[0] != '/') {
        fmt(why, whylen, "health_path: must start with '/' (or be empty: no checks)");
        return CHECK_HEALTH_PATH;
    }
    return 0;
}

/* The named sections after inherit_named(). 0 ok; -1 with *line and err. */
static int check_named(const struct pc_config *cfg, int *line, char *err, size_t errlen)
{
    char why[512];
    for (size_t i = 0; i < cfg->n_backends; i++) {
        const struct pc_backend_cfg *b = &cfg->backends[i];
        *line = b->line;
        if (!(b->set & (1u << B_URL))) {
            fmt(err, errlen, "[backend %s] url: missing (a named backend needs its url)", b->name);
            return -1;
        }
        if (check_backend(b, why, sizeof why) != 0) {
            fmt(err, errlen, "[backend %s] %s", b->name, why);
            return -1;
        }
    }
    for (size_t i = 0; i < cfg->n_route_secs; i++) {
        const struct pc_route_cfg *r = &cfg->route_secs[i];
        *line = r->line;
        if (!(r->set & (1u << R_MATCH))) {
            fmt(err, errlen, "[route %s] match: missing (e.g. match = POST /v1/models/m*:predict)",
                r->name);
            return -1;
        }
        if (r->backend[0] != '\0' && r->backend_index == 0) {
            fmt(err, errlen, "[route %s] backend: no [backend %s] section", r->name, r->backend);
            return -1;
        }
    }
    *line = 0;
    return pc_routes_check(cfg, line, err, errlen);
}

/* 1 when s holds a Redis Cluster hash tag: '{', then at least one byte before a '}'. */
static int has_hash_tag(const char *s)
{
    size_t off, n;
    return pc_slot_tag(s, strlen(s), &off, &n);
}

int pc_config_validate(struct pc_config *cfg, char *err, size_t errlen)
{
    int line;
    return config_validate_at(cfg, NULL, &line, err, errlen);
}

/* The later of the lines that set two options (a rule between them fails there); 0 when
 * neither came from a file. */
static int line_of(const int *lines, const char *section, const char *key, const char *key2)
{
    const struct opt *a = opt_find(section, key), *b = key2 ? opt_find(section, key2) : NULL;
    int la = lines != NULL && a != NULL ? lines[a - static_options] : 0;
    int lb = lines != NULL && b != NULL ? lines[b - static_options] : 0;
    return la > lb ? la : lb;
}

/*
 * pc_config_validate, telling the line a failure comes from (0: none): the section's for
 * named sections, for a rule between two options the later of the lines that set them
 * (lines as parse_file fills it; NULL when the configuration is not from a file).
 */
static int config_validate_at(struct pc_config *cfg, const int *lines, int *line, char *err,
                              size_t errlen)
{
    char why[512];
    const char *bad_key = NULL;
    *line = 0;
    char *value = malloc(CFG_DUMP_MAX);
    struct pc_config *scratch = malloc(sizeof *scratch);
    int rc = -1;
    if (value == NULL || scratch == NULL) {
        fmt(err, errlen, "out of memory");
        goto out;
    }

    /* Each field as the table allows it: a struct filled in code gets the file's checks. */
    memset(scratch, 0, sizeof *scratch);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const struct opt *o = &static_options[i];
        const char *field = (const char *)cfg + o->offset;
        if ((o->type == OPT_STRING || o->type == OPT_HOST || o->type == OPT_HOSTPORT ||
             o->type == OPT_URL || o->type == OPT_LEVEL) &&
            strnlen(field, o->size) == o->size) {
            fmt(err, errlen, "[%s] %s: not NUL-terminated", o->section, o->key);
            goto out;
        }
        if ((o->type == OPT_ROUTES || o->type == OPT_NAMES) &&
            *(const size_t *)((const char *)cfg + o->count_offset) > PC_CFG_MAX_LIST) {
            fmt(err, errlen, "[%s] %s: more than %d entries", o->section, o->key, PC_CFG_MAX_LIST);
            goto out;
        }
        opt_format(o, cfg, value, CFG_DUMP_MAX);
        if (opt_apply(o, scratch, value, why, sizeof why) != 0) {
            fmt(err, errlen, "[%s] %s: %s", o->section, o->key, why);
            goto out;
        }
    }

    /* What the table cannot say: 0, or the kernel's bounds. */
    if (cfg->sched_slice_us != 0 && cfg->sched_slice_us < PC_CPUSLICE_MIN_US) {
        fmt(err, errlen,
            "[server] sched_slice_us: %d is below the kernel's least slice: 0 (the kernel's "
            "default) or %d..%d",
            cfg->sched_slice_us, PC_CPUSLICE_MIN_US, PC_CPUSLICE_MAX_US);
        *line = line_of(lines, "server", "sched_slice_us", NULL);
        goto out;
    }

    /* Cross-field rules. */
    char h1[PC_CFG_STR], h2[PC_CFG_STR];
    int p1, p2;
    if (pc_config_split_hostport(cfg->listen, h1, sizeof h1, &p1) == 0 &&
        pc_config_split_hostport(cfg->admin_listen, h2, sizeof h2, &p2) == 0 && p1 == p2 &&
        p1 != 0 && (pc_strcaseeq(h1, h2) || is_wildcard(h1) || is_wildcard(h2))) {
        fmt(err, errlen, "[server] listen (%s) and admin_listen (%s) must be different addresses",
            cfg->listen, cfg->admin_listen);
        *line = line_of(lines, "server", "listen", "admin_listen");
        goto out;
    }
    if (cfg->grpc_listen[0] != '\0' &&
        pc_config_split_hostport(cfg->grpc_listen, h2, sizeof h2, &p2) == 0 && p2 != 0 &&
        ((pc_config_split_hostport(cfg->listen, h1, sizeof h1, &p1) == 0 && p1 == p2 &&
          (pc_strcaseeq(h1, h2) || is_wildcard(h1) || is_wildcard(h2))) ||
         (pc_config_split_hostport(cfg->admin_listen, h1, sizeof h1, &p1) == 0 && p1 == p2 &&
          (pc_strcaseeq(h1, h2) || is_wildcard(h1) || is_wildcard(h2))))) {
        fmt(err, errlen, "[server] grpc_listen (%s) must differ from listen and admin_listen",
            cfg->grpc_listen);
        *line = line_of(lines, "server", "grpc_listen", NULL);
        goto out;
    }
    if (cfg->backend_grpc_url[0] != '\0') {
        const char *hp = strncasecmp(cfg->backend_grpc_url, "http://", 7) == 0
                             ? cfg->backend_grpc_url + 7
                             : NULL;
        int port = 0;
        if (hp == NULL || strchr(hp, '/') != NULL ||
            pc_config_split_hostport(hp, h2, sizeof h2, &port) != 0 || h2[0] == '\0' || port == 0) {
            fmt(err, errlen,
                "[backend] grpc_url: '%s' must be http://HOST:PORT (the gRPC model server, "
                "HTTP/2 cleartext)",
                cfg->backend_grpc_url);
            *line = line_of(lines, "backend", "grpc_url", NULL);
            goto out;
        }
    }
    if (cfg->backend_grpc_health_path[0] != '\0' &&
        (cfg->backend_grpc_health_path[0] != '/' ||
         strchr(cfg->backend_grpc_health_path + 1, '/') == NULL)) {
        fmt(err, errlen,
            "[backend] grpc_health_path: '%s' must be a gRPC method, /package.Service/Method "
            "(or be empty: no checks)",
            cfg->backend_grpc_health_path);
        *line = line_of(lines, "backend", "grpc_health_path", NULL);
        goto out;
    }
    {
        char hosts[PC_ADDRESSES_MAX][PC_CFG_STR];
        int ports[PC_ADDRESSES_MAX];
        int n = pc_config_addresses(cfg->redis_sentinels, hosts, ports, PC_ADDRESSES_MAX, why,
                                    sizeof why);
        if (n < 0) {
            fmt(err, errlen, "[redis] sentinels: %s", why);
            *line = line_of(lines, "redis", "sentinels", NULL);
            goto out;
        }
        if ((n > 0) != (cfg->redis_sentinel_master[0] != '\0')) {
            fmt(err, errlen,
                "[redis] sentinels and sentinel_master go together (the sentinels "
                "to ask, and the name of the master they watch)");
            *line = line_of(lines, "redis", "sentinels", "sentinel_master");
            goto out;
        }
    }
    {
        char hosts[PC_ADDRESSES_MAX][PC_CFG_STR];
        int ports[PC_ADDRESSES_MAX];
        int n =
            pc_config_addresses(cfg->redis_nodes, hosts, ports, PC_ADDRESSES_MAX, why, sizeof why);
        const char *bad = NULL;
        if (n < 0)
            bad = why;
        else if (n > 0 && !cfg->redis_cluster)
            bad = "seed nodes are for cluster = on";
        else if (cfg->redis_cluster && cfg->redis_sentinels[0] != '\0')
            bad = "cluster = on and sentinels do not go together (a cluster fails over by itself)";
        else if (cfg->redis_cluster && cfg->redis_db != 0)
            bad = "cluster = on needs db = 0 (Redis Cluster has only database 0)";
        else if (cfg->redis_cluster && strpbrk(cfg->jobs_stream, "{}") != NULL &&
                 !has_hash_tag(cfg->jobs_stream))
            bad = "cluster = on and a [jobs] stream with '{' or '}' but no hash tag: job "
                  "records take the stream's hash tag, to share its slot";
        else if (cfg->redis_cluster && strpbrk(cfg->key_prefix, "{}") != NULL)
            bad = "cluster = on and a key_prefix with '{' or '}': a hash tag in the prefix "
                  "would put every key in one slot, on one master";
        if (bad != NULL) {
            fmt(err, errlen, "[redis] %s%s", n < 0 ? "nodes: " : "", bad);
            *line = line_of(lines, "redis", n < 0 || n > 0 ? "nodes" : "cluster", NULL);
            goto out;
        }
    }
    if (cfg->max_input_bytes > 0 && cfg->max_input_bytes < cfg->max_body_bytes) {
        fmt(err, errlen,
            "[server] max_input_bytes (%zu) must be 0 or at least max_body_bytes (%zu): a "
            "request of the largest size accepted must fit",
            cfg->max_input_bytes, cfg->max_body_bytes);
        *line = line_of(lines, "server", "max_input_bytes", "max_body_bytes");
        goto out;
    }
    struct pc_backend_cfg def;
    int bad = check_backend(pc_config_backend(cfg, 0, &def), why, sizeof why);
    if (bad != 0) {
        fmt(err, errlen, "[backend] %s", why);
        *line = bad == CHECK_TIMEOUTS
                    ? line_of(lines, "backend", "connect_timeout_ms", "timeout_ms")
                    : line_of(lines, "backend", "health_path", NULL);
        goto out;
    }
    if ((long long)cfg->ttl_s + cfg->grace_s > INT_MAX) {
        fmt(err, errlen, "[cache] grace_s: ttl_s + grace_s is too large");
        *line = line_of(lines, "cache", "ttl_s", "grace_s");
        goto out;
    }
    if (check_async_prefix(cfg->jobs_async_prefix, why, sizeof why) != 0) {
        fmt(err, errlen, "[jobs] async_prefix: %s", why);
        *line = line_of(lines, "jobs", "async_prefix", NULL);
        goto out;
    }
    if (check_header_lists(cfg, why, sizeof why, &bad_key) != 0) {
        fmt(err, errlen, "[cache] %s: %s", bad_key, why);
        *line = line_of(lines, "cache", bad_key, NULL);
        goto out;
    }
    inherit_named(cfg);
    if (check_named(cfg, line, err, errlen) != 0)
        goto out;
    rc = 0;
out:
    free(value);
    free(scratch);
    return rc;
}

int pc_config_addresses(const char *list, char hosts[][PC_CFG_STR], int *ports, size_t max,
                        char *why, size_t whylen)
{
    size_t n = 0;
    const char *s = list;
    while (*s != '\0') {
        while (*s == ' ' || *s == ',')
            s++;
        if (*s == '\0')
            break;
        size_t len = strcspn(s, ", ");
        char one[PC_CFG_STR];
        if (len >= sizeof one) {
            fmt(why, whylen, "'%.*s...' is too long", 32, s);
            return -1;
        }
        memcpy(one, s, len);
        one[len] = '\0';
        if (n == max) {
            fmt(why, whylen, "more than %zu addresses", max);
            return -1;
        }
        if (pc_config_split_hostport(one, hosts[n], PC_CFG_STR, &ports[n]) != 0 || ports[n] == 0) {
            fmt(why, whylen, "'%s' is not host:port", one);
            return -1;
        }
        n++;
        s += len;
    }
    return (int)n;
}

int pc_config_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *h, *colon;
    size_t hlen;

    if (s == NULL || s[0] == '\0')
        return -1;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
        if (hlen == 0 || memchr(h, ':', hlen) == NULL)
            return -1; /* brackets hold an IPv6 address */
    } else {
        colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return -1; /* no port, or an IPv6 address without brackets */
        h = s;
        hlen = (size_t)(colon - s);
    }
    for (size_t i = 0; i < hlen; i++) {
        unsigned char c = (unsigned char)h[i];
        if (isspace(c) || c < 0x20 || c == 0x7f || c == '/' || c == '[' || c == ']' || c == '@')
            return -1;
    }

    const char *digits = colon + 1;
    size_t nd = strlen(digits);
    if (nd == 0 || nd > 5)
        return -1;
    long p = 0;
    for (size_t i = 0; i < nd; i++) {
        if (!isdigit((unsigned char)digits[i]))
            return -1;
        p = p * 10 + (digits[i] - '0');
    }
    if (p > 65535)
        return -1;

    if (hlen == 0) {
        h = "0.0.0.0";
        hlen = strlen(h);
    }
    if (host != NULL) {
        if (hlen >= hostlen)
            return -1;
        memcpy(host, h, hlen);
        host[hlen] = '\0';
    }
    if (port != NULL)
        *port = (int)p;
    return 0;
}

/* A value the parser would trim or unquote is written in quotes, so the dump reads back. */
static int needs_quotes(const char *v)
{
    size_t n = strlen(v);
    return n > 0 && (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]) ||
                     v[0] == '"' || v[0] == '#' || v[0] == ';');
}

void pc_config_dump(const struct pc_config *cfg, void (*emit)(const char *line, void *arg),
                    void *arg)
{
    char *value = malloc(CFG_DUMP_MAX);
    char *line = malloc(CFG_DUMP_MAX + 128);
    if (value == NULL || line == NULL) {
        emit("# out of memory", arg);
        goto out;
    }
    for (size_t s = 0; s < N_SECTIONS; s++) {
        if (s > 0)
            emit("", arg);
        snprintf(line, CFG_DUMP_MAX + 128, "[%s]", sections[s]);
        emit(line, arg);
        for (size_t i = 0; i < N_OPTIONS; i++) {
            const struct opt *o = &static_options[i];
            if (strcmp(o->section, sections[s]) != 0)
                continue;
            opt_format(o, cfg, value, CFG_DUMP_MAX);
            if ((o->flags & OPT_SECRET) && value[0] != '\0')
                snprintf(value, CFG_DUMP_MAX, "********");
            const char *q = needs_quotes(value) ? "\"" : "";
            snprintf(line, CFG_DUMP_MAX + 128, "%s = %s%s%s", o->key, q, value, q);
            emit(line, arg);
        }
    }
    for (size_t k = 0; k < cfg->n_backends + cfg->n_route_secs; k++) {
        int is_backend = k < cfg->n_backends;
        const void *sec = is_backend ? (const void *)&cfg->backends[k]
                                     : (const void *)&cfg->route_secs[k - cfg->n_backends];
        const struct opt *table = is_backend ? backend_options : route_options;
        size_t n = is_backend ? N_BACKEND_OPTIONS : N_ROUTE_OPTIONS;
        emit("", arg);
        snprintf(line, CFG_DUMP_MAX + 128, "[%s %s]", is_backend ? "backend" : "route",
                 is_backend ? cfg->backends[k].name : cfg->route_secs[k - cfg->n_backends].name);
        emit(line, arg);
        for (size_t i = 0; i < n; i++) {
            opt_format(&table[i], sec, value, CFG_DUMP_MAX);
            const char *q = needs_quotes(value) || value[0] == '\0' ? "\"" : "";
            snprintf(line, CFG_DUMP_MAX + 128, "%s = %s%s%s", table[i].key, q, value, q);
            emit(line, arg);
        }
    }
out:
    free(value);
    free(line);
}
