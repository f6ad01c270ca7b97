"""Ollama through predcache: /api/generate and /api/chat are default routes of the ollama
family. A generation is cached only when deterministic: "options": {"temperature": 0} (a
number); absent, the server samples, so it passes uncached (X-Cache: PASS, X-Cache-Reason:
non-deterministic) unless absent_temperature = greedy ([cache] or the route's section).
Generations stream by default (newline-delimited JSON, chunked) unless "stream": false: a
deterministic stream is passed on as it comes on a miss, stored once whole, and replayed
byte for byte on a hit. "stream": false is another body, so another entry. /api/embed
stays cached as before.

The test model server's generations name their call number and the digest of the body
they answered (tests/fixtures/model_server.py, ollama()): a replay keeps the first call's
number, and the model's counter does not move."""

import hashlib
import json
import threading

import pytest
import requests

from conftest import HTTP_TIMEOUT, wait_for

GENERATE = "/api/generate"
CHAT = "/api/chat"
NDJSON = "application/x-ndjson"
PARTS = 3  # the test model server's default stream_events


def gen_body(prompt, temperature=0, stream=None, path=GENERATE, **extra):
    """An Ollama request body (bytes); temperature None: no "temperature" in "options"."""
    doc = {"model": "llama3"}
    if path == CHAT:
        doc["messages"] = [{"role": "user", "content": prompt}]
    else:
        doc["prompt"] = prompt
    options = {"seed": 42}
    if temperature is not None:
        options["temperature"] = temperature
    doc["options"] = options
    if stream is not None:
        doc["stream"] = stream
    doc.update(extra)
    return json.dumps(doc).encode()


def post(p, path, body):
    """Sends body and reads the whole answer (a stream included); returns the Response,
    its content read."""
    r = requests.post(p.url(path), data=body, headers={"Content-Type": "application/json"},
                      stream=True, timeout=HTTP_TIMEOUT)
    try:
        r._content = b"".join(r.iter_content(chunk_size=None))
    finally:
        r.close()
    assert r.status_code == 200, (r.status_code, r.content[:300])
    return r


def parts_of(data):
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def assert_answers(body, r, stream=True):
    """r is the model server's answer to body: NDJSON parts (or one object) naming it."""
    digest = hashlib.sha256(body).hexdigest()[:16]
    model = json.loads(body)["model"]
    if not stream:
        doc = json.loads(r.content)
        assert doc["prompt_sha"] == digest and doc["done"] is True and doc["model"] == model
        return [doc]
    parts = parts_of(r.content)
    assert len(parts) == PARTS + 1, r.content
    assert all(part["prompt_sha"] == digest and part["model"] == model for part in parts)
    assert [part["done"] for part in parts] == [False] * PARTS + [True]
    assert len({part["call"] for part in parts}) == 1
    return parts


def assert_streamed(r):
    assert r.headers["Content-Type"] == NDJSON, r.headers
    assert "Content-Length" not in r.headers, r.headers
    assert r.headers.get("Transfer-Encoding") == "chunked", r.headers


def entries(redis):
    return [k for k in redis.keys("predcache:v2:*") if not k.endswith(":lock")]


def cached_twice(p, model, redis, path, body, stream=True):
    """body answered MISS (stored once whole), then HIT with the same bytes and no model
    call. Returns (miss, hit)."""
    calls = model.count(path)
    r1 = post(p, path, body)
    assert r1.headers["X-Cache"] == "MISS", r1.headers
    assert "X-Cache-Reason" not in r1.headers, r1.headers
    parts = assert_answers(body, r1, stream)
    if stream:
        assert_streamed(r1)
    key = r1.headers["X-Cache-Key"]
    redis.wait_key(key)
    r2 = post(p, path, body)
    assert r2.headers["X-Cache"] == "HIT", r2.headers
    assert r2.headers["X-Cache-Key"] == key
    assert r2.content == r1.content, (r1.content, r2.content)
    assert parts_of(r2.content) == parts
    assert r2.headers["Content-Type"] == r1.headers["Content-Type"]
    assert model.count(path) == calls + 1, "a hit called the model"
    return r1, r2


def passed_uncached(p, model, path, body, reason="non-deterministic", stream=True):
    """body answered PASS with reason, by the model each time (twice), streamed through."""
    before = p.metric("predcache_uncached_total", reason=reason)
    calls = model.count(path)
    answers = []
    for _ in range(2):
        r = post(p, path, body)
        assert r.headers["X-Cache"] == "PASS", r.headers
        assert r.headers.get("X-Cache-Reason") == reason, r.headers
        assert "X-Cache-Key" not in r.headers, r.headers
        if stream:
            assert_streamed(r)
        answers.append(assert_answers(body, r, stream))
    assert answers[0][0]["call"] != answers[1][0]["call"]  # each its own model call
    assert model.count(path) == calls + 2
    assert p.metric("predcache_uncached_total", reason=reason) == before + 2
    return answers


def assert_nothing_stored_but(p, model, redis, keep=()):
    """No entry in Redis but keep's: a deterministic generation sent after the passes is
    stored, and its entry alone reaches Redis (stores go out in order)."""
    r = post(p, GENERATE, gen_body("barrier %d" % len(keep)))
    assert r.headers["X-Cache"] == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    assert sorted(entries(redis)) == sorted(list(keep) + [r.headers["X-Cache-Key"]])


# --------------------------------------------------------------------------- generate


def test_deterministic_streamed_generation_miss_then_hit_byte_identical(start_predcache,
                                                                        model, redis):
    p = start_predcache()
    body = gen_body("why is the sky blue?", temperature=0)
    r1, r2 = cached_twice(p, model, redis, GENERATE, body)
    assert parts_of(r2.content)[0]["call"] == parts_of(r1.content)[0]["call"]
    assert model.count() == 1
    assert entries(redis) == [r1.headers["X-Cache-Key"]]  # stored once, whole
    # 0.0 is the number 0 too
    cached_twice(p, model, redis, GENERATE, gen_body("why is the sky blue?", temperature=0.0,
                                                     keep_alive="5m"))


def test_stream_false_is_its_own_entry(start_predcache, model, redis):
    p = start_predcache()
    streamed, _ = cached_twice(p, model, redis, GENERATE, gen_body("hello", 0))
    whole, hit = cached_twice(p, model, redis, GENERATE, gen_body("hello", 0, stream=False),
                              stream=False)
    assert whole.headers["X-Cache-Key"] != streamed.headers["X-Cache-Key"]
    assert whole.headers["Content-Type"] == "application/json"
    assert json.loads(hit.content)["response"] == "".join("t%d " % i for i in range(PARTS))
    assert json.loads(hit.content)["call"] != parts_of(streamed.content)[0]["call"]
    # "stream": true is what the default means, but another body: its own entry as well
    explicit, _ = cached_twice(p, model, redis, GENERATE, gen_body("hello", 0, stream=True))
    assert len({r.headers["X-Cache-Key"] for r in (streamed, whole, explicit)}) == 3
    assert model.count(GENERATE) == 3


def test_absent_temperature_passes_non_deterministic(start_predcache, model, redis):
    p = start_predcache()
    body = gen_body("tell me a story", temperature=None)
    passed_uncached(p, model, GENERATE, body)
    assert entries(redis) == []
    # stream false, the same rule
    passed_uncached(p, model, GENERATE, gen_body("tell me a story", None, stream=False),
                    stream=False)
    assert_nothing_stored_but(p, model, redis)


@pytest.mark.parametrize("how", [
    {"temperature": 0.8},
    {"temperature": 1},
    {"temperature": "0"},        # not a number: Ollama refuses or reads it otherwise
    {"temperature": None},       # null: the server's default, which samples
    {"root": 0},                 # Ollama reads "options"; a root "temperature" is not its
])
def test_sampling_temperature_passes(start_predcache, model, redis, how):
    p = start_predcache()
    doc = json.loads(gen_body("a poem", temperature=None))
    if "root" in how:
        doc["temperature"] = how["root"]
    else:
        doc["options"]["temperature"] = how["temperature"]
    body = json.dumps(doc).encode()
    passed_uncached(p, model, GENERATE, body)
    assert_nothing_stored_but(p, model, redis)


@pytest.mark.parametrize("section", ["route", "cache"])
def test_absent_temperature_greedy_caches(start_predcache, model, redis, section):
    if section == "route":
        conf = {"route gen": {"match": "POST " + GENERATE, "absent_temperature": "greedy"}}
    else:
        conf = {"cache": {"absent_temperature": "greedy"}}
    p = start_predcache(conf=conf)
    body = gen_body("greedy by default", temperature=None)
    cached_twice(p, model, redis, GENERATE, body)
    # a sampling temperature still passes
    passed_uncached(p, model, GENERATE, gen_body("greedy by default", temperature=0.7))
    # the route section is for /api/generate only; [cache] covers chat too
    chat = gen_body("greedy by default", temperature=None, path=CHAT)
    if section == "route":
        passed_uncached(p, model, CHAT, chat)
    else:
        cached_twice(p, model, redis, CHAT, chat)


# --------------------------------------------------------------------------- chat


def test_chat_follows_the_same_rule(start_predcache, model, redis):
    p = start_predcache()
    body = gen_body("hi there", temperature=0, path=CHAT)
    r1, r2 = cached_twice(p, model, redis, CHAT, body)
    cached_twice(p, model, redis, CHAT, gen_body("hi there", 0, stream=False, path=CHAT),
                 stream=False)
    passed_uncached(p, model, CHAT, gen_body("hi there", temperature=None, path=CHAT))
    passed_uncached(p, model, CHAT, gen_body("hi there", temperature=0.5, path=CHAT))
    # the same prompt on /api/generate is another route: no entry shared
    g = post(p, GENERATE, gen_body("hi there", temperature=0))
    assert g.headers["X-Cache"] == "MISS"
    assert g.headers["X-Cache-Key"] != r1.headers["X-Cache-Key"]


# --------------------------------------------------------------------------- embeddings


def test_embed_keeps_being_cached(start_predcache, model, redis):
    p = start_predcache()
    for path, doc in (("/api/embed", {"model": "nomic-embed-text", "input": ["a", "b"]}),
                      ("/api/embeddings", {"model": "nomic-embed-text", "prompt": "a"})):
        body = json.dumps(doc).encode()
        r1 = post(p, path, body)
        assert r1.headers["X-Cache"] == "MISS", r1.headers
        assert r1.json()["received"]["body_sha256"] == hashlib.sha256(body).hexdigest()
        redis.wait_key(r1.headers["X-Cache-Key"])
        r2 = post(p, path, body)
        assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content, r2.headers
        assert model.count(path) == 1


def test_integrity_of_cached_generations(start_predcache, model, redis):
    """300 distinct deterministic generations (streamed and not, generate and chat), each
    sent twice by 6 threads: every answer must name the body it answers (prompt_sha in each
    part), and the second round comes from the cache."""
    p = start_predcache()
    bodies = [gen_body("prompt %d" % i, path=CHAT if i % 3 == 0 else GENERATE,
                       stream=(i % 2 == 0) or None) for i in range(300)]
    paths = [CHAT if i % 3 == 0 else GENERATE for i in range(300)]
    wrong, labels, lock = [], {}, threading.Lock()

    def run(rnd, part):
        for i in range(part, len(bodies), 6):
            body, path = bodies[i], paths[i]
            stream = json.loads(body).get("stream", True)
            r = post(p, path, body)
            try:
                assert_answers(body, r, stream=stream)
                ok = True
            except AssertionError:
                ok = False
            with lock:
                labels[(rnd, i)] = r.headers.get("X-Cache")
                if not ok:
                    wrong.append((path, body[:80], r.content[:200]))

    for rnd in (1, 2):
        threads = [threading.Thread(target=run, args=(rnd, k)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if rnd == 1:
            wait_for(lambda: len(entries(redis)) == len(bodies), what="every entry stored")
    print("wrong answers: %d" % len(wrong))
    assert not wrong, wrong[:3]
    assert all(labels[(2, i)] == "HIT" for i in range(len(bodies)))
