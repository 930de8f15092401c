"""Issue 11 in Chromium: endorse in a widget on an allied page, see "Save your receipt",
open it, see "counted" checked in the browser (inclusion proof and signature), withdraw,
and see the widget's count fall by one; the no-JS result page's receipt; the audit page;
every supported language on the receipt page; axe on the new pages."""

from __future__ import annotations

import json
import re

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from conftest import STATEMENT
from servers import wait_for

from widget.i18n import catalogs
from widget.tlog.entries import commitment

from .browser_helpers import api_count, endorse_via_api, widget_frame
from .test_widget import fill_form, serious

pytestmark = [pytest.mark.browser, pytest.mark.server]

SHOTS = "/tmp/shots/tlog2"


def test_endorse_see_the_receipt_check_it_withdraw_and_the_count_falls(
    new_page, host_site, service, console, redis_client
):
    for n in range(3):
        endorse_via_api(service, name=f"Early {n}", email=f"early{n}@example.org")
    page = new_page()
    page.goto(host_site.page("receipt", host_site.snippet()))
    frame = widget_frame(page)
    fill_form(frame, "Aigerim Example", "aigerim@example.org")
    frame.click("#f-submit")
    frame.wait_for_selector("#rc:not([hidden])")
    assert frame.inner_text(".rc-title") == "Save your receipt"
    url = frame.input_value("#rc-url")
    match = re.fullmatch(
        rf"{re.escape(service.url)}/s/{STATEMENT}/receipt#([A-Za-z0-9_-]{{32}})", url
    )
    assert match, url
    assert frame.get_attribute("#rc-link", "href") == url
    assert frame.inner_text("[data-count]") == "4"
    page.screenshot(path=f"{SHOTS}/browser-widget-receipt.png", full_page=True)
    # the copy button puts the link on the clipboard (or selects it) and says so
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=service.url)
    frame.click("#rc-copy")
    wait_for(lambda: frame.inner_text("#rc-copied") != "", 5)
    assert frame.inner_text("#rc-copied") == "Receipt link copied"
    # a duplicate gets no receipt
    again = endorse_via_api(service, name="Aigerim", email="aigerim@example.org")
    assert again == {"status": "duplicate", "count": 4}

    receipt = new_page()
    requests_seen: list[str] = []
    receipt.on("request", lambda r: requests_seen.append(r.url + " " + (r.post_data or "")))
    receipt.goto(url)
    receipt.wait_for_selector("#rc-sig[data-status]", timeout=15_000)
    assert receipt.get_attribute("#rc-status", "data-status") == "counted"
    assert receipt.inner_text("#rc-status").startswith("Counted:")
    assert receipt.get_attribute("#rc-proof", "data-status") == "ok"
    assert receipt.get_attribute("#rc-sig", "data-status") == "ok"  # Chromium has Ed25519
    assert "Entry 3 of the public log" in receipt.inner_text("#rc-entry")
    secret = match.group(1)
    # the secret never left the browser: only its commitment did
    assert not any(secret in seen for seen in requests_seen)
    assert any(commitment(secret) in seen for seen in requests_seen)
    receipt.screenshot(path=f"{SHOTS}/browser-receipt-counted.png", full_page=True)

    receipt.click("#rc-ask")
    receipt.click("#rc-yes")
    receipt.wait_for_selector("#rc-status[data-status=withdrawn]")
    assert receipt.inner_text("#rc-status") == (
        "Your endorsement has been withdrawn. The count is now 3."
    )
    assert any(secret in seen for seen in requests_seen)  # the withdrawal sends it, once
    receipt.screenshot(path=f"{SHOTS}/browser-receipt-withdrawn.png", full_page=True)
    # the widget on the allied page follows, live
    wait_for(lambda: frame.get_attribute("[data-count]", "data-count") == "3", 10)
    assert frame.inner_text("[data-count]") == "3" and api_count(service) == 3
    # opened again once the withdrawal is sealed (within a second or two): withdrawn
    found = f"{service.url}/api/v1/statements/{STATEMENT}/receipts/{commitment(secret)}"
    wait_for(lambda: requests.get(found, timeout=5).json()["status"] == "withdrawn", 10)
    receipt.reload()
    receipt.wait_for_selector("#rc-status[data-status=withdrawn]", timeout=15_000)
    assert receipt.inner_text("#rc-status").startswith("Withdrawn:")
    assert receipt.is_hidden("#rc-withdraw")
    # nothing went wrong but a receipt asked for before its seal (404, then found)
    assert all("404" in p for p in console.errors), console.errors


def test_the_receipt_page_speaks_every_language(new_page, service, redis_client):
    secret = endorse_via_api(service, name="Dana", email="dana@example.org")["receipt"]["secret"]
    page = new_page()
    for lang, catalog in catalogs().items():
        page.goto(f"{service.url}/s/{STATEMENT}/receipt?lang={lang}#{secret}")
        page.wait_for_selector("#rc-sig[data-status=ok]", timeout=15_000)
        assert page.inner_text("#rc-status") == catalog.messages["rc_counted"]
        assert page.inner_text("#rc-proof") == catalog.messages["rc_proof_ok"]
        assert page.inner_text("#rc-ask") == catalog.messages["rc_withdraw"]
        assert page.get_attribute("html", "lang") == lang
        page.screenshot(path=f"{SHOTS}/browser-receipt-{lang}.png", full_page=True)
    # the language links keep the receipt
    assert page.get_attribute(".langs a[hreflang=en]", "href").endswith(f"#{secret}")
    page.goto(f"{service.url}/s/{STATEMENT}/receipt")
    page.wait_for_selector("#rc-status[data-status=none]")
    assert page.inner_text("#rc-status") == catalogs()["en"].messages["rc_no_secret"]
    page.goto(f"{service.url}/s/{STATEMENT}/receipt#not-a-receipt-anybody-was-given")
    page.reload()  # a new hash alone does not load the page again
    page.wait_for_selector("#rc-status[data-status=pending]")
    page.wait_for_selector("#rc-status[data-status=missing]", timeout=20_000)


def test_the_no_js_result_page_shows_the_receipt(new_page, service, redis_client):
    page = new_page(java_script_enabled=False)
    page.goto(f"{service.url}/s/{STATEMENT}?lang=de")
    page.fill("#f-name", "Jana")
    page.fill("#f-email", "jana@example.org")
    page.check("#f-consent")
    page.click("#f-submit")
    assert page.inner_text(".rc-title") == "Speichern Sie Ihre Quittung"
    url = page.input_value("#rc-url")
    assert page.get_attribute("#rc-link", "href") == url
    secret = url.split("#", 1)[1]
    found = f"{service.url}/api/v1/statements/{STATEMENT}/receipts/{commitment(secret)}"
    wait_for(lambda: requests.get(found, timeout=5).status_code == 200, 10)  # once sealed
    assert requests.get(found, timeout=5).json()["status"] == "counted"
    page.screenshot(path=f"{SHOTS}/browser-result-receipt.png", full_page=True)


def test_the_audit_page_and_its_links(new_page, host_site, service, redis_client):
    for n in range(4):
        endorse_via_api(service, name=f"P {n}", email=f"p{n}@example.org")
    page = new_page()
    page.goto(host_site.page("audit", host_site.snippet()))
    frame = widget_frame(page)
    link = frame.locator(".foot a", has_text="Audit this count")
    assert link.get_attribute("href") == f"{service.url}/s/{STATEMENT}/audit?lang=en"
    hosted = new_page()
    hosted.goto(f"{service.url}/s/{STATEMENT}")
    hosted.click("text=Audit this count")
    hosted.wait_for_url(f"{service.url}/s/{STATEMENT}/audit")
    assert hosted.inner_text("#audit-size") == "4"
    assert hosted.inner_text("#audit-count") == "4"
    key = requests.get(f"{service.url}/api/v1/log/key", timeout=5).text.strip()
    assert hosted.inner_text("#audit-key") == key
    assert hosted.inner_text("#audit-command") == (
        f"undersign verify {service.url} {STATEMENT} --key '{key}'"
    )
    checkpoint = requests.get(f"{service.url}/api/v1/statements/{STATEMENT}/checkpoint", timeout=5)
    assert hosted.inner_text("#audit-checkpoint").strip() == checkpoint.text.strip()
    download = requests.get(
        service.url + hosted.get_attribute("#audit-download", "href"), timeout=5
    )
    lines = download.content.split(b"\n")[:-1]
    assert len(lines) == 4 and all(json.loads(x)["kind"] == "endorse" for x in lines)
    assert download.headers["Content-Disposition"].endswith(f'filename="{STATEMENT}-log-4.jsonl"')
    hosted.screenshot(path=f"{SHOTS}/browser-audit.png", full_page=True)
    assert serious(Axe().run(hosted)) == []


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_on_the_receipt_page(new_page, service, redis_client, scheme):
    secret = endorse_via_api(service, name="Dana", email="dana@example.org")["receipt"]["secret"]
    page = new_page(color_scheme=scheme)
    page.goto(f"{service.url}/s/{STATEMENT}/receipt?lang=ru#{secret}")
    page.wait_for_selector("#rc-sig[data-status]", timeout=15_000)
    page.click("#rc-ask")
    assert serious(Axe().run(page)) == [], scheme
    page.screenshot(path=f"{SHOTS}/browser-receipt-{scheme}.png", full_page=True)
