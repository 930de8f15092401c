"""The embed blueprint over HTTP (no browser): headers, budgets, languages, the no-JS form."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import ALLY, STATEMENT

from widget.i18n import CATALOG_DIR, catalogs

ROOT = Path(__file__).resolve().parent.parent
LOADER_BUDGET = 1536  # bytes, gzipped
IFRAME_BUDGET = 12 * 1024  # HTML + CSS + JS, gzipped
CLDR_FORMS = {"zero", "one", "two", "few", "many", "other"}


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


def assets_of(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/static/[^"]+)"', html)


# -- budgets --------------------------------------------------------------------------------


def test_loader_is_within_budget(client):
    body = client.get("/embed.js").data
    assert body == (ROOT / "static" / "embed.js").read_bytes()
    assert gz(body) <= LOADER_BUDGET, f"embed.js is {gz(body)} bytes gzipped"


@pytest.mark.parametrize("layout", ["full", "compact", "counter"])
@pytest.mark.parametrize("lang", ["en", "ru", "kk", "de", "fr"])
def test_iframe_payload_is_within_budget(make_app, lang, layout):
    client = make_app(POW=True).test_client()  # the proof-of-work solver counts too
    response = client.get(f"/embed/{STATEMENT}?lang={lang}&layout={layout}&origin={ALLY}")
    html = response.get_data(as_text=True)
    assets = assets_of(html)
    assert len(assets) == 2  # one stylesheet, one script
    (solver,) = re.findall(r'data-pow="(/static/pow\.js\?v=[0-9a-f]+)"', html)
    assets.append(solver)  # loaded in a Web Worker when the visitor reaches the form
    total = gz(response.data) + sum(gz(client.get(url).data) for url in assets)
    print(f"iframe payload {lang}/{layout}: {total} bytes gzipped")  # -s shows the figures
    assert total <= IFRAME_BUDGET, f"iframe payload is {total} bytes gzipped"


# -- headers --------------------------------------------------------------------------------


def test_loader_headers_revalidate(client):
    response = client.get("/embed.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    etag = response.headers["ETag"]
    again = client.get("/embed.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


def test_asset_etags_are_content_hashes(client):
    """The same on every server and after every deploy (not a file's time and size)."""
    html = client.get(f"/embed/{STATEMENT}").get_data(as_text=True)
    for url in ["/embed.js", *assets_of(html)]:
        response = client.get(url)
        digest = hashlib.sha256(response.get_data()).hexdigest()[:12]
        assert response.headers["ETag"] == f'"{digest}"', url
        assert client.get(url, headers={"If-None-Match": f'"{digest}"'}).status_code == 304
        assert client.get(url, headers={"If-None-Match": '"other"'}).status_code == 200


def test_fingerprinted_assets_are_immutable(client):
    html = client.get(f"/embed/{STATEMENT}").get_data(as_text=True)
    for url in assets_of(html):
        assert re.search(r"\?v=[0-9a-f]{12}$", url)
        response = client.get(url)
        assert response.status_code == 200
        assert "immutable" in response.headers["Cache-Control"]
        assert "max-age=31536000" in response.headers["Cache-Control"]
        assert response.headers["ETag"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        stale = client.get(url.split("?")[0] + "?v=000000000000")
        assert stale.headers["Cache-Control"] == "no-cache"


def csp(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {
        part.strip().split(" ", 1)[0]: part.strip().split(" ", 1)[1] for part in policy.split(";")
    }


def test_widget_policy_is_strict_and_framable_by_allies(client):
    response = client.get(f"/embed/{STATEMENT}?origin={ALLY}")
    policy = csp(response)
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self' data:"
    assert policy["form-action"] == "'self'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == f"'self' {ALLY}"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


TWO_ALLIES = "https://a.example, https://b.example:8443"


@pytest.mark.parametrize(
    ("origins", "origin", "expected"),
    [
        (TWO_ALLIES, "https://a.example", "'self' https://a.example"),
        (TWO_ALLIES, "https://b.example:8443", "'self' https://b.example:8443"),
        (TWO_ALLIES, "HTTPS://B.example:8443/", "'self' https://b.example:8443"),
        (TWO_ALLIES, None, "'self'"),
        (TWO_ALLIES, "https://evil.example", "'self'"),
        (TWO_ALLIES, "https://a.example https://evil.example", "'self'"),
        (TWO_ALLIES, "https://a.example; script-src *", "'self'"),
        ("*", "https://anyone.example", "*"),
        ("", "https://a.example", "'self'"),
    ],
)
def test_frame_ancestors_name_only_the_ally_asking(make_app, origins, origin, expected):
    """Every ally was listed to anyone who loaded /embed/<id> (finding 14)."""
    client = make_app(ALLOWED_ORIGINS=origins).test_client()
    query = {"origin": origin} if origin is not None else {}
    response = client.get(f"/embed/{STATEMENT}", query_string=query)
    assert csp(response)["frame-ancestors"] == expected
    # The policy depends on the URL alone (?origin= is in every cache key), not on
    # request headers a shared cache would have to vary on.
    assert response.headers["Vary"] == "Accept-Language"
    assert response.cache_control.public


def test_the_loader_names_its_page_as_origin():
    loader = (ROOT / "static" / "embed.js").read_text()
    assert "origin: location.origin" in loader


@pytest.mark.parametrize("path", [f"/embed/{STATEMENT}", f"/s/{STATEMENT}", "/", "/demo"])
def test_pages_have_no_inline_script_or_style(client, path):
    response = client.get(path)
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html), "style attribute"
    assert not re.search(r"\son[a-z]+=", html), "event handler attribute"
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


def test_hosted_page_cannot_be_framed(client):
    assert csp(client.get(f"/s/{STATEMENT}"))["frame-ancestors"] == "'none'"


def test_unknown_statement_is_404(client):
    assert client.get("/embed/nope").status_code == 404
    assert client.get("/s/nope").status_code == 404


# -- the widget page ----------------------------------------------------------------------


def widget_html(client, query: str = "", **headers: str) -> str:
    return client.get(f"/embed/{STATEMENT}?{query}", headers=headers).get_data(as_text=True)


def test_widget_shows_title_excerpt_count_goal_and_form(client, redis_client):
    html = widget_html(client, "lang=en")
    assert "Dongelek Ystel Civil Society Coalition Statement" in html
    assert "For 22 years now" in html
    # The statement's pages open in the widget's language; the link to share has none.
    assert f'href="http://localhost/s/{STATEMENT}?lang=en"' in html
    assert f'href="http://localhost/s/{STATEMENT}/audit?lang=en"' in html
    assert f'data-url="http://localhost/s/{STATEMENT}"' in html
    russian = widget_html(client, "lang=ru")
    assert f'href="http://localhost/s/{STATEMENT}?lang=ru"' in russian
    assert f'href="http://localhost/s/{STATEMENT}/audit?lang=ru"' in russian
    assert re.search(r'aria-live="polite"[^>]*>\s*<span class="num" data-count="0">0</span>', html)
    assert '<progress class="bar" max="10000" value="0"' in html
    assert ">Endorse</button>" in html
    for field in ("f-name", "f-email", "f-country", "f-consent", "f-public"):
        assert f'id="{field}"' in html
    assert "This statement is shown in its original language" not in html


def test_count_is_formatted_for_the_language(app, client, redis_client):
    redis_client.set(f"us:{{{STATEMENT}}}:count", 12345)
    assert 'data-count="12345">12,345<' in widget_html(client, "lang=en")
    assert 'data-count="12345">12\u00a0345<' in widget_html(client, "lang=ru")
    assert 'data-count="12345">12.345<' in widget_html(client, "lang=de")
    assert "человека поддержали" in widget_html(client, "lang=ru")  # 12345 -> few
    redis_client.set(f"us:{{{STATEMENT}}}:count", 1)
    assert "человек поддержал<" in widget_html(client, "lang=ru")
    assert ">endorsement<" in widget_html(client, "lang=en")


@pytest.mark.parametrize(
    ("query", "headers", "lang"),
    [
        ("lang=ru", {}, "ru"),
        ("lang=kk-KZ", {}, "kk"),
        ("lang=xx,fr-CA,en", {}, "fr"),
        ("", {"Accept-Language": "de-AT,de;q=0.9,en;q=0.5"}, "de"),
        ("lang=xx", {"Accept-Language": "ru-RU,ru;q=0.9"}, "ru"),
        ("lang=xx", {"Accept-Language": "ja"}, "en"),
        ("", {}, "en"),
    ],
)
def test_language_choice(client, query, headers, lang):
    html = widget_html(client, query, **headers)
    assert f'<html lang="{lang}"' in html


def test_untranslated_statement_says_so(client):
    html = widget_html(client, "lang=ru")
    assert "Заявление показано на языке оригинала." in html
    assert '<p class="excerpt" lang="en">' in html
    assert ">Поддержать</button>" in html


@pytest.mark.parametrize(
    ("layout", "present", "absent"),
    [
        ("full", ['class="excerpt"', 'id="f"', 'id="recent"'], ['class="badge"']),
        ("compact", ['id="open"', 'id="f"'], ['class="excerpt"', 'class="badge"']),
        ("counter", ['class="badge"', "data-count="], ['id="f"', 'class="excerpt"']),
        ("bogus", ['class="excerpt"'], []),
    ],
)
def test_layouts(client, layout, present, absent):
    html = widget_html(client, f"layout={layout}")
    for snippet in present:
        assert snippet in html
    for snippet in absent:
        assert snippet not in html


def test_theme_is_whitelisted(client):
    assert 'data-theme="dark"' in widget_html(client, "theme=dark")
    assert 'data-theme="auto"' in widget_html(client, "theme=%22%3E%3Cscript%3E")


def test_query_values_are_escaped(client):
    html = widget_html(client, "origin=%22%3E%3Cscript%3Ealert(1)%3C/script%3E")
    assert "<script>alert(1)" not in html
    assert "&#34;&gt;&lt;script&gt;" in html


def test_catalog_is_handed_to_the_script_as_data(client):
    html = widget_html(client, "lang=kk")
    raw = re.search(r'data-i18n="([^"]*)"', html)
    assert raw
    messages = json.loads(raw.group(1).replace("&#34;", '"').replace("&#39;", "'"))
    assert messages["thanks"] == "Сіздің қолдауыңыз есепке алынды."
    assert "err_rate" in messages


# -- catalogs -------------------------------------------------------------------------------


def placeholders(value: object) -> set[str]:
    texts = value.values() if isinstance(value, dict) else [value]
    return {p for text in texts for p in re.findall(r"\{(\w+)\}", str(text))}


def test_catalogs_are_complete_and_consistent():
    english = json.loads((CATALOG_DIR / "en.json").read_text("utf-8"))
    assert {"en", "ru", "kk", "de", "fr"} <= set(catalogs())
    for path in CATALOG_DIR.glob("*.json"):
        messages = json.loads(path.read_text("utf-8"))
        assert set(messages) == set(english), path.name
        for key, value in messages.items():
            assert placeholders(value) == placeholders(english[key]), (path.name, key)
            if isinstance(value, dict):
                assert "other" in value and set(value) <= CLDR_FORMS, (path.name, key)
        assert messages["_dir"] in ("ltr", "rtl")
        # Buttons side by side in the thank-you panel: one shares, one holds a secret.
        for a, b in (("copy", "receipt_copy"), ("copied", "receipt_copied")):
            assert messages[a] != messages[b], (path.name, a, b)


def test_kazakh_is_cyrillic():
    kk = json.loads((CATALOG_DIR / "kk.json").read_text("utf-8"))
    assert re.search("[әғқңөұүһі]", kk["privacy"])


# -- the hosted page and its no-JS form -----------------------------------------------------


def token_of(html: str) -> str:
    match = re.search(r'name="token" value="([^"]+)"', html)
    assert match
    return match.group(1)


def post_form(client, token: str, **fields: str):
    data = {"token": token, "lang": "en", "name": "Aigerim Sultan", "email": "a@example.org"}
    data.update({"country": "KZ", "consent": "1"})
    data.update(fields)
    return client.post(f"/s/{STATEMENT}", data=data, headers={"Origin": "http://localhost"})


def test_hosted_page_shows_statement_form_and_snippet(client):
    html = client.get(f"/s/{STATEMENT}?lang=en").get_data(as_text=True)
    assert "Nur Otan party" in html  # the full text
    assert "A statement by Dongelek Ystel Civil Society Coalition" in html
    assert 'method="post"' in html and f'action="/s/{STATEMENT}"' in html
    assert '<option value="KZ">Kazakhstan</option>' in html
    assert "&lt;script src=&#34;http://localhost/embed.js&#34; data-statement=" in html
    assert 'data-count="0"' in html


def test_hosted_page_country_names_are_localized(client):
    html = client.get(f"/s/{STATEMENT}?lang=kk").get_data(as_text=True)
    assert '<option value="KZ">Қазақстан</option>' in html


def test_no_js_form_counts_then_says_duplicate(client):
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    first = post_form(client, token)
    assert first.status_code == 200
    page = first.get_data(as_text=True)
    assert "Your endorsement has been counted." in page
    assert 'data-count="1"' in page
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 1
    fresh = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    again = post_form(client, fresh, email=" A@Example.org ")
    assert "You have already endorsed this statement" in again.get_data(as_text=True)
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 1
    assert first.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in first.headers


def test_no_js_form_shows_field_errors_in_language(client):
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    response = post_form(client, token, lang="ru", name=" ", email="nope", country="ZZ", consent="")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Введите своё имя." in html
    assert "Проверьте адрес электронной почты." in html
    assert "Выберите страну из списка." in html
    assert "Отметьте согласие, чтобы продолжить." in html
    assert 'value="nope"' in html  # what was typed is kept
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 0


def test_no_js_form_token_is_single_use(client, redis_client):
    """The no-JS form's token could be reused for 6 hours (finding 13)."""
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    assert post_form(client, token).status_code == 200
    count = f"/api/v1/statements/{STATEMENT}/count"
    assert client.get(count).get_json()["count"] == 1
    # Replayed, for another person: the page's "form expired" answer, nothing counted.
    for email in ("b@example.org", "c@example.org"):
        replay = post_form(client, token, email=email)
        assert replay.status_code == 400
        html = replay.get_data(as_text=True)
        assert "The form has expired." in html
        assert token_of(html) != token  # a fresh form to try again with
    assert client.get(count).get_json()["count"] == 1
    # What Redis keeps: a hash of the token, for no longer than the token lives.
    (key,) = [k.decode() for k in redis_client.scan_iter(f"us:{{{STATEMENT}}}:form:*")]
    assert key.endswith(hashlib.sha256(token.encode()).hexdigest())
    assert token not in key
    assert 6 * 3600 - 60 < redis_client.ttl(key) <= 6 * 3600


def test_no_js_form_token_spent_on_invalid_input_is_not_burnt(client):
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    assert post_form(client, token, email="nope").status_code == 422
    assert post_form(client, token).status_code == 200


@pytest.mark.parametrize("name", ["\u3164", "\u200b\u200b", "12345"])
def test_no_js_form_refuses_invisible_and_letterless_names(client, name):
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    response = post_form(client, token, name=name)
    assert response.status_code == 422
    assert "Please enter your name." in response.get_data(as_text=True)
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 0


def test_no_js_form_refuses_bad_token_and_other_origins(client):
    assert post_form(client, "forged").status_code == 400
    other = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    response = client.post(
        f"/s/{STATEMENT}",
        data={"token": other, "name": "X", "email": "x@example.org", "consent": "1"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert client.get(f"/api/v1/statements/{STATEMENT}/count").get_json()["count"] == 0


def test_no_js_form_when_closed(client, redis_client):
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    redis_client.hset(f"us:{{{STATEMENT}}}:state", "closed", "1")
    response = post_form(client, token)
    assert response.status_code == 409
    assert "no longer accepting endorsements" in response.get_data(as_text=True)
    widget = widget_html(client)
    assert 'id="f"' not in widget and "no longer accepting endorsements" in widget


def test_no_js_form_shares_the_rate_limit(make_app):
    client = make_app(ENDORSE_LIMIT="1/minute").test_client()
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))
    assert post_form(client, token).status_code == 200
    token = token_of(client.get(f"/s/{STATEMENT}").get_data(as_text=True))  # single use
    limited = post_form(client, token, email="b@example.org")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"]
    assert "Too many endorsements from your network" in limited.get_data(as_text=True)
    api = client.post(
        f"/api/v1/statements/{STATEMENT}/endorsements",
        json={"name": "C", "email": "c@example.org", "consent": True},
    )
    assert api.status_code == 429


def test_names_are_escaped_on_the_hosted_page(client):
    client.post(
        f"/api/v1/statements/{STATEMENT}/endorsements",
        json={"name": "<img/src=x/onerror=alert(1)>", "email": "x@example.org", "consent": True}
        | {"public": True, "country": "KZ"},
    )
    html = client.get(f"/s/{STATEMENT}?lang=en").get_data(as_text=True)
    # Punctuation splits a name, so only its first word is shown; and that is escaped.
    assert ">img, Kazakhstan<" in html
    assert "<img/src" not in html and "onerror" not in html


def test_demo_and_landing(client):
    demo = client.get("/demo")
    html = demo.get_data(as_text=True)
    assert f'<script src="/embed.js" data-statement="{STATEMENT}"' in html
    assert html.count("data-endorse-statement=") >= 8
    assert "frame-src 'self'" in demo.headers["Content-Security-Policy"]
    assert client.get("/demo/demo.css").mimetype == "text/css"
    assert client.get("/demo/README.md").status_code == 404
    assert 'href="/demo"' in client.get("/").get_data(as_text=True)


def test_right_to_left_catalog_sets_dir(client, monkeypatch):
    import widget.embed as embed_module
    import widget.i18n as i18n

    found = dict(i18n.catalogs())
    messages = {**found["en"].messages, "_dir": "rtl", "_language": "Test RTL"}
    found["ar"] = i18n.Catalog("ar", messages)
    monkeypatch.setattr(i18n, "catalogs", lambda: found)
    monkeypatch.setattr(embed_module, "catalogs", lambda: found)
    assert '<html lang="ar" dir="rtl"' in widget_html(client, "lang=ar")
    page = client.get(f"/s/{STATEMENT}?lang=ar").get_data(as_text=True)
    assert '<html lang="ar" dir="rtl">' in page
    assert 'hreflang="ar"' in page


@pytest.mark.parametrize(
    ("lang", "neighbours"),
    [
        ("kk", ["Кюрасао", "Қазақстан", "Қырғызстан", "Қытай", "Лаос"]),
        ("ru", ["Казахстан", "Камбоджа"]),
        ("de", ["Oman", "Österreich", "Pakistan"]),
        ("fr", ["Égypte", "Émirats arabes unis", "Équateur", "Érythrée", "Espagne", "Estonie"]),
    ],
)
def test_country_list_is_in_the_languages_alphabetical_order(client, lang, neighbours):
    """Kazakh's own letters had been sorted after the last Russian one: Kazakhstan came
    242nd of 250 on the Kazakh page."""
    page = client.get(f"/s/{STATEMENT}?lang={lang}").get_data(as_text=True)
    select = page.split('id="f-country"', 1)[1].split("</select>", 1)[0]
    names = re.findall(r'<option value="[A-Z]{2}"[^>]*>([^<]+)</option>', select)
    assert len(names) > 200
    at = names.index(neighbours[0])
    assert names[at : at + len(neighbours)] == neighbours, names[at - 2 : at + len(neighbours)]
