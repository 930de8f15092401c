"""Two app instances (separate gunicorn masters, production config) on a real local Redis
Cluster (3 masters, 3 replicas): everything works across them, and every key a statement
uses lives in its slot (the cluster itself is asked for each key's slot).

In the suite's cluster mode (UNDERSIGN_TEST_CLUSTER=1) this uses the session's cluster;
otherwise it starts one of its own for the module.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from checks import (
    STATEMENT,
    endorsements_url,
    person,
    public_count,
    wait_until,
    write_statement,
)
from click.testing import CliRunner
from conftest import ADMIN_TOKEN, ALLY, CLUSTER, SECRET
from faults import start_instances
from servers import Gunicorn, LocalCluster

from widget.cli import main
from widget.sessions import SessionStore

pytestmark = pytest.mark.server

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"
OTHER = "second-statement"
# Keys of no one statement, each a single key (any slot does): the day's salt, the log
# key, the block list, the admin sessions and sign-in forms, and flask-limiter's windows
# (each window pair under one hash tag of its own).
SHARED = ("us:salt:", "us:logkey", "us:blocks", "us:admin:session:", "us:admin:login:")


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalCluster]:
    if CLUSTER:
        yield request.getfixturevalue("redis_server")
        return
    own = LocalCluster(tmp_path_factory.mktemp("cluster"))
    own.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
def statements_dir(tmp_path_factory: pytest.TempPathFactory, cluster: LocalCluster) -> Path:
    """A second statement, whose slot is served by another master than the first's."""
    folder = tmp_path_factory.mktemp("statements")
    write_statement(folder, OTHER)
    client: Any = cluster.client()
    first = cluster.master_of_slot(client.keyslot(f"{{{STATEMENT}}}"))
    assert cluster.master_of_slot(client.keyslot(f"{{{OTHER}}}")) != first
    return folder


@pytest.fixture(scope="module")
def two(
    cluster: LocalCluster, statements_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gunicorn]]:
    instances = start_instances(
        cluster,
        tmp_path_factory.mktemp("apps"),
        count=2,
        workers=2,
        WIDGET_ENDORSE_LIMIT="7/minute",
        WIDGET_CHALLENGE_LIMIT="5/minute",
        WIDGET_STATEMENTS_DIR=str(statements_dir),
        WIDGET_REDIS_WAIT_REPLICAS="1",
    )
    yield instances
    for instance in instances:
        instance.stop()


@pytest.fixture
def clean(cluster: LocalCluster) -> Any:
    """Every master flushed (the day's salt kept, as the suite's redis_client does)."""
    client: Any = cluster.client()
    salts = {k: (client.get(k), client.pttl(k)) for k in client.scan_iter("us:salt:*")}
    client.flushall(target_nodes=client.PRIMARIES)
    for key, (salt, ttl) in salts.items():
        if salt is not None and ttl > 0:
            client.set(key, salt, px=ttl)
    return client


_addresses = iter(range(1, 10**6))


def address() -> str:
    """A new client address for each request (X-Forwarded-For from loopback, trusted)."""
    n = next(_addresses)
    return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


def endorse(instance: Gunicorn, n: int | str, statement: str = STATEMENT, **extra: Any) -> Any:
    return requests.post(
        instance.url + endorsements_url(statement),
        json=person(n, **extra),
        headers={"X-Forwarded-For": address()},
        timeout=10,
    )


def test_endorse_and_dedup_across_instances(two: list[Gunicorn], clean: Any) -> None:
    a, b = two
    first = endorse(a, 1)
    assert first.status_code == 201, first.text
    again = endorse(b, 1)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    counted = [endorse(two[n % 2], n + 10) for n in range(20)]
    assert [r.status_code for r in counted] == [201] * 20
    assert sorted(r.json()["count"] for r in counted) == list(range(2, 22))
    for instance in two:  # a count read may lag a write elsewhere by up to a second
        wait_until(lambda url=instance.url: public_count(url) == 21, 3)


def test_tiered_and_flask_limiter_limits_are_exact_across_instances(
    two: list[Gunicorn], clean: Any
) -> None:
    """One client (7/minute) sending 30 endorsements at once through both instances: 7
    counted, 23 refused with 429 naming the tier; its challenges (flask-limiter, on the
    cluster) likewise, 5 a minute across both."""
    client = address()

    def send(n: int) -> requests.Response:
        return requests.post(
            two[n % 2].url + endorsements_url(),
            json=person(n, email=f"tier{n}@example.org"),
            headers={"X-Forwarded-For": client},
            timeout=10,
        )

    with ThreadPoolExecutor(30) as pool:
        replies = list(pool.map(send, range(30)))
    statuses = Counter(r.status_code for r in replies)
    assert statuses == {201: 7, 429: 23}, statuses
    assert {r.json()["limit"] for r in replies if r.status_code == 429} == {"client"}
    challenges = [
        requests.get(
            f"{two[n % 2].url}/api/v1/statements/{STATEMENT}/challenge",
            headers={"X-Forwarded-For": client},
            timeout=10,
        ).status_code
        for n in range(8)
    ]
    assert challenges == [200] * 5 + [429] * 3


def test_a_viewer_on_one_instance_sees_an_endorsement_through_the_other(
    two: list[Gunicorn], clean: Any
) -> None:
    a, b = two
    path = f"/api/v1/events?statements={STATEMENT},{OTHER}"
    with requests.get(a.url + path, stream=True, timeout=10) as stream:
        lines = stream.iter_lines()
        seen: list[tuple[str, int, float]] = []
        done = threading.Event()

        def read() -> None:
            try:
                for line in lines:
                    if line.startswith(b"data:"):
                        data = json.loads(line[5:])
                        seen.append((data["id"], data["count"], time.monotonic()))
                    if done.is_set():
                        return
            except requests.RequestException:
                return  # the stream was closed under it

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        # The first counts (a count may lag the flush by up to a second, as the API allows).
        assert {i for i, _, _ in seen} == {STATEMENT, OTHER}
        for statement, n in ((STATEMENT, 1), (OTHER, 2)):
            assert endorse(b, n, statement).status_code == 201
            deadline = time.monotonic() + 1.0  # from the answer: the write waited for a replica
            while not any(i == statement and c == 1 for i, c, _ in seen):
                assert time.monotonic() < deadline, f"{statement}: no event within 1 s"
                time.sleep(0.005)
        done.set()


def test_moderation_bulk_stats_and_exports_across_instances(
    two: list[Gunicorn], clean: Any
) -> None:
    a, b = two
    for n in range(6):
        source = {"source": ALLY} if n % 2 else {}
        assert endorse(two[n % 2], n, country="KZ", **source).status_code == 201
    page = requests.get(f"{b.url}{ADMIN}/endorsements", headers=BEARER, timeout=5).json()
    ids = [e["id"] for e in page["endorsements"]]
    assert len(ids) == 6
    struck = requests.post(
        f"{a.url}{ADMIN}/endorsements/{ids[0]}/strike",
        json={"reason": "spam"},
        headers=BEARER,
        timeout=5,
    )
    assert struck.status_code == 200, struck.text
    stats = requests.get(f"{b.url}{ADMIN}/stats", headers=BEARER, timeout=5).json()
    assert stats["count"] == 5
    assert sum(stats["by_source"].values()) == 5 and stats["by_country"] == {"KZ": 5}
    bulk = requests.post(
        f"{b.url}{ADMIN}/strike-bulk",
        json={"source": ALLY, "reason": "bulk"},
        headers=BEARER,
        timeout=10,
    )
    assert bulk.status_code == 200, bulk.text
    body = bulk.json()
    wait_until(lambda: public_count(a.url) == 5 - body["struck"], 3)  # it may lag by a second
    undo = requests.post(f"{a.url}{ADMIN}/bulk/{body['bulk_id']}/undo", headers=BEARER, timeout=10)
    assert undo.status_code == 200, undo.text
    csv = requests.get(f"{b.url}{ADMIN}/export.csv", headers=BEARER, timeout=10)
    assert csv.status_code == 200 and len(csv.text.strip().splitlines()) == 7  # header + 6
    jsonl = requests.get(f"{a.url}{ADMIN}/export.jsonl", headers=BEARER, timeout=10)
    assert len(jsonl.text.strip().splitlines()) == 6


def test_one_transparency_log_whatever_instance_seals(two: list[Gunicorn], clean: Any) -> None:
    """Endorsements through both instances at once: one sequence of log lines (indexes
    0..n-1, in order), and both instances serve the same signed checkpoint of all of them."""
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda n: endorse(two[n % 2], n), range(40)))
    assert [r.status_code for r in replies] == [201] * 40

    def checkpoints() -> set[str]:
        return {
            requests.get(f"{i.url}/api/v1/statements/{STATEMENT}/checkpoint", timeout=5).text
            for i in two
        }

    deadline = time.monotonic() + 10
    while True:
        found = checkpoints()
        if len(found) == 1 and "\n40\n" in next(iter(found)):
            break
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    logs = [requests.get(f"{i.url}/api/v1/statements/{STATEMENT}/log", timeout=5).text for i in two]
    assert logs[0] == logs[1]
    lines = [json.loads(line) for line in logs[0].splitlines()]
    assert [line["i"] for line in lines] == list(range(40))


def test_cross_statement_reads_and_watch(
    two: list[Gunicorn], clean: Any, cluster: LocalCluster, statements_dir: Path
) -> None:
    assert endorse(two[0], 1).status_code == 201
    for n in range(2):
        assert endorse(two[1], n, OTHER).status_code == 201
    listed = requests.get(f"{two[1].url}/api/v1/statements", timeout=5).json()["statements"]
    assert {s["id"]: s["count"] for s in listed} == {STATEMENT: 1, OTHER: 2}
    env = {
        "WIDGET_REDIS_URL": cluster.url,
        "WIDGET_REDIS_CLUSTER": "true",
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_STATEMENTS_DIR": str(statements_dir),
    }
    result = CliRunner(env=env).invoke(main, ["statements"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "       1 /" in result.output and "       2 /" in result.output
    watched = CliRunner(env=env).invoke(main, ["watch", "--once"], catch_exceptions=False)
    assert watched.exit_code == 0 and STATEMENT in watched.output and OTHER in watched.output


def test_every_key_of_a_statement_is_in_its_slot(
    two: list[Gunicorn], clean: Any, cluster: LocalCluster
) -> None:
    """After endorsing, dedup, strikes, a withdrawal, a bulk strike and its undo, blocks,
    streams, challenges, a console sign-in and sealing: the cluster says every key named
    after a statement is in that statement's slot, and every other key is one of the
    few shared single keys."""
    a, b = two
    receipts = []
    for n in range(4):
        reply = endorse(two[n % 2], n, country="KZ", source=ALLY)
        receipts.append(reply.json()["receipt"]["secret"])
    endorse(b, 0)  # a duplicate
    assert endorse(a, 9, OTHER).status_code == 201
    ids = [
        e["id"]
        for e in requests.get(f"{a.url}{ADMIN}/endorsements", headers=BEARER, timeout=5).json()[
            "endorsements"
        ]
    ]
    requests.post(
        f"{b.url}{ADMIN}/endorsements/{ids[0]}/strike", headers=BEARER, json={}, timeout=5
    )
    requests.post(f"{a.url}{ADMIN}/endorsements/{ids[0]}/unstrike", headers=BEARER, timeout=5)
    withdrawn = requests.post(
        f"{a.url}/api/v1/statements/{STATEMENT}/withdrawals",
        json={"secret": receipts[1]},
        timeout=5,
    )
    assert withdrawn.status_code == 200, withdrawn.text
    wanted = {"country": "KZ", "reason": "test"}
    bulk = requests.post(f"{b.url}{ADMIN}/strike-bulk", json=wanted, headers=BEARER, timeout=10)
    requests.post(f"{a.url}{ADMIN}/bulk/{bulk.json()['bulk_id']}/undo", headers=BEARER, timeout=10)
    requests.post(
        f"{a.url}/api/v1/admin/blocks",
        json={"email_domain": "spam.example"},
        headers=BEARER,
        timeout=5,
    )
    requests.get(f"{b.url}/api/v1/statements/{STATEMENT}/challenge", timeout=5)
    with requests.get(f"{a.url}/api/v1/statements/{STATEMENT}/events", stream=True, timeout=5) as s:
        next(s.iter_lines())
        time.sleep(1.5)  # sealed meanwhile (every second)
        client: Any = clean
        keys = [k.decode() for k in client.keys("*", target_nodes=client.PRIMARIES)]
    slot_of = {sid: int(client.keyslot(f"{{{sid}}}")) for sid in (STATEMENT, OTHER)}
    tagged = 0
    for key in keys:
        slot = int(client.cluster_keyslot(key))  # CLUSTER KEYSLOT: the cluster's own answer
        owner = [sid for sid in slot_of if f"{{{sid}}}" in key]
        if owner:
            assert slot == slot_of[owner[0]], key
            tagged += 1
        elif key.startswith("us:{streams}:"):
            assert slot == int(client.keyslot("{streams}")), key
        elif key.startswith("LIMITS:"):
            assert "{" in key, key  # flask-limiter's window pairs carry a tag of their own
        else:
            assert key.startswith(SHARED), key
    names = {key.split("}:", 1)[1].split(":")[0] for key in keys if "}:" in key}
    for name in (
        "count",
        "log",
        "tlog",
        "seen",
        "who",
        "rc",
        "by_source",
        "bulk",
        "tree",
    ):
        assert name in names, (name, sorted(names))
    assert tagged > 20


def test_sessions_revoke_all_on_a_cluster(clean: Any, cluster: LocalCluster) -> None:
    """Console sessions spread over every master; `undersign sessions revoke-all` scans
    each master and ends them all."""
    sessions = SessionStore(clean, 3600)
    made = [sessions.create("binding") for _ in range(30)]
    owners = {cluster.master_of_slot(int(clean.keyslot(SessionStore.key(s.id)))) for s in made}
    assert len(owners) == 3  # on every master
    env = {
        "WIDGET_REDIS_URL": cluster.url,
        "WIDGET_REDIS_CLUSTER": "true",
        "WIDGET_SECRET_KEY": SECRET,
    }
    result = CliRunner(env=env).invoke(main, ["sessions", "revoke-all"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "30" in result.output
    assert not clean.keys("us:admin:session:*", target_nodes=clean.PRIMARIES)


def test_the_mail_queue_lives_in_one_slot_and_the_worker_finds_its_master(
    clean: Any, cluster: LocalCluster
) -> None:
    """RQ's keys all carry {mail}: the app queues a job through the cluster client, and a
    worker given any node (here one that does not serve the queue's slot) connects to the
    master that does, and sees the job."""
    from rq import Queue

    from widget.db import make_client
    from widget.jobs import QUEUE_NAME, MailQueue, worker_connection

    slot = int(clean.keyslot("rq:{mail}:queue"))
    owner = cluster.master_of_slot(slot)
    elsewhere = next(port for port in cluster.masters() if port != owner)
    mail = MailQueue(make_client(cluster.url, cluster=True), SECRET, retry_for=60)
    mail.enqueue(STATEMENT, "none", lang="en")
    connection = worker_connection(f"redis://127.0.0.1:{elsewhere}", cluster=True)
    assert connection.connection_pool.connection_kwargs["port"] == owner
    assert Queue(QUEUE_NAME, connection=connection).count == 1
    keys = [k.decode() for k in clean.keys("rq:*", target_nodes=clean.PRIMARIES)]
    assert keys and all("{mail}" in k and int(clean.keyslot(k)) == slot for k in keys)
