"""SIGHUP reloads the configuration without dropping a connection or a request.

The file is read again (with the command line's overrides); a configuration that does not
validate is refused and the running one stays. A valid one starts a new set of workers on
the same listening sockets; the old workers hand each client connection over at its next
request boundary, finish what they hold, and exit. These tests watch it from the outside:
answers (every one checked by the oracle), the same client socket before and after,
Redis TTLs, X-Cache, /metrics, and the process's log.
"""
import json
import os
import random
import signal
import socket
import threading
import time

import requests

from conftest import (HTTP_TIMEOUT, ModelServer, RedisServer, free_port, merge_conf, wait_for,
                      write_conf)
from oracle import Oracle, post_checked, predict_request, run_load

# Stored entries live ttl_s + grace_s in Redis: the tests set grace_s 0 to read ttl_s.
EXP_OFF = {"route exp": {"match": "POST /v1/models/exp*:predict", "cache": "off"}}


def reload(p, conf, n):
    """Writes conf over p's file, sends SIGHUP and waits for reload number n applied."""
    write_conf(p.conf_path, conf)
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration %d applied" % n in p.stderr_text(),
             what="reload %d applied" % n)


def refused(p, n):
    wait_for(lambda: p.stderr_text().count("the running configuration stays") >= n,
             what="reload refused %d times" % n)


def ttl_of(redis, p, path, doc):
    r = p.post(path, json_body=doc)
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.headers
    key = r.headers["X-Cache-Key"]
    redis.wait_key(key)
    return redis.ttl(key)


def raw_request(sock, body):
    req = ("POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\n\r\n" % len(body)).encode() + body
    sock.sendall(req)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the answer's head: %r" % data
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    n = int(headers["content-length"])
    while len(rest) < n:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the answer's body"
        rest += chunk
    return int(head.split()[1]), headers, rest[:n]


def test_reload_applies_ttl_and_routes_and_counts_on(start_predcache, redis):
    p = start_predcache(conf={"cache": {"ttl_s": 100, "grace_s": 0}})
    assert 90 <= ttl_of(redis, p, "/v1/models/m:predict", {"instances": ["a"]}) <= 100
    r = p.post("/v1/models/exp:predict", json_body={"instances": ["e"]})
    assert r.headers["X-Cache"] == "MISS"
    hits_before = p.metric("predcache_requests_total", cache="miss")
    assert hits_before >= 2

    conf = merge_conf(p.conf, {"cache": {"ttl_s": 500}})
    conf.update(EXP_OFF)
    reload(p, conf, 1)
    assert 490 <= ttl_of(redis, p, "/v1/models/m:predict", {"instances": ["b"]}) <= 500
    r = p.post("/v1/models/exp:predict", json_body={"instances": ["e2"]})
    assert r.status_code == 200 and "X-Cache" not in r.headers, r.headers  # not cached
    # counters go on across the reload: the old workers' counts are still in the sums
    assert p.metric("predcache_requests_total", cache="miss") >= hits_before + 1
    assert p.metric("predcache_config_reloads_total", result="ok") == 1
    assert p.metric("predcache_config_last_reload_successful") == 1
    assert p.metric("predcache_route_requests_total", route="exp", cache="pass") == 1
    assert p.proc.poll() is None


def test_a_broken_conf_keeps_the_running_one(start_predcache, redis):
    p = start_predcache(conf={"cache": {"ttl_s": 100, "grace_s": 0}})
    good = dict(p.conf)
    with open(p.conf_path, "a") as f:
        f.write("\n[cache]\ntll_s = 5\n")
    os.kill(p.pid, signal.SIGHUP)
    refused(p, 1)
    err = p.stderr_text()
    assert "did you mean 'ttl_s'" in err, err[-2000:]
    # an invalid value, then a Redis TLS file that does not exist
    bad = merge_conf(good, {"cache": {"ttl_s": "-3"}})
    write_conf(p.conf_path, bad)
    os.kill(p.pid, signal.SIGHUP)
    refused(p, 2)
    bad = merge_conf(good, {"redis": {"tls": "on", "tls_ca_file": "/nonexistent/ca.pem"}})
    write_conf(p.conf_path, bad)
    os.kill(p.pid, signal.SIGHUP)
    refused(p, 3)
    assert p.proc.poll() is None
    assert 90 <= ttl_of(redis, p, "/v1/models/m:predict", {"instances": ["kept"]}) <= 100
    assert p.metric("predcache_config_reloads_total", result="failed") == 3
    assert p.metric("predcache_config_last_reload_successful") == 0
    # and a good one afterwards applies
    reload(p, merge_conf(good, {"cache": {"ttl_s": 300}}), 1)
    assert 290 <= ttl_of(redis, p, "/v1/models/m:predict", {"instances": ["new"]}) <= 300
    assert p.metric("predcache_config_last_reload_successful") == 1


def test_an_idle_connection_moves_to_the_new_workers(start_predcache, redis):
    """The same client socket, before and after: not closed, served by the new
    configuration at its next request."""
    p = start_predcache(conf={"cache": {"ttl_s": 100, "grace_s": 0}})
    s = socket.create_connection(("127.0.0.1", p.listen_port), timeout=HTTP_TIMEOUT)
    try:
        status, h, _ = raw_request(s, b'{"instances": ["idle-1"]}')
        assert status == 200 and h["x-cache"] == "MISS"
        reload(p, merge_conf(p.conf, {"cache": {"ttl_s": 400}}), 1)
        wait_for(lambda: "reload: the workers of configuration" in p.stderr_text() or
                 "reload: worker 0 done" in p.stderr_text(), what="the old workers gone")
        status, h, _ = raw_request(s, b'{"instances": ["idle-2"]}')
        assert status == 200 and h["x-cache"] == "MISS", h
        assert h.get("connection", "").lower() != "close"
        redis.wait_key(h["x-cache-key"])
        assert 390 <= redis.ttl(h["x-cache-key"]) <= 400
        status, h, _ = raw_request(s, b'{"instances": ["idle-1"]}')
        assert status == 200 and h["x-cache"] == "HIT"
    finally:
        s.close()


def test_a_request_in_flight_finishes_on_the_old_workers(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"ttl_s": 100, "grace_s": 0}})
    model.control(delay_ms=1500)
    out = {}

    def slow():
        out["r"] = p.post("/v1/models/m:predict", json_body={"instances": ["slow"]})

    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: model.count() >= 1, what="the model server reached")
    reload(p, merge_conf(p.conf, {"cache": {"ttl_s": 200}}), 1)
    t.join(HTTP_TIMEOUT)
    r = out["r"]
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
    # stored by the workers that took it, with their TTL
    redis.wait_key(r.headers["X-Cache-Key"])
    assert 90 <= redis.ttl(r.headers["X-Cache-Key"]) <= 100
    model.control(delay_ms=0)
    wait_for(lambda: "reload: the workers of configuration 0 are gone" in p.stderr_text(),
             what="the old workers gone")
    assert 190 <= ttl_of(redis, p, "/v1/models/m:predict", {"instances": ["after"]}) <= 200


def test_a_changed_address_is_bound_first(start_predcache, redis):
    p = start_predcache()
    old_port = p.listen_port
    # the new address is taken: refused, the old port serves on
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    taken = blocker.getsockname()[1]
    try:
        write_conf(p.conf_path, merge_conf(p.conf, {"server": {"listen": "127.0.0.1:%d" % taken}}))
        os.kill(p.pid, signal.SIGHUP)
        refused(p, 1)
        assert "cannot listen on 127.0.0.1:%d" % taken in p.stderr_text()
        assert p.post("/v1/models/m:predict", json_body={"instances": [1]}).status_code == 200
    finally:
        blocker.close()
    new_port = free_port()
    reload(p, merge_conf(p.conf, {"server": {"listen": "127.0.0.1:%d" % new_port}}), 1)
    r = requests.post("http://127.0.0.1:%d/v1/models/m:predict" % new_port,
                      json={"instances": [2]}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    wait_for(lambda: "reload: the workers of configuration 0 are gone" in p.stderr_text(),
             what="the old workers gone")
    try:
        requests.post("http://127.0.0.1:%d/v1/models/m:predict" % old_port,
                      json={"instances": [3]}, timeout=2)
        raise AssertionError("the old port still answers")
    except requests.ConnectionError:
        pass
    # the admin port (unchanged) went on answering on the same socket
    assert requests.get(p.admin("/health"), timeout=HTTP_TIMEOUT).status_code == 200
    p.listen_port = new_port  # for teardown's sake


def test_workers_change_waits_for_a_restart(start_predcache, redis):
    p = start_predcache(conf={"server": {"workers": 2}})
    reload(p, merge_conf(p.conf, {"server": {"workers": 3}}), 1)
    assert "workers = 3 takes effect at the next restart; 2 workers go on" in p.stderr_text()
    assert p.metric("predcache_workers") == 2
    assert p.post("/v1/models/m:predict", json_body={"instances": [1]}).status_code == 200


def test_reload_under_load(start_predcache, redis):
    """Clients on keep-alive connections and on new ones send for several seconds while
    SIGHUP lands five times, alternating the TTL and a route that turns caching off for
    one model: no request fails, every answer is the model's for that request, and after
    each reload the new settings are the ones answers show."""
    conf_a = {"cache": {"ttl_s": 111, "grace_s": 0}, "server": {"workers": 2}}
    p = start_predcache(conf=conf_a)
    base = dict(p.conf)
    oracle = Oracle("reload under load")
    rng = random.Random(7)
    stop = threading.Event()

    def load_requests():
        i = 0
        while not stop.is_set():
            i += 1
            model = "exp" if i % 3 == 0 else "m"
            item = rng.randrange(400)  # repeats: hits beside misses
            yield predict_request("/v1/models/%s:predict" % model, {"instances": [item, i % 7]})

    results = []
    loader = threading.Thread(target=lambda: results.extend(
        run_load(p.url(), load_requests(), 6, oracle, duration_s=9)))
    fresh_failures = []

    def fresh_connections():  # a new connection for each request
        k = 0
        while not stop.is_set():
            k += 1
            try:
                post_checked(p.url(), oracle, "/v1/models/m:predict", {"instances": ["f%d" % k]})
            except Exception as e:  # noqa: BLE001 (counted: any failure fails the test)
                fresh_failures.append(repr(e))
            time.sleep(0.01)

    fresh = threading.Thread(target=fresh_connections)
    loader.start()
    fresh.start()
    try:
        for n in range(1, 6):
            time.sleep(1.2)
            ttl = 111 + 100 * n
            conf = merge_conf(base, {"cache": {"ttl_s": ttl}})
            exp_off = n % 2 == 1
            if exp_off:
                conf.update(EXP_OFF)
            reload(p, conf, n)
            # the new settings show on a new connection at once
            r = post_checked(p.url(), oracle, "/v1/models/exp:predict",
                             {"instances": ["probe %d" % n]})
            assert r.headers.get("X-Cache") == (None if exp_off else "MISS"), (n, r.headers)
            r = post_checked(p.url(), oracle, "/v1/models/m:predict",
                             {"instances": ["probe %d" % n]})
            assert r.headers["X-Cache"] == "MISS"
            redis.wait_key(r.headers["X-Cache-Key"])
            assert ttl - 10 <= redis.ttl(r.headers["X-Cache-Key"]) <= ttl, n
    finally:
        stop.set()
        loader.join(60)
        fresh.join(60)
    statuses = [r.status for r in results]
    failed = [r for r in results if r.status != 200 or r.error is not None]
    print("reload under load: %d requests on keep-alive connections, %d failed; %d fresh "
          "connection failures" % (len(results), len(failed), len(fresh_failures)))
    assert len(results) > 300, len(results)
    assert not failed, failed[:5]
    assert not fresh_failures, fresh_failures[:5]
    assert statuses.count(200) == len(results)
    oracle.assert_clean()
    wait_for(lambda: "reload: the workers of configuration 4 are gone" in p.stderr_text(),
             what="every old set gone")
    assert p.metric("predcache_config_reloads_total", result="ok") == 5
    assert p.proc.poll() is None


def test_reload_moves_to_another_redis_and_model_server(start_predcache, redis, tmp_path):
    """Redis settings reconnect and backends change with a reload: the entries stored after
    it are in the new Redis, the misses go to the new model server."""
    other_redis = RedisServer(tmp_path / "redis2")
    other_model = ModelServer(tmp_path / "model2")
    other_redis.start()
    other_model.start()
    try:
        p = start_predcache()
        oracle = Oracle("reload: redis and backend")
        r = post_checked(p.url(), oracle, "/v1/models/m:predict", {"instances": ["one"]})
        redis.wait_key(r.headers["X-Cache-Key"])
        conf = merge_conf(p.conf, {"redis": {"port": other_redis.port},
                                   "backend": {"url": other_model.url()}})
        reload(p, conf, 1)
        # the new Redis has nothing yet: a miss, answered by the new model server
        r = post_checked(p.url(), oracle, "/v1/models/m:predict", {"instances": ["one"]})
        assert r.headers["X-Cache"] == "MISS", r.headers
        assert other_model.count() == 1
        other_redis.wait_key(r.headers["X-Cache-Key"])
        r = post_checked(p.url(), oracle, "/v1/models/m:predict", {"instances": ["one"]})
        assert r.headers["X-Cache"] == "HIT"
        oracle.assert_clean()
    finally:
        other_model.stop()
        other_redis.stop()


def test_reload_switches_the_access_log_and_its_format(start_predcache, redis, tmp_path):
    """Logging comes from the new file too: the access log moves from stdout to a file and
    turns JSON, then off, without a line split or lost."""
    p = start_predcache()
    assert p.post("/v1/models/m:predict", json_body={"instances": ["text"]}).status_code == 200
    wait_for(lambda: any("path=/v1/models/m:predict" in l for l in p.access_lines()),
             what="a text access line on stdout")
    log = tmp_path / "access.json"
    reload(p, merge_conf(p.conf, {"log": {"access_log": str(log), "format": "json"}}), 1)
    for i in range(10):
        assert p.post("/v1/models/m:predict", json_body={"instances": [i]}).status_code == 200
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= 10,
             what="10 JSON lines in the new file")
    lines = [json.loads(l) for l in log.read_text().splitlines()]
    assert all(l["path"] == "/v1/models/m:predict" for l in lines)
    reload(p, merge_conf(p.conf, {"log": {"access_log": "off"}}), 2)
    wait_for(lambda: "reload: the workers of configuration 1 are gone" in p.stderr_text(),
             what="the old workers gone")
    before = len(log.read_text().splitlines())
    assert p.post("/v1/models/m:predict", json_body={"instances": ["off"]}).status_code == 200
    time.sleep(0.3)
    assert len(log.read_text().splitlines()) == before
