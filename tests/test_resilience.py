"""Redis dies and comes back: the running service answers 503, then recovers by itself.

The test Redis writes its AOF with ``appendfsync always``, so every endorsement the service
acknowledged before the crash must still be there after the restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import requests
from checks import STATEMENT, assert_counted, assert_problem, endorsements_url, person, store_state
from flask.testing import FlaskClient
from redis import Redis
from servers import Gunicorn, RedisServer

COUNT = f"/api/v1/statements/{STATEMENT}/count"


def test_gunicorn_survives_a_redis_crash(
    start_gunicorn: Callable[..., Gunicorn], redis_server: RedisServer, redis_client: Redis
) -> None:
    server = start_gunicorn(workers=2)
    url = server.url + endorsements_url()
    acked: list[str] = []  # emails the service answered 201 for
    outcomes: list[int] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        with requests.Session() as session:
            write(worker, session)

    def write(worker: int, session: requests.Session) -> None:
        n = 0
        while not stop.is_set():
            email = f"writer{worker}.{n}@example.org"
            n += 1
            try:
                response = session.post(url, json=person(n, email=email), timeout=10)
            except requests.RequestException:
                outcomes.append(0)
                continue
            outcomes.append(response.status_code)
            if response.status_code == 201:
                acked.append(email)
            elif response.status_code == 503:
                assert_problem(response, 503)
                time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= 40, outcomes
        redis_server.kill()  # SIGKILL mid-stream, writes in flight
        acked_before_kill = list(acked)

        # While Redis is down: quick 503 problems, for writes, reads and health.
        started = time.monotonic()
        assert_problem(requests.post(url, json=person("down"), timeout=10), 503)
        assert_problem(requests.get(server.url + COUNT, timeout=10), 503)
        health = requests.get(server.url + "/healthz", timeout=10)
        assert_problem(health, 503)
        assert health.headers["Retry-After"] == "5"
        assert time.monotonic() - started < 6
        time.sleep(0.5)
        assert 503 in outcomes

        redis_server.start()  # same port, same AOF
        # The same gunicorn recovers without a restart: the very next requests succeed,
        # on fresh connections (any worker) as on kept-alive ones.
        for _ in range(10):
            assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        with requests.Session() as session:
            for _ in range(10):
                assert session.get(server.url + COUNT, timeout=10).status_code == 200
        after = len(acked)
        deadline = time.monotonic() + 10
        while len(acked) < after + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(acked) >= after + 20, "writes did not resume"
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    # Nothing acknowledged was lost: each acknowledged address is already known...
    with requests.Session() as session:
        for email in acked_before_kill:
            again = session.post(url, json=person("again", email=email), timeout=10)
            assert again.status_code == 200, email
            assert again.json()["status"] == "duplicate"
    # ... and the count, the record and the dedup hash agree.
    state = store_state(redis_client)
    assert state.count >= len(acked)
    assert state.count == state.log_length == state.seen
    # A request whose reply was lost in the crash may have been counted; nothing more.
    assert state.count - len(acked) <= outcomes.count(503) + outcomes.count(0)
    assert requests.get(server.url + COUNT, timeout=10).json()["count"] == state.count
    assert "Traceback" not in server.log()


def test_in_process_app_survives_a_redis_crash(
    client: FlaskClient, redis_server: RedisServer, redis_client: Redis
) -> None:
    url = endorsements_url()
    for n in range(5):
        assert client.post(url, json=person(n)).status_code == 201
    assert client.get("/healthz").status_code == 200  # the pool holds live connections

    redis_server.kill()
    assert_problem(client.post(url, json=person(5)), 503)
    assert_problem(client.get("/healthz"), 503)
    assert_problem(client.get(COUNT), 503)
    redis_server.start()

    # First request after the restart already works: the client reconnects by itself.
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get(COUNT).get_json()["count"] == 5
    assert client.post(url, json=person(0)).get_json() == {"status": "duplicate", "count": 5}
    assert_counted(client.post(url, json=person(5)).get_json(), 6)
    state = store_state(redis_client)
    assert (state.count, state.log_length, state.seen) == (6, 6, 6)


@pytest.mark.parametrize("restarts", [3])
def test_repeated_restarts(
    client: FlaskClient, redis_server: RedisServer, redis_client: Redis, restarts: int
) -> None:
    url = endorsements_url()
    for round_ in range(restarts):
        assert client.post(url, json=person(round_)).status_code == 201
        redis_server.kill()
        assert client.get("/healthz").status_code == 503
        redis_server.start()
        assert client.get("/healthz").status_code == 200
    assert client.get(COUNT).get_json()["count"] == restarts
