"""Prometheus metrics and the ``/metrics`` endpoint.

Under gunicorn the metrics are aggregated across worker processes with
prometheus-client's multiprocess mode: ``gunicorn_conf`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before the workers start and tells the
library when a worker dies. Without that variable (tests, a single process) the values
live in this process's registry. ``/metrics`` asks for the admin token unless
``WIDGET_METRICS_PUBLIC`` is true. Labels never carry a client address or a name.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from .adminauth import bearer_authenticates
from .errors import Problem

if TYPE_CHECKING:
    from .jobs import MailQueue
    from .statements import StatementRegistry
    from .store import Store

REGISTRY = CollectorRegistry(auto_describe=True)

ENDORSEMENTS = Counter(
    "undersign_endorsements_total",
    "Endorsement attempts by outcome (counted, duplicate, pending: waiting for email "
    "confirmation, rejected) and reason.",
    ["outcome", "reason"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "undersign_rate_limited_total",
    "Requests refused with 429 by the endorsement rate limit.",
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "undersign_redis_errors_total",
    "Requests answered 503 because Redis did not answer.",
    registry=REGISTRY,
)
OPEN_STREAMS = Gauge(
    "undersign_open_event_streams",
    "Server-Sent Event streams open right now.",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
LATENCY = Histogram(
    "undersign_request_duration_seconds",
    "Time to answer a request, by endpoint and method (streams: time to first byte).",
    ["endpoint", "method"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

ENDORSE_ENDPOINTS = {"api.endorse", "embed.endorse_form"}
REJECTION_REASONS = {
    400: "malformed",
    403: "origin",
    404: "unknown_statement",
    409: "closed",
    413: "too_large",
    415: "media_type",
    422: "invalid",
    429: "rate_limited",
    503: "store_unavailable",
}

bp = Blueprint("metrics", __name__)


class Metrics:
    """What other modules may bump, kept in ``app.extensions["undersign.metrics"]``."""

    redis_errors = REDIS_ERRORS
    open_streams = OPEN_STREAMS
    endorsements = ENDORSEMENTS


def record_outcome(status: str, reason: str = "") -> None:
    """Called by the endorsement views once the store has answered (or, with a reason,
    when an endorsement is turned away whatever the answer looks like: the honeypot)."""
    g.undersign_outcome = status
    g.undersign_reason = reason


def _start_timer() -> None:
    g.undersign_started = time.perf_counter()


def _observe(response: Response) -> Response:
    started = g.get("undersign_started")
    endpoint = request.endpoint or "unmatched"
    if started is not None and endpoint != "metrics.metrics":
        LATENCY.labels(endpoint, request.method).observe(time.perf_counter() - started)
    status = response.status_code
    if status == 429:
        RATE_LIMITED.inc()
    if endpoint in ENDORSE_ENDPOINTS and request.method == "POST":
        outcome = g.get("undersign_outcome")
        if outcome in ("counted", "duplicate", "pending"):
            ENDORSEMENTS.labels(outcome, "").inc()
        elif outcome == "rejected" or status >= 400:
            reason = g.get("undersign_reason") or REJECTION_REASONS.get(status, str(status))
            ENDORSEMENTS.labels("rejected", reason).inc()
    return response


def _authorized() -> bool:
    if current_app.config["METRICS_PUBLIC"]:
        return True
    return bool(bearer_authenticates("/metrics bearer check", without_redis=True))


class _Family(Collector):
    """One metric family computed for this scrape."""

    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterable[Metric]:
        yield self.family


def surge_family() -> GaugeMetricFamily | None:
    """``undersign_surging{statement}``, computed from Redis at scrape time (the same answer
    from every worker and instance); left out while Redis does not answer."""
    store: Store = current_app.extensions["undersign.store"]
    statements: StatementRegistry = current_app.extensions["undersign.statements"]
    family = GaugeMetricFamily(
        "undersign_surging",
        "1 while the statement or one of its allied sources is surging: more endorsements "
        "in the last 5 minutes than 5 times the usual rate and than WIDGET_SURGE_FLOOR.",
        labels=["statement"],
    )
    try:
        for statement_id in statements.ids():
            family.add_metric([statement_id], 1.0 if store.surge(statement_id).alert else 0.0)
    except RedisError:
        return None
    return family


def mail_families() -> list[Metric]:
    """The confirmation mail queue and pending endorsements, read from Redis at scrape time
    (every worker and instance answers the same); none while Redis does not answer."""
    mail: MailQueue = current_app.extensions["undersign.mail"]
    store: Store = current_app.extensions["undersign.store"]
    statements: StatementRegistry = current_app.extensions["undersign.statements"]
    confirming = [s.id for s in statements if s.confirms_email]
    try:
        state = mail.state()
        pending = store.confirmation_stats(confirming) if confirming else {}
    except RedisError:
        return []
    families: list[Metric] = []
    for name, help_text, value in (
        (
            "undersign_mail_queue_length",
            "Confirmation mails waiting in the queue to be sent now.",
            state["queued"],
        ),
        (
            "undersign_mail_retrying",
            "Confirmation mails whose last try failed, waiting for the next (with backoff, "
            "for WIDGET_MAIL_RETRY_FOR in all).",
            state["retrying"],
        ),
    ):
        gauge = GaugeMetricFamily(name, help_text)
        gauge.add_metric([], float(value))
        families.append(gauge)
    for name, help_text, value in (
        ("undersign_mail_sent", "Confirmation mails the SMTP server took.", state["sent"]),
        (
            "undersign_mail_failures",
            "Tries to send a confirmation mail that the SMTP server did not take.",
            state["failures"],
        ),
        (
            "undersign_mail_dropped",
            "Confirmation mails given up (refused for good, or still failing after "
            "WIDGET_MAIL_RETRY_FOR), their pending endorsements dropped.",
            state["dropped"],
        ),
    ):
        families.append(CounterMetricFamily(name, help_text, value=float(value)))
    gauge = GaugeMetricFamily(
        "undersign_pending_endorsements",
        "Endorsements waiting for their owner to confirm them by email.",
        labels=["statement"],
    )
    for statement_id, stats in pending.items():
        gauge.add_metric([statement_id], float(stats["pending"]))
    families.append(gauge)
    return families


def unsealed_family() -> GaugeMetricFamily | None:
    """``undersign_log_unsealed{statement}``: transparency-log entries appended but not yet
    under a signed checkpoint, read from Redis at scrape time; left out while Redis does
    not answer."""
    store: Store = current_app.extensions["undersign.store"]
    statements: StatementRegistry = current_app.extensions["undersign.statements"]
    family = GaugeMetricFamily(
        "undersign_log_unsealed",
        "Transparency-log entries not yet sealed under a signed checkpoint (sealing runs "
        "every second; a growing number means sealing is stuck or behind).",
        labels=["statement"],
    )
    try:
        for statement_id in statements.ids():
            family.add_metric([statement_id], float(store.log_progress(statement_id).unsealed))
    except RedisError:
        return None
    return family


@bp.get("/metrics")
def metrics() -> Response:
    if not _authorized():
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            "Send the operator token as 'Authorization: Bearer <token>'.",
            headers={"WWW-Authenticate": 'Bearer realm="undersign"'},
        )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    computed = [*filter(None, [surge_family(), unsealed_family()]), *mail_families()]
    if computed:
        extra = CollectorRegistry()
        for family in computed:
            extra.register(_Family(family))
        body += generate_latest(extra)
    response = Response(body, content_type=CONTENT_TYPE_LATEST)  # (mimetype= adds a charset)
    response.headers["Cache-Control"] = "no-store"
    return response


def init_app(app: Flask) -> None:
    app.extensions["undersign.metrics"] = Metrics()
    app.before_request(_start_timer)
    app.after_request(_observe)
    app.register_blueprint(bp)
