"""Blueprint for what browsers load: ``/embed.js``, ``/embed/<id>``, ``/s/<id>``, ``/demo``.

(Skeleton: the widget issue fills this in.)
"""

from __future__ import annotations

from flask import Blueprint, redirect
from werkzeug.wrappers import Response

from .resources import STATIC_DIR

bp = Blueprint("embed", __name__, static_folder=str(STATIC_DIR), static_url_path="/static")

# Views that record an endorsement: rate limited together with the JSON API.
RATE_LIMITED_ENDPOINTS: list[str] = []


@bp.get("/")
def index() -> Response:
    return redirect("/demo")
