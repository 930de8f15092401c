"""widget.tlog.note: C2SP signed notes and checkpoints, against independent known answers."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from widget.tlog.note import (
    Checkpoint,
    NoteError,
    SignerKey,
    VerifierKey,
    checkpoint_origin,
    generate_seed,
    log_key_name,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
)

# ---------------------------------------------------------------------------------------------
# Known answers from Go's golang.org/x/mod/sumdb/note tests (note_test.go): a signer key, its
# verifier key, and the exact signed note Go produces (Ed25519 signatures are deterministic).

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1F"
    "FYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1a"
    "GrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

# A real checkpoint signed by the Go checksum database (sum.golang.org), with its public key.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n6476701\nmb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk=\n\n"
    "— sum.golang.org Az3grsLX85Gz+s1SiTbgkuqxgItqFq7gsMUEyVnrsa9LM7Us9S+1xbFIGu9"
    "5949rj4nPRYfvimWEPWL+o3GeoWwOoAw=\n"
)


def test_go_signer_key_gives_go_verifier_key_and_signature_byte_for_byte() -> None:
    signer = SignerKey.parse(PETER_SKEY)
    assert signer.skey == PETER_SKEY
    assert signer.verifier().vkey == PETER_VKEY
    assert signer.key_id.hex() == "c74f20a3"
    assert sign_note(TEXT, signer) == TEXT + "\n" + PETER_SIG


def test_go_notes_open_known_keys_verified_unknown_ignored() -> None:
    peter, enoch = VerifierKey.parse(PETER_VKEY), VerifierKey.parse(ENOCH_VKEY)
    opened = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert opened.text == TEXT
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [s.name for s in opened.unverified] == ["EnochRoot"]
    both = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter, enoch])
    assert [s.key_id.hex() for s in both.verified] == ["c74f20a3", "af0cfe78"]
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    tampered = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(tampered, [peter])


def test_real_sum_golang_org_checkpoint_verifies() -> None:
    key = VerifierKey.parse(SUMDB_VKEY)
    checkpoint = open_checkpoint(SUMDB_NOTE, key, origin="go.sum database tree")
    assert checkpoint.size == 6476701
    assert base64.b64encode(checkpoint.root_hash).decode() == (
        "mb8QLQIs0Z0yP5Cstq6guj87oXWeC9gEM8oVikmm9Wk="
    )
    assert checkpoint.text + "\n" + SUMDB_NOTE.split("\n\n")[1] == SUMDB_NOTE
    with pytest.raises(NoteError, match="not 'other"):
        open_checkpoint(SUMDB_NOTE, key, origin="other")
    with pytest.raises(NoteError):
        open_checkpoint(SUMDB_NOTE.replace("6476701", "6476702"), key)


def test_key_id_and_vkey_follow_the_spec_algorithm() -> None:
    seed = hashlib.sha256(b"undersign test seed").digest()
    public = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    name = "sign.example.org/undersign"
    signer = SignerKey.from_base64_seed(name, base64.b64encode(seed).decode())
    # key ID = SHA-256(key name || 0x0A || 0x01 || public key)[:4], spelled out.
    want_id = hashlib.sha256(name.encode() + b"\x0a" + b"\x01" + public).digest()[:4]
    key64 = base64.b64encode(b"\x01" + public).decode()
    want_vkey = f"{name}+{want_id.hex()}+{key64}"
    assert signer.public_key == public
    assert signer.verifier().vkey == want_vkey
    assert VerifierKey.parse(want_vkey) == signer.verifier()
    assert SignerKey.parse(signer.skey) == signer
    assert "seed" not in repr(signer)

    origin = checkpoint_origin(log_key_name("sign.example.org"), "clean-air")
    root = hashlib.sha256(b"root").digest()
    note = sign_checkpoint(Checkpoint(origin, 1234, root), signer)
    body = f"sign.example.org/undersign/clean-air\n1234\n{base64.b64encode(root).decode()}\n"
    signature = Ed25519PrivateKey.from_private_bytes(seed).sign(body.encode())
    want_line = f"— {name} {base64.b64encode(want_id + signature).decode()}\n"
    assert note == body + "\n" + want_line
    assert open_checkpoint(note, signer.verifier(), origin=origin) == Checkpoint(origin, 1234, root)


def test_round_trip_with_extension_lines_and_a_fresh_key() -> None:
    signer = SignerKey.from_base64_seed("a.example/undersign", generate_seed())
    checkpoint = Checkpoint("a.example/undersign/x", 0, hashlib.sha256(b"").digest(), ("ext",))
    assert open_checkpoint(sign_checkpoint(checkpoint, signer), signer.verifier()) == checkpoint


def test_malformed_vkeys_are_refused() -> None:
    # Every proper substring and every single-byte change of a valid vkey (as Go tests).
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(NoteError):
                    VerifierKey.parse(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(NoteError):
            VerifierKey.parse(mangled)
    for bad in [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        PETER_VKEY + "\n",
    ]:
        with pytest.raises(NoteError):
            VerifierKey.parse(bad)


def test_malformed_signer_keys_are_refused() -> None:
    for i in range(len(PETER_SKEY)):
        mangled = PETER_SKEY[:i] + chr(ord(PETER_SKEY[i]) + 1) + PETER_SKEY[i + 1 :]
        with pytest.raises(NoteError):
            SignerKey.parse(mangled)
    with pytest.raises(NoteError):
        SignerKey.from_base64_seed("x", base64.b64encode(b"short").decode())
    with pytest.raises(NoteError):
        SignerKey.from_base64_seed("has space", generate_seed())


def test_malformed_notes_are_refused() -> None:
    peter = VerifierKey.parse(PETER_VKEY)
    good = TEXT + "\n" + PETER_SIG
    assert open_note(good, [peter]).text == TEXT
    assert open_note(good.encode(), [peter]).text == TEXT
    bad_notes = {
        "no signatures": TEXT,
        "blank line only": TEXT + "\n",
        "no final newline": TEXT + "\n" + PETER_SIG[:-1],
        "control character": "\x01" + TEXT + "\n" + PETER_SIG,
        "carriage return in the text": TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG,
        "carriage return in a signature": TEXT + "\n" + PETER_SIG[:-1] + "\r\n",
        "space in a key name": TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter Neumann"),
        "unexpected line": TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        "hyphen, not em dash": TEXT + "\n" + PETER_SIG.replace("—", "-"),
        "bad base64": TEXT + "\n" + PETER_SIG.replace("x08go", "x08g!"),
        "unpadded base64": TEXT + "\n" + PETER_SIG.replace("=\n", "\n"),
        "short signature": TEXT + "\n— PeterNeumann AAAA\n",
        "too many signatures": TEXT + "\n" + PETER_SIG * 101,
        "empty signature line": TEXT + "\n" + PETER_SIG + "\n",
    }
    for why, note in bad_notes.items():
        with pytest.raises(NoteError):
            open_note(note, [peter])
            pytest.fail(why)
    with pytest.raises(NoteError):
        open_note(b"\xff" + good.encode(), [peter])
    # The right key ID under another name, or another key ID under the right name, is not
    # the known key: ignored, so nothing verifies.
    renamed = TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "CarmenSandiego")
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(renamed, [peter])
    other_id = TEXT + "\n" + PETER_SIG.replace("x08g", "xxxx")
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(other_id, [peter])


def test_malformed_checkpoints_are_refused() -> None:
    root64 = base64.b64encode(hashlib.sha256(b"r").digest()).decode()
    assert Checkpoint.parse(f"o\n0\n{root64}\n").size == 0
    assert Checkpoint.parse(f"o\n9223372036854775807\n{root64}\n").size == 2**63 - 1
    for text in [
        f"o\n012\n{root64}\n",  # leading zero
        f"o\n+12\n{root64}\n",
        f"o\n-1\n{root64}\n",
        f"o\n1_000\n{root64}\n",
        f"o\n\uff11\uff12\n{root64}\n",  # fullwidth digits: int() would take them
        f"o\n 12\n{root64}\n",
        f"o\n9223372036854775808\n{root64}\n",
        f"o\n12\n{root64}",  # no final newline
        f"o\n12\n{root64}\r\n",
        f"\n12\n{root64}\n",  # empty origin
        "o\n12\n",  # no root
        f"o\n12\n{root64[:-1]}\n",
        f"o\n12\n{base64.b64encode(b'x' * 31).decode()}\n",
        f"o\n12\n{root64}\n\n",  # empty extension line
    ]:
        with pytest.raises(NoteError):
            Checkpoint.parse(text)
