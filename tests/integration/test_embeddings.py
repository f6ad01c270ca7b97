"""Embedding endpoints are cached by default (an embedding is a function of its input):
OpenAI-compatible /v1/embeddings, Ollama /api/embed and /api/embeddings, TEI /embed. The key
is the whole JSON body, so every field that changes the answer (model, input,
encoding_format, dimensions) is in it. They were forwarded uncached."""

import hashlib
import json

import pytest

from conftest import wait_for


def post(p, path, doc):
    body = json.dumps(doc)
    r = p.post(path, body=body)
    assert r.status_code == 200, r.text
    got = r.json()
    # the model server's answer to this request
    assert got["received"]["body_sha256"] == hashlib.sha256(body.encode()).hexdigest()
    return r


@pytest.mark.parametrize("path,field", [
    ("/v1/embeddings", "input"), ("/api/embed", "input"), ("/api/embeddings", "prompt"),
    ("/embed", "inputs"),
])
def test_embeddings_are_cached(start_predcache, model, redis, path, field):
    p = start_predcache()
    doc = {"model": "e5", field: ["a cat", "a dog"]}
    r1 = post(p, path, doc)
    assert r1.headers["X-Cache"] == "MISS"
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = p.post(path, body=json.dumps(doc))
    assert r2.headers["X-Cache"] == "HIT" and r2.content == r1.content
    assert model.count(path) == 1


def test_every_field_that_changes_the_answer_is_in_the_key(start_predcache, model, redis):
    p = start_predcache()
    base = {"model": "e5", "input": ["a cat"]}
    seen = {}
    for change in [{}, {"encoding_format": "base64"}, {"dimensions": 8}, {"model": "e6"},
                   {"input": ["a cat", "a dog"]}, {"input": "a cat"}]:
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
