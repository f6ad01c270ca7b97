"""Slow uploads: the input budget ([server] max_input_bytes).

A request body is held in memory while it arrives, up to max_body_bytes (16 MB) per
request. Without a process-wide bound, clients that announce large bodies, send most of
them and then stall hold that memory until request_timeout_ms: forty of them holding
3 MB each grow RSS by well over 100 MB, and max_connections of them by gigabytes. With
max_input_bytes, request bytes held stay near the bound: past it, a connection whose
request holds more than its head and 16 KB stops reading (TCP pushes back on its client)
until the figure falls under 3/4 of the bound, while small requests go on.

RSS is predcache's VmRSS, sampled every 20 ms; a sanitizer build's RSS is not judged.
"""

import json
import socket
import time

from oracle import Oracle
from test_backpressure import RssSampler, sanitized, vm_rss

PREDICT = "/v1/models/m:predict"
MB = 1 << 20
BUDGET = 16 * MB
N_SLOW = 40
ANNOUNCED = 8 * MB  # Content-Length each slow client announces
SENT = 3 * MB  # what each sends before it stalls
# Bytes held stay under the budget plus, per connection, what it may hold without asking
# (its head and 16 KB) and one read (64 KB) past the check; the body buffer doubles as it
# grows, so one slow request may hold twice what it received. Plus 16 MB of allocator slack.
RSS_BOUND = 2 * BUDGET + N_SLOW * (2 * 65536 + 32768) + 16 * MB


def slow_client(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    s.send(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: "
           b"application/json\r\nContent-Length: %d\r\n\r\n" % ANNOUNCED)
    return s


def push(socks, budget_s):
    """Sends up to SENT body bytes on each of socks, without blocking, for budget_s."""
    sent = {s: 0 for s in socks}
    chunk = b" " * 65536
    end = time.monotonic() + budget_s
    while time.monotonic() < end and any(n < SENT for n in sent.values()):
        progress = 0
        for s in socks:
            if sent[s] >= SENT:
                continue
            try:
                n = s.send(chunk[:min(len(chunk), SENT - sent[s])])
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                sent[s] = SENT
                continue
            sent[s] += n
            progress += n
        if not progress:
            time.sleep(0.02)
    return sum(sent.values())


def test_stalled_uploads_hold_at_most_the_budget(start_predcache, model):
    p = start_predcache(conf={"server": {"workers": "2", "max_input_bytes": str(BUDGET)}})
    small = Oracle("small requests")
    socks = []
    before = vm_rss(p.proc.pid)
    try:
        with RssSampler(p.proc.pid) as rss:
            socks = [slow_client(p.listen_port) for _ in range(N_SLOW)]
            pushed = push(socks, 6.0)
            time.sleep(0.5)
            held = p.metric("predcache_input_buffered_bytes")
            # Small requests are not held up by the stalled uploads.
            for i in range(20):
                body = json.dumps({"instances": [["small", i]]})
                t0 = time.monotonic()
                r = p.post(PREDICT, body=body, timeout=10)
                assert time.monotonic() - t0 < 2.0
                assert small.check("POST", PREDICT, body, {}, r.status_code, r.content,
                                   r.headers.get("X-Cache")) is None
                assert r.status_code == 200
        growth = rss.peak - before
        print("%d stalled uploads pushed %.1f MB; predcache holds %.1f MB of request bytes; "
              "RSS +%.1f MB (bound %.1f MB); input pauses %d" % (
                  N_SLOW, pushed / MB, held / MB, growth / MB, RSS_BOUND / MB,
                  p.metric("predcache_input_pauses_total")))
        print(small.report())
        assert small.wrong == 0
        assert held <= BUDGET + N_SLOW * (65536 + 32768)
        assert p.metric("predcache_input_pauses_total") > 0
        if not sanitized(p.binary):
            assert growth <= RSS_BOUND
    finally:
        for s in socks:
            s.close()
    # The stalled requests are gone with their connections, and so are their bytes: a
    # large request goes through again.
    deadline = time.monotonic() + 5
    while p.metric("predcache_input_buffered_bytes") > 65536 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert p.metric("predcache_input_buffered_bytes") <= 65536
    big = json.dumps({"instances": [["big", "x" * (2 * MB)]]})
    r = p.post(PREDICT, body=big, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"]


def read_answer(s, timeout=30.0):
    """(status, body) of one HTTP/1.1 answer with a Content-Length, read from s."""
    s.setblocking(True)
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return None, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def test_uploads_past_the_budget_wait_and_all_finish(start_predcache, model):
    """Six uploads of 3 MB each get 2 MB in, 12 MB together against a budget of 8 MB: every
    one of them is past the budget and paused. One at a time goes on (the input token) and
    each is answered; without it they would wait on each other until request_timeout_ms."""
    p = start_predcache(conf={"server": {"workers": "1", "max_body_bytes": "4m",
                                         "max_input_bytes": str(8 * MB),
                                         "request_timeout_ms": "20000"}})
    oracle = Oracle("uploads")
    bodies = [json.dumps({"instances": [["upload-%d" % i, "y" * (3 * MB)]]}).encode()
              for i in range(6)]
    socks = []
    for body in bodies:
        s = socket.create_connection(("127.0.0.1", p.listen_port))
        s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        s.setblocking(False)
        socks.append(s)
    try:
        offsets = [0] * len(socks)
        end = time.monotonic() + 25
        while time.monotonic() < end and any(o < len(b) for o, b in zip(offsets, bodies)):
            moved = 0
            for i, s in enumerate(socks):
                # The first 2 MB of every body before the rest of any.
                cap = len(bodies[i]) if min(offsets) >= 2 * MB else 2 * MB
                if offsets[i] >= cap:
                    continue
                try:
                    n = s.send(bodies[i][offsets[i]:min(cap, offsets[i] + 65536)])
                except BlockingIOError:
                    continue
                offsets[i] += n
                moved += n
            if not moved:
                time.sleep(0.01)
        assert all(o == len(b) for o, b in zip(offsets, bodies)), "uploads stuck"
        for body, s in zip(bodies, socks):
            status, answer = read_answer(s)
            oracle.check("POST", PREDICT, body.decode(), {}, status, answer, None)
            assert status == 200
    finally:
        for s in socks:
            s.close()
    pauses = p.metric("predcache_input_pauses_total")
    print(oracle.report(), "input pauses", pauses)
    assert oracle.wrong == 0 and oracle.checked == 6
    assert pauses > 0


def test_max_input_bytes_below_max_body_bytes_is_refused(predcache_bin, tmp_path):
    conf = tmp_path / "p.conf"
    conf.write_text("[server]\nmax_body_bytes = 16m\nmax_input_bytes = 8m\n")
    import subprocess
    r = subprocess.run([predcache_bin, "-c", str(conf), "--check"], capture_output=True,
                       text=True)
    assert r.returncode != 0
    assert "max_input_bytes" in r.stderr and "max_body_bytes" in r.stderr
