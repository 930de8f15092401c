"""Bench: classic against sharded pub/sub on a local Redis Cluster (3 masters, 3 replicas),
as two app instances would use them: what one count change costs Redis, and how long it
takes to reach each instance.

For each mode, two subscribers (the hubs of two app instances) listen the way
``widget/live.py`` does: classic, one ``PSUBSCRIBE us:{*}:events`` on any node; sharded,
``SSUBSCRIBE us:{<id>}:events`` on the node serving the statement's slot. A publisher
sends ``--messages`` count changes (``PUBLISH`` or ``SPUBLISH`` on the statement's
channel, what the store's scripts end with), ``--rate`` a second. Reported: publish to
receipt per subscriber (p50, p99, max), and the CPU time of all six redis-server processes
per message (classic pub/sub in a cluster sends every message to every node over the
cluster bus; sharded keeps it within the statement's shard).

    python bench/pubsub.py [--messages 3000] [--rate 500]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "scripts"))

from redis_cluster import LocalCluster  # noqa: E402

STATEMENT = "dongelek-ystel"
CHANNEL = f"us:{{{STATEMENT}}}:events"


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def run(cluster: LocalCluster, mode: str, messages: int, rate: float) -> dict[str, Any]:
    client = cluster.client()
    owner = cluster.master_of_slot(int(client.keyslot(CHANNEL)))
    others = [p for p in cluster.masters() if p != owner]
    sent: dict[int, float] = {}
    received: list[dict[int, float]] = [{}, {}]
    ready = threading.Barrier(3)

    def subscriber(index: int) -> None:
        if mode == "classic":  # any node hears every PUBLISH; take one the owner is not
            pubsub = cluster.node(others[index % len(others)]).pubsub()
            pubsub.psubscribe("us:{*}:events")
        else:
            pubsub = cluster.node(owner).pubsub()
            pubsub.ssubscribe(CHANNEL)
        pubsub.get_message(timeout=2)
        ready.wait()
        got = received[index]
        while len(got) < messages:
            message = pubsub.get_message(timeout=5)
            if message is None:
                break
            if message["type"] in ("pmessage", "smessage"):
                got[int(message["data"])] = time.monotonic()
        pubsub.close()

    threads = [threading.Thread(target=subscriber, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    ready.wait()
    publisher = cluster.node(owner)
    command = "PUBLISH" if mode == "classic" else "SPUBLISH"
    pids = list(cluster.pids.values())
    cpu_before = cpu_seconds(pids)
    started = time.monotonic()
    for n in range(messages):
        wait = started + n / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sent[n] = time.monotonic()
        publisher.execute_command(command, CHANNEL, n)
    for thread in threads:
        thread.join(timeout=30)
    cpu = cpu_seconds(pids) - cpu_before
    latencies = [got[n] - sent[n] for got in received for n in got]
    missed = sum(messages - len(got) for got in received)
    return {
        "mode": mode,
        "p50": pct(latencies, 0.5),
        "p99": pct(latencies, 0.99),
        "max": max(latencies) * 1000,
        "missed": missed,
        "cpu_us": cpu / messages * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500.0, help="messages a second")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pubsub-bench-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", node_timeout_ms=5000)
        cluster.start()
        try:
            for _ in range(args.rounds):
                for mode in ("classic", "sharded"):
                    rows.append(run(cluster, mode, args.messages, args.rate))
        finally:
            cluster.stop()
    print(
        f"{args.messages} messages at {args.rate:g}/s, 2 subscribers (two app instances), "
        "3 masters + 3 replicas on loopback"
    )
    header = f"{'mode':<9}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}{'missed':>8}"
    print(header + f"{'Redis CPU us/msg':>18}")
    for row in rows:
        print(
            f"{row['mode']:<9}{row['p50']:>8.2f}{row['p99']:>8.2f}{row['max']:>8.2f}"
            f"{row['missed']:>8}{row['cpu_us']:>18.1f}"
        )
    return 1 if any(row["missed"] for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
