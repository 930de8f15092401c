"""Bench: how many live viewers one machine holds, and how fast a new count reaches them.

A live viewer is one open ``GET /api/v1/statements/<id>/events`` (Server-Sent Events), or
with ``--endpoint multi`` one ``GET /api/v1/events?statements=<id>``, the stream a
browser's widgets and tabs share (one per visitor). For each level of V viewers
(default 12,000 then 15,000, each level a fresh set of connections to the same server):

1. Servers. A throwaway redis-server (Redis 7 when installed: see ``common.py``; AOF
   fsync every second as in docker-compose) and gunicorn exactly as production runs it:
   ``gunicorn -c python:widget.gunicorn_conf 'widget:create_app()'`` with ``BIND``,
   ``WEB_CONCURRENCY`` (default 2, one per core here) and the ``WIDGET_*`` settings in
   the environment. RLIMIT_NOFILE is raised to the hard limit first.
2. Viewers. ``--client-procs`` processes, each an epoll loop over non-blocking raw
   sockets, send ``GET ... HTTP/1.1`` with ``Accept: text/event-stream`` and read the
   byte stream as it comes (chunked framing and all: a count is found by searching the
   raw bytes for ``"count": N``). Connects are ramped, at most ``--inflight`` per process
   waiting for their first event, so the listen backlog (2048) is never overrun; refused
   or reset attempts are retried. Every viewer must get the initial count event.
3. Updates. ``--updates`` real endorsements, ``--interval`` seconds apart (more than the
   server's 0.25 s coalescing window), each through the store's own Lua script
   (``Store.endorse``: dedup, log, INCR, PUBLISH), or with ``--url`` and no
   ``--redis-url`` as a POST to the public API. ``t0 = time.monotonic()`` is taken right
   before each write. A viewer's receipt time of an update is the first moment its
   socket was reported readable (taken right after ``epoll_wait`` returns) with a count
   at least the new one; CLOCK_MONOTONIC is one clock for every process on Linux, so
   latency = receipt - t0 across processes. p50/p90/p99/max are over every
   viewer x update sample. After a grace period every viewer's last count must equal the
   final count, or it is reported as missed.
4. Server side. Resident memory of the gunicorn master and workers (RSS summed, and PSS,
   which counts pages shared after fork once), open sockets per worker, CPU time per
   update of each worker, of Redis and of each client process during the updates, and
   disconnects (a viewer whose stream ended before the bench closed it).

Targets: >= 15,000 viewers held with p99 <= 300 ms, and p99 <= 200 ms at 12,000.

    python bench/viewers.py [--viewers 12000,15000] [--updates 20] [--client-procs 2]
                            [--workers 2] [--endpoint statement|multi]
                            [--url URL [--redis-url URL]]

The clients share the machine with the server, so the figures include their CPU; the
report shows how much. Linux only (epoll, /proc). Exit status 0 when every target of the
levels run is met, 2 when one is not, 1 on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import json
import math
import multiprocessing
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_messages
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from common import free_port, redis_server, stop_process, wait_until

REPO = Path(__file__).resolve().parent.parent
STATEMENT = "dongelek-ystel"
ALLY = "https://ally.example"
SECRET = "bench-secret-not-for-production-0123456789abcdef"  # noqa: S105 - throwaway
ENDPOINTS = {
    "statement": f"/api/v1/statements/{STATEMENT}/events",  # one statement per stream
    "multi": f"/api/v1/events?statements={STATEMENT}",  # the browser's one shared stream
}
EVENTS_PATH = ENDPOINTS["statement"]  # --endpoint picks it before the clients fork
COUNT_PATH = f"/api/v1/statements/{STATEMENT}/count"
ENDORSE_PATH = f"/api/v1/statements/{STATEMENT}/endorsements"
# (viewers, p99 target in ms): a level gets the target of the largest entry it reaches.
TARGETS = ((15000, 300.0), (12000, 200.0))

# A count in the raw stream; the digits must be followed by something, so a number cut
# in two by a read is only taken once it is whole.
COUNT_RE = re.compile(rb'"count":\s*(\d+)\D')
STATUS_RE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")
CHANNEL = f"us:{{{STATEMENT}}}:events"
# A pub/sub push as Redis writes it: *3 $7 message $<len> <channel> $<len> <count>
REDIS_MESSAGE_RE = re.compile(rb"message\r\n\$\d+\r\n[^\r]+\r\n\$\d+\r\n(\d+)\r\n")
TAIL = 40  # bytes of each stream kept between reads, for a pattern split across reads
MAX_ATTEMPTS = 8
RETRY_DELAY = 0.25
LINGER_0 = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT eating ephemeral ports

IDLE, CONNECTING, AWAITING, LIVE, FAILED, CLOSED = range(6)


# -- small helpers ------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


# -- /proc ----------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds used since boot on all cores: (processes, interrupts).

    Interrupt time is mostly the kernel's loopback TCP work (softirq), which Linux charges
    to no process.
    """
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + steal) / CLOCK_TICKS, (irq + softirq) / CLOCK_TICKS


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return rss, pss


def stream_sockets(pids: list[int], port: int | list[int]) -> list[int]:
    """Per process, its sockets of connections accepted on ``port`` (or any of them).

    A connection the client has reset leaves /proc/net/tcp at once but stays an open file
    in the worker until the app next writes to it; those are counted too (an open socket
    file found in no /proc/net table). Redis and other outgoing connections are not.
    """
    ports = {port} if isinstance(port, int) else set(port)
    known: set[str] = set()
    streams: set[str] = set()
    columns = {"tcp": 9, "tcp6": 9, "udp": 9, "udp6": 9, "raw": 9, "raw6": 9, "unix": 6}
    for table, column in [*columns.items(), ("netlink", -1)]:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) <= max(column, 3):
                    continue
                known.add(fields[column])
                accepted = table.startswith("tcp") and fields[3] != "0A"  # 0A: LISTEN
                if accepted and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    streams.add(fields[column])
    found = []
    for pid in pids:
        n = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inode = link[8:-1]
                        n += inode in streams or inode not in known
        found.append(n)
    return found


# -- servers --------------------------------------------------------------------------------


@dataclass
class Servers:
    """What the bench started (or was pointed at)."""

    host: str
    port: int
    redis_url: str | None
    gunicorn_pid: int | None = None
    redis_pid: int | None = None
    log: Path | None = None
    # --instances N: the other gunicorn masters and their ports; --cluster: every node's pid
    more: list[tuple[int, int]] = field(default_factory=list)  # (port, master pid)
    redis_pids: list[int] = field(default_factory=list)
    cluster: bool = False

    @property
    def ports(self) -> list[int]:
        return [self.port, *(port for port, _ in self.more)]

    @property
    def masters(self) -> list[int]:
        return ([self.gunicorn_pid] if self.gunicorn_pid else []) + [m for _, m in self.more]

    def workers(self) -> list[int]:
        return [pid for master in self.masters for pid in children_of(master)]


@contextmanager
def gunicorn(
    folder: Path, redis_url: str, workers: int, cluster: bool = False
) -> Iterator[tuple[int, int, Path]]:
    """The app as production runs it; yields (port, master pid, log file)."""
    folder.mkdir(exist_ok=True)
    port = free_port()
    binary = Path(sys.executable).with_name("gunicorn")
    launcher = [str(binary)] if binary.exists() else [sys.executable, "-m", "gunicorn"]
    command = [*launcher, "-c", "python:widget.gunicorn_conf", "widget:create_app()"]
    metrics = folder / "metrics"
    metrics.mkdir()
    env = {
        **os.environ,
        "BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": str(workers),
        "WIDGET_REDIS_URL": redis_url,
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_ALLOWED_ORIGINS": ALLY,
        "WIDGET_ENDORSE_LIMIT": "1000000/minute",  # only the --url POST path needs it
        # Every viewer comes from 127.0.0.1: lift the per-client stream cap.
        "WIDGET_STREAMS_PER_CLIENT": "1000000",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),  # else gunicorn_conf makes one in /tmp
        "WIDGET_REDIS_CLUSTER": "true" if cluster else "false",
    }
    log = folder / "gunicorn.log"
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/healthz")
                return connection.getresponse().status == 200
            finally:
                connection.close()

        wait_until(healthy, 60, "gunicorn")
        deadline = time.monotonic() + 30
        while len(children_of(process.pid)) < workers and time.monotonic() < deadline:
            time.sleep(0.1)
        yield port, process.pid, log
    finally:
        stop_process(process, group=True)


def probe_events(host: str, port: int) -> tuple[int, bytes]:
    """One plain stream: its status and first bytes (to fail early and clearly)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request_bytes(host, port))
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not COUNT_RE.search(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    match = STATUS_RE.match(data)
    return (int(match.group(1)) if match else 0), data


def request_bytes(host: str, port: int) -> bytes:
    return (
        f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    ).encode()


# -- publishing -----------------------------------------------------------------------------


class Publisher(Protocol):
    how: str

    def count(self) -> int: ...

    def endorse(self, k: int) -> int:
        """Write one new endorsement; return the count it made."""
        ...


class StorePublisher:
    """Through the package's own Lua script, exactly what the endorse endpoint runs."""

    def __init__(self, redis_url: str, cluster: bool = False) -> None:
        from widget.db import make_client, pubsub_mode
        from widget.store import Store

        client = make_client(redis_url, cluster)
        # As the servers do: WIDGET_REDIS_PUBSUB (auto: SPUBLISH on a cluster).
        mode = pubsub_mode(os.environ.get("WIDGET_REDIS_PUBSUB", "auto"), cluster)
        self.store = Store(client, sharded=mode == "sharded")
        client.script_load(self.store._endorse.script)  # the first EVALSHA must not load it
        self.run = time.time_ns()
        self.serial = 0
        self.how = f"Store.endorse (Lua: dedup, XADD, INCR, {mode} publish)"

    def count(self) -> int:
        return self.store.count(STATEMENT)

    def endorse(self, k: int) -> int:
        from widget.privacy import email_hmac
        from widget.store import Endorsement

        self.serial += 1  # unique over levels: a repeated email would be a duplicate
        email = f"viewers-{self.run}-{self.serial}@bench.example"
        endorsement = Endorsement(
            email_hmac=email_hmac(SECRET, STATEMENT, email), name=f"Viewer Bench {k}", source=ALLY
        )
        result = self.store.endorse(STATEMENT, endorsement)
        if result.status != "counted":
            raise RuntimeError(f"endorsement {k} was not counted: {result.status}")
        return result.count


class HttpPublisher:
    """A POST to the public API (the server's WIDGET_ENDORSE_LIMIT must allow it)."""

    def __init__(self, host: str, port: int, origin: str) -> None:
        self.host, self.port, self.origin = host, port, origin
        self.connection = http.client.HTTPConnection(host, port, timeout=10)
        self.run = time.time_ns()
        self.serial = 0
        self.how = f"POST {ENDORSE_PATH} (Origin: {origin})"

    def _request(self, method: str, path: str, body: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json", "Origin": self.origin} if body else {}
        for attempt in (1, 2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                return response.status, json.loads(response.read() or b"null")
            except (OSError, http.client.HTTPException):
                self.connection.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def count(self) -> int:
        status, body = self._request("GET", COUNT_PATH)
        if status != 200:
            raise RuntimeError(f"GET {COUNT_PATH} answered {status}")
        return int(body["count"])

    def endorse(self, k: int) -> int:
        self.serial += 1
        body = json.dumps(
            {
                "name": f"Viewer Bench {k}",
                "email": f"viewers-{self.run}-{self.serial}@bench.example",
                "consent": True,
            }
        )
        status, answer = self._request("POST", ENDORSE_PATH, body)
        if status != 201:
            raise RuntimeError(f"POST {ENDORSE_PATH} answered {status}: {answer}")
        return int(answer["count"])


# -- the viewers (one client process) ---------------------------------------------------------


@dataclass(frozen=True)
class ClientJob:
    viewers: int
    host: str
    port: int
    inflight: int
    connect_timeout: float
    ramp_deadline: float  # monotonic
    redis: tuple[str, int] | None = None  # subscribe there too: the floor without the app


@dataclass
class ClientResult:
    viewers: int
    established: int = 0  # got their initial count event
    failed: int = 0  # never did
    live: int = 0  # still open when the bench closed them
    disconnects: int = 0  # streams that ended on the server's side after their first event
    retries: int = 0
    ramp_seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    initial_counts: Counter[int] = field(default_factory=Counter)
    final_ok: int = 0  # established viewers whose last count is the final count
    final_wrong: Counter[int] = field(default_factory=Counter)  # last count -> viewers
    heartbeats: int = 0
    latencies: dict[int, array[float]] = field(default_factory=dict)  # update -> seconds
    missing: dict[int, int] = field(default_factory=dict)  # update -> viewers never saw it
    skipped: int = 0  # samples where a later count arrived without this exact one
    floor: list[float] = field(default_factory=list)  # a plain Redis subscriber's latencies
    bad_answers: list[bytes] = field(default_factory=list)  # the first non-200 responses


class Viewers:
    """Many SSE streams in one epoll loop; talks to the coordinator over ``control``."""

    def __init__(self, job: ClientJob, control: Connection) -> None:
        n = job.viewers
        self.job = job
        self.control = control
        self.addr = (job.host, job.port)
        self.request = request_bytes(job.host, job.port)
        self.socks: list[socket.socket | None] = [None] * n
        self.state = [IDLE] * n
        self.tail = [b""] * n
        self.last = [-1] * n
        self.seen: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        self.attempts = [0] * n
        self.since = [0.0] * n
        self.pending: deque[int] = deque(range(n))
        self.retry_at: deque[tuple[float, int]] = deque()
        self.inflight: set[int] = set()
        self.fd_index: dict[int, int] = {}
        self.epoll = select.epoll()
        self.result = ClientResult(viewers=n)
        self.started = time.monotonic()
        self.redis: socket.socket | None = None
        self.redis_seen: list[tuple[int, float]] = []
        self.redis_tail = b""

    # connections
    def open(self, i: int) -> None:
        self.attempts[i] += 1
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.fail_attempt(i, errno.errorcode.get(exc.errno or 0, str(exc)))
            return
        sock.setblocking(False)
        err = sock.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.fail_attempt(i, errno.errorcode.get(err, str(err)))
            return
        self.socks[i] = sock
        self.fd_index[sock.fileno()] = i
        self.epoll.register(sock.fileno(), select.EPOLLOUT)
        self.state[i] = CONNECTING
        self.since[i] = time.monotonic()
        self.inflight.add(i)

    def drop(self, i: int, rst: bool = False) -> None:
        sock = self.socks[i]
        if sock is not None:
            self.fd_index.pop(sock.fileno(), None)
            with contextlib.suppress(OSError):
                self.epoll.unregister(sock.fileno())
            if rst:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
            sock.close()
            self.socks[i] = None
        self.inflight.discard(i)

    def fail_attempt(self, i: int, reason: str) -> None:
        self.drop(i, rst=True)
        self.result.errors[reason] += 1
        self.tail[i] = b""
        if self.attempts[i] < MAX_ATTEMPTS:
            self.result.retries += 1
            self.state[i] = IDLE
            self.retry_at.append((time.monotonic() + RETRY_DELAY, i))
        else:
            self.state[i] = FAILED

    def ramp(self, now: float) -> None:
        while self.retry_at and self.retry_at[0][0] <= now:
            self.pending.appendleft(self.retry_at.popleft()[1])
        while self.pending and len(self.inflight) < self.job.inflight:
            self.open(self.pending.popleft())
        late = [i for i in self.inflight if now - self.since[i] > self.job.connect_timeout]
        for i in late:
            self.fail_attempt(i, "timeout")
        if now > self.job.ramp_deadline:
            for i in [*self.inflight, *self.pending, *(i for _, i in self.retry_at)]:
                self.drop(i, rst=True)
                self.state[i] = FAILED
                self.result.errors["ramp deadline"] += 1
            self.pending.clear()
            self.retry_at.clear()

    def ramp_done(self) -> bool:
        return not (self.pending or self.retry_at or self.inflight)

    # reading
    def on_event(self, i: int, now: float) -> None:
        sock = self.socks[i]
        if sock is None:
            return
        state = self.state[i]
        if state == CONNECTING:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail_attempt(i, errno.errorcode.get(err, str(err)))
                return
            try:
                sock.send(self.request)
            except OSError as exc:
                self.fail_attempt(i, errno.errorcode.get(exc.errno or 0, str(exc)))
                return
            self.epoll.modify(sock.fileno(), select.EPOLLIN)
            self.state[i] = AWAITING
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            reason = errno.errorcode.get(exc.errno or 0, str(exc))
        else:
            reason = "EOF"
        if not data:
            if state == AWAITING:
                self.fail_attempt(i, f"{reason} before the first event")
            else:
                self.drop(i)
                self.state[i] = CLOSED
                self.result.disconnects += 1
                self.result.errors[f"{reason} after the first event"] += 1
            return
        buf = self.tail[i] + data
        if state == AWAITING and not self.tail[i]:
            match = STATUS_RE.match(buf)
            status = int(match.group(1)) if match else 0
            self.result.statuses[status] += 1
            if status != 200:
                if len(self.result.bad_answers) < 2:  # with its body, for the report
                    with contextlib.suppress(OSError):
                        sock.settimeout(0.3)
                        buf += sock.recv(4096)
                    self.result.bad_answers.append(buf[:1200])
                self.drop(i, rst=True)
                self.state[i] = FAILED
                self.result.errors[f"HTTP {status}"] += 1
                return
        last = self.last[i]
        for match in COUNT_RE.finditer(buf):
            count = int(match.group(1))
            if count > last:
                last = count
                self.seen[i].append((count, now))
        self.last[i] = last
        self.tail[i] = buf[-TAIL:]
        if b"\n:" in data:
            self.result.heartbeats += data.count(b"\n:")
        if state == AWAITING and last >= 0:
            self.state[i] = LIVE
            self.inflight.discard(i)

    # the loop
    def run(self) -> None:
        control_fd = self.control.fileno()
        self.epoll.register(control_fd, select.EPOLLIN)
        redis_fd = -1
        if self.job.redis:
            self.redis = socket.create_connection(self.job.redis, timeout=5)
            self.redis.sendall(b"SUBSCRIBE %s\r\n" % CHANNEL.encode())
            self.redis.setblocking(False)
            redis_fd = self.redis.fileno()
            self.epoll.register(redis_fd, select.EPOLLIN)
        ready = False
        next_progress = time.monotonic() + 1.0
        awaiting: tuple[int, float] | None = None
        next_check = 0.0
        while True:
            if not ready:
                self.ramp(time.monotonic())
                if self.ramp_done():
                    ready = True
                    self.result.ramp_seconds = time.monotonic() - self.started
                    self.control.send(("ready", self.counts()))
            timeout = 0.02 if not ready or awaiting else 1.0
            events = self.epoll.poll(timeout, 1024)
            now = time.monotonic()
            for fd, _mask in events:
                if fd == control_fd:
                    message = self.control.recv()
                    if message[0] == "await":
                        awaiting = (message[1], now + message[2])
                    elif message[0] == "stop":
                        self.control.send(("result", self.finish(message[1])))
                        return
                    continue
                if fd == redis_fd:
                    self.on_redis(now)
                    continue
                i = self.fd_index.get(fd)
                if i is not None:
                    self.on_event(i, now)
            if not ready and now >= next_progress:
                next_progress = now + 1.0
                self.control.send(("progress", self.counts()))
            if awaiting and now >= next_check:
                next_check = now + 0.05
                target, deadline = awaiting
                behind = sum(
                    1 for i, s in enumerate(self.state) if s == LIVE and self.last[i] < target
                )
                if behind == 0 or now >= deadline:
                    self.control.send(("caught up", behind, now))
                    awaiting = None

    def on_redis(self, now: float) -> None:
        assert self.redis is not None
        with contextlib.suppress(BlockingIOError):
            buf = self.redis_tail + self.redis.recv(65536)
            for match in REDIS_MESSAGE_RE.finditer(buf):
                count = int(match.group(1))
                if not self.redis_seen or count > self.redis_seen[-1][0]:
                    self.redis_seen.append((count, now))
            self.redis_tail = buf[-TAIL:]

    def counts(self) -> dict[str, int]:
        tally = Counter(self.state)
        return {
            "live": tally[LIVE],
            "inflight": len(self.inflight),
            "failed": tally[FAILED],
            "closed": tally[CLOSED],
            "retries": self.result.retries,
        }

    def finish(self, t0s: dict[int, float]) -> ClientResult:
        result = self.result
        updates = sorted(t0s)
        final = updates[-1] if updates else None
        result.latencies = {c: array("d") for c in updates}
        result.missing = dict.fromkeys(updates, 0)
        for i, state in enumerate(self.state):
            if state == LIVE:
                result.live += 1
            if state not in (LIVE, CLOSED):
                result.failed += 1
                continue
            result.established += 1
            seen = self.seen[i]
            result.initial_counts[seen[0][0]] += 1
            if final is None or self.last[i] == final:
                result.final_ok += 1
            else:
                result.final_wrong[self.last[i]] += 1
            j = 0
            for c in updates:
                while j < len(seen) and seen[j][0] < c:
                    j += 1
                if j < len(seen):
                    result.latencies[c].append(seen[j][1] - t0s[c])
                    if seen[j][0] != c:
                        result.skipped += 1
                else:
                    result.missing[c] += 1
        received = dict(self.redis_seen)
        result.floor = [received[c] - t0s[c] for c in updates if c in received]
        for i in range(len(self.socks)):
            self.drop(i, rst=True)
        return result


def client_main(job: ClientJob, control: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the coordinator stops us
    with contextlib.suppress(BrokenPipeError, EOFError, ConnectionResetError):
        Viewers(job, control).run()


# -- one level --------------------------------------------------------------------------------


@dataclass
class Level:
    viewers: int
    result: ClientResult
    initial_expected: int
    final_count: int | None
    samples: list[float]
    ramp_seconds: float
    rss_kb: int
    pss_kb: int
    rss_idle_kb: int
    sockets_per_worker: list[int]
    cpu_publish: dict[str, float]  # process -> CPU seconds during the updates
    cpu_ramp: dict[str, float]  # process -> CPU seconds during the ramp
    publish_seconds: float
    updates: int
    behind_after_grace: int
    per_update: list[tuple[float, float, float]]  # (first, median, last) receipt latency
    released: str
    own_server: bool
    redis_clients: tuple[int | None, int | None]  # before and after the ramp

    @property
    def target_ms(self) -> float | None:
        for viewers, target in TARGETS:
            if self.viewers >= viewers:
                return target
        return None

    @property
    def held(self) -> bool:
        r = self.result
        return (
            r.established == self.viewers
            and r.live == self.viewers
            and r.disconnects == 0
            and sum(r.final_wrong.values()) == 0
            and sum(r.missing.values()) == 0
        )

    @property
    def p99(self) -> float | None:
        return percentile(self.samples, 0.99)

    @property
    def met(self) -> bool | None:
        target = self.target_ms
        if target is None:
            return None
        p99 = self.p99
        return self.held and p99 is not None and p99 * 1000 <= target


def process_cpu(
    servers: Servers, clients: list[multiprocessing.process.BaseProcess]
) -> dict[str, float]:
    machine, interrupts = machine_cpu_seconds()
    cpu = {"machine": machine, "softirq": interrupts, "bench": cpu_seconds(os.getpid())}
    for n, pid in enumerate(servers.workers(), 1):
        cpu[f"worker {n}"] = cpu_seconds(pid)
    if servers.masters:
        cpu["master"] = sum(cpu_seconds(pid) for pid in servers.masters)
    if servers.redis_pid or servers.redis_pids:
        pids = servers.redis_pids or [servers.redis_pid or 0]
        cpu["redis"] = sum(cpu_seconds(pid) for pid in pids)
    for n, process in enumerate(clients, 1):
        if process.pid:
            cpu[f"client {n}"] = cpu_seconds(process.pid)
    return cpu


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def server_memory(servers: Servers) -> tuple[int, int]:
    pids = [*servers.masters, *servers.workers()]
    rss = pss = 0
    for pid in pids:
        r, p = memory_kb(pid)
        rss += r
        pss += p
    return rss, pss


def redis_client_count(url: str | None) -> int | None:
    if not url:
        return None
    from redis import Redis

    with Redis.from_url(url) as client:
        return int(client.info("clients")["connected_clients"])


def redis_address(url: str | None) -> tuple[str, int] | None:
    if not url or not url.startswith("redis://"):
        return None
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def run_level(
    viewers: int, args: argparse.Namespace, servers: Servers, publisher: Publisher
) -> Level:
    context = multiprocessing.get_context("fork")
    procs = max(1, min(args.client_procs, viewers))
    shares = [viewers // procs + (1 if n < viewers % procs else 0) for n in range(procs)]
    rss_idle, _ = server_memory(servers)
    redis_clients_before = redis_client_count(servers.redis_url)
    initial_expected = publisher.count()
    ramp_started = time.monotonic()
    deadline = ramp_started + args.ramp_timeout
    clients: list[multiprocessing.process.BaseProcess] = []
    controls: list[Connection] = []
    completed = False
    try:
        cpu_before_ramp = process_cpu(servers, [])
        # The floor (a plain subscriber on Redis) only on a single Redis.
        redis_addr = None if servers.cluster else redis_address(servers.redis_url)
        for n, share in enumerate(shares):
            ours, theirs = context.Pipe()
            job = ClientJob(
                share,
                servers.host,
                servers.ports[n % len(servers.ports)],  # split across the instances
                args.inflight,
                30.0,
                deadline,
                redis_addr if n == 0 else None,
            )
            process = context.Process(target=client_main, args=(job, theirs), daemon=True)
            process.start()
            theirs.close()
            clients.append(process)
            controls.append(ours)

        progress: dict[int, dict[str, int]] = {}
        ready: set[int] = set()
        shown = time.monotonic()
        while len(ready) < len(controls):
            for conn in wait_for_messages(controls, timeout=5.0):
                assert isinstance(conn, Connection)
                kind, counts = conn.recv()
                index = controls.index(conn)
                progress[index] = counts
                if kind == "ready":
                    ready.add(index)
            if any(not p.is_alive() for p in clients):
                raise RuntimeError("a client process died during the ramp")
            if time.monotonic() - shown >= 3.0 or len(ready) == len(controls):
                shown = time.monotonic()
                total = Counter[str]()
                for counts in progress.values():
                    total.update(counts)
                print(
                    f"  ramp {shown - ramp_started:5.1f} s: {total['live']:>6} live, "
                    f"{total['inflight']:>4} connecting, {total['failed']} failed, "
                    f"{total['retries']} retries",
                    flush=True,
                )
        ramp_seconds = time.monotonic() - ramp_started
        cpu_ramp = diff(process_cpu(servers, clients), cpu_before_ramp)

        time.sleep(args.settle)
        rss, pss = server_memory(servers)
        sockets = stream_sockets(servers.workers(), servers.ports)
        redis_clients = (redis_clients_before, redis_client_count(servers.redis_url))

        t0s: dict[int, float] = {}
        publisher.count()  # a warm connection for the first write
        cpu_before = process_cpu(servers, clients)
        started = time.monotonic()
        for k in range(args.updates):
            t0 = time.monotonic()
            count = publisher.endorse(k)
            t0s[count] = t0
            if k < args.updates - 1:
                time.sleep(max(0.0, t0 + args.interval - time.monotonic()))
        final = max(t0s) if t0s else None
        behind = 0
        if final is not None:
            for conn in controls:
                conn.send(("await", final, args.grace))
            for conn in controls:
                kind, lagging, _when = conn.recv()
                assert kind == "caught up"
                behind += lagging
        publish_seconds = time.monotonic() - started
        cpu_publish = diff(process_cpu(servers, clients), cpu_before)
        time.sleep(args.hold)  # idle: heartbeats only; nothing may drop

        merged = ClientResult(viewers=viewers)
        for conn in controls:
            conn.send(("stop", t0s))
        for conn in controls:
            kind, part = conn.recv()
            assert kind == "result"
            merge(merged, part)
        merged.ramp_seconds = ramp_seconds
        completed = True
    finally:
        for client in clients:
            client.join(timeout=10 if completed else 0)
            if client.is_alive():
                client.terminate()
                client.join()
        for conn in controls:
            conn.close()

    released = "-"
    if servers.gunicorn_pid:
        waited = time.monotonic()
        while True:
            still = sum(stream_sockets(servers.workers(), servers.ports))
            gone = time.monotonic() - waited
            if still == 0:
                released = f"the workers closed every stream {gone:.1f} s after the clients left"
                break
            if gone > args.release_timeout:
                released = (
                    f"{still} streams still open in the workers {gone:.0f} s after the "
                    "clients left (closed by the client with RST)"
                )
                break
            time.sleep(0.5)

    samples = sorted(x for part in merged.latencies.values() for x in part)
    per_update = []
    for c in sorted(merged.latencies):
        values = sorted(merged.latencies[c])
        if values:
            per_update.append((values[0], values[len(values) // 2], values[-1]))
    return Level(
        viewers=viewers,
        result=merged,
        initial_expected=initial_expected,
        final_count=final,
        samples=samples,
        ramp_seconds=ramp_seconds,
        rss_kb=rss,
        pss_kb=pss,
        rss_idle_kb=rss_idle,
        sockets_per_worker=sockets,
        cpu_publish=cpu_publish,
        cpu_ramp=cpu_ramp,
        publish_seconds=publish_seconds,
        updates=len(t0s),
        behind_after_grace=behind,
        per_update=per_update,
        released=released,
        own_server=servers.gunicorn_pid is not None,
        redis_clients=redis_clients,
    )


def merge(into: ClientResult, part: ClientResult) -> None:
    into.established += part.established
    into.failed += part.failed
    into.live += part.live
    into.disconnects += part.disconnects
    into.retries += part.retries
    into.statuses.update(part.statuses)
    into.errors.update(part.errors)
    into.initial_counts.update(part.initial_counts)
    into.final_ok += part.final_ok
    into.final_wrong.update(part.final_wrong)
    into.heartbeats += part.heartbeats
    into.skipped += part.skipped
    into.floor.extend(part.floor)
    into.bad_answers.extend(part.bad_answers[: max(0, 2 - len(into.bad_answers))])
    for c, values in part.latencies.items():
        into.latencies.setdefault(c, array("d")).extend(values)
    for c, n in part.missing.items():
        into.missing[c] = into.missing.get(c, 0) + n


# -- report -----------------------------------------------------------------------------------


def describe(level: Level, args: argparse.Namespace) -> None:
    r = level.result
    print(f"\n== {level.viewers} viewers ==")
    print(
        f"ramp: {level.ramp_seconds:.1f} s ({level.viewers / level.ramp_seconds:.0f} conn/s), "
        f"{r.retries} retries; HTTP statuses {dict(r.statuses)}"
    )
    if r.errors:
        print(f"socket outcomes other than success: {dict(r.errors)}")
    for answer in r.bad_answers:
        print(f"  a non-200 answer: {answer!r}")
    initial_right = r.initial_counts[level.initial_expected]
    print(
        f"initial count event: {r.established} got it ({initial_right} with the stored count "
        f"{level.initial_expected}), {r.failed} did not"
    )
    kib = 1024
    workers = len(level.sockets_per_worker)
    if level.own_server:
        print(
            f"server memory with the viewers connected: RSS {level.rss_kb / kib:.0f} MB (idle "
            f"before the level: {level.rss_idle_kb / kib:.0f} MB), PSS {level.pss_kb / kib:.0f} MB "
            f"(master + {workers} workers); streams per worker {level.sockets_per_worker}"
        )
    else:
        print("server memory and CPU: not measured (a server the bench did not start)")
    if level.own_server and level.rss_kb > level.rss_idle_kb:
        per_viewer = (level.rss_kb - level.rss_idle_kb) * 1024 / level.viewers
        print(f"  ~{per_viewer / 1024:.1f} kB RSS per viewer")
    before, after = level.redis_clients
    if before is not None:
        print(f"Redis clients connected: {before} before the ramp, {after} after it")
    cores = os.cpu_count() or 1
    ramp = {k: v for k, v in level.cpu_ramp.items() if k not in ("machine", "softirq")}
    others = level.cpu_ramp["machine"] - sum(ramp.values())
    ramp["kernel softirq (loopback TCP)"] = level.cpu_ramp["softirq"]
    print(
        "CPU during the ramp: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in ramp.items())
        + f"; other processes {max(0.0, others):.1f} s"
    )
    if level.updates:
        used = {k: v for k, v in level.cpu_publish.items() if k not in ("machine", "softirq")}
        others = max(0.0, level.cpu_publish["machine"] - sum(used.values()))
        used["kernel softirq"] = level.cpu_publish["softirq"]
        other = "other processes" if level.own_server else "other processes (server included)"
        used[other] = others
        per = ", ".join(
            f"{k} {v / level.updates * 1000:.0f} ms ({v / level.publish_seconds * 100:.0f}%)"
            for k, v in used.items()
        )
        print(
            f"CPU per update ({level.updates} updates over {level.publish_seconds:.1f} s; "
            f"% of one core, {cores} cores): {per}"
        )
        if level.own_server and others / level.publish_seconds > 0.1 * cores:
            print(
                "WARNING: other processes used "
                f"{others / level.publish_seconds / cores * 100:.0f}% of the machine during "
                "the updates; the latencies are inflated by them"
            )
        firsts = sorted(u[0] for u in level.per_update)
        medians = sorted(u[1] for u in level.per_update)
        lasts = sorted(u[2] for u in level.per_update)
        spreads = sorted(u[2] - u[0] for u in level.per_update)
        print(
            f"per update (median over updates): first viewer {ms(percentile(firsts, 0.5))} ms, "
            f"median viewer {ms(percentile(medians, 0.5))} ms, last viewer "
            f"{ms(percentile(lasts, 0.5))} ms; first-to-last spread "
            f"{ms(percentile(spreads, 0.5))} ms (worst {ms(spreads[-1] if spreads else None)})"
        )
        if r.floor:
            floor = sorted(r.floor)
            print(
                f"a plain Redis subscriber in client 1 (the floor without the app): "
                f"median {ms(percentile(floor, 0.5))} ms, max {ms(floor[-1])} ms"
            )
        missing = sum(r.missing.values())
        print(
            f"samples: {len(level.samples)} of {r.established * level.updates} "
            f"(viewer x update); never received: {missing}; "
            f"received only through a later count: {r.skipped}"
        )
        wrong = sum(r.final_wrong.values())
        print(
            f"final count {level.final_count}: {r.final_ok} viewers have it, {wrong} missed "
            f"it after a {args.grace:g} s grace"
            + (f" (their last counts: {dict(r.final_wrong)})" if wrong else "")
        )
    print(
        f"disconnects: {r.disconnects}; still open at the end: {r.live}; heartbeats received: "
        f"{r.heartbeats}"
    )
    print(f"after the level: {level.released}")


def mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def verdict(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT met")


def summary(levels: list[Level]) -> int:
    print(
        f"\n{'viewers':>8}{'held':>7}{'initial':>8}{'disc':>6}{'missed':>7}{'samples':>9}"
        f"{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}{'RSS MB':>8}{'PSS MB':>8}"
        f"  target        verdict"
    )
    for level in levels:
        r = level.result
        s = level.samples
        goal = f"p99<={level.target_ms:.0f} ms" if level.target_ms else "-"
        print(
            f"{level.viewers:>8}{r.live:>7}{r.established:>8}{r.disconnects:>6}"
            f"{sum(r.final_wrong.values()):>7}{len(s):>9}"
            f"{ms(percentile(s, 0.5)):>8}{ms(percentile(s, 0.9)):>8}"
            f"{ms(percentile(s, 0.99)):>8}{ms(s[-1] if s else None):>8}"
            f"{mb(level.rss_kb) if level.own_server else '-':>8}"
            f"{mb(level.pss_kb) if level.own_server else '-':>8}"
            f"  {goal:<14}{verdict(level.met)}"
        )
    print()
    status = 0
    for viewers, target in TARGETS:
        if viewers == TARGETS[0][0]:
            runs = [lv for lv in levels if lv.viewers >= viewers]
            text = f">= {viewers:,} viewers held with p99 <= {target:.0f} ms"
        else:
            runs = [lv for lv in levels if viewers <= lv.viewers < TARGETS[0][0]]
            text = f"{viewers:,} viewers with p99 <= {target:.0f} ms"
        if not runs:
            print(f"{text}: not measured (no such level run)")
            continue
        met = any(lv.met for lv in runs)
        status = status or (0 if met else 2)
        print(f"{text}: {verdict(met)}")
    print(
        "held = streams still open at the end; missed = viewers whose last count was not the "
        "final count after the grace period."
    )
    return status


# -- main -------------------------------------------------------------------------------------


def parse_levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 12000,15000: {text!r}") from exc
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("expected positive numbers of viewers")
    return levels


def main() -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        epilog="See the module docstring (head -40 bench/viewers.py) for the method.",
    )
    parser.add_argument(
        "--viewers",
        type=parse_levels,
        default=[12000, 15000],
        help="comma-separated levels, each a fresh set of connections (default 12000,15000)",
    )
    parser.add_argument(
        "--endpoint",
        choices=sorted(ENDPOINTS),
        default="statement",
        help="statement: GET /api/v1/statements/<id>/events (default); "
        "multi: GET /api/v1/events?statements=<id>, the stream browsers share",
    )
    parser.add_argument("--updates", type=int, default=20, help="count changes per level")
    parser.add_argument(
        "--interval", type=float, default=0.75, help="seconds between updates (default 0.75)"
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="seconds for the last update to arrive"
    )
    parser.add_argument("--client-procs", type=int, default=2, help="viewer processes (default 2)")
    parser.add_argument(
        "--inflight",
        type=int,
        default=256,
        help="connections per client process waiting for their first event (default 256)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="WEB_CONCURRENCY for the gunicorn the bench starts (default 2, one per core)",
    )
    parser.add_argument(
        "--url",
        help="use an already running server (http://host:port) instead of starting one",
    )
    parser.add_argument(
        "--redis-url",
        help="with --url: its Redis, to write endorsements through the store's Lua script; "
        "without it they are POSTed to the API (raise the server's WIDGET_ENDORSE_LIMIT)",
    )
    parser.add_argument(
        "--origin", default=ALLY, help=f"allowlisted Origin for API POSTs (default {ALLY})"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between ramp and updates"
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=20.0,
        help="idle seconds after the updates, past one heartbeat, before closing (default 20)",
    )
    parser.add_argument(
        "--ramp-timeout", type=float, default=300.0, help="seconds allowed to connect a level"
    )
    parser.add_argument(
        "--release-timeout",
        type=float,
        default=40.0,
        help="seconds to wait for the server to close a level's streams (default 40)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="app instances (separate gunicorn masters, --workers each); viewers split",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="on a local Redis Cluster (3 masters, 3 replicas; scripts/redis_cluster.py)",
    )
    args = parser.parse_args()
    global EVENTS_PATH
    EVENTS_PATH = ENDPOINTS[args.endpoint]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    per_client = -(-max(args.viewers) // max(1, args.client_procs))
    if per_client + 64 > limit:
        parser.error(
            f"{per_client} viewers per client process exceed RLIMIT_NOFILE {limit}: "
            "raise --client-procs"
        )
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if max(args.viewers) > high - low:
        print(f"warning: only {high - low + 1} ephemeral ports for {max(args.viewers)} viewers")

    with contextlib.ExitStack() as stack:
        if args.url:
            parts = urlsplit(args.url)
            servers = Servers(parts.hostname or "127.0.0.1", parts.port or 80, args.redis_url)
            where = f"the server at {args.url} (not started by the bench)"
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="viewers-")))
            redis_pids: list[int] = []
            if args.cluster:
                sys.path.insert(0, str(REPO / "scripts"))
                from redis_cluster import running

                cluster = stack.enter_context(running(folder / "cluster", node_timeout_ms=5000))
                redis_url, redis_pid = cluster.url, 0
                redis_pids = list(cluster.pids.values())
            else:
                redis_url, redis_pid = stack.enter_context(redis_server(folder))
            instances = [
                stack.enter_context(
                    gunicorn(folder / f"app{n}", redis_url, args.workers, args.cluster)
                )
                for n in range(max(1, args.instances))
            ]
            port, master, log = instances[0]
            servers = Servers(
                "127.0.0.1",
                port,
                redis_url,
                master,
                redis_pid,
                log,
                more=[(p, m) for p, m, _ in instances[1:]],
                redis_pids=redis_pids,
                cluster=args.cluster,
            )
            where = (
                f"{len(instances)} x gunicorn -c python:widget.gunicorn_conf "
                f"'widget:create_app()' (WEB_CONCURRENCY={args.workers}, "
                f"{len(servers.workers())} workers up in all) on 127.0.0.1:"
                f"{','.join(map(str, servers.ports))}, "
                + (
                    f"a Redis Cluster (3+3 nodes) at {redis_url}"
                    if args.cluster
                    else f"redis-server on {redis_url}"
                )
            )
        publisher: Publisher = (
            StorePublisher(servers.redis_url, servers.cluster)
            if servers.redis_url
            else HttpPublisher(servers.host, servers.port, args.origin)
        )
        status, head = probe_events(servers.host, servers.port)
        if status != 200 or not COUNT_RE.search(head):
            print(
                f"GET {EVENTS_PATH} answered {status or 'nothing usable'}; first bytes:\n"
                f"{head[:400]!r}\n(is widget/live.py's endpoint there yet?)",
                file=sys.stderr,
            )
            return 1
        print(
            f"server: {where}\nviewers: {args.client_procs} client processes, epoll, "
            f"<= {args.inflight} connecting each; RLIMIT_NOFILE {limit}; "
            f"{os.cpu_count()} CPUs shared by clients and server\n"
            f"updates: {args.updates} per level, {args.interval:g} s apart, via {publisher.how}",
            flush=True,
        )
        levels: list[Level] = []
        for viewers in args.viewers:
            print(f"\nlevel: {viewers} viewers", flush=True)
            level = run_level(viewers, args, servers, publisher)
            describe(level, args)
            levels.append(level)
        code = summary(levels)
        if servers.log is not None:
            text = servers.log.read_text(errors="replace")
            tracebacks = text.count("Traceback")
            notes = [line for line in text.splitlines() if "[WARNING]" in line or "[ERROR]" in line]
            print(
                f"gunicorn log: {tracebacks} tracebacks, {len(notes)} warning/error lines"
                + ("; the last ones:" if notes else "")
            )
            for line in notes[-5:]:
                print(f"  {line[:300]}")
            if tracebacks:
                print(text[text.rindex("Traceback") :][:3000])
        return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; servers and clients stopped", file=sys.stderr)
        raise SystemExit(130) from None
