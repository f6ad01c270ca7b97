"""Logs operators expect: [log] format = json (every access line and every stderr line one
JSON object), the access line's fields (request id, query, route, upstream, the items of
an item request), and X-Request-Id: the client's when sane, else a new one, sent to the
model server on the request's own call and returned on every answer of the data port."""

import json
import re
import socket

import requests

from conftest import HTTP_TIMEOUT, free_port, wait_for
from jobs import job_id_of, submit, wait_done

PREDICT = "/v1/models/m:predict"
CHAT = "/v1/chat/completions"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
ACCESS_FIELDS = {"time", "id", "client", "method", "path", "route", "upstream", "status",
                 "cache", "key", "backend_ms", "total_ms", "bytes"}


def json_access(p, n):
    """The first n access lines of p (stdout), each parsed: every line must be JSON."""
    def parsed():
        lines = [json.loads(l) for l in p.stdout_text().splitlines()]
        return lines if len(lines) >= n else None
    got = wait_for(parsed, timeout=5, what="%d JSON access lines" % n)
    for doc in got:
        assert ACCESS_FIELDS <= set(doc), doc
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", doc["time"]), doc
    return got


def json_access_of(p, rid):
    """The access lines of p once the one of request rid is among them: a line is written
    after its answer, so a client can read the answer before the line is there."""
    def parsed():
        lines = [json.loads(l) for l in p.stdout_text().splitlines()]
        return lines if any(doc.get("id") == rid for doc in lines) else None
    wait_for(parsed, timeout=5, what="the access line of %s" % rid)
    return json_access(p, 1)


def by_id(lines, rid):
    found = [doc for doc in lines if doc["id"] == rid]
    assert len(found) == 1, (rid, lines)
    return found[0]


def sent_ids(model, health_path=None):
    """The X-Request-Id headers of the model server's last request (every one); with
    health_path, the last one that is not a health check (those go on in the background
    and may come after the request a test made)."""
    if health_path is None:
        last = model.last()
    else:
        last = [r for r in model.requests() if r["path"] != health_path][-1]
    return [v for k, v in last["header_list"] if k == "x-request-id"]


def raw_request(p, data):
    """Sends data on a connection of its own: (status, headers dict, body)."""
    with socket.create_connection(("127.0.0.1", p.listen_port), timeout=HTTP_TIMEOUT) as s:
        s.sendall(data)
        got = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def test_json_lines_for_hits_misses_pass_and_errors(start_predcache, model, redis):
    p = start_predcache(conf={"log": {"format": "json"}})
    body = {"instances": ["json-log"]}
    miss = p.post(PREDICT, json_body=body, headers={"X-Request-Id": "client-id-1"})
    assert miss.status_code == 200 and miss.headers["X-Cache"] == "MISS"
    assert miss.headers["X-Request-Id"] == "client-id-1"
    assert sent_ids(model) == ["client-id-1"]
    key = miss.headers["X-Cache-Key"]
    redis.wait_key(key)
    hit = p.post(PREDICT, json_body=body)
    assert hit.headers["X-Cache"] == "HIT"
    hit_id = hit.headers["X-Request-Id"]
    assert HEX32.match(hit_id) and hit_id != miss.headers["X-Request-Id"]
    passed = p.get("/v1/models/m/metadata?a=1&b=%22x%22")
    assert passed.status_code == 200
    pass_id = passed.headers["X-Request-Id"]
    assert sent_ids(model) == [pass_id]
    # Refused by the HTTP layer (a Content-Length that is not a number): its own line.
    status, headers, _ = raw_request(
        p, b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
    assert status == 400
    bad_id = headers["x-request-id"]
    assert HEX32.match(bad_id)

    lines = json_access(p, 4)
    m = by_id(lines, "client-id-1")
    assert m["cache"] == "MISS" and m["status"] == 200 and m["method"] == "POST"
    assert m["path"] == PREDICT and "query" not in m and "reason" not in m
    assert m["route"] == "POST /v1/models/*:predict"
    assert m["upstream"] == model.url() and m["backend_ms"] >= 0
    assert m["key"] == key[-12:] and m["bytes"] == len(miss.content)
    assert "items" not in m
    h = by_id(lines, hit_id)
    assert h["cache"] == "HIT" and h["upstream"] is None and h["backend_ms"] is None
    assert h["key"] == key[-12:]
    pa = by_id(lines, pass_id)
    assert pa["cache"] == "PASS" and pa["query"] == "a=1&b=%22x%22"
    assert pa["route"] is None and pa["key"] is None and pa["upstream"] == model.url()
    e = by_id(lines, bad_id)
    assert e["status"] == 400 and e["cache"] == "ERROR" and e["upstream"] is None

    # The levelled lines on stderr are JSON objects too (the 400's reason among them).
    logs = [json.loads(l) for l in p.stderr_text().splitlines()]
    assert logs and all(set(doc) == {"time", "level", "msg"} for doc in logs), logs
    assert any(doc["level"] == "info" and doc["msg"].startswith("http: ") and "400" in doc["msg"]
               for doc in logs), logs


def test_errors_answered_by_predcache_carry_the_id(start_predcache, model, side_model):
    dead = "http://127.0.0.1:%d" % free_port()
    p = start_predcache(conf={
        "log": {"format": "json"},
        "route gpu": {"match": "POST /v1/models/gpu*:predict", "backend": "b2"},
        "backend b2": {"url": side_model.url(), "health_path": "/healthz",
                       "health_interval_ms": "50", "health_fails": "1", "health_passes": "1",
                       "connect_timeout_ms": "200"},
        "route cold": {"match": "POST /v1/models/cold*:predict", "backend": "gone"},
        "backend gone": {"url": dead, "connect_timeout_ms": "200"},
    })
    ok = p.post("/v1/models/gpu:predict", json_body={"instances": [1]},
                headers={"X-Request-Id": "gpu-1"})
    assert ok.status_code == 200 and ok.headers["X-Request-Id"] == "gpu-1"
    assert sent_ids(side_model, health_path="/healthz") == ["gpu-1"]
    side_model.stop()

    def refused():
        r = p.post("/v1/models/gpu:predict", json_body={"instances": [2]},
                   headers={"X-Request-Id": "gpu-2"})
        return [r] if r.status_code == 503 else None  # a 503 Response is falsy

    r, = wait_for(refused, timeout=5, what="503 once the b2 health checks fail")
    assert r.headers["X-Request-Id"] == "gpu-2" and "error" in r.json()
    unreachable = p.post("/v1/models/cold:predict", json_body={"instances": [3]})
    assert unreachable.status_code == 502
    cold_id = unreachable.headers["X-Request-Id"]
    assert HEX32.match(cold_id)

    lines = json_access_of(p, cold_id)
    g = by_id(lines, "gpu-1")
    assert g["route"] == "gpu" and g["upstream"] == "b2" and g["cache"] == "MISS"
    refusals = [doc for doc in lines if doc["id"] == "gpu-2" and doc["status"] == 503]
    assert refusals and refusals[-1]["route"] == "gpu" and refusals[-1]["cache"] == "ERROR"
    assert refusals[-1]["upstream"] is None  # refused before any call
    c = by_id(lines, cold_id)
    assert c["status"] == 502 and c["route"] == "cold" and c["upstream"] == "gone"
    assert c["backend_ms"] is not None


def test_item_requests_log_their_count_and_first_key(start_predcache, model):
    model.control(stable=True)
    p = start_predcache(conf={"log": {"format": "json"}, "cache": {"per_instance": "on"}})
    one = p.post(PREDICT, json_body={"instances": [7]})
    key7 = one.headers["X-Cache-Key"]
    same = p.post(PREDICT, json_body={"instances": [7, 7, 7]},
                  headers={"X-Request-Id": "items-same"})
    assert same.headers["X-Cache-Key"] == key7  # one distinct item: its key is sent
    mixed = p.post(PREDICT, json_body={"instances": [7, 8, 9]},
                   headers={"X-Request-Id": "items-mixed"})
    assert mixed.status_code == 200 and "X-Cache-Key" not in mixed.headers
    assert mixed.headers["X-Request-Id"] == "items-mixed"
    assert sent_ids(model) == ["items-mixed"]  # the sub-request with the missing items
    lines = json_access(p, 3)
    s = by_id(lines, "items-same")
    assert s["items"] == 3 and s["key"] == same.headers["X-Cache-Key"][-12:]
    mx = by_id(lines, "items-mixed")
    assert mx["items"] == 3 and mx["key"] == key7[-12:] and mx["cache"] == "PARTIAL"
    assert mx["upstream"] == model.url()


def test_text_line_fields(start_predcache, model, side_model):
    p = start_predcache(conf={
        "route gpu": {"match": "POST /v1/models/gpu*:predict", "backend": "b2"},
        "backend b2": {"url": side_model.url()},
    })
    a = p.post(PREDICT + "?x=1", json_body={"instances": ["t"]}, headers={"X-Request-Id": "t-1"})
    b = p.post("/v1/models/gpu:predict", json_body={"instances": ["t"]},
               headers={"X-Request-Id": "t-2"})
    assert a.status_code == b.status_code == 200
    lines = wait_for(lambda: p.access_lines() if len(p.access_lines()) >= 2 else None,
                     timeout=5, what="2 access lines")
    la = next(l for l in lines if " id=t-1 " in l)
    assert la.endswith(' bytes=%d id=t-1 query=x=1 route="POST /v1/models/*:predict" '
                       'upstream=%s' % (len(a.content), model.url())), la
    lb = next(l for l in lines if " id=t-2 " in l)
    assert lb.endswith(" id=t-2 query=- route=gpu upstream=b2"), lb
    assert " cache=MISS key=%s " % b.headers["X-Cache-Key"][-12:] in lb


def test_request_id_kept_when_sane_replaced_when_not(start_predcache, model):
    p = start_predcache()
    cases = [("a" * 128, True), ("req:1/2_\"x\"~", True), ("has space", False),
             ("a" * 200, False), ("", False)]
    for i, (given, kept) in enumerate(cases):
        r = p.post(PREDICT, json_body={"instances": ["id-%d" % i]},
                   headers={"X-Request-Id": given})
        assert r.status_code == 200
        got = r.headers["X-Request-Id"]
        if kept:
            assert got == given
        else:
            assert HEX32.match(got), (given, got)
        assert sent_ids(model) == [got]  # the model server has the same one, once
    # The admin port is not the data port: no id.
    assert "X-Request-Id" not in requests.get(p.admin("/health"), timeout=HTTP_TIMEOUT).headers


def test_streams_and_background_calls_carry_the_id(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"verify_sample": "1"}})
    body = json.dumps({"model": "m", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]})
    with requests.post(p.url(CHAT), data=body, stream=True, timeout=30,
                       headers={"Content-Type": "application/json",
                                "X-Request-Id": "stream-1"}) as r:
        assert r.status_code == 200 and r.headers["X-Request-Id"] == "stream-1"
        assert r.content
    assert sent_ids(model) == ["stream-1"]
    miss = p.post(PREDICT, json_body={"instances": ["bg"]})
    redis.wait_key(miss.headers["X-Cache-Key"])
    calls = model.count()
    hit = p.post(PREDICT, json_body={"instances": ["bg"]}, headers={"X-Request-Id": "hit-1"})
    assert hit.headers["X-Cache"] == "HIT"
    # The hit's shadow verification is a call of its own, with the id of the hit.
    wait_for(lambda: model.count() == calls + 1, timeout=5, what="the verification call")
    assert sent_ids(model) == ["hit-1"]


def test_a_job_run_carries_its_submit_id(start_predcache, model):
    p = start_predcache()
    r = submit(p, {"instances": ["job-log"]}, headers={"X-Request-Id": "submit-1"})
    assert r.headers["X-Request-Id"] == "submit-1"
    done = wait_done(p, job_id_of(r))
    assert done.headers["X-Job-Status"] == "done"
    assert sent_ids(model) == ["submit-1"]  # the job's model server call
    lines = [l for l in p.access_lines() if " id=submit-1 " in l]
    assert any(" cache=JOB " in l and " status=202 " in l for l in lines), lines  # the submit
    assert any(" cache=MISS " in l for l in lines), lines  # its run, through the data port
