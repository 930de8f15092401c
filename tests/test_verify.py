"""``undersign verify`` against a test double of the log API (tests/tlog_double.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tlog_double import SIGNER, STATEMENT, LogDouble, secret, synthetic_log

from widget.cli import main
from widget.tlog.entries import endorse_entry, strike_entry
from widget.tlog.note import SignerKey

N = 2500  # more than two pages of 1000


@pytest.fixture(scope="module")
def log_lines() -> list[bytes]:
    return [entry.line for entry in synthetic_log(N)]


@pytest.fixture
def double(log_lines: list[bytes]) -> LogDouble:
    return LogDouble(list(log_lines))


@pytest.fixture
def url(double: LogDouble) -> Iterator[str]:
    with double.serve() as base:
        yield base


def verify(url: str, *args: str, statement: str = STATEMENT) -> Result:
    return CliRunner().invoke(main, ["verify", url, statement, *args])


def pinned() -> list[str]:
    return ["--key", SIGNER.verifier().vkey]


def failed(result: Result, what: str) -> str:
    assert result.exit_code == 1, result.output
    assert f"FAILED ({what})" in result.output, result.output
    return result.output


def test_an_honest_log_verifies(double: LogDouble, url: str) -> None:
    result = verify(url, *pinned())
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"Checkpoint: undersign.test/undersign/clean-air, {N:,} entries" in out
    assert f"Count: {double.tally.count:,} endorsements counted" in out
    assert "live count agrees" in out
    assert "OK:" in out
    assert "not pinned" not in out
    pages = [r for r in double.requests if "/log?" in r]
    assert pages == [
        "/api/v1/statements/clean-air/log?start=0&limit=1000",
        "/api/v1/statements/clean-air/log?start=1000&limit=1000",
        "/api/v1/statements/clean-air/log?start=2000&limit=500",
    ]


def test_an_unpinned_key_works_with_a_warning(url: str) -> None:
    result = verify(url)
    assert result.exit_code == 0, result.output
    assert "WARNING: the log key is not pinned" in result.output


def test_a_changed_byte_in_one_line_fails_the_root(double: LogDouble, url: str) -> None:
    served = list(double.lines)
    victim = next(i for i, line in enumerate(served) if b'"name":"Aigerim"' in line)
    served[victim] = served[victim].replace(b'"name":"Aigerim"', b'"name":"Aigerin"')
    double.served_lines = served
    out = failed(verify(url, *pinned()), "root")
    assert "the log served is not the log signed" in out


def test_a_line_that_is_not_canonical_fails(double: LogDouble, url: str) -> None:
    served = list(double.lines)
    served[1234] = served[1234].replace(b'"kind":', b'"kind": ')
    double.served_lines = served
    out = failed(verify(url, *pinned()), "log")
    assert "entry 1234: not in RFC 8785 canonical form" in out


def test_a_dropped_entry_fails(double: LogDouble, url: str) -> None:
    double.served_lines = double.lines[:700] + double.lines[701:]
    out = failed(verify(url, *pinned()), "log")
    assert "entry 700 says it is entry 701" in out


def test_a_reordered_pair_fails(double: LogDouble, url: str) -> None:
    served = list(double.lines)
    served[1500], served[1501] = served[1501], served[1500]
    double.served_lines = served
    out = failed(verify(url, *pinned()), "log")
    assert "entry 1500 says it is entry 1501" in out


def test_a_short_log_fails(double: LogDouble, url: str) -> None:
    double.served_lines = double.lines[:-1]
    out = failed(verify(url, *pinned()), "log")
    assert "got 499 lines" in out


def test_a_bad_signature_fails(double: LogDouble, url: str) -> None:
    text, _, sig_line = double.note.partition("\n\n")
    name, _, sig64 = sig_line.rstrip("\n").rpartition(" ")
    flipped = sig64[:20] + ("A" if sig64[20] != "A" else "B") + sig64[21:]
    double.note = f"{text}\n\n{name} {flipped}\n"
    out = failed(verify(url, *pinned()), "signature")
    assert "does not verify" in out


def test_a_checkpoint_signed_by_another_key_fails(double: LogDouble, url: str) -> None:
    impostor = SignerKey(SIGNER.name, hashlib.sha256(b"impostor").digest())
    double.signer = impostor
    double.note = double.sign(double.size)
    out = failed(verify(url, *pinned()), "signature")
    assert "no signature by a known key" in out
    # Unpinned, the impostor's key would be served with its checkpoint: that is what the
    # warning is about, and what --state catches the next time (see below).


def test_a_checkpoint_for_another_statement_fails(double: LogDouble, url: str) -> None:
    other = LogDouble(double.lines, statement_id="other-statement")
    double.note = other.note
    out = failed(verify(url, *pinned()), "origin")
    assert "'undersign.test/undersign/other-statement'" in out


def test_a_live_count_past_the_checkpoint_is_reported_not_failed(
    double: LogDouble, url: str
) -> None:
    double.live_count = double.tally.count + 3
    result = verify(url, *pinned())
    assert result.exit_code == 0, result.output
    assert "moved past this checkpoint" in result.output


def test_a_receipt_is_found_proved_and_its_status_shown(double: LogDouble, url: str) -> None:
    endorsements = [i for i, status in double.tally.statuses().items() if status == "counted"]
    struck = [i for i, status in double.tally.statuses().items() if status == "struck"]
    result = verify(url, *pinned(), "--receipt", secret(endorsements[10]))
    assert result.exit_code == 0, result.output
    assert f"entry {endorsements[10]:,} of the log; status: counted" in result.output
    result = verify(url, *pinned(), "--receipt", secret(struck[0]))
    assert result.exit_code == 0, result.output
    assert "status: struck" in result.output
    # From stdin, so the secret stays out of shell history and process lists.
    result = CliRunner().invoke(
        main,
        ["verify", url, STATEMENT, *pinned(), "--receipt", "-"],
        input=secret(struck[0]) + "\n",
    )
    assert result.exit_code == 0, result.output
    assert f"entry {struck[0]:,} of the log; status: struck" in result.output


def test_a_receipt_sealed_after_the_checkpoint_is_proved_against_its_own(
    double: LogDouble, url: str
) -> None:
    old_note = double.note
    i = double.size
    double.append(
        [
            endorse_entry(
                i,
                "2026-04-01T10:00Z",
                country=None,
                source="direct",
                name=None,
                text="0" * 64,
                commit=hashlib.sha256(b"late").hexdigest(),
            ).line
        ]
    )
    new_note = double.note
    double.note = old_note  # the checkpoint endpoint lags behind the receipt's
    double.served_lines = double.lines
    result = verify(url, *pinned(), "--receipt", "late")
    assert result.exit_code == 0, result.output
    assert f"entry {i:,}, sealed after this checkpoint" in result.output
    assert any("proof/consistency?from=2500&to=2501" in r for r in double.requests)
    assert new_note != old_note


def test_unknown_or_lying_receipts_fail(double: LogDouble, url: str) -> None:
    out = failed(verify(url, *pinned(), "--receipt", "never issued"), "receipt")
    assert "no endorsement for this receipt" in out
    # The service points the receipt at someone else's entry.
    mine, theirs = sorted(double.commits.values())[:2]
    double.commits[hashlib.sha256(secret(mine).encode()).hexdigest()] = theirs
    out = failed(verify(url, *pinned(), "--receipt", secret(mine)), "receipt")
    assert "does not carry your receipt's commitment" in out


def test_state_records_and_accepts_growth(double: LogDouble, url: str, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    first = verify(url, *pinned(), "--state", str(state))
    assert first.exit_code == 0, first.output
    recorded = json.loads(state.read_text())["logs"]["undersign.test/undersign/clean-air"]
    assert recorded["size"] == N
    assert recorded["checkpoint"] == double.note
    double.append([strike_entry(N, "2026-04-01T10:00Z", target=0, reason="spam").line])
    second = verify(url, *pinned(), "--state", str(state))
    assert second.exit_code == 0, second.output
    assert "extends the checkpoint recorded" in second.output
    assert f"({N:,} -> {N + 1:,} entries)" in second.output
    assert json.loads(state.read_text())["logs"]["undersign.test/undersign/clean-air"]["size"] == (
        N + 1
    )
    third = verify(url, *pinned(), "--state", str(state))
    assert third.exit_code == 0, third.output
    assert "the same checkpoint as recorded" in third.output


def test_a_rewritten_history_is_detected_loudly(log_lines: list[bytes], tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    honest = LogDouble(list(log_lines))
    with honest.serve() as url:
        assert verify(url, *pinned(), "--state", str(state)).exit_code == 0
    before = state.read_text()
    # Another history: one endorsement quietly replaced, then more entries on top. Served
    # consistently (its own checkpoint, proofs and log), so only the recorded checkpoint
    # can tell.
    victim = next(i for i, line in enumerate(log_lines) if b'"kind":"endorse"' in line)
    fake = endorse_entry(
        victim,
        "2026-03-01T00:00Z",
        country="KZ",
        source="direct",
        name="Someone",
        text="0" * 64,
        commit="1" * 64,
    )
    more = [entry.line for entry in synthetic_log(N + 300)[N:]]
    rewritten = [*log_lines[:victim], fake.line, *log_lines[victim + 1 :], *more]
    other = LogDouble(rewritten)
    with other.serve() as url:
        plain = verify(url, *pinned())
        assert plain.exit_code == 0, "on its own, the rewritten log is self-consistent"
        result = verify(url, *pinned(), "--state", str(state))
    out = failed(result, "consistency")
    assert "FORK OR REWRITTEN HISTORY" in out
    assert f"the consistency proof from size {N} to {N + 300} fails" in out
    assert honest.note in out and other.note in out  # both signed checkpoints, as evidence
    assert state.read_text() == before, "a failed run records nothing"


def test_a_shrunken_log_is_detected(double: LogDouble, url: str, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    assert verify(url, *pinned(), "--state", str(state)).exit_code == 0
    smaller = LogDouble(double.lines[: N - 10])
    with smaller.serve() as url2:
        out = failed(verify(url2, *pinned(), "--state", str(state)), "consistency")
    assert f"the log shrank from {N:,} entries" in out


def test_a_served_key_change_is_refused_with_state(
    double: LogDouble, url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state.json"
    assert verify(url, "--state", str(state)).exit_code == 0
    impostor = SignerKey(SIGNER.name, hashlib.sha256(b"impostor").digest())
    double.signer = impostor
    double.vkey = impostor.verifier().vkey
    double.note = double.sign(double.size)
    out = failed(verify(url, "--state", str(state)), "key")
    assert "the service now serves the log key" in out


def test_network_and_usage_errors_exit_1(url: str) -> None:
    out = failed(verify(url, *pinned(), statement="no-such"), "network")
    assert "HTTP 404" in out
    failed(verify("file:///etc", *pinned()), "usage")
    failed(verify(url, "--key", "not a key"), "key")


def test_verify_needs_no_app_and_no_redis(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import widget

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("verify built the app")

    monkeypatch.setattr(widget, "create_app", refuse)
    monkeypatch.setenv("WIDGET_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    result = verify(url, *pinned())
    assert result.exit_code == 0, result.output
