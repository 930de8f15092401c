"""Shared fixtures: one real redis-server per session, apps and gunicorn servers on it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, Playwright, sync_playwright
from redis import Redis
from servers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    ClusterServer,
    Gunicorn,
    MailWorker,
    RedisServer,
    SmtpSink,
)

from widget import create_app

SECRET = "test-secret-key-not-for-production-0123456789"
ALLY = "https://ally.example"
STATEMENT = "dongelek-ystel"
# At least 32 characters: a shorter WIDGET_ADMIN_TOKEN is a startup error.
ADMIN_TOKEN = "admin-token-for-tests-0123456789abcdef"
# UNDERSIGN_TEST_CLUSTER=1 runs the whole suite against a local Redis Cluster (3 masters,
# 3 replicas; scripts/redis_cluster.py) instead of a single redis-server. Every app,
# gunicorn and CLI the tests start then gets WIDGET_REDIS_CLUSTER=true from here.
CLUSTER = os.environ.get("UNDERSIGN_TEST_CLUSTER", "") not in ("", "0", "false")
if CLUSTER:
    os.environ["WIDGET_REDIS_CLUSTER"] = "true"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault tests' figures (unavailability windows, what WAIT 0 loses)."""
    from faults import FIGURES

    if FIGURES:
        terminalreporter.section("fault tests: measured")
        for line in FIGURES:
            terminalreporter.write_line(line)


def pytest_report_header() -> str:
    return "redis: " + ("a local Redis Cluster (3+3 nodes)" if CLUSTER else "one redis-server")


CONFIRMING = "confirm-test"  # a statement with confirm = "email" (see confirm_dir)
MAIL_FROM = "Coalition <sign@coalition.example>"


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    """One Playwright driver for the whole run: a second sync one would clash with it."""
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server: RedisServer
    if CLUSTER:
        server = ClusterServer(tmp_path_factory.mktemp("cluster"))  # type: ignore[assignment]
    else:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[Redis]:
    """A clean database for each test (the server is restarted if a test killed it)."""
    if redis_server.process is None:
        redis_server.start()
    client = redis_server.client()
    # The day's salt for client hashes stays: a service keeps it all day, and a worker
    # of a long-lived test server holds it in memory as a cache.
    salts = {k: (client.get(k), client.pttl(k)) for k in client.scan_iter("us:salt:*")}
    client.flushall()
    for key, (salt, ttl) in salts.items():
        if salt is not None and ttl > 0:
            client.set(key, salt, px=ttl)
    yield client
    if redis_server.process is None:
        redis_server.start()


def base_config(redis_server: RedisServer, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "TESTING": True,
        "REDIS_URL": redis_server.url,
        "REDIS_CLUSTER": CLUSTER,
        "SECRET_KEY": SECRET,
        "ALLOWED_ORIGINS": ALLY,
        "ENDORSE_LIMIT": "1000/minute",
        "NETWORK_LIMIT": "1000/minute",
        "SOURCE_LIMIT": "100000/minute",
        "STATEMENT_LIMIT": "100000/minute",
        "FORM_LIMIT": "1000/minute",
        "CHALLENGE_LIMIT": "1000/minute",
        "WITHDRAW_LIMIT": "1000/minute",
        "POW": False,  # tests that need the proof of work turn it on
        "ADMIN_TOKEN": ADMIN_TOKEN,
        # Generous, so tests that try many wrong credentials on purpose are not braked;
        # tests of the brake set their own.
        "ADMIN_AUTH_LIMIT": "1000/minute",
        "ADMIN_AUTH_GLOBAL_LIMIT": "1000/minute",
    }
    config.update(overrides)
    return config


@pytest.fixture
def make_app(redis_server: RedisServer, redis_client: Redis) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        apps.append(create_app(base_config(redis_server, **overrides)))
        return apps[-1]

    yield factory
    for app in apps:  # end each app's live-count subscriber thread
        app.extensions["undersign.live"].stop()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def gunicorn_env(redis_server: RedisServer, **overrides: str) -> dict[str, str]:
    env = {
        "WIDGET_REDIS_URL": redis_server.url,
        "WIDGET_REDIS_CLUSTER": "true" if CLUSTER else "false",
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_ALLOWED_ORIGINS": ALLY,
        "WIDGET_ENDORSE_LIMIT": "100000/minute",
        "WIDGET_NETWORK_LIMIT": "100000/minute",
        "WIDGET_SOURCE_LIMIT": "100000/minute",
        "WIDGET_STATEMENT_LIMIT": "100000/minute",
        "WIDGET_FORM_LIMIT": "100000/minute",
        "WIDGET_CHALLENGE_LIMIT": "100000/minute",
        "WIDGET_WITHDRAW_LIMIT": "100000/minute",
        "WIDGET_POW": "off",  # tests that need the proof of work turn it on
        "WIDGET_ADMIN_TOKEN": ADMIN_TOKEN,
    }
    env.update(overrides)
    return env


@pytest.fixture
def start_gunicorn(
    redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> Iterator[Callable[..., Gunicorn]]:
    """Start the real service under gunicorn: ``start_gunicorn(workers=4, WIDGET_X="...")``."""
    started: list[Gunicorn] = []

    def factory(workers: int = 2, **env: str) -> Gunicorn:
        server = Gunicorn(gunicorn_env(redis_server, **env), workers=workers, folder=tmp_path)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


# -- email confirmation ---------------------------------------------------------------------


def write_confirming_statement(folder: Path) -> Path:
    """``confirm-test`` (``confirm = "email"``) in English, with a Russian translation."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{CONFIRMING}.md").write_text(
        f'+++\nid = "{CONFIRMING}"\ntitle = "Clean air for our city"\ngoal = 100\n'
        'author = "Clean Air Coalition"\nconfirm = "email"\n+++\n\nWe ask for clean air.\n',
        encoding="utf-8",
    )
    (folder / f"{CONFIRMING}.ru.md").write_text(
        '+++\ntitle = "Чистый воздух для нашего города"\n+++\n\n' + "Просим чистого воздуха.\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture
def confirm_dir(tmp_path: Path) -> Path:
    return write_confirming_statement(tmp_path / "statements")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.stop()


def mail_settings(sink: SmtpSink, statements: Path, public_url: str) -> dict[str, str]:
    """The settings a confirming statement needs, as environment variables."""
    return {
        "WIDGET_STATEMENTS_DIR": str(statements),
        "WIDGET_SMTP_URL": sink.url,
        "WIDGET_MAIL_FROM": MAIL_FROM,
        "WIDGET_PUBLIC_URL": public_url,
    }


@pytest.fixture
def start_worker(
    redis_server: RedisServer, redis_client: Redis, tmp_path: Path
) -> Iterator[Callable[..., MailWorker]]:
    """Start ``undersign worker`` on the test Redis: ``start_worker(WIDGET_SMTP_URL=...)``."""
    started: list[MailWorker] = []

    def factory(**env: str) -> MailWorker:
        worker = MailWorker(gunicorn_env(redis_server, **env), redis_client, folder=tmp_path)
        worker.start()
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.stop()
