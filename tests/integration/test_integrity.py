"""Integrity runs: every answer is the model's answer to that exact request, checked by the
oracle (tests/integration/oracle.py) across the boundaries where caches break.

Each run prints one line with "wrong answers: N" (pytest -s shows it; it is also the
assertion message) and asserts N == 0.

- test_shipped_defaults_l1_boundary: the scenario that found the l1 bug (the in-process
  tier served another key's value once entries were older than l1_ttl_ms): shipped
  defaults ([cache] as in conf/predcache.conf, only addresses and workers set), 1000
  distinct 8 KB bodies {"instances":[{"b64": ...}]} to /v1/models/m:predict, each once
  (misses), each again (hits), 6 s of nothing (past l1_ttl_ms = 5 s), each again; with 1
  and 2 workers. The binary from before the fix answers ~8% of the third pass with another
  body's prediction.
- test_boundaries: mixed traffic (single instances, per-instance batches mixing cached and
  new instances with duplicates and noise fields, per-body :classify and /v2 infer
  requests, a second model given the same inputs, cosmetic re-spellings of bodies) over
  thousands of distinct inputs, for longer than every TTL involved:
    expiry        ttl_s 1 + grace_s 2 (STALE answers and refreshes), l1_ttl_ms 300 with an
                  l1 big enough that entries live to expire there (the l1 bug's boundary:
                  the pre-fix binary gives ~300 wrong answers here), key_memo_bytes small
                  enough to evict constantly, 2 workers
    purge         purges and invalidations in the middle of load (2 workers, l1 4m with
                  l1_ttl_ms 2000, ttl_s 3 + grace_s 1), each followed by a probe that must
                  be a MISS (the design: a purged entry or an invalidated model is out of
                  reach at once)
    two-redis     2 predcache processes on one Redis (2 workers and 1), ttl_s 2 without
                  grace, l1_ttl_ms 400 with an l1 and a key memo small enough to evict
                  constantly, a purge on one process that the other (holding the entry in
                  its l1) must see, Redis killed and restarted mid-run, then a purge and an
                  invalidation across the processes again
"""

import base64
import json
import random
import threading
import time
from collections import Counter

import pytest
import requests

from conftest import HTTP_TIMEOUT, wait_for
from oracle import Oracle, expected_predictions, model_of, predict_request, run_load
import model_server

PREDICT = "/v1/models/m:predict"
JSON = {"Content-Type": "application/json"}
CLASSIFY = "/v1/models/m:classify"
CLASSIFY_X1 = json.dumps({"examples": ["a"], "context": {"x": 1}}).encode()
CLASSIFY_X2 = json.dumps({"examples": ["a"], "context": {"x": 2}}).encode()


def phase_summary(name, results):
    caches = Counter(r.x_cache or "-" for r in results)
    statuses = Counter(r.status for r in results)
    wrong = sum(1 for r in results if r.reason)
    return "%s: %d requests, wrong %d, status %s, X-Cache %s" % (
        name, len(results), wrong, dict(statuses), dict(sorted(caches.items())))


def finish(oracle, extra=()):
    """Prints the report (with any extra lines) and asserts a clean run."""
    for line in extra:
        print("   ", line)
    oracle.assert_clean()


# --------------------------------------------------------------------------- oracle self-check


def _answer(method, path, body, headers=None, predictions=None, **received):
    target_path, _, query = path.partition("?")
    rec = model_server.received_digest(method, target_path, query, body, headers or {})
    rec.update(received)
    preds = expected_predictions(body) if predictions is None else predictions
    return json.dumps({"predictions": preds, "model": model_of(target_path), "call": 1,
                       "received": rec})


def test_oracle_tells_right_from_wrong():
    """The checker itself: what it accepts and what it calls wrong (no processes)."""
    o = Oracle("self-check", ignore_fields=("request_id",))
    a = json.dumps({"instances": ["a"]}).encode()
    a2 = b'{ "instances" : ["a"] }'  # same document, other bytes
    b = json.dumps({"instances": ["b"]}).encode()
    c = json.dumps({"inputs": ["c"], "request_id": 1}).encode()
    c2 = json.dumps({"inputs": ["c"], "request_id": 2}).encode()
    batch = json.dumps({"instances": ["a", "b"]}).encode()
    v2 = "/v2/models/m/infer"
    auth = {"Authorization": "Bearer x"}
    # right
    assert o.check("POST", PREDICT, a, JSON, 200, _answer("POST", PREDICT, a)) is None
    assert o.check("POST", PREDICT, a2, JSON, 200, _answer("POST", PREDICT, a), "HIT") is None
    assert o.check("POST", v2, c, JSON, 200, _answer("POST", v2, c)) is None
    assert o.check("POST", v2, c2, JSON, 200, _answer("POST", v2, c), "HIT") is None
    # a batch merged from per-instance entries: the layout (received) is another call's
    assert o.check("POST", PREDICT, batch, JSON, 200, _answer("POST", PREDICT, a,
                   predictions=expected_predictions(batch)), "HIT") is None
    assert o.merged == 1
    assert o.check("POST", PREDICT, a, auth, 200, _answer("POST", PREDICT, a, auth)) is None
    assert o.check("POST", PREDICT, a, JSON, 503, b'{"error": "x"}', None) is None
    assert o.check("GET", "/v1/x?y=1", b"", {}, 200, b'{"path": "/v1/x", "query": "y=1"}') is None
    assert o.wrong == 0 and o.non_200[503] == 1
    # wrong
    cases = [
        (PREDICT, a, JSON, _answer("POST", PREDICT, b), "predictions"),
        (PREDICT, a, JSON, _answer("POST", "/v1/models/n:predict", a), "model"),
        (PREDICT, a, JSON, _answer("POST", "/v1/models/m/versions/2:predict", a), "path"),
        (PREDICT + "?q=1", a, JSON, _answer("POST", PREDICT, a), "query"),
        (PREDICT, a, auth, _answer("POST", PREDICT, a, {"Authorization": "Bearer y"}),
         "credentials"),
        (PREDICT, a, auth, _answer("POST", PREDICT, a), "credentials"),
        # same predictions, another body, not a batch route: another request's answer.
        # v2 change: :classify reads only signature_name, context and examples (as the
        # model server and the v2 key do), so the bodies differ in a member it reads; the
        # answer carries the sent body's own predictions and the other body's digest.
        (CLASSIFY, CLASSIFY_X1, JSON,
         _answer("POST", CLASSIFY, CLASSIFY_X2,
                 predictions=expected_predictions(CLASSIFY_X1, path=CLASSIFY, headers=JSON)),
         "another body"),
        (PREDICT, a, JSON, json.dumps({"predictions": expected_predictions(a), "model": "m"}),
         "received"),
        (PREDICT, a, JSON, b"not json", "not JSON"),
        (PREDICT, b"{", JSON, _answer("POST", PREDICT, a), "refuses"),
    ]
    for path, body, headers, answer, why in cases:
        reason = o.check("POST", path, body, headers, 200, answer, "HIT")
        assert reason is not None and why in reason, (path, why, reason)
    assert o.wrong == len(cases) and o.wrong_by_cache["HIT"] == len(cases)
    assert "wrong answers: %d" % len(cases) in o.report()
    with pytest.raises(AssertionError):
        o.assert_clean()
    with pytest.raises(AssertionError):
        Oracle("empty").assert_clean()  # nothing checked is not clean


# --------------------------------------------------------------------------- 3a: the scenario


def shipped_defaults(workers):
    """conftest's default conf changes [cache] (and timeouts) for the unit-style tests: put
    the shipped defaults back (None drops the key: conf/predcache.conf's values apply)."""
    return {
        "server": {"request_timeout_ms": None, "drain_timeout_ms": None,
                   "workers": str(workers)},
        "backend": {"connect_timeout_ms": None, "timeout_ms": None},
        "redis": {"timeout_ms": None},
        "cache": {"ttl_s": None, "per_instance": None, "version_refresh_s": None,
                  "l1_max_bytes": None},
        "log": {"level": None, "access_log": None},
    }


def eight_kb_bodies(n, seed):
    rng = random.Random(seed)
    return [json.dumps({"instances": [{"b64": base64.b64encode(rng.randbytes(6000)).decode()}]})
            .encode() for _ in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_shipped_defaults_l1_boundary(start_predcache, model, workers):
    p = start_predcache(conf=shipped_defaults(workers))
    bodies = eight_kb_bodies(1000, seed=workers)
    assert len(set(bodies)) == 1000 and all(8000 <= len(b) <= 8200 for b in bodies)
    reqs = [predict_request(PREDICT, b) for b in bodies]
    oracle = Oracle("shipped defaults, 1000 x 8 KB, %d worker(s)" % workers)
    once = run_load(p.url(), reqs, 4, oracle)
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 1000, timeout=20,
             what="1000 stores")
    again = run_load(p.url(), reqs, 4, oracle)
    time.sleep(6.0)  # past l1_ttl_ms (5000)
    after = run_load(p.url(), reqs, 4, oracle)
    lines = [phase_summary("once", once), phase_summary("again", again),
             phase_summary("after 6 s", after)]
    finish(oracle, lines)
    assert [r.status for r in once + again + after] == [200] * 3000, lines
    # the scenario crossed the boundary it is about: hits from the tier, then from Redis
    assert Counter(r.x_cache for r in again)["HIT"] >= 900, lines
    assert Counter(r.x_cache for r in after)["HIT"] >= 900, lines


# --------------------------------------------------------------------------- 3b: boundaries


HOT = 300


class Traffic:
    """An endless, thread-safe stream of (method, path, body, headers) over a growing pool
    of distinct inputs: ~40% of the inputs in a request are new, ~35% from the first HOT
    ones (hot: their bodies repeat byte for byte, for the l1 tier and the key memo), the
    rest from the last 3000. No two inputs are numerically equal (1 and 1.0 share a key by design)."""

    KINDS = [("single", 40), ("batch", 25), ("classify", 10), ("v2", 10), ("other", 10),
             ("inputs", 5)]

    def __init__(self, tag, seed):
        self.tag = tag
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.n = 0
        self.seen = []
        self.kinds = [k for k, w in self.KINDS for _ in range(w)]
        for _ in range(HOT):
            self.new_input()

    def new_input(self):
        self.n += 1
        i = self.n
        if i % 3 == 0:
            x = {"id": "%s-%d" % (self.tag, i), "v": [i, "w%d" % (i * 7)]}
        elif i % 3 == 1:
            x = "%s-%d-%s" % (self.tag, i, "x" * (i % 40))
        else:
            x = ["%s-%d" % (self.tag, i), i * 3 + 0.5]
        self.seen.append(x)
        return x

    def input(self):
        u = self.rng.random()
        if not self.seen or u < 0.4:
            return self.new_input()
        if u < 0.75:  # a hot set: the same bodies again and again, byte for byte
            return self.rng.choice(self.seen[:HOT])
        return self.rng.choice(self.seen[-3000:])

    def dumps(self, doc):
        if self.rng.random() < 0.2:
            return json.dumps(doc, separators=(",", ":"), sort_keys=True)
        return json.dumps(doc)

    def next_request(self):
        kind = self.rng.choice(self.kinds)
        if kind == "single":
            return predict_request(PREDICT, self.dumps({"instances": [self.input()]}))
        if kind == "batch":
            xs = [self.input() for _ in range(self.rng.randint(2, 6))]
            if self.rng.random() < 0.3:
                xs.append(self.rng.choice(xs))  # a duplicate inside the batch
            doc = {"instances": xs}
            if self.rng.random() < 0.3:
                doc["request_id"] = self.rng.randrange(1 << 30)
            return predict_request(PREDICT, self.dumps(doc))
        if kind == "classify":
            return predict_request("/v1/models/m:classify", self.dumps(
                {"instances": [self.input()], "request_id": self.rng.randrange(1 << 30)}))
        if kind == "v2":
            return predict_request("/v2/models/m/infer", self.dumps({"inputs": [self.input()]}))
        if kind == "other":  # another model, same inputs: never the other's entry
            return predict_request("/v1/models/n:predict",
                                   self.dumps({"instances": [self.input()]}))
        return predict_request(PREDICT, self.dumps({"inputs": [self.input(), self.input()]}))

    def __iter__(self):
        return self

    def __next__(self):
        with self.lock:
            return self.next_request()


class Probe:
    """Reserved inputs (never in the load) to check that a purge or an invalidation put an
    entry out of reach: the request after it must be a MISS. Every probe answer also goes
    through the oracle."""

    def __init__(self, oracle, redis):
        self.oracle = oracle
        self.redis = redis
        self.n = 0
        self.problems = []
        self.counts = Counter()
        self.lock = threading.Lock()

    def post(self, p, x):
        body = json.dumps({"instances": [x]}).encode()
        r = requests.post(p.url(PREDICT), data=body, headers=JSON, timeout=HTTP_TIMEOUT)
        reason = self.oracle.check("POST", PREDICT, body, JSON, r.status_code, r.content,
                                   r.headers.get("X-Cache"))
        if reason:
            self.problem("probe %r: wrong answer: %s" % (x, reason))
        return r

    def problem(self, text):
        with self.lock:
            self.problems.append(text)

    def cached(self, p, tag):
        """A new reserved input, answered, stored and hit: (input, key)."""
        self.n += 1
        x = "probe-%s-%d" % (tag, self.n)
        r = self.post(p, x)
        if r.status_code != 200 or "X-Cache-Key" not in r.headers:
            self.problem("probe %r: first answer %d %s" % (x, r.status_code, r.headers))
            return None, None
        key = r.headers["X-Cache-Key"]
        self.redis.wait_key(key)
        h = self.post(p, x)
        if h.headers.get("X-Cache") != "HIT":
            self.problem("probe %r: no HIT after the store (%s)" % (x, h.headers.get("X-Cache")))
        return x, key

    def expect_miss(self, p, x, what, old_key=None):
        r = self.post(p, x)
        got = r.headers.get("X-Cache")
        self.counts[(what, got)] += 1
        if r.status_code == 200 and got != "MISS":
            self.problem("after %s: %r answered %s, expected MISS" % (what, x, got))
        if old_key is not None and r.headers.get("X-Cache-Key") == old_key:
            self.problem("after %s: %r still keyed %s" % (what, x, old_key))

    def warm(self, procs, x):
        """Each of procs answers x from the cache (so it is in their l1 tier too)."""
        for q in procs:
            h = self.post(q, x)
            if h.headers.get("X-Cache") != "HIT":
                self.problem("probe %r on :%d: %s, expected HIT" % (x, q.listen_port,
                                                                   h.headers.get("X-Cache")))

    def purge(self, p, check_on=None, wait_s=0.0):
        x, key = self.cached(p, "purge")
        if key is None:
            return
        if check_on is not None:
            self.warm([check_on], x)
        d = requests.delete(p.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
        if d.status_code != 200 or d.json().get("deleted") != 1:
            self.problem("purge %s: %d %s" % (key, d.status_code, d.text[:200]))
            return
        if wait_s:
            time.sleep(wait_s)
        self.expect_miss(check_on or p, x, "purge")

    def invalidate(self, p, check_on=None, wait_s=0.0):
        x, key = self.cached(p, "inv")
        if key is None:
            return
        if check_on is not None:
            self.warm([check_on], x)
        r = requests.post(p.admin("/cache/invalidate?model=m"), timeout=HTTP_TIMEOUT)
        if r.status_code != 200:
            self.problem("invalidate: %d %s" % (r.status_code, r.text[:200]))
            return
        if wait_s:
            time.sleep(wait_s)
        self.expect_miss(check_on or p, x, "invalidation", old_key=key)

    def lines(self):
        return ["probes: %s" % dict(self.counts)] + self.problems[:10]


def side_thread(fn, stop):
    """Runs fn() in a thread; returns (thread, errors) - an exception in fn is recorded."""
    errors = []

    def run():
        try:
            fn()
        except Exception as e:  # noqa: BLE001 (reported by the test)
            errors.append(repr(e))
        finally:
            stop.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, errors


def merge(conf, more):
    out = {k: dict(v) for k, v in conf.items()}
    for k, v in more.items():
        out.setdefault(k, {}).update({a: str(b) for a, b in v.items() if b is not None})
    return out


def tiers(p):
    m = p.metrics()

    def total(name):
        return int(sum(v for (n, _), v in m.items() if n == name))
    return "predcache :%d: l1 hits %d, key memo hits %d / misses %d, stores %d" % (
        p.listen_port, total("predcache_l1_hits_total"), total("predcache_key_memo_hits_total"),
        total("predcache_key_memo_misses_total"), total("predcache_store_ok_total"))


# l1_max_bytes 128k holds a few hundred per-instance values (~0.4 KB each with the test
# model's layout) and key_memo_bytes 32k a few dozen bodies per worker, against thousands
# of distinct inputs: both evict all the time.
SMALL = {"l1_max_bytes": "128k", "key_memo_bytes": "256k", "per_instance": "on"}

RUNS = {
    "expiry": dict(
        conf={"server": {"workers": "2"},
              "cache": dict(SMALL, ttl_s="1", grace_s="2", l1_max_bytes="4m",
                            l1_ttl_ms="300")},
        seconds=7.0),
    "purge": dict(
        conf={"server": {"workers": "2"},
              "cache": dict(SMALL, ttl_s="3", grace_s="1", l1_max_bytes="4m", l1_ttl_ms="2000",
                            generation_refresh_ms="1000")},
        seconds=6.0),
    "two-redis": dict(
        conf={"cache": dict(SMALL, ttl_s="2", grace_s="0", l1_ttl_ms="400")},
        seconds=8.0, workers=[2, 1]),
}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_boundaries(start_predcache, model, redis, run):
    spec = RUNS[run]
    procs = [start_predcache(conf=merge(spec["conf"], {"server": {"workers": w}}))
             for w in spec.get("workers", [None])]
    oracle = Oracle(run, ignore_fields=("request_id",))
    probe = Probe(oracle, redis)
    seconds = spec["seconds"]
    traffic = Traffic(run, seed=sum(run.encode()))
    t0 = time.monotonic()
    notes = []

    def at(t):
        time.sleep(max(0.0, t0 + t - time.monotonic()))

    def events():
        if run == "purge":
            a = procs[0]
            at(0.8)
            cycle = 0
            while time.monotonic() - t0 < seconds - 1.0:
                probe.purge(a)
                if cycle % 3 == 2:
                    probe.invalidate(a)  # every entry of model m out of reach: a cold start
                cycle += 1
                time.sleep(0.1)
        elif run == "two-redis":
            a, b = procs
            at(1.0)
            probe.purge(a, check_on=b, wait_s=0.3)
            at(2.5)
            redis.kill()
            notes.append("redis killed at %.1fs" % (time.monotonic() - t0))
            at(4.0)
            redis.start()
            notes.append("redis back at %.1fs" % (time.monotonic() - t0))
            # both processes reconnect (with backoff); then a purge on one reaches the other
            # (/ready stays 200 while Redis is down: its body says when Redis is back)
            wait_for(lambda: all(requests.get(q.admin("/ready"), timeout=2).json()["redis"] ==
                                 "ok" for q in procs), timeout=10, what="both on Redis again")
            probe.purge(a, check_on=b, wait_s=0.3)
            probe.invalidate(b, check_on=a, wait_s=1.2)  # within generation_refresh_ms
        else:
            at(seconds)

    stop = threading.Event()
    ev, ev_errors = side_thread(events, stop)
    per_proc = max(1, 6 // len(procs))
    loads = []
    results = {}

    def load(i, q):
        results[i] = run_load(q.url(), traffic, per_proc, oracle, duration_s=seconds)

    for i, q in enumerate(procs):
        t = threading.Thread(target=load, args=(i, q), daemon=True)
        t.start()
        loads.append(t)
    for t in loads:
        t.join(seconds + 90)
    ev.join(30)
    assert not ev.is_alive(), "the event thread did not finish"
    all_results = [r for i in sorted(results) for r in results[i]]
    lines = ["%d distinct inputs, %.1fs" % (traffic.n, time.monotonic() - t0)]
    lines += [phase_summary("load on predcache %d" % i, results[i]) for i in sorted(results)]
    lines += [tiers(q) for q in procs]
    bypass = [r.started - t0 for r in all_results if r.x_cache == "BYPASS"]
    if bypass:
        lines.append("BYPASS answers from %.1fs to %.1fs" % (min(bypass), max(bypass)))
    lines += notes + probe.lines() + ["event errors: %s" % e for e in ev_errors]
    finish(oracle, lines)
    assert not ev_errors and not probe.problems, "\n".join(lines)
    assert traffic.n >= 1000, "\n".join(lines)
    assert sum(1 for r in all_results if r.status == 200) >= len(all_results) * 0.9, \
        "\n".join(lines)
    if run == "expiry":
        stale = sum(q.metric("predcache_requests_total", cache="stale") for q in procs)
        assert stale > 0 or Counter(r.x_cache for r in all_results)["STALE"] > 0, lines
