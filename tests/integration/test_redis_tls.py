"""Redis over TLS and with ACL users ([redis] tls, tls_*, username).

A throwaway CA, server and client certificates are made with the openssl command line in
the test's directory; Debian's redis-server serves TLS on --tls-port (its plain port stays
open on loopback for the test's own inspection). Every predict answer is judged by the
integrity oracle.
"""

import os
import subprocess
import time

import pytest
import requests

from conftest import REDIS_SERVER, RedisProcess, Resp, expected_key, canonical, free_port, wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=%s" % name, "-keyout", "%s.key" % name, "-out", "%s.pem" % name, cwd=d)


def make_cert(d, ca, name, san):
    """A certificate for name signed by ca, with subjectAltName san."""
    with open(os.path.join(d, "%s.ext" % name), "w") as f:
        f.write("subjectAltName = %s\n" % san)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % name, "-keyout",
            "%s.key" % name, "-out", "%s.csr" % name, cwd=d)
    openssl("x509", "-req", "-in", "%s.csr" % name, "-CA", "%s.pem" % ca, "-CAkey",
            "%s.key" % ca, "-CAcreateserial", "-days", "2", "-extfile", "%s.ext" % name,
            "-out", "%s.pem" % name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("pki"))
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "ca", "server", "IP:127.0.0.1,DNS:localhost")
    make_cert(d, "ca", "client", "DNS:predcache")
    return lambda name: os.path.join(d, name)


class TlsRedis(RedisProcess):
    """redis-server with a TLS port (and a plain one for the test), stopped by stop()."""

    def __init__(self, workdir, pki, auth_clients="no", extra=()):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port, self.tls_port = free_port(), free_port()
        self.pki, self.auth_clients, self.extra = pki, auth_clients, list(extra)
        self.start()

    def start(self):
        pki, auth_clients, extra = self.pki, self.auth_clients, self.extra
        self.log = os.path.join(self.dir, "redis-%d.log" % time.monotonic_ns())
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", self.dir, "--tls-port", str(self.tls_port),
               "--tls-cert-file", pki("server.pem"), "--tls-key-file", pki("server.key"),
               "--tls-ca-cert-file", pki("ca.pem"), "--tls-auth-clients", auth_clients]
        cmd += list(extra)
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

        def ping():
            assert self.proc.poll() is None, open(self.log).read()
            with Resp(self.port, timeout=1.0) as r:
                return r.command("PING") == "PONG"

        wait_for(ping, what="redis-server with TLS")



@pytest.fixture
def tls_redis(tmp_path, pki):
    servers = []

    def start(**kw):
        s = TlsRedis(tmp_path / ("tls-redis-%d" % len(servers)), pki, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def redis_conf(server, **options):
    conf = {"host": "127.0.0.1", "port": str(server.tls_port), "tls": "on",
            "timeout_ms": "1000"}
    conf.update(options)
    return {"redis": conf}


def miss_then_hit(p, server, tag):
    """A miss, then a hit from Redis through the TLS connection; the entry is in Redis."""
    oracle = Oracle(tag)
    body = '{"instances": [["%s"]]}' % tag
    xs = []
    for _ in range(2):
        r = p.post(PREDICT, body=body, timeout=10)
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        xs.append(r.headers.get("X-Cache"))
        if xs[0] == "MISS":
            key = expected_key(PREDICT, canonical({"instances": [[tag]]}))
            wait_for(lambda: server.command("EXISTS", key) == 1, timeout=5,
                     what="the entry stored over TLS")
    assert oracle.wrong == 0
    return xs


def test_one_way_tls_miss_then_hit(start_predcache, model, tls_redis, pki):
    server = tls_redis()
    p = start_predcache(conf=redis_conf(server, tls_ca_file=pki("ca.pem")))
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=10, what="redis up")
    assert miss_then_hit(p, server, "tls-one-way") == ["MISS", "HIT"]
    assert model.count() == 1
    # by name too: the certificate says localhost, SNI and the check use it
    q = start_predcache(conf=redis_conf(server, host="localhost", tls_ca_file=pki("ca.pem")))
    wait_for(lambda: q.metric("predcache_redis_up") == 1, timeout=10, what="redis up by name")
    assert miss_then_hit(q, server, "tls-one-way")[-1] == "HIT"


def test_mutual_tls(start_predcache, model, tls_redis, pki):
    server = tls_redis(auth_clients="yes")
    p = start_predcache(conf=redis_conf(server, tls_ca_file=pki("ca.pem"),
                                        tls_cert_file=pki("client.pem"),
                                        tls_key_file=pki("client.key")))
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=10, what="redis up")
    assert miss_then_hit(p, server, "tls-mutual") == ["MISS", "HIT"]


def test_mutual_tls_without_a_client_certificate_bypasses(start_predcache, model, tls_redis,
                                                          pki):
    server = tls_redis(auth_clients="yes")
    p = start_predcache(conf=redis_conf(server, tls_ca_file=pki("ca.pem")))
    oracle = Oracle("no client certificate")
    for i in range(3):
        body = '{"instances": [["no-cert", %d]]}' % i
        r = p.post(PREDICT, body=body, timeout=10)
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS"
    assert oracle.wrong == 0
    assert p.metric("predcache_redis_up") == 0
    assert p.proc.poll() is None


def test_a_wrong_ca_is_refused_with_a_clear_log_line(start_predcache, model, tls_redis, pki):
    server = tls_redis()
    p = start_predcache(conf=redis_conf(server, tls_ca_file=pki("other-ca.pem")))
    wait_for(lambda: "certificate verify failed" in p.stderr_text(), timeout=10,
             what="the handshake failure logged")
    line = next(l for l in p.stderr_text().splitlines() if "certificate verify failed" in l)
    print(line)
    assert "TLS handshake with Redis 127.0.0.1:%d failed" % server.tls_port in line
    r = p.post(PREDICT, body='{"instances": [["wrong-ca"]]}', timeout=10)
    assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS"
    assert p.metric("predcache_redis_up") == 0
    assert server.command("DBSIZE") == 0  # nothing went to a server it could not trust


def test_a_name_the_certificate_does_not_carry_is_refused(start_predcache, model, tls_redis,
                                                          pki):
    server = tls_redis()
    p = start_predcache(conf=redis_conf(server, tls_ca_file=pki("ca.pem"),
                                        tls_server_name="redis.example.com"))
    wait_for(lambda: "certificate verify failed" in p.stderr_text(), timeout=10,
             what="the name mismatch logged")
    assert "mismatch" in p.stderr_text()
    # tls_verify = off: the same server is used, unchecked (the operator's choice)
    q = start_predcache(conf=redis_conf(server, tls_ca_file=pki("other-ca.pem"),
                                        tls_verify="off"))
    wait_for(lambda: q.metric("predcache_redis_up") == 1, timeout=10, what="redis up")
    assert miss_then_hit(q, server, "tls-unverified") == ["MISS", "HIT"]


@pytest.mark.parametrize("options, words", [
    ({"tls_ca_file": "/nonexistent/ca.pem"}, ["tls_ca_file", "/nonexistent/ca.pem"]),
    ({"tls_cert_file": "CLIENT_PEM"}, ["tls_cert_file and tls_key_file go together"]),
    ({"tls_cert_file": "CLIENT_PEM", "tls_key_file": "SERVER_KEY"},
     ["does not match", "tls_key_file"]),
])
def test_tls_file_errors_are_known_at_check_and_start(predcache_bin, tmp_path, pki, options,
                                                      words):
    conf = tmp_path / "p.conf"
    names = {"CLIENT_PEM": pki("client.pem"), "SERVER_KEY": pki("server.key")}
    lines = ["[redis]", "tls = on"] + ["%s = %s" % (k, names.get(v, v))
                                       for k, v in options.items()]
    conf.write_text("\n".join(lines) + "\n")
    for extra in (["--check"], ["--listen", "127.0.0.1:%d" % free_port()]):
        r = subprocess.run([predcache_bin, "-c", str(conf)] + extra, capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 1, r
        for w in words:
            assert w in r.stderr, r.stderr


def test_tls_survives_a_redis_restart(start_predcache, model, tls_redis, pki):
    server = tls_redis()
    p = start_predcache(conf=redis_conf(server, tls_ca_file=pki("ca.pem")))
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=10, what="redis up")
    assert miss_then_hit(p, server, "before restart")[-1] == "HIT"
    server.proc.kill()
    server.proc.wait(10)
    r = p.post(PREDICT, body='{"instances": [["during"]]}', timeout=10)
    assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS"
    server.start()  # same ports, empty
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=10, what="reconnected")
    assert miss_then_hit(p, server, "after restart") == ["MISS", "HIT"]
    assert p.proc.poll() is None


# ------------------------------------------------------------------ ACL users


def test_acl_user_limited_to_the_prefix(start_predcache, model, redis):
    """A user with the key pattern and channels of predcache's prefix and the commands it
    uses: every feature works, the user reaches nothing else."""
    prefix = "pc:"
    redis.command("ACL", "SETUSER", "cache", "on", ">s3cret", "~%s*" % prefix,
                  "&%s*" % prefix, "+@all", "-@dangerous", "+info")
    redis.command("SET", "other:secret", "x")
    p = start_predcache(conf={"redis": {"username": "cache", "password": "s3cret"},
                              "cache": {"key_prefix": prefix}})
    wait_for(lambda: p.metric("predcache_redis_up") == 1, timeout=10, what="redis up")
    oracle = Oracle("acl user")
    xs = []
    for _ in range(2):
        body = '{"instances": [["acl"]]}'
        r = p.post(PREDICT, body=body, timeout=10)
        oracle.check("POST", PREDICT, body, {}, r.status_code, r.content,
                     r.headers.get("X-Cache"))
        xs.append(r.headers["X-Cache"])
        time.sleep(0.3)
    assert xs == ["MISS", "HIT"] and oracle.wrong == 0
    keys = redis.command("KEYS", "*")
    assert any(k.decode().startswith(prefix) for k in keys)
    # an async job goes through the stream under the prefix too
    r = requests.post(p.url("/async" + PREDICT), data='{"instances": [["acl-job"]]}',
                      timeout=10)
    assert r.status_code == 202, r.text


def checked_post(p, oracle, body):
    """POST body to PREDICT on p, its answer judged by oracle."""
    r = p.post(PREDICT, body=body, timeout=10)
    oracle.check("POST", PREDICT, body, {}, r.status_code, r.content, r.headers.get("X-Cache"))
    return r


def test_acl_user_without_rights_bypasses_with_a_clear_error(start_predcache, model, redis):
    redis.command("ACL", "SETUSER", "nobody", "on", ">pw", "~*", "-@all", "+auth")
    p = start_predcache(conf={"redis": {"username": "nobody", "password": "pw"}})
    oracle = Oracle("no rights")
    for i in range(3):
        r = checked_post(p, oracle, '{"instances": [["no rights", %d]]}' % i)
        assert r.status_code == 200
        assert r.headers["X-Cache"] in ("BYPASS", "MISS")
    assert oracle.wrong == 0
    wait_for(lambda: "NOPERM" in p.stderr_text(), timeout=10, what="NOPERM logged")
    assert p.proc.poll() is None
    assert redis.command("DBSIZE") == 0


@pytest.mark.parametrize("per_instance", ["off", "on"], ids=["whole-body", "batch"])
def test_acl_user_without_scripts_is_told_and_still_answered(start_predcache, model, redis,
                                                             per_instance):
    """A user that may not run scripts: a whole body's lookup is the lock script (a batch's
    the MGET script with the lock), so it is refused; the refusal is logged (as a GET's is), the lookup falls back to a plain GET or
    MGET (the cache still answers what it holds) and every request is answered right."""
    redis.command("ACL", "SETUSER", "noscripts", "on", ">pw", "~*", "&*", "+@all",
                  "-@scripting")
    # the tier on, as shipped: a whole body's lookup is the lock script only there
    p = start_predcache(conf={"redis": {"username": "noscripts", "password": "pw"},
                              "cache": {"per_instance": per_instance, "l1_max_bytes": "64m"}})
    oracle = Oracle("no scripts", per_instance=per_instance == "on")
    for i in range(3):
        assert checked_post(p, oracle, '{"instances": [["no scripts", %d]]}' % i).status_code \
            == 200
    assert oracle.wrong == 0
    wait_for(lambda: "store: lock script failed: NOPERM" in p.stderr_text(), timeout=10,
             what="the lock script's refusal logged")
    # each refused lookup was made again as a plain GET or MGET, and answered: each counts
    # once, as that one's (the refused script is not a lookup that failed)
    assert p.metric("predcache_redis_get_ok_total") == 3
    assert p.metric("predcache_redis_get_failed_total") == 0
    body = '{"instances": [["no scripts", 0]]}'

    def hit():
        r = checked_post(p, oracle, body)
        return r.status_code == 200 and r.headers["X-Cache"] == "HIT"

    wait_for(hit, timeout=10, what="a HIT through the plain GET")
    assert oracle.wrong == 0
    assert p.proc.poll() is None


def test_wrong_acl_password_is_logged_and_bypasses(start_predcache, model, redis):
    redis.command("ACL", "SETUSER", "cache", "on", ">right", "~*", "&*", "+@all")
    p = start_predcache(conf={"redis": {"username": "cache", "password": "wrong"}})
    r = p.post(PREDICT, body='{"instances": [["wrong password"]]}', timeout=10)
    assert r.status_code == 200 and r.headers["X-Cache"] == "BYPASS"
    wait_for(lambda: "WRONGPASS" in p.stderr_text(), timeout=10, what="WRONGPASS logged")
    assert "wrong" not in [w.strip(",:") for w in p.stderr_text().split()], \
        "the password itself must not be logged"
