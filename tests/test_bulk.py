"""Bulk moderation through the admin API against a real Redis: dry run, strike, undo, the
filters, the listing and every error."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from checks import assert_problem, endorsements_url, person, stable_timeline
from conftest import ADMIN_TOKEN, ALLY, STATEMENT
from flask.testing import FlaskClient
from redis import Redis
from test_admin import session_csrf, sign_in

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"
BULK = f"{ADMIN}/strike-bulk"


def seed(client: FlaskClient, n: int = 9) -> list[str]:
    """``n`` endorsements: through the ally when even, countries KZ, RU, none in turn."""
    for i in range(n):
        headers = {"Origin": ALLY} if i % 2 == 0 else {}
        body = person(i, country=("KZ", "RU", "")[i % 3])
        assert client.post(endorsements_url(), json=body, headers=headers).status_code == 201
    page = client.get(f"{ADMIN}/endorsements?limit=500", headers=BEARER).get_json()
    return [e["id"] for e in reversed(page["endorsements"])]


def bulk(client: FlaskClient, **body: Any) -> Any:
    return client.post(BULK, json=body, headers=BEARER)


def stats(client: FlaskClient) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"{ADMIN}/stats", headers=BEARER).get_json()
    return {
        **{k: data[k] for k in ("count", "by_source", "by_country")},
        "timeline": stable_timeline(data["timeline"]),
    }


def rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def test_dry_run_strike_and_undo(client: FlaskClient, redis_client: Redis) -> None:
    ids = seed(client)
    before = stats(client)
    dry = bulk(client, source=ALLY, country="kz", dry_run=True)
    assert dry.status_code == 200
    assert dry.get_json() == {"matched": 2, "upto": ids[-1]}  # entries 0 and 6
    assert stats(client) == before and redis_client.hlen(f"us:{{{STATEMENT}}}:struck") == 0

    done = bulk(client, source=ALLY, country="KZ", reason="farm", upto=dry.get_json()["upto"])
    assert done.status_code == 200
    body = done.get_json()
    assert set(body) == {"bulk_id", "struck", "count", "matched", "upto"}
    assert body["struck"] == 2 and body["matched"] == 2 and body["count"] == 7
    after = stats(client)
    assert after["by_country"] == {"KZ": 1, "RU": 3}  # entry 3 (direct, KZ) stays
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 7

    rows = client.get(f"{ADMIN}/endorsements", headers=BEARER).get_json()["endorsements"]
    marks = {r["id"]: r["struck"] for r in rows}
    for entry_id in (ids[0], ids[6]):
        assert marks[entry_id]["by"] == "token" and marks[entry_id]["reason"] == "farm"
        assert marks[entry_id]["bulk"] == body["bulk_id"]
        assert abs(marks[entry_id]["at"] - time.time()) < 10
    assert sum(1 for m in marks.values() if m) == 2
    export = client.get(f"{ADMIN}/export.jsonl", headers=BEARER).get_data(as_text=True)
    assert export.count('"struck": true') == 2

    undo = client.post(f"{ADMIN}/bulk/{body['bulk_id']}/undo", headers=BEARER)
    assert undo.status_code == 200
    assert undo.get_json() == {"bulk_id": body["bulk_id"], "restored": 2, "count": 9}
    assert stats(client) == before
    again = client.post(f"{ADMIN}/bulk/{body['bulk_id']}/undo", headers=BEARER)
    assert again.get_json() == {"bulk_id": body["bulk_id"], "restored": 0, "count": 9}


def test_time_filters_compare_minutes(client: FlaskClient) -> None:
    ids = seed(client, 4)
    minute = int(ids[0].split("-")[0])
    assert all(int(i.split("-")[0]) - minute < 120_000 for i in ids)  # two minutes at most
    # a time inside an entry's minute matches it, at both ends
    inside = rfc3339(minute + 59_000)
    assert bulk(client, since=inside, until=inside, dry_run=True).get_json()["matched"] == sum(
        1 for i in ids if i.startswith(str(minute))
    )
    assert bulk(client, since=rfc3339(minute - 60_000), dry_run=True).get_json()["matched"] == 4
    later = rfc3339(minute + 3_600_000)
    assert bulk(client, since=later, dry_run=True).get_json()["matched"] == 0
    assert bulk(client, until=rfc3339(minute - 1), dry_run=True).get_json()["matched"] == 0


def test_upto_leaves_later_endorsements_alone(client: FlaskClient) -> None:
    seed(client, 4)
    dry = bulk(client, source="direct", dry_run=True).get_json()
    assert dry["matched"] == 2
    for i in range(10, 13):  # three more direct ones arrive after the preview
        assert client.post(endorsements_url(), json=person(i)).status_code == 201
    done = bulk(client, source="direct", reason="x", upto=dry["upto"]).get_json()
    assert done["struck"] == 2 and done["count"] == 5
    assert bulk(client, source="direct", dry_run=True).get_json()["matched"] == 3


def test_an_empty_record_matches_nothing(client: FlaskClient) -> None:
    assert bulk(client, source=ALLY, dry_run=True).get_json() == {"matched": 0, "upto": None}
    done = bulk(client, source=ALLY, reason="x").get_json()
    assert done["struck"] == 0 and done["count"] == 0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"reason": "x"}, {"filters"}),
        ({"source": ALLY}, {"reason"}),
        ({"source": ALLY, "reason": "  "}, {"reason"}),
        ({"source": ALLY, "reason": "x" * 201}, {"reason"}),
        ({"source": ALLY, "reason": "line\nbreak"}, {"reason"}),
        ({"source": ALLY, "reason": "\ud800"}, {"reason"}),
        ({"source": "", "reason": "x"}, {"source"}),
        ({"source": 5, "reason": "x"}, {"source"}),
        ({"country": "XX", "reason": "x"}, {"country"}),
        ({"country": "Kazakhstan", "reason": "x"}, {"country"}),
        ({"since": "yesterday", "reason": "x"}, {"since"}),
        ({"until": "2026-01-01", "reason": "x"}, {"until"}),
        (
            {"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z", "reason": "x"},
            {"until"},
        ),
        ({"source": ALLY, "dry_run": "yes"}, {"dry_run"}),
        ({"source": ALLY, "reason": "x", "upto": "latest"}, {"upto"}),
        ({"source": ALLY, "reason": "x", "upto": "18446744073709551616-0"}, {"upto"}),
        ({"source": ALLY, "reason": "x", "upto": "01-0"}, {"upto"}),
        ([], {"body"}),
    ],
)
def test_bad_bulk_bodies_are_422_and_change_nothing(
    client: FlaskClient, redis_client: Redis, body: Any, fields: set[str]
) -> None:
    seed(client, 3)
    before = stats(client)
    problem = assert_problem(client.post(BULK, json=body, headers=BEARER), 422)
    assert problem["type"].endswith("invalid-bulk-strike")
    assert set(problem["errors"]) == fields
    assert stats(client) == before
    assert not list(redis_client.scan_iter(f"us:{{{STATEMENT}}}:bulk:*"))


def test_bulk_errors_404_415_400(client: FlaskClient) -> None:
    problem = assert_problem(
        client.post(
            "/api/v1/admin/statements/nope/strike-bulk", json={"source": ALLY}, headers=BEARER
        ),
        404,
    )
    assert problem["type"].endswith("statement-not-found")
    for bulk_id in ("0123456789ab", "x", "ABCDEF012345"):
        missing = client.post(f"{ADMIN}/bulk/{bulk_id}/undo", headers=BEARER)
        assert assert_problem(missing, 404)["type"].endswith("bulk-not-found")
    assert_problem(client.post(BULK, data="source=x", headers=BEARER), 415)
    assert_problem(
        client.post(BULK, data="{", headers=BEARER, content_type="application/json"), 400
    )


def test_console_bulk_needs_the_csrf_header(client: FlaskClient) -> None:
    seed(client, 4)
    sign_in(client)
    body = {"source": "direct", "reason": "spam"}
    assert client.post(BULK, json=body).status_code == 401
    assert stats(client)["count"] == 4
    csrf = {"X-CSRF-Token": session_csrf(client)}
    done = client.post(BULK, json=body, headers=csrf)
    assert done.status_code == 200 and done.get_json()["struck"] == 2
    rows = client.get(f"{ADMIN}/endorsements").get_json()["endorsements"]
    assert {r["struck"]["by"] for r in rows if r["struck"]} == {"console"}
    undo_url = f"{ADMIN}/bulk/{done.get_json()['bulk_id']}/undo"
    assert client.post(undo_url).status_code == 401
    assert client.post(undo_url, headers=csrf).get_json()["restored"] == 2


def test_bulk_while_the_log_is_prepared_is_503_and_changes_nothing(
    client: FlaskClient, redis_client: Redis
) -> None:
    seed(client, 3)
    before = stats(client)
    redis_client.hdel(f"us:{{{STATEMENT}}}:state", "tlog")  # as during an upgrade
    assert bulk(client, source=ALLY, dry_run=True).get_json()["matched"] == 2  # reads only
    problem = assert_problem(bulk(client, source=ALLY, reason="x"), 503)
    assert problem["type"].endswith("log-preparing")
    assert stats(client) == before
    assert not list(redis_client.scan_iter(f"us:{{{STATEMENT}}}:bulk:*"))
