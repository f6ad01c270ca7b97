/*
 * config: the conf file (INI sections) and its validation.
 * Owns struct pc_config and its defaults. Parse pass reads "key = value" lines into
 * the table; validate pass checks cross-field rules. Errors name file:line, the key
 * and why. Never touches the network or any runtime state.
 */
#ifndef PREDCACHE_CONFIG_H
#define PREDCACHE_CONFIG_H

#include <stddef.h>

#define PC_CFG_MAX_LIST 32
#define PC_CFG_STR 256

struct pc_route_rule {
    char method[16];          /* "POST", "GET", ... or "*" for any */
    char pattern[PC_CFG_STR]; /* path glob: '*' matches any run of characters, '/' included */
};

#define PC_CFG_MAX_BACKENDS 16 /* [backend NAME] sections */
#define PC_CFG_MAX_ROUTES 64   /* [route NAME] sections */
#define PC_CFG_NAME 64

/* A [backend NAME] section. Keys the file leaves out take the [backend] section's value. */
struct pc_backend_cfg {
    char name[PC_CFG_NAME];
    char url[1024];
    int connect_timeout_ms;
    int timeout_ms;
    int idle_timeout_ms; /* a streamed answer (text/event-stream): longest silence */
    size_t max_response_bytes;
    int max_in_flight;
    char health_path[PC_CFG_STR];
    int health_interval_ms;
    int health_fails;
    int health_passes;
    char cache_id[PC_CFG_STR]; /* the backend's identity in keys; "" = derived from url */
    int http_client;           /* enum pc_http_client */
    unsigned set;              /* bit i: key i of the section's table was given */
    int line;                  /* of the section header; 0 when set in code */
};

/* A [route NAME] section: a method and path glob mapped to a backend and cache settings. */
#define PC_ROUTE_SET_RCC (1u << 10) /* in set: the section gave response_cache_control */
struct pc_route_cfg {
    char name[PC_CFG_NAME];
    struct pc_route_rule match;
    char backend[PC_CFG_NAME]; /* a [backend NAME]; "" = the [backend] section */
    int cache;                 /* on: cached; off: forwarded as is; default on */
    int ttl_s;                 /* default: [cache] ttl_s */
    char input_fields[PC_CFG_MAX_LIST][64];
    size_t n_input_fields; /* default: [cache] input_fields */
    char path_field[64];   /* default: [cache] path_field */
    int per_instance;      /* default: [cache] per_instance */
    int credentials;       /* enum pc_credentials; default: [cache] credentials */
    char ignore_fields[PC_CFG_MAX_LIST][64];
    size_t n_ignore_fields; /* default: [cache] ignore_fields */
    char vary[PC_CFG_MAX_LIST][64];
    size_t n_vary;              /* default: [cache] vary */
    int response_cache_control; /* enum pc_response_cc; default: [cache] response_cache_control */
    int api;                    /* enum pc_adapter (adapter.h); default auto: by path */
    int absent_temperature;     /* enum pc_temperature; default: [cache] absent_temperature */
    unsigned set;               /* bit i: key i of the section's table was given */
    int line;
    int backend_index; /* resolved by validate: 0 = [backend], i + 1 = backends[i] */
};

/* [log] format: how log and access lines are written. */
enum pc_log_format { PC_LOG_FORMAT_TEXT, PC_LOG_FORMAT_JSON };
/* [backend] http_client: auto = predcache's own HTTP/1.1 client for http:// to an address
 * (libcurl for https and host names); curl = libcurl for every URL. */
enum pc_http_client { PC_HTTP_CLIENT_AUTO, PC_HTTP_CLIENT_CURL };

/* [cache] verify_compare and verify_action (the order of their names in config.c). */
enum pc_verify_compare { PC_VERIFY_BYTES, PC_VERIFY_JSON };
enum pc_verify_action { PC_VERIFY_LOG, PC_VERIFY_PURGE };
/* [cache] lock (the order of its names in config.c). */
enum pc_lock_mode { PC_LOCKMODE_AUTO, PC_LOCKMODE_ALWAYS };
/* [cache] credentials: who may share an answer given to a request that carries credentials */
enum pc_credentials { PC_CREDS_ISOLATE, PC_CREDS_SHARED, PC_CREDS_BYPASS };
/* [cache] absent_temperature: what a generation without a temperature does on the model server */
enum pc_temperature { PC_TEMP_SAMPLING, PC_TEMP_GREEDY };
/* [cache] response_cache_control: the model server's Cache-Control is honoured or ignored */
enum pc_response_cc { PC_RCC_HONOUR, PC_RCC_IGNORE };
/* [jobs] credentials: a job request carrying credentials is refused, or run from memory */
enum pc_jobs_credentials { PC_JOBS_CREDS_REFUSE, PC_JOBS_CREDS_LOCAL };

struct pc_config {
    /* [server] */
    char listen[PC_CFG_STR];       /* host:port of the data port; default 0.0.0.0:8080 */
    char admin_listen[PC_CFG_STR]; /* default 127.0.0.1:9090 */
    char grpc_listen[PC_CFG_STR];  /* host:port of the gRPC port (h2c); "" = off (default) */
    size_t max_body_bytes;         /* default 16777216 */
    size_t max_header_bytes;       /* default 16384 */
    int request_timeout_ms;        /* whole request deadline; default 60000 */
    int idle_timeout_ms;           /* keep-alive idle and slow-client read timeout; default 30000 */
    int drain_timeout_ms;          /* bound of the SIGTERM drain; default 10000 */
    int ready_requires_redis;      /* /ready fails while Redis is unavailable; default off */
    int max_connections;           /* client connections per listener; default 10000 */
    size_t max_input_bytes;        /* request bytes held while received and handled, process-wide;
                                      0 = no bound */
    size_t max_output_bytes; /* answer bytes buffered for clients, process-wide; 0 = no bound */
    char admin_token[PC_CFG_STR]; /* Bearer token for mutating admin endpoints; "" = none */
    int workers;                  /* event loop threads, 1..64; 0 = auto (usable CPUs) */
    int sched_slice_us; /* each worker thread's scheduler slice (cpuslice.h); 0 = the kernel's */

    /* [backend] */
    char backend_url[1024]; /* base URL of the model server; default http://127.0.0.1:8501 */
    char backend_grpc_url[PC_CFG_STR]; /* http://HOST:PORT of its gRPC port (h2c); "" = none */
    /* a gRPC method called with an empty message as the gRPC port's health check; "" = off */
    char backend_grpc_health_path[PC_CFG_STR];
    char backend_cache_id[PC_CFG_STR]; /* the backend's identity in keys; "" = derived from url */
    int backend_connect_timeout_ms;    /* default 1000 */
    int backend_timeout_ms;            /* default 30000 */
    int backend_idle_timeout_ms;       /* a streamed answer: longest silence; default 30000 */
    size_t backend_max_response_bytes; /* default 67108864 */
    int backend_max_in_flight; /* transfers at once; beyond it 503 at once; 0 = no bound; 1024 */
    char backend_health_path[PC_CFG_STR]; /* active health check GET path; "" = off (default) */
    int backend_health_interval_ms;       /* between checks; default 2000 */
    int backend_health_fails;  /* consecutive failures that mark the backend down; default 3 */
    int backend_health_passes; /* consecutive passes that mark it up again; default 2 */
    int backend_http_client;   /* enum pc_http_client; default auto */

    /* [redis] */
    char redis_host[PC_CFG_STR];          /* default 127.0.0.1 */
    int redis_port;                       /* default 6379 */
    char redis_username[PC_CFG_STR];      /* ACL user; default empty: AUTH with the password only */
    char redis_password[PC_CFG_STR];      /* default empty: no AUTH */
    int redis_tls;                        /* TLS to Redis; default off */
    char redis_tls_ca_file[PC_CFG_STR];   /* default empty: the system's CAs */
    char redis_tls_cert_file[PC_CFG_STR]; /* client certificate (mutual TLS); default none */
    char redis_tls_key_file[PC_CFG_STR];  /* its key */
    char redis_tls_server_name[PC_CFG_STR]; /* default empty: host */
    int redis_tls_verify;                   /* default on */
    char redis_sentinels[PC_CFG_STR * 4];   /* "host:port, ..."; default empty: no Sentinel */
    char redis_sentinel_master[PC_CFG_STR]; /* the master's name at the sentinels */
    char redis_sentinel_username[PC_CFG_STR];
    char redis_sentinel_password[PC_CFG_STR];
    int redis_cluster;                /* Redis Cluster; default off */
    char redis_nodes[PC_CFG_STR * 4]; /* more cluster seed nodes "host:port, ..."; default "" */
    int redis_db;                     /* default 0 */
    int redis_timeout_ms;             /* per command and connect; default 100 */
    int redis_max_pending;            /* stores in flight; beyond it skipped; 0 = no bound; 10000 */
    size_t redis_max_pending_bytes;   /* bytes of stores in flight; 0 = no bound; 256m */

    /* [cache] */
    int ttl_s;                   /* default 86400 */
    size_t max_value_bytes;      /* default 4194304 */
    char namespace_[PC_CFG_STR]; /* default "default" */
    char key_prefix[PC_CFG_STR]; /* default "predcache:" */
    struct pc_route_rule routes[PC_CFG_MAX_LIST];
    size_t n_routes;
    char input_fields[PC_CFG_MAX_LIST][64];
    size_t n_input_fields;
    char path_field[64]; /* default "file_path"; empty disables the path fallback */
    char ignore_fields[PC_CFG_MAX_LIST][64];      /* noise members left out of a whole-body key */
    size_t n_ignore_fields;                       /* default "auto": per API family */
    int credentials;                              /* enum pc_credentials; default isolate */
    char credential_headers[PC_CFG_MAX_LIST][64]; /* besides Authorization, Proxy-Authorization,
                                                     Cookie; default none */
    size_t n_credential_headers;
    char vary[PC_CFG_MAX_LIST][64]; /* request headers always in the key; default none */
    size_t n_vary;
    int response_cache_control;               /* enum pc_response_cc; default honour */
    int absent_temperature;                   /* enum pc_temperature; default sampling */
    char replay_headers[PC_CFG_MAX_LIST][64]; /* response headers an entry keeps and replays */
    size_t n_replay_headers; /* default Content-Type, Inference-Header-Content-Length */
    int per_instance;        /* cache each element of a TF Serving `instances` batch; default on */
    int allow_client_controls; /* honour Cache-Control and X-Predcache-Namespace; default on */
    char client_controls_token[PC_CFG_STR]; /* X-Predcache-TTL and -Namespace need it; "" */
    int max_batch_instances; /* instances a batch may hold to be cached per instance; 10000 */
    int grace_s;             /* entries are kept and served stale this long past ttl_s; 3600 */
    int lock_timeout_ms;     /* cross-process coalescing: wait for another's call; 0 = off; 5000 */
    int lock_mode;         /* PC_LOCKMODE_AUTO (default: only while not alone, peers.h) | ALWAYS */
    int max_ttl_s;         /* bound of a client's X-Predcache-TTL; default 604800 */
    int version_refresh_s; /* model versions resolved from the status endpoint; 0 = off; 30 */
    int generation_refresh_ms;     /* invalidation generations re-read at least this often; 1000 */
    size_t l1_max_bytes;           /* in-process tier in front of Redis; 0 = off; 64m */
    int l1_ttl_ms;                 /* longest an entry stays in that tier; 5000 */
    size_t key_memo_bytes;         /* memo of keys derived from request bytes; 0 = off; 32m */
    double verify_sample;          /* shadow verification: fraction of hits checked; 0 = off */
    int verify_compare;            /* PC_VERIFY_BYTES (default) | PC_VERIFY_JSON */
    double verify_float_tolerance; /* json: numbers equal within this (relative above 1); 0 */
    int verify_action;             /* PC_VERIFY_LOG (default) | PC_VERIFY_PURGE */

    /* [backend NAME] and [route NAME] sections, in file order */
    struct pc_backend_cfg backends[PC_CFG_MAX_BACKENDS];
    size_t n_backends;
    struct pc_route_cfg route_secs[PC_CFG_MAX_ROUTES];
    size_t n_route_secs;

    /* [jobs] */
    int jobs_enabled;                   /* async jobs (202 + job id); default on */
    int jobs_result_ttl_s;              /* how long a finished job's result lives; default 3600 */
    int jobs_claim_after_ms;            /* take over jobs of a consumer silent this long; 30000 */
    int jobs_max_queue;                 /* unfinished jobs accepted before 429; default 10000 */
    int jobs_concurrency;               /* jobs run at once by this process (0: none); 8 */
    char jobs_async_prefix[PC_CFG_STR]; /* POST <prefix>/<route> submits a job; "/async" */
    int jobs_compat;                    /* seed aliases POST /predict, GET /job/<id>; off */
    char jobs_stream[PC_CFG_STR];       /* Redis Stream; "" = key_prefix "jobs:" namespace */
    int jobs_credentials;               /* enum pc_jobs_credentials; default local */

    /* [log] */
    char log_level[16];    /* debug | info | warn | error; default info */
    char access_log[1024]; /* "-" stdout (default), "off", or a file path */
    int log_format;        /* enum pc_log_format; default text */
};

/* Fills every field with its default. */
void pc_config_defaults(struct pc_config *cfg);

/*
 * Reads FILE over the current values (call pc_config_defaults first), then validates.
 * 0 ok; -1 with a message "FILE:LINE: [section] key: why" in err.
 */
int pc_config_load(struct pc_config *cfg, const char *path, char *err, size_t errlen);

/*
 * Sets one option as the file would ("server", "listen", "0.0.0.0:8080"). Used by the
 * parser and by command-line overrides. 0 ok; -1 with the reason in err (no location).
 */
int pc_config_set(struct pc_config *cfg, const char *section, const char *key, const char *value,
                  char *err, size_t errlen);

/*
 * After all values are set: named backends take the [backend] values they leave out,
 * routes take the [cache] ones and resolve their backend; then the cross-field checks,
 * the route table's included (overlapping or unreachable routes). 0 ok; -1 with the
 * reason in err ("line N: ..." when it comes from a section of the file).
 */
int pc_config_validate(struct pc_config *cfg, char *err, size_t errlen);

/* The backend of index i: 0 is [backend] (copied into out), i >= 1 is backends[i - 1]. */
const struct pc_backend_cfg *pc_config_backend(const struct pc_config *cfg, size_t i,
                                               struct pc_backend_cfg *out);

/* Splits "host:port" (or "[v6]:port", or ":port" meaning all addresses). 0 ok, -1 bad. */
int pc_config_split_hostport(const char *s, char *host, size_t hostlen, int *port);
/* [redis] sentinels or nodes: "host:port, host:port, ..." into hosts/ports (at most max).
 * The count (0 for an empty list), or -1 with why. */
#define PC_ADDRESSES_MAX 16
int pc_config_addresses(const char *list, char hosts[][PC_CFG_STR], int *ports, size_t max,
                        char *why, size_t whylen);

/* Writes the effective configuration in conf-file syntax (for --check -v / debugging). */
void pc_config_dump(const struct pc_config *cfg, void (*emit)(const char *line, void *arg),
                    void *arg);

#endif
