"""Every error in the issue's list: RFC 9457 problem+json, and no count ever moves."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from checks import (
    STATEMENT,
    StoreState,
    assert_counted,
    assert_problem,
    cors_headers,
    endorsements_url,
    person,
    store_state,
    stored_names,
)
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import RedisServer

from widget.store import Store

URL = endorsements_url()
MakeApp = Callable[..., Flask]


@pytest.fixture
def seeded(client: FlaskClient, redis_client: Redis) -> Iterator[StoreState]:
    """One endorsement already counted; yields the state, then checks nothing moved."""
    assert client.post(URL, json=person("seed")).status_code == 201
    before = store_state(redis_client)
    assert before.count == 1
    yield before
    assert store_state(redis_client) == before


# -- 400, 413, 415 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b'{"name": "Ana",', b"", b"{'name': 'Ana'}", b'{"name": "Ana",}', b"\xff\xfe{", b"nope"],
    ids=["truncated", "empty", "single-quotes", "trailing-comma", "bad-utf8", "word"],
)
def test_malformed_json_is_400(client: FlaskClient, seeded: StoreState, raw: bytes) -> None:
    response = client.post(URL, data=raw, content_type="application/json")
    body = assert_problem(response, 400)
    assert body["type"].endswith(":malformed-json")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        None,
    ],
)
def test_non_json_content_type_is_415(
    client: FlaskClient, seeded: StoreState, content_type: str | None
) -> None:
    data = '{"name": "Ana", "email": "ana@example.org", "consent": true}'
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(URL, data=data, headers=headers)
    body = assert_problem(response, 415)
    assert "application/json" in body["detail"]


def test_json_suffix_content_type_is_accepted(client: FlaskClient, redis_client: Redis) -> None:
    response = client.post(
        URL, json=person(1), headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status_code == 201
    assert store_state(redis_client).count == 1


def test_body_over_16_kib_is_413(client: FlaskClient, seeded: StoreState) -> None:
    big = person("big", name="x" * (16 * 1024))
    response = client.post(URL, json=big)
    assert_problem(response, 413)


def test_body_just_under_16_kib_is_read(client: FlaskClient, seeded: StoreState) -> None:
    # Within the size limit the body is parsed and judged on its fields (name too long).
    body = person("big", name="x" * (15 * 1024))
    response = client.post(URL, json=body)
    assert set(assert_problem(response, 422)["errors"]) == {"name"}


# -- 422 --------------------------------------------------------------------------------------

INVALID: dict[str, tuple[Any, set[str]]] = {
    "consent-missing": ({"name": "Ana", "email": "ana@example.org"}, {"consent"}),
    "consent-false": (person("a", consent=False), {"consent"}),
    "consent-string": (person("a", consent="true"), {"consent"}),
    "consent-one": (person("a", consent=1), {"consent"}),
    "email-missing": ({"name": "Ana", "consent": True}, {"email"}),
    "email-no-at": (person("a", email="ana.example.org"), {"email"}),
    "email-no-domain-dot": (person("a", email="ana@example"), {"email"}),
    "email-space": (person("a", email="ana smith@example.org"), {"email"}),
    "email-two-ats": (person("a", email="ana@x@example.org"), {"email"}),
    "email-control": (person("a", email="ana\x00@example.org"), {"email"}),
    "email-too-long": (person("a", email="a" * 250 + "@example.org"), {"email"}),
    "email-not-text": (person("a", email=["ana@example.org"]), {"email"}),
    "name-empty": (person("a", name=""), {"name"}),
    "name-blank": (person("a", name="   \t "), {"name"}),
    "name-missing": ({"email": "ana@example.org", "consent": True}, {"name"}),
    "name-null": (person("a", name=None), {"name"}),
    "name-number": (person("a", name=42), {"name"}),
    "name-201-chars": (person("a", name="x" * 201), {"name"}),
    "name-nul": (person("a", name="Ana\x00"), {"name"}),
    "name-inner-tab": (person("a", name="Ana\tLopez"), {"name"}),
    "name-newline": (person("a", name="Ana\nBob"), {"name"}),
    "name-escape": (person("a", name="Ana\x1b[31m"), {"name"}),
    "name-delete": (person("a", name="Ana\x7f"), {"name"}),
    "name-bidi-override": (person("a", name="\u202eanA"), {"name"}),
    "name-bidi-isolate": (person("a", name="\u2067Ana\u2069"), {"name"}),
    "name-line-separator": (person("a", name="Ana\u2028Bob"), {"name"}),
    "name-lone-surrogate": (person("a", name="Ana\ud800"), {"name"}),
    # Invisible or letterless names (finding 10).
    "name-zero-width-space": (person("a", name="\u200b"), {"name"}),
    "name-zero-width-mix": (person("a", name="\u200b\u200c\u2060\ufeff"), {"name"}),
    "name-hangul-filler": (person("a", name="\u3164"), {"name"}),
    "name-halfwidth-filler": (person("a", name="\uffa0\uffa0"), {"name"}),
    "name-hangul-choseong-filler": (person("a", name="\u115f\u1160"), {"name"}),
    "name-tags": (person("a", name="\U000e0041\U000e0062"), {"name"}),
    "name-digits": (person("a", name="12345"), {"name"}),
    "name-punctuation": (person("a", name="!!! ..."), {"name"}),
    "name-emoji": (person("a", name="\U0001f600"), {"name"}),
    "name-marks-only": (person("a", name="\u0301" * 40), {"name"}),
    "name-ypogegrammeni": (person("a", name="\u037a"), {"name"}),  # NFKC: space + mark
    "name-201-with-spaces": (person("a", name=" " + "x" * 199 + " "), {"name"}),
    "country-unknown": (person("a", country="XX"), {"country"}),
    "country-aa": (person("a", country="AA"), {"country"}),
    "country-mixed-case": (person("a", country="Kz"), {"country"}),
    "country-padded": (person("a", country=" KZ "), {"country"}),
    "country-number": (person("a", country=7), {"country"}),
    "country-name": (person("a", country="Kazakhstan"), {"country"}),
    "source-long": (person("a", source="https://" + "a" * 300), {"source"}),
    "source-control": (person("a", source="https://ally.example\n"), {"source"}),
    "public-not-bool": (person("a", public="yes"), {"public"}),
    "everything": ({}, {"name", "email", "consent"}),
    "body-list": ([person("a")], {"body"}),
    "body-string": ("Ana, ana@example.org", {"body"}),
    "body-null": (None, {"body"}),
    "body-number": (42, {"body"}),
    "body-true": (True, {"body"}),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_endorsement_is_422_naming_each_field(
    client: FlaskClient, seeded: StoreState, case: str
) -> None:
    payload, fields = INVALID[case]
    response = client.post(URL, data=json.dumps(payload), content_type="application/json")
    body = assert_problem(response, 422)
    assert set(body["errors"]) == fields
    assert all(isinstance(m, str) and m for m in body["errors"].values())
    for field in fields:
        assert field in body["detail"]


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("  Ana Lopez  ", "Ana Lopez"),
        ("An\u200ba\u00ad Lo\u200dpez\ufe0f", "Ana Lopez"),  # invisible code points go
        # NFKC: fullwidth letters and space
        ("\uff21\uff2e\uff21\u3000\uff2c\uff2f\uff30\uff25\uff3a", "ANA LOPEZ"),
        ("\U0001d400\U0001d427\U0001d41a", "Ana"),  # mathematical bold letters
        ("ﬁona", "fiona"),  # the ligature
        ("E\u0301mile", "\u00c9mile"),  # composed
        ("\u0301\u0301Ana", "Ana"),  # marks with nothing to sit on
        ("\u3164Ana\u3164", "Ana"),
        ("王小明", "王小明"),
        ("محمد علي", "محمد علي"),
    ],
)
def test_names_are_stored_clean(
    client: FlaskClient, redis_client: Redis, name: str, stored: str
) -> None:
    assert client.post(URL, json=person(1, name=name)).status_code == 201
    assert stored_names(redis_client) == [stored]


def test_zalgo_names_keep_at_most_four_marks_per_character(
    client: FlaskClient, redis_client: Redis
) -> None:
    zalgo = "Z" + "\u0336\u0317\u0353\u0301" * 10 + "oe" + "\u0489" * 40
    assert client.post(URL, json=person(1, name=zalgo, public=True)).status_code == 201
    (name,) = stored_names(redis_client)
    assert unicodedata.is_normalized("NFC", name)
    bases = re.findall(r"(\w)(\W*)", unicodedata.normalize("NFD", name))
    assert [base for base, _ in bases] == ["Z", "o", "e"]
    assert [len(marks) for _, marks in bases] == [4, 0, 4]
    # Vietnamese and Hebrew with their diacritics are untouched.
    for n, text in enumerate(["Nguyễn Thị Ánh", "שָׁלוֹם"], start=2):
        assert client.post(URL, json=person(n, name=text)).status_code == 201
    assert stored_names(redis_client)[1:] == [
        "Nguyễn Thị Ánh",
        unicodedata.normalize("NFC", "שָׁלוֹם"),
    ]


def test_name_of_exactly_200_chars_is_accepted(client: FlaskClient, redis_client: Redis) -> None:
    response = client.post(URL, json=person("long", name="x" * 200))
    assert response.status_code == 201
    assert store_state(redis_client).count == 1


# -- 404, 405 ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/statements/no-such-statement/endorsements"),
        ("GET", "/api/v1/statements/no-such-statement"),
        ("GET", "/api/v1/statements/no-such-statement/count"),
        ("GET", "/api/v1/statements/no-such-statement/recent"),
        ("GET", "/api/v1/nothing-here"),
    ],
)
def test_unknown_statement_is_404(
    client: FlaskClient, seeded: StoreState, method: str, path: str
) -> None:
    response = client.open(path, method=method, json=person("a"))
    assert_problem(response, 404)


def test_wrong_method_is_405_with_allow(client: FlaskClient, seeded: StoreState) -> None:
    response = client.delete(URL)
    assert_problem(response, 405)
    assert "POST" in response.headers["Allow"]


# -- 409 --------------------------------------------------------------------------------------


def test_statement_closed_by_operator_is_409(
    app: Flask, client: FlaskClient, seeded: StoreState
) -> None:
    store: Store = app.extensions["undersign.store"]
    store.set_closed(STATEMENT, True, by="test")
    try:
        body = assert_problem(client.post(URL, json=person("late")), 409)
        assert body["count"] == 1
        # A duplicate of an earlier endorser is refused the same way (nothing changes).
        assert_problem(client.post(URL, json=person("seed")), 409)
        assert client.get(f"/api/v1/statements/{STATEMENT}").get_json()["open"] is False
    finally:
        store.set_closed(STATEMENT, False)
    assert client.get(f"/api/v1/statements/{STATEMENT}").get_json()["open"] is True


def test_reopened_statement_counts_again(
    app: Flask, client: FlaskClient, redis_client: Redis
) -> None:
    store: Store = app.extensions["undersign.store"]
    store.set_closed(STATEMENT, True)
    assert client.post(URL, json=person(1)).status_code == 409
    store.set_closed(STATEMENT, False)
    assert_counted(client.post(URL, json=person(1)).get_json(), 1)


def test_statement_outside_its_schedule_is_409(
    make_app: MakeApp, redis_client: Redis, tmp_path: Path
) -> None:
    (tmp_path / "later.md").write_text(
        '+++\ntitle = "Later"\ngoal = 10\nopens = 2999-01-01\n+++\n\nNot yet.\n'
    )
    client = make_app(STATEMENTS_DIR=str(tmp_path)).test_client()
    assert client.post(URL, json=person(1)).status_code == 201
    before = store_state(redis_client, "later")
    response = client.post(endorsements_url("later"), json=person(2))
    body = assert_problem(response, 409)
    assert body["type"].endswith(":statement-closed")
    assert store_state(redis_client, "later") == before
    assert before.count == 0
    assert store_state(redis_client).count == 1


# -- 403 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://ally.example", "https://ally.example:444", "null"],
)
@pytest.mark.parametrize("method", ["POST", "GET", "OPTIONS"])
def test_foreign_origin_is_403_without_cors_headers(
    client: FlaskClient, seeded: StoreState, origin: str, method: str
) -> None:
    headers = {"Origin": origin}
    if method == "OPTIONS":
        headers["Access-Control-Request-Method"] = "POST"
        headers["Access-Control-Request-Headers"] = "content-type"
    path = URL if method != "GET" else f"/api/v1/statements/{STATEMENT}/count"
    response = client.open(path, method=method, json=person("x"), headers=headers)
    body = assert_problem(response, 403)
    assert body["type"].endswith(":origin-not-allowed")
    assert cors_headers(response) == {}


# -- 429 --------------------------------------------------------------------------------------


def test_rate_limited_is_429_with_retry_after(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(ENDORSE_LIMIT="2/minute").test_client()
    assert client.post(URL, json=person(1)).status_code == 201
    assert client.post(URL, json=person(2)).status_code == 201
    before = store_state(redis_client)
    for n in (3, 4):
        response = client.post(URL, json=person(n))
        body = assert_problem(response, 429)
        retry_after = int(response.headers["Retry-After"])
        # A sliding-window counter may ask for up to two windows (it keeps counts, not
        # the time of each endorsement).
        assert 1 <= retry_after <= 120
        assert body["retry_after"] == retry_after
    assert store_state(redis_client) == before
    assert before.count == 2


def test_rate_limit_with_two_windows(make_app: MakeApp, redis_client: Redis) -> None:
    client = make_app(ENDORSE_LIMIT="10/minute;3/day").test_client()
    statuses = [client.post(URL, json=person(n)).status_code for n in range(5)]
    assert statuses == [201, 201, 201, 429, 429]
    response = client.post(URL, json=person(9))
    assert int(response.headers["Retry-After"]) > 3600  # the day window is what blocks
    assert store_state(redis_client).count == 3


# -- 503 --------------------------------------------------------------------------------------


def test_redis_unreachable_is_503(
    client: FlaskClient, redis_server: RedisServer, redis_client: Redis
) -> None:
    assert client.post(URL, json=person(1)).status_code == 201
    before = store_state(redis_client)
    redis_server.kill()
    started = time.monotonic()
    for method, path in [
        ("POST", URL),
        ("GET", f"/api/v1/statements/{STATEMENT}/count"),
        ("GET", f"/api/v1/statements/{STATEMENT}"),
        ("GET", "/api/v1/statements"),
        ("GET", "/healthz"),
    ]:
        response = client.open(path, method=method, json=person(2))
        body = assert_problem(response, 503)
        assert body["type"].endswith(":store-unavailable")
        assert response.headers["Retry-After"] == "5"
    assert time.monotonic() - started < 5  # fails fast, does not hang
    redis_server.start()
    assert store_state(redis_client) == before
    assert_counted(client.post(URL, json=person(2)).get_json(), 2)


# -- duplicates -------------------------------------------------------------------------------


def test_same_email_in_other_case_and_spacing_is_a_duplicate(
    client: FlaskClient, redis_client: Redis
) -> None:
    first = client.post(URL, json=person("a", email="Ana.Lopez@Example.org"))
    assert first.status_code == 201
    assert_counted(first.get_json(), 1)
    before = store_state(redis_client)
    for variant in (
        "ana.lopez@example.org",
        "ANA.LOPEZ@EXAMPLE.ORG",
        "  Ana.Lopez@Example.org  ",
        "\tana.lopez@EXAMPLE.org\n",
    ):
        response = client.post(URL, json=person("b", email=variant, country="KZ", public=True))
        assert response.status_code == 200
        assert response.get_json() == {"status": "duplicate", "count": 1}
    assert store_state(redis_client) == before
    assert before == StoreState(count=1, log_length=1, seen=1, by_source={"direct": 1})
    # A different address is a different person.
    other = client.post(URL, json=person("c", email="ana.lopez2@example.org"))
    assert_counted(other.get_json(), 2)
