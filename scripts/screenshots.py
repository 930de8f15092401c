"""Screenshots of the widget (each layout x theme x language) and of the hosted page.

Starts a throwaway redis-server and the real gunicorn, seeds a few endorsements, serves a
host page from another origin, and writes PNGs (not committed) to a folder::

    python scripts/screenshots.py [--out /tmp/undersign-shots] [--langs en,ru]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import requests  # noqa: E402
from checks import altcha_for  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from servers import CHROMIUM, CHROMIUM_ARGS, Gunicorn, RedisServer, free_port  # noqa: E402

STATEMENT = "dongelek-ystel"
PEOPLE = [
    ("Aigerim Sultanova", "KZ", True),
    ("Jonas Weber", "DE", True),
    ("Marie Laurent", "FR", False),
    ("Dmitry Ivanov", "", False),
    ("Yerlan Abenov", "KZ", True),
    ("Sofia Rossi", "IT", True),
]
BACKGROUND = {"light": "#ffffff", "dark": "#0f141a", "auto": "#0f141a"}


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def seed(service: str, redis: Any, extra: int) -> None:
    for i, (name, country, public) in enumerate(PEOPLE):
        body = {"name": name, "email": f"p{i}@example.org", "consent": True}
        body |= {"country": country, "public": public, "altcha": altcha_for(service)}
        url = f"{service}/api/v1/statements/{STATEMENT}/endorsements"
        requests.post(url, json=body, timeout=5).raise_for_status()
    # A realistic-looking total for the pictures (a throwaway database).
    redis.incrby(f"us:{{{STATEMENT}}}:count", extra)


def host_page(folder: Path, service: str, name: str, attrs: str, background: str) -> None:
    (folder / "host.css").write_text(
        "body{margin:0;font-family:serif}#box{display:inline-block;padding:28px;"
        "width:600px}#box.counter{width:auto}"
        + "".join(f".bg-{k}{{background:{v}}}" for k, v in BACKGROUND.items())
    )
    (folder / f"{name}.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="host.css"></head>'
        f'<body><div id="box" class="{background}">'
        f'<script src="{service}/embed.js" data-statement="{STATEMENT}" {attrs} async></script>'
        "</div></body></html>"
    )


def settle(page: Page) -> None:
    frame = page.frame_locator("iframe")
    frame.locator("[data-count]").wait_for()
    page.wait_for_timeout(700)  # sizes, country names and recent endorsers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "undersign-shots"))
    parser.add_argument("--langs", default="en,ru")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="undersign-shots-"))
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
        "WIDGET_SECRET_KEY": "screenshots-secret-key-0123456789abcdef",
        "WIDGET_ALLOWED_ORIGINS": origin,
        "WIDGET_ENDORSE_LIMIT": "1000/minute",
        "WIDGET_NETWORK_LIMIT": "1000/minute",
    }
    server = Gunicorn(env, workers=2, folder=work)
    server.start()
    written: list[Path] = []
    try:
        seed(server.url, redis.client(), 2841)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            for lang in args.langs.split(","):
                for layout in ("full", "compact", "counter"):
                    for theme in ("light", "dark", "auto"):
                        name = f"widget-{layout}-{theme}-{lang}"
                        attrs = f'data-lang="{lang}" data-theme="{theme}" data-layout="{layout}"'
                        host_page(host, server.url, name, attrs, f"bg-{theme} {layout}")
                        scheme = "dark" if theme == "auto" else "light"
                        context = browser.new_context(
                            viewport={"width": 700, "height": 1200},
                            device_scale_factor=1,
                            color_scheme=scheme,
                            locale=lang,
                        )
                        page = context.new_page()
                        page.goto(f"{origin}/{name}.html")
                        settle(page)
                        path = out / f"{name}.png"
                        page.locator("#box").screenshot(path=path)
                        written.append(path)
                        if layout != "counter" and theme == "light":
                            frame = page.frame_locator("iframe")
                            if layout == "compact":
                                frame.locator("#open").click()
                            frame.locator("#f-submit").click()
                            page.wait_for_timeout(500)
                            path = out / f"{name}-errors.png"
                            page.locator("#box").screenshot(path=path)
                            written.append(path)
                            frame.locator("#f-name").fill("Aliya")
                            frame.locator("#f-email").fill(f"shot-{layout}-{lang}@example.org")
                            frame.locator("#f-consent").check()
                            frame.locator("#f-submit").click()
                            frame.locator("#done").wait_for()
                            page.wait_for_timeout(900)
                            path = out / f"{name}-thanks.png"
                            page.locator("#box").screenshot(path=path)
                            written.append(path)
                        context.close()
                for scheme in ("light", "dark"):
                    context = browser.new_context(
                        viewport={"width": 1280, "height": 900}, color_scheme=scheme, locale=lang
                    )
                    page = context.new_page()
                    page.goto(f"{server.url}/s/{STATEMENT}?lang={lang}")
                    page.wait_for_timeout(800)
                    path = out / f"page-{scheme}-{lang}.png"
                    page.screenshot(path=path, full_page=False)
                    written.append(path)
                    context.close()
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(f"{server.url}/demo")
            page.wait_for_timeout(1500)
            path = out / "demo.png"
            page.screenshot(path=path, full_page=True)
            written.append(path)
            context = browser.new_context(viewport={"width": 390, "height": 844})
            page = context.new_page()
            page.goto(f"{server.url}/s/{STATEMENT}?lang=kk")
            page.wait_for_timeout(800)
            path = out / "page-mobile-kk.png"
            page.screenshot(path=path, full_page=True)
            written.append(path)
            browser.close()
    finally:
        server.stop()
        httpd.shutdown()
        redis.stop()
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
