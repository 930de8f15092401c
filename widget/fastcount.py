"""A WSGI fast path for the hottest read, ``GET /api/v1/statements/<id>/count``.

Every open widget polls or reads this URL, and through Flask each answer passes the
session, origin check, CORS, limiter and metrics hooks, which cost more than the answer
itself. ``CountFastPath`` answers the common case before Flask with the very same bytes:

* It answers only what it has seen Flask answer: the headers of a 200 for a given
  ``Origin`` (none, an allied one, the service's own) are learned from a real Flask
  response, then replayed with the new count, body and ETag. Anything else (another
  method, an unknown id, a new origin, a query it cannot judge, an ``If-None-Match``
  other than the current ETag) goes to Flask, which stays the one source of truth.
* The count comes from the live hub's memory only while it is fresh (see
  ``live.Hub.fresh_count``); otherwise Flask reads Redis, with its usual 503 on outage.
* The request still lands in the latency histogram under the Flask endpoint's name.

``tests/test_fastcount.py`` checks that both paths give identical answers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .metrics import LATENCY

if TYPE_CHECKING:
    from .live import Hub

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

PREFIX = "/api/v1/statements/"
SUFFIX = "/count"
ENDPOINT = "api.show_count"
# Replayed as learned; the rest depend on the count or the status.
REGENERATED = {"content-length", "etag"}
MAX_LEARNED = 32  # Origin and Host come from clients: keep what is learned bounded


class CountFastPath:
    """WSGI middleware: count reads from memory, with headers learned from Flask."""

    def __init__(self, wsgi_app: WSGIApp, hub: Hub, statement_ids: Iterable[str]) -> None:
        self.wsgi_app = wsgi_app
        self.hub = hub
        self.statement_ids = frozenset(statement_ids)
        # What Flask's answer depends on (see _key) -> headers of its 200, less the
        # regenerated ones.
        self.learned: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
        self.answered = 0  # requests answered here, for tests and curiosity

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        statement_id = self._statement_id(environ)
        if statement_id is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        key = self._key(environ)
        headers = self.learned.get(key)
        count = self.hub.fresh_count(statement_id) if headers is not None else None
        if headers is None or count is None:
            return self.wsgi_app(environ, self._learner(key, start_response))
        etag = f'"c{count}"'
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None and if_none_match != etag:
            return self.wsgi_app(environ, start_response)  # lists, weak tags, *: Flask
        if if_none_match == etag:
            status, body = "304 NOT MODIFIED", b""
            out = [(k, v) for k, v in headers if k.lower() != "content-type"]
        else:
            status = "200 OK"
            body = b'{"id":"%s","count":%d}\n' % (statement_id.encode(), count)
            out = [*headers, ("Content-Length", str(len(body)))]
        out.append(("ETag", etag))
        start_response(status, out)
        self.answered += 1
        LATENCY.labels(ENDPOINT, "GET").observe(time.perf_counter() - started)
        return [body]

    def _statement_id(self, environ: dict[str, Any]) -> str | None:
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING"):
            return None
        path: str = environ.get("PATH_INFO", "")
        if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
            return None
        statement_id = path[len(PREFIX) : -len(SUFFIX)]
        return statement_id if statement_id in self.statement_ids else None

    @staticmethod
    def _key(environ: dict[str, Any]) -> tuple[Any, ...]:
        """Everything Flask's count answer depends on besides the count: the Origin (CORS,
        the 403 check) and what decides the service's own origin (scheme and host, also
        as forwarded by trusted proxies)."""
        return (
            environ.get("HTTP_ORIGIN"),
            environ.get("wsgi.url_scheme"),
            environ.get("HTTP_HOST"),
            environ.get("HTTP_X_FORWARDED_HOST"),
            environ.get("HTTP_X_FORWARDED_PROTO"),
            environ.get("HTTP_X_FORWARDED_PORT"),
            environ.get("HTTP_X_FORWARDED_PREFIX"),
        )

    def _learner(
        self, key: tuple[Any, ...], start_response: Callable[..., Any]
    ) -> Callable[..., Any]:
        def learn(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            if status.startswith("200 ") and len(self.learned) < MAX_LEARNED:
                kept = [(k, v) for k, v in headers if k.lower() not in REGENERATED]
                if all(k.lower() != "set-cookie" for k, _ in kept):
                    self.learned[key] = kept
            return start_response(status, headers, *args)

        return learn
