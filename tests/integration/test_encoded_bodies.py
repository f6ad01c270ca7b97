"""Request bodies with a Content-Encoding (TF Serving accepts gzip): predcache keys what the
model server reads, the decoded body, and forwards the body as the client sent it.

- gzip, x-gzip and deflate (zlib-wrapped or raw) bodies are decoded for the key: the same
  document sent plain, gzip'd or deflated is one entry (MISS, then HIT, HIT);
- the model server receives the client's own bytes and Content-Encoding;
- a batch partly cached sends its missing instances decoded, without Content-Encoding;
- a body that is not valid for its coding is 400; one that decodes past max_body_bytes
  (a gzip bomb) is 413; another coding (br) is forwarded uncached (PASS, request-encoding);
- decoded bytes count in max_input_bytes: past it, forwarded as sent (PASS, input-budget).
"""

import gzip
import hashlib
import json
import threading
import time
import zlib

import requests

from conftest import wait_for
from oracle import Oracle, post_checked

PREDICT = "/v1/models/m:predict"


def gz(doc):
    return gzip.compress(json.dumps(doc).encode())


def deflate(doc, raw=False):
    if raw:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(json.dumps(doc).encode()) + c.flush()
    return zlib.compress(json.dumps(doc).encode())


def post(p, oracle, body, coding=None, status=200):
    hdrs = {"Content-Encoding": coding} if coding else {}
    return post_checked(p.url(), oracle, PREDICT, body, hdrs, status=status)


def test_one_entry_whatever_the_coding(proxy, model, redis):
    oracle = Oracle("encoded bodies")
    doc = {"instances": [["encoded", 1]]}
    sent = gz(doc)
    r = post(proxy, oracle, sent, "gzip")
    assert r.headers["X-Cache"] == "MISS"
    key = r.headers["X-Cache-Key"]
    # the model server got the client's own bytes, with their coding
    last = model.last()
    assert last["headers"].get("content-encoding") == "gzip"
    assert last["raw_sha256"] == hashlib.sha256(sent).hexdigest()
    redis.wait_key(key)
    for body, coding in [(json.dumps(doc), None), (deflate(doc), "deflate"),
                         (deflate(doc, raw=True), "deflate"), (gz(doc), "x-gzip"),
                         (gz(doc), "GZip")]:
        r = post(proxy, oracle, body, coding)
        assert (r.headers["X-Cache"], r.headers["X-Cache-Key"]) == ("HIT", key), coding
    assert model.count(PREDICT) == 1
    oracle.assert_clean()


def test_a_partial_batch_sends_its_missing_instances_decoded(start_predcache, model, redis):
    proxy = start_predcache(conf={"cache": {"per_instance": "on"}})
    oracle = Oracle("encoded batch")
    post(proxy, oracle, gz({"instances": [["a"], ["b"]]}), "gzip")
    time.sleep(0.3)
    r = post(proxy, oracle, gz({"instances": [["a"], ["c"], ["b"], ["d"]]}), "gzip")
    assert r.headers["X-Cache"] == "PARTIAL" and r.headers["X-Cache-Hits"] == "2/4"
    last = model.last()
    assert "content-encoding" not in last["headers"]
    assert json.loads(last["body"]) == {"instances": [["c"], ["d"]]}
    oracle.assert_clean()


def test_bad_encodings(start_predcache, model, redis):
    p = start_predcache(conf={"server": {"max_body_bytes": "1m"}})
    before = model.count(PREDICT)
    r = requests.post(p.url(PREDICT), data=b"\x1f\x8b not gzip at all",
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                      timeout=10)
    assert r.status_code == 400 and "Content-Encoding" in r.json()["error"], r.text
    bomb = gzip.compress(b'{"instances": [' + b" " * (4 << 20) + b"]}")
    assert len(bomb) < 1 << 20
    r = requests.post(p.url(PREDICT), data=bomb,
                      headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
                      timeout=10)
    assert r.status_code == 413 and "max_body_bytes" in r.json()["error"], r.text
    assert model.count(PREDICT) == before  # neither reached the model server
    # a coding predcache does not read: forwarded as sent, not cached
    r = requests.post(p.url(PREDICT), data=b"opaque", timeout=10,
                      headers={"Content-Type": "application/json", "Content-Encoding": "br"})
    assert (r.headers.get("X-Cache"), r.headers.get("X-Cache-Reason")) == \
        ("PASS", "request-encoding")
    assert model.last()["headers"].get("content-encoding") == "br"


def test_decoded_bodies_are_held_within_max_input_bytes(start_predcache, model, redis):
    """Decoded bytes are request bytes held ([server] max_input_bytes): while two requests
    hold 900 KB decoded each (their model call is slow), a third whose decoded body would
    take the figure past the 2 MB bound is forwarded as sent, uncached (PASS, input-budget);
    once they are done nothing stays counted, and the same body is cached. Without the
    bound, small bodies that inflate 1000 times held memory the input bound was meant to
    cap."""
    p = start_predcache(conf={"server": {"max_input_bytes": "2m", "max_body_bytes": "1m"}})
    oracle = Oracle("decoded budget")

    def doc(tag):  # about 900 KB of JSON, a few KB gzip'd
        return {"instances": [[tag] + [0] * 290 for _ in range(1000)]}

    model.control(delay_ms=1500)
    held = [gz(doc("held %d" % i)) for i in range(2)]
    assert all(len(b) < 64 * 1024 for b in held)
    results = []
    threads = [threading.Thread(target=lambda b=b: results.append(post(p, oracle, b, "gzip")))
               for b in held]
    for t in threads:
        t.start()
    wait_for(lambda: p.metric("predcache_input_buffered_bytes") > 1700000,
             what="two decoded bodies held")
    sent = gz(doc("third"))
    r = post(p, oracle, sent, "gzip")
    assert (r.headers["X-Cache"], r.headers["X-Cache-Reason"]) == ("PASS", "input-budget")
    assert "X-Cache-Key" not in r.headers
    last = model.last()  # the model server got the client's own bytes, with their coding
    assert last["headers"].get("content-encoding") == "gzip"
    assert last["raw_sha256"] == hashlib.sha256(sent).hexdigest()
    assert p.metric("predcache_uncached_total", reason="input-budget") == 1
    for t in threads:
        t.join()
    assert [x.headers["X-Cache"] for x in results] == ["MISS", "MISS"]
    # (the /metrics request asking holds its own head: a few hundred bytes)
    wait_for(lambda: p.metric("predcache_input_buffered_bytes") < 1000, what="nothing held")
    model.control()
    r = post(p, oracle, sent, "gzip")
    assert r.headers["X-Cache"] == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    assert post(p, oracle, sent, "gzip").headers["X-Cache"] == "HIT"
    oracle.assert_clean()
