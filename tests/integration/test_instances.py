"""Per-instance caching of TF Serving batches: {"instances": [...]} requests are cached
instance by instance; only the missing ones reach the model server, and the answer is
byte for byte what the model server gives for the whole batch (but for the test model's
"received" digest, which names the call whose layout the answer carries)."""

import json
import random
import re

import pytest
import requests

from conftest import (HTTP_TIMEOUT, expected_key, parse_envelope, wait_for,
                      without_received)

PREDICT = "/v1/models/m:predict"


@pytest.fixture
def ip(start_predcache, model):
    """predcache with per-instance caching on, and a model whose answers are byte-stable."""
    model.control(stable=True)
    return start_predcache(conf={"cache": {"per_instance": "on"}})


def direct(model, body, path=PREDICT):
    """The model server's own answer for the whole batch (bypassing predcache)."""
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    r = requests.post(model.url(path), data=data, timeout=HTTP_TIMEOUT,
                      headers={"Content-Type": "application/json"})
    return r


def post(p, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return p.post(PREDICT, body=data, headers=headers)


def sent_instances(model):
    return json.loads(model.last()["body"])["instances"]


def key_number(text):
    """A JSON number as the key's canonical form writes it (cachekey.h, canon.h):
    ["-"] D ["e" E], D the significant digits, E only when nonzero, every zero "0"."""
    m = re.match(r"^(-?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$", text)
    assert m, text
    sign, frac = m.group(1), m.group(3) or ""
    digits = (m.group(2) + frac).lstrip("0")
    exp = int(m.group(4) or 0) - len(frac)
    if not digits:
        return "0"
    exp += len(digits) - len(digits.rstrip("0"))
    digits = digits.rstrip("0")
    return sign + digits + ("e%d" % exp if exp else "")


def key_canonical(value):
    """canonical(value) with numbers in the key's form (1.0 and 1 are both "1", 0.5 is
    "5e-1"); conftest.canonical() is the test model's own form, which keeps Python's."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return key_number(repr(value) if isinstance(value, float) else str(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(key_canonical(v) for v in value) + "]"
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + key_canonical(value[k])
                          for k in sorted(value)) + "}"


def instance_key(x, signature=None):
    """The Redis key of one instance (cachekey.h, v2): the batch's head, then the material
    "instance\n" canonical(context) "\n" canonical(x), the context being the members the
    model server reads besides "instances": {"signature_name": ...} when the body names
    one, else {}."""
    context = {} if signature is None else {"signature_name": signature}
    return expected_key(PREDICT, "%s\n%s" % (key_canonical(context), key_canonical(x)),
                        form="instance")


def cached_prediction(redis, x):
    """The prediction bytes stored for instance x (the "PI1" value inside the envelope)."""
    body = parse_envelope(redis.get(instance_key(x)))["body"]
    head, sizes, rest = body.split(b"\n", 2)
    assert head == b"PI1", body[:40]
    a, b, c = (int(n) for n in sizes.split(b" "))
    return rest[a + b + c:]


def split_predictions(body):
    """The test model's answer as (text before the array, [each prediction's bytes],
    separator, text after): its predictions are hex strings, so no nesting to care about."""
    m = re.match(rb'^(.*?"predictions": \[)(.*?)(\].*)$', body, re.S)
    assert m, body[:200]
    items = m.group(2).split(b", ") if m.group(2) else []
    return m.group(1), items, b", ", m.group(3)


def stores(p):
    return p.metric("predcache_store_ok_total")


def wait_stores(p, n):
    wait_for(lambda: stores(p) >= n, what="%d stores" % n)


def test_miss_then_hit_byte_identical(ip, model):
    batch = {"instances": [1, "two", {"x": [3, 4]}]}
    expect = direct(model, batch).content
    r = post(ip, batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/3")
    assert r.content == expect
    assert "X-Cache-Key" not in r.headers
    wait_stores(ip, 3)
    before = model.count(PREDICT)
    r = post(ip, batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "3/3")
    assert r.content == expect
    assert r.headers["Content-Type"] == "application/json"
    assert int(r.headers["Age"]) >= 0
    assert model.count(PREDICT) == before


def test_partial_sends_only_missing_in_relative_order(ip, model):
    post(ip, {"instances": ["b", "d"]})
    wait_stores(ip, 2)
    batch = {"instances": ["a", "b", "c", "d", "e"]}
    r = post(ip, batch)
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("PARTIAL", "2/5")
    assert sent_instances(model) == ["a", "c", "e"]
    assert without_received(r.content) == without_received(direct(model, batch).content)


def test_duplicates_inside_a_batch_are_sent_once(ip, model):
    batch = {"instances": ["a", "b", "a", "a", "c", "b"]}
    r = post(ip, batch)
    assert r.headers["X-Cache"] == "MISS"
    assert sent_instances(model) == ["a", "b", "c"]
    assert without_received(r.content) == without_received(direct(model, batch).content)
    wait_stores(ip, 3)
    r = post(ip, {"instances": ["c", "a", "c"]})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("HIT", "3/3")
    assert without_received(r.content) == without_received(
        direct(model, {"instances": ["c", "a", "c"]}).content)


def test_single_instance_and_signature_name(ip, model, redis):
    r = post(ip, {"instances": [[0.5, 1.25]]})
    assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/1")
    key = r.headers["X-Cache-Key"]  # one distinct instance: its key, e.g. to purge it
    assert key == instance_key([0.5, 1.25])
    redis.wait_key(key)
    h = post(ip, {"instances": [[0.5, 1.25], [0.5, 1.25]]})
    assert h.headers["X-Cache"] == "HIT" and h.headers["X-Cache-Key"] == key
    # Another signature is another function of the model: never the same entry.
    r = post(ip, {"signature_name": "other", "instances": [[0.5, 1.25]]})
    assert r.headers["X-Cache"] == "MISS"
    assert r.headers["X-Cache-Key"] == instance_key([0.5, 1.25], signature="other")
    assert json.loads(model.last()["body"])["signature_name"] == "other"


def test_cosmetic_differences_share_instance_entries(ip, model):
    post(ip, {"instances": [{"a": 1, "b": [1.0, 2]}], "request_id": "r1"})
    wait_stores(ip, 1)
    r = post(ip, '{ "request_id": "r2", "instances" : [ {"b":[1, 2.0] , "a":1.0} ] }')
    assert r.headers["X-Cache"] == "HIT"


def test_empty_list_gets_the_model_servers_400(ip, model, redis):
    before = model.count(PREDICT)
    r = post(ip, {"instances": []})
    assert r.status_code == 400
    assert "error" in r.json()
    # It came from the model server: one call reached it, and the answer is its own.
    assert model.count(PREDICT) == before + 1
    assert json.loads(model.last()["body"]) == {"instances": []}
    own = direct(model, {"instances": []})
    assert own.status_code == 400
    assert r.content == own.content, "byte for byte the model server's answer"
    assert r.headers["Content-Type"] == own.headers["Content-Type"]
    # Nothing stored; the miss's cross-process lock is released just after the answer.
    wait_for(lambda: redis.keys() == [], what="no keys left in Redis")


@pytest.mark.parametrize("mangle", ["reverse", "short", "extra", "none"])
def test_bad_model_answers_pass_through_and_store_nothing(ip, model, redis, mangle):
    post(ip, {"instances": ["p", "q"]})  # cached, to force a partial batch below
    wait_stores(ip, 2)
    cached = {x: cached_prediction(redis, x) for x in ("p", "q")}
    values_before = {x: redis.get(instance_key(x)) for x in ("p", "q")}
    keys_before = sorted(redis.keys())
    assert keys_before == sorted(instance_key(x) for x in ("p", "q"))
    model.control(stable=True, mangle=mangle)
    batch = {"instances": ["p", "x", "y", "q", "z"]}
    r = post(ip, batch)
    assert r.status_code == 200
    assert sent_instances(model) == ["x", "y", "z"]  # only the missing ones, in order
    # The model's own answer to that sub-request (it is deterministic from the input).
    expected = direct(model, {"instances": ["x", "y", "z"]}).content
    if mangle == "reverse":
        # Same length, wrong order: a proxy cannot tell it from a right answer (documented),
        # so it is merged as given. The merge itself must be faithful: the cached positions
        # hold exactly their cached predictions, the missing positions exactly the model's
        # predictions in the order the model gave them, in the model's own layout.
        assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("PARTIAL", "2/5")
        prefix, model_preds, sep, suffix = split_predictions(expected)
        assert len(model_preds) == 3
        merged = [cached["p"], model_preds[0], model_preds[1], cached["q"], model_preds[2]]
        assert without_received(r.content) == without_received(prefix + sep.join(merged) + suffix)
        preds = r.json()["predictions"]
        assert [preds[0], preds[3]] == [json.loads(cached["p"]), json.loads(cached["q"])]
        assert [preds[1], preds[2], preds[4]] == json.loads(expected)["predictions"]
        # The cached entries are untouched (the new ones hold what the model said).
        assert {x: redis.get(instance_key(x)) for x in ("p", "q")} == values_before
        for x, pred in zip(("x", "y", "z"), model_preds):
            wait_for(lambda: redis.get(instance_key(x)), what="%s stored" % x)
            assert cached_prediction(redis, x) == pred
    else:
        # the model's answer to the sub-batch, unchanged
        assert without_received(r.content) == without_received(expected)
        assert r.headers["Content-Type"] == "application/json"
        wait_for(lambda: ip.metric("predcache_requests_total", cache="partial") >= 1,
                 what="counted")
        wait_for(lambda: "passed through, nothing stored" in ip.stdout_text() + ip.stderr_text(),
                 what="the pass-through warning")
        assert stores(ip) == 2
        assert sorted(redis.keys()) == keys_before  # nothing stored
        for x in ("x", "y", "z"):
            assert redis.exists(instance_key(x)) == 0, x
        assert {x: redis.get(instance_key(x)) for x in ("p", "q")} == values_before
        model.control(stable=True)
        r = post(ip, {"instances": ["x", "y", "z"]})
        assert (r.headers["X-Cache"], r.headers["X-Cache-Hits"]) == ("MISS", "0/3")


def test_model_error_passes_through_and_nothing_is_stored(ip, model, redis):
    model.control(status=503, body='{"error": "overloaded"}')
    r = post(ip, {"instances": ["e1", "e2"]})
    assert r.status_code == 503
    assert r.json() == {"error": "overloaded"}
    model.control(stable=True)
    r = post(ip, {"instances": ["e1", "e2"]})
    assert r.headers["X-Cache"] == "MISS"


def test_no_cache_and_no_store(ip, model, redis):
    post(ip, {"instances": ["n1"]})
    wait_stores(ip, 1)
    r = post(ip, {"instances": ["n1", "n2"]}, headers={"Cache-Control": "no-cache"})
    assert r.headers["X-Cache"] == "MISS"
    assert sent_instances(model) == ["n1", "n2"]
    wait_stores(ip, 3)
    r = post(ip, {"instances": ["n3"]}, headers={"Cache-Control": "no-store"})
    assert r.headers["X-Cache"] == "MISS"
    wait_for(lambda: ip.metric("predcache_store_skipped_total") >= 1, what="skipped")
    assert post(ip, {"instances": ["n3"]}).headers["X-Cache"] == "MISS"


def test_compact_model_output_layout_is_kept(ip, model):
    model.control(stable=True, compact=True)
    for x in ("c1", "c2", "c3"):
        post(ip, {"instances": [x]})  # one at a time: no separator seen between predictions
    wait_stores(ip, 3)
    batch = {"instances": ["c3", "c1", "c2"]}
    r = post(ip, batch)
    assert r.headers["X-Cache"] == "HIT"
    assert without_received(r.content) == without_received(direct(model, batch).content)


def test_redis_down_is_bypass_with_the_right_answer(ip, model, redis):
    redis.kill()
    batch = {"instances": ["r1", "r2", "r1"]}
    r = post(ip, batch)
    assert r.status_code == 200
    assert r.headers["X-Cache"] == "BYPASS"
    assert without_received(r.content) == without_received(direct(model, batch).content)


def test_columnar_inputs_are_cached_per_body(ip, model):
    r = post(ip, {"inputs": {"x": [[1, 2]]}})
    assert r.headers["X-Cache"] == "MISS"
    assert "X-Cache-Key" in r.headers
    wait_stores(ip, 1)
    assert post(ip, {"inputs": {"x": [[1, 2]]}}).headers["X-Cache"] == "HIT"


def test_classify_routes_are_cached_per_body(ip, model):
    path = "/v1/models/m:classify"
    r = ip.post(path, json_body={"instances": [1, 2]})
    assert r.headers["X-Cache"] == "MISS"
    assert "X-Cache-Key" in r.headers


def test_randomized_batches_match_the_model(ip, model):
    """Property: for random batches (duplicates, cosmetic variants, any mix of cached and
    new instances), the answer is byte for byte the model's answer to the whole batch,
    the hit count is the number of positions seen before, and only unseen instances are
    sent, once each, in order of first appearance."""
    rng = random.Random(20261121)
    pool = [i for i in range(6)] + ["s%d" % i for i in range(6)] + [
        {"k": i, "v": [i, i / 4]} for i in range(6)] + [[i, [i, i + 1]] for i in range(6)]

    def variant(x):
        # Same value, other spelling: key order and whitespace never split the cache.
        if isinstance(x, dict):
            items = list(x.items())
            rng.shuffle(items)
            return "{" + " , ".join('%s: %s' % (json.dumps(k), json.dumps(v))
                                    for k, v in items) + "}"
        return json.dumps(x) if rng.random() < 0.5 else " %s " % json.dumps(x)

    seen = set()
    stored = 0
    for _ in range(40):
        n = rng.randint(1, 9)
        batch = [rng.choice(pool) for _ in range(n)]
        body = '{"instances": [' + ",".join(variant(x) for x in batch) + "]}"
        keys = [json.dumps(x, sort_keys=True) for x in batch]
        expect_hits = sum(1 for k in keys if k in seen)
        expect_sent = []
        for x, k in zip(batch, keys):
            if k not in seen and k not in [json.dumps(s, sort_keys=True) for s in expect_sent]:
                expect_sent.append(x)
        calls = model.count(PREDICT)
        r = post(ip, body)
        sent = sent_instances(model) if expect_sent else None
        assert r.status_code == 200
        assert without_received(r.content) == without_received(
            direct(model, {"instances": batch}).content), body
        assert r.headers["X-Cache-Hits"] == "%d/%d" % (expect_hits, n), body
        if expect_sent:
            assert sent == expect_sent, body
            assert model.count(PREDICT) == calls + 2  # one proxied call, one direct
            assert r.headers["X-Cache"] == ("PARTIAL" if expect_hits else "MISS")
        else:
            assert model.count(PREDICT) == calls + 1  # only the direct call
            assert r.headers["X-Cache"] == "HIT"
        stored += len(expect_sent)
        seen.update(keys)
        wait_stores(ip, stored)
