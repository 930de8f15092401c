"""Issue 12's acceptance under the real gunicorn (2 gevent workers), a real ``undersign
worker`` and a real SMTP server (aiosmtpd): the whole path with the live count and the
transparency log, the SMTP server down for 30 s, and 200 concurrent endorsements."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import requests
from checks import person, public_count, statement_keys, store_state, utc_minute, wait_until
from conftest import ALLY, CONFIRMING, gunicorn_env, mail_settings
from redis import Redis
from servers import Gunicorn, MailWorker, RedisServer, SmtpSink

from widget.store import Store
from widget.tlog.entries import commitment, parse_line

pytestmark = pytest.mark.server

URL = f"/api/v1/statements/{CONFIRMING}/endorsements"
SINK_DOWN_SECONDS = 30


@pytest.fixture
def service(
    redis_server: RedisServer,
    redis_client: Redis,
    tmp_path: Path,
    smtp_sink: SmtpSink,
    confirm_dir: Path,
    start_worker: Callable[..., MailWorker],
) -> Iterator[tuple[Gunicorn, MailWorker]]:
    """gunicorn and a worker for the confirming statement, links to gunicorn's address."""
    # A heartbeat every second lets a test close its event stream at once.
    env = gunicorn_env(redis_server, WIDGET_EVENTS_HEARTBEAT="1")
    server = Gunicorn(env, workers=2, folder=tmp_path)
    settings = mail_settings(smtp_sink, confirm_dir, server.url)
    server.env.update(settings)
    server.start()
    worker = start_worker(**settings)
    yield server, worker
    server.stop()


def link_in(message: EmailMessage, server: Gunicorn) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    match = re.search(re.escape(server.url) + r"/c/[A-Za-z0-9_-]{32}", body.get_content())  # type: ignore[attr-defined]
    assert match, body
    return match.group(0)


def confirm(server: Gunicorn, link: str) -> requests.Response:
    page = requests.get(link, timeout=10)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    return requests.post(
        link, data={"csrf": csrf.group(1)}, headers={"Origin": server.url}, timeout=10
    )


class Events:
    """The statement's live-count stream, read in a thread: ``(seconds, count)`` pairs."""

    def __init__(self, server: Gunicorn) -> None:
        url = f"{server.url}/api/v1/statements/{CONFIRMING}/events"
        self.response = requests.get(url, stream=True, timeout=30)
        self.counts: list[tuple[float, int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    self.counts.append((time.monotonic(), json.loads(line[5:])["count"]))
        except (requests.RequestException, AttributeError, ValueError):
            return

    def close(self) -> None:
        self.response.close()


def test_endorse_mail_confirm_with_the_live_count_and_the_log(
    service: tuple[Gunicorn, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    server, worker = service
    body = person(1, email="Dana.K@Example.org", country="KZ", public=True, lang="kk")
    posted = requests.post(server.url + URL, json=body, headers={"Origin": ALLY}, timeout=10)
    assert posted.status_code == 202
    assert posted.json() == {"status": "pending", "count": 0}
    asked = time.monotonic()
    (message,) = smtp_sink.wait_for(1, timeout=5)
    assert time.monotonic() - asked < 5
    assert message["Content-Language"] == "kk"
    assert str(message["Subject"]).startswith("Қолдауыңызды растаңыз: ")
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    link = link_in(message, server)
    assert public_count(server.url, CONFIRMING) == 0

    # A GET changes nothing (background sealing may sign the empty log meanwhile).
    def snapshot() -> dict[bytes, Any]:
        return statement_keys(redis_client, CONFIRMING, skip=(b":form:",))

    before = snapshot()
    for _ in range(3):
        page = requests.get(link, timeout=10)
        assert page.status_code == 200 and "Растау" in page.text
    assert snapshot() == before
    assert public_count(server.url, CONFIRMING) == 0

    events = Events(server)
    try:
        wait_until(lambda: bool(events.counts), 5)
        assert events.counts[-1][1] == 0
        minute_before = utc_minute()
        done = confirm(server, link)
        answered = time.monotonic()  # confirm() also loads the page first: not part of the lag
        assert done.status_code == 200
        assert "Қолдауыңыз расталды және есепке алынды." in done.text
        wait_until(lambda: events.counts[-1][1] == 1, 5)
        assert events.counts[-1][0] - answered < 1.0  # the live count, within a second

        def counted() -> bool:
            """Count reads may lag by a second: one begun later than that must see it."""
            begun = time.monotonic()
            found = public_count(server.url, CONFIRMING)
            assert found == 1 or begun - answered < 1.0, (found, begun - answered)
            return found == 1

        wait_until(counted, 5)
        wait_until(lambda: redis_client.llen(f"us:{{{CONFIRMING}}}:tlog") == 1, 5)
    finally:
        events.close()
    line = parse_line(Store(redis_client).log_lines(CONFIRMING, 0, 1)[0], 0)
    assert line["kind"] == "endorse" and line["source"] == ALLY
    assert line["name"] == "Person" and line["country"] == "KZ"
    assert line["at"] in {minute_before, utc_minute()}  # the minute confirmed (it may have turned)
    # The receipt on the page is the one in the log, sealed within seconds.
    secret = re.search(r"/receipt#([A-Za-z0-9_-]{32})", done.text)
    assert secret
    assert line["commit"] == commitment(secret.group(1))
    url = f"{server.url}/api/v1/statements/{CONFIRMING}/receipts/{line['commit']}"
    wait_until(lambda: requests.get(url, timeout=5).status_code == 200, 5)
    assert requests.get(url, timeout=5).json()["status"] == "counted"
    assert store_state(redis_client, CONFIRMING).count == 1
    assert "dana" not in worker.log().lower() + server.log().lower()


def test_mail_waits_out_an_smtp_outage_and_goes_once(
    service: tuple[Gunicorn, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    server, _ = service
    smtp_sink.stop()
    down = time.monotonic()
    addresses = [f"outage{n}@example.org" for n in range(3)]
    for n, address in enumerate(addresses):
        posted = requests.post(server.url + URL, json=person(n, email=address), timeout=10)
        assert posted.status_code == 202
    # Each failed once and waits for its retry.
    wait_until(lambda: redis_client.zcard("rq:{mail}:scheduled:mail") == 3, 10)
    assert int(redis_client.hget("us:{mail}:stats", "failures") or 0) == 3
    time.sleep(max(0.0, SINK_DOWN_SECONDS - (time.monotonic() - down)))
    smtp_sink.start()  # back, on the same port
    messages = smtp_sink.wait_for(3, timeout=45)
    time.sleep(3)  # nothing more comes
    assert sorted(m["To"] for m in smtp_sink.messages()) == addresses
    assert len(smtp_sink.received) == 3
    wait_until(lambda: not list(redis_client.scan_iter("rq:{mail}:job:*")), 3)
    assert redis_client.zcard("rq:{mail}:scheduled:mail") == 0
    assert redis_client.llen("rq:{mail}:queue:mail") == 0
    assert int(redis_client.hget("us:{mail}:stats", "dropped") or 0) == 0
    # Every link still works: nothing was lost.
    for message in messages:
        assert confirm(server, link_in(message, server)).status_code == 200
    assert store_state(redis_client, CONFIRMING).count == 3


def test_200_concurrent_endorsements_then_every_confirmation_at_once(
    service: tuple[Gunicorn, MailWorker], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    server, _ = service
    people = [f"crowd{n}@example.org" for n in range(160)]
    requests_to_make = people + people[:40]  # 40 of them twice
    session_url = server.url + URL

    def endorse(address: str) -> tuple[int, Any]:
        name = "Crowd " + address.split("@")[0]
        body = {"name": name, "email": address, "consent": True}
        response = requests.post(session_url, json=body, timeout=30)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(endorse, requests_to_make))
    assert Counter(status for status, _ in answers) == {202: 200}
    assert {json.dumps(body) for _, body in answers} == {'{"status": "pending", "count": 0}'}
    messages = smtp_sink.wait_for(160, timeout=60)
    time.sleep(2)  # and no more
    mailed = Counter(m["To"] for m in smtp_sink.messages())
    assert mailed == Counter(people)  # each address exactly one mail
    assert len(smtp_sink.received) == 160
    assert store_state(redis_client, CONFIRMING).count == 0

    links = [link_in(m, server) for m in messages]
    with ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(lambda link: confirm(server, link), links))
    assert Counter(r.status_code for r in results) == {200: 160}
    assert all("Your endorsement is confirmed and counted." in r.text for r in results)
    state = store_state(redis_client, CONFIRMING)
    assert (state.count, state.log_length, state.seen) == (160, 160, 160)
    assert redis_client.llen(f"us:{{{CONFIRMING}}}:tlog") == 160
    wait_until(lambda: public_count(server.url, CONFIRMING) == 160, 1.5)
    # Confirming again changes nothing.
    assert confirm_again_is_gone(server, links[0])
    assert store_state(redis_client, CONFIRMING).count == 160


def confirm_again_is_gone(server: Gunicorn, link: str) -> bool:
    return requests.get(link, timeout=5).status_code == 410
