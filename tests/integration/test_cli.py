"""Command line (--check, --version, --help, overrides) and the SIGTERM drain."""

import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT, default_conf, free_port, wait_for, write_conf


def run(binary, *args, timeout=15):
    return subprocess.run([binary] + list(args), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, text=True)


def test_check_good_conf(predcache_bin, tmp_path):
    conf = write_conf(str(tmp_path / "good.conf"),
                      default_conf(free_port(), free_port(), "http://127.0.0.1:8501", 6379))
    p = run(predcache_bin, "-c", conf, "--check")
    assert p.returncode == 0, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)


def test_check_conf_with_every_documented_key(predcache_bin, tmp_path):
    text = """\
[server]
listen = 127.0.0.1:18080
admin_listen = 127.0.0.1:19090
max_body_bytes = 8m
max_header_bytes = 16k
request_timeout_ms = 60000
idle_timeout_ms = 30000
drain_timeout_ms = 10000
max_connections = 1000

[backend]
url = http://127.0.0.1:8501
connect_timeout_ms = 1000
timeout_ms = 30000
max_response_bytes = 64m

[redis]
host = 127.0.0.1
port = 6379
password =
db = 0
timeout_ms = 100

[cache]
ttl_s = 86400
max_value_bytes = 4m
namespace = default
key_prefix = predcache:
routes = POST /predict, POST /v1/models/*:predict, POST /v2/models/*/infer
input_fields = instances, inputs
path_field = file_path

[jobs]
enabled = on
result_ttl_s = 3600
claim_after_ms = 30000
max_queue = 10000
concurrency = 8
async_prefix = /async
compat = off
stream =

[log]
level = info
access_log = -
"""
    path = tmp_path / "full.conf"
    path.write_text(text)
    p = run(predcache_bin, "-c", str(path), "--check")
    assert p.returncode == 0, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)


@pytest.mark.parametrize("text,line,needle", [
    ("# predcache\n[server]\nlisten = 127.0.0.1:18080\nbogus_key = 1\n", 4, "[server] bogus_key"),
    ("[server]\nlisten = 127.0.0.1:18080\n\n[cache]\nttl_s = abc\n", 5, "[cache] ttl_s"),
    ("[redis]\nport = 99999\n", 2, "[redis] port"),
    ("[backend]\nconnect_timeout_ms = 5000\n\ntimeout_ms = 1000\n", 4,
     "[backend] connect_timeout_ms (5000) must not be more than timeout_ms (1000)"),
    ("[server]\nlisten = 127.0.0.1:19090\nadmin_listen = 127.0.0.1:19090\n", 3,
     "must be different addresses"),
    ("[cache]\ntll_s = 60\n", 2, "[cache] tll_s: unknown key (did you mean 'ttl_s'?)"),
    ("[redis]\nhost = redis://127.0.0.1:6379\n", 2,
     "[redis] host: 'redis://127.0.0.1:6379' is a URL: write the host alone (host = 127.0.0.1;"),
], ids=["unknown-key", "bad-number", "port-out-of-range", "two-options", "same-addresses",
        "did-you-mean", "redis-host-url"])
def test_check_bad_conf_names_file_and_line(predcache_bin, tmp_path, text, line, needle):
    path = str(tmp_path / "bad.conf")
    with open(path, "w") as f:
        f.write(text)
    p = run(predcache_bin, "-c", path, "--check")
    assert p.returncode == 1, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)
    where = "%s:%d:" % (path, line)
    assert where in p.stderr, "expected %r in stderr:\n%s" % (where, p.stderr)
    assert needle in p.stderr, "expected %r in stderr:\n%s" % (needle, p.stderr)


@pytest.mark.parametrize("where", ["missing-dir", "a-directory"])
def test_check_refuses_an_access_log_it_cannot_open(predcache_bin, tmp_path, where):
    """--check answers for the start: an access log that cannot be opened fails both,
    with the file, the key and the reason."""
    log = str(tmp_path / "no" / "such" / "dir" / "a.log") if where == "missing-dir" else str(tmp_path)
    path = str(tmp_path / "log.conf")
    with open(path, "w") as f:
        f.write("[log]\naccess_log = %s\n" % log)
    for args in (("--check",), ("--listen", "127.0.0.1:%d" % free_port(),
                                "--admin", "127.0.0.1:%d" % free_port())):
        p = run(predcache_bin, "-c", path, *args)
        assert p.returncode == 1, "%s: rc %d, stderr:\n%s" % (args, p.returncode, p.stderr)
        assert "%s: [log] access_log: cannot open '%s': " % (path, log) in p.stderr, p.stderr
    ok = str(tmp_path / "new.log")
    with open(path, "w") as f:
        f.write("[log]\naccess_log = %s\n" % ok)
    p = run(predcache_bin, "-c", path, "--check")
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(ok), "--check must not create the access log"


def test_check_missing_conf_file(predcache_bin, tmp_path):
    path = str(tmp_path / "does-not-exist.conf")
    p = run(predcache_bin, "-c", path, "--check")
    # README: configuration errors exit 1 (main.c: a failed pc_config_load returns 1)
    assert p.returncode == 1, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)
    assert "does-not-exist.conf" in p.stderr, p.stderr


def test_version(predcache_bin):
    p = run(predcache_bin, "--version")
    assert p.returncode == 0, p.stderr
    assert "predcache" in (p.stdout + p.stderr).lower()


def test_help(predcache_bin):
    p = run(predcache_bin, "--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    for flag in ("-c", "--check", "--listen", "--backend", "--redis", "--set"):
        assert flag in out, "%r missing from --help:\n%s" % (flag, out)


def test_unknown_flag_fails(predcache_bin):
    p = run(predcache_bin, "--no-such-flag")
    # main.c: an unknown option prints the usage to stderr and exits 1
    assert p.returncode == 1, "rc %d, stderr:\n%s" % (p.returncode, p.stderr)
    assert "usage: predcache" in p.stderr, p.stderr
    assert p.stdout == "", "the usage of a bad command line goes to stderr: %r" % p.stdout


def test_command_line_overrides_conf(start_predcache, model, redis):
    listen = free_port()
    proxy = start_predcache(
        conf={"backend": {"url": "http://127.0.0.1:%d" % free_port()},
              "redis": {"port": str(free_port())}},
        args=["--listen", "127.0.0.1:%d" % listen,
              "--backend", model.url(),
              "--redis", "127.0.0.1:%d" % redis.port])
    proxy.listen_port = listen
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["o"]})
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Cache") == "MISS"
    redis.wait_key(r.headers["X-Cache-Key"])
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["o"]})
    assert r.headers.get("X-Cache") == "HIT"


@pytest.mark.parametrize("arg,ok,needle", [
    ("cache.version_refresh_s=0", True, None),
    ("redis.cluster=on", True, None),
    ("cache.ttl_s=0", False, "ttl_s"),
    ("nosuch.key=1", False, "nosuch"),
    ("cache.nosuch=1", False, "nosuch"),
    ("cache", False, "SECTION.KEY=VALUE"),
    ("cache.ttl_s", False, "SECTION.KEY=VALUE"),
    (".ttl_s=1", False, "SECTION.KEY=VALUE"),
])
def test_set_any_option(predcache_bin, tmp_path, arg, ok, needle):
    conf = write_conf(str(tmp_path / "p.conf"),
                      default_conf(free_port(), free_port(), "http://127.0.0.1:8501", 6379))
    p = run(predcache_bin, "-c", conf, "--set", arg, "--check")
    assert (p.returncode == 0) == ok, (arg, p.returncode, p.stderr)
    if needle:
        assert needle in p.stderr, p.stderr


def test_set_takes_effect(start_predcache, model, redis):
    """--set cache.version_refresh_s=0: a model path without a version is keyed as sent."""
    proxy = start_predcache(args=["--set", "cache.version_refresh_s=0", "--set",
                                  "cache.ttl_s=77"])
    r = proxy.post("/v1/models/m:predict", json_body={"instances": ["set"]})
    assert r.headers.get("X-Cache") == "MISS"
    assert model.count("/v1/models/m") == 0  # the status endpoint never asked
    redis.wait_key(r.headers["X-Cache-Key"])
    assert 3600 < redis.ttl(r.headers["X-Cache-Key"]) <= 77 + 3600  # ttl_s plus grace_s


def refused(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def start_slow_request(proxy, model, delay_ms):
    model.control(delay_ms=delay_ms)
    result = {}

    def go():
        try:
            result["r"] = proxy.post("/v1/models/m:predict", json_body={"instances": ["slow"]},
                                     timeout=30)
        except Exception as e:  # noqa: BLE001 (reported by the test)
            result["exc"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    # the request has reached the model server: it is in flight inside predcache
    wait_for(lambda: model.count() == 1, what="the slow request to reach the model server")
    return t, result


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_in_flight_request(proxy, model, sig):
    """README: SIGTERM or SIGINT starts a graceful drain."""
    t, result = start_slow_request(proxy, model, 1500)
    os.kill(proxy.pid, sig)

    t.join(timeout=30)
    assert not t.is_alive(), "the in-flight request never finished"
    assert "exc" not in result, "in-flight request failed during drain: %r" % result.get("exc")
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["predictions"]

    name = signal.Signals(sig).name
    try:
        rc = proxy.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("predcache still running 10s after %s with nothing in flight" % name)
    assert rc == 0, "exit status %s after %s; stderr:\n%s" % (rc, name, proxy.stderr_text())
    assert refused(proxy.listen_port)
    assert refused(proxy.admin_port)


def test_drain_finishes_pending_stores(proxy, model, redis):
    """README: on SIGTERM pending Redis stores finish: the answer of a cacheable request in
    flight when the drain starts is in Redis, with its TTL, once predcache has exited."""
    t, result = start_slow_request(proxy, model, 1500)
    os.kill(proxy.pid, signal.SIGTERM)
    t.join(timeout=30)
    assert not t.is_alive(), "the in-flight request never finished"
    assert "exc" not in result, "in-flight request failed during drain: %r" % result.get("exc")
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.headers.get("X-Cache") == "MISS", r.headers
    key = r.headers["X-Cache-Key"]

    rc = proxy.proc.wait(timeout=10)
    assert rc == 0, "exit status %s after SIGTERM; stderr:\n%s" % (rc, proxy.stderr_text())
    # the process is gone: whatever is in Redis now was stored before it exited
    assert redis.exists(key) == 1, "the in-flight answer was not stored before exit"
    ttl = redis.ttl(key)
    # ttl_s (300 in the test conf) + grace_s (3600 by default)
    assert 0 < ttl <= 3900, "TTL %s" % ttl


def test_sigterm_stops_accepting_while_draining(proxy, model):
    t, result = start_slow_request(proxy, model, 4000)
    os.kill(proxy.pid, signal.SIGTERM)
    try:
        wait_for(lambda: refused(proxy.listen_port), timeout=3,
                 what="the data port to refuse connections during the drain")
        assert t.is_alive() or "r" in result
    finally:
        t.join(timeout=30)
    assert "exc" not in result, "in-flight request failed during drain: %r" % result.get("exc")
    assert result["r"].status_code == 200
    rc = proxy.proc.wait(timeout=10)
    assert rc == 0


def test_sigterm_when_idle_exits_zero(proxy):
    assert proxy.get("/labels").status_code == 200
    # a client holding an idle keep-alive connection must not keep predcache alive
    s = requests.Session()
    assert s.get(proxy.url("/labels"), timeout=HTTP_TIMEOUT).status_code == 200
    try:
        start = time.monotonic()
        os.kill(proxy.pid, signal.SIGTERM)
        rc = proxy.proc.wait(timeout=10)
        assert rc == 0, proxy.stderr_text()
        assert time.monotonic() - start < 10
    finally:
        s.close()


def test_check_shipped_conf(predcache_bin):
    from conftest import ROOT
    path = os.path.join(ROOT, "conf", "predcache.conf")
    if not os.path.exists(path):
        pytest.skip("conf/predcache.conf not shipped yet")
    p = run(predcache_bin, "-c", path, "--check")
    assert p.returncode == 0, "the shipped conf must validate; stderr:\n%s" % p.stderr


def test_drain_timeout_answers_503_and_exits_zero(start_predcache, model):
    """A request still waiting on the model when drain_timeout_ms runs out gets a 503
    JSON answer instead of a dropped connection, and predcache still exits 0."""
    import threading
    p = start_predcache(conf={"server": {"drain_timeout_ms": 300}})
    model.control(delay_ms=3000)
    result = {}

    def call():
        try:
            r = p.post("/v1/models/m:predict", json_body={"instances": ["slow-drain"]})
            result["status"] = r.status_code
            result["body"] = r.json()
        except Exception as e:  # noqa: BLE001
            result["exc"] = e

    t = threading.Thread(target=call)
    t.start()
    wait_for(lambda: p.metric("predcache_in_flight") >= 1, what="request in flight")
    p.proc.send_signal(signal.SIGTERM)
    t.join(15)
    assert result.get("status") == 503, result
    assert "shutting down" in result["body"]["error"]
    assert p.proc.wait(10) == 0


def test_sigusr1_reopens_the_access_log(start_predcache, model, redis, tmp_path):
    """logrotate moves the access log away, then sends SIGUSR1: the lines after it go to a
    new file at the configured path, none is lost or split, and the process goes on."""
    log = tmp_path / "access.log"
    p = start_predcache(conf={"log": {"access_log": str(log)}})

    def lines(path):
        return [l for l in path.read_text().splitlines() if " access " in l] if path.exists() \
            else []

    assert p.post("/v1/models/m:predict", json_body={"instances": ["before"]}).status_code == 200
    wait_for(lambda: len(lines(log)) == 1, what="the first access line")
    rotated = tmp_path / "access.log.1"
    os.rename(str(log), str(rotated))
    # still written to the moved file until told
    assert p.post("/v1/models/m:predict", json_body={"instances": ["moved"]}).status_code == 200
    wait_for(lambda: len(lines(rotated)) == 2, what="a line in the moved file")
    os.kill(p.proc.pid, signal.SIGUSR1)
    wait_for(lambda: "SIGUSR1: access log reopened" in p.stderr_text(), what="the reopen")
    for i in range(20):
        r = p.post("/v1/models/m:predict", json_body={"instances": ["after %d" % i]})
        assert r.status_code == 200
    wait_for(lambda: len(lines(log)) == 20, what="the new file's lines")
    assert len(lines(rotated)) == 2
    assert all(" path=/v1/models/m:predict status=200 " in l for l in lines(log))
    assert p.proc.poll() is None
