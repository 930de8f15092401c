"""Absolute links the service hands out, based on ``WIDGET_PUBLIC_URL`` or the request."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, request


def request_origin() -> str:
    """The scheme and host of this request, the host as the request names it (an
    internationalised one in Punycode, as browsers send it in ``Origin``; Werkzeug's
    ``host_url`` would turn it into Unicode)."""
    return f"{request.scheme}://{request.host}"


def base_url() -> str:
    """``WIDGET_PUBLIC_URL``, or this request's origin."""
    public: str = current_app.config["PUBLIC_URL"]
    return public or request_origin()


def absolute(path: str) -> str:
    return base_url() + path


def statement_url(statement_id: str) -> str:
    return absolute(f"/s/{statement_id}")


def normalize_origin(value: str) -> str | None:
    """``"https://Ally.example/page"`` -> ``"https://ally.example"``; None if not http(s)."""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc.lower()}"


def public_origin(public_url: str) -> str:
    """``https://sign.example.org/base`` -> ``https://sign.example.org`` ("" when unset)."""
    if not public_url:
        return ""
    parts = urlsplit(public_url)
    return f"{parts.scheme}://{parts.netloc}".lower()
