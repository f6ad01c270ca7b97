"""The key memo ([cache] key_memo_bytes): a request whose bytes came before, with the same
route, path, query, namespace and generations, is keyed from memory without reading its
body again. Bytes are remembered the second time they come (the first time only their
hash is noted), so the third request of the same bytes is the first memo hit. The memo
must never key a request differently from reading it: every test here checks the key
against the one derivation gives (expected_key, or the same request with the memo off)."""

import json

import requests

from conftest import HTTP_TIMEOUT, canonical, expected_key, wait_for, without_received, trusted

PREDICT = "/v1/models/m:predict"


def memo(p):
    return p.metric("predcache_key_memo_hits_total"), p.metric("predcache_key_memo_misses_total")


def post(p, body, path=PREDICT, headers=None):
    return p.post(path, body=body, headers=headers)


def body_key(path, body, namespace="default"):
    """The per-body key of an {"instances": ...} body (per_instance is off by default here)."""
    return expected_key(path, canonical({"instances": json.loads(body)["instances"]}),
                        namespace=namespace)


def test_same_bytes_are_keyed_from_the_memo(start_predcache, model, redis):
    p = start_predcache()
    body = '{"instances": [[3, 2, "x"]], "request_id": "r1"}'
    first = post(p, body)
    assert first.headers["X-Cache"] == "MISS"
    assert first.headers["X-Cache-Key"] == body_key(PREDICT, body)
    assert memo(p) == (0, 1)
    redis.wait_key(first.headers["X-Cache-Key"])
    for hits in (0, 1, 2):  # read again (and now remembered), then from the memo
        again = post(p, body)
        assert again.headers["X-Cache"] == "HIT" and again.content == first.content
        assert again.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
        assert memo(p) == (hits, 2)
    assert model.count(PREDICT) == 1


def test_equal_input_in_other_bytes_is_read_and_shares_the_key(start_predcache, model, redis):
    p = start_predcache()
    a = post(p, '{"instances":[{"b":1,"a":2.0}],"request_id":"1"}')
    redis.wait_key(a.headers["X-Cache-Key"])
    b = post(p, '{ "request_id": "2", "instances": [ {"a": 2.00, "b": 1} ] }')
    assert b.headers["X-Cache"] == "HIT"
    assert b.headers["X-Cache-Key"] == a.headers["X-Cache-Key"]
    assert memo(p) == (0, 2)  # other bytes: derived again, and the same key came out


def test_everything_else_the_key_depends_on_is_part_of_the_memo(start_predcache, model, redis):
    p = start_predcache()
    body = '{"instances": [7]}'
    keys = set()
    for path, headers, ns in [(PREDICT, None, "default"),
                              (PREDICT + "?v=1", None, "default"),
                              ("/v1/models/other:predict", None, "default"),
                              (PREDICT, trusted({"X-Predcache-Namespace": "tenant"}), "tenant")]:
        for _ in range(3):
            r = post(p, body, path=path, headers=headers)
            assert r.status_code == 200
            assert r.headers["X-Cache-Key"] == body_key(path, body, namespace=ns)
            redis.wait_key(r.headers["X-Cache-Key"])
        keys.add(r.headers["X-Cache-Key"])
    assert len(keys) == 4
    assert memo(p) == (4, 8)  # each context derived twice, then from the memo
    assert model.count() == 4


def test_an_invalidation_changes_remembered_keys(start_predcache, model, redis):
    p = start_predcache()
    body = '{"instances": ["inv"]}'
    old = post(p, body).headers["X-Cache-Key"]
    redis.wait_key(old)
    for _ in range(2):
        assert post(p, body).headers["X-Cache"] == "HIT"
    assert memo(p) == (1, 2)
    r = requests.post(p.admin("/cache/invalidate?model=m"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    r = post(p, body)
    assert r.headers["X-Cache"] == "MISS" and r.headers["X-Cache-Key"] != old
    redis.wait_key(r.headers["X-Cache-Key"])
    for _ in range(2):
        again = post(p, body)
        assert again.headers["X-Cache"] == "HIT"
        assert again.headers["X-Cache-Key"] == r.headers["X-Cache-Key"]
    assert memo(p) == (2, 4)  # the new generation's context was read twice, then remembered
    assert model.count(PREDICT) == 2


def test_batch_keyed_from_the_memo_still_sends_only_the_missing(start_predcache, model, redis):
    """A remembered batch has its keys but not its instances' places in the body: a partial
    hit must find them to build the sub-request."""
    model.control(stable=True)
    p = start_predcache(conf={"cache": {"per_instance": "on"}})
    body = '{"instances": ["a", "b", "a", "c"], "signature_name": "s"}'
    first = post(p, body)
    assert first.headers["X-Cache"] == "MISS"
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 3, what="3 instance stores")
    keys = redis.keys("predcache:v2:*")
    assert len(keys) == 3
    for _ in range(2):  # the second time, the memo remembers it
        hit = post(p, body)
        assert (hit.headers["X-Cache"], hit.headers["X-Cache-Hits"]) == ("HIT", "4/4")
        assert hit.content == first.content
    # drop "b"'s entry: the one whose key is not in a batch of the other two
    solo = post(p, '{"instances": ["b"], "signature_name": "s"}')
    b_key = solo.headers["X-Cache-Key"]
    assert b_key in keys
    redis.command("DEL", b_key)
    hits_before = memo(p)[0]
    r = post(p, body)
    assert memo(p)[0] == hits_before + 1
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("PARTIAL", "3/4")
    assert json.loads(model.last()["body"])["instances"] == ["b"]
    # the model's "received" digest names the call whose layout the answer carries
    assert without_received(r.content) == without_received(first.content)


def test_off_gives_the_same_keys(start_predcache, model, redis):
    on = start_predcache(conf={"cache": {"per_instance": "on"}})
    off = start_predcache(conf={"cache": {"per_instance": "on", "key_memo_bytes": "0"}})
    bodies = ['{"instances": [1]}', '{"instances": [[1, 2], [1, 2]]}', '{"inputs": {"a": 1}}',
              'not json at all', '{"file_path": "/data/x.png"}']
    for body in bodies:
        for _ in range(3):
            a = on.post(PREDICT, body=body, headers={"Content-Type": "text/plain"})
            b = off.post(PREDICT, body=body, headers={"Content-Type": "text/plain"})
            assert a.status_code == b.status_code  # the model server refuses "not json"
            assert a.headers["X-Cache-Key"] == b.headers["X-Cache-Key"]
    assert memo(off) == (0, 0)
    assert memo(on) == (len(bodies), 2 * len(bodies))


def test_bounded_memo_forgets_and_keys_stay_right(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"key_memo_bytes": "16k"}})
    pad = "x" * 1000
    bodies = ['{"instances": ["%s-%d"]}' % (pad, i) for i in range(30)]
    for body in bodies:
        for _ in range(2):  # remembered
            r = post(p, body)
            assert r.headers["X-Cache-Key"] == body_key(PREDICT, body)
            redis.wait_key(r.headers["X-Cache-Key"])
    hits, misses = memo(p)
    assert hits == 0
    r = post(p, bodies[0])  # long out of a 16 KB memo: read again, same key, a cache hit
    assert r.headers["X-Cache"] == "HIT"
    assert r.headers["X-Cache-Key"] == body_key(PREDICT, bodies[0])
    assert memo(p) == (hits, misses + 1)
    r = post(p, bodies[-1])  # the most recent one is still there
    assert r.headers["X-Cache"] == "HIT" and memo(p) == (hits + 1, misses + 1)


def test_large_bodies_are_remembered_by_digest(start_predcache, model, redis):
    """Bodies over 16 KB are held as their SHA-256: the same bytes are found again, a body
    one byte apart is not."""
    p = start_predcache(conf={"cache": {"key_memo_bytes": "64k"}})  # smaller than 3 bodies
    a = '{"instances": ["%s"]}' % ("a" * 50000)
    b = '{"instances": ["%s"]}' % ("a" * 24999 + "b" + "a" * 25000)
    assert len(a) == len(b) and a != b
    for i in range(3):
        r = post(p, a)
        assert r.headers["X-Cache-Key"] == body_key(PREDICT, a)
        redis.wait_key(r.headers["X-Cache-Key"])
    assert memo(p) == (1, 2)
    r = post(p, b)
    assert r.headers["X-Cache"] == "MISS" and r.headers["X-Cache-Key"] == body_key(PREDICT, b)
    assert memo(p) == (1, 3)
    assert model.count(PREDICT) == 2
