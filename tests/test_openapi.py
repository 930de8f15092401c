"""The OpenAPI document is true: every public route is in it, and live answers match it.

A small strict checker validates live responses: every required field present, no field
the document does not name (unless it allows more), types, enums and constants.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import jsonschema_rs
import pytest
from checks import STATEMENT, endorsements_url, person
from conftest import ALLY
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import RedisServer
from werkzeug.test import TestResponse

from widget.store import Store
from widget.validation import COUNTRY_CODES, LETTER_PLANES, is_letter, letter_class

MakeApp = Callable[..., Flask]
DOC_URL = "/api/v1/openapi.json"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


# -- a strict little validator ------------------------------------------------------------------


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema


def check(doc: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> None:
    """Raise AssertionError naming the place where ``value`` breaks ``schema``."""
    schema = resolve(doc, schema)
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != const {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert any(TYPES[k](value) for k in kinds), f"{where}: {value!r} is not {kinds}"
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        missing = set(schema.get("required", [])) - set(value)
        assert not missing, f"{where}: missing required {sorted(missing)}"
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                check(doc, properties[key], item, f"{where}.{key}")
            elif isinstance(extra, dict):
                check(doc, extra, item, f"{where}.{key}")
            else:
                assert extra is True, f"{where}: undocumented field {key!r}"
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            check(doc, schema["items"], item, f"{where}[{index}]")
    if isinstance(value, str):
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), f"{where}: {value!r} !~ pattern"
        assert len(value) >= schema.get("minLength", 0), f"{where}: too short"
        assert len(value) <= schema.get("maxLength", len(value)), f"{where}: too long"
        if schema.get("format") == "date-time":
            datetime.fromisoformat(value)
        if schema.get("format") == "uri":
            assert re.match(r"^https?://[^/\s]+(/\S*)?$", value), f"{where}: {value!r} not a URI"
    if TYPES["number"](value) and "minimum" in schema:
        assert value >= schema["minimum"], f"{where}: {value} < {schema['minimum']}"


def test_checker_catches_what_it_should() -> None:
    doc: dict[str, Any] = {
        "components": {
            "schemas": {
                "T": {
                    "type": "object",
                    "required": ["a"],
                    "properties": {"a": {"type": "integer", "minimum": 0}},
                }
            }
        }
    }
    ref = {"$ref": "#/components/schemas/T"}
    check(doc, ref, {"a": 1})
    bad_values: list[Any] = [{}, {"a": "1"}, {"a": True}, {"a": -1}, {"a": 1, "b": 2}, []]
    for bad in bad_values:
        with pytest.raises(AssertionError):
            check(doc, ref, bad)


# -- the document and the routes --------------------------------------------------------------


@pytest.fixture
def doc(client: FlaskClient) -> dict[str, Any]:
    response = client.get(DOC_URL)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


def documented_route(rule: str) -> bool:
    if rule.startswith("/api/v1/admin"):
        return False
    return rule.startswith("/api/v1/") or rule == "/healthz"


def url_map_routes(app: Flask) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if documented_route(rule.rule):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            routes.setdefault(path, set()).update(
                m.lower() for m in (rule.methods or set()) - IGNORED_METHODS
            )
    return routes


def test_document_is_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["paths"]


def test_every_route_is_documented_and_every_documented_path_exists(
    app: Flask, doc: dict[str, Any]
) -> None:
    routes = url_map_routes(app)
    documented = {
        path: {m for m in item if m in {"get", "post", "put", "patch", "delete"}}
        for path, item in doc["paths"].items()
    }
    assert "/api/v1/statements/{statement_id}/endorsements" in routes  # the mapping works
    assert set(routes) == set(documented)
    for path, methods in routes.items():
        assert methods == documented[path], path


def test_every_reference_resolves_and_path_parameters_match(doc: dict[str, Any]) -> None:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    refs = list(walk(doc))
    assert refs
    for ref in refs:
        resolve(doc, {"$ref": ref})
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for operation in item.values():
            declared = {
                resolve(doc, p)["name"]
                for p in operation.get("parameters", [])
                if resolve(doc, p)["in"] == "path"
            }
            assert declared == names, path
            assert operation["responses"], path


# -- live answers match ---------------------------------------------------------------------------


def operation_of(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path) and method.lower() in item:
            operation: dict[str, Any] = item[method.lower()]
            return operation
    raise AssertionError(f"{method} {path} is not documented")


def assert_documented(
    doc: dict[str, Any], method: str, url: str, response: TestResponse
) -> dict[str, Any]:
    path = url.split("?")[0]
    responses = operation_of(doc, path, method)["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method} {path} answered {status}, not documented"
    documented = resolve(doc, responses[status])
    content = documented.get("content")
    if content is None:
        assert response.data == b"", f"{method} {path} {status} has an undocumented body"
        return {}
    assert response.mimetype in content, f"{method} {path} {status}: {response.mimetype}"
    body = response.get_json(force=True)
    check(doc, content[response.mimetype]["schema"], body, f"{method} {path} {status}")
    return dict(body)


def test_successful_answers_match_the_document(
    client: FlaskClient, doc: dict[str, Any], redis_client: Redis
) -> None:
    post_url = endorsements_url()

    def call(method: str, url: str, **kwargs: Any) -> dict[str, Any]:
        return assert_documented(doc, method, url, client.open(url, method=method, **kwargs))

    created = call("POST", post_url, json=person(1, country="KZ", public=True, source=ALLY))
    assert created["status"] == "counted"
    assert call("POST", post_url, json=person(1))["status"] == "duplicate"
    call("POST", post_url, json=person(2), headers={"Origin": ALLY})
    call("GET", "/api/v1/statements")
    call("GET", "/api/v1/statements?lang=ru")
    shown = call("GET", f"/api/v1/statements/{STATEMENT}")
    assert shown["open"] is True
    call("GET", f"/api/v1/statements/{STATEMENT}?lang=kk")
    call("GET", f"/api/v1/statements/{STATEMENT}/count")
    etag = client.get(f"/api/v1/statements/{STATEMENT}/count").headers["ETag"]
    call("GET", f"/api/v1/statements/{STATEMENT}/count", headers={"If-None-Match": etag})
    recent = call("GET", f"/api/v1/statements/{STATEMENT}/recent")
    assert len(recent["recent"]) == 2
    call("GET", "/healthz")
    call("GET", DOC_URL)


def test_problem_answers_match_the_document(
    make_app: MakeApp,
    doc: dict[str, Any],
    redis_client: Redis,
    redis_server: RedisServer,
) -> None:
    app = make_app()
    client = app.test_client()
    post_url = endorsements_url()
    show = f"/api/v1/statements/{STATEMENT}"
    evil = {"Origin": "https://evil.example"}

    def call(method: str, url: str, status: int, **kwargs: Any) -> dict[str, Any]:
        response = client.open(url, method=method, **kwargs)
        assert response.status_code == status, response.get_data(as_text=True)
        return assert_documented(doc, method, url, response)

    call("POST", post_url, 400, data=b"{", content_type="application/json")
    call("POST", post_url, 415, data=b"{}", content_type="text/plain")
    call("POST", post_url, 413, json=person(1, name="x" * 20000))
    errors = call("POST", post_url, 422, json={"name": ""})
    assert set(errors["errors"]) == {"name", "email", "consent"}
    call("POST", endorsements_url("missing"), 404, json=person(1))
    call("GET", "/api/v1/statements/missing", 404)
    call("GET", "/api/v1/statements/missing/count", 404)
    call("GET", "/api/v1/statements/missing/recent", 404)
    for url in ("/api/v1/statements", show, show + "/count", show + "/recent"):
        call("GET", url, 403, headers=evil)
    call("POST", post_url, 403, json=person(1), headers=evil)
    store: Store = app.extensions["undersign.store"]
    store.set_closed(STATEMENT, True)
    call("POST", post_url, 409, json=person(1))
    store.set_closed(STATEMENT, False)
    call("POST", post_url, 201, json=person(1))
    client = make_app(ENDORSE_LIMIT="1/minute").test_client()
    client.environ_base["REMOTE_ADDR"] = "198.51.100.7"  # a client with its quota whole
    call("POST", post_url, 201, json=person(2))
    limited = call("POST", post_url, 429, json=person(3))
    assert limited["retry_after"] >= 1

    redis_server.kill()
    try:
        for url in ("/api/v1/statements", show, show + "/count", show + "/recent", "/healthz"):
            call("GET", url, 503)
        call("POST", post_url, 503, json=person(3))
    finally:
        redis_server.start()


# -- the request rules, stated exactly ------------------------------------------------------


def test_the_letter_class_is_exactly_the_letters_the_api_counts() -> None:
    letters = re.compile(letter_class())
    for code in range(0x110000):
        char = chr(code)
        if code < LETTER_PLANES:
            assert bool(letters.fullmatch(char)) == is_letter(char), hex(code)
        else:
            assert unicodedata.category(char)[0] != "L", hex(code)


def test_the_country_enum_is_what_the_api_accepts(doc: dict[str, Any]) -> None:
    """The document refused "" and allowed "AA", the API the opposite (finding 16)."""
    country = doc["components"]["schemas"]["EndorsementRequest"]["properties"]["country"]
    assert None in country["enum"] and "" in country["enum"]
    assert "KZ" in country["enum"] and "kz" in country["enum"]
    assert "AA" not in country["enum"] and "Kz" not in country["enum"]
    assert len(country["enum"]) == 2 + 2 * len(COUNTRY_CODES)


FIELD_VALUES: dict[str, list[Any]] = {
    "name": [
        "Ana",
        "王小明",
        "محمد",
        "  Ana  ",
        "A" * 200,
        "A" * 201,
        " " + "A" * 199 + " ",
        "",
        "   ",
        "\u200b",
        "\u3164",
        "\uffa0",
        "\u115f",
        "\u037a",
        "\u3200",
        "12345",
        "!!!",
        "Ana\n",
        "Ana\tB",
        "\u202eAna",
        "Ana\u2028",
        "\x1cAna",
        "Z" + "\u0301" * 60,
        "\U0001d400",
        "\u00aaa",
        "ﬁ",
        "Ana\u200d",
        42,
        None,
        ["Ana"],
    ],
    "email": [
        "a@b.co",
        " a@b.co ",
        "\ta@b.co\n",
        "\x1ca@b.co\x1f",
        "a@b",
        "a b@c.de",
        "a@@b.co",
        "",
        "   ",
        "a\x00@b.co",
        "a@b.co\x00",
        "a@b..co",
        "x" * 64 + "@b.co",
        "x" * 65 + "@b.co",
        "a@" + "b" * 250 + ".co",
        " " * 10 + "a@b.co",
        "a@b.co\u2028",
        "\u202ea@b.co",
        "ä@ü.de",
        7,
        None,
    ],
    "country": ["KZ", "kz", "", None, "AA", "Kz", " KZ", "KAZ", 1, ["KZ"]],
    "source": ["", "https://ally.example", "x" * 300, "x" * 301, "a\nb", "\u2066", None, 3],
    "public": [True, False, None, "true", 1],
    "consent": [True, False, None, "true", 1],
}


@pytest.mark.parametrize("field", list(FIELD_VALUES))
def test_the_request_schema_accepts_exactly_what_the_api_accepts(
    client: FlaskClient, doc: dict[str, Any], redis_client: Redis, field: str
) -> None:
    """Checked with the validator schemathesis uses (jsonschema-rs), value by value."""
    validator = jsonschema_rs.validator_for(doc["components"]["schemas"]["EndorsementRequest"])
    for n, value in enumerate(FIELD_VALUES[field]):
        body = person(f"{field}{n}", **{field: value})
        response = client.post(endorsements_url(), json=body)
        accepted = response.status_code in (200, 201)
        assert accepted == validator.is_valid(body), (field, value, response.get_json())
