"""The operator's credential: the admin token, as the console, the admin API and ``/metrics``
check it, with a brake on guessing it.

``Authorization: Bearer <token>`` is read with the scheme in any case (RFC 9110 section
11.1) and the token is compared in constant time. With no ``WIDGET_ADMIN_TOKEN`` nothing
matches. Every attempt first asks the brake (``limits.AuthBrake``): a client over
``WIDGET_ADMIN_AUTH_LIMIT``, or everyone over ``WIDGET_ADMIN_AUTH_GLOBAL_LIMIT``, gets 429
with ``Retry-After``. Each failure is counted and logged on ``widget.admin`` as one
WARNING line that names neither the client's address nor the token tried.
"""

from __future__ import annotations

import hmac
import logging

from flask import current_app, request
from limits.errors import StorageError
from redis.exceptions import RedisError

from .errors import Problem
from .limits import client_key, get_auth_brake

log = logging.getLogger("widget.admin")


class TooManyFailures(Problem):
    """429: too many failed admin authentications from this client or from everyone."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            429,
            "rate-limited",
            "Too many requests",
            f"Too many failed admin sign-ins or token checks. Try again in {retry_after} seconds.",
            headers={"Retry-After": str(retry_after)},
            retry_after=retry_after,
        )
        self.retry_after = retry_after


def admin_token() -> str:
    return str(current_app.config.get("ADMIN_TOKEN") or "")


def token_matches(given: str) -> bool:
    expected = admin_token()
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_credentials() -> str | None:
    """The token of this request's ``Authorization: Bearer`` header; None without one.

    Other schemes (Basic auth added by a proxy in front of the console) are no guess at
    the admin token, so they read as no credentials.
    """
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip()


def check_brake(attempt: str) -> None:
    """Before comparing a credential: raise 429 while this client or everyone is over."""
    retry_after = get_auth_brake().retry_after(client_key())
    if retry_after is not None:
        log.warning("%s refused (too many failures, retry in %d s)", attempt, retry_after)
        raise TooManyFailures(retry_after)


def record_failure(attempt: str, reason: str) -> None:
    get_auth_brake().failed(client_key())
    log.warning("%s failed (%s)", attempt, reason)


def bearer_authenticates(attempt: str, *, without_redis: bool = False) -> bool | None:
    """None without a Bearer header; else True for the admin token, False after a counted
    failure; 429 while braked.

    The brake lives in Redis, so a Redis outage is a 503 like everywhere else, unless
    ``without_redis``: ``/metrics`` must stay readable to show the outage, so there the
    token is still checked (unbraked, every failure still logged) while Redis is away.
    """
    given = bearer_credentials()
    if given is None:
        return None
    reason = "bad token" if admin_token() else "no admin token configured"
    try:
        check_brake(attempt)
        if token_matches(given):
            return True
        record_failure(attempt, reason)
    except (RedisError, StorageError) as exc:
        if not without_redis:
            raise
        log.warning("%s unbraked: Redis unavailable (%s)", attempt, type(exc).__name__)
        if token_matches(given):
            return True
        log.warning("%s failed (%s)", attempt, reason)
    return False
