"""Async jobs never keep credentials ([jobs] credentials = refuse | local).

A job request carrying Authorization, Proxy-Authorization, Cookie or a [cache]
credential_headers name is either refused (400) or run by the accepting process from its
own memory: the credential values reach the model server but never Redis (not the stream,
not the job record, not a cache entry), never a log, and never another process. Every test
checks Redis key by key (SCAN, then each key's value by its type) for the secret.
"""

import signal
import time

from conftest import assert_no_secrets, wait_for
from jobs import (ROUTE, STREAM, job_id_of, poll, record, submit, submit_running, wait_done,
                  wait_state)
from oracle import auth_digest, sha256_hex

SECRET = "alice-secret"
BEARER = "Bearer " + SECRET
AUTH = {"Authorization": BEARER}


# --------------------------------------------------------------------------- helpers


def assert_nowhere(redis, p, secret):
    """secret is in no Redis key or value, and in none of predcache's output."""
    dump = assert_no_secrets(redis, p, [secret])
    assert dump, "the scan found no key at all"


def running_and_queued(p, model, delay_ms):
    """Two local jobs with AUTH on a concurrency-1 process, the model taking delay_ms to
    answer: the first running (its request at the model server), the second waiting for
    the slot. Returns their ids."""
    model.control(delay_ms=delay_ms)
    first = submit_running(p, model, {"instances": ["first"]}, headers=AUTH)
    second = job_id_of(submit(p, {"instances": ["second"]}, headers=AUTH))
    return first, second


def local_conf(**jobs):
    conf = {"jobs": {"credentials": "local"}, "log": {"level": "debug"}}
    conf["jobs"].update({k: str(v) for k, v in jobs.items()})
    return conf


# --------------------------------------------------------------------------- local


def test_local_job_with_authorization(start_predcache, model, redis):
    p = start_predcache(conf=local_conf())
    model.control(delay_ms=600)
    r = submit(p, {"instances": ["alice"]}, headers=AUTH)
    job_id = job_id_of(r)
    assert r.headers["Location"] == "/jobs/" + job_id
    assert r.headers["Preference-Applied"] == "respond-async"
    # While it runs: its record and lease are in Redis, its credentials are not.
    wait_state(p, job_id, "running")
    assert redis.exists("predcache:job:{default}:%s:lease" % job_id) == 1
    assert_nowhere(redis, p, SECRET)

    done = wait_done(p, job_id)
    assert done.status_code == 200, done.text
    assert done.headers["X-Job-Status"] == "done"
    # The model server received the credentials, on the job's own request.
    assert done.json()["received"]["auth_sha256"] == auth_digest(AUTH)
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
    wait_for(lambda: redis.exists("predcache:job:{default}:%s:lease" % job_id) == 0,
             what="the lease to go")
    assert poll(p, job_id).content == done.content
    assert_nowhere(redis, p, SECRET)
    assert p.metric("predcache_jobs_done_total") == 1
    assert p.metric("predcache_jobs_running") == 0


def test_a_credentialed_job_is_shown_only_to_its_credentials(start_predcache, model, redis):
    """Its id alone is no right to its answer: another client, or none, is told there is no
    such job (404, the same as an unknown id); the submitter gets it."""
    p = start_predcache(conf=local_conf())
    job_id = job_id_of(submit(p, {"instances": ["private"]}, headers=AUTH))
    done = wait_done(p, job_id)
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
    done = wait_done(p, job_id)
    assert done.status_code == 200 and done.headers["X-Job-Status"] == "done", done.text
    assert done.json()["received"]["auth_sha256"] == auth_digest({"Cookie": cookie})
    assert model.last()["headers"]["cookie"] == cookie
    assert redis.exists(STREAM) == 0
    assert record(redis, job_id)["credential_scope"].decode() == \
        sha256_hex("cookie\n%d:%s\n" % (len(cookie), cookie))
    assert_nowhere(redis, p, SECRET)


def test_local_job_with_a_configured_credential_header(start_predcache, model, redis):
    p = start_predcache(conf={**local_conf(), "cache": {"credential_headers": "X-Api-Key"}})
    job_id = job_id_of(submit(p, {"instances": [3]}, headers={"x-api-key": "k-" + SECRET}))
    done = wait_done(p, job_id)
    assert done.status_code == 200, done.text
    assert model.last()["headers"]["x-api-key"] == "k-" + SECRET
    assert redis.exists(STREAM) == 0
    assert_nowhere(redis, p, SECRET)


def test_local_is_the_default_and_jobs_without_credentials_are_unchanged(start_predcache, model,
                                                                         redis):
    p = start_predcache(conf={"log": {"level": "debug"}})
    plain = job_id_of(submit(p, {"instances": ["plain"]}))
    assert wait_done(p, plain).status_code == 200
    assert "runs_in" not in record(redis, plain)
    assert "credential_scope" not in record(redis, plain)
    assert redis.exists(STREAM) == 1  # went through the stream, as before
    secret = job_id_of(submit(p, {"instances": ["both"]},
                              headers={"Authorization": BEARER, "Cookie": "c=" + SECRET}))
    done = wait_done(p, secret)
    assert done.status_code == 200
    assert done.json()["received"]["auth_sha256"] == auth_digest(
        {"Authorization": BEARER, "Cookie": "c=" + SECRET})
    assert record(redis, secret)["runs_in"]
    assert_nowhere(redis, p, SECRET)


def test_async_alias_with_credentials_runs_locally(start_predcache, model, redis):
    p = start_predcache(conf=local_conf())
    r = p.post("/async" + ROUTE + "?v=1", json_body={"instances": [5]}, headers=AUTH)
    assert r.status_code == 202, r.text
    done = wait_done(p, job_id_of(r), headers=AUTH)
    assert done.status_code == 200
    assert model.last()["query"] == "v=1" and model.last()["headers"]["authorization"] == BEARER
    assert redis.exists(STREAM) == 0
    assert_nowhere(redis, p, SECRET)


def test_local_jobs_respect_concurrency_and_max_queue(start_predcache, model, redis):
    """concurrency 1: local jobs run one at a time; max_queue 2: a third unfinished local
    job in this process is answered 429."""
    p = start_predcache(conf=local_conf(concurrency=1, max_queue=2))
    first, second = running_and_queued(p, model, delay_ms=800)
    assert poll(p, second).json()["status"] == "queued"
    r = submit(p, {"instances": [3]}, headers=AUTH, expect=429)
    assert "job queue full" in r.json()["error"] and r.headers.get("Retry-After") == "1"
    assert wait_done(p, first).status_code == 200
    assert wait_done(p, second).status_code == 200
    assert model.count() == 2
    assert redis.exists(STREAM) == 0
    # The two ran one after the other.
    a, b = record(redis, first), record(redis, second)
    assert int(b["started_at"]) >= int(a["finished_at"])
    model.control()
    assert wait_done(p, job_id_of(submit(p, {"instances": [3]}, headers=AUTH))) \
        .status_code == 200
    assert_nowhere(redis, p, SECRET)


def test_local_and_stream_jobs_share_the_slots(start_predcache, model, redis):
    """concurrency 2 holds for local and stream jobs together; the local ones never reach
    the stream, whose entries carry no credential while they wait."""
    p = start_predcache(conf=local_conf(concurrency=2))
    model.control(delay_ms=300)
    ids = []
    for i in range(8):
        headers = AUTH if i % 2 else None
        ids.append(job_id_of(submit(p, {"instances": [i]}, headers=headers)))
    assert_nowhere(redis, p, SECRET)  # while most of them wait
    peak, deadline = 0, time.monotonic() + 20
    while not all(record(redis, i).get("state") in (b"done", b"failed") for i in ids):
        assert time.monotonic() < deadline, "the jobs did not finish"
        peak = max(peak, p.metric("predcache_jobs_running"))
        time.sleep(0.02)
    assert 1 <= peak <= 2
    for job_id in ids:
        assert wait_done(p, job_id).status_code == 200
    assert model.count() == 8
    local = [i for n, i in enumerate(ids) if n % 2]
    assert all(record(redis, i).get("runs_in") for i in local)
    assert redis.command("XLEN", STREAM) == 0
    assert_nowhere(redis, p, SECRET)


def test_concurrency_0_refuses_credentials(start_predcache, model, redis):
    p = start_predcache(conf=local_conf(concurrency=0))
    r = submit(p, {"instances": [1]}, headers=AUTH, expect=400)
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
    r = p.post("/async" + ROUTE, json_body={"instances": [1]}, headers=AUTH)
    assert r.status_code == 400 and "credentials" in r.json()["error"]
    assert redis.keys("*") == [], "nothing written to Redis"
    assert model.count() == 0
    # Synchronous requests with credentials and jobs without them work as usual.
    sync = p.post(ROUTE, json_body={"instances": [1]}, headers=AUTH)
    assert sync.status_code == 200
    job_id = job_id_of(submit(p, {"instances": [2]}))
    assert wait_done(p, job_id).status_code == 200
    assert redis.keys("predcache:job:*") == ["predcache:job:{default}:" + job_id]
    assert SECRET not in p.stdout_text() and SECRET not in p.stderr_text()


# --------------------------------------------------------------------------- stopping


def test_sigterm_fails_held_local_jobs_and_nobody_runs_them(start_predcache, model, redis):
    """SIGTERM with one local job running and one waiting for the slot: the running one
    finishes within the drain; the waiting one is failed at once (its credentials were only
    in that process's memory). No other process ever runs either."""
    conf = local_conf(concurrency=1, claim_after_ms=1000)
    p1 = start_predcache(conf=conf)
    p2 = start_predcache(conf=conf)  # a second process on the same queue
    running, waiting = running_and_queued(p1, model, delay_ms=1500)
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
    job_id = submit_running(p1, model, {"instances": ["cut off"]}, headers={"Cookie": SECRET})
    p1.proc.send_signal(signal.SIGTERM)
    assert p1.proc.wait(timeout=10) == 0
    rec = record(redis, job_id)
    assert rec["state"] == b"failed", rec
    assert redis.exists("predcache:job:{default}:%s:lease" % job_id) == 0

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
    running, waiting = running_and_queued(p1, model, delay_ms=2000)
    p1.proc.send_signal(signal.SIGKILL)
    p1.proc.wait(timeout=10)
    assert record(redis, running)["state"] == b"running"
    assert record(redis, waiting)["state"] == b"queued"

    model.control()
    p2 = start_predcache(conf=conf)
    for job_id in (running, waiting):
        r = wait_done(p2, job_id, timeout=10)
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
    first, second = running_and_queued(p, model, delay_ms=2000)
    for _ in range(10):  # 1.5 s of polls, past the lease's 600 ms
        assert poll(p, second).json()["status"] == "queued"
        time.sleep(0.15)
    assert wait_done(p, first).status_code == 200
    assert wait_done(p, second).status_code == 200
    assert model.count() == 2
