"""Bench: where one endorsement's CPU goes, in-process, and how much of it the stack requires.

The companion of ``bench/api.py``'s endorse/hello ratio. It starts a throwaway Redis
(``bench/common.py``), builds the app with the settings of api.py's endorse phase (proof
of work on, all four tiers, behind a trusted proxy on loopback), solves the challenges it
needs first, then measures CPU time (``time.process_time``) per call, over ``--calls``
calls of each, with no HTTP server around them:

  hello          ``bench/hello_app.py`` through its WSGI app: a bare Flask request
  request        this app's own request handling: ``GET /healthz`` as a visitor sends it
                 through its WSGI app (Flask and every hook: CORS, the limiter's
                 bookkeeping, metrics, the origin and proxy checks), less the one Redis
                 ``PING`` that answer makes, timed on its own
  altcha         ``ProofOfWork.verify``: the ``altcha`` library's check of one solution
  email          ``email-validator``, as ``validation.checked_email`` calls it
  endorsement    one whole endorsement through this app's WSGI app (201)
  script call    inside those endorsements, the one call of the endorse script through
                 redis-py (packing its keys and arguments, the socket, the answer)

Then the sum of the parts no endorsement on this stack can skip (request, altcha, email,
script call), what the endorsement adds on top of them, and Redis's own CPU per run of
the script (``INFO commandstats``). Under gunicorn every request also pays the HTTP
handling and gevent: compare hello's CPU per request in api.py with hello's here.

    python bench/endorse_parts.py [--calls 3000] [--rounds 2]

Each part's figure is its best round (noise only slows).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis
from api import ALLY, ENDORSE_PATH, SECRET, STATEMENT, endorse_env, machine, solved_payloads
from common import redis_server

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def environ(path: str, body: bytes | None = None, client: str | None = None) -> dict[str, Any]:
    """A WSGI environ as gunicorn gives it; with ``client``, a request from that address
    through the loopback proxy, sent by the allied site."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": "POST" if body is not None else "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body or b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if body is not None:
        env.update(CONTENT_TYPE="application/json", CONTENT_LENGTH=str(len(body)))
    if client:
        env.update(HTTP_ORIGIN=ALLY, HTTP_X_FORWARDED_FOR=client)
    return env


class Requests:
    """Calls ``app`` once per call, each time with the next of ``environs``."""

    def __init__(self, app: WSGIApp, environs: list[dict[str, Any]]) -> None:
        self.app, self.environs, self.statuses = app, iter(environs), set[str]()

    def start_response(self, status: str, headers: Any, exc_info: Any = None) -> None:
        self.statuses.add(status)

    def __call__(self) -> None:
        answer = self.app(next(self.environs), self.start_response)
        b"".join(answer)
        getattr(answer, "close", lambda: None)()


def cpu_per_call(call: Callable[[], object], calls: int) -> float:
    """Microseconds of this process's CPU per call."""
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def address(i: int) -> str:
    """The ``i``-th client, each in its own /24 (as in api.py's endorse phase)."""
    return f"{10 + (i >> 16)}.{i >> 8 & 255}.{i & 255}.7"


def body(email: str, payload: str) -> bytes:
    return json.dumps(
        {"name": "Bench", "email": email, "consent": True, "altcha": payload}
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    calls, warm = args.calls, 200
    each = calls + warm
    print(machine())
    print(
        f"in-process CPU time per call, best of {args.rounds} rounds of {calls} calls each",
        flush=True,
    )

    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="undersign-bench-") as tmp:
        folder = Path(tmp)
        with redis_server(folder) as (redis_url, _):
            os.environ.update(endorse_env(redis_url))
            from hello_app import app as hello

            from widget import create_app
            from widget.pow import ProofOfWork
            from widget.validation import checked_email

            app = create_app()
            store = app.extensions["undersign.store"]
            run_script = store._durable  # the endorse script's one call (store.Store.endorse)
            script_cpu = [0.0]

            def timed_script(*a: Any, **k: Any) -> Any:
                started = time.process_time()
                try:
                    return run_script(*a, **k)
                finally:
                    script_cpu[0] += time.process_time() - started

            store._durable = timed_script
            verifier = ProofOfWork(SECRET, 1)
            ping = store.redis  # the app's own client and pool
            solved_payloads(each * args.rounds, folder / "payloads.txt")
            payloads = (folder / "payloads.txt").read_text().split()

            for number in range(args.rounds):
                mine = payloads[number * each : (number + 1) * each]
                clients = [address(number * each + i) for i in range(each)]
                checks = iter(mine)
                endorsements = [
                    environ(ENDORSE_PATH, body(f"bench-{c}@example.org", p), c)
                    for c, p in zip(clients, mine, strict=True)
                ]
                served = {
                    "hello": Requests(hello, [environ("/") for _ in range(each)]),
                    "healthz": Requests(app, [environ("/healthz", client=c) for c in clients]),
                    "endorsement": Requests(app, endorsements),
                }
                parts: dict[str, Callable[[], object]] = {
                    "ping": ping.ping,
                    "altcha": lambda checks=checks: verifier.verify(next(checks), STATEMENT),
                    "email": lambda: checked_email("bench-123@example.org"),
                    **served,
                }
                for name, call in parts.items():
                    for _ in range(warm):
                        call()
                    script_cpu[0] = 0.0
                    best[name] = min(best.get(name, math.inf), cpu_per_call(call, calls))
                    if name == "endorsement":
                        script = script_cpu[0] / calls * 1e6
                        best["script"] = min(best.get("script", math.inf), script)
                expected = {"hello": "200", "healthz": "200", "endorsement": "201"}
                for name, requests in served.items():
                    statuses = {status.split()[0] for status in requests.statuses}
                    if statuses != {expected[name]}:
                        print(f"{name} answered {sorted(statuses)}", file=sys.stderr)
                        return 1
            stats = redis.Redis.from_url(redis_url).info("commandstats")["cmdstat_evalsha"]

    request = best["healthz"] - best["ping"]
    required = request + best["altcha"] + best["email"] + best["script"]
    rows = [
        ("hello-world Flask request (bench/hello_app.py)", best["hello"]),
        ("GET /healthz through this app (one Redis PING)", best["healthz"]),
        ("a Redis PING through redis-py", best["ping"]),
        ("this app's request handling (the first less the second)", request),
        ("ALTCHA's check of one solution (ProofOfWork.verify)", best["altcha"]),
        ("email-validator (validation.checked_email)", best["email"]),
        ("the endorse script's call through redis-py", best["script"]),
        ("the required parts, summed", required),
        ("one whole endorsement (201)", best["endorsement"]),
        ("  of which the endorsement's own work", best["endorsement"] - required),
    ]
    for label, micros in rows:
        print(f"{label:56s} {micros:8.1f} us")
    redis_cpu = float(stats["usec_per_call"])
    print(f"{'Redis CPU per run of the script (INFO commandstats)':56s} {redis_cpu:8.1f} us")
    print(
        f"endorsement/hello in-process {best['endorsement'] / best['hello']:.1f}x, "
        f"the required parts/hello {required / best['hello']:.1f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
