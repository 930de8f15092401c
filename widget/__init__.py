"""Undersign: a coalition's statement on many allied sites, with a count people can trust.

``create_app`` wires the subsystems, each through its own ``init_app``; see
``config.SETTINGS`` for every ``WIDGET_*`` setting.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

__all__ = ["create_app"]

# RQ reads its key prefix once, when it is first imported: every key of the mail queue
# carries the hash tag {mail}, so its transactions stay in one Redis Cluster slot (see
# ``jobs``, which refuses to run with any other).
RQ_KEY_PREFIX = "rq:{mail}"
os.environ.setdefault("RQ_KEY_PREFIX", RQ_KEY_PREFIX)


def configured_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """A bare app with its settings checked and its statements loaded, connected to
    nothing: ``ConfigError`` or ``StatementError`` names a bad setting or file. The first
    step of ``create_app``, and what ``undersign serve`` checks before starting gunicorn."""
    from .config import check_confirmation, load_config
    from .statements import load_registry

    app = Flask(__name__, static_folder=None)
    load_config(app, test_config)
    extra = [app.config["STATEMENTS_DIR"]] if app.config["STATEMENTS_DIR"] else []
    registry = load_registry(extra)
    check_confirmation(app.config, [s.id for s in registry if s.confirms_email])
    app.extensions["undersign.statements"] = registry
    return app


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the WSGI app; ``test_config`` overrides the environment."""
    from . import (
        admin,
        api,
        bodies,
        cli,
        confirm,
        db,
        embed,
        errors,
        fastcount,
        limits,
        live,
        metrics,
        proxies,
        transparency,
    )
    from .jobs import MailQueue
    from .links import public_origin

    app = configured_app(test_config)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    db.init_app(app)
    app.extensions["undersign.mail"] = MailQueue(
        app.extensions["undersign.redis"], app.config["SECRET_KEY"], app.config["MAIL_RETRY_FOR"]
    )
    errors.init_app(app)
    bodies.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.health_bp)
    app.register_blueprint(embed.bp)
    app.register_blueprint(confirm.bp)
    live.init_app(app)
    transparency.init_app(app)
    admin.init_app(app)
    metrics.init_app(app)
    limits.init_app(app)
    app.wsgi_app = fastcount.CountFastPath(  # type: ignore[method-assign]
        app.wsgi_app,
        app.extensions["undersign.live"],
        app.extensions["undersign.statements"].ids(),
        allowlist=app.extensions["undersign.allowlist"],
        public_origin=public_origin(app.config["PUBLIC_URL"]),
        trusted_hosts=app.config["TRUSTED_HOSTS"],
    )
    proxies.init_app(app)  # outermost: everything after it sees the checked client and host
    cli.register(app.cli)
    return app
