"""Integration harness: real redis-server, the test model server and predcache.

Every test gets fresh processes on free loopback ports (tests are independent by
construction), each one polled until ready with a deadline, and always stopped by pid
in teardown (SIGTERM, then SIGKILL).

Fixtures:
    redis            a running RedisServer (kill/start/pause/resume, RESP helpers)
    model            a running ModelServer (control plane helpers)
    start_predcache  factory: start_predcache(conf={section: {key: value}}, args=[...])
    proxy            predcache started with the default test conf
    predcache_bin    path of the binary under test
Helpers: free_port, wait_for, Resp, parse_metrics, expected_key, canonical,
without_received. The integrity oracle (every answer checked against its own request)
is tests/integration/oracle.py.

Run with Debian's python: /usr/bin/python3 -m pytest -q tests/integration
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL_SERVER = os.path.join(ROOT, "tests", "fixtures", "model_server.py")
REDIS_SERVER = os.environ.get("REDIS_SERVER", "/usr/bin/redis-server")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
READY_S = 10.0
HTTP_TIMEOUT = 15.0
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def predcache_path():
    path = os.environ.get("PREDCACHE_BIN") or os.path.join(ROOT, "predcache")
    return os.path.abspath(path)


# --------------------------------------------------------------------------- helpers


_HANDED_OUT = set()


def free_port():
    """A loopback TCP port that was free a moment ago and that this test run has not
    handed out before: the kernel may return the same ephemeral port to two binds in a
    row once the first socket is closed, and two servers given one port would collide."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class GiveUp(AssertionError):
    """Raised inside a wait_for poll: stop polling now (e.g. the process exited)."""


def command_calls(redis, *names):
    """Calls of the Redis commands names (lowercase, e.g. "evalsha") since the last
    CONFIG RESETSTAT, from INFO commandstats."""
    text = redis.command("INFO", "commandstats")
    text = text.decode() if isinstance(text, bytes) else text
    n = 0
    for line in text.splitlines():
        if line.startswith(tuple("cmdstat_%s:" % name for name in names)):
            n += int(line.split("calls=")[1].split(",")[0])
    return n


def concurrently(n, fn, join_s=60):
    """Runs fn(i) for i in 0..n-1 in n threads released together; returns the results in
    order, an exception raised by fn(i) standing in its place."""
    results = [None] * n
    start = threading.Barrier(n)

    def one(i):
        start.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 (the caller asserts on it)
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_s)
    return results


def wait_for(fn, timeout=READY_S, interval=0.05, what="condition"):
    """Calls fn until it returns something truthy; returns that, or fails after timeout.
    Exceptions from fn count as "not yet", except GiveUp, which ends the wait at once."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as e:  # noqa: BLE001 (polling: any failure means not yet)
            last_exc = e
        if time.monotonic() >= deadline:
            extra = " (last error: %r)" % (last_exc,) if last_exc else ""
            raise AssertionError("timed out after %.1fs waiting for %s%s" % (timeout, what, extra))
        time.sleep(interval)


def canonical(value):
    """Canonical JSON as the cache key spec says: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


_RECEIVED = re.compile(rb',\s*"received":\s*\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}')


def without_received(content):
    """A predict answer's bytes without the test model's "received" member (the digest of
    what the model server received: see tests/fixtures/model_server.py). A batch that
    predcache merges from per-instance entries carries the layout of another model call
    (the sub-request, or the first instance's stored answer), so its "received" is that
    call's, by design; everything else must be byte for byte the model's answer."""
    return _RECEIVED.sub(b"", content)


# The backend identity keys carry ([backend] cache_id, else its URL as written): set by
# each Predcache started, so that expected_key() needs no argument for the usual test.
_KEY_BACKEND = {"id": ""}

TFS_PATH = re.compile(r"^/v1/models/[^?]*:(predict|classify|regress)$")


def vary_material(headers):
    """The vary part of a key: [(name, value or None)], encoded as predcache does."""
    out = b""
    for name, value in sorted((n.lower(), v) for n, v in headers):
        if value is None:
            out += name.encode() + b" -;"
        else:
            v = value.encode("utf-8")
            out += name.encode() + b" %d:" % len(v) + v + b";"
    return out


def expected_key(path, input_material, namespace="default", prefix="predcache:", backend=None,
                 method="POST", media="json", scope="", vary=None, form=None):
    """<prefix>v2:{hex(sha256(head form \n input))} as cachekey.h specifies.

    path may carry "?query". input_material: "path:P" is the path form; canonical JSON is
    the body as read ("tfs" on TF Serving paths, "json" elsewhere); other text is raw.
    vary: [(header, value)] ; KServe v2 paths always carry Inference-Header-Content-Length.
    """
    if isinstance(input_material, str):
        input_material = input_material.encode("utf-8")
    route, _, query = path.partition("?")
    if backend is None:
        backend = _KEY_BACKEND["id"]
    if vary is None:
        vary = []
    if route.startswith("/v2/models/") and not any(
            n.lower() == "inference-header-content-length" for n, _ in vary):
        vary = list(vary) + [("inference-header-content-length", None)]
    if form is None:
        if input_material.startswith(b"path:"):
            form, input_material = "path", input_material[5:]
        else:
            try:
                json.loads(input_material.decode("utf-8"))
                form = "tfs" if TFS_PATH.match(route) else "json"
            except (ValueError, UnicodeDecodeError, RecursionError):
                form = "raw"
    head = b"predcache-key-v2\n"
    for label, value in (("backend", backend), ("method", method), ("path", route),
                         ("query", query), ("media", media), ("scope", scope)):
        head += label.encode() + b" " + value.encode("utf-8") + b"\n"
    head += b"vary " + vary_material(vary) + b"\n"
    head += b"namespace " + namespace.encode("utf-8") + b"\n"
    material = head + form.encode() + b"\n" + input_material
    return prefix + "v2:{" + hashlib.sha256(material).hexdigest() + "}"


def parse_metrics(text):
    """Prometheus text -> {(name, frozenset(labels.items())): value}."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        labels = {}
        if "{" in name_part:
            name, _, rest = name_part.partition("{")
            rest = rest.rstrip("}")
            for item in split_labels(rest):
                k, _, v = item.partition("=")
                labels[k.strip()] = v.strip().strip('"')
        else:
            name = name_part
        try:
            out[(name.strip(), frozenset(labels.items()))] = float(value)
        except ValueError:
            continue
    return out


def split_labels(s):
    items, cur, quoted = [], "", False
    for ch in s:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        items.append(cur)
    return items


def stop_process(proc, term_wait=5.0):
    """SIGTERM, then SIGKILL after term_wait. Returns the exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGCONT)  # a SIGSTOPped process cannot act on SIGTERM
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=term_wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


# --------------------------------------------------------------------------- redis


class RedisError(Exception):
    pass


class Resp:
    """A tiny RESP2 client over one socket: enough for GET, TTL, PTTL, KEYS, FLUSHALL, EXISTS."""

    def __init__(self, port, host="127.0.0.1", timeout=3.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.rf = self.sock.makefile("rb")

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def command(self, *args):
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode("utf-8")
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self):
        line = self.rf.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise RedisError("unexpected reply %r" % line)


class ChannelListener:
    """SUBSCRIBEs to one channel and keeps every message heard, from a thread of its own,
    until close(). messages(): what was heard so far (bytes), greetings of the workers
    (peers.h: "!here <id>") left out unless asked for."""

    GREETING = b"!here "

    def __init__(self, port, channel):
        self.resp = Resp(port, timeout=None)
        self.heard = []
        self.lock = threading.Lock()
        assert self.resp.command("SUBSCRIBE", channel)[0] == b"subscribe"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                m = self.resp._read()
                if isinstance(m, list) and len(m) == 3 and m[0] == b"message":
                    with self.lock:
                        self.heard.append(m[2])
        except (OSError, ValueError, ConnectionError):
            pass

    def messages(self, greetings=False):
        with self.lock:
            return [m for m in self.heard if greetings or not m.startswith(self.GREETING)]

    def close(self):
        try:
            self.resp.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.resp.close()
        self.thread.join(5)


class RedisProcess:
    """What the tests' own redis-server processes (TLS, Sentinel) share: commands on their
    plain port (self.port), and stopping self.proc."""

    def command(self, *args):
        with Resp(self.port, timeout=5.0) as r:
            return r.command(*args)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class RedisServer:
    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.starts = 0

    def start(self):
        """Starts (or restarts, on the same port) and waits for PING."""
        assert self.proc is None or self.proc.poll() is not None, "redis already running"
        self.starts += 1
        self.stderr_path = os.path.join(self.dir, "redis-%d.log" % self.starts)
        cmd = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--daemonize", "no",
        ]
        with open(self.stderr_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

        def ping():
            if self.proc.poll() is not None:
                raise GiveUp("redis-server exited with %s:\n%s"
                                     % (self.proc.returncode, read_text(self.stderr_path)))
            with Resp(self.port, timeout=1.0) as r:
                return r.command("PING") == "PONG"

        try:
            wait_for(ping, what="redis-server PING on port %d" % self.port)
        except AssertionError as e:
            self.stop()
            raise AssertionError("%s\nredis log:\n%s" % (e, read_text(self.stderr_path)))
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self):
        """SIGKILL: Redis vanishes without a goodbye, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def command(self, *args):
        with Resp(self.port) as r:
            return r.command(*args)

    def get(self, key):
        return self.command("GET", key)

    def ttl(self, key):
        return self.command("TTL", key)

    def pttl(self, key):
        return self.command("PTTL", key)

    def keys(self, pattern="*"):
        return sorted(k.decode() for k in self.command("KEYS", pattern))

    def exists(self, key):
        return self.command("EXISTS", key)

    def flushall(self):
        return self.command("FLUSHALL")

    def wait_key(self, key, timeout=READY_S):
        """Polls until key exists (stores are asynchronous); returns its value."""
        return wait_for(lambda: self.get(key), timeout=timeout,
                        what="key %s to appear in Redis" % key)


def _flatten(value):
    """Every byte string in a RESP reply (nested lists included), joined by newlines."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, str)):
        return str(value).encode()
    return b"\n".join(_flatten(v) for v in value)


# How redis_dump reads each type: the command, then its arguments after the key.
_READ_BY_TYPE = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", 0, -1),
                 "set": ("SMEMBERS",), "zset": ("ZRANGE", 0, -1, "WITHSCORES")}


def redis_dump(redis):
    """{key: every byte Redis holds for it}, whatever its type: the key's name, then its
    value as its type is read (a stream: its entries, its groups, their consumers and
    pending entries; a type read otherwise: its DUMP). For searching all of Redis for a
    value that must not be there. Keys found by SCAN; one expired since is left out."""
    keys, cursor = [], b"0"
    while True:
        cursor, batch = redis.command("SCAN", cursor, "COUNT", "1000")
        keys.extend(batch)
        if cursor in (b"0", 0, "0"):
            break
    out = {}
    for key in keys:
        kind = redis.command("TYPE", key)
        if kind == "none":
            continue
        parts = [key]
        if kind in _READ_BY_TYPE:
            command, *args = _READ_BY_TYPE[kind]
            parts.append(redis.command(command, key, *args))
        elif kind == "stream":
            parts.append(redis.command("XRANGE", key, "-", "+"))
            for group in redis.command("XINFO", "GROUPS", key):
                name = dict(zip(group[::2], group[1::2]))[b"name"]
                parts += [group, redis.command("XINFO", "CONSUMERS", key, name),
                          redis.command("XPENDING", key, name, "-", "+", "1000")]
        else:
            parts.append(redis.command("DUMP", key))
        out[key] = _flatten(parts)
    return out


def assert_no_secrets(redis, p, secrets):
    """No secret (str) is anywhere in Redis (redis_dump: any key's name or value) nor in
    predcache p's stdout or stderr; the failure names every place one was found. Returns
    the dump."""
    dump = redis_dump(redis)
    logs = {"stdout": p.stdout_text(), "stderr": p.stderr_text()}
    found = []
    for secret in secrets:
        for key, blob in dump.items():
            if secret.encode() in blob:
                found.append("%s in Redis %s" % (secret, key.decode("utf-8", "replace")))
        for name, text in logs.items():
            if secret in text:
                line = next(l for l in text.splitlines() if secret in l)
                found.append("%s in predcache %s: %s" % (secret, name, line[:200]))
    assert not found, "\n".join(found)
    return dump


# --------------------------------------------------------------------------- model server


class ModelServer:
    def __init__(self, workdir):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port_file = os.path.join(self.dir, "model.port")
        self.stderr_path = os.path.join(self.dir, "model.stderr")
        self.proc = None
        self.port = None

    def start(self):
        with open(self.stderr_path, "wb") as log:
            self.proc = subprocess.Popen(
                [PYTHON, MODEL_SERVER, "--port", "0", "--port-file", self.port_file],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise GiveUp("model server exited with %s:\n%s"
                                     % (self.proc.returncode, read_text(self.stderr_path)))
            if self.port is None:
                text = read_text(self.port_file).strip()
                if not text:
                    return False
                self.port = int(text)
            return requests.get(self.url("/_count"), timeout=1).status_code == 200

        try:
            wait_for(ready, what="model server GET /_count")
        except AssertionError as e:
            self.stop()
            raise AssertionError("%s\nmodel server output:\n%s" % (e, read_text(self.stderr_path)))
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def count(self, path=None):
        doc = requests.get(self.url("/_count"), timeout=HTTP_TIMEOUT).json()
        if path is None:
            return doc["total"]
        return doc["paths"].get(path, 0)

    def last(self):
        return requests.get(self.url("/_last"), timeout=HTTP_TIMEOUT).json()

    def requests(self):
        """The model server's last 1000 data requests, oldest first (each as last())."""
        return requests.get(self.url("/_requests"), timeout=HTTP_TIMEOUT).json()["requests"]

    def control(self, **behaviour):
        r = requests.post(self.url("/_control"), json=behaviour, timeout=HTTP_TIMEOUT)
        r.raise_for_status()

    def reset(self):
        requests.post(self.url("/_reset"), timeout=HTTP_TIMEOUT).raise_for_status()


class StubBackend:
    """A model server of one behaviour, in the test's own process: answer(body) gives
    (status, doc) for every POST (the doc is sent as JSON). For the client-side tests that
    need a backend misbehaving in one precise way; ModelServer is the real one."""

    def __init__(self, answer):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status, doc = answer(body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.server.server_address[1], path)

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


# --------------------------------------------------------------------------- predcache


# The harness's [cache] client_controls_token: X-Predcache-TTL and X-Predcache-Namespace
# are heard only from a request carrying it (trusted()).
CONTROLS_TOKEN = "test-controls-token"


def trusted(headers=None):
    """headers plus X-Predcache-Token: the operator's say (TTL, namespace) is heard."""
    out = {"X-Predcache-Token": CONTROLS_TOKEN}
    out.update(headers or {})
    return out


def default_conf(listen_port, admin_port, backend_url, redis_port):
    return {
        "server": {
            "listen": "127.0.0.1:%d" % listen_port,
            "admin_listen": "127.0.0.1:%d" % admin_port,
            "request_timeout_ms": "20000",
            "drain_timeout_ms": "5000",
            # One event loop, whatever the machine: many tests pin exact outcomes inside
            # one process (one MISS then COALESCED, per-process limits, X-Cache orders).
            # Several workers (the default is one per CPU) are covered by test_workers.py.
            "workers": "1",
        },
        "backend": {
            "url": backend_url,
            "connect_timeout_ms": "1000",
            "timeout_ms": "10000",
        },
        "redis": {
            "host": "127.0.0.1",
            "port": str(redis_port),
            "timeout_ms": "500",
        },
        "cache": {
            "ttl_s": "300",
            # Most tests pin the per-body key of an {"instances": [...]} body; the
            # per-instance default is covered by test_instances.py, which turns it on.
            "per_instance": "off",
            # Keys name the path as sent (expected_key() computes them so); resolving
            # the model version through the status endpoint is covered by
            # test_versions.py, which turns it on.
            "version_refresh_s": "0",
            # Tests read and change Redis behind predcache's back (DEL, expiry, bad
            # values); the in-process tier would answer for Redis. test_l1.py turns it on.
            "l1_max_bytes": "0",
            # The cross-process lock on every miss, as before a process skipped it while
            # alone (lock = auto, the shipped default: after 3.5 s with nobody else on the
            # done channel); tests that count a miss's Redis commands must not see it
            # change with their timing. test_lock_alone.py covers auto.
            "lock": "always",
            # Tests that set a TTL or a namespace send it (trusted()); the shipped default
            # is empty (never), covered by test_operator_controls.py.
            "client_controls_token": CONTROLS_TOKEN,
        },
        "log": {
            "level": "info",
            "access_log": "-",
        },
    }


def write_conf(path, sections):
    lines = ["# generated by tests/integration/conftest.py"]
    for section, items in sections.items():
        lines.append("")
        lines.append("[%s]" % section)
        for key, value in items.items():
            if value is not None:
                lines.append("%s = %s" % (key, value))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def merge_conf(base, overrides):
    out = {s: dict(items) for s, items in base.items()}
    for section, items in (overrides or {}).items():
        out.setdefault(section, {}).update(items)
    return out


class Predcache:
    def __init__(self, binary, workdir, conf, args=(), preexec=None):
        self.binary = binary
        self.preexec = preexec  # run in the child before exec (limits, say)
        self.dir = str(workdir)
        self.conf = conf
        self.args = list(args)
        self.conf_path = os.path.join(self.dir, "predcache.conf")
        self.stdout_path = os.path.join(self.dir, "predcache.stdout")
        self.stderr_path = os.path.join(self.dir, "predcache.stderr")
        self.listen_port = int(conf["server"]["listen"].rsplit(":", 1)[1])
        self.admin_port = int(conf["server"]["admin_listen"].rsplit(":", 1)[1])
        self.proc = None
        self.expected_exit = False

    def start(self):
        backend = self.conf.get("backend", {})
        _KEY_BACKEND["id"] = backend.get("cache_id") or backend.get("url", "")
        write_conf(self.conf_path, self.conf)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([self.binary, "-c", self.conf_path] + self.args,
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         preexec_fn=self.preexec)

        def healthy():
            if self.proc.poll() is not None:
                raise GiveUp("predcache exited with %s" % self.proc.returncode)
            return requests.get(self.admin("/health"), timeout=1).status_code == 200

        try:
            wait_for(healthy, what="predcache GET /health on admin port %d" % self.admin_port)
        except AssertionError as e:
            self.stop()
            raise AssertionError("%s\nconf:\n%s\npredcache stderr:\n%s" % (
                e, read_text(self.conf_path), self.stderr_text()))
        return self

    @property
    def pid(self):
        return self.proc.pid

    def url(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.listen_port, path)

    def admin(self, path=""):
        return "http://127.0.0.1:%d%s" % (self.admin_port, path)

    def post(self, path, body=None, json_body=None, headers=None, **kw):
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        if json_body is not None:
            body = json.dumps(json_body)
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.post(self.url(path), data=body, headers=hdrs, **kw)

    def get(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        return requests.get(self.url(path), **kw)

    def metrics_text(self):
        r = requests.get(self.admin("/metrics"), timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, "GET /metrics: %d %s" % (r.status_code, r.text[:200])
        return r.text

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def metric(self, name, **labels):
        """Value of one series (0.0 when absent)."""
        return self.metrics().get((name, frozenset(labels.items())), 0.0)

    def stdout_text(self):
        return read_text(self.stdout_path)

    def stderr_text(self):
        return read_text(self.stderr_path)

    def access_lines(self):
        return [l for l in self.stdout_text().splitlines() if " access " in l or
                l.startswith("access ")]

    def access_line_of(self, response):
        """The access line of the request answered by response (its X-Request-Id). A
        worker writes its access lines together once a pass of its loop is over, after the
        answers: a client may have its answer a moment before the line is written."""
        rid = " id=%s " % response.headers["X-Request-Id"]
        return wait_for(lambda: next((l for l in reversed(self.access_lines())
                                      if rid in l + " "), None),
                        what="the access line of request %s" % rid.strip())

    def stop(self, term_wait=8.0):
        if self.proc is None:
            return None
        return stop_process(self.proc, term_wait)

    def crash_report(self):
        """A message when the process crashed or a sanitizer complained, else None."""
        rc = self.proc.returncode if self.proc else None
        err = self.stderr_text()
        if rc is not None and rc < 0 and -rc in CRASH_SIGNALS:
            return "predcache died of signal %d" % -rc
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            if marker in err:
                return "sanitizer report in predcache stderr (%s)" % marker
        return None


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def predcache_bin():
    path = predcache_path()
    if not os.access(path, os.X_OK):
        pytest.fail("predcache binary not found at %s (build it with make, or set PREDCACHE_BIN)"
                    % path)
    return path


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def injector(redis):
    """A byte injector (tests/fixtures/fake_redis.py) relaying to the test's redis-server:
    give predcache injector.port as its Redis to change chosen replies."""
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    from fake_redis import RedisInjector

    inj = RedisInjector(redis.port)
    try:
        yield inj
    finally:
        inj.close()


@pytest.fixture
def redis_cluster(tmp_path):
    """A Redis Cluster of 3 masters and 3 replicas (rcluster.py), stopped after the test."""
    from rcluster import RedisCluster  # rcluster builds on this module: imported late

    cluster = RedisCluster(tmp_path / "cluster", masters=3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def side_model(tmp_path):
    """A second test model server (a bystander's, or a route's of its own)."""
    server = ModelServer(tmp_path / "side-model")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def model(tmp_path):
    server = ModelServer(tmp_path / "model")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_predcache(predcache_bin, tmp_path, redis, model):
    """Factory: start_predcache(conf={"cache": {"ttl_s": 5}}, args=[...]) -> Predcache.

    Values of None remove a key from the generated conf. Several instances may be
    started; each gets its own directory under tmp_path and is stopped in teardown.
    """
    started = []

    def start(conf=None, args=(), backend_url=None, preexec=None):
        base = default_conf(free_port(), free_port(), backend_url or model.url(), redis.port)
        workdir = tmp_path / ("predcache-%d" % len(started))
        os.makedirs(str(workdir), exist_ok=True)
        p = Predcache(predcache_bin, workdir, merge_conf(base, conf), args, preexec)
        started.append(p)
        return p.start()

    yield start

    problems = []
    for p in started:
        was_running = p.proc.poll() is None
        rc = p.stop()
        report = p.crash_report()
        if report is None and was_running and rc != 0:
            # SIGTERM must end predcache cleanly (exit 0) within drain_timeout_ms
            report = "predcache exited with %s after SIGTERM in teardown (expected 0%s)" % (
                rc, "; it needed SIGKILL" if rc == -signal.SIGKILL else "")
        if report:
            problems.append("%s\nstderr tail:\n%s" % (report, p.stderr_text()[-4000:]))
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture
def proxy(start_predcache):
    return start_predcache()


def key_tag(key):
    """The tag of a cache key in a PC4 entry (envelope.h): FNV-1a 64 of its bytes."""
    h = 0xcbf29ce484222325
    for c in key.encode() if isinstance(key, str) else key:
        h = ((h ^ c) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h or 1


def make_entry(key, body, status=200, content_type="application/json", stored_at_ms=None,
               ttl_s=0, headers=()):
    """A cache entry for key as predcache writes it (PC4, envelope.h): for tests that put
    answers straight into Redis."""
    if stored_at_ms is None:
        stored_at_ms = int(time.time() * 1000)
    head = b"PC4\n%016x\n%d\n%d\n%d\n%d\n%s\n" % (key_tag(key), status, stored_at_ms, ttl_s,
                                                 len(headers), content_type.encode())
    for name, value in headers:
        head += b"%s:%s\n" % (name.encode(), value.encode())
    return head + (body.encode() if isinstance(body, str) else body)


def parse_envelope(value, key=None):
    """The stored value (envelope.h): b"PC4\\n<key tag>\\n<status>\\n<stored_at_ms>\\n<ttl_s>
    \\n<n>\\n<content-type>\\n" then n "name:value\\n" lines, then the body (PC1 to PC3,
    written by earlier versions, are read too). With key, a PC4 tag must be key's."""
    assert value is not None, "no value in Redis"
    magic = value[:4]
    assert magic in (b"PC1\n", b"PC2\n", b"PC3\n", b"PC4\n"), "envelope magic is %r" % value[:4]
    if magic == b"PC4\n":
        tag, _, rest = value[4:].partition(b"\n")
        assert len(tag) == 16, "PC4 tag %r" % tag
        if key is not None:
            assert int(tag, 16) == key_tag(key), "entry tagged for another key"
        value, magic = b"PC3\n" + rest, b"PC3\n"
    if magic == b"PC3\n":
        parts = value.split(b"\n", 6)
        assert len(parts) == 7, "PC3 envelope has too few lines: %r" % value[:200]
        _, status, stored_at, ttl, n, ctype, rest = parts
        headers = []
        for _ in range(int(n)):
            line, rest = rest.split(b"\n", 1)
            name, _, val = line.partition(b":")
            headers.append((name.decode(), val.decode()))
        return {"status": int(status), "stored_at_ms": int(stored_at), "ttl_s": int(ttl),
                "content_type": ctype.decode(), "headers": headers, "body": rest}
    if magic == b"PC2\n":
        _, status, stored_at, ttl, ctype, body = value.split(b"\n", 5)
        return {"status": int(status), "stored_at_ms": int(stored_at), "ttl_s": int(ttl),
                "content_type": ctype.decode(), "headers": [], "body": body}
    parts = value.split(b"\n", 4)
    assert len(parts) == 5, "envelope has fewer than 5 parts: %r" % value[:200]
    _, status, stored_at, ctype, body = parts
    return {"status": int(status), "stored_at_ms": int(stored_at), "ttl_s": 0,
            "content_type": ctype.decode(), "headers": [], "body": body}
