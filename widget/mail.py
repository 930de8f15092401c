"""Confirmation mail: the messages (standard library ``email``) and how they are sent
(``smtplib``). Imports neither Flask nor Redis; ``jobs`` sends them off the request path.

A message holds the statement's title and, for a new endorsement, the confirmation link,
in the endorser's language (the i18n catalogs), as ``multipart/alternative`` (text and
HTML), with ``Auto-Submitted: auto-generated`` and no ``List-Unsubscribe`` (there is no
list). Nothing the endorser typed is in it: not even their name, so that nobody can put
words of their own into someone else's inbox by typing that person's address.

``WIDGET_SMTP_URL``:

* ``smtps://[user:password@]host[:465]``: TLS from the first byte;
* ``smtp://user:password@host[:587]`` (or any ``smtp://`` on port 587): STARTTLS,
  required, before anything else; a password never travels in clear;
* ``smtp://host[:25]`` without credentials: plain SMTP, for a relay on the same host or a
  private network.

Certificates are checked against the system's trust store.
"""

from __future__ import annotations

import html
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import unquote, urlsplit

from babel.dates import format_date, format_time

from .i18n import Catalog

SMTP_TIMEOUT = 20.0  # seconds for each network step of a delivery
KINDS = ("link", "already")


def mask(address: str) -> str:
    """``a•••@example.org``: the first character of the local part, then the domain."""
    address = address.strip()
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}•••@{domain}" if local else "•••"


@dataclass(frozen=True)
class Letter:
    """What a confirmation mail says: ``kind`` is ``link`` (a new link, valid until
    ``until``) or ``already`` (the address has endorsed)."""

    kind: str
    to: str
    title: str
    link: str = ""
    until: datetime | None = None


def _until_text(t: Catalog, until: datetime) -> str:
    locale = t.lang.replace("-", "_")
    when = until.astimezone(UTC)
    try:
        day = format_date(when, "long", locale=locale)
        clock = format_time(when, "short", tzinfo=UTC, locale=locale)
    except (ValueError, LookupError):
        day, clock = when.strftime("%Y-%m-%d"), when.strftime("%H:%M")
    return f"{day}, {clock} UTC"


def build_message(letter: Letter, t: Catalog, sender: str) -> EmailMessage:
    """The mail for ``letter`` in ``t``'s language, from ``sender``."""
    if letter.kind not in KINDS:
        raise ValueError(f"unknown mail kind {letter.kind!r}")
    message = EmailMessage(policy=SMTP)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["From"] = sender
    message["To"] = letter.to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message["X-Auto-Response-Suppress"] = "All"
    if letter.kind == "link":
        subject = t("mail_subject", title=letter.title)
        until = _until_text(t, letter.until or datetime.now(UTC))
        paragraphs = [
            t("mail_asked", title=letter.title),
            t("mail_action"),
            None,  # the link
            t("mail_valid", until=until),
            t("mail_not_you"),
        ]
    else:
        subject = t("mail_already_subject", title=letter.title)
        paragraphs = [t("mail_already", title=letter.title), t("mail_already_not_you")]
    # RFC 2047 words made by the older ``Header``, already folded: the newer folder drops
    # the space between two encoded words when it folds there (CPython 3.11).
    message.set_raw("Subject", Header(subject, "utf-8", header_name="Subject").encode())
    footer = t("mail_auto")

    text_parts = [letter.link if p is None else p for p in paragraphs]
    message.set_content("\n\n".join([*text_parts, "-- \n" + footer]) + "\n")
    body = []
    for paragraph in paragraphs:
        if paragraph is None:
            link = html.escape(letter.link, quote=True)
            body.append(
                f'<p><a href="{link}" style="display:inline-block;padding:10px 18px;'
                "background:#1d4ed8;color:#ffffff;text-decoration:none;border-radius:6px;"
                f'font-weight:600">{html.escape(t("mail_button"))}</a></p>'
                f'<p style="font-size:13px;color:#555">{link}</p>'
            )
        else:
            body.append(f"<p>{html.escape(paragraph)}</p>")
    page = (
        f'<!doctype html><html lang="{html.escape(t.lang)}" dir="{t.dir}"><head>'
        '<meta charset="utf-8"><meta name="color-scheme" content="light dark">'
        f"<title>{html.escape(subject)}</title></head>"
        '<body style="font-family:system-ui,sans-serif;font-size:16px;line-height:1.5">'
        + "".join(body)
        + f'<p style="font-size:13px;color:#555">{html.escape(footer)}</p></body></html>'
    )
    message.add_alternative(page, subtype="html")
    message["Content-Language"] = t.lang  # after the content: setting it clears Content-*
    return message


class MailRejected(Exception):
    """The SMTP server refused this mail for good (a 5xx answer): retrying cannot help."""


class MailNotSent(Exception):
    """The mail could not be handed over this time (server down, a 4xx answer, a TLS or
    login problem); trying again later may work. The message names the error's kind and
    code only: servers' texts may quote the address."""


@dataclass(frozen=True)
class SmtpTarget:
    """``WIDGET_SMTP_URL`` taken apart."""

    host: str
    port: int
    tls: bool  # TLS from the first byte (smtps://)
    starttls: bool
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> SmtpTarget:
        parts = urlsplit(url)
        user = unquote(parts.username or "")
        password = unquote(parts.password or "")
        tls = parts.scheme == "smtps"
        port = parts.port or (465 if tls else 587 if user else 25)
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            tls=tls,
            starttls=not tls and (bool(user) or port == 587),
            user=user,
            password=password,
        )


def send(message: EmailMessage, target: SmtpTarget, context: ssl.SSLContext | None = None) -> None:
    """Hand ``message`` to the SMTP server; ``MailRejected`` or ``MailNotSent`` if not."""
    context = context or ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if target.tls:
            client = smtplib.SMTP_SSL(
                target.host, target.port, timeout=SMTP_TIMEOUT, context=context
            )
        else:
            client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT)
        with client:
            client.ehlo()
            if target.starttls:
                client.starttls(context=context)
                client.ehlo()
            if target.user:
                client.login(target.user, target.password)
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = sorted({code for code, _ in exc.recipients.values()})
        if all(code >= 500 for code in codes):
            raise MailRejected(f"recipient refused ({', '.join(map(str, codes))})") from None
        raise MailNotSent(f"recipient deferred ({', '.join(map(str, codes))})") from None
    except smtplib.SMTPResponseException as exc:
        kind = type(exc).__name__
        if exc.smtp_code >= 500 and not isinstance(exc, smtplib.SMTPAuthenticationError):
            raise MailRejected(f"{kind} {exc.smtp_code}") from None
        raise MailNotSent(f"{kind} {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise MailNotSent(type(exc).__name__) from None
