"""Helpers for the browser tests (kept out of conftest so test modules can import them)."""

from __future__ import annotations

import json
from typing import Any

import requests
from checks import altcha_for, public_count
from conftest import STATEMENT
from playwright.sync_api import Frame, Page
from servers import Gunicorn


def widget_frame(page: Page, index: int = 0) -> Frame:
    """The ``index``-th widget iframe's frame, once its page is ready."""
    page.wait_for_function(f"document.querySelectorAll('iframe').length > {index}", timeout=10_000)
    handle = page.query_selector_all("iframe")[index]
    frame = None
    for _ in range(200):
        frame = handle.content_frame()
        if frame is not None and "/embed/" in frame.url:
            break
        page.wait_for_timeout(50)
    assert frame is not None
    frame.wait_for_selector("[data-count]", state="attached")
    frame.wait_for_load_state("load")
    return frame


def api_count(service: Gunicorn) -> int:
    return public_count(service.url)


def endorse_via_api(service: Gunicorn, **body: Any) -> dict[str, Any]:
    body.setdefault("consent", True)
    body.setdefault("altcha", altcha_for(service.url))
    response = requests.post(
        f"{service.url}/api/v1/statements/{STATEMENT}/endorsements", json=body, timeout=5
    )
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = json.loads(response.text)
    return result
