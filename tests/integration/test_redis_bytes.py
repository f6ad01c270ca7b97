"""A cache survives any bytes from its store.

A Redis (or a proxy in front of it) that sends a well-formed but unexpected reply (a
second reply to one command, a reply when nothing was asked, an array where a pub/sub
message was expected) or bytes that are not RESP must never take predcache down: the
connection is dropped and counted (predcache_redis_desyncs_total), the requests waiting
on it are answered BYPASS by the model server, and the store reconnects with its backoff
and caches again.

The bytes come from tests/fixtures/fake_redis.py: a relay in front of the real
redis-server that passes everything through and, when told, adds or replaces reply
bytes. Every answer is checked by the integrity oracle.
"""

import collections
import itertools
import threading
import time

import pytest
import requests

from conftest import GiveUp, wait_for
from oracle import Oracle, post_checked, predict_request, run_load


PATH = "/v1/models/m:predict"
RECOVER_S = 15.0
DESYNCS = "predcache_redis_desyncs_total"


@pytest.fixture
def pc(injector, start_predcache):
    """predcache whose Redis is the injector (set up before it, so stopped after it). The
    lock off: a lookup is the plain GET these tests answer with other bytes (with the lock
    on it is the lock script, whose replies test_another_keys_entry_is_never_served
    replaces)."""
    return start_predcache(conf={"redis": {"port": str(injector.port)},
                                 "cache": {"lock_timeout_ms": "0"}})


def post(p, oracle, instances, seen):
    """One checked POST (right answer, status 200); X-Cache noted in seen."""
    r = post_checked(p.url(), oracle, PATH, {"instances": instances})
    seen.append(r.headers.get("X-Cache"))
    return r


def warm(p, redis, oracle, instances):
    """MISS, stored, then HIT: the command connection is up and used."""
    seen = []
    r = post(p, oracle, instances, seen)
    assert r.headers["X-Cache"] == "MISS", seen
    redis.wait_key(r.headers["X-Cache-Key"])
    assert post(p, oracle, instances, seen).headers["X-Cache"] == "HIT", seen


def assert_alive(p, pid):
    """Raises GiveUp (which also ends a wait_for at once) when predcache has exited."""
    if p.proc.poll() is not None or p.pid != pid:
        raise GiveUp("predcache exited (%s) on bytes from Redis:\n%s" % (
            p.proc.returncode, p.stderr_text()[-3000:]))


def wait_desync(p, before, pid):
    def counted():
        assert_alive(p, pid)
        return p.metric(DESYNCS) > before

    wait_for(counted, timeout=5, interval=0.05,
             what="%s to count the bad reply (still %s)" % (DESYNCS, before))


def wait_hit(p, oracle, instances, seen, pid):
    """Requests, each checked, until one is a HIT again (the store reconnected)."""
    deadline = time.monotonic() + RECOVER_S
    while True:
        assert_alive(p, pid)
        if post(p, oracle, instances, seen).headers["X-Cache"] == "HIT":
            return
        assert time.monotonic() < deadline, "no HIT after the reconnect: %s" % seen[-8:]
        time.sleep(0.1)


def bypass_or_cached(seen):
    bad = [c for c in seen if c not in ("HIT", "MISS", "BYPASS")]
    assert not bad, seen


@pytest.mark.parametrize("command,extra", [
    (b"GET", b"+OK\r\n"),
    (b"GET", b"$5\r\nhello\r\n"),
    (b"SET", b"+OK\r\n"),
], ids=["GET+OK", "GET+bulk", "SET+OK"])
def test_a_second_reply_to_one_command(pc, injector, redis, model, command, extra):
    """`+OK\\r\\n+OK\\r\\n` to one SET, or a GET answered twice: the second reply is for no
    command. Before: hiredis asserted in redisProcessCallbacks and predcache aborted."""
    oracle = Oracle("second reply to %s" % command.decode(), per_instance=False)
    warm(pc, redis, oracle, ["warm"])
    pid, before, seen = pc.pid, pc.metric(DESYNCS), []
    injector.after_reply(command, extra)
    if command == b"GET":
        r = post(pc, oracle, ["warm"], seen)  # its own reply came first: still its answer
        assert r.headers["X-Cache"] in ("HIT", "BYPASS"), seen
    else:
        r = post(pc, oracle, ["fresh"], seen)  # a MISS, then its SET
        assert r.headers["X-Cache"] == "MISS", seen
    wait_for(lambda: injector.armed() == 0, what="the %s reply doubled" % command.decode())
    wait_desync(pc, before, pid)
    for i in range(5):  # during and after the drop: all answered, BYPASS while reconnecting
        post(pc, oracle, ["during-%d" % i], seen)
    bypass_or_cached(seen)
    wait_hit(pc, oracle, ["warm"], seen, pid)
    assert_alive(pc, pid)
    oracle.assert_clean()


@pytest.mark.parametrize("data", [
    b"+OK\r\n",
    b":1\r\n",
    b"$5\r\nhello\r\n",
    b"*0\r\n",
    b"*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nx\r\n",
    b"-ERR nothing was asked\r\n",
], ids=["status", "integer", "bulk", "empty-array", "push", "error"])
def test_a_reply_when_nothing_was_asked(pc, injector, redis, model, data):
    """A reply on the command connection while no command waits for one."""
    oracle = Oracle("unsolicited %r" % data[:12], per_instance=False)
    warm(pc, redis, oracle, ["idle"])
    pid, before, seen = pc.pid, pc.metric(DESYNCS), []
    link = injector.wait_link(lambda l: l.sent(b"GET"))
    injector.inject(link, data, when_idle=True)
    wait_desync(pc, before, pid)
    wait_for(lambda: link.closed.is_set(), timeout=5, what="predcache to drop that connection")
    for i in range(3):
        post(pc, oracle, ["after-%d" % i], seen)
    bypass_or_cached(seen)
    wait_hit(pc, oracle, ["idle"], seen, pid)
    new = injector.wait_link(lambda l: l.number > link.number and l.sent(b"GET"))
    assert new is not link
    oracle.assert_clean()


@pytest.mark.parametrize("data", [
    b"!!!\r\n",
    b"$99999999999999\r\n",
    b"*-5\r\n",
    b"*2147483647\r\n",
    b"$abc\r\n",
    b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
    b"*2\r\n+OK\r\n",
], ids=["bad-type-byte", "huge-bulk", "negative-array", "huge-array", "bad-length",
        "too-deep", "array-then-silence"])
def test_garbage_instead_of_a_get_reply(start_predcache, injector, redis, model, data):
    """Bytes that are not a whole RESP value (or one no Redis would send) in place of a
    GET's reply: that GET is answered BYPASS at once (a stalled one at its timeout), the
    connection is dropped and counted, and caching resumes on a new one."""
    p = start_predcache(conf={"redis": {"port": str(injector.port), "timeout_ms": "2000"},
                              "cache": {"lock_timeout_ms": "0"}})  # the lookup: a GET
    oracle = Oracle("garbage %r" % data[:12], per_instance=False)
    warm(p, redis, oracle, ["g"])
    pid, before, seen = p.pid, p.metric(DESYNCS), []
    injector.replace_reply(b"GET", data)
    started = time.monotonic()
    r = post(p, oracle, ["g"], seen)
    took = time.monotonic() - started
    assert r.headers["X-Cache"] == "BYPASS", seen
    if data != b"*2\r\n+OK\r\n":  # an incomplete array can only be told by the timeout
        assert took < 1.5, "the bad reply was only noticed at the 2 s timeout (%.2fs)" % took
        wait_desync(p, before, pid)
    for i in range(3):
        post(p, oracle, ["g-%d" % i], seen)
    bypass_or_cached(seen)
    wait_hit(p, oracle, ["g"], seen, pid)
    oracle.assert_clean()


def test_second_replies_under_load(pc, injector, redis, model):
    """Second replies while 8 clients keep predcache's Redis pipeline busy: each one is
    taken by the command waiting next (or by none), the commands behind it fail and their
    requests bypass the cache; every answer is 200 and right, and caching resumes."""
    oracle = Oracle("second replies under load", per_instance=False)
    warm(pc, redis, oracle, ["load-0"])
    pid, before = pc.pid, pc.metric(DESYNCS)
    reqs = (predict_request(PATH, {"instances": ["load-%d" % (i % 16)]})
            for i in itertools.count())
    box = {}
    load = threading.Thread(target=lambda: box.update(
        results=run_load(pc.url(), reqs, 8, oracle, duration_s=6)))
    load.start()
    try:
        for n in range(1, 5):
            time.sleep(0.4)
            injector.after_reply(b"GET", b"+OK\r\n")
            wait_for(lambda: injector.armed() == 0, what="GET reply %d doubled" % n)
            wait_desync(pc, before + n - 1, pid)
    finally:
        load.join(60)
    results = box["results"]
    bad = [(r.status, r.x_cache, r.error) for r in results if r.status != 200]
    assert not bad, bad[:5]
    caches = collections.Counter(r.x_cache for r in results)
    assert caches["HIT"] > 0 and caches["BYPASS"] > 0, caches
    assert pc.metric(DESYNCS) >= before + 4
    wait_hit(pc, oracle, ["load-0"], [], pid)
    oracle.assert_clean()


def test_an_error_reply_to_a_get_is_not_a_desync(pc, injector, redis, model):
    """-ERR in the place of a GET's reply is an answer (Redis says no: WRONGTYPE, OOM, ...):
    that request is BYPASS and the connection stays, nothing counted."""
    oracle = Oracle("error reply", per_instance=False)
    warm(pc, redis, oracle, ["e"])
    pid, before, seen = pc.pid, pc.metric(DESYNCS), []
    link = injector.wait_link(lambda l: l.sent(b"GET"))
    injector.replace_reply(b"GET", b"-WRONGTYPE injected\r\n")
    assert post(pc, oracle, ["e"], seen).headers["X-Cache"] == "BYPASS"
    assert post(pc, oracle, ["e"], seen).headers["X-Cache"] == "HIT"
    assert not link.closed.is_set()
    assert pc.metric(DESYNCS) == before
    assert_alive(pc, pid)
    oracle.assert_clean()


def subscribers(redis, channel):
    return redis.command("PUBSUB", "NUMSUB", channel)[1]


@pytest.mark.parametrize("data", [
    b"*0\r\n",
    b"*2\r\n:1\r\n:2\r\n",
    b"*1\r\n$7\r\nmessage\r\n",
    b"*3\r\n$7\r\nmessage\r\n:1\r\n$1\r\nx\r\n",
    b"*2\r\n$11\r\nunsubscribe\r\n$22\r\npredcache:done:default\r\n",
    b"*3\r\n$7\r\nmessage\r\n$5\r\nother\r\n$1\r\nx\r\n",
    b"+OK\r\n",
    b"$2\r\nhi\r\n",
    b"!!!\r\n",
], ids=["empty-array", "integers", "one-element", "non-string-channel",
        "short-unsubscribe", "other-channel", "status", "bulk", "garbage"])
def test_unexpected_bytes_on_the_subscriber(start_predcache, injector, redis, model, data):
    """The subscriber connection expects pub/sub messages (arrays of "message", channel,
    payload) once subscribed. Anything else drops that connection; predcache stays up and
    subscribes again on a new one, and then hears invalidations again."""
    channel = "predcache:done:default"
    # p1 talks to Redis directly; p2's connections all go through the injector.
    p1 = start_predcache()
    p2 = start_predcache(conf={"redis": {"port": str(injector.port)},
                               "cache": {"generation_refresh_ms": "60000"}})
    oracle = Oracle("subscriber %r" % data[:12], per_instance=False)
    wait_for(lambda: subscribers(redis, channel) == 2, what="both processes subscribed")
    pid, seen = p2.pid, []
    sub = injector.wait_link(lambda l: l.sent(b"SUBSCRIBE") and l.replies >= 1)
    injector.inject(sub, data, when_idle=True)
    wait_for(lambda: sub.closed.is_set(), timeout=5,
             what="predcache to drop the subscriber connection")
    assert_alive(p2, pid)
    post(p2, oracle, ["sub"], seen)  # the command connection was never touched
    again = injector.wait_link(lambda l: l.number > sub.number and l.sent(b"SUBSCRIBE")
                               and l.replies >= 1)
    wait_for(lambda: subscribers(redis, channel) == 2, what="p2 subscribed again")
    assert again is not sub
    assert "desync" in p2.stderr_text(), p2.stderr_text()[-2000:]

    # It hears again: p1's invalidation reaches p2 at once (p2 refreshes generations
    # only every 60 s by itself).
    key = post(p2, oracle, ["inv"], seen).headers["X-Cache-Key"]
    redis.wait_key(key)
    assert post(p2, oracle, ["inv"], seen).headers["X-Cache"] == "HIT"
    r = requests.post("http://127.0.0.1:%d/cache/invalidate?model=m" % p1.admin_port, timeout=5)
    assert r.status_code == 200, r.text

    def missed():
        return post(p2, oracle, ["inv"], seen).headers["X-Cache"] == "MISS"

    wait_for(missed, timeout=5, interval=0.1,
             what="p2 to miss after p1's invalidation (heard on the new subscription)")
    assert_alive(p2, pid)
    oracle.assert_clean()


def bulk(data):
    return b"$%d\r\n%s\r\n" % (len(data), data)


@pytest.mark.parametrize("path,body_of,command", [
    ("/predict", lambda tag: {"image": tag}, b"GET"),
    ("/predict", lambda tag: {"image": tag}, b"EVAL1"),
    (PATH, lambda tag: {"instances": [[tag, 1], [tag, 2]]}, b"MGET"),
    (PATH, lambda tag: {"instances": [[tag, 1], [tag, 2]]}, b"EVAL"),
], ids=["GET", "lock-script", "MGET", "lookup-script"])
def test_another_keys_entry_is_never_served(start_predcache, injector, redis, model, path,
                                            body_of, command):
    """A reply of the right type that answers another command (a proxy out of step, an
    extra reply shifting every later GET by one): here the GET (or MGET) of B's key is
    answered with A's stored entry. It is never served for B: each entry carries the tag of
    its key (PC4). Before: B was answered with A's prediction, a wrong answer. A batch's
    lookup is the MGET, or with the lock on (lock_timeout_ms) the script that runs it with
    the lock: both are answered with A's entries. A whole body's lookup is the GET, or with
    the lock on the lock script, answered {1, A's entry}."""
    cache = {"per_instance": "on"}  # MGET: one per instance
    if command in (b"MGET", b"GET"):
        cache["lock_timeout_ms"] = "0"  # the plain MGET or GET
    if command == b"EVAL1":
        cache["l1_max_bytes"] = "64m"  # a whole body's lookup is the script behind the tier
    pc = start_predcache(conf={"redis": {"port": str(injector.port)}, "cache": cache})
    oracle = Oracle("another key's entry")
    seen = []
    post_checked(pc.url(), oracle, path, body_of("A"))

    def entries():
        return [k for k in redis.command("KEYS", "*v2:*") if not k.endswith((b":lock", b":wait"))]

    wait_for(lambda: len(entries()) >= (2 if path == PATH else 1), what="A stored")
    # A's lock released (its release is an EVAL too): the next EVAL is B's lookup
    wait_for(lambda: not [k for k in redis.command("KEYS", "*") if k.endswith(b":lock")],
             what="A's lock released")
    time.sleep(0.2)
    a_value = redis.command("GET", entries()[0])
    pid, before = pc.pid, pc.metric(DESYNCS)
    if command == b"GET":
        injector.replace_reply(b"GET", bulk(a_value))
    elif command == b"EVAL1":  # {1, value}: the value found, no lock taken
        injector.replace_reply(b"EVAL", b"*2\r\n:1\r\n" + bulk(a_value))
    elif command == b"MGET":
        injector.replace_reply(b"MGET", b"*2\r\n" + bulk(a_value) + bulk(a_value))
    else:  # {values, 0}: the values found, no lock asked
        injector.replace_reply(b"EVAL", b"*2\r\n*2\r\n" + bulk(a_value) + bulk(a_value) + b":0\r\n")
    r = post_checked(pc.url(), oracle, path, body_of("B"))
    seen.append(r.headers.get("X-Cache"))
    assert injector.armed() == 0, "the reply was not replaced"
    assert r.headers["X-Cache"] in ("MISS", "BYPASS"), seen
    wait_desync(pc, before, pid)
    assert "stored under another key" in pc.stderr_text()
    assert_alive(pc, pid)
    oracle.assert_clean()
