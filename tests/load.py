"""Firing many HTTP requests at once, from threads of this process or of child processes.

Kept free of app imports so that ``multiprocessing`` children (spawned, not forked) start
quickly; each child waits for a shared wall-clock moment so all requests land together.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests


@dataclass(frozen=True)
class Reply:
    """What one POST got back: the fields the tests look at."""

    email: str
    status: int
    content_type: str
    body: Any
    retry_after: str | None


def post_all(
    url: str,
    bodies: list[dict[str, Any]],
    threads: int = 25,
    start_at: float = 0.0,
    headers: dict[str, str] | None = None,
) -> list[Reply]:
    """POST each body as JSON from a pool of threads (one connection each)."""
    local = threading.local()
    sessions: list[requests.Session] = []

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
        s: requests.Session = local.session
        return s

    def post(body: dict[str, Any]) -> Reply:
        response = session().post(url, json=body, headers=headers, timeout=30)
        content_type = response.headers.get("Content-Type", "").split(";")[0]
        return Reply(
            email=str(body.get("email", "")),
            status=response.status_code,
            content_type=content_type,
            body=response.json(),
            retry_after=response.headers.get("Retry-After"),
        )

    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    try:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(post, bodies))
    finally:
        # Idle kept-alive connections would hold up gunicorn's graceful shutdown.
        for s in sessions:
            s.close()


def post_all_args(args: tuple[str, list[dict[str, Any]], int, float]) -> list[Reply]:
    """``post_all`` with one argument, for ``Pool.map``."""
    return post_all(*args)


def with_solved_challenges(
    challenge_url: str, bodies: list[dict[str, Any]], threads: int = 8
) -> list[dict[str, Any]]:
    """Each body with its own solved proof of work (ALTCHA's official solver), fetched and
    solved before any request is timed."""
    import altcha

    def solved(body: dict[str, Any]) -> dict[str, Any]:
        challenge = altcha.Challenge.from_dict(requests.get(challenge_url, timeout=30).json())
        solution = altcha.solve_challenge(challenge)
        assert solution is not None
        return {**body, "altcha": altcha.Payload(challenge, solution).to_base64()}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(solved, bodies))


def solve_then_post_args(
    args: tuple[str, str, list[dict[str, Any]], int, float],
) -> list[Reply]:
    """In a child process: solve a challenge for each body, then ``post_all`` them at
    ``start_at``."""
    url, challenge_url, bodies, threads, start_at = args
    return post_all(url, with_solved_challenges(challenge_url, bodies), threads, start_at)
