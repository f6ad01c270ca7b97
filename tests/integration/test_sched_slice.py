"""[server] sched_slice_us: each worker thread asks the kernel for a scheduler slice.

Under Linux's EEVDF scheduler (6.12 and later keep a slice per thread) a thread that
wakes with a shorter slice than the running one's takes the CPU at once. predcache's
workers ask for 20 ms by default, so that a Redis server or model server on the same CPU,
woken by a worker's lookup or model call, runs then instead of after the worker's slice
(docs/PERFORMANCE.md). These tests read each thread's slice from /proc (se.slice, ns):
the workers' is the one configured, the main thread keeps the kernel's, 0 leaves the
workers with the kernel's, a reload's new workers take the new value, and a value the
kernel cannot take is refused with the option named.
"""
import ctypes
import os
import platform
import signal
import struct
import subprocess

import pytest

from conftest import merge_conf, wait_for, write_conf

SYS_SCHED_GETATTR = {"x86_64": 315, "aarch64": 275}.get(platform.machine())


def kernel_keeps_slices():
    """Whether sched_getattr reports a slice for this (SCHED_OTHER) thread: Linux 6.12+."""
    if SYS_SCHED_GETATTR is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(48)
    if libc.syscall(SYS_SCHED_GETATTR, 0, buf, 48, 0) != 0:
        return False
    runtime = struct.unpack_from("<Q", buf.raw, 24)[0]
    return runtime > 0


pytestmark = pytest.mark.skipif(not kernel_keeps_slices(),
                                reason="this kernel keeps no slice per thread (Linux 6.12+)")


def slice_of(path):
    with open(path) as f:
        for line in f:
            if line.startswith("se.slice"):
                return int(line.split(":", 1)[1])
    raise AssertionError("no se.slice in %s" % path)


def thread_slices(pid):
    """{tid: slice in ns} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            out[int(tid)] = slice_of("/proc/%d/task/%s/sched" % (pid, tid))
        except FileNotFoundError:  # a thread that ended meanwhile
            pass
    return out


def kernel_default():
    return slice_of("/proc/self/sched")  # this test process never asks for one


def workers_with(pid, ns):
    return sorted(t for t, s in thread_slices(pid).items() if t != pid and s == ns)


def test_workers_take_the_default_slice_main_thread_keeps_the_kernels(start_predcache):
    p = start_predcache({"server": {"workers": "2"}})
    slices = thread_slices(p.pid)
    assert slices[p.pid] == kernel_default(), slices
    assert len(workers_with(p.pid, 20_000_000)) == 2, slices
    assert "a scheduler slice of 20000 us each ([server] sched_slice_us)" in p.stderr_text()
    r = p.post("/v1/models/m:predict", json_body={"instances": [[1.0, 2.0]]})
    assert r.status_code == 200 and r.headers["X-Cache"] == "MISS", r.headers


def test_zero_leaves_the_kernels_slice(start_predcache):
    p = start_predcache({"server": {"workers": "2", "sched_slice_us": "0"}})
    slices = thread_slices(p.pid)
    assert set(slices.values()) == {kernel_default()}, slices
    assert len(slices) >= 3, slices
    assert "sched_slice_us" not in p.stderr_text()


def test_a_value_of_its_own_and_a_reload(start_predcache):
    p = start_predcache({"server": {"workers": "2", "sched_slice_us": "3000"}})
    assert len(workers_with(p.pid, 3_000_000)) == 2, thread_slices(p.pid)
    conf = merge_conf(p.conf, {"server": {"sched_slice_us": "7000"}})
    write_conf(p.conf_path, conf)
    os.kill(p.pid, signal.SIGHUP)
    wait_for(lambda: "reload: configuration 1 applied" in p.stderr_text(), what="reload")
    # The new set's workers take the new slice; the old ones finish and exit.
    wait_for(lambda: len(workers_with(p.pid, 7_000_000)) == 2 and
             not workers_with(p.pid, 3_000_000),
             what="two workers with 7 ms and none left with 3 ms")
    r = p.post("/v1/models/m:predict", json_body={"instances": [[3.0]]})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("value,why", [
    ("50", "below the kernel's least slice: 0 (the kernel's default) or 100..100000"),
    ("100001", "out of range (0..100000)"),
    ("-1", "out of range (0..100000)"),
])
def test_values_the_kernel_cannot_take_are_refused(predcache_bin, value, why):
    r = subprocess.run([predcache_bin, "--set", "server.sched_slice_us=" + value, "--check"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "[server] sched_slice_us" in r.stderr and why in r.stderr, r.stderr
