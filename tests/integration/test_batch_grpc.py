"""The demo's OCR model server's gRPC port (scripts/model-server --grpc-port) and
scripts/predcache-batch --grpc, with real processes: the OCR server's TF Serving and KServe
v2 methods called directly (answers, errors, the REST side beside them), the batch client
through a real predcache (grpc_listen, grpc_url) and redis-server cold then warm, and the
client's integrity check against a gRPC server in this process that answers another
image's digest. Needs tesseract (scripts/bootstrap) and Debian's python3-grpcio and
python3-grpc-tools.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest

import test_ocr
from conftest import PYTHON, free_port, read_text, wait_for
from grpc_harness import MODEL_SERVICE, TFS, V2, call
from test_batch import bad_case, json_run, make_tree, run_batch
from test_ocr import MODEL_SERVER, OcrServer, sha_of, tree_digest

pytest_plugins = ["grpc_harness"]

# the demo samples, as test_ocr.py makes them
samples = test_ocr.samples

# Two samples at the top level and two in more/: the client recurses.
PICKED = ["sample-00.png", "sample-07.png", "more/sample-14.png", "more/sample-20.png"]

needs_tesseract = pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="tesseract not installed (scripts/bootstrap installs tesseract-ocr and "
           "tesseract-ocr-eng)")


class GrpcOcrServer(OcrServer):
    """scripts/model-server with its gRPC port too (--grpc-port 0 --grpc-port-file)."""

    def __init__(self, workdir, args=(), env=None):
        super().__init__(workdir, args, env)
        self.grpc_port_file = os.path.join(self.dir, "ocr.grpc-port")
        self.args = ["--grpc-port", "0", "--grpc-port-file", self.grpc_port_file] + self.args
        self.grpc_port = None
        self.channels = []

    def start(self):
        super().start()
        # written before --port-file: there once the REST port answers
        self.grpc_port = int(read_text(self.grpc_port_file).strip())
        return self

    @property
    def target(self):
        return "127.0.0.1:%d" % self.grpc_port

    def channel(self):
        ch = grpc.insecure_channel(self.target)
        self.channels.append(ch)
        return ch

    def stop(self):
        for ch in self.channels:
            ch.close()
        self.channels = []
        return super().stop()


@pytest.fixture
def gocr(tmp_path):
    server = GrpcOcrServer(tmp_path / "ocr", ["--workers", "2"])
    try:
        server.start()
        yield server
    finally:
        rc = server.stop()
    assert rc == 0, "model-server exited with %s after SIGTERM (expected 0):\n%s" % (
        rc, server.log()[-3000:])


def image(samples_dir, rel):
    with open(os.path.join(samples_dir, rel), "rb") as f:
        return f.read()


def predict_request(st, images, model="ocr", version=None, name="image", dims=None,
                    output_filter=()):
    req = st.predict_pb2.PredictRequest()
    req.model_spec.name = model
    if version is not None:
        req.model_spec.version.value = version
    if images is not None:
        t = req.inputs[name]
        t.dtype = st.types_pb2.DT_STRING
        for d in ([len(images)] if dims is None else dims):
            t.tensor_shape.dim.add(size=d)
        t.string_val.extend(images)
    req.output_filter.extend(output_filter)
    return req


def infer_request(st, images, rid="r1", model="ocr", version="", raw=False, shape=None,
                  datatype="BYTES", outputs=()):
    req = st.v2.ModelInferRequest(model_name=model, model_version=version, id=rid)
    inp = req.inputs.add(name="image", datatype=datatype,
                         shape=[len(images)] if shape is None else shape)
    if raw:
        req.raw_input_contents.append(b"".join(len(i).to_bytes(4, "little") + i
                                               for i in images))
    else:
        inp.contents.bytes_contents.extend(images)
    for name in outputs:
        req.outputs.add(name=name)
    return req


def strings(tensor):
    return [v.decode("utf-8") for v in tensor.string_val]


def raw_elements(raw):
    out, i = [], 0
    while i < len(raw):
        n = int.from_bytes(raw[i:i + 4], "little")
        out.append(raw[i + 4:i + 4 + n].decode("utf-8"))
        i += 4 + n
    return out


def status_of(ch, method, req):
    with pytest.raises(grpc.RpcError) as e:
        call(ch, method, req, timeout=30)
    return e.value.code().name, e.value.details()


# --------------------------------------------------------------------------- model server


@needs_tesseract
def test_model_server_grpc_predict_and_infer(gocr, samples, grpc_stubs):
    """Predict and ModelInfer: one prediction per image, in order, each naming its image;
    the same model and counters as REST, which answers beside it."""
    st = grpc_stubs
    samples_dir, labels = samples
    rels = ["sample-03.png", "sample-11.png"]
    imgs = [image(samples_dir, r) for r in rels]
    ch = gocr.channel()

    resp, rpc = call(ch, TFS + "Predict", predict_request(st, imgs), timeout=60)
    assert sorted(resp.outputs) == ["input_sha256", "text"]
    assert strings(resp.outputs["text"]) == [labels[r] for r in rels]
    assert strings(resp.outputs["input_sha256"]) == [hashlib.sha256(i).hexdigest()
                                                     for i in imgs]
    for out in resp.outputs.values():
        assert out.dtype == st.types_pb2.DT_STRING
        assert [d.size for d in out.tensor_shape.dim] == [2]
    spec = resp.model_spec
    assert (spec.name, spec.version.value, spec.signature_name) == ("ocr", 1, "serving_default")
    # version 1 asked for, output_filter: that output alone
    resp, _ = call(ch, TFS + "Predict", predict_request(st, imgs[:1], version=1,
                                                        output_filter=["input_sha256"]))
    assert list(resp.outputs) == ["input_sha256"]
    assert strings(resp.outputs["input_sha256"]) == [sha_of(samples_dir, rels[0])]

    # KServe v2: contents, then raw_input_contents (answered raw); id echoed
    resp, _ = call(ch, V2 + "ModelInfer", infer_request(st, imgs, rid="req-7"), timeout=60)
    assert (resp.model_name, resp.model_version, resp.id) == ("ocr", "1", "req-7")
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [
        ("text", "BYTES", [2]), ("input_sha256", "BYTES", [2])]
    assert [v.decode() for v in resp.outputs[0].contents.bytes_contents] == [labels[r]
                                                                            for r in rels]
    assert [v.decode() for v in resp.outputs[1].contents.bytes_contents] == [
        sha_of(samples_dir, r) for r in rels]
    resp, _ = call(ch, V2 + "ModelInfer", infer_request(st, imgs[::-1], rid="", version="1",
                                                        raw=True), timeout=60)
    assert resp.id == "" and not resp.outputs[0].HasField("contents")
    assert [raw_elements(r) for r in resp.raw_output_contents] == [
        [labels[r] for r in rels[::-1]], [sha_of(samples_dir, r) for r in rels[::-1]]]

    # REST beside it: the same model, the same counters
    r = gocr.post({"instances": [{"b64": test_ocr.b64_of(samples_dir, rels[0])}]})
    assert r.status_code == 200 and r.json()["predictions"][0]["text"] == labels[rels[0]]
    stats = gocr.stats()
    assert (stats["requests"], stats["inferences"], stats["errors"]) == (5, 8, 0), stats
    assert gocr.log().count("model-server: GRPC %sPredict OK " % TFS) == 2, gocr.log()
    assert gocr.log().count("model-server: GRPC %sModelInfer OK " % V2) == 2, gocr.log()


@needs_tesseract
def test_model_server_grpc_status_metadata_and_health(gocr, grpc_stubs):
    st = grpc_stubs
    ch = gocr.channel()
    resp, _ = call(ch, MODEL_SERVICE + "GetModelStatus",
                   st.get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "ocr"}))
    [mvs] = resp.model_version_status
    assert mvs.version == 1 and mvs.state == st.get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert mvs.status.error_code == st.error_codes_pb2.OK
    req = st.get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "ocr"},
                                                            metadata_field=["signature_def"])
    resp, _ = call(ch, TFS + "GetModelMetadata", req)
    assert resp.model_spec.name == "ocr" and resp.model_spec.version.value == 1
    sigmap = st.get_model_metadata_pb2.SignatureDefMap()
    assert resp.metadata["signature_def"].Unpack(sigmap)
    sig = sigmap.signature_def["serving_default"]
    assert list(sig.inputs) == ["image"] and sorted(sig.outputs) == ["input_sha256", "text"]
    assert sig.method_name == "tensorflow/serving/predict"

    assert call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())[0].live
    assert call(ch, V2 + "ServerReady", st.v2.ServerReadyRequest())[0].ready
    assert call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="ocr"))[0].ready
    assert call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="ocr", version="1"))[0].ready
    assert not call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="other"))[0].ready
    assert not call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="ocr",
                                                                   version="2"))[0].ready
    meta, _ = call(ch, V2 + "ModelMetadata", st.v2.ModelMetadataRequest(name="ocr"))
    assert (meta.name, list(meta.versions), meta.platform) == ("ocr", ["1"], "tesseract")
    assert [o.name for o in meta.outputs] == ["text", "input_sha256"]
    assert status_of(ch, V2 + "ModelMetadata", st.v2.ModelMetadataRequest(name="x"))[0] == \
        "NOT_FOUND"
    assert gocr.stats()["requests"] == 0, "status and metadata are not predict requests"


@needs_tesseract
def test_model_server_grpc_errors(gocr, samples, grpc_stubs):
    """The REST errors as gRPC statuses: no input, a bad shape, not an image:
    INVALID_ARGUMENT; another model or version: NOT_FOUND; Classify: UNIMPLEMENTED."""
    st = grpc_stubs
    samples_dir, _ = samples
    img = image(samples_dir, "sample-01.png")
    ch = gocr.channel()
    cases = [
        (TFS + "Predict", predict_request(st, None), "INVALID_ARGUMENT", "no input"),
        (TFS + "Predict", predict_request(st, [b"hello"]), "INVALID_ARGUMENT",
         'inputs["image"].string_val[0]: not an image'),
        (TFS + "Predict", predict_request(st, [img, img], dims=[3]), "INVALID_ARGUMENT",
         "shape [3] holds 3 elements, 2 sent"),
        (TFS + "Predict", predict_request(st, []), "INVALID_ARGUMENT", "no string_val"),
        (TFS + "Predict", predict_request(st, [img], output_filter=["boxes"]),
         "INVALID_ARGUMENT", "'boxes' is not an output"),
        (TFS + "Predict", predict_request(st, [img], model="other"), "NOT_FOUND",
         "Servable not found for request: Latest(other)"),
        (TFS + "Predict", predict_request(st, [img], version=2), "NOT_FOUND",
         "Servable not found for request: Specific(ocr, 2)"),
        (V2 + "ModelInfer", st.v2.ModelInferRequest(model_name="ocr"), "INVALID_ARGUMENT",
         "inputs must be a non-empty list"),
        (V2 + "ModelInfer", infer_request(st, [img], datatype="FP32"), "INVALID_ARGUMENT",
         "expected one BYTES input tensor"),
        (V2 + "ModelInfer", infer_request(st, [b"GIF8 not really"]), "INVALID_ARGUMENT",
         "inputs[0].data[0]: not an image"),
        (V2 + "ModelInfer", infer_request(st, [img], shape=[2]), "INVALID_ARGUMENT",
         "shape [2] holds 2 elements, 1 sent"),
        (V2 + "ModelInfer", infer_request(st, [img], version="3"), "NOT_FOUND",
         "Request for unknown model: 'ocr' version 3 is not found"),
        (MODEL_SERVICE + "GetModelStatus",
         st.get_model_status_pb2.GetModelStatusRequest(model_spec={"name": "nope"}),
         "NOT_FOUND", "nope"),
    ]
    for method, req, code, needle in cases:
        got, details = status_of(ch, method, req)
        assert (got, needle in details) == (code, True), (method, req, got, details)
    rpc = ch.unary_unary(TFS + "Classify")
    with pytest.raises(grpc.RpcError) as e:
        rpc(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED and "use Predict" in e.value.details()
    rpc = ch.unary_unary("/some.Service/Method")
    with pytest.raises(grpc.RpcError) as e:
        rpc(b"", timeout=10)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # counted as REST counts them: the requests the model read, wrong ones as errors
    stats = gocr.stats()
    assert (stats["requests"], stats["errors"], stats["inferences"]) == (9, 9, 0), stats
    assert "model-server: GRPC %sPredict INVALID_ARGUMENT " % TFS in gocr.log()


@needs_tesseract
def test_model_server_grpc_tesseract_failure_is_internal(tmp_path, samples, grpc_stubs):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "tesseract").write_text(
        "#!/bin/sh\n"
        "if [ \"$1\" = --list-langs ]; then echo 'List of available languages'; echo eng; "
        "exit 0; fi\n"
        "cat >/dev/null; echo 'simulated model crash' >&2; exit 3\n")
    os.chmod(str(fake / "tesseract"), 0o755)
    env = dict(os.environ, PATH="%s:%s" % (fake, os.environ.get("PATH", "/usr/bin:/bin")))
    server = GrpcOcrServer(tmp_path / "ocr", env=env).start()
    try:
        samples_dir, _ = samples
        img = image(samples_dir, "sample-01.png")
        ch = server.channel()
        for method, req in ((TFS + "Predict", predict_request(grpc_stubs, [img])),
                            (V2 + "ModelInfer", infer_request(grpc_stubs, [img]))):
            code, details = status_of(ch, method, req)
            assert code == "INTERNAL" and "simulated model crash" in details, (code, details)
        assert server.stats()["errors"] == 2
    finally:
        assert server.stop() == 0


def test_model_server_grpc_options(tmp_path):
    """--grpc-port-file needs --grpc-port; a gRPC port that cannot be bound: exit 1."""
    r = subprocess.run([PYTHON, MODEL_SERVER, "--port", "0", "--grpc-port-file",
                        str(tmp_path / "p")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--grpc-port-file needs --grpc-port" in r.stderr, r.stderr
    if shutil.which("tesseract") is None:
        return
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        r = subprocess.run([PYTHON, MODEL_SERVER, "--port", "0", "--grpc-port",
                            str(taken.getsockname()[1])], capture_output=True, text=True,
                           timeout=60)
    assert r.returncode == 1 and "cannot serve gRPC on 127.0.0.1:" in r.stderr, r.stderr


# --------------------------------------------------------------------------- batch client


def copy_samples(samples_dir, in_dir, names=PICKED):
    for rel in names:
        os.makedirs(os.path.dirname(str(in_dir / rel)), exist_ok=True)
        shutil.copyfile(os.path.join(samples_dir, rel), str(in_dir / rel))


def start_grpc_predcache(start_predcache, gocr):
    gport = free_port()
    p = start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport},
                              "backend": {"grpc_url": "http://%s" % gocr.target}},
                        backend_url=gocr.url())
    return p, "127.0.0.1:%d" % gport


@needs_tesseract
@pytest.mark.parametrize("fmt", ["tfserving", "kserve"])
def test_grpc_batch_cold_then_warm_through_predcache(gocr, start_predcache, samples, tmp_path,
                                                     fmt):
    """Cold: every image a MISS answered by the OCR model; warm: every one a HIT, the
    model server not called, the same answers; every answer checked, none wrong."""
    samples_dir, labels = samples
    in_dir = tmp_path / "in"
    copy_samples(samples_dir, in_dir)
    p, target = start_grpc_predcache(start_predcache, gocr)
    n = len(PICKED)
    base = ["--grpc", target, "--format", fmt, "--in-dir", in_dir, "--concurrency", 2]
    if fmt == "kserve":
        base += ["--model-version", "1"]

    cold, doc = json_run(*base + ["--out-dir", tmp_path / "cold"], timeout=120)
    assert cold.returncode == 0, cold.stdout + cold.stderr
    s = doc["passes"][0]
    assert (s["files"], s["ok"], s["errors"], s["misses"], s["hits"]) == (n, n, 0, n, 0), s
    assert (s["wrong"], s["checked"]) == (0, n), s
    assert "| wrong answers: 0 (%d checked)" % n in cold.stderr, cold.stderr
    for rel in PICKED:
        with open(str(tmp_path / "cold" / (rel + ".json"))) as f:
            saved = json.load(f)
        assert saved["outputs"] == {"text": [labels[rel]],
                                    "input_sha256": [sha_of(str(in_dir), rel)]}, (rel, saved)
        if fmt == "kserve":
            assert (saved["model_name"], saved["model_version"], saved["id"]) == \
                ("ocr", "1", rel), saved
        else:
            assert saved["model_spec"] == {"name": "ocr", "version": "1",
                                           "signature_name": "serving_default"}, saved
    stats = gocr.stats()
    assert (stats["requests"], stats["inferences"]) == (n, n), stats
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n,
             what="predcache to store the %d gRPC answers" % n)

    # Warm, with the per-request lines: every line OK and HIT.
    warm = run_batch(*base + ["--out-dir", tmp_path / "warm", "--concurrency", 1], timeout=120)
    assert warm.returncode == 0, warm.stdout + warm.stderr
    lines = [l for l in warm.stdout.splitlines() if l.endswith(" ms")]
    assert [l.split()[:3] for l in lines] == [[rel, "OK", "HIT"] for rel in sorted(PICKED)], \
        warm.stdout
    assert "pass 1: %d files, %d ok, 0 errors | hits %d, misses 0, bypass 0 |" % (n, n, n) \
        in warm.stdout, warm.stdout
    assert "| wrong answers: 0 (%d checked)" % n in warm.stdout, warm.stdout
    assert gocr.stats()["requests"] == n and gocr.stats()["inferences"] == n, \
        "the warm pass did not reach the model server"
    assert tree_digest(str(tmp_path / "warm")) == tree_digest(str(tmp_path / "cold"))
    assert p.metric("predcache_grpc_cache_total", cache="HIT") == n
    assert p.metric("predcache_grpc_cache_total", cache="MISS") == n


@needs_tesseract
def test_grpc_batch_direct_to_the_model_server(gocr, samples, tmp_path):
    """Without predcache: OK answers, X-CACHE "-" (other), every answer checked."""
    samples_dir, _ = samples
    copy_samples(samples_dir, tmp_path / "in", PICKED[:2])
    cp, doc = json_run("--grpc", gocr.target, "--in-dir", tmp_path / "in", "--out-dir",
                       tmp_path / "out", "--repeat", 2, timeout=120)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    s = doc["total"]
    assert (s["requests"], s["ok"], s["other"], s["wrong"], s["checked"]) == (4, 4, 4, 0, 4), s
    assert gocr.stats()["requests"] == 4


class WrongServer:
    """A gRPC model server in this process that names inputs like scripts/model-server but
    answers each Predict / ModelInfer with the digest of the image sent before it (what a
    cache that mixed up its entries would answer; the first request gets its own), or
    with shape "two": two predictions for the one image, "none": no input_sha256.
    delay_s: Predict answers that late."""

    def __init__(self, st, shape="swap", delay_s=0.0):
        self.st, self.shape, self.delay_s = st, shape, delay_s
        self.previous = None
        self.lock = threading.Lock()
        methods = {TFS + "Predict": grpc.unary_unary_rpc_method_handler(
                       self.predict, st.predict_pb2.PredictRequest.FromString,
                       lambda m: m.SerializeToString()),
                   V2 + "ModelInfer": grpc.unary_unary_rpc_method_handler(
                       self.infer, st.v2.ModelInferRequest.FromString,
                       lambda m: m.SerializeToString())}

        class Handlers(grpc.GenericRpcHandler):
            def service(self, details):
                return methods.get(details.method)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                                  handlers=[Handlers()])
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def digests(self, img):
        digest = hashlib.sha256(img).hexdigest()
        with self.lock:
            answered, self.previous = self.previous or digest, digest
        if self.shape == "two":
            return [digest, digest]
        return [] if self.shape == "none" else [answered]

    def predict(self, req, context):
        time.sleep(self.delay_s)
        digests = self.digests(req.inputs["image"].string_val[0])
        context.send_initial_metadata([("x-cache", "MISS")])
        resp = self.st.predict_pb2.PredictResponse()
        resp.model_spec.name = req.model_spec.name
        t = resp.outputs["text"]
        t.dtype = self.st.types_pb2.DT_STRING
        t.string_val.append(b"x")
        if digests:
            t = resp.outputs["input_sha256"]
            t.dtype = self.st.types_pb2.DT_STRING
            t.string_val.extend(d.encode() for d in digests)
        return resp

    def infer(self, req, context):
        digests = self.digests(req.inputs[0].contents.bytes_contents[0])
        resp = self.st.v2.ModelInferResponse(model_name=req.model_name, id=req.id)
        out = resp.outputs.add(name="text", datatype="BYTES", shape=[1])
        out.contents.bytes_contents.append(b"x")
        if digests:
            out = resp.outputs.add(name="input_sha256", datatype="BYTES", shape=[len(digests)])
            out.contents.bytes_contents.extend(d.encode() for d in digests)
        return resp

    def stop(self):
        self.server.stop(0).wait(5)


@pytest.mark.parametrize("fmt", ["tfserving", "kserve"])
def test_grpc_batch_detects_wrong_answers(tmp_path, grpc_stubs, fmt):
    """Answers naming another image than the one sent are wrong answers: counted, listed,
    not written, exit 1. The check is not a no-op."""
    names = ["a.png", "b.png", "c.png"]
    make_tree(tmp_path / "in", names=names, ignored=[])
    server = WrongServer(grpc_stubs)
    try:
        cp, doc = json_run("--grpc", "127.0.0.1:%d" % server.port, "--format", fmt,
                           "--in-dir", tmp_path / "in", "--out-dir", tmp_path / "out",
                           "--concurrency", 1)
    finally:
        server.stop()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    s = doc["total"]
    assert (s["requests"], s["ok"], s["errors"], s["wrong"], s["checked"]) == (3, 1, 2, 2, 3), s
    assert [f["file"] for f in s["failures"]] == names[1:], s
    assert all(f["status"] == "OK" and f["error"].startswith(
        "wrong answer: the prediction is for input ") for f in s["failures"]), s
    assert "| wrong answers: 2 (3 checked)" in cp.stderr, cp.stderr
    assert os.listdir(str(tmp_path / "out")) == ["a.png.json"], "wrong ones not written"


@pytest.mark.parametrize("shape", ["two", "none"])
def test_grpc_batch_two_predictions_wrong_and_no_digest_unchecked(tmp_path, grpc_stubs, shape):
    make_tree(tmp_path / "in", names=["a.png", "b.png"], ignored=[])
    server = WrongServer(grpc_stubs, shape)
    try:
        cp, doc = json_run("--grpc", "127.0.0.1:%d" % server.port, "--in-dir", tmp_path / "in",
                           "--out-dir", tmp_path / "out")
    finally:
        server.stop()
    s = doc["total"]
    if shape == "two":
        assert cp.returncode == 1 and (s["wrong"], s["checked"], s["ok"]) == (2, 2, 0), s
        assert s["failures"][0]["error"] == "wrong answer: 2 predictions for one image", s
    else:
        assert cp.returncode == 0 and (s["wrong"], s["checked"], s["ok"]) == (0, 0, 2), s
        assert s["misses"] == 2, "x-cache read from the initial metadata"


def test_grpc_batch_unavailable_and_deadline(tmp_path, grpc_stubs):
    """No server: UNAVAILABLE per file, exit 1; a server slower than --timeout-ms: the
    deadline, exit 1."""
    make_tree(tmp_path / "in", names=["a.png", "b.png"], ignored=[])
    cp, doc = json_run("--grpc", "127.0.0.1:%d" % free_port(), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out")
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert [(f["status"], f["error"].split(":")[0]) for f in doc["total"]["failures"]] == \
        [("UNAVAILABLE", "UNAVAILABLE")] * 2, doc
    # the per-request lines (on stderr with --json): the status name, no x-cache
    assert re.search(r"^a\.png  UNAVAILABLE  - +[\d.]+ ms  UNAVAILABLE: ", cp.stderr, re.M), \
        cp.stderr

    server = WrongServer(grpc_stubs, delay_s=1.0)
    try:
        cp, doc = json_run("--grpc", "127.0.0.1:%d" % server.port, "--in-dir",
                           tmp_path / "in", "--out-dir", tmp_path / "out2", "--timeout-ms", 200)
    finally:
        server.stop()
    assert cp.returncode == 1, cp.stdout + cp.stderr
    assert [(f["status"], f["error"]) for f in doc["total"]["failures"]] == [
        ("DEADLINE_EXCEEDED", "timed out after 200 ms (DEADLINE_EXCEEDED)")] * 2, doc


@pytest.mark.parametrize("case, msg", [
    ("--grpc nohost", "bad gRPC address 'nohost'"),
    ("--grpc 127.0.0.1:0", "the port must be 1..65535"),
    ("--grpc http://127.0.0.1:8500", "bad gRPC address"),
    ("--grpc no-such-host.invalid:8500", "cannot resolve host no-such-host.invalid"),
    ("--format raw", "raw is not a gRPC format"),
    ("--model-version x", "TF Serving versions are numbers"),
    ("--url", "--url and --grpc cannot be used together"),
])
def test_grpc_bad_arguments_exit_2(tmp_path, case, msg):
    argv, _ = bad_case(tmp_path, "missing url")
    flag, value = case.split(" ", 1) if " " in case else (case, None)
    grpc_target = value if flag == "--grpc" else "127.0.0.1:%d" % free_port()
    argv += ["--grpc", grpc_target]
    if flag == "--url":
        argv += ["--url", "http://127.0.0.1:1/v1/models/m:predict"]
    elif flag != "--grpc":
        argv += [flag, value]
    cp = run_batch(*argv, timeout=30)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert msg in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr and cp.stdout == ""
    assert not (tmp_path / "out").exists(), "nothing written before the input is checked"


def test_model_option_without_grpc_exit_2(tmp_path):
    argv, _ = bad_case(tmp_path, "missing dir")
    cp = run_batch(*argv + ["--model", "other"], timeout=30)
    assert cp.returncode == 2 and "--model and --model-version go with --grpc" in cp.stderr, \
        cp.stderr
