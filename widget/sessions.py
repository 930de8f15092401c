"""Operator console sessions, kept in Redis; the browser holds only a random id.

This module never imports Flask (``admin.py`` holds the cookie and request glue), and it
is the only one that knows these keys::

    us:admin:session:<sha256(id)>    string  JSON {csrf, binding, created, expires};
                                             the key expires at ``expires`` (never moved)
    us:admin:login:<sha256(nonce)>   string  a sign-in form already used, kept as long as
                                             the form could still be submitted

A session has an absolute lifetime: reading it never extends it. It is bound to a keyed
hash of the admin token it was opened with (``token_binding``), so a new
``WIDGET_ADMIN_TOKEN`` ends every session at its next use. A Redis dump yields neither a
live cookie (keys are hashes of the ids) nor the token (only its keyed hash).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from .privacy import derive_key
from .store import RedisClient

SESSION_PREFIX = "us:admin:session:"
LOGIN_PREFIX = "us:admin:login:"
MAX_ID_LENGTH = 128  # ids are 43 characters; longer cookies are refused without Redis


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def token_binding(secret: str, admin_token: str) -> str:
    """A keyed hash of the admin token, stored with each session instead of the token."""
    key = derive_key(secret, "admin-session")
    return hmac.new(key, admin_token.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AdminSession:
    """A live console session. ``id`` is the cookie value; Redis holds only its hash."""

    id: str
    csrf: str
    expires: int  # Unix seconds; the session ends then, whatever happens meanwhile


class SessionStore:
    """Create, check, end and revoke console sessions; consume sign-in form nonces."""

    def __init__(self, redis: RedisClient, lifetime: int) -> None:
        self.redis = redis
        self.lifetime = lifetime

    @staticmethod
    def key(session_id: str) -> str:
        return SESSION_PREFIX + _digest(session_id)

    def create(self, binding: str, now: float | None = None) -> AdminSession:
        created = int(time.time() if now is None else now)
        session = AdminSession(
            id=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            expires=created + self.lifetime,
        )
        record = {
            "csrf": session.csrf,
            "binding": binding,
            "created": created,
            "expires": session.expires,
        }
        # One command sets the value and its absolute expiry together.
        self.redis.set(self.key(session.id), json.dumps(record), exat=session.expires)
        return session

    def get(self, session_id: str, binding: str, now: float | None = None) -> AdminSession | None:
        """The live session with this id, or None; a stale or foreign one is deleted."""
        if not session_id or len(session_id) > MAX_ID_LENGTH:
            return None
        key = self.key(session_id)
        raw = self.redis.get(key)
        if raw is None:
            return None
        try:
            record = json.loads(raw)
            expires = int(record["expires"])
            csrf = str(record["csrf"])
            bound = str(record["binding"])
        except (ValueError, KeyError, TypeError):
            self.redis.delete(key)
            return None
        current = time.time() if now is None else now
        if expires <= current or not hmac.compare_digest(bound, binding):
            self.redis.delete(key)
            return None
        return AdminSession(id=session_id, csrf=csrf, expires=expires)

    def delete(self, session_id: str) -> bool:
        if not session_id or len(session_id) > MAX_ID_LENGTH:
            return False
        return bool(self.redis.delete(self.key(session_id)))

    def revoke_all(self) -> int:
        """End every console session; answer how many there were."""
        revoked = 0
        batch: list[str | bytes] = []
        for key in self.redis.scan_iter(match=SESSION_PREFIX + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                revoked += int(self.redis.delete(*batch))
                batch = []
        if batch:
            revoked += int(self.redis.delete(*batch))
        return revoked

    def consume_nonce(self, nonce: str, ttl: int) -> bool:
        """True the first time ``nonce`` is used within ``ttl`` seconds, False after that."""
        if not nonce or len(nonce) > MAX_ID_LENGTH:
            return False
        return bool(self.redis.set(LOGIN_PREFIX + _digest(nonce), b"1", nx=True, ex=ttl))
