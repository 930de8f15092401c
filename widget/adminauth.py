"""The operator's credential: the admin token, as the console, the admin API and ``/metrics``
check it.

``Authorization: Bearer <token>`` is read with the scheme in any case (RFC 9110 section
11.1) and the token is compared in constant time. With no ``WIDGET_ADMIN_TOKEN`` nothing
matches.
"""

from __future__ import annotations

import hmac

from flask import current_app, request


def admin_token() -> str:
    return str(current_app.config.get("ADMIN_TOKEN") or "")


def token_matches(given: str) -> bool:
    expected = admin_token()
    if not expected or not given:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_credentials() -> str | None:
    """The token of this request's ``Authorization: Bearer`` header; None without one."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return ""
    return value.strip()


def bearer_ok() -> bool:
    return token_matches(bearer_credentials() or "")
