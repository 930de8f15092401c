"""Exact counts and exact rate limits under concurrent load on a real 4-worker gunicorn."""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from checks import PROBLEM_JSON, STATEMENT, endorsements_url, store_state
from conftest import gunicorn_env
from load import Reply, post_all, post_all_args
from redis import Redis
from servers import Gunicorn, RedisServer

pytestmark = pytest.mark.server

WORKERS = 4
PEOPLE = 200
CHUNKS = 4  # three child processes plus this one, each with its own thread pool


def serve(redis_server: RedisServer, folder: Path, **env: str) -> Iterator[Gunicorn]:
    server = Gunicorn(gunicorn_env(redis_server, **env), workers=WORKERS, folder=folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def unlimited(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    yield from serve(redis_server, tmp_path_factory.mktemp("unlimited"))


@pytest.fixture(scope="module")
def limited(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    yield from serve(
        redis_server, tmp_path_factory.mktemp("limited"), WIDGET_ENDORSE_LIMIT="7/minute"
    )


def variants(n: int) -> tuple[str, str]:
    """Two spellings of person ``n``'s address that normalize to the same one."""
    return f"Person.{n}@Example.ORG", f"  person.{n}@example.org "


def test_400_concurrent_posts_count_exactly_200(unlimited: Gunicorn, redis_client: Redis) -> None:
    log = unlimited.log()
    assert log.count("Booting worker") == WORKERS, log

    chunks: list[list[dict[str, Any]]] = [[] for _ in range(CHUNKS)]
    for n in range(PEOPLE):
        first, second = variants(n)
        # The two spellings go out from different processes, so they really race.
        chunks[n % CHUNKS].append({"name": f"Person {n}", "email": first, "consent": True})
        chunks[(n + 1) % CHUNKS].append({"name": f"P {n}", "email": second, "consent": True})
    rng = random.Random(2)
    for chunk in chunks:
        rng.shuffle(chunk)

    url = unlimited.url + endorsements_url()
    start_at = time.time() + 2.0  # time for the child processes to start
    context = multiprocessing.get_context("spawn")
    with context.Pool(CHUNKS - 1) as pool:
        pending = pool.map_async(post_all_args, [(url, c, 20, start_at) for c in chunks[1:]])
        replies = post_all(url, chunks[0], threads=20, start_at=start_at)
        for batch in pending.get(timeout=120):
            replies.extend(batch)

    assert len(replies) == 2 * PEOPLE
    statuses = Counter(r.status for r in replies)
    assert statuses == {201: PEOPLE, 200: PEOPLE}, statuses
    counted = [r for r in replies if r.status == 201]
    assert all(r.body["status"] == "counted" for r in counted)
    assert all(r.body["status"] == "duplicate" for r in replies if r.status == 200)
    # Each new count was handed out exactly once: the script is atomic across workers.
    assert sorted(r.body["count"] for r in counted) == list(range(1, PEOPLE + 1))
    assert max(r.body["count"] for r in replies) == PEOPLE
    # Exactly one spelling of each address was counted.
    counted_people = Counter(r.email.strip().lower() for r in counted)
    assert len(counted_people) == PEOPLE and set(counted_people.values()) == {1}

    count = requests.get(f"{unlimited.url}/api/v1/statements/{STATEMENT}/count", timeout=5)
    assert count.json() == {"id": STATEMENT, "count": PEOPLE}
    state = store_state(redis_client)
    assert state.count == PEOPLE
    assert state.log_length == PEOPLE
    assert state.seen == PEOPLE
    assert state.by_source == {"direct": PEOPLE}


def test_rate_limit_is_exact_across_workers(limited: Gunicorn, redis_client: Redis) -> None:
    bodies = [
        {"name": f"Person {n}", "email": f"limit{n}@example.org", "consent": True}
        for n in range(30)
    ]
    replies = post_all(limited.url + endorsements_url(), bodies, threads=30)
    ok = [r for r in replies if r.status in (200, 201)]
    refused = [r for r in replies if r.status == 429]
    assert len(ok) == 7, Counter(r.status for r in replies)
    assert len(refused) == 23
    assert sorted(r.body["count"] for r in ok) == list(range(1, 8))
    for reply in refused:
        assert_limited(reply)
    assert store_state(redis_client).count == 7
    # Still refused afterwards, from any worker; reads still answer.
    later = post_all(limited.url + endorsements_url(), bodies[:8], threads=8)
    assert {r.status for r in later} == {429}
    for _ in range(8):
        count = requests.get(f"{limited.url}/api/v1/statements/{STATEMENT}/count", timeout=5)
        assert count.status_code == 200
        assert count.json()["count"] == 7


def assert_limited(reply: Reply) -> None:
    assert reply.content_type == PROBLEM_JSON
    assert reply.body["status"] == 429
    assert reply.body["type"].endswith(":rate-limited")
    assert reply.body["title"] and reply.body["detail"]
    assert reply.retry_after is not None
    assert 1 <= int(reply.retry_after) <= 120  # a sliding-window counter: up to two windows
    assert reply.body["retry_after"] == int(reply.retry_after)
