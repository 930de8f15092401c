"""Blueprint ``/admin`` (operator console) and ``/api/v1/admin`` (operator JSON API).

* The JSON API accepts ``Authorization: Bearer <WIDGET_ADMIN_TOKEN>`` or the console's
  session cookie; a cookie-authenticated POST must also carry ``X-CSRF-Token`` equal to
  the session's token. Anything else answers 401 problem+json with
  ``WWW-Authenticate: Bearer``. With no admin token configured, every admin route
  refuses. Bearer checks and sign-ins go through ``adminauth``, which brakes guessing.
* The console pages redirect to ``/admin/login`` without a session. Sessions live in
  Redis (``sessions.SessionStore``): the cookie holds only a random id, the lifetime is an
  absolute 8 hours, signing out deletes the session, and a new admin token ends them all
  (so does ``undersign sessions revoke-all``).
* The cookie is set twice with the same id, once for ``Path=/admin`` and once for
  ``Path=/api/v1/admin`` (a cookie has one path), so browsers never send it to public
  routes; HttpOnly, SameSite=Strict, Secure over https. Flask's own cookie session is
  switched off, so nothing else sets a cookie, and requests without the cookie never
  touch Redis for a session.
* The sign-in form's CSRF token is single use: a signed, 15-minute nonce that must match
  the ``Path=/admin/login`` cookie set with the form, and that Redis records as used on
  the first POST, right or wrong; every answer to a POST carries a fresh form.
* Every admin response carries a strict CSP, ``X-Frame-Options: DENY``,
  ``Cache-Control: no-store`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import hmac
import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.sessions import SessionInterface, SessionMixin
from itsdangerous import BadData, URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from .abuse import (
    MAX_REASON,
    Block,
    BlockError,
    email_domain_block,
    network_block,
    parse_rfc3339,
)
from .adminauth import (
    TooManyFailures,
    admin_token,
    bearer_authenticates,
    check_brake,
    record_failure,
    token_matches,
)
from .api import get_blocks, get_registry, get_statement
from .bodies import loads_json
from .db import get_store
from .errors import Problem
from .export import export_lines
from .privacy import derive_key
from .sessions import AdminSession, SessionStore, token_binding
from .statements import Statement
from .store import BulkFilter, LogNotReady, is_entry_id
from .surge import FACTOR, WINDOW_SECONDS, Rate
from .transparency import log_not_ready
from .validation import COUNTRY_CODES

if TYPE_CHECKING:
    from .jobs import MailQueue

api = Blueprint("admin_api", __name__, url_prefix="/api/v1/admin")
bp = Blueprint("admin", __name__, url_prefix="/admin")

ADMIN_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SESSION_LIFETIME = 8 * 3600  # seconds, from sign-in; never extended
SESSION_COOKIE = "undersign_admin"
SESSION_COOKIE_PATHS = ("/admin", "/api/v1/admin")
LOGIN_COOKIE = "undersign_login"
LOGIN_COOKIE_PATH = "/admin/login"
LOGIN_FORM_MAX_AGE = 15 * 60
LOGIN_FORM_SALT = "undersign.admin-login"  # namespaces the signature, not a secret
PAGE_LIMIT_MAX = 500
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson; charset=utf-8"}


class NoCookieSessionInterface(SessionInterface):
    """Flask's cookie session, switched off: every ``session`` is an empty null session.

    The console keeps its session server-side (below); with this, no response can carry
    a cookie set through ``flask.session``, and no request pays for opening one.
    """

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        return None  # Flask substitutes a read-only null session

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        return None


# -- sessions -----------------------------------------------------------------------------


def get_sessions() -> SessionStore:
    sessions: SessionStore = current_app.extensions["undersign.sessions"]
    return sessions


def _binding() -> str:
    return token_binding(current_app.config["SECRET_KEY"], admin_token())


def current_session() -> AdminSession | None:
    """This request's console session (one Redis read at most, none without the cookie)."""
    if "admin_session" in g:
        found: AdminSession | None = g.admin_session
        return found
    session_id = request.cookies.get(SESSION_COOKIE)
    found = None
    if session_id and admin_token():
        found = get_sessions().get(session_id, _binding())
    if session_id and found is None:
        g.admin_forget_cookie = True  # ended, expired or foreign: clear it in the browser
    g.admin_session = found
    return found


def session_ok() -> bool:
    return current_session() is not None


def csrf_ok(given: str | None) -> bool:
    session = current_session()
    if session is None or not given:
        return False
    return hmac.compare_digest(str(given), session.csrf)


def _cookie_secure() -> bool:
    return bool(current_app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure


def set_session_cookies(response: BaseResponse, session: AdminSession) -> None:
    expires = datetime.fromtimestamp(session.expires, UTC)
    for path in SESSION_COOKIE_PATHS:
        response.set_cookie(
            SESSION_COOKIE,
            session.id,
            expires=expires,
            path=path,
            secure=_cookie_secure(),
            httponly=True,
            samesite="Strict",
        )


def clear_session_cookies(response: BaseResponse) -> None:
    for path in SESSION_COOKIE_PATHS:
        response.delete_cookie(
            SESSION_COOKIE, path=path, secure=_cookie_secure(), httponly=True, samesite="Strict"
        )


# -- the sign-in form's single-use CSRF token ---------------------------------------------


def _login_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=LOGIN_FORM_SALT)


_BINDING = re.compile(r"[A-Za-z0-9_-]{43}")  # what token_urlsafe(32) gives


def new_login_form() -> tuple[str, str]:
    """(this browser's binding for the cookie, a signed single-use token for the form).

    The binding is kept while the browser has one, so that a sign-in page opened in one
    tab still works after another tab opened one too (each form has its own nonce)."""
    binding = request.cookies.get(LOGIN_COOKIE, "")
    if not _BINDING.fullmatch(binding):
        binding = secrets.token_urlsafe(32)
    form = [binding, secrets.token_urlsafe(32)]
    return binding, str(_login_serializer().dumps(form))


def consume_login_form() -> bool:
    """True once for a fresh form signed for this browser's cookie.

    Any POST that presents a genuine form uses it up, whatever the token typed, so one
    form cannot carry more than one guess.
    """
    binding = request.cookies.get(LOGIN_COOKIE, "")
    given = request.form.get("csrf", "")
    if not binding or not given:
        return False
    try:
        signed = _login_serializer().loads(given, max_age=LOGIN_FORM_MAX_AGE)
    except BadData:
        return False
    if not (
        isinstance(signed, list) and len(signed) == 2 and all(isinstance(x, str) for x in signed)
    ):
        return False
    bound, nonce = signed
    if not hmac.compare_digest(bound, binding):
        return False
    return get_sessions().consume_nonce(nonce, LOGIN_FORM_MAX_AGE + 60)


# -- credentials ------------------------------------------------------------------------


def unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="undersign-admin"'},
    )


def actor() -> str:
    return "token" if g.get("admin_by_token") else "console"


@api.before_request
def require_api_credentials() -> None:
    # A Bearer header decides alone: right, or a counted failure (never the cookie then).
    by_token = bearer_authenticates("admin API bearer check")
    if by_token:
        g.admin_by_token = True
        return
    if by_token is False:
        raise unauthorized("That admin token is not right.")
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
    if g.get("admin_forget_cookie"):
        clear_session_cookies(response)
    response.headers["Content-Security-Policy"] = ADMIN_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


# -- shared views -----------------------------------------------------------------------


def statement_state(
    statement: Statement, count: int, closed: bool, confirmation: dict[str, int] | None = None
) -> dict[str, Any]:
    """A statement as operators see it. With email confirmation, ``count`` is the confirmed
    endorsements (the public count), ``pending`` those waiting for their owner, and
    ``confirmation_rate`` the share of addresses sent a first link that confirmed (None
    before the first)."""
    confirmation = confirmation or {}
    asked = confirmation.get("asked", 0)
    return {
        "id": statement.id,
        "title": statement.original.title,
        "count": count,
        "goal": statement.goal,
        "open": statement.scheduled_open() and not closed,
        "closed_by_operator": closed,
        "confirm": statement.confirm,
        "pending": confirmation.get("pending", 0),
        "confirmation_rate": round(confirmation.get("confirmed", 0) / asked, 3) if asked else None,
    }


def _state(statement: Statement) -> dict[str, Any]:
    store = get_store()
    count, closed = store.count_and_closed(statement.id)
    confirmation = None
    if statement.confirms_email:
        confirmation = store.confirmation_stats([statement.id])[statement.id]
    return statement_state(statement, count, closed, confirmation)


def mail_state() -> dict[str, int]:
    """The confirmation mail queue (see ``jobs.MailQueue.state``)."""
    mail: MailQueue = current_app.extensions["undersign.mail"]
    return mail.state()


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
    return jsonify({"statements": [_state(s) for s in get_registry()], "mail": mail_state()})


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
            "surge": surge_json(statement.id),
            "log": log_json(statement.id),
        }
    )


def log_json(statement_id: str) -> dict[str, Any]:
    """The transparency log's sealing, for the console: entries not yet under a signed
    checkpoint, and for how long the oldest of them may have waited (seconds since the
    last seal, 0 when nothing waits)."""
    progress = get_store().log_progress(statement_id)
    lag: int | None = 0
    if progress.unsealed:
        lag = max(0, int(time.time()) - progress.sealed_at) if progress.sealed_at else None
    return {
        "size": progress.size,
        "sealed": progress.sealed,
        "sealed_count": progress.sealed_count,
        "unsealed": progress.unsealed,
        "lag_seconds": lag,
        "sealed_at": _iso(progress.sealed_at) if progress.sealed_at else None,
    }


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {
        "recent": round(rate.recent),
        "usual": round(rate.usual, 1),
        "threshold": round(rate.threshold, 1),
        "surging": rate.surging,
    }


def surge_json(statement_id: str) -> dict[str, Any]:
    """The statement's surge state for the console: its rate, its sources' (the busiest
    ten and every surging one) and, during an alert, the countries of the last 5 minutes."""
    store = get_store()
    surge = store.surge(statement_id)
    total = max(1.0, surge.statement.recent)
    sources = [
        {"source": source, **_rate_json(rate), "share": round(rate.recent / total, 3)}
        for i, (source, rate) in enumerate(surge.sources.items())
        if i < 10 or rate.surging
    ]
    countries: list[dict[str, Any]] = []
    if surge.alert:
        counts, read = store.recent_countries(statement_id)
        countries = [
            {"country": country or None, "recent": n, "share": round(n / max(1, read), 3)}
            for country, n in list(counts.items())[:10]
        ]
    return {
        "alert": surge.alert,
        **_rate_json(surge.statement),
        "floor": surge.floor,
        "factor": FACTOR,
        "window_seconds": WINDOW_SECONDS,
        "sources": sources,
        "countries": countries,
    }


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
            reason = strike_reason()
            _, count = store.strike(statement.id, entry_id, by=actor(), reason=reason)
        else:
            _, count = store.unstrike(statement.id, entry_id)
    except LogNotReady:
        raise log_not_ready() from None
    except KeyError:
        raise Problem(
            404,
            "endorsement-not-found",
            "Endorsement not found",
            f"Statement {statement.id!r} has no endorsement {entry_id!r}.",
        ) from None
    return jsonify({"id": entry_id, "struck": strike, "count": count})


def strike_reason() -> str:
    """The reason a strike request gives: none without a body; otherwise the body must be
    a JSON object whose optional ``reason`` fits the public log (415, 400 or 422 problem,
    and nothing struck)."""
    if not request.get_data(cache=True):
        return ""
    body = json_body()
    if not isinstance(body, dict):
        raise invalid_strike({"body": 'Send a JSON object: {"reason": "..."}.'})
    reason = body.get("reason")
    reason = "" if reason is None else reason  # null: no reason
    if not reason_ok(reason):
        raise invalid_strike({"reason": REASON_RULE})
    return str(reason).strip()


def invalid_strike(errors: dict[str, str]) -> Problem:
    return Problem(
        422,
        "invalid-strike",
        "Invalid strike",
        "The reason goes into the public transparency log: " + REASON_RULE,
        errors=errors,
    )


@api.post("/statements/<statement_id>/endorsements/<entry_id>/strike")
def strike(statement_id: str, entry_id: str) -> Response:
    return _moderate(statement_id, entry_id, True)


@api.post("/statements/<statement_id>/endorsements/<entry_id>/unstrike")
def unstrike(statement_id: str, entry_id: str) -> Response:
    return _moderate(statement_id, entry_id, False)


# -- request bodies -------------------------------------------------------------------------


def json_body() -> Any:
    """The request's JSON body: 415 problem when it is not JSON, 400 when it is malformed."""
    if not request.is_json:
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send a JSON object with 'Content-Type: application/json'.",
        )
    return loads_json(request.get_data(cache=True))


# -- bulk moderation ------------------------------------------------------------------------


REASON_RULE = f"Give a reason of at most {MAX_REASON} characters, without control characters."


def reason_ok(reason: Any) -> bool:
    """Text that fits a strike entry of the transparency log (and any other record)."""
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        return False
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in reason):
        return False
    try:
        reason.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def bulk_problem(errors: dict[str, str]) -> Problem:
    return Problem.invalid("invalid-bulk-strike", "Invalid bulk strike", errors)


def _minute_ms(epoch: float) -> int:
    return int(epoch // 60 * 60 * 1000)


def parse_bulk(body: Any) -> tuple[BulkFilter, str, bool, str | None]:
    """(filter, reason, dry run, upto) from a strike-bulk body; 422 problem otherwise."""
    if not isinstance(body, dict):
        raise bulk_problem({"body": "Send a JSON object."})
    errors: dict[str, str] = {}
    source = body.get("source")
    if source is not None and (not isinstance(source, str) or not 0 < len(source) <= 300):
        errors["source"] = "Give the source exactly as listed (an allied origin or direct)."
    country = body.get("country")
    if country is not None:
        if isinstance(country, str) and country.strip().upper() in COUNTRY_CODES:
            country = country.strip().upper()
        else:
            errors["country"] = "Give an ISO 3166-1 alpha-2 country code, like KZ."
    times: dict[str, int | None] = {"since": None, "until": None}
    for name in times:
        if body.get(name) is not None:
            try:
                times[name] = _minute_ms(parse_rfc3339(body[name]))
            except ValueError as exc:
                errors[name] = str(exc)
    since, until = times["since"], times["until"]
    if since is not None and until is not None and since > until:
        errors["until"] = "until is before since."
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        errors["dry_run"] = "Give true or false."
    reason = body.get("reason", "")
    if not reason_ok(reason):
        errors["reason"] = REASON_RULE
    elif not reason.strip() and dry_run is False:
        errors["reason"] = "Say why: the reason is kept with every endorsement struck."
    upto = body.get("upto")
    if upto is not None and not is_entry_id(upto):
        errors["upto"] = "Give an endorsement id, as a dry run answers it."
    if all(body.get(name) is None for name in ("source", "country", "since", "until")):
        errors["filters"] = "Give at least one of source, country, since and until."
    if errors:
        raise bulk_problem(errors)
    match = BulkFilter(source=source, country=country, since_ms=since, until_ms=until)
    return match, str(reason).strip(), bool(dry_run), upto


@api.post("/statements/<statement_id>/strike-bulk")
def strike_bulk(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    match, reason, dry_run, upto = parse_bulk(json_body())
    store = get_store()
    selection = store.bulk_select(statement.id, match, upto)
    if dry_run:
        return jsonify({"matched": len(selection.ids), "upto": selection.upto})
    try:
        result = store.strike_bulk(statement.id, selection, by=actor(), reason=reason, match=match)
    except LogNotReady:
        raise log_not_ready() from None
    return jsonify(
        {
            "bulk_id": result.bulk_id,
            "struck": result.changed,
            "count": result.count,
            "matched": len(selection.ids),
            "upto": selection.upto,
        }
    )


@api.post("/statements/<statement_id>/bulk/<bulk_id>/undo")
def undo_bulk(statement_id: str, bulk_id: str) -> Response:
    statement = get_statement(statement_id)
    try:
        result = get_store().undo_bulk(statement.id, bulk_id)
    except LogNotReady:
        raise log_not_ready() from None
    except KeyError:
        raise Problem(
            404,
            "bulk-not-found",
            "Bulk strike not found",
            f"Statement {statement.id!r} has no bulk strike {bulk_id!r}.",
        ) from None
    return jsonify({"bulk_id": bulk_id, "restored": result.changed, "count": result.count})


# -- block lists ------------------------------------------------------------------------------


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def block_json(block: Block) -> dict[str, Any]:
    network = None
    if block.kind == "network":
        network = f"hashed /{block.prefix}" if block.hash else f"{block.network}/{block.prefix}"
    return {
        "id": block.id,
        "network": network,
        "ip_version": block.version or None,
        "hashed": bool(block.hash),
        "email_domain": block.domain or None,
        "label": block.label,
        "reason": block.reason,
        "by": block.by,
        "created": _iso(block.created),
        "expires": _iso(block.expires),
    }


def current_blocks() -> list[Block]:
    """Every live block, newest first (expired ones are forgotten first)."""
    store = get_store()
    store.prune_blocks()
    now = time.time()
    blocks = [Block.from_record(i, r) for i, r in store.blocks().items()]
    return sorted((b for b in blocks if b.active(now)), key=lambda b: (-b.created, b.id))


def block_problem(errors: dict[str, str]) -> Problem:
    return Problem.invalid("invalid-block", "Invalid block", errors)


def parse_block(body: Any, by: str) -> Block:
    """A new block from a request body; 422 problem naming each bad field otherwise."""
    if not isinstance(body, dict):
        raise block_problem({"body": "Send a JSON object."})
    errors: dict[str, str] = {}
    network, domain = body.get("network"), body.get("email_domain")
    fields: dict[str, Any] = {}
    if (network is None) == (domain is None):
        errors["network"] = "Give either a network or an email_domain (one of the two)."
    elif network is not None:
        try:
            fields = {"kind": "network", **network_block(network, blocks_key())}
        except BlockError as exc:
            errors["network"] = str(exc)
    else:
        try:
            fields = {"kind": "email_domain", "domain": email_domain_block(domain)}
        except BlockError as exc:
            errors["email_domain"] = str(exc)
    reason = body.get("reason", "")
    if not reason_ok(reason):
        errors["reason"] = REASON_RULE
    expires: int | None = None
    if body.get("expires") is not None:
        try:
            expires = int(parse_rfc3339(body["expires"]))
        except ValueError as exc:
            errors["expires"] = str(exc)
        else:
            if expires <= time.time():
                errors["expires"] = "That time has passed; leave expires out for no expiry."
    if errors:
        raise block_problem(errors)
    record = {**fields, "reason": str(reason).strip(), "by": by, "created": time.time()}
    record["expires"] = expires
    return Block.from_record("", record)


def blocks_key() -> bytes:
    return derive_key(current_app.config["SECRET_KEY"], "blocks")


@api.get("/blocks")
def list_blocks() -> Response:
    return jsonify({"blocks": [block_json(b) for b in current_blocks()]})


@api.post("/blocks")
def add_block() -> tuple[Response, int]:
    block = parse_block(json_body(), actor())
    store = get_store()
    store.prune_blocks()
    block_id = store.add_block(block.record())
    get_blocks().invalidate()
    return jsonify(block_json(Block.from_record(block_id, block.record()))), 201


@api.delete("/blocks/<block_id>")
def remove_block(block_id: str) -> Response:
    if not get_store().remove_block(block_id):
        raise Problem(404, "block-not-found", "Block not found", f"There is no block {block_id!r}.")
    get_blocks().invalidate()
    return jsonify({"id": block_id, "removed": True})


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
def login() -> BaseResponse:
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET" and session_ok():
        return redirect(next_url, 302)
    if request.method == "GET":
        return _login_page(next_url)
    try:
        check_brake("admin sign-in")
    except TooManyFailures as exc:
        error = f"Too many failed sign-ins. Try again in {exc.retry_after} seconds."
        response = _login_page(next_url, error, 429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    if not consume_login_form():
        record_failure("admin sign-in", "form expired, reused or forged")
        return _login_page(next_url, "The sign-in form expired. Please try again.", 400)
    if not token_matches(request.form.get("token", "")):
        if not admin_token():
            record_failure("admin sign-in", "no admin token configured")
            error = "The console is disabled: no admin token is configured."
        else:
            record_failure("admin sign-in", "bad token")
            error = "That token is not right."
        return _login_page(next_url, error, 401)
    return _signed_in(next_url)


def _login_page(next_url: str, error: str = "", status: int = 200) -> BaseResponse:
    """The sign-in form with a fresh single-use token (and its cookie)."""
    binding, form_token = new_login_form()
    html = render_template(
        "admin/login.html", error=error, next_url=next_url, csrf_token=form_token
    )
    response = make_response(html, status)
    response.set_cookie(
        LOGIN_COOKIE,
        binding,
        max_age=LOGIN_FORM_MAX_AGE,
        path=LOGIN_COOKIE_PATH,
        secure=_cookie_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


def _signed_in(next_url: str) -> BaseResponse:
    sessions = get_sessions()
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        sessions.delete(previous)
    session = sessions.create(_binding())
    # Clearing a stale cookie after this would undo the new one set below.
    g.admin_forget_cookie = False
    response = redirect(next_url, 303)
    set_session_cookies(response, session)
    response.delete_cookie(
        LOGIN_COOKIE,
        path=LOGIN_COOKIE_PATH,
        secure=_cookie_secure(),
        httponly=True,
        samesite="Strict",
    )
    return response


@bp.post("/logout")
def logout() -> BaseResponse:
    session = current_session()
    if session is not None:
        get_sessions().delete(session.id)
    response = redirect(url_for("admin.login"), 303)
    clear_session_cookies(response)
    return response


@bp.get("/")
@bp.get("")
def overview() -> str:
    statements = [_state(s) for s in get_registry()]
    confirming = any(s["confirm"] == "email" for s in statements)
    return render_template(
        "admin/overview.html",
        statements=statements,
        mail=mail_state() if confirming else None,
        active="statements",
    )


@bp.get("/s/<statement_id>")
def dashboard(statement_id: str) -> str:
    statement = get_statement(statement_id)
    return render_template("admin/dashboard.html", s=_state(statement))


@bp.get("/blocks")
def blocks_page() -> str:
    return render_template("admin/blocks.html", active="blocks")


@bp.context_processor
def console_helpers() -> dict[str, Any]:
    from .embed import asset_url

    # Only what this request already read: an error page must not go back to Redis.
    session: AdminSession | None = g.get("admin_session")
    return {"asset": asset_url, "csrf_token": session.csrf if session else ""}


def init_app(app: Flask) -> None:
    """Switch Flask's cookie session off, keep the session store; call after ``db``."""
    app.session_interface = NoCookieSessionInterface()
    app.extensions["undersign.sessions"] = SessionStore(
        app.extensions["undersign.redis"], SESSION_LIFETIME
    )
    app.register_blueprint(api)
    app.register_blueprint(bp)
