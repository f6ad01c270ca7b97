"""docker-compose.yml is valid (checked with Debian's docker-compose; no engine runs here)."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid():
    out = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for service in ("redis:", "model-server:", "predcache:"):
        assert service in out.stdout
    assert "compose.conf" in out.stdout


def test_compose_conf_passes_check():
    binary = os.environ.get("PREDCACHE_BIN", os.path.join(ROOT, "predcache"))
    out = subprocess.run([binary, "-c", os.path.join(ROOT, "conf/compose.conf"), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
