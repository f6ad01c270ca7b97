"""How predcache reads a request's framing and which request headers it passes on.

Framing headers given more than once are read as one list (RFC 9110 5.3), whichever way
they are split across lines: a request whose framing two readers could read two ways is
refused and the connection closed, before anything reaches the model server (request
smuggling). Every header predcache accepted reaches the model server whole, whatever its
length; header names with an underscore never do (as nginx: CGI-style servers read
X_Foo and X-Foo as one name). The HTTP request reader itself is fuzzed differentially
(tests/fuzz/fuzz_h1parse.c); the findings that fuzzing made are pinned here too.
"""

import json

import pytest

from test_hostile import exchange as hostile_exchange

PREDICT = "/v1/models/m:predict"
STATUS = "/v1/models/m"


# --------------------------------------------------------------------------- raw HTTP


def exchange(port, data, count=None, timeout=10.0):
    """Sends data on a fresh connection; reads answers until count of them arrived (all,
    when None), the peer closed, or timeout: (answers without 100s, leftover, closed)."""
    return hostile_exchange(port, data, count, timeout)


def refused(port, data, status):
    """data gets exactly one JSON error answer with status, and the connection closes."""
    resps, rest, closed = exchange(port, data, timeout=5)
    assert resps, "no answer to %r" % data
    code, headers, body = resps[0]
    assert code == status, "expected %d for %r, got %d %r (then %d more)" % (
        status, data, code, body[:200], len(resps) - 1)
    assert headers.get("content-type") == "application/json", headers
    assert json.loads(body)["error"]
    assert headers.get("connection") == "close", headers
    assert len(resps) == 1 and closed and rest == b"", (data, resps, rest)


def alive(p):
    r = p.get(STATUS, timeout=5)
    assert r.status_code == 200, r.text[:200]


def head(method, path, lines, version=b"HTTP/1.1"):
    return (method + b" " + path.encode() + b" " + version + b"\r\nHost: t\r\n" +
            b"".join(line + b"\r\n" for line in lines) + b"\r\n")


# A chunked body whose end, read as chunked, is followed by a second request: a reader
# that takes the first Transfer-Encoding line reads two requests where the other (which
# reads the body to the connection's end, or as identity) reads one.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
BODY = b'{"instances": [1]}'
CHUNKED_BODY = b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY)


# --------------------------------------------------------------------------- framing


@pytest.mark.parametrize("lines,status", [
    # RFC 9112 6.3: chunked not the final coding -> 400 and close, one line or two
    ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"], 400),
    ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip"], 400),
    ([b"Transfer-Encoding: chunked", b"transfer-encoding: identity"], 400),
    ([b"Transfer-Encoding: chunked, identity"], 400),
    # chunked twice, or after another coding: the framing is clear, the coding unsupported
    ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"], 501),
    ([b"Transfer-Encoding: gzip", b"Transfer-Encoding: chunked"], 501),
    ([b"Transfer-Encoding: identity", b"Transfer-Encoding: chunked"], 501),
    # an empty coding: a reader that skips it and one that stops at it disagree
    ([b"Transfer-Encoding: chunked", b"Transfer-Encoding:"], 400),
    ([b"Transfer-Encoding:", b"Transfer-Encoding: chunked"], 400),
    ([b"Transfer-Encoding: chunked,"], 400),
    ([b"Transfer-Encoding: ,chunked"], 400),
    # Transfer-Encoding and Content-Length on any lines, in any order: 400 (RFC 9112 6.3
    # allows letting chunked win; predcache takes the strict branch)
    ([b"Transfer-Encoding: chunked", b"Content-Length: 23"], 400),
    ([b"Content-Length: 23", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"],
     400),
])
def test_transfer_encoding_is_read_as_one_list(proxy, model, lines, status):
    before = model.count()
    refused(proxy.listen_port, head(b"POST", PREDICT, lines) + CHUNKED_BODY + SMUGGLED, status)
    assert model.count() == before, "a refused request (or the smuggled one) was forwarded"
    alive(proxy)


def test_transfer_encoding_in_http10_is_400(proxy, model):
    """RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 request means faulty framing."""
    before = model.count()
    refused(proxy.listen_port, head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"],
                                    version=b"HTTP/1.0") + CHUNKED_BODY, 400)
    assert model.count() == before


def test_one_chunked_line_still_reads_chunked(proxy, model):
    for te in (b"chunked", b"Chunked", b"CHUNKED", b" chunked "):
        data = head(b"POST", PREDICT, [b"Content-Type: application/json",
                                       b"Transfer-Encoding:" + te]) + CHUNKED_BODY
        resps, _, _ = exchange(proxy.listen_port, data + head(b"GET", "/next", [
            b"Connection: close"]))
        assert [r[0] for r in resps] == [200, 200], (te, resps)
        assert json.loads(resps[1][2]) == {"path": "/next", "query": ""}


@pytest.mark.parametrize("lines", [
    [b"Content-Length: 18", b"Content-Length: 18"],  # the same twice: a list of two
    [b"Content-Length: 18", b"content-length: 18"],
    [b"Content-Length: 18", b"Content-Length: 19"],
    [b"Content-Length: 18, 18"],
    [b"Content-Length: 18", b"Content-Length:"],
])
def test_content_length_given_twice_is_400(proxy, model, lines):
    before = model.count()
    refused(proxy.listen_port, head(b"POST", PREDICT, lines) + BODY + SMUGGLED, 400)
    assert model.count() == before


def test_connection_close_on_any_line_closes(proxy, model):
    """Connection is a list too: "close" on its second line closes after the answer."""
    data = head(b"GET", "/a", [b"Connection: keep-alive", b"Connection: close"])
    resps, rest, closed = exchange(proxy.listen_port, data + head(b"GET", "/b", []), timeout=5)
    assert [r[0] for r in resps] == [200], resps
    assert resps[0][1].get("connection") == "close", resps[0][1]
    assert closed and rest == b"", "the connection stayed open after Connection: close"
    assert model.last()["path"] == "/a"


def test_expect_is_read_as_one_list(proxy, model):
    before = model.count()
    refused(proxy.listen_port, head(b"POST", PREDICT, [
        b"Content-Type: application/json", b"Content-Length: %d" % len(BODY),
        b"Expect: 100-continue", b"Expect: teapot"]) + BODY, 417)
    assert model.count() == before
    resps, _, _ = exchange(proxy.listen_port, head(b"POST", PREDICT, [
        b"Content-Type: application/json", b"Content-Length: %d" % len(BODY),
        b"Expect: 100-continue", b"Expect: 100-Continue", b"Connection: close"]) + BODY)
    assert [r[0] for r in resps] == [200], resps


# --------------------------------------------------------------------------- forwarding


def forwarded(p, model, name, value, path="/fwd"):
    """GET path with the header; returns the headers the model server saw."""
    data = head(b"GET", path, [name + b": " + value, b"Connection: close"])
    resps, _, _ = exchange(p.listen_port, data)
    assert [r[0] for r in resps] == [200], (name, len(value), resps)
    last = model.last()
    assert last["path"] == path
    return last["headers"]


def test_long_headers_are_forwarded_whole(proxy, model):
    """Every header predcache accepts (up to max_header_bytes, 16k by default) reaches the
    model server whole: none is dropped or cut for its length."""
    auth = b"Bearer " + b"a" * (9 * 1024)
    got = forwarded(proxy, model, b"Authorization", auth)
    assert got.get("authorization") == auth.decode(), len(got.get("authorization", ""))
    cookie = b"; ".join(b"c%d=%s" % (i, b"v" * 100) for i in range(120))  # ~12 KB
    assert 12 * 1024 <= len(cookie) < 15 * 1024
    got = forwarded(proxy, model, b"Cookie", cookie)
    assert got.get("cookie") == cookie.decode(), len(got.get("cookie", ""))
    # the largest value that fits the head, on a POST that is keyed and cached
    request_line_and_host = len(b"GET /fwd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n")
    room = 16 * 1024 - request_line_and_host - len(b"X-Big: \r\n\r\n")
    got = forwarded(proxy, model, b"X-Big", b"b" * room)
    assert got.get("x-big") == "b" * room, len(got.get("x-big", ""))
    refused(proxy.listen_port, head(b"GET", "/fwd", [b"X-Big: " + b"b" * (room + 1),
                                                     b"Connection: close"]), 431)


def test_long_headers_forwarded_with_a_larger_limit(start_predcache, model):
    p = start_predcache(conf={"server": {"max_header_bytes": "64k"}})
    value = b"x" * (40 * 1024)
    got = forwarded(p, model, b"X-Long", value)
    assert got.get("x-long") == value.decode(), len(got.get("x-long", ""))
    r = p.post(PREDICT, json_body={"instances": ["long-auth"]},
               headers={"Authorization": "Bearer " + "t" * 20000})
    assert r.status_code == 200, r.text[:200]
    assert model.last()["headers"].get("authorization") == "Bearer " + "t" * 20000


@pytest.mark.parametrize("name", [b"X_Foo", b"Content_Length", b"Transfer_Encoding",
                                  b"Authorization_", b"_", b"x_forwarded_for",
                                  b"X-Api_Key"])
def test_header_names_with_underscores_are_not_forwarded(proxy, model, name):
    data = head(b"POST", "/predict", [name + b": 5", b"X-Kept: yes", b"Connection: close",
                                      b"Content-Type: application/json",
                                      b"Content-Length: 2"]) + b"{}"
    resps, _, _ = exchange(proxy.listen_port, data)
    assert [r[0] for r in resps] == [200], resps
    got = model.last()["headers"]
    assert got.get("x-kept") == "yes"
    assert not [k for k in got if "_" in k], got
    assert got.get("content-length") == "2"  # the body's own framing, not the client's


def test_underscore_names_cannot_reframe_the_body(proxy, model):
    """Content_Length and Transfer_Encoding are no framing headers to predcache; the body
    is framed by Content-Length and forwarded whole, with its own length only."""
    body = b'{"instances": ["us"]}'
    data = head(b"POST", PREDICT, [b"Content-Type: application/json",
                                   b"Content-Length: %d" % len(body), b"Content_Length: 3",
                                   b"Transfer_Encoding: chunked", b"Connection: close"]) + body
    resps, _, _ = exchange(proxy.listen_port, data)
    assert [r[0] for r in resps] == [200], resps
    last = model.last()
    assert last["body"] == body.decode()
    assert "content_length" not in last["headers"] and "transfer_encoding" not in last["headers"]


def test_repeated_end_to_end_headers_pass_on(proxy, model):
    """The list semantics stop at framing: other repeated headers pass on as sent (the
    model server's record keeps the last line of a name)."""
    data = head(b"GET", "/rep", [b"X-Rep: 1", b"X-Rep: 2", b"Connection: close"])
    resps, _, _ = exchange(proxy.listen_port, data)
    assert [r[0] for r in resps] == [200], resps
    assert model.last()["headers"].get("x-rep") == "2"


# --------------------------------------------------------------------------- fuzz findings


@pytest.mark.parametrize("data", [
    # a bare CR in a chunk extension: a reader that ends lines at CR reads other chunks
    head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) +
    b"%x;a\rb\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
    head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) +
    b"%x;\x01\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
    # trailer lines are field lines, however little predcache does with them
    head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) + CHUNKED_BODY[:-2] +
    b"not a field\r\n\r\n",
    head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) + CHUNKED_BODY[:-2] +
    b" folded: x\r\n\r\n",
    head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) + CHUNKED_BODY[:-2] +
    b"X-T: a\rb\r\n\r\n",
    # a control byte in an absolute-form target's authority was dropped with it, unseen
    b"GET http://h\x01st/v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n",
], ids=["cr-in-chunk-ext", "ctl-in-chunk-ext", "trailer-no-colon", "trailer-folded",
        "cr-in-trailer", "ctl-in-authority"])
def test_reader_findings_are_400(proxy, model, data):
    before = model.count()
    refused(proxy.listen_port, data, 400)
    assert model.count() == before


def test_trailers_over_the_head_limit_are_431(start_predcache, model):
    p = start_predcache(conf={"server": {"max_header_bytes": "1k"}})
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 100) for i in range(10))
    refused(p.listen_port, head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) +
            CHUNKED_BODY[:-2] + trailers + b"\r\n", 431)


def test_chunk_lines_over_4096_bytes_are_400(proxy, model):
    ext = b";" + b"e" * 4100
    refused(proxy.listen_port, head(b"POST", PREDICT, [b"Transfer-Encoding: chunked"]) +
            b"%x%s\r\n%s\r\n0\r\n\r\n" % (len(BODY), ext, BODY), 400)
    # just under: read
    ext = b";" + b"e" * 4000
    data = head(b"POST", PREDICT, [b"Transfer-Encoding: chunked", b"Connection: close",
                                   b"Content-Type: application/json"])
    resps, _, _ = exchange(proxy.listen_port, data + b"%x%s\r\n%s\r\n0\r\n\r\n" % (
        len(BODY), ext, BODY))
    assert [r[0] for r in resps] == [200], resps


# --------------------------------------------------------------------------- Host


@pytest.mark.parametrize("data", [
    b"GET /v1/models/m HTTP/1.1\r\n\r\n",
    b"GET /v1/models/m HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /v1/models/m HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
    b"GET /v1/models/m HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /v1/models/m HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET /v1/models/m HTTP/1.1\r\nHost: evil/path\r\n\r\n",
], ids=["missing", "twice", "twice-any-case", "twice-1.0", "space", "slash"])
def test_host_is_one_and_valid(proxy, model, data):
    """RFC 9112 3.2: an HTTP/1.1 request without Host, any request with two, or with an
    invalid one, is 400 and close; nothing reaches the model server."""
    refused(proxy.listen_port, data, 400)
    assert model.count() == 0
    alive(proxy)


def test_http10_without_host_is_read(proxy, model):
    resps, _, _ = exchange(proxy.listen_port, b"GET /v1/models/m HTTP/1.0\r\n\r\n", timeout=5)
    assert resps and resps[0][0] == 200, resps
