"""The console in Chromium against the real gunicorn: sign in, live count, strike, export,
block lists, the surge banner and bulk moderation."""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from conftest import ADMIN_TOKEN, ALLY, STATEMENT
from playwright.sync_api import Browser, Page, Route, expect
from redis import Redis
from servers import Gunicorn

from widget.store import Endorsement, Store

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


# -- issue 10, the operator half: blocks, surge banner, bulk moderation -----------------------


def shot(page: Page, name: str) -> None:
    """A screenshot for people reviewing the console, when UNDERSIGN_SHOTS names a folder."""
    folder = os.environ.get("UNDERSIGN_SHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


def serious(page: Page) -> list[str]:
    """What axe finds serious or critical on the page."""
    results = Axe().run(page)
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def console(chromium: Browser, service: Gunicorn, path: str) -> tuple[Page, list[str]]:
    """A signed-in console page and the list its script errors and CSP reports go to."""
    errors: list[str] = []
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
    )
    sign_in(page, service, path)
    return page, errors


def sign_in(page: Page, service: Gunicorn, path: str) -> None:
    page.goto(f"{service.url}{path}")
    page.fill("#token", ADMIN_TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")


def endorse_from(service: Gunicorn, address: str, n: int) -> int:
    body = {"name": f"Net {n}", "email": f"net{n}@example.org", "consent": True}
    url = f"{service.url}/api/v1/statements/{STATEMENT}/endorsements"
    response = requests.post(url, json=body, headers={"X-Forwarded-For": address}, timeout=5)
    return response.status_code


def test_console_blocks_add_and_remove(
    start_gunicorn: Callable[..., Gunicorn], chromium: Browser
) -> None:
    service = start_gunicorn(workers=2, WIDGET_TRUSTED_PROXIES="1")
    page, errors = console(chromium, service, "/admin")
    page.click("#nav-blocks")
    page.wait_for_url("**/admin/blocks")
    expect(page.locator("#nav-blocks")).to_have_attribute("aria-current", "page")
    rows = page.locator("#block-list tbody tr[data-block]")
    expect(page.locator("#block-list tbody")).to_contain_text("No blocks")
    shot(page, "blocks-empty")

    # a mistyped network: the field says why, nothing is added
    page.fill("#block-value", "203.0.113.0/33")
    page.click("#block-add")
    expect(page.locator("#block-value-err")).to_contain_text("not a network")
    expect(page.locator("#block-value")).to_have_attribute("aria-invalid", "true")
    shot(page, "blocks-error")
    assert serious(page) == []
    expect(rows).to_have_count(0)

    page.fill("#block-value", "203.0.113.0/24")
    page.fill("#block-reason", "scripted sign-ups")
    page.select_option("#block-expires", "86400")
    page.click("#block-add")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("203.0.113.0/24")
    expect(rows.first).to_contain_text("scripted sign-ups")
    expect(page.locator("#block-value-err")).to_be_hidden()
    page.fill("#block-value", "198.51.100.7")
    page.click("#block-add")
    expect(rows.first).to_contain_text("IPv4 hashed /32")
    page.check("input[name=kind][value=email_domain]")
    expect(page.locator("#block-value-label")).to_have_text("Email domain")
    page.fill("#block-value", "Throwaway.Example")
    page.click("#block-add")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("throwaway.example")  # newest first
    shot(page, "blocks-list")
    assert serious(page) == []

    assert endorse_from(service, "203.0.113.5", 1) == 403
    assert endorse_from(service, "198.51.100.7", 2) == 403
    assert endorse_from(service, "198.51.100.8", 3) == 201

    network_row = rows.filter(has_text="203.0.113.0/24")
    network_row.locator("button[data-remove]").click()
    expect(rows).to_have_count(2)
    expect(page.locator("#block-status")).to_contain_text("removed")
    deadline = time.monotonic() + 10  # every worker applies it within 2 s
    while endorse_from(service, "203.0.113.5", 4) != 201:
        assert time.monotonic() < deadline, "the network stayed blocked"
        time.sleep(0.3)
    page.reload()
    expect(rows).to_have_count(2)
    assert errors == []
    page.close()


def test_console_surge_banner_and_bulk_strike_with_undo(
    start_gunicorn: Callable[..., Gunicorn], chromium: Browser, redis_client: Redis
) -> None:
    service = start_gunicorn(workers=2, WIDGET_SURGE_FLOOR="5")
    store = Store(redis_client)
    for i in range(3):  # the usual trickle
        store.endorse(STATEMENT, Endorsement(f"calm-{i}", f"Calm {i}", "KZ", "direct"))
    page, errors = console(chromium, service, f"/admin/s/{STATEMENT}")
    count = page.locator("#count")
    expect(count).to_have_text("3")
    expect(page.locator("#surge")).to_be_hidden()

    # synthetic load through the store: one ally, mostly one country
    for i in range(8):
        store.endorse(
            STATEMENT, Endorsement(f"farm-{i}", f"Farm {i}", ("RU", "RU", "BY")[i % 3], ALLY)
        )
    expect(count).to_have_text("11")
    banner = page.locator("#surge")
    expect(banner).to_be_visible(timeout=20_000)
    expect(page.locator("#surge-heading")).to_have_text(
        "Surge: 11 endorsements in the last 5 minutes"
    )
    expect(page.locator("#surge-text")).to_contain_text("proof of work costs double")
    hot = page.locator("#surge-sources li.hot")
    expect(hot).to_have_count(1)
    expect(hot).to_contain_text("ally.example")
    expect(page.locator("#surge-countries")).to_contain_text("Russia (RU)")
    shot(page, "dashboard-surge")
    assert serious(page) == []

    # from the banner to a preview: the ally, with a reason
    hot.locator("button[data-fill-source]").click()
    expect(page.locator("#bulk-source")).to_have_value(ALLY)
    expect(page.locator("#bulk-reason")).to_be_focused()
    page.click("#bulk-preview")
    expect(page.locator("#bulk-result")).to_contain_text("8 endorsements match")
    strike = page.locator("#bulk-strike")
    expect(strike).to_have_text("Strike 8 endorsements")
    # one more from the ally after the preview: left alone by the strike
    store.endorse(STATEMENT, Endorsement("late", "Late", "RU", ALLY))
    expect(count).to_have_text("12")
    page.click("#bulk-strike")
    expect(page.locator("#bulk-reason-err")).to_contain_text("Say why")  # a reason is needed
    page.fill("#bulk-reason", "one ally, scripted")
    expect(strike).to_be_visible()  # the reason is not a filter: the preview stands
    shot(page, "dashboard-bulk-preview")
    assert serious(page) == []
    page.click("#bulk-strike")
    expect(page.locator("#bulk-result")).to_contain_text("Struck 8 endorsements as bulk")
    expect(count).to_have_text("4")
    struck = page.locator("#entries tbody tr.struck")
    expect(struck).to_have_count(8)
    expect(struck.first).to_contain_text("one ally, scripted")
    expect(struck.first).to_contain_text("(bulk ")
    expect(page.locator("#entries tbody tr[data-eid]").first).not_to_have_class("struck")
    shot(page, "dashboard-bulk-struck")
    api_count = requests.get(f"{service.url}/api/v1/statements/{STATEMENT}/count", timeout=5)
    assert api_count.json()["count"] == 4

    page.click("#bulk-undo")
    expect(page.locator("#bulk-result")).to_contain_text("Restored 8 endorsements")
    expect(count).to_have_text("12")
    expect(struck).to_have_count(0)
    expect(page.locator("#bulk-undo")).to_be_hidden()

    # a changed filter asks for a new preview; a preview refused for a field says only that
    page.click("#bulk-preview")
    expect(page.locator("#bulk-result")).to_contain_text("endorsements match")
    page.fill("#bulk-country", "ZZZ")
    expect(page.locator("#bulk-result")).to_have_text("Filters changed: preview again.")
    page.click("#bulk-preview")
    expect(page.locator("#bulk-country-err")).to_be_visible()
    expect(page.locator("#bulk-result")).to_have_text("")
    page.fill("#bulk-country", "")

    # the surge ends: its minutes leave the window (as ten minutes would)
    for k in redis_client.scan_iter(f"us:{{{STATEMENT}}}:src:m:*"):
        redis_client.delete(k)
    expect(banner).to_be_hidden(timeout=25_000)
    shot(page, "dashboard-after")
    assert errors == []
    page.close()


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
    # A live update within a second, timed by the page's clock from the POST's answer (how
    # long Playwright takes to notice is not part of it).
    page.evaluate(
        """el => new MutationObserver(function () {
          if (el.textContent === '1') window.__shown = window.__shown || Date.now();
        }).observe(el, {childList: true, characterData: true, subtree: true})""",
        card.element_handle(),
    )
    endorse(service, 1)
    posted = time.time() * 1000
    expect(card).to_have_text("1", timeout=5_000)
    lag = page.evaluate("window.__shown") - posted
    assert lag < 1000, f"the card showed the count {lag:.0f} ms after the POST's answer"

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
        timeout=16_000,
    )
    expect(error).to_be_hidden(timeout=10_000)
    expect(page.locator("#count")).to_have_text("1")
    assert errors == []
    context.close()


def test_the_keyboard_stays_on_its_row_while_the_list_refreshes(
    start_gunicorn: Callable[..., Gunicorn], chromium: Browser
) -> None:
    """The rows are rebuilt on every refresh: focus fell to the page's body about once a
    second while endorsements arrived, and after every strike or restore by keyboard."""
    service = start_gunicorn(workers=2)
    for i in range(3):
        endorse(service, i)
    page, errors = console(chromium, service, f"/admin/s/{STATEMENT}")
    rows = page.locator("#entries tbody tr[data-eid]")
    expect(rows).to_have_count(3)
    middle = rows.nth(1).get_attribute("data-eid")
    focused = "() => [document.activeElement.dataset.eid, document.activeElement.dataset.action]"
    page.locator(f'button[data-eid="{middle}"]').focus()
    endorse(service, 3)  # a refresh rebuilds every row
    expect(rows).to_have_count(4)
    expect(page.locator("#count")).to_have_text("4")
    assert page.evaluate(focused) == [middle, "strike"]
    page.keyboard.press("Enter")  # strike it by keyboard: the row's Restore takes the focus
    expect(page.locator(f'tr[data-eid="{middle}"]')).to_have_class("struck")
    page.wait_for_function(f"document.activeElement.dataset.eid === {middle!r}")
    assert page.evaluate(focused) == [middle, "unstrike"]
    page.keyboard.press("Enter")  # ...and restore it the same way
    expect(page.locator(f'tr[data-eid="{middle}"]')).not_to_have_class("struck")
    page.wait_for_function("document.activeElement.dataset.action === 'strike'")
    assert page.evaluate(focused) == [middle, "strike"]
    assert errors == []
    page.close()


def test_refreshes_never_overlap_on_a_slow_network(
    start_gunicorn: Callable[..., Gunicorn], chromium: Browser
) -> None:
    """With 1.5 s of latency and an endorsement every 0.3 s, refreshes had piled up to six
    requests at once (the browser's limit per host), answers drawn out of order."""
    service = start_gunicorn(workers=2)
    endorse(service, 0)
    page, errors = console(chromium, service, f"/admin/s/{STATEMENT}")
    expect(page.locator("#count")).to_have_text("1")
    open_reads: set[Any] = set()
    most = [0]

    def started(request: Any) -> None:
        if re.search(r"/api/v1/admin/statements/[^/]+/(stats|endorsements)", request.url):
            open_reads.add(request)
            most[0] = max(most[0], len(open_reads))

    page.on("request", started)
    page.on("requestfinished", lambda request: open_reads.discard(request))
    page.on("requestfailed", lambda request: open_reads.discard(request))
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    conditions = {"offline": False, "downloadThroughput": -1, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", {**conditions, "latency": 1500})
    for i in range(1, 9):
        endorse(service, i)
        page.wait_for_timeout(300)
    expect(page.locator("#count")).to_have_text("9", timeout=20_000)
    expect(page.locator("#entries tbody tr[data-eid]")).to_have_count(9, timeout=20_000)
    assert most[0] <= 2, most[0]  # one refresh: its stats and its page of rows
    cdp.send("Network.emulateNetworkConditions", {**conditions, "latency": 0})
    assert errors == []
    page.close()
