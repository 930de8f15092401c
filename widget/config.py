"""Every ``WIDGET_*`` setting: its name, default, type and meaning, in one list.

``load_config`` fills ``app.config`` from that list, then from the environment
(``app.config.from_prefixed_env("WIDGET")``), then from ``test_config``, and finally
coerces each value to its declared type so the rest of the code can trust it.
The README's configuration table is generated from ``SETTINGS`` (see ``undersign config``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from .proxies import LOOPBACK, parse_trusted_proxies


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the setting."""


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(value)


def _to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    seconds = float(value)
    if not 0 < seconds < 3600:
        raise ValueError(f"expected seconds between 0 and 3600, got {value!r}")
    return seconds


def _to_str(value: Any) -> str:
    return "" if value is None else str(value)


def _to_limit(value: Any) -> str:
    """A rate limit in flask-limiter's syntax (``5/minute;50/day``), checked now."""
    from limits import parse_many

    text = _to_str(value).strip()
    try:
        if not parse_many(text):
            raise ValueError
    except ValueError:
        raise ValueError(f"expected a limit like 5/minute;50/day, got {text!r}") from None
    return text


def _to_positive_int(value: Any) -> int:
    number = _to_int(value)
    if number < 1:
        raise ValueError(f"expected a whole number of at least 1, got {value!r}")
    return number


def _to_non_negative_int(value: Any) -> int:
    number = _to_int(value)
    if number < 0:
        raise ValueError(f"expected a whole number of at least 0, got {value!r}")
    return number


PUBSUB_MODES = ("auto", "sharded", "classic")


def _to_pubsub(value: Any) -> str:
    mode = _to_str(value).strip().lower()
    if mode not in PUBSUB_MODES:
        raise ValueError(f"expected one of {', '.join(PUBSUB_MODES)}, got {value!r}")
    return mode


def _to_redis_url(value: Any) -> str:
    url = _to_str(value).strip()
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        # Not echoed: a mistyped URL may still carry a password.
        raise ValueError("must start with redis://, rediss:// or unix://")
    return url


def _to_origins(value: Any) -> tuple[str, ...]:
    """``"https://a.example, https://b.example"`` -> normalized tuple; ``"*"`` stays ``("*",)``."""
    if isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        items = str(value or "").split(",")
    origins: list[str] = []
    for item in items:
        origin = item.strip().rstrip("/")
        if not origin:
            continue
        if origin != "*" and not (origin.startswith("http://") or origin.startswith("https://")):
            raise ValueError(f"{origin!r} is not an origin like https://ally.example")
        if origin != "*" and "/" in origin.split("://", 1)[1]:
            raise ValueError(f"{origin!r} has a path; an origin is scheme://host[:port]")
        if origin != "*" and not _is_origin(origin):
            raise ValueError(f"{origin!r} is not an origin like https://ally.example")
        origins.append(origin.lower())
    return tuple(origins)


_HOST_NAME = re.compile(r"\.?[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def _is_origin(origin: str) -> bool:
    """scheme://host[:port] with a host name (ASCII, as browsers send it) or an IP."""
    parts = urlsplit(origin.lower())
    try:
        parts.port  # noqa: B018 - raises on a port that is no port
    except ValueError:
        return False
    host = parts.hostname or ""
    if parts.query or parts.fragment or parts.username or host.startswith("."):
        return False
    if _HOST_NAME.fullmatch(host):
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _to_hosts(value: Any) -> tuple[str, ...]:
    """``"sign.example.org, .example.net"`` -> host names (a leading dot: any subdomain)."""
    items = [str(v) for v in value] if isinstance(value, list | tuple) else str(value or "")
    hosts: list[str] = []
    for item in items.split(",") if isinstance(items, str) else items:
        host = item.strip().lower().rstrip(".")
        if not host:
            continue
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(
                f"{host!r} is not a host name like sign.example.org (no scheme, port or path)"
            )
        hosts.append(host)
    return tuple(hosts)


def _to_public_url(value: Any) -> str:
    url = _to_str(value).strip().rstrip("/")
    parts = urlsplit(url)
    # The service serves at the root of its host: a path, query or fragment here would end
    # up in the middle of every link it makes.
    if url and (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or not _is_origin(f"{parts.scheme}://{parts.netloc}")
    ):
        raise ValueError(f"{url!r} is not a base URL like https://sign.example.org (no path)")
    return url


def _to_smtp_url(value: Any) -> str:
    url = _to_str(value).strip()
    if not url:
        return ""
    # Not echoed: the URL carries the SMTP password.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("is not a URL like smtp://user:password@host:587") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("must be smtp://[user:password@]host[:port] or smtps://...")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("takes no path, query or fragment: smtp://[user:password@]host[:port]")
    return url


def _to_mail_from(value: Any) -> str:
    from email.utils import parseaddr

    text = _to_str(value).strip()
    if not text:
        return ""
    _, address = parseaddr(text)
    local, _, domain = address.rpartition("@")
    if not local or "." not in domain or any(c in text for c in "\r\n"):
        raise ValueError(f"{text!r} is not an address like Coalition <sign@example.org>")
    return text


@dataclass(frozen=True)
class Setting:
    """One ``WIDGET_<name>`` setting."""

    name: str
    default: Any
    convert: Callable[[Any], Any]
    doc: str

    @property
    def env(self) -> str:
        return f"WIDGET_{self.name}"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "REDIS_URL",
        "",
        _to_redis_url,
        "Redis to use (`redis://`, `rediss://`, `unix://`). Unset: start the embedded "
        "Redis under `WIDGET_DATA_DIR`.",
    ),
    Setting(
        "REDIS_CLUSTER",
        False,
        _to_bool,
        "Treat `WIDGET_REDIS_URL` as a Redis Cluster entry node.",
    ),
    Setting(
        "REDIS_WAIT_REPLICAS",
        0,
        _to_non_negative_int,
        "Acknowledge an endorsement (and a strike, unstrike or withdrawal) only once `WAIT` "
        "confirms this many replicas hold it; `0` does not wait. Recommended `1` on a Redis "
        "Cluster (see Scaling out).",
    ),
    Setting(
        "REDIS_WAIT_TIMEOUT_MS",
        500,
        _to_positive_int,
        "How long `WAIT` may take (milliseconds); past it the endorsement is answered 503 "
        "`not-durable` (a retry is a duplicate or a fresh count, never a double one).",
    ),
    Setting(
        "REDIS_PUBSUB",
        "auto",
        _to_pubsub,
        "How live counts travel: `sharded` (`SPUBLISH`/`SSUBSCRIBE`, Redis 7), `classic` "
        "(`PUBLISH`/`PSUBSCRIBE`), or `auto`: sharded on a Redis Cluster, classic otherwise.",
    ),
    Setting("DATA_DIR", "./var", _to_str, "Where the embedded Redis and the demo secret live."),
    Setting(
        "ALLOWED_ORIGINS",
        "",
        _to_origins,
        "Comma-separated allied origins (`https://ally.example`) allowed to embed the widget "
        "and call the API from browsers; `*` allows any.",
    ),
    Setting(
        "SECRET_KEY",
        "",
        _to_str,
        "Key for email HMACs, hashed client addresses and signed cookies, at least 32 "
        "characters. Required with `WIDGET_REDIS_URL`; the embedded mode generates one in "
        "the data dir.",
    ),
    Setting(
        "ADMIN_TOKEN",
        "",
        _to_str,
        "Operator bearer token for `/admin`, `/api/v1/admin` and `/metrics`, at least 32 "
        "characters (shorter is a startup error); unset refuses every admin request.",
    ),
    Setting(
        "ENDORSE_LIMIT",
        "5/minute;50/day",
        _to_limit,
        "Endorsements per client and statement (the `client` tier: an IPv4 address or an "
        "IPv6 /64), flask-limiter syntax.",
    ),
    Setting(
        "NETWORK_LIMIT",
        "30/minute;300/day",
        _to_limit,
        "Endorsements per network and statement (the `network` tier: IPv4 /24, IPv6 /48).",
    ),
    Setting(
        "SOURCE_LIMIT",
        "600/minute",
        _to_limit,
        "Endorsements per statement and allied source (the `source` tier).",
    ),
    Setting(
        "STATEMENT_LIMIT",
        "3000/minute",
        _to_limit,
        "Endorsements per statement, from everywhere (the `statement` tier).",
    ),
    Setting(
        "FORM_LIMIT",
        "1/minute",
        _to_limit,
        "Endorsements per client through the hosted page's no-JavaScript form, which solves "
        "no proof of work.",
    ),
    Setting(
        "POW",
        True,
        _to_bool,
        "Ask for an ALTCHA proof of work with each endorsement through the API (`off` for none).",
    ),
    Setting(
        "POW_COST",
        10000,
        _to_positive_int,
        "PBKDF2-SHA-256 iterations per attempt of the proof of work (ALTCHA's `cost`); a "
        "solver makes 16-48 attempts. Doubles while the statement surges.",
    ),
    Setting(
        "SURGE_FLOOR",
        30,
        _to_positive_int,
        "A statement or allied source surges only with more than this many endorsements in "
        "5 minutes (and more than 5 times its usual rate); see Surge alerts in the README.",
    ),
    Setting(
        "CHALLENGE_LIMIT",
        "30/minute",
        _to_limit,
        "Proof-of-work challenges one client may fetch (flask-limiter syntax).",
    ),
    Setting(
        "ADMIN_AUTH_LIMIT",
        "10/minute;100/hour",
        _to_limit,
        "Failed admin sign-ins and bearer-token checks (console, admin API, `/metrics`) "
        "allowed per client address; over it, every attempt from that client answers 429 "
        "(flask-limiter syntax).",
    ),
    Setting(
        "ADMIN_AUTH_GLOBAL_LIMIT",
        "60/minute",
        _to_limit,
        "The same failures allowed from all clients together; over it, every admin sign-in "
        "and bearer check answers 429 (signed-in consoles keep working).",
    ),
    Setting(
        "TRUSTED_PROXIES",
        LOOPBACK,
        parse_trusted_proxies,
        "Comma-separated addresses or networks (IPv4, IPv6) of the reverse proxies whose "
        "`X-Forwarded-For`/`-Proto`/`-Host`/`-Port` are believed; from anyone else they are "
        "ignored. Empty or `0`: none. (A bare number N, the old meaning, trusts loopback for "
        "up to N hops.)",
    ),
    Setting(
        "STATEMENTS_DIR",
        "",
        _to_str,
        "Extra folder of statement files; the bundled statements are always loaded, and a "
        "file whose id is already loaded is a startup error.",
    ),
    Setting(
        "PUBLIC_URL",
        "",
        _to_public_url,
        "Public base URL for the links the service hands out, scheme and host only "
        "(default: from the request). Its host is also an allowed `Host`.",
    ),
    Setting(
        "ALLOWED_HOSTS",
        "",
        _to_hosts,
        "Comma-separated host names the service answers to besides `WIDGET_PUBLIC_URL`'s "
        "(`.example.org` allows its subdomains). With either set, any other `Host` gets 400; "
        "with neither, every `Host` is accepted and links follow it.",
    ),
    Setting(
        "EVENTS_HEARTBEAT",
        15.0,
        _to_seconds,
        "Seconds between heartbeat comments on idle event streams (keeps proxies from "
        "closing them).",
    ),
    Setting(
        "EVENTS_MIN_INTERVAL",
        0.25,
        _to_seconds,
        "Least seconds between two count events of one statement; changes in between are "
        "coalesced and the last one is always sent.",
    ),
    Setting(
        "STREAMS_PER_CLIENT",
        50,
        _to_positive_int,
        "Live-count streams one client may hold open at once, across every process "
        "(an IPv4 address, or an IPv6 /64); more get 429.",
    ),
    Setting(
        "STREAMS_PER_WORKER",
        0,
        _to_non_negative_int,
        "Most live-count streams one gunicorn worker holds; 0 means its connection limit "
        "less a tenth (at least 10) kept for ordinary requests. More get 503.",
    ),
    Setting(
        "LOG_KEY",
        "",
        _to_str,
        "The transparency log's Ed25519 signing key, as a base64 32-byte seed (`undersign "
        "log-key --generate` makes one). Unset: the service makes one once and keeps it in "
        "Redis, encrypted with a key derived from `WIDGET_SECRET_KEY`.",
    ),
    Setting(
        "WITHDRAW_LIMIT",
        "10/minute;50/day",
        _to_limit,
        "Withdrawal attempts one client may make (flask-limiter syntax).",
    ),
    Setting(
        "CONFIRM_TTL",
        604800,
        _to_positive_int,
        'Seconds a confirmation link works (statements with `confirm = "email"`); the '
        "pending endorsement is gone after it.",
    ),
    Setting(
        "SMTP_URL",
        "",
        _to_smtp_url,
        "Where confirmation mail goes out: `smtp://user:password@host:587` (STARTTLS, "
        "required), `smtps://user:password@host:465` (TLS), or `smtp://host:25` (plain, "
        'for a relay on the same host or network). Required by `confirm = "email"`.',
    ),
    Setting(
        "MAIL_FROM",
        "",
        _to_mail_from,
        "The sender of confirmation mail (`Coalition <sign@example.org>`). Required by "
        '`confirm = "email"`.',
    ),
    Setting(
        "MAIL_RETRY_FOR",
        86400,
        _to_positive_int,
        "Seconds the worker keeps retrying a confirmation mail the SMTP server did not take "
        "(waits from 5 s doubling to an hour); then the mail and its pending endorsement "
        "are dropped.",
    ),
    Setting(
        "METRICS_PUBLIC",
        False,
        _to_bool,
        "Serve `/metrics` without the admin token.",
    ),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}

MAX_BODY_BYTES = 16 * 1024
# A guessable operator token defeats every other admin safeguard: refuse short ones.
ADMIN_TOKEN_MIN_LENGTH = 32
SECRET_KEY_MIN_LENGTH = 32


def _check_length(name: str, value: str, minimum: int, suggested_bytes: int) -> None:
    """A secret set shorter than ``minimum``: ``ConfigError`` giving its length, never it."""
    if value and len(value) < minimum:
        raise ConfigError(
            f"WIDGET_{name}: must be at least {minimum} characters, got {len(value)} "
            '(make one with: python -c "import secrets; '
            f'print(secrets.token_urlsafe({suggested_bytes}))")'
        )


def load_config(app: Flask, test_config: Mapping[str, Any] | None = None) -> None:
    """Fill and type-check ``app.config``; raise ``ConfigError`` naming a bad setting."""
    for setting in SETTINGS:
        app.config[setting.name] = setting.default
    app.config.from_prefixed_env("WIDGET")
    if test_config:
        app.config.update(test_config)
    for setting in SETTINGS:
        try:
            app.config[setting.name] = setting.convert(app.config[setting.name])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{setting.env}: {exc}") from exc
    # Email HMACs and address hashes are only as strong as the key, the console as its token.
    _check_length("SECRET_KEY", app.config["SECRET_KEY"], SECRET_KEY_MIN_LENGTH, 48)
    _check_length("ADMIN_TOKEN", app.config["ADMIN_TOKEN"], ADMIN_TOKEN_MIN_LENGTH, 32)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    hosts = trusted_hosts(app.config["PUBLIC_URL"], app.config["ALLOWED_HOSTS"])
    if hosts:
        app.config["TRUSTED_HOSTS"] = hosts
    app.config["DATA_DIR"] = str(Path(app.config["DATA_DIR"]).expanduser().resolve())
    if not app.config["SECRET_KEY"]:
        if app.config["REDIS_URL"] and not app.config.get("EMBEDDED_REDIS"):
            raise ConfigError(
                "WIDGET_SECRET_KEY is required when WIDGET_REDIS_URL is set "
                '(make one with: python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
        app.config["SECRET_KEY"] = demo_secret(Path(app.config["DATA_DIR"]))
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Strict")


# What a statement with ``confirm = "email"`` needs: a way to send mail, a sender, and a
# public URL for the link (never the Host header of a request: whoever sends it would
# choose where the link points).
CONFIRMATION_SETTINGS = ("SMTP_URL", "MAIL_FROM", "PUBLIC_URL")


def check_confirmation(config: Mapping[str, Any], confirming: list[str]) -> None:
    """A ``ConfigError`` naming the first missing setting when a statement confirms by
    email."""
    if not confirming:
        return
    for name in CONFIRMATION_SETTINGS:
        if not config.get(name):
            raise ConfigError(
                f"WIDGET_{name} is required: statement {confirming[0]!r} has "
                'confirm = "email" (see "Email confirmation" in the README)'
            )


# Always answered when a host list is in force: health checks and tools on the machine.
# (Werkzeug cannot match IPv6 literals in the list.)
LOCAL_HOSTS = ("localhost", "127.0.0.1")


def trusted_hosts(public_url: str, allowed_hosts: tuple[str, ...]) -> list[str]:
    """Flask's ``TRUSTED_HOSTS``: the public URL's host and the allowed hosts (empty: any)."""
    hosts = [*allowed_hosts]
    public_host = urlsplit(public_url).hostname if public_url else None
    if public_host:
        hosts.insert(0, public_host)
    if not hosts:
        return []
    return list(dict.fromkeys([*hosts, *LOCAL_HOSTS]))


def demo_secret(data_dir: Path) -> str:
    """The embedded mode's secret: made once, kept (0600) in the data dir, shared by workers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret_key"
    if not path.exists():
        # Write aside, then link into place: link fails if another worker won the race,
        # so every worker ends up reading the same complete secret.
        tmp = data_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    secret = path.read_text().strip()
    if not secret:
        raise ConfigError(f"{path} is empty; delete it to make a new secret")
    return secret
