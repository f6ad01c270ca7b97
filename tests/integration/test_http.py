"""predcache's own HTTP/1.1 server, spoken to over raw sockets: framing, pipelining,
Expect, versions, slow and vanishing clients."""

import json
import socket
import threading
import time

from conftest import wait_for

PREDICT = "/v1/models/m:predict"


def raw(port, data, timeout=10.0, read_until_close=True):
    """Sends bytes, returns everything the server sends until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
            if not read_until_close and b"\r\n\r\n" in out:
                break
        return out
    finally:
        s.close()


def split_responses(data):
    """Splits a byte stream of responses with Content-Length bodies."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        n = int(headers.get("content-length", "0"))
        out.append((lines[0].decode(), headers, rest[:n]))
        data = rest[n:]
    return out


def post_bytes(path, body, extra=b"", version=b"HTTP/1.1"):
    return (b"POST " + path.encode() + b" " + version + b"\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n" + extra + b"\r\n" + body)


def test_chunked_request_body_is_keyed_like_a_plain_one(proxy, model):
    body = b'{"instances": [[1, 2, 3]]}'
    chunked = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n" + body[:5] + b"\r\n" + ("%x" % (len(body) - 5)).encode() +
               b";ext=1\r\n" + body[5:] + b"\r\n0\r\nX-Trailer: 1\r\n\r\n")
    (status, headers, got), = split_responses(raw(proxy.listen_port, chunked))
    assert status.startswith("HTTP/1.1 200"), status
    assert headers["x-cache"] == "MISS"
    assert json.loads(model.last()["body"]) == json.loads(body)
    wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 1, what="store")
    r = proxy.post(PREDICT, body=body)
    assert r.headers["X-Cache"] == "HIT"
    assert r.content == got
    assert model.count(PREDICT) == 1


def test_pipelined_requests_answered_in_order(proxy, model):
    reqs = b"".join(post_bytes(PREDICT, json.dumps({"instances": [i]}).encode())
                    for i in range(5))
    reqs += b"GET /v1/models/m HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    resps = split_responses(raw(proxy.listen_port, reqs))
    assert len(resps) == 6
    for i, (status, headers, body) in enumerate(resps[:5]):
        assert status.startswith("HTTP/1.1 200")
        assert headers["x-cache"] == "MISS"
        assert json.loads(body)["call"] == i + 1  # the model saw them in order
    assert resps[5][1].get("connection") == "close"


def test_expect_100_continue(proxy):
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    try:
        body = b'{"instances": ["expect"]}'
        s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
                  b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        interim = s.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        s.sendall(body + b"")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
    finally:
        s.close()


def test_expect_with_oversized_length_is_413_before_the_body(start_predcache):
    p = start_predcache(conf={"server": {"max_body_bytes": "1k"}})
    out = raw(p.listen_port, b"POST /predict HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
                             b"Content-Length: 5000\r\n\r\n")
    (status, headers, body), = split_responses(out)
    assert status.startswith("HTTP/1.1 413")
    assert "error" in json.loads(body)


def test_http10_gets_http10_answer_and_close(proxy):
    out = raw(proxy.listen_port, post_bytes(PREDICT, b'{"instances":[10]}', version=b"HTTP/1.0"))
    (status, headers, body), = split_responses(out)
    assert status.startswith("HTTP/1.0 200")
    assert headers.get("connection") == "close"


def test_framing_errors_are_json(proxy):
    cases = [
        (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
         b"abcd", "400"),
        (b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", "400"),
        (b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
        (b"GET / HTTP/2.0\r\nHost: t\r\n\r\n", "505"),
        (b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost: t\r\n folded\r\n\r\n", "400"),
        (b"GET /a\x01b HTTP/1.1\r\nHost: t\r\n\r\n", "400"),
        (b"POST /predict HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
        (b"GET / HTTP/1.1\r\nExpect: teapot\r\n\r\n", "417"),
    ]
    for request, code in cases:
        (status, headers, body), = split_responses(raw(proxy.listen_port, request))
        assert status.split()[1] == code, (request, status)
        assert headers["content-type"] == "application/json"
        assert json.loads(body)["error"]
    assert proxy.get("/v1/models/m").status_code == 200  # still serving


def test_slow_client_gets_408(start_predcache):
    p = start_predcache(conf={"server": {"idle_timeout_ms": 300}})
    out = raw(p.listen_port, b"POST /predict HTTP/1.1\r\nHost: t\r\n", timeout=10)
    (status, headers, body), = split_responses(out)
    assert status.startswith("HTTP/1.1 408")
    assert "error" in json.loads(body)


def test_idle_keepalive_connection_closed_silently(start_predcache):
    p = start_predcache(conf={"server": {"idle_timeout_ms": 300}})
    t0 = time.monotonic()
    assert raw(p.listen_port, b"", timeout=10) == b""
    assert time.monotonic() - t0 < 9  # closed by predcache, not by our own timeout


def test_client_leaving_early_still_stores_the_answer(proxy, model):
    model.control(delay_ms=500)
    body = b'{"instances": ["leaver"]}'
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=5)
    s.sendall(post_bytes(PREDICT, body))
    time.sleep(0.1)
    s.close()  # gone before the model answers
    wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 1, what="store after leave")
    model.control()
    r = proxy.post(PREDICT, body=body)
    assert r.headers["X-Cache"] == "HIT"
    assert model.count(PREDICT) == 1
    assert proxy.metric("predcache_in_flight") == 0


def test_too_many_connections_gets_503(start_predcache):
    p = start_predcache(conf={"server": {"max_connections": 2}})
    held = [socket.create_connection(("127.0.0.1", p.listen_port), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)
        (status, headers, body), = split_responses(
            raw(p.listen_port, b"GET /v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n"))
        assert status.startswith("HTTP/1.1 503")
        assert "error" in json.loads(body)
    finally:
        for s in held:
            s.close()
    wait_for(lambda: p.get("/v1/models/m").status_code == 200, what="serving again")


def test_half_closed_client_still_gets_its_answer(proxy, model):
    """A client that shuts its sending side after the request (nc -N, some HTTP/1.0
    clients) still reads the answer."""
    model.control(delay_ms=200)
    s = socket.create_connection(("127.0.0.1", proxy.listen_port), timeout=10)
    try:
        s.sendall(post_bytes(PREDICT, b'{"instances": ["half"]}'))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    (status, headers, body), = split_responses(data)
    assert status.startswith("HTTP/1.1 200"), data[:200]
    assert headers["x-cache"] == "MISS"
    assert json.loads(body)["predictions"]


def test_head_passthrough_keeps_the_backend_length(proxy, model):
    get = proxy.get("/v1/models/m/metadata")
    out = raw(proxy.listen_port,
              b"HEAD /v1/models/m/metadata HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert rest == b""
    lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    assert lengths == [b"Content-Length: %d" % len(get.content)], head


def test_trickling_client_gets_408_at_the_request_deadline(start_predcache):
    """The idle timeout only bounds silence; a request must also arrive whole within
    request_timeout_ms, so a client sending a byte now and then cannot hold a slot."""
    p = start_predcache(conf={"server": {"idle_timeout_ms": 1000, "request_timeout_ms": 1500}})
    s = socket.create_connection(("127.0.0.1", p.listen_port), timeout=10)
    data = b""
    try:
        t0 = time.monotonic()
        for ch in b"POST /predict HTTP/1.1\r\nHost: t\r\nX-Slow: abcdefghijklmnop":
            try:
                s.sendall(bytes([ch]))
            except OSError:
                break
            time.sleep(0.3)
            if time.monotonic() - t0 > 6:
                break
        s.settimeout(5)
        while True:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert b"not received in time" in data


def test_requests_refused_by_the_http_layer_are_logged_and_counted(proxy):
    before = proxy.metric("predcache_requests_total", cache="error")
    raw(proxy.listen_port, b"GARBAGE\r\n\r\n")
    raw(proxy.listen_port, b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999\r\n\r\n")
    wait_for(lambda: proxy.metric("predcache_requests_total", cache="error") == before + 2,
             what="two errors counted")
    lines = [l for l in proxy.access_lines() if "cache=ERROR" in l]
    assert any("status=400" in l and "method=-" in l for l in lines), lines
    assert any("status=413" in l and "method=POST path=/predict" in l for l in lines), lines


def test_answers_are_written_at_once(start_predcache, model):
    """An answer that fits the client's socket goes out from the handler, without waiting
    for a write event: a client reading normally sees none counted as queued."""
    p = start_predcache()
    for i in range(20):
        r = p.get("/v1/models/m/metadata?i=%d" % i)  # forwarded, answered on keep-alive
        assert r.status_code == 200
        r = p.post("/v1/models/m:predict", json_body={"instances": [i]})
        assert r.status_code == 200
    assert p.metric("predcache_answers_queued_total") == 0


def read_answers(s, n):
    """n answers read from s in order, each (head, body), framed by Content-Length."""
    data, out = b"", []
    while len(out) < n:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "closed after %d of %d answers" % (len(out), n)
            data += chunk
        head, data = data.split(b"\r\n\r\n", 1)
        length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                      if l.lower().startswith(b"content-length:")][0])
        while len(data) < length:
            chunk = s.recv(65536)
            assert chunk, "closed in the body of answer %d" % len(out)
            data += chunk
        out.append((head, data[:length]))
        data = data[length:]
    assert data == b"", "bytes after the last answer: %r" % data[:200]
    return out


def stored_hit(p, model, doc, pad):
    """The model answers with a prediction of pad bytes; doc's answer, once stored, as a
    HIT gives it (its body)."""
    model.control(body=json.dumps({"predictions": ["p" * pad]}))
    for _ in range(50):
        r = p.post("/v1/models/m:predict", json_body=doc)
        assert r.status_code == 200
        if r.headers["X-Cache"] == "HIT":
            return r.content
        time.sleep(0.02)
    raise AssertionError("never a HIT")


def predict_bytes(doc, request_id=b""):
    body = json.dumps(doc).encode()
    rid = b"X-Request-Id: %s\r\n" % request_id if request_id else b""
    return (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
            b"application/json\r\n%sContent-Length: %d\r\n\r\n" % (rid, len(body))) + body


def unread_socket(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(60)
    s.connect(("127.0.0.1", p.listen_port))
    return s


def check_answers(answers, want, what):
    for k, (head, got) in enumerate(answers):
        assert head.startswith(b"HTTP/1.1 200 "), (what, k, head)
        assert b"\r\nX-Cache: HIT\r\n" in head, (what, k, head)
        assert got == want, (what, k, got[:200], want[:200])


def test_answers_stay_whole_wherever_the_socket_stops_taking_them(start_predcache, model):
    """A client that reads no answer until it has sent all its requests, more answer bytes
    than the sockets between hold (about 4 MB here).

    One request at a time, each sent once the one before has been answered: each answer
    goes from predcache's memory straight to the socket while the socket takes it whole;
    the one the socket takes in part is finished from the output buffer (counted in
    predcache_answers_queued_total), and the requests after it wait their turn. Large
    answers (the cut falls in a body), then answers that are nearly all head (the cut falls
    in a head about 19 times in 20). Then thousands of small answers sent back to back:
    answers to pipelined requests go through the output buffer, the others straight. Every
    answer arrives whole, in order."""
    p = start_predcache(conf={"server": {"workers": "1"}})
    queued = p.metric("predcache_answers_queued_total")
    for rnd, pad in enumerate([100000, 130001, 170003]):
        doc = {"instances": [rnd, "one at a time"]}
        want = stored_hit(p, model, doc, pad)
        s = unread_socket(p)
        n = (6 << 20) // len(want)
        for _ in range(n):
            s.sendall(predict_bytes(doc))
            time.sleep(0.005)  # a 100 KB hit is answered well within this
        check_answers(read_answers(s, n), want, "one at a time, round %d" % rnd)
        s.close()
    # a 128-byte request id echoed, a body of 22 bytes
    for rnd in range(3):
        doc = {"instances": [rnd, "heads"]}
        want = stored_hit(p, model, doc, 1)
        s = unread_socket(p)
        rid = b"%d" % rnd + b"r" * 127
        n = (8 << 20) // (len(want) + 470)
        for _ in range(n):
            s.sendall(predict_bytes(doc, rid))
            time.sleep(0.0002)
        answers = read_answers(s, n)
        check_answers(answers, want, "heads, round %d" % rnd)
        assert all(b"\r\nX-Request-Id: %s\r\n" % rid in h for h, _ in answers)
        s.close()
    # Each round cut one answer written straight to the socket, unless a request came in
    # before the answer to the one before it was written (then the cut was in an answer
    # written from the output buffer, which is not counted): not in every round.
    assert p.metric("predcache_answers_queued_total") >= queued + 3
    for rnd, pad in enumerate([1, 90, 700]):
        doc = {"instances": [rnd, "back to back"]}
        want = stored_hit(p, model, doc, pad)
        s = unread_socket(p)
        n = (6 << 20) // (len(want) + 300)
        sender = threading.Thread(target=s.sendall, args=(predict_bytes(doc) * n,))
        sender.start()
        time.sleep(1)
        check_answers(read_answers(s, n), want, "back to back, round %d" % rnd)
        sender.join(30)
        s.close()


def test_an_answer_a_stalled_client_cannot_take_is_finished_later(start_predcache, model):
    big = "x" * (8 * 1024 * 1024)
    model.control(body=json.dumps({"predictions": [big]}))
    p = start_predcache()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect(("127.0.0.1", p.listen_port))
    s.sendall(b"GET /v1/models/m/metadata HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_for(lambda: p.metric("predcache_answers_queued_total") == 1, what="a queued answer")
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        chunk = s.recv(1 << 20)
        assert chunk, "closed after %d of %d bytes" % (len(body), length)
        body += chunk
    s.close()
    assert json.loads(body) == {"predictions": [big]}
