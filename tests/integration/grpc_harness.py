"""gRPC harness: the test gRPC model server (tests/fixtures/grpc_model_server.py) and the
Python stubs of the project's proto/, for tests with real grpcio clients and servers.

A pytest plugin: a test module that needs its fixtures says

    pytest_plugins = ["grpc_harness"]

Fixtures:
    grpc_stubs   the generated modules (stubs()), once per session
    grpc_model   a running GrpcModelServer (control plane helpers), stopped after the test
Helpers: stubs(), GrpcModelServer, call() (a unary call with a message or raw bytes),
expected_answer() (what the model answers a request, for checking an answer that came
through a cache).

Run with Debian's python (python3-grpcio, python3-grpc-tools):
    /usr/bin/python3 -m pytest -q tests/integration/test_grpc_model_server.py

PYTEST_DONT_REWRITE: test modules import their helpers from here before pytest loads it as
their plugin, too late to rewrite its asserts (it has none).
"""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import requests

from conftest import HTTP_TIMEOUT, PYTHON, ROOT, GiveUp, read_text, stop_process, wait_for

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GRPC_MODEL_SERVER = os.path.join(FIXTURES, "grpc_model_server.py")
sys.path.insert(0, FIXTURES)
import grpc_model_server  # noqa: E402 (found through FIXTURES)

# The services' path prefixes: TFS + "Predict" is "/tensorflow.serving.PredictionService/Predict".
TFS = grpc_model_server.TFS
MODEL_SERVICE = grpc_model_server.MODEL_SERVICE
V2 = grpc_model_server.V2

_STUBS = {}


def stubs():
    """The Python stubs of proto/ (grpc_model_server.Stubs: stubs().predict_pb2,
    stubs().prediction_service_grpc, stubs().v2, stubs().v2_grpc, ...), generated with
    grpc_tools.protoc into a temporary directory the first time, removed at exit."""
    if "stubs" not in _STUBS:
        scratch = tempfile.mkdtemp(prefix="predcache-grpc-stubs-")
        atexit.register(shutil.rmtree, scratch, True)
        _STUBS["stubs"] = grpc_model_server.load_stubs(os.path.join(scratch, "stubs"))
    return _STUBS["stubs"]


def expected_answer(method, request, behaviour=None):
    """(response message, None) or (None, (status name, details)): what the test model
    answers request (bytes, or a message) on method (its full path) with that control
    behaviour's version, labels and salt, without injected delays and failures."""
    if not isinstance(request, bytes):
        request = request.SerializeToString()
    ans, err = grpc_model_server.answer(stubs(), method, request, behaviour)
    if err is not None:
        return None, (err.code, err.details)
    return ans.message, None


def call(channel, method, request, metadata=None, timeout=10.0):
    """(response message, grpc call) of a unary call of method (its full path) on channel.
    request: a message, or bytes sent as they are (a request a stub could not write: an
    unknown field, a field twice). Raises grpc.RpcError when the call fails."""
    response_class = grpc_model_server.message_types(stubs())[method][1]
    serialize = None if isinstance(request, bytes) else (lambda m: m.SerializeToString())
    rpc = channel.unary_unary(method, request_serializer=serialize,
                              response_deserializer=response_class.FromString)
    return rpc.with_call(request, metadata=metadata, timeout=timeout)


class GrpcModelServer:
    """The gRPC test model server in its own process: gRPC on .port, its HTTP control plane
    on .control_port. Stubs are shared with the test (stubs()), so it starts without
    generating them again."""

    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port_file = os.path.join(self.dir, "grpc-model.port")
        self.control_port_file = os.path.join(self.dir, "grpc-model.control-port")
        self.stderr_path = os.path.join(self.dir, "grpc-model.stderr")
        self.proc = None
        self.port = None
        self.control_port = None
        self.channels = []

    def start(self):
        cmd = [PYTHON, GRPC_MODEL_SERVER, "--port", "0", "--port-file", self.port_file,
               "--control-port-file", self.control_port_file, "--stubs-dir", stubs().dir]
        with open(self.stderr_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise GiveUp("gRPC model server exited with %s:\n%s"
                             % (self.proc.returncode, read_text(self.stderr_path)))
            if self.port is None:
                # The control port is written first: once the gRPC port is there, both are.
                text = read_text(self.port_file).strip()
                if not text:
                    return False
                self.port = int(text)
                self.control_port = int(read_text(self.control_port_file).strip())
            return requests.get(self.url("/_count"), timeout=1).status_code == 200

        try:
            wait_for(ready, what="gRPC model server GET /_count")
        except AssertionError as e:
            self.stop()
            raise AssertionError("%s\ngRPC model server output:\n%s"
                                 % (e, read_text(self.stderr_path)))
        return self

    def stop(self):
        for ch in self.channels:
            ch.close()
        self.channels = []
        if self.proc is not None:
            return stop_process(self.proc)
        return None

    @property
    def pid(self):
        return self.proc.pid

    @property
    def target(self):
        """host:port for grpc.insecure_channel."""
        return "127.0.0.1:%d" % self.port

    def channel(self):
        """A new insecure (h2c) channel to the server, closed by stop()."""
        import grpc

        ch = grpc.insecure_channel(self.target)
        self.channels.append(ch)
        return ch

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.control_port, path)

    def control(self, **behaviour):
        r = requests.post(self.url("/_control"), json=behaviour, timeout=HTTP_TIMEOUT)
        r.raise_for_status()

    def reset(self):
        requests.post(self.url("/_reset"), timeout=HTTP_TIMEOUT).raise_for_status()

    def count(self, method=None):
        """Data requests so far: all of them, or those of one method (its full path or its
        short name)."""
        if method is None:
            return requests.get(self.url("/_count"), timeout=HTTP_TIMEOUT).json()["total"]
        r = requests.get(self.url("/_count"), params={"method": method}, timeout=HTTP_TIMEOUT)
        return r.json()["count"]

    def counts(self):
        return requests.get(self.url("/_count"), timeout=HTTP_TIMEOUT).json()["methods"]

    def last(self):
        return requests.get(self.url("/_last"), timeout=HTTP_TIMEOUT).json()

    def recorded(self):
        """The last data requests (up to 1000), each as last() gives one."""
        return requests.get(self.url("/_requests"), timeout=HTTP_TIMEOUT).json()["requests"]


@pytest.fixture(scope="session")
def grpc_stubs():
    return stubs()


@pytest.fixture
def grpc_model(tmp_path, grpc_stubs):
    server = GrpcModelServer(tmp_path / "grpc-model")
    try:
        server.start()
        yield server
    finally:
        server.stop()
