"""Surge alerts through the app against a real Redis: the console's stats, /metrics, the
challenge's doubled cost and ``undersign watch``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from checks import clear_of_hour_end, endorsements_url, person
from click.testing import CliRunner
from conftest import ADMIN_TOKEN, ALLY, SECRET, STATEMENT
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import RedisServer
from test_metrics import sample

from widget.cli import main

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STATS = f"/api/v1/admin/statements/{STATEMENT}/stats"
CHALLENGE = f"/api/v1/statements/{STATEMENT}/challenge"
MakeApp = Callable[..., Flask]


def endorse(client: FlaskClient, n: int, **extra: Any) -> None:
    response = client.post(endorsements_url(), json=person(n, **extra), headers={"Origin": ALLY})
    assert response.status_code == 201, response.get_data(as_text=True)


def cost(client: FlaskClient) -> int:
    value: int = client.get(CHALLENGE).get_json()["parameters"]["cost"]
    return value


def usual_elsewhere(redis: Redis, source: str, per_hour: int) -> None:
    """Arrivals of ``source`` in each of the 24 hours before this one (a busy history)."""
    clear_of_hour_end()
    hour = int(time.time()) // 3600 * 3600
    for i in range(1, 25):
        redis.hset(f"us:{{{STATEMENT}}}:src:h:{hour - 3600 * i}", source, per_hour)


def test_statement_surge_doubles_the_cost_and_shows_everywhere(make_app: MakeApp) -> None:
    clear_of_hour_end()  # these endorsements stay in this hour, out of the usual rate
    app = make_app(SURGE_FLOOR=5, POW_COST=1000)
    client = app.test_client()
    assert cost(make_app(SURGE_FLOOR=5, POW_COST=1000).test_client()) == 1000
    quiet = client.get(STATS, headers=BEARER).get_json()["surge"]
    assert quiet["alert"] is False and quiet["sources"] == [] and quiet["countries"] == []
    metrics = client.get("/metrics", headers=BEARER).get_data(as_text=True)
    assert f'undersign_surging{{statement="{STATEMENT}"}} 0.0' in metrics

    for n in range(6):
        endorse(client, n, country=("RU", "RU", "KZ")[n % 3])
    fresh = make_app(SURGE_FLOOR=5, POW_COST=1000).test_client()
    assert cost(fresh) == 2000
    surge = fresh.get(STATS, headers=BEARER).get_json()["surge"]
    assert surge["alert"] is True and surge["surging"] is True
    assert surge["recent"] == 6 and surge["threshold"] == 5 and surge["floor"] == 5
    assert surge["factor"] == 5 and surge["window_seconds"] == 300
    assert surge["sources"] == [
        {"source": ALLY, "recent": 6, "usual": 0.0, "threshold": 5.0, "surging": True, "share": 1.0}
    ]
    assert surge["countries"] == [
        {"country": "RU", "recent": 4, "share": 0.667},
        {"country": "KZ", "recent": 2, "share": 0.333},
    ]
    metrics = fresh.get("/metrics", headers=BEARER).get_data(as_text=True)
    assert sample(metrics, "undersign_surging", f'statement="{STATEMENT}"') == 1
    # every statement has its gauge, quiet ones at 0
    assert metrics.count("undersign_surging{") == len(app.extensions["undersign.statements"].ids())
    # the first app answers from its cache for a few seconds, then sees the surge too
    deadline = time.monotonic() + 10
    while cost(client) != 2000:
        assert time.monotonic() < deadline
        time.sleep(0.25)


def test_a_surging_source_alerts_without_doubling_the_cost(
    make_app: MakeApp, redis_client: Redis
) -> None:
    usual_elsewhere(redis_client, "direct", 12_000)  # 1000 per 5 minutes is usual here
    client = make_app(SURGE_FLOOR=5, POW_COST=1000).test_client()
    for n in range(8):
        endorse(client, n)
    surge = client.get(STATS, headers=BEARER).get_json()["surge"]
    assert surge["alert"] is True and surge["surging"] is False
    assert surge["usual"] == 1000 and surge["threshold"] == 5000
    assert [(s["source"], s["surging"]) for s in surge["sources"]] == [(ALLY, True)]
    assert cost(client) == 1000
    metrics = client.get("/metrics", headers=BEARER).get_data(as_text=True)
    assert sample(metrics, "undersign_surging", f'statement="{STATEMENT}"') == 1


def test_metrics_answer_without_the_gauge_while_redis_is_down(
    make_app: MakeApp, redis_server: RedisServer
) -> None:
    client = make_app().test_client()
    redis_server.kill()
    try:
        response = client.get("/metrics", headers=BEARER)
        assert response.status_code == 200
        assert "undersign_surging" not in response.get_data(as_text=True)
        assert "undersign_endorsements_total" in response.get_data(as_text=True)
    finally:
        redis_server.start()


def test_watch_marks_surging_rows(make_app: MakeApp, redis_server: RedisServer) -> None:
    client = make_app().test_client()
    for n in range(6):
        endorse(client, n)
    env = {
        "WIDGET_REDIS_URL": redis_server.url,
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_SURGE_FLOOR": "5",
        "COLUMNS": "200",
    }
    result = CliRunner(env=env).invoke(main, ["watch", "--once"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    statement_line = next(line for line in lines if STATEMENT in line)
    ally_line = next(line for line in lines if ALLY in line)
    assert "Last 5 min" in result.output
    for line in (statement_line, ally_line):
        cells = [c.strip() for c in line.split("│")]
        assert "6" in cells and "▲ SURGING" in cells, line
    others = [line for line in lines if "│" in line and line not in (statement_line, ally_line)]
    assert not any("SURGING" in line for line in others)
    calm = {**env, "WIDGET_SURGE_FLOOR": "6"}
    result = CliRunner(env=calm).invoke(main, ["watch", "--once"], catch_exceptions=False)
    assert "SURGING" not in result.output
