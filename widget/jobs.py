"""The confirmation mail's queue: RQ jobs on the service's Redis, sent by ``undersign
worker`` (``undersign serve`` runs one beside gunicorn). Imports no Flask.

A job holds the address, and the link's token, only while it waits: sealed with AES-GCM
under a key derived from ``WIDGET_SECRET_KEY`` (so a copy of Redis does not show them
either), and deleted as soon as the SMTP server has taken the mail (``result_ttl=0``), or
when it is given up (``failure_ttl=0``). A send that fails is retried after 5 s, then
after twice as long each time up to an hour between tries, for ``WIDGET_MAIL_RETRY_FOR``
seconds (a day) in all; then the failure callback drops the pending endorsement with it.
An SMTP server that refuses the address for good (5xx) ends it at once. Jobs have no
description and exceptions carry no server text, so RQ's logs and records never name an
address.

Every key RQ uses carries the hash tag ``{mail}`` (``RQ_KEY_PREFIX`` is ``rq:{mail}``, set
by the package before RQ is imported, checked here): its transactions stay in one slot of
a Redis Cluster. The
queue's own counters are ``us:{mail}:stats`` (``sent``, ``failures``, ``dropped``).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from redis import Redis
from redis.exceptions import RedisError
from rq import Callback, Queue, Retry, SimpleWorker
from rq.defaults import RQ_KEY_PREFIX
from rq.job import Job
from rq.registry import ScheduledJobRegistry, StartedJobRegistry
from rq.worker import Worker

from . import RQ_KEY_PREFIX as RQ_PREFIX
from .i18n import get_catalog
from .mail import Letter, MailNotSent, MailRejected, SmtpTarget, build_message, send
from .privacy import derive_key
from .store import RedisClient, Store

if RQ_KEY_PREFIX != RQ_PREFIX:  # RQ_KEY_PREFIX set otherwise, or RQ imported before us
    raise RuntimeError(f"RQ's key prefix must be {RQ_PREFIX!r}, not {RQ_KEY_PREFIX!r}")

QUEUE_NAME = "mail"
STATS_KEY = "us:{mail}:stats"
JOB_TIMEOUT = 90  # seconds one delivery may take (each SMTP step times out after 20)
FIRST_WAIT, LONGEST_WAIT = 5, 3600  # seconds between tries: 5, 10, 20, ... up to an hour
ALIVE_FOR = 60  # seconds since its last heartbeat that a worker counts as alive
# An idle RQ worker sends its heartbeat each time its blocking wait for a job runs out,
# every worker_ttl - 15 seconds: 405 s at RQ's default, which made `undersign worker
# --check` call an idle, healthy worker dead a minute after its start.
WORKER_TTL = 45
log = logging.getLogger("widget.jobs")


def retry_waits(total: int) -> list[int]:
    """Seconds to wait before each retry: doubling from 5 s, at most an hour, adding up to
    ``total`` (the last one shortened to fit)."""
    waits: list[int] = []
    wait, spent = FIRST_WAIT, 0
    while spent < total:
        step = min(wait, total - spent)
        waits.append(step)
        spent += step
        wait = min(wait * 2, LONGEST_WAIT)
    return waits


# -- the sealed address ------------------------------------------------------------------


def _box(secret: str) -> AESGCM:
    return AESGCM(derive_key(secret, "mail-queue"))


def seal(secret: str, statement_id: str, address: str, token: str) -> str:
    """The address and the link's token as a queued job may hold them."""
    nonce = secrets.token_bytes(12)
    plain = json.dumps([address, token]).encode()
    sealed = nonce + _box(secret).encrypt(nonce, plain, statement_id.encode())
    return base64.urlsafe_b64encode(sealed).decode()


def unseal(secret: str, statement_id: str, sealed: str) -> tuple[str, str]:
    raw = base64.urlsafe_b64decode(sealed)
    address, token = json.loads(_box(secret).decrypt(raw[:12], raw[12:], statement_id.encode()))
    return str(address), str(token)


# -- the web side: queueing ----------------------------------------------------------------


class MailQueue:
    """Queues confirmation mail (kept in ``app.extensions["undersign.mail"]``)."""

    def __init__(self, redis: RedisClient, secret: str, retry_for: int) -> None:
        self.redis = redis
        self.secret = secret
        self.queue = Queue(QUEUE_NAME, connection=redis)  # type: ignore[arg-type]
        waits = retry_waits(retry_for)
        self.retry = Retry(max=len(waits), interval=waits)
        self.keep_for = retry_for + JOB_TIMEOUT * 2

    def enqueue(
        self,
        statement_id: str,
        kind: str,
        *,
        address: str = "",
        token: str = "",
        token_hash: str = "",
        lang: str = "en",
        until: int = 0,
    ) -> None:
        """One job, whatever the kind: ``link``, ``already``, or ``none`` (a mail went to
        this address in the last 10 minutes: the job carries no address and sends nothing,
        so that every endorsement costs the request the same)."""
        sealed = seal(self.secret, statement_id, address, token) if kind != "none" else ""
        self.queue.enqueue(
            deliver,
            statement_id,
            kind,
            sealed,
            lang,
            token_hash,
            until,
            job_timeout=JOB_TIMEOUT,
            result_ttl=0,
            failure_ttl=0,
            ttl=self.keep_for,
            description="confirmation mail",
            retry=self.retry if kind != "none" else None,
            on_failure=Callback(given_up),
        )

    def state(self) -> dict[str, int]:
        """``queued`` (waiting to be sent), ``retrying`` (their last try failed; waiting
        for the next), ``sending``, and since the start ``sent``, ``failures`` (tries the
        SMTP server did not take) and ``dropped`` (mails given up). One round trip."""
        scheduled = ScheduledJobRegistry(queue=self.queue)  # type: ignore[no-untyped-call]
        started = StartedJobRegistry(queue=self.queue)
        pipe = self.redis.pipeline(transaction=False)
        pipe.llen(self.queue.key)
        pipe.zcard(scheduled.key)
        pipe.zcard(started.key)
        pipe.hmget(STATS_KEY, "sent", "failures", "dropped")
        queued, retrying, sending, stats = pipe.execute()
        sent, failures, dropped = (int(v or 0) for v in stats)
        return {
            "queued": int(queued),
            "retrying": int(retrying),
            "sending": int(sending),
            "sent": sent,
            "failures": failures,
            "dropped": dropped,
        }


# -- the worker side: sending ----------------------------------------------------------------


@dataclass(frozen=True)
class Mailer:
    """What a worker needs to send: the store (to check and drop pending endorsements),
    the secret (to unseal), the sender, the SMTP server, the public URL for links, and
    each statement's title by language."""

    store: Store
    secret: str
    sender: str
    target: SmtpTarget | None
    public_url: str
    title: Callable[[str, str], str]


_mailer: Mailer | None = None


def configure(mailer: Mailer) -> None:
    global _mailer
    _mailer = mailer


def _current() -> Mailer:
    if _mailer is None:
        raise RuntimeError("widget.jobs.configure() was not called in this worker")
    return _mailer


def _count(mailer: Mailer, what: str) -> None:
    mailer.store.redis.hincrby(STATS_KEY, what, 1)


def deliver(
    statement_id: str, kind: str, sealed: str, lang: str, token_hash: str, until: int
) -> None:
    """The job: send one confirmation mail (see ``MailQueue.enqueue``)."""
    if kind == "none":
        return
    mailer = _current()
    if kind == "link" and not mailer.store.pending_alive(statement_id, token_hash):
        log.info("mail for %s skipped: confirmed, replaced or dropped meanwhile", statement_id)
        return
    if mailer.target is None:
        raise MailNotSent("WIDGET_SMTP_URL is not set for this worker")
    address, token = unseal(mailer.secret, statement_id, sealed)
    letter = Letter(
        kind=kind,
        to=address,
        title=mailer.title(statement_id, lang),
        link=f"{mailer.public_url}/c/{token}" if kind == "link" else "",
        until=datetime.fromtimestamp(until, UTC) if until else None,
    )
    message = build_message(letter, get_catalog(lang), mailer.sender)
    try:
        send(message, mailer.target)
    except MailRejected as exc:
        log.warning("mail for %s refused for good (%s): dropped", statement_id, exc)
        if kind == "link":
            mailer.store.drop_pending(statement_id, token_hash)
        _count(mailer, "dropped")
        return
    except MailNotSent as exc:
        log.warning("mail for %s not sent (%s)", statement_id, exc)
        _count(mailer, "failures")
        raise
    _count(mailer, "sent")


def given_up(job: Job, connection: Any, *exc_info: Any) -> None:
    """RQ's failure callback: after the last try, drop the pending endorsement (the job is
    deleted by ``failure_ttl=0``)."""
    if job.retries_left:
        return
    statement_id, kind, _, _, token_hash, _ = job.args
    mailer = _current()
    if kind == "link":
        mailer.store.drop_pending(statement_id, token_hash)
    _count(mailer, "dropped")
    log.warning("mail for %s given up after its last try: dropped", statement_id)


# -- running a worker ------------------------------------------------------------------------


def worker_connection(url: str, cluster: bool = False) -> Redis:
    """A client for the worker: no read timeout (it waits for jobs in blocking pops). On a
    Redis Cluster, one to the master that serves the ``{mail}`` slot now (every RQ key is
    there); after a failover the worker's loop asks again (see ``work``)."""
    if cluster:
        from .db import make_client

        found: Any = make_client(url, cluster=True)
        node = found.get_node_from_key(f"{RQ_PREFIX}:queue")
        found.close()
        return Redis(
            host=node.host, port=node.port, socket_connect_timeout=5, health_check_interval=30
        )
    return Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)


class MailWorker(SimpleWorker):
    """RQ's in-process worker (no fork per mail), remembering whether it was asked to stop."""

    stop_asked = False

    def request_stop(self, signum: Any, frame: Any) -> None:
        self.stop_asked = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def mail_worker(connection: Redis) -> MailWorker:
    """The worker of the mail queue, with a heartbeat well inside ``ALIVE_FOR`` even idle."""
    queue = Queue(QUEUE_NAME, connection=connection)
    return MailWorker(
        [queue], connection=connection, log_job_description=False, worker_ttl=WORKER_TTL
    )


def work(
    connection: Redis | Callable[[], Redis],
    mailer: Mailer,
    *,
    burst: bool = False,
    pause: float = 5.0,
) -> None:
    """Send queued mail until stopped (SIGTERM or SIGINT: after the mail in hand), or, with
    ``burst``, until the queue is empty. Retries are put back by RQ's scheduler. A worker
    loop that ends on an error (Redis gone too long) starts again after ``pause``, on a
    new connection when ``connection`` is a callable that makes one (on a cluster, to the
    node that serves the queue's slot then)."""
    configure(mailer)
    while True:
        try:
            current = connection() if callable(connection) else connection
        except RedisError as exc:
            log.error("the mail worker cannot reach Redis (%s); again in %.0f s", exc, pause)
            time.sleep(pause)
            continue
        worker = mail_worker(current)
        worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
        if burst or worker.stop_asked:
            return
        log.error("the mail worker stopped on an error; starting again in %.0f s", pause)
        time.sleep(pause)


def alive_here(connection: Redis, now: float | None = None) -> bool:
    """Whether a worker on this host has sent a heartbeat in the last minute."""
    at = time.time() if now is None else now
    host = socket.gethostname()
    for worker in Worker.all(connection=connection):
        beat = worker.last_heartbeat
        if worker.hostname == host and beat and at - beat.timestamp() < ALIVE_FOR:
            return True
    return False
