"""Host and X-Forwarded-* are believed only from the configured proxies and hosts.

In process, the werkzeug test client's peer is ``127.0.0.1`` unless ``REMOTE_ADDR`` is
overridden; under the real gunicorn the tests connect over loopback.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import requests
from checks import STATEMENT, assert_problem, endorsements_url, person, store_state
from flask import Flask
from redis import Redis
from servers import Gunicorn

from widget import gunicorn_conf

MakeApp = Callable[..., Flask]
EMBED = f"/embed/{STATEMENT}"
PAGE = f"/s/{STATEMENT}"
SHOW = f"/api/v1/statements/{STATEMENT}"
OUTSIDER = "203.0.113.50"  # a client on the internet, not a proxy
POISON = {
    "X-Forwarded-Host": "evil.test",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-For": "198.51.100.99",
}


def links(html: str) -> set[str]:
    """The hosts named by the absolute links a page hands out (links and the snippet)."""
    return set(re.findall(r"(https?://[^/\"&]+)/(?:s/|embed\.js)", html))


# -- proxies --------------------------------------------------------------------------------


def test_forwarded_headers_from_a_client_are_ignored(make_app: MakeApp) -> None:
    """WIDGET_TRUSTED_PROXIES=1 once let anyone set X-Forwarded-Host (finding 6)."""
    client = make_app(TRUSTED_PROXIES=1).test_client()
    outsider = {"REMOTE_ADDR": OUTSIDER}
    page = client.get(PAGE, headers=POISON, environ_overrides=outsider)
    assert links(page.get_data(as_text=True)) == {"http://localhost"}
    widget = client.get(EMBED, headers=POISON, environ_overrides=outsider)
    assert links(widget.get_data(as_text=True)) == {"http://localhost"}
    shown = client.get(SHOW, headers=POISON, environ_overrides=outsider).get_json()
    assert shown["url"] == f"http://localhost/s/{STATEMENT}"


def test_forwarded_headers_from_a_trusted_proxy_are_used(make_app: MakeApp) -> None:
    client = make_app(TRUSTED_PROXIES="192.0.2.10").test_client()
    proxy = {"REMOTE_ADDR": "192.0.2.10"}
    shown = client.get(SHOW, headers=POISON, environ_overrides=proxy).get_json()
    assert shown["url"] == f"https://evil.test:8443/s/{STATEMENT}"  # the proxy vouches
    # The same headers from loopback, which is not listed here, change nothing.
    assert client.get(SHOW, headers=POISON).get_json()["url"] == f"http://localhost/s/{STATEMENT}"


def test_the_client_is_the_first_untrusted_address_from_the_right(
    make_app: MakeApp, redis_client: Redis
) -> None:
    app = make_app(TRUSTED_PROXIES="127.0.0.1, 192.0.2.0/24, 2001:db8:1::/48")
    seen: list[str | None] = []

    @app.get("/test-peer")
    def peer() -> str:
        from flask import request

        seen.append(request.remote_addr)
        return "ok"

    client = app.test_client()
    chains = {
        "198.51.100.7": "198.51.100.7",
        # A CDN (192.0.2.5) in front of the local proxy; the client forged an entry.
        "10.9.9.9, 198.51.100.8, 192.0.2.5": "198.51.100.8",
        "198.51.100.9, 2001:db8:1::5": "198.51.100.9",
        "[2001:db8:2::1]:5555, 192.0.2.5": "2001:db8:2::1",
        "198.51.100.10:4711": "198.51.100.10",
        # Garbage from the right: keep the last address a trusted proxy vouched for.
        "198.51.100.11, not-an-address, 192.0.2.6": "192.0.2.6",
        # Only trusted addresses: the leftmost is as far as the chain goes.
        "192.0.2.7, 192.0.2.8": "192.0.2.7",
    }
    for chain in chains:
        assert client.get("/test-peer", headers={"X-Forwarded-For": chain}).status_code == 200
    untrusted = {"REMOTE_ADDR": OUTSIDER}
    client.get(
        "/test-peer", headers={"X-Forwarded-For": "198.51.100.1"}, environ_overrides=untrusted
    )
    assert seen == [*chains.values(), OUTSIDER]


def test_a_hop_count_still_works_from_loopback_only(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(TRUSTED_PROXIES="1", ENDORSE_LIMIT="1/minute").test_client()
    url = endorsements_url()
    forwarded = {"X-Forwarded-For": "10.0.0.1, 198.51.100.30"}
    assert client.post(url, json=person(1), headers=forwarded).status_code == 201
    # A new forged prefix is no new client: one hop, the last address.
    again = {"X-Forwarded-For": "10.0.0.2, 198.51.100.30"}
    assert_problem(client.post(url, json=person(2), headers=again), 429)
    # From an address that is not loopback, the chain is not read at all.
    outsider = {"REMOTE_ADDR": OUTSIDER}
    other = {"X-Forwarded-For": "198.51.100.31"}
    assert (
        client.post(url, json=person(3), headers=other, environ_overrides=outsider).status_code
        == 201
    )
    assert_problem(
        client.post(
            url, json=person(4), headers={"X-Forwarded-For": "198.51.100.32"},
            environ_overrides=outsider,
        ),
        429,
    )  # fmt: skip
    assert store_state(redis_client).count == 2


# -- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "good"),
    [
        ({"PUBLIC_URL": "https://sign.example.org"}, "https://sign.example.org"),
        ({"ALLOWED_HOSTS": "sign.example.net"}, "http://sign.example.net:8080"),
        ({"ALLOWED_HOSTS": ".example.net"}, "https://a.b.example.net"),
    ],
)
def test_an_unknown_host_is_400(
    make_app: MakeApp, redis_client: Redis, settings: dict[str, str], good: str
) -> None:
    client = make_app(**settings).test_client()
    for path in (EMBED, PAGE, SHOW, SHOW + "/count", "/", "/healthz"):
        assert client.get(path, base_url=good).status_code == 200, path
        refused = client.get(path, base_url="http://evil.test")
        body = assert_problem(refused, 400)  # problem+json even for pages
        assert body["type"].endswith(":unknown-host")
        assert "evil.test" not in refused.get_data(as_text=True)
    refused = client.post(endorsements_url(), json=person(1), base_url="http://evil.test")
    assert_problem(refused, 400)
    assert store_state(redis_client).count == 0
    # The machine itself always works (health checks, curl on the host).
    for local in ("http://localhost:8000", "http://127.0.0.1:8000"):
        assert client.get("/healthz", base_url=local).status_code == 200


def test_forwarded_host_must_be_allowed_too(make_app: MakeApp) -> None:
    client = make_app(PUBLIC_URL="https://sign.example.org").test_client()
    assert_problem(client.get(SHOW, headers={"X-Forwarded-Host": "evil.test"}), 400)
    ok = client.get(SHOW, headers={"X-Forwarded-Host": "sign.example.org"})
    assert ok.status_code == 200
    assert ok.get_json()["url"] == f"https://sign.example.org/s/{STATEMENT}"


def test_without_host_settings_any_host_is_served(make_app: MakeApp) -> None:
    """Development: no list, every Host answered, links from it (and a startup warning)."""
    client = make_app().test_client()
    page = client.get(PAGE, base_url="http://dev.example:5000")
    assert links(page.get_data(as_text=True)) == {"http://dev.example:5000"}


# -- under the real gunicorn ------------------------------------------------------------------


def test_gunicorn_believes_forwarded_headers_only_from_trusted_proxies(
    start_gunicorn: Callable[..., Gunicorn],
) -> None:
    """gunicorn's forwarded_allow_ips="*" once let anyone set the scheme (finding 6)."""
    server = start_gunicorn(workers=1, WIDGET_TRUSTED_PROXIES="0")
    headers = {**POISON, "X-Forwarded-Ssl": "on", "SCRIPT_NAME": "/evil"}
    page = requests.get(server.url + PAGE, headers=headers, timeout=10)
    assert page.status_code == 200
    assert links(page.text) == {server.url}
    shown = requests.get(server.url + SHOW, headers=headers, timeout=10).json()
    assert shown["url"] == f"{server.url}/s/{STATEMENT}"
    # No public URL and no host list: the operator is told, loudly.
    assert "WIDGET_PUBLIC_URL is not set" in server.log()
    assert "Every Host header is accepted" in server.log()


def test_gunicorn_with_a_trusted_proxy_and_a_public_url(
    start_gunicorn: Callable[..., Gunicorn],
) -> None:
    server = start_gunicorn(
        workers=1,
        WIDGET_TRUSTED_PROXIES="127.0.0.1",
        WIDGET_PUBLIC_URL="https://sign.example.org",
    )
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sign.example.org"}
    page = requests.get(server.url + PAGE, headers=forwarded, timeout=10)
    assert page.status_code == 200
    assert links(page.text) == {"https://sign.example.org"}
    refused = requests.get(server.url + EMBED, headers={"Host": "evil.test"}, timeout=10)
    assert_problem(refused, 400)
    assert "WIDGET_PUBLIC_URL is not set" not in server.log()


def test_gunicorn_conf_follows_the_same_list(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    for value, expected in [
        (None, "127.0.0.0/8,::1"),
        ("172.16.0.0/12, 192.168.0.0/16", "172.16.0.0/12,192.168.0.0/16"),
        ("10.1.2.3", "10.1.2.3"),
        ("0", ""),
        ("2", "127.0.0.0/8,::1"),
    ]:
        if value is None:
            monkeypatch.delenv("WIDGET_TRUSTED_PROXIES", raising=False)
        else:
            monkeypatch.setenv("WIDGET_TRUSTED_PROXIES", value)
        assert importlib.reload(gunicorn_conf).forwarded_allow_ips == expected
    monkeypatch.delenv("WIDGET_TRUSTED_PROXIES")
    importlib.reload(gunicorn_conf)
