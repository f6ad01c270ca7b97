"""The differential key table: pairs of requests that must share a cache entry, and pairs
that must not, per API family, each judged twice.

A key reads the request the way the model server reads it, or it is a poisoning vector
(two requests the model answers differently share an entry) or a lost hit (two requests
the model answers alike get two). For each pair (A, B):

1. the model server itself (tests/fixtures/model_server.py, which reads each route as the
   real server does) is asked both, straight, with stable answers: its answers must agree
   with the pair's expectation (equal for "same" and "safe", different for "differ"; the
   answers are compared without "call", the echoed KServe "id" and the byte-level parts of
   "received", keeping what the model read: method, path, query, view_sha256);
2. a fresh predcache (fresh Redis, fresh model server) is sent A then B: A is a MISS; B
   is a HIT with A's X-Cache-Key for "same", a MISS with another key for "differ", either
   of the two for "safe" (the model answers alike, the key may still tell them apart: a
   lost hit at worst); every answer, straight or through predcache, goes through the
   oracle (0 wrong answers).

"same" pairs differ only by noise: member order, whitespace, number spelling the model
reads as one number, members the model ignores, a duplicate member whose last value is
equal, escapes that decode to the same text. "differ" pairs include the bugs found in
key v1: an escaped duplicate member name ({"instances":[10],"instan\\u0063es":[20]} is
[20] to the model), an escaped signature_name, signature_name with columnar inputs,
KServe outputs/parameters, classify examples, text/plain "path:in/X.jpg" against the
JSON file_path, members of a plain JSON body outside input_fields.

Then four tests on the backend identity: two predcache processes on one Redis and one
namespace never share entries when their backends differ, share them when the backend is
the same, share them when different URLs carry the same [backend] cache_id, and do not
when one URL carries two. And a self-check of the oracle's reading (no processes).

Run with -s to see the table (it is printed at the end of the module in any case, and
appended to $PREDCACHE_KEY_TABLE when set).
"""

import json
import os
import random
import re
import threading
from collections import Counter, namedtuple

import pytest
import requests

from conftest import HTTP_TIMEOUT, ModelServer
from oracle import Oracle, answer_document, post_checked, run_load
import model_server  # noqa: E402 (on sys.path through oracle)

PREDICT = "/v1/models/m:predict"
CLASSIFY = "/v1/models/m:classify"
REGRESS = "/v1/models/m:regress"
INFER = "/v2/models/m/infer"
PLAIN = "/predict"
JSON_CT = "application/json"
KEY_V2 = re.compile(r"^predcache:v2:\{[0-9a-f]{64}\}$")

Req = namedtuple("Req", "method path body headers")
Pair = namedtuple("Pair", "name family expect a b conf control oracle_kw")

ROWS = []  # the table, filled by test_pair


def req(body, path=PREDICT, ctype=JSON_CT, method="POST", headers=None):
    """A request: body is bytes, str (sent as is) or a JSON value (sent compact)."""
    if isinstance(body, str):
        data = body.encode("utf-8")
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    hdrs = {}
    if ctype is not None:
        hdrs["Content-Type"] = ctype
    hdrs.update(headers or {})
    return Req(method, path, data, hdrs)


def binary(header, tail, path=INFER, length=None):
    """A KServe binary-extension request: JSON header then binary data."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode("utf-8")
    n = len(head) if length is None else length
    return Req("POST", path, head + tail, {"Content-Type": "application/octet-stream",
                                           "Inference-Header-Content-Length": str(n)})


def pair(name, family, expect, a, b, conf=None, control=None, oracle_kw=None):
    assert expect in ("same", "differ", "safe")
    return Pair(name, family, expect, a, b, conf or {}, control or {}, oracle_kw or {})


T1 = {"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}
T2 = {"name": "x", "shape": [1], "datatype": "INT32", "data": [2]}
BIN_INPUT = {"name": "x", "shape": [4], "datatype": "UINT8",
             "parameters": {"binary_data_size": 4}}
BIN_HEADER = b'{"inputs":[{"name":"x","shape":[4],"datatype":"UINT8",' \
             b'"parameters":{"binary_data_size":4}}]}'
PUT_ROUTE = {"route puts": {"match": "PUT /predict"}}
TRACE_ROUTE = {"route tenants": {"match": "POST /predict", "ignore_fields": "trace"}}
TRACE_MODEL = {"ignore_fields": {"/predict": ["trace"]}}
TRACE_ORACLE = {"ignore_fields": {"/predict": ["trace"]}}

PAIRS = [
    # ---- TF Serving, row format (instances) ------------------------------------------
    pair("tf row: member order", "tf-row", "same",
         req('{"signature_name":"s","instances":[{"a":1,"b":2}]}'),
         req('{"instances":[{"b":2,"a":1}],"signature_name":"s"}')),
    pair("tf row: whitespace", "tf-row", "same",
         req('{"instances":[[1,2]]}'), req('{ "instances" : [ [1, 2] ]\n}')),
    pair("tf row: number spelling 1.0 / 1 / 2e0", "tf-row", "same",
         req('{"instances":[[1.0,2]]}'), req('{"instances":[[1,2e0]]}')),
    pair("tf row: request_id and other members ignored", "tf-row", "same",
         req({"instances": [1], "request_id": "a"}),
         req({"instances": [1], "request_id": "b", "trace": {"t": 2}})),
    # A name given twice is read two ways by real servers (TF Serving's rapidjson takes the
    # first, Python and json-c the last; this test model is Python): keyed raw, so it
    # shares a key with neither reading.
    pair("tf row: duplicate member vs its last reading (keyed raw)", "tf-row", "safe",
         req('{"instances":[5],"instances":[7]}'), req('{"instances":[7]}')),
    pair("tf row: duplicate member vs its first reading", "tf-row", "differ",
         req('{"instances":[5],"instances":[7]}'), req('{"instances":[5]}')),
    pair("kserve: duplicate member inside an input vs the first", "kserve", "differ",
         req('{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]}]}',
             INFER),
         req('{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}', INFER)),
    pair("tf row: escaped member name", "tf-row", "same",
         req('{"instan\\u0063es":[7]}'), req('{"instances":[7]}')),
    pair("tf row: escaped string value", "tf-row", "same",
         req('{"instances":["\\u00e9t\\u00e9"]}'), req('{"instances":["\u00e9t\u00e9"]}')),
    pair("tf row: escaped duplicate name (last wins) [per_instance off]", "tf-row", "differ",
         req('{"instances":[10],"instan\\u0063es":[20]}'), req('{"instances":[10]}')),
    pair("tf row: escaped duplicate name (last wins) [per_instance on]", "tf-row", "differ",
         req('{"instances":[10],"instan\\u0063es":[20]}'), req('{"instances":[10]}'),
         conf={"cache": {"per_instance": "on"}}),
    pair("tf row: signature_name [per_instance off]", "tf-row", "differ",
         req({"instances": [1]}), req({"signature_name": "other", "instances": [1]})),
    pair("tf row: signature_name [per_instance on]", "tf-row", "differ",
         req({"instances": [1]}), req({"signature_name": "other", "instances": [1]}),
         conf={"cache": {"per_instance": "on"}}),
    pair("tf row: escaped signature_n\\u0061me", "tf-row", "differ",
         req('{"signature_n\\u0061me":"other","instances":[1]}'), req('{"instances":[1]}')),
    pair("tf row: escaped signature_n\\u0061me [per_instance on]", "tf-row", "differ",
         req('{"signature_n\\u0061me":"other","instances":[1]}'), req('{"instances":[1]}'),
         conf={"cache": {"per_instance": "on"}}),
    pair("tf row: instance value", "tf-row", "differ",
         req({"instances": [1]}), req({"instances": [2]})),
    pair("tf row: integers past 2^53", "tf-row", "differ",
         req('{"instances":[9007199254740993]}'), req('{"instances":[9007199254740992]}')),
    pair("tf row: instances vs inputs, same list", "tf-row", "differ",
         req({"instances": [1, 2]}), req({"inputs": [1, 2]})),
    pair("tf row: no signature_name vs serving_default", "tf-row", "safe",
         req({"instances": [3]}), req({"signature_name": "serving_default", "instances": [3]})),
    pair("tf row: Content-Type text/plain (TF reads JSON)", "tf-row", "safe",
         req({"instances": [4]}), req({"instances": [4]}, ctype="text/plain")),
    # ---- TF Serving, columnar (inputs) -----------------------------------------------
    pair("tf columnar: member order", "tf-col", "same",
         req('{"inputs":{"x":[1],"y":[2]}}'), req('{"inputs":{"y":[2],"x":[1]}}')),
    pair("tf columnar: request_id ignored", "tf-col", "same",
         req({"inputs": {"x": [1]}, "request_id": 1}), req({"inputs": {"x": [1]}, "request_id": 2})),
    pair("tf columnar: signature_name", "tf-col", "differ",
         req({"inputs": {"x": [1]}}), req({"signature_name": "other", "inputs": {"x": [1]}})),
    pair("tf columnar: tensor value", "tf-col", "differ",
         req({"inputs": {"x": [1]}}), req({"inputs": {"x": [2]}})),
    # ---- TF Serving classify / regress -----------------------------------------------
    pair("classify: examples", "tf-classify", "differ",
         req({"examples": [{"x": 1}]}, CLASSIFY), req({"examples": [{"x": 2}]}, CLASSIFY)),
    pair("classify: context", "tf-classify", "differ",
         req({"context": {"c": 1}, "examples": [{"x": 1}]}, CLASSIFY),
         req({"context": {"c": 2}, "examples": [{"x": 1}]}, CLASSIFY)),
    pair("classify: signature_name", "tf-classify", "differ",
         req({"examples": [{"x": 1}]}, CLASSIFY),
         req({"signature_name": "other", "examples": [{"x": 1}]}, CLASSIFY)),
    pair("classify: other members ignored", "tf-classify", "same",
         req({"examples": [{"x": 1}], "instances": [1], "request_id": "a"}, CLASSIFY),
         req({"examples": [{"x": 1}], "instances": [2], "request_id": "b"}, CLASSIFY)),
    pair("classify: example member order", "tf-classify", "same",
         req('{"examples":[{"a":1,"b":2}]}', CLASSIFY), req('{"examples":[{"b":2,"a":1}]}', CLASSIFY)),
    pair("regress: examples", "tf-classify", "differ",
         req({"examples": [{"x": 1}]}, REGRESS), req({"examples": [{"x": 3}]}, REGRESS)),
    pair("classify vs regress: same body", "tf-classify", "differ",
         req({"examples": [{"x": 1}]}, CLASSIFY), req({"examples": [{"x": 1}]}, REGRESS)),
    # ---- KServe v2, JSON ---------------------------------------------------------------
    pair("kserve: id only differs (answer's id rewritten)", "kserve", "same",
         req({"id": "a", "inputs": [T1]}, INFER), req({"id": "b", "inputs": [T1]}, INFER)),
    pair("kserve: id, then none (answer's id removed)", "kserve", "same",
         req({"id": "a", "inputs": [T1]}, INFER), req({"inputs": [T1]}, INFER)),
    pair("kserve: none, then an id (answer's id added)", "kserve", "same",
         req({"inputs": [T1]}, INFER), req({"id": "c", "inputs": [T1]}, INFER)),
    pair("kserve: member order and whitespace", "kserve", "same",
         req('{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1]}]}', INFER),
         req('{ "inputs": [ {"data": [1.0], "datatype": "INT32", "shape": [1], "name": "x"} ] }',
             INFER)),
    pair("kserve: tensor data", "kserve", "differ",
         req({"inputs": [T1]}, INFER), req({"inputs": [T2]}, INFER)),
    pair("kserve: outputs", "kserve", "differ",
         req({"inputs": [T1]}, INFER), req({"inputs": [T1], "outputs": [{"name": "probs"}]}, INFER)),
    pair("kserve: parameters", "kserve", "differ",
         req({"inputs": [T1], "parameters": {"top_k": 1}}, INFER),
         req({"inputs": [T1], "parameters": {"top_k": 2}}, INFER)),
    pair("kserve: binary_data_output", "kserve", "differ",
         req({"inputs": [T1], "outputs": [{"name": "o", "parameters": {"binary_data_output": False}}]},
             INFER),
         req({"inputs": [T1], "outputs": [{"name": "o", "parameters": {"binary_data_output": True}}]},
             INFER)),
    pair("kserve: request_id is read (whole body minus id)", "kserve", "differ",
         req({"inputs": [T1], "request_id": "a"}, INFER), req({"inputs": [T1], "request_id": "b"}, INFER)),
    # ---- KServe v2, binary tensor extension ----------------------------------------------
    pair("kserve binary: id only differs (binary bodies may key raw)", "kserve-bin", "safe",
         binary(dict({"id": "a"}, inputs=[BIN_INPUT]), b"\x01\x02\x03\x04"),
         binary(dict({"id": "b"}, inputs=[BIN_INPUT]), b"\x01\x02\x03\x04")),
    pair("kserve binary: binary data", "kserve-bin", "differ",
         binary(BIN_HEADER, b"\x01\x02\x03\x04"), binary(BIN_HEADER, b"\x01\x02\x03\x05")),
    pair("kserve binary: same bytes, other Inference-Header-Content-Length", "kserve-bin",
         "differ",
         binary(BIN_HEADER + b" ", b"\x01\x02\x03\x04", length=len(BIN_HEADER)),
         binary(BIN_HEADER + b" ", b"\x01\x02\x03\x04", length=len(BIN_HEADER) + 1)),
    # ---- plain JSON (/predict) -----------------------------------------------------------
    pair("plain: request_id ignored", "plain", "same",
         req({"image_data": "aGVsbG8=", "request_id": "1"}, PLAIN),
         req({"request_id": "2", "image_data": "aGVsbG8="}, PLAIN)),
    pair("plain: JSON media types (charset, +json)", "plain", "same",
         req({"image_data": "aGk="}, PLAIN),
         req({"image_data": "aGk="}, PLAIN, ctype="application/vnd.api+json; charset=utf-8")),
    pair("plain: a member outside input_fields", "plain", "differ",
         req({"image_data": "aGVsbG8=", "threshold": 0.5}, PLAIN),
         req({"image_data": "aGVsbG8=", "threshold": 0.7}, PLAIN)),
    pair("plain: instances with another member [per_instance on]", "plain", "differ",
         req({"instances": [1], "mode": "fast"}, PLAIN), req({"instances": [1], "mode": "exact"}, PLAIN),
         conf={"cache": {"per_instance": "on"}}),
    pair("plain: route ignore_fields = trace", "plain", "same",
         req({"x": 1, "trace": "a"}, PLAIN), req({"x": 1, "trace": "b"}, PLAIN),
         conf=TRACE_ROUTE, control=TRACE_MODEL, oracle_kw=TRACE_ORACLE),
    pair("plain: route ignore_fields = trace, other value", "plain", "differ",
         req({"x": 1, "trace": "a"}, PLAIN), req({"x": 2, "trace": "a"}, PLAIN),
         conf=TRACE_ROUTE, control=TRACE_MODEL, oracle_kw=TRACE_ORACLE),
    # ---- path field ------------------------------------------------------------------------
    pair("path: request_id ignored", "path", "same",
         req({"file_path": "in/a.jpg", "request_id": "x"}, PLAIN),
         req({"file_path": "in/a.jpg", "request_id": "y"}, PLAIN)),
    pair("path: another file", "path", "differ",
         req({"file_path": "in/a.jpg"}, PLAIN), req({"file_path": "in/b.jpg"}, PLAIN)),
    pair("path: text/plain 'path:in/X.jpg' vs JSON file_path", "path", "differ",
         req("path:in/X.jpg", PLAIN, ctype="text/plain"), req({"file_path": "in/X.jpg"}, PLAIN)),
    pair("path: JSON file_path vs text/plain 'path:in/X.jpg'", "path", "differ",
         req({"file_path": "in/X.jpg"}, PLAIN), req("path:in/X.jpg", PLAIN, ctype="text/plain")),
    # ---- raw bytes -------------------------------------------------------------------------
    pair("raw: media type case and parameters", "raw", "same",
         req("hello", PLAIN, ctype="text/plain"),
         req("hello", PLAIN, ctype="Text/Plain; charset=utf-8")),
    pair("raw: one byte", "raw", "differ",
         req("hello", PLAIN, ctype="text/plain"), req("hellO", PLAIN, ctype="text/plain")),
    pair("raw: media type", "raw", "differ",
         req("hello", PLAIN, ctype="text/plain"), req("hello", PLAIN, ctype="application/octet-stream")),
    pair("raw: JSON-looking text/plain vs JSON", "raw", "differ",
         req('{"image_data":"aGk="}', PLAIN, ctype="text/plain"), req('{"image_data":"aGk="}', PLAIN)),
    # ---- the request line ------------------------------------------------------------------
    pair("query: a value", "query", "differ",
         req({"instances": [1]}, PREDICT + "?v=1"), req({"instances": [1]}, PREDICT + "?v=2")),
    pair("query: none vs one", "query", "differ",
         req({"instances": [1]}, PREDICT), req({"instances": [1]}, PREDICT + "?v=1")),
    pair("method: POST vs PUT", "method", "differ",
         req({"image_data": "aGk="}, PLAIN), req({"image_data": "aGk="}, PLAIN, method="PUT"),
         conf=PUT_ROUTE),
]


# --------------------------------------------------------------------------- helpers


def send(url_base, r):
    return requests.request(r.method, url_base + r.path, data=r.body, headers=r.headers,
                            timeout=HTTP_TIMEOUT)


def reading_of(resp):
    """What the model answered, without what legitimately differs between two requests the
    model reads alike: "call", the echoed KServe "id", and the byte-level digests of
    "received" (body_sha256, doc_sha256, auth_sha256)."""
    doc, tail = answer_document(resp.content, resp.headers)
    assert isinstance(doc, dict), resp.content[:200]
    doc = dict(doc)
    doc.pop("call", None)
    doc.pop("id", None)
    rec = doc.pop("received", {}) or {}
    doc["read"] = {k: rec.get(k) for k in ("method", "path", "query", "view_sha256",
                                           "vary_on", "vary_sha256")}
    doc["binary"] = tail.hex() if tail is not None else None
    return doc


def check(oracle, r, resp):
    return oracle.check(r.method, r.path, r.body, r.headers, resp.status_code, resp.content,
                        resp.headers.get("X-Cache"), resp.headers)


@pytest.fixture(scope="module", autouse=True)
def table(request):
    """Prints the table of pairs and outcomes once the module is done."""
    yield
    if not ROWS:
        return
    lines = ["", "key table: %d pairs" % len(ROWS),
             "%-4s %-64s %-11s %-6s %-6s %-26s %s" % ("ok", "pair", "family", "expect", "model",
                                                     "predcache (A, B)", "oracle")]
    for row in ROWS:
        lines.append("%-4s %-64s %-11s %-6s %-6s %-26s %s" % tuple(row))
    text = "\n".join(lines) + "\n"
    out = os.environ.get("PREDCACHE_KEY_TABLE")
    if out:
        with open(out, "a") as f:
            f.write(text)
    cap = request.config.pluginmanager.getplugin("capturemanager")
    if cap is not None:
        with cap.global_and_fixture_disabled():
            print(text, flush=True)
    else:
        print(text, flush=True)


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("p", PAIRS, ids=[p.name for p in PAIRS])
def test_pair(p, start_predcache, model, redis):
    row = ["FAIL", p.name[:64], p.family, p.expect, "-", "-", "-"]
    ROWS.append(row)  # filled in as the test goes: a failing step leaves its dashes
    model.control(stable=True, **p.control)
    oracle = Oracle(p.name, per_instance=p.conf.get("cache", {}).get("per_instance") == "on",
                    **p.oracle_kw)

    # 1. the model server's own reading agrees with the expectation
    da, db = send(model.url(), p.a), send(model.url(), p.b)
    assert da.status_code == 200 and db.status_code == 200, (da.text[:200], db.text[:200])
    for r, resp in ((p.a, da), (p.b, db)):
        reason = check(oracle, r, resp)
        assert reason is None, "the model server's own answer: %s" % reason
    model_same = reading_of(da) == reading_of(db)
    row[4] = "same" if model_same else "differ"
    assert model_same == (p.expect in ("same", "safe")), \
        "the model reads %s as %s, the table says %s" % (p.name, row[4], p.expect)
    model.reset()
    model.control(stable=True, **p.control)

    # 2. predcache: A is a miss, B hits or misses as the model reads them
    proxy = start_predcache(conf=p.conf)
    ra = send(proxy.url(), p.a)
    check(oracle, p.a, ra)
    assert ra.status_code == 200, ra.text[:300]
    xa, ka = ra.headers.get("X-Cache"), ra.headers.get("X-Cache-Key")
    assert xa == "MISS" and ka, (xa, ka, dict(ra.headers))
    redis.wait_key(ka)
    rb = send(proxy.url(), p.b)
    check(oracle, p.b, rb)
    xb, kb = rb.headers.get("X-Cache"), rb.headers.get("X-Cache-Key")
    same_key = kb == ka
    row[5] = "%s, %s %s" % (xa, xb, "same key" if same_key else "other key")
    row[6] = "wrong %d" % oracle.wrong
    oracle.assert_clean()
    assert rb.status_code == 200, rb.text[:300]
    hit = (xb == "HIT" and same_key)
    miss = (xb == "MISS" and kb is not None and not same_key)
    calls = model.count()
    if p.expect == "same":
        assert hit and calls == 1, "B: X-Cache %s, key %s (A's %s), %d model calls" % (
            xb, kb, ka, calls)
    elif p.expect == "differ":
        assert miss and calls == 2, "B: X-Cache %s, key %s (A's %s), %d model calls" % (
            xb, kb, ka, calls)
    else:
        assert hit or miss, "B: X-Cache %s, key %s (A's %s)" % (xb, kb, ka)
    row[0] = "ok"


def test_key_format(proxy):
    r = proxy.post(PREDICT, json_body={"instances": [1]})
    assert r.status_code == 200
    assert KEY_V2.match(r.headers.get("X-Cache-Key", "")), r.headers.get("X-Cache-Key")


# --------------------------------------------------------------------------- backends


@pytest.fixture
def model_b(tmp_path):
    server = ModelServer(tmp_path / "model-b")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def stored_then_asked(redis, body, pa, pb, oa, ob=None):
    """body through predcache pa (a MISS, stored), then through pb: returns the two
    answers, checked right (and 200) by oa and ob (by default oa)."""
    ob = ob or oa
    ra = post_checked(pa.url(), oa, PREDICT, body)
    assert ra.headers["X-Cache"] == "MISS"
    redis.wait_key(ra.headers["X-Cache-Key"])
    return ra, post_checked(pb.url(), ob, PREDICT, body)


def test_two_backends_never_share(start_predcache, model, model_b, redis):
    """Two model servers at two URLs are two models (model_b answers with a salt): one
    Redis, one namespace, and still neither predcache serves the other's answers."""
    model_b.control(salt="B")
    pa = start_predcache()
    pb = start_predcache(backend_url=model_b.url())
    oa, ob = Oracle("backend A"), Oracle("backend B", salt="B")
    body = {"instances": ["shared-input"]}
    # ob judges B's answer by backend B's salt: backend A's answer would be wrong
    ra, rb = stored_then_asked(redis, body, pa, pb, oa, ob)
    assert rb.headers["X-Cache"] == "MISS" and rb.headers["X-Cache-Key"] != ra.headers["X-Cache-Key"]
    redis.wait_key(rb.headers["X-Cache-Key"])
    # and each keeps hitting its own entry
    for p, o in ((pa, oa), (pb, ob)):
        r = post_checked(p.url(), o, PREDICT, body)
        assert r.headers["X-Cache"] == "HIT", r.headers.get("X-Cache")
    oa.assert_clean()
    ob.assert_clean()
    assert model.count() == 1 and model_b.count() == 1


# Two predcache processes on one Redis: [backend] cache_id of each (None: none, the URL is
# the identity), whether the second has its own model server, and whether it must hit
# the first's entry.
BACKEND_IDENTITIES = [
    pytest.param(None, None, False, True, id="same-backend-shares"),
    # two URLs of one model (a replica, a service name and an address)
    pytest.param("resnet-prod", "resnet-prod", True, True, id="same-cache_id-shares"),
    # a cache_id is the identity: the same URL under two shares nothing
    pytest.param("model-a", "model-b", False, False, id="cache_id-differs-from-url-identity"),
]


@pytest.mark.parametrize("id_a,id_b,url_b,shared", BACKEND_IDENTITIES)
def test_backend_identity(start_predcache, model, model_b, redis, id_a, id_b, url_b, shared):
    pa = start_predcache(conf={"backend": {"cache_id": id_a}})
    pb = start_predcache(conf={"backend": {"cache_id": id_b}},
                         backend_url=model_b.url() if url_b else None)
    oracle = Oracle("backend identity")
    ra, rb = stored_then_asked(redis, {"instances": ["identity"]}, pa, pb, oracle)
    if shared:
        assert rb.headers["X-Cache"] == "HIT"
        assert rb.headers["X-Cache-Key"] == ra.headers["X-Cache-Key"]
    else:
        assert rb.headers["X-Cache"] == "MISS"
        assert rb.headers["X-Cache-Key"] != ra.headers["X-Cache-Key"]
    oracle.assert_clean()
    assert model.count() == (1 if shared else 2) and model_b.count() == 0


# --------------------------------------------------------------------------- the oracle


def model_answer(r, call=1, vary_on=None, id_of=None):
    """The answer (bytes, headers) the model server gives r, built from its own functions
    (no process): the oracle must accept it for r and refuse it for other requests.
    id_of: a KServe answer's "id" as predcache rewrites it for that request."""
    path, _, query = r.path.partition("?")
    reading = model_server.read_request(r.method, path, r.body, r.headers)
    vary = model_server.vary_values(r.headers, vary_on)
    doc = {"predictions": model_server.predictions_of(reading, vary),
           "model": reading.model, "call": call}
    tail = b""
    if reading.family == "v2":
        rid = reading.id
        if id_of is not None:
            other = model_server.read_request(id_of.method, id_of.path.partition("?")[0],
                                              id_of.body, id_of.headers)
            rid = other.id if other.family == "v2" else rid
        if rid is not model_server.MISSING:
            doc["id"] = rid
        doc["outputs"], tail = model_server.outputs_of(reading, model_server.view_digest(reading))
    doc["received"] = model_server.received_digest(r.method, path, query, r.body, r.headers,
                                                   vary_on)
    data = json.dumps(doc).encode()
    headers = {}
    if tail or (reading.family == "v2" and reading.binary_answer):
        headers["Inference-Header-Content-Length"] = str(len(data))
        data += tail
    return data, headers


def test_oracle_reads_as_the_model():
    """The checker's new rules, without processes: an answer is right for the requests the
    model reads alike, wrong for the others, and KServe ids, binary framing and Vary values
    are checked."""
    o = Oracle("self-check")

    def judge(r, answer):
        data, headers = answer
        return o.check(r.method, r.path, r.body, r.headers, 200, data, "HIT", headers)

    right, wrong = [], []
    for p in PAIRS:
        if p.conf or p.control:
            continue
        right.append(judge(p.a, model_answer(p.a)))
        verdict = judge(p.b, model_answer(p.a, id_of=p.b))
        if p.expect == "differ":
            wrong.append((p.name, verdict))
        else:
            right.append(verdict)
    assert right == [None] * len(right), [r for r in right if r]
    missed = [name for name, verdict in wrong if verdict is None]
    assert not missed, "the oracle accepted A's answer for B in: %s" % missed

    kid = req({"id": "a", "inputs": [T1]}, INFER)
    data, headers = model_answer(kid)
    assert "id 'a', the request's 'b'" in judge(req({"id": "b", "inputs": [T1]}, INFER),
                                                (data, headers))
    assert "the request sent none" in judge(req({"inputs": [T1]}, INFER), (data, headers))
    bin_req = binary(BIN_HEADER, b"\x01\x02\x03\x04")
    data, headers = model_answer(bin_req)
    assert judge(bin_req, (data, headers)) is None
    assert "binary outputs" in judge(bin_req, (data[:-1] + b"\x00", headers))
    assert "Inference-Header-Content-Length" in judge(
        bin_req, (data, {"Inference-Header-Content-Length": "3"}))
    assert "without Inference-Header-Content-Length" in judge(bin_req, (data, {}))
    acme = req({"instances": ["t"]}, headers={"X-Tenant": "acme"})
    globex = req({"instances": ["t"]}, headers={"X-Tenant": "globex"})
    data = model_answer(acme, vary_on=["X-Tenant"])
    assert judge(acme, data) is None
    assert "predictions differ" in judge(globex, data)
    assert Oracle("salted", salt="B").check(
        acme.method, acme.path, acme.body, acme.headers, 200,
        model_answer(acme, vary_on=["X-Tenant"])[0], "HIT") is not None


# --------------------------------------------------------------------------- under load


def mixed_families(seed):
    """An endless stream of requests over every family above, drawn from small pools so that most repeat
    (hits, coalescing) while noise varies (ids, request ids, member order, whitespace), and
    the confusable pairs are sent side by side: escaped and duplicated names, path text
    against a path member, three users and anonymous, two tenants (a Vary header)."""
    rng = random.Random(seed)
    users = [None, "Bearer alice-load", "Bearer bob-load", "Bearer carol-load"]
    tenants = ["t1", "t2"]

    def noise():
        return "".join(rng.choice("abcdef0123") for _ in range(6))

    def tf_row():
        v = rng.randrange(40)
        body = rng.choice([
            '{"instances":[%d],"request_id":"%s"}' % (v, noise()),
            '{ "request_id" : "%s", "instances" : [ %d ] }' % (noise(), v),
            '{"instan\\u0063es":[%d]}' % v,
            '{"instances":[%d],"instances":[%d]}' % (v, rng.randrange(40)),
            '{"signature_name":"s%d","instances":[%d]}' % (v % 2, v),
            '{"signature_n\\u0061me":"s%d","instances":[%d]}' % (v % 2, v),
        ])
        return "POST", PREDICT, body.encode(), {"Content-Type": JSON_CT}

    def tf_columnar():
        v = rng.randrange(20)
        body = {"signature_name": "s%d" % (v % 3), "inputs": {"x": [v, v + 1]}}
        return "POST", PREDICT, json.dumps(body).encode(), {"Content-Type": JSON_CT}

    def classify():
        v = rng.randrange(20)
        body = {"examples": [{"x": v}], "context": {"c": v % 2}, "trace": noise()}
        path = CLASSIFY if v % 2 else REGRESS
        return "POST", path, json.dumps(body).encode(), {"Content-Type": JSON_CT}

    def kserve():
        v = rng.randrange(30)
        body = {"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [v]}]}
        if rng.random() < 0.7:
            body["id"] = noise()
        if v % 3 == 0:
            body["outputs"] = [{"name": "y%d" % (v % 2)}]
        if v % 5 == 0:
            body["parameters"] = {"binary_data_output": v % 2 == 0}
        return "POST", INFER, json.dumps(body).encode(), {"Content-Type": JSON_CT}

    def kserve_binary():
        v = rng.randrange(10)
        r = binary(BIN_HEADER, bytes([v, v + 1, v + 2, v + 3]))
        return r.method, r.path, r.body, dict(r.headers)

    def plain():
        v = rng.randrange(30)
        body = rng.choice([
            {"text": "t%d" % v, "request_id": noise()},
            {"file_path": "in/%d.jpg" % v, "request_id": noise()},
            {"file_path": "in/%d.jpg" % v, "extra": v % 2},
        ])
        return "POST", PLAIN, json.dumps(body).encode(), {"Content-Type": JSON_CT}

    def text():
        v = rng.randrange(30)
        return "POST", PLAIN, ("path:in/%d.jpg" % v).encode(), {"Content-Type": "text/plain"}

    kinds = [tf_row] * 5 + [tf_columnar, classify] * 2 + [kserve] * 4 + \
        [kserve_binary, plain, plain, text]
    while True:
        method, path, body, headers = rng.choice(kinds)()
        user = rng.choice(users)
        if user is not None:
            headers["Authorization"] = user
        headers["X-Tenant"] = rng.choice(tenants)
        yield method, path, body, headers


@pytest.mark.parametrize("procs,workers", [(1, 1), (2, 2)])
def test_mixed_families_under_load(start_predcache, model, redis, procs, workers):
    """Thousands of requests over every family, 4 at a time per process, across the TTL and
    the in-process tier's age-out, with per-instance caching, the key memo, coalescing and
    (2 x 2) several workers and processes on one Redis: every answer is the model's answer
    to that request, for that user and tenant."""
    model.control(vary_on=["X-Tenant"])
    conf = {
        "server": {"workers": str(workers)},
        "cache": {"ttl_s": "2", "grace_s": "1", "per_instance": "on", "l1_max_bytes": "64k",
                  "l1_ttl_ms": "300", "key_memo_bytes": "256k", "vary": "X-Tenant"},
        "route tenants": {"match": "POST /predict", "ignore_fields": "request_id"}}
    ps = [start_predcache(conf=conf) for _ in range(procs)]
    oracle = Oracle("mixed families under load, %d x %d" % (procs, workers), check_auth=True)
    results = [None] * procs

    def one(i):
        # 7 s: entries live 2 s fresh and 1 s stale, the tier 300 ms: each crossed many times
        results[i] = run_load(ps[i].url(), mixed_families(seed=13 + i), 4, oracle,
                              max_requests=60000, duration_s=7)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results), "a load thread did not finish"
    flat = [r for rs in results for r in rs]
    by_cache = Counter(r.x_cache for r in flat)
    print("mixed families, %d x %d: %d requests, X-Cache %s" % (procs, workers, len(flat),
                                                               dict(by_cache)))
    oracle.assert_clean()
    assert len(flat) >= 2000, "too few requests ran: %d" % len(flat)
    assert by_cache["STALE"] > 0, dict(by_cache)
    assert by_cache["HIT"] + by_cache["STALE"] + by_cache["PARTIAL"] >= len(flat) // 4, \
        dict(by_cache)
    assert by_cache["MISS"] >= 100, dict(by_cache)
    assert [r for r in flat if r.error] == []
