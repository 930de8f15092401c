"""``undersign serve`` on the embedded Redis: one command, data kept across restarts.

Also the read-only commands (``undersign statements``, ``undersign count``, and the same
through ``flask --app widget``) against the running service's Redis.
"""

from __future__ import annotations

import gc
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from checks import STATEMENT, altcha_for, assert_counted, endorsements_url, person, wait_until
from conftest import CLUSTER, SECRET
from servers import RedisServer, free_port

from widget.server import EmbeddedRedis, MailWorkerProcess

pytestmark = pytest.mark.server

BIN = Path(sys.executable).parent
COUNT = f"/api/v1/statements/{STATEMENT}/count"


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WIDGET_")}
    env["WIDGET_DATA_DIR"] = str(data_dir)
    env.update(extra)
    return env


class Serve:
    """``undersign serve`` in a subprocess, its output collected as it comes."""

    def __init__(self, env: dict[str, str], workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        command = [str(BIN / "undersign"), "serve", "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--workers", str(workers)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"serve exited early:\n{self.output}"
            if f"Undersign is running: {self.url}" in self.output:
                try:
                    if http("GET", self.url + "/healthz").status_code == 200:
                        return
                except requests.RequestException:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"serve did not become ready:\n{self.output}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
        gc.collect()  # close kept-alive client connections that sit in reference cycles
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"serve did not stop on {signum}:\n{self.output}") from None
        self.reader.join(timeout=5)
        return code


def http(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request on its own connection, so no idle keep-alive delays the shutdown."""
    return requests.request(method, url, headers={"Connection": "close"}, timeout=10, **kwargs)


def running_process(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def run(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    yield data
    # Whatever happened, leave no redis-server behind.
    embedded = EmbeddedRedis(data)
    if embedded.running():
        embedded.stop()


def test_serve_on_embedded_redis_keeps_data_across_restarts(data_dir: Path) -> None:
    env = clean_env(data_dir)
    embedded = EmbeddedRedis(data_dir)

    first = Serve(env)
    try:
        first.wait_ready()
        assert f"Undersign is running: {first.url}" in first.output
        assert f"{first.url}/demo" in first.output
        assert "Embedded Redis:" in first.output
        # No WIDGET_PUBLIC_URL: links follow each request's Host, and serve says so.
        assert "WARNING: WIDGET_PUBLIC_URL is not set" in first.output
        # A real redis-server on a private unix socket, with its AOF in the data dir.
        assert stat.S_ISSOCK(embedded.socket.stat().st_mode)
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert any(data_dir.glob("appendonly*")), sorted(p.name for p in data_dir.iterdir())
        assert embedded.client().config_get("appendonly") == {"appendonly": "yes"}
        secret = data_dir / "secret_key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        redis_pid = int((data_dir / "redis.pid").read_text())

        url = first.url + endorsements_url()
        # The proof of work is on by default: solve it as the widget would.
        body = person(1, email="Ana@Example.org", altcha=altcha_for(first.url))
        posted = http("POST", url, json=body)
        assert posted.status_code == 201
        assert_counted(posted.json(), 1)

        # The read-only commands reach the same Redis through the same settings.
        assert run(env, str(BIN / "undersign"), "count", STATEMENT).strip() == "1"
        assert run(env, str(BIN / "flask"), "--app", "widget", "count", STATEMENT).strip() == "1"
        listing = run(env, str(BIN / "undersign"), "statements")
        line = next(li for li in listing.splitlines() if li.startswith(STATEMENT))
        assert " 1 / 10,000" in line
        assert "Dongelek Ystel Civil Society Coalition Statement" in line
    finally:
        code = first.stop(signal.SIGTERM)
    assert code == 0, first.output
    assert "Embedded Redis stopped; data kept." in first.output
    assert not embedded.socket.exists()
    assert not embedded.running()
    # The redis-server process is gone: no process, or a zombie its new parent has not
    # reaped yet (it outlives serve, which started it, by the few ms its exit takes).
    wait_until(lambda: not running_process(redis_pid), 5)

    second = Serve(env)
    try:
        second.wait_ready()
        count = http("GET", second.url + COUNT).json()
        assert count == {"id": STATEMENT, "count": 1}
        # Same secret after the restart: the same person is still recognised.
        url = second.url + endorsements_url()
        again = http(
            "POST", url, json=person(1, email=" ana@example.ORG", altcha=altcha_for(second.url))
        )
        assert again.json() == {"status": "duplicate", "count": 1}
        other = http("POST", url, json=person(2, altcha=altcha_for(second.url)))
        assert_counted(other.json(), 2)
    finally:
        code = second.stop(signal.SIGINT)
    assert code == 0, second.output
    assert not embedded.socket.exists()
    assert not embedded.running()
    # Data on disk only: a third start reads it back from the AOF.
    third = Serve(env, workers=1)
    try:
        third.wait_ready()
        assert http("GET", third.url + COUNT).json()["count"] == 2
    finally:
        third.stop()


def test_serve_with_redis_url_starts_no_redis(
    data_dir: Path, redis_server: RedisServer, redis_client: object
) -> None:
    env = clean_env(
        data_dir,
        WIDGET_REDIS_URL=redis_server.url,
        WIDGET_REDIS_CLUSTER="true" if CLUSTER else "false",
        WIDGET_SECRET_KEY=SECRET,
        WIDGET_PUBLIC_URL="https://sign.example.org",
    )
    server = Serve(env, workers=1)
    try:
        server.wait_ready()
        url = server.url + endorsements_url()
        body = person(1, altcha=altcha_for(server.url))
        assert http("POST", url, json=body).status_code == 201
        assert redis_server.client().get(f"us:{{{STATEMENT}}}:count") == b"1"
        # One mail worker beside gunicorn, on the same Redis.
        workers = redis_server.client().smembers("rq:{mail}:workers")
        deadline = time.monotonic() + 20
        while not workers and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = redis_server.client().smembers("rq:{mail}:workers")
        assert len(workers) == 1, server.output
    finally:
        assert server.stop() == 0, server.output
    assert redis_server.client().smembers("rq:{mail}:workers") == set()  # stopped with it
    assert "Embedded Redis" not in server.output
    assert "WIDGET_PUBLIC_URL is not set" not in server.output
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_serve_stops_when_signals_come_in_a_burst(data_dir: Path) -> None:
    # Ctrl-C pressed again and again, or `docker stop` while a supervisor also signals: each
    # signal reaches the handler while the one before may still be in it.
    env = clean_env(data_dir)
    embedded = EmbeddedRedis(data_dir)
    server = Serve(env, workers=1)
    try:
        server.wait_ready()
        for _ in range(40):
            server.process.send_signal(signal.SIGINT)
            time.sleep(0.0005)
    finally:
        code = server.stop(signal.SIGTERM, timeout=45)
    # A signal that arrives while the interpreter is finishing, after the clean stop that
    # the output shows, meets the default handler Python has put back by then, and ends the
    # process by that signal: the last SIGINTs, or this SIGTERM when the test is starved of
    # CPU until serve has nearly exited.
    assert code in (0, 1, -signal.SIGINT, 128 + signal.SIGINT, -signal.SIGTERM), server.output
    assert "Embedded Redis stopped; data kept." in server.output
    assert not embedded.running()


def test_mail_worker_stop_may_run_again_inside_itself() -> None:
    # stop() runs in serve's signal handler; a second signal's handler can run while the
    # first is still inside stop(), in the same thread. It must not wait for itself.
    worker = MailWorkerProcess({})
    sent: list[int] = []

    class Process:
        def poll(self) -> int | None:
            return None

        def send_signal(self, signum: int) -> None:
            sent.append(signum)
            if len(sent) == 1:
                worker.stop()  # the second signal arrives here

    worker.process = Process()  # type: ignore[assignment]
    done = threading.Event()
    threading.Thread(target=lambda: (worker.stop(), done.set()), daemon=True).start()
    assert done.wait(5), "stop() waited for itself"
    assert sent == [signal.SIGTERM, signal.SIGTERM]


def test_two_serves_on_one_data_folder_share_redis_until_the_last_stops(data_dir: Path) -> None:
    env = clean_env(data_dir)
    embedded = EmbeddedRedis(data_dir)
    first = Serve(env, workers=1)
    second: Serve | None = None
    try:
        first.wait_ready()
        second = Serve(env, workers=1)
        second.wait_ready()
        assert "already running" in second.output
        assert first.stop() == 0, first.output
        assert "another serve uses it" in first.output
        # The second still has its Redis: the store answers, a count is read.
        assert embedded.running()
        assert http("GET", second.url + "/healthz").status_code == 200
        assert http("GET", second.url + COUNT).json() == {"id": STATEMENT, "count": 0}
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.output
    assert second is not None and "Embedded Redis stopped; data kept." in second.output
    assert not embedded.running()


def test_serve_refuses_a_bad_setting_before_starting_anything(data_dir: Path) -> None:
    """It had printed "ready", started Redis and gunicorn, then failed in every worker with
    six tracebacks; now one line, status 1, and nothing left running."""
    env = {**os.environ, "WIDGET_DATA_DIR": str(data_dir), "WIDGET_ENDORSE_LIMIT": "lots"}
    env.pop("WIDGET_REDIS_URL", None)
    command = [str(BIN / "undersign"), "serve", "--port", str(free_port())]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "Error: WIDGET_ENDORSE_LIMIT: expected a limit like 5/minute;50/day, got 'lots'"
    )
    assert "ready" not in result.stdout and "Traceback" not in result.stderr
    assert not EmbeddedRedis(data_dir).running()


def test_a_command_run_without_serve_leaves_no_redis_behind(data_dir: Path) -> None:
    """`undersign count` and friends start the embedded Redis when no serve runs; it had
    stayed running (parent PID 1) after every such command."""
    env = {**os.environ, "WIDGET_DATA_DIR": str(data_dir)}
    env.pop("WIDGET_REDIS_URL", None)
    env.pop("WIDGET_REDIS_CLUSTER", None)
    assert run(env, str(BIN / "undersign"), "count", STATEMENT).strip() == "0"
    embedded = EmbeddedRedis(data_dir)
    assert not embedded.running()
    run(env, str(BIN / "undersign"), "close", STATEMENT)
    assert not embedded.running()
    embedded.start()  # what the command wrote was kept
    try:
        assert embedded.client().hget(f"us:{{{STATEMENT}}}:state", "closed") is not None
    finally:
        embedded.stop()
