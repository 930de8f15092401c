"""The endorse script's own bookkeeping against a real Redis: entry ids (the minute and a
sequence number, never given twice) and the expiry of rate-limit windows."""

from __future__ import annotations

import time

from redis import Redis

from widget.abuse import TierLimits, tiers, windows
from widget.store import Endorsement, Guard, Store

SID = "dongelek-ystel"
LOG = f"us:{{{SID}}}:log"


def endorse(store: Store, i: int, guard: Guard | None = None) -> str:
    entry = Endorsement(email_hmac=f"h-{i}", name=f"P {i}", country="KZ", source="direct")
    result = store.endorse(SID, entry, guard or Guard())
    assert result.status == "counted", result
    return result.entry_id


def minute_ms(now: float) -> int:
    return int(now // 60) * 60_000


def test_ids_carry_the_minute_and_count_up_within_it(redis_client: Redis) -> None:
    store = Store(redis_client)
    before = minute_ms(time.time())
    ids = [endorse(store, i) for i in range(3)]
    after = minute_ms(time.time())
    ms = {int(entry.split("-")[0]) for entry in ids}
    assert ms <= {before, after}
    if ms == {before}:
        assert [int(entry.split("-")[1]) for entry in ids] == [0, 1, 2]
    assert ids == sorted(ids, key=lambda e: tuple(map(int, e.split("-"))))


def test_an_id_follows_a_later_last_id_and_a_deleted_one_is_never_given_again(
    redis_client: Redis,
) -> None:
    store = Store(redis_client)
    endorse(store, 0)
    # Another host, its clock ten minutes ahead, counted last; that entry was then withdrawn.
    ahead = minute_ms(time.time()) + 600_000
    redis_client.xadd(LOG, {"s": "direct", "p": "0"}, id=f"{ahead}-4")
    redis_client.xdel(LOG, f"{ahead}-4")
    assert endorse(store, 1) == f"{ahead}-5"
    assert endorse(store, 2) == f"{ahead}-6"


def test_a_rate_limit_window_expires_once_counted_and_keeps_its_expiry(
    redis_client: Redis,
) -> None:
    store = Store(redis_client)
    limits = TierLimits(
        windows("5/minute"), windows("30/minute"), windows("600/minute"), windows("3000/minute")
    )
    guard = Guard(tiers=tiers(limits, client="c", network="n", source="direct"))
    if time.time() % 60 > 59:  # both endorsements must fall in one minute's windows
        time.sleep(60 - time.time() % 60 + 0.01)
    endorse(store, 0, guard)
    keys = sorted(k.decode() for k in redis_client.keys(f"us:{{{SID}}}:rl:*"))
    assert len(keys) == 4  # one current window per tier

    def expiry(k: str) -> tuple[float, float]:
        """When ``k`` expires, as a range: its PTTL (whole milliseconds) is read some time
        between the two clock readings."""
        t0 = time.time()
        ms = redis_client.pttl(k)
        t1 = time.time()
        return t0 + ms / 1000 - 0.01, t1 + ms / 1000 + 0.01

    for k in keys:
        index = int(k.rsplit(":", 1)[1])  # the window's number: its start over its length
        low, high = expiry(k)
        assert low <= (index + 2) * 60 <= high, k  # the window and one more
    first = {k: expiry(k) for k in keys}
    endorse(store, 1, guard)
    for k in keys:
        low, high = expiry(k)
        assert low <= first[k][1] and first[k][0] <= high, k
        assert int(redis_client.get(k) or 0) == 2
