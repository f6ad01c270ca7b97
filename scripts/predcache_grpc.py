"""gRPC stubs for the demo's scripts (scripts/model-server --grpc-port, scripts/predcache-batch
--grpc): the Python message classes and service stubs of the project's proto/ (the TF
Serving and KServe v2 subsets predcache reads), generated at start with grpc_tools.protoc
into a temporary directory that is removed at exit.  Needs Debian's python3-grpcio and
python3-grpc-tools (scripts/bootstrap installs them); imported only when a gRPC option is
given, so the scripts' REST side stays standard library only.

    import predcache_grpc
    st = predcache_grpc.load_stubs()        # st.predict_pb2, st.v2, st.v2_grpc, ...
"""

import atexit
import importlib
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")
MISSING = ("needs python3-grpcio and python3-grpc-tools (Debian packages; scripts/bootstrap "
           "installs them), run with /usr/bin/python3")

# The services' path prefixes: TFS + "Predict" is "/tensorflow.serving.PredictionService/Predict".
TFS = "/tensorflow.serving.PredictionService/"
MODEL_SERVICE = "/tensorflow.serving.ModelService/"
V2 = "/inference.GRPCInferenceService/"


class StubsError(Exception):
    """grpcio or grpc_tools missing, or proto/ did not compile."""


def generate_stubs(out_dir, proto_dir=PROTO_DIR):
    """Python message classes and service stubs for every .proto under proto_dir, written
    into out_dir by grpc_tools.protoc. A complete out_dir (marked .complete) is reused;
    otherwise it is generated beside it and renamed into place, so that two processes
    generating into one directory never see half of it. Raises StubsError."""
    if os.path.exists(os.path.join(out_dir, ".complete")):
        return out_dir
    try:
        importlib.import_module("grpc")  # checked here: the generated stubs import it
        import grpc_tools
        from grpc_tools import protoc
    except ImportError as e:
        raise StubsError("%s (%s)" % (MISSING, e))
    protos = []
    for base, _, files in os.walk(proto_dir):
        protos += [os.path.relpath(os.path.join(base, f), proto_dir)
                   for f in files if f.endswith(".proto")]
    if not protos:
        raise StubsError("no .proto files under %s" % proto_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".stubs-", dir=parent)
    wkt = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["grpc_tools.protoc", "-I" + proto_dir, "-I" + wkt, "--python_out=" + tmp,
            "--grpc_python_out=" + tmp] + sorted(protos)
    if protoc.main(args) != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StubsError("grpc_tools.protoc failed on %s" % proto_dir)
    open(os.path.join(tmp, ".complete"), "w").close()
    try:
        os.rename(tmp, out_dir)  # replaces an empty directory too
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(os.path.join(out_dir, ".complete")):
            raise  # not another process's complete stubs: something else is there
    return out_dir


class Stubs:
    """The generated modules, by short name (stubs.predict_pb2, stubs.v2_grpc, ...)."""

    MODULES = {
        "types_pb2": "tensorflow.core.framework.types_pb2",
        "tensor_pb2": "tensorflow.core.framework.tensor_pb2",
        "tensor_shape_pb2": "tensorflow.core.framework.tensor_shape_pb2",
        "feature_pb2": "tensorflow.core.example.feature_pb2",
        "example_pb2": "tensorflow.core.example.example_pb2",
        "meta_graph_pb2": "tensorflow.core.protobuf.meta_graph_pb2",
        "error_codes_pb2": "tensorflow.core.protobuf.error_codes_pb2",
        "model_pb2": "tensorflow_serving.apis.model_pb2",
        "input_pb2": "tensorflow_serving.apis.input_pb2",
        "predict_pb2": "tensorflow_serving.apis.predict_pb2",
        "classification_pb2": "tensorflow_serving.apis.classification_pb2",
        "regression_pb2": "tensorflow_serving.apis.regression_pb2",
        "get_model_metadata_pb2": "tensorflow_serving.apis.get_model_metadata_pb2",
        "get_model_status_pb2": "tensorflow_serving.apis.get_model_status_pb2",
        "status_pb2": "tensorflow_serving.util.status_pb2",
        "prediction_service_grpc": "tensorflow_serving.apis.prediction_service_pb2_grpc",
        "model_service_grpc": "tensorflow_serving.apis.model_service_pb2_grpc",
        "v2": "grpc_predict_v2_pb2",
        "v2_grpc": "grpc_predict_v2_pb2_grpc",
        "wrappers_pb2": "google.protobuf.wrappers_pb2",
        "any_pb2": "google.protobuf.any_pb2",
    }

    def __init__(self, stubs_dir):
        self.dir = stubs_dir
        if stubs_dir not in sys.path:
            sys.path.insert(0, stubs_dir)
        for short, name in self.MODULES.items():
            setattr(self, short, importlib.import_module(name))


def load_stubs(proto_dir=PROTO_DIR):
    """Generates the stubs of proto_dir into a new temporary directory (removed at exit)
    and imports them. Raises StubsError."""
    if not os.path.isdir(proto_dir):
        raise StubsError("proto directory %s not found" % proto_dir)
    scratch = tempfile.mkdtemp(prefix="predcache-grpc-stubs-")
    atexit.register(shutil.rmtree, scratch, True)
    try:
        return Stubs(generate_stubs(os.path.join(scratch, "stubs"), proto_dir))
    except ImportError as e:
        raise StubsError("cannot import the generated stubs: %s" % e)


def length_prefixed(raw):
    """KServe v2 BYTES elements of raw_*_contents (each a 4-byte little-endian length, then
    the bytes) -> list of bytes, or None when raw is not such a list."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            return None
        n = int.from_bytes(raw[i:i + 4], "little")
        i += 4
        if i + n > len(raw):
            return None
        out.append(bytes(raw[i:i + n]))
        i += n
    return out


def length_prefix(elements):
    """list of bytes -> KServe v2 raw BYTES contents."""
    return b"".join(len(e).to_bytes(4, "little") + e for e in elements)
