"""widget.tlog.entries: entry rules, canonical lines and the count rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785

from widget.tlog.entries import (
    COUNTED,
    STRUCK,
    WITHDRAWN,
    EntryError,
    Tally,
    canonical_line,
    commitment,
    endorse_entry,
    minute,
    parse_line,
    replay,
    sha256_hex,
    strike_entry,
    unstrike_entry,
    validate_entry,
    withdraw_entry,
)

AT = "2026-03-01T09:30Z"
TEXT = sha256_hex("We, the undersigned...")


def endorse(i: int, **overrides: Any) -> dict[str, Any]:
    """An endorse entry's dict; with overrides, not validated (to build bad ones)."""
    fields: dict[str, Any] = {
        "country": "KZ",
        "source": "https://ally.example",
        "name": "Aigerim",
        "text": TEXT,
        "commit": commitment(f"secret-{i}"),
    }
    if overrides:
        return {"i": i, "kind": "endorse", "at": AT, **fields, **overrides}
    return endorse_entry(i, AT, **fields).entry


def strike(i: int, target: int, reason: str = "spam") -> dict[str, Any]:
    return strike_entry(i, AT, target=target, reason=reason).entry


def unstrike(i: int, target: int) -> dict[str, Any]:
    return unstrike_entry(i, AT, target=target).entry


def withdraw(i: int, target: int) -> dict[str, Any]:
    return withdraw_entry(i, AT, target=target).entry


def test_lines_are_the_jcs_canonical_json_and_parse_back() -> None:
    built = endorse_entry(
        0,
        datetime(2026, 3, 1, 12, 30, 59, tzinfo=timezone(timedelta(hours=3))),
        country=None,
        source="direct",
        name="Зарина",
        text=TEXT,
        commit=commitment("correct horse"),
    )
    assert built.entry["at"] == "2026-03-01T09:30Z"
    assert built.line == rfc8785.dumps(built.entry)
    assert built.line.startswith(b'{"at":"2026-03-01T09:30Z","commit":"')
    assert "Зарина".encode() in built.line  # UTF-8, not \u escapes
    assert parse_line(built.line, 0) == built.entry
    assert commitment("correct horse") == (
        "4104d36f8da2c254349f85836793ebe029e0c957063a34c91c2e9203187b5631"
    )
    assert canonical_line(built.entry) == built.line
    line = strike_entry(7, AT, target=3, reason="").line
    assert line == b'{"at":"2026-03-01T09:30Z","i":7,"kind":"strike","reason":"","target":3}'


def test_non_canonical_or_malformed_lines_are_refused() -> None:
    good = endorse_entry(
        3, AT, country="KZ", source="direct", name=None, text=TEXT, commit=TEXT
    ).line
    parse_line(good, 3)
    spaced = json.dumps(json.loads(good), separators=(", ", ": "), sort_keys=True).encode()
    unsorted = json.dumps(
        {"kind": "endorse", **json.loads(good)}, separators=(",", ":"), ensure_ascii=False
    ).encode()
    escaped = good.replace(b'"direct"', b'"\\u0064irect"')
    bad_lines = {
        "spaces": spaced,
        "unsorted keys": unsorted,
        "needless escape": escaped,
        "trailing newline": good + b"\n",
        "float index": good.replace(b'"i":3', b'"i":3.0'),
        "exponent": good.replace(b'"i":3', b'"i":3e0'),
        "duplicate key": good.replace(b'{"at"', b'{"at":"x","at"'),
        "not an object": b"[1,2]",
        "not JSON": b"{",
        "NaN": b'{"i":NaN}',
        "not UTF-8": good.replace(b"direct", b"dir\xffct"),
    }
    for why, line in bad_lines.items():
        with pytest.raises(EntryError):
            parse_line(line, 3)
            pytest.fail(why)
    with pytest.raises(EntryError, match="entry 4 says it is entry 3"):
        parse_line(good, 4)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**endorse(0), "kind": "sign"}, "unknown kind"),
        ({"i": 0, "at": AT}, "unknown kind"),
        ({**endorse(0), "email": "a@b.example"}, "unexpected email"),
        ({k: v for k, v in endorse(0).items() if k != "commit"}, "missing commit"),
        ({**strike(1, 0), "source": "direct"}, "unexpected source"),
        ({k: v for k, v in strike(1, 0).items() if k != "reason"}, "missing reason"),
        ({**unstrike(1, 0), "reason": "x"}, "unexpected reason"),
        (endorse(0, country="kz"), "country"),
        (endorse(0, country="KAZ"), "country"),
        (endorse(0, name=""), "name"),
        (endorse(0, name="x" * 201), "name"),
        (endorse(0, source=""), "source"),
        (endorse(0, source=None), "source"),
        (endorse(0, text=TEXT.upper()), "text"),
        (endorse(0, commit="ab"), "commit"),
        ({**endorse(0), "i": -1}, "i is not an index"),
        ({**endorse(0), "i": True}, "i is not an index"),
        ({**endorse(0), "i": "0"}, "i is not an index"),
        ({**endorse(0), "at": "2026-03-01T09:30:00Z"}, "UTC minute"),
        ({**endorse(0), "at": "2026-02-30T09:30Z"}, "UTC minute"),
        ({**endorse(0), "at": "2026-03-01 09:30Z"}, "UTC minute"),
        ({**strike(1, 0), "target": 1}, "not an earlier entry"),
        ({**strike(1, 0), "target": "0"}, "not an earlier entry"),
        ({**strike(1, 0), "reason": "x" * 201}, "reason"),
        ({**strike(1, 0), "reason": None}, "reason"),
    ],
)
def test_malformed_entries_are_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(EntryError, match=message):
        validate_entry(entry)


def test_builders_validate_too() -> None:
    with pytest.raises(EntryError):
        endorse_entry(0, AT, country="XXX", source="direct", name=None, text=TEXT, commit=TEXT)
    with pytest.raises(EntryError):
        strike_entry(0, AT, target=0)
    with pytest.raises(EntryError):
        minute(datetime(2026, 1, 1))  # naive
    assert minute(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)) == "2026-01-01T23:59Z"


def test_count_rule() -> None:
    entries = [
        endorse(0),
        endorse(1),
        endorse(2),
        endorse(3),
        strike(4, 1),  # 1 struck
        strike(5, 2),
        unstrike(6, 2),  # 2 back
        strike(7, 2),  # and struck again: strike -> unstrike -> strike
        withdraw(8, 3),  # 3 withdrawn
        strike(9, 0),
        withdraw(10, 0),  # withdrawal of a struck entry: withdrawn
        unstrike(11, 0),  # ... stays withdrawn whatever moderation does after
        endorse(12),
        strike(13, 12),
        strike(14, 12),  # a repeated strike is a no-op
        unstrike(15, 12),  # one unstrike undoes it: the latest decides
    ]
    tally = replay(entries)
    assert tally.statuses() == {0: WITHDRAWN, 1: STRUCK, 2: STRUCK, 3: WITHDRAWN, 12: COUNTED}
    assert tally.count == 1
    assert tally.summary() == {COUNTED: 1, STRUCK: 2, WITHDRAWN: 2}
    assert tally.size == len(entries)
    with pytest.raises(KeyError):
        tally.status(4)

    # The running count after each entry, as the rule says.
    running = Tally()
    counts = []
    for entry in entries:
        running.apply(entry)
        counts.append(running.count)
    assert counts == [1, 2, 3, 4, 3, 2, 3, 2, 1, 0, 0, 0, 1, 0, 0, 1]


def test_unstrike_of_a_never_struck_entry_changes_nothing() -> None:
    tally = replay([endorse(0), unstrike(1, 0), withdraw(2, 0), withdraw(3, 0)])
    assert tally.status(0) == WITHDRAWN
    assert tally.count == 0


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([endorse(0), strike(1, 0), strike(2, 1)], "targets 1, not an earlier endorsement"),
        ([endorse(0), withdraw(1, 0), unstrike(2, 1)], "not an earlier endorsement"),
        ([endorse(1)], "entry 0 says it is entry 1"),
        ([endorse(0), endorse(2)], "entry 1 says it is entry 2"),
        ([endorse(0), endorse(0)], "entry 1 says it is entry 0"),
        ([endorse(0), endorse(2), endorse(1)], "entry 1 says it is entry 2"),
        ([endorse(0), {**strike(1, 0), "target": 5}], "not an earlier entry"),
        ([endorse(0), {**endorse(1), "kind": "vote"}], "unknown kind"),
    ],
)
def test_malformed_sequences_are_refused(entries: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(EntryError, match=message):
        replay(entries)
