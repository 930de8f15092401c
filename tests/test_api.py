"""The API v1 contract as the issue writes it: fields, caching, recent endorsers, CORS, sources."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from checks import (
    STATEMENT,
    assert_counted,
    assert_problem,
    cors_headers,
    endorsements_url,
    person,
    seen_hmacs,
    store_state,
)
from conftest import ALLY
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis

from widget.statements import load_registry

URL = endorsements_url()
SHOW = f"/api/v1/statements/{STATEMENT}"
COUNT = f"{SHOW}/count"
RECENT = f"{SHOW}/recent"
MakeApp = Callable[..., Flask]
SUMMARY_FIELDS = {"id", "title", "excerpt", "count", "goal", "url"}
SHOW_FIELDS = {"id", "title", "excerpt", "count", "goal", "languages", "lang", "url", "open"}
SHOW_OPTIONAL = {"original_lang", "author", "opens", "closes"}


# -- reads ------------------------------------------------------------------------------------


def test_list_statements(client: FlaskClient) -> None:
    client.post(URL, json=person(1))
    response = client.get("/api/v1/statements")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert list(body) == ["statements"]
    (item,) = body["statements"]
    assert set(item) == SUMMARY_FIELDS
    statement = load_registry().statements[STATEMENT]
    assert item == {
        "id": STATEMENT,
        "title": statement.original.title,
        "excerpt": statement.original.excerpt,
        "count": 1,
        "goal": statement.goal,
        "url": f"http://localhost/s/{STATEMENT}",
    }


def test_show_statement(client: FlaskClient) -> None:
    client.post(URL, json=person(1))
    client.post(URL, json=person(2))
    body = client.get(SHOW).get_json()
    assert SHOW_FIELDS <= set(body) <= SHOW_FIELDS | SHOW_OPTIONAL
    assert body["id"] == STATEMENT
    assert body["count"] == 2
    assert body["languages"] == ["en"]
    assert body["lang"] == "en"
    assert body["open"] is True
    assert body["url"] == f"http://localhost/s/{STATEMENT}"
    assert isinstance(body["goal"], int) and body["goal"] > 0
    assert body["excerpt"] and body["title"]


def test_public_url_is_used_for_links(make_app: MakeApp) -> None:
    client = make_app(PUBLIC_URL="https://sign.example.org/").test_client()
    assert client.get(SHOW).get_json()["url"] == f"https://sign.example.org/s/{STATEMENT}"
    listed = client.get("/api/v1/statements").get_json()["statements"]
    assert listed[0]["url"] == f"https://sign.example.org/s/{STATEMENT}"


def test_count_with_etag_and_cache_control(client: FlaskClient) -> None:
    response = client.get(COUNT)
    assert response.status_code == 200
    assert response.get_json() == {"id": STATEMENT, "count": 0}
    etag = response.headers["ETag"]
    cache_control = response.cache_control
    assert cache_control.public
    assert cache_control.max_age is not None and 0 < cache_control.max_age <= 5
    assert "Origin" in response.vary  # a shared cache must keep allies' CORS answers apart
    assert "Origin" in client.get(RECENT).vary

    unchanged = client.get(COUNT, headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.data == b""
    assert unchanged.headers["ETag"] == etag
    assert unchanged.cache_control.public

    client.post(URL, json=person(1))
    changed = client.get(COUNT, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json() == {"id": STATEMENT, "count": 1}
    assert changed.headers["ETag"] != etag
    assert client.get(COUNT, headers={"If-None-Match": "*"}).status_code == 304
    # If-None-Match compares weakly (RFC 9110 13.1.2): a weak validator matches too.
    now = changed.headers["ETag"]
    assert client.get(COUNT, headers={"If-None-Match": f"W/{now}"}).status_code == 304
    assert client.get(COUNT, headers={"If-None-Match": f"W/{etag}"}).status_code == 200


def test_count_is_exact_right_after_a_write(client: FlaskClient) -> None:
    for n in range(1, 6):
        posted = client.post(URL, json=person(n)).get_json()
        assert_counted(posted, n)
        assert client.get(COUNT).get_json()["count"] == n


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


# -- endorse ----------------------------------------------------------------------------------


def test_endorse_counted_then_duplicate(client: FlaskClient, redis_client: Redis) -> None:
    first = client.post(URL, json=person(1, country="kz"))
    assert first.status_code == 201
    assert_counted(first.get_json(), 1)
    assert first.headers["Cache-Control"] == "no-store"
    again = client.post(URL, json=person(1))
    assert again.status_code == 200
    assert again.get_json() == {"status": "duplicate", "count": 1}
    assert redis_client.hgetall("us:{dongelek-ystel}:by_country") == {b"KZ": b"1"}


def test_endorsement_record(client: FlaskClient, redis_client: Redis) -> None:
    client.post(URL, json=person(1, name="  Ana Lopez ", country="KZ", public=True))
    rows: Any = redis_client.xrange("us:{dongelek-ystel}:log")
    ((_, fields),) = rows
    # The record entry: source, public flag, log index, and the id of its private record.
    assert set(fields) == {b"s", b"p", b"i", b"r"}
    assert (fields[b"s"], fields[b"p"], fields[b"i"]) == (b"direct", b"1", b"0")
    # The private record, erasable on withdrawal: email HMAC (16 bytes), country, name.
    (who,) = list(redis_client.scan_iter("us:{dongelek-ystel}:who:*"))
    private: Any = redis_client.hget(who, fields[b"r"])
    assert private[16:] == b"KZAna Lopez"
    (hmac,) = seen_hmacs(redis_client)
    assert bytes.fromhex(hmac) == private[:16]
    # Every key of the statement shares its hash tag (one Redis Cluster slot).
    # (The day's salt for client hashes is one key for every statement.)
    keys = [k.decode() for k in cast(list[bytes], redis_client.keys("us:*"))]
    # service-wide keys: the day's salt, and the log key every process loads at startup
    keys = [k for k in keys if not k.startswith("us:salt:") and k != "us:logkey"]
    assert keys and all(k.startswith("us:{dongelek-ystel}:") for k in keys)


# -- recent -----------------------------------------------------------------------------------


def test_recent_shows_only_first_names_of_public_endorsers(client: FlaskClient) -> None:
    client.post(URL, json=person(1, name="Ana Maria Lopez", country="KZ", public=True))
    client.post(URL, json=person(2, name="Bolat Serikov", country="KZ", public=False))
    client.post(URL, json=person(3, name="Claire Dubois"))  # public not given: hidden
    client.post(URL, json=person(4, name="Dana", country="DE", public=True))
    response = client.get(RECENT)
    assert response.status_code == 200
    assert response.cache_control.public
    body = response.get_json()
    assert body["id"] == STATEMENT
    recent = body["recent"]
    # Newest first; a one-word name shows only its initial.
    assert [r["name"] for r in recent] == ["D.", None, None, "Ana"]
    # Countries only of those who chose to be shown.
    assert [r["country"] for r in recent] == ["DE", None, None, "KZ"]
    assert all(set(r) == {"name", "country", "time"} for r in recent)
    assert all(r["time"].endswith("+00:00") for r in recent)
    text = response.get_data(as_text=True)
    for hidden in ("Maria", "Lopez", "Bolat", "Serikov", "Claire", "Dubois", "@", "person"):
        assert hidden not in text


def test_recent_times_are_to_the_minute_and_hidden_endorsers_have_no_country(
    client: FlaskClient, redis_client: Redis
) -> None:
    """/recent published the exact second and every endorser's country (finding 8)."""
    log = f"us:{{{STATEMENT}}}:log"
    # 2025-11-25T06:20:07.123Z and 06:21:59.999Z, as the endorse script records them.
    for entry_id, public in (("1764051607123-0", "0"), ("1764051719999-0", "1")):
        fields = {"h": "x" * 64, "n": "Ana Lopez", "c": "KZ", "s": "direct", "p": public}
        redis_client.xadd(log, fields, id=entry_id)  # type: ignore[arg-type]
    recent = client.get(RECENT).get_json()["recent"]
    assert recent == [
        {"name": "Ana", "country": "KZ", "time": "2025-11-25T06:21:00+00:00"},
        {"name": None, "country": None, "time": "2025-11-25T06:20:00+00:00"},
    ]
    page = client.get(f"/s/{STATEMENT}?lang=en").get_data(as_text=True)
    assert "Kazakhstan" not in page.split('id="recent"')[1].split("Ana, Kazakhstan")[1]
    assert ":07" not in page and ":59" not in page


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Ana Maria Lopez", "Ana"),
        ("Smith,John", "Smith"),  # comma-separated
        ("Lopez, Ana", "Lopez"),
        ("Jean-Luc Picard", "Jean"),
        ("王小明", "王."),  # CJK: no separator, only the first character
        ("ジョン・スミス", "ジョン"),  # katakana middle dot separates
        ("محمد علي", "محمد"),  # Arabic
        ("محمدعلي", "م."),
        ("Айгерим Султан", "Айгерим"),  # Cyrillic
        ("Айгерим", "\u0410."),
        ("Dana", "D."),  # a single word
        ("O'Brien", "O."),  # an apostrophe joins, it does not separate
        ("Ñ\u0303\u0301ina Ruiz", "Ñ\u0303\u0301ina"),
        ("E\u0301mile", "\u00c9."),  # composed
        ("Bartholomew-Maximilianus Smith", "Bartholomew"),
        ("Wolfeschlegelsteinhausenbergerdorff Hubert", "Wolfeschlegelsteinha"),  # 20 max
        ("\uff21\uff2e\uff21\u3000\uff2c\uff2f\uff30\uff25\uff3a", "ANA"),  # fullwidth, NFKC
        ("1984 Ana", "Ana"),  # the first word with a letter
    ],
)
def test_first_name_shown(client: FlaskClient, name: str, shown: str) -> None:
    """Names with no space were shown whole (finding 9)."""
    assert client.post(URL, json=person(1, name=name, public=True)).status_code == 201
    (recent,) = client.get(RECENT).get_json()["recent"]
    assert recent["name"] == shown
    assert len(recent["name"]) <= 20


def test_a_name_that_nfkc_lengthens_is_stored_at_most_200_characters(
    app: Flask, client: FlaskClient
) -> None:
    """U+FDFA is one character, and eighteen after NFKC: the limit holds for what is kept."""
    name = "\ufdfa" * 200
    assert client.post(URL, json=person(1, name=name)).status_code == 201
    (entry,), _ = app.extensions["undersign.store"].page(STATEMENT)
    assert 0 < len(entry.name) <= 200 and entry.name.startswith("\u0635\u0644\u0649")


def test_recent_is_limited_to_five(client: FlaskClient) -> None:
    for n in range(8):
        client.post(URL, json=person(n, name=f"N{n} Surname", public=True))
    recent = client.get(RECENT).get_json()["recent"]
    assert [r["name"] for r in recent] == ["N7", "N6", "N5", "N4", "N3"]


# -- CORS -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/statements", SHOW, COUNT, RECENT])
def test_cors_allows_allied_origin_on_reads(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"Origin": ALLY})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLY
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "ETag" in response.headers["Access-Control-Expose-Headers"] or path != COUNT


def test_cors_preflight_for_allied_origin(client: FlaskClient) -> None:
    response = client.options(
        URL,
        headers={
            "Origin": ALLY,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ALLY
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"].lower() == "content-type"
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_cors_allied_post_is_counted_with_header(client: FlaskClient, redis_client: Redis) -> None:
    response = client.post(URL, json=person(1), headers={"Origin": ALLY})
    assert response.status_code == 201
    assert response.headers["Access-Control-Allow-Origin"] == ALLY
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
    assert store_state(redis_client).by_source == {ALLY: 1}


def test_cors_errors_to_allies_are_readable(make_app: MakeApp) -> None:
    client = make_app(ENDORSE_LIMIT="1/minute").test_client()
    client.post(URL, json=person(1), headers={"Origin": ALLY})
    limited = client.post(URL, json=person(2), headers={"Origin": ALLY})
    assert_problem(limited, 429)
    assert limited.headers["Access-Control-Allow-Origin"] == ALLY
    invalid = client.post(SHOW + "/endorsements", json={}, headers={"Origin": ALLY})
    assert invalid.headers["Access-Control-Allow-Origin"] == ALLY


def test_cors_denies_other_origins(client: FlaskClient, redis_client: Redis) -> None:
    for method in ("GET", "POST", "OPTIONS"):
        response = client.open(
            URL if method != "GET" else COUNT,
            method=method,
            json=person(1),
            headers={
                "Origin": "https://not-an-ally.example",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert_problem(response, 403)
        assert cors_headers(response) == {}
    assert store_state(redis_client).count == 0


def test_own_origin_needs_no_allowlist(client: FlaskClient, redis_client: Redis) -> None:
    response = client.post(URL, json=person(1), headers={"Origin": "http://localhost"})
    assert response.status_code == 201
    assert "Access-Control-Allow-Origin" not in response.headers
    assert store_state(redis_client).by_source == {"direct": 1}


def test_own_origin_on_an_internationalised_host(client: FlaskClient, redis_client: Redis) -> None:
    # Browsers send the Punycode form of the host in Origin, as they do in Host.
    host = "xn--bcher-kva.example"
    response = client.post(URL, json=person(1), headers={"Host": host, "Origin": f"http://{host}"})
    assert response.status_code == 201, response.get_json()
    assert store_state(redis_client).by_source == {"direct": 1}


def test_public_url_origin_is_own(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(PUBLIC_URL="https://sign.example.org").test_client()
    response = client.post(URL, json=person(1), headers={"Origin": "https://sign.example.org"})
    assert response.status_code == 201


def test_star_allowlist_admits_any_origin(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(ALLOWED_ORIGINS="*").test_client()
    origin = "https://anyone.example"
    read = client.get(COUNT, headers={"Origin": origin})
    assert read.status_code == 200
    assert read.headers["Access-Control-Allow-Origin"] in ("*", origin)
    preflight = client.options(
        URL, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] in ("*", origin)
    posted = client.post(URL, json=person(1), headers={"Origin": origin})
    assert posted.status_code == 201
    assert store_state(redis_client).by_source == {origin: 1}


def test_empty_allowlist_refuses_every_foreign_origin(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app(ALLOWED_ORIGINS="").test_client()
    assert_problem(client.get(COUNT, headers={"Origin": ALLY}), 403)
    assert client.get(COUNT).status_code == 200  # no Origin: a server or curl


# -- sources ----------------------------------------------------------------------------------


def test_source_from_body_only_when_allowlisted(client: FlaskClient, redis_client: Redis) -> None:
    # The widget iframe is same-origin and reports the allied page it sits on.
    own = {"Origin": "http://localhost"}
    client.post(URL, json=person(1, source=ALLY + "/news/2026/statement?x=1"), headers=own)
    client.post(URL, json=person(2, source="HTTPS://ALLY.EXAMPLE"), headers=own)
    client.post(URL, json=person(3, source="https://evil.example"), headers=own)
    client.post(URL, json=person(4, source="javascript:alert(1)"), headers=own)
    client.post(URL, json=person(5, source="http://localhost"), headers=own)
    client.post(URL, json=person(6, source=ALLY))  # no Origin at all: a server-side caller
    assert store_state(redis_client).by_source == {ALLY: 3, "direct": 3}


def test_origin_wins_over_claimed_source(make_app: MakeApp, redis_client: Redis) -> None:
    other = "https://second-ally.example"
    client = make_app(ALLOWED_ORIGINS=f"{ALLY},{other}").test_client()
    client.post(URL, json=person(1, source=other), headers={"Origin": ALLY})
    assert store_state(redis_client).by_source == {ALLY: 1}


# -- rate limit -------------------------------------------------------------------------------


def test_reads_are_not_throttled_by_the_endorsement_limit(
    make_app: MakeApp, redis_client: Redis
) -> None:
    client = make_app(ENDORSE_LIMIT="1/minute").test_client()
    assert client.post(URL, json=person(1)).status_code == 201
    assert client.post(URL, json=person(2)).status_code == 429
    for _ in range(10):
        for path in ("/api/v1/statements", SHOW, COUNT, RECENT, "/healthz"):
            assert client.get(path).status_code == 200, path
    assert client.post(URL, json=person(3)).status_code == 429
    assert store_state(redis_client).count == 1
