"""Bench: time from navigation to a visible count, cold browser cache, loopback.

Starts a throwaway redis-server, the real gunicorn (production config) and an allied host
page on another origin (``localhost`` vs ``127.0.0.1``: a cross-site, out-of-process
iframe, as on a real allied site). Each run opens a fresh browser context (empty HTTP
cache, no open connections, new renderer processes), navigates to the host page and
reads, inside the browser, the time from the host page's navigation start to the widget
iframe's first contentful paint, checking that the count was in it (server-rendered,
inside the frame's viewport, not hidden, the stylesheet loaded before that paint, no web
font holding text back).

Side by side, in the same runs (rotating which goes first), it measures two floors, from
navigation start to the first contentful paint of a plain ``<iframe src=SERVICE/healthz>``:
written in the host page's HTML (no embed can beat it), and inserted by a minimal async
script fetched cross-site (``floor.js``, a few lines: no embed that one script tag brings
can beat that). The target is a median count <= 150 ms.

Nothing is attached to the pages while they load (``--driver cdp``, the default, see
bench/cdp.py): the bench navigates, waits, then attaches to read the browser's own
timestamps, so it measures what a visitor's browser does. ``--driver playwright`` runs
the same measurement under Playwright, which pauses every new frame until its driver has
instrumented it: slower by tens of milliseconds, shown for comparison with the tests.
Check ``uptime`` first: other work on the machine shows up here.

Chromium's own browser UI is kept out of the measurement. Debian's Chromium 156 preloads,
in each new browser context (each run here), the address bar's popup as a WebUI page in a
renderer of its own, and that competes with the page for this machine's two CPUs during
the first ~200 ms. A visitor's browser does that once, when its profile opens, not when they
open an allied page, and headless Chromium has no address bar to show it in. So the CDP
driver disables those two features, as Puppeteer's launcher does by default.
``--omnibox-preload`` keeps them, to show what they cost (floors included). The Playwright
driver keeps them too: a second ``--disable-features`` would replace Playwright's own list.

    python bench/page_load.py [--runs 20] [--layout full|compact|counter] [--driver cdp|playwright]
                              [--omnibox-preload]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from cdp import Chromium  # noqa: E402
from playwright.sync_api import Browser, Frame, Page, sync_playwright  # noqa: E402
from servers import CHROMIUM, CHROMIUM_ARGS, Gunicorn, RedisServer, free_port  # noqa: E402

STATEMENT = "dongelek-ystel"
TARGET_MS = 150  # navigation to a visible count, median
# Browser UI a new context would preload in a renderer of its own (see the docstring).
NO_OMNIBOX_PRELOAD = "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup"
# In an iframe, after its load event: its time origin, phases, first contentful paint, and
# whether the count was in that paint: it is in the HTML, inside the frame's viewport and
# not hidden, the stylesheet (render-blocking) came before the paint, no web font held
# text back.
INNER = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const end = (name) => {
    const r = res.find((x) => x.name.includes(name));
    return r ? r.responseEnd : null;
  };
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  const out = {origin: performance.timeOrigin, html: nav.responseEnd, css: end('/widget.css'),
               js: end('/widget.js'), fcp: fcp ? fcp.startTime : null, shown: false};
  const el = document.querySelector('[data-count]');
  if (el && out.fcp !== null) {
    const r = el.getBoundingClientRect();
    out.shown = r.width > 0 && r.top >= 0 && r.bottom <= innerHeight && out.css < out.fcp &&
      el.checkVisibility({opacityProperty: true, visibilityProperty: true}) &&
      document.fonts.size === 0 && /^[0-9]+$/.test(el.dataset.count);
  }
  return out;
}"""
OUTER = """() => {
  const res = performance.getEntriesByType('resource').find((r) => r.name.includes('/embed.js'));
  return {origin: performance.timeOrigin, loader: res ? res.responseEnd : null};
}"""


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# The least a one-script-tag embed can do: insert a plain iframe where its tag is.
FLOOR_LOADER = """(function (d) {
  var me = d.currentScript, f = d.createElement('iframe');
  f.src = me.dataset.src;
  me.parentNode.insertBefore(f, me.nextSibling);
})(document);
"""


def host_page(body: str) -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>Ally</title></head><body><h1>An allied page</h1>{body}</body></html>"
    )


Timings = tuple[dict[str, Any], dict[str, Any]]  # (INNER, OUTER) as read in the browser


def child_frame(page: Page, prefix: str, timeout: float = 15.0) -> Frame:
    """The iframe whose URL starts with ``prefix``, found without touching the page."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for frame in page.frames:
            if frame.url.startswith(prefix):
                return frame
        page.wait_for_timeout(10)  # lets Playwright process the browser's events
    raise TimeoutError(f"no frame at {prefix}")


def painted(frame: Frame) -> dict[str, Any]:
    frame.wait_for_load_state("load")
    for _ in range(100):
        frame.page.wait_for_timeout(50)  # paint timing arrives after the frame is shown
        inner: dict[str, Any] = frame.evaluate(INNER)
        if inner["fcp"] is not None:
            return inner
    raise TimeoutError(f"{frame.url} was never painted")


def measure_playwright(browser: Browser, url: str, frame_prefix: str) -> Timings:
    context = browser.new_context()  # a fresh, empty cache and connection pool each time
    try:
        page = context.new_page()
        page.goto(url, wait_until="commit")
        inner = painted(child_frame(page, frame_prefix))
        outer: dict[str, Any] = page.evaluate(OUTER)
    finally:
        context.close()
    return inner, outer


def measure_cdp(browser: Chromium, url: str, frame_prefix: str) -> Timings:
    """Navigate a fresh context's page, let it load untouched, then read its timestamps."""
    context = browser.call("Target.createBrowserContext")["browserContextId"]
    try:
        page = browser.call("Target.createTarget", url="about:blank", browserContextId=context)
        # A session on the host page only, with no domain enabled: nothing runs in it.
        session = browser.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)
        host = session["sessionId"]
        browser.evaluate(host, "() => 1")  # its renderer is up, as a tab's would be
        browser.call("Page.navigate", host, url=url)
        time.sleep(0.6)  # several times what a load takes here; attaching earlier would slow it
        for _ in range(100):
            targets = browser.call("Target.getTargets")["targetInfos"]
            frames = [
                t["targetId"]
                for t in targets
                if t["type"] == "iframe"
                and t.get("browserContextId") == context
                and t["url"].startswith(frame_prefix)
            ]
            if frames:
                frame = browser.call("Target.attachToTarget", targetId=frames[0], flatten=True)
                inner: dict[str, Any] = browser.evaluate(frame["sessionId"], INNER)
                if inner["fcp"] is not None:
                    outer: dict[str, Any] = browser.evaluate(host, OUTER)
                    return inner, outer
            time.sleep(0.1)
        raise TimeoutError(f"no painted frame at {frame_prefix} in {url}")
    finally:
        browser.call("Target.disposeBrowserContext", browserContextId=context)


def timeline(timings: Timings, widget: bool) -> dict[str, Any]:
    """The steps in ms from the host page's navigation start."""
    inner, outer = timings
    shift = inner["origin"] - outer["origin"]  # the iframe's navigation start, host clock
    row = {"start": shift, "html": shift + inner["html"], "fcp": shift + inner["fcp"]}
    if widget:
        row |= {
            "loader": outer["loader"],
            "css": shift + inner["css"],
            "js": shift + inner["js"],
            "shown": inner["shown"],
        }
    return row


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):6.1f} ms   p90 {percentile(values, 0.9):6.1f} ms"
        f"   min {min(values):6.1f}   max {max(values):6.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--layout", default="full", choices=["full", "compact", "counter"])
    parser.add_argument("--driver", default="cdp", choices=["cdp", "playwright"])
    parser.add_argument(
        "--omnibox-preload",
        action="store_true",
        help="let each new context preload the address bar's WebUI popup (Chromium's default)",
    )
    args = parser.parse_args()
    # Playwright's launch keeps Chromium's default: its own --disable-features would be lost.
    omnibox_preload = args.omnibox_preload or args.driver == "playwright"

    work = Path(tempfile.mkdtemp(prefix="undersign-bench-"))
    host = work / "host"
    host.mkdir()
    redis = RedisServer(work)
    redis.start()
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(Quiet, directory=str(host)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://localhost:{port}"
    env = {
        "WIDGET_REDIS_URL": redis.url,
        "WIDGET_SECRET_KEY": "bench-secret-key-0123456789abcdef0123",
        "WIDGET_ALLOWED_ORIGINS": origin,
    }
    server = Gunicorn(env, workers=2, folder=work)
    server.start()
    (host / "page.html").write_text(
        host_page(
            f'<script src="{server.url}/embed.js" data-statement="{STATEMENT}" '
            f'data-layout="{args.layout}" async></script>'
        )
    )
    (host / "floor.html").write_text(host_page(f'<iframe src="{server.url}/healthz"></iframe>'))
    (host / "floor.js").write_text(FLOOR_LOADER)
    # 127.0.0.1 is another site than the host page's localhost: fetched like embed.js.
    (host / "floor-script.html").write_text(
        host_page(
            f'<script src="http://127.0.0.1:{port}/floor.js" '
            f'data-src="{server.url}/healthz" async></script>'
        )
    )
    # A production server is warm: templates compiled, digests cached, pools open, in
    # every worker (requests spread over both).
    embed = f"{server.url}/embed/{STATEMENT}?layout={args.layout}&origin={origin}"
    for _ in range(8):
        html = requests.get(embed, timeout=5).text
        for path in ["/embed.js", "/healthz", *re.findall(r'(?:src|href)="(/static/[^"]+)"', html)]:
            requests.get(server.url + path, timeout=5)

    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    floors: list[dict[str, Any]] = []
    scripted: list[dict[str, Any]] = []
    cases = [
        (f"{origin}/page.html", f"{server.url}/embed/", rows),
        (f"{origin}/floor.html", f"{server.url}/healthz", floors),
        (f"{origin}/floor-script.html", f"{server.url}/healthz", scripted),
    ]

    def runs(measure: Callable[[str, str], Timings]) -> None:
        for run in range(args.runs + 2):  # the first two warm the browser process itself
            for url, prefix, table in cases[run % 3 :] + cases[: run % 3]:
                row = timeline(measure(url, prefix), widget=table is rows)
                if run >= 2:
                    table.append(row)

    try:
        if args.driver == "cdp":
            extra = [] if omnibox_preload else [NO_OMNIBOX_PRELOAD]
            chromium = Chromium(CHROMIUM, [*CHROMIUM_ARGS, *extra])
            try:
                runs(partial(measure_cdp, chromium))
            finally:
                chromium.close()
        else:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                runs(partial(measure_playwright, browser))
                browser.close()
    finally:
        server.stop()
        httpd.shutdown()
        redis.stop()
    load_after = os.getloadavg()

    def col(table: list[dict[str, Any]], key: str) -> list[float]:
        return [r[key] for r in table]

    count, floor, floor_script = col(rows, "fcp"), col(floors, "fcp"), col(scripted, "fcp")
    print(
        f"layout={args.layout} runs={args.runs} driver={args.driver} omnibox preload "
        f"{'on' if omnibox_preload else 'off'} (fresh context each, "
        f"loopback, 2 gunicorn workers); load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after, {os.cpu_count()} CPUs"
    )
    print("navigation -> widget painted with count: ", summary(count))
    print("floor: plain iframe in the host's HTML:   ", summary(floor))
    print("floor: plain iframe inserted by a script: ", summary(floor_script))
    mid, low = statistics.median(count), statistics.median(floor)
    low_script = statistics.median(floor_script)
    first = sum(r["shown"] for r in rows)
    print(
        f"ratio count/floor (medians) {mid / low:.2f}; above the floor {mid - low:.0f} ms, "
        f"above the scripted floor {mid - low_script:.0f} ms; count in the iframe's first "
        f"contentful paint in {first}/{len(rows)} runs"
    )
    print(f"target: median <= {TARGET_MS} ms: {'met' if mid <= TARGET_MS else 'missed'}")
    print(
        "widget steps (median ms from host navigation): embed.js loaded {:.0f}, iframe "
        "navigation starts {:.0f}, its HTML loaded {:.0f}, CSS {:.0f}, JS {:.0f}, first "
        "paint with the count {:.0f}".format(
            *(
                statistics.median(col(rows, k))
                for k in ("loader", "start", "html", "css", "js", "fcp")
            )
        )
    )
    for name, table in (("floor", floors), ("scripted floor", scripted)):
        print(
            "{} steps (median ms): iframe navigation starts {:.0f}, its response loaded "
            "{:.0f}, first paint {:.0f}".format(
                name, *(statistics.median(col(table, k)) for k in ("start", "html", "fcp"))
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
