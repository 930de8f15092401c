"""Blueprint for the confirmation link ``/c/<token>`` (statements with ``confirm = "email"``).

* ``GET /c/<token>`` shows the statement, in the endorser's language, with a **Confirm**
  button in a form. It changes nothing: mail scanners and link previewers fetch every
  link, so a GET must never confirm.
* ``POST /c/<token>`` confirms, with the form's token (signed, 6 hours, single use, bound
  to the link; no cookie) and from this site only: one atomic step in the store counts the
  endorsement exactly as a direct one and uses the link up. The page then thanks, gives
  the receipt and links back to the allied site the endorsement came through.
* A link used already, replaced by a newer mail or expired answers 410, an unknown one 404,
  each a page that offers to endorse again. Every page works without JavaScript, under the
  hosted page's strict policy, never framed, never cached, and sends its address (which
  holds the token) as a referrer to this site only (``no-referrer`` would make browsers
  send ``Origin: null`` with the form).
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from .api import (
    confirm_token_hash,
    get_hub,
    get_registry,
    receipt_json,
)
from .db import get_store
from .embed import FORM_TOKEN_MAX_AGE, SELF_POLICY, asset_url, page_context, pick_language
from .errors import Problem
from .i18n import Catalog, get_catalog
from .limits import is_own_origin
from .links import normalize_origin
from .statements import Statement
from .store import PendingRecord, TokenLookup
from .tlog.entries import commitment, endorse_template, minute
from .validation import first_name

bp = Blueprint("confirm", __name__)

TOKEN = re.compile(r"[A-Za-z0-9_-]{16,100}")
CONFIRM_SALT = "undersign.confirm-form"  # namespaces the signature, not a secret
POLICY = f"{SELF_POLICY}; frame-ancestors 'none'"
GONE_MESSAGES = {
    "used": "gone_used",
    "replaced": "gone_replaced",
    "expired": "gone_expired",
    "unknown": "gone_unknown",
}


@bp.context_processor
def template_helpers() -> dict[str, Any]:
    return {"asset": asset_url}


@bp.after_request
def headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=CONFIRM_SALT)


def form_token(token_hash: str) -> str:
    return str(serializer().dumps({"c": token_hash[:32], "n": secrets.token_urlsafe(6)}))


def form_token_ok(given: str, token_hash: str) -> bool:
    try:
        data = serializer().loads(given, max_age=FORM_TOKEN_MAX_AGE)
    except BadSignature:  # SignatureExpired is a BadSignature too
        return False
    return isinstance(data, dict) and data.get("c") == token_hash[:32]


def lookup(token: str) -> TokenLookup:
    if not TOKEN.fullmatch(token):
        return TokenLookup("unknown")
    return get_store().lookup_token(get_registry().ids(), confirm_token_hash(token))


def language(found: TokenLookup) -> Catalog:
    return get_catalog(found.lang) if found.lang else pick_language(request.args.get("lang"))


def page(template: str, status: int, **context: Any) -> Response:
    return Response(render_template(template, **context), status=status, mimetype="text/html")


def gone_page(found: TokenLookup, t: Catalog | None = None) -> Response:
    """A link that no longer confirms: 410 (used, replaced, expired) or 404 (unknown)."""
    t = t or language(found)
    statement = get_registry().get(found.statement_id) if found.statement_id else None
    again = (
        url_for("embed.statement_page", statement_id=statement.id, lang=t.lang) + "#endorse"
        if statement
        else url_for("embed.index", lang=t.lang)
    )
    return page(
        "pages/confirm_gone.html",
        404 if found.state == "unknown" else 410,
        t=t,
        message=t(GONE_MESSAGES.get(found.state, "gone_expired")),
        title=statement.text(t.lang).title if statement else "",
        again=again,
        again_label=t("endorse_again") if statement else t("statements"),
    )


def confirm_page(
    token: str, statement: Statement, record: PendingRecord, status: int = 200, message: str = ""
) -> Response:
    t = get_catalog(record.lang)
    return page(
        "pages/confirm.html",
        status,
        t=t,
        text=statement.text(t.lang),
        statement=statement,
        record=record,
        csrf=form_token(confirm_token_hash(token)),
        action=url_for("confirm.confirm_post", token=token),
        message=message,
    )


def statement_of(found: TokenLookup) -> Statement | None:
    return get_registry().get(found.statement_id) if found.record is not None else None


@bp.get("/c/<token>")
def confirm_get(token: str) -> Response:
    """The confirmation page. Reads only."""
    found = lookup(token)
    statement = statement_of(found)
    if found.record is None or statement is None:
        return gone_page(found)
    return confirm_page(token, statement, found.record)


@bp.post("/c/<token>")
def confirm_post(token: str) -> Response:
    origin = request.headers.get("Origin")
    if origin is not None and not is_own_origin(origin):
        raise Problem(
            403, "cross-site-form", "Cross-site form", "This form can only be sent from its page."
        )
    found = lookup(token)
    statement = statement_of(found)
    if found.record is None or statement is None:
        return gone_page(found)
    record = found.record
    t = get_catalog(record.lang)
    csrf = request.form.get("csrf", "")
    token_hash = confirm_token_hash(token)
    if not form_token_ok(csrf, token_hash) or not get_store().use_form_token(
        statement.id, csrf, FORM_TOKEN_MAX_AGE
    ):
        return confirm_page(token, statement, record, 400, t("err_expired"))
    if not statement.scheduled_open():
        return confirm_page(token, statement, record, 409, t("err_closed"))
    receipt = secrets.token_urlsafe(24)  # 192 random bits; only its hash is kept
    commit = commitment(receipt)
    entry = endorse_template(
        minute(datetime.now(UTC)),
        country=(record.country or None) if record.public else None,
        source=record.source,
        name=first_name(record.name) if record.public else None,
        text=record.text or statement.original.sha256,
        commit=commit,
    )
    result = get_store().confirm(statement.id, token_hash, record, entry, commit)
    if result.status == "counted":
        get_hub().heard(statement.id, result.count)
    if result.status in ("gone", "unknown", "retry"):
        # Between the read above and the atomic step: used by another click, or expired.
        state = result.gone or ("expired" if result.status == "unknown" else "used")
        return gone_page(TokenLookup(state, statement.id, record.lang), t)
    if result.status == "closed":
        return confirm_page(token, statement, record, 409, t("err_closed"))
    if result.status == "unready":
        response = confirm_page(token, statement, record, 503, t("err_busy"))
        response.headers["Retry-After"] = "5"
        return response
    return confirmed_page(
        statement,
        t,
        result.count,
        receipt if result.status == "counted" else None,
        record.source,
    )


def confirmed_page(
    statement: Statement, t: Catalog, count: int, receipt: str | None, source: str
) -> Response:
    """Thanks (or "you had endorsed already"), the receipt, the count, the way back."""
    context = page_context(statement, t)
    context.update(count=count, count_text=t.number(count), count_label=t.plural("count", count))
    site = normalize_origin(source) if source != "direct" else None
    return page(
        "pages/confirmed.html",
        200,
        receipt=receipt_json(statement, receipt) if receipt else None,
        site=site,
        site_name=site.split("://", 1)[-1] if site else "",
        statement_link=url_for("embed.statement_page", statement_id=statement.id, lang=t.lang),
        **context,
    )
