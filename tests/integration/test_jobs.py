"""Async jobs: 202 + job id, results by id, durable in a Redis Stream shared by processes.

Every test runs real predcache processes against one redis-server and the test model
server; several tests start two predcache processes on the same Redis, as a deployment
would. The queue's state is checked in Redis itself (stream length, pending entries, the
job record) as well as through the HTTP answers and /metrics.
"""

import json
import signal
import threading
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT, canonical, wait_for, without_received
from jobs import (PREFER, ROUTE, STREAM, job_id_of, poll, record, submit, submit_running,
                  wait_done, wait_state)


# --------------------------------------------------------------------------- helpers


def stream_len(redis, stream=STREAM):
    return redis.command("XLEN", stream)


def pending_count(redis, stream=STREAM):
    return redis.command("XPENDING", stream, "predcache")[0]


def jobs_metric(p, name):
    return p.metric("predcache_jobs_%s_total" % name)


@pytest.fixture(params=["off", "on"], ids=["per_body", "per_instance"])
def jp(request, start_predcache):
    """predcache with [cache] per_instance off (the harness default) and on: a job takes the
    synchronous cache path, so both ways of keying an "instances" batch must hold for it."""
    return start_predcache(conf={"cache": {"per_instance": request.param}})


def per_instance(p):
    return p.conf["cache"]["per_instance"] == "on"


# --------------------------------------------------------------------------- submit and poll


def test_prefer_respond_async_submit_then_poll(jp, model, redis):
    proxy = jp
    r = submit(proxy, {"instances": [[1, 2]]})
    job_id = job_id_of(r)
    assert r.json()["status"] == "queued"
    assert r.headers["Location"] == "/jobs/" + job_id
    assert r.headers["Preference-Applied"] == "respond-async"
    assert r.headers["Content-Type"] == "application/json"

    done = wait_done(proxy, job_id)
    assert done.status_code == 200, done.text
    assert done.headers["X-Job-Status"] == "done"
    assert done.headers["Content-Type"].startswith("application/json")
    assert done.headers["X-Cache"] == "MISS"
    if per_instance(proxy):
        assert done.headers["X-Cache-Hits"] == "0/1"
    assert done.json()["model"] == "m" and len(done.json()["predictions"]) == 1
    assert model.count() == 1

    # The model server saw the original request, marked as a job's, without Prefer.
    last = model.last()
    assert last["method"] == "POST" and last["path"] == ROUTE
    assert last["headers"]["x-predcache-job"] == job_id
    assert "prefer" not in last["headers"]
    assert json.loads(last["body"]) == {"instances": [[1, 2]]}

    # Finished: acknowledged and removed from the stream, the record kept for result_ttl_s.
    wait_for(lambda: stream_len(redis) == 0 and pending_count(redis) == 0,
             what="the stream to be empty")
    rec = record(redis, job_id)
    assert rec["state"] == b"done" and rec["attempts"] == b"1"
    assert 3000 <= redis.ttl("predcache:job:{default}:" + job_id) <= 3600

    # Polling again answers the same result.
    again = poll(proxy, job_id)
    assert again.status_code == 200 and again.content == done.content

    m = proxy.metrics()
    assert m[("predcache_jobs_submitted_total", frozenset())] == 1
    assert m[("predcache_jobs_done_total", frozenset())] == 1
    assert m[("predcache_jobs_polled_total", frozenset())] >= 2
    assert m[("predcache_jobs_running", frozenset())] == 0
    access = proxy.access_lines()
    assert any("status=202 cache=JOB" in l for l in access), access[-5:]


def test_job_ids_are_unique(proxy):
    ids = {job_id_of(submit(proxy, {"instances": [i]})) for i in range(20)}
    assert len(ids) == 20
    for job_id in ids:
        assert wait_done(proxy, job_id).status_code == 200


def test_pending_job_answers_202_with_status(proxy, model):
    model.control(delay_ms=1500)
    job_id = job_id_of(submit(proxy, {"instances": ["slow"]}))
    wait_state(proxy, job_id, "running")
    r = poll(proxy, job_id)
    assert r.status_code == 202
    assert r.json() == {"job_id": job_id, "status": "running"}
    assert r.headers["X-Job-Status"] == "running"
    assert r.headers["Location"] == "/jobs/" + job_id
    assert r.headers.get("Retry-After") == "1"
    assert wait_done(proxy, job_id).status_code == 200


def test_async_alias(proxy, model):
    r = proxy.post("/async" + ROUTE + "?v=1", json_body={"instances": [5]})
    assert r.status_code == 202, r.text
    job_id = job_id_of(r)
    assert r.headers["Location"] == "/jobs/" + job_id
    assert "Preference-Applied" not in r.headers  # no Prefer was sent
    done = wait_done(proxy, job_id)
    assert done.status_code == 200
    assert model.last()["path"] == ROUTE and model.last()["query"] == "v=1"

    # Only cacheable routes can be jobs.
    for method, path in (("GET", "/async/v1/models/m"), ("POST", "/async/nothing/here")):
        r = requests.request(method, proxy.url(path), timeout=HTTP_TIMEOUT)
        assert r.status_code == 404, r.text
        assert "is not a cacheable route" in r.json()["error"]
    assert model.count() == 1


def test_async_alias_prefix_is_configurable(start_predcache, model):
    p = start_predcache(conf={"jobs": {"async_prefix": "/api/bg"}})
    r = p.post("/api/bg" + ROUTE, json_body={"instances": [5]})
    assert r.status_code == 202
    assert wait_done(p, job_id_of(r)).status_code == 200
    # The default prefix is now an ordinary path: forwarded, and the model has no such route.
    r = p.post("/async" + ROUTE, json_body={"instances": [5]})
    assert r.status_code == 404 and "X-Job-Status" not in r.headers


def wait_cached(redis, r):
    """Waits for the answer r to be stored: its key, or (per-instance batches, which have
    no single key) any entry."""
    if "X-Cache-Key" in r.headers:
        redis.wait_key(r.headers["X-Cache-Key"])
    else:
        wait_for(lambda: redis.keys("predcache:v2:*"), what="a cache entry")


# Columnar "inputs" are cached per body; row "instances" per instance (when per_instance).
BODIES = [{"inputs": [[0.5, 1.5]], "request_id": "a"}, {"instances": [[0.5, 1.5]], "id": "a"}]


@pytest.mark.parametrize("body", BODIES, ids=["inputs", "instances"])
def test_result_equals_the_synchronous_answer(jp, model, redis, body):
    proxy = jp
    done = wait_done(proxy, job_id_of(submit(proxy, body)))
    assert done.status_code == 200 and done.headers["X-Cache"] == "MISS"
    wait_cached(redis, done)

    sync = proxy.post(ROUTE, json_body=body)
    assert sync.status_code == 200 and sync.headers["X-Cache"] == "HIT"
    assert sync.content == done.content, "byte for byte"
    assert sync.headers["Content-Type"] == done.headers["Content-Type"]
    assert sync.headers.get("X-Cache-Key") == done.headers.get("X-Cache-Key")
    assert sync.headers.get("X-Cache-Hits") == ("1/1" if per_instance(proxy) and
                                                "instances" in body else None)
    assert model.count() == 1


@pytest.mark.parametrize("body", BODIES, ids=["inputs", "instances"])
def test_job_after_a_synchronous_request_is_a_cache_hit(jp, model, redis, body):
    proxy = jp
    sync = proxy.post(ROUTE, json_body=body)
    assert sync.status_code == 200 and sync.headers["X-Cache"] == "MISS"
    wait_cached(redis, sync)

    # A cache hit is still answered 202 with a job (documented); the job completes from
    # the cache without an inference.
    job_id = job_id_of(submit(proxy, body))
    done = wait_done(proxy, job_id)
    assert done.status_code == 200 and done.headers["X-Cache"] == "HIT"
    assert done.content == sync.content
    assert done.headers.get("X-Cache-Key") == sync.headers.get("X-Cache-Key")
    # The proxy's cache headers for the job's run are kept with the result.
    rec = record(redis, job_id)
    assert rec["cache"] == b"HIT"
    assert rec["hits"].decode() == done.headers.get("X-Cache-Hits", "")
    assert model.count() == 1


def test_same_input_twice_one_inference(jp, model):
    proxy = jp
    a = wait_done(proxy, job_id_of(submit(proxy, {"instances": [9], "id": "first"})))
    b = wait_done(proxy, job_id_of(submit(proxy, {"id": "second", "instances": [9]})))
    assert a.status_code == b.status_code == 200
    assert a.headers["X-Cache"] == "MISS" and b.headers["X-Cache"] == "HIT"
    assert a.content == b.content
    if per_instance(proxy):
        assert (a.headers["X-Cache-Hits"], b.headers["X-Cache-Hits"]) == ("0/1", "1/1")
    assert model.count() == 1


def test_partially_cached_batch_job_answers_the_merged_body(jp, model, redis):
    """A job over a batch whose instances are partly cached: per instance, only the missing
    instances are inferred (one model call, listing just them) and the job's result is the
    merged answer, byte for byte the synchronous one and the model's own for the batch; per
    body, the batch is a different body, so all of it is inferred."""
    proxy = jp
    model.control(stable=True)  # answers without the call counter: byte-comparable
    seed = proxy.post(ROUTE, json_body={"instances": ["b", "d"]})
    assert seed.status_code == 200 and seed.headers["X-Cache"] == "MISS"
    if per_instance(proxy):
        wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 2, what="2 stores")
    else:
        wait_cached(redis, seed)
    batch = {"instances": ["a", "b", "c", "d", "e"]}
    calls = model.count(ROUTE)

    job_id = job_id_of(submit(proxy, batch))
    done = wait_done(proxy, job_id)
    assert done.status_code == 200 and done.headers["X-Job-Status"] == "done", done.text
    assert model.count(ROUTE) == calls + 1, "one inference for the job"
    sent = json.loads(model.last()["body"])["instances"]
    assert model.last()["headers"]["x-predcache-job"] == job_id
    if per_instance(proxy):
        assert (done.headers["X-Cache"], done.headers["X-Cache-Hits"]) == ("PARTIAL", "2/5")
        assert sent == ["a", "c", "e"], "only the missing instances, in order"
        rec = record(redis, job_id)
        assert (rec["cache"], rec["hits"]) == (b"PARTIAL", b"2/5")
        wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 5, what="5 stores")
    else:
        assert done.headers["X-Cache"] == "MISS"
        assert sent == batch["instances"]
        wait_cached(redis, done)

    sync = proxy.post(ROUTE, json_body=batch)
    assert sync.status_code == 200 and sync.headers["X-Cache"] == "HIT"
    assert model.count(ROUTE) == calls + 1, "the synchronous request is answered from the cache"
    assert sync.content == done.content, "byte for byte"
    assert sync.headers["Content-Type"] == done.headers["Content-Type"]
    direct = requests.post(model.url(ROUTE), json=batch, timeout=HTTP_TIMEOUT)
    # but for the test model's "received" digest, which names the call whose layout it has
    assert without_received(done.content) == without_received(direct.content), \
        "the model's own answer for the whole batch"


def test_identical_jobs_at_once_one_inference(proxy, model):
    """Identical jobs held together by one process run one after the other: one inference."""
    model.control(delay_ms=500)
    ids = [job_id_of(submit(proxy, {"instances": ["same"]})) for _ in range(4)]
    answers = [wait_done(proxy, i) for i in ids]
    assert all(a.status_code == 200 for a in answers)
    assert len({a.content for a in answers}) == 1
    assert sorted(a.headers["X-Cache"] for a in answers) == ["HIT", "HIT", "HIT", "MISS"]
    assert model.count() == 1


def test_failed_job_passes_the_model_error(proxy, model, redis):
    model.control(status=500, body='{"error": "model exploded"}', content_type="application/json")
    job_id = job_id_of(submit(proxy, {"instances": ["boom"]}))
    r = wait_done(proxy, job_id)
    assert r.status_code == 500
    assert r.content == b'{"error": "model exploded"}'
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Job-Status"] == "failed"
    assert record(redis, job_id)["state"] == b"failed"
    assert redis.keys("predcache:v2:*") == [], "errors are never cached"
    assert jobs_metric(proxy, "failed") == 1
    wait_for(lambda: stream_len(redis) == 0, what="the failed job to leave the stream")


def test_model_server_down_fails_the_job_with_502(start_predcache, redis):
    p = start_predcache(backend_url="http://127.0.0.1:9")
    r = wait_done(p, job_id_of(submit(p, {"instances": [1]})))
    assert r.status_code == 502 and r.headers["X-Job-Status"] == "failed"
    assert "model server" in r.json()["error"]


def test_large_job_and_head_poll(proxy, model, redis):
    instances = [[i % 97 for i in range(1000)] for _ in range(300)]  # about 1.2 MB of JSON
    body = json.dumps({"instances": instances})
    r = proxy.post(ROUTE, body=body, headers=PREFER)
    assert r.status_code == 202, r.text
    job_id = job_id_of(r)
    done = wait_done(proxy, job_id)
    assert done.status_code == 200 and len(done.json()["predictions"]) == 300
    assert model.last()["body"] == body
    head = requests.head(proxy.url("/jobs/" + job_id), timeout=HTTP_TIMEOUT)
    assert head.status_code == 200 and head.headers["X-Job-Status"] == "done"
    assert head.content == b""


def test_bad_input_is_refused_at_submit(proxy, model, redis):
    r = proxy.post(ROUTE, body="{not json", headers=PREFER)
    assert r.status_code == 400 and "error" in r.json()
    assert redis.exists(STREAM) == 0
    assert model.count() == 0


# --------------------------------------------------------------------------- unknown, expired


def test_unknown_job_id_404(proxy):
    for job_id in ("0" * 32, "f" * 32, "nope", "0" * 31, "A" * 32, ""):
        r = poll(proxy, job_id)
        assert r.status_code == 404, (job_id, r.status_code, r.text)
        assert "no such job" in r.json()["error"]
    r = requests.post(proxy.url("/jobs/" + "0" * 32), timeout=HTTP_TIMEOUT)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


def test_expired_job_id_404(start_predcache, redis):
    p = start_predcache(conf={"jobs": {"result_ttl_s": "1"}})
    job_id = job_id_of(submit(p, {"instances": ["short-lived"]}))
    assert wait_done(p, job_id).status_code == 200
    wait_for(lambda: poll(p, job_id).status_code == 404, timeout=5, interval=0.2,
             what="the result to expire")
    assert poll(p, job_id).json()["error"].startswith("no such job")
    assert redis.exists("predcache:job:{default}:" + job_id) == 0


# --------------------------------------------------------------------------- queue limit


def test_queue_limit_answers_429_and_drops_nothing(start_predcache, model, redis):
    p = start_predcache(conf={"jobs": {"max_queue": "2", "concurrency": "1"}})
    model.control(delay_ms=1000)
    first = job_id_of(submit(p, {"instances": [1]}))
    wait_state(p, first, "running")
    second = job_id_of(submit(p, {"instances": [2]}))
    r = submit(p, {"instances": [3]}, expect=429)
    assert "job queue full" in r.json()["error"]
    assert r.headers.get("Retry-After") == "1"
    assert jobs_metric(p, "rejected") == 1
    assert stream_len(redis) == 2

    assert wait_done(p, first).status_code == 200
    assert wait_done(p, second).status_code == 200
    # Room again once the queue has drained.
    model.control()
    third = job_id_of(submit(p, {"instances": [3]}))
    assert wait_done(p, third).status_code == 200
    assert model.count() == 3


# --------------------------------------------------------------------------- durability


def test_killed_consumer_job_is_taken_over(start_predcache, model, redis):
    conf = {"jobs": {"claim_after_ms": "1000", "concurrency": "1"}}
    p1 = start_predcache(conf=conf)
    model.control(delay_ms=1500)
    job_id = job_id_of(submit(p1, {"instances": ["durable"]}))
    wait_for(lambda: model.count() == 1, what="the job to reach the model server")
    p1.proc.send_signal(signal.SIGKILL)  # mid-inference, nothing handed back
    p1.proc.wait(timeout=10)
    assert record(redis, job_id)["state"] == b"running"
    assert pending_count(redis) == 1

    model.control()
    p2 = start_predcache(conf=conf)
    done = wait_done(p2, job_id)
    assert done.status_code == 200 and done.headers["X-Job-Status"] == "done"
    rec = record(redis, job_id)
    assert rec["attempts"] == b"2"
    assert model.count() == 2
    assert jobs_metric(p2, "reclaimed") == 1
    wait_for(lambda: stream_len(redis) == 0 and pending_count(redis) == 0,
             what="nothing left in the stream")


def test_two_processes_share_the_work(start_predcache, model, redis):
    conf = {"jobs": {"concurrency": "1"}}
    p1 = start_predcache(conf=conf)
    p2 = start_predcache(conf=conf)
    model.control(delay_ms=400)
    ids = [job_id_of(submit(p1 if i % 2 else p2, {"instances": [i]})) for i in range(6)]
    for job_id in ids:
        assert wait_done(p1, job_id).status_code == 200
    consumers = {record(redis, i)["consumer"] for i in ids}
    assert len(consumers) == 2, consumers
    done1, done2 = jobs_metric(p1, "done"), jobs_metric(p2, "done")
    assert done1 >= 1 and done2 >= 1 and done1 + done2 == 6
    assert model.count() == 6


def test_submit_only_process_and_a_poisoned_job(start_predcache, model, redis):
    """concurrency 0 takes submits but runs nothing; a job whose runners died five times
    is failed with 500 instead of being retried forever."""
    front = start_predcache(conf={"jobs": {"concurrency": "0"}})
    poisoned = job_id_of(submit(front, {"instances": ["poison"]}))
    healthy = job_id_of(submit(front, {"instances": ["fine"]}))
    time.sleep(0.5)
    assert poll(front, poisoned).json()["status"] == "queued"
    redis.command("HSET", "predcache:job:{default}:" + poisoned, "attempts", "5")

    start_predcache()
    r = wait_done(front, poisoned)
    assert r.status_code == 500 and r.headers["X-Job-Status"] == "failed"
    assert "abandoned" in r.json()["error"]
    assert wait_done(front, healthy).status_code == 200
    assert model.count() == 1


def test_sigterm_finishes_the_running_job(start_predcache, model, redis):
    p = start_predcache()
    model.control(delay_ms=1000)
    # Running at the model server: a SIGTERM between the record's "running" and the job's
    # own request reaching the data port hands the job back instead (a slow build, ASan,
    # hit that window), which is right too, but not what this test is about.
    job_id = submit_running(p, model, {"instances": ["drain"]})
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(timeout=10) == 0
    rec = record(redis, job_id)
    assert rec["state"] == b"done", rec
    assert stream_len(redis) == 0


def test_drain_deadline_hands_the_job_back(start_predcache, model, redis):
    """Cut off by drain_timeout_ms, a job goes back to the queue (not failed, its attempt
    not counted) and another process takes it at once, not after claim_after_ms."""
    p1 = start_predcache(conf={"server": {"drain_timeout_ms": "300"}})
    model.control(delay_ms=2000)
    job_id = job_id_of(submit(p1, {"instances": ["handed back"]}))
    wait_state(p1, job_id, "running")
    p1.proc.send_signal(signal.SIGTERM)
    assert p1.proc.wait(timeout=10) == 0
    rec = record(redis, job_id)
    assert rec["state"] == b"queued" and rec["attempts"] == b"0", rec
    assert b"handed back" in open(p1.stderr_path, "rb").read()

    model.control()
    started = time.monotonic()
    p2 = start_predcache()  # default claim_after_ms: 30 s
    r = wait_done(p2, job_id, timeout=10)
    assert r.status_code == 200
    assert time.monotonic() - started < 10
    assert record(redis, job_id)["attempts"] == b"1"


# --------------------------------------------------------------------------- Redis down


def test_redis_down_submit_503_sync_still_works(proxy, model, redis):
    redis.kill()
    r = submit(proxy, {"instances": [1]}, expect=503)
    assert r.json() == {"error": "job queue unavailable"}
    r = poll(proxy, "0" * 32)
    assert r.status_code == 503
    # Synchronous requests do not depend on Redis.
    r = proxy.post(ROUTE, json_body={"instances": [1]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS"


def test_redis_blip_while_finishing_costs_no_second_inference(proxy, model, redis):
    """Redis unavailable when a job's answer arrives: the result is kept and stored once
    Redis is back, rather than the job running again after claim_after_ms."""
    model.control(delay_ms=1000)
    job_id = job_id_of(submit(proxy, {"instances": ["blip"]}))
    wait_state(proxy, job_id, "running")
    redis.pause()
    try:
        wait_for(lambda: model.count() == 1, what="the job to reach the model server")
        time.sleep(1.5)  # the model answers while Redis is still paused
    finally:
        redis.resume()
    r = wait_done(proxy, job_id, timeout=15)
    assert r.status_code == 200 and r.headers["X-Job-Status"] == "done"
    assert model.count() == 1
    assert jobs_metric(proxy, "reclaimed") == 0


def test_queue_survives_a_redis_restart_gap(proxy, model, redis):
    """Redis gone and back (empty): the consumer finds the new stream and goes on."""
    assert wait_done(proxy, job_id_of(submit(proxy, {"instances": [1]}))).status_code == 200
    redis.kill()
    redis.start()  # same port, empty

    def accepted():
        r = submit(proxy, {"instances": [2]}, expect=None)
        return [r] if r.status_code == 202 else None

    r = wait_for(accepted, timeout=10, interval=0.2, what="submits to work again")[0]
    assert wait_done(proxy, job_id_of(r)).status_code == 200


# --------------------------------------------------------------------------- compat, off


def test_compat_aliases(start_predcache, model):
    p = start_predcache(conf={"jobs": {"compat": "on"}})
    model.control(delay_ms=600)
    r = p.post("/predict", json_body={"image_data": "aGVsbG8="})
    assert r.status_code == 202, r.text
    job_id = job_id_of(r)
    pending = poll(p, job_id, path="/job/")
    assert pending.status_code == 200
    assert pending.json()[job_id]["prediction"] is None

    def done():
        doc = poll(p, job_id, path="/job/").json()
        return doc if doc[job_id]["prediction"] is not None else None

    doc = wait_for(done, timeout=10, what="the compat answer")
    assert list(doc) == [job_id]
    pred = doc[job_id]["prediction"]
    assert pred["model"] == "default" and len(pred["predictions"]) == 1
    # The same job through the standard path.
    std = poll(p, job_id)
    assert std.status_code == 200 and std.json() == pred
    assert model.last()["path"] == "/predict"
    assert poll(p, "0" * 32, path="/job/").status_code == 404


def test_compat_alias_of_a_failed_job_answers_the_model_error(start_predcache, model, redis):
    p = start_predcache(conf={"jobs": {"compat": "on"}})
    error = b'{"error": "model exploded"}'
    model.control(status=500, body=error.decode(), content_type="application/json")
    r = p.post("/predict", json_body={"image_data": "aGVsbG8="})
    assert r.status_code == 202, r.text
    job_id = job_id_of(r)

    def finished():
        r = poll(p, job_id, path="/job/")
        if r.status_code == 200 and r.json()[job_id]["prediction"] is None:
            return None  # still pending, in the seed's shape
        return [r]

    r = wait_for(finished, timeout=20, what="the failed job through /job/")[0]
    assert r.status_code == 500, r.text
    assert r.content == error, "the model's own body, not wrapped in the seed's shape"
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Job-Status"] == "failed"
    # The same answer as the standard path gives.
    std = poll(p, job_id)
    assert std.status_code == 500 and std.content == error
    assert record(redis, job_id)["state"] == b"failed"
    assert model.count() == 1 and model.last()["path"] == "/predict"
    assert redis.keys("predcache:v2:*") == [], "errors are never cached"


def test_compat_off_by_default(proxy, model):
    r = proxy.post("/predict", json_body={"instances": [1]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    r = poll(proxy, "0" * 32, path="/job/")
    assert r.status_code == 200 and r.json()["path"] == "/job/" + "0" * 32  # forwarded


def test_jobs_disabled_prefer_is_ignored(start_predcache, model, redis):
    p = start_predcache(conf={"jobs": {"enabled": "off"}})
    r = submit(p, {"instances": [1]}, expect=200)
    assert r.headers["X-Cache"] == "MISS" and "Preference-Applied" not in r.headers
    assert r.json()["call"] == 1
    r = poll(p, "0" * 32)
    assert r.status_code == 200 and r.json()["path"] == "/jobs/" + "0" * 32  # forwarded
    r = p.post("/async" + ROUTE, json_body={"instances": [1]})
    assert r.status_code == 404  # forwarded; the model server has no such route
    assert redis.exists(STREAM) == 0


def test_prefer_on_a_route_that_is_not_cached_is_ignored(proxy, model):
    r = requests.get(proxy.url("/v1/models/m"), headers=PREFER, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and "model_version_status" in r.json()
    assert "Preference-Applied" not in r.headers


def test_prefer_among_other_preferences(proxy, model):
    r = submit(proxy, {"instances": [1]}, headers={"Prefer": "return=minimal, Respond-Async; x=1"})
    assert r.status_code == 202
    r = proxy.post(ROUTE, json_body={"instances": [2]}, headers={"Prefer": "respond-asyncx"})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"


def test_idle_consumer_creates_no_keys(proxy, redis):
    """A process with jobs on but never used leaves Redis empty (the stream is made by the
    first submit)."""
    time.sleep(1.5)
    assert redis.keys("*") == []


def test_concurrent_submits_all_complete(proxy, model):
    ids, errors = [], []

    def worker(n):
        try:
            for k in range(5):
                ids.append(job_id_of(submit(proxy, {"instances": [n, k]})))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(set(ids)) == 20
    for job_id in ids:
        assert wait_done(proxy, job_id).status_code == 200
    assert model.count() == 20
    assert canonical(sorted(ids)) == canonical(sorted(set(ids)))
