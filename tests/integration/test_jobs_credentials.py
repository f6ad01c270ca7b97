"""Async jobs never keep credentials ([jobs] credentials = refuse | local).

A job request carrying Authorization, Proxy-Authorization, Cookie or a [cache]
credential_headers name is either refused (400) or run by the accepting process from its
own memory: the credential values reach the model server but never Redis (not the stream,
not the job record, not a cache entry), never a log, and never another process. Every test
checks Redis key by key (SCAN, then each key's value by its type) for the secret.
"""

import hashlib
import re
import signal
import time

import requests

from conftest import HTTP_TIMEOUT, wait_for

ROUTE = "/v1/models/m:predict"
PREFER = {"Prefer": "respond-async"}
STREAM = "predcache:jobs:default"
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SECRET = "alice-secret"
BEARER = "Bearer " + SECRET


# --------------------------------------------------------------------------- helpers


def sha256_hex(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def auth_digest(authorization="", cookie=""):
    """What the test model server reports as received.auth_sha256."""
    return sha256_hex(authorization + "\n" + cookie)


# The headers each job was submitted with: polls present them again (a job submitted with
# credentials is only shown to the same credentials).
SUBMITTED_WITH = {}


def submit(p, body, headers=None, route=ROUTE, expect=202):
    hdrs = dict(PREFER)
    hdrs.update(headers or {})
    r = p.post(route, json_body=body, headers=hdrs)
    if expect is not None:
        assert r.status_code == expect, "submit: %d %s" % (r.status_code, r.text)
    if r.status_code == 202:
        SUBMITTED_WITH[r.json()["job_id"]] = dict(headers or {})
    return r


def job_id_of(r):
    job_id = r.json()["job_id"]
    assert JOB_ID_RE.match(job_id), r.text
    return job_id


def poll(p, job_id, headers=None):
    if headers is None:
        headers = SUBMITTED_WITH.get(job_id, {})
    return requests.get(p.url("/jobs/" + job_id), headers=headers, timeout=HTTP_TIMEOUT)


def wait_finished(p, job_id, timeout=20.0):
    """Polls until X-Job-Status is done or failed; returns that answer."""
    def finished():
        r = poll(p, job_id)
        if r.headers.get("X-Job-Status") in ("done", "failed"):
            return [r]
        assert r.status_code in (202, 503), (r.status_code, r.text)
        return None

    return wait_for(finished, timeout=timeout, what="job %s to finish" % job_id)[0]


def wait_state(p, job_id, state, timeout=10.0):
    def reached():
        r = poll(p, job_id)
        return r.status_code == 202 and r.json().get("status") == state

    wait_for(reached, timeout=timeout, interval=0.02, what="job %s to be %s" % (job_id, state))


def record(redis, job_id):
    raw = redis.command("HGETALL", "predcache:job:" + job_id) or []
    return {raw[i].decode(): raw[i + 1] for i in range(0, len(raw), 2)}


def flatten(value):
    """Every byte string in a RESP reply, joined."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, str)):
        return str(value).encode()
    return b"\0".join(flatten(v) for v in value)


def redis_dump(redis):
    """Every key of the Redis server and everything it holds, by type, as bytes."""
    out, keys, cursor = [], [], b"0"
    while True:
        cursor, batch = redis.command("SCAN", cursor, "COUNT", "1000")
        keys.extend(batch)
        if cursor in (b"0", 0, "0"):
            break
    for key in keys:
        kind = redis.command("TYPE", key)
        out.append(key)
        if kind == "string":
            out.append(flatten(redis.command("GET", key)))
        elif kind == "hash":
            out.append(flatten(redis.command("HGETALL", key)))
        elif kind == "list":
            out.append(flatten(redis.command("LRANGE", key, 0, -1)))
        elif kind == "set":
            out.append(flatten(redis.command("SMEMBERS", key)))
        elif kind == "zset":
            out.append(flatten(redis.command("ZRANGE", key, 0, -1, "WITHSCORES")))
        elif kind == "stream":
            out.append(flatten(redis.command("XRANGE", key, "-", "+")))
            for group in redis.command("XINFO", "GROUPS", key):
                out.append(flatten(group))
                name = dict(zip(group[::2], group[1::2]))[b"name"]
                out.append(flatten(redis.command("XPENDING", key, name, "-", "+", "1000")))
        elif kind != "none":
            out.append(flatten(redis.command("DUMP", key)))
    return keys, b"\n".join(out)


def assert_nowhere(redis, p, secret):
    """secret is in no Redis key or value, and in none of predcache's output."""
    keys, dump = redis_dump(redis)
    assert keys, "the scan found no key at all"
    assert secret.encode() not in dump, "credential found in Redis: %r" % [
        k for k in keys if secret.encode() in redis_dump_key(redis, k)]
    assert secret not in p.stdout_text(), "credential in predcache's stdout"
    assert secret not in p.stderr_text(), "credential in predcache's stderr"


def redis_dump_key(redis, key):
    kind = redis.command("TYPE", key)
    if kind == "string":
        return flatten(redis.command("GET", key))
    if kind == "hash":
        return flatten(redis.command("HGETALL", key))
    if kind == "stream":
        return flatten(redis.command("XRANGE", key, "-", "+"))
    return flatten(redis.command("DUMP", key))


def local_conf(**jobs):
    conf = {"jobs": {"credentials": "local"}, "log": {"level": "debug"}}
    conf["jobs"].update({k: str(v) for k, v in jobs.items()})
    return conf


# --------------------------------------------------------------------------- local


def test_local_job_with_authorization(start_predcache, model, redis):
    p = start_predcache(conf=local_conf())
    model.control(delay_ms=600)
    r = submit(p, {"instances": ["alice"]}, headers={"Authorization": BEARER})
    job_id = job_id_of(r)
    assert r.headers["Location"] == "/jobs/" + job_id
    assert r.headers["Preference-Applied"] == "respond-async"
    # While it runs: its record and lease are in Redis, its credentials are not.
    wait_state(p, job_id, "running")
    assert redis.exists("predcache:job:%s:lease" % job_id) == 1
    assert_nowhere(redis, p, SECRET)

    done = wait_finished(p, job_id)
    assert done.status_code == 200, done.text
    assert done.headers["X-Job-Status"] == "done"
    # The model server received the credentials, on the job's own request.
    assert done.json()["received"]["auth_sha256"] == auth_digest(BEARER)
    last = model.last()
    assert last["headers"]["authorization"] == BEARER
    assert last["headers"]["x-predcache-job"] == job_id
    assert "prefer" not in last["headers"]
    assert model.count() == 1

    # Run here, from memory: never in the stream, the record names its runner and scope.
    assert redis.exists(STREAM) == 0
    rec = record(redis, job_id)
    assert rec["state"] == b"done" and rec["attempts"] == b"1", rec
    assert rec["runs_in"] == rec["consumer"]
    # printf 'authorization\n19:Bearer alice-secret\n' | sha256sum
    assert rec["credential_scope"] == \
        b"86b3d812fc2105bbfd6dfc84e867e6fcf4598b57446ef80c1bb7716af070d7c0"
    assert rec["credential_scope"].decode() == sha256_hex("authorization\n19:%s\n" % BEARER)
    wait_for(lambda: redis.exists("predcache:job:%s:lease" % job_id) == 0,
             what="the lease to go")
    assert poll(p, job_id).content == done.content
    assert_nowhere(redis, p, SECRET)
    assert p.metric("predcache_jobs_done_total") == 1
    assert p.metric("predcache_jobs_running") == 0


def test_a_credentialed_job_is_shown_only_to_its_credentials(start_predcache, model, redis):
    """Its id alone is no right to its answer: another client, or none, is told there is no
    such job (404, the same as an unknown id); the submitter gets it."""
    p = start_predcache(conf=local_conf())
    job_id = job_id_of(submit(p, {"instances": ["private"]}, headers={"Authorization": BEARER}))
    done = wait_finished(p, job_id)
    assert done.status_code == 200, done.text
    for other in ({}, {"Authorization": "Bearer bob"}, {"Cookie": "a=b"}):
        r = poll(p, job_id, headers=other)
        assert r.status_code == 404, (other, r.status_code, r.text)
        assert "private" not in r.text and r.json()["error"].startswith("no such job")
    assert poll(p, job_id).content == done.content


def test_local_job_with_a_cookie(start_predcache, model, redis):
    p = start_predcache(conf=local_conf())
    cookie = "session=alice-secret-cookie; theme=dark"
    job_id = job_id_of(submit(p, {"inputs": [[1, 2]]}, headers={"Cookie": cookie}))
    done = wait_finished(p, job_id)
    assert done.status_code == 200 and done.headers["X-Job-Status"] == "done", done.text
    assert done.json()["received"]["auth_sha256"] == auth_digest(cookie=cookie)
    assert model.last()["headers"]["cookie"] == cookie
    assert redis.exists(STREAM) == 0
    assert record(redis, job_id)["credential_scope"].decode() == \
        sha256_hex("cookie\n%d:%s\n" % (len(cookie), cookie))
    assert_nowhere(redis, p, SECRET)


def test_local_job_with_a_configured_credential_header(start_predcache, model, redis):
    p = start_predcache(conf={**local_conf(), "cache": {"credential_headers": "X-Api-Key"}})
    job_id = job_id_of(submit(p, {"instances": [3]}, headers={"x-api-key": "k-" + SECRET}))
    done = wait_finished(p, job_id)
    assert done.status_code == 200, done.text
    assert model.last()["headers"]["x-api-key"] == "k-" + SECRET
    assert redis.exists(STREAM) == 0
    assert_nowhere(redis, p, SECRET)


def test_local_is_the_default_and_jobs_without_credentials_are_unchanged(start_predcache, model,
                                                                         redis):
    p = start_predcache(conf={"log": {"level": "debug"}})
    plain = job_id_of(submit(p, {"instances": ["plain"]}))
    assert wait_finished(p, plain).status_code == 200
    assert "runs_in" not in record(redis, plain)
    assert "credential_scope" not in record(redis, plain)
    assert redis.exists(STREAM) == 1  # went through the stream, as before
    secret = job_id_of(submit(p, {"instances": ["both"]},
                              headers={"Authorization": BEARER, "Cookie": "c=" + SECRET}))
    done = wait_finished(p, secret)
    assert done.status_code == 200
    assert done.json()["received"]["auth_sha256"] == auth_digest(BEARER, "c=" + SECRET)
    assert record(redis, secret)["runs_in"]
    assert_nowhere(redis, p, SECRET)


def test_async_alias_with_credentials_runs_locally(start_predcache, model, redis):
    p = start_predcache(conf=local_conf())
    r = p.post("/async" + ROUTE + "?v=1", json_body={"instances": [5]},
               headers={"Authorization": BEARER})
    assert r.status_code == 202, r.text
    SUBMITTED_WITH[job_id_of(r)] = {"Authorization": BEARER}
    done = wait_finished(p, job_id_of(r))
    assert done.status_code == 200
    assert model.last()["query"] == "v=1" and model.last()["headers"]["authorization"] == BEARER
    assert redis.exists(STREAM) == 0
    assert_nowhere(redis, p, SECRET)


def test_local_jobs_respect_concurrency_and_max_queue(start_predcache, model, redis):
    """concurrency 1: local jobs run one at a time; max_queue 2: a third unfinished local
    job in this process is answered 429."""
    p = start_predcache(conf=local_conf(concurrency=1, max_queue=2))
    model.control(delay_ms=800)
    auth = {"Authorization": BEARER}
    first = job_id_of(submit(p, {"instances": [1]}, headers=auth))
    wait_state(p, first, "running")
    second = job_id_of(submit(p, {"instances": [2]}, headers=auth))
    assert poll(p, second).json()["status"] == "queued"
    r = submit(p, {"instances": [3]}, headers=auth, expect=429)
    assert "job queue full" in r.json()["error"] and r.headers.get("Retry-After") == "1"
    assert wait_finished(p, first).status_code == 200
    assert wait_finished(p, second).status_code == 200
    assert model.count() == 2
    assert redis.exists(STREAM) == 0
    # The two ran one after the other.
    a, b = record(redis, first), record(redis, second)
    assert int(b["started_at"]) >= int(a["finished_at"])
    model.control()
    assert wait_finished(p, job_id_of(submit(p, {"instances": [3]}, headers=auth))) \
        .status_code == 200
    assert_nowhere(redis, p, SECRET)


def test_local_and_stream_jobs_share_the_slots(start_predcache, model, redis):
    """concurrency 2 holds for local and stream jobs together; the local ones never reach
    the stream, whose entries carry no credential while they wait."""
    p = start_predcache(conf=local_conf(concurrency=2))
    model.control(delay_ms=300)
    ids = []
    for i in range(8):
        headers = {"Authorization": BEARER} if i % 2 else None
        ids.append(job_id_of(submit(p, {"instances": [i]}, headers=headers)))
    assert_nowhere(redis, p, SECRET)  # while most of them wait
    peak, deadline = 0, time.monotonic() + 20
    while not all(record(redis, i).get("state") in (b"done", b"failed") for i in ids):
        assert time.monotonic() < deadline, "the jobs did not finish"
        peak = max(peak, p.metric("predcache_jobs_running"))
        time.sleep(0.02)
    assert 1 <= peak <= 2
    for job_id in ids:
        assert wait_finished(p, job_id).status_code == 200
    assert model.count() == 8
    local = [i for n, i in enumerate(ids) if n % 2]
    assert all(record(redis, i).get("runs_in") for i in local)
    assert redis.command("XLEN", STREAM) == 0
    assert_nowhere(redis, p, SECRET)


def test_concurrency_0_refuses_credentials(start_predcache, model, redis):
    p = start_predcache(conf=local_conf(concurrency=0))
    r = submit(p, {"instances": [1]}, headers={"Authorization": BEARER}, expect=400)
    assert "concurrency = 0" in r.json()["error"]
    assert redis.keys("predcache:job:*") == []
    submit(p, {"instances": [1]})  # a job without credentials is taken, for another process
    assert_nowhere(redis, p, SECRET)


# --------------------------------------------------------------------------- refuse


def test_refuse(start_predcache, model, redis):
    p = start_predcache(conf={"jobs": {"credentials": "refuse"}, "log": {"level": "debug"},
                              "cache": {"credential_headers": "X-Api-Key"}})
    for headers in ({"Authorization": BEARER}, {"Cookie": "s=" + SECRET},
                    {"Proxy-Authorization": "Basic " + SECRET}, {"X-API-KEY": SECRET}):
        r = submit(p, {"instances": [1]}, headers=headers, expect=400)
        assert r.headers["Content-Type"] == "application/json"
        err = r.json()["error"]
        assert "do not take credentials" in err and "[jobs] credentials" in err, err
        assert list(headers)[0] in err  # names the header, never its value
        assert SECRET not in r.text
    r = p.post("/async" + ROUTE, json_body={"instances": [1]}, headers={"Authorization": BEARER})
    assert r.status_code == 400 and "credentials" in r.json()["error"]
    assert redis.keys("*") == [], "nothing written to Redis"
    assert model.count() == 0
    # Synchronous requests with credentials and jobs without them work as usual.
    sync = p.post(ROUTE, json_body={"instances": [1]}, headers={"Authorization": BEARER})
    assert sync.status_code == 200
    job_id = job_id_of(submit(p, {"instances": [2]}))
    assert wait_finished(p, job_id).status_code == 200
    assert redis.keys("predcache:job:*") == ["predcache:job:" + job_id]
    assert SECRET not in p.stdout_text() and SECRET not in p.stderr_text()


# --------------------------------------------------------------------------- stopping


def test_sigterm_fails_held_local_jobs_and_nobody_runs_them(start_predcache, model, redis):
    """SIGTERM with one local job running and one waiting for the slot: the running one
    finishes within the drain; the waiting one is failed at once (its credentials were only
    in that process's memory). No other process ever runs either."""
    conf = local_conf(concurrency=1, claim_after_ms=1000)
    p1 = start_predcache(conf=conf)
    p2 = start_predcache(conf=conf)  # a second process on the same queue
    model.control(delay_ms=1500)
    auth = {"Authorization": BEARER}
    running = job_id_of(submit(p1, {"instances": ["running"]}, headers=auth))
    wait_for(lambda: model.count() == 1, what="the job's request at the model server")
    waiting = job_id_of(submit(p1, {"instances": ["waiting"]}, headers=auth))
    assert record(redis, waiting)["state"] == b"queued"

    p1.proc.send_signal(signal.SIGTERM)
    assert p1.proc.wait(timeout=10) == 0
    rec = record(redis, running)
    assert rec["state"] == b"done", rec
    rec = record(redis, waiting)
    assert rec["state"] == b"failed", rec

    r = poll(p2, waiting)
    assert r.status_code == 500 and r.headers["X-Job-Status"] == "failed"
    err = r.json()["error"]
    assert "shut down" in err and "credentials = local" in err, err
    assert poll(p2, running).status_code == 200

    model.control()
    time.sleep(2.5)  # more than claim_after_ms: anything abandoned would be taken over now
    assert model.count() == 1, "no process ran the waiting job"
    assert record(redis, waiting)["state"] == b"failed"
    assert p2.metric("predcache_jobs_done_total") == 0
    assert redis.exists(STREAM) == 0
    assert_nowhere(redis, p1, SECRET)
    assert_nowhere(redis, p2, SECRET)


def test_drain_deadline_fails_the_running_local_job(start_predcache, model, redis):
    """Cut off by drain_timeout_ms, a local job is failed, not handed back: nobody else has
    its credentials."""
    conf = local_conf(claim_after_ms=1000)
    conf["server"] = {"drain_timeout_ms": "300"}
    p1 = start_predcache(conf=conf)
    model.control(delay_ms=3000)
    job_id = job_id_of(submit(p1, {"instances": ["cut off"]}, headers={"Cookie": SECRET}))
    wait_state(p1, job_id, "running")
    wait_for(lambda: model.count() == 1, what="the job's request at the model server")
    p1.proc.send_signal(signal.SIGTERM)
    assert p1.proc.wait(timeout=10) == 0
    rec = record(redis, job_id)
    assert rec["state"] == b"failed", rec
    assert redis.exists("predcache:job:%s:lease" % job_id) == 0

    model.control()
    p2 = start_predcache(conf=local_conf(claim_after_ms=1000))
    r = poll(p2, job_id)
    assert r.status_code == 500 and "shut down first" in r.json()["error"], r.text
    time.sleep(2.0)
    assert model.count() == 1 and record(redis, job_id)["state"] == b"failed"
    assert_nowhere(redis, p1, SECRET)
    assert_nowhere(redis, p2, SECRET)


def test_killed_holder_local_job_is_failed_by_the_next_poll(start_predcache, model, redis):
    """SIGKILL leaves no chance to record anything: the holder's lease runs out after
    claim_after_ms and the next poll (any process) records the job failed."""
    conf = local_conf(claim_after_ms=1000, concurrency=1)
    p1 = start_predcache(conf=conf)
    model.control(delay_ms=2000)
    auth = {"Authorization": BEARER}
    running = job_id_of(submit(p1, {"instances": ["killed"]}, headers=auth))
    wait_for(lambda: model.count() == 1, what="the job's request at the model server")
    waiting = job_id_of(submit(p1, {"instances": ["never"]}, headers=auth))
    p1.proc.send_signal(signal.SIGKILL)
    p1.proc.wait(timeout=10)
    assert record(redis, running)["state"] == b"running"
    assert record(redis, waiting)["state"] == b"queued"

    model.control()
    p2 = start_predcache(conf=conf)
    for job_id in (running, waiting):
        r = wait_finished(p2, job_id, timeout=10)
        assert r.status_code == 500 and r.headers["X-Job-Status"] == "failed", r.text
        assert "job lost" in r.json()["error"]
        assert record(redis, job_id)["state"] == b"failed"
    time.sleep(1.5)
    assert model.count() == 1, "never run again"
    assert_nowhere(redis, p2, SECRET)
    assert SECRET not in p1.stdout_text() and SECRET not in p1.stderr_text()


def test_a_live_holder_keeps_its_lease(start_predcache, model, redis):
    """A local job waiting longer than claim_after_ms is not taken for lost: its holder
    renews the lease."""
    p = start_predcache(conf=local_conf(claim_after_ms=600, concurrency=1))
    model.control(delay_ms=2000)
    auth = {"Authorization": BEARER}
    first = job_id_of(submit(p, {"instances": [1]}, headers=auth))
    wait_state(p, first, "running")
    second = job_id_of(submit(p, {"instances": [2]}, headers=auth))
    for _ in range(10):  # 1.5 s of polls, past the lease's 600 ms
        assert poll(p, second).json()["status"] == "queued"
        time.sleep(0.15)
    assert wait_finished(p, first).status_code == 200
    assert wait_finished(p, second).status_code == 200
    assert model.count() == 2
