"""Statement files (TOML front matter + Markdown body) and the registry that holds them.

A statement lives in ``<id>.md``; a translation in ``<id>.<lang>.md`` beside it. The
front matter sits between two ``+++`` lines::

    +++
    id = "dongelek-ystel"
    title = "..."
    goal = 10000
    lang = "en"
    opens = 2026-01-01T00:00:00Z     # optional
    closes = 2027-01-01T00:00:00Z    # optional
    excerpt = "..."                  # optional: defaults to the first paragraph
    author = "..."                   # optional: who the text belongs to
    block_disposable = false         # optional: refuse throwaway-mail addresses
    confirm = "none"                 # optional: "email" counts only confirmed addresses
    +++

Markdown is rendered with markdown-it (raw HTML disabled) and then sanitized with nh3,
so a statement file can never put script into a page. Any problem is a
``StatementError`` that names the file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import nh3
from markdown_it import MarkdownIt

BUNDLED_DIR = Path(__file__).parent / "statements"
STATEMENT_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")
LANG_CODE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?$")
FRONT_MATTER = re.compile(r"\A\+\+\+[ \t]*\r?\n(.*?)\r?\n\+\+\+[ \t]*\r?\n?(.*)\Z", re.DOTALL)
KNOWN_KEYS = {
    "id",
    "title",
    "goal",
    "lang",
    "opens",
    "closes",
    "excerpt",
    "author",
    "block_disposable",
    "confirm",
}
CONFIRM_MODES = ("none", "email")
TRANSLATABLE_KEYS = {"title", "excerpt", "lang"}
MAX_EXCERPT = 600

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


class StatementError(ValueError):
    """A statement file is malformed; the message starts with the file's path."""


@dataclass(frozen=True)
class StatementText:
    """One language's words for a statement. ``markdown`` is the body as loaded, and
    ``sha256`` the hex SHA-256 of its UTF-8 bytes: the version an endorser was shown, as
    the transparency log records it."""

    lang: str
    title: str
    excerpt: str
    html: str
    paragraphs: tuple[str, ...]
    markdown: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.markdown.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Statement:
    """A statement people can endorse, with its texts by language."""

    id: str
    goal: int
    original_lang: str
    texts: Mapping[str, StatementText]
    author: str = ""
    opens: datetime | None = None
    closes: datetime | None = None
    block_disposable: bool = False  # refuse addresses at throwaway-mail domains
    confirm: str = "none"  # "email": an endorsement counts once its owner confirms by mail

    @property
    def confirms_email(self) -> bool:
        return self.confirm == "email"

    @property
    def languages(self) -> list[str]:
        """The original language first, then the translations in alphabetical order."""
        return [self.original_lang, *sorted(k for k in self.texts if k != self.original_lang)]

    @property
    def original(self) -> StatementText:
        return self.texts[self.original_lang]

    def text(self, lang: str | None) -> StatementText:
        """The text in ``lang`` (or its base language), else the original."""
        if lang:
            lang = lang.strip()
            for candidate in (lang, lang.split("-")[0].lower()):
                if candidate in self.texts:
                    return self.texts[candidate]
        return self.original

    def scheduled_open(self, now: datetime | None = None) -> bool:
        """Whether ``opens``/``closes`` admit endorsements at ``now`` (operators may close too)."""
        now = now or datetime.now(UTC)
        if self.opens and now < self.opens:
            return False
        return not (self.closes and now >= self.closes)


@dataclass
class StatementRegistry:
    """All statements the service carries, by id."""

    statements: dict[str, Statement] = field(default_factory=dict)

    def get(self, statement_id: str) -> Statement | None:
        return self.statements.get(statement_id)

    def __iter__(self) -> Iterator[Statement]:
        return iter(sorted(self.statements.values(), key=lambda s: s.id))

    def __len__(self) -> int:
        return len(self.statements)

    def ids(self) -> list[str]:
        return sorted(self.statements)


def load_registry(extra_dirs: Iterable[Path | str] = ()) -> StatementRegistry:
    """Load the bundled statements, then each extra folder. An id is one statement: a
    file that names one already loaded is an error, so no folder can replace the
    coalition's bundled text, or another folder's, without a word."""
    registry = StatementRegistry()
    for folder in (BUNDLED_DIR, *(Path(d) for d in extra_dirs if d)):
        if not folder.is_dir():
            raise StatementError(f"{folder}: statements folder does not exist")
        for statement in load_folder(folder):
            if statement.id in registry.statements:
                raise StatementError(
                    f"{folder / (statement.id + '.md')}: there is already a statement with id "
                    f"{statement.id!r}; give this one an id of its own"
                )
            registry.statements[statement.id] = statement
    return registry


def load_folder(folder: Path) -> list[Statement]:
    originals: dict[str, tuple[Path, dict[str, Any], str]] = {}
    translations: list[tuple[Path, str, dict[str, Any], str]] = []
    for path in sorted(folder.glob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        meta, body = parse_file(path)
        stem_parts = path.name[: -len(".md")].split(".")
        if len(stem_parts) == 1:
            originals[stem_parts[0]] = (path, meta, body)
        elif len(stem_parts) == 2:
            translations.append((path, stem_parts[1], meta, body))
        else:
            raise StatementError(f"{path}: name it <id>.md or <id>.<lang>.md")

    statements: dict[str, Statement] = {}
    for stem, (path, meta, body) in originals.items():
        statements[stem] = _build_statement(path, stem, meta, body)
    for path, lang, meta, body in translations:
        stem = path.name.split(".")[0]
        base = statements.get(stem)
        if base is None:
            raise StatementError(f"{path}: translation of {stem!r} but {stem}.md is missing")
        if not LANG_CODE.match(lang):
            raise StatementError(f"{path}: {lang!r} is not a language code like 'ru' or 'kk'")
        extra = set(meta) - TRANSLATABLE_KEYS
        if extra:
            raise StatementError(
                f"{path}: a translation may only set {sorted(TRANSLATABLE_KEYS)}, "
                f"not {sorted(extra)}"
            )
        if meta.get("lang", lang) != lang:
            raise StatementError(
                f"{path}: its name says {lang!r} but its front matter says {meta['lang']!r}"
            )
        text = _build_text(path, lang, meta.get("title", base.original.title), meta, body)
        statements[stem] = replace(base, texts={**base.texts, lang: text})
    return list(statements.values())


def parse_file(path: Path) -> tuple[dict[str, Any], str]:
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise StatementError(f"{path}: cannot read: {exc}") from exc
    match = FRONT_MATTER.match(raw)
    if not match:
        raise StatementError(f"{path}: must start with TOML front matter between '+++' lines")
    try:
        meta = tomllib.loads(match.group(1))
    except tomllib.TOMLDecodeError as exc:
        raise StatementError(f"{path}: front matter is not valid TOML: {exc}") from exc
    unknown = set(meta) - KNOWN_KEYS
    if unknown:
        raise StatementError(f"{path}: unknown front matter keys {sorted(unknown)}")
    body = match.group(2).strip()
    if not body:
        raise StatementError(f"{path}: the statement has no text")
    return meta, body


def _build_statement(path: Path, stem: str, meta: dict[str, Any], body: str) -> Statement:
    statement_id = meta.get("id", stem)
    if not isinstance(statement_id, str) or not STATEMENT_ID.match(statement_id):
        raise StatementError(
            f"{path}: id {statement_id!r} must be lowercase letters, digits and dashes"
        )
    if statement_id != stem:
        raise StatementError(f"{path}: id {statement_id!r} does not match the file name")
    title = meta.get("title")
    if not isinstance(title, str) or not title.strip():
        raise StatementError(f"{path}: 'title' is required")
    goal = meta.get("goal")
    if not isinstance(goal, int) or isinstance(goal, bool) or goal < 1:
        raise StatementError(f"{path}: 'goal' must be a positive whole number")
    lang = meta.get("lang", "en")
    if not isinstance(lang, str) or not LANG_CODE.match(lang):
        raise StatementError(f"{path}: 'lang' must be a language code like 'en'")
    author = meta.get("author", "")
    if not isinstance(author, str):
        raise StatementError(f"{path}: 'author' must be text")
    opens = _moment(path, meta, "opens")
    closes = _moment(path, meta, "closes")
    if opens and closes and closes <= opens:
        raise StatementError(f"{path}: 'closes' must come after 'opens'")
    block_disposable = meta.get("block_disposable", False)
    if not isinstance(block_disposable, bool):
        raise StatementError(f"{path}: 'block_disposable' must be true or false")
    confirm = meta.get("confirm", "none")
    if confirm not in CONFIRM_MODES:
        raise StatementError(f'{path}: \'confirm\' must be "none" or "email"')
    return Statement(
        id=statement_id,
        goal=goal,
        original_lang=lang,
        texts={lang: _build_text(path, lang, title, meta, body)},
        author=author.strip(),
        opens=opens,
        closes=closes,
        block_disposable=block_disposable,
        confirm=confirm,
    )


def _build_text(
    path: Path, lang: str, title: str, meta: dict[str, Any], body: str
) -> StatementText:
    if not isinstance(title, str) or not title.strip():
        raise StatementError(f"{path}: 'title' must be text")
    tokens = _markdown.parse(body)
    paragraphs = tuple(
        "".join(child.content for child in (tok.children or []) if child.type == "text")
        if tok.children
        else tok.content
        for tok in tokens
        if tok.type == "inline"
    )
    excerpt = meta.get("excerpt")
    if excerpt is None:
        excerpt = paragraphs[0] if paragraphs else ""
    if not isinstance(excerpt, str) or not excerpt.strip():
        raise StatementError(f"{path}: 'excerpt' must be non-empty text")
    if len(excerpt) > MAX_EXCERPT:
        raise StatementError(f"{path}: 'excerpt' is over {MAX_EXCERPT} characters")
    html = nh3.clean(_markdown.render(body))
    return StatementText(
        lang=lang,
        title=title.strip(),
        excerpt=excerpt.strip(),
        html=html,
        paragraphs=paragraphs,
        markdown=body,
    )


def _moment(path: Path, meta: dict[str, Any], key: str) -> datetime | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise StatementError(f"{path}: {key!r} must be a TOML date or date-time")
