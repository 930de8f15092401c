"""Reading and checking a service's transparency log the way an outside auditor would:
over its public API only, with ``widget.tlog``'s pure functions. Works with a Flask test
client or a real server (``getter``/``http_getter`` make the one-argument ``get``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from flask.testing import FlaskClient

from widget.tlog import tree
from widget.tlog.entries import Tally, commitment, parse_line
from widget.tlog.note import Checkpoint, VerifierKey, checkpoint_origin, open_note

Get = Callable[[str], bytes]
STATEMENT = "dongelek-ystel"


def getter(client: FlaskClient) -> Get:
    def get(path: str) -> bytes:
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.get_data())
        return response.get_data()

    return get


def http_getter(base_url: str) -> Get:
    session = requests.Session()

    def get(path: str) -> bytes:
        response = session.get(base_url + path, timeout=30)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.content

    return get


def api(statement: str, path: str) -> str:
    return f"/api/v1/statements/{statement}/{path}"


def verifier_key(get: Get) -> VerifierKey:
    return VerifierKey.parse(get("/api/v1/log/key").decode().strip())


@dataclass(frozen=True)
class Head:
    """A signed checkpoint, opened with the log's key."""

    checkpoint: Checkpoint
    note: str

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root_hash


def open_head(note: str, key: VerifierKey, statement: str) -> Head:
    checkpoint = Checkpoint.parse(open_note(note, [key]).text)
    assert checkpoint.origin == checkpoint_origin(key.name, statement)
    return Head(checkpoint, note)


def head(get: Get, statement: str, key: VerifierKey) -> Head:
    return open_head(get(api(statement, "checkpoint")).decode(), key, statement)


def lines(get: Get, statement: str, size: int, page: int = 1000) -> list[bytes]:
    """The first ``size`` lines, page by page, each page ending in a newline."""
    out: list[bytes] = []
    while len(out) < size:
        limit = min(page, size - len(out))
        body = get(api(statement, f"log?start={len(out)}&limit={limit}"))
        assert body.endswith(b"\n")
        got = body.split(b"\n")[:-1]
        assert len(got) == limit, (len(out), limit, len(got))
        out += got
    return out


@dataclass(frozen=True)
class Audited:
    head: Head
    lines: list[bytes]
    entries: list[dict[str, Any]]
    tally: Tally


def audit(get: Get, statement: str = STATEMENT, key: VerifierKey | None = None) -> Audited:
    """The latest checkpoint, signature checked, and every line it covers: canonical, well
    formed, numbered without gap or repeat, hashing to its root; and the recount."""
    key = key or verifier_key(get)
    signed = head(get, statement, key)
    found = lines(get, statement, signed.size)
    entries = [parse_line(line, i) for i, line in enumerate(found)]
    tally = Tally()
    for entry in entries:
        tally.apply(entry)
    assert tree.root_from_leaf_hashes([tree.leaf_hash(x) for x in found]) == signed.root
    return Audited(signed, found, entries, tally)


def b64s(values: list[str]) -> list[bytes]:
    return [base64.b64decode(v) for v in values]


def check_receipt(get: Get, statement: str, secret: str, key: VerifierKey) -> dict[str, Any]:
    """The receipt's answer, with its inclusion proof checked against its signed
    checkpoint and its line carrying the secret's commitment."""
    commit = commitment(secret)
    receipt = json.loads(get(api(statement, f"receipts/{commit}")))
    signed = open_head(receipt["checkpoint"], key, statement)
    index = receipt["index"]
    assert receipt["inclusion"]["size"] == signed.size
    line = get(api(statement, f"log?start={index}&limit=1")).removesuffix(b"\n")
    assert json.loads(line)["commit"] == commit
    tree.verify_inclusion(
        index,
        signed.size,
        tree.leaf_hash(line),
        b64s(receipt["inclusion"]["hashes"]),
        signed.root,
    )
    return dict(receipt)


def check_consistency(get: Get, statement: str, old: Head, new: Head) -> None:
    if old.size == new.size:
        assert old.root == new.root
        return
    if old.size == 0:
        return
    proof = json.loads(get(api(statement, f"proof/consistency?from={old.size}&to={new.size}")))
    assert (proof["from"], proof["to"]) == (old.size, new.size)
    tree.verify_consistency(old.size, new.size, old.root, new.root, b64s(proof["hashes"]))
