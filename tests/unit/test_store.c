/* store's held writes (pc_store_hold) and the order of its sends and replies on the loop,
 * against a redis-server this test starts on a free loopback port in a temporary
 * directory, and stops. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <event2/event.h>
#include <netinet/in.h>

#include "predcache/config.h"
#include "predcache/loop.h"
#include "predcache/metrics.h"
#include "predcache/store.h"

static pid_t redis_pid;
static int redis_port;
static char redis_dir[] = "/tmp/pc-test-store-XXXXXX";

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static int redis_up(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)redis_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

static int start_redis(void **state)
{
    (void)state;
    if (mkdtemp(redis_dir) == NULL || (redis_port = free_port()) < 0)
        return -1;
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    redis_pid = fork();
    if (redis_pid == 0) {
        /* It stops with this test, whatever ends it (a crash, a kill, a timeout). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", redis_dir, "--logfile", "/dev/null", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500 && !redis_up(); i++)
        usleep(10000);
    return redis_up() ? 0 : -1;
}

static int stop_redis(void **state)
{
    (void)state;
    if (redis_pid > 0) {
        kill(redis_pid, SIGTERM);
        waitpid(redis_pid, NULL, 0);
    }
    rmdir(redis_dir);
    return 0;
}

/* A worker's loop (loop.h) and a store on it. */
struct rig {
    struct event_base *base;
    struct pc_config cfg;
    struct pc_metrics m;
    struct pc_store *st;
};

static void loop_until(struct rig *r, const int *flag)
{
    for (int i = 0; i < 20000 && !*flag; i++) {
        event_base_loop(r->base, EVLOOP_NONBLOCK);
        if (!*flag)
            usleep(100);
    }
    assert_true(*flag);
}

static void on_ready_ping(int ok, void *arg)
{
    *(int *)arg = ok ? 1 : -1;
}

static void unique_key(char *out, size_t len, const char *what)
{
    static int n;
    snprintf(out, len, "test-store:%s:%ld:%d", what, (long)getpid(), ++n);
}

/* The rig, connected, and a key of the test's own (what names the test) in key. */
static void rig_up(struct rig *r, int max_pending, const char *what, char *key, size_t keylen)
{
    unique_key(key, keylen, what);
    memset(r, 0, sizeof *r);
    r->base = pc_loop_new();
    assert_non_null(r->base);
    pc_config_defaults(&r->cfg);
    snprintf(r->cfg.redis_host, sizeof r->cfg.redis_host, "127.0.0.1");
    r->cfg.redis_port = redis_port;
    r->cfg.redis_max_pending = max_pending;
    pc_metrics_init(&r->m);
    r->st = pc_store_new(r->base, &r->cfg, &r->m);
    assert_non_null(r->st);
    int ready = 0;
    for (int i = 0; i < 20000 && !pc_store_ready(r->st); i++) {
        event_base_loop(r->base, EVLOOP_NONBLOCK);
        usleep(100);
    }
    assert_true(pc_store_ready(r->st));
    assert_int_equal(pc_store_ping(r->st, on_ready_ping, &ready), 0);
    loop_until(r, &ready);
    assert_int_equal(ready, 1);
}

static void rig_down(struct rig *r)
{
    pc_store_free(r->st);
    event_base_free(r->base);
}

struct get {
    int done;
    enum pc_store_result res;
    char val[64];
};

static void on_get(enum pc_store_result res, const char *data, size_t len, void *arg)
{
    struct get *g = arg;
    g->res = res;
    snprintf(g->val, sizeof g->val, "%.*s", (int)len, data ? data : "");
    g->done = 1;
}

static void on_cmd(const struct pc_reply *reply, void *arg)
{
    struct get *g = arg;
    size_t len = 0;
    const char *s = reply != NULL ? pc_reply_str(reply, &len) : NULL;
    g->res = reply == NULL                          ? PC_STORE_ERROR
             : pc_reply_type(reply) == PC_REPLY_NIL ? PC_STORE_MISS
                                                    : PC_STORE_HIT;
    snprintf(g->val, sizeof g->val, "%.*s", (int)len, s ? s : "");
    g->done = 1;
}

/* GET key sent as a command that is not a lookup (it keeps its order behind held writes);
 * the loop runs until it is answered. */
static void command_get(struct rig *r, const char *key, struct get *g)
{
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, strlen(key)};
    assert_int_equal(pc_store_command(r->st, 0, on_cmd, g, 2, argv, lens), 0);
    assert_int_equal(pc_store_held(r->st), 0); /* the held ones went out first */
    loop_until(r, &g->done);
}

struct set {
    int calls;
    int ok;
    uint64_t at; /* busy turns of the loop seen when it was answered */
};

static uint64_t busy_turns;

static void on_set(int ok, void *arg)
{
    struct set *s = arg;
    s->calls++;
    s->ok = ok;
    s->at = busy_turns;
}

/* A lookup sent after a held SET reaches Redis before it: it does not see the value; the
 * SET then goes out by itself once the loop is idle. */
static void test_a_lookup_passes_held_writes(void **state)
{
    (void)state;
    struct rig r;
    char key[128];
    rig_up(&r, 0, "pass", key, sizeof key);
    struct set s = {0};
    pc_store_hold(r.st, 1);
    assert_int_equal(pc_store_set_cb(r.st, key, "v1", 2, 60, on_set, &s), 0);
    pc_store_hold(r.st, 0);
    assert_int_equal(pc_store_held(r.st), 1);
    assert_int_equal(pc_store_pending(r.st), 1);
    struct get g = {0}, g2 = {0};
    assert_int_equal(pc_store_get(r.st, key, on_get, &g), 0);
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, strlen(key)};
    assert_int_equal(pc_store_lookup(r.st, 0, on_cmd, &g2, 2, argv, lens), 0);
    assert_int_equal(pc_store_held(r.st), 1); /* lookups do not send them */
    loop_until(&r, &g.done);
    loop_until(&r, &g2.done);
    assert_int_equal(g.res, PC_STORE_MISS);
    assert_int_equal(g2.res, PC_STORE_MISS);
    loop_until(&r, &s.calls);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.ok, 1);
    assert_int_equal(pc_store_held(r.st), 0);
    struct get g3 = {0};
    assert_int_equal(pc_store_get(r.st, key, on_get, &g3), 0);
    loop_until(&r, &g3.done);
    assert_int_equal(g3.res, PC_STORE_HIT);
    assert_string_equal(g3.val, "v1");
    rig_down(&r);
}

/* Any other command sent meanwhile (a purge's DEL, say) goes out behind the held writes,
 * in order: it sees them. */
static void test_other_commands_keep_their_order_behind_held_writes(void **state)
{
    (void)state;
    struct rig r;
    char key[128];
    rig_up(&r, 0, "order", key, sizeof key);
    pc_store_hold(r.st, 1);
    assert_int_equal(pc_store_set(r.st, key, "v2", 2, 60), 0);
    const char *set2[] = {"SET", key, "v3"};
    size_t set2_lens[] = {3, strlen(key), 2};
    assert_int_equal(pc_store_command(r.st, 0, NULL, NULL, 3, set2, set2_lens), 0);
    pc_store_hold(r.st, 0);
    assert_int_equal(pc_store_held(r.st), 2);
    struct get g = {0};
    command_get(&r, key, &g);
    assert_int_equal(g.res, PC_STORE_HIT);
    assert_string_equal(g.val, "v3");
    rig_down(&r);
}

/* A loop that never runs out of work (a socket always readable, never read: every turn
 * has its event to run) never turns idle: the held writes go out PC_STORE_HOLD_MS after
 * the first all the same, while it is still busy. */
static void busy_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    busy_turns++;
}

static void test_held_writes_go_out_within_the_bound_on_a_busy_loop(void **state)
{
    (void)state;
    struct rig r;
    char key[128];
    rig_up(&r, 0, "busy", key, sizeof key);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "x", 1), 1);
    struct event *busy = event_new(r.base, sv[0], EV_READ | EV_PERSIST, busy_cb, NULL);
    assert_non_null(busy);
    assert_int_equal(event_add(busy, NULL), 0);
    busy_turns = 0;
    struct set s = {0};
    pc_store_hold(r.st, 1);
    assert_int_equal(pc_store_set_cb(r.st, key, "v4", 2, 60, on_set, &s), 0);
    pc_store_hold(r.st, 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 2000000 && s.calls == 0; i++) /* one turn each */
        event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.ok, 1);
    assert_true(s.at > 0); /* answered while the loop was busy */
    printf("held SET answered after %.3f ms on a busy loop (%llu busy turns)\n",
           (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
           (unsigned long long)s.at);
    event_free(busy);
    close(sv[0]);
    close(sv[1]);
    rig_down(&r);
}

/* Held writes count in the stores' budget ([redis] max_pending): past it, a SET is shed. */
static void test_held_writes_count_in_the_budget(void **state)
{
    (void)state;
    struct rig r;
    char key[128];
    rig_up(&r, 2, "budget", key, sizeof key);
    pc_store_hold(r.st, 1);
    assert_int_equal(pc_store_set(r.st, key, "a", 1, 60), 0);
    assert_int_equal(pc_store_set(r.st, key, "b", 1, 60), 0);
    assert_int_equal(pc_store_set(r.st, key, "c", 1, 60), -1);
    pc_store_hold(r.st, 0);
    assert_int_equal(PC_METRIC_GET(r.m.store_dropped), 1);
    struct get g = {0};
    command_get(&r, key, &g);
    assert_string_equal(g.val, "b");
    rig_down(&r);
}

/* The store freed (or its connection lost) with writes held: each callback is answered
 * once, with the failure. */
static void test_held_writes_fail_once_when_the_store_goes(void **state)
{
    (void)state;
    struct rig r;
    char key[128];
    rig_up(&r, 0, "gone", key, sizeof key);
    struct set s1 = {0}, s2 = {0};
    int pinged = 0;
    pc_store_hold(r.st, 1);
    assert_int_equal(pc_store_set_cb(r.st, key, "x", 1, 60, on_set, &s1), 0);
    assert_int_equal(pc_store_set_cb(r.st, key, "y", 1, 60, on_set, &s2), 0);
    assert_int_equal(pc_store_ping(r.st, on_ready_ping, &pinged), 0);
    pc_store_hold(r.st, 0);
    assert_int_equal(pc_store_pending(r.st), 3);
    pc_store_free(r.st);
    assert_int_equal(s1.calls, 1);
    assert_int_equal(s1.ok, 0);
    assert_int_equal(s2.calls, 1);
    assert_int_equal(s2.ok, 0);
    assert_int_equal(pinged, -1);
    event_base_free(r.base);
}

/* ---- the order of sends and replies ------------------------------------------------- */

/* Callbacks at the default priority, made active together: each sends a GET of its key
 * (when it has one) after noting what the store had gathered and not sent. */
struct turn {
    struct rig *r;
    char key[128];
    int send;
    int ran;
    size_t gathered_before; /* the store's unsent bytes when it ran */
    struct get g;
    const int *peek; /* when set: what it pointed to when the callback ran, in peeked */
    int peeked;
};

static void turn_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct turn *t = arg;
    t->ran = 1;
    t->gathered_before = pc_store_gathered(t->r->st);
    if (t->peek != NULL)
        t->peeked = *t->peek;
    if (t->send)
        assert_int_equal(pc_store_get(t->r->st, t->key, on_get, &t->g), 0);
}

/* A quiet loop: the GET written by one callback has gone out before the next waiting
 * callback runs (the build before sent it after the pass's callbacks, gathered). */
static void test_a_quiet_loop_sends_a_lookup_after_its_callback(void **state)
{
    (void)state;
    struct rig r;
    struct turn a = {.r = &r, .send = 1}, b = {.r = &r};
    rig_up(&r, 0, "quiet", a.key, sizeof a.key);
    struct event *ea = event_new(r.base, -1, 0, turn_cb, &a);
    struct event *eb = event_new(r.base, -1, 0, turn_cb, &b);
    event_active(ea, EV_TIMEOUT, 1);
    event_active(eb, EV_TIMEOUT, 1);
    loop_until(&r, &b.ran);
    assert_int_equal(b.gathered_before, 0);
    loop_until(&r, &a.g.done);
    assert_int_equal(a.g.res, PC_STORE_MISS);
    event_free(ea);
    event_free(eb);
    rig_down(&r);
}

/* A busy loop (PC_STORE_AT_ONCE_BELOW callbacks or more waiting): the GETs of the
 * callbacks waiting together go out in one send after them; each is answered. */
static void test_a_busy_loop_gathers_its_lookups(void **state)
{
    (void)state;
    enum { N = PC_STORE_AT_ONCE_BELOW + 4 };
    struct rig r;
    struct turn t[N];
    struct event *ev[N];
    memset(t, 0, sizeof t);
    rig_up(&r, 0, "busy-gather", t[0].key, sizeof t[0].key);
    for (int i = 0; i < N; i++) {
        t[i].r = &r;
        t[i].send = 1;
        if (i > 0)
            unique_key(t[i].key, sizeof t[i].key, "busy-gather");
        ev[i] = event_new(r.base, -1, 0, turn_cb, &t[i]);
        assert_non_null(ev[i]);
    }
    for (int i = 0; i < N; i++)
        event_active(ev[i], EV_TIMEOUT, 1);
    loop_until(&r, &t[N - 1].ran);
    for (int i = 1; i < N; i++) /* the first one's GET was still there: one send */
        assert_true(t[i].gathered_before > 0);
    for (int i = 0; i < N; i++) {
        loop_until(&r, &t[i].g.done);
        assert_int_equal(t[i].g.res, PC_STORE_MISS);
        event_free(ev[i]);
    }
    rig_down(&r);
}

/* A reply that has come runs before the callbacks that were waiting at the default
 * priority (the build before ran them first: a lookup answered waited for the pass). */
static void test_a_reply_runs_before_waiting_callbacks(void **state)
{
    (void)state;
    struct rig r;
    char key[128];
    rig_up(&r, 0, "reply-first", key, sizeof key);
    int seen = 0; /* passes in which the reply had come and ran */
    for (int attempt = 1; attempt <= 5 && !seen; attempt++) {
        struct get g = {0};
        struct turn a = {.r = &r, .peek = &g.done};
        assert_int_equal(pc_store_get(r.st, key, on_get, &g), 0);
        for (int i = 0; i < 20000 && pc_store_gathered(r.st) > 0; i++) /* sent */
            event_base_loop(r.base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
        assert_int_equal(pc_store_gathered(r.st), 0);
        assert_int_equal(g.done, 0);
        usleep(200000 * (useconds_t)attempt); /* the local Redis has answered by now */
        struct event *ea = event_new(r.base, -1, 0, turn_cb, &a);
        event_active(ea, EV_TIMEOUT, 1);
        event_base_loop(r.base, EVLOOP_ONCE);
        assert_int_equal(a.ran, 1);
        if (g.done) { /* the reply was there: it ran first */
            assert_int_equal(a.peeked, 1);
            seen = 1;
        }
        loop_until(&r, &g.done); /* (a slow Redis: again, with a longer wait) */
        event_free(ea);
    }
    assert_true(seen);
    rig_down(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_lookup_passes_held_writes),
        cmocka_unit_test(test_other_commands_keep_their_order_behind_held_writes),
        cmocka_unit_test(test_held_writes_go_out_within_the_bound_on_a_busy_loop),
        cmocka_unit_test(test_held_writes_count_in_the_budget),
        cmocka_unit_test(test_held_writes_fail_once_when_the_store_goes),
        cmocka_unit_test(test_a_quiet_loop_sends_a_lookup_after_its_callback),
        cmocka_unit_test(test_a_busy_loop_gathers_its_lookups),
        cmocka_unit_test(test_a_reply_runs_before_waiting_callbacks),
    };
    return cmocka_run_group_tests(tests, start_redis, stop_redis);
}
