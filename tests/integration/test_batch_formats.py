"""scripts/predcache-batch's TorchServe and KServe v2 request shapes (--format raw and
--format kserve), the integrity check on their answers, and the routes of the demo's OCR
model server (scripts/model-server) that answer them: POST /predictions/NAME, GET /ping,
POST /v2/models/NAME/infer and GET /v2/models/NAME.

End to end through predcache with the real OCR model (the ocr and samples fixtures of
test_ocr.py); the request shapes against the test model server (test_batch.py's way);
wrong answers against a stub in this process. Needs tesseract (scripts/bootstrap).
"""

import base64
import hashlib
import json
import os
import shutil

import pytest
import requests

import test_ocr
from conftest import HTTP_TIMEOUT, StubBackend
from test_batch import bad_case, json_run, make_tree, run_batch
from test_ocr import sha_of, tree_digest

# the OCR server and the demo samples, as test_ocr.py starts and makes them
ocr = test_ocr.ocr
samples = test_ocr.samples

TORCHSERVE = "/predictions/ocr"
KSERVE = "/v2/models/ocr/infer"
PATHS = {"raw": TORCHSERVE, "kserve": KSERVE}
# predcache's default routes may not name TorchServe's path: a route of its own. KServe's
# route is a default one; version resolution on, so that predcache asks GET /v2/models/ocr.
CONFS = {"raw": {"route torchserve": {"match": "POST /predictions/ocr*"}},
         "kserve": {"cache": {"version_refresh_s": "30"}}}
# Two samples at the top level and two in more/: the client recurses.
PICKED = ["sample-00.png", "sample-07.png", "more/sample-14.png", "more/sample-20.png"]

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract not installed (scripts/bootstrap installs tesseract-ocr and "
           "tesseract-ocr-eng)")


def b64(data):
    return base64.b64encode(data).decode("ascii")


def kserve_body(*images, **extra):
    doc = {"inputs": [{"name": "image", "shape": [len(images)], "datatype": "BYTES",
                       "data": [b64(img) for img in images]}]}
    doc.update(extra)
    return doc


def read(path):
    with open(str(path), "rb") as f:
        return f.read()


def copy_samples(samples_dir, in_dir, names=PICKED):
    for rel in names:
        os.makedirs(os.path.dirname(str(in_dir / rel)), exist_ok=True)
        shutil.copyfile(os.path.join(samples_dir, rel), str(in_dir / rel))


def prediction_in(fmt, saved):
    """The one prediction an answer file holds, read the way its format answers."""
    doc = json.loads(saved)
    if fmt == "raw":
        return doc
    assert [o["datatype"] for o in doc["outputs"]] == ["BYTES"], doc
    assert doc["outputs"][0]["shape"] == [1] and len(doc["outputs"][0]["data"]) == 1, doc
    return json.loads(doc["outputs"][0]["data"][0])


# --------------------------------------------------------------------------- end to end


@needs_tesseract
@pytest.mark.parametrize("fmt", ["raw", "kserve"])
def test_cold_then_warm_through_predcache(ocr, start_predcache, samples, tmp_path, fmt):
    samples_dir, labels = samples
    in_dir = tmp_path / "in"
    copy_samples(samples_dir, in_dir)
    n = len(PICKED)

    # Straight to the model server first: its own answers, each checked, none wrong.
    cp, doc = json_run("--url", ocr.url(PATHS[fmt]), "--in-dir", in_dir, "--out-dir",
                       tmp_path / "direct", "--format", fmt, "--quiet", timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    s = doc["total"]
    assert (s["ok"], s["other"], s["wrong"], s["checked"]) == (n, n, 0, n), s
    assert ocr.stats()["inferences"] == n

    proxy = start_predcache(conf=CONFS[fmt], backend_url=ocr.url())
    cp, doc = json_run("--url", proxy.url(PATHS[fmt]), "--in-dir", in_dir, "--out-dir",
                       tmp_path / "out", "--format", fmt, "--repeat", 2, "--concurrency", 2,
                       timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cold, warm = doc["passes"]
    assert (cold["ok"], cold["misses"], cold["errors"]) == (n, n, 0), cold
    assert (warm["ok"], warm["hits"], warm["errors"]) == (n, n, 0), warm
    for s in (cold, warm):
        assert (s["wrong"], s["checked"]) == (0, n), s
    assert "pass 2: %d files, %d ok, 0 errors | hits %d, misses 0" % (n, n, n) in cp.stderr
    assert "| wrong answers: 0 (%d checked)" % n in cp.stderr, cp.stderr
    # the warm pass never reached the model
    stats = ocr.stats()
    assert (stats["requests"], stats["inferences"]) == (2 * n, 2 * n), stats
    assert proxy.metric("predcache_backend_requests_total") == n

    # every answer written; the HITs (written last) are the model's own bytes
    assert tree_digest(str(tmp_path / "out")) == tree_digest(str(tmp_path / "direct"))
    assert len(tree_digest(str(tmp_path / "out"))) == n
    for rel in PICKED:
        pred = prediction_in(fmt, read(tmp_path / "out" / (rel + ".json")))
        assert pred == {"text": labels[rel], "input_sha256": sha_of(str(in_dir), rel)}, rel

    # and again: all HITs, byte for byte what pass 1 wrote
    cp, doc = json_run("--url", proxy.url(PATHS[fmt]), "--in-dir", in_dir, "--out-dir",
                       tmp_path / "again", "--format", fmt, "--quiet", timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (doc["total"]["hits"], doc["total"]["wrong"]) == (n, 0), doc["total"]
    assert tree_digest(str(tmp_path / "again")) == tree_digest(str(tmp_path / "direct"))
    assert ocr.stats()["requests"] == 2 * n
    if fmt == "kserve":  # the version came from the KServe metadata endpoint
        assert "model-server: GET /v2/models/ocr 200 " in ocr.log(), ocr.log()


# --------------------------------------------------------------------------- request shapes


# name -> (bytes, Content-Type the client must send): the magic bytes win over the extension
RAW_FILES = {
    "a.png": (b"\x89PNG\r\n\x1a\n" + os.urandom(40), "image/png"),
    "b.jpg": (b"GIF89a" + os.urandom(40), "image/gif"),
    "c.JPEG": (os.urandom(48), "image/jpeg"),
    "d.bmp": (os.urandom(50), "image/bmp"),
    "e.webp": (os.urandom(52), "image/webp"),
    "f.gif": (os.urandom(54), "image/gif"),
    "g.png": (b"RIFF\x10\x00\x00\x00WEBPVP8 " + os.urandom(40), "image/webp"),
    "nested/h.png": (b"\xff\xd8\xff\xe0" + os.urandom(40), "image/jpeg"),
    "nested/i.jpeg": (b"BM" + os.urandom(40), "image/bmp"),
}


def data_requests(model):
    return requests.get(model.url("/_requests"), timeout=HTTP_TIMEOUT).json()["requests"]


def test_raw_sends_the_bytes_with_the_image_type(proxy, model, tmp_path):
    for rel, (data, _) in RAW_FILES.items():
        os.makedirs(os.path.dirname(str(tmp_path / "in" / rel)), exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(data)
    cp = run_batch("--url", proxy.url("/predict"), "--in-dir", tmp_path / "in",
                   "--out-dir", tmp_path / "out", "--format", "raw")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    sent = {r["raw_sha256"]: r for r in data_requests(model)}
    assert len(sent) == len(RAW_FILES)
    for rel, (data, ctype) in RAW_FILES.items():
        r = sent[hashlib.sha256(data).hexdigest()]  # the body is the file, byte for byte
        assert (r["method"], r["path"]) == ("POST", "/predict"), r
        assert r["headers"]["content-type"] == ctype, rel
        assert r["headers"]["accept"] == "application/json"
        assert (tmp_path / "out" / (rel + ".json")).exists(), rel


def test_kserve_sends_one_bytes_tensor(proxy, model, tmp_path):
    files = make_tree(tmp_path / "in", names=["dir/x.png", "y.jpg"], ignored=[])
    cp = run_batch("--url", proxy.url("/v2/models/m/infer"), "--in-dir", tmp_path / "in",
                   "--out-dir", tmp_path / "out", "--format", "kserve", "--concurrency", 1)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    sent = data_requests(model)
    assert [(r["method"], r["path"]) for r in sent] == [("POST", "/v2/models/m/infer")] * 2
    for r, rel in zip(sent, sorted(files)):
        assert r["headers"]["content-type"] == "application/json"
        assert json.loads(r["body"]) == kserve_body(files[rel]), rel
        assert (tmp_path / "out" / (rel + ".json")).exists(), rel


def test_help_names_the_new_shapes():
    cp = run_batch("--help", timeout=20)
    assert cp.returncode == 0, cp.stderr
    for needle in ("{tfserving,image_data,file_path,raw,kserve}", "TorchServe",
                   '{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",',
                   "/predictions/NAME", "/v2/models/NAME/infer", "image/webp"):
        assert needle in cp.stdout, (needle, cp.stdout)


@pytest.mark.parametrize("fmt", ["raw", "kserve"])
@pytest.mark.parametrize("case", ["missing dir", "url ftp://x/predictions/m", "--concurrency 0",
                                  "--format torchserve", "--format RAW"])
def test_bad_arguments_exit_2(tmp_path, fmt, case):
    argv, msg = bad_case(tmp_path, case)
    if not case.startswith("--format"):
        argv += ["--format", fmt]
    cp = run_batch(*argv, timeout=20)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert msg in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr and cp.stdout == ""
    assert not (tmp_path / "out").exists(), "nothing written before the input is checked"


# --------------------------------------------------------------------------- wrong answers


def image_of(fmt, body):
    if fmt == "kserve":
        return base64.b64decode(json.loads(body)["inputs"][0]["data"][0])
    return body


def answer_for(shape, preds):
    """A model answer holding preds, in the shape the format's model server gives."""
    if shape == "raw object":
        [pred] = preds
        return pred
    if shape == "raw list":
        return preds
    return {"model_name": "ocr", "model_version": "1",
            "outputs": [{"name": "text", "datatype": "BYTES", "shape": [len(preds)],
                         "data": [json.dumps(p) for p in preds]}]}


def swapping_backend(shape):
    """Names inputs like scripts/model-server, but answers each request with the digest of
    the image sent before it (a cache that mixed up its entries); the first request gets
    its own."""
    state = {"previous": None}
    fmt = "kserve" if shape == "kserve" else "raw"

    def answer(body):
        digest = hashlib.sha256(image_of(fmt, body)).hexdigest()
        answered, state["previous"] = state["previous"] or digest, digest
        return 200, answer_for(shape, [{"text": "x", "input_sha256": answered}])

    return StubBackend(answer)


@pytest.mark.parametrize("shape", ["raw object", "raw list", "kserve"])
def test_wrong_answers_detected(tmp_path, shape):
    fmt = "kserve" if shape == "kserve" else "raw"
    names = ["a.png", "b.png", "c.png"]
    make_tree(tmp_path / "in", names=names, ignored=[])
    backend = swapping_backend(shape)
    try:
        cp, doc = json_run("--url", backend.url(PATHS[fmt]), "--in-dir", tmp_path / "in",
                           "--out-dir", tmp_path / "out", "--format", fmt, "--concurrency", 1)
    finally:
        backend.close()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    s = doc["total"]
    assert (s["requests"], s["ok"], s["errors"], s["wrong"], s["checked"]) == (3, 1, 2, 2, 3), s
    assert [f["file"] for f in s["failures"]] == names[1:], s
    assert all(f["status"] == 200 and f["error"].startswith(
        "wrong answer: the prediction is for input ") for f in s["failures"]), s
    assert "| wrong answers: 2 (3 checked)" in cp.stderr, cp.stderr
    assert sorted(os.listdir(str(tmp_path / "out"))) == ["a.png.json"], "wrong ones not written"


@pytest.mark.parametrize("shape", ["raw list", "kserve"])
def test_answers_for_two_images_are_wrong_and_no_digest_unchecked(tmp_path, shape):
    fmt = "kserve" if shape == "kserve" else "raw"
    files = make_tree(tmp_path / "in", names=["a.png", "b.png"], ignored=[])

    def answer(body):
        own = hashlib.sha256(image_of(fmt, body)).hexdigest()
        if own == hashlib.sha256(files["a.png"]).hexdigest():  # its own, and another's
            return 200, answer_for(shape, [{"input_sha256": own}, {"input_sha256": "0" * 64}])
        return 200, answer_for(shape, [{"text": "no digest"}])

    backend = StubBackend(answer)
    try:
        cp, doc = json_run("--url", backend.url(PATHS[fmt]), "--in-dir", tmp_path / "in",
                           "--out-dir", tmp_path / "out", "--format", fmt)
    finally:
        backend.close()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    s = doc["total"]
    assert (s["ok"], s["errors"], s["wrong"], s["checked"]) == (1, 1, 1, 1), s
    assert s["failures"] == [{"file": "a.png", "status": 200,
                              "error": "wrong answer: 2 predictions for one image"}], s
    assert os.listdir(str(tmp_path / "out")) == ["b.png.json"]


# --------------------------------------------------------------------------- model server


@needs_tesseract
def test_model_server_torchserve_routes(ocr, samples):
    samples_dir, labels = samples
    rel = "more/sample-18.png"
    image = read(os.path.join(samples_dir, rel))
    want = {"text": labels[rel], "input_sha256": sha_of(samples_dir, rel)}
    # the same prediction as :predict gives for that image
    assert ocr.post({"instances": [{"b64": b64(image)}]}).json()["predictions"] == [want]
    for method, path in (("POST", TORCHSERVE), ("PUT", TORCHSERVE + "/1")):
        r = requests.request(method, ocr.url(path), data=image, timeout=60,
                             headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"] == "application/json"
        assert r.json() == want
    r = requests.get(ocr.url("/ping"), timeout=HTTP_TIMEOUT)
    assert (r.status_code, r.json()) == (200, {"status": "Healthy"})

    for method, path, body, status, needle in [
            ("POST", TORCHSERVE, b"just some text, not pixels", 400, "not an image"),
            ("POST", TORCHSERVE, b"", 400, "empty image"),
            ("POST", TORCHSERVE, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, 400, "could not be decoded"),
            ("POST", "/predictions/other", image, 404, "other"),
            ("POST", TORCHSERVE + "/7", image, 404, "7"),
            ("GET", TORCHSERVE, None, 405, "POST"),
            ("POST", "/ping", b"", 405, "GET")]:
        r = requests.request(method, ocr.url(path), data=body, timeout=60)
        assert r.status_code == status, (path, r.text)
        assert needle in r.json()["error"], (path, r.text)
    stats = ocr.stats()
    assert (stats["requests"], stats["inferences"], stats["errors"]) == (6, 3, 3), stats


@needs_tesseract
def test_model_server_kserve_routes(ocr, samples):
    samples_dir, labels = samples
    rels = ["sample-00.png", "more/sample-14.png", "sample-07.png"]
    images = [read(os.path.join(samples_dir, rel)) for rel in rels]
    r = requests.post(ocr.url(KSERVE), json=kserve_body(*images, id="req-9"), timeout=60)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["model_name"], doc["model_version"], doc["id"]) == ("ocr", "1", "req-9"), doc
    [out] = doc["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("text", "BYTES", [3]), out
    assert [json.loads(text) for text in out["data"]] == [
        {"text": labels[rel], "input_sha256": sha_of(samples_dir, rel)} for rel in rels]

    r = requests.post(ocr.url("/v2/models/ocr/versions/1/infer"), json=kserve_body(images[0]),
                      timeout=60)
    assert r.status_code == 200 and "id" not in r.json(), r.text
    for path in ("/v2/models/ocr", "/v2/models/ocr/versions/1"):
        r = requests.get(ocr.url(path), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text
        meta = r.json()
        assert (meta["name"], meta["versions"]) == ("ocr", ["1"]) and meta["platform"], meta

    not_image = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                             "data": [b64(b"not pixels")]}]}
    mismatch = kserve_body(images[0])
    mismatch["inputs"][0]["shape"] = [2]
    for method, path, body, status, needle in [
            ("POST", KSERVE, not_image, 400, "inputs[0].data[0]: not an image"),
            ("POST", KSERVE, mismatch, 400, "holds 2 elements, data has 1"),
            ("POST", KSERVE, {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32",
                                          "data": [1.0]}]}, 400, "BYTES"),
            ("POST", KSERVE, {"instances": []}, 400, "inputs"),
            ("POST", KSERVE, "{not json", 400, "invalid JSON"),
            ("POST", "/v2/models/other/infer", kserve_body(images[0]), 404, "other"),
            ("POST", "/v2/models/ocr/versions/7/infer", kserve_body(images[0]), 404, "7"),
            ("GET", KSERVE, None, 405, "POST"),
            ("GET", "/v2/models/other", None, 404, "other")]:
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        r = requests.request(method, ocr.url(path), data=data, timeout=60,
                             headers={"Content-Type": "application/json"})
        assert r.status_code == status, (path, body, r.text)
        assert needle in r.json()["error"], (path, r.text)
    stats = ocr.stats()
    assert (stats["requests"], stats["inferences"], stats["errors"]) == (7, 4, 5), stats
