"""The store's email-confirmation scripts against the real redis-server: one atomic step to
hold an endorsement until its owner confirms, one to confirm it exactly as a direct one
counts, one to drop it when its mail cannot be sent."""

from __future__ import annotations

import hashlib
import time

import pytest
from checks import STATEMENT, count_subscription, seen_hmacs, store_state, utc_minute
from redis import Redis

from widget.privacy import email_hmac
from widget.store import (
    MAIL_QUIET,
    Endorsement,
    Guard,
    PendingEndorsement,
    PendingRecord,
    Store,
    Tier,
    TokenLookup,
    Window,
)
from widget.tlog.entries import commitment, endorse_template, parse_line, sha256_hex

KEY = f"us:{{{STATEMENT}}}:"
TTL = 3600


def hmac_of(n: int) -> str:
    return email_hmac("secret", STATEMENT, f"person{n}@example.org")


def pending(n: int, **extra: object) -> PendingEndorsement:
    values: dict[str, object] = {
        "email_hmac": hmac_of(n),
        "name": f"Person {n}",
        "country": "KZ",
        "source": "https://ally.example",
        "public": True,
        "lang": "ru",
        "text": sha256_hex(b"text"),
    }
    values.update(extra)
    return PendingEndorsement(**values)  # type: ignore[arg-type]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def confirm(store: Store, token: str) -> tuple[TokenLookup, object]:
    found = store.lookup_token([STATEMENT], token_hash(token))
    if found.record is None:
        return found, None
    record: PendingRecord = found.record
    commit = commitment(f"receipt-{token}")
    entry = endorse_template(
        utc_minute(),
        country=record.country if record.public else None,
        source=record.source,
        name="Person" if record.public else None,
        text=record.text,
        commit=commit,
    )
    return found, store.confirm(STATEMENT, token_hash(token), record, entry, commit)


@pytest.fixture
def store(redis_client: Redis) -> Store:
    return Store(redis_client)


def test_a_new_address_gets_a_link_and_the_count_does_not_move(
    store: Store, redis_client: Redis
) -> None:
    result = store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t1"), TTL)
    assert (result.status, result.count, result.mail) == ("pending", 0, "link")
    assert store_state(redis_client).count == 0
    assert seen_hmacs(redis_client) == []
    found = store.lookup_token([STATEMENT], token_hash("t1"))
    assert found.state == "pending" and found.statement_id == STATEMENT
    assert found.record is not None
    assert (found.record.name, found.record.country, found.record.lang) == ("Person 1", "KZ", "ru")
    assert found.record.email_hmac == bytes.fromhex(hmac_of(1))[:16]
    assert 0 < redis_client.ttl(KEY + "cf:" + token_hash("t1")) <= TTL
    assert store.confirmation_stats([STATEMENT])[STATEMENT] == {
        "pending": 1,
        "asked": 1,
        "confirmed": 0,
        "dropped": 0,
    }


def test_again_within_ten_minutes_sends_nothing_then_a_new_link_replaces_the_old(
    store: Store, redis_client: Redis
) -> None:
    store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t1"), TTL)
    again = store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t2"), TTL)
    assert (again.status, again.mail) == ("pending", "none")
    assert store.lookup_token([STATEMENT], token_hash("t2")).state == "unknown"
    throttle = KEY + "cfm:" + bytes.fromhex(hmac_of(1))[:16].hex()
    assert 0 < redis_client.ttl(throttle) <= MAIL_QUIET
    redis_client.delete(throttle)  # ten minutes later
    later = store.ask_confirmation(STATEMENT, pending(1, name="Renamed"), Guard(), "ab" * 32, TTL)
    assert (later.status, later.mail) == ("pending", "link")
    assert store.lookup_token([STATEMENT], token_hash("t1")).state == "replaced"
    fresh = store.lookup_token([STATEMENT], "ab" * 32)
    assert fresh.record is not None and fresh.record.name == "Renamed"
    stats = store.confirmation_stats([STATEMENT])[STATEMENT]
    assert (stats["pending"], stats["asked"]) == (1, 1)  # one person asked, once


def test_confirming_counts_exactly_as_a_direct_endorsement(
    store: Store, redis_client: Redis
) -> None:
    store.endorse(STATEMENT, Endorsement(hmac_of(9), "Direct", source="direct"))
    store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t1"), TTL)
    pubsub = count_subscription(redis_client, store)
    pubsub.get_message(timeout=1)  # the subscription's confirmation
    minute_before = utc_minute()
    found, result = confirm(store, "t1")
    assert result is not None
    assert (result.status, result.count) == ("counted", 2)  # type: ignore[attr-defined]
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.1)
        if message:
            break
    assert message is not None and message["data"] == b"2"
    pubsub.close()
    state = store_state(redis_client)
    assert (state.count, state.log_length, state.seen) == (2, 2, 2)
    assert state.by_source == {"direct": 1, "https://ally.example": 1}
    assert redis_client.hgetall(KEY + "by_country") == {b"KZ": b"1"}
    entries = list(store.log(STATEMENT))
    assert [(e.name, e.confirmed) for e in entries] == [("Direct", False), ("Person 1", True)]
    assert entries[1].country == "KZ" and entries[1].public
    # The transparency log's line, at the minute of confirming.
    line = parse_line(store.log_lines(STATEMENT, 1, 2)[0], 1)
    assert line["kind"] == "endorse" and line["source"] == "https://ally.example"
    assert line["at"] in {minute_before, utc_minute()}  # the minute may turn meanwhile
    assert line["text"] == sha256_hex(b"text")
    receipt = store.receipt(STATEMENT, commitment("receipt-t1"))
    assert receipt is not None and receipt.status == "counted" and receipt.index == 1
    # Single use; the pending record and its address index are gone.
    assert store.lookup_token([STATEMENT], token_hash("t1")).state == "used"
    again, second = confirm(store, "t1")
    assert again.state == "used" and second is None
    gone = store.confirm(STATEMENT, token_hash("t1"), found.record, *_entry())  # type: ignore[arg-type]
    assert (gone.status, gone.gone, gone.count) == ("gone", "used", 2)
    assert not list(redis_client.scan_iter(KEY + "cf:*"))
    assert not list(redis_client.scan_iter(KEY + "cfi:*"))
    stats = store.confirmation_stats([STATEMENT])[STATEMENT]
    assert stats == {"pending": 0, "asked": 1, "confirmed": 1, "dropped": 0}
    # The same address again: a direct endorsement is a duplicate; through confirmation
    # an "already endorsed" mail (once in 10 minutes), and the count stays.
    assert store.endorse(STATEMENT, Endorsement(hmac_of(1), "x")).status == "duplicate"
    redis_client.delete(KEY + "cfm:" + bytes.fromhex(hmac_of(1))[:16].hex())
    already = store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t3"), TTL)
    assert (already.status, already.mail, already.count) == ("pending", "already", 2)
    quiet = store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t4"), TTL)
    assert quiet.mail == "none"
    assert store.lookup_token([STATEMENT], token_hash("t3")).state == "unknown"


def _entry() -> tuple[object, str]:
    commit = commitment("other")
    entry = endorse_template(
        "2026-01-01T00:00Z", country=None, source="direct", name=None, text="0" * 64, commit=commit
    )
    return entry, commit


def test_an_address_that_endorsed_meanwhile_is_not_counted_twice(
    store: Store, redis_client: Redis
) -> None:
    store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t1"), TTL)
    store.endorse(STATEMENT, Endorsement(hmac_of(1), "Direct"))  # e.g. the option switched
    _, result = confirm(store, "t1")
    assert (result.status, result.count) == ("duplicate", 1)  # type: ignore[attr-defined]
    assert store.lookup_token([STATEMENT], token_hash("t1")).state == "used"
    assert store_state(redis_client).log_length == 1


def test_expired_unknown_closed_and_dropped(store: Store, redis_client: Redis) -> None:
    store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t1"), 1)
    time.sleep(1.2)
    assert store.lookup_token([STATEMENT], token_hash("t1")) == TokenLookup(
        "expired", STATEMENT, "ru"
    )
    assert store.lookup_token([STATEMENT, "other"], token_hash("nope")).state == "unknown"
    assert store.confirmation_stats([STATEMENT])[STATEMENT]["pending"] == 0
    # Closed: the confirmation waits, the token is kept.
    store.ask_confirmation(STATEMENT, pending(2), Guard(), token_hash("t2"), TTL)
    store.set_closed(STATEMENT, True)
    _, closed = confirm(store, "t2")
    assert closed.status == "closed"  # type: ignore[attr-defined]
    assert store.lookup_token([STATEMENT], token_hash("t2")).state == "pending"
    refused = store.ask_confirmation(STATEMENT, pending(3), Guard(), token_hash("t3"), TTL)
    assert refused.status == "closed" and refused.mail == ""
    store.set_closed(STATEMENT, False)
    # Its mail could not be sent: dropped, once.
    assert store.drop_pending(STATEMENT, token_hash("t2"))
    assert not store.drop_pending(STATEMENT, token_hash("t2"))
    assert store.lookup_token([STATEMENT], token_hash("t2")).state == "expired"
    assert not store.pending_alive(STATEMENT, token_hash("t2"))
    stats = store.confirmation_stats([STATEMENT])[STATEMENT]
    assert (stats["pending"], stats["dropped"]) == (0, 1)
    assert store_state(redis_client).count == 0


def test_tiers_and_proof_of_work_apply_whatever_the_address(
    store: Store, redis_client: Redis
) -> None:
    tier = Tier("client", "c1", (Window(2, 60),))
    guard = Guard(tiers=(tier,), pow_nonce="n1", pow_ttl=60)
    first = store.ask_confirmation(STATEMENT, pending(1), guard, token_hash("t1"), TTL)
    assert first.mail == "link"
    # The same solution again from the same address (a lost answer): answered again,
    # no mail, no quota; from another address: refused.
    retry = store.ask_confirmation(STATEMENT, pending(1), guard, token_hash("t2"), TTL)
    assert (retry.status, retry.mail) == ("pending", "none")
    replay = store.ask_confirmation(STATEMENT, pending(2), guard, token_hash("t3"), TTL)
    assert replay.status == "replay"
    # A pending address uses the quota as a new one does: the second, then refused.
    guard2 = Guard(tiers=(tier,))
    assert store.ask_confirmation(STATEMENT, pending(1), guard2, token_hash("t4"), TTL).mail == (
        "none"
    )
    limited = store.ask_confirmation(STATEMENT, pending(5), guard2, token_hash("t5"), TTL)
    assert (limited.status, limited.tier) == ("limited", "client")
    assert limited.retry_after >= 1
    assert store.lookup_token([STATEMENT], token_hash("t5")).state == "unknown"


def test_what_a_pending_endorsement_keeps(store: Store, redis_client: Redis) -> None:
    store.ask_confirmation(STATEMENT, pending(1), Guard(), token_hash("t1"), TTL)
    hmac = bytes.fromhex(hmac_of(1))[:16]
    record = redis_client.hgetall(KEY + "cf:" + token_hash("t1"))
    assert record == {
        b"h": hmac,
        # What dedup looks for among endorsements from before the buckets (hex HMACs).
        b"g": hmac_of(1).encode(),
        b"l": b"ru",
        b"n": b"Person 1",
        b"c": b"KZ",
        b"s": b"https://ally.example",
        b"p": b"1",
        b"v": sha256_hex(b"text").encode(),
    }
    # Keys named by hashes only (of the token, of the address), nothing else. (The log's
    # own keys are left out: a test server still running from earlier in the session
    # reopens the statement's log after the flush, whenever its sealing loop comes round.)
    kept = {k.decode() for k in redis_client.scan_iter(KEY + "*")}
    assert {k for k in kept if not k.startswith(KEY + "tlog")} == {
        KEY + "state",
        KEY + "cf:" + token_hash("t1"),
        KEY + "cft:" + token_hash("t1"),
        KEY + "cfi:" + hmac.hex(),
        KEY + "cfm:" + hmac.hex(),
        KEY + "cfp",
        KEY + "cfs",
    }
    assert redis_client.get(KEY + "cft:" + token_hash("t1")) == b"p:ru"
    assert redis_client.ttl(KEY + "cft:" + token_hash("t1")) > TTL
