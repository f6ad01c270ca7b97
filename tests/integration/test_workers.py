"""Several workers ([server] workers = 2): one event loop thread each, one data port
shared through SO_REUSEPORT, nothing shared but Redis. Checked from the outside: both
workers answer (the per-worker counter and the threads in /proc), /metrics and /stats are
the sum over the workers, a hit or a purge is seen from every connection, coalescing
across the workers goes through the Redis lock, the SIGTERM drain answers every request
sent before it, and a taken port fails the start. Every predict answer of the runs with
many requests is checked by the integrity oracle (tests/integration/oracle.py) against
its own request, and each such test asserts 0 wrong answers."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import requests

from conftest import HTTP_TIMEOUT, concurrently, free_port, wait_for, write_conf
from oracle import Oracle

PREDICT = "/v1/models/m:predict"
TWO = {"server": {"workers": "2"}}
FRESH = 60  # connections: each lands on either worker, so both get some (1 - 2^-59)


def workers_oracle(name):
    """The harness conf keys whole bodies (per_instance off): an answer must be the
    model's answer to this very body."""
    return Oracle(name, per_instance=False)


def check(oracle, body, r, headers=None):
    """Judges one requests.Response to POST PREDICT with body (bytes or str)."""
    return oracle.check("POST", PREDICT, body, headers or {}, r.status_code, r.content,
                        r.headers.get("X-Cache"))


def fresh_post(p, x, headers=None, oracle=None):
    """One request on a new connection (requests without a session does not keep it);
    its answer checked when an oracle is given."""
    h = {"Content-Type": "application/json", "Connection": "close"}
    h.update(headers or {})
    body = json.dumps({"instances": [x]})
    r = requests.post(p.url(PREDICT), data=body, headers=h, timeout=HTTP_TIMEOUT)
    if oracle is not None:
        check(oracle, body, r, h)
    return r


def per_worker(p):
    m = p.metrics()
    return {dict(labels)["worker"]: v for (name, labels), v in m.items()
            if name == "predcache_worker_requests_total"}


def requests_total(p):
    return sum(v for (name, _), v in p.metrics().items() if name == "predcache_requests_total")


def test_two_workers_are_two_threads_and_both_answer(start_predcache, model):
    p = start_predcache(conf=TWO)
    oracle = workers_oracle("two workers, fresh connections")
    assert p.metric("predcache_workers") == 2
    # the main thread and one thread per worker
    assert len(os.listdir("/proc/%d/task" % p.pid)) >= 3
    for i in range(FRESH):
        r = fresh_post(p, "spread-%d" % i, oracle=oracle)
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.text
    counts = per_worker(p)
    assert set(counts) == {"0", "1"}, counts
    assert counts["0"] > 0 and counts["1"] > 0, counts
    assert counts["0"] + counts["1"] == FRESH
    oracle.assert_clean()


def test_metrics_and_stats_are_the_sum_over_workers(start_predcache, model, redis):
    p = start_predcache(conf=TWO)
    oracle = workers_oracle("a miss on one worker, hits on both")
    first = fresh_post(p, "summed", oracle=oracle)
    assert first.headers["X-Cache"] == "MISS"
    redis.wait_key(first.headers["X-Cache-Key"])
    caches = [fresh_post(p, "summed", oracle=oracle).headers["X-Cache"]
              for _ in range(FRESH - 1)]
    assert caches == ["HIT"] * (FRESH - 1)  # a miss on one worker is a hit on every one

    m = p.metrics()
    assert m[("predcache_requests_total", frozenset({("cache", "hit")}))] == FRESH - 1
    assert m[("predcache_requests_total", frozenset({("cache", "miss")}))] == 1
    assert requests_total(p) == FRESH
    assert m[("predcache_request_seconds_count", frozenset())] == FRESH
    assert m[("predcache_request_seconds_bucket", frozenset({("le", "+Inf")}))] == FRESH
    assert m[("predcache_backend_requests_total", frozenset())] == 1
    assert m[("predcache_in_flight", frozenset())] == 0
    assert m[("predcache_redis_up", frozenset())] == 1
    assert m[("predcache_backend_up", frozenset())] == 1
    counts = per_worker(p)
    assert counts["0"] > 0 and counts["1"] > 0, counts

    stats = requests.get(p.admin("/stats"), timeout=HTTP_TIMEOUT).json()
    timers = {t["name"]: t for t in stats["timers"]}
    assert timers["predcache.request"]["count"] == FRESH
    assert timers["predcache.hit"]["count"] == FRESH - 1
    assert timers["predcache.miss"]["count"] == 1
    t = timers["predcache.request"]
    assert 0 < t["min"] <= t["median"] <= t["_99thPercentile"] <= t["max"]
    assert t["min"] <= t["mean"] <= t["max"]
    assert abs(stats["hit_ratio"] - (FRESH - 1) / FRESH) < 1e-6
    oracle.assert_clean()


def test_ready_covers_every_worker(start_predcache, model, redis):
    p = start_predcache(conf=dict(TWO, server=dict(TWO.get("server", {}),
                                                   ready_requires_redis="on")))
    wait_for(lambda: requests.get(p.admin("/ready"), timeout=HTTP_TIMEOUT).status_code == 200,
             what="/ready 200")
    redis.kill()
    wait_for(lambda: p.metric("predcache_redis_up") == 0, what="redis_up 0")
    r = requests.get(p.admin("/ready"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 503 and r.json()["redis"] == "down"


def test_purge_is_seen_by_every_worker(start_predcache, model, redis):
    p = start_predcache(conf=TWO)
    oracle = workers_oracle("purge seen by every worker")
    key = fresh_post(p, "purge-all", oracle=oracle).headers["X-Cache-Key"]
    redis.wait_key(key)
    assert fresh_post(p, "purge-all", oracle=oracle).headers["X-Cache"] == "HIT"
    d = requests.delete(p.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert d.status_code == 200 and d.json() == {"key": key, "deleted": 1}
    before = per_worker(p)
    # no-store: each of these looks the key up and none puts it back
    caches = [fresh_post(p, "purge-all", {"Cache-Control": "no-store"},
                         oracle=oracle).headers["X-Cache"] for _ in range(FRESH)]
    assert caches == ["MISS"] * FRESH
    after = per_worker(p)
    assert after["0"] > before["0"] and after["1"] > before["1"], (before, after)
    assert not redis.exists(key)
    oracle.assert_clean()


def burst(p, n, body):
    """n clients at once, each on its own connection; returns their responses."""
    return concurrently(n, lambda i: requests.post(
        p.url(PREDICT), data=json.dumps(body), headers={"Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT))


def test_fifty_identical_misses_across_workers_make_one_call(start_predcache, model):
    """Workers coalesce among themselves through the Redis lock, as processes do."""
    p = start_predcache(conf=TWO)
    model.control(delay_ms=500)
    before = per_worker(p)
    rs = burst(p, 50, {"instances": ["worker-herd"]})
    assert all(not isinstance(r, Exception) and r.status_code == 200 for r in rs), rs[:3]
    oracle = workers_oracle("50 identical misses across workers")
    for r in rs:
        check(oracle, json.dumps({"instances": ["worker-herd"]}), r)
    assert model.count(PREDICT) == 1
    assert len({r.content for r in rs}) == 1
    caches = [r.headers["X-Cache"] for r in rs]
    assert caches.count("MISS") == 1, caches
    assert set(caches) <= {"MISS", "COALESCED", "HIT"}
    after = per_worker(p)
    assert after["0"] > before["0"] and after["1"] > before["1"], (before, after)
    # the worker that did not lead waited on the lock and was told, not timed out
    assert p.metric("predcache_lock_waits_total") >= 1
    assert p.metric("predcache_lock_timeouts_total") == 0
    wait_for(lambda: p.metric("predcache_in_flight") == 0, what="nothing in flight")
    oracle.assert_clean()


def test_fast_answers_never_leave_a_lock_waiter_waiting(start_predcache, model):
    """Many keys, each asked by both workers at about once, and a model that answers in
    milliseconds: the holder's announcement may reach the other worker before its own
    lock script's answer does. The waiter must still go on at once, never after
    lock_timeout_ms (here 20 s, so a lost announcement shows as a slow answer)."""
    p = start_predcache(conf={"server": {"workers": "2", "request_timeout_ms": "30000"},
                              "cache": {"lock_timeout_ms": "20000"}})
    oracle = workers_oracle("fast answers, lock waiters on both workers")

    def walk(t, rnd):
        """Every client asks the same keys in the same order, so each key is asked by
        several clients on both workers at about once."""
        out = []
        with requests.Session() as s:
            for k in range(120):
                t0 = time.monotonic()
                body = json.dumps({"instances": ["fast-%d-%d" % (rnd, k)]})
                r = s.post(p.url(PREDICT), data=body,
                           headers={"Content-Type": "application/json"}, timeout=30)
                out.append((r.status_code, time.monotonic() - t0))
                check(oracle, body, r)
        return out

    # The race needs a key asked on both workers while its lock is held: with answers this
    # fast a round may see none; then another round runs, on new keys (at most 3).
    answers = []
    for rnd in range(3):
        rs = concurrently(16, lambda t, rnd=rnd: walk(t, rnd), join_s=120)
        assert all(not isinstance(r, Exception) for r in rs), \
            [r for r in rs if isinstance(r, Exception)][:3]
        answers += [a for r in rs for a in r]
        if p.metric("predcache_lock_waits_total") >= 1:
            break
    slow = [t for status, t in answers if t > 10]
    assert [status for status, _ in answers] == [200] * len(answers)
    assert p.metric("predcache_lock_waits_total") >= 1
    assert p.metric("predcache_lock_timeouts_total") == 0, "%d answers waited > 10 s" % len(slow)
    oracle.assert_clean()


def test_sigterm_drains_every_worker_under_load(start_predcache, model):
    """Each client keeps one connection and sends slow misses; SIGTERM comes while
    requests are in flight on both workers. Every request written before the signal is
    answered 200, and predcache exits 0."""
    p = start_predcache(conf=TWO)
    model.control(delay_ms=300)
    oracle = workers_oracle("SIGTERM drain on both workers")
    stop = threading.Event()
    records = []  # (t_sent, status or exception)
    lock = threading.Lock()

    def client(idx):
        conn = None
        n = 0
        while not stop.is_set():
            n += 1
            body = json.dumps({"instances": ["drain-%d-%d" % (idx, n)]})
            t_sent = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", p.listen_port,
                                                      timeout=HTTP_TIMEOUT)
                conn.request("POST", PREDICT, body=body,
                             headers={"Content-Type": "application/json"})
                t_sent = time.monotonic()
                resp = conn.getresponse()
                data = resp.read()
                oracle.check("POST", PREDICT, body, {}, resp.status, data,
                             resp.getheader("X-Cache"))
                with lock:
                    records.append((t_sent, resp.status))
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 (after the signal: refused or closed)
                with lock:
                    records.append((t_sent, e))
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.02)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(16)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: min(per_worker(p).values()) >= 2, timeout=15,
                 what="both workers answering the load")
        wait_for(lambda: p.metric("predcache_in_flight") >= 4, what="requests in flight")
        t_sig = time.monotonic()
        p.proc.send_signal(signal.SIGTERM)
        rc = p.proc.wait(timeout=20)
    finally:
        stop.set()
        for t in threads:
            t.join(HTTP_TIMEOUT + 5)
    assert rc == 0, p.stderr_text()[-3000:]
    before = [(t, s) for t, s in records if t is not None and t < t_sig]
    bad = [(t, s) for t, s in before if s != 200]
    assert before and not bad, bad[:5]
    in_flight_at_signal = [t for t, s in before if t > t_sig - 0.3]
    assert in_flight_at_signal, "no request was in flight at SIGTERM"
    err = p.stderr_text()
    assert "drain: worker 0 done" in err and "drain: worker 1 done" in err, err[-2000:]
    oracle.assert_clean()


def test_jobs_run_with_two_workers(start_predcache, model):
    p = start_predcache(conf=TWO)
    r = p.post(PREDICT, json_body={"instances": ["job-two"]},
               headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    job = r.json()["job_id"]

    def done():
        g = p.get("/jobs/" + job)
        return g if g.status_code == 200 else None

    g = wait_for(done, timeout=15, what="the job's result")
    assert g.headers["X-Job-Status"] == "done"
    assert g.json()["predictions"]
    oracle = workers_oracle("a job with two workers")  # the result: the job's own answer
    check(oracle, json.dumps({"instances": ["job-two"]}), g)
    oracle.assert_clean()


def test_workers_flag_overrides_conf(start_predcache, model):
    p = start_predcache(args=["--workers", "2"])  # the harness conf says 1
    assert p.metric("predcache_workers") == 2


def test_port_taken_by_another_program_fails_the_start(predcache_bin, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        conf = write_conf(str(tmp_path / "taken.conf"), {
            "server": {"listen": "127.0.0.1:%d" % port,
                       "admin_listen": "127.0.0.1:%d" % free_port(), "workers": "2"},
            "log": {"access_log": "off"}})
        r = subprocess.run([predcache_bin, "-c", conf], capture_output=True, text=True,
                           timeout=20)
    assert r.returncode == 1, r.stderr
    assert "cannot listen on 127.0.0.1:%d" % port in r.stderr, r.stderr
    assert "Address already in use" in r.stderr, r.stderr


def test_port_of_another_predcache_is_not_shared(start_predcache, model, predcache_bin,
                                                 tmp_path):
    """SO_REUSEPORT would let a second process join the port: the first worker checks
    that nothing listens there before it opens the port for its siblings."""
    p = start_predcache(conf=TWO)
    conf = write_conf(str(tmp_path / "second.conf"), {
        "server": {"listen": "127.0.0.1:%d" % p.listen_port,
                   "admin_listen": "127.0.0.1:%d" % free_port(), "workers": "2"},
        "log": {"access_log": "off"}})
    r = subprocess.run([predcache_bin, "-c", conf], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1, r.stderr
    assert "cannot listen on 127.0.0.1:%d: Address already in use" % p.listen_port in r.stderr
    oracle = workers_oracle("the port stays the first predcache's")
    assert fresh_post(p, "still-mine", oracle=oracle).status_code == 200
    oracle.assert_clean()


def test_check_rejects_bad_worker_counts(predcache_bin, tmp_path):
    for value, ok in (("auto", True), ("AUTO", True), ("1", True), ("64", True),
                      ("0", False), ("65", False), ("two", False)):
        conf = write_conf(str(tmp_path / "w.conf"), {"server": {"workers": value}})
        r = subprocess.run([predcache_bin, "-c", conf, "--check"], capture_output=True,
                           text=True, timeout=20)
        assert (r.returncode == 0) == ok, (value, r.stderr)
        if not ok:
            assert "[server] workers" in r.stderr, r.stderr
