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
* Block lists: ``network_block`` and ``email_domain_block`` turn what an operator typed
  into what may be stored (a network truncated to its prefix, or a keyed hash of it for
  prefixes longer than IPv4 /24 or IPv6 /48, so no single client's address is kept);
  ``BlockList`` matches a client address and an email domain against them, and
  ``BlockCache`` keeps the list for ``BlockCache.TTL`` seconds per process.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from disposable_email_domains import blocklist as DISPOSABLE_DOMAINS
from email_validator import ValidatedEmail
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


def canonical_email(raw: str, checked: ValidatedEmail | None = None) -> CanonicalEmail:
    """``raw`` in the form that decides who is the same person; ``checked`` is ``raw`` as
    ``validation.checked_email`` read it already, if it did."""
    if checked is None:
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
    return networks_of(address, prefixes)[0]


def networks_of(address: str, *prefix_pairs: Sequence[int]) -> tuple[str, ...]:
    """``network_of`` for each pair of prefixes, reading the address once; each network
    is written as ``ipaddress`` writes it (``198.51.100.0/24``, ``2001:db8::/48``)."""
    ip = _client_ip(address)
    if ip is None:
        return tuple(address for _ in prefix_pairs)
    bits, value = ip.max_prefixlen, int(ip)
    networks = []
    for pair in prefix_pairs:
        prefix = pair[0] if ip.version == 4 else pair[1]
        host_bits = bits - prefix
        networks.append(f"{type(ip)(value >> host_bits << host_bits)}/{prefix}")
    return tuple(networks)


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


# -- block lists -----------------------------------------------------------------------------

# Prefixes longer than these (IPv4 /25-/32, IPv6 /49-/128) may be one household or one
# person: such a block keeps only a keyed hash of its network, never the network itself.
HASHED_AFTER = {4: 24, 6: 48}
# Shorter prefixes would block a large share of the internet: refused.
SHORTEST_BLOCK = {4: 8, 6: 16}
RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
MAX_REASON = 200


class BlockError(ValueError):
    """Not a network or a domain that can be blocked; the message is for ``errors``."""


def parse_rfc3339(text: Any) -> float:
    """An RFC 3339 date-time with its offset (``2026-12-01T10:00:00Z``) as epoch seconds."""
    if not isinstance(text, str) or not RFC3339.fullmatch(text.strip()):
        raise ValueError("Give an RFC 3339 date-time with its offset, like 2026-12-01T10:00:00Z.")
    value = text.strip().upper().replace(" ", "T")
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValueError("That date or time does not exist.") from None


def _client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def network_digest(key: bytes, version: int, prefix: int, network: str) -> str:
    """The keyed hash a long-prefix block keeps instead of its network."""
    message = f"{version}|{prefix}|{network}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]


def network_block(raw: Any, key: bytes) -> dict[str, Any]:
    """What a block of the network ``raw`` (CIDR, or one address) stores: its IP version
    and prefix length, and the network truncated to that prefix, or for long prefixes the
    keyed hash of it. An IPv4-mapped IPv6 network becomes the IPv4 one it maps."""
    if not isinstance(raw, str) or not raw.strip():
        raise BlockError("Give a network in CIDR form, like 203.0.113.0/24 or 2001:db8::/48.")
    try:
        net = ipaddress.ip_network(raw.strip(), strict=False)
    except ValueError:
        raise BlockError(f"{raw.strip()[:60]!r} is not a network in CIDR form.") from None
    if isinstance(net, ipaddress.IPv6Network):
        mapped = net.network_address.ipv4_mapped
        if mapped is not None and net.prefixlen >= 96:
            net = ipaddress.IPv4Network(f"{mapped}/{net.prefixlen - 96}", strict=False)
    version, prefix = net.version, net.prefixlen
    if prefix < SHORTEST_BLOCK[version]:
        raise BlockError(
            f"An IPv{version} block needs a prefix of at least /{SHORTEST_BLOCK[version]}; "
            "to stop every endorsement, close the statement instead."
        )
    address = str(net.network_address)
    if prefix > HASHED_AFTER[version]:
        return {"version": version, "prefix": prefix, "hash": network_digest(key, *_n(net))}
    return {"version": version, "prefix": prefix, "network": address}


def _n(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int, str]:
    return net.version, net.prefixlen, str(net.network_address)


def email_domain_block(raw: Any) -> str:
    """The domain as the endorse path sees it (``canonical_email``: lowercase, IDNA
    ASCII); a leading ``@`` or ``*.`` is dropped (subdomains are always included)."""
    if not isinstance(raw, str) or not raw.strip():
        raise BlockError("Give an email domain, like example.com.")
    text = raw.strip().lower()
    text = text.removeprefix("@").removeprefix("*.")
    if "@" in text or "/" in text:
        raise BlockError(f"{raw.strip()[:60]!r} is not a domain.")
    try:
        return canonical_email(f"postmaster@{text}").domain
    except EmailError:
        raise BlockError(f"{raw.strip()[:60]!r} is not a domain that takes email.") from None


@dataclass(frozen=True)
class Block:
    """One block as stored (``record``) and shown (``label``)."""

    id: str
    kind: str  # "network" or "email_domain"
    reason: str = ""
    created: float = 0.0
    expires: int | None = None
    by: str = ""
    version: int = 0
    prefix: int = 0
    network: str = ""
    hash: str = ""
    domain: str = ""

    @classmethod
    def from_record(cls, block_id: str, record: Mapping[str, Any]) -> Block:
        expires = record.get("expires")
        return cls(
            id=block_id,
            kind=str(record.get("kind", "")),
            reason=str(record.get("reason", "")),
            created=float(record.get("created", 0)),
            expires=int(expires) if expires is not None else None,
            by=str(record.get("by", "")),
            version=int(record.get("version", 0)),
            prefix=int(record.get("prefix", 0)),
            network=str(record.get("network", "")),
            hash=str(record.get("hash", "")),
            domain=str(record.get("domain", "")),
        )

    def record(self) -> dict[str, Any]:
        kept = {k: v for k, v in self.__dict__.items() if k != "id" and v not in ("", 0)}
        kept["expires"] = self.expires
        kept["created"] = self.created
        return kept

    @property
    def label(self) -> str:
        if self.kind == "email_domain":
            return self.domain
        if self.hash:
            return f"IPv{self.version} hashed /{self.prefix}"
        return f"{self.network}/{self.prefix}"

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires


@dataclass
class BlockList:
    """Blocks compiled for matching: per (IP version, prefix), the truncated networks or
    their hashes; per domain, its blocks. ``match_*`` skip blocks expired at ``now``."""

    key: bytes
    networks: dict[tuple[int, int], dict[str, list[Block]]] = field(default_factory=dict)
    domains: dict[str, list[Block]] = field(default_factory=dict)

    @classmethod
    def build(cls, blocks: Iterable[Block], key: bytes) -> BlockList:
        compiled = cls(key)
        for block in blocks:
            if block.kind == "email_domain" and block.domain:
                compiled.domains.setdefault(block.domain, []).append(block)
            elif block.kind == "network" and block.version in (4, 6):
                group = compiled.networks.setdefault((block.version, block.prefix), {})
                group.setdefault(block.hash or block.network, []).append(block)
        return compiled

    def __bool__(self) -> bool:
        return bool(self.networks or self.domains)

    def match_address(self, address: str, now: float | None = None) -> Block | None:
        if not self.networks:
            return None
        ip = _client_ip(address)
        if ip is None:
            return None
        at = time.time() if now is None else now
        for (version, prefix), group in self.networks.items():
            if version != ip.version:
                continue
            net = ipaddress.ip_network(f"{ip}/{prefix}", strict=False)
            if prefix > HASHED_AFTER[version]:
                subject = network_digest(self.key, *_n(net))
            else:
                subject = str(net.network_address)
            for block in group.get(subject, ()):
                if block.active(at):
                    return block
        return None

    def match_domain(self, domain: str, now: float | None = None) -> Block | None:
        """A block of ``domain`` or of a domain it belongs to."""
        if not self.domains or not domain:
            return None
        at = time.time() if now is None else now
        labels = domain.lower().split(".")
        for i in range(len(labels)):
            for block in self.domains.get(".".join(labels[i:]), ()):
                if block.active(at):
                    return block
        return None


class BlockCache:
    """The block list as this process last read it, for at most ``TTL`` seconds (one
    Redis read per refresh; Redis holds the truth). Expiry is checked at each match."""

    TTL = 2.0

    def __init__(self, fetch: Callable[[], Mapping[str, Mapping[str, Any]]], key: bytes) -> None:
        self._fetch = fetch
        self._key = key
        self._list = BlockList(key)
        self._until = 0.0
        self._lock = threading.Lock()

    def current(self) -> BlockList:
        if time.monotonic() >= self._until:
            with self._lock:
                if time.monotonic() >= self._until:
                    records = self._fetch()
                    blocks = (Block.from_record(i, r) for i, r in records.items())
                    self._list = BlockList.build(blocks, self._key)
                    self._until = time.monotonic() + self.TTL
        return self._list

    def invalidate(self) -> None:
        self._until = 0.0
