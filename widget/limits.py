"""Who may call and how often: the origin allowlist, CORS and rate limits.

One ``Allowlist`` built from ``WIDGET_ALLOWED_ORIGINS`` serves both CORS for the public
API and ``frame-ancestors`` for the widget iframe (per request: only the ally asking). A
browser request to ``/api/`` whose ``Origin`` is neither allowlisted nor the service's
own is refused with 403 before any view runs. Endorsements are rate limited per client
with flask-limiter on the same Redis; the limiter key is a keyed hash of the client
address (as ``proxies`` found it), never the address itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, current_app, request
from flask_cors import CORS
from flask_limiter import Limiter

from .db import limiter_storage_uri
from .errors import Problem
from .links import public_origin
from .privacy import client_hash

PUBLIC_API = r"/api/v1/statements*"


class Allowlist:
    """Allied origins; ``*`` admits any."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = tuple(origins)
        self.any = "*" in self.origins

    def allows(self, origin: str | None) -> bool:
        if not origin:
            return False
        return self.any or origin.lower().rstrip("/") in self.origins

    def frame_ancestors(self, origin: str | None) -> str:
        """``'self'`` and the one allied origin asking (never the whole list: it would
        tell anyone who every ally is); ``*`` when any origin is allowed."""
        if self.any:
            return "*"
        wanted = (origin or "").lower().rstrip("/")
        return " ".join(["'self'", *(o for o in self.origins if o == wanted)])

    def cors_origins(self) -> list[str] | str:
        return "*" if self.any else list(self.origins)


def get_allowlist() -> Allowlist:
    allowlist: Allowlist = current_app.extensions["undersign.allowlist"]
    return allowlist


def own_origins() -> set[str]:
    """The service's own origin as this request sees it, and as WIDGET_PUBLIC_URL says."""
    origins = {request.host_url.rstrip("/").lower()}
    public = public_origin(current_app.config["PUBLIC_URL"])
    if public:
        origins.add(public)
    return origins


def is_own_origin(origin: str | None) -> bool:
    return bool(origin) and str(origin).lower().rstrip("/") in own_origins()


def check_origin() -> None:
    """403 for a browser call from a page that is neither allied nor ours."""
    if not request.path.startswith("/api/"):
        return
    origin = request.headers.get("Origin")
    if origin is None:
        return
    # An allied origin passes without working out our own (the request's host URL).
    if not request.path.startswith("/api/v1/admin") and get_allowlist().allows(origin):
        return
    if not is_own_origin(origin):
        raise Problem(
            403,
            "origin-not-allowed",
            "Origin not allowed",
            f"{origin} is not an allied site of this service. The operator can add it "
            "to WIDGET_ALLOWED_ORIGINS.",
        )


def client_key() -> str:
    return client_hash(current_app.config["SECRET_KEY"], request.remote_addr or "unknown")


def endorse_limit() -> str:
    limit: str = current_app.config["ENDORSE_LIMIT"]
    return limit


class EndorseLimiter(Limiter):
    """flask-limiter, without its before-request pass when that pass has nothing to check.

    Flask-Limiter checks every request before its view for application-wide, default,
    blueprint and meta limits. This service declares none of those: its one limit is the
    shared endorsement limit, which the decorated views check themselves. The empty pass
    still cost each read (count, statement, event stream) about a quarter of its time
    in-process, so it is skipped while no such limit exists.
    """

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if in_middleware and not self._has_request_wide_limits():
            return
        super()._check_request_limit(callable_name, in_middleware)

    def _has_request_wide_limits(self) -> bool:
        # These are flask-limiter internals: should a release rename them, fall back to
        # running its pass (correct, only slower) rather than fail every request.
        try:
            manager = self.limit_manager
            return bool(
                manager._application_limits
                or manager._default_limits
                or manager._blueprint_limits
                or self._meta_limits
            )
        except AttributeError:
            return True


def init_app(app: Flask, rate_limited_endpoints: Iterable[str]) -> None:
    """Wire the allowlist, CORS and the limiter; call after blueprints exist."""
    allowlist = Allowlist(app.config["ALLOWED_ORIGINS"])
    app.extensions["undersign.allowlist"] = allowlist
    app.before_request(check_origin)
    CORS(
        app,
        resources={PUBLIC_API: {"origins": allowlist.cors_origins()}},
        methods=["GET", "POST", "OPTIONS"],
        allow_headers=["Content-Type", "If-None-Match", "Last-Event-ID"],
        expose_headers=["ETag", "Retry-After", "Location"],
        max_age=600,
        supports_credentials=False,
    )

    app.config.setdefault(
        "RATELIMIT_STORAGE_URI",
        limiter_storage_uri(app.config["REDIS_URL"], app.config["REDIS_CLUSTER"]),
    )
    app.config.setdefault("RATELIMIT_STRATEGY", "moving-window")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "us-limits")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)  # errors.py sets Retry-After
    limiter = EndorseLimiter(key_func=client_key)
    limiter.init_app(app)
    app.extensions["undersign.limiter"] = limiter
    shared = limiter.shared_limit(endorse_limit, scope="endorse", methods=["POST"])
    for endpoint in rate_limited_endpoints:
        app.view_functions[endpoint] = shared(app.view_functions[endpoint])  # type: ignore[assignment]
