"""scripts/predcache-batch against the test model server through predcache.

The client runs as a subprocess with /usr/bin/python3, exactly as a user runs it. The
images are random bytes (the test model server only hashes its input), so every file
has its own cache key.
"""

import base64
import hashlib
import json
import os
import pty
import re
import subprocess
import threading
import time

import pytest

from conftest import PYTHON, ROOT, StubBackend, canonical, free_port

BATCH = os.path.join(ROOT, "scripts", "predcache-batch")
ROUTE = "/v1/models/m:predict"
IMAGES = ["a.png", "b.jpg", "c.jpeg", "d.gif", "e.bmp",
          "nested/f.JPEG", "nested/g.webp", "nested/deeper/h.PNG"]
IGNORED = ["notes.txt", "nested/readme.md", "nested/photo.png.bak", "nested/deeper/labels.json"]
SUMMARY_RE = re.compile(r"^pass 1: (\d+) files, (\d+) ok, (\d+) errors \| hits (\d+), "
                        r"misses (\d+), bypass (\d+) \| p50 [\d.]+ ms p95 [\d.]+ ms "
                        r"p99 [\d.]+ ms \| wall [\d.]+ s, [\d.]+ req/s \| "
                        r"wrong answers: 0 \(0 checked\)$", re.M)


def run_batch(*args, timeout=60, **kw):
    return subprocess.run([PYTHON, BATCH] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def make_tree(root, names=IMAGES, ignored=IGNORED):
    """Writes random bytes under root; -> {relative path: bytes} of the images."""
    files = {}
    for name in list(names) + list(ignored):
        path = os.path.join(str(root), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        data = os.urandom(64 + len(files) * 7)
        with open(path, "wb") as f:
            f.write(data)
        if name in names:
            files[name] = data
    return files


def outputs(out_dir):
    """Relative paths of every file under out_dir."""
    found = set()
    for dirpath, _, filenames in os.walk(str(out_dir)):
        for name in filenames:
            found.add(os.path.relpath(os.path.join(dirpath, name), str(out_dir)))
    return found


def b64(data):
    return base64.b64encode(data).decode("ascii")


def short_hash(value):
    return hashlib.sha256(canonical(value).encode("utf-8")).hexdigest()[:16]


def json_run(*args, **kw):
    cp = run_batch("--json", *args, **kw)
    try:
        doc = json.loads(cp.stdout)
    except ValueError:
        pytest.fail("stdout is not one JSON document (rc %d):\n%s\nstderr:\n%s"
                    % (cp.returncode, cp.stdout, cp.stderr))
    for s in doc["passes"] + [doc["total"]]:
        check_summary(s)
    return cp, doc


def check_summary(s):
    """The invariants every summary keeps."""
    assert s["ok"] + s["errors"] == s["requests"], s
    assert s["hits"] + s["misses"] + s["bypass"] + s["other"] == s["ok"], s
    assert len(s["failures"]) == min(s["errors"], 20), s
    assert s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= s["max_ms"], s
    assert 0 < s["mean_ms"] <= s["max_ms"], s
    assert s["wall_s"] > 0
    assert s["rps"] == pytest.approx(s["requests"] / s["wall_s"], rel=0.05), s


def test_outputs_for_every_image(proxy, model, tmp_path):
    files = make_tree(tmp_path / "in")
    out = tmp_path / "out"
    cp = run_batch("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in", "--out-dir", out)
    assert cp.returncode == 0, cp.stdout + cp.stderr

    assert outputs(out) == {name + ".json" for name in files}, "one answer per image, no more"
    calls = set()
    for name, data in files.items():
        with open(str(out / (name + ".json")), "rb") as f:
            saved = f.read()
        doc = json.loads(saved)
        assert doc["predictions"] == [short_hash({"b64": b64(data)})], name
        assert doc["model"] == "m"
        calls.add(doc["call"])
        # the same request again is a HIT: the saved file holds the model's bytes unchanged
        r = proxy.post(ROUTE, json_body={"instances": [{"b64": b64(data)}]})
        assert r.headers.get("X-Cache") == "HIT", name
        assert r.content == saved, name
    assert calls == set(range(1, len(files) + 1))
    assert model.count(ROUTE) == len(files)

    lines = [l for l in cp.stdout.splitlines() if not l.startswith("pass ")]
    assert sorted(l.split()[0] for l in lines) == sorted(files), cp.stdout
    for line in lines:
        name, status, cache, ms, unit = line.split()
        assert (status, cache, unit) == ("200", "MISS", "ms") and float(ms) > 0, line
    m = SUMMARY_RE.search(cp.stdout)
    assert m, cp.stdout
    n = len(files)
    assert [int(x) for x in m.groups()] == [n, n, 0, 0, n, 0], cp.stdout


def test_repeat_second_pass_all_hits(proxy, model, tmp_path):
    files = make_tree(tmp_path / "in")
    n = len(files)
    cp, doc = json_run("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out", "--repeat", 2, "--concurrency", 3)
    assert cp.returncode == 0, cp.stderr
    cold, warm = doc["passes"]
    assert (cold["files"], cold["requests"], cold["ok"], cold["misses"]) == (n, n, n, n)
    assert (warm["files"], warm["requests"], warm["ok"], warm["hits"]) == (n, n, n, n)
    assert warm["misses"] == warm["bypass"] == warm["other"] == warm["errors"] == 0
    total = doc["total"]
    assert (total["files"], total["requests"], total["ok"], total["errors"]) == (n, 2 * n, 2 * n, 0)
    assert (total["hits"], total["misses"]) == (n, n)
    assert total["max_ms"] == max(cold["max_ms"], warm["max_ms"])
    assert model.count(ROUTE) == n, "the warm pass must not reach the model server"

    # the HITs replayed the stored answers: every call number is still that of pass 1
    calls = sorted(json.loads((tmp_path / "out" / (name + ".json")).read_bytes())["call"]
                   for name in files)
    assert calls == list(range(1, n + 1))
    # with --json stdout is the document alone; request lines and summaries go to stderr
    request_lines = [l for l in cp.stderr.splitlines() if l.split()[0] in files]
    assert len(request_lines) == 2 * n, cp.stderr
    assert "pass 2: %d files, %d ok, 0 errors | hits %d" % (n, n, n) in cp.stderr


@pytest.mark.parametrize("fmt", ["tfserving", "image_data", "file_path"])
def test_request_shapes(proxy, model, tmp_path, fmt):
    files = make_tree(tmp_path / "in", names=["dir/x.png"], ignored=[])
    data = files["dir/x.png"]
    cp = run_batch("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                   "--out-dir", tmp_path / "out", "--format", fmt)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    last = model.last()
    assert (last["method"], last["path"]) == ("POST", ROUTE)
    assert last["headers"]["content-type"] == "application/json"
    expected = {
        "tfserving": {"instances": [{"b64": b64(data)}]},
        "image_data": {"image_data": b64(data)},
        "file_path": {"file_path": "dir/x.png", "img_base64": b64(data)},
    }[fmt]
    assert json.loads(last["body"]) == expected
    assert (tmp_path / "out" / "dir" / "x.png.json").exists()


def test_concurrency_runs_requests_in_parallel(proxy, model, tmp_path):
    names = ["img%02d.png" % i for i in range(12)]
    make_tree(tmp_path / "in", names=names, ignored=[])
    model.control(delay_ms=250)
    cp, doc = json_run("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out", "--concurrency", 6, "--quiet")
    assert cp.returncode == 0, cp.stderr
    s = doc["total"]
    assert s["ok"] == 12 and s["misses"] == 12
    assert s["p50_ms"] >= 250
    # one at a time would take 12 x 250 ms = 3 s; six at a time about 0.5 s
    assert s["wall_s"] < 1.5, s
    assert len(outputs(tmp_path / "out")) == 12
    assert not [l for l in cp.stderr.splitlines() if l.startswith("img")], "--quiet"


def test_backend_failure_counted_exit_1(proxy, model, tmp_path):
    files = make_tree(tmp_path / "in")
    warm = [name for name in files if name.startswith("nested/")]
    # the nested images are answered (and cached) first; then the model server fails
    cp = run_batch("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in" / "nested",
                   "--out-dir", tmp_path / "warm")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    model.control(status=500, body=json.dumps({"error": "model exploded"}))

    out = tmp_path / "out"
    cp, doc = json_run("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", out)
    assert cp.returncode == 1, cp.stderr
    s = doc["total"]
    n_fail = len(files) - len(warm)
    assert (s["requests"], s["ok"], s["errors"], s["hits"]) == (len(files), len(warm), n_fail,
                                                              len(warm))
    assert sorted(f["file"] for f in s["failures"]) == sorted(set(files) - set(warm))
    assert all(f["status"] == 500 and "model exploded" in f["error"] for f in s["failures"])
    assert outputs(out) == {name + ".json" for name in warm}, "no answer file for a failure"
    assert re.search(r"^a\.png +500 +MISS +[\d.]+ ms +\(status\) +model exploded$", cp.stderr,
                     re.M), \
        cp.stderr

    # errors are never cached: once the model server is back, the failed files are MISSes
    model.control()
    cp, doc = json_run("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", out, "--quiet")
    assert cp.returncode == 0, cp.stderr
    assert (doc["total"]["ok"], doc["total"]["misses"]) == (len(files), n_fail)
    assert outputs(out) == {name + ".json" for name in files}


def test_closed_backend_502s_counted(start_predcache, tmp_path):
    p = start_predcache(backend_url="http://127.0.0.1:%d" % free_port())
    files = make_tree(tmp_path / "in")
    cp, doc = json_run("--url", p.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out", "--repeat", 2)
    assert cp.returncode == 1
    for s in doc["passes"]:
        assert (s["requests"], s["ok"], s["errors"]) == (len(files), 0, len(files))
        assert {f["status"] for f in s["failures"]} == {502}
    assert doc["total"]["errors"] == 2 * len(files)
    assert outputs(tmp_path / "out") == set()


def test_connection_refused_and_human_failure_list(tmp_path):
    make_tree(tmp_path / "in", names=["a.png", "b.png"], ignored=[])
    url = "http://127.0.0.1:%d%s" % (free_port(), ROUTE)
    cp = run_batch("--url", url, "--in-dir", tmp_path / "in", "--out-dir", tmp_path / "out",
                   "--quiet")
    assert cp.returncode == 1
    assert "pass 1: 2 files, 0 ok, 2 errors" in cp.stdout
    assert re.search(r"failed: a\.png +0 +.*refused", cp.stdout, re.I), cp.stdout


def test_timeout_and_direct_to_model_server(model, tmp_path):
    make_tree(tmp_path / "in", names=["a.png", "b.png"], ignored=[])
    # straight to the model server: no X-Cache header, counted as "other"
    cp, doc = json_run("--url", model.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out")
    assert cp.returncode == 0, cp.stderr
    assert (doc["total"]["ok"], doc["total"]["other"]) == (2, 2)
    assert re.search(r"^a\.png +200 +- +[\d.]+ ms$", cp.stderr, re.M), cp.stderr

    model.control(delay_ms=2000)
    t0 = time.monotonic()
    cp, doc = json_run("--url", model.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out2", "--timeout-ms", 300)
    assert time.monotonic() - t0 < 1.9, "the client must give up after --timeout-ms"
    assert cp.returncode == 1
    assert doc["total"]["errors"] == 2
    assert all(f["status"] == 0 and "timed out after 300 ms" in f["error"]
               for f in doc["total"]["failures"])


def run_with_tty_stderr(argv, stdout):
    """Runs the client with stderr on a pseudo-terminal and stdout as given (a pipe or a
    file); -> (exit status, stdout text or None, bytes written to the terminal)."""
    master, slave = pty.openpty()
    tty = bytearray()

    def drain():  # read while it runs: a full terminal buffer would block the client
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not chunk:
                return
            tty.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    try:
        proc = subprocess.Popen([PYTHON, BATCH] + [str(a) for a in argv], stdout=stdout,
                                stderr=slave, stdin=subprocess.DEVNULL, text=True)
        os.close(slave)
        slave = None
        reader.start()
        out, _ = proc.communicate(timeout=60)
        reader.join(10)
    finally:
        if slave is not None:
            os.close(slave)
        os.close(master)
    return proc.returncode, out, bytes(tty)


def test_progress_bar_on_a_terminal(proxy, tmp_path):
    files = make_tree(tmp_path / "in")
    # stdout is a pipe here, but with --json the per-request lines would go to stderr,
    # the terminal: the bar replaces them there and stdout holds the document alone.
    rc, stdout, tty = run_with_tty_stderr(
        ["--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in", "--out-dir", tmp_path / "o1",
         "--json"], subprocess.PIPE)
    assert rc == 0
    assert b"\r" in tty and b"[" + b"#" * 30 + b"]" in tty, tty
    assert ("%d/%d" % (len(files), len(files))).encode() in tty
    assert not [name for name in files if name.encode() in tty], tty
    assert json.loads(stdout)["total"]["ok"] == len(files)


def test_progress_bar_only_when_the_lines_would_reach_a_terminal(proxy, tmp_path):
    """stdout redirected, stderr a terminal: every per-request line still reaches stdout
    (the bar used to replace them, chosen from stderr alone, and they were lost)."""
    files = make_tree(tmp_path / "in")
    out_path = tmp_path / "stdout.txt"
    with open(str(out_path), "w") as out:
        rc, _, tty = run_with_tty_stderr(
            ["--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in", "--out-dir",
             tmp_path / "out"], out)
    assert rc == 0
    assert tty == b"", "no progress bar on stderr when stdout is not a terminal: %r" % tty
    stdout = out_path.read_text()
    lines = stdout.splitlines()
    assert sorted(l.split()[0] for l in lines[:-1]) == sorted(files), stdout
    assert all(re.match(r"^\S+ +200 +MISS +[\d.]+ ms$", l) for l in lines[:-1]), stdout
    assert lines[-1].startswith("pass 1: %d files, %d ok" % (len(files), len(files))), stdout


def test_sorted_walk_in_order_with_concurrency_1(proxy, tmp_path):
    # Relative paths sort by code point: "A" < "Z" < "a", "." < "/" < "0" (so "b.png"
    # comes before the files in b/, and "b/..." before "b0.png"), and a directory's files
    # mix with its subdirectories' by name, not walk order (top files first).
    names = ["b.png", "B.png", "a.GIF", "Z/y.jpg", "b/z.png", "b/A/q.webp", "b0.png",
             "b/a.JPEG", "b-c.bmp", "nested/deeper/h.PNG", "nested/i.png", "nested.png",
             "nested/Deeper/k.png"]
    make_tree(tmp_path / "in", names=names, ignored=["b/notes.txt"])
    expected = sorted(names)
    assert expected[:4] == ["B.png", "Z/y.jpg", "a.GIF", "b-c.bmp"]  # what sorted means
    cp = run_batch("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                   "--out-dir", tmp_path / "out", "--concurrency", 1)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    lines = [l for l in cp.stdout.splitlines() if not l.startswith("pass ")]
    assert [l.split()[0] for l in lines] == expected, cp.stdout


def test_redis_down_answers_counted_as_bypass(proxy, model, redis, tmp_path):
    files = make_tree(tmp_path / "in")
    n = len(files)
    redis.stop()  # predcache answers from the model with X-Cache: BYPASS
    cp, doc = json_run("--url", proxy.url(ROUTE), "--in-dir", tmp_path / "in",
                       "--out-dir", tmp_path / "out", "--concurrency", 2)
    assert cp.returncode == 0, cp.stderr
    s = doc["total"]
    assert (s["requests"], s["ok"], s["errors"], s["bypass"]) == (n, n, 0, n), s
    assert s["hits"] == s["misses"] == s["other"] == 0, s
    assert model.count(ROUTE) == n
    # each line and the summary say why: Redis could not be used
    assert len(re.findall(r"^\S+ +200 +BYPASS +[\d.]+ ms  \((redis-unavailable|redis-error)\)$",
                          cp.stderr, re.M)) == n, cp.stderr
    assert "pass 1: %d files, %d ok, 0 errors | hits 0, misses 0, bypass %d |" % (n, n, n) \
        in cp.stderr
    assert sum(s["reasons"].values()) == n and \
        set(s["reasons"]) <= {"redis-unavailable", "redis-error"}, s
    assert re.search(r"\| reasons: redis-(unavailable|error) \d+", cp.stderr), cp.stderr
    assert outputs(tmp_path / "out") == {name + ".json" for name in files}


def slow_failing_backend(delays):
    """Answers every POST 500 after a delay chosen by the body's file_path, so that the
    requests complete in an order other than the files' order."""
    delays = dict(delays)

    def answer(body):
        time.sleep(delays.get(json.loads(body)["file_path"], 0))
        return 500, {"error": "no luck"}

    return StubBackend(answer)


def test_failures_listed_in_file_order(tmp_path):
    names = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    make_tree(tmp_path / "in", names=names, ignored=[])
    # the first file answers last: completion order is e, d, c, b, a
    backend = slow_failing_backend({n: 0.1 * (len(names) - i) for i, n in enumerate(names)})
    try:
        argv = ["--url", backend.url(ROUTE), "--in-dir", tmp_path / "in", "--out-dir",
                tmp_path / "out", "--format", "file_path", "--concurrency", len(names)]
        cp, doc = json_run(*argv)
        assert cp.returncode == 1, cp.stderr
        assert [f["file"] for f in doc["total"]["failures"]] == names, doc["total"]
        # the lines are printed as the requests complete: not in file order here
        completed = [l.split()[0] for l in cp.stderr.splitlines() if l.split()[0] in names]
        assert sorted(completed) == names and completed != names, cp.stderr

        cp = run_batch(*argv + ["--quiet"])
        assert cp.returncode == 1, cp.stderr
        failed = re.findall(r"^  failed: (\S+) +500 +no luck$", cp.stdout, re.M)
        assert failed == names, cp.stdout
    finally:
        backend.close()


def test_help_shows_exit_codes_summary_and_json(tmp_path):
    cp = run_batch("--help", timeout=20)
    assert cp.returncode == 0, cp.stderr
    text = cp.stdout
    for needle in ("Exit status: 0 all requests answered 2xx; 1 some request failed",
                   "2 bad arguments or bad input",
                   "hits/misses/bypass", "p50/p95/p99",
                   '{"passes": [summary, ...], "total":',
                   '{"instances": [{"b64": "..."}]}', '{"image_data": "..."}',
                   "<out-dir>/<relative path>.json", "--concurrency N"):
        assert needle in text, (needle, text)


# ----------------------------------------------------------------------- bad arguments


def bad_case(tmp_path, case):
    """-> (argv, message expected on stderr) for one kind of bad invocation."""
    good_in = tmp_path / "in"
    make_tree(good_in, names=["a.png"], ignored=[])
    url = "http://127.0.0.1:%d%s" % (free_port(), ROUTE)
    base = {"--url": url, "--in-dir": good_in, "--out-dir": tmp_path / "out"}
    extra = []
    if case == "missing dir":
        base["--in-dir"], msg = tmp_path / "nope", "does not exist"
    elif case == "not a dir":
        base["--in-dir"], msg = good_in / "a.png", "is not a directory"
    elif case == "no images":
        make_tree(tmp_path / "empty", names=[], ignored=["notes.txt", "sub/x.md"])
        base["--in-dir"], msg = tmp_path / "empty", "no images"
    elif case == "empty dir":
        os.makedirs(str(tmp_path / "void"))
        base["--in-dir"], msg = tmp_path / "void", "no images"
    elif case == "broken symlink":
        os.symlink(str(tmp_path / "gone.png"), str(good_in / "b.png"))
        msg = "cannot read %s: broken symlink" % (good_in / "b.png")
    elif case == "unreadable file":
        os.chmod(str(good_in / "a.png"), 0)
        msg = "cannot read %s: Permission denied" % (good_in / "a.png")
    elif case.startswith("url http://no-such-host"):
        base["--url"], msg = case[4:], "cannot resolve host no-such-host.invalid: "
    elif case.startswith("url "):
        base["--url"], msg = case[4:], "bad URL"
    elif case == "missing url":
        del base["--url"]
        msg = "the following arguments are required: --url"
    else:  # "--flag value"
        flag, value = case.split(" ", 1)
        extra, msg = [flag, value], "argument %s" % flag
    argv = [x for kv in base.items() for x in kv] + extra
    return argv, msg


@pytest.mark.parametrize("case", [
    "missing dir", "not a dir", "no images", "empty dir", "broken symlink", "unreadable file",
    "url ftp://x/v1/models/m:predict", "url not a url", "url http:///v1/models/m:predict",
    "url http://127.0.0.1:99999/v1/models/m:predict", "missing url",
    "url http://no-such-host.invalid:8080/v1/models/m:predict",
    "--concurrency 0", "--concurrency many", "--repeat 0", "--timeout-ms -5", "--format xml",
])
def test_bad_arguments_rejected(tmp_path, case):
    if case == "unreadable file" and os.geteuid() == 0:
        pytest.skip("root reads a chmod 000 file (the broken symlink case covers this path)")
    argv, msg = bad_case(tmp_path, case)
    cp = run_batch(*argv, timeout=20)
    assert cp.returncode == 2, (cp.returncode, cp.stdout, cp.stderr)
    assert msg in cp.stderr, cp.stderr
    assert "Traceback" not in cp.stderr
    assert "predcache-batch" in cp.stderr.splitlines()[-1]
    assert cp.stdout == ""
    assert not (tmp_path / "out").exists(), "nothing written before the input is checked"
