"""A purge is not undone by a model call that was in flight when it came.

DELETE /cache/<key> on the admin port purges one entry. A request whose model call was
already under way when its entry was purged computed its answer from before the purge:
that answer still goes to its client, but it must not be stored (in Redis, nor in the
in-process tier), or the purge would be undone and later requests would be HITs of it.
A request that BEGINS after the purge is stored as usual.

Every case: learn the key, purge it, send the same request again with a slow model,
purge again while the model server holds that request, then check that the answer was
returned (200 MISS, the model's answer) and not stored, and that the next request is a
MISS (the model is called again) whose answer is stored."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import HTTP_TIMEOUT, parse_envelope, wait_for
from oracle import Oracle

pytest_plugins = ["grpc_harness"]

PREDICT = "/v1/models/m:predict"
SLOW_MS = 1500          # the model's delay for the request in flight
ABSENT_S = 1.0          # how long the key must stay absent after the answer


def purge(p, key):
    """DELETE /cache/<key> on p's admin port; returns the decoded answer (asserted 200)."""
    r = requests.delete(p.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, (r.status_code, r.text)
    doc = r.json()
    assert doc["key"] == key, doc
    return doc


def assert_stays_absent(redis, key, seconds=ABSENT_S, what=""):
    """The key is not in Redis now, nor at any poll during the next `seconds` (stores are
    asynchronous: a store of the answer just given would land within them)."""
    deadline = time.monotonic() + seconds
    while True:
        assert not redis.exists(key), (
            "the purged entry is back in Redis: an answer computed before the purge was "
            "stored after it%s" % (" (%s)" % what if what else ""))
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def wait_subscribers(redis, n):
    """n subscribers (one per worker of each process) listen on a done channel."""
    def count():
        channels = redis.command("PUBSUB", "CHANNELS", "*done*") or []
        if not channels:
            return 0
        reply = redis.command("PUBSUB", "NUMSUB", *channels)
        return sum(int(v) for v in reply[1::2]) >= n
    wait_for(count, what="%d subscribers on the done channel" % n)


def call_of(r):
    return json.loads(r.content)["call"]


def check(oracle, body, r):
    reason = oracle.check("POST", PREDICT, json.dumps(body), {}, r.status_code, r.content,
                          r.headers.get("X-Cache"), r.headers)
    assert reason is None, reason


def purge_during_the_model_call(p, model, redis, body, purger=None, oracle=None,
                                expect_hits=None):
    """The scenario shared by every test. p answers the requests; purger (default p)
    takes the purges. Returns (key, the in-flight answer, the next request's answer)."""
    purger = purger or p
    oracle = oracle or Oracle("purge in flight", per_instance=False)

    first = p.post(PREDICT, json_body=body)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS", first.headers
    key = first.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert purge(purger, key)["deleted"] == 1
    assert not redis.exists(key)

    model.control(delay_ms=SLOW_MS)
    calls = model.count(PREDICT)
    with ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()
        pending = pool.submit(p.post, PREDICT, json_body=body)
        # The model server counts a request on receipt, before its delay.
        wait_for(lambda: model.count(PREDICT) == calls + 1 or pending.done(),
                 timeout=SLOW_MS / 1000.0, interval=0.02,
                 what="the model server to receive the request")
        assert not pending.done(), "the request was answered before the model held it"
        purge(purger, key)  # the entry is already gone: deleted 0, but a purge all the same
        assert not pending.done(), "the purge came after the model call (%.2f s)" % (
            time.monotonic() - t0)
        inflight = pending.result(timeout=HTTP_TIMEOUT)

    # Its client still gets the answer the model computed for it.
    assert inflight.status_code == 200, (inflight.status_code, inflight.text)
    assert inflight.headers["X-Cache"] == "MISS", inflight.headers
    assert inflight.headers["X-Cache-Key"] == key
    if expect_hits is not None:
        assert inflight.headers["X-Cache-Hits"] == expect_hits, inflight.headers
    check(oracle, body, inflight)
    assert model.count(PREDICT) == calls + 1
    # ... but it is not stored: the purge stands.
    assert_stays_absent(redis, key, what="X-Cache-Key %s" % key)

    # A request that begins after the purge: the model answers it, and it is stored.
    model.control(delay_ms=0)
    after = p.post(PREDICT, json_body=body)
    assert after.status_code == 200, (after.status_code, after.text)
    assert after.headers["X-Cache"] == "MISS", (
        "the answer computed before the purge was kept: %s" % dict(after.headers))
    assert model.count(PREDICT) == calls + 2, "the model was not called again"
    check(oracle, body, after)
    redis.wait_key(key)
    oracle.assert_clean()
    return key, inflight, after


def later_answer_is_the_entry(ps, redis, body, key, inflight, after):
    """What Redis holds is the later request's answer, not the in-flight one, and each
    process in ps answers it as a HIT."""
    assert call_of(after) != call_of(inflight)
    assert parse_envelope(redis.get(key), key)["body"] == after.content
    for p in ps:
        hit = p.post(PREDICT, json_body=body)
        assert hit.headers["X-Cache"] == "HIT" and hit.content == after.content


def test_a_purge_during_the_model_call_is_not_undone(proxy, model, redis):
    body = {"instances": ["purged-in-flight"]}
    key, inflight, after = purge_during_the_model_call(proxy, model, redis, body)
    later_answer_is_the_entry([proxy], redis, body, key, inflight, after)


def test_a_purge_during_a_per_instance_batch_call_is_not_undone(start_predcache, model,
                                                                redis):
    p = start_predcache(conf={"cache": {"per_instance": "on"}})
    body = {"instances": ["x"]}
    oracle = Oracle("purge in flight, per instance", per_instance=True)
    key, inflight, after = purge_during_the_model_call(p, model, redis, body, oracle=oracle,
                                                       expect_hits="0/1")
    assert after.headers["X-Cache-Key"] == key
    hit = p.post(PREDICT, json_body=body)
    assert (hit.headers["X-Cache"], hit.headers["X-Cache-Hits"]) == ("HIT", "1/1")
    assert json.loads(hit.content)["predictions"] == json.loads(after.content)["predictions"]
    check(oracle, body, hit)
    assert model.count(PREDICT) == 3


def test_a_purge_by_another_process_during_the_model_call_is_not_undone(
        start_predcache, model, redis):
    a = start_predcache()
    b = start_predcache()
    wait_subscribers(redis, 2)  # a hears b's announcements on the done channel
    body = {"instances": ["purged-elsewhere"]}
    key, inflight, after = purge_during_the_model_call(a, model, redis, body, purger=b)
    later_answer_is_the_entry([a, b], redis, body, key, inflight, after)


def test_a_purge_during_the_model_call_is_not_undone_in_the_tier(start_predcache, model,
                                                                 redis):
    p = start_predcache(conf={"cache": {"l1_max_bytes": "64m"}})
    body = {"instances": ["purged-in-flight-tier"]}
    oracle = Oracle("purge in flight, tier on", per_instance=False)
    key, inflight, after = purge_during_the_model_call(p, model, redis, body, oracle=oracle)
    # Every request so far was a MISS (the one after the in-flight answer too, asserted
    # in the scenario): the tier kept no answer computed before the purge.
    assert p.metric("predcache_l1_hits_total") == 0, "the tier answered"
    later_answer_is_the_entry([p], redis, body, key, inflight, after)


def grpc_learned_and_purged(start_predcache, grpc_model, grpc_stubs, redis, **conf):
    """A gRPC Predict answered and stored, then purged; the model slowed to SLOW_MS.
    Returns (p, channel, request, key, first answer, call, xcache)."""
    from grpc_harness import TFS, call
    from test_grpc_cache import start, xcache
    from test_grpc_model_server import IMAGES, WORDS, predict_request
    p, ch = start(start_predcache, grpc_model, **conf)
    req = predict_request(grpc_stubs, inputs={"images": IMAGES, "words": WORDS}, version=1)
    first, rpc = call(ch, TFS + "Predict", req)
    assert xcache(rpc) == "MISS"
    md = dict(rpc.initial_metadata())
    md.update(dict(rpc.trailing_metadata() or ()))
    key = md.get("x-cache-key")
    assert key, "no x-cache-key"
    redis.wait_key(key)
    assert purge(p, key)["deleted"] == 1
    grpc_model.control(delay_ms=SLOW_MS)
    return p, ch, req, key, first, (lambda r, **kw: call(ch, TFS + "Predict", r, **kw)), xcache


def test_a_purge_during_a_grpc_model_call_is_not_undone(start_predcache, grpc_model,
                                                        grpc_stubs, redis):
    """The gRPC port stores its answers on its own path (grpc_cache.c): the same rule."""
    p, ch, req, key, first, predict, xcache = grpc_learned_and_purged(
        start_predcache, grpc_model, grpc_stubs, redis)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(predict, req, timeout=20)
        wait_for(lambda: grpc_model.count("Predict") == 2, what="the call at the model server")
        purge(p, key)
        assert not pending.done()
        inflight, rpc = pending.result()
    assert xcache(rpc) == "MISS" and inflight == first
    assert_stays_absent(redis, key, what="gRPC %s" % key)
    grpc_model.control(delay_ms=0)
    after, rpc = predict(req)
    assert xcache(rpc) == "MISS" and grpc_model.count("Predict") == 3
    redis.wait_key(key)
    again, rpc = predict(req)
    assert xcache(rpc) in ("HIT", "COALESCED") and grpc_model.count("Predict") == 3


def after_the_purge_goes_alone(p, model, redis, body, oracle):
    """A's model call is under way when its entry is purged; B, the same request sent after
    the purge on the same worker, must not be answered with A's answer (COALESCED): it
    makes its own call (after A's lock is released), and its answer is the one stored."""
    first = p.post(PREDICT, json_body=body)
    key = first.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert purge(p, key)["deleted"] == 1
    calls = model.count(PREDICT)
    model.control(delay_ms=SLOW_MS)
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(p.post, PREDICT, json_body=body)
        wait_for(lambda: model.count(PREDICT) == calls + 1, what="A at the model server")
        purge(p, key)
        b = pool.submit(p.post, PREDICT, json_body=body)
        ra, rb = a.result(), b.result()
    for r in (ra, rb):
        assert r.status_code == 200, (r.status_code, r.text)
        check(oracle, body, r)
    assert ra.headers["X-Cache"] == "MISS", ra.headers
    assert rb.headers["X-Cache"] == "MISS", (
        "a request after the purge took the answer of a call from before it: %s"
        % dict(rb.headers))
    assert model.count(PREDICT) == calls + 2
    assert call_of(rb) != call_of(ra)
    redis.wait_key(key)
    oracle.assert_clean()
    return key, ra, rb


def test_a_request_after_the_purge_does_not_join_a_call_from_before(start_predcache, model,
                                                                    redis):
    p = start_predcache(conf={"server": {"workers": "1"}})
    body = {"instances": ["joined-after-purge"]}
    key, ra, rb = after_the_purge_goes_alone(p, model, redis, body,
                                             Oracle("join after purge", per_instance=False))
    assert parse_envelope(redis.get(key), key)["body"] == rb.content


def test_a_batch_after_the_purge_does_not_join_a_call_from_before(start_predcache, model,
                                                                  redis):
    p = start_predcache(conf={"server": {"workers": "1"}, "cache": {"per_instance": "on"}})
    body = {"instances": ["batch-joined-after-purge"]}
    key, ra, rb = after_the_purge_goes_alone(p, model, redis, body,
                                             Oracle("batch join after purge", per_instance=True))
    hit = p.post(PREDICT, json_body=body)
    assert hit.headers["X-Cache"] == "HIT"
    assert json.loads(hit.content)["predictions"] == json.loads(rb.content)["predictions"]


def test_a_grpc_call_after_the_purge_does_not_join_a_call_from_before(start_predcache,
                                                                      grpc_model, grpc_stubs,
                                                                      redis):
    p, ch, req, key, first, predict, xcache = grpc_learned_and_purged(
        start_predcache, grpc_model, grpc_stubs, redis, server={"workers": "1"})
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(predict, req, timeout=20)
        wait_for(lambda: grpc_model.count("Predict") == 2, what="A at the model server")
        purge(p, key)
        b = pool.submit(predict, req, timeout=20)
        (_, rpc_a), (_, rpc_b) = a.result(), b.result()
    assert xcache(rpc_a) == "MISS"
    assert xcache(rpc_b) == "MISS", "a call after the purge took the answer of one from before"
    assert grpc_model.count("Predict") == 3
    # On the gRPC port only a flight's leader stores: A's answer is kept out (the purge),
    # and B, which went alone beside A's flight, stores nothing. The next call stores.
    assert_stays_absent(redis, key, what="gRPC %s" % key)
    grpc_model.control(delay_ms=0)
    _, rpc = predict(req)
    assert xcache(rpc) == "MISS" and grpc_model.count("Predict") == 4
    redis.wait_key(key)
