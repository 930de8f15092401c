"""The console in Chromium against the real gunicorn: sign in, live count, strike, export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from typing import Any

import pytest
import requests
from conftest import ADMIN_TOKEN, STATEMENT
from playwright.sync_api import Browser, Page, Route, expect
from servers import Gunicorn

pytestmark = [pytest.mark.browser, pytest.mark.server]


def endorse(service: Gunicorn, i: int) -> None:
    body = {"name": f"Browser Person {i}", "email": f"bp{i}@example.org", "consent": True}
    body["country"] = "KZ"
    url = f"{service.url}/api/v1/statements/{STATEMENT}/endorsements"
    response = requests.post(url, json=body, timeout=5)
    assert response.status_code == 201, response.text


def test_console_live_count_strike_and_export(
    start_gunicorn: Callable[..., Gunicorn], chromium: Browser, tmp_path: Any
) -> None:
    service = start_gunicorn(workers=2)
    for i in range(2):
        endorse(service, i)
    errors: list[str] = []
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )

    page.goto(f"{service.url}/admin/s/{STATEMENT}")
    assert "/admin/login" in page.url
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    expect(page.locator("[role=alert]")).to_contain_text("not right")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/admin/s/{STATEMENT}")
    count = page.locator("#count")
    expect(count).to_have_text("2")
    expect(page.locator("#entries tbody tr[data-eid]")).to_have_count(2)

    # a widget open elsewhere, reading the public count
    widget = context.new_page()
    widget.set_default_timeout(15_000)
    widget.goto(f"{service.url}/embed/{STATEMENT}")

    # endorsements arrive through the public API; the console follows without reload
    for i in range(2, 6):
        endorse(service, i)
    expect(count).to_have_text("6", timeout=15_000)
    expect(page.locator("#entries tbody tr[data-eid]")).to_have_count(6, timeout=15_000)
    expect(widget.locator("[data-count]").first).to_have_text(
        re.compile(r"(^|\D)6(\D|$)"), timeout=15_000
    )

    # strike the newest: the console count drops, the row stays, greyed and attributed
    newest = page.locator("#entries tbody tr[data-eid]").first
    struck_id = newest.get_attribute("data-eid")
    newest.locator("button[data-action=strike]").click()
    expect(count).to_have_text("5")
    row = page.locator(f'#entries tbody tr[data-eid="{struck_id}"]')
    expect(row).to_have_class("struck")
    expect(row).to_contain_text("Struck by console")
    api_count = requests.get(f"{service.url}/api/v1/statements/{STATEMENT}/count", timeout=5)
    assert api_count.json()["count"] == 5
    # ...and in the open widget
    expect(widget.locator("[data-count]").first).to_have_text(
        re.compile(r"(^|\D)5(\D|$)"), timeout=15_000
    )

    # export through the console link
    with page.expect_download() as info:
        page.click("#export-csv")
    path = tmp_path / "export.csv"
    info.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text("utf-8"))))
    assert len(rows) == 6
    assert {r["name"] for r in rows} == {f"Browser Person {i}" for i in range(6)}
    assert [r["id"] for r in rows if r["struck"] == "True"] == [struck_id]
    assert all("@" not in v for r in rows for v in r.values())

    # restore it
    row.locator("button[data-action=unstrike]").click()
    expect(count).to_have_text("6")
    expect(row).not_to_have_class("struck")
    assert errors == []
    context.close()


def sign_in(page: Page, service: Gunicorn, path: str) -> None:
    page.goto(f"{service.url}{path}")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def test_console_overview_is_live_and_a_stalled_read_says_so(
    start_gunicorn: Callable[..., Gunicorn], chromium: Browser
) -> None:
    service = start_gunicorn(workers=2)
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # The overview's counts come over the shared stream (its 5-second poll is refused).
    context.route("**/api/v1/admin/statements", lambda route: route.abort())
    sign_in(page, service, "/admin/")
    card = page.locator(f'[data-id="{STATEMENT}"] [data-count]')
    expect(card).to_have_text("0")
    expect(page.locator("html")).to_have_attribute("data-live", "leader")
    endorse(service, 1)
    expect(card).to_have_text("1", timeout=2_000)

    # The dashboard's first stats read gets no answer: after 10 s it says so, and the
    # next read (5 s later) clears the message.
    held: list[Route] = []

    def stall_first(route: Route) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    context.route("**/api/v1/admin/statements/*/stats", stall_first)
    page.goto(f"{service.url}/admin/s/{STATEMENT}")
    error = page.locator("#error")
    expect(error).to_have_text(
        "Could not refresh: The server did not answer within 10 s. Trying again shortly.",
        timeout=13_000,
    )
    expect(error).to_be_hidden(timeout=7_000)
    expect(page.locator("#count")).to_have_text("1")
    assert errors == []
    context.close()
