"""Hostile clients and a hostile model server.

Truncated and malformed HTTP, oversized heads, bad JSON (invalid, deeply nested, huge
numbers, non-UTF-8), chunked bodies, pipelining, slowloris (Debian's slowhttptest), clients
that vanish mid-request and mid-response, and a model server (tests/fixtures/bad_backend.py)
that answers garbage, a truncated body, an RST, 1 MB of headers, a body one byte at a time,
or nothing at all.

Every test checks the status and the JSON {"error"} body where predcache answers, that
predcache is still alive and serving afterwards, that requests in flight return to 0, and,
where it matters, that an unrelated client running at the same time was not affected. A
crash or a sanitizer/valgrind report fails the test in the harness's teardown (run with
PREDCACHE_BIN=build-asan/predcache or scripts/valgrind-predcache).
"""

import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time

import pytest
import requests

from conftest import (PYTHON, ROOT, GiveUp, canonical, expected_key, make_entry,
                      read_text, stop_process, wait_for)
from oracle import Oracle

PREDICT = "/v1/models/m:predict"
STATUS = "/v1/models/m"  # a pass-through route (model status)
# The bystander's own model ("side" backend, see bystander_proxy): its requests leave the
# model server under test, its counters, last request and /_control alone.
SIDE_PREDICT = "/v1/models/bystander:predict"
SIDE_STATUS = "/v1/models/bystander"
BAD_BACKEND = os.path.join(ROOT, "tests", "fixtures", "bad_backend.py")
SLOWHTTPTEST = shutil.which("slowhttptest")


# --------------------------------------------------------------------------- raw HTTP


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def rst_close(s):
    """Closes with an RST (SO_LINGER 0) instead of a FIN."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def parse_one(buf):
    """(response, rest) when buf starts with a complete response, else (None, buf).
    A response is (status, headers, body); bodies are framed by Content-Length."""
    head, sep, rest = buf.partition(b"\r\n\r\n")
    if not sep:
        return None, buf
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status == 100:
        return (status, headers, b""), rest
    n = int(headers.get("content-length", "0"))
    if len(rest) < n:
        return None, buf
    return (status, headers, rest[:n]), rest[n:]


def read_responses(s, count=None, timeout=10.0):
    """Reads responses until count of them arrived, the peer closed, or timeout.
    Returns (responses, leftover bytes, closed)."""
    out, buf, closed = [], b"", False
    deadline = time.monotonic() + timeout
    while count is None or len(out) < count:
        resp, buf = parse_one(buf)
        if resp is not None:
            if resp[0] != 100:
                out.append(resp)
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            chunk = s.recv(1 << 20)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
    return out, buf, closed


def exchange(port, data, count=1, timeout=10.0):
    """Sends data on a fresh connection; returns (responses, leftover, closed)."""
    s = connect(port, timeout)
    try:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # predcache answered and closed before reading everything: read the answer
        return read_responses(s, count, timeout)
    finally:
        s.close()


def one(port, data, timeout=10.0):
    """The single response to data (fails when there is none)."""
    resps, rest, closed = exchange(port, data, 1, timeout)
    assert resps, "no answer to %r (closed=%s, got %r)" % (data[:120], closed, rest[:200])
    return resps[0]


def post_bytes(path, body, ctype=b"application/json", extra=b"", close=False):
    if isinstance(path, str):
        path = path.encode()
    h = b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n"
    if ctype is not None:
        h += b"Content-Type: " + ctype + b"\r\n"
    if close:
        h += b"Connection: close\r\n"
    return h + b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n" + body


def get_bytes(path, close=False, extra=b""):
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" +
            (b"Connection: close\r\n" if close else b"") + extra + b"\r\n")


def chunked_post(path, chunks, ext=b"", trailers=b"", ctype=b"application/json"):
    out = (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: " + ctype +
           b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    for c in chunks:
        out += b"%x" % len(c) + ext + b"\r\n" + c + b"\r\n"
    return out + b"0\r\n" + trailers + b"\r\n"


def assert_error(resp, status, what=""):
    code, headers, body = resp
    assert code == status, "%s: expected %d, got %d %r" % (what, status, code, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), (what, headers)
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], \
        (what, doc)
    assert "x-cache" not in headers and "x-cache-key" not in headers, (what, headers)


def assert_json_error(r, status, what=""):
    """The same for a requests.Response."""
    assert r.status_code == status, "%s: expected %d, got %d %r" % (
        what, status, r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/json"), (what, r.headers)
    doc = r.json()
    assert isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"], \
        (what, doc)
    assert "X-Cache" not in r.headers, (what, r.headers)


def predictions_for(instances):
    """The test model server's deterministic predictions."""
    return [hashlib.sha256(canonical(x).encode("utf-8")).hexdigest()[:16] for x in instances]


# --------------------------------------------------------------------------- liveness


def client_sockets(pid, port):
    """How many accepted connections on port the process still holds (any TCP state but
    LISTEN): sockets in /proc/net/tcp with that local port whose inode is one of pid's fds."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and state != "0A":
                inodes.add(inode)
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            n += 1
    return n


def wait_in_flight_zero(p, timeout=10.0):
    wait_for(lambda: p.metric("predcache_in_flight") == 0, timeout=timeout,
             what="predcache_in_flight back to 0 (now %s)" % p.metric("predcache_in_flight"))


def assert_alive(p, model=None, timeout=5.0):
    """predcache runs, answers /health on admin, and serves a normal request quickly."""
    assert p.proc.poll() is None, "predcache exited with %s; stderr:\n%s" % (
        p.proc.returncode, p.stderr_text()[-3000:])
    r = requests.get(p.admin("/health"), timeout=timeout)
    assert r.status_code == 200, r.text
    if model is not None:
        t0 = time.monotonic()
        r = p.get(STATUS, timeout=timeout)
        assert r.status_code == 200, r.text[:300]
        assert r.json()["model_version_status"][0]["state"] == "AVAILABLE"
        r = p.post(PREDICT, json_body={"instances": ["alive", time.monotonic()]},
                   timeout=timeout)
        assert r.status_code == 200 and r.headers.get("X-Cache") in ("MISS", "BYPASS"), \
            (r.status_code, r.headers, r.text[:300])
        assert time.monotonic() - t0 < timeout


class Bystander:
    """An unrelated client: one request every interval on a fresh connection, from a
    thread, while something hostile happens. Every one of them must succeed, and every
    predict answer must be the model's answer to that very request (the integrity
    oracle, tests/integration/oracle.py, judges it: 0 wrong answers)."""

    def __init__(self, p, interval=0.05, timeout=5.0, predict=True, get_check=None,
                 predict_path=PREDICT, status_path=STATUS):
        self.p, self.interval, self.timeout, self.predict = p, interval, timeout, predict
        self.get_check = get_check or (lambda r: "model_version_status" in r.json())
        self.predict_path, self.status_path = predict_path, status_path
        self.results = []
        self.keys = set()  # the cache keys its answers named (X-Cache-Key)
        self.oracle = Oracle("bystander")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        i = 0
        while not self.stop.is_set():
            i += 1
            t0 = time.monotonic()
            try:
                if self.predict and i % 2 == 0:
                    body = json.dumps({"instances": ["bystander", i % 7]})
                    r = self.p.post(self.predict_path, body=body, timeout=self.timeout)
                    reason = self.oracle.check("POST", self.predict_path, body, {},
                                               r.status_code, r.content,
                                               r.headers.get("X-Cache"))
                    ok = r.status_code == 200 and reason is None
                    if "X-Cache-Key" in r.headers:
                        self.keys.add(r.headers["X-Cache-Key"])
                else:
                    r = self.p.get(self.status_path, timeout=self.timeout)
                    ok = r.status_code == 200 and self.get_check(r)
                self.results.append((bool(ok), r.status_code, time.monotonic() - t0,
                                     "" if ok else r.text[:200]))
            except Exception as e:  # noqa: BLE001 (recorded, asserted below)
                self.results.append((False, None, time.monotonic() - t0, repr(e)))
            self.stop.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        deadline = time.monotonic() + self.timeout
        while len(self.results) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.stop.set()
        self.thread.join(timeout=self.timeout + 5)
        if exc[0] is None:
            self.check()

    def check(self, at_least=2, slowest_s=None):
        """Every request succeeded and every answer was right; slowest_s (when given): none
        took that long."""
        bad = [r for r in self.results if not r[0]]
        print(self.oracle.report())
        assert self.oracle.wrong == 0, "%s\n%s" % (self.oracle.report(),
                                                   "\n".join(self.oracle.samples))
        assert not bad, "the bystander client was affected: %d/%d failed, e.g. %s" % (
            len(bad), len(self.results), bad[:5])
        assert len(self.results) >= at_least, "bystander made only %d requests" % len(
            self.results)
        if slowest_s is not None:
            slow = max(r[2] for r in self.results)
            print("bystander: %d requests, slowest %.3f s" % (len(self.results), slow))
            assert slow < slowest_s, "a bystander request took %.2f s" % slow


@pytest.fixture
def bystander_proxy(start_predcache, side_model):
    """predcache as the harness starts it, plus routes that send SIDE_PREDICT (cached) and
    SIDE_STATUS to side_model: a SideBystander on it runs next to tests that pin the
    model server's counters, its last request or its /_control behaviour."""
    return start_predcache(conf={
        "backend side": {"url": side_model.url()},
        "route side-predict": {"match": "POST " + SIDE_PREDICT, "backend": "side"},
        "route side-status": {"match": "GET " + SIDE_STATUS, "backend": "side",
                              "cache": "off"},
    })


def SideBystander(p, **kw):
    """A Bystander whose requests go to the side model (see bystander_proxy)."""
    return Bystander(p, predict_path=SIDE_PREDICT, status_path=SIDE_STATUS, **kw)


def other_keys(redis, bystander):
    """Redis keys that are not the bystander's entries."""
    return [k for k in redis.keys("*") if k not in bystander.keys]


# --------------------------------------------------------------------------- bad backend


class BadBackend:
    def __init__(self, workdir, mode, extra=()):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.mode = mode
        self.port_file = os.path.join(self.dir, "port")
        self.count_file = os.path.join(self.dir, "count")
        self.log = os.path.join(self.dir, "stderr")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, BAD_BACKEND, "--port", "0", "--port-file", self.port_file,
                 "--count-file", self.count_file, "--mode", mode] + list(extra),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise GiveUp("bad_backend exited: %s" % read_text(self.log))
            return read_text(self.port_file).strip()

        self.port = int(wait_for(ready, what="bad_backend port file"))

    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def count(self):
        text = read_text(self.count_file).strip()
        return int(text) if text else 0

    def stop(self):
        return stop_process(self.proc)


@pytest.fixture
def bad_backend(tmp_path):
    started = []

    def start(mode, extra=()):
        b = BadBackend(tmp_path / ("bad-%d" % len(started)), mode, extra)
        started.append(b)
        return b

    yield start
    for b in started:
        rc = b.stop()
        assert rc == 0, "bad_backend (%s) exited %s: %s" % (b.mode, rc, read_text(b.log))


def seed_hit(redis, instances, answer=b'{"predictions": ["seeded"]}'):
    """Stores an answer for {"instances": instances} on PREDICT straight into Redis."""
    key = expected_key(PREDICT, canonical({"instances": instances}))
    value = make_entry(key, answer)
    assert redis.command("SET", key, value) == "OK"
    return key


# =========================================================================== tests
# --------------------------------------------------------------------------- truncated


def test_truncated_heads_and_bodies_are_dropped(proxy, model):
    pieces = [
        b"G",
        b"GET /v1/mo",
        b"GET /v1/models/m HTTP/1.1",
        b"GET /v1/models/m HTTP/1.1\r\n",
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Le",
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n",
        # complete heads, truncated bodies
        post_bytes(PREDICT, b'{"instances": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}')[:-90],
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n" +
        b'{"instance',
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n10\r\n{\"instances\"",
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n5\r\n{\"ins\r\n",
        b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\nX-Trailer: 1\r\n",
    ]
    with Bystander(proxy) as bystander:
        for rst in (False, True):
            for data in pieces:
                s = connect(proxy.listen_port)
                s.sendall(data)
                time.sleep(0.02)  # let predcache read it before the close
                if rst:
                    rst_close(s)
                else:
                    s.close()
        # connections that send nothing at all
        for i in range(50):
            s = connect(proxy.listen_port)
            rst_close(s) if i % 2 else s.close()
        time.sleep(0.2)
    bystander.check()
    # nothing incomplete reached the model server: only the bystander's requests did
    assert model.count() <= len(bystander.results)
    wait_in_flight_zero(proxy)
    assert proxy.metric("predcache_requests_total", cache="error") == 0
    assert_alive(proxy, model)


def test_truncated_body_is_never_forwarded(proxy, model):
    s = connect(proxy.listen_port)
    s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
              b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b"0123456789")
    time.sleep(0.1)
    s.close()
    time.sleep(0.2)
    assert model.count() == 0
    wait_in_flight_zero(proxy)
    assert_alive(proxy, model)


def test_admin_port_survives_hostile_input(proxy):
    port = proxy.admin_port
    for data in (b"GET /health HTTP/1.1\r\nHo", b"\x00\x01\x02garbage\r\n\r\n",
                 b"GET /metrics HTTP/9.9\r\n\r\n", b"GET " + b"a" * 100000 + b"\r\n\r\n"):
        s = connect(port)
        try:
            s.sendall(data)
        except OSError:
            pass
        time.sleep(0.02)
        s.close()
    resp = one(port, b"BREW /health HTTP/1.1\r\nHost: t\r\n\r\n")
    assert resp[0] in (400, 405), resp
    assert requests.get(proxy.admin("/health"), timeout=5).status_code == 200
    assert requests.get(proxy.admin("/metrics"), timeout=5).status_code == 200


# --------------------------------------------------------------------------- malformed


MALFORMED = [
    # request line
    (b"\r\n\r\nGET\r\n\r\n", 400),
    (b"GET  /v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /v1/models/m  HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1 x\r\nHost: t\r\n\r\n", 400),
    (b"get /v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"G\xc3\x89T /v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET v1/models/m HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /v1/models/m HTTX/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.x\r\nHost: t\r\n\r\n", (400, 505)),  # 400 would be exact
    (b"GET /v1/models/m HTTP/3.0\r\nHost: t\r\n\r\n", 505),
    (b"GET /v1/models/m HTTP/0.9\r\nHost: t\r\n\r\n", 505),
    (b"GET /v1/models/m\r\n\r\n", 400),
    (b"GET /v1/\x7fmodels HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\rHost: t\r\n\r\n", 400),  # bare CR is not a line end
    # NUL bytes
    (b"GET /v1/models/m\x00 HTTP/1.1\r\nHost: t\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nHost: t\x00evil\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nX\x00Y: 1\r\n\r\n", 400),
    (b"\x00\x00\x00\x00\r\n\r\n", 400),
    # header names
    (b"GET /v1/models/m HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nBad(Name): x\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nX-\xff: x\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nHost : t\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\n: novalue\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
    (b"GET /v1/models/m HTTP/1.1\r\nHost: t\r\n\tfolded\r\n\r\n", 400),
    # framing
    (b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n", 400),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: +5\r\n\r\nabcde", 400),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nabcde", 400),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     400),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501),
    (b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", 400),
]


def test_malformed_requests_get_400_json(proxy, model):
    with Bystander(proxy) as bystander:
        for data, status in MALFORMED:
            resps, rest, closed = exchange(proxy.listen_port, data, count=None, timeout=5)
            assert resps, "no answer to %r" % data
            if isinstance(status, tuple):
                assert resps[0][0] in status, (data, resps[0])
                status = resps[0][0]
            assert_error(resps[0], status, repr(data))
            assert resps[0][1].get("connection") == "close", (data, resps[0][1])
            assert len(resps) == 1 and closed, (data, resps, rest)
    bystander.check()
    model_paths = set(requests.get(model.url("/_count"), timeout=5).json()["paths"])
    assert model_paths <= {STATUS, PREDICT}, model_paths  # nothing malformed got through
    wait_in_flight_zero(proxy)
    assert_alive(proxy, model)


def test_bare_lf_line_endings_are_accepted(proxy, model):
    """evbuffer's EOL_CRLF takes a bare LF as a line end: LF-only clients are served."""
    (status, headers, body), = exchange(
        proxy.listen_port, b"GET /v1/models/m HTTP/1.1\nHost: t\nConnection: close\n\n")[0]
    assert status == 200 and "model_version_status" in json.loads(body)
    req = (b"POST " + PREDICT.encode() + b" HTTP/1.1\nHost: t\nContent-Type: application/json"
           b"\r\nContent-Length: 21\n\n" + b'{"instances": ["lf"]}')
    resps, _, _ = exchange(proxy.listen_port, req + get_bytes("/lf?second=1", close=True), 2)
    assert [r[0] for r in resps] == [200, 200], resps
    assert resps[0][1]["x-cache"] == "MISS"
    assert json.loads(resps[0][2])["predictions"] == predictions_for(["lf"])
    assert json.loads(resps[1][2]) == {"path": "/lf", "query": "second=1"}
    # chunked framing with bare LFs
    req = (b"POST " + PREDICT.encode() + b" HTTP/1.1\nHost: t\nConnection: close\n"
           b"Content-Type: application/json\nTransfer-Encoding: chunked\n\n"
           b"5\n{\"ins\n10\ntances\": [\"lf\"]}\n0\n\n")
    (status, headers, body), = exchange(proxy.listen_port, req)[0]
    assert status == 200 and headers["x-cache"] in ("HIT", "COALESCED", "MISS"), headers
    assert json.loads(body)["predictions"] == predictions_for(["lf"])
    assert_alive(proxy, model)


def test_control_bytes_in_header_values(proxy, model):
    """A lone CR or other control byte inside a header value must not split the header on
    the way to the model server (header injection); RFC 9110 5.5: reject, or replace with SP."""
    injected = []
    for name, value in ((b"X-Test", b"a\rX-Injected: yes"), (b"X-Test", b"a\r\rX-Injected: 1"),
                        (b"User-Agent", b"ua\rX-Injected: 2"),
                        (b"Content-Type", b"application/json\rX-Injected: 3")):
        before = model.count()
        data = (b"POST /inject HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + name + b": " +
                value + b"\r\nContent-Length: 2\r\n\r\n{}")
        resps, _, _ = exchange(proxy.listen_port, data)
        assert resps, value
        if resps[0][0] == 400:
            assert_error(resps[0], 400, repr(value))
            continue
        if model.count() > before and "x-injected" in model.last()["headers"]:
            injected.append((value, resps[0][0], model.last()["headers"]))
    assert not injected, (
        "a bare CR in a header value reached the model server, which read a header of its "
        "own after it (header injection): %s" % injected)
    # other control bytes (not CR, LF or NUL): refused, or forwarded without harm
    for value in (b"a\x01b", b"a\x7fb", b"a\x1b[31mb", b"a\x08b"):
        resp = one(proxy.listen_port, b"GET /ctl HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                   b"X-Test: " + value + b"\r\n\r\n")
        assert resp[0] in (200, 400), (value, resp)
    assert_alive(proxy, model)


def test_oversized_request_line_is_414_and_head_431(start_predcache, model):
    p = start_predcache(conf={"server": {"max_header_bytes": "4k"}})
    with Bystander(p) as bystander:
        # line too long, newline sent
        resp = one(p.listen_port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        assert_error(resp, 414, "long request line")
        # line too long, no newline ever: answered without waiting for one
        s = connect(p.listen_port)
        try:
            s.sendall(b"GET /" + b"b" * 8000)
            resps, _, _ = read_responses(s, 1, timeout=5)
            assert resps, "no 414 for an endless request line"
            assert_error(resps[0], 414, "endless request line")
        finally:
            s.close()
        # headers too large in total
        hdrs = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 200) for i in range(30))
        resp = one(p.listen_port, b"GET /v1/models/m HTTP/1.1\r\nHost: t\r\n" + hdrs + b"\r\n")
        assert_error(resp, 431, "large head")
        # one endless header line
        s = connect(p.listen_port)
        try:
            s.sendall(b"GET /v1/models/m HTTP/1.1\r\nX-Long: " + b"c" * 8000)
            resps, _, _ = read_responses(s, 1, timeout=5)
            assert resps, "no 431 for an endless header"
            assert_error(resps[0], 431, "endless header")
        finally:
            s.close()
        # trailers of a chunked body count against the head limit
        big_trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"t" * 200) for i in range(30))
        resp = one(p.listen_port, chunked_post(PREDICT, [b'{"instances":[1]}'],
                                               trailers=big_trailers))
        assert resp[0] in (400, 431), resp
        assert_error(resp, resp[0], "large trailers")
    bystander.check()
    assert_alive(p, model)


def test_too_many_headers_is_431(proxy, model):
    def req(n):  # Host + Connection + n - 2 others = n header fields
        extra = b"".join(b"X-F%d: %d\r\n" % (i, i) for i in range(n - 2))
        return b"GET /fields HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + b"\r\n"

    # 100 fields pass (the test model server itself refuses over 100 with its own 431
    # page, and predcache adds X-Forwarded-For: what matters is that it was forwarded)
    status, headers, body = one(proxy.listen_port, req(100))
    assert status == 200 or headers.get("content-type", "").startswith("text/html"), (
        status, headers, body[:200])
    # the same on the admin port, whose answer does not depend on the model server
    extra = b"".join(b"X-F%d: %d\r\n" % (i, i) for i in range(98))
    status, _, body = one(proxy.admin_port, b"GET /health HTTP/1.1\r\nHost: t\r\n"
                          b"Connection: close\r\n" + extra + b"\r\n")
    assert status == 200, body
    assert_error(one(proxy.admin_port, b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close"
                     b"\r\n" + extra +
                     b"X-One-Too-Many: 1\r\n\r\n"), 431, "admin 101 fields")
    status, headers, body = one(proxy.listen_port, req(98))
    assert status == 200 and json.loads(body) == {"path": "/fields", "query": ""}, body[:200]
    assert_error(one(proxy.listen_port, req(101)), 431, "101 fields")
    assert_error(one(proxy.listen_port, req(5000)), 431, "5000 fields")
    assert_alive(proxy, model)


# --------------------------------------------------------------------------- JSON


def test_invalid_json_with_json_type_is_400(bystander_proxy, model, redis):
    proxy = bystander_proxy
    with SideBystander(proxy) as bystander:
        bodies = [b"", b" ", b"{", b'{"instances": [1, 2,', b"{instances: [1]}",
                  b'{"instances": [1]} trailing', b'{"instances": [1]}{"instances": [2]}',
                  b'{"instances": [01]}', b'{"instances": [1,]}', b'{"instances": [.5]}',
                  b'{"instances": [+1]}', b'{"instances": [0x10]}', b'{"instances": [TRUE]}',
                  b'{"instances": [1]} /* c */', b'{"instances": ["\\x41"]}',
                  b'{"instances": [1]}\x00', b"\xef\xbb\xbf{\"instances\": [1]}", b"nul\x00l"]
        ctypes = [b"application/json", b"application/json; charset=utf-8",
                  b"application/vnd.api+json", b"APPLICATION/JSON"]
        for i, body in enumerate(bodies):
            ctype = ctypes[i % len(ctypes)]
            resp = one(proxy.listen_port, post_bytes(PREDICT, body, ctype=ctype, close=True))
            assert_error(resp, 400, "%r as %s" % (body, ctype))
            assert b"json" in resp[2].lower(), resp
    bystander.check()
    assert model.count() == 0
    assert other_keys(redis, bystander) == []
    assert_alive(proxy, model)


def test_json_c_leniencies_never_share_a_key(proxy, model):
    """json-c reads some bodies that are not JSON (single quotes, a raw TAB in a string,
    "1.", NaN, Infinity). predcache may refuse them (400) or forward them, but a forwarded
    one must never be keyed like a different, valid body."""
    pairs = [
        (b"{'instances': [1]}", b'{"instances": [1]}'),
        (b"{\"instances\": [1], 'id': 2}", b'{"instances": [1]}'),
        (b'{"instances": [1.]}', b'{"instances": [1]}'),
        (b'{"instances": ["a\tb"]}', b'{"instances": ["a\\tb"]}'),
        (b'{"instances": [NaN]}', b'{"instances": [null]}'),
        (b'{"instances": [NaN]}', b'{"instances": ["NaN"]}'),
        (b'{"instances": [Infinity]}', b'{"instances": ["Infinity"]}'),
        (b'{"instances": [Infinity]}', b'{"instances": [1e999999]}'),
        (b'{"instances": [-Infinity]}', b'{"instances": [-1e999999]}'),
    ]
    for lenient, valid in pairs:
        r1 = proxy.post(PREDICT, body=lenient)
        if r1.status_code == 400 and "X-Cache" not in r1.headers:
            assert_json_error(r1, 400, repr(lenient))
            continue
        r2 = proxy.post(PREDICT, body=valid)
        assert r2.status_code == 200, (valid, r2.text[:200])
        assert r1.headers["X-Cache-Key"] != r2.headers["X-Cache-Key"], (
            "%r and %r share the key %s" % (lenient, valid, r1.headers["X-Cache-Key"]))
    assert_alive(proxy, model)


def test_deep_nesting(bystander_proxy, model, redis):
    """Past json-c's depth (64) a JSON-typed body is a 400 and nothing reaches the model
    server; without a JSON content type it is keyed by its bytes and forwarded."""
    proxy = bystander_proxy
    with SideBystander(proxy) as bystander:
        deep = b"[" * 10000 + b"]" * 10000
        deep_obj = b'{"instances": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"
        unbalanced = b"[" * 100000
        objects = b'{"a":' * 5000 + b"1" + b"}" * 5000
        for body in (deep, deep_obj, unbalanced, objects):
            resp = one(proxy.listen_port, post_bytes(PREDICT, body, close=True), timeout=15)
            assert_error(resp, 400, "deep %r..." % body[:20])
        assert model.count() == 0
        # 65 levels inside "instances": over the limit as well
        r = proxy.post(PREDICT, body=b'{"instances": ' + b"[" * 64 + b"]" * 64 + b"}")
        assert_json_error(r, 400, "depth 65")
        assert model.count() == 0
        # raw: the model server gives a fixed answer (it cannot parse 10000 levels itself)
        model.control(status=200, body='{"predictions": ["deep"]}')
        for body in (deep, unbalanced):
            r1 = proxy.post(PREDICT, body=body, headers={"Content-Type": "text/plain"})
            assert r1.status_code == 200, r1.text[:300]
            assert r1.headers["X-Cache"] == "MISS"
            # v2: the media type is in the key; the body (past json-c's depth) is keyed raw
            assert r1.headers["X-Cache-Key"] == expected_key(PREDICT, body, media="text/plain",
                                                             form="raw")
            assert model.last()["body"].encode() == body  # forwarded unchanged
            redis.wait_key(r1.headers["X-Cache-Key"])
            r2 = proxy.post(PREDICT, body=body, headers={"Content-Type": "text/plain"})
            assert r2.status_code == 200 and r2.headers["X-Cache"] == "HIT", r2.headers
            assert r2.content == r1.content
        assert model.count(PREDICT) == 2
        model.control()
    bystander.check()
    assert_alive(proxy, model)


def test_huge_numbers_are_forwarded_and_never_collide(bystander_proxy, model, redis):
    proxy = bystander_proxy
    with SideBystander(proxy) as bystander:
        numbers = [b"1e999999", b"2e999999", b"-1e999999", b"1e-999999", b"2e-999999",
                   b"123456789012345678901234567890", b"123456789012345678901234567891",
                   b"18446744073709551616", b"18446744073709551617", b"9223372036854775808",
                   b"-9223372036854775809", b"1.00000000000000000000000000001",
                   b"1.00000000000000000000000000002", b"1" + b"0" * 4000,
                   b"0." + b"0" * 4000 + b"1"]
        keys = {}
        for num in numbers:
            body = b'{"instances": [' + num + b"], \"id\": 1}"
            r1 = proxy.post(PREDICT, body=body)
            assert r1.status_code == 200, (num[:40], r1.status_code, r1.text[:300])
            assert r1.headers["X-Cache"] == "MISS", (num[:40], r1.headers)
            assert model.last()["body"].encode() == body, "forwarded unchanged"
            key = r1.headers["X-Cache-Key"]
            assert key not in keys, "%s and %s share the key %s" % (num[:40], keys.get(key), key)
            keys[key] = num[:40]
            redis.wait_key(key)
            r2 = proxy.post(PREDICT, body=body)
            assert r2.status_code == 200 and r2.headers["X-Cache"] == "HIT", (num[:40], r2.headers)
            assert r2.headers["X-Cache-Key"] == key and r2.content == r1.content
    bystander.check()
    assert model.count(PREDICT) == len(numbers)
    assert_alive(proxy, model)


def test_non_utf8_in_json_strings(bystander_proxy, model, redis):
    """Invalid UTF-8 inside a JSON string: a consistent answer. The test model server
    refuses it (400, passed through, never stored); a model that answers 200 gets it cached."""
    proxy = bystander_proxy
    with SideBystander(proxy) as bystander:
        bodies = [b'{"instances": ["\xff\xfe"]}', b'{"instances": ["\xc3"]}',
                  b'{"instances": ["\xed\xa0\x80"]}', b'{"instances": ["\xf4\x90\x80\x80"]}',
                  b'{"instances": ["\xc0\xaf"]}']
        for body in bodies:
            answers = [proxy.post(PREDICT, body=body) for _ in range(2)]
            first = answers[0]
            if first.status_code == 400 and "X-Cache" not in first.headers:
                # predcache's own refusal: the same both times, nothing forwarded
                for r in answers:
                    assert_json_error(r, 400, repr(body))
                continue
            for r in answers:
                assert r.status_code == 400, (body, r.status_code, r.text[:200])
                assert r.headers["X-Cache"] in ("MISS", "BYPASS"), (body, r.headers)
                assert "invalid JSON" in r.json()["error"]
        time.sleep(0.2)
        assert other_keys(redis, bystander) == [], "a model server error was stored"
        # A model server that answers 200 whatever the bytes: cached, then a HIT.
        model.control(status=200, body='{"predictions": ["bytes"]}')
        n0 = model.count(PREDICT)
        forwarded = 0
        for body in bodies:
            r1 = proxy.post(PREDICT, body=body)
            if r1.status_code == 400 and "X-Cache" not in r1.headers:
                continue  # refused by predcache: checked above
            forwarded += 1
            assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS", (body, r1.headers)
            redis.wait_key(r1.headers["X-Cache-Key"])
            r2 = proxy.post(PREDICT, body=body)
            assert r2.status_code == 200 and r2.headers["X-Cache"] == "HIT", (body, r2.headers)
            assert r2.headers["X-Cache-Key"] == r1.headers["X-Cache-Key"]
        assert model.count(PREDICT) == n0 + forwarded
        model.control()
    bystander.check()
    assert_alive(proxy, model)


def test_escapes_json_c_cannot_read_exactly(proxy, model, redis):
    """Lone surrogates and \\u0000 are keyed raw: two different such inputs never share a key."""
    model.control(status=200, body='{"predictions": ["esc"]}')
    bodies = [b'{"instances": ["\\ud800"]}', b'{"instances": ["\\udbff"]}',
              b'{"instances": ["\\udc00\\ud800"]}', b'{"instances": ["a\\u0000b"]}',
              b'{"instances": ["a\\u0000c"]}', b'{"instances": ["\\u0000"]}']
    keys = set()
    for body in bodies:
        r1 = proxy.post(PREDICT, body=body)
        assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS", (body, r1.headers)
        keys.add(r1.headers["X-Cache-Key"])
        redis.wait_key(r1.headers["X-Cache-Key"])
        r2 = proxy.post(PREDICT, body=body)
        assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content, (body, r2.headers)
    assert len(keys) == len(bodies), "distinct inputs shared a key"
    model.control()
    assert_alive(proxy, model)


def test_non_utf8_raw_body_path_and_headers(proxy, model, redis):
    raw = bytes(range(256)) * 4 + b"\xff\xfe\x00\x00"
    OCTETS = "application/octet-stream"  # v2: the media type family is in the key
    # the test model server cannot decode it: its 400 is passed through, not stored
    for _ in range(2):
        r = proxy.post(PREDICT, body=raw, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 400 and r.headers["X-Cache"] == "MISS", (r.status_code,
                                                                          r.headers)
        assert r.headers["X-Cache-Key"] == expected_key(PREDICT, raw, media=OCTETS)
    time.sleep(0.2)
    assert redis.keys("*") == []
    model.control(status=200, body='{"predictions": ["raw"]}')
    r1 = proxy.post(PREDICT, body=raw, headers={"Content-Type": "application/octet-stream"})
    assert r1.status_code == 200 and r1.headers["X-Cache"] == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = proxy.post(PREDICT, body=raw, headers={"Content-Type": "application/octet-stream"})
    assert r2.status_code == 200 and r2.headers["X-Cache"] == "HIT"
    assert r2.headers["X-Cache-Key"] == expected_key(PREDICT, raw, media=OCTETS)
    model.control()
    # non-UTF-8 in the target and in header values: forwarded, no crash
    status, headers, body = one(
        proxy.listen_port,
        b"GET /bytes/\xff\xfe?q=\xc3\x28 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"X-Bin: \xff\xfe\x80\r\nUser-Agent: \xc3\x28\r\n\r\n")
    assert status == 200, body[:200]
    last = model.last()
    assert last["method"] == "GET" and "x-bin" in last["headers"], last
    # a non-UTF-8 cacheable path
    status, headers, body = one(
        proxy.listen_port, post_bytes(b"/v1/models/\xe9:predict", b'{"instances": [1]}',
                                      close=True))
    assert status == 200, body[:200]
    assert_alive(proxy, model)


# --------------------------------------------------------------------------- chunked


def test_chunked_bodies(bystander_proxy, model, redis):
    proxy = bystander_proxy
    with SideBystander(proxy) as bystander:
        body = json.dumps({"instances": [["chunk", i] for i in range(200)]}).encode()
        # many tiny chunks, sent in small writes
        data = chunked_post(PREDICT, [body[i:i + 1] for i in range(len(body))])
        s = connect(proxy.listen_port)
        try:
            for i in range(0, len(data), 997):
                s.sendall(data[i:i + 997])
            (status, headers, got), = read_responses(s, 1)[0]
        finally:
            s.close()
        assert status == 200 and headers["x-cache"] == "MISS", (status, got[:200])
        assert model.last()["body"].encode() == body
        key = headers["x-cache-key"]
        redis.wait_key(key)
        # chunk extensions and trailers, then a second request on the same connection
        cases = [
            chunked_post(PREDICT, [body[:100], body[100:]], ext=b";name=value;flag"),
            chunked_post(PREDICT, [body], ext=b';q="quoted;ext"'),
            chunked_post(PREDICT, [body[:7], body[7:]],
                         trailers=b"X-Trailer: 1\r\nX-Other: 2\r\n"),
            chunked_post(PREDICT, [body[i:i + 1000] for i in range(0, len(body), 1000)]),
        ]
        for data in cases:
            resps, _, _ = exchange(proxy.listen_port, data + get_bytes("/after", close=True), 2)
            assert [r[0] for r in resps] == [200, 200], (data[:200], resps)
            assert resps[0][1]["x-cache"] == "HIT" and resps[0][1]["x-cache-key"] == key
            assert json.loads(resps[1][2]) == {"path": "/after", "query": ""}
        # uppercase hex sizes and leading zeros
        data = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
                b"%X\r\n" % len(body) + body + b"\r\n000\r\n\r\n")
        (status, headers, _), = exchange(proxy.listen_port, data)[0]
        assert status == 200 and headers["x-cache"] == "HIT"
    bystander.check()
    assert model.count(PREDICT) == 1
    assert_alive(proxy, model)


def test_bad_chunked_bodies_are_400(proxy, model):
    head = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    j = b'{"instances":[5]}'  # 0x11 bytes of valid JSON: a 400 can only be the framing's
    bad = [b"zz\r\n", b"\r\n", b";ext\r\n", b"g1\r\n" + j + b"\r\n0\r\n\r\n",
           b"11\r\n" + j + b"XX\r\n0\r\n\r\n",            # no CRLF after the data
           b"10\r\n" + j + b"\r\n0\r\n\r\n",               # data longer than its size
           b"ffffffffffffffffffffffff\r\n",                  # overflows 64 bits
           b"1" * 5000,                                        # a size line that never ends
           b"11\r\n" + j + b"x" * 5000]
    for tail in bad:
        resp = one(proxy.listen_port, head + tail)
        assert_error(resp, 400, "chunked %r" % tail[:40])
        assert b"chunked" in resp[2], ("refused for another reason", tail[:40], resp[2])
    assert model.count() == 0
    assert_alive(proxy, model)


def test_chunk_size_must_be_plain_hex(proxy, model):
    """chunk-size = 1*HEXDIG (RFC 9112 7.1), then optional ";ext": signs, "0x", leading
    blanks and junk after a blank are malformed (400), as a front proxy would read them
    differently (request smuggling). strtoull accepts all of them."""
    head = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = b'{"instances": ["hex"]}'
    wrong = []
    for size in (b"-%x", b"+%x", b"0x%x", b" %x", b"%x x", b"%x 5"):
        size = size.replace(b"%x", b"%x" % len(body))
        resp = one(proxy.listen_port, head + size + b"\r\n" + body + b"\r\n0\r\n\r\n")
        if resp[0] != 400:
            wrong.append((size, resp[0], resp[2][:80]))
    assert not wrong, "malformed chunk sizes not refused with 400: %s" % wrong
    assert_alive(proxy, model)


def test_chunked_body_over_max_body_bytes_is_413(start_predcache, model):
    p = start_predcache(conf={"server": {"max_body_bytes": "1k"}})
    head = (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    # one chunk declared too large: refused before its data arrives
    s = connect(p.listen_port)
    try:
        s.sendall(head + b"1000\r\n")
        resps, _, closed = read_responses(s, 1, timeout=5)
        assert resps, "no 413 before the chunk data"
        assert_error(resps[0], 413, "large chunk")
    finally:
        s.close()
    # small chunks adding up past the limit
    resp = one(p.listen_port, head + (b"200\r\n" + b"a" * 512 + b"\r\n") * 3 + b"0\r\n\r\n")
    assert_error(resp, 413, "chunks adding up")
    resp = one(p.listen_port, head + b"fffffffffffffff\r\n")
    assert_error(resp, 413, "2^60 chunk")
    # exactly at the limit is fine
    body = b'{"instances": ["' + b"x" * (1024 - 19) + b'"]}'
    assert len(body) == 1024
    (status, headers, _), = exchange(p.listen_port, chunked_post(PREDICT, [body[:1000],
                                                                           body[1000:]]))[0]
    assert status == 200, headers
    assert model.count(PREDICT) == 1
    assert_alive(p, model)


# --------------------------------------------------------------------------- pipelining


def test_twenty_pipelined_requests_answered_in_order(proxy, model):
    reqs, expect = [], []
    for i in range(20):
        kind = i % 4
        if kind == 0:
            reqs.append(get_bytes("/echo?i=%d" % i))
            expect.append(("echo", i))
        elif kind == 1:
            inst = ["pipe", i % 8]  # repeats: later ones may be HIT or COALESCED
            reqs.append(post_bytes(PREDICT, json.dumps({"instances": inst}).encode()))
            expect.append(("predict", inst))
        elif kind == 2:
            reqs.append(chunked_post(PREDICT, [b'{"instances": ', b'["pipe-c", %d]}' % i]))
            expect.append(("predict", ["pipe-c", i]))
        else:
            reqs.append(get_bytes("/v1/models/m/versions/%d" % i))
            expect.append(("version", i))
    reqs[-1] = get_bytes("/echo?i=19", close=True)
    expect[-1] = ("echo", 19)
    with Bystander(proxy):
        resps, rest, closed = exchange(proxy.listen_port, b"".join(reqs), count=20, timeout=20)
    assert len(resps) == 20, "got %d answers, leftover %r" % (len(resps), rest[:200])
    for (kind, what), (status, headers, body) in zip(expect, resps):
        assert status == 200, (kind, what, body[:200])
        doc = json.loads(body)
        if kind == "echo":
            assert doc == {"path": "/echo", "query": "i=%d" % what}
        elif kind == "version":
            assert doc["model_version_status"][0]["version"] == str(what)
        else:
            assert doc["predictions"] == predictions_for(what), (what, doc)
            assert headers["x-cache"] in ("MISS", "HIT", "COALESCED"), headers
    assert resps[-1][1].get("connection") == "close"
    assert_alive(proxy, model)


def test_pipeline_with_a_malformed_request_in_the_middle(proxy, model):
    reqs = [get_bytes("/echo?i=%d" % i) for i in range(5)]
    reqs.append(b"GET /bad request HTTP/1.1\r\nHost: t\r\n\r\n")
    reqs += [get_bytes("/echo?i=%d" % i) for i in range(6, 10)]
    resps, rest, closed = exchange(proxy.listen_port, b"".join(reqs), count=10)
    assert [r[0] for r in resps] == [200] * 5 + [400], resps
    assert_error(resps[5], 400, "malformed in a pipeline")
    assert closed and rest == b""
    assert model.count() == 5, "nothing after the malformed request was forwarded"
    assert_alive(proxy, model)


# --------------------------------------------------------------------------- slowloris


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def slowloris(start_predcache, model, mode_args, target, interval=10, seconds=15):
    """slowhttptest opens 200 connections (100/s) that send a little every `interval`
    seconds, against predcache with idle_timeout_ms 2000 and max_connections 230, while a
    bystander makes a request every 200 ms. Returns (samples, summary): samples are
    (seconds, connections predcache holds on its data port) every 250 ms."""
    if SLOWHTTPTEST is None:
        pytest.skip("slowhttptest is not installed (Debian: apt-get install slowhttptest)")
    p = start_predcache(conf={"server": {"idle_timeout_ms": "2000", "max_connections": "230"}})
    args = mode_args + ["-c", "200", "-i", str(interval), "-r", "100", "-x", "24", "-p", "3",
                        "-l", str(seconds), "-u", "http://127.0.0.1:%d%s" % (p.listen_port,
                                                                             target)]
    samples = []
    t0 = time.monotonic()
    proc = subprocess.Popen([SLOWHTTPTEST] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        with Bystander(p, interval=0.2, timeout=3.0) as bystander:
            while proc.poll() is None and time.monotonic() - t0 < seconds + 20:
                samples.append((time.monotonic() - t0, client_sockets(p.pid, p.listen_port)))
                time.sleep(0.25)
        out = proc.communicate(timeout=30)[0].decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = ANSI.sub("", out)
    # slowhttptest's summary, parsed loosely (its output is a redrawn screen)
    summary = {"exit": "", "available": ""}
    for m in re.finditer(r"Exit status:\s*(.+)", out):
        summary["exit"] = m.group(1).strip()
    for m in re.finditer(r"service available:\s*(\w+)", out):
        summary["available"] = m.group(1)
    peak = max(n for _, n in samples)
    assert peak >= 100, "slowhttptest never held 100 connections (peak %d, rc %s): %s" % (
        peak, proc.returncode, out[-1500:])
    bystander.check(at_least=5)
    slow = [r for r in bystander.results if r[2] > 2.0]
    assert not slow, "bystander requests took over 2 s: %s" % slow[:5]
    assert summary["available"] != "NO", "slowhttptest's probe found the service down: %s" % (
        out[-1500:],)
    # once the attacker is gone, nothing is left behind
    wait_for(lambda: client_sockets(p.pid, p.listen_port) == 0, timeout=10,
             what="every data-port connection closed")
    # 50 fresh connections held at once fit under max_connections (230)
    socks = [connect(p.listen_port) for _ in range(50)]
    try:
        for s in socks:
            s.sendall(get_bytes(STATUS, close=True))
        for s in socks:
            resps, _, _ = read_responses(s, 1, timeout=10)
            assert resps and resps[0][0] == 200, resps
    finally:
        for s in socks:
            s.close()
    wait_in_flight_zero(p)
    assert_alive(p, model)
    return p, samples, summary


def assert_timed_out_by_predcache(p, samples, summary):
    """Each slow connection was closed by predcache (408) ~2 s after its last byte, long
    before its next piece (10 s): the count fell from the peak while slowhttptest ran."""
    peak_at, peak = max(samples, key=lambda x: x[1])
    later = [n for t, n in samples if t > peak_at + 1.5]
    assert later and min(later) <= peak // 4, (
        "predcache did not time out the slow connections: samples %s" % samples)
    assert p.stderr_text().count(" 408 ") >= 150, "the slow connections were not 408"
    assert "limit" not in summary["exit"].lower() or min(later) <= 5, summary


def test_slowloris_slow_headers(start_predcache, model):
    p, samples, summary = slowloris(start_predcache, model, ["-H", "-t", "GET"], STATUS)
    assert_timed_out_by_predcache(p, samples, summary)


def test_slowloris_slow_body(start_predcache, model):
    p, samples, summary = slowloris(start_predcache, model,
                                    ["-B", "-t", "POST", "-s", "8192", "-f", "application/json"],
                                    PREDICT)
    assert_timed_out_by_predcache(p, samples, summary)
    assert model.count(PREDICT) > 0  # the bystander's; no slow body ever completed


def test_slowloris_trickle_under_the_idle_timeout(start_predcache, model):
    """Pieces every second, under idle_timeout_ms: by design (the timeout is the silence
    allowed) predcache keeps these 200 connections; under max_connections they must not
    slow anyone else down, and they are released when the attacker leaves."""
    p, samples, summary = slowloris(start_predcache, model, ["-H", "-t", "GET"], STATUS,
                                    interval=1, seconds=6)
    held = [n for t, n in samples if 3.0 < t < 5.5]
    assert held and min(held) >= 150, samples


# --------------------------------------------------------------------------- vanishing clients


def test_client_disconnects_mid_response(proxy, model):
    big = "x" * (5 << 20)
    model.control(status=200, body=big, content_type="text/plain")
    with Bystander(proxy, interval=0.2, predict=False,
                   get_check=lambda r: len(r.content) == len(big)) as bystander:
        for i in range(6):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            s.settimeout(10)
            s.connect(("127.0.0.1", proxy.listen_port))
            target = STATUS if i % 2 == 0 else PREDICT
            if target == PREDICT:
                s.sendall(post_bytes(PREDICT, b'{"instances": ["big-%d"]}' % i))
            else:
                s.sendall(get_bytes(STATUS))
            got = 0
            while got < 100000:
                chunk = s.recv(65536)
                assert chunk, "closed before 100 kB of the 5 MB answer"
                got += len(chunk)
            rst_close(s) if i % 3 == 0 else s.close()
    # the bystander got the same 5 MB answers in full
    bystander.check()
    model.control()
    wait_in_flight_zero(proxy)
    assert_alive(proxy, model)


def test_client_that_never_reads_is_dropped(start_predcache, model):
    """The answer cannot be written out (the client reads nothing): after idle_timeout_ms
    predcache gives up on it and frees the connection."""
    p = start_predcache(conf={"server": {"idle_timeout_ms": "1000"}})
    model.control(status=200, body="y" * (8 << 20), content_type="text/plain")
    socks = []
    for _ in range(3):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", p.listen_port))
        s.sendall(get_bytes(STATUS))
        socks.append(s)
    try:
        time.sleep(0.3)
        assert client_sockets(p.pid, p.listen_port) == 3
        with Bystander(p, interval=0.2, predict=False,
                       get_check=lambda r: len(r.content) == 8 << 20):
            wait_for(lambda: client_sockets(p.pid, p.listen_port) <= 1, timeout=10,
                     what="the stuck writers freed (%d connections left)" % (
                         client_sockets(p.pid, p.listen_port)))
    finally:
        for s in socks:
            s.close()
    model.control()
    wait_in_flight_zero(p)
    assert_alive(p, model)


# --------------------------------------------------------------------------- bad backend


def bad_backend_case(start_predcache, redis, bad_backend, mode, status, extra=(),
                     timeout_ms=500):
    b = bad_backend(mode, extra)
    p = start_predcache(backend_url=b.url(),
                        conf={"backend": {"timeout_ms": str(timeout_ms),
                                          "connect_timeout_ms": "200"}})
    seeded = ["seeded", mode]
    seed_key = seed_hit(redis, seeded)
    result = {}

    def stuck():
        t0 = time.monotonic()
        result["r"] = p.post(PREDICT, json_body={"instances": [mode]})
        result["t"] = time.monotonic() - t0
        result["done"] = time.monotonic()

    th = threading.Thread(target=stuck)
    th.start()
    # meanwhile: cache hits and the admin port are served at once
    time.sleep(0.05)
    t_hit = time.monotonic()
    hit = p.post(PREDICT, json_body={"instances": seeded}, timeout=5)
    t_hit_done = time.monotonic()
    assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT", hit.headers
    assert hit.json() == {"predictions": ["seeded"]}
    assert requests.get(p.admin("/health"), timeout=5).status_code == 200
    th.join(timeout=30)
    assert "r" in result, "the request to the %s backend never came back" % mode
    assert_json_error(result["r"], status, mode)
    if mode in ("never", "slow_body"):
        assert t_hit_done < result["done"], "the hit waited for the stuck request"
        assert t_hit_done - t_hit < timeout_ms / 1000.0
        assert timeout_ms / 1000.0 * 0.8 <= result["t"] < timeout_ms / 1000.0 + 3, result["t"]
    # a pass-through route gets the same treatment
    r = p.get(STATUS)
    assert_json_error(r, status, mode + " pass-through")
    assert b.count() >= 2, "predcache did not reach the bad backend"
    assert p.metric("predcache_backend_errors_total") >= 2
    # several at once, then nothing is left in flight
    rs = []
    ths = [threading.Thread(target=lambda i=i: rs.append(
        p.post(PREDICT, json_body={"instances": [mode, i]}))) for i in range(8)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(timeout=30)
    assert len(rs) == 8
    for r in rs:
        assert_json_error(r, status, mode + " concurrent")
    time.sleep(0.1)
    assert redis.keys("*") == [seed_key], "an error answer was stored"
    wait_in_flight_zero(p)
    assert_alive(p)
    return p


@pytest.mark.parametrize("mode", ["garbage", "truncated", "reset", "huge_headers"])
def test_bad_backend_is_502(start_predcache, redis, bad_backend, mode):
    bad_backend_case(start_predcache, redis, bad_backend, mode, 502)


def test_backend_closing_without_rst_is_502(start_predcache, redis, bad_backend):
    bad_backend_case(start_predcache, redis, bad_backend, "reset", 502, extra=["--rst", "0"])


def test_backend_never_answering_is_504(start_predcache, redis, bad_backend):
    bad_backend_case(start_predcache, redis, bad_backend, "never", 504)


def test_backend_slow_body_is_504(start_predcache, redis, bad_backend):
    bad_backend_case(start_predcache, redis, bad_backend, "slow_body", 504)


def test_other_predcache_unaffected_by_bad_backend(start_predcache, model, redis, bad_backend):
    """A predcache on a hanging model server and one on a good model server, side by side."""
    b = bad_backend("never")
    bad = start_predcache(backend_url=b.url(),
                          conf={"backend": {"timeout_ms": "500", "connect_timeout_ms": "200"}})
    good = start_predcache()
    with Bystander(good, interval=0.02) as bystander:
        rs = []
        ths = [threading.Thread(target=lambda i=i: rs.append(
            bad.post(PREDICT, json_body={"instances": ["bad", i]}))) for i in range(20)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(timeout=30)
    bystander.check(at_least=5)
    assert [r.status_code for r in rs] == [504] * 20
    wait_in_flight_zero(bad)
    assert_alive(good, model)
    assert_alive(bad)
