"""The integrity oracle: is each answer the model's answer to that exact request?

One checker for the whole test tree (integrity, soak, faults, workers, coalescing, bench,
demo runs, the key, credential and directive tables). A cache that answers fast but with
another request's prediction is worse than no cache; the only way to see it is to check
every answer against the request it answers, in the runs that cross the boundaries where
caches break (TTL expiry, grace, the in-process tier's TTL and eviction, key memo
eviction, purges, invalidations, several workers, several processes, Redis restarts,
per-instance batches).

The test model server (tests/fixtures/model_server.py) makes that checkable: it reads
each request the way the real server of its route does (read_request(): TF Serving reads
only signature_name and instances/inputs, KServe v2 everything but "id", /predict the
whole document but "request_id", or raw bytes with their media type), and every 200
predict answer carries the predictions of that reading (one short hash per instance, with
the signature and other members folded in) and a digest of exactly what the server
received and read ("received": method, path, query, body_sha256, doc_sha256,
view_sha256, auth_sha256, and vary_on/vary_sha256 when the model varies by headers). A
cache replays stored bytes, so a replayed answer still names the request the model
answered.

    from oracle import Oracle, run_load, expected_predictions

    oracle = Oracle("l1 boundary")
    err = oracle.check("POST", "/v1/models/m:predict", body, headers, r.status,
                       r.content, r.headers.get("X-Cache"), r.headers)
    ...
    oracle.assert_clean()          # prints the report; fails when wrong > 0 or nothing checked

    r = post_checked(p.url(), oracle, "/v1/models/m:predict", {"instances": [1]})
                                   # one request, its answer asserted right and 200

What counts as WRONG (check() returns the reason, counts it in .wrong, keeps the first
SAMPLES reasons in .samples):

- a 200 answer to a predict request (POST or PUT to /v1/models/...:predict|classify|
  regress, /v1/models/.../labels/...:..., /predict, /v2/models/.../infer) that
    * is not JSON (KServe: nor a JSON header followed by binary outputs), or is not an
      object, or has no "predictions" list;
    * has predictions other than the model's for this request (expected_predictions()
      with its path, headers, the vary_on values the answer names, and the salt),
      compared per instance (so it still holds for a batch that predcache merged from
      per-instance cache entries);
    * names another model than the request's path ("model");
    * has no "received" member (the answer did not come from the model server);
    * received another method, path (without query) or query than the request had:
      the key holds the route and the query, so another route's answer is wrong even
      when its predictions are equal (two models given the same input);
    * with check_auth (the default): was computed under other credentials
      (auth_sha256 of Authorization, Cookie and X-Api-Key differs from the request's): a
      shared cache must not hand one client's answer to another credential scope;
    * was computed for other values of the headers the model varies by (vary_on);
    * KServe v2, with check_id (the default): carries another "id" than the request's,
      or any "id" when the request sent none (predcache rewrites it on a hit); or
      "outputs" (and binary outputs) that are not the ones of the reading it names, or a
      binary answer to a request that asked for JSON, or the reverse; or an
      Inference-Header-Content-Length (response_headers given) that is not the length
      of its JSON header;
    * was read from another request: the model's reading of the request (view_sha256)
      differs from the one the answer names, unless
        - ignore_fields (a list: noise fields the key leaves out by design, e.g.
          "request_id" on a route whose model would read it): the body differs only in
          those top-level fields: the oracle remembers the documents it was asked about
          and accepts an answer received for one that equals this one without those
          fields; ignore_fields as a dict {path glob: [names]} is the same map given to
          the model server's /_control "ignore_fields": the model ignores them too, and
          the oracle reads requests as the model does; or
        - the request is a TF Serving batch ({"instances": [...]} on :predict or
          /predict) and every prediction matched: with per_instance on, predcache merges
          such answers from per-instance entries (the text around the array comes from
          another request's answer, and the model only saw the missing instances), so
          the per-instance predictions are all that can be asked of it. Counted in
          .merged. Construct with per_instance=False to refuse this (per-body keys).
      (An answer without view_sha256, from another model server, is judged on the body:
      the same bytes (body_sha256) or the same document (doc_sha256).)
- a 200 answer to a GET passed through to the model server's echo route
  ({"path", "query"}) that names another path or query.

NOT wrong, counted apart:
- non-200 answers (.non_200 by status): overload, timeouts, Redis or model faults are
  reported, not judged; a run that wants none asserts on them itself;
- transport errors recorded with fail() (.failed, by reason);
- 200 answers to requests the oracle cannot judge (.unchecked): other routes, or a
  predict request whose body the model would have refused (that one IS wrong: the
  model answers 400, so a 200 with predictions cannot be its answer).

Numbers: the model reads numbers by value (1, 1.0 and 1e0 are one number, as the key
reads them), so equal-by-value inputs get equal predictions. With version_refresh_s on,
two labels resolving to one version share entries by design: pass check_path=False
there. With [cache] credentials = shared, pass check_auth=False. Against a model server
given a salt (/_control), pass the same salt.

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

import requests

_FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
if _FIXTURES not in sys.path:
    sys.path.insert(0, _FIXTURES)

import model_server  # noqa: E402  (tests/fixtures/model_server.py: the model's own rules)
from model_server import (  # noqa: E402,F401  (re-exported for tests)
    MISSING,
    Refused,
    auth_digest,
    canonical,
    decode_body,
    doc_digest,
    expected_predictions,
    header_value,
    predictions_for,
    predictions_of,
    read_request,
    sha256_hex,
    short_hash,
    vary_digest,
    vary_values,
    view_digest,
)

__all__ = ["Oracle", "Result", "run_load", "predict_request", "post_checked",
           "expected_predictions",
           "predictions_for", "short_hash", "canonical", "auth_digest", "doc_digest",
           "sha256_hex", "split_target", "is_predict_route", "is_batch_route", "model_of",
           "read_request", "predictions_of", "view_digest", "answer_document"]

SAMPLES = 10
HTTP_TIMEOUT = 15.0  # as conftest's: one request's deadline
REMEMBER_MAX = 1_000_000  # documents remembered for ignore_fields (digest -> digest)


def split_target(target):
    """'/p?q' -> ('/p', 'q'), as the model server splits its request line."""
    parts = urlsplit(target)
    return parts.path, parts.query


def is_predict_route(method, path):
    return model_server.predict_route(method, path) is not None


def model_of(path):
    """The model name the test model server answers a predict path with."""
    m = (model_server.TF_ROUTE.match(path) or model_server.V2_ROUTE.match(path)
         or model_server.LABEL_ROUTE.match(path) or model_server.TORCH_ROUTE.match(path))
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


def answer_document(answer, response_headers=None):
    """(document, binary tail or None) of a predict answer (bytes): a JSON document, or a
    KServe binary answer (a JSON header, then binary outputs); raises ValueError when it
    is neither."""
    try:
        return json.loads(answer), None
    except (ValueError, UnicodeDecodeError):
        pass
    length = header_value(response_headers, "Inference-Header-Content-Length")
    for n in ([length] if length is not None else []) + [None]:
        try:
            return model_server.split_binary(answer, n)
        except (ValueError, UnicodeDecodeError, TypeError) as e:
            err = e  # a wrong length is judged later: read the JSON where it ends
    raise ValueError("neither JSON nor a JSON header with binary data: %s" % err)


class Oracle:
    """Checks answers against their requests; see the module docstring for the rules."""

    def __init__(self, name="", ignore_fields=(), check_auth=True, per_instance=True,
                 check_path=True, salt=None, check_id=True):
        self.name = name
        if isinstance(ignore_fields, dict):
            self.ignore_map = {k: tuple(v) for k, v in ignore_fields.items()}
            self.ignore_fields = frozenset()
        else:
            self.ignore_map = None
            self.ignore_fields = frozenset(ignore_fields or ())
        self.check_auth = check_auth
        self.per_instance = per_instance
        self.check_path = check_path
        self.check_id = check_id
        self.salt = salt
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

    def _judge(self, method, target, body, headers, answer, response_headers=None):
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

        try:
            reading = read_request(method, path, body, headers, self.ignore_map)
        except Refused:
            reading = None
        try:
            doc, tail = answer_document(answer, response_headers)
        except ValueError as e:
            return "wrong", "answer is not JSON (%s): %r" % (e, _short(answer))
        if not isinstance(doc, dict) or not isinstance(doc.get("predictions"), list):
            return "wrong", "answer has no predictions list: %r" % _short(answer)
        if reading is None:
            return "wrong", "200 with predictions for a body the model refuses (400)"
        rec = doc.get("received")
        vary_names = []
        if isinstance(rec, dict) and isinstance(rec.get("vary_on"), str) and rec["vary_on"]:
            vary_names = rec["vary_on"].split(",")
        vary = vary_values(headers, vary_names)
        expected = predictions_of(reading, vary, self.salt)
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
        if vary_names and rec.get("vary_sha256") != vary_digest(vary):
            return "wrong", "answer computed for other values of %s than the request's %r" % (
                rec["vary_on"], vary)
        if reading.family == "v2":
            why = self._judge_v2(reading, doc, tail, rec, response_headers, answer)
            if why is not None:
                return "wrong", why
        elif tail is not None:
            return "wrong", "a JSON header with binary data answers a %s request" % reading.family

        if "view_sha256" in rec:
            if rec["view_sha256"] == view_digest(reading):
                return "right", None
        else:  # another model server's answer: judged on the body it received
            if rec.get("body_sha256") == sha256_hex(body):
                return "right", None
            if doc_digest(body) is not None and rec.get("doc_sha256") == doc_digest(body):
                return "right", None
        sent_doc = doc_digest(body)
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
        return "wrong", "model received another body (view_sha256 %s, body_sha256 %s, " \
            "doc_sha256 %s; sent view_sha256 %s, body_sha256 %s, doc_sha256 %s)" % (
                str(rec.get("view_sha256"))[:12], str(rec.get("body_sha256"))[:12],
                str(rec.get("doc_sha256"))[:12], view_digest(reading)[:12],
                sha256_hex(body)[:12], str(sent_doc)[:12])

    def _judge_v2(self, reading, doc, tail, rec, response_headers, answer):
        """The KServe v2 parts of an answer: id, outputs, binary framing. None when right."""
        if self.check_id:
            if reading.id is MISSING:
                if "id" in doc:
                    return "answer carries id %r, the request sent none" % (doc["id"],)
            elif doc.get("id", MISSING) is MISSING:
                return "answer carries no id, the request's was %r" % (reading.id,)
            elif doc["id"] != reading.id:
                return "answer's id %r, the request's %r" % (doc["id"], reading.id)
        if "outputs" not in doc:
            return None  # an answer of another model server
        if not isinstance(rec.get("view_sha256"), str):
            return "outputs without a view_sha256 in received"
        members, data = model_server.outputs_of(reading, rec["view_sha256"])
        if doc["outputs"] != members:
            return "outputs %r are not the ones of the reading the answer names (%r)" % (
                doc["outputs"], members)
        if reading.binary_answer:
            if tail is None:
                return "a JSON answer to a request that asked for binary outputs"
            if tail != data:
                return "binary outputs (%d bytes) are not the answer's own" % len(tail)
            length = header_value(response_headers, "Inference-Header-Content-Length")
            if response_headers is not None and length is None:
                return "binary answer without Inference-Header-Content-Length"
            if length is not None and (not length.strip().isdigit()
                                       or int(length) != len(answer) - len(tail)):
                return "Inference-Header-Content-Length %r, the JSON header is %d bytes" % (
                    length, len(answer) - len(tail))
        elif tail is not None:
            return "binary data answers a request that asked for JSON"
        return None

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

    def check(self, method, path, body, headers, status, answer, x_cache=None,
              response_headers=None):
        """Judges one answer: None when right (or not judged), else the reason it is wrong.

        method, path (with any query), body (bytes or str), headers (dict: the request's),
        status (int), answer (bytes or str: the response body), x_cache (the response's
        X-Cache, or None), response_headers (the response's, optional: KServe binary
        framing is checked against them)."""
        body = _as_bytes(body)
        coding = next((v for k, v in (headers or {}).items()
                       if k.lower() == "content-encoding"), None)
        if coding:  # judged on what the model server reads: the decoded body
            body = decode_body(coding, body)
        answer = _as_bytes(answer)
        method = method.upper()
        self.note_sent(body)
        verdict, reason = ("unchecked", None)
        if status == 200:
            verdict, reason = self._judge(method, path, body, headers, answer,
                                          response_headers)
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
        return resp.status, dict(resp.getheaders()), data

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
                    status, rh, data = conn.request(method, path, body, headers)
                    xc, xk = header_value(rh, "X-Cache"), header_value(rh, "X-Cache-Key")
                except Exception as e:  # noqa: BLE001 (recorded, judged by the caller)
                    oracle.fail("%s: %s" % (type(e).__name__, e))
                    res = Result(i, method, path, None, None, None, None, repr(e), t0,
                                 time.monotonic())
                else:
                    reason = oracle.check(method, path, body, headers, status, data, xc, rh)
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


def post_checked(url_base, oracle, path, body, headers=None, method="POST", status=200,
                 timeout=HTTP_TIMEOUT):
    """Sends one request to url_base + path, built as predict_request() builds it (a JSON
    value is sent as JSON, bytes or str as they are; Content-Type application/json unless
    headers name another), has oracle check the answer and asserts that it is right and
    that its status is `status`. Returns the requests.Response."""
    _, path, data, hdrs = predict_request(path, body, headers)
    r = requests.request(method, url_base + path, data=data, headers=hdrs, timeout=timeout)
    reason = oracle.check(method, path, data, hdrs, r.status_code, r.content,
                          r.headers.get("X-Cache"), r.headers)
    assert reason is None, "wrong answer (X-Cache %s): %s" % (r.headers.get("X-Cache"), reason)
    assert r.status_code == status, "status %d, not %d: %s" % (r.status_code, status,
                                                               r.text[:300])
    return r
