"""Store moderation and operator views against a real Redis: strike, unstrike, stats, page."""

from __future__ import annotations

import json
import threading
import time

import pytest
from checks import count_subscription, stable_timeline
from redis import Redis

from widget.store import Endorsement, Store

SID = "dongelek-ystel"


def fill(store: Store, n: int = 6) -> list[str]:
    ids = []
    for i in range(n):
        result = store.endorse(
            SID,
            Endorsement(
                email_hmac=f"hmac-{i}",
                name=f"Person {i}",
                country=("KZ", "DE", "")[i % 3],
                source=("https://ally.example", "direct")[i % 2],
                public=i % 2 == 0,
            ),
        )
        ids.append(result.entry_id)
    return ids


def snapshot(store: Store) -> dict[str, object]:
    stats = store.stats(SID)
    return {
        **{k: stats[k] for k in ("count", "by_source", "by_country")},
        "timeline": stable_timeline(stats["timeline"]),
    }


def test_strike_and_unstrike_move_count_and_every_breakdown(redis_client: Redis) -> None:
    store = Store(redis_client)
    ids = fill(store)
    before = snapshot(store)
    assert before["count"] == 6
    assert before["by_country"] == {"DE": 2, "KZ": 2}
    assert before["by_source"] == {"direct": 3, "https://ally.example": 3}

    changed, count = store.strike(SID, ids[0], by="token", reason="spam")
    assert (changed, count) == (True, 5)
    after = store.stats(SID)
    assert after["count"] == 5 == store.count(SID)
    assert after["by_source"] == {"direct": 3, "https://ally.example": 2}
    assert after["by_country"] == {"DE": 2, "KZ": 1}
    minute = sum(n for _, n in after["timeline"]["minute"])
    hour = sum(n for _, n in after["timeline"]["hour"])
    day = sum(n for _, n in after["timeline"]["day"])
    assert minute == hour == day == 5

    mark = json.loads(redis_client.hget(f"us:{{{SID}}}:struck", ids[0]) or "{}")
    assert mark["by"] == "token" and mark["reason"] == "spam"
    assert abs(mark["at"] - time.time()) < 5
    # the log keeps it, marked
    logged = {e.id: e for e in store.log(SID)}
    assert logged[ids[0]].struck is not None and logged[ids[0]].struck["by"] == "token"
    assert ids[0] not in [e.id for e in store.recent(SID, 10)]

    assert store.strike(SID, ids[0], by="console") == (False, 5)  # idempotent
    assert json.loads(redis_client.hget(f"us:{{{SID}}}:struck", ids[0]) or "{}")["by"] == "token"

    assert store.unstrike(SID, ids[0]) == (True, 6)
    assert store.unstrike(SID, ids[0]) == (False, 6)
    assert snapshot(store) == before
    assert all(e.struck is None for e in store.log(SID))


def test_unknown_entry_raises_key_error(redis_client: Redis) -> None:
    store = Store(redis_client)
    fill(store, 1)
    for bad in ("1-1", "99999999999999-0", "nonsense", ""):
        with pytest.raises(KeyError):
            store.strike(SID, bad, by="token")
        with pytest.raises(KeyError):
            store.unstrike(SID, bad)
    assert store.count(SID) == 1


def test_strike_publishes_new_count(redis_client: Redis) -> None:
    store = Store(redis_client)
    ids = fill(store, 3)
    pubsub = count_subscription(redis_client, store, SID)
    pubsub.get_message(timeout=1)  # subscribe confirmation
    store.strike(SID, ids[1], by="token")
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"2"
    store.unstrike(SID, ids[1])
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"3"
    pubsub.close()


def test_concurrent_strikes_decrement_once(redis_client: Redis, redis_server: object) -> None:
    store = Store(redis_client)
    ids = fill(store, 4)
    results: list[tuple[bool, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(24)

    def worker() -> None:
        own = Store(redis_server.client())  # type: ignore[attr-defined]
        barrier.wait()
        result = own.strike(SID, ids[2], by="token")
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for changed, _ in results if changed) == 1
    assert store.count(SID) == 3
    assert sum(store.stats(SID)["by_source"].values()) == 3


def test_stats_timelines_are_zero_filled(redis_client: Redis) -> None:
    store = Store(redis_client)
    fill(store, 2)
    now = time.time()
    tl = store.stats(SID, now=now)["timeline"]
    assert len(tl["minute"]) == 60 and len(tl["hour"]) == 72
    assert tl["minute"][-1][0] == int(now) - int(now) % 60
    assert tl["minute"][1][0] - tl["minute"][0][0] == 60
    assert tl["hour"][1][0] - tl["hour"][0][0] == 3600
    assert tl["minute"][-1][1] + tl["minute"][-2][1] == 2
    assert tl["day"] == [[int(now) - int(now) % 86400, 2]]
    # a day-old bucket written by hand shows with the gap in between filled
    redis_client.hset(f"us:{{{SID}}}:tl:d", str(int(now) - int(now) % 86400 - 2 * 86400), 4)
    days = store.stats(SID, now=now)["timeline"]["day"]
    assert [n for _, n in days] == [4, 0, 2]
    assert Store(redis_client).stats("nothing-here")["timeline"]["day"] == []


def test_page_newest_first_with_exclusive_cursor(redis_client: Redis) -> None:
    store = Store(redis_client)
    ids = fill(store, 7)
    store.strike(SID, ids[4], by="console")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        entries, cursor = store.page(SID, cursor, limit=3)
        pages += 1
        seen.extend(e.id for e in entries)
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))
    entries, nxt = store.page(SID, None, limit=7)
    assert nxt is None and len(entries) == 7
    struck = {e.id: e.struck for e in entries}
    assert struck[ids[4]] is not None and struck[ids[4]]["by"] == "console"
    assert all(v is None for k, v in struck.items() if k != ids[4])
    with pytest.raises(ValueError):
        store.page(SID, "not-a-cursor")
