"""Redis Cluster under load while its topology changes: a manual failover, a master killed,
a slot range resharded (redis-cli --cluster reshard), per-instance batches during a
reshard, and two predcache processes coalescing through the cluster during a failover.

Each test runs a real cluster (tests/integration/rcluster.py: 3 masters, 3 replicas,
cluster-node-timeout 1000 ms), the test model server and predcache --workers 2 on it, and
a Load: client threads on keep-alive connections sending predict requests over thousands
of distinct inputs (so that misses, stores and Redis hits all run when the event comes),
every answer judged by the integrity oracle. The bar, for every test:

- every request answered 200 (predcache answers BYPASS when a master is unreachable or the
  cluster is down, never an error) and no wrong answer;
- caching resumes within seconds of the event: inputs never sent before become a MISS,
  their entry appears on the master that now owns their slot (asked directly, no
  redirection followed), and their second request is a HIT;
- predcache's gauges tell the cluster again (16384 slots covered, 3 masters, 3 up), and
  after a reshard under load it counted MOVED or ASK redirections.

Each test prints one line: requests sent, answered, failed, wrong, BYPASS answers and the
window between the first and the last one, how long the event took, the redirections
predcache counted, and how long until caching resumed.
"""

import binascii
import http.client
import json
import random
import threading
import time
from collections import Counter


from conftest import canonical, expected_key, wait_for
from oracle import Oracle
from rcluster import SLOTS, wait_covered

PREDICT = "/v1/models/m:predict"
HEADERS = {"Content-Type": "application/json"}
INPUTS = 3000          # distinct inputs of a load: most requests go to Redis
CLIENTS = 6            # load client threads
WARMUP_S = 2.0         # load before the event
AFTER_S = 1.5          # load after the event (and its checks)
RESUME_S = 10.0        # caching must resume within this many seconds of the event


# --------------------------------------------------------------------------- keys


def slot_of(key):
    """A key's slot (CRC16/XMODEM of its hash tag: binascii.crc_hqx with 0), as
    rcluster.key_slot computes it, in C: the tests place thousands of candidate inputs."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key.encode("utf-8"), 0) % SLOTS


def body_key(doc):
    """The key of a per-body entry (per_instance off; doc holds strings only). Valid once
    predcache is started (the key names the backend)."""
    return expected_key(PREDICT, canonical(doc))


def instance_key(x):
    """The key of one instance (a str of plain ASCII) of a per-instance batch."""
    return expected_key(PREDICT, "{}\n" + json.dumps(x), form="instance")


def body_doc(name):
    return {"instances": [[name]]}


def pick(names, key_of, want, n, limit=400000):
    """The first n names (from the iterable names) whose key's slot satisfies want(slot)."""
    out = []
    for i, name in enumerate(names):
        if i >= limit:
            break
        if want(slot_of(key_of(name))):
            out.append(name)
            if len(out) == n:
                return out
    raise AssertionError("only %d of %d candidates found" % (len(out), n))


def owner_map(cluster):
    """[owner Node] of every slot, from the cluster's current slot map."""
    owners = [None] * SLOTS
    for a, b, node in cluster.slot_map():
        for s in range(a, b + 1):
            owners[s] = node
    return owners


# --------------------------------------------------------------------------- predcache


def start_on(start_predcache, cluster, args=("--workers", "2"), **sections):
    p = start_predcache(conf=cluster.predcache_conf(**sections), args=list(args))
    wait_covered(p)
    return p


def counters(p):
    m = p.metrics()

    def get(name, **labels):
        return m.get((name, frozenset(labels.items())), 0.0)

    return {"moved": get("predcache_redis_redirects_total", kind="moved"),
            "ask": get("predcache_redis_redirects_total", kind="ask"),
            "refreshes": get("predcache_redis_cluster_refreshes_total"),
            "lock_waits": get("predcache_lock_waits_total"),
            "get_failed": get("predcache_redis_get_failed_total"),
            "store_failed": get("predcache_store_failed_total")}


def delta(before, after):
    return {k: int(after[k] - before[k]) for k in before}


def post(p, doc, oracle, timeout=15):
    """One checked request (its own connection); asserts a 200 and a right answer."""
    body = json.dumps(doc)
    r = p.post(PREDICT, body=body, timeout=timeout)
    reason = oracle.check("POST", PREDICT, body, HEADERS, r.status_code, r.content,
                          r.headers.get("X-Cache"))
    assert r.status_code == 200, "%s -> %d %s\npredcache stderr:\n%s" % (
        body[:100], r.status_code, r.text[:300], p.stderr_text()[-3000:])
    assert reason is None, "wrong answer (X-Cache %s) to %s: %s" % (
        r.headers.get("X-Cache"), body[:100], reason)
    return r


def on_owner(cluster, key):
    """The master that owns key's slot now, if it holds key (asked directly), else None."""
    owner = cluster.node_of_key(key)
    return owner if owner.command("EXISTS", key) == 1 else None


# --------------------------------------------------------------------------- load


class Load:
    """CLIENTS threads, each on its own keep-alive connection to one of procs (thread i to
    procs[i % len(procs)]), sending next_doc(rng, i, n) until stopped; every answer is
    judged by one oracle. seed_of(i) seeds thread i's random.Random (threads given the same
    seed send the same sequence of inputs)."""

    def __init__(self, procs, next_doc, name, clients=CLIENTS, per_instance=False,
                 seed_of=None):
        self.procs = procs
        self.next_doc = next_doc
        self.seed_of = seed_of or (lambda i: 1000 + i)
        self.oracle = Oracle(name, per_instance=per_instance)
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.answered = 0
        self.failed = 0
        self.failures = []       # the first few: what was sent, what came back
        self.bypass_at = []      # monotonic times of BYPASS answers
        self.by_cache = Counter()
        self.event = None        # (start, end) of the event, monotonic
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(clients)]

    def run(self, idx):
        rng = random.Random(self.seed_of(idx))
        p = self.procs[idx % len(self.procs)]
        conn, n = None, 0
        while not self.halt.is_set():
            doc = self.next_doc(rng, idx, n)
            n += 1
            body = json.dumps(doc).encode()
            with self.lock:
                self.sent += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", p.listen_port, timeout=20)
                conn.request("POST", PREDICT, body=body, headers=HEADERS)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 (recorded, asserted)
                if conn is not None:
                    conn.close()
                    conn = None
                self.oracle.fail("%s: %s" % (type(e).__name__, e))
                self.failure("%s -> no answer: %r" % (body[:100], e))
                continue
            x = resp.getheader("X-Cache") or "-"
            reason = self.oracle.check("POST", PREDICT, body, HEADERS, resp.status, data, x)
            with self.lock:
                self.answered += 1
                self.by_cache[x] += 1
                if x == "BYPASS":
                    self.bypass_at.append(time.monotonic())
            if resp.status != 200:
                self.failure("%s -> %d X-Cache %s: %r" % (body[:100], resp.status, x,
                                                          data[:300]))
            elif reason is not None:
                self.failure("%s -> wrong (X-Cache %s): %s" % (body[:100], x, reason))
        if conn is not None:
            conn.close()

    def failure(self, what):
        with self.lock:
            if not what.split(" -> ", 1)[1].startswith("wrong"):
                self.failed += 1
            if len(self.failures) < 10:
                self.failures.append("%.3f s: %s" % (time.monotonic() - self.t0, what))

    def __enter__(self):
        self.t0 = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads), "load threads still running"

    def mark(self, start, end):
        self.event = (start, end)

    def bypass_window_ms(self):
        if not self.bypass_at:
            return 0.0
        return (max(self.bypass_at) - min(self.bypass_at)) * 1000.0

    def line(self, what, took, redirected, resumed, bypassed=0):
        o = self.oracle
        where = ""
        if self.bypass_at and self.event:
            where = " (from %+.0f ms of the event's start)" % (
                (min(self.bypass_at) - self.event[0]) * 1000.0)
        return ("%s: sent %d, answered %d, failed %d, wrong %d, BYPASS %d over %.0f ms%s; "
                "event took %.2f s; redirects moved %d ask %d, slot map reads %d; caching "
                "resumed %.2f s after the event (new inputs answered BYPASS first: %d); "
                "Redis GETs failed %d, stores failed %d; X-Cache %s" % (
                    what, self.sent, self.answered, self.failed, o.wrong,
                    len(self.bypass_at), self.bypass_window_ms(), where, took,
                    redirected["moved"], redirected["ask"], redirected["refreshes"], resumed,
                    bypassed, redirected["get_failed"], redirected["store_failed"],
                    dict(sorted(self.by_cache.items()))))

    def assert_clean(self, p_list, minimum=300):
        o = self.oracle
        stderr = "\n".join("predcache %d stderr tail:\n%s" % (i, p.stderr_text()[-3000:])
                           for i, p in enumerate(p_list))
        detail = "\n  ".join([o.report()] + o.samples + self.failures)
        assert o.wrong == 0, "wrong answers:\n  %s\n%s" % (detail, stderr)
        assert self.failed == 0 and self.sent == self.answered, \
            "%d failed of %d sent (%d answered):\n  %s\n%s" % (
                self.failed, self.sent, self.answered, detail, stderr)
        assert self.answered > minimum, "only %d answers under load" % self.answered


def caching_resumes(p, cluster, oracle, prefix, event_end, targets, timeout=RESUME_S):
    """Inputs never sent before, one for each slot predicate of targets (named prefix-N,
    the first N whose key's slot satisfies it): its first request must be a MISS (a
    BYPASS, until event_end + timeout, moves on to another new input: a BYPASS answer
    may still store its entry), its entry must appear on the master that owns its slot now
    (asked directly, no redirection followed) and its second request must be a HIT (BYPASS
    answers before it, until the deadline, are counted: a connection the role change
    dropped may still be made again). Returns the seconds from event_end to the first input cached so, the owners' ports (in
    the order of targets) and the number of BYPASS answers met."""
    deadline = event_end + timeout
    first, owners, bypassed = None, [], 0
    counter = iter(range(10 ** 6))
    for want in targets:
        while True:
            name = "%s-%d" % (prefix, next(counter))
            doc = body_doc(name)
            key = body_key(doc)
            if not want(slot_of(key)):
                continue
            r = post(p, doc, oracle)
            x = r.headers.get("X-Cache")
            if x != "BYPASS":
                break
            bypassed += 1
            assert time.monotonic() < deadline, \
                "caching has not resumed %.1f s after the event: a new input is still a " \
                "BYPASS\npredcache stderr:\n%s" % (timeout, p.stderr_text()[-3000:])
            time.sleep(0.1)
        assert x == "MISS", "the first request of a new input (%s) after the event: X-Cache " \
            "%s" % (name, x)
        assert r.headers.get("X-Cache-Key") == key
        try:
            owner = wait_for(lambda: on_owner(cluster, key), timeout=max(
                3.0, deadline - time.monotonic()), interval=0.05,
                what="%s on the master that owns slot %d" % (key, slot_of(key)))
        except AssertionError as e:
            raise AssertionError("%s; where it is: %s\npredcache stderr:\n%s" % (
                e, {m.port: m.command("EXISTS", key) for m in cluster.masters()},
                p.stderr_text()[-3000:]))
        # Its entry is on its owner: the second request is a HIT, or, while the cluster's
        # connections still settle (a node's connection dropped by the role change), a
        # BYPASS answered by the model server; never anything else, and a HIT before the
        # deadline.
        while True:
            r = post(p, doc, oracle)
            x = r.headers.get("X-Cache")
            if x != "BYPASS" or time.monotonic() >= deadline:
                break
            bypassed += 1
            time.sleep(0.1)
        assert x == "HIT", \
            "the second request of a new input (%s) after the event: X-Cache %s\n" \
            "predcache stderr:\n%s" % (name, x, p.stderr_text()[-3000:])
        if first is None:
            first = time.monotonic() - event_end
        owners.append(owner.port)
    return first, owners, bypassed


def check_gauges_after(p, before, timeout=15.0):
    """3 masters, all up, every slot covered; the slot map was read again; predcache's
    Redis is up."""
    wait_covered(p, timeout=timeout, what="predcache's gauges back to 16384 slots, 3 masters, "
                                         "3 up")
    after = counters(p)
    assert after["refreshes"] > before["refreshes"], "no slot map read since the event"
    assert p.metric("predcache_redis_up") == 1
    return after


# --------------------------------------------------------------------------- tests


def load_inputs(prefix):
    names = ["%s-%d" % (prefix, i) for i in range(INPUTS)]
    return lambda rng, idx, n: body_doc(names[rng.randrange(len(names))])


def test_manual_failover_under_load(redis_cluster, start_predcache, model):
    """CLUSTER FAILOVER on the replica of one master while 6 clients send 3000 distinct
    inputs; the in-process tier on, but smaller than the entries of the load (most hits
    still read Redis)."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, cache={"l1_max_bytes": "256k",
                                                  "l1_ttl_ms": "60000"})
    victim = cluster.masters()[1]
    replica = cluster.replica_of(victim)
    c0 = counters(p)
    with Load([p], load_inputs("failover"), "cluster failover") as load:
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        took = cluster.failover(replica)
        t1 = time.monotonic()
        load.mark(t0, t1)
        assert replica.myself().is_master and not victim.myself().is_master
        owners = owner_map(cluster)
        resumed, where, bypassed = caching_resumes(
            p, cluster, load.oracle, "after-failover", t1,
            [lambda s: owners[s] is replica] * 4 + [lambda s: owners[s] is not replica] * 2)
        time.sleep(AFTER_S)
    assert where[:4] == [replica.port] * 4
    c1 = check_gauges_after(p, c0)
    red = delta(c0, c1)
    print(load.line("manual failover (l1 256k)", took, red, resumed, bypassed))
    load.assert_clean([p])
    assert resumed < RESUME_S


def test_a_moved_to_a_promoted_replica_is_followed(redis_cluster, start_predcache, model):
    """CLUSTER FAILOVER, no load: no master went down, so predcache hears of the failover
    from the first command sent to the old master, which answers MOVED to the promoted
    replica (a node it has no connection to yet). That MOVED is followed like any other
    (the spec: MOVED updates the map and the command is resent): the first request of a new
    input in that master's slots is a MISS, not a BYPASS; its store lands on the new
    master; no GET nor SET failed. (When predcache's periodic map read (every 5 s) comes
    between the failover and the request, it knew already: the test then proves less.)"""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, args=["--workers", "1"])
    oracle = Oracle("moved to a promoted replica", per_instance=False)
    victim = cluster.masters()[1]
    replica = cluster.replica_of(victim)
    before = p.metrics()
    took = cluster.failover(replica)
    owners = owner_map(cluster)
    reads = counters(p)["refreshes"]
    names = [n for n in ("promoted-%d" % i for i in range(2000))
             if owners[slot_of(body_key(body_doc(n)))] is replica][:3]
    caches = [post(p, body_doc(n), oracle).headers["X-Cache"] for n in names]
    after = p.metrics()
    failed = {name: int(after.get((name, frozenset()), 0) - before.get((name, frozenset()), 0))
              for name in ("predcache_redis_get_failed_total", "predcache_store_failed_total")}
    moved = counters(p)["moved"]
    knew = counters(p)["refreshes"] > reads and moved == 0
    print("failover in %.2f s; the first requests on the promoted master: %s; failed %s; "
          "MOVED counted %d%s" % (took, caches, failed, moved,
                                 "; the map was read before them" if knew else ""))
    lines = [l for l in p.stderr_text().splitlines() if "MOVED" in l][:10]
    assert caches == ["MISS"] * len(caches) and not any(failed.values()), \
        "a MOVED to the promoted replica %s was not followed: X-Cache %s, %s\n" \
        "predcache stderr:\n%s" % (replica.addr, caches, failed, "\n".join(lines))
    for n in names:
        key = body_key(body_doc(n))
        wait_for(lambda: replica.command("EXISTS", key) == 1, timeout=5,
                 what="%s on the promoted master" % key)
        assert post(p, body_doc(n), oracle).headers["X-Cache"] == "HIT"
    oracle.assert_clean()


def test_killed_master_under_load(redis_cluster, start_predcache, model):
    """SIGKILL to a master while the load runs (the in-process tier off: every hit is a
    Redis GET): its slots are unreachable until its replica takes over (about two node
    timeouts); meanwhile their requests are answered BYPASS, never an error."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, cache={"l1_max_bytes": "0"})
    victim = cluster.masters()[2]
    replica = cluster.replica_of(victim)
    c0 = counters(p)
    with Load([p], load_inputs("killed"), "cluster master killed") as load:
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        cluster.kill(victim)
        wait_for(lambda: replica.myself().is_master, timeout=30, interval=0.05,
                 what="the replica of the killed master to take over")
        cluster.wait_ok(timeout=30)
        t1 = time.monotonic()
        load.mark(t0, t1)
        # predcache's own view: the dead master gone from its map, 3 masters up
        wait_covered(p, timeout=10, what="predcache to see 3 masters up after the takeover")
        owners = owner_map(cluster)
        resumed, where, bypassed = caching_resumes(
            p, cluster, load.oracle, "after-kill", t1,
            [lambda s: owners[s] is replica] * 4 + [lambda s: owners[s] is not replica] * 2)
        time.sleep(AFTER_S)
    assert where[:4] == [replica.port] * 4
    c1 = check_gauges_after(p, c0)
    red = delta(c0, c1)
    print(load.line("master killed (l1 off)", t1 - t0, red, resumed, bypassed))
    load.assert_clean([p])
    assert resumed < RESUME_S
    assert load.bypass_at, "no BYPASS while a master was down: were its slots used?"


RESHARD_SLOTS = 1000


def test_reshard_under_load(redis_cluster, start_predcache, model):
    """redis-cli --cluster reshard moves 1000 slots (and their keys) from one master to
    another while the load runs; half of the load's inputs live in the slots moved, so
    predcache meets MOVED (a slot already moved) and ASK (a key not on the migrating
    master). Entries cached before the move are HITs after it, on their new master."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, cache={"l1_max_bytes": "0"})
    src, dst = cluster.masters()[0], cluster.masters()[1]
    moving = set(cluster.slots_of(src)[:RESHARD_SLOTS])
    names = ("reshard-%d" % i for i in range(10 ** 6))
    inside = pick(names, lambda n: body_key(body_doc(n)), lambda s: s in moving, INPUTS // 2)
    outside = ["reshard-out-%d" % i for i in range(INPUTS - len(inside))]
    pool = inside + outside
    oracle = Oracle("reshard setup", per_instance=False)
    # cached before: some of the moving range's inputs, checked on src
    known = inside[:20]
    for n in known:
        post(p, body_doc(n), oracle)
    for n in known:
        wait_for(lambda: on_owner(cluster, body_key(body_doc(n))) is src,
                 what="%s cached on the source master" % n)
    c0 = counters(p)
    with Load([p], lambda rng, idx, n: body_doc(pool[rng.randrange(len(pool))]),
              "cluster reshard") as load:
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        took = cluster.reshard(src, dst, RESHARD_SLOTS)
        t1 = time.monotonic()
        load.mark(t0, t1)
        owners = owner_map(cluster)
        assert all(owners[s] is dst for s in moving), "the slots moved are not all on dst"
        for n in known:
            assert on_owner(cluster, body_key(body_doc(n))) is dst, "%s not moved" % n
        resumed, where, bypassed = caching_resumes(
            p, cluster, load.oracle, "after-reshard", t1,
            [lambda s: s in moving] * 4 + [lambda s: s not in moving] * 2)
        # entries cached before the move: HITs, read from their new master
        for n in known:
            r = post(p, body_doc(n), load.oracle)
            assert r.headers.get("X-Cache") == "HIT", (n, r.headers.get("X-Cache"))
        time.sleep(AFTER_S)
    assert where[:4] == [dst.port] * 4
    c1 = check_gauges_after(p, c0)
    red = delta(c0, c1)
    print(load.line("reshard %d slots (l1 off)" % RESHARD_SLOTS, took, red, resumed, bypassed))
    load.assert_clean([p])
    assert red["moved"] + red["ask"] > 0, "no MOVED nor ASK counted during a reshard under " \
        "load: %r" % red
    assert resumed < RESUME_S
    assert oracle.wrong == 0


BATCH = 20
KNOWN_PER_BATCH = 14   # cached before the load
POOL_PER_BATCH = 4     # from a pool of 3000 new at first (cached as the load goes)
UNIQUE_PER_BATCH = BATCH - KNOWN_PER_BATCH - POOL_PER_BATCH   # never sent before


def test_batches_during_a_reshard(redis_cluster, start_predcache, model):
    """Per-instance TF Serving batches of 20 (14 instances cached before, 4 from a pool of
    3000 not sent before the load, 2 more from that pool or, in every other batch, never
    sent before) while 1000 slots move: each batch's lookups are split
    per slot (one MGET per slot), redirected as the slots move; every batch answer is
    judged per instance."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, cache={"l1_max_bytes": "0", "per_instance": "on"})
    src, dst = cluster.masters()[2], cluster.masters()[0]
    moving = set(cluster.slots_of(src)[:RESHARD_SLOTS])
    known = pick(("known-%d" % i for i in range(10 ** 6)), instance_key,
                 lambda s: s in moving, 300)
    known += ["known-out-%d" % i for i in range(300)]
    new = pick(("new-%d" % i for i in range(10 ** 6)), instance_key,
               lambda s: s in moving, INPUTS // 2)
    new += ["new-out-%d" % i for i in range(INPUTS - len(new))]
    setup = Oracle("batch setup")
    for i in range(0, len(known), BATCH):
        post(p, {"instances": known[i:i + BATCH]}, setup)
    wait_for(lambda: all(cluster.node_of_key(instance_key(x)).command(
        "EXISTS", instance_key(x)) for x in known[:300:15]), what="known instances stored")
    r = post(p, {"instances": known[:BATCH]}, setup)
    assert (r.headers["X-Cache"], r.headers.get("X-Cache-Hits")) == ("HIT", "20/20")

    def batch(rng, idx, n):
        xs = rng.sample(known, KNOWN_PER_BATCH) + rng.sample(new, POOL_PER_BATCH)
        if n % 2:  # every other batch: 2 instances never sent before
            xs += ["unique-%d-%d-%d" % (idx, n, i) for i in range(UNIQUE_PER_BATCH)]
        else:
            xs += rng.sample(new, UNIQUE_PER_BATCH)
        rng.shuffle(xs)
        return {"instances": xs}

    c0 = counters(p)
    with Load([p], batch, "cluster batches reshard", per_instance=True) as load:
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        took = cluster.reshard(src, dst, RESHARD_SLOTS)
        t1 = time.monotonic()
        load.mark(t0, t1)
        owners = owner_map(cluster)
        assert all(owners[s] is dst for s in moving)
        # 20 instances never sent, 10 of them in the slots moved: a MISS, every entry on
        # its slot's master now, then a HIT 20/20 (after a BYPASS, 20 others: a BYPASS
        # answer may still store its entries)
        deadline = t1 + RESUME_S
        candidates = ("fresh-%d" % i for i in range(10 ** 6))
        bypassed = 0
        for attempt in range(1000):
            fresh = pick(candidates, instance_key, lambda s: s in moving, 10)
            fresh += ["fresh-out-%d-%d" % (attempt, i) for i in range(10)]
            doc = {"instances": fresh}
            r = post(p, doc, load.oracle)
            if r.headers["X-Cache"] != "BYPASS" or time.monotonic() > deadline:
                break
            bypassed += 1
            time.sleep(0.1)
        assert (r.headers["X-Cache"], r.headers.get("X-Cache-Hits")) == ("MISS", "0/20"), \
            "new instances after the reshard: %s %s" % (r.headers["X-Cache"],
                                                        r.headers.get("X-Cache-Hits"))
        for x in fresh:
            key = instance_key(x)
            wait_for(lambda: on_owner(cluster, key), timeout=max(3.0, deadline -
                                                                 time.monotonic()),
                     what="instance %s on its slot's master" % x)
        assert all(cluster.node_of_key(instance_key(x)) is dst for x in fresh[:10])
        r = post(p, doc, load.oracle)
        assert (r.headers["X-Cache"], r.headers.get("X-Cache-Hits")) == ("HIT", "20/20"), \
            "their second request: %s %s\npredcache stderr:\n%s" % (
                r.headers["X-Cache"], r.headers.get("X-Cache-Hits"), p.stderr_text()[-3000:])
        resumed = time.monotonic() - t1
        # instances cached before the move, now on dst: a HIT
        moved_known = known[:BATCH]
        assert all(on_owner(cluster, instance_key(x)) is dst for x in moved_known)
        r = post(p, {"instances": moved_known}, load.oracle)
        assert (r.headers["X-Cache"], r.headers.get("X-Cache-Hits")) == ("HIT", "20/20"), \
            (r.headers["X-Cache"], r.headers.get("X-Cache-Hits"))
        time.sleep(AFTER_S)
    c1 = check_gauges_after(p, c0)
    red = delta(c0, c1)
    print(load.line("batches of %d during a reshard of %d slots (l1 off, per-instance)" % (
        BATCH, RESHARD_SLOTS), took, red, resumed, bypassed) + "; merged %d" % load.oracle.merged)
    load.assert_clean([p])
    assert red["moved"] + red["ask"] > 0, "no MOVED nor ASK counted: %r" % red
    assert setup.wrong == 0


HERD_INPUTS = 1000


def test_two_processes_coalescing_during_a_failover(redis_cluster, start_predcache, model):
    """Two predcache processes on the cluster; pairs of clients send the same inputs at
    the same time, one to each process, while the model takes 50 ms: the second of a
    pair waits on the first's lock (across processes) and is told by the cluster-wide
    announcement. A master fails over in the middle: no answer may be wrong or fail."""
    cluster = redis_cluster
    p1 = start_on(start_predcache, cluster, cache={"l1_max_bytes": "0"})
    p2 = start_on(start_predcache, cluster, cache={"l1_max_bytes": "0"})
    model.control(delay_ms=50)
    victim = cluster.masters()[0]
    replica = cluster.replica_of(victim)
    c0 = [counters(p) for p in (p1, p2)]
    names = ["herd-%d" % i for i in range(HERD_INPUTS)]
    with Load([p1, p2], lambda rng, idx, n: body_doc(names[rng.randrange(len(names))]),
              "cluster coalescing failover", clients=8,
              seed_of=lambda i: 2000 + i // 2) as load:
        time.sleep(WARMUP_S)
        t0 = time.monotonic()
        took = cluster.failover(replica)
        t1 = time.monotonic()
        load.mark(t0, t1)
        owners = owner_map(cluster)
        resumed, where, bypassed = caching_resumes(
            p1, cluster, load.oracle, "after-herd", t1, [lambda s: owners[s] is replica] * 3)
        time.sleep(AFTER_S)
    c1 = [check_gauges_after(p, c) for p, c in zip((p1, p2), c0)]
    red = {k: sum(delta(a, b)[k] for a, b in zip(c0, c1)) for k in c0[0]}
    print(load.line("2 processes coalescing, failover", took, red, resumed, bypassed) +
          "; lock waits %d" % red["lock_waits"])
    load.assert_clean([p1, p2], minimum=100)
    assert red["lock_waits"] > 0, "no request waited on another's lock: no coalescing seen"
