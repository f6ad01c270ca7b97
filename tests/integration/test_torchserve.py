"""TorchServe (POST|PUT /predictions/NAME[/VERSION]) through predcache: default routes of the
torchserve family. Its handler is handed the whole body, so the key reads it whole: a JSON
media type as canonical JSON with every member (request_id too), any other type as its
bytes with the media type in the key's head. TorchServe writes "Cache-Control: no-cache;
no-store, must-revalidate, private" on every answer whatever the model: predcache does not
hear it for this family unless a [route NAME] section sets response_cache_control. A
version in the path is keyed with it; /predictions/NAME has no status endpoint to resolve
it, so it is keyed by the path as sent (said once in the log and in /ready), and is
invalidated by model name on the admin port.

The test model server answers these paths as TorchServe does (its headers, x-request-id
per call, which predcache's own replaces, "version" when the path names one) and reads the body as TorchServe's handler
gets it (tests/fixtures/model_server.py, _read_torch). TorchOracle below judges each
answer against its own request (the shared oracle, and the version of the path)."""

import json
import random
import re

import requests

from conftest import HTTP_TIMEOUT, canonical, expected_key, wait_for
from oracle import (
    Oracle,
    run_load,
    split_target,
)
import model_server  # noqa: E402  (on sys.path through oracle: tests/fixtures)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TORCH_HEADERS_NOT_REPLAYED = ("Pragma", "Expires")  # x-request-id: every answer its own


class TorchOracle(Oracle):
    """The integrity oracle, and for TorchServe paths the version too: the answer's
    "version" must be the one the path names (the model server answers a versioned path
    with it)."""

    def _judge(self, method, target, body, headers, answer, response_headers=None):
        verdict = super()._judge(method, target, body, headers, answer, response_headers)
        m = model_server.TORCH_ROUTE.match(split_target(target)[0])
        if m is None or verdict[0] != "right":
            return verdict
        version = json.loads(answer).get("version")
        if version != m.group(2):
            return "wrong", "answer names version %r, the path %r" % (version, m.group(2))
        return verdict


def send(p, oracle, path, body, ctype="application/json", method="POST", headers=None):
    """One request to predcache's data port, its answer judged right and 200. body: a JSON
    value (sent as JSON), or bytes / str as they are; ctype None: no Content-Type."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8")
    hdrs = {} if ctype is None else {"Content-Type": ctype}
    hdrs.update(headers or {})
    r = requests.request(method, p.url(path), data=body, headers=hdrs, timeout=HTTP_TIMEOUT)
    reason = oracle.check(method, path, body, hdrs, r.status_code, r.content,
                          r.headers.get("X-Cache"), r.headers)
    assert reason is None, "wrong answer (X-Cache %s): %s" % (r.headers.get("X-Cache"), reason)
    assert r.status_code == 200, "status %d: %s" % (r.status_code, r.text[:300])
    return r


def miss_then_hit(p, oracle, redis, model, path, body, ctype="application/json", method="POST"):
    """Sends body twice: a MISS whose entry reaches Redis, then a HIT with the same bytes and
    no model call. Returns both answers."""
    r1 = send(p, oracle, path, body, ctype, method)
    assert r1.headers["X-Cache"] == "MISS", (r1.headers, r1.text[:200])
    key = r1.headers["X-Cache-Key"]
    redis.wait_key(key)
    calls = model.count()
    r2 = send(p, oracle, path, body, ctype, method)
    assert r2.headers["X-Cache"] == "HIT", (r2.headers, r2.text[:200])
    assert r2.headers["X-Cache-Key"] == key
    assert r2.content == r1.content
    assert model.count() == calls, "a hit called the model"
    return r1, r2


def entries(redis):
    return [k for k in redis.keys("predcache:v2:*") if not k.endswith(":lock")]


def png_like(seed, n=600):
    rnd = random.Random(seed)
    return PNG_MAGIC + bytes(rnd.randrange(256) for _ in range(n))


def admin_invalidate(p, query):
    return requests.post(p.admin("/cache/invalidate?" + query), timeout=HTTP_TIMEOUT)


# --------------------------------------------------------------------------- caching


def test_json_body_miss_then_hit_despite_private_cache_control(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve json")
    path = "/predictions/resnet"
    doc = {"data": "a cat", "request_id": "r-1"}
    r1, r2 = miss_then_hit(p, oracle, redis, model, path, doc)
    assert r1.headers["X-Cache-Key"] == expected_key(path, canonical(doc))
    # TorchServe's boilerplate reached the client and was not heard
    assert "private" in r1.headers.get("Cache-Control", ""), r1.headers
    assert "X-Cache-Reason" not in r1.headers, r1.headers
    assert r2.json()["call"] == r1.json()["call"]
    assert model.count(path) == 1
    # the same document spelt otherwise, with a JSON type's parameters: the same entry
    r3 = send(p, oracle, path, '{ "request_id" : "r-1",  "data" : "a cat" }',
              "application/json; charset=utf-8")
    assert r3.headers["X-Cache"] == "HIT" and r3.content == r1.content
    # the handler reads every member: another request_id is another input
    r4 = send(p, oracle, path, dict(doc, request_id="r-2"))
    assert r4.headers["X-Cache"] == "MISS"
    assert r4.headers["X-Cache-Key"] != r1.headers["X-Cache-Key"]
    assert r4.json()["predictions"] != r1.json()["predictions"]
    assert model.count(path) == 2
    oracle.assert_clean()


def test_raw_image_body_miss_then_hit(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve raw")
    path = "/predictions/densenet161"
    image = png_like(1)
    r1, r2 = miss_then_hit(p, oracle, redis, model, path, image, "image/png")
    assert r1.headers["X-Cache-Key"] == expected_key(path, image, media="image/png", form="raw")
    assert r1.json()["received"]["body_sha256"] == model_server.sha256_hex(image)
    assert r2.headers["Content-Type"] == r1.headers["Content-Type"]
    assert model.count(path) == 1
    oracle.assert_clean()


def test_same_bytes_with_another_content_type_are_another_key(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve media types")
    path = "/predictions/densenet161"
    image = png_like(2)
    firsts = {}
    for ctype in ("image/png", "image/jpeg", "application/octet-stream"):
        r = send(p, oracle, path, image, ctype)
        assert r.headers["X-Cache"] == "MISS", (ctype, r.headers)
        firsts[ctype] = r
    assert len({r.headers["X-Cache-Key"] for r in firsts.values()}) == 3
    assert len({json.dumps(r.json()["predictions"]) for r in firsts.values()}) == 3
    # parameters and case of the media type are not part of it
    for ctype, r in firsts.items():
        redis.wait_key(r.headers["X-Cache-Key"])
    again = send(p, oracle, path, image, "Image/PNG; q=1")
    assert again.headers["X-Cache"] == "HIT" and again.content == firsts["image/png"].content
    for ctype, r in firsts.items():
        hit = send(p, oracle, path, image, ctype)
        assert hit.headers["X-Cache"] == "HIT" and hit.content == r.content, ctype
    assert model.count(path) == 3
    oracle.assert_clean()


def test_json_text_without_a_json_type_is_read_as_bytes(start_predcache, model, redis):
    """TorchServe hands the handler the raw bytes unless the media type is JSON: two
    spellings of one document are two inputs then, and must not share an entry."""
    p = start_predcache()
    oracle = TorchOracle("torchserve json text as bytes")
    path = "/predictions/m"
    spellings = ['{"data":"x"}', '{ "data": "x" }']
    keys = set()
    for ctype in ("text/plain", None):
        for text in spellings:
            r = send(p, oracle, path, text, ctype)
            assert r.headers["X-Cache"] == "MISS", (ctype, text, r.headers)
            keys.add(r.headers["X-Cache-Key"])
            redis.wait_key(r.headers["X-Cache-Key"])
    assert len(keys) == 4
    for ctype in ("text/plain", None):
        for text in spellings:
            r = send(p, oracle, path, text, ctype)
            assert r.headers["X-Cache"] == "HIT", (ctype, text, r.headers)
    # the JSON-typed reading of the same text is a third input
    r = send(p, oracle, path, spellings[0])
    assert r.headers["X-Cache"] == "MISS" and r.headers["X-Cache-Key"] not in keys
    oracle.assert_clean()


def test_put_works_like_post(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve put")
    path = "/predictions/bert"
    doc = {"text": "hello"}
    put1, _ = miss_then_hit(p, oracle, redis, model, path, doc, method="PUT")
    assert put1.json()["received"]["method"] == "PUT"
    # the method is in the key: a POST of the same body is its own entry
    post1, _ = miss_then_hit(p, oracle, redis, model, path, doc, method="POST")
    assert post1.headers["X-Cache-Key"] != put1.headers["X-Cache-Key"]
    assert post1.json()["received"]["method"] == "POST"
    image = png_like(3)
    miss_then_hit(p, oracle, redis, model, path, image, "image/png", method="PUT")
    assert model.count(path) == 3
    oracle.assert_clean()


def test_versioned_and_unversioned_paths_are_different_keys(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve versions")
    doc = {"data": "same input"}
    answers = {}
    for path in ("/predictions/m/2", "/predictions/m", "/predictions/m/3"):
        answers[path], _ = miss_then_hit(p, oracle, redis, model, path, doc)
    assert len({r.headers["X-Cache-Key"] for r in answers.values()}) == 3
    assert answers["/predictions/m/2"].json()["version"] == "2"
    assert "version" not in answers["/predictions/m"].json()
    assert answers["/predictions/m/3"].json()["version"] == "3"
    assert answers["/predictions/m/2"].headers["X-Cache-Key"] == expected_key(
        "/predictions/m/2", canonical(doc))
    # each stays its own: no path answered from another's entry
    for path, first in answers.items():
        r = send(p, oracle, path, doc)
        assert r.headers["X-Cache"] == "HIT" and r.content == first.content, path
    assert model.count() == 3
    oracle.assert_clean()


def test_request_id_header_is_not_replayed_on_a_hit(start_predcache, model, redis):
    """TorchServe's x-request-id (its own, per call) gives way to predcache's: every answer
    carries the id predcache sent the model server and logged; a hit its own, never the
    stored one's."""
    p = start_predcache()
    oracle = TorchOracle("torchserve headers")
    path = "/predictions/m"
    r1, r2 = miss_then_hit(p, oracle, redis, model, path, {"data": "h"})
    sent = model.last()["headers"]["x-request-id"]  # r1's call: the hit made none
    assert r1.headers.get("x-request-id") == sent, r1.headers
    assert sent != "req-%d" % r1.json()["call"]
    for name in TORCH_HEADERS_NOT_REPLAYED:
        assert name not in r2.headers, "%s replayed on a hit: %r" % (name, r2.headers)
    assert re.match(r"^[0-9a-f]{32}$", r2.headers["x-request-id"])
    assert r2.headers["x-request-id"] != r1.headers["x-request-id"]
    assert r2.headers["Content-Type"] == r1.headers["Content-Type"]
    # a later miss has its own id too, given by the client this time
    r3 = send(p, oracle, path, {"data": "other"}, headers={"X-Request-Id": "client-3"})
    assert r3.headers["X-Cache"] == "MISS"
    assert r3.headers.get("x-request-id") == "client-3"
    assert model.last()["headers"]["x-request-id"] == "client-3"
    oracle.assert_clean()


def test_route_section_honouring_cache_control_stores_nothing(start_predcache, model, redis):
    p = start_predcache(conf={"route ts": {"match": "POST /predictions/*",
                                           "response_cache_control": "honour"}})
    oracle = TorchOracle("torchserve honour")
    path = "/predictions/m"
    doc = {"data": "private"}
    for _ in range(2):
        r = send(p, oracle, path, doc)
        assert r.headers["X-Cache"] == "MISS", r.headers
        assert r.headers.get("X-Cache-Reason") == "response-private", r.headers
    assert model.count(path) == 2
    assert p.metric("predcache_uncached_total", reason="response-private") == 2
    # PUT /predictions/* is still the default route: TorchServe's boilerplate not heard
    miss_then_hit(p, oracle, redis, model, path, doc, method="PUT")
    assert len(entries(redis)) == 1, entries(redis)  # the PUT's only
    oracle.assert_clean()


def test_ping_passes_through_uncached(start_predcache, model, redis):
    p = start_predcache()
    for _ in range(3):
        r = p.get("/ping")
        assert r.status_code == 200 and r.json() == {"status": "Healthy"}
        assert r.headers.get("X-Cache") in (None, "PASS"), r.headers
    assert model.count("/ping") == 3
    assert entries(redis) == []


# --------------------------------------------------------------------------- keyed as sent


def keyed_by_path_line(p):
    return wait_for(lambda: next((l for l in p.stderr_text().splitlines()
                                  if "routes keyed by the path as sent" in l), None),
                    what="the start log line naming the routes keyed by the path as sent")


def test_ready_and_the_start_log_name_the_torchserve_routes(start_predcache, model, redis):
    p = start_predcache()
    r = requests.get(p.admin("/ready"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    listed = r.json()["keyed_by_path"]
    for method in ("POST", "PUT"):
        assert {"route": method + " /predictions/*", "api": "torchserve"} in listed, listed
    # families whose version predcache resolves are not listed
    assert not [e for e in listed if e["api"] in ("tfserving", "kserve_v2")], listed
    line = keyed_by_path_line(p)
    assert "POST /predictions/* (torchserve)" in line, line
    assert "PUT /predictions/* (torchserve)" in line, line
    assert sum("routes keyed by the path as sent" in l
               for l in p.stderr_text().splitlines()) == 1


def test_start_log_names_an_invalidate_endpoint_that_exists(start_predcache, model, redis):
    """The start line tells the operator how to drop a model's entries: the admin endpoint
    it names must be one the admin port serves."""
    p = start_predcache()
    line = keyed_by_path_line(p)
    named = re.search(r"POST (/[^\s):,]+)", line)
    assert named, line
    r = requests.post(p.admin(named.group(1) + "?model=m"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, "the log says %r; POST %s?model=m on the admin port " \
        "answers %d %s" % (named.group(0), named.group(1), r.status_code, r.text[:200])


# --------------------------------------------------------------------------- invalidation


def test_invalidating_a_model_makes_its_next_request_a_miss(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve invalidate")
    doc = {"data": "before"}
    paths = ("/predictions/m", "/predictions/m/2", "/predictions/n")
    first = {}
    for path in paths:
        first[path], _ = miss_then_hit(p, oracle, redis, model, path, doc)

    r = admin_invalidate(p, "model=m")
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "m"
    for path in ("/predictions/m", "/predictions/m/2"):
        r = send(p, oracle, path, doc)
        assert r.headers["X-Cache"] == "MISS", (path, r.headers)
        assert r.headers["X-Cache-Key"] != first[path].headers["X-Cache-Key"]
        assert r.json()["call"] != first[path].json()["call"]
        redis.wait_key(r.headers["X-Cache-Key"])
        again = send(p, oracle, path, doc)
        assert again.headers["X-Cache"] == "HIT" and again.content == r.content
    # another model is untouched
    r = send(p, oracle, "/predictions/n", doc)
    assert r.headers["X-Cache"] == "HIT" and r.content == first["/predictions/n"].content

    # a version: that version's requests only
    assert admin_invalidate(p, "model=m&version=2").status_code == 200
    r = send(p, oracle, "/predictions/m/2", doc)
    assert r.headers["X-Cache"] == "MISS", r.headers
    r = send(p, oracle, "/predictions/m", doc)
    assert r.headers["X-Cache"] == "HIT", r.headers
    oracle.assert_clean()


# --------------------------------------------------------------------------- integrity


def integrity_requests():
    """300 distinct small JSON bodies and 100 distinct raw ones over POST and PUT, several
    models, versioned and not, several media types (interleaved)."""
    out = []
    for i in range(300):
        path = ("/predictions/m%d" % (i % 3)) + ("/%d" % (i % 2 + 1) if i % 5 == 0 else "")
        doc = {"data": [i % 7, "x%d" % i], "request_id": "r%d" % (i // 10)}
        if i % 4 == 0:
            doc["extra"] = {"k": i}
        ctype = "application/json" if i % 3 else "application/json; charset=utf-8"
        out.append(("PUT" if i % 6 == 1 else "POST", path,
                    json.dumps(doc).encode(), {"Content-Type": ctype}))
    ctypes = ("image/png", "image/jpeg", "application/octet-stream", "text/plain")
    for i in range(100):
        path = "/predictions/img%d" % (i % 2) + ("/1" if i % 3 == 0 else "")
        out.append(("PUT" if i % 5 == 0 else "POST", path, png_like(1000 + i, 40 + i),
                    {"Content-Type": ctypes[i % len(ctypes)]}))
    random.Random(7).shuffle(out)
    return out


def test_integrity_json_and_raw_bodies_sent_twice(start_predcache, model, redis):
    p = start_predcache()
    oracle = TorchOracle("torchserve integrity")
    reqs = integrity_requests()
    assert len({(m, pa, b, h["Content-Type"]) for m, pa, b, h in reqs}) == 400

    first = run_load(p.url(), reqs, 8, oracle)
    assert [r.status for r in first] == [200] * 400, [r for r in first if r.status != 200][:3]
    assert {r.x_cache for r in first} == {"MISS"}, [r for r in first if r.x_cache != "MISS"][:3]
    keys = {r.x_cache_key for r in first}
    assert len(keys) == 400
    assert model.count() == 400
    wait_for(lambda: keys <= set(entries(redis)), timeout=20, what="400 entries in Redis")

    # the second round, in another order
    second_order = list(reqs)
    random.Random(8).shuffle(second_order)
    second = run_load(p.url(), second_order, 8, oracle)
    assert [r.status for r in second] == [200] * 400
    not_hit = [r for r in second if r.x_cache != "HIT"]
    assert not not_hit, "%d of 400 second-round answers not HIT: %r" % (len(not_hit),
                                                                         not_hit[:3])
    assert {r.x_cache_key for r in second} == keys
    assert model.count() == 400, "the second round called the model"
    oracle.assert_clean()
    assert oracle.wrong == 0 and oracle.checked == 800, oracle.report()
