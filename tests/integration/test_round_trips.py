"""What a miss asks of Redis, read from Redis's own MONITOR stream: one command before the
model server's call (the lookup, with the cross-process lock folded in when nothing is
cached), and after the answer only what stores it and releases the lock, sent together."""
import json
import socket
import threading
import time

from conftest import wait_for

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


def one_miss(start_predcache, model, redis, per_instance):
    """The top-level commands of one miss (its model call takes 300 ms): those before the
    call, and those after."""
    p = start_predcache(conf={"cache": {"per_instance": per_instance}})
    p.post(PREDICT, json_body={"instances": ["warm"]})  # connections, versions, generations
    time.sleep(0.3)
    mon = Monitor(redis.port)
    try:
        model.control(delay_ms=300)
        t0 = time.monotonic()
        r = p.post(PREDICT, json_body={"instances": ["once"]})
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        wait_for(lambda: [c for c in mon.commands() if c[1] == "EVAL" and c[0] > t0 + 0.25],
                 what="the lock's release")
    finally:
        mon.close()
    # predcache's own periodic reads (the invalidation counters) aside
    cmds = [c for c in mon.commands() if c[0] >= t0 and c[1] not in ("HGETALL", "INFO")]
    assert json.loads(r.content)["predictions"]
    return [c for c in cmds if c[0] < t0 + 0.25], [c[1] for c in cmds if c[0] >= t0 + 0.25]


def test_a_batch_miss_asks_redis_once_before_the_model_call(start_predcache, model, redis):
    before, after = one_miss(start_predcache, model, redis, "on")
    # the instances' lookup with the lock of the batch, in one script
    assert len(before) == 1, before
    assert before[0][1] == "EVAL" and "MGET" in before[0][2] and "NX" in before[0][2], before
    # after: the store and the release, nothing looked up again
    assert "SET" in after and "EVAL" in after, after
    assert "MGET" not in after and "GET" not in after, after


def test_a_whole_body_miss_asks_redis_once_before_the_model_call(start_predcache, model,
                                                                  redis):
    before, after = one_miss(start_predcache, model, redis, "off")
    # the lock script is the lookup: it answers with the value when there is one
    assert len(before) == 1, before
    assert before[0][1] == "EVAL" and "'GET'" in before[0][2] and "NX" in before[0][2], before
    assert "SET" in after and "EVAL" in after, after
    assert "GET" not in after, after


def test_a_whole_body_hit_through_the_lock_script(start_predcache, model, redis):
    """The lookup by the lock script finds the entry: a HIT (not the in-process tier's: it
    is off), the model server not called again, and no lock left behind."""
    p = start_predcache(conf={"cache": {"l1_max_bytes": "0"}})
    r = p.post(PREDICT, json_body={"instances": ["again"]})
    redis.wait_key(r.headers["X-Cache-Key"])
    for _ in range(3):
        h = p.post(PREDICT, json_body={"instances": ["again"]})
        assert h.headers["X-Cache"] == "HIT" and h.content == r.content
    assert model.count(PREDICT) == 1
    assert p.metric("predcache_redis_get_ok_total") >= 4
    assert not [k for k in redis.keys() if str(k).endswith((":lock", ":wait"))]




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
