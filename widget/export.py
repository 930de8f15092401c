"""Exports of a statement's record: CSV and JSON Lines, streamed, with no personal secrets.

Each row is time, display name, country, source, struck (and the entry id, so a struck
row can be traced in the console), and ``confirmed_at``: for an endorsement its owner
confirmed by email, the minute it was confirmed (which is when it counted, so its time
too); empty for one counted without confirmation. Emails, their HMACs and IP addresses
never appear: ``store.LogEntry`` does not carry them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from .store import LogEntry

FIELDS = (
    "id",
    "time",
    "name",
    "country",
    "source",
    "public",
    "struck",
    "struck_by",
    "struck_at",
    "confirmed_at",
)
FORMATS = ("csv", "jsonl")


def entry_row(entry: LogEntry) -> dict[str, Any]:
    struck = entry.struck or {}
    time = datetime.fromtimestamp(entry.time_ms / 1000, UTC).isoformat(timespec="seconds")
    return {
        "id": entry.id,
        "time": time,
        "name": entry.name,
        "country": entry.country,
        "source": entry.source,
        "public": entry.public,
        "struck": bool(entry.struck),
        "struck_by": struck.get("by", ""),
        "struck_at": struck.get("at", ""),
        "confirmed_at": time if entry.confirmed else "",
    }


def _csv_safe(value: Any) -> Any:
    # A name starting with = + - @ would run as a formula in a spreadsheet.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_lines(entries: Iterable[LogEntry]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for entry in entries:
        writer.writerow({k: _csv_safe(v) for k, v in entry_row(entry).items()})
        if buffer.tell() > 16_384:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_lines(entries: Iterable[LogEntry]) -> Iterator[str]:
    for entry in entries:
        yield json.dumps(entry_row(entry), ensure_ascii=False) + "\n"


def export_lines(entries: Iterable[LogEntry], fmt: str) -> Iterator[str]:
    if fmt == "csv":
        return csv_lines(entries)
    if fmt == "jsonl":
        return jsonl_lines(entries)
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
