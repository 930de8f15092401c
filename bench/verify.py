"""Bench: ``undersign verify`` of a 100,000-entry log served from loopback, and proof timings.

Builds a synthetic statement log (mostly endorsements, with strikes, unstrikes and
withdrawals) with ``widget.tlog``, seals it into the test double of the log API
(``tests/tlog_double.py``: a stdlib ``http.server`` keeping the tree as the Redis store
would, every 4th level in byte strings) and signs a checkpoint. Then:

  1. proofs: the time to build inclusion and consistency proofs at this size, from an
     in-memory dict ``get`` holding every complete node, and through ``Layout`` (stored
     levels only, one batched read per proof, as the server will);
  2. verify: runs ``undersign verify BASE clean-air --key VKEY --receipt SECRET --state F``
     as a subprocess against the double and times it (wall clock, including the
     interpreter's start), against the target of 15 s.

    python bench/verify.py [--entries 100000] [--runs 1] [--proofs 1000]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tlog_double import SIGNER, STATEMENT, LogDouble, secret, synthetic_log  # noqa: E402

from widget.tlog import tree  # noqa: E402

TARGET_S = 15.0


def undersign() -> list[str]:
    beside = Path(sys.executable).with_name("undersign")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("undersign")
    return [found] if found else [sys.executable, "-m", "widget.cli"]


def time_proofs(double: LogDouble, count: int) -> None:
    n = double.size
    _, created = tree.append_leaves(tree.Frontier(), map(tree.leaf_hash, double.lines))
    nodes = {(level, index): h for level, index, h in created}

    def get(level: int, index: int) -> bytes:
        return nodes[(level, index)]

    rng = random.Random(1)
    indexes = [rng.randrange(n) for _ in range(count)]
    olds = [rng.randrange(1, n) for _ in range(count)]
    for label, make in (
        ("dict get (every node)", lambda _: get),
        ("Layout(4), one batch", double.getter),
    ):
        start = time.perf_counter()
        for i in indexes:
            tree.inclusion_proof(i, n, make(tree.inclusion_proof_nodes(i, n)))
        inclusion = (time.perf_counter() - start) / count
        start = time.perf_counter()
        for m in olds:
            tree.consistency_proof(m, n, make(tree.consistency_proof_nodes(m, n)))
        consistency = (time.perf_counter() - start) / count
        print(
            f"proofs at {n:,} entries, {label}: inclusion {inclusion * 1e6:.0f} us,"
            f" consistency {consistency * 1e6:.0f} us (mean of {count})"
        )
    start = time.perf_counter()
    root = tree.root_from_leaf_hashes([tree.leaf_hash(line) for line in double.lines])
    print(f"root of {n:,} entries from their lines: {(time.perf_counter() - start) * 1e3:.0f} ms")
    assert root == double.root(n)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--proofs", type=int, default=1000)
    args = parser.parse_args()

    start = time.perf_counter()
    log = synthetic_log(args.entries)
    double = LogDouble([entry.line for entry in log])
    size_mb = sum(len(line) + 1 for line in double.lines) / 1e6
    print(
        f"built a signed log of {double.size:,} entries ({size_mb:.1f} MB of JSON Lines,"
        f" {double.tally.count:,} counted) in {time.perf_counter() - start:.1f} s"
    )
    stored = sum(len(level) for level in double.levels.values())
    print(
        f"stored tree hashes: {stored / 1e6:.2f} MB, {stored / double.size:.2f} B per entry"
        f" (levels {sorted(double.levels)})"
    )
    time_proofs(double, args.proofs)

    mine = next(i for i, e in enumerate(log) if e.entry["kind"] == "endorse")
    times = []
    with double.serve() as url, tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            cmd = [
                *undersign(),
                "verify",
                url,
                STATEMENT,
                "--key",
                SIGNER.verifier().vkey,
                "--receipt",
                secret(mine),
                "--state",
                str(Path(tmp) / "state.json"),
            ]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            times.append(time.perf_counter() - start)
            if run == 0 or done.returncode:
                print(done.stdout + done.stderr, end="")
            if done.returncode:
                print(f"undersign verify exited {done.returncode}")
                return 1
    best = min(times)
    print(
        f"undersign verify of {double.size:,} entries over loopback: "
        + ", ".join(f"{t:.2f} s" for t in times)
    )
    print(f"target: <= {TARGET_S:.0f} s: {'met' if best <= TARGET_S else 'missed'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
