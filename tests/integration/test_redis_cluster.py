"""Redis Cluster ([redis] cluster = on, host/port and nodes as seeds).

A real cluster on loopback for every test (tests/integration/rcluster.py: 3 masters and 3
replicas of Debian's redis-server 7.0, created with redis-cli --cluster create). predcache
reads the slot map (CLUSTER SLOTS), keeps a connection per master per worker, sends each
command to the master of its key's slot, follows MOVED (a new map) and ASK (ASKING, then
the command on the node named), and answers BYPASS when told CLUSTERDOWN or TRYAGAIN.
Entries are checked on the master that owns their slot, asked directly (no redirection
followed), so a misrouted write cannot pass unseen. Every predict answer is judged by the
integrity oracle.

Failovers, killed masters and resharding under load are in test_redis_cluster_failover.py.
"""

import json
import subprocess
import time
from collections import Counter

import requests

from conftest import (HTTP_TIMEOUT, canonical, concurrently, expected_key, wait_for,
                      without_received)
from jobs import ROUTE, job_id_of, poll, submit, wait_done
from oracle import Oracle
from rcluster import SLOTS, key_slot, wait_covered

PREDICT = "/v1/models/m:predict"
JOB_STREAM = "predcache:jobs:{default}"
JOB_RECORD = "predcache:job:{default}:"
L1 = {"l1_max_bytes": "4m", "l1_ttl_ms": "60000"}


# --------------------------------------------------------------------------- helpers


def start_on(start_predcache, cluster, args=(), **sections):
    """predcache on the cluster, once it has read a slot map that covers every slot and
    connected to the 3 masters."""
    p = start_predcache(conf=cluster.predcache_conf(**sections), args=args)
    wait_covered(p, what="predcache to cover %d slots with 3 masters up" % SLOTS)
    return p


def ask(p, oracle, doc, headers=None, path=PREDICT):
    """POSTs the JSON document doc; judges the answer; asserts 200."""
    body = json.dumps(doc)
    r = p.post(path, body=body, headers=headers)
    oracle.check("POST", path, body, headers or {}, r.status_code, r.content,
                 r.headers.get("X-Cache"))
    assert r.status_code == 200, "%s %s -> %d %s\npredcache stderr:\n%s" % (
        path, body[:80], r.status_code, r.text[:300], p.stderr_text()[-2000:])
    return r


def clean(oracle):
    """No wrong answer, and no answer other than 200 (the waits below retry on anything,
    so an error answer must not pass unseen)."""
    oracle.assert_clean()
    assert not oracle.non_200 and not oracle.failed, oracle.report()


def body_key(doc):
    """The key of a per-body entry (per_instance off); doc holds no numbers (the key
    writes numbers in a form of its own: test_instances.key_number)."""
    return expected_key(PREDICT, canonical(doc))


def instance_key(x):
    """The key of one instance of a per-instance batch without signature_name (see
    test_instances.instance_key); x a str of plain ASCII."""
    return expected_key(PREDICT, "{}\n" + json.dumps(x), form="instance")


def wait_on_owner(cluster, key, timeout=10.0):
    """Waits for key on the master that owns its slot, asked directly (a write sent to
    another master would have been refused there with MOVED); returns that master."""
    owner = cluster.node_of_key(key)
    wait_for(lambda: owner.command("EXISTS", key) == 1, timeout=timeout,
             what="%s on its slot's master %r" % (key, owner))
    return owner


def redirects(p, kind):
    return p.metric("predcache_redis_redirects_total", kind=kind)


def refreshes(p):
    return p.metric("predcache_redis_cluster_refreshes_total")


def other_master(cluster, node):
    return next(m for m in cluster.masters() if m is not node)


# --------------------------------------------------------------------------- routing


def test_entries_land_on_the_master_that_owns_their_slot(start_predcache, model,
                                                         redis_cluster):
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, args=["--workers", "2"])
    oracle = Oracle("cluster placement", per_instance=False)
    docs = [{"instances": [["cluster-%d" % i]]} for i in range(300)]
    keys = []
    for doc in docs:
        r = ask(p, oracle, doc)
        assert r.headers["X-Cache"] == "MISS", doc
        assert r.headers["X-Cache-Key"] == body_key(doc)
        keys.append(body_key(doc))
    per_master = Counter(wait_on_owner(cluster, key).port for key in keys)
    assert set(per_master) == {m.port for m in cluster.masters()}, per_master
    assert model.count(PREDICT) == 300

    for doc in docs:
        r = ask(p, oracle, doc)
        assert r.headers["X-Cache"] == "HIT", doc
    assert model.count(PREDICT) == 300, "hits must not reach the model server"
    assert set(keys) <= set(cluster.keys("predcache:v2:*"))
    print("entries per master: %s" % dict(per_master))
    clean(oracle)


def test_metrics_and_ready_tell_the_cluster(start_predcache, model, redis_cluster):
    p = start_on(start_predcache, redis_cluster)
    m = p.metrics()
    assert m[("predcache_redis_cluster_slots_covered", frozenset())] == SLOTS
    assert m[("predcache_redis_cluster_masters", frozenset())] == 3
    assert m[("predcache_redis_cluster_masters_up", frozenset())] == 3
    for kind in ("moved", "ask"):
        series = ("predcache_redis_redirects_total", frozenset({("kind", kind)}))
        assert series in m, 'no predcache_redis_redirects_total{kind="%s"} in /metrics' % kind
    assert m.get(("predcache_redis_cluster_refreshes_total", frozenset()), 0) >= 1, \
        "the slot map read at start is counted"

    r = requests.get(p.admin("/ready"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["redis"] == "ok", r.text  # the shape every topology shares
    part = doc.get("redis_cluster")
    assert isinstance(part, dict), "GET /ready: no \"redis_cluster\": {...} in %s" % r.text
    want = {"slots_covered": SLOTS, "masters": 3, "masters_up": 3}
    assert {k: part.get(k) for k in want} == want, r.text
    assert set(part["redirects"]) == {"moved", "ask"}, r.text
    # per master (worker 0's view): its address, slots, connection up, commands pending
    masters = {n.addr for n in redis_cluster.masters()}
    nodes = part["nodes"]
    assert {n["node"] for n in nodes} == masters, r.text
    assert sum(n["slots"] for n in nodes) == SLOTS and all(n["up"] for n in nodes), r.text
    for addr in masters:
        assert m[("predcache_redis_cluster_node_up", frozenset({("node", addr)}))] == 1
        assert m[("predcache_redis_cluster_node_slots", frozenset({("node", addr)}))] > 5000

    # a master down (killed; its replica may not take over) shows in its node's gauge and in
    # /ready, which says Redis is degraded (its slots' requests BYPASS) but stays ready;
    # restarted, it is up again
    victim = redis_cluster.masters()[1]
    replica = redis_cluster.replica_of(victim)
    assert replica.command("CONFIG", "SET", "cluster-replica-no-failover", "yes") == "OK"
    redis_cluster.kill(victim)
    wait_for(lambda: p.metric("predcache_redis_cluster_node_up", node=victim.addr) == 0,
             timeout=10, what="the killed master's connection down")
    r = requests.get(p.admin("/ready"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["redis"] == "down", r.text
    assert "redis unavailable" in r.json()["degraded"], r.text
    down = [n for n in r.json()["redis_cluster"]["nodes"] if not n["up"]]
    assert [n["node"] for n in down] == [victim.addr], r.text
    redis_cluster.restart(victim)
    wait_for(lambda: p.metric("predcache_redis_cluster_node_up", node=victim.addr) == 1,
             timeout=20, what="the master's connection back")


def test_grace_answers_stale_and_refreshes_on_the_owner(start_predcache, model, redis_cluster):
    """An entry past its TTL, within grace, is answered STALE at once and refreshed behind;
    the refreshed entry is written to the master that owns its slot."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster, cache={"ttl_s": "1", "grace_s": "60"})
    oracle = Oracle("cluster grace")
    seen = []
    # Keys hold the model server's address (its port differs every run): twelve of them
    # miss one of three masters in about 2 % of runs. Entries until all three own some.
    for i in range(64):
        if len(seen) >= 12 and len({o.port for _, _, o, _ in seen}) == 3:
            break
        doc = {"instances": [["grace", i]]}
        r1 = ask(p, oracle, doc)
        assert r1.headers["X-Cache"] == "MISS"
        key = r1.headers["X-Cache-Key"]
        owner = cluster.node_of_key(key)
        wait_for(lambda: owner.command("EXISTS", key) == 1, what="stored on its owner")
        seen.append((doc, key, owner, r1.json()["call"]))
    time.sleep(1.3)
    for doc, key, owner, call in seen:
        r2 = ask(p, oracle, doc)
        assert r2.headers["X-Cache"] == "STALE", r2.headers
        assert r2.json()["call"] == call  # the old answer, at once
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == len(seen), what="refreshes")
    for doc, key, owner, call in seen:
        def refreshed():
            r = ask(p, oracle, doc)
            return r.headers["X-Cache"] == "HIT" and r.json()["call"] != call
        wait_for(refreshed, timeout=10, what="the refreshed entry served")
    assert len({o.port for _, _, o, _ in seen}) == 3
    clean(oracle)


def test_per_instance_batches_are_read_and_merged_across_slots(start_predcache, model,
                                                               redis_cluster):
    cluster = redis_cluster
    model.control(stable=True)
    p = start_on(start_predcache, cluster, cache={"per_instance": "on"})
    oracle = Oracle("cluster batches")
    known = ["known-%d" % i for i in range(50)]
    first = ask(p, oracle, {"instances": known})
    assert (first.headers["X-Cache"], first.headers["X-Cache-Hits"]) == ("MISS", "0/50")
    owners = Counter(wait_on_owner(cluster, instance_key(x)).port for x in known)
    assert len(owners) == 3, "50 instances over 3 masters: %s" % dict(owners)
    calls = model.count(PREDICT)

    again = ask(p, oracle, {"instances": known})
    assert (again.headers["X-Cache"], again.headers["X-Cache-Hits"]) == ("HIT", "50/50")
    assert without_received(again.content) == without_received(first.content)
    assert model.count(PREDICT) == calls

    new = ["new-%d" % i for i in range(25)]
    mixed = [x for pair in zip(known[::2], new) for x in pair]  # 25 known, 25 new
    r = ask(p, oracle, {"instances": mixed})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("PARTIAL", "25/50")
    assert model.count(PREDICT) == calls + 1
    assert json.loads(model.last()["body"])["instances"] == new, "only the missing ones"
    for x in new:
        wait_on_owner(cluster, instance_key(x))
    r = ask(p, oracle, {"instances": mixed})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "50/50")
    assert model.count(PREDICT) == calls + 1
    clean(oracle)


# --------------------------------------------------------------------------- processes


def test_two_processes_coalesce_across_the_cluster(start_predcache, model, redis_cluster):
    """100 inputs, each sent 4 times at once (twice to each process): one model call
    each. The lock key is in its entry's slot; the waiter in the other process hears
    the leader's announcement (cluster-wide PUBLISH)."""
    p1 = start_on(start_predcache, redis_cluster)
    p2 = start_on(start_predcache, redis_cluster)
    model.control(delay_ms=500)
    oracle = Oracle("cluster coalescing", per_instance=False)
    docs = [{"instances": [["herd-%d" % i]]} for i in range(100)]
    copies = 4

    def one(i):
        doc = docs[i % len(docs)]
        p = p1 if (i // len(docs)) % 2 == 0 else p2
        body = json.dumps(doc)
        r = p.post(PREDICT, body=body, timeout=30)
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        return r

    rs = concurrently(len(docs) * copies, one, join_s=90)
    bad = [r if isinstance(r, Exception) else (r.status_code, r.text[:100])
           for r in rs if isinstance(r, Exception) or r.status_code != 200]
    assert not bad, bad[:5]
    assert model.count(PREDICT) == len(docs), "one model call per input"
    for i in range(len(docs)):
        answers = [rs[i + k * len(docs)] for k in range(copies)]
        assert len({r.content for r in answers}) == 1, docs[i]
        caches = [r.headers["X-Cache"] for r in answers]
        assert caches.count("MISS") == 1 and set(caches) <= {"MISS", "COALESCED", "HIT"}, \
            (docs[i], caches)
    waited = p1.metric("predcache_lock_waits_total") + p2.metric("predcache_lock_waits_total")
    assert waited >= 1
    assert p1.metric("predcache_lock_timeouts_total") + \
        p2.metric("predcache_lock_timeouts_total") == 0, "notified, not timed out"
    clean(oracle)


def test_jobs_keep_one_hash_tag_per_namespace(start_predcache, model, redis_cluster):
    """A submit-only process and a runner: the stream predcache:jobs:{default} and the
    records predcache:job:{default}:<id> share one slot, so every job script runs on one
    master."""
    cluster = redis_cluster
    front = start_on(start_predcache, cluster, jobs={"concurrency": "0"})
    runner = start_on(start_predcache, cluster)
    oracle = Oracle("cluster jobs", per_instance=False)
    bodies = [{"instances": [["job-%d" % i]]} for i in range(10)]
    ids = [job_id_of(submit(front, body)) for body in bodies]
    for job_id, body in zip(ids, bodies):
        done = wait_done(front, job_id)
        oracle.check("POST", ROUTE, json.dumps(body), {}, done.status_code, done.content,
                     done.headers.get("X-Cache"))
        assert done.status_code == 200 and done.headers["X-Job-Status"] == "done", done.text
        assert poll(runner, job_id).content == done.content, "either process answers"
    assert model.count(ROUTE) == len(bodies)

    slot = key_slot(JOB_STREAM)
    owner = cluster.owner_of_slot(slot)
    assert owner.command("TYPE", JOB_STREAM) == "stream"
    for job_id in ids:
        key = JOB_RECORD + job_id
        assert key_slot(key) == slot
        raw = owner.command("HGETALL", key)
        rec = {raw[i].decode(): raw[i + 1] for i in range(0, len(raw), 2)}
        assert rec.get("state") == b"done", (key, rec)
    wait_for(lambda: owner.command("XLEN", JOB_STREAM) == 0, what="the stream emptied")
    stray = [k for k in cluster.keys("predcache:job*")
             if k != JOB_STREAM and not k.startswith(JOB_RECORD)]
    assert stray == [], "job keys outside the namespace's hash tag"

    # a job whose answer is cached completes from the cache
    job_id = job_id_of(submit(front, bodies[0]))
    done = wait_done(front, job_id)
    oracle.check("POST", ROUTE, json.dumps(bodies[0]), {}, done.status_code, done.content,
                 done.headers.get("X-Cache"))
    assert done.status_code == 200 and done.headers["X-Cache"] == "HIT"
    assert model.count(ROUTE) == len(bodies)
    clean(oracle)


def test_purge_deletes_on_the_owner_and_reaches_every_process(start_predcache, model,
                                                              redis_cluster):
    cluster = redis_cluster
    a = start_on(start_predcache, cluster, cache=L1)
    b = start_on(start_predcache, cluster, cache=L1)
    oracle = Oracle("cluster purge", per_instance=False)
    doc = {"instances": ["purge-me"]}
    first = ask(a, oracle, doc)
    key = first.headers["X-Cache-Key"]
    owner = wait_on_owner(cluster, key)
    assert ask(b, oracle, doc).headers["X-Cache"] == "HIT"   # b's tier takes it
    hits = b.metric("predcache_l1_hits_total")
    r = ask(b, oracle, doc)
    assert r.headers["X-Cache"] == "HIT" and b.metric("predcache_l1_hits_total") == hits + 1
    assert r.json()["call"] == 1

    d = requests.delete(a.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert d.status_code == 200, d.text
    assert d.json() == {"key": key, "deleted": 1}
    assert owner.command("EXISTS", key) == 0
    r = ask(a, oracle, doc)
    assert r.headers["X-Cache"] == "MISS" and r.json()["call"] == 2
    wait_on_owner(cluster, key)
    # b heard the purge: its tier dropped call 1, so Redis gives it call 2
    wait_for(lambda: ask(b, oracle, doc).json()["call"] == 2, timeout=5, interval=0.1,
             what="the second process to drop its copy after the purge")
    assert model.count(PREDICT) == 2

    none = "predcache:v2:{" + "0" * 64 + "}"
    assert requests.delete(a.admin("/cache/" + none),
                           timeout=HTTP_TIMEOUT).json() == {"key": none, "deleted": 0}
    clean(oracle)


def test_invalidation_reaches_every_process(start_predcache, model, redis_cluster):
    cluster = redis_cluster
    p1 = start_on(start_predcache, cluster)
    # p2 re-reads the counters once a minute: it must hear of it by pub/sub
    p2 = start_on(start_predcache, cluster, cache={"generation_refresh_ms": "60000"})
    oracle = Oracle("cluster invalidation", per_instance=False)
    doc = {"instances": ["inv"]}
    path_a, path_b = "/v1/models/a:predict", "/v1/models/b:predict"
    key_a = ask(p1, oracle, doc, path=path_a).headers["X-Cache-Key"]
    wait_on_owner(cluster, key_a)
    r = ask(p2, oracle, doc, path=path_a)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Key"]) == ("HIT", key_a)

    inv = requests.post(p1.admin("/cache/invalidate?model=a"), timeout=HTTP_TIMEOUT)
    assert inv.status_code == 200, inv.text
    assert inv.json()["generation"] == 1
    assert cluster.keys("predcache:gen*"), "the generation counters are in the cluster"

    def p2_misses():
        r = ask(p2, oracle, doc, path=path_a)
        return r.headers["X-Cache"] == "MISS" and r.headers["X-Cache-Key"] != key_a

    wait_for(p2_misses, timeout=5, interval=0.1, what="p2 to miss after the invalidation")

    # and the other way round
    key_b = ask(p2, oracle, doc, path=path_b).headers["X-Cache-Key"]
    wait_on_owner(cluster, key_b)
    assert ask(p1, oracle, doc, path=path_b).headers["X-Cache"] == "HIT"
    inv = requests.post(p2.admin("/cache/invalidate?all=1"), timeout=HTTP_TIMEOUT)
    assert inv.status_code == 200, inv.text
    wait_for(lambda: ask(p1, oracle, doc, path=path_b).headers["X-Cache"] == "MISS",
             timeout=5, interval=0.1, what="p1 to miss after p2's invalidation")
    clean(oracle)


# --------------------------------------------------------------------------- redirections


def test_a_moved_slot_is_followed(start_predcache, model, redis_cluster):
    """One slot holding a cached entry is moved to another master by hand (IMPORTING,
    MIGRATING, MIGRATE, SETSLOT NODE): the entry is still a HIT (MOVED followed, or a new
    map read), and a new entry in that slot is stored on its new master."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster)
    oracle = Oracle("cluster moved", per_instance=False)
    doc, other = {"instances": ["moved"]}, {"instances": ["stays"]}
    first = ask(p, oracle, doc)
    key = first.headers["X-Cache-Key"]
    src = wait_on_owner(cluster, key)
    ask(p, oracle, other)
    wait_on_owner(cluster, body_key(other))
    assert ask(p, oracle, doc).headers["X-Cache"] == "HIT"
    moved, maps = redirects(p, "moved"), refreshes(p)

    slot = cluster.key_slot(key)
    dst = other_master(cluster, src)
    cluster.migrate_slot(slot, dst)
    assert cluster.node_of_key(key) is dst and dst.command("EXISTS", key) == 1

    r = ask(p, oracle, doc)
    assert r.headers["X-Cache"] == "HIT", "after the move: %s\n%s" % (
        r.headers.get("X-Cache"), p.stderr_text()[-2000:])
    assert r.content == first.content
    assert redirects(p, "moved") > moved or refreshes(p) > maps, \
        "neither a MOVED followed nor a new slot map read"
    assert ask(p, oracle, other).headers["X-Cache"] == "HIT"

    # a store into the moved slot goes to its new master
    d = requests.delete(p.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert d.json() == {"key": key, "deleted": 1}, d.text
    assert dst.command("EXISTS", key) == 0
    assert ask(p, oracle, doc).headers["X-Cache"] == "MISS"
    assert wait_on_owner(cluster, key) is dst
    assert ask(p, oracle, doc).headers["X-Cache"] == "HIT"
    assert model.count(PREDICT) == 3
    print("moved %d -> %d, refreshes %d -> %d" % (moved, redirects(p, "moved"), maps,
                                                 refreshes(p)))
    clean(oracle)


def stored_then_moving(p, cluster, oracle, doc):
    """doc answered through p and stored; its slot's move to another master begun.
    Returns (the first answer, its key, the owner, the slot, the importing master)."""
    first = ask(p, oracle, doc)
    key = first.headers["X-Cache-Key"]
    src = wait_on_owner(cluster, key)
    slot = cluster.key_slot(key)
    dst = other_master(cluster, src)
    cluster.begin_migration(slot, dst)
    return first, key, src, slot, dst


def test_an_ask_redirection_is_followed(start_predcache, model, redis_cluster):
    """A slot half-way through a move: its entry already on the importing master, the
    owner answers ASK; predcache sends ASKING and the GET there: a HIT."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster)
    oracle = Oracle("cluster ask", per_instance=False)
    doc = {"instances": ["asked"]}
    first, key, src, slot, dst = stored_then_moving(p, cluster, oracle, doc)
    try:
        assert cluster.migrate_keys(slot, src, dst, [key]) == 1
        asks = redirects(p, "ask")
        r = ask(p, oracle, doc)
        assert r.headers["X-Cache"] == "HIT", "%s\n%s" % (r.headers.get("X-Cache"),
                                                          p.stderr_text()[-2000:])
        assert r.content == first.content
        assert redirects(p, "ask") > asks
    finally:
        cluster.migrate_keys(slot, src, dst)
        cluster.end_migration(slot, dst)
    moved, maps = redirects(p, "moved"), refreshes(p)
    r = ask(p, oracle, doc)
    assert r.headers["X-Cache"] == "HIT" and r.content == first.content
    assert redirects(p, "moved") > moved or refreshes(p) > maps
    assert model.count(PREDICT) == 1
    clean(oracle)


def test_a_lookup_by_script_in_a_migrating_slot_still_hits(start_predcache, model,
                                                           redis_cluster):
    """Behind the in-process tier a whole body's lookup is the lock script (value, lock and
    waiters' mark: three keys of one slot). With the entry moved to the importing master
    and the lock not there, the importing master refuses the script (TRYAGAIN, after the
    owner's ASK): the lookup is made again as a plain GET, which follows the ASK to the
    entry, a HIT. A second process asks, so that its tier has not seen the entry."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster)
    oracle = Oracle("cluster ask by script", per_instance=False)
    doc = {"instances": ["asked by script"]}
    q = start_on(start_predcache, cluster, cache={"l1_max_bytes": "64m"})
    first, key, src, slot, dst = stored_then_moving(p, cluster, oracle, doc)
    try:
        assert cluster.migrate_keys(slot, src, dst, [key]) == 1
        asks, gets = redirects(q, "ask"), q.metric("predcache_redis_get_ok_total")
        r = ask(q, oracle, doc)
        assert r.headers["X-Cache"] == "HIT", "%s\n%s" % (r.headers.get("X-Cache"),
                                                          q.stderr_text()[-2000:])
        assert r.content == first.content
        assert redirects(q, "ask") > asks
        assert "lock script failed" in q.stderr_text(), q.stderr_text()[-2000:]
        assert q.metric("predcache_redis_get_ok_total") >= gets + 1
    finally:
        cluster.migrate_keys(slot, src, dst)
        cluster.end_migration(slot, dst)
    assert model.count(PREDICT) == 1
    clean(oracle)


def test_a_new_entry_in_a_migrating_slot(start_predcache, model, redis_cluster):
    """A request whose key's slot is migrating and which is in neither node: the owner
    answers ASK to its GET (followed: a MISS) and to the writes (ASKING on the importing
    node); a multi-key script there may be told TRYAGAIN, which makes it BYPASS. Either
    way the client gets the model's answer, and once the move ends the entry is found."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster)
    oracle = Oracle("cluster migrating", per_instance=False)
    doc = {"instances": ["while migrating"]}
    key = body_key(doc)
    slot = cluster.key_slot(key)
    src = cluster.owner_of_slot(slot)
    dst = other_master(cluster, src)
    cluster.begin_migration(slot, dst)
    try:
        asks = redirects(p, "ask")
        r = ask(p, oracle, doc)
        assert r.headers["X-Cache"] in ("MISS", "BYPASS"), r.headers.get("X-Cache")
        assert redirects(p, "ask") > asks, "the GET was answered ASK by %r" % src
        during = r.headers["X-Cache"]
        if during == "MISS":
            wait_for(lambda: dst.asking("EXISTS", key) == 1, timeout=10,
                     what="the entry stored on the importing master %r" % dst)
    finally:
        cluster.migrate_keys(slot, src, dst)
        cluster.end_migration(slot, dst)
    wait_for(lambda: ask(p, oracle, doc).headers["X-Cache"] == "HIT", timeout=10,
             interval=0.1, what="the entry found once the slot is on %r" % dst)
    assert dst.command("EXISTS", key) == 1
    assert model.count(PREDICT) <= 2
    print("X-Cache while migrating: %s; asks %d" % (during, redirects(p, "ask")))
    clean(oracle)


def test_a_cluster_down_answers_bypass(start_predcache, model, redis_cluster):
    """A master hangs (SIGSTOP) and its replica may not take over: the other masters say
    CLUSTERDOWN. Every request is still answered, by the model (BYPASS), never an error;
    once the master is back, caching resumes."""
    cluster = redis_cluster
    p = start_on(start_predcache, cluster)
    oracle = Oracle("cluster down", per_instance=False)
    victim = cluster.masters()[2]
    docs = [{"instances": [["down-%d" % i]]} for i in range(40)]
    on_victim = [d for d in docs if cluster.node_of_key(body_key(d)) is victim][:2]
    elsewhere = [d for d in docs if cluster.node_of_key(body_key(d)) is not victim][:4]
    assert len(on_victim) == 2 and len(elsewhere) == 4
    warm = elsewhere[0]
    ask(p, oracle, warm)
    wait_on_owner(cluster, body_key(warm))
    assert ask(p, oracle, warm).headers["X-Cache"] == "HIT"

    replica = cluster.replica_of(victim)
    assert replica.command("CONFIG", "SET", "cluster-replica-no-failover", "yes") == "OK"
    victim.pause()
    try:
        healthy = [n for n in cluster.alive() if n is not victim and n is not replica and
                   n.myself().is_master]
        wait_for(lambda: all(n.cluster_info()["cluster_state"] == "fail" for n in healthy),
                 timeout=20, interval=0.2, what="the other masters to say the cluster is down")
        for doc in [warm] + elsewhere[1:3] + on_victim[:1]:
            r = ask(p, oracle, doc)
            assert r.headers["X-Cache"] == "BYPASS", (doc, r.headers.get("X-Cache"))
    finally:
        victim.resume()
    cluster.wait_ok(timeout=30)
    replica.command("CONFIG", "SET", "cluster-replica-no-failover", "no")

    def cached_again():
        r = ask(p, oracle, elsewhere[3])
        return r.headers["X-Cache"] == "HIT"

    wait_for(cached_again, timeout=20, interval=0.2, what="caching to resume")
    r = ask(p, oracle, on_victim[1])
    assert r.headers["X-Cache"] in ("MISS", "BYPASS")
    wait_for(lambda: ask(p, oracle, on_victim[1]).headers["X-Cache"] == "HIT", timeout=20,
             interval=0.2, what="caching to resume on the master that hung")
    clean(oracle)


# --------------------------------------------------------------------------- configuration


def check(predcache_bin, tmp_path, text):
    conf = tmp_path / "cluster.conf"
    conf.write_text(text)
    return subprocess.run([predcache_bin, "-c", str(conf), "--check"], capture_output=True,
                          text=True, timeout=30, stdin=subprocess.DEVNULL)


CLUSTER_CONF = """[redis]
cluster = on
host = 127.0.0.1
port = 7000
nodes = 127.0.0.1:7001, 127.0.0.1:7002
"""


def test_check_takes_a_cluster_and_refuses_sentinels_or_a_db(predcache_bin, tmp_path):
    r = check(predcache_bin, tmp_path, CLUSTER_CONF)
    assert r.returncode == 0, r.stderr
    r = check(predcache_bin, tmp_path, CLUSTER_CONF + "db = 0\n")
    assert r.returncode == 0, r.stderr
    for extra in ("sentinels = 127.0.0.1:26379\nsentinel_master = m\n", "db = 1\n"):
        r = check(predcache_bin, tmp_path, CLUSTER_CONF + extra)
        assert r.returncode != 0 and "cluster" in r.stderr, (extra, r.returncode, r.stderr)

