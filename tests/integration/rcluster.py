"""A real Redis Cluster for the tests: N masters and N replicas of Debian's redis-server
(7.0) in cluster mode, each in its own directory under the test's, on free loopback ports.

    from rcluster import RedisCluster

    cluster = RedisCluster(tmp_path / "cluster", masters=3)
    try:
        cluster.start()                    # create, wait for state ok and replicas in sync
        m0 = cluster.masters()[0]          # Node objects, ordered by their first slot
        cluster.node_of_key("k")           # the master that owns k's slot (CLUSTER KEYSLOT)
        cluster.get("k"); cluster.exists("k"); cluster.keys("predcache:*")
        cluster.failover(cluster.replica_of(m0))   # CLUSTER FAILOVER; -> seconds taken
        cluster.kill(m1); cluster.wait_ok()        # SIGKILL; its replica takes over
        cluster.restart(m1)                        # back, as a replica of the new master
        m2.pause(); m2.resume()                    # SIGSTOP/SIGCONT (alive() skips it)
        cluster.reshard(src, dst, 100)             # redis-cli --cluster reshard
        cluster.migrate_slot(slot, dst)            # one slot, by hand (SETSLOT, MIGRATE)
        conf = cluster.predcache_conf(cache={...})   # predcache's overrides
    finally:
        cluster.stop()                     # every node: SIGTERM, then SIGKILL

Every node runs
    redis-server --port P --bind 127.0.0.1 --cluster-enabled yes
        --cluster-config-file <node dir>/nodes.conf --cluster-node-timeout 1000
        --save "" --appendonly no --dir <node dir>
plus two settings the tests need: --cluster-port B (the bus port, a free port of its own:
the default P + 10000 may be taken, or past 65535 for an ephemeral P) and
--repl-diskless-sync-delay 0 (a replica's first sync starts at once, not after 5 s).
More can be given with extra_args.

Nodes are Node objects (port, id, addr, alive, command(), log_text()); the cluster's view
of who is master comes from each live node's own line of CLUSTER NODES ("myself"). Every
wait has a deadline and fails with what it last saw. No global state: every cluster is
its own RedisCluster, stopped by its stop().
"""

import os
import signal
import subprocess
import time

from conftest import (REDIS_SERVER, GiveUp, RedisError, RedisProcess, Resp, free_port,
                      read_text, stop_process, wait_for)

REDIS_CLI = os.environ.get("REDIS_CLI", "/usr/bin/redis-cli")
SLOTS = 16384


def crc16(data):
    """CRC16/XMODEM, as Redis Cluster hashes keys."""
    crc = 0
    for c in data:
        crc ^= c << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key):
    """The slot of key, computed here (hash tags included): the same as CLUSTER KEYSLOT."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return crc16(key) % SLOTS


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _info(raw):
    """INFO / CLUSTER INFO text -> {field: value}."""
    out = {}
    for line in _text(raw).splitlines():
        if ":" in line and not line.startswith("#"):
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


class NodeLine:
    """One line of CLUSTER NODES: id, port, flags (a set), master_id (None for a master),
    link ("connected"/"disconnected"), slots [(first, last)] (migrating entries left out)."""

    def __init__(self, line):
        parts = line.split()
        self.id = parts[0]
        addr = parts[1].split("@", 1)[0].split(",", 1)[0]
        self.host, _, port = addr.rpartition(":")
        self.port = int(port) if port.isdigit() else 0
        self.flags = set(parts[2].split(","))
        self.master_id = None if parts[3] == "-" else parts[3]
        self.config_epoch = int(parts[6])
        self.link = parts[7]
        self.slots = []
        for s in parts[8:]:
            if s.startswith("["):
                continue
            a, _, b = s.partition("-")
            self.slots.append((int(a), int(b or a)))

    @property
    def is_master(self):
        return "master" in self.flags

    @property
    def failing(self):
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    def __repr__(self):
        return "<%s :%d %s%s>" % (self.id[:8], self.port, ",".join(sorted(self.flags)),
                                   "" if self.master_id is None else " of " + self.master_id[:8])


def cluster_gauges(p):
    """predcache p's view: (slots covered, masters, masters up) from its /metrics."""
    m = p.metrics()
    return tuple(m.get((name, frozenset())) for name in (
        "predcache_redis_cluster_slots_covered", "predcache_redis_cluster_masters",
        "predcache_redis_cluster_masters_up"))


def wait_covered(p, timeout=15.0, what="predcache to cover every slot with 3 masters up"):
    """Waits until predcache p has a slot map of every slot and 3 masters up; fails with its
    gauges and the end of its stderr."""
    try:
        wait_for(lambda: cluster_gauges(p) == (SLOTS, 3, 3), timeout=timeout, interval=0.1,
                 what=what)
    except AssertionError as e:
        raise AssertionError("%s; gauges (slots_covered, masters, masters_up) = %r\n"
                             "predcache stderr:\n%s" % (e, cluster_gauges(p),
                                                         p.stderr_text()[-3000:]))


class Node(RedisProcess):
    """One redis-server of the cluster, in <cluster dir>/node-<i>. .port, .bus_port, .addr
    ("127.0.0.1:P"), .id (its cluster node id, known once started), .alive, .proc."""

    def __init__(self, workdir, index, extra_args=()):
        self.index = index
        self.dir = os.path.join(str(workdir), "node-%d" % index)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.bus_port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.id = None
        self.starts = 0
        self.log = None
        self.paused = False

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=15.0):
        """Starts (or restarts, on the same ports and nodes.conf) and waits for PING."""
        assert not self.alive, "node %s already running" % self.addr
        self.starts += 1
        self.log = os.path.join(self.dir, "redis-%d.log" % self.starts)
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
               "--cluster-enabled", "yes",
               "--cluster-config-file", os.path.join(self.dir, "nodes.conf"),
               "--cluster-node-timeout", "1000",
               "--cluster-port", str(self.bus_port),
               "--save", "", "--appendonly", "no", "--dir", self.dir,
               "--repl-diskless-sync-delay", "0",
               "--daemonize", "no"] + self.extra_args
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)

        def ping():
            if self.proc.poll() is not None:
                raise GiveUp("redis-server %s exited with %s:\n%s" % (
                    self.addr, self.proc.returncode, self.log_text()[-2000:]))
            with Resp(self.port, timeout=1.0) as r:
                return r.command("PING") == "PONG"

        wait_for(ping, timeout=timeout, what="cluster node %s PING" % self.addr)
        self.id = _text(self.command("CLUSTER", "MYID"))
        return self

    def command(self, *args, timeout=5.0):
        with Resp(self.port, timeout=timeout) as r:
            return r.command(*args)

    def asking(self, *args, timeout=5.0):
        """ASKING, then the command, on one connection (to follow an ASK redirection)."""
        with Resp(self.port, timeout=timeout) as r:
            r.command("ASKING")
            return r.command(*args)

    def info(self, section=None):
        return _info(self.command(*(("INFO", section) if section else ("INFO",))))

    def cluster_info(self):
        return _info(self.command("CLUSTER", "INFO"))

    def cluster_nodes(self):
        """This node's view: [NodeLine], its own line flagged "myself"."""
        return [NodeLine(l) for l in _text(self.command("CLUSTER", "NODES")).splitlines()
                if l.strip()]

    def myself(self):
        return next(l for l in self.cluster_nodes() if "myself" in l.flags)

    def slot_ranges(self):
        """This node's view of the slot map: sorted [(first, last, master port)]."""
        return sorted((int(r[0]), int(r[1]), int(r[2][1]))
                      for r in self.command("CLUSTER", "SLOTS"))

    def log_text(self):
        return read_text(self.log) if self.log else ""

    def kill(self):
        if self.alive:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.paused = False

    def pause(self):
        """SIGSTOP: the node hangs (its peers mark it failed after the node timeout).
        The cluster's alive() leaves it out until resume()."""
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self):
        if self.alive:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def __repr__(self):
        return "<Node %d %s%s>" % (self.index, self.addr, "" if self.alive else " dead")


class RedisCluster:
    """masters masters, each with replicas_per_master replicas, under workdir.

    Construct, then start() (stop() in a finally, always). .nodes: every Node, in the order
    created (the first `masters` were created as masters; roles change with failovers, so
    ask masters()/replicas() for the current ones)."""

    def __init__(self, workdir, masters=3, replicas_per_master=1, extra_args=()):
        self.dir = str(workdir)
        os.makedirs(self.dir, exist_ok=True)
        self.n_masters = masters
        self.replicas_per_master = replicas_per_master
        self.nodes = [Node(self.dir, i, extra_args)
                      for i in range(masters * (1 + replicas_per_master))]
        self.timings = {}  # what took how long (seconds): "start", "failover", ...

    # ------------------------------------------------------------------ life cycle

    def start(self, timeout=90.0):
        """Starts every node, creates the cluster (redis-cli --cluster create), waits for
        cluster_state:ok on every node and every replica in sync. Stops every node and
        raises if any step fails."""
        t0 = time.monotonic()
        try:
            for n in self.nodes:
                n.start()
            cmd = [REDIS_CLI, "--cluster", "create"] + [n.addr for n in self.nodes] + [
                "--cluster-replicas", str(self.replicas_per_master), "--cluster-yes"]
            self._cli(cmd, timeout, "cluster create")
            self.wait_ok(timeout=max(10.0, timeout - (time.monotonic() - t0)))
            self.wait_sync(timeout=max(10.0, timeout - (time.monotonic() - t0)))
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def stop(self):
        """Stops every node (SIGTERM, then SIGKILL): safe to call more than once."""
        for n in self.nodes:
            try:
                n.stop()
            except Exception:  # noqa: BLE001 (teardown: stop the others anyway)
                if n.proc is not None and n.proc.poll() is None:
                    n.proc.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _cli(self, cmd, timeout, what):
        try:
            cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("redis-cli %s: still running after %.0f s\n%s" % (
                what, timeout, _text(e.stdout or b"")[-3000:]))
        if cp.returncode != 0 or "[ERR]" in cp.stdout:
            raise AssertionError("redis-cli %s failed (exit %d):\n%s\n%s" % (
                what, cp.returncode, cp.stdout[-3000:], cp.stderr[-2000:]))
        return cp.stdout

    # ------------------------------------------------------------------ topology

    def alive(self):
        """The nodes that can answer: running and not paused."""
        return [n for n in self.nodes if n.alive and not n.paused]

    def by_port(self, port):
        return next(n for n in self.nodes if n.port == int(port))

    def by_id(self, node_id):
        return next(n for n in self.nodes if n.id == node_id)

    def any_node(self):
        """A live node that answers (the first in creation order)."""
        for n in self.alive():
            try:
                if n.command("PING", timeout=1.0) == "PONG":
                    return n
            except (OSError, RedisError):
                continue
        raise AssertionError("no live cluster node answers")

    def masters(self):
        """The live (alive()) nodes that say they are masters (their own CLUSTER NODES line), those
        with slots first, ordered by their first slot."""
        out = []
        for n in self.alive():
            me = n.myself()
            if me.is_master:
                out.append((min(a for a, _ in me.slots) if me.slots else SLOTS, n.index, n))
        return [n for _, _, n in sorted(out)]

    def replicas(self):
        """The live (alive()) nodes that say they are replicas."""
        return [n for n in self.alive() if not n.myself().is_master]

    def master_of(self, replica):
        return self.by_id(replica.myself().master_id)

    def replica_of(self, master):
        """A live replica of master (the first in creation order); AssertionError if none.
        Ask before kill(master): once it is gone its replica is a master itself."""
        for n in self.replicas():
            if n.myself().master_id == master.id:
                return n
        raise AssertionError("%r has no live replica" % master)

    def slot_map(self):
        """[(first, last, master Node)], from CLUSTER SLOTS of a live node."""
        return [(a, b, self.by_port(p)) for a, b, p in self.any_node().slot_ranges()]

    def slots_of(self, master):
        """The slots master owns (CLUSTER SLOTS of a live node), a sorted list."""
        return [s for a, b, n in self.slot_map() if n is master for s in range(a, b + 1)]

    def key_slot(self, key):
        """CLUSTER KEYSLOT key, asked of a live node."""
        return int(self.any_node().command("CLUSTER", "KEYSLOT", key))

    def owner_of_slot(self, slot):
        for a, b, n in self.slot_map():
            if a <= slot <= b:
                return n
        raise AssertionError("slot %d is not served" % slot)

    def node_of_key(self, key):
        """The master that owns key's slot (CLUSTER KEYSLOT, then CLUSTER SLOTS)."""
        return self.owner_of_slot(self.key_slot(key))

    def seeds(self, nodes=None):
        """"127.0.0.1:p1, 127.0.0.1:p2, ..." of nodes (default: every node)."""
        return ", ".join(n.addr for n in (self.nodes if nodes is None else nodes))

    def predcache_seeds(self, first=None):
        """{"host", "port", "nodes"} for predcache's [redis]: first (default: the first
        master) as host/port, every other node in nodes."""
        first = first or self.masters()[0]
        return {"host": "127.0.0.1", "port": str(first.port),
                "nodes": self.seeds([n for n in self.nodes if n is not first])}

    def predcache_conf(self, **sections):
        """predcache conf overrides for this cluster ([redis] cluster = on, the seeds,
        timeout_ms 500), with sections ({"cache": {...}, ...}) merged in."""
        conf = {"redis": {"cluster": "on", "timeout_ms": "500", **self.predcache_seeds()}}
        for section, items in sections.items():
            conf.setdefault(section, {}).update(items)
        return conf

    # ------------------------------------------------------------------ data

    def command_for_key(self, key, *args, redirects=5):
        """args sent to the master that owns key, following MOVED and ASK."""
        node, asking = self.node_of_key(key), False
        for _ in range(redirects + 1):
            try:
                return node.asking(*args) if asking else node.command(*args)
            except RedisError as e:
                parts = str(e).split()
                if parts and parts[0] in ("MOVED", "ASK") and len(parts) == 3:
                    node = self.by_port(parts[2].rsplit(":", 1)[1])
                    asking = parts[0] == "ASK"
                    continue
                raise
        raise AssertionError("%r: more than %d redirections" % (args, redirects))

    def get(self, key):
        return self.command_for_key(key, "GET", key)

    def exists(self, key):
        return self.command_for_key(key, "EXISTS", key)

    def wait_key(self, key, timeout=10.0):
        """Polls until key exists (stores are asynchronous); returns its value."""
        return wait_for(lambda: self.get(key), timeout=timeout,
                        what="key %s to appear in the cluster" % key)

    def keys(self, pattern="*"):
        """KEYS pattern on every master, merged and sorted (str)."""
        out = set()
        for m in self.masters():
            out.update(_text(k) for k in m.command("KEYS", pattern))
        return sorted(out)

    def keys_by_master(self, pattern="*"):
        """{master Node: [keys it holds]}."""
        return {m: sorted(_text(k) for k in m.command("KEYS", pattern))
                for m in self.masters()}

    def flushall(self):
        for m in self.masters():
            m.command("FLUSHALL")

    # ------------------------------------------------------------------ waits

    def state(self):
        """{addr: summary} of every live node: for failure messages."""
        out = {}
        for n in self.alive():
            try:
                ci = n.cluster_info()
                out[n.addr] = "%s slots_ok=%s known=%s epoch=%s %r" % (
                    ci.get("cluster_state"), ci.get("cluster_slots_ok"),
                    ci.get("cluster_known_nodes"), ci.get("cluster_current_epoch"),
                    n.myself())
            except Exception as e:  # noqa: BLE001 (a report)
                out[n.addr] = "no answer: %r" % e
        return out

    def is_ok(self):
        """Every live node (alive(): a paused one is left out) says cluster_state:ok with
        all 16384 slots ok; they all tell the same slot map, served by live masters; none
        sees another live node as failing."""
        live = self.alive()
        ports = {n.port for n in live}
        maps = set()
        for n in live:
            ci = n.cluster_info()
            if ci.get("cluster_state") != "ok" or ci.get("cluster_slots_ok") != str(SLOTS):
                return False
            maps.add(tuple(n.slot_ranges()))
            for line in n.cluster_nodes():
                if line.port in ports and line.failing:
                    return False
        if len(maps) != 1:
            return False
        owners = {p for _, _, p in next(iter(maps))}
        return owners <= ports and sum(b - a + 1 for a, b, _ in next(iter(maps))) == SLOTS

    def wait_ok(self, timeout=30.0):
        """Waits until is_ok(); returns the seconds it took."""
        t0 = time.monotonic()
        try:
            wait_for(self.is_ok, timeout=timeout, interval=0.1,
                     what="cluster state ok on every live node, one slot map")
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, "\n".join(
                "  %s: %s" % kv for kv in sorted(self.state().items()))))
        return time.monotonic() - t0

    def in_sync(self):
        """Every live replica whose master lives: link up, no sync in progress, and its
        master counts it online."""
        for r in self.replicas():
            master_id = r.myself().master_id
            master = next((n for n in self.nodes if n.id == master_id), None)
            if master is None or not master.alive:
                continue
            info = r.info("replication")
            if info.get("master_link_status") != "up" or \
                    info.get("master_sync_in_progress") != "0" or \
                    info.get("master_port") != str(master.port):
                return False
            minfo = master.info("replication")
            if not any(v.startswith("ip=") and "port=%d," % r.port in v and
                       "state=online" in v for k, v in minfo.items() if k.startswith("slave")):
                return False
        return True

    def wait_sync(self, timeout=30.0):
        t0 = time.monotonic()
        wait_for(self.in_sync, timeout=timeout, interval=0.1,
                 what="every replica in sync with its master")
        return time.monotonic() - t0

    # ------------------------------------------------------------------ faults

    def failover(self, replica, mode=None, timeout=30.0):
        """CLUSTER FAILOVER [FORCE|TAKEOVER] on replica; waits until it says it is master,
        then wait_ok() and wait_sync() (its old master becomes its replica). Returns the
        seconds from the command to a cluster ok everywhere (timings["failover"])."""
        assert replica.alive and not replica.myself().is_master, "%r is not a replica" % replica
        t0 = time.monotonic()
        args = ("CLUSTER", "FAILOVER") + ((mode,) if mode else ())
        assert replica.command(*args) == "OK"
        wait_for(lambda: replica.myself().is_master, timeout=timeout, interval=0.05,
                 what="%r to become master" % replica)
        self.wait_ok(timeout=max(5.0, timeout - (time.monotonic() - t0)))
        took = time.monotonic() - t0
        self.timings["failover"] = took
        self.wait_sync(timeout=timeout)
        return took

    def kill(self, node):
        """SIGKILL node (a crash). A killed master's slots fail until its replica takes
        over (about 2 node timeouts): wait_ok() waits for that."""
        node.kill()

    def restart(self, node, timeout=30.0):
        """Starts a killed node again (same ports, same nodes.conf: it rejoins, a former
        master as a replica of whoever took its slots); waits for ok and sync."""
        node.start()
        self.wait_ok(timeout=timeout)
        self.wait_sync(timeout=timeout)
        return node

    def reshard(self, src, dst, n_slots, timeout=180.0):
        """Moves n_slots slots (and their keys) from master src to master dst with
        redis-cli --cluster reshard; then wait_ok(). Returns the seconds it took
        (timings["reshard"]). The slots moved are src's lowest."""
        t0 = time.monotonic()
        self._cli([REDIS_CLI, "--cluster", "reshard", src.addr, "--cluster-from", src.id,
                   "--cluster-to", dst.id, "--cluster-slots", str(n_slots), "--cluster-yes"],
                  timeout, "reshard %d slots %r -> %r" % (n_slots, src, dst))
        self.wait_ok(timeout=max(10.0, timeout - (time.monotonic() - t0)))
        took = time.monotonic() - t0
        self.timings["reshard"] = took
        return took

    def begin_migration(self, slot, dst):
        """Half a slot move: dst IMPORTING, its owner MIGRATING (keys still on the owner
        are served there; the others are answered ASK dst). Returns the owner (src)."""
        src = self.owner_of_slot(slot)
        assert src is not dst, "slot %d is already on %r" % (slot, dst)
        assert dst.command("CLUSTER", "SETSLOT", slot, "IMPORTING", src.id) == "OK"
        assert src.command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst.id) == "OK"
        return src

    def migrate_keys(self, slot, src, dst, keys=None):
        """MIGRATE keys (default: every key src holds in slot) from src to dst; returns
        how many were moved."""
        moved = 0
        while True:
            batch = list(keys) if keys is not None else \
                src.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not batch:
                return moved
            reply = src.command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "REPLACE",
                                "KEYS", *batch, timeout=10.0)
            assert reply in ("OK", "NOKEY"), reply
            moved += len(batch) if reply == "OK" else 0
            if keys is not None:
                return moved

    def end_migration(self, slot, dst):
        """Assigns slot to dst on every live master (dst first, as Redis advises), so
        that it bumps its epoch and everyone agrees; then wait_ok()."""
        order = [dst] + [m for m in self.masters() if m is not dst]
        for m in order:
            assert m.command("CLUSTER", "SETSLOT", slot, "NODE", dst.id) == "OK"
        self.wait_ok()

    def migrate_slot(self, slot, dst):
        """Moves one slot and its keys to master dst by hand (IMPORTING, MIGRATING,
        MIGRATE, SETSLOT NODE), as redis-cli's reshard does; returns the old owner."""
        src = self.begin_migration(slot, dst)
        self.migrate_keys(slot, src, dst)
        self.end_migration(slot, dst)
        return src
