"""Cache behaviour: miss then hit, what is stored in Redis, and how keys are derived."""

import json
import re
import time

import pytest

from conftest import canonical, expected_key, parse_envelope, wait_for

KEY_RE = re.compile(r"^predcache:v2:\{[0-9a-f]{64}\}$")

CACHEABLE_ROUTES = [
    "/predict",
    "/v1/models/m:predict",
    "/v1/models/m/versions/2:predict",
    "/v1/models/m:classify",
    "/v1/models/m:regress",
    "/v2/models/m/infer",
]


def cache_of(r):
    return r.headers.get("X-Cache")


@pytest.mark.parametrize("route", CACHEABLE_ROUTES)
def test_miss_then_hit(proxy, model, redis, route):
    body = {"instances": [[1, 2], [3, 4]]}
    r1 = proxy.post(route, json_body=body)
    assert r1.status_code == 200, r1.text
    assert cache_of(r1) == "MISS"
    key = r1.headers.get("X-Cache-Key", "")
    assert KEY_RE.match(key), "X-Cache-Key %r" % key
    assert r1.json()["call"] == 1
    assert model.count() == 1

    redis.wait_key(key)

    r2 = proxy.post(route, json_body=body)
    assert r2.status_code == 200, r2.text
    assert cache_of(r2) == "HIT"
    assert r2.headers.get("X-Cache-Key") == key
    assert r2.content == r1.content, "a HIT must answer the stored bytes unchanged"
    assert r2.json()["call"] == 1, "the HIT carries the first call's number"
    assert r2.headers.get("Content-Type", "").startswith("application/json")
    age = r2.headers.get("Age")
    assert age is not None and age.isdigit() and int(age) >= 0, "Age header %r" % age
    assert model.count() == 1, "a HIT must not reach the model server"


def test_store_is_async_envelope_and_ttl(proxy, redis):
    before_ms = int(time.time() * 1000)
    r = proxy.post("/v1/models/m:predict", json_body={"instances": [7]})
    assert r.status_code == 200 and cache_of(r) == "MISS"
    key = r.headers["X-Cache-Key"]

    value = redis.wait_key(key)
    env = parse_envelope(value)
    assert env["status"] == 200
    assert env["content_type"].startswith("application/json")
    assert env["body"] == r.content
    after_ms = int(time.time() * 1000)
    # generous window: clocks are the same machine, the store is asynchronous
    assert before_ms - 5000 <= env["stored_at_ms"] <= after_ms + 5000, env["stored_at_ms"]

    ttl = redis.ttl(key)
    # Redis keeps the entry ttl_s + grace_s (default 3600): served stale in the grace time.
    assert 3840 <= ttl <= 3900, "TTL %s, expected close to ttl_s + grace_s = 3900" % ttl
    assert redis.pttl(key) > 0


def test_key_is_sha256_of_canonical_input_fields(proxy, redis):
    instances = [{"b": "x", "a": [1, 2]}, {"c": "y"}]
    body = json.dumps({"request_id": "r-1", "instances": instances})
    r = proxy.post("/v1/models/m:predict", body=body)
    assert r.status_code == 200
    want = expected_key("/v1/models/m:predict", canonical({"instances": instances}))
    assert r.headers.get("X-Cache-Key") == want
    redis.wait_key(want)


def test_plain_json_body_is_keyed_whole_and_canonical(proxy, model, redis):
    # v2 change: v1 keyed a plain JSON body without input fields by its raw bytes; v2 reads
    # it the way the model server does, the whole body (but request_id) in canonical form,
    # so spelling, member order and request_id no longer split the cache, and every other
    # member still does.
    raw = '{"foo": 1, "bar": [true]}'
    r = proxy.post("/predict", body=raw)
    assert r.status_code == 200 and cache_of(r) == "MISS"
    want = expected_key("/predict", canonical({"foo": 1, "bar": [True]}))
    assert r.headers.get("X-Cache-Key") == want
    redis.wait_key(want)
    r2 = proxy.post("/predict", body=raw)
    assert cache_of(r2) == "HIT"
    r3 = proxy.post("/predict", body='{"request_id":"x","bar":[ true ],"foo":1}')
    assert cache_of(r3) == "HIT" and r3.headers.get("X-Cache-Key") == want
    assert r3.content == r.content
    r4 = proxy.post("/predict", body='{"foo": 1, "bar": [true], "extra": 0}')
    assert cache_of(r4) == "MISS" and r4.headers.get("X-Cache-Key") != want
    assert model.count() == 2


def test_namespace_and_prefix_from_conf(start_predcache, redis):
    proxy = start_predcache(conf={"cache": {"namespace": "team-a", "key_prefix": "pc-test:"}})
    instances = [[0, 1]]
    r = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    assert r.status_code == 200
    want = expected_key("/v1/models/m:predict", canonical({"instances": instances}),
                        namespace="team-a", prefix="pc-test:")
    assert r.headers.get("X-Cache-Key") == want
    redis.wait_key(want)
    assert redis.keys("predcache:*") == []


def test_cosmetic_differences_and_noise_fields_share_a_key(proxy, model, redis):
    first = '{"instances":[{"a":1,"b":2}],"request_id":"one","ts":1}'
    second = '{ "ts" : 99,\n  "request_id" : "two",\n  "instances" : [ { "b" : 2, "a" : 1 } ] }'
    r1 = proxy.post("/v1/models/m:predict", body=first)
    assert r1.status_code == 200 and cache_of(r1) == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])

    r2 = proxy.post("/v1/models/m:predict", body=second)
    assert r2.status_code == 200
    assert r2.headers.get("X-Cache-Key") == r1.headers["X-Cache-Key"]
    assert cache_of(r2) == "HIT"
    assert r2.content == r1.content
    assert model.count() == 1


def test_different_model_path_or_input_different_key(proxy, model, redis):
    body = {"instances": [[1, 2, 3]]}
    keys = []
    for path in ("/v1/models/a:predict", "/v1/models/b:predict",
                 "/v1/models/a/versions/2:predict", "/v2/models/a/infer"):
        r = proxy.post(path, json_body=body)
        assert r.status_code == 200 and cache_of(r) == "MISS", (path, cache_of(r))
        keys.append(r.headers["X-Cache-Key"])
    r = proxy.post("/v1/models/a:predict", json_body={"instances": [[1, 2, 4]]})
    assert cache_of(r) == "MISS"
    keys.append(r.headers["X-Cache-Key"])
    assert len(set(keys)) == len(keys), keys
    assert model.count() == 5
    for k in keys:
        redis.wait_key(k)


def test_path_fallback_key(proxy, model, redis):
    r1 = proxy.post("/predict", json_body={"file_path": "a.jpg", "request_id": "first"})
    assert r1.status_code == 200 and cache_of(r1) == "MISS"
    want = expected_key("/predict", "path:a.jpg")
    assert r1.headers.get("X-Cache-Key") == want
    redis.wait_key(want)

    r2 = proxy.post("/predict", json_body={"file_path": "a.jpg", "request_id": "second"})
    assert r2.status_code == 200 and cache_of(r2) == "HIT"
    assert r2.headers.get("X-Cache-Key") == want
    assert r2.content == r1.content
    assert model.count() == 1

    r3 = proxy.post("/predict", json_body={"file_path": "b.jpg", "request_id": "first"})
    assert cache_of(r3) == "MISS"
    assert r3.headers.get("X-Cache-Key") == expected_key("/predict", "path:b.jpg")


def test_no_cache_skips_lookup_but_stores(proxy, model, redis):
    body = {"instances": ["nc"]}
    r1 = proxy.post("/v1/models/m:predict", json_body=body)
    assert cache_of(r1) == "MISS" and r1.json()["call"] == 1
    key = r1.headers["X-Cache-Key"]
    redis.wait_key(key)

    r2 = proxy.post("/v1/models/m:predict", json_body=body, headers={"Cache-Control": "no-cache"})
    assert r2.status_code == 200
    assert cache_of(r2) == "MISS", "no-cache must skip the lookup"
    assert r2.json()["call"] == 2
    assert model.count() == 2

    # the fresh answer replaces the stored one
    wait_for(lambda: json.loads(parse_envelope(redis.get(key))["body"])["call"] == 2,
             what="the no-cache answer (call 2) to be stored")
    r3 = proxy.post("/v1/models/m:predict", json_body=body)
    assert cache_of(r3) == "HIT" and r3.json()["call"] == 2
    assert model.count() == 2


def test_no_store_does_not_store(proxy, model, redis):
    body = {"instances": ["ns"]}
    r1 = proxy.post("/v1/models/m:predict", json_body=body, headers={"Cache-Control": "no-store"})
    assert r1.status_code == 200 and cache_of(r1) == "MISS"
    key = r1.headers["X-Cache-Key"]
    wait_for(lambda: proxy.metric("predcache_store_skipped_total") >= 1, timeout=5,
             what="predcache_store_skipped_total >= 1")
    assert redis.exists(key) == 0

    r2 = proxy.post("/v1/models/m:predict", json_body=body)
    assert cache_of(r2) == "MISS"
    assert model.count() == 2


def test_backend_error_passed_through_and_not_cached(proxy, model, redis):
    error_body = '{"error": "model exploded"}'
    model.control(status=500, body=error_body, content_type="application/json")
    body = {"instances": ["boom"]}
    r1 = proxy.post("/v1/models/m:predict", json_body=body)
    assert r1.status_code == 500
    assert r1.text == error_body
    assert r1.headers.get("Content-Type", "").startswith("application/json")
    time.sleep(0.5)  # give a (wrong) asynchronous store the time to land
    assert redis.keys("predcache:*") == []

    r2 = proxy.post("/v1/models/m:predict", json_body=body)
    assert r2.status_code == 500
    assert cache_of(r2) != "HIT"
    assert model.count() == 2, "an error answer must not be served from the cache"
    time.sleep(0.5)
    assert redis.keys("predcache:*") == []


def test_value_over_max_value_bytes_not_stored(start_predcache, model, redis):
    proxy = start_predcache(conf={"cache": {"max_value_bytes": "100"}})
    body = {"instances": list(range(20))}  # 20 predictions of 16 hex chars: well over 100 bytes
    r1 = proxy.post("/v1/models/m:predict", json_body=body)
    assert r1.status_code == 200 and len(r1.content) > 100
    time.sleep(0.5)
    assert redis.keys("predcache:*") == []
    r2 = proxy.post("/v1/models/m:predict", json_body=body)
    assert r2.status_code == 200 and cache_of(r2) == "MISS"
    assert model.count() == 2


def test_access_log_lines(proxy, redis):
    r1 = proxy.post("/v1/models/m:predict", json_body={"instances": ["log"]})
    key = r1.headers["X-Cache-Key"]
    redis.wait_key(key)
    r2 = proxy.post("/v1/models/m:predict", json_body={"instances": ["log"]})
    assert cache_of(r2) == "HIT"
    proxy.get("/labels?x=1")

    def lines():
        ls = proxy.access_lines()
        return ls if len(ls) >= 3 else None

    got = wait_for(lines, timeout=5, what="3 access lines on predcache's stdout (flushed per line?)")
    text = "\n".join(got)
    tail = key[-12:]
    miss = [l for l in got if "cache=MISS" in l]
    hit = [l for l in got if "cache=HIT" in l]
    passed = [l for l in got if "cache=PASS" in l]
    assert miss and hit and passed, text
    for line in (miss[0], hit[0]):
        for field in ("method=POST", "path=/v1/models/m:predict", "status=200", "key=" + tail,
                      "client=", "backend_ms=", "total_ms=", "bytes="):
            assert field in line, "%r missing in %r" % (field, line)
    assert "path=/labels" in passed[0] and "method=GET" in passed[0]


def test_content_type_kept_in_envelope_and_on_hit(proxy, model, redis):
    model.control(content_type="application/vnd.model+json; charset=utf-8")
    r1 = proxy.post("/v1/models/m:predict", json_body={"instances": ["ct"]})
    assert r1.status_code == 200 and cache_of(r1) == "MISS"
    env = parse_envelope(redis.wait_key(r1.headers["X-Cache-Key"]))
    assert env["content_type"] == "application/vnd.model+json; charset=utf-8"
    r2 = proxy.post("/v1/models/m:predict", json_body={"instances": ["ct"]})
    assert cache_of(r2) == "HIT"
    assert r2.headers.get("Content-Type") == "application/vnd.model+json; charset=utf-8"
    assert r2.content == r1.content


def test_entry_expires_after_ttl(start_predcache, model, redis):
    proxy = start_predcache(conf={"cache": {"ttl_s": "1", "grace_s": "0"}})
    r1 = proxy.post("/v1/models/m:predict", json_body={"instances": ["ttl"]})
    key = r1.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert 0 < redis.pttl(key) <= 1000
    wait_for(lambda: redis.exists(key) == 0, timeout=10, what="the entry to expire")
    r2 = proxy.post("/v1/models/m:predict", json_body={"instances": ["ttl"]})
    assert cache_of(r2) == "MISS"
    assert r2.json()["call"] == 2


def test_redis_db_from_conf(start_predcache, model, redis):
    proxy = start_predcache(conf={"redis": {"db": "2"}})
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["db"]})
    key = r.headers["X-Cache-Key"]

    def in_db2():
        from conftest import Resp
        with Resp(redis.port) as c:
            c.command("SELECT", 2)
            return c.command("EXISTS", key) == 1

    wait_for(in_db2, what="the key in Redis db 2")
    assert redis.exists(key) == 0, "stored in db 0 instead of db 2"
    assert cache_of(proxy.post("/v1/models/m:predict", json_body={"instances": ["db"]})) == "HIT"


def test_concurrent_requests_get_their_own_answers(proxy, model, redis):
    """Many clients at once, repeated inputs: every answer belongs to its own request
    (checked by the integrity oracle, tests/integration/oracle.py: 0 wrong answers)."""
    import hashlib
    import threading

    from oracle import Oracle

    oracle = Oracle("concurrent clients, repeated inputs", per_instance=False)
    inputs = [["in-%d" % i, i] for i in range(6)]

    def expected(inst):
        return [hashlib.sha256(canonical(x).encode()).hexdigest()[:16] for x in inst]

    errors = []
    seen = []

    def client(n):
        for j in range(8):
            inst = inputs[(n + j) % len(inputs)]
            try:
                body = json.dumps({"instances": inst})
                r = proxy.post("/v1/models/m:predict", body=body)
                reason = oracle.check("POST", "/v1/models/m:predict", body, {},
                                      r.status_code, r.content, r.headers.get("X-Cache"))
                if r.status_code != 200:
                    errors.append((inst, r.status_code, r.text[:200]))
                elif reason is not None:
                    errors.append((inst, "wrong answer: " + reason, r.text[:200]))
                else:
                    seen.append(cache_of(r))
            except Exception as e:  # noqa: BLE001
                errors.append((inst, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:5]
    oracle.assert_clean()
    assert len(seen) == 64
    assert set(seen) <= {"MISS", "HIT", "COALESCED"}
    for inst in inputs:
        key = expected_key("/v1/models/m:predict", canonical({"instances": inst}))
        redis.wait_key(key)
        r = proxy.post("/v1/models/m:predict", json_body={"instances": inst})
        assert cache_of(r) == "HIT" and r.json()["predictions"] == expected(inst)


def test_redis_password_from_conf(start_predcache, model, redis):
    """[redis] password is sent with AUTH: against a Redis that requires it, caching works."""
    from conftest import Resp

    password = "s3cret-pw"
    redis.command("CONFIG", "SET", "requirepass", password)

    def authed(*args):
        with Resp(redis.port) as c:
            c.command("AUTH", password)
            return c.command(*args)

    try:
        proxy = start_predcache(conf={"redis": {"password": password}})
        r1 = proxy.post("/v1/models/m:predict", json_body={"instances": ["pw"]})
        assert r1.status_code == 200, r1.text
        assert cache_of(r1) == "MISS", r1.headers
        key = r1.headers["X-Cache-Key"]
        wait_for(lambda: authed("EXISTS", key) == 1, what="key %s in Redis" % key)
        assert authed("TTL", key) > 0
        r2 = proxy.post("/v1/models/m:predict", json_body={"instances": ["pw"]})
        assert r2.status_code == 200, r2.text
        assert cache_of(r2) == "HIT", r2.headers
        assert r2.content == r1.content
        assert model.count() == 1
    finally:
        authed("CONFIG", "SET", "requirepass", "")


def test_store_does_not_hold_up_the_answer(start_predcache, model, redis):
    """Stores are asynchronous: with Redis refusing to run writes for 3 s (CLIENT PAUSE
    WRITE; reads go on), a miss is answered at once and the entry lands after the pause.
    lock_timeout_ms = 0: the cross-process lock is a write and would wait out the pause;
    timeout_ms 5000: the paused SET must not time out (that drops it)."""
    proxy = start_predcache(conf={"cache": {"lock_timeout_ms": "0"},
                                  "redis": {"timeout_ms": "5000"}})
    warm = proxy.post("/v1/models/m:predict", json_body={"instances": ["warm"]})
    assert warm.status_code == 200, warm.text
    # that store done: nothing of predcache's is queued behind a paused write
    redis.wait_key(warm.headers["X-Cache-Key"])
    redis.command("CLIENT", "PAUSE", "3000", "WRITE")
    paused_at = time.monotonic()
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["paused-write"]})
    took = time.monotonic() - paused_at
    assert r.status_code == 200, r.text
    assert cache_of(r) == "MISS", r.headers
    assert took < 1.5, "the miss took %.2fs: answered only once the store was done?" % took
    key = r.headers["X-Cache-Key"]
    assert redis.exists(key) == 0, "stored during the write pause?"
    value = redis.wait_key(key, timeout=10)
    assert time.monotonic() - paused_at >= 2.5, "stored before the pause ended"
    assert parse_envelope(value)["body"] == r.content
    assert redis.ttl(key) > 0
