"""Bench: time from navigation to a visible count, cold browser cache, loopback.

Starts a throwaway redis-server, the real gunicorn (production config) and an allied host
page on another origin, then for each run opens a fresh Chromium context (empty cache),
navigates to the host page and measures, inside the browser, from the host page's
navigation start to the widget iframe's first contentful paint (the count is rendered by
the server, so it is visible in that first paint); also the wall-clock time until
Playwright sees the count element visible. Target: <= 150 ms.

    python bench/page_load.py [--runs 20] [--layout full]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402
from servers import Gunicorn, RedisServer, free_port  # noqa: E402

STATEMENT = "dongelek-ystel"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
STEPS = """() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const css = res.find((r) => r.name.includes('.css'));
  const loader = res.find((r) => r.name.includes('/embed.js'));
  return {origin: performance.timeOrigin, html: nav.responseEnd, css: css ? css.responseEnd : 0,
          loader: loader ? loader.responseEnd : 0};
}"""
PAINTED = """() => {
  const fcp = performance.getEntriesByName('first-contentful-paint')[0];
  return fcp ? performance.timeOrigin + fcp.startTime : null;
}"""


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (
        f"median {statistics.median(ordered):6.1f} ms   p90 {p90:6.1f} ms   "
        f"min {ordered[0]:6.1f} ms   max {ordered[-1]:6.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--layout", default="full", choices=["full", "compact", "counter"])
    args = parser.parse_args()

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
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>Ally</title></head><body><h1>An allied page</h1>"
        f'<script src="{server.url}/embed.js" data-statement="{STATEMENT}" '
        f'data-layout="{args.layout}" async></script></body></html>'
    )
    (host / "floor.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        "<title>Ally</title></head><body><h1>An allied page</h1>"
        f'<iframe src="{server.url}/healthz"></iframe></body></html>'
    )
    for _ in range(3):  # a production server is warm: templates compiled, pools open
        requests.get(f"{server.url}/embed/{STATEMENT}?layout={args.layout}", timeout=5)

    in_browser: list[float] = []
    wall: list[float] = []
    floor: list[float] = []
    steps: dict[str, list[float]] = {"loader": [], "start": [], "html": [], "css": []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            for run in range(args.runs + 1):
                context = browser.new_context()  # a fresh, empty cache each time
                page = context.new_page()
                start = time.perf_counter()
                page.goto(f"{origin}/page.html", wait_until="commit")
                count = page.frame_locator("iframe").locator("[data-count]")
                count.wait_for(state="visible")
                elapsed = (time.perf_counter() - start) * 1000
                frame = page.frames[1]
                frame.wait_for_function(PAINTED)
                painted = frame.evaluate(PAINTED)
                navigated = page.evaluate("performance.timeOrigin")
                outer, inner = page.evaluate(STEPS), frame.evaluate(STEPS)
                start_at = inner["origin"] - outer["origin"]
                context.close()
                context = browser.new_context()
                page = context.new_page()
                page.goto(f"{origin}/floor.html")
                frame = page.frames[1]
                frame.wait_for_function(PAINTED)
                plain = frame.evaluate(PAINTED) - page.evaluate("performance.timeOrigin")
                context.close()
                if run > 0:  # the first run also warms the browser process itself
                    in_browser.append(painted - navigated)
                    wall.append(elapsed)
                    floor.append(plain)
                    steps["loader"].append(outer["loader"])
                    steps["start"].append(start_at)
                    steps["html"].append(start_at + inner["html"])
                    steps["css"].append(start_at + inner["css"])
            browser.close()
    finally:
        server.stop()
        httpd.shutdown()
        redis.stop()

    print(f"layout={args.layout} runs={args.runs} (cold cache each run, loopback, 2 workers)")
    print("navigation -> count painted (in browser):", summary(in_browser))
    print("navigation -> count visible (Playwright):", summary(wall))
    print("floor: plain cross-origin iframe painted:", summary(floor))
    print(
        "steps (median, from navigation): embed.js loaded {:.0f} ms, iframe navigation "
        "starts {:.0f} ms, its HTML loaded {:.0f} ms, its CSS loaded {:.0f} ms".format(
            *(statistics.median(steps[k]) for k in ("loader", "start", "html", "css"))
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
