"""Proof of work for endorsements: ALTCHA challenges, made and checked with the ``altcha``
package (its v2 key-derivation scheme). Nothing here imports Flask or Redis.

A challenge asks the browser to find the counter whose PBKDF2-SHA-256 key (``cost``
iterations, ALTCHA's own ``cost`` parameter) starts with a given prefix. The service picks
that counter at random in ``ATTEMPTS`` and signs the challenge, including the statement
id and an expiry, with a key derived from ``WIDGET_SECRET_KEY``; it also signs the
expected key, so checking a solution costs two HMACs, not a key derivation. A solution
counts once: its challenge's nonce is marked used by the store, in the same atomic step
as the endorsement.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import altcha

from .privacy import derive_key

ALGORITHM = "PBKDF2/SHA-256"
# The counter a solver must reach, chosen at random in this range: on average 32 key
# derivations, never more than 48, so the wait varies little from one visitor to the next.
ATTEMPTS = range(16, 48)
CHALLENGE_TTL = 600  # seconds: "expires within 10 minutes"
MAX_PAYLOAD = 4096  # characters of base64; a real payload is about 700


class PowError(ValueError):
    """A solution that does not count; the message says why, for ``errors.altcha``."""


@dataclass(frozen=True)
class Solved:
    """A checked solution: the nonce that marks it used, and until when it must stay so."""

    nonce: str
    expires_at: int


class ProofOfWork:
    """Makes and checks challenges for one service (one secret)."""

    def __init__(self, secret: str, cost: int) -> None:
        self.cost = cost
        self._sign_key = derive_key(secret, "altcha")
        self._key_key = derive_key(secret, "altcha-key")

    def challenge(self, statement_id: str, cost: int | None = None) -> dict[str, Any]:
        """A fresh signed challenge for ``statement_id`` as ALTCHA's JSON."""
        made = altcha.create_challenge(
            ALGORITHM,
            cost or self.cost,
            counter=secrets.choice(ATTEMPTS),
            expires_at=int(time.time()) + CHALLENGE_TTL,
            data={"statement": statement_id},
            hmac_secret=self._sign_key,
            hmac_key_secret=self._key_key,
        )
        document: dict[str, Any] = made.to_dict()
        return document

    def verify(self, payload: Any, statement_id: str) -> Solved:
        """Check a base64 payload as ALTCHA's widget submits it; ``PowError`` if it does not
        solve a challenge this service signed for this statement and that is still valid.
        Whether it was used already is the store's to say."""
        if not isinstance(payload, str) or not payload.strip():
            raise PowError("Solve the proof-of-work challenge first (field 'altcha').")
        if len(payload) > MAX_PAYLOAD:
            raise PowError("The proof-of-work solution is malformed.")
        try:  # parsed once, here, then checked by the library
            parsed = altcha.Payload.from_base64(payload.strip())
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            raise PowError("The proof-of-work solution is malformed.") from None
        result = altcha.verify_solution(
            parsed, hmac_secret=self._sign_key, hmac_key_secret=self._key_key
        )
        if result.expired:
            raise PowError("The proof-of-work challenge expired; solve a new one.")
        if result.error is not None:
            raise PowError("The proof-of-work solution is malformed.")
        if result.invalid_signature:
            raise PowError("The proof-of-work challenge was not issued by this service.")
        if not result.verified:
            raise PowError("The proof-of-work solution is wrong.")
        # Signed, so these are ours; read them only now.
        parameters = parsed.challenge.parameters
        data = parameters.data if isinstance(parameters.data, dict) else {}
        if data.get("statement") != statement_id:
            raise PowError("The proof-of-work challenge is for another statement.")
        if not isinstance(parameters.expires_at, int):
            raise PowError("The proof-of-work challenge has no expiry.")
        return Solved(nonce=str(parameters.nonce), expires_at=parameters.expires_at)
