"""Checking an endorsement body: the same rules the widget mirrors in the browser.

``validate_endorsement`` returns the cleaned values or a mapping of field -> message for
the 422 problem's ``errors`` member. Nothing here touches Redis or Flask.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

MAX_NAME = 200
MAX_EMAIL = 254
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(?:\.[^@\s.]+)+$")
# Bidi overrides and line separators let a name disguise itself in lists; refuse them too.
_INVISIBLE_TRICKS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))} | {
    "\u2028",
    "\u2029",
}

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


@dataclass(frozen=True)
class EndorsementInput:
    name: str
    email: str
    country: str
    public: bool
    source: str
    lang: str = ""  # the language of the statement text shown, when the page says


def has_control_chars(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" or ch in _INVISIBLE_TRICKS for ch in text)


def validate_endorsement(body: Any) -> EndorsementInput | dict[str, str]:
    """Clean values, or field -> message for every problem found."""
    if not isinstance(body, dict):
        return {"body": "The request body must be a JSON object."}
    errors: dict[str, str] = {}

    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        errors["name"] = "Enter your name."
    elif len(name.strip()) > MAX_NAME:
        errors["name"] = f"Use at most {MAX_NAME} characters."
    elif has_control_chars(name.strip()):
        errors["name"] = "The name contains control characters."

    email = body.get("email")
    if not isinstance(email, str) or not email.strip():
        errors["email"] = "Enter your email address."
    elif (
        len(email.strip()) > MAX_EMAIL
        or has_control_chars(email.strip())
        or not EMAIL.match(email.strip())
    ):
        errors["email"] = "Enter a valid email address."

    country = body.get("country")
    if country is None or country == "":
        country = ""
    elif not isinstance(country, str) or country.strip().upper() not in COUNTRY_CODES:
        errors["country"] = "Choose a country from the list, or leave it empty."
    else:
        country = country.strip().upper()

    if body.get("consent") is not True:
        errors["consent"] = "Tick the box to agree to the privacy notice."

    public = body.get("public", False)
    if not isinstance(public, bool):
        errors["public"] = "Must be true or false."

    source = body.get("source", "")
    if not isinstance(source, str) or len(source) > 300 or has_control_chars(source):
        errors["source"] = "Must be an origin like https://ally.example."

    lang = body.get("lang", "")
    if not isinstance(lang, str) or len(lang) > 35 or has_control_chars(lang):
        errors["lang"] = "Must be a language code like en or ru."

    if errors:
        return errors
    assert isinstance(name, str) and isinstance(email, str) and isinstance(source, str)
    assert isinstance(lang, str)
    return EndorsementInput(
        name=unicodedata.normalize("NFC", name.strip()),
        email=email.strip(),
        country=country,
        public=bool(public),
        source=source.strip(),
        lang=lang.strip(),
    )
