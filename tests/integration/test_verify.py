"""Shadow verification ([cache] verify_sample, verify_compare, verify_float_tolerance,
verify_action): a sampled hit is answered from the cache as usual, and the same request
goes to the model server behind it; the answers are compared, counted by route and result,
a mismatch is logged with its key and, with verify_action = purge, its entry is deleted."""

import json
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT, wait_for

PREDICT = "/v1/models/m:predict"


def verify_conf(**cache):
    conf = {"cache": {"verify_sample": "1"}}
    conf["cache"].update({k: str(v) for k, v in cache.items()})
    return conf


def verify_counts(p):
    """{result: n} of predcache_verify_total, over every route."""
    out = {"match": 0, "mismatch": 0, "error": 0}
    for line in p.metrics_text().splitlines():
        if line.startswith("predcache_verify_total{"):
            result = line.split('result="')[1].split('"')[0]
            out[result] += int(float(line.rsplit(" ", 1)[1]))
    return out


def stats_verify(p):
    return requests.get(p.admin("/stats"), timeout=HTTP_TIMEOUT).json()["verify"]


def wait_checked(p, n, timeout=10):
    return wait_for(lambda: sum(verify_counts(p).values()) >= n and verify_counts(p),
                    timeout=timeout, what="%d shadow checks" % n)


def cached(p, redis, body):
    """Sends body until it is a HIT's content; returns the miss's answer."""
    first = p.post(PREDICT, json_body=body)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    redis.wait_key(first.headers["X-Cache-Key"])
    return first


def test_a_deterministic_model_matches(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf=verify_conf())
    first = cached(p, redis, {"instances": [1, 2]})
    before = model.count(PREDICT)
    hit = p.post(PREDICT, json_body={"instances": [1, 2]})
    assert hit.headers["X-Cache"] == "HIT" and hit.content == first.content
    counts = wait_checked(p, 1)
    assert counts == {"match": 1, "mismatch": 0, "error": 0}
    assert model.count(PREDICT) == before + 1  # the shadow call
    # The check is not a client request and its answer is not stored again.
    assert p.metric("predcache_verify_match_total") == 1
    assert p.metric("predcache_requests_total", cache="hit") == 1
    stats = stats_verify(p)
    assert stats["match"] == 1 and stats["mismatch"] == 0 and stats["mismatch_rate"] == 0


def test_the_route_label(start_predcache, model, redis):
    model.control(stable=True)
    conf = verify_conf()
    conf["route tf"] = {"match": "POST /v1/models/*:predict"}
    p = start_predcache(conf=conf)
    cached(p, redis, {"instances": [7]})
    p.post(PREDICT, json_body={"instances": [7]})
    wait_checked(p, 1)
    assert 'predcache_verify_total{route="tf",result="match"} 1' in p.metrics_text()


def test_off_by_default_no_shadow_calls(start_predcache, model, redis):
    p = start_predcache()
    cached(p, redis, {"instances": [3]})
    before = model.count()
    for _ in range(20):
        assert p.post(PREDICT, json_body={"instances": [3]}).headers["X-Cache"] == "HIT"
    time.sleep(0.3)
    assert model.count() == before
    assert verify_counts(p) == {"match": 0, "mismatch": 0, "error": 0}
    assert stats_verify(p)["mismatch_rate"] is None


def test_a_changed_answer_is_found_and_logged(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf=verify_conf())
    first = cached(p, redis, {"instances": [4]})
    key = first.headers["X-Cache-Key"]
    model.control(body='{"predictions": ["something else"]}')
    hit = p.post(PREDICT, json_body={"instances": [4]})
    assert hit.headers["X-Cache"] == "HIT" and hit.content == first.content  # answered as usual
    assert wait_checked(p, 1)["mismatch"] == 1
    assert wait_for(lambda: "verify: mismatch" in p.stderr_text() + p.stdout_text(),
                    what="the mismatch warning")
    log = p.stderr_text() + p.stdout_text()
    line = [ln for ln in log.splitlines() if "verify: mismatch" in ln][0]
    assert key in line and "purged" not in line
    assert redis.exists(key) == 1  # verify_action = log keeps the entry
    assert p.post(PREDICT, json_body={"instances": [4]}).headers["X-Cache"] == "HIT"
    stats = stats_verify(p)
    assert stats["mismatch"] >= 1 and stats["mismatch_rate"] > 0


@pytest.mark.parametrize("l1", ["0", "4m"], ids=["redis", "l1"])
def test_purge_removes_the_mismatched_entry(start_predcache, model, redis, l1):
    model.control(stable=True)
    p = start_predcache(conf=verify_conf(verify_action="purge", l1_max_bytes=l1))
    first = cached(p, redis, {"instances": [5]})
    key = first.headers["X-Cache-Key"]
    assert p.post(PREDICT, json_body={"instances": [5]}).headers["X-Cache"] == "HIT"
    wait_checked(p, 1)
    model.control(body='{"predictions": ["retrained"]}')  # the model changed its answer
    assert p.post(PREDICT, json_body={"instances": [5]}).headers["X-Cache"] == "HIT"
    assert wait_checked(p, 2)["mismatch"] == 1
    wait_for(lambda: redis.exists(key) == 0, what="the purged entry to leave Redis")
    again = p.post(PREDICT, json_body={"instances": [5]})
    assert again.headers["X-Cache"] == "MISS"  # neither Redis nor the in-process tier has it
    assert json.loads(again.content) == {"predictions": ["retrained"]}


def test_purge_reaches_another_process(start_predcache, model, redis):
    model.control(stable=True)
    a = start_predcache(conf=verify_conf(verify_action="purge", l1_max_bytes="4m"))
    b = start_predcache(conf={"cache": {"l1_max_bytes": "4m", "l1_ttl_ms": "60000"}})
    key = cached(a, redis, {"instances": [6]}).headers["X-Cache-Key"]
    assert b.post(PREDICT, json_body={"instances": [6]}).headers["X-Cache"] == "HIT"  # in b's l1
    model.control(body='{"predictions": ["new"]}')
    assert a.post(PREDICT, json_body={"instances": [6]}).headers["X-Cache"] == "HIT"
    wait_checked(a, 1)
    wait_for(lambda: redis.exists(key) == 0, what="the purge")
    # b heard the announcement: its tier no longer answers the old prediction.
    wait_for(lambda: b.post(PREDICT, json_body={"instances": [6]}).headers["X-Cache"] != "HIT",
             what="b's tier to drop the entry")


def test_json_compare_with_tolerance(start_predcache, model, redis):
    model.control(body='{"predictions": [0.5, 2000.0], "model": "m"}')
    p = start_predcache(conf=verify_conf(verify_compare="json", verify_float_tolerance="1e-6"))
    cached(p, redis, {"instances": [8]})
    # Reordered members, other spacing, numbers within the tolerance (relative above 1).
    model.control(body='{"model":"m","predictions":[0.5000000001, 2000.0000015]}')
    p.post(PREDICT, json_body={"instances": [8]})
    assert wait_checked(p, 1) == {"match": 1, "mismatch": 0, "error": 0}
    model.control(body='{"model":"m","predictions":[0.50001, 2000.0]}')
    p.post(PREDICT, json_body={"instances": [8]})
    assert wait_checked(p, 2) == {"match": 1, "mismatch": 1, "error": 0}


def test_bytes_compare_sees_any_difference(start_predcache, model, redis):
    model.control(body='{"predictions": [0.5]}')
    p = start_predcache(conf=verify_conf())
    cached(p, redis, {"instances": [9]})
    model.control(body='{"predictions":[0.5]}')  # the same JSON, other bytes
    p.post(PREDICT, json_body={"instances": [9]})
    assert wait_checked(p, 1)["mismatch"] == 1


def test_a_model_server_error_is_no_mismatch(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf=verify_conf(verify_action="purge"))
    key = cached(p, redis, {"instances": [10]}).headers["X-Cache-Key"]
    model.control(status=503, body='{"error": "overloaded"}')
    assert p.post(PREDICT, json_body={"instances": [10]}).headers["X-Cache"] == "HIT"
    assert wait_checked(p, 1) == {"match": 0, "mismatch": 0, "error": 1}
    assert redis.exists(key) == 1


def test_never_when_the_model_server_is_down(start_predcache, model, redis):
    model.control(stable=True)
    conf = verify_conf()
    conf["backend"] = {"health_path": "/v1/models/m", "health_interval_ms": "50",
                       "health_fails": "1"}
    p = start_predcache(conf=conf)
    cached(p, redis, {"instances": [11]})
    model.stop()
    wait_for(lambda: p.metric("predcache_backend_up") == 0, what="the backend to be marked down")
    for _ in range(5):
        assert p.post(PREDICT, json_body={"instances": [11]}).headers["X-Cache"] == "HIT"
    time.sleep(0.3)
    assert verify_counts(p) == {"match": 0, "mismatch": 0, "error": 0}
    assert p.metric("predcache_verify_skipped_total") == 5


def test_sampling_fraction(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf=verify_conf(verify_sample="0.25"))
    cached(p, redis, {"instances": [12]})
    for _ in range(400):
        assert p.post(PREDICT, json_body={"instances": [12]}).headers["X-Cache"] == "HIT"
    time.sleep(0.5)
    checked = sum(verify_counts(p).values())
    # Binomial(400, 0.25): mean 100, sd 8.7; these bounds are more than 5 sd away.
    assert 50 <= checked <= 150, checked


def test_batch_hits_are_verified_and_purged_instance_by_instance(start_predcache, model, redis):
    model.control(stable=True)
    p = start_predcache(conf=verify_conf(verify_action="purge", per_instance="on"))
    first = p.post(PREDICT, json_body={"instances": ["a", "b"]})
    assert first.headers["X-Cache"] == "MISS"
    hit = wait_for(lambda: (lambda r: r.headers["X-Cache"] == "HIT" and r)(
        p.post(PREDICT, json_body={"instances": ["a", "b"]})), what="a batch hit")
    assert wait_checked(p, 1) == {"match": 1, "mismatch": 0, "error": 0}
    model.control(body='{"predictions": ["x", "y"]}')
    assert p.post(PREDICT, json_body={"instances": ["a", "b"]}).headers["X-Cache"] == "HIT"
    assert wait_checked(p, 2)["mismatch"] == 1
    # Both instances' entries are gone: the next request sends both to the model server.
    wait_for(lambda: p.post(PREDICT, json_body={"instances": ["a", "b"]}).headers["X-Cache"]
             == "MISS", what="the batch's entries to be purged")
    assert hit.status_code == 200


def test_config_errors(predcache_bin, tmp_path):
    import subprocess
    for line, why in (("verify_sample = 2", "out of range"),
                      ("verify_compare = xml", "must be one of bytes, json"),
                      ("verify_action = drop", "must be one of log, purge"),
                      ("verify_float_tolerance = -1", "out of range"),
                      ("verify_sample = 0x1", "not a decimal number")):
        conf = tmp_path / "bad.conf"
        conf.write_text("[cache]\n%s\n" % line)
        r = subprocess.run([predcache_bin, "-c", str(conf), "--check"], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 1 and why in r.stderr and "bad.conf:2" in r.stderr, r.stderr
