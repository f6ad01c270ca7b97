"""Redis through Sentinel ([redis] sentinels, sentinel_master).

Real servers on loopback: a master, a replica of it and a sentinel watching them (Debian's
redis-server in --sentinel mode), each in the test's directory. predcache asks the sentinels
for the master, checks that it is one (ROLE) before taking commands, and asks again when it
loses it or is told READONLY (the old master turned into a replica by a failover). Every
predict answer is judged by the integrity oracle.
"""

import os
import subprocess
import threading
import time

import pytest

from conftest import REDIS_SERVER, RedisProcess, Resp, canonical, expected_key, free_port, wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"
MASTER = "mymaster"


class Node(RedisProcess):
    def __init__(self, workdir, name, args, conf_text=None):
        self.dir = os.path.join(str(workdir), name)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.log = os.path.join(self.dir, "log")
        cmd = [REDIS_SERVER]
        if conf_text is not None:
            conf = os.path.join(self.dir, "sentinel.conf")
            with open(conf, "w") as f:
                f.write(conf_text % {"port": self.port, "dir": self.dir})
            cmd += [conf, "--sentinel"]
        else:
            cmd += ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", self.dir] + list(args)
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for(lambda: self.ping(), what="%s up" % name)

    def ping(self):
        assert self.proc.poll() is None, open(self.log).read()[-2000:]
        try:
            with Resp(self.port, timeout=1.0) as r:
                return r.command("PING") == "PONG"
        except OSError:
            return False



SENTINEL_CONF = """port %(port)d
bind 127.0.0.1
dir %(dir)s
sentinel monitor mymaster 127.0.0.1 {master} 1
sentinel down-after-milliseconds mymaster 1000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
"""


@pytest.fixture
def sentinel_set(tmp_path):
    nodes = []
    try:
        master = Node(tmp_path, "master", [])
        nodes.append(master)
        replica = Node(tmp_path, "replica", ["--replicaof", "127.0.0.1", str(master.port)])
        nodes.append(replica)
        sentinel = Node(tmp_path, "sentinel", [],
                        SENTINEL_CONF.replace("{master}", str(master.port)))
        nodes.append(sentinel)

        def replica_known():
            reps = sentinel.command("SENTINEL", "REPLICAS", MASTER)
            return any(b"slave" in r and b"s_down" not in b" ".join(r) for r in reps) and \
                replica.command("INFO", "replication").find(b"master_link_status:up") >= 0

        wait_for(replica_known, timeout=30, what="the sentinel knows the replica, in sync")
        yield master, replica, sentinel
    finally:
        for n in reversed(nodes):
            n.stop()


def master_port(sentinel):
    host, port = sentinel.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER)
    return int(port)


def sentinel_conf(sentinels, **extra):
    redis = {"host": "127.0.0.1", "port": "1",  # nothing there: only the sentinels count
             "sentinels": sentinels, "sentinel_master": MASTER, "timeout_ms": "500"}
    redis.update(extra)
    return {"redis": redis}


def test_the_master_is_found_through_the_sentinels(start_predcache, model, sentinel_set):
    master, replica, sentinel = sentinel_set
    dead = free_port()  # the first sentinel listed does not answer: the next is asked
    p = start_predcache(conf=sentinel_conf("127.0.0.1:%d, 127.0.0.1:%d" % (dead,
                                                                          sentinel.port)))
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=15, what="redis up")
    assert "master '%s' is 127.0.0.1:%d" % (MASTER, master.port) in p.stderr_text()
    oracle = Oracle("sentinel")
    body = '{"instances": [["through sentinel"]]}'
    xs = []
    for _ in range(2):
        r = p.post(PREDICT, body=body, timeout=10)
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        xs.append(r.headers["X-Cache"])
        key = expected_key(PREDICT, canonical({"instances": [["through sentinel"]]}))
        wait_for(lambda: master.command("EXISTS", key) == 1, what="stored on the master")
    assert xs == ["MISS", "HIT"] and oracle.wrong == 0


class Load:
    """Clients sending checked requests (a pool of inputs, so hits and misses) until stop."""

    def __init__(self, p, clients=4, inputs=60):
        self.p, self.oracle = p, Oracle("sentinel failover")
        self.halt = threading.Event()
        self.failed = []
        self.bypass_at = []
        self.inputs = inputs
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(clients)]

    def run(self, idx):
        n = 0
        while not self.halt.is_set():
            n += 1
            body = '{"instances": [["failover", %d]]}' % ((n * 7 + idx) % self.inputs)
            try:
                r = self.p.post(PREDICT, body=body, timeout=10)
            except Exception as e:  # noqa: BLE001 (recorded, asserted)
                self.failed.append(repr(e))
                continue
            x = r.headers.get("X-Cache")
            if x == "BYPASS":
                self.bypass_at.append(time.monotonic())
            self.oracle.check("POST", PREDICT, body, {}, r.status_code, r.content, x)
            if r.status_code != 200:
                self.failed.append(r.status_code)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        for t in self.threads:
            t.join(20)


def test_sentinel_failover_under_load(start_predcache, model, sentinel_set):
    master, replica, sentinel = sentinel_set
    p = start_predcache(conf=sentinel_conf("127.0.0.1:%d" % sentinel.port),
                        args=["--workers", "2"])
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=15, what="redis up")
    with Load(p) as load:
        time.sleep(1.5)
        t0 = time.monotonic()
        assert sentinel.command("SENTINEL", "FAILOVER", MASTER) == "OK"
        wait_for(lambda: master_port(sentinel) == replica.port, timeout=30,
                 what="the sentinel names the replica as master")
        switched = time.monotonic() - t0
        # predcache writes to the new master: a new input's entry lands there
        body = '{"instances": [["after failover"]]}'
        key = expected_key(PREDICT, canonical({"instances": [["after failover"]]}))

        def stored_on_new_master():
            p.post(PREDICT, body=body, timeout=10)
            return replica.command("EXISTS", key) == 1

        wait_for(stored_on_new_master, timeout=20, interval=0.2,
                 what="entries stored on the new master")
        resumed = time.monotonic() - t0
        time.sleep(1.0)
    o = load.oracle
    window = (max(load.bypass_at) - min(load.bypass_at)) * 1000 if load.bypass_at else 0.0
    print("failover: sentinel switched in %.2f s, stores on the new master after %.2f s; "
          "answers %d, failed %d, wrong %d, BYPASS %d over %.0f ms; %s" % (
              switched, resumed, o.total, len(load.failed), o.wrong, len(load.bypass_at),
              window, dict(o.by_cache)))
    assert o.wrong == 0, o.samples
    assert load.failed == []
    assert o.total > 100
    # followed on the sentinel's +switch-master, not at the first refused write
    assert "sentinels switched master '%s' to 127.0.0.1:%d" % (MASTER, replica.port) in \
        p.stderr_text()


def test_sentinels_without_a_master_name_are_refused(predcache_bin, tmp_path):
    conf = tmp_path / "p.conf"
    conf.write_text("[redis]\nsentinels = 127.0.0.1:26379\n")
    r = subprocess.run([predcache_bin, "-c", str(conf), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "sentinel_master" in r.stderr
    conf.write_text("[redis]\nsentinels = 127.0.0.1\nsentinel_master = m\n")
    r = subprocess.run([predcache_bin, "-c", str(conf), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "not host:port" in r.stderr


def test_a_master_turned_replica_is_left_and_found_again(start_predcache, model, sentinel_set):
    """The master the sentinels named becomes a replica behind their back (REPLICAOF): its
    first refused write (READONLY) sends predcache back to the sentinels, and a master that
    says it is a replica (ROLE) is not used; meanwhile requests bypass the cache, and
    caching resumes once it is a master again."""
    master, replica, sentinel = sentinel_set
    p = start_predcache(conf=sentinel_conf("127.0.0.1:%d" % sentinel.port))
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=15, what="redis up")
    oracle = Oracle("readonly")

    def ask(i):
        body = '{"instances": [["readonly", %d]]}' % i
        r = p.post(PREDICT, body=body, timeout=10)
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        assert r.status_code == 200
        return r.headers["X-Cache"]

    assert ask(0) == "MISS"
    master.command("REPLICAOF", "127.0.0.1", str(replica.port))
    try:
        i = 1
        wait_for(lambda: ask(i) and "READONLY" in p.stderr_text(), timeout=10,
                 what="a write refused with READONLY")
        wait_for(lambda: "is not a master (ROLE slave)" in p.stderr_text(), timeout=10,
                 what="the replica refused by ROLE")
        assert p.metric("predcache_redis_up") == 0
        assert ask(2) in ("BYPASS", "MISS")
    finally:
        master.command("REPLICAOF", "NO", "ONE")
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=15, what="back on the master")
    key = expected_key(PREDICT, canonical({"instances": [["readonly", 3]]}))
    ask(3)
    wait_for(lambda: master.command("EXISTS", key) == 1, what="caching resumed")
    assert oracle.wrong == 0
