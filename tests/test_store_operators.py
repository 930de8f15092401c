"""Store parts of issue 10's operator half against a real Redis: arrival buckets and surges,
bulk strikes and their undo, the block list's storage."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from checks import clear_of_hour_end, count_subscription
from redis import Redis
from servers import RedisServer

from widget.store import BulkFilter, Endorsement, LogNotReady, Store
from widget.surge import Arrivals, assess, rate

SID = "dongelek-ystel"
ALLY = "https://ally.example"
OTHER = "https://other.example"
HASHES = ("count", "by_source", "by_country", "tl:m", "tl:h", "tl:d")


def key(name: str) -> str:
    return f"us:{{{SID}}}:{name}"


def endorse(store: Store, i: int | str, source: str = ALLY, country: str = "KZ") -> str:
    result = store.endorse(
        SID, Endorsement(email_hmac=f"h-{i}", name=f"P {i}", country=country, source=source)
    )
    assert result.status == "counted"
    return result.entry_id


def raw_state(redis: Redis) -> dict[str, Any]:
    """The count and every breakdown and timeline hash, field by field, as Redis holds them."""
    state: dict[str, Any] = {"count": redis.get(key("count"))}
    for name in HASHES[1:]:
        state[name] = redis.hgetall(key(name))
    return state


# -- surge arithmetic ----------------------------------------------------------------------


def test_rate_sliding_window_and_usual_rate() -> None:
    # 10 in each of the last 6 minute buckets, at 30 s into the current minute: the oldest
    # bucket is half inside the 5 minutes.
    r = rate([10] * 6, [0] * 24, 30, floor=30)
    assert r.recent == 55 and r.usual == 0 and r.threshold == 30 and r.surging
    # 24 hours of 12 per hour is 1 per 5 minutes: the floor still decides.
    assert rate([10] * 6, [12] * 24, 0, floor=30).usual == 1
    busy = rate([10] * 6, [1200] * 24, 0, floor=30)  # 100 per 5 minutes is usual
    assert busy.usual == 100 and busy.threshold == 500 and not busy.surging
    assert rate([200] * 6, [1200] * 24, 0, floor=30).surging  # 1000 > 500
    # exactly at the threshold is not above it
    assert not rate([6, 0, 0, 0, 0, 0], [0] * 24, 0, floor=6).surging
    assert rate([7, 0, 0, 0, 0, 0], [0] * 24, 0, floor=6).surging


def test_young_subject_is_averaged_over_its_own_hours() -> None:
    # First arrivals 3 hours back: 36 over 3 hours is 1 per 5 minutes, not 36 over 24 h.
    hours = [12, 12, 12] + [0] * 21
    assert rate([0] * 6, hours, 0, floor=1).usual == 1
    # Only the current hour has any: averaged over at least one hour, which is empty.
    assert rate([40] * 6, [0] * 24, 0, floor=30).usual == 0


def test_assess_names_sources_and_statement() -> None:
    quiet = {ALLY: 1}
    minutes = [{ALLY: 1, OTHER: 20}, {OTHER: 20}, quiet, quiet, quiet, {}]
    hours = [{ALLY: 600, OTHER: 12}] * 24  # the ally is busy as a rule, the other is not
    surge = assess(Arrivals(minutes=minutes, hours=hours, second=0), floor=30)
    assert list(surge.sources) == [OTHER, ALLY]  # busiest first
    assert surge.sources[OTHER].surging and not surge.sources[ALLY].surging
    assert surge.sources[OTHER].recent == 40
    # the statement as a whole (44 recent, usual 51) is not surging; the alert still is
    assert not surge.statement.surging and surge.alert
    assert surge.surging_sources == [OTHER]


# -- arrival buckets and Store.surge against Redis -------------------------------------------


def test_endorse_writes_expiring_arrival_buckets(redis_client: Redis) -> None:
    store = Store(redis_client)
    now = int(time.time())
    endorse(store, 1)
    endorse(store, 2, source="direct", country="")
    minute_keys = list(redis_client.scan_iter(key("src:m:*")))
    hour_keys = list(redis_client.scan_iter(key("src:h:*")))
    assert len(minute_keys) in (1, 2) and len(hour_keys) in (1, 2)  # a boundary may pass
    totals: dict[bytes, int] = {}
    for k in minute_keys:
        for field, n in redis_client.hgetall(k).items():
            totals[field] = totals.get(field, 0) + int(n)
        start = int(k.decode().rsplit(":", 1)[1])
        assert start % 60 == 0 and abs(start - now) < 120
        assert abs(time.time() + redis_client.ttl(k) - (start + 600)) <= 2
    assert totals == {ALLY.encode(): 1, b"direct": 1}
    for k in hour_keys:
        start = int(k.decode().rsplit(":", 1)[1])
        assert start % 3600 == 0
        assert abs(time.time() + redis_client.ttl(k) - (start + 26 * 3600)) <= 2
    # duplicates, closed and limited endorsements are not arrivals
    again = store.endorse(SID, Endorsement(email_hmac="h-1", name="P 1", source=ALLY))
    assert again.status == "duplicate"
    assert sum(int(v) for k in minute_keys for v in redis_client.hgetall(k).values()) == 2


def test_surge_fires_on_recent_arrivals_and_clears_with_time(redis_client: Redis) -> None:
    clear_of_hour_end()  # the 12 share one hour bucket, the usual rate an hour on
    store = Store(redis_client, surge_floor=10)
    for i in range(12):
        endorse(store, i, source=OTHER if i % 4 else ALLY)
    now = time.time()
    surge = store.surge(SID, now=now)
    assert surge.statement.surging and surge.statement.recent == 12
    assert surge.sources[OTHER].recent == 9 and not surge.sources[ALLY].surging
    assert store.surging(SID)  # the cached answer, for the challenge endpoint
    # Ten minutes on, the same buckets are out of the window.
    later = store.surge(SID, now=now + 600)
    assert not later.alert and later.statement.recent == 0
    # An hour on, they are the usual rate: 12 an hour is 1 per 5 minutes.
    assert store.surge(SID, now=now + 3600).statement.usual == 1


def test_surging_is_cached_per_process_for_a_few_seconds(redis_client: Redis) -> None:
    store = Store(redis_client, surge_floor=3)
    assert not store.surging(SID)
    for i in range(5):
        endorse(store, i)
    assert not store.surging(SID)  # the cached answer
    assert Store(redis_client, surge_floor=3).surging(SID)  # a fresh process sees it
    store._surges.clear()  # the cache is only a cache
    assert store.surging(SID)


def test_recent_countries_reads_the_last_five_minutes(redis_client: Redis) -> None:
    store = Store(redis_client)
    for i in range(6):
        endorse(store, i, country=("RU", "RU", "KZ", "", "RU", "KZ")[i])
    counts, read = store.recent_countries(SID)
    assert counts == {"RU": 3, "KZ": 2, "": 1} and read == 6
    assert store.recent_countries(SID, now=time.time() + 900) == ({}, 0)


# -- bulk strikes ------------------------------------------------------------------------------


def test_bulk_select_filters_and_skips_struck(redis_client: Redis) -> None:
    store = Store(redis_client)
    ids = [
        endorse(store, i, source=(ALLY, OTHER)[i % 2], country=("KZ", "RU", "")[i % 3])
        for i in range(12)
    ]
    store.strike(SID, ids[0], by="token")
    everything = store.bulk_select(SID, BulkFilter(source=ALLY))
    assert everything.ids == ids[2::2] and everything.upto == ids[-1]
    kz = store.bulk_select(SID, BulkFilter(source=ALLY, country="KZ"))
    assert kz.ids == [i for n, i in enumerate(ids) if n % 2 == 0 and n % 3 == 0 and n]
    # upto bounds it, and later entries are never selected
    assert store.bulk_select(SID, BulkFilter(source=ALLY), upto=ids[5]).ids == [ids[2], ids[4]]
    minute = int(ids[0].split("-")[0])
    assert (
        len(store.bulk_select(SID, BulkFilter(since_ms=minute, until_ms=minute + 60_000 * 10)).ids)
        == 11
    )
    assert store.bulk_select(SID, BulkFilter(since_ms=minute + 3_600_000)).ids == []
    assert store.bulk_select(SID, BulkFilter(until_ms=minute - 60_000)).ids == []
    assert store.bulk_select("nothing-here", BulkFilter(source=ALLY)).ids == []
    with pytest.raises(ValueError):
        store.bulk_select(SID, BulkFilter(source=ALLY), upto="bad")


def test_bulk_strike_does_what_single_strikes_do(redis_client: Redis) -> None:
    store = Store(redis_client)
    ids = [
        endorse(store, i, source=(ALLY, OTHER)[i % 2], country=("KZ", "RU", "")[i % 3])
        for i in range(9)
    ]
    match = BulkFilter(source=OTHER)
    targets = store.bulk_select(SID, match).ids
    assert targets == ids[1::2]
    # the same strikes one by one, on a copy of the statement
    for i in range(9):
        store.endorse(
            "copy", Endorsement(f"h-{i}", f"P {i}", ("KZ", "RU", "")[i % 3], (ALLY, OTHER)[i % 2])
        )
    copy_ids = [e.id for e in store.log("copy")]
    for n in range(1, 9, 2):
        store.strike("copy", copy_ids[n], by="token", reason="farm")

    result = store.strike_bulk(
        SID, store.bulk_select(SID, match), by="token", reason="farm", match=match
    )
    assert result.changed == 4 and result.count == 5 == store.count(SID)
    for name in HASHES[1:]:
        assert redis_client.hgetall(key(name)) == redis_client.hgetall(f"us:{{copy}}:{name}"), name
    for entry in store.log(SID):
        if entry.id in targets:
            assert entry.struck is not None
            assert entry.struck["bulk"] == result.bulk_id
            assert {k: v for k, v in entry.struck.items() if k != "bulk"}.keys() == {
                "by",
                "at",
                "reason",
            }
            assert entry.struck["by"] == "token" and entry.struck["reason"] == "farm"
        else:
            assert entry.struck is None
    info = store.bulk_info(SID, result.bulk_id)
    assert info is not None and info["struck"] == 4 and info["matched"] == 4
    assert info["filters"] == {"source": OTHER} and info["restored"] == 0
    # the transparency log gets the same strike entries as single strikes give
    assert store.log_size(SID) == store.log_size("copy") == 13
    assert tlog_lines(store, SID, 9, 13) == tlog_lines(store, "copy", 9, 13)
    assert [line["target"] for line in tlog_lines(store, SID, 9, 13)] == [1, 3, 5, 7]
    assert {line["kind"] for line in tlog_lines(store, SID, 9, 13)} == {"strike"}
    assert {line["reason"] for line in tlog_lines(store, SID, 9, 13)} == {"farm"}
    # and its undo the same unstrike entries
    store.undo_bulk(SID, result.bulk_id)
    for n in range(1, 9, 2):
        store.unstrike("copy", copy_ids[n])
    assert tlog_lines(store, SID, 13, 17) == tlog_lines(store, "copy", 13, 17)
    assert [line["kind"] for line in tlog_lines(store, SID, 13, 17)] == ["unstrike"] * 4
    for name in HASHES[1:]:
        assert redis_client.hgetall(key(name)) == redis_client.hgetall(f"us:{{copy}}:{name}"), name


def tlog_lines(store: Store, statement: str, start: int, stop: int) -> list[dict[str, Any]]:
    """Transparency-log lines, without their minute (two runs may straddle one)."""
    lines = [json.loads(line) for line in store.log_lines(statement, start, stop)]
    return [{k: v for k, v in line.items() if k != "at"} for line in lines]


def test_bulk_strike_waits_for_the_log_and_changes_nothing(redis_client: Redis) -> None:
    store = Store(redis_client)
    endorse(store, 1)
    redis_client.hdel(key("state"), "tlog")  # as while an upgrade prepares the log
    before = raw_state(redis_client)
    match = BulkFilter(source=ALLY)
    with pytest.raises(LogNotReady):
        store.strike_bulk(SID, store.bulk_select(SID, match), by="t", reason="r", match=match)
    assert raw_state(redis_client) == before
    assert not list(redis_client.scan_iter(key("bulk:*")))


def test_bulk_undo_restores_exactly_its_own(redis_client: Redis) -> None:
    store = Store(redis_client)
    ids = [endorse(store, i, source=(ALLY, OTHER)[i % 2]) for i in range(10)]
    before = raw_state(redis_client)
    store.strike(SID, ids[1], by="console", reason="by hand")  # struck before: not the bulk's
    match = BulkFilter(source=OTHER)
    result = store.strike_bulk(
        SID, store.bulk_select(SID, match), by="token", reason="x", match=match
    )
    assert result.changed == 4  # 3, 5, 7, 9
    store.unstrike(SID, ids[3])  # restored by hand meanwhile
    store.unstrike(SID, ids[5])
    store.strike(SID, ids[5], by="console", reason="again, by hand")  # and struck by hand
    undone = store.undo_bulk(SID, result.bulk_id)
    assert undone.changed == 2  # 7 and 9
    struck = {k.decode() for k in redis_client.hkeys(key("struck"))}
    assert struck == {ids[1], ids[5]}
    assert store.undo_bulk(SID, result.bulk_id).changed == 0  # a second undo changes nothing
    assert not redis_client.exists(key(f"bulk:{result.bulk_id}"))
    store.unstrike(SID, ids[1])
    store.unstrike(SID, ids[5])
    assert raw_state(redis_client) == before
    info = store.bulk_info(SID, result.bulk_id)
    assert info is not None and info["restored"] == 2
    for bad in ("0123456789ab", "nonsense", "../x"):
        with pytest.raises(KeyError):
            store.undo_bulk(SID, bad)


def test_bulk_publishes_once_per_batch(redis_client: Redis) -> None:
    store = Store(redis_client)
    for i in range(3):
        endorse(store, i)
    pubsub = count_subscription(redis_client, store, SID)
    assert pubsub.get_message(timeout=1) is not None  # subscribed
    match = BulkFilter(source=ALLY)
    result = store.strike_bulk(SID, store.bulk_select(SID, match), by="t", reason="r", match=match)
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"0"
    assert pubsub.get_message(timeout=0.3) is None
    store.undo_bulk(SID, result.bulk_id)
    message = pubsub.get_message(timeout=2)
    assert message is not None and message["data"] == b"3"
    pubsub.close()


def tally(store: Store, only: Any = None) -> dict[str, Any]:
    """The count, breakdowns and timelines recomputed from the record (live entries of
    ``only``'s choosing), in the form Redis keeps them."""
    state: dict[str, Any] = {name: {} for name in HASHES[1:]}
    count = 0

    def bump(name: str, field: str | int) -> None:
        field_b = str(field).encode()
        state[name][field_b] = state[name].get(field_b, 0) + 1

    for entry in store.log(SID):
        if entry.struck is not None or (only is not None and not only(entry)):
            continue
        count += 1
        bump("by_source", entry.source)
        if entry.country:
            bump("by_country", entry.country)
        sec = entry.time_ms // 1000
        bump("tl:m", sec - sec % 60)
        bump("tl:h", sec - sec % 3600)
        bump("tl:d", sec - sec % 86400)
    state = {k: {f: str(n).encode() for f, n in v.items()} for k, v in state.items()}
    return {"count": str(count).encode() if count else None, **state}


def test_bulk_strike_and_undo_in_many_batches_under_concurrent_endorsements(
    redis_client: Redis, redis_server: RedisServer
) -> None:
    store = Store(redis_client)
    for i in range(1200):
        endorse(
            store,
            f"seed-{i}",
            source=(ALLY, OTHER, "direct")[i % 3],
            country=("KZ", "RU", "DE", "")[i % 4],
        )
    before = raw_state(redis_client)
    assert before == tally(store)
    match = BulkFilter(source=OTHER)
    selection = store.bulk_select(SID, match)
    assert len(selection.ids) == 400
    added: list[int] = []

    def endorsing_meanwhile(step: Any) -> Any:
        stop = threading.Event()
        # The step starts once every thread has counted one (a cluster client takes a
        # moment to learn the slots; the step must not finish before they begin).
        running = threading.Barrier(5)

        def keep_endorsing(worker: int) -> None:
            own = Store(redis_server.client())
            n = 0
            while not n or not stop.is_set():
                own.endorse(SID, Endorsement(f"new-{worker}-{len(added)}-{n}", "New", "KZ", OTHER))
                n += 1
                if n == 1:
                    running.wait(timeout=30)
            added.append(n)

        threads = [threading.Thread(target=keep_endorsing, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            running.wait(timeout=30)
            return step()
        finally:
            stop.set()
            for t in threads:
                t.join()

    result = endorsing_meanwhile(
        lambda: store.strike_bulk(SID, selection, by="token", reason="farm", match=match)
    )
    assert result.changed == 400
    first = sum(added)
    assert first > 0
    assert store.count(SID) == 1200 + first - 400
    assert raw_state(redis_client) == tally(store)  # every breakdown follows exactly
    assert redis_client.scard(key(f"bulk:{result.bulk_id}")) == 400

    undone = endorsing_meanwhile(lambda: store.undo_bulk(SID, result.bulk_id))
    assert undone.changed == 400 and sum(added) > first
    assert store.count(SID) == 1200 + sum(added) == store.log_length(SID)
    assert redis_client.hlen(key("struck")) == 0
    after = raw_state(redis_client)
    assert after == tally(store)
    # Less what arrived meanwhile, every hash is what it was before, field by field.
    assert tally(store, only=lambda e: e.name != "New") == before


# -- the block list's storage ----------------------------------------------------------------


def test_blocks_are_added_listed_removed_and_pruned(redis_client: Redis) -> None:
    store = Store(redis_client)
    now = int(time.time())
    a = store.add_block({"kind": "email_domain", "domain": "spam.example", "expires": None})
    b = store.add_block({"kind": "email_domain", "domain": "old.example", "expires": now + 60})
    assert len(a) == 8 and a != b
    assert set(store.blocks()) == {a, b}
    assert store.prune_blocks(now=now + 30) == 0
    assert store.prune_blocks(now=now + 60) == 1
    assert set(store.blocks()) == {a}
    assert store.remove_block(a) and not store.remove_block(a)
    assert store.blocks() == {}
    assert redis_client.type("us:blocks") == b"none"
