"""What a miss asks of Redis, read from Redis's own MONITOR stream: one command before the
model server's call (the lookup, with the cross-process lock folded in when nothing is
cached), and after the answer only what stores it and releases the lock, sent together."""
import json
import socket
import threading
import time

import pytest

from conftest import wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"


class Monitor:
    """Redis's MONITOR stream on a connection of its own: the top-level commands (not
    those a script runs, which MONITOR marks [N lua]), each as (arrival time, its line)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines = []
        self.stop = False
        buf = b""
        while b"+OK\r\n" not in buf:
            buf += self.sock.recv(4096)
        self.rest = buf.split(b"+OK\r\n", 1)[1]
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        buf = self.rest
        self.sock.settimeout(0.2)
        while not self.stop:
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                text = line.decode("utf-8", "replace")
                if " lua]" not in text:
                    self.lines.append((time.monotonic(), text))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                break
            buf += data

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.sock.close()

    def commands(self):
        """The command names, in order (PING and INFO of the harness aside)."""
        out = []
        for t, text in self.lines:
            parts = text.split('"')
            if len(parts) > 1:
                out.append((t, parts[1].upper(), text))
        return out


@pytest.mark.parametrize("per_instance", ["on", "off"], ids=["batch", "whole-body"])
def test_a_miss_asks_redis_once_before_the_model_call(start_predcache, model, redis,
                                                      per_instance):
    """A batch's lookup is the MGET with the lock folded in; a request keyed by its whole
    body (per_instance off) looks up with the lock script itself (before: a GET, then the
    script). Either way one command before the model call."""
    # the in-process tier on, as shipped (a whole body's lookup takes the lock only there)
    p = start_predcache(conf={"cache": {"per_instance": per_instance, "l1_max_bytes": "64m"}})
    p.post(PREDICT, json_body={"instances": ["warm"]})  # connections, versions, generations
    time.sleep(0.3)
    mon = Monitor(redis.port)
    try:
        model.control(delay_ms=300)
        t0 = time.monotonic()
        r = p.post(PREDICT, json_body={"instances": ["once"]})
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        wait_for(lambda: len([c for c in mon.commands() if c[1] == "DEL" and c[0] > t0 + 0.25])
                 == 2, what="the lock's release")
    finally:
        mon.close()
    # predcache's own periodic reads (the invalidation counters) aside
    cmds = [c for c in mon.commands() if c[0] >= t0 and c[1] not in ("HGETALL", "INFO")]
    # before the model call (it takes 300 ms): the lookup with the lock, one command
    before = [c for c in cmds if c[0] < t0 + 0.25]
    assert len(before) == 1, before
    assert before[0][1] == "EVAL" and "NX" in before[0][2], before
    assert ("MGET" in before[0][2]) == (per_instance == "on"), before
    # after: the store and the release (the lock cannot have expired yet: two plain DELs,
    # the lock's and its waiters' mark's, no script; nobody waited: no PUBLISH), nothing
    # looked up again
    after = [c for c in cmds if c[0] >= t0 + 0.25]
    names = [c[1] for c in after]
    assert "SET" in names and "EVAL" not in names and "PUBLISH" not in names, after
    dels = [c[2] for c in after if c[1] == "DEL"]
    assert len(dels) == 2 and dels[0].endswith(':lock"') and dels[1].endswith(':wait"'), dels
    assert "MGET" not in names and "GET" not in names, after
    oracle = Oracle("one round trip", per_instance=per_instance == "on")
    oracle.check("POST", PREDICT, json.dumps({"instances": ["once"]}), {}, r.status_code,
                 r.content, r.headers.get("X-Cache"))
    oracle.assert_clean()


def test_a_partly_cached_batch_asks_the_lock_of_what_it_sends(start_predcache, model, redis):
    """The lookup finds one instance: the lock of the missing ones is asked apart (it is
    another herd), and the model server gets only the missing one."""
    p = start_predcache(conf={"cache": {"per_instance": "on"}})
    r = p.post(PREDICT, json_body={"instances": ["kept"]})
    wait_for(lambda: p.post(PREDICT, json_body={"instances": ["kept"]}).headers["X-Cache"] == "HIT",
             what="the instance stored")
    r = p.post(PREDICT, json_body={"instances": ["kept", "new"]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "PARTIAL"
    assert model.count(PREDICT) == 2
    wait_for(lambda: not [k for k in redis.keys() if str(k).endswith(":lock")],
             what="the locks released")
