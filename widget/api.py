"""Blueprint ``/api/v1``: the public JSON API, plus ``/healthz``.

Views validate, then ask ``store``; they never build Redis keys. Every error is raised as
a ``Problem`` (see ``errors``), so the response is problem+json and nothing is written.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request

from .bodies import loads_json
from .db import get_store
from .errors import Problem
from .limits import get_allowlist, is_own_origin
from .links import normalize_origin, statement_url
from .metrics import record_outcome
from .openapi import openapi_document
from .privacy import email_hmac
from .statements import Statement, StatementRegistry
from .store import Endorsement, EndorseResult, LogEntry
from .validation import EndorsementInput, clean_name, is_letter, validate_endorsement

if TYPE_CHECKING:
    from .live import Hub

bp = Blueprint("api", __name__, url_prefix="/api/v1")
health_bp = Blueprint("health", __name__)

COUNT_CACHE_CONTROL = "public, max-age=1"


def get_hub() -> Hub:
    """The process's live hub (``live``): its count cache is fed by Redis pub/sub."""
    hub: Hub = current_app.extensions["undersign.live"]
    return hub


def get_registry() -> StatementRegistry:
    registry: StatementRegistry = current_app.extensions["undersign.statements"]
    return registry


def get_statement(statement_id: str) -> Statement:
    statement = get_registry().get(statement_id)
    if statement is None:
        raise Problem(
            404,
            "statement-not-found",
            "Statement not found",
            f"There is no statement with id {statement_id!r}.",
        )
    return statement


def statement_summary(statement: Statement, count: int, lang: str | None = None) -> dict[str, Any]:
    text = statement.text(lang)
    return {
        "id": statement.id,
        "title": text.title,
        "excerpt": text.excerpt,
        "count": count,
        "goal": statement.goal,
        "url": statement_url(statement.id),
    }


@bp.get("/statements")
def list_statements() -> Response:
    registry = get_registry()
    counts = get_store().counts(registry.ids())
    return jsonify(
        {
            "statements": [
                statement_summary(s, counts[s.id], request.args.get("lang")) for s in registry
            ]
        }
    )


@bp.get("/statements/<statement_id>")
def show_statement(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    count, closed = get_store().count_and_closed(statement.id)
    text = statement.text(request.args.get("lang"))
    body = statement_summary(statement, count, text.lang)
    body.update(
        {
            "languages": statement.languages,
            "lang": text.lang,
            "original_lang": statement.original_lang,
            "author": statement.author,
            "open": statement.scheduled_open() and not closed,
            "opens": statement.opens.isoformat() if statement.opens else None,
            "closes": statement.closes.isoformat() if statement.closes else None,
        }
    )
    return jsonify(body)


@bp.get("/statements/<statement_id>/count")
def show_count(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    count = get_hub().count(statement.id)
    etag = f"c{count}"
    if request.if_none_match.contains(etag):
        response = Response(status=304)
    else:
        response = jsonify({"id": statement.id, "count": count})
    response.set_etag(etag)
    response.headers["Cache-Control"] = COUNT_CACHE_CONTROL
    response.vary.add("Origin")  # shared caches must not hand one ally's CORS answer to another
    return response


def read_json_body() -> Any:
    if not request.mimetype or not (
        request.mimetype == "application/json" or request.mimetype.endswith("+json")
    ):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "Send the endorsement as JSON with 'Content-Type: application/json'.",
        )
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH, chunked or not
    return loads_json(raw)


def require_open(statement: Statement) -> None:
    if not statement.scheduled_open():
        raise Problem(
            409,
            "statement-closed",
            "Statement closed",
            "This statement is not accepting endorsements at the moment.",
        )


def endorsement_source(claimed: str) -> str:
    """The allied origin this endorsement came through, or ``direct``.

    A cross-origin call names itself in ``Origin``. Our own iframe and hosted page are
    same-origin, so the widget reports the allied page it sits on; we accept that claim
    only for an allowlisted origin.
    """
    origin = request.headers.get("Origin")
    allowlist = get_allowlist()
    if origin and allowlist.allows(origin) and not is_own_origin(origin):
        return normalize_origin(origin) or "direct"
    claimed_origin = normalize_origin(claimed) if claimed else None
    if claimed_origin and allowlist.allows(claimed_origin) and not is_own_origin(claimed_origin):
        return claimed_origin
    return "direct"


def record_endorsement(statement: Statement, data: EndorsementInput) -> EndorseResult:
    """Store one validated endorsement; shared by the JSON API and the no-JS form."""
    require_open(statement)
    endorsement = Endorsement(
        email_hmac=email_hmac(current_app.config["SECRET_KEY"], statement.id, data.email),
        name=data.name,
        country=data.country,
        source=endorsement_source(data.source),
        public=data.public,
    )
    result = get_store().endorse(statement.id, endorsement)
    record_outcome(result.status)
    if result.status == "counted":
        get_hub().heard(statement.id, result.count)
    if result.status == "closed":
        raise Problem(
            409,
            "statement-closed",
            "Statement closed",
            "The organisers have closed this statement for new endorsements.",
            count=result.count,
        )
    return result


def invalid(errors: dict[str, str]) -> Problem:
    return Problem(
        422,
        "invalid-endorsement",
        "Invalid endorsement",
        "Some fields need attention: " + ", ".join(sorted(errors)) + ".",
        errors=errors,
    )


@bp.post("/statements/<statement_id>/endorsements")
def endorse(statement_id: str) -> tuple[Response, int]:
    statement = get_statement(statement_id)
    body = read_json_body()
    data = validate_endorsement(body)
    if not isinstance(data, EndorsementInput):
        raise invalid(data)
    result = record_endorsement(statement, data)
    response = jsonify({"status": result.status, "count": result.count})
    response.headers["Cache-Control"] = "no-store"
    return response, 201 if result.status == "counted" else 200


RECENT_LIMIT = 5


def public_endorser(entry: LogEntry) -> dict[str, Any]:
    """What anyone may see of an endorsement, for every public list (recent endorsers,
    the hosted page, and any public log to come): the time to the minute only; a first
    name and a country only for endorsers who chose to be shown."""
    shown = entry.public
    minute = entry.time_ms // 60_000 * 60
    return {
        "name": first_name(entry.name) if shown else None,
        "country": (entry.country or None) if shown else None,
        "time": datetime.fromtimestamp(minute, UTC).isoformat(timespec="seconds"),
    }


MAX_FIRST_NAME = 20
_KEPT_IN_WORDS = {"'", "\u2019"}  # O'Brien, N'Golo: apostrophes join words, not split them


def _separates(char: str) -> bool:
    return char.isspace() or (unicodedata.category(char)[0] in "ZPS" and char not in _KEPT_IN_WORDS)


def first_name(name: str) -> str | None:
    """The part of a name that may be shown: its first word with a letter (words split on
    whitespace, punctuation and symbols), at most ``MAX_FIRST_NAME`` characters; a name
    of one word shows only its initial (``王小明`` -> ``王.``). None without a letter."""
    cleaned = clean_name(name)
    words: list[str] = []
    word = ""
    for char in cleaned + " ":
        if _separates(char):
            if word:
                words.append(word)
            word = ""
        else:
            word += char
    named = [w for w in words if any(is_letter(c) for c in w)]
    if not named:
        return None
    if len(words) == 1:
        initial = named[0][0]
        for char in named[0][1:]:  # with its combining marks: one character as written
            if unicodedata.category(char)[0] != "M":
                break
            initial += char
        return initial + "."
    return named[0][:MAX_FIRST_NAME]


@bp.get("/statements/<statement_id>/recent")
def recent_endorsers(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    entries = get_store().recent(statement.id, RECENT_LIMIT)
    response = jsonify({"id": statement.id, "recent": [public_endorser(e) for e in entries]})
    response.headers["Cache-Control"] = "public, max-age=5"
    response.vary.add("Origin")
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


@health_bp.get("/healthz")
def healthz() -> Response:
    get_store().ping()  # a Redis error becomes 503 problem+json
    response = jsonify({"status": "ok"})
    response.headers["Cache-Control"] = "no-store"
    return response
