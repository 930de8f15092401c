"""Bench: requests/s of the API against a hello-world floor, same gunicorn config, loopback.

Starts a throwaway redis-server (AOF, fsync every second, as in docker-compose), then one
after another under the production gunicorn config (``widget.gunicorn_conf``, the same
number of gevent workers each time):

  a. hello      a hello-world Flask app (``bench/hello_app.py``): the floor;
  b. count      ``GET /api/v1/statements/<id>/count``;
  c. endorse    ``POST /api/v1/statements/<id>/endorsements`` with the proof of work ON:
                every body a new email and its own solved ALTCHA challenge (made and
                solved before the measured window, by this process with the service's
                secret and the official ``altcha`` solver; the cost does not change the
                service's work: it checks a solution with two HMACs), sent with an
                allowlisted ``Origin`` so CORS runs, behind a trusted proxy on loopback,
                each request from its own address in its own /24 (as the many visitors of
                allied sites would), all four rate-limit tiers on: the production
                ``client`` and ``network`` limits, and ``source``/``statement`` limits set
                so high that the bench's one ally is checked on every request but never
                refused (their production values, 600 and 3000 a minute, would refuse
                almost all of it);
  d. challenge  ``GET /api/v1/statements/<id>/challenge``, each from its own address.

The load generator is ``wrk`` (Debian package ``wrk``; bodies and addresses come from
``bench/endorse.lua`` and ``bench/challenge.lua``) when installed, otherwise a threaded
Python client, which is much weaker and mostly measures itself. Prints requests/s and the
ratios, with the targets: count >= 85% of hello, endorse >= 35% of hello; the challenge
ratio is printed too. Then the Redis round trips one endorsement makes, counted with
MONITOR (commands from the app, not those its scripts run inside Redis).

    python bench/api.py [--duration 8] [--connections 64] [--workers N] [--rounds 1]
                        [--python-client]

On a machine where other work runs, ``--rounds 3`` repeats the phases one after another
and computes the ratios from each phase's best round (noise only slows).

Every answer that is not 2xx is reported (wrk counts statuses >= 400; none of these
routes answers 3xx here). After the endorse phase the bench checks that the count in
Redis rose by the number of 2xx answers (plus at most one request per connection still
in flight when wrk stopped) and that the client tier counted every endorsement.
Also printed: gunicorn's CPU time (master and workers, from /proc) per answered request,
which moves less than requests/s when other work shares the machine.
Exit status: 0 all good, 1 failed requests or an endorse check failed, 2 a target missed.

The numbers depend on the machine and on whatever else runs there; read the ratios.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

from common import free_port, redis_description, redis_server, wait_until

BENCH_DIR = Path(__file__).resolve().parent
STATEMENT = "dongelek-ystel"
ALLY = "https://ally.example"
SECRET = "bench-secret-not-for-production-0123456789abcdef"  # noqa: S105 - throwaway
COUNT_PATH = f"/api/v1/statements/{STATEMENT}/count"
ENDORSE_PATH = f"/api/v1/statements/{STATEMENT}/endorsements"
CHALLENGE_PATH = f"/api/v1/statements/{STATEMENT}/challenge"
COUNT_KEY = f"us:{{{STATEMENT}}}:count"
# The client tier's day windows (widget/store.py): one counter per client and day.
DAY_KEYS = f"us:{{{STATEMENT}}}:rl:client:*:86400:*"
# The production defaults of the two address tiers. Each request has its own client
# address in its own /24 (X-Forwarded-For behind a trusted proxy on loopback).
ENDORSE_LIMIT = "5/minute;50/day"
NETWORK_LIMIT = "30/minute;300/day"
NEVER = "100000000/minute"  # checked on every request, never reached
PAYLOADS_PER_SECOND = 4000  # solved challenges made per second of load (and round)
# Each load run's threads take first octets of their own (11 + n, modulo 200), so that
# runs and rounds seldom share an address, and never more than the tiers allow.
_networks = itertools.count(0, 4)


def client_address(network: int, n: int) -> str:
    """The ``n``-th request's address, each in its own /24, as bench/endorse.lua makes them
    (consecutive addresses in one /24 would meet the network tier's 30 a minute)."""
    return f"{11 + network % 200}.{(n >> 8) % 256}.{n % 256}.1"


TARGETS = {"count": 0.85, "endorse": 0.35}


def http_status(
    port: int, method: str, path: str, body: str | None = None, address: str = "192.0.2.1"
) -> int:
    """One request from ``address`` (TEST-NET-1 by default, never a load address)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        headers = {"X-Forwarded-For": address}
        if body:
            headers.update({"Content-Type": "application/json", "Origin": ALLY})
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def machine() -> str:
    model = ""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        if match := re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE):
            model = f" ({match.group(1).strip()})"
    except OSError:
        pass
    return (
        f"{os.cpu_count()} CPUs{model}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, {redis_description()}"
    )


# -- servers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    port: int
    pgid: int  # gunicorn's master and workers, in a session of their own


def group_cpu_seconds(pgid: int) -> float | None:
    """User + system CPU time of every live process in a process group (Linux only)."""
    ticks = 0
    try:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # the process is gone
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


@contextmanager
def gunicorn(app: str, env: dict[str, str], workers: int, log: Path) -> Iterator[Server]:
    """The app under ``-c python:widget.gunicorn_conf`` (the production settings)."""
    port = free_port()
    # prometheus-client's per-worker files: inside the bench's folder, removed with it.
    metrics_dir = log.parent / f"metrics-{port}"
    metrics_dir.mkdir()
    command = [
        sys.executable, "-m", "gunicorn",
        "-c", "python:widget.gunicorn_conf",
        "--bind", f"127.0.0.1:{port}",
        "--pythonpath", str(BENCH_DIR),
        app,
    ]  # fmt: skip
    full_env = {
        **os.environ,
        **env,
        "WEB_CONCURRENCY": str(workers),
        "LOG_LEVEL": "warning",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with open(log, "ab") as handle:
        process = subprocess.Popen(
            command, env=full_env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until(lambda: http_status(port, "GET", "/healthz") < 500, 30, f"gunicorn {app}")
        yield Server(port, process.pid)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


# -- load generators --------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    requests_per_s: float
    requests: int  # answered requests, whatever their status
    non_2xx: int  # answered with a status outside 2xx (wrk: >= 400)
    socket_errors: int  # connect, read, write errors and timeouts
    p50_ms: float | None
    p99_ms: float | None
    server_cpu_us: float | None = None  # gunicorn's CPU time per answered request

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    url: str,
    duration: float,
    connections: int,
    threads: int,
    script: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Result:
    # A slow answer is an answer: wrk's default 2 s timeout would count it as a socket error
    # (at saturation the hello phase has a few answers slower than that).
    command = [
        "wrk", "--latency", "--timeout", "10s",
        f"-t{threads}", f"-c{connections}", f"-d{duration:g}s",
    ]  # fmt: skip
    if script is not None:
        command += ["-s", str(script)]
    env = {
        **os.environ,
        "BENCH_ORIGIN": ALLY,
        "BENCH_RUN": str(time.time_ns()),
        "BENCH_NET": str(next(_networks)),
        "BENCH_THREADS": str(threads),
        **(extra_env or {}),
    }
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, env=env
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    non_2xx = socket_errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        non_2xx = int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        socket_errors = sum(int(n) for n in match.groups())
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    return Result(
        rate,
        total,
        non_2xx,
        socket_errors,
        _ms(p50.group(1)) if p50 else None,
        _ms(p99.group(1)) if p99 else None,
    )


def run_python_client(
    port: int,
    method: str,
    path: str,
    duration: float,
    connections: int,
    payload_file: str | None = None,
) -> Result:
    """Fallback: one keep-alive connection per thread, as many requests as fit in time,
    sending what the wrk scripts send: each endorsement with its own solved proof of work
    (thread i of n takes lines i, i + n, ...), each challenge from its own address."""
    stop_at = time.monotonic() + duration
    payloads = Path(payload_file).read_text().split() if payload_file else []
    counts = [0] * connections
    non_2xx = [0] * connections
    socket_errors = [0] * connections
    latencies: list[list[float]] = [[] for _ in range(connections)]
    run = time.time_ns()
    network = next(_networks)
    for _ in range(connections // 4):  # one /16 per thread
        next(_networks)

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = payloads[index::connections]
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            body = None
            headers = {}
            if path == CHALLENGE_PATH:
                headers = {"X-Forwarded-For": client_address(network + index, n)}
            if method == "POST":
                altcha = f',"altcha":"{mine[(n - 1) % len(mine)]}"' if mine else ""
                body = (
                    f'{{"name":"Bench {n}","email":"bench-{run}-{index}-{n}@example.org",'
                    f'"consent":true{altcha}}}'
                )
                headers = {
                    "Content-Type": "application/json",
                    "Origin": ALLY,
                    "X-Forwarded-For": client_address(network + index, n),
                }
            started = time.perf_counter()
            try:
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                socket_errors[index] += 1
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            latencies[index].append((time.perf_counter() - started) * 1000)
            counts[index] += 1
            if not 200 <= response.status < 300:
                non_2xx[index] += 1
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    merged = sorted(x for row in latencies for x in row)
    total = sum(counts)

    def pct(q: float) -> float | None:
        return merged[min(len(merged) - 1, int(q * len(merged)))] if merged else None

    return Result(total / elapsed, total, sum(non_2xx), sum(socket_errors), pct(0.50), pct(0.99))


# -- main -------------------------------------------------------------------------------------


def solved_payloads(count: int, path: Path) -> None:
    """``count`` solved proofs of work for the statement, one base64 payload a line, made
    as the service makes them (its secret, cost 1) and solved with ALTCHA's own solver."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool() as pool, open(path, "w") as handle:
        for payload in pool.imap_unordered(_solved, range(count), chunksize=500):
            handle.write(payload + "\n")


def endorse_env(redis_url: str) -> dict[str, str]:
    """The service's settings for the count and endorse phases (and
    ``bench/endorse_parts.py``): proof of work on, all four tiers checked."""
    return {
        "WIDGET_REDIS_URL": redis_url,
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_ALLOWED_ORIGINS": ALLY,
        "WIDGET_POW": "on",
        "WIDGET_POW_COST": "1",  # the service's work does not depend on the cost
        "WIDGET_ENDORSE_LIMIT": ENDORSE_LIMIT,
        "WIDGET_NETWORK_LIMIT": NETWORK_LIMIT,
        "WIDGET_SOURCE_LIMIT": NEVER,
        "WIDGET_STATEMENT_LIMIT": NEVER,
        "WIDGET_TRUSTED_PROXIES": "127.0.0.1",  # wrk and the checks: the loopback proxy
    }


def _solved(_: int) -> str:
    import altcha

    from widget.pow import ProofOfWork

    challenge = altcha.Challenge.from_dict(ProofOfWork(SECRET, 1).challenge(STATEMENT))
    solution = altcha.solve_challenge(challenge)
    assert solution is not None
    return str(altcha.Payload(challenge, solution).to_base64())


def round_trips(port: int, redis_url: str, payloads: list[str]) -> tuple[float, list[str]]:
    """The Redis commands the app sends for one endorsement, on average (MONITOR lines
    that do not come from inside a Lua script), and the commands seen."""
    import redis

    commands: list[str] = []
    stop = threading.Event()
    ready = threading.Event()

    def watch() -> None:
        client = redis.Redis.from_url(redis_url)
        with client.monitor() as monitor:
            ready.set()
            for event in monitor.listen():
                if stop.is_set():
                    break
                if event.get("client_type") != "lua" and "[lua]" not in str(event):
                    commands.append(str(event["command"]).split(" ", 1)[0].upper())

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.3)
    commands.clear()  # the app's own background work (hub resync, sealing) is not counted
    before = len(commands)
    for n, payload in enumerate(payloads):
        body = (
            f'{{"name":"Trip","email":"trip-{n}@example.org","consent":true,"altcha":"{payload}"}}'
        )
        assert http_status(port, "POST", ENDORSE_PATH, body, f"198.18.{n}.1") == 201
    time.sleep(0.3)
    stop.set()
    redis.Redis.from_url(redis_url).ping()  # one more event so the watcher sees stop
    thread.join(5)
    seen = [c for c in commands[before:] if c not in ("PING",)]
    return len([c for c in seen if c == "EVALSHA"]) / len(payloads), seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="gunicorn workers for every phase (default: widget.gunicorn_conf's own)",
    )
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="repeat the three phases; the ratios use each phase's best (for a busy machine)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="also on a local Redis Cluster (3+3 nodes) with 2 app instances; ratios to single",
    )
    args = parser.parse_args()
    if args.cluster:
        return cluster_main(args)

    import redis

    from widget import gunicorn_conf

    workers: int = args.workers or gunicorn_conf.workers
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    generator = f"wrk, {args.threads} threads" if use_wrk else "Python threads (wrk not found)"
    print(
        f"{time.strftime('%Y-%m-%d')}  {machine()}\n"
        f"gunicorn -c python:widget.gunicorn_conf: {workers} {gunicorn_conf.worker_class} "
        f"workers; load: {generator}, {args.connections} connections, "
        f"{args.duration:g} s per phase after {args.warmup:g} s warm-up; "
        "the load generator and Redis share the CPUs",
        flush=True,
    )

    def measure(
        server: Server,
        method: str,
        path: str,
        before: Callable[[], int] = lambda: 0,
        payloads: Path | None = None,
    ) -> tuple[Result, int]:
        """Warm up, then ``before()`` (its answer is returned too), then the measured run."""
        script = {
            ENDORSE_PATH: BENCH_DIR / "endorse.lua",
            CHALLENGE_PATH: BENCH_DIR / "challenge.lua",
        }.get(path)
        url = f"http://127.0.0.1:{server.port}{path}"
        # Each solved proof of work counts once: the warm-up and the measured run each get
        # their own share of the solved payloads (by phase: both may last as long).
        shares: dict[str, dict[str, str]] = {"warmup": {}, "measured": {}}
        if payloads is not None:
            lines = payloads.read_text().split()
            cut = int(args.warmup * PAYLOADS_PER_SECOND)
            for phase, part in (("warmup", lines[:cut]), ("measured", lines[cut:])):
                share = payloads.with_suffix(f".{phase}")
                share.write_text("\n".join(part) + "\n")
                shares[phase] = {"BENCH_PAYLOADS": str(share)}

        def load(seconds: float, phase: str) -> Result:
            if use_wrk:
                extra = shares[phase]
                return run_wrk(url, seconds, args.connections, args.threads, script, extra)
            return run_python_client(
                server.port,
                method,
                path,
                seconds,
                args.connections,
                shares[phase].get("BENCH_PAYLOADS"),
            )

        load(args.warmup, "warmup")
        time.sleep(1)  # let the warm-up's requests still in flight finish
        snapshot = before()
        cpu_before = group_cpu_seconds(server.pgid)
        result = load(args.duration, "measured")
        cpu_after = group_cpu_seconds(server.pgid)
        if cpu_before is not None and cpu_after is not None and result.requests:
            cpu_us = (cpu_after - cpu_before) / result.requests * 1e6
            result = replace(result, server_cpu_us=cpu_us)
        return result, snapshot

    rounds: list[dict[str, Result]] = []
    checks: list[tuple[bool, str]] = []
    with tempfile.TemporaryDirectory(prefix="undersign-bench-") as tmp:
        folder = Path(tmp)
        log = folder / "gunicorn.log"
        with redis_server(folder) as (redis_url, _):
            client = redis.Redis.from_url(redis_url)

            def stored() -> int:
                return int(client.get(COUNT_KEY) or 0)

            app_env = endorse_env(redis_url)
            payloads = folder / "payloads.txt"
            needed = int((args.warmup + args.duration) * PAYLOADS_PER_SECOND) + 100
            started = time.monotonic()
            solved_payloads(needed, payloads)
            print(
                f"  {needed} proofs of work made and solved in "
                f"{time.monotonic() - started:.1f} s (before any measured window)",
                flush=True,
            )
            for number in range(1, args.rounds + 1):
                results: dict[str, Result] = {}
                rounds.append(results)
                with gunicorn("hello_app:app", {}, workers, log) as server:
                    assert http_status(server.port, "GET", "/") == 200
                    results["hello"], _ = measure(server, "GET", "/")
                with gunicorn("widget:create_app()", app_env, workers, log) as server:
                    assert http_status(server.port, "GET", COUNT_PATH) == 200
                    results["count"], _ = measure(server, "GET", COUNT_PATH)
                with gunicorn("widget:create_app()", app_env, workers, log) as server:
                    if number > 1:  # every solution counts once: make this round's own
                        solved_payloads(needed, payloads)
                    body = (
                        f'{{"name":"Check","email":"check-{number}@example.org",'
                        f'"consent":true,"altcha":"{_solved(0)}"}}'
                    )
                    check = f"192.0.2.{number}"
                    assert http_status(server.port, "POST", ENDORSE_PATH, body, check) == 201
                    assert http_status(server.port, "POST", ENDORSE_PATH, body, check) == 200
                    results["endorse"], start = measure(
                        server, "POST", ENDORSE_PATH, stored, payloads
                    )
                    time.sleep(1)  # let requests still in flight when the load stopped finish
                    endorse = results["endorse"]
                    rose = stored() - start
                    checks.append(
                        (
                            endorse.ok <= rose <= endorse.ok + args.connections,
                            f"round {number}: the count in Redis rose by {rose} during the "
                            f"measured endorse run for {endorse.ok} 2xx answers (at most "
                            f"{args.connections} more may have been in flight at the end)",
                        )
                    )
                with gunicorn("widget:create_app()", app_env, workers, log) as server:
                    assert http_status(server.port, "GET", CHALLENGE_PATH) == 200
                    results["challenge"], _ = measure(server, "GET", CHALLENGE_PATH)
                print(
                    f"  round {number}: "
                    + ", ".join(f"{k} {r.requests_per_s:.0f} req/s" for k, r in results.items()),
                    flush=True,
                )
            # Every counted endorsement went through the client tier: its day windows hold
            # one count for each (the check's second POST, the same solution again, is a
            # retry of the same request and uses no quota), and none reached the limit.
            day = [int(client.get(key) or 0) for key in client.scan_iter(DAY_KEYS, count=1000)]
            checks.append(
                (
                    sum(day) == stored() and max(day, default=0) < 50,
                    f"client tier: {len(day)} client addresses' day windows count {sum(day)} "
                    f"for {stored()} endorsements counted, at most {max(day, default=0)} "
                    "per address",
                )
            )
            with gunicorn("widget:create_app()", app_env, workers, log) as server:
                fresh = [_solved(n) for n in range(20)]
                trips, commands = round_trips(server.port, redis_url, fresh)
        log_text = log.read_text(errors="replace")
        tracebacks = log_text.count("Traceback")
        checks.append((tracebacks == 0, f"tracebacks in the gunicorn logs: {tracebacks}"))
        if tracebacks:
            first = log_text.index("Traceback")
            print("\nThe first traceback in the gunicorn logs:\n" + log_text[first : first + 3000])

    print(
        f"\n{'phase':<11}{'req/s':>8}{'requests':>10}{'non-2xx':>9}{'sock err':>9}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'server CPU us/req':>19}"
    )
    for number, results in enumerate(rounds, 1):
        for name, result in results.items():
            label = f"{name}" if args.rounds == 1 else f"{name} #{number}"
            p50 = f"{result.p50_ms:.1f}" if result.p50_ms is not None else "-"
            p99 = f"{result.p99_ms:.1f}" if result.p99_ms is not None else "-"
            cpu = f"{result.server_cpu_us:.0f}" if result.server_cpu_us is not None else "-"
            print(
                f"{label:<11}{result.requests_per_s:>8.0f}{result.requests:>10}"
                f"{result.non_2xx:>9}{result.socket_errors:>9}{p50:>9}{p99:>9}{cpu:>19}"
            )
    # Other work on the machine only ever slows a phase down: compare each phase's best.
    best = {name: max(results[name].requests_per_s for results in rounds) for name in rounds[0]}
    print()
    if args.rounds > 1:
        print("best of each phase: " + ", ".join(f"{k} {v:.0f} req/s" for k, v in best.items()))
    missed = False
    failed = any(r.non_2xx or r.socket_errors for results in rounds for r in results.values())
    for name, target in TARGETS.items():
        ratio = best[name] / best["hello"]
        verdict = "ok" if ratio >= target else "MISSED"
        verdict = "not comparable: requests failed" if failed else verdict
        missed |= ratio < target
        print(f"{name}/hello = {ratio:.3f}   (target >= {target:.2f})  {verdict}")
    print()
    if "challenge" in best:
        print(f"challenge/hello = {best['challenge'] / best['hello']:.3f}   (no target)")
    others = sorted({c for c in commands if c != "EVALSHA"})
    print(
        f"Redis round trips per endorsement: {trips:.2f} (EVALSHA of the endorse script); "
        f"other commands from the app meanwhile: {', '.join(others) or 'none'}"
    )
    print()
    for passed, text in checks:
        print(f"{'ok    ' if passed else 'FAILED'} {text}")
    if failed:
        print("WARNING: some requests failed; the figures above are not comparable.")
    if failed or not all(passed for passed, _ in checks):
        return 1
    return 2 if missed else 0


# -- --cluster: the same phases on a local Redis Cluster with 2 app instances ------------------


def pids_cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Phase:
    name: str
    result: Result
    app_cpu_us: float  # every gunicorn process of every instance, per answered request
    redis_cpu_us: float  # every redis-server process (replicas too), per answered request
    bytes_per_endorsement: float | None = None  # Redis memory used (masters), per counted
    statement_bytes: float | None = None  # MEMORY USAGE of the statement's keys, per counted


def cluster_main(args: argparse.Namespace) -> int:
    """Count and endorse on one Redis with one instance, then on a local cluster with two
    instances (each half the workers; the load split across them, a round-robin client:
    one wrk per instance, half the connections each); ratios cluster/single."""
    import redis

    from widget import gunicorn_conf

    sys.path.insert(0, str(BENCH_DIR.parent / "scripts"))
    from redis_cluster import LocalCluster

    workers: int = args.workers or gunicorn_conf.workers
    per_instance = max(1, workers // 2)
    if shutil.which("wrk") is None:
        print("bench/api.py --cluster needs wrk (Debian package wrk)")
        return 1
    print(
        f"{time.strftime('%Y-%m-%d')}  {machine()}\n"
        f"single: 1 instance x {workers} gevent workers on one redis-server; cluster: 2 "
        f"instances x {per_instance} workers on 3 masters + 3 replicas (WAIT 1, sharded "
        f"pub/sub); wrk, {args.connections} connections in all, {args.duration:g} s per "
        "phase; load generator, Redis and servers share the CPUs",
        flush=True,
    )
    checks: list[tuple[bool, str]] = []
    rounds: list[dict[str, Phase]] = []

    def run(
        servers: list[Server],
        method: str,
        path: str,
        redis_pids: list[int],
        after_warmup: Callable[[], None] = lambda: None,
    ) -> tuple[Result, float, float]:
        script = BENCH_DIR / "endorse.lua" if method == "POST" else None
        share = max(1, args.connections // len(servers))

        def load(seconds: float) -> list[Result]:
            with ThreadPool(len(servers)) as pool:
                return pool.map(
                    lambda srv: run_wrk(
                        f"http://127.0.0.1:{srv.port}{path}", seconds, share, 1, script
                    ),
                    servers,
                )

        load(args.warmup)
        time.sleep(1)
        after_warmup()
        app_before = sum(group_cpu_seconds(srv.pgid) or 0.0 for srv in servers)
        redis_before = pids_cpu_seconds(redis_pids)
        parts = load(args.duration)
        app_cpu = sum(group_cpu_seconds(srv.pgid) or 0.0 for srv in servers) - app_before
        redis_cpu = pids_cpu_seconds(redis_pids) - redis_before
        total = sum(p.requests for p in parts)
        merged = Result(
            sum(p.requests_per_s for p in parts),
            total,
            sum(p.non_2xx for p in parts),
            sum(p.socket_errors for p in parts),
            max((p.p50_ms for p in parts if p.p50_ms is not None), default=None),
            max((p.p99_ms for p in parts if p.p99_ms is not None), default=None),
        )
        per = 1e6 / max(total, 1)
        return merged, app_cpu * per, redis_cpu * per

    def memory(nodes: list[Any]) -> int:
        return sum(int(node.info("memory")["used_memory"]) for node in nodes)

    def statement_bytes(nodes: list[Any]) -> int:
        found = 0
        for node in nodes:
            for key in node.scan_iter(f"us:{{{STATEMENT}}}:*", count=1000):
                found += int(node.memory_usage(key, samples=0) or 0)
        return found

    def endorse_phase(
        name: str, servers: list[Server], nodes: list[Any], counter: Any, redis_pids: list[int]
    ) -> Phase:
        before: dict[str, int] = {}

        def snapshot() -> None:  # after the warm-up, right before the measured run
            before["count"] = int(counter.get(COUNT_KEY) or 0)
            before["memory"] = memory(nodes)
            before["statement"] = statement_bytes(nodes)

        result, app_us, redis_us = run(servers, "POST", ENDORSE_PATH, redis_pids, snapshot)
        before_count, before_memory = before["count"], before["memory"]
        before_statement = before["statement"]
        time.sleep(1)
        counted = int(counter.get(COUNT_KEY) or 0) - before_count
        checks.append(
            (
                result.ok <= counted <= result.ok + args.connections,
                f"{name}: the count rose by {counted} for {result.ok} 2xx answers",
            )
        )
        grew = memory(nodes) - before_memory
        statement = statement_bytes(nodes) - before_statement
        return Phase(
            name,
            result,
            app_us,
            redis_us,
            grew / counted if counted else None,
            statement / counted if counted else None,
        )

    with tempfile.TemporaryDirectory(prefix="undersign-bench-") as tmp:
        folder = Path(tmp)
        log = folder / "gunicorn.log"
        base_env = {
            "WIDGET_SECRET_KEY": SECRET,
            "WIDGET_ALLOWED_ORIGINS": ALLY,
            "WIDGET_ENDORSE_LIMIT": ENDORSE_LIMIT,
            "WIDGET_TRUSTED_PROXIES": "127.0.0.1",
            # The other tiers would refuse a bench (every request through one ally, from
            # a few /24s); the client tier stays the production one, and every request
            # comes from its own address.
            "WIDGET_NETWORK_LIMIT": "1000000/minute",
            "WIDGET_SOURCE_LIMIT": "1000000/minute",
            "WIDGET_STATEMENT_LIMIT": "1000000/minute",
            "WIDGET_POW": "off",  # wrk cannot solve challenges (see main)
        }
        (folder / "single").mkdir()
        cluster = LocalCluster(folder / "cluster", node_timeout_ms=5000)
        cluster.start()
        try:
            with redis_server(folder / "single") as (redis_url, redis_pid):
                single = redis.Redis.from_url(redis_url)
                cluster_client = cluster.client()
                masters = [cluster.node(port) for port in cluster.masters()]
                cluster_pids = list(cluster.pids.values())
                single_env = {**base_env, "WIDGET_REDIS_URL": redis_url}
                cluster_env = {
                    **base_env,
                    "WIDGET_REDIS_URL": cluster.url,
                    "WIDGET_REDIS_CLUSTER": "true",
                    "WIDGET_REDIS_WAIT_REPLICAS": "1",
                }
                for number in range(1, args.rounds + 1):
                    phases: dict[str, Phase] = {}
                    rounds.append(phases)
                    with gunicorn("widget:create_app()", single_env, workers, log) as server:
                        result, app_us, redis_us = run([server], "GET", COUNT_PATH, [redis_pid])
                        phases["single count"] = Phase("single count", result, app_us, redis_us)
                        phases["single endorse"] = endorse_phase(
                            "single endorse", [server], [single], single, [redis_pid]
                        )
                    with (
                        gunicorn("widget:create_app()", cluster_env, per_instance, log) as one,
                        gunicorn("widget:create_app()", cluster_env, per_instance, log) as two,
                    ):
                        result, app_us, redis_us = run([one, two], "GET", COUNT_PATH, cluster_pids)
                        phases["cluster count"] = Phase("cluster count", result, app_us, redis_us)
                        phases["cluster endorse"] = endorse_phase(
                            "cluster endorse", [one, two], masters, cluster_client, cluster_pids
                        )
                    print(
                        f"  round {number}: "
                        + ", ".join(
                            f"{k} {p.result.requests_per_s:.0f} req/s" for k, p in phases.items()
                        ),
                        flush=True,
                    )
        finally:
            cluster.stop()
        log_text = log.read_text(errors="replace")
        tracebacks = log_text.count("Traceback")
        checks.append((tracebacks == 0, f"tracebacks in the gunicorn logs: {tracebacks}"))

    print(
        f"\n{'phase':<17}{'req/s':>8}{'non-2xx':>9}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'app CPU us/req':>16}{'Redis CPU us/req':>18}{'B/endorsement':>15}{'statement B':>13}"
    )
    for phases in rounds:
        for name, phase in phases.items():
            r = phase.result
            memory_text = (
                f"{phase.bytes_per_endorsement:.0f}" if phase.bytes_per_endorsement else "-"
            )
            statement_text = f"{phase.statement_bytes:.0f}" if phase.statement_bytes else "-"
            print(
                f"{name:<17}{r.requests_per_s:>8.0f}{r.non_2xx + r.socket_errors:>9}"
                f"{r.p50_ms or 0:>8.1f}{r.p99_ms or 0:>8.1f}{phase.app_cpu_us:>16.0f}"
                f"{phase.redis_cpu_us:>18.0f}{memory_text:>15}{statement_text:>13}"
            )
    best = {
        name: max(phases[name].result.requests_per_s for phases in rounds) for name in rounds[0]
    }
    print()
    for kind in ("count", "endorse"):
        ratio = best[f"cluster {kind}"] / best[f"single {kind}"]
        print(f"cluster/single {kind} = {ratio:.2f}  (best of {args.rounds} round(s))")
    print("(memory: used_memory of the masters, and MEMORY USAGE of the statement's keys, per")
    print(" endorsement counted; the replicas hold as much again)")
    print()
    for passed, text in checks:
        print(f"{'ok    ' if passed else 'FAILED'} {text}")
    failed = any(p.result.non_2xx or p.result.socket_errors for ph in rounds for p in ph.values())
    return 1 if failed or not all(passed for passed, _ in checks) else 0


if __name__ == "__main__":
    raise SystemExit(main())
