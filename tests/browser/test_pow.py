"""Issue 10 in Chromium: the proof of work from a visitor's first focus to the count, on a
strict-CSP allied page and on /demo; the honeypot nobody sees or hears; the no-JavaScript
form with its stricter limit, stated on the page.

The session's service runs with the proof of work on (tests/browser/conftest.py)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import STATEMENT, gunicorn_env
from playwright.sync_api import Request, Route, expect
from servers import Gunicorn

from .browser_helpers import api_count, widget_frame
from .test_widget import fill_form

pytestmark = [pytest.mark.browser, pytest.mark.server]


def endorse_posts(requests: list[Request]) -> list[dict[str, Any]]:
    return [
        json.loads(r.post_data or "{}")
        for r in requests
        if r.method == "POST" and r.url.endswith("/endorsements")
    ]


def test_proof_of_work_from_first_focus_to_counted_on_a_strict_host(
    new_page, host_site, service, console
):
    url = host_site.page("pow", "<h1>Ally</h1>" + host_site.snippet())
    page = new_page()
    seen: list[Request] = []
    page.context.on("request", lambda request: seen.append(request))
    held: list[Route] = []
    # Hold the challenge, to see what the button says while the work is not done yet.
    page.context.route("**/challenge", lambda route: held.append(route))
    page.goto(url)
    frame = widget_frame(page)
    page.wait_for_timeout(300)
    assert not held, "no challenge before the visitor reaches the form"

    frame.focus("#f-name")  # the first focus starts the work
    for _ in range(50):
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    fill_form(frame, "Dana Sarsenova", "dana@example.org")
    frame.click("#f-submit")
    button = frame.locator("#f-submit")
    expect(button).to_be_disabled()
    expect(button).to_have_text("One moment: securing your endorsement…")
    held[0].fulfill(response=held[0].fetch())  # the challenge arrives; the worker solves it
    page.context.unroute("**/challenge")
    frame.wait_for_selector("#done:not([hidden])")
    assert "Your endorsement has been counted." in frame.inner_text("#done")
    assert api_count(service) == 1
    (posted,) = endorse_posts(seen)
    assert posted["altcha"] and posted["website"] == ""
    solution = json.loads(base64.b64decode(posted["altcha"]))
    assert set(solution) == {"challenge", "solution"}
    assert solution["challenge"]["parameters"]["data"] == {"statement": STATEMENT}
    page.wait_for_timeout(300)
    assert console.errors == []


def test_proof_of_work_on_the_demo_page(new_page, service, console):
    page = new_page()
    seen: list[Request] = []
    page.context.on("request", lambda request: seen.append(request))
    page.goto(f"{service.url}/demo")
    frame = widget_frame(page)
    fill_form(frame, "Timur Akhmetov", "timur@example.org")
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")
    assert api_count(service) == 1
    (posted,) = endorse_posts(seen)
    assert posted["altcha"]
    assert sum(1 for r in seen if r.url.endswith("/challenge")) == 1  # one widget, one solve


def test_the_honeypot_is_neither_seen_nor_heard_and_counts_nothing(
    new_page, host_site, service, console
):
    url = host_site.page("honeypot", host_site.snippet())
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    trap = frame.locator("#f-website")
    assert trap.count() == 1
    # Off the screen, out of the tab order and out of the accessibility tree.
    assert frame.evaluate("document.querySelector('#f-website').getBoundingClientRect().right < 0")
    assert trap.get_attribute("tabindex") == "-1"
    assert trap.get_attribute("autocomplete") == "off"
    assert frame.get_by_role("textbox", name="Website").count() == 0
    frame.focus("#f-name")
    visited = []
    for _ in range(8):  # through the whole form, to its button
        page.keyboard.press("Tab")
        visited.append(frame.evaluate("document.activeElement.id"))
    assert "f-submit" in visited and "f-website" not in visited, visited
    # A machine that fills every field is answered like a person, and not counted.
    fill_form(frame, "Bot Botson", "bot@example.org")
    frame.evaluate("document.querySelector('#f-website').value = 'https://spam.example'")
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")
    assert "Your endorsement has been counted." in frame.inner_text("#done")
    assert api_count(service) == 0


@pytest.fixture
def strict_form_service(
    redis_server: Any, redis_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """The service with the no-JavaScript form's default limit (one a minute)."""
    env = gunicorn_env(redis_server, WIDGET_POW="on", WIDGET_POW_COST="500")
    del env["WIDGET_FORM_LIMIT"]
    server = Gunicorn(env, workers=2, folder=tmp_path_factory.mktemp("strict-form"))
    server.start()
    yield server
    server.stop()


def test_the_no_javascript_form_states_and_applies_its_stricter_limit(
    new_page, strict_form_service
):
    service = strict_form_service
    page = new_page(java_script_enabled=False)
    page.goto(f"{service.url}/s/{STATEMENT}")
    note = page.locator(".nojs-limit")
    assert "at most one endorsement a minute" in note.inner_text()
    page.fill("#f-name", "Asel")
    page.fill("#f-email", "asel@example.org")
    page.check("#f-consent")
    page.click("#f-submit")
    assert "Your endorsement has been counted." in page.inner_text("main")
    page.goto(f"{service.url}/s/{STATEMENT}")
    page.fill("#f-name", "Berik")
    page.fill("#f-email", "berik@example.org")
    page.check("#f-consent")
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.click("#f-submit")
    assert answer.value.status == 429
    assert answer.value.headers.get("retry-after")
    assert "Too many endorsements" in page.inner_text("#f-status")
    assert api_count(service) == 1


def test_a_challenge_that_fails_says_why_and_the_next_press_counts_once(
    new_page, host_site, service, console
):
    """The challenge refused (429), the service busy (503), the network down: each says
    so, instead of blaming the visitor's browser; once it answers again, one press counts."""
    page = new_page()
    page.goto(host_site.page("pow-fail", "<h1>Ally</h1>" + host_site.snippet()))
    frame = widget_frame(page)
    problem = {"type": "urn:undersign:problem:rate-limited", "title": "Too many requests"}
    cases: list[tuple[Any, str]] = [
        (
            lambda route: route.fulfill(
                status=429, json={**problem, "status": 429}, headers={"Retry-After": "30"}
            ),
            "Too many endorsements from your network just now. Please try again later.",
        ),
        (
            lambda route: route.fulfill(status=503, json={**problem, "status": 503}),
            "The service is busy and nothing was recorded. Please try again in a moment.",
        ),
        (
            lambda route: route.abort("internetdisconnected"),
            "Could not reach the server. Check your connection and try again.",
        ),
        (
            lambda route: route.fulfill(status=200, json={"parameters": "not a challenge"}),
            "Your browser could not finish a security check. Please press Endorse again.",
        ),
    ]
    for number, (handler, message) in enumerate(cases):
        page.context.route("**/challenge", handler)
        if not number:  # the first focus asks for a challenge: already under the route
            fill_form(frame, "Aruzhan Bekova", "aruzhan@example.org")
        frame.click("#f-submit")
        expect(frame.locator("#f-status")).to_have_text(message)
        expect(frame.locator("#f-submit")).to_be_enabled()
        page.context.unroute("**/challenge")
    assert api_count(service) == 0
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")
    assert api_count(service) == 1
    # What the browser logged is the failed requests themselves, and nothing else.
    unexpected = [
        e for e in console.errors if not re.search(r"status of (429|503)|ERR_INTERNET", e)
    ]
    assert unexpected == [], console.errors
