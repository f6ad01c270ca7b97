"""gRPC calls through predcache's gRPC port to a gRPC model server, as they came.

A real grpcio server (in this process, on a free port) and real grpcio clients: messages
are carried as bytes (no stubs needed), so these tests see exactly what passes: the
message, the metadata, the deadline, the status and its message, cancellation.
"""
import hashlib
import os
import re
import signal
import threading
import time
from concurrent import futures

import grpc
import pytest

from conftest import free_port, merge_conf, wait_for, write_conf


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = []  # (method, metadata dict, time_remaining, request bytes)
        self.cancelled = threading.Event()


def make_server(rec):
    def echo(request, context):
        md = dict(context.invocation_metadata())
        with rec.lock:
            rec.calls.append(("Echo", md, context.time_remaining(), request))
        context.set_trailing_metadata((("x-answered-by", "model"),))
        return hashlib.sha256(request).digest() + request[:64]

    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, "no model named 'x' 100%")

    def slow(request, context):
        with rec.lock:
            rec.calls.append(("Slow", dict(context.invocation_metadata()),
                              context.time_remaining(), request))
        for _ in range(100):
            if not context.is_active():
                rec.cancelled.set()
                return b""
            time.sleep(0.05)
        return b"late"

    handlers = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture
def grpc_backend():
    rec = Recorder()
    server, port = make_server(rec)
    yield rec, port
    server.stop(0)


@pytest.fixture
def gproxy(start_predcache, grpc_backend):
    rec, port = grpc_backend
    gport = free_port()
    p = start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport},
                              "backend": {"grpc_url": "http://127.0.0.1:%d" % port}})
    channel = grpc.insecure_channel("127.0.0.1:%d" % gport)
    yield p, channel, rec
    channel.close()


def call(channel, method, body, **kw):
    return channel.unary_unary("/t.T/%s" % method)(body, **kw)


def test_a_call_passes_through_with_its_metadata(gproxy):
    p, channel, rec = gproxy
    body = b"\x00\x01tensor bytes" * 100
    out, c = channel.unary_unary("/t.T/Echo").with_call(
        body, metadata=(("x-tenant", "acme"), ("authorization", "Bearer t")), timeout=10)
    assert out == hashlib.sha256(body).digest() + body[:64]
    assert ("x-answered-by", "model") in c.trailing_metadata()
    assert c.code() == grpc.StatusCode.OK
    method, md, remaining, got = rec.calls[-1]
    assert got == body
    assert md["x-tenant"] == "acme" and md["authorization"] == "Bearer t"
    # the deadline was passed on: the client's header is rounded up to 3 significant
    # figures (grpc core), so up to 1 % over what the client asked
    assert 0 < remaining <= 10 * 1.01
    assert p.metric("predcache_grpc_calls_total", grpc_status="OK") == 1


def test_an_error_status_and_its_message_pass_through(gproxy):
    p, channel, rec = gproxy
    with pytest.raises(grpc.RpcError) as e:
        call(channel, "Fail", b"x", timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "no model named 'x' 100%"
    assert p.metric("predcache_grpc_calls_total", grpc_status="NOT_FOUND") == 1


def test_the_deadline_is_honoured_and_passed_on(gproxy):
    p, channel, rec = gproxy
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        call(channel, "Slow", b"x", timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 3
    _, md, remaining, _ = [c for c in rec.calls if c[0] == "Slow"][-1]
    # the client's own header is rounded up to 3 significant figures (grpc core)
    assert remaining is not None and remaining <= 0.5 * 1.01
    # the model server's call was cancelled when the deadline passed
    assert rec.cancelled.wait(5)


def test_a_client_that_cancels_cancels_the_model_call(gproxy):
    p, channel, rec = gproxy
    fut = channel.unary_unary("/t.T/Slow").future(b"x", timeout=20)
    wait_for(lambda: any(c[0] == "Slow" for c in rec.calls), what="the model server reached")
    fut.cancel()
    assert rec.cancelled.wait(5), "the model server's call went on"
    wait_for(lambda: p.metric("predcache_grpc_calls_total", grpc_status="CANCELLED") == 1,
             what="the cancelled call counted")
    # the port serves on
    assert call(channel, "Echo", b"after", timeout=10)[32:] == b"after"


def test_many_streams_on_one_connection(gproxy):
    p, channel, rec = gproxy
    bodies = [("call %d " % i).encode() * (i % 50 + 1) for i in range(400)]
    fs = [channel.unary_unary("/t.T/Echo").future(b, timeout=30) for b in bodies]
    wrong = sum(f.result() != hashlib.sha256(b).digest() + b[:64] for f, b in zip(fs, bodies))
    print("many streams: wrong answers: %d of %d" % (wrong, len(bodies)))
    assert wrong == 0
    assert p.metric("predcache_grpc_calls_total", grpc_status="OK") == 400


def test_a_large_message(gproxy):
    p, channel, rec = gproxy
    body = bytes(range(256)) * (3 * 4096)  # 3 MB
    out = channel.unary_unary("/t.T/Echo")(body, timeout=30)
    assert out == hashlib.sha256(body).digest() + body[:64]


def test_model_server_down_is_unavailable(start_predcache):
    gport, dead = free_port(), free_port()
    p = start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport},
                              "backend": {"grpc_url": "http://127.0.0.1:%d" % dead}})
    with grpc.insecure_channel("127.0.0.1:%d" % gport) as channel:
        with pytest.raises(grpc.RpcError) as e:
            call(channel, "Echo", b"x", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "cannot connect" in e.value.details()
    assert p.proc.poll() is None


def test_no_grpc_url_is_unimplemented(start_predcache):
    gport = free_port()
    start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport}})
    with grpc.insecure_channel("127.0.0.1:%d" % gport) as channel:
        with pytest.raises(grpc.RpcError) as e:
            call(channel, "Echo", b"x", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_reload_keeps_the_grpc_port(gproxy):
    """SIGHUP: the gRPC port's socket passes to the new workers; the old ones send GOAWAY
    and finish their calls; a channel goes on calling without an error."""
    p, channel, rec = gproxy
    stop = threading.Event()
    errors, done = [], [0]

    def load():
        k = 0
        while not stop.is_set():
            k += 1
            body = b"r%d" % k
            try:
                if call(channel, "Echo", body, timeout=10) != hashlib.sha256(body).digest() + body:
                    errors.append("wrong answer")
                done[0] += 1
            except grpc.RpcError as e:
                errors.append("%s %s" % (e.code(), e.details()))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(1, 4):
            time.sleep(0.5)
            write_conf(p.conf_path, merge_conf(p.conf, {"cache": {"ttl_s": 100 + n}}))
            os.kill(p.pid, signal.SIGHUP)
            wait_for(lambda: "reload: configuration %d applied" % n in p.stderr_text(),
                     what="reload %d" % n)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print("grpc across 3 reloads: %d calls, %d failed" % (done[0], len(errors)))
    assert done[0] > 100 and not errors, errors[:5]


def test_messages_past_the_bounds_are_resource_exhausted(start_predcache, grpc_backend):
    """A message larger than max_body_bytes, and one that would take the request bytes held
    past max_input_bytes, are refused with RESOURCE_EXHAUSTED before the model server is
    called; smaller ones pass, and the bytes held go back to 0."""
    rec, port = grpc_backend
    gport = free_port()
    p = start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % gport,
                                         "max_body_bytes": "64k", "max_input_bytes": "1m"},
                              "backend": {"grpc_url": "http://127.0.0.1:%d" % port}})
    held = p.metric("predcache_input_buffered_bytes")  # the data port's own (jobs' poll)
    with grpc.insecure_channel("127.0.0.1:%d" % gport) as channel:
        with pytest.raises(grpc.RpcError) as e:
            call(channel, "Echo", b"x" * 100000, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_body_bytes" in e.value.details()
        assert not rec.calls
        body = b"y" * 60000
        assert call(channel, "Echo", body, timeout=10) == hashlib.sha256(body).digest() + body[:64]
    wait_for(lambda: p.metric("predcache_input_buffered_bytes") == held,
             what="input bytes released")
    # a call held at the model server keeps its 60 KB; a second one would pass 100 KB
    p2 = start_predcache(conf={"server": {"grpc_listen": "127.0.0.1:%d" % free_port(),
                                          "max_body_bytes": "64k", "max_input_bytes": "100k"},
                               "backend": {"grpc_url": "http://127.0.0.1:%d" % port}})
    gport2 = int(p2.conf["server"]["grpc_listen"].rsplit(":", 1)[1])
    held = p2.metric("predcache_input_buffered_bytes")
    with grpc.insecure_channel("127.0.0.1:%d" % gport2) as channel:
        slow = channel.unary_unary("/t.T/Slow").future(b"s" * 60000, timeout=3)
        wait_for(lambda: any(c[0] == "Slow" for c in rec.calls), what="the slow call held")
        with pytest.raises(grpc.RpcError) as e:
            call(channel, "Echo", b"z" * 60000, timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_input_bytes" in e.value.details()
        with pytest.raises(grpc.RpcError):
            slow.result()
        assert call(channel, "Echo", b"z" * 60000, timeout=10)[32:] == b"z" * 64
    wait_for(lambda: p2.metric("predcache_input_buffered_bytes") == held, what="input released")


def test_request_ids_are_passed_on_answered_and_logged(gproxy):
    p, channel, rec = gproxy
    _, c = channel.unary_unary("/t.T/Echo").with_call(
        b"a", metadata=(("x-request-id", "client-id-1"),), timeout=10)
    assert dict(c.initial_metadata())["x-request-id"] == "client-id-1"
    assert rec.calls[-1][1]["x-request-id"] == "client-id-1"
    for sent in (None, "has space", "x" * 200):  # none, or not a sane token: one is made
        md = () if sent is None else (("x-request-id", sent),)
        _, c = channel.unary_unary("/t.T/Echo").with_call(b"b", metadata=md, timeout=10)
        made = dict(c.initial_metadata())["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), made
        assert rec.calls[-1][1]["x-request-id"] == made
    with pytest.raises(grpc.RpcError) as e:
        call(channel, "Fail", b"x", timeout=10)
    # a Trailers-Only answer: its headers are the call's trailing metadata
    failed_id = dict(e.value.trailing_metadata())["x-request-id"]
    wait_for(lambda: any("client-id-1" in l and "method=GRPC" in l and "upstream=" in l
                         for l in p.access_lines()), what="the call's access line")
    wait_for(lambda: any(failed_id in l and "grpc-status=NOT_FOUND" in l
                         for l in p.access_lines()), what="the failed call's access line")
