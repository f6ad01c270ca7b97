"""The gRPC test model server itself (tests/fixtures/grpc_model_server.py), called directly
with grpcio clients: every method, the control plane (delay, status, fail_next, versions,
metadata, counters), and that its answers tell readings apart: per-row predictions, the
same answer when only what the model ignores differs, another when what it reads does."""

import hashlib
import json
import struct
import time

import grpc
import pytest
import requests

from conftest import concurrently
from grpc_harness import MODEL_SERVICE, TFS, V2, call, expected_answer

pytest_plugins = ["grpc_harness"]


# --------------------------------------------------------------------------- requests


def predict_request(st, model="m", inputs=None, signature=None, version=None, label=None,
                    output_filter=()):
    """A PredictRequest; inputs: {name: (dtype name, dims, values)} (float values for
    DT_FLOAT, bytes for DT_STRING, ...), in that order."""
    req = st.predict_pb2.PredictRequest()
    req.model_spec.name = model
    if signature is not None:
        req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for name, (dtype, dims, values) in (inputs or {}).items():
        t = req.inputs[name]
        t.dtype = st.types_pb2.DataType.Value(dtype)
        for d in dims:
            t.tensor_shape.dim.add(size=d)
        field = {"DT_FLOAT": "float_val", "DT_DOUBLE": "double_val", "DT_INT32": "int_val",
                 "DT_INT64": "int64_val", "DT_STRING": "string_val"}[dtype]
        getattr(t, field).extend(values)
    req.output_filter.extend(output_filter)
    return req


IMAGES = ("DT_FLOAT", [3, 2], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
WORDS = ("DT_STRING", [3], [b"a", b"b", b"c"])


def example(st, **features):
    ex = st.example_pb2.Example()
    for name, value in features.items():
        f = ex.features.feature[name]
        if isinstance(value, bytes):
            f.bytes_list.value.append(value)
        elif isinstance(value, float):
            f.float_list.value.append(value)
        else:
            f.int64_list.value.append(value)
    return ex


def examples_request(st, cls, examples, context=None, model="m"):
    req = cls()
    req.model_spec.name = model
    if context is None:
        req.input.example_list.examples.extend(examples)
    else:
        req.input.example_list_with_context.examples.extend(examples)
        req.input.example_list_with_context.context.CopyFrom(context)
    return req


def infer_request(st, rid="r1", raw=False, parameters=None, outputs=()):
    """A ModelInferRequest with INPUT0 (INT32 [2, 2]) and INPUT1 (BYTES [2]), their data in
    contents or (raw) in raw_input_contents."""
    req = st.v2.ModelInferRequest(model_name="simple", id=rid)
    for k, v in (parameters or {}).items():
        if isinstance(v, bool):
            req.parameters[k].bool_param = v
        elif isinstance(v, int):
            req.parameters[k].int64_param = v
        else:
            req.parameters[k].string_param = v
    a = req.inputs.add(name="INPUT0", datatype="INT32", shape=[2, 2])
    b = req.inputs.add(name="INPUT1", datatype="BYTES", shape=[2])
    ints, strs = [1, 2, 3, -4], [b"x", b"yz"]
    if raw:
        req.raw_input_contents.append(struct.pack("<4i", *ints))
        req.raw_input_contents.append(b"".join(struct.pack("<I", len(s)) + s for s in strs))
    else:
        a.contents.int_contents.extend(ints)
        b.contents.bytes_contents.extend(strs)
    for name in outputs:
        req.outputs.add(name=name)
    return req


def predictions(resp):
    return [s.decode() for s in resp.outputs["predictions"].string_val]


def received(resp):
    """The "received" JSON of a Predict or ModelInfer answer."""
    if hasattr(resp, "model_spec"):
        return json.loads(resp.outputs["received"].string_val[0])
    for i, out in enumerate(resp.outputs):
        if out.name == "received":
            if resp.raw_output_contents:
                return json.loads(resp.raw_output_contents[i][4:])
            return json.loads(out.contents.bytes_contents[0])
    raise AssertionError("no received output in %s" % resp)


def infer_outputs(resp):
    """{name: value} of a ModelInfer answer's outputs but "received"."""
    out = {}
    for i, o in enumerate(resp.outputs):
        if o.name != "received":
            out[o.name] = (resp.raw_output_contents[i][4:] if resp.raw_output_contents
                           else o.contents.bytes_contents[0])
    return out


def reading(resp):
    """What a Predict answer says the model read and predicted (not the request bytes)."""
    return predictions(resp), received(resp)["view_sha256"]


def with_field(data, number, payload):
    """Serialized request data with a length-delimited field appended (number must be one
    the proto does not declare: an unknown field)."""
    return data + bytes([number << 3 | 2, len(payload)]) + payload


def code_of(excinfo):
    return excinfo.value.code()


# --------------------------------------------------------------------------- methods


def every_method(st):
    """(method, request) for every method of the three services, once each."""
    return [
        (TFS + "Predict", predict_request(st, inputs={"images": IMAGES, "words": WORDS})),
        (TFS + "Classify", examples_request(st, st.classification_pb2.ClassificationRequest,
                                            [example(st, age=29, name=b"x")])),
        (TFS + "Regress", examples_request(st, st.regression_pb2.RegressionRequest,
                                           [example(st, w=0.5), example(st, w=1.5)])),
        (TFS + "GetModelMetadata", st.get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=st.model_pb2.ModelSpec(name="m"), metadata_field=["signature_def"])),
        (MODEL_SERVICE + "GetModelStatus", st.get_model_status_pb2.GetModelStatusRequest(
            model_spec=st.model_pb2.ModelSpec(name="m"))),
        (V2 + "ServerLive", st.v2.ServerLiveRequest()),
        (V2 + "ServerReady", st.v2.ServerReadyRequest()),
        (V2 + "ModelReady", st.v2.ModelReadyRequest(name="simple")),
        (V2 + "ServerMetadata", st.v2.ServerMetadataRequest()),
        (V2 + "ModelMetadata", st.v2.ModelMetadataRequest(name="simple")),
        (V2 + "ModelInfer", infer_request(st)),
    ]


def test_every_method_answers_as_its_reading_says(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    cases = every_method(st)
    for method, req in cases:
        resp, rpc = call(ch, method, req, metadata=[("x-trace", "t-" + method[-6:]),
                                                    ("x-blob-bin", b"\x00\xff")])
        want, err = expected_answer(method, req)
        assert err is None, (method, err)
        assert resp == want, method
        head = dict(rpc.initial_metadata())
        last = grpc_model.last()
        assert last["method"] == method
        assert last["call"] == int(head["x-model-call"])
        assert ["x-trace", "t-" + method[-6:]] in last["metadata"]
        assert ["x-blob-bin", "AP8="] in last["metadata"]  # base64 of the -bin value
        rec = json.loads(head["x-received"])
        assert rec["method"] == method and rec["sha256"] == last["sha256"]
        assert rec["view_sha256"] == last["view_sha256"]
    assert grpc_model.count() == len(cases)
    assert grpc_model.counts() == {m: 1 for m, _ in cases}
    assert grpc_model.count("Predict") == 1
    assert grpc_model.count(TFS + "Predict") == 1

    # What each answers, in the published shapes.
    pred, _ = call(ch, TFS + "Predict", cases[0][1])
    assert pred.model_spec.name == "m" and pred.model_spec.version.value == 1
    assert pred.model_spec.signature_name == "serving_default"
    assert len(predictions(pred)) == 3  # one per row
    rec = received(pred)
    assert rec["method"] == TFS + "Predict" and rec["model"] == "m" and rec["version"] == 1
    assert rec["signature"] == "serving_default"
    assert rec["sha256"] == grpc_model.last()["sha256"]
    cls, _ = call(ch, TFS + "Classify", cases[1][1])
    assert len(cls.result.classifications) == 1
    assert len(cls.result.classifications[0].classes) == 2
    reg, _ = call(ch, TFS + "Regress", cases[2][1])
    assert len(reg.result.regressions) == 2
    meta, _ = call(ch, TFS + "GetModelMetadata", cases[3][1])
    sigs = st.get_model_metadata_pb2.SignatureDefMap()
    assert meta.metadata["signature_def"].Unpack(sigs)
    assert set(sigs.signature_def["serving_default"].outputs) == {"predictions", "received"}
    status, _ = call(ch, MODEL_SERVICE + "GetModelStatus", cases[4][1])
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (1, st.get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    assert call(ch, V2 + "ServerLive", cases[5][1])[0].live
    assert call(ch, V2 + "ServerReady", cases[6][1])[0].ready
    assert call(ch, V2 + "ModelReady", cases[7][1])[0].ready
    assert call(ch, V2 + "ModelMetadata", cases[9][1])[0].versions == ["1"]
    infer, _ = call(ch, V2 + "ModelInfer", cases[10][1])
    assert infer.id == "r1" and infer.model_version == "1"
    assert [o.name for o in infer.outputs] == ["output0", "received"]


def test_generated_stubs_call_it_too(grpc_model, grpc_stubs):
    """The service stubs grpc_tools generated (what a real client uses)."""
    st = grpc_stubs
    ch = grpc_model.channel()
    tfs = st.prediction_service_grpc.PredictionServiceStub(ch)
    resp = tfs.Predict(predict_request(st, inputs={"images": IMAGES}), timeout=10)
    assert len(predictions(resp)) == 3
    ms = st.model_service_grpc.ModelServiceStub(ch)
    assert ms.GetModelStatus(st.get_model_status_pb2.GetModelStatusRequest(
        model_spec=st.model_pb2.ModelSpec(name="m")), timeout=10).model_version_status
    kserve = st.v2_grpc.GRPCInferenceServiceStub(ch)
    assert kserve.ModelInfer(infer_request(st, rid="via-stub"), timeout=10).id == "via-stub"
    assert grpc_model.count() == 3


def test_refusals(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    cases = [
        (TFS + "Predict", b"\x0a\x05\x0a", grpc.StatusCode.INTERNAL),  # cut short
        (TFS + "Predict", st.predict_pb2.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (TFS + "Predict", predict_request(st, inputs={"x": ("DT_FLOAT", [2, 2], [1.0, 2.0])}),
         grpc.StatusCode.INVALID_ARGUMENT),  # 2 values for 4
        (TFS + "Predict", predict_request(st, output_filter=["nope"]),
         grpc.StatusCode.INVALID_ARGUMENT),
        (TFS + "Predict", predict_request(st, version=7), grpc.StatusCode.NOT_FOUND),
        (TFS + "Predict", predict_request(st, label="canary"), grpc.StatusCode.INVALID_ARGUMENT),
        (TFS + "Classify", examples_request(st, st.classification_pb2.ClassificationRequest,
                                            []), grpc.StatusCode.INVALID_ARGUMENT),
        (TFS + "GetModelMetadata", st.get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=st.model_pb2.ModelSpec(name="m")), grpc.StatusCode.INVALID_ARGUMENT),
        (MODEL_SERVICE + "GetModelStatus", st.get_model_status_pb2.GetModelStatusRequest(
            model_spec=st.model_pb2.ModelSpec(name="m", version={"value": 3})),
         grpc.StatusCode.NOT_FOUND),
        (V2 + "ModelInfer", st.v2.ModelInferRequest(model_name="simple", model_version="9"),
         grpc.StatusCode.NOT_FOUND),
    ]
    for method, req, code in cases:
        with pytest.raises(grpc.RpcError) as e:
            call(ch, method, req)
        assert code_of(e) == code, (method, req, e.value.details())
        if not isinstance(req, bytes):
            _, err = expected_answer(method, req)
            assert err is not None and err[0] == code.name
    assert grpc_model.count() == len(cases)
    assert grpc_model.last()["view_sha256"] is None

    # A method the server does not serve: UNIMPLEMENTED, not counted.
    with pytest.raises(grpc.RpcError) as e:
        ch.unary_unary(TFS + "MultiInference")(b"", timeout=10)
    assert code_of(e) == grpc.StatusCode.UNIMPLEMENTED
    assert grpc_model.count() == len(cases)


# --------------------------------------------------------------------------- control


def test_delay_applies_to_the_methods_named(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    req = predict_request(st, inputs={"images": IMAGES})
    grpc_model.control(delay_ms=400, methods=["Predict"])
    t0 = time.monotonic()
    call(ch, TFS + "Predict", req)
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())
    assert time.monotonic() - t0 < 0.3

    with pytest.raises(grpc.RpcError) as e:
        call(ch, TFS + "Predict", req, timeout=0.1)
    assert code_of(e) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert grpc_model.count("Predict") == 2  # counted when it arrived

    # Held calls run side by side (a pool of workers, not one).
    t0 = time.monotonic()
    results = concurrently(16, lambda i: call(ch, TFS + "Predict", req)[0])
    assert all(not isinstance(r, Exception) for r in results), results
    assert time.monotonic() - t0 < 2.0

    grpc_model.control()
    t0 = time.monotonic()
    call(ch, TFS + "Predict", req)
    assert time.monotonic() - t0 < 0.3


def test_status_answers_every_call(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    req = predict_request(st, inputs={"images": IMAGES})
    for status, message, code in (("UNAVAILABLE", "down for maintenance",
                                   grpc.StatusCode.UNAVAILABLE),
                                  (8, None, grpc.StatusCode.RESOURCE_EXHAUSTED),
                                  ({"code": "NOT_FOUND", "message": "gone"}, None,
                                   grpc.StatusCode.NOT_FOUND)):
        grpc_model.control(status=status, message=message)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                call(ch, TFS + "Predict", req)
            assert code_of(e) == code
        want = message or (status.get("message") if isinstance(status, dict) else None)
        assert e.value.details() == (want or "injected failure")
    r = requests.post(grpc_model.url("/_control"), json={"status": "NO_SUCH_CODE"}, timeout=5)
    assert r.status_code == 400
    grpc_model.control()
    assert call(ch, TFS + "Predict", req)[0].outputs["predictions"].string_val


def test_fail_next_fails_only_that_many(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    req = infer_request(st)
    grpc_model.control(fail_next=2, status="INTERNAL", methods=["ModelInfer"])
    assert call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())[0].live  # not its method
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as e:
            call(ch, V2 + "ModelInfer", req)
        assert code_of(e) == grpc.StatusCode.INTERNAL
    for _ in range(2):
        assert call(ch, V2 + "ModelInfer", req)[0].id == "r1"
    grpc_model.control(fail_next=1)  # no status: UNAVAILABLE
    with pytest.raises(grpc.RpcError) as e:
        call(ch, V2 + "ModelInfer", req)
    assert code_of(e) == grpc.StatusCode.UNAVAILABLE
    call(ch, V2 + "ModelInfer", req)
    assert grpc_model.count("ModelInfer") == 6
    assert grpc_model.count() == 7


def test_versions_and_readiness(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    status_req = st.get_model_status_pb2.GetModelStatusRequest(
        model_spec=st.model_pb2.ModelSpec(name="m"))
    grpc_model.control(version=2, labels={"stable": 2, "old": 1})
    status, _ = call(ch, MODEL_SERVICE + "GetModelStatus", status_req)
    assert [(s.version, s.state) for s in status.model_version_status] == [
        (2, st.get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    with pytest.raises(grpc.RpcError) as e:
        call(ch, TFS + "Predict", predict_request(st, version=1))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        call(ch, TFS + "Predict", predict_request(st, label="old"))
    assert code_of(e) == grpc.StatusCode.NOT_FOUND
    by_label, _ = call(ch, TFS + "Predict", predict_request(st, label="stable"))
    by_number, _ = call(ch, TFS + "Predict", predict_request(st, version=2))
    latest, _ = call(ch, TFS + "Predict", predict_request(st))
    assert by_label.model_spec.version.value == 2
    assert reading(by_label) == reading(by_number) == reading(latest)
    assert not call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="s", version="1"))[0].ready
    assert call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="s", version="2"))[0].ready
    assert call(ch, V2 + "ModelMetadata", st.v2.ModelMetadataRequest(name="s"))[0].versions == [
        "2"]
    assert call(ch, V2 + "ModelInfer", infer_request(st))[0].model_version == "2"

    # Another version is another model: other predictions.
    grpc_model.control()
    v1, _ = call(ch, TFS + "Predict", predict_request(st))
    assert v1.model_spec.version.value == 1
    assert predictions(v1) != predictions(latest)

    grpc_model.control(ready=False)
    assert not call(ch, V2 + "ServerReady", st.v2.ServerReadyRequest())[0].ready
    assert not call(ch, V2 + "ModelReady", st.v2.ModelReadyRequest(name="s"))[0].ready
    assert call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())[0].live


def test_metadata_and_trailers_added(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    grpc_model.control(metadata={"x-model-region": "eu"}, trailers={"x-cost": "3"})
    _, rpc = call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())
    assert dict(rpc.initial_metadata())["x-model-region"] == "eu"
    assert dict(rpc.trailing_metadata())["x-cost"] == "3"
    first = int(dict(rpc.initial_metadata())["x-model-call"])
    _, rpc = call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())
    assert int(dict(rpc.initial_metadata())["x-model-call"]) == first + 1


def test_reset(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    grpc_model.control(status="UNAVAILABLE")
    with pytest.raises(grpc.RpcError):
        call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())
    grpc_model.reset()
    assert grpc_model.count() == 0 and grpc_model.last() == {}
    assert call(ch, V2 + "ServerLive", st.v2.ServerLiveRequest())[0].live
    assert grpc_model.count() == 1 and len(grpc_model.recorded()) == 1


# --------------------------------------------------------------------------- readings


def test_predict_rows_depend_only_on_their_row(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    images = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    words = [b"a", b"b", b"c"]

    def batch(rows):
        return predict_request(st, inputs={
            "images": ("DT_FLOAT", [len(rows), 2], [v for i in rows for v in images[i]]),
            "words": ("DT_STRING", [len(rows)], [words[i] for i in rows])})

    whole = predictions(call(ch, TFS + "Predict", batch([0, 1, 2]))[0])
    assert len(set(whole)) == 3
    for i in range(3):
        assert predictions(call(ch, TFS + "Predict", batch([i]))[0]) == [whole[i]]
    assert predictions(call(ch, TFS + "Predict", batch([2, 0]))[0]) == [whole[2], whole[0]]
    assert predictions(call(ch, TFS + "Predict", batch([1, 1]))[0]) == [whole[1], whole[1]]

    # Inputs without a shared first dimension: one prediction of the whole.
    odd = predict_request(st, inputs={"images": ("DT_FLOAT", [3, 2], [1.0] * 6),
                                      "words": ("DT_STRING", [2], [b"a", b"b"])})
    assert len(predictions(call(ch, TFS + "Predict", odd)[0])) == 1
    scalar = predict_request(st, inputs={"x": ("DT_FLOAT", [], [1.0])})
    assert len(predictions(call(ch, TFS + "Predict", scalar)[0])) == 1


def test_predict_same_reading_same_answer(grpc_model, grpc_stubs):
    """Requests that differ only in what TF Serving does not read get the same predictions
    and view digest (their request digests differ)."""
    st = grpc_stubs
    ch = grpc_model.channel()
    base = predict_request(st, inputs={"images": IMAGES, "words": WORDS},
                           output_filter=["predictions", "received"])
    want = reading(call(ch, TFS + "Predict", base)[0])

    reordered = predict_request(st, inputs={"words": WORDS, "images": IMAGES},
                                output_filter=["received", "predictions", "received"])
    explicit = predict_request(st, inputs={"images": IMAGES, "words": WORDS},
                               signature="serving_default", version=1)
    named_dims = predict_request(st, inputs={"images": IMAGES, "words": WORDS})
    named_dims.inputs["images"].tensor_shape.dim[0].name = "batch"
    content = predict_request(st, inputs={"words": WORDS})
    t = content.inputs["images"]
    t.dtype = st.types_pb2.DT_FLOAT
    t.tensor_shape.dim.add(size=3)
    t.tensor_shape.dim.add(size=2)
    t.tensor_content = struct.pack("<6f", *IMAGES[2])
    unknown = with_field(base.SerializeToString(), 6, b"client-7")  # client_id, newer
    # A map key sent twice: the last entry is read.
    first = predict_request(st, inputs={"images": ("DT_FLOAT", [1], [9.0]), "words": WORDS},
                            output_filter=["predictions", "received"])
    then = predict_request(st, model="m", inputs={"images": IMAGES})
    twice = first.SerializeToString() + then.SerializeToString()
    for variant in (reordered, explicit, named_dims, content, unknown, twice):
        resp, _ = call(ch, TFS + "Predict", variant)
        assert reading(resp) == want, variant
        sent = variant if isinstance(variant, bytes) else variant.SerializeToString()
        assert received(resp)["sha256"] == grpc_model.last()["sha256"] == \
            hashlib.sha256(sent).hexdigest()

    # One value fills the shape, as TF Serving reads it.
    full = predict_request(st, inputs={"x": ("DT_FLOAT", [2, 2], [7.0] * 4)})
    short = predict_request(st, inputs={"x": ("DT_FLOAT", [2, 2], [7.0])})
    assert reading(call(ch, TFS + "Predict", full)[0]) == \
        reading(call(ch, TFS + "Predict", short)[0])


def test_predict_other_reading_other_answer(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    base = dict(inputs={"images": IMAGES, "words": WORDS})
    variants = [
        predict_request(st),
        predict_request(st, **dict(base, model="other")),
        predict_request(st, signature="classify_x", **base),
        predict_request(st, inputs={"images": ("DT_FLOAT", [3, 2], [1.0, 2.0, 3.0, 4.0, 5.0,
                                                                    6.5]), "words": WORDS}),
        predict_request(st, inputs={"images": ("DT_DOUBLE", [3, 2], IMAGES[2]),
                                    "words": WORDS}),
        predict_request(st, inputs={"images": ("DT_FLOAT", [2, 3], IMAGES[2]),
                                    "words": ("DT_STRING", [2], [b"a", b"b"])}),
        predict_request(st, inputs={"images": IMAGES, "words": WORDS, "extra": IMAGES}),
        predict_request(st, inputs={"pictures": IMAGES, "words": WORDS}),
        predict_request(st, inputs={"images": IMAGES, "words": ("DT_STRING", [3],
                                                                [b"a", b"b", b"C"])}),
    ]
    seen = {}
    for v in [predict_request(st, **base)] + variants:
        resp, _ = call(ch, TFS + "Predict", v)
        key = received(resp)["view_sha256"]
        assert key not in seen, (v, seen.get(key))
        seen[key] = v
    assert len({tuple(predictions(call(ch, TFS + "Predict", v)[0])) for v in variants}) == \
        len(variants)
    # Only some outputs: another answer (what it read says its x-received metadata).
    only, rpc = call(ch, TFS + "Predict", predict_request(st, output_filter=["predictions"],
                                                           **base))
    assert list(only.outputs) == ["predictions"]
    assert json.loads(dict(rpc.initial_metadata())["x-received"])["view_sha256"] not in seen
    # The last row of a batch changed: only its prediction changes.
    a = predictions(call(ch, TFS + "Predict", predict_request(st, **base))[0])
    b = predictions(call(ch, TFS + "Predict", variants[8])[0])
    assert a[:2] == b[:2] and a[2] != b[2]

    # A salt is another model: every prediction changes.
    grpc_model.control(salt="model-b")
    c = predictions(call(ch, TFS + "Predict", predict_request(st, **base))[0])
    assert not set(a) & set(c)


def test_classify_and_regress_readings(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()
    creq = st.classification_pb2.ClassificationRequest
    rreq = st.regression_pb2.RegressionRequest
    exs = [example(st, age=29, name=b"x"), example(st, age=30, name=b"y")]

    def labels(req):
        resp, _ = call(ch, TFS + "Classify", req)
        return [[c.label for c in cl.classes] for cl in resp.result.classifications]

    def values(req):
        resp, _ = call(ch, TFS + "Regress", req)
        return [r.value for r in resp.result.regressions]

    both = labels(examples_request(st, creq, exs))
    assert labels(examples_request(st, creq, exs[1:])) == both[1:]  # per example
    ctx = example(st, query=b"pizza")
    with_ctx = labels(examples_request(st, creq, exs, context=ctx))
    assert with_ctx[0] != both[0] and with_ctx[1] != both[1]
    assert labels(examples_request(st, creq, exs, context=example(st, query=b"tacos"))) != \
        with_ctx
    assert labels(examples_request(st, creq, [example(st, age=29, name=b"z")]))[0] != both[0]
    # Feature order in the map is not read.
    swapped = st.example_pb2.Example()
    swapped.features.feature["name"].bytes_list.value.append(b"x")
    swapped.features.feature["age"].int64_list.value.append(29)
    assert labels(examples_request(st, creq, [swapped]))[0] == both[0]

    vals = values(examples_request(st, rreq, exs))
    assert len(vals) == 2 and vals[0] != vals[1]
    assert values(examples_request(st, rreq, exs[::-1])) == vals[::-1]
    assert values(examples_request(st, rreq, exs, model="n")) != vals


def test_model_infer_readings(grpc_model, grpc_stubs):
    st = grpc_stubs
    ch = grpc_model.channel()

    def infer(req):
        resp, _ = call(ch, V2 + "ModelInfer", req)
        return resp

    base = infer(infer_request(st))
    # The id is echoed, not read; raw and typed contents are the same tensor.
    other_id = infer(infer_request(st, rid="r2"))
    raw = infer(infer_request(st, raw=True))
    assert other_id.id == "r2" and base.id == "r1"
    assert infer_outputs(other_id) == infer_outputs(raw) == infer_outputs(base)
    assert received(other_id)["view_sha256"] == received(raw)["view_sha256"] == \
        received(base)["view_sha256"]
    assert received(other_id)["sha256"] != received(base)["sha256"]
    assert raw.raw_output_contents and not base.raw_output_contents
    unknown = infer(with_field(infer_request(st).SerializeToString(), 15, b"x"))
    assert infer_outputs(unknown) == infer_outputs(base)

    # Parameters, requested outputs, data, shape: read.
    assert infer_outputs(infer(infer_request(st, parameters={"p": 1}))) != infer_outputs(base)
    assert infer_outputs(infer(infer_request(st, parameters={"p": True}))) != \
        infer_outputs(infer(infer_request(st, parameters={"p": 1})))
    asked = infer(infer_request(st, outputs=["OUT_A", "OUT_B"]))
    assert list(infer_outputs(asked)) == ["OUT_A", "OUT_B"]
    changed = infer_request(st)
    changed.inputs[0].contents.int_contents[3] = 4
    assert infer_outputs(infer(changed)) != infer_outputs(base)
    reshaped = infer_request(st)
    reshaped.inputs[0].shape[:] = [4]
    assert infer_outputs(infer(reshaped)) != infer_outputs(base)
    # Input order is not read (inputs are by name).
    swapped = infer_request(st)
    first = st.v2.ModelInferRequest.InferInputTensor()
    first.CopyFrom(swapped.inputs[0])
    del swapped.inputs[0]
    swapped.inputs.append(first)
    assert infer_outputs(infer(swapped)) == infer_outputs(base)
