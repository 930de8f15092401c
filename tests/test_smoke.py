"""The service answers on real Redis, in-process and under gunicorn."""

import requests
from checks import assert_counted
from conftest import STATEMENT


def test_statement_list_has_the_bundled_statement(client):
    body = client.get("/api/v1/statements").get_json()
    assert [s["id"] for s in body["statements"]] == [STATEMENT]
    assert body["statements"][0]["count"] == 0


def test_gunicorn_serves_and_counts(start_gunicorn):
    server = start_gunicorn(workers=2)
    url = f"{server.url}/api/v1/statements/{STATEMENT}/endorsements"
    response = requests.post(
        url, json={"name": "Ana", "email": "ana@example.org", "consent": True}, timeout=5
    )
    assert response.status_code == 201, server.log()
    assert_counted(response.json(), 1)
