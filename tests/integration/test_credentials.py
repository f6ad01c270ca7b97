"""Credentials: a shared cache must not hand one user's answer to another (RFC 9111 3.5).

[cache] credentials (and per [route NAME]):
    isolate (default)  the credential scope (a hash of Authorization, Proxy-Authorization,
                       Cookie and [cache] credential_headers) joins the key: alice, bob and
                       anonymous requests each have their own entries
    shared             credentials are not in the key: bob hits alice's entry
    bypass             requests carrying any are forwarded (X-Cache: PASS, X-Cache-Reason:
                       credentials), never stored
[jobs] credentials = local (the accepting process runs the job, the credentials only in
its memory) | refuse (400).

Credential values are never logged and never stored: after each run every Redis value
(strings, hashes, lists, sets, sorted sets, job streams) and predcache's stdout and stderr
are searched for them. Every answer goes through the oracle, which checks that it was
computed under the requester's own credentials (the model server digests Authorization,
Cookie and X-Api-Key into "received").
"""

import json
import time

import requests

from conftest import HTTP_TIMEOUT, assert_no_secrets
from jobs import job_id_of, submit, submit_running, wait_done
from oracle import Oracle, auth_digest, post_checked

PREDICT = "/v1/models/m:predict"
PLAIN = "/predict"
JSON_CT = {"Content-Type": "application/json"}

# Distinctive values, so that a search of logs and Redis cannot miss them.
ALICE = "Bearer alice-secret-7d1f09"
BOB = "Bearer bob-secret-52e8aa"
SECRETS = ["alice-secret-7d1f09", "bob-secret-52e8aa", "carol-cookie-91b3", "dave-cookie-0c44",
           "erin-apikey-6a2d", "frank-apikey-e7f1", "grace-proxy-3b9c", "heidi-proxy-8d02"]


def model_auths(model):
    """auth_sha256 of each request the model server received, in order."""
    recs = requests.get(model.url("/_requests"), timeout=HTTP_TIMEOUT).json()["requests"]
    return [auth_digest(rec["headers"]) for rec in recs]


def three_scopes(p, model, redis, header, alice, bob, path=PREDICT, body=None):
    """alice, anonymous and bob each miss once, then each hits its own entry."""
    oracle = Oracle("isolate %s" % header)
    body = body or {"instances": ["scoped-%s" % header]}
    who = [("alice", {header: alice}), ("anonymous", {}), ("bob", {header: bob})]
    keys = {}
    for name, hdrs in who:
        r = post_checked(p.url(), oracle, path, body, hdrs)
        assert r.headers["X-Cache"] == "MISS", (name, r.headers.get("X-Cache"))
        keys[name] = r.headers["X-Cache-Key"]
        redis.wait_key(keys[name])
    assert len(set(keys.values())) == 3, keys
    for name, hdrs in who:
        r = post_checked(p.url(), oracle, path, body, hdrs)
        assert r.headers["X-Cache"] == "HIT", (name, r.headers.get("X-Cache"))
        assert r.headers["X-Cache-Key"] == keys[name], name
    oracle.assert_clean()
    assert model.count() == 3
    return keys


# --------------------------------------------------------------------------- isolate


def test_isolate_authorization(start_predcache, model, redis):
    p = start_predcache()
    three_scopes(p, model, redis, "Authorization", ALICE, BOB)
    # the model server saw each one under its own credentials
    assert model_auths(model) == [auth_digest({"Authorization": ALICE}), None,
                                  auth_digest({"Authorization": BOB})]


def test_isolate_cookie(start_predcache, model, redis):
    p = start_predcache()
    three_scopes(p, model, redis, "Cookie", "session=carol-cookie-91b3",
                 "session=dave-cookie-0c44")
    assert model_auths(model)[1] is None and len(set(model_auths(model))) == 3


def test_isolate_credential_headers(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"credential_headers": "X-Api-Key"},
                              "log": {"level": "debug"}})
    three_scopes(p, model, redis, "X-Api-Key", "erin-apikey-6a2d", "frank-apikey-e7f1")
    assert len(set(model_auths(model))) == 3
    assert_no_secrets(redis, p, SECRETS)


def test_isolate_proxy_authorization(start_predcache, model, redis):
    """Proxy-Authorization is hop-by-hop (the model server never sees it), but it is the
    client's identity at the proxy: its scope is its own."""
    p = start_predcache()
    oracle = Oracle("proxy-authorization")
    body = {"instances": ["proxy-auth"]}
    ra = post_checked(p.url(), oracle, PREDICT, body,
                      {"Proxy-Authorization": "Basic grace-proxy-3b9c"})
    redis.wait_key(ra.headers["X-Cache-Key"])
    rb = post_checked(p.url(), oracle, PREDICT, body,
                      {"Proxy-Authorization": "Basic heidi-proxy-8d02"})
    assert rb.headers["X-Cache"] == "MISS"
    assert rb.headers["X-Cache-Key"] != ra.headers["X-Cache-Key"]
    assert "proxy-authorization" not in model.last()["headers"]
    oracle.assert_clean()


def test_isolate_is_per_route_overridable(start_predcache, model, redis):
    """[route NAME] credentials = shared on one route; the others keep isolate."""
    p = start_predcache(conf={"route tenants": {"match": "POST /predict",
                                                "credentials": "shared"}})
    shared = Oracle("shared route", check_auth=False)
    body = {"image_data": "c2hhcmVk"}
    ra = post_checked(p.url(), shared, PLAIN, body, {"Authorization": ALICE})
    redis.wait_key(ra.headers["X-Cache-Key"])
    rb = post_checked(p.url(), shared, PLAIN, body, {"Authorization": BOB})
    assert rb.headers["X-Cache"] == "HIT" and rb.headers["X-Cache-Key"] == ra.headers["X-Cache-Key"]
    shared.assert_clean()
    assert model.count() == 1
    model.reset()
    # the TF Serving route still isolates
    three_scopes(p, model, redis, "Authorization", ALICE, BOB)


# --------------------------------------------------------------------------- shared, bypass


def test_shared(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"credentials": "shared"}})
    oracle = Oracle("shared", check_auth=False)
    body = {"instances": ["public-model"]}
    ra = post_checked(p.url(), oracle, PREDICT, body, {"Authorization": ALICE})
    assert ra.headers["X-Cache"] == "MISS"
    redis.wait_key(ra.headers["X-Cache-Key"])
    for hdrs in ({"Authorization": BOB}, {}, {"Cookie": "session=carol-cookie-91b3"}):
        r = post_checked(p.url(), oracle, PREDICT, body, hdrs)
        assert r.headers["X-Cache"] == "HIT", (hdrs, r.headers.get("X-Cache"))
        assert r.headers["X-Cache-Key"] == ra.headers["X-Cache-Key"]
    oracle.assert_clean()
    assert model.count() == 1


def test_bypass(start_predcache, model, redis):
    p = start_predcache(conf={"cache": {"credentials": "bypass"}})
    oracle = Oracle("bypass")
    body = {"instances": ["with-credentials"]}
    for i, hdrs in enumerate([{"Authorization": ALICE}, {"Authorization": ALICE},
                              {"Cookie": "session=carol-cookie-91b3"},
                              {"Proxy-Authorization": "Basic grace-proxy-3b9c"}]):
        r = post_checked(p.url(), oracle, PREDICT, body, hdrs)
        assert (r.headers.get("X-Cache"), r.headers.get("X-Cache-Reason")) == \
            ("PASS", "credentials"), (hdrs, r.headers.get("X-Cache"))
        assert "X-Cache-Key" not in r.headers
        assert model.count() == i + 1
    time.sleep(0.3)  # stores are asynchronous: give a wrong one the time to land
    assert [k for k in redis.keys() if ":v1:" in k or ":v2:" in k] == []
    # anonymous requests are still cached
    r = post_checked(p.url(), oracle, PREDICT, body)
    assert r.headers["X-Cache"] == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    assert post_checked(p.url(), oracle, PREDICT, body).headers["X-Cache"] == "HIT"
    oracle.assert_clean()
    assert_no_secrets(redis, p, SECRETS)


# --------------------------------------------------------------------------- never kept


def assert_job_answer(oracle, body, auth, done, what):
    """A job's answer (done: the poll that found it finished) is the model's answer to
    body under the submitter's Authorization."""
    assert done.status_code == 200, done.text[:300]
    reason = oracle.check("POST", PREDICT, json.dumps(body), dict(JSON_CT, Authorization=auth),
                          done.status_code, done.content, done.headers.get("X-Cache"))
    assert reason is None, "%s: %s" % (what, reason)


EVERYONE = [{"Authorization": ALICE}, {"Authorization": BOB},
            {"Cookie": "session=carol-cookie-91b3"}, {"Cookie": "session=dave-cookie-0c44"},
            {"X-Api-Key": "erin-apikey-6a2d"}, {"X-Api-Key": "frank-apikey-e7f1"},
            {"Proxy-Authorization": "Basic grace-proxy-3b9c"},
            {"Proxy-Authorization": "Basic heidi-proxy-8d02"}]


def test_credentials_never_logged_nor_stored(start_predcache, model, redis):
    """Debug logging, the default credential headers, synchronous requests and a job
    (default [jobs] credentials): no credential value in the logs nor anywhere in Redis."""
    p = start_predcache(conf={"log": {"level": "debug"}})
    oracle = Oracle("no secrets kept")
    for i, hdrs in enumerate(h for h in EVERYONE if "X-Api-Key" not in h):
        body = {"instances": ["kept-%d" % i]}  # one each: isolation is tested above
        post_checked(p.url(), oracle, PREDICT, body, hdrs)
        post_checked(p.url(), oracle, PREDICT, body, hdrs)
    # a job, searched for while it runs (its stream entry and record exist) and after
    model.control(delay_ms=1000)
    job = submit_running(p, model, {"instances": ["job-input"]}, {"Authorization": ALICE})
    during = assert_no_secrets(redis, p, SECRETS)
    assert any(b"job" in k for k in during), "no job state in Redis: %s" % sorted(during)
    done = wait_done(p, job, headers={"Authorization": ALICE})
    assert_job_answer(oracle, {"instances": ["job-input"]}, ALICE, done, "the job's answer")
    oracle.assert_clean()
    assert_no_secrets(redis, p, SECRETS)


def test_job_credentials_local(start_predcache, model, redis):
    """local: the job runs with the submitter's credentials (the model sees them, the
    answer is alice's), bob's identical job is his own, and Redis never holds them."""
    p = start_predcache(conf={"jobs": {"credentials": "local"}})
    oracle = Oracle("jobs local")
    body = {"instances": ["job-scoped"]}
    answers = {}
    for name, auth in (("alice", ALICE), ("bob", BOB), ("alice again", ALICE)):
        job = job_id_of(submit(p, body, {"Authorization": auth}))
        done = wait_done(p, job, headers={"Authorization": auth})
        assert_job_answer(oracle, body, auth, done, "%s's job" % name)
        answers[name] = done
    assert answers["alice again"].headers.get("X-Cache") == "HIT"
    assert answers["bob"].headers.get("X-Cache") == "MISS"
    oracle.assert_clean()
    assert model.count() == 2
    assert sorted(a for a in model_auths(model)) == sorted(
        [auth_digest({"Authorization": ALICE}),
         auth_digest({"Authorization": BOB})])
    assert_no_secrets(redis, p, SECRETS)


def test_job_credentials_refuse(start_predcache, model, redis):
    p = start_predcache(conf={"jobs": {"credentials": "refuse"}})
    for hdrs in ({"Authorization": ALICE}, {"Cookie": "session=carol-cookie-91b3"}):
        r = submit(p, {"instances": ["refused"]}, hdrs, expect=None)
        assert r.status_code == 400, (hdrs, r.status_code, r.text[:300])
        assert r.headers.get("Content-Type", "").startswith("application/json")
        doc = r.json()
        assert isinstance(doc.get("error"), str) and doc["error"], doc
    assert model.count() == 0
    # a job without credentials is still accepted, and a synchronous request with them works
    job = job_id_of(submit(p, {"instances": ["anonymous-job"]}))
    assert wait_done(p, job).status_code == 200
    oracle = Oracle("refuse, synchronous")
    post_checked(p.url(), oracle, PREDICT, {"instances": ["sync"]}, {"Authorization": ALICE})
    oracle.assert_clean()
    assert_no_secrets(redis, p, SECRETS)
