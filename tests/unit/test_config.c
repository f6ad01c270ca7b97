/* Unit tests of config: defaults, the shipped conf file, each option type, each error. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "predcache/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHIPPED_CONF "conf/predcache.conf" /* the Makefile runs tests from the repo root */

static char last_path[64]; /* the temp file of the last load_text, for error messages */
static char err[2048];

/* Writes TEXT to a new temp file; its name goes to last_path. */
static void write_temp(const char *text)
{
    snprintf(last_path, sizeof last_path, "/tmp/test_config_XXXXXX");
    int fd = mkstemp(last_path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Defaults, then TEXT loaded as a file over them. Returns pc_config_load's result. */
static int load_text(struct pc_config *cfg, const char *text)
{
    pc_config_defaults(cfg);
    write_temp(text);
    err[0] = '\0';
    int rc = pc_config_load(cfg, last_path, err, sizeof err);
    unlink(last_path);
    return rc;
}

/* Asserts that err starts with "<last temp file>:LINE: " followed by REST (a prefix). */
static void assert_err_at(int line, const char *rest)
{
    char want[512];
    snprintf(want, sizeof want, "%s:%d: %s", last_path, line, rest);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error was \"%s\", expected it to start with \"%s\"", err, want);
}

static void assert_err_contains(const char *part)
{
    if (strstr(err, part) == NULL)
        fail_msg("error \"%s\" does not contain \"%s\"", err, part);
}

/* ---- defaults and the shipped file ---- */

static void test_defaults(void **state)
{
    (void)state;
    struct pc_config c;
    pc_config_defaults(&c);
    assert_string_equal(c.listen, "0.0.0.0:8080");
    assert_string_equal(c.admin_listen, "127.0.0.1:9090");
    assert_int_equal(c.max_body_bytes, 16777216);
    assert_int_equal(c.max_header_bytes, 16384);
    assert_int_equal(c.request_timeout_ms, 60000);
    assert_int_equal(c.idle_timeout_ms, 30000);
    assert_int_equal(c.drain_timeout_ms, 10000);
    assert_int_equal(c.max_connections, 10000);
    assert_string_equal(c.backend_url, "http://127.0.0.1:8501");
    assert_int_equal(c.backend_connect_timeout_ms, 1000);
    assert_int_equal(c.backend_timeout_ms, 30000);
    assert_int_equal(c.backend_max_response_bytes, 67108864);
    assert_string_equal(c.redis_host, "127.0.0.1");
    assert_int_equal(c.redis_port, 6379);
    assert_string_equal(c.redis_password, "");
    assert_int_equal(c.redis_db, 0);
    assert_int_equal(c.redis_timeout_ms, 100);
    assert_int_equal(c.ttl_s, 86400);
    assert_int_equal(c.max_value_bytes, 4194304);
    assert_string_equal(c.namespace_, "default");
    assert_string_equal(c.key_prefix, "predcache:");
    assert_int_equal(c.n_routes, 18);
    const char *routes[][2] = {{"POST", "/predict"},
                               {"POST", "/v1/models/*:predict"},
                               {"POST", "/v1/models/*:classify"},
                               {"POST", "/v1/models/*:regress"},
                               {"POST", "/v2/models/*/infer"},
                               {"POST", "/predictions/*"},
                               {"PUT", "/predictions/*"},
                               {"POST", "/v1/embeddings"},
                               {"POST", "/v1/chat/completions"},
                               {"POST", "/v1/completions"},
                               {"POST", "/api/embed"},
                               {"POST", "/api/embeddings"},
                               {"POST", "/api/generate"},
                               {"POST", "/api/chat"},
                               {"POST", "/embed"},
                               {"POST", "/embed_all"},
                               {"POST", "/embed_sparse"},
                               {"POST", "/rerank"}};
    for (size_t i = 0; i < 18; i++) {
        assert_string_equal(c.routes[i].method, routes[i][0]);
        assert_string_equal(c.routes[i].pattern, routes[i][1]);
    }
    assert_int_equal(c.absent_temperature, PC_TEMP_SAMPLING);
    assert_int_equal(c.n_input_fields, 0); /* the unsafe alias is off */
    assert_int_equal(c.n_ignore_fields, 1);
    assert_string_equal(c.ignore_fields[0], "auto");
    assert_int_equal(c.credentials, PC_CREDS_ISOLATE);
    assert_int_equal(c.n_credential_headers, 0);
    assert_int_equal(c.n_vary, 0);
    assert_int_equal(c.response_cache_control, PC_RCC_HONOUR);
    assert_int_equal(c.n_replay_headers, 2);
    assert_string_equal(c.replay_headers[0], "Content-Type");
    assert_string_equal(c.replay_headers[1], "Inference-Header-Content-Length");
    assert_string_equal(c.backend_cache_id, "");
    assert_int_equal(c.jobs_credentials, PC_JOBS_CREDS_LOCAL);
    assert_string_equal(c.path_field, "file_path");
    assert_int_equal(c.per_instance, 1);
    assert_int_equal(c.jobs_enabled, 1);
    assert_int_equal(c.jobs_result_ttl_s, 3600);
    assert_int_equal(c.jobs_claim_after_ms, 30000);
    assert_int_equal(c.jobs_max_queue, 10000);
    assert_int_equal(c.jobs_concurrency, 8);
    assert_string_equal(c.jobs_async_prefix, "/async");
    assert_int_equal(c.jobs_compat, 0);
    assert_string_equal(c.jobs_stream, "");
    assert_string_equal(c.log_level, "info");
    assert_string_equal(c.access_log, "-");
    assert_int_equal(c.log_format, PC_LOG_FORMAT_TEXT);
    assert_int_equal(pc_config_validate(&c, err, sizeof err), 0);
}

/* Every option set away from its default (through the command-line path). */
static const char *const non_defaults[][3] = {
    {"server", "listen", "127.0.0.1:1"},
    {"server", "admin_listen", "127.0.0.1:2"},
    {"server", "max_body_bytes", "1"},
    {"server", "max_header_bytes", "2k"},
    {"server", "request_timeout_ms", "3"},
    {"server", "idle_timeout_ms", "4"},
    {"server", "drain_timeout_ms", "5"},
    {"server", "max_connections", "6"},
    {"backend", "url", "https://example.org:1/x"},
    {"backend", "connect_timeout_ms", "7"},
    {"backend", "timeout_ms", "8"},
    {"backend", "max_response_bytes", "9"},
    {"redis", "host", "redis.example"},
    {"redis", "port", "10"},
    {"redis", "password", "secret"},
    {"redis", "db", "11"},
    {"redis", "timeout_ms", "12"},
    {"cache", "ttl_s", "13"},
    {"cache", "max_value_bytes", "14"},
    {"cache", "namespace", "ns"},
    {"cache", "key_prefix", "p:"},
    {"cache", "routes", "GET /a"},
    {"cache", "input_fields", "x"},
    {"cache", "path_field", ""},
    {"cache", "per_instance", "off"},
    {"server", "workers", "3"},
    {"jobs", "enabled", "off"},
    {"jobs", "result_ttl_s", "15"},
    {"jobs", "claim_after_ms", "1600"},
    {"jobs", "max_queue", "17"},
    {"jobs", "concurrency", "0"},
    {"jobs", "async_prefix", "/a/b"},
    {"jobs", "compat", "on"},
    {"jobs", "stream", "s"},
    {"log", "level", "error"},
    {"log", "access_log", "off"},
    {"log", "format", "json"},
};

static void test_shipped_conf_equals_defaults(void **state)
{
    (void)state;
    struct pc_config defaults, c;
    pc_config_defaults(&defaults);

    /* Start far from the defaults, so that only a file naming every option gets back. */
    pc_config_defaults(&c);
    for (size_t i = 0; i < sizeof non_defaults / sizeof non_defaults[0]; i++) {
        if (pc_config_set(&c, non_defaults[i][0], non_defaults[i][1], non_defaults[i][2], err,
                          sizeof err) != 0)
            fail_msg("set %s.%s: %s", non_defaults[i][0], non_defaults[i][1], err);
    }
    assert_int_equal(pc_config_validate(&c, err, sizeof err), 0);
    assert_memory_not_equal(&c, &defaults, sizeof c);

    if (pc_config_load(&c, SHIPPED_CONF, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_memory_equal(&c, &defaults, sizeof c);
}

/* ---- each type ---- */

static void test_sizes(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[server]\n"
                                   "max_body_bytes = 12345\n"
                                   "max_header_bytes = 2K\n"
                                   "[backend]\n"
                                   "max_response_bytes = 1g\n"
                                   "[cache]\n"
                                   "max_value_bytes = 3M\n"),
                     0);
    assert_int_equal(c.max_body_bytes, 12345);
    assert_int_equal(c.max_header_bytes, 2048);
    assert_int_equal(c.backend_max_response_bytes, 1024 * 1024 * 1024);
    assert_int_equal(c.max_value_bytes, 3 * 1024 * 1024);

    const char *bad[] = {
        "16mb", "-1", "1.5m", "", "k", "0x10", "16 m", "99999999999999999999", "99999999999g"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pc_config_defaults(&c);
        if (pc_config_set(&c, "server", "max_body_bytes", bad[i], err, sizeof err) == 0)
            fail_msg("size '%s' accepted", bad[i]);
        assert_int_equal(c.max_body_bytes, 16777216); /* unchanged */
    }
    /* Out of bounds: max_header_bytes is 1k..1m. */
    assert_int_equal(pc_config_set(&c, "server", "max_header_bytes", "2m", err, sizeof err), -1);
    assert_err_contains("out of range");
    assert_int_equal(pc_config_set(&c, "server", "max_header_bytes", "1023", err, sizeof err), -1);
    assert_int_equal(pc_config_set(&c, "server", "max_header_bytes", "1m", err, sizeof err), 0);
    assert_int_equal(c.max_header_bytes, 1048576);
}

static void test_ints(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[redis]\nport=1\ndb = 15\n[server]\ndrain_timeout_ms = 0\n"),
                     0);
    assert_int_equal(c.redis_port, 1);
    assert_int_equal(c.redis_db, 15);
    assert_int_equal(c.drain_timeout_ms, 0);

    const char *bad[] = {"", "x", "12x", "+5", " 5", "1.0", "0x10", "99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_set(&c, "redis", "db", bad[i], err, sizeof err) == 0)
            fail_msg("int '%s' accepted", bad[i]);
        assert_err_contains("not an integer");
    }
    assert_int_equal(pc_config_set(&c, "redis", "db", "-1", err, sizeof err), -1);
    assert_err_contains("out of range");
    assert_int_equal(c.redis_db, 15);
}

static void test_numbers_and_choices(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\nverify_sample = 0.25\nverify_compare = JSON\n"
                                   "verify_float_tolerance = 1e-6\nverify_action = purge\n"),
                     0);
    assert_true(c.verify_sample == 0.25);
    assert_int_equal(c.verify_compare, PC_VERIFY_JSON);
    assert_true(c.verify_float_tolerance == 1e-6);
    assert_int_equal(c.verify_action, PC_VERIFY_PURGE);

    const char *bad[] = {"", "x", "0x1", "nan", "inf", "1,5", " 0.5", "0.5 x", "--1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_set(&c, "cache", "verify_sample", bad[i], err, sizeof err) == 0)
            fail_msg("number '%s' accepted", bad[i]);
        assert_err_contains("not a decimal number");
    }
    assert_int_equal(pc_config_set(&c, "cache", "verify_sample", "1.0001", err, sizeof err), -1);
    assert_err_contains("out of range (0..1)");
    assert_int_equal(pc_config_set(&c, "cache", "verify_float_tolerance", "-1e-9", err, sizeof err),
                     -1);
    assert_true(c.verify_sample == 0.25); /* a refused value leaves the field as it was */
    assert_int_equal(pc_config_set(&c, "cache", "verify_compare", "xml", err, sizeof err), -1);
    assert_err_contains("'xml' must be one of bytes, json");
    assert_int_equal(pc_config_set(&c, "cache", "verify_action", "", err, sizeof err), -1);
    assert_err_contains("must be one of log, purge");
    assert_int_equal(c.verify_action, PC_VERIFY_PURGE);
}

static void test_strings_quotes_comments_whitespace(void **state)
{
    (void)state;
    struct pc_config c;
    const char *text = "\xEF\xBB\xBF# a comment\n"
                       "   ; another comment, indented\n"
                       "\n"
                       "   \t\n"
                       "  [ cache ]  \n"
                       "\tnamespace\t=\t  models-prod  \r\n"
                       "key_prefix = \"  pc#1;  \"\n"
                       "path_field = \"\"\n"
                       "[redis]\n"
                       "password = p@ss word = x\n"
                       "host=\"#host\"\n"
                       "[log]\n"
                       "level = WARN\n"
                       "access_log = /var/log/predcache/access.log"; /* no final newline */
    assert_int_equal(load_text(&c, text), 0);
    assert_string_equal(c.namespace_, "models-prod");
    assert_string_equal(c.key_prefix, "  pc#1;  ");
    assert_string_equal(c.path_field, "");
    assert_string_equal(c.redis_password, "p@ss word = x");
    assert_string_equal(c.redis_host, "#host");
    assert_string_equal(c.log_level, "warn");
    assert_string_equal(c.access_log, "/var/log/predcache/access.log");
}

static void test_duplicate_key_last_wins(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(
        load_text(&c, "[cache]\nttl_s = 10\nttl_s = 20\n[redis]\n[cache]\nttl_s = 30\n"), 0);
    assert_int_equal(c.ttl_s, 30);
}

static void test_hostport_and_url_values(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[server]\n"
                                   "listen = [::1]:8080\n"
                                   "admin_listen = :0\n"
                                   "[backend]\n"
                                   "url = https://user:pw@models.internal:8443/base/\n"),
                     0);
    assert_string_equal(c.listen, "[::1]:8080");
    assert_string_equal(c.admin_listen, ":0");
    /* Trailing slashes go, so that the base joins with a request path cleanly. */
    assert_string_equal(c.backend_url, "https://user:pw@models.internal:8443/base");

    const char *good[] = {"http://h", "HTTP://h:1", "http://[::1]:8501", "http://[::1]",
                          "http://10.0.0.1:8501/v1"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (pc_config_set(&c, "backend", "url", good[i], err, sizeof err) != 0)
            fail_msg("url '%s' refused: %s", good[i], err);
    }
    assert_int_equal(pc_config_set(&c, "backend", "url", "http://h/", err, sizeof err), 0);
    assert_string_equal(c.backend_url, "http://h");
}

static void test_routes(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\n"
                                   "routes = post /a ,GET\t/b/*/c,  * /any*  \n"),
                     0);
    assert_int_equal(c.n_routes, 3);
    assert_string_equal(c.routes[0].method, "POST");
    assert_string_equal(c.routes[0].pattern, "/a");
    assert_string_equal(c.routes[1].method, "GET");
    assert_string_equal(c.routes[1].pattern, "/b/*/c");
    assert_string_equal(c.routes[2].method, "*");
    assert_string_equal(c.routes[2].pattern, "/any*");
    /* Setting the list replaces it: nothing of the old entries is left. */
    assert_int_equal(pc_config_set(&c, "cache", "routes", "DELETE /x", err, sizeof err), 0);
    assert_int_equal(c.n_routes, 1);
    assert_string_equal(c.routes[0].method, "DELETE");
    assert_string_equal(c.routes[1].pattern, "");

    /* Empty: nothing is cached, and that is a valid configuration. */
    assert_int_equal(load_text(&c, "[cache]\nroutes =\n"), 0);
    assert_int_equal(c.n_routes, 0);

    const char *methods = "GET /1, POST /2, PUT /3, DELETE /4, PATCH /5, HEAD /6, OPTIONS /7";
    assert_int_equal(pc_config_set(&c, "cache", "routes", methods, err, sizeof err), 0);
    assert_int_equal(c.n_routes, 7);

    /* PC_CFG_MAX_LIST entries fit, one more does not. */
    char many[4096] = "";
    for (int i = 0; i < PC_CFG_MAX_LIST; i++)
        snprintf(many + strlen(many), sizeof many - strlen(many), "%sPOST /m%d", i ? "," : "", i);
    assert_int_equal(pc_config_set(&c, "cache", "routes", many, err, sizeof err), 0);
    assert_int_equal(c.n_routes, PC_CFG_MAX_LIST);
    strcat(many, ",POST /last");
    assert_int_equal(pc_config_set(&c, "cache", "routes", many, err, sizeof err), -1);
    assert_err_contains("too many");
    assert_int_equal(c.n_routes, PC_CFG_MAX_LIST);

    const char *bad[] = {"POST /a,,POST /b", "POST /a,",   ", POST /a", "POST", "/a",
                         "POST /a extra",    "POST /a\x01"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_set(&c, "cache", "routes", bad[i], err, sizeof err) == 0)
            fail_msg("routes '%s' accepted", bad[i]);
    }
}

static void test_route_bad_method(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\nroutes = POST /a, FETCH /b\n"), -1);
    assert_err_at(2, "[cache] routes: ");
    assert_err_contains("FETCH");
}

static void test_route_pattern_without_slash(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\nroutes = POST predict\n"), -1);
    assert_err_at(2, "[cache] routes: ");
    assert_err_contains("must start with '/'");
}

/* [redis] cluster: its seeds, and the settings a cluster cannot have. */
static void test_redis_cluster(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(
        load_text(&c, "[redis]\ncluster = on\nnodes = 10.0.0.2:7000, [::1]:7001 , h:7002\n"), 0);
    assert_int_equal(c.redis_cluster, 1);
    assert_int_equal(load_text(&c, "[redis]\nnodes = 10.0.0.2:7000\n"), -1);
    assert_err_at(2, "[redis] seed nodes are for cluster = on");
    assert_int_equal(load_text(&c, "[redis]\ncluster = on\nnodes = 10.0.0.2\n"), -1);
    assert_err_at(3, "[redis] nodes: '10.0.0.2' is not host:port");
    assert_int_equal(load_text(&c, "[redis]\ncluster = on\ndb = 2\n"), -1);
    assert_err_at(2, "[redis] cluster = on needs db = 0");
    assert_int_equal(load_text(&c, "[redis]\ncluster = on\nsentinels = h:26379\n"
                                   "sentinel_master = m\n"),
                     -1);
    assert_err_contains("do not go together");
    assert_int_equal(load_text(&c, "[redis]\ncluster = on\n[cache]\nkey_prefix = {pc}:\n"), -1);
    assert_err_contains("hash tag in the prefix");
    assert_int_equal(load_text(&c, "[redis]\ncluster = on\n[jobs]\nstream = q}x\n"), -1);
    assert_err_contains("no hash tag");
    assert_int_equal(load_text(&c, "[redis]\ncluster = on\n[jobs]\nstream = q{x}\n"), 0);
    /* without cluster, a prefix may hold braces as before */
    assert_int_equal(load_text(&c, "[cache]\nkey_prefix = {pc}:\n"), 0);
}

static void test_input_fields(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\ninput_fields = a,b_c , d.e\n"), 0);
    assert_int_equal(c.n_input_fields, 3);
    assert_string_equal(c.input_fields[0], "a");
    assert_string_equal(c.input_fields[1], "b_c");
    assert_string_equal(c.input_fields[2], "d.e");
    assert_string_equal(c.input_fields[3], "");

    assert_int_equal(pc_config_set(&c, "cache", "input_fields", "", err, sizeof err), 0);
    assert_int_equal(c.n_input_fields, 0);

    assert_int_equal(pc_config_set(&c, "cache", "input_fields", "a b", err, sizeof err), -1);
    assert_err_contains("spaces");
    assert_int_equal(pc_config_set(&c, "cache", "input_fields", "a,,b", err, sizeof err), -1);
    char longname[100];
    memset(longname, 'n', 64);
    longname[64] = '\0';
    assert_int_equal(pc_config_set(&c, "cache", "input_fields", longname, err, sizeof err), -1);
    assert_err_contains("too long");
    longname[63] = '\0';
    assert_int_equal(pc_config_set(&c, "cache", "input_fields", longname, err, sizeof err), 0);
    assert_int_equal(c.n_input_fields, 1);
}

static void test_bools(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[jobs]\nenabled = OFF\ncompat = Yes\n[cache]\n"
                                   "per_instance = false\n"),
                     0);
    assert_int_equal(c.jobs_enabled, 0);
    assert_int_equal(c.jobs_compat, 1);
    assert_int_equal(c.per_instance, 0);

    const char *on[] = {"on", "yes", "true", "1", "ON", "True"};
    const char *off[] = {"off", "no", "false", "0", "Off", "NO"};
    for (size_t i = 0; i < sizeof on / sizeof on[0]; i++) {
        assert_int_equal(pc_config_set(&c, "jobs", "compat", off[i], err, sizeof err), 0);
        assert_int_equal(c.jobs_compat, 0);
        assert_int_equal(pc_config_set(&c, "jobs", "compat", on[i], err, sizeof err), 0);
        assert_int_equal(c.jobs_compat, 1);
    }
    const char *bad[] = {"", "2", "onn", "enabled", " on", "y", "-1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_set(&c, "jobs", "compat", bad[i], err, sizeof err) == 0)
            fail_msg("bool '%s' accepted", bad[i]);
        assert_err_contains("must be on or off");
        assert_int_equal(c.jobs_compat, 1); /* unchanged */
    }
    assert_int_equal(load_text(&c, "[jobs]\n\nenabled = maybe\n"), -1);
    assert_err_at(3, "[jobs] enabled: 'maybe' must be on or off");
}

/* [server] workers: auto (0, the default) or 1..64, written back as it was given. */
static void test_workers(void **state)
{
    (void)state;
    struct pc_config c;
    pc_config_defaults(&c);
    assert_int_equal(c.workers, 0);
    assert_int_equal(load_text(&c, "[server]\nworkers = 4\n"), 0);
    assert_int_equal(c.workers, 4);
    assert_int_equal(pc_config_set(&c, "server", "workers", "Auto", err, sizeof err), 0);
    assert_int_equal(c.workers, 0);
    assert_int_equal(pc_config_set(&c, "server", "workers", "64", err, sizeof err), 0);
    const char *bad[] = {"0", "65", "-1", "", "two", "auto2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_set(&c, "server", "workers", bad[i], err, sizeof err) == 0)
            fail_msg("workers '%s' accepted", bad[i]);
        assert_int_equal(c.workers, 64); /* unchanged */
    }
    assert_err_contains("is not auto or an integer");
    assert_int_equal(load_text(&c, "[server]\nworkers = 0\n"), -1);
    assert_err_at(2, "[server] workers: 0 is out of range (1..64)");
}

static void test_jobs_options(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[jobs]\n"
                                   "result_ttl_s = 1\n"
                                   "claim_after_ms = 100\n"
                                   "max_queue = 1\n"
                                   "concurrency = 1024\n"
                                   "async_prefix = /api/async\n"
                                   "stream = my:jobs\n"),
                     0);
    assert_int_equal(c.jobs_result_ttl_s, 1);
    assert_int_equal(c.jobs_claim_after_ms, 100);
    assert_int_equal(c.jobs_max_queue, 1);
    assert_int_equal(c.jobs_concurrency, 1024);
    assert_string_equal(c.jobs_async_prefix, "/api/async");
    assert_string_equal(c.jobs_stream, "my:jobs");

    /* Bounds. */
    assert_int_equal(load_text(&c, "[jobs]\nclaim_after_ms = 99\n"), -1);
    assert_err_at(2, "[jobs] claim_after_ms: 99 is out of range (100..3600000)");
    assert_int_equal(load_text(&c, "[jobs]\nresult_ttl_s = 0\n"), -1);
    assert_err_at(2, "[jobs] result_ttl_s: ");
    assert_int_equal(load_text(&c, "[jobs]\nmax_queue = 0\n"), -1);
    assert_err_at(2, "[jobs] max_queue: ");
    assert_int_equal(load_text(&c, "[jobs]\nconcurrency = 1025\n"), -1);
    assert_err_at(2, "[jobs] concurrency: ");
    assert_int_equal(load_text(&c, "[jobs]\nconcurrency = -1\n"), -1);

    /* async_prefix: empty (alias off) or a path prefix. */
    assert_int_equal(load_text(&c, "[jobs]\nasync_prefix =\n"), 0);
    assert_string_equal(c.jobs_async_prefix, "");
    const char *bad[] = {"async", "/", "/async/", "/a*", "/a b", "/jobs", "/job", "/a?x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "[jobs]\nasync_prefix = %s\n", bad[i]);
        if (load_text(&c, text) == 0)
            fail_msg("async_prefix '%s' accepted", bad[i]);
        assert_err_contains("[jobs] async_prefix: ");
        assert_string_equal(c.jobs_async_prefix, "/async"); /* untouched */
    }
    /* The same check for a struct filled in code. */
    pc_config_defaults(&c);
    strcpy(c.jobs_async_prefix, "nope");
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[jobs] async_prefix");
    pc_config_defaults(&c);
    c.jobs_enabled = 2;
    assert_int_equal(pc_config_validate(&c, err, sizeof err), 0); /* any nonzero is on */
}

/* ---- parse errors: each names the file, the line, the key and why ---- */

static void test_err_unknown_key(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\nttl_s = 5\nbogus = 1\n"), -1);
    assert_err_at(3, "[cache] bogus: unknown key");
    assert_err_contains("[cache] bogus");
    assert_err_contains("unknown key");
    /* A failed load leaves the configuration as it was. */
    assert_int_equal(c.ttl_s, 86400);
}

/* A rule between two options fails at the later of the lines that set them. */
static void test_err_rules_between_options_name_a_line(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(
        load_text(&c, "[backend]\nconnect_timeout_ms = 5000\n# x\ntimeout_ms = 1000\n"), -1);
    assert_err_at(4, "[backend] connect_timeout_ms (5000) must not be more than timeout_ms (1000)");
    assert_int_equal(load_text(&c, "[backend]\ntimeout_ms = 500\n"), -1); /* default connect */
    assert_err_at(2, "[backend] connect_timeout_ms (1000)");
    assert_int_equal(load_text(&c, "[backend]\nhealth_path = health\n"), -1);
    assert_err_at(2, "[backend] health_path: must start with '/'");
    assert_int_equal(load_text(&c, "[server]\nadmin_listen = 127.0.0.1:7000\n\n"
                                   "listen = 127.0.0.1:7000\n"),
                     -1);
    assert_err_at(4, "[server] listen (127.0.0.1:7000) and admin_listen");
    assert_int_equal(load_text(&c, "[cache]\ngrace_s = 1073741823\n[cache]\nttl_s = 2000000000\n"),
                     -1);
    assert_err_at(4, "[cache] grace_s: ttl_s + grace_s is too large");
    assert_int_equal(load_text(&c, "[jobs]\n\nasync_prefix = /jobs\n"), -1);
    assert_err_at(3, "[jobs] async_prefix: ");
}

/* A typo gets the closest known name; a name far from every known one gets none. */
static void test_err_suggests_the_closest_name(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\ntll_s = 5\n"), -1);
    assert_err_at(2, "[cache] tll_s: unknown key (did you mean 'ttl_s'?)");
    assert_int_equal(load_text(&c, "[cache]\nTTL_S = 5\n"), -1); /* keys are lower case */
    assert_err_contains("(did you mean 'ttl_s'?)");
    assert_int_equal(load_text(&c, "[cahce]\nttl_s = 5\n"), -1); /* two letters swapped */
    assert_err_at(1, "unknown section [cahce] (did you mean [cache]?)");
    assert_int_equal(load_text(&c, "[route r]\nmatch = POST /r\nbakend = b\n"), -1);
    assert_err_at(3, "[route r] bakend: unknown key (did you mean 'backend'?)");
    assert_int_equal(load_text(&c, "[backend b]\nurl = http://h\ntimeout = 5\n"), -1);
    assert_err_contains("(did you mean 'timeout_ms'?)");
    assert_int_equal(load_text(&c, "[log]\nfromat = json\n"), -1);
    assert_err_at(2, "[log] fromat: unknown key (did you mean 'format'?)");
    assert_int_equal(load_text(&c, "[log]\nformat = yaml\n"), -1);
    assert_err_contains("'yaml' must be one of text, json");
    assert_int_equal(load_text(&c, "[log]\nformat = JSON\n"), 0);
    assert_int_equal(c.log_format, PC_LOG_FORMAT_JSON);
    assert_int_equal(load_text(&c, "[cache]\nzzzzzz = 1\n"), -1);
    assert_err_at(2, "[cache] zzzzzz: unknown key");
    assert_null(strstr(err, "did you mean"));
    pc_config_defaults(&c);
    assert_int_equal(pc_config_set(&c, "redis", "prot", "6380", err, sizeof err), -1);
    assert_string_equal(err, "[redis] prot: unknown key (did you mean 'port'?)");
}

/* [redis] host is a host: a URL, a port, a path or a space in it fails --check, which it
 * passed before (and every connect failed). */
static void test_err_redis_host_is_a_host(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[redis]\nhost = redis://u:p@cache.internal:6380/2\n"), -1);
    assert_err_at(2, "[redis] host: 'redis://u:p@cache.internal:6380/2' is a URL: write the "
                     "host alone (host = cache.internal;");
    assert_int_equal(load_text(&c, "[redis]\nhost = 10.0.0.1:6379\n"), -1);
    assert_err_at(2, "[redis] host: '10.0.0.1:6379' holds a port: write host = 10.0.0.1 and "
                     "port = 6379");
    assert_int_equal(load_text(&c, "[redis]\nhost = a b\n"), -1);
    assert_err_contains("is not a host name or address");
    assert_int_equal(load_text(&c, "[redis]\nhost = ::1\n"), 0); /* IPv6 */
    assert_int_equal(load_text(&c, "[redis]\nhost = redis.internal\n"), 0);
}

static void test_err_unknown_section(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "# x\n[nope]\nkey = 1\n"), -1);
    assert_err_at(2, "unknown section [nope]");
    assert_int_equal(load_text(&c, "[server\n"), -1);
    assert_err_at(1, "expected '[section]'");
}

static void test_err_missing_equals(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[server]\nlisten 0.0.0.0:8080\n"), -1);
    assert_err_at(2, "expected 'key = value'");
    assert_int_equal(load_text(&c, "[server]\n= 5\n"), -1);
    assert_err_at(2, "expected 'key = value'");
}

static void test_err_int_out_of_range(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[redis]\nport = 70000\n"), -1);
    assert_err_at(2, "[redis] port: 70000 is out of range (1..65535)");
    assert_int_equal(load_text(&c, "[redis]\nport = 0\n"), -1);
    assert_err_at(2, "[redis] port: ");
    assert_int_equal(load_text(&c, "[cache]\nmax_value_bytes = 513m\n"), -1);
    assert_err_at(2, "[cache] max_value_bytes: 513m is out of range (1..512m)");
}

static void test_err_bad_hostport(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[server]\nlisten = localhost\n"), -1);
    assert_err_at(2, "[server] listen: ");
    assert_int_equal(load_text(&c, "[server]\n\nadmin_listen = 127.0.0.1:99999\n"), -1);
    assert_err_at(3, "[server] admin_listen: ");
}

static void test_err_bad_url(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[backend]\nurl = ftp://models:21\n"), -1);
    assert_err_at(2, "[backend] url: ");
    assert_err_contains("http://");
    const char *bad[] = {"",           "models:8501",     "http://",     "http:///x",
                         "http://:80", "http://h:0",      "http://h:x",  "http://h:99999",
                         "http://h x", "http://h/?q=1",   "http://[::1", "http://h]",
                         "https://@/", "http://[::1]:80x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_set(&c, "backend", "url", bad[i], err, sizeof err) == 0)
            fail_msg("url '%s' accepted", bad[i]);
    }
    assert_string_equal(c.backend_url, "http://127.0.0.1:8501");
}

static void test_err_bad_level(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[log]\nlevel = verbose\n"), -1);
    assert_err_at(2, "[log] level: ");
    assert_err_contains("debug, info, warn, error");
    assert_int_equal(pc_config_set(&c, "log", "level", "warning_and_more", err, sizeof err), -1);
}

static void test_err_string_too_long(void **state)
{
    (void)state;
    struct pc_config c;
    char text[600];
    char name[PC_CFG_STR + 1];
    memset(name, 'a', PC_CFG_STR);
    name[PC_CFG_STR] = '\0'; /* 256 bytes: one more than fits */
    snprintf(text, sizeof text, "[cache]\nnamespace = %s\n", name);
    assert_int_equal(load_text(&c, text), -1);
    assert_err_at(2, "[cache] namespace: too long");
    assert_string_equal(c.namespace_, "default");

    name[PC_CFG_STR - 1] = '\0'; /* 255 bytes fit */
    assert_int_equal(pc_config_set(&c, "cache", "namespace", name, err, sizeof err), 0);
    assert_int_equal(strlen(c.namespace_), PC_CFG_STR - 1);

    assert_int_equal(pc_config_set(&c, "redis", "host", "", err, sizeof err), -1);
    assert_err_contains("empty");
    assert_int_equal(pc_config_set(&c, "cache", "namespace", "a\nb", err, sizeof err), -1);
    assert_err_contains("control character");
}

static void test_err_key_before_section(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "# top\nlisten = 0.0.0.0:1\n[server]\n"), -1);
    assert_err_at(2, "listen: key outside any [section]");
}

static void test_err_unterminated_quote(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[cache]\nnamespace = \"abc\n"), -1);
    assert_err_at(2, "[cache] namespace: unterminated quote");
    assert_int_equal(load_text(&c, "[cache]\nnamespace = \"\n"), -1);
    assert_err_at(2, "[cache] namespace: unterminated quote");
}

static void test_line_length(void **state)
{
    (void)state;
    struct pc_config c;
    /* A line of exactly 16384 bytes is read; 16385 is refused. */
    enum { MAXL = 16384 };
    size_t sz = 8 + MAXL + 2 + 1;
    char *text = malloc(sz);
    assert_non_null(text);
    strcpy(text, "[cache]\n");
    char *line = text + strlen(text);
    memset(line, ' ', MAXL);
    memcpy(line, "ttl_s = 7", 9);
    line[MAXL] = '\n';
    line[MAXL + 1] = '\0';
    assert_int_equal(load_text(&c, text), 0);
    assert_int_equal(c.ttl_s, 7);

    line[MAXL] = ' ';
    line[MAXL + 1] = '\n';
    line[MAXL + 2] = '\0';
    assert_int_equal(load_text(&c, text), -1);
    assert_err_at(2, "line longer than 16384 bytes");

    free(text);

    /* Far past the limit. */
    char *big = calloc(1, 8 + 60000 + 2);
    assert_non_null(big);
    strcpy(big, "[cache]\n");
    memset(big + 8, 'x', 60000);
    big[8 + 60000] = '\n';
    assert_int_equal(load_text(&c, big), -1);
    assert_err_at(2, "line longer than 16384 bytes");
    free(big);
}

/* Fuzzer finding: a NUL on the last line (no newline after it) was cut, not refused. */
static void test_nul_in_last_line(void **state)
{
    (void)state;
    struct pc_config c;
    pc_config_defaults(&c);
    static const char text[] = "[cache]\nnamespace = abc\0def";
    char path[] = "/tmp/predcache-test-nul-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    char msg[512];
    assert_int_equal(pc_config_load(&c, path, msg, sizeof msg), -1);
    assert_non_null(strstr(msg, ":2: NUL byte in line"));
    unlink(path);
}

static void dump_to_file(const char *line, void *arg)
{
    fprintf(arg, "%s\n", line);
}

/* Fuzzer finding: a full route list as the dump writes it must load back. */
static void test_dump_of_long_route_list_loads_back(void **state)
{
    (void)state;
    struct pc_config c;
    pc_config_defaults(&c);
    char list[8192] = "";
    for (int i = 0; i < PC_CFG_MAX_LIST; i++) {
        char one[160];
        snprintf(one, sizeof one,
                 "%sPOST /v1/models/a-rather-long-model-name-%02d-with-"
                 "padding-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx/*:predict",
                 i ? "," : "", i);
        strcat(list, one);
    }
    char msg[512];
    assert_int_equal(pc_config_set(&c, "cache", "routes", list, msg, sizeof msg), 0);
    char path[] = "/tmp/predcache-test-dump-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    pc_config_dump(&c, dump_to_file, f);
    fclose(f);
    struct pc_config back;
    pc_config_defaults(&back);
    assert_int_equal(pc_config_load(&back, path, msg, sizeof msg), 0);
    assert_int_equal(back.n_routes, PC_CFG_MAX_LIST);
    assert_string_equal(back.routes[31].pattern, c.routes[31].pattern);
    unlink(path);
}

static void test_err_missing_file(void **state)
{
    (void)state;
    struct pc_config c;
    pc_config_defaults(&c);
    assert_int_equal(pc_config_load(&c, "/nonexistent/predcache.conf", err, sizeof err), -1);
    assert_string_equal(err, "/nonexistent/predcache.conf: No such file or directory");
}

/* ---- validate ---- */

static void test_validate_same_listen(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[server]\nlisten = 127.0.0.1:9090\n"), -1);
    assert_err_at(2, "[server] listen");
    assert_err_contains("admin_listen");
    assert_string_equal(c.listen, "0.0.0.0:8080"); /* untouched */

    /* The wildcard overlaps any address on the same port; ":P" is the wildcard. */
    pc_config_defaults(&c);
    assert_int_equal(pc_config_set(&c, "server", "listen", ":9090", err, sizeof err), 0);
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("listen");
    /* Different ports, or port 0 (ephemeral) on both, are fine. */
    assert_int_equal(pc_config_set(&c, "server", "listen", "127.0.0.1:0", err, sizeof err), 0);
    assert_int_equal(pc_config_set(&c, "server", "admin_listen", "127.0.0.1:0", err, sizeof err),
                     0);
    assert_int_equal(pc_config_validate(&c, err, sizeof err), 0);
    assert_int_equal(pc_config_set(&c, "server", "listen", "10.0.0.1:9090", err, sizeof err), 0);
    assert_int_equal(pc_config_set(&c, "server", "admin_listen", "127.0.0.1:9090", err, sizeof err),
                     0);
    assert_int_equal(pc_config_validate(&c, err, sizeof err), 0);
}

static void test_validate_connect_timeout(void **state)
{
    (void)state;
    struct pc_config c;
    assert_int_equal(load_text(&c, "[backend]\nconnect_timeout_ms = 5000\ntimeout_ms = 4000\n"),
                     -1);
    assert_err_at(3, "[backend] connect_timeout_ms (5000)");
    assert_err_contains("timeout_ms (4000)");
    /* Equal is fine. */
    assert_int_equal(load_text(&c, "[backend]\nconnect_timeout_ms = 4000\ntimeout_ms = 4000\n"), 0);
}

static void test_validate_struct_filled_in_code(void **state)
{
    (void)state;
    struct pc_config c;

    pc_config_defaults(&c);
    c.max_value_bytes = (size_t)600 * 1024 * 1024;
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[cache] max_value_bytes");

    pc_config_defaults(&c);
    c.redis_port = 0;
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[redis] port");

    pc_config_defaults(&c);
    c.backend_url[0] = '\0';
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[backend] url");

    pc_config_defaults(&c);
    strcpy(c.routes[0].method, "FETCH");
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[cache] routes");

    pc_config_defaults(&c);
    c.n_input_fields = PC_CFG_MAX_LIST + 1;
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[cache] input_fields");

    pc_config_defaults(&c);
    memset(c.key_prefix, 'k', sizeof c.key_prefix);
    assert_int_equal(pc_config_validate(&c, err, sizeof err), -1);
    assert_err_contains("[cache] key_prefix");
}

/* ---- command-line overrides ---- */

static void test_set_overrides(void **state)
{
    (void)state;
    struct pc_config c;
    pc_config_defaults(&c);
    assert_int_equal(pc_config_set(&c, "server", "listen", "0.0.0.0:18080", err, sizeof err), 0);
    assert_string_equal(c.listen, "0.0.0.0:18080");
    assert_int_equal(pc_config_set(&c, "redis", "port", "16379", err, sizeof err), 0);
    assert_int_equal(c.redis_port, 16379);
    assert_int_equal(pc_config_set(&c, "log", "level", "debug", err, sizeof err), 0);
    assert_string_equal(c.log_level, "debug");

    /* The reason carries the option but no file location. */
    assert_int_equal(pc_config_set(&c, "redis", "port", "0", err, sizeof err), -1);
    assert_string_equal(err, "[redis] port: 0 is out of range (1..65535)");
    assert_int_equal(pc_config_set(&c, "cache", "bogus", "1", err, sizeof err), -1);
    assert_string_equal(err, "[cache] bogus: unknown key");
    assert_int_equal(pc_config_set(&c, "nope", "listen", "1", err, sizeof err), -1);
    assert_string_equal(err, "unknown section [nope]");
    /* A value in quotes is taken literally here: quotes belong to the file syntax. */
    assert_int_equal(pc_config_set(&c, "cache", "namespace", " x ", err, sizeof err), 0);
    assert_string_equal(c.namespace_, " x ");

    /* Overrides, then a file over them: the file wins for what it names. */
    write_temp("[redis]\nport = 6380\n");
    assert_int_equal(pc_config_load(&c, last_path, err, sizeof err), 0);
    unlink(last_path);
    assert_int_equal(c.redis_port, 6380);
    assert_string_equal(c.listen, "0.0.0.0:18080");

    /* A NULL or zero-length err is allowed. */
    assert_int_equal(pc_config_set(&c, "redis", "port", "x", NULL, 0), -1);
}

/* ---- split_hostport ---- */

static void test_split_hostport(void **state)
{
    (void)state;
    char host[64];
    int port = -1;

    assert_int_equal(pc_config_split_hostport("127.0.0.1:8080", host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 8080);
    assert_int_equal(pc_config_split_hostport("localhost:1", host, sizeof host, &port), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 1);
    assert_int_equal(pc_config_split_hostport("[::1]:9090", host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 9090);
    assert_int_equal(pc_config_split_hostport("[fe80::1%eth0]:80", host, sizeof host, &port), 0);
    assert_string_equal(host, "fe80::1%eth0");
    assert_int_equal(pc_config_split_hostport(":7000", host, sizeof host, &port), 0);
    assert_string_equal(host, "0.0.0.0");
    assert_int_equal(port, 7000);
    assert_int_equal(pc_config_split_hostport("0.0.0.0:0", host, sizeof host, &port), 0);
    assert_int_equal(port, 0);
    assert_int_equal(pc_config_split_hostport("h:65535", host, sizeof host, &port), 0);
    assert_int_equal(port, 65535);

    const char *bad[] = {"",      "8080",    "host",   "host:",    ":",      "h:65536", "h:-1",
                         "h:+80", "h:8o",    "h: 80",  "h:123456", "::1:80", "[::1]",   "[::1]80",
                         "[]:80", "[v4]:80", "a b:80", "h/x:80",   "h:80 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (pc_config_split_hostport(bad[i], host, sizeof host, &port) == 0)
            fail_msg("'%s' accepted", bad[i]);
    }
    /* A host longer than the caller's buffer is refused, not cut. */
    char small[4];
    assert_int_equal(pc_config_split_hostport("abcd:1", small, sizeof small, &port), -1);
    assert_int_equal(pc_config_split_hostport("abc:1", small, sizeof small, &port), 0);
}

/* ---- dump ---- */

struct lines {
    char text[16384];
    int n;
};

static void collect(const char *line, void *arg)
{
    struct lines *l = arg;
    assert_null(strchr(line, '\n'));
    size_t used = strlen(l->text);
    snprintf(l->text + used, sizeof l->text - used, "%s\n", line);
    l->n++;
}

static void test_dump(void **state)
{
    (void)state;
    struct pc_config c;
    struct lines *out = calloc(1, sizeof *out);
    assert_non_null(out);
    pc_config_defaults(&c);
    pc_config_dump(&c, collect, out);
    assert_non_null(strstr(out->text, "[server]\nlisten = 0.0.0.0:8080\n"));
    assert_non_null(strstr(out->text, "\n[backend]\n"));
    assert_non_null(strstr(out->text, "\n[redis]\n"));
    assert_non_null(strstr(out->text, "\n[cache]\n"));
    assert_non_null(strstr(out->text, "\n[log]\n"));
    assert_true(strstr(out->text, "[server]") < strstr(out->text, "[backend]"));
    assert_true(strstr(out->text, "[cache]") < strstr(out->text, "[jobs]"));
    assert_true(strstr(out->text, "[jobs]") < strstr(out->text, "[log]"));
    assert_non_null(strstr(out->text, "\n[jobs]\nenabled = on\n"));
    assert_non_null(strstr(out->text, "compat = off\n"));
    assert_non_null(strstr(out->text, "per_instance = on\n"));
    assert_non_null(strstr(out->text, "max_body_bytes = 16m\n"));
    assert_non_null(strstr(out->text, "password = \n"));
    assert_non_null(strstr(out->text, "routes = POST /predict, POST /v1/models/*:predict,"));

    /* The dump reads back as the same configuration (password empty, so not masked). */
    assert_int_equal(pc_config_set(&c, "cache", "namespace", "  spaced ", err, sizeof err), 0);
    assert_int_equal(pc_config_set(&c, "cache", "key_prefix", "\"q\"", err, sizeof err), 0);
    assert_int_equal(pc_config_set(&c, "server", "max_body_bytes", "1000", err, sizeof err), 0);
    memset(out, 0, sizeof *out);
    pc_config_dump(&c, collect, out);
    struct pc_config back;
    assert_int_equal(load_text(&back, out->text), 0);
    assert_memory_equal(&back, &c, sizeof c);

    /* A password is never shown. */
    assert_int_equal(pc_config_set(&c, "redis", "password", "hunter2", err, sizeof err), 0);
    memset(out, 0, sizeof *out);
    pc_config_dump(&c, collect, out);
    assert_non_null(strstr(out->text, "password = ********\n"));
    assert_null(strstr(out->text, "hunter2"));
    free(out);
}

/* ---- named sections: [backend NAME], [route NAME] ---- */

static void test_named_sections(void **state)
{
    (void)state;
    static struct pc_config c;
    int rc = load_text(&c, "[backend]\n"
                           "timeout_ms = 7000\n"
                           "[backend gpu]\n"
                           "url = http://10.0.0.2:8501/\n"
                           "max_in_flight = 4\n"
                           "[route resnet]\n"
                           "match = post /v1/models/resnet*:predict\n"
                           "backend = gpu\n"
                           "ttl_s = 60\n"
                           "input_fields = x\n"
                           "[route meta]\n"
                           "match = GET /v1/models/*/metadata\n"
                           "cache = off\n");
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_int_equal(c.n_backends, 1);
    assert_string_equal(c.backends[0].name, "gpu");
    assert_string_equal(c.backends[0].url, "http://10.0.0.2:8501");
    assert_int_equal(c.backends[0].max_in_flight, 4);
    assert_int_equal(c.backends[0].timeout_ms, 7000); /* inherited from [backend] */
    assert_int_equal(c.backends[0].connect_timeout_ms, c.backend_connect_timeout_ms);
    assert_int_equal(c.n_route_secs, 2);
    const struct pc_route_cfg *r = &c.route_secs[0];
    assert_string_equal(r->name, "resnet");
    assert_string_equal(r->match.method, "POST");
    assert_string_equal(r->match.pattern, "/v1/models/resnet*:predict");
    assert_int_equal(r->backend_index, 1);
    assert_int_equal(r->ttl_s, 60);
    assert_int_equal(r->cache, 1);
    assert_int_equal(r->n_input_fields, 1);
    assert_string_equal(r->input_fields[0], "x");
    assert_string_equal(r->path_field, "file_path"); /* inherited from [cache] */
    assert_int_equal(c.route_secs[1].cache, 0);
    assert_int_equal(c.route_secs[1].ttl_s, c.ttl_s);
    assert_int_equal(c.route_secs[1].backend_index, 0);
}

/* The options of sound keys: per-route credentials, ignore fields, vary, response
 * Cache-Control, inherited from [cache]; header lists hold header names, and replay_headers
 * never what describes one connection or one client. */
static void test_key_options(void **state)
{
    (void)state;
    static struct pc_config c;
    int rc = load_text(&c, "[backend]\n"
                           "cache_id = resnet-v3\n"
                           "[backend gpu]\n"
                           "url = http://10.0.0.2:8501\n"
                           "[cache]\n"
                           "credentials = shared\n"
                           "credential_headers = X-Api-Key, X-Tenant-Token\n"
                           "vary = X-Tenant\n"
                           "ignore_fields = request_id, trace\n"
                           "replay_headers = Content-Type, X-Model-Version\n"
                           "[jobs]\n"
                           "credentials = refuse\n"
                           "[route ts]\n"
                           "match = POST /predictions/*\n"
                           "backend = gpu\n"
                           "response_cache_control = IGNORE\n"
                           "credentials = bypass\n"
                           "[route other]\n"
                           "match = POST /other\n"
                           "ignore_fields =\n"
                           "vary = X-A, X-B\n");
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_string_equal(c.backend_cache_id, "resnet-v3");
    assert_string_equal(c.backends[0].cache_id, ""); /* its own url, not [backend]'s id */
    assert_int_equal(c.credentials, PC_CREDS_SHARED);
    assert_int_equal(c.n_credential_headers, 2);
    assert_string_equal(c.credential_headers[1], "X-Tenant-Token");
    assert_int_equal(c.jobs_credentials, PC_JOBS_CREDS_REFUSE);
    const struct pc_route_cfg *ts = &c.route_secs[0], *other = &c.route_secs[1];
    assert_int_equal(ts->response_cache_control, PC_RCC_IGNORE);
    assert_int_equal(ts->credentials, PC_CREDS_BYPASS);
    assert_int_equal(ts->n_vary, 1); /* inherited */
    assert_string_equal(ts->vary[0], "X-Tenant");
    assert_int_equal(ts->n_ignore_fields, 2);
    assert_string_equal(ts->ignore_fields[1], "trace");
    assert_int_equal(other->response_cache_control, PC_RCC_HONOUR);
    assert_int_equal(other->credentials, PC_CREDS_SHARED);
    assert_int_equal(other->n_ignore_fields, 0); /* set empty: nothing ignored */
    assert_int_equal(other->n_vary, 2);

    assert_int_equal(load_text(&c, "[cache]\nreplay_headers = Content-Type, Set-Cookie\n"), -1);
    assert_err_at(2, "[cache] replay_headers: Set-Cookie is never replayed");
    assert_int_equal(load_text(&c, "[cache]\nreplay_headers = date\n"), -1);
    assert_err_at(2, "[cache] replay_headers: date is never replayed");
    assert_int_equal(load_text(&c, "[cache]\nreplay_headers = Transfer-Encoding\n"), -1);
    assert_int_equal(load_text(&c, "[cache]\nvary = X(Tenant)\n"), -1);
    assert_err_at(2, "[cache] vary: 'X(Tenant)' is not a header name");
    assert_int_equal(load_text(&c, "[cache]\ncredential_headers = a/b\n"), -1);
    assert_int_equal(load_text(&c, "[cache]\ncredentials = maybe\n"), -1);
    assert_err_at(2, "[cache] credentials: 'maybe' must be one of isolate, shared, bypass");
    assert_int_equal(load_text(&c, "[cache]\nreplay_headers = a,b,c,d,e,f,g,h,i\n"), -1);
}

static void test_named_section_errors(void **state)
{
    (void)state;
    static struct pc_config c;
    assert_int_equal(load_text(&c, "[backend gpu]\ntimeout_ms = 5\n"), -1);
    assert_err_at(1, "[backend gpu] url: missing");
    assert_int_equal(load_text(&c, "\n[route a]\nbackend = nope\nmatch = POST /a\n"), -1);
    assert_err_at(2, "[route a] backend: no [backend nope] section");
    assert_int_equal(load_text(&c, "[route a]\nttl_s = 5\n"), -1);
    assert_err_at(1, "[route a] match: missing");
    assert_int_equal(load_text(&c, "[route a]\nmatch = POST /a\ncolour = red\n"), -1);
    assert_err_at(3, "[route a] colour: unknown key");
    assert_int_equal(load_text(&c, "[route a b]\nmatch = POST /a\n"), -1);
    assert_err_at(1, "[route a b]: a name is 1 to 63");
    assert_int_equal(load_text(&c, "[route a]\nmatch = POST a\n"), -1);
    assert_err_at(2, "[route a] match: route 'POST a': pattern must start with '/'");
    assert_int_equal(load_text(&c, "[backend g]\nurl = ftp://x\n"), -1);
    assert_err_at(2, "[backend g] url: ");
    assert_int_equal(
        load_text(&c, "[backend g]\nurl = http://h:1\nconnect_timeout_ms = 9\ntimeout_ms = 5\n"),
        -1);
    assert_err_at(1, "[backend g] connect_timeout_ms (9) must not be more than timeout_ms (5)");
}

static void test_route_table_checks(void **state)
{
    (void)state;
    static struct pc_config c;
    /* The same pattern twice: the second can never be reached. */
    assert_int_equal(
        load_text(&c, "[route a]\nmatch = POST /m/*\n\n[route b]\nmatch = POST /m/*\n"), -1);
    assert_err_at(4, "routes 'a' and 'b' match the same requests (POST /m/*): 'b' is unreachable");
    /* Covered by a more specific route: unreachable. */
    assert_int_equal(load_text(&c, "[route a]\nmatch = POST /models/x*\n"
                                   "[route b]\nmatch = POST /models/xy*\n"
                                   "[route c]\nmatch = POST /models/xyz\n"),
                     0);
    assert_int_equal(load_text(&c, "[route wide]\nmatch = * /a*z\n"
                                   "[route narrow]\nmatch = * /ab*z\n"),
                     0);
    assert_int_equal(load_text(&c, "[cache]\nroutes = POST /x/*\n"
                                   "[route a]\nmatch = POST /x/*\n"),
                     0); /* a section overriding a default route */
    assert_int_equal(load_text(&c, "[cache]\nroutes = POST /x/*, POST /x/*\n"), -1);
    assert_err_contains("unreachable");
    /* Same literal count, overlapping languages: ambiguous. */
    assert_int_equal(load_text(&c, "[route a]\nmatch = POST /v1/models/a*:predict\n"
                                   "\n[route b]\nmatch = POST /v1/models/*b:predict\n"),
                     -1);
    assert_err_at(4, "routes 'a' (POST /v1/models/a*:predict) and 'b'");
    /* Same literal count, disjoint: fine. */
    assert_int_equal(load_text(&c, "[route a]\nmatch = POST /v1/models/a*:predict\n"
                                   "[route b]\nmatch = POST /v1/models/b*:predict\n"),
                     0);
    /* A route that a "*" method twin with more literals covers entirely. */
    assert_int_equal(load_text(&c, "[cache]\nroutes =\n[route any]\nmatch = * /p/*\n"
                                   "[route post]\nmatch = POST /p/*\n"),
                     0);
    /* One language spelled twice: a tie. (A pattern covering another never has more
     * literal characters, so unreachable routes are ties or duplicates.) */
    assert_int_equal(load_text(&c, "[cache]\nroutes =\n[route a]\nmatch = POST /p/**\n"
                                   "\n[route b]\nmatch = POST /p/*\n"),
                     -1);
    assert_err_at(6, "routes 'a' (POST /p/**) and 'b' (POST /p/*) overlap");
}

static void test_named_sections_dump_loads_back(void **state)
{
    (void)state;
    static struct pc_config a, b;
    if (load_text(&a, "[backend gpu]\nurl = http://h:1\n[route r]\nmatch = POST /r*\n"
                      "backend = gpu\ncache = off\n") != 0)
        fail_msg("load failed: %s", err);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    pc_config_dump(&a, dump_to_file, f);
    fclose(f);
    if (load_text(&b, text) != 0)
        fail_msg("dump does not load back: %s\n%s", err, text);
    free(text);
    assert_int_equal(b.n_backends, 1);
    assert_string_equal(b.backends[0].url, "http://h:1");
    assert_int_equal(b.n_route_secs, 1);
    assert_int_equal(b.route_secs[0].cache, 0);
    assert_int_equal(b.route_secs[0].backend_index, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_shipped_conf_equals_defaults),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_ints),
        cmocka_unit_test(test_numbers_and_choices),
        cmocka_unit_test(test_strings_quotes_comments_whitespace),
        cmocka_unit_test(test_duplicate_key_last_wins),
        cmocka_unit_test(test_hostport_and_url_values),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_route_bad_method),
        cmocka_unit_test(test_route_pattern_without_slash),
        cmocka_unit_test(test_redis_cluster),
        cmocka_unit_test(test_input_fields),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_jobs_options),
        cmocka_unit_test(test_err_unknown_key),
        cmocka_unit_test(test_err_suggests_the_closest_name),
        cmocka_unit_test(test_err_redis_host_is_a_host),
        cmocka_unit_test(test_err_rules_between_options_name_a_line),
        cmocka_unit_test(test_err_unknown_section),
        cmocka_unit_test(test_err_missing_equals),
        cmocka_unit_test(test_err_int_out_of_range),
        cmocka_unit_test(test_err_bad_hostport),
        cmocka_unit_test(test_err_bad_url),
        cmocka_unit_test(test_err_bad_level),
        cmocka_unit_test(test_err_string_too_long),
        cmocka_unit_test(test_err_key_before_section),
        cmocka_unit_test(test_err_unterminated_quote),
        cmocka_unit_test(test_line_length),
        cmocka_unit_test(test_nul_in_last_line),
        cmocka_unit_test(test_dump_of_long_route_list_loads_back),
        cmocka_unit_test(test_err_missing_file),
        cmocka_unit_test(test_validate_same_listen),
        cmocka_unit_test(test_validate_connect_timeout),
        cmocka_unit_test(test_validate_struct_filled_in_code),
        cmocka_unit_test(test_set_overrides),
        cmocka_unit_test(test_split_hostport),
        cmocka_unit_test(test_dump),
        cmocka_unit_test(test_named_sections),
        cmocka_unit_test(test_key_options),
        cmocka_unit_test(test_named_section_errors),
        cmocka_unit_test(test_route_table_checks),
        cmocka_unit_test(test_named_sections_dump_loads_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
