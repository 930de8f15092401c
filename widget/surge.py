"""When a statement or one of its allied sources is surging: pure arithmetic, no Flask, no Redis.

The store counts endorsements as they are counted (arrivals: what is struck later still
arrived) per source in minute buckets (kept 10 minutes) and hour buckets (kept 26 hours),
by the serving host's clock. From those:

* ``recent``: endorsements in the last 5 minutes, as a sliding window: the current
  minute so far, the 4 minutes before it, and the share of the minute before those that
  is still inside the 5 minutes (the estimate the rate-limit tiers use too).
* ``usual``: the average per 5 minutes over the 24 whole hours before the current hour;
  for a subject whose first arrivals in those hours are more recent (a new statement, a
  new ally, or a service upgraded less than a day ago), over the hours since its first
  arrivals, and never over less than one hour.
* surging: ``recent`` is above ``FACTOR`` times ``usual`` and above the floor
  (``WIDGET_SURGE_FLOOR``, per 5 minutes). With no history at all only the floor counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

WINDOW_SECONDS = 300
FACTOR = 5
BASELINE_HOURS = 24
MIN_BASELINE_HOURS = 1
# Minute buckets a window reads: the current one, 4 whole ones, 1 weighted.
WINDOW_BUCKETS = WINDOW_SECONDS // 60 + 1
PER_HOUR = 3600 // WINDOW_SECONDS  # 5-minute spans in an hour


@dataclass(frozen=True)
class Rate:
    """One subject's rate: ``recent`` in the last 5 minutes, ``usual`` per 5 minutes."""

    recent: float
    usual: float
    threshold: float
    surging: bool


@dataclass(frozen=True)
class Arrivals:
    """Counts per source: ``minutes[0]`` is the current minute, ``minutes[i]`` the one ``i``
    minutes before (``WINDOW_BUCKETS`` of them); ``hours[0]`` is the hour before the
    current one, ``hours[i]`` the one ``i`` hours before that (``BASELINE_HOURS``);
    ``second`` is how far into the current minute ``now`` is."""

    minutes: Sequence[Mapping[str, int]]
    hours: Sequence[Mapping[str, int]]
    second: float


@dataclass(frozen=True)
class Surge:
    """A statement's rate and its sources' (only sources with recent arrivals)."""

    statement: Rate
    sources: Mapping[str, Rate] = field(default_factory=dict)
    floor: int = 30

    @property
    def surging_sources(self) -> list[str]:
        return [s for s, rate in self.sources.items() if rate.surging]

    @property
    def alert(self) -> bool:
        """The statement or one of its sources is surging (what the console, the metric
        and ``undersign watch`` show); the proof of work doubles on ``statement.surging``."""
        return self.statement.surging or any(r.surging for r in self.sources.values())


def rate(minutes: Sequence[int], hours: Sequence[int], second: float, floor: int) -> Rate:
    """The rate of one subject from its bucket counts (laid out as in ``Arrivals``)."""
    padded = [*minutes, *([0] * WINDOW_BUCKETS)][:WINDOW_BUCKETS]
    still_inside = max(0.0, min(1.0, (60 - second) / 60))
    recent = sum(padded[:-1]) + padded[-1] * still_inside
    oldest = max((i for i, n in enumerate(hours) if n > 0), default=-1)
    span = max(MIN_BASELINE_HOURS, oldest + 1)
    usual = sum(hours[:BASELINE_HOURS]) / (span * PER_HOUR)
    threshold = max(FACTOR * usual, float(floor))
    return Rate(recent=recent, usual=usual, threshold=threshold, surging=recent > threshold)


def assess(arrivals: Arrivals, floor: int) -> Surge:
    """The statement's rate (all sources together) and each recently seen source's."""
    sources = sorted({s for bucket in arrivals.minutes for s in bucket})

    def series(buckets: Sequence[Mapping[str, int]], source: str | None) -> list[int]:
        if source is None:
            return [sum(b.values()) for b in buckets]
        return [b.get(source, 0) for b in buckets]

    def of(source: str | None) -> Rate:
        return rate(
            series(arrivals.minutes, source), series(arrivals.hours, source), arrivals.second, floor
        )

    by_source = {s: of(s) for s in sources}
    ordered = dict(sorted(by_source.items(), key=lambda kv: (-kv[1].recent, kv[0])))
    return Surge(statement=of(None), sources=ordered, floor=floor)
