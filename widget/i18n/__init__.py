"""The widget's and the hosted pages' words, one JSON catalog per language in this folder.

A translator adds ``<lang>.json`` (copy ``en.json``, translate the values, keep the keys);
nothing else changes. A value is text with ``{placeholders}``, or, for words that follow
a number, an object of CLDR plural forms (``one``, ``few``, ``many``, ``other``...).
Keys starting with ``_`` describe the catalog: ``_language`` (its own name for itself),
``_dir`` (``ltr`` or ``rtl``) and ``_fallback`` (languages, space-separated, whose
country names and number formats a browser should use when it has no data for this one;
Kazakh falls back to Russian). A key missing from a catalog falls back to English.

Numbers, plural forms and country names come from CLDR (Babel) here and from ``Intl``
in the browser, so both sides say the same thing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pyuca
from babel import Locale, UnknownLocaleError
from babel.numbers import format_decimal, format_percent

CATALOG_DIR = Path(__file__).resolve().parent
DEFAULT = "en"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _locale(lang: str) -> Locale:
    try:
        return Locale.parse(lang.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse(DEFAULT)


@dataclass(frozen=True)
class Catalog:
    """One language's messages (English filling any gap)."""

    lang: str
    messages: Mapping[str, Any]

    @property
    def dir(self) -> str:
        return "rtl" if self.messages.get("_dir") == "rtl" else "ltr"

    @property
    def locales(self) -> str:
        """This language, its fallbacks and English: for the browser's ``Intl``."""
        chain = [self.lang, *str(self.messages.get("_fallback", "")).split(), DEFAULT]
        return " ".join(dict.fromkeys(chain))

    @property
    def name(self) -> str:
        return str(self.messages.get("_language", self.lang))

    def __call__(self, key: str, **values: Any) -> str:
        """The message ``key`` with its ``{placeholders}`` filled in."""
        raw = self.messages.get(key, key)
        text = raw.get("other", key) if isinstance(raw, dict) else str(raw)
        return fill(text, values)

    def plural(self, key: str, number: int) -> str:
        raw = self.messages.get(key, key)
        if not isinstance(raw, dict):
            return str(raw)
        form = _locale(self.lang).plural_form(number)
        return str(raw.get(form, raw.get("other", key)))

    def number(self, value: int) -> str:
        return str(format_decimal(value, locale=_locale(self.lang)))

    def percent(self, ratio: float) -> str:
        return str(format_percent(ratio, locale=_locale(self.lang)))

    def subset(self, keys: Iterable[str]) -> dict[str, Any]:
        """The raw messages for ``keys``, for the browser script."""
        return {key: self.messages[key] for key in keys if key in self.messages}

    def countries(self, codes: Iterable[str]) -> list[tuple[str, str]]:
        """``(code, name)`` pairs sorted by name in this language."""
        return list(_countries(self.lang, frozenset(codes)))

    def country(self, code: str) -> str:
        return str(_locale(self.lang).territories.get(code, code)) if code else ""


def fill(text: str, values: Mapping[str, Any]) -> str:
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), text)


@cache
def _collator() -> pyuca.Collator:
    return pyuca.Collator()


@cache
def _countries(lang: str, codes: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """Country names in the Unicode Collation Algorithm's order (its default table): each
    of Kazakh's own Cyrillic letters (Қ, Ә, Ң...) right after the letter it extends, as a
    Kazakh reader looks for them, where folding letters to their base had sorted the
    letters with no base after the last Russian one. Sorted once per language."""
    names = _locale(lang).territories
    pairs = [(code, str(names.get(code, code))) for code in codes]
    collator = _collator()
    return tuple(sorted(pairs, key=lambda pair: (collator.sort_key(pair[1]), pair[0])))


@cache
def catalogs() -> dict[str, Catalog]:
    """Every catalog in this folder, by lowercase language code."""
    english: dict[str, Any] = json.loads((CATALOG_DIR / f"{DEFAULT}.json").read_text("utf-8"))
    found: dict[str, Catalog] = {}
    for path in sorted(CATALOG_DIR.glob("*.json")):
        lang = path.stem.lower()
        messages = english if lang == DEFAULT else json.loads(path.read_text("utf-8"))
        found[lang] = Catalog(lang, {**english, **messages})
    return found


def get_catalog(lang: str) -> Catalog:
    return catalogs().get(lang.lower(), catalogs()[DEFAULT])


def match_language(candidates: Iterable[str]) -> str | None:
    """The first candidate (``de-AT`` matches ``de``) that has a catalog."""
    available = catalogs()
    for candidate in candidates:
        tag = candidate.strip().split(";")[0].strip().lower().replace("_", "-")
        if not tag:
            continue
        for option in (tag, tag.split("-")[0]):
            if option in available:
                return option
    return None
