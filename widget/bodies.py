"""Request bodies: the 16 KiB cap on every body, chunked or not, and a JSON nesting cap.

Werkzeug enforces ``MAX_CONTENT_LENGTH`` on a body with a ``Content-Length`` before
reading it. A chunked body has none: Werkzeug then reads up to the limit and stops
without saying whether more was coming, so a larger body was silently cut to 16 KiB (and
could still parse). ``BoundedRequest`` reads such a body through ``CappedStream``, which
lets one byte past the limit through only to raise 413 at once, without reading on.

``DepthCheckedJSON`` refuses JSON nested deeper than ``MAX_JSON_DEPTH`` before parsing it (and
catches the parser's own recursion limit), so a deep body is a 400, not a 500, and so is
``NaN`` or ``Infinity``, which Python's parser would otherwise take: for the API's bodies
(``loads_json``) and for ``request.get_json`` alike.
"""

from __future__ import annotations

import json
import re
from typing import IO, Any, cast

from flask import Flask, Request
from flask import json as flask_json
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.utils import cached_property
from werkzeug.wsgi import LimitedStream

from .errors import Problem

MAX_JSON_DEPTH = 32
# Strings may hold brackets; they are skipped when measuring nesting.
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class CappedStream(LimitedStream):
    """A streamed body that may be at most ``cap`` bytes: one byte more is a 413."""

    def __init__(self, stream: IO[bytes], cap: int) -> None:
        super().__init__(stream, cap + 1, is_max=True)
        self.cap = cap

    def readinto(self, b: bytearray) -> int | None:  # type: ignore[override]
        size = super().readinto(b)
        if self.tell() > self.cap:
            raise RequestEntityTooLarge()
        return size


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (strings skipped), as a scan."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # cannot be too deep: skip the scan for ordinary bodies
    depth = deepest = 0
    for match in _JSON_TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    """Python's parser takes ``NaN``, ``Infinity`` and ``-Infinity``; JSON has none of them."""
    raise ValueError(f"{name} is not a JSON value")


def loads_json(raw: bytes) -> Any:
    """Parse a request body; ``Problem`` 400 when it is not JSON or nests too deep."""
    try:
        return DepthCheckedJSON(json).loads(raw)
    except ValueError as exc:
        raise Problem(
            400, "malformed-json", "Malformed JSON", f"The body is not JSON: {exc}"
        ) from exc


class DepthCheckedJSON:
    """Wraps the app's JSON provider for ``request.get_json``: deep nesting is bad JSON."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def loads(self, data: str | bytes, **kwargs: Any) -> Any:
        raw = data.encode() if isinstance(data, str) else data
        if json_depth(raw) > MAX_JSON_DEPTH:
            raise ValueError(f"arrays or objects nest more than {MAX_JSON_DEPTH} deep")
        kwargs.setdefault("parse_constant", _no_constant)
        try:
            return self.inner.loads(data, **kwargs)
        except RecursionError:
            raise ValueError(f"arrays or objects nest more than {MAX_JSON_DEPTH} deep") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class BoundedRequest(Request):
    """Flask's request, with the size cap enforced on chunked bodies too, and
    ``get_json`` refusing deeply nested JSON (400) instead of recursing into a 500."""

    _json_provider: Any = flask_json

    @property
    def json_module(self) -> Any:
        return DepthCheckedJSON(self._json_provider)

    @json_module.setter
    def json_module(self, value: Any) -> None:
        self._json_provider = value  # Flask hands each request the app's provider

    @cached_property
    def stream(self) -> IO[bytes]:
        cap = self.max_content_length
        streamed = self.content_length is None and "wsgi.input_terminated" in self.environ
        if cap is None or not streamed or self.shallow:
            return super().stream
        return cast(IO[bytes], CappedStream(self.environ["wsgi.input"], cap))


def init_app(app: Flask) -> None:
    app.request_class = BoundedRequest
