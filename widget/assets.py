"""The bytes browsers get for ``static/``: scripts and stylesheets minified (``rjsmin``,
``rcssmin``), once per process, and their content hashes for fingerprinted URLs and ETags.

The files in ``static/`` stay readable, comments and all; what is served is the same code
without them, which keeps the widget's iframe inside its size budget. The loader
(``embed.js``) is served as written: allies may read what they paste.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import rcssmin
import rjsmin

from .resources import STATIC_DIR

AS_WRITTEN = frozenset({"embed.js"})


def static_path(filename: str) -> Path | None:
    """``static/<filename>`` if it is a file inside ``static/``, else None."""
    if "\x00" in filename:
        return None
    path = (STATIC_DIR / filename).resolve()
    if STATIC_DIR.resolve() not in path.parents or not path.is_file():
        return None
    return path


@cache
def served(filename: str) -> bytes | None:
    """What is served for ``static/<filename>`` (None if there is no such file)."""
    path = static_path(filename)
    if path is None:
        return None
    raw = path.read_bytes()
    if filename in AS_WRITTEN:
        return raw
    if path.suffix == ".js":
        return str(rjsmin.jsmin(raw.decode("utf-8"))).encode("utf-8")
    if path.suffix == ".css":
        return str(rcssmin.cssmin(raw.decode("utf-8"))).encode("utf-8")
    return raw


@cache
def digest(filename: str) -> str:
    """A short hash of what is served for ``static/<filename>`` ("" if no such file)."""
    body = served(filename)
    return hashlib.sha256(body).hexdigest()[:12] if body is not None else ""
