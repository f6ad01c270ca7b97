"""The integrity oracle: is each answer the model's answer to that exact request?

One checker for the whole test tree (integrity, soak, faults, workers, coalescing, bench,
demo runs). A cache that answers fast but with another request's prediction is worse than
no cache; the only way to see it is to check every answer against the request it answers,
in the runs that cross the boundaries where caches break (TTL expiry, grace, the
in-process tier's TTL and eviction, key memo eviction, purges, invalidations, several
workers, several processes, Redis restarts, per-instance batches).

The test model server (tests/fixtures/model_server.py) makes that checkable: every 200
predict answer carries the predictions of its input (one short hash per instance) and a
digest of exactly what the server received ("received": method, path, query,
body_sha256, doc_sha256, auth_sha256). A cache replays stored bytes, so a replayed answer
still names the request the model answered.

    from oracle import Oracle, run_load, expected_predictions

    oracle = Oracle("l1 boundary")
    err = oracle.check("POST", "/v1/models/m:predict", body, headers, r.status,
                       r.content, r.headers.get("X-Cache"))
    ...
    oracle.assert_clean()          # prints the report; fails when wrong > 0 or nothing checked

What counts as WRONG (check() returns the reason, counts it in .wrong, keeps the first
SAMPLES reasons in .samples):

- a 200 answer to a predict request (POST to /v1/models/...:predict|classify|regress,
  /v1/models/.../labels/...:..., /predict, /v2/models/.../infer) that
    * is not JSON, or is not an object, or has no "predictions" list;
    * has predictions other than expected_predictions(body sent), i.e. what the model
      gives for this body, compared per instance (so it still holds for a batch that
      predcache merged from per-instance cache entries);
    * names another model than the request's path ("model");
    * has no "received" member (the answer did not come from the model server);
    * received another method, path (without query) or query than the request had:
      the key holds the route and the query, so another route's answer is wrong even
      when its predictions are equal (two models given the same input);
    * received a body that is neither the same bytes (body_sha256) nor the same
      document (doc_sha256, canonical JSON: whitespace and key order do not change the
      meaning), unless
        - the body differs only in top-level fields named in ignore_fields (noise
          fields the key leaves out by design, e.g. "request_id"): the oracle remembers
          the documents it was asked about and accepts an answer received for one that
          equals this one without those fields; or
        - the request is a TF Serving batch ({"instances": [...]} on :predict or
          /predict) and every prediction matched: with per_instance on, predcache merges
          such answers from per-instance entries (the text around the array comes from
          another request's answer, and the model only saw the missing instances), so
          the per-instance predictions are all that can be asked of it. Counted in
          .merged. Construct with per_instance=False to refuse this (per-body keys).
    * with check_auth (the default): was computed under other credentials
      (auth_sha256 of Authorization + "\\n" + Cookie differs from the request's): a
      shared cache must not hand one client's answer to another credential scope.
- a 200 answer to a GET passed through to the model server's echo route
  ({"path", "query"}) that names another path or query.

NOT wrong, counted apart:
- non-200 answers (.non_200 by status): overload, timeouts, Redis or model faults are
  reported, not judged; a run that wants none asserts on them itself;
- transport errors recorded with fail() (.failed, by reason);
- 200 answers to requests the oracle cannot judge (.unchecked): other routes, or a
  predict request whose body the model would have refused (that one IS wrong: the
  model answers 400, so a 200 with predictions cannot be its answer).

Known limits: equal-by-value inputs that the key folds (1, 1.0 and 1e0 share a key by
design) get different predictions from the test model, so the oracle calls such answers
wrong: runs must draw inputs that are not numerically equal. With version_refresh_s on,
two labels resolving to one version share entries by design: pass check_path=False there.

Thread-safe: one lock guards the counters; check() may be called from any thread.
"""

import http.client
import json
import os
import sys
import threading
import time
from collections import Counter, namedtuple
from urllib.parse import urlsplit

_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
if _FIXTURES not in sys.path:
    sys.path.insert(0, _FIXTURES)

import model_server  # noqa: E402  (tests/fixtures/model_server.py: the model's own rules)
from model_server import (  # noqa: E402,F401  (re-exported for tests)
    auth_digest,
    canonical,
    doc_digest,
    expected_predictions,
    predictions_for,
    sha256_hex,
    short_hash,
)

__all__ = ["Oracle", "Result", "run_load", "predict_request", "expected_predictions",
           "predictions_for", "short_hash", "canonical", "auth_digest", "doc_digest",
           "sha256_hex", "split_target", "is_predict_route", "is_batch_route", "model_of"]

SAMPLES = 10
REMEMBER_MAX = 1_000_000  # documents remembered for ignore_fields (digest -> digest)


def split_target(target):
    """'/p?q' -> ('/p', 'q'), as the model server splits its request line."""
    parts = urlsplit(target)
    return parts.path, parts.query


def is_predict_route(method, path):
    if method != "POST":
        return False
    return bool(model_server.TF_ROUTE.match(path) or model_server.V2_ROUTE.match(path)
                or model_server.LABEL_ROUTE.match(path) or path == "/predict")


def model_of(path):
    """The model name the test model server answers a predict path with."""
    m = (model_server.TF_ROUTE.match(path) or model_server.V2_ROUTE.match(path)
         or model_server.LABEL_ROUTE.match(path))
    return m.group(1) if m else "default"


def is_batch_route(path):
    """Where predcache caches instance by instance: ':predict' and '/predict' routes."""
    return path.endswith(":predict") or path.endswith("/predict")


def _as_bytes(data):
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode("utf-8")
    return bytes(data)


def _short(data, n=80):
    text = data[:n].decode("utf-8", "replace") if isinstance(data, bytes) else str(data)[:n]
    return text + ("..." if len(data) > n else "")


class Oracle:
    """Checks answers against their requests; see the module docstring for the rules."""

    def __init__(self, name="", ignore_fields=(), check_auth=True, per_instance=True,
                 check_path=True):
        self.name = name
        self.ignore_fields = frozenset(ignore_fields or ())
        self.check_auth = check_auth
        self.per_instance = per_instance
        self.check_path = check_path
        self._lock = threading.Lock()
        self.total = 0          # every check() and fail()
        self.checked = 0        # 200 answers judged (right or wrong)
        self.wrong = 0
        self.merged = 0         # batch answers accepted on their per-instance predictions
        self.unchecked = 0      # 200 answers to requests the oracle cannot judge
        self.by_cache = Counter()   # X-Cache (or "-") -> count, every answer
        self.non_200 = Counter()    # status -> count
        self.failed = Counter()     # transport failure reason -> count
        self.wrong_by_cache = Counter()
        self.samples = []
        self._reduced = {}      # doc_sha256 of a body -> sha256 of it without ignore_fields
        self.started = time.monotonic()

    # -- judging ------------------------------------------------------------------------

    def _reduced_digest(self, doc):
        if isinstance(doc, dict) and self.ignore_fields:
            doc = {k: v for k, v in doc.items() if k not in self.ignore_fields}
        return sha256_hex(canonical(doc))

    def _judge(self, method, target, body, headers, answer):
        """(verdict, reason): verdict 'right' | 'wrong' | 'merged' | 'unchecked'."""
        path, query = split_target(target)
        if method in ("GET", "HEAD") and not is_predict_route(method, path):
            try:
                doc = json.loads(answer)
            except (ValueError, UnicodeDecodeError):
                return "unchecked", None
            if isinstance(doc, dict) and set(doc) == {"path", "query"}:
                if doc["path"] != path or doc["query"] != query:
                    return "wrong", "echo names %s?%s, request was %s?%s" % (
                        doc["path"], doc["query"], path, query)
                return "right", None
            return "unchecked", None
        if not is_predict_route(method, path):
            return "unchecked", None

        expected = expected_predictions(body)
        try:
            doc = json.loads(answer)
        except (ValueError, UnicodeDecodeError) as e:
            return "wrong", "answer is not JSON (%s): %r" % (e, _short(answer))
        if not isinstance(doc, dict) or not isinstance(doc.get("predictions"), list):
            return "wrong", "answer has no predictions list: %r" % _short(answer)
        if expected is None:
            return "wrong", "200 with predictions for a body the model refuses (400)"
        got = doc["predictions"]
        if got != expected:
            if len(got) != len(expected):
                return "wrong", "%d predictions for %d expected" % (len(got), len(expected))
            bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
            return "wrong", "predictions differ at %d of %d positions (first: #%d got %r, " \
                "expected %r)" % (len(bad), len(expected), bad[0], got[bad[0]], expected[bad[0]])
        model_name = model_of(path)
        if doc.get("model") != model_name:
            return "wrong", "answer names model %r, request was for %r" % (doc.get("model"),
                                                                         model_name)
        rec = doc.get("received")
        if not isinstance(rec, dict):
            return "wrong", "answer has no 'received' digest (not from the model server)"
        if rec.get("method") != method:
            return "wrong", "model received method %r, request was %r" % (rec.get("method"), method)
        if self.check_path and rec.get("path") != path:
            return "wrong", "model received path %r, request was %r" % (rec.get("path"), path)
        if rec.get("query") != query:
            return "wrong", "model received query %r, request was %r" % (rec.get("query"), query)
        if self.check_auth and rec.get("auth_sha256") != auth_digest(headers):
            return "wrong", "answer computed under other credentials (auth_sha256 %s, " \
                "request's %s)" % (rec.get("auth_sha256"), auth_digest(headers))

        if rec.get("body_sha256") == sha256_hex(body):
            return "right", None
        sent_doc = doc_digest(body)
        if sent_doc is not None and rec.get("doc_sha256") == sent_doc:
            return "right", None
        if self.ignore_fields and sent_doc is not None:
            with self._lock:
                theirs = self._reduced.get(rec.get("doc_sha256"))
                mine = self._reduced.get(sent_doc)
            if theirs is not None and theirs == mine:
                return "right", None
        if self.per_instance and is_batch_route(path):
            try:
                sent = model_server.parse_body(body)
            except (ValueError, UnicodeDecodeError):
                sent = None
            if isinstance(sent, dict) and isinstance(sent.get("instances"), list):
                return "merged", None
        return "wrong", "model received another body (body_sha256 %s, doc_sha256 %s; sent " \
            "body_sha256 %s, doc_sha256 %s)" % (
                str(rec.get("body_sha256"))[:12], str(rec.get("doc_sha256"))[:12],
                sha256_hex(body)[:12], str(sent_doc)[:12])

    def note_sent(self, body):
        """Remembers a body about to be sent (only needed with ignore_fields: an answer
        received for it may reach another request before its own answer is checked).
        run_load calls it; check() calls it too."""
        body = _as_bytes(body)
        if not self.ignore_fields:
            return
        try:
            doc = model_server.parse_body(body)
        except (ValueError, UnicodeDecodeError):
            return
        if doc is None:
            return
        full = sha256_hex(canonical(doc))
        reduced = self._reduced_digest(doc)
        with self._lock:
            if len(self._reduced) < REMEMBER_MAX:
                self._reduced[full] = reduced

    def check(self, method, path, body, headers, status, answer, x_cache=None):
        """Judges one answer: None when right (or not judged), else the reason it is wrong.

        method, path (with any query), body (bytes or str), headers (dict: the request's),
        status (int), answer (bytes or str: the response body), x_cache (the response's
        X-Cache, or None)."""
        body = _as_bytes(body)
        answer = _as_bytes(answer)
        method = method.upper()
        self.note_sent(body)
        verdict, reason = ("unchecked", None)
        if status == 200:
            verdict, reason = self._judge(method, path, body, headers, answer)
        cache = x_cache or "-"
        with self._lock:
            self.total += 1
            self.by_cache[cache] += 1
            if status != 200:
                self.non_200[status] += 1
                return None
            if verdict == "unchecked":
                self.unchecked += 1
                return None
            self.checked += 1
            if verdict == "merged":
                self.merged += 1
            if verdict != "wrong":
                return None
            self.wrong += 1
            self.wrong_by_cache[cache] += 1
            if len(self.samples) < SAMPLES:
                self.samples.append("X-Cache %s %s %s body %s (%d bytes): %s" % (
                    cache, method, path, sha256_hex(body)[:12], len(body), reason))
        return reason

    def fail(self, reason):
        """Records a request that got no HTTP answer (connection reset, timeout)."""
        with self._lock:
            self.total += 1
            self.failed[str(reason)[:120]] += 1

    # -- reporting ----------------------------------------------------------------------

    def report(self):
        with self._lock:
            parts = ["oracle%s: wrong answers: %d" % (" [%s]" % self.name if self.name else "",
                                                       self.wrong),
                     "checked %d" % self.checked,
                     "total %d" % self.total]
            if self.merged:
                parts.append("merged batches %d" % self.merged)
            parts.append("X-Cache %s" % dict(sorted(self.by_cache.items())))
            if self.wrong_by_cache:
                parts.append("wrong by X-Cache %s" % dict(sorted(self.wrong_by_cache.items())))
            if self.non_200:
                parts.append("non-200 %s" % dict(sorted(self.non_200.items())))
            if self.failed:
                parts.append("failed %d %s" % (sum(self.failed.values()),
                                               dict(self.failed.most_common(3))))
            if self.unchecked:
                parts.append("unchecked %d" % self.unchecked)
            parts.append("%.1fs" % (time.monotonic() - self.started))
        return ", ".join(parts)

    def assert_clean(self):
        line = self.report()
        print(line, flush=True)
        report_file = os.environ.get("PREDCACHE_ORACLE_REPORT")
        if report_file:
            with open(report_file, "a") as f:
                f.write(line + "\n")
        detail = line + "".join("\n  " + s for s in self.samples)
        assert self.checked > 0, "nothing was checked: " + detail
        assert self.wrong == 0, detail


# --------------------------------------------------------------------------- load runner


Result = namedtuple("Result", "index method path status x_cache x_cache_key reason error "
                              "started finished")


class _Conn:
    """One keep-alive HTTP/1.1 connection, reopened after an error or a close."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def request(self, method, path, body, headers):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
        except Exception:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, resp.getheader("X-Cache"), resp.getheader("X-Cache-Key"), data

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(url_base, requests, concurrency, oracle, max_requests=None, duration_s=None,
             timeout_s=15.0, on_result=None):
    """Sends requests ((method, path, body, headers) tuples, any iterable, consumed once in
    order) from `concurrency` threads, each with its own keep-alive connection, checking
    every answer with oracle. Stops when the iterable is exhausted, after max_requests
    requests or after duration_s seconds (whichever first). Each request is tried once:
    a transport error is recorded with oracle.fail().

    Returns the Results, in the order of the iterable (index = position in it):
    Result(index, method, path, status, x_cache, x_cache_key, reason, error, started,
    finished), reason = check()'s verdict (None when right), error = a transport error.
    on_result(result), if given, is called from the sending thread."""
    parts = urlsplit(url_base)
    host, port = parts.hostname, parts.port or 80
    lock = threading.Lock()
    source = iter(requests)
    deadline = None if duration_s is None else time.monotonic() + duration_s
    results = []
    counter = [0]

    def take():
        with lock:
            if max_requests is not None and counter[0] >= max_requests:
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            try:
                item = next(source)
            except StopIteration:
                return None
            i = counter[0]
            counter[0] += 1
            return i, item

    def worker():
        conn = _Conn(host, port, timeout_s)
        mine = []
        try:
            while True:
                got = take()
                if got is None:
                    break
                i, (method, path, body, headers) = got
                body = _as_bytes(body) if body is not None else None
                oracle.note_sent(body)
                t0 = time.monotonic()
                try:
                    status, xc, xk, data = conn.request(method, path, body, headers)
                except Exception as e:  # noqa: BLE001 (recorded, judged by the caller)
                    oracle.fail("%s: %s" % (type(e).__name__, e))
                    res = Result(i, method, path, None, None, None, None, repr(e), t0,
                                 time.monotonic())
                else:
                    reason = oracle.check(method, path, body, headers, status, data, xc)
                    res = Result(i, method, path, status, xc, xk, reason, None, t0,
                                 time.monotonic())
                mine.append(res)
                if on_result is not None:
                    on_result(res)
        finally:
            conn.close()
            with lock:
                results.extend(mine)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, concurrency))]
    for t in threads:
        t.start()
    join_deadline = time.monotonic() + (duration_s or 0) + timeout_s * 2 + 60
    for t in threads:
        t.join(max(0.0, join_deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    assert alive == 0, "run_load: %d client threads still running past the deadline" % alive
    results.sort(key=lambda r: r.index)
    return results


def predict_request(path, doc_or_body, headers=None):
    """(method, path, body, headers) for run_load: a JSON POST."""
    body = doc_or_body if isinstance(doc_or_body, (bytes, str)) else json.dumps(doc_or_body)
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return ("POST", path, _as_bytes(body), hdrs)
