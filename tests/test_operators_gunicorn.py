"""Issue 10's operator acceptance against real Redis and real gunicorn (several workers):
a blocked network gets 403 and unblocking restores it; a surge fires and clears under
synthetic load; a bulk strike of 1,000 matches its dry run, its undo restores every count
and breakdown to the byte, and endorsements arriving meanwhile are all counted."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from checks import STATEMENT, clear_of_hour_end, endorsements_url, person, store_state
from conftest import ADMIN_TOKEN, ALLY
from redis import Redis
from servers import Gunicorn
from test_metrics import sample
from test_store_operators import raw_state, tally

from widget.store import Store

pytestmark = pytest.mark.server

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"
COUNTRIES = ("KZ", "RU", "DE", "FR", "")


def post(service: Gunicorn, body: dict[str, Any], **headers: str) -> requests.Response:
    return requests.post(service.url + endorsements_url(), json=body, headers=headers, timeout=10)


def admin(service: Gunicorn, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, service.url + path, headers=BEARER, timeout=30, **kwargs)


def metrics(service: Gunicorn) -> str:
    return admin(service, "GET", "/metrics").text


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# -- block lists ----------------------------------------------------------------------------


def test_a_blocked_network_gets_403_and_unblocking_restores_it(
    start_gunicorn: Callable[..., Gunicorn], redis_client: Redis
) -> None:
    service = start_gunicorn(workers=3, WIDGET_TRUSTED_PROXIES="1")
    serial = itertools.count()

    def from_network(host: int) -> requests.Response:
        n = next(serial)
        return post(service, person(f"b{n}"), **{"X-Forwarded-For": f"203.0.113.{host}"})

    assert from_network(5).status_code == 201
    made = admin(service, "POST", "/api/v1/admin/blocks", json={"network": "203.0.113.0/24"})
    assert made.status_code == 201
    # every worker applies it within 2 s (until then one may still count a request: the
    # state to compare with is taken once all have); then every request is refused
    eventually(lambda: from_network(9).status_code == 403, 5, "the block")
    time.sleep(2.1)
    before = store_state(redis_client)
    refused = [from_network(10 + i) for i in range(30)]
    assert {r.status_code for r in refused} == {403}
    assert all(r.json()["type"] == "urn:undersign:problem:blocked" for r in refused)
    assert all(r.headers["Content-Type"].startswith("application/problem+json") for r in refused)
    state = store_state(redis_client)
    assert state.count == before.count and state.log_length == before.log_length
    blocked = sample(
        metrics(service), "undersign_endorsements_total", 'outcome="rejected",reason="blocked"'
    )
    assert blocked >= 31  # aggregated across the workers
    assert post(service, person("other"), **{"X-Forwarded-For": "198.51.100.1"}).status_code == 201

    gone = admin(service, "DELETE", f"/api/v1/admin/blocks/{made.json()['id']}")
    assert gone.status_code == 200
    time.sleep(2.1)
    accepted = [from_network(100 + i) for i in range(30)]
    assert {r.status_code for r in accepted} == {201}
    assert store_state(redis_client).count == before.count + 31


# -- surge alerts ---------------------------------------------------------------------------


def surging_metric(service: Gunicorn) -> float:
    return sample(metrics(service), "undersign_surging", f'statement="{STATEMENT}"')


def costs(service: Gunicorn, n: int = 12) -> set[int]:
    """The proof-of-work costs of ``n`` fresh challenges (spread over the workers)."""
    url = f"{service.url}/api/v1/statements/{STATEMENT}/challenge"
    found = set()
    for i in range(n):
        headers = {"X-Forwarded-For": f"192.0.2.{i + 1}", "Connection": "close"}
        found.add(requests.get(url, headers=headers, timeout=5).json()["parameters"]["cost"])
    return found


def test_a_surge_fires_and_clears_under_synthetic_load(
    start_gunicorn: Callable[..., Gunicorn], redis_client: Redis
) -> None:
    service = start_gunicorn(
        workers=3,
        WIDGET_TRUSTED_PROXIES="1",
        WIDGET_SURGE_FLOOR="20",
        WIDGET_POW_COST="1000",
        WIDGET_CHALLENGE_LIMIT="100000/minute",
    )
    # A usual day: 24 endorsements an hour through the hosted page (2 per 5 minutes).
    clear_of_hour_end(margin=120)  # the load below takes a while
    hour = int(time.time()) // 3600 * 3600
    for i in range(1, 25):
        redis_client.hset(f"us:{{{STATEMENT}}}:src:h:{hour - 3600 * i}", "direct", 24)
    for n in range(8):  # an ordinary trickle now
        assert post(service, person(f"calm{n}"), **{"X-Forwarded-For": f"198.51.100.{n}"}).ok
    assert surging_metric(service) == 0
    assert costs(service) == {1000}

    # Synthetic load: 60 endorsements through one ally at once, from many addresses.
    def endorse(n: int) -> int:
        headers = {"Origin": ALLY, "X-Forwarded-For": f"10.{n // 250}.{n % 250}.1"}
        return post(service, person(f"load{n}", country="RU"), **headers).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(endorse, range(60))) == {201}
    assert surging_metric(service) == 1
    stats = admin(service, "GET", f"{ADMIN}/stats").json()["surge"]
    assert stats["surging"] is True and stats["recent"] == 68 and stats["usual"] == 2
    assert stats["threshold"] == 20
    assert [(s["source"], s["recent"], s["surging"]) for s in stats["sources"]] == [
        (ALLY, 60, True),
        ("direct", 8, False),
    ]
    assert stats["countries"][0] == {"country": "RU", "recent": 60, "share": 0.882}
    # every worker doubles the cost within its 5 s cache
    eventually(lambda: costs(service) == {2000}, 15, "the doubled cost on every worker")

    # Time moves on: the load's minutes leave the 5-minute window (as they do 5 to 6 minutes
    # later; here their buckets are moved ten minutes back).
    for key in list(redis_client.scan_iter(f"us:{{{STATEMENT}}}:src:m:*")):
        start = int(key.decode().rsplit(":", 1)[1])
        redis_client.rename(key, f"us:{{{STATEMENT}}}:src:m:{start - 600}")
    assert surging_metric(service) == 0
    assert admin(service, "GET", f"{ADMIN}/stats").json()["surge"]["alert"] is False
    eventually(lambda: costs(service) == {1000}, 15, "the normal cost on every worker")


# -- bulk moderation ------------------------------------------------------------------------


@pytest.fixture
def service_for_bulk(start_gunicorn: Callable[..., Gunicorn]) -> Gunicorn:
    return start_gunicorn(workers=3)


class Meanwhile:
    """Endorsements arriving from 4 threads for as long as the ``with`` block lasts."""

    serial = itertools.count()

    def __init__(self, service: Gunicorn) -> None:
        self.service = service
        self.stop = threading.Event()
        self.counted = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(w,)) for w in range(4)]

    def run(self, worker: int) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            n = next(self.serial)
            headers = {"Origin": ALLY} if worker % 2 else {}
            body = person(f"new{n}", country=COUNTRIES[n % 5])
            body["name"] = f"Meanwhile {n}"
            url = self.service.url + endorsements_url()
            response = session.post(url, json=body, headers=headers, timeout=10)
            assert response.status_code == 201, response.text
            with self.lock:
                self.counted += 1

    def __enter__(self) -> Meanwhile:
        for t in self.threads:
            t.start()
        time.sleep(0.3)  # they are under way before the operation starts
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # and still going after it ends
        self.stop.set()
        for t in self.threads:
            t.join()


def test_a_bulk_strike_of_1000_matches_its_dry_run_and_its_undo_restores_every_byte(
    service_for_bulk: Gunicorn, redis_client: Redis
) -> None:
    service = service_for_bulk
    store = Store(redis_client)

    def seed(n: int) -> int:
        headers = {"Origin": ALLY} if n < 1000 else {}
        return post(service, person(f"seed{n}", country=COUNTRIES[n % 5]), **headers).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(seed, range(1200))) == {201}
    before = raw_state(redis_client)
    assert before == tally(store) and int(before["count"]) == 1200
    assert before["by_source"][ALLY.encode()] == b"1000"

    dry = admin(service, "POST", f"{ADMIN}/strike-bulk", json={"source": ALLY, "dry_run": True})
    assert dry.status_code == 200 and dry.json()["matched"] == 1000
    assert raw_state(redis_client) == before  # a dry run touches nothing

    body = {"source": ALLY, "reason": "one ally, scripted", "upto": dry.json()["upto"]}
    with Meanwhile(service) as during_strike:
        done = admin(service, "POST", f"{ADMIN}/strike-bulk", json=body)
    assert done.status_code == 200, done.text
    result = done.json()
    assert result["struck"] == 1000 == result["matched"] == dry.json()["matched"]
    new = during_strike.counted
    assert new > 0
    assert store.count(STATEMENT) == 1200 + new - 1000
    assert raw_state(redis_client) == tally(store)  # every breakdown follows exactly
    public = requests.get(f"{service.url}/api/v1/statements/{STATEMENT}/count", timeout=5)
    eventually(
        lambda: requests.get(public.url, timeout=5).json()["count"] == 200 + new, 5, "the count"
    )
    rows = admin(service, "GET", f"{ADMIN}/endorsements?limit=500").json()["endorsements"]
    assert all(r["struck"] is None for r in rows if r["name"].startswith("Meanwhile"))

    with Meanwhile(service) as during_undo:
        undone = admin(service, "POST", f"{ADMIN}/bulk/{result['bulk_id']}/undo")
    assert undone.status_code == 200
    assert undone.json()["restored"] == 1000
    total_new = new + during_undo.counted
    assert during_undo.counted > 0
    assert store.count(STATEMENT) == 1200 + total_new == store.log_length(STATEMENT)
    after = raw_state(redis_client)
    assert after == tally(store)
    assert redis_client.hlen(f"us:{{{STATEMENT}}}:struck") == 0
    # Without what arrived meanwhile, every count and breakdown is what it was, byte for byte.
    assert tally(store, only=lambda e: not e.name.startswith("Meanwhile")) == before
