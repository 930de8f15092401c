"""No raw email and no IP address anywhere in Redis; proxies and per-client limits.

After a run of endorsements through the real gunicorn (behind a trusted proxy on
loopback, so the client address comes from ``X-Forwarded-For``), every key and every
value of every type in every database is dumped and searched.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from checks import STATEMENT, assert_problem, endorsements_url, person, store_state
from conftest import ALLY, CLUSTER, SECRET, gunicorn_env
from flask import Flask
from redis import Redis
from servers import Gunicorn, RedisServer

from widget.abuse import CLIENT_PREFIXES, NETWORK_PREFIXES, network_of, networks_of
from widget.privacy import DAY, SALT_GRACE, DailySalt
from widget.store import Store

pytestmark = pytest.mark.server

CLIENT_V4 = "203.0.113.77"
CLIENT_V6 = "2001:db8::77"
OTHER = "198.51.100.9"
EMAILS = [
    "Canary.Alpha+widget@Example.ORG",
    "canary-bravo@mail.example.net",
    "CANARY_CHARLIE@EXAMPLE.COM",
    "canary.delta@sub.example.org",
    "canary.echo@example.org",
]
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
MakeApp = Callable[..., Flask]


@pytest.fixture(scope="module")
def proxied(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    env = gunicorn_env(
        redis_server, WIDGET_TRUSTED_PROXIES="127.0.0.1", WIDGET_ENDORSE_LIMIT="5/minute"
    )
    server = Gunicorn(env, workers=2, folder=tmp_path_factory.mktemp("proxied"))
    server.start()
    yield server
    server.stop()


def text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return " ".join(f"{text(k)}={text(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return " ".join(text(v) for v in value)
    return str(value)


def dump_redis(redis_server: RedisServer) -> str:
    """Every key and value of every type, in every database, as one text."""
    # Each master of a cluster holds its own part (database 0 only).
    places = [(port, 0) for port in redis_server.masters()] if CLUSTER else []
    if not CLUSTER:
        keyspace: Any = redis_server.client().info("keyspace")
        places = [(redis_server.port, int(name[2:])) for name in sorted(keyspace)]
    assert places, "Redis is empty: the run stored nothing?"
    parts: list[str] = []
    seen_types: set[str] = set()
    for port, db in places:
        client = Redis(host="127.0.0.1", port=port, db=db)
        for key in client.scan_iter(count=1000):
            kind = text(client.type(key))
            seen_types.add(kind)
            value: Any
            if kind == "string":
                value = client.get(key)
            elif kind == "hash":
                value = client.hgetall(key)
            elif kind == "stream":
                value = client.xrange(key)
            elif kind == "set":
                value = client.smembers(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            else:
                raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
            parts.append(f"db{db} {kind} {text(key)} :: {text(value)}")
    assert {"string", "hash", "stream"} <= seen_types
    return "\n".join(parts)


def client_hash(redis: Redis, address: str) -> str:
    """How the limiter keys a client today: its address (or IPv6 /64) under the day's salt."""
    return DailySalt(Store(redis).daily_salt).hash(network_of(address, CLIENT_PREFIXES))


def post(server: Gunicorn, body: dict[str, Any], client_ip: str, **headers: str) -> Any:
    headers = {"X-Forwarded-For": client_ip, **headers}
    return requests.post(server.url + endorsements_url(), json=body, headers=headers, timeout=10)


def test_no_email_or_ip_anywhere_in_redis(
    proxied: Gunicorn, redis_server: RedisServer, redis_client: Redis
) -> None:
    # Five from one client (the limit), through an ally, with countries and public names.
    for n, email in enumerate(EMAILS):
        body = person(n, email=email, country="KZ", public=n % 2 == 0)
        response = post(proxied, body, CLIENT_V4, Origin=ALLY)
        assert response.status_code == 201, proxied.log()
    limited = post(proxied, person(9, email="canary.foxtrot@example.org"), CLIENT_V4)
    assert_problem(limited, 429)
    # Another client over IPv6, claiming an allied source from the widget.
    ok = post(proxied, person(10, email="canary.golf@example.org", source=ALLY), CLIENT_V6)
    assert ok.status_code == 201
    # A duplicate in other case, and a refused body, from a third client.
    again = post(proxied, person(11, email="  " + EMAILS[0].upper()), OTHER)
    assert again.json()["status"] == "duplicate"
    assert post(proxied, person(12, email="canary.hotel@@example.org"), OTHER).status_code == 422
    assert store_state(redis_client).count == 6

    dump = dump_redis(redis_server)
    lowered = dump.lower()
    everything = [*EMAILS, "canary.foxtrot@example.org", "canary.golf@example.org"]
    for email in everything:
        assert email.lower() not in lowered, email
        assert email.split("@")[0].lower() not in lowered, email
    assert "canary" not in lowered  # not even the local parts or a stray fragment
    for address in (CLIENT_V4, CLIENT_V6, OTHER, "127.0.0.1", "::1"):
        assert address not in dump, address
    assert IPV4.findall(dump) == []
    assert "2001:db8" not in lowered

    # The limiter did see the forwarded client, and keeps it only as a keyed hash.
    assert client_hash(redis_client, CLIENT_V4) in dump
    assert client_hash(redis_client, CLIENT_V6) in dump
    assert client_hash(redis_client, "127.0.0.1") not in dump
    # The log keeps what the issue allows: names, countries, sources.
    assert "Person 0" in dump and "KZ" in dump and ALLY in dump

    # Nor do the server's logs carry client addresses or emails.
    log = proxied.log()
    for leak in (CLIENT_V4, CLIENT_V6, OTHER, "canary"):
        assert leak not in log.lower()


def test_limit_applies_per_forwarded_client(proxied: Gunicorn, redis_client: Redis) -> None:
    first, second = "198.51.100.1", "198.51.100.2"
    for n in range(5):
        assert post(proxied, person(f"a{n}"), first).status_code == 201
    assert_problem(post(proxied, person("a5"), first), 429)
    for n in range(5):
        assert post(proxied, person(f"b{n}"), second).status_code == 201
    assert_problem(post(proxied, person("b5"), second), 429)
    assert store_state(redis_client).count == 10


def test_only_the_trusted_hop_counts(proxied: Gunicorn, redis_client: Redis) -> None:
    # The client is the last address in the chain that is not a trusted proxy; anything
    # the client wrote before it is not believed, so changing it does not buy a new quota.
    for n in range(5):
        spoofed = f"10.0.0.{n}, 198.51.100.3"
        assert post(proxied, person(f"c{n}"), spoofed).status_code == 201
    assert_problem(post(proxied, person("c5"), "10.0.0.99, 198.51.100.3"), 429)
    assert store_state(redis_client).count == 5


def test_without_trusted_proxies_forwarded_for_is_ignored(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app(TRUSTED_PROXIES=0, ENDORSE_LIMIT="2/minute").test_client()
    url = endorsements_url()
    for n, forwarded in enumerate(["198.51.100.4", "198.51.100.5"]):
        response = client.post(url, json=person(n), headers={"X-Forwarded-For": forwarded})
        assert response.status_code == 201
    refused = client.post(url, json=person(3), headers={"X-Forwarded-For": "198.51.100.6"})
    assert_problem(refused, 429)
    dump = " ".join(k.decode() for k in redis_client.scan_iter())
    assert client_hash(redis_client, "127.0.0.1") in dump  # the real peer address, hashed
    assert client_hash(redis_client, "198.51.100.4") not in dump


def test_trusted_proxy_in_process(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(TRUSTED_PROXIES="127.0.0.1", ENDORSE_LIMIT="1/minute").test_client()
    url = endorsements_url()
    for n in range(3):
        headers = {"X-Forwarded-For": f"198.51.100.{20 + n}"}
        assert client.post(url, json=person(n), headers=headers).status_code == 201
    assert store_state(redis_client).count == 3
    again = client.post(url, json=person(9), headers={"X-Forwarded-For": "198.51.100.20"})
    assert again.status_code == 429


def test_email_hmac_is_keyed_and_bound_to_the_statement() -> None:
    from widget.privacy import email_hmac

    one = email_hmac(SECRET, STATEMENT, " Ana@Example.org ")
    assert one == email_hmac(SECRET, STATEMENT, "ana@example.org")
    assert one != email_hmac(SECRET + "x", STATEMENT, "ana@example.org")
    assert one != email_hmac(SECRET, "other-statement", "ana@example.org")
    assert len(one) == 64 and "ana" not in one


def test_client_hashes_use_a_random_salt_that_ends_with_the_day(redis_client: Redis) -> None:
    store = Store(redis_client)
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    for key in redis_client.keys("us:salt:*"):
        redis_client.delete(key)
    today = DailySalt(store.daily_salt)
    first = today.hash("203.0.113.9", now)
    assert first == DailySalt(store.daily_salt).hash("203.0.113.9", now)  # shared by all
    assert [k.decode() for k in redis_client.scan_iter("us:salt:*")] == [f"us:salt:{day}"]
    midnight = (now // DAY + 1) * DAY
    expires_at = time.time() + redis_client.pttl(f"us:salt:{day}") / 1000
    assert abs(expires_at - (midnight + SALT_GRACE)) < 5  # gone soon after midnight
    assert SECRET not in redis_client.get(f"us:salt:{day}").decode()
    # Not derived from the secret: the same secret and address, a new salt, a new hash.
    redis_client.delete(f"us:salt:{day}")
    assert DailySalt(store.daily_salt).hash("203.0.113.9", now) != first
    # Tomorrow is another salt, so today's hashes cannot be matched tomorrow.
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(now + DAY))
    assert today.hash("203.0.113.9", now + DAY) != first
    assert redis_client.exists(f"us:salt:{tomorrow}")


def test_a_lost_salt_is_put_back_not_replaced(redis_client: Redis) -> None:
    """Workers that cached the day's salt agree again after Redis lost it (a flush)."""
    store = Store(redis_client)
    one, two = DailySalt(store.daily_salt), DailySalt(store.daily_salt)
    assert one.hash("203.0.113.9") == two.hash("203.0.113.9")
    redis_client.delete(*redis_client.keys("us:salt:*"))
    one._checked = 0.0  # one's recheck is due; two still trusts its copy for a while
    assert one.hash("203.0.113.9") == two.hash("203.0.113.9")


def test_ipv6_clients_are_keyed_by_their_slash_64(redis_client: Redis) -> None:
    salt = DailySalt(Store(redis_client).daily_salt)
    one = salt.hash(network_of("2001:db8:1:2:aaaa::1", CLIENT_PREFIXES))
    assert one == salt.hash(network_of("2001:db8:1:2:ffff::9", CLIENT_PREFIXES))
    assert one != salt.hash(network_of("2001:db8:1:3::1", CLIENT_PREFIXES))
    assert salt.hash(network_of("::ffff:198.51.100.7", CLIENT_PREFIXES)) == salt.hash(
        network_of("198.51.100.7", CLIENT_PREFIXES)
    )


def test_limiters_keep_counters_not_request_times(make_app: MakeApp, redis_client: Redis) -> None:
    """No rate-limit record holds the time of a request (which could be matched with an
    endorsement's): every limiter key is a counter, in every limit the service keeps."""
    client = make_app(FORM_LIMIT="2/minute", CHALLENGE_LIMIT="2/minute", POW=True).test_client()
    for _ in range(3):
        client.get(f"/api/v1/statements/{STATEMENT}/challenge")
        client.post(f"/s/{STATEMENT}", data={"token": "x", "name": "A", "email": "a@b.org"})
        client.get("/api/v1/admin/statements", headers={"Authorization": "Bearer wrong"})
    client.post(endorsements_url(), json=person(1, altcha="not solved"))
    make_app(POW=False).test_client().post(endorsements_url(), json=person(2))
    kinds = {k.decode(): redis_client.type(k).decode() for k in redis_client.scan_iter()}
    limiter = {k: v for k, v in kinds.items() if "limits" in k.lower() or ":rl:" in k}
    assert any(":rl:" in k for k in limiter) and any("LIMITS" in k for k in limiter), kinds
    assert set(limiter.values()) == {"string"}, limiter
    for key in limiter:
        value = redis_client.get(key)
        assert value is not None and value.isdigit(), (key, value)  # a count, nothing else


def test_networks_are_written_as_ipaddress_writes_them() -> None:
    # The tiers' keys are keyed hashes of these strings: their form must not drift.
    rng = random.Random(7)
    for _ in range(2000):
        v4 = ipaddress.IPv4Address(rng.getrandbits(32))
        v6 = ipaddress.IPv6Address(rng.getrandbits(128))
        for ip in (v4, v6, ipaddress.IPv6Address(f"::ffff:{v4}")):
            plain = (
                ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
            )
            wanted = tuple(
                str(
                    ipaddress.ip_network(
                        f"{plain}/{p[0] if plain.version == 4 else p[1]}", strict=False
                    )
                )
                for p in (CLIENT_PREFIXES, NETWORK_PREFIXES)
            )
            assert networks_of(str(ip), CLIENT_PREFIXES, NETWORK_PREFIXES) == wanted
    assert networks_of("unknown", CLIENT_PREFIXES, NETWORK_PREFIXES) == ("unknown", "unknown")
