"""Server-Sent Events fan-out: one Redis pub/sub subscription per process.

(Skeleton: the live counters issue fills this in.)
"""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("live", __name__, url_prefix="/api/v1")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
