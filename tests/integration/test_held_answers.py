"""Answers made while clients' requests are read (hits from the in-process tier) are held
and written together once the worker has run every client's event that is ready (http.c,
hold_answer). Each answer must still reach its own client whole and right, whatever the
other connections do meanwhile: a client that half-closes after its request gets its answer,
one that resets leaves the others' answers alone.

To have many requests ready at once, predcache is stopped (SIGSTOP) while they are sent and
then let go: its one worker finds them all in one look."""

import json
import os
import random
import signal
import socket
import struct
from contextlib import contextmanager

from conftest import wait_for
from oracle import Oracle

PREDICT = "/v1/models/m:predict"
L1 = {"cache": {"l1_max_bytes": "4m", "l1_ttl_ms": "60000"}}
HOLD_MAX = 16  # PC_HTTP_HOLD_MAX


def body_of(i):
    return json.dumps({"instances": [[i, i + 0.25, -i]]}).encode()


def request_bytes(body):
    return (b"POST " + PREDICT.encode() + b" HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
            b"\r\n\r\n" + body)


def read_answer(s):
    """(status, headers, body) of one answer on s, read whole (Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "closed before an answer's head: %r" % data[:200]
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers["content-length"])
    while len(rest) < n:
        chunk = s.recv(65536)
        assert chunk, "closed after %d of %d body bytes" % (len(rest), n)
        rest += chunk
    assert len(rest) == n, "%d bytes past the answer" % (len(rest) - n)
    return int(lines[0].split()[1]), headers, rest


def check(oracle, body, answer):
    status, headers, got = answer
    assert status == 200, (status, got[:200])
    reason = oracle.check("POST", PREDICT, body, {"Content-Type": "application/json"}, status,
                          got, headers.get("x-cache"))
    assert reason is None, reason
    return headers.get("x-cache")


@contextmanager
def stopped(p):
    os.kill(p.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(p.pid, signal.SIGCONT)


def held_counts(p):
    m = p.metrics()
    return (m.get(("predcache_answers_held_total", frozenset()), 0.0),
            m.get(("predcache_answer_flushes_total", frozenset()), 0.0))


def cached_connections(p, oracle, n):
    """n connections, each having had one answer (so accepted), and n bodies in the tier."""
    for i in range(n):
        r = p.post(PREDICT, body=body_of(i))
        assert r.status_code == 200, r.text
        check(oracle, body_of(i), (200, {k.lower(): v for k, v in r.headers.items()}, r.content))
    wait_for(lambda: p.metric("predcache_store_ok_total") >= n, what="%d stores" % n)
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", p.listen_port), timeout=10)
        s.sendall(request_bytes(body_of(i)))
        assert check(oracle, body_of(i), read_answer(s)) == "HIT"
        socks.append(s)
    return socks


def ask_all(p, oracle, socks, pick, reset=()):
    """While predcache is stopped, connection k asks for body_of(pick(k)); those in reset
    then reset (an RST on close), the others are read and checked. (held, writes): how many
    answers were held, and in how many writes they went out."""
    held0, flushes0 = held_counts(p)
    with stopped(p):
        for k, s in enumerate(socks):
            s.sendall(request_bytes(body_of(pick(k))))
            if k in reset:  # SO_LINGER on, 0 s
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
    for k, s in enumerate(socks):
        if k not in reset:
            assert check(oracle, body_of(pick(k)), read_answer(s)) == "HIT"
    held, flushes = held_counts(p)
    return held - held0, flushes - flushes0


def test_answers_read_together_go_out_together_each_to_its_own_client(start_predcache):
    p = start_predcache(conf=L1)
    oracle = Oracle("held answers")
    n = 12
    socks = cached_connections(p, oracle, n)
    try:
        # Each connection asks for another body than the one it warmed with, in a shuffled
        # order: an answer that went to the wrong connection would be judged wrong.
        order = list(range(n))
        random.Random(7).shuffle(order)
        held, writes = ask_all(p, oracle, socks, lambda k: order[k])
        assert held == n, "answers held: %d of %d" % (held, n)
        # Written together: once when the worker has read them all (twice or so if a slow
        # build's pass outlasts PC_HTTP_HOLD_MS), never one write each.
        assert 1 <= writes <= n // 3, "%d writes for %d answers" % (writes, n)
        oracle.assert_clean()
    finally:
        for s in socks:
            s.close()


def test_at_most_sixteen_answers_wait_for_one_write(start_predcache):
    p = start_predcache(conf=L1)
    oracle = Oracle("held answers, more than the most held")
    n = 40
    socks = cached_connections(p, oracle, n)
    try:
        held, writes = ask_all(p, oracle, socks, lambda k: (k + 1) % n)
        assert held == n
        assert writes >= (n + HOLD_MAX - 1) // HOLD_MAX, (
            "%d writes for %d answers held, at most %d at a time" % (writes, n, HOLD_MAX))
        oracle.assert_clean()
    finally:
        for s in socks:
            s.close()


def test_a_client_that_half_closes_after_its_request_gets_its_held_answer(start_predcache):
    """The client's end comes with its request: it is read in the same pass, while the
    answer is held. The answer must still go out, then the connection closes."""
    p = start_predcache(conf=L1)
    oracle = Oracle("held answers, half-closed clients")
    n = 8
    socks = cached_connections(p, oracle, n)
    try:
        held0, _ = held_counts(p)
        with stopped(p):
            for k, s in enumerate(socks):
                s.sendall(request_bytes(body_of(n - 1 - k)))
                s.shutdown(socket.SHUT_WR)
        for k, s in enumerate(socks):
            assert check(oracle, body_of(n - 1 - k), read_answer(s)) == "HIT"
            assert s.recv(1) == b"", "the connection stays open after the answer"
        held, _ = held_counts(p)
        assert held - held0 == n
        oracle.assert_clean()
    finally:
        for s in socks:
            s.close()


def test_clients_that_reset_while_their_answers_wait_leave_the_others_whole(start_predcache):
    """Half of the clients send their request and reset at once. Their requests are read and
    answered (held) in the same pass as the others'; the resets are met when the held
    answers are written (the write fails, and those connections are freed then). The others'
    answers go out whole, and the worker goes on serving."""
    p = start_predcache(conf=L1)
    oracle = Oracle("held answers, clients reset")
    n = 12
    socks = cached_connections(p, oracle, n)
    try:
        reset = set(range(0, n, 2))
        held, _ = ask_all(p, oracle, socks, lambda k: (k + 5) % n, reset)
        assert held == n
        # The worker still serves, on these connections and on new ones.
        for k, s in enumerate(socks):
            if k not in reset:
                s.sendall(request_bytes(body_of(k)))
                assert check(oracle, body_of(k), read_answer(s)) == "HIT"
        r = p.post(PREDICT, body=body_of(3))
        assert r.status_code == 200 and r.headers["X-Cache"] == "HIT"
        oracle.assert_clean()
    finally:
        for s in socks:
            s.close()
