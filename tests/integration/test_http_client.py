"""[backend] http_client: predcache's own HTTP/1.1 client (auto, for http:// to an address)
and libcurl (curl) answer every request with the model's answer to that request, over
kept-alive connections, and refuse a model server answer that is not HTTP the same way."""

import socket
import threading

import pytest

from conftest import free_port
from oracle import Oracle, predict_request, run_load


def bodies(n):
    """n distinct predict bodies, some of them large (a request the socket does not take in
    one write), each sent twice: a miss, then a hit or a coalesced wait."""
    out = []
    for i in range(n):
        pad = "x" * (300000 if i % 10 == 0 else i * 7)
        doc = {"instances": [{"id": i, "pad": pad}]}
        out.append(predict_request("/v1/models/m:predict", doc))
    return out + out


@pytest.mark.parametrize("client", ["auto", "curl"])
def test_every_answer_is_the_model_answer_to_its_own_request(start_predcache, model, client):
    p = start_predcache(conf={"backend": {"http_client": client}})
    oracle = Oracle("http_client = %s" % client)
    results = run_load(p.url(), bodies(120), 8, oracle)
    oracle.assert_clean()
    assert len(results) == 240
    assert all(r.status == 200 for r in results), [r for r in results if r.status != 200][:3]
    assert model.count() == 120  # one model call per distinct body


class RawBackend:
    """Answers every request with the bytes given, on a fresh connection each time."""

    def __init__(self, answer):
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                while len(body) < length:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                c.sendall(self.answer)

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.sock.close()
        self.thread.join(5)


@pytest.mark.parametrize("client", ["auto", "curl"])
def test_a_header_that_would_split_the_answer_is_a_502(start_predcache, client):
    """A CR inside a header value would end the client's header line early and start
    another (a header of the model server's making, or an answer of its own)."""
    bad = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"X-Evil: a\rSet-Cookie: session=stolen\r\nContent-Length: 2\r\n"
                     b"Connection: close\r\n\r\n{}")
    try:
        p = start_predcache(conf={"backend": {"http_client": client}}, backend_url=bad.url())
        r = p.post("/v1/models/m:predict", json_body={"instances": [1]})
        assert r.status_code == 502
        assert "control character in a header field" in r.json()["error"]
        assert "session=stolen" not in r.headers.get("Set-Cookie", "")
        for v in r.headers.values():
            assert "\r" not in v and "\n" not in v
    finally:
        bad.close()


@pytest.mark.parametrize("client", ["auto", "curl"])
def test_an_answers_headers_after_interim_ones_and_hop_by_hop_ones(start_predcache, client):
    """Each client keeps the final answer's end-to-end headers, in order, and drops the
    interim answers' headers, the hop-by-hop ones and those its Connection header names,
    however many come before them (their strings are held per answer, not per header)."""
    interim = b"".join(b"HTTP/1.1 100 Continue\r\nX-Interim-%d: %s\r\n\r\n" % (i, b"i" * 300)
                       for i in range(3))
    dropped = b"".join(b"X-Drop-%d: %s\r\n" % (i, b"d" * 200) for i in range(40))
    raw = (interim + b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
           b"Connection: close, " + b", ".join(b"X-Drop-%d" % i for i in range(40)) + b"\r\n"
           + dropped + b"Keep-Alive: timeout=5\r\nX-Kept-A: a\r\nX-Kept-B: " + b"b" * 900
           + b"\r\nContent-Length: 2\r\n\r\n{}")
    backend = RawBackend(raw)
    try:
        p = start_predcache(conf={"backend": {"http_client": client}},
                            backend_url=backend.url())
        r = p.post("/v1/models/m:predict", json_body={"instances": [1]})
        assert r.status_code == 200, r.text
        assert r.headers.get("X-Kept-A") == "a"
        assert r.headers.get("X-Kept-B") == "b" * 900
        names = {k.lower() for k in r.headers}
        assert not any(n.startswith("x-interim") or n.startswith("x-drop") for n in names), names
        assert "keep-alive" not in names, names
    finally:
        backend.close()


def _loopback_name():
    """A host name of this machine that resolves to 127.0.0.1, other than localhost."""
    name = socket.gethostname()
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET)}
    except OSError:
        return None
    return name if addrs == {"127.0.0.1"} and name != "localhost" else None


def test_a_url_with_a_host_name_goes_through_curl(start_predcache, model):
    """auto: a host name is resolved by libcurl, not by the own client (which takes
    addresses only, and localhost). Which client answered shows in the words of a refused
    connection's 502."""
    name = _loopback_name()
    if name is None:
        pytest.skip("no host name of this machine resolves to 127.0.0.1 alone")
    p = start_predcache(backend_url=model.url().replace("127.0.0.1", name))
    oracle = Oracle("host %s" % name)
    run_load(p.url(), bodies(5), 2, oracle)
    oracle.assert_clean()
    port = free_port()
    for host, words in ((name, "Failed to connect"), ("localhost", "could not connect"),
                        ("127.0.0.1", "could not connect")):
        q = start_predcache(backend_url="http://%s:%d" % (host, port))
        r = q.post("/v1/models/m:predict", json_body={"instances": [1]})
        assert r.status_code == 502
        assert words in r.json()["error"], (host, r.json())


def test_a_model_server_that_is_not_listening_is_a_502(start_predcache):
    port = free_port()
    p = start_predcache(backend_url="http://127.0.0.1:%d" % port)
    r = p.post("/v1/models/m:predict", json_body={"instances": [1]})
    assert r.status_code == 502
    assert "could not connect to the model server at 127.0.0.1:%d" % port in r.json()["error"]
