"""Whose ``X-Forwarded-*`` headers to believe: only the configured proxies'.

``WIDGET_TRUSTED_PROXIES`` lists the proxies by address or network (IPv4 and IPv6,
comma-separated; default loopback only). ``ForwardedMiddleware`` runs before anything
else in the app and rewrites the WSGI environ once:

* The direct peer (``REMOTE_ADDR``) is not a trusted proxy: every ``X-Forwarded-*``
  header is dropped, the peer is the client, scheme and host stay as they came.
* It is one: ``X-Forwarded-For`` is walked from the right, skipping trusted proxies; the
  first address that is not one is the client. ``X-Forwarded-Proto``, ``-Host`` and
  ``-Port`` (the value the nearest proxy wrote, the rightmost) set the scheme and host.

Either way the forwarded headers are removed, so nothing downstream (the count fast
path, Flask) can read an unchecked one. Gunicorn's own ``forwarded_allow_ips`` follows
the same list (``widget/gunicorn_conf.py``). A bare number (the old meaning: how many
proxies) is still accepted: ``0`` trusts none, ``N`` trusts loopback for up to N hops.

Nothing here imports Flask, so the gunicorn config can read the setting cheaply.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = "127.0.0.0/8,::1"
FORWARDED_HEADERS = (
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
)
_HOST = re.compile(r"(?:[a-z0-9.-]+|\[[a-f0-9:.]+\])(?::[0-9]{1,5})?", re.IGNORECASE)


@dataclass(frozen=True)
class TrustedProxies:
    """The proxies whose forwarded headers count, and how many hops to follow at most."""

    networks: tuple[IPNetwork, ...]
    max_hops: int | None = None  # None: as many as the chain has trusted entries

    def __str__(self) -> str:
        return ",".join(str(n) if n.num_addresses > 1 else str(n.network_address) for n in self)

    def __iter__(self) -> Iterator[IPNetwork]:
        return iter(self.networks)

    def trusts(self, address: str | IPAddress | None) -> bool:
        ip = address if isinstance(address, IPAddress) else parse_address(address)
        return ip is not None and any(ip in network for network in self.networks)


def parse_trusted_proxies(value: Any) -> TrustedProxies:
    """``"10.0.0.1, 172.16.0.0/12, ::1"`` (or a list, or a bare hop count) -> ``TrustedProxies``.

    Raises ``ValueError`` with a message naming the bad entry.
    """
    if isinstance(value, TrustedProxies):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected proxy addresses or networks, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        hops = int(value)
        if hops < 0:
            raise ValueError(f"a hop count cannot be negative, got {value!r}")
        if hops == 0:
            return TrustedProxies(())
        return TrustedProxies(parse_trusted_proxies(LOOPBACK).networks, max_hops=hops)
    if isinstance(value, float):
        raise ValueError(f"expected proxy addresses or networks, got {value!r}")
    items: Iterable[Any] = value if isinstance(value, list | tuple) else str(value).split(",")
    networks: list[IPNetwork] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IP address or network (like 10.0.0.1 or 172.16.0.0/12)"
            ) from None
    return TrustedProxies(tuple(networks))


def parse_address(value: str | None) -> IPAddress | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:5678``, ``[::1]:80``, ``::1``)."""
    if not value:
        return None
    text = value.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _last(value: str | None) -> str:
    """The rightmost entry of a comma list: what the nearest proxy wrote."""
    return (value or "").rsplit(",", 1)[-1].strip()


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ForwardedMiddleware:
    """WSGI middleware applying ``X-Forwarded-*`` only from trusted proxies."""

    def __init__(self, wsgi_app: WSGIApp, proxies: TrustedProxies) -> None:
        self.wsgi_app = wsgi_app
        self.proxies = proxies

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        forwarded = {name: environ.pop(name) for name in FORWARDED_HEADERS if name in environ}
        peer = environ.get("REMOTE_ADDR")
        if forwarded and self.proxies.trusts(peer):
            self._apply(environ, forwarded)
        return self.wsgi_app(environ, start_response)

    def client_address(self, peer: str, forwarded_for: str | None) -> str:
        """Walk the chain from the right past trusted proxies; the first other is the client."""
        client = peer
        chain = reversed((forwarded_for or "").split(","))
        for hops, entry in enumerate(chain):
            if self.proxies.max_hops is not None and hops >= self.proxies.max_hops:
                break
            address = parse_address(entry)
            if address is None:
                break  # garbage: keep the last address a trusted proxy vouched for
            client = str(address)
            if not self.proxies.trusts(address):
                break
        return client

    def _apply(self, environ: dict[str, Any], forwarded: dict[str, str]) -> None:
        environ["REMOTE_ADDR"] = self.client_address(
            environ["REMOTE_ADDR"], forwarded.get("HTTP_X_FORWARDED_FOR")
        )
        proto = _last(forwarded.get("HTTP_X_FORWARDED_PROTO")).lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto
        host = _last(forwarded.get("HTTP_X_FORWARDED_HOST"))
        if host and _HOST.fullmatch(host):
            environ["HTTP_HOST"] = host
        port = _last(forwarded.get("HTTP_X_FORWARDED_PORT"))
        if port.isdigit() and 0 < int(port) < 65536:
            name = _host_name(environ.get("HTTP_HOST") or environ.get("SERVER_NAME", ""))
            environ["HTTP_HOST"] = f"{name}:{port}"
            environ["SERVER_PORT"] = port


def _host_name(host: str) -> str:
    """``example.org:8080`` -> ``example.org``; ``[::1]:80`` -> ``[::1]``."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.split(":", 1)[0]


def init_app(app: Any) -> None:
    """Wrap ``app.wsgi_app`` (last, so it runs first) with the configured proxies."""
    app.wsgi_app = ForwardedMiddleware(app.wsgi_app, app.config["TRUSTED_PROXIES"])
