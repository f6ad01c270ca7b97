"""Generations (OpenAI-style /v1/chat/completions and /v1/completions) are cached only when
deterministic: temperature 0 (a number) and one choice; an absent temperature is the
server's default, sampling unless [cache] / [route] absent_temperature = greedy. Every other
field (seed, max_tokens, stream, ...) is in the key like the rest of the body.

A deterministic streamed completion is passed on as it comes (chunked, no Content-Length,
each event as the model server writes it) and, once whole, stored; the identical request
then replays the same bytes (X-Cache: HIT). A stream cut short, or larger than
max_value_bytes, is not stored.

The test model server's answers carry "call" (its request counter: a replay keeps the first
call's) and "prompt_sha" (the SHA-256 of the body it received: whose answer it is)."""

import hashlib
import json
import socket
import threading

import requests

from conftest import HTTP_TIMEOUT, wait_for
from test_streaming import events_of, read_held_stream, release, streams

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
JSON_CT = {"Content-Type": "application/json"}


def chat_body(text, **fields):
    doc = {"model": "m", "messages": [{"role": "user", "content": text}]}
    doc.update(fields)
    return json.dumps(doc)


def post(p, path, body, **kw):
    return requests.post(p.url(path), data=body, headers=JSON_CT, timeout=30, **kw)


def model_calls(model):
    return requests.get(model.url("/_count"), timeout=HTTP_TIMEOUT).json()["total"]


def prompt_sha(body):
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def test_a_deterministic_completion_is_cached(start_predcache, model, redis):
    p = start_predcache()
    for path in (CHAT, COMPLETIONS):
        body = chat_body("hello " + path, temperature=0, max_tokens=8)
        r1 = post(p, path, body)
        assert (r1.status_code, r1.headers["X-Cache"]) == (200, "MISS")
        redis.wait_key(r1.headers["X-Cache-Key"])
        calls = model_calls(model)
        r2 = post(p, path, body)
        assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content
        assert model_calls(model) == calls
        assert r1.json()["prompt_sha"] == prompt_sha(body)


def test_sampling_is_passed_uncached(start_predcache, model, redis):
    p = start_predcache()
    cases = [chat_body("no temperature"),  # the server's default: sampling
             chat_body("warm", temperature=0.7),
             chat_body("two choices", temperature=0, n=2),
             chat_body("temperature as a string", temperature="0"),
             chat_body("null temperature", temperature=None)]
    for body in cases:
        calls = model_calls(model)
        for _ in range(2):
            r = post(p, CHAT, body)
            assert r.status_code == 200
            assert (r.headers["X-Cache"], r.headers["X-Cache-Reason"]) == \
                ("PASS", "non-deterministic"), body
        assert model_calls(model) == calls + 2  # each went to the model
    assert p.metric("predcache_uncached_total", reason="non-deterministic") == 2 * len(cases)
    assert redis.keys("predcache:v2:*") == []
    assert " reason=non-deterministic" in p.access_line_of(r)


def test_a_route_can_say_its_server_is_greedy(start_predcache, model, redis):
    p = start_predcache(conf={"route chat": {"match": "POST " + CHAT,
                                             "absent_temperature": "greedy"}})
    body = chat_body("greedy by default")
    r1 = post(p, CHAT, body)
    assert r1.headers["X-Cache"] == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = post(p, CHAT, body)
    assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content
    # an explicit temperature still decides
    r3 = post(p, CHAT, chat_body("greedy by default", temperature=1))
    assert r3.headers["X-Cache"] == "PASS"
    # other routes keep the [cache] default (sampling)
    r4 = post(p, COMPLETIONS, body)
    assert r4.headers["X-Cache-Reason"] == "non-deterministic"


def test_every_other_field_is_in_the_key(start_predcache, model, redis):
    p = start_predcache()
    keys = set()
    for fields in ({"seed": 1}, {"seed": 2}, {"max_tokens": 5}, {"stop": ["\n"]}, {}):
        body = chat_body("fields", temperature=0, **fields)
        r = post(p, CHAT, body)
        assert r.headers["X-Cache"] == "MISS", fields
        assert r.json()["prompt_sha"] == prompt_sha(body)
        keys.add(r.headers["X-Cache-Key"])
    assert len(keys) == 5
    # the same fields in another order and spacing: the same key (read as JSON)
    again = json.dumps({"temperature": 0, "seed": 1, "messages": [{"content": "fields",
                        "role": "user"}], "model": "m"}, indent=2)
    redis.wait_key(next(iter(keys)))
    r = post(p, CHAT, again)
    assert r.headers["X-Cache"] == "HIT"


def test_a_deterministic_stream_is_passed_on_then_replayed(start_predcache, model, redis):
    p = start_predcache()
    model.control(stream_hold=True, stream_events=3)
    body = chat_body("stream me", temperature=0, stream=True)
    r = post(p, CHAT, body, stream=True)
    try:
        assert r.status_code == 200
        assert r.headers["X-Cache"] == "MISS" and "X-Cache-Key" in r.headers
        assert "Content-Length" not in r.headers
        assert r.headers.get("Transfer-Encoding") == "chunked"
        got = read_held_stream(r, model)  # the first event passed on at once
    finally:
        r.close()
    events = events_of(got)
    assert events[-1] == "[DONE]" and len(events) == 4
    first_call = json.loads(events[0])["call"]
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    calls = model_calls(model)
    r2 = post(p, CHAT, body)
    assert r2.status_code == 200 and r2.headers["X-Cache"] == "HIT"
    assert r2.headers["Content-Type"] == "text/event-stream"
    assert r2.content == got  # the same events, the same framing
    assert json.loads(events_of(r2.content)[0])["call"] == first_call
    assert model_calls(model) == calls
    # the same request without "stream" is another entry
    r3 = post(p, CHAT, chat_body("stream me", temperature=0))
    assert r3.headers["X-Cache"] == "MISS" and r3.headers["X-Cache-Key"] != key
    assert r3.headers["Content-Type"] == "application/json"


def test_a_stream_cut_short_is_not_stored(start_predcache, model, redis):
    p = start_predcache(conf={"backend": {"idle_timeout_ms": "800"}})
    model.control(stream_hold=True, stream_events=3)
    body = chat_body("cut", temperature=0, stream=True)
    r = post(p, CHAT, body, stream=True)
    cut = False
    try:
        for _ in r.iter_content(chunk_size=None):
            pass
    except requests.exceptions.ChunkedEncodingError:
        cut = True
    finally:
        r.close()
        release(model)
    assert cut
    wait_for(lambda: any(" reason=stream-cut" in line for line in p.access_lines()),
             what="the cut stream's access line")
    assert redis.keys("predcache:v2:*") == []
    model.control(stream_events=3)
    r2 = post(p, CHAT, body)
    assert r2.headers["X-Cache"] == "MISS"  # asked again, and now whole
    assert events_of(r2.content)[-1] == "[DONE]"


def test_a_stream_larger_than_max_value_bytes_is_passed_not_stored(start_predcache, model,
                                                                   redis):
    p = start_predcache(conf={"cache": {"max_value_bytes": "1k"}})
    model.control(stream_events=30)
    body = chat_body("long", temperature=0, stream=True)
    r = post(p, CHAT, body)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    assert len(r.content) > 1024 and events_of(r.content)[-1] == "[DONE]"
    wait_for(lambda: any(" reason=too-large" in line for line in p.access_lines()),
             what="the access line")
    assert redis.keys("predcache:v2:*") == []
    assert post(p, CHAT, body).headers["X-Cache"] == "MISS"


def test_a_client_that_leaves_a_kept_stream_stores_nothing(start_predcache, model, redis):
    p = start_predcache()
    model.control(stream_events=100, stream_gap_ms=50)
    s = socket.create_connection(("127.0.0.1", p.listen_port))
    body = chat_body("leaving", temperature=0, stream=True).encode()
    s.sendall(b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (CHAT.encode(), len(body), body))
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    assert b"X-Cache: MISS" in got
    s.close()  # gone after the first event
    wait_for(lambda: list(streams(model).values()) == ["broken"], timeout=10,
             what="the model server's stream broken off by predcache")
    wait_for(lambda: p.metric("predcache_in_flight") == 0, what="nothing left in flight")
    assert redis.keys("predcache:v2:*") == []


def test_integrity_of_cached_generations(start_predcache, model, redis):
    """400 distinct deterministic prompts, half of them streamed, each sent twice by 8
    threads: every answer must be the answer to the body sent (prompt_sha), and the
    second round comes from the cache."""
    p = start_predcache()
    model.control(stream_events=2)
    bodies = [chat_body("prompt %d" % i, temperature=0, stream=(i % 2 == 0), seed=i % 7)
              for i in range(400)]
    wrong, results, lock = [], {}, threading.Lock()

    def check(body, rnd):
        r = post(p, CHAT, body)
        sha = prompt_sha(body)
        if json.loads(body).get("stream"):
            events = events_of(r.content)
            docs = [json.loads(e) for e in events[:-1]]
            ok = r.status_code == 200 and events[-1:] == ["[DONE]"] and docs and \
                all(d["prompt_sha"] == sha for d in docs)
        else:
            ok = r.status_code == 200 and r.json()["prompt_sha"] == sha
        with lock:
            results[(body, rnd)] = r.headers.get("X-Cache")
            if not ok:
                wrong.append((body, r.status_code, r.content[:200]))

    def run(rnd, part):
        for body in bodies[part::8]:
            check(body, rnd)

    for rnd in (1, 2):
        threads = [threading.Thread(target=run, args=(rnd, k)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if rnd == 1:
            wait_for(lambda: len(redis.keys("predcache:v2:*")) == len(bodies),
                     what="every entry stored")
    print("wrong answers: %d" % len(wrong))
    assert not wrong, wrong[:3]
    assert all(results[(b, 2)] == "HIT" for b in bodies)
