"""Blueprint ``/admin`` (operator console) and ``/api/v1/admin`` (operator JSON API).

* The JSON API accepts ``Authorization: Bearer <WIDGET_ADMIN_TOKEN>`` (constant-time
  compare) or the console's signed session cookie; a cookie-authenticated POST must also
  carry ``X-CSRF-Token`` equal to the session's token. Anything else answers 401
  problem+json with ``WWW-Authenticate: Bearer``. With no admin token configured, every
  admin route refuses.
* The console pages redirect to ``/admin/login`` without a session. The session cookie is
  signed with ``SECRET_KEY``, HttpOnly, SameSite=Strict, Secure over https, and lives a few
  hours.
* Every admin response carries a strict CSP, ``X-Frame-Options: DENY``,
  ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response as BaseResponse

from .adminauth import admin_token, bearer_ok, token_matches
from .api import get_registry, get_statement
from .db import get_store
from .errors import Problem
from .export import export_lines
from .statements import Statement

api = Blueprint("admin_api", __name__, url_prefix="/api/v1/admin")
bp = Blueprint("admin", __name__, url_prefix="/admin")

ADMIN_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SESSION_LIFETIME = timedelta(hours=8)
PAGE_LIMIT_MAX = 500
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


class AdminSessionInterface(SecureCookieSessionInterface):
    """The signed-cookie session, always HttpOnly and SameSite=Strict, Secure over https."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        # Most requests (the public API, the widget) carry no cookie: skip building the
        # signing serializer for them.
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"


# -- credentials ------------------------------------------------------------------------


def session_ok() -> bool:
    # A session signed before the token was unset must not outlive it.
    return bool(admin_token()) and session.get("admin") is True and bool(session.get("csrf"))


def csrf_ok(given: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and given) and hmac.compare_digest(str(given), str(expected))


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="undersign-admin"'},
    )


def actor() -> str:
    return "token" if bearer_ok() else "console"


@api.before_request
def require_api_credentials() -> None:
    if bearer_ok():
        return
    if session_ok():
        if request.method not in ("GET", "HEAD", "OPTIONS") and not csrf_ok(
            request.headers.get("X-CSRF-Token")
        ):
            raise unauthorized("A console request that changes state needs its CSRF token.")
        return
    raise unauthorized("The admin API needs 'Authorization: Bearer <admin token>'.")


def safe_next(target: str | None) -> str:
    """Only a same-site relative path under /admin; anything else goes to the overview.

    Control characters are refused too: a newline would make the ``Location`` header
    invalid (a 500) and nothing legitimate carries them.
    """
    if not target or not target.startswith("/admin") or "\\" in target:
        return url_for("admin.overview")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in target):
        return url_for("admin.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or target.startswith("//"):
        return url_for("admin.overview")
    return target


@bp.before_request
def require_session() -> BaseResponse | None:
    if request.endpoint == "admin.login":
        return None
    if session_ok():
        if request.method == "POST" and not csrf_ok(request.form.get("csrf")):
            return _to_login()
        return None
    return _to_login()


def _to_login() -> BaseResponse:
    target = request.full_path if request.query_string else request.path
    location = url_for("admin.login") + "?next=" + quote(target, safe="/")
    return redirect(location, 302)


@api.after_request
@bp.after_request
def admin_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = ADMIN_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# -- shared views -----------------------------------------------------------------------


def statement_state(statement: Statement, count: int, closed: bool) -> dict[str, Any]:
    return {
        "id": statement.id,
        "title": statement.original.title,
        "count": count,
        "goal": statement.goal,
        "open": statement.scheduled_open() and not closed,
        "closed_by_operator": closed,
    }


def _state(statement: Statement) -> dict[str, Any]:
    count, closed = get_store().count_and_closed(statement.id)
    return statement_state(statement, count, closed)


def entry_json(entry: Any) -> dict[str, Any]:
    return {
        "id": entry.id,
        "time": datetime.fromtimestamp(entry.time_ms / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "name": entry.name,
        "country": entry.country,
        "source": entry.source,
        "public": entry.public,
        "struck": dict(entry.struck) if entry.struck else None,
    }


# -- JSON API ---------------------------------------------------------------------------


@api.get("/statements")
def list_statements() -> Response:
    return jsonify({"statements": [_state(s) for s in get_registry()]})


@api.get("/statements/<statement_id>/stats")
def stats(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    store = get_store()
    data = store.stats(statement.id)
    state = _state(statement)
    state["count"] = data["count"]
    return jsonify(
        {
            **state,
            "by_source": data["by_source"],
            "by_country": data["by_country"],
            "timeline": data["timeline"],
        }
    )


@api.get("/statements/<statement_id>/endorsements")
def endorsements(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    cursor = request.args.get("cursor") or None
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= PAGE_LIMIT_MAX:
        raise Problem(
            400, "bad-limit", "Bad limit", f"limit must be a whole number 1-{PAGE_LIMIT_MAX}."
        )
    try:
        entries, next_cursor = get_store().page(statement.id, cursor, limit)
    except ValueError:
        raise Problem(
            400, "bad-cursor", "Bad cursor", "cursor must be an endorsement id."
        ) from None
    return jsonify({"endorsements": [entry_json(e) for e in entries], "next_cursor": next_cursor})


def _moderate(statement_id: str, entry_id: str, strike: bool) -> Response:
    statement = get_statement(statement_id)
    store = get_store()
    try:
        if strike:
            body = request.get_json(silent=True)
            reason = body.get("reason", "") if isinstance(body, dict) else ""
            reason = str(reason)[:200] if reason else ""
            _, count = store.strike(statement.id, entry_id, by=actor(), reason=reason)
        else:
            _, count = store.unstrike(statement.id, entry_id)
    except KeyError:
        raise Problem(
            404,
            "endorsement-not-found",
            "Endorsement not found",
            f"Statement {statement.id!r} has no endorsement {entry_id!r}.",
        ) from None
    return jsonify({"id": entry_id, "struck": strike, "count": count})


@api.post("/statements/<statement_id>/endorsements/<entry_id>/strike")
def strike(statement_id: str, entry_id: str) -> Response:
    return _moderate(statement_id, entry_id, True)


@api.post("/statements/<statement_id>/endorsements/<entry_id>/unstrike")
def unstrike(statement_id: str, entry_id: str) -> Response:
    return _moderate(statement_id, entry_id, False)


def _export(statement_id: str, fmt: str) -> Response:
    statement = get_statement(statement_id)
    store = get_store()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    def body() -> Iterator[str]:
        yield from export_lines(store.log(statement.id), fmt)

    response = Response(body(), mimetype=EXPORT_TYPES[fmt].split(";")[0])
    response.headers["Content-Type"] = EXPORT_TYPES[fmt]
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{statement.id}-endorsements-{stamp}.{fmt}"'
    )
    return response


@api.get("/statements/<statement_id>/export.csv")
def export_csv(statement_id: str) -> Response:
    return _export(statement_id, "csv")


@api.get("/statements/<statement_id>/export.jsonl")
def export_jsonl(statement_id: str) -> Response:
    return _export(statement_id, "jsonl")


def _set_open(statement_id: str, is_open: bool) -> Response:
    statement = get_statement(statement_id)
    get_store().set_closed(statement.id, not is_open, by=actor())
    state = _state(statement)
    return jsonify({"id": statement.id, "open": state["open"]})


@api.post("/statements/<statement_id>/open")
def open_statement(statement_id: str) -> Response:
    return _set_open(statement_id, True)


@api.post("/statements/<statement_id>/close")
def close_statement(statement_id: str) -> Response:
    return _set_open(statement_id, False)


# -- console pages ----------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    next_url = safe_next(request.values.get("next"))
    if session_ok() and request.method == "GET":
        return redirect(next_url, 302)
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    error = ""
    status = 200
    if request.method == "POST":
        if not csrf_ok(request.form.get("csrf")):
            error = "The sign-in form expired. Please try again."
            status = 400
        elif not token_matches(request.form.get("token", "")):
            error = (
                "The console is disabled: no admin token is configured."
                if not admin_token()
                else "That token is not right."
            )
            status = 401
        else:
            session.clear()
            session["admin"] = True
            session["csrf"] = secrets.token_urlsafe(32)
            session.permanent = True
            return redirect(next_url, 303)
    html = render_template("admin/login.html", error=error, next_url=next_url)
    return html, status


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("admin.login"), 303)


@bp.get("/")
@bp.get("")
def overview() -> str:
    statements = [_state(s) for s in get_registry()]
    return render_template("admin/overview.html", statements=statements)


@bp.get("/s/<statement_id>")
def dashboard(statement_id: str) -> str:
    statement = get_statement(statement_id)
    return render_template("admin/dashboard.html", s=_state(statement))


@bp.context_processor
def console_helpers() -> dict[str, Any]:
    from .embed import asset_url

    return {"asset": asset_url, "csrf_token": session.get("csrf", "")}


def init_app(app: Flask) -> None:
    app.session_interface = AdminSessionInterface()
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", SESSION_LIFETIME)
    if app.config.get("PERMANENT_SESSION_LIFETIME") == timedelta(days=31):
        app.config["PERMANENT_SESSION_LIFETIME"] = SESSION_LIFETIME
    app.permanent_session_lifetime = app.config["PERMANENT_SESSION_LIFETIME"]
    app.register_blueprint(api)
    app.register_blueprint(bp)
