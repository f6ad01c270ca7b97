"""Admin port: /health, /ready, /metrics."""

import os
import re
import subprocess
import time

import requests

from conftest import HTTP_TIMEOUT, free_port, wait_for


def admin_get(proxy, path):
    return requests.get(proxy.admin(path), timeout=HTTP_TIMEOUT)


def wait_admin_status(proxy, path, status, what, timeout=10.0):
    """Polls the admin path until it answers status; returns that response.
    (A requests.Response with a 4xx/5xx status is falsy: wrap it.)"""
    def poll():
        r = admin_get(proxy, path)
        return (r,) if r.status_code == status else None

    return wait_for(poll, timeout=timeout, what=what)[0]


def test_health(proxy):
    r = admin_get(proxy, "/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_data_port_forwards_admin_paths(proxy, model):
    # the data port is a drop-in for the model server: /health there is the model's
    r = proxy.get("/health")
    assert r.status_code == 200
    assert r.json() == {"path": "/health", "query": ""}
    assert model.count() == 1


def test_ready_stays_ready_while_redis_is_down(proxy, redis, model):
    """Redis down: every request is still answered (from the model server, BYPASS), so
    /ready stays 200 and says what is degraded; a readiness probe must not take every
    instance out of service for a Redis blip."""
    wait_for(lambda: admin_get(proxy, "/ready").status_code == 200,
             what="/ready 200 with Redis and the model server up")
    assert "degraded" not in admin_get(proxy, "/ready").json()

    redis.kill()
    wait_for(lambda: admin_get(proxy, "/ready").json()["redis"] == "down",
             what="/ready saying Redis is down")
    r = admin_get(proxy, "/ready")
    doc = r.json()
    assert r.status_code == 200 and doc["ready"] is True, r.text
    assert "redis unavailable" in doc["degraded"], doc
    # and requests are answered meanwhile
    a = proxy.post("/v1/models/m:predict", json_body={"instances": ["while down"]})
    assert a.status_code == 200 and a.headers["X-Cache"] == "BYPASS"

    redis.start()
    wait_for(lambda: admin_get(proxy, "/ready").json()["redis"] == "ok", timeout=15,
             what="/ready saying Redis is back")


def test_ready_requires_redis_when_told(start_predcache, redis):
    p = start_predcache(conf={"server": {"ready_requires_redis": "on"}})
    wait_for(lambda: admin_get(p, "/ready").status_code == 200, what="/ready 200")
    redis.kill()
    r = wait_admin_status(p, "/ready", 503, "/ready 503 after Redis was killed")
    assert r.json()["ready"] is False and "redis unavailable" in r.json()["error"], r.text
    redis.start()
    wait_for(lambda: admin_get(p, "/ready").status_code == 200, timeout=15,
             what="/ready 200 after Redis came back")


def test_live_asks_nothing(start_predcache, model, redis):
    """/live: the process answers; no dependency is asked (Redis and the model server are
    both down here)."""
    p = start_predcache()
    redis.kill()
    model.stop()
    r = admin_get(p, "/live")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    assert admin_get(p, "/ready").status_code == 503  # no model server: not ready


def test_ready_uses_the_health_checks_not_a_request_per_probe(start_predcache, model):
    """With [backend] health_path, /ready reads the health checks' verdict instead of
    sending GET / to the model server on every probe."""
    p = start_predcache(conf={"backend": {"health_path": "/healthz",
                                          "health_interval_ms": "5000"}})
    wait_for(lambda: admin_get(p, "/ready").status_code == 200, what="/ready 200")
    before = model.count("/")
    for _ in range(5):
        assert admin_get(p, "/ready").status_code == 200
    assert model.count("/") == before


def test_ready_503_when_backend_down(start_predcache):
    proxy = start_predcache(backend_url="http://127.0.0.1:%d" % free_port())
    r = wait_admin_status(proxy, "/ready", 503, "/ready 503 with the model server down")
    assert "backend" in r.text.lower() or "model" in r.text.lower(), r.text
    r.json()


def test_metrics_counters_move(proxy, model, redis):
    text = proxy.metrics_text()
    assert "# TYPE predcache_requests_total counter" in text
    assert proxy.metric("predcache_requests_total", cache="hit") == 0

    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["m"]})
    assert r.headers.get("X-Cache") == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["m"]})
    assert r.headers.get("X-Cache") == "HIT"
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["m"]})
    assert r.headers.get("X-Cache") == "HIT"
    assert proxy.get("/labels").status_code == 200
    assert proxy.post("/predict", body="{oops").status_code == 400

    wait_for(lambda: proxy.metric("predcache_store_ok_total") >= 1, timeout=5,
             what="predcache_store_ok_total >= 1")
    m = proxy.metrics()

    def val(name, **labels):
        return m.get((name, frozenset(labels.items())), None)

    assert val("predcache_requests_total", cache="miss") == 1
    assert val("predcache_requests_total", cache="hit") == 2
    assert val("predcache_requests_total", cache="pass") == 1
    assert val("predcache_requests_total", cache="error") == 1
    assert val("predcache_requests_total", cache="bypass") == 0
    assert val("predcache_backend_requests_total") == 2 == model.count()
    assert val("predcache_store_ok_total") == 1
    assert val("predcache_store_failed_total") == 0
    assert val("predcache_store_skipped_total") is not None
    assert val("predcache_in_flight") is not None
    assert val("predcache_redis_up") == 1

    for hist in ("predcache_request_seconds", "predcache_backend_seconds",
                 "predcache_redis_get_seconds"):
        count = val(hist + "_count")
        assert count is not None and count >= 1, "%s_count: %s" % (hist, count)
        assert val(hist + "_sum") is not None, hist + "_sum missing"
        inf = val(hist + "_bucket", le="+Inf")
        assert inf == count, "%s_bucket{le=\"+Inf\"} %s != count %s" % (hist, inf, count)
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in m.items()
                         if k[0] == hist + "_bucket")
        values = [v for _, v in buckets]
        assert values == sorted(values), "%s buckets are not cumulative: %s" % (hist, buckets)
    assert val("predcache_request_seconds_count") >= 5
    assert val("predcache_backend_seconds_count") >= 2


def test_metrics_bypass_and_redis_up(proxy, redis):
    wait_for(lambda: proxy.metric("predcache_redis_up") == 1, what="predcache_redis_up 1")
    redis.kill()
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["b"]})
    assert r.status_code == 200 and r.headers.get("X-Cache") == "BYPASS"
    assert r.headers.get("X-Cache-Reason") in ("redis-unavailable", "redis-error")
    assert proxy.metric("predcache_requests_total", cache="bypass") == 1
    assert proxy.metric("predcache_uncached_total", reason="redis-unavailable") + \
        proxy.metric("predcache_uncached_total", reason="redis-error") == 1
    wait_for(lambda: proxy.metric("predcache_redis_up") == 0, what="predcache_redis_up 0")


def test_build_info_and_process_metrics(start_predcache, model, redis):
    """What operators expect beside predcache's own figures: the binary's version and
    commit, and the process collector's metrics from /proc; the cache's byte counter is
    named with its unit before _total (it was predcache_bytes_from_cache_total)."""
    p = start_predcache()
    m = p.metrics()
    info = [labels for (name, labels) in m if name == "predcache_build_info"]
    assert len(info) == 1, info
    labels = dict(info[0])
    assert re.match(r"^\d+\.\d+\.\d+$", labels["version"]), labels
    here = os.path.dirname(os.path.abspath(__file__))
    in_git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, cwd=here)
    if in_git.returncode == 0:  # built from this checkout: a commit of its history
        assert re.match(r"^[0-9a-f]{12}$", labels["commit"]), labels
        known = subprocess.run(["git", "cat-file", "-e", labels["commit"] + "^{commit}"],
                               capture_output=True, cwd=here)
        assert known.returncode == 0, labels
    assert p.metric("process_resident_memory_bytes") > 1 << 20
    assert p.metric("process_virtual_memory_bytes") >= p.metric("process_resident_memory_bytes")
    assert 3 < p.metric("process_open_fds") < p.metric("process_max_fds")
    assert p.metric("process_cpu_seconds_total") >= 0
    assert abs(p.metric("process_start_time_seconds") - time.time()) < 120
    body = {"instances": ["counted"]}
    r1 = p.post("/v1/models/m:predict", json_body=body)
    redis.wait_key(r1.headers["X-Cache-Key"])
    r2 = p.post("/v1/models/m:predict", json_body=body)
    assert r2.headers["X-Cache"] == "HIT"
    assert p.metric("predcache_from_cache_bytes_total") == len(r2.content)
    assert not any(name == "predcache_bytes_from_cache_total" for (name, _) in p.metrics())
