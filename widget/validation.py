"""Checking an endorsement body: the same rules the widget mirrors in the browser.

``validate_endorsement`` returns the cleaned values or a mapping of field -> message for
the 422 problem's ``errors`` member. Nothing here touches Redis or Flask.

Every rule is one the OpenAPI document can state exactly (``openapi.py`` builds its
patterns from the ones here), so what the document calls valid is accepted and
everything else refused:

* name: at most ``MAX_NAME`` characters, none of ``FORBIDDEN`` (control characters,
  line separators, bidi overrides) nor a lone surrogate, and at least one letter that stays
  visible (``is_letter``). What is stored is ``clean_name``: trimmed, NFKC-normalised,
  without default-ignorable (invisible) code points, at most ``MAX_MARKS`` combining
  marks on one character, cut to ``MAX_NAME`` characters (NFKC can lengthen a name).
* email: an address (optionally padded with whitespace, which is trimmed) of at most
  ``MAX_EMAIL`` characters.
* country: an ISO 3166-1 alpha-2 code (upper or lower case), ``""`` or null.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from email_validator import EmailNotValidError, ValidatedEmail, validate_email

MAX_NAME = 200
MAX_EMAIL = 254
MAX_SOURCE = 300
MAX_MARKS = 4  # enough for any script's stacked diacritics, not for "zalgo" text

# Refused anywhere: control characters, line and paragraph separators, and bidi overrides
# and isolates (a name could disguise itself in lists). Written as a regex class that
# Python and the OpenAPI document's readers (ECMA-262, Rust) all understand.
FORBIDDEN = r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
# Lone surrogates too: JSON can carry them, but they are no text (Redis could not store
# them) and a pattern cannot name them portably, so the document says it in words.
_SURROGATES = re.compile(r"[\ud800-\udfff]")
_FORBIDDEN = re.compile(FORBIDDEN[:-1] + r"\ud800-\udfff]")
# What str.strip() removes (str.isspace), spelled out for the document.
WHITESPACE = r"\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_EMAIL_CHAR = rf"[^@{WHITESPACE}{FORBIDDEN[1:-1]}]"
_DOMAIN_CHAR = rf"[^@.{WHITESPACE}{FORBIDDEN[1:-1]}]"
EMAIL_PATTERN = (
    rf"^[{WHITESPACE}]*{_EMAIL_CHAR}{{1,64}}@{_DOMAIN_CHAR}+(?:\.{_DOMAIN_CHAR}+)+[{WHITESPACE}]*$"
)
_EMAIL = re.compile(EMAIL_PATTERN)


def _any_case(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" for c in word)


# Domains reserved for special uses (RFC 6761 and kin), which email-validator refuses.
SPECIAL_USE_EMAIL = (
    r"[@.](?:"
    + "|".join(_any_case(w) for w in ("arpa", "invalid", "local", "localhost", "onion", "test"))
    + rf")[{WHITESPACE}]*$"
)
_SPECIAL_USE = re.compile(SPECIAL_USE_EMAIL)
LANG_PATTERN = r"^[A-Za-z0-9-]{0,35}$"  # a language tag, as the page that was shown says it
_LANG = re.compile(LANG_PATTERN)
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible by
# definition, so stripped from names (zero-width spaces, joiners, fillers, variation
# selectors, tags).
_DEFAULT_IGNORABLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]"
)
LETTER_PLANES = 0x40000  # no letters are assigned past plane 3 (a test checks)

COUNTRY_CODES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()
)

NameProblem = Literal["missing", "long", "chars", "letters"]
NAME_MESSAGES: dict[NameProblem, str] = {
    "missing": "Enter your name.",
    "long": f"Use at most {MAX_NAME} characters.",
    "chars": "The name contains control characters.",
    "letters": "Enter a name with at least one letter.",
}


@dataclass(frozen=True)
class EndorsementInput:
    name: str
    email: str
    country: str
    public: bool
    source: str
    lang: str = ""  # the language of the statement text shown, when the page says
    # The address as email-validator read it while validating, so it is read only once.
    checked: ValidatedEmail | None = field(default=None, compare=False, repr=False)


def has_control_chars(text: str) -> bool:
    return _FORBIDDEN.search(text) is not None


def is_default_ignorable(char: str) -> bool:
    return _DEFAULT_IGNORABLE.match(char) is not None


def checked_email(raw: str) -> ValidatedEmail | None:
    """The address as ``email-validator`` reads it (syntax only: no DNS), after the
    Unicode tricks are undone (``unicode_clean``); None when it is not an address."""
    try:
        return validate_email(unicode_clean(raw).strip(), check_deliverability=False)
    except EmailNotValidError:
        return None


def unicode_clean(text: str) -> str:
    """NFKC, then without default-ignorable code points: what looks the same is the same
    (zero-width spaces, joiners and fillers vanish; fullwidth letters become letters)."""
    return _DEFAULT_IGNORABLE.sub("", unicodedata.normalize("NFKC", text))


def _visible_letter(char: str) -> bool:
    return unicodedata.category(char)[0] == "L" and not is_default_ignorable(char)


def is_letter(char: str) -> bool:
    """A letter that is still one after cleaning: not an invisible filler, and not one of
    the few compatibility letters that NFKC turns into a space and a mark."""
    if not _visible_letter(char):
        return False
    folded = unicodedata.normalize("NFKC", char)
    return folded == char or any(_visible_letter(c) for c in folded)


def clean_name(raw: str) -> str:
    """The name as stored and shown: trimmed, NFKC, no invisible code points, at most
    ``MAX_MARKS`` combining marks per character (none without a character to sit on), at
    most ``MAX_NAME`` characters."""
    # Decomposed first, so a precomposed letter's accent counts among its marks; composing
    # again at the end gives NFKC.
    text = _DEFAULT_IGNORABLE.sub("", unicodedata.normalize("NFKD", raw.strip()))
    kept: list[str] = []
    marks = 0
    has_base = False
    for char in text:
        if unicodedata.category(char)[0] == "M":
            if not has_base or marks >= MAX_MARKS:
                continue
            marks += 1
        else:
            has_base = not char.isspace()
            marks = 0
        kept.append(char)
    # NFKC can lengthen a name (U+FDFA alone becomes 18 characters): what is kept is cut
    # to the length the submitted name was held to.
    return unicodedata.normalize("NFC", "".join(kept))[:MAX_NAME].strip()


def name_problem(name: Any) -> NameProblem | None:
    """What is wrong with a submitted name, or None."""
    if not isinstance(name, str) or not name.strip():
        return "missing"
    if len(name) > MAX_NAME:
        return "long"
    if has_control_chars(name):
        return "chars"
    if not any(is_letter(c) for c in name):
        return "letters"
    return None


def normalize_country(country: Any) -> str | None:
    """``"KZ"``/``"kz"`` -> ``"KZ"``; ``""``/None -> ``""``; anything else None."""
    if country is None or country == "":
        return ""
    if not isinstance(country, str) or country not in (country.upper(), country.lower()):
        return None  # mixed case is no code
    return country.upper() if country.upper() in COUNTRY_CODES else None


@cache
def letter_class() -> str:
    """Every ``is_letter`` character as one regex class of literal ranges (for OpenAPI)."""
    ranges: list[tuple[int, int]] = []
    for code in range(LETTER_PLANES):
        if is_letter(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    parts = [chr(a) if a == b else f"{chr(a)}-{chr(b)}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


def validate_endorsement(body: Any) -> EndorsementInput | dict[str, str]:
    """Clean values, or field -> message for every problem found."""
    if not isinstance(body, dict):
        return {"body": "The request body must be a JSON object."}
    errors: dict[str, str] = {}

    name = body.get("name")
    problem = name_problem(name)
    if problem is not None:
        errors["name"] = NAME_MESSAGES[problem]

    email = body.get("email")
    checked = None
    if not isinstance(email, str) or not email.strip():
        errors["email"] = "Enter your email address."
    elif (
        len(email) > MAX_EMAIL
        or not _EMAIL.search(email)
        or _SPECIAL_USE.search(email)
        or _SURROGATES.search(email)
        or (checked := checked_email(email)) is None
    ):
        errors["email"] = "Enter a valid email address."

    country = normalize_country(body.get("country"))
    if country is None:
        errors["country"] = "Choose a country from the list, or leave it empty."

    if body.get("consent") is not True:
        errors["consent"] = "Tick the box to agree to the privacy notice."

    public = body.get("public", False)
    if not isinstance(public, bool):
        errors["public"] = "Must be true or false."

    source = body.get("source", "")
    if not isinstance(source, str) or len(source) > MAX_SOURCE or has_control_chars(source):
        errors["source"] = "Must be an origin like https://ally.example."

    lang = body.get("lang", "")
    if not isinstance(lang, str) or not _LANG.fullmatch(lang):
        errors["lang"] = "Must be a language code like en or ru."

    if not isinstance(body.get("altcha", ""), str):
        errors["altcha"] = "The proof-of-work solution is the base64 text ALTCHA gives."

    if errors:
        return errors
    assert isinstance(name, str) and isinstance(email, str) and isinstance(source, str)
    assert isinstance(lang, str) and country is not None
    return EndorsementInput(
        name=clean_name(name),
        email=email.strip(),
        country=country,
        public=bool(public),
        source=source.strip(),
        lang=lang.strip(),
        checked=checked,
    )


MAX_FIRST_NAME = 20
_KEPT_IN_WORDS = {"'", "\u2019"}  # O'Brien, N'Golo: apostrophes join words, not split them


def _separates(char: str) -> bool:
    return char.isspace() or (unicodedata.category(char)[0] in "ZPS" and char not in _KEPT_IN_WORDS)


def first_name(name: str) -> str | None:
    """The part of a name that may be shown: its first word with a letter (words split on
    whitespace, punctuation and symbols), at most ``MAX_FIRST_NAME`` characters; a name
    of one word shows only its initial (``王小明`` -> ``王.``). None without a letter."""
    cleaned = clean_name(name)
    words: list[str] = []
    word = ""
    for char in cleaned + " ":
        if _separates(char):
            if word:
                words.append(word)
            word = ""
        else:
            word += char
    named = [w for w in words if any(is_letter(c) for c in w)]
    if not named:
        return None
    if len(words) == 1:
        initial = named[0][0]
        for char in named[0][1:]:  # with its combining marks: one character as written
            if unicodedata.category(char)[0] != "M":
                break
            initial += char
        return initial + "."
    return named[0][:MAX_FIRST_NAME]
