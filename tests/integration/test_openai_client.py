"""The official openai client (npm, under node) pointed at predcache instead of the model
server: embeddings come back the same, the second time from the cache; a streamed chat
completion is read event by event as the client reads a real server's, and a deterministic
one (temperature 0) is replayed from the cache as the same events. tests/node holds
the client (installed by scripts/bootstrap from its package-lock.json)."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

NODE_DIR = os.path.join(ROOT, "tests", "node")


@pytest.mark.skipif(shutil.which("node") is None or
                    not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "openai")),
                    reason="node or the openai package missing (scripts/bootstrap installs them)")
def test_the_official_openai_client_through_predcache(start_predcache, model, redis):
    p = start_predcache()
    model.control(stream_events=4)

    def run(base):
        r = subprocess.run(["node", os.path.join(NODE_DIR, "openai_check.js"), base],
                           capture_output=True, text=True, timeout=60, cwd=NODE_DIR)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    direct = run(model.url("/v1"))
    through = run(p.url("/v1"))
    first, second = through["embeddings"]
    assert (first["xcache"], second["xcache"]) == ("MISS", "HIT")
    assert first["vectors"] == second["vectors"] == direct["embeddings"][0]["vectors"]
    assert direct["embeddings"][0]["xcache"] is None  # the model server itself says nothing
    # the stream, event by event, as the client reads the model server's own
    assert through["stream"] == direct["stream"] == ["t0 ", "t1 ", "t2 ", "t3 "]
    # a deterministic streamed completion: stored as it passed, replayed on the second call,
    # and the client reads the replay exactly as it read the model server's stream
    (miss, hit) = through["replay"]
    assert (miss["xcache"], hit["xcache"]) == ("MISS", "HIT")
    assert hit["chunks"] == miss["chunks"] and len(miss["chunks"]) == 4
    assert [c["choices"][0]["delta"]["content"] for c in hit["chunks"]] == \
        [c["choices"][0]["delta"]["content"] for c in direct["replay"][0]["chunks"]]
