"""/metrics: protected by the operator token, counts outcomes, aggregates gunicorn workers."""

from __future__ import annotations

import re

import requests
from conftest import ADMIN_TOKEN, ALLY, STATEMENT
from prometheus_client import CONTENT_TYPE_LATEST

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ENDORSE = f"/api/v1/statements/{STATEMENT}/endorsements"


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one sample line, e.g. sample(t, "x_total", 'outcome="counted",reason=""')."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_needs_the_token(client):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        response = client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert response.content_type == "application/problem+json"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    metrics = client.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"] == CONTENT_TYPE_LATEST  # one charset, not two


def test_metrics_bearer_scheme_is_case_insensitive(client):
    # RFC 9110 section 11.1: the scheme is case-insensitive, as on the admin API.
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        for path in ("/metrics", "/api/v1/admin/statements"):
            headers = {"Authorization": f"{scheme} {ADMIN_TOKEN}"}
            assert client.get(path, headers=headers).status_code == 200, (scheme, path)
            wrong = {"Authorization": f"{scheme} {ADMIN_TOKEN[:-1]}x"}
            assert client.get(path, headers=wrong).status_code == 401, (scheme, path)
    for header in (f"Basic {ADMIN_TOKEN}", f"Bearer{ADMIN_TOKEN}", f"{ADMIN_TOKEN}"):
        assert client.get("/metrics", headers={"Authorization": header}).status_code == 401


def test_metrics_public_when_configured(make_app):
    app = make_app(METRICS_PUBLIC=True)
    assert app.test_client().get("/metrics").status_code == 200


def test_metrics_refused_when_no_token_is_configured(make_app):
    app = make_app(ADMIN_TOKEN="")
    response = app.test_client().get("/metrics", headers={"Authorization": "Bearer "})
    assert response.status_code == 401


def test_outcomes_are_counted_by_reason(client):
    before = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    body = {"name": "Ana", "email": "ana@example.org", "consent": True}
    assert client.post(ENDORSE, json=body).status_code == 201
    assert client.post(ENDORSE, json=body).status_code == 200
    assert client.post(ENDORSE, json={**body, "consent": False}).status_code == 422
    assert client.post(ENDORSE, data="{", content_type="application/json").status_code == 400
    after = client.get("/metrics", headers=AUTH).get_data(as_text=True)

    def delta(labels: str) -> float:
        name = "undersign_endorsements_total"
        return sample(after, name, labels) - sample(before, name, labels)

    assert delta('outcome="counted",reason=""') == 1
    assert delta('outcome="duplicate",reason=""') == 1
    assert delta('outcome="rejected",reason="invalid"') == 1
    assert delta('outcome="rejected",reason="malformed"') == 1
    latency = 'endpoint="api.endorse",method="POST"'
    assert sample(after, "undersign_request_duration_seconds_count", latency) >= 4
    assert "ana@example.org" not in after


def test_rate_limited_and_redis_errors(make_app, redis_server):
    app = make_app(ENDORSE_LIMIT="1/minute")
    client = app.test_client()
    before = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    body = {"name": "Ana", "email": "ana@example.org", "consent": True}
    client.post(ENDORSE, json=body)
    assert client.post(ENDORSE, json=body).status_code == 429
    redis_server.kill()
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").status_code == 503
    redis_server.start()
    after = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert (
        sample(after, "undersign_rate_limited_total")
        - sample(before, "undersign_rate_limited_total")
        == 1
    )
    assert (
        sample(after, "undersign_redis_errors_total")
        - sample(before, "undersign_redis_errors_total")
        == 1
    )


def test_gunicorn_workers_are_aggregated(start_gunicorn):
    server = start_gunicorn(workers=2)
    session = requests.Session()
    for i in range(40):
        response = session.post(
            server.url + ENDORSE,
            json={"name": "N", "email": f"p{i}@example.org", "consent": True},
            headers={"Origin": ALLY, "Connection": "close"},
            timeout=5,
        )
        assert response.status_code == 201
    text = requests.get(server.url + "/metrics", headers=AUTH, timeout=5).text
    assert sample(text, "undersign_endorsements_total", 'outcome="counted",reason=""') == 40
