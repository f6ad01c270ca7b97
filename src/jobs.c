/*
 * jobs: async prediction jobs, queued in a Redis Stream, run through predcache itself.
 *
 *   client                      this process                      Redis
 *   POST <route>                  |                                 |
 *   Prefer: respond-async  -----> credentials? refuse: 400          |
 *   (or POST /async/<route>)      derive key (400 on a bad body)    |
 *                                 EVAL submit: XLEN >= max_queue? --+--> 429
 *                                 HSET job:<id> queued + XADD ------+--> 202 {"job_id"}
 *
 *   consumer (any process)  XREADGROUP ... BLOCK (own connection) <-+
 *                           XAUTOCLAIM every claim_after_ms/2 <-----+  (dead consumers' jobs)
 *        |  EVAL start: attempts+1 (> 5: failed 500), state running
 *        |  loopback request to our data port, X-Predcache-Job: <id>
 *        |      --> proxy: cache hit, or the model server, and the result is cached
 *        |  EVAL finish: HSET done|failed + result envelope, EX result_ttl_s,
 *        v               XACK + XDEL (one script: stored before acknowledged)
 *   GET /jobs/<id>  --> HGETALL job:<id> --> 202 queued|running, 200 result, 404
 *
 *   credentials = local (the request carries Authorization, Cookie, ...):
 *   POST ... ---> local jobs held >= max_queue? 429
 *                 EVAL submit local: HSET job:<id> queued, runs_in, credential_scope
 *                 (never a value) + SET job:<id>:lease PX claim_after_ms ------> 202
 *                 job (headers with the credentials) waits in this process's memory,
 *                 never in the stream: no other process can see, claim or run it
 *        |  a free slot (before the stream's next read): EVAL start, loopback request
 *        |  with the credentials added back from memory, EVAL finish local (no XACK)
 *        v  SIGTERM: waiting ones failed at once, running ones finish or are failed at
 *           the drain deadline; a killed process's lease runs out, and the next
 *           GET /jobs/<id> records the job failed (EVAL poll local)
 *
 * A held job's stream entry is kept fresh (XCLAIM ... JUSTID every claim_after_ms/3), so
 * only the entries of a consumer that stopped go idle and are taken over; the same beat
 * renews the leases of local jobs. A job whose process died five times is failed rather
 * than retried forever. On SIGTERM the consumer stops reading; running jobs finish within
 * the drain, and those cut off by the deadline are handed back (XCLAIM IDLE
 * claim_after_ms), so another process takes them at once. Identical jobs held by this
 * process run one after the other, the later ones from the cache.
 *
 * Local jobs and [jobs] limits: a process holds at most max_queue unfinished local jobs
 * (their bodies and credentials are in its memory); they share the concurrency slots with
 * stream jobs and go first, since only this process can run them, but never take the slots
 * a stream read in flight asked for (so a local job may wait for that read: at most
 * JOBS_BLOCK_MS). A process with concurrency 0 runs nothing, so it refuses them (400).
 */
#include "predcache/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>
#include <openssl/rand.h>

#include "predcache/buf.h"
#include "predcache/cachekey.h"
#include "predcache/config.h"
#include "predcache/creds.h"
#include "predcache/envelope.h"
#include "predcache/http.h"
#include "predcache/jobtab.h"
#include "predcache/log.h"
#include "predcache/slots.h"
#include "predcache/metrics.h"
#include "predcache/store.h"
#include "predcache/upstream.h"
#include "predcache/routes.h"
#include "predcache/wstate.h"

#define JOB_ID_BYTES 16
#define JOB_ID_LEN (2 * JOB_ID_BYTES)
#define JOBS_GROUP "predcache"
#define JOBS_MAX_ATTEMPTS 5
#define JOBS_BLOCK_MS 1000          /* XREADGROUP BLOCK */
#define JOBS_WAIT_STREAM_MS 1000    /* poll for the stream before the first job */
#define JOBS_RETRY_MS 250           /* after a failed consumer command or job step */
#define JOBS_STEP_TRIES 20          /* then a job is let go, to come back after its lease */
#define JOBS_PENDING_TTL_MIN_S 3600 /* a queued/running record lives at least this long */
#define JOBS_BYTES_PER_MS 1000      /* extra command time for large bodies (1 MB/s) */
#define JOBS_LOOPBACK_SLACK_MS 1000 /* the proxy's own timeout answer comes first */
#define JOBS_STREAM_MAX (PC_CFG_STR * 2 + 8)
#define JOBS_ENTRY_ID_MAX 48
#define JOBS_LOCAL_ENTRY "local:" /* + job id: a local job's name in the table */
#define JOBS_RECORD_MAX (PC_CFG_STR + JOBS_STREAM_MAX + 24 + JOB_ID_LEN)

/* The error of a local job that its process could not finish (drain, deadline, or gone). */
#define JOBS_LOCAL_STOPPED                                                                         \
    "a job with credentials is kept only in the memory of the predcache process that "             \
    "accepted it ([jobs] credentials = local) and never runs elsewhere; submit it again"

/* ---- Lua scripts: each step is one atomic script ----------------------------------- */

/* KEYS: stream, record. ARGV: group, max_queue, pending_ttl_s, id, method, target,
 * headers, body, submitted_at. Integer reply: the queue is full (its length). */
static const char lua_submit[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then\n"
    "  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')\n"
    "end\n"
    "local n = redis.call('XLEN', KEYS[1])\n"
    "if n >= tonumber(ARGV[2]) then return n end\n"
    "redis.call('HSET', KEYS[2], 'state', 'queued', 'attempts', '0', 'submitted_at', ARGV[9],\n"
    "           'method', ARGV[5], 'target', ARGV[6])\n"
    "redis.call('EXPIRE', KEYS[2], ARGV[3])\n"
    "return redis.call('XADD', KEYS[1], '*', 'id', ARGV[4], 'method', ARGV[5], 'target',\n"
    "                  ARGV[6], 'headers', ARGV[7], 'body', ARGV[8], 'submitted_at', ARGV[9])\n";

/* KEYS: stream. ARGV: group. 1 when the stream exists (its group then exists too). */
static const char lua_ensure[] = "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
                                 "pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')\n"
                                 "return 1\n";

/* KEYS: record. ARGV: pending_ttl_s, max_attempts, consumer, now_ms.
 * Reply: {verdict, attempts}, verdict one of run, exhausted, done, failed. */
static const char lua_start[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if st == 'done' or st == 'failed' then return {st, 0} end\n"
    "local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)\n"
    "if n > tonumber(ARGV[2]) then return {'exhausted', n} end\n"
    "redis.call('HSET', KEYS[1], 'state', 'running', 'consumer', ARGV[3], 'started_at', ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "return {'run', n}\n";

/* KEYS: record, stream. ARGV: ttl_s, state ('' = acknowledge only), result, cache, key,
 * hits, now_ms, group, entry id. */
static const char lua_finish[] =
    "if ARGV[2] ~= '' then\n"
    "  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'result', ARGV[3], 'cache', ARGV[4],\n"
    "             'key', ARGV[5], 'hits', ARGV[6], 'finished_at', ARGV[7])\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "end\n"
    "redis.call('XACK', KEYS[2], ARGV[8], ARGV[9])\n"
    "redis.call('XDEL', KEYS[2], ARGV[9])\n"
    "return 1\n";

/* KEYS: stream, record. ARGV: group, consumer, entry id, idle_ms, started (0|1).
 * Makes the entry look idle for claim_after_ms, so the next XAUTOCLAIM anywhere takes it;
 * a job that was started goes back to queued and its attempt is not counted. */
static const char lua_release[] =
    "redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', ARGV[4], 'JUSTID')\n"
    "if ARGV[5] == '1' and redis.call('HGET', KEYS[2], 'state') == 'running' then\n"
    "  redis.call('HSET', KEYS[2], 'state', 'queued')\n"
    "  redis.call('HINCRBY', KEYS[2], 'attempts', -1)\n"
    "end\n"
    "return 1\n";

/* Local jobs (credentials = local): a record and a lease, never a stream entry. */

/* KEYS: record, lease. ARGV: pending_ttl_s, method, target, submitted_at, consumer,
 * credential scope, lease_ms. The lease (the holder's name) lives while the holder beats. */
static const char lua_submit_local[] =
    "redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', '0', 'submitted_at', ARGV[4],\n"
    "           'method', ARGV[2], 'target', ARGV[3], 'runs_in', ARGV[5],\n"
    "           'credential_scope', ARGV[6])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[7])\n"
    "return 'local'\n";

/* KEYS: record, lease. ARGV: ttl_s, state ('' = let the lease go only), result, cache, key,
 * hits, now_ms. A record already finished (failed by a poll that found no lease) stays. */
static const char lua_finish_local[] =
    "if ARGV[2] ~= '' then\n"
    "  local st = redis.call('HGET', KEYS[1], 'state')\n"
    "  if st == 'queued' or st == 'running' then\n"
    "    redis.call('HSET', KEYS[1], 'state', ARGV[2], 'result', ARGV[3], 'cache', ARGV[4],\n"
    "               'key', ARGV[5], 'hits', ARGV[6], 'finished_at', ARGV[7])\n"
    "    redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', KEYS[2])\n"
    "return 1\n";

/* KEYS: leases. ARGV: lease_ms, consumer. The heartbeat of the local jobs held here. */
static const char lua_lease[] = "for _, k in ipairs(KEYS) do\n"
                                "  redis.call('SET', k, ARGV[2], 'PX', ARGV[1])\n"
                                "end\n"
                                "return #KEYS\n";

/* KEYS: record, lease, record, lease, ... ARGV: ttl_s, result, now_ms. Local jobs this
 * process will never run: failed, unless finished already. */
static const char lua_lost[] =
    "for i = 1, #KEYS, 2 do\n"
    "  local st = redis.call('HGET', KEYS[i], 'state')\n"
    "  if st == 'queued' or st == 'running' then\n"
    "    redis.call('HSET', KEYS[i], 'state', 'failed', 'result', ARGV[2], 'finished_at',\n"
    "               ARGV[3])\n"
    "    redis.call('EXPIRE', KEYS[i], ARGV[1])\n"
    "  end\n"
    "  redis.call('DEL', KEYS[i + 1])\n"
    "end\n"
    "return 1\n";

/* KEYS: record, lease. ARGV: ttl_s, result, now_ms. A poll of an unfinished local job: when
 * its holder's lease ran out (the process was killed), the job is failed. Reply: HGETALL. */
static const char lua_poll_local[] =
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "if (st == 'queued' or st == 'running') and redis.call('HEXISTS', KEYS[1], 'runs_in') == 1\n"
    "   and redis.call('EXISTS', KEYS[2]) == 0 then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'failed', 'result', ARGV[2], 'finished_at', ARGV[3])\n"
    "  redis.call('EXPIRE', KEYS[1], ARGV[1])\n"
    "end\n"
    "return redis.call('HGETALL', KEYS[1])\n";

/* ---- state ------------------------------------------------------------------------- */

enum consumer_state { CONS_WAIT_STREAM, CONS_READ };

struct job;

struct pc_jobs {
    struct pc_worker *w;
    const struct pc_config *cfg;
    struct pc_config upcfg;  /* cfg with the loopback timeouts, for up */
    struct pc_upstream *up;  /* to our own data port */
    struct pc_store *bst;    /* the consumer's blocking connection */
    struct pc_metrics bst_m; /* its counters, kept out of the worker's */
    char stream[JOBS_STREAM_MAX];
    char tag[JOBS_STREAM_MAX]; /* the stream's hash tag: the slot of every job key */
    char consumer[128];
    char cursor[JOBS_ENTRY_ID_MAX]; /* XAUTOCLAIM position */
    enum consumer_state cstate;
    int bst_busy;   /* a consumer command is in flight on bst */
    size_t reading; /* slots the stream read in flight on bst asked for (COUNT) */
    uint64_t next_reclaim_us;
    struct event *consumer_timer;
    struct event *heartbeat;
    struct pc_jobtab *held; /* held jobs by entry id, their steps, twins */
    struct job **waiting;   /* local jobs accepted, not yet in held: oldest first */
    size_t n_waiting, cap_waiting;
    size_t n_local;      /* local jobs alive: submitting, waiting or held */
    size_t pending_cmds; /* our commands in flight on the worker's store */
    int draining;
    int closing; /* pc_jobs_free ran: callbacks only let go */
};

/* What the proxy said about the cache when it answered a job ("" when absent). */
struct cache_info {
    char cache[16]; /* X-Cache */
    char key[PC_KEY_MAX];
    char hits[32]; /* X-Cache-Hits, on per-instance batches */
};

struct job {
    struct pc_jobs *j;
    int local; /* credentials = local: never in the stream; headers hold the credentials */
    struct event *retry;           /* re-sends the current Redis step after a failure */
    int tries;                     /* failed sends of the current step */
    char entry[JOBS_ENTRY_ID_MAX]; /* stream entry id, or JOBS_LOCAL_ENTRY + id */
    char id[JOB_ID_LEN + 1];
    char *method, *target, *body;
    size_t body_len;
    struct pc_header *headers; /* n_headers + the marker */
    size_t n_headers;
    char key[PC_KEY_MAX]; /* cache key, "" when it cannot be derived */
    int attempt;
    uint64_t start_us;
    /* The outcome, kept until Redis has it. */
    char fin_state[8]; /* done, failed, or "" to acknowledge only */
    struct pc_buf fin_env;
    struct cache_info fin_ci;
};

/* A client request waiting for Redis (submit or poll). */
struct jreq {
    struct pc_jobs *j;
    struct pc_http_req *req;
    int compat;
    int prefer;     /* submitted with Prefer: respond-async */
    int checked;    /* poll: the holder's lease of a local job was checked */
    struct job *jb; /* submit of a local job: the job, waiting for its record */
    char id[JOB_ID_LEN + 1];
};

static void consumer_step(struct pc_jobs *j);
static void local_step(struct pc_jobs *j);
static void local_enqueue(struct pc_jobs *j, struct job *jb);
static void job_run(struct job *jb);
static void job_discard(struct job *jb);

static const struct pc_header json_ct = {(char *)"Content-Type", (char *)"application/json"};

/* ---- small helpers ----------------------------------------------------------------- */

static int starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int random_hex(char *out, size_t nbytes)
{
    unsigned char raw[64];
    if (nbytes > sizeof raw || RAND_bytes(raw, (int)nbytes) != 1)
        return -1;
    hex(raw, nbytes, out);
    return 0;
}

static int valid_job_id(const char *s)
{
    if (strlen(s) != JOB_ID_LEN)
        return 0;
    for (const char *p = s; *p; p++) {
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    }
    return 1;
}

/* A job's record. Its hash tag is the stream's (j->tag), so that the scripts that touch
 * both stay in one Redis Cluster slot. */
static void record_key(const struct pc_jobs *j, const char *id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%sjob:{%s}:%s", j->cfg->key_prefix, j->tag, id);
}

/* The lease of a local job: exists while the process holding it is alive. */
static void lease_key(const struct pc_jobs *j, const char *id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%sjob:{%s}:%s:lease", j->cfg->key_prefix, j->tag, id);
}

/* {"error":"msg"} into b. */
static void json_error(struct pc_buf *b, const char *msg)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "error", json_object_new_string(msg));
    pc_buf_append_str(b, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
}

/* The envelope of a job failed by predcache itself: status + {"error": msg}, into a fresh
 * out (released by the caller on success). 0 ok, -1 no memory. */
static int failure_envelope(int status, const char *msg, struct pc_buf *out)
{
    struct pc_buf b;
    pc_buf_init(&b);
    pc_buf_init(out);
    json_error(&b, msg);
    struct pc_envelope e = {.status = status,
                            .stored_at_ms = pc_wall_ms(),
                            .content_type = "application/json",
                            .body = b.data ? b.data : "",
                            .body_len = b.len};
    int rc = b.data != NULL ? pc_envelope_encode(&e, out) : -1;
    pc_buf_release(&b);
    if (rc != 0)
        pc_buf_release(out);
    return rc;
}

static const struct pc_reply *elem(const struct pc_reply *r, size_t i)
{
    return r != NULL ? pc_reply_elem(r, i) : NULL;
}

/* Copies a string reply into out (NUL-terminated, cut to outlen); 0 ok, -1 not a string. */
static int reply_copy(const struct pc_reply *r, char *out, size_t outlen)
{
    size_t len;
    const char *s = r != NULL && pc_reply_type(r) == PC_REPLY_STRING ? pc_reply_str(r, &len) : NULL;
    if (s == NULL || len >= outlen)
        return -1;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

static int reply_is(const struct pc_reply *r, const char *want)
{
    size_t len;
    const char *s = r != NULL && pc_reply_type(r) == PC_REPLY_STRING ? pc_reply_str(r, &len) : NULL;
    return s != NULL && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* An error reply that says the stream or its group is gone (FLUSHALL, XGROUP DESTROY). */
static int reply_nogroup(const struct pc_reply *r)
{
    size_t len;
    const char *s = r != NULL && pc_reply_type(r) == PC_REPLY_ERROR ? pc_reply_str(r, &len) : NULL;
    return s != NULL && len >= 7 && memcmp(s, "NOGROUP", 7) == 0;
}

/* Sends a command on the worker's store, counted so that the module outlives it. */
static int store_cmd(struct pc_jobs *j, int timeout_ms, pc_store_cmd_cb cb, void *arg, int argc,
                     const char **argv, const size_t *lens)
{
    /* The command's timer counts from libevent's cached time, taken before this callback
     * began: after CPU-heavy work here (a large body's key), it would fire early. */
    event_base_update_cache_time(j->w->base);
    if (pc_store_command(j->w->store, timeout_ms, cb, arg, argc, argv, lens) != 0)
        return -1;
    j->pending_cmds++;
    return 0;
}

/* Time for a command that carries n bytes. */
static int cmd_timeout(const struct pc_jobs *j, size_t n)
{
    size_t extra = n / JOBS_BYTES_PER_MS;
    return j->cfg->redis_timeout_ms + (int)(extra > 60000 ? 60000 : extra);
}

static int pending_ttl_s(const struct pc_jobs *j)
{
    return j->cfg->jobs_result_ttl_s > JOBS_PENDING_TTL_MIN_S ? j->cfg->jobs_result_ttl_s
                                                              : JOBS_PENDING_TTL_MIN_S;
}

/* The module is freed once pc_jobs_free ran and no command of ours is in flight. */
static void jobs_maybe_free(struct pc_jobs *j)
{
    if (!j->closing || j->pending_cmds > 0)
        return;
    pc_jobtab_free(j->held); /* empty by now: every job was let go */
    free(j->waiting);        /* empty too: the drain failed them */
    free(j);
}

/* ---- answering clients ------------------------------------------------------------- */

static void jreq_answer(struct pc_jobs *j, struct pc_http_req *req, int status,
                        const struct pc_header *h, size_t n, const char *body, size_t len)
{
    (void)j;
    double total_ms = (double)(pc_now_us() - pc_http_req_start_us(req)) / 1000.0;
    struct pc_access a = {
        .id = pc_http_req_id(req),
        .client = pc_http_req_client(req),
        .method = pc_http_req_method(req),
        .path = pc_http_req_path(req),
        .query = pc_http_req_query(req),
        .status = status,
        .cache = "JOB",
        .key = NULL,
        .backend_ms = -1,
        .total_ms = total_ms,
        .bytes = len,
    };
    pc_log_access(&a);
    pc_http_reply(req, status, h, n, body, len);
}

static void answer_error(struct pc_jobs *j, struct pc_http_req *req, int status, const char *msg,
                         int retry_after)
{
    struct pc_buf b;
    pc_buf_init(&b);
    json_error(&b, msg);
    struct pc_header h[2] = {json_ct, {(char *)"Retry-After", (char *)"1"}};
    pc_log(status >= 500 ? PC_LOG_WARN : PC_LOG_INFO, "jobs: %s %s -> %d %s",
           pc_http_req_method(req), pc_http_req_path(req), status, msg);
    jreq_answer(j, req, status, h, retry_after ? 2 : 1, b.data, b.len);
    pc_buf_release(&b);
}

static struct jreq *jreq_new(struct pc_jobs *j, struct pc_http_req *req)
{
    struct jreq *jr = calloc(1, sizeof *jr);
    if (jr == NULL)
        return NULL;
    jr->j = j;
    jr->req = req;
    PC_METRIC_INC(j->w->metrics.in_flight); /* the drain waits for it */
    return jr;
}

/* Answered (or let go): the request is gone, the counters move back. */
static void jreq_free(struct jreq *jr)
{
    PC_METRIC_DEC(jr->j->w->metrics.in_flight);
    free(jr);
}

/* ---- submit ------------------------------------------------------------------------ */

/* Does any Prefer header hold the respond-async preference (RFC 7240)? */
static int prefers_async(const struct pc_http_req *req)
{
    size_t n;
    const struct pc_header *h = pc_http_req_headers(req, &n);
    for (size_t i = 0; i < n; i++) {
        if (!pc_strcaseeq(h[i].name, "Prefer"))
            continue;
        for (const char *p = h[i].value; *p;) {
            while (*p == ' ' || *p == '\t' || *p == ',')
                p++;
            size_t tl = strcspn(p, "=;, \t");
            if (tl == 13 && strncasecmp(p, "respond-async", 13) == 0)
                return 1;
            p += strcspn(p, ",");
        }
    }
    return 0;
}

static void free_headers(struct pc_header *h, size_t n)
{
    for (size_t i = 0; h != NULL && i < n; i++) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

/*
 * The request's end-to-end headers for the loopback call: no hop-by-hop ones, no Prefer
 * (the job must run synchronously), no framing, no X-Predcache-Token (the operator's secret
 * is never put in Redis: a job runs without its controls), and the client appended to
 * X-Forwarded-For as a proxy would. Credential headers only when creds (a local job, kept in
 * memory), so that nothing built for the stream can carry one to Redis. The submit's request
 * id goes as X-Request-Id, so that the job's run (its access line, its model server call)
 * carries it. *count headers, copied, and a free slot after them (for the marker); the
 * caller frees them with free_headers.
 */
static struct pc_header *forward_headers(const struct pc_jobs *j, const struct pc_http_req *req,
                                         int creds, size_t *count)
{
    const struct pc_config *cfg = j->cfg;
    size_t n, k = 0;
    const struct pc_header *h = pc_http_req_headers(req, &n);
    /* + X-Forwarded-For + X-Request-Id + the marker */
    struct pc_header *out = calloc(n + 3, sizeof *out);
    struct pc_buf xff;
    pc_buf_init(&xff);
    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = h[i].name;
        if (pc_http_is_hop_by_hop_in(name, h, n) || pc_strcaseeq(name, "Prefer") ||
            pc_strcaseeq(name, "Host") || pc_strcaseeq(name, "Content-Length") ||
            pc_strcaseeq(name, "Expect") || pc_strcaseeq(name, PC_JOBS_MARKER) ||
            pc_strcaseeq(name, "X-Predcache-Token") || pc_strcaseeq(name, "X-Request-Id"))
            continue;
        if (!creds &&
            pc_creds_is_credential(name, cfg->credential_headers, cfg->n_credential_headers))
            continue;
        if (pc_strcaseeq(name, "X-Forwarded-For")) {
            pc_buf_printf(&xff, "%s%s", xff.len ? ", " : "", h[i].value);
            continue;
        }
        out[k].name = strdup(name);
        out[k].value = strdup(h[i].value);
        k++;
        if (out[k - 1].name == NULL || out[k - 1].value == NULL)
            goto fail;
    }
    if (pc_buf_printf(&xff, "%s%s", xff.len ? ", " : "", pc_http_req_client(req)) != 0)
        goto fail;
    out[k].name = strdup("X-Forwarded-For");
    out[k].value = pc_buf_steal(&xff, NULL);
    k++;
    if (out[k - 1].name == NULL || out[k - 1].value == NULL)
        goto fail;
    if (pc_http_req_id(req)[0] != '\0') {
        out[k].name = strdup("X-Request-Id");
        out[k].value = strdup(pc_http_req_id(req));
        k++;
        if (out[k - 1].name == NULL || out[k - 1].value == NULL)
            goto fail;
    }
    *count = k;
    return out;
fail:
    pc_buf_release(&xff);
    free_headers(out, k);
    return NULL;
}

/* h[0..n) as JSON [[name, value], ...], malloc'ed; NULL on no memory. */
static char *headers_json(const struct pc_header *h, size_t n, size_t *len)
{
    json_object *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++) {
        json_object *pair = json_object_new_array();
        json_object_array_add(pair, json_object_new_string(h[i].name));
        json_object_array_add(pair, json_object_new_string(h[i].value));
        json_object_array_add(arr, pair);
    }
    size_t l;
    const char *s = json_object_to_json_string_length(arr, JSON_C_TO_STRING_PLAIN, &l);
    char *out = s ? strndup(s, l) : NULL;
    *len = out ? l : 0;
    json_object_put(arr);
    return out;
}

static void on_submit(const struct pc_reply *r, void *arg)
{
    struct jreq *jr = arg;
    struct pc_jobs *j = jr->j;
    j->pending_cmds--;
    struct pc_metrics *m = &j->w->metrics;
    struct job *jb = jr->jb; /* a local job's submit: the job is ours again */
    if (r != NULL && pc_reply_type(r) == PC_REPLY_STRING) {
        PC_METRIC_INC(m->jobs_submitted);
        char loc[16 + JOB_ID_LEN], body[64 + JOB_ID_LEN];
        snprintf(loc, sizeof loc, "/jobs/%s", jr->id);
        int n = snprintf(body, sizeof body, "{\"job_id\":\"%s\",\"status\":\"queued\"}", jr->id);
        struct pc_header h[3] = {json_ct, {(char *)"Location", loc}};
        size_t nh = 2;
        if (jr->prefer)
            h[nh++] = (struct pc_header){(char *)"Preference-Applied", (char *)"respond-async"};
        pc_log(PC_LOG_DEBUG, "jobs: job %s queued%s", jr->id, jb ? " (local)" : "");
        jreq_answer(j, jr->req, 202, h, nh, body, (size_t)n);
        if (jb != NULL) {
            local_enqueue(j, jb); /* runs it, or fails it when we are stopping */
        } else if (j->cstate == CONS_WAIT_STREAM && !j->bst_busy && !j->draining && !j->closing) {
            /* A consumer waiting for the stream to appear need not wait for its next poll. */
            event_del(j->consumer_timer);
            consumer_step(j);
        }
    } else if (r != NULL && pc_reply_type(r) == PC_REPLY_INTEGER) {
        PC_METRIC_INC(m->jobs_rejected);
        char msg[128];
        snprintf(msg, sizeof msg, "job queue full: %lld jobs waiting (max_queue %d)",
                 pc_reply_integer(r), j->cfg->jobs_max_queue);
        answer_error(j, jr->req, 429, msg, 1);
    } else {
        PC_METRIC_INC(m->jobs_rejected);
        answer_error(j, jr->req, 503, "job queue unavailable", 1);
    }
    if (jb != NULL && (r == NULL || pc_reply_type(r) != PC_REPLY_STRING))
        job_discard(jb); /* no record: nobody can poll it */
    jreq_free(jr);
    jobs_maybe_free(j);
}

/* The name of the first credential header among h[0..n) (borrowed), NULL when none. */
static const char *credential_name(const struct pc_config *cfg, const struct pc_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (pc_creds_is_credential(h[i].name, cfg->credential_headers, cfg->n_credential_headers))
            return h[i].name;
    }
    return NULL;
}

/* A job request carrying credentials (named cred) that this process cannot take: answers it
 * and returns 1; 0 when it may be accepted as a local job. */
static int refuse_credentials(struct pc_jobs *j, struct pc_http_req *req, const char *cred)
{
    const struct pc_config *cfg = j->cfg;
    char msg[512];
    if (cfg->jobs_credentials == PC_JOBS_CREDS_REFUSE) {
        snprintf(msg, sizeof msg,
                 "async jobs do not take credentials ([jobs] credentials = refuse): the request "
                 "carries %.63s; send it synchronously instead",
                 cred);
        answer_error(j, req, 400, msg, 0);
        return 1;
    }
    if (cfg->jobs_concurrency == 0) {
        snprintf(msg, sizeof msg,
                 "this predcache process runs no jobs ([jobs] concurrency = 0), and a job with "
                 "credentials (the request carries %.63s) runs only in the process that accepts "
                 "it ([jobs] credentials = local); send it synchronously instead",
                 cred);
        answer_error(j, req, 400, msg, 0);
        return 1;
    }
    if (j->draining || j->closing) {
        PC_METRIC_INC(j->w->metrics.jobs_rejected);
        answer_error(j, req, 503, "shutting down: no job with credentials is taken", 1);
        return 1;
    }
    if (j->n_local >= (size_t)cfg->jobs_max_queue) {
        PC_METRIC_INC(j->w->metrics.jobs_rejected);
        snprintf(msg, sizeof msg,
                 "job queue full: %zu jobs with credentials held by this process (max_queue %d)",
                 j->n_local, cfg->jobs_max_queue);
        answer_error(j, req, 429, msg, 1);
        return 1;
    }
    return 0;
}

static struct job *job_new(struct pc_jobs *j, const char *entry);
static void job_key(struct pc_jobs *j, struct job *jb);

/*
 * Accepts req as a local job: its record goes to Redis with the credential scope and no
 * credential value; the job, credentials included, stays in this process until it has
 * run. Borrows target. Answers req (202 once the record is stored, or an error).
 */
static void submit_local(struct pc_jobs *j, struct pc_http_req *req, const char *target, int prefer)
{
    const struct pc_config *cfg = j->cfg;
    size_t nh, body_len = 0;
    const struct pc_header *rh = pc_http_req_headers(req, &nh);
    const char *body = pc_http_req_body(req, &body_len);
    char id[JOB_ID_LEN + 1], entry[JOBS_ENTRY_ID_MAX], scope[PC_CREDS_SCOPE_LEN + 1];
    struct jreq *jr = NULL;
    struct job *jb = NULL;
    if (body == NULL)
        body_len = 0;
    if (random_hex(id, JOB_ID_BYTES) != 0 ||
        pc_creds_scope(rh, nh, cfg->credential_headers, cfg->n_credential_headers, scope) != 0)
        goto fail;
    snprintf(entry, sizeof entry, "%s%s", JOBS_LOCAL_ENTRY, id);
    if ((jb = job_new(j, entry)) == NULL)
        goto fail;
    jb->local = 1;
    j->n_local++;
    memcpy(jb->id, id, sizeof jb->id);
    jb->method = strdup(pc_http_req_method(req));
    jb->target = strdup(target);
    jb->body = malloc(body_len + 1);
    jb->headers = forward_headers(j, req, 1, &jb->n_headers);
    if (jb->method == NULL || jb->target == NULL || jb->body == NULL || jb->headers == NULL)
        goto fail;
    if (body_len > 0)
        memcpy(jb->body, body, body_len);
    jb->body[body_len] = '\0';
    jb->body_len = body_len;
    jb->headers[jb->n_headers].name = (char *)PC_JOBS_MARKER;
    jb->headers[jb->n_headers].value = jb->id;
    job_key(j, jb);
    /* Jobs with other credentials may be answered otherwise: never each other's twins. */
    size_t kl = strlen(jb->key);
    if (kl > 0 && kl + 1 + PC_CREDS_SCOPE_LEN < sizeof jb->key)
        snprintf(jb->key + kl, sizeof jb->key - kl, "#%s", scope);

    if ((jr = jreq_new(j, req)) == NULL)
        goto fail;
    jr->prefer = prefer;
    jr->jb = jb;
    memcpy(jr->id, id, sizeof jr->id);
    char rkey[JOBS_RECORD_MAX], lkey[JOBS_RECORD_MAX], ttl[16], now[24], lease[16];
    record_key(j, id, rkey, sizeof rkey);
    lease_key(j, id, lkey, sizeof lkey);
    snprintf(ttl, sizeof ttl, "%d", pending_ttl_s(j));
    snprintf(now, sizeof now, "%lld", (long long)pc_wall_ms());
    snprintf(lease, sizeof lease, "%d", cfg->jobs_claim_after_ms);
    const char *argv[] = {"EVAL",     lua_submit_local, "2", rkey,        lkey,  ttl,
                          jb->method, jb->target,       now, j->consumer, scope, lease};
    size_t lens[12];
    for (size_t i = 0; i < 12; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_submit_local - 1;
    if (store_cmd(j, cmd_timeout(j, 0), on_submit, jr, 12, argv, lens) == 0)
        return;
fail:
    if (jr != NULL)
        jreq_free(jr);
    if (jb != NULL)
        job_discard(jb);
    PC_METRIC_INC(j->w->metrics.jobs_rejected);
    answer_error(j, req, 503, "job queue unavailable", 1);
}

/* Queues req as a job for route ("/path" after any alias prefix). */
static void submit(struct pc_jobs *j, struct pc_http_req *req, const char *route, int prefer)
{
    struct pc_worker *w = j->w;
    const struct pc_config *cfg = j->cfg;
    size_t nreq;
    const struct pc_header *rh = pc_http_req_headers(req, &nreq);
    int creds = pc_creds_present(rh, nreq, cfg->credential_headers, cfg->n_credential_headers);
    if (creds && refuse_credentials(j, req, credential_name(cfg, rh, nreq)))
        return;
    const char *query = pc_http_req_query(req);
    struct pc_buf target;
    pc_buf_init(&target);
    pc_buf_append_str(&target, route);
    if (query[0] != '\0')
        pc_buf_printf(&target, "?%s", query);
    size_t body_len;
    const char *body = pc_http_req_body(req, &body_len);

    /* A body the proxy would refuse is refused now, not after the wait. */
    if (pc_routes_cacheable(cfg, pc_http_req_method(req), route)) {
        char key[PC_KEY_MAX], why[256];
        enum pc_key_kind kind;
        const char *ct = pc_http_req_header(req, "Content-Type");
        if (pc_cachekey_derive(&w->keyp, target.data, body, body_len,
                               ct != NULL && strcasestr(ct, "json") != NULL, key, &kind, why,
                               sizeof why) != 0) {
            pc_buf_release(&target);
            answer_error(j, req, 400, why, 0);
            return;
        }
    }
    if (!pc_store_ready(w->store)) {
        pc_buf_release(&target);
        PC_METRIC_INC(w->metrics.jobs_rejected);
        answer_error(j, req, 503, "job queue unavailable", 1);
        return;
    }
    if (creds) { /* credentials = local: never in the stream */
        submit_local(j, req, target.data, prefer);
        pc_buf_release(&target);
        return;
    }
    struct jreq *jr = jreq_new(j, req);
    size_t nh = 0, hlen = 0;
    struct pc_header *fh = forward_headers(j, req, 0, &nh);
    char *hjson = fh != NULL ? headers_json(fh, nh, &hlen) : NULL;
    free_headers(fh, nh);
    if (jr == NULL || hjson == NULL || random_hex(jr->id, JOB_ID_BYTES) != 0) {
        pc_buf_release(&target);
        free(hjson);
        if (jr != NULL)
            jreq_free(jr);
        answer_error(j, req, 503, "out of memory", 1);
        return;
    }
    jr->prefer = prefer;
    char rkey[JOBS_RECORD_MAX], maxq[16], ttl[16], now[24];
    record_key(j, jr->id, rkey, sizeof rkey);
    snprintf(maxq, sizeof maxq, "%d", cfg->jobs_max_queue);
    snprintf(ttl, sizeof ttl, "%d", pending_ttl_s(j));
    snprintf(now, sizeof now, "%lld", (long long)pc_wall_ms());
    const char *method = pc_http_req_method(req);
    const char *argv[] = {"EVAL", lua_submit, "2",    j->stream,   rkey,  JOBS_GROUP, maxq,
                          ttl,    jr->id,     method, target.data, hjson, body,       now};
    size_t lens[] = {4,
                     sizeof lua_submit - 1,
                     1,
                     strlen(j->stream),
                     strlen(rkey),
                     strlen(JOBS_GROUP),
                     strlen(maxq),
                     strlen(ttl),
                     JOB_ID_LEN,
                     strlen(method),
                     target.len,
                     hlen,
                     body_len,
                     strlen(now)};
    if (body == NULL)
        argv[12] = "";
    int rc = store_cmd(j, cmd_timeout(j, body_len + hlen), on_submit, jr, 14, argv, lens);
    pc_buf_release(&target);
    free(hjson);
    if (rc != 0) {
        jreq_free(jr);
        PC_METRIC_INC(w->metrics.jobs_rejected);
        answer_error(j, req, 503, "job queue unavailable", 1);
    }
}

/* ---- poll -------------------------------------------------------------------------- */

struct record {
    char state[16];
    char runs_in[128]; /* a local job: the consumer name of the only process that runs it */
    char scope[PC_CREDS_SCOPE_LEN + 1]; /* the credential scope it was submitted with */
    const char *result;
    size_t result_len;
    char cache[16];
    char key[PC_KEY_MAX];
    char hits[32];
};

/* HGETALL reply -> record. 0 ok; -1 no such job (empty hash). */
static int parse_record(const struct pc_reply *r, struct record *rec)
{
    memset(rec, 0, sizeof *rec);
    size_t n = pc_reply_count(r);
    for (size_t i = 0; i + 1 < n; i += 2) {
        const struct pc_reply *k = pc_reply_elem(r, i), *v = pc_reply_elem(r, i + 1);
        if (reply_is(k, "state"))
            reply_copy(v, rec->state, sizeof rec->state);
        else if (reply_is(k, "cache"))
            reply_copy(v, rec->cache, sizeof rec->cache);
        else if (reply_is(k, "key"))
            reply_copy(v, rec->key, sizeof rec->key);
        else if (reply_is(k, "hits"))
            reply_copy(v, rec->hits, sizeof rec->hits);
        else if (reply_is(k, "runs_in"))
            reply_copy(v, rec->runs_in, sizeof rec->runs_in);
        else if (reply_is(k, "credential_scope"))
            reply_copy(v, rec->scope, sizeof rec->scope);
        else if (reply_is(k, "result") && pc_reply_type(v) == PC_REPLY_STRING)
            rec->result = pc_reply_str(v, &rec->result_len);
    }
    return n > 0 ? 0 : -1;
}

/* 200 {"<id>": {"prediction": <the model's JSON answer, or its text>}} */
static void answer_compat_done(struct pc_jobs *j, struct jreq *jr, const struct pc_envelope *env)
{
    json_tokener *tok = json_tokener_new();
    json_object *pred = tok ? json_tokener_parse_ex(tok, env->body, (int)env->body_len) : NULL;
    if (tok != NULL && (json_tokener_get_error(tok) != json_tokener_success ||
                        json_tokener_get_parse_end(tok) != env->body_len)) {
        json_object_put(pred);
        pred = json_object_new_string_len(env->body, (int)env->body_len);
    }
    json_tokener_free(tok);
    json_object *inner = json_object_new_object(), *outer = json_object_new_object();
    json_object_object_add(inner, "prediction", pred);
    json_object_object_add(outer, jr->id, inner);
    size_t len;
    const char *s = json_object_to_json_string_length(outer, JSON_C_TO_STRING_PLAIN, &len);
    struct pc_header h[2] = {json_ct, {(char *)"X-Job-Status", (char *)"done"}};
    jreq_answer(j, jr->req, 200, h, 2, s, len);
    json_object_put(outer);
}

static void on_poll(const struct pc_reply *r, void *arg);

/* A local job that is not finished: asks again, with its holder's lease checked (see
 * lua_poll_local), so that the job of a process that was killed is answered failed instead
 * of queued or running forever. 0: sent (on_poll answers). */
static int poll_check_lease(struct jreq *jr, const char *runs_in)
{
    struct pc_jobs *j = jr->j;
    char msg[768], rkey[JOBS_RECORD_MAX], lkey[JOBS_RECORD_MAX], ttl[16], now[24];
    snprintf(msg, sizeof msg,
             "job lost: the predcache process holding it (%.128s) stopped before it finished; "
             "%s",
             runs_in, JOBS_LOCAL_STOPPED);
    struct pc_buf env;
    if (failure_envelope(500, msg, &env) != 0)
        return -1;
    record_key(j, jr->id, rkey, sizeof rkey);
    lease_key(j, jr->id, lkey, sizeof lkey);
    snprintf(ttl, sizeof ttl, "%d", j->cfg->jobs_result_ttl_s);
    snprintf(now, sizeof now, "%lld", (long long)pc_wall_ms());
    const char *argv[] = {"EVAL", lua_poll_local, "2", rkey, lkey, ttl, env.data, now};
    size_t lens[8];
    for (size_t i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_poll_local - 1;
    lens[6] = env.len;
    jr->checked = 1;
    int rc = store_cmd(j, cmd_timeout(j, 0), on_poll, jr, 8, argv, lens);
    pc_buf_release(&env);
    return rc;
}

static int finished(const struct record *rec)
{
    return strcmp(rec->state, "done") == 0 || strcmp(rec->state, "failed") == 0;
}

static void on_poll(const struct pc_reply *r, void *arg)
{
    struct jreq *jr = arg;
    struct pc_jobs *j = jr->j;
    j->pending_cmds--;
    struct record rec;
    int ok = r != NULL && pc_reply_type(r) == PC_REPLY_ARRAY && !j->closing;
    int found = ok && parse_record(r, &rec) == 0;
    /* A job submitted with credentials is only shown to the same credentials: to anyone
     * else it does not exist (its id alone is no right to the answer). */
    if (found && rec.scope[0] != '\0') {
        size_t nh;
        const struct pc_header *hh = pc_http_req_headers(jr->req, &nh);
        char scope[PC_CREDS_SCOPE_LEN + 1];
        if (pc_creds_scope(hh, nh, j->cfg->credential_headers, j->cfg->n_credential_headers,
                           scope) != 0 ||
            strcmp(scope, rec.scope) != 0)
            found = 0;
    }
    if (found && !finished(&rec) && rec.runs_in[0] != '\0' && !jr->checked &&
        poll_check_lease(jr, rec.runs_in) == 0)
        return; /* asked again */
    if (!ok) {
        answer_error(j, jr->req, 503, "job store unavailable", 1);
    } else if (!found) {
        answer_error(j, jr->req, 404, "no such job (unknown id, or its result expired)", 0);
    } else if (finished(&rec)) {
        struct pc_envelope env;
        char ctype[PC_CFG_STR];
        if (rec.result == NULL ||
            pc_envelope_decode(rec.result, rec.result_len, &env, ctype, sizeof ctype) != 0) {
            answer_error(j, jr->req, 500, "unreadable job result", 0);
        } else if (jr->compat && strcmp(rec.state, "done") == 0) {
            answer_compat_done(j, jr, &env);
        } else {
            struct pc_header h[5];
            size_t n = 0;
            if (env.content_type[0] != '\0')
                h[n++] = (struct pc_header){(char *)"Content-Type", (char *)env.content_type};
            h[n++] = (struct pc_header){(char *)"X-Job-Status", rec.state};
            if (rec.cache[0] != '\0')
                h[n++] = (struct pc_header){(char *)"X-Cache", rec.cache};
            if (rec.key[0] != '\0')
                h[n++] = (struct pc_header){(char *)"X-Cache-Key", rec.key};
            if (rec.hits[0] != '\0')
                h[n++] = (struct pc_header){(char *)"X-Cache-Hits", rec.hits};
            jreq_answer(j, jr->req, env.status, h, n, env.body, env.body_len);
        }
    } else {
        const char *state = strcmp(rec.state, "running") == 0 ? "running" : "queued";
        char loc[16 + JOB_ID_LEN], body[128 + 2 * JOB_ID_LEN];
        snprintf(loc, sizeof loc, "/jobs/%s", jr->id);
        struct pc_header h[4] = {json_ct,
                                 {(char *)"X-Job-Status", (char *)state},
                                 {(char *)"Retry-After", (char *)"1"},
                                 {(char *)"Location", loc}};
        int n;
        if (jr->compat) /* the seed answered a pending job with a null prediction */
            n = snprintf(body, sizeof body, "{\"%s\":{\"prediction\":null,\"status\":\"%s\"}}",
                         jr->id, state);
        else
            n = snprintf(body, sizeof body, "{\"job_id\":\"%s\",\"status\":\"%s\"}", jr->id, state);
        jreq_answer(j, jr->req, jr->compat ? 200 : 202, h, 4, body, (size_t)n);
    }
    jreq_free(jr);
    jobs_maybe_free(j);
}

static void poll_job(struct pc_jobs *j, struct pc_http_req *req, const char *id, int compat)
{
    PC_METRIC_INC(j->w->metrics.jobs_polled);
    const char *method = pc_http_req_method(req);
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        const char *body = "{\"error\":\"method not allowed\"}";
        struct pc_header h[2] = {json_ct, {(char *)"Allow", (char *)"GET, HEAD"}};
        jreq_answer(j, req, 405, h, 2, body, strlen(body));
        return;
    }
    if (!valid_job_id(id)) {
        answer_error(j, req, 404, "no such job (unknown id, or its result expired)", 0);
        return;
    }
    struct jreq *jr = jreq_new(j, req);
    if (jr == NULL) {
        answer_error(j, req, 503, "out of memory", 1);
        return;
    }
    jr->compat = compat;
    memcpy(jr->id, id, JOB_ID_LEN + 1);
    char rkey[JOBS_RECORD_MAX];
    record_key(j, id, rkey, sizeof rkey);
    const char *argv[] = {"HGETALL", rkey};
    size_t lens[] = {7, strlen(rkey)};
    /* The reply may carry a large result: allow it time to arrive. */
    if (store_cmd(j, cmd_timeout(j, 0) + 1000, on_poll, jr, 2, argv, lens) != 0) {
        jreq_free(jr);
        answer_error(j, req, 503, "job store unavailable", 1);
    }
}

/* ---- the request entry point ------------------------------------------------------- */

int pc_jobs_handle(struct pc_jobs *j, struct pc_http_req *req)
{
    const struct pc_config *cfg = j->cfg;
    const char *method = pc_http_req_method(req);
    const char *path = pc_http_req_path(req);
    if (pc_http_req_header(req, PC_JOBS_MARKER) != NULL)
        return 0; /* a job running through the proxy (or a client opting out) */
    if (starts_with(path, "/jobs/")) {
        poll_job(j, req, path + 6, 0);
        return 1;
    }
    if (cfg->jobs_compat && starts_with(path, "/job/")) {
        poll_job(j, req, path + 5, 1);
        return 1;
    }
    size_t pl = strlen(cfg->jobs_async_prefix);
    if (pl > 0 && starts_with(path, cfg->jobs_async_prefix) && path[pl] == '/') {
        const char *route = path + pl;
        if (!pc_routes_cacheable(cfg, method, route)) {
            char msg[PC_CFG_STR + 128];
            snprintf(msg, sizeof msg, "%.16s %.200s is not a cacheable route: no async job", method,
                     route);
            answer_error(j, req, 404, msg, 0);
            return 1;
        }
        submit(j, req, route, prefers_async(req));
        return 1;
    }
    if (cfg->jobs_compat && strcmp(method, "POST") == 0 && strcmp(path, "/predict") == 0) {
        submit(j, req, path, prefers_async(req));
        return 1;
    }
    if (prefers_async(req) && pc_routes_cacheable(cfg, method, path)) {
        submit(j, req, path, 1);
        return 1;
    }
    return 0;
}

/* ---- held jobs --------------------------------------------------------------------- */

static void job_retry_cb(evutil_socket_t fd, short what, void *arg);

/* A job of j named entry (a stream entry id, or JOBS_LOCAL_ENTRY + id), in no table yet.
 * NULL on no memory. */
static struct job *job_new(struct pc_jobs *j, const char *entry)
{
    struct job *jb = calloc(1, sizeof *jb);
    if (jb != NULL && (jb->retry = evtimer_new(j->w->base, job_retry_cb, jb)) == NULL) {
        free(jb);
        jb = NULL;
    }
    if (jb == NULL)
        return NULL;
    jb->j = j;
    jb->start_us = pc_now_us();
    pc_buf_init(&jb->fin_env);
    pc_strlcpy(jb->entry, entry, sizeof jb->entry);
    return jb;
}

/* Frees what jb holds; jb is not (or no longer) in the table. A local job's credentials
 * go with it: nothing else ever held them. */
static void job_discard(struct job *jb)
{
    if (jb->local)
        jb->j->n_local--;
    if (jb->retry)
        event_free(jb->retry);
    free_headers(jb->headers, jb->n_headers); /* the marker after them is not ours */
    free(jb->method);
    free(jb->target);
    free(jb->body);
    pc_buf_release(&jb->fin_env);
    free(jb);
}

static void job_free(struct job *jb)
{
    struct pc_jobs *j = jb->j;
    pc_jobtab_remove(j->held, jb->entry);
    if (!j->closing)
        PC_METRIC_SET(j->w->metrics.jobs_running, (int64_t)pc_jobtab_count(j->held));
    job_discard(jb);
    if (!j->closing && !j->draining) { /* a slot is free: local jobs first */
        local_step(j);
        consumer_step(j);
    }
}

static void job_step(struct job *jb, enum pc_job_step step)
{
    pc_jobtab_set_step(jb->j->held, jb->entry, step);
}

/* Lets go of a job without touching Redis: its entry stays pending in our name, goes
 * idle, and is reclaimed (by us or another process) after claim_after_ms. */
static void job_drop(struct job *jb, const char *why)
{
    if (!jb->j->closing && jb->local) /* its lease runs out: the next poll fails it */
        pc_log(PC_LOG_WARN, "jobs: local job %s given up: %s", jb->id, why);
    else if (!jb->j->closing)
        pc_log(PC_LOG_WARN, "jobs: job %s left for a retry after claim_after_ms: %s",
               jb->id[0] ? jb->id : jb->entry, why);
    job_free(jb);
}

/* A Redis step failed (down, timed out): try it again shortly, a bounded number of times,
 * so that a blip costs neither a second inference nor a wait of claim_after_ms. */
static void job_retry(struct job *jb, const char *why)
{
    if (++jb->tries > JOBS_STEP_TRIES) {
        job_drop(jb, why);
        return;
    }
    pc_log(PC_LOG_DEBUG, "jobs: job %s: %s; retrying", jb->id, why);
    struct timeval tv = {0, JOBS_RETRY_MS * 1000};
    evtimer_add(jb->retry, &tv);
}

/* Runs our jobs parked behind a job with this cache key: its answer is in the cache now
 * (the proxy queued its SET before answering, on the connection our lookups use). */
static void wake_parked(struct pc_jobs *j, const char *key)
{
    struct job *p;
    while (key[0] != '\0' && (p = pc_jobtab_unpark(j->held, key)) != NULL)
        job_run(p); /* RUNNING now; may free p, never another job */
}

/*
 * Every job command's reply first settles the count of commands in flight; while the
 * module is being freed the job is dropped here (1) instead of being acted on.
 */
static int reply_while_closing(struct job *jb)
{
    struct pc_jobs *j = jb->j;
    j->pending_cmds--;
    if (!j->closing)
        return 0;
    job_free(jb);
    jobs_maybe_free(j);
    return 1;
}

static void finish_send(struct job *jb);

static void on_finish(const struct pc_reply *r, void *arg)
{
    struct job *jb = arg;
    if (reply_while_closing(jb))
        return;
    if (r == NULL)
        job_retry(jb, "Redis did not store its result");
    else if (pc_reply_type(r) == PC_REPLY_ERROR)
        job_drop(jb, "Redis refused its result");
    else
        job_free(jb);
}

/* The finish script with the kept outcome; may be sent again after a failure. */
static void finish_send(struct job *jb)
{
    struct pc_jobs *j = jb->j;
    const struct cache_info *ci = &jb->fin_ci;
    char rkey[JOBS_RECORD_MAX], ttl[16], now[24];
    record_key(j, jb->id, rkey, sizeof rkey);
    snprintf(ttl, sizeof ttl, "%d", j->cfg->jobs_result_ttl_s);
    snprintf(now, sizeof now, "%lld", (long long)pc_wall_ms());
    const char *env = jb->fin_env.data ? jb->fin_env.data : "";
    if (jb->local) { /* no stream entry: the lease goes instead */
        char lkey[JOBS_RECORD_MAX];
        lease_key(j, jb->id, lkey, sizeof lkey);
        const char *largv[] = {
            "EVAL", lua_finish_local, "2",     rkey,     lkey, ttl, jb->fin_state,
            env,    ci->cache,        ci->key, ci->hits, now};
        size_t llens[12];
        for (size_t i = 0; i < 12; i++)
            llens[i] = strlen(largv[i]);
        llens[1] = sizeof lua_finish_local - 1;
        llens[7] = jb->fin_env.len;
        if (store_cmd(j, cmd_timeout(j, jb->fin_env.len), on_finish, jb, 12, largv, llens) != 0)
            job_retry(jb, "Redis unavailable to store its result");
        return;
    }
    const char *argv[] = {"EVAL",   lua_finish,    "2",        rkey,      j->stream,
                          ttl,      jb->fin_state, env,        ci->cache, ci->key,
                          ci->hits, now,           JOBS_GROUP, jb->entry};
    size_t lens[14];
    for (size_t i = 0; i < 14; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_finish - 1;
    lens[7] = jb->fin_env.len;
    if (store_cmd(j, cmd_timeout(j, jb->fin_env.len), on_finish, jb, 14, argv, lens) != 0)
        job_retry(jb, "Redis unavailable to store its result");
}

/*
 * Stores the job's outcome and acknowledges its entry, in one script. state NULL:
 * acknowledge only (the job was finished before). ci may be NULL.
 */
static void job_finish(struct job *jb, const char *state, int status, const char *ctype,
                       const char *body, size_t len, const struct cache_info *ci)
{
    struct pc_jobs *j = jb->j;
    job_step(jb, PC_JOB_FINISHING);
    jb->tries = 0;
    if (ci != NULL)
        jb->fin_ci = *ci;
    pc_strlcpy(jb->fin_state, state ? state : "", sizeof jb->fin_state);
    if (state != NULL) {
        struct pc_envelope e = {.status = status,
                                .stored_at_ms = pc_wall_ms(),
                                .content_type = ctype ? ctype : "",
                                .body = body ? body : "",
                                .body_len = body ? len : 0};
        if (pc_envelope_encode(&e, &jb->fin_env) != 0) { /* a content type it cannot hold */
            e.content_type = "";
            pc_buf_release(&jb->fin_env);
            pc_envelope_encode(&e, &jb->fin_env);
        }
        const char *cache = jb->fin_ci.cache;
        double ms = (double)(pc_now_us() - jb->start_us) / 1000.0;
        pc_log(PC_LOG_INFO, "jobs: job %s %s: %d%s%s%s in %.1f ms (attempt %d)", jb->id, state,
               status, cache[0] ? " (" : "", cache, cache[0] ? ")" : "", ms, jb->attempt);
        if (strcmp(state, "done") == 0)
            PC_METRIC_INC(j->w->metrics.jobs_done);
        else
            PC_METRIC_INC(j->w->metrics.jobs_failed);
    }
    finish_send(jb);
}

/* A job failed by predcache itself (not by the model server): status + {"error": msg}. */
static void job_fail(struct job *jb, int status, const char *msg)
{
    struct pc_buf b;
    pc_buf_init(&b);
    json_error(&b, msg);
    job_finish(jb, "failed", status, "application/json", b.data, b.len, NULL);
    pc_buf_release(&b);
}

static void on_release(const struct pc_reply *r, void *arg)
{
    (void)r; /* not handed back: the lease runs out instead */
    struct job *jb = arg;
    struct pc_jobs *j = jb->j;
    j->pending_cmds--;
    job_free(jb);
    jobs_maybe_free(j);
}

/* Hands the job back to the queue for another process (shutdown). A local job cannot be:
 * no other process has its credentials; it is failed instead. */
static void job_release(struct job *jb, int started)
{
    struct pc_jobs *j = jb->j;
    if (jb->local) {
        job_fail(jb, 500,
                 "job not finished: the predcache process holding it shut down "
                 "first; " JOBS_LOCAL_STOPPED);
        return;
    }
    job_step(jb, PC_JOB_RELEASING);
    PC_METRIC_INC(j->w->metrics.jobs_released);
    pc_log(PC_LOG_INFO, "jobs: job %s handed back to the queue (shutting down)",
           jb->id[0] ? jb->id : jb->entry);
    char rkey[JOBS_RECORD_MAX], idle[16];
    record_key(j, jb->id, rkey, sizeof rkey);
    snprintf(idle, sizeof idle, "%d", j->cfg->jobs_claim_after_ms);
    const char *st = started ? "1" : "0";
    const char *argv[] = {"EVAL",     lua_release, "2",       j->stream, rkey,
                          JOBS_GROUP, j->consumer, jb->entry, idle,      st};
    size_t lens[10];
    for (size_t i = 0; i < 10; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_release - 1;
    if (store_cmd(j, 0, on_release, jb, 10, argv, lens) != 0)
        job_drop(jb, "Redis unavailable to hand it back");
}

static const char *find_header(const struct pc_upstream_resp *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        if (pc_strcaseeq(r->headers[i].name, name))
            return r->headers[i].value;
    }
    return NULL;
}

/* The loopback request answered: that answer is the job's result. */
static void on_job_answer(const struct pc_upstream_resp *r, void *arg)
{
    struct job *jb = arg;
    struct pc_jobs *j = jb->j;
    if (j->closing) {
        job_free(jb);
        return;
    }
    char twin_key[PC_KEY_MAX]; /* jb may be gone below */
    pc_strlcpy(twin_key, jb->key, sizeof twin_key);
    if (r->error == PC_UP_SHUTDOWN || (r->error != PC_UP_OK && j->draining)) {
        job_release(jb, 1);
    } else if (r->error != PC_UP_OK) {
        char msg[400];
        snprintf(msg, sizeof msg, "job request to predcache failed: %s", r->errmsg);
        job_fail(jb, pc_upstream_error_status(r->error), msg);
    } else {
        struct cache_info ci;
        const char *v;
        pc_strlcpy(ci.cache, (v = find_header(r, "X-Cache")) ? v : "", sizeof ci.cache);
        pc_strlcpy(ci.key, (v = find_header(r, "X-Cache-Key")) ? v : "", sizeof ci.key);
        pc_strlcpy(ci.hits, (v = find_header(r, "X-Cache-Hits")) ? v : "", sizeof ci.hits);
        job_finish(jb, r->status >= 200 && r->status <= 299 ? "done" : "failed", r->status,
                   find_header(r, "Content-Type"), r->body.data, r->body.len, &ci);
    }
    wake_parked(j, twin_key);
}

/* Sends a job the table marked RUNNING. */
static void job_run(struct job *jb)
{
    struct pc_jobs *j = jb->j;
    if (j->draining) {
        job_release(jb, 1);
        return;
    }
    pc_log(PC_LOG_DEBUG, "jobs: job %s running %s %s (attempt %d)", jb->id, jb->method, jb->target,
           jb->attempt);
    if (pc_upstream_send(j->up, jb->method, jb->target, jb->headers, jb->n_headers + 1, jb->body,
                         jb->body_len, 0, on_job_answer, jb) == NULL)
        job_fail(jb, 502, "cannot start the job's request to predcache");
}

static void start_send(struct job *jb);

static void on_start(const struct pc_reply *r, void *arg)
{
    struct job *jb = arg;
    if (reply_while_closing(jb))
        return;
    const struct pc_reply *verdict = elem(r, 0), *count = elem(r, 1);
    if (r == NULL) {
        job_retry(jb, "Redis did not answer its start");
    } else if (pc_reply_type(r) != PC_REPLY_ARRAY || verdict == NULL || count == NULL) {
        job_drop(jb, "Redis refused its start");
    } else if (reply_is(verdict, "done") || reply_is(verdict, "failed")) {
        job_finish(jb, NULL, 0, NULL, NULL, 0, NULL); /* finished before: acknowledge */
    } else if (reply_is(verdict, "exhausted")) {
        jb->attempt = (int)pc_reply_integer(count);
        char msg[160];
        snprintf(msg, sizeof msg,
                 "job abandoned: the predcache processes running it stopped %d times",
                 JOBS_MAX_ATTEMPTS);
        job_fail(jb, 500, msg);
    } else if (jb->j->draining) {
        jb->attempt = (int)pc_reply_integer(count);
        job_release(jb, 1);
    } else {
        jb->attempt = (int)pc_reply_integer(count);
        if (pc_jobtab_run(jb->j->held, jb->entry) == 1)
            job_run(jb);
        else
            pc_log(PC_LOG_DEBUG, "jobs: job %s waits for an identical job", jb->id);
    }
}

static void start_send(struct job *jb)
{
    struct pc_jobs *j = jb->j;
    char rkey[JOBS_RECORD_MAX], ttl[16], maxa[8], now[24];
    record_key(j, jb->id, rkey, sizeof rkey);
    snprintf(ttl, sizeof ttl, "%d", pending_ttl_s(j));
    snprintf(maxa, sizeof maxa, "%d", JOBS_MAX_ATTEMPTS);
    snprintf(now, sizeof now, "%lld", (long long)pc_wall_ms());
    const char *argv[] = {"EVAL", lua_start, "1", rkey, ttl, maxa, j->consumer, now};
    size_t lens[8];
    for (size_t i = 0; i < 8; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_start - 1;
    if (store_cmd(j, 0, on_start, jb, 8, argv, lens) != 0)
        job_retry(jb, "Redis unavailable to start it");
}

static void job_start(struct job *jb)
{
    job_step(jb, PC_JOB_STARTING);
    jb->tries = 0;
    start_send(jb);
}

/* The retry timer of a job: sends its current Redis step again. */
static void job_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct job *jb = arg;
    enum pc_job_step step = pc_jobtab_step(jb->j->held, jb->entry);
    if (step == PC_JOB_STARTING)
        start_send(jb);
    else if (step == PC_JOB_FINISHING)
        finish_send(jb);
}

/* Reads the stored headers JSON into jb->headers, with room for the marker after them. */
static int parse_headers(struct job *jb, const char *s, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *arr = tok ? json_tokener_parse_ex(tok, s, (int)len) : NULL;
    json_tokener_free(tok);
    size_t n = json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;
    jb->headers = calloc(n + 1, sizeof *jb->headers);
    if (jb->headers == NULL) {
        json_object_put(arr);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_object *pair = json_object_array_get_idx(arr, i);
        json_object *name = json_object_array_get_idx(pair, 0);
        json_object *value = json_object_array_get_idx(pair, 1);
        if (!json_object_is_type(name, json_type_string) ||
            !json_object_is_type(value, json_type_string))
            continue;
        struct pc_header *h = &jb->headers[jb->n_headers];
        h->name = strdup(json_object_get_string(name));
        h->value = strdup(json_object_get_string(value));
        jb->n_headers++;
        if (h->name == NULL || h->value == NULL) {
            json_object_put(arr);
            return -1;
        }
    }
    json_object_put(arr);
    /* The marker, after the stored headers; its strings belong to jb->id (not freed). */
    return 0;
}

static char *dup_reply(const struct pc_reply *r, size_t *len)
{
    size_t l;
    const char *s = r != NULL && pc_reply_type(r) == PC_REPLY_STRING ? pc_reply_str(r, &l) : NULL;
    if (s == NULL)
        return NULL;
    char *out = malloc(l + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, s, l);
    out[l] = '\0';
    if (len)
        *len = l;
    return out;
}

/* The cache key of a well-formed job, to run identical jobs one after the other; "" when
 * its route is not cached or its body cannot be keyed. */
static void job_key(struct pc_jobs *j, struct job *jb)
{
    const char *ct = NULL;
    for (size_t i = 0; i < jb->n_headers; i++) {
        if (pc_strcaseeq(jb->headers[i].name, "Content-Type"))
            ct = jb->headers[i].value;
    }
    char route[PC_CFG_STR * 4];
    pc_strlcpy(route, jb->target, sizeof route);
    char *q = strchr(route, '?');
    if (q != NULL)
        *q = '\0';
    enum pc_key_kind kind;
    char why[128];
    if (!pc_routes_cacheable(j->cfg, jb->method, route) ||
        pc_cachekey_derive(&j->w->keyp, jb->target, jb->body ? jb->body : "", jb->body_len,
                           ct != NULL && strcasestr(ct, "json") != NULL, jb->key, &kind, why,
                           sizeof why) != 0)
        jb->key[0] = '\0';
}

/* One stream entry [id, [field, value, ...]] handed to this consumer. */
static void deliver(struct pc_jobs *j, const struct pc_reply *e, int reclaimed)
{
    char entry[JOBS_ENTRY_ID_MAX];
    const struct pc_reply *fields = elem(e, 1);
    if (reply_copy(elem(e, 0), entry, sizeof entry) != 0)
        return;
    if (fields == NULL || pc_reply_type(fields) != PC_REPLY_ARRAY)
        return; /* deleted meanwhile: Redis drops it from the pending list itself */
    if (pc_jobtab_find(j->held, entry) != NULL)
        return; /* already ours (its heartbeat came late) */
    struct job *jb = job_new(j, entry);
    if (jb == NULL)
        return; /* stays pending: reclaimed later */

    int ok = 1;
    size_t n = pc_reply_count(fields);
    for (size_t i = 0; i + 1 < n; i += 2) {
        const struct pc_reply *k = pc_reply_elem(fields, i), *v = pc_reply_elem(fields, i + 1);
        if (reply_is(k, "id")) {
            if (reply_copy(v, jb->id, sizeof jb->id) != 0 || !valid_job_id(jb->id))
                jb->id[0] = '\0';
        } else if (reply_is(k, "method")) {
            jb->method = dup_reply(v, NULL);
        } else if (reply_is(k, "target")) {
            jb->target = dup_reply(v, NULL);
        } else if (reply_is(k, "body")) {
            jb->body = dup_reply(v, &jb->body_len);
        } else if (reply_is(k, "headers")) {
            size_t l;
            const char *s = pc_reply_str(v, &l);
            if (s == NULL || parse_headers(jb, s, l) != 0)
                ok = 0;
        }
    }
    int has_id = jb->id[0] != '\0';
    int well_formed = has_id && ok && jb->method != NULL && jb->target != NULL &&
                      jb->target[0] == '/' && jb->headers != NULL;
    if (well_formed) {
        if (jb->body == NULL)
            jb->body = strdup("");
        jb->headers[jb->n_headers].name = (char *)PC_JOBS_MARKER;
        jb->headers[jb->n_headers].value = jb->id;
        job_key(j, jb);
    }
    if (pc_jobtab_add(j->held, jb->entry, jb->key, jb) != 0) {
        pc_log(PC_LOG_WARN, "jobs: cannot hold stream entry %s (%zu held); left pending", entry,
               pc_jobtab_count(j->held));
        job_discard(jb); /* stays pending: reclaimed later */
        return;
    }
    PC_METRIC_SET(j->w->metrics.jobs_running, (int64_t)pc_jobtab_count(j->held));
    if (reclaimed)
        PC_METRIC_INC(j->w->metrics.jobs_reclaimed);

    if (!has_id) { /* not a job of ours: nobody can poll it; just drop it */
        pc_log(PC_LOG_WARN, "jobs: stream entry %s has no job id; dropped", entry);
        job_finish(jb, NULL, 0, NULL, NULL, 0, NULL);
    } else if (!well_formed) {
        job_fail(jb, 500, "malformed job entry");
    } else {
        job_start(jb);
    }
}

/* ---- local jobs (credentials = local) ---------------------------------------------- */

static void on_lost(const struct pc_reply *r, void *arg)
{
    (void)r; /* not recorded: the leases run out instead, and the next polls fail the jobs */
    struct pc_jobs *j = arg;
    j->pending_cmds--;
    jobs_maybe_free(j);
}

/*
 * Local jobs that will never run here (stopping, or no memory): their records are failed
 * with why, in one script, and the jobs freed, credentials and all. Takes jobs[0..n), which
 * are in no table.
 */
static void local_lost(struct pc_jobs *j, struct job **jobs, size_t n, const char *why)
{
    if (n == 0)
        return;
    size_t argc = 0, cap = 2 * n + 6;
    const char **argv = calloc(cap, sizeof *argv);
    size_t *lens = calloc(cap, sizeof *lens);
    size_t *offs = calloc(2 * n, sizeof *offs);
    struct pc_buf names, env;
    pc_buf_init(&names);
    pc_buf_init(&env);
    int sent = -1;
    if (argv == NULL || lens == NULL || offs == NULL || failure_envelope(500, why, &env) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) { /* names first: the buffer moves as it grows */
        char key[JOBS_RECORD_MAX];
        record_key(j, jobs[i]->id, key, sizeof key);
        offs[2 * i] = names.len;
        pc_buf_append(&names, key, strlen(key) + 1);
        lease_key(j, jobs[i]->id, key, sizeof key);
        offs[2 * i + 1] = names.len;
        pc_buf_append(&names, key, strlen(key) + 1);
    }
    if (names.data == NULL)
        goto out;
    char nkeys[24], ttl[16], now[24];
    snprintf(nkeys, sizeof nkeys, "%zu", 2 * n);
    snprintf(ttl, sizeof ttl, "%d", j->cfg->jobs_result_ttl_s);
    snprintf(now, sizeof now, "%lld", (long long)pc_wall_ms());
    argv[argc++] = "EVAL";
    argv[argc++] = lua_lost;
    argv[argc++] = nkeys;
    for (size_t i = 0; i < 2 * n; i++)
        argv[argc++] = names.data + offs[i];
    argv[argc++] = ttl;
    argv[argc++] = env.data;
    argv[argc++] = now;
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_lost - 1;
    lens[argc - 2] = env.len;
    sent = store_cmd(j, cmd_timeout(j, names.len), on_lost, j, (int)argc, argv, lens);
out:
    if (sent != 0)
        pc_log(PC_LOG_WARN,
               "jobs: %zu local jobs not recorded failed now; polls fail them once "
               "their leases run out",
               n);
    pc_log(PC_LOG_INFO, "jobs: %zu local jobs failed without running: %s", n, why);
    for (size_t i = 0; i < n; i++) {
        pc_log(PC_LOG_DEBUG, "jobs: local job %s failed without running", jobs[i]->id);
        PC_METRIC_INC(j->w->metrics.jobs_failed);
        job_discard(jobs[i]);
    }
    pc_buf_release(&names);
    pc_buf_release(&env);
    free(argv);
    free(lens);
    free(offs);
}

/* A local job whose record is stored waits for a slot (taken at once when one is free).
 * Takes jb. */
static void local_enqueue(struct pc_jobs *j, struct job *jb)
{
    if (j->draining || j->closing) {
        local_lost(
            j, &jb, 1,
            "job not run: the predcache process holding it shut down first; " JOBS_LOCAL_STOPPED);
        return;
    }
    if (j->n_waiting == j->cap_waiting) {
        size_t cap = j->cap_waiting ? 2 * j->cap_waiting : 16;
        struct job **grown = realloc(j->waiting, cap * sizeof *grown);
        if (grown == NULL) {
            local_lost(j, &jb, 1, "job not run: predcache ran out of memory");
            return;
        }
        j->waiting = grown;
        j->cap_waiting = cap;
    }
    j->waiting[j->n_waiting++] = jb;
    local_step(j);
}

/* Starts waiting local jobs, oldest first, while a slot is free: neither held nor asked for
 * by the stream read in flight (whose entries must find room when they come). */
static void local_step(struct pc_jobs *j)
{
    while (j->n_waiting > 0 && !j->draining && !j->closing) {
        if (pc_jobtab_count(j->held) + j->reading >= (size_t)j->cfg->jobs_concurrency)
            return;
        struct job *jb = j->waiting[0];
        j->n_waiting--;
        memmove(j->waiting, j->waiting + 1, j->n_waiting * sizeof *j->waiting);
        if (pc_jobtab_add(j->held, jb->entry, jb->key, jb) != 0) { /* no memory */
            local_lost(j, &jb, 1, "job not run: predcache ran out of memory");
            continue;
        }
        PC_METRIC_SET(j->w->metrics.jobs_running, (int64_t)pc_jobtab_count(j->held));
        jb->start_us = pc_now_us();
        job_start(jb);
    }
}

/* ---- the consumer ------------------------------------------------------------------ */

static void consumer_later(struct pc_jobs *j, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(j->consumer_timer, &tv);
}

static void consumer_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    consumer_step(arg);
}

/* A consumer command failed: the stream may be gone, or Redis. */
static void consumer_failed(struct pc_jobs *j, const struct pc_reply *r, const char *what)
{
    if (reply_nogroup(r)) {
        pc_log(PC_LOG_INFO, "jobs: stream %s or its group is gone; waiting for it", j->stream);
        j->cstate = CONS_WAIT_STREAM;
        consumer_later(j, JOBS_RETRY_MS);
        return;
    }
    if (r != NULL)
        pc_log(PC_LOG_WARN, "jobs: %s refused; retrying", what);
    consumer_later(j, r != NULL ? JOBS_WAIT_STREAM_MS : JOBS_RETRY_MS);
}

static void on_ensure(const struct pc_reply *r, void *arg)
{
    struct pc_jobs *j = arg;
    j->bst_busy = 0;
    j->reading = 0;
    if (j->draining || j->closing)
        return;
    if (r != NULL && pc_reply_type(r) == PC_REPLY_INTEGER && pc_reply_integer(r) == 1) {
        j->cstate = CONS_READ;
        j->next_reclaim_us = 0; /* look for abandoned jobs first */
        consumer_step(j);
    } else {
        consumer_later(j, r != NULL ? JOBS_WAIT_STREAM_MS : JOBS_RETRY_MS);
    }
}

/* XREADGROUP reply: [[stream, [[id, [f, v, ...]], ...]]] or nil after BLOCK. */
static void on_read(const struct pc_reply *r, void *arg)
{
    struct pc_jobs *j = arg;
    j->bst_busy = 0;
    j->reading = 0;
    if (j->draining || j->closing)
        return; /* bst is being freed: the reply never came */
    if (r == NULL || pc_reply_type(r) == PC_REPLY_ERROR) {
        local_step(j); /* the slots it asked for are free again */
        consumer_failed(j, r, "XREADGROUP");
        return;
    }
    for (size_t s = 0; s < pc_reply_count(r); s++) {
        const struct pc_reply *entries = elem(pc_reply_elem(r, s), 1);
        for (size_t i = 0; entries != NULL && i < pc_reply_count(entries); i++)
            deliver(j, pc_reply_elem(entries, i), 0);
    }
    local_step(j); /* the slots the read asked for and did not fill */
    consumer_step(j);
}

/* XAUTOCLAIM reply: [next cursor, [[id, [f, v, ...]], ...], [deleted ids]]. */
static void on_autoclaim(const struct pc_reply *r, void *arg)
{
    struct pc_jobs *j = arg;
    j->bst_busy = 0;
    j->reading = 0;
    if (j->draining || j->closing)
        return;
    j->next_reclaim_us = pc_now_us() + (uint64_t)j->cfg->jobs_claim_after_ms * 500;
    if (r == NULL || pc_reply_type(r) == PC_REPLY_ERROR) {
        local_step(j);
        consumer_failed(j, r, "XAUTOCLAIM");
        return;
    }
    if (reply_copy(elem(r, 0), j->cursor, sizeof j->cursor) != 0)
        pc_strlcpy(j->cursor, "0-0", sizeof j->cursor);
    const struct pc_reply *entries = elem(r, 1);
    for (size_t i = 0; entries != NULL && i < pc_reply_count(entries); i++) {
        const struct pc_reply *e = pc_reply_elem(entries, i);
        char entry[JOBS_ENTRY_ID_MAX];
        if (reply_copy(elem(e, 0), entry, sizeof entry) == 0)
            pc_log(PC_LOG_INFO, "jobs: took over stream entry %s from a stopped consumer", entry);
        deliver(j, e, 1);
    }
    local_step(j);
    consumer_step(j);
}

/* Sends the consumer's next command on bst, if it has one to send now. */
static void consumer_step(struct pc_jobs *j)
{
    if (j->draining || j->closing || j->bst == NULL || j->bst_busy)
        return;
    if (!pc_store_ready(j->bst)) {
        consumer_later(j, JOBS_RETRY_MS);
        return;
    }
    const struct pc_config *cfg = j->cfg;
    int slow = cfg->redis_timeout_ms + 1500;  /* replies may carry large bodies */
    event_base_update_cache_time(j->w->base); /* see store_cmd */
    if (j->cstate == CONS_WAIT_STREAM) {
        const char *argv[] = {"EVAL", lua_ensure, "1", j->stream, JOBS_GROUP};
        size_t lens[] = {4, sizeof lua_ensure - 1, 1, strlen(j->stream), strlen(JOBS_GROUP)};
        if (pc_store_command(j->bst, 0, on_ensure, j, 5, argv, lens) != 0)
            consumer_later(j, JOBS_RETRY_MS);
        else
            j->bst_busy = 1;
        return;
    }
    /* Local jobs waiting here go first: only this process can run them. */
    size_t held = pc_jobtab_count(j->held) + j->n_waiting;
    if (held >= (size_t)cfg->jobs_concurrency)
        return; /* a finished job calls again */
    size_t want = (size_t)cfg->jobs_concurrency - held;
    char count[24];
    snprintf(count, sizeof count, "%zu", want);
    uint64_t now = pc_now_us();
    int rc;
    if (now >= j->next_reclaim_us) {
        char idle[16];
        snprintf(idle, sizeof idle, "%d", cfg->jobs_claim_after_ms);
        const char *argv[] = {"XAUTOCLAIM", j->stream, JOBS_GROUP, j->consumer,
                              idle,         j->cursor, "COUNT",    count};
        size_t lens[8];
        for (int i = 0; i < 8; i++)
            lens[i] = strlen(argv[i]);
        rc = pc_store_command(j->bst, slow, on_autoclaim, j, 8, argv, lens);
    } else {
        uint64_t left_ms = (j->next_reclaim_us - now) / 1000;
        int block = left_ms < JOBS_BLOCK_MS ? (int)left_ms : JOBS_BLOCK_MS;
        char bms[16];
        snprintf(bms, sizeof bms, "%d", block > 0 ? block : 1); /* BLOCK 0 would be forever */
        const char *argv[] = {"XREADGROUP", "GROUP", JOBS_GROUP, j->consumer, "COUNT", count,
                              "BLOCK",      bms,     "STREAMS",  j->stream,   ">"};
        size_t lens[11];
        for (int i = 0; i < 11; i++)
            lens[i] = strlen(argv[i]);
        rc = pc_store_command(j->bst, slow + JOBS_BLOCK_MS, on_read, j, 11, argv, lens);
    }
    if (rc != 0) {
        consumer_later(j, JOBS_RETRY_MS);
    } else {
        j->bst_busy = 1;
        j->reading = want; /* until its reply, these slots are the read's */
    }
}

static void on_heartbeat(const struct pc_reply *r, void *arg)
{
    (void)r;
    struct pc_jobs *j = arg;
    j->pending_cmds--;
    jobs_maybe_free(j);
}

/* Renews the leases of the local jobs among held[0..n_held) and waiting[0..n_waiting). */
static void leases_renew(struct pc_jobs *j, size_t n_held)
{
    size_t n = n_held + j->n_waiting, argc = 0, nkeys = 0;
    const char **argv = calloc(n + 5, sizeof *argv);
    size_t *lens = calloc(n + 5, sizeof *lens), *offs = calloc(n, sizeof *offs);
    struct pc_buf names;
    pc_buf_init(&names);
    if (argv == NULL || lens == NULL || offs == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        struct job *jb = i < n_held ? pc_jobtab_at(j->held, i, NULL, NULL) : j->waiting[i - n_held];
        if (!jb->local)
            continue;
        char key[JOBS_RECORD_MAX];
        lease_key(j, jb->id, key, sizeof key);
        offs[nkeys++] = names.len;
        pc_buf_append(&names, key, strlen(key) + 1);
    }
    if (nkeys == 0 || names.data == NULL)
        goto out;
    char nk[24], ms[16];
    snprintf(nk, sizeof nk, "%zu", nkeys);
    snprintf(ms, sizeof ms, "%d", j->cfg->jobs_claim_after_ms);
    argv[argc++] = "EVAL";
    argv[argc++] = lua_lease;
    argv[argc++] = nk;
    for (size_t i = 0; i < nkeys; i++)
        argv[argc++] = names.data + offs[i];
    argv[argc++] = ms;
    argv[argc++] = j->consumer;
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    lens[1] = sizeof lua_lease - 1;
    store_cmd(j, 0, on_heartbeat, j, (int)argc, argv, lens);
out:
    pc_buf_release(&names);
    free(argv);
    free(lens);
    free(offs);
}

/* Keeps the entries of held stream jobs fresh, so that no other process takes them over,
 * and the leases of local jobs, so that no poll takes them for lost. */
static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pc_jobs *j = arg;
    size_t held = pc_jobtab_count(j->held);
    if (held + j->n_waiting == 0 || j->closing)
        return;
    size_t cap = held + 6, argc = 0;
    const char **argv = calloc(cap, sizeof *argv);
    size_t *lens = calloc(cap, sizeof *lens);
    if (argv == NULL || lens == NULL)
        goto out;
    argv[argc++] = "XCLAIM";
    argv[argc++] = j->stream;
    argv[argc++] = JOBS_GROUP;
    argv[argc++] = j->consumer;
    argv[argc++] = "0";
    size_t ids = 0;
    for (size_t i = 0; i < held && argc < cap - 1; i++) {
        const char *entry;
        enum pc_job_step step;
        struct job *jb = pc_jobtab_at(j->held, i, &entry, &step);
        if (!jb->local && step != PC_JOB_RELEASING) {
            argv[argc++] = entry;
            ids++;
        }
    }
    argv[argc++] = "JUSTID";
    for (size_t i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    if (ids > 0)
        store_cmd(j, 0, on_heartbeat, j, (int)argc, argv, lens);
out:
    free(argv);
    free(lens);
    leases_renew(j, held);
}

/* ---- lifetime ---------------------------------------------------------------------- */

/* http://<host>:<port> of our own data listener, loopback for a wildcard address. */
static void loopback_url(const struct pc_worker *w, char *out, size_t outlen)
{
    char host[PC_CFG_STR] = "127.0.0.1";
    int port;
    if (pc_config_split_hostport(w->cfg->listen, host, sizeof host, &port) != 0 ||
        strcmp(host, "0.0.0.0") == 0)
        pc_strlcpy(host, "127.0.0.1", sizeof host);
    port = pc_http_server_port(w->data);
    if (strcmp(host, "::") == 0)
        snprintf(out, outlen, "http://[::1]:%d", port);
    else if (strchr(host, ':') != NULL)
        snprintf(out, outlen, "http://[%s]:%d", host, port);
    else
        snprintf(out, outlen, "http://%s:%d", host, port);
}

struct pc_jobs *pc_jobs_new(struct pc_worker *w, char *err, size_t errlen)
{
    const struct pc_config *cfg = w->cfg;
    struct pc_jobs *j = calloc(1, sizeof *j);
    if (j == NULL) {
        snprintf(err, errlen, "jobs: out of memory");
        return NULL;
    }
    j->w = w;
    j->cfg = cfg;
    /* At most concurrency jobs: the consumer reads no more than the slots left. */
    j->held = pc_jobtab_new((size_t)cfg->jobs_concurrency);
    if (j->held == NULL) {
        snprintf(err, errlen, "jobs: out of memory");
        free(j);
        return NULL;
    }
    if (cfg->jobs_stream[0] != '\0')
        pc_strlcpy(j->stream, cfg->jobs_stream, sizeof j->stream);
    else
        snprintf(j->stream, sizeof j->stream, "%sjobs:{%s}", cfg->key_prefix, cfg->namespace_);
    { /* the part of the stream's name that decides its slot: its hash tag, or all of it */
        size_t off = 0, n = strlen(j->stream);
        pc_slot_tag(j->stream, n, &off, &n);
        snprintf(j->tag, sizeof j->tag, "%.*s", (int)n, j->stream + off);
    }
    char host[64] = "host", rnd[9];
    if (gethostname(host, sizeof host) != 0)
        pc_strlcpy(host, "host", sizeof host);
    host[sizeof host - 1] = '\0';
    if (random_hex(rnd, 4) != 0) {
        snprintf(err, errlen, "jobs: no random numbers for the consumer name");
        pc_jobtab_free(j->held);
        free(j);
        return NULL;
    }
    snprintf(j->consumer, sizeof j->consumer, "%s-%ld-%s", host, (long)getpid(), rnd);
    pc_strlcpy(j->cursor, "0-0", sizeof j->cursor);

    /* The loopback call outlasts the proxy's own deadline, so the proxy's answer (504
     * included) is what the job records. */
    memcpy(&j->upcfg, cfg, sizeof j->upcfg);
    j->upcfg.backend_timeout_ms = cfg->request_timeout_ms + JOBS_LOOPBACK_SLACK_MS;
    j->upcfg.backend_connect_timeout_ms = 1000;
    char url[PC_CFG_STR + 32];
    loopback_url(w, url, sizeof url);
    j->up = pc_upstream_new_for(w->base, &j->upcfg, url);
    j->consumer_timer = evtimer_new(w->base, consumer_timer_cb, j);
    j->heartbeat = event_new(w->base, -1, EV_PERSIST, heartbeat_cb, j);
    pc_metrics_init(&j->bst_m);
    if (cfg->jobs_concurrency > 0)
        j->bst = pc_store_new(w->base, cfg, &j->bst_m);
    if (j->up == NULL || j->consumer_timer == NULL || j->heartbeat == NULL ||
        (cfg->jobs_concurrency > 0 && j->bst == NULL)) {
        snprintf(err, errlen, "jobs: cannot create the job consumer");
        pc_jobs_free(j);
        return NULL;
    }
    int hb = cfg->jobs_claim_after_ms / 3;
    struct timeval tv = {hb / 1000, (hb % 1000) * 1000};
    event_add(j->heartbeat, &tv);
    j->cstate = CONS_WAIT_STREAM;
    if (j->bst != NULL)
        consumer_later(j, 0); /* once connected */
    pc_log(PC_LOG_INFO, "jobs: stream %s, consumer %s, %d at once, loopback %s", j->stream,
           j->consumer, cfg->jobs_concurrency, url);
    return j;
}

void pc_jobs_drain(struct pc_jobs *j)
{
    if (j == NULL || j->draining)
        return;
    j->draining = 1;
    if (j->consumer_timer)
        event_del(j->consumer_timer);
    /* Drops a blocked XREADGROUP: what was not delivered stays in the stream for others. */
    struct pc_store *bst = j->bst;
    j->bst = NULL;
    pc_store_free(bst);
    pc_log(PC_LOG_INFO, "jobs: consumer stopped; %zu jobs held, %zu local jobs not started",
           pc_jobtab_count(j->held), j->n_waiting);
    /* Local jobs not started cannot be handed to anyone: they fail now, so that their
     * clients know at once. */
    size_t n = j->n_waiting;
    j->n_waiting = 0;
    local_lost(
        j, j->waiting, n,
        "job not run: the predcache process holding it shut down first; " JOBS_LOCAL_STOPPED);
}

size_t pc_jobs_held(const struct pc_jobs *j)
{
    return j != NULL && j->held != NULL ? pc_jobtab_count(j->held) + j->n_waiting : 0;
}

void pc_jobs_abort(struct pc_jobs *j)
{
    if (j == NULL)
        return;
    pc_jobs_drain(j);
    pc_upstream_abort_all(j->up); /* running jobs: their callbacks hand them back */
    struct job *p;
    while ((p = pc_jobtab_first(j->held, PC_JOB_PARKED, NULL)) != NULL)
        job_release(p, 1); /* RELEASING now; may free p, never another job */
}

void pc_jobs_master_moved(struct pc_jobs *j, const char *host, int port)
{
    if (j != NULL)
        pc_store_master_moved(j->bst, host, port);
}

void pc_jobs_free(struct pc_jobs *j)
{
    if (j == NULL)
        return;
    pc_jobs_drain(j);
    j->closing = 1;
    pc_upstream_free(j->up); /* running jobs are let go in their callbacks */
    j->up = NULL;
    /* Parked or retrying jobs wait on no command; let them go now. From the newest: freeing
     * one leaves the places of those before it. */
    for (size_t i = pc_jobtab_count(j->held); i-- > 0;) {
        enum pc_job_step step;
        struct job *p = pc_jobtab_at(j->held, i, NULL, &step);
        if (step == PC_JOB_PARKED || evtimer_pending(p->retry, NULL))
            job_free(p);
    }
    PC_METRIC_SET(j->w->metrics.jobs_running, 0);
    if (j->consumer_timer)
        event_free(j->consumer_timer);
    if (j->heartbeat)
        event_free(j->heartbeat);
    j->consumer_timer = j->heartbeat = NULL;
    jobs_maybe_free(j);
}
