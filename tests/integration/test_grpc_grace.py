"""The gRPC cache's life past a miss, as the data port's: an entry's key in x-cache-key and
its purge on the admin port; a stale entry within grace answered at once (STALE) and
refreshed behind it; the gRPC model server's active health checks (down: UNAVAILABLE at
once, stale entries still served); coalescing across predcache processes through the lock
in Redis; and an integrity run over two processes crossing TTL and grace."""
import random
import threading
import time

import grpc
import pytest
import requests

from conftest import HTTP_TIMEOUT, wait_for
from grpc_harness import TFS, V2, call, stubs
from test_grpc_cache import repeated, right, start, xcache
from test_grpc_model_server import IMAGES, WORDS, predict_request, predictions

pytest_plugins = ["grpc_harness"]

PREDICT = TFS + "Predict"


def md(rpc):
    d = dict(rpc.initial_metadata())
    d.update(dict(rpc.trailing_metadata() or ()))
    return d


def tensor(i):
    """The i-th of many distinct requests."""
    return predict_request(stubs(), inputs={"images": ("DT_FLOAT", [3, 2], [float(i)] + [0.5] * 5),
                                            "words": WORDS}, version=1)


def test_the_answer_names_its_key_and_the_admin_port_purges_it(start_predcache, grpc_model,
                                                                grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model)
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    first, rpc = call(ch, PREDICT, req)
    key = md(rpc)["x-cache-key"]
    assert xcache(rpc) == "MISS" and key.startswith("predcache:v2:{")
    redis.wait_key(key)
    again, rpc = call(ch, PREDICT, req)
    assert xcache(rpc) == "HIT" and md(rpc)["x-cache-key"] == key and again == first
    d = requests.delete(p.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert d.status_code == 200 and d.json() == {"key": key, "deleted": 1}
    assert not redis.exists(key)
    # gone from the in-process tier too: the model server answers again
    third, rpc = call(ch, PREDICT, req)
    assert xcache(rpc) == "MISS" and right(PREDICT, req, third) is None
    assert grpc_model.count("Predict") == 2
    # a call that is not cached has no key
    _, rpc = call(ch, V2 + "ServerLive", b"")
    assert "x-cache-key" not in md(rpc)


def test_a_stale_entry_is_answered_at_once_and_refreshed(start_predcache, grpc_model,
                                                         grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model, cache={"ttl_s": 1, "grace_s": 60})
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    first, rpc = call(ch, PREDICT, req)
    key = md(rpc)["x-cache-key"]
    redis.wait_key(key)
    # the model changes its answers; the entry ages past its TTL (fresh for 1 s)
    grpc_model.control(salt="retrained")
    time.sleep(1.3)
    stale, rpc = call(ch, PREDICT, req)
    assert xcache(rpc) == "STALE"
    assert stale == first  # the stored answer, at once
    # refreshed behind it: one model call, stored with the new answer
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="the refresh stored")
    assert grpc_model.count("Predict") == 2
    fresh, rpc = call(ch, PREDICT, req)
    assert xcache(rpc) == "HIT"
    assert predictions(fresh) != predictions(first)  # the model's new answer
    assert grpc_model.count("Predict") == 2
    # one refresh at a time per key: stale again, many calls, one more model call
    time.sleep(1.3)
    grpc_model.control(salt="retrained", delay_ms=400, methods=["Predict"])
    results = [xcache(call(ch, PREDICT, req)[1]) for _ in range(5)]
    assert results == ["STALE"] * 5
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 2, what="the second refresh")
    assert grpc_model.count("Predict") == 3


def test_past_grace_is_a_miss(start_predcache, grpc_model, grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model, cache={"ttl_s": 1, "grace_s": 1})
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    _, rpc = call(ch, PREDICT, req)
    redis.wait_key(md(rpc)["x-cache-key"])
    time.sleep(2.3)
    resp, rpc = call(ch, PREDICT, req)
    assert xcache(rpc) == "MISS" and right(PREDICT, req, resp) is None
    assert grpc_model.count("Predict") == 2


def test_health_checks_of_the_grpc_model_server(start_predcache, grpc_model, grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model,
                  backend={"grpc_health_path": "/inference.GRPCInferenceService/ServerReady",
                           "health_interval_ms": 100, "health_fails": 2, "health_passes": 2},
                  cache={"ttl_s": 1, "grace_s": 60})
    assert p.metric("predcache_grpc_backend_up") == 1
    kept = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    first, rpc = call(ch, PREDICT, kept)
    redis.wait_key(md(rpc)["x-cache-key"])
    # not ready (ServerReady answers OK with ready: false): down after two checks
    grpc_model.control(ready=False, delay_ms=3000, methods=["Predict", "ServerLive"])
    wait_for(lambda: p.metric("predcache_grpc_backend_up") == 0, what="the gRPC model server down")
    assert "gRPC model server is down" in p.stderr_text()
    before = grpc_model.count("Predict")
    # calls that need it: UNAVAILABLE at once, not after the model server's 3 s delay
    for method, msg in ((PREDICT, tensor(7)), (V2 + "ServerLive", b"")):
        with pytest.raises(grpc.RpcError) as e:
            call(ch, method, msg, timeout=2.0)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, method
        assert "health checks" in e.value.details()
    # a stale entry is still served, with no refresh sent to it
    time.sleep(1.2)
    stale, rpc = call(ch, PREDICT, kept, timeout=2.0)
    assert xcache(rpc) == "STALE" and stale == first
    assert grpc_model.count("Predict") == before
    # ready again: up after two good checks, and calls go through
    grpc_model.control()
    wait_for(lambda: p.metric("predcache_grpc_backend_up") == 1, what="the gRPC model server up")
    resp, rpc = call(ch, PREDICT, tensor(7))
    assert xcache(rpc) == "MISS" and right(PREDICT, tensor(7), resp) is None


def test_health_checks_off_by_default_and_a_bad_path_is_refused(start_predcache, grpc_model,
                                                                  predcache_bin, tmp_path):
    import subprocess
    p, ch = start(start_predcache, grpc_model)
    assert p.metric("predcache_grpc_backend_up") == 1
    assert grpc_model.count() == 0  # no checks made
    conf = tmp_path / "bad.conf"
    conf.write_text("[backend]\ngrpc_url = http://127.0.0.1:1\ngrpc_health_path = ServerReady\n")
    r = subprocess.run([predcache_bin, "--check", "-c", str(conf)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and "grpc_health_path" in r.stderr


def test_two_processes_make_one_model_call(start_predcache, grpc_model, grpc_stubs, redis):
    """The same miss on two predcache processes sharing Redis: one takes the lock in Redis
    and calls the model server; the other waits for its announcement and answers from
    Redis."""
    st = grpc_stubs
    conf = {"cache": {"lock_timeout_ms": 5000}}
    p1, ch1 = start(start_predcache, grpc_model, **conf)
    p2, ch2 = start(start_predcache, grpc_model, **conf)
    grpc_model.control(delay_ms=800, methods=["Predict"])
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    out = {}

    def one(name, ch):
        resp, rpc = call(ch, PREDICT, req)
        out[name] = (resp, xcache(rpc), md(rpc)["x-cache-key"])

    t1 = threading.Thread(target=one, args=("first", ch1))
    t1.start()
    wait_for(lambda: grpc_model.count("Predict") == 1, what="the first model call")
    t2 = threading.Thread(target=one, args=("second", ch2))
    t2.start()
    t1.join(15)
    t2.join(15)
    assert out["first"][1] == "MISS"
    assert out["second"][1] == "COALESCED"
    assert out["first"][0] == out["second"][0]
    assert right(PREDICT, req, out["second"][0]) is None
    assert grpc_model.count("Predict") == 1
    assert p2.metric("predcache_lock_waits_total") == 1
    assert p2.metric("predcache_lock_timeouts_total") == 0  # woken by the announcement
    key = out["first"][2]
    assert out["second"][2] == key
    assert not redis.exists(key + ":lock")  # released once stored


def test_a_lock_held_elsewhere_is_waited_for_then_called(start_predcache, grpc_model,
                                                         grpc_stubs, redis):
    st = grpc_stubs
    p, ch = start(start_predcache, grpc_model, cache={"lock_timeout_ms": 300})
    req = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, version=1)
    _, rpc = call(ch, PREDICT, req)
    key = md(rpc)["x-cache-key"]
    redis.wait_key(key)
    assert requests.delete(p.admin("/cache/" + key), timeout=HTTP_TIMEOUT).json()["deleted"] == 1
    # another process holds the lock and never answers: the wait runs out, then our call
    redis.command("SET", key + ":lock", "elsewhere", "PX", "60000")
    resp, rpc = call(ch, PREDICT, req)
    assert xcache(rpc) == "MISS" and right(PREDICT, req, resp) is None
    assert p.metric("predcache_lock_waits_total") == 1
    assert p.metric("predcache_lock_timeouts_total") == 1
    assert grpc_model.count("Predict") == 2
    # not ours: left alone
    assert redis.command("GET", key + ":lock") in (b"elsewhere", "elsewhere")


def test_integrity_over_two_processes_across_ttl_and_grace(start_predcache, grpc_model,
                                                           grpc_stubs, redis):
    """Thousands of calls over 2,500 distinct tensors on two processes sharing Redis, with a
    TTL of 1 s
    and a grace of 2 s, so entries turn stale, get refreshed, expire and are fetched again
    (and coalesced across the processes) while the run goes on: every answer is checked
    against the request it answers."""
    conf = {"cache": {"ttl_s": 1, "grace_s": 2, "lock_timeout_ms": 2000}}
    chans = [start(start_predcache, grpc_model, **conf)[1] for _ in range(2)]
    reqs = [tensor(i) for i in range(2500)]
    wrong, failed, results = [], [], {}
    lock = threading.Lock()
    deadline = time.monotonic() + 9.0

    def worker(seed):
        rnd = random.Random(seed)
        n = 0
        while time.monotonic() < deadline and n < 2500:
            i = rnd.randrange(len(reqs))
            ch = chans[rnd.randrange(2)]
            try:
                resp, rpc = call(ch, PREDICT, reqs[i])
            except grpc.RpcError as e:
                with lock:
                    failed.append((i, e.code(), e.details()))
                continue
            why = right(PREDICT, reqs[i], resp)
            with lock:
                results[xcache(rpc)] = results.get(xcache(rpc), 0) + 1
                if why is not None:
                    wrong.append((i, xcache(rpc), why))
            n += 1

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    checked = sum(results.values())
    print("gRPC integrity over two processes: %d answers checked %s; wrong answers: %d"
          % (checked, results, len(wrong)))
    assert not wrong, wrong[:5]
    assert not failed, failed[:5]
    assert checked >= 3000 and results.get("MISS", 0) >= 1000
    # the run crossed the boundaries it is about
    for r in ("HIT", "MISS", "STALE"):
        assert results.get(r, 0) > 0, (r, results)


def grpc_only(start_predcache, grpc_model, **conf):
    """predcache whose REST model server is nowhere: the gRPC port must resolve versions
    over gRPC itself."""
    from conftest import free_port
    conf.setdefault("backend", {})["url"] = "http://127.0.0.1:%d" % free_port()
    return start(start_predcache, grpc_model, **conf)


def test_unversioned_calls_resolve_the_version_over_grpc(start_predcache, grpc_model,
                                                         grpc_stubs):
    """No REST port: a Predict without a version asks GetModelStatus (the newest AVAILABLE
    version), a label asks for the label's, a ModelInfer without one asks ModelMetadata; a
    new version served starts a new key space once the lookup is refreshed."""
    st = grpc_stubs
    grpc_model.control(labels={"stable": 1})
    p, ch = grpc_only(start_predcache, grpc_model, cache={"version_refresh_s": 1})
    bare = predict_request(st, inputs={"images": IMAGES, "words": WORDS})
    r1, rpc = call(ch, PREDICT, bare)
    assert xcache(rpc) == "MISS" and right(PREDICT, bare, r1) is None
    assert grpc_model.count("GetModelStatus") == 1
    r2, rpc = call(ch, PREDICT, bare)
    assert repeated(rpc) and r2 == r1
    # a label: its own lookup (GetModelStatus with the label), its own entry
    labelled = predict_request(st, inputs={"images": IMAGES, "words": WORDS}, label="stable")
    r3, rpc = call(ch, PREDICT, labelled)
    assert xcache(rpc) == "MISS" and predictions(r3) == predictions(r1)  # version 1's
    _, rpc = call(ch, PREDICT, labelled)
    assert repeated(rpc)
    assert grpc_model.count("GetModelStatus") == 2
    assert grpc_model.count("Predict") == 2
    # KServe v2: ModelMetadata's versions
    inf = V2 + "ModelInfer"
    from test_grpc_model_server import infer_request
    a = infer_request(st, rid="a")
    ra, rpc = call(ch, inf, a)
    assert xcache(rpc) == "MISS"
    rb, rpc = call(ch, inf, infer_request(st, rid="b"))
    assert repeated(rpc) and rb.id == "b"
    assert grpc_model.count("ModelInfer") == 1
    assert grpc_model.count("ModelMetadata") == 1
    # version 2 is served now: once the lookup is refreshed, a new key space
    grpc_model.control(version=2)
    time.sleep(1.2)
    call(ch, PREDICT, bare)  # served from the old version while the lookup refreshes

    def moved():
        resp, rpc = call(ch, PREDICT, bare)
        return xcache(rpc) == "MISS" and resp

    resp = wait_for(moved, what="the bare call keyed by version 2")
    assert resp.model_spec.version.value == 2
    assert predictions(resp) != predictions(r1)  # version 2's answer, not version 1's entry
    assert "is served by version 2" in p.stderr_text()


def test_a_version_that_cannot_be_told_passes_uncached(start_predcache, grpc_model, grpc_stubs):
    st = grpc_stubs
    grpc_model.control(status="UNAVAILABLE", methods=["GetModelStatus"])
    p, ch = grpc_only(start_predcache, grpc_model, cache={"version_refresh_s": 30})
    bare = predict_request(st, inputs={"images": IMAGES, "words": WORDS})
    for _ in range(2):
        resp, rpc = call(ch, PREDICT, bare)
        assert xcache(rpc) == "PASS" and right(PREDICT, bare, resp) is None
    assert grpc_model.count("Predict") == 2
    assert grpc_model.count("GetModelStatus") == 1  # the failure is remembered
    assert "cannot tell the version of model m (status endpoint gRPC GetModelStatus: " \
        "grpc-status UNAVAILABLE)" in p.stderr_text()


def test_version_refresh_off_keys_calls_as_sent(start_predcache, grpc_model, grpc_stubs):
    """[cache] version_refresh_s = 0: as on the data port, no lookup; a call is keyed by its
    message as sent (a label or no version keeps its entries across versions)."""
    st = grpc_stubs
    p, ch = grpc_only(start_predcache, grpc_model, cache={"version_refresh_s": 0})
    bare = predict_request(st, inputs={"images": IMAGES, "words": WORDS})
    _, rpc = call(ch, PREDICT, bare)
    assert xcache(rpc) == "MISS"
    _, rpc = call(ch, PREDICT, bare)
    assert repeated(rpc)
    assert grpc_model.count("Predict") == 1
    assert grpc_model.count("GetModelStatus") == 0
