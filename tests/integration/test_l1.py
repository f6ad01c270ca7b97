"""The in-process tier ([cache] l1_max_bytes, l1_ttl_ms): fresh hits are answered without
asking Redis, entries stay in it at most l1_ttl_ms, purges and invalidations reach it in
this process and in every other one sharing the Redis, and stale entries always go to
Redis (so a refresh made elsewhere is seen)."""

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from conftest import HTTP_TIMEOUT, wait_for

PREDICT = "/v1/models/m:predict"


def l1_conf(**cache):
    conf = {"cache": {"l1_max_bytes": "4m", "l1_ttl_ms": "60000"}}
    conf["cache"].update({k: str(v) for k, v in cache.items()})
    return conf


def post(p, name, **kw):
    return p.post(PREDICT, json_body={"instances": [name]}, **kw)


def hit_from_l1(p, name):
    """A HIT that did not ask Redis: the l1 counter moved and the GET counter did not."""
    hits, gets = p.metric("predcache_l1_hits_total"), p.metric("predcache_redis_get_ok_total")
    r = post(p, name)
    return (r.headers.get("X-Cache") == "HIT" and p.metric("predcache_l1_hits_total") == hits + 1
            and p.metric("predcache_redis_get_ok_total") == gets)


def test_fresh_hits_skip_redis(start_predcache, model, redis):
    p = start_predcache(conf=l1_conf())
    first = post(p, "a")
    assert first.headers["X-Cache"] == "MISS"
    redis.wait_key(first.headers["X-Cache-Key"])
    r = post(p, "a")
    assert r.headers["X-Cache"] == "HIT" and r.content == first.content
    assert r.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
    assert hit_from_l1(p, "a")
    assert model.count(PREDICT) == 1


def test_entries_leave_the_tier_after_l1_ttl_ms(start_predcache, model, redis):
    p = start_predcache(conf=l1_conf(l1_ttl_ms=1000))
    key = post(p, "b").headers["X-Cache-Key"]
    redis.wait_key(key)
    redis.command("DEL", key)  # behind predcache's back
    assert post(p, "b").headers["X-Cache"] == "HIT"  # the tier still has it
    time.sleep(1.2)
    assert post(p, "b").headers["X-Cache"] == "MISS"  # past l1_ttl_ms: Redis decides


def test_off_means_redis_decides(start_predcache, model, redis):
    p = start_predcache(conf=l1_conf(l1_max_bytes=0))
    key = post(p, "c").headers["X-Cache-Key"]
    redis.wait_key(key)
    assert post(p, "c").headers["X-Cache"] == "HIT"
    redis.command("DEL", key)
    assert post(p, "c").headers["X-Cache"] == "MISS"
    assert p.metric("predcache_l1_hits_total") == 0


def test_purge_reaches_the_tier_of_every_process(start_predcache, model, redis):
    a = start_predcache(conf=l1_conf())
    b = start_predcache(conf=l1_conf())
    key = post(a, "d").headers["X-Cache-Key"]
    redis.wait_key(key)
    assert post(b, "d").headers["X-Cache"] == "HIT"  # b's tier takes it from Redis
    assert hit_from_l1(b, "d") and hit_from_l1(a, "d")
    r = requests.delete(a.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and r.json()["deleted"] == 1
    assert post(a, "d").headers["X-Cache"] == "MISS"
    redis.wait_key(key)
    # b heard the purge: its next answer comes from Redis (the new entry), not its tier
    wait_for(lambda: b.metric("predcache_redis_get_ok_total") > 0 and
             post(b, "d").headers["X-Cache"] == "HIT" and
             b.metric("predcache_l1_hits_total") >= 2, what="b re-reads Redis")
    assert model.count(PREDICT) == 2


def test_invalidation_reaches_the_tier(start_predcache, model, redis):
    p = start_predcache(conf=l1_conf())
    old = post(p, "e").headers["X-Cache-Key"]
    redis.wait_key(old)
    assert hit_from_l1(p, "e")
    r = requests.post(p.admin("/cache/invalidate?model=m"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    r = post(p, "e")
    assert r.headers["X-Cache"] == "MISS" and r.headers["X-Cache-Key"] != old


def test_stale_entries_go_to_redis(start_predcache, model, redis):
    p = start_predcache(conf=l1_conf(ttl_s=1, grace_s=60))
    first = post(p, "f")
    redis.wait_key(first.headers["X-Cache-Key"])
    assert hit_from_l1(p, "f")
    time.sleep(1.3)
    gets = p.metric("predcache_redis_get_ok_total")
    r = post(p, "f")
    assert r.headers["X-Cache"] == "STALE"
    assert p.metric("predcache_redis_get_ok_total") == gets + 1
    wait_for(lambda: p.metric("predcache_refresh_ok_total") == 1, what="refresh")
    # the refreshed entry is fresh again, and served from the tier
    wait_for(lambda: hit_from_l1(p, "f"), what="a fresh hit from the tier")


def test_batches_use_the_tier(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"l1_max_bytes": "4m", "l1_ttl_ms": "60000",
                                        "per_instance": "on"}})
    body = {"instances": [[1, 2], [3, 4], [1, 2]]}
    first = p.post(PREDICT, json_body=body)
    assert first.headers["X-Cache"] == "MISS"
    wait_for(lambda: p.metric("predcache_store_ok_total") >= 2, what="instance stores")
    gets = p.metric("predcache_redis_get_ok_total")
    r = p.post(PREDICT, json_body=body)
    assert r.headers["X-Cache"] == "HIT" and r.content == first.content
    assert p.metric("predcache_l1_hits_total") == 1
    assert p.metric("predcache_redis_get_ok_total") == gets  # no MGET
    # one instance not in the tier: Redis is asked for the whole batch
    r = p.post(PREDICT, json_body={"instances": [[1, 2], [5, 6]]})
    assert r.headers["X-Cache"] == "PARTIAL"
    assert p.metric("predcache_redis_get_ok_total") == gets + 1
    assert model.count(PREDICT) == 2


def test_entries_are_read_again_before_they_leave_the_tier(start_predcache, model, redis):
    """Past 3/4 of l1_ttl_ms the first hit is still answered from the tier and reads the key
    from Redis again behind it: the entry is renewed with what Redis holds, so requests for
    it never wait for Redis when its time would have run out; and a key gone from Redis
    leaves the tier at that read, before l1_ttl_ms."""
    p = start_predcache(conf=l1_conf(l1_ttl_ms=1000))
    first = post(p, "ahead")
    key = first.headers["X-Cache-Key"]
    redis.wait_key(key)
    assert hit_from_l1(p, "ahead")  # young: no read ahead
    assert p.metric("predcache_l1_refreshes_total") == 0
    time.sleep(0.85)
    gets = p.metric("predcache_redis_get_ok_total")
    r = post(p, "ahead")
    assert r.headers["X-Cache"] == "HIT" and r.content == first.content
    wait_for(lambda: p.metric("predcache_redis_get_ok_total") == gets + 1, what="the read ahead")
    assert p.metric("predcache_l1_refreshes_total") == 1
    post(p, "ahead")  # one read ahead per stay, however many hits come meanwhile
    assert p.metric("predcache_l1_refreshes_total") == 1
    time.sleep(0.4)  # past the first stay's l1_ttl_ms: the renewed entry answers
    assert hit_from_l1(p, "ahead")
    # Gone from Redis behind predcache's back: the next read ahead removes it from the tier.
    redis.command("DEL", key)
    time.sleep(0.5)  # past 3/4 of the renewed entry's time
    assert post(p, "ahead").headers["X-Cache"] == "HIT"  # from the tier, reading ahead
    wait_for(lambda: p.metric("predcache_l1_refreshes_total") == 2, what="the second read")
    wait_for(lambda: p.metric("predcache_redis_get_ok_total") == gets + 2, what="its answer")
    r = post(p, "ahead")
    assert r.headers["X-Cache"] == "MISS", "the tier let go of a key Redis no longer has"
    assert model.count(PREDICT) == 2


def test_a_purge_is_not_undone_by_a_read_ahead_in_flight(start_predcache, model, redis):
    """The read ahead's GET reaches Redis before a purge's DEL but its answer comes back
    after the purge emptied the tier: the old entry must not come back into the tier."""
    conf = l1_conf(l1_ttl_ms=1000)
    conf["redis"] = {"timeout_ms": "3000"}
    p = start_predcache(conf=conf)
    first = post(p, "purged")
    key = first.headers["X-Cache-Key"]
    redis.wait_key(key)
    time.sleep(0.85)
    # Redis holds every client's commands for 0.6 s: the read ahead's GET, then the purge's
    # DEL, wait in that order, and are answered in that order.
    redis.command("CLIENT", "PAUSE", "600", "ALL")
    assert post(p, "purged").headers["X-Cache"] == "HIT"  # from the tier, reading ahead
    time.sleep(0.05)
    with ThreadPoolExecutor(1) as pool:
        purge = pool.submit(requests.delete, p.admin("/cache/" + key), timeout=HTTP_TIMEOUT)
        assert purge.result().status_code == 200
    wait_for(lambda: p.metric("predcache_l1_refreshes_total") == 1, what="the read ahead")
    r = post(p, "purged")
    assert r.headers["X-Cache"] == "MISS", "a purged entry came back into the tier"
    assert model.count(PREDICT) == 2
