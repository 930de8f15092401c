"""Every error the service answers, as RFC 9457 ``application/problem+json``.

Views raise ``Problem`` (or any Werkzeug ``HTTPException``); Redis failures become 503,
rate limits 429 with ``Retry-After``. Pages meant for people (``/s/``, ``/embed/``,
``/admin``) get a small escaped HTML page instead, unless the client asks for JSON;
assets (``/static/``, ``/embed.js``) get problem+json like the API.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from flask import Flask, Response, current_app, json, render_template_string, request
from flask_limiter import RateLimitExceeded
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException, SecurityError

from .store import NotDurable

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:undersign:problem:"
log = logging.getLogger(__name__)

_HTML = """<!doctype html><html lang="en"><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{{ title }}</title>
<link rel="stylesheet" href="{{ url_for('embed.static', filename='page.css') }}">
<main class="page"><h1>{{ title }}</h1><p>{{ detail }}</p></main></html>"""


class Problem(HTTPException):
    """An HTTP error with a problem type, a human detail and optional extension members."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(description=detail)
        self.code = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extra_headers = headers or {}
        self.extensions = extensions

    @classmethod
    def invalid(cls, slug: str, title: str, errors: dict[str, str]) -> Problem:
        """A 422 naming every field that needs attention, with a message for each."""
        detail = "Some fields need attention: " + ", ".join(sorted(errors)) + "."
        return cls(422, slug, title, detail, errors=errors)


def wants_json() -> bool:
    if request.path.startswith(("/api/", "/healthz", "/metrics", "/static/", "/embed.js")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json", PROBLEM_JSON])
    return best in ("application/json", PROBLEM_JSON)


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    *,
    force_json: bool = False,
    **extensions: Any,
) -> Response:
    if not (force_json or wants_json()):
        html = render_template_string(_HTML, title=title, detail=detail)
        response = Response(html, status=status, mimetype="text/html")
    else:
        body = {
            "type": TYPE_PREFIX + slug,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": request.path,
            **extensions,
        }
        response = Response(json.dumps(body), status=status, mimetype=PROBLEM_JSON)
    response.headers["Cache-Control"] = "no-store"
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _slug(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "-").replace("'", "")


def handle_http_exception(exc: HTTPException) -> Response:
    if isinstance(exc, SecurityError):
        # Werkzeug raises it for a Host outside TRUSTED_HOSTS. Not a page for people, and
        # the HTML page would build URLs from that very host.
        return problem_response(
            400,
            "unknown-host",
            "Unknown host",
            "This service does not answer to that Host. The operator lists its host names "
            "in WIDGET_PUBLIC_URL and WIDGET_ALLOWED_HOSTS.",
            force_json=True,
        )
    if isinstance(exc, Problem):
        return problem_response(
            exc.code or 500, exc.slug, exc.title, exc.detail, exc.extra_headers, **exc.extensions
        )
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k.lower() in {"allow", "retry-after"}}
    return problem_response(
        status, _slug(exc), exc.name, exc.description or exc.name, headers=headers
    )


# What each of flask-limiter's limits counts, by its scope (see ``limits.init_app``); each
# is counted per client: an IPv4 address or an IPv6 /64.
LIMITED = {
    "challenge": "proof-of-work challenges",
    "form": "endorsements through the form",
    "withdraw": "withdrawal attempts",
}


def handle_rate_limit(exc: RateLimitExceeded) -> Response:
    """A flask-limiter limit refused the request: 429, naming the limit in ``limit`` as an
    endorsement's tiers do."""
    retry_after = 60
    limiter = current_app.extensions.get("undersign.limiter")
    current = getattr(limiter, "current_limit", None) if limiter else None
    if current is not None:
        retry_after = max(1, math.ceil(current.reset_at - time.time()))
    scope = str(getattr(exc.limit, "scope", "") or "")
    what = LIMITED.get(scope, "requests")
    named: dict[str, Any] = {"limit": scope} if scope in LIMITED else {}
    return problem_response(
        429,
        "rate-limited",
        "Too many requests",
        f"Too many {what} from your address ({exc.description}). "
        f"Try again in {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
        retry_after=retry_after,
        **named,
    )


def handle_redis_error(exc: RedisError | RedisClusterException) -> Response:
    log.warning("redis unavailable: %s", type(exc).__name__)
    metrics = current_app.extensions.get("undersign.metrics")
    if metrics is not None:
        metrics.redis_errors.inc()
    return problem_response(
        503,
        "store-unavailable",
        "Service temporarily unavailable",
        "The endorsement store is not answering. Nothing was recorded; please try again shortly.",
        headers={"Retry-After": "5"},
    )


def handle_not_durable(exc: NotDurable) -> Response:
    """A write that Redis made but too few replicas confirmed in time
    (``WIDGET_REDIS_WAIT_REPLICAS``): not acknowledged, so that nothing acknowledged can
    be lost in a failover. Sending it again is safe."""
    log.warning("redis: not confirmed durable (%s)", exc)
    metrics = current_app.extensions.get("undersign.metrics")
    if metrics is not None:
        metrics.redis_errors.inc()
    return problem_response(
        503,
        "not-durable",
        "Not confirmed durable",
        "The store took this but could not yet confirm it is safely copied. Please send it "
        "again: if it was kept you will be told it is already counted; it is never counted "
        "twice.",
        headers={"Retry-After": "1"},
    )


def init_app(app: Flask) -> None:
    app.register_error_handler(RateLimitExceeded, handle_rate_limit)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(RedisConnectionError, handle_redis_error)
    app.register_error_handler(RedisTimeoutError, handle_redis_error)
    app.register_error_handler(RedisError, handle_redis_error)
    # A cluster client's own failures (no node serves a slot, during a failover).
    app.register_error_handler(RedisClusterException, handle_redis_error)
    app.register_error_handler(NotDurable, handle_not_durable)
