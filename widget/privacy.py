"""Turning personal data into what may be kept: keyed hashes of emails and client addresses.

Each purpose gets its own key derived from ``WIDGET_SECRET_KEY``, so a hash made for one
purpose cannot be matched against another. Email HMACs also bind the statement id, so
the same person endorsing two statements cannot be linked through the store alone.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress


def derive_key(secret: str, purpose: str) -> bytes:
    return hmac.new(secret.encode(), f"undersign/{purpose}/v1".encode(), hashlib.sha256).digest()


def normalize_email(email: str) -> str:
    """Trim and lowercase: ``" Ana@Example.ORG "`` and ``"ana@example.org"`` are one person."""
    return email.strip().lower()


def email_hmac(secret: str, statement_id: str, email: str) -> str:
    message = f"{statement_id}\0{normalize_email(email)}".encode()
    return hmac.new(derive_key(secret, "email"), message, hashlib.sha256).hexdigest()


def client_hash(secret: str, address: str) -> str:
    """A short keyed hash of a client address, for rate-limit keys (never the raw IP)."""
    digest = hmac.new(derive_key(secret, "client"), address.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def client_network(address: str, v4_prefix: int = 32, v6_prefix: int = 64) -> str:
    """The network a client address stands for: an IPv4 address (or its ``/v4_prefix``) and
    an IPv6 ``/v6_prefix``, since one IPv6 host holds a whole /64. Anything that is not an
    address stays as given (a test client, a unix socket)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
