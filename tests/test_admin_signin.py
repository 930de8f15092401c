"""Guessing the admin token (issue 9): single-use sign-in forms, limits, 429s and log lines."""

from __future__ import annotations

import re

from conftest import ADMIN_TOKEN
from flask import Flask
from flask.testing import FlaskClient
from test_admin_sessions import curl, login_form


def test_a_sign_in_form_carries_one_guess(app: Flask, client: FlaskClient) -> None:
    nonce, csrf = login_form(client)
    replayed = {"Cookie": f"undersign_login={nonce}"}

    wrong = client.post("/admin/login", data={"csrf": csrf, "token": "wrong-guess"})
    assert wrong.status_code == 401
    fresh = re.search(r'name="csrf" value="([^"]+)"', wrong.get_data(as_text=True))
    assert fresh is not None and fresh.group(1) != csrf  # the form comes back renewed
    assert "undersign_login=" in wrong.headers["Set-Cookie"]

    # The same form (field and cookie) a second time: refused before the token is looked
    # at, even with the right token.
    again = curl(app).post(
        "/admin/login", data={"csrf": csrf, "token": ADMIN_TOKEN}, headers=replayed
    )
    assert again.status_code == 400
    assert "expired" in again.get_data(as_text=True)
    assert "undersign_admin" not in again.headers.get("Set-Cookie", "")

    # The renewed form signs in, once.
    ok = client.post("/admin/login", data={"csrf": fresh.group(1), "token": ADMIN_TOKEN})
    assert ok.status_code == 303
    assert client.get("/admin").status_code == 200
    nonce2 = re.search(r"undersign_login=([^;]+)", wrong.headers["Set-Cookie"])
    assert nonce2 is not None
    reused = curl(app).post(
        "/admin/login",
        data={"csrf": fresh.group(1), "token": ADMIN_TOKEN},
        headers={"Cookie": f"undersign_login={nonce2.group(1)}"},
    )
    assert reused.status_code == 400


def test_a_sign_in_form_is_bound_to_its_browser(app: Flask) -> None:
    _, csrf = login_form(curl(app))
    other_nonce, _ = login_form(curl(app))
    for cookie in ("", f"undersign_login={other_nonce}"):
        response = curl(app).post(
            "/admin/login",
            data={"csrf": csrf, "token": ADMIN_TOKEN},
            headers={"Cookie": cookie} if cookie else {},
        )
        assert response.status_code == 400, cookie
        assert "undersign_admin" not in response.headers.get("Set-Cookie", "")
