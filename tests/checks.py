"""Assertions shared by the tests: problem+json shape, the store's state in Redis, waiting."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altcha
import requests
from redis import Redis
from werkzeug.test import TestResponse

PROBLEM_JSON = "application/problem+json"
STATEMENT = "dongelek-ystel"


def endorsements_url(statement: str = STATEMENT) -> str:
    return f"/api/v1/statements/{statement}/endorsements"


def person(n: int | str, **extra: Any) -> dict[str, Any]:
    """A valid endorsement body for person ``n``."""
    return {"name": f"Person {n}", "email": f"person{n}@example.org", "consent": True, **extra}


@dataclass(frozen=True)
class StoreState:
    """Everything an endorsement changes, read straight from Redis."""

    count: int
    log_length: int
    seen: int
    by_source: dict[str, int]


def store_state(redis: Redis, statement: str = STATEMENT) -> StoreState:
    key = f"us:{{{statement}}}:"
    return StoreState(
        count=int(redis.get(key + "count") or 0),
        log_length=int(redis.xlen(key + "log")),
        seen=len(seen_hmacs(redis, statement)),
        by_source={_text(k): int(v) for k, v in redis.hgetall(key + "by_source").items()},
    )


# What background sealing writes on its own schedule (the first checkpoint of an empty
# log, a re-signed one, the lease): no request's doing.
SEALING = (b":tlog:head", b":tlog:status", b":tree:", b":lease:")


def statement_keys(redis: Redis, statement: str, skip: tuple[bytes, ...] = ()) -> dict[bytes, Any]:
    """Every key of a statement with its DUMP, less what sealing writes and ``skip``."""
    keys = redis.scan_iter(f"us:{{{statement}}}:*")
    return {k: redis.dump(k) for k in keys if not any(s in k for s in SEALING + skip)}


def seen_hmacs(redis: Redis, statement: str = STATEMENT) -> list[str]:
    """Every email HMAC dedup holds, as hex: the buckets' binary ones (16 bytes) and the
    older hex ones."""
    key = f"us:{{{statement}}}:seen"
    found = [k.hex() for bucket in redis.scan_iter(key + ":*") for k in redis.hkeys(bucket)]
    return found + [_text(k) for k in redis.hkeys(key)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def response_parts(response: TestResponse | requests.Response) -> tuple[int, str, Any]:
    if isinstance(response, requests.Response):
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return response.status_code, content_type, response.json()
    return response.status_code, response.mimetype or "", response.get_json(force=True)


def assert_problem(response: TestResponse | requests.Response, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with this status; returns its body."""
    code, content_type, body = response_parts(response)
    assert code == status, body
    assert content_type == PROBLEM_JSON
    assert isinstance(body, dict)
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"].startswith("urn:undersign:problem:")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert response.headers.get("Cache-Control") == "no-store"
    return body


def cors_headers(response: TestResponse | requests.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def public_count(base_url: str, statement: str = STATEMENT) -> int:
    """The count a running service answers at ``/api/v1/statements/<id>/count``."""
    url = f"{base_url}/api/v1/statements/{statement}/count"
    return int(requests.get(url, timeout=5).json()["count"])


def wait_until(check: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``check`` every 10 ms; fail the test if it is not true within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def stable_timeline(timeline: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
    """A statement's timeline without its empty buckets: those slide as the clock turns,
    the filled ones stay keyed by their start."""
    return {name: [b for b in series if b[1]] for name, series in timeline.items()}


def clear_of_hour_end(margin: float = 60.0) -> None:
    """Wait for the next hour when this one ends within ``margin`` seconds: a test that
    writes the past 24 hours' buckets needs "now" to stay in the same hour."""
    left = 3600 - time.time() % 3600
    if left < margin:
        time.sleep(left + 0.05)


def utc_minute() -> str:
    """The current UTC minute as the transparency log writes it."""
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())


def write_statement(folder: Path, statement_id: str, title: str = "A second statement") -> Path:
    """A minimal statement file in ``folder`` (for ``WIDGET_STATEMENTS_DIR``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{statement_id}.md"
    path.write_text(
        f'+++\nid = "{statement_id}"\ntitle = "{title}"\ngoal = 100\n+++\n\nWe agree.\n',
        encoding="utf-8",
    )
    return path


def solve(challenge: dict[str, Any]) -> str:
    """Solve an ALTCHA challenge with the official library, as a browser's widget would,
    and return the payload the API takes as ``altcha``."""
    parsed = altcha.Challenge.from_dict(challenge)
    solution = altcha.solve_challenge(parsed)
    assert solution is not None, "the challenge could not be solved"
    return str(altcha.Payload(parsed, solution).to_base64())


def altcha_for(base_url: str, statement: str = STATEMENT) -> str:
    """A solved proof of work for one endorsement on a running server."""
    url = f"{base_url}/api/v1/statements/{statement}/challenge"
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return solve(response.json())


RECEIPT_SECRET = re.compile(r"[A-Za-z0-9_-]{22,}")


def assert_counted(body: Any, count: int) -> dict[str, str]:
    """A 201 body: counted, the new count, and a receipt (a secret of at least 128 random
    bits, and the receipt page's link with the secret after ``#``). Returns the receipt."""
    assert isinstance(body, dict), body
    assert {k: body.get(k) for k in ("status", "count")} == {"status": "counted", "count": count}
    assert set(body) == {"status", "count", "receipt"}, body
    receipt: dict[str, str] = body["receipt"]
    assert RECEIPT_SECRET.fullmatch(receipt["secret"]), receipt
    assert receipt["url"].endswith(f"/receipt#{receipt['secret']}"), receipt
    return receipt


def legacy_endorse(redis: Redis, statement: str, email_hmac: str, name: str, **fields: str) -> str:
    """An endorsement as releases before the transparency log stored it (the record entry
    carried the HMAC, name and country; dedup was one hash of hex HMACs)."""
    key = f"us:{{{statement}}}:"
    values = {"h": email_hmac, "n": name, "c": "", "s": "direct", "p": "0", **fields}
    entry_id = redis.xadd(key + "log", values)  # type: ignore[arg-type]
    redis.hset(key + "seen", email_hmac, entry_id)
    redis.incr(key + "count")
    redis.hincrby(key + "by_source", values["s"], 1)
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def stored_names(redis: Redis, statement: str = STATEMENT) -> list[str]:
    """The names the record holds, oldest first (read as the store reads them)."""
    from widget.store import Store

    return [entry.name for entry in Store(redis).log(statement)]


def count_subscription(redis: Any, store: Any, statement: str = STATEMENT) -> Any:
    """A pub/sub connection that hears ``statement``'s count messages as the store sends
    them: ``SUBSCRIBE`` (classic), or ``SSUBSCRIBE`` on the node of its slot (sharded, on
    a cluster). Its first message is the subscription's confirmation."""
    channel = store.channel(statement)
    if not store.sharded:
        pubsub = redis.pubsub()
        pubsub.subscribe(channel)
        return pubsub
    node = redis.get_node_from_key(channel)
    pubsub = redis.get_redis_connection(node).pubsub()
    pubsub.ssubscribe(channel)
    return pubsub
