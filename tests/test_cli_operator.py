"""The operator commands: export, strike/unstrike, open/close, watch, against real Redis."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from checks import seen_hmacs, wait_until
from click.testing import CliRunner
from conftest import ALLY, SECRET, STATEMENT
from test_admin import session_cookie_value, sign_in

from widget.cli import main

ENDORSE = f"/api/v1/statements/{STATEMENT}/endorsements"
EMAILS = [f"Person{i}@Example.org" for i in range(5)]


@pytest.fixture
def run(redis_server, redis_client):
    env = {
        "WIDGET_REDIS_URL": redis_server.url,
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_ALLOWED_ORIGINS": ALLY,
    }

    def invoke(*args: str) -> str:
        result = CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


@pytest.fixture
def endorsed(client):
    for i, email in enumerate(EMAILS):
        body = {"name": f"Name {i}", "email": email, "consent": True, "country": "KZ"}
        response = client.post(ENDORSE, json=body, headers={"Origin": ALLY})
        assert response.status_code == 201
    return client


def test_export_csv_and_jsonl_hold_no_personal_secrets(run, endorsed, redis_client, tmp_path):
    csv_path = tmp_path / "out.csv"
    output = run("export", STATEMENT, "--format", "csv", "-o", str(csv_path))
    assert f"Wrote {len(EMAILS)} endorsements" in output
    rows = list(csv.DictReader(csv_path.open()))
    assert sorted(r["name"] for r in rows) == [f"Name {i}" for i in range(len(EMAILS))]
    assert {r["source"] for r in rows} == {ALLY}
    assert {r["country"] for r in rows} == {"KZ"}

    jsonl_path = tmp_path / "out.jsonl"
    run("export", STATEMENT, "--format", "jsonl", "-o", str(jsonl_path))
    records = [json.loads(line) for line in jsonl_path.read_text().splitlines()]
    assert [r["id"] for r in records] == [r["id"] for r in rows]

    hmacs = seen_hmacs(redis_client)
    assert len(hmacs) == len(EMAILS)
    for text in (csv_path.read_text(), jsonl_path.read_text()):
        for secret in [*EMAILS, *(e.lower() for e in EMAILS), *hmacs, "127.0.0.1"]:
            assert secret not in text


def test_strike_and_unstrike(run, endorsed, tmp_path):
    path = tmp_path / "out.jsonl"
    run("export", STATEMENT, "--format", "jsonl", "-o", str(path))
    entry_id = json.loads(path.read_text().splitlines()[0])["id"]

    assert "count is now 4" in run("strike", STATEMENT, entry_id, "--reason", "spam")
    assert "already struck" in run("strike", STATEMENT, entry_id)
    assert run("count", STATEMENT).strip() == "4"
    run("export", STATEMENT, "--format", "jsonl", "-o", str(path))
    first = json.loads(path.read_text().splitlines()[0])
    assert first["struck"] is True and first["struck_by"] == "cli"

    assert "count is now 5" in run("unstrike", STATEMENT, entry_id)
    assert run("count", STATEMENT).strip() == "5"


def test_strike_unknown_entry_is_an_error(redis_server, redis_client):
    env = {"WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET}
    result = CliRunner(env=env).invoke(main, ["strike", STATEMENT, "1-0"])
    assert result.exit_code != 0
    assert "no endorsement" in result.output


def test_close_and_open(run, client):
    run("close", STATEMENT)
    body = {"name": "A", "email": "a@example.org", "consent": True}
    closed = client.post(ENDORSE, json=body)
    assert closed.status_code == 409
    assert client.get(f"/api/v1/statements/{STATEMENT}").get_json()["open"] is False
    run("open", STATEMENT)
    assert client.post(ENDORSE, json=body).status_code == 201


def test_export_to_standard_output(redis_server, endorsed, tmp_path):
    # `-o -` writes the data to standard output (for a pipe), and only the data.
    env = {"WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET}
    result = CliRunner(env=env).invoke(main, ["export", STATEMENT, "-o", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert sorted(r["name"] for r in rows) == [f"Name {i}" for i in range(len(EMAILS))]
    assert f"Wrote {len(EMAILS)} endorsements to standard output" in result.stderr
    assert not (tmp_path / "-").exists() and not Path("-").exists()
    lines = CliRunner(env=env).invoke(main, ["export", STATEMENT, "--format", "jsonl", "-o", "-"])
    assert len([json.loads(line) for line in lines.stdout.splitlines()]) == len(EMAILS)


def test_watch_once_shows_counts_per_source(run, endorsed):
    lines = run("watch", "--once").splitlines()
    statement_line = next(line for line in lines if STATEMENT in line)
    ally_line = next(line for line in lines if ALLY in line)
    assert statement_line.split(STATEMENT, 1)[1].split()[1] == "5"
    assert ally_line.split(ALLY, 1)[1].split()[1] == "5"


def test_unknown_statement_is_an_error(redis_server, redis_client, tmp_path: Path):
    env = {"WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET}
    result = CliRunner(env=env).invoke(main, ["export", "nope", "-o", str(tmp_path / "x.csv")])
    assert result.exit_code != 0
    assert "no statement" in result.output


def test_sessions_revoke_all_ends_every_console_session(make_app, redis_client):
    app = make_app()
    cookies = []
    for _ in range(2):
        response = sign_in(app.test_client())
        assert response.status_code == 303
        cookies.append({"Cookie": f"undersign_admin={session_cookie_value(response)}"})
    client = app.test_client(use_cookies=False)
    for cookie in cookies:
        assert client.get("/api/v1/admin/statements", headers=cookie).status_code == 200

    result = app.test_cli_runner().invoke(args=["sessions", "revoke-all"])
    assert result.exit_code == 0, result.output
    assert result.output == "Revoked 2 admin sessions.\n"
    for cookie in cookies:
        assert client.get("/api/v1/admin/statements", headers=cookie).status_code == 401
        assert client.get("/admin", headers=cookie).status_code == 302
    again = app.test_cli_runner().invoke(args=["sessions", "revoke-all"])
    assert again.output == "Revoked 0 admin sessions.\n"
    assert not list(redis_client.scan_iter(match="us:admin:session:*"))


def test_sessions_revoke_all_is_an_undersign_command(run):
    assert "Revoked 0 admin sessions." in run("sessions", "revoke-all")


def test_block_add_list_remove(run, client, redis_client):
    body = {"name": "A", "email": "a@example.org", "consent": True}
    output = run("block", "add", "--network", "127.0.0.1", "--reason", "test farm")
    found = re.search(r"Blocked IPv4 hashed /32 \(block ([0-9a-f]{8})\)\.", output)
    assert found, output
    block_id = found.group(1)
    run("block", "add", "--email-domain", "Spam.Example", "--expires", "2099-01-01T00:00:00Z")
    listed = run("block", "list")
    assert block_id in listed and "IPv4 hashed /32" in listed and "test farm" in listed
    assert "spam.example" in listed and "until 2099-01-01T00:00:00Z" in listed
    assert "127.0.0.1" not in listed
    refused = client.post(ENDORSE, json=body)  # the test client is 127.0.0.1
    assert refused.status_code == 403
    assert run("block", "remove", block_id) == f"Removed block {block_id}.\n"
    assert block_id not in run("block", "list")
    deadline = time.monotonic() + 5  # every process applies it within BlockCache.TTL
    while client.post(ENDORSE, json=body).status_code != 201:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_block_errors(redis_server, redis_client):
    env = {"WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET}
    for args, words in (
        (["block", "add", "--network", "nonsense"], "network:"),
        (["block", "add"], "network:"),
        (["block", "add", "--email-domain", "x.example", "--expires", "later"], "expires:"),
        (["block", "remove", "deadbeef"], "no block"),
    ):
        result = CliRunner(env=env).invoke(main, args)
        assert result.exit_code != 0, args
        assert words in result.output, result.output
    assert redis_client.exists("us:blocks") == 0


def test_strike_bulk_dry_run_strike_and_undo(run, endorsed, client):
    for i in range(3):
        body = {"name": f"Other {i}", "email": f"o{i}@example.org", "consent": True}
        assert client.post(ENDORSE, json={**body, "country": "DE"}).status_code == 201
    dry = run("strike-bulk", STATEMENT, "--country", "kz", "--dry-run")
    found = re.fullmatch(
        r"5 endorsements match \(entries up to (\d+-\d+)\); nothing changed\.\n", dry
    )
    assert found, dry
    assert run("count", STATEMENT).strip() == "8"
    struck = run("strike-bulk", STATEMENT, "--country", "KZ", "--source", ALLY, "--reason", "farm")
    found = re.search(r"Struck 5 of 5 matching; count is now 3\. Bulk ([0-9a-f]{12})", struck)
    assert found, struck
    bulk_id = found.group(1)
    assert f"undersign undo-bulk {STATEMENT} {bulk_id}" in struck
    again = run("strike-bulk", STATEMENT, "--country", "KZ", "--reason", "farm", "--dry-run")
    assert again.startswith("0 endorsements match")
    assert (
        run("undo-bulk", STATEMENT, bulk_id) == f"Restored 5 of bulk {bulk_id}; count is now 8.\n"
    )
    assert "Restored 0" in run("undo-bulk", STATEMENT, bulk_id)


def test_strike_bulk_errors(redis_server, redis_client):
    env = {"WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET}
    for args, words in (
        (["strike-bulk", STATEMENT, "--reason", "x"], "filters:"),
        (["strike-bulk", STATEMENT, "--country", "KZ"], "reason:"),
        (["strike-bulk", STATEMENT, "--country", "XX", "--reason", "x"], "country:"),
        (["strike-bulk", STATEMENT, "--since", "yesterday", "--dry-run"], "since:"),
        (["strike-bulk", "nope", "--country", "KZ", "--dry-run"], "no statement"),
        (["undo-bulk", STATEMENT, "0123456789ab"], "no bulk strike"),
    ):
        result = CliRunner(env=env).invoke(main, args)
        assert result.exit_code != 0, args
        assert words in result.output, (args, result.output)


def test_watch_piped_prints_the_table_again_when_a_count_changes(
    redis_server, redis_client, client
):
    # Through `| tee` or into a service's journal, a table redrawn in place would show
    # nothing until the end: each change prints the whole table again, at once.
    env = {
        **os.environ,
        "WIDGET_REDIS_URL": redis_server.url,
        "WIDGET_SECRET_KEY": SECRET,
        "WIDGET_ALLOWED_ORIGINS": ALLY,
        "COLUMNS": "120",
    }
    command = [str(Path(sys.executable).parent / "undersign"), "watch", "--interval", "0.2"]
    watcher = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(watcher.stdout or []), daemon=True).start()

    def shown_counts() -> list[str]:
        rows = [line for line in lines if STATEMENT in line]
        return [row.split(STATEMENT, 1)[1].split()[1] for row in rows]

    try:
        wait_until(lambda: shown_counts() == ["0"], timeout=30)
        time.sleep(0.6)  # unchanged: not printed again
        assert shown_counts() == ["0"]
        body = {"name": "Ana", "email": "ana@example.org", "consent": True}
        assert client.post(ENDORSE, json=body, headers={"Origin": ALLY}).status_code == 201
        wait_until(lambda: shown_counts() == ["0", "1"], timeout=5)
    finally:
        watcher.terminate()
        watcher.wait(timeout=10)


def test_operator_mistakes_are_one_line_and_status_1(redis_server, redis_client, tmp_path):
    """A bad setting, a broken statement file, an unreachable Redis, a folder that does not
    exist: one line naming it, exit status 1, no traceback."""
    good = {"WIDGET_REDIS_URL": redis_server.url, "WIDGET_SECRET_KEY": SECRET}
    broken = tmp_path / "statements"
    broken.mkdir()
    (broken / "clean-air.md").write_text('+++\nid = "clean-air"\ntitle = "Air"\n+++\n\nText.\n')
    cases = [
        (
            {**good, "WIDGET_ENDORSE_LIMIT": "lots"},
            ["count", STATEMENT],
            "Error: WIDGET_ENDORSE_LIMIT: expected a limit like 5/minute;50/day, got 'lots'",
        ),
        ({**good, "WIDGET_STATEMENTS_DIR": str(broken)}, ["count", STATEMENT], "clean-air.md"),
        (
            {"WIDGET_REDIS_URL": "redis://127.0.0.1:1/0", "WIDGET_SECRET_KEY": SECRET},
            ["count", STATEMENT],
            "Error: cannot reach Redis: ",
        ),
        (good, ["export", STATEMENT, "-o", str(tmp_path / "missing" / "x.csv")], "Error: "),
        (good, ["watch", "--interval", "0", "--once"], "'--interval': 0.0 is not in the range"),
    ]
    for env, args, message in cases:
        result = CliRunner(env=env).invoke(main, args)
        assert result.exit_code in (1, 2), (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output and not isinstance(
            result.exception, (ValueError, RuntimeError, OSError)
        ), (args, result.output)
