"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, and tlog checkpoints in them
(c2sp.org/tlog-checkpoint). Pure: no Flask, no Redis, no I/O.

A signed note is its text (ending in a newline), a blank line, then signature lines
``— <key name> <base64(4-byte key ID || signature)>``. The key ID is the first four bytes of
``SHA-256(key name || "\\n" || 0x01 || Ed25519 public key)``. A checkpoint's text is the log's
origin, the tree size in decimal and the base64 root hash, one per line.

Undersign's convention: one log key per service, named ``<public host>/undersign``; each
statement's log has the origin ``<key name>/<statement id>``, so a checkpoint names the
statement it is for and the key that signs it.

Keys travel as Go's ``note`` package writes them: a verifier key (vkey)
``<name>+<8 hex key ID>+<base64(0x01 || public key)>`` and a signer key
``PRIVATE+KEY+<name>+<8 hex key ID>+<base64(0x01 || seed)>``. The service itself keeps only
the 32-byte Ed25519 seed, base64 (``WIDGET_LOG_KEY``): ``SignerKey.from_base64_seed``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ED25519",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteError",
    "OpenedNote",
    "Signature",
    "SignerKey",
    "VerifierKey",
    "checkpoint_origin",
    "generate_seed",
    "log_key_name",
    "open_checkpoint",
    "open_note",
    "sign_checkpoint",
    "sign_note",
]

ED25519 = 0x01
"""The signature type identifier of Ed25519 in c2sp.org/signed-note."""

MAX_SIGNATURES = 100
"""Signature lines a note may carry (the spec asks verifiers to accept at least 16)."""

MAX_NOTE_BYTES = 64 * 1024

_SIG_PREFIX = "\u2014 "  # EM DASH, SPACE
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteError(ValueError):
    """A key, note or checkpoint is malformed, or its signature does not verify."""


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: the alphabet, padding, and the one canonical encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError(f"{what} is not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _check_name(name: str, what: str = "key name") -> None:
    """Key names: non-empty, no spaces (Unicode), no '+', no control characters."""
    if not isinstance(name, str) or not name:
        raise NoteError(f"the {what} is empty")
    if "+" in name or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise NoteError(f"the {what} {name!r} has a space, a plus sign or a control character")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key ID: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def log_key_name(public_host: str) -> str:
    """The service's log key name: ``<public host>/undersign``."""
    name = f"{public_host}/undersign"
    _check_name(name)
    return name


def checkpoint_origin(key_name: str, statement_id: str) -> str:
    """A statement's log origin: ``<key name>/<statement id>``."""
    origin = f"{key_name}/{statement_id}"
    _check_name(origin, "origin")
    return origin


def generate_seed() -> str:
    """A fresh Ed25519 seed, base64, for ``WIDGET_LOG_KEY``."""
    return _b64(secrets.token_bytes(32))


@dataclass(frozen=True)
class VerifierKey:
    """A public key and its name: checks signatures."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")
        object.__setattr__(self, "key_id", key_id(self.name, self.public_key))

    @classmethod
    def parse(cls, vkey: str) -> VerifierKey:
        """Read ``<name>+<hex key ID>+<base64(0x01 || public key)>``, checking the key ID."""
        if not isinstance(vkey, str):
            raise NoteError("a verifier key is text")
        name, plus, rest = vkey.partition("+")
        hex_id, plus2, key64 = rest.partition("+")
        if not (plus and plus2):
            raise NoteError("a verifier key reads <name>+<key ID>+<key>")
        _check_name(name)
        if not _KEY_ID.fullmatch(hex_id):
            raise NoteError("the verifier key's ID is not 8 lowercase hex digits")
        raw = _b64decode(key64, "the verifier key")
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("the verifier key is not an Ed25519 key (0x01 and 32 bytes)")
        key = cls(name, raw[1:])
        if key.key_id.hex() != hex_id:
            raise NoteError("the verifier key's ID does not match its name and key")
        return key

    @property
    def vkey(self) -> str:
        """``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([ED25519]) + self.public_key)}"

    def __str__(self) -> str:
        return self.vkey

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class SignerKey:
    """A named Ed25519 private key (its 32-byte seed): signs notes."""

    name: str
    seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.seed, bytes) or len(self.seed) != 32:
            raise NoteError("an Ed25519 seed is 32 bytes")

    @classmethod
    def from_base64_seed(cls, name: str, seed64: str) -> SignerKey:
        """The service's form: ``WIDGET_LOG_KEY`` holds the seed in base64."""
        return cls(name, _b64decode(seed64.strip(), "the log key seed"))

    @classmethod
    def parse(cls, skey: str) -> SignerKey:
        """Read Go's ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""
        prefix = "PRIVATE+KEY+"
        if not isinstance(skey, str) or not skey.startswith(prefix):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        name, plus, rest = skey[len(prefix) :].partition("+")
        hex_id, plus2, key64 = rest.partition("+")
        if not (plus and plus2) or not _KEY_ID.fullmatch(hex_id):
            raise NoteError("a signer key reads PRIVATE+KEY+<name>+<key ID>+<key>")
        raw = _b64decode(key64, "the signer key")
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("the signer key is not an Ed25519 key (0x01 and 32 bytes)")
        key = cls(name, raw[1:])
        if key.key_id.hex() != hex_id:
            raise NoteError("the signer key's ID does not match its name and key")
        return key

    @property
    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def skey(self) -> str:
        """Go's signer key form (secret: never log it)."""
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{_b64(bytes([ED25519]) + self.seed)}"

    def verifier(self) -> VerifierKey:
        return VerifierKey(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signature by at least one known key verified."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]
    """Signatures by keys not asked for (other logs, witnesses): ignored, as the spec says."""


def _check_text(text: str, what: str) -> None:
    if not text.endswith("\n"):
        raise NoteError(f"the {what} does not end with a newline")
    for ch in text:
        if ord(ch) < 0x20 and ch != "\n":
            raise NoteError(f"the {what} has a control character ({ord(ch):#04x})")
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise NoteError(f"the {what} is not valid Unicode")


def sign_note(text: str, *signers: SignerKey) -> str:
    """The signed note: ``text`` (ending in a newline), a blank line, one line per signer."""
    if not signers:
        raise NoteError("a note needs a signer")
    _check_text(text, "note text")
    message = text.encode("utf-8")
    lines = [f"{_SIG_PREFIX}{s.name} {_b64(s.key_id + s.sign(message))}\n" for s in signers]
    return text + "\n" + "".join(lines)


def open_note(note: str | bytes, verifiers: Sequence[VerifierKey]) -> OpenedNote:
    """Parse a signed note and verify it against ``verifiers``.

    Signatures by keys not in ``verifiers`` (the name and key ID both decide) are ignored. A
    known key's bad signature rejects the note, and so does a note with no signature from a
    known key. Raises ``NoteError`` saying why.
    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteError("the note is too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("the note is not valid UTF-8") from None
    if len(note) > MAX_NOTE_BYTES:
        raise NoteError("the note is too large")
    _check_text(note, "note")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("the note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteError("the note has no signature lines")
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[Signature] = []
    unverified: list[Signature] = []
    message = text.encode("utf-8")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"the signature line {line[:40]!r} does not start with an em dash")
        name, space, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not space:
            raise NoteError("a signature line reads '— <key name> <signature>'")
        _check_name(name)
        raw = _b64decode(sig64, f"the signature by {name}")
        if len(raw) < 5:
            raise NoteError(f"the signature by {name} is too short")
        sig = Signature(name, raw[:4], raw[4:])
        verifier = known.get((name, sig.key_id))
        if verifier is None:
            unverified.append(sig)
            continue
        if not verifier.verify(message, sig.signature):
            raise NoteError(f"the signature by {verifier.vkey} does not verify")
        if sig not in verified:
            verified.append(sig)
    if not verified:
        wanted = ", ".join(v.vkey.rsplit("+", 1)[0] for v in verifiers) or "none given"
        found = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in unverified)
        raise NoteError(f"no signature by a known key (known: {wanted}; signed by: {found})")
    return OpenedNote(text, tuple(verified), tuple(unverified))


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, size and RFC 6962 root hash (c2sp.org/tlog-checkpoint)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteError("a checkpoint's origin is one non-empty line")
        if isinstance(self.size, bool) or not 0 <= self.size < 2**63:
            raise NoteError(f"tree size {self.size} is out of range")
        if len(self.root_hash) != 32:
            raise NoteError("a checkpoint's root hash is 32 bytes")
        if any(not line or "\n" in line for line in self.extensions):
            raise NoteError("a checkpoint's extension lines are non-empty lines")

    @property
    def text(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in newline."""
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read a checkpoint's note text (what ``open_note`` returns as ``text``)."""
        _check_text(text, "checkpoint")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash line")
        origin, size, root64, *extensions = lines
        if not origin:
            raise NoteError("the checkpoint's origin line is empty")
        if not _SIZE.fullmatch(size):
            raise NoteError(f"the checkpoint's size {size[:30]!r} is not a canonical decimal")
        root_hash = _b64decode(root64, "the checkpoint's root hash")
        if len(root_hash) != 32:
            raise NoteError("the checkpoint's root hash is not 32 bytes")
        if any(not line for line in extensions):
            raise NoteError("the checkpoint has an empty extension line")
        return cls(origin, int(size), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: SignerKey) -> str:
    """The signed checkpoint note, as served to verifiers."""
    return sign_note(checkpoint.text, signer)


def open_checkpoint(
    note: str | bytes, key: VerifierKey, *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint with ``key`` and read it; check its origin when given."""
    checkpoint = Checkpoint.parse(open_note(note, [key]).text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(f"the checkpoint is for {checkpoint.origin!r}, not {origin!r}")
    return checkpoint
