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

from widget.fastcount import MAX_LEARNED, CountFastPath
from widget.proxies import ForwardedMiddleware
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
    outer = app.wsgi_app
    assert isinstance(outer, ForwardedMiddleware)  # proxies first, then the fast path
    middleware = outer.wsgi_app
    assert isinstance(middleware, CountFastPath)
    return middleware


def flask_only(app: Flask) -> Client:
    """A client for the same app without the fast path (proxies still applied first)."""
    outer = app.wsgi_app
    assert isinstance(outer, ForwardedMiddleware)
    return Client(ForwardedMiddleware(fast_path(app).wsgi_app, outer.proxies))


@pytest.mark.parametrize("headers", VARIANTS, ids=lambda h: ",".join(h) or "plain")
def test_fast_answers_are_the_same_bytes_as_flasks(
    fast_app: Flask, headers: dict[str, str]
) -> None:
    middleware = fast_path(fast_app)
    through_flask = flask_only(fast_app)
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
    # As the scripts do after a change (SPUBLISH on a cluster: sharded pub/sub).
    publish = redis_client.spublish if store.sharded else redis_client.publish
    publish(store.channel(STATEMENT), 4)
    wait_until(lambda: client.get(URL).get_json()["count"] == 4)
    redis_client.set(store.key(STATEMENT, "count"), 9)  # behind the scripts' back
    started = time.monotonic()
    wait_until(lambda: client.get(URL).get_json()["count"] == 9)
    assert time.monotonic() - started <= 1.5  # about a second, not the 5 s resync
    assert middleware.answered > 0
    redis_client.client_kill_filter(_type="pubsub")  # the subscription drops
    hub = fast_app.extensions["undersign.live"]
    hub.subscribed = False  # as the subscriber thread notes before reconnecting
    answered = middleware.answered
    redis_client.set(store.key(STATEMENT, "count"), 10)
    assert client.get(URL).get_json()["count"] == 10  # straight from Redis
    assert middleware.answered == answered


def test_varying_hosts_and_forwarded_ports_cannot_turn_the_fast_path_off(
    fast_app: Flask,
) -> None:
    """Many Host and X-Forwarded-Port values once filled the table for good (finding 7)."""
    middleware = fast_path(fast_app)
    client = fast_app.test_client()
    for n in range(3 * MAX_LEARNED):
        headers = {"X-Forwarded-Port": str(10000 + n)}
        assert client.get(URL, base_url=f"http://h{n}.example", headers=headers).status_code == 200
        # The service's own origin as each of those hosts: learned, but in a bounded LRU.
        own = {"Origin": f"http://h{n}.example"}
        assert client.get(URL, base_url=f"http://h{n}.example", headers=own).status_code == 200
    assert len(middleware.learned) <= MAX_LEARNED
    # A client never seen before, from an ally, still gets the fast path after one pass.
    first = answer(client, {"Origin": ALLY})
    before = middleware.answered
    assert answer(client, {"Origin": ALLY}) == first
    assert middleware.answered == before + 1
    # Plain reads were answered here all along, whatever the Host.
    before = middleware.answered
    assert client.get(URL, base_url="http://never-seen.example").status_code == 200
    assert middleware.answered == before + 1


@pytest.mark.parametrize(
    "special",
    [
        {"Access-Control-Request-Private-Network": "true"},
        {"Access-Control-Request-Method": "GET"},
        {"Cookie": "session=x"},
        {"Authorization": "Bearer x"},
        {"If-Modified-Since": "Wed, 21 Oct 2015 07:28:00 GMT"},
    ],
    ids=lambda h: next(iter(h)),
)
def test_one_clients_headers_are_never_replayed_to_others(
    fast_app: Flask, special: dict[str, str]
) -> None:
    """The first requester's headers once shaped the answer everyone got (finding 7)."""
    middleware = fast_path(fast_app)
    client = fast_app.test_client(use_cookies=False)  # sends the Cookie header as given
    through_flask = flask_only(fast_app)
    origin = {"Origin": ALLY}
    # The unusual request goes first, twice: it is neither learned from nor answered here.
    odd = client.get(URL, headers={**origin, **special})
    assert odd.status_code == 200
    client.get(URL, headers={**origin, **special})
    assert middleware.answered == 0
    assert len(middleware.learned) == 0
    # Everyone else gets exactly what Flask gives them, not the unusual answer.
    answer(client, origin)
    assert answer(client, origin) == answer(through_flask, origin)
    assert middleware.answered == 1
    if "Private-Network" in next(iter(special)):
        assert odd.headers["Access-Control-Allow-Private-Network"] == "false"
        assert "Access-Control-Allow-Private-Network" not in client.get(URL, headers=origin).headers


def test_a_learned_answer_keeps_only_the_expected_headers(fast_app: Flask) -> None:
    middleware = fast_path(fast_app)
    client = fast_app.test_client()
    for headers in ({}, {"Origin": ALLY}, {"Origin": "http://localhost"}):
        answer(client, headers)
    assert set(middleware.learned) == {("none", ""), ("ally", ALLY), ("own", "http://localhost")}
    for learned in middleware.learned.values():
        names = {name.lower() for name, _ in learned}
        assert names <= {
            "content-type",
            "cache-control",
            "vary",
            "access-control-allow-origin",
            "access-control-expose-headers",
        }


def test_an_unknown_host_is_refused_on_the_fast_path_too(
    make_app: Callable[..., Flask], redis_client: Redis
) -> None:
    app = make_app(PUBLIC_URL="https://sign.example.org")
    hub = app.extensions["undersign.live"]
    hub.ensure_running()
    wait_until(lambda: hub.subscribed)
    middleware = fast_path(app)
    client = app.test_client()
    good = "https://sign.example.org"
    assert client.get(URL, base_url=good).status_code == 200
    assert client.get(URL, base_url=good).status_code == 200
    assert middleware.answered == 1
    refused = client.get(URL, base_url="http://evil.test")
    assert refused.status_code == 400
    assert refused.mimetype == "application/problem+json"
    assert middleware.answered == 1
