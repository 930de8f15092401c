"""The console tests use the session's Chromium (``browser`` in tests/conftest.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser


@pytest.fixture
def chromium(browser: Browser) -> Browser:
    return browser
