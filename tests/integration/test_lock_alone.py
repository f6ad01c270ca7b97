"""[cache] lock = auto: the cross-process lock only while someone shares the done channel.

The lock (an EVAL on every miss, its release after the answer) keeps misses of one key in
several processes, or several workers, to one model call. A worker greets the others on
the done channel every second; one that has listened for 3.5 s, heard its own greetings
and nobody else's is alone and skips the lock (predcache_lock_alone 1; each such miss
counts predcache_lock_skipped_total). Another's greeting ends that at once. The harness
conf sets lock = always; these tests set auto, the shipped default.

Every 200 answer is judged by the integrity oracle against its own request."""

import threading
import time

from conftest import command_calls, wait_for
from oracle import Oracle, post_checked, predict_request, run_load
from test_coalescing import burst_two, check, herd_oracle

pytest_plugins = ["grpc_harness"]

PREDICT = "/v1/models/m:predict"
ALONE_WAIT_S = 8.0  # more than PC_PEERS_QUIET_MS (3.5 s) and a greeting period or two
AUTO = {"cache": {"lock": "auto"}}


def conf(**sections):
    out = {s: dict(v) for s, v in AUTO.items()}
    for section, items in sections.items():
        out.setdefault(section, {}).update(items)
    return out


def alone(p):
    return p.metric("predcache_lock_alone")


def skipped(p):
    return p.metric("predcache_lock_skipped_total")


def evals(redis):
    """EVAL and EVALSHA calls since the last CONFIG RESETSTAT."""
    return command_calls(redis, "eval", "evalsha")


def wait_alone(p, want=1):
    wait_for(lambda: alone(p) == want, timeout=ALONE_WAIT_S,
             what="predcache_lock_alone %d" % want)


def misses(p, oracle, tag, n):
    for i in range(n):
        r = post_checked(p.url(), oracle, PREDICT, {"instances": ["%s-%d" % (tag, i)]})
        assert r.headers["X-Cache"] == "MISS", r.headers


def herd_across(p1, p2, model, tag):
    """50 identical misses at once, alternating between two processes, the model slow:
    one model call."""
    before = model.count(PREDICT)
    model.control(delay_ms=500)
    body = {"instances": [tag]}
    oracle = herd_oracle("herd " + tag)
    rs = check(oracle, body, burst_two(p1, p2, 50, body))
    model.control()
    for r in rs:
        assert not isinstance(r, Exception), r
    oracle.assert_clean()
    assert model.count(PREDICT) - before == 1
    caches = [r.headers["X-Cache"] for r in rs]
    assert caches.count("MISS") == 1, caches


def test_a_process_alone_skips_the_lock(start_predcache, model, redis):
    """Not alone at first; alone once the quiet period passed; then its misses send no
    script to Redis, leave no lock key, and count lock_skipped."""
    p = start_predcache(conf=conf())
    assert alone(p) == 0  # it has not listened for 3.5 s yet
    oracle = Oracle("alone", per_instance=False)
    misses(p, oracle, "early", 3)
    assert skipped(p) == 0
    wait_alone(p)
    redis.command("CONFIG", "RESETSTAT")
    misses(p, oracle, "alone", 20)
    assert skipped(p) == 20
    assert evals(redis) == 0
    assert not [k for k in redis.keys() if str(k).endswith(":lock")]
    # ... and they were stored: the same requests are hits
    for i in range(20):
        r = post_checked(p.url(), oracle, PREDICT, {"instances": ["alone-%d" % i]})
        assert r.headers["X-Cache"] == "HIT"
    assert model.count(PREDICT) == 23
    oracle.assert_clean()


def test_alone_behind_the_tier_the_lookup_is_no_script(start_predcache, model, redis):
    """With the in-process tier on, a miss's lookup is the lock script itself: alone, it is
    a plain read."""
    p = start_predcache(conf=conf(cache={"l1_max_bytes": "64m"}))
    wait_alone(p)
    redis.command("CONFIG", "RESETSTAT")
    oracle = Oracle("alone, tier", per_instance=False)
    misses(p, oracle, "tier", 10)
    assert skipped(p) == 10
    assert evals(redis) == 0
    oracle.assert_clean()


def test_alone_a_batch_and_a_grpc_call_skip_it_too(start_predcache, model, redis, grpc_model,
                                                   grpc_stubs):
    """The per-instance batch and the gRPC port decide by the same rule."""
    from grpc_harness import TFS, call
    from test_grpc_cache import start, xcache
    from test_grpc_model_server import IMAGES, WORDS, predict_request as grpc_request
    p, ch = start(start_predcache, grpc_model, **conf(cache={"per_instance": "on"}))
    wait_alone(p)
    redis.command("CONFIG", "RESETSTAT")
    oracle = Oracle("alone, batch")
    r = post_checked(p.url(), oracle, PREDICT, {"instances": ["b1", "b2", "b3"]})
    assert r.headers["X-Cache"] == "MISS"
    assert skipped(p) == 1
    req = grpc_request(grpc_stubs, inputs={"images": IMAGES, "words": WORDS}, version=1)
    _, rpc = call(ch, TFS + "Predict", req)
    assert xcache(rpc) == "MISS"
    assert skipped(p) == 2
    assert evals(redis) == 0
    oracle.assert_clean()


def test_another_process_ends_it_at_once_and_its_leaving_restores_it(start_predcache, model,
                                                                     redis):
    """A second process greets as it starts: the first hears it and locks again before the
    second serves a request; the two coalesce. Once the second is gone, the first is alone
    again after the quiet period."""
    a = start_predcache(conf=conf())
    wait_alone(a)
    b = start_predcache(conf=conf())
    wait_alone(a, 0)
    assert alone(b) == 0
    skipped_before = skipped(a)
    herd_across(a, b, model, "two-processes")
    assert skipped(a) == skipped_before and skipped(b) == 0
    assert a.metric("predcache_lock_waits_total") + b.metric("predcache_lock_waits_total") >= 1
    b.stop()
    wait_alone(a)
    oracle = Oracle("alone again", per_instance=False)
    misses(a, oracle, "again", 3)
    assert skipped(a) == skipped_before + 3
    oracle.assert_clean()


def test_a_subscriber_that_was_away_listens_anew_before_it_is_alone(start_predcache, model,
                                                                     redis):
    """Redis restarted: while the subscriber is away the worker is not alone (it could not
    hear a newcomer's greeting); once it is back, the quiet period starts again."""
    p = start_predcache(conf=conf())
    wait_alone(p)
    redis.stop()
    wait_for(lambda: alone(p) == 0, timeout=5, what="not alone once the subscriber is away")
    redis.start()
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=10, what="Redis back")
    assert alone(p) == 0  # back, but not for 3.5 s yet
    wait_alone(p)
    oracle = Oracle("alone after a restart", per_instance=False)
    misses(p, oracle, "restart", 2)
    assert skipped(p) == 2
    oracle.assert_clean()


def test_two_workers_are_never_alone(start_predcache, model, redis):
    """Each worker has its own flights: the workers of one process hear each other."""
    p = start_predcache(conf=conf(server={"workers": "2"}))
    time.sleep(ALONE_WAIT_S / 2 + 1)  # past the quiet period
    assert alone(p) == 0
    redis.command("CONFIG", "RESETSTAT")
    oracle = Oracle("two workers", per_instance=False)
    misses(p, oracle, "workers", 10)
    assert skipped(p) == 0
    assert evals(redis) >= 10
    oracle.assert_clean()


def test_lock_always_never_skips(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"lock": "always"}})
    time.sleep(ALONE_WAIT_S / 2 + 1)  # past the quiet period
    redis.command("CONFIG", "RESETSTAT")
    oracle = Oracle("always", per_instance=False)
    misses(p, oracle, "always", 5)
    assert alone(p) == 0 and skipped(p) == 0
    assert evals(redis) >= 5
    oracle.assert_clean()


def test_locks_off_are_not_counted_as_skipped(start_predcache, model, redis):
    """lock_timeout_ms = 0 turns the lock off whatever lock says: nothing is skipped."""
    p = start_predcache(conf=conf(cache={"lock_timeout_ms": "0"}))
    time.sleep(ALONE_WAIT_S / 2 + 1)
    redis.command("CONFIG", "RESETSTAT")
    oracle = Oracle("off", per_instance=False)
    misses(p, oracle, "off", 5)
    assert alone(p) == 0 and skipped(p) == 0
    assert evals(redis) == 0
    oracle.assert_clean()


def test_load_across_a_process_joining_and_leaving(start_predcache, model, redis):
    """Four clients on a pool of 60 bodies (misses, hits, coalesced waits) against the
    first process, and four against the second while it runs; the second starts and stops
    twice, Redis emptied between. Every answer is judged: wrong answers 0."""
    a = start_predcache(conf=conf())
    wait_alone(a)
    model.control(delay_ms=20)
    oracle = Oracle("lock auto: join and leave", per_instance=False)
    results = []

    def pool():
        i = 0
        while True:
            yield predict_request(PREDICT, {"instances": ["pool-%d" % (i * 7 % 60)]})
            i += 1

    def load(p, seconds):
        results.extend(run_load(p.url(), pool(), 4, oracle, duration_s=seconds))

    for _ in range(2):
        t = threading.Thread(target=load, args=(a, 3.0))
        t.start()
        time.sleep(0.5)
        b = start_predcache(conf=conf())
        load(b, 1.5)
        b.stop()
        t.join()
        redis.flushall()
    bad = [r for r in results if r.status != 200]
    assert results and not bad, bad[:3]
    caches = {}
    for r in results:
        caches[r.x_cache] = caches.get(r.x_cache, 0) + 1
    print("lock auto, join and leave: %d answers checked, %s" % (len(results), caches))
    oracle.assert_clean()
