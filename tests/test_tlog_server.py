"""The transparency log's server side against real Redis, in process: what the store
appends with each endorsement, strike, unstrike and withdrawal; sealing; the log's API
(key, checkpoint, pages, proofs, receipts, texts, withdrawals) and its errors; the upgrade
path; what the public log never shows; the seal lag in the console and /metrics; and
``undersign log-key``."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from checks import (
    STATEMENT,
    assert_counted,
    assert_problem,
    endorsements_url,
    legacy_endorse,
    person,
    seen_hmacs,
    write_statement,
)
from click.testing import CliRunner
from conftest import ADMIN_TOKEN, SECRET
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from test_metrics import sample
from tlog_checks import (
    api,
    audit,
    check_consistency,
    check_receipt,
    getter,
    head,
    verifier_key,
)

from widget.cli import main
from widget.config import ConfigError
from widget.privacy import email_hmac
from widget.store import Store
from widget.tlog import tree
from widget.tlog.entries import commitment
from widget.tlog.note import SignerKey

MakeApp = Callable[..., Flask]
BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ADMIN = f"/api/v1/admin/statements/{STATEMENT}"


def seal(app: Flask, statement: str = STATEMENT) -> int:
    return int(app.extensions["undersign.sealer"].seal_all(statement))


def endorse(
    client: FlaskClient, n: int | str, statement: str = STATEMENT, **extra: Any
) -> dict[str, str]:
    response = client.post(endorsements_url(statement), json=person(n, **extra))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    return assert_counted(body, body["count"])


def entry_ids(app: Flask, statement: str = STATEMENT) -> list[str]:
    return [e.id for e in app.extensions["undersign.store"].log(statement)]


def count(client: FlaskClient, statement: str = STATEMENT) -> int:
    return int(client.get(api(statement, "count")).get_json()["count"])


def moderate(
    client: FlaskClient, entry: str, action: str = "strike", statement: str = STATEMENT, **body: str
) -> Any:
    url = f"/api/v1/admin/statements/{statement}/endorsements/{entry}/{action}"
    response = client.post(url, json=body or None, headers=BEARER)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def withdraw(client: FlaskClient, secret: str, statement: str = STATEMENT) -> Any:
    return client.post(api(statement, "withdrawals"), json={"secret": secret})


def test_every_event_is_a_line_in_order_and_the_signed_root_recounts_to_the_count(
    app: Flask, client: FlaskClient
) -> None:
    receipts = [endorse(client, i, country="KZ", public=i % 2 == 0) for i in range(6)]
    ids = entry_ids(app)
    moderate(client, ids[1], reason="spam")
    moderate(client, ids[1])
    moderate(client, ids[2])
    moderate(client, ids[2], "unstrike")
    assert withdraw(client, receipts[3]["secret"]).get_json() == {"status": "withdrawn", "count": 4}
    assert seal(app) == 10
    found = audit(getter(client))
    kinds = [(e["kind"], e.get("target")) for e in found.entries]
    assert kinds == [("endorse", None)] * 6 + [
        ("strike", 1),  # the second strike of the same entry changed nothing: no line
        ("strike", 2),
        ("unstrike", 2),
        ("withdraw", 3),
    ]
    assert found.entries[6]["reason"] == "spam"
    assert found.tally.count == count(client) == 4
    assert found.tally.statuses() == {
        0: "counted",
        1: "struck",
        2: "counted",
        3: "withdrawn",
        4: "counted",
        5: "counted",
    }
    assert app.extensions["undersign.store"].sealed_count(STATEMENT) == 4
    # public endorsers show a first name and country; the others neither
    shown = [(e["name"], e["country"]) for e in found.entries[:2]]
    assert shown == [("Person", "KZ"), (None, None)]
    assert {e["source"] for e in found.entries[:6]} == {"direct"}
    statement = app.extensions["undersign.statements"].get(STATEMENT)
    assert {e["text"] for e in found.entries[:6]} == {statement.text("en").sha256}
    for n, receipt in enumerate(receipts):
        key = verifier_key(getter(client))
        answer = check_receipt(getter(client), STATEMENT, receipt["secret"], key)
        assert answer["index"] == n
        assert answer["status"] == found.tally.status(n)


def test_checkpoints_grow_consistently_and_proofs_match_the_tree(
    app: Flask, client: FlaskClient
) -> None:
    get = getter(client)
    key = verifier_key(get)
    heads = []
    for batch in range(5):
        for i in range(batch * 3 + 1):
            endorse(client, f"{batch}-{i}")
        seal(app)
        heads.append(head(get, STATEMENT, key))
    assert [h.size for h in heads] == [1, 5, 12, 22, 35]
    for old in heads:
        for new in heads:
            if old.size <= new.size:
                check_consistency(get, STATEMENT, old, new)
    found = audit(get, STATEMENT, key)
    hashes = [tree.leaf_hash(line) for line in found.lines]
    for size in (1, 2, 7, 35):
        for index in range(size):
            proof = client.get(api(STATEMENT, f"proof/inclusion?index={index}&size={size}"))
            assert proof.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            hashes_ = [base64.b64decode(h) for h in proof.get_json()["hashes"]]
            root = tree.root_from_leaf_hashes(hashes[:size])
            tree.verify_inclusion(index, size, hashes[index], hashes_, root)


QUIET = "quiet"


def quiet_app(make_app: MakeApp, folder: Path) -> Flask:
    """An app with a statement no other process knows (a session-wide test server may seal
    the bundled one at any moment), whose background sealing is held off by a lease."""
    write_statement(folder, QUIET)
    app = make_app(STATEMENTS_DIR=str(folder))
    store: Store = app.extensions["undersign.store"]
    store.redis.delete(store.key(QUIET, "lease:seal"))  # the app's, from opening the log
    assert store.lease(QUIET, "seal", "held-by-the-test", 120)
    return app


def test_a_receipt_is_found_once_sealed_and_a_duplicate_gets_none(
    make_app: MakeApp, tmp_path: Path
) -> None:
    app = quiet_app(make_app, tmp_path)
    client = app.test_client()
    url = endorsements_url(QUIET)

    def post(n: int) -> Any:
        return client.post(url, json=person(n))

    first = post(1)
    assert first.status_code == 201
    receipt = assert_counted(first.get_json(), 1)
    assert receipt["url"] == f"http://localhost/s/{QUIET}/receipt#{receipt['secret']}"
    # The first checkpoint is made on first ask; a receipt sealed in it is found at once.
    found = client.get(api(QUIET, f"receipts/{commitment(receipt['secret'])}"))
    assert found.status_code == 200 and found.get_json()["index"] == 0
    second = assert_counted(post(2).get_json(), 2)
    missing = client.get(api(QUIET, f"receipts/{commitment(second['secret'])}"))
    assert_problem(missing, 404)  # not sealed yet
    app.extensions["undersign.sealer"].seal_all(QUIET)
    found = client.get(api(QUIET, f"receipts/{commitment(second['secret'])}"))
    assert found.status_code == 200 and found.get_json()["index"] == 1
    assert found.headers["Cache-Control"] == "no-store"
    again = post(2)
    assert again.status_code == 200 and again.get_json() == {"status": "duplicate", "count": 2}
    assert_problem(client.get(api(QUIET, f"receipts/{'0' * 64}")), 404)
    assert_problem(client.get(api(QUIET, "receipts/nothex")), 404)


def test_withdrawal_erases_the_private_record_and_keeps_the_public_line(
    app: Flask, client: FlaskClient, redis_client: Redis
) -> None:
    endorse(client, 0)
    receipt = endorse(client, 1, name="Zhanna Secretova", country="KZ", public=True)
    hmacs_before = set(seen_hmacs(redis_client))
    assert len(hmacs_before) == 2
    who = [k for k in redis_client.scan_iter(f"us:{{{STATEMENT}}}:who:*")]
    assert any(b"Secretova" in v for k in who for v in redis_client.hvals(k))
    answer = withdraw(client, receipt["secret"])
    assert answer.status_code == 200 and answer.get_json() == {"status": "withdrawn", "count": 1}
    assert answer.headers["Cache-Control"] == "no-store"
    # the private record, the email HMAC and the record entry are gone
    for key in redis_client.scan_iter(f"us:{{{STATEMENT}}}:who:*"):
        assert not any(b"Secretova" in v for v in redis_client.hvals(key))
    assert len(set(seen_hmacs(redis_client))) == 1
    assert redis_client.xlen(f"us:{{{STATEMENT}}}:log") == 1
    assert [e.name for e in app.extensions["undersign.store"].log(STATEMENT)] == ["Person 0"]
    stats = client.get(f"{ADMIN}/stats", headers=BEARER).get_json()
    assert stats["count"] == 1 and stats["by_country"] == {}
    # again: the same answer, nothing new in the log
    assert withdraw(client, receipt["secret"]).get_json() == {"status": "withdrawn", "count": 1}
    seal(app)
    found = audit(getter(client))
    assert [e["kind"] for e in found.entries] == ["endorse", "endorse", "withdraw"]
    assert (found.entries[1]["name"], found.entries[1]["country"]) == ("Zhanna", "KZ")
    assert found.tally.status(1) == "withdrawn" and found.tally.count == 1
    status = client.get(api(STATEMENT, f"receipts/{commitment(receipt['secret'])}")).get_json()
    assert status["status"] == "withdrawn"
    # the same person may endorse again, and is counted anew
    back = endorse(client, 1)
    assert back["secret"] != receipt["secret"] and count(client) == 2


def test_withdrawing_a_struck_endorsement_leaves_the_count(app: Flask, client: FlaskClient) -> None:
    receipt = endorse(client, 0)
    endorse(client, 1)
    ids = entry_ids(app)
    assert moderate(client, ids[0])["count"] == 1
    assert withdraw(client, receipt["secret"]).get_json() == {"status": "withdrawn", "count": 1}
    seal(app)
    found = audit(getter(client))
    assert found.tally.count == count(client) == 1
    assert found.tally.status(0) == "withdrawn"


def test_withdrawal_errors_are_problems_and_change_nothing(
    app: Flask, client: FlaskClient, redis_client: Redis
) -> None:
    endorse(client, 0)
    url = api(STATEMENT, "withdrawals")
    for body in ({}, {"secret": 5}, {"secret": "short"}, {"secret": "x" * 201}, ["x"]):
        problem = assert_problem(client.post(url, json=body), 422)
        assert "secret" in problem["errors"]
    assert_problem(client.post(url, json={"secret": "a-receipt-nobody-was-given"}), 404)
    assert_problem(client.post(url, data="{", content_type="application/json"), 400)
    unsupported = assert_problem(client.post(url, data="secret=x"), 415)
    assert unsupported["detail"].startswith("Send the withdrawal as JSON")
    assert_problem(client.post(api("nope", "withdrawals"), json={"secret": "x" * 30}), 404)
    assert count(client) == 1 and app.extensions["undersign.store"].log_size(STATEMENT) == 1


def test_withdrawal_attempts_are_rate_limited_per_client_and_say_so(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app(WITHDRAW_LIMIT="2/minute").test_client()
    endorse(client, 0)
    url = api(STATEMENT, "withdrawals")
    guesses = [client.post(url, json={"secret": f"a-guessed-secret-{i:020d}"}) for i in range(2)]
    assert [g.status_code for g in guesses] == [404, 404]
    limited = client.post(url, json={"secret": "a-guessed-secret-third-one-x"})
    problem = assert_problem(limited, 429)
    assert problem["limit"] == "withdraw" and int(limited.headers["Retry-After"]) >= 1
    assert problem["detail"].startswith("Too many withdrawal attempts from your address")
    assert count(client) == 1


def test_log_api_arguments_are_checked(app: Flask, client: FlaskClient) -> None:
    for i in range(3):
        endorse(client, i)
    seal(app)
    bad = {
        "log?limit=0": 422,
        "log?limit=1001": 422,
        "log?start=-1": 400,
        "log?start=x": 400,
        "proof/inclusion?index=3&size=3": 422,
        "proof/inclusion?index=0&size=4": 422,
        "proof/inclusion?index=0&size=0": 422,
        "proof/inclusion?size=2": 400,
        "proof/consistency?from=2&to=1": 422,
        "proof/consistency?from=1&to=4": 422,
        "proof/consistency?from=0&to=2": 422,
        "texts/" + "0" * 64: 404,
    }
    for path, status in bad.items():
        assert_problem(client.get(api(STATEMENT, path)), status)
    assert_problem(client.get(api("nope", "checkpoint")), 404)
    assert_problem(client.get(api("nope", "log")), 404)
    # a page past the end is short, and only a full page is immutable
    tail = client.get(api(STATEMENT, "log?start=2&limit=5"))
    assert tail.mimetype == "application/jsonl" and tail.get_data().count(b"\n") == 1
    assert tail.headers["Cache-Control"] == "public, max-age=5"
    assert client.get(api(STATEMENT, "log?start=9")).get_data() == b""
    full = client.get(api(STATEMENT, "log?start=0&limit=3"))
    assert full.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    key = client.get("/api/v1/log/key")
    assert key.mimetype == "text/plain" and key.get_data(as_text=True).count("\n") == 1


def test_each_entry_names_a_text_version_anyone_can_read(app: Flask, client: FlaskClient) -> None:
    endorse(client, 0, lang="ru")
    endorse(client, 1)
    seal(app)
    found = audit(getter(client))
    texts = [e["text"] for e in found.entries]
    statement = app.extensions["undersign.statements"].get(STATEMENT)
    assert texts == [statement.text("ru").sha256, statement.text("en").sha256]
    for digest in texts:
        markdown = client.get(api(STATEMENT, f"texts/{digest}"))
        assert markdown.status_code == 200 and markdown.mimetype == "text/markdown"
        assert hashlib_hex(markdown.get_data()) == digest


def hashlib_hex(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_upgrade_seals_earlier_endorsements_and_strikes_first_in_order(
    make_app: MakeApp, redis_client: Redis, tmp_path: Path
) -> None:
    key = f"us:{{{QUIET}}}:"
    hmacs = [email_hmac(SECRET, QUIET, f"person{i}@example.org") for i in range(4)]
    ids = [
        legacy_endorse(redis_client, QUIET, hmacs[0], "Early Bird", c="KZ", p="1"),
        legacy_endorse(redis_client, QUIET, hmacs[1], "Hidden Name", c="DE"),
        legacy_endorse(redis_client, QUIET, hmacs[2], "Struck Later"),
    ]
    # the third was struck by a release before the log (the count went down then)
    stamp = int(ids[2].split("-")[0]) // 1000 + 1
    mark = {"by": "op", "at": stamp, "reason": "spam"}
    redis_client.hset(key + "struck", ids[2], json.dumps(mark))
    redis_client.decr(key + "count")
    write_statement(tmp_path, QUIET)
    app = make_app(STATEMENTS_DIR=str(tmp_path))
    client = app.test_client()
    assert redis_client.hget(key + "state", "tlog") == b"ready"
    seal(app, QUIET)
    found = audit(getter(client), QUIET)
    assert [(e["kind"], e.get("name"), e.get("country")) for e in found.entries] == [
        ("endorse", "Early", "KZ"),
        ("endorse", None, None),
        ("endorse", None, None),
        ("strike", None, None),
    ]
    assert found.entries[3]["target"] == 2 and found.entries[3]["reason"] == "spam"
    assert found.tally.count == count(client, QUIET) == 2
    # the same address again is a duplicate (dedup by the earlier releases' HMACs)...
    again = client.post(endorsements_url(QUIET), json=person(0))
    assert again.status_code == 200 and again.get_json()["status"] == "duplicate"
    # ...and moderation of earlier entries lands in the log with the right target
    moderate(client, ids[0], statement=QUIET)
    moderate(client, ids[2], "unstrike", statement=QUIET)
    new = endorse(client, 3, QUIET)
    seal(app, QUIET)
    found = audit(getter(client), QUIET)
    assert [(e["kind"], e.get("target")) for e in found.entries[4:]] == [
        ("strike", 0),
        ("unstrike", 2),
        ("endorse", None),
    ]
    assert found.tally.count == count(client, QUIET) == 3
    check_receipt(getter(client), QUIET, new["secret"], verifier_key(getter(client)))
    # a second app (another worker) finds the log ready and adds nothing
    make_app(STATEMENTS_DIR=str(tmp_path))
    assert app.extensions["undersign.store"].log_size(QUIET) == 7


def test_while_the_log_is_prepared_writes_are_503_and_change_nothing(
    make_app: MakeApp, redis_client: Redis, tmp_path: Path
) -> None:
    app = quiet_app(make_app, tmp_path)  # (nobody else may open the log meanwhile)
    client = app.test_client()
    receipt = endorse(client, 0, QUIET)
    entry = entry_ids(app, QUIET)[0]
    redis_client.hdel(f"us:{{{QUIET}}}:state", "tlog")  # as while an upgrade prepares it
    before = app.extensions["undersign.store"].log_size(QUIET)
    admin = f"/api/v1/admin/statements/{QUIET}/endorsements/{entry}"
    for response in (
        client.post(f"{admin}/strike", json={"reason": "x"}, headers=BEARER),
        client.post(f"{admin}/unstrike", headers=BEARER),
        client.post(endorsements_url(QUIET), json=person(1)),
        withdraw(client, receipt["secret"], QUIET),
    ):
        problem = assert_problem(response, 503)
        assert problem["type"].endswith("log-preparing")
        assert response.headers["Retry-After"] == "5"
    assert app.extensions["undersign.store"].log_size(QUIET) == before
    assert count(client, QUIET) == 1
    env = cli_env(app, WIDGET_STATEMENTS_DIR=str(tmp_path))
    result = CliRunner(env=env).invoke(main, ["strike", QUIET, entry])
    assert result.exit_code == 1 and "being prepared" in result.output


def test_a_strike_reason_must_fit_the_public_log(app: Flask, client: FlaskClient) -> None:
    endorse(client, 0)
    entry = entry_ids(app)[0]
    for reason in ("bad\x00reason", "lone \ud800 surrogate"):
        url = f"{ADMIN}/endorsements/{entry}/strike"
        body = json.dumps({"reason": reason})
        problem = assert_problem(
            client.post(url, data=body, content_type="application/json", headers=BEARER), 422
        )
        assert "reason" in problem["errors"]
    assert count(client) == 1 and app.extensions["undersign.store"].log_size(STATEMENT) == 1


PRIVATE_NAMES = ("Secretsurname", "Hiddenfirst", "Quietperson")


def test_no_email_hmac_address_or_private_name_in_any_public_log_byte(
    app: Flask, client: FlaskClient, redis_client: Redis
) -> None:
    """A grep over every log line, checkpoint, proof and receipt answer."""
    address = "203.0.113.77"
    emails = [f"Hiddenfirst.{i}@Example.org" for i in range(6)]
    people = [
        {"name": "Aigerim Secretsurname", "public": True, "country": "KZ"},
        {"name": "Hiddenfirst Secretsurname", "public": False, "country": "KZ"},
        {"name": "Quietperson", "public": False},
        {"name": "Hiddenfirst", "public": False, "country": "DE"},
        {"name": "Bolat Secretsurname", "public": True},
        {"name": "Quietperson Hiddenfirst", "public": False},
    ]
    receipts = []
    for email, who in zip(emails, people, strict=True):
        body = {"email": email, "consent": True, **who}
        response = client.post(endorsements_url(), json=body, environ_base={"REMOTE_ADDR": address})
        assert response.status_code == 201
        receipts.append(response.get_json()["receipt"]["secret"])
    ids = entry_ids(app)
    client.post(f"{ADMIN}/endorsements/{ids[1]}/strike", json={"reason": "dup"}, headers=BEARER)
    withdraw(client, receipts[2])
    seal(app)
    get = getter(client)
    found = audit(get)
    published = b"".join(found.lines) + found.head.note.encode()
    size = found.head.size
    for index in range(size):
        published += get(api(STATEMENT, f"proof/inclusion?index={index}&size={size}"))
    for old in range(1, size + 1):
        published += get(api(STATEMENT, f"proof/consistency?from={old}&to={size}"))
    for secret in receipts:
        published += get(api(STATEMENT, f"receipts/{commitment(secret)}"))
    published += get("/api/v1/log/key")
    text = published.decode()
    forbidden = [address, "203.0.113", *PRIVATE_NAMES, "Secretsurname"]
    for email in emails:
        normal = email.lower()
        forbidden += [email, normal, normal.split("@")[0], "example.org"]
        digest = email_hmac(SECRET, STATEMENT, normal)
        forbidden += [digest, digest[:32], base64.b64encode(bytes.fromhex(digest)).decode()[:20]]
    forbidden += [h for h in seen_hmacs(redis_client)]
    for word in forbidden:
        assert word.lower() not in text.lower(), word
    # what is there: the first names of those who chose to be shown, nothing else
    names = {e.get("name") for e in found.entries if e["kind"] == "endorse"}
    assert names == {"Aigerim", "Bolat", None}
    assert not re.search(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b", text)


def test_the_console_and_metrics_show_the_seal_lag(make_app: MakeApp, tmp_path: Path) -> None:
    app = quiet_app(make_app, tmp_path)
    client = app.test_client()
    stats_url = f"/api/v1/admin/statements/{QUIET}/stats"
    for i in range(3):
        assert client.post(endorsements_url(QUIET), json=person(i)).status_code == 201
    app.extensions["undersign.sealer"].seal_all(QUIET)
    for i in range(3, 5):
        assert client.post(endorsements_url(QUIET), json=person(i)).status_code == 201
    stats = client.get(stats_url, headers=BEARER).get_json()
    assert {k: stats["log"][k] for k in ("size", "sealed", "sealed_count", "unsealed")} == {
        "size": 5,
        "sealed": 3,
        "sealed_count": 3,
        "unsealed": 2,
    }
    assert 0 <= stats["log"]["lag_seconds"] <= 5
    metrics = client.get("/metrics", headers=BEARER).get_data(as_text=True)
    assert sample(metrics, "undersign_log_unsealed", f'statement="{QUIET}"') == 2
    app.extensions["undersign.sealer"].seal_all(QUIET)
    metrics = client.get("/metrics", headers=BEARER).get_data(as_text=True)
    assert f'undersign_log_unsealed{{statement="{QUIET}"}} 0.0' in metrics
    stats = client.get(stats_url, headers=BEARER).get_json()
    assert stats["log"]["unsealed"] == 0 and stats["log"]["lag_seconds"] == 0


def cli_env(app: Flask, **extra: str) -> dict[str, str]:
    return {
        "WIDGET_REDIS_URL": app.config["REDIS_URL"],
        "WIDGET_SECRET_KEY": SECRET,
        **extra,
    }


def test_log_key_prints_the_served_verifier_key_and_generates_seeds(
    app: Flask, client: FlaskClient
) -> None:
    served = client.get("/api/v1/log/key").get_data(as_text=True)
    result = CliRunner(env=cli_env(app)).invoke(main, ["log-key"], catch_exceptions=False)
    assert result.exit_code == 0 and result.output == served
    seeds = set()
    for _ in range(2):
        made = CliRunner().invoke(main, ["log-key", "--generate"], catch_exceptions=False)
        assert made.exit_code == 0
        seed = made.output.strip()
        assert len(base64.b64decode(seed, validate=True)) == 32
        seeds.add(seed)
    assert len(seeds) == 2
    # a configured key is the one used, named by the public host
    env = cli_env(app, WIDGET_LOG_KEY=seed, WIDGET_PUBLIC_URL="https://sign.example.org")
    pinned = CliRunner(env=env).invoke(main, ["log-key"], catch_exceptions=False).output.strip()
    expected = SignerKey.from_base64_seed("sign.example.org/undersign", seed).verifier().vkey
    assert pinned == expected


def test_the_key_kept_in_redis_is_encrypted_and_shared_by_every_app(
    make_app: MakeApp, redis_client: Redis
) -> None:
    first = make_app()
    one = first.test_client().get("/api/v1/log/key").get_data()
    two = make_app().test_client().get("/api/v1/log/key").get_data()
    assert one == two
    kept = redis_client.get("us:logkey")
    assert kept is not None and len(kept) == 12 + 32 + 16  # nonce, seed, tag: never in clear
    assert base64.b64decode(one.decode().strip().split("+", 2)[2])[1:] not in kept
    other = make_app(SECRET_KEY="another-secret-key-0123456789-abcdefghijklmnop")
    with pytest.raises(ConfigError, match="another WIDGET_SECRET_KEY"):
        other.test_client().get("/api/v1/log/key")
    # a process with the wrong secret never puts a key of its own in Redis, even once the
    # kept one is gone (the first app, still running, may offer its own back meanwhile)
    redis_client.delete("us:logkey")
    with pytest.raises(ConfigError, match="another WIDGET_SECRET_KEY"):
        other.test_client().get("/api/v1/log/key")
    assert redis_client.get("us:logkey") in (None, kept)
    # Redis loses it (a flush, an older backup): a running process offers its own again
    redis_client.delete("us:logkey")
    first.extensions["undersign.sealer"].keep_key()
    assert redis_client.get("us:logkey") == kept
    # ...or takes the one a process started meanwhile made, so that all sign with one key
    redis_client.delete("us:logkey")
    late = make_app()
    made = late.test_client().get("/api/v1/log/key").get_data()
    assert made != one
    first.extensions["undersign.sealer"].keep_key()
    assert first.test_client().get("/api/v1/log/key").get_data() == made


def test_a_new_log_key_signs_the_latest_checkpoint_again(make_app: MakeApp, tmp_path: Path) -> None:
    app = quiet_app(make_app, tmp_path)
    client = app.test_client()
    endorse(client, 0, QUIET)
    seal(app, QUIET)
    before = client.get(api(QUIET, "checkpoint")).get_data(as_text=True)
    seed = base64.b64encode(b"k" * 32).decode()
    rotated = make_app(LOG_KEY=seed, STATEMENTS_DIR=str(tmp_path))
    rotated.extensions["undersign.sealer"].seal(QUIET)
    get = getter(rotated.test_client())
    after = head(get, QUIET, verifier_key(get))
    assert after.note != before and after.size == 1
    assert after.note.split("\n")[:3] == before.split("\n")[:3]  # the same checkpoint


def test_sealing_refuses_a_stale_seal(app: Flask, client: FlaskClient) -> None:
    """Two sealers racing: the second one's seal (from the same old size) is refused, so
    there is one tree whatever the number of processes."""
    store: Store = app.extensions["undersign.store"]
    endorse(client, 0)
    seal(app)
    endorse(client, 1)
    size, note = store.log_head(STATEMENT)
    assert seal(app) == 2
    assert not store.seal(STATEMENT, size, size + 1, {0: b"\x00" * 32}, note or "", [("e", 1)])
    assert store.log_head(STATEMENT)[0] == 2
    audit(getter(client))


def test_lines_are_stored_packed_and_served_exactly() -> None:
    """The store keeps each line packed (fragments as single bytes, digests as raw bytes)
    and gives back the exact canonical bytes, whole lines and filled templates alike."""
    from tlog_double import synthetic_log

    from widget.store import _pack, _unpack
    from widget.tlog.entries import endorse_template, moderation_template

    odd = [
        strike_line
        for strike_line in (
            moderation_template("strike", "2026-03-01T09:30Z", reason=reason).fill(7, 3)
            for reason in (
                'quote " and \\ and \n and \x01 and https://x null direct',
                ',"kind":"endorse","name": "}',
                'Z","commit":"' + "a" * 64,
                "\u202e\U0001f600",
            )
        )
    ]
    lines = [x.line for x in synthetic_log(3000, seed=5)] + odd
    packed = [_pack(line) for line in lines]
    assert [_unpack(p) for p in packed] == lines
    endorse = [x.line for x in synthetic_log(500) if b'"endorse"' in x.line]
    saved = sum(map(len, endorse)) - sum(len(_pack(x)) for x in endorse)
    assert saved / len(endorse) > 120  # bytes per endorsement line
    template = endorse_template(
        "2026-03-01T09:30Z",
        country="KZ",
        source="https://ally.example",
        name="Aigerim",
        text="ab" * 32,
        commit="cd" * 32,
    )
    head, tail = (_pack(p) for p in template.pieces)
    assert _unpack(head + b"123456" + tail) == template.fill(123456)
    strike = moderation_template("withdraw", "2026-03-01T09:30Z")
    a, b, c = (_pack(p) for p in strike.pieces)
    assert _unpack(a + b"42" + b + b"7" + c) == strike.fill(42, 7)
