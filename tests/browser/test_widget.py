"""Issue 3's acceptance list, in Debian's Chromium through Playwright, against gunicorn."""

from __future__ import annotations

import json
import re
import time

import pytest
import requests
from axe_playwright_python.sync_playwright import Axe
from conftest import STATEMENT
from playwright.sync_api import expect
from servers import wait_for

from widget.store import Store

from .browser_helpers import api_count, endorse_via_api, widget_frame

pytestmark = [pytest.mark.browser, pytest.mark.server]


def fill_form(frame, name: str, email: str, country: str = "KZ") -> None:
    frame.fill("#f-name", name)
    frame.fill("#f-email", email)
    if country:
        frame.select_option("#f-country", country)
    frame.check("#f-consent")


def test_hostile_host_page_endorse(new_page, host_site, service, console, redis_client):
    url = host_site.page(
        "hostile",
        "<h1>Ally news</h1><div><p>Our partners' statement:</p>" + host_site.snippet() + "</div>",
        head='<link rel="stylesheet" href="/hostile.css">',
    )
    endorse_via_api(service, name="Earlier Person", email="earlier@example.org")
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    before = api_count(service)
    assert before == 1
    assert frame.get_attribute("[data-count]", "data-count") == "1"
    # The loader's sizes win over the hostile stylesheet, and follow the content.
    page.wait_for_function("document.querySelector('iframe').getBoundingClientRect().height > 400")
    box = page.query_selector("iframe").bounding_box()
    assert box and box["width"] > 280
    # Neither moved to the corner, turned, blurred nor made deaf to the pointer.
    pinned = page.evaluate(
        """() => { const s = getComputedStyle(document.querySelector('iframe'));
                   return [s.position, s.transform, s.filter, s.pointerEvents]; }"""
    )
    assert pinned == ["static", "none", "none", "auto"]
    heading = page.query_selector("h1").bounding_box()
    assert heading and box["y"] > heading["y"] + heading["height"]
    assert frame.locator("html").get_attribute("lang") == "en"

    fill_form(frame, "Aliya Nurlanovna", "aliya@example.org")
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")  # the answer, not the stream
    frame.wait_for_selector('[data-count="2"]')
    assert api_count(service) == before + 1
    assert frame.is_visible("#done")
    assert "Your endorsement has been counted." in frame.inner_text("#done")
    # The widget told the API which allied site the endorsement came through.
    assert redis_client.hget(f"us:{{{STATEMENT}}}:by_source", host_site.origin) == b"1"
    page.wait_for_timeout(300)
    assert console.errors == []


def test_elements_added_later_get_one_iframe_each(new_page, host_site, service, console):
    host_site.file(
        "spa.js",
        """
        setTimeout(function () {
          var a = document.createElement('div');
          a.setAttribute('data-endorse-statement', 'ID');
          a.setAttribute('data-layout', 'compact');
          var b = document.createElement('section');
          b.innerHTML = '<div data-endorse-statement="ID" data-lang="ru"'
            + ' data-layout="compact"></div>';
          document.body.appendChild(a);
          document.body.appendChild(b);
          document.body.setAttribute('data-added', '1');
        }, 300);
        """.replace("ID", STATEMENT),
    )
    loader = f'<script src="{service.url}/embed.js" async></script>'
    url = host_site.page("spa", loader + loader + '<script src="/spa.js"></script>')
    page = new_page(locale="en-US")
    page.goto(url)
    page.wait_for_selector("body[data-added]")
    page.wait_for_function("document.querySelectorAll('iframe').length == 2")
    page.wait_for_timeout(300)
    assert page.eval_on_selector_all("iframe", "l => l.length") == 2  # loaded twice: no double
    first, second = widget_frame(page, 0), widget_frame(page, 1)
    assert first.locator("html").get_attribute("lang") == "en"
    assert second.locator("html").get_attribute("lang") == "ru"
    assert second.inner_text("#open") == "Поддержать"
    page.wait_for_function("document.querySelectorAll('iframe')[1].title.startsWith('Поддержать')")
    assert console.errors == []


def test_widgets_are_lazy_loaded(new_page, host_site, service, console):
    # Far beyond Chromium's lazy-loading distance (up to 8000 px, by connection type). A
    # canvas's own size pushes it there, with no stylesheet the loader could run before.
    hidden = f'<div id="hidden" hidden data-endorse-statement="{STATEMENT}"></div>'
    spacer = '<canvas width="1" height="20000"></canvas>'
    far = f'{spacer}<div class="far" data-endorse-statement="{STATEMENT}"></div>'
    body = "<h1>Ally</h1>" + host_site.snippet() + hidden + far
    url = host_site.page("lazy", body)
    page = new_page(viewport={"width": 900, "height": 700})
    embeds: list[str] = []
    page.on("request", lambda r: embeds.append(r.url) if "/embed/" in r.url else None)
    page.goto(url)
    near = widget_frame(page, 0)  # in view: loaded at once, with no lazy-loading check to wait for
    loading = page.eval_on_selector_all("iframe", "l => l.map((f) => f.getAttribute('loading'))")
    assert loading == ["eager", "lazy", "lazy"]  # the hidden one and the far one wait
    page.wait_for_timeout(500)
    assert len(embeds) == 1, "a hidden widget, or one 20000 px below, loaded before it was needed"
    assert near.get_attribute("[data-count]", "data-count") is not None
    page.eval_on_selector("#hidden", "el => { el.hidden = false; }")
    widget_frame(page, 1)
    assert len(embeds) == 2
    page.eval_on_selector(".far", "el => el.scrollIntoView()")
    widget_frame(page, 2)
    assert len(embeds) == 3
    assert console.errors == []


def test_iframe_asks_for_web_share_only_where_the_browser_has_it(
    new_page, host_site, service, console
):
    url = host_site.page("share", "<h1>Ally</h1>" + host_site.snippet())
    page = new_page()  # Chromium for Linux: no Web Share
    page.goto(url)
    widget_frame(page)
    assert page.get_attribute("iframe", "allow") == "clipboard-write"
    page.wait_for_timeout(300)
    assert console.errors == []  # no "Unrecognized feature" warning

    # Where the host page's browser has Web Share (Android, ChromeOS, Windows, Safari),
    # the frame may open the share sheet. Chromium for Linux, told to ask anyway, warns.
    sharing = new_page()
    sharing.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'share',"
        " {value: () => Promise.resolve(), configurable: true})"
    )
    sharing.goto(url)
    widget_frame(sharing)
    assert sharing.get_attribute("iframe", "allow") == "clipboard-write;web-share"
    sharing.wait_for_timeout(300)
    assert any("web-share" in e for e in console.errors), console.errors


def serious(results) -> list[str]:
    return [
        f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_serious_violation(new_page, host_site, service, theme):
    endorse_via_api(service, name="Dana Example", email="dana@example.org", country="DE")
    endorse_via_api(service, name="Quiet", email="quiet@example.org", public=True, country="KZ")
    widgets = "".join(
        f'<div data-endorse-statement="{STATEMENT}" data-theme="{theme}" data-layout="{layout}">'
        "</div>"
        for layout in ("compact", "counter")
    )
    url = host_site.page(f"axe-{theme}", host_site.snippet(**{"data-theme": theme}) + widgets)
    page = new_page()
    page.goto(url)
    full, compact, counter = (widget_frame(page, i) for i in range(3))
    full.wait_for_selector("#recent-list li")
    axe = Axe()
    assert serious(axe.run(full)) == [], f"{theme}/full"
    assert serious(axe.run(compact)) == [], f"{theme}/compact"
    assert serious(axe.run(counter)) == [], f"{theme}/counter"
    full.click("#f-submit")  # every error message shown
    full.wait_for_selector("#f-name-err:not([hidden])")
    assert serious(axe.run(full)) == [], f"{theme}/full with errors"
    expect(full.locator("#f-status")).to_have_text("Please check the highlighted fields.")
    fill_form(full, "Axe Person", "axe@example.org")
    # Every field put right: the summary of errors goes with them, before any new submit.
    expect(full.locator("#f-status")).to_be_hidden()
    assert full.locator(".err:not([hidden])").count() == 0
    full.click("#f-submit")
    full.wait_for_selector("#done:not([hidden])")
    assert serious(axe.run(full)) == [], f"{theme}/thank-you"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_on_the_hosted_page(new_page, service, scheme):
    endorse_via_api(service, name="Dana Example", email="dana@example.org", country="DE")
    page = new_page(color_scheme=scheme)
    page.goto(f"{service.url}/s/{STATEMENT}?lang=kk")
    assert serious(Axe().run(page)) == [], f"{scheme}/statement page"
    page.click("#f-submit")
    page.wait_for_selector("#f-name-err:not([hidden])")
    assert serious(Axe().run(page)) == [], f"{scheme}/statement page with errors"


def test_keyboard_only_endorsement(new_page, host_site, service):
    url = host_site.page("keyboard", "<p>Before the widget.</p>" + host_site.snippet())
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    active = "document.activeElement && document.activeElement.id"
    for _ in range(12):
        page.keyboard.press("Tab")
        if frame.evaluate(active) == "f-name":
            break
    assert frame.evaluate(active) == "f-name"
    outline = frame.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # visible focus
    page.keyboard.type("Timur Keyboard")
    page.keyboard.press("Tab")
    page.keyboard.type("timur@example.org")
    page.keyboard.press("Tab")
    assert frame.evaluate(active) == "f-country"
    page.keyboard.press("Tab")
    assert frame.evaluate(active) == "f-public"
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert frame.evaluate(active) == "f-consent"
    page.keyboard.press("Space")
    assert frame.is_checked("#f-consent") and frame.is_checked("#f-public")
    page.keyboard.press("Tab")
    assert frame.evaluate(active) == "f-submit"
    page.keyboard.press("Enter")
    frame.wait_for_selector("#done:not([hidden])")  # the answer, not the stream
    frame.wait_for_selector('[data-count="1"]')
    assert frame.evaluate(active) == "done"  # focus follows to the thank-you
    assert api_count(service) == 1


def test_hostile_name_is_text_everywhere(new_page, host_site, service, console):
    name = "<img/src=x/onerror=window.top.pwned=1;document.title='pwned'>"
    endorse_via_api(service, name=name, email="x@example.org", country="KZ", public=True)
    url = host_site.page("xss", host_site.snippet())
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    frame.wait_for_selector("#recent-list li")
    # Only the first word is ever public (punctuation separates words), and it is text.
    assert frame.inner_text("#recent-list li .who") == "img, Kazakhstan"
    assert frame.locator("#recent-list img").count() == 0
    assert frame.evaluate("window.pwned") is None
    assert frame.evaluate("document.title") != "pwned"

    page.goto(f"{service.url}/s/{STATEMENT}?lang=en")
    assert page.inner_text("#recent-list li .who") == "img, Kazakhstan"
    assert page.locator("img").count() == 0
    assert page.evaluate("window.pwned") is None
    assert page.title() != "pwned"


def test_no_js_form_works_without_javascript(new_page, service):
    page = new_page(java_script_enabled=False)
    page.goto(f"{service.url}/s/{STATEMENT}?lang=ru")
    assert page.locator("#f-country option[value=KZ]").inner_text() == "Казахстан"
    page.click("#f-submit")  # empty: the server answers with errors beside the fields
    assert page.inner_text("#f-name-err") == "Введите своё имя."
    assert page.inner_text("#f-consent-err") == "Отметьте согласие, чтобы продолжить."
    page.fill("#f-name", "Ержан")
    page.fill("#f-email", "erzhan@example.org")
    page.select_option("#f-country", "KZ")
    page.check("#f-consent")
    page.click("#f-submit")
    assert "Ваш голос учтён." in page.inner_text("main")
    assert page.get_attribute("[data-count]", "data-count") == "1"
    assert api_count(service) == 1


def test_not_allowlisted_origin_cannot_frame_the_widget(new_page, host_site, service, console):
    host_site.page("foreign", host_site.snippet())
    page = new_page()
    page.goto(f"{host_site.foreign_origin}/foreign.html")  # same files, another origin
    page.wait_for_selector("iframe", state="attached")
    page.wait_for_timeout(1500)
    for frame in page.frames[1:]:
        loaded = frame.evaluate("!!document.getElementById('w')") if frame.url else False
        assert not loaded, frame.url
    assert any("frame-ancestors" in m for m in console.messages), console.messages

    def policy(origin: str) -> str:
        url = f"{service.url}/embed/{STATEMENT}"
        response = requests.get(url, params={"origin": origin}, timeout=5)
        return response.headers["Content-Security-Policy"]

    assert re.search(
        rf"frame-ancestors 'self' {re.escape(host_site.origin)}$", policy(host_site.origin)
    )
    assert policy(host_site.foreign_origin).endswith("frame-ancestors 'self'")


def test_count_follows_endorsements_made_elsewhere(
    new_page, host_site, service, console, redis_client
):
    sync_live_hubs(service, redis_client)  # defined below
    url = host_site.page("live", host_site.snippet(**{"data-layout": "counter"}))
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    assert frame.get_attribute("[data-count]", "data-count") == "0"
    endorse_via_api(service, name="Elsewhere", email="elsewhere@example.org")
    # The live event stream carries it; the 5-second poll would be too late.
    frame.wait_for_selector('[data-count="1"]', timeout=2_000)
    assert " ".join(frame.inner_text(".badge .total").split()) == "1 endorsement"
    width = page.eval_on_selector("iframe", "f => f.getBoundingClientRect().width")
    assert 80 < width < 400  # the badge sized its iframe
    assert console.errors == []
    assert stream_errors(console.errors) == []  # strict now that /events exists


def test_compact_opens_the_form_then_endorses(new_page, host_site, service):
    url = host_site.page("compact", host_site.snippet(**{"data-layout": "compact"}))
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    assert not frame.is_visible("#f")
    frame.click("#open")
    assert frame.is_visible("#f") and not frame.is_visible("#open")
    assert frame.evaluate("document.activeElement.id") == "f-name"
    fill_form(frame, "Compact Person", "compact@example.org", country="")
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")  # the answer, not the stream
    frame.wait_for_selector('[data-count="1"]')
    assert "Your endorsement has been counted." in frame.inner_text("#done")


def test_duplicate_and_server_errors_are_shown(new_page, host_site, service):
    endorse_via_api(service, name="First", email="same@example.org")
    url = host_site.page("dup", host_site.snippet(**{"data-lang": "de"}))
    page = new_page()
    page.goto(url)
    frame = widget_frame(page)
    fill_form(frame, "Zweiter Versuch", "SAME@example.org")
    frame.click("#f-submit")
    frame.wait_for_selector("#done:not([hidden])")
    assert "Sie haben diese Erklärung bereits unterstützt" in frame.inner_text("#done")
    assert api_count(service) == 1


def test_hosted_page_endorses_in_place_with_javascript(new_page, service):
    page = new_page()
    page.goto(f"{service.url}/s/{STATEMENT}?lang=fr")
    page.fill("#f-name", "Camille")
    page.fill("#f-email", "camille@example.org")
    page.check("#f-consent")
    page.click("#f-submit")
    page.wait_for_selector("#done:not([hidden])")  # the answer, not the stream
    page.wait_for_selector('[data-count="1"]')
    assert page.url.endswith("?lang=fr")  # no navigation: the script used the API
    assert "Votre soutien a bien été compté." in page.inner_text("#done")
    assert api_count(service) == 1


def stream_errors(errors: list[str]) -> list[str]:
    return [e for e in errors if "EventSource" in e or "/events" in e or "404" in e]


def streamed_count(service) -> int:
    """The count a new viewer's event stream starts with."""
    url = f"{service.url}/api/v1/statements/{STATEMENT}/events"
    with requests.get(url, stream=True, timeout=5) as response:
        for line in response.iter_lines():
            if line.startswith(b"data:"):
                count: int = json.loads(line[5:])["count"]
                return count
    raise AssertionError("the stream ended before its first count")


def sync_live_hubs(service, redis_client) -> None:
    """The session's gunicorn outlives each test's FLUSHALL, a change behind the store's
    back: its count reads may lag such a change by up to a second (as the API allows).
    Wait until both count reads and new streams agree with Redis."""
    stored = Store(redis_client).count(STATEMENT)
    wait_for(
        lambda: (
            all(api_count(service) == stored for _ in range(4))
            and streamed_count(service) == stored
        ),
        timeout=5,
        what=f"count reads and streams to start at {stored}",
    )


def test_live_count_comes_over_the_event_stream_within_a_second(
    new_page, host_site, service, console, redis_client
):
    sync_live_hubs(service, redis_client)
    requested: list[str] = []
    url = host_site.page("live-stream", host_site.snippet(**{"data-layout": "counter"}))
    page = new_page()
    page.on("request", lambda r: requested.append(f"{r.resource_type} {r.url}"))
    # One stream per browser partition, every watched statement in it (test_live_tabs.py).
    events = f"{service.url}/api/v1/events?statements={STATEMENT}"
    with page.expect_response(lambda r: r.url == events) as opened:
        page.goto(url)
    stream = opened.value
    assert stream.status == 200
    assert stream.request.resource_type == "eventsource"
    assert stream.headers["content-type"].startswith("text/event-stream")
    frame = widget_frame(page)
    assert frame.get_attribute("[data-count]", "data-count") == "0"

    # When the count showed, by the page's clock (the wall clock this process reads too):
    # how long Playwright takes to notice is not part of the lag.
    frame.evaluate(
        "new MutationObserver(function () {"
        " if (document.querySelector('[data-count]').dataset.count === '1')"
        " window.__shown = window.__shown || Date.now(); })"
        ".observe(document, {subtree: true, attributes: true, attributeFilter: ['data-count']})"
    )
    endorse_via_api(service, name="Far Away", email="far.away@example.org")
    posted = time.time() * 1000  # the POST's answer
    frame.wait_for_selector('[data-count="1"]', timeout=10_000)
    elapsed = frame.evaluate("window.__shown") - posted
    assert elapsed < 1000, f"the count moved {elapsed:.0f} ms after the POST's answer"
    assert frame.get_attribute("[data-count]", "data-count") == "1"
    # Polling never ran (it starts only when the stream fails), so it cannot explain that.
    assert [r for r in requested if r.endswith("/count")] == []
    assert [r for r in requested if "/events" in r] == [f"eventsource {events}"]
    assert stream_errors(console.errors) == []
    assert console.errors == []
