"""Async job helpers shared by the job tests: submit, poll, wait, and the job's record.

A job submitted with credentials is only shown to a poll that presents the same ones
(anyone else is told there is no such job): submit() remembers the headers each job was
submitted with, and poll() and the waits present them again unless given others.
"""

import re

import requests

from conftest import HTTP_TIMEOUT, wait_for

ROUTE = "/v1/models/m:predict"
PREFER = {"Prefer": "respond-async"}
STREAM = "predcache:jobs:{default}"
# Job records and leases take the stream's hash tag (one Redis Cluster slot for all).
RECORD = "predcache:job:{default}:"


def record_key(job_id):
    return RECORD + job_id


def lease_key(job_id):
    return RECORD + job_id + ":lease"
JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")

_SUBMITTED_WITH = {}  # job id -> the headers it was submitted with (Prefer left out)


def submit(p, body, headers=None, route=ROUTE, expect=202):
    """POSTs body (a JSON value) to route with Prefer: respond-async and headers (which may
    replace that Prefer); asserts the answer's status is expect unless it is None."""
    hdrs = dict(PREFER)
    hdrs.update(headers or {})
    r = p.post(route, json_body=body, headers=hdrs)
    if expect is not None:
        assert r.status_code == expect, "submit: %d %s" % (r.status_code, r.text)
    if r.status_code == 202:
        _SUBMITTED_WITH[r.json()["job_id"]] = {
            k: v for k, v in (headers or {}).items() if k.lower() != "prefer"}
    return r


def job_id_of(r):
    doc = r.json()
    assert JOB_ID_RE.match(doc["job_id"]), r.text
    return doc["job_id"]


def poll(p, job_id, headers=None, path="/jobs/"):
    """GET path + job_id, with headers, or else the ones the job was submitted with."""
    if headers is None:
        headers = _SUBMITTED_WITH.get(job_id, {})
    return requests.get(p.url(path + job_id), headers=headers, timeout=HTTP_TIMEOUT)


def wait_done(p, job_id, timeout=20.0, headers=None):
    """Polls until the answer says the job is done or failed (X-Job-Status), or is neither
    202 nor a passing 503 (Redis reconnecting, as a client following Retry-After would);
    returns that answer, which must say done or failed."""
    def finished():
        r = poll(p, job_id, headers)
        if r.headers.get("X-Job-Status") in ("done", "failed") or \
                r.status_code not in (202, 503):
            return [r]  # a list: an error Response is falsy
        return None

    r = wait_for(finished, timeout=timeout, what="job %s to finish" % job_id)[0]
    assert r.headers.get("X-Job-Status") in ("done", "failed"), \
        "job %s: %d, X-Job-Status %r: %s" % (job_id, r.status_code,
                                            r.headers.get("X-Job-Status"), r.text[:300])
    return r


def wait_state(p, job_id, state, timeout=10.0, headers=None):
    def reached():
        r = poll(p, job_id, headers)
        return r.status_code == 202 and r.json().get("status") == state

    wait_for(reached, timeout=timeout, interval=0.02, what="job %s to be %s" % (job_id, state))


def submit_running(p, model, body, headers=None):
    """Submits a job and waits until it runs, its request at the model server: a signal
    sent between its record's "running" and its request reaching the model finds it not
    yet started (handed back, or failed). Returns its id."""
    before = model.count()
    job_id = job_id_of(submit(p, body, headers=headers))
    wait_state(p, job_id, "running")
    wait_for(lambda: model.count() == before + 1, what="the job's request at the model server")
    return job_id


def record(redis, job_id):
    """The job's record in Redis: {field: bytes}."""
    raw = redis.command("HGETALL", record_key(job_id)) or []
    return {raw[i].decode(): raw[i + 1] for i in range(0, len(raw), 2)}
