"""Blueprint for the public transparency log: anyone can download it, recount it and check
it against a signed checkpoint; endorsers check and withdraw their own endorsement.

* ``GET /api/v1/log/key``: the log's verifier key (C2SP note ``vkey`` form), one line.
* ``GET /api/v1/statements/<id>/checkpoint``: the latest signed checkpoint (C2SP signed
  note whose body is a C2SP tlog-checkpoint).
* ``GET .../log?start=S&limit=L``: entries as RFC 8785 canonical JSON lines (JSON Lines).
* ``GET .../proof/inclusion?index=I&size=N`` and ``.../proof/consistency?from=M&to=N``:
  RFC 9162 proofs, base64.
* ``GET .../receipts/<commit>``: an endorsement's index, status and inclusion proof.
* ``GET .../texts/<sha256>``: the statement text version an endorser was shown.
* ``POST .../withdrawals``: take an endorsement back with its receipt secret.

The log key comes from ``WIDGET_LOG_KEY`` (a base64 Ed25519 seed); without it the service
makes one once and keeps it in Redis encrypted under a key derived from
``WIDGET_SECRET_KEY``, never in clear. Every process seals (``tlog.sealer``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import threading
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from redis.exceptions import RedisError

from .api import get_hub, get_statement, read_json_body
from .config import ConfigError
from .db import get_store
from .errors import Problem
from .privacy import derive_key
from .store import LogEntry, LogNotReady, Store
from .tlog import tree
from .tlog.entries import commitment
from .tlog.note import SignerKey, generate_seed, log_key_name
from .tlog.sealer import Sealer
from .validation import first_name

bp = Blueprint("transparency", __name__, url_prefix="/api/v1")

PAGE_MAX = 1000
HEX64 = re.compile(r"[0-9a-f]{64}")
SEAL_INTERVAL = 1.0  # seconds: entries are sealed well within the promised 5
IMMUTABLE = "public, max-age=31536000, immutable"
JSONL = "application/jsonl"


# -- the log key --------------------------------------------------------------------------


def public_host(config: Any) -> str:
    """The host that names the log key: ``WIDGET_PUBLIC_URL``'s, else ``localhost``."""
    url = str(config.get("PUBLIC_URL") or "")
    return urlsplit(url).netloc.lower() if url else "localhost"


class LogKey:
    """The log key: ``WIDGET_LOG_KEY``, or the one this service made for itself, kept in
    Redis encrypted under a key derived from ``WIDGET_SECRET_KEY`` (never in clear).

    Every process offers the encrypted key it signs with again now and then (``keep``): if
    Redis lost it (a flush, a restore from before it existed), the processes agree again on
    the first one offered, rather than each signing with a key of its own."""

    def __init__(self, config: Any, store: Store) -> None:
        self.config = config
        self.store = store
        self.name = log_key_name(public_host(config))
        self._kept: bytes | None = None
        self._refused: ConfigError | None = None

    def load(self) -> SignerKey:
        seed = str(self.config.get("LOG_KEY") or "")
        if seed:
            return self._signer(seed)
        if self._refused is not None:
            # Found a key it cannot open: never offer one of its own (should Redis lose
            # that key, a process with the wrong secret must not put its key in its place).
            raise self._refused
        nonce = secrets.token_bytes(12)
        offered = nonce + self._box().encrypt(nonce, base64.b64decode(generate_seed()), b"log-key")
        return self._open(self.store.log_key(offered))

    def keep(self) -> SignerKey | None:
        """Offer the kept key again; the key Redis keeps now if it is not ours."""
        if self._kept is None:
            return None
        kept = self.store.log_key(self._kept)
        return None if kept == self._kept else self._open(kept)

    def _box(self) -> AESGCM:
        return AESGCM(derive_key(self.config["SECRET_KEY"], "log-key"))

    def _open(self, kept: bytes) -> SignerKey:
        try:
            seed = self._box().decrypt(kept[:12], kept[12:], b"log-key")
        except InvalidTag:
            self._refused = ConfigError(
                "the log key kept in Redis was sealed with another WIDGET_SECRET_KEY: restore "
                "that secret, or set WIDGET_LOG_KEY to the log's key"
            )
            raise self._refused from None
        signer = self._signer(base64.b64encode(seed).decode())
        self._kept = kept
        return signer

    def _signer(self, seed: str) -> SignerKey:
        try:
            return SignerKey.from_base64_seed(self.name, seed)
        except (ValueError, binascii.Error) as exc:
            raise ConfigError(f"WIDGET_LOG_KEY: {exc}") from None


def load_signer(config: Any, store: Store) -> SignerKey:
    """``WIDGET_LOG_KEY``, or the key this service made for itself (kept encrypted)."""
    return LogKey(config, store).load()


def get_sealer() -> Sealer:
    sealer: Sealer = current_app.extensions["undersign.sealer"]
    return sealer


# -- the public name rule, for log lines and recent endorsers -------------------------------


def shown_name(entry: LogEntry) -> str | None:
    return first_name(entry.name) if entry.public else None


# -- API ------------------------------------------------------------------------------------


def _int_arg(name: str, default: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None and default is not None:
        return default
    try:
        if raw is None or not raw.isascii() or not raw.isdigit():
            raise ValueError(raw)
        return int(raw)
    except ValueError:
        raise Problem(
            400,
            "bad-argument",
            "Bad argument",
            f"{name} must be a whole number, written in digits.",
        ) from None


def out_of_range(detail: str) -> Problem:
    return Problem(422, "out-of-range", "Out of range", detail)


def sealed_size(statement_id: str) -> tuple[int, str]:
    """The sealed size and checkpoint, sealing now if there is none yet."""
    size, note = get_store().log_head(statement_id)
    if note is None:
        get_sealer().seal(statement_id)
        size, note = get_store().log_head(statement_id)
    if note is None:
        raise Problem(503, "log-unsealed", "Log not sealed yet", "Try again in a moment.")
    return size, note


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def text_response(body: str, mimetype: str, cache: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Cache-Control"] = cache
    response.vary.add("Origin")
    return response


@bp.get("/log/key")
def log_key() -> Response:
    return text_response(get_sealer().signer.verifier().vkey + "\n", "text/plain", "no-cache")


@bp.get("/statements/<statement_id>/checkpoint")
def checkpoint(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    _, note = sealed_size(statement.id)
    return text_response(note, "text/plain", "no-cache")


@bp.get("/statements/<statement_id>/log")
def log_page(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    start = _int_arg("start", 0)
    limit = _int_arg("limit", PAGE_MAX)
    if not 1 <= limit <= PAGE_MAX:
        raise out_of_range(f"limit must be 1 to {PAGE_MAX}.")
    size, _ = sealed_size(statement.id)
    lines = get_store().log_lines(statement.id, start, min(size, start + limit))
    body = b"".join(line + b"\n" for line in lines)
    # Only sealed entries are served, and an entry never changes: a full page is final.
    cache = IMMUTABLE if len(lines) == limit else "public, max-age=5"
    response = Response(body, mimetype=JSONL)
    response.headers["Cache-Control"] = cache
    response.vary.add("Origin")
    return response


def _proof(statement_id: str, nodes: list[tuple[int, int]], make: Any) -> list[str]:
    get = get_sealer().get_node(statement_id, nodes)
    return [b64(h) for h in make(get)]


@bp.get("/statements/<statement_id>/proof/inclusion")
def inclusion(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    index, size = _int_arg("index"), _int_arg("size")
    sealed, _ = sealed_size(statement.id)
    if not 0 < size <= sealed:
        raise out_of_range(f"size must be 1 to {sealed}, the sealed size.")
    if index >= size:
        raise out_of_range(f"index must be below size ({size}).")
    hashes = _proof(
        statement.id,
        tree.inclusion_proof_nodes(index, size),
        lambda get: tree.inclusion_proof(index, size, get),
    )
    return text_json({"index": index, "size": size, "hashes": hashes})


@bp.get("/statements/<statement_id>/proof/consistency")
def consistency(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    old, new = _int_arg("from"), _int_arg("to")
    sealed, _ = sealed_size(statement.id)
    if not 0 < old <= new <= sealed:
        raise out_of_range(f"from and to must satisfy 1 <= from <= to <= {sealed}.")
    hashes = _proof(
        statement.id,
        tree.consistency_proof_nodes(old, new),
        lambda get: tree.consistency_proof(old, new, get),
    )
    return text_json({"from": old, "to": new, "hashes": hashes})


def text_json(body: dict[str, Any]) -> Response:
    response = jsonify(body)
    response.headers["Cache-Control"] = IMMUTABLE  # a proof between two sizes never changes
    response.vary.add("Origin")
    return response


def not_found(detail: str) -> Problem:
    return Problem(404, "receipt-not-found", "Receipt not found", detail)


@bp.get("/statements/<statement_id>/receipts/<commit>")
def receipt(statement_id: str, commit: str) -> Response:
    statement = get_statement(statement_id)
    if not HEX64.fullmatch(commit):
        raise not_found("A receipt's commitment is 64 lowercase hex digits.")
    found = get_store().receipt(statement.id, commit)
    size, note = sealed_size(statement.id)
    if found is None or found.index >= size:
        raise not_found("No sealed endorsement has this receipt (yet: sealing takes seconds).")
    hashes = _proof(
        statement.id,
        tree.inclusion_proof_nodes(found.index, size),
        lambda get: tree.inclusion_proof(found.index, size, get),
    )
    response = jsonify(
        {
            "index": found.index,
            "status": get_store().sealed_status(statement.id, found.index),
            "checkpoint": note,
            "inclusion": {"size": size, "hashes": hashes},
        }
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/statements/<statement_id>/texts/<digest>")
def text_version(statement_id: str, digest: str) -> Response:
    statement = get_statement(statement_id)
    found = get_store().text_version(statement.id, digest) if HEX64.fullmatch(digest) else None
    if found is None:
        raise Problem(
            404, "text-not-found", "Text not found", "No version of this statement has that hash."
        )
    return text_response(found, "text/markdown", IMMUTABLE)


@bp.post("/statements/<statement_id>/withdrawals")
def withdraw(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    body = read_json_body("the withdrawal")
    secret = body.get("secret") if isinstance(body, dict) else None
    if not isinstance(secret, str) or not 16 <= len(secret) <= 200:
        raise Problem(
            422,
            "invalid-withdrawal",
            "Invalid withdrawal",
            "Send the receipt's secret as 'secret'.",
            errors={"secret": "The receipt's secret, as in the receipt link after '#'."},
        )
    try:
        result = get_store().withdraw(statement.id, commitment(secret))
    except LogNotReady:
        raise log_not_ready() from None
    if result is None:
        raise not_found("No endorsement has this receipt.")
    status, count = result
    get_hub().heard(statement.id, count)
    response = jsonify({"status": status, "count": count})
    response.headers["Cache-Control"] = "no-store"
    return response


def log_not_ready() -> Problem:
    return Problem(
        503,
        "log-preparing",
        "Log being prepared",
        "The transparency log is being prepared after an upgrade; nothing was recorded. "
        "Try again in a few seconds.",
        headers={"Retry-After": "5"},
    )


# -- wiring ---------------------------------------------------------------------------------


class SealerRunner:
    """Starts the process's sealing loop once per process (after gunicorn's fork)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._pid = 0
        self._lock = threading.Lock()

    def ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            app = self.app
            threading.Thread(
                target=app.extensions["undersign.sealer"].run,
                args=(
                    list(app.extensions["undersign.statements"].ids()),
                    app.extensions["undersign.live"].stopping,
                    SEAL_INTERVAL,
                    lambda statement_id: prepare_log(app, statement_id),
                ),
                name="undersign-sealer",
                daemon=True,
            ).start()


def prepare_log(app: Flask, statement_id: str) -> bool:
    """Keep the statement's text versions and open its log (on upgrade, sealing in the
    endorsements made before it); True once it is open."""
    store: Store = app.extensions["undersign.store"]
    statement = app.extensions["undersign.statements"].get(statement_id)
    store.keep_texts(statement.id, {t.sha256: t.markdown for t in statement.texts.values()})
    sealer: Sealer = app.extensions["undersign.sealer"]
    return sealer.prepare(
        statement.id, statement.original.sha256, shown_name, app.config["SECRET_KEY"]
    )


def load_key_early(sealer: Sealer) -> None:
    """Every process takes the log key at startup, so that all sign with the one kept in
    Redis when they started (and offer it again should Redis lose it). A key kept under
    another ``WIDGET_SECRET_KEY`` is an error on every use of the log instead."""
    try:
        sealer.signer  # noqa: B018 - loads it
    except ConfigError as exc:
        logging.getLogger(__name__).error("transparency log: %s", exc)


def init_app(app: Flask) -> None:
    store: Store = app.extensions["undersign.store"]
    keys = LogKey(app.config, store)
    sealer = Sealer(store, keys.load, keep_key=keys.keep)
    app.extensions["undersign.sealer"] = sealer
    runner = SealerRunner(app)
    app.before_request(runner.ensure_running)
    app.register_blueprint(bp)
    try:  # most statements open at once; the sealing loop retries the others
        load_key_early(sealer)
        for statement_id in app.extensions["undersign.statements"].ids():
            prepare_log(app, statement_id)
    except RedisError:
        pass
