"""Console sessions (issue 9): server-side, absolute, revocable, and never on public routes."""

from __future__ import annotations

import calendar
import hashlib
import re
import time
from collections.abc import Callable

import pytest
from conftest import ADMIN_TOKEN, SECRET, STATEMENT
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import RedisServer
from test_admin import session_cookie_value, session_csrf, set_cookies, sign_in
from werkzeug.test import TestResponse

from widget.embed import asset_digest
from widget.resources import EMBED_SITE_DIR, STATIC_DIR
from widget.sessions import SessionStore, token_binding

API = "/api/v1/admin/statements"
EIGHT_HOURS = 8 * 3600
OTHER_TOKEN = "a-rotated-admin-token-0123456789abcdef"


def cookies_from(response: TestResponse) -> dict[str, str]:
    """The cookies a response set, as `curl -b` would send them on any path (to use with
    a client without a jar)."""
    given = {c.split(";", 1)[0] for c in set_cookies(response)}
    live = sorted(pair for pair in given if not pair.endswith("="))  # not the cleared ones
    assert live, set_cookies(response)
    return {"Cookie": "; ".join(live)}


def signed_in(client: FlaskClient) -> dict[str, str]:
    """Sign ``client`` in; answer the cookies it got."""
    response = sign_in(client)
    assert response.status_code == 303
    return cookies_from(response)


def curl(app: Flask) -> FlaskClient:
    """A client without a cookie jar: it sends exactly the Cookie header it is given."""
    return app.test_client(use_cookies=False)


def session_keys(redis_client: Redis) -> list[str]:
    return sorted(k.decode() for k in redis_client.scan_iter(match="us:admin:session:*"))


def cookie_paths(response: TestResponse, name: str) -> list[str]:
    paths = []
    for cookie in set_cookies(response):
        if cookie.startswith(f"{name}="):
            found = re.search(r"Path=([^;]+)", cookie)
            assert found is not None, cookie
            paths.append(found.group(1))
    return sorted(paths)


def test_sign_out_ends_the_session_everywhere(app: Flask, client: FlaskClient) -> None:
    cookie = signed_in(client)
    copied = curl(app)  # someone who copied the cookie
    assert copied.get(API, headers=cookie).status_code == 200

    out = client.post("/admin/logout", data={"csrf": session_csrf(client)})
    assert out.status_code == 303

    refused = copied.get(API, headers=cookie)
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"
    assert copied.get("/admin", headers=cookie).status_code == 302
    assert client.get("/admin").status_code == 302
    # the browser that signed out was told to drop the cookie under both paths
    assert cookie_paths(out, "undersign_admin") == ["/admin", "/api/v1/admin"]
    for cleared in set_cookies(out):
        assert "undersign_admin=;" in cleared and "Expires=Thu, 01 Jan 1970" in cleared


def test_a_new_admin_token_ends_every_session(
    make_app: Callable[..., Flask], redis_client: Redis
) -> None:
    before = make_app()
    cookie = signed_in(before.test_client())
    assert curl(before).get(API, headers=cookie).status_code == 200

    # A restart with a rotated WIDGET_ADMIN_TOKEN, on the same Redis.
    after = make_app(ADMIN_TOKEN=OTHER_TOKEN)
    client = curl(after)
    refused = client.get(API, headers=cookie)
    assert refused.status_code == 401
    # ...and the browser is told to forget it, under both paths
    assert cookie_paths(refused, "undersign_admin") == ["/admin", "/api/v1/admin"]
    assert session_keys(redis_client) == []  # refused and deleted
    assert client.get("/admin", headers=cookie).status_code == 302
    # the old token's app does not get it back either
    assert curl(before).get(API, headers=cookie).status_code == 401


def test_the_lifetime_is_absolute_and_redis_holds_no_live_cookie(
    app: Flask, client: FlaskClient, redis_client: Redis
) -> None:
    started = time.time()
    response = sign_in(client)
    session_id = session_cookie_value(response)
    assert len(session_id) >= 43  # 256 random bits
    expires = re.search(r"Expires=([^;]+)", set_cookies(response)[0])
    assert expires is not None
    cookie_expiry = calendar.timegm(time.strptime(expires.group(1), "%a, %d %b %Y %H:%M:%S GMT"))
    assert started + EIGHT_HOURS - 2 <= cookie_expiry <= started + EIGHT_HOURS + 2

    [key] = session_keys(redis_client)
    assert key == "us:admin:session:" + hashlib.sha256(session_id.encode()).hexdigest()
    stored = redis_client.get(key)
    assert stored is not None
    for secret in (session_id, ADMIN_TOKEN):
        assert secret.encode() not in stored and secret not in key
    ttl = redis_client.pttl(key)
    assert EIGHT_HOURS * 1000 - 5000 < ttl <= EIGHT_HOURS * 1000

    # Using the session neither extends it nor re-sends the cookie.
    time.sleep(0.05)
    for path in ("/admin", f"/admin/s/{STATEMENT}", API, f"{API}/{STATEMENT}/stats"):
        used = client.get(path)
        assert used.status_code == 200, path
        assert "Set-Cookie" not in used.headers, path
    assert redis_client.pttl(key) < ttl

    # At the stored expiry the session is refused and deleted, whatever its key's TTL.
    sessions: SessionStore = app.extensions["undersign.sessions"]
    binding = token_binding(SECRET, ADMIN_TOKEN)
    assert sessions.get(session_id, binding, now=time.time() + EIGHT_HOURS - 60) is not None
    assert sessions.get(session_id, binding, now=started + EIGHT_HOURS + 3) is None
    assert session_keys(redis_client) == []
    assert client.get(API).status_code == 401


def form_csrf(response: TestResponse) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def login_form(client: FlaskClient) -> tuple[dict[str, str], str]:
    """(the cookies that came with it, its csrf field) from a fresh sign-in form."""
    form = client.get("/admin/login")
    assert form.status_code == 200
    return cookies_from(form), form_csrf(form)


def test_each_sign_in_gets_a_new_session(
    app: Flask, client: FlaskClient, redis_client: Redis
) -> None:
    first = session_cookie_value(sign_in(client))
    # A second tab signs in again: the old session is ended, never reused.
    cookie, csrf = login_form(curl(app))
    again = curl(app).post(
        "/admin/login",
        data={"csrf": csrf, "token": ADMIN_TOKEN},
        headers={"Cookie": f"{cookie['Cookie']}; undersign_admin={first}"},
    )
    assert again.status_code == 303
    second = session_cookie_value(again)
    assert first != second
    assert session_keys(redis_client) == [
        "us:admin:session:" + hashlib.sha256(second.encode()).hexdigest()
    ]


def test_redis_down_while_checking_a_session_is_503(
    app: Flask, client: FlaskClient, redis_server: RedisServer
) -> None:
    cookie = signed_in(client)
    client = curl(app)
    redis_server.kill()
    try:
        # Without the cookie nothing asks Redis: still the plain 401.
        assert client.get(API).status_code == 401
        down = client.get(API, headers=cookie)
        assert down.status_code == 503
        assert down.mimetype == "application/problem+json"
        assert down.headers["Retry-After"] == "5"
        page = client.get("/admin", headers=cookie)
        assert page.status_code == 503 and page.mimetype == "text/html"
    finally:
        redis_server.start()


# -- no cookie on public responses ---------------------------------------------------------


def public_get_urls(app: Flask) -> list[str]:
    """Every GET route outside /admin and /api/v1/admin, its parameters filled in."""
    static = "widget.css"
    demo = next(p.name for p in sorted(EMBED_SITE_DIR.iterdir()) if p.suffix == ".css")
    assert (STATIC_DIR / static).is_file()
    urls = []
    for rule in app.url_map.iter_rules():
        if "GET" not in (rule.methods or ()) or rule.rule.startswith(("/admin", "/api/v1/admin")):
            continue
        url = rule.rule
        for arg in rule.arguments:
            if arg == "statement_id":
                value = STATEMENT
            elif arg == "filename":
                value = demo if rule.endpoint == "embed.demo_file" else static
            elif arg in ("commit", "digest"):
                value = "0" * 64  # a receipt or a text version (a 404 must not set one either)
            elif arg == "token":
                value = "A" * 32  # a confirmation link nobody issued (its 404 page)
            else:
                raise AssertionError(f"no value for <{arg}> in {rule.rule}")
            url = re.sub(rf"<(?:[^:<>]+:)?{arg}>", value, url)
        urls.append(url)
        if rule.endpoint == "embed.static":
            urls.append(f"{url}?v={asset_digest(static)}")  # the year-long immutable one
    return sorted(urls)


def test_no_public_response_sets_a_cookie_while_signed_in(app: Flask, client: FlaskClient) -> None:
    cookie = signed_in(client)
    urls = public_get_urls(app)
    for expected in (
        "/",
        f"/s/{STATEMENT}",
        f"/embed/{STATEMENT}",
        "/embed.js",
        "/static/widget.css",
        "/api/v1/statements",
        f"/api/v1/statements/{STATEMENT}",
        f"/api/v1/statements/{STATEMENT}/count",
        f"/api/v1/statements/{STATEMENT}/recent",
        "/demo",
        "/healthz",
    ):
        assert expected in urls, expected
    assert any(u.startswith("/static/widget.css?v=") for u in urls)
    # Even a browser that sent the admin cookie (an old Path=/ one, a proxy rewriting
    # paths) gets no cookie back from a public route.
    sent = cookie
    checked = 0
    for url in urls:
        for browser, headers in ((client, {}), (curl(app), sent)):
            response = browser.get(url, headers=headers, buffered=False)
            try:
                assert response.status_code < 500, url
                assert "Set-Cookie" not in response.headers, (url, response.headers)
            finally:
                response.close()
            checked += 1
    assert checked >= 2 * 14
    assert client.get("/admin").status_code == 200  # still signed in


@pytest.mark.parametrize("path", ["/admin/login", "/api/v1/admin/statements"])
def test_admin_cookies_never_cover_public_paths(client: FlaskClient, path: str) -> None:
    form = client.get("/admin/login")
    assert cookie_paths(form, "undersign_login") == ["/admin/login"]
    signed = sign_in(client)
    assert cookie_paths(signed, "undersign_admin") == ["/admin", "/api/v1/admin"]
    for cookie in set_cookies(form) + set_cookies(signed):
        assert "Path=/;" not in cookie + ";" and "Domain=" not in cookie
    # the cookie jar sends it where it belongs, and nowhere else
    assert client.get(path).status_code in (200, 302)
    assert client.get(API).status_code == 200
    assert client.get(f"/s/{STATEMENT}").status_code == 200
