"""Errors answered by predcache itself: JSON {"error": ...} with the agreed status codes."""

import json
import socket
import time

from conftest import free_port


def assert_json_error(r, status):
    assert r.status_code == status, "expected %d, got %d: %s" % (status, r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], doc


def raw_request(port, data, timeout=10.0):
    """Sends raw bytes; returns (status, headers, body) of the first answer, or None if the
    connection was closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in buf:
            if time.monotonic() > deadline:
                raise AssertionError("no complete answer head within %.0fs: %r" % (timeout, buf))
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if not buf:
                    return None
                raise AssertionError("connection closed mid-head: %r" % buf)
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "-1"))
        while length >= 0 and len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        if length < 0:  # read until close
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    body += chunk
            except (socket.timeout, ConnectionResetError):
                pass
        return status, headers, body


def test_backend_unreachable_is_502(start_predcache, model, redis):
    proxy = start_predcache(backend_url="http://127.0.0.1:%d" % free_port())
    r = proxy.post("/v1/models/m:predict", json_body={"instances": [1]})
    assert_json_error(r, 502)
    r = proxy.get("/v1/models/m/metadata")
    assert_json_error(r, 502)
    time.sleep(0.3)
    assert redis.keys("*") == []


def test_backend_slow_is_504(start_predcache, model, redis):
    proxy = start_predcache(conf={"backend": {"timeout_ms": "500",
                                                    "connect_timeout_ms": "200"}})
    model.control(delay_ms=2500)
    r = proxy.post("/v1/models/m:predict", json_body={"instances": [1]})
    assert_json_error(r, 504)
    time.sleep(0.3)
    assert redis.keys("*") == []
    # the model server is back to normal speed: predcache answers again
    model.control()
    r = proxy.post("/v1/models/m:predict", json_body={"instances": [1]})
    assert r.status_code == 200, r.text


def test_request_timeout_bounds_a_slow_model_server(start_predcache, model, redis):
    """[server] request_timeout_ms counts from the request's arrival: it cuts a model server
    call short even when [backend] timeout_ms would allow more."""
    proxy = start_predcache(conf={"server": {"request_timeout_ms": "800"},
                                  "backend": {"timeout_ms": "10000"}})
    model.control(delay_ms=3000)
    start = time.monotonic()
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["request-timeout"]})
    took = time.monotonic() - start
    assert_json_error(r, 504)
    assert took < 2.5, "504 after %.2fs; request_timeout_ms is 800" % took
    assert took >= 0.7, "504 after %.2fs, before request_timeout_ms (800) ran out" % took
    time.sleep(0.3)
    assert redis.keys("*") == []
    model.control()
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["request-timeout"]})
    assert r.status_code == 200, r.text


def test_body_over_max_body_bytes_is_413(start_predcache, model):
    proxy = start_predcache(conf={"server": {"max_body_bytes": "1k"}})
    small = json.dumps({"instances": ["a" * 900]})
    assert len(small) < 1024
    r = proxy.post("/v1/models/m:predict", body=small)
    assert r.status_code == 200, "a body under 1k (1024 bytes) must pass: %s" % r.text[:200]

    big = json.dumps({"instances": ["b" * 4000]})
    r = proxy.post("/v1/models/m:predict", body=big)
    assert_json_error(r, 413)
    assert model.count() == 1, "the oversized body must not reach the model server"


def test_invalid_json_is_400(proxy, model, redis):
    r = proxy.post("/v1/models/m:predict", body='{"instances": [1, 2,',
                   headers={"Content-Type": "application/json"})
    assert_json_error(r, 400)
    assert model.count() == 0
    assert redis.keys("*") == []


def test_malformed_request_line_is_400_json(proxy, model):
    got = raw_request(proxy.listen_port, b"NONSENSE\r\n\r\n")
    assert got is not None, "connection closed without an answer; expected 400 JSON"
    status, headers, body = got
    assert status == 400, (status, headers, body)
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body.decode())
    assert isinstance(doc.get("error"), str), doc
    assert model.count() == 0
    # predcache is still serving
    assert proxy.get("/labels").status_code == 200


def test_oversized_headers_rejected_and_server_survives(start_predcache, model):
    proxy = start_predcache(conf={"server": {"max_header_bytes": "4096"}})
    req = (b"GET /labels HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 16000 +
           b"\r\nConnection: close\r\n\r\n")
    try:
        got = raw_request(proxy.listen_port, req)
    except (ConnectionResetError, BrokenPipeError):
        got = None
    if got is not None:
        assert 400 <= got[0] < 500, "oversized headers answered %d" % got[0]
    assert model.count() == 0
    assert proxy.get("/labels").status_code == 200
