"""The count fast path answers exactly as Flask does, and only when it may."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from checks import wait_until
from conftest import ALLY, STATEMENT
from flask import Flask
from redis import Redis
from werkzeug.test import Client

from widget.fastcount import CountFastPath
from widget.store import Store

URL = f"/api/v1/statements/{STATEMENT}/count"
VARIANTS: list[dict[str, str]] = [
    {},
    {"Origin": ALLY},
    {"Origin": "http://localhost"},  # the service's own origin in the test client
    {"Origin": ALLY, "If-None-Match": '"c3"'},
    {"If-None-Match": '"c3"'},
]


def answer(client: Client, headers: dict[str, str], url: str = URL) -> tuple[Any, ...]:
    response = client.get(url, headers=headers)
    return response.status, sorted(response.headers.items()), response.get_data()


@pytest.fixture
def fast_app(make_app: Callable[..., Flask], redis_client: Redis) -> Flask:
    app = make_app()
    redis_client.set(Store(redis_client).key(STATEMENT, "count"), 3)
    hub = app.extensions["undersign.live"]
    hub.ensure_running()
    wait_until(lambda: hub.subscribed)
    return app


def fast_path(app: Flask) -> CountFastPath:
    middleware = app.wsgi_app
    assert isinstance(middleware, CountFastPath)
    return middleware


@pytest.mark.parametrize("headers", VARIANTS, ids=lambda h: ",".join(h) or "plain")
def test_fast_answers_are_the_same_bytes_as_flasks(
    fast_app: Flask, headers: dict[str, str]
) -> None:
    middleware = fast_path(fast_app)
    through_flask = Client(middleware.wsgi_app)
    client = fast_app.test_client()
    learning = {k: v for k, v in headers.items() if k != "If-None-Match"}
    answer(client, learning)  # Flask answers (a 200) and the fast path learns
    first = answer(through_flask, headers)
    before = middleware.answered
    second = answer(client, headers)
    assert middleware.answered == before + 1  # this one never reached Flask
    assert second == first


def test_what_the_fast_path_leaves_to_flask(fast_app: Flask, redis_client: Redis) -> None:
    middleware = fast_path(fast_app)
    client = fast_app.test_client()
    answer(client, {"Origin": ALLY})
    answer(client, {})
    assert middleware.answered == 0
    refused = client.get(URL, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused.headers
    assert client.get(URL, headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.get("/api/v1/statements/nope/count").status_code == 404
    assert client.get(URL + "?lang=ru").status_code == 200
    assert client.get(URL, headers={"If-None-Match": '"c9", "c3"'}).status_code == 304
    assert client.head(URL).status_code == 200
    assert middleware.answered == 0  # none of those was answered by the fast path
    assert client.get(URL).get_json() == {"id": STATEMENT, "count": 3}
    assert middleware.answered == 1


def test_a_count_is_never_older_than_a_second_and_never_served_without_a_subscription(
    fast_app: Flask, redis_client: Redis
) -> None:
    middleware = fast_path(fast_app)
    client = fast_app.test_client()
    store = Store(redis_client)
    assert client.get(URL).get_json()["count"] == 3
    redis_client.publish(store.channel(STATEMENT), 4)  # as the scripts do after a change
    wait_until(lambda: client.get(URL).get_json()["count"] == 4)
    redis_client.set(store.key(STATEMENT, "count"), 9)  # behind the scripts' back
    started = time.monotonic()
    wait_until(lambda: client.get(URL).get_json()["count"] == 9)
    assert time.monotonic() - started <= 1.1
    assert middleware.answered > 0
    redis_client.client_kill_filter(_type="pubsub")  # the subscription drops
    hub = fast_app.extensions["undersign.live"]
    hub.subscribed = False  # as the subscriber thread notes before reconnecting
    answered = middleware.answered
    redis_client.set(store.key(STATEMENT, "count"), 10)
    assert client.get(URL).get_json()["count"] == 10  # straight from Redis
    assert middleware.answered == answered
