"""Bench: the transparency log on the real service (gunicorn with the production config,
a throwaway redis-server on loopback).

  1. sealing under load: ``wrk`` POSTs endorsements (bench/endorse.lua: a new email and
     client address each, an allied Origin, the production rate limit, proof of work off)
     for ``--load-seconds``; every 100 ms the log's size and sealed size are read from
     Redis. Reported: the largest unsealed backlog, in entries and in seconds of arrivals
     at the run's mean rate (target: never over 5 s), and how long the last ones waited.
  2. a log of ``--entries`` endorsements (100,000) in a statement of its own, written fast
     through the store's own scripts (not HTTP) with realistic names, countries, sources and
     public choices, plus 1 % strikes and 0.5 % withdrawals, then sealed at once. Reported:
     Redis ``used_memory`` grown per endorsement, and where it goes (``MEMORY USAGE`` per
     key type; target <= 400 B, the log included); ``undersign verify`` of the whole log
     against the service, with ``--key``, ``--receipt`` and ``--state``, timed (target
     <= 15 s); and the answer times of the proof and receipt endpoints at that size.

    python bench/tlog.py [--entries 100000] [--load-seconds 15] [--connections 64]

Exit status: 0 all targets met, 2 a target missed, 1 a check failed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import redis
import requests
from api import ALLY, ENDORSE_LIMIT, ENDORSE_PATH, SECRET, STATEMENT, gunicorn, run_wrk
from common import redis_server

from widget.store import Endorsement, Store
from widget.tlog.entries import commitment, endorse_template, minute
from widget.tlog.sealer import Sealer
from widget.transparency import LogKey
from widget.validation import first_name

BENCH_DIR = Path(__file__).resolve().parent
BIG = "bench-log"  # the statement holding the large log
MEMORY_TARGET = 400
VERIFY_TARGET_S = 15.0
BACKLOG_TARGET_S = 5.0

FIRST = [
    "Aigerim", "Yerlan", "Zhanna", "Nurlan", "Dana", "Bolat", "Айгуль", "Ерлан", "Жанна",
    "Асель", "Marie", "Hans", "Sophie", "Lukas", "Camille", "Olga", "Dmitri", "Madina",
]  # fmt: skip
LAST = [
    "Nurlanovna", "Bekov", "Akhmetova", "Сейткали", "Жумабаев", "Dupont", "Müller",
    "Schmidt", "Ivanova", "Petrov", "Omarova", "Lefèvre", "",
]  # fmt: skip
ALLIES = ["https://ally.example", "https://news.example.kz", "https://ngo.example.org"]
SOURCES = ["direct"] * 5 + ALLIES
COUNTRIES = ["KZ"] * 6 + ["RU", "DE", "FR", "KG", "UZ", ""] + [""] * 3


def statement_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{BIG}.md"
    path.write_text(
        f'+++\nid = "{BIG}"\ntitle = "A statement for the log bench"\ngoal = 100000\n+++\n\n'
        "We agree, and we say so in public.\n",
        encoding="utf-8",
    )
    return path


def sealing_under_load(
    url: str, store: Store, seconds: float, connections: int, threads: int
) -> dict[str, float]:
    """Endorse over HTTP with wrk while watching the unsealed backlog."""
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            progress = store.log_progress(STATEMENT)
            samples.append((time.monotonic(), progress.size, progress.sealed))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = run_wrk(url + ENDORSE_PATH, seconds, connections, threads, BENCH_DIR / "endorse.lua")
    ended = time.monotonic()
    while store.log_progress(STATEMENT).unsealed:
        time.sleep(0.05)
    drained = time.monotonic() - ended
    stop.set()
    watcher.join()
    during = [s for s in samples if s[0] <= ended]
    first, last = during[0], during[-1]
    rate = (last[1] - first[1]) / max(1e-9, last[0] - first[0])
    worst = max(size - sealed for _, size, sealed in during)
    return {
        "requests_per_s": result.requests_per_s,
        "non_2xx": result.non_2xx,
        "arrivals_per_s": rate,
        "max_unsealed": worst,
        "max_backlog_s": worst / rate if rate else 0.0,
        "drained_s": drained,
        "p99_ms": result.p99_ms or 0.0,
    }


def fill(store: Store, n: int, text: str) -> list[str]:
    """``n`` endorsements through the store's scripts (several connections at once), then
    1 % struck and 0.5 % withdrawn; the receipt secrets of those still counted."""
    rng = random.Random(11)
    people = []
    for i in range(n):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}".strip()
        public = rng.random() < 0.4
        country = rng.choice(COUNTRIES)
        people.append((i, name, public, country, rng.choice(SOURCES), secrets.token_urlsafe(24)))

    def one(person: tuple[int, str, bool, str, str, str]) -> str:
        i, name, public, country, source, secret = person
        commit = commitment(secret)
        entry = endorse_template(
            minute(datetime.now(UTC)),
            country=(country or None) if public else None,
            source=source,
            name=first_name(name) if public else None,
            text=text,
            commit=commit,
        )
        email = hashlib.sha256(f"bench-{i}@example.org".encode()).hexdigest()
        result = store.endorse(
            BIG,
            Endorsement(email, name, country, source, public, entry=entry, commit=commit),
        )
        assert result.status == "counted", result
        return result.entry_id

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(one, people, chunksize=200))
    struck = set(rng.sample(range(n), n // 100))
    for k in struck:
        store.strike(BIG, ids[k], by="bench", reason="duplicate sign-ups from one network")
    left = [k for k in range(n) if k not in struck]
    withdrawn = set(rng.sample(left, n // 200))
    for k in withdrawn:
        assert store.withdraw(BIG, commitment(people[k][5])) is not None
    return [people[k][5] for k in left if k not in withdrawn]


def memory_by_kind(client: redis.Redis, n: int) -> list[tuple[str, float]]:
    totals: dict[str, int] = {}
    for key in client.scan_iter(match=f"us:{{{BIG}}}:*", count=1000):
        kind = key.decode().split(":")[2]
        totals[kind] = totals.get(kind, 0) + int(client.memory_usage(key, samples=0) or 0)
    return sorted(((k, v / n) for k, v in totals.items()), key=lambda kv: -kv[1])


def timed_gets(session: requests.Session, urls: list[str]) -> tuple[float, float]:
    times = []
    for url in urls:
        start = time.perf_counter()
        response = session.get(url, timeout=30)
        times.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, (url, response.status_code, response.text[:200])
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def undersign() -> str:
    return str(Path(sys.executable).with_name("undersign"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--load-seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--proofs", type=int, default=300)
    args = parser.parse_args()
    misses: list[str] = []
    with tempfile.TemporaryDirectory(prefix="undersign-bench-tlog-") as tmp:
        folder = Path(tmp)
        statements = folder / "statements"
        statement_file(statements)
        with redis_server(folder) as (redis_url, _):
            client = redis.Redis.from_url(redis_url)
            store = Store(client)
            env = {
                "WIDGET_REDIS_URL": redis_url,
                "WIDGET_SECRET_KEY": SECRET,
                "WIDGET_ALLOWED_ORIGINS": ALLY,
                "WIDGET_ENDORSE_LIMIT": ENDORSE_LIMIT,  # per client: each request has its own
                # wrk's addresses share /24s and one source: those tiers would refuse most
                "WIDGET_NETWORK_LIMIT": "1000000/minute",
                "WIDGET_SOURCE_LIMIT": "1000000/minute",
                "WIDGET_STATEMENT_LIMIT": "1000000/minute",
                "WIDGET_TRUSTED_PROXIES": "127.0.0.1",
                "WIDGET_POW": "off",
                "WIDGET_STATEMENTS_DIR": str(statements),
            }
            with gunicorn("widget:create_app()", env, args.workers, folder / "g.log") as server:
                url = f"http://127.0.0.1:{server.port}"
                print(
                    f"1. sealing under load: wrk, {args.connections} connections, "
                    f"{args.load_seconds:g} s, {args.workers} gunicorn workers, proof of work off",
                    flush=True,
                )
                load = sealing_under_load(
                    url, store, args.load_seconds, args.connections, args.threads
                )
                print(
                    f"   {load['requests_per_s']:.0f} endorsements/s over HTTP "
                    f"({load['arrivals_per_s']:.0f}/s into the log, {load['non_2xx']:.0f} "
                    f"non-2xx, p99 {load['p99_ms']:.0f} ms); largest unsealed backlog "
                    f"{load['max_unsealed']:.0f} entries = {load['max_backlog_s']:.2f} s of "
                    f"arrivals (target <= {BACKLOG_TARGET_S:g} s); all sealed "
                    f"{load['drained_s']:.2f} s after the load stopped",
                    flush=True,
                )
                if load["max_backlog_s"] > BACKLOG_TARGET_S:
                    misses.append("sealing backlog")

                n = args.entries
                print(f"2. a log of {n:,} endorsements through the store's scripts", flush=True)
                client.hset(f"us:{{{BIG}}}:state", "tlog", "ready")
                before = int(client.info("memory")["used_memory"])
                text = hashlib.sha256(b"We agree, and we say so in public.\n").hexdigest()
                start = time.perf_counter()
                kept = fill(store, n, text)
                wrote = time.perf_counter() - start
                config = {"SECRET_KEY": SECRET, "PUBLIC_URL": "", "LOG_KEY": ""}
                sealer = Sealer(store, LogKey(config, store).load)
                start = time.perf_counter()
                size = sealer.seal_all(BIG)
                sealed = time.perf_counter() - start
                time.sleep(1)
                grown = int(client.info("memory")["used_memory"]) - before
                per = grown / n
                print(
                    f"   written in {wrote:.1f} s (the service sealing meanwhile), the rest of "
                    f"{size:,} entries sealed in {sealed:.1f} s",
                    flush=True,
                )
                print(
                    f"   Redis used_memory grew {grown / 1e6:.1f} MB: {per:.0f} B per "
                    f"endorsement, the log included (target <= {MEMORY_TARGET})",
                    flush=True,
                )
                for kind, bytes_ in memory_by_kind(client, n):
                    if bytes_ >= 0.5:
                        print(f"     {kind:<10} {bytes_:7.1f} B per endorsement")
                if per > MEMORY_TARGET:
                    misses.append("memory")

                vkey = requests.get(url + "/api/v1/log/key", timeout=10).text.strip()
                state = folder / "verify-state.json"
                command = [
                    undersign(), "verify", url, BIG, "--key", vkey,
                    "--receipt", kept[len(kept) // 2], "--state", str(state),
                ]  # fmt: skip
                start = time.perf_counter()
                run = subprocess.run(command, capture_output=True, text=True, timeout=600)
                took = time.perf_counter() - start
                print(
                    f"   undersign verify of {size:,} entries: {took:.1f} s "
                    f"(target <= {VERIFY_TARGET_S:g} s), exit {run.returncode}",
                    flush=True,
                )
                for line in run.stdout.splitlines():
                    print("     | " + line)
                if run.returncode != 0:
                    print(run.stderr)
                    return 1
                if took > VERIFY_TARGET_S:
                    misses.append("verify")

                rng = random.Random(3)
                base = f"{url}/api/v1/statements/{BIG}"
                session = requests.Session()
                k = args.proofs
                inclusion = [
                    f"{base}/proof/inclusion?index={rng.randrange(size)}&size={size}"
                    for _ in range(k)
                ]
                consistency = []
                for _ in range(k):
                    old = rng.randrange(1, size)
                    consistency.append(f"{base}/proof/consistency?from={old}&to={size}")
                receipts = [
                    f"{base}/receipts/{commitment(s)}" for s in rng.sample(kept, min(k, len(kept)))
                ]
                starts = [rng.randrange(max(1, size - 1000)) for _ in range(50)]
                pages = [f"{base}/log?start={s}&limit=1000" for s in starts]
                for label, urls in (
                    ("inclusion proof", inclusion),
                    ("consistency proof", consistency),
                    ("receipt (with its proof)", receipts),
                    ("log page of 1,000 lines", pages),
                ):
                    p50, p95 = timed_gets(session, urls)
                    print(
                        f"   {label} at {size:,}: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                        f"({len(urls)} requests)"
                    )
    if misses:
        print("MISSED: " + ", ".join(misses))
        return 2
    print("All targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
