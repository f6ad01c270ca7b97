"""Out of file descriptors: a crowd of connections past the open-file limit.

Every client connection is a file descriptor. When the process has none left, accept()
fails with EMFILE and leaves the connection in the listen backlog, so the listening socket
stays readable: a listener that only logs the failure is called again at once, for ever
(one CPU at 100 %, millions of log lines a second, and every later client waits until
the crowd leaves). predcache instead takes pending connections through a descriptor it
keeps in reserve and refuses them (503, Retry-After, close), pauses accepting for 100 ms
when even that is impossible, logs one line a second at most, and counts the refusals
(predcache_connections_refused_total). At start it raises its soft open-file limit
towards the hard one, and says so when the limit is below what max_connections needs.
"""

import os
import resource
import socket
import time

import requests
from conftest import wait_for

PREDICT = "/v1/models/m:predict"
LIMIT = 200  # open files for predcache (soft and hard)
CROWD = 400  # connections held open by the test: past the limit


def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def accept_failures(p):
    return sum(1 for line in p.stderr_text().splitlines() if "accept failed" in line)


def ask(port, timeout=5.0):
    """One raw POST: (status or None, seconds until the answer or the close)."""
    body = b'{"instances": [["fd-limit"]]}'
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                  + body)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
    return status, data, time.monotonic() - t0


def test_a_crowd_past_the_open_file_limit_is_refused_without_spinning(start_predcache, model):
    p = start_predcache(conf={"server": {"workers": "1"}}, preexec=low_nofile)
    crowd = []
    try:
        for _ in range(CROWD):
            crowd.append(socket.create_connection(("127.0.0.1", p.listen_port), timeout=5))
        time.sleep(0.5)  # the crowd is accepted up to the limit; the rest waits in the backlog
        before_cpu, before_lines = cpu_seconds(p.proc.pid), accept_failures(p)
        time.sleep(2.0)
        spent = cpu_seconds(p.proc.pid) - before_cpu
        lines = accept_failures(p) - before_lines
        print("out of descriptors for 2 s: %.2f s of CPU, %d accept-failure lines" % (spent,
                                                                                      lines))
        # A listener left readable spins: about 2 s of CPU and a million lines in 2 s.
        assert spent < 0.5, "predcache spun while out of file descriptors"
        assert lines <= 4, "accept failures are logged once a second at most"
        status, data, took = ask(p.listen_port)
        print("a new client while out of descriptors: %s in %.3f s" % (status, took))
        assert took < 3.0, "a new client waited for the crowd to leave"
        if status is not None:  # else the refusal was reset on the way: still not a hang
            assert status == 503 and b"Retry-After: 1" in data
            assert b'"error"' in data
    finally:
        for s in crowd:
            s.close()
    time.sleep(0.5)
    r = requests.post(p.url(PREDICT), json={"instances": [["fd-limit"]]}, timeout=10)
    assert r.status_code == 200 and r.headers["X-Cache"] in ("MISS", "HIT")
    assert p.proc.poll() is None
    assert p.metric("predcache_connections_refused_total") >= 1
    assert "raise the open-file limit" in p.stderr_text()
    assert "open-file limit %d (hard %d) is below" % (LIMIT, LIMIT) in p.stderr_text()


def test_the_soft_open_file_limit_is_raised_to_what_connections_need(start_predcache, model):
    def soft_low():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    p = start_predcache(conf={"server": {"workers": "1", "max_connections": "1000"}},
                        preexec=soft_low)
    with open("/proc/%d/limits" % p.proc.pid) as f:
        soft = next(int(line.split()[3]) for line in f if line.startswith("Max open files"))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert soft == min(hard, 1 * 1000 * 2 + 256)
    assert "open-file limit raised from 256 to %d" % soft in p.stderr_text()
    crowd = []
    try:
        for _ in range(600):  # past the old limit of 256
            crowd.append(socket.create_connection(("127.0.0.1", p.listen_port), timeout=5))
        r = requests.post(p.url(PREDICT), json={"instances": [["raised"]]}, timeout=10)
        assert r.status_code == 200
    finally:
        for s in crowd:
            s.close()
    assert "accept failed" not in p.stderr_text()


def open_fds(pid):
    """How many descriptors the process holds (listing /proc/PID/fd opens none of its)."""
    return len(os.listdir("/proc/%d/fd" % pid))


def held_open(s):
    """Is the crowd connection s still served (predcache neither answered nor closed it)?"""
    s.setblocking(False)
    try:
        s.recv(1, socket.MSG_PEEK)
        return False  # a refusal waits to be read, or predcache closed it
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def test_a_client_served_with_the_last_descriptor_gets_503_when_the_model_call_has_none(
        start_predcache, model):
    # The crowd takes every descriptor; one of its connections leaves, and a new client is
    # accepted with the descriptor it freed. Its model call then finds none for its socket:
    # that is the same shortage as the crowd's refusals (503, Retry-After), not a broken
    # model server (502).
    p = start_predcache(conf={"server": {"workers": "1"}}, preexec=low_nofile)
    crowd = []
    try:
        for _ in range(CROWD):
            crowd.append(socket.create_connection(("127.0.0.1", p.listen_port), timeout=5))
        time.sleep(0.5)
        # A descriptor the process held for a moment while the crowd came in (the admin
        # connection of the readiness check, closed a little late) is free again now: one
        # more connection takes it, so that only the leaver's will be free.
        for _ in range(20):
            if open_fds(p.proc.pid) >= LIMIT:
                break
            crowd.append(socket.create_connection(("127.0.0.1", p.listen_port), timeout=5))
            time.sleep(0.05)
        assert open_fds(p.proc.pid) == LIMIT, "the crowd takes every descriptor"
        served = [s for s in crowd if held_open(s)]
        assert len(served) > LIMIT // 2, "the crowd is served up to the limit"
        leaver = served[0]
        crowd.remove(leaver)
        leaver.close()
        wait_for(lambda: open_fds(p.proc.pid) == LIMIT - 1,
                 what="predcache reads the leaver's end and closes its side")
        status, data, took = ask(p.listen_port)
        print("a new client on the freed descriptor: %s in %.3f s: %r" % (status, took, data))
        assert status == 503, "no descriptor for the model call is a shortage, not a bad gateway"
        assert b"Retry-After: 1" in data
        assert model.count() == 0, "the model server saw no request"
    finally:
        for s in crowd:
            s.close()
    time.sleep(0.5)
    r = requests.post(p.url(PREDICT), json={"instances": [["fd-limit"]]}, timeout=10)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert "out of file descriptors" in p.stderr_text()
