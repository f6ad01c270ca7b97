"""The demo's real model: scripts/model-server (tesseract OCR behind TF Serving's REST
API), scripts/make-samples, and both end to end through predcache with
scripts/predcache-batch.

Real processes only: the OCR server is started on a free port (--port 0 --port-file),
polled until ready with a deadline and always stopped (SIGTERM must end it with exit 0).
Needs the Debian packages tesseract-ocr, tesseract-ocr-eng, python3-pil and
fonts-dejavu-core (scripts/bootstrap installs them).
"""

import base64
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import threading

import pytest
import requests

from conftest import (GiveUp, HTTP_TIMEOUT, PYTHON, ROOT, StubBackend, read_text, stop_process,
                      wait_for)

MODEL_SERVER = os.path.join(ROOT, "scripts", "model-server")
MAKE_SAMPLES = os.path.join(ROOT, "scripts", "make-samples")
BATCH = os.path.join(ROOT, "scripts", "predcache-batch")
ROUTE = "/v1/models/ocr:predict"
# One sample at the top level and one in more/: the batch client must recurse.
PICKED = ["sample-03.png", "more/sample-20.png"]


class OcrServer:
    def __init__(self, workdir, args=(), env=None):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port_file = os.path.join(self.dir, "ocr.port")
        self.log_path = os.path.join(self.dir, "ocr.log")
        self.args = list(args)
        self.env = env
        self.proc = None
        self.port = None

    def start(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, MODEL_SERVER, "--port", "0", "--port-file", self.port_file] + self.args,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)

        def ready():
            if self.proc.poll() is not None:
                raise GiveUp("model-server exited with %s:\n%s"
                             % (self.proc.returncode, read_text(self.log_path)))
            if self.port is None:
                text = read_text(self.port_file).strip()
                if not text:
                    return False
                self.port = int(text)
            return requests.get(self.url("/v1/models/ocr"), timeout=1).status_code == 200

        try:
            wait_for(ready, timeout=20, what="OCR model server GET /v1/models/ocr")
        except AssertionError as e:
            self.stop()
            raise AssertionError("%s\nmodel-server log:\n%s" % (e, read_text(self.log_path)))
        return self

    def stop(self):
        return stop_process(self.proc) if self.proc is not None else None

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def stats(self):
        r = requests.get(self.url("/v1/models/ocr/stats"), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        return r.json()

    def post(self, body, path=ROUTE):
        if not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        return requests.post(self.url(path), data=body, timeout=60,
                             headers={"Content-Type": "application/json"})

    def log(self):
        return read_text(self.log_path)


@pytest.fixture
def ocr(tmp_path):
    server = OcrServer(tmp_path / "ocr", ["--workers", "2"])
    try:
        server.start()
        yield server
    finally:
        rc = server.stop()
    assert rc == 0, "model-server exited with %s after SIGTERM (expected 0):\n%s" % (
        rc, server.log()[-3000:])


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """The 24 demo samples, generated once: (directory, {relative path: phrase})."""
    out = str(tmp_path_factory.mktemp("samples"))
    r = subprocess.run([PYTHON, MAKE_SAMPLES, out], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, "labels.json")) as f:
        return out, json.load(f)


def b64_of(samples_dir, rel):
    with open(os.path.join(samples_dir, rel), "rb") as f:
        return base64.b64encode(f.read()).decode("ascii")


def sha_of(samples_dir, rel):
    """The input_sha256 the OCR model server names for that image."""
    with open(os.path.join(samples_dir, rel), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run_batch(*args):
    return subprocess.run([PYTHON, BATCH] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def tree_digest(root):
    digest = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digest[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return digest


# --------------------------------------------------------------------------- end to end


def test_ocr_through_predcache_cold_then_warm(ocr, start_predcache, samples, tmp_path):
    samples_dir, labels = samples
    in_dir = tmp_path / "in"
    for rel in PICKED:
        os.makedirs(os.path.dirname(str(in_dir / rel)), exist_ok=True)
        shutil.copyfile(os.path.join(samples_dir, rel), str(in_dir / rel))
    proxy = start_predcache(backend_url=ocr.url())
    url = proxy.url(ROUTE)

    # Cold: both images go to the OCR model; the recognised text is the rendered phrase.
    cold = run_batch("--url", url, "--in-dir", in_dir, "--out-dir", tmp_path / "cold",
                     "--concurrency", 2, "--json", "--quiet")
    assert cold.returncode == 0, cold.stdout + cold.stderr
    s = json.loads(cold.stdout)["passes"][0]
    assert (s["files"], s["ok"], s["errors"], s["misses"], s["hits"]) == (2, 2, 0, 2, 0), s
    # every answer checked against the image sent (its input_sha256), none wrong
    assert (s["wrong"], s["checked"]) == (0, 2), s
    assert "| wrong answers: 0 (2 checked)" in cold.stderr, cold.stderr
    for rel in PICKED:
        with open(str(tmp_path / "cold" / (rel + ".json"))) as f:
            doc = json.load(f)
        assert doc["predictions"][0]["text"] == labels[rel], (rel, doc)
        assert doc["predictions"][0]["input_sha256"] == sha_of(str(in_dir), rel), (rel, doc)
        assert doc["model_version"] == "1"
    stats = ocr.stats()
    assert (stats["requests"], stats["inferences"]) == (2, 2), stats
    backend = proxy.metric("predcache_backend_requests_total")
    assert backend == 2
    # Stores are asynchronous: the warm pass starts once both answers are in Redis.
    wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 2,
             what="predcache to store both answers")

    # Warm: all hits, the OCR server is not called, the answers are the same bytes.
    warm = run_batch("--url", url, "--in-dir", in_dir, "--out-dir", tmp_path / "warm",
                     "--concurrency", 2, "--json", "--quiet")
    assert warm.returncode == 0, warm.stdout + warm.stderr
    s = json.loads(warm.stdout)["passes"][0]
    assert (s["files"], s["ok"], s["errors"], s["hits"], s["misses"]) == (2, 2, 0, 2, 0), s
    assert (s["wrong"], s["checked"]) == (0, 2), s
    assert ocr.stats()["requests"] == 2 and ocr.stats()["inferences"] == 2
    assert proxy.metric("predcache_backend_requests_total") == backend
    assert tree_digest(str(tmp_path / "warm")) == tree_digest(str(tmp_path / "cold"))
    # The OCR server logged exactly the two predict calls (one line per request).
    assert ocr.log().count("POST %s 200" % ROUTE) == 2, ocr.log()


def swapping_backend():
    """A model server that names inputs (like scripts/model-server) but answers each
    request with the prediction of the image sent before it: what a cache that mixed up
    its entries would answer. The first request gets its own answer."""
    state = {"previous": None}
    lock = threading.Lock()

    def answer(body):
        image = base64.b64decode(json.loads(body)["instances"][0]["b64"])
        digest = hashlib.sha256(image).hexdigest()
        with lock:
            answered = state["previous"] or digest
            state["previous"] = digest
        return 200, {"predictions": [{"text": "x", "input_sha256": answered}],
                     "model_version": "1"}

    return StubBackend(answer)


def test_batch_client_counts_wrong_answers(samples, tmp_path):
    """Answers naming another image than the one sent are wrong answers: counted, listed
    as failures, not written, and the exit status is 1."""
    samples_dir, _ = samples
    in_dir = tmp_path / "in"
    names = ["sample-00.png", "sample-01.png", "sample-02.png"]
    for rel in names:
        os.makedirs(str(in_dir), exist_ok=True)
        shutil.copyfile(os.path.join(samples_dir, rel), str(in_dir / rel))
    backend = swapping_backend()
    try:
        cp = run_batch("--url", backend.url(ROUTE), "--in-dir", in_dir, "--out-dir",
                       tmp_path / "out", "--concurrency", 1, "--json")
    finally:
        backend.close()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    s = json.loads(cp.stdout)["total"]
    assert (s["requests"], s["ok"], s["errors"], s["wrong"], s["checked"]) == (3, 1, 2, 2, 3), s
    assert [f["file"] for f in s["failures"]] == names[1:], s
    assert all(f["status"] == 200 and f["error"].startswith("wrong answer: the prediction is "
                                                            "for input ")
               for f in s["failures"]), s
    assert "| wrong answers: 2 (3 checked)" in cp.stderr, cp.stderr
    assert sorted(os.listdir(str(tmp_path / "out"))) == [names[0] + ".json"]


# --------------------------------------------------------------------------- model server


def test_predict_instances_in_order(ocr, samples):
    samples_dir, labels = samples
    rels = ["sample-00.png", "more/sample-14.png", "sample-07.png"]
    body = {"instances": [{"b64": b64_of(samples_dir, rels[0])},
                          {"b64": b64_of(samples_dir, rels[1])},
                          b64_of(samples_dir, rels[2])]}  # a plain base64 string is accepted
    r = ocr.post(body)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Content-Length"]) == len(r.content)
    assert r.json() == {"predictions": [{"text": labels[rel],
                                         "input_sha256": sha_of(samples_dir, rel)}
                                        for rel in rels],
                        "model_version": "1"}
    assert ocr.stats()["inferences"] == 3


@pytest.mark.parametrize("shape", ["image_data", "file_path", "versioned", "predict_alias"])
def test_predict_other_body_shapes(ocr, samples, shape):
    samples_dir, labels = samples
    rel = "more/sample-18.png"
    data = b64_of(samples_dir, rel)
    path = ROUTE
    if shape == "image_data":
        body = {"image_data": data, "request_id": "r-1"}
    elif shape == "file_path":
        body = {"file_path": rel, "img_base64": data}
    elif shape == "versioned":
        body, path = {"instances": [{"b64": data}]}, "/v1/models/ocr/versions/1:predict"
    else:
        body, path = {"image_data": data}, "/predict"
    r = ocr.post(body, path=path)
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [{"text": labels[rel],
                                        "input_sha256": sha_of(samples_dir, rel)}]


NOT_AN_IMAGE = base64.b64encode(b"just some text, not pixels").decode("ascii")
BROKEN_PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode("ascii")


@pytest.mark.parametrize("body,needle", [
    ("{not json", "invalid JSON"),
    ("", "empty body"),
    ("[1, 2]", "JSON object"),
    ({"something": "else"}, "no input"),
    ({"instances": []}, "empty"),
    ({"instances": [{"x": 1}]}, "instances[0]"),
    ({"instances": [{"b64": "%%% not base64 %%%"}]}, "base64"),
    ({"instances": [{"b64": NOT_AN_IMAGE}]}, "not an image"),
    ({"image_data": NOT_AN_IMAGE}, "not an image"),
    ({"image_data": BROKEN_PNG}, "could not be decoded"),
    ({"file_path": "/etc/passwd"}, "does not read files"),
])
def test_bad_requests_are_400(ocr, body, needle):
    r = ocr.post(body)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]
    assert ocr.stats()["inferences"] == 0


def test_unknown_routes_and_methods(ocr):
    r = requests.get(ocr.url("/nope"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.get(ocr.url("/v1/models/other"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404 and "other" in r.json()["error"]
    r = requests.post(ocr.url("/v1/models/other:predict"), data="{}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 404
    r = requests.get(ocr.url("/v1/models/ocr/versions/7"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 404
    r = requests.get(ocr.url(ROUTE), timeout=HTTP_TIMEOUT)
    assert r.status_code == 405 and "POST" in r.json()["error"]
    r = requests.post(ocr.url("/v1/models/ocr:classify"), data="{}", timeout=HTTP_TIMEOUT)
    assert r.status_code == 400


def test_status_metadata_health_stats(ocr):
    r = requests.get(ocr.url("/v1/models/ocr"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [{
        "version": "1", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]}
    meta = requests.get(ocr.url("/v1/models/ocr/metadata"), timeout=HTTP_TIMEOUT).json()
    assert meta["model_spec"]["name"] == "ocr" and meta["model_spec"]["version"] == "1"
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert "b64" in sig["inputs"] and "text" in sig["outputs"]
    assert requests.get(ocr.url("/health"), timeout=HTTP_TIMEOUT).json() == {"health": "ok"}
    stats = ocr.stats()
    assert (stats["requests"], stats["inferences"], stats["errors"]) == (0, 0, 0)
    assert stats["workers"] == 2


def test_keep_alive_and_one_log_line_per_request(ocr):
    conn = http.client.HTTPConnection("127.0.0.1", ocr.port, timeout=HTTP_TIMEOUT)
    try:
        for path, status in [("/health", 200), ("/nope", 404), ("/v1/models/ocr", 200)]:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == status
            assert int(resp.getheader("Content-Length")) == len(body)
            assert not resp.will_close
        conn.request("POST", ROUTE, body=b"{bad", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400 and not resp.will_close
        resp.read()
        # still the same connection
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    lines = [l for l in ocr.log().splitlines() if l.startswith("model-server: GET ") or
             l.startswith("model-server: POST ")]
    assert any(l.startswith("model-server: GET /nope 404 ") and l.endswith(" ms")
               for l in lines), lines


def test_tesseract_failure_is_500(tmp_path, samples):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tesseract").write_text(
        "#!/bin/sh\n"
        "if [ \"$1\" = --list-langs ]; then echo 'List of available languages'; echo eng; "
        "exit 0; fi\n"
        "cat >/dev/null; echo 'simulated model crash' >&2; exit 3\n")
    os.chmod(str(fake / "tesseract"), 0o755)
    env = dict(os.environ, PATH="%s:%s" % (fake, os.environ.get("PATH", "/usr/bin:/bin")))
    server = OcrServer(tmp_path / "ocr", env=env).start()
    try:
        samples_dir, _ = samples
        r = server.post({"instances": [{"b64": b64_of(samples_dir, "sample-01.png")}]})
        assert r.status_code == 500, r.text
        assert "simulated model crash" in r.json()["error"]
        assert server.stats()["errors"] == 1
    finally:
        assert server.stop() == 0


def test_missing_tesseract_exits_1(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([PYTHON, MODEL_SERVER, "--port", "0"], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, PATH=str(empty)))
    assert r.returncode == 1
    assert "tesseract" in r.stderr and "tesseract-ocr" in r.stderr


# --------------------------------------------------------------------------- samples


def test_make_samples_is_deterministic(tmp_path, samples):
    samples_dir, labels = samples
    again = str(tmp_path / "again")
    r = subprocess.run([PYTHON, MAKE_SAMPLES, again], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert tree_digest(again) == tree_digest(samples_dir)
    assert len(labels) == 24
    assert sum(rel.startswith("more/") for rel in labels) == 12
    for rel, phrase in labels.items():
        assert os.path.exists(os.path.join(samples_dir, rel))
        assert phrase == phrase.lower() and 2 <= len(phrase.split()) <= 4
    r = subprocess.run([PYTHON, MAKE_SAMPLES, str(tmp_path / "two"), "--count", "2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(str(tmp_path / "two" / "labels.json")) as f:
        assert sorted(json.load(f)) == ["sample-00.png", "sample-01.png"]
