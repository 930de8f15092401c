"""A test double of the service's transparency-log API, built from widget.tlog alone.

It serves one statement's log over a stdlib ``http.server`` on a free loopback port, to the
exact contract ``undersign verify`` relies on (see ``widget/verify.py``). Its tree is kept
the way the Redis store is meant to keep it: the levels ``Layout`` stores, each one byte
string of 32-byte hashes, read in spans. Tests (and ``bench/verify.py``) change what it
serves to play a dishonest service: ``served_lines`` (what ``/log`` answers), ``note`` (the
signed checkpoint the checkpoint endpoint serves; receipts carry ``latest``), ``vkey``,
``live_count``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from widget.tlog import tree
from widget.tlog.entries import (
    LogLine,
    Tally,
    commitment,
    endorse_entry,
    sha256_hex,
    strike_entry,
    unstrike_entry,
    withdraw_entry,
)
from widget.tlog.note import (
    Checkpoint,
    SignerKey,
    checkpoint_origin,
    log_key_name,
    sign_checkpoint,
)

HOST = "undersign.test"
STATEMENT = "clean-air"
SIGNER = SignerKey(log_key_name(HOST), hashlib.sha256(b"undersign test log key").digest())
TEXT = sha256_hex("Clean air for our city.\n")


def secret(i: int) -> str:
    return f"receipt-secret-{i}"


def synthetic_log(n: int, seed: int = 0) -> list[LogLine]:
    """``n`` entries: mostly endorsements, with strikes, unstrikes and withdrawals."""
    rng = random.Random(seed)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    endorsed: list[int] = []
    out: list[LogLine] = []
    for i in range(n):
        at = start + timedelta(seconds=7 * i)
        roll = rng.random()
        if endorsed and roll < 0.04:
            out.append(strike_entry(i, at, target=rng.choice(endorsed), reason="spam"))
        elif endorsed and roll < 0.06:
            out.append(unstrike_entry(i, at, target=rng.choice(endorsed)))
        elif endorsed and roll < 0.08:
            out.append(withdraw_entry(i, at, target=rng.choice(endorsed)))
        else:
            endorsed.append(i)
            out.append(
                endorse_entry(
                    i,
                    at,
                    country=rng.choice(["KZ", "DE", "FR", None]),
                    source=rng.choice(["direct", "https://ally.example"]),
                    name=rng.choice(["Aigerim", "Zhanna", "Ерлан", None]),
                    text=TEXT,
                    commit=commitment(secret(i)),
                )
            )
    return out


class LogDouble:
    def __init__(
        self,
        lines: list[bytes],
        *,
        signer: SignerKey = SIGNER,
        statement_id: str = STATEMENT,
        layout: tree.Layout | None = None,
    ) -> None:
        self.signer = signer
        self.statement_id = statement_id
        self.origin = checkpoint_origin(signer.name, statement_id)
        self.layout = layout or tree.Layout()
        self.levels: dict[int, bytearray] = {}
        self.frontier = tree.Frontier()
        self.lines: list[bytes] = []
        self.tally = Tally()
        self.commits: dict[str, int] = {}
        self.append(lines)
        self.vkey = signer.verifier().vkey
        self.served_lines: list[bytes] = self.lines  # replace to serve something else
        self.live_count: int | None = None
        self.requests: list[str] = []

    # -- the log, kept as the store would ----------------------------------------------------

    def append(self, lines: list[bytes]) -> None:
        """Seal ``lines`` (canonical entry lines) and sign a checkpoint of the new size."""
        self.frontier, created = tree.append_leaves(self.frontier, map(tree.leaf_hash, lines))
        for level, index, h in self.layout.keep(created):
            stored = self.levels.setdefault(level, bytearray())
            assert len(stored) == index * tree.HASH_SIZE, "levels grow in order"
            stored += h
        for line in lines:
            entry = json.loads(line)
            self.tally.apply(entry)
            if entry["kind"] == "endorse":
                self.commits[entry["commit"]] = entry["i"]
        self.lines.extend(lines)
        self.note = self.latest = self.sign(len(self.lines))

    @property
    def size(self) -> int:
        return len(self.lines)

    def getter(self, nodes: list[tree.Node]) -> tree.GetNode:
        """One batched read of every stored hash ``nodes`` need (GETRANGEs in one pipeline)."""
        spans = self.layout.spans(nodes)
        size = tree.HASH_SIZE
        blobs = [
            bytes(self.levels[s.level][s.start * size : (s.start + s.length) * size]) for s in spans
        ]
        return self.layout.getter(spans, blobs)

    def root(self, size: int) -> bytes:
        return tree.root(size, self.getter(tree.root_nodes(size)))

    def sign(self, size: int) -> str:
        return sign_checkpoint(Checkpoint(self.origin, size, self.root(size)), self.signer)

    def inclusion(self, index: int, size: int) -> list[str]:
        proof = tree.inclusion_proof(
            index, size, self.getter(tree.inclusion_proof_nodes(index, size))
        )
        return [base64.b64encode(h).decode() for h in proof]

    def consistency(self, old: int, new: int) -> list[str]:
        proof = tree.consistency_proof(
            old, new, self.getter(tree.consistency_proof_nodes(old, new))
        )
        return [base64.b64encode(h).decode() for h in proof]

    def receipt(self, commit: str) -> dict[str, Any] | None:
        index = self.commits.get(commit)
        if index is None:
            return None
        return {
            "index": index,
            "status": self.tally.status(index),
            "checkpoint": self.latest,
            "inclusion": {"size": self.size, "hashes": self.inclusion(index, self.size)},
        }

    # -- HTTP ------------------------------------------------------------------------------

    def answer(self, path: str, query: dict[str, int]) -> tuple[int, str, bytes]:
        prefix = f"/api/v1/statements/{self.statement_id}/"
        if path == "/api/v1/log/key":
            return 200, "text/plain", (self.vkey + "\n").encode()
        if not path.startswith(prefix):
            return 404, "application/problem+json", b'{"detail": "no such statement"}'
        route = path[len(prefix) :]
        if route == "checkpoint":
            return 200, "text/plain; charset=utf-8", self.note.encode()
        if route == "count":
            count = self.tally.count if self.live_count is None else self.live_count
            return (
                200,
                "application/json",
                json.dumps({"id": self.statement_id, "count": count}).encode(),
            )
        if route == "log":
            start, limit = query["start"], query["limit"]
            if not 1 <= limit <= 1000:
                return 400, "application/problem+json", b'{"detail": "limit is 1-1000"}'
            body = b"".join(line + b"\n" for line in self.served_lines[start : start + limit])
            return 200, "application/jsonl", body
        if route == "proof/inclusion":
            index, size = query["index"], query["size"]
            doc: dict[str, Any] = {
                "index": index,
                "size": size,
                "hashes": self.inclusion(index, size),
            }
            return 200, "application/json", json.dumps(doc).encode()
        if route == "proof/consistency":
            old, new = query["from"], query["to"]
            doc = {"from": old, "to": new, "hashes": self.consistency(old, new)}
            return 200, "application/json", json.dumps(doc).encode()
        if route.startswith("receipts/"):
            receipt = self.receipt(route.removeprefix("receipts/"))
            if receipt is None:
                return 404, "application/problem+json", b'{"detail": "no such receipt"}'
            return 200, "application/json", json.dumps(receipt).encode()
        return 404, "application/problem+json", b'{"detail": "not found"}'

    @contextmanager
    def serve(self) -> Iterator[str]:
        """Serve on a free loopback port; yields the base URL."""
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                double.requests.append(self.path)
                query = {k: int(v[0]) for k, v in parse_qs(url.query).items()}
                status, content_type, body = double.answer(url.path, query)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
