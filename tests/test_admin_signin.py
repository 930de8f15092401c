"""Guessing the admin token (issue 9): single-use sign-in forms, limits, 429s and log lines."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import pytest
from conftest import ADMIN_TOKEN
from flask import Flask
from flask.testing import FlaskClient
from servers import RedisServer
from test_admin_sessions import cookies_from, curl, form_csrf, login_form
from werkzeug.test import TestResponse

from widget.config import ConfigError


def test_a_sign_in_form_carries_one_guess(app: Flask) -> None:
    script = curl(app)  # a guessing script keeps its cookies itself
    cookie, csrf = login_form(script)

    wrong = script.post("/admin/login", data={"csrf": csrf, "token": "wrong"}, headers=cookie)
    assert wrong.status_code == 401
    renewed = form_csrf(wrong)
    assert renewed != csrf  # the form comes back with a fresh token...
    renewed_cookie = cookies_from(wrong)  # ...and its cookie

    # The same form (field and cookie) a second time: refused before the token is looked
    # at, even with the right token.
    again = script.post("/admin/login", data={"csrf": csrf, "token": ADMIN_TOKEN}, headers=cookie)
    assert again.status_code == 400
    assert "expired" in again.get_data(as_text=True)
    assert "undersign_admin" not in again.headers.get("Set-Cookie", "")

    # The renewed form signs in, once.
    data = {"csrf": renewed, "token": ADMIN_TOKEN}
    ok = script.post("/admin/login", data=data, headers=renewed_cookie)
    assert ok.status_code == 303
    assert script.get("/admin", headers=cookies_from(ok)).status_code == 200
    assert script.post("/admin/login", data=data, headers=renewed_cookie).status_code == 400


def test_a_sign_in_form_is_bound_to_its_browser(app: Flask) -> None:
    _, csrf = login_form(curl(app))
    other_cookie, _ = login_form(curl(app))
    for headers in ({}, other_cookie):
        response = curl(app).post(
            "/admin/login", data={"csrf": csrf, "token": ADMIN_TOKEN}, headers=headers
        )
        assert response.status_code == 400, headers
        assert "undersign_admin" not in response.headers.get("Set-Cookie", "")


def test_a_sign_in_page_still_works_after_another_tab_opened_one(app: Flask) -> None:
    """Two console tabs sent to the sign-in page: the first one's form had been replaced
    by the second's cookie ("The sign-in form expired"), and counted as a failure."""
    browser = app.test_client()  # one cookie jar: one browser, two tabs
    first = form_csrf(browser.get("/admin/login?next=/admin/s/dongelek-ystel"))
    second = form_csrf(browser.get("/admin/login?next=/admin"))
    assert first != second
    ok = browser.post("/admin/login", data={"csrf": first, "token": ADMIN_TOKEN})
    assert ok.status_code == 303, ok.get_data(as_text=True)
    assert browser.get("/admin").status_code == 200
    # Each form is still good for one try only.
    assert (
        browser.post("/admin/login", data={"csrf": first, "token": ADMIN_TOKEN}).status_code == 400
    )


# -- the brake -------------------------------------------------------------------------------

API = "/api/v1/admin/statements"
ALICE = {"REMOTE_ADDR": "203.0.113.7"}
BOB = {"REMOTE_ADDR": "198.51.100.23"}
RIGHT = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WRONG = {"Authorization": "Bearer a-wrong-guess-at-the-admin-token-000"}


def client_at(app: Flask, environ: dict[str, str]) -> FlaskClient:
    client = app.test_client()
    client.environ_base.update(environ)
    return client


def guess(client: FlaskClient, token: str) -> TestResponse:
    form = client.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.get_data(as_text=True))
    assert csrf is not None
    return client.post("/admin/login", data={"csrf": csrf.group(1), "token": token})


def admin_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "widget.admin"]


def assert_no_secrets_logged(caplog: pytest.LogCaptureFixture) -> None:
    text = caplog.text
    for secret in ("203.0.113.7", "198.51.100.23", "127.0.0.1", ADMIN_TOKEN, "wrong-guess"):
        assert secret not in text


def retry_after(response: TestResponse) -> int:
    value = int(response.headers["Retry-After"])
    assert 1 <= value <= 60
    return value


def test_sign_in_is_braked_per_client(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="widget.admin")
    app = make_app(ADMIN_AUTH_LIMIT="3/minute", ADMIN_AUTH_GLOBAL_LIMIT="100/minute")
    alice, bob = client_at(app, ALICE), client_at(app, BOB)
    for _ in range(3):
        assert guess(alice, "wrong-guess").status_code == 401
    assert admin_lines(caplog) == ["admin sign-in failed (bad token)"] * 3

    # Over the limit, even the right token is refused, and the page says when to retry.
    for token in ("wrong-guess", ADMIN_TOKEN):
        braked = guess(alice, token)
        assert braked.status_code == 429
        seconds = retry_after(braked)
        assert f"Try again in {seconds} seconds" in braked.get_data(as_text=True)
        assert "undersign_admin" not in braked.headers.get("Set-Cookie", "")
    assert alice.get("/admin").status_code == 302
    assert len(admin_lines(caplog)) == 5
    assert admin_lines(caplog)[3].startswith("admin sign-in refused (too many failures")

    # Another client is not held back by Alice's guesses.
    assert guess(bob, ADMIN_TOKEN).status_code == 303
    assert_no_secrets_logged(caplog)


def test_failed_bearer_checks_are_braked_and_right_ones_are_not_counted(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="widget.admin")
    app = make_app(ADMIN_AUTH_LIMIT="3/minute", ADMIN_AUTH_GLOBAL_LIMIT="100/minute")
    alice, bob = client_at(app, ALICE), client_at(app, BOB)
    for _ in range(10):  # a right token is never throttled by its own use
        assert alice.get(API, headers=RIGHT).status_code == 200
        assert alice.get("/metrics", headers=RIGHT).status_code == 200
    assert admin_lines(caplog) == []

    # Failures on the admin API and /metrics count together.
    assert alice.get(API, headers=WRONG).status_code == 401
    assert alice.get("/metrics", headers=WRONG).status_code == 401
    assert alice.post(f"{API}/x/close", headers=WRONG).status_code == 401
    assert admin_lines(caplog) == [
        "admin API bearer check failed (bad token)",
        "/metrics bearer check failed (bad token)",
        "admin API bearer check failed (bad token)",
    ]
    for path in (API, "/metrics"):
        for headers in (WRONG, RIGHT):
            braked = alice.get(path, headers=headers)
            assert braked.status_code == 429, (path, headers)
            assert braked.mimetype == "application/problem+json"
            body = braked.get_json()
            assert body["status"] == 429 and body["retry_after"] == retry_after(braked)
    assert len(admin_lines(caplog)) == 3 + 4
    # Bob's right token still works; requests without a Bearer header are no guesses.
    assert bob.get(API, headers=RIGHT).status_code == 200
    assert alice.get(API).status_code == 401
    assert alice.get(API, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert len(admin_lines(caplog)) == 7
    assert_no_secrets_logged(caplog)


def test_the_global_limit_brakes_every_client(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="widget.admin")
    app = make_app(ADMIN_AUTH_LIMIT="100/minute", ADMIN_AUTH_GLOBAL_LIMIT="4/minute")
    for i in range(4):
        many = client_at(app, {"REMOTE_ADDR": f"192.0.2.{i + 1}"})
        assert many.get(API, headers=WRONG).status_code == 401
    fresh = client_at(app, {"REMOTE_ADDR": "192.0.2.99"})
    assert fresh.get(API, headers=RIGHT).status_code == 429
    assert guess(fresh, ADMIN_TOKEN).status_code == 429
    assert "192.0.2." not in caplog.text


def test_a_signed_in_console_is_not_braked(make_app: Callable[..., Flask]) -> None:
    app = make_app(ADMIN_AUTH_LIMIT="1/minute", ADMIN_AUTH_GLOBAL_LIMIT="1/minute")
    alice = client_at(app, ALICE)
    assert guess(alice, ADMIN_TOKEN).status_code == 303
    assert client_at(app, BOB).get(API, headers=WRONG).status_code == 401  # fills both
    assert alice.get(API, headers=WRONG).status_code == 429
    assert alice.get(API).status_code == 200  # the session needs no token
    assert alice.get("/admin").status_code == 200


def test_the_limits_are_checked_at_startup(make_app: Callable[..., Flask]) -> None:
    for name in ("ADMIN_AUTH_LIMIT", "ADMIN_AUTH_GLOBAL_LIMIT"):
        with pytest.raises(ConfigError, match=f"^WIDGET_{name}: "):
            make_app(**{name: "ten a minute"})


def test_redis_down_while_braking(app: Flask, redis_server: RedisServer) -> None:
    client = app.test_client()
    redis_server.kill()
    try:
        for path, headers in ((API, RIGHT), (API, WRONG)):
            down = client.get(path, headers=headers)
            assert down.status_code == 503, (path, headers)
            assert down.mimetype == "application/problem+json"
        assert guess(client, ADMIN_TOKEN).status_code == 503
        # /metrics is what shows the outage: the right token still reads it.
        metrics = client.get("/metrics", headers=RIGHT)
        assert metrics.status_code == 200
        assert "undersign_redis_errors_total" in metrics.get_data(as_text=True)
        assert client.get("/metrics", headers=WRONG).status_code == 401
    finally:
        redis_server.start()
