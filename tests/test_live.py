"""The live count stream (``/api/v1/statements/<id>/events``) against real gunicorn workers.

Each test starts its own multi-worker gunicorn (production config, gevent workers) on the
session's real redis-server and reads the streams over raw HTTP/1.1 with ``http.client``
(which undoes the chunked transfer-encoding); ``EventStream`` parses the SSE frames itself
on a reader thread and stamps each event with the moment it arrived.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from checks import (
    STATEMENT,
    assert_problem,
    cors_headers,
    endorsements_url,
    person,
    write_statement,
)
from conftest import ADMIN_TOKEN, ALLY, CLUSTER
from load import post_all
from redis import Redis
from redis.cluster import RedisCluster
from servers import Gunicorn, RedisServer, wait_for

from widget.live import COUNT_MAX_AGE, RESYNC_SECONDS
from widget.store import Endorsement, Store

pytestmark = pytest.mark.server

EVENTS = f"/api/v1/statements/{STATEMENT}/events"
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MIN_INTERVAL = 0.25  # EVENTS_MIN_INTERVAL's default


@dataclass(frozen=True)
class Event:
    at: float  # time.monotonic() when its last line arrived
    name: str
    data: str

    @property
    def count(self) -> int:
        statement, value = self.id_count
        assert statement == STATEMENT, self.data
        return value

    @property
    def id_count(self) -> tuple[str, int]:
        body = json.loads(self.data)
        assert set(body) == {"id", "count"}, body
        return body["id"], body["count"]


@dataclass
class EventStream:
    """One viewer: a GET of the events URL, read and parsed on its own thread."""

    base_url: str
    path: str = EVENTS
    headers: dict[str, str] = field(default_factory=dict)
    opened_at: float = 0.0
    status: int = 0
    response_headers: http.client.HTTPMessage | None = None
    body: bytes = b""  # for a non-200 answer
    events: list[Event] = field(default_factory=list)
    comments: list[tuple[float, str]] = field(default_factory=list)
    retry: int | None = None
    fields: list[str] = field(default_factory=list)  # field names in arrival order
    ended: bool = False

    def __post_init__(self) -> None:
        url = urlsplit(self.base_url)
        self.cond = threading.Condition()
        self.conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        self.opened_at = time.monotonic()
        self.conn.request("GET", self.path, headers={"Accept": "text/event-stream", **self.headers})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.response_headers = self.response.headers
        if self.status != 200:
            self.body = self.response.read()
            self.ended = True
            self.conn.close()
            return
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def header(self, name: str) -> str:
        assert self.response_headers is not None
        return self.response_headers.get(name, "")

    # -- parsing (the EventSource algorithm, minus ids) ----------------------------------
    def _read(self) -> None:
        pending = b""
        name, data = "", []
        try:
            while True:
                chunk = self.response.read1(65536)
                if not chunk:
                    break
                now = time.monotonic()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                with self.cond:
                    for raw in lines:
                        line = raw.rstrip(b"\r").decode()
                        if not line:  # a blank line dispatches the event
                            if data:
                                self.events.append(Event(now, name or "message", "\n".join(data)))
                            name, data = "", []
                        elif line.startswith(":"):
                            self.comments.append((now, line))
                        else:
                            key, _, value = line.partition(":")
                            value = value.removeprefix(" ")
                            self.fields.append(key)
                            if key == "event":
                                name = value
                            elif key == "data":
                                data.append(value)
                            elif key == "retry" and value.isdigit():
                                self.retry = int(value)
                    self.cond.notify_all()
        except (OSError, ValueError, http.client.HTTPException):
            pass
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    # -- waiting ---------------------------------------------------------------------------
    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: check() or self.ended, timeout) or not check():
                raise AssertionError(
                    f"{what}: not within {timeout}s (ended={self.ended}); "
                    f"counts={self.counts()} comments={len(self.comments)}"
                )

    def counts(self) -> list[int]:
        with self.cond:
            return [e.count for e in self.events if e.name == "count"]

    def wait_count(self, count: int, timeout: float = 5.0) -> Event:
        """Wait until the newest event carries ``count``; returns that event."""
        self.wait(
            lambda: bool(self.events) and self.events[-1].count == count,
            timeout,
            f"count {count}",
        )
        with self.cond:
            return self.events[-1]

    def close(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)
        if hasattr(self, "reader"):
            self.reader.join(timeout=5)  # it sees the end of the stream and stops reading
        self.conn.close()


@pytest.fixture
def open_stream() -> Iterator[Callable[..., EventStream]]:
    """``open_stream(server, headers={...})``; every stream is closed after the test."""
    opened: list[EventStream] = []

    def factory(server: Gunicorn, path: str = EVENTS, **headers: str) -> EventStream:
        stream = EventStream(server.url, path, headers)
        opened.append(stream)
        return stream

    yield factory
    for stream in opened:
        stream.close()


def open_many(
    open_stream: Callable[..., EventStream], server: Gunicorn, n: int
) -> list[EventStream]:
    with ThreadPoolExecutor(max_workers=32) as pool:
        return list(pool.map(lambda _: open_stream(server), range(n)))


def endorse_many(server: Gunicorn, tag: str, n: int, threads: int = 10) -> float:
    """``n`` new endorsements through the API; returns when the last reply was read."""
    bodies = [person(f"{tag}{i}") for i in range(n)]
    replies = post_all(server.url + endorsements_url(), bodies, threads=threads)
    done = time.monotonic()
    assert Counter(r.status for r in replies) == {201: n}, [r.body for r in replies][:3]
    return done


def fetch(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request on a connection closed after it: a failed test's traceback keeps its
    response alive, and a kept-alive connection would hold up gunicorn's graceful stop."""
    headers = {"Connection": "close", **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, timeout=5, **kwargs)


def open_streams_gauge(server: Gunicorn) -> float:
    text = fetch("GET", server.url + "/metrics", headers=BEARER).text
    match = re.search(r"^undersign_open_event_streams (\S+)$", text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


# -- 1. a stream sees endorsements made through any worker ----------------------------------


def test_stream_gets_the_final_count_within_a_second_of_the_last_post(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    server = start_gunicorn(workers=3)
    # A few viewers, so that more than one worker serves streams; the POSTs land on any.
    streams = [open_stream(server) for _ in range(6)]
    for stream in streams:
        stream.wait_count(0, timeout=2)
    done = endorse_many(server, "live", 30)
    for stream in streams:
        last = stream.wait_count(30, timeout=3)
        assert last.at - done < 1.0, f"final count {last.at - done:.3f}s after the last POST"
        counts = stream.counts()
        assert counts[0] == 0 and counts == sorted(counts), counts
        assert all(e.name == "count" for e in stream.events)
        assert not stream.ended


# -- 2. fan-out: many viewers, one Redis subscription per worker ---------------------------


def test_200_streams_all_get_the_count_over_one_subscription_per_worker(
    start_gunicorn: Callable[..., Gunicorn],
    open_stream: Callable[..., EventStream],
    redis_client: Redis,
) -> None:
    # Subscriptions already there (apps of earlier tests in this process) do not count.
    earlier = {c["id"] for c in subscribers(redis_client)}
    workers = 4
    server = start_gunicorn(workers=workers, WIDGET_STREAMS_PER_CLIENT="1000")
    streams = open_many(open_stream, server, 200)
    assert {s.status for s in streams} == {200}
    for stream in streams:
        stream.wait_count(0, timeout=5)

    def pubsub_clients() -> list[dict[str, Any]]:
        return [c for c in subscribers(redis_client) if c["id"] not in earlier]

    during = pubsub_clients()
    assert 1 <= len(during) <= workers, during  # not one per viewer
    # One pattern subscription (classic pub/sub), or on a cluster one shard channel per
    # statement (sharded pub/sub: SSUBSCRIBE on the node of the statement's slot).
    kind = "ssub" if CLUSTER else "psub"
    assert all(int(c[kind]) == 1 and int(c["sub"]) == 0 for c in during), during

    done = endorse_many(server, "fan", 20)
    late = 0.0
    for stream in streams:
        last = stream.wait_count(20, timeout=5)
        late = max(late, last.at - done)
        assert stream.counts() == sorted(stream.counts())
    assert late < 1.5, f"the slowest of 200 viewers got the final count {late:.3f}s late"
    assert not any(s.ended for s in streams)
    assert len(pubsub_clients()) <= workers


def subscribers(redis_client: Redis) -> list[dict[str, Any]]:
    """The pub/sub connections Redis holds (on a cluster: every master's, with ids made
    unique per node)."""
    if not CLUSTER:
        found: list[dict[str, Any]] = redis_client.client_list(_type="pubsub")
        return found
    per_node: Any = redis_client.client_list(  # type: ignore[call-arg]
        _type="pubsub", target_nodes=RedisCluster.PRIMARIES
    )
    return [{**c, "id": f"{node}/{c['id']}"} for node, cs in per_node.items() for c in cs]


# -- 3. coalescing --------------------------------------------------------------------------


def test_a_burst_of_500_is_coalesced_and_the_last_event_is_exact(
    start_gunicorn: Callable[..., Gunicorn],
    open_stream: Callable[..., EventStream],
    redis_client: Redis,
) -> None:
    server = start_gunicorn(workers=2)
    stream = open_stream(server)
    stream.wait_count(0, timeout=2)
    store = Store(redis_client)  # the same atomic script the API runs, minus HTTP
    started = time.monotonic()
    for n in range(500):
        result = store.endorse(STATEMENT, Endorsement(email_hmac=f"burst-{n}", name=f"B {n}"))
        assert result.status == "counted"
        time.sleep(0.002)  # spread over ~1.2 s, so the rate limit is what shows
    ended = time.monotonic()
    burst = ended - started

    last = stream.wait_count(500, timeout=3)
    assert last.at - ended < 1.0
    # Quiet afterwards: proving that nothing else comes needs a (short) look at nothing.
    time.sleep(MIN_INTERVAL * 3)
    counts = stream.counts()[1:]
    assert counts[-1] == 500
    assert counts == sorted(set(counts)), counts  # each event news, never backwards
    assert len(counts) <= 1 + burst / MIN_INTERVAL + 3, (burst, counts)
    assert len(counts) < 100
    # Throttled, not debounced: the first change went out at once, more during the burst.
    during = [e for e in stream.events[1:] if e.at <= ended]
    assert len(during) >= 2, (burst, counts)


# -- 4. the stream's contract ---------------------------------------------------------------


def test_first_event_at_once_with_retry_headers_and_heartbeats(
    start_gunicorn: Callable[..., Gunicorn],
    open_stream: Callable[..., EventStream],
    redis_client: Redis,
) -> None:
    store = Store(redis_client)
    for n in range(7):
        store.endorse(STATEMENT, Endorsement(email_hmac=f"seed-{n}", name="Seed"))
    server = start_gunicorn(workers=2, WIDGET_EVENTS_HEARTBEAT="1")
    stream = open_stream(server)
    assert stream.status == 200
    assert stream.header("Content-Type").split(";")[0].strip() == "text/event-stream"
    directives = [d.strip() for d in stream.header("Cache-Control").split(",")]
    assert "no-cache" in directives

    first = stream.wait_count(7, timeout=2)
    assert first.at - stream.opened_at < 1.0  # at once, not at the first heartbeat
    assert first.name == "count" and first.data.replace(" ", "") == (
        f'{{"id":"{STATEMENT}","count":7}}'
    )
    assert stream.fields[0] == "retry" and stream.retry is not None and stream.retry > 0

    stream.wait(lambda: len(stream.comments) >= 3, timeout=7, what="three heartbeats")
    times = [at for at, _ in stream.comments]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.25 < gap < 2.5 for gap in gaps), gaps  # about every second (read by a thread)
    assert stream.counts() == [7]  # heartbeats are comments, not count events
    assert not stream.ended


def test_unknown_statement_404_and_cors_allow_and_deny(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    server = start_gunicorn(workers=2)
    missing = open_stream(server, "/api/v1/statements/no-such-statement/events")
    assert missing.status == 404
    assert_problem(fetch("GET", server.url + missing.path), 404)

    allied = open_stream(server, Origin=ALLY)
    assert allied.status == 200
    assert allied.header("Access-Control-Allow-Origin") == ALLY
    allied.wait_count(0, timeout=2)

    foreign = open_stream(server, Origin="https://hostile.example")
    assert foreign.status == 403 and not foreign.events
    response = fetch("GET", server.url + EVENTS, headers={"Origin": "https://hostile.example"})
    assert_problem(response, 403)
    assert cors_headers(response) == {}


SECOND = "second-voice"
MULTI = f"/api/v1/events?statements={STATEMENT},{SECOND}"


def test_one_stream_carries_two_statements_in_order(
    start_gunicorn: Callable[..., Gunicorn],
    open_stream: Callable[..., EventStream],
    tmp_path: Path,
) -> None:
    write_statement(tmp_path / "statements", SECOND)
    server = start_gunicorn(workers=2, WIDGET_STATEMENTS_DIR=str(tmp_path / "statements"))
    stream = open_stream(server, MULTI, Origin=ALLY)
    assert stream.status == 200
    assert stream.header("Content-Type").startswith("text/event-stream")
    assert stream.header("Access-Control-Allow-Origin") == ALLY
    stream.wait(lambda: len(stream.events) >= 2, timeout=2, what="the first two counts")
    assert [e.id_count for e in stream.events[:2]] == [(STATEMENT, 0), (SECOND, 0)]
    assert stream.retry == 3000

    for i in range(3):
        assert fetch("POST", server.url + endorsements_url(SECOND), json=person(f"s{i}")).ok
    for i in range(2):
        assert fetch("POST", server.url + endorsements_url(), json=person(f"f{i}")).ok

    def latest() -> dict[str, int]:
        return dict(e.id_count for e in stream.events)

    stream.wait(lambda: latest() == {STATEMENT: 2, SECOND: 3}, timeout=3, what="both counts")
    for statement in (STATEMENT, SECOND):
        counts = [c for sid, c in (e.id_count for e in stream.events) if sid == statement]
        assert counts == sorted(counts), (statement, counts)  # each in order, never back
    assert not stream.ended


def test_multi_stream_refuses_unknown_too_many_empty_and_foreign(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    server = start_gunicorn(workers=1)
    unknown = fetch("GET", f"{server.url}/api/v1/events?statements={STATEMENT},nope")
    assert "nope" in assert_problem(unknown, 404)["detail"]

    many = ",".join(f"s{i}" for i in range(51))
    body = assert_problem(fetch("GET", f"{server.url}/api/v1/events?statements={many}"), 422)
    assert "statements" in body["errors"]
    fifty = ",".join([STATEMENT] * 60)  # the same id many times is one statement
    repeated = open_stream(server, f"/api/v1/events?statements={fifty}")
    assert repeated.status == 200
    repeated.wait_count(0, timeout=2)
    assert len(repeated.events) == 1

    for query in ("", "?statements=", "?statements=,,"):
        assert_problem(fetch("GET", f"{server.url}/api/v1/events{query}"), 422)

    foreign = fetch(
        "GET",
        f"{server.url}/api/v1/events?statements={STATEMENT}",
        headers={"Origin": "https://hostile.example"},
    )
    assert_problem(foreign, 403)
    assert cors_headers(foreign) == {}
    preflight = fetch(
        "OPTIONS",
        f"{server.url}/api/v1/events?statements={STATEMENT}",
        headers={"Origin": ALLY, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.headers.get("Access-Control-Allow-Origin") == ALLY


# -- 4b. one client cannot take every connection ---------------------------------------------


def test_one_client_gets_429_past_its_stream_cap_across_workers(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    server = start_gunicorn(workers=3, WIDGET_STREAMS_PER_CLIENT="12", WIDGET_EVENTS_HEARTBEAT="1")
    streams = open_many(open_stream, server, 12)
    assert {s.status for s in streams} == {200}
    for stream in streams:
        stream.wait_count(0, timeout=3)
    for _ in range(6):  # whichever worker takes it, the cap is the client's, not the worker's
        refused = open_stream(server)
        assert refused.status == 429, refused.body
        assert int(refused.header("Retry-After")) > 0
        assert b"too-many-streams" in refused.body
    multi = fetch("GET", f"{server.url}/api/v1/events?statements={STATEMENT}")
    assert_problem(multi, 429)  # the same cap on the multi-statement stream
    # Leaving frees the slot: a gevent worker notices a gone viewer when a write fails,
    # at the latest one heartbeat after the first write that met the closed socket.
    streams[0].close()
    wait_for(lambda: open_stream(server).status == 200, timeout=6, what="a freed slot")


def test_ordinary_requests_keep_working_when_a_worker_is_full_of_streams(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    # 40 connections per worker: at most 30 streams, 10 kept for everything else.
    server = start_gunicorn(workers=1, WORKER_CONNECTIONS="40", WIDGET_STREAMS_PER_CLIENT="1000")
    streams = open_many(open_stream, server, 30)
    assert {s.status for s in streams} == {200}
    for stream in streams:
        stream.wait_count(0, timeout=3)
    for _ in range(15):  # together more than the worker's 40 connections
        full = open_stream(server)
        assert full.status == 503, full.body
        assert full.header("Retry-After") and b"streams-full" in full.body
    for i in range(5):  # reads and endorsements still get a connection and an answer
        assert fetch("GET", server.url + f"/api/v1/statements/{STATEMENT}").status_code == 200
        reply = fetch("POST", server.url + endorsements_url(), json=person(f"full{i}"))
        assert reply.status_code == 201, reply.text
    streams[-1].wait_count(5, timeout=3)


# -- 5. moderation --------------------------------------------------------------------------


def test_strike_and_unstrike_move_the_stream(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    server = start_gunicorn(workers=2)
    endorse_many(server, "mod", 3, threads=1)
    stream = open_stream(server)
    stream.wait_count(3, timeout=2)
    page = fetch("GET", server.url + ADMIN + "/endorsements", headers=BEARER).json()
    entry = page["endorsements"][0]["id"]

    url = f"{server.url}{ADMIN}/endorsements/{entry}"
    struck = fetch("POST", url + "/strike", json={"reason": "test"}, headers=BEARER)
    done = time.monotonic()
    assert struck.status_code == 200 and struck.json()["count"] == 2
    assert stream.wait_count(2, timeout=2).at - done < 1.0

    back = fetch("POST", url + "/unstrike", headers=BEARER)
    done = time.monotonic()
    assert back.status_code == 200 and back.json()["count"] == 3
    assert stream.wait_count(3, timeout=2).at - done < 1.0
    assert stream.counts() == [3, 2, 3]


# -- 6. Redis restarts under open streams ---------------------------------------------------


def test_streams_get_counts_after_redis_is_killed_and_restarted(
    start_gunicorn: Callable[..., Gunicorn],
    open_stream: Callable[..., EventStream],
    redis_server: RedisServer,
) -> None:
    workers = 2
    server = start_gunicorn(workers=workers)
    endorse_many(server, "before", 2, threads=1)
    streams = [open_stream(server) for _ in range(4)]
    for stream in streams:
        stream.wait_count(2, timeout=2)

    redis_server.kill()
    wait_for(
        lambda: fetch("GET", server.url + "/healthz").status_code == 503,
        timeout=5,
        what="the outage to show",
    )
    wait_for(lambda: "lost the Redis subscription" in server.log(), what="a hub to notice")
    # Outlast the hubs' first reconnection attempts, so that the endorsement below lands
    # before they subscribe again: only their resync can deliver it.
    time.sleep(0.5)
    redis_server.start()
    endorse_many(server, "after", 1, threads=1)
    done = time.monotonic()

    # Either the stream stays open, or an EventSource would reconnect after retry: ms.
    stayed = 0
    for stream in streams:
        deadline = done + 8
        viewer = stream
        while True:
            viewer.wait(
                lambda v=viewer: v.ended or (bool(v.events) and v.events[-1].count == 3),
                timeout=max(0.1, deadline - time.monotonic()),
                what="count 3 after the restart",
            )
            if not viewer.ended:
                break
            time.sleep((viewer.retry or 3000) / 1000)
            viewer = open_stream(server)
        stayed += viewer is stream
        assert viewer.counts()[-1] == 3
    log = server.log()
    assert log.count("lost the Redis subscription") <= workers, log[-3000:]
    print(f"{stayed} of {len(streams)} streams stayed open through the restart")


# -- 7. the open-streams gauge --------------------------------------------------------------


def test_open_streams_gauge_follows_viewers(
    start_gunicorn: Callable[..., Gunicorn], open_stream: Callable[..., EventStream]
) -> None:
    server = start_gunicorn(workers=2, WIDGET_EVENTS_HEARTBEAT="1")
    assert open_streams_gauge(server) == 0
    streams = open_many(open_stream, server, 12)
    for stream in streams:
        stream.wait_count(0, timeout=2)
    assert open_streams_gauge(server) >= 12
    for stream in streams[:8]:
        stream.close()
    # A gevent worker learns of a gone viewer at its next write: the next heartbeat.
    wait_for(lambda: open_streams_gauge(server) == 4, timeout=5, what="the gauge to drop to 4")
    for stream in streams[8:]:
        stream.close()
    wait_for(lambda: open_streams_gauge(server) == 0, timeout=5, what="the gauge to drop to 0")


# -- known gap ------------------------------------------------------------------------------


def test_streams_follow_an_out_of_band_change_within_the_allowed_lag(
    start_gunicorn: Callable[..., Gunicorn],
    open_stream: Callable[..., EventStream],
    redis_client: Redis,
) -> None:
    server = start_gunicorn(workers=1)
    viewer = open_stream(server)
    viewer.wait_count(0, timeout=2)
    endorse_many(server, "stale", 2, threads=1)
    viewer.wait_count(2, timeout=2)
    redis_client.flushall()  # what every test's redis_client fixture does
    assert Store(redis_client).count(STATEMENT) == 0
    time.sleep(COUNT_MAX_AGE)  # the lag the API allows for count reads and first events
    newcomer = open_stream(server)
    newcomer.wait(lambda: bool(newcomer.events), timeout=2, what="a first event")
    assert newcomer.counts()[0] == 0
    # The stream opened before the change hears of it from the periodic resync.
    viewer.wait_count(0, timeout=RESYNC_SECONDS + 2)
