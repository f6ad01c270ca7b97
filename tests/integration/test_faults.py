"""Faults under load: Redis killed and restarted, Redis paused (SIGSTOP), the model server
killed (with and without never-seen inputs), predcache SIGTERM, and a slow model hammered
on three keys (coalescing); plus a regression test: no STALE answer with grace_s 0, even
when Redis ran the SET late.

A small load harness runs THREADS client threads, each with one keep-alive HTTP/1.1
connection (http.client: it tells when the request bytes have been written, which the
SIGTERM scenario needs to know which requests were sent before the signal), sending
POST /v1/models/m:predict {"instances": [x]} for x drawn from a pool of 40 inputs, for
DURATION_S seconds (and at most MAX_PER_THREAD requests per thread). Every answer is
checked by the integrity oracle (tests/integration/oracle.py, the one checker of every
load test): the test model server's predictions are sha256(canonical(x))[:16] and its
answers carry a digest of what it received, so each answer is judged against its own
request:

    answered   200 and the oracle finds it the model's answer to that request
    wrong      200 and the oracle finds it is not (wrong predictions, another request's
               answer, a body not from the model)
    failed     anything else (status or exception recorded)

The fault is injected from the main thread at 1/3 of the run and healed at 2/3. Every
scenario prints a report (sent, answered, failed, wrong, X-Cache counts, per phase) and
appends it to the file named by PREDCACHE_FAULT_REPORT when that is set; its "wrong"
column and its "wrong answers: N" line are the oracle's count, and every scenario asserts
N == 0 (the answers of the warm-up and of the polls after a fault are checked too).
Timing is never asserted: only correctness, and that the fault did take effect.
"""

import hashlib
import http.client
import json
import math
import os
import random
import signal
import threading
import time
from collections import Counter


from conftest import canonical, wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"
JSON = {"Content-Type": "application/json"}
THREADS = 8
DURATION_S = float(os.environ.get("PREDCACHE_FAULT_SECONDS", "6"))
MAX_PER_THREAD = 10000
CLIENT_TIMEOUT_S = 15.0
RECOVER_S = 15.0
SAMPLES = 8


def expected_prediction(x):
    return hashlib.sha256(canonical(x).encode("utf-8")).hexdigest()[:16]


def make_pool(n=40):
    """n distinct inputs of several shapes; no two are numerically equal (1 and 1.0 would
    share a cache key, by design, and then a correct cache would look wrong here)."""
    pool = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            pool.append("text-%d" % i)
        elif kind == 1:
            pool.append([i, i + 0.25, -3 * i])
        elif kind == 2:
            pool.append({"id": i, "tags": ["a%d" % i, "\u00e9\u4e2d"], "w": i / 8})
        else:
            pool.append([[i, "x"], {"k": i, "nested": {"z": [i, None, True]}}])
    return pool


POOL = make_pool()
POOL_EXPECTED = [expected_prediction(x) for x in POOL]


# --------------------------------------------------------------------------- harness


class Rec:
    """One request: what was sent, when, and what came back."""

    __slots__ = ("thread", "kind", "x", "t0", "t_sent", "t1", "status", "xcache", "verdict",
                 "error", "exc", "reused", "conn_close", "body", "reason")

    def __init__(self, thread, kind, x):
        self.thread, self.kind, self.x = thread, kind, x
        self.t0 = self.t_sent = self.t1 = None
        self.status = self.xcache = self.error = self.exc = self.body = None
        self.reason = None  # the oracle's, for a wrong answer
        self.verdict = None  # "ok" | "wrong" | "status" | "error"
        self.reused = False
        self.conn_close = False

    def describe(self, t_base=0.0):
        def t(v):
            return "-" if v is None else "%+.4f" % (v - t_base)
        what = ("HTTP %s X-Cache=%s body=%r%s" % (
            self.status, self.xcache, self.body,
            " (oracle: %s)" % self.reason if self.reason else "")
                if self.status is not None else self.error)
        return "thread %d %s x=%s t0=%s sent=%s end=%s reused=%s: %s" % (
            self.thread, self.kind, json.dumps(self.x)[:60], t(self.t0), t(self.t_sent),
            t(self.t1), self.reused, what)


def pool_chooser(rng, thread, n):
    i = rng.randrange(len(POOL))
    return POOL[i], "pool", POOL_EXPECTED[i]


def fault_oracle(name):
    """The checker of one scenario: the harness conf keys whole bodies (per_instance off),
    so an answer must be the model's for this very body, not merged from instances."""
    return Oracle(name, per_instance=False)


class Load:
    """THREADS clients; each loops until stop is set, the deadline passes or it has sent
    max_per_thread requests. choose(rng, thread, n) -> (x, kind, expected prediction);
    every answer is judged by oracle (one is made when none is given)."""

    def __init__(self, port, choose=pool_chooser, threads=THREADS, duration=DURATION_S,
                 max_per_thread=MAX_PER_THREAD, oracle=None):
        self.port = port
        self.oracle = oracle if oracle is not None else fault_oracle("load")
        self.choose = choose
        self.nthreads = threads
        self.duration = duration
        self.max_per_thread = max_per_thread
        self.stop = threading.Event()
        self.records = [[] for _ in range(threads)]
        self.threads = []
        self.t_start = self.deadline = None
        self.marks = {}

    def mark(self, name):
        self.marks[name] = time.monotonic()
        return self.marks[name]

    def start(self):
        self.t_start = time.monotonic()
        self.deadline = self.t_start + self.duration
        self.threads = [threading.Thread(target=self.worker, args=(i,), daemon=True)
                        for i in range(self.nthreads)]
        for t in self.threads:
            t.start()
        return self

    def join(self):
        limit = time.monotonic() + max(0.0, self.deadline - time.monotonic()) + CLIENT_TIMEOUT_S + 5
        for t in self.threads:
            t.join(max(0.1, limit - time.monotonic()))
        stuck = [t.name for t in self.threads if t.is_alive()]
        assert not stuck, "load threads did not finish: %s" % stuck
        self.t_end = time.monotonic()
        return self

    def sleep_until(self, fraction):
        delay = self.t_start + self.duration * fraction - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def run(self, inject=None, heal=None):
        """Starts, injects at 1/3, heals at 2/3, joins."""
        self.start()
        try:
            self.sleep_until(1 / 3)
            if inject is not None:
                self.mark("fault")
                inject()
                self.mark("fault_done")
            self.sleep_until(2 / 3)
            if heal is not None:
                self.mark("heal")
                heal()
                self.mark("heal_done")
        finally:
            self.join()
        return self

    @property
    def all(self):
        return [r for recs in self.records for r in recs]

    def worker(self, idx):
        rng = random.Random(7919 * (idx + 1))
        recs = self.records[idx]
        conn = None
        n = 0
        while (not self.stop.is_set() and n < self.max_per_thread
               and time.monotonic() < self.deadline):
            x, kind, _ = self.choose(rng, idx, n)  # the oracle judges, not the expectation
            n += 1
            rec = Rec(idx, kind, x)
            recs.append(rec)
            body = json.dumps({"instances": [x]})
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                  timeout=CLIENT_TIMEOUT_S)
            rec.reused = conn.sock is not None
            rec.t0 = time.monotonic()
            try:
                conn.request("POST", PREDICT, body=body,
                             headers={"Content-Type": "application/json"})
                rec.t_sent = time.monotonic()
                resp = conn.getresponse()
                data = resp.read()
                rec.t1 = time.monotonic()
                rec.status = resp.status
                rec.xcache = resp.getheader("X-Cache")
                rec.conn_close = (resp.getheader("Connection") or "").lower() == "close"
                if resp.will_close:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 (every failure is recorded)
                rec.t1 = time.monotonic()
                rec.exc = e
                rec.error = "%s: %s" % (type(e).__name__, e)
                rec.verdict = "error"
                self.oracle.fail(rec.error)
                if conn is not None:
                    conn.close()
                conn = None
                if isinstance(e, ConnectionRefusedError):
                    time.sleep(0.01)  # nothing listens: do not spin
                continue
            # one checker: the oracle judges every answer (non-200 ones are counted apart)
            rec.reason = self.oracle.check("POST", PREDICT, body, JSON, rec.status, data,
                                           rec.xcache)
            if rec.status != 200:
                rec.verdict = "status"
                rec.body = data[:160]
                continue
            rec.verdict = "wrong" if rec.reason is not None else "ok"
            if rec.reason is not None:
                rec.body = data[:200]
        if conn is not None:
            conn.close()


def t_base(load):
    """Times in samples are relative to the fault (negative: before it), else the start."""
    return load.marks.get("fault", load.t_start)


def phase_of(load, rec):
    f, h = load.marks.get("fault"), load.marks.get("heal")
    if f is None or rec.t0 < f:
        return "before"
    if h is None or rec.t0 < h:
        return "during"
    return "after"


def tally(load, classify=None):
    """Buckets every record: classify(rec) may name a bucket for records it judges
    itself; the default is answered / wrong / failed from the verdict."""
    buckets = {}
    xcache = Counter()
    phases = {"before": Counter(), "during": Counter(), "after": Counter()}
    for rec in load.all:
        bucket = classify(rec) if classify else None
        if bucket is None:
            bucket = {"ok": "answered", "wrong": "wrong"}.get(rec.verdict, "failed")
        buckets.setdefault(bucket, []).append(rec)
        label = rec.xcache if rec.status == 200 else (
            "%s" % rec.status if rec.status is not None else type(rec.exc).__name__)
        if rec.status == 200:
            xcache[rec.xcache or "-"] += 1
        phases[phase_of(load, rec)][label or "-"] += 1
    return buckets, xcache, phases


def fmt_counter(c):
    return " ".join("%s=%d" % kv for kv in sorted(c.items())) or "-"


def report(name, load, buckets, xcache, phases, notes="", samples=SAMPLES):
    """The scenario's table; its "wrong" column is the oracle's count (of the load's
    answers and of every other answer checked with the same oracle: warm-up, polls)."""
    n = {k: len(v) for k, v in buckets.items()}
    n["wrong"] = load.oracle.wrong
    sent = sum(len(v) for v in buckets.values())
    others = {k: v for k, v in n.items() if k not in ("answered", "failed", "wrong")}
    dur = (load.t_end - load.t_start) if load.t_start else 0.0
    lines = [
        "%-26s %6s %8s %6s %5s  %s" % ("scenario", "sent", "answered", "failed", "wrong",
                                       "X-Cache of answers / other outcomes"),
        "%-26s %6d %8d %6d %5d  %s%s" % (
            name, sent, n.get("answered", 0), n.get("failed", 0), n.get("wrong", 0),
            fmt_counter(xcache),
            ("  | " + fmt_counter(Counter(others))) if others else ""),
        "    run %.1fs, %.0f req/s; by phase (fault at 1/3, heal at 2/3):" % (
            dur, sent / dur if dur else 0.0),
    ]
    for ph in ("before", "during", "after"):
        if phases[ph]:
            lines.append("      %-7s %s" % (ph, fmt_counter(phases[ph])))
    if notes:
        lines.extend("    " + l for l in notes.splitlines())
    lines.append("    " + load.oracle.report())
    lines.extend("    oracle sample: " + x for x in load.oracle.samples[:samples])
    bad = buckets.get("failed", []) + buckets.get("wrong", [])
    for rec in bad[:samples]:
        lines.append("    sample %s: %s" % ("wrong" if rec.verdict == "wrong" else "failed",
                                            rec.describe(t_base(load))))
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    path = os.environ.get("PREDCACHE_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(text + "\n\n")
    return n


def evidence(p, buckets, load, extra=""):
    """What an assertion message carries: samples and predcache's stderr tail."""
    out = [extra] if extra else []
    out.append(load.oracle.report())
    out.extend("oracle sample: " + x for x in load.oracle.samples)
    for k in ("wrong", "failed"):
        for rec in buckets.get(k, [])[:SAMPLES]:
            out.append("%s: %s" % (k, rec.describe(t_base(load))))
    out.append("predcache exit: %s" % (p.proc.poll(),))
    out.append("predcache stderr tail:\n" + p.stderr_text()[-3000:])
    return "\n".join(out)


def post(p, x, oracle):
    """One request outside the load, its answer checked by the scenario's oracle."""
    body = json.dumps({"instances": [x]})
    r = p.post(PREDICT, body=body)
    oracle.check("POST", PREDICT, body, JSON, r.status_code, r.content,
                 r.headers.get("X-Cache"))
    return r


def warm_pool(p, oracle):
    """Every pool input once through predcache, then waits until all are stored."""
    stored = p.metric("predcache_store_ok_total")
    for i, x in enumerate(POOL):
        r = post(p, x, oracle)
        assert r.status_code == 200 and r.json()["predictions"] == [POOL_EXPECTED[i]], r.text
    wait_for(lambda: p.metric("predcache_store_ok_total") >= stored + len(POOL),
             what="the %d pool answers stored" % len(POOL))


def wait_hit(p, oracle):
    """Polls pool inputs until one is answered from the cache (HIT)."""
    seen = []

    def hit():
        r = post(p, POOL[len(seen) % len(POOL)], oracle)
        seen.append((r.status_code, r.headers.get("X-Cache")))
        assert r.status_code == 200, r.text
        return r.headers.get("X-Cache") == "HIT"

    wait_for(hit, timeout=RECOVER_S, interval=0.1,
             what="an X-Cache: HIT after the fault healed (last: %s)" % seen[-5:])


def assert_alive(p):
    assert p.proc.poll() is None, "predcache exited with %s\n%s" % (
        p.proc.returncode, p.stderr_text()[-3000:])


# --------------------------------------------------------------------------- scenarios


def test_redis_killed_and_restarted_under_load(start_predcache, model, redis):
    p = start_predcache()
    oracle = fault_oracle("redis killed+restarted")
    warm_pool(p, oracle)
    load = Load(p.listen_port, oracle=oracle).run(inject=redis.kill, heal=redis.start)
    buckets, xcache, phases = tally(load)
    resumed = Counter()

    def hits_again():
        # caching resumes: pool inputs get stored again and come back as HITs
        r = post(p, POOL[sum(resumed.values()) % len(POOL)], oracle)
        assert r.status_code == 200, r.text
        resumed[r.headers.get("X-Cache")] += 1
        return r.headers.get("X-Cache") == "HIT"

    wait_for(hits_again, timeout=RECOVER_S, interval=0.05, what="HITs after Redis restarted")
    n = report("redis killed+restarted", load, buckets, xcache, phases,
               notes="after the run, polled until a HIT: %s" % fmt_counter(resumed))
    msg = evidence(p, buckets, load)
    assert n["wrong"] == 0 and load.oracle.checked > 0, msg
    load.oracle.assert_clean()
    assert n.get("failed", 0) == 0, msg
    assert phases["during"]["BYPASS"] > 0, "the kill had no effect (no BYPASS)\n" + msg
    assert_alive(p)


def test_redis_paused_under_load(start_predcache, model, redis):
    p = start_predcache(conf={"redis": {"timeout_ms": "100"}})
    oracle = fault_oracle("redis paused (SIGSTOP)")
    warm_pool(p, oracle)
    try:
        load = Load(p.listen_port, oracle=oracle).run(inject=redis.pause, heal=redis.resume)
    finally:
        redis.resume()
    buckets, xcache, phases = tally(load)
    resumed = Counter()

    def hits_again():
        r = post(p, POOL[sum(resumed.values()) % len(POOL)], oracle)
        assert r.status_code == 200, r.text
        resumed[r.headers.get("X-Cache")] += 1
        return r.headers.get("X-Cache") == "HIT"

    wait_for(hits_again, timeout=RECOVER_S, interval=0.05, what="HITs after Redis resumed")
    n = report("redis paused (SIGSTOP)", load, buckets, xcache, phases,
               notes="after the run, polled until a HIT: %s" % fmt_counter(resumed))
    msg = evidence(p, buckets, load)
    assert n["wrong"] == 0 and load.oracle.checked > 0, msg
    load.oracle.assert_clean()
    assert n.get("failed", 0) == 0, msg
    assert phases["during"]["BYPASS"] > 0, "the pause had no effect (no BYPASS)\n" + msg
    assert_alive(p)


GRACE_CONF = {"cache": {"ttl_s": "1", "grace_s": "600"},
              "backend": {"connect_timeout_ms": "200"}}


def kill_model(model):
    model.proc.kill()  # SIGKILL: gone without a goodbye
    model.proc.wait(timeout=10)


def test_backend_killed_under_load_answers_from_cache(start_predcache, model, redis):
    p = start_predcache(conf=GRACE_CONF)
    oracle = fault_oracle("backend killed (warm)")
    warm_pool(p, oracle)
    time.sleep(1.1)  # past ttl_s: the run starts with stale entries
    load = Load(p.listen_port, oracle=oracle).run(inject=lambda: kill_model(model))
    buckets, xcache, phases = tally(load)
    not_cached = [r for r in buckets.get("answered", []) if r.xcache not in ("HIT", "STALE")]
    n = report("backend killed (warm)", load, buckets, xcache, phases,
               notes="refresh ok %d, refresh failed %d" % (
                   p.metric("predcache_refresh_ok_total"),
                   p.metric("predcache_refresh_failed_total")))
    msg = evidence(p, buckets, load)
    assert n["wrong"] == 0 and load.oracle.checked > 0, msg
    load.oracle.assert_clean()
    assert n.get("failed", 0) == 0, msg
    assert not not_cached, "answers not from the cache: %s\n%s" % (
        [r.describe(t_base(load)) for r in not_cached[:SAMPLES]], msg)
    after_kill = [r for r in load.all if r.t0 >= load.marks["fault_done"]]
    assert any(r.xcache == "STALE" for r in after_kill), "no STALE answer after the kill\n" + msg
    assert_alive(p)


def test_backend_killed_under_load_with_unseen_inputs(start_predcache, model, redis):
    """10% never-seen inputs, sent once the model server is dead: exactly those fail."""
    p = start_predcache(conf=GRACE_CONF)
    oracle = fault_oracle("backend killed (+unseen)")
    warm_pool(p, oracle)
    time.sleep(1.1)
    dead = threading.Event()

    def choose(rng, thread, n):
        if dead.is_set() and rng.random() < 0.10:
            x = "unseen-%d-%d-%d" % (thread, n, rng.randrange(1 << 30))
            return x, "unseen", expected_prediction(x)
        return pool_chooser(rng, thread, n)

    def inject():
        kill_model(model)
        dead.set()

    load = Load(p.listen_port, choose=choose, oracle=oracle).run(inject=inject)
    buckets, xcache, phases = tally(load)
    unseen = [r for r in load.all if r.kind == "unseen"]
    failed = buckets.get("failed", [])
    n = report("backend killed (+unseen)", load, buckets, xcache, phases,
               notes="unseen inputs sent (all after the kill): %d; their outcomes: %s" % (
                   len(unseen), fmt_counter(Counter(
                       str(r.status) if r.status is not None else r.error for r in unseen))),
               samples=2)
    msg = evidence(p, buckets, load)
    assert n["wrong"] == 0 and load.oracle.checked > 0, msg
    load.oracle.assert_clean()
    assert unseen, "no unseen input was sent\n" + msg
    seen_failed = [r for r in failed if r.kind != "unseen"]
    assert not seen_failed, "cached inputs failed:\n%s\n%s" % (
        "\n".join(r.describe(t_base(load)) for r in seen_failed[:SAMPLES]), msg)
    bad_unseen = [r for r in unseen if r.status not in (502, 503, 504)]
    assert not bad_unseen, "unseen inputs not answered 502/503/504:\n%s\n%s" % (
        "\n".join(r.describe(t_base(load)) for r in bad_unseen[:SAMPLES]), msg)
    assert len(failed) == len(unseen), msg
    assert_alive(p)


def test_sigterm_under_load(start_predcache, model, redis):
    """Requests whose bytes were written before SIGTERM are answered 200 (in flight ones
    included); afterwards new connections are refused and predcache exits 0."""
    p = start_predcache()
    oracle = fault_oracle("predcache SIGTERM")
    warm_pool(p, oracle)  # pool clients get fast HITs: many requests just written at the signal
    model.control(delay_ms=250)

    def choose(rng, thread, n):
        if thread % 2 == 0:  # slow misses: keep model calls in flight at the signal
            x = "slow-%d-%d" % (thread, n)
            return x, "slow", expected_prediction(x)
        return pool_chooser(rng, thread, n)

    load = Load(p.listen_port, choose=choose, duration=DURATION_S + 20, oracle=oracle).start()
    try:
        time.sleep(DURATION_S / 3)

        def slow_call_just_sent():
            # signal just after a slow model call started: the drain must wait for it
            recs = load.records[0]
            last = recs[-1] if recs else None
            return (last is not None and last.t_sent is not None and last.t1 is None
                    and time.monotonic() - last.t_sent < 0.05)

        try:
            wait_for(slow_call_just_sent, timeout=3.0, interval=0.002)
        except AssertionError:
            pass  # not worth failing for: the signal goes anyway
        t_sig = load.mark("fault")
        p.proc.send_signal(signal.SIGTERM)
        load.mark("fault_done")
        try:
            rc = p.proc.wait(timeout=20)
        except Exception:  # noqa: BLE001
            rc = None
        t_exit = load.mark("exited")
        time.sleep(0.5)  # clients meet the closed listener
    finally:
        load.stop.set()
        load.join()

    def classify(rec):
        if rec.t_sent is not None and rec.t_sent < t_sig:
            return None  # sent before the signal: must be answered
        if rec.verdict in ("ok", "wrong"):
            return None
        if isinstance(rec.exc, ConnectionRefusedError):
            return "refused after stop"
        if (rec.reused and rec.status is None and rec.t1 >= t_sig
                and isinstance(rec.exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                         BrokenPipeError, ConnectionAbortedError))):
            # written (or not even written) after the signal on a keep-alive connection
            # that the drain closed as idle: the server never accepted this request
            return "closed after stop"
        if rec.status == 503 and b"shutting down" in (rec.body or b""):
            return "503 after stop"
        return None  # anything else after the signal is a failure

    buckets, xcache, phases = tally(load, classify)
    in_flight = [r for r in load.all if r.t_sent is not None and r.t_sent < t_sig
                 and r.t1 is not None and r.t1 > t_sig]
    with_close = sum(1 for r in in_flight if r.conn_close)
    n = report("predcache SIGTERM", load, buckets, xcache, phases,
               notes=("exit status %s, %.2fs after SIGTERM; in flight at the signal: %d "
                      "(%d answered, %d with Connection: close, the last %.3fs after it)" % (
                          rc, t_exit - t_sig, len(in_flight),
                          sum(1 for r in in_flight if r.verdict == "ok"), with_close,
                          max([r.t1 - t_sig for r in in_flight] or [0]))))
    msg = evidence(p, buckets, load, "exit status %s" % rc)
    assert rc == 0, msg
    assert n["wrong"] == 0 and load.oracle.checked > 0, msg
    load.oracle.assert_clean()
    assert n.get("failed", 0) == 0, msg
    assert in_flight, "no request was in flight at SIGTERM (the check proved nothing)\n" + msg
    assert n.get("refused after stop", 0) > 0, "no connection was refused after exit\n" + msg


def test_slow_backend_coalescing_under_load(start_predcache, model, redis):
    """All clients on 3 inputs, model 300 ms: at most 3 model calls per TTL window."""
    ttl = 2
    p = start_predcache(conf={"cache": {"ttl_s": str(ttl), "grace_s": "0"}})
    model.control(delay_ms=300)
    hot = POOL[:3]
    hot_expected = POOL_EXPECTED[:3]

    def choose(rng, thread, n):
        i = rng.randrange(3)
        return hot[i], "hot", hot_expected[i]

    before = model.count(PREDICT)
    load = Load(p.listen_port, choose=choose, oracle=fault_oracle("slow model, 3 hot keys")).run()
    calls = model.count(PREDICT) - before
    buckets, xcache, phases = tally(load)
    span = max(r.t0 for r in load.all) - load.t_start
    windows = math.ceil(span / ttl) + 1  # +1: a window boundary inside the run
    n = report("slow model, 3 hot keys", load, buckets, xcache, phases,
               notes=("model calls %d over %.1fs (ttl_s %d, grace_s 0): bound 3 x %d windows"
                      " = %d; refreshes ok %d failed %d; STALE answers %d (grace_s 0 promises"
                      " none)" % (calls, span, ttl, windows, 3 * windows,
                                  p.metric("predcache_refresh_ok_total"),
                                  p.metric("predcache_refresh_failed_total"),
                                  xcache.get("STALE", 0))))
    msg = evidence(p, buckets, load)
    assert n["wrong"] == 0 and load.oracle.checked > 0, msg
    load.oracle.assert_clean()
    assert n.get("failed", 0) == 0, msg
    # Coalescing: the calls made for misses. Background refreshes are left out: with
    # grace_s 0 there should be none, but predcache still makes some (see
    # test_grace_zero_gives_no_stale_answer), which is a separate bug from coalescing.
    refreshes = (p.metric("predcache_refresh_ok_total")
                 + p.metric("predcache_refresh_failed_total"))
    assert calls - refreshes <= 3 * windows, "%d model calls (%d refreshes) for 3 keys in " \
        "%.1fs\n%s" % (calls, refreshes, span, msg)
    assert_alive(p)


class StaleWithGraceZero(AssertionError):
    pass


def test_grace_zero_gives_no_stale_answer(start_predcache, model, redis):
    """README: grace_s 0 means no stale answers. The entry's age is counted from
    stored_at_ms, taken when predcache builds the SET, while Redis's EX counts from when it
    runs the SET; a SET delayed by a paused (or busy) Redis leaves the key in Redis past
    stored_at + ttl_s. Under the load of test_slow_backend_coalescing_under_load this gap is
    a few ms and shows as a handful of STALE answers and extra model calls; here a 500 ms
    pause makes it certain."""
    p = start_predcache(conf={"cache": {"ttl_s": "1", "grace_s": "0"},
                              "redis": {"timeout_ms": "3000"}})
    redis.pause()
    try:  # no-cache: no lookup; the store waits on the paused Redis
        r1 = p.post(PREDICT, json_body={"instances": ["grace-zero"]},
                    headers={"Cache-Control": "no-cache"})
        assert r1.status_code == 200, r1.text
        time.sleep(0.5)
    finally:
        redis.resume()
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 1, what="the answer stored")
    key = r1.headers["X-Cache-Key"]
    time.sleep(0.75)  # now past stored_at + ttl_s, still inside the key's Redis lifetime
    pttl = redis.pttl(key)
    oracle = fault_oracle("grace_s 0")
    r2 = post(p, "grace-zero", oracle)
    assert r2.status_code == 200, r2.text
    if r2.headers.get("X-Cache") == "STALE":
        time.sleep(0.2)
        raise StaleWithGraceZero(
            "grace_s 0 but answered X-Cache: STALE (Age %s, Warning %r; key PTTL was %d ms); "
            "refreshes %d, model calls %d" % (
                r2.headers.get("Age"), r2.headers.get("Warning"), pttl,
                p.metric("predcache_refresh_ok_total"), model.count(PREDICT)))
    assert r2.headers.get("X-Cache") in ("HIT", "MISS"), r2.headers
    oracle.assert_clean()
