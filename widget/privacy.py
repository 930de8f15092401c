"""Turning personal data into what may be kept: keyed hashes of emails and client addresses.

Email HMACs use a key derived from ``WIDGET_SECRET_KEY`` (each purpose its own) and bind
the statement id, so the same person endorsing two statements cannot be linked through
the store alone. Client addresses (for rate limits and stream caps) are hashed with a
random salt of the UTC day instead (``DailySalt``): it lives only in Redis, and only until
the day ends, so once it is gone nobody, the operator included, can recompute yesterday's
hashes from a list of addresses. Nothing derives it from the secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable


def derive_key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), f"undersign/{purpose}/v1".encode(), hashlib.sha256).digest()


def normalize_email(email: str) -> str:
    """Trim and lowercase: ``" Ana@Example.ORG "`` and ``"ana@example.org"`` are one person."""
    return email.strip().lower()


def email_hmac(secret: str, statement_id: str, email: str) -> str:
    message = f"{statement_id}\0{normalize_email(email)}".encode()
    return hmac.new(derive_key(secret, "email"), message, hashlib.sha256).hexdigest()


DAY = 86400
SALT_GRACE = 300  # seconds a day's salt outlives midnight, for requests in flight


class DailySalt:
    """Keyed hashes of client addresses under the salt of the current UTC day.

    ``fetch(day, salt, expires_at)`` stores ``salt`` as the day's salt unless the day has
    one already, and returns the day's salt (the store does that atomically, so every
    process and instance agrees). The salt is kept here as a cache and checked again
    every ``RECHECK`` seconds; should Redis have lost it meanwhile, the check puts this
    process's copy back instead of making a new one.
    """

    RECHECK = 60.0

    def __init__(self, fetch: Callable[[str, str, int], str]) -> None:
        self._fetch = fetch
        self._day = ""
        self._salt = ""
        self._key = b""
        self._checked = 0.0
        self._lock = threading.Lock()

    def key(self, now: float | None = None) -> bytes:
        now = time.time() if now is None else now
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        if day != self._day or time.monotonic() - self._checked > self.RECHECK:
            with self._lock:
                if day != self._day or time.monotonic() - self._checked > self.RECHECK:
                    mine = self._salt if day == self._day else secrets.token_hex(32)
                    ends = int(now // DAY + 1) * DAY
                    salt = self._fetch(day, mine, ends + SALT_GRACE)
                    self._key = hashlib.sha256(salt.encode()).digest()
                    self._day, self._salt, self._checked = day, salt, time.monotonic()
        return self._key

    def hash(self, subject: str, now: float | None = None) -> str:
        """A short hash of ``subject`` (an address or a network) for today only."""
        digest = hmac.new(self.key(now), subject.encode(), hashlib.sha256)
        return digest.hexdigest()[:32]
