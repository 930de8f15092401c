"""Statement files: the bundled coalition text, the file format's errors, translations, schedule."""

# ruff: noqa: RUF001  (Cyrillic test texts)

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import STATEMENT
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from servers import RedisServer

from widget import create_app
from widget.statements import StatementError, load_folder, load_registry

MakeApp = Callable[..., Flask]

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT.parent / "shared" / "seed" / "statement.txt"
# sha256 of ../shared/seed/statement.txt, for checkouts that do not have shared/ beside them.
SEED_SHA256 = "a0f28154d48f39ad6f4c897a098cf9e71dbb7bdc31d21f6654f221c2d8f7807f"
TITLE = "Dongelek Ystel Civil Society Coalition Statement"
AUTHOR = "Dongelek Ystel Civil Society Coalition"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def statement_file(
    statement_id: str = "extra",
    *,
    title: str = "Extra statement",
    goal: str = "500",
    extra: str = "",
    body: str = "First paragraph of the extra statement.\n\nSecond paragraph.",
) -> str:
    return f'+++\nid = "{statement_id}"\ntitle = "{title}"\ngoal = {goal}\n{extra}+++\n\n{body}\n'


# -- the bundled statement --------------------------------------------------------------------


def test_bundled_statement_text_is_the_coalitions_unchanged() -> None:
    statement = load_registry().get(STATEMENT)
    assert statement is not None
    text = "\n".join(statement.original.paragraphs)
    if SEED.exists():
        assert text == SEED.read_text(encoding="utf-8").rstrip("\n")
    assert hashlib.sha256((text + "\n").encode("utf-8")).hexdigest() == SEED_SHA256


def test_bundled_statement_metadata() -> None:
    statement = load_registry().get(STATEMENT)
    assert statement is not None
    assert statement.original.title == TITLE
    assert statement.author == AUTHOR
    assert statement.goal >= 1000
    assert statement.original_lang == "en"
    assert statement.languages[0] == "en"
    assert statement.original.excerpt.startswith("For 22 years now, Nur Otan party")
    assert statement.opens is None and statement.closes is None
    assert statement.scheduled_open()


def test_api_shows_the_bundled_statement(client: FlaskClient) -> None:
    body = client.get(f"/api/v1/statements/{STATEMENT}").get_json()
    assert body["title"] == TITLE
    assert body["author"] == AUTHOR
    assert body["goal"] == load_registry().statements[STATEMENT].goal
    assert body["open"] is True


def test_markdown_is_rendered_and_sanitized(tmp_path: Path) -> None:
    body = (
        "Some *emphasis* and a [link](https://example.org).\n\n"
        "<script>alert(1)</script>\n\n[bad](javascript:alert(1))"
    )
    write(tmp_path, "extra.md", statement_file(body=body))
    (statement,) = load_folder(tmp_path)
    html = statement.original.html
    assert "<em>emphasis</em>" in html
    assert '<a href="https://example.org"' in html
    assert "<script" not in html
    assert 'href="javascript' not in html
    assert statement.original.excerpt == "Some emphasis and a link."


# -- bad files --------------------------------------------------------------------------------

BAD_FILES = {
    "no-front-matter": ("extra.md", "Just a text with no front matter.\n", "front matter"),
    "bad-toml": ("extra.md", '+++\nid = "extra\ntitle = 1\n+++\n\nText.\n', "not valid TOML"),
    "missing-title": ("extra.md", '+++\nid = "extra"\ngoal = 10\n+++\n\nText.\n', "'title'"),
    "goal-not-a-number": ("extra.md", statement_file(goal='"many"'), "'goal'"),
    "goal-zero": ("extra.md", statement_file(goal="0"), "'goal'"),
    "goal-boolean": ("extra.md", statement_file(goal="true"), "'goal'"),
    "bad-id": ("Extra_1.md", statement_file("Extra_1"), "lowercase letters"),
    "id-not-file-name": ("extra.md", statement_file("other"), "does not match the file name"),
    "unknown-key": ("extra.md", statement_file(extra='colour = "red"\n'), "unknown"),
    "no-text": ("extra.md", statement_file(body=""), "no text"),
    "bad-date": ("extra.md", statement_file(extra='opens = "soon"\n'), "'opens'"),
    "closes-before-opens": (
        "extra.md",
        statement_file(extra="opens = 2026-05-01T00:00:00Z\ncloses = 2026-04-01T00:00:00Z\n"),
        "'closes' must come after 'opens'",
    ),
    "closes-equals-opens": (
        "extra.md",
        statement_file(extra="opens = 2026-05-01\ncloses = 2026-05-01\n"),
        "'closes' must come after 'opens'",
    ),
    "orphan-translation": ("missing.ru.md", '+++\ntitle = "Заявление"\n+++\n\nТекст.\n', "missing"),
    "three-part-name": ("extra.ru.x.md", statement_file(), "<id>.<lang>.md"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_statement_file_is_an_error_naming_the_file(tmp_path: Path, case: str) -> None:
    name, text, problem = BAD_FILES[case]
    path = write(tmp_path, name, text)
    with pytest.raises(StatementError) as info:
        load_registry([tmp_path])
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert problem in message


def test_translation_may_not_change_goal_or_dates(tmp_path: Path) -> None:
    write(tmp_path, "extra.md", statement_file())
    path = write(tmp_path, "extra.ru.md", '+++\ntitle = "Т"\ngoal = 5\n+++\n\nТекст.\n')
    with pytest.raises(StatementError, match="may only set") as info:
        load_registry([tmp_path])
    assert str(path) in str(info.value)


def test_bad_language_code_in_translation_name(tmp_path: Path) -> None:
    write(tmp_path, "extra.md", statement_file())
    path = write(tmp_path, "extra.Russian.md", '+++\ntitle = "Т"\n+++\n\nТекст.\n')
    with pytest.raises(StatementError, match="not a language code") as info:
        load_registry([tmp_path])
    assert str(path) in str(info.value)


def test_a_file_cannot_replace_a_statement_already_loaded(tmp_path: Path) -> None:
    """A file named for the bundled statement had replaced the coalition's text silently."""
    path = write(tmp_path, f"{STATEMENT}.md", statement_file(STATEMENT, title="Hijack", goal="5"))
    with pytest.raises(StatementError, match="already a statement with id") as info:
        load_registry([tmp_path])
    assert str(path) in str(info.value)
    first, second = tmp_path / "one", tmp_path / "two"
    first.mkdir()
    second.mkdir()
    write(first, "extra.md", statement_file())
    write(second, "extra.md", statement_file(title="Another"))
    with pytest.raises(StatementError, match="already a statement with id 'extra'"):
        load_registry([first, second])
    assert load_registry([first]).get("extra") is not None


def test_a_translation_says_one_language(tmp_path: Path) -> None:
    write(tmp_path, "extra.md", statement_file())
    path = write(tmp_path, "extra.ru.md", '+++\ntitle = "Т"\nlang = "de"\n+++\n\nТекст.\n')
    with pytest.raises(StatementError, match="its name says 'ru'") as info:
        load_registry([tmp_path])
    assert str(path) in str(info.value)
    write(tmp_path, "extra.ru.md", '+++\ntitle = "Т"\nlang = "ru"\n+++\n\nТекст.\n')
    registry = load_registry([tmp_path])
    assert registry.get("extra").text("ru").title == "Т"


def test_bad_statement_file_stops_the_app_from_starting(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    path = write(tmp_path, "extra.md", statement_file(goal="-3"))
    with pytest.raises(StatementError) as info:
        create_app(
            {"REDIS_URL": redis_server.url, "SECRET_KEY": "k" * 40, "STATEMENTS_DIR": tmp_path}
        )
    assert str(path) in str(info.value)


def test_missing_statements_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StatementError, match="does not exist"):
        load_registry([tmp_path / "nowhere"])


# -- extra folder and translations ------------------------------------------------------------


@pytest.fixture
def extra_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "statements"
    folder.mkdir()
    write(folder, "extra.md", statement_file(extra='author = "Allies"\n'))
    write(
        folder,
        "extra.ru.md",
        '+++\ntitle = "Дополнительное заявление"\n+++\n\nПервый абзац.\n\nВторой.\n',
    )
    write(
        folder,
        "extra.kk.md",
        '+++\ntitle = "Қосымша"\nexcerpt = "Қысқаша."\n+++\n\nБірінші абзац.\n',
    )
    write(folder, "README.md", "Notes for editors; not a statement.\n")
    return folder


def test_statements_dir_adds_to_the_bundled_ones(make_app: MakeApp, extra_dir: Path) -> None:
    client = make_app(STATEMENTS_DIR=str(extra_dir)).test_client()
    body = client.get("/api/v1/statements").get_json()
    assert [s["id"] for s in body["statements"]] == [STATEMENT, "extra"]
    extra = body["statements"][1]
    assert extra["title"] == "Extra statement"
    assert extra["goal"] == 500
    assert extra["excerpt"] == "First paragraph of the extra statement."


def test_translations_are_served_with_lang(make_app: MakeApp, extra_dir: Path) -> None:
    client = make_app(STATEMENTS_DIR=str(extra_dir)).test_client()
    original = client.get("/api/v1/statements/extra").get_json()
    assert original["lang"] == "en"
    assert original["languages"] == ["en", "kk", "ru"]
    assert original["title"] == "Extra statement"

    russian = client.get("/api/v1/statements/extra?lang=ru").get_json()
    assert russian["lang"] == "ru"
    assert russian["title"] == "Дополнительное заявление"
    assert russian["excerpt"] == "Первый абзац."
    assert russian["goal"] == 500

    kazakh = client.get("/api/v1/statements/extra?lang=kk-KZ").get_json()
    assert (kazakh["lang"], kazakh["title"], kazakh["excerpt"]) == ("kk", "Қосымша", "Қысқаша.")

    unknown = client.get("/api/v1/statements/extra?lang=fr").get_json()
    assert unknown["lang"] == "en"
    assert unknown["title"] == "Extra statement"

    listed = client.get("/api/v1/statements?lang=ru").get_json()["statements"]
    assert {s["id"]: s["title"] for s in listed}["extra"] == "Дополнительное заявление"


# -- schedule ---------------------------------------------------------------------------------

ENDORSEMENT = {"name": "Ana", "email": "ana@example.org", "consent": True}


@pytest.mark.parametrize(
    ("schedule", "is_open"),
    [
        ("opens = 2999-01-01T00:00:00Z\n", False),
        ("closes = 2000-01-01T00:00:00Z\n", False),
        ("opens = 1999-01-01\ncloses = 2000-01-01\n", False),
        ("opens = 2000-01-01T00:00:00Z\ncloses = 2999-01-01T00:00:00Z\n", True),
    ],
    ids=["opens-in-future", "closed-in-past", "window-in-past", "window-now"],
)
def test_schedule_decides_open(
    make_app: MakeApp, redis_client: Redis, tmp_path: Path, schedule: str, is_open: bool
) -> None:
    write(tmp_path, "extra.md", statement_file(extra=schedule))
    client = make_app(STATEMENTS_DIR=str(tmp_path)).test_client()
    body = client.get("/api/v1/statements/extra").get_json()
    assert body["open"] is is_open
    response = client.post("/api/v1/statements/extra/endorsements", json=ENDORSEMENT)
    if is_open:
        assert response.status_code == 201
        assert redis_client.get("us:{extra}:count") == b"1"
    else:
        assert response.status_code == 409
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["status"] == 409
        assert redis_client.get("us:{extra}:count") is None
        assert redis_client.exists("us:{extra}:log", "us:{extra}:tlog") == 0
        assert list(redis_client.scan_iter("us:{extra}:seen*")) == []
