"""Helpers for the fault tests: app instances on a local cluster, a tracked endorsement
load, and what the store holds afterwards.

Each endorsement of the load is one distinct email, sent until it is settled: a 201
(counted) or a 200 (duplicate). A 503 (problem+json with ``Retry-After``) or a broken
connection is retried, alternately through each instance, with the same email, so the
final count can be reconciled exactly: every email counted once, never twice.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from checks import STATEMENT, endorsements_url, person, seen_hmacs
from conftest import SECRET, gunicorn_env
from servers import Gunicorn, LocalCluster

from widget.abuse import canonical_email
from widget.privacy import email_hmac
from widget.store import _hmac_bytes

# Reported at the end of the run (conftest's terminal summary): the figures the README
# quotes.
FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)


def start_instances(
    cluster: LocalCluster, folder: Path, count: int = 2, workers: int = 1, **env: str
) -> list[Gunicorn]:
    """``count`` app instances (separate gunicorn masters, production config) on the
    cluster."""
    settings = gunicorn_env(cluster, WIDGET_REDIS_CLUSTER="true", **env)  # type: ignore[arg-type]
    instances = []
    try:
        for n in range(count):
            sub = folder / f"app{n}"
            sub.mkdir(exist_ok=True)
            instance = Gunicorn(settings, workers=workers, folder=sub)
            instance.start()
            instances.append(instance)
    except BaseException:
        for instance in instances:
            instance.stop()
        raise
    return instances


def stored_hmac(email: str) -> str:
    """The dedup entry the service keeps for ``email`` (hex of its 16 bytes)."""
    address = canonical_email(email).address
    return _hmac_bytes(email_hmac(SECRET, STATEMENT, address)).hex()


@dataclass
class Endorsement:
    email: str
    answers: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, status)

    @property
    def final(self) -> int:
        return self.answers[-1][1] if self.answers else 0

    @property
    def acknowledged(self) -> bool:
        """Answered 201 or 200 at some point: the service said it is counted."""
        return any(status in (200, 201) for _, status in self.answers)


class Load:
    """``threads`` clients endorsing distinct emails through the instances in turn."""

    def __init__(self, instances: list[Gunicorn], threads: int = 8, prefix: str = "load") -> None:
        self.urls = [instance.url + endorsements_url() for instance in instances]
        self.threads = threads
        self.prefix = prefix
        self.stop = threading.Event()
        self.settle_by = 0.0  # after stop: how long an unsettled email is still retried
        self.endorsements: list[Endorsement] = []
        self.bad: list[tuple[int, str]] = []  # answers that are neither 2xx nor a 503 problem
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def finish(self, settle: float = 30.0) -> None:
        self.settle_by = time.monotonic() + settle
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=settle + 15)

    def _run(self, t: int) -> None:
        n = 0
        with requests.Session() as session:
            while not self.stop.is_set():
                endorsement = Endorsement(f"{self.prefix}{t}.{n}@example.org")
                with self._lock:
                    self.endorsements.append(endorsement)
                self._settle(session, endorsement, t + n)
                n += 1

    def _settle(self, session: requests.Session, endorsement: Endorsement, turn: int) -> None:
        body = person(turn, email=endorsement.email)
        while True:
            url = self.urls[turn % len(self.urls)]
            turn += 1
            try:
                response = session.post(url, json=body, timeout=10)
                status = response.status_code
            except requests.RequestException:
                status = 0
                session.close()
            endorsement.answers.append((time.monotonic(), status))
            if status in (200, 201):
                return
            if status == 503:
                if not _is_503_problem(response):
                    self.bad.append((status, "503 without problem+json and Retry-After"))
            elif status != 0:
                self.bad.append((status, response.text[:300]))
                return
            if self.stop.is_set() and time.monotonic() > self.settle_by:
                return
            time.sleep(0.1)

    # -- what happened ------------------------------------------------------------------
    def statuses(self) -> Counter[int]:
        return Counter(status for e in self.endorsements for _, status in e.answers)

    def first_201_after(self, moment: float) -> float | None:
        times = [at for e in self.endorsements for at, s in e.answers if s == 201 and at > moment]
        return min(times) if times else None

    def last_201_before(self, moment: float) -> float | None:
        times = [at for e in self.endorsements for at, s in e.answers if s == 201 and at < moment]
        return max(times) if times else None

    def longest_gap(self, start: float, end: float) -> tuple[float, float]:
        """The longest time without any 201 within [start, end]: (length, its start)."""
        times = sorted(
            at for e in self.endorsements for at, s in e.answers if s == 201 and start <= at <= end
        )
        edges = [start, *times, end]
        gaps = [(b - a, a) for a, b in itertools.pairwise(edges)]
        return max(gaps)

    def refusals_between(self, start: float, end: float) -> int:
        return sum(
            1
            for e in self.endorsements
            for at, s in e.answers
            if start <= at <= end and s in (0, 503)
        )


def _is_503_problem(response: requests.Response) -> bool:
    return (
        response.headers.get("Content-Type", "").startswith("application/problem+json")
        and response.json().get("status") == 503
        and bool(response.headers.get("Retry-After"))
    )


@dataclass
class Stored:
    count: int
    log_length: int
    tlog_length: int
    seen: set[str]


def stored(cluster: LocalCluster) -> Stored:
    client: Any = cluster.client()
    key = f"us:{{{STATEMENT}}}:"
    return Stored(
        count=int(client.get(key + "count") or 0),
        log_length=int(client.xlen(key + "log")),
        tlog_length=int(client.llen(key + "tlog")),
        seen=set(seen_hmacs(client)),
    )


def statement_slot(cluster: LocalCluster) -> int:
    client: Any = cluster.client()
    return int(client.keyslot(f"us:{{{STATEMENT}}}:count"))


class ReplicaWatch(threading.Thread):
    """Samples, every 50 ms, whether the master serving ``slot`` has a replica in sync
    (``INFO replication``: a replica ``online``). A 201 answered while it had none was
    acknowledged with no copy anywhere else: a second failure would lose it."""

    def __init__(self, cluster: LocalCluster, slot: int) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.slot = slot
        self.stop = threading.Event()
        self.samples: list[tuple[float, bool | None]] = []

    def run(self) -> None:
        while not self.stop.wait(0.05):
            at = time.monotonic()
            covered: bool | None
            try:
                master = self.cluster.master_of_slot(self.slot)
                info = self.cluster.node(master).info("replication")
                covered = any(
                    isinstance(v, dict) and v.get("state") == "online"
                    for k, v in info.items()
                    if str(k).startswith("slave")
                )
            except Exception:  # the master did not answer: unknown
                covered = None
            self.samples.append((at, covered))

    def unprotected(self, load: Load) -> int:
        """201s answered while the master positively had no replica in sync (both the
        sample before and the one after said so)."""
        times = [t for t, _ in self.samples]
        bare = 0
        for e in load.endorsements:
            for at, status in e.answers:
                i = bisect.bisect_left(times, at)
                inside = status == 201 and 0 < i < len(times)
                if inside and self.samples[i - 1][1] is False and self.samples[i][1] is False:
                    bare += 1
        return bare
