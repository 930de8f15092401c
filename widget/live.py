"""Live counts as Server-Sent Events, fanned out from one Redis subscription per process.

``GET /api/v1/statements/<id>/events`` answers ``text/event-stream``: a ``retry:`` field
and the current count at once, then an ``event: count`` whenever the count changes, and
a heartbeat comment every ``WIDGET_EVENTS_HEARTBEAT`` seconds.
``GET /api/v1/events?statements=a,b`` is the same for several statements in one stream
(each event names its statement), so a browser needs one connection for all its widgets.

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
import secrets
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from .abuse import CLIENT_PREFIXES, network_of
from .api import get_hub, get_statement
from .errors import Problem
from .metrics import OPEN_STREAMS
from .privacy import DailySalt
from .store import RedisClient, Store

log = logging.getLogger(__name__)

bp = Blueprint("live", __name__, url_prefix="/api/v1")

RETRY_MS = 3000
MAX_STREAM_STATEMENTS = 50  # per stream on /api/v1/events
# How stale a count read may be: the API promises a count lags a write by at most one
# second. Published changes arrive in milliseconds; this bounds the rest (a restored
# backup, a flushed database), at one Redis read per statement and second per process.
COUNT_MAX_AGE = 1.0
# Open streams learn of such changes by a periodic read of every watched count.
RESYNC_SECONDS = 5.0
HEARTBEAT = b": keep-alive\n\n"
RECONNECT_BACKOFF = (0.1, 0.25, 0.5, 1.0, 2.0)
# A subscription is pinged at each resync; one that has not answered this long after is
# taken for dead (a hung node keeps its sockets open and says nothing).
PONG_WITHIN = 3.0
_hubs: weakref.WeakSet[Hub] = weakref.WeakSet()


def encode_count(statement_id: str, count: int) -> bytes:
    """One ``count`` event, ready to write to every viewer."""
    data = json.dumps({"id": statement_id, "count": count})
    return f"event: count\ndata: {data}\n\n".encode()


class Bell:
    """Wakes the viewers that wait in their own thread (outside gunicorn's gevent workers)
    whenever any count changes; each then looks at the channels it watches."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def ring(self) -> None:
        event, self.event = self.event, threading.Event()
        event.set()


class Channel:
    """One statement's latest count, as numbers and as the bytes viewers receive."""

    __slots__ = (
        "bell",
        "count",
        "known",
        "known_at",
        "known_seq",
        "payload",
        "pending",
        "reading",
        "statement_id",
        "version",
        "viewers",
    )

    def __init__(self, statement_id: str, bell: Bell) -> None:
        self.statement_id = statement_id
        self.count: int | None = None
        self.payload = b""
        self.version = 0
        self.bell = bell
        # The newest count from Redis that coalescing has not sent yet.
        self.pending: int | None = None
        # The newest count this process has heard of (message or read), for count reads;
        # known_seq changes with every message, so a slower read cannot overwrite one.
        self.known: int | None = None
        self.known_at = 0.0
        self.known_seq = 0
        # Viewers written to straight from here (see DirectViewer); the others wait on
        # ``changed`` in their own greenlet or thread.
        self.viewers: set[DirectViewer] = set()
        self.reading = threading.Lock()

    def publish(self, count: int) -> None:
        """Make ``count`` current, wake waiting viewers and write to direct ones; call with
        the hub's lock held."""
        self.count = count
        self.payload = encode_count(self.statement_id, count)
        self.version += 1
        self.bell.ring()
        deliver(self.viewers, self.payload)


class DirectViewer:
    """A stream written by the hub itself, with one non-blocking ``write`` per event.

    Under gunicorn's gevent workers, waking one greenlet per viewer and passing each
    event through the WSGI layers costs several times the send itself; with thousands
    of viewers that is the delay of the last one. So once a stream's headers and first
    event are out, its socket joins its channel's ``viewers`` and every later event is
    written to it in one loop, already framed for HTTP/1.1 chunked transfer. A viewer
    whose socket buffer is full is handed back to its own greenlet (``lagging``), which
    sends the rest cooperatively and then the newest event.
    """

    __slots__ = ("backlog", "channels", "chunked", "closed", "fd", "lagging", "wake")

    def __init__(self, fd: int, chunked: bool, channels: tuple[Channel, ...] = ()) -> None:
        self.fd = fd
        self.chunked = chunked
        self.channels = channels  # what it watches: a catch-up sends each one's newest count
        self.closed = False
        self.lagging = False
        self.backlog = b""
        self.wake = threading.Event()

    def frame(self, data: bytes) -> bytes:
        return chunk(data) if self.chunked else data

    def close(self) -> None:
        self.closed = True
        self.wake.set()


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def deliver(viewers: set[DirectViewer], data: bytes) -> None:
    """Write ``data`` (an event or a heartbeat) to every direct viewer, never blocking."""
    if not viewers:
        return
    chunked = chunk(data)
    gone = []
    for viewer in viewers:
        if viewer.lagging:
            viewer.wake.set()  # its greenlet sends the newest event once it catches up
            continue
        framed = chunked if viewer.chunked else data
        try:
            sent = os.write(viewer.fd, framed)
        except BlockingIOError:
            sent = 0
        except OSError:  # the viewer left: its greenlet ends the response
            gone.append(viewer)
            continue
        if sent < len(framed):
            viewer.backlog = framed[sent:]
            viewer.lagging = True
            viewer.wake.set()
    for viewer in gone:
        viewers.discard(viewer)
        viewer.close()


class Hub:
    """A process's single subscription to every statement's count channel."""

    def __init__(
        self,
        redis: RedisClient,
        store: Store,
        statement_ids: list[str],
        min_interval: float,
        heartbeat: float = 15.0,
        max_streams: int = 0,
        pubsub_mode: str = "classic",
    ) -> None:
        self.redis = redis
        self.pubsub_mode = pubsub_mode
        self.store = store
        self.min_interval = min_interval
        self.heartbeat = heartbeat
        self.bell = Bell()
        self.channels = {sid: Channel(sid, self.bell) for sid in statement_ids}
        # Re-entrant: stop() runs in the worker's SIGTERM handler, which may interrupt
        # this very greenlet while it holds the lock (or a first stop(), on a second
        # SIGTERM).
        self.lock = threading.RLock()
        self.subscribed = False
        self._last_sent: dict[str, float] = {}
        self._scheduled: set[str] = set()
        self._pid = 0
        self.stopping = threading.Event()
        # Streams this process serves now, and the most it takes (None: no ceiling known);
        # see configure_worker.
        self.open_streams = 0
        self.max_streams: int | None = max_streams or None
        self.max_streams_setting = max_streams
        self.process = ""  # this process's token in the per-client stream counts
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
            self.process = secrets.token_hex(8)
            self.subscribed = False
            thread = threading.Thread(target=self._run, name="undersign-live", daemon=True)
            thread.start()
            beat = threading.Thread(target=self._beat, name="undersign-beat", daemon=True)
            beat.start()

    def _beat(self) -> None:
        """Heartbeats for direct viewers, one loop for the process (not a timer each)."""
        while not self.stopping.wait(self.heartbeat):
            if self.open_streams:  # the streams counted for its clients still count
                with contextlib.suppress(RedisError):  # if not now, at the next beat
                    self.store.process_alive(self.process, self.alive_for)
            with self.lock:
                viewers: set[DirectViewer] = set()
                for channel in self.channels.values():
                    viewers |= channel.viewers
                deliver(viewers, HEARTBEAT)

    @property
    def alive_for(self) -> int:
        """How long this process's stream counts stay valid without a heartbeat."""
        return int(self.heartbeat * 4) + 5

    def admit(self, client: str, per_client: int) -> None:
        """Take one more stream for ``client`` (a keyed hash), or refuse it with a problem:
        503 when this process is at its ceiling (so ordinary requests keep a share of its
        connections), 429 when the client holds ``per_client`` streams already."""
        self.ensure_running()
        if self.max_streams is not None and self.open_streams >= self.max_streams:
            raise Problem(
                503,
                "streams-full",
                "Too many live streams",
                "This server holds as many live streams as it can; the count still "
                "answers at /count. Try the stream again shortly.",
                headers={"Retry-After": "15"},
            )
        if not self.store.open_stream(client, self.process, per_client, self.alive_for):
            raise Problem(
                429,
                "too-many-streams",
                "Too many live streams",
                f"This network already holds {per_client} live streams. One stream can "
                "carry many statements: /api/v1/events?statements=a,b.",
                headers={"Retry-After": "30"},
            )
        self.open_streams += 1

    def release(self, client: str) -> None:
        self.open_streams -= 1
        try:
            self.store.close_stream(client, self.process)
        except RedisError:
            log.warning("live: could not release a stream's count (Redis unavailable)")

    def snapshot(self, statement_ids: Sequence[str]) -> list[tuple[Channel, int]]:
        """Each statement's channel and the version of the first event a new viewer gets.

        The counts are at most ``COUNT_MAX_AGE`` old, as for count reads: a burst of new
        viewers (a redeploy reconnects them all) costs one Redis read per statement, not
        one each. A Redis error propagates: the viewer gets a 503 problem, not a stream.
        """
        counts = [(self.channels[sid], self.count(sid)) for sid in statement_ids]
        with self.lock:
            watched = []
            for channel, count in counts:
                if channel.count is None:  # known, but its event still waits for coalescing
                    channel.publish(count)
                watched.append((channel, channel.version))
            return watched

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
        (so an outage is a 503, not an old number). A count found to have moved behind
        the scripts' back (a restored backup, a flushed database) is sent to viewers."""
        known = self.fresh_count(statement_id)
        if known is not None:
            return known
        channel = self.channels[statement_id]
        if not self.subscribed:
            return self._read(channel)  # in an outage, nobody waits in line for Redis
        with channel.reading:  # one read at a time; those queued behind it reuse it
            known = self.fresh_count(statement_id)
            return known if known is not None else self._read(channel)

    def _read(self, channel: Channel) -> int:
        version, seq = channel.version, channel.known_seq
        count = self.store.count(channel.statement_id)
        with self.lock:
            self._know(channel, count, seq)
            # A newer count may have been published meanwhile: then that one stands.
            if channel.version == version and channel.count is not None and channel.count != count:
                channel.publish(count)
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
        failures = 0
        while not self.stopping.is_set():
            subscriptions: list[Any] = []
            kept: list[tuple[Any, Any]] = []
            try:
                subscriptions = self._subscribe()
                # redis-py would quietly reconnect and resubscribe, and whatever was
                # published meanwhile would be lost; fail instead, so that _resync runs.
                for pubsub in subscriptions:
                    connection = pubsub.connection
                    if connection is not None:
                        kept.append((connection, connection.retry))
                        connection.retry = Retry(NoBackoff(), 0)
                with self.lock:
                    # What was heard before this subscription may have missed changes:
                    # count reads go to Redis again until a message or a read refreshes
                    # them (bumping the sequence voids reads still in flight).
                    for channel in self.channels.values():
                        channel.known_at = 0.0
                        channel.known_seq += 1
                    self.subscribed = True
                if failures:
                    log.info("live: subscribed again (%s pub/sub)", self.pubsub_mode)
                # Counts that moved before this subscription (or during an outage) would
                # otherwise reach nobody until the next change.
                self._resync()
                failures = 0
                self._listen(subscriptions)
            except Exception as exc:  # any failure means: resubscribe later
                with self.lock:
                    self.subscribed = False
                if failures == 0:
                    log.warning("live: lost the Redis subscription (%s); retrying", exc)
                self._refresh_slots()
                delay = RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)]
                failures += 1
                self.stopping.wait(delay)
            finally:
                for connection, retry in kept:
                    connection.retry = retry  # it goes back to the shared pool
                for pubsub in subscriptions:
                    with contextlib.suppress(Exception):  # the connection is gone anyway
                        pubsub.close()

    def _subscribe(self) -> list[Any]:
        """Subscribe, and wait until Redis confirms it. Classic: one ``PSUBSCRIBE`` on
        every statement's channel (on a cluster, every node hears every ``PUBLISH``).
        Sharded: ``SSUBSCRIBE`` to each statement's channel on the node serving its slot,
        one connection per node."""
        if self.pubsub_mode == "classic":
            pubsub = self.redis.pubsub()  # type: ignore[no-untyped-call]
            pubsub.psubscribe(self.store.channel("*"))
            _confirm(pubsub, 1)
            return [pubsub]
        by_node: dict[str, tuple[Any, list[str]]] = {}
        for sid in self.channels:
            channel = self.store.channel(sid)
            if isinstance(self.redis, RedisCluster):
                node = self.redis.get_node_from_key(channel)  # type: ignore[no-untyped-call]
                client = self.redis.get_redis_connection(node)
                name = node.name
            else:
                client, name = self.redis, ""
            by_node.setdefault(name, (client, []))[1].append(channel)
        subscriptions = []
        try:
            for client, channels in by_node.values():
                pubsub = client.pubsub()
                subscriptions.append(pubsub)
                for channel in channels:  # one command each: several must share a slot
                    pubsub.ssubscribe(channel)
                _confirm(pubsub, len(channels))
        except BaseException:
            for pubsub in subscriptions:
                with contextlib.suppress(Exception):
                    pubsub.close()
            raise
        return subscriptions

    def _listen(self, subscriptions: list[Any]) -> None:
        """Read every subscription (one reader thread each) until one fails or stops
        answering: each is pinged at a resync and must answer within ``PONG_WITHIN``
        seconds (a node that hangs keeps its sockets open but says nothing)."""
        failed = threading.Event()
        errors: list[BaseException] = []
        heard = [time.monotonic()] * len(subscriptions)
        ping_due = [False] * len(subscriptions)

        def read(index: int, pubsub: Any) -> None:
            try:
                while not failed.is_set() and not self.stopping.is_set():
                    if ping_due[index]:  # sent from here: one thread uses the connection
                        ping_due[index] = False
                        pubsub.ping()
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        continue
                    heard[index] = time.monotonic()
                    kind = message.get("type")
                    if kind in ("pmessage", "message", "smessage"):
                        self._on_message(message["channel"], message["data"])
                    elif kind in ("sunsubscribe", "punsubscribe", "unsubscribe"):
                        # Redis drops shard channels whose slot moved (a failover).
                        raise RedisError(f"{kind} {message.get('channel')!r} by the server")
            except BaseException as exc:
                errors.append(exc)
                failed.set()

        readers = [
            threading.Thread(target=read, args=(i, p), name="undersign-live-read", daemon=True)
            for i, p in enumerate(subscriptions)
        ]
        for reader in readers:
            reader.start()
        resync_at = time.monotonic() + RESYNC_SECONDS
        pinged_at: float | None = None
        while not self.stopping.is_set() and not failed.is_set():
            now = time.monotonic()
            if now >= resync_at:
                answered = pinged_at is None or all(at >= pinged_at for at in heard)
                if not answered and now - (pinged_at or now) > PONG_WITHIN:
                    raise RedisError("a subscription did not answer its ping")
                if answered:
                    pinged_at = now
                    ping_due[:] = [True] * len(subscriptions)
                self._resync()
                resync_at = time.monotonic() + RESYNC_SECONDS
            failed.wait(min(1.0, max(0.0, resync_at - time.monotonic())))
        if errors:
            raise errors[0]

    def _refresh_slots(self) -> None:
        """On a cluster, ask it again which node serves which slot (after a failover)."""
        if isinstance(self.redis, RedisCluster):
            with contextlib.suppress(Exception):
                self.redis.nodes_manager.initialize()

    def _resync(self) -> None:
        """Send every watched count that moved unheard: after an outage, and now and then
        for changes made behind the scripts' back."""
        with self.lock:
            seqs = {
                sid: channel.known_seq
                for sid, channel in self.channels.items()
                if channel.count is not None or channel.known is not None
            }
        if not seqs:
            return
        counts = self.store.counts(list(seqs))
        with self.lock:
            for sid, count in counts.items():
                # A message heard (or a count read) since the snapshot is at least as new
                # as this read: sending the read would take viewers back a step.
                if self.channels[sid].known_seq == seqs[sid]:
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
            self.bell.ring()
            for channel in self.channels.values():
                for viewer in list(channel.viewers):
                    viewer.close()
                channel.viewers.clear()


def _confirm(pubsub: Any, wanted: int, timeout: float = 2.0) -> None:
    """Wait for Redis to confirm ``wanted`` subscriptions (a hung node never does)."""
    deadline = time.monotonic() + timeout
    confirmed = 0
    while confirmed < wanted:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RedisTimeoutError("the subscription was not confirmed in time")
        message = pubsub.get_message(timeout=left)
        if message is not None and message.get("type") in ("psubscribe", "ssubscribe", "subscribe"):
            confirmed += 1


def configure_worker(worker_connections: int) -> None:
    """Called in each gunicorn worker: keep streams below the worker's connection limit,
    so ordinary requests (count reads, endorsements) always find a free connection."""
    automatic = max(1, worker_connections - max(worker_connections // 10, 10))
    for hub in list(_hubs):
        wanted = hub.max_streams_setting
        hub.max_streams = min(wanted, automatic) if wanted else automatic


def stop_streams() -> None:
    """Called by the gunicorn worker on SIGTERM: viewers reconnect to a live worker."""
    for hub in list(_hubs):
        hub.stop()


def first_event(watched: Sequence[tuple[Channel, int]]) -> bytes:
    """What a new viewer gets at once: the reconnect delay and every watched count."""
    return b"retry: %d\n" % RETRY_MS + b"".join(channel.payload for channel, _ in watched)


def stream(
    watched: Sequence[tuple[Channel, int]], bell: Bell, heartbeat: float, stopping: threading.Event
) -> Iterator[bytes]:
    """The body of one viewer's response: bytes already encoded, nothing per viewer."""
    OPEN_STREAMS.inc()
    try:
        yield first_event(watched)
        seen = {channel: version for channel, version in watched}
        while not stopping.is_set():
            rung = bell.event
            news = b""
            for channel, version in seen.items():
                if channel.version != version:
                    seen[channel] = channel.version
                    news += channel.payload
            if news:
                yield news
            elif not rung.wait(heartbeat):
                yield HEARTBEAT
    finally:
        OPEN_STREAMS.dec()


def direct_stream(
    hub: Hub, watched: Sequence[tuple[Channel, int]], sock: Any, chunked: bool
) -> Iterator[bytes]:
    """Like ``stream``, but after the first event the hub writes to ``sock`` itself."""
    OPEN_STREAMS.inc()
    channels = tuple(channel for channel, _ in watched)
    viewer = DirectViewer(sock.fileno(), chunked, channels)
    try:
        yield first_event(watched)  # gunicorn sends the headers with it
        with hub.lock:
            if hub.stopping.is_set():
                return
            for channel, version in watched:
                channel.viewers.add(viewer)
                if channel.version != version:  # changed while the first event went out
                    viewer.lagging = True
        while not viewer.closed:
            if viewer.lagging:
                backlog, viewer.backlog = viewer.backlog, b""
                newest = b"".join(channel.payload for channel in channels)
                sock.sendall(backlog + viewer.frame(newest))
                viewer.lagging = False
                continue
            viewer.wake.wait()
            viewer.wake.clear()
    except OSError:
        pass  # the viewer left
    finally:
        with hub.lock:
            for channel in channels:
                channel.viewers.discard(viewer)
        OPEN_STREAMS.dec()


def can_write_directly(environ: Mapping[str, Any]) -> bool:
    """Direct writes need gunicorn's socket and gevent (one OS thread, no preemption)."""
    if environ.get("REQUEST_METHOD") != "GET" or "gunicorn.socket" not in environ:
        return False
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def event_stream(statement_ids: Sequence[str]) -> Response:
    """A live stream of these (known) statements' counts, if this client may open one."""
    hub = get_hub()
    salt: DailySalt = current_app.extensions["undersign.salt"]
    client = salt.hash(network_of(request.remote_addr or "unknown", CLIENT_PREFIXES))
    hub.admit(client, current_app.config["STREAMS_PER_CLIENT"])
    try:
        watched = hub.snapshot(statement_ids)
    except BaseException:
        hub.release(client)
        raise
    body: Iterator[bytes]
    if can_write_directly(request.environ):
        # gunicorn frames a body in chunks exactly when the client speaks HTTP/1.1+.
        chunked = request.environ.get("SERVER_PROTOCOL", "HTTP/1.0") != "HTTP/1.0"
        body = direct_stream(hub, watched, request.environ["gunicorn.socket"], chunked)
    else:
        heartbeat = current_app.config["EVENTS_HEARTBEAT"]
        body = stream(watched, hub.bell, heartbeat, hub.stopping)
    response = Response(released(body, hub, client), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    return response


def released(body: Iterator[bytes], hub: Hub, client: str) -> Iterator[bytes]:
    """``body``, then the client's stream count goes down (however the stream ends)."""
    try:
        yield from body
    finally:
        hub.release(client)


@bp.get("/statements/<statement_id>/events")
def events(statement_id: str) -> Response:
    return event_stream([get_statement(statement_id).id])


def requested_statements(raw: str | None) -> list[str]:
    """The ids of ``?statements=a,b,c``, each known and named once, in the order given."""
    ids = list(dict.fromkeys(part.strip() for part in (raw or "").split(",") if part.strip()))
    if not ids:
        raise Problem(
            422,
            "invalid-statements",
            "No statements named",
            f"Name the statements to watch: ?statements=id1,id2 (at most {MAX_STREAM_STATEMENTS}).",
            errors={"statements": "Name at least one statement id."},
        )
    if len(ids) > MAX_STREAM_STATEMENTS:
        raise Problem(
            422,
            "invalid-statements",
            "Too many statements",
            f"One stream carries at most {MAX_STREAM_STATEMENTS} statements; "
            f"{len(ids)} were named.",
            errors={"statements": f"Name at most {MAX_STREAM_STATEMENTS} statement ids."},
        )
    return [get_statement(sid).id for sid in ids]  # an unknown id is a 404 problem


@bp.get("/events")
def multi_events() -> Response:
    return event_stream(requested_statements(request.args.get("statements")))


def init_app(app: Flask) -> None:
    registry = app.extensions["undersign.statements"]
    app.extensions["undersign.live"] = Hub(
        app.extensions["undersign.redis"],
        app.extensions["undersign.store"],
        list(registry.ids()),
        app.config["EVENTS_MIN_INTERVAL"],
        app.config["EVENTS_HEARTBEAT"],
        app.config["STREAMS_PER_WORKER"],
        "sharded" if app.extensions["undersign.store"].sharded else "classic",
    )
    app.register_blueprint(bp)
