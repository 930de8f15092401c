"""Where the browser assets and example pages are, installed or in a source checkout.

The wheel carries ``static/`` as ``widget/static`` and ``embed/`` as ``widget/embed_site``;
in a checkout (editable install) they sit beside the package.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _find(installed: str, checkout: str) -> Path:
    inside = PACKAGE_DIR / installed
    return inside if inside.is_dir() else PACKAGE_DIR.parent / checkout


STATIC_DIR = _find("static", "static")
EMBED_SITE_DIR = _find("embed_site", "embed")
