"""Forwarding: non-cacheable routes pass through unchanged; headers, query and body travel."""

import json

import pytest
import requests

from conftest import HTTP_TIMEOUT, canonical, expected_key, wait_for

HOP_BY_HOP = {
    "Keep-Alive": "timeout=5",
    "Proxy-Authorization": "Basic dXNlcjpwYXNz",
    "Proxy-Connection": "keep-alive",
    "TE": "trailers",
    "Trailer": "X-Checksum",
    "Upgrade": "websocket",
}


def test_passthrough_get_metadata_with_query(proxy, model):
    path = "/v1/models/m/metadata?x=1&y=two"
    direct = requests.get(model.url(path), timeout=HTTP_TIMEOUT)
    model.reset()

    r = proxy.get(path)
    assert r.status_code == direct.status_code == 200
    assert r.headers.get("Content-Type") == direct.headers.get("Content-Type")
    assert r.content == direct.content
    assert "X-Cache" not in r.headers, "non-cacheable routes carry no X-Cache header"
    assert model.count() == 1
    last = model.last()
    assert last["method"] == "GET"
    assert last["path"] == "/v1/models/m/metadata"
    assert last["query"] == "x=1&y=two"


def test_passthrough_is_never_cached(proxy, model, redis):
    for _ in range(2):
        r = proxy.get("/v1/models/m")
        assert r.status_code == 200
        assert r.json()["model_version_status"][0]["state"] == "AVAILABLE"
        assert "X-Cache" not in r.headers
    assert model.count() == 2
    assert redis.keys("*") == []


def test_passthrough_status_content_type_and_body_unchanged(proxy, model):
    model.control(status=418, body="short and stout\n", content_type="text/plain; charset=utf-8")
    r = proxy.get("/labels?lang=en")
    assert r.status_code == 418
    assert r.headers.get("Content-Type") == "text/plain; charset=utf-8"
    assert r.content == b"short and stout\n"
    assert "X-Cache" not in r.headers


def test_passthrough_response_headers(proxy, model):
    model.control(headers={"X-Model-Header": "kept", "ETag": '"v1"'})
    r = proxy.get("/labels")
    assert r.status_code == 200
    assert r.headers.get("X-Model-Header") == "kept"
    assert r.headers.get("ETag") == '"v1"'


@pytest.mark.parametrize("path", ["/labels", "/v1/models/m:predict"])
def test_response_headers_named_by_connection_end_at_predcache(proxy, model, path):
    """RFC 9110 7.6.1: a header the model server's Connection header names is for this
    hop only; the client gets the other headers."""
    model.control(headers={"Connection": "X-Resp-Hop, X-Other-Hop", "X-Resp-Hop": "1",
                           "X-Other-Hop": "2", "X-Model-Header": "kept"})
    if path == "/labels":
        r = proxy.get(path)
    else:
        r = proxy.post(path, body='{"instances": [["hop"]]}')
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Model-Header") == "kept", dict(r.headers)
    assert "X-Resp-Hop" not in r.headers and "X-Other-Hop" not in r.headers, dict(r.headers)


def test_passthrough_post_on_other_route(proxy, model):
    body = '{"anything": [1, 2, 3]}'
    r = proxy.post("/v1/models/m:explain", body=body)
    # the model server has no such route: its 404 comes back as it is
    assert r.status_code == 404
    assert "error" in r.json()
    assert "X-Cache" not in r.headers
    last = model.last()
    assert last["method"] == "POST"
    assert last["path"] == "/v1/models/m:explain"
    assert last["body"] == body


@pytest.mark.parametrize("method,path", [("POST", "/v1/models/m:predict"), ("GET", "/labels")])
def test_forwarded_headers(proxy, model, method, path):
    headers = {"X-Custom": "abc 123", "Connection": "keep-alive, X-Hop-Marker",
               "X-Hop-Marker": "secret"}
    headers.update(HOP_BY_HOP)
    body = '{"instances": [1]}'
    if method == "POST":
        r = proxy.post(path, body=body, headers=headers)
    else:
        r = proxy.get(path + "?q=1", headers=headers)
    assert r.status_code == 200, r.text

    got = model.last()["headers"]
    assert got.get("x-custom") == "abc 123", got
    assert "127.0.0.1" in got.get("x-forwarded-for", ""), "X-Forwarded-For: %r" % got
    leaked = [name for name in HOP_BY_HOP if name.lower() in got]
    assert not leaked, "hop-by-hop headers forwarded: %s (backend saw %s)" % (leaked, got)
    assert "x-hop-marker" not in got.get("connection", "").lower(), \
        "the client's Connection header was forwarded: %r" % got.get("connection")
    assert "x-hop-marker" not in got, \
        "a header the client's Connection header named was forwarded: %r" % got
    if method == "POST":
        assert got.get("content-type") == "application/json"
        assert model.last()["body"] == body


def test_x_forwarded_for_appends_client(proxy, model):
    r = proxy.get("/labels", headers={"X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 200
    xff = model.last()["headers"].get("x-forwarded-for", "")
    parts = [p.strip() for p in xff.split(",")]
    assert "10.1.2.3" in parts and "127.0.0.1" in parts, "X-Forwarded-For: %r" % xff


def test_query_string_forwarded_and_part_of_key(proxy, model, redis):
    instances = [[5, 6]]
    r1 = proxy.post("/v1/models/m:predict?debug=1", json_body={"instances": instances})
    assert r1.status_code == 200 and r1.headers.get("X-Cache") == "MISS"
    assert model.last()["query"] == "debug=1"
    want = expected_key("/v1/models/m:predict?debug=1", canonical({"instances": instances}))
    assert r1.headers.get("X-Cache-Key") == want

    r2 = proxy.post("/v1/models/m:predict", json_body={"instances": instances})
    assert r2.headers.get("X-Cache") == "MISS"
    assert r2.headers.get("X-Cache-Key") != want
    assert model.count() == 2


def test_large_request_and_response_bodies(proxy, model, redis):
    # request: ~300 KB of instances, forwarded byte for byte
    instances = [["%06d" % i] * 4 for i in range(8000)]
    body = json.dumps({"instances": instances})
    r = proxy.post("/v1/models/m:predict", body=body)
    assert r.status_code == 200, r.text[:300]
    assert len(r.json()["predictions"]) == len(instances)
    assert model.last()["body"] == body

    # response: 1 MiB from the model server, passed through byte for byte
    big = "x" * (1 << 20)
    model.control(status=200, body=big, content_type="text/plain")
    r = proxy.get("/labels")
    assert r.status_code == 200
    assert r.content == big.encode()


def test_keep_alive_client_connection(proxy, model):
    with requests.Session() as s:
        for i in range(6):
            if i % 2:
                r = s.get(proxy.url("/labels?i=%d" % i), timeout=HTTP_TIMEOUT)
                assert r.status_code == 200 and r.json()["query"] == "i=%d" % i
            else:
                r = s.post(proxy.url("/predict"), json={"instances": [i]}, timeout=HTTP_TIMEOUT)
                assert r.status_code == 200 and r.headers.get("X-Cache") in ("MISS", "HIT")
    assert model.count() == 6


def test_every_x_forwarded_for_header_is_kept_in_order(proxy, model):
    import socket
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    try:
        s.sendall(b"GET /labels HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 10.0.0.1\r\n"
                  b"X-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    finally:
        s.close()
    assert model.last()["headers"]["x-forwarded-for"] == "10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1"


def test_overlong_content_type_is_answered_but_not_stored(proxy, model, redis):
    ctype = "application/json; profile=" + "x" * 300
    model.control(content_type=ctype)
    body = {"instances": ["long-ctype"]}
    r1 = proxy.post("/v1/models/m:predict", json_body=body)
    assert r1.status_code == 200 and r1.headers["Content-Type"] == ctype
    wait_for(lambda: proxy.metric("predcache_store_skipped_total") >= 1, what="store skipped")
    assert not redis.exists(r1.headers["X-Cache-Key"])


def test_no_headers_are_added_that_the_client_did_not_send(proxy, model):
    import socket
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    try:
        s.sendall(b"POST /other HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
                  b"Connection: close\r\n\r\nab")
        while s.recv(65536):
            pass
    finally:
        s.close()
    headers = model.last()["headers"]
    assert "content-type" not in headers
    assert "accept" not in headers
    assert model.last()["body"] == "ab"


def test_absolute_form_target_is_accepted(proxy, model):
    import socket
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    data = b""
    try:
        s.sendall(b"GET http://example.invalid/v1/models/m/metadata?x=1 HTTP/1.1\r\nHost: t\r\n"
                  b"Connection: close\r\n\r\n")
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 200")
    assert model.last()["path"] == "/v1/models/m/metadata"
    assert model.last()["query"] == "x=1"
