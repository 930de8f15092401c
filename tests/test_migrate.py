"""`undersign migrate`: a single Redis copied into a real Redis Cluster, verified, and the
service on the cluster sees exactly what it saw before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from checks import STATEMENT, endorsements_url, person, stable_timeline
from click.testing import CliRunner
from conftest import ADMIN_TOKEN, base_config
from servers import LocalCluster, RedisServer

from widget import create_app
from widget.cli import main

pytestmark = pytest.mark.server

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def single(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "single")
    server.folder.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    node = LocalCluster(tmp_path / "cluster")
    node.start()
    try:
        yield node
    finally:
        node.stop()


def snapshot(app: Any) -> dict[str, Any]:
    """What the service shows of the statement: count, stats, record, log lines."""
    client = app.test_client()
    admin = f"/api/v1/admin/statements/{STATEMENT}"
    store = app.extensions["undersign.store"]
    stats = client.get(f"{admin}/stats", headers=BEARER).get_json()
    stats.pop("surge", None)
    stats["timeline"] = stable_timeline(stats["timeline"])
    return {
        "count": client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"],
        "stats": stats,
        "record": client.get(f"{admin}/endorsements?limit=100", headers=BEARER).get_json(),
        "log": store.log_lines(STATEMENT, 0, 1000),
        "blocks": sorted(store.blocks()),
    }


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["migrate", *args], catch_exceptions=False)


def test_migrate_a_single_redis_into_a_cluster(single: RedisServer, cluster: LocalCluster) -> None:
    before_app = create_app(base_config(single, REDIS_CLUSTER=False))  # type: ignore[arg-type]
    try:
        client = before_app.test_client()
        receipts = []
        for n in range(30):
            reply = client.post(endorsements_url(), json=person(n, country="KZ", public=True))
            assert reply.status_code == 201
            receipts.append(reply.get_json()["receipt"]["secret"])
        admin = f"/api/v1/admin/statements/{STATEMENT}"
        first = client.get(f"{admin}/endorsements", headers=BEARER).get_json()["endorsements"][0]
        struck = client.post(f"{admin}/endorsements/{first['id']}/strike", headers=BEARER, json={})
        assert struck.status_code == 200
        withdrawn = client.post(
            f"/api/v1/statements/{STATEMENT}/withdrawals", json={"secret": receipts[3]}
        )
        assert withdrawn.status_code == 200
        blocked = client.post(
            "/api/v1/admin/blocks", json={"email_domain": "spam.example"}, headers=BEARER
        )
        assert blocked.status_code in (200, 201)
        before_app.extensions["undersign.sealer"].seal_all(STATEMENT)
        before = snapshot(before_app)
    finally:
        before_app.extensions["undersign.live"].stop()
    assert before["count"] == 28

    result = run("--from", single.url, "--to", cluster.url, "--cluster-to")
    assert result.exit_code == 0, result.output
    assert f"{STATEMENT}: " in result.output and ": ok" in result.output
    assert "count 28 -> 28" in result.output
    assert "every count and log length matches" in result.output

    after_app = create_app(base_config(single, REDIS_URL=cluster.url, REDIS_CLUSTER=True))  # type: ignore[arg-type]
    try:
        assert snapshot(after_app) == before
        # It goes on from there: a new endorsement, a known one is a duplicate.
        client = after_app.test_client()
        assert client.post(endorsements_url(), json=person(1)).get_json()["status"] == "duplicate"
        assert client.post(endorsements_url(), json=person(99)).get_json()["count"] == 29
    finally:
        after_app.extensions["undersign.live"].stop()

    # Again: the target holds the statement now; refused, nothing changed...
    again = run("--from", single.url, "--to", cluster.url, "--cluster-to")
    assert again.exit_code != 0
    assert "already holds keys of dongelek-ystel" in again.output and "--force" in again.output
    assert int(cluster.client().get(f"us:{{{STATEMENT}}}:count")) == 29
    # ... unless forced: the source's keys replace the target's.
    forced = run("--from", single.url, "--to", cluster.url, "--cluster-to", "--force")
    assert forced.exit_code == 0, forced.output
    assert int(cluster.client().get(f"us:{{{STATEMENT}}}:count")) == 28
