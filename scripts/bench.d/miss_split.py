#!/usr/bin/python3
"""Split a miss run's latency into the model server's own time and the rest.

Reads `perf script -F comm,tid,time,event,trace` of a system-wide record of
    perf record -a -e syscalls:sys_enter_write,syscalls:sys_enter_read,
        syscalls:sys_exit_read,syscalls:sys_enter_readv,syscalls:sys_exit_readv,
        syscalls:sys_enter_writev -- sleep 1
taken while wrk (one thread, `write`/`read` per request) drives a model server that
reads a request with `readv` and answers with one `writev` (libevent's evhttp, as the
peer bench's backend does), straight or through a proxy.

Per wrk connection: from the request's `write` to the answer's first `read` (what wrk
measures). Per model server connection: from the `readv` that ends a request (less than
4096 bytes) to the answer's `writev` (its own time, its timer included). Prints both
medians and means, and what the rest adds: the hops, the proxy's work and its waits for
the CPU. The two sides are not matched request by request; over a second both see the
same requests.

usage: perf script -i FILE -F comm,tid,time,event,trace | miss_split.py [SERVER_COMM]
"""
import re
import sys


def ret(field):
    """A system call's return value as perf prints it (hex; an error is negative)."""
    n = int(field, 16)
    return n - (1 << 64) if n >= 1 << 63 else n


def main():
    server = sys.argv[1] if len(sys.argv) > 1 else "backend"
    fd_re = re.compile(r"fd: 0x([0-9a-f]+)")
    pending = {}  # tid -> fd of the read in progress
    sent = {}  # wrk fd -> time of its request's write
    took = {}  # server fd -> time its request was read whole
    client, own = [], []
    for line in sys.stdin:
        f = line.split()
        if len(f) < 4:
            continue
        comm, tid, ev = f[0], f[1], f[3]
        try:
            t = float(f[2].rstrip(":")) * 1e6
        except ValueError:
            continue
        m = fd_re.search(line)
        if comm == "wrk":
            if ev.endswith("sys_enter_write:") and m:
                sent[int(m.group(1), 16)] = t
            elif ev.endswith("sys_enter_read:") and m:
                pending[tid] = int(m.group(1), 16)
            elif ev.endswith("sys_exit_read:") and tid in pending:
                fd = pending.pop(tid)
                if fd in sent and ret(f[4]) > 0:
                    client.append(t - sent.pop(fd))
        elif comm == server:
            if ev.endswith("sys_enter_readv:") and m:
                pending[tid] = int(m.group(1), 16)
            elif ev.endswith("sys_exit_readv:") and tid in pending:
                fd, n = pending.pop(tid), ret(f[4])
                if 0 < n < 4096:
                    took[fd] = t
            elif ev.endswith("sys_enter_writev:") and m:
                fd = int(m.group(1), 16)
                if fd in took:
                    own.append(t - took.pop(fd))
    if not client or not own:
        sys.exit("miss_split: no requests seen (wrong SERVER_COMM, or no load)")

    def med(a):
        return sorted(a)[len(a) // 2]

    def mean(a):
        return sum(a) / len(a)

    print("client  n=%d  median %.0f us  mean %.0f us" % (len(client), med(client), mean(client)))
    print("server  n=%d  median %.0f us  mean %.0f us" % (len(own), med(own), mean(own)))
    print("rest    median %.0f us  mean %.0f us" % (med(client) - med(own), mean(client) - mean(own)))


if __name__ == "__main__":
    main()
