"""The live hub in one process against real Redis: coalescing, the cache, resync, streams."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from checks import wait_until
from redis import Redis

from widget.live import (
    COUNT_MAX_AGE,
    HEARTBEAT,
    DirectViewer,
    Hub,
    deliver,
    encode_count,
    stream,
)
from widget.store import Store

STATEMENT = "dongelek-ystel"


@pytest.fixture
def store(redis_client: Redis) -> Store:
    return Store(redis_client)


@pytest.fixture
def hub(redis_client: Redis, store: Store) -> Iterator[Hub]:
    hub = Hub(redis_client, store, [STATEMENT, "other"], min_interval=0.2)
    yield hub
    hub.stop()


def test_an_event_is_one_sse_frame() -> None:
    frame = encode_count(STATEMENT, 1234)
    assert frame == b'event: count\ndata: {"id": "dongelek-ystel", "count": 1234}\n\n'


def test_a_burst_sends_the_first_change_at_once_and_the_last_exactly(hub: Hub) -> None:
    hub.min_interval = 1.0  # the burst fits in one interval even if this thread stalls
    channel = hub.channels[STATEMENT]
    for count in range(1, 51):
        hub._changed(STATEMENT, count)
    assert (channel.version, channel.count) == (1, 1)  # the first change did not wait
    wait_until(lambda: channel.count == 50, 5)
    assert channel.version == 2  # 49 changes in one interval became one event
    assert channel.payload == encode_count(STATEMENT, 50)
    hub._changed(STATEMENT, 50)
    time.sleep(0.3)
    assert channel.version == 2  # the same count again is not news
    assert hub.channels["other"].version == 0  # other statements are untouched


def test_a_resync_never_undoes_a_newer_message(
    hub: Hub, store: Store, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = hub.channels[STATEMENT]
    redis_client.set(store.key(STATEMENT, "count"), 5)
    hub._changed(STATEMENT, 5)
    read = store.counts

    def read_then_hear_a_newer_count(ids: list[str]) -> dict[str, int]:
        counts = read(ids)  # 5, from Redis
        hub._on_message(store.channel(STATEMENT), b"6")  # published while the read ran
        return counts

    monkeypatch.setattr(store, "counts", read_then_hear_a_newer_count)
    hub._resync()
    wait_until(lambda: channel.count == 6)
    time.sleep(hub.min_interval + 0.1)  # whatever coalescing held back has gone out
    assert channel.count == 6 and channel.pending is None


def test_unknown_statements_and_garbage_messages_are_ignored(hub: Hub) -> None:
    hub._on_message(b"us:{nope}:events", b"3")
    hub._on_message(b"us:{dongelek-ystel}:events", b"not a number")
    hub._on_message(b"garbage", b"3")
    assert "nope" not in hub.channels
    assert hub.channels[STATEMENT].version == 0


def test_stream_sends_retry_and_count_then_changes_heartbeats_and_ends_on_stop(hub: Hub) -> None:
    channel = hub.channels[STATEMENT]
    hub._changed(STATEMENT, 7)
    body = stream([(channel, channel.version)], hub.bell, heartbeat=0.05, stopping=hub.stopping)
    first = next(body)
    assert first.startswith(b"retry: ") and first.endswith(encode_count(STATEMENT, 7))
    assert next(body) == HEARTBEAT  # nothing changed within the heartbeat
    time.sleep(0.25)
    hub._changed(STATEMENT, 8)
    assert next(body) == encode_count(STATEMENT, 8)
    hub.stop()
    assert list(body) == []


def test_one_stream_carries_several_statements_in_order(hub: Hub) -> None:
    hub._changed(STATEMENT, 3)
    hub._changed("other", 9)
    watched = [(hub.channels[sid], hub.channels[sid].version) for sid in ("other", STATEMENT)]
    body = stream(watched, hub.bell, heartbeat=5, stopping=hub.stopping)
    first = next(body)
    assert first == b"retry: 3000\n" + encode_count("other", 9) + encode_count(STATEMENT, 3)
    time.sleep(0.25)
    hub._changed("other", 10)
    assert next(body) == encode_count("other", 10)  # only what changed
    time.sleep(0.25)
    hub._changed(STATEMENT, 4)
    assert next(body) == encode_count(STATEMENT, 4)
    hub.stop()
    assert list(body) == []


def test_a_direct_viewer_of_two_statements_gets_one_heartbeat_and_both_counts(hub: Hub) -> None:
    server, client = socket.socketpair()
    server.setblocking(False)
    client.settimeout(2)
    one, other = hub.channels[STATEMENT], hub.channels["other"]
    viewer = DirectViewer(server.fileno(), chunked=False, channels=(one, other))
    one.viewers.add(viewer)
    other.viewers.add(viewer)
    hub.heartbeat = 0.05
    beat = threading.Thread(target=hub._beat)  # the process's heartbeat loop, alone
    started = time.monotonic()
    beat.start()
    time.sleep(0.12)
    hub.stopping.set()
    beat.join()
    intervals = (time.monotonic() - started) / hub.heartbeat  # however long this thread slept
    beats = client.recv(1000)
    assert beats and beats == HEARTBEAT * (len(beats) // len(HEARTBEAT))
    assert len(beats) // len(HEARTBEAT) <= intervals + 1  # once per beat, not per statement
    hub.stopping.clear()
    hub._changed("other", 5)
    assert client.recv(1000) == encode_count("other", 5)
    server.close()
    client.close()


def test_a_slow_viewer_skips_to_the_newest_count(hub: Hub) -> None:
    channel = hub.channels[STATEMENT]
    hub._changed(STATEMENT, 1)
    body = stream([(channel, channel.version)], hub.bell, heartbeat=5, stopping=hub.stopping)
    next(body)
    for count in (2, 3, 4):
        time.sleep(0.21)
        hub._changed(STATEMENT, count)
    wait_until(lambda: channel.count == 4)
    assert next(body) == encode_count(STATEMENT, 4)  # not 2, then 3, then 4


def test_one_subscription_serves_every_viewer_and_new_viewers_read_redis(
    hub: Hub, store: Store, redis_client: Redis
) -> None:
    redis_client.set(store.key(STATEMENT, "count"), 10)

    def subscribers() -> set[str]:
        return {client["id"] for client in redis_client.client_list(_type="pubsub")}

    subscribers_before = subscribers()
    hub.ensure_running()
    wait_until(lambda: hub.subscribed)
    [(channel, version)] = hub.snapshot([STATEMENT])
    assert channel.count == 10 and channel.version == version
    redis_client.publish(store.channel(STATEMENT), 11)
    wait_until(lambda: channel.count == 11)
    redis_client.set(store.key(STATEMENT, "count"), 99)  # behind the scripts' back
    started = time.monotonic()
    wait_until(lambda: hub.snapshot([STATEMENT])[0][0].count == 99)  # new viewers: fresh ...
    assert time.monotonic() - started <= COUNT_MAX_AGE + 0.5  # ... within about a second
    for _ in range(50):
        hub.snapshot([STATEMENT])
    assert len(subscribers() - subscribers_before) == 1  # others' may have come and gone


def test_open_streams_learn_of_changes_made_behind_the_scripts_back(
    hub: Hub, store: Store, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("widget.live.RESYNC_SECONDS", 0.3)
    hub.ensure_running()
    wait_until(lambda: hub.subscribed)
    [(channel, version)] = hub.snapshot([STATEMENT])
    redis_client.set(store.key(STATEMENT, "count"), 77)  # a restored backup, say
    wait_until(lambda: channel.count == 77)  # nobody asked: the periodic resync found it
    assert channel.version > version


def test_after_losing_the_subscription_the_hub_resyncs_moved_counts(
    hub: Hub, store: Store, redis_client: Redis
) -> None:
    hub.ensure_running()
    wait_until(lambda: hub.subscribed)
    hub.snapshot([STATEMENT])
    channel = hub.channels[STATEMENT]
    assert channel.count == 0
    redis_client.client_kill_filter(_type="pubsub")
    redis_client.set(store.key(STATEMENT, "count"), 42)  # changed while nobody listened
    wait_until(lambda: channel.count == 42, timeout=5)
    wait_until(lambda: hub.subscribed)
    redis_client.publish(store.channel(STATEMENT), 43)
    wait_until(lambda: channel.count == 43)


def test_count_reads_lag_at_most_a_second_and_go_to_redis_without_a_subscription(
    hub: Hub, store: Store, redis_client: Redis
) -> None:
    key = store.key(STATEMENT, "count")
    redis_client.set(key, 5)
    assert hub.count(STATEMENT) == 5  # not subscribed yet: straight from Redis
    wait_until(lambda: hub.subscribed)
    redis_client.publish(store.channel(STATEMENT), 6)
    wait_until(lambda: hub.count(STATEMENT) == 6)  # a published change lands at once
    redis_client.set(key, 40)  # behind the scripts' back
    assert hub.count(STATEMENT) == 6  # served from memory, no Redis round trip ...
    started = time.monotonic()
    wait_until(lambda: hub.count(STATEMENT) == 40)
    assert time.monotonic() - started <= COUNT_MAX_AGE + 0.5  # ... for about a second at most
    hub.heard(STATEMENT, 41)  # this process's own write shows in its next read
    assert hub.count(STATEMENT) == 41


def test_direct_writes_never_block_and_drop_viewers_that_left() -> None:
    fast_server, fast_client = socket.socketpair()
    slow_server, slow_client = socket.socketpair()
    gone_server, gone_client = socket.socketpair()
    for sock in (fast_server, slow_server, gone_server):
        sock.setblocking(False)
    slow_server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    fast = DirectViewer(fast_server.fileno(), chunked=True)
    slow = DirectViewer(slow_server.fileno(), chunked=False)
    gone = DirectViewer(gone_server.fileno(), chunked=True)
    viewers = {fast, slow, gone}
    gone_client.close()
    event = encode_count(STATEMENT, 5)
    deliver(viewers, event)
    assert fast_client.recv(1000) == b"%x\r\n%s\r\n" % (len(event), event)
    assert slow_client.recv(1000) == event  # HTTP/1.0: no chunk framing
    assert gone not in viewers and gone.closed and gone.wake.is_set()
    big = b"x" * 1_000_000  # more than any socket buffer holds
    deliver(viewers, big)  # returns at once although the peers read nothing
    assert slow.lagging and slow.wake.is_set() and 0 < len(slow.backlog) < len(big)
    slow.wake.clear()
    deliver(viewers, event)
    assert slow.wake.is_set()  # a lagging viewer's own greenlet catches it up
    for sock in (fast_server, fast_client, slow_server, slow_client, gone_server):
        sock.close()


def test_counts_heard_before_a_new_subscription_are_not_trusted(
    hub: Hub, store: Store, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("widget.live.RECONNECT_BACKOFF", (1.0,))  # unsubscribed long enough to see
    key = store.key(STATEMENT, "count")
    redis_client.set(key, 5)
    hub.ensure_running()
    wait_until(lambda: hub.subscribed)
    assert hub.count(STATEMENT) == 5  # now known, and fresh for a second
    redis_client.client_kill_filter(_type="pubsub")
    wait_until(lambda: not hub.subscribed)
    redis_client.set(key, 9)
    redis_client.publish(store.channel(STATEMENT), 9)  # nobody is listening
    wait_until(lambda: hub.subscribed)
    assert hub.count(STATEMENT) == 9  # not the 5 heard before the subscription came back


def test_stop_runs_even_inside_code_that_holds_the_lock(hub: Hub) -> None:
    # The worker's SIGTERM handler calls stop() in whatever code it interrupts, possibly
    # code of this hub that holds its lock: stop() must not wait for itself.
    done = threading.Event()

    def interrupted() -> None:
        with hub.lock:
            hub.stop()
        done.set()

    threading.Thread(target=interrupted, daemon=True).start()
    assert done.wait(5), "stop() waited for its own lock"
    assert hub.stopping.is_set()
