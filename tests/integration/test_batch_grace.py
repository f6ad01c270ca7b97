"""Grace for per-instance batches: a batch whose every instance is cached, some past their
TTL but within grace_s, is answered at once (X-Cache: STALE, Warning 110) and its stale
instances are refreshed behind the answer; with the model server down it is still answered."""

import json
import time

from conftest import wait_for

PREDICT = "/v1/models/m:predict"
CONF = {"cache": {"per_instance": "on", "ttl_s": "1", "grace_s": "60"}}


def warm(p, model, body):
    r = p.post(PREDICT, json_body=body)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.headers
    n = len({json.dumps(i) for i in body["instances"]})
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n, what="stores")
    return r


def test_stale_batch_answered_at_once_and_refreshed_behind(start_predcache, model):
    p = start_predcache(conf=CONF)
    model.control(stable=True)
    body = {"instances": [["g1"], ["g2"], ["g1"]]}
    first = warm(p, model, body)
    time.sleep(1.3)
    calls = model.count(PREDICT)
    r = p.post(PREDICT, json_body=body)
    assert r.status_code == 200
    assert r.headers["X-Cache"] == "STALE", r.headers
    assert r.headers["Warning"] == '110 - "Response is Stale"'
    assert int(r.headers["Age"]) >= 1
    assert r.content == first.content
    # One background call with each stale instance once, in request order.
    wait_for(lambda: model.count(PREDICT) == calls + 1, what="the background refresh")
    assert json.loads(model.last()["body"])["instances"] == [["g1"], ["g2"]]
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="refresh stored")
    r2 = p.post(PREDICT, json_body=body)
    assert r2.headers["X-Cache"] == "HIT", r2.headers
    assert r2.content == first.content
    assert p.metric("predcache_requests_total", cache="stale") == 1


def test_stale_batch_answered_while_the_model_server_is_down(start_predcache, model):
    p = start_predcache(conf=CONF)
    model.control(stable=True)
    body = {"instances": [["down1"], ["down2"]]}
    first = warm(p, model, body)
    model.stop()
    time.sleep(1.3)
    for _ in range(3):
        r = p.post(PREDICT, json_body=body)
        assert r.status_code == 200, r.text
        assert r.headers["X-Cache"] == "STALE"
        assert r.content == first.content
    # A batch with an instance that was never cached has no answer to fall back on.
    r = p.post(PREDICT, json_body={"instances": [["down1"], ["never"]]})
    assert r.status_code == 502 and "error" in r.json()


def test_stale_and_missing_instances_both_go_to_the_model(start_predcache, model):
    p = start_predcache(conf=CONF)
    model.control(stable=True)
    warm(p, model, {"instances": [["old"]]})
    time.sleep(1.3)
    calls = model.count(PREDICT)
    r = p.post(PREDICT, json_body={"instances": [["old"], ["new"]]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.headers
    assert model.count(PREDICT) == calls + 1
    assert json.loads(model.last()["body"])["instances"] == [["old"], ["new"]]


def test_no_stale_answer_past_grace(start_predcache, model):
    p = start_predcache(conf={"cache": {"per_instance": "on", "ttl_s": "1", "grace_s": "0"}})
    model.control(stable=True)
    warm(p, model, {"instances": [["gone"]]})
    time.sleep(1.3)
    r = p.post(PREDICT, json_body={"instances": [["gone"]]})
    assert r.headers["X-Cache"] == "MISS", r.headers
