"""scripts/demo (what `make demo` runs after bootstrap and the build): the OCR model
server, Redis and predcache on free ports, two passes of scripts/predcache-batch over
REST and two over gRPC (predcache-batch --grpc), the report, and nothing left running
afterwards.

The demo runs as a subprocess with /usr/bin/python3 in a session of its own, so that
every process it starts (and every process those start) can be found afterwards by its
session id, and stopped by pid if the demo failed to.
Needs tesseract (scripts/bootstrap installs tesseract-ocr and tesseract-ocr-eng).
"""

import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import PYTHON, REDIS_SERVER, ROOT

DEMO = os.path.join(ROOT, "scripts", "demo")
DEMO_TIMEOUT_S = 180


def session_members(sid):
    """{pid: (state, cmdline)} of the processes whose session id is sid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:  # gone meanwhile
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:
            found[int(entry)] = (fields[0], cmdline)
    return found


def processes_mentioning(text):
    """{pid: cmdline} of the processes whose command line contains text."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if text in cmdline:
            found[int(entry)] = cmdline.strip()
    return found


def kill_leftovers(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_demo(args, env):
    """-> (exit status, output, session id); the demo is stopped whatever happens."""
    proc = subprocess.Popen([PYTHON, DEMO] + list(args), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            env=env, cwd=ROOT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=DEMO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the demo stops what it started on SIGTERM
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=10)
        kill_leftovers(session_members(proc.pid))
        pytest.fail("scripts/demo did not finish in %d s; its output:\n%s"
                    % (DEMO_TIMEOUT_S, out))
    return proc.returncode, out, proc.pid


def demo_env(predcache_bin):
    return dict(os.environ, PREDCACHE_BIN=predcache_bin, REDIS_SERVER=REDIS_SERVER)


@pytest.mark.skipif(shutil.which("tesseract") is None,
                    reason="tesseract not installed (scripts/bootstrap installs tesseract-ocr "
                           "and tesseract-ocr-eng)")
def test_demo_two_samples_ok_and_nothing_left_running(predcache_bin):
    t0 = time.monotonic()
    rc, out, sid = run_demo(["--count", "2"], demo_env(predcache_bin))
    m = re.search(r"^  work dir +(\S+)$", out, re.M)
    workdir = m.group(1) if m else None
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", out)]

    # Nothing the demo started outlives it: no process of its session, none naming its
    # work dir (redis --dir, the model server's --port-file, predcache -c), none of the
    # pids it printed. The demo waits for each stop, so the grace is for the kernel only.
    def leftovers():
        found = {pid: cmd for pid, (state, cmd) in session_members(sid).items()
                 if state != "Z"}  # a zombie runs nothing (its new parent reaps it)
        if workdir:
            found.update(processes_mentioning(workdir))
        for pid in pids:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
            except OSError:
                continue
            if workdir and workdir in cmd:
                found[pid] = cmd
        return found

    deadline = time.monotonic() + 5
    left = leftovers()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers()
    kill_leftovers(left)
    assert not left, "still running after the demo exited (now killed): %s\n%s" % (left, out)

    assert rc == 0, out
    assert workdir, "the demo names its work dir:\n" + out
    assert len(pids) == 3, "redis, model server and predcache pids:\n" + out
    assert "speedup (warm vs cold): p50 " in out, out
    assert re.search(r"^speedup \(warm vs cold\): p50 [\d.]+x .* wall time [\d.]+x ", out,
                     re.M), out
    assert "accuracy: 2/2 (100%)" in out, out
    assert "demo: OK (everything stopped)" in out, out
    # the pass table: cold all misses, warm all hits, no bypass (Redis was up)
    assert re.search(r"^pass +files +ok +errors +hits +misses +bypass +p50 ms", out, re.M), out
    assert re.search(r"^cold +2 +2 +0 +0 +2 +0 ", out, re.M), out
    assert re.search(r"^warm +2 +2 +0 +2 +0 +0 ", out, re.M), out
    # every answer of each pass checked against the image sent, none wrong
    for label in ("cold", "warm"):
        assert re.search(r"^%s pass: wrong answers: 0 \(2 of 2 answers checked " % label, out,
                         re.M), out
    # the warm pass reached the model server only for its shadow checks, which all matched
    assert "(+2: the shadow checks)" in out.split("model server requests", 1)[1].splitlines()[0], out
    assert re.search(r"^shadow verification \(warm pass, verify_sample = 1\): 2 hits checked "
                     r"against the model server: 2 match, 0 mismatch, 0 error, 0 skipped$", out,
                     re.M), out
    # gRPC: the model server's gRPC port behind predcache's, cold then warm with
    # predcache-batch --grpc; the warm pass all hits without one model server request
    assert re.search(r"^  model server  http://127\.0\.0\.1:\d+  gRPC 127\.0\.0\.1:\d+ ", out,
                     re.M), out
    assert re.search(r"^  predcache     http://127\.0\.0\.1:\d+  gRPC 127\.0\.0\.1:\d+ ", out,
                     re.M), out
    assert re.search(r"^grpc cold +2 +2 +0 +0 +2 +0 ", out, re.M), out
    assert re.search(r"^grpc warm +2 +2 +0 +2 +0 +0 ", out, re.M), out
    for label in ("grpc cold", "grpc warm"):
        assert re.search(r"^%s pass: wrong answers: 0 \(2 of 2 answers checked " % label, out,
                         re.M), out
    assert re.search(r"^gRPC model server requests \(its /v1/models/ocr/stats\): \+2 on the "
                     r"gRPC cold pass, \+0 on the gRPC warm pass$", out, re.M), out
    assert "gRPC answers with the REST answers' text: 2/2" in out, out
    assert "gRPC warm answers byte-identical to gRPC cold: 2/2" in out, out
    assert not os.path.exists(workdir), "the work dir is removed after a success"
    assert time.monotonic() - t0 < DEMO_TIMEOUT_S


def test_demo_missing_binary_exits_2(tmp_path):
    missing = str(tmp_path / "no-predcache")
    rc, out, sid = run_demo(["--count", "2"], dict(os.environ, PREDCACHE_BIN=missing))
    kill_leftovers(session_members(sid))
    assert rc == 2, out
    assert "demo: FAILED: missing: predcache binary %s (run make)" % missing in out, out
    assert "work dir" not in out, "nothing is started when something is missing"
