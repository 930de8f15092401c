"""Who may call and how often: the origin allowlist, CORS, rate limits, and the proof of
work.

One ``Allowlist`` built from ``WIDGET_ALLOWED_ORIGINS`` serves both CORS for the public
API and ``frame-ancestors`` for the widget iframe (per request: only the ally asking). A
browser request to ``/api/`` whose ``Origin`` is neither allowlisted nor the service's
own is refused with 403 before any view runs.

Endorsements through the API are limited by four tiers that the store checks in the same
atomic step as the endorsement (``abuse.tiers``); flask-limiter, on the same Redis with
sliding-window counters, limits everything else: the no-JavaScript form, proof-of-work
challenges, withdrawals. Every limiter key is a hash of the client's address (as
``proxies`` found it; an IPv6 client by its /64) under the day's random salt
(``privacy.DailySalt``), never the address itself. Failed admin authentications are
braked per client and overall on the same storage (``AuthBrake``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from flask import Flask, current_app, request
from flask_cors import CORS
from flask_limiter import Limiter
from limits import RateLimitItem, parse_many

from .abuse import CLIENT_PREFIXES, BlockCache, TierLimits, network_of, windows
from .db import limiter_storage_uri
from .errors import Problem
from .links import public_origin, request_origin
from .pow import ProofOfWork
from .privacy import DailySalt, derive_key

PUBLIC_API = r"/api/v1/(?:statements|events)\b"  # CORS for allied sites


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
    origins = {request_origin().lower()}
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
    """The limiter's key for this request's client: today's hash of its address or /64."""
    salt: DailySalt = current_app.extensions["undersign.salt"]
    return salt.hash(network_of(request.remote_addr or "unknown", CLIENT_PREFIXES))


def form_limit() -> str:
    limit: str = current_app.config["FORM_LIMIT"]
    return limit


def challenge_limit() -> str:
    limit: str = current_app.config["CHALLENGE_LIMIT"]
    return limit


def withdraw_limit() -> str:
    limit: str = current_app.config["WITHDRAW_LIMIT"]
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


class AuthBrake:
    """The brake on guessing the admin token: failed attempts per client and overall.

    Only failures are counted, so a right token is never throttled by its own use:

    1. Before a credential is compared, both limits are tested. A client over either gets
       429 whether its token is right or wrong, so throttled guesses tell it nothing.
    2. A wrong credential is then hit on both limits (an atomic add in Redis), so
       concurrent guesses cannot slip past: at most the limit's worth of wrong answers
       per window, whatever the concurrency.

    flask-limiter's decorators are not used: they count every request, and run before the
    credentials are known. ``deduct_when`` could count only failures, but on the admin
    blueprints it would switch the limiter's before-request pass back on for every route
    of the app (see ``EndorseLimiter``). The counts live in the limiter's storage, under
    its key prefix; keys carry ``client_key()``, never an address.
    """

    def __init__(self, limiter: Limiter, prefix: str, per_client: str, overall: str) -> None:
        self.limiter = limiter
        self.prefix = prefix
        self.per_client = parse_many(per_client)
        self.overall = parse_many(overall)

    def _limits(self, client: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        mine = (self.prefix, "admin-auth", client)
        everyone = (self.prefix, "admin-auth-all")
        return [(item, mine) for item in self.per_client] + [
            (item, everyone) for item in self.overall
        ]

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        strategy = self.limiter.limiter
        for item, identifiers in self._limits(client):
            if not strategy.test(item, *identifiers):
                reset = strategy.get_window_stats(item, *identifiers).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def failed(self, client: str) -> None:
        strategy = self.limiter.limiter
        for item, identifiers in self._limits(client):
            strategy.hit(item, *identifiers)


def get_auth_brake() -> AuthBrake:
    brake: AuthBrake = current_app.extensions["undersign.admin_brake"]
    return brake


def init_app(app: Flask) -> None:
    """Wire proxies, the allowlist, CORS, the limits and the proof of work; call after the
    blueprints exist."""
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
    # Counters, not lists of request times (which would date each endorsement).
    app.config.setdefault("RATELIMIT_STRATEGY", "sliding-window-counter")
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "us-limits")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)  # errors.py sets Retry-After
    store = app.extensions["undersign.store"]
    app.extensions["undersign.salt"] = DailySalt(store.daily_salt)
    app.extensions["undersign.tier_limits"] = TierLimits(
        client=windows(app.config["ENDORSE_LIMIT"]),
        network=windows(app.config["NETWORK_LIMIT"]),
        source=windows(app.config["SOURCE_LIMIT"]),
        statement=windows(app.config["STATEMENT_LIMIT"]),
    )
    app.extensions["undersign.pow"] = ProofOfWork(app.config["SECRET_KEY"], app.config["POW_COST"])
    app.extensions["undersign.blocks"] = BlockCache(
        store.blocks, derive_key(app.config["SECRET_KEY"], "blocks")
    )

    limiter = EndorseLimiter(key_func=client_key)
    limiter.init_app(app)
    app.extensions["undersign.limiter"] = limiter
    app.extensions["undersign.admin_brake"] = AuthBrake(
        limiter,
        app.config["RATELIMIT_KEY_PREFIX"],
        app.config["ADMIN_AUTH_LIMIT"],
        app.config["ADMIN_AUTH_GLOBAL_LIMIT"],
    )
    for endpoint, limit, scope in (
        ("embed.endorse_form", form_limit, "form"),
        ("api.challenge", challenge_limit, "challenge"),
        ("transparency.withdraw", withdraw_limit, "withdraw"),
    ):
        limited = limiter.shared_limit(limit, scope=scope, methods=["GET", "POST"])
        app.view_functions[endpoint] = limited(app.view_functions[endpoint])  # type: ignore[assignment]
