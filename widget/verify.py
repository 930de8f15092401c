"""``undersign verify``: check a statement's public log over HTTP, trusting nothing served.

It needs only this package and the network (the standard library's urllib): no Flask app,
no Redis. It downloads the signed checkpoint and every entry up to it, checks that each line
is canonical JSON and a well-formed entry with the next index, recomputes the Merkle root
and compares it with the checkpoint, checks the checkpoint's signature, and recounts the
endorsements by the count rule. Optionally it checks that your own endorsement is in the log
(``--receipt``) and that the log only ever grew since your last run (``--state``).

The HTTP contract it relies on (the server implements exactly this):

=============================================================== ============================
``GET /api/v1/log/key``                                         ``text/plain``: the vkey line
``GET /api/v1/statements/<id>/checkpoint``                      ``text/plain``: signed note
``GET /api/v1/statements/<id>/log?start=S&limit=L``             ``application/jsonl``:
                                                                entries S..S+L-1 (L <= 1000),
                                                                each canonical JSON + ``\\n``
``GET /api/v1/statements/<id>/proof/inclusion?index=I&size=N``  ``{"index", "size",
                                                                "hashes": [base64...]}``
``GET /api/v1/statements/<id>/proof/consistency?from=M&to=N``   ``{"from", "to", "hashes"}``
``GET /api/v1/statements/<id>/receipts/<commit>``               ``{"index", "status",
                                                                "checkpoint", "inclusion":
                                                                {"size", "hashes"}}``, 404
                                                                until sealed
``GET /api/v1/statements/<id>/count``                           ``{"id", "count"}``
=============================================================== ============================

Every failure raises ``VerifyFailed`` naming what failed; ``run`` prints it and returns 1.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .tlog import tree
from .tlog.entries import STRUCK, WITHDRAWN, EntryError, Tally, commitment, parse_line
from .tlog.note import Checkpoint, NoteError, VerifierKey, checkpoint_origin, open_note

PAGE = 1000
TIMEOUT = 30.0
MAX_SMALL = 1 << 20  # checkpoints, keys, proofs, receipts
MAX_PAGE = PAGE * 4097  # a page of at most 1000 lines of at most 4 KiB
STATE_VERSION = 1
USER_AGENT = "undersign-verify/1"


class VerifyFailed(Exception):
    """Verification failed: ``what`` names the check (``root``, ``signature``, ...)."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(message)
        self.what = what


class Forked(VerifyFailed):
    """The log is not an extension of a checkpoint recorded earlier: a fork or a rewrite."""

    def __init__(self, message: str, evidence: str) -> None:
        super().__init__("consistency", message)
        self.evidence = evidence


@dataclass
class Client:
    """GETs under one statement's base URL with urllib, size-capped, with clear errors."""

    base: str
    statement_id: str
    timeout: float = TIMEOUT

    def url(self, path: str, query: dict[str, int] | None = None) -> str:
        url = self.base + path.format(id=urllib.parse.quote(self.statement_id, safe=""))
        return url + ("?" + urllib.parse.urlencode(query) if query else "")

    def get(
        self, path: str, query: dict[str, int] | None = None, *, limit: int = MAX_SMALL
    ) -> bytes:
        url = self.url(path, query)
        # http(s) only: ``verify`` checks the base URL's scheme.
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            detail = _problem_detail(exc)
            raise HttpStatus(exc.code, f"GET {url}: HTTP {exc.code}{detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise VerifyFailed("network", f"GET {url}: {reason}") from None
        if len(body) > limit:
            raise VerifyFailed("network", f"GET {url}: the answer is larger than {limit} bytes")
        return body

    def get_json(self, path: str, query: dict[str, int] | None = None) -> dict[str, Any]:
        body = self.get(path, query)
        try:
            value = json.loads(body)
        except ValueError:
            raise VerifyFailed("protocol", f"GET {self.url(path, query)}: not JSON") from None
        if not isinstance(value, dict):
            raise VerifyFailed("protocol", f"GET {self.url(path, query)}: not a JSON object")
        return value


class HttpStatus(VerifyFailed):
    def __init__(self, status: int, message: str) -> None:
        super().__init__("network", message)
        self.status = status


def _problem_detail(exc: urllib.error.HTTPError) -> str:
    try:
        problem = json.loads(exc.read(MAX_SMALL))
        return (
            f" ({problem['detail']})" if isinstance(problem, dict) and "detail" in problem else ""
        )
    except (ValueError, OSError):
        return ""


def _hash(value: object, what: str) -> bytes:
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == tree.HASH_SIZE and base64.b64encode(raw).decode() == value:
            return raw
    raise VerifyFailed("protocol", f"{what} is not a base64 SHA-256 hash")


def _hashes(value: object, what: str) -> list[bytes]:
    if not isinstance(value, list) or len(value) > 128:
        raise VerifyFailed("protocol", f"{what} is not a list of hashes")
    return [_hash(h, f"{what}[{i}]") for i, h in enumerate(value)]


def _int(document: dict[str, Any], key: str, what: str) -> int:
    value = document.get(key)
    if type(value) is not int or value < 0:
        raise VerifyFailed("protocol", f"{what}: {key!r} is not a count")
    return value


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass
class Verified:
    """What a successful run established."""

    checkpoint: Checkpoint
    note: str
    tally: Tally
    leaf_hashes: list[bytes]


class Verifier:
    def __init__(
        self,
        client: Client,
        *,
        say: Callable[[str], None],
        warn: Callable[[str], None],
        progress: bool = True,
    ) -> None:
        self.client = client
        self.say = say
        self.warn = warn
        self.progress = progress

    # -- 1. key and checkpoint -------------------------------------------------------------

    def key(self, pinned: str | None) -> VerifierKey:
        if pinned is not None:
            try:
                return VerifierKey.parse(pinned.strip())
            except NoteError as exc:
                raise VerifyFailed("key", f"--key is not a verifier key: {exc}") from None
        text = self.client.get("/api/v1/log/key").decode("utf-8", "replace").strip()
        try:
            key = VerifierKey.parse(text)
        except NoteError as exc:
            raise VerifyFailed("key", f"the served log key is not a verifier key: {exc}") from None
        self.warn(
            f"the log key is not pinned: using the one the service serves ({key.vkey}). "
            "A service that lies could serve its own key too; pin the key published by the "
            "statement's coalition with --key."
        )
        return key

    def checkpoint(self, key: VerifierKey, origin: str) -> tuple[Checkpoint, str]:
        raw = self.client.get("/api/v1/statements/{id}/checkpoint")
        return self.open(raw, key, origin, "the checkpoint"), raw.decode("utf-8")

    @staticmethod
    def open(raw: str | bytes, key: VerifierKey, origin: str, what: str) -> Checkpoint:
        try:
            text = open_note(raw, [key]).text
        except NoteError as exc:
            raise VerifyFailed("signature", f"{what}'s signature: {exc}") from None
        try:
            checkpoint = Checkpoint.parse(text)
        except NoteError as exc:
            raise VerifyFailed("checkpoint", f"{what} is malformed: {exc}") from None
        if checkpoint.origin != origin:
            raise VerifyFailed("origin", f"{what} is for {checkpoint.origin!r}, not {origin!r}")
        return checkpoint

    # -- 2. the whole log --------------------------------------------------------------------

    def download(self, size: int, commit: str | None) -> tuple[Tally, list[bytes], int | None]:
        """Every entry below ``size``: checked, tallied, hashed; and where ``commit`` is."""
        tally = Tally()
        hashes: list[bytes] = []
        found: int | None = None
        leaf = tree.leaf_hash
        with _progress(size, enabled=self.progress) as advance:
            start = 0
            while start < size:
                limit = min(PAGE, size - start)
                body = self.client.get(
                    "/api/v1/statements/{id}/log", {"start": start, "limit": limit}, limit=MAX_PAGE
                )
                if body and not body.endswith(b"\n"):
                    raise VerifyFailed(
                        "log", f"the log page from {start} does not end in a newline"
                    )
                lines = body.split(b"\n")[:-1]
                if len(lines) != limit:
                    raise VerifyFailed(
                        "log",
                        f"asked for entries {start}..{start + limit - 1}, got {len(lines)} lines:"
                        f" the log served is not the {size} entries the checkpoint signs",
                    )
                for line in lines:
                    index = len(hashes)
                    try:
                        entry = parse_line(line, index)
                        tally.apply(entry)
                    except EntryError as exc:
                        said = str(exc)
                        if not said.startswith(f"entry {index} "):
                            said = f"entry {index}: {said}"
                        raise VerifyFailed("log", said) from None
                    if commit is not None and entry.get("commit") == commit:
                        found = index
                    hashes.append(leaf(line))
                start += limit
                advance(limit)
        return tally, hashes, found

    # -- 6. a receipt --------------------------------------------------------------------------

    def receipt(
        self, secret: str, key: VerifierKey, origin: str, verified: Verified, found: int | None
    ) -> None:
        commit = commitment(secret)
        try:
            receipt = self.client.get_json("/api/v1/statements/{id}/receipts/" + commit)
        except HttpStatus as exc:
            if exc.status == 404:
                raise VerifyFailed(
                    "receipt",
                    "the log has no endorsement for this receipt (not sealed yet, or not a"
                    " receipt for this statement)",
                ) from None
            raise
        index = _int(receipt, "index", "the receipt")
        served_status = receipt.get("status")
        note = receipt.get("checkpoint")
        inclusion = receipt.get("inclusion")
        if not isinstance(note, str) or not isinstance(inclusion, dict):
            raise VerifyFailed("protocol", "the receipt lacks its checkpoint or inclusion proof")
        their = self.open(note, key, origin, "the receipt's checkpoint")
        if _int(inclusion, "size", "the receipt's proof") != their.size:
            raise VerifyFailed("receipt", "the receipt's proof is for another tree size")
        mine = verified.checkpoint
        if index < mine.size:
            if found != index:
                raise VerifyFailed(
                    "receipt",
                    f"the service says your endorsement is entry {index}, but that entry"
                    " does not carry your receipt's commitment",
                )
            leaf = verified.leaf_hashes[index]
        else:
            body = self.client.get(
                "/api/v1/statements/{id}/log", {"start": index, "limit": 1}, limit=MAX_PAGE
            )
            try:
                entry = parse_line(body.removesuffix(b"\n"), index)
            except EntryError as exc:
                raise VerifyFailed("receipt", f"entry {index}: {exc}") from None
            if entry["kind"] != "endorse" or entry["commit"] != commit:
                raise VerifyFailed("receipt", f"entry {index} is not your endorsement")
            leaf = tree.leaf_hash(body.removesuffix(b"\n"))
        try:
            tree.verify_inclusion(
                index,
                their.size,
                leaf,
                _hashes(inclusion.get("hashes"), "inclusion"),
                their.root_hash,
            )
        except tree.ProofError as exc:
            raise VerifyFailed("receipt", f"the receipt's inclusion proof fails: {exc}") from None
        # The receipt's checkpoint must be the same history as the verified one.
        if their.size <= mine.size:
            if tree.root_from_leaf_hashes(verified.leaf_hashes[: their.size]) != their.root_hash:
                raise Forked(
                    f"the receipt's checkpoint (size {their.size}) is not a prefix of the log",
                    note,
                )
        else:
            self.consistent(mine, their, note)
        if index < mine.size:
            status = verified.tally.status(index)
            self.say(f"Receipt: your endorsement is entry {index:,} of the log; status: {status}")
            if served_status != status:
                if their.size == mine.size:
                    raise VerifyFailed(
                        "receipt",
                        f"the service says {served_status!r}, the log says {status!r}",
                    )
                self.say(f"  (the service says {served_status!r} as of a later checkpoint)")
        else:
            self.say(
                f"Receipt: your endorsement is entry {index:,}, sealed after this checkpoint;"
                f" the service says it is {served_status!r} (not recounted here: run again"
                " later to verify it with the whole log)"
            )

    # -- 7. consistency with an earlier checkpoint ---------------------------------------------

    def consistent(self, old: Checkpoint, new: Checkpoint, new_note: str) -> None:
        """Fetch and check the consistency proof from ``old`` to a larger ``new``."""
        document = self.client.get_json(
            "/api/v1/statements/{id}/proof/consistency", {"from": old.size, "to": new.size}
        )
        if (document.get("from"), document.get("to")) != (old.size, new.size):
            raise VerifyFailed("protocol", "the consistency proof is for other sizes")
        try:
            tree.verify_consistency(
                old.size,
                new.size,
                old.root_hash,
                new.root_hash,
                _hashes(document.get("hashes"), "consistency"),
            )
        except tree.ProofError as exc:
            raise Forked(
                f"the consistency proof from size {old.size} to {new.size} fails: {exc}", new_note
            ) from None


@contextmanager
def _progress(total: int, *, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (rich); yields ``advance(n)``."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("[bold]Downloading the log"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("log", total=total)
        yield lambda n: progress.advance(task, n)


# -- the state file ------------------------------------------------------------------------------


def load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"version": STATE_VERSION, "logs": {}}
    try:
        state = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise VerifyFailed("state", f"cannot read the state file {path}: {exc}") from None
    if not isinstance(state, dict) or not isinstance(state.get("logs"), dict):
        raise VerifyFailed("state", f"{path} is not an undersign verify state file")
    return state


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write atomically (a temporary file, then rename), so a crash never loses the record."""
    path = path.resolve()
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(state, out, indent=2, sort_keys=True)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_against_state(
    verifier: Verifier, record: dict[str, Any], key: VerifierKey, origin: str, verified: Verified
) -> str:
    """Check the verified checkpoint extends the recorded one; say how, or raise ``Forked``."""
    try:
        old_key = VerifierKey.parse(record["vkey"])
        old_note = record["checkpoint"]
        old = Checkpoint.parse(open_note(old_note, [old_key]).text)
    except (KeyError, TypeError, NoteError) as exc:
        raise VerifyFailed(
            "state", f"the recorded checkpoint for {origin} is unreadable: {exc}"
        ) from None
    new = verified.checkpoint
    when = record.get("recorded", "earlier")
    if old.size > new.size:
        raise Forked(
            f"the log shrank from {old.size:,} entries (recorded {when}) to {new.size:,}:"
            " entries were removed",
            old_note + "\n" + verified.note,
        )
    if old.size == new.size:
        if old.root_hash != new.root_hash:
            raise Forked(
                f"two different logs of {new.size:,} entries are signed (recorded {when})",
                old_note + "\n" + verified.note,
            )
        return f"the same checkpoint as recorded {when}"
    try:
        verifier.consistent(old, new, verified.note)
    except Forked as exc:
        raise Forked(str(exc), old_note + "\n" + verified.note) from None
    # The whole log is here, so also recompute the old root from its first entries.
    if tree.root_from_leaf_hashes(verified.leaf_hashes[: old.size]) != old.root_hash:
        raise Forked(
            f"the first {old.size:,} entries served now do not hash to the root recorded {when}",
            old_note + "\n" + verified.note,
        )
    if old_key != key:
        verifier.warn(f"the log key changed since {when}: was {old_key.vkey}")
    return f"it extends the checkpoint recorded {when} ({old.size:,} -> {new.size:,} entries)"


# -- the command -------------------------------------------------------------------------------


def verify(
    base_url: str,
    statement_id: str,
    *,
    key: str | None = None,
    receipt: str | None = None,
    state: Path | None = None,
    say: Callable[[str], None] = click.echo,
    warn: Callable[[str], None] = lambda m: click.secho(f"WARNING: {m}", fg="yellow", err=True),
    progress: bool = True,
) -> Verified:
    """Run every check; return what was established or raise ``VerifyFailed``."""
    base = base_url.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        raise VerifyFailed("usage", f"{base_url!r} is not an http(s) URL")
    verifier = Verifier(Client(base, statement_id), say=say, warn=warn, progress=progress)
    records = load_state(state) if state else None

    vkey = verifier.key(key)
    try:
        origin = checkpoint_origin(vkey.name, statement_id)
    except NoteError as exc:
        raise VerifyFailed("usage", f"no log origin for {statement_id!r}: {exc}") from None
    record = records["logs"].get(origin) if records else None
    if key is None and record and record.get("vkey") != vkey.vkey:
        raise VerifyFailed(
            "key",
            f"the service now serves the log key {vkey.vkey}, not the {record.get('vkey')}"
            f" recorded in {state}: pin the right one with --key",
        )

    checkpoint, note = verifier.checkpoint(vkey, origin)
    say(f"Checkpoint: {origin}, {checkpoint.size:,} entries, root {_b64(checkpoint.root_hash)}")
    say(f"Signature: valid, by {vkey.vkey}" + ("" if key else " (served, not pinned)"))

    commit = commitment(receipt) if receipt is not None else None
    tally, hashes, found = verifier.download(checkpoint.size, commit)
    say(f"Log: {checkpoint.size:,} entries, each canonical JSON, well formed and in order")

    root = tree.root_from_leaf_hashes(hashes)
    if root != checkpoint.root_hash:
        raise VerifyFailed(
            "root",
            f"the {checkpoint.size:,} entries served hash to {_b64(root)}, but the signed"
            f" checkpoint says {_b64(checkpoint.root_hash)}: the log served is not the log signed",
        )
    say("Root: the entries hash to the checkpoint's root")
    verified = Verified(checkpoint, note, tally, hashes)

    summary = tally.summary()
    say(
        f"Count: {tally.count:,} endorsements counted at this checkpoint"
        f" ({summary[STRUCK]:,} struck, {summary[WITHDRAWN]:,} withdrawn)"
    )
    live = _live_count(verifier.client)
    if live is None:
        say("  (the live count could not be read)")
    elif live == tally.count:
        say("  The service's live count agrees.")
    else:
        say(
            f"  The service's live count is {live:,}: it has moved past this checkpoint"
            " (entries not sealed yet are not verified here)"
        )

    if receipt is not None:
        verifier.receipt(receipt, vkey, origin, verified, found)

    if state is not None and records is not None:
        if record:
            say("History: " + check_against_state(verifier, record, vkey, origin, verified))
        records["version"] = STATE_VERSION
        records["logs"][origin] = {
            "vkey": vkey.vkey,
            "size": checkpoint.size,
            "root": _b64(checkpoint.root_hash),
            "checkpoint": note,
            "recorded": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        save_state(state, records)
        say(f"State: this checkpoint is recorded in {state}")
    return verified


def _live_count(client: Client) -> int | None:
    try:
        document = client.get_json("/api/v1/statements/{id}/count")
    except VerifyFailed:
        return None
    count = document.get("count")
    return count if type(count) is int else None


def run(
    base_url: str,
    statement_id: str,
    *,
    key: str | None,
    receipt: str | None,
    state: str | None,
    progress: bool = True,
) -> int:
    """The ``undersign verify`` command: 0 when everything holds, else 1 with the reason."""
    try:
        verify(
            base_url,
            statement_id,
            key=key,
            receipt=receipt,
            state=Path(state) if state else None,
            progress=progress and sys.stderr.isatty(),
        )
    except Forked as exc:
        banner = "!" * 78
        click.secho(banner, fg="red", bold=True, err=True)
        click.secho(
            "FORK OR REWRITTEN HISTORY: this log is not an extension of what was seen before.",
            fg="red",
            bold=True,
            err=True,
        )
        click.secho(str(exc), fg="red", err=True)
        click.secho(
            "Both checkpoints below are signed by the log's key: keep them as evidence"
            " that it showed two different histories.",
            fg="red",
            err=True,
        )
        click.secho(banner, fg="red", bold=True, err=True)
        click.echo(exc.evidence, err=True)
        click.secho(f"FAILED ({exc.what}): {exc}", fg="red", bold=True, err=True)
        return 1
    except VerifyFailed as exc:
        click.secho(f"FAILED ({exc.what}): {exc}", fg="red", bold=True, err=True)
        return 1
    click.secho("OK: the log, its root, its signature and the count all check out.", fg="green")
    return 0
