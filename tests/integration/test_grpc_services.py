"""The published gRPC services through predcache's gRPC port: TF Serving's
PredictionService and ModelService, KServe v2's GRPCInferenceService. A grpcio client
pointed at predcache instead of the model server gets the same answers, and the model server
sees the same calls (method, message bytes, metadata, binary metadata too)."""
import json

import grpc

from conftest import free_port
from grpc_harness import call, expected_answer
from test_grpc_model_server import every_method

pytest_plugins = ["grpc_harness"]


def test_every_method_through_predcache(start_predcache, grpc_model, grpc_stubs):
    st = grpc_stubs
    gport = free_port()
    start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport},
                          "backend": {"grpc_url": "http://%s" % grpc_model.target}})
    cases = every_method(st)
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
