"""Streamed answers (an LLM server's "stream": true, Server-Sent Events) are passed on as
the model server writes them: no buffering, no Content-Length, no bound on the whole answer
(only on the silence between bytes: [backend] idle_timeout_ms), and a client that leaves
stops the model server's call. They are not cached (X-Cache: PASS, X-Cache-Reason:
streamed, or non-deterministic for a generation that samples); a deterministic generation's
stream is (test_generations.py).

The test model server's /v1/chat/completions streams events; with stream_hold it sends the
first and waits for POST /_release, so a test can see that event arrive through predcache
while the model server has not finished (the stream is not buffered)."""

import hashlib
import json
import socket
import time

import requests

from conftest import HTTP_TIMEOUT, wait_for

CHAT = "/v1/chat/completions"


def chat_body(text, stream=True):
    return json.dumps({"model": "m", "stream": stream,
                       "messages": [{"role": "user", "content": text}]})


def events_of(raw):
    """The data: payloads of an SSE byte string, in order."""
    out = []
    for block in raw.decode().split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                out.append(line[6:])
    return out


def streams(model):
    return requests.get(model.url("/_streams"), timeout=HTTP_TIMEOUT).json()["streams"]


def release(model):
    requests.post(model.url("/_release"), timeout=HTTP_TIMEOUT).raise_for_status()


def read_held_stream(r, model):
    """The whole body of r, a stream the model server holds after its first event
    (stream_hold): the first event must arrive while it is held (not buffered), then the
    model server is released and the rest read."""
    got = b""
    it = r.iter_content(chunk_size=None)
    while b"\n\n" not in got:
        got += next(it)
    assert json.loads(events_of(got)[0])["index"] == 0
    assert list(streams(model).values()) == ["sent 1"]  # the rest is still held
    release(model)
    for part in it:
        got += part
    return got


def open_stream(p, body, headers=None):
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(headers or {})
    return requests.post(p.url(CHAT), data=body, headers=hdrs, stream=True, timeout=30)


def test_events_pass_through_as_they_come(start_predcache, model):
    p = start_predcache()
    model.control(stream_hold=True, stream_events=3)
    body = chat_body("hello")
    r = open_stream(p, body)
    try:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        assert "Content-Length" not in r.headers
        assert r.headers.get("Transfer-Encoding") == "chunked"
        got = read_held_stream(r, model)
    finally:
        r.close()
    events = events_of(got)
    assert events[-1] == "[DONE]"
    docs = [json.loads(e) for e in events[:-1]]
    assert [d["index"] for d in docs] == [0, 1, 2]
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    assert all(d["prompt_sha"] == digest for d in docs)  # the model read this request
    wait_for(lambda: list(streams(model).values()) == ["done"], what="the stream done")
    line = p.access_line_of(r)
    assert " path=%s status=200 cache=PASS " % CHAT in line and " bytes=%d" % len(got) in line


def test_a_stream_of_a_family_without_generations_says_streamed(start_predcache, model, redis):
    """A route whose family has no generations (api = json): a streamed answer is passed on
    and not stored (PASS, streamed); the same request without "stream" is cached."""
    p = start_predcache(conf={"route chat": {"match": "POST " + CHAT, "api": "json"}})
    model.control(stream_events=2)
    r = open_stream(p, chat_body("cached route"))
    raw = r.content
    assert (r.headers.get("X-Cache"), r.headers.get("X-Cache-Reason")) == ("PASS", "streamed")
    assert events_of(raw)[-1] == "[DONE]"
    assert p.metric("predcache_uncached_total", reason="streamed") == 1
    assert [k for k in redis.keys("predcache:v2:*")] == []
    # the same route without "stream" is cached as before
    body = chat_body("cached route", stream=False)
    r1 = requests.post(p.url(CHAT), data=body, headers={"Content-Type": "application/json"},
                       timeout=10)
    assert r1.headers["X-Cache"] == "MISS" and "Content-Length" in r1.headers
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = requests.post(p.url(CHAT), data=body, headers={"Content-Type": "application/json"},
                       timeout=10)
    assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content


def test_a_long_generation_outlives_the_backend_timeout(start_predcache, model):
    """timeout_ms bounds a whole answer; a stream is bounded by its silences only."""
    p = start_predcache(conf={"backend": {"timeout_ms": "1000", "connect_timeout_ms": "500",
                                          "idle_timeout_ms": "3000"}})
    model.control(stream_events=6, stream_gap_ms=400)
    t0 = time.monotonic()
    r = open_stream(p, chat_body("long"))
    raw = r.content
    took = time.monotonic() - t0
    assert r.status_code == 200
    events = events_of(raw)
    assert len(events) == 7 and events[-1] == "[DONE]", events
    assert took > 1.5  # longer than timeout_ms, and whole


def test_silence_past_idle_timeout_cuts_the_stream(start_predcache, model):
    p = start_predcache(conf={"backend": {"idle_timeout_ms": "1000"}})
    model.control(stream_hold=True, stream_events=3)
    r = open_stream(p, chat_body("silent"))
    got = b""
    cut = False
    try:
        for part in r.iter_content(chunk_size=None):
            got += part
    except requests.exceptions.ChunkedEncodingError:
        cut = True  # the body ended without its last chunk: the client can tell
    finally:
        r.close()
        release(model)
    assert cut, got
    assert len(events_of(got)) == 1  # the first event, then nothing more
    assert "stream cut after" in p.stderr_text()


def test_a_client_that_leaves_stops_the_model_call(start_predcache, model):
    p = start_predcache()
    model.control(stream_events=100, stream_gap_ms=50)
    s = socket.create_connection(("127.0.0.1", p.listen_port))
    body = chat_body("leaving").encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (CHAT.encode(), len(body), body))
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    s.close()
    wait_for(lambda: list(streams(model).values()) == ["broken"], timeout=10,
             what="the model server's stream broken off by predcache")
    wait_for(lambda: p.metric("predcache_in_flight") == 0, what="nothing left in flight")
    r = requests.post(p.url(CHAT), data=chat_body("after", stream=False),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 200


def test_model_server_down_is_an_error_answer(start_predcache, model):
    p = start_predcache(conf={"backend": {"connect_timeout_ms": "300"}})
    model.stop()
    r = requests.post(p.url(CHAT), data=chat_body("down"),
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code in (502, 503) and "error" in r.json()


def test_accept_event_stream_asks_for_a_stream(start_predcache, model):
    p = start_predcache()
    model.control(stream_hold=True, stream_events=2)
    body = json.dumps({"model": "m", "stream": True, "messages": []})
    r = open_stream(p, body, {"Accept": "text/event-stream"})
    try:
        got = b""
        it = r.iter_content(chunk_size=None)
        while b"\n\n" not in got:
            got += next(it)
        assert list(streams(model).values()) == ["sent 1"]
    finally:
        release(model)
        r.close()


def test_a_slow_reader_gets_every_event_in_order(start_predcache, model):
    """More than the 256 KB a stream may leave unread: the model server's transfer waits
    for the client and goes on when it reads, nothing lost or reordered."""
    p = start_predcache()
    n = 20000  # about 3 MB of events: more than the sockets between hold
    model.control(stream_events=n)
    s = socket.create_connection(("127.0.0.1", p.listen_port))
    body = chat_body("slow reader").encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (CHAT.encode(), len(body), body))
    # not reading: once 256 KB wait for the client, predcache holds the model server's
    # transfer (a pause, counted)
    wait_for(lambda: p.metric("predcache_backend_pauses_total") >= 1, timeout=15,
             what="the stream held for the slow reader")
    got = b""
    s.settimeout(20)
    while not got.endswith(b"0\r\n\r\n"):
        part = s.recv(65536)
        if not part:
            break
        got += part
    s.close()
    head, _, chunked = got.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    raw, pos = b"", 0
    while True:  # de-chunk
        nl = chunked.index(b"\r\n", pos)
        size = int(chunked[pos:nl], 16)
        if size == 0:
            break
        raw += chunked[nl + 2:nl + 2 + size]
        pos = nl + 2 + size + 2
    events = events_of(raw)
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["index"] for e in events[:-1]] == list(range(n))
