"""Email confirmation (double opt-in), per statement: against the real redis-server, a real
``undersign worker`` and a real SMTP server (aiosmtpd), through the app and, where
processes matter, a real gunicorn.

The statement ``confirm-test`` has ``confirm = "email"`` (see ``conftest.confirm_dir``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from checks import person, statement_keys, store_state, wait_until
from conftest import (
    ADMIN_TOKEN,
    ALLY,
    CLUSTER,
    CONFIRMING,
    MAIL_FROM,
    SECRET,
    write_confirming_statement,
)
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import MailWorker, SmtpSink

from widget import create_app
from widget.config import ConfigError
from widget.i18n import catalogs
from widget.statements import StatementError, load_registry

MakeApp = Callable[..., Flask]
StartWorker = Callable[..., MailWorker]
URL = f"/api/v1/statements/{CONFIRMING}/endorsements"
PUBLIC = "http://localhost"
LINK = re.compile(r"http://localhost/c/([A-Za-z0-9_-]{32})")


def confirm_app(make_app: MakeApp, sink: SmtpSink, folder: Path, **overrides: Any) -> Flask:
    config = {
        "STATEMENTS_DIR": str(folder),
        "SMTP_URL": sink.url,
        "MAIL_FROM": MAIL_FROM,
        "PUBLIC_URL": PUBLIC,
        **overrides,
    }
    return make_app(**config)


def worker_env(sink: SmtpSink, folder: Path, **extra: str) -> dict[str, str]:
    return {
        "WIDGET_STATEMENTS_DIR": str(folder),
        "WIDGET_SMTP_URL": sink.url,
        "WIDGET_MAIL_FROM": MAIL_FROM,
        "WIDGET_PUBLIC_URL": PUBLIC,
        **extra,
    }


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def html_of(message: EmailMessage) -> str:
    part = message.get_body(("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def link_of(message: EmailMessage) -> str:
    match = LINK.search(text_of(message))
    assert match, text_of(message)
    return match.group(0)


def path_of(link: str) -> str:
    return link.removeprefix(PUBLIC)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def count(redis: Redis) -> int:
    return store_state(redis, CONFIRMING).count


@pytest.fixture
def setup(
    make_app: MakeApp, smtp_sink: SmtpSink, confirm_dir: Path, start_worker: StartWorker
) -> tuple[FlaskClient, MailWorker]:
    app = confirm_app(make_app, smtp_sink, confirm_dir)
    worker = start_worker(**worker_env(smtp_sink, confirm_dir))
    return app.test_client(), worker


# -- settings and front matter ------------------------------------------------------------


@pytest.mark.parametrize("missing", ["SMTP_URL", "MAIL_FROM", "PUBLIC_URL"])
def test_a_confirming_statement_needs_mail_settings(
    redis_client: Redis, redis_server: Any, confirm_dir: Path, missing: str
) -> None:
    config = {
        "REDIS_URL": redis_server.url,
        "SECRET_KEY": SECRET,
        "STATEMENTS_DIR": str(confirm_dir),
        "SMTP_URL": "smtp://127.0.0.1:2525",
        "MAIL_FROM": MAIL_FROM,
        "PUBLIC_URL": PUBLIC,
    }
    del config[missing]
    with pytest.raises(ConfigError, match=f"WIDGET_{missing} is required: statement"):
        create_app(config)


def test_confirm_in_front_matter(tmp_path: Path) -> None:
    registry = load_registry([write_confirming_statement(tmp_path / "ok")])
    statement = registry.get(CONFIRMING)
    assert statement is not None and statement.confirms_email
    assert statement.text("ru").title == "Чистый воздух для нашего города"
    assert not registry.get("dongelek-ystel").confirms_email  # type: ignore[union-attr]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.md").write_text('+++\ntitle = "X"\ngoal = 1\nconfirm = "sms"\n+++\n\nText.\n')
    with pytest.raises(StatementError, match="'confirm' must be"):
        load_registry([bad])


# -- the whole path, in one process and a real worker --------------------------------------------


def test_endorse_then_mail_then_confirm(
    setup: tuple[FlaskClient, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    client, worker = setup
    body = person(1, email="Aigerim.S@Example.org", country="KZ", public=True, lang="ru")
    response = client.post(URL, json=body, headers={"Origin": ALLY})
    assert response.status_code == 202
    assert response.get_json() == {"status": "pending", "count": 0}
    assert response.headers["Cache-Control"] == "no-store"
    assert count(redis_client) == 0

    (message,) = smtp_sink.wait_for(1, timeout=5)
    assert smtp_sink.received[0][1] == ["aigerim.s@example.org"]
    assert message["To"] == "aigerim.s@example.org"
    assert message["From"] == MAIL_FROM
    assert message["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in message
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Content-Language"] == "ru"
    assert message["Subject"] == "Подтвердите поддержку: Чистый воздух для нашего города"
    text, html = text_of(message), html_of(message)
    link = link_of(message)
    assert link in html
    assert "Откройте" not in text and "откройте ссылку" in text  # Russian, as typed in
    assert "Person 1" not in text + html  # nothing the endorser typed, not even the name

    # A GET (a mail scanner, a link preview) changes nothing, however often.
    before = statement_keys(redis_client, CONFIRMING)
    for _ in range(3):
        page = client.get(path_of(link))
        assert page.status_code == 200
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["Referrer-Policy"] == "same-origin"
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    after = statement_keys(redis_client, CONFIRMING)
    assert after == before
    html_page = page.get_data(as_text=True)
    assert '<html lang="ru"' in html_page
    assert "Чистый воздух для нашего города" in html_page
    assert "Подтвердить" in html_page and "Person 1" in html_page
    assert "<script" not in html_page  # works without JavaScript

    # The POST needs the page's single-use form token, from this site.
    assert client.post(path_of(link)).status_code == 400
    cross = client.post(
        path_of(link), data={"csrf": csrf_of(html_page)}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403 and "Cross-site form" in cross.get_data(as_text=True)
    assert count(redis_client) == 0
    confirmed = client.post(path_of(link), data={"csrf": csrf_of(html_page)})
    assert confirmed.status_code == 200, confirmed.get_data(as_text=True)
    done = confirmed.get_data(as_text=True)
    assert "Ваша поддержка подтверждена и учтена." in done
    assert re.search(r'value="http://localhost/s/confirm-test/receipt#[A-Za-z0-9_-]{32}"', done)
    assert 'href="https://ally.example"' in done  # back to the allied site
    assert count(redis_client) == 1
    state = store_state(redis_client, CONFIRMING)
    assert (state.log_length, state.seen, state.by_source) == (1, 1, {ALLY: 1})

    # Single use: the same form again, or a fresh one, finds the link used.
    again = client.post(path_of(link), data={"csrf": csrf_of(html_page)})
    assert again.status_code == 410
    assert "Эта ссылка уже была использована." in again.get_data(as_text=True)
    assert client.get(path_of(link)).status_code == 410
    assert count(redis_client) == 1
    assert "aigerim" not in worker.log().lower()


def endorse(client: FlaskClient, n: int | str, **extra: Any) -> Any:
    return client.post(URL, json=person(n, **extra))


def mails_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m for m in sink.messages() if m["To"] == address]


def forget_mailed(redis: Redis) -> None:
    """As if the 10 minutes between two mails to one address had passed."""
    for key in redis.scan_iter(f"us:{{{CONFIRMING}}}:cfm:*"):
        redis.delete(key)


def confirm_link(client: FlaskClient, link: str) -> Any:
    page = client.get(path_of(link))
    assert page.status_code == 200, page.get_data(as_text=True)
    return client.post(path_of(link), data={"csrf": csrf_of(page.get_data(as_text=True))})


def test_unknown_and_malformed_links_are_404_pages(
    make_app: MakeApp, smtp_sink: SmtpSink, confirm_dir: Path
) -> None:
    client = confirm_app(make_app, smtp_sink, confirm_dir).test_client()
    for path in ("/c/" + "A" * 32, "/c/short", "/c/" + "%00" * 20, "/c/" + "x" * 300):
        for method in ("GET", "POST"):
            response = client.open(path, method=method, headers={"Accept-Language": "de"})
            assert response.status_code == 404, (path, method)
            html = response.get_data(as_text=True)
            assert "Diesen Link kennen wir nicht." in html
            assert 'href="/?lang=de"' in html  # endorse again, from the list of statements


def test_an_expired_link_is_410_and_offers_to_endorse_again(
    make_app: MakeApp, smtp_sink: SmtpSink, confirm_dir: Path, start_worker: StartWorker
) -> None:
    # Long enough for the worker to send the mail on a busy machine before the link expires.
    client = confirm_app(make_app, smtp_sink, confirm_dir, CONFIRM_TTL=5).test_client()
    start_worker(**worker_env(smtp_sink, confirm_dir))
    asked = time.monotonic()
    assert endorse(client, 1, lang="fr").status_code == 202
    (message,) = smtp_sink.wait_for(1)
    link = link_of(message)
    assert "Le lien fonctionne une seule fois" in text_of(message)  # in French
    page = client.get(path_of(link))
    assert page.status_code == 200
    time.sleep(max(0.0, 5.5 - (time.monotonic() - asked)))
    for response in (
        client.get(path_of(link)),
        client.post(path_of(link), data={"csrf": csrf_of(page.get_data(as_text=True))}),
    ):
        assert response.status_code == 410
        html = response.get_data(as_text=True)
        assert "Ce lien a expiré." in html and '<html lang="fr"' in html
        assert f'href="/s/{CONFIRMING}?lang=fr#endorse"' in html
        assert "Soutenir à nouveau" in html


def test_again_while_pending_is_throttled_then_a_new_link_replaces_the_old(
    setup: tuple[FlaskClient, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    client, _ = setup
    address = "person1@example.org"
    first = endorse(client, 1)
    (message,) = smtp_sink.wait_for(1)
    old = link_of(message)
    for _ in range(3):  # within 10 minutes: the same answer, no second mail
        again = endorse(client, 1)
        assert (again.status_code, again.get_json()) == (202, first.get_json())
    time.sleep(1.5)
    assert len(mails_to(smtp_sink, address)) == 1
    forget_mailed(redis_client)
    endorse(client, 1, name="Person One")
    messages = smtp_sink.wait_for(2)
    new = link_of(messages[-1])
    assert new != old
    gone = client.get(path_of(old))
    assert gone.status_code == 410
    assert "A newer email replaced this link" in gone.get_data(as_text=True)
    assert "Person One" in client.get(path_of(new)).get_data(as_text=True)
    assert confirm_link(client, new).status_code == 200
    assert count(redis_client) == 1
    stats = make_stats(client)
    assert (stats["count"], stats["pending"], stats["confirmation_rate"]) == (1, 0, 1.0)


def make_stats(client: FlaskClient) -> dict[str, Any]:
    url = f"/api/v1/admin/statements/{CONFIRMING}/stats"
    response = client.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200
    body: dict[str, Any] = response.get_json()
    return body


def test_a_confirmed_address_gets_an_already_mail_and_is_never_counted_twice(
    setup: tuple[FlaskClient, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    client, _ = setup
    endorse(client, 1, lang="de")
    assert confirm_link(client, link_of(smtp_sink.wait_for(1)[0])).status_code == 200
    forget_mailed(redis_client)
    again = endorse(client, 1, lang="de")
    assert (again.status_code, again.get_json()) == (202, {"status": "pending", "count": 1})
    message = smtp_sink.wait_for(2)[-1]
    assert message["Subject"] == "Sie haben bereits unterstützt: Clean air for our city"
    assert "bereits unterstützt" in text_of(message)
    assert not LINK.search(text_of(message) + html_of(message))  # no link to use
    assert "/c/" not in html_of(message)
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    endorse(client, 1, lang="de")  # within 10 minutes of that: no mail at all
    time.sleep(1.5)
    assert len(smtp_sink.received) == 2
    assert count(redis_client) == 1


def test_every_address_gets_the_same_answer_and_one_queued_job(
    make_app: MakeApp,
    smtp_sink: SmtpSink,
    confirm_dir: Path,
    start_worker: StartWorker,
    redis_client: Redis,
) -> None:
    client = confirm_app(make_app, smtp_sink, confirm_dir).test_client()
    worker = start_worker(**worker_env(smtp_sink, confirm_dir))
    endorse(client, "confirmed")
    endorse(client, "pending")
    messages = smtp_sink.wait_for(2)
    confirmed = next(m for m in messages if m["To"] == "personconfirmed@example.org")
    assert confirm_link(client, link_of(confirmed)).status_code == 200
    worker.stop()  # the jobs stay in the queue, to be looked at

    def answer(n: str) -> tuple[int, Any, dict[str, str], int]:
        before = redis_client.llen("rq:{mail}:queue:mail")
        response = endorse(client, n)
        queued = redis_client.llen("rq:{mail}:queue:mail") - before
        return response.status_code, response.get_json(), dict(response.headers), queued

    forget_mailed(redis_client)  # every address may be mailed now
    first = {n: answer(n) for n in ("new", "pending", "confirmed")}
    again = {n: answer(n) for n in ("new", "pending", "confirmed")}  # within 10 minutes
    expected = (202, {"status": "pending", "count": 1})
    for n, (status, body, headers, queued) in (*first.items(), *again.items()):
        assert (status, body) == expected, n
        assert headers == first["new"][2], n
        assert queued == 1, n  # one job each: a link, "already endorsed", or nothing to send
    jobs = [
        redis_client.hget(f"rq:{{mail}}:job:{i.decode()}", "data")
        for i in redis_client.lrange("rq:{mail}:queue:mail", 0, -1)
    ]
    assert len(jobs) == 6 and all(jobs)
    assert count(redis_client) == 1


def test_the_no_js_form_says_check_your_inbox_in_every_language(
    make_app: MakeApp, smtp_sink: SmtpSink, confirm_dir: Path, redis_client: Redis
) -> None:
    client = confirm_app(make_app, smtp_sink, confirm_dir).test_client()
    for n, (lang, t) in enumerate(catalogs().items()):
        page = client.get(f"/s/{CONFIRMING}?lang={lang}").get_data(as_text=True)
        assert t("privacy_confirm") in page  # the form says what happens to the address
        token = re.search(r'name="token" value="([^"]+)"', page)
        assert token
        data = {"token": token.group(1), "lang": lang, "name": "Aigerim", "consent": "1"}
        data["email"] = f"Zhanar{n}@Example.org"
        response = client.post(f"/s/{CONFIRMING}", data=data, headers={"Origin": PUBLIC})
        assert response.status_code == 200, lang
        html = response.get_data(as_text=True)
        assert t("pending_title") in html, lang
        assert t("pending", email="Z•••@Example.org") in html, lang
        assert f"Zhanar{n}" not in html
    assert count(redis_client) == 0
    # The widget and the hosted page get the words for their script.
    widget = client.get(f"/embed/{CONFIRMING}?lang=kk").get_data(as_text=True)
    assert "pending_title" in widget and "privacy_confirm" not in widget
    assert catalogs()["kk"]("privacy_confirm") in widget
    plain = client.get("/embed/dongelek-ystel").get_data(as_text=True)
    assert "pending_title" not in plain


def test_the_honeypot_answers_pending_too(
    make_app: MakeApp, smtp_sink: SmtpSink, confirm_dir: Path, redis_client: Redis
) -> None:
    client = confirm_app(make_app, smtp_sink, confirm_dir).test_client()
    response = endorse(client, 1, website="http://spam.example")
    assert (response.status_code, response.get_json()) == (202, {"status": "pending", "count": 0})
    assert redis_client.llen("rq:{mail}:queue:mail") == 0
    assert not list(redis_client.scan_iter(f"us:{{{CONFIRMING}}}:cf*"))


def test_operators_see_pending_confirmed_and_the_rate(
    setup: tuple[FlaskClient, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    client, _ = setup
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    pending_before = pending_outcomes(client.get("/metrics", headers=bearer).get_data(as_text=True))
    client.post("/api/v1/statements/dongelek-ystel/endorsements", json=person(9))
    for n in range(4):
        endorse(client, n, public=True, country="KZ")
    messages = smtp_sink.wait_for(4)
    assert confirm_link(client, link_of(messages[0])).status_code == 200

    def listed() -> Any:
        return client.get("/api/v1/admin/statements", headers=bearer).get_json()

    # The sink has the fourth message before the worker, done with the session, counts it.
    wait_until(lambda: listed()["mail"]["sent"] == 4, 5)
    listing = listed()
    mine = next(s for s in listing["statements"] if s["id"] == CONFIRMING)
    assert (mine["confirm"], mine["count"], mine["pending"]) == ("email", 1, 3)
    assert mine["confirmation_rate"] == 0.25
    other = next(s for s in listing["statements"] if s["id"] == "dongelek-ystel")
    assert (other["confirm"], other["pending"], other["confirmation_rate"]) == ("none", 0, None)
    assert listing["mail"]["sent"] == 4 and listing["mail"]["queued"] == 0
    assert make_stats(client)["pending"] == 3
    # Public answers: the confirmed count only, no pending.
    shown = client.get(f"/api/v1/statements/{CONFIRMING}").get_json()
    assert shown["count"] == 1 and "pending" not in shown
    assert client.get(f"/api/v1/statements/{CONFIRMING}/count").get_json()["count"] == 1
    # Exports: confirmed_at, empty where nothing was confirmed.
    rows = client.get(f"/api/v1/admin/statements/{CONFIRMING}/export.csv", headers=bearer)
    lines = rows.get_data(as_text=True).splitlines()
    assert lines[0].endswith(",confirmed_at")
    (row,) = lines[1:]
    assert row.endswith("," + row.split(",")[1])  # confirmed at the minute it counted
    direct = client.get("/api/v1/admin/statements/dongelek-ystel/export.jsonl", headers=bearer)
    assert '"confirmed_at": ""' in direct.get_data(as_text=True)
    # /metrics, computed from Redis.
    metrics = client.get("/metrics", headers=bearer).get_data(as_text=True)
    assert "undersign_mail_queue_length 0.0" in metrics
    assert "undersign_mail_retrying 0.0" in metrics
    assert "undersign_mail_sent_total 4.0" in metrics
    assert "undersign_mail_failures_total 0.0" in metrics
    assert f'undersign_pending_endorsements{{statement="{CONFIRMING}"}} 3.0' in metrics
    assert pending_outcomes(metrics) == pending_before + 4


def pending_outcomes(metrics: str) -> float:
    found = re.search(r'undersign_endorsements_total\{outcome="pending",reason=""\} (\S+)', metrics)
    return float(found.group(1)) if found else 0.0


def test_an_address_refused_for_good_drops_its_pending_endorsement(
    setup: tuple[FlaskClient, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    client, worker = setup
    assert endorse(client, 1, email="refuse.me@example.org").status_code == 202
    wait_until(lambda: smtp_sink.refused == ["refuse.me@example.org"], 5)
    wait_until(lambda: make_stats(client)["pending"] == 0, 3)
    assert not list(redis_client.scan_iter(f"us:{{{CONFIRMING}}}:cf:*"))
    assert int(redis_client.hget("us:{mail}:stats", "dropped") or 0) == 1
    assert "refuse.me" not in worker.log() and "550" in worker.log()


def test_a_mail_still_failing_after_retry_for_is_given_up(
    make_app: MakeApp,
    smtp_sink: SmtpSink,
    confirm_dir: Path,
    start_worker: StartWorker,
    redis_client: Redis,
) -> None:
    dead = SmtpSink()  # a port nothing listens on
    client = confirm_app(make_app, dead, confirm_dir, MAIL_RETRY_FOR=6).test_client()
    worker = start_worker(**worker_env(dead, confirm_dir))
    assert endorse(client, 1, email="unlucky.one@example.org").status_code == 202
    wait_until(lambda: int(redis_client.hget("us:{mail}:stats", "failures") or 0) >= 1, 5)
    assert make_stats(client)["pending"] == 1
    # Tries after 5 s and 1 s more, then the failure callback drops it with its job.
    wait_until(lambda: int(redis_client.hget("us:{mail}:stats", "dropped") or 0) == 1, 20)
    assert int(redis_client.hget("us:{mail}:stats", "failures") or 0) == 3
    assert make_stats(client)["pending"] == 0
    assert not list(redis_client.scan_iter(f"us:{{{CONFIRMING}}}:cf:*"))
    wait_until(lambda: not list(redis_client.scan_iter("rq:{mail}:job:*")), 3)
    assert redis_client.zcard("rq:{mail}:scheduled:mail") == 0
    log = worker.log()
    assert "given up" in log and "unlucky" not in log


# -- what Redis holds -------------------------------------------------------------------------


def test_the_address_waits_sealed_in_its_job_and_is_gone_after_delivery(
    make_app: MakeApp,
    smtp_sink: SmtpSink,
    confirm_dir: Path,
    start_worker: StartWorker,
    redis_client: Redis,
    redis_server: Any,
) -> None:
    from widget.jobs import unseal  # first: it checks RQ's key prefix

    from rq.job import Job  # isort: skip

    client = confirm_app(make_app, smtp_sink, confirm_dir).test_client()
    addresses = ["canary.alpha@example.org", "canary.bravo@example.org"]
    for n, address in enumerate(addresses):
        assert endorse(client, n, email=address, country="KZ", public=True).status_code == 202
    # Queued (no worker yet): the job holds the address and the link's token sealed only.
    ids = [i.decode() for i in redis_client.lrange("rq:{mail}:queue:mail", 0, -1)]
    assert len(ids) == 2
    for job_id, address in zip(ids, addresses, strict=True):
        job = Job.fetch(job_id, connection=redis_client)
        assert job.description == "confirmation mail"
        statement_id, kind, sealed, lang, token_hash, _ = job.args
        assert (statement_id, kind, lang) == (CONFIRMING, "link", "en")
        assert "canary" not in repr(job.args) and "canary" not in repr(job.kwargs)
        opened, token = unseal(SECRET, CONFIRMING, sealed)
        assert opened == address and len(token) == 32
        assert token not in repr(job.args) and len(token_hash) == 64
    assert "canary" not in dump_redis(redis_server).lower()

    worker = start_worker(**worker_env(smtp_sink, confirm_dir))
    messages = smtp_sink.wait_for(2)
    assert sorted(m["To"] for m in messages) == addresses
    assert confirm_link(client, link_of(messages[0])).status_code == 200
    wait_until(lambda: not list(redis_client.scan_iter("rq:{mail}:job:*")), 3)
    dump = dump_redis(redis_server)
    for address in addresses:
        assert address not in dump and address.split("@")[0] not in dump
    assert "canary" not in dump.lower()
    # Every key RQ made is in the {mail} slot; the statement's in its own.
    keys = [k.decode() for k in redis_client.scan_iter("*")]
    assert any(k.startswith("rq:") for k in keys)
    for key in keys:
        assert key.startswith(
            ("rq:{mail}:", "us:{mail}:", f"us:{{{CONFIRMING}}}:", "us:{", "us:")
        ), key
        if key.startswith("rq:"):
            assert key.startswith("rq:{mail}:"), key
    assert "canary" not in worker.log().lower()


def dump_redis(redis_server: Any) -> str:
    """Every key and value of every type, as one text."""
    client: Redis = redis_server.client()
    parts = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value: Any = {
            "string": client.get,
            "hash": client.hgetall,
            "stream": client.xrange,
            "set": client.smembers,
            "zset": lambda k: client.zrange(k, 0, -1, withscores=True),
            "list": lambda k: client.lrange(k, 0, -1),
        }[kind](key)
        parts.append(f"{kind} {key!r} :: {value!r}")
    return "\n".join(parts)


def test_the_worker_health_check(
    start_worker: StartWorker, redis_server: Any, smtp_sink: SmtpSink, confirm_dir: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "WIDGET_REDIS_URL": redis_server.url}
    check = [sys.executable, "-m", "widget", "worker", "--check"]
    assert subprocess.run(check, env=env, timeout=30).returncode == 1  # none running
    worker = start_worker(**worker_env(smtp_sink, confirm_dir))
    assert subprocess.run(check, env=env, timeout=30).returncode == 0
    assert worker.stop() == 0  # a warm stop on SIGTERM
    assert subprocess.run(check, env=env, timeout=30).returncode == 1


def test_the_202_is_as_documented(
    make_app: MakeApp, smtp_sink: SmtpSink, confirm_dir: Path, redis_client: Redis
) -> None:
    from test_openapi import assert_documented

    client = confirm_app(make_app, smtp_sink, confirm_dir).test_client()
    doc = client.get("/api/v1/openapi.json").get_json()
    body = assert_documented(doc, "POST", URL, endorse(client, 1, source=ALLY))
    assert body == {"status": "pending", "count": 0}
    assert (
        "202" in doc["paths"]["/api/v1/statements/{statement_id}/endorsements"]["post"]["responses"]
    )


def test_an_idle_mail_worker_stays_alive_for_its_health_check(
    redis_server: Any, redis_client: Redis
) -> None:
    """`undersign worker --check` (the compose healthcheck) wants a heartbeat younger than
    ALIVE_FOR. An idle RQ worker sends one each time its wait for a job runs out: every
    405 s at RQ's default, so a healthy idle worker was called dead after a minute."""
    from widget.jobs import ALIVE_FOR, alive_here, mail_worker, worker_connection

    connection = worker_connection(redis_server.url, cluster=CLUSTER)
    worker = mail_worker(connection)
    assert worker.dequeue_timeout + 10 < ALIVE_FOR  # the longest silence of an idle worker
    worker.register_birth()
    try:
        worker.heartbeat()
        beat = time.time()
        assert alive_here(connection)
        assert alive_here(connection, now=beat + worker.dequeue_timeout + 10)
        assert not alive_here(connection, now=beat + ALIVE_FOR + 1)
    finally:
        worker.register_death()
        connection.close()
