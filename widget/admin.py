"""Blueprint ``/admin`` (operator console) and ``/api/v1/admin`` (operator JSON API).

(Skeleton: the operator console issue fills this in.)
"""

from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("admin", __name__)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
