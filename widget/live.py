"""Live counts as Server-Sent Events, fanned out from one Redis subscription per process.

``GET /api/v1/statements/<id>/events`` answers ``text/event-stream``: a ``retry:`` field
and the current count at once, then an ``event: count`` whenever the count changes, and
a heartbeat comment every ``WIDGET_EVENTS_HEARTBEAT`` seconds.

How it scales to thousands of viewers per process:

* One ``Hub`` per process holds a single ``PSUBSCRIBE`` on every statement's channel,
  read by one background thread (a greenlet under gevent workers). A viewer reads its
  first count from Redis once; after that, nothing per viewer touches Redis.
* Each statement has a ``Channel``: the latest count, its event already encoded as
  bytes, a version number and an ``Event`` that is swapped on every change. A viewer
  waits on that event, then sends whatever bytes are current, so a slow viewer skips
  straight to the newest count instead of queueing old ones.
* Changes are coalesced per statement: the first change after a quiet spell goes out at
  once, later ones at most every ``WIDGET_EVENTS_MIN_INTERVAL`` seconds, and the last
  one always goes out, so the final count is exact.
* When the subscription drops (Redis restarted), the hub reconnects with backoff, then
  reads every statement's count again and sends the ones that moved meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

from .api import get_hub, get_statement
from .metrics import OPEN_STREAMS
from .store import RedisClient, Store

log = logging.getLogger(__name__)

bp = Blueprint("live", __name__, url_prefix="/api/v1")

RETRY_MS = 3000
# How stale a count read may be: the API promises a count lags a write by at most one
# second. Published changes arrive in milliseconds; this bounds the rest (a restored
# backup, a flushed database), at one Redis read per statement and second per process.
COUNT_MAX_AGE = 1.0
HEARTBEAT = b": keep-alive\n\n"
RECONNECT_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)
_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


def encode_count(statement_id: str, count: int) -> bytes:
    """One ``count`` event, ready to write to every viewer."""
    data = json.dumps({"id": statement_id, "count": count})
    return f"event: count\ndata: {data}\n\n".encode()


class Channel:
    """One statement's latest count, as numbers and as the bytes viewers receive."""

    __slots__ = (
        "changed",
        "count",
        "known",
        "known_at",
        "known_seq",
        "payload",
        "pending",
        "statement_id",
        "version",
    )

    def __init__(self, statement_id: str) -> None:
        self.statement_id = statement_id
        self.count: int | None = None
        self.payload = b""
        self.version = 0
        self.changed = threading.Event()
        # The newest count from Redis not yet sent, and whether a send is scheduled.
        self.pending: int | None = None
        # The newest count this process has heard of (message or read), for count reads;
        # known_seq changes with every message, so a slower read cannot overwrite one.
        self.known: int | None = None
        self.known_at = 0.0
        self.known_seq = 0

    def publish(self, count: int) -> None:
        """Make ``count`` current and wake every viewer; call with the hub's lock held."""
        self.count = count
        self.payload = encode_count(self.statement_id, count)
        self.version += 1
        changed, self.changed = self.changed, threading.Event()
        changed.set()


class Hub:
    """A process's single subscription to every statement's count channel."""

    def __init__(
        self,
        redis: RedisClient,
        store: Store,
        statement_ids: list[str],
        min_interval: float,
    ) -> None:
        self.redis = redis
        self.store = store
        self.min_interval = min_interval
        self.channels = {sid: Channel(sid) for sid in statement_ids}
        self.lock = threading.Lock()
        self.subscribed = False
        self._last_sent: dict[str, float] = {}
        self._scheduled: set[str] = set()
        self._pid = 0
        self.stopping = threading.Event()
        _hubs.add(self)

    # -- viewers ---------------------------------------------------------------------
    def ensure_running(self) -> None:
        """Start the subscriber thread in this process (after a fork, start a new one)."""
        if self._pid == os.getpid():
            return
        with self.lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self.subscribed = False
            thread = threading.Thread(target=self._run, name="undersign-live", daemon=True)
            thread.start()

    def snapshot(self, statement_id: str) -> tuple[Channel, int]:
        """The channel and the version of the first event a new viewer gets.

        The count is read from Redis (one GET per new viewer, never per event): the
        cache only knows what was published, and a count changed behind the scripts'
        back (a restored backup, a flushed database) must not greet new viewers stale.
        A Redis error propagates, so the viewer gets a 503 problem, not a stream.
        """
        channel = self.channels[statement_id]
        version, seq = channel.version, channel.known_seq
        count = self.store.count(statement_id)
        with self.lock:
            self._know(channel, count, seq)
            # A newer count may have been published meanwhile: then that one stands.
            if channel.version == version and channel.count != count:
                channel.publish(count)
            return channel, channel.version

    def fresh_count(self, statement_id: str) -> int | None:
        """The count from memory if it is at most ``COUNT_MAX_AGE`` old, else ``None``.

        While subscribed, every published change lands here at once, so most reads
        need no Redis round trip; without a subscription nothing here is trusted.
        """
        self.ensure_running()
        channel = self.channels[statement_id]
        known = channel.known
        if (
            self.subscribed
            and known is not None
            and time.monotonic() - channel.known_at <= COUNT_MAX_AGE
        ):
            return known
        return None

    def count(self, statement_id: str) -> int:
        """A statement's count for plain reads: from memory when fresh, else from Redis
        (so an outage is a 503, not an old number)."""
        known = self.fresh_count(statement_id)
        if known is not None:
            return known
        channel = self.channels[statement_id]
        seq = channel.known_seq
        count = self.store.count(statement_id)
        with self.lock:
            self._know(channel, count, seq)
        return count

    def heard(self, statement_id: str, count: int) -> None:
        """This process just wrote ``count``: its own next read should show it."""
        channel = self.channels.get(statement_id)
        if channel is not None:
            with self.lock:
                self._know(channel, count, channel.known_seq)

    @staticmethod
    def _know(channel: Channel, count: int, seq: int) -> None:
        """Record a count read at ``seq``, unless a message came in since; hold the lock."""
        if channel.known_seq == seq:
            channel.known, channel.known_at = count, time.monotonic()
            channel.known_seq += 1

    # -- the subscriber --------------------------------------------------------------
    def _run(self) -> None:
        pattern = self.store.channel("*")
        failures = 0
        while not self.stopping.is_set():
            connection, kept_retry = None, None
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
            try:
                pubsub.psubscribe(pattern)
                # redis-py would quietly reconnect and resubscribe, and whatever was
                # published meanwhile would be lost; fail instead, so that _resync runs.
                connection = pubsub.connection
                kept_retry = connection.retry if connection is not None else None
                if connection is not None:
                    connection.retry = Retry(NoBackoff(), 0)
                pubsub.get_message(timeout=1.0)  # the psubscribe confirmation
                with self.lock:
                    self.subscribed = True
                if failures:
                    log.info("live: subscribed to %s again", pattern)
                # Counts that moved before this subscription (or during an outage) would
                # otherwise reach nobody until the next change.
                self._resync()
                failures = 0
                while not self.stopping.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "pmessage":
                        self._on_message(message["channel"], message["data"])
            except Exception as exc:  # any failure means: resubscribe later
                with self.lock:
                    self.subscribed = False
                if failures == 0:
                    log.warning("live: lost the Redis subscription (%s); retrying", exc)
                delay = RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)]
                failures += 1
                self.stopping.wait(delay)
            finally:
                if connection is not None and kept_retry is not None:
                    connection.retry = kept_retry  # it goes back to the shared pool
                with contextlib.suppress(Exception):  # the connection is gone anyway
                    pubsub.close()

    def _resync(self) -> None:
        """After an outage, send every count that changed while nobody was listening."""
        ids = [sid for sid, channel in self.channels.items() if channel.count is not None]
        if not ids:
            return
        counts = self.store.counts(ids)
        for sid, count in counts.items():
            self._changed(sid, count)

    def _on_message(self, raw_channel: bytes | str, raw_count: bytes | str) -> None:
        if isinstance(raw_channel, bytes):
            raw_channel = raw_channel.decode()
        try:
            statement_id = self.store.statement_id_from_channel(raw_channel)
            count = int(raw_count)
        except (IndexError, ValueError):
            return
        self._changed(statement_id, count)

    def _changed(self, statement_id: str, count: int) -> None:
        channel = self.channels.get(statement_id)
        if channel is None:
            return
        with self.lock:
            self._know(channel, count, channel.known_seq)
            channel.pending = count
            if statement_id in self._scheduled:
                return
            wait = self._last_sent.get(statement_id, 0.0) + self.min_interval - time.monotonic()
            if wait > 0:
                self._scheduled.add(statement_id)
        if wait > 0:
            timer = threading.Timer(wait, self._send, (statement_id,))
            timer.daemon = True
            timer.start()
        else:
            self._send(statement_id)

    def _send(self, statement_id: str) -> None:
        channel = self.channels[statement_id]
        with self.lock:
            self._scheduled.discard(statement_id)
            count, channel.pending = channel.pending, None
            if count is None or count == channel.count:
                return
            self._last_sent[statement_id] = time.monotonic()
            channel.publish(count)

    def stop(self) -> None:
        """End every stream of this process (the worker is shutting down)."""
        self.stopping.set()
        with self.lock:
            for channel in self.channels.values():
                channel.changed.set()


def stop_streams() -> None:
    """Called by the gunicorn worker on SIGTERM: viewers reconnect to a live worker."""
    for hub in list(_hubs):
        hub.stop()


def stream(
    channel: Channel, version: int, heartbeat: float, stopping: threading.Event
) -> Iterator[bytes]:
    """The body of one viewer's response: bytes already encoded, nothing per viewer."""
    OPEN_STREAMS.inc()
    try:
        yield b"retry: %d\n" % RETRY_MS + channel.payload
        seen = version
        while not stopping.is_set():
            changed = channel.changed
            if channel.version != seen:
                seen = channel.version
                yield channel.payload
            elif not changed.wait(heartbeat):
                yield HEARTBEAT
    finally:
        OPEN_STREAMS.dec()


@bp.get("/statements/<statement_id>/events")
def events(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    hub = get_hub()
    hub.ensure_running()
    channel, version = hub.snapshot(statement.id)
    body = stream(channel, version, current_app.config["EVENTS_HEARTBEAT"], hub.stopping)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def init_app(app: Flask) -> None:
    registry = app.extensions["undersign.statements"]
    app.extensions["undersign.live"] = Hub(
        app.extensions["undersign.redis"],
        app.extensions["undersign.store"],
        list(registry.ids()),
        app.config["EVENTS_MIN_INTERVAL"],
    )
    app.register_blueprint(bp)
