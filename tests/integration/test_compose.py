"""docker-compose.yml is valid (checked with Debian's docker-compose; no engine runs here),
and the predcache image holds what it runs and no more."""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_compose_file_is_valid():
    out = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for service in ("redis:", "model-server:", "predcache:"):
        assert service in out.stdout
    assert "compose.conf" in out.stdout

    import yaml  # docker-compose itself needs python3-yaml

    services = yaml.safe_load(out.stdout)["services"]
    # predcache starts once its dependencies pass their healthchecks, not merely once
    # their containers exist: every dependency with a healthcheck is waited on.
    depends = services["predcache"]["depends_on"]
    assert set(depends) == {"redis", "model-server"}, depends
    for name in depends:
        assert "healthcheck" in services[name], name
        assert depends[name] == {"condition": "service_healthy"}, (name, depends[name])


def dockerfile_stages(path):
    """[(FROM line, [instruction lines])] with continuation lines joined."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append((line, []))
        elif stages:
            stages[-1][1].append(line)
    return stages


def test_predcache_image_runtime_stage():
    stages = dockerfile_stages(os.path.join(ROOT, "Dockerfile"))
    assert len(stages) == 2, stages
    runtime = stages[-1][1]
    # it runs the binary: no Python, no test files in the image
    assert 'ENTRYPOINT ["/usr/local/bin/predcache"]' in runtime, runtime
    assert not [l for l in runtime if l.upper().startswith("HEALTHCHECK")], runtime
    installs = " ".join(l for l in runtime if "apt-get install" in l)
    assert installs and "python3" not in installs.split(), installs
    copies = [l for l in runtime if l.upper().startswith("COPY ")]
    assert not [l for l in copies if "tests/" in l], copies
    # every COPY source from the build context exists
    for line in [l for _, lines in stages for l in lines if l.upper().startswith("COPY ")]:
        parts = line.split()[1:]
        if parts[0].startswith("--from="):
            continue
        for src in parts[:-1]:
            assert os.path.exists(os.path.join(ROOT, src)), line


def test_compose_conf_passes_check():
    binary = os.environ.get("PREDCACHE_BIN", os.path.join(ROOT, "predcache"))
    out = subprocess.run([binary, "-c", os.path.join(ROOT, "conf/compose.conf"), "--check"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_cluster_compose_file_is_valid():
    """docker-compose.cluster.yml: six cluster nodes, a one-shot that creates the cluster,
    and predcache started after it with the cluster conf."""
    out = subprocess.run(["docker-compose", "-f", "docker-compose.cluster.yml", "config"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    import yaml

    services = yaml.safe_load(out.stdout)["services"]
    nodes = ["redis-%d" % i for i in range(1, 7)]
    for n in nodes:
        assert "--cluster-enabled" in services[n]["command"], services[n]
        assert "healthcheck" in services[n], n
    init = services["redis-cluster-init"]
    assert "--cluster create" in " ".join(init["command"]) and \
        "--cluster-replicas 1" in " ".join(init["command"])
    assert set(init["depends_on"]) == set(nodes)
    depends = services["predcache"]["depends_on"]
    assert depends["redis-cluster-init"] == {"condition": "service_completed_successfully"}
    assert depends["model-server"] == {"condition": "service_healthy"}
    assert any("compose-cluster.conf" in v for v in services["predcache"]["volumes"])


def test_cluster_compose_conf_passes_check():
    binary = os.environ.get("PREDCACHE_BIN", os.path.join(ROOT, "predcache"))
    conf = os.path.join(ROOT, "conf/compose-cluster.conf")
    out = subprocess.run([binary, "-c", conf, "--check"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    with open(conf) as f:
        text = f.read()
    assert "cluster = on" in text and "nodes = " in text
