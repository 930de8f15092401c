"""Prometheus metrics (``/metrics``).

(Skeleton: the operator console issue fills this in.)
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    return None
