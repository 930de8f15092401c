"""Blueprint for what browsers load: ``/embed.js``, ``/embed/<id>``, ``/s/<id>``, ``/demo``.

* ``/embed.js``: the loader allied sites paste (``static/embed.js``), revalidated on every
  use so a fix reaches every site at once.
* ``/embed/<id>``: the widget page the loader frames. ``frame-ancestors`` is ``'self'``
  plus the allied origin the loader names in ``?origin=``, when it is allowlisted;
  everything else is ``'self'`` only, with no inline script or style. The
  language, theme and layout come from the query string the loader builds; a ``Link``
  header preloads its stylesheet and script.
* ``/s/<id>``: the hosted statement page, whose form also works without JavaScript
  (a POST carrying a signed, time-limited, single-use token; no cookie is ever set).
* ``/demo``: an example allied page from ``embed/``, and ``/`` a landing page.

Static files under ``/static`` are fingerprinted (``?v=<hash>``) and cached for a year
when the hash matches, revalidated otherwise; all carry ``nosniff`` and
``Cross-Origin-Resource-Policy: cross-origin``.
"""

from __future__ import annotations

import json
import mimetypes
import secrets
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, abort, current_app, render_template, request, url_for
from flask import send_from_directory as _send_from_directory
from flask_limiter import RateLimitExceeded
from itsdangerous import BadSignature, URLSafeTimedSerializer
from redis.exceptions import RedisError

from . import assets
from .api import (
    RECENT_LIMIT,
    get_registry,
    get_statement,
    public_endorser,
    receipt_json,
    record_endorsement,
)
from .db import get_store
from .errors import Problem, handle_rate_limit
from .i18n import Catalog, catalogs, get_catalog, match_language
from .limits import get_allowlist, is_own_origin
from .links import absolute, statement_url
from .mail import mask
from .metrics import record_outcome
from .resources import EMBED_SITE_DIR, STATIC_DIR
from .statements import Statement
from .validation import COUNTRY_CODES, EndorsementInput, name_problem, validate_endorsement


class AssetBlueprint(Blueprint):
    """Serves ``static/`` with content-hash ETags, the same on every server and deploy."""

    def send_static_file(self, filename: str) -> Response:
        return send_static(STATIC_DIR, filename)


bp = AssetBlueprint("embed", __name__, static_folder=str(STATIC_DIR), static_url_path="/static")


LAYOUTS = ("full", "compact", "counter")
THEMES = ("auto", "light", "dark")
ONE_YEAR = 365 * 24 * 3600
FORM_TOKEN_MAX_AGE = 6 * 3600
FORM_SALT = "undersign.endorse-form"  # namespaces the signature, not a secret
SELF_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'"
)
DEMO_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; frame-src 'self'; "
    "img-src 'self' data:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
DEMO_FILES = {".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}
SORTED_COUNTRIES = " ".join(sorted(COUNTRY_CODES))
# Messages the browser script needs; the rest is rendered by the templates.
SCRIPT_KEYS = (
    "count",
    "progress",
    "goal",
    "sending",
    "endorse",
    "thanks",
    "duplicate",
    "copied",
    "receipt_copied",
    "code_copied",
    "someone",
    "someone_from",
    "err_name",
    "err_name_long",
    "err_name_chars",
    "err_email",
    "err_email_bad",
    "err_country",
    "err_consent",
    "err_fix",
    "err_rate",
    "err_busy",
    "err_closed",
    "err_network",
    "err_timeout",
    "pow_wait",
    "err_pow",
)
# ... and, on a statement with email confirmation, its "check your inbox" state.
CONFIRM_SCRIPT_KEYS = ("pending_title", "pending")


# -- assets -----------------------------------------------------------------------------


def asset_digest(filename: str) -> str:
    """A short content hash of what is served for ``static/<filename>``."""
    return assets.digest(filename)


def asset_url(filename: str) -> str:
    """The fingerprinted URL of a static file: cacheable for a year."""
    return url_for("embed.static", filename=filename, v=asset_digest(filename))


@bp.context_processor
def template_helpers() -> dict[str, Any]:
    return {"asset": asset_url}


@bp.after_request
def security_headers(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.endpoint in ("embed.static", "embed.loader") and response.status_code < 400:
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        filename = (request.view_args or {}).get("filename", "")
        version = request.args.get("v")
        if request.endpoint == "embed.static" and version and version == asset_digest(filename):
            response.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
        else:
            response.headers["Cache-Control"] = "no-cache"
    else:
        response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def send_static(folder: Any, filename: str, mimetype: str | None = None) -> Response:
    """A file, revalidated on each use; a ``static/`` one as ``assets`` serves it (scripts
    and stylesheets minified), with its content hash as ETag."""
    if "\x00" in filename:
        abort(404)  # no such file can exist; the filesystem calls would raise ValueError
    if folder == STATIC_DIR:
        body = assets.served(filename)
        if body is None:
            abort(404)
        guessed = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        response = Response(body, mimetype=mimetype or guessed)
        response.set_etag(assets.digest(filename))
        response.make_conditional(request)
    else:
        response = _send_from_directory(folder, filename, mimetype=mimetype, max_age=None)
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/embed.js")
def loader() -> Response:
    return send_static(STATIC_DIR, "embed.js", "text/javascript")


# -- language ---------------------------------------------------------------------------


def pick_language(requested: str | None) -> Catalog:
    """``requested`` (a tag or a comma list), then Accept-Language, then English."""
    lang = match_language((requested or "").split(","))
    if lang is None:
        best = request.accept_languages.best_match(list(catalogs()))
        lang = best or match_language(v for v, _ in request.accept_languages) or "en"
    return get_catalog(lang)


def language_links(t: Catalog, path: str) -> list[dict[str, Any]]:
    return [
        {"lang": c.lang, "name": c.name, "url": f"{path}?lang={c.lang}", "current": c is t}
        for c in catalogs().values()
    ]


def page_context(statement: Statement, t: Catalog) -> dict[str, Any]:
    text = statement.text(t.lang)
    count, closed = get_store().count_and_closed(statement.id)
    shown = min(count, statement.goal)
    return {
        "t": t,
        "statement": statement,
        "text": text,
        "translated": text.lang.split("-")[0] == t.lang.split("-")[0],
        "count": count,
        "count_text": t.number(count),
        "count_label": t.plural("count", count),
        "goal": statement.goal,
        "goal_text": t("goal", goal=t.number(statement.goal)),
        "progress_value": shown,
        "progress_text": t("progress", percent=t.percent(count / statement.goal)),
        "open": statement.scheduled_open() and not closed,
        "url": statement_url(statement.id),
        "api": url_for("api.show_statement", statement_id=statement.id),
        # The proof-of-work solver's script, when the proof of work is on.
        "pow": asset_url("pow.js") if current_app.config["POW"] else "",
        "script_messages": json.dumps(
            t.subset(SCRIPT_KEYS + (CONFIRM_SCRIPT_KEYS if statement.confirms_email else ())),
            ensure_ascii=False,
        ),
        "audit": url_for("embed.audit_page", statement_id=statement.id),
        "countries": SORTED_COUNTRIES,
        "confirm": statement.confirms_email,
    }


def html_response(html: str, status: int, policy: str) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = policy
    return response


# -- the widget page ----------------------------------------------------------------------


@bp.get("/embed/<statement_id>")
def widget(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    t = pick_language(request.args.get("lang"))
    layout = request.args.get("layout", "full")
    theme = request.args.get("theme", "auto")
    context = page_context(statement, t)
    html = render_template(
        "embed/widget.html",
        layout=layout if layout in LAYOUTS else "full",
        theme=theme if theme in THEMES else "auto",
        host_origin=request.args.get("origin", "")[:300],
        frame_title=t("frame_title", title=context["text"].title),
        # The statement's pages, opened from the widget, in the widget's language (the
        # link to share stays without one: each reader's browser picks theirs).
        page_url=f"{context['url']}?lang={t.lang}",
        audit_url=f"{context['url']}/audit?lang={t.lang}",
        **context,
    )
    # The loader names the ally in ?origin=; being part of the URL, it is part of every
    # cache's key, so one ally's policy is never served to another.
    ancestors = get_allowlist().frame_ancestors(request.args.get("origin"))
    response = html_response(html, 200, f"{SELF_POLICY}; frame-ancestors {ancestors}")
    response.headers["Cache-Control"] = "public, max-age=10"
    response.headers["Vary"] = "Accept-Language"
    # Fetch the render-blocking stylesheet (and the script) once the response commits,
    # not when the parser gets to them.
    response.headers["Link"] = (
        f"<{asset_url('widget.css')}>; rel=preload; as=style, "
        f"<{asset_url('widget.js')}>; rel=preload; as=script"
    )
    return response


# -- the hosted statement page ------------------------------------------------------------


def form_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=FORM_SALT)


def form_token(statement_id: str) -> str:
    return str(form_serializer().dumps({"s": statement_id, "n": secrets.token_urlsafe(6)}))


def form_token_ok(token: str, statement_id: str) -> bool:
    try:
        data = form_serializer().loads(token, max_age=FORM_TOKEN_MAX_AGE)
    except BadSignature:  # SignatureExpired is a BadSignature too
        return False
    return isinstance(data, dict) and data.get("s") == statement_id


def field_errors(body: dict[str, Any], errors: dict[str, str]) -> dict[str, str]:
    """The server's field errors as catalog keys (the same rules the script applies)."""
    keys: dict[str, str] = {}
    for field in errors:
        if field == "name":
            problem = name_problem(body.get("name"))
            keys[field] = {"long": "err_name_long", "chars": "err_name_chars"}.get(
                str(problem), "err_name"
            )
        elif field == "email":
            email = str(body.get("email") or "").strip()
            keys[field] = "err_email" if not email else "err_email_bad"
        elif field in ("country", "consent"):
            keys[field] = f"err_{field}"
        else:
            keys["form"] = "err_fix"
    return keys


def render_statement_page(
    statement: Statement,
    t: Catalog,
    *,
    status: int = 200,
    values: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
) -> Response:
    context = page_context(statement, t)
    recent = [public_endorser(e) for e in get_store().recent(statement.id, RECENT_LIMIT)]
    path = url_for("embed.statement_page", statement_id=statement.id)
    snippet = (
        f'<script src="{absolute("/embed.js")}" data-statement="{statement.id}" async></script>'
    )
    html = render_template(
        "pages/statement.html",
        recent=recent,
        country_name=t.country,
        country_options=t.countries(COUNTRY_CODES),
        token=form_token(statement.id),
        values=values or {},
        errors=errors or {},
        message=message,
        snippet=snippet,
        languages=language_links(t, path),
        action=path,
        **context,
    )
    response = html_response(html, status, f"{SELF_POLICY}; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Vary"] = "Accept-Language"
    return response


@bp.get("/s/<statement_id>")
def statement_page(statement_id: str) -> Response:
    statement = get_statement(statement_id)
    return render_statement_page(statement, pick_language(request.args.get("lang")))


@bp.post("/s/<statement_id>")
def endorse_form(statement_id: str) -> Response:
    """The no-JavaScript endorsement: same rules and store as the JSON API."""
    statement = get_statement(statement_id)
    t = pick_language(request.form.get("lang"))
    origin = request.headers.get("Origin")
    if origin is not None and not is_own_origin(origin):
        raise Problem(
            403, "cross-site-form", "Cross-site form", "This form can only be sent from its page."
        )
    form = request.form
    body: dict[str, Any] = {
        "name": form.get("name", ""),
        "email": form.get("email", ""),
        "country": form.get("country", ""),
        "lang": t.lang,
        "consent": form.get("consent") == "1",
        "public": form.get("public") == "1",
    }
    values = {k: body[k] for k in ("name", "email", "country", "public", "consent")}
    if form.get("website"):  # the field people never see: answer as if counted
        record_outcome("rejected", "honeypot")
        seems = "pending" if statement.confirms_email else "counted"
        count = get_store().count(statement.id)
        return result_page(statement, t, seems, count, email=str(body["email"]))
    if not form_token_ok(form.get("token", ""), statement.id):
        return render_statement_page(
            statement, t, status=400, values=values, message=t("err_expired")
        )
    data = validate_endorsement(body)
    if not isinstance(data, EndorsementInput):
        return render_statement_page(
            statement,
            t,
            status=422,
            values=values,
            errors=field_errors(body, data),
            message=t("err_fix"),
        )
    try:
        # Single use: a token already spent (a replay, a second tab) counts nothing.
        if not get_store().use_form_token(statement.id, form["token"], FORM_TOKEN_MAX_AGE):
            return render_statement_page(
                statement, t, status=400, values=values, message=t("err_expired")
            )
        result = record_endorsement(statement, data, pow_required=False)
    except Problem as problem:
        if problem.code == 409:
            message = t("err_closed")
        elif problem.code == 403:
            message = t("err_blocked")
        elif problem.code == 422:
            errors = problem.extensions.get("errors", {})
            return render_statement_page(
                statement,
                t,
                status=422,
                values=values,
                errors=field_errors(body, errors),
                message=t("err_fix"),
            )
        elif problem.code == 429:
            page = render_statement_page(
                statement, t, status=429, values=values, message=t("err_rate")
            )
            page.headers.update(problem.extra_headers)
            return page
        else:
            raise
        return render_statement_page(
            statement, t, status=problem.code or 400, values=values, message=message
        )
    except RedisError:
        return render_statement_page(statement, t, status=503, values=values, message=t("err_busy"))
    return result_page(statement, t, result.status, result.count, result.receipt, email=data.email)


def result_page(
    statement: Statement,
    t: Catalog,
    status: str,
    count: int,
    receipt: str | None = None,
    email: str = "",
) -> Response:
    """The no-JS form's answer: thanks, "you had endorsed already", or (email
    confirmation) "check your inbox", with the address masked."""
    context = page_context(statement, t)
    context.update(count=count, count_text=t.number(count))
    context["count_label"] = t.plural("count", count)
    html = render_template(
        "pages/result.html",
        duplicate=status == "duplicate",
        pending=status == "pending",
        masked=mask(email),
        receipt=receipt_json(statement, receipt) if receipt else None,
        back=url_for("embed.statement_page", statement_id=statement.id, lang=t.lang),
        **context,
    )
    response = html_response(html, 200, f"{SELF_POLICY}; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the receipt page and the audit page ---------------------------------------------------

# Messages the receipt page's script needs (statuses, checks, withdrawal, errors).
RECEIPT_KEYS = (
    "count",
    "rc_checking",
    "rc_pending",
    "rc_missing",
    "rc_no_secret",
    "rc_counted",
    "rc_struck",
    "rc_withdrawn",
    "rc_entry",
    "rc_proof_ok",
    "rc_proof_bad",
    "rc_sig_ok",
    "rc_sig_na",
    "rc_sig_bad",
    "rc_withdrawn_now",
    "err_busy",
    "err_rate",
    "err_network",
)


def page_response(html: str) -> Response:
    response = html_response(html, 200, f"{SELF_POLICY}; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Vary"] = "Accept-Language"
    return response


@bp.get("/s/<statement_id>/receipt")
def receipt_page(statement_id: str) -> Response:
    """An endorser's receipt: the secret stays after ``#`` in the browser, which hashes it,
    finds its entry, checks the inclusion proof (and the checkpoint's signature where the
    browser can) and offers to withdraw (``static/receipt.js``)."""
    statement = get_statement(statement_id)
    t = pick_language(request.args.get("lang"))
    context = page_context(statement, t)
    path = url_for("embed.receipt_page", statement_id=statement.id)
    html = render_template(
        "pages/receipt.html",
        languages=language_links(t, path),
        receipt_messages=json.dumps(t.subset(RECEIPT_KEYS), ensure_ascii=False),
        key_url=url_for("transparency.log_key"),
        **context,
    )
    return page_response(html)


@bp.get("/s/<statement_id>/audit")
def audit_page(statement_id: str) -> Response:
    """Anyone's way in to checking the count: the latest signed checkpoint, its size and
    count, the verifier key, the command to run and the log to download."""
    from .transparency import get_sealer, sealed_size

    statement = get_statement(statement_id)
    t = pick_language(request.args.get("lang"))
    context = page_context(statement, t)
    size, note = sealed_size(statement.id)  # seals first if there is no checkpoint yet
    size, kept, count = get_store().sealed_head(statement.id)
    note = kept or note
    path = url_for("embed.audit_page", statement_id=statement.id)
    vkey = get_sealer().signer.verifier().vkey
    base = absolute("")
    html = render_template(
        "pages/audit.html",
        languages=language_links(t, path),
        size=size,
        size_text=t.number(size),
        sealed_count=t.number(count),
        note=note,
        vkey=vkey,
        command=f"undersign verify {base} {statement.id} --key '{vkey}'",
        download=url_for("embed.log_download", statement_id=statement.id),
        **context,
    )
    return page_response(html)


@bp.get("/s/<statement_id>/audit/log.jsonl")
def log_download(statement_id: str) -> Response:
    """The whole sealed log, one canonical JSON line each, as a file."""
    from .transparency import JSONL, PAGE_MAX, sealed_size

    statement = get_statement(statement_id)
    size, _ = sealed_size(statement.id)
    store = get_store()

    def lines() -> Iterator[bytes]:
        for start in range(0, size, PAGE_MAX):
            yield b"".join(
                x + b"\n" for x in store.log_lines(statement.id, start, min(size, start + PAGE_MAX))
            )

    response = Response(lines(), mimetype=JSONL)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{statement.id}-log-{size}.jsonl"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(RateLimitExceeded)
def rate_limited(exc: RateLimitExceeded) -> Response:
    fallback = handle_rate_limit(exc)
    if request.endpoint != "embed.endorse_form" or request.view_args is None:
        return fallback
    statement = get_registry().get(str(request.view_args.get("statement_id")))
    if statement is None:
        return fallback
    t = pick_language(request.form.get("lang"))
    response = render_statement_page(statement, t, status=429, message=t("err_rate"))
    retry_after = fallback.headers.get("Retry-After")
    if retry_after:
        response.headers["Retry-After"] = retry_after
    return response


# -- landing page and demo ----------------------------------------------------------------


@bp.get("/")
def index() -> Response:
    t = pick_language(request.args.get("lang"))
    registry = get_registry()
    counts = get_store().counts(registry.ids())
    items = [
        {
            "id": s.id,
            "title": s.text(t.lang).title,
            "excerpt": s.text(t.lang).excerpt,
            "count": t.number(counts[s.id]),
            "count_label": t.plural("count", counts[s.id]),
            "url": url_for("embed.statement_page", statement_id=s.id),
        }
        for s in registry
    ]
    html = render_template("pages/index.html", t=t, items=items, languages=language_links(t, "/"))
    response = html_response(html, 200, f"{SELF_POLICY}; frame-ancestors 'none'")
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/demo")
def demo() -> Response:
    response = send_static(EMBED_SITE_DIR, "demo.html", "text/html")
    response.headers["Content-Security-Policy"] = DEMO_POLICY
    return response


@bp.get("/demo/<path:filename>")
def demo_file(filename: str) -> Response:
    suffix = "." + filename.rsplit(".", 1)[-1] if "." in filename else ""
    if suffix not in DEMO_FILES:
        abort(404)
    return send_static(EMBED_SITE_DIR, filename, DEMO_FILES[suffix])
