"""The published gRPC services through predcache's gRPC port: TF Serving's
PredictionService and ModelService, KServe v2's GRPCInferenceService. A grpcio client
pointed at predcache instead of the model server gets the same answers, and the model server
sees the same calls (method, message bytes, metadata, binary metadata too)."""
import json

import grpc

from conftest import free_port
from grpc_harness import MODEL_SERVICE, TFS, V2, call, expected_answer
from test_grpc_model_server import (IMAGES, WORDS, example, examples_request, infer_request,
                                    predict_request)

pytest_plugins = ["grpc_harness"]


def test_every_method_through_predcache(start_predcache, grpc_model, grpc_stubs):
    st = grpc_stubs
    gport = free_port()
    start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport},
                          "backend": {"grpc_url": "http://%s" % grpc_model.target}})
    cases = [
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
    with grpc.insecure_channel("127.0.0.1:%d" % gport) as ch:
        for method, req in cases:
            resp, rpc = call(ch, method, req, metadata=[("x-trace", "t-" + method[-6:]),
                                                        ("x-blob-bin", b"\x00\xff")])
            want, err = expected_answer(method, req)
            assert err is None, (method, err)
            assert resp == want, method
            last = grpc_model.last()
            assert last["method"] == method
            assert ["x-trace", "t-" + method[-6:]] in last["metadata"]
            assert ["x-blob-bin", "AP8="] in last["metadata"]
            rec = json.loads(dict(rpc.initial_metadata())["x-received"])
            assert rec["sha256"] == last["sha256"]  # the very bytes the client sent
    assert grpc_model.counts() == {m: 1 for m, _ in cases}
