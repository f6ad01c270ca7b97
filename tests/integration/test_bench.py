"""scripts/bench (make bench) in its tiny mode: it runs every phase, prints one table with
numbers, writes the same as JSON, exits 0 and leaves nothing running. Speed is never
checked: this is about the benchmark working, not about how fast predcache is. Every
answer it can check (the fills, a pass over the cached inputs after each hit run, the
miss runs) is checked against its own request: the count of wrong answers must be 0.
The gRPC phases (h2load, python grpcio checking passes) run too, so that the gRPC bench
path cannot rot; and so do the miss rows at c8, nginx's proxy_cache rows (when nginx is
installed) and the rows with Redis 0.2 ms away (--redis-delay-ms, through
scripts/bench.d/delay_relay.c), with the Redis commands per miss.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import PYTHON, ROOT

BENCH = os.path.join(ROOT, "scripts", "bench")
NUMBER = r"\d+(?:\.\d+)?"


def run_bench(args, timeout):
    """Runs the bench; on timeout SIGTERM lets it stop what it started, then SIGKILL."""
    proc = subprocess.Popen([PYTHON, BENCH] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail("scripts/bench did not finish in %d s:\n%s" % (timeout, out[-4000:]))
    return proc.returncode, out


def test_bench_smoke_prints_a_table_of_numbers(predcache_bin, tmp_path):
    if "valgrind" in os.path.basename(predcache_bin):
        pytest.skip("timings under valgrind mean nothing; the bench runs predcache itself")
    for tool in ("wrk", "redis-benchmark", "cc", "h2load"):
        if shutil.which(tool) is None:
            pytest.skip("%s not installed (scripts/bootstrap installs it)" % tool)
    out_json = str(tmp_path / "bench.json")
    nginx = shutil.which("nginx") or os.access("/usr/sbin/nginx", os.X_OK)
    rc, out = run_bench(["--quick", "--smoke", "--binary", predcache_bin, "--json", out_json,
                         "--redis-delay-ms", "0.2"], timeout=150)
    assert rc == 0, out[-4000:]
    assert "bench: OK (everything stopped)" in out, out[-4000:]
    m = re.search(r"^wrong answers: (\d+) \(of (\d+) checked: (.*)\)$", out, re.M)
    assert m, "no wrong-answer count in:\n" + out[-4000:]
    assert int(m.group(1)) == 0 and int(m.group(2)) > 0, m.group(0)

    # One table: a row per measurement, each with figures.
    rows = {
        "hit, 8 KB body": r"hit, 8 KB body, \d+ inputs, c64\s+(%s)\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER, NUMBER),
        "miss direct": r"miss, straight to the model server, c1\s+(%s)\s+(%s)" % (NUMBER, NUMBER),
        "miss through": r"miss, through predcache, c1\s+(%s)\s+(%s)" % (NUMBER, NUMBER),
        "overhead": r"miss overhead \(p50 through - direct\)\s+-\s+(-?%s)" % NUMBER,
        "miss direct c8": r"miss, straight to the model server, c8\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER),
        "miss through c8": r"miss, through predcache, c8\s+(%s)\s+(%s)\s+(%s)\s+-\s+"
                           r"(%s) Redis commands run a miss" % (NUMBER, NUMBER, NUMBER, NUMBER),
        "overhead c8": r"miss overhead \(p50 through - direct\), c8\s+-\s+(-?%s)" % NUMBER,
        "delay ping": r"Redis \+0.2 ms: PING round trip \(relay; direct %s ms\)\s+-\s+(%s)" % (
            NUMBER, NUMBER),
        "delay hit": r"Redis \+0.2 ms: hit, 8 KB body, \d+ inputs, c64\s+(%s)\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER, NUMBER),
        "delay miss c1": r"Redis \+0.2 ms: miss, through predcache, c1\s+(%s)\s+(%s)\s+(%s)"
                         r"\s+-\s+(%s) Redis commands run a miss" % (NUMBER, NUMBER, NUMBER,
                                                                    NUMBER),
        "delay miss c8": r"Redis \+0.2 ms: miss, through predcache, c8\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER),
        "delay added": r"Redis \+0.2 ms: miss overhead added by the delay, c1\s+-\s+(-?%s)"
                       r".*= (-?%s) round trips" % (NUMBER, NUMBER),
        "grpc hit": r"gRPC hit, same tensors, \d+ inputs, c64 m1\s+(%s)\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER, NUMBER),
        "grpc miss direct": r"gRPC miss, straight to the model server, c1\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER),
        "grpc miss through": r"gRPC miss, through predcache, c1\s+(%s)\s+(%s)" % (NUMBER, NUMBER),
        "grpc overhead": r"gRPC miss overhead \(p50 through - direct\)\s+-\s+(-?%s)" % NUMBER,
        "python direct": r"miss, straight to the Python model server, c1\s+(%s)\s+(%s)" % (
            NUMBER, NUMBER),
        "python through": r"miss, through predcache to it, c1\s+(%s)\s+(%s)" % (NUMBER, NUMBER),
        "python overhead": r"miss overhead, Python model server\s+-\s+(-?%s)" % NUMBER,
        "redis floor": r"redis-benchmark GET, 8 KB values, c64\s+(%s)" % NUMBER,
        "fixed floor": r"fixed-answer HTTP server, same load, c64\s+(%s)" % NUMBER,
        "size 1 KB": r"hit, 1 KB body, \d+ inputs\s+(%s)\s+(%s)\s+(%s)" % (NUMBER, NUMBER, NUMBER),
        "distinct": r"hit, 10\^3 distinct inputs, 8 KB body\s+(%s)" % NUMBER,
        "keys 8 KB": r"key derivation, 8 KB body\s+(%s)\s+-\s+-\s+(%s)" % (NUMBER, NUMBER),
        "stream direct": r"stream, first event, straight to the model server\s+-\s+(%s)" % NUMBER,
        "stream hit": r"stream, first event, through predcache \(hit: replayed\)\s+-\s+(%s)"
                      % NUMBER,
        "stream overhead": r"stream first-event overhead \(p50 through - direct\)\s+-\s+(-?%s)"
                           % NUMBER,
    }
    if nginx:
        rows.update({
            "nginx hit": r"nginx proxy_cache hit, 8 KB body, \d+ inputs, c64\s+(%s)\s+(%s)\s+"
                         r"(%s)" % (NUMBER, NUMBER, NUMBER),
            "nginx miss c1": r"miss, through nginx proxy_cache, c1\s+(%s)\s+(%s)" % (
                NUMBER, NUMBER),
            "nginx overhead c1": r"nginx miss overhead \(p50 through - direct\), c1\s+-\s+"
                                 r"(-?%s)" % NUMBER,
            "nginx overhead c8": r"nginx miss overhead \(p50 through - direct\), c8\s+-\s+"
                                 r"(-?%s)" % NUMBER,
        })
    else:
        assert "bench: skipped: nginx not installed" in out, out[-4000:]
    table = out[out.index("measurement"):]
    for name, pattern in rows.items():
        m = re.search(pattern, table)
        assert m, "no %s row with numbers in:\n%s" % (name, table)
    m = re.search(rows["hit, 8 KB body"], table)
    assert float(m.group(1)) > 0

    # The JSON holds the same table, and every figure the table shows.
    with open(out_json) as f:
        doc = json.load(f)
    assert doc["ok"] is True and doc["failures"] == []
    # The answers were checked, every step of them, and none was wrong.
    integrity = doc["integrity"]
    assert doc["wrong_answers"] == 0 == integrity["wrong_answers"], integrity
    assert integrity["samples"] == [], integrity
    for step in ("fill", "verify", "miss native direct", "miss native predcache",
                 "miss python direct", "miss python predcache", "stream direct", "stream pass",
                 "stream miss", "stream hit", "grpc fill", "grpc verify", "grpc miss direct",
                 "grpc miss predcache", "miss native direct c8", "miss native predcache c8",
                 "miss native redis+0.2ms predcache", "miss native redis+0.2ms predcache c8") + ((
                     "nginx fill", "nginx verify", "miss native nginx", "miss native nginx c8")
                     if nginx else ()):
        assert integrity["steps"][step]["checked"] > 0, (step, integrity)
        assert integrity["steps"][step]["wrong"] == 0, (step, integrity)
    for run in [doc["hit"]] + doc["sizes"] + doc["distinct"]:  # every cached input, checked
        assert run["verified"]["checked"] == run["verified"]["inputs"] == run["inputs"], run
        assert run["verified"]["wrong"] == 0, run
    delayed = doc["redis_delay"]["miss"]
    misses = [doc["miss"], doc["miss_c8"], doc["miss_python"]] + delayed
    assert [m["connections"] for m in misses] == [1, 8, 1, 1, 8]
    for m in misses:  # every answer of every miss run, checked
        for rnd in m["wrk"]:
            for which in ("direct", "predcache") + (
                    ("nginx",) if nginx and m["model_server"] == "native" and m in (
                        doc["miss"], doc["miss_c8"]) else ()):
                assert rnd[which]["answers_checked"] == rnd[which]["requests"] > 0, rnd[which]
        # Redis commands per miss (INFO commandstats): at least the lookup
        assert m["redis_commands_per_miss"] >= 1, m["redis_commands"]
    if nginx:
        n = doc["nginx_hit"]
        assert n["rps"] > 0 and n["filled"] == {"MISS": n["inputs"]}, n
        assert n["verified"] == {"HIT": n["inputs"]}, n
    d = doc["redis_delay"]
    assert d["delay_ms"] == 0.2 and d["added_rtt_ms"] > 0.1, d  # the relay does delay
    assert d["hit"]["verified"]["checked"] == d["hit"]["inputs"], d["hit"]["verified"]
    # gRPC: every h2load call answered grpc-status OK and a HIT (predcache's metrics), every
    # input verified a HIT afterwards; every miss a MISS, each answer checked again.
    g = doc["grpc_hit"]
    assert g["calls"] > 0 and g["answers"]["HIT"] == sum(g["answers"].values()) == g["grpc_ok"], g
    assert g["verified"] == {"HIT": g["inputs"]}, g["verified"]
    assert g["rps"] > 0 and g["p99_ms"] > 0
    for rnd in doc["grpc_miss"]["rounds_detail"]:
        calls = rnd["predcache"]["calls"]
        assert rnd["direct"]["answered"] == rnd["predcache"]["answered"] == calls > 0, rnd
        assert rnd["predcache"]["answers"]["MISS"] == calls == rnd["predcache"]["grpc_ok"], rnd
        assert rnd["predcache"]["checked"] == {"HIT": calls}, rnd
        assert sum(rnd["direct"]["checked"].values()) == calls, rnd
    measured = [r["measurement"] for r in doc["table"]]
    assert len(measured) >= 12, measured
    assert doc["hit"]["rps"] > 0 and doc["hit"]["p99_ms"] > 0
    assert doc["hit"]["answers"]["hit"] > 0
    for m in misses:  # every answer through predcache was a real miss
        answers = m["answers_through"]
        assert answers["miss"] > 0 and answers["miss"] == sum(answers.values()), answers
    assert {k["size"] > 0 and k["instance_mb_s"] > 0 for k in doc["keys"]} == {True}

    # Everything it started is gone: its ports refuse connections.
    for name in ("server.listen", "server.admin_listen", "backend.url", "redis.port"):
        port = int(doc["overrides"][name].rsplit(":", 1)[-1])
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
