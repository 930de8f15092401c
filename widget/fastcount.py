"""A WSGI fast path for the hottest read, ``GET /api/v1/statements/<id>/count``.

Every open widget polls or reads this URL, and through Flask each answer passes the
session, origin check, CORS, limiter and metrics hooks, which cost more than the answer
itself. ``CountFastPath`` answers the common case before Flask with the very same bytes:

* It answers only what it has seen Flask answer: the headers of a 200 for a given
  ``Origin`` (none, an allied one, the service's own as the checked host makes it) are
  learned from a real Flask response, then replayed with the new count, body and ETag.
  Anything else (another method, an unknown id, a foreign origin, a query, an
  ``If-None-Match`` other than the current ETag, a ``Host`` outside ``TRUSTED_HOSTS``)
  goes to Flask, which stays the one source of truth.
* What is learned is keyed only by what legitimately changes the answer (the Origin,
  which is allowlisted or the service's own), kept in a small LRU table that clients
  cannot fill for good, and never learned from or replayed to a request carrying a
  header that would change Flask's answer (CORS request headers, cookies, credentials,
  other conditionals): from a learned answer, only the expected headers are kept.
* The count comes from the live hub's memory only while it is fresh (see
  ``live.Hub.fresh_count``); otherwise Flask reads Redis, with its usual 503 on outage.
* The request still lands in the latency histogram under the Flask endpoint's name.

``tests/test_fastcount.py`` checks that both paths give identical answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import SecurityError
from werkzeug.wsgi import get_host

from .metrics import LATENCY

if TYPE_CHECKING:
    from .limits import Allowlist
    from .live import Hub

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

PREFIX = "/api/v1/statements/"
SUFFIX = "/count"
ENDPOINT = "api.show_count"
# Replayed as learned; the rest depend on the count or the status.
REGENERATED = {"content-length", "etag"}
# The only headers a learned answer may carry: anything else (a cookie, a private-network
# grant echoed for one client) would be replayed to everyone.
LEARNABLE = {
    "content-type",
    "cache-control",
    "vary",
    "access-control-allow-origin",
    "access-control-expose-headers",
}
# Request headers that change Flask's answer beyond what the key holds.
ALTERING = ("HTTP_ACCESS_CONTROL_", "HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_IF_", "HTTP_RANGE")
MAX_LEARNED = 64  # least recently used answers go first: clients cannot pin the table


Key = tuple[str, str]


class CountFastPath:
    """WSGI middleware: count reads from memory, with headers learned from Flask."""

    def __init__(
        self,
        wsgi_app: WSGIApp,
        hub: Hub,
        statement_ids: Iterable[str],
        allowlist: Allowlist,
        public_origin: str = "",
        trusted_hosts: list[str] | None = None,
    ) -> None:
        self.wsgi_app = wsgi_app
        self.hub = hub
        self.statement_ids = frozenset(statement_ids)
        self.allowlist = allowlist
        self.public_origin = public_origin.lower()
        self.trusted_hosts = trusted_hosts or None
        # What Flask's answer depends on (see _key) -> headers of its 200, less the
        # regenerated ones; most recently used last.
        self.learned: OrderedDict[Key, list[tuple[str, str]]] = OrderedDict()
        self.answered = 0  # requests answered here, for tests and curiosity

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        statement_id = self._statement_id(environ)
        if statement_id is None:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        key = self._key(environ)
        if key is None:
            return self.wsgi_app(environ, start_response)
        headers = self.learned.get(key)
        count = self.hub.fresh_count(statement_id) if headers is not None else None
        if headers is None or count is None:
            return self.wsgi_app(environ, self._learner(key, start_response))
        etag = f'"c{count}"'
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match is not None and if_none_match != etag:
            return self.wsgi_app(environ, start_response)  # lists, weak tags, *: Flask
        self.learned.move_to_end(key)
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

    def _key(self, environ: dict[str, Any]) -> Key | None:
        """What Flask's count answer depends on besides the count, or None when this
        request is Flask's to answer: the Origin, when it is absent, allied or the
        service's own (CORS and the 403 check depend on it). The host only decides
        which origin is our own, and whether Flask refuses it (``TRUSTED_HOSTS``)."""
        for name in environ:
            if name.startswith(ALTERING) and name != "HTTP_IF_NONE_MATCH":
                return None
        try:
            host = get_host(environ, self.trusted_hosts)
        except SecurityError:
            return None
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return ("none", "")
        if self.allowlist.allows(origin):
            return ("ally", origin)
        normalized = origin.lower().rstrip("/")
        own = f"{environ.get('wsgi.url_scheme', 'http')}://{host}".lower()
        if normalized in (own, self.public_origin):
            return ("own", origin)
        return None

    def _learner(self, key: Key, start_response: Callable[..., Any]) -> Callable[..., Any]:
        def learn(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            kept = [(k, v) for k, v in headers if k.lower() not in REGENERATED]
            if status.startswith("200 ") and self._learnable(key, kept):
                self.learned[key] = kept
                self.learned.move_to_end(key)
                while len(self.learned) > MAX_LEARNED:
                    self.learned.popitem(last=False)
            return start_response(status, headers, *args)

        return learn

    @staticmethod
    def _learnable(key: Key, headers: list[tuple[str, str]]) -> bool:
        for name, value in headers:
            lowered = name.lower()
            if lowered not in LEARNABLE:
                return False
            # Without an Origin, flask-cors names the configured allies: nothing of the
            # client's. With one, only that origin (or *) may be echoed.
            echoed = lowered == "access-control-allow-origin" and key[0] != "none"
            if echoed and value not in ("*", key[1]):
                return False
        return True
