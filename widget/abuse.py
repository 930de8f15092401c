"""Who is the same person, and how fast one may go: email normalising and rate-limit tiers.

Pure rules, no Flask and no Redis: the API turns a request into these values and the
store enforces them in one atomic step.

* ``canonical_email``: the form of an address that decides "already endorsed". Unicode
  tricks are undone first (NFKC, default-ignorable code points removed), then
  ``email-validator`` checks the address and puts its domain in ASCII (IDNA); the local
  part is lowercased; Gmail ignores dots and ``+tag``; the providers in
  ``PLUS_ADDRESSING`` deliver ``local+tag`` to ``local``, so the tag goes.
* ``tiers``: the four rate-limit tiers an endorsement counts against, parsed with the
  ``limits`` library (the one flask-limiter uses).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from limits import parse_many

from .store import Tier, Window
from .validation import checked_email

GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
# Providers that deliver ``local+anything@domain`` to ``local@domain`` (their own
# documentation says so). Yahoo uses ``-`` with a separate base name, so it is not here.
PLUS_ADDRESSING = frozenset(
    {
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "fastmail.com",
        "fastmail.fm",
        "yandex.ru",
        "yandex.com",
        "yandex.kz",
        "ya.ru",
        "zoho.com",
    }
)
# IPv4 and IPv6 prefixes of the two address tiers: one IPv6 host holds a whole /64.
CLIENT_PREFIXES = (32, 64)
NETWORK_PREFIXES = (24, 48)


class EmailError(ValueError):
    """Not an address this service accepts; the message is for ``errors.email``."""


@dataclass(frozen=True)
class CanonicalEmail:
    """``address`` decides who is the same person; ``legacy`` is the form used before this
    rule (trimmed, lowercased), so earlier endorsers are still recognised."""

    address: str
    domain: str
    legacy: str


def canonical_email(raw: str) -> CanonicalEmail:
    checked = checked_email(raw)
    if checked is None:
        raise EmailError("Enter a valid email address.")
    local, domain = checked.local_part.lower(), checked.ascii_domain.lower()
    if domain in GMAIL_DOMAINS:
        local, domain = local.split("+", 1)[0].replace(".", ""), "gmail.com"
    elif domain in PLUS_ADDRESSING:
        local = local.split("+", 1)[0]
    if not local:
        raise EmailError("Enter a valid email address.")
    return CanonicalEmail(f"{local}@{domain}", domain, raw.strip().lower())


def is_disposable(domain: str) -> bool:
    """Whether ``domain`` (or a domain it belongs to) is a throwaway-mail service."""
    labels = domain.lower().split(".")
    return any(".".join(labels[i:]) in DISPOSABLE_DOMAINS for i in range(len(labels) - 1))


def windows(spec: str) -> tuple[Window, ...]:
    """``"5/minute;50/day"`` -> its windows; ``ValueError`` for anything else."""
    items = parse_many(spec)
    if not items:
        raise ValueError(f"no limit in {spec!r}")
    return tuple(Window(item.amount, item.get_expiry()) for item in items)


def network_of(address: str, prefixes: Sequence[int]) -> str:
    """The IPv4 or IPv6 network around ``address`` with the prefix for its family (an
    IPv4-mapped IPv6 address counts as IPv4); anything else stays as it is."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = prefixes[0] if ip.version == 4 else prefixes[1]
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass(frozen=True)
class TierLimits:
    """The four tiers' limits, as the settings give them."""

    client: tuple[Window, ...]
    network: tuple[Window, ...]
    source: tuple[Window, ...]
    statement: tuple[Window, ...]


def tiers(limits: TierLimits, client: str, network: str, source: str) -> tuple[Tier, ...]:
    """The tiers one endorsement counts against; ``client`` and ``network`` are already
    keyed hashes, ``source`` the allied origin or ``direct``. The two address tiers also
    count duplicates (probing whether addresses have endorsed costs quota too)."""
    return (
        Tier("client", client, limits.client, on_duplicate=True),
        Tier("network", network, limits.network, on_duplicate=True),
        Tier("source", source, limits.source),
        Tier("statement", "all", limits.statement),
    )
