"""Request bodies and odd requests: the size cap on chunked uploads (under the real
gunicorn), deeply nested JSON, NUL bytes in paths, and a fuzz run that finds no 5xx."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from checks import (
    PROBLEM_JSON,
    STATEMENT,
    StoreState,
    assert_problem,
    endorsements_url,
    person,
    store_state,
)
from conftest import ADMIN_TOKEN, ALLY
from flask import Flask, request
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from servers import Gunicorn
from werkzeug.exceptions import BadRequest

from widget.bodies import MAX_JSON_DEPTH
from widget.config import MAX_BODY_BYTES

URL = endorsements_url()
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def seeded(client: FlaskClient, redis_client: Redis) -> Iterator[StoreState]:
    """One endorsement already counted; yields the state, then checks nothing moved."""
    assert client.post(URL, json=person("seed")).status_code == 201
    before = store_state(redis_client)
    yield before
    assert store_state(redis_client) == before


# -- chunked bodies under gunicorn ----------------------------------------------------------


def padded(body: dict[str, Any], size: int) -> bytes:
    """Valid JSON of exactly ``size`` bytes: the body, then whitespace."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"connection closed before a response: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers["content-length"]):
        part = sock.recv(65536)
        assert part
        body += part
    return int(status_line.split()[1]), headers, body


def test_a_chunked_body_over_the_limit_is_413_at_once_and_counts_nothing(
    start_gunicorn: Callable[..., Gunicorn], redis_client: Redis
) -> None:
    """A 100 KB chunked body was accepted (201), the excess dropped (finding 12)."""
    server = start_gunicorn(workers=1)
    # Its first 16 KiB alone would be a valid endorsement.
    body = padded(person("chunked"), 100_000)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        for part in chunks(body):
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sent += len(part)
            if sent > MAX_BODY_BYTES + 4096:
                break
        # The answer comes while most of the body is still unsent: nobody read on.
        status, headers, raw = read_response(sock)
        assert sent < len(body) // 2
    assert status == 413
    assert headers["content-type"] == PROBLEM_JSON
    assert json.loads(raw)["status"] == 413
    assert store_state(redis_client).count == 0


def test_chunked_bodies_up_to_the_limit_are_read_whole(
    start_gunicorn: Callable[..., Gunicorn], redis_client: Redis
) -> None:
    server = start_gunicorn(workers=1)

    def post(path: str, data: bytes, content_type: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request(
                "POST",
                path,
                body=chunks(data, 1000),
                headers={"Content-Type": content_type, "Origin": server.url},
                encode_chunked=True,
            )
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    exact = padded(person("exact"), MAX_BODY_BYTES)
    assert post(URL, exact, "application/json")[0] == 201
    over = padded(person("over"), MAX_BODY_BYTES + 1)
    status, raw = post(URL, over, "application/json")
    assert status == 413 and json.loads(raw)["type"].endswith("too-large")
    # The no-JS form reads its body through the same cap.
    form = b"name=Ana&email=ana%40example.org&consent=1&token=x&pad=" + b"x" * MAX_BODY_BYTES
    assert post(f"/s/{STATEMENT}", form, "application/x-www-form-urlencoded")[0] == 413
    assert store_state(redis_client).count == 1


# -- JSON nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 1000 + b"]" * 1000,
        b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b"[" * 16_000,
        b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1),
        b'{"name": ' + b"[" * 5000,
    ],
    ids=["arrays-1000", "objects-1000", "unclosed-16000", "just-over", "unclosed-in-field"],
)
def test_deeply_nested_json_is_400(client: FlaskClient, seeded: StoreState, raw: bytes) -> None:
    """JSON nested 1,000 deep was an unhandled 500 (finding 11)."""
    response = client.post(URL, data=raw, content_type="application/json")
    body = assert_problem(response, 400)
    assert body["type"].endswith(":malformed-json")


def test_nesting_up_to_the_cap_and_brackets_in_strings_are_fine(
    client: FlaskClient, redis_client: Redis
) -> None:
    nested = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    response = client.post(URL, data=nested, content_type="application/json")
    assert set(assert_problem(response, 422)["errors"]) == {"body"}
    name = "Ana " + "[{" * 80
    assert client.post(URL, json=person(1, name=name)).status_code == 201
    assert store_state(redis_client).count == 1


def test_deep_json_to_get_json_is_not_a_500(
    app: Flask, client: FlaskClient, seeded: StoreState
) -> None:
    """``request.get_json`` refuses deep bodies too, and the admin API's bodies are 400."""
    deep = b"[" * 5000 + b"]" * 5000
    context = app.test_request_context("/", method="POST", data=deep)
    with context, pytest.raises(BadRequest):
        request.get_json(force=True)
    url = f"/api/v1/admin/statements/{STATEMENT}/endorsements/1-0/strike"
    response = client.post(url, data=deep, content_type="application/json", headers=ADMIN)
    assert assert_problem(response, 400)["type"].endswith(":malformed-json")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(
    app: Flask, client: FlaskClient, seeded: StoreState, constant: bytes
) -> None:
    """Python's parser takes them; JSON has no such values: 400, nothing counted."""
    for field in (b"name", b"public", b"country"):
        raw = b'{"email": "nan@example.org", "consent": true, "%s": %s}' % (field, constant)
        response = client.post(URL, data=raw, content_type="application/json")
        assert assert_problem(response, 400)["type"].endswith(":malformed-json")
    context = app.test_request_context("/", method="POST", data=b"[%s]" % constant)
    with context, pytest.raises(BadRequest):
        request.get_json(force=True)


# -- NUL bytes in paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/%00",
        "/static/widget.js%00.png",
        "/static/page.css%00?v=0123456789ab",
        "/static/%2e%2e/%00",
        "/demo/%00.css",
    ],
)
def test_a_nul_byte_in_a_static_path_is_404(client: FlaskClient, path: str) -> None:
    """A NUL byte in a /static path was an unhandled 500 (finding 11)."""
    response = client.get(path, headers={"Accept": PROBLEM_JSON})
    assert_problem(response, 404)


# -- fuzzing --------------------------------------------------------------------------------

ROUTES = [
    "/api/v1/statements",
    f"/api/v1/statements/{STATEMENT}",
    f"/api/v1/statements/{STATEMENT}/count",
    f"/api/v1/statements/{STATEMENT}/recent",
    URL,
    "/api/v1/openapi.json",
    "/healthz",
    f"/embed/{STATEMENT}",
    f"/s/{STATEMENT}",
    "/embed.js",
    "/static/widget.js",
    "/demo",
    "/",
]
segments = st.lists(
    st.characters(codec="utf-8")
    | st.sampled_from(["\x00", "%00", "%", "%zz", "..", "/", "widget.js", "?", "#"]),
    max_size=8,
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
endorsement_like = st.fixed_dictionaries(
    {},
    optional={
        "name": json_values | st.text(max_size=250),
        "email": json_values | st.emails(),
        "country": json_values | st.sampled_from(["KZ", "kz", "", "AA", " KZ"]),
        "consent": json_values,
        "public": json_values,
        "source": json_values | st.sampled_from([ALLY, "javascript:x", "https://x" * 40]),
    },
)
bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | endorsement_like.map(lambda v: json.dumps(v).encode())
    | st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n)
)


@st.composite
def requests_(draw: st.DrawFn) -> dict[str, Any]:
    base = draw(st.sampled_from(ROUTES))
    path = base
    if draw(st.booleans()):
        path = f"{base.rstrip('/')}/{draw(segments)}"
    if draw(st.booleans()):
        path = f"/static/{draw(segments)}"
    headers = {}
    if draw(st.booleans()):
        headers["Origin"] = draw(st.sampled_from([ALLY, "https://evil.example", "null", ""]))
    if draw(st.booleans()):
        headers["Accept"] = draw(st.sampled_from(["*/*", "text/html", PROBLEM_JSON]))
    if draw(st.booleans()):
        headers["If-None-Match"] = draw(st.sampled_from(['"c0"', "*", '"x", W/"y"', "\x7f"]))
    content_type = draw(
        st.sampled_from(
            ["application/json", "text/plain", "application/x-www-form-urlencoded", "x/y+json"]
        )
    )
    query = draw(st.sampled_from(["", "lang=ru", "v=x", "lang=%00", "layout=%ff", "origin=x"]))
    if query:
        path += ("&" if "?" in path else "?") + query
    return {
        "method": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD"])),
        "path": path,
        "headers": headers,
        "data": draw(bodies),
        "content_type": content_type,
    }


@pytest.fixture
def fuzz_app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(ENDORSE_LIMIT="1000000/minute")


def test_fuzzed_requests_never_get_a_5xx(fuzz_app: Flask, redis_client: Redis) -> None:
    """Odd paths, headers and bodies on every public route: always a 4xx or 2xx/3xx.

    TESTING is on, so an unhandled exception would be raised here, not turned into a 500.
    The admin console and API (another module's) and the never-ending /events are left out.
    """
    client = fuzz_app.test_client()
    started = time.monotonic()

    @settings(
        max_examples=400,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(requests_())
    def check(request: dict[str, Any]) -> None:
        response = client.open(**request)
        assert response.status_code < 500, (request, response.get_data(as_text=True)[:300])
        api = request["path"].startswith(("/api/", "/static/", "/healthz"))
        if response.status_code >= 400 and api and request["method"] != "HEAD":
            assert response.mimetype == PROBLEM_JSON, request

    check()
    assert time.monotonic() - started < 60
