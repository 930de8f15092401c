"""The log's entries and the count rule, as pure functions.

Each entry is a JSON object whose RFC 8785 (JCS) canonical form is both its line in the
downloadable log (followed by ``\\n``) and its Merkle leaf. Every entry has ``i`` (its
0-based index), ``kind`` and ``at`` (UTC, to the minute: ``YYYY-MM-DDTHH:MMZ``); then:

=========== ===============================================================================
kind        other fields
=========== ===============================================================================
endorse     ``country`` (ISO 3166-1 alpha-2 or null), ``source`` (allied origin or
            ``"direct"``), ``name`` (first name or null), ``text`` (hex SHA-256 of the
            statement text shown), ``commit`` (hex SHA-256 of the UTF-8 receipt secret)
strike      ``target`` (the ``i`` of an earlier endorse entry), ``reason`` (at most 200
            characters, may be empty)
unstrike    ``target``
withdraw    ``target``
=========== ===============================================================================

Nothing else: a missing or extra field is an error.

The count rule: an endorse entry is *counted* unless it was withdrawn (then *withdrawn*) or
its latest strike/unstrike is a strike (then *struck*); the count is the number of counted
entries. Repeated strikes, unstrikes or withdrawals are allowed and change nothing beyond
the rule (a verifier must not fail an honest log over a no-op).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

import rfc8785

__all__ = [
    "COUNTED",
    "FIELDS",
    "KINDS",
    "STRUCK",
    "WITHDRAWN",
    "EntryError",
    "LogLine",
    "Tally",
    "Template",
    "canonical_line",
    "commitment",
    "endorse_entry",
    "endorse_template",
    "minute",
    "moderation_template",
    "parse_line",
    "replay",
    "sha256_hex",
    "strike_entry",
    "unstrike_entry",
    "validate_entry",
    "withdraw_entry",
]

COUNTED, STRUCK, WITHDRAWN = "counted", "struck", "withdrawn"
_COMMON = frozenset({"i", "kind", "at"})
FIELDS: Mapping[str, frozenset[str]] = {
    "endorse": _COMMON | {"country", "source", "name", "text", "commit"},
    "strike": _COMMON | {"target", "reason"},
    "unstrike": _COMMON | {"target"},
    "withdraw": _COMMON | {"target"},
}
KINDS = tuple(FIELDS)
MAX_NAME = 200
MAX_SOURCE = 300
MAX_REASON = 200
MAX_INDEX = 2**53 - 1  # JSON numbers are exact up to here (RFC 8785 refuses more)
MAX_LINE = 4096

_HEX64 = re.compile(r"[0-9a-f]{64}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_MINUTE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})Z")


class EntryError(ValueError):
    """An entry or a sequence of entries breaks the log's rules."""


class LogLine(NamedTuple):
    entry: dict[str, Any]
    line: bytes
    """The canonical JSON bytes, without the newline: the Merkle leaf."""


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def commitment(secret: str) -> str:
    """An endorse entry's ``commit``: hex SHA-256 of the receipt secret's UTF-8 bytes."""
    return sha256_hex(secret.encode("utf-8"))


def minute(at: datetime) -> str:
    """``at`` in UTC, to the minute: ``YYYY-MM-DDTHH:MMZ`` (naive datetimes are refused)."""
    if at.tzinfo is None:
        raise EntryError("a naive datetime has no time zone")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


@lru_cache(maxsize=4096)
def _is_minute(value: str) -> bool:
    match = _MINUTE.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute_ = map(int, match.groups())
    try:
        datetime(year, month, day, hour, minute_, tzinfo=UTC)
    except ValueError:
        return False
    return True


def _is_index(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_INDEX


def _text(value: object, most: int, *, empty: bool = False) -> bool:
    return isinstance(value, str) and (empty or value != "") and len(value) <= most


def validate_entry(entry: Mapping[str, Any], index: int | None = None) -> None:
    """Check one entry's fields and types (and its ``i`` when ``index`` is given)."""
    if not isinstance(entry, Mapping):
        raise EntryError("an entry is a JSON object")
    kind = entry.get("kind")
    fields = FIELDS.get(kind) if isinstance(kind, str) else None
    if fields is None:
        raise EntryError(f"unknown kind {kind!r}")
    keys = entry.keys()
    if keys != fields:
        missing = sorted(fields - keys)
        extra = sorted(keys - fields)
        raise EntryError(
            f"{kind} entry fields are wrong"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(map(str, extra))}" if extra else "")
        )
    i = entry["i"]
    if not _is_index(i):
        raise EntryError(f"i is not an index: {i!r}")
    if index is not None and i != index:
        raise EntryError(f"entry {index} says it is entry {i} (missing, repeated or moved entries)")
    if not isinstance(entry["at"], str) or not _is_minute(entry["at"]):
        raise EntryError(f"at is not a UTC minute (YYYY-MM-DDTHH:MMZ): {entry['at']!r}")
    if kind == "endorse":
        country = entry["country"]
        if country is not None and not (isinstance(country, str) and _COUNTRY.fullmatch(country)):
            raise EntryError(f"country is not a two-letter code or null: {country!r}")
        if not _text(entry["source"], MAX_SOURCE):
            raise EntryError("source is not an origin or 'direct'")
        if entry["name"] is not None and not _text(entry["name"], MAX_NAME):
            raise EntryError(f"name is not a first name (1-{MAX_NAME} characters) or null")
        for key in ("text", "commit"):
            if not (isinstance(entry[key], str) and _HEX64.fullmatch(entry[key])):
                raise EntryError(f"{key} is not a lowercase hex SHA-256")
        return
    target = entry["target"]
    if not _is_index(target) or target >= i:
        raise EntryError(f"target {target!r} is not an earlier entry")
    if kind == "strike" and not _text(entry["reason"], MAX_REASON, empty=True):
        raise EntryError(f"reason is not text of at most {MAX_REASON} characters")


def canonical_line(entry: Mapping[str, Any]) -> bytes:
    """Validate ``entry`` and return its RFC 8785 canonical JSON (the leaf, no newline)."""
    validate_entry(entry)
    return rfc8785.dumps(dict(entry))


def parse_line(line: bytes, index: int | None = None) -> dict[str, Any]:
    """Read one log line (without its newline): JSON, canonical per RFC 8785, well formed."""
    if len(line) > MAX_LINE:
        raise EntryError(f"the line is longer than {MAX_LINE} bytes")
    try:
        entry = json.loads(line)
    except ValueError as exc:
        raise EntryError(f"not JSON ({exc})") from None
    if not isinstance(entry, dict):
        raise EntryError("not a JSON object")
    try:
        canonical = rfc8785.dumps(entry)
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise EntryError(f"cannot be canonical JSON ({exc})") from None
    if canonical != line:
        raise EntryError("not in RFC 8785 canonical form (the bytes differ from its re-encoding)")
    validate_entry(entry, index)
    return entry


def _build(entry: dict[str, Any]) -> LogLine:
    return LogLine(entry, canonical_line(entry))


def _at(at: datetime | str) -> str:
    return minute(at) if isinstance(at, datetime) else at


def endorse_entry(
    i: int,
    at: datetime | str,
    *,
    country: str | None,
    source: str,
    name: str | None,
    text: str,
    commit: str,
) -> LogLine:
    """An endorse entry and its line. ``text`` and ``commit`` are hex SHA-256 digests
    (``sha256_hex(statement text)``, ``commitment(receipt secret)``)."""
    return _build(
        {
            "i": i,
            "kind": "endorse",
            "at": _at(at),
            "country": country,
            "source": source,
            "name": name,
            "text": text,
            "commit": commit,
        }
    )


def strike_entry(i: int, at: datetime | str, *, target: int, reason: str = "") -> LogLine:
    return _build({"i": i, "kind": "strike", "at": _at(at), "target": target, "reason": reason})


def unstrike_entry(i: int, at: datetime | str, *, target: int) -> LogLine:
    return _build({"i": i, "kind": "unstrike", "at": _at(at), "target": target})


def withdraw_entry(i: int, at: datetime | str, *, target: int) -> LogLine:
    return _build({"i": i, "kind": "withdraw", "at": _at(at), "target": target})


# Stand-ins for the numbers only the store knows when it appends (the entry's own index
# and its target's): a template is the canonical line cut where they go. ``"i":`` and
# ``"target":`` with their quotes cannot occur inside a JSON string value (its quotes would
# be escaped), so each cut is unique.
_I_SLOT, _TARGET_SLOT = MAX_INDEX, MAX_INDEX - 1


class Template(NamedTuple):
    """A canonical line in pieces: ``pieces[0] + str(i) + pieces[1]`` for an endorse entry,
    ``pieces[0] + str(i) + pieces[1] + str(target) + pieces[2]`` for the other kinds."""

    pieces: tuple[bytes, ...]

    def fill(self, *numbers: int) -> bytes:
        out = self.pieces[0]
        for number, piece in zip(numbers, self.pieces[1:], strict=True):
            out += b"%d" % number + piece
        return out


def _cut(line: bytes, *slots: tuple[bytes, int]) -> Template:
    pieces, rest = [], line
    for key, slot in slots:
        marker = b'"%s":%d' % (key, slot)
        head, found, rest = rest.partition(marker)
        assert found, marker
        pieces.append(head + b'"%s":' % key)
    return Template((*pieces, rest))


def endorse_template(
    at: datetime | str,
    *,
    country: str | None,
    source: str,
    name: str | None,
    text: str,
    commit: str,
) -> Template:
    """An endorse entry's line, for the store to fill in with its index."""
    line = endorse_entry(
        _I_SLOT, at, country=country, source=source, name=name, text=text, commit=commit
    ).line
    return _cut(line, (b"i", _I_SLOT))


def moderation_template(kind: str, at: datetime | str, reason: str = "") -> Template:
    """A strike, unstrike or withdraw entry's line, for the store to fill in with its
    index and its target's."""
    if kind == "strike":
        line = strike_entry(_I_SLOT, at, target=_TARGET_SLOT, reason=reason).line
    elif kind == "unstrike":
        line = unstrike_entry(_I_SLOT, at, target=_TARGET_SLOT).line
    elif kind == "withdraw":
        line = withdraw_entry(_I_SLOT, at, target=_TARGET_SLOT).line
    else:
        raise EntryError(f"unknown kind {kind!r}")
    return _cut(line, (b"i", _I_SLOT), (b"target", _TARGET_SLOT))


_STRUCK_BIT, _WITHDRAWN_BIT = 1, 2


class Tally:
    """Replays entries in order and keeps the count rule's result, entry by entry.

    ``apply`` checks that each entry is the next one (its ``i``) and that a target is an
    earlier endorse entry; it expects entries already well formed (``parse_line`` or
    ``validate_entry``).
    """

    def __init__(self) -> None:
        self.size = 0
        self.count = 0
        self._flags: dict[int, int] = {}  # endorse index -> struck/withdrawn bits

    def apply(self, entry: Mapping[str, Any]) -> None:
        i, kind = entry["i"], entry["kind"]
        if i != self.size:
            raise EntryError(
                f"entry {self.size} says it is entry {i} (missing, repeated or moved entries)"
            )
        if kind == "endorse":
            self._flags[i] = 0
            self.count += 1
        else:
            target = entry["target"]
            before = self._flags.get(target)
            if before is None:
                raise EntryError(f"entry {i} ({kind}) targets {target}, not an earlier endorsement")
            if kind == "strike":
                after = before | _STRUCK_BIT
            elif kind == "unstrike":
                after = before & ~_STRUCK_BIT
            elif kind == "withdraw":
                after = before | _WITHDRAWN_BIT
            else:
                raise EntryError(f"entry {i} has unknown kind {kind!r}")
            self._flags[target] = after
            self.count += (after == 0) - (before == 0)
        self.size += 1

    def status(self, index: int) -> str:
        """``counted``, ``struck`` or ``withdrawn`` for the endorse entry ``index``."""
        flags = self._flags.get(index)
        if flags is None:
            raise KeyError(f"entry {index} is not an endorsement")
        if flags & _WITHDRAWN_BIT:
            return WITHDRAWN
        return STRUCK if flags else COUNTED

    def statuses(self) -> dict[int, str]:
        return {i: self.status(i) for i in self._flags}

    def summary(self) -> dict[str, int]:
        """How many endorse entries are in each status."""
        out = {COUNTED: 0, STRUCK: 0, WITHDRAWN: 0}
        for flags in self._flags.values():
            out[WITHDRAWN if flags & _WITHDRAWN_BIT else STRUCK if flags else COUNTED] += 1
        return out


def replay(entries: Iterable[Mapping[str, Any]]) -> Tally:
    """Validate and replay entries from the first: the count and every endorsement's status."""
    tally = Tally()
    for entry in entries:
        validate_entry(entry, tally.size)
        tally.apply(entry)
    return tally
