"""Block lists: the rules (abuse.py), the endorse path's 403, the admin API, the no-JS form,
metrics and what reaches Redis, against a real Redis."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from checks import assert_problem, endorsements_url, person, store_state
from conftest import ADMIN_TOKEN, SECRET, STATEMENT
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import RedisServer
from test_admin import session_csrf, sign_in
from test_embed import post_form, token_of
from test_metrics import sample
from test_privacy import dump_redis

from widget.abuse import (
    Block,
    BlockCache,
    BlockError,
    BlockList,
    email_domain_block,
    network_block,
    parse_rfc3339,
)
from widget.privacy import derive_key

BEARER = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BLOCKS = "/api/v1/admin/blocks"
KEY = derive_key(SECRET, "blocks")
MakeApp = Callable[..., Flask]


def compiled(*records: dict[str, Any]) -> BlockList:
    return BlockList.build((Block.from_record(str(i), r) for i, r in enumerate(records)), KEY)


def net(raw: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "network", **network_block(raw, KEY), **extra}


# -- the rules -----------------------------------------------------------------------------


def test_networks_are_truncated_or_hashed_never_kept_as_given() -> None:
    assert network_block("203.0.113.77/24", KEY) == {
        "version": 4,
        "prefix": 24,
        "network": "203.0.113.0",
    }
    assert network_block("2001:db8:1:2::9/48", KEY) == {
        "version": 6,
        "prefix": 48,
        "network": "2001:db8:1::",
    }
    single = network_block("203.0.113.77", KEY)
    assert set(single) == {"version", "prefix", "hash"} and single["prefix"] == 32
    assert "203.0.113" not in str(single)
    assert len(single["hash"]) == 32
    # a /25 or a /64 may be one household: hashed too, keyed (another key, another hash)
    assert "hash" in network_block("203.0.113.128/25", KEY)
    assert "hash" in network_block("2001:db8::/64", KEY)
    assert network_block("2001:db8::/64", KEY) != network_block("2001:db8::/64", b"other")
    # an IPv4-mapped IPv6 network is the IPv4 network it maps
    assert network_block("::ffff:198.51.100.0/120", KEY) == network_block("198.51.100.0/24", KEY)
    for bad in ("", "nonsense", "300.1.1.1/24", "10.0.0.0/33", "0.0.0.0/0", "10.0.0.0/7", "::/8"):
        with pytest.raises(BlockError):
            network_block(bad, KEY)
    with pytest.raises(BlockError):
        network_block(None, KEY)


def test_email_domains_are_normalised_like_the_endorse_path() -> None:
    assert email_domain_block(" Spam.Example ") == "spam.example"
    assert email_domain_block("@spam.example") == "spam.example"
    assert email_domain_block("*.spam.example") == "spam.example"
    assert email_domain_block("bücher.example") == "xn--bcher-kva.example"
    assert email_domain_block("googlemail.com") == "gmail.com"  # the same mailboxes
    for bad in ("", "a@b.example", "localhost", "no spaces.example", "x/y.example"):
        with pytest.raises(BlockError):
            email_domain_block(bad)


def test_matching_networks_v4_v6_and_hashed() -> None:
    blocks = compiled(net("203.0.113.0/24"), net("2001:db8:5::/48"), net("198.51.100.7"))
    assert blocks.match_address("203.0.113.200") is not None
    assert blocks.match_address("::ffff:203.0.113.9") is not None  # mapped IPv4 client
    assert blocks.match_address("203.0.114.1") is None
    assert blocks.match_address("2001:db8:5:ffff::1") is not None
    assert blocks.match_address("2001:db8:6::1") is None
    assert blocks.match_address("198.51.100.7") is not None
    assert blocks.match_address("198.51.100.8") is None
    assert blocks.match_address("not an address") is None
    assert blocks.match_address("") is None
    assert not compiled() and compiled().match_address("203.0.113.1") is None


def test_matching_domains_and_their_subdomains() -> None:
    blocks = compiled({"kind": "email_domain", "domain": "spam.example"})
    assert blocks.match_domain("spam.example") is not None
    assert blocks.match_domain("mx.eu.spam.example") is not None
    assert blocks.match_domain("notspam.example") is None
    assert blocks.match_domain("example") is None
    assert blocks.match_domain("") is None


def test_expired_blocks_stop_applying_at_their_expiry() -> None:
    now = time.time()
    blocks = compiled(
        net("203.0.113.0/24", expires=int(now) + 10),
        {"kind": "email_domain", "domain": "spam.example", "expires": int(now) + 10},
    )
    assert blocks.match_address("203.0.113.5", now=now) is not None
    assert blocks.match_address("203.0.113.5", now=now + 10) is None
    assert blocks.match_domain("spam.example", now=now + 9) is not None
    assert blocks.match_domain("spam.example", now=now + 10) is None


def test_block_cache_reads_once_per_refresh() -> None:
    reads: list[int] = []
    record = net("203.0.113.0/24")

    def fetch() -> dict[str, dict[str, Any]]:
        reads.append(1)
        return {"a": record}

    cache = BlockCache(fetch, KEY)
    for _ in range(50):
        assert cache.current().match_address("203.0.113.1") is not None
    assert len(reads) == 1
    cache.invalidate()
    cache.current()
    assert len(reads) == 2


def test_rfc3339() -> None:
    assert parse_rfc3339("2026-12-01T10:00:00Z") == 1796119200
    assert parse_rfc3339("2026-12-01T15:00:00+05:00") == 1796119200
    assert parse_rfc3339("2026-12-01t10:00:00.5z") == 1796119200.5
    for bad in ("2026-12-01", "2026-12-01T10:00:00", "tomorrow", "2026-02-30T00:00:00Z", 5, None):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)


# -- the endorse path ------------------------------------------------------------------------


@pytest.fixture
def proxied(make_app: MakeApp) -> FlaskClient:
    """A client whose address comes from X-Forwarded-For (one trusted proxy)."""
    return make_app(TRUSTED_PROXIES=1).test_client()


def endorse_from(client: FlaskClient, address: str, n: int | str, **extra: Any) -> Any:
    return client.post(
        endorsements_url(), json=person(n, **extra), headers={"X-Forwarded-For": address}
    )


def add_block(client: FlaskClient, **body: Any) -> dict[str, Any]:
    response = client.post(BLOCKS, json=body, headers=BEARER)
    assert response.status_code == 201, response.get_data(as_text=True)
    data: dict[str, Any] = response.get_json()
    return data


def test_blocked_network_gets_403_and_unblocking_restores_it(
    proxied: FlaskClient, redis_client: Redis
) -> None:
    assert endorse_from(proxied, "203.0.113.5", 1).status_code == 201
    block = add_block(proxied, network="203.0.113.0/24", reason="a farm")
    before = store_state(redis_client)
    metrics_before = proxied.get("/metrics", headers=BEARER).get_data(as_text=True)
    refused = endorse_from(proxied, "203.0.113.77", 2, country="KZ")
    problem = assert_problem(refused, 403)
    assert problem["type"] == "urn:undersign:problem:blocked"
    assert problem["blocked"] == "network"
    assert "a farm" not in refused.get_data(as_text=True)  # the reason is the operator's
    # a duplicate from the blocked network is refused too, and so is an invalid body
    assert endorse_from(proxied, "203.0.113.5", 1).status_code == 403
    assert store_state(redis_client) == before
    metrics = proxied.get("/metrics", headers=BEARER).get_data(as_text=True)
    labels = 'outcome="rejected",reason="blocked"'
    blocked = sample(metrics, "undersign_endorsements_total", labels)
    assert blocked - sample(metrics_before, "undersign_endorsements_total", labels) == 2
    # another network is not affected
    assert endorse_from(proxied, "198.51.100.5", 3).status_code == 201

    removed = proxied.delete(f"{BLOCKS}/{block['id']}", headers=BEARER)
    assert removed.status_code == 200 and removed.get_json() == {"id": block["id"], "removed": True}
    assert endorse_from(proxied, "203.0.113.77", 2).status_code == 201
    assert store_state(redis_client).count == 3


def test_single_address_and_ipv6_blocks(proxied: FlaskClient) -> None:
    add_block(proxied, network="198.51.100.7")
    add_block(proxied, network="2001:db8:aa::/48")
    assert endorse_from(proxied, "198.51.100.7", 1).status_code == 403
    assert endorse_from(proxied, "198.51.100.8", 2).status_code == 201
    assert endorse_from(proxied, "2001:db8:aa:1::5", 3).status_code == 403
    assert endorse_from(proxied, "2001:db8:ab::5", 4).status_code == 201


def test_blocked_email_domain_and_subdomains(proxied: FlaskClient, redis_client: Redis) -> None:
    add_block(proxied, email_domain="Farm.Example", reason="throwaways")
    for n, email in enumerate(("a@farm.example", "b@MX.Farm.Example", " c@farm.example ")):
        problem = assert_problem(endorse_from(proxied, "192.0.2.1", n, email=email), 403)
        assert problem["blocked"] == "email_domain"
    assert endorse_from(proxied, "192.0.2.1", 9, email="d@notfarm.example").status_code == 201
    assert store_state(redis_client).count == 1


def test_blocks_apply_at_once_in_this_process_and_within_seconds_in_others(
    make_app: MakeApp,
) -> None:
    one = make_app(TRUSTED_PROXIES=1).test_client()
    other = make_app(TRUSTED_PROXIES=1).test_client()
    assert endorse_from(other, "203.0.113.1", "warm").status_code == 201  # caches "no blocks"
    add_block(one, network="203.0.113.0/24")
    assert endorse_from(one, "203.0.113.2", 1).status_code == 403
    deadline = time.monotonic() + BlockCache.TTL + 2
    while endorse_from(other, "203.0.113.3", f"x{time.monotonic()}").status_code != 403:
        assert time.monotonic() < deadline, "the other process never applied the block"
        time.sleep(0.2)


def test_block_expiry_applies_even_while_cached(proxied: FlaskClient, redis_client: Redis) -> None:
    # Whole seconds: at least 3 s away, time enough for the refusal below.
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 4))
    add_block(proxied, network="203.0.113.0/24", expires=expires)
    assert endorse_from(proxied, "203.0.113.9", 1).status_code == 403
    time.sleep(max(0.0, parse_rfc3339(expires) - time.time()) + 0.05)
    assert endorse_from(proxied, "203.0.113.9", 1).status_code == 201
    assert proxied.get(BLOCKS, headers=BEARER).get_json() == {"blocks": []}
    assert redis_client.hlen("us:blocks") == 0  # listing forgot it


def test_no_js_form_says_blocked_in_the_visitor_language(make_app: MakeApp) -> None:
    client = make_app(TRUSTED_PROXIES=1).test_client()
    add_block(client, email_domain="example.org")
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    response = post_form(client, token, lang="ru")
    assert response.status_code == 403
    assert "Организаторы не принимают подписи" in response.get_data(as_text=True)
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 0


# -- the admin API ---------------------------------------------------------------------------


def test_block_listing_shows_hashed_networks_as_such(client: FlaskClient) -> None:
    add_block(client, network="203.0.113.0/24", reason="farm")
    add_block(client, network="203.0.113.77", expires="2099-01-01T00:00:00+01:00")
    add_block(client, email_domain="spam.example")
    listed = client.get(BLOCKS, headers=BEARER).get_json()["blocks"]
    assert len(listed) == 3
    by_label = {b["label"]: b for b in listed}
    assert set(by_label) == {"203.0.113.0/24", "IPv4 hashed /32", "spam.example"}
    hashed = by_label["IPv4 hashed /32"]
    assert hashed["network"] == "hashed /32" and hashed["hashed"] is True
    assert hashed["expires"] == "2098-12-31T23:00:00Z"
    assert "203.0.113.77" not in str(listed)
    plain = by_label["203.0.113.0/24"]
    assert set(plain) == {
        "id",
        "network",
        "ip_version",
        "hashed",
        "email_domain",
        "label",
        "reason",
        "by",
        "created",
        "expires",
    }
    assert plain["reason"] == "farm" and plain["by"] == "token" and plain["expires"] is None
    assert re.fullmatch(r"[0-9a-f]{8}", plain["id"])
    assert by_label["spam.example"]["email_domain"] == "spam.example"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"network"}),
        ({"network": "203.0.113.0/24", "email_domain": "a.example"}, {"network"}),
        ({"network": "nonsense"}, {"network"}),
        ({"network": "0.0.0.0/0"}, {"network"}),
        ({"email_domain": "not a domain"}, {"email_domain"}),
        ({"network": "203.0.113.0/24", "expires": "soon"}, {"expires"}),
        ({"network": "203.0.113.0/24", "expires": "2001-01-01T00:00:00Z"}, {"expires"}),
        ({"network": "203.0.113.0/24", "reason": "x" * 201}, {"reason"}),
        ({"network": "203.0.113.0/24", "reason": 5}, {"reason"}),
        ([], {"body"}),
    ],
)
def test_bad_blocks_are_422_and_change_nothing(
    client: FlaskClient, redis_client: Redis, body: Any, fields: set[str]
) -> None:
    response = client.post(BLOCKS, json=body, headers=BEARER)
    problem = assert_problem(response, 422)
    assert problem["type"].endswith("invalid-block")
    assert set(problem["errors"]) == fields
    assert redis_client.exists("us:blocks") == 0


def test_block_requests_that_are_not_json(client: FlaskClient) -> None:
    assert_problem(client.post(BLOCKS, data="network=x", headers=BEARER), 415)
    bad = client.post(BLOCKS, data="{", headers=BEARER, content_type="application/json")
    assert_problem(bad, 400)


def test_unknown_block_is_404(client: FlaskClient) -> None:
    problem = assert_problem(client.delete(f"{BLOCKS}/deadbeef", headers=BEARER), 404)
    assert problem["type"].endswith("block-not-found")


def test_console_block_changes_need_the_csrf_header(client: FlaskClient) -> None:
    sign_in(client)
    assert client.post(BLOCKS, json={"network": "203.0.113.0/24"}).status_code == 401
    csrf = {"X-CSRF-Token": session_csrf(client)}
    made = client.post(BLOCKS, json={"network": "203.0.113.0/24"}, headers=csrf)
    assert made.status_code == 201 and made.get_json()["by"] == "console"
    block_id = made.get_json()["id"]
    assert client.delete(f"{BLOCKS}/{block_id}").status_code == 401
    assert client.get(BLOCKS).get_json()["blocks"][0]["id"] == block_id
    assert client.delete(f"{BLOCKS}/{block_id}", headers=csrf).status_code == 200
    assert client.get(BLOCKS).get_json() == {"blocks": []}


def test_redis_holds_no_client_address_of_a_blocked_attempt(
    proxied: FlaskClient, redis_client: Redis, redis_server: RedisServer
) -> None:
    add_block(proxied, network="198.51.100.7", reason="one address")
    add_block(proxied, network="2001:db8:77::1234")
    for n, address in enumerate(("198.51.100.7", "2001:db8:77::1234", "203.0.113.99")):
        endorse_from(proxied, address, n)
    dump = dump_redis(redis_server)
    for address in ("198.51.100", "2001:db8:77", "203.0.113"):
        assert address not in dump, address
