"""scripts/bench-cluster in a tiny run: a 3+3 cluster, 1 to 3 predcache processes and a
plain Redis row, every row answered from the cache, every verified answer right, exit 0.
Speed is never checked here."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import PYTHON, ROOT

BENCH = os.path.join(ROOT, "scripts", "bench-cluster")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_bench_cluster_tiny_run(predcache_bin):
    out = subprocess.run([PYTHON, BENCH, "--seconds", "1", "--inputs", "50", "--binary",
                          predcache_bin], capture_output=True, text=True, timeout=240)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert re.search(r"wrong answers: 0 \(of \d+ checked", text), text[-2000:]
    rows = [l for l in text.splitlines() if re.match(r"(cluster|plain)", l)]
    assert len(rows) == 6, rows
    for row in rows:  # every row ran and was answered from the cache (a loaded machine may
        share = float(re.search(r"(\d+\.\d)%", row).group(1))  # see a Redis timeout)
        assert share >= 90.0, row
    assert "everything stopped" in text
