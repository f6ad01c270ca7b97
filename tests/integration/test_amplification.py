"""Amplification: what a TF Serving batch may cost predcache ([cache] max_batch_instances).

A client chooses how many instances a batch holds, and per-instance caching multiplies
each one into keys, lookups and stores: {"instances": [0,0,0,...]} with 1M instances is a
2 MB body that used to grow predcache's RSS by about 370 MB and hold one worker's loop
for seconds (an 8 MB body: 1.5 GB and 6 s), while the other clients of that worker
waited. These tests pin the three bounds (src/proxy_batch.c, the top of the file):

- a batch of more than max_batch_instances instances is forwarded as it is, uncached
  (X-Cache: PASS, X-Cache-Reason: too-many-instances, nothing stored, the model's own
  answer), whichever way the model server reads its "instances" member;
- counting it costs what the bound costs: a 2 MB body of 1M instances grows RSS by less
  than RSS_GROWTH_MB (before: ~370 MB);
- no batch holds the loop: with one worker, a small request's latency while large
  batches (over the bound, and at it) are processed stays below BYSTANDER_P50_MS at the
  median (before: seconds).
"""

import json
import subprocess
import threading
import time

import pytest
import requests

from conftest import PYTHON, ModelServer, wait_for
from oracle import Oracle, post_checked

PREDICT = "/v1/models/m:predict"
HUGE = "/v1/models/huge:predict"  # the "huge" backend: answers at once, whatever it gets
SIDE = "/v1/models/bystander:predict"  # the bystander's own backend

# 2 MB of instances ("0,"), the example, and predcache's RSS growth allowed for
# it: the body itself is held while it is read and forwarded (2 MB, plus the transfer's
# buffers); with per-instance bookkeeping it used to be ~370 MB.
MILLION = 1000000
RSS_GROWTH_MB = 64
# With one worker: the median latency of a small cached request while 10 batches of 1M
# instances (over the bound) and 10 batches at the bound (10000 distinct instances each,
# keyed, looked up, merged and stored per instance) go through the same worker. Measured
# on a 2-CPU box: ~3 ms after (p90 ~10 ms); before, ~1100 ms (the loop keyed each 1M batch
# for ~1 s in one go). Generous for a loaded CI box, far below what a blocked loop gives.
BYSTANDER_P50_MS = 200
# And no request waited for more than this (before: several seconds).
BYSTANDER_MAX_MS = 2000


def body_of(instances):
    return '{"instances":[' + ",".join(instances) + "]}"


def rss_kb(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s in /proc/%d/status" % (field, pid))


class PeakRss:
    """The peak RSS of a process over a span: VmHWM reset through clear_refs when the
    kernel lets us, and VmRSS sampled every 2 ms besides (whichever says more)."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kb(self.pid))
            time.sleep(0.002)

    def __enter__(self):
        try:
            with open("/proc/%d/clear_refs" % self.pid, "w") as f:
                f.write("5")  # VmHWM := VmRSS
            self.hwm = True
        except OSError:
            self.hwm = False
        self.before = rss_kb(self.pid)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if self.hwm:
            self.peak = max(self.peak, rss_kb(self.pid, "VmHWM"))

    @property
    def growth_mb(self):
        return (self.peak - self.before) / 1024.0


@pytest.fixture
def huge_model(tmp_path):
    """A model server that answers every request at once with a fixed small document: the
    PASS of a million instances is judged on predcache's work, not on the test model
    computing a million predictions."""
    server = ModelServer(tmp_path / "huge-model")
    try:
        server.start()
        server.control(status=200, body='{"predictions": ["fixed"]}')
        yield server
    finally:
        server.stop()


def start(start_predcache, huge_model, side_model, redis=None, **cache):
    conf = {"cache": dict({"per_instance": "on"}, **cache), "redis": dict(redis or {}),
            "backend huge": {"url": huge_model.url()},
            "route huge": {"match": "POST " + HUGE, "backend": "huge"},
            "backend side": {"url": side_model.url()},
            "route side": {"match": "POST " + SIDE, "backend": "side"}}
    return start_predcache(conf=conf)


def test_a_batch_over_the_bound_is_forwarded_uncached(start_predcache, model, redis,
                                                      huge_model, side_model):
    p = start(start_predcache, huge_model, side_model, max_batch_instances="100")
    model.control(stable=True)
    oracle = Oracle("over the bound")

    # One past the bound: the client's bytes go to the model as they are, its answer
    # comes back as it is, and nothing is stored.
    over = body_of(['["over",%d]' % i for i in range(101)])
    r = post_checked(p.url(), oracle, PREDICT, over)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Reason"]) == ("PASS", "too-many-instances")
    assert "X-Cache-Hits" not in r.headers and "X-Cache-Key" not in r.headers
    assert len(r.json()["predictions"]) == 101
    assert model.last()["body"] == over
    time.sleep(0.3)
    assert redis.keys("*") == [], "a batch over the bound stored something"
    assert p.metric("predcache_store_ok_total") == 0
    assert p.metric("predcache_instances_miss_total") == 0

    # Sent again (the key memo's doorkeeper has seen it now): still PASS, still a call.
    before = model.count(PREDICT)
    r = post_checked(p.url(), oracle, PREDICT, over)
    assert r.headers["X-Cache"] == "PASS"
    assert model.count(PREDICT) == before + 1

    # The same over an escaped spelling of "instances", which the model reads as such but
    # the fast count does not look at: the keyed reading stops at the bound all the same.
    escaped = over.replace('"instances"', '"\\u0069nstances"', 1)
    r = post_checked(p.url(), oracle, PREDICT, escaped)
    assert r.headers["X-Cache"] == "PASS"
    assert model.last()["body"] == escaped
    time.sleep(0.3)
    assert redis.keys("*") == []

    # At the bound, a batch is cached instance by instance as always.
    at = body_of(['["at",%d]' % i for i in range(100)])
    r = post_checked(p.url(), oracle, PREDICT, at)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/100")
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 100, what="100 stores")
    r = post_checked(p.url(), oracle, PREDICT, at)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "100/100")
    oracle.assert_clean()


def test_a_million_instances_cost_what_the_bound_costs(start_predcache, model, redis,
                                                       huge_model, side_model):
    p = start(start_predcache, huge_model, side_model)  # the default bound
    body = body_of(["0"] * MILLION)
    assert len(body) > 2000000
    with PeakRss(p.pid) as rss:
        t0 = time.monotonic()
        r = requests.post(p.url(HUGE), data=body, headers={"Content-Type": "application/json"},
                          timeout=120)
        took = time.monotonic() - t0
    print("1M instances (%d bytes): X-Cache %s in %.2fs, RSS %d kB -> peak %d kB (+%.1f MB)"
          % (len(body), r.headers.get("X-Cache"), took, rss.before, rss.peak, rss.growth_mb))
    assert r.status_code == 200, r.text[:300]
    assert r.headers["X-Cache"] == "PASS"
    assert r.json() == {"predictions": ["fixed"]}  # the model's own answer, passed through
    assert huge_model.count(HUGE) == 1
    assert rss.growth_mb < RSS_GROWTH_MB, "RSS grew by %.1f MB for a 2 MB batch" % rss.growth_mb
    time.sleep(0.3)
    assert redis.keys("*") == []
    assert p.metric("predcache_in_flight") == 0


# The bystander runs in a process of its own (the test's threads parse and judge 10 MB of
# answers; their interpreter lock must not show as predcache's latency), open loop: one
# request every 10 ms whether or not the earlier ones are answered, each timed from when it
# was due, so a blocked loop shows in every request due meanwhile. Prints one JSON line
# per request: [due (CLOCK_MONOTONIC, as time.monotonic() in the test), latency, status,
# X-Cache]. Runs until its stdin closes.
BYSTANDER = r"""
import http.client, json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
port, path, body = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
out, lock, stop = [], threading.Lock(), threading.Event()
def one(due):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("POST", path, body, {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        res = [due, time.monotonic() - due, r.status, r.getheader("X-Cache")]
        c.close()
    except Exception as e:
        res = [due, time.monotonic() - due, None, repr(e)]
    with lock:
        out.append(res)
def schedule(pool):
    due = time.monotonic()
    while not stop.is_set():
        pool.submit(one, due)
        due += 0.010
        time.sleep(max(0.0, due - time.monotonic()))
with ThreadPoolExecutor(max_workers=64) as pool:
    t = threading.Thread(target=schedule, args=(pool,))
    t.start()
    sys.stdin.read()
    stop.set()
    t.join()
for res in out:
    print(json.dumps(res))
"""


@pytest.mark.parametrize("max_pending", [None, "3000"])
def test_large_batches_do_not_hold_the_loop(start_predcache, model, redis, huge_model,
                                            side_model, max_pending):
    """max_pending 3000: ten batches' store slices of at most 256 SETs (and a PING) each
    fit it whatever the machine's speed (slices bounded only by time shed 42,024 here)."""
    redis_conf = {"max_pending": max_pending} if max_pending else None
    p = start(start_predcache, huge_model, side_model, redis=redis_conf)  # one worker
    model.control(stable=True)
    small = json.dumps({"instances": ["bystander"]})
    hdrs = {"Content-Type": "application/json"}
    assert p.post(SIDE, body=small).status_code == 200  # cached from now on
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 1, what="the bystander's entry")

    # Distinct bodies: no key memo, no coalescing spares any of them its work.
    over = [body_of([str(j)] + ["0"] * (MILLION - 1)) for j in range(10)]
    at = [body_of(['[%d,%d,"x"]' % (j, i) for i in range(10000)]) for j in range(10)]
    answers = []

    def big(k):
        path, body = (HUGE, over[k // 2]) if k % 2 == 0 else (PREDICT, at[k // 2])
        try:
            r = requests.post(p.url(path), data=body, headers=hdrs, timeout=120)
            answers.append((path, body, r.status_code, r.headers.get("X-Cache"), r.content))
        except requests.RequestException as e:
            answers.append((path, body, None, repr(e), b""))

    by = subprocess.Popen([PYTHON, "-c", BYSTANDER, str(p.listen_port), SIDE, small],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        t_start = time.monotonic()
        bigs = [threading.Thread(target=big, args=(k,)) for k in range(20)]
        for t in bigs:
            t.start()
        for t in bigs:
            t.join()
        t_end = time.monotonic()
        time.sleep(0.1)
        out, _ = by.communicate("", timeout=90)
    finally:
        if by.poll() is None:
            by.kill()
            by.wait()
    latencies = [json.loads(line) for line in out.splitlines()]
    window = sorted(lat for due, lat, _, _ in latencies if t_start <= due <= t_end)
    assert len(window) >= 10, "only %d bystander requests in a %.2fs window" % (
        len(window), t_end - t_start)
    p50 = window[len(window) // 2] * 1000
    p90 = window[int(len(window) * 0.9)] * 1000
    worst = window[-1] * 1000
    print("20 large batches in %.2fs; bystander (%d requests): p50 %.1f ms, p90 %.1f ms, "
          "max %.1f ms" % (t_end - t_start, len(window), p50, p90, worst))
    assert p50 < BYSTANDER_P50_MS, "bystander p50 %.0f ms (p90 %.0f, max %.0f)" % (p50, p90, worst)
    assert worst < BYSTANDER_MAX_MS, "a bystander waited %.0f ms" % worst
    assert all(status == 200 and cache == "HIT" for _, _, status, cache in latencies), \
        [x for x in latencies if x[2] != 200 or x[3] != "HIT"][:5]
    # Every answer right: the batches over the bound are the huge model's own answer
    # (PASS), those at the bound the model's predictions for every instance (MISS).
    oracle = Oracle("batches at the bound")
    assert len(answers) == 20
    for path, body, status, cache, content in answers:
        assert status == 200, (path, status, cache, content[:200])
        if path == HUGE:
            assert (cache, json.loads(content)) == ("PASS", {"predictions": ["fixed"]})
        else:
            assert cache == "MISS"
            oracle.check("POST", path, body, hdrs, status, content, cache)
    oracle.assert_clean()
    # Every batch at the bound was stored, in slices (Redis never held more than a slice
    # of one batch at once, so none was shed for [redis] max_pending).
    def stored():
        return p.metric("predcache_store_ok_total") >= 1 + 10 * 10000

    try:
        wait_for(stored, timeout=30, what="every instance stored")
    except AssertionError as e:
        why = [l for l in p.stderr_text().splitlines() if "store" in l or "Redis" in l]
        raise AssertionError("%s: ok %s, failed %s, dropped %s, pending %s; log: %s" % (
            e, p.metric("predcache_store_ok_total"), p.metric("predcache_store_failed_total"),
            p.metric("predcache_store_dropped_total"), p.metric("predcache_store_pending"),
            why[-5:])) from e
    assert p.metric("predcache_store_dropped_total") == 0
    wait_for(lambda: p.metric("predcache_in_flight") == 0, what="in flight back to 0")
