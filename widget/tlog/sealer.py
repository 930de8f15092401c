"""Sealing the transparency log: its Merkle tree and signed checkpoint, kept in Redis.

The log's entries are appended by the store's scripts, in the same atomic step as what
they record, so their order is already fixed. Sealing only adds what can be computed from
them: the tree's stored hashes (``Layout``: every fourth level, one Redis string per level)
and a checkpoint signed with the service's log key. Every process may seal; a short lease
keeps them from doing the same work twice, and the store refuses a seal when the tree moved
meanwhile, so there is one tree whatever the number of processes and instances.

On upgrade, ``prepare`` puts the endorsements and strikes made before the log existed into
it, in their original order, before anything new may be appended.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from redis.exceptions import RedisError

from ..store import LogEntry, Store
from .entries import commitment, endorse_template, strike_entry
from .note import Checkpoint, SignerKey, checkpoint_origin, sign_checkpoint
from .tree import Frontier, Layout, append_leaves, leaf_hash, root_nodes

log = logging.getLogger(__name__)

LAYOUT = Layout(stride=4)
BATCH = 5000  # lines per seal: a big backlog is sealed in several steps
LEASE_SECONDS = 10.0
PREPARE_CHUNK = 1000

PublicName = Callable[[LogEntry], str | None]


class Sealer:
    """Seals one service's statement logs with its log key, which ``load_key`` gives when
    first needed (it may have to ask Redis)."""

    def __init__(
        self,
        store: Store,
        load_key: Callable[[], SignerKey],
        layout: Layout = LAYOUT,
        keep_key: Callable[[], SignerKey | None] | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.token = secrets.token_hex(8)
        self._load_key = load_key
        self._keep_key = keep_key
        self._signer: SignerKey | None = None
        self._lock = threading.Lock()

    @property
    def signer(self) -> SignerKey:
        if self._signer is None:
            with self._lock:
                if self._signer is None:
                    self._signer = self._load_key()
        return self._signer

    def keep_key(self) -> None:
        """Redis may have lost the key kept there: offer ours again, or take the one kept
        now (another process offered it first), so that every process signs with one key."""
        if self._keep_key is not None and self._signer is not None:
            self._signer = self._keep_key() or self._signer

    def origin(self, statement_id: str) -> str:
        return checkpoint_origin(self.signer.name, statement_id)

    def get_node(self, statement_id: str, nodes: Iterable[tuple[int, int]]) -> Callable[..., bytes]:
        """A ``get(level, index)`` over the stored tree, for these nodes (one round trip)."""
        spans = self.layout.spans(nodes)
        return self.layout.getter(spans, self.store.tree_spans(statement_id, spans))

    def seal(self, statement_id: str, state: tuple[int, int, str | None] | None = None) -> int:
        """Seal what was appended since the last seal (at most ``BATCH`` lines); the sealed
        size afterwards. Another process sealing at the same moment makes this a no-op.
        ``state`` is ``(log size, sealed size, checkpoint)`` when the caller has just read
        it. Two round trips to Redis: one to read, one to store (a sealing loop in a busy
        web worker waits behind the requests for each)."""
        if state is None:
            _, length, size, note = self.store.log_state(statement_id)
        else:
            length, size, note = state
        if length == size and note is not None and self.signed_by_me(note):
            return size
        # (a checkpoint signed with another key, after a key change, is signed again)
        spans = self.layout.spans(root_nodes(size))
        lines, blobs = self.store.seal_inputs(statement_id, size, min(length, size + BATCH), spans)
        frontier = Frontier.load(size, self.layout.getter(spans, blobs))
        frontier, created = append_leaves(frontier, (leaf_hash(line) for line in lines))
        appends: dict[int, bytes] = defaultdict(bytes)
        for level, _index, digest in self.layout.keep(created):
            appends[level] += digest
        checkpoint = Checkpoint(self.origin(statement_id), frontier.size, frontier.root())
        note = sign_checkpoint(checkpoint, self.signer)
        changes = [_change(line) for line in lines]
        if self.store.seal(statement_id, size, frontier.size, appends, note, changes):
            return frontier.size
        return self.store.log_head(statement_id)[0]

    def signed_by_me(self, note: str) -> bool:
        """Whether the note's last signature is by this sealer's key (its name and ID)."""
        last = note.rstrip("\n").rsplit("\n", 1)[-1]
        name, _, signature = last.removeprefix("\u2014 ").rpartition(" ")
        try:
            key_id = base64.b64decode(signature, validate=True)[:4]
        except (binascii.Error, ValueError):
            return False
        return name == self.signer.name and key_id == self.signer.key_id

    def seal_all(self, statement_id: str) -> int:
        """Seal everything appended so far (for tools and tests)."""
        while True:
            size = self.seal(statement_id)
            if size >= self.store.log_size(statement_id):
                return size

    def prepare(
        self, statement_id: str, text_sha256: str, public_name: PublicName, secret: str
    ) -> bool:
        """Put the endorsements and strikes made before the log into it, in their original
        order, then open it for new entries; True once it is open.

        Older endorsements have no receipt: their ``commit`` is that of a secret derived
        from ``secret`` and their id, which nobody is given; their ``text`` is
        ``text_sha256`` (the statement as it was when the log began).
        """
        if self.store.log_ready(statement_id):
            return True
        if not self.store.lease(statement_id, "seal", self.token, LEASE_SECONDS * 6):
            return False
        entries, struck = self.store.legacy_entries(statement_id)
        index_of: dict[str, int] = {}
        events: list[tuple[int, int, str, LogEntry | None, dict[str, object] | None]] = []
        for entry in entries:
            events.append((entry.time_ms, 0, entry.id, entry, None))
        for entry_id, mark in struck.items():
            events.append((int(mark.get("at", 0)) * 1000, 1, entry_id, None, mark))
        events.sort(key=lambda event: (event[0], event[1], event[2]))
        lines: list[tuple[bytes, str]] = []
        for at_ms, _, entry_id, endorsement, mark in events:
            at = _minute(at_ms)
            i = len(lines)
            if endorsement is not None:
                entry = endorsement
                index_of[entry_id] = i
                key = hmac.new(
                    secret.encode(),
                    f"legacy-receipt/{statement_id}/{entry_id}".encode(),
                    hashlib.sha256,
                ).hexdigest()
                template = endorse_template(
                    at,
                    country=entry.country or None if entry.public else None,
                    source=entry.source,
                    name=public_name(entry),
                    text=text_sha256,
                    commit=commitment(key),
                )
                lines.append((template.fill(i), entry_id))
            elif mark is not None and entry_id in index_of:
                reason = str(mark.get("reason", ""))[:200]
                line = strike_entry(i, at, target=index_of[entry_id], reason=reason).line
                lines.append((line, ""))
        done = self.store.log_size(statement_id)
        while True:
            chunk = lines[done : done + PREPARE_CHUNK]
            last = done + len(chunk) >= len(lines)
            done = self.store.prepare_log(statement_id, done, chunk, last)
            if done < 0 or last:
                break
        log.info("tlog: %s opened with %d earlier entries", statement_id, len(lines))
        return self.store.log_ready(statement_id)

    def run(
        self,
        statement_ids: list[str],
        stopping: threading.Event,
        interval: float,
        prepare: Callable[[str], bool],
    ) -> None:
        """Every ``interval`` seconds until ``stopping``: open each statement's log if it is
        not open yet (``prepare``), then seal it. A Redis outage only delays this."""
        failing = False
        while not stopping.wait(interval):
            try:
                self.keep_key()
                for statement_id in statement_ids:
                    ready, length, size, note = self.store.log_state(statement_id)
                    if not ready:
                        prepare(statement_id)
                        continue  # sealed from the next round on
                    if length == size and note is not None and self.signed_by_me(note):
                        continue  # nothing new: no lease needed
                    if self.store.lease(statement_id, "seal", self.token, LEASE_SECONDS):
                        self.seal(statement_id, (length, size, note))
                failing = False
            except RedisError as exc:
                if not failing:
                    log.warning("tlog: sealing paused (%s)", type(exc).__name__)
                failing = True
            except Exception:  # a bad key, a bug: say so, and keep the loop alive
                if not failing:
                    log.exception("tlog: sealing failed")
                failing = True


def _change(line: bytes) -> tuple[str, int]:
    """What an entry does to the count, for the store: its kind's letter and the index it
    concerns (its own for an endorsement, its target's for the others)."""
    entry = json.loads(line)
    if entry["kind"] == "endorse":
        return "e", int(entry["i"])
    return entry["kind"][0], int(entry["target"])


def _minute(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
