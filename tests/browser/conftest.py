"""Browser fixtures: Debian's Chromium through Playwright, the service under the real
gunicorn, and allied host pages served from ANOTHER origin by a tiny http.server.

The host server answers on ``http://localhost:<port>`` (allowlisted) and on
``http://127.0.0.1:<port>`` (a different origin, not allowlisted). Every host page gets
the strict policy an allied site might use: ``script-src 'self' SERVICE; frame-src
SERVICE; style-src 'self'``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import STATEMENT, gunicorn_env
from playwright.sync_api import Browser, ConsoleMessage, Page
from servers import Gunicorn

HOSTILE_CSS = """
div, p, span, button, input, form, label, section, a, iframe, h1, h2, ul, li {
  font-size: 38px !important; display: inline !important; color: red !important;
  background: yellow !important; border: 7px dashed magenta !important;
  padding: 30px !important; margin: 40px !important; line-height: 3 !important;
  letter-spacing: 9px !important; text-transform: uppercase !important;
  box-sizing: content-box !important; float: right !important;
}
iframe { width: 20px !important; height: 20px !important; visibility: visible !important; }
iframe {
  position: absolute !important; top: 0 !important; left: 0 !important;
  transform: rotate(8deg) scale(.5) !important; filter: blur(6px) !important;
  pointer-events: none !important;
}
* { transition: all 10s !important; font-family: serif !important; }
"""
# Reports CSP violations (of the host page and of every frame) to the console.
VIOLATION_SPY = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI);
});
"""


class HostHandler(SimpleHTTPRequestHandler):
    policy = ""

    def end_headers(self) -> None:
        if self.path.split("?")[0].endswith(".html"):
            self.send_header("Content-Security-Policy", self.policy)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class HostSite:
    """Allied host pages on their own origin (``localhost``) and a foreign one (127.0.0.1)."""

    folder: Path
    port: int
    service: str = ""
    server: ThreadingHTTPServer | None = None

    @property
    def origin(self) -> str:
        return f"http://localhost:{self.port}"

    @property
    def foreign_origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def page(self, name: str, body: str, head: str = "") -> str:
        """Write ``<name>.html`` and return its URL on the allied origin."""
        html = (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<link rel="icon" href="data:,"><title>{name}</title>{head}</head>'
            f"<body>{body}</body></html>"
        )
        (self.folder / f"{name}.html").write_text(html, "utf-8")
        return f"{self.origin}/{name}.html"

    def file(self, name: str, text: str) -> None:
        (self.folder / name).write_text(text, "utf-8")

    def snippet(self, **attrs: str) -> str:
        attrs.setdefault("data-statement", STATEMENT)
        rendered = " ".join(f'{k}="{v}"' for k, v in attrs.items())
        return f'<script src="{self.service}/embed.js" {rendered} async></script>'


@pytest.fixture(scope="session")
def host_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostSite]:
    folder = tmp_path_factory.mktemp("host")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(HostHandler, directory=str(folder)))
    site = HostSite(folder=folder, port=server.server_address[1], server=server)
    thread = threading.Thread(target=site.server.serve_forever, daemon=True)
    thread.start()
    site.file("hostile.css", HOSTILE_CSS)
    yield site
    site.server.shutdown()
    site.server.server_close()


@pytest.fixture(scope="session")
def service(redis_server: Any, host_site: HostSite, tmp_path_factory: pytest.TempPathFactory):
    """The real service under gunicorn (2 workers), allowing the allied host origin."""
    # As visitors meet it: the proof of work on (at a low cost, so tests stay quick).
    env = gunicorn_env(
        redis_server,
        WIDGET_ALLOWED_ORIGINS=host_site.origin,
        WIDGET_POW="on",
        WIDGET_POW_COST="500",
    )
    server = Gunicorn(env, workers=2, folder=tmp_path_factory.mktemp("gunicorn"))
    server.start()
    host_site.service = server.url
    HostHandler.policy = f"script-src 'self' {server.url}; frame-src {server.url}; style-src 'self'"
    yield server
    server.stop()


@dataclass
class Console:
    """Everything the page and its frames said; ``errors`` holds every error and warning,
    none excepted (the loader asks for no feature the browser lacks)."""

    messages: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        text = f"{message.type}: {message.text}"
        self.messages.append(text)
        if message.type in ("error", "warning") or "Content Security Policy" in message.text:
            self.errors.append(text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"pageerror: {error}")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(
    browser: Browser, console: Console, service: Gunicorn, redis_client: Any
) -> Iterator[Callable[..., Page]]:
    """Open a fresh context (cold cache) and page: ``new_page(color_scheme="dark")``."""
    contexts = []

    def factory(**options: Any) -> Page:
        context = browser.new_context(**options)
        contexts.append(context)
        context.add_init_script(VIOLATION_SPY)
        page = context.new_page()
        page.on("console", console.on_console)
        page.on("pageerror", console.on_page_error)
        page.set_default_timeout(10_000)
        return page

    yield factory
    for context in contexts:
        context.close()
