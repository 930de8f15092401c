"""Email confirmation in Chromium: the widget on an allied page says "check your inbox" with
the address masked; the link, confirmed in the browser, makes the widget's count rise live.

Runs its own gunicorn (a confirming statement, links to its address), worker, SMTP sink
and allied host site, apart from the session's ``service``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIRMING, gunicorn_env, mail_settings
from playwright.sync_api import Browser, Page
from redis import Redis
from servers import Gunicorn, RedisServer, SmtpSink

from .browser_helpers import widget_frame
from .conftest import VIOLATION_SPY, HostHandler, HostSite

pytestmark = [pytest.mark.browser, pytest.mark.server]
SHOTS = Path("/tmp/shots/confirm")


@pytest.fixture
def ally(
    tmp_path: Path,
    redis_server: RedisServer,
    redis_client: Redis,
    smtp_sink: SmtpSink,
    confirm_dir: Path,
    start_worker: Any,
) -> Iterator[tuple[HostSite, Gunicorn]]:
    """An allied site (its own origin, a strict policy) with the confirming statement's
    widget, and the service behind it."""

    class Handler(HostHandler):
        policy = ""  # set once the service's address is known

    folder = tmp_path / "host"
    folder.mkdir()
    # Bound before anything else starts, so no other connection can take its port.
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    site = HostSite(folder=folder, port=server.server_address[1], server=server)
    service = Gunicorn(
        gunicorn_env(redis_server, WIDGET_ALLOWED_ORIGINS=site.origin), folder=tmp_path
    )
    settings = mail_settings(smtp_sink, confirm_dir, service.url)
    service.env.update(settings)
    service.start()
    start_worker(**settings)
    site.service = service.url
    Handler.policy = f"script-src 'self' {service.url}; frame-src {service.url}; style-src 'self'"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, service
    site.server.shutdown()
    site.server.server_close()
    service.stop()


def open_page(browser: Browser, errors: list[str], **options: Any) -> Page:
    context = browser.new_context(**options)
    context.add_init_script(VIOLATION_SPY)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text) if m.type == "error" or "Security Policy" in m.text else None
        ),
    )
    return page


def test_check_your_inbox_then_confirm_and_the_widget_counts_live(
    browser: Browser, ally: tuple[HostSite, Gunicorn], smtp_sink: SmtpSink, redis_client: Redis
) -> None:
    site, service = ally
    SHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    url = site.page(
        "petition",
        "<h1>Clean air news</h1>" + site.snippet(**{"data-statement": CONFIRMING}),
    )
    page = open_page(browser, errors, viewport={"width": 900, "height": 1100})
    page.goto(url)
    frame = widget_frame(page)
    assert frame.get_attribute("[data-count]", "data-count") == "0"
    assert "only until that email is sent" in frame.inner_text("#f-privacy")
    frame.fill("#f-name", "Aliya Nurlanovna")
    frame.fill("#f-email", "aliya.n@example.org")
    frame.check("#f-consent")
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")
    assert frame.inner_text("#done .done-title") == "Check your inbox to confirm"
    message = frame.inner_text("#done-msg")
    assert "a•••@example.org" in message and "aliya" not in message
    assert frame.get_attribute("[data-count]", "data-count") == "0"
    page.wait_for_timeout(300)
    page.screenshot(path=str(SHOTS / "widget-pending.png"), full_page=True)

    (mail,) = smtp_sink.wait_for(1)
    body = mail.get_body(("plain",))
    assert body is not None
    link = re.search(re.escape(service.url) + r"/c/[A-Za-z0-9_-]{32}", body.get_content())  # type: ignore[attr-defined]
    assert link
    # The allied source came through the widget into the pending endorsement.
    assert redis_client.get(f"us:{{{CONFIRMING}}}:count") is None

    inbox = open_page(browser, errors, viewport={"width": 900, "height": 1000})
    inbox.goto(link.group(0))
    assert inbox.inner_text("h1") == "Confirm your endorsement"
    assert "You endorse as Aliya Nurlanovna." in inbox.inner_text("main")
    inbox.screenshot(path=str(SHOTS / "confirm-page.png"), full_page=True)
    inbox.click("#confirm")
    inbox.wait_for_selector("#rc")
    assert "Your endorsement is confirmed and counted." in inbox.inner_text("main")
    back = inbox.get_attribute("#back-to-site", "href")
    assert back == site.origin
    inbox.screenshot(path=str(SHOTS / "confirmed-page.png"), full_page=True)

    # The widget on the allied page, still open, follows over its live stream.
    frame.wait_for_selector('[data-count="1"]', timeout=5_000)
    page.screenshot(path=str(SHOTS / "widget-after-confirm.png"), full_page=True)
    assert errors == []
    inbox.goto(link.group(0))  # the link is used up now
    assert inbox.inner_text("h1") == "This link no longer works"
    assert "This link has been used already." in inbox.inner_text("main")
    inbox.screenshot(path=str(SHOTS / "link-used.png"), full_page=True)
