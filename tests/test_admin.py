"""Operator console and admin API: auth on every route, CSRF, headers, contracts, privacy."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from checks import seen_hmacs
from conftest import ADMIN_TOKEN, ALLY, STATEMENT
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
EMAILS = [f"Person.{i}@Example.org" for i in range(5)]


def endorse(client: FlaskClient, i: int, **extra: Any) -> dict[str, Any]:
    body = {"name": f"Person {i}", "email": EMAILS[i], "consent": True, "country": "KZ"}
    body |= extra
    response = client.post(f"/api/v1/statements/{STATEMENT}/endorsements", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    data: dict[str, Any] = response.get_json()
    return data


def seed(client: FlaskClient) -> list[str]:
    endorse(client, 0, country="DE")
    endorse(client, 1)
    client.post(
        f"/api/v1/statements/{STATEMENT}/endorsements",
        json={"name": "Person 2", "email": EMAILS[2], "consent": True, "country": "KZ"},
        headers={"Origin": ALLY},
    )
    endorse(client, 3, country="")
    page = client.get(f"{ADMIN}/endorsements", headers=BEARER).get_json()
    return [e["id"] for e in page["endorsements"]]


def sign_in(client: FlaskClient, token: str = ADMIN_TOKEN, next_url: str = "") -> Any:
    form = client.get("/admin/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    data = {"csrf": csrf.group(1), "token": token}
    if next_url:
        data["next"] = next_url
    return client.post("/admin/login", data=data)


def session_csrf(client: FlaskClient) -> str:
    """The signed-in console's CSRF token, as its pages hand it to the browser."""
    page = client.get("/admin").get_data(as_text=True)
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def set_cookies(response: Any) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def session_cookie_value(response: Any) -> str:
    """The session id the sign-in response gave (the same under both paths)."""
    values = {
        c.split(";", 1)[0].split("=", 1)[1]
        for c in set_cookies(response)
        if c.startswith("undersign_admin=")
    }
    assert len(values) == 1, set_cookies(response)
    return values.pop()


# -- auth on every route -----------------------------------------------------------------


def admin_rules(app: Flask) -> list[tuple[str, str]]:
    """Every (method, url) under /admin and /api/v1/admin, params filled in."""
    found = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(("/admin", "/api/v1/admin")):
            continue
        values = {}
        for arg in rule.arguments:
            values[arg] = STATEMENT if arg == "statement_id" else "1700000000000-0"
        url = rule.rule
        for arg, value in values.items():
            url = re.sub(rf"<(?:[^:<>]+:)?{arg}>", value, url)
        for method in sorted(rule.methods or ()):
            found.append((method, url))
    return found


def test_every_admin_route_refuses_without_credentials(app: Flask, client: FlaskClient) -> None:
    rules = admin_rules(app)
    urls = {url for _, url in rules}
    # the promised routes are all there (new ones are covered automatically)
    for path in (
        "/admin",
        "/admin/login",
        "/admin/logout",
        f"/admin/s/{STATEMENT}",
        "/api/v1/admin/statements",
        f"{ADMIN}/stats",
        f"{ADMIN}/endorsements",
        f"{ADMIN}/endorsements/1700000000000-0/strike",
        f"{ADMIN}/endorsements/1700000000000-0/unstrike",
        f"{ADMIN}/export.csv",
        f"{ADMIN}/export.jsonl",
        f"{ADMIN}/open",
        f"{ADMIN}/close",
        f"{ADMIN}/strike-bulk",
        f"{ADMIN}/bulk/1700000000000-0/undo",
        "/api/v1/admin/blocks",
        "/api/v1/admin/blocks/1700000000000-0",
        "/admin/blocks",
    ):
        assert path in urls, path
    checked = 0
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": ADMIN_TOKEN}):
        for method, url in rules:
            if url == "/admin/login":
                continue  # the sign-in form itself, tested below
            response = client.open(url, method=method, headers=headers)
            where = f"{method} {url} {headers}"
            if url.startswith("/api/"):
                assert response.status_code == 401, where
                assert response.mimetype == "application/problem+json", where
                assert response.headers["WWW-Authenticate"].startswith("Bearer"), where
                if method != "HEAD":
                    assert response.get_json()["status"] == 401, where
            else:
                assert response.status_code == 302, where
                assert response.headers["Location"].startswith("/admin/login?next="), where
            assert response.headers["X-Frame-Options"] == "DENY", where
            assert response.headers["Content-Security-Policy"] == POLICY, where
            checked += 1
    assert checked >= 3 * 18


def test_no_admin_token_configured_refuses_everything(make_app: Callable[..., Flask]) -> None:
    app = make_app(ADMIN_TOKEN="")
    client = app.test_client()
    for method, url in admin_rules(app):
        if url.startswith("/api/"):
            response = client.open(url, method=method, headers={"Authorization": "Bearer "})
            assert response.status_code == 401, (method, url)
    response = sign_in(client, token="")
    assert response.status_code == 401
    assert "no admin token is configured" in response.get_data(as_text=True)
    assert client.get("/admin").status_code == 302


def test_bearer_token_opens_the_api(client: FlaskClient) -> None:
    seed(client)
    response = client.get("/api/v1/admin/statements", headers=BEARER)
    assert response.status_code == 200
    [item] = [s for s in response.get_json()["statements"] if s["id"] == STATEMENT]
    assert item["count"] == 4 and item["goal"] > 0 and item["open"] is True
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "no-referrer"


# -- console sign-in, session, CSRF --------------------------------------------------------


def test_sign_in_and_out(client: FlaskClient) -> None:
    page = client.get(f"/admin/s/{STATEMENT}")
    assert page.status_code == 302
    assert page.headers["Location"] == f"/admin/login?next=/admin/s/{STATEMENT}"
    login = client.get(page.headers["Location"])
    assert login.status_code == 200 and 'name="token"' in login.get_data(as_text=True)
    assert login.headers["Content-Security-Policy"] == POLICY

    wrong = sign_in(client, token="not-the-token")
    assert wrong.status_code == 401
    assert client.get("/admin").status_code == 302

    ok = sign_in(client, next_url=f"/admin/s/{STATEMENT}")
    assert ok.status_code == 303 and ok.headers["Location"] == f"/admin/s/{STATEMENT}"
    cookies = [c for c in set_cookies(ok) if c.startswith("undersign_admin=")]
    assert sorted(re.search(r"Path=([^;]+)", c).group(1) for c in cookies) == [  # type: ignore[union-attr]
        "/admin",
        "/api/v1/admin",
    ]
    for cookie in cookies:
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Expires=" in cookie
        assert "Secure" not in cookie  # plain http in tests
    dashboard = client.get(f"/admin/s/{STATEMENT}")
    assert dashboard.status_code == 200
    html = dashboard.get_data(as_text=True)
    assert "<script>" not in html and "style=" not in html
    assert client.get("/admin").status_code == 200
    for page in ("/admin", "/admin/blocks"):
        html = client.get(page).get_data(as_text=True)
        assert "<script>" not in html and "style=" not in html, page
        assert 'href="/admin/blocks"' in html, page  # the console's header links the Blocks page
    # the session also opens the API for reads
    assert client.get(f"{ADMIN}/stats").status_code == 200

    csrf = session_csrf(client)
    assert client.post("/admin/logout", data={}).status_code == 302  # no CSRF field: refused
    assert client.get("/admin").status_code == 200
    out = client.post("/admin/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert client.get("/admin").status_code == 302
    assert client.get(f"{ADMIN}/stats").status_code == 401


def test_secure_cookie_over_https(client: FlaskClient) -> None:
    form = client.get("/admin/login", base_url="https://console.example")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.get_data(as_text=True))
    assert csrf is not None
    response = client.post(
        "/admin/login",
        data={"csrf": csrf.group(1), "token": ADMIN_TOKEN},
        base_url="https://console.example",
    )
    assert response.status_code == 303
    assert len(set_cookies(response)) == 3  # the session under two paths, the form's cleared
    assert all("Secure" in cookie for cookie in set_cookies(response))


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/admin",
        "//evil.example/admin",
        "/\\evil.example",
        "/s/x",
        "javascript:x",
    ],
)
def test_sign_in_next_only_relative_admin_paths(client: FlaskClient, target: str) -> None:
    response = sign_in(client, next_url=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"


def test_login_form_needs_its_csrf_field(client: FlaskClient) -> None:
    client.get("/admin/login")
    response = client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 400
    assert client.get("/admin").status_code == 302


def test_cookie_post_needs_csrf_header(client: FlaskClient) -> None:
    ids = seed(client)
    sign_in(client)
    for url in (f"{ADMIN}/endorsements/{ids[0]}/strike", f"{ADMIN}/close"):
        refused = client.post(url)
        assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
        wrong = client.post(url, headers={"X-CSRF-Token": "guess"})
        assert wrong.status_code == 401
    assert client.get(f"{ADMIN}/stats").get_json()["count"] == 4
    assert client.get(f"{ADMIN}/stats").get_json()["open"] is True
    csrf = {"X-CSRF-Token": session_csrf(client)}
    struck = client.post(f"{ADMIN}/endorsements/{ids[0]}/strike", headers=csrf)
    assert struck.status_code == 200 and struck.get_json()["count"] == 3
    row = client.get(f"{ADMIN}/endorsements").get_json()["endorsements"][0]
    assert row["struck"]["by"] == "console"


# -- contracts -----------------------------------------------------------------------------


def test_stats_contract_and_strike_unstrike(client: FlaskClient) -> None:
    ids = seed(client)
    stats = client.get(f"{ADMIN}/stats", headers=BEARER).get_json()
    assert set(stats) >= {"id", "count", "goal", "open", "by_source", "by_country", "timeline"}
    assert stats["id"] == STATEMENT and stats["count"] == 4
    assert stats["by_source"] == {"direct": 3, ALLY: 1}
    assert stats["by_country"] == {"KZ": 2, "DE": 1}
    assert len(stats["timeline"]["minute"]) == 60 and len(stats["timeline"]["hour"]) == 72
    assert sum(n for _, n in stats["timeline"]["day"]) == 4

    newest = ids[0]  # Person 3, no country, direct
    ally_entry = ids[1]  # Person 2 via ALLY, KZ
    response = client.post(
        f"{ADMIN}/endorsements/{ally_entry}/strike", json={"reason": "spam"}, headers=BEARER
    )
    assert response.status_code == 200
    assert response.get_json() == {"id": ally_entry, "struck": True, "count": 3}
    again = client.post(f"{ADMIN}/endorsements/{ally_entry}/strike", headers=BEARER)
    assert again.get_json()["count"] == 3
    after = client.get(f"{ADMIN}/stats", headers=BEARER).get_json()
    assert after["by_source"] == {"direct": 3}
    assert after["by_country"] == {"KZ": 1, "DE": 1}
    assert sum(n for _, n in after["timeline"]["minute"]) == 3
    public = client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()
    assert public["count"] == 3

    rows = client.get(f"{ADMIN}/endorsements", headers=BEARER).get_json()["endorsements"]
    marked = {r["id"]: r["struck"] for r in rows}
    assert marked[ally_entry]["by"] == "token" and marked[ally_entry]["reason"] == "spam"
    assert marked[newest] is None

    back = client.post(f"{ADMIN}/endorsements/{ally_entry}/unstrike", headers=BEARER)
    assert back.get_json() == {"id": ally_entry, "struck": False, "count": 4}
    restored = client.get(f"{ADMIN}/stats", headers=BEARER).get_json()
    assert restored["by_source"] == stats["by_source"]
    assert restored["by_country"] == stats["by_country"]

    for action in ("strike", "unstrike"):
        for eid in ("1-1", "nonsense"):
            missing = client.post(f"{ADMIN}/endorsements/{eid}/{action}", headers=BEARER)
            assert missing.status_code == 404
            assert missing.get_json()["type"].endswith("endorsement-not-found")
    assert client.get("/api/v1/admin/statements/nope/stats", headers=BEARER).status_code == 404


def test_endorsements_paging(client: FlaskClient) -> None:
    ids = seed(client)
    first = client.get(f"{ADMIN}/endorsements?limit=3", headers=BEARER).get_json()
    assert [e["id"] for e in first["endorsements"]] == ids[:3]
    assert first["next_cursor"] == ids[2]
    entry = first["endorsements"][0]
    assert set(entry) == {"id", "time", "name", "country", "source", "public", "struck"}
    assert entry["name"] == "Person 3"
    second = client.get(
        f"{ADMIN}/endorsements?limit=3&cursor={first['next_cursor']}", headers=BEARER
    ).get_json()
    assert [e["id"] for e in second["endorsements"]] == ids[3:]
    assert second["next_cursor"] is None
    for bad in ("limit=0", "limit=x", "limit=100000", "cursor=bad"):
        response = client.get(f"{ADMIN}/endorsements?{bad}", headers=BEARER)
        assert response.status_code == 400, bad
    # Ids Redis would refuse are no question for Redis: 400, not a false "store down" 503.
    for bad in ("00-0", "1-01", "18446744073709551616-0", "1-18446744073709551616"):
        response = client.get(f"{ADMIN}/endorsements?cursor={bad}", headers=BEARER)
        assert response.status_code == 400, (bad, response.get_json())
        assert response.get_json()["type"].endswith("bad-cursor")
    oldest = client.get(f"{ADMIN}/endorsements?cursor=0-0", headers=BEARER).get_json()
    assert oldest == {"endorsements": [], "next_cursor": None}
    largest = client.get(f"{ADMIN}/endorsements?cursor=18446744073709551615-0", headers=BEARER)
    assert [e["id"] for e in largest.get_json()["endorsements"]] == ids


def test_strike_refuses_a_body_it_cannot_read_and_strikes_nothing(client: FlaskClient) -> None:
    ids = seed(client)
    url = f"{ADMIN}/endorsements/{ids[0]}/strike"
    refused = {
        "text/plain": (client.post(url, data="spam", headers=BEARER), 415),
        "malformed": (
            client.post(url, data="{not json", content_type="application/json", headers=BEARER),
            400,
        ),
        "NaN": (
            client.post(
                url, data='{"reason": NaN}', content_type="application/json", headers=BEARER
            ),
            400,
        ),
        "array": (client.post(url, json=[1], headers=BEARER), 422),
        "number": (client.post(url, json={"reason": 5}, headers=BEARER), 422),
        "too long": (client.post(url, json={"reason": "x" * 201}, headers=BEARER), 422),
        "control": (client.post(url, json={"reason": "a\nb"}, headers=BEARER), 422),
    }
    for case, (response, status) in refused.items():
        assert response.status_code == status, (case, response.get_json())
        assert response.mimetype == "application/problem+json", case
    assert refused["array"][0].get_json()["errors"] == {
        "body": 'Send a JSON object: {"reason": "..."}.'
    }
    assert set(refused["too long"][0].get_json()["errors"]) == {"reason"}
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 4
    rows = client.get(f"{ADMIN}/endorsements", headers=BEARER).get_json()["endorsements"]
    assert all(r["struck"] is None for r in rows)

    struck = client.post(url, json={"reason": None}, headers=BEARER)  # null: no reason
    assert struck.status_code == 200 and struck.get_json()["count"] == 3
    longest = client.post(
        f"{ADMIN}/endorsements/{ids[1]}/strike", json={"reason": "y" * 200}, headers=BEARER
    )
    assert longest.status_code == 200
    rows = client.get(f"{ADMIN}/endorsements", headers=BEARER).get_json()["endorsements"]
    assert {r["id"]: r["struck"]["reason"] for r in rows if r["struck"]} == {
        ids[0]: "",
        ids[1]: "y" * 200,
    }
    missing = client.post(f"{ADMIN}/endorsements/18446744073709551616-0/strike", headers=BEARER)
    assert missing.status_code == 404


def test_open_close_and_public_409(client: FlaskClient) -> None:
    seed(client)
    closed = client.post(f"{ADMIN}/close", headers=BEARER)
    assert closed.status_code == 200 and closed.get_json() == {"id": STATEMENT, "open": False}
    body = {"name": "Late", "email": "late@example.org", "consent": True}
    refused = client.post(f"/api/v1/statements/{STATEMENT}/endorsements", json=body)
    assert refused.status_code == 409
    assert client.get(f"{ADMIN}/stats", headers=BEARER).get_json()["open"] is False
    reopened = client.post(f"{ADMIN}/open", headers=BEARER)
    assert reopened.get_json() == {"id": STATEMENT, "open": True}
    again = client.post(f"/api/v1/statements/{STATEMENT}/endorsements", json=body)
    assert again.status_code == 201


def test_exports_have_rows_and_no_secrets(client: FlaskClient, redis_client: Redis) -> None:
    ids = seed(client)
    client.post(f"{ADMIN}/endorsements/{ids[1]}/strike", headers=BEARER)
    hmacs = seen_hmacs(redis_client)
    assert len(hmacs) == 4 and all(len(h) >= 32 for h in hmacs)
    forbidden = [e.lower() for e in EMAILS] + hmacs + ["127.0.0.1"]

    response = client.get(f"{ADMIN}/export.csv", headers=BEARER)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert ".csv" in response.headers["Content-Disposition"]
    text = response.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == list(reversed(ids))
    assert {r["name"] for r in rows} == {"Person 0", "Person 1", "Person 2", "Person 3"}
    assert [r["struck"] for r in rows].count("True") == 1
    assert next(r for r in rows if r["id"] == ids[1])["struck_by"] == "token"

    jsonl = client.get(f"{ADMIN}/export.jsonl", headers=BEARER)
    assert jsonl.status_code == 200 and jsonl.mimetype == "application/x-ndjson"
    assert "attachment" in jsonl.headers["Content-Disposition"]
    records = [json.loads(line) for line in jsonl.get_data(as_text=True).splitlines()]
    assert [r["id"] for r in records] == list(reversed(ids))

    for body in (text, jsonl.get_data(as_text=True)):
        lowered = body.lower()
        for secret in forbidden:
            assert secret.lower() not in lowered
        assert "@" not in body


@pytest.mark.parametrize(
    "target", ["/admin\n", "/admin/s/x\r\nSet-Cookie: a=b", "/admin\t", "/admin\x00", "/admin\x7f"]
)
def test_sign_in_next_with_control_characters_goes_to_the_overview(
    client: FlaskClient, target: str
) -> None:
    response = sign_in(client, next_url=target)
    assert response.status_code == 303
    assert response.headers["Location"] == "/admin"
    assert "a=b" not in response.headers.get("Set-Cookie", "")
