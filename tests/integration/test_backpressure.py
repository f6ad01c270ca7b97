"""Clients that never read: the output budget ([server] max_output_bytes).

Thirty clients each ask for an 8 MB answer (the test model server answers every data
request with the same 8 MB body, see /_control "body") on a socket with a 4 KB receive
buffer, and never read it. Without a bound, every answer waits in predcache's memory until
idle_timeout_ms closes its connection: RSS grows by max_connections x answer size. With
max_output_bytes, answer bytes held for clients (in output buffers, or received from the
model server and not yet handed over) stay near the bound: a model server answer is
admitted whole when its Content-Length fits (else its transfer pauses: curl stops reading
the socket), a chunked one chunk by chunk with one transfer at a time allowed to finish;
paused transfers resume as clients read or are closed; a client that takes nothing for
idle_timeout_ms is closed and counted; a large answer from the cache that does not fit is
refused with 503 and Retry-After.

RSS is predcache's VmRSS from /proc/<pid>/status, sampled every 20 ms. The bound asserted
on its growth (RSS_BOUND) is the one README's "Failure behaviour" documents (see below).
A sanitizer build's RSS is not judged.

Meanwhile a bystander (its own model server, small answers) is answered right and quickly:
every predict answer is judged by the integrity oracle (tests/integration/oracle.py).
"""

import json
import os
import socket
import threading
import time

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from conftest import canonical, expected_key, make_entry, wait_for
from test_hostile import Bystander

STATUS = "/v1/models/m"  # pass-through: every request is a model server transfer
PREDICT = "/v1/models/m:predict"
SIDE_PREDICT = "/v1/models/bystander:predict"
SIDE_STATUS = "/v1/models/bystander"
ANSWER = 8 << 20
N_STALLED = 30
BUDGET = 32 << 20
WORKERS = 2
MB = 1 << 20
# Answer bytes held for clients (the budget's figures, budget.h) stay under the budget plus
# one answer (let into a half-empty budget), one answer per worker counted twice while it
# is copied from its transfer into an output buffer, and the 64 KB each transfer may hold.
HELD_BOUND = BUDGET + (WORKERS + 1) * ANSWER + N_STALLED * 65536
# Documented bound on RSS growth (README, "Failure behaviour"): HELD_BOUND, plus 192 KB
# more per transfer in flight (curl's buffers and connection), plus 16 MB of allocator
# slack.
RSS_BOUND = HELD_BOUND + N_STALLED * (192 << 10) + 16 * MB


# --------------------------------------------------------------------------- helpers


def sanitized(binary):
    """A sanitizer build keeps freed memory in quarantine: its RSS says nothing."""
    with open(binary, "rb") as f:
        return b"__asan_init" in f.read()


def vm_rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def cpu_seconds(pid):
    """User + system CPU time of pid so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Samples a process's VmRSS every 20 ms from a thread; .peak is the highest seen."""

    def __init__(self, pid):
        self.pid, self.peak, self.samples = pid, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, vm_rss(self.pid))
                self.samples += 1
            except (OSError, AssertionError):
                return
            self.stop.wait(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


def get_bytes(path):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n\r\n"


def post_bytes(path, body):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def stalled_client(port, request):
    """Sends request on a socket with a tiny receive buffer and never reads the answer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(request)
    return s


def open_from(pid, port, socks):
    """How many of socks (client sockets to port) predcache pid still holds a connection
    for: /proc/net/tcp entries on port whose peer is one of socks and whose inode is one of
    pid's fds. Read on predcache's side: the clients must not read to find out."""
    peers = {s.getsockname()[1] for s in socks}
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and \
                    int(remote.rsplit(":", 1)[1], 16) in peers:
                inodes.add(inode)
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        n += link.startswith("socket:[") and link[8:-1] in inodes
    return n


def budget_figures(p):
    m = p.metrics()

    def get(name):
        return m.get((name, frozenset()), 0.0)

    return {name: get("predcache_" + name) for name in (
        "output_buffered_bytes", "backend_buffered_bytes", "backend_paused",
        "backend_pauses_total", "clients_stalled_total", "answers_shed_total")}


def side_bystander(p):
    """A bystander on its own model server (small answers): every request answered right
    and quickly while stalled clients hold the budget."""
    return Bystander(p, timeout=3.0, predict_path=SIDE_PREDICT, status_path=SIDE_STATUS)


def start(start_predcache, side_model, budget, idle_ms, workers=WORKERS):
    return start_predcache(conf={
        "server": {"max_output_bytes": budget, "idle_timeout_ms": str(idle_ms),
                   "workers": str(workers)},
        "backend": {"timeout_ms": "30000"},
        "backend side": {"url": side_model.url()},
        "route side-predict": {"match": "POST " + SIDE_PREDICT, "backend": "side"},
        "route side-status": {"match": "GET " + SIDE_STATUS, "backend": "side",
                              "cache": "off"},
    })


def warm_up(p):
    """One 8 MB answer read whole, so that the baseline RSS holds the allocator's arenas
    and the code paths an answer of that size touches."""
    for _ in range(2):
        r = p.get(STATUS, timeout=30)
        assert r.status_code == 200 and len(r.content) == ANSWER


class FigureSampler(RssSampler):
    """Also samples the budget's figures from /metrics (absent: 0): the most held for
    clients (output + model server answer bytes) and the most transfers paused."""

    def __init__(self, p):
        super().__init__(p.pid)
        self.p, self.held_max, self.paused_max = p, 0.0, 0.0

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, vm_rss(self.pid))
            except (OSError, AssertionError):
                return
            try:
                f = budget_figures(self.p)
            except (AssertionError, requests.RequestException):
                continue
            self.held_max = max(self.held_max,
                                f["output_buffered_bytes"] + f["backend_buffered_bytes"])
            self.paused_max = max(self.paused_max, f["backend_paused"])
            self.samples += 1
            self.stop.wait(0.02)


def stall(p, model):
    """Warms up, then opens N_STALLED clients that never read; returns (baseline RSS,
    their sockets)."""
    model.control(status=200, body="y" * ANSWER, content_type="text/plain")
    warm_up(p)
    time.sleep(0.3)
    return vm_rss(p.pid)


# --------------------------------------------------------------------------- tests


def test_stalled_readers_are_bounded_by_max_output_bytes(start_predcache, model, side_model):
    """32m: transfers pause, RSS growth stays under RSS_BOUND, stalled clients are closed
    after idle_timeout_ms and counted, paused transfers then complete (each stalled client
    had its answer composed), and the gauges return to 0. A bystander is unaffected."""
    p = start(start_predcache, side_model, "32m", idle_ms=1500)
    base = stall(p, model)
    socks = []
    with side_bystander(p) as bystander, FigureSampler(p) as seen:
        try:
            socks = [stalled_client(p.listen_port, get_bytes(STATUS)) for _ in range(N_STALLED)]
            # Each round of stalled clients is closed after 1.5 s without progress, which
            # lets paused transfers go on to the next ones: every client ends up closed.
            time.sleep(0.5)
            assert open_from(p.pid, p.listen_port, socks) == N_STALLED
            wait_for(lambda: open_from(p.pid, p.listen_port, socks) == 0, timeout=60,
                     interval=0.2, what="every stalled client closed")
        finally:
            for s in socks:
                s.close()
    growth = seen.peak - base
    print("max_output_bytes=32m: RSS %.1f MB -> peak %.1f MB (growth %.1f MB, bound %.1f MB);"
          " held for clients at most %.1f MB; %d transfers paused at most; %d samples" % (
              base / MB, seen.peak / MB, growth / MB, RSS_BOUND / MB, seen.held_max / MB,
              seen.paused_max, seen.samples))
    bystander.check(at_least=5, slowest_s=2.0)
    if not sanitized(p.binary):
        assert growth <= RSS_BOUND, "RSS grew by %.1f MB with max_output_bytes 32m" % (
            growth / MB)
    assert seen.paused_max > 0, "no model server transfer was paused"
    assert seen.held_max <= HELD_BOUND, "%.1f MB held for clients" % (seen.held_max / MB)

    def drained():
        f = budget_figures(p)
        return (f["clients_stalled_total"] == N_STALLED and f["backend_paused"] == 0 and
                f["backend_buffered_bytes"] == 0 and f["output_buffered_bytes"] == 0 and
                p.metric("predcache_in_flight") == 0) and f

    f = wait_for(drained, timeout=15, what="the budget's gauges back to 0 (%s)" %
                 budget_figures(p))
    assert f["backend_pauses_total"] > 0
    # every paused transfer completed: each stalled client was answered 200 (then closed)
    answered = [l for l in p.access_lines() if "path=%s " % STATUS in l and " status=200 " in l]
    assert len(answered) == N_STALLED + 2, len(answered)  # + the warm-up's two
    assert "read nothing for 1500 ms" in p.stderr_text()
    # and predcache still serves 8 MB answers in full
    r = p.get(STATUS, timeout=30)
    assert r.status_code == 200 and len(r.content) == ANSWER


def test_without_the_budget_stalled_readers_grow_memory(start_predcache, model, side_model):
    """The same clients with max_output_bytes = 0 (no bound): the measurement sees every
    answer held (RSS growth past RSS_BOUND), so the bound above is the budget's doing."""
    p = start(start_predcache, side_model, "0", idle_ms=3000)
    if sanitized(p.binary):
        pytest.skip("RSS of a sanitizer build")
    base = stall(p, model)
    socks = []
    with RssSampler(p.pid) as rss:
        try:
            socks = [stalled_client(p.listen_port, get_bytes(STATUS)) for _ in range(N_STALLED)]
            time.sleep(2.5)
        finally:
            for s in socks:
                s.close()
    growth = rss.peak - base
    print("max_output_bytes=0: RSS %.1f MB -> peak %.1f MB (growth %.1f MB, bound %.1f MB)"
          % (base / MB, rss.peak / MB, growth / MB, RSS_BOUND / MB))
    assert growth > RSS_BOUND
    assert budget_figures(p)["backend_pauses_total"] == 0
    wait_for(lambda: budget_figures(p)["output_buffered_bytes"] == 0, timeout=15,
             what="output gauge back to 0 once the clients are gone")


class ChunkedBackend:
    """A model server in this process that answers every GET with ANSWER bytes of "c" in
    64 KB chunks (Transfer-Encoding: chunked): an answer whose length predcache does not
    know before its last byte."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"c" * 65536
                try:
                    for _ in range(ANSWER // len(chunk)):
                        self.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # every stalled client's transfer connects at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_chunked_answers_cannot_wait_on_each_other(start_predcache, side_model):
    """Answers of unknown length are taken chunk by chunk: their partial answers fill the
    budget and pause them all, with nothing buffered for any client. The progress token
    lets one of them finish at a time, so every client is answered (and, not reading, closed
    and counted) instead of every transfer timing out."""
    backend = ChunkedBackend()
    try:
        p = start_predcache(backend_url=backend.url(), conf={
            "server": {"max_output_bytes": "16m", "idle_timeout_ms": "1000", "workers": "1"},
            "backend side": {"url": side_model.url()},
            "route side-predict": {"match": "POST " + SIDE_PREDICT, "backend": "side"},
            "route side-status": {"match": "GET " + SIDE_STATUS, "backend": "side",
                                  "cache": "off"},
        })
        n = 12
        socks = []
        with side_bystander(p) as bystander, FigureSampler(p) as seen:
            try:
                socks = [stalled_client(p.listen_port, get_bytes(STATUS)) for _ in range(n)]
                # accepted first (a connection still in the backlog is not predcache's
                # yet: none open would be true at once), then closed
                wait_for(lambda: open_from(p.pid, p.listen_port, socks) == n, timeout=10,
                         interval=0.02, what="every stalled client accepted")
                wait_for(lambda: open_from(p.pid, p.listen_port, socks) == 0, timeout=60,
                         interval=0.2, what="every stalled client closed")
            finally:
                for s in socks:
                    s.close()
        bystander.check(at_least=5, slowest_s=2.0)
        print("chunked, max_output_bytes=16m: held for clients at most %.1f MB, %d paused" % (
            seen.held_max / MB, seen.paused_max))
        assert seen.paused_max > 0
        # partial chunked answers may add half the budget
        assert seen.held_max <= 16 * MB * 1.5 + 2 * ANSWER + n * 65536
        wait_for(lambda: budget_figures(p)["clients_stalled_total"] == n and
                 budget_figures(p)["backend_paused"] == 0 and
                 budget_figures(p)["backend_buffered_bytes"] == 0 and
                 budget_figures(p)["output_buffered_bytes"] == 0, timeout=15,
                 what="every client answered and closed (%s)" % budget_figures(p))
        answered = [l for l in p.access_lines() if "path=%s " % STATUS in l]
        assert len(answered) == n and all(" status=200 " in l for l in answered), answered
    finally:
        backend.close()


def test_large_hit_over_the_budget_is_503_with_retry_after(start_predcache, model, side_model,
                                                          redis):
    """While stalled clients hold the budget, an 8 MB answer from the cache is refused (503
    JSON, Retry-After) instead of buffered; small answers and the operator's /metrics are
    still served; once the stalled clients are closed, the same request is a 200 HIT."""
    p = start(start_predcache, side_model, "16m", idle_ms=2500, workers=1)
    instances = ["big hit"]
    key = expected_key(PREDICT, canonical({"instances": instances}))
    big = b'{"predictions": ["' + b"z" * (ANSWER - 20) + b'"]}'
    value = make_entry(key, big)
    assert redis.command("SET", key, value) == "OK"
    body = json.dumps({"instances": instances})
    r = p.post(PREDICT, body=body, timeout=30)  # under the budget: answered
    assert r.status_code == 200 and r.headers.get("X-Cache") == "HIT" and r.content == big

    model.control(status=200, body="y" * ANSWER, content_type="text/plain")
    # the kernel takes a few MB of each answer: 6 clients hold more than 16m between them
    socks = [stalled_client(p.listen_port, get_bytes(STATUS)) for _ in range(6)]
    try:
        # more than half the budget held by clients, the other answers waiting for room
        wait_for(lambda: budget_figures(p)["backend_paused"] > 0 and
                 budget_figures(p)["output_buffered_bytes"] >= 8 * MB, timeout=10,
                 what="the stalled clients holding the budget, a transfer paused")
        # paused transfers wait without spinning
        t0, cpu0 = time.monotonic(), cpu_seconds(p.pid)
        time.sleep(1.0)
        busy = (cpu_seconds(p.pid) - cpu0) / (time.monotonic() - t0)
        print("CPU while paused: %.1f %%" % (busy * 100))
        assert busy < 0.2, "predcache used %.0f %% CPU while transfers were paused" % (busy * 100)
        r = p.post(PREDICT, body=body, timeout=30)
        assert r.status_code == 503, (r.status_code, r.headers)
        assert r.headers.get("Retry-After") == "1"
        assert r.headers.get("Content-Type", "").startswith("application/json")
        assert "error" in r.json()
        f = budget_figures(p)
        assert f["answers_shed_total"] == 1, f
        # logged and counted as what the client got: a 503 error, not a 200 hit
        line = [l for l in p.access_lines() if PREDICT in l][-1]
        assert "status=503" in line and "cache=ERROR" in line, line
        assert p.metric("predcache_requests_total", cache="hit") == 1
        # small answers are not refused
        r = p.get(SIDE_STATUS, timeout=5)
        assert r.status_code == 200
        assert requests.get(p.admin("/metrics"), timeout=5).status_code == 200
        wait_for(lambda: open_from(p.pid, p.listen_port, socks) == 0, timeout=30,
                 interval=0.2, what="the stalled clients closed")
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: budget_figures(p)["output_buffered_bytes"] == 0, timeout=10,
             what="output gauge back to 0")
    r = p.post(PREDICT, body=body, timeout=30)
    assert r.status_code == 200 and r.headers.get("X-Cache") == "HIT" and r.content == big
    assert budget_figures(p)["answers_shed_total"] == 1


def test_stalled_client_is_counted_and_a_slow_reader_is_not(start_predcache, model, side_model):
    """Under the budget: a client that reads nothing is closed after idle_timeout_ms and
    counted; one that reads slowly (progress within every idle_timeout_ms) gets its whole
    answer and is not counted."""
    p = start(start_predcache, side_model, "256m", idle_ms=800, workers=1)
    model.control(status=200, body="y" * ANSWER, content_type="text/plain")
    stuck = stalled_client(p.listen_port, get_bytes(STATUS))
    slow = socket.create_connection(("127.0.0.1", p.listen_port))
    slow.sendall(get_bytes(STATUS))
    got, deadline = b"", time.monotonic() + 60
    try:
        slow.settimeout(5)
        while time.monotonic() < deadline:
            # about 1 MB, then a pause shorter than idle_timeout_ms
            burst = 0
            while burst < MB:
                chunk = slow.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
                burst += len(chunk)
                if got.endswith(b"y" * 100) and len(got.partition(b"\r\n\r\n")[2]) >= ANSWER:
                    break
            if not chunk or len(got.partition(b"\r\n\r\n")[2]) >= ANSWER:
                break
            time.sleep(0.4)
        head, _, rest = got.partition(b"\r\n\r\n")
        assert b"Content-Length: %d" % ANSWER in head and rest == b"y" * ANSWER
        wait_for(lambda: open_from(p.pid, p.listen_port, [stuck]) == 0, timeout=10,
                 what="the stuck client closed")
    finally:
        stuck.close()
        slow.close()
    wait_for(lambda: budget_figures(p)["clients_stalled_total"] == 1, timeout=5,
             what="one stalled client counted (%s)" % budget_figures(p))
    wait_for(lambda: budget_figures(p)["output_buffered_bytes"] == 0, timeout=5,
             what="output gauge back to 0")
