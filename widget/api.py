"""Blueprint ``/api/v1``: the public JSON API, plus ``/healthz``.

Views validate, then ask ``store``; they never build Redis keys. Every error is raised as
a ``Problem`` (see ``errors``), so the response is problem+json and nothing is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request
from redis.exceptions import RedisError

from .abuse import (
    CLIENT_PREFIXES,
    NETWORK_PREFIXES,
    BlockCache,
    EmailError,
    canonical_email,
    is_disposable,
    networks_of,
    tiers,
)
from .bodies import loads_json
from .db import get_store
from .errors import Problem
from .i18n import catalogs, match_language
from .limits import get_allowlist, is_own_origin
from .links import absolute, normalize_origin, statement_url
from .metrics import record_outcome
from .openapi import openapi_document
from .pow import PowError, ProofOfWork
from .privacy import DailySalt, email_hmac
from .statements import Statement, StatementRegistry
from .store import (
    Endorsement,
    EndorseResult,
    Guard,
    LogEntry,
    PendingEndorsement,
    PendingResult,
    Tier,
)
from .tlog.entries import commitment, endorse_template, minute
from .validation import EndorsementInput, first_name, validate_endorsement

if TYPE_CHECKING:
    from .jobs import MailQueue
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
    if request.if_none_match.contains_weak(etag):  # If-None-Match compares weakly (RFC 9110)
        response = Response(status=304)
    else:
        response = jsonify({"id": statement.id, "count": count})
    response.set_etag(etag)
    response.headers["Cache-Control"] = COUNT_CACHE_CONTROL
    response.vary.add("Origin")  # shared caches must not hand one ally's CORS answer to another
    return response


def read_json_body(what: str = "the endorsement") -> Any:
    """The request's JSON body (``what`` names it in the 415 problem's detail)."""
    if not request.mimetype or not (
        request.mimetype == "application/json" or request.mimetype.endswith("+json")
    ):
        raise Problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            f"Send {what} as JSON with 'Content-Type: application/json'.",
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


def get_pow() -> ProofOfWork:
    pow_: ProofOfWork = current_app.extensions["undersign.pow"]
    return pow_


def get_salt() -> DailySalt:
    salt: DailySalt = current_app.extensions["undersign.salt"]
    return salt


def address_tiers(source: str) -> tuple[Tier, ...]:
    """The rate-limit tiers of this request's client (hashed under the day's salt)."""
    client, network = networks_of(
        request.remote_addr or "unknown", CLIENT_PREFIXES, NETWORK_PREFIXES
    )
    salt = get_salt()
    return tiers(
        current_app.extensions["undersign.tier_limits"],
        client=salt.hash(client),
        network=salt.hash(network),
        source=source,
    )


@dataclass(frozen=True)
class Recorded:
    """The store's answer, and the endorser's receipt secret when it was counted."""

    result: EndorseResult
    receipt: str | None

    @property
    def status(self) -> str:
        return self.result.status

    @property
    def count(self) -> int:
        return self.result.count


def receipt_json(statement: Statement, secret: str) -> dict[str, str]:
    """A counted endorsement's receipt: the secret, and the page that checks it (the
    secret after ``#``, so it never reaches a server's log)."""
    return {"secret": secret, "url": absolute(f"/s/{statement.id}/receipt#{secret}")}


def record_endorsement(
    statement: Statement, data: EndorsementInput, altcha: Any = None, *, pow_required: bool
) -> Recorded:
    """Store one validated endorsement; shared by the JSON API and the no-JS form.

    Refusals, in order: closed (409), a blocked client network (403), an address this
    service does not take (422), a blocked email domain (403), a missing or bad proof of
    work (422), a rate-limit tier (429), a proof of work used before (422). Each changes
    nothing."""
    require_open(statement)
    blocks = get_blocks().current()
    if blocks.match_address(request.remote_addr or ""):
        raise blocked("network")
    try:
        email = canonical_email(data.email, data.checked)
    except EmailError as exc:
        raise invalid({"email": str(exc)}) from None
    if blocks.match_domain(email.domain):
        raise blocked("email_domain")
    if statement.block_disposable and is_disposable(email.domain):
        raise invalid({"email": "Addresses at throwaway-mail services are not accepted here."})
    nonce, remember_for = "", 0
    if pow_required:
        try:
            solved = get_pow().verify(altcha, statement.id)
        except PowError as exc:
            raise invalid({"altcha": str(exc)}) from None
        nonce, remember_for = solved.nonce, max(1, solved.expires_at - int(time.time()))
    secret = current_app.config["SECRET_KEY"]
    source = endorsement_source(data.source)
    guard = Guard(
        tiers=address_tiers(source),
        pow_nonce=nonce,
        pow_ttl=remember_for,
        legacy_hmac=email_hmac(secret, statement.id, email.legacy),
    )
    if statement.confirms_email:
        return record_pending(statement, data, email.address, guard, source)
    receipt = secrets.token_urlsafe(24)  # 192 random bits; only its hash is kept
    commit = commitment(receipt)
    entry = endorse_template(
        minute(datetime.now(UTC)),
        country=(data.country or None) if data.public else None,
        source=source,
        name=first_name(data.name) if data.public else None,
        text=statement.text(data.lang).sha256,
        commit=commit,
    )
    endorsement = Endorsement(
        email_hmac=email_hmac(secret, statement.id, email.address),
        name=data.name,
        country=data.country,
        source=source,
        public=data.public,
        entry=entry,
        commit=commit,
    )
    result = get_store().endorse(statement.id, endorsement, guard)
    record_outcome(result.status)
    refuse(result)
    if result.status == "counted":
        get_hub().heard(statement.id, result.count)
    return Recorded(result, receipt if result.status == "counted" else None)


def refuse(result: EndorseResult | PendingResult) -> None:
    """The store's refusals as problems: closed 409, limited 429, a used proof of work
    422, the log being prepared 503."""
    if result.status == "unready":
        from .transparency import log_not_ready

        raise log_not_ready()
    if result.status == "closed":
        raise Problem(
            409,
            "statement-closed",
            "Statement closed",
            "The organisers have closed this statement for new endorsements.",
            count=result.count,
        )
    if result.status == "limited":
        raise Problem(
            429,
            "rate-limited",
            "Too many requests",
            f"Too many endorsements ({result.tier} limit). "
            f"Try again in {result.retry_after} seconds.",
            headers={"Retry-After": str(result.retry_after)},
            limit=result.tier,
            retry_after=result.retry_after,
        )
    if result.status == "replay":
        raise invalid({"altcha": "This proof-of-work solution was used already; solve a new one."})


def get_mail() -> MailQueue:
    mail: MailQueue = current_app.extensions["undersign.mail"]
    return mail


def confirm_token_hash(token: str) -> str:
    """A confirmation token as the store keeps it: its hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def endorser_language(requested: str) -> str:
    """The language the endorser used: the one the page sent, else the browser's first
    one we have, else English."""
    lang = match_language([requested]) if requested else None
    return lang or request.accept_languages.best_match(list(catalogs())) or "en"


def record_pending(
    statement: Statement, data: EndorsementInput, address: str, guard: Guard, source: str
) -> Recorded:
    """An endorsement of a statement with email confirmation, past every refusal a direct
    one meets: held until the owner of the address confirms (see ``PENDING_LUA``), and one
    mail job queued, whatever the address's state (a link, "already endorsed", or a job
    that sends nothing), so that the answer and the work behind it are the same for a new,
    pending or confirmed address."""
    secret = current_app.config["SECRET_KEY"]
    lang = endorser_language(data.lang)
    token = secrets.token_urlsafe(24)  # 192 random bits; only its hash is kept
    token_hash = confirm_token_hash(token)
    ttl = current_app.config["CONFIRM_TTL"]
    pending = PendingEndorsement(
        email_hmac=email_hmac(secret, statement.id, address),
        name=data.name,
        country=data.country,
        source=source,
        public=data.public,
        lang=lang,
        text=statement.text(data.lang).sha256,
    )
    store = get_store()
    result = store.ask_confirmation(statement.id, pending, guard, token_hash, ttl)
    record_outcome(result.status)
    refuse(result)
    try:
        get_mail().enqueue(
            statement.id,
            result.mail,
            address=address,
            token=token if result.mail == "link" else "",
            token_hash=token_hash,
            lang=lang,
            until=int(time.time()) + ttl,
        )
    except RedisError:
        # Nothing went out: let the next try mail at once rather than in 10 minutes.
        with contextlib.suppress(RedisError):
            store.allow_mail_again(statement.id, pending.email_hmac)
        raise
    return Recorded(EndorseResult("pending", result.count), None)


def get_blocks() -> BlockCache:
    blocks: BlockCache = current_app.extensions["undersign.blocks"]
    return blocks


def blocked(what: str) -> Problem:
    """An endorsement from a blocked network or email domain: 403, nothing recorded. The
    operator's reason for the block stays with the operator."""
    record_outcome("rejected", "blocked")
    subject = "your network" if what == "network" else "addresses at this email domain"
    return Problem(
        403,
        "blocked",
        "Endorsement not accepted",
        f"The organisers do not accept endorsements from {subject}.",
        blocked=what,
    )


def invalid(errors: dict[str, str]) -> Problem:
    return Problem.invalid("invalid-endorsement", "Invalid endorsement", errors)


def honeypot_answer(statement: Statement) -> tuple[Response, int]:
    """What a form filler gets when it fills the field people never see: a success in
    every way that shows, and nothing recorded."""
    record_outcome("rejected", "honeypot")
    if statement.confirms_email:
        pending = jsonify({"status": "pending", "count": get_hub().count(statement.id)})
        pending.headers["Cache-Control"] = "no-store"
        return pending, 202
    body = {
        "status": "counted",
        "count": get_hub().count(statement.id),
        "receipt": receipt_json(statement, secrets.token_urlsafe(24)),  # a receipt of nothing
    }
    response = jsonify(body)
    response.headers["Cache-Control"] = "no-store"
    return response, 201


@bp.post("/statements/<statement_id>/endorsements")
def endorse(statement_id: str) -> tuple[Response, int]:
    statement = get_statement(statement_id)
    body = read_json_body()
    if isinstance(body, dict) and body.get("website"):
        return honeypot_answer(statement)
    data = validate_endorsement(body)
    if not isinstance(data, EndorsementInput):
        raise invalid(data)
    altcha = body.get("altcha") if isinstance(body, dict) else None
    pow_required = current_app.config["POW"]
    recorded = record_endorsement(statement, data, altcha, pow_required=pow_required)
    answer: dict[str, Any] = {"status": recorded.status, "count": recorded.count}
    if recorded.receipt is not None:
        answer["receipt"] = receipt_json(statement, recorded.receipt)
    response = jsonify(answer)
    response.headers["Cache-Control"] = "no-store"
    return response, {"counted": 201, "pending": 202}.get(recorded.status, 200)


@bp.get("/statements/<statement_id>/challenge")
def challenge(statement_id: str) -> Response:
    """An ALTCHA challenge for one endorsement of this statement."""
    statement = get_statement(statement_id)
    pow_ = get_pow()
    cost = pow_.cost * (2 if get_store().surging(statement.id) else 1)
    response = jsonify(pow_.challenge(statement.id, cost))
    response.headers["Cache-Control"] = "no-store"
    return response


RECENT_LIMIT = 5


def public_endorser(entry: LogEntry) -> dict[str, Any]:
    """What anyone may see of an endorsement, for every public list (recent endorsers,
    the hosted page; the transparency log's lines follow the same rule): the time to the
    minute only; a first name and a country only for endorsers who chose to be shown."""
    shown = entry.public
    at_minute = entry.time_ms // 60_000 * 60
    return {
        "name": first_name(entry.name) if shown else None,
        "country": (entry.country or None) if shown else None,
        "time": datetime.fromtimestamp(at_minute, UTC).isoformat(timespec="seconds"),
    }


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
