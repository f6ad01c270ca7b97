"""Embedding endpoints are cached by default (an embedding is a function of its input):
OpenAI-compatible /v1/embeddings, Ollama /api/embed and /api/embeddings, TEI /embed. A list
of inputs is cached input by input (with every other field of the body in each key: model,
encoding_format, dimensions, ...): a request whose inputs are partly cached sends only the
others to the model server, and the answer is merged in order (OpenAI's data[i].index is
renumbered). A single input, or an OpenAI list of token ids, is keyed as one body.

The test model server answers each family in its own shape (model_server.embeddings_answer):
an embedding is embedding_of(input), so every merged answer can be checked item by item."""

import hashlib
import json
import random
import threading

import pytest
import requests

from conftest import HTTP_TIMEOUT, wait_for
from oracle import model_server  # the model's own rules (tests/fixtures)

# the shipped default (the harness turns it off for the tests that pin per-body keys)
ITEMS = {"cache": {"per_instance": "on"}}

# path -> (the request's list member, how to read the answer's embeddings)
FAMILIES = {
    "/v1/embeddings": ("input", lambda doc: [d["embedding"] for d in doc["data"]]),
    "/api/embed": ("input", lambda doc: doc["embeddings"]),
    "/embed": ("inputs", lambda doc: doc),
}


def post(p, path, doc):
    r = p.post(path, body=json.dumps(doc))
    assert r.status_code == 200, r.text
    return r


def vectors_of(path, r):
    return FAMILIES[path][1](r.json())


def last_request(model):
    return requests.get(model.url("/_last"), timeout=HTTP_TIMEOUT).json()


@pytest.mark.parametrize("path", sorted(FAMILIES))
def test_a_list_is_cached_input_by_input(start_predcache, model, redis, path):
    field = FAMILIES[path][0]
    p = start_predcache(conf=ITEMS)
    doc = {"model": "e5", field: ["a cat", "a dog"]}
    r1 = post(p, path, doc)
    assert (r1.headers["X-Cache"], r1.headers["X-Cache-Hits"]) == ("MISS", "0/2")
    assert vectors_of(path, r1) == [model_server.embedding_of(x) for x in doc[field]]
    wait_for(lambda: len(redis.keys("predcache:v2:*")) == 2, what="two entries")
    # the same request: both from the cache, byte for byte the model's answer
    r2 = post(p, path, doc)
    assert (r2.headers["X-Cache"], r2.headers["X-Cache-Hits"]) == ("HIT", "2/2")
    assert r2.content == r1.content
    assert model.count(path) == 1
    # a list that shares one input: only the new one goes to the model server
    doc3 = {"model": "e5", field: ["a dog", "a bird"]}
    r3 = post(p, path, doc3)
    assert (r3.headers["X-Cache"], r3.headers["X-Cache-Hits"]) == ("PARTIAL", "1/2")
    sent = json.loads(last_request(model)["body"])
    assert sent[field] == ["a bird"] and sent["model"] == "e5"
    assert vectors_of(path, r3) == [model_server.embedding_of(x) for x in doc3[field]]
    if path == "/v1/embeddings":
        assert [d["index"] for d in r3.json()["data"]] == [0, 1]  # renumbered
    assert model.count(path) == 2


def test_openai_indexes_follow_the_merged_order(start_predcache, model, redis):
    p = start_predcache(conf=ITEMS)
    post(p, "/v1/embeddings", {"model": "e5", "input": ["c", "d", "e"]})
    wait_for(lambda: len(redis.keys("predcache:v2:*")) == 3, what="entries")
    r = post(p, "/v1/embeddings", {"model": "e5", "input": ["e", "x", "c", "e"]})
    assert r.headers["X-Cache"] == "PARTIAL"
    data = r.json()["data"]
    assert [d["index"] for d in data] == [0, 1, 2, 3]
    assert [d["embedding"] for d in data] == [model_server.embedding_of(x)
                                              for x in ["e", "x", "c", "e"]]


def test_ollama_single_prompt_is_one_body(start_predcache, model, redis):
    p = start_predcache(conf=ITEMS)
    doc = {"model": "e5", "prompt": "a cat"}
    r1 = post(p, "/api/embeddings", doc)
    assert r1.headers["X-Cache"] == "MISS"
    assert r1.json()["received"]["body_sha256"] == \
        hashlib.sha256(json.dumps(doc).encode()).hexdigest()
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = post(p, "/api/embeddings", doc)
    assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content


def test_token_ids_are_one_input(start_predcache, model, redis):
    """OpenAI: "input": [1, 2, 3] is one input of token ids, not three items."""
    p = start_predcache(conf=ITEMS)
    doc = {"model": "e5", "input": [101, 2023, 102]}
    r = post(p, "/v1/embeddings", doc)
    assert r.headers["X-Cache"] == "MISS" and "X-Cache-Hits" not in r.headers
    assert vectors_of("/v1/embeddings", r) == [model_server.embedding_of(doc["input"])]
    # lists of token-id lists are items
    r = post(p, "/v1/embeddings", {"model": "e5", "input": [[1, 2], [3]]})
    assert r.headers["X-Cache-Hits"] == "0/2"


def test_every_field_that_changes_the_answer_is_in_the_key(start_predcache, model, redis):
    p = start_predcache(conf=ITEMS)
    base = {"model": "e5", "input": ["a cat"]}
    seen = {}
    for change in [{}, {"encoding_format": "base64"}, {"dimensions": 8}, {"model": "e6"},
                   {"input": "a cat"}, {"user": "u1"}]:
        doc = dict(base, **change)
        r = post(p, "/v1/embeddings", doc)
        assert r.headers["X-Cache"] == "MISS", change  # none answered from another's entry
        seen[json.dumps(change)] = r.headers["X-Cache-Key"]
        wait_for(lambda: redis.exists(r.headers["X-Cache-Key"]) == 1, what="stored")
    assert len(set(seen.values())) == len(seen)
    # base64 was answered base64, and its replay too
    doc = dict(base, encoding_format="base64")
    r = p.post("/v1/embeddings", body=json.dumps(doc))
    assert r.headers["X-Cache"] == "HIT"
    assert isinstance(r.json()["data"][0]["embedding"], str)
    # an input cached under one encoding is not an item of another
    r = post(p, "/v1/embeddings", {"model": "e5", "input": ["a cat", "b"],
                                   "encoding_format": "base64"})
    assert r.headers["X-Cache-Hits"] == "1/2"
    assert all(isinstance(d["embedding"], str) for d in r.json()["data"])


def test_integrity_of_merged_embeddings(start_predcache, model, redis):
    """600 requests of 1 to 6 inputs drawn from 80, by 6 threads, on the three families:
    every embedding must be the one of the input at its position (wrong answers: 0), and
    the model server must have been asked each input at most a few times."""
    p = start_predcache(conf=ITEMS)
    rng = random.Random(7)
    words = ["w%d" % i for i in range(80)]
    jobs = []
    for i in range(600):
        path = sorted(FAMILIES)[i % 3]
        jobs.append((path, [rng.choice(words) for _ in range(rng.randint(1, 6))]))
    wrong, lock, labels = [], threading.Lock(), {}

    def run(part):
        for path, items in jobs[part::6]:
            field = FAMILIES[path][0]
            r = p.post(path, body=json.dumps({"model": "e5", field: items}))
            ok = r.status_code == 200 and \
                vectors_of(path, r) == [model_server.embedding_of(x) for x in items]
            if ok and path == "/v1/embeddings":
                ok = [d["index"] for d in r.json()["data"]] == list(range(len(items)))
            with lock:
                labels[r.headers.get("X-Cache")] = labels.get(r.headers.get("X-Cache"), 0) + 1
                if not ok:
                    wrong.append((path, items, r.status_code, r.text[:200]))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("wrong answers: %d, X-Cache %s" % (len(wrong), labels))
    assert not wrong, wrong[:3]
    assert labels.get("HIT", 0) + labels.get("PARTIAL", 0) > 300
