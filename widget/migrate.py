"""``undersign migrate``: copy one Redis into another (a single Redis into a Redis Cluster,
typically), statement by statement, and verify each statement's count and logs.

Every key is copied as it is, with ``DUMP``/``RESTORE`` and its time to live, so values
of every type (the record's stream, the transparency log, the stored tree, the dedup
buckets, rate-limit windows) arrive byte for byte. A statement's keys all carry its tag
``{<id>}`` (see ``store``), so on a cluster they land in one slot, and each batch of them
is one pipeline to one node. Keys of no statement (the block list, the log key, the day's
salt, console sessions, flask-limiter's windows) are copied too; the per-process stream
counts (``{streams}``) are not: they describe processes of the old deployment.

The service must not write meanwhile (stop it, or close the statements): the check after
each statement compares its count, record length and transparency-log length on both
sides, and fails when they differ. A target that already holds keys of a statement is
refused unless ``force`` (then its keys are replaced).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .store import RedisClient, Store

BATCH = 500
SKIPPED_TAGS = ("streams",)  # live-stream counts per process: not data


@dataclass(frozen=True)
class Copied:
    """One statement (or ``""``: the keys of no statement) as copied and checked."""

    statement_id: str
    keys: int
    count: tuple[int, int]  # source, target
    log_length: tuple[int, int]
    tlog_length: tuple[int, int]

    @property
    def ok(self) -> bool:
        return all(a == b for a, b in (self.count, self.log_length, self.tlog_length))


class TargetNotEmpty(RuntimeError):
    """The target already holds keys of these statements (copy with ``force``)."""

    def __init__(self, statement_ids: list[str]) -> None:
        super().__init__(", ".join(statement_ids))
        self.statement_ids = statement_ids


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def group_keys(keys: Iterable[Any], prefix: str = "us") -> dict[str, list[bytes]]:
    """Keys by the statement whose tag they carry (``""``: keys of no statement)."""
    found: dict[str, list[bytes]] = defaultdict(list)
    opening = prefix + ":{"
    for raw in keys:
        key = raw if isinstance(raw, bytes) else str(raw).encode()
        text = key.decode(errors="replace")
        tag = ""
        if text.startswith(opening) and "}" in text:
            tag = text[len(opening) : text.index("}")]
        if tag in SKIPPED_TAGS:
            continue
        found[tag].append(key)
    return found


def _all_keys(client: RedisClient) -> list[bytes]:
    return list(client.scan_iter(count=1000))


def copy_keys(source: RedisClient, target: RedisClient, keys: list[bytes], replace: bool) -> int:
    """DUMP each key with its PTTL, RESTORE it on the target; the number copied. Each
    batch is one pipeline on each side (a statement's keys share a slot)."""
    copied = 0
    for start in range(0, len(keys), BATCH):
        batch = keys[start : start + BATCH]
        read = source.pipeline(transaction=False)
        for key in batch:
            read.dump(key)
            read.pttl(key)
        answers = read.execute()
        write = target.pipeline(transaction=False)
        for n, key in enumerate(batch):
            payload, ttl = answers[2 * n], int(answers[2 * n + 1])
            if payload is None or ttl == -2:  # gone meanwhile
                continue
            write.restore(key, max(ttl, 0), payload, replace=replace)
            copied += 1
        write.execute()
    return copied


def migrate(
    source: RedisClient,
    target: RedisClient,
    *,
    force: bool = False,
    progress: Callable[[Copied], None] = lambda _: None,
) -> list[Copied]:
    """Copy every key of ``source`` into ``target``, statement by statement, checking
    each; ``TargetNotEmpty`` (nothing copied) when the target holds a statement's keys
    already and not ``force``."""
    src, dst = Store(source), Store(target)
    groups = group_keys(_all_keys(source), src.prefix)
    present = group_keys(_all_keys(target), dst.prefix)
    clashing = sorted(sid for sid in groups if sid and sid in present)
    if clashing and not force:
        raise TargetNotEmpty(clashing)
    results: list[Copied] = []
    for statement_id in sorted(groups, key=lambda sid: (sid == "", sid)):
        keys = groups[statement_id]
        copied = copy_keys(source, target, keys, replace=force)
        if statement_id:
            result = Copied(
                statement_id,
                copied,
                (src.count(statement_id), dst.count(statement_id)),
                (src.log_length(statement_id), dst.log_length(statement_id)),
                (src.log_size(statement_id), dst.log_size(statement_id)),
            )
        else:
            result = Copied("", copied, (0, 0), (0, 0), (0, 0))
        results.append(result)
        progress(result)
    return results


def describe(result: Copied) -> str:
    if not result.statement_id:
        return f"(keys of no statement): {result.keys:,} keys copied"
    mark = "ok" if result.ok else "MISMATCH"
    return (
        f"{result.statement_id}: {result.keys:,} keys copied; "
        f"count {result.count[0]:,} -> {result.count[1]:,}, "
        f"record {result.log_length[0]:,} -> {result.log_length[1]:,}, "
        f"log {result.tlog_length[0]:,} -> {result.tlog_length[1]:,}: {mark}"
    )
