"""What a hit replays: the stored status and body, the headers in [cache] replay_headers
(default Content-Type, Inference-Header-Content-Length), never Set-Cookie nor the entry's
Date, and on KServe v2 paths the requester's own "id".

A Triton binary tensor answer is a JSON header followed by binary outputs; its
Inference-Header-Content-Length says where the JSON ends, and a client cannot decode the
body without it: a hit must carry it with the same value, and the same bytes.
"""

import email.utils
import json
import subprocess
import time

import pytest

from conftest import default_conf, free_port, write_conf
from oracle import Oracle, answer_document, post_checked

INFER = "/v2/models/m/infer"
PREDICT = "/v1/models/m:predict"
IHCL = "Inference-Header-Content-Length"
TENSOR = {"name": "x", "shape": [1], "datatype": "INT32", "data": [7]}
BIN_INPUT = {"name": "x", "shape": [4], "datatype": "UINT8",
             "parameters": {"binary_data_size": 4}}


def binary_request(header, tail):
    head = json.dumps(header).encode()
    return head + tail, {"Content-Type": "application/octet-stream", IHCL: str(len(head))}


def miss_then_hit(p, redis, oracle, path, body, headers=None):
    r1 = post_checked(p.url(), oracle, path, body, headers)
    assert r1.headers.get("X-Cache") == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = post_checked(p.url(), oracle, path, body, headers)
    assert r2.headers.get("X-Cache") == "HIT", r2.headers.get("X-Cache")
    return r1, r2


# --------------------------------------------------------------------------- binary KServe


def test_binary_answer_replays_its_header_and_bytes(start_predcache, model, redis):
    p = start_predcache()
    oracle = Oracle("binary replay")
    body, headers = binary_request({"inputs": [BIN_INPUT]}, b"\x00\x01\xfe\xff")
    r1, r2 = miss_then_hit(p, redis, oracle, INFER, body, headers)
    assert r1.headers.get(IHCL), "the model's binary answer carries %s" % IHCL
    assert r1.headers["Content-Type"] == "application/octet-stream"
    assert r2.content == r1.content, "a hit answers the stored bytes"
    assert r2.headers.get(IHCL) == r1.headers[IHCL], (r2.headers.get(IHCL), r1.headers[IHCL])
    assert r2.headers.get("Content-Type") == "application/octet-stream"
    doc, tail = answer_document(r2.content, r2.headers)
    assert len(tail) == 16 and doc["outputs"][0]["parameters"]["binary_data_size"] == 16
    assert model.count() == 1
    oracle.assert_clean()


def test_binary_output_asked_in_json_replays_the_header(start_predcache, model, redis):
    """A JSON request asking binary_data_output gets a binary answer: replayed alike."""
    p = start_predcache()
    oracle = Oracle("binary output")
    body = {"inputs": [TENSOR], "parameters": {"binary_data_output": True}}
    r1, r2 = miss_then_hit(p, redis, oracle, INFER, body)
    assert r1.headers.get(IHCL) and r2.headers.get(IHCL) == r1.headers[IHCL]
    assert r2.content == r1.content
    oracle.assert_clean()


def test_binary_answer_id_is_the_requesters(start_predcache, model, redis):
    """A binary request differing only in its id: the key may read the body raw (a lost
    hit) or read its JSON header (a hit, whose id and Inference-Header-Content-Length are
    then rewritten to the requester's). Either way the answer is the requester's own."""
    p = start_predcache()
    oracle = Oracle("binary id")
    body_a, h_a = binary_request({"id": "req-a", "inputs": [BIN_INPUT]}, b"\x05\x06\x07\x08")
    body_b, h_b = binary_request({"id": "req-bb", "inputs": [BIN_INPUT]}, b"\x05\x06\x07\x08")
    r1 = post_checked(p.url(), oracle, INFER, body_a, h_a)
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = post_checked(p.url(), oracle, INFER, body_b, h_b)  # checks the id and the framing
    assert r2.headers.get("X-Cache") in ("HIT", "MISS")
    doc, tail = answer_document(r2.content, r2.headers)
    assert doc["id"] == "req-bb"
    assert int(r2.headers[IHCL]) == len(r2.content) - len(tail)
    r3 = post_checked(p.url(), oracle, INFER, body_a, h_a)
    assert r3.headers.get("X-Cache") == "HIT" and r3.content == r1.content
    oracle.assert_clean()


def test_binary_output_asked_in_json_gets_the_requesters_id(start_predcache, model, redis):
    """A JSON request (keyed as read, id left out) asking binary_data_output: the hit is a
    binary answer whose JSON part carries the entry's id. It is rewritten there, and
    Inference-Header-Content-Length follows the JSON part's new length."""
    p = start_predcache()
    oracle = Oracle("binary output, id")
    params = {"binary_data_output": True}
    r1 = post_checked(p.url(), oracle, INFER, {"id": "a", "inputs": [TENSOR], "parameters": params})
    redis.wait_key(r1.headers["X-Cache-Key"])
    doc1, tail1 = answer_document(r1.content, r1.headers)
    for rid in ("a much longer id", "", None):
        body = {"inputs": [TENSOR], "parameters": params}
        if rid is not None:
            body["id"] = rid
        r = post_checked(p.url(), oracle, INFER, body)  # checks id and framing
        assert r.headers.get("X-Cache") == "HIT"
        doc, tail = answer_document(r.content, r.headers)
        assert tail == tail1, "the binary part is the entry's, byte for byte"
        assert int(r.headers[IHCL]) == len(r.content) - len(tail)
        if rid is None:
            assert "id" not in doc
        else:
            assert doc["id"] == rid
        assert dict(doc, id="a") == dict(doc1, id="a")
    assert model.count() == 1
    oracle.assert_clean()


# --------------------------------------------------------------------------- JSON KServe id


def test_kserve_id_is_the_requesters(start_predcache, model, redis):
    p = start_predcache()
    model.control(stable=True)
    oracle = Oracle("kserve id")
    r1 = post_checked(p.url(), oracle, INFER, {"id": "first", "inputs": [TENSOR]})
    assert r1.json()["id"] == "first"
    redis.wait_key(r1.headers["X-Cache-Key"])
    stored = r1.json()
    for rid in ("second", "a longer id with \"quotes\" and \\ backslash", ""):
        r = post_checked(p.url(), oracle, INFER, {"id": rid, "inputs": [TENSOR]})
        assert r.headers.get("X-Cache") == "HIT"
        doc = r.json()
        assert doc["id"] == rid
        assert dict(doc, id="first") == stored, "only the id is rewritten"
    r = post_checked(p.url(), oracle, INFER, {"inputs": [TENSOR]})
    assert r.headers.get("X-Cache") == "HIT"
    assert "id" not in r.json(), "the requester sent no id: the answer carries none"
    assert dict(r.json(), id="first") == stored
    assert model.count() == 1
    oracle.assert_clean()


def test_kserve_id_added_when_the_entry_had_none(start_predcache, model, redis):
    p = start_predcache()
    oracle = Oracle("kserve id added")
    r1 = post_checked(p.url(), oracle, INFER, {"inputs": [TENSOR]})
    assert "id" not in r1.json()
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = post_checked(p.url(), oracle, INFER, {"id": "late", "inputs": [TENSOR]})
    assert r2.headers.get("X-Cache") == "HIT" and r2.json()["id"] == "late"
    oracle.assert_clean()


# --------------------------------------------------------------------------- other headers


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8",
                                   "application/vnd.model+json"])
def test_content_type_replayed(start_predcache, model, redis, ctype):
    p = start_predcache()
    model.control(content_type=ctype)
    oracle = Oracle("content type")
    r1, r2 = miss_then_hit(p, redis, oracle, PREDICT, {"instances": ["ct"]})
    assert r1.headers["Content-Type"] == ctype
    assert r2.headers.get("Content-Type") == ctype
    assert r2.content == r1.content
    oracle.assert_clean()


def test_set_cookie_and_date_never_replayed(start_predcache, model, redis):
    """An answer with Set-Cookie is passed to its requester and never stored; once the model
    stops setting it, the stored answer's hits carry no cookie, and their Date is the hit's
    own time, not the entry's."""
    p = start_predcache()
    oracle = Oracle("set-cookie replay")
    body = {"instances": ["cookie-replay"]}
    model.control(set_cookie="sid=s{call}")
    r = post_checked(p.url(), oracle, PREDICT, body)
    assert r.headers.get("Set-Cookie") == "sid=s1" and r.headers.get("X-Cache") == "MISS"
    r = post_checked(p.url(), oracle, PREDICT, body)
    assert r.headers.get("X-Cache") == "MISS" and r.headers.get("Set-Cookie") == "sid=s2"
    model.control(headers={"X-Other": "not replayed"})
    r1 = post_checked(p.url(), oracle, PREDICT, body)
    assert r1.headers.get("X-Cache") == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])
    time.sleep(2.1)
    before = time.time()
    r2 = post_checked(p.url(), oracle, PREDICT, body)
    assert r2.headers.get("X-Cache") == "HIT"
    assert "Set-Cookie" not in r2.headers
    assert "X-Other" not in r2.headers, "only replay_headers are replayed"
    date = email.utils.parsedate_to_datetime(r2.headers["Date"]).timestamp()
    assert date >= before - 1.0, "the hit's Date %s is the entry's, not now" % r2.headers["Date"]
    oracle.assert_clean()


def test_replay_headers_configurable(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"replay_headers": "Content-Type, X-Model-Version"}})
    model.control(headers={"X-Model-Version": "7", "X-Other": "no"})
    oracle = Oracle("replay headers")
    r1, r2 = miss_then_hit(p, redis, oracle, PREDICT, {"instances": ["rh"]})
    assert r2.headers.get("X-Model-Version") == "7"
    assert "X-Other" not in r2.headers
    oracle.assert_clean()


@pytest.mark.parametrize("name", ["Set-Cookie", "Date", "Connection", "Transfer-Encoding"])
def test_replay_headers_refuses_what_never_replays(predcache_bin, tmp_path, name):
    conf = default_conf(free_port(), free_port(), "http://127.0.0.1:1", 6379)
    conf["cache"]["replay_headers"] = "Content-Type, %s" % name
    path = write_conf(str(tmp_path / "bad.conf"), conf)
    cp = subprocess.run([predcache_bin, "-c", path, "--check"], capture_output=True, text=True,
                        timeout=30)
    assert cp.returncode != 0, "replay_headers = ..., %s accepted:\n%s%s" % (
        name, cp.stdout, cp.stderr)
    assert "replay_headers" in cp.stderr + cp.stdout, cp.stderr
