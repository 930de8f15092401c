"""Issue 11's acceptance against real Redis and multi-worker gunicorn: concurrent
endorsements with strikes, unstrikes and withdrawals interleaved give one log holding every
event exactly once, whose signed root recounts to ``/count``; every pair of checkpoints
taken meanwhile is consistent; every receipt's inclusion proof holds; Redis killed and
restarted mid-run leaves no gap, no duplicate and no fork; ``undersign verify`` passes
on the honest service."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from checks import STATEMENT, endorsements_url, person
from conftest import ADMIN_TOKEN, SECRET
from redis import Redis
from servers import Gunicorn, RedisServer
from tlog_checks import (
    Audited,
    Head,
    audit,
    check_consistency,
    check_receipt,
    head,
    http_getter,
    verifier_key,
)

from widget.store import Store
from widget.tlog.entries import commitment

pytestmark = pytest.mark.server

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"
UNDERSIGN = str(Path(sys.executable).with_name("undersign"))


def eventually(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def all_sealed(service: Gunicorn) -> bool:
    stats = requests.get(service.url + ADMIN + "/stats", headers=BEARER, timeout=10).json()
    return bool(stats["log"]["unsealed"] == 0 and stats["log"]["size"] > 0)


def live_count(service: Gunicorn) -> int:
    url = service.url + f"/api/v1/statements/{STATEMENT}/count"
    return int(requests.get(url, timeout=10).json()["count"])


class Sampler:
    """Takes the signed checkpoint every ``every`` seconds in a thread, while it runs."""

    def __init__(self, service: Gunicorn, every: float = 0.25) -> None:
        self.get = http_getter(service.url)
        self.key = verifier_key(self.get)
        self.heads: list[Head] = []
        self.every = every
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            # Redis may be down for a moment: the next one will do
            with contextlib.suppress(AssertionError, requests.RequestException):
                self.heads.append(head(self.get, STATEMENT, self.key))

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()

    def distinct(self) -> list[Head]:
        return list({h.size: h for h in self.heads}.values())


def check_every_pair(service: Gunicorn, heads: list[Head], last: Head) -> int:
    get = http_getter(service.url)
    heads = sorted([*heads, last], key=lambda h: h.size)
    pairs = 0
    for old, new in itertools.combinations(heads, 2):
        check_consistency(get, STATEMENT, old, new)
        pairs += 1
    return pairs


def test_concurrent_endorsements_and_moderation_make_one_log_that_recounts_exactly(
    start_gunicorn: Callable[..., Gunicorn], redis_client: Redis
) -> None:
    service = start_gunicorn(workers=4)
    store = Store(redis_client)
    session = requests.Session()
    receipts: dict[str, str] = {}  # email -> receipt secret
    lock = threading.Lock()
    done = threading.Event()
    struck: list[str] = []
    unstruck: list[str] = []
    withdrawn: list[str] = []  # receipt secrets

    def endorse(n: int) -> None:
        time.sleep(0.4)  # spread over seconds: checkpoints are signed every second
        body = person(n, country=("KZ", "DE", "")[n % 3], public=n % 4 == 0)
        response = requests.post(service.url + endorsements_url(), json=body, timeout=30)
        assert response.status_code == 201, response.text
        with lock:
            receipts[body["email"]] = response.json()["receipt"]["secret"]

    def moderate() -> None:
        """While endorsements pour in: strike some, restore half of those, and have some
        endorsers withdraw (each event on its own endorsement, so each one changes)."""
        taken: set[str] = set()
        while not done.is_set() or len(struck) < 30:
            entries = [e for e in store.log(STATEMENT) if e.id not in taken]
            with lock:
                mine = [s for e, s in receipts.items() if s not in withdrawn]
            if len(entries) > 12 and len(mine) > 12:
                for entry in entries[:3]:
                    taken.add(entry.id)
                    url = f"{service.url}{ADMIN}/endorsements/{entry.id}/strike"
                    assert session.post(url, json={"reason": "t"}, headers=BEARER).ok
                    struck.append(entry.id)
                if len(struck) % 2 == 0:
                    url = f"{service.url}{ADMIN}/endorsements/{struck[-2]}/unstrike"
                    assert session.post(url, headers=BEARER).ok
                    unstruck.append(struck[-2])
                # withdraw the newest endorsement not struck by us
                ids_of = {e.index: e.id for e in store.log(STATEMENT)}
                for secret in reversed(mine):
                    answer = session.get(
                        f"{service.url}/api/v1/statements/{STATEMENT}/receipts/{commitment(secret)}"
                    )
                    if answer.ok and ids_of.get(answer.json()["index"]) not in taken:
                        taken.add(ids_of[answer.json()["index"]])
                        url = f"{service.url}/api/v1/statements/{STATEMENT}/withdrawals"
                        answer = session.post(url, json={"secret": secret})
                        assert answer.json()["status"] == "withdrawn"
                        withdrawn.append(secret)
                        break
            time.sleep(0.05)

    with Sampler(service) as sampler, ThreadPoolExecutor(32) as pool:
        moderator = pool.submit(moderate)
        list(pool.map(endorse, range(300)))
        done.set()
        moderator.result(timeout=120)
    assert len(receipts) == 300 and len(struck) >= 30 and len(withdrawn) >= 5
    eventually(lambda: all_sealed(service), 15, "sealing to catch up")
    found: Audited = audit(http_getter(service.url))
    entries = found.entries
    # every counted event exactly once, in one order (audit checked i = 0, 1, 2, ...)
    index_of = {e.id: e.index for e in store.log(STATEMENT)}
    endorse_commits = Counter(e["commit"] for e in entries if e["kind"] == "endorse")
    assert endorse_commits == Counter(commitment(s) for s in receipts.values())
    by_kind: dict[str, Counter[int]] = {k: Counter() for k in ("strike", "unstrike", "withdraw")}
    for e in entries:
        if e["kind"] != "endorse":
            by_kind[e["kind"]][e["target"]] += 1
    assert by_kind["strike"] == Counter(index_of[i] for i in struck)
    assert by_kind["unstrike"] == Counter(index_of[i] for i in unstruck)
    commit_index = {e["commit"]: e["i"] for e in entries if e["kind"] == "endorse"}
    assert by_kind["withdraw"] == Counter(commit_index[commitment(s)] for s in withdrawn)
    assert len(entries) == 300 + len(struck) + len(unstruck) + len(withdrawn)
    # the count rule on the signed log equals /count and the store's sealed count
    expected = 300 - len(struck) + len(unstruck) - len(withdrawn)
    assert found.tally.count == expected == store.count(STATEMENT)
    eventually(lambda: live_count(service) == expected, 5, "the live count")
    assert store.sealed_count(STATEMENT) == expected
    # consistency between every pair of checkpoints taken during the run
    heads = sampler.distinct()
    assert len(heads) >= 3, [h.size for h in heads]
    assert check_every_pair(service, heads, found.head) >= 3
    # an inclusion proof for every receipt, and the status the log gives
    get, key = http_getter(service.url), verifier_key(http_getter(service.url))
    for secret in receipts.values():
        answer = check_receipt(get, STATEMENT, secret, key)
        assert answer["status"] == found.tally.status(answer["index"])


def test_redis_killed_mid_run_leaves_no_gap_no_duplicate_and_no_fork(
    start_gunicorn: Callable[..., Gunicorn], redis_server: RedisServer, redis_client: Redis
) -> None:
    service = start_gunicorn(workers=3)
    receipts: list[str] = []
    failures: list[int] = []
    serial = itertools.count()
    stop = threading.Event()
    lock = threading.Lock()

    def keep_endorsing() -> None:
        session = requests.Session()
        while not stop.is_set():
            body = person(next(serial))
            try:
                response = session.post(service.url + endorsements_url(), json=body, timeout=10)
            except requests.RequestException:
                failures.append(0)
                continue
            with lock:
                if response.status_code == 201:
                    receipts.append(response.json()["receipt"]["secret"])
                else:
                    assert response.status_code == 503, response.text
                    failures.append(response.status_code)
                    time.sleep(0.05)

    with Sampler(service, every=0.2) as sampler, ThreadPoolExecutor(8) as pool:
        writers = [pool.submit(keep_endorsing) for _ in range(8)]
        eventually(lambda: len(sampler.distinct()) >= 3 and len(receipts) > 150, 30, "load")
        before = list(sampler.distinct())
        redis_server.kill()
        time.sleep(1.0)
        redis_server.start()
        eventually(lambda: len(receipts) > before[-1].size + 150, 30, "endorsements after")
        stop.set()
        for writer in writers:
            writer.result(timeout=30)
    assert failures, "the outage should have been felt"
    client = redis_server.client()
    eventually(lambda: all_sealed(service), 20, "sealing after the restart")
    found = audit(http_getter(service.url))
    # no gap and no duplicate (audit checked the indexes); each 201 exactly once
    commits = Counter(e["commit"] for e in found.entries)
    assert all(commits[commitment(s)] == 1 for s in receipts)
    assert max(commits.values()) == 1
    assert found.tally.count == Store(client).count(STATEMENT) == len(found.entries)
    eventually(lambda: live_count(service) == found.tally.count, 5, "the live count")
    # consistent with every checkpoint signed before the outage (and after)
    assert check_every_pair(service, sampler.distinct(), found.head) >= len(before)
    for old in before:
        assert old.size <= found.head.size


def run_verify(service: Gunicorn, *args: str, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [UNDERSIGN, "verify", service.url, STATEMENT, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_undersign_verify_passes_on_the_honest_service(
    start_gunicorn: Callable[..., Gunicorn], redis_server: RedisServer, tmp_path: Path
) -> None:
    service = start_gunicorn(workers=2)
    secrets_: list[str] = []
    for n in range(25):
        response = requests.post(service.url + endorsements_url(), json=person(n), timeout=10)
        secrets_.append(response.json()["receipt"]["secret"])
    requests.post(
        service.url + f"/api/v1/statements/{STATEMENT}/withdrawals",
        json={"secret": secrets_[3]},
        timeout=10,
    )
    eventually(lambda: all_sealed(service), 10, "sealing")
    # the key as the operator prints it, to pin
    printed = subprocess.run(
        [UNDERSIGN, "log-key"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET},
    )
    vkey = printed.stdout.strip()
    served = requests.get(service.url + "/api/v1/log/key", timeout=10).text.strip()
    assert printed.returncode == 0 and vkey == served
    state = tmp_path / "state.json"
    first = run_verify(service, "--key", vkey, "--receipt", secrets_[0], "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "OK: the log, its root, its signature and the count all check out." in first.stdout
    assert "Count: 24 endorsements counted" in first.stdout
    assert "status: counted" in first.stdout
    for n in range(25, 40):
        requests.post(service.url + endorsements_url(), json=person(n), timeout=10)
    eventually(lambda: all_sealed(service), 10, "sealing")
    second = run_verify(
        service, "--key", vkey, "--state", str(state), env={"UNDERSIGN_RECEIPT": secrets_[3]}
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "it extends the checkpoint recorded" in second.stdout
    assert "status: withdrawn" in second.stdout
    assert "Count: 39 endorsements counted" in second.stdout
